//! A subscriber's receive slots and their state machines.
//!
//! A video slot shows one feed (`current`) and may be moving to another
//! (`target`): the allocator or the reassignment picks the target, and the
//! slot switches on the target's first keyframe packet
//! ([`VideoSlot::on_packet`]). Two independent pauses stop it: the
//! subscriber's (`pause`/`resume` control messages) and the allocator's
//! (not even the lowest layer fits the downlink). Every transition is a
//! method here; the room decides when to call which.
//!
//! An audio slot holds one publisher and re-bases its stream on the holder's
//! next packet after a change.

use std::time::Instant;

use str0m::media::Mid;
use str0m::rtp::Ssrc;

use crate::core::received::ReceivedAt;
use crate::core::rewriter::Rewriter;
use crate::core::selector::{self, OnPacket};
use crate::ids::{Layer, ParticipantId, VideoSource};
use crate::join::VideoPts;

/// A publisher's video track at one simulcast layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct VideoFeed {
    pub publisher: ParticipantId,
    pub source: VideoSource,
    pub layer: Layer,
}

impl VideoFeed {
    /// Publisher `p`'s camera at the lowest layer (tests).
    #[cfg(test)]
    pub(crate) fn camera_low(p: u32) -> Self {
        VideoFeed {
            publisher: ParticipantId(p),
            source: VideoSource::Camera,
            layer: Layer::LOW,
        }
    }

    /// Same publisher and source (any layer).
    fn same_track(&self, o: &VideoFeed) -> bool {
        self.publisher == o.publisher && self.source == o.source
    }
}

/// One recvonly video m-line of a subscriber.
#[derive(Debug)]
pub(crate) struct VideoSlot {
    pub mid: Mid,
    /// Cached send SSRC (`stream_tx` by SSRC is a hash lookup; by mid a scan).
    pub ssrc: Option<Ssrc>,
    pub rewriter: Rewriter,
    /// Receive stamps of the packets written lately (SFU latency).
    pub received: ReceivedAt,
    /// Subscriber's cap on the forwarded frame height.
    pub max_height: Option<u32>,
    /// What the slot should show.
    target: Option<VideoFeed>,
    /// What the slot shows now (switches to `target` on its keyframe).
    current: Option<VideoFeed>,
    /// The subscriber asked not to receive video in this slot.
    paused: bool,
    /// The bandwidth allocator paused this slot (not even the lowest layer fits).
    bw_paused: bool,
    /// When the allocator last lowered this slot's layer or paused it.
    pub lowered_at: Option<Instant>,
    /// The codecs the m-line negotiated and their payload types: the slot
    /// shows only publishers sending one of them (no transcoding).
    pub pts: VideoPts,
}

impl VideoSlot {
    pub fn new(mid: Mid, pts: VideoPts) -> Self {
        VideoSlot {
            pts,
            mid,
            ssrc: None,
            rewriter: Rewriter::new(90_000),
            received: ReceivedAt::default(),
            max_height: None,
            target: None,
            current: None,
            paused: false,
            bw_paused: false,
            lowered_at: None,
        }
    }

    /// What the slot shows now.
    #[inline]
    pub fn current(&self) -> Option<VideoFeed> {
        self.current
    }

    /// What the slot should show (its layer is the allocator's choice, even
    /// while paused for bandwidth).
    #[inline]
    pub fn target(&self) -> Option<VideoFeed> {
        self.target
    }

    /// Paused by the subscriber.
    #[inline]
    pub fn client_paused(&self) -> bool {
        self.paused
    }

    /// Paused by the allocator.
    #[inline]
    pub fn bandwidth_paused(&self) -> bool {
        self.bw_paused
    }

    /// Paused for either reason: nothing is forwarded into it.
    #[inline]
    pub fn is_paused(&self) -> bool {
        self.paused || self.bw_paused
    }

    /// The target at the layer the allocator gave it, unless paused for
    /// bandwidth.
    pub fn allocated(&self) -> Option<VideoFeed> {
        self.target.filter(|_| !self.bw_paused)
    }

    /// Whether the target is the same track as what the slot shows (a layer
    /// change rather than a new publisher or source).
    pub fn target_is_shown_track(&self) -> bool {
        matches!((self.current, self.target), (Some(c), Some(t)) if c.same_track(&t))
    }

    /// The feed whose keyframe the slot waits for: a target it does not
    /// show yet, while not paused.
    pub fn awaiting_keyframe(&self) -> Option<VideoFeed> {
        let t = self.target?;
        (self.current != Some(t) && !self.is_paused()).then_some(t)
    }

    /// The feeds that must keep flowing for this slot: what it shows and
    /// what it waits for (none while paused).
    pub fn watched(&self) -> impl Iterator<Item = VideoFeed> {
        let active = !self.is_paused();
        [self.current, self.target]
            .into_iter()
            .flatten()
            .filter(move |_| active)
    }

    /// The publishers whose packets can reach the slot (shown and target,
    /// each once).
    pub fn publishers(&self) -> [Option<ParticipantId>; 2] {
        let mut pubs = [
            self.current.map(|f| f.publisher),
            self.target.map(|f| f.publisher),
        ];
        if pubs[0] == pubs[1] {
            pubs[1] = None;
        }
        pubs
    }

    /// Reassignment: move to `feed` (at a provisional layer; the allocator
    /// sets the real one). The slot keeps showing its current feed until
    /// `feed`'s keyframe.
    pub fn assign(&mut self, feed: VideoFeed) {
        self.target = Some(feed);
    }

    /// Reassignment left the slot empty: show nothing, want nothing. Returns
    /// whether the subscriber sees a change.
    pub fn clear(&mut self) -> bool {
        let changed = self.target.is_some() || self.current.is_some();
        self.target = None;
        self.current = None;
        changed
    }

    /// `publisher` left: the slot goes dark at once if it showed it, and
    /// stops waiting for it. Returns whether what the slot shows changed.
    pub fn forget_publisher(&mut self, publisher: ParticipantId) -> bool {
        if self.target.is_some_and(|f| f.publisher == publisher) {
            self.target = None;
        }
        if self.current.is_some_and(|f| f.publisher == publisher) {
            self.current = None;
            return true;
        }
        false
    }

    /// The allocator found no layer that fits: pause, showing nothing (a
    /// resume waits for a keyframe). Returns whether this changed anything.
    pub fn pause_for_bandwidth(&mut self) -> bool {
        if self.bw_paused {
            return false;
        }
        self.bw_paused = true;
        self.current = None;
        true
    }

    /// The allocator gave the target `layer` (lifting a bandwidth pause).
    /// Returns whether the pause was lifted. A slot with no target is left
    /// alone.
    pub fn allocate_layer(&mut self, layer: Layer) -> bool {
        let Some(t) = self.target.as_mut() else {
            return false;
        };
        t.layer = layer;
        std::mem::replace(&mut self.bw_paused, false)
    }

    /// The subscriber paused the slot.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// The subscriber resumed the slot: it restarts on a fresh keyframe.
    /// Returns whether it was paused.
    pub fn resume(&mut self) -> bool {
        if !self.paused {
            return false;
        }
        self.paused = false;
        self.current = None;
        true
    }

    /// Whether a packet of `feed` is dropped because the slot waits for that
    /// feed's first keyframe while showing nothing.
    #[inline]
    pub fn waits_first_keyframe_of(&self, feed: VideoFeed) -> bool {
        self.current.is_none() && self.target == Some(feed)
    }

    /// A packet of `feed` (`keyframe`: it starts a keyframe) arrives: the
    /// keyframe-aligned switch rule ([`selector::on_packet`]). On
    /// [`OnPacket::Switch`] the slot shows `feed` from now on; the caller
    /// re-bases the rewriter.
    #[inline]
    pub fn on_packet(&mut self, feed: VideoFeed, keyframe: bool) -> OnPacket {
        let r = selector::on_packet(self.current, self.target, feed, keyframe);
        if r == OnPacket::Switch {
            self.current = Some(feed);
        }
        r
    }
}

/// One recvonly audio m-line of a subscriber.
#[derive(Debug)]
pub(crate) struct AudioSlot {
    pub mid: Mid,
    pub ssrc: Option<Ssrc>,
    pub rewriter: Rewriter,
    /// Receive stamps of the packets written lately (SFU latency).
    pub received: ReceivedAt,
    holder: Option<ParticipantId>,
    /// The holder changed; re-base on its next packet.
    switch_pending: bool,
}

impl AudioSlot {
    pub fn new(mid: Mid) -> Self {
        AudioSlot {
            mid,
            ssrc: None,
            rewriter: Rewriter::new(48_000),
            received: ReceivedAt::default(),
            holder: None,
            switch_pending: false,
        }
    }

    /// Whose audio the slot carries.
    #[inline]
    pub fn holder(&self) -> Option<ParticipantId> {
        self.holder
    }

    /// Carry `publisher` from its next packet on.
    pub fn hand_to(&mut self, publisher: ParticipantId) {
        self.holder = Some(publisher);
        self.switch_pending = true;
    }

    /// `publisher` left: free the slot if it held it. Returns whether it did.
    pub fn forget_publisher(&mut self, publisher: ParticipantId) -> bool {
        if self.holder == Some(publisher) {
            self.holder = None;
            return true;
        }
        false
    }

    /// Whether this packet is the holder's first since the change (the
    /// stream re-bases on it); true once per change.
    #[inline]
    pub fn take_switch(&mut self) -> bool {
        std::mem::replace(&mut self.switch_pending, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(p: u32, layer: u8) -> VideoFeed {
        VideoFeed {
            publisher: ParticipantId(p),
            source: VideoSource::Camera,
            layer: Layer(layer),
        }
    }

    fn slot() -> VideoSlot {
        VideoSlot::new(Mid::from("1"), VideoPts::vp8_for_tests())
    }

    #[test]
    fn assigned_feed_shows_from_its_keyframe() {
        let mut s = slot();
        s.assign(feed(1, 0));
        assert_eq!(s.awaiting_keyframe(), Some(feed(1, 0)));
        assert!(s.waits_first_keyframe_of(feed(1, 0)));
        assert_eq!(s.on_packet(feed(1, 0), false), OnPacket::Drop);
        assert_eq!(s.current(), None);
        assert_eq!(s.on_packet(feed(1, 0), true), OnPacket::Switch);
        assert_eq!(s.current(), Some(feed(1, 0)));
        assert_eq!(s.awaiting_keyframe(), None);
        assert_eq!(s.on_packet(feed(1, 0), false), OnPacket::Forward);
    }

    #[test]
    fn layer_change_keeps_the_old_layer_until_the_new_keyframe() {
        let mut s = slot();
        s.assign(feed(1, 0));
        s.on_packet(feed(1, 0), true);
        assert!(!s.allocate_layer(Layer(2)), "was not paused");
        assert_eq!(s.target(), Some(feed(1, 2)));
        assert!(s.target_is_shown_track());
        assert_eq!(s.on_packet(feed(1, 0), false), OnPacket::Forward);
        assert_eq!(s.on_packet(feed(1, 2), false), OnPacket::Drop);
        assert!(!s.waits_first_keyframe_of(feed(1, 2)), "it shows layer 0");
        assert_eq!(s.on_packet(feed(1, 2), true), OnPacket::Switch);
        assert_eq!(s.on_packet(feed(1, 0), false), OnPacket::Drop);
    }

    #[test]
    fn bandwidth_pause_goes_dark_and_lifts_on_a_layer() {
        let mut s = slot();
        s.assign(feed(1, 1));
        s.on_packet(feed(1, 1), true);
        assert!(s.pause_for_bandwidth());
        assert!(!s.pause_for_bandwidth(), "already paused");
        assert!(s.is_paused() && s.bandwidth_paused() && !s.client_paused());
        assert_eq!(s.current(), None);
        assert_eq!(s.allocated(), None);
        assert_eq!(s.awaiting_keyframe(), None, "paused slots wait for nothing");
        assert_eq!(s.watched().count(), 0);
        assert!(s.allocate_layer(Layer(0)));
        assert_eq!(s.allocated(), Some(feed(1, 0)));
        assert_eq!(s.awaiting_keyframe(), Some(feed(1, 0)));
    }

    #[test]
    fn allocating_a_slot_without_target_does_nothing() {
        let mut s = slot();
        assert!(!s.allocate_layer(Layer(1)));
        assert_eq!(s.target(), None);
    }

    #[test]
    fn client_resume_restarts_on_a_keyframe() {
        let mut s = slot();
        assert!(!s.resume(), "not paused");
        s.assign(feed(1, 0));
        s.on_packet(feed(1, 0), true);
        s.pause();
        assert!(s.client_paused() && s.is_paused());
        assert_eq!(s.current(), Some(feed(1, 0)), "pausing keeps the feed");
        assert!(s.resume());
        assert_eq!(s.current(), None);
        assert_eq!(s.awaiting_keyframe(), Some(feed(1, 0)));
    }

    #[test]
    fn leaving_publisher_clears_only_its_slots() {
        let mut s = slot();
        s.assign(feed(1, 0));
        s.on_packet(feed(1, 0), true);
        s.assign(feed(2, 0));
        assert_eq!(
            s.publishers(),
            [Some(ParticipantId(1)), Some(ParticipantId(2))]
        );
        assert!(!s.forget_publisher(ParticipantId(2)), "2 was not shown");
        assert_eq!(s.target(), None);
        assert_eq!(s.current(), Some(feed(1, 0)));
        assert!(s.forget_publisher(ParticipantId(1)));
        assert_eq!(s.current(), None);
        assert!(!s.clear(), "already empty");
    }

    #[test]
    fn clear_reports_a_visible_change() {
        let mut s = slot();
        s.assign(feed(3, 0));
        assert_eq!(s.publishers(), [None, Some(ParticipantId(3))]);
        assert!(s.clear());
        assert_eq!((s.current(), s.target()), (None, None));
    }

    #[test]
    fn audio_slot_rebases_once_per_holder_change() {
        let mut a = AudioSlot::new(Mid::from("2"));
        assert!(!a.take_switch());
        a.hand_to(ParticipantId(4));
        assert_eq!(a.holder(), Some(ParticipantId(4)));
        assert!(a.take_switch());
        assert!(!a.take_switch());
        assert!(!a.forget_publisher(ParticipantId(5)));
        assert!(a.forget_publisher(ParticipantId(4)));
        assert_eq!(a.holder(), None);
    }
}
