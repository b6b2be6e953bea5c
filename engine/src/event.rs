//! Events the engine reports to its embedder.

use crate::ids::{ParticipantId, RoomId};

/// Why a participant left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The participant (or the embedder on its behalf) asked to leave.
    Left,
    /// The room owner removed the participant.
    Kicked,
    /// The peer stopped answering (ICE/DTLS timeout or closed connection).
    Disconnected,
    /// The room closed.
    RoomClosed,
    /// Nothing valid arrived from the peer for
    /// [`RoomConfig::inactivity_timeout`](crate::RoomConfig::inactivity_timeout)
    /// (it vanished: network gone, tab killed, machine asleep).
    Timeout,
    /// The engine is shutting down ([`Engine::shutdown_within`](crate::Engine::shutdown_within)).
    Shutdown,
}

/// A published track kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// Opus audio.
    Audio,
    /// VP8 camera video (possibly simulcast).
    Camera,
    /// VP8 screen share.
    Screen,
}

/// Something that happened in a room.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A participant was admitted to a room (its answer has been returned).
    ParticipantJoined {
        /// Room.
        room: RoomId,
        /// Participant.
        participant: ParticipantId,
        /// Display name.
        name: String,
    },
    /// ICE and DTLS completed: media can flow.
    ParticipantConnected {
        /// Room.
        room: RoomId,
        /// Participant.
        participant: ParticipantId,
    },
    /// A participant left the room; its resources are freed.
    ParticipantLeft {
        /// Room.
        room: RoomId,
        /// Participant.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// The first packet of a participant's track arrived.
    TrackPublished {
        /// Room.
        room: RoomId,
        /// Participant.
        participant: ParticipantId,
        /// Which track.
        kind: TrackKind,
    },
    /// The room's dominant speaker changed.
    ActiveSpeaker {
        /// Room.
        room: RoomId,
        /// The new speaker, `None` when everyone is silent.
        participant: Option<ParticipantId>,
    },
    /// A room was closed and all its participants removed.
    RoomClosed {
        /// Room.
        room: RoomId,
    },
    /// A bug (a panic) in the room's processing closed it: its participants
    /// were told as for a closing room (best effort) and removed, its id is
    /// unknown from now on. The shard's other rooms are unaffected. Counted
    /// in [`CoreStats::rooms_failed`](crate::CoreStats::rooms_failed); the
    /// logs have the details, please report it.
    RoomFailed {
        /// Room.
        room: RoomId,
        /// The panic message.
        reason: String,
    },
}
