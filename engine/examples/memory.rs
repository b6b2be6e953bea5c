//! Heap held by the engine per participant in a simulated 50-person room.
//!
//! Runs the simulator for a few seconds (so RTX caches and send buffers
//! fill), then drops the shard core and measures how much heap that freed.
//!
//! `cargo run --release -p piazza --example memory [participants] [seconds] [rtx_cache_age_ms]`

use std::time::Duration;

use piazza::core::ShardCore;
use piazza::sim::{CountingAlloc, SimConfig, Simulator};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut config = SimConfig::new(n);
    // Optional: the resend cache's age in ms (default 1500), to see its share.
    if let Some(ms) = args.next().and_then(|a| a.parse().ok()) {
        config.room.rtx_cache_age = Duration::from_millis(ms);
    }
    let mut sim = Simulator::new(config).expect("simulator");
    sim.run_until(Duration::from_secs(secs));
    let addr = sim.core().local_addr();
    let before = CountingAlloc::live_bytes();
    let core = std::mem::replace(sim.core_mut(), ShardCore::new(addr));
    let forwarded = core.stats().rtp_forwarded;
    drop(core);
    let after = CountingAlloc::live_bytes();
    let freed = (before - after).max(0) as f64;
    println!(
        "participants {n}, simulated {secs} s, forwarded {forwarded} packets: engine heap {:.1} MiB = {:.0} KiB per participant",
        freed / (1024.0 * 1024.0),
        freed / 1024.0 / n as f64
    );
}
