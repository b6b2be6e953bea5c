//! Join preparation without a shard: what the join-cost benchmark measures.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::config::RoomConfig;
use crate::error::Error;
use crate::join::{self, JoinContext};
use crate::{ParticipantId, RoomId};

/// Join preparation alone, exactly as the engine runs it off the shards
/// (parse the offer, build the participant's `Rtc`, accept the offer, write
/// the answer), with no core to adopt the result: what the join-cost
/// benchmark measures.
pub struct JoinPreparer {
    ctx: JoinContext,
    room: RoomConfig,
    server: SocketAddr,
    next_pid: u32,
}

impl JoinPreparer {
    /// One engine-wide DTLS certificate, as the engine shares one.
    pub fn new(room: RoomConfig) -> Result<Self, Error> {
        Ok(JoinPreparer {
            ctx: JoinContext::new(1)?,
            room,
            server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)), 4000),
            next_pid: 1,
        })
    }

    /// Prepare one join and return the SDP answer; the prepared participant
    /// (its `Rtc`) is dropped, as no shard adopts it.
    pub fn prepare(&mut self, offer: &str, now: Instant) -> Result<String, Error> {
        let pid = ParticipantId(self.next_pid);
        self.next_pid += 1;
        let p = join::prepare(
            &self.ctx,
            RoomId(1),
            &self.room,
            pid,
            "bench".into(),
            offer,
            self.server,
            None,
            now,
        )?;
        Ok(p.answer)
    }
}
