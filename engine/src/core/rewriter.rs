//! Per-slot RTP rewriting: each receive slot is one continuous RTP stream even
//! as the publisher behind it changes.
//!
//! Sequence numbers map as `incoming + offset` per (slot, source), so a late
//! retransmission from upstream lands in the hole it belongs to (RFC 3550
//! section 5.1 wants a sequence without jumps; RFC 4588 RTX repairs by
//! original sequence number). Timestamps and VP8 picture ids (RFC 7741
//! section 4.2) are re-based at each switch so they stay monotonic, and the
//! timestamp advances by the wall time that passed, so a jitter buffer sees a
//! plausible gap rather than a jump.

use std::time::{Duration, Instant};

/// Where the rewritten packet goes in the subscriber's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rewritten {
    pub seq: u64,
    pub ts: u32,
    /// Rewritten VP8 picture id and tl0picidx, when the packet carries them.
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
}

/// The VP8 fields of an incoming packet that take part in rewriting.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Vp8Fields {
    pub picture_id: Option<u16>,
    /// Whether the descriptor uses a 15-bit picture id (else 7-bit).
    pub long_picture_id: bool,
    pub tl0_pic_idx: Option<u8>,
}

/// Sequence, timestamp and picture-id continuity for one outgoing slot stream.
#[derive(Debug)]
pub(crate) struct Rewriter {
    clock_rate: u32,
    started: bool,
    // Output high-water marks.
    max_seq_out: u64,
    max_ts_out: u32,
    max_pid_out: u16,
    max_tl0_out: u8,
    last_out_at: Option<Instant>,
    // Mapping for the current source.
    seq_offset: u64,
    ts_offset: u32,
    pid_offset: u16,
    tl0_offset: u8,
    /// Packets of the current source older than the switch point belong to
    /// the previous holder's era in this stream: drop them.
    first_in_seq: u64,
}

const PID_MASK_15: u16 = 0x7fff;
const PID_MASK_7: u16 = 0x7f;
/// First outgoing sequence number: small, so the SRTP rollover counter starts at 0.
const FIRST_SEQ: u64 = 1;

impl Rewriter {
    pub fn new(clock_rate: u32) -> Self {
        Rewriter {
            clock_rate,
            started: false,
            max_seq_out: FIRST_SEQ - 1,
            max_ts_out: 0,
            max_pid_out: 0,
            max_tl0_out: 0,
            last_out_at: None,
            seq_offset: 0,
            ts_offset: 0,
            pid_offset: 0,
            tl0_offset: 0,
            first_in_seq: 0,
        }
    }

    /// Re-base the mapping so `in_seq` / `in_ts` (the first packet of the new
    /// source, normally the start of a keyframe) continue the output stream.
    pub fn switch_to(&mut self, in_seq: u64, in_ts: u32, vp8: Vp8Fields, now: Instant) {
        let next_seq = self.max_seq_out.wrapping_add(1);
        self.seq_offset = next_seq.wrapping_sub(in_seq);
        self.first_in_seq = in_seq;

        let gap = match self.last_out_at {
            Some(last) if self.started => {
                let elapsed = now.saturating_duration_since(last);
                let ticks = elapsed.as_secs_f64() * self.clock_rate as f64;
                (ticks as u32).max(1)
            }
            _ => 0,
        };
        let next_ts = self.max_ts_out.wrapping_add(gap);
        self.ts_offset = next_ts.wrapping_sub(in_ts);

        if let Some(pid) = vp8.picture_id {
            let next_pid = if self.started {
                self.max_pid_out.wrapping_add(1)
            } else {
                0
            };
            self.pid_offset = next_pid.wrapping_sub(pid);
        }
        if let Some(tl0) = vp8.tl0_pic_idx {
            let next_tl0 = if self.started {
                self.max_tl0_out.wrapping_add(1)
            } else {
                0
            };
            self.tl0_offset = next_tl0.wrapping_sub(tl0);
        }
        self.started = true;
    }

    /// Map one packet of the current source, or `None` if it predates the
    /// switch to this source.
    pub fn rewrite(
        &mut self,
        in_seq: u64,
        in_ts: u32,
        vp8: Vp8Fields,
        now: Instant,
    ) -> Option<Rewritten> {
        if !self.started || in_seq < self.first_in_seq {
            return None;
        }
        let seq = in_seq.wrapping_add(self.seq_offset);
        let ts = in_ts.wrapping_add(self.ts_offset);
        if seq > self.max_seq_out {
            self.max_seq_out = seq;
        }
        if (ts.wrapping_sub(self.max_ts_out) as i32) > 0 {
            self.max_ts_out = ts;
        }
        let picture_id = vp8.picture_id.map(|pid| {
            let mask = if vp8.long_picture_id {
                PID_MASK_15
            } else {
                PID_MASK_7
            };
            let out = pid.wrapping_add(self.pid_offset) & mask;
            let ahead = out.wrapping_sub(self.max_pid_out) & PID_MASK_15;
            if ahead != 0 && ahead < 0x4000 {
                self.max_pid_out = out;
            }
            out
        });
        let tl0_pic_idx = vp8.tl0_pic_idx.map(|tl0| {
            let out = tl0.wrapping_add(self.tl0_offset);
            if (out.wrapping_sub(self.max_tl0_out) as i8) > 0 {
                self.max_tl0_out = out;
            }
            out
        });
        self.last_out_at = Some(now);
        Some(Rewritten {
            seq,
            ts,
            picture_id,
            tl0_pic_idx,
        })
    }

    /// The highest sequence number sent so far.
    #[cfg(test)]
    pub fn max_seq_out(&self) -> u64 {
        self.max_seq_out
    }

    /// How long since the slot last carried a packet.
    #[allow(dead_code)]
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        self.last_out_at.map(|t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8(pid: u16, tl0: u8) -> Vp8Fields {
        Vp8Fields {
            picture_id: Some(pid),
            long_picture_id: true,
            tl0_pic_idx: Some(tl0),
        }
    }

    #[test]
    fn switch_keeps_sequence_continuous() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        r.switch_to(5000, 1_000_000, vp8(100, 7), t0);
        let a = r.rewrite(5000, 1_000_000, vp8(100, 7), t0).unwrap();
        let b = r.rewrite(5001, 1_003_000, vp8(101, 8), t0).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        // Switch to a source with unrelated numbering 100 ms later.
        let t1 = t0 + Duration::from_millis(100);
        r.switch_to(60_000, 42, vp8(30_000, 200), t1);
        let c = r.rewrite(60_000, 42, vp8(30_000, 200), t1).unwrap();
        assert_eq!(c.seq, b.seq + 1, "no gap across the switch");
        assert_eq!(
            c.ts,
            b.ts.wrapping_add(9_000),
            "timestamp advances by elapsed time"
        );
        assert_eq!(c.picture_id, Some(b.picture_id.unwrap() + 1));
        assert_eq!(c.tl0_pic_idx, Some(b.tl0_pic_idx.unwrap() + 1));
    }

    #[test]
    fn late_retransmission_fills_its_hole() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        r.switch_to(10, 0, Vp8Fields::default(), t0);
        let a = r.rewrite(10, 0, Vp8Fields::default(), t0).unwrap();
        let c = r.rewrite(12, 0, Vp8Fields::default(), t0).unwrap();
        let b = r.rewrite(11, 0, Vp8Fields::default(), t0).unwrap();
        assert_eq!((a.seq, b.seq, c.seq), (a.seq, a.seq + 1, a.seq + 2));
        assert_eq!(r.max_seq_out(), c.seq);
    }

    #[test]
    fn packets_before_switch_point_are_dropped() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000);
        assert!(r.rewrite(1, 0, Vp8Fields::default(), t0).is_none());
        r.switch_to(100, 0, Vp8Fields::default(), t0);
        assert!(r.rewrite(99, 0, Vp8Fields::default(), t0).is_none());
        assert!(r.rewrite(100, 0, Vp8Fields::default(), t0).is_some());
    }

    #[test]
    fn picture_id_wraps_within_15_bits() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        r.switch_to(1, 0, vp8(0x7ffe, 0), t0);
        let a = r.rewrite(1, 0, vp8(0x7ffe, 0), t0).unwrap();
        let b = r.rewrite(2, 0, vp8(0x7fff, 0), t0).unwrap();
        let c = r.rewrite(3, 0, vp8(0, 0), t0).unwrap();
        assert_eq!(a.picture_id, Some(0));
        assert_eq!(b.picture_id, Some(1));
        assert_eq!(c.picture_id, Some(2));
    }
}
