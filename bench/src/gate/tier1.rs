//! Tier 1: instruction counts under callgrind, deterministic to ~0.1 %.
//!
//! Each benchmark runs in its own process, `valgrind --tool=callgrind
//! --instr-atstart=no <exe> --count <id>`: setup and warm-up run
//! uninstrumented, the measured iterations are counted (the executable
//! switches instrumentation on around them), and the count per iteration is
//! the totals line of callgrind's output divided by the iterations.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::count::CountReport;
use crate::gate::build::BenchExe;
use crate::workload::Class;

/// The benchmarks tier 1 counts: everything callgrind can afford in CI.
pub fn counted(class: Class) -> bool {
    matches!(class, Class::HotPath | Class::Control | Class::Reference)
}

/// Where an earlier count of the very same executable (its bytes: the gate
/// runs copies, see `build::keep`), benchmark and environment is kept.
fn cache_file(exe: &BenchExe, id: &str, out_dir: &Path) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same key in every process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (exe.digest?, id, &exe.env).hash(&mut h);
    Some(out_dir.join(format!("cache-{:016x}.json", h.finish())))
}

/// Instructions per iteration of one benchmark. With `reuse`, a count of
/// the identical executable from an earlier run in `out_dir` is taken as is.
pub fn count_one(exe: &BenchExe, id: &str, out_dir: &Path, reuse: bool) -> Result<f64, String> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let cache = cache_file(exe, id, out_dir);
    if reuse
        && let Some(c) = &cache
        && let Ok(text) = std::fs::read_to_string(c)
        && let Ok(v) = text.trim().parse::<f64>()
    {
        return Ok(v);
    }
    let file = out_dir.join(format!("{}.{}.callgrind", exe.label, id.replace('/', "-")));
    // Rows that count only inside some functions (the engine's steps in a
    // whole simulated room).
    let toggles: Vec<String> = exe
        .benches
        .iter()
        .find(|b| b.id == id)
        .map(|b| {
            b.collect_in
                .iter()
                .map(|f| format!("--toggle-collect={f}"))
                .collect()
        })
        .unwrap_or_default();
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--instr-atstart=no"])
        .args(&toggles)
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(&exe.path)
        .args(["--count", id])
        .envs(exe.env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| {
            format!("cannot run valgrind ({e}); install it: apt-get install -y valgrind")
        })?;
    if !out.status.success() {
        return Err(format!(
            "{id} under callgrind failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let report: CountReport = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("{id}: no count report on stdout"))?;
    if !report.under_valgrind {
        return Err(format!("{id}: the executable did not see valgrind"));
    }
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let total: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .filter(|v: &f64| *v > 0.0)
        })
        .ok_or_else(|| format!("{}: no totals line", file.display()))?;
    // Per unit of work (a forwarded packet) for the rows that report
    // units, per iteration otherwise.
    let per_iter = total / report.units.unwrap_or(report.iters).max(1) as f64;
    if let Some(c) = cache {
        let _ = std::fs::write(c, per_iter.to_string());
    }
    Ok(per_iter)
}

/// Count `ids` on every executable, `jobs` valgrind processes at a time.
/// Returns, per executable label, instructions per iteration by id.
pub fn count_all(
    exes: &[&BenchExe],
    ids: &[String],
    out_dir: &Path,
    jobs: usize,
    reuse: bool,
) -> Result<HashMap<String, BTreeMap<String, f64>>, String> {
    let queue: Mutex<VecDeque<(usize, String)>> = Mutex::new(
        exes.iter()
            .enumerate()
            .flat_map(|(i, e)| {
                ids.iter()
                    .filter(|id| e.benches.iter().any(|b| &b.id == *id))
                    .map(move |id| (i, id.clone()))
            })
            .collect(),
    );
    let results: Mutex<HashMap<String, BTreeMap<String, f64>>> = Mutex::new(HashMap::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    // A poisoned lock means another worker panicked: stop too.
                    let Some((i, id)) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                        return;
                    };
                    let exe = exes[i];
                    match count_one(exe, &id, out_dir, reuse) {
                        Ok(v) => {
                            eprintln!(
                                "bench-gate: tier 1 {:<10} {id:<40} {v:>14.0} instructions",
                                exe.label
                            );
                            if let Ok(mut r) = results.lock() {
                                r.entry(exe.label.clone()).or_default().insert(id, v);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut errs) = errors.lock() {
                                errs.push(e);
                            }
                        }
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_default();
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    Ok(results.into_inner().unwrap_or_default())
}

/// The committed baseline: instruction counts per iteration recorded on
/// this machine class, used when no base can be built.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// How and when it was recorded.
    pub note: String,
    /// The commit it was recorded at (with uncommitted changes if `+dirty`).
    pub commit: String,
    /// Instructions per iteration by benchmark id.
    pub instructions: BTreeMap<String, f64>,
}

impl Baseline {
    /// Read a baseline file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Write it (pretty, one benchmark a line).
    pub fn save(&self, path: &PathBuf) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }
}
