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

/// Busy-work steps per datagram at the 2x level: a fixed part...
const STEPS_FIXED: u64 = 2_000;
/// ... and a part per byte (SRTP and copies grow with the size).
const STEPS_PER_BYTE_X16: u64 = 20;

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

    /// Extra work for one datagram of `len` bytes.
    #[inline(never)]
    pub fn burn(&self, len: usize) {
        let steps = (STEPS_FIXED + STEPS_PER_BYTE_X16 * len as u64 / 16) * self.per_mille / 1000;
        let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
        for i in 0..steps {
            // A dependent multiply chain: neither vectorised nor folded away.
            x = (x ^ i).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
        }
        black_box(x);
    }
}
