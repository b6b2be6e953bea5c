//! Service level objectives: thresholds on the report that make the exit
//! code non-zero when violated (`--slo p99_ms=5,loss=0.001,freezes=0`).

use serde::Serialize;

use crate::error::LoadgenError;
use crate::report::Report;

/// One threshold the report can be held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    P50Ms,
    P90Ms,
    P99Ms,
    P999Ms,
    MaxMs,
    Loss,
    JitterMs,
    Freezes,
    FreezeMs,
    JoinP99Ms,
    FirstFrameP99Ms,
    JoinFailed,
    MinEgressPpsPerCore,
    PeakRssMb,
    E2eeFailures,
}

const KEYS: &[(&str, Key)] = &[
    ("p50_ms", Key::P50Ms),
    ("p90_ms", Key::P90Ms),
    ("p99_ms", Key::P99Ms),
    ("p999_ms", Key::P999Ms),
    ("max_ms", Key::MaxMs),
    ("loss", Key::Loss),
    ("jitter_ms", Key::JitterMs),
    ("freezes", Key::Freezes),
    ("freeze_ms", Key::FreezeMs),
    ("join_p99_ms", Key::JoinP99Ms),
    ("first_frame_p99_ms", Key::FirstFrameP99Ms),
    ("join_failed", Key::JoinFailed),
    ("min_egress_pps_per_core", Key::MinEgressPpsPerCore),
    ("peak_rss_mb", Key::PeakRssMb),
    ("e2ee_failures", Key::E2eeFailures),
];

/// Parsed thresholds, in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slo {
    thresholds: Vec<(String, Key, f64)>,
}

/// The outcome in the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SloReport {
    /// No threshold was violated (true when there were none).
    pub passed: bool,
    /// One sentence per violated threshold.
    pub violations: Vec<String>,
}

impl Slo {
    /// Parse `key=value[,key=value...]`. Every key is an upper bound except
    /// `min_egress_pps_per_core`, a lower bound.
    pub fn parse(spec: &str) -> Result<Slo, LoadgenError> {
        let mut thresholds = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| LoadgenError::InvalidSlo(format!("`{part}` is not key=value")))?;
            let name = name.trim();
            let key = KEYS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, k)| *k)
                .ok_or_else(|| {
                    let known: Vec<&str> = KEYS.iter().map(|(n, _)| *n).collect();
                    LoadgenError::InvalidSlo(format!(
                        "unknown threshold `{name}`; known: {}",
                        known.join(", ")
                    ))
                })?;
            let value: f64 = value.trim().parse().map_err(|_| {
                LoadgenError::InvalidSlo(format!("`{part}`: the value is not a number"))
            })?;
            if !value.is_finite() || value < 0.0 {
                return Err(LoadgenError::InvalidSlo(format!(
                    "`{part}`: use a finite value of 0 or more"
                )));
            }
            thresholds.push((name.to_string(), key, value));
        }
        if thresholds.is_empty() {
            return Err(LoadgenError::InvalidSlo("no thresholds given".into()));
        }
        Ok(Slo { thresholds })
    }

    /// Check the report against every threshold.
    pub fn evaluate(&self, r: &Report) -> SloReport {
        let mut violations = Vec::new();
        let ms = |us: u64| us as f64 / 1000.0;
        let no_latency = r.latency_us.samples == 0;
        for (name, key, limit) in &self.thresholds {
            let (what, value, unit, lower_bound) = match key {
                Key::P50Ms => ("latency p50", ms(r.latency_us.p50), " ms", false),
                Key::P90Ms => ("latency p90", ms(r.latency_us.p90), " ms", false),
                Key::P99Ms => ("latency p99", ms(r.latency_us.p99), " ms", false),
                Key::P999Ms => ("latency p99.9", ms(r.latency_us.p999), " ms", false),
                Key::MaxMs => ("latency max", ms(r.latency_us.max), " ms", false),
                Key::Loss => ("loss ratio", r.media.loss_ratio, "", false),
                Key::JitterMs => ("jitter", r.media.jitter_ms, " ms", false),
                Key::Freezes => ("freezes", r.media.freezes as f64, "", false),
                Key::FreezeMs => ("total freeze time", r.media.freeze_ms_total, " ms", false),
                Key::JoinP99Ms => ("join p99", r.join.p99_ms, " ms", false),
                Key::FirstFrameP99Ms => {
                    ("first frame p99", r.join.first_frame_p99_ms, " ms", false)
                }
                Key::JoinFailed => ("failed joins", r.join.failed as f64, "", false),
                Key::MinEgressPpsPerCore => (
                    "egress packets per engine core-second",
                    r.engine.egress_pps_per_core,
                    "",
                    true,
                ),
                Key::PeakRssMb => ("peak RSS", r.engine.peak_rss_mb, " MB", false),
                Key::E2eeFailures => (
                    "payloads that did not decrypt",
                    r.media.e2ee.as_ref().map_or(0, |e| e.failures) as f64,
                    "",
                    false,
                ),
            };
            let latency_key = matches!(
                key,
                Key::P50Ms | Key::P90Ms | Key::P99Ms | Key::P999Ms | Key::MaxMs
            );
            if latency_key && no_latency {
                violations.push(format!("{name}={limit}: no latency samples were measured"));
                continue;
            }
            let violated = if lower_bound {
                value < *limit
            } else {
                value > *limit
            };
            if violated {
                let rel = if lower_bound { "below" } else { "above" };
                violations.push(format!(
                    "{name}={limit}: {what} was {}{unit}, {rel} the threshold",
                    fmt_value(value)
                ));
            }
        }
        SloReport {
            passed: violations.is_empty(),
            violations,
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s = Slo::parse("p99_ms=5, loss=0.001,freezes=0").unwrap();
        assert_eq!(s.thresholds.len(), 3);
        assert!(
            Slo::parse("p98_ms=5")
                .unwrap_err()
                .to_string()
                .contains("p99_ms")
        );
        assert!(Slo::parse("p99_ms").is_err());
        assert!(Slo::parse("p99_ms=x").is_err());
        assert!(Slo::parse("").is_err());
    }
}
