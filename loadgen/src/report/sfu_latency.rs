//! The engine's own latency in the report: its SFU latency histogram
//! (`piazza::ForwardLatency`, receive batch to `sendmmsg`, str0m's pacer
//! included) over the measurement window, next to the end-to-end figure,
//! which adds two kernel hops and the clients.

use std::time::Duration;

use serde::Serialize;

use crate::metrics::EngineSample;

/// Percentiles of the engine's SFU-added latency in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SfuLatencyReport {
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Forwarded packets in the histogram.
    pub packets: u64,
    /// Forwarded packets whose receive time the engine lost (not in the
    /// histogram).
    pub untracked: u64,
    /// Seconds the histogram covers: the window, plus the time between the
    /// engine counter sample it starts from and the window's opening (at
    /// most one time-series bucket).
    pub covered_s: f64,
}

/// The engine's histogram over the window from the counter samples of a
/// run (`RunOutcome::engine_samples`): from the last sample taken at or
/// before the window opened (`elapsed - measured` into the run) to the
/// last sample. `None` when the target exports no histogram (Janus, the
/// in-process simulator) or nothing was measured.
pub fn from_samples(
    samples: &[EngineSample],
    measured: Duration,
    elapsed: Duration,
) -> Option<SfuLatencyReport> {
    if measured.is_zero() {
        return None;
    }
    let end = samples.last()?;
    let opened = elapsed.saturating_sub(measured);
    let start = samples
        .iter()
        .rev()
        .find(|s| s.t <= opened)
        .or(samples.first())?;
    let h = end.sfu_latency.since(&start.sfu_latency);
    if h.count() == 0 {
        return None;
    }
    let us = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6);
    Some(SfuLatencyReport {
        p50_us: us(h.quantile(0.5)),
        p99_us: us(h.quantile(0.99)),
        p999_us: us(h.quantile(0.999)),
        mean_us: us(h.mean()),
        packets: h.count(),
        untracked: end
            .latency_untracked
            .saturating_sub(start.latency_untracked),
        covered_s: end.t.saturating_sub(start.t).as_secs_f64(),
    })
}

/// The terminal summary's row text.
pub fn summary_text(r: &SfuLatencyReport) -> String {
    format!(
        "engine only (receive batch to sendmmsg): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, mean {:.3} ms ({} packets{})",
        r.p50_us / 1000.0,
        r.p99_us / 1000.0,
        r.p999_us / 1000.0,
        r.mean_us / 1000.0,
        r.packets,
        if r.untracked > 0 {
            format!(", {} untracked", r.untracked)
        } else {
            String::new()
        }
    )
}

/// One table row for the HTML report (`<tr>` with a label cell and a
/// value cell); empty when there is no figure.
pub fn html_row(r: Option<&SfuLatencyReport>) -> String {
    match r {
        None => String::new(),
        Some(r) => format!(
            "<tr><th>SFU-added latency (engine)</th><td>p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms ({} packets, receive batch to sendmmsg)</td></tr>",
            r.p50_us / 1000.0,
            r.p99_us / 1000.0,
            r.p999_us / 1000.0,
            r.packets
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: u64, latencies_us: &[u64]) -> EngineSample {
        let mut s = EngineSample {
            t: Duration::from_secs(t_s),
            ..Default::default()
        };
        for &l in latencies_us {
            s.sfu_latency.record(Duration::from_micros(l));
        }
        s
    }

    #[test]
    fn the_window_starts_at_the_sample_before_it_opened() {
        // Warm-up latencies of 5 ms, then 100 us in the window (opened at 2.5 s).
        let before = sample(2, &[5_000; 50]);
        let mut end = before;
        for _ in 0..1000 {
            end.sfu_latency.record(Duration::from_micros(95));
        }
        end.t = Duration::from_secs(10);
        let samples = [sample(0, &[]), sample(1, &[5_000; 10]), before, end];
        let r = from_samples(
            &samples,
            Duration::from_millis(7_500),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.packets, 1000);
        assert!(r.p99_us > 90.0 && r.p99_us <= 100.0, "{r:?}");
        assert_eq!(r.covered_s, 8.0);
        assert!(from_samples(&samples, Duration::ZERO, Duration::from_secs(10)).is_none());
        assert!(
            from_samples(
                &[sample(0, &[]), sample(9, &[])],
                Duration::from_secs(5),
                Duration::from_secs(9)
            )
            .is_none(),
            "nothing recorded: no figure"
        );
        assert!(summary_text(&r).contains("p99 0.1"), "{}", summary_text(&r));
        assert!(html_row(Some(&r)).starts_with("<tr>"));
        assert!(html_row(None).is_empty());
    }
}
