//! The `datagram` target: what reaches a shard core from the network.
//!
//! A [`Rig`] is a [`Simulator`] whose room holds two connected participants
//! (real str0m peers: ICE, DTLS, SRTP, data channel), so the core has known
//! addresses and ufrags. An input is a sequence of [`Op`]s, each a tag byte
//! (`tag % 6` picks the op) and its fields (integers little-endian, byte
//! strings prefixed with a u16 length; a short input reads as zeros):
//!
//! | tag | op | fields |
//! |---|---|---|
//! | 0 | [`Op::Known`] | participant u8, bytes |
//! | 1 | [`Op::Unknown`] | port u16, bytes |
//! | 2 | [`Op::Stun`] | participant u8, flags u8 (1 from an unknown address, 2 USE-CANDIDATE, 4 ICE-CONTROLLING), priority u32, tie-breaker u64 |
//! | 3 | [`Op::Rtp`] | participant u8, stream u8, sequence offset i16, timestamp u32, flags u8 (1 marker, 2 audio level present), level u8, payload bytes |
//! | 4 | [`Op::Advance`] | milliseconds u16 |
//! | 5 | [`Op::Control`] | participant u8, message bytes |
//!
//! Raw bytes from a known address go through the participant's `Rtc` (STUN,
//! DTLS records, SRTP and SRTCP that fail authentication); raw bytes from
//! an unknown address exercise the demultiplexer's STUN gate. Signed STUN
//! and SRTP-protected RTP get past the cryptography, into the ICE agent and
//! the room's routing (SSRC classification, VP8 descriptor parsing, audio
//! levels, slot rewriting). Time advances let the clients' own media,
//! keepalives and the engine's timers run in between.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use str0m::ice::{StunMessage, TransId};

use super::{Reader, Writer};
use crate::core::control::ServerMessage;
use crate::ids::ParticipantId;
use crate::sim::{ClientConfig, SimConfig, Simulator};

/// Participants in the rig's room.
pub const PARTICIPANTS: usize = 2;

/// Virtual time one input may advance in all (keeps an execution short).
const TIME_BUDGET: Duration = Duration::from_millis(500);

/// Inputs a rig serves before it is rebuilt (bounds the state carried over).
const MAX_RUNS: u32 = 20_000;

/// One step of a `datagram` input.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// These bytes from participant `participant`'s address.
    Known {
        /// Index (modulo [`PARTICIPANTS`]).
        participant: u8,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// These bytes from `10.9.0.1:port`, an address no participant uses.
    Unknown {
        /// Source port.
        port: u16,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A STUN binding request with the participant's real USERNAME and
    /// MESSAGE-INTEGRITY (what only the participant can send).
    Stun {
        /// Index (modulo [`PARTICIPANTS`]).
        participant: u8,
        /// From `10.9.0.2:7000` instead of the participant's address.
        from_unknown: bool,
        /// USE-CANDIDATE attribute.
        use_candidate: bool,
        /// ICE-CONTROLLING (else ICE-CONTROLLED) attribute.
        controlling: bool,
        /// PRIORITY attribute.
        priority: u32,
        /// The tie-breaker of the role attribute.
        tie_breaker: u64,
    },
    /// An RTP packet through the participant's SRTP session.
    Rtp {
        /// Index (modulo [`PARTICIPANTS`]).
        participant: u8,
        /// Published stream: 0 audio, then camera layers, then the screen
        /// (see `SimClient::send_rtp`).
        stream: u8,
        /// Sequence number, from the stream's next own one.
        seq_offset: i16,
        /// RTP timestamp.
        timestamp: u32,
        /// Marker bit.
        marker: bool,
        /// RFC 6464 audio level extension (0..=127, negated), if any.
        audio_level: Option<u8>,
        /// Payload.
        payload: Vec<u8>,
    },
    /// Let virtual time pass (the whole input at most 500 ms).
    Advance {
        /// Milliseconds.
        millis: u16,
    },
    /// A control-channel message from the participant; `{v0}`, `{v1}`,
    /// `{a0}`, `{self}` and `{other}` are replaced by its slots' mids and
    /// participant ids (see [`super::control`]).
    Control {
        /// Index (modulo [`PARTICIPANTS`]).
        participant: u8,
        /// The message.
        bytes: Vec<u8>,
    },
}

impl Op {
    /// Decode the next op; `None` at the end of the input.
    pub(crate) fn read(r: &mut Reader<'_>) -> Option<Op> {
        if r.is_empty() {
            return None;
        }
        Some(match r.u8() % 6 {
            0 => Op::Known {
                participant: r.u8(),
                bytes: r.blob().to_vec(),
            },
            1 => Op::Unknown {
                port: r.u16(),
                bytes: r.blob().to_vec(),
            },
            2 => {
                let participant = r.u8();
                let flags = r.u8();
                Op::Stun {
                    participant,
                    from_unknown: flags & 1 != 0,
                    use_candidate: flags & 2 != 0,
                    controlling: flags & 4 != 0,
                    priority: r.u32(),
                    tie_breaker: r.u64(),
                }
            }
            3 => {
                let participant = r.u8();
                let stream = r.u8();
                let seq_offset = r.u16() as i16;
                let timestamp = r.u32();
                let flags = r.u8();
                let level = r.u8();
                Op::Rtp {
                    participant,
                    stream,
                    seq_offset,
                    timestamp,
                    marker: flags & 1 != 0,
                    audio_level: (flags & 2 != 0).then_some(level),
                    payload: r.blob().to_vec(),
                }
            }
            4 => Op::Advance { millis: r.u16() },
            _ => Op::Control {
                participant: r.u8(),
                bytes: r.blob().to_vec(),
            },
        })
    }

    /// Encode (the inverse of [`Op::read`]).
    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
            Op::Known { participant, bytes } => {
                w.u8(0);
                w.u8(*participant);
                w.blob(bytes);
            }
            Op::Unknown { port, bytes } => {
                w.u8(1);
                w.u16(*port);
                w.blob(bytes);
            }
            Op::Stun {
                participant,
                from_unknown,
                use_candidate,
                controlling,
                priority,
                tie_breaker,
            } => {
                w.u8(2);
                w.u8(*participant);
                w.u8(u8::from(*from_unknown)
                    | u8::from(*use_candidate) << 1
                    | u8::from(*controlling) << 2);
                w.u32(*priority);
                w.u64(*tie_breaker);
            }
            Op::Rtp {
                participant,
                stream,
                seq_offset,
                timestamp,
                marker,
                audio_level,
                payload,
            } => {
                w.u8(3);
                w.u8(*participant);
                w.u8(*stream);
                w.u16(*seq_offset as u16);
                w.u32(*timestamp);
                w.u8(u8::from(*marker) | u8::from(audio_level.is_some()) << 1);
                w.u8(audio_level.unwrap_or(0));
                w.blob(payload);
            }
            Op::Advance { millis } => {
                w.u8(4);
                w.u16(*millis);
            }
            Op::Control { participant, bytes } => {
                w.u8(5);
                w.u8(*participant);
                w.blob(bytes);
            }
        }
    }
}

/// Encode a sequence of ops as one `datagram` input.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::default();
    for op in ops {
        op.write(&mut w);
    }
    w.out
}

/// Decode a `datagram` input (every input decodes).
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut r = Reader::new(data);
    std::iter::from_fn(|| Op::read(&mut r)).collect()
}

/// A room with [`PARTICIPANTS`] connected participants on a simulated shard
/// core, kept between inputs.
pub struct Rig {
    sim: Simulator,
    e2ee: bool,
    crypto: str0m::config::CryptoProvider,
    runs: u32,
}

impl Rig {
    /// Build the room and connect everyone (ICE, DTLS, data channels) in
    /// virtual time. Participant 0 also shares a screen.
    pub fn new() -> Rig {
        Rig::with_e2ee(false)
    }

    /// [`Rig::new`], in an end-to-end encrypted room when `e2ee` (the chat
    /// then requires encrypted messages and relays key messages).
    pub fn with_e2ee(e2ee: bool) -> Rig {
        let mut config = SimConfig::new(PARTICIPANTS);
        config.room.e2ee = e2ee;
        // Chat: a burst of 10 as by default, but refilled fast enough that
        // a rig kept across inputs (30 ms of virtual time each) still
        // accepts messages, while a long input meets the limit.
        config.room.chat.per_second = 300.0;
        config.client = Box::new(|i| {
            let mut c = ClientConfig::new(i as u32);
            c.video_slots = 2;
            c.audio_slots = 1;
            // Few packets per virtual second keep an input cheap; the layers
            // still differ in rate, so the allocator has choices.
            c.fps = 10;
            for (k, l) in c.camera_layers.iter_mut().enumerate() {
                l.bitrate_bps = 20_000 << k;
            }
            c.screen = i == 0;
            c.speaking = i == 1;
            c
        });
        // The simulator's only fallible step is the DTLS certificate, which
        // the crypto provider always makes.
        let mut sim = Simulator::new(config).expect("the simulator starts");
        sim.run_for(Duration::from_secs(1));
        Rig {
            sim,
            e2ee,
            crypto: str0m::crypto::from_feature_flags(),
            runs: 0,
        }
    }

    /// Everyone still in the room, connected and with a control channel.
    pub fn healthy(&self) -> bool {
        let room = self.sim.room();
        self.sim.core().room_len(room) == Some(PARTICIPANTS)
            && self.sim.participants().iter().all(|p| {
                p.present
                    && p.client.is_alive()
                    && p.client.connected_at().is_some()
                    && p.id
                        .is_some_and(|id| self.sim.core().slots_of(room, id).is_some())
            })
    }

    /// The simulator (for assertions in tests).
    pub fn sim(&self) -> &Simulator {
        &self.sim
    }

    /// Run one input.
    pub fn run(&mut self, data: &[u8]) {
        self.runs += 1;
        let mut budget = TIME_BUDGET;
        let mut r = Reader::new(data);
        while let Some(op) = Op::read(&mut r) {
            self.apply(op, &mut budget);
        }
    }

    /// Apply one op.
    pub fn apply(&mut self, op: Op, budget: &mut Duration) {
        match op {
            Op::Known { participant, bytes } => {
                let from = self.addr(participant);
                self.sim.deliver(from, &bytes);
            }
            Op::Unknown { port, bytes } => {
                let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), port);
                self.sim.deliver(from, &bytes);
            }
            Op::Stun {
                participant,
                from_unknown,
                use_candidate,
                controlling,
                priority,
                tie_breaker,
            } => {
                let i = participant as usize % PARTICIPANTS;
                let Some((ufrag, pwd, client_ufrag)) =
                    self.sim.participants()[i].client.ice_credentials()
                else {
                    return;
                };
                let username = format!("{ufrag}:{client_ufrag}");
                let msg = StunMessage::binding_request(
                    &username,
                    TransId::new(),
                    controlling,
                    tie_breaker,
                    priority,
                    use_candidate,
                );
                let mut buf = [0u8; 512];
                let hmac = self.crypto.sha1_hmac_provider;
                let Ok(n) =
                    msg.to_bytes(Some(pwd.as_bytes()), &mut buf, |k, p| hmac.sha1_hmac(k, p))
                else {
                    return;
                };
                let from = if from_unknown {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)), 7000)
                } else {
                    self.addr(participant)
                };
                self.sim.deliver(from, &buf[..n]);
            }
            Op::Rtp {
                participant,
                stream,
                seq_offset,
                timestamp,
                marker,
                audio_level,
                payload,
            } => {
                let now = self.sim.now();
                let i = participant as usize % PARTICIPANTS;
                let client = &mut self.sim.participant_mut(i).client;
                let level = audio_level.map(|l| -((l & 0x7f) as i8));
                if client.send_rtp(
                    now,
                    stream as usize,
                    seq_offset,
                    timestamp,
                    marker,
                    level,
                    payload,
                ) {
                    // The packet leaves on the client's uplink; let it arrive.
                    self.sim.settle();
                    self.advance(Duration::from_millis(12), budget);
                }
            }
            Op::Advance { millis } => {
                self.advance(Duration::from_millis(millis as u64), budget);
            }
            Op::Control { participant, bytes } => {
                let i = participant as usize % PARTICIPANTS;
                let bytes = self.expand(i, &bytes);
                let room = self.sim.room();
                if let Some(id) = self.sim.participants()[i].id {
                    self.sim.core_mut().inject_client_message(room, id, &bytes);
                    self.sim.settle();
                }
            }
        }
    }

    fn advance(&mut self, d: Duration, budget: &mut Duration) {
        let d = d.min(*budget);
        *budget -= d;
        if !d.is_zero() {
            self.sim.run_for(d);
        }
    }

    fn addr(&self, participant: u8) -> SocketAddr {
        self.sim.participants()[participant as usize % PARTICIPANTS]
            .client
            .addr()
    }

    /// Replace the placeholders of a control message (see [`Op::Control`]).
    pub(crate) fn expand(&self, i: usize, bytes: &[u8]) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return bytes.to_vec();
        };
        if !text.contains('{') {
            return bytes.to_vec();
        }
        let room = self.sim.room();
        let ids: Vec<Option<ParticipantId>> =
            self.sim.participants().iter().map(|p| p.id).collect();
        let name = |p: Option<ParticipantId>| p.map(|p| p.to_string()).unwrap_or_default();
        let mut text = text
            .replace("{self}", &name(ids[i]))
            .replace("{other}", &name(ids[(i + 1) % PARTICIPANTS]));
        if let Some(ServerMessage::Slots { video, audio }) =
            ids[i].and_then(|id| self.sim.core().slots_of(room, id))
        {
            for (k, s) in video.iter().enumerate() {
                text = text.replace(&format!("{{v{k}}}"), &s.mid);
            }
            for (k, s) in audio.iter().enumerate() {
                text = text.replace(&format!("{{a{k}}}"), &s.mid);
            }
        }
        text.into_bytes()
    }
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

thread_local! {
    static RIG: std::cell::RefCell<Option<Rig>> = const { std::cell::RefCell::new(None) };
    static RIG_E2EE: std::cell::RefCell<Option<Rig>> = const { std::cell::RefCell::new(None) };
}

/// Run one input on the rig kept between inputs (rebuilt when a participant
/// dropped out or after 20 000 inputs): the fuzz target.
pub fn run(data: &[u8]) {
    with_rig(|rig| rig.run(data));
}

/// Run one input on a new rig: deterministic up to the clients' random
/// keys, what regression tests replay.
pub fn run_fresh(data: &[u8]) -> Rig {
    let mut rig = Rig::new();
    rig.run(data);
    rig
}

pub(crate) fn with_rig(f: impl FnOnce(&mut Rig)) {
    with_rig_in(false, f)
}

/// [`with_rig`] on the kept rig of a normal or an end-to-end encrypted room.
pub(crate) fn with_rig_in(e2ee: bool, f: impl FnOnce(&mut Rig)) {
    let kept = if e2ee { &RIG_E2EE } else { &RIG };
    kept.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot
            .as_ref()
            .is_none_or(|r| r.runs >= MAX_RUNS || !r.healthy() || r.e2ee != e2ee)
        {
            *slot = Some(Rig::with_e2ee(e2ee));
        }
        // Just filled above.
        if let Some(rig) = slot.as_mut() {
            f(rig);
        }
    });
}
