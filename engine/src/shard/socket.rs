//! A shard's UDP socket: built with socket2 (nonblocking, large kernel
//! buffers), read with `recvmmsg` and written with `sendmmsg`, up to
//! [`BATCH`] datagrams per system call.
//!
//! Linux only. The receive side owns one preallocated buffer pool that every
//! batch reuses; the send side owns the `mmsghdr`/`iovec`/address arrays and
//! points them at the payloads str0m produced, so no datagram is copied.
//!
//! UDP GSO: a run of datagrams to one destination, all of one size but the
//! last (which may be shorter), goes as one `sendmmsg` message with a
//! `UDP_SEGMENT` control message, and the kernel cuts it into datagrams
//! after one pass through the stack. If the kernel refuses that (`EIO`: the
//! route cannot segment; `EINVAL`), the socket stops using it and sends
//! the rest one datagram per message.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use str0m::net::Transmit;

use crate::ForwardLatency;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub(crate) const BATCH: usize = 64;

/// Largest datagram we receive. WebRTC keeps datagrams under the path MTU
/// (str0m's default is 1150 bytes of RTP); anything longer is truncated by
/// the kernel, counted and dropped.
pub(crate) const MAX_DATAGRAM: usize = 2048;

/// `UDP_SEGMENT` (linux/udp.h): the segment size of a GSO send, a `u16`
/// control message at level `SOL_UDP`.
const UDP_SEGMENT: libc::c_int = 103;

/// Most datagrams in one GSO message (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;

/// Most bytes in one GSO message (a UDP payload must fit in 64 KiB).
const GSO_MAX_BYTES: usize = 60_000;

/// Requested SO_RCVBUF / SO_SNDBUF. The kernel caps it at
/// `net.core.rmem_max` / `wmem_max` unless those are raised; a burst of a
/// 50-person room's keyframes needs a few MiB to survive a scheduling hiccup.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Counters of the socket layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// `recvmmsg` calls that returned at least one datagram.
    pub recv_batches: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams longer than the receive buffer, dropped.
    pub truncated: u64,
    /// `recvmmsg` failures other than "would block" / "interrupted".
    pub recv_errors: u64,
    /// `sendmmsg` calls.
    pub send_batches: u64,
    /// Datagrams the kernel accepted.
    pub datagrams_sent: u64,
    /// Datagrams the kernel refused (unreachable destination, ...), dropped.
    pub send_errors: u64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub send_would_block: u64,
    /// The ICE-TCP sockets' counters (all zero when TCP is off).
    pub tcp: super::tcp::TcpSocketStats,
}

/// One shard's UDP socket.
pub(crate) struct UdpSocket {
    socket: Socket,
    local_addr: SocketAddr,
    pub stats: SocketStats,
    /// Receive-to-`sendmmsg` time of forwarded datagrams.
    pub forward_latency: ForwardLatency,
    /// Send runs to one destination as one GSO message; cleared when the
    /// kernel refuses one.
    gso: bool,
}

impl UdpSocket {
    /// Bind to `ip` on the first free port of `ports` (`0..=0`: the OS picks).
    pub fn bind(ip: IpAddr, ports: RangeInclusive<u16>) -> io::Result<UdpSocket> {
        let mut last_err = None;
        for port in ports.clone() {
            match Self::bind_one(SocketAddr::new(ip, port)) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "no free UDP port in {}..={} on {ip} ({}); widen the port range",
                ports.start(),
                ports.end(),
                last_err.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))
    }

    fn bind_one(addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: an unprivileged process gets at most the sysctl cap.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let local_addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound socket has no IP address"))?;
        Ok(UdpSocket {
            socket,
            local_addr,
            stats: SocketStats::default(),
            forward_latency: ForwardLatency::default(),
            gso: true,
        })
    }

    /// The bound address (with the port the OS assigned, if any).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Receive up to [`BATCH`] datagrams into `batch` without blocking.
    /// Returns how many arrived (0 when none are waiting).
    pub fn recv_batch(&mut self, batch: &mut RecvBatch) -> usize {
        batch.len = 0;
        batch.prepare();
        let n = loop {
            // SAFETY: `batch.prepare()` pointed every one of the BATCH
            // mmsghdrs at its own iovec (one MAX_DATAGRAM-byte chunk of
            // `batch.bufs`) and its own sockaddr_storage, with lengths that
            // match those allocations; all of them live in `batch`, which we
            // borrow mutably for the duration of the call. A null timeout is
            // allowed, and MSG_DONTWAIT makes the call nonblocking.
            let r = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    batch.msgs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return 0,
                _ => {
                    // ECONNREFUSED from an earlier ICMP error and the like:
                    // nothing to read now, the next wakeup tries again.
                    self.stats.recv_errors += 1;
                    tracing::debug!("recvmmsg failed: {err}");
                    return 0;
                }
            }
        };
        batch.len = n;
        self.stats.recv_batches += 1;
        self.stats.datagrams_received += n as u64;
        for m in &batch.msgs[..n] {
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.stats.truncated += 1;
            }
        }
        n
    }

    /// Send every transmit in `batch` (one `sendmmsg` per [`BATCH`]) and
    /// empty it. Failures are counted and the datagram dropped: UDP media
    /// would rather lose a packet than stall the shard.
    pub fn send_batch(&mut self, batch: &mut SendBatch) {
        if batch.transmits.is_empty() {
            return;
        }
        // One clock read per batch: the moment its datagrams are handed to
        // the kernel, for the forwarded ones' latency.
        if batch.forwarded > 0 {
            let handed = Instant::now();
            for r in batch.received.iter().flatten() {
                self.forward_latency
                    .record(handed.saturating_duration_since(*r));
            }
        }
        let mut from = 0;
        while let Some(next) = self.send_from(batch, from) {
            from = next;
        }
        batch.clear();
    }

    /// Send the transmits of `batch` from index `from` on. `Some(i)`: the
    /// kernel refused GSO at transmit `i`; GSO is now off and the caller
    /// sends again from there.
    fn send_from(&mut self, batch: &mut SendBatch, from: usize) -> Option<usize> {
        batch.prepare(from, self.gso);
        let total = batch.msgs.len();
        let datagrams = |spans: &[(usize, usize)]| spans.iter().map(|s| s.1 as u64).sum::<u64>();
        let mut start = 0;
        while start < total {
            let count = total - start;
            // SAFETY: `batch.prepare()` built one mmsghdr per message, each
            // pointing at its own run of iovecs (which point at the
            // transmits' payloads, alive in `batch.transmits`), its own
            // destination SockAddr in `batch.addrs` and, for a GSO message,
            // its own control buffer in `batch.cmsgs`. `start + count <=
            // total` keeps the pointer and length inside `batch.msgs`.
            // Nothing is moved or dropped while the kernel reads them:
            // `batch` is borrowed mutably for the whole loop.
            let r = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    batch.msgs.as_mut_ptr().add(start),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            self.stats.send_batches += 1;
            if r >= 0 {
                let sent = r as usize;
                if sent == 0 {
                    // Not expected from Linux; avoid spinning on it.
                    self.stats.send_errors += datagrams(&batch.spans[start..]);
                    break;
                }
                self.stats.datagrams_sent += datagrams(&batch.spans[start..start + sent]);
                start += sent;
                continue;
            }
            let err = io::Error::last_os_error();
            let (first, segments) = batch.spans[start];
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    // The send buffer is full: drop the rest of the batch.
                    self.stats.send_would_block += datagrams(&batch.spans[start..]);
                    break;
                }
                _ if segments > 1
                    && matches!(err.raw_os_error(), Some(libc::EIO | libc::EINVAL)) =>
                {
                    tracing::debug!("UDP GSO refused ({err}): sending one datagram per message");
                    self.gso = false;
                    return Some(first);
                }
                _ => {
                    // The first message of the remainder failed (a bad or
                    // unreachable destination): drop it, keep the others.
                    self.stats.send_errors += segments as u64;
                    tracing::debug!(
                        destination = %batch.transmits[first].destination,
                        "sendmmsg failed: {err}"
                    );
                    start += 1;
                }
            }
        }
        None
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// A reusable receive batch: [`BATCH`] buffers of [`MAX_DATAGRAM`] bytes and
/// their headers, allocated once per shard.
pub(crate) struct RecvBatch {
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    len: usize,
}

impl RecvBatch {
    pub fn new() -> Self {
        // SAFETY: iovec and mmsghdr are plain C structs of integers and
        // pointers, for which all-zero bytes is a valid (null/empty) value.
        let zero_iovec: libc::iovec = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zero_msg: libc::mmsghdr = unsafe { mem::zeroed() };
        // SAFETY: sockaddr_storage is a plain C struct; all-zero is AF_UNSPEC.
        let zero_addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
        RecvBatch {
            bufs: vec![0u8; BATCH * MAX_DATAGRAM].into_boxed_slice(),
            addrs: vec![zero_addr; BATCH].into_boxed_slice(),
            iovecs: vec![zero_iovec; BATCH].into_boxed_slice(),
            msgs: vec![zero_msg; BATCH].into_boxed_slice(),
            len: 0,
        }
    }

    /// Point every header at its buffer and address slot, and reset the
    /// lengths the kernel overwrites. Done before each call rather than once,
    /// so the struct holds no self-referential state between calls.
    fn prepare(&mut self) {
        let bufs = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                // In bounds: bufs holds BATCH * MAX_DATAGRAM bytes.
                iov_base: bufs.wrapping_add(i * MAX_DATAGRAM).cast(),
                iov_len: MAX_DATAGRAM,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
    }

    /// Datagram `i` of the last receive: its source and bytes. `None` for a
    /// truncated datagram or an address family we do not speak.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.len {
            return None;
        }
        let m = &self.msgs[i];
        if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (m.msg_len as usize).min(MAX_DATAGRAM);
        let namelen = m.msg_hdr.msg_namelen;
        if namelen as usize > mem::size_of::<libc::sockaddr_storage>() {
            return None;
        }
        // SAFETY: for message `i < self.len` the kernel wrote a sockaddr of
        // the socket's family (`sockaddr_in` or `sockaddr_in6`) and its
        // length `namelen` into this storage, so family and length match
        // as `SockAddr::new` requires.
        let addr = unsafe { SockAddr::new(self.addrs[i], namelen) };
        let source = addr.as_socket()?;
        let start = i * MAX_DATAGRAM;
        Some((source, &self.bufs[start..start + len]))
    }
}

/// A reusable send batch: the transmits waiting to go out and the headers
/// that describe them to `sendmmsg`.
pub(crate) struct SendBatch {
    transmits: Vec<Transmit>,
    /// Per transmit: when the packet it forwards was received.
    received: Vec<Option<Instant>>,
    /// How many of `received` are `Some`.
    forwarded: usize,
    /// Per message: its first transmit and how many it carries (more
    /// than one: a GSO message).
    spans: Vec<(usize, usize)>,
    addrs: Vec<SockAddr>,
    iovecs: Vec<libc::iovec>,
    /// Per message: its `UDP_SEGMENT` control message (unused for one
    /// datagram). `u64`s for the alignment `cmsghdr` needs.
    cmsgs: Vec<[u64; 4]>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            transmits: Vec::with_capacity(BATCH),
            received: Vec::with_capacity(BATCH),
            forwarded: 0,
            spans: Vec::with_capacity(BATCH),
            addrs: Vec::with_capacity(BATCH),
            iovecs: Vec::with_capacity(BATCH),
            cmsgs: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
        }
    }

    /// Queue one transmit, with the receive time of the packet it forwards
    /// if it forwards one. Returns true when the batch is full and should be
    /// sent.
    pub fn push(&mut self, t: Transmit, received: Option<Instant>) -> bool {
        self.transmits.push(t);
        self.forwarded += usize::from(received.is_some());
        self.received.push(received);
        self.transmits.len() >= BATCH
    }

    /// Group the transmits from index `from` on into messages: with `gso`,
    /// each run to one destination whose datagrams all have the first
    /// one's size, but the last, which may be shorter, is one message
    /// (at most [`GSO_MAX_SEGMENTS`] datagrams and [`GSO_MAX_BYTES`]).
    fn group(&mut self, from: usize, gso: bool) {
        self.spans.clear();
        let mut i = from;
        while i < self.transmits.len() {
            let first = &self.transmits[i];
            let size = first.contents.len();
            let mut n = 1;
            let can_run = gso && size > 0;
            while let Some(t) = self.transmits.get(i + n).filter(|_| can_run) {
                let fits = n < GSO_MAX_SEGMENTS && (n + 1) * size <= GSO_MAX_BYTES;
                let joins = t.destination == first.destination
                    && t.proto == first.proto
                    && t.contents.len() <= size
                    && !t.contents.is_empty();
                if !(fits && joins) {
                    break;
                }
                n += 1;
                if t.contents.len() < size {
                    // A shorter one ends the run.
                    break;
                }
            }
            self.spans.push((i, n));
            i += n;
        }
    }

    /// Build the headers for the queued transmits from index `from` on
    /// ([`SendBatch::group`]). The vectors keep their capacity between
    /// batches: no allocation once warm.
    fn prepare(&mut self, from: usize, gso: bool) {
        self.group(from, gso);
        self.addrs.clear();
        self.iovecs.clear();
        self.cmsgs.clear();
        self.msgs.clear();
        for t in &self.transmits[from..] {
            self.iovecs.push(libc::iovec {
                // sendmmsg only reads through this pointer.
                iov_base: t.contents.as_ptr() as *mut libc::c_void,
                iov_len: t.contents.len(),
            });
        }
        for &(first, n) in &self.spans {
            self.addrs
                .push(SockAddr::from(self.transmits[first].destination));
            let mut cmsg = [0u64; 4];
            if n > 1 {
                let size = self.transmits[first].contents.len() as u16;
                // SAFETY: `cmsg` is 32 bytes, 8-aligned, which holds
                // CMSG_SPACE(2) = 24 bytes: one cmsghdr and its u16, at
                // the offsets CMSG_LEN gives.
                unsafe {
                    let hdr = cmsg.as_mut_ptr().cast::<libc::cmsghdr>();
                    (*hdr).cmsg_len = libc::CMSG_LEN(2) as _;
                    (*hdr).cmsg_level = libc::SOL_UDP;
                    (*hdr).cmsg_type = UDP_SEGMENT;
                    let data = libc::CMSG_DATA(hdr).cast::<u16>();
                    data.write_unaligned(size);
                }
            }
            self.cmsgs.push(cmsg);
        }
        for (k, &(first, n)) in self.spans.iter().enumerate() {
            // SAFETY: mmsghdr is a plain C struct; all-zero is a valid value
            // (null pointers, zero lengths and flags).
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            // The pointers stay valid until `clear()` or the next
            // `prepare()`: the vectors are not touched between here and the
            // sendmmsg calls, and hold their elements in place.
            m.msg_hdr.msg_name = self.addrs[k].as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = self.addrs[k].len();
            m.msg_hdr.msg_iov = &mut self.iovecs[first - from];
            m.msg_hdr.msg_iovlen = n as _;
            if n > 1 {
                m.msg_hdr.msg_control = self.cmsgs[k].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE only computes a size.
                m.msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
            }
            self.msgs.push(m);
        }
    }

    fn clear(&mut self) {
        self.msgs.clear();
        self.cmsgs.clear();
        self.iovecs.clear();
        self.addrs.clear();
        self.spans.clear();
        // Drops the payloads: the kernel has copied them.
        self.transmits.clear();
        self.received.clear();
        self.forwarded = 0;
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    fn transmit(to: SocketAddr, from: SocketAddr, payload: &[u8]) -> Transmit {
        Transmit {
            proto: str0m::net::Protocol::Udp,
            source: from,
            destination: to,
            contents: payload.to_vec().into(),
        }
    }

    #[test]
    fn batch_round_trip_over_loopback() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut a = UdpSocket::bind(lo, 0..=0).unwrap();
        let mut b = UdpSocket::bind(lo, 0..=0).unwrap();
        let mut out = SendBatch::new();
        for i in 0..100u8 {
            if out.push(transmit(b.local_addr(), a.local_addr(), &[i; 100]), None) {
                a.send_batch(&mut out);
            }
        }
        a.send_batch(&mut out);
        assert!(out.is_empty());
        assert_eq!(a.stats.datagrams_sent, 100);

        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 100 && Instant::now() < deadline {
            let n = b.recv_batch(&mut batch);
            assert!(n <= BATCH);
            for i in 0..n {
                let (src, data) = batch.get(i).unwrap();
                assert_eq!(src, a.local_addr());
                assert_eq!(data.len(), 100);
                got.push(data[0]);
            }
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(got, (0..100u8).collect::<Vec<_>>());
        assert_eq!(b.recv_batch(&mut batch), 0, "nothing left: would block");
    }

    /// GSO runs: one destination, the first datagram's size, a shorter one
    /// ends the run, at most GSO_MAX_SEGMENTS; without GSO one per message.
    #[test]
    fn gso_groups_runs_to_one_destination_of_one_size() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (a, b, me) = (
            SocketAddr::new(lo, 1000),
            SocketAddr::new(lo, 1001),
            SocketAddr::new(lo, 999),
        );
        let mut batch = SendBatch::new();
        for (to, len) in [(a, 100), (a, 100), (a, 60), (a, 100), (b, 100), (b, 100)] {
            batch.push(transmit(to, me, &vec![1; len]), None);
        }
        for (to, len) in [(a, 60), (a, 100), (a, 100)] {
            batch.push(transmit(to, me, &vec![1; len]), None);
        }
        batch.group(0, true);
        assert_eq!(batch.spans, [(0, 3), (3, 1), (4, 2), (6, 1), (7, 2)]);
        batch.group(4, true);
        assert_eq!(batch.spans, [(4, 2), (6, 1), (7, 2)]);
        batch.group(0, false);
        assert_eq!(batch.spans, (0..9).map(|i| (i, 1)).collect::<Vec<_>>());
        batch.clear();
        for _ in 0..GSO_MAX_SEGMENTS + 6 {
            batch.transmits.push(transmit(a, me, &[1; 100]));
        }
        batch.group(0, true);
        assert_eq!(batch.spans, [(0, GSO_MAX_SEGMENTS), (GSO_MAX_SEGMENTS, 6)]);
    }

    /// Runs of several sizes to two destinations go out as GSO messages and
    /// arrive as the datagrams they were, in order.
    #[test]
    fn gso_runs_arrive_as_the_datagrams_they_were() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut a = UdpSocket::bind(lo, 0..=0).unwrap();
        let mut b = UdpSocket::bind(lo, 0..=0).unwrap();
        let mut c = UdpSocket::bind(lo, 0..=0).unwrap();
        let mut out = SendBatch::new();
        let mut sent = [Vec::new(), Vec::new()];
        for i in 0..60u8 {
            // Runs of 1200-byte datagrams cut by a shorter one every fifth,
            // and a change of destination every twelfth.
            let to = usize::from(i / 12 % 2);
            let len = if i % 5 == 4 {
                300 + usize::from(i)
            } else {
                1200
            };
            let dest = [b.local_addr(), c.local_addr()][to];
            let payload = vec![i; len];
            out.push(transmit(dest, a.local_addr(), &payload), None);
            sent[to].push(payload);
        }
        out.group(0, true);
        assert_eq!(out.spans.len(), 16, "{:?}", out.spans);
        a.send_batch(&mut out);
        assert_eq!(a.stats.datagrams_sent, 60);
        assert_eq!(a.stats.send_errors, 0);
        for (sock, want) in [(&mut b, &sent[0]), (&mut c, &sent[1])] {
            let mut batch = RecvBatch::new();
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            while got.len() < want.len() && Instant::now() < deadline {
                let n = sock.recv_batch(&mut batch);
                for i in 0..n {
                    got.push(batch.get(i).unwrap().1.to_vec());
                }
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            assert_eq!(&got, want);
        }
        // GSO stayed on: loopback segments.
        assert!(a.gso);
    }

    #[test]
    fn binds_the_next_free_port_in_range() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // Find a port that is free now, then occupy it and ask for a range
        // starting there.
        let probe = UdpSocket::bind(lo, 0..=0).unwrap();
        let port = probe.local_addr().port();
        if port >= u16::MAX - 4 {
            return;
        }
        let second = UdpSocket::bind(lo, port..=port + 4).unwrap();
        assert_ne!(second.local_addr().port(), port);
        assert!((port..=port + 4).contains(&second.local_addr().port()));
        let err = UdpSocket::bind(lo, port..=port).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
