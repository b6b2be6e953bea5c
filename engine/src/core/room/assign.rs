//! Slot assignment: which publisher fills which of a subscriber's slots.
//!
//! Video: one room-wide ranking (screens, the active speaker, recent
//! speakers, join order); each subscriber takes its first sources in that
//! order (its pin after the screens), and a source already in a slot keeps
//! it. The allocator ([`super::bandwidth`]) then picks each slot's layer.
//! Audio: loudest first, with hysteresis.

use std::time::Instant;

use super::Room;
use crate::core::participant::VideoFeed;
use crate::core::slot::VideoSlot;
use crate::ids::{Layer, ParticipantId, VideoSource};

/// Audio slot hysteresis: a challenger must be this much louder (dB) than
/// the quietest holder to take its slot.
const AUDIO_SWITCH_MARGIN: f32 = 6.0;

impl Room {
    /// The room-wide order in which video sources claim slots: screen shares
    /// first, then the active speaker, then recent speakers (most recent
    /// first), then join order.
    fn video_ranking(&self, base: Instant) -> Vec<(ParticipantId, VideoSource)> {
        let speaker = self.speakers.current();
        let mut ranked: Vec<(u8, i128, u64, ParticipantId, VideoSource)> = Vec::new();
        for p in self.slab.iter().flatten() {
            if p.published.screen {
                let since = p
                    .published
                    .screen_since
                    .map(|t| signed_nanos(t, base))
                    .unwrap_or(0);
                ranked.push((0, since, p.join_seq, p.id, VideoSource::Screen));
            }
            if p.published.camera {
                let (class, key) = if Some(p.id) == speaker {
                    (1, 0)
                } else if let Some(t) = self.speakers.last_spoke(p.id) {
                    (2, -signed_nanos(t, base))
                } else {
                    (3, 0)
                };
                ranked.push((class, key, p.join_seq, p.id, VideoSource::Camera));
            }
        }
        ranked.sort();
        ranked.into_iter().map(|r| (r.3, r.4)).collect()
    }

    /// Decide which publisher fills which video slot (layers are the
    /// bandwidth allocator's job: [`Room::allocate_all`]).
    pub(super) fn reassign(&mut self, now: Instant) {
        self.needs_reassign = false;
        self.last_reassign = Some(now);
        let ranking = self.video_ranking(now);
        for sub in self.slab.iter_mut().flatten() {
            let k = sub.video_slots.len();
            if k == 0 {
                continue;
            }
            let own = sub.id;
            let mut wanted: Vec<(ParticipantId, VideoSource)> = Vec::with_capacity(k);
            // Screens first, then the pinned camera, then the rest in ranking order.
            for &(p, src) in ranking
                .iter()
                .filter(|(p, s)| *s == VideoSource::Screen && *p != own)
            {
                if wanted.len() < k {
                    wanted.push((p, src));
                }
            }
            if let Some(pin) = sub.pinned
                && pin != own
                && ranking.contains(&(pin, VideoSource::Camera))
                && wanted.len() < k
            {
                wanted.push((pin, VideoSource::Camera));
            }
            for &(p, src) in ranking.iter() {
                if wanted.len() >= k {
                    break;
                }
                if p == own || wanted.contains(&(p, src)) {
                    continue;
                }
                wanted.push((p, src));
            }
            // Stable placement: a source already in a slot keeps it.
            let mut placed = vec![false; wanted.len()];
            let mut free: Vec<usize> = Vec::new();
            for (si, slot) in sub.video_slots.iter().enumerate() {
                let held = slot.target().map(|f| (f.publisher, f.source));
                match held.and_then(|h| wanted.iter().position(|w| *w == h)) {
                    Some(w) if !placed[w] => placed[w] = true,
                    _ => free.push(si),
                }
            }
            let mut free = free.into_iter();
            for (w, &(p, src)) in wanted.iter().enumerate() {
                if placed[w] {
                    continue;
                }
                let Some(si) = free.next() else { break };
                // Provisional layer; the allocator sets the real one.
                sub.video_slots[si].assign(VideoFeed {
                    publisher: p,
                    source: src,
                    layer: Layer::LOW,
                });
                // A paused slot names whom it holds: say who it is now.
                if sub.video_slots[si].is_paused() {
                    sub.mark_slots_changed();
                }
            }
            for si in free {
                if sub.video_slots[si].clear() {
                    sub.mark_slots_changed();
                }
            }
            if show_the_best(&mut sub.video_slots, &wanted) {
                sub.mark_slots_changed();
            }
        }
        self.update_audio_slots(now);
        self.routes_dirty = true;
    }

    /// A loudest-first audio assignment with hysteresis. Returns whether any
    /// holder changed.
    pub(super) fn update_audio_slots(&mut self, now: Instant) -> bool {
        let mut publishers: Vec<(ParticipantId, u64, f32)> = self
            .slab
            .iter()
            .flatten()
            .filter(|p| p.published.audio)
            .map(|p| (p.id, p.join_seq, 0.0))
            .collect();
        for e in &mut publishers {
            e.2 = self.speakers.loudness(e.0, now);
        }
        // Loudest first; join order breaks ties (and decides without levels).
        publishers.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.1.cmp(&b.1)));
        let mut changed = false;
        for sub in self.slab.iter_mut().flatten() {
            if sub.audio_slots.is_empty() {
                continue;
            }
            let own = sub.id;
            let loud = |p: ParticipantId| {
                publishers
                    .iter()
                    .find(|e| e.0 == p)
                    .map(|e| e.2)
                    .unwrap_or(f32::NEG_INFINITY)
            };
            // Fill empty slots with the loudest non-holders.
            for (pid, _, _) in &publishers {
                if *pid == own || sub.audio_slots.iter().any(|s| s.holder() == Some(*pid)) {
                    continue;
                }
                if let Some(slot) = sub.audio_slots.iter_mut().find(|s| s.holder().is_none()) {
                    slot.hand_to(*pid);
                    sub.mark_slots_changed();
                    changed = true;
                    continue;
                }
                // Replace the quietest holder if clearly out-talked.
                let (qi, qloud) = sub
                    .audio_slots
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i, s.holder().map(loud).unwrap_or(f32::NEG_INFINITY)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("audio_slots is not empty");
                if loud(*pid) > qloud + AUDIO_SWITCH_MARGIN {
                    sub.audio_slots[qi].hand_to(*pid);
                    sub.mark_slots_changed();
                    changed = true;
                }
            }
        }
        if changed {
            self.routes_dirty = true;
        }
        changed
    }

    pub(super) fn request_keyframe(&mut self, feed: VideoFeed, now: Instant) {
        let interval = self.config.pli_interval;
        if let Some(&i) = self.index.get(&feed.publisher)
            && let Some(p) = self.slab[i].as_mut()
            && p.connected
            && p.request_keyframe(feed.source, feed.layer, now, interval)
        {
            self.stats.plis_sent += 1;
        }
    }

    /// Every slot whose target differs from what it shows waits for the
    /// target's keyframe: ask the publisher (throttled per publisher layer,
    /// so many subscribers cause one PLI).
    pub(super) fn apply_switches(&mut self, now: Instant) {
        let mut waiting: Vec<VideoFeed> = Vec::new();
        for sub in self.slab.iter().flatten() {
            for t in sub.video_slots.iter().filter_map(|s| s.awaiting_keyframe()) {
                if !waiting.contains(&t) {
                    waiting.push(t);
                }
            }
        }
        for f in waiting {
            self.request_keyframe(f, now);
        }
        self.routes_dirty = true;
    }
}

/// Tiles the link carries show the best-ranked sources: while a slot paused
/// for bandwidth holds a source ranked above one a shown slot holds, the
/// two slots trade sources (the shown slot switches on the better source's
/// keyframe; the paused one names the other and stays paused). A new
/// speaker placed in a paused slot so takes over the tile of the source
/// that fell furthest, instead of a resume in one slot and a pause in
/// another every time the speaker changes on a link that carries only a
/// few tiles. Returns whether a paused slot now holds someone else.
fn show_the_best(slots: &mut [VideoSlot], wanted: &[(ParticipantId, VideoSource)]) -> bool {
    let rank = |s: &VideoSlot| {
        let f = s.target()?;
        wanted.iter().position(|w| *w == (f.publisher, f.source))
    };
    let mut traded = false;
    // Each trade moves a better source into a shown slot: at most one per
    // slot.
    for _ in 0..slots.len() {
        let best_paused = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.bandwidth_paused() && !s.client_paused())
            .filter_map(|(i, s)| Some((rank(s)?, i)))
            .min();
        let worst_shown = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.bandwidth_paused() && !s.client_paused())
            .filter_map(|(i, s)| Some((rank(s)?, i)))
            .max();
        let (Some((rp, p)), Some((rs, s))) = (best_paused, worst_shown) else {
            break;
        };
        if rp >= rs {
            break;
        }
        // Both hold a target: `rank` found one.
        let (Some(better), Some(worse)) = (slots[p].target(), slots[s].target()) else {
            break;
        };
        slots[s].assign(better);
        slots[p].assign(worse);
        traded = true;
    }
    traded
}

fn signed_nanos(t: Instant, base: Instant) -> i128 {
    if t >= base {
        (t - base).as_nanos() as i128
    } else {
        -((base - t).as_nanos() as i128)
    }
}

#[cfg(test)]
mod tests {
    use str0m::media::Mid;

    use super::*;

    fn feed(p: u32) -> VideoFeed {
        VideoFeed {
            publisher: ParticipantId(p),
            source: VideoSource::Camera,
            layer: Layer::LOW,
        }
    }

    /// Slots holding publishers `held` (in slot order); those in `paused`
    /// are paused for bandwidth.
    fn slots(held: &[u32], paused: &[u32]) -> Vec<VideoSlot> {
        held.iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut s = VideoSlot::new(Mid::from(i.to_string().as_str()));
                s.assign(feed(p));
                if paused.contains(&p) {
                    s.pause_for_bandwidth();
                }
                s
            })
            .collect()
    }

    fn held(slots: &[VideoSlot]) -> Vec<u32> {
        slots
            .iter()
            .map(|s| s.target().unwrap().publisher.0)
            .collect()
    }

    fn ranking(order: &[u32]) -> Vec<(ParticipantId, VideoSource)> {
        order
            .iter()
            .map(|&p| (ParticipantId(p), VideoSource::Camera))
            .collect()
    }

    #[test]
    fn a_new_speaker_in_a_paused_slot_takes_the_tile_of_the_lowest_ranked_shown() {
        // 1 and 2 shown, 3 and 4 paused; 4 starts speaking and ranks first.
        let mut s = slots(&[1, 2, 3, 4], &[3, 4]);
        assert!(show_the_best(&mut s, &ranking(&[4, 1, 2, 3])));
        assert_eq!(held(&s), vec![1, 4, 3, 2]);
        // The paused slots stay paused, now holding 3 and 2.
        let paused: Vec<bool> = s.iter().map(VideoSlot::bandwidth_paused).collect();
        assert_eq!(paused, vec![false, false, true, true]);
    }

    #[test]
    fn nothing_moves_while_the_shown_slots_hold_the_best() {
        let mut s = slots(&[1, 2, 3, 4], &[3, 4]);
        assert!(!show_the_best(&mut s, &ranking(&[2, 1, 4, 3])));
        assert_eq!(held(&s), vec![1, 2, 3, 4]);
        // Nothing paused: nothing to trade.
        let mut s = slots(&[1, 2, 3], &[]);
        assert!(!show_the_best(&mut s, &ranking(&[3, 2, 1])));
        assert_eq!(held(&s), vec![1, 2, 3]);
    }

    #[test]
    fn several_trades_at_once_and_a_client_paused_slot_is_left_alone() {
        // 3 and 4 outrank both shown ones; slot 0 is paused by its
        // subscriber and keeps publisher 5 whatever its rank.
        let mut s = slots(&[5, 1, 2, 3, 4], &[3, 4]);
        s[0].pause();
        assert!(show_the_best(&mut s, &ranking(&[5, 3, 4, 1, 2])));
        let h = held(&s);
        assert_eq!(h[0], 5);
        let mut shown: Vec<u32> = vec![h[1], h[2]];
        shown.sort();
        assert_eq!(shown, vec![3, 4]);
    }
}
