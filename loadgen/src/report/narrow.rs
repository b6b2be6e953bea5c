//! The narrow-link row of a run with a downlink cap (`--downlink-kbps`):
//! how much slot-time the engine paused, next to how much the cap forces,
//! and how often slots paused once the room had settled.
//!
//! What the cap forces, from the rates the clients measured in the window:
//! each subscriber's audio (every audio slot's datagrams) comes first, and
//! the rest of the cap holds `floor(rest / l)` video slots at the lowest
//! layer `l` (its bytes per frame times the frame rate); every
//! other filled slot must pause. A slot is filled when the room has
//! somebody for it: `min(video slots, participants - 1)`. Bytes are
//! counted as the cap charges them: each datagram with its 28 bytes of
//! IPv4 and UDP headers (without them, at 800 kbit/s the in-process runs'
//! `floor(rest / l)` flipped between 3 and 4 with a few kbit/s of
//! measurement noise: 4 x 163 kbit/s against 652 kbit/s left). The engine keeps
//! headroom under its estimate, and the estimate sits under the cap, so a
//! measured share a little above the forced one is expected; the issue's
//! bar is within 20 % of it.

use serde::Serialize;

use crate::metrics::meter::{MediaTotals, PAUSE_SETTLE};
use crate::scenario::Scenario;

/// The narrow-link figures (only with a downlink cap).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NarrowReport {
    /// The cap on every subscriber's downlink, kbit/s.
    pub cap_kbps: u64,
    /// What one subscriber's audio slots received, kbit/s (datagrams with
    /// their IPv4 and UDP headers).
    pub audio_kbps: f64,
    /// One stream of each camera layer (l, m, h), kbit/s (datagram bytes
    /// with IPv4 and UDP headers per frame times the frame rate; 0 when the
    /// layer never arrived).
    pub layer_kbps: [f64; 3],
    /// Video slots per subscriber with somebody to show.
    pub filled_slots: usize,
    /// Of those, how many the cap holds at `l`.
    pub fitting_slots: usize,
    /// Share of filled slot-time the cap forces to pause, 0..1.
    pub forced_paused_share: f64,
    /// Share of filled slot-time the engine paused, 0..1.
    pub paused_share: f64,
    /// measured / forced (1.0 when both are 0; infinite when only the
    /// forced share is).
    pub paused_over_forced: f64,
    /// Pauses that began 5 s or more into the window, over all slots.
    pub late_pauses: u64,
    /// The most of those on one slot.
    pub most_late_pauses_one_slot: u64,
    /// The window after its first 5 s, seconds.
    pub late_window_s: f64,
    /// The most pauses of one slot per minute of that window.
    pub most_pauses_per_slot_per_min: f64,
    /// No slot paused more than once per started minute of that window
    /// (issue 14's "at most one pause per slot per minute after the first
    /// 5 s"; a 55 s window allows one).
    pub at_most_one_per_minute: bool,
}

impl NarrowReport {
    /// The row, or `None` without a downlink cap.
    pub fn new(s: &Scenario, t: &MediaTotals, measured_s: f64) -> Option<Self> {
        let cap_kbps = s.downlink_kbps?;
        let subscribers = (s.rooms * s.participants).max(1) as f64;
        let kbps = |bytes: u64| {
            if measured_s > 0.0 {
                bytes as f64 * 8.0 / measured_s / 1000.0
            } else {
                0.0
            }
        };
        let audio_kbps = kbps(t.audio_wire_bytes) / subscribers;
        let layer_kbps: [f64; 3] = std::array::from_fn(|l| {
            if t.layer_frames[l] == 0 {
                0.0
            } else {
                t.layer_wire_bytes[l] as f64 / t.layer_frames[l] as f64 * 8.0 * s.fps as f64
                    / 1000.0
            }
        });
        let filled_slots = s.video_slots.min(s.participants.saturating_sub(1));
        let rest = (cap_kbps as f64 - audio_kbps).max(0.0);
        let fitting_slots = if layer_kbps[0] > 0.0 {
            ((rest / layer_kbps[0]).floor() as usize).min(filled_slots)
        } else {
            0
        };
        let share = |x: f64, of: f64| if of > 0.0 { x / of } else { 0.0 };
        let forced_paused_share = share(
            filled_slots.saturating_sub(fitting_slots) as f64,
            filled_slots as f64,
        );
        let slot_time_s = subscribers * filled_slots as f64 * measured_s;
        let paused_share = share(t.paused_time.as_secs_f64(), slot_time_s).min(1.0);
        let paused_over_forced = match (paused_share, forced_paused_share) {
            (p, f) if f > 0.0 => p / f,
            (p, _) if p > 0.0 => f64::INFINITY,
            _ => 1.0,
        };
        let late_window_s = (measured_s - PAUSE_SETTLE.as_secs_f64()).max(0.0);
        Some(NarrowReport {
            cap_kbps,
            audio_kbps,
            layer_kbps,
            filled_slots,
            fitting_slots,
            forced_paused_share,
            paused_share,
            paused_over_forced,
            late_pauses: t.late_pauses,
            most_late_pauses_one_slot: t.most_late_pauses,
            late_window_s,
            most_pauses_per_slot_per_min: share(t.most_late_pauses as f64 * 60.0, late_window_s),
            at_most_one_per_minute: t.most_late_pauses as f64 <= (late_window_s / 60.0).ceil(),
        })
    }

    /// The summary's line.
    pub fn line(&self) -> String {
        format!(
            "paused {:.1} % of filled slot-time; the cap forces {:.1} % ({} kbit/s less audio {:.0} kbit/s holds {} of {} slots at l {:.0} kbit/s), ratio {:.2}; after the first 5 s ({:.0} s): {} pauses, at most {} on one slot ({})",
            self.paused_share * 100.0,
            self.forced_paused_share * 100.0,
            self.cap_kbps,
            self.audio_kbps,
            self.fitting_slots,
            self.filled_slots,
            self.layer_kbps[0],
            self.paused_over_forced,
            self.late_window_s,
            self.late_pauses,
            self.most_late_pauses_one_slot,
            if self.at_most_one_per_minute {
                "at most one per slot per minute"
            } else {
                "more than one per slot per minute"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_forced_share_counts_the_slots_the_cap_cannot_hold_at_l() {
        let mut s = Scenario {
            rooms: 1,
            participants: 20,
            video_slots: 9,
            fps: 30,
            downlink_kbps: Some(800),
            ..Default::default()
        };
        let secs = 60.0;
        let t = MediaTotals {
            // 20 subscribers x 150 kbit/s of audio each.
            audio_wire_bytes: (20.0 * 150_000.0 / 8.0 * secs) as u64,
            // l: 750 bytes per frame at 30 fps = 180 kbit/s.
            layer_frames: [1000, 0, 0],
            layer_wire_bytes: [750_000, 0, 0],
            // Paused: 6 of 9 slots of each subscriber the whole window.
            paused_time: Duration::from_secs_f64(20.0 * 6.0 * secs),
            late_pauses: 4,
            most_late_pauses: 2,
            ..Default::default()
        };
        let r = NarrowReport::new(&s, &t, secs).unwrap();
        assert!((r.audio_kbps - 150.0).abs() < 0.01, "{}", r.audio_kbps);
        assert!((r.layer_kbps[0] - 180.0).abs() < 0.01);
        // (800 - 150) / 180 = 3.6: 3 slots fit, 6 of 9 pause.
        assert_eq!((r.filled_slots, r.fitting_slots), (9, 3));
        assert!((r.forced_paused_share - 6.0 / 9.0).abs() < 1e-9);
        assert!((r.paused_share - 6.0 / 9.0).abs() < 1e-9);
        assert!((r.paused_over_forced - 1.0).abs() < 1e-9);
        assert!((r.most_pauses_per_slot_per_min - 2.0 * 60.0 / 55.0).abs() < 1e-9);
        // Two pauses of one slot in 55 s: more than one per minute.
        assert!(!r.at_most_one_per_minute);
        let once = MediaTotals {
            most_late_pauses: 1,
            ..t.clone()
        };
        assert!(
            NarrowReport::new(&s, &once, secs)
                .unwrap()
                .at_most_one_per_minute
        );
        s.downlink_kbps = None;
        assert!(NarrowReport::new(&s, &t, secs).is_none());
    }
}
