//! Tier 2: wall clock, from criterion's own estimates, in paired rounds.
//!
//! A round runs the base and the candidate executables one after the other
//! (the order alternates from round to round, so drift of the machine's
//! speed during a round cancels over rounds), each with `CRITERION_HOME` set
//! to a directory of its own, and reads the median per iteration from
//! `<home>/<group>/<name>/new/estimates.json`. A benchmark slower by more
//! than [`TIER2_LIMIT`] in the first round is re-run in further rounds and
//! fails only if [`TIER2_CONFIRMATIONS`] of them confirm it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::gate::build::BenchExe;
use crate::gate::report::{TIER2_CONFIRMATIONS, TIER2_LIMIT};

/// Criterion settings of one side's run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Seconds of warm-up per benchmark.
    pub warm_up: f64,
    /// Seconds of measurement per benchmark.
    pub measurement: f64,
    /// Samples per benchmark.
    pub samples: usize,
}

/// Run `ids` on one executable; median ns per iteration by id.
pub fn criterion_run(
    exe: &BenchExe,
    ids: &[String],
    home: &Path,
    t: Timing,
) -> Result<BTreeMap<String, f64>, String> {
    for id in ids {
        let _ = std::fs::remove_dir_all(home.join(id));
    }
    std::fs::create_dir_all(home).map_err(|e| format!("{}: {e}", home.display()))?;
    let filter = format!(
        "^({})$",
        ids.iter()
            .map(|i| regex_escape(i))
            .collect::<Vec<_>>()
            .join("|")
    );
    let log = home.join(format!("{}.log", ids.join("+").replace('/', "-")));
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
    let status = Command::new(&exe.path)
        .arg("--bench")
        .arg(&filter)
        .args(["--warm-up-time", &t.warm_up.to_string()])
        .args(["--measurement-time", &t.measurement.to_string()])
        .args(["--sample-size", &t.samples.to_string()])
        .arg("--noplot")
        .env("CRITERION_HOME", home)
        .envs(exe.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", exe.path.display()))?;
    if !status.success() {
        return Err(format!(
            "criterion run of {} failed; see {}",
            exe.label,
            log.display()
        ));
    }
    let mut out = BTreeMap::new();
    for id in ids {
        let file = home.join(id).join("new").join("estimates.json");
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let median = v["median"]["point_estimate"]
            .as_f64()
            .ok_or_else(|| format!("{}: no median", file.display()))?;
        out.insert(id.clone(), median);
    }
    Ok(out)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// Paired rounds: per id, the base's and candidate's medians of the first
/// round and the candidate/base ratio of every round run for it.
pub struct Rounds {
    /// First-round medians (base, candidate), ns per iteration.
    pub first: BTreeMap<String, (f64, f64)>,
    /// Ratios of every round the benchmark took part in.
    pub ratios: BTreeMap<String, Vec<f64>>,
    /// Rounds run.
    pub rounds: usize,
}

/// Run the paired rounds. Within a round each benchmark runs on both sides
/// back to back (a few seconds apart, so the machine's drift hits both
/// alike), the side that goes first alternating from benchmark to benchmark
/// and from round to round.
pub fn paired_rounds(
    base: &BenchExe,
    candidate: &BenchExe,
    ids: &[String],
    work: &Path,
    t: Timing,
) -> Result<Rounds, String> {
    let mut first = BTreeMap::new();
    let mut ratios: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut active: Vec<String> = ids.to_vec();
    let mut round = 0;
    while !active.is_empty() && round <= TIER2_CONFIRMATIONS {
        round += 1;
        eprintln!(
            "bench-gate: tier 2 round {round}: {} benchmark(s), base and candidate paired",
            active.len()
        );
        let mut still = Vec::new();
        for (k, id) in active.iter().enumerate() {
            let one = std::slice::from_ref(id);
            let dir = |side: &str| work.join(format!("round{round}-{side}"));
            let (b, c) = if (round + k) % 2 == 1 {
                let b = criterion_run(base, one, &dir("base"), t)?[id];
                let c = criterion_run(candidate, one, &dir("candidate"), t)?[id];
                (b, c)
            } else {
                let c = criterion_run(candidate, one, &dir("candidate"), t)?[id];
                let b = criterion_run(base, one, &dir("base"), t)?[id];
                (b, c)
            };
            let r = c / b;
            eprintln!(
                "bench-gate: tier 2 round {round} {id:<40} {b:>12.1} ns {c:>12.1} ns {r:>6.2}x"
            );
            if round == 1 {
                first.insert(id.clone(), (b, c));
            }
            ratios.entry(id.clone()).or_default().push(r);
            // Keep confirming only what is still over the limit.
            if r > TIER2_LIMIT {
                still.push(id.clone());
            }
        }
        active = still;
    }
    Ok(Rounds {
        first,
        ratios,
        rounds: round,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_escape_regex_characters() {
        assert_eq!(regex_escape("a/b_1"), "a/b_1");
        assert_eq!(regex_escape("x.y"), "x\\.y");
    }
}
