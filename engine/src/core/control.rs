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
        /// The room is end-to-end encrypted: media frames and chat must be
        /// encrypted by the clients (`docs/e2ee.md`).
        #[serde(default)]
        e2ee: bool,
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
    /// A chat message: sent to everyone (the sender's own copy confirms
    /// the send), or privately to `to` and the sender. On joining, the room's
    /// kept messages to everyone come first, with `history: true`.
    Chat {
        /// Room-wide message number, increasing from 1.
        id: u64,
        /// Sender's participant id.
        from: String,
        /// Sender's display name when it sent the message.
        name: String,
        /// The recipient of a private message, `null` for everyone.
        to: Option<String>,
        /// When the server accepted it, Unix milliseconds.
        time: u64,
        /// The text; in an end-to-end encrypted room, base64 ciphertext.
        text: String,
        /// The sender encrypted `text` end to end.
        encrypted: bool,
        /// Sent before this participant joined (replayed history).
        history: bool,
        /// The sender's own reference, echoed (only meaningful to it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local_id: Option<String>,
    },
    /// A chat or key message of this client was refused; nothing was sent.
    ChatError {
        /// `empty`, `too_long`, `control_characters`, `rate_limited`,
        /// `unknown_recipient`, `to_self`, `encryption_required`,
        /// `not_encrypted_room`, `local_id_too_long`.
        code: String,
        /// What was wrong and what to do.
        message: String,
        /// The refused message's `local_id`, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local_id: Option<String>,
        /// For `rate_limited`: when one more message will be accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// End-to-end encryption key exchange, relayed opaque from another
    /// participant (only in end-to-end encrypted rooms; never kept).
    Key {
        /// Sender's participant id.
        from: String,
        /// The client-defined payload (`docs/e2ee.md`).
        data: String,
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
    /// Send a chat message to everyone, or privately to one participant.
    Chat {
        /// The text (at most 4096 bytes by default); in an end-to-end
        /// encrypted room, base64 ciphertext with `encrypted: true`.
        text: String,
        /// Recipient participant id; absent or `null` for everyone.
        #[serde(default)]
        to: Option<String>,
        /// `text` is end-to-end encrypted (required in such rooms).
        #[serde(default)]
        encrypted: bool,
        /// A reference of the client's own (at most 64 bytes), echoed in
        /// the sender's copy or in the `chat_error`.
        #[serde(default)]
        local_id: Option<String>,
    },
    /// Relay an end-to-end encryption key-exchange message to one
    /// participant, or to every other when `to` is absent.
    Key {
        /// Recipient participant id; absent or `null` for every other.
        #[serde(default)]
        to: Option<String>,
        /// Opaque payload (at most 2048 bytes by default).
        data: String,
    },
}

impl ClientMessage {
    /// Parse one message; never panics on any input.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        serde_json::from_slice(bytes).map_err(ParseError)
    }
}

impl ServerMessage {
    /// Serialize for the data channel.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings, bools and numbers cannot fail.
        serde_json::to_vec(self).expect("control messages always serialize")
    }
}

/// Why a control message did not parse: not JSON, an unknown `type`, or a
/// missing or mistyped field (the message says which, with its position).
#[derive(Debug)]
pub struct ParseError(serde_json::Error);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
