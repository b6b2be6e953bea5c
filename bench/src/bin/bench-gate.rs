//! The benchmark regression gate. See `docs/performance.md` and
//! [`piazza_bench::gate`].

use std::path::PathBuf;
use std::process::ExitCode;

use piazza_bench::gate::{self, Base, Options};

const USAGE: &str = "\
bench-gate: compare the benchmarks of the working tree with a base

usage: cargo run --release -p piazza-bench --bin bench-gate -- [options]

  --base REV             compare with this commit (default: the merge base of
                         HEAD and origin/main or main; on main with a clean
                         tree, HEAD~1; env PIAZZA_GATE_BASE overrides)
  --baseline FILE        compare tier 1 with a committed baseline instead
  --tier 1|2             run one tier only (default: both)
  --json FILE            write the report here (default target/bench-gate/report.json)
  --jobs N               parallel callgrind processes (default 2)
  --measurement-time S   tier 2 criterion seconds per benchmark (default 1.0)
  --warm-up-time S       tier 2 criterion warm-up seconds (default 0.3)
  --record-baseline FILE only count the working tree's tier-1 benchmarks and
                         write them as the committed baseline (bench/baseline.json)
  --work DIR             checkouts, callgrind and criterion output (default
                         target/bench-gate)
  --keep-worktree        leave the base checkout in target/bench-gate/base-src
  --reuse-counts         take tier-1 counts of byte-identical executables from
                         an earlier run in the work dir (CI: the self-test
                         after the gate) instead of re-running callgrind
  --self-test            build the candidate with the planted slowdown and
                         check the gate fails (tiers 1+2 at 2x, tier 1 at +15 %)

exit status: 0 pass (self-test: the gate failed as it must), 1 regression
(self-test: the gate missed a planted slowdown), 2 the gate could not run";

fn main() -> ExitCode {
    let mut opts = Options::default();
    let mut self_test = false;
    let mut record: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--base" => opts.base = Base::Rev(value("--base")?),
                "--baseline" => opts.base = Base::Baseline(PathBuf::from(value("--baseline")?)),
                "--tier" => match value("--tier")?.as_str() {
                    "1" => opts.tier2 = false,
                    "2" => opts.tier1 = false,
                    t => return Err(format!("--tier {t}: expected 1 or 2")),
                },
                "--json" => opts.json = Some(PathBuf::from(value("--json")?)),
                "--jobs" => {
                    opts.jobs = value("--jobs")?
                        .parse()
                        .map_err(|_| "--jobs needs a number".to_string())?
                }
                "--measurement-time" => {
                    opts.timing.measurement = value("--measurement-time")?
                        .parse()
                        .map_err(|_| "--measurement-time needs seconds".to_string())?
                }
                "--warm-up-time" => {
                    opts.timing.warm_up = value("--warm-up-time")?
                        .parse()
                        .map_err(|_| "--warm-up-time needs seconds".to_string())?
                }
                "--record-baseline" => record = Some(PathBuf::from(value("--record-baseline")?)),
                "--work" => opts.work = Some(PathBuf::from(value("--work")?)),
                "--keep-worktree" => opts.keep_worktree = true,
                "--reuse-counts" => opts.reuse_counts = true,
                "--self-test" => self_test = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            eprintln!("bench-gate: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    if let Some(path) = record {
        return match gate::record_baseline(&opts, &path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench-gate: could not record the baseline: {e}");
                ExitCode::from(2)
            }
        };
    }
    if self_test {
        return match gate::self_test(&opts) {
            Ok(st) if st.passed => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("bench-gate: self-test could not run: {e}");
                ExitCode::from(2)
            }
        };
    }
    match gate::run(&opts) {
        Ok(r) if r.fails() => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-gate: could not run: {e}");
            ExitCode::from(2)
        }
    }
}
