//! The JSON messages carried on each participant's control data channel
//! (label `control`). See `docs/api.md` for the reference.

use serde::{Deserialize, Serialize};

/// One participant as the others see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParticipantInfo {
    /// Participant id (`p12`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Publishes audio.
    pub audio: bool,
    /// Publishes a camera.
    pub video: bool,
    /// Publishes a screen share.
    pub screen: bool,
}

/// What fills one video receive slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VideoSlotInfo {
    /// The m-line of the client's offer this slot is.
    pub mid: String,
    /// The publisher shown, or held while the slot is paused; `null` when
    /// empty.
    pub participant: Option<String>,
    /// `camera` or `screen`.
    pub source: Option<crate::ids::VideoSource>,
    /// Simulcast layer forwarded (`l`, `m`, `h`).
    pub layer: Option<String>,
    /// No video flows into this slot: the subscriber paused it, or the
    /// engine did because its downlink cannot carry even the lowest layer.
    pub paused: bool,
    /// Why it is paused: `client` or `bandwidth` (`null` when not paused).
    pub paused_reason: Option<String>,
}

/// What fills one audio receive slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AudioSlotInfo {
    /// The m-line of the client's offer this slot is.
    pub mid: String,
    /// The publisher heard, `null` when empty.
    pub participant: Option<String>,
}

/// Engine -> client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message after the channel opens.
    Welcome {
        /// The client's own id.
        participant: String,
        /// The room.
        room: String,
    },
    /// The full participant list (sent on every change).
    Participants {
        /// Everyone in the room, the receiver included.
        participants: Vec<ParticipantInfo>,
    },
    /// Who is in which slot (sent whenever a slot changes publisher).
    Slots {
        /// Video slots in offer order.
        video: Vec<VideoSlotInfo>,
        /// Audio slots in offer order.
        audio: Vec<AudioSlotInfo>,
    },
    /// The dominant speaker changed.
    ActiveSpeaker {
        /// The speaker, `null` when the room is silent.
        participant: Option<String>,
    },
    /// Dynacast: which layers of one of the receiver's own video sources
    /// anybody watches. The client may stop encoding the others until they
    /// are listed again (then it should start with a keyframe).
    PublishLayers {
        /// `camera` or `screen`.
        source: crate::ids::VideoSource,
        /// One flag per layer, in the order of the offer's rids (lowest first).
        active: Vec<bool>,
    },
    /// The owner removed this participant; the session closes next.
    Kicked {
        /// Human-readable reason.
        reason: String,
    },
    /// The room closed or the server is shutting down; the session closes
    /// next (DTLS close_notify). Rejoining later may work.
    Closing {
        /// Human-readable reason.
        reason: String,
    },
    /// A client message was not understood.
    Error {
        /// What was wrong.
        message: String,
    },
}

/// Client -> engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Keep this participant in a slot regardless of speaking (`null` unpins).
    Pin {
        /// Participant id, or null.
        participant: Option<String>,
    },
    /// Cap the resolution forwarded into one video slot (`null` removes the cap).
    MaxResolution {
        /// Slot m-line.
        mid: String,
        /// Maximum frame height in pixels.
        height: Option<u32>,
    },
    /// Stop forwarding video into a slot.
    Pause {
        /// Slot m-line.
        mid: String,
    },
    /// Resume forwarding video into a slot.
    Resume {
        /// Slot m-line.
        mid: String,
    },
}

impl ClientMessage {
    /// Parse one message; never panics on any input.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

impl ServerMessage {
    /// Serialize for the data channel.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings, bools and numbers cannot fail.
        serde_json::to_vec(self).expect("control messages always serialize")
    }
}
