//! Per-room and per-join configuration. Every field has a default that serves
//! a 50-person call.

use std::time::Duration;

use crate::ids::Layer;

/// Configuration of one room.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Display name (theme) of the room.
    pub name: String,
    /// Joins beyond this many participants are refused with
    /// [`Error::RoomFull`](crate::Error::RoomFull). Default 50.
    pub max_participants: usize,
    /// Most recvonly video m-lines (slots) one offer may carry. Default 49.
    pub max_video_slots: usize,
    /// Most recvonly audio m-lines (slots) one offer may carry. Default 8.
    pub max_audio_slots: usize,
    /// The highest simulcast layer ever forwarded; the bandwidth allocator
    /// picks at or below it, capped further by each slot's requested maximum
    /// resolution. Default [`Layer::HIGH`].
    pub max_layer: Layer,
    /// The layer featured slots (screen share, pinned, active speaker) climb
    /// to before the other slots get their lowest layer. Default
    /// [`Layer::MEDIUM`].
    pub featured_layer: Layer,
    /// Send-side bandwidth estimation (TWCC + GCC in str0m) on every
    /// participant, driving the per-subscriber allocator. Default on; off
    /// means every slot gets its cap.
    pub bandwidth_estimation: bool,
    /// The estimate a new participant starts from (enough for a grid of `l`
    /// and the speaker on `m`; str0m probes from there). Default 2.5 Mbps.
    pub initial_bitrate_bps: u64,
    /// Bitrate kept for each audio slot before video is allocated: what its
    /// holder measurably sends, and at least this. Default 40 kbps.
    pub audio_reserve_bps: u64,
    /// Share of the estimate the allocator hands out (the rest absorbs
    /// keyframe bursts). Default 0.85.
    pub estimate_utilization: f64,
    /// Estimate rises smaller than this fraction are ignored (falls always
    /// count: the allocator's discount on layers a slot already has keeps
    /// small falls from flipping layers). Default 0.15.
    pub estimate_hysteresis: f64,
    /// After a downgrade forced by the estimate, no slot is upgraded for
    /// this long. Default 4 s.
    pub upgrade_hold: Duration,
    /// A forwarded layer that stops arriving for this long is replaced by a
    /// lower one. Default 500 ms.
    pub layer_stall: Duration,
    /// Assumed bitrate of each layer until it has been measured (lowest first).
    /// Default 150 kbps, 500 kbps, 1.5 Mbps.
    pub layer_bitrate_hints: Vec<u64>,
    /// Nominal frame heights of the layers (lowest first), used to honour a
    /// subscriber's per-slot maximum resolution. Default 180, 360, 720.
    pub layer_heights: Vec<u32>,
    /// Minimum time between two keyframe requests (PLI) to one publisher layer.
    /// Default 500 ms: 49 subscribers switching at once cause one PLI.
    pub pli_interval: Duration,
    /// How long the active speaker must be out-talked before it changes.
    /// Default 500 ms.
    pub speaker_switch_hold: Duration,
    /// How often slot assignments are re-evaluated after speaker changes.
    /// Default 250 ms.
    pub reassign_interval: Duration,
    /// RTX cache per forwarded video slot: packets and age. Answers subscriber
    /// NACKs without asking the publisher. Default 512 packets / 1.5 s.
    pub rtx_cache_packets: usize,
    /// See [`RoomConfig::rtx_cache_packets`].
    pub rtx_cache_age: Duration,
    /// A participant from whom no datagram its session accepts (STUN
    /// consent check, DTLS, SRTP, SRTCP) has arrived for this long is
    /// removed with [`LeaveReason::Timeout`](crate::LeaveReason::Timeout),
    /// exactly as if it had left. Counted from the join until the first
    /// datagram. Browsers send a consent check at least every 5 s (RFC 7675)
    /// and RTCP every second, so a live peer is never this quiet.
    /// Default 10 s.
    pub inactivity_timeout: Duration,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            max_participants: 50,
            max_video_slots: 49,
            max_audio_slots: 8,
            max_layer: Layer::HIGH,
            featured_layer: Layer::MEDIUM,
            bandwidth_estimation: true,
            initial_bitrate_bps: 2_500_000,
            audio_reserve_bps: 40_000,
            estimate_utilization: 0.85,
            estimate_hysteresis: 0.15,
            upgrade_hold: Duration::from_secs(4),
            layer_stall: Duration::from_millis(500),
            layer_bitrate_hints: vec![150_000, 500_000, 1_500_000],
            layer_heights: vec![180, 360, 720],
            pli_interval: Duration::from_millis(500),
            speaker_switch_hold: Duration::from_millis(500),
            reassign_interval: Duration::from_millis(250),
            rtx_cache_packets: 512,
            rtx_cache_age: Duration::from_millis(1500),
            inactivity_timeout: Duration::from_secs(10),
        }
    }
}

impl RoomConfig {
    /// A room with a display name and default limits.
    pub fn named(name: impl Into<String>) -> Self {
        RoomConfig {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Set [`RoomConfig::max_participants`].
    pub fn max_participants(mut self, n: usize) -> Self {
        self.max_participants = n;
        self
    }

    /// Set [`RoomConfig::inactivity_timeout`].
    pub fn inactivity_timeout(mut self, d: Duration) -> Self {
        self.inactivity_timeout = d;
        self
    }

    /// Set [`RoomConfig::max_layer`].
    pub fn max_layer(mut self, layer: Layer) -> Self {
        self.max_layer = layer;
        self
    }
}

/// Options of one join.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// Display name shown to the others.
    pub name: String,
}

impl JoinOptions {
    /// Join under a display name.
    pub fn new(name: impl Into<String>) -> Self {
        JoinOptions { name: name.into() }
    }
}
