//! The sans-IO core: rooms, datagram demultiplexing and timers of one shard.
//!
//! [`ShardCore`] is what a shard thread drives with a real socket and what
//! the simulator drives with virtual time and a simulated network: one code
//! path for both.
//!
//! # Driving contract
//!
//! - Inputs: [`ShardCore::handle_datagram`] for each received datagram (a
//!   batch of them), then [`ShardCore::flush`] once per batch;
//!   [`ShardCore::handle_timeout`] when [`ShardCore::poll_timeout`] is due;
//!   control calls ([`ShardCore::create_room`], `ShardCore::adopt`,
//!   [`ShardCore::remove`], [`ShardCore::set_locked`], [`ShardCore::close_room`]).
//! - Outputs: drain [`ShardCore::poll_transmit`] and [`ShardCore::poll_event`]
//!   after every input.
//!
//! Nothing in here reads a clock, opens a socket, spawns a thread or locks.
//!
//! # Containment
//!
//! Every piece of work done for one room (its datagrams, its timers, the
//! control calls aimed at it) runs under `catch_unwind`. A panic there is a
//! bug: the room is failed (its participants get a best-effort close, the
//! room is dropped, its addresses and ufrags leave the demultiplexing maps),
//! [`EngineEvent::RoomFailed`] is emitted, [`CoreStats::rooms_failed`]
//! counts it, and the shard's other rooms carry on untouched.

pub(crate) mod allocator;
pub mod chat;
pub mod control;
pub(crate) mod downlink;
pub(crate) mod ingress;
pub(crate) mod participant;
pub(crate) mod received;
pub(crate) mod rewriter;
pub(crate) mod room;
pub(crate) mod selector;
pub(crate) mod slot;
#[cfg(feature = "bench-slowdown")]
mod slowdown;
pub(crate) mod speaker;
mod stats;
pub(crate) mod tcp;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use str0m::net::{Protocol, Receive, Transmit};

use crate::config::{IngressConfig, RoomConfig};
use crate::error::Error;
use crate::event::{EngineEvent, LeaveReason};
use crate::ids::{ParticipantId, RoomId};
use crate::join::Prepared;

pub use room::{RoomStats, SlotState, SubscriberStats};
pub use stats::{
    CoreStats, DownlinkStats, DropStats, ESTIMATE_BOUNDS_BPS, Footprint, IngressStats, TcpStats,
};
pub use tcp::TcpClose;

/// Outputs accumulated by the core between polls.
#[derive(Default)]
pub(crate) struct CoreOutput {
    /// Datagrams to send, each with the `now` of the receive that brought
    /// the packet it forwards (`None`: not a forwarded packet).
    pub transmits: VecDeque<(Transmit, Option<Instant>)>,
    pub events: VecDeque<EngineEvent>,
    /// Participants removed since the core last looked (their demux entries go).
    pub left: Vec<ParticipantId>,
}

/// Whose ufrag it is, and how many addresses that participant has validated.
struct UfragRoute {
    room: RoomId,
    participant: ParticipantId,
    addresses: usize,
}

/// Where datagrams from a validated address go, and its ingress throttle.
struct Route {
    room: RoomId,
    participant: ParticipantId,
    throttle: ingress::Throttle,
}

/// What became of one packet (a UDP datagram or a TCP frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intake {
    /// From a validated address: handed to its participant (or throttled,
    /// or refused by it, and counted).
    Routed,
    /// From an unvalidated address, and no STUN binding request.
    NotStun,
    /// A binding request over its source's rate.
    RateLimited,
    /// A binding request refused: unknown ufrag, the participant's address
    /// limit, malformed, or unanswered by its ICE agent.
    Refused,
    /// A binding request the participant's ICE agent answered: its source
    /// is validated now.
    Validated,
}

/// One shard's rooms, demultiplexing maps and timers.
pub struct ShardCore {
    local_addr: SocketAddr,
    rooms: HashMap<RoomId, room::Room>,
    by_addr: HashMap<SocketAddr, Route>,
    /// Validated TCP connections (by the client's address), apart from the
    /// UDP addresses: the same IP and port may be both.
    by_tcp: HashMap<SocketAddr, Route>,
    /// ICE-TCP's connections, when on ([`ShardCore::enable_tcp`]).
    tcp: Option<tcp::TcpTable>,
    /// The TCP candidate's address (`local_addr` while TCP is off).
    tcp_local_addr: SocketAddr,
    by_ufrag: HashMap<String, UfragRoute>,
    sources: ingress::SourceLimiter,
    throttle: ingress::ThrottleLimits,
    max_addresses: usize,
    /// Earliest deadline per room; the heap may hold stale entries, which
    /// are skipped when they no longer match this map.
    deadlines: HashMap<RoomId, Instant>,
    timers: BinaryHeap<Reverse<(Instant, RoomId)>>,
    dirty: Vec<RoomId>,
    out: CoreOutput,
    stats: CoreStats,
    /// Most participants on this core; joins beyond are refused.
    admission_budget: Option<usize>,
    /// The latest `now` of an adopt, flush or timeout.
    last_now: Option<Instant>,
    /// The room whose timeout's flush [`ShardCore::handle_timeout_some`]
    /// cut short.
    timing_out: Option<RoomId>,
    /// Wall-clock anchor for chat message times ([`ShardCore::set_wall_clock`]).
    wall_clock: Option<(Instant, u64)>,
    #[cfg(feature = "bench-slowdown")]
    slowdown: slowdown::Slowdown,
}

impl ShardCore {
    /// A core whose participants are reached at `local_addr` (the shard's
    /// socket, or the simulated server address), with the default
    /// [`IngressConfig`].
    pub fn new(local_addr: SocketAddr) -> Self {
        Self::with_ingress(local_addr, &IngressConfig::default())
    }

    /// A core with the given socket protection limits (see
    /// [`IngressConfig::validate`]; invalid limits are used as given), its
    /// random keys from the OS.
    pub fn with_ingress(local_addr: SocketAddr, ingress: &IngressConfig) -> Self {
        Self::with_seed(local_addr, ingress, crate::rng::os_seed())
    }

    /// As [`ShardCore::with_ingress`], with every random choice of the core
    /// drawn from `seed` (a seeded simulation replays exactly).
    pub fn with_seed(local_addr: SocketAddr, ingress: &IngressConfig, seed: u64) -> Self {
        ShardCore {
            local_addr,
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            by_tcp: HashMap::new(),
            tcp: None,
            tcp_local_addr: local_addr,
            by_ufrag: HashMap::new(),
            sources: ingress::SourceLimiter::new(ingress, seed),
            throttle: ingress::ThrottleLimits::new(ingress),
            max_addresses: ingress.max_addresses_per_participant.max(1),
            deadlines: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            wall_clock: None,
            out: CoreOutput::default(),
            stats: CoreStats::default(),
            admission_budget: None,
            last_now: None,
            timing_out: None,
            #[cfg(feature = "bench-slowdown")]
            slowdown: slowdown::Slowdown::from_env(),
        }
    }

    /// The address datagrams arrive at.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Open a room on this shard.
    pub fn create_room(&mut self, id: RoomId, config: RoomConfig) {
        let mut room = room::Room::new(id, config);
        if let Some((at, unix_ms)) = self.wall_clock {
            room.set_wall_clock(at, unix_ms);
        }
        self.rooms.insert(id, room);
    }

    /// Tell the core what the wall clock read at `at` (Unix milliseconds),
    /// to label chat messages with times people can read. The core reads no
    /// clock itself: the shard thread reads both clocks together at start,
    /// the simulator gives a fixed anchor. Applies to rooms created after.
    pub fn set_wall_clock(&mut self, at: Instant, unix_ms: u64) {
        self.wall_clock = Some((at, unix_ms));
    }

    /// Refuse joins ([`Error::Overloaded`]) once the core holds this many
    /// participants, over all its rooms; `None` admits up to the rooms' own
    /// limits.
    pub fn set_admission_budget(&mut self, max_participants: Option<usize>) {
        self.admission_budget = max_participants;
    }

    /// Close a room: everyone is removed, the room forgotten. A room that
    /// panics while closing is failed instead ([`EngineEvent::RoomFailed`]),
    /// and is gone all the same.
    pub fn close_room(&mut self, id: RoomId, now: Instant) -> Result<(), Error> {
        self.close_room_because(id, LeaveReason::RoomClosed, now)
    }

    /// Close a room whose participants should rejoin elsewhere
    /// ([`LeaveReason::Moved`]): as [`ShardCore::close_room`], with another
    /// notice.
    pub fn hand_over_room(&mut self, id: RoomId, now: Instant) -> Result<(), Error> {
        self.close_room_because(id, LeaveReason::Moved, now)
    }

    /// Close every room, telling each participant the server is shutting
    /// down ([`LeaveReason::Shutdown`]).
    pub fn shutdown(&mut self, now: Instant) {
        // In id order, not hash order: the same events on every run.
        let mut rooms: Vec<RoomId> = self.rooms.keys().copied().collect();
        rooms.sort_unstable();
        for room in rooms {
            // A room that fails while closing is reported as failed.
            let _ = self.close_room_because(room, LeaveReason::Shutdown, now);
        }
    }

    fn close_room_because(
        &mut self,
        id: RoomId,
        reason: LeaveReason,
        now: Instant,
    ) -> Result<(), Error> {
        match self.in_room(id, now, |room, out| room.close(reason, now, out)) {
            Err(Error::UnknownRoom(r)) => return Err(Error::UnknownRoom(r)),
            Err(_) => return Ok(()),
            Ok(()) => {}
        }
        if let Some(room) = self.rooms.remove(&id) {
            self.stats.add_room(&room.stats);
        }
        self.collect_stats_and_leavers();
        self.forget_room_routes(id);
        self.deadlines.remove(&id);
        self.out
            .events
            .push_back(EngineEvent::RoomClosed { room: id });
        Ok(())
    }

    /// Participants in a room.
    pub fn room_len(&self, id: RoomId) -> Option<usize> {
        self.rooms.get(&id).map(|r| r.len())
    }

    /// Lock or unlock a room (a locked room admits nobody new).
    pub fn set_locked(&mut self, id: RoomId, locked: bool) -> Result<(), Error> {
        self.rooms
            .get_mut(&id)
            .ok_or(Error::UnknownRoom(id))?
            .set_locked(locked);
        Ok(())
    }

    /// Admit a prepared participant, re-checking the room's limits (the room
    /// may have filled or locked while the offer was being prepared).
    pub(crate) fn adopt(&mut self, p: Prepared, now: Instant) -> Result<(), Error> {
        let room_id = p.room;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(Error::UnknownRoom(room_id))?;
        if room.locked && !p.rejoining {
            return Err(Error::RoomLocked(room_id));
        }
        if room.len() >= room.config.max_participants {
            return Err(Error::RoomFull {
                room: room_id,
                max_participants: room.config.max_participants,
            });
        }
        if let Some(budget) = self.admission_budget {
            let participants = self.participant_count();
            if participants >= budget {
                self.stats.joins_refused_overload += 1;
                return Err(Error::Overloaded {
                    participants,
                    budget,
                });
            }
        }
        let (ufrag, id) = (p.ufrag.clone(), p.id);
        self.last_now = Some(now);
        self.in_room(room_id, now, |room, out| {
            room.add(p, now, out);
            room.flush(now, out);
        })?;
        self.by_ufrag.insert(
            ufrag,
            UfragRoute {
                room: room_id,
                participant: id,
                addresses: 0,
            },
        );
        self.reschedule(room_id);
        Ok(())
    }

    /// Remove a participant (leave or kick).
    pub fn remove(
        &mut self,
        room_id: RoomId,
        pid: ParticipantId,
        reason: LeaveReason,
        now: Instant,
    ) -> Result<(), Error> {
        let removed = self.in_room(room_id, now, |room, out| {
            let removed = room.remove(pid, reason, now, out);
            if removed {
                room.flush(now, out);
            }
            removed
        })?;
        if !removed {
            return Err(Error::UnknownParticipant(pid));
        }
        self.collect_stats_and_leavers();
        self.reschedule(room_id);
        Ok(())
    }

    /// One received datagram. Call [`ShardCore::flush`] after the batch.
    ///
    /// A datagram from a validated address passes its address's throttle
    /// and goes to the participant's `Rtc`. From any other address only a
    /// STUN binding request is considered, checked in order of cost: its
    /// header, the source's rate, its USERNAME's ufrag (both without
    /// allocating), and only then the full parse and the participant's ICE
    /// agent (message integrity). Nothing on the drop paths allocates.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) {
        self.receive::<false>(now, source, buf);
    }

    /// One UDP datagram (`TCP` false) or TCP frame (`TCP` true; from
    /// [`ShardCore::handle_tcp_data`]). The two differ only in their
    /// routes and str0m's protocol, both chosen at compile time: the UDP
    /// path is the code it always was.
    #[inline(always)]
    fn receive<const TCP: bool>(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) -> Intake {
        let srtp = matches!(buf.first(), Some(128..=191));
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += buf.len() as u64;
        let routes = if TCP {
            &mut self.by_tcp
        } else {
            &mut self.by_addr
        };
        if let Some(route) = routes.get_mut(&source) {
            if !self.throttle.admit(&mut route.throttle, now, buf.len()) {
                self.stats.drops.throttled += 1;
                return Intake::Routed;
            }
            let (room_id, pid) = (route.room, route.participant);
            let (proto, local) = if TCP {
                (Protocol::Tcp, self.tcp_local_addr)
            } else {
                (Protocol::Udp, self.local_addr)
            };
            let Ok(receive) = Receive::new(proto, source, local, buf) else {
                self.stats.drops.malformed += 1;
                return Intake::Routed;
            };
            if !self.rooms.contains_key(&room_id) {
                routes.remove(&source);
                self.stats.drops.unknown_source += 1;
                return Intake::Routed;
            }
            match self.in_room(room_id, now, |room, out| {
                room.handle_receive(pid, now, receive, srtp, out)
            }) {
                Ok(true) => {
                    #[cfg(feature = "bench-slowdown")]
                    self.slowdown.burn_in(buf.len());
                    if !self.dirty.contains(&room_id) {
                        self.dirty.push(room_id);
                    }
                }
                Ok(false) => self.stats.drops.rejected += 1,
                // The room failed on it (reported as such).
                Err(_) => {}
            }
            return Intake::Routed;
        }
        self.introduce::<TCP>(now, source, buf, srtp)
    }

    /// A packet from an address no participant has validated: only a STUN
    /// binding request with one of our ufrags may introduce it.
    fn introduce<const TCP: bool>(
        &mut self,
        now: Instant,
        source: SocketAddr,
        buf: &[u8],
        srtp: bool,
    ) -> Intake {
        if !ingress::is_binding_request(buf) {
            self.stats.drops.unknown_source += 1;
            return Intake::NotStun;
        }
        if !self.sources.admit(source.ip(), now) {
            self.stats.drops.rate_limited += 1;
            return Intake::RateLimited;
        }
        let Some(ufrag) = ingress::binding_request_ufrag(buf) else {
            self.stats.drops.unknown_ufrag += 1;
            return Intake::Refused;
        };
        let Some(route) = self.by_ufrag.get(ufrag) else {
            self.stats.drops.unknown_ufrag += 1;
            return Intake::Refused;
        };
        // A participant at its address limit learns no more: its ICE agent
        // is not even asked (no HMAC, no new candidate pair).
        if route.addresses >= self.max_addresses {
            self.stats.drops.address_limit += 1;
            return Intake::Refused;
        }
        let (room_id, pid) = (route.room, route.participant);
        if !self.rooms.contains_key(&room_id) {
            self.stats.drops.unknown_ufrag += 1;
            return Intake::Refused;
        }
        let (proto, local) = if TCP {
            (Protocol::Tcp, self.tcp_local_addr)
        } else {
            (Protocol::Udp, self.local_addr)
        };
        let Ok(receive) = Receive::new(proto, source, local, buf) else {
            self.stats.drops.malformed += 1;
            return Intake::Refused;
        };
        let before = self.out.transmits.len();
        match self.in_room(room_id, now, |room, out| {
            room.handle_receive(pid, now, receive, srtp, out)
        }) {
            Ok(true) => {}
            Ok(false) => {
                self.stats.drops.rejected += 1;
                return Intake::Refused;
            }
            Err(_) => return Intake::Refused,
        }
        // The participant's ICE agent answers only requests whose message
        // integrity it verified: an answer to `source` validates it.
        let answered = self
            .out
            .transmits
            .iter()
            .skip(before)
            .any(|(t, _)| t.destination == source && t.proto == proto);
        if answered {
            if let Some(route) = self.by_ufrag.get_mut(ufrag) {
                route.addresses += 1;
            }
            let routes = if TCP {
                &mut self.by_tcp
            } else {
                &mut self.by_addr
            };
            routes.insert(
                source,
                Route {
                    room: room_id,
                    participant: pid,
                    throttle: ingress::Throttle::FULL,
                },
            );
        } else {
            // Unanswered: its message integrity did not verify.
            self.stats.drops.rejected += 1;
        }
        if !self.dirty.contains(&room_id) {
            self.dirty.push(room_id);
        }
        if answered {
            Intake::Validated
        } else {
            Intake::Refused
        }
    }

    /// Flush the rooms touched since the last flush: writes become datagrams.
    pub fn flush(&mut self, now: Instant) {
        let done = self.flush_some(now, usize::MAX);
        debug_assert!(done, "an unbounded flush finishes");
    }

    /// [`ShardCore::flush`] in parts, so the first datagrams can leave
    /// while the rest are still being made: returns false as soon as at
    /// least `ready` datagrams wait in [`ShardCore::poll_transmit`]. Drain
    /// them and call again with the same `now`, before any other input,
    /// until it returns true. Every `Rtc` gets the same inputs in the same
    /// order as with one [`ShardCore::flush`]; only the datagrams leave
    /// sooner.
    pub fn flush_some(&mut self, now: Instant, ready: usize) -> bool {
        self.last_now = Some(now);
        while let Some(&room_id) = self.dirty.last() {
            match self.in_room(room_id, now, |room, out| room.flush_some(now, out, ready)) {
                Ok(false) => return false,
                Ok(true) => {
                    self.dirty.pop();
                    self.reschedule(room_id);
                }
                // The room failed (and left the dirty list) or is gone.
                Err(_) => {
                    self.dirty.retain(|r| *r != room_id);
                }
            }
        }
        self.collect_stats_and_leavers();
        true
    }

    /// Earliest time [`ShardCore::handle_timeout`] is needed.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut rooms = None;
        while let Some(Reverse((t, room))) = self.timers.peek().copied() {
            if self.deadlines.get(&room) == Some(&t) {
                rooms = Some(t);
                break;
            }
            self.timers.pop();
        }
        match (rooms, self.tcp_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drive every room whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let done = self.handle_timeout_some(now, usize::MAX);
        debug_assert!(done, "an unbounded timeout finishes");
    }

    /// [`ShardCore::handle_timeout`] in parts, as [`ShardCore::flush_some`]
    /// is the flush in parts: returns false as soon as at least `ready`
    /// datagrams wait in [`ShardCore::poll_transmit`]; drain them and call
    /// again with the same `now`, before any other input, until it returns
    /// true.
    pub fn handle_timeout_some(&mut self, now: Instant, ready: usize) -> bool {
        self.last_now = Some(now);
        let mut resumed = self.timing_out.take();
        if resumed.is_none() {
            self.sweep_tcp(now);
        }
        loop {
            let room_id = match resumed.take() {
                Some(r) => r,
                None => {
                    let Some(Reverse((t, room_id))) = self.timers.peek().copied() else {
                        break;
                    };
                    if t > now {
                        break;
                    }
                    self.timers.pop();
                    if self.deadlines.get(&room_id) != Some(&t) {
                        continue;
                    }
                    self.deadlines.remove(&room_id);
                    let started =
                        self.in_room(room_id, now, |room, out| room.start_timeout(now, out));
                    if started.is_err() {
                        continue;
                    }
                    room_id
                }
            };
            match self.in_room(room_id, now, |room, out| room.flush_some(now, out, ready)) {
                Ok(false) => {
                    self.timing_out = Some(room_id);
                    return false;
                }
                Ok(true) => self.reschedule(room_id),
                // The room failed, or is gone.
                Err(_) => {}
            }
        }
        self.collect_stats_and_leavers();
        true
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit_received().map(|(t, _)| t)
    }

    /// Next datagram to send and, when it carries a forwarded RTP packet,
    /// the `now` of the [`ShardCore::handle_datagram`] that received that
    /// packet (however long str0m's pacer held it). The driver subtracts it
    /// from the time it hands the datagram to the socket: the SFU's own
    /// latency ([`crate::ForwardLatency`]).
    pub fn poll_transmit_received(&mut self) -> Option<(Transmit, Option<Instant>)> {
        let (t, received) = self.out.transmits.pop_front()?;
        #[cfg(feature = "bench-slowdown")]
        self.slowdown.burn_out(t.contents.len());
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += t.contents.len() as u64;
        Some((t, received))
    }

    /// Datagrams waiting in [`ShardCore::poll_transmit`].
    pub fn pending_transmits(&self) -> usize {
        self.out.transmits.len()
    }

    /// Next event for the embedder.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        let e = self.out.events.pop_front()?;
        if let EngineEvent::ParticipantLeft {
            reason: LeaveReason::Timeout,
            ..
        } = e
        {
            self.stats.participants_timed_out += 1;
        }
        Some(e)
    }

    /// Counters (room counters summed).
    pub fn stats(&self) -> CoreStats {
        let mut s = self.stats;
        s.ingress.tracked_sources = self.sources.len();
        s.ingress.source_table_capacity = self.sources.capacity();
        s.ingress.source_evictions = self.sources.evictions();
        s.ingress.validated_addresses = self.by_addr.len() + self.by_tcp.len();
        s.tcp = self.tcp_stats();
        for r in self.rooms.values() {
            s.add_room(&r.stats);
            r.add_downlinks(&mut s.downlinks);
        }
        s
    }

    /// Rooms on this shard.
    pub fn room_ids(&self) -> impl Iterator<Item = RoomId> + '_ {
        self.rooms.keys().copied()
    }

    /// Participants on this shard.
    pub fn participant_count(&self) -> usize {
        self.rooms.values().map(|r| r.len()).sum()
    }

    /// What the core holds, counted: rooms, participants, routes, slots,
    /// demultiplexing entries, timers.
    pub fn footprint(&self) -> Footprint {
        let mut f = Footprint::default();
        for r in self.rooms.values() {
            r.footprint(&mut f);
        }
        f.demux_addrs = self.by_addr.len();
        f.demux_tcp = self.by_tcp.len();
        f.tcp_connections = self.tcp_stats().open;
        f.demux_ufrags = self.by_ufrag.len();
        f.deadlines = self.deadlines.len();
        f
    }

    /// Who is in which slot of one subscriber (the `slots` control message).
    pub fn slots_of(&self, room: RoomId, p: ParticipantId) -> Option<control::ServerMessage> {
        self.rooms.get(&room)?.slots_of(p)
    }

    /// Bandwidth and layer state of one subscriber.
    pub fn subscriber_stats(&self, room: RoomId, p: ParticipantId) -> Option<SubscriberStats> {
        self.rooms.get(&room)?.subscriber_stats(p)
    }

    /// The room's dominant speaker.
    pub fn active_speaker(&self, room: RoomId) -> Option<ParticipantId> {
        self.rooms.get(&room)?.active_speaker()
    }

    /// Per-participant counters of one room: (id, rtp in, rtp forwarded to it).
    pub fn participant_stats(&self, room: RoomId) -> Vec<(ParticipantId, u64, u64)> {
        self.rooms
            .get(&room)
            .map(|r| r.participant_stats())
            .unwrap_or_default()
    }

    /// Deliver a control-channel message as if the participant had sent it.
    #[cfg(any(test, feature = "sim"))]
    pub fn inject_client_message(&mut self, room: RoomId, p: ParticipantId, data: &[u8]) {
        // The last time the core saw (chat stamps and rate-limits with it).
        // With no time seen yet nobody was ever adopted: there is no one to
        // deliver to.
        let Some(now) = self.last_now else {
            return;
        };
        if self
            .in_room(room, now, |r, _| r.inject_client_message(p, data, now))
            .is_ok()
            && !self.dirty.contains(&room)
        {
            self.dirty.push(room);
        }
    }

    /// Report a downlink estimate for participant `p` as if its `Rtc` had
    /// (simulator tests: an estimate that dips while the link is fine).
    /// It counts from the next allocation on, like str0m's own.
    #[cfg(any(test, feature = "sim"))]
    pub fn inject_estimate(&mut self, room: RoomId, p: ParticipantId, estimate_bps: u64) {
        let Some(now) = self.last_now else {
            return;
        };
        let _ = self.in_room(room, now, |r, _| r.inject_estimate(p, estimate_bps, now));
    }

    /// Fault injection (feature `fault-injection`, tests only): the room
    /// panics the next time it handles a datagram or a timer, as a bug in
    /// its processing would.
    #[cfg(feature = "fault-injection")]
    pub fn inject_panic(&mut self, room: RoomId) -> Result<(), Error> {
        self.rooms
            .get_mut(&room)
            .ok_or(Error::UnknownRoom(room))?
            .panic_armed = true;
        Ok(())
    }

    /// Benchmark hook: route datagrams from `addr` (when given) and STUN
    /// binding requests for `ufrag` (when given) to `participant` of `room`
    /// without a join, so demultiplexing can be measured at scale (10 000
    /// entries) without building 10 000 `Rtc`s. A datagram routed to a
    /// participant the room does not hold is counted as `rejected`.
    #[cfg(feature = "sim")]
    pub fn insert_route(
        &mut self,
        room: RoomId,
        participant: ParticipantId,
        addr: Option<SocketAddr>,
        ufrag: Option<String>,
    ) {
        if let Some(a) = addr {
            self.by_addr.insert(
                a,
                Route {
                    room,
                    participant,
                    throttle: ingress::Throttle::FULL,
                },
            );
        }
        if let Some(u) = ufrag {
            self.by_ufrag.insert(
                u,
                UfragRoute {
                    room,
                    participant,
                    addresses: 0,
                },
            );
        }
    }

    /// Run `f` on room `id` under `catch_unwind`. A panic fails the room
    /// (see [`ShardCore::fail_room`]) and comes back as [`Error::Internal`].
    fn in_room<R>(
        &mut self,
        id: RoomId,
        now: Instant,
        f: impl FnOnce(&mut room::Room, &mut CoreOutput) -> R,
    ) -> Result<R, Error> {
        let room = self.rooms.get_mut(&id).ok_or(Error::UnknownRoom(id))?;
        let out = &mut self.out;
        match catch_unwind(AssertUnwindSafe(|| f(room, out))) {
            Ok(r) => Ok(r),
            Err(payload) => {
                let reason = panic_message(payload.as_ref());
                self.fail_room(id, now, reason.clone());
                Err(Error::Internal(format!("room {id} failed: {reason}")))
            }
        }
    }

    /// A room panicked: its state can no longer be trusted. Tell its
    /// participants (best effort: the same close as a room closing, which a
    /// room broken enough to panic again skips), drop it, forget its
    /// demultiplexing entries and timers, report it.
    fn fail_room(&mut self, id: RoomId, now: Instant, reason: String) {
        tracing::error!(room = %id, "panic in room processing; the room is closed, the shard's other rooms continue: {reason}");
        self.stats.rooms_failed += 1;
        if let Some(mut room) = self.rooms.remove(&id) {
            let out = &mut self.out;
            let closing = || room.close(LeaveReason::RoomClosed, now, out);
            if catch_unwind(AssertUnwindSafe(closing)).is_err() {
                tracing::error!(room = %id, "the failed room panicked again while closing");
            }
            // Its counts stay in the totals (counters never go down).
            self.stats.add_room(&room.stats);
            drop(room);
        }
        self.collect_stats_and_leavers();
        self.forget_room_routes(id);
        self.deadlines.remove(&id);
        self.dirty.retain(|r| *r != id);
        self.out
            .events
            .push_back(EngineEvent::RoomFailed { room: id, reason });
    }

    fn reschedule(&mut self, room_id: RoomId) {
        let Some(room) = self.rooms.get(&room_id) else {
            self.deadlines.remove(&room_id);
            return;
        };
        match room.poll_timeout() {
            Some(t) => {
                if self.deadlines.insert(room_id, t) != Some(t) {
                    self.timers.push(Reverse((t, room_id)));
                }
            }
            None => {
                self.deadlines.remove(&room_id);
            }
        }
        // Bound the stale entries: rebuild when the heap is mostly stale.
        if self.timers.len() > 64 && self.timers.len() > 4 * self.deadlines.len() {
            self.timers = self
                .deadlines
                .iter()
                .map(|(r, t)| Reverse((*t, *r)))
                .collect();
        }
    }

    /// Forget demux entries of participants the rooms removed (leaves,
    /// kicks and disconnects alike).
    fn collect_stats_and_leavers(&mut self) {
        while let Some(p) = self.out.left.pop() {
            self.forget_participant_routes(p);
        }
    }

    fn forget_participant_routes(&mut self, pid: ParticipantId) {
        self.by_addr.retain(|_, v| v.participant != pid);
        self.by_ufrag.retain(|_, v| v.participant != pid);
        self.close_tcp_routes(|v| v.participant == pid);
    }

    fn forget_room_routes(&mut self, room: RoomId) {
        self.by_addr.retain(|_, v| v.room != room);
        self.by_ufrag.retain(|_, v| v.room != room);
        self.close_tcp_routes(|v| v.room == room);
    }
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
