//! Fuzzing harnesses (feature `sim`): the functions the libFuzzer targets in
//! `fuzz/` call, one per input the engine takes from the network, and the
//! seeds they start from. Not an embedding API.
//!
//! | target | harness | input |
//! |---|---|---|
//! | `datagram` | [`datagram::run`] | a sequence of [`datagram::Op`]s on a shard core holding a room with two connected participants: raw datagrams from their addresses or unknown ones, signed STUN, RTP through a participant's real SRTP session, control messages, time advances |
//! | `control` | [`control::run`] | control-channel JSON messages, one a line, from a participant of that room |
//! | `sdp` | [`sdp::run`] | an SDP offer to join preparation, then the shard adopting the result |
//! | `http` | [`http::run`] | one request body to the reference server's API (feature `server`) |
//!
//! Each harness is a plain function (no libFuzzer in here), so the seed
//! corpora ([`seeds::all`]) and the crash regressions replay in the normal
//! test suite (`engine/tests/fuzz_corpus.rs`). The oracle is "no panic",
//! plus what each harness states (the HTTP API never answers 500).
//!
//! The `datagram` and `control` harnesses keep their room between inputs
//! (building one costs two DTLS handshakes: ~100x an input); the `*_fresh`
//! variants build a new room for the one input, which is what the
//! regression tests replay.

pub mod control;
pub mod datagram;
#[cfg(feature = "server")]
pub mod http;
pub mod sdp;
pub mod seeds;

/// Reads the fields of a fuzz input; past the end every field reads as zero
/// and every byte string as empty, so any input decodes.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A byte string prefixed with its length (u16, little-endian).
    pub fn blob(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.bytes(n)
    }
}

/// The writing side of [`Reader`], for seeds.
#[derive(Default)]
pub(crate) struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn blob(&mut self, b: &[u8]) {
        let n = b.len().min(u16::MAX as usize);
        self.u16(n as u16);
        self.out.extend_from_slice(&b[..n]);
    }
}
