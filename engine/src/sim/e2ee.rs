//! Encrypting media for simulated clients in end-to-end encrypted rooms,
//! the frame format of the browser client (`static/e2ee-worker.js`,
//! `docs/e2ee.md`) applied to each synthetic RTP payload:
//!
//! ```text
//! clear bytes | SFrame header (KID, CTR) | AES-128-GCM(body + trailer) | tag
//! ```
//!
//! The clear bytes are the VP8 payload descriptor and, on the first packet
//! of a frame, the first bytes of the VP8 payload header (10 on a keyframe,
//! 3 on a delta frame); Opus payloads have none. The header and the clear
//! VP8 payload header bytes are the additional authenticated data (RFC 9605
//! section 4.4.3); the payload descriptor is not, since the engine rewrites
//! its picture id and TL0PICIDX (in a browser the packetizer adds it after
//! the encoded transform, so it is never part of the frame); key and salt
//! come from each sender's base key by RFC 9605 section 4.4.2 with the
//! cipher suite AES_128_GCM_SHA256_128.
//!
//! A browser encrypts a whole frame and then packetizes it; the simulator
//! builds packets directly, so it seals each packet: the per-packet
//! overhead (header and 16-byte tag) is taken from the body, so packets keep
//! the sizes they have without encryption. The key exchange is not
//! simulated: every client derives each sender's base key from the sender's
//! number (KID = publisher number), standing in for keys the browsers
//! exchange over the control channel. The engine sees what it sees from
//! browsers: ciphertext after the clear bytes, and never needs a key.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};

/// RFC 9605 cipher suite AES_128_GCM_SHA256_128.
const SUITE: u16 = 0x0004;
/// Bytes an encrypted payload gains: the tag and a header of at most 1 +
/// 4 (KID) + 8 (CTR) bytes.
pub const MAX_OVERHEAD: usize = 16 + 13;
/// The VP8 payload descriptor of every simulated packet (X, I with a
/// 15-bit picture id, L, T/K): 6 bytes.
const VP8_DESCRIPTOR: usize = 6;

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// One sender's key: AES-128-GCM key and salt.
pub struct FrameKey {
    kid: u64,
    key: LessSafeKey,
    salt: [u8; 12],
}

impl std::fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameKey").field("kid", &self.kid).finish()
    }
}

impl FrameKey {
    /// RFC 9605 section 4.4.2: key and salt from `base_key` and its KID.
    pub fn derive(kid: u64, base_key: &[u8]) -> FrameKey {
        let prk = Salt::new(HKDF_SHA256, &[]).extract(base_key);
        let label = |what: &str| {
            let mut l = format!("SFrame 1.0 Secret {what} ").into_bytes();
            l.extend_from_slice(&kid.to_be_bytes());
            l.extend_from_slice(&SUITE.to_be_bytes());
            l
        };
        let mut key = [0u8; 16];
        let mut salt = [0u8; 12];
        let key_label = label("key");
        let salt_label = label("salt");
        // HKDF-SHA256 can expand up to 255 * 32 bytes: 16 and 12 always fit.
        prk.expand(&[&key_label], Len(16))
            .and_then(|okm| okm.fill(&mut key))
            .expect("HKDF expands 16 bytes");
        prk.expand(&[&salt_label], Len(12))
            .and_then(|okm| okm.fill(&mut salt))
            .expect("HKDF expands 12 bytes");
        // A 16-byte key is what AES-128-GCM takes.
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).expect("16-byte key"));
        FrameKey { kid, key, salt }
    }

    /// The simulator's stand-in for the key exchange: publisher `n`'s key.
    pub fn for_publisher(n: u32) -> FrameKey {
        let mut base = [0u8; 16];
        base[..8].copy_from_slice(b"piazzaE2");
        base[12..].copy_from_slice(&n.to_be_bytes());
        FrameKey::derive(u64::from(n), &base)
    }

    fn nonce(&self, ctr: u64) -> Nonce {
        let mut n = self.salt;
        for (b, c) in n[4..].iter_mut().zip(ctr.to_be_bytes()) {
            *b ^= c;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypt `payload` after its first `clear` bytes with counter `ctr`;
    /// the clear bytes from `skip` on are authenticated.
    pub fn seal(&self, payload: &[u8], skip: usize, clear: usize, ctr: u64) -> Vec<u8> {
        let clear = clear.min(payload.len());
        let skip = skip.min(clear);
        let header = encode_header(self.kid, ctr);
        let mut aad = Vec::with_capacity(header.len() + clear - skip);
        aad.extend_from_slice(&header);
        aad.extend_from_slice(&payload[skip..clear]);
        let mut out = Vec::with_capacity(payload.len() + header.len() + 16);
        out.extend_from_slice(&payload[..clear]);
        out.extend_from_slice(&header);
        let mut body = payload[clear..].to_vec();
        // Sealing fails only for inputs beyond GCM's 64 GiB limit.
        self.key
            .seal_in_place_append_tag(self.nonce(ctr), Aad::from(&aad), &mut body)
            .expect("AES-GCM seals a packet");
        out.extend_from_slice(&body);
        out
    }

    /// Decrypt what [`FrameKey::seal`] made; `None` if it does not
    /// authenticate under this key.
    pub fn open(&self, payload: &[u8], skip: usize, clear: usize) -> Option<Vec<u8>> {
        let (kid, ctr, end) = decode_header(payload, clear)?;
        if kid != self.kid || skip > clear {
            return None;
        }
        let mut aad = Vec::with_capacity(end - skip);
        aad.extend_from_slice(&payload[clear..end]);
        aad.extend_from_slice(&payload[skip..clear]);
        let mut body = payload[end..].to_vec();
        let plain = self
            .key
            .open_in_place(self.nonce(ctr), Aad::from(&aad), &mut body)
            .ok()?;
        let mut out = Vec::with_capacity(clear + plain.len());
        out.extend_from_slice(&payload[..clear]);
        out.extend_from_slice(plain);
        Some(out)
    }
}

/// The KID of an encrypted payload (`None` if there is no valid header).
pub fn kid_of(payload: &[u8], clear: usize) -> Option<u64> {
    decode_header(payload, clear).map(|(kid, _, _)| kid)
}

/// The unauthenticated leading bytes of a simulated payload: the VP8
/// payload descriptor (none for audio).
pub fn descriptor_len(video: bool, payload: &[u8]) -> usize {
    if video {
        VP8_DESCRIPTOR.min(payload.len())
    } else {
        0
    }
}

/// How many leading bytes of a simulated payload stay clear.
pub fn clear_len(video: bool, payload: &[u8]) -> usize {
    if !video || payload.len() < VP8_DESCRIPTOR {
        return 0;
    }
    let first_in_frame = payload[0] & 0x10 != 0;
    if !first_in_frame || payload.len() <= VP8_DESCRIPTOR {
        return VP8_DESCRIPTOR;
    }
    let keyframe = payload[VP8_DESCRIPTOR] & 0x01 == 0;
    VP8_DESCRIPTOR + if keyframe { 10 } else { 3 }
}

/// RFC 9605 section 4.3: `|X|K(3)|Y|C(3)|`, then KID, then CTR (minimal
/// big-endian lengths; values below 8 fit in the config byte).
fn encode_header(kid: u64, ctr: u64) -> Vec<u8> {
    let mut out = vec![0u8];
    let minimal = |v: u64| {
        let b = v.to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count().min(7);
        b[skip..].to_vec()
    };
    if kid < 8 {
        out[0] |= (kid as u8) << 4;
    } else {
        let k = minimal(kid);
        out[0] |= 0x80 | (((k.len() - 1) as u8) << 4);
        out.extend_from_slice(&k);
    }
    if ctr < 8 {
        out[0] |= ctr as u8;
    } else {
        let c = minimal(ctr);
        out[0] |= 0x08 | ((c.len() - 1) as u8);
        out.extend_from_slice(&c);
    }
    out
}

/// `(kid, ctr, end of header)` of the header at `at`.
fn decode_header(b: &[u8], at: usize) -> Option<(u64, u64, usize)> {
    let config = *b.get(at)?;
    let mut pos = at + 1;
    let mut read = |len: usize| -> Option<u64> {
        let bytes = b.get(pos..pos + len)?;
        pos += len;
        Some(bytes.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
    };
    let kid = if config & 0x80 != 0 {
        read(usize::from((config >> 4) & 7) + 1)?
    } else {
        u64::from((config >> 4) & 7)
    };
    let ctr = if config & 0x08 != 0 {
        read(usize::from(config & 7) + 1)?
    } else {
        u64::from(config & 7)
    };
    Some((kid, ctr, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_small_and_large_values() {
        for (kid, ctr) in [
            (0, 0),
            (7, 7),
            (8, 8),
            (3, 1 << 40),
            (70_000, 255),
            (u64::MAX, u64::MAX),
        ] {
            let h = encode_header(kid, ctr);
            assert_eq!(
                decode_header(&h, 0),
                Some((kid, ctr, h.len())),
                "{kid} {ctr}"
            );
        }
        assert_eq!(encode_header(1, 2), vec![0x12]);
        assert_eq!(decode_header(&[0x88], 0), None, "truncated");
    }

    #[test]
    fn seal_keeps_clear_bytes_and_open_recovers_the_payload() {
        let k = FrameKey::for_publisher(3);
        let payload: Vec<u8> = (0..100u8).collect();
        let sealed = k.seal(&payload, 6, 9, 42);
        assert_eq!(&sealed[..9], &payload[..9]);
        assert!(sealed.len() <= payload.len() + MAX_OVERHEAD);
        assert_eq!(k.open(&sealed, 6, 9), Some(payload.clone()));
        assert_eq!(kid_of(&sealed, 9), Some(3));
        // Another sender's key, a changed clear byte, a changed ciphertext byte.
        assert_eq!(FrameKey::for_publisher(4).open(&sealed, 6, 9), None);
        let mut t = sealed.clone();
        t[7] ^= 1;
        assert_eq!(
            k.open(&t, 6, 9),
            None,
            "clear header bytes are authenticated"
        );
        let mut t = sealed.clone();
        t[2] ^= 1;
        assert!(
            k.open(&t, 6, 9).is_some(),
            "the descriptor (rewritten by the SFU) is not"
        );
        let mut t = sealed.clone();
        t[50] ^= 1;
        assert_eq!(k.open(&t, 6, 9), None);
    }

    #[test]
    fn clear_length_follows_the_vp8_payload_header() {
        let mut key = vec![
            0x90, 0xe0, 0x80, 1, 2, 0x20, 0x10, 2, 0, 0x9d, 1, 0x2a, 0, 0, 0, 0, 9,
        ];
        assert_eq!(clear_len(true, &key), 16);
        key[6] = 0x11;
        assert_eq!(clear_len(true, &key), 9, "delta frame");
        key[0] = 0x80;
        assert_eq!(clear_len(true, &key), 6, "continuation packet");
        assert_eq!(clear_len(false, &key), 0, "audio");
    }
}
