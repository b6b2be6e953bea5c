//! Shards: the thin IO driver around [`ShardCore`].
//!
//! A shard is one OS thread (`piazza-shard-N`) that owns one UDP socket and
//! one [`Driver`] (its [`ShardCore`]); rooms are pinned to a shard for life.
//! The thread's loop:
//!
//! 1. Wait in `epoll_wait` on the socket and the command doorbell (an
//!    eventfd), for at most the core's earliest deadline
//!    ([`ShardCore::poll_timeout`]); with no deadline it sleeps until woken.
//! 2. Take up to 64 datagrams with `recvmmsg` and hand them, with the queued
//!    [`Command`]s when the doorbell rang, to [`Driver::step`]: commands,
//!    the batch, due timers, every output to the socket (`sendmmsg`
//!    batches) and the engine's bounded events channel. Repeat while full
//!    batches arrive, up to [`MAX_BATCHES_PER_WAKEUP`], so timers and
//!    commands are not starved.
//!
//! The step is the simulator's too ([`driver`]): only the [`Io`] differs.
//!
//! Containment is two-level. The core runs each room's work under
//! `catch_unwind` and fails just that room ([`EngineEvent::RoomFailed`],
//! [`CoreStats::rooms_failed`]); the driver additionally runs every core
//! call under `catch_unwind`, so a panic outside any room's work (a bug in
//! the core's own bookkeeping) is logged and counted in
//! [`ShardStats::panics`] and the shard keeps serving.
//!
//! Shutdown ([`Command::Shutdown`]): every room is closed with
//! [`LeaveReason::Shutdown`] (a `closing` control message, RTCP BYE, DTLS
//! close_notify per participant), the resulting datagrams are sent, and the
//! thread ends; [`ShardHandle::join_within`] bounds the wait for it.

pub(crate) mod driver;
pub(crate) mod poll;
mod socket;
mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use str0m::net::{Protocol, Transmit};

use crate::ForwardLatency;
use crate::config::{RoomConfig, TcpConfig};
#[cfg(doc)]
use crate::core::CoreStats;
use crate::core::{Footprint, ShardCore, SubscriberStats};
use crate::error::Error;
use crate::event::{EngineEvent, LeaveReason};
use crate::ids::{ParticipantId, RoomId};
use crate::join::Prepared;

use crate::core::TcpClose;
use driver::{Driver, Io, RoomShared};
use poll::{Doorbell, Poller, thread_cpu_time};
pub use socket::SocketStats;
use socket::{RecvBatch, SendBatch, UdpSocket};
pub use tcp::TcpSocketStats;
use tcp::{TcpBatch, TcpIo};

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
    /// Open a room. `shared` is what the engine's registry reads of it,
    /// kept current by the shard (size, lock).
    CreateRoom {
        room: RoomId,
        config: Box<RoomConfig>,
        shared: Arc<RoomShared>,
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
    /// Close a room, removing everyone; with `moved`, telling them to
    /// rejoin elsewhere ([`LeaveReason::Moved`]).
    CloseRoom {
        room: RoomId,
        moved: bool,
        reply: Reply<()>,
    },
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
    /// The address its ICE-TCP listener is bound to (the same port), when
    /// TCP is on.
    pub tcp_addr: Option<SocketAddr>,
    /// Rooms on this shard.
    pub rooms: usize,
    /// Participants on this shard.
    pub participants: usize,
    /// CPU time the shard thread has used (user + system).
    pub cpu_time: Duration,
    /// The core's counters: datagrams, RTP forwarded, drops.
    pub core: crate::core::CoreStats,
    /// The socket layer's counters: batches, send errors.
    pub socket: SocketStats,
    /// SFU-added latency of forwarded packets: from the receive batch's
    /// timestamp (read once per `recvmmsg` batch) to the `sendmmsg` that
    /// carried each copy, str0m's pacer queueing included. Packets whose
    /// receive time was lost are counted in [`CoreStats::latency_untracked`].
    pub forward_latency: ForwardLatency,
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
    pub(crate) fn new(index: usize, local_addr: SocketAddr) -> Self {
        ShardStats {
            index,
            local_addr,
            tcp_addr: None,
            rooms: 0,
            participants: 0,
            cpu_time: Duration::ZERO,
            core: Default::default(),
            socket: SocketStats::default(),
            forward_latency: ForwardLatency::default(),
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
    /// Seed of the core's random choices.
    pub seed: u64,
    /// ICE-TCP beside UDP, on the same port number.
    pub tcp: Option<TcpConfig>,
}

/// The engine's side of a shard: its command queue, doorbell, stats
/// snapshot and thread.
pub(crate) struct ShardHandle {
    pub index: usize,
    /// The bound socket address.
    pub local_addr: SocketAddr,
    /// The address clients are told to reach (ICE host candidate).
    pub advertised_addr: SocketAddr,
    /// The passive TCP candidate's address, when TCP is on.
    pub advertised_tcp_addr: Option<SocketAddr>,
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
        let (socket, listener) = match &config.tcp {
            None => (
                UdpSocket::bind(config.bind, config.port_range.clone())?,
                None,
            ),
            Some(_) => {
                let (u, l) = tcp::bind_pair(config.bind, config.port_range.clone())?;
                (u, Some(l))
            }
        };
        let local_addr = socket.local_addr();
        let advertised_addr = SocketAddr::new(config.advertise_ip, local_addr.port());
        let doorbell = Arc::new(Doorbell::new()?);
        let poller = Poller::new(socket.as_raw_fd(), doorbell.as_raw_fd())?;
        let tcp = match (listener, &config.tcp) {
            (Some(l), Some(c)) => Some(TcpIo::new(l, poller.ctl()?, c)?),
            _ => None,
        };
        let advertised_tcp_addr = tcp
            .as_ref()
            .map(|t| SocketAddr::new(config.advertise_ip, t.local_addr().port()));
        let (tx, rx) = bounded(config.command_capacity.max(1));
        let mut stats = ShardStats::new(index, local_addr);
        stats.tcp_addr = tcp.as_ref().map(|t| t.local_addr());
        let snapshot = Arc::new(Mutex::new(stats.clone()));
        let mut core = ShardCore::with_seed(advertised_addr, &config.ingress, config.seed);
        if let (Some(addr), Some(c)) = (advertised_tcp_addr, &config.tcp) {
            core.enable_tcp(addr, c);
        }
        core.set_admission_budget(config.admission_budget);
        // The one place the wall clock is read for the core: chat labels.
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        core.set_wall_clock(std::time::Instant::now(), unix_ms);
        let (done_tx, done) = bounded::<()>(1);
        let shard = Shard {
            index,
            poller,
            doorbell: doorbell.clone(),
            driver: Driver::new(index, local_addr, stats.tcp_addr, core, driver::SEND_AT),
            commands: rx,
            socket,
            tcp,
            events,
            snapshot: snapshot.clone(),
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
            advertised_tcp_addr,
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
    poller: Poller,
    /// Rung by the engine after queueing a command; cleared here.
    doorbell: Arc<Doorbell>,
    driver: Driver,
    commands: Receiver<Command>,
    socket: UdpSocket,
    tcp: Option<TcpIo>,
    events: Sender<EngineEvent>,
    snapshot: Arc<Mutex<ShardStats>>,
}

/// The shard thread's [`Io`]: its socket and the engine's events channel
/// and stats snapshot.
struct ShardIo {
    socket: UdpSocket,
    send: SendBatch,
    /// ICE-TCP's listener and connections, when on.
    tcp: Option<TcpIo>,
    events: Sender<EngineEvent>,
    snapshot: Arc<Mutex<ShardStats>>,
    last_publish: Option<Instant>,
    /// Something changed since the last published snapshot.
    dirty: bool,
}

impl Io for ShardIo {
    fn send(&mut self, t: Transmit) {
        if t.proto != Protocol::Udp {
            if let Some(tcp) = &mut self.tcp {
                tcp.queue(t.destination, &t.contents);
            }
            return;
        }
        if self.send.push(t, None) {
            self.socket.send_batch(&mut self.send);
        }
    }

    fn send_forwarded(&mut self, t: Transmit, received: Instant) {
        // ICE-TCP: queued on its connection; its latency is not tracked.
        if t.proto != Protocol::Udp {
            self.send(t);
            return;
        }
        if self.send.push(t, Some(received)) {
            self.socket.send_batch(&mut self.send);
        }
    }

    fn forward_latency(&self) -> ForwardLatency {
        self.socket.forward_latency
    }

    fn flush(&mut self) {
        self.socket.send_batch(&mut self.send);
        if let Some(tcp) = &mut self.tcp {
            tcp.flush();
        }
    }

    fn close_tcp(&mut self, peer: SocketAddr, how: TcpClose) {
        if let Some(tcp) = &mut self.tcp {
            tcp.close(peer, how);
        }
    }

    fn emit(&mut self, e: EngineEvent) -> bool {
        match self.events.try_send(e) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    fn socket_stats(&self) -> SocketStats {
        let mut s = self.socket.stats;
        if let Some(tcp) = &self.tcp {
            s.tcp = tcp.stats;
        }
        s
    }

    fn cpu_time(&self) -> Duration {
        thread_cpu_time()
    }

    fn publish(&mut self, stats: ShardStats) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = stats;
        self.last_publish = Some(Instant::now());
        self.dirty = false;
    }
}

/// The running shard thread (its send batch points into itself, so it is
/// built on the thread).
struct Running {
    index: usize,
    poller: Poller,
    doorbell: Arc<Doorbell>,
    driver: Driver,
    commands: Receiver<Command>,
    io: ShardIo,
}

impl Shard {
    fn run(self) {
        Running {
            index: self.index,
            poller: self.poller,
            doorbell: self.doorbell,
            driver: self.driver,
            commands: self.commands,
            io: ShardIo {
                socket: self.socket,
                send: SendBatch::new(),
                tcp: self.tcp,
                events: self.events,
                snapshot: self.snapshot,
                last_publish: None,
                dirty: false,
            },
        }
        .run();
    }
}

impl Running {
    fn run(mut self) {
        tracing::debug!(shard = self.index, addr = %self.io.socket.local_addr(), "shard started");
        let mut recv = RecvBatch::new();
        let mut tcp_batch = self.io.tcp.as_ref().map(|_| TcpBatch::new());
        self.io.publish(self.driver.stats(&self.io));
        'wakeups: loop {
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
            }
            let mut take_commands = ready.doorbell;
            for _ in 0..MAX_BATCHES_PER_WAKEUP {
                let n = if ready.socket {
                    self.io.socket.recv_batch(&mut recv)
                } else {
                    0
                };
                let commands = &self.commands;
                let queued = take_commands
                    .then(|| {
                        std::iter::from_fn(|| match commands.try_recv() {
                            Ok(c) => Some(c),
                            Err(TryRecvError::Empty) => None,
                            // The engine is gone without a Shutdown: stop all the same.
                            Err(TryRecvError::Disconnected) => Some(Command::Shutdown),
                        })
                    })
                    .into_iter()
                    .flatten();
                // Truncated datagrams were counted by the socket.
                let batch = (0..n).filter_map(|i| recv.get(i));
                if !self
                    .driver
                    .step(Instant::now(), queued, batch, &mut self.io)
                {
                    break 'wakeups;
                }
                take_commands = false;
                if n < socket::BATCH {
                    break;
                }
            }
            if let Some(batch) = &mut tcp_batch {
                let now = Instant::now();
                let serviced = match &mut self.io.tcp {
                    Some(tcp) if ready.tcp || tcp.has_work(now) => {
                        tcp.service(now, self.poller.tcp_ready(), batch);
                        true
                    }
                    _ => false,
                };
                if serviced && !batch.is_empty() {
                    self.driver.tcp(now, batch.inputs(), &mut self.io);
                }
            }
            let now = Instant::now();
            if self
                .io
                .last_publish
                .is_none_or(|t| now.duration_since(t) >= SNAPSHOT_INTERVAL)
            {
                self.io.publish(self.driver.stats(&self.io));
            } else {
                self.io.dirty = true;
            }
        }
        self.io.publish(self.driver.stats(&self.io));
        tracing::debug!(shard = self.index, "shard stopped");
    }

    /// The core's deadline, or sooner when a snapshot is owed.
    fn next_wakeup(&mut self, now: Instant) -> Option<Instant> {
        let mut core = self.driver.poll_timeout();
        if let Some(t) = self.io.tcp.as_ref().and_then(|t| t.wake_at()) {
            core = Some(core.map_or(t, |c| c.min(t)));
        }
        let snapshot = if self.io.dirty {
            Some(self.io.last_publish.map_or(now, |t| t + SNAPSHOT_INTERVAL))
        } else {
            None
        };
        match (core, snapshot) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
