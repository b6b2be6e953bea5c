//! The server's view of its rooms: public ids, options, members and their
//! published tracks, kicked participants, and when each room became empty.
//!
//! Lock and size are the engine's ([`crate::Engine::room_info`]); this
//! registry keeps what the engine does not: the public id, schedule,
//! visibility, names and published tracks, and removed token subjects.
//!
//! Members are learned two ways: a successful join inserts its participant
//! at once (so `GET /v1/rooms/{room}` shows it as soon as the answer is
//! sent), and the engine's events ([`RoomRegistry::apply`]) add published
//! tracks and remove whoever left, disconnected or was kicked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::{EngineEvent, ParticipantId, RoomId, TrackKind};

/// One participant as `GET /v1/rooms/{room}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// Participant id (`p12`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Its audio track has published (first packet seen).
    pub audio: bool,
    /// Its camera has published.
    pub video: bool,
    /// Its screen share has published.
    pub screen: bool,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
}

/// What the server keeps per room.
#[derive(Debug)]
pub struct RoomState {
    pub id: RoomId,
    pub slug: String,
    pub name: String,
    pub public: bool,
    pub max_participants: usize,
    pub starts_at: Option<SystemTime>,
    pub created_at: SystemTime,
    pub members: BTreeMap<ParticipantId, Member>,
    /// Participants that left (by any reason): a late join bookkeeping
    /// step must not bring them back.
    pub gone: HashSet<ParticipantId>,
    /// Token subjects (`p12`, or `p12@node` in a cluster) of participants
    /// the owner removed: their tokens cannot be used again.
    pub kicked: HashSet<String>,
    /// When the room last became empty (creation counts).
    pub empty_since: Option<SystemTime>,
    /// Joins under way (token checked, engine call not returned yet): an
    /// empty room with a join under way is not closed.
    pub pending_joins: usize,
    /// End-to-end encrypted (fixed at creation).
    pub e2ee: bool,
    /// When this node recreated the room from the cluster directory (its
    /// node died or drained); `None` for a room created here.
    pub recreated_at: Option<SystemTime>,
}

impl RoomState {
    /// A room with no members yet, empty since `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: RoomId,
        slug: String,
        name: String,
        public: bool,
        max_participants: usize,
        starts_at: Option<SystemTime>,
        created_at: SystemTime,
        now: SystemTime,
    ) -> RoomState {
        RoomState {
            id,
            slug,
            name,
            public,
            max_participants,
            starts_at,
            created_at,
            members: BTreeMap::new(),
            gone: HashSet::new(),
            kicked: HashSet::new(),
            empty_since: Some(now),
            pending_joins: 0,
            e2ee: false,
            recreated_at: None,
        }
    }

    pub fn member_views(&self) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                id: id.to_string(),
                name: m.name.clone(),
                audio: m.audio,
                video: m.video,
                screen: m.screen,
            })
            .collect()
    }

    /// Record a participant the engine admitted.
    pub fn admit(&mut self, id: ParticipantId, name: String) {
        if self.gone.contains(&id) {
            return;
        }
        self.members.entry(id).or_insert(Member {
            name,
            audio: false,
            video: false,
            screen: false,
        });
        self.empty_since = None;
    }

    /// Record a participant gone (idempotent).
    pub fn depart(&mut self, id: ParticipantId, now: SystemTime) {
        self.members.remove(&id);
        self.gone.insert(id);
        if self.members.is_empty() && self.empty_since.is_none() {
            self.empty_since = Some(now);
        }
    }

    /// The empty room's closing time, if it is empty and not waiting for
    /// its scheduled start or for a join under way.
    pub fn closes_at(&self, grace: Duration) -> Option<SystemTime> {
        if !self.members.is_empty() || self.pending_joins > 0 {
            return None;
        }
        let since = self.empty_since?;
        let since = match self.starts_at {
            Some(start) if start > since => start,
            _ => since,
        };
        // A time past what SystemTime holds: never closes (cannot happen
        // with the API's limits on starts_at and the grace period).
        since.checked_add(grace)
    }
}

/// Every room of the server, by public id and by engine id.
#[derive(Debug, Default)]
pub struct RoomRegistry {
    by_slug: HashMap<String, RoomState>,
    slugs: HashMap<RoomId, String>,
}

impl RoomRegistry {
    pub fn len(&self) -> usize {
        self.by_slug.len()
    }

    pub fn insert(&mut self, room: RoomState) {
        self.slugs.insert(room.id, room.slug.clone());
        self.by_slug.insert(room.slug.clone(), room);
    }

    pub fn get(&self, slug: &str) -> Option<&RoomState> {
        self.by_slug.get(slug)
    }

    pub fn get_mut(&mut self, slug: &str) -> Option<&mut RoomState> {
        self.by_slug.get_mut(slug)
    }

    pub fn remove(&mut self, slug: &str) -> Option<RoomState> {
        let room = self.by_slug.remove(slug)?;
        self.slugs.remove(&room.id);
        Some(room)
    }

    pub fn rooms(&self) -> impl Iterator<Item = &RoomState> {
        self.by_slug.values()
    }

    fn by_id(&mut self, id: RoomId) -> Option<&mut RoomState> {
        let slug = self.slugs.get(&id)?;
        self.by_slug.get_mut(slug)
    }

    /// Rooms empty past their grace period, removed from the registry and
    /// returned for the caller to close in the engine.
    pub fn take_expired(&mut self, now: SystemTime, grace: Duration) -> Vec<(String, RoomId)> {
        let expired: Vec<String> = self
            .by_slug
            .values()
            .filter(|r| r.closes_at(grace).is_some_and(|t| t <= now))
            .map(|r| r.slug.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|slug| self.remove(&slug).map(|r| (slug, r.id)))
            .collect()
    }

    /// Apply one engine event; returns the public id of a room the event
    /// closed.
    pub fn apply(&mut self, event: &EngineEvent, now: SystemTime) -> Option<String> {
        match event {
            EngineEvent::ParticipantJoined {
                room,
                participant,
                name,
            } => {
                if let Some(r) = self.by_id(*room) {
                    r.admit(*participant, name.clone());
                }
            }
            EngineEvent::ParticipantLeft {
                room, participant, ..
            } => {
                if let Some(r) = self.by_id(*room) {
                    r.depart(*participant, now);
                }
            }
            EngineEvent::TrackPublished {
                room,
                participant,
                kind,
            } => {
                if let Some(m) = self
                    .by_id(*room)
                    .and_then(|r| r.members.get_mut(participant))
                {
                    match kind {
                        TrackKind::Audio => m.audio = true,
                        TrackKind::Camera => m.video = true,
                        TrackKind::Screen => m.screen = true,
                    }
                }
            }
            EngineEvent::RoomClosed { room } | EngineEvent::RoomFailed { room, .. } => {
                if let Some(slug) = self.slugs.get(room).cloned() {
                    self.remove(&slug);
                    return Some(slug);
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LeaveReason;

    fn room(slug: &str, id: u32, now: SystemTime) -> RoomState {
        RoomState::new(
            RoomId::from_raw(id),
            slug.into(),
            String::new(),
            false,
            50,
            None,
            now,
            now,
        )
    }

    #[test]
    fn empty_rooms_close_after_grace_and_members_keep_them_open() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let grace = Duration::from_secs(10);
        let mut reg = RoomRegistry::default();
        reg.insert(room("a", 1, t0));
        reg.insert(room("b", 2, t0));
        let p = ParticipantId::from_raw(7);
        reg.get_mut("b").unwrap().admit(p, "x".into());
        assert!(
            reg.take_expired(t0 + Duration::from_secs(9), grace)
                .is_empty()
        );
        let closed = reg.take_expired(t0 + Duration::from_secs(10), grace);
        assert_eq!(closed, vec![("a".to_string(), RoomId::from_raw(1))]);

        let left = EngineEvent::ParticipantLeft {
            room: RoomId::from_raw(2),
            participant: p,
            reason: LeaveReason::Left,
        };
        reg.apply(&left, t0 + Duration::from_secs(20));
        // A late bookkeeping insert does not resurrect it.
        reg.get_mut("b").unwrap().admit(p, "x".into());
        assert!(reg.get("b").unwrap().members.is_empty());
        assert!(
            reg.take_expired(t0 + Duration::from_secs(29), grace)
                .is_empty()
        );
        assert_eq!(
            reg.take_expired(t0 + Duration::from_secs(30), grace).len(),
            1
        );
        assert_eq!(reg.len(), 0);
    }

    #[test]
    fn scheduled_rooms_wait_for_their_start() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let grace = Duration::from_secs(10);
        let mut reg = RoomRegistry::default();
        let mut r = room("a", 1, t0);
        r.starts_at = Some(t0 + Duration::from_secs(3600));
        reg.insert(r);
        assert!(
            reg.take_expired(t0 + Duration::from_secs(3609), grace)
                .is_empty()
        );
        assert_eq!(
            reg.take_expired(t0 + Duration::from_secs(3610), grace)
                .len(),
            1
        );
    }
}
