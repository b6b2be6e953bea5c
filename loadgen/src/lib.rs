//! # piazza-loadgen
//!
//! Simulated participants (real str0m peers: ICE, DTLS, SRTP) against a
//! Piazza engine, measuring what a performance engineer needs: one-way
//! latency (HDR histogram), RFC 3550 loss and jitter, W3C freezes, join and
//! first-frame times, and the engine's CPU cost per forwarded packet,
//! measured on its own shard threads so the load generator's work does not
//! pollute it.
//!
//! - [`scenario`]: what to run (flags and TOML).
//! - [`run`]: the targets: an embedded engine over real UDP (default), the
//!   in-process simulator, an external server through its HTTP API.
//! - [`metrics`]: the measurements.
//! - [`report`]: JSON, HTML and the terminal summary; [`slo`]: thresholds.
//! - [`capacity`]: the capacity search (growing load until the SLO breaks).
//!
//! The binary's flags and every report key are documented in
//! `docs/loadgen.md`.
//!
//! ```no_run
//! let scenario = piazza_loadgen::scenario::Scenario {
//!     participants: 10,
//!     duration_s: 5.0,
//!     ..Default::default()
//! };
//! let outcome = piazza_loadgen::run::run(&scenario, &piazza_loadgen::run::Progress::hidden())?;
//! let meta = piazza_loadgen::report::meta::Meta::at_start();
//! let report = piazza_loadgen::report::build(&scenario, &outcome, meta);
//! println!("{}", piazza_loadgen::report::summary::render(&report));
//! # Ok::<(), piazza_loadgen::error::LoadgenError>(())
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod capacity;
pub mod compare;
pub mod error;
pub mod metrics;
pub mod report;
pub mod run;
pub mod scenario;
pub mod slo;
