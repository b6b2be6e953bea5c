//! The embedding API: [`Engine`], built with [`EngineBuilder`].
//!
//! The engine is the control plane. It keeps a registry of rooms (which shard
//! each lives on, its limits and lock), prepares joins on the caller's thread
//! and sends the shards small commands; media never passes through it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::{ConfigError, IngressConfig, JoinOptions, RoomConfig, TcpConfig};
use crate::core::SubscriberStats;
use crate::error::Error;
#[cfg(doc)]
use crate::event::EngineEvent;
use crate::event::{Events, LeaveReason};
use crate::ids::{ParticipantId, RoomId};
use crate::join::{self, JoinContext};
use crate::shard::driver::RoomShared;
use crate::shard::{Command, ShardConfig, ShardHandle, ShardStats};

/// Default capacity of the events channel.
const DEFAULT_EVENTS_CAPACITY: usize = 4096;
/// Default capacity of each shard's command queue.
const DEFAULT_COMMAND_CAPACITY: usize = 256;
/// How long [`Engine::shutdown`] (and dropping the engine) waits for the
/// shard threads.
pub const DEFAULT_SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// Configures and starts an [`Engine`]. Get one from [`Engine::builder`].
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    shards: Option<usize>,
    bind: IpAddr,
    port_range: RangeInclusive<u16>,
    public_ip: Option<IpAddr>,
    events_capacity: usize,
    command_capacity: usize,
    max_participants_per_shard: Option<usize>,
    ingress: IngressConfig,
    tcp: Option<TcpConfig>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            shards: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_range: 0..=0,
            public_ip: None,
            events_capacity: DEFAULT_EVENTS_CAPACITY,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            max_participants_per_shard: None,
            ingress: IngressConfig::default(),
            tcp: None,
        }
    }
}

impl EngineBuilder {
    /// Number of shards (threads, each with its own UDP socket). Default:
    /// [`std::thread::available_parallelism`].
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// The IP the shard sockets bind to. Default `127.0.0.1`. Binding to an
    /// unspecified address (`0.0.0.0`, `::`) requires
    /// [`EngineBuilder::public_ip`].
    pub fn bind(mut self, ip: IpAddr) -> Self {
        self.bind = ip;
        self
    }

    /// UDP ports the shards may bind: each shard takes the first free one.
    /// Default `0..=0`: the operating system assigns a port per shard.
    pub fn port_range(mut self, ports: RangeInclusive<u16>) -> Self {
        self.port_range = ports;
        self
    }

    /// The IP clients reach the engine at, advertised in the ICE host
    /// candidate instead of the bound address (behind a 1:1 NAT, or when
    /// binding to `0.0.0.0`).
    pub fn public_ip(mut self, ip: IpAddr) -> Self {
        self.public_ip = Some(ip);
        self
    }

    /// Capacity of the events channel ([`Engine::events`]). When it is full,
    /// shards drop new events and count them in [`ShardStats::events_dropped`].
    /// Default 4096.
    pub fn events_capacity(mut self, n: usize) -> Self {
        self.events_capacity = n;
        self
    }

    /// Capacity of each shard's control command queue. Default 256.
    pub fn command_capacity(mut self, n: usize) -> Self {
        self.command_capacity = n;
        self
    }

    /// Admission control: a shard that hosts this many participants (over
    /// all its rooms) refuses further joins with [`Error::Overloaded`], so
    /// the calls already running keep their quality; room creation places
    /// new rooms on the shard with the most headroom and fails with
    /// [`Error::AtCapacity`] when every shard is at its budget. Default: no
    /// budget (rooms are limited only by their own `max_participants`).
    ///
    /// Size it from measurements (docs/operations.md): a 50-person room of
    /// clients with 9 video and 3 audio slots costs about 0.55-0.65 of a
    /// core on the reference machine, so ~64 keeps a shard near 80 %.
    pub fn max_participants_per_shard(mut self, n: usize) -> Self {
        self.max_participants_per_shard = Some(n);
        self
    }

    /// Socket protection limits of every shard: per-source STUN rate of
    /// unvalidated addresses, per-address ingress bitrate and packet rate.
    /// Default [`IngressConfig::default`].
    pub fn ingress(mut self, config: IngressConfig) -> Self {
        self.ingress = config;
        self
    }

    /// ICE-TCP (RFC 6544) beside UDP: every shard also listens on TCP, on
    /// the same port number as its UDP socket (the first port of
    /// [`EngineBuilder::port_range`] free for both), and every answer
    /// carries a passive TCP host candidate after the UDP one, so clients
    /// whose network drops UDP still connect (clients prefer UDP when both
    /// work). `None` (the default) turns it off: no listener, no TCP
    /// candidate. See [`TcpConfig`] for the limits.
    pub fn ice_tcp(mut self, config: Option<TcpConfig>) -> Self {
        self.tcp = config;
        self
    }

    /// Bind the sockets, start the shard threads and return the engine.
    pub fn build(self) -> Result<Engine, Error> {
        let shard_count = match self.shards {
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let bad =
            |field, reason: String| Err(Error::InvalidConfig(ConfigError::new(field, reason)));
        if shard_count == 0 {
            return bad("shards", "must be at least 1".into());
        }
        if self.port_range.start() > self.port_range.end() {
            return bad(
                "port_range",
                format!(
                    "{}..={} is empty",
                    self.port_range.start(),
                    self.port_range.end()
                ),
            );
        }
        if *self.port_range.start() == 0 && *self.port_range.end() != 0 {
            return bad(
                "port_range",
                "must be 0..=0 (OS-assigned) or start above 0".into(),
            );
        }
        if self.max_participants_per_shard == Some(0) {
            return bad("max_participants_per_shard", "must be at least 1".into());
        }
        if self.events_capacity == 0 {
            return bad("events_capacity", "must be at least 1".into());
        }
        if self.command_capacity == 0 {
            return bad("command_capacity", "must be at least 1".into());
        }
        self.ingress.validate()?;
        if let Some(tcp) = &self.tcp {
            tcp.validate()?;
        }
        let advertise_ip = match self.public_ip {
            Some(ip) if ip.is_unspecified() => {
                return bad(
                    "public_ip",
                    format!("{ip} is unspecified; give the address clients reach"),
                );
            }
            Some(ip) => ip,
            None if self.bind.is_unspecified() => {
                return bad(
                    "public_ip",
                    format!(
                        "binding to {} needs it: the address clients reach the engine at",
                        self.bind
                    ),
                );
            }
            None => self.bind,
        };

        let seed = crate::rng::os_seed();
        let join_ctx = JoinContext::new(crate::rng::derive(seed, crate::rng::stream::JOIN))?;
        let (events_tx, events_rx) = crossbeam_channel::bounded(self.events_capacity);
        let mut shards = Vec::with_capacity(shard_count);
        for index in 0..shard_count {
            let config = ShardConfig {
                index,
                bind: self.bind,
                port_range: self.port_range.clone(),
                advertise_ip,
                command_capacity: self.command_capacity,
                admission_budget: self.max_participants_per_shard,
                ingress: self.ingress.clone(),
                seed: crate::rng::derive(seed, crate::rng::stream::SHARD + index as u64),
                tcp: self.tcp.clone(),
            };
            match ShardHandle::spawn(config, events_tx.clone()) {
                Ok(s) => shards.push(s),
                Err(e) => {
                    // Stop the shards already running before reporting.
                    for s in &shards {
                        s.begin_shutdown();
                    }
                    for s in &shards {
                        s.join();
                    }
                    return Err(e);
                }
            }
        }

        Ok(Engine {
            shards,
            registry: Mutex::new(HashMap::new()),
            next_room: AtomicU32::new(1),
            next_participant: AtomicU32::new(1),
            join_ctx,
            advertise_ip,
            events: Events::new(events_rx),
            closed: AtomicBool::new(false),
            budget: self.max_participants_per_shard,
        })
    }
}

/// The result of a successful [`Engine::join`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Joined {
    /// The new participant's id (use it to leave or kick).
    pub participant: ParticipantId,
    /// The SDP answer to hand back to the client.
    pub answer: String,
}

/// Counters of the whole engine.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineStats {
    /// One entry per shard, in index order.
    pub shards: Vec<ShardStats>,
}

impl EngineStats {
    /// Participants on all shards.
    pub fn participants(&self) -> usize {
        self.shards.iter().map(|s| s.participants).sum()
    }

    /// Rooms on all shards.
    pub fn rooms(&self) -> usize {
        self.shards.iter().map(|s| s.rooms).sum()
    }
}

/// A room's lock and size as the engine holds them ([`Engine::room_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomInfo {
    /// Joins are refused ([`Engine::lock`]).
    pub locked: bool,
    /// Participants in the room now.
    pub participants: usize,
    /// The room's size limit ([`RoomConfig::max_participants`]).
    pub max_participants: usize,
}

/// What the control plane knows about a room: where it lives, its
/// configuration, and what its shard (the one owner of membership, lock and
/// limits) publishes of it.
struct RoomEntry {
    shard: usize,
    /// Size and lock, written by the shard (joins, leaves, kicks and
    /// disconnects alike), read here to refuse joins early.
    shared: Arc<RoomShared>,
    config: Arc<RoomConfig>,
}

impl RoomEntry {
    fn participants(&self) -> usize {
        self.shared.participants.load(Ordering::Relaxed)
    }
}

/// A running SFU: shard threads with their sockets, and the room registry.
///
/// Rooms are placed on the shard with the fewest participants when created
/// and stay there. [`Engine::join`] does the expensive part of a join
/// (parsing the offer, building the participant's str0m `Rtc`, ~2-5 ms of
/// CPU) on the calling thread, then hands the participant to the room's
/// shard; call it from your signalling threads, not from a latency-critical
/// one. Every method takes `&self`: share the engine with an `Arc`.
///
/// Errors are typed ([`Error`]) and never panics on client input: a
/// malformed offer, an unknown room, a full or locked room each have their
/// own variant.
///
/// Dropping the engine (or calling [`Engine::shutdown`] or
/// [`Engine::shutdown_within`]) refuses new calls, closes every room
/// (telling each participant), stops the shards and joins their threads
/// within a bound.
///
/// # Example
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let offer_sdp = String::new();
/// let engine = piazza::Engine::builder()
///     .shards(2)
///     .bind("127.0.0.1".parse()?)
///     .build()?;
/// let room = engine.create_room(piazza::RoomConfig::default())?;
///
/// // `offer_sdp` is the client's offer, from your signalling channel.
/// let joined = engine.join(room, &offer_sdp, piazza::JoinOptions::new("Alice"))?;
/// // Send `joined.answer` back to the client.
///
/// for event in engine.events().try_iter() {
///     println!("{event:?}");
/// }
/// println!("{:?}", engine.stats());
///
/// engine.leave(room, joined.participant)?;
/// engine.close_room(room)?;
/// engine.shutdown();
/// # Ok(())
/// # }
/// ```
pub struct Engine {
    shards: Vec<ShardHandle>,
    registry: Mutex<HashMap<RoomId, RoomEntry>>,
    next_room: AtomicU32,
    next_participant: AtomicU32,
    join_ctx: JoinContext,
    advertise_ip: IpAddr,
    events: Events,
    closed: AtomicBool,
    budget: Option<usize>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.shard_addrs())
            .field("advertise_ip", &self.advertise_ip)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Engine {
    /// Start configuring an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Open a room on the least-loaded shard (fewest participants, then
    /// fewest rooms). The room stays on that shard until it closes. With an
    /// admission budget ([`EngineBuilder::max_participants_per_shard`]) and
    /// every shard at it, fails with [`Error::AtCapacity`].
    pub fn create_room(&self, config: RoomConfig) -> Result<RoomId, Error> {
        self.check_open()?;
        config.validate()?;
        let room = RoomId(self.next_room.fetch_add(1, Ordering::Relaxed));
        let shared = Arc::new(RoomShared::default());
        let (reply, answer) = crossbeam_channel::bounded(1);
        let shard = {
            let mut registry = self.registry();
            let (shard, load) = self.least_loaded(&registry);
            if self.budget.is_some_and(|b| load >= b) {
                return Err(Error::AtCapacity);
            }
            // Queued while the registry is locked, so a join that finds the
            // room in the registry finds it on the shard too (one FIFO per
            // shard), and the next placement counts this room.
            self.shards[shard].send(Command::CreateRoom {
                room,
                config: Box::new(config.clone()),
                shared: shared.clone(),
                reply,
            })?;
            registry.insert(
                room,
                RoomEntry {
                    shard,
                    shared,
                    config: Arc::new(config),
                },
            );
            shard
        };
        // Wait outside the lock: when this returns the room is on the shard
        // and in its stats.
        match answer.recv().unwrap_or(Err(Error::EngineClosed)) {
            Ok(()) => Ok(room),
            Err(e) => {
                tracing::debug!(shard, %room, "room creation failed: {e}");
                self.registry().remove(&room);
                Err(e)
            }
        }
    }

    /// Admit a participant: validate against the room, answer the client's
    /// SDP `offer` and hand the participant to the room's shard.
    ///
    /// The offer should carry sendonly Opus audio and VP8 video (camera, then
    /// an optional screen share), recvonly m-lines as receive slots, and a
    /// data channel for control messages.
    ///
    /// With an admission budget ([`EngineBuilder::max_participants_per_shard`])
    /// a join to a room whose shard is at it fails with
    /// [`Error::Overloaded`] before any work is done (the shard checks again
    /// on adoption, so concurrent joins cannot overshoot it).
    pub fn join(&self, room: RoomId, offer: &str, options: JoinOptions) -> Result<Joined, Error> {
        self.check_open()?;
        let (shard, config) = {
            let registry = self.registry();
            let entry = registry.get(&room).ok_or(Error::UnknownRoom(room))?;
            // Early refusals from what the shard published; the shard's
            // core decides on adoption.
            if entry.shared.locked.load(Ordering::Relaxed) && !options.rejoining {
                return Err(Error::RoomLocked(room));
            }
            let max = entry.config.max_participants;
            if entry.participants() >= max {
                return Err(Error::RoomFull {
                    room,
                    max_participants: max,
                });
            }
            if let Some(budget) = self.budget {
                let participants = self.shard_load(&registry, entry.shard);
                if participants >= budget {
                    self.shards[entry.shard].count_refused();
                    return Err(Error::Overloaded {
                        participants,
                        budget,
                    });
                }
            }
            (entry.shard, entry.config.clone())
        };
        let participant = ParticipantId(self.next_participant.fetch_add(1, Ordering::Relaxed));
        // The ICE host candidate: the public IP (or the bound one) and the
        // port of the room's shard.
        let candidate = self.shards[shard].advertised_addr;
        let tcp_candidate = self.shards[shard].advertised_tcp_addr;
        let mut prepared = join::prepare(
            &self.join_ctx,
            room,
            &config,
            participant,
            options.name,
            offer,
            candidate,
            tcp_candidate,
            Instant::now(),
        )?;
        prepared.rejoining = options.rejoining;
        let answer = std::mem::take(&mut prepared.answer);
        // The shard re-checks lock and size: they may have changed meanwhile.
        let adopted = self.shards[shard].request(|reply| Command::Adopt(Box::new(prepared), reply));
        self.forget_if_gone(room, adopted)?;
        Ok(Joined {
            participant,
            answer,
        })
    }

    /// Remove a participant at its own request ([`LeaveReason::Left`]).
    pub fn leave(&self, room: RoomId, participant: ParticipantId) -> Result<(), Error> {
        self.remove(room, participant, LeaveReason::Left)
    }

    /// Remove a participant at the room owner's request
    /// ([`LeaveReason::Kicked`]); the client is told over its data channel.
    pub fn kick(&self, room: RoomId, participant: ParticipantId) -> Result<(), Error> {
        self.remove(room, participant, LeaveReason::Kicked)
    }

    /// Lock (`true`) or unlock a room. A locked room refuses joins with
    /// [`Error::RoomLocked`]; participants already in it stay, and those
    /// coming back ([`JoinOptions::rejoining`]) are admitted.
    pub fn lock(&self, room: RoomId, locked: bool) -> Result<(), Error> {
        self.check_open()?;
        // The shard owns the lock (and publishes it for early refusals).
        let shard = self.room_shard(room)?;
        let r = self.shards[shard].request(|reply| Command::Lock {
            room,
            locked,
            reply,
        });
        self.forget_if_gone(room, r)
    }

    /// Close a room: everyone in it is removed ([`LeaveReason::RoomClosed`])
    /// and the id becomes unknown.
    pub fn close_room(&self, room: RoomId) -> Result<(), Error> {
        self.close(room, false)
    }

    /// Close a room that continues on another server: as
    /// [`Engine::close_room`], but everyone is told the room moved and to
    /// rejoin ([`LeaveReason::Moved`]) rather than that it closed.
    pub fn hand_over_room(&self, room: RoomId) -> Result<(), Error> {
        self.close(room, true)
    }

    fn close(&self, room: RoomId, moved: bool) -> Result<(), Error> {
        self.check_open()?;
        let entry = self
            .registry()
            .remove(&room)
            .ok_or(Error::UnknownRoom(room))?;
        self.shards[entry.shard].request(|reply| Command::CloseRoom { room, moved, reply })
    }

    /// The engine's events (joins, connections, leaves, speakers). Every call
    /// returns a handle to the same bounded channel: each event goes to
    /// exactly one receiver. Read it promptly; when it is full, new events
    /// are dropped and counted in [`ShardStats::events_dropped`].
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    /// Counters of every shard, as last published by the shard threads
    /// (immediately after each control operation, and at most every ~100 ms
    /// while media flows). Cheap: no round trip to the shards.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            shards: self.shards.iter().map(|s| s.snapshot()).collect(),
        }
    }

    /// Counters of every shard, asked of the shard threads now (one round
    /// trip to each).
    pub fn refresh_stats(&self) -> Result<EngineStats, Error> {
        self.check_open()?;
        let shards = self
            .shards
            .iter()
            .map(|s| s.fresh_stats())
            .collect::<Result<_, _>>()?;
        Ok(EngineStats { shards })
    }

    /// The bound address of each shard's socket, in shard order.
    pub fn shard_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|s| s.local_addr).collect()
    }

    /// The address each shard advertises in ICE candidates (the public IP if
    /// one was configured), in shard order.
    pub fn advertised_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|s| s.advertised_addr).collect()
    }

    /// The address each shard's ICE-TCP listener is bound to, in shard
    /// order (empty when TCP is off).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.shards
            .iter()
            .filter_map(|s| s.snapshot().tcp_addr)
            .collect()
    }

    /// One subscriber's downlink estimate, allocation and per-slot layers
    /// (asks the room's shard).
    pub fn subscriber_stats(
        &self,
        room: RoomId,
        participant: ParticipantId,
    ) -> Result<SubscriberStats, Error> {
        self.check_open()?;
        let shard = self.room_shard(room)?;
        self.shards[shard].request(|reply| Command::SubscriberStats {
            room,
            participant,
            reply,
        })
    }

    /// A room's lock and size, read from the engine's registry (no round
    /// trip to the shard).
    pub fn room_info(&self, room: RoomId) -> Result<RoomInfo, Error> {
        self.registry()
            .get(&room)
            .map(|e| RoomInfo {
                locked: e.shared.locked.load(Ordering::Relaxed),
                participants: e.participants(),
                max_participants: e.config.max_participants,
            })
            .ok_or(Error::UnknownRoom(room))
    }

    /// The shard a room lives on, by index into [`Engine::shard_addrs`].
    pub fn room_shard(&self, room: RoomId) -> Result<usize, Error> {
        self.registry()
            .get(&room)
            .map(|e| e.shard)
            .ok_or(Error::UnknownRoom(room))
    }

    /// [`Engine::shutdown_within`] with [`DEFAULT_SHUTDOWN_BOUND`] (5 s).
    pub fn shutdown(&self) {
        self.shutdown_within(DEFAULT_SHUTDOWN_BOUND);
    }

    /// Graceful shutdown, bounded by `bound`:
    ///
    /// 1. From now on every call fails with [`Error::EngineClosed`] (joins
    ///    are refused).
    /// 2. Each shard closes its rooms: every participant gets a `closing`
    ///    control message, an RTCP BYE and a DTLS close_notify, and is
    ///    reported as [`LeaveReason::Shutdown`], then each room as
    ///    [`EngineEvent::RoomClosed`] (to [`Engine::events`], while it has
    ///    room).
    /// 3. The shards send what that produced and their threads end; this
    ///    waits for them until `bound` has passed.
    ///
    /// Returns true when every shard thread ended in time; a shard still
    /// busy at the bound is left detached (logged) and ends on its own.
    /// Idempotent.
    pub fn shutdown_within(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        self.closed.store(true, Ordering::SeqCst);
        for s in &self.shards {
            s.begin_shutdown();
        }
        let mut all = true;
        for s in &self.shards {
            all &= s.join_within(deadline);
        }
        self.registry().clear();
        all
    }

    /// Fault injection (feature `fault-injection`, for tests; never enable
    /// it in production): the room panics the next time it handles a
    /// datagram or a timer, as a bug in its processing would. The shard
    /// fails that room ([`EngineEvent::RoomFailed`]) and keeps the others
    /// running.
    #[cfg(feature = "fault-injection")]
    pub fn inject_panic(&self, room: RoomId) -> Result<(), Error> {
        self.check_open()?;
        let shard = self.room_shard(room)?;
        self.shards[shard].request(|reply| Command::InjectPanic { room, reply })
    }

    /// A room its shard no longer knows (it failed, see
    /// [`EngineEvent::RoomFailed`]) leaves the registry too.
    fn forget_if_gone<T>(&self, room: RoomId, r: Result<T, Error>) -> Result<T, Error> {
        if let Err(Error::UnknownRoom(r)) = &r
            && *r == room
        {
            self.registry().remove(&room);
        }
        r
    }

    fn remove(
        &self,
        room: RoomId,
        participant: ParticipantId,
        reason: LeaveReason,
    ) -> Result<(), Error> {
        self.check_open()?;
        let shard = self.room_shard(room)?;
        let r = self.shards[shard].request(|reply| Command::Remove {
            room,
            participant,
            reason,
            reply,
        });
        self.forget_if_gone(room, r)
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::EngineClosed)
        } else {
            Ok(())
        }
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<RoomId, RoomEntry>> {
        // Nothing panics while holding the lock; if something did, the map
        // is still consistent (every update is a single insert/remove/store).
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shard with the fewest participants (then rooms), and its
    /// participants.
    fn least_loaded(&self, registry: &HashMap<RoomId, RoomEntry>) -> (usize, usize) {
        let mut load = vec![(0usize, 0usize); self.shards.len()];
        for e in registry.values() {
            load[e.shard].0 += e.participants();
            load[e.shard].1 += 1;
        }
        let best = (0..self.shards.len())
            .min_by_key(|&i| (load[i], i))
            .unwrap_or(0);
        (best, load[best].0)
    }

    /// Participants on one shard, from the registry's counters.
    fn shard_load(&self, registry: &HashMap<RoomId, RoomEntry>, shard: usize) -> usize {
        registry
            .values()
            .filter(|e| e.shard == shard)
            .map(RoomEntry::participants)
            .sum()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }

    #[test]
    fn unspecified_bind_needs_public_ip() {
        let err = Engine::builder()
            .shards(1)
            .bind("0.0.0.0".parse().unwrap())
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }

    #[test]
    fn zero_shards_is_invalid() {
        let err = Engine::builder().shards(0).build().unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }
}
