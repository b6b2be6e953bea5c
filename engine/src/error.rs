//! Errors a caller of the engine can hit, each named after the exact violation.

use std::fmt;
use std::sync::Arc;

use crate::config::ConfigError;
use crate::ids::{ParticipantId, RoomId};

/// Why a join, room or control call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The offer is not parseable SDP.
    MalformedSdp(String),
    /// The offer parsed, but none of its audio/video m-lines offers a codec the
    /// engine forwards (Opus for audio, VP8 for video).
    NoUsableCodec,
    /// The offer has no m-line the engine can use at all.
    EmptyOffer,
    /// The offer asks for more receive slots than the room allows.
    TooManySlots {
        /// Kind of slot ("video" or "audio").
        kind: &'static str,
        /// Slots offered.
        offered: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// No room with this id exists (or it has closed).
    UnknownRoom(RoomId),
    /// No participant with this id is in the room.
    UnknownParticipant(ParticipantId),
    /// The room already has `max_participants`.
    RoomFull {
        /// The room.
        room: RoomId,
        /// Its configured maximum.
        max_participants: usize,
    },
    /// The room's owner locked it.
    RoomLocked(RoomId),
    /// Every shard is past its admission budget: no room can be created.
    AtCapacity,
    /// The shard hosting the room is at its admission budget
    /// ([`EngineBuilder::max_participants_per_shard`](crate::EngineBuilder::max_participants_per_shard)):
    /// the join is refused rather than degrade the calls already running.
    Overloaded {
        /// Participants on the shard.
        participants: usize,
        /// Its budget.
        budget: usize,
    },
    /// The engine is shutting down or has shut down.
    EngineClosed,
    /// A configuration value cannot work (the engine's, a room's, the
    /// ingress limits'); it names the field.
    InvalidConfig(ConfigError),
    /// The operating system refused a socket or thread.
    Io(IoError),
    /// str0m refused the session (accepting the offer failed).
    Negotiation(String),
    /// An internal error (a bug, logged) stopped the request; the engine
    /// keeps running.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MalformedSdp(e) => write!(f, "the offer is not valid SDP: {e}"),
            Error::NoUsableCodec => write!(
                f,
                "the offer has no usable codec: offer Opus for audio and VP8 or H.264 (packetization-mode 1, profile 42e01f or 42001f) for video"
            ),
            Error::EmptyOffer => write!(
                f,
                "the offer has no audio, video or data channel m-line the engine can use"
            ),
            Error::TooManySlots { kind, offered, max } => write!(
                f,
                "the offer has {offered} recvonly {kind} m-lines; this room allows at most {max}"
            ),
            Error::UnknownRoom(r) => write!(f, "room {r} does not exist"),
            Error::UnknownParticipant(p) => write!(f, "participant {p} is not in this room"),
            Error::RoomFull {
                room,
                max_participants,
            } => write!(
                f,
                "room {room} is full ({max_participants} participants); try again later"
            ),
            Error::RoomLocked(r) => write!(f, "room {r} is locked by its owner"),
            Error::AtCapacity => write!(f, "the engine is at capacity; try again later"),
            Error::Overloaded {
                participants,
                budget,
            } => write!(
                f,
                "the media server hosting this room is at its admission budget \
                 ({participants} of {budget} participants); try again later"
            ),
            Error::EngineClosed => write!(f, "the engine has shut down"),
            Error::InvalidConfig(e) => write!(f, "invalid engine configuration: {e}"),
            Error::Io(e) => write!(f, "operating system error: {e}"),
            Error::Negotiation(e) => write!(f, "the offer could not be negotiated: {e}"),
            Error::Internal(e) => write!(
                f,
                "internal error: {e}; the engine logged it and keeps running, please report it"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e.0.as_ref()),
            Error::InvalidConfig(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(IoError(Arc::new(e)))
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::InvalidConfig(e)
    }
}

/// An operating system error, shared so [`Error`] stays `Clone`. Two are
/// equal when their kinds are.
#[derive(Debug, Clone)]
pub struct IoError(Arc<std::io::Error>);

impl IoError {
    /// What kind of failure it was.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.0.kind()
    }

    /// The operating system's error.
    pub fn get_ref(&self) -> &std::io::Error {
        &self.0
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for IoError {
    fn eq(&self, o: &Self) -> bool {
        self.kind() == o.kind()
    }
}

impl Eq for IoError {}
