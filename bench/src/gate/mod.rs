//! The regression gate (`cargo run -p piazza-bench --bin bench-gate`).
//!
//! Two tiers, both comparing a base with a candidate built in the same job:
//!
//! 1. [`tier1`]: instruction counts of the hot-path and control benchmarks
//!    under callgrind. Deterministic: fails on one benchmark growing more
//!    than 25 % or the geometric mean of the hot-path ratios more than 8 %.
//! 2. [`tier2`]: criterion's wall-clock medians in paired, alternating
//!    rounds; fails only when a slowdown beyond 1.5x is confirmed by two
//!    re-runs; smaller changes are reported, never failed (wall clock on a
//!    shared 2-core machine wanders 1.2-3x).
//!
//! The base is the merge base with `main` checked out by `git worktree`, or
//! the committed baseline (`bench/baseline.json`, tier 1 only) when no base
//! can be built. The self-test ([`self_test`]) builds the candidate with
//! the planted slowdown (`--features bench-slowdown`) and checks that the
//! gate fails: both tiers at 2x, tier 1 at +15 %.

pub mod build;
pub mod report;
pub mod tier1;
pub mod tier2;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use build::BenchExe;
use report::{GateReport, Row, TierReport};

use crate::count::Listed;
use crate::workload::Class;

/// What to compare the candidate with.
#[derive(Debug, Clone)]
pub enum Base {
    /// The merge base with main (see [`build::default_base`]).
    Auto,
    /// A commit.
    Rev(String),
    /// A committed baseline file (tier 1 only).
    Baseline(PathBuf),
}

/// How to run the gate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The base.
    pub base: Base,
    /// Run tier 1.
    pub tier1: bool,
    /// Run tier 2.
    pub tier2: bool,
    /// Where to write the JSON report (default `<work>/report.json`).
    pub json: Option<PathBuf>,
    /// Parallel callgrind processes.
    pub jobs: usize,
    /// Working directory for checkouts and outputs (default
    /// `<target>/bench-gate`).
    pub work: Option<PathBuf>,
    /// Tier 2 criterion settings.
    pub timing: tier2::Timing,
    /// Leave the base checkout in place.
    pub keep_worktree: bool,
    /// Reuse tier-1 counts of identical executables from an earlier run
    /// (the self-test after the gate, in CI).
    pub reuse_counts: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            base: Base::Auto,
            tier1: true,
            tier2: true,
            json: None,
            jobs: 2,
            work: None,
            timing: tier2::Timing {
                warm_up: 0.3,
                measurement: 1.0,
                samples: 20,
            },
            keep_worktree: false,
            reuse_counts: false,
        }
    }
}

/// Where the build and the gate's files go.
struct Paths {
    repo: PathBuf,
    target: PathBuf,
    work: PathBuf,
}

fn paths(opts: &Options) -> Result<Paths, String> {
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    let repo = build::repo_root(&cwd).unwrap_or(cwd);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_relative() { repo.join(t) } else { t })
        .unwrap_or_else(|| repo.join("target"));
    let work = opts
        .work
        .clone()
        .unwrap_or_else(|| target.join("bench-gate"));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    Ok(Paths { repo, target, work })
}

fn exe(path: PathBuf, label: &str, env: &[(&str, &str)]) -> Result<BenchExe, String> {
    let benches = build::list(&path)?;
    Ok(BenchExe {
        digest: build::digest(&path),
        path,
        benches,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        label: label.into(),
    })
}

/// Benchmark ids and classes in report order: the candidate's registry,
/// then what only the base has.
fn union(a: &[Listed], b: &[Listed]) -> Vec<(String, Class)> {
    let mut out: Vec<(String, Class)> = a.iter().map(|l| (l.id.clone(), l.class)).collect();
    for l in b {
        if !out.iter().any(|(id, _)| *id == l.id) {
            out.push((l.id.clone(), l.class));
        }
    }
    out
}

fn tier1_ids(benches: &[(String, Class)]) -> Vec<String> {
    benches
        .iter()
        .filter(|(_, c)| tier1::counted(*c))
        .map(|(id, _)| id.clone())
        .collect()
}

fn tier2_ids(benches: &[(String, Class)], base: &BenchExe, cand: &BenchExe) -> Vec<String> {
    benches
        .iter()
        .filter(|(_, c)| matches!(c, Class::HotPath | Class::Control))
        .filter(|(id, _)| {
            base.benches.iter().any(|b| &b.id == id) && cand.benches.iter().any(|b| &b.id == id)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

fn tier1_report(
    benches: &[(String, Class)],
    base: &BTreeMap<String, f64>,
    cand: &BTreeMap<String, f64>,
    note: String,
) -> TierReport {
    let measured = benches
        .iter()
        .filter(|(_, c)| tier1::counted(*c))
        .map(|(id, c)| (id.clone(), *c, base.get(id).copied(), cand.get(id).copied()))
        .collect();
    report::tier1(measured, note)
}

fn tier2_report(benches: &[(String, Class)], rounds: &tier2::Rounds, note: String) -> TierReport {
    let mut rows = Vec::new();
    for (id, class) in benches {
        let Some(r) = rounds.ratios.get(id) else {
            continue;
        };
        let (b, c) = rounds.first[id];
        let (verdict, fails) = report::tier2_verdict(r);
        rows.push(Row {
            bench: id.clone(),
            class: *class,
            base: Some(b),
            candidate: Some(c),
            ratio: r.first().copied(),
            rounds: r.clone(),
            verdict,
            fails,
        });
    }
    let fails = rows.iter().any(|r| r.fails);
    TierReport {
        unit: "ns per iteration (criterion median)".into(),
        rows,
        geomean: None,
        fails,
        note: format!("{note}; {} paired round(s)", rounds.rounds),
    }
}

fn write_json(path: &Path, report: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("bench-gate: wrote {}", path.display());
    Ok(())
}

/// Record the working tree's tier-1 counts as the committed baseline.
pub fn record_baseline(opts: &Options, path: &Path) -> Result<(), String> {
    let p = paths(opts)?;
    let built = build::build(&p.repo, &p.target, &[])?;
    let cand = exe(
        build::keep(&built, &p.work.join("bin"), "candidate")?,
        "candidate",
        &[],
    )?;
    let benches = union(&cand.benches, &[]);
    let ids = tier1_ids(&benches);
    let counts = tier1::count_all(&[&cand], &ids, &p.work.join("callgrind"), opts.jobs, false)?;
    let dirty = !build::is_clean(&p.repo).unwrap_or(false);
    let commit = build::resolve(&p.repo, "HEAD")
        .map(|r| r.1)
        .unwrap_or_default();
    tier1::Baseline {
        note: "instructions per iteration under callgrind, recorded by `bench-gate --record-baseline` on the CI machine class (2 vCPU Xeon, valgrind 3.19)".into(),
        commit: if dirty { format!("{commit}+dirty") } else { commit },
        instructions: counts.get("candidate").cloned().unwrap_or_default(),
    }
    .save(&path.to_path_buf())?;
    eprintln!("bench-gate: recorded the baseline in {}", path.display());
    Ok(())
}

/// Run the gate; returns the report (its `verdict` says pass or fail).
pub fn run(opts: &Options) -> Result<GateReport, String> {
    let started = Instant::now();
    let p = paths(opts)?;
    let bin = p.work.join("bin");
    let dirty = !build::is_clean(&p.repo).unwrap_or(false);
    let cand_label = match build::resolve(&p.repo, "HEAD") {
        Ok((_, short)) if dirty => format!("working tree (HEAD {short} + uncommitted changes)"),
        Ok((_, short)) => format!("HEAD {short}"),
        Err(_) => "working tree".into(),
    };

    // The base: a build, or the committed baseline.
    let mut base_exe: Option<BenchExe> = None;
    let mut baseline: Option<tier1::Baseline> = None;
    let mut base_label = String::new();
    let baseline_path = p.repo.join("bench").join("baseline.json");
    let rev = match &opts.base {
        Base::Baseline(f) => {
            baseline = Some(tier1::Baseline::load(f)?);
            base_label = format!("committed baseline {}", f.display());
            None
        }
        Base::Rev(r) => Some((r.clone(), format!("--base {r}"))),
        Base::Auto => match std::env::var("PIAZZA_GATE_BASE") {
            Ok(r) if !r.is_empty() => Some((r.clone(), format!("PIAZZA_GATE_BASE={r}"))),
            _ => match build::default_base(&p.repo) {
                Ok(b) => Some(b),
                Err(e) => {
                    eprintln!("bench-gate: no base commit ({e})");
                    None
                }
            },
        },
    };
    // The base is built first and its workspace builds are removed after
    // (see `build`'s module docs); `None`: an A/A run on the candidate.
    let mut a_a = false;
    if let Some((rev, how)) = rev {
        let built = (|| -> Result<Option<BenchExe>, String> {
            let (full, short) = build::resolve(&p.repo, &rev)?;
            if build::tree_equals(&p.repo, &full)? {
                base_label = format!("{short} ({how}; same tree as the candidate: A/A run)");
                return Ok(None);
            }
            let dir = p.work.join("base-src");
            build::worktree(&p.repo, &full, &dir)?;
            let built =
                build::build(&dir, &p.target, &[]).and_then(|e| build::keep(&e, &bin, "base"));
            let forgotten = build::forget_path_packages(&dir, &p.target);
            if !opts.keep_worktree {
                build::remove_worktree(&p.repo, &dir);
            }
            forgotten?;
            base_label = format!("{short} ({how})");
            exe(built?, "base", &[]).map(Some)
        })();
        match built {
            Ok(Some(b)) => base_exe = Some(b),
            Ok(None) => a_a = true,
            Err(e) if baseline_path.exists() => {
                eprintln!(
                    "bench-gate: the base cannot be built ({e}); tier 1 uses the committed baseline, tier 2 is skipped"
                );
                baseline = Some(tier1::Baseline::load(&baseline_path)?);
                base_label =
                    format!("committed baseline bench/baseline.json (base {rev} unbuildable)");
            }
            Err(e) => return Err(e),
        }
    } else if baseline.is_none() {
        baseline = Some(tier1::Baseline::load(&baseline_path)?);
        base_label = "committed baseline bench/baseline.json".into();
    }
    let built = build::build(&p.repo, &p.target, &[])?;
    let cand = exe(build::keep(&built, &bin, "candidate")?, "candidate", &[])?;
    if a_a {
        let mut b = cand.clone();
        b.label = "base".into();
        base_exe = Some(b);
    }
    eprintln!("bench-gate: base: {base_label}");
    eprintln!("bench-gate: candidate: {cand_label}");

    let base_listing: Vec<Listed> = match (&base_exe, &baseline) {
        (Some(b), _) => b.benches.clone(),
        (None, Some(bl)) => bl
            .instructions
            .keys()
            .filter_map(|id| cand.benches.iter().find(|l| &l.id == id))
            .map(|l| Listed {
                id: l.id.clone(),
                class: l.class,
                iters: l.iters,
                collect_in: l.collect_in.clone(),
            })
            .collect(),
        (None, None) => Vec::new(),
    };
    let benches = union(&cand.benches, &base_listing);

    let mut t1 = None;
    if opts.tier1 {
        let ids = tier1_ids(&benches);
        let cg = p.work.join("callgrind");
        // Both sides are counted even when they are the same executable
        // (an A/A run): the comparison then shows the counts' own spread.
        let mut exes = vec![&cand];
        if let Some(b) = &base_exe {
            exes.push(b);
        }
        let counts = tier1::count_all(&exes, &ids, &cg, opts.jobs, opts.reuse_counts)?;
        let cand_counts = counts.get("candidate").cloned().unwrap_or_default();
        let base_counts = match (&base_exe, &baseline) {
            (Some(_), _) => counts.get("base").cloned().unwrap_or_default(),
            (None, Some(bl)) => bl.instructions.clone(),
            (None, None) => BTreeMap::new(),
        };
        let t = tier1_report(
            &benches,
            &base_counts,
            &cand_counts,
            format!("base: {base_label}; candidate: {cand_label}"),
        );
        println!("{}", report::render("tier 1", &t));
        t1 = Some(t);
    }

    let mut t2 = None;
    if opts.tier2 {
        match &base_exe {
            Some(b) => {
                let ids = tier2_ids(&benches, b, &cand);
                let rounds =
                    tier2::paired_rounds(b, &cand, &ids, &p.work.join("criterion"), opts.timing)?;
                let t = tier2_report(
                    &benches,
                    &rounds,
                    format!("base: {base_label}; candidate: {cand_label}"),
                );
                println!("{}", report::render("tier 2", &t));
                t2 = Some(t);
            }
            None => println!(
                "tier 2: skipped (no base build to pair with; wall-clock baselines are not stored)\n"
            ),
        }
    }

    let mut r = GateReport {
        verdict: String::new(),
        base: base_label,
        candidate: cand_label,
        tier1: t1,
        tier2: t2,
        seconds: started.elapsed().as_secs_f64(),
    };
    r.verdict = if r.fails() { "fail" } else { "pass" }.into();
    println!(
        "bench-gate: {} ({:.0} s)",
        if r.fails() { "FAIL" } else { "pass" },
        r.seconds
    );
    write_json(
        &opts
            .json
            .clone()
            .unwrap_or_else(|| p.work.join("report.json")),
        &r,
    )?;
    Ok(r)
}

/// The self-test's outcome.
#[derive(Debug, serde::Serialize)]
pub struct SelfTest {
    /// Whether the gate failed everywhere it must.
    pub passed: bool,
    /// One line per expectation.
    pub checks: Vec<(String, bool)>,
    /// Tier 1 at the 2x level.
    pub tier1_2x: TierReport,
    /// Tier 1 at the +15 % level.
    pub tier1_15: TierReport,
    /// Tier 2 at the 2x level.
    pub tier2_2x: Option<TierReport>,
    /// Seconds the self-test took.
    pub seconds: f64,
}

/// Build the candidate with the planted slowdown and check that the gate
/// fails: both tiers at 2x, tier 1 at +15 %. The base is the same tree
/// without the slowdown.
pub fn self_test(opts: &Options) -> Result<SelfTest, String> {
    let started = Instant::now();
    let p = paths(opts)?;
    let bin = p.work.join("bin");
    let built = build::build(&p.repo, &p.target, &[])?;
    let base = exe(build::keep(&built, &bin, "self-test-base")?, "base", &[])?;
    let built = build::build(&p.repo, &p.target, &["bench-slowdown"])?;
    let slow_path = build::keep(&built, &bin, "self-test-slowdown")?;
    let slow2x = exe(
        slow_path.clone(),
        "slow-2x",
        &[("PIAZZA_BENCH_SLOWDOWN", "2x")],
    )?;
    let slow15 = exe(slow_path, "slow-15pct", &[("PIAZZA_BENCH_SLOWDOWN", "15%")])?;
    let benches = union(&base.benches, &[]);
    let ids = tier1_ids(&benches);
    let counts = tier1::count_all(
        &[&base, &slow2x, &slow15],
        &ids,
        &p.work.join("callgrind"),
        opts.jobs,
        opts.reuse_counts,
    )?;
    let get = |l: &str| counts.get(l).cloned().unwrap_or_default();
    let note = |level: &str| {
        format!(
            "self-test: base = this tree; candidate = this tree with the planted slowdown at {level}"
        )
    };
    let tier1_2x = tier1_report(&benches, &get("base"), &get("slow-2x"), note("2x"));
    let tier1_15 = tier1_report(&benches, &get("base"), &get("slow-15pct"), note("+15 %"));
    println!("{}", report::render("self-test tier 1, 2x", &tier1_2x));
    println!("{}", report::render("self-test tier 1, +15 %", &tier1_15));
    let tier2_2x = if opts.tier2 {
        // The planted work is on the packet path: pair the hot-path rows.
        let hot: Vec<(String, Class)> = benches
            .iter()
            .filter(|(_, c)| *c == Class::HotPath)
            .cloned()
            .collect();
        let ids = tier2_ids(&hot, &base, &slow2x);
        let rounds = tier2::paired_rounds(
            &base,
            &slow2x,
            &ids,
            &p.work.join("self-test-criterion"),
            opts.timing,
        )?;
        let t = tier2_report(&benches, &rounds, note("2x"));
        println!("{}", report::render("self-test tier 2, 2x", &t));
        Some(t)
    } else {
        None
    };
    let mut checks = vec![
        ("tier 1 fails at 2x".to_string(), tier1_2x.fails),
        ("tier 1 fails at +15 %".to_string(), tier1_15.fails),
    ];
    if let Some(t) = &tier2_2x {
        checks.push(("tier 2 fails at 2x".into(), t.fails));
    }
    let passed = checks.iter().all(|c| c.1);
    for (what, ok) in &checks {
        println!("self-test: {what}: {}", if *ok { "yes" } else { "NO" });
    }
    let st = SelfTest {
        passed,
        checks,
        tier1_2x,
        tier1_15,
        tier2_2x,
        seconds: started.elapsed().as_secs_f64(),
    };
    println!(
        "bench-gate self-test: {} ({:.0} s)",
        if passed {
            "passed (the gate catches the planted slowdowns)"
        } else {
            "FAILED"
        },
        st.seconds
    );
    write_json(
        &opts
            .json
            .clone()
            .unwrap_or_else(|| p.work.join("self-test.json")),
        &st,
    )?;
    Ok(st)
}
