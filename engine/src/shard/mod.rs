//! Shards: the thin IO driver around [`ShardCore`].
//!
//! A shard is one OS thread (`piazza-shard-N`) that owns one UDP socket and
//! one [`ShardCore`]; rooms are pinned to a shard for life. The thread's
//! loop:
//!
//! 1. Wait in `epoll_wait` on the socket and the command doorbell (an
//!    eventfd), for at most the core's earliest deadline
//!    ([`ShardCore::poll_timeout`]); with no deadline it sleeps until woken.
//! 2. Doorbell: run every queued [`Command`].
//! 3. Socket readable: `recvmmsg` up to 64 datagrams, hand each to
//!    [`ShardCore::handle_datagram`] with one `now` per batch, then
//!    [`ShardCore::flush`]; repeat while full batches arrive, up to
//!    [`MAX_BATCHES_PER_WAKEUP`] so timers and commands are not starved.
//! 4. Deadline passed: [`ShardCore::handle_timeout`].
//! 5. After every step: drain [`ShardCore::poll_transmit`] into `sendmmsg`
//!    batches and [`ShardCore::poll_event`] into the engine's bounded events
//!    channel (a full channel drops the event and counts it).
//!
//! Containment is two-level. The core runs each room's work under
//! `catch_unwind` and fails just that room ([`EngineEvent::RoomFailed`],
//! [`CoreStats::rooms_failed`]); the shard additionally runs every core call
//! under `catch_unwind`, so a panic outside any room's work (a bug in the
//! core's own bookkeeping) is logged and counted in [`ShardStats::panics`]
//! and the shard keeps serving.
//!
//! Shutdown ([`Command::Shutdown`]): every room is closed with
//! [`LeaveReason::Shutdown`] (a `closing` control message, RTCP BYE, DTLS
//! close_notify per participant), the resulting datagrams are sent, and the
//! thread ends; [`ShardHandle::join_within`] bounds the wait for it.

pub(crate) mod poll;
mod socket;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};

use crate::config::RoomConfig;
use crate::core::{CoreStats, Footprint, ShardCore, SubscriberStats};
use crate::error::Error;
use crate::event::{EngineEvent, LeaveReason};
use crate::ids::{ParticipantId, RoomId};
use crate::join::Prepared;

use poll::{Doorbell, Poller, thread_cpu_time};
pub use socket::SocketStats;
use socket::{RecvBatch, SendBatch, UdpSocket};

/// Full receive batches handled per wakeup before timers and commands get
/// their turn (64 x 16 = 1024 datagrams).
const MAX_BATCHES_PER_WAKEUP: usize = 16;

/// How often, at most, the shard republishes its stats snapshot while busy.
/// Commands republish at once.
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);

/// The answer to a command: a one-shot channel.
pub(crate) type Reply<T> = Sender<Result<T, Error>>;

/// Control-plane requests from the engine to a shard thread.
pub(crate) enum Command {
    /// Open a room. `participants` is the engine registry's counter, which
    /// the shard keeps equal to the room's size.
    CreateRoom {
        room: RoomId,
        config: Box<RoomConfig>,
        participants: Arc<AtomicUsize>,
        reply: Reply<()>,
    },
    /// Admit a participant prepared off-shard.
    Adopt(Box<Prepared>, Reply<()>),
    /// Remove a participant (leave or kick).
    Remove {
        room: RoomId,
        participant: ParticipantId,
        reason: LeaveReason,
        reply: Reply<()>,
    },
    /// Lock or unlock a room.
    Lock {
        room: RoomId,
        locked: bool,
        reply: Reply<()>,
    },
    /// Close a room, removing everyone.
    CloseRoom { room: RoomId, reply: Reply<()> },
    /// Fresh counters.
    Stats(Reply<ShardStats>),
    /// One subscriber's bandwidth and layer state.
    SubscriberStats {
        room: RoomId,
        participant: ParticipantId,
        reply: Reply<SubscriberStats>,
    },
    /// Close every room and stop the thread.
    Shutdown,
    /// Fault injection: the room panics on its next datagram or timer.
    #[cfg(feature = "fault-injection")]
    InjectPanic { room: RoomId, reply: Reply<()> },
}

/// Counters and gauges of one shard.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardStats {
    /// The shard's index (its thread is `piazza-shard-{index}`).
    pub index: usize,
    /// The address the shard's socket is bound to.
    pub local_addr: SocketAddr,
    /// Rooms on this shard.
    pub rooms: usize,
    /// Participants on this shard.
    pub participants: usize,
    /// CPU time the shard thread has used (user + system).
    pub cpu_time: Duration,
    /// The core's counters: datagrams, RTP forwarded, drops.
    pub core: CoreStats,
    /// The socket layer's counters: batches, send errors.
    pub socket: SocketStats,
    /// Events dropped because the engine's events channel was full.
    pub events_dropped: u64,
    /// Panics caught in core work outside any room's processing (each one
    /// is a bug; see the logs). Panics inside a room fail that room and
    /// are counted in [`CoreStats::rooms_failed`].
    pub panics: u64,
    /// What the shard's core holds: participants, routes, slots,
    /// demultiplexing entries (compare before and after leaves to see
    /// resources come back).
    pub footprint: Footprint,
}

impl ShardStats {
    fn new(index: usize, local_addr: SocketAddr) -> Self {
        ShardStats {
            index,
            local_addr,
            rooms: 0,
            participants: 0,
            cpu_time: Duration::ZERO,
            core: CoreStats::default(),
            socket: SocketStats::default(),
            events_dropped: 0,
            panics: 0,
            footprint: Footprint::default(),
        }
    }
}

/// What a shard needs to start.
pub(crate) struct ShardConfig {
    pub index: usize,
    pub bind: IpAddr,
    pub port_range: RangeInclusive<u16>,
    /// The IP put in ICE host candidates (and used as the core's local
    /// address, which str0m matches against the candidate).
    pub advertise_ip: IpAddr,
    pub command_capacity: usize,
    /// Most participants on the shard (admission control).
    pub admission_budget: Option<usize>,
    /// Socket protection limits of the core.
    pub ingress: crate::config::IngressConfig,
}

/// The engine's side of a shard: its command queue, doorbell, stats
/// snapshot and thread.
pub(crate) struct ShardHandle {
    pub index: usize,
    /// The bound socket address.
    pub local_addr: SocketAddr,
    /// The address clients are told to reach (ICE host candidate).
    pub advertised_addr: SocketAddr,
    commands: Sender<Command>,
    doorbell: Arc<Doorbell>,
    snapshot: Arc<Mutex<ShardStats>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Disconnected when the thread ends (its sender is dropped then).
    done: Receiver<()>,
    /// Joins the engine refused for this shard's budget before they reached
    /// it (added to the shard's own count in snapshots).
    refused_early: AtomicU64,
}

impl ShardHandle {
    /// Bind the socket and start the thread. Socket errors surface here, on
    /// the caller's thread.
    pub fn spawn(config: ShardConfig, events: Sender<EngineEvent>) -> Result<ShardHandle, Error> {
        let index = config.index;
        let socket = UdpSocket::bind(config.bind, config.port_range.clone())?;
        let local_addr = socket.local_addr();
        let advertised_addr = SocketAddr::new(config.advertise_ip, local_addr.port());
        let doorbell = Arc::new(Doorbell::new()?);
        let poller = Poller::new(socket.as_raw_fd(), doorbell.as_raw_fd())?;
        let (tx, rx) = bounded(config.command_capacity.max(1));
        let snapshot = Arc::new(Mutex::new(ShardStats::new(index, local_addr)));
        let mut core = ShardCore::with_ingress(advertised_addr, &config.ingress);
        core.set_admission_budget(config.admission_budget);
        let (done_tx, done) = bounded::<()>(1);
        let shard = Shard {
            index,
            socket,
            poller,
            doorbell: doorbell.clone(),
            core,
            commands: rx,
            events,
            counters: HashMap::new(),
            snapshot: snapshot.clone(),
            last_publish: None,
            dirty: false,
            events_dropped: 0,
            panics: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("piazza-shard-{index}"))
            .spawn(move || {
                // Dropped when the thread ends, however it ends.
                let _done = done_tx;
                shard.run();
            })?;
        Ok(ShardHandle {
            index,
            local_addr,
            advertised_addr,
            commands: tx,
            doorbell,
            snapshot,
            thread: Mutex::new(Some(thread)),
            done,
            refused_early: AtomicU64::new(0),
        })
    }

    /// Queue a command and wake the shard. Blocks while the queue is full
    /// (the shard drains it on every wakeup).
    pub fn send(&self, cmd: Command) -> Result<(), Error> {
        self.commands.send(cmd).map_err(|_| Error::EngineClosed)?;
        self.doorbell.ring();
        Ok(())
    }

    /// Send a command built around a reply channel and wait for the answer.
    /// A shard that stopped drops the queued reply senders: the wait then
    /// ends with [`Error::EngineClosed`].
    pub fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = bounded(1);
        self.send(make(tx))?;
        rx.recv().map_err(|_| Error::EngineClosed)?
    }

    /// The last published stats (at most ~100 ms old while the shard is busy).
    pub fn snapshot(&self) -> ShardStats {
        let mut s = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        s.core.joins_refused_overload += self.refused_early.load(Ordering::Relaxed);
        s
    }

    /// Fresh counters from the shard thread (one round trip).
    pub fn fresh_stats(&self) -> Result<ShardStats, Error> {
        let mut s = self.request(Command::Stats)?;
        s.core.joins_refused_overload += self.refused_early.load(Ordering::Relaxed);
        Ok(s)
    }

    /// Count a join refused for this shard's budget before it was sent here.
    pub fn count_refused(&self) {
        self.refused_early.fetch_add(1, Ordering::Relaxed);
    }

    /// Ask the shard to stop (it closes its rooms first), without waiting.
    pub fn begin_shutdown(&self) {
        // A stopped shard has dropped its receiver: nothing to do then.
        if self.commands.send(Command::Shutdown).is_ok() {
            self.doorbell.ring();
        }
    }

    /// Wait until `deadline` for the thread to end, then reap it. False when
    /// it is still running at the deadline: it is left detached (it ends on
    /// its own once its current work is done, and holds nothing the engine
    /// needs).
    pub fn join_within(&self, deadline: Instant) -> bool {
        match self.done.recv_deadline(deadline) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    shard = self.index,
                    "shard thread did not stop in time; leaving it detached"
                );
                false
            }
            // Nothing is ever sent: disconnected means the thread ended.
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                self.join();
                true
            }
        }
    }

    /// Wait for the thread to end. Idempotent.
    pub fn join(&self) {
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!(shard = self.index, "shard thread panicked");
        }
    }
}

/// The shard thread's state.
struct Shard {
    index: usize,
    socket: UdpSocket,
    poller: Poller,
    /// Rung by the engine after queueing a command; cleared here.
    doorbell: Arc<Doorbell>,
    core: ShardCore,
    commands: Receiver<Command>,
    events: Sender<EngineEvent>,
    /// The engine registry's participant counter of each room here.
    counters: HashMap<RoomId, Arc<AtomicUsize>>,
    snapshot: Arc<Mutex<ShardStats>>,
    last_publish: Option<Instant>,
    /// Something changed since the last published snapshot.
    dirty: bool,
    events_dropped: u64,
    panics: u64,
}

impl Shard {
    fn run(mut self) {
        tracing::debug!(shard = self.index, addr = %self.socket.local_addr(), "shard started");
        let mut recv = RecvBatch::new();
        let mut send = SendBatch::new();
        self.publish(Instant::now());
        loop {
            let now = Instant::now();
            let deadline = self.next_wakeup(now);
            let ready = match self.poller.wait(deadline, now) {
                Ok(r) => r,
                Err(e) => {
                    // Not expected (EBADF/EINVAL would be bugs); do not spin.
                    tracing::error!(shard = self.index, "epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };

            if ready.doorbell {
                self.doorbell.clear();
                if self.run_commands(&mut send) {
                    break;
                }
            }

            if ready.socket {
                for _ in 0..MAX_BATCHES_PER_WAKEUP {
                    let n = self.socket.recv_batch(&mut recv);
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    let core = &mut self.core;
                    let batch = &recv;
                    guarded(&mut self.panics, "datagrams", || {
                        for i in 0..n {
                            // Truncated datagrams were counted by the socket.
                            if let Some((source, data)) = batch.get(i) {
                                core.handle_datagram(now, source, data);
                            }
                        }
                        core.flush(now);
                    });
                    self.drain(&mut send);
                    if n < socket::BATCH {
                        break;
                    }
                }
            }

            let now = Instant::now();
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                let core = &mut self.core;
                guarded(&mut self.panics, "timeout", || core.handle_timeout(now));
                self.drain(&mut send);
            }

            if self
                .last_publish
                .is_none_or(|t| now.duration_since(t) >= SNAPSHOT_INTERVAL)
            {
                self.publish(now);
            } else {
                self.dirty = true;
            }
        }
        self.publish(Instant::now());
        tracing::debug!(shard = self.index, "shard stopped");
    }

    /// The core's deadline, or sooner when a snapshot is owed.
    fn next_wakeup(&mut self, now: Instant) -> Option<Instant> {
        let core = self.core.poll_timeout();
        let snapshot = if self.dirty {
            Some(self.last_publish.map_or(now, |t| t + SNAPSHOT_INTERVAL))
        } else {
            None
        };
        match (core, snapshot) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Run every queued command. Returns true when the shard must stop.
    fn run_commands(&mut self, send: &mut SendBatch) -> bool {
        let mut ran = false;
        let stop = loop {
            let cmd = match self.commands.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => break false,
                // The engine is gone without a Shutdown: stop all the same.
                Err(TryRecvError::Disconnected) => break true,
            };
            ran = true;
            if let Command::Shutdown = cmd {
                break true;
            }
            self.run_command(cmd, send);
            self.drain(send);
        };
        if stop {
            self.close_all(send);
        }
        if ran {
            // Control operations show in stats() at once.
            self.publish(Instant::now());
        }
        stop
    }

    /// Run one command. Its outputs are drained, and the stats snapshot
    /// republished, before the reply goes out: when a caller's `join` or
    /// `leave` returns, the registry's counters and `stats()` already show it.
    fn run_command(&mut self, cmd: Command, send: &mut SendBatch) {
        let now = Instant::now();
        let core = &mut self.core;
        let panics = &mut self.panics;
        let (reply, result) = match cmd {
            Command::CreateRoom {
                room,
                config,
                participants,
                reply,
            } => {
                let r = guarded(panics, "create room", || core.create_room(room, *config));
                self.counters.insert(room, participants);
                (reply, r.ok_or_else(|| internal("create room")))
            }
            Command::Stats(reply) => {
                let _ = reply.send(Ok(self.stats()));
                return;
            }
            Command::SubscriberStats {
                room,
                participant,
                reply,
            } => {
                let r = core
                    .subscriber_stats(room, participant)
                    .ok_or(Error::UnknownParticipant(participant));
                let _ = reply.send(r);
                return;
            }
            Command::Shutdown => return,
            #[cfg(feature = "fault-injection")]
            Command::InjectPanic { room, reply } => (reply, core.inject_panic(room)),
            Command::Adopt(prepared, reply) => {
                let r = guarded(panics, "adopt", || core.adopt(*prepared, now));
                (reply, r.unwrap_or_else(|| Err(internal("adopt"))))
            }
            Command::Remove {
                room,
                participant,
                reason,
                reply,
            } => {
                let r = guarded(panics, "remove", || {
                    core.remove(room, participant, reason, now)
                });
                (reply, r.unwrap_or_else(|| Err(internal("remove"))))
            }
            Command::Lock {
                room,
                locked,
                reply,
            } => {
                let r = guarded(panics, "lock", || core.set_locked(room, locked));
                (reply, r.unwrap_or_else(|| Err(internal("lock"))))
            }
            Command::CloseRoom { room, reply } => {
                let r = guarded(panics, "close room", || core.close_room(room, now));
                // Zero the counter even if the RoomClosed event is dropped.
                if let Some(c) = self.counters.remove(&room) {
                    c.store(0, Ordering::Relaxed);
                }
                (reply, r.unwrap_or_else(|| Err(internal("close room"))))
            }
        };
        self.drain(send);
        self.publish(Instant::now());
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send(result);
    }

    /// Close every room (participants get a `closing` control message and
    /// a DTLS close_notify) and send what that produced, before stopping.
    fn close_all(&mut self, send: &mut SendBatch) {
        let now = Instant::now();
        let core = &mut self.core;
        let _ = guarded(&mut self.panics, "shutdown", || core.shutdown(now));
        self.drain(send);
        for c in self.counters.values() {
            c.store(0, Ordering::Relaxed);
        }
        self.counters.clear();
    }

    /// Send every pending transmit and forward every pending event.
    fn drain(&mut self, send: &mut SendBatch) {
        while let Some(t) = self.core.poll_transmit() {
            if send.push(t) {
                self.socket.send_batch(send);
            }
        }
        self.socket.send_batch(send);

        while let Some(event) = self.core.poll_event() {
            match &event {
                EngineEvent::ParticipantJoined { room, .. }
                | EngineEvent::ParticipantLeft { room, .. } => {
                    if let Some(c) = self.counters.get(room) {
                        c.store(self.core.room_len(*room).unwrap_or(0), Ordering::Relaxed);
                    }
                }
                EngineEvent::RoomClosed { room } | EngineEvent::RoomFailed { room, .. } => {
                    if let Some(c) = self.counters.remove(room) {
                        c.store(0, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.events_dropped += 1;
                }
            }
        }
    }

    fn stats(&self) -> ShardStats {
        ShardStats {
            index: self.index,
            local_addr: self.socket.local_addr(),
            rooms: self.core.room_ids().count(),
            participants: self.core.participant_count(),
            cpu_time: thread_cpu_time(),
            core: self.core.stats(),
            socket: self.socket.stats,
            events_dropped: self.events_dropped,
            panics: self.panics,
            footprint: self.core.footprint(),
        }
    }

    fn publish(&mut self, now: Instant) {
        let stats = self.stats();
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = stats;
        self.last_publish = Some(now);
        self.dirty = false;
    }
}

/// Run core work, turning a panic into a log line and a count.
fn guarded<R>(panics: &mut u64, what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            *panics += 1;
            let msg = crate::core::panic_message(payload.as_ref());
            tracing::error!("panic in shard core ({what}), shard continues: {msg}");
            None
        }
    }
}

fn internal(what: &str) -> Error {
    Error::Internal(format!("the shard panicked during {what}"))
}
