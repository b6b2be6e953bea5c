//! The `control` target: JSON messages a participant sends on its control
//! data channel, parsed ([`crate::core::control::ClientMessage::parse`]) and
//! applied by the room (pin, resolution caps, pause, resume), then the
//! room's next allocation and slot assignment.
//!
//! An input is one message a line (`\n`), all from participant 0 of the
//! [`Rig`](super::datagram::Rig)'s room; a line starting with `>` comes from
//! participant 1 instead. Placeholders make seeds valid for any room:
//! `{v0}`, `{v1}` and `{a0}` become the sender's video and audio slot mids,
//! `{self}` and `{other}` the participant ids.
//!
//! An input whose first line is `e2ee` runs in an end-to-end encrypted
//! room (chat must be flagged encrypted there; `key` messages are relayed),
//! on a rig of its own. Chat messages (`chat`, `key`) go through the room's
//! limits, history and relay ([`crate::core::chat`]).

use std::time::Duration;

use super::datagram::{Op, Rig, with_rig_in};

/// Virtual time after the messages, for the room to act on them.
const SETTLE: Duration = Duration::from_millis(30);

/// Run one input on the rig kept between inputs: the fuzz target.
pub fn run(data: &[u8]) {
    let (e2ee, data) = split_mode(data);
    with_rig_in(e2ee, |rig| apply(rig, data));
}

/// Whether the input asks for an end-to-end encrypted room, and the rest.
fn split_mode(data: &[u8]) -> (bool, &[u8]) {
    match data.strip_prefix(b"e2ee") {
        Some(rest) if rest.is_empty() || rest[0] == b'\n' => (true, rest.get(1..).unwrap_or(&[])),
        _ => (false, data),
    }
}

/// Run one input on a new rig (regression tests).
pub fn run_fresh(data: &[u8]) -> Rig {
    let (e2ee, data) = split_mode(data);
    let mut rig = Rig::with_e2ee(e2ee);
    apply(&mut rig, data);
    rig
}

fn apply(rig: &mut Rig, data: &[u8]) {
    let mut budget = SETTLE;
    for line in data.split(|&b| b == b'\n') {
        let (participant, bytes) = match line.strip_prefix(b">") {
            Some(rest) => (1, rest),
            None => (0, line),
        };
        rig.apply(
            Op::Control {
                participant,
                bytes: bytes.to_vec(),
            },
            &mut budget,
        );
    }
    rig.apply(Op::Advance { millis: 30 }, &mut budget);
}
