//! The SFU's own latency: a fixed-bucket histogram of the time from a
//! forwarded packet's receive batch to the `sendmmsg` that carried its copy.
//!
//! The shard thread stamps each receive batch once (the `now` it hands to
//! the core, read right after `recvmmsg`); the core remembers that stamp
//! for every packet it writes into a subscriber's slot and gives it back
//! with the datagram that carries the packet
//! ([`ShardCore::poll_transmit_received`]), however long str0m's pacer held
//! it; the socket layer reads the clock once per `sendmmsg` and records
//! the difference for every forwarded datagram of the batch here. Nothing
//! allocates: the buckets are a fixed array.
//!
//! [`ShardCore::poll_transmit_received`]: crate::core::ShardCore::poll_transmit_received

use std::time::Duration;

/// Upper bounds (inclusive, Prometheus `le`) of the buckets, nanoseconds;
/// one more bucket holds everything above the last bound. Steps of 10 us
/// up to 100 us, then about a fifth of each decade's step.
const BOUNDS_NS: [u64; 59] = {
    const US: [u64; 59] = [
        10, 20, 30, 40, 50, 60, 70, 80, 90, 100, //
        120, 140, 160, 180, 200, //
        250, 300, 350, 400, 450, 500, //
        600, 700, 800, 900, 1_000, //
        1_200, 1_400, 1_600, 1_800, 2_000, //
        2_500, 3_000, 3_500, 4_000, 4_500, 5_000, //
        6_000, 7_000, 8_000, 9_000, 10_000, //
        12_500, 15_000, 17_500, 20_000, //
        25_000, 30_000, 40_000, 50_000, //
        75_000, 100_000, //
        150_000, 200_000, 300_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
    ];
    let mut ns = [0u64; 59];
    let mut i = 0;
    while i < US.len() {
        ns[i] = US[i] * 1_000;
        i += 1;
    }
    ns
};

/// Buckets, the overflow bucket included.
pub const FORWARD_LATENCY_BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Histogram of the SFU-added latency of forwarded packets (see the module
/// docs): counts per fixed bucket, their sum and count. Counters only go
/// up; [`ForwardLatency::since`] gives the histogram of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLatency {
    buckets: [u64; FORWARD_LATENCY_BUCKETS],
    sum_ns: u64,
    count: u64,
}

impl Default for ForwardLatency {
    fn default() -> Self {
        ForwardLatency {
            buckets: [0; FORWARD_LATENCY_BUCKETS],
            sum_ns: 0,
            count: 0,
        }
    }
}

impl ForwardLatency {
    /// The buckets' upper bounds (inclusive), nanoseconds; the last bucket
    /// (index `bounds_ns().len()`) has none.
    pub fn bounds_ns() -> &'static [u64] {
        &BOUNDS_NS
    }

    /// Record one packet's latency.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.count += 1;
    }

    /// Packets recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of their latencies.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// Mean latency; `None` with no packets.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.sum_ns / self.count))
    }

    /// Packets per bucket (`bounds_ns().len() + 1` of them).
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// Add another histogram's counts (another shard's).
    pub fn merge(&mut self, o: &ForwardLatency) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
        self.count += o.count;
    }

    /// What was recorded after `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &ForwardLatency) -> ForwardLatency {
        let mut d = *self;
        for (a, b) in d.buckets.iter_mut().zip(earlier.buckets.iter()) {
            *a = a.saturating_sub(*b);
        }
        d.sum_ns = d.sum_ns.saturating_sub(earlier.sum_ns);
        d.count = d.count.saturating_sub(earlier.count);
        d
    }

    /// Rebuild a histogram from cumulative counts per upper bound (a
    /// Prometheus histogram's `_bucket` series, `le` in nanoseconds, `None`
    /// for `+Inf`), its sum and count. Bounds that are not this histogram's
    /// are ignored; `None` when one of its bounds is missing.
    pub fn from_cumulative(
        cumulative: &[(Option<u64>, u64)],
        sum: Duration,
        count: u64,
    ) -> Option<ForwardLatency> {
        let mut h = ForwardLatency::default();
        let mut prev = 0u64;
        for (i, b) in BOUNDS_NS.iter().map(|&b| Some(b)).chain([None]).enumerate() {
            let c = cumulative.iter().find(|(le, _)| *le == b)?.1;
            h.buckets[i] = c.saturating_sub(prev);
            prev = c;
        }
        h.sum_ns = u64::try_from(sum.as_nanos()).unwrap_or(u64::MAX);
        h.count = count;
        Some(h)
    }

    /// The latency below which a fraction `q` (0..=1) of the packets lie,
    /// interpolated linearly inside its bucket (the overflow bucket answers
    /// its lower bound, 5 s); `None` with no packets.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lo = if i == 0 { 0 } else { BOUNDS_NS[i - 1] };
                let Some(&hi) = BOUNDS_NS.get(i) else {
                    return Some(Duration::from_nanos(lo));
                };
                let frac = (rank - below as f64) / n as f64;
                return Some(Duration::from_nanos(
                    lo + ((hi - lo) as f64 * frac).round() as u64,
                ));
            }
            below += n;
        }
        Some(Duration::from_nanos(*BOUNDS_NS.last().unwrap_or(&0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_sorted() {
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        let mut h = ForwardLatency::default();
        h.record(us(10)); // le 10 us
        h.record(Duration::from_nanos(10_001)); // le 20 us
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(9)); // overflow
        assert_eq!(h.buckets()[0], 2);
        assert_eq!(h.buckets()[1], 1);
        assert_eq!(h.buckets()[FORWARD_LATENCY_BUCKETS - 1], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), Duration::from_nanos(9_000_020_001));
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let mut h = ForwardLatency::default();
        assert_eq!(h.quantile(0.5), None);
        // 100 packets between 200 and 250 us, one at 3 ms.
        for _ in 0..100 {
            h.record(us(230));
        }
        h.record(us(2_800));
        let p50 = h.quantile(0.5).unwrap();
        assert!(p50 > us(200) && p50 <= us(250), "{p50:?}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 > us(200) && p99 <= us(250), "{p99:?}");
        let max = h.quantile(1.0).unwrap();
        assert!(max > us(2_500) && max <= us(3_000), "{max:?}");
        h.record(Duration::from_secs(6));
        assert_eq!(h.quantile(1.0), Some(Duration::from_secs(5)));
    }

    #[test]
    fn windows_and_merges_and_a_prometheus_round_trip() {
        let mut a = ForwardLatency::default();
        a.record(us(50));
        let start = a;
        a.record(us(700));
        a.record(us(900));
        let w = a.since(&start);
        assert_eq!(w.count(), 2);
        assert_eq!(w.sum(), us(1_600));
        let mut m = w;
        m.merge(&start);
        assert_eq!(m, a);
        // Cumulative series as /metrics writes them.
        let mut cum = Vec::new();
        let mut c = 0;
        for (i, n) in a.buckets().iter().enumerate() {
            c += n;
            cum.push((BOUNDS_NS.get(i).copied(), c));
        }
        let back = ForwardLatency::from_cumulative(&cum, a.sum(), a.count()).unwrap();
        assert_eq!(back, a);
        assert!(ForwardLatency::from_cumulative(&cum[1..], a.sum(), a.count()).is_none());
    }
}
