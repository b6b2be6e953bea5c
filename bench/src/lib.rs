//! Benchmarks of Piazza's media hot path and the regression gate that
//! guards them.
//!
//! - [`workload`]: the registry of benchmarks, each a seeded, sans-IO,
//!   single-threaded [`workload::Workload`] built from [`fixtures`].
//! - `benches/hot_path.rs`: the criterion harness over that registry
//!   (`cargo bench -p piazza-bench`), which also has a count mode
//!   ([`count`]) for callgrind.
//! - [`gate`] and the `bench-gate` binary: tier 1 compares instruction
//!   counts under callgrind, tier 2 criterion's wall-clock estimates in
//!   paired rounds; see `docs/performance.md` for how to run and read it.

pub mod callgrind;
pub mod count;
pub mod fixtures;
pub mod gate;
pub mod workload;
