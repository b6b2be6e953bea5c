//! The flood driver (`--flood-pps`): while the room runs, one thread sends
//! hostile datagrams at the engine's shard ports from 64 loopback IPs
//! (127.2.0.1 to 127.2.0.64), none of them a participant's address.
//!
//! The mix ([`piazza::sim::FloodMix`]) cycles through random bytes,
//! truncated RTP, STUN binding requests with an unknown ufrag, STUN binding
//! requests for a real participant's ufrag with a bad MESSAGE-INTEGRITY, and
//! replays. A replay re-sends, unchanged, a datagram one of the load
//! generator's own clients sent earlier (SRTP, SRTCP, DTLS or a valid STUN
//! binding request), captured by [`TAP`] in the client driver: the same
//! bytes as the original, from a different address. Source addresses are
//! never spoofed (no raw sockets).
//!
//! The flood starts when the measurement window opens and lasts
//! `flood_s` (or until the run ends). Its pace is bounded: the scenario
//! caps `flood_pps`, and the thread sleeps a millisecond between bursts.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use piazza::sim::{FloodKind, FloodMix};
use serde::Serialize;

/// Flood source sockets, one loopback IP each.
const SOURCES: u8 = 64;
/// Captured datagrams kept for replay.
const TAP_CAPACITY: usize = 256;
/// Of which at most this many STUN binding requests.
const TAP_STUN: usize = 16;

/// Client datagrams captured for replay, filled by the client drivers while
/// enabled. Disabled (one relaxed load per datagram) unless a flood runs.
pub static TAP: Tap = Tap {
    enabled: AtomicBool::new(false),
    captured: Mutex::new(Vec::new()),
};

/// See [`TAP`].
pub struct Tap {
    enabled: AtomicBool,
    captured: Mutex<Vec<Vec<u8>>>,
}

impl Tap {
    /// Start capturing (before the clients join, to catch their STUN).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Offer a datagram a client is sending; kept while there is room.
    pub fn offer(&self, datagram: &[u8]) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut c = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        if c.len() >= TAP_CAPACITY {
            self.enabled.store(false, Ordering::Relaxed);
            return;
        }
        let stun = datagram.first().is_some_and(|b| *b < 2);
        if stun && c.iter().filter(|d| d[0] < 2).count() >= TAP_STUN {
            return;
        }
        c.push(datagram.to_vec());
    }

    /// Stop capturing and hand out what was captured.
    pub fn take(&self) -> Vec<Vec<u8>> {
        self.enabled.store(false, Ordering::Relaxed);
        std::mem::take(&mut *self.captured.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What the flood sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodSent {
    /// Datagrams sent, all kinds.
    pub datagrams: u64,
    /// By kind: random_bytes, truncated_rtp, stun_unknown_ufrag,
    /// stun_bad_integrity, replay.
    pub by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Sends the kernel refused (counted, not retried).
    pub send_errors: u64,
    /// How long the flood ran, seconds.
    pub seconds: f64,
    /// Captured client datagrams available for replay.
    pub replay_pool: usize,
    /// Participant ufrags the bad-integrity requests named.
    pub known_ufrags: usize,
}

/// A running flood.
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<FloodSent>,
}

impl Flood {
    /// Start flooding `targets` at `pps` for at most `duration`.
    pub fn start(
        targets: Vec<SocketAddr>,
        pps: u64,
        duration: Duration,
        seed: u64,
    ) -> std::io::Result<Flood> {
        let sockets = (1..=SOURCES)
            .map(|i| {
                let s = UdpSocket::bind((Ipv4Addr::new(127, 2, 0, i), 0))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let replays = TAP.take();
        let ufrags = engine_ufrags(&replays);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("loadgen-flood".into())
            .spawn(move || {
                run(
                    sockets, targets, pps, duration, seed, ufrags, replays, &flag,
                )
            })?;
        Ok(Flood { stop, thread })
    }

    /// The flood's time is up (its thread has ended).
    pub fn is_done(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stop (if still running) and report what was sent.
    pub fn finish(self) -> FloodSent {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    sockets: Vec<UdpSocket>,
    targets: Vec<SocketAddr>,
    pps: u64,
    duration: Duration,
    seed: u64,
    ufrags: Vec<String>,
    replays: Vec<Vec<u8>>,
    stop: &AtomicBool,
) -> FloodSent {
    let mut sent = FloodSent {
        replay_pool: replays.len(),
        known_ufrags: ufrags.len(),
        ..FloodSent::default()
    };
    for k in FloodKind::ALL {
        sent.by_kind.insert(k.name(), 0);
    }
    let mut mix = FloodMix::new(seed, ufrags, replays);
    let mut buf = Vec::with_capacity(1500);
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
        let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
        while n < due {
            let kind = mix.next_into(&mut buf);
            let socket = &sockets[(n % sockets.len() as u64) as usize];
            let target = targets[(n / sockets.len() as u64 % targets.len() as u64) as usize];
            if socket.send_to(&buf, target).is_ok() {
                sent.datagrams += 1;
                *sent.by_kind.entry(kind.name()).or_default() += 1;
            } else {
                sent.send_errors += 1;
            }
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent.seconds = start.elapsed().as_secs_f64();
    sent
}

/// The engine's ufrags, from the USERNAME (`engine:client`) of captured
/// binding requests the clients sent it.
fn engine_ufrags(captured: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = captured
        .iter()
        .filter_map(|d| username(d))
        .filter_map(|u| u.split(':').next().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The USERNAME attribute of a STUN message (RFC 8489 section 14.3).
fn username(m: &[u8]) -> Option<&str> {
    if m.len() < 20 || m[0] >= 2 {
        return None;
    }
    let mut a = &m[20..];
    while a.len() >= 4 {
        let typ = u16::from_be_bytes([a[0], a[1]]);
        let len = u16::from_be_bytes([a[2], a[3]]) as usize;
        let value = a.get(4..4 + len)?;
        if typ == 0x0006 {
            return std::str::from_utf8(value).ok();
        }
        a = a.get(4 + len.div_ceil(4) * 4..)?;
    }
    None
}

/// The engine's drop counters and ingress gauges, summed over shards.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineDrops {
    /// Drops by reason (one key each, see [`piazza::DropStats`]).
    #[serde(flatten)]
    pub drops: piazza::DropStats,
    /// Unvalidated sources tracked by the rate limiter (all shards).
    pub tracked_sources: usize,
    /// Sources the fixed-size table forgot for new ones.
    pub source_evictions: u64,
    /// Validated (participant) addresses.
    pub validated_addresses: usize,
}

impl EngineDrops {
    /// Sum the shards' counters.
    pub fn of(stats: &piazza::EngineStats) -> Self {
        let mut e = EngineDrops::default();
        for s in &stats.shards {
            e.drops += s.core.drops;
            e.tracked_sources += s.core.ingress.tracked_sources;
            e.source_evictions += s.core.ingress.source_evictions;
            e.validated_addresses += s.core.ingress.validated_addresses;
        }
        e
    }

    /// All dropped datagrams.
    pub fn total(&self) -> u64 {
        self.drops.total()
    }
}

/// The `flood` object of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodReport {
    /// The target rate, datagrams per second.
    pub pps: u64,
    /// What was sent.
    pub sent: FloodSent,
    /// The engine's drop counters at the end of the run (cumulative; before
    /// the flood they were `drops_before_total` in all).
    pub engine_drops: EngineDrops,
    /// Drops before the flood started.
    pub drops_before_total: u64,
    /// Resident set of the process (engine and clients), MiB: when the
    /// flood started, when it stopped, and at the end of the run.
    pub rss_mb_at_start: f64,
    /// See [`FloodReport::rss_mb_at_start`].
    pub rss_mb_at_stop: f64,
    /// See [`FloodReport::rss_mb_at_start`].
    pub rss_mb_at_end: f64,
}

/// Current resident set of this process (VmRSS), MiB; 0 if unknown.
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ufrags_come_from_the_username_of_captured_requests() {
        let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
        m.extend_from_slice(b"eng1:cli1\0\0\0");
        let captured = vec![m.clone(), m, vec![0x80; 40]];
        assert_eq!(engine_ufrags(&captured), vec!["eng1".to_string()]);
    }
}
