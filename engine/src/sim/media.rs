//! Synthetic media: VP8 payloads with valid RFC 7741 payload descriptors and
//! Opus-sized audio, each carrying a trailer with (publisher, sequence, send
//! time) so receivers measure one-way latency and end-to-end loss.

/// Bytes of the measurement trailer at the end of every media payload.
pub const TRAILER_LEN: usize = 28;
const MAGIC: [u8; 4] = *b"PZ01";

/// What every synthetic payload carries at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Publisher (the client's own number, not a ParticipantId).
    pub publisher: u32,
    /// Per-track payload sequence (gapless at the publisher).
    pub seq: u64,
    /// Intended send time, nanoseconds since the client's epoch.
    pub sent_ns: u64,
    /// Simulcast layer (0 for audio).
    pub layer: u8,
    /// Track: 0 audio, 1 camera, 2 screen.
    pub track: u8,
    /// Last packet of a frame.
    pub end_of_frame: bool,
    /// Part of a keyframe.
    pub keyframe: bool,
}

impl Trailer {
    /// Append the trailer to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&self.publisher.to_be_bytes());
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&self.sent_ns.to_be_bytes());
        buf.push(self.layer);
        buf.push(self.track);
        buf.push(self.end_of_frame as u8);
        buf.push(self.keyframe as u8);
    }

    /// Read the trailer from the end of a payload.
    pub fn read(payload: &[u8]) -> Option<Trailer> {
        if payload.len() < TRAILER_LEN {
            return None;
        }
        let t = &payload[payload.len() - TRAILER_LEN..];
        if t[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(t[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_be_bytes(t[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(Trailer {
            publisher: u32_at(4),
            seq: u64_at(8),
            sent_ns: u64_at(16),
            layer: t[24],
            track: t[25],
            end_of_frame: t[26] != 0,
            keyframe: t[27] != 0,
        })
    }
}

/// One VP8 RTP payload: descriptor with 15-bit picture id, TL0PICIDX and
/// TID/KEYIDX byte; the first packet of a frame carries the VP8 payload
/// header (keyframes with the start code and dimensions).
#[allow(clippy::too_many_arguments)]
pub fn vp8_payload(
    first_in_frame: bool,
    keyframe: bool,
    picture_id: u16,
    tl0_pic_idx: u8,
    width: u16,
    height: u16,
    size: usize,
    trailer: &Trailer,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(size.max(TRAILER_LEN + 16));
    // X=1, S=start of partition 0 on the first packet.
    buf.push(if first_in_frame { 0x90 } else { 0x80 });
    // I, L, T present.
    buf.push(0xe0);
    buf.push(0x80 | ((picture_id >> 8) as u8 & 0x7f));
    buf.push(picture_id as u8);
    buf.push(tl0_pic_idx);
    // TID 0, Y=1.
    buf.push(0x20);
    if first_in_frame {
        // Frame tag: P bit (bit 0) clear on keyframes; show_frame set.
        let tag0 = if keyframe { 0x10 } else { 0x11 };
        buf.extend_from_slice(&[tag0, 0x02, 0x00]);
        if keyframe {
            buf.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            buf.extend_from_slice(&width.to_le_bytes());
            buf.extend_from_slice(&height.to_le_bytes());
        }
    }
    let body = size.saturating_sub(buf.len() + TRAILER_LEN);
    buf.extend(std::iter::repeat_n(0xa5, body));
    trailer.write(&mut buf);
    buf
}

/// One Opus-sized audio payload (TOC byte + filler + trailer).
pub fn opus_payload(size: usize, trailer: &Trailer) -> Vec<u8> {
    let mut buf = Vec::with_capacity(size.max(TRAILER_LEN + 1));
    // TOC: SILK/CELT hybrid config, 20 ms frame.
    buf.push(0x78);
    let body = size.saturating_sub(1 + TRAILER_LEN);
    buf.extend(std::iter::repeat_n(0x3c, body));
    trailer.write(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::format::detect_vp8_keyframe;
    use str0m::rtp::Vp8Descriptor;

    #[test]
    fn vp8_payload_is_valid_and_keyframes_detected() {
        let t = Trailer {
            publisher: 3,
            seq: 9,
            sent_ns: 12345,
            layer: 1,
            track: 1,
            end_of_frame: true,
            keyframe: true,
        };
        let key = vp8_payload(true, true, 300, 7, 640, 360, 1000, &t);
        let delta = vp8_payload(true, false, 301, 8, 640, 360, 1000, &t);
        let cont = vp8_payload(false, true, 300, 7, 640, 360, 1000, &t);
        assert!(detect_vp8_keyframe(&key));
        assert!(!detect_vp8_keyframe(&delta));
        assert!(!detect_vp8_keyframe(&cont));
        let d = Vp8Descriptor::parse(&key).unwrap();
        assert!(d.starts_keyframe(&key));
        assert_eq!(d.picture_id(), Some(300));
        assert_eq!(d.tl0_pic_idx(), Some(7));
        assert_eq!(Trailer::read(&key), Some(t));
        assert_eq!(key.len(), 1000);
    }
}
