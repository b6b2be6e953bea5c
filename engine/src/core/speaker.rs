//! Active speaker detection and audio-slot ranking from RFC 6464 audio levels.
//!
//! RFC 6464 carries the level in -dBov (0 loudest, 127 silence); str0m gives
//! it negated (`-level`). We smooth a "loudness" `127 - level` per publisher
//! with an exponential average (about 200 ms at 50 packets/s), call a
//! publisher speaking above [`SPEAKING_LOUDNESS`], and change the dominant
//! speaker only when a challenger has been louder for a hold time (Jitsi's
//! dominant speaker identification works on the same principle).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids::ParticipantId;

/// Loudness (127 - dBov) above which a publisher counts as speaking (-50 dBov).
pub(crate) const SPEAKING_LOUDNESS: f32 = 77.0;
/// Smoothing weight per audio packet.
const ALPHA: f32 = 0.1;
/// A publisher whose audio stops for this long counts as silent.
const SILENCE_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
struct Level {
    smoothed: f32,
    last_packet: Instant,
    last_spoke: Option<Instant>,
}

/// Tracks levels of one room's audio publishers.
#[derive(Debug, Default)]
pub(crate) struct SpeakerDetector {
    levels: HashMap<ParticipantId, Level>,
    current: Option<ParticipantId>,
    challenger: Option<(ParticipantId, Instant)>,
}

impl SpeakerDetector {
    /// Feed one audio packet's level (`audio_level` as str0m gives it: 0 loudest, -127 silent).
    pub fn on_level(&mut self, p: ParticipantId, audio_level: i8, now: Instant) {
        let loudness = 127.0 - (audio_level as i16).unsigned_abs().min(127) as f32;
        let e = self.levels.entry(p).or_insert(Level {
            smoothed: loudness,
            last_packet: now,
            last_spoke: None,
        });
        e.smoothed += (loudness - e.smoothed) * ALPHA;
        e.last_packet = now;
        if e.smoothed > SPEAKING_LOUDNESS {
            e.last_spoke = Some(now);
        }
    }

    /// Forget a publisher that left.
    pub fn remove(&mut self, p: ParticipantId) {
        self.levels.remove(&p);
        if self.current == Some(p) {
            self.current = None;
        }
        if matches!(self.challenger, Some((c, _)) if c == p) {
            self.challenger = None;
        }
    }

    /// Current smoothed loudness, 0 when silent or unknown.
    pub fn loudness(&self, p: ParticipantId, now: Instant) -> f32 {
        match self.levels.get(&p) {
            Some(l) if now.saturating_duration_since(l.last_packet) < SILENCE_AFTER => l.smoothed,
            _ => 0.0,
        }
    }

    /// When the publisher last spoke.
    pub fn last_spoke(&self, p: ParticipantId) -> Option<Instant> {
        self.levels.get(&p).and_then(|l| l.last_spoke)
    }

    /// The dominant speaker.
    pub fn current(&self) -> Option<ParticipantId> {
        self.current
    }

    /// Re-evaluate; returns the new dominant speaker when it changed.
    pub fn evaluate(&mut self, now: Instant, hold: Duration) -> Option<Option<ParticipantId>> {
        let loudest = self
            .levels
            .keys()
            .map(|&p| (p, self.loudness(p, now)))
            .filter(|&(_, l)| l > SPEAKING_LOUDNESS)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((candidate, cand_loudness)) = loudest else {
            self.challenger = None;
            return None;
        };
        if self.current == Some(candidate) {
            self.challenger = None;
            return None;
        }
        let current_loudness = self.current.map(|c| self.loudness(c, now)).unwrap_or(0.0);
        if self.current.is_none() || current_loudness <= SPEAKING_LOUDNESS {
            // Nobody holds the floor: take it at once.
            self.current = Some(candidate);
            self.challenger = None;
            return Some(self.current);
        }
        if cand_loudness <= current_loudness {
            return None;
        }
        match self.challenger {
            Some((c, since)) if c == candidate => {
                if now.saturating_duration_since(since) >= hold {
                    self.current = Some(candidate);
                    self.challenger = None;
                    return Some(self.current);
                }
                None
            }
            _ => {
                self.challenger = Some((candidate, now));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loud_publisher_becomes_speaker_and_challenger_must_hold() {
        let t0 = Instant::now();
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        let mut d = SpeakerDetector::default();
        let hold = Duration::from_millis(500);
        for i in 0..20 {
            let t = t0 + Duration::from_millis(i * 20);
            d.on_level(a, -20, t);
            d.on_level(b, -100, t);
        }
        let t = t0 + Duration::from_millis(400);
        assert_eq!(d.evaluate(t, hold), Some(Some(a)));
        // b gets louder than a: only after the hold time does it take over.
        let mut switched_at = None;
        for i in 0..60 {
            let t = t + Duration::from_millis(i * 20);
            d.on_level(a, -40, t);
            d.on_level(b, -10, t);
            if let Some(Some(p)) = d.evaluate(t, hold) {
                switched_at = Some((p, t));
                break;
            }
        }
        let (p, at) = switched_at.expect("b takes over");
        assert_eq!(p, b);
        assert!(at - t >= hold);
    }

    #[test]
    fn silence_keeps_last_speaker() {
        let t0 = Instant::now();
        let a = ParticipantId(1);
        let mut d = SpeakerDetector::default();
        for i in 0..20 {
            d.on_level(a, -10, t0 + Duration::from_millis(i * 20));
        }
        d.evaluate(t0 + Duration::from_millis(400), Duration::ZERO);
        assert_eq!(d.current(), Some(a));
        assert_eq!(
            d.evaluate(t0 + Duration::from_secs(5), Duration::ZERO),
            None
        );
        assert_eq!(d.current(), Some(a));
    }
}
