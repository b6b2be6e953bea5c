//! The in-process simulator: N simulated participants ([`SimClient`], real
//! str0m peers) in one or more rooms on one or more shards, through a seeded
//! network model ([`Link`]), in virtual time, with no sockets.
//!
//! Each simulated shard is the shard thread's own loop step
//! (`shard::driver::Driver::step`) around a [`ShardCore`], with the
//! simulated network as its IO: joins, leaves and room creation are the
//! engine's commands, run by the same code the shard thread runs. A
//! seed fixes every random choice of Piazza (ICE credentials, ingress keys,
//! the links) and of the clients; see [`Simulator::trace_hash`] for what a
//! seeded run reproduces.
//!
//! Time only moves when the simulator advances it to the next packet arrival
//! or timer, so ten simulated seconds of a 50-person room take as long as the
//! CPU work they contain. The only real clock read is the measurement of how
//! much CPU the core itself used ([`Simulator::core_busy`], the thread's CPU
//! clock around every core call, so other processes on a busy machine do not
//! inflate it).

pub mod client;
mod counting;
pub mod e2ee;
pub mod flood;
pub mod media;
pub mod net;
mod prepare;
mod tcp;
mod udp;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::Transmit;

pub use client::{ClientConfig, ClientStats, LayerSpec, SimClient, SlotStats, default_layers};
pub use counting::CountingAlloc;
pub use flood::{FloodKind, FloodMix};
pub use net::{Link, LinkConfig, LinkStats};
pub use prepare::JoinPreparer;
pub use tcp::TcpLink;

use crate::config::{IngressConfig, RoomConfig};
use crate::core::ShardCore;
use crate::error::Error;
use crate::event::{EngineEvent, LeaveReason};
use crate::ids::{ParticipantId, RoomId};
use crate::join::{self, JoinContext};
use crate::rng;
use crate::shard::Command;
pub use crate::shard::driver::SEND_AT;
use crate::shard::driver::{Driver, Io, RoomShared};
use crate::shard::poll::thread_cpu_time;

/// A simulated run.
pub struct SimConfig {
    /// Participants that join.
    pub participants: usize,
    /// Time between two joins (zero: everyone at once).
    pub join_spacing: Duration,
    /// Client behaviour per participant index.
    pub client: Box<dyn Fn(usize) -> ClientConfig>,
    /// Client -> engine link of every participant.
    pub uplink: LinkConfig,
    /// Engine -> client link of every participant.
    pub downlink: LinkConfig,
    /// The configuration of every room.
    pub room: RoomConfig,
    /// Rooms; participant `i` joins room `i % rooms`. Default 1.
    pub rooms: usize,
    /// Shards; room `r` lives on shard `r % shards`. Default 1.
    pub shards: usize,
    /// Seed of every random choice (links, start values, ICE credentials,
    /// ingress keys).
    pub seed: u64,
    /// The shards' [`SEND_AT`]: datagrams a flush makes before they are
    /// sent (`usize::MAX`: each flush sends at its end).
    pub send_at: usize,
}

impl SimConfig {
    /// `participants` default clients (audio + 3-layer camera, 9 video and 3
    /// audio slots), everyone joining at once over 10 ms lossless links.
    pub fn new(participants: usize) -> Self {
        SimConfig {
            participants,
            join_spacing: Duration::ZERO,
            client: Box::new(|i| ClientConfig::new(i as u32)),
            uplink: LinkConfig::default(),
            downlink: LinkConfig::default(),
            room: RoomConfig::default(),
            rooms: 1,
            shards: 1,
            seed: 1,
            send_at: SEND_AT,
        }
    }
}

/// [`Simulator::send_rounds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRounds {
    /// The most datagrams one shard loop step sent.
    pub largest_step: usize,
    /// Socket flushes that sent something.
    pub flushes: u64,
    /// The most datagrams one socket flush sent.
    pub largest_flush: usize,
}

#[derive(Debug)]
enum Dest {
    /// A shard, by index.
    Server(usize),
    Client(usize),
}

/// The simulated network as a shard's IO: what the shard sends waits here
/// for the simulator to put it on the links, and so do its events.
#[derive(Default)]
struct SimIo {
    transmits: Vec<Transmit>,
    events: Vec<EngineEvent>,
    /// Datagrams handed over since the last [`Io::flush`].
    unflushed: usize,
    /// [`Io::flush`] calls that sent something (a shard thread's
    /// `sendmmsg` rounds).
    flushes: u64,
    /// The most datagrams one of them sent.
    largest_flush: usize,
}

impl Io for SimIo {
    fn send(&mut self, t: Transmit) {
        self.transmits.push(t);
        self.unflushed += 1;
    }

    fn flush(&mut self) {
        if self.unflushed > 0 {
            self.flushes += 1;
            self.largest_flush = self.largest_flush.max(self.unflushed);
            self.unflushed = 0;
        }
    }

    fn emit(&mut self, e: EngineEvent) -> bool {
        self.events.push(e);
        true
    }
}

/// One simulated shard: the shard thread's loop step and its address.
struct SimShard {
    driver: Driver,
    io: SimIo,
    addr: SocketAddr,
    /// Received datagrams not yet handed to the driver (one batch per step).
    inbox: Vec<(SocketAddr, Vec<u8>)>,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    order: u64,
    from: SocketAddr,
    to: Dest,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

/// One simulated participant slot of the run.
pub struct SimParticipant {
    /// The peer.
    pub client: SimClient,
    /// Its engine id once joined.
    pub id: Option<ParticipantId>,
    /// The room it joins.
    pub room: RoomId,
    /// The shard of that room.
    pub shard: usize,
    /// When its join was requested.
    pub joined_at: Instant,
    /// Still in the room.
    pub present: bool,
    /// Uplink state.
    pub uplink: Link,
    /// Downlink state.
    pub downlink: Link,
}

/// The simulator.
pub struct Simulator {
    config: SimConfig,
    ctx: JoinContext,
    shards: Vec<SimShard>,
    /// Rooms in creation order, with their shard.
    rooms: Vec<(RoomId, usize)>,
    start: Instant,
    now: Instant,
    next_pid: u32,
    next_join: usize,
    participants: Vec<SimParticipant>,
    by_addr: HashMap<SocketAddr, usize>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    events: Vec<(Instant, EngineEvent)>,
    join_failures: Vec<Error>,
    core_busy: Duration,
    /// The most datagrams one shard loop step sent.
    largest_step: usize,
    stall: u32,
    /// Participants whose RTP media is held back for the caller (benchmarks).
    held: Vec<usize>,
    held_media: Vec<(SocketAddr, Vec<u8>)>,
    /// Participants whose control channel never comes up.
    no_control: Vec<usize>,
    /// Participants that vanished: nothing from or to them moves.
    vanished: Vec<usize>,
    /// Hash over every datagram delivered and every event, in order.
    trace: std::hash::DefaultHasher,
}

impl Simulator {
    /// Build the run: its shards and rooms; nobody has joined yet.
    ///
    /// With the environment variable `PIAZZA_SIM_E2EE` set (to anything),
    /// every run is end-to-end encrypted: the rooms have
    /// [`RoomConfig::e2ee`](crate::RoomConfig::e2ee) and every client
    /// [`ClientConfig::e2ee`](client::ClientConfig::e2ee). That runs the
    /// behaviour tests (simulcast switches, speaker detection, allocation)
    /// unchanged with encrypting clients (`docs/e2ee.md`).
    pub fn new(mut config: SimConfig) -> Result<Self, Error> {
        if std::env::var_os("PIAZZA_SIM_E2EE").is_some() {
            config.room.e2ee = true;
            let make = std::mem::replace(
                &mut config.client,
                Box::new(|i| ClientConfig::new(i as u32)),
            );
            config.client = Box::new(move |i| ClientConfig {
                e2ee: true,
                ..make(i)
            });
        }
        let ctx = JoinContext::new(rng::derive(config.seed, rng::stream::JOIN))?;
        // str0m draws its non-cryptographic randomness (SSRCs, ICE
        // tie-breakers, SCTP tags, msids) from fastrand's thread-local
        // generator: seeding it on this thread, which runs every peer and
        // every shard of the simulation, makes those draws replay too.
        fastrand::seed(rng::derive(config.seed, rng::stream::STR0M));
        // Virtual time starts at one instant per process (taken when the
        // first simulator is built) and only moves forward from there.
        // str0m maps instants to NTP time (RTCP sender reports, round-trip
        // times) against a process-wide origin; only differences of
        // instants reach behaviour, and a run replays in another process
        // (sim_shards.rs, `a_seeded_run_replays_in_another_process`).
        static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
        let start = *EPOCH;
        /// What the simulated wall clock reads at the simulation's start
        /// (2026-01-01T00:00:00Z), for chat message times.
        const SIM_WALL_CLOCK_UNIX_MS: u64 = 1_767_225_600_000;
        let shards = (0..config.shards.max(1))
            .map(|k| {
                let addr =
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)), 4000 + k as u16);
                let seed = rng::derive(config.seed, rng::stream::SHARD + k as u64);
                let mut core = ShardCore::with_seed(addr, &IngressConfig::default(), seed);
                // Virtual wall clock: chat times are the same in every run.
                core.set_wall_clock(start, SIM_WALL_CLOCK_UNIX_MS);
                SimShard {
                    driver: Driver::new(k, addr, None, core, config.send_at),
                    io: SimIo::default(),
                    addr,
                    inbox: Vec::new(),
                }
            })
            .collect();
        let mut sim = Simulator {
            config,
            ctx,
            shards,
            rooms: Vec::new(),
            start,
            now: start,
            next_pid: 1,
            next_join: 0,
            participants: Vec::new(),
            by_addr: HashMap::new(),
            in_flight: BinaryHeap::new(),
            order: 0,
            events: Vec::new(),
            join_failures: Vec::new(),
            core_busy: Duration::ZERO,
            largest_step: 0,
            stall: 0,
            held: Vec::new(),
            held_media: Vec::new(),
            no_control: Vec::new(),
            vanished: Vec::new(),
            trace: std::hash::DefaultHasher::new(),
        };
        for r in 0..sim.config.rooms.max(1) {
            let id = RoomId(r as u32 + 1);
            let shard = r % sim.shards.len();
            let (reply, answer) = crossbeam_channel::bounded(1);
            sim.command(
                shard,
                Command::CreateRoom {
                    room: id,
                    config: Box::new(sim.config.room.clone()),
                    shared: Arc::new(RoomShared::default()),
                    reply,
                },
            );
            answer.try_recv().unwrap_or(Err(Error::EngineClosed))?;
            sim.rooms.push((id, shard));
        }
        Ok(sim)
    }

    /// Run one command on a shard now, through the shard's loop step, and
    /// put what it sent on the links.
    fn command(&mut self, shard: usize, cmd: Command) {
        let now = self.now;
        let t = thread_cpu_time();
        let sh = &mut self.shards[shard];
        sh.driver
            .step(now, Some(cmd), std::iter::empty(), &mut sh.io);
        self.core_busy += thread_cpu_time().saturating_sub(t);
        self.pump();
    }

    /// Ask a shard and wait for the answer (it comes within the step).
    fn request<T>(
        &mut self,
        shard: usize,
        make: impl FnOnce(crate::shard::Reply<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.command(shard, make(reply));
        answer.try_recv().unwrap_or(Err(Error::EngineClosed))
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time at the start of the run.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Simulated time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The first room (the one every participant joins with one room).
    pub fn room(&self) -> RoomId {
        self.rooms[0].0
    }

    /// Every room, in creation order, with its shard.
    pub fn rooms(&self) -> &[(RoomId, usize)] {
        &self.rooms
    }

    /// The first shard's core (the only one with one shard).
    pub fn core(&self) -> &ShardCore {
        self.shards[0].driver.core()
    }

    /// Shard `k`'s core.
    pub fn core_of(&self, k: usize) -> &ShardCore {
        self.shards[k].driver.core()
    }

    /// Mutable access to the first shard's core, for test hooks (control
    /// operations go through [`Simulator::leave`], [`Simulator::close_room`]
    /// and the joins, as the engine's commands).
    pub fn core_mut(&mut self) -> &mut ShardCore {
        self.shards[0].driver.core_mut()
    }

    /// A hash over what a seeded run reproduces: every datagram delivered
    /// (its virtual arrival time, source and destination), every engine
    /// event (with its time), and every RTP packet each client received
    /// after decryption ([`SimClient::rx_trace`]: slot, sequence number,
    /// timestamp, payload, arrival time). Two runs with the same seed and
    /// inputs have the same hash.
    ///
    /// Datagram bytes are left out: the DTLS handshake's randomness (its
    /// randoms, ECDHE keys and ECDSA signatures) comes from the crypto
    /// library's own generator, which cannot be seeded, so SRTP keys and
    /// every ciphertext differ between runs. Everything decided from what
    /// the peers decrypt is covered.
    pub fn trace_hash(&self) -> u64 {
        let mut h = self.trace.clone();
        for p in &self.participants {
            h.write_u64(p.client.rx_trace());
        }
        h.finish()
    }

    /// Participants (joined or not yet).
    pub fn participants(&self) -> &[SimParticipant] {
        &self.participants
    }

    /// One participant.
    pub fn participant_mut(&mut self, i: usize) -> &mut SimParticipant {
        &mut self.participants[i]
    }

    /// Engine events seen so far, with their virtual time.
    pub fn events(&self) -> &[(Instant, EngineEvent)] {
        &self.events
    }

    /// Joins the engine refused.
    pub fn join_failures(&self) -> &[Error] {
        &self.join_failures
    }

    /// CPU time (this thread's CPU clock) spent inside the core: the
    /// engine's cost of the run, including the join preparation it did.
    pub fn core_busy(&self) -> Duration {
        self.core_busy
    }

    /// Benchmark hook: hold back the RTP media datagrams participant `i`
    /// sends instead of putting them on its uplink (its STUN, DTLS and RTCP
    /// still reach the core, so the session stays alive). The caller takes
    /// them with [`Simulator::take_held_media`] and hands them to the core
    /// itself, timing only the core.
    pub fn hold_media(&mut self, i: usize, hold: bool) {
        self.held.retain(|&h| h != i);
        if hold {
            self.held.push(i);
        }
    }

    /// Benchmark hook: participant `i` (joined or not yet) never gets a
    /// control channel: the engine's DTLS application data (SCTP) to it is
    /// dropped, as for a client without data channels. It still publishes
    /// and receives media, and nothing tells it which layers to stop
    /// sending, so a publisher nobody watches keeps publishing.
    pub fn cut_control_channel(&mut self, i: usize) {
        if !self.no_control.contains(&i) {
            self.no_control.push(i);
        }
    }

    /// Participant `i` vanishes without leaving, as when its machine
    /// sleeps or its network goes: from now on nothing it sends reaches the
    /// engine (datagrams already on the wire still arrive), nothing the
    /// engine sends reaches it, and its peer is no longer driven. The
    /// engine has to notice the silence by itself.
    pub fn vanish(&mut self, i: usize) {
        if !self.vanished.contains(&i) {
            self.vanished.push(i);
        }
        self.participants[i].present = false;
    }

    /// The media datagrams held back so far, oldest first: (source, bytes).
    pub fn take_held_media(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.held_media)
    }

    /// The address the participants of the first shard send to.
    pub fn server_addr(&self) -> SocketAddr {
        self.shards[0].addr
    }

    /// Hand the first shard one datagram from `source` now, as if it had
    /// just arrived (from anywhere: a participant's address or one nobody
    /// uses), and put what that produced on the links. Fuzzing and attack
    /// tests use it.
    pub fn deliver(&mut self, source: SocketAddr, bytes: &[u8]) {
        self.shards[0].inbox.push((source, bytes.to_vec()));
        self.settle();
    }

    /// Run every shard's loop step now (waiting datagrams, flushes after
    /// calls on [`Simulator::core_mut`], due timers) and put everything the
    /// shards and the clients have to send on the links, without moving
    /// time.
    pub fn settle(&mut self) {
        let now = self.now;
        for k in 0..self.shards.len() {
            self.step_shard(k, now);
        }
        self.pump();
    }

    /// One loop step of shard `k` at `now`, with the datagrams that arrived
    /// for it.
    fn step_shard(&mut self, k: usize, now: Instant) {
        let sh = &mut self.shards[k];
        let inbox = std::mem::take(&mut sh.inbox);
        let t = thread_cpu_time();
        let batch = inbox.iter().map(|(from, data)| (*from, data.as_slice()));
        let before = sh.io.transmits.len();
        sh.driver.step(now, None, batch, &mut sh.io);
        self.core_busy += thread_cpu_time().saturating_sub(t);
        self.largest_step = self.largest_step.max(sh.io.transmits.len() - before);
    }

    /// How the shards' datagrams left: the most one loop step sent, the
    /// number of socket flushes (a shard thread's rounds of `sendmmsg`)
    /// and the most datagrams one of them sent, which the first datagram
    /// of that flush waited for.
    pub fn send_rounds(&self) -> SendRounds {
        SendRounds {
            largest_step: self.largest_step,
            flushes: self.shards.iter().map(|s| s.io.flushes).sum(),
            largest_flush: self
                .shards
                .iter()
                .map(|s| s.io.largest_flush)
                .max()
                .unwrap_or(0),
        }
    }

    /// Close room `room` (the engine's `close_room`).
    pub fn close_room(&mut self, room: RoomId) -> Result<(), Error> {
        let (_, shard) = *self
            .rooms
            .iter()
            .find(|(r, _)| *r == room)
            .ok_or(Error::UnknownRoom(room))?;
        let r = self.request(shard, |reply| Command::CloseRoom {
            room,
            moved: false,
            reply,
        });
        for p in &mut self.participants {
            if p.room == room {
                p.present = false;
            }
        }
        r
    }

    /// Run until `d` of virtual time has passed since the start.
    pub fn run_until(&mut self, t: Duration) {
        let until = self.start + t;
        while self.step(until) {}
    }

    /// Run for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
    }

    /// The participant leaves (the embedder's leave call).
    pub fn leave(&mut self, i: usize) -> Result<(), Error> {
        self.remove(i, LeaveReason::Left)
    }

    /// The owner removes the participant.
    pub fn kick(&mut self, i: usize) -> Result<(), Error> {
        self.remove(i, LeaveReason::Kicked)
    }

    fn remove(&mut self, i: usize, reason: LeaveReason) -> Result<(), Error> {
        let p = &self.participants[i];
        let participant = p.id.ok_or(Error::UnknownParticipant(ParticipantId(0)))?;
        let (room, shard) = (p.room, p.shard);
        let r = self.request(shard, |reply| Command::Remove {
            room,
            participant,
            reason,
            reply,
        });
        self.participants[i].present = false;
        r
    }

    fn join_due(&self) -> Option<Instant> {
        (self.next_join < self.config.participants)
            .then(|| self.start + self.config.join_spacing * self.next_join as u32)
    }

    fn join_next(&mut self) {
        let i = self.next_join;
        self.next_join += 1;
        let now = self.now;
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)),
            5000,
        );
        let cfg = (self.config.client)(i);
        let client = SimClient::new(cfg, addr, self.start, now);
        let seed = self
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(i as u64 * 2);
        let (room, shard) = self.rooms[i % self.rooms.len()];
        let mut sp = SimParticipant {
            client,
            id: None,
            room,
            shard,
            joined_at: now,
            present: false,
            uplink: Link::new(self.config.uplink.clone(), seed),
            downlink: Link::new(self.config.downlink.clone(), seed + 1),
        };
        let pid = ParticipantId(self.next_pid);
        self.next_pid += 1;
        // As the engine joins: prepare off-shard, then the shard adopts.
        let t = thread_cpu_time();
        let prepared = join::prepare(
            &self.ctx,
            room,
            &self.config.room,
            pid,
            format!("sim-{i}"),
            sp.client.offer(),
            self.shards[shard].addr,
            None,
            now,
        );
        self.core_busy += thread_cpu_time().saturating_sub(t);
        let adopted = prepared.and_then(|mut p| {
            let answer = std::mem::take(&mut p.answer);
            self.request(shard, |reply| Command::Adopt(Box::new(p), reply))
                .map(|_| answer)
        });
        match adopted {
            Ok(answer) => {
                if let Err(e) = sp.client.accept_answer(&answer) {
                    self.join_failures.push(Error::Negotiation(e));
                } else {
                    sp.id = Some(pid);
                    sp.present = true;
                    sp.client.handle_timeout(now);
                }
            }
            Err(e) => self.join_failures.push(e),
        }
        self.by_addr.insert(addr, self.participants.len());
        self.participants.push(sp);
    }

    /// Advance to the next event (not beyond `limit`); false when `limit` is reached.
    fn step(&mut self, limit: Instant) -> bool {
        let mut next = self.in_flight.peek().map(|Reverse(p)| p.at);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for sh in &mut self.shards {
            consider(sh.driver.poll_timeout());
        }
        consider(self.join_due());
        for (i, p) in self.participants.iter().enumerate() {
            if (p.present || p.client.is_alive()) && !self.vanished.contains(&i) {
                consider(Some(p.client.poll_timeout()));
            }
        }
        let Some(mut next) = next else {
            self.now = limit;
            return false;
        };
        if next <= self.now {
            // Something asked for "now" again; str0m can, while its pacer or
            // a channel has more to say. Let it, but never forever.
            self.stall += 1;
            if self.stall > 1000 {
                next = self.now + Duration::from_millis(1);
                self.stall = 0;
            }
        } else {
            self.stall = 0;
        }
        if next > limit {
            self.now = limit;
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;

        while self.in_flight.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = self.in_flight.pop() else {
                break;
            };
            self.trace_datagram(now, &p);
            match p.to {
                Dest::Server(k) => self.shards[k].inbox.push((p.from, p.data)),
                Dest::Client(i) if self.vanished.contains(&i) => {}
                Dest::Client(i) => self.participants[i]
                    .client
                    .handle_datagram(now, p.from, &p.data),
            }
        }
        for k in 0..self.shards.len() {
            let due = self.shards[k]
                .driver
                .poll_timeout()
                .is_some_and(|t| t <= now);
            if due || !self.shards[k].inbox.is_empty() {
                self.step_shard(k, now);
            }
        }
        for (i, p) in self.participants.iter_mut().enumerate() {
            if self.vanished.contains(&i) {
                continue;
            }
            if (p.present || p.client.is_alive()) && p.client.poll_timeout() <= now {
                p.client.handle_timeout(now);
            }
        }
        while self.join_due().is_some_and(|t| t <= now) {
            self.join_next();
        }
        self.pump();
        true
    }

    /// Fold one delivered datagram into the trace.
    fn trace_datagram(&mut self, now: Instant, p: &InFlight) {
        let h = &mut self.trace;
        h.write_u128(now.saturating_duration_since(self.start).as_nanos());
        std::hash::Hash::hash(&p.from, h);
        match p.to {
            Dest::Server(k) => h.write_usize(k),
            Dest::Client(i) => h.write_usize(1_000_000 + i),
        }
    }

    fn pump(&mut self) {
        let now = self.now;
        let mut out = Vec::new();
        for sh in &mut self.shards {
            for e in sh.io.events.drain(..) {
                self.trace
                    .write_u128(now.saturating_duration_since(self.start).as_nanos());
                self.trace.write(format!("{e:?}").as_bytes());
                self.events.push((now, e));
            }
            out.append(&mut sh.io.transmits);
        }
        for t in out {
            let Some(&i) = self.by_addr.get(&t.destination) else {
                continue;
            };
            if self.vanished.contains(&i) {
                continue;
            }
            // DTLS application data (RFC 6347 content type 23) is SCTP.
            if self.no_control.contains(&i) && t.contents.first() == Some(&23) {
                continue;
            }
            let p = &mut self.participants[i];
            if let Some(at) = p.downlink.send(now, net::charged_size(&t.contents)) {
                self.order += 1;
                self.in_flight.push(Reverse(InFlight {
                    at,
                    order: self.order,
                    from: t.source,
                    to: Dest::Client(i),
                    data: t.contents.into(),
                }));
            }
        }
        for (i, p) in self.participants.iter_mut().enumerate() {
            if self.vanished.contains(&i) {
                continue;
            }
            while let Some(t) = p.client.poll_transmit() {
                if self.held.contains(&i) && is_rtp_media(&t.contents) {
                    self.held_media.push((p.client.addr(), t.contents.into()));
                    continue;
                }
                if let Some(at) = p.uplink.send(now, net::charged_size(&t.contents)) {
                    self.order += 1;
                    let to = self
                        .shards
                        .iter()
                        .position(|s| s.addr == t.destination)
                        .unwrap_or(p.shard);
                    self.in_flight.push(Reverse(InFlight {
                        at,
                        order: self.order,
                        from: p.client.addr(),
                        to: Dest::Server(to),
                        data: t.contents.into(),
                    }));
                }
            }
        }
    }
}

/// RTP, not RTCP: RFC 7983 first byte 128..=191, then RFC 5761 section 4
/// (RTCP packet types 192..=223 leave 64..=95 once the marker bit is
/// masked), the rule str0m demultiplexes by.
fn is_rtp_media(buf: &[u8]) -> bool {
    buf.len() >= 12 && (128..=191).contains(&buf[0]) && !(64..96).contains(&(buf[1] & 0x7f))
}
