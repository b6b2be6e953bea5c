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
    /// The room was handed over to another server, where the client
    /// should rejoin ([`Engine::hand_over_room`](crate::Engine::hand_over_room):
    /// in a cluster, another node took the room over while this one was
    /// cut off).
    Moved,
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

/// The engine's events ([`Engine::events`](crate::Engine::events)): a
/// handle to one bounded queue shared by every handle, so each event goes
/// to exactly one reader. Events of one room come in the order its shard
/// produced them.
#[derive(Debug, Clone)]
pub struct Events(crossbeam_channel::Receiver<EngineEvent>);

/// Why [`Events::recv`] or [`Events::recv_timeout`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing arrived within the timeout.
    Timeout,
    /// The engine has shut down and every event has been read.
    Closed,
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Timeout => write!(f, "no engine event arrived in time"),
            RecvError::Closed => write!(f, "the engine has shut down; no more events"),
        }
    }
}

impl std::error::Error for RecvError {}

impl Events {
    pub(crate) fn new(rx: crossbeam_channel::Receiver<EngineEvent>) -> Self {
        Events(rx)
    }

    /// Wait for the next event; [`RecvError::Closed`] once the engine has
    /// shut down and everything was read.
    pub fn recv(&self) -> Result<EngineEvent, RecvError> {
        self.0.recv().map_err(|_| RecvError::Closed)
    }

    /// Wait at most `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<EngineEvent, RecvError> {
        self.0.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => RecvError::Closed,
        })
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<EngineEvent> {
        self.0.try_recv().ok()
    }

    /// Every event waiting now, without blocking.
    pub fn try_iter(&self) -> impl Iterator<Item = EngineEvent> + '_ {
        self.0.try_iter()
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
