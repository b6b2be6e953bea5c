//! What the orchestrator drives ([`Backend`]): the embedded engine here,
//! an external server in [`crate::run::target`].

use std::time::Duration;

use piazza::{Engine, EngineEvent, JoinOptions, LeaveReason, ParticipantId, RoomConfig, RoomId};

use crate::error::LoadgenError;
use crate::metrics::EngineSample;
use crate::run::cluster::NodeReport;

/// Who a joined participant is to the backend.
pub(crate) enum MemberId {
    /// A participant of the embedded engine.
    Engine(ParticipantId),
    /// A participant of an external server: its id and participant token.
    Server {
        /// The participant id (`p12`).
        id: String,
        /// Its participant token (to leave).
        token: String,
    },
}

/// The engine's counters, summed over shards.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    /// Forwarded, received, bytes out and shard CPU time.
    pub sample: EngineSample,
    /// Panics the shards caught.
    pub panics: u64,
    /// Engine events dropped on a full channel.
    pub events_dropped: u64,
    /// Datagrams the shards could not send.
    pub send_drops: u64,
    /// The engine's ICE-TCP counters, when it runs ICE-TCP and tells them.
    pub tcp: Option<crate::run::TcpCounters>,
}

/// What the orchestrator drives: the embedded engine or an external server.
pub(crate) trait Backend {
    /// Shard threads of the engine.
    fn shards(&self) -> usize;
    /// Open room `index` (rooms are opened in index order) for `participants`.
    fn create_room(&mut self, index: usize, participants: usize) -> Result<(), LoadgenError>;
    /// Join room `room` with `offer`; the SDP answer and who joined.
    fn join(&mut self, room: usize, offer: &str, name: &str) -> Result<(String, MemberId), String>;
    /// `member` leaves room `room`.
    fn leave(&mut self, room: usize, member: &MemberId) -> Result<(), String>;
    /// The counters now; `fresh` asks for a reading taken now rather than
    /// the latest periodic snapshot (at the window's edges).
    fn counters(&mut self, fresh: bool) -> Result<Counters, LoadgenError>;
    /// Participants the engine removed for silence since the last call;
    /// `None` when the backend cannot tell.
    fn disconnects(&mut self) -> Option<u64>;
    /// Peak resident set of the engine's process, MiB, when it is not this
    /// process.
    fn peak_rss_mb(&mut self) -> Option<f64>;
    /// Close the rooms and stop (the embedded engine shuts down).
    fn close(&mut self);
    /// The engine, when it runs in this process (`--flood-pps` needs it).
    fn engine(&self) -> Option<&Engine> {
        None
    }
    /// Whether every participant still present leaves explicitly at the
    /// end (a server's room may outlive the run: an invited room).
    fn leave_at_end(&self) -> bool {
        false
    }
    /// Join room `room` again as `member` (with its participant token)
    /// after its session was lost: the answer, who joined, and the node
    /// it went through. `Err((retry, why))`; `retry` when trying again
    /// later may work (the room is moving: 503, 421, no answer).
    fn rejoin(
        &mut self,
        room: usize,
        offer: &str,
        name: &str,
        member: &MemberId,
    ) -> Result<(String, MemberId, Option<String>), (bool, String)> {
        let _ = (room, offer, name, member);
        Err((false, "this target cannot rejoin a lost session".into()))
    }
    /// Per-node figures, for a cluster target.
    fn nodes(&mut self, measured: Duration) -> Option<Vec<NodeReport>> {
        let _ = measured;
        None
    }
}

/// The embedded engine.
pub(super) struct Embedded {
    pub(super) engine: Engine,
    pub(super) events: piazza::Events,
    pub(super) rooms: Vec<RoomId>,
    /// Create the rooms end-to-end encrypted (`Scenario::e2ee`).
    pub(super) e2ee: bool,
}

impl Backend for Embedded {
    fn shards(&self) -> usize {
        self.engine.stats().shards.len()
    }

    fn create_room(&mut self, index: usize, participants: usize) -> Result<(), LoadgenError> {
        let config = RoomConfig::named(format!("loadgen-{index}"))
            .max_participants(participants)
            .e2ee(self.e2ee);
        self.rooms.push(self.engine.create_room(config)?);
        Ok(())
    }

    fn join(&mut self, room: usize, offer: &str, name: &str) -> Result<(String, MemberId), String> {
        let joined = self
            .engine
            .join(self.rooms[room], offer, JoinOptions::new(name))
            .map_err(|e| e.to_string())?;
        Ok((joined.answer, MemberId::Engine(joined.participant)))
    }

    fn leave(&mut self, room: usize, member: &MemberId) -> Result<(), String> {
        match member {
            MemberId::Engine(pid) => self
                .engine
                .leave(self.rooms[room], *pid)
                .map_err(|e| e.to_string()),
            MemberId::Server { id, .. } => Err(format!("{id} is not a participant of this engine")),
        }
    }

    fn counters(&mut self, fresh: bool) -> Result<Counters, LoadgenError> {
        let stats = if fresh {
            self.engine.refresh_stats()?
        } else {
            self.engine.stats()
        };
        Ok(super::counters(&stats))
    }

    fn disconnects(&mut self) -> Option<u64> {
        Some(
            self.events
                .try_iter()
                .filter(|e| {
                    matches!(
                        e,
                        EngineEvent::ParticipantLeft {
                            reason: LeaveReason::Disconnected | LeaveReason::Timeout,
                            ..
                        }
                    )
                })
                .count() as u64,
        )
    }

    fn peak_rss_mb(&mut self) -> Option<f64> {
        None
    }

    fn close(&mut self) {
        self.engine.shutdown();
    }

    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
}
