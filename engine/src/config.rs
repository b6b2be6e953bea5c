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
    /// The simulcast layer forwarded into every video slot until a layer
    /// selector decides otherwise, capped by the slot's requested maximum
    /// resolution. Default [`Layer::LOW`].
    pub fixed_layer: Layer,
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
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            max_participants: 50,
            max_video_slots: 49,
            max_audio_slots: 8,
            fixed_layer: Layer::LOW,
            layer_heights: vec![180, 360, 720],
            pli_interval: Duration::from_millis(500),
            speaker_switch_hold: Duration::from_millis(500),
            reassign_interval: Duration::from_millis(250),
            rtx_cache_packets: 512,
            rtx_cache_age: Duration::from_millis(1500),
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

    /// Set [`RoomConfig::fixed_layer`].
    pub fn fixed_layer(mut self, layer: Layer) -> Self {
        self.fixed_layer = layer;
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
