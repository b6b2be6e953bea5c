//! Small copyable identifiers.

use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) u32);

        impl $name {
            /// The raw number behind the id (stable for the engine's lifetime).
            pub fn get(self) -> u32 {
                self.0
            }

            /// Rebuild an id from [`Self::get`]'s number.
            pub fn from_raw(raw: u32) -> Self {
                Self(raw)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ();
            /// Parses the display form (`r12` / `p34`).
            fn from_str(s: &str) -> Result<Self, ()> {
                s.strip_prefix($prefix)
                    .and_then(|n| n.parse().ok())
                    .map(Self)
                    .ok_or(())
            }
        }
    };
}

id_type!(
    /// A room, unique within one [`Engine`](crate::Engine).
    RoomId,
    "r"
);
id_type!(
    /// A participant, unique within one [`Engine`](crate::Engine) (never reused).
    ParticipantId,
    "p"
);

/// Which of a publisher's video tracks a slot shows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum VideoSource {
    /// The screen share track (the second send video m-line of the offer).
    Screen,
    /// The camera track (the first send video m-line of the offer).
    Camera,
}

/// A simulcast layer index: 0 is the lowest resolution.
///
/// Layers are numbered in the order the publisher's offer lists its rids in
/// `a=simulcast:send` (lowest first, as `l;m;h`). A track without simulcast has
/// one layer, 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Layer(pub u8);

impl Layer {
    /// The lowest layer (`l`).
    pub const LOW: Layer = Layer(0);
    /// The middle layer (`m`).
    pub const MEDIUM: Layer = Layer(1);
    /// The highest layer (`h`).
    pub const HIGH: Layer = Layer(2);

    /// Conventional name: `l`, `m`, `h` (or the index beyond that).
    pub fn name(self) -> String {
        match self.0 {
            0 => "l".into(),
            1 => "m".into(),
            2 => "h".into(),
            n => n.to_string(),
        }
    }
}

/// A video codec the engine forwards (it never transcodes: a slot shows only
/// publishers whose codec it negotiated).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// VP8 (RFC 7741), the preferred codec.
    Vp8,
    /// H.264 constrained baseline / baseline (profile-level-id 42e01f or
    /// 42001f), packetization-mode 1 (RFC 6184: single NAL unit, STAP-A,
    /// FU-A).
    H264,
}

impl VideoCodec {
    /// The codec's name as in SDP and in the control messages: `vp8`, `h264`.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::H264 => "h264",
        }
    }
}
