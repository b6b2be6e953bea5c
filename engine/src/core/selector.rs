//! Per-slot layer selection, as pure functions: which layers of a publisher
//! a slot may use, the highest it may show, and what to do with each
//! arriving packet while the slot moves from the layer it shows to the one
//! the allocator chose.
//!
//! The room keeps the state (`VideoSlot::current` / `target`, the layer
//! meters) and calls these; the allocator (`core/allocator.rs`) picks the
//! target layer among the available ones.

use std::time::Duration;

/// What a publisher's layer looks like to the selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerState {
    /// The publisher declared the layer (a simulcast rid).
    pub declared: bool,
    /// Dynacast told the publisher to stop sending it.
    pub switched_off: bool,
    /// Time since its last packet, if any arrived.
    pub since_packet: Option<Duration>,
    /// Time since it was (re)requested from the publisher, if ever.
    pub since_activated: Option<Duration>,
}

/// Whether a layer can be forwarded now: declared, and either flowing (a
/// packet within `stall`), just (re)requested (within `grace`, before its
/// first packet arrives), or switched off by dynacast (it resumes when
/// asked). A layer that stops arriving becomes unavailable after `stall`,
/// so the allocator falls back to a lower one at the next tick.
///
/// A switched-off layer whose last request went unanswered (nothing
/// arrived since it was asked for, `grace` ago or more) is not available
/// again until `retry` after that request: a publisher that declares a
/// layer it never sends (Chromium drops the top simulcast layer when the
/// camera is too small for it) would otherwise be asked for it, and told
/// to stop it, every `grace`.
pub(crate) fn layer_available(
    l: LayerState,
    stall: Duration,
    grace: Duration,
    retry: Duration,
) -> bool {
    let unanswered = l
        .since_activated
        .is_some_and(|a| a >= grace && a < retry && l.since_packet.is_none_or(|p| p > a));
    l.declared
        && ((l.switched_off && !unanswered)
            || l.since_packet.is_some_and(|d| d < stall)
            || l.since_activated.is_some_and(|d| d < grace))
}

/// The highest layer a slot may show: the room's cap, the publisher's
/// declared layers, and the subscriber's maximum frame height for the slot
/// (`heights[l]` is layer `l`'s height; the lowest layer is always
/// allowed).
pub(crate) fn max_layer(
    room_max: u8,
    declared: u8,
    max_height: Option<u32>,
    heights: &[u32],
) -> u8 {
    let mut l = room_max.min(declared.max(1) - 1);
    if let Some(maxh) = max_height {
        while l > 0 && heights.get(l as usize).is_some_and(|h| *h > maxh) {
            l -= 1;
        }
    }
    l
}

/// What a slot does with a packet of one feed (publisher, source, layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnPacket {
    /// Not this slot's feed, or the target's delta frame before its
    /// keyframe: drop it.
    Drop,
    /// The feed the slot shows: forward it.
    Forward,
    /// The first packet of a keyframe of the target feed: re-base the
    /// slot's stream on it, show the target from now on, and forward it.
    Switch,
}

/// The keyframe-aligned switch rule. `current` is what the slot shows,
/// `target` what the allocator wants, `feed` the packet's feed, and
/// `starts_keyframe` whether the packet is the first of a keyframe. The old
/// feed keeps flowing until the target's keyframe arrives, so a subscriber
/// never receives a delta frame of a layer before that layer's keyframe,
/// and never a gap while it waits.
pub(crate) fn on_packet<F: PartialEq + Copy>(
    current: Option<F>,
    target: Option<F>,
    feed: F,
    starts_keyframe: bool,
) -> OnPacket {
    if target == Some(feed) && current != Some(feed) {
        return if starts_keyframe {
            OnPacket::Switch
        } else {
            OnPacket::Drop
        };
    }
    if current == Some(feed) {
        OnPacket::Forward
    } else {
        OnPacket::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_millis(500);
    const GRACE: Duration = Duration::from_secs(2);
    const RETRY: Duration = Duration::from_secs(30);

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    #[test]
    fn availability_table() {
        let on = LayerState {
            declared: true,
            switched_off: false,
            since_packet: None,
            since_activated: None,
        };
        #[rustfmt::skip]
        let table = [
            // (state, available)
            (LayerState { since_packet: ms(20), ..on }, true),       // flowing
            (LayerState { since_packet: ms(499), ..on }, true),
            (LayerState { since_packet: ms(500), ..on }, false),     // stalled: fall back
            (LayerState { since_activated: ms(100), ..on }, true),   // just requested
            (LayerState { since_activated: ms(2000), ..on }, false), // requested, never came
            (LayerState { since_packet: ms(900), since_activated: ms(300), ..on }, true),
            (LayerState { switched_off: true, ..on }, true),         // dynacast off: resumes
            // Asked for 5 s ago, it came, then was switched off: resumes.
            (LayerState { switched_off: true, since_activated: ms(5000), since_packet: ms(1000), ..on }, true),
            // Asked for 5 s ago, nothing came: not asked again for a while...
            (LayerState { switched_off: true, since_activated: ms(5000), ..on }, false),
            (LayerState { switched_off: true, since_activated: ms(5000), since_packet: ms(9000), ..on }, false),
            // ...until the retry interval has passed.
            (LayerState { switched_off: true, since_activated: ms(30000), ..on }, true),
            (LayerState { declared: false, since_packet: ms(1), ..on }, false),
            (on, false),                                             // never seen
        ];
        for (i, (state, want)) in table.into_iter().enumerate() {
            assert_eq!(
                layer_available(state, STALL, GRACE, RETRY),
                want,
                "row {i}: {state:?}"
            );
        }
    }

    #[test]
    fn max_layer_table() {
        let heights = [180, 360, 720];
        #[rustfmt::skip]
        let table = [
            // (room max, declared, subscriber max height, layer)
            (2, 3, None, 2),
            (1, 3, None, 1),          // room caps at m
            (2, 1, None, 0),          // single-layer publisher (screen share)
            (2, 0, None, 0),          // nothing declared yet
            (2, 3, Some(720), 2),
            (2, 3, Some(480), 1),     // 720p too tall
            (2, 3, Some(360), 1),
            (2, 3, Some(200), 0),
            (2, 3, Some(90), 0),      // the lowest layer is always allowed
            (1, 3, Some(1080), 1),
        ];
        for (i, (room, declared, height, want)) in table.into_iter().enumerate() {
            assert_eq!(max_layer(room, declared, height, &heights), want, "row {i}");
        }
    }

    #[test]
    fn switch_rule_table() {
        // Feeds as (publisher, layer).
        let (a_l, a_m, b_l) = ((1, 0), (1, 1), (2, 0));
        #[rustfmt::skip]
        let table = [
            // (current, target, packet feed, starts keyframe, action)
            (Some(a_l), Some(a_l), a_l, false, OnPacket::Forward),
            (Some(a_l), Some(a_m), a_l, false, OnPacket::Forward), // old layer flows on
            (Some(a_l), Some(a_m), a_m, false, OnPacket::Drop),    // target delta frame
            (Some(a_l), Some(a_m), a_m, true, OnPacket::Switch),   // target keyframe
            (Some(a_m), Some(a_l), a_l, true, OnPacket::Switch),   // downgrade: same rule
            (Some(a_l), Some(b_l), b_l, true, OnPacket::Switch),   // new publisher
            (Some(a_l), Some(b_l), a_l, true, OnPacket::Forward),
            (None, Some(a_l), a_l, false, OnPacket::Drop),         // new slot waits
            (None, Some(a_l), a_l, true, OnPacket::Switch),
            (Some(a_l), Some(a_l), a_m, true, OnPacket::Drop),     // not this slot's layer
            (Some(a_l), None, a_l, false, OnPacket::Forward),
            (None, None, a_l, true, OnPacket::Drop),
        ];
        for (i, (current, target, feed, key, want)) in table.into_iter().enumerate() {
            assert_eq!(on_packet(current, target, feed, key), want, "row {i}");
        }
    }
}
