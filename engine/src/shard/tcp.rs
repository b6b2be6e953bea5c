//! A shard's ICE-TCP sockets: the listener (on the same port number as the
//! shard's UDP socket) and its connections, on the shard's own epoll
//! instance and thread. Only IO happens here; which connections are kept,
//! how bytes become frames and where frames go is the core's business
//! (`core/tcp.rs`), told through [`TcpInput`]s.
//!
//! Reads are level-triggered and bounded per wakeup ([`READ_BUDGET`] bytes
//! in all, [`READ_PER_CONNECTION`] per connection), so one busy connection
//! cannot starve the UDP socket, the doorbell or the others. Writes frame
//! each transmit (RFC 4571: a 2-byte length first) into the connection's
//! queue, bounded by [`TcpConfig::send_buffer_bytes`]; a full queue drops
//! whole frames (as a full UDP socket drops datagrams), and `EPOLLOUT` is
//! watched only while a queue waits for the kernel.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::ops::{Range, RangeInclusive};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::driver::TcpInput;
use super::poll::{EpollCtl, FIRST_CONNECTION, LISTENER};
use super::socket::UdpSocket;
use crate::config::TcpConfig;
use crate::core::TcpClose;

/// Bytes read per wakeup over all connections.
pub(crate) const READ_BUDGET: usize = 256 * 1024;
/// Bytes read from one connection per wakeup.
const READ_PER_CONNECTION: usize = 32 * 1024;
/// Connections accepted per wakeup.
const ACCEPTS_PER_WAKEUP: usize = 64;
/// Listen backlog (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 1024;
/// How long accepting pauses after the process ran out of descriptors
/// (a level-triggered listener would otherwise wake the shard in a loop).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// A connection's emptied send queue keeps at most this much capacity.
const KEEP_CAPACITY: usize = 64 * 1024;
/// SO_SNDBUF of every connection (Linux doubles it). Fixed: the kernel's
/// autotuning would grow it to megabytes on a fast path, which for media
/// is seconds of delay and, over many connections, unbounded kernel memory.
const SOCKET_SEND_BUFFER: usize = 128 * 1024;

/// Counters of a shard's TCP sockets (the core counts what it decides in
/// [`TcpStats`](crate::TcpStats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSocketStats {
    /// `accept` failures other than "would block" (out of descriptors,
    /// memory, ...).
    pub accept_errors: u64,
    /// Times accepting paused for lack of descriptors.
    pub accept_pauses: u64,
    /// Bytes read from connections.
    pub bytes_received: u64,
    /// Frames queued to connections.
    pub frames_sent: u64,
    /// Frames dropped because the connection's send queue was full.
    pub send_dropped: u64,
    /// Frames for a connection that no longer exists, dropped.
    pub send_no_connection: u64,
    /// Connections that failed while reading or writing.
    pub io_errors: u64,
}

/// Bind the shard's UDP socket and a TCP listener on the same port number:
/// the first port of `ports` where both are free (`0..=0`: the OS picks
/// the UDP port, and a few picks are tried until its TCP twin is free).
pub(crate) fn bind_pair(
    ip: IpAddr,
    ports: RangeInclusive<u16>,
) -> io::Result<(UdpSocket, TcpListener)> {
    if *ports.start() == 0 {
        let mut last = None;
        for _ in 0..32 {
            let udp = UdpSocket::bind(ip, 0..=0)?;
            match listen(SocketAddr::new(ip, udp.local_addr().port())) {
                Ok(l) => return Ok((udp, l)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        return Err(last.unwrap_or_else(|| io::Error::other("no port pair")));
    }
    for port in ports.clone() {
        let udp = match UdpSocket::bind(ip, port..=port) {
            Ok(u) => u,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        };
        match listen(SocketAddr::new(ip, port)) {
            Ok(l) => return Ok((udp, l)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "no port in {}..={} on {ip} is free for both UDP and TCP; widen the port range",
            ports.start(),
            ports.end()
        ),
    ))
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restart may bind while old connections linger in TIME_WAIT.
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Framed bytes waiting for the kernel; `out[sent..]` is unsent.
    out: Vec<u8>,
    sent: usize,
    /// Listed in `TcpIo::dirty`.
    dirty: bool,
    /// `EPOLLOUT` is watched.
    watching_out: bool,
    /// Failed; reported to the core at the next wakeup.
    broken: bool,
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// What one wakeup read: inputs for [`super::Driver::tcp`], their bytes in
/// one buffer.
pub(crate) struct TcpBatch {
    buf: Vec<u8>,
    inputs: Vec<(Kind, SocketAddr, Range<usize>)>,
}

#[derive(Clone, Copy)]
enum Kind {
    Open,
    Data,
    Closed,
}

impl TcpBatch {
    pub fn new() -> Self {
        TcpBatch {
            buf: vec![0; READ_BUDGET],
            inputs: Vec::with_capacity(128),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The inputs, in the order they happened.
    pub fn inputs(&self) -> impl Iterator<Item = TcpInput<'_>> {
        self.inputs.iter().map(|(kind, peer, r)| match kind {
            Kind::Open => TcpInput::Open(*peer),
            Kind::Data => TcpInput::Data(*peer, &self.buf[r.clone()]),
            Kind::Closed => TcpInput::Closed(*peer),
        })
    }
}

/// A shard's TCP listener and connections.
pub(crate) struct TcpIo {
    listener: TcpListener,
    local_addr: SocketAddr,
    epoll: EpollCtl,
    slots: Vec<Slot>,
    free: Vec<usize>,
    by_peer: HashMap<SocketAddr, usize>,
    dirty: Vec<usize>,
    broken: usize,
    send_limit: usize,
    max_connections: usize,
    accept_paused_until: Option<Instant>,
    pub stats: TcpSocketStats,
}

impl TcpIo {
    pub fn new(listener: TcpListener, epoll: EpollCtl, config: &TcpConfig) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        epoll.add(listener.as_raw_fd(), LISTENER, libc::EPOLLIN as u32)?;
        Ok(TcpIo {
            listener,
            local_addr,
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            dirty: Vec::new(),
            broken: 0,
            send_limit: config.send_buffer_bytes,
            // The core refuses past its limit; the IO holds a few more
            // only for as long as it takes to hear that.
            max_connections: config.max_connections,
            accept_paused_until: None,
            stats: TcpSocketStats::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// When accepting resumes after a pause, if paused.
    pub fn wake_at(&self) -> Option<Instant> {
        self.accept_paused_until
    }

    /// Something to report although epoll said nothing: failed writes, or
    /// a pause that is over.
    pub fn has_work(&self, now: Instant) -> bool {
        self.broken > 0 || self.accept_paused_until.is_some_and(|t| t <= now)
    }

    /// Accept, read and write what the last wait reported (`ready`: tokens
    /// and event bits), into `batch` for the core.
    pub fn service(&mut self, now: Instant, ready: &[(u64, u32)], batch: &mut TcpBatch) {
        batch.inputs.clear();
        let mut used = 0;
        if self.broken > 0 {
            self.reap_broken(batch);
        }
        if let Some(t) = self.accept_paused_until
            && t <= now
        {
            self.accept_paused_until = None;
            let _ = self
                .epoll
                .modify(self.listener.as_raw_fd(), LISTENER, libc::EPOLLIN as u32);
        }
        for &(token, bits) in ready {
            if token == LISTENER {
                self.accept(now, batch);
                continue;
            }
            let Some(idx) = self.index_of(token) else {
                // A connection closed earlier in this wakeup.
                continue;
            };
            if bits & libc::EPOLLOUT as u32 != 0 {
                self.write_out(idx);
            }
            if bits & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32
                != 0
            {
                used += self.read(idx, batch, used);
            }
        }
        if self.broken > 0 {
            self.reap_broken(batch);
        }
    }

    fn token(idx: usize, generation: u32) -> u64 {
        FIRST_CONNECTION + idx as u64 + (u64::from(generation) << 32)
    }

    fn index_of(&self, token: u64) -> Option<usize> {
        let low = (token & 0xffff_ffff).checked_sub(FIRST_CONNECTION)? as usize;
        let generation = (token >> 32) as u32;
        let slot = self.slots.get(low)?;
        (slot.generation == generation && slot.conn.is_some()).then_some(low)
    }

    fn accept(&mut self, now: Instant, batch: &mut TcpBatch) {
        for _ in 0..ACCEPTS_PER_WAKEUP {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: pause rather than spin.
                    self.stats.accept_errors += 1;
                    self.stats.accept_pauses += 1;
                    tracing::warn!("TCP accept failed, pausing for {ACCEPT_PAUSE:?}: {e}");
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    let _ = self.epoll.modify(self.listener.as_raw_fd(), LISTENER, 0);
                    return;
                }
            };
            // Far past the core's limit (its refusals not yet applied):
            // refuse here without telling it.
            if self.by_peer.len() >= self.max_connections + ACCEPTS_PER_WAKEUP {
                abort(&stream);
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                self.stats.io_errors += 1;
                abort(&stream);
                continue;
            }
            // Media: no Nagle delay, no megabytes of queue.
            let _ = stream.set_nodelay(true);
            let _ = SockRef::from(&stream).set_send_buffer_size(SOCKET_SEND_BUFFER);
            if let Some(old) = self.by_peer.get(&peer).copied() {
                // The same address again: the old connection is gone.
                self.remove(old, TcpClose::Abort);
                batch.inputs.push((Kind::Closed, peer, 0..0));
            }
            let idx = self.free.pop().unwrap_or_else(|| {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                self.slots.len() - 1
            });
            let generation = self.slots[idx].generation;
            let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
            if self
                .epoll
                .add(stream.as_raw_fd(), Self::token(idx, generation), events)
                .is_err()
            {
                self.stats.io_errors += 1;
                self.free.push(idx);
                abort(&stream);
                continue;
            }
            self.slots[idx].conn = Some(Conn {
                stream,
                peer,
                out: Vec::new(),
                sent: 0,
                dirty: false,
                watching_out: false,
                broken: false,
            });
            self.by_peer.insert(peer, idx);
            batch.inputs.push((Kind::Open, peer, 0..0));
        }
    }

    /// Read once from connection `idx` into the batch's buffer after
    /// `used` bytes; returns the bytes read.
    fn read(&mut self, idx: usize, batch: &mut TcpBatch, used: usize) -> usize {
        let room = (batch.buf.len() - used).min(READ_PER_CONNECTION);
        if room == 0 {
            // The budget is spent: level-triggered epoll reports it again.
            return 0;
        }
        let Some(c) = self.slots[idx].conn.as_mut() else {
            return 0;
        };
        let peer = c.peer;
        match c.stream.read(&mut batch.buf[used..used + room]) {
            Ok(0) => {
                self.remove(idx, TcpClose::Graceful);
                batch.inputs.push((Kind::Closed, peer, 0..0));
                0
            }
            Ok(n) => {
                self.stats.bytes_received += n as u64;
                batch.inputs.push((Kind::Data, peer, used..used + n));
                n
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(_) => {
                self.stats.io_errors += 1;
                self.remove(idx, TcpClose::Abort);
                batch.inputs.push((Kind::Closed, peer, 0..0));
                0
            }
        }
    }

    /// Report and close the connections whose writes failed.
    fn reap_broken(&mut self, batch: &mut TcpBatch) {
        for idx in 0..self.slots.len() {
            if let Some(c) = &self.slots[idx].conn
                && c.broken
            {
                let peer = c.peer;
                self.remove(idx, TcpClose::Abort);
                batch.inputs.push((Kind::Closed, peer, 0..0));
            }
        }
        self.broken = 0;
    }

    /// Queue one frame to `peer`'s connection (sent on [`TcpIo::flush`]).
    pub fn queue(&mut self, peer: SocketAddr, payload: &[u8]) {
        let Some(&idx) = self.by_peer.get(&peer) else {
            self.stats.send_no_connection += 1;
            return;
        };
        let Some(c) = self.slots[idx].conn.as_mut() else {
            self.stats.send_no_connection += 1;
            return;
        };
        let Ok(len) = u16::try_from(payload.len()) else {
            self.stats.send_dropped += 1;
            return;
        };
        if c.broken || c.out.len() - c.sent + 2 + payload.len() > self.send_limit {
            self.stats.send_dropped += 1;
            return;
        }
        c.out.extend_from_slice(&len.to_be_bytes());
        c.out.extend_from_slice(payload);
        self.stats.frames_sent += 1;
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Write every queue that has bytes (one `write` each, unless the
    /// kernel takes less: the rest waits for `EPOLLOUT`).
    pub fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            if let Some(c) = self.slots[idx].conn.as_mut() {
                c.dirty = false;
            }
            self.write_out(idx);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn write_out(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        let generation = slot.generation;
        let Some(c) = slot.conn.as_mut() else {
            return;
        };
        while c.sent < c.out.len() && !c.broken {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => break,
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.broken = true;
                    self.broken += 1;
                    self.stats.io_errors += 1;
                }
            }
        }
        let waiting = c.sent < c.out.len() && !c.broken;
        if !waiting {
            c.out.clear();
            c.sent = 0;
            if c.out.capacity() > KEEP_CAPACITY {
                c.out.shrink_to(KEEP_CAPACITY);
            }
        } else if c.sent > c.out.len() / 2 {
            c.out.drain(..c.sent);
            c.sent = 0;
        }
        if waiting != c.watching_out {
            c.watching_out = waiting;
            let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
            if waiting {
                events |= libc::EPOLLOUT as u32;
            }
            let token = Self::token(idx, generation);
            let fd = c.stream.as_raw_fd();
            if self.epoll.modify(fd, token, events).is_err() {
                self.stats.io_errors += 1;
            }
        }
    }

    /// Close `peer`'s connection at the core's request.
    pub fn close(&mut self, peer: SocketAddr, how: TcpClose) {
        if let Some(idx) = self.by_peer.get(&peer).copied() {
            self.remove(idx, how);
        }
    }

    fn remove(&mut self, idx: usize, how: TcpClose) {
        let slot = &mut self.slots[idx];
        let Some(c) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.by_peer.remove(&c.peer);
        if how == TcpClose::Abort {
            abort(&c.stream);
        }
        // Dropping the stream closes it, which also leaves epoll.
        drop(c);
        self.free.push(idx);
    }
}

/// Close with a reset: nothing lingers in TIME_WAIT on our side.
fn abort(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_and_tcp_bind_the_same_port() {
        let (udp, tcp) = bind_pair("127.0.0.1".parse().unwrap(), 0..=0).unwrap();
        assert_eq!(udp.local_addr().port(), tcp.local_addr().unwrap().port());
        // In a range, the next port where both are free.
        let base = udp.local_addr().port();
        let taken = std::net::TcpListener::bind(("127.0.0.1", base.wrapping_add(1)));
        if taken.is_ok() && base < 65000 {
            let (u2, t2) =
                bind_pair("127.0.0.1".parse().unwrap(), base..=base.saturating_add(10)).unwrap();
            assert!(u2.local_addr().port() >= base + 2, "{:?}", u2.local_addr());
            assert_eq!(u2.local_addr().port(), t2.local_addr().unwrap().port());
        }
    }
}
