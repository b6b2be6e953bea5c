//! Video freezes as the W3C webrtc-stats spec defines them
//! (`freezeCount`, `totalFreezesDuration`), following the reference
//! implementation in libwebrtc's video quality observer:
//!
//! - the inter-frame delay is the time between two consecutive frames;
//! - the average is the linear mean of the last 30 inter-frame delays;
//! - once at least 5 delays are known, a delay that is at least
//!   `max(3 x average, average + 150 ms)` is a freeze of that duration;
//! - every delay, freezes included, then joins the average.
//!
//! - a delay that spans a pause (the SFU stopped the stream on purpose and
//!   said so) is not a freeze and does not join the average, as libwebrtc
//!   counts it in `pauseCount` / `totalPausesDuration` instead.
//!
//! A frame here is complete when the packet marked end-of-frame arrives
//! (the load generator has no decoder); its arrival time stands for the
//! render time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Delays in the moving average.
pub const WINDOW: usize = 30;
/// Delays needed before freezes are detected.
pub const MIN_SAMPLES: usize = 5;
/// The additive part of the threshold.
pub const MIN_INCREASE: Duration = Duration::from_millis(150);

/// Freeze detection for one video stream.
#[derive(Debug, Clone, Default)]
pub struct FreezeDetector {
    last_frame: Option<Instant>,
    delays: VecDeque<Duration>,
    sum: Duration,
    /// Freezes counted.
    pub freezes: u64,
    /// Their total duration.
    pub freeze_time: Duration,
    /// Longest inter-frame delay seen while counting.
    pub max_delay: Duration,
}

impl FreezeDetector {
    /// A frame completed at `at`. Freezes are counted only when `count` is
    /// true (inside the measurement window); the average always learns.
    /// Returns whether this frame ended a freeze.
    pub fn on_frame(&mut self, at: Instant, count: bool) -> bool {
        let Some(last) = self.last_frame.replace(at) else {
            return false;
        };
        let delay = at.saturating_duration_since(last);
        let mut froze = false;
        if self.delays.len() >= MIN_SAMPLES {
            let avg = self.sum / self.delays.len() as u32;
            let threshold = (avg * 3).max(avg + MIN_INCREASE);
            if delay >= threshold && count {
                self.freezes += 1;
                self.freeze_time += delay;
                froze = true;
            }
        }
        if count {
            self.max_delay = self.max_delay.max(delay);
        }
        self.delays.push_back(delay);
        self.sum += delay;
        if self.delays.len() > WINDOW
            && let Some(old) = self.delays.pop_front()
        {
            self.sum -= old;
        }
        froze
    }

    /// When the last frame completed.
    pub fn last_frame(&self) -> Option<Instant> {
        self.last_frame
    }

    /// A frame completed at `at` after a pause: no delay is measured
    /// across the pause and the average is left as it was.
    pub fn resume(&mut self, at: Instant) {
        self.last_frame = Some(at);
    }
}
