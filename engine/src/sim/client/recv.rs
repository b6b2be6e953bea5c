//! The receiving side of a simulated client: each RTP packet that arrives
//! through a slot, decrypted (end-to-end encrypted rooms) and measured:
//! latency from its trailer, sequence gaps and reordering, publisher and
//! layer switches, frames, freezes; and folded into the replay trace.

use std::hash::Hasher;
use std::time::{Duration, Instant};

use str0m::rtp::RtpPacket;

use super::{Arrival, SimClient};
use crate::sim::e2ee::{self, FrameKey};
use crate::sim::media::{Trailer, h264_first_nal_type, h264_well_formed};

impl SimClient {
    pub(super) fn on_rtp(&mut self, p: RtpPacket, now: Instant) {
        // The first packets of a stream can arrive before str0m registers its
        // receive stream; they carry the MID extension.
        let mid = self
            .rtc
            .direct_api()
            .stream_rx(&p.header.ssrc)
            .map(|s| s.mid())
            .or(p.header.ext_vals.mid);
        let Some(mid) = mid else {
            self.stats.unexpected_packets += 1;
            return;
        };
        let Some(&i) = self.slot_index.get(&mid) else {
            self.stats.unexpected_packets += 1;
            return;
        };
        let measuring = self.measure_from.is_none_or(|t| now >= t);
        if let Some(m) = &self.config.plaintext_marker
            && !m.is_empty()
            && p.payload.windows(m.len()).any(|w| w == m.as_slice())
        {
            self.stats.marker_packets += 1;
        }
        let opened;
        let payload: &[u8] = if self.config.e2ee {
            let video = self.stats.slots[i].video;
            let clear = e2ee::clear_len(video, &p.payload);
            let skip = e2ee::descriptor_len(video, &p.payload);
            let key = e2ee::kid_of(&p.payload, clear).and_then(|kid| {
                let n = u32::try_from(kid).ok()?;
                Some(
                    self.e2ee_keys
                        .entry(kid)
                        .or_insert_with(|| FrameKey::for_publisher(n)),
                )
            });
            opened = key.and_then(|k| k.open(&p.payload, skip, clear));
            match &opened {
                Some(plain) => {
                    self.stats.e2ee_decrypted += 1;
                    plain
                }
                None => {
                    self.stats.e2ee_failures += 1;
                    &p.payload
                }
            }
        } else {
            &p.payload
        };
        let trailer = Trailer::read(payload);
        // What arrived, decrypted: slot, header fields, payload, time.
        let h = &mut self.rx_trace;
        h.write_usize(i);
        h.write_u64(*p.seq_no);
        h.write_u32(p.header.timestamp);
        h.write(&p.payload);
        h.write_u128(now.saturating_duration_since(self.epoch).as_nanos());
        if self.config.record_arrivals {
            self.arrivals.push(Arrival {
                slot: i as u16,
                seq: *p.seq_no,
                rtp_time: p.header.timestamp,
                at: p.timestamp,
                payload_len: p.payload.len() as u32,
                rtp_len: (p.header.header_len + p.payload.len()) as u32,
                trailer,
            });
        }
        if let Some(t) = trailer {
            let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
            let us = now_ns.saturating_sub(t.sent_ns) / 1000;
            if measuring {
                self.stats.latencies_us.push(us.min(u32::MAX as u64) as u32);
            }
        }
        let h264 = self.pt_h264.is_some_and(|pt| pt == p.header.payload_type);
        let s = &mut self.stats.slots[i];
        let seq = *p.seq_no;
        s.packets += 1;
        if h264 {
            s.h264_packets += 1;
            if !h264_well_formed(payload) {
                s.h264_malformed += 1;
            }
        } else if self.pt_vp8.is_some_and(|pt| pt == p.header.payload_type) {
            s.vp8_packets += 1;
        }
        s.first_packet_at.get_or_insert(now);
        match s.max_seq {
            None => {
                s.first_seq = Some(seq);
                s.max_seq = Some(seq);
            }
            Some(m) if seq > m => s.max_seq = Some(seq),
            Some(_) => {
                s.reordered += 1;
                if s.first_seq.is_some_and(|f| seq < f) {
                    s.first_seq = Some(seq);
                }
            }
        }
        let Some(t) = trailer else { return };
        if t.keyframe && s.first_keyframe_at.is_none() {
            s.first_keyframe_at = Some(now);
        }
        let key = (t.publisher, t.track, t.layer);
        if s.current != Some(key) {
            match s.current {
                Some(c) if c.0 != t.publisher => s.publisher_switches += 1,
                Some(_) => s.layer_switches += 1,
                None => {}
            }
            if s.video && !t.keyframe {
                s.non_keyframe_starts += 1;
            }
            if h264 && h264_first_nal_type(payload) != Some(7) {
                s.h264_starts_without_sps += 1;
            }
            s.current = Some(key);
        }
        if t.end_of_frame && s.video {
            s.frames += 1;
            if let Some(last) = s.last_frame_at {
                let gap = now.saturating_duration_since(last);
                if measuring {
                    // Only the part of a gap after `measure_from` counts.
                    let seen = self
                        .measure_from
                        .map_or(gap, |m| now.saturating_duration_since(last.max(m)));
                    if seen > s.max_frame_gap {
                        s.max_frame_gap = seen;
                        s.max_frame_gap_end = Some(now);
                    }
                    if s.gap_count >= 10 {
                        let mean = s.gap_sum / s.gap_count as u32;
                        let threshold = (mean * 3).max(mean + Duration::from_millis(150));
                        if seen >= threshold {
                            s.freezes += 1;
                            s.freeze_time += seen;
                        }
                    }
                }
                s.gap_sum += gap;
                s.gap_count += 1;
            }
            s.last_frame_at = Some(now);
        }
    }
}
