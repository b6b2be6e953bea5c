//! The engine's CPU cost per forwarded packet, measured in the simulator:
//! wall time spent inside the shard core (SRTP in, rewrite, SRTP out, all
//! str0m work) divided by packets forwarded, over a simulated 50-person
//! room. Prints each run (with [`Simulator::trace_hash`], which a change
//! meant to keep the engine's output the same must not move) and the median.
//!
//! `cargo run --release -p piazza --example sim_cost [participants] [video_slots] [seconds] [runs] [bwe 0|1]`

use std::time::Duration;

use piazza::sim::{ClientConfig, SimConfig, Simulator};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().ok());
    let n = args.next().flatten().unwrap_or(50) as usize;
    let slots = args.next().flatten().unwrap_or(9) as usize;
    let secs = args.next().flatten().unwrap_or(5);
    let runs = args.next().flatten().unwrap_or(3) as usize;
    let bwe = args.next().flatten().unwrap_or(1) != 0;
    let mut per_packet = Vec::new();
    for run in 0..runs {
        let mut cfg = SimConfig::new(n);
        cfg.seed = run as u64 + 1;
        cfg.room.bandwidth_estimation = bwe;
        cfg.client = Box::new(move |i| {
            let mut c = ClientConfig::new(i as u32);
            c.video_slots = slots.min(n - 1);
            c.speaking = i % 7 == 0;
            c
        });
        let mut sim = Simulator::new(cfg).expect("simulator");
        sim.run_until(Duration::from_secs(secs));
        let st = sim.core().stats();
        let ns = sim.core_busy().as_nanos() as f64 / st.rtp_forwarded.max(1) as f64;
        println!(
            "run {run}: {n} participants x {slots} video slots, bwe {bwe}, {secs} s simulated: rtp in {} forwarded {} datagrams out {}, core busy {:?}, {ns:.0} ns per forwarded packet, trace {:016x}",
            st.rtp_in,
            st.rtp_forwarded,
            st.datagrams_out,
            sim.core_busy(),
            sim.trace_hash()
        );
        per_packet.push(ns);
    }
    per_packet.sort_by(f64::total_cmp);
    println!(
        "median {:.0} ns per forwarded packet ({} runs)",
        per_packet[per_packet.len() / 2],
        per_packet.len()
    );
}
