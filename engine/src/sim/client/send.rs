//! The publishing side of a simulated client: synthetic Opus every 20 ms,
//! VP8 or H.264 simulcast frames per layer (keyframes on request and periodically),
//! each payload carrying a measurement trailer.

use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite};

use super::{LayerSpec, SimClient};
use crate::ids::VideoCodec;
use crate::sim::e2ee::{self, FrameKey};
use crate::sim::media::{Trailer, h264_payloads, opus_payload, vp8_payload};

#[derive(Debug)]
pub(super) struct VideoTx {
    pub(super) mid: Mid,
    pub(super) rid: Option<Rid>,
    pub(super) spec: LayerSpec,
    pub(super) seq: u64,
    pub(super) ts: u32,
    pub(super) picture_id: u16,
    pub(super) tl0: u8,
    pub(super) payload_seq: u64,
    pub(super) force_keyframe: bool,
    pub(super) last_keyframe: Option<Instant>,
    pub(super) track: u8,
    pub(super) layer: u8,
    /// Dynacast: the engine says somebody watches this layer.
    pub(super) enabled: bool,
}

impl VideoTx {
    /// A layer starting from seeded random sequence, timestamp and picture
    /// ids (so rewriting is exercised), opening with a keyframe.
    pub(super) fn new(
        mid: Mid,
        rid: Option<Rid>,
        spec: LayerSpec,
        track: u8,
        layer: u8,
        rng: &mut fastrand::Rng,
    ) -> Self {
        VideoTx {
            mid,
            rid,
            spec,
            seq: rng.u64(0..30_000),
            ts: rng.u32(..),
            picture_id: rng.u16(0..0x7fff),
            tl0: rng.u8(..),
            payload_seq: 0,
            force_keyframe: true,
            last_keyframe: None,
            track,
            layer,
            enabled: true,
        }
    }
}

impl SimClient {
    pub(super) fn generate_media(&mut self, now: Instant) {
        let sent_ns =
            |t: Instant, epoch: Instant| t.saturating_duration_since(epoch).as_nanos() as u64;
        // Audio: 20 ms Opus frames.
        while let (Some(at), Some(mid), Some(pt)) = (self.next_audio, self.audio_mid, self.pt_opus)
        {
            if at > now {
                break;
            }
            let trailer = Trailer {
                publisher: self.config.publisher,
                seq: self.audio_payload_seq,
                sent_ns: sent_ns(at, self.epoch),
                layer: 0,
                track: 0,
                end_of_frame: true,
                keyframe: false,
            };
            let mut payload = opus_payload(
                if self.e2ee_key.is_some() {
                    80 - E2EE_OVERHEAD
                } else {
                    80
                },
                &trailer,
            );
            payload = protect(
                payload,
                false,
                &self.config.plaintext_marker,
                self.e2ee_key.as_ref(),
                &mut self.e2ee_ctr,
            );
            let level = if self.config.speaking { -20 } else { -127 };
            let exts = ExtensionValues {
                audio_level: Some(level),
                voice_activity: Some(self.config.speaking),
                ..Default::default()
            };
            if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
                stream.write_rtp(
                    RtpWrite::new(pt, self.audio_seq.into(), self.audio_ts, at, payload)
                        .marker(false)
                        .ext_vals(exts),
                );
                self.stats.packets_sent += 1;
            }
            self.audio_seq += 1;
            self.audio_ts = self.audio_ts.wrapping_add(960);
            self.audio_payload_seq += 1;
            self.next_audio = Some(at + Duration::from_millis(20));
        }
        // Camera frames for all layers at once, screen frames at 5 fps.
        let frame_interval = Duration::from_secs(1) / self.config.fps.max(1);
        while let Some(at) = self.next_frame.filter(|t| *t <= now) {
            self.send_frames(1, at, frame_interval);
            self.next_frame = Some(at + frame_interval);
        }
        let screen_interval = Duration::from_millis(200);
        while let Some(at) = self.next_screen_frame.filter(|t| *t <= now) {
            self.send_frames(2, at, screen_interval);
            self.next_screen_frame = Some(at + screen_interval);
        }
    }

    fn send_frames(&mut self, track: u8, at: Instant, interval: Duration) {
        let Some(pt) = self.video_pt() else { return };
        let codec = self.video_codec();
        let keyframe_interval = self.config.keyframe_interval;
        let epoch = self.epoch;
        let publisher = self.config.publisher;
        let mtu = self.config.mtu_payload.max(200);
        let overhead = if self.e2ee_key.is_some() {
            E2EE_OVERHEAD
        } else {
            0
        };
        for v in self
            .video
            .iter_mut()
            .filter(|v| v.track == track && v.enabled && v.spec.bitrate_bps > 0)
        {
            let periodic = v
                .last_keyframe
                .is_none_or(|k| at.saturating_duration_since(k) >= keyframe_interval);
            let keyframe = v.force_keyframe || periodic;
            if keyframe {
                v.force_keyframe = false;
                v.last_keyframe = Some(at);
            }
            let per_frame =
                (v.spec.bitrate_bps as u64 * interval.as_micros() as u64 / 8_000_000) as usize;
            let frame_bytes = if keyframe { per_frame * 3 } else { per_frame }.max(64);
            let ticks = (interval.as_micros() as u64 * 90 / 1000) as u32;
            v.ts = v.ts.wrapping_add(ticks);
            v.picture_id = (v.picture_id + 1) & 0x7fff;
            v.tl0 = v.tl0.wrapping_add(1);
            let (first_seq, layer, track) = (v.payload_seq, v.layer, v.track);
            let trailer = |k: usize, last: bool| Trailer {
                publisher,
                seq: first_seq + k as u64,
                sent_ns: at.saturating_duration_since(epoch).as_nanos() as u64,
                layer,
                track,
                end_of_frame: last,
                keyframe,
            };
            let payloads: Vec<Vec<u8>> = match codec {
                VideoCodec::Vp8 => {
                    let packets = frame_bytes.div_ceil(mtu).max(1);
                    let size = frame_bytes.div_ceil(packets);
                    (0..packets)
                        .map(|k| {
                            vp8_payload(
                                k == 0,
                                keyframe,
                                v.picture_id,
                                v.tl0,
                                v.spec.width,
                                v.spec.height,
                                size.saturating_sub(overhead)
                                    .max(crate::sim::media::TRAILER_LEN + 16),
                                &trailer(k, k + 1 == packets),
                            )
                        })
                        .collect()
                }
                VideoCodec::H264 => h264_payloads(
                    keyframe,
                    v.spec.width,
                    v.spec.height,
                    frame_bytes,
                    mtu,
                    trailer,
                ),
            };
            let packets = payloads.len();
            for (k, payload) in payloads.into_iter().enumerate() {
                let last = k + 1 == packets;
                let payload = protect(
                    payload,
                    true,
                    &self.config.plaintext_marker,
                    self.e2ee_key.as_ref(),
                    &mut self.e2ee_ctr,
                );
                if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(v.mid, v.rid) {
                    stream.write_rtp(
                        RtpWrite::new(pt, v.seq.into(), v.ts, at, payload)
                            .marker(last)
                            .nackable(true),
                    );
                    self.stats.packets_sent += 1;
                }
                v.seq += 1;
                v.payload_seq += 1;
            }
        }
    }
}

/// About what encryption adds to a payload (16-byte tag, 3-5 byte header):
/// taken from the body so encrypted packets keep their sizes.
const E2EE_OVERHEAD: usize = 20;

/// Stamp the plaintext marker into a payload's body, then encrypt it after
/// its clear bytes when the client has a key.
fn protect(
    mut payload: Vec<u8>,
    video: bool,
    marker: &Option<Vec<u8>>,
    key: Option<&FrameKey>,
    ctr: &mut u64,
) -> Vec<u8> {
    let clear = e2ee::clear_len(video, &payload);
    if let Some(m) = marker
        && payload.len() >= clear + m.len() + crate::sim::media::TRAILER_LEN
    {
        payload[clear..clear + m.len()].copy_from_slice(m);
    }
    match key {
        Some(k) => {
            let skip = e2ee::descriptor_len(video, &payload);
            let sealed = k.seal(&payload, skip, clear, *ctr);
            *ctr += 1;
            sealed
        }
        None => payload,
    }
}
