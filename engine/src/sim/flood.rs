//! Hostile traffic for flood tests: the datagrams an attacker on the
//! internet can send a shard's public port without any credentials.
//!
//! [`FloodMix`] writes one datagram per call into a caller-owned buffer,
//! cycling through [`FloodKind`]s. "Replay" means re-sending datagrams the
//! caller captured from a real client (SRTP, STUN) from another address;
//! nothing here can spoof a client's own address.

/// What a flood datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloodKind {
    /// 1..1200 random bytes.
    RandomBytes,
    /// An RTP version byte followed by fewer bytes than an RTP header.
    TruncatedRtp,
    /// A well-formed STUN binding request whose USERNAME names no
    /// participant.
    StunUnknownUfrag,
    /// A well-formed STUN binding request for a participant's ufrag with a
    /// MESSAGE-INTEGRITY of random bytes.
    StunBadIntegrity,
    /// A captured datagram of a real client, re-sent unchanged.
    Replay,
}

impl FloodKind {
    /// Every kind, in the order [`FloodMix`] cycles through them.
    pub const ALL: [FloodKind; 5] = [
        FloodKind::RandomBytes,
        FloodKind::TruncatedRtp,
        FloodKind::StunUnknownUfrag,
        FloodKind::StunBadIntegrity,
        FloodKind::Replay,
    ];

    /// A short snake_case name (report keys).
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::RandomBytes => "random_bytes",
            FloodKind::TruncatedRtp => "truncated_rtp",
            FloodKind::StunUnknownUfrag => "stun_unknown_ufrag",
            FloodKind::StunBadIntegrity => "stun_bad_integrity",
            FloodKind::Replay => "replay",
        }
    }
}

/// A seeded generator of the flood mix.
pub struct FloodMix {
    rng: fastrand::Rng,
    known_ufrags: Vec<String>,
    replays: Vec<Vec<u8>>,
    n: u64,
}

impl FloodMix {
    /// A mix whose bad-integrity requests name `known_ufrags` (the engine's
    /// ufrags from join answers) and whose replays re-send `replays`. A kind
    /// with nothing to draw from is replaced by random bytes.
    pub fn new(seed: u64, known_ufrags: Vec<String>, replays: Vec<Vec<u8>>) -> Self {
        FloodMix {
            rng: fastrand::Rng::with_seed(seed),
            known_ufrags,
            replays,
            n: 0,
        }
    }

    /// Add captured datagrams to replay.
    pub fn add_replays(&mut self, more: impl IntoIterator<Item = Vec<u8>>) {
        self.replays.extend(more);
    }

    /// Write the next datagram into `buf` (cleared first) and say what it is.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> FloodKind {
        buf.clear();
        let mut kind = FloodKind::ALL[(self.n % 5) as usize];
        self.n += 1;
        if (kind == FloodKind::StunBadIntegrity && self.known_ufrags.is_empty())
            || (kind == FloodKind::Replay && self.replays.is_empty())
        {
            kind = FloodKind::RandomBytes;
        }
        let rng = &mut self.rng;
        match kind {
            FloodKind::RandomBytes => {
                let len = rng.usize(1..1200);
                buf.extend((0..len).map(|_| rng.u8(..)));
            }
            FloodKind::TruncatedRtp => {
                buf.extend_from_slice(&[0x80, 0x60]);
                let len = rng.usize(0..10);
                buf.extend((0..len).map(|_| rng.u8(..)));
            }
            FloodKind::StunUnknownUfrag => {
                let ufrag = format!("flood{:08x}:x", rng.u32(..));
                stun_request(rng, &ufrag, buf);
            }
            FloodKind::StunBadIntegrity => {
                let i = rng.usize(..self.known_ufrags.len());
                let username = format!("{}:flood", self.known_ufrags[i]);
                stun_request(rng, &username, buf);
            }
            FloodKind::Replay => {
                let i = rng.usize(..self.replays.len());
                buf.extend_from_slice(&self.replays[i]);
            }
        }
        kind
    }
}

/// A STUN binding request (RFC 8489 section 5) with USERNAME, PRIORITY and
/// a MESSAGE-INTEGRITY of random bytes.
fn stun_request(rng: &mut fastrand::Rng, username: &str, m: &mut Vec<u8>) {
    m.extend_from_slice(&[0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42]);
    m.extend((0..12).map(|_| rng.u8(..)));
    m.extend_from_slice(&[0x00, 0x06]);
    m.extend_from_slice(&(username.len() as u16).to_be_bytes());
    m.extend_from_slice(username.as_bytes());
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
    m.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x7f, 0x1e, 0xff]);
    m.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    m.extend((0..20).map(|_| rng.u8(..)));
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
}
