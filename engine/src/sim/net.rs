//! A seeded network model for one direction of one link: propagation delay,
//! jitter, random loss and a rate limit with a bounded bottleneck queue.

use std::time::{Duration, Instant};

use crate::ForwardLatency;

/// The size a datagram is charged on a rate-limited link.
///
/// Its length, except for DTLS handshake flights (records of content type
/// 20 to 22: change cipher spec, alert, handshake), which are charged a
/// nominal [`HANDSHAKE_CHARGE`] bytes each. Their real length carries the
/// crypto library's randomness, which cannot be seeded: an ECDSA
/// signature's DER encoding is 70 to 72 bytes, one per certificate and one
/// per key exchange. Charged as they are, a byte more or less moves every
/// later packet on a narrow link by a few microseconds, and a seeded run
/// would not replay. Everything after the handshake (SRTP, SRTCP, STUN,
/// DTLS application data) has a length that depends only on what was sent.
pub fn charged_size(datagram: &[u8]) -> usize {
    match datagram.first() {
        Some(20..=22) => HANDSHAKE_CHARGE,
        _ => datagram.len(),
    }
}

/// What a DTLS handshake datagram is charged on a rate-limited link: about
/// the size of a handshake flight fragment at str0m's default MTU.
pub const HANDSHAKE_CHARGE: usize = 1000;

/// One direction of a link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra random delay, uniform in `0..jitter` (arrival order is kept).
    pub jitter: Duration,
    /// Independent random loss probability, 0..1.
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Longest queueing delay at the bottleneck before tail drop.
    pub queue_limit: Duration,
    /// Token bucket depth in bytes (`tc ... tbf burst`): after an idle
    /// spell this many bytes pass at once, at line rate, before the rate
    /// limit spaces packets. Zero is a plain rate limit (no burst). A
    /// probe short enough to fit in the bucket reads the line rate, not
    /// the link's: Chromium behind `tbf ... burst 5000` showed str0m's
    /// estimate at 445-652 kbit/s on a 250 kbit/s link.
    pub burst_bytes: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue_limit: Duration::from_millis(500),
            burst_bytes: 0,
        }
    }
}

/// Counters of one link direction.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    /// Packets offered.
    pub packets: u64,
    /// Lost at random.
    pub lost: u64,
    /// Tail-dropped at the bottleneck queue.
    pub queue_drops: u64,
    /// Longest queueing delay seen.
    pub max_queue_delay: Duration,
    /// Bytes delivered (neither lost nor dropped), with 28 bytes of IP and
    /// UDP header each.
    pub bytes: u64,
    /// Queueing delay at the bottleneck of every packet it queued (the
    /// engine's fixed-bucket latency histogram).
    pub queue_delays: ForwardLatency,
}

/// The state of one link direction.
#[derive(Debug)]
pub struct Link {
    /// Its configuration (may be changed mid-run).
    pub config: LinkConfig,
    rng: fastrand::Rng,
    busy_until: Option<Instant>,
    /// The token bucket's fill (bytes) at an instant (with `burst_bytes`).
    tokens: Option<(f64, Instant)>,
    last_arrival: Option<Instant>,
    /// Counters.
    pub stats: LinkStats,
}

impl Link {
    /// A link with its own seeded random source.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Link {
            config,
            rng: fastrand::Rng::with_seed(seed),
            busy_until: None,
            tokens: None,
            last_arrival: None,
            stats: LinkStats::default(),
        }
    }

    /// Offer a packet of `size` bytes at `now`; returns its arrival time, or
    /// `None` when it is lost or dropped.
    pub fn send(&mut self, now: Instant, size: usize) -> Option<Instant> {
        self.stats.packets += 1;
        if self.config.loss > 0.0 && self.rng.f64() < self.config.loss {
            self.stats.lost += 1;
            return None;
        }
        let mut depart = now;
        if let Some(rate) = self.config.rate_bps.filter(|r| *r > 0) {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let queued = start - now;
            if queued > self.config.queue_limit {
                self.stats.queue_drops += 1;
                return None;
            }
            self.stats.max_queue_delay = self.stats.max_queue_delay.max(queued);
            self.stats.queue_delays.record(queued);
            depart = if self.config.burst_bytes == 0 {
                start + Duration::from_nanos((size as u64 * 8 + 28 * 8) * 1_000_000_000 / rate)
            } else {
                self.take_tokens(start, size as f64 + 28.0, rate)
            };
            self.busy_until = Some(depart);
        }
        self.stats.bytes += size as u64 + 28;
        let jitter = if self.config.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.u64(0..self.config.jitter.as_nanos() as u64))
        };
        let mut arrival = depart + self.config.delay + jitter;
        if let Some(last) = self.last_arrival {
            arrival = arrival.max(last);
        }
        self.last_arrival = Some(arrival);
        Some(arrival)
    }

    /// Token bucket: when a packet of `charge` bytes at the head of the
    /// queue from `start` on leaves, taking its tokens. The bucket fills at
    /// `rate` up to `burst_bytes` (at least one packet, as `tbf` requires).
    fn take_tokens(&mut self, start: Instant, charge: f64, rate: u64) -> Instant {
        let depth = (self.config.burst_bytes as f64).max(charge);
        let bytes_per_s = rate as f64 / 8.0;
        let (fill, at) = self.tokens.unwrap_or((depth, start));
        let elapsed = start.saturating_duration_since(at).as_secs_f64();
        let fill = (fill + elapsed * bytes_per_s).min(depth);
        if fill >= charge {
            self.tokens = Some((fill - charge, start));
            return start;
        }
        let wait = Duration::from_secs_f64((charge - fill) / bytes_per_s);
        let depart = start + wait;
        self.tokens = Some((0.0, depart));
        depart
    }

    /// Current queueing delay at the bottleneck.
    pub fn queue_delay(&self, now: Instant) -> Duration {
        self.busy_until
            .map(|b| b.saturating_duration_since(now))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_spaces_packets_and_drops_when_queue_is_full() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkConfig {
                delay: Duration::ZERO,
                rate_bps: Some(1_000_000),
                queue_limit: Duration::from_millis(50),
                ..Default::default()
            },
            1,
        );
        // 1000 B + 28 B overhead at 1 Mbps = 8.224 ms each.
        let a = l.send(t0, 1000).unwrap();
        let b = l.send(t0, 1000).unwrap();
        assert_eq!(b - a, Duration::from_nanos(8_224_000));
        let mut dropped = 0;
        for _ in 0..20 {
            if l.send(t0, 1000).is_none() {
                dropped += 1;
            }
        }
        assert!(dropped > 10, "a full queue tail-drops");
    }

    #[test]
    fn a_token_bucket_passes_its_burst_at_once_then_the_rate() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkConfig {
                delay: Duration::ZERO,
                rate_bps: Some(1_000_000),
                burst_bytes: 5_000,
                ..Default::default()
            },
            1,
        );
        // 972 B + 28 B = 1000 B: five fit in the full bucket.
        for _ in 0..5 {
            assert_eq!(l.send(t0, 972), Some(t0));
        }
        // The sixth waits for its 1000 B of tokens: 8 ms at 1 Mbit/s.
        assert_eq!(l.send(t0, 972), Some(t0 + Duration::from_millis(8)));
        assert_eq!(l.send(t0, 972), Some(t0 + Duration::from_millis(16)));
        // Idle for a second refills the bucket to its depth, not beyond.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(l.send(t1, 972), Some(t1));
        }
        assert_eq!(l.send(t1, 972), Some(t1 + Duration::from_millis(8)));
    }

    #[test]
    fn loss_is_seeded() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            loss: 0.3,
            ..Default::default()
        };
        let run = |seed| {
            let mut l = Link::new(cfg.clone(), seed);
            (0..1000).filter(|_| l.send(t0, 100).is_none()).count()
        };
        assert_eq!(run(7), run(7));
        let n = run(7);
        assert!((200..400).contains(&n), "{n}");
    }
}
