//! The count mode of the bench executable: run one benchmark a fixed number
//! of iterations, outside criterion's timing loop, so callgrind can count
//! its instructions.
//!
//! ```text
//! hot_path --count forward/fanout_49 [--iters N]   # one JSON line
//! hot_path --count-list                            # the registry, JSON
//! ```
//!
//! Under `valgrind --tool=callgrind --instr-atstart=no` the setup runs
//! uninstrumented, a few warm-up iterations run uninstrumented too, and
//! only the measured iterations are counted (see [`crate::callgrind`]);
//! the preparation of each batch of inputs runs in between, uncounted.

use std::time::{Duration, Instant};

use crate::callgrind;
use crate::workload::{self, Class};

/// One benchmark's listing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    /// `group/name`.
    pub id: String,
    /// What the gate does with it.
    pub class: Class,
    /// Default iterations in count mode.
    pub iters: u64,
    /// Count only inside these functions (`Spec::collect_in`); the gate
    /// passes them to callgrind as `--toggle-collect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collect_in: Vec<String>,
}

/// What a count run prints (one JSON line on stdout).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CountReport {
    /// `group/name`.
    pub id: String,
    /// Iterations measured.
    pub iters: u64,
    /// Work items per iteration (subscribers for `forward/*`).
    pub items_per_iter: u64,
    /// Wall time of the measured iterations (meaningless under valgrind).
    pub wall_ns: u64,
    /// Whether callgrind counted them.
    pub under_valgrind: bool,
    /// Units of work the measured iterations did (forwarded packets), for
    /// benchmarks counted per unit: the gate divides by this instead of
    /// `iters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<u64>,
}

/// Warm-up iterations before counting: caches, lazily built routes and
/// str0m's per-stream state exist before the first counted packet.
const WARM_UP: u64 = 4;

/// Handle `--count` / `--count-list` if present in `args`; returns the
/// process exit code, or `None` to let criterion run.
pub fn main_if_requested(args: &[String]) -> Option<i32> {
    if args.iter().any(|a| a == "--count-list") {
        let list: Vec<Listed> = workload::all()
            .into_iter()
            .map(|s| Listed {
                id: s.id.to_string(),
                class: s.class,
                iters: s.count_iters,
                collect_in: s.collect_in.iter().map(|f| f.to_string()).collect(),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string(&list).expect("plain data serializes")
        );
        return Some(0);
    }
    let pos = args.iter().position(|a| a == "--count")?;
    let Some(id) = args.get(pos + 1) else {
        eprintln!("--count needs a benchmark id (see --count-list)");
        return Some(2);
    };
    let Some(spec) = workload::find(id) else {
        eprintln!("unknown benchmark {id:?} (see --count-list)");
        return Some(2);
    };
    let iters = match args.iter().position(|a| a == "--iters") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(n) => n,
            None => {
                eprintln!("--iters needs a number");
                return Some(2);
            }
        },
        None => spec.count_iters,
    };
    let mut w = (spec.build)();
    w.prepare(WARM_UP);
    w.run(WARM_UP);
    // Instrument from here on, but count only inside `run`: preparing the
    // next batch (the simulated network) runs uncounted in between. A
    // benchmark that counts only inside some functions (`collect_in`)
    // leaves collection off here: callgrind's `--toggle-collect` switches
    // it on while those run. Callgrind starts collection off by itself when
    // `--toggle-collect` is given (`--collect-atstart=no` is implied), so
    // toggling here too would invert it: until 2026-12-06 the room row
    // counted everything but the engine's steps (the simulated clients:
    // `SimClient::handle_datagram` was 89 % of it), and the self-test's
    // planted 2x moved it by 0.2 %.
    let whole_run = spec.collect_in.is_empty();
    callgrind::start();
    if whole_run {
        callgrind::toggle_collect();
    }
    let units_before = w.units_done();
    let mut wall = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = left.min(w.max_batch().max(1));
        w.prepare(k);
        let t = Instant::now();
        if whole_run {
            callgrind::toggle_collect();
        }
        w.run(k);
        if whole_run {
            callgrind::toggle_collect();
        }
        wall += t.elapsed();
        left -= k;
    }
    callgrind::stop();
    let units = match (units_before, w.units_done()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let wall_ns = wall.as_nanos() as u64;
    let report = CountReport {
        id: spec.id.to_string(),
        iters,
        items_per_iter: spec.items,
        wall_ns,
        under_valgrind: callgrind::running_on_valgrind(),
        units,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("plain data serializes")
    );
    Some(0)
}
