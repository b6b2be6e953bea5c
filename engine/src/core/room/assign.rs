//! Slot assignment: which publisher fills which of a subscriber's slots.
//!
//! Video: one room-wide ranking (screens, the active speaker, recent
//! speakers, join order); each subscriber takes its first sources in that
//! order (its pin after the screens), and a source already in a slot keeps
//! it. The allocator ([`super::bandwidth`]) then picks each slot's layer.
//! Audio: loudest first, with hysteresis.

use std::time::Instant;

use super::Room;
use crate::core::participant::{VideoFeed, source_index};
use crate::core::slot::VideoSlot;
use crate::ids::{Layer, ParticipantId, VideoCodec, VideoSource};
use crate::join::VideoPts;

/// Audio slot hysteresis: a challenger must be this much louder (dB) than
/// the quietest holder to take its slot.
const AUDIO_SWITCH_MARGIN: f32 = 6.0;

impl Room {
    /// The room-wide order in which video sources claim slots: screen shares
    /// first, then the active speaker, then recent speakers (most recent
    /// first), then join order. Each with the codec it sends.
    fn video_ranking(&self, base: Instant) -> Vec<Want> {
        let speaker = self.speakers.current();
        let mut ranked: Vec<(u8, i128, u64, Want)> = Vec::new();
        for p in self.slab.iter().flatten() {
            let codec = |s: VideoSource| p.video_codec[source_index(s)];
            if p.published.screen
                && let Some(codec) = codec(VideoSource::Screen)
            {
                let since = p
                    .published
                    .screen_since
                    .map(|t| signed_nanos(t, base))
                    .unwrap_or(0);
                ranked.push((0, since, p.join_seq, (p.id, VideoSource::Screen, codec)));
            }
            if p.published.camera
                && let Some(codec) = codec(VideoSource::Camera)
            {
                let (class, key) = if Some(p.id) == speaker {
                    (1, 0)
                } else if let Some(t) = self.speakers.last_spoke(p.id) {
                    (2, -signed_nanos(t, base))
                } else {
                    (3, 0)
                };
                ranked.push((class, key, p.join_seq, (p.id, VideoSource::Camera, codec)));
            }
        }
        ranked.sort();
        ranked.into_iter().map(|r| r.3).collect()
    }

    /// Decide which publisher fills which video slot (layers are the
    /// bandwidth allocator's job: [`Room::allocate_all`]). A slot only ever
    /// gets a source whose codec its m-line negotiated.
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
            let pts: Vec<VideoPts> = sub.video_slots.iter().map(|s| s.pts).collect();
            // Every slot negotiated the same codecs (the usual case): a
            // source any slot takes fits any free slot.
            let uniform = pts.iter().all(|p| *p == pts[0]);
            let fits = |w: &Want| pts.iter().any(|p| p.accepts(w.2));
            // Screens first, then the pinned camera, then the rest in ranking order.
            let pinned = sub.pinned.filter(|p| *p != own).and_then(|pin| {
                ranking
                    .iter()
                    .find(|w| w.0 == pin && w.1 == VideoSource::Camera)
            });
            let candidates = ranking
                .iter()
                .filter(|w| w.1 == VideoSource::Screen && w.0 != own)
                .chain(pinned)
                .chain(ranking.iter().filter(|w| w.0 != own))
                .filter(|w| fits(w));
            let mut wanted: Vec<Want> = Vec::with_capacity(k);
            for &w in candidates {
                if wanted.len() >= k {
                    break;
                }
                if wanted.iter().any(|x| (x.0, x.1) == (w.0, w.1)) {
                    continue;
                }
                wanted.push(w);
                // With slots of different codecs, take a source only while
                // all the wanted ones still fit in slots of their codecs.
                if !uniform
                    && place(&pts, &wanted, vec![None; k]).iter().flatten().count() < wanted.len()
                {
                    wanted.pop();
                }
            }
            // Stable placement: a source already in a slot keeps it (if the
            // slot still takes its codec).
            let mut initial: Vec<Option<usize>> = vec![None; k];
            let mut placed = vec![false; wanted.len()];
            for (si, slot) in sub.video_slots.iter().enumerate() {
                let held = slot.target().map(|f| (f.publisher, f.source));
                if let Some(w) = held.and_then(|h| wanted.iter().position(|w| (w.0, w.1) == h))
                    && !placed[w]
                    && pts[si].accepts(wanted[w].2)
                {
                    placed[w] = true;
                    initial[si] = Some(w);
                }
            }
            let placement = place(&pts, &wanted, initial);
            for (si, w) in placement.into_iter().enumerate() {
                let slot = &mut sub.video_slots[si];
                let Some(w) = w else {
                    if slot.clear() {
                        sub.mark_slots_changed();
                    }
                    continue;
                };
                let (p, src, _) = wanted[w];
                if slot.target().map(|f| (f.publisher, f.source)) == Some((p, src)) {
                    continue;
                }
                // Provisional layer; the allocator sets the real one.
                slot.assign(VideoFeed {
                    publisher: p,
                    source: src,
                    layer: Layer::LOW,
                });
                // A paused slot names whom it holds: say who it is now.
                if slot.is_paused() {
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
fn show_the_best(slots: &mut [VideoSlot], wanted: &[Want]) -> bool {
    let rank = |s: &VideoSlot| {
        let f = s.target()?;
        wanted
            .iter()
            .position(|w| (w.0, w.1) == (f.publisher, f.source))
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
        // No trade that would put a source in a slot without its codec.
        if !slots[s].pts.accepts(wanted[rp].2) || !slots[p].pts.accepts(wanted[rs].2) {
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

/// A source that wants a slot: publisher, track and the codec it sends.
type Want = (ParticipantId, VideoSource, VideoCodec);

/// Place `wanted` sources in slots whose codecs they fit (`pts`), starting
/// from `initial` (slot -> wanted index: the sources that stay where they
/// are). Each unplaced source takes the first free slot that fits it, else
/// moves a placed one along an augmenting path (Kuhn's algorithm), so when
/// the wanted sources fit at all they all get a slot and a source moves
/// only when that is the only way. Returns slot -> wanted index.
fn place(pts: &[VideoPts], wanted: &[Want], initial: Vec<Option<usize>>) -> Vec<Option<usize>> {
    fn augment(
        w: usize,
        pts: &[VideoPts],
        wanted: &[Want],
        of_slot: &mut [Option<usize>],
        visited: &mut [bool],
    ) -> bool {
        for si in 0..pts.len() {
            if visited[si] || !pts[si].accepts(wanted[w].2) {
                continue;
            }
            visited[si] = true;
            let free = match of_slot[si] {
                None => true,
                Some(other) => augment(other, pts, wanted, of_slot, visited),
            };
            if free {
                of_slot[si] = Some(w);
                return true;
            }
        }
        false
    }
    let mut of_slot = initial;
    for w in 0..wanted.len() {
        if of_slot.contains(&Some(w)) {
            continue;
        }
        if let Some(si) =
            (0..pts.len()).find(|&si| of_slot[si].is_none() && pts[si].accepts(wanted[w].2))
        {
            of_slot[si] = Some(w);
            continue;
        }
        let mut visited = vec![false; pts.len()];
        augment(w, pts, wanted, &mut of_slot, &mut visited);
    }
    of_slot
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

    /// Slots holding publishers `held` (in slot order); those in `paused`
    /// are paused for bandwidth.
    fn slots(held: &[u32], paused: &[u32]) -> Vec<VideoSlot> {
        held.iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut s = VideoSlot::new(
                    Mid::from(i.to_string().as_str()),
                    crate::join::VideoPts::vp8_for_tests(),
                );
                s.assign(VideoFeed::camera_low(p));
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

    fn ranking(order: &[u32]) -> Vec<Want> {
        order
            .iter()
            .map(|&p| (ParticipantId(p), VideoSource::Camera, VideoCodec::Vp8))
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

    fn pts(vp8: bool, h264: bool) -> VideoPts {
        VideoPts {
            vp8: vp8.then(|| 96.into()),
            h264: h264.then(|| 108.into()),
        }
    }

    fn want(p: u32, codec: VideoCodec) -> Want {
        (ParticipantId(p), VideoSource::Camera, codec)
    }

    #[test]
    fn placement_never_puts_a_source_in_a_slot_without_its_codec() {
        use VideoCodec::{H264, Vp8};
        // Slot 0 takes VP8 only, slot 1 H.264 only, slot 2 both.
        let slots = [pts(true, false), pts(false, true), pts(true, true)];
        let wanted = [want(1, H264), want(2, Vp8), want(3, H264)];
        let placed = place(&slots, &wanted, vec![None; 3]);
        for (si, w) in placed.iter().enumerate() {
            let w = w.expect("all three fit");
            assert!(
                slots[si].accepts(wanted[w].2),
                "slot {si} got {:?}",
                wanted[w]
            );
        }
        // Two H.264 sources and one slot that takes only VP8 left: the
        // VP8 slot stays empty rather than take an H.264 source.
        let slots = [pts(true, false), pts(true, true)];
        let placed = place(&slots, &[want(1, H264), want(3, H264)], vec![None; 2]);
        assert_eq!(placed, vec![None, Some(0)]);
    }

    #[test]
    fn placement_moves_a_held_source_only_when_it_must() {
        use VideoCodec::{H264, Vp8};
        // Slot 0 (both codecs) holds VP8 source 0; an H.264 source arrives
        // and only slot 0 takes H.264: source 0 moves to the VP8 slot 1.
        let slots = [pts(true, true), pts(true, false)];
        let wanted = [want(1, Vp8), want(2, H264)];
        assert_eq!(
            place(&slots, &wanted, vec![Some(0), None]),
            vec![Some(1), Some(0)]
        );
        // With a free slot that fits, nothing moves.
        let slots = [pts(true, true), pts(true, true)];
        assert_eq!(
            place(&slots, &wanted, vec![Some(0), None]),
            vec![Some(0), Some(1)]
        );
    }
}
