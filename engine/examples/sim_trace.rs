//! The simulator's trace hash for a few seeded rooms, to check that a
//! change meant to leave the engine's decisions alone does: every
//! datagram's virtual time, source and destination, every engine event and
//! every RTP packet each client decrypted go into the hash
//! ([`Simulator::trace_hash`]). Same clients as `sim_cost` (9 video slots,
//! one speaker in seven, BWE on). Compare the output before and after.
//!
//! `cargo run --release -p piazza --example sim_trace`

use std::time::Duration;

use piazza::sim::{ClientConfig, SimConfig, Simulator};

fn main() {
    for (n, secs, seed) in [(20usize, 3u64, 1u64), (20, 3, 2), (50, 2, 1)] {
        let mut cfg = SimConfig::new(n);
        cfg.seed = seed;
        cfg.room.bandwidth_estimation = true;
        cfg.client = Box::new(move |i| {
            let mut c = ClientConfig::new(i as u32);
            c.video_slots = 9.min(n - 1);
            c.speaking = i % 7 == 0;
            c
        });
        let mut sim = Simulator::new(cfg).expect("simulator");
        sim.run_until(Duration::from_secs(secs));
        let st = sim.core().stats();
        println!(
            "{n} participants, {secs} s, seed {seed}: trace {:016x}, forwarded {}, datagrams out {}",
            sim.trace_hash(),
            st.rtp_forwarded,
            st.datagrams_out
        );
    }
}
