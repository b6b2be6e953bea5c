//! The driving loop of one shard, shared by the shard thread and the
//! simulator: [`Driver::step`] takes the queued commands and one receive
//! batch, runs the core's due timers, and hands every datagram and event to
//! an [`Io`]. The shard thread's `Io` is its UDP socket (`sendmmsg` batches)
//! and the engine's events channel; the simulator's is its simulated
//! network. Same order, same command handling, same containment.
//!
//! One step, in order:
//!
//! 1. Commands: each runs on the core, its outputs go to the `Io`, the
//!    stats are republished ([`Io::publish`]), then the reply is sent, so
//!    when a caller's `join` or `leave` returns, `stats()` already shows it.
//! 2. The receive batch: [`ShardCore::handle_datagram`] for each datagram
//!    with one `now`, then the flush ([`ShardCore::flush_some`]).
//! 3. Timers: [`ShardCore::handle_timeout_some`] when
//!    [`ShardCore::poll_timeout`] is due.
//! 4. After each of these: [`ShardCore::poll_transmit_received`] into
//!    [`Io::send`], or [`Io::send_forwarded`] with the receive time of a
//!    forwarded packet (then [`Io::flush`]), [`ShardCore::poll_event`] into
//!    [`Io::emit`]. The flush and the timers run in parts: each time
//!    [`SEND_AT`] datagrams are ready they stop, the datagrams are sent,
//!    and they go on (issue 12: one video packet fans out to ~49
//!    subscribers at ~10 us each, and the first copies no longer wait for
//!    the last). Every `Rtc` sees the same inputs in the same order either
//!    way; only the sends come sooner.
//!
//! Every core call runs under `catch_unwind` on top of the core's own
//! per-room containment: a panic outside any room's work is logged and
//! counted in [`ShardStats::panics`], and the shard keeps serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use str0m::net::Transmit;

use super::{Command, ShardStats, SocketStats};
use crate::ForwardLatency;
use crate::core::{ShardCore, TcpClose};
use crate::error::Error;
use crate::event::EngineEvent;
use crate::ids::RoomId;

/// Datagrams a shard thread makes before it sends them: its flush and its
/// timers stop each time this many are ready, the shard sends them, and
/// they go on (half a `sendmmsg` batch).
pub const SEND_AT: usize = 32;

/// Where a [`Driver`]'s outputs go.
pub(crate) trait Io {
    /// Queue one datagram (sent at the latest on [`Io::flush`]).
    fn send(&mut self, t: Transmit);
    /// Queue a datagram that forwards a packet received at `received` (the
    /// `now` of its receive step); the shard's socket records the time to
    /// its `sendmmsg` ([`ShardStats::forward_latency`]).
    fn send_forwarded(&mut self, t: Transmit, _received: Instant) {
        self.send(t);
    }
    /// Send everything queued.
    fn flush(&mut self);
    /// Hand one event to the embedder; false when there was no room for it
    /// (it is dropped and counted in [`ShardStats::events_dropped`]).
    fn emit(&mut self, e: EngineEvent) -> bool;
    /// The socket layer's counters, for [`ShardStats::socket`].
    fn socket_stats(&self) -> SocketStats {
        SocketStats::default()
    }
    /// CPU time the driving thread has used, for [`ShardStats::cpu_time`].
    fn cpu_time(&self) -> Duration {
        Duration::ZERO
    }
    /// The SFU latency histogram, for [`ShardStats::forward_latency`].
    fn forward_latency(&self) -> ForwardLatency {
        ForwardLatency::default()
    }
    /// A command changed what the stats show: publish them now (called
    /// before the command's reply).
    fn publish(&mut self, _stats: ShardStats) {}
    /// Close the TCP connection from `peer` (the core refused it or is
    /// done with it). Only the shard thread has TCP.
    fn close_tcp(&mut self, _peer: SocketAddr, _how: TcpClose) {}
}

/// What the shard thread's TCP sockets report to [`Driver::tcp`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum TcpInput<'a> {
    /// A connection from this address was accepted.
    Open(SocketAddr),
    /// Bytes arrived on it.
    Data(SocketAddr, &'a [u8]),
    /// The client closed it, or it failed.
    Closed(SocketAddr),
}

/// What the engine's registry reads of a room. Written only by the room's
/// shard, the one owner of membership, lock and limits; the engine reads it
/// to refuse a join early, before the join's expensive preparation. The
/// shard's core makes the decision that counts (on adoption).
#[derive(Debug, Default)]
pub(crate) struct RoomShared {
    /// The room's size, kept equal to it after every join and leave.
    pub participants: AtomicUsize,
    /// The room's lock.
    pub locked: AtomicBool,
}

/// One shard's core and the bookkeeping around it.
pub(crate) struct Driver {
    index: usize,
    /// The address the shard's socket is bound to (the core's is the one
    /// it advertises).
    local_addr: SocketAddr,
    /// Its TCP listener's, when TCP is on.
    tcp_addr: Option<SocketAddr>,
    core: ShardCore,
    /// What the engine reads of each room here.
    rooms: HashMap<RoomId, Arc<RoomShared>>,
    /// Datagrams that, once made, are sent before the flush or timeout
    /// that makes them goes on ([`ShardCore::flush_some`]): the first
    /// copies of a packet fanned out to many subscribers leave while the
    /// last are still being made, instead of all waiting for the last.
    send_at: usize,
    events_dropped: u64,
    panics: u64,
}

impl Driver {
    pub fn new(
        index: usize,
        local_addr: SocketAddr,
        tcp_addr: Option<SocketAddr>,
        core: ShardCore,
        send_at: usize,
    ) -> Self {
        Driver {
            index,
            local_addr,
            tcp_addr,
            core,
            rooms: HashMap::new(),
            send_at,
            events_dropped: 0,
            panics: 0,
        }
    }

    /// The core (read-only: every change goes through a step).
    #[cfg(feature = "sim")]
    pub fn core(&self) -> &ShardCore {
        &self.core
    }

    /// Mutable access to the core, for the simulator's test hooks.
    #[cfg(feature = "sim")]
    pub fn core_mut(&mut self) -> &mut ShardCore {
        &mut self.core
    }

    /// One turn of the loop at `now` (see the module docs). Returns false
    /// when a [`Command::Shutdown`] came: every room is closed and the
    /// goodbyes are sent by then, and the caller stops.
    ///
    /// Never inlined: the benchmark gate counts a simulated room's engine
    /// instructions as those inside this function (callgrind
    /// `--toggle-collect=piazza::shard::driver::Driver::step*`).
    #[inline(never)]
    pub fn step<'a, I: Io>(
        &mut self,
        now: Instant,
        commands: impl IntoIterator<Item = Command>,
        batch: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
        io: &mut I,
    ) -> bool {
        for cmd in commands {
            if let Command::Shutdown = cmd {
                self.close_all(now, io);
                return false;
            }
            self.run_command(cmd, now, io);
        }
        let mut batch = batch.into_iter().peekable();
        if batch.peek().is_some() {
            let core = &mut self.core;
            guarded(&mut self.panics, "datagrams", || {
                for (source, data) in batch {
                    core.handle_datagram(now, source, data);
                }
            });
            self.in_rounds(io, "flush", |core, ready| core.flush_some(now, ready));
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.in_rounds(io, "timeout", |core, ready| {
                core.handle_timeout_some(now, ready)
            });
        }
        true
    }

    /// TCP events of one wakeup (after [`Driver::step`] in the same
    /// wakeup): connections opened and closed, bytes received. Frames are
    /// handled like a receive batch (one `now`, one flush); what the core
    /// refuses or closes goes to [`Io::close_tcp`].
    pub fn tcp<'a, I: Io>(
        &mut self,
        now: Instant,
        inputs: impl IntoIterator<Item = TcpInput<'a>>,
        io: &mut I,
    ) {
        let core = &mut self.core;
        guarded(&mut self.panics, "tcp", || {
            for input in inputs {
                match input {
                    TcpInput::Open(peer) => {
                        core.handle_tcp_open(now, peer);
                    }
                    TcpInput::Data(peer, bytes) => core.handle_tcp_data(now, peer, bytes),
                    TcpInput::Closed(peer) => core.handle_tcp_closed(peer),
                }
            }
            core.flush(now);
        });
        self.drain(io);
    }

    /// Earliest time the core needs a step.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Run one command. Its outputs are drained, and the stats republished,
    /// before the reply goes out.
    fn run_command<I: Io>(&mut self, cmd: Command, now: Instant, io: &mut I) {
        let core = &mut self.core;
        let panics = &mut self.panics;
        let (reply, result) = match cmd {
            Command::CreateRoom {
                room,
                config,
                shared,
                reply,
            } => {
                let r = guarded(panics, "create room", || core.create_room(room, *config));
                self.rooms.insert(room, shared);
                (reply, r.ok_or_else(|| internal("create room")))
            }
            Command::Stats(reply) => {
                let _ = reply.send(Ok(self.stats(io)));
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
            // Handled by `step`.
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
                let r = r.unwrap_or_else(|| Err(internal("lock")));
                if r.is_ok()
                    && let Some(s) = self.rooms.get(&room)
                {
                    s.locked.store(locked, Ordering::Relaxed);
                }
                (reply, r)
            }
            Command::CloseRoom { room, moved, reply } => {
                let r = guarded(panics, "close room", || {
                    if moved {
                        core.hand_over_room(room, now)
                    } else {
                        core.close_room(room, now)
                    }
                });
                // Zero the count even if the RoomClosed event is dropped.
                if let Some(s) = self.rooms.remove(&room) {
                    s.participants.store(0, Ordering::Relaxed);
                }
                (reply, r.unwrap_or_else(|| Err(internal("close room"))))
            }
        };
        self.drain(io);
        io.publish(self.stats(io));
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send(result);
    }

    /// Close every room (participants get a `closing` control message and
    /// a DTLS close_notify) and send what that produced.
    fn close_all<I: Io>(&mut self, now: Instant, io: &mut I) {
        let core = &mut self.core;
        let _ = guarded(&mut self.panics, "shutdown", || core.shutdown(now));
        self.drain(io);
        for s in self.rooms.values() {
            s.participants.store(0, Ordering::Relaxed);
        }
        self.rooms.clear();
        io.publish(self.stats(io));
    }

    /// Run a flush or a timeout in parts ([`ShardCore::flush_some`],
    /// [`ShardCore::handle_timeout_some`]): `part` stops each time
    /// [`Driver::send_at`] datagrams are ready, and they are sent before it
    /// goes on, instead of all after its end.
    fn in_rounds<I: Io>(
        &mut self,
        io: &mut I,
        what: &str,
        mut part: impl FnMut(&mut ShardCore, usize) -> bool,
    ) {
        loop {
            let (core, ready) = (&mut self.core, self.send_at);
            // A panic outside any room's work ends the rounds.
            let done = guarded(&mut self.panics, what, || part(core, ready)).unwrap_or(true);
            self.drain(io);
            if done {
                return;
            }
        }
    }

    /// Send every pending transmit and hand on every pending event.
    fn drain<I: Io>(&mut self, io: &mut I) {
        while let Some((t, received)) = self.core.poll_transmit_received() {
            match received {
                Some(r) => io.send_forwarded(t, r),
                None => io.send(t),
            }
        }
        io.flush();
        // After the flush: what was queued for a connection goes first.
        while let Some((peer, how)) = self.core.poll_tcp_close() {
            io.close_tcp(peer, how);
        }
        while let Some(event) = self.core.poll_event() {
            match &event {
                EngineEvent::ParticipantJoined { room, .. }
                | EngineEvent::ParticipantLeft { room, .. } => {
                    if let Some(s) = self.rooms.get(room) {
                        let n = self.core.room_len(*room).unwrap_or(0);
                        s.participants.store(n, Ordering::Relaxed);
                    }
                }
                EngineEvent::RoomClosed { room } | EngineEvent::RoomFailed { room, .. } => {
                    if let Some(s) = self.rooms.remove(room) {
                        s.participants.store(0, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
            if !io.emit(event) {
                self.events_dropped += 1;
            }
        }
    }

    /// The shard's counters, with the `Io`'s socket counters and CPU time.
    pub fn stats<I: Io>(&self, io: &I) -> ShardStats {
        ShardStats {
            index: self.index,
            local_addr: self.local_addr,
            tcp_addr: self.tcp_addr,
            rooms: self.core.room_ids().count(),
            participants: self.core.participant_count(),
            cpu_time: io.cpu_time(),
            core: self.core.stats(),
            socket: io.socket_stats(),
            forward_latency: io.forward_latency(),
            events_dropped: self.events_dropped,
            panics: self.panics,
            footprint: self.core.footprint(),
        }
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
