//! The benchmark registry: every benchmark is a [`Workload`] with an id, a
//! class (what the gate does with it) and an iteration count for the
//! instruction-count mode. The criterion harness (`benches/hot_path.rs`) and
//! the count mode ([`crate::count`]) run the very same workloads.

use std::time::{Duration, Instant};

use crate::fixtures::{demux, forward, join, reference, room};

/// One benchmark's state: built once, then asked for iterations.
pub trait Workload {
    /// Make the inputs of the next `n` iterations. Not measured: fresh SRTP
    /// packets from the simulated publisher (SRTP rejects replays, so every
    /// iteration needs a new one), and the simulated network in between.
    fn prepare(&mut self, _n: u64) {}

    /// Run `n` prepared iterations: the measured part.
    fn run(&mut self, n: u64);

    /// The most iterations to prepare at once. The forwarding fixtures hold
    /// the publisher's media back while preparing; a long hold would look
    /// like a stalled layer to the engine (`RoomConfig::layer_stall`), so
    /// they prepare and run in batches of about 100 ms.
    fn max_batch(&self) -> u64 {
        u64::MAX
    }

    /// The time `n` prepared iterations take. Wall time of [`Workload::run`]
    /// unless the workload measures something narrower (the core's share of
    /// a simulated second).
    fn measure(&mut self, n: u64) -> Duration {
        let t = Instant::now();
        self.run(n);
        t.elapsed()
    }

    /// Units of work done so far (forwarded packets), for workloads whose
    /// count is reported per unit rather than per iteration; `None`: per
    /// iteration.
    fn units_done(&self) -> Option<u64> {
        None
    }
}

/// What the gate does with a benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Per-packet work: gated per benchmark and in the geometric mean.
    HotPath,
    /// Per-room or per-join work: gated per benchmark only.
    Control,
    /// The machine's physical cost (crypto, syscalls): reported, not gated.
    Reference,
    /// Too slow for callgrind in CI (whole simulated room): criterion only.
    Report,
}

/// A registered benchmark.
pub struct Spec {
    /// `group/name`, as criterion files it: `target/criterion/group/name/`.
    pub id: &'static str,
    /// What the gate does with it.
    pub class: Class,
    /// Iterations measured in the instruction-count mode.
    pub count_iters: u64,
    /// Whole-room benchmarks: few, long iterations (criterion flat sampling).
    pub heavy: bool,
    /// Work items per iteration (datagrams out for `forward/*`, datagrams
    /// per batch for `sendmmsg`), for per-item figures and criterion's
    /// throughput column.
    pub items: u64,
    /// Builds the state (connected simulated clients, maps, sockets).
    pub build: fn() -> Box<dyn Workload>,
    /// Count only inside these functions (callgrind `--toggle-collect`
    /// patterns) instead of the whole measured iterations: the engine's
    /// share of a simulated room. Empty: the whole iterations.
    pub collect_in: &'static [&'static str],
}

/// The shard loop's step, through which the simulator drives the engine
/// (`Driver::step`, never inlined): what the whole-room rows count.
pub const ENGINE_STEP: &[&str] = &["piazza::shard::driver::Driver::step*"];

impl Spec {
    /// The criterion group (before the slash).
    pub fn group(&self) -> &'static str {
        self.id.split_once('/').map_or(self.id, |(g, _)| g)
    }

    /// The criterion function name (after the slash).
    pub fn name(&self) -> &'static str {
        self.id.split_once('/').map_or(self.id, |(_, n)| n)
    }
}

/// Prepare and measure `n` iterations in batches of at most
/// [`Workload::max_batch`]: the measured time of all batches.
pub fn measure_batched(w: &mut dyn Workload, n: u64) -> Duration {
    let mut left = n;
    let mut total = Duration::ZERO;
    while left > 0 {
        let k = left.min(w.max_batch().max(1));
        w.prepare(k);
        total += w.measure(k);
        left -= k;
    }
    total
}

/// Every benchmark, in report order.
pub fn all() -> Vec<Spec> {
    let spec = |id, class, count_iters, heavy, build| Spec {
        id,
        class,
        count_iters,
        heavy,
        items: 1,
        build,
        collect_in: &[],
    };
    let items = |s: Spec, items| Spec { items, ..s };
    use Class::*;
    vec![
        items(
            spec("forward/fanout_1", HotPath, 200, false, || {
                Box::new(forward::Forward::new(1))
            }),
            1,
        ),
        items(
            spec("forward/fanout_9", HotPath, 100, false, || {
                Box::new(forward::Forward::new(9))
            }),
            9,
        ),
        items(
            spec("forward/fanout_49", HotPath, 40, false, || {
                Box::new(forward::Forward::new(49))
            }),
            49,
        ),
        spec("ingress/audio", HotPath, 200, false, || {
            Box::new(forward::Ingress::audio())
        }),
        spec("ingress/video", HotPath, 200, false, || {
            Box::new(forward::Ingress::video())
        }),
        spec("demux/addr_10k", HotPath, 2000, false, || {
            Box::new(demux::Demux::addresses(10_000))
        }),
        spec("demux/stun_ufrag_10k", HotPath, 2000, false, || {
            Box::new(demux::Demux::stun_ufrags(10_000))
        }),
        spec("slots/assign_50", Control, 50, false, || {
            Box::new(room::Assign::new(50))
        }),
        spec("join/offer_9_slots", Control, 5, false, || {
            Box::new(join::Join::new(9, 3))
        }),
        spec("join/offer_49_slots", Control, 3, false, || {
            Box::new(join::Join::new(49, 8))
        }),
        Spec {
            collect_in: ENGINE_STEP,
            ..spec("room50_bwe/engine_per_packet", HotPath, 3, true, || {
                Box::new(room::EngineRoom::new(50))
            })
        },
        spec("room50/sim_second", Report, 1, true, || {
            Box::new(room::SimSecond::new(50, false))
        }),
        spec("room50/core_second", Report, 1, true, || {
            Box::new(room::SimSecond::new(50, true))
        }),
        spec(
            "reference/aes128gcm_seal_1200",
            Reference,
            1000,
            false,
            || Box::new(reference::GcmSeal::new(1200)),
        ),
        items(
            spec(
                "reference/sendmmsg_64x1200_loopback",
                Reference,
                20,
                false,
                || Box::new(reference::SendBatch::new(64, 1200)),
            ),
            64,
        ),
    ]
}

/// The benchmark with this id.
pub fn find(id: &str) -> Option<Spec> {
    all().into_iter().find(|s| s.id == id)
}
