//! The SFU process's memory over the measurement window: resident set and
//! heap at its start and end and their trend, from the engine samples
//! taken every bucket ([`EngineSample::rss_bytes`], [`EngineSample::heap_bytes`]).
//! A soak (a long `--duration`) reads its leak check from here: after the
//! warm-up both should stay flat.

use std::time::Duration;

use serde::Serialize;

use crate::metrics::EngineSample;

/// Memory of the SFU's process over the window.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct MemoryReport {
    /// Whose memory: the embedded engine's process holds the clients too.
    pub scope: String,
    /// Samples in the window.
    pub samples: usize,
    /// Resident set at the window's first sample, MiB.
    pub rss_mb_start: f64,
    /// Resident set at the last sample, MiB.
    pub rss_mb_end: f64,
    /// Largest resident set sampled in the window, MiB.
    pub rss_mb_max: f64,
    /// Least-squares trend of the resident set over the window, MiB per
    /// hour.
    pub rss_trend_mb_per_h: f64,
    /// Heap in use at the window's first sample, MiB (`null`: not known
    /// for this SFU).
    pub heap_mb_start: Option<f64>,
    /// Heap in use at the last sample, MiB.
    pub heap_mb_end: Option<f64>,
    /// Least-squares trend of the heap over the window, MiB per hour.
    pub heap_trend_mb_per_h: Option<f64>,
    /// Heap at the end divided by the participants present, KiB (an upper
    /// bound of the engine's share when the process holds the clients).
    pub heap_kb_per_participant: Option<f64>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The window is the last `measured` of a run `elapsed` long; `None` when
/// it holds fewer than two samples with a resident set.
pub fn from_samples(
    samples: &[EngineSample],
    measured: Duration,
    elapsed: Duration,
    participants: usize,
    scope: &str,
) -> Option<MemoryReport> {
    let from = elapsed.saturating_sub(measured);
    let w: Vec<&EngineSample> = samples
        .iter()
        .filter(|s| s.t >= from && s.t <= elapsed && s.rss_bytes > 0)
        .collect();
    if measured.is_zero() || w.len() < 2 {
        return None;
    }
    let rss: Vec<(f64, f64)> = w
        .iter()
        .map(|s| (s.t.as_secs_f64(), s.rss_bytes as f64 / MIB))
        .collect();
    let heap: Vec<(f64, f64)> = w
        .iter()
        .filter(|s| s.heap_bytes > 0)
        .map(|s| (s.t.as_secs_f64(), s.heap_bytes as f64 / MIB))
        .collect();
    let heap_known = heap.len() == w.len();
    let per_hour = |points: &[(f64, f64)]| slope(points) * 3600.0;
    Some(MemoryReport {
        scope: scope.to_string(),
        samples: w.len(),
        rss_mb_start: rss[0].1,
        rss_mb_end: rss[rss.len() - 1].1,
        rss_mb_max: rss.iter().map(|p| p.1).fold(0.0, f64::max),
        rss_trend_mb_per_h: per_hour(&rss),
        heap_mb_start: heap_known.then(|| heap[0].1),
        heap_mb_end: heap_known.then(|| heap[heap.len() - 1].1),
        heap_trend_mb_per_h: heap_known.then(|| per_hour(&heap)),
        heap_kb_per_participant: (heap_known && participants > 0)
            .then(|| heap[heap.len() - 1].1 * 1024.0 / participants as f64),
    })
}

/// Least-squares slope of `points` (x, y); 0 when x does not vary.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: u64, rss_mib: u64, heap_mib: u64) -> EngineSample {
        EngineSample {
            t: Duration::from_secs(t_s),
            rss_bytes: rss_mib << 20,
            heap_bytes: heap_mib << 20,
            ..Default::default()
        }
    }

    #[test]
    fn flat_after_warm_up_and_a_leak_are_told_apart() {
        // Warm-up growth before the window (t < 10 s) does not count.
        let flat: Vec<EngineSample> = (0..=40)
            .map(|t| sample(t, if t < 10 { 20 + t } else { 30 }, 12))
            .collect();
        let m = from_samples(
            &flat,
            Duration::from_secs(30),
            Duration::from_secs(40),
            10,
            "x",
        )
        .unwrap();
        assert_eq!(m.samples, 31);
        assert_eq!(
            (m.rss_mb_start, m.rss_mb_end, m.rss_mb_max),
            (30.0, 30.0, 30.0)
        );
        assert_eq!(m.rss_trend_mb_per_h, 0.0);
        assert_eq!(m.heap_trend_mb_per_h, Some(0.0));
        assert_eq!(m.heap_kb_per_participant, Some(12.0 * 1024.0 / 10.0));

        // 1 MiB more heap every 10 s: 360 MiB per hour.
        let leak: Vec<EngineSample> = (0..=40).map(|t| sample(t, 30, 12 + t / 10)).collect();
        let m = from_samples(
            &leak,
            Duration::from_secs(30),
            Duration::from_secs(40),
            10,
            "x",
        )
        .unwrap();
        let trend = m.heap_trend_mb_per_h.unwrap();
        assert!((trend - 360.0).abs() < 60.0, "{trend}");
    }

    #[test]
    fn an_unknown_heap_or_no_window_reports_nothing_made_up() {
        let s: Vec<EngineSample> = (0..=5).map(|t| sample(t, 30, 0)).collect();
        let m = from_samples(&s, Duration::from_secs(5), Duration::from_secs(5), 3, "x").unwrap();
        assert_eq!(m.heap_mb_end, None);
        assert_eq!(m.heap_kb_per_participant, None);
        assert!(from_samples(&s, Duration::ZERO, Duration::from_secs(5), 3, "x").is_none());
        let none: Vec<EngineSample> = (0..=5).map(|t| sample(t, 0, 0)).collect();
        assert!(
            from_samples(
                &none,
                Duration::from_secs(5),
                Duration::from_secs(5),
                3,
                "x"
            )
            .is_none()
        );
    }
}
