//! The criterion harness over [`piazza_bench::workload::all`].
//!
//! `cargo bench -p piazza-bench` runs everything; a filter picks benchmarks
//! (`cargo bench -p piazza-bench -- forward/`); `cargo test --benches` runs
//! each once as a smoke test. `--count ID` / `--count-list` switch to the
//! count mode the gate runs under callgrind ([`piazza_bench::count`]).

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use piazza_bench::workload::{self, Workload};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = piazza_bench::count::main_if_requested(&args) {
        std::process::exit(code);
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for spec in workload::all() {
        let mut group = c.benchmark_group(spec.group());
        if spec.heavy {
            // Hundreds of milliseconds per iteration: ten equal samples.
            group
                .sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(5));
        }
        if spec.items > 1 {
            group.throughput(Throughput::Elements(spec.items));
        }
        // Built on first use, so a filtered-out benchmark costs nothing.
        let mut state: Option<Box<dyn Workload>> = None;
        group.bench_function(spec.name(), |b| {
            let w = state.get_or_insert_with(spec.build);
            b.iter_custom(|iters| workload::measure_batched(w.as_mut(), iters));
        });
        group.finish();
    }
    c.final_summary();
}
