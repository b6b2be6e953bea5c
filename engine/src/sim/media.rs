//! Synthetic media: VP8 payloads with valid RFC 7741 payload descriptors,
//! H.264 payloads in RFC 6184 packetization-mode 1 and
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

/// NAL unit headers (RFC 6184 section 5.3: F, NRI, type).
const NAL_SPS: u8 = 0x67;
const NAL_PPS: u8 = 0x68;
const NAL_IDR: u8 = 0x65;
const NAL_NON_IDR: u8 = 0x41;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// The RTP payloads of one H.264 frame of about `frame_bytes` in
/// packetization-mode 1 (RFC 6184), as browsers packetize: a keyframe
/// opens with SPS (constrained baseline 42e01f, with the frame size) and
/// PPS aggregated in a STAP-A, then the IDR slice; a slice that does not fit
/// `mtu` goes as FU-A fragments (start bit on the first, end bit on the
/// last), else as a single NAL unit packet. Every payload ends with the
/// trailer `trailer(index, last)` (inside the last NAL unit of a STAP-A).
pub fn h264_payloads(
    keyframe: bool,
    width: u16,
    height: u16,
    frame_bytes: usize,
    mtu: usize,
    trailer: impl Fn(usize, bool) -> Trailer,
) -> Vec<Vec<u8>> {
    let mtu = mtu.max(TRAILER_LEN + 64);
    let mut out = Vec::new();
    let slice_header = if keyframe { NAL_IDR } else { NAL_NON_IDR };
    let slice_len = frame_bytes.max(TRAILER_LEN + 16);
    // One NAL header byte plus the slice.
    let fragments = if slice_len < mtu {
        1
    } else {
        // Each FU-A fragment carries 2 header bytes and a trailer.
        slice_len.div_ceil(mtu - 2 - TRAILER_LEN)
    };
    let total = fragments + usize::from(keyframe);
    if keyframe {
        let mut sps = vec![NAL_SPS, 0x42, 0xe0, 0x1f];
        sps.extend_from_slice(&width.to_be_bytes());
        sps.extend_from_slice(&height.to_be_bytes());
        let mut pps = vec![NAL_PPS, 0xce, 0x3c, 0x80];
        trailer(0, total == 1).write(&mut pps);
        let mut buf = vec![0x60 | STAP_A];
        for nal in [&sps, &pps] {
            buf.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            buf.extend_from_slice(nal);
        }
        out.push(buf);
    }
    if fragments == 1 {
        let mut buf = vec![slice_header];
        buf.extend(std::iter::repeat_n(0xa5, slice_len - TRAILER_LEN));
        trailer(out.len(), true).write(&mut buf);
        out.push(buf);
        return out;
    }
    let chunk = slice_len.div_ceil(fragments);
    for f in 0..fragments {
        let (start, end) = (f == 0, f + 1 == fragments);
        let fu_header = (u8::from(start) << 7) | (u8::from(end) << 6) | (slice_header & 0x1f);
        let mut buf = vec![(slice_header & 0x60) | FU_A, fu_header];
        buf.extend(std::iter::repeat_n(
            0xa5,
            chunk.saturating_sub(TRAILER_LEN).max(1),
        ));
        trailer(out.len(), end).write(&mut buf);
        out.push(buf);
    }
    out
}

/// What an H.264 payload (packetization-mode 1) starts: the NAL unit type
/// of a single NAL unit packet, of the first unit of a STAP-A, or of the
/// unit an FU-A start fragment begins (`None` for other FU-A fragments and
/// malformed payloads).
pub fn h264_first_nal_type(payload: &[u8]) -> Option<u8> {
    let t = payload.first()? & 0x1f;
    match t {
        1..=23 => Some(t),
        STAP_A => Some(payload.get(3)? & 0x1f),
        FU_A => {
            let h = payload.get(1)?;
            (h & 0x80 != 0).then_some(h & 0x1f)
        }
        _ => None,
    }
}

/// Whether an H.264 payload is well-formed packetization-mode 1: a single
/// NAL unit, a STAP-A whose units fill it exactly, or an FU-A with a
/// fragment after its two header bytes.
pub fn h264_well_formed(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    match b0 & 0x1f {
        1..=23 => true,
        STAP_A => {
            let mut at = 1;
            while at < payload.len() {
                let Some(len) = payload.get(at..at + 2) else {
                    return false;
                };
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                if len == 0 {
                    return false;
                }
                at += 2 + len;
            }
            at == payload.len() && payload.len() > 1
        }
        FU_A => payload.len() > 2 && !(payload[1] & 0x80 != 0 && payload[1] & 0x40 != 0),
        _ => false,
    }
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
