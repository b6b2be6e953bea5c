//! One-way latency in an HDR histogram (microseconds, 3 significant digits
//! from 1 us to 60 s), mergeable across driver threads and runs.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value kept exactly enough (larger ones saturate here).
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

/// Percentiles of a histogram, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Samples recorded.
    pub samples: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::with_precision(3)
    }
}

impl LatencyHistogram {
    /// 3 significant digits (what the report uses).
    pub fn new() -> Self {
        Self::default()
    }

    /// `digits` significant digits (2 for the cheap per-second series).
    pub fn with_precision(digits: u8) -> Self {
        // 1..=60 s with 1..=5 significant digits are valid bounds for
        // hdrhistogram; only a `digits` above 5 could fail.
        let hist = Histogram::new_with_bounds(1, MAX_US, digits.clamp(1, 5))
            .expect("1 us..60 s with 1-5 significant digits is a valid histogram");
        LatencyHistogram { hist }
    }

    /// Record one sample (0 is recorded as 1 us, beyond 60 s as 60 s).
    pub fn record(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, MAX_US));
    }

    /// Add every sample of `other` (histograms of other threads or runs).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Both have the same bounds, so adding cannot go out of range; if
        // it ever did, fall back to recording the values one by one.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The value at quantile `q` (0..=1), microseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    /// The usual percentiles.
    pub fn percentiles(&self) -> Percentiles {
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.hist.max(),
            mean: self.hist.mean(),
            samples: self.hist.len(),
        }
    }

    /// The distribution in log-spaced buckets for plotting: (upper bound
    /// in us, count), `per_decade` buckets per power of ten, empty buckets
    /// at both ends left out.
    pub fn log_buckets(&self, per_decade: u32) -> Vec<(u64, u64)> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        let per_decade = per_decade.max(1) as f64;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for v in self.hist.iter_recorded() {
            let value = v.value_iterated_to().max(1);
            // Bucket k covers (10^((k-1)/n), 10^(k/n)].
            let k = ((value as f64).log10() * per_decade).ceil();
            let upper = 10f64.powf(k / per_decade).round() as u64;
            match out.last_mut() {
                Some(last) if last.0 == upper => last.1 += v.count_at_value(),
                _ => out.push((upper, v.count_at_value())),
            }
        }
        out
    }
}
