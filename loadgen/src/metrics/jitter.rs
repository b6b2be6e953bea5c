//! Interarrival jitter, RFC 3550 section 6.4.1 (computed as in appendix A.8).
//!
//! For packets i and j of one stream, with arrival times R and RTP
//! timestamps S in the same clock units:
//! `D(i,j) = (Rj - Ri) - (Sj - Si)` and `J += (|D(i-1,i)| - J) / 16`.
//! The estimate is kept in RTP clock units and converted to time with the
//! stream's clock rate (90 kHz for video, 48 kHz for Opus).
//!
//! A receive slot is one RTP stream (one SSRC) whose publisher can change:
//! the SFU re-bases the timestamps at each switch, so the transit time of
//! the new source has nothing to do with the old one. The first packet after
//! a switch starts a new reference ([`Jitter::restart`]) and contributes no
//! difference, which keeps switches from showing as network jitter.

use std::time::{Duration, Instant};

/// The RFC 3550 jitter estimate of one stream.
#[derive(Debug, Clone)]
pub struct Jitter {
    clock_rate: u32,
    /// Arrival and RTP timestamp of the previous packet.
    prev: Option<(Instant, u32)>,
    /// J, in RTP clock units.
    jitter: f64,
}

impl Jitter {
    /// A fresh estimate for a stream with this RTP clock rate (Hz).
    pub fn new(clock_rate: u32) -> Self {
        Jitter {
            clock_rate: clock_rate.max(1),
            prev: None,
            jitter: 0.0,
        }
    }

    /// One packet arrived at `arrival` with RTP timestamp `rtp_time`.
    pub fn on_packet(&mut self, arrival: Instant, rtp_time: u32) {
        if let Some((prev_at, prev_ts)) = self.prev {
            // Arrival difference in clock units (signed: arrivals may be
            // stamped in any order across a delay queue).
            let dr = if arrival >= prev_at {
                (arrival - prev_at).as_secs_f64()
            } else {
                -(prev_at - arrival).as_secs_f64()
            } * self.clock_rate as f64;
            // RTP timestamps wrap at 2^32; differences fit in an i32.
            let ds = rtp_time.wrapping_sub(prev_ts) as i32 as f64;
            let d = (dr - ds).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.prev = Some((arrival, rtp_time));
    }

    /// The stream's source changed: the next packet starts a new reference.
    /// The estimate itself carries on.
    pub fn restart(&mut self) {
        self.prev = None;
    }

    /// J in RTP clock units.
    pub fn ticks(&self) -> f64 {
        self.jitter
    }

    /// J as time.
    pub fn value(&self) -> Duration {
        Duration::from_secs_f64(self.jitter / self.clock_rate as f64)
    }
}
