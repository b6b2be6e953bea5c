//! The planted slowdown of the benchmark gate's self-test (cargo feature
//! `bench-slowdown`, never enabled outside that test).
//!
//! Every datagram a participant's `Rtc` accepts and every datagram the core
//! gives out costs extra busy work of about the size of the real work on
//! that packet (SRTP, RTP handling, routing), so the forwarding path does
//! about twice the work; `PIAZZA_BENCH_SLOWDOWN=15%` plants +15 % instead.
//! The variable is read once, when the `ShardCore` is built, never per
//! packet. The constants were fitted to the instruction counts of the
//! `ingress/*` and `forward/*` benchmarks (see docs/performance.md).

use std::hint::black_box;

/// Busy-work steps at the 2x level for a datagram in: fixed + per byte / 16.
const IN_FIXED: u64 = 1_100;
const IN_PER_16_BYTES: u64 = 4;
/// ... and for a datagram out (str0m's send side costs more per packet).
const OUT_FIXED: u64 = 1_000;
const OUT_PER_16_BYTES: u64 = 15;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Slowdown {
    /// Extra work in per-mille of the 2x level (1000: ~2x, 150: ~+15 %).
    per_mille: u64,
}

impl Slowdown {
    /// `PIAZZA_BENCH_SLOWDOWN`: `2x` (the default) or `15%`, or a
    /// per-mille number of the 2x level's extra work.
    pub fn from_env() -> Self {
        let per_mille = match std::env::var("PIAZZA_BENCH_SLOWDOWN").as_deref() {
            Ok("15%") => 150,
            Ok("2x") | Err(_) => 1000,
            Ok(other) => other.parse().unwrap_or(1000),
        };
        Slowdown { per_mille }
    }

    /// Extra work for a datagram of `len` bytes a participant's `Rtc` accepted.
    pub fn burn_in(&self, len: usize) {
        burn((IN_FIXED + IN_PER_16_BYTES * len as u64 / 16) * self.per_mille / 1000);
    }

    /// Extra work for a datagram of `len` bytes given out.
    pub fn burn_out(&self, len: usize) {
        burn((OUT_FIXED + OUT_PER_16_BYTES * len as u64 / 16) * self.per_mille / 1000);
    }
}

/// Four independent multiply chains per step, about as many instructions per
/// cycle as the SRTP and RTP code it stands in for; never vectorised or
/// folded away.
#[inline(never)]
fn burn(steps: u64) {
    let mut x = black_box([0x9e37_79b9_7f4a_7c15u64, 1, 2, 3]);
    for i in 0..steps {
        for (k, v) in x.iter_mut().enumerate() {
            *v = (*v ^ (i + k as u64)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    black_box(x);
}
