//! Verdicts, the printed table and the JSON report. Pure functions of the
//! measurements, so the rules are unit-tested.

use serde::{Deserialize, Serialize};

use crate::workload::Class;

/// Tier 1: fail when one benchmark's instruction count grows more than this.
pub const TIER1_BENCH_LIMIT: f64 = 1.25;
/// Tier 1: fail when the geometric mean of the hot-path ratios grows more
/// than this.
pub const TIER1_GEOMEAN_LIMIT: f64 = 1.08;
/// Tier 1: changes smaller than this are reported as unchanged (callgrind
/// counts repeat to ~0.1 % here; see docs/performance.md).
pub const TIER1_NOISE: f64 = 0.01;
/// Tier 2: a wall-clock slowdown beyond this is suspected...
pub const TIER2_LIMIT: f64 = 1.5;
/// ...and fails only when this many further paired rounds confirm it.
pub const TIER2_CONFIRMATIONS: usize = 2;
/// Tier 2: smaller wall-clock changes than this are not even reported.
pub const TIER2_NOISE: f64 = 0.10;

/// One benchmark's comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// `group/name`.
    pub bench: String,
    /// What the gate does with it.
    pub class: Class,
    /// Base: instructions (tier 1) or nanoseconds (tier 2) per iteration.
    pub base: Option<f64>,
    /// Candidate, same unit.
    pub candidate: Option<f64>,
    /// candidate / base (tier 2: of the deciding round).
    pub ratio: Option<f64>,
    /// Tier 2: the ratio of every paired round run for this benchmark.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<f64>,
    /// `ok`, `faster`, `slower`, `FAIL`, `ref`, `new`, `gone`, ...
    pub verdict: String,
    /// Whether this row fails the gate.
    pub fails: bool,
}

/// One tier's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierReport {
    /// `instructions per iteration (callgrind)` or `ns per iteration (criterion median)`.
    pub unit: String,
    /// The rows, in registry order.
    pub rows: Vec<Row>,
    /// Tier 1: geometric mean of the hot-path ratios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geomean: Option<f64>,
    /// Whether the tier fails the gate.
    pub fails: bool,
    /// One line on what was compared with what.
    pub note: String,
}

/// The whole gate run, as written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateReport {
    /// `pass` or `fail`.
    pub verdict: String,
    /// What the base is (commit, or the committed baseline file).
    pub base: String,
    /// What the candidate is.
    pub candidate: String,
    /// Tier 1, when run.
    pub tier1: Option<TierReport>,
    /// Tier 2, when run.
    pub tier2: Option<TierReport>,
    /// Seconds the run took.
    pub seconds: f64,
}

impl GateReport {
    /// Whether any tier fails.
    pub fn fails(&self) -> bool {
        self.tier1.as_ref().is_some_and(|t| t.fails) || self.tier2.as_ref().is_some_and(|t| t.fails)
    }
}

/// Compare tier-1 instruction counts: `(bench, class, base, candidate)`.
pub fn tier1(measured: Vec<(String, Class, Option<f64>, Option<f64>)>, note: String) -> TierReport {
    let mut rows = Vec::new();
    let mut logs = Vec::new();
    for (bench, class, base, candidate) in measured {
        let ratio = match (base, candidate) {
            (Some(b), Some(c)) if b > 0.0 => Some(c / b),
            _ => None,
        };
        let (verdict, fails) = match (class, ratio) {
            (Class::Reference | Class::Report, _) => ("ref".to_string(), false),
            (_, None) if base.is_none() => ("new".to_string(), false),
            (_, None) => ("gone".to_string(), false),
            (_, Some(r)) => {
                if class == Class::HotPath {
                    logs.push(r.ln());
                }
                if r > TIER1_BENCH_LIMIT {
                    (format!("FAIL (> {TIER1_BENCH_LIMIT:.2})"), true)
                } else if r > 1.0 + TIER1_NOISE {
                    ("slower".to_string(), false)
                } else if r < 1.0 - TIER1_NOISE {
                    ("faster".to_string(), false)
                } else {
                    ("ok".to_string(), false)
                }
            }
        };
        rows.push(Row {
            bench,
            class,
            base,
            candidate,
            ratio,
            rounds: Vec::new(),
            verdict,
            fails,
        });
    }
    let geomean = (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp());
    let fails = rows.iter().any(|r| r.fails) || geomean.is_some_and(|g| g > TIER1_GEOMEAN_LIMIT);
    TierReport {
        unit: "instructions per iteration (callgrind)".into(),
        rows,
        geomean,
        fails,
        note,
    }
}

/// Tier 2's verdict for one benchmark from its paired rounds' ratios
/// (the first round, then the confirmation rounds it triggered).
pub fn tier2_verdict(rounds: &[f64]) -> (String, bool) {
    let Some(&first) = rounds.first() else {
        return ("not run".into(), false);
    };
    if first > TIER2_LIMIT {
        let confirmed = rounds[1..].iter().filter(|&&r| r > TIER2_LIMIT).count();
        if confirmed >= TIER2_CONFIRMATIONS {
            return (
                format!(
                    "FAIL (> {TIER2_LIMIT}x in {} of {} rounds)",
                    confirmed + 1,
                    rounds.len()
                ),
                true,
            );
        }
        return (
            format!(
                "slower, not confirmed ({confirmed} of {} re-runs)",
                rounds.len() - 1
            ),
            false,
        );
    }
    if first > 1.0 + TIER2_NOISE {
        ("slower? (below the 1.5x limit)".into(), false)
    } else if first < 1.0 - TIER2_NOISE {
        ("faster?".into(), false)
    } else {
        ("ok".into(), false)
    }
}

fn fmt_num(v: Option<f64>, decimals: usize) -> String {
    let Some(v) = v else { return "-".into() };
    if decimals > 0 {
        return format!("{v:.decimals$}");
    }
    let s = format!("{:.0}", v);
    // Thousands separators: counts are easier to compare by eye.
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c.is_ascii_digit() {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table, as printed.
pub fn render(title: &str, t: &TierReport) -> String {
    let mut s = format!("{title}: {}\n  {}\n", t.unit, t.note);
    let decimals = if t.unit.starts_with("ns") { 1 } else { 0 };
    s.push_str(&format!(
        "  {:<38} {:>15} {:>15} {:>7}  {}\n",
        "bench", "base", "candidate", "ratio", "verdict"
    ));
    for r in &t.rows {
        let mut verdict = r.verdict.clone();
        if r.rounds.len() > 1 {
            let rounds: Vec<String> = r.rounds.iter().map(|x| format!("{x:.2}")).collect();
            verdict.push_str(&format!(" [rounds {}]", rounds.join(", ")));
        }
        s.push_str(&format!(
            "  {:<38} {:>15} {:>15} {:>7}  {}\n",
            r.bench,
            fmt_num(r.base, decimals),
            fmt_num(r.candidate, decimals),
            fmt_num(r.ratio, 3),
            verdict
        ));
    }
    if let Some(g) = t.geomean {
        let v = if g > TIER1_GEOMEAN_LIMIT {
            format!("FAIL (> {TIER1_GEOMEAN_LIMIT:.2})")
        } else {
            format!("ok (limit {TIER1_GEOMEAN_LIMIT:.2})")
        };
        s.push_str(&format!(
            "  {:<38} {:>15} {:>15} {:>7.3}  {}\n",
            "geomean of hot-path ratios", "", "", g, v
        ));
    }
    s.push_str(&format!(
        "  tier verdict: {}\n",
        if t.fails { "FAIL" } else { "pass" }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(b: &str, class: Class, base: f64, cand: f64) -> (String, Class, Option<f64>, Option<f64>) {
        (b.into(), class, Some(base), Some(cand))
    }

    #[test]
    fn one_benchmark_over_25_percent_fails_tier1() {
        let t = tier1(
            vec![
                m("a", Class::HotPath, 100.0, 126.0),
                m("b", Class::HotPath, 100.0, 100.0),
            ],
            String::new(),
        );
        assert!(t.fails);
        assert!(t.rows[0].fails);
    }

    #[test]
    fn geomean_over_8_percent_fails_tier1_though_no_benchmark_does() {
        let rows = (0..5)
            .map(|i| m(&format!("f{i}"), Class::HotPath, 100.0, 115.0))
            .chain((0..2).map(|i| m(&format!("d{i}"), Class::HotPath, 100.0, 100.0)))
            .collect();
        let t = tier1(rows, String::new());
        assert!(t.rows.iter().all(|r| !r.fails));
        assert!(t.geomean.unwrap() > 1.08);
        assert!(t.fails);
    }

    #[test]
    fn control_and_reference_rows_stay_out_of_the_geomean() {
        let t = tier1(
            vec![
                m("hot", Class::HotPath, 100.0, 100.0),
                m("ctl", Class::Control, 100.0, 120.0),
                m("ref", Class::Reference, 100.0, 300.0),
            ],
            String::new(),
        );
        assert_eq!(t.geomean, Some(1.0));
        assert!(!t.fails);
        assert_eq!(t.rows[2].verdict, "ref");
    }

    #[test]
    fn tier2_fails_only_when_two_reruns_confirm() {
        assert!(tier2_verdict(&[2.0, 1.9, 2.1]).1);
        assert!(!tier2_verdict(&[2.0, 1.9, 1.2]).1);
        assert!(!tier2_verdict(&[2.0]).1);
        assert!(!tier2_verdict(&[1.4]).1);
    }

    #[test]
    fn counts_print_with_separators() {
        assert_eq!(fmt_num(Some(1_234_567.0), 0), "1,234,567");
        assert_eq!(fmt_num(Some(999.0), 0), "999");
    }
}
