//! ICE-TCP in the core (RFC 6544 passive candidates, RFC 4571 framing):
//! which connections a shard keeps, how their byte streams become frames,
//! and the frames' way into the same demultiplexing as UDP datagrams.
//!
//! The shard thread accepts, reads and writes the sockets; everything it
//! decides about a connection is decided here, sans IO, from its inputs:
//! [`ShardCore::handle_tcp_open`] (a connection was accepted; the core may
//! refuse it), [`ShardCore::handle_tcp_data`] (bytes arrived),
//! [`ShardCore::handle_tcp_closed`] (the client closed it). The core's
//! answers are transmits with [`Protocol::Tcp`] (the driver frames them
//! onto the connection to their destination) and
//! [`ShardCore::poll_tcp_close`] (connections to close).
//!
//! A connection starts unvalidated ("pending"). Its first frames may only
//! be STUN binding requests, and they pass the same checks as a binding
//! request over UDP from an unknown address (the source's rate, a known
//! ufrag, the participant's address limit, the ICE agent's message
//! integrity). The first one a participant's ICE agent answers validates
//! the connection: from then on its frames go to that participant like the
//! datagrams of a validated UDP address, through the same per-address
//! throttle. Anything else a pending connection sends closes it. Bounded
//! everywhere ([`TcpConfig`]): connections per shard and per source,
//! pending connections (the oldest make room for new ones), the frame
//! length, the time to validate and the time without a frame.
//!
//! [`Protocol::Tcp`]: str0m::net::Protocol::Tcp

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ingress::source_key;
use super::stats::TcpStats;
use super::{Intake, ShardCore};
use crate::config::TcpConfig;

/// How a connection the core gives up on is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpClose {
    /// Normally (its participant is gone: what was queued for it is sent).
    Graceful,
    /// At once, with a reset (refused, or it broke the rules): no lingering
    /// state on the server.
    Abort,
}

/// Why the core closes a connection (each has its counter in [`TcpStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    RefusedShard,
    RefusedSource,
    Evicted,
    HandshakeTimeout,
    Idle,
    BadFrame,
    NotStun,
    Rejected,
    ParticipantGone,
}

impl Reason {
    fn how(self) -> TcpClose {
        match self {
            Reason::ParticipantGone | Reason::Idle => TcpClose::Graceful,
            _ => TcpClose::Abort,
        }
    }
}

/// How often, at most, timeouts are checked (a connection lives at most
/// this much past its timeout).
const SWEEP_MAX: Duration = Duration::from_secs(1);

/// A frame's 2-byte length prefix (RFC 4571 section 2).
const HEADER: usize = 2;

struct Conn {
    opened: Instant,
    /// The last complete frame (the accept until the first).
    last_frame: Instant,
    validated: bool,
    /// A frame begun but not complete, its header included: at most
    /// 2 + `max_frame_len` bytes.
    partial: Vec<u8>,
}

#[derive(Default)]
struct SourceCount {
    open: usize,
    pending: usize,
}

/// The connections of one shard and their limits.
pub(crate) struct TcpTable {
    /// The address of the shard's TCP candidate (the destination of every
    /// frame, as the participants' ICE agents know it).
    pub(crate) local_addr: SocketAddr,
    limits: TcpConfig,
    conns: HashMap<SocketAddr, Conn>,
    /// Open and pending connections per source (IPv4 address or IPv6 /64).
    sources: HashMap<u128, SourceCount>,
    pending: usize,
    /// Pending connections, oldest first. Entries whose connection has
    /// validated or closed since are skipped (and bounded: rebuilt when
    /// mostly stale).
    pending_order: VecDeque<(SocketAddr, Instant)>,
    close: VecDeque<(SocketAddr, TcpClose)>,
    next_sweep: Option<Instant>,
    sweep_every: Duration,
    pub(crate) stats: TcpStats,
}

impl TcpTable {
    pub fn new(local_addr: SocketAddr, limits: &TcpConfig) -> Self {
        let shortest = limits.handshake_timeout.min(limits.idle_timeout);
        TcpTable {
            local_addr,
            limits: limits.clone(),
            conns: HashMap::new(),
            sources: HashMap::new(),
            pending: 0,
            pending_order: VecDeque::new(),
            close: VecDeque::new(),
            next_sweep: None,
            sweep_every: (shortest / 4).clamp(Duration::from_millis(25), SWEEP_MAX),
            stats: TcpStats::default(),
        }
    }

    /// A new connection from `peer`: kept (true), or refused (queued to
    /// close). May evict the oldest pending connection to make room.
    fn open(&mut self, now: Instant, peer: SocketAddr) -> bool {
        if self.conns.contains_key(&peer) {
            // The IO reports a connection once; a second open for the same
            // address means the first is gone.
            self.forget(peer);
        }
        let key = source_key(peer.ip());
        let src = self.sources.get(&key);
        let (src_open, src_pending) = src.map_or((0, 0), |s| (s.open, s.pending));
        if src_open >= self.limits.max_connections_per_source
            || src_pending >= self.limits.max_pending_per_source
        {
            self.refuse(peer, Reason::RefusedSource);
            return false;
        }
        if self.conns.len() >= self.limits.max_connections
            || self.pending >= self.limits.max_pending
        {
            match self.oldest_pending() {
                Some(old) => self.close(old, Reason::Evicted),
                None => {
                    self.refuse(peer, Reason::RefusedShard);
                    return false;
                }
            }
        }
        self.conns.insert(
            peer,
            Conn {
                opened: now,
                last_frame: now,
                validated: false,
                partial: Vec::new(),
            },
        );
        let s = self.sources.entry(key).or_default();
        s.open += 1;
        s.pending += 1;
        self.pending += 1;
        self.pending_order.push_back((peer, now));
        if self.pending_order.len() > 64 && self.pending_order.len() > 4 * self.pending {
            let conns = &self.conns;
            self.pending_order
                .retain(|(a, t)| conns.get(a).is_some_and(|c| !c.validated && c.opened == *t));
        }
        self.stats.accepted += 1;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.sweep_every);
        }
        true
    }

    fn oldest_pending(&mut self) -> Option<SocketAddr> {
        while let Some(&(peer, opened)) = self.pending_order.front() {
            self.pending_order.pop_front();
            if self
                .conns
                .get(&peer)
                .is_some_and(|c| !c.validated && c.opened == opened)
            {
                return Some(peer);
            }
        }
        None
    }

    fn refuse(&mut self, peer: SocketAddr, why: Reason) {
        self.count(why);
        self.close.push_back((peer, why.how()));
    }

    /// Forget a connection (the IO already closed it, or is told to by
    /// [`TcpTable::close`]).
    fn forget(&mut self, peer: SocketAddr) -> bool {
        let Some(c) = self.conns.remove(&peer) else {
            return false;
        };
        let key = source_key(peer.ip());
        if let Some(s) = self.sources.get_mut(&key) {
            s.open = s.open.saturating_sub(1);
            if !c.validated {
                s.pending = s.pending.saturating_sub(1);
            }
            if s.open == 0 {
                self.sources.remove(&key);
            }
        }
        if !c.validated {
            self.pending = self.pending.saturating_sub(1);
        }
        if self.conns.is_empty() {
            self.next_sweep = None;
            self.pending_order.clear();
        }
        true
    }

    /// Forget a connection and ask the IO to close it.
    fn close(&mut self, peer: SocketAddr, why: Reason) {
        if self.forget(peer) {
            self.count(why);
            self.close.push_back((peer, why.how()));
        }
    }

    fn count(&mut self, why: Reason) {
        let s = &mut self.stats;
        match why {
            Reason::RefusedShard => s.refused_shard_limit += 1,
            Reason::RefusedSource => s.refused_source_limit += 1,
            Reason::Evicted => s.evicted_pending += 1,
            Reason::HandshakeTimeout => s.closed_handshake_timeout += 1,
            Reason::Idle => s.closed_idle += 1,
            Reason::BadFrame => s.closed_bad_frame += 1,
            Reason::NotStun => s.closed_not_stun += 1,
            Reason::Rejected => s.closed_rejected += 1,
            Reason::ParticipantGone => s.closed_participant_gone += 1,
        }
    }

    fn validate(&mut self, peer: SocketAddr, now: Instant) {
        let Some(c) = self.conns.get_mut(&peer) else {
            return;
        };
        if c.validated {
            return;
        }
        c.validated = true;
        c.last_frame = now;
        self.pending = self.pending.saturating_sub(1);
        if let Some(s) = self.sources.get_mut(&source_key(peer.ip())) {
            s.pending = s.pending.saturating_sub(1);
        }
        self.stats.validated += 1;
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Connections past their timeout, with the reason.
    fn expired(&mut self, now: Instant) -> Vec<(SocketAddr, Reason)> {
        if self.next_sweep.is_none_or(|t| t > now) {
            return Vec::new();
        }
        self.next_sweep = (!self.conns.is_empty()).then(|| now + self.sweep_every);
        let (handshake, idle) = (self.limits.handshake_timeout, self.limits.idle_timeout);
        let mut out: Vec<(SocketAddr, Reason)> = self
            .conns
            .iter()
            .filter_map(|(a, c)| {
                if !c.validated && now.saturating_duration_since(c.opened) >= handshake {
                    Some((*a, Reason::HandshakeTimeout))
                } else if c.validated && now.saturating_duration_since(c.last_frame) >= idle {
                    Some((*a, Reason::Idle))
                } else {
                    None
                }
            })
            .collect();
        // Hash order is not replayable; the closes are.
        out.sort_unstable_by_key(|(a, _)| *a);
        out
    }

    fn gauges(&self) -> TcpStats {
        let mut s = self.stats;
        s.open = self.conns.len();
        s.pending = self.pending;
        s
    }
}

/// A frame whose length is zero or above the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadFrame;

/// Split the bytes `data`, which continue the frame begun in `partial`
/// (possibly none), into RFC 4571 frames: `frame` gets each complete one,
/// and returns false to stop (the rest is discarded). What remains of an
/// incomplete frame is left in `partial`. A length of zero or above `max`
/// is an error: framing is lost for good.
pub(crate) fn split_frames(
    partial: &mut Vec<u8>,
    mut data: &[u8],
    max: usize,
    mut frame: impl FnMut(&[u8]) -> bool,
) -> Result<(), BadFrame> {
    let check = |len: usize| {
        if len == 0 || len > max {
            Err(BadFrame)
        } else {
            Ok(len)
        }
    };
    if !partial.is_empty() {
        if partial.len() < HEADER {
            let take = (HEADER - partial.len()).min(data.len());
            partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if partial.len() < HEADER {
                return Ok(());
            }
        }
        let len = check(u16::from_be_bytes([partial[0], partial[1]]) as usize)?;
        let take = (HEADER + len - partial.len()).min(data.len());
        partial.extend_from_slice(&data[..take]);
        data = &data[take..];
        if partial.len() < HEADER + len {
            return Ok(());
        }
        let go_on = frame(&partial[HEADER..]);
        partial.clear();
        if !go_on {
            return Ok(());
        }
    }
    while data.len() >= HEADER {
        let len = check(u16::from_be_bytes([data[0], data[1]]) as usize)?;
        if data.len() < HEADER + len {
            break;
        }
        if !frame(&data[HEADER..HEADER + len]) {
            return Ok(());
        }
        data = &data[HEADER + len..];
    }
    partial.extend_from_slice(data);
    Ok(())
}

impl ShardCore {
    /// Turn ICE-TCP on: the participants' ICE agents know the shard's TCP
    /// candidate as `local_addr`, and connections are kept within `limits`.
    pub fn enable_tcp(&mut self, local_addr: SocketAddr, limits: &TcpConfig) {
        self.tcp = Some(TcpTable::new(local_addr, limits));
        self.tcp_local_addr = local_addr;
    }

    /// The TCP candidate's address, when TCP is on.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|t| t.local_addr)
    }

    /// A connection from `peer` was accepted. False when the core refuses
    /// it (it is also queued in [`ShardCore::poll_tcp_close`]).
    pub fn handle_tcp_open(&mut self, now: Instant, peer: SocketAddr) -> bool {
        let Some(tcp) = self.tcp.as_mut() else {
            return false;
        };
        // A stale connection from the same address is replaced (evicted
        // connections were pending: they have no route).
        self.by_tcp.remove(&peer);
        tcp.open(now, peer)
    }

    /// Bytes from `peer`'s connection. Call [`ShardCore::flush`] after the
    /// batch, as after datagrams.
    pub fn handle_tcp_data(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        let Some(tcp) = self.tcp.as_mut() else {
            return;
        };
        let max = tcp.limits.max_frame_len;
        let Some(conn) = tcp.conns.get_mut(&peer) else {
            // Closed by the core meanwhile: the rest is moot.
            return;
        };
        let mut partial = std::mem::take(&mut conn.partial);
        let mut open = true;
        let split = split_frames(&mut partial, data, max, |frame| {
            open = self.tcp_frame(now, peer, frame);
            open
        });
        if split.is_err() {
            self.close_tcp(peer, Reason::BadFrame);
            return;
        }
        if open && let Some(c) = self.tcp.as_mut().and_then(|t| t.conns.get_mut(&peer)) {
            c.partial = partial;
        }
    }

    /// The client closed the connection (or it failed).
    pub fn handle_tcp_closed(&mut self, peer: SocketAddr) {
        if let Some(tcp) = self.tcp.as_mut()
            && tcp.forget(peer)
        {
            tcp.stats.closed_by_peer += 1;
            self.by_tcp.remove(&peer);
        }
    }

    /// The next connection to close, and how.
    pub fn poll_tcp_close(&mut self) -> Option<(SocketAddr, TcpClose)> {
        self.tcp.as_mut()?.close.pop_front()
    }

    /// One complete frame; false when its connection was closed for it.
    fn tcp_frame(&mut self, now: Instant, peer: SocketAddr, frame: &[u8]) -> bool {
        let Some(tcp) = self.tcp.as_mut() else {
            return false;
        };
        tcp.stats.frames_in += 1;
        let Some(conn) = tcp.conns.get_mut(&peer) else {
            return false;
        };
        if conn.validated {
            conn.last_frame = now;
            self.receive::<true>(now, peer, frame);
            return true;
        }
        match self.receive::<true>(now, peer, frame) {
            Intake::Validated => {
                if let Some(t) = self.tcp.as_mut() {
                    t.validate(peer, now);
                }
                true
            }
            // Its source is over the STUN rate: it may try again (the
            // handshake timeout bounds how long).
            Intake::RateLimited => true,
            // Not reached for a pending connection (it has no route).
            Intake::Routed => true,
            Intake::NotStun => {
                self.close_tcp(peer, Reason::NotStun);
                false
            }
            Intake::Refused => {
                self.close_tcp(peer, Reason::Rejected);
                false
            }
        }
    }

    /// Close a connection: its route goes, the IO is told.
    pub(crate) fn close_tcp(&mut self, peer: SocketAddr, why: Reason) {
        self.by_tcp.remove(&peer);
        if let Some(t) = self.tcp.as_mut() {
            t.close(peer, why);
        }
    }

    /// Close the connections past their timeouts (from `handle_timeout`).
    pub(crate) fn sweep_tcp(&mut self, now: Instant) {
        let Some(t) = self.tcp.as_mut() else {
            return;
        };
        for (peer, why) in t.expired(now) {
            self.close_tcp(peer, why);
        }
    }

    /// When the TCP sweep is next due.
    pub(crate) fn tcp_timeout(&self) -> Option<Instant> {
        self.tcp.as_ref().and_then(|t| t.poll_timeout())
    }

    /// The TCP counters and gauges.
    pub(crate) fn tcp_stats(&self) -> TcpStats {
        self.tcp.as_ref().map(|t| t.gauges()).unwrap_or_default()
    }

    /// A participant's (or a room's) routes went: close their connections.
    pub(super) fn close_tcp_routes(&mut self, gone: impl Fn(&super::Route) -> bool) {
        let Some(t) = self.tcp.as_mut() else {
            return;
        };
        self.by_tcp.retain(|a, r| {
            if gone(r) {
                t.close(*a, Reason::ParticipantGone);
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Vec<u8>, Result<(), BadFrame>) {
        let mut partial = Vec::new();
        let mut out = Vec::new();
        let mut r = Ok(());
        for c in chunks {
            r = split_frames(&mut partial, c, max, |f| {
                out.push(f.to_vec());
                true
            });
            if r.is_err() {
                break;
            }
        }
        (out, partial, r)
    }

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in payloads {
            v.extend_from_slice(&(p.len() as u16).to_be_bytes());
            v.extend_from_slice(p);
        }
        v
    }

    #[test]
    fn frames_split_at_every_byte_boundary_come_out_whole() {
        let stream = framed(&[b"hello", b"x", &[7u8; 300], b"end"]);
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let (out, partial, r) =
                    frames(&[&stream[..cut], &stream[cut..cut2], &stream[cut2..]], 2048);
                assert_eq!(r, Ok(()));
                assert_eq!(out.len(), 4, "cuts {cut} {cut2}");
                assert_eq!(out[0], b"hello");
                assert_eq!(out[1], b"x");
                assert_eq!(out[2], vec![7u8; 300]);
                assert_eq!(out[3], b"end");
                assert!(partial.is_empty());
            }
        }
    }

    #[test]
    fn an_incomplete_frame_waits_and_is_bounded() {
        let stream = framed(&[&[1u8; 100]]);
        let (out, partial, r) = frames(&[&stream[..50]], 2048);
        assert_eq!((out.len(), partial.len(), r), (0, 50, Ok(())));
        // One byte of header alone.
        let (out, partial, r) = frames(&[&stream[..1]], 2048);
        assert_eq!((out.len(), partial.len(), r), (0, 1, Ok(())));
    }

    #[test]
    fn oversized_and_empty_frames_are_errors_before_their_body_arrives() {
        let (out, _, r) = frames(&[&[0x08, 0x01]], 2048);
        assert_eq!((out.len(), r), (0, Err(BadFrame)));
        let (_, _, r) = frames(&[&[0x08], &[0x01]], 2048);
        assert_eq!(r, Err(BadFrame));
        let (_, _, r) = frames(&[&framed(&[b"ok"]), &[0, 0]], 2048);
        assert_eq!(r, Err(BadFrame));
        let (out, _, r) = frames(&[&framed(&[&[0u8; 2048]])], 2048);
        assert_eq!((out.len(), r), (1, Ok(())));
    }

    #[test]
    fn a_stop_discards_the_rest() {
        let stream = framed(&[b"a", b"b", b"c"]);
        let mut partial = Vec::new();
        let mut seen = 0;
        split_frames(&mut partial, &stream, 2048, |_| {
            seen += 1;
            seen < 2
        })
        .unwrap();
        assert_eq!(seen, 2);
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn limits() -> TcpConfig {
        TcpConfig {
            max_connections: 4,
            max_pending: 3,
            max_connections_per_source: 3,
            max_pending_per_source: 2,
            ..TcpConfig::default()
        }
    }

    fn closes(t: &mut TcpTable) -> Vec<(SocketAddr, TcpClose)> {
        t.close.drain(..).collect()
    }

    #[test]
    fn per_source_limits_refuse_and_the_oldest_pending_makes_room() {
        let now = Instant::now();
        let mut t = TcpTable::new(addr("127.0.0.1:5000"), &limits());
        assert!(t.open(now, addr("10.0.0.1:1")));
        assert!(t.open(now, addr("10.0.0.1:2")));
        // A third pending from the same source is refused.
        assert!(!t.open(now, addr("10.0.0.1:3")));
        assert_eq!(t.stats.refused_source_limit, 1);
        assert_eq!(closes(&mut t), vec![(addr("10.0.0.1:3"), TcpClose::Abort)]);
        // Validated ones make room for pending ones, up to the source's total.
        t.validate(addr("10.0.0.1:1"), now);
        assert!(t.open(now, addr("10.0.0.1:3")));
        assert!(
            !t.open(now, addr("10.0.0.1:4")),
            "three open from one source"
        );
        closes(&mut t);
        // The shard's pending limit (3): the oldest pending goes.
        assert!(t.open(now, addr("10.0.0.2:1")));
        assert_eq!(t.pending, 3);
        assert!(t.open(now, addr("10.0.0.3:1")));
        assert_eq!(closes(&mut t), vec![(addr("10.0.0.1:2"), TcpClose::Abort)]);
        assert_eq!(t.stats.evicted_pending, 1);
        assert_eq!((t.conns.len(), t.pending), (4, 3));
        // All four slots taken, three pending: the oldest pending goes again.
        assert!(t.open(now, addr("10.0.0.4:1")));
        assert_eq!(closes(&mut t), vec![(addr("10.0.0.1:3"), TcpClose::Abort)]);
        // Validate everything: at the shard's limit with no pending, refuse.
        for a in ["10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"] {
            t.validate(addr(a), now);
        }
        assert_eq!((t.conns.len(), t.pending), (4, 0));
        assert!(!t.open(now, addr("10.0.0.5:1")));
        assert_eq!(t.stats.refused_shard_limit, 1);
        assert_eq!(t.gauges().open, 4);
    }

    #[test]
    fn timeouts_close_silent_pending_and_idle_validated_connections() {
        let now = Instant::now();
        let cfg = TcpConfig {
            handshake_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            ..TcpConfig::default()
        };
        let mut t = TcpTable::new(addr("127.0.0.1:5000"), &cfg);
        t.open(now, addr("10.0.0.1:1"));
        t.open(now, addr("10.0.0.1:2"));
        t.validate(addr("10.0.0.1:2"), now);
        let sweep = t.poll_timeout().unwrap();
        assert!(sweep <= now + Duration::from_secs(1));
        assert!(t.expired(now + Duration::from_millis(1900)).is_empty());
        // The next sweep is due a quarter of the shortest timeout later.
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_millis(2400)));
        assert!(
            t.expired(now + Duration::from_secs(2)).is_empty(),
            "not yet swept"
        );
        let e = t.expired(now + Duration::from_millis(2400));
        assert_eq!(e, vec![(addr("10.0.0.1:1"), Reason::HandshakeTimeout)]);
        t.close(addr("10.0.0.1:1"), Reason::HandshakeTimeout);
        let e = t.expired(now + Duration::from_secs(6));
        assert_eq!(e, vec![(addr("10.0.0.1:2"), Reason::Idle)]);
        t.close(addr("10.0.0.1:2"), Reason::Idle);
        assert_eq!(t.poll_timeout(), None, "nothing left to time");
        assert_eq!(
            closes(&mut t),
            vec![
                (addr("10.0.0.1:1"), TcpClose::Abort),
                (addr("10.0.0.1:2"), TcpClose::Graceful)
            ]
        );
        assert_eq!(t.stats.closed_handshake_timeout, 1);
        assert_eq!(t.stats.closed_idle, 1);
        assert!(t.sources.is_empty());
    }
}
