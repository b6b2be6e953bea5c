//! The `sdp` target: an SDP offer given to join preparation
//! (`join::prepare`: parse, build the `Rtc`, accept the offer,
//! classify the m-lines), then, when it is accepted, the shard core
//! adopting the participant into a room (slots, routes, the first flush)
//! and removing it.
//!
//! The input is the offer; bytes that are not UTF-8 are replaced (as a
//! server would after its own UTF-8 check, the engine takes `&str`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::config::RoomConfig;
use crate::core::ShardCore;
use crate::event::LeaveReason;
use crate::ids::{ParticipantId, RoomId};
use crate::join::{self, JoinContext};

thread_local! {
    // One certificate for every input, as the engine shares one. Built by
    // the crypto provider, which always makes one.
    static CONTEXT: JoinContext = JoinContext::new(1).expect("a DTLS certificate");
}

/// What became of one offer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Join preparation refused it (the engine's error, as text).
    Refused(String),
    /// Accepted, adopted into the room and removed again.
    Joined {
        /// The answer's length in bytes.
        answer_len: usize,
    },
}

/// Run one offer: the fuzz target.
pub fn run(data: &[u8]) -> Outcome {
    let offer = String::from_utf8_lossy(data);
    let now = Instant::now();
    let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)), 4000);
    let room = RoomId(1);
    let config = RoomConfig::default();
    let pid = ParticipantId(1);
    let prepared = CONTEXT.with(|ctx| {
        join::prepare(
            ctx,
            room,
            &config,
            pid,
            "fuzz".into(),
            &offer,
            server,
            None,
            now,
        )
    });
    let p = match prepared {
        Ok(p) => p,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let answer_len = p.answer.len();
    let mut core = ShardCore::new(server);
    core.create_room(room, config);
    if let Err(e) = core.adopt(p, now) {
        return Outcome::Refused(e.to_string());
    }
    while core.poll_transmit().is_some() {}
    // Just adopted: the room holds it.
    core.remove(room, pid, LeaveReason::Left, now)
        .expect("an adopted participant can be removed");
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    Outcome::Joined { answer_len }
}
