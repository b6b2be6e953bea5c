use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rtp_::Bitrate;

/// Time window for averaging estimate changes.
const ESTIMATE_WINDOW: Duration = Duration::from_secs(3);

/// An estimate that has stayed above the average for this long is reported
/// at the lowest value it took meanwhile: a rise a probe confirmed should
/// not wait for the whole window to catch up.
const SUSTAINED_RISE: Duration = Duration::from_secs(1);

/// How often a quiet estimate is re-examined for a sustained rise.
const RECHECK_INTERVAL: Duration = Duration::from_millis(100);

type TimeBitrate = (Instant, Bitrate);

const TOLERANCE: f64 = 0.05;

/// Smooths BWE estimates by averaging over a time window.
///
/// The average follows the sawtooth of GCC's estimate without passing on
/// every trough. A rise the estimate has held for [`SUSTAINED_RISE`] is
/// reported at once, at the lowest value of that period, when that is above
/// the average: after a link recovers, probes lift the estimate within
/// about a second, and the average would otherwise hold it near the old
/// level for the rest of the window.
pub struct EstimateSmoother {
    estimates: VecDeque<TimeBitrate>,
    maybe_emit: bool,
    emitted: Option<Bitrate>,
    /// The latest `record` time.
    now: Option<Instant>,
    /// When to look again for a sustained rise without a new value.
    recheck_at: Option<Instant>,
}

impl EstimateSmoother {
    pub fn new() -> Self {
        Self {
            estimates: VecDeque::new(),
            maybe_emit: false,
            emitted: None,
            now: None,
            recheck_at: None,
        }
    }

    /// Record a new estimate and update the smoothed average.
    pub fn record(&mut self, now: Instant, estimate: Bitrate) {
        self.now = Some(now);

        // Did value change from previous?
        let do_update = self.estimates.back().map(|b| b.1) != Some(estimate);

        // A steady estimate can become a sustained rise with time alone.
        if self.recheck_at.is_none_or(|t| now >= t) {
            self.maybe_emit = true;
            self.recheck_at = Some(now + RECHECK_INTERVAL);
        }

        if do_update {
            self.maybe_emit = true;
            self.estimates.push_back((now, estimate));
        }

        // Remove entries older than the window.
        while let Some((time, _)) = self.estimates.front() {
            if now.duration_since(*time) > ESTIMATE_WINDOW {
                // Keep last entry
                if self.estimates.len() == 1 {
                    break;
                }

                self.maybe_emit = true;
                self.estimates.pop_front();
            } else {
                break;
            }
        }
    }

    /// Poll for an estimate to emit. Returns Some only when there's a new value to emit.
    pub fn poll(&mut self) -> Option<Bitrate> {
        if !self.maybe_emit {
            return None;
        }

        if self.estimates.is_empty() {
            return None;
        }

        let total: f64 = self.estimates.iter().map(|b| b.1.as_f64()).sum();
        let avg = total / self.estimates.len() as f64;
        let rate: Bitrate = match self.sustained_low() {
            Some(low) if low.as_f64() > avg => low,
            _ => avg.into(),
        };

        // This forces emitting if we have the first ever value, or a last
        // where the rest of the window is gone (estimates stop coming).
        let force = self.estimates.len() == 1 && self.emitted != Some(rate);

        // Emit if we deviate enough from previously emitted.
        let deviate = if let Some(emitted) = self.emitted {
            !in_tolerance(emitted, rate)
        } else {
            true
        };

        self.maybe_emit = false;

        // Are we not to emit?
        if !force && !deviate {
            return None;
        }

        self.emitted = Some(rate);
        Some(rate)
    }
}

impl EstimateSmoother {
    /// The lowest estimate of the last [`SUSTAINED_RISE`], if the window
    /// covers that long: the value in force at its start and every change
    /// since.
    fn sustained_low(&self) -> Option<Bitrate> {
        let now = self.now?;
        let start = now.checked_sub(SUSTAINED_RISE)?;
        // The value in force at `start`: the last change at or before it.
        let at_start = self.estimates.iter().rev().find(|(t, _)| *t <= start)?;
        let low = self
            .estimates
            .iter()
            .filter(|(t, _)| *t > start)
            .map(|(_, b)| b.as_f64())
            .fold(at_start.1.as_f64(), f64::min);
        Some(low.into())
    }
}

fn in_tolerance(b1: Bitrate, b2: Bitrate) -> bool {
    let min = b1 * (1.0 - TOLERANCE);
    let max = b1 * (1.0 + TOLERANCE);
    b2 > min && b2 < max
}

#[cfg(test)]
mod test {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Record `kbps` at `at` and poll, returning what would be emitted.
    fn step(s: &mut EstimateSmoother, t0: Instant, at: u64, kbps: u64) -> Option<u64> {
        s.record(t0 + ms(at), Bitrate::kbps(kbps));
        s.poll().map(|b| b.as_u64() / 1000)
    }

    #[test]
    fn a_sawtooth_is_averaged() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        assert_eq!(step(&mut s, t0, 0, 1000), Some(1000));
        // Dips of 15 % for 100 ms every 500 ms: never a second above the
        // average, so the average is what counts.
        let mut last = None;
        for k in 0..20 {
            let base = k * 500;
            last = step(&mut s, t0, base + 400, 850).or(last);
            last = step(&mut s, t0, base + 500, 1000).or(last);
        }
        let last = last.expect("the average moved by more than 5 %");
        assert!((900..950).contains(&last), "{last}");
    }

    #[test]
    fn a_rise_held_for_a_second_is_reported_at_once() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        // A sawtooth near 150 kbit/s for 3 s fills the window.
        for k in 0..30 {
            let v = if k % 2 == 0 { 140 } else { 160 };
            step(&mut s, t0, k * 100, v);
        }
        // The link recovers: probes lift the estimate to 600 kbit/s and it
        // stays there, creeping up.
        let mut reported = Vec::new();
        for k in 0..30u64 {
            if let Some(v) = step(&mut s, t0, 3000 + k * 50, 600 + k) {
                reported.push((k * 50, v));
            }
        }
        // Within a second and a recheck of the rise, the whole rise counts.
        let (at, v) = *reported
            .iter()
            .find(|(_, v)| *v >= 600)
            .unwrap_or_else(|| panic!("no sustained rise reported: {reported:?}"));
        assert!(at <= 1100, "reported {v} only {at} ms after the rise");
    }

    #[test]
    fn a_brief_peak_is_not_a_sustained_rise() {
        let t0 = Instant::now();
        let mut s = EstimateSmoother::new();
        let sawtooth = |k: u64| if k % 2 == 0 { 140 } else { 160 };
        for k in 0..30 {
            step(&mut s, t0, k * 100, sawtooth(k));
        }
        // 900 ms at 600 kbit/s, then back to the sawtooth.
        let mut most = 0;
        for k in 0..9 {
            if let Some(v) = step(&mut s, t0, 3000 + k * 100, 600 + k) {
                most = most.max(v);
            }
        }
        for k in 0..20 {
            if let Some(v) = step(&mut s, t0, 3900 + k * 100, sawtooth(k)) {
                most = most.max(v);
            }
        }
        // Only the average moved.
        assert!(most < 400, "{most}");
    }
}
