//! The sans-IO room: participants, slot assignment and forwarding.
//!
//! # Driving contract
//!
//! Inputs: [`Room::handle_receive`] for a datagram of one participant,
//! [`Room::start_timeout`] when [`Room::poll_timeout`] is due, and the
//! control calls ([`Room::add`], [`Room::remove`], [`Room::set_locked`]).
//! After any batch of inputs call [`Room::flush`]: it gives every participant
//! that has pending writes one `Input::Timeout(now)` and drains its output
//! into the [`CoreOutput`]; [`Room::flush_some`] does the same in parts, so
//! the caller can send the first datagrams before the last are made.
//! Nothing here reads a clock, owns a socket or locks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::net::Receive;
use str0m::{Event, IceConnectionState, Input, Output};

mod assign;
mod bandwidth;
mod chat;
mod forward;

pub use bandwidth::{SlotState, SubscriberStats};

use crate::config::RoomConfig;
use crate::core::CoreOutput;
use crate::core::control::{
    AudioSlotInfo, ClientMessage, ParticipantInfo, ServerMessage, VideoSlotInfo,
};
use crate::core::participant::Participant;
use crate::core::received::{self, Carried};
use crate::core::speaker::SpeakerDetector;
use crate::event::{EngineEvent, LeaveReason};
use crate::ids::{ParticipantId, RoomId};
use crate::join::Prepared;

/// How often the room re-evaluates speakers, sends coalesced control
/// messages and retries keyframe requests.
const TICK: Duration = Duration::from_millis(100);
/// Forward to a connected peer that has sent no SRTP yet after this long.
const MEDIA_READY_FALLBACK: Duration = Duration::from_millis(300);

/// Passes over the participants per flush: draining one can route packets
/// that dirty others (a subscriber's keyframe request reaches its
/// publisher), which the next pass flushes.
const FLUSH_ROUNDS: u8 = 4;

/// How far a flush got ([`Room::flush_some`]): the pass, the next slab
/// index to look at, and whether this pass flushed anyone.
#[derive(Debug, Default, Clone, Copy)]
struct FlushCursor {
    round: u8,
    next: usize,
    any: bool,
}

/// Counters of one room.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoomStats {
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscriber slots.
    pub rtp_forwarded: u64,
    /// Keyframe requests sent to publishers.
    pub plis_sent: u64,
    /// Slot publisher/layer switches completed.
    pub slot_switches: u64,
    /// Packets dropped because their slot was waiting for a keyframe.
    pub dropped_waiting_keyframe: u64,
    /// Times a subscriber's loss report capped its estimate below str0m's.
    pub loss_caps: u64,
    /// Times a standing queue capped a subscriber's estimate below str0m's.
    pub queue_caps: u64,
    /// Video slots the allocation paused for bandwidth.
    pub bandwidth_pauses: u64,
    /// Forwarded packets that left without their receive stamp.
    pub latency_untracked: u64,
}

pub(crate) struct Room {
    pub id: RoomId,
    pub config: RoomConfig,
    pub locked: bool,
    slab: Vec<Option<Participant>>,
    index: HashMap<ParticipantId, usize>,
    join_seq: u64,
    /// Per publisher slab index: the slots its packets may go to.
    routes: Vec<Vec<forward::Route>>,
    routes_dirty: bool,
    needs_reassign: bool,
    last_reassign: Option<Instant>,
    participants_dirty: bool,
    speaker_dirty: bool,
    speakers: SpeakerDetector,
    next_tick: Option<Instant>,
    to_remove: Vec<(ParticipantId, LeaveReason)>,
    /// When layer meters were last folded.
    meters_at: Option<Instant>,
    /// Chat history, limits and the E2EE key relay (`room/chat.rs`).
    chat: crate::core::chat::Chat,
    pub stats: RoomStats,
    /// The clock of the receive stamps of forwarded packets
    /// (`core::received`), started at the first join.
    stamps: received::StampClock,
    /// Where a flush cut short by [`Room::flush_some`] resumes.
    flushing: Option<FlushCursor>,
    /// Fault injection: panic on the next datagram or timer.
    #[cfg(feature = "fault-injection")]
    pub panic_armed: bool,
}

impl Room {
    /// Label chat messages with wall-clock times ([`ShardCore::set_wall_clock`]).
    ///
    /// [`ShardCore::set_wall_clock`]: crate::core::ShardCore::set_wall_clock
    pub fn set_wall_clock(&mut self, at: Instant, unix_ms: u64) {
        self.chat.set_wall_clock(at, unix_ms);
    }

    pub fn new(id: RoomId, config: RoomConfig) -> Self {
        let chat = crate::core::chat::Chat::new(config.chat.clone(), config.e2ee);
        Room {
            chat,
            id,
            config,
            locked: false,
            slab: Vec::new(),
            index: HashMap::new(),
            join_seq: 0,
            routes: Vec::new(),
            routes_dirty: true,
            needs_reassign: false,
            last_reassign: None,
            participants_dirty: false,
            speaker_dirty: false,
            speakers: SpeakerDetector::default(),
            next_tick: None,
            to_remove: Vec::new(),
            meters_at: None,
            stats: RoomStats::default(),
            stamps: received::StampClock::default(),
            flushing: None,
            #[cfg(feature = "fault-injection")]
            panic_armed: false,
        }
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Adopt a prepared participant.
    pub fn add(&mut self, prepared: Prepared, now: Instant, out: &mut CoreOutput) {
        let id = prepared.id;
        let name = prepared.name.clone();
        self.stamps.start(now);
        self.join_seq += 1;
        let mut p = Participant::new(prepared, self.join_seq, now);
        // Size each slot's RTX cache: it answers subscriber NACKs, and with
        // the default 2000 packets x 3 s it dominates memory.
        p.reset_rtx_caches(self.config.rtx_cache_packets, self.config.rtx_cache_age);
        let slot = match self.slab.iter().position(Option::is_none) {
            Some(i) => {
                self.slab[i] = Some(p);
                i
            }
            None => {
                self.slab.push(Some(p));
                self.slab.len() - 1
            }
        };
        self.index.insert(id, slot);
        self.needs_reassign = true;
        self.participants_dirty = true;
        self.routes_dirty = true;
        if self.next_tick.is_none() {
            self.next_tick = Some(now);
        }
        out.events.push_back(EngineEvent::ParticipantJoined {
            room: self.id,
            participant: id,
            name,
        });
    }

    /// Remove a participant: disconnects its `Rtc` (queueing DTLS
    /// close_notify), drains it and frees everything it held.
    pub fn remove(
        &mut self,
        pid: ParticipantId,
        reason: LeaveReason,
        now: Instant,
        out: &mut CoreOutput,
    ) -> bool {
        let Some(i) = self.index.remove(&pid) else {
            return false;
        };
        if let Some(p) = self.slab[i].as_mut() {
            // Put the notice on the wire before the DTLS close_notify.
            let notice = match reason {
                LeaveReason::Kicked => Some(ServerMessage::Kicked {
                    reason: "removed by the room owner".into(),
                }),
                LeaveReason::RoomClosed => Some(ServerMessage::Closing {
                    reason: "the room was closed".into(),
                }),
                LeaveReason::Shutdown => Some(ServerMessage::Closing {
                    reason: "the server is shutting down; try again in a moment".into(),
                }),
                LeaveReason::Moved => Some(ServerMessage::Closing {
                    reason: "the room moved to another server; rejoin".into(),
                }),
                LeaveReason::Left | LeaveReason::Disconnected | LeaveReason::Timeout => None,
            };
            if let Some(notice) = notice {
                send_control(p, &notice);
                flush_transmits(p, now, out);
            }
            // close(): RTCP BYE, SCTP shutdown and DTLS close_notify, so the
            // peer learns at once (disconnect() would just go silent).
            if p.rtc.close().is_ok() {
                flush_transmits(p, now, out);
            }
            p.rtc.disconnect();
        }
        self.slab[i] = None;
        self.chat.forget(pid);
        let was_speaker = self.speakers.current() == Some(pid);
        self.speakers.remove(pid);
        self.needs_reassign = true;
        self.participants_dirty = true;
        self.routes_dirty = true;
        // Slots showing the leaver go dark at once.
        for p in self.slab.iter_mut().flatten() {
            p.forget_publisher(pid);
        }
        out.left.push(pid);
        out.events.push_back(EngineEvent::ParticipantLeft {
            room: self.id,
            participant: pid,
            reason,
        });
        if was_speaker {
            self.speaker_dirty = true;
            out.events.push_back(EngineEvent::ActiveSpeaker {
                room: self.id,
                participant: None,
            });
        }
        if self.index.is_empty() {
            // An empty room needs no tick until someone joins.
            self.next_tick = None;
        }
        true
    }

    /// Remove everyone (room closing).
    pub fn close(&mut self, reason: LeaveReason, now: Instant, out: &mut CoreOutput) {
        // In join order (slab order), not the index's hash order: the
        // leave events come out the same on every run.
        let ids: Vec<_> = self.slab.iter().flatten().map(|p| p.id).collect();
        for p in ids {
            self.remove(p, reason, now, out);
        }
    }

    pub fn set_locked(&mut self, locked: bool) {
        self.locked = locked;
    }

    /// One datagram for participant `pid`.
    pub fn handle_receive(
        &mut self,
        pid: ParticipantId,
        now: Instant,
        r: Receive,
        srtp: bool,
        out: &mut CoreOutput,
    ) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.panic_armed {
            panic!("injected fault: room {} panics on a datagram", self.id);
        }
        let Some(&i) = self.index.get(&pid) else {
            return false;
        };
        let Some(p) = self.slab[i].as_mut() else {
            return false;
        };
        if let Err(e) = p.rtc.handle_input(Input::Receive(now, r)) {
            tracing::debug!(participant = %pid, "input refused: {e}");
            return false;
        }
        p.last_ingress = now;
        if srtp && p.connected && !p.media_ready {
            // SRTP from the peer: it has its keys, so what we send now is
            // decrypted (not dropped, as a keyframe sent before the peer's
            // DTLS completed would be).
            p.media_ready = true;
            self.routes_dirty = true;
        }
        self.drain(i, now, out);
        true
    }

    /// Earliest time the room needs [`Room::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtc = self.slab.iter().flatten().map(|p| p.next_timeout).min();
        match (rtc, self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A timeout, when [`Room::poll_timeout`] is due: mark the participants
    /// whose timers are due and run the room's own tick; the flush that
    /// follows ([`Room::flush`] or [`Room::flush_some`]) drives them.
    pub fn start_timeout(&mut self, now: Instant, out: &mut CoreOutput) {
        #[cfg(feature = "fault-injection")]
        if self.panic_armed {
            panic!("injected fault: room {} panics on a timer", self.id);
        }
        for i in 0..self.slab.len() {
            let due = matches!(&self.slab[i], Some(p) if p.next_timeout <= now);
            if due && let Some(p) = self.slab[i].as_mut() {
                p.mark_dirty();
            }
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.tick(now, out);
            self.next_tick = Some(now + TICK);
        }
    }

    /// Give every participant with pending writes one timeout and drain it.
    pub fn flush(&mut self, now: Instant, out: &mut CoreOutput) {
        let done = self.flush_some(now, out, usize::MAX);
        debug_assert!(done, "an unbounded flush finishes");
    }

    /// [`Room::flush`] in parts: stop after the participant whose drain
    /// left at least `ready` datagrams in `out.transmits`, and return
    /// false; the next call (after the caller sent them, with the same
    /// `now` and no other input in between) carries on where this one
    /// stopped. True when the flush is complete. The participants are
    /// flushed in the same order, and given the same inputs, however the
    /// flush is cut: only when their datagrams leave changes.
    pub fn flush_some(&mut self, now: Instant, out: &mut CoreOutput, ready: usize) -> bool {
        let mut at = self.flushing.take().unwrap_or_else(|| {
            if self.needs_reassign && !self.reassign_throttled(now) {
                self.reassign(now);
                self.allocate_all(now);
                self.apply_switches(now);
            }
            FlushCursor::default()
        });
        // Draining can route packets that dirty others: loop until quiet.
        while at.round < FLUSH_ROUNDS {
            while at.next < self.slab.len() {
                let i = at.next;
                at.next += 1;
                let dirty = matches!(&self.slab[i], Some(p) if p.is_dirty());
                if !dirty {
                    continue;
                }
                at.any = true;
                if let Some(p) = self.slab[i].as_mut() {
                    p.take_dirty();
                    if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!(participant = %p.id, "timeout refused: {e}");
                    }
                }
                self.drain(i, now, out);
                if out.transmits.len() >= ready {
                    self.flushing = Some(at);
                    return false;
                }
            }
            if !at.any {
                break;
            }
            at = FlushCursor {
                round: at.round + 1,
                ..FlushCursor::default()
            };
        }
        if !self.to_remove.is_empty() {
            let gone: Vec<_> = self.to_remove.drain(..).collect();
            for (pid, reason) in gone {
                self.remove(pid, reason, now, out);
            }
        }
        true
    }

    fn reassign_throttled(&self, now: Instant) -> bool {
        // Structural changes (join/leave/publish) set `needs_reassign` too;
        // they are applied on the next tick at the latest.
        self.last_reassign
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.reassign_interval / 4)
    }

    fn tick(&mut self, now: Instant, out: &mut CoreOutput) {
        // Vanished peers. str0m's ICE-lite agent forgets a pair only after
        // 15 s without a binding request, and only while something else
        // drives its timers; a peer that never completed ICE has no pair to
        // forget. The room's own clock on accepted ingress covers both.
        let limit = self.config.inactivity_timeout;
        for p in self.slab.iter().flatten() {
            if now.saturating_duration_since(p.last_ingress) >= limit
                && !self.to_remove.iter().any(|(id, _)| *id == p.id)
            {
                tracing::debug!(participant = %p.id, "no ingress for {limit:?}: removing");
                self.to_remove.push((p.id, LeaveReason::Timeout));
            }
        }
        // A peer that sends no media still gets media a moment after it
        // connected (its DTLS has long completed by then).
        for p in self.slab.iter_mut().flatten() {
            let waited = p
                .connected_at
                .is_some_and(|t| now.saturating_duration_since(t) >= MEDIA_READY_FALLBACK);
            if !p.media_ready && waited {
                p.media_ready = true;
                self.routes_dirty = true;
            }
        }
        if let Some(change) = self.speakers.evaluate(now, self.config.speaker_switch_hold) {
            self.speaker_dirty = true;
            self.needs_reassign = true;
            out.events.push_back(EngineEvent::ActiveSpeaker {
                room: self.id,
                participant: change,
            });
        }
        // Audio slots follow loudness continuously.
        if self.update_audio_slots(now) {
            self.routes_dirty = true;
        }
        // Recent-speaker order shifts video slots; re-evaluate at the
        // configured interval.
        if self
            .last_reassign
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.reassign_interval)
        {
            self.needs_reassign = true;
        }
        if self.needs_reassign {
            self.reassign(now);
        }
        self.update_meters(now);
        self.allocate_all(now);
        self.apply_switches(now);
        self.dynacast(now);
        self.send_coalesced_control();
    }

    // ---------------------------------------------------------------- output

    fn drain(&mut self, i: usize, now: Instant, out: &mut CoreOutput) {
        loop {
            let Some(p) = self.slab[i].as_mut() else {
                return;
            };
            match p.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let received = match p.carried(&t.contents) {
                        Carried::Stamp(s) => self.stamps.instant_of(now, s),
                        Carried::Untracked => {
                            self.stats.latency_untracked += 1;
                            None
                        }
                        Carried::Other => None,
                    };
                    out.transmits.push_back((t, received));
                }
                Ok(Output::Timeout(t)) => {
                    p.next_timeout = t;
                    return;
                }
                Ok(Output::Event(e)) => self.on_event(i, e, now, out),
                Err(e) => {
                    let id = p.id;
                    tracing::debug!(participant = %id, "rtc error: {e}");
                    p.next_timeout = now + Duration::from_secs(3600);
                    self.to_remove.push((id, LeaveReason::Disconnected));
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, i: usize, e: Event, now: Instant, out: &mut CoreOutput) {
        match e {
            Event::RtpPacket(pkt) => self.route(i, pkt, now, out),
            Event::Connected => {
                let Some(p) = self.slab[i].as_mut() else {
                    return;
                };
                p.connected = true;
                p.connected_at = Some(now);
                self.needs_reassign = true;
                out.events.push_back(EngineEvent::ParticipantConnected {
                    room: self.id,
                    participant: p.id,
                });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                if let Some(p) = self.slab[i].as_ref() {
                    self.to_remove.push((p.id, LeaveReason::Disconnected));
                }
            }
            Event::ChannelOpen(id, _label) => {
                let Some(p) = self.slab[i].as_mut() else {
                    return;
                };
                p.channel = Some(id);
                let welcome = ServerMessage::Welcome {
                    participant: p.id.to_string(),
                    room: self.id.to_string(),
                    e2ee: self.config.e2ee,
                };
                send_control(p, &welcome);
                p.mark_slots_changed();
                self.participants_dirty = true;
                self.speaker_dirty = true;
                self.send_chat_history(i);
            }
            Event::ChannelClose(id) => {
                if let Some(p) = self.slab[i].as_mut()
                    && p.channel == Some(id)
                {
                    p.channel = None;
                }
            }
            Event::ChannelData(d) => self.on_client_message(i, &d.data, now),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.on_estimate(i, estimate.as_u64(), now);
            }
            Event::PeerStats(s) => self.on_peer_stats(i, &s, now),
            Event::KeyframeRequest(req) => {
                // A subscriber lost a picture: ask the publisher of that slot.
                let Some(p) = self.slab[i].as_ref() else {
                    return;
                };
                let feed = p
                    .video_slots
                    .iter()
                    .find(|s| s.mid == req.mid)
                    .and_then(|s| s.current());
                if let Some(f) = feed {
                    self.request_keyframe(f, now);
                }
            }
            _ => {}
        }
    }

    fn on_client_message(&mut self, i: usize, data: &[u8], now: Instant) {
        let msg = ClientMessage::parse(data);
        if let Ok(m @ (ClientMessage::Chat { .. } | ClientMessage::Key { .. })) = msg {
            self.on_chat(i, m, now);
            return;
        }
        let Some(p) = self.slab[i].as_mut() else {
            return;
        };
        match msg {
            Ok(ClientMessage::Pin { participant }) => {
                p.pinned = participant.and_then(|s| s.parse().ok());
                self.needs_reassign = true;
            }
            Ok(ClientMessage::MaxResolution { mid, height }) => {
                if let Some(s) = p.video_slots.iter_mut().find(|s| s.mid.to_string() == mid) {
                    s.max_height = height;
                    self.needs_reassign = true;
                }
            }
            Ok(ClientMessage::Pause { mid }) => {
                if let Some(s) = p.video_slots.iter_mut().find(|s| s.mid.to_string() == mid) {
                    s.pause();
                    p.mark_slots_changed();
                }
            }
            Ok(ClientMessage::Resume { mid }) => {
                // Resuming needs a fresh keyframe: re-enter the switch path.
                if let Some(s) = p.video_slots.iter_mut().find(|s| s.mid.to_string() == mid)
                    && s.resume()
                {
                    p.mark_slots_changed();
                    self.needs_reassign = true;
                }
            }
            // Handled above (`on_chat`).
            Ok(ClientMessage::Chat { .. } | ClientMessage::Key { .. }) => {}
            Err(e) => {
                send_control(
                    p,
                    &ServerMessage::Error {
                        message: format!("unrecognised control message: {e}"),
                    },
                );
            }
        }
    }

    // ------------------------------------------------------- control channel

    fn send_coalesced_control(&mut self) {
        let participants = if self.participants_dirty {
            self.participants_dirty = false;
            Some(ServerMessage::Participants {
                participants: self
                    .slab
                    .iter()
                    .flatten()
                    .map(|p| ParticipantInfo {
                        id: p.id.to_string(),
                        name: p.name.clone(),
                        audio: p.published.audio,
                        video: p.published.camera,
                        screen: p.published.screen,
                    })
                    .collect(),
            })
        } else {
            None
        };
        let speaker = if self.speaker_dirty {
            self.speaker_dirty = false;
            Some(ServerMessage::ActiveSpeaker {
                participant: self.speakers.current().map(|p| p.to_string()),
            })
        } else {
            None
        };
        for p in self.slab.iter_mut().flatten() {
            if p.channel.is_none() {
                continue;
            }
            if let Some(m) = &participants {
                send_control(p, m);
            }
            if let Some(m) = &speaker {
                send_control(p, m);
            }
            if p.take_slots_changed() {
                let msg = slots_message(p);
                send_control(p, &msg);
            }
        }
    }

    // ------------------------------------------------------------ inspection

    /// A snapshot of who is in which slot for one subscriber.
    pub fn slots_of(&self, p: ParticipantId) -> Option<ServerMessage> {
        let i = *self.index.get(&p)?;
        self.slab[i].as_ref().map(slots_message)
    }

    /// The current dominant speaker.
    pub fn active_speaker(&self) -> Option<ParticipantId> {
        self.speakers.current()
    }

    /// What the room holds, counted (see [`crate::core::Footprint`]).
    pub fn footprint(&self, f: &mut crate::core::Footprint) {
        f.rooms += 1;
        f.participants += self.slab.iter().flatten().count();
        f.participant_index += self.index.len();
        f.routes += self.routes.iter().map(Vec::len).sum::<usize>();
        for p in self.slab.iter().flatten() {
            f.video_slots += p.video_slots.len();
            f.audio_slots += p.audio_slots.len();
            f.slots_showing += p
                .video_slots
                .iter()
                .filter(|s| s.current().is_some())
                .count()
                + p.audio_slots
                    .iter()
                    .filter(|s| s.holder().is_some())
                    .count();
            f.rx_tracks += p.rx_tracks.len();
        }
        f.pending_removals += self.to_remove.len();
    }

    /// Per-participant forwarding counters: (id, rtp in, rtp forwarded to it).
    pub fn participant_stats(&self) -> Vec<(ParticipantId, u64, u64)> {
        self.slab
            .iter()
            .flatten()
            .map(|p| (p.id, p.stats.rtp_in, p.stats.rtp_forwarded))
            .collect()
    }

    /// Test hook: deliver a client control message as if it came on the data channel.
    #[cfg(any(test, feature = "sim"))]
    pub fn inject_client_message(&mut self, p: ParticipantId, data: &[u8], now: Instant) {
        if let Some(&i) = self.index.get(&p) {
            self.on_client_message(i, data, now);
        }
    }

    /// Test hook: a downlink estimate for `p`, as if str0m had reported it.
    #[cfg(any(test, feature = "sim"))]
    pub fn inject_estimate(&mut self, p: ParticipantId, estimate_bps: u64, now: Instant) {
        if let Some(&i) = self.index.get(&p) {
            self.on_estimate(i, estimate_bps, now);
        }
    }
}

fn slots_message(p: &Participant) -> ServerMessage {
    ServerMessage::Slots {
        video: p
            .video_slots
            .iter()
            .map(|s| VideoSlotInfo {
                mid: s.mid.to_string(),
                // A paused slot still names whom it holds (its target), so
                // the page keeps the tile with a "paused" state.
                participant: s
                    .current()
                    .or(s.target().filter(|_| s.is_paused()))
                    .map(|f| f.publisher.to_string()),
                source: s
                    .current()
                    .or(s.target().filter(|_| s.is_paused()))
                    .map(|f| f.source),
                layer: s.current().map(|f| f.layer.name()),
                paused: s.is_paused(),
                paused_reason: if s.client_paused() {
                    Some("client".into())
                } else if s.bandwidth_paused() {
                    Some("bandwidth".into())
                } else {
                    None
                },
            })
            .collect(),
        audio: p
            .audio_slots
            .iter()
            .map(|s| AudioSlotInfo {
                mid: s.mid.to_string(),
                participant: s.holder().map(|h| h.to_string()),
            })
            .collect(),
    }
}

fn send_control(p: &mut Participant, msg: &ServerMessage) {
    let Some(id) = p.channel else { return };
    let bytes = msg.to_bytes();
    if let Some(mut ch) = p.rtc.channel(id) {
        if let Err(e) = ch.write(false, &bytes) {
            tracing::debug!(participant = %p.id, "control write failed: {e}");
        }
        p.mark_dirty();
    }
}

/// Move a participant's time to `now` and queue whatever it has to send,
/// ignoring events (used while removing it).
fn flush_transmits(p: &mut Participant, now: Instant, out: &mut CoreOutput) {
    let _ = p.rtc.handle_input(Input::Timeout(now));
    while let Ok(o) = p.rtc.poll_output() {
        match o {
            Output::Transmit(t) => out.transmits.push_back((t, None)),
            Output::Timeout(_) => break,
            Output::Event(_) => {}
        }
    }
}
