//! Forwarding: one publisher's RTP packet to every slot that shows it.
//!
//! `routes[publisher]` lists the (subscriber, slot) pairs a publisher's
//! packets may reach; it is rebuilt when slots change. For each route the
//! slot's state machine decides (forward, drop, or switch on a keyframe),
//! the slot's rewriter maps sequence number, timestamp and VP8 picture id,
//! and the packet is written into the subscriber's `Rtc` with the shared
//! payload (no copy per subscriber).

use std::time::Instant;

use str0m::Rtc;
use str0m::format::detect_h264_nalu;
use str0m::media::Mid;
use str0m::rtp::Ssrc;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};

use super::Room;
use crate::core::CoreOutput;
use crate::core::participant::{Participant, RxTrack, VideoFeed, source_index};
use crate::core::rewriter::Vp8Fields;
use crate::core::selector::OnPacket;
use crate::event::{EngineEvent, TrackKind};
use crate::ids::{ParticipantId, RoomId, VideoCodec, VideoSource};

/// Where a route delivers: a video or audio slot of one subscriber.
#[derive(Debug, Clone, Copy)]
enum SlotRef {
    Video(u16),
    Audio(u16),
}

/// One (subscriber, slot) a publisher's packets may reach.
#[derive(Debug, Clone, Copy)]
pub(super) struct Route {
    sub: u16,
    slot: SlotRef,
}

impl Room {
    pub(super) fn route(&mut self, i: usize, pkt: RtpPacket, now: Instant, out: &mut CoreOutput) {
        if self.routes_dirty {
            self.rebuild_routes();
        }
        let room = self.id;
        let Some(publisher) = self.slab[i].as_mut() else {
            return;
        };
        let pid = publisher.id;
        publisher.stats.rtp_in += 1;
        self.stats.rtp_in += 1;
        let track = publisher.classify(pkt.header.ssrc);
        match track {
            RxTrack::Ignored => {}
            RxTrack::Audio => {
                // As for video: payload, RTP header with the audio-level
                // extension, and the SRTP tag.
                publisher.audio_meter.bytes += pkt.payload.len() as u64 + 36;
                publisher.audio_meter.last_packet = Some(now);
                if !publisher.published.audio {
                    publisher.published.audio = true;
                    self.published(room, pid, TrackKind::Audio, out);
                }
                if let Some(level) = pkt.header.ext_vals.audio_level {
                    self.speakers.on_level(pid, level, now);
                }
                self.forward_audio(i, pid, &pkt, now);
            }
            RxTrack::Video(source, layer) => {
                let si = source_index(source);
                // The codec from the payload type; a PT the session did not
                // negotiate for video (str0m passes what the SDP declared)
                // is not forwarded: no slot could label it.
                let Some(codec) = publisher.layout.video_codec(pkt.header.payload_type) else {
                    return;
                };
                if publisher.video_codec[si].replace(codec) != Some(codec) {
                    // First packet, or the publisher changed codec: slots
                    // that cannot carry it must let it go.
                    self.needs_reassign = true;
                }
                if let Some(m) = publisher.meters[si].get_mut(layer.0 as usize) {
                    // Payload plus RTP header and SRTP tag, roughly what the
                    // layer costs a subscriber's downlink.
                    m.bytes += pkt.payload.len() as u64 + 28;
                    m.last_packet = Some(now);
                }
                let first = match source {
                    VideoSource::Camera => {
                        !std::mem::replace(&mut publisher.published.camera, true)
                    }
                    VideoSource::Screen => {
                        !std::mem::replace(&mut publisher.published.screen, true)
                    }
                };
                if first {
                    if source == VideoSource::Screen {
                        publisher.published.screen_since = Some(now);
                    }
                    // Declared layers that never arrive stop counting as
                    // available after the activation grace.
                    for m in &mut publisher.meters[si] {
                        m.ask(now);
                    }
                    let kind = match source {
                        VideoSource::Camera => TrackKind::Camera,
                        VideoSource::Screen => TrackKind::Screen,
                    };
                    self.published(room, pid, kind, out);
                }
                let feed = VideoFeed {
                    publisher: pid,
                    source,
                    layer,
                };
                self.forward_video(i, feed, codec, &pkt, now);
            }
        }
    }

    fn published(
        &mut self,
        room: RoomId,
        pid: ParticipantId,
        kind: TrackKind,
        out: &mut CoreOutput,
    ) {
        self.needs_reassign = true;
        self.participants_dirty = true;
        out.events.push_back(EngineEvent::TrackPublished {
            room,
            participant: pid,
            kind,
        });
    }

    fn forward_video(
        &mut self,
        i: usize,
        feed: VideoFeed,
        codec: VideoCodec,
        pkt: &RtpPacket,
        now: Instant,
    ) {
        // What one copy costs a downlink, as the layer meters count it.
        let len = pkt.payload.len() as u64 + 28;
        let (keyframe, desc) = match codec {
            VideoCodec::Vp8 => {
                let desc = Vp8Descriptor::parse(&pkt.payload).ok();
                (desc.is_some_and(|d| d.starts_keyframe(&pkt.payload)), desc)
            }
            // No descriptor to rewrite: sequence numbers and timestamps only.
            VideoCodec::H264 => (h264_starts_keyframe(&pkt.payload), None),
        };
        let vp8 = desc
            .map(|d| Vp8Fields {
                picture_id: d.picture_id(),
                long_picture_id: pkt.payload.len() > 2 && pkt.payload[2] & 0x80 != 0,
                tl0_pic_idx: d.tl0_pic_idx(),
            })
            .unwrap_or_default();
        let in_seq: u64 = *pkt.seq_no;
        let in_ts = pkt.header.timestamp;
        let at = self.stamps.stamp(now);
        let routes = &self.routes[i];
        for r in routes {
            let SlotRef::Video(s) = r.slot else { continue };
            let Some(sub) = self.slab[r.sub as usize].as_mut() else {
                continue;
            };
            let media_ready = sub.media_ready;
            let slot = &mut sub.video_slots[s as usize];
            // Assignment never gives a slot a codec it did not negotiate;
            // this catches a publisher that changed codec before the
            // reassignment moved it out.
            let Some(pt) = slot.pts.pt(codec) else {
                continue;
            };
            // Nothing (not even a switch) before the subscriber can decrypt:
            // a consumed keyframe would leave it starting on a delta frame.
            if slot.is_paused() || !media_ready {
                continue;
            }
            match slot.on_packet(feed, keyframe) {
                OnPacket::Drop => {
                    if slot.waits_first_keyframe_of(feed) {
                        self.stats.dropped_waiting_keyframe += 1;
                    }
                    continue;
                }
                OnPacket::Switch => {
                    slot.rewriter.switch_to(in_seq, in_ts, vp8, now);
                    sub.mark_slots_changed();
                    sub.stats.slot_switches += 1;
                    self.stats.slot_switches += 1;
                }
                OnPacket::Forward => {}
            }
            let slot = &mut sub.video_slots[s as usize];
            let Some(rw) = slot.rewriter.rewrite(in_seq, in_ts, vp8, now) else {
                continue;
            };
            let mut w = RtpWrite::new(pt, rw.seq.into(), rw.ts, pkt.timestamp, pkt.payload.clone())
                .marker(pkt.header.marker)
                .nackable(true);
            if let Some(d) = desc {
                let mut b = d.patch();
                if let Some(pid) = rw.picture_id {
                    b = b.picture_id(pid);
                }
                if let Some(t) = rw.tl0_pic_idx {
                    b = b.tl0_pic_idx(t);
                }
                if let Ok(patch) = b.build() {
                    w = w.vp8_patch(patch);
                }
            }
            if write_slot(&mut sub.rtc, &mut slot.ssrc, slot.mid, w) {
                slot.received.record(rw.seq as u16, at);
                sub.mark_dirty();
                sub.stats.rtp_forwarded += 1;
                sub.downlink.record_sent(len);
                self.stats.rtp_forwarded += 1;
            }
        }
    }

    fn forward_audio(&mut self, i: usize, pid: ParticipantId, pkt: &RtpPacket, now: Instant) {
        let len = pkt.payload.len() as u64 + 36;
        let in_seq: u64 = *pkt.seq_no;
        let in_ts = pkt.header.timestamp;
        let at = self.stamps.stamp(now);
        let routes = &self.routes[i];
        for r in routes {
            let SlotRef::Audio(s) = r.slot else { continue };
            let Some(sub) = self.slab[r.sub as usize].as_mut() else {
                continue;
            };
            let Some(pt) = sub.layout.pt_opus else {
                continue;
            };
            let slot = &mut sub.audio_slots[s as usize];
            // As for video: no switch before the subscriber can decrypt, or
            // the stream would start with a sequence gap.
            if slot.holder() != Some(pid) || !sub.media_ready {
                continue;
            }
            if slot.take_switch() {
                slot.rewriter
                    .switch_to(in_seq, in_ts, Vp8Fields::default(), now);
            }
            let Some(rw) = slot
                .rewriter
                .rewrite(in_seq, in_ts, Vp8Fields::default(), now)
            else {
                continue;
            };
            let exts = ExtensionValues {
                audio_level: pkt.header.ext_vals.audio_level,
                voice_activity: pkt.header.ext_vals.voice_activity,
                ..Default::default()
            };
            let w = RtpWrite::new(pt, rw.seq.into(), rw.ts, pkt.timestamp, pkt.payload.clone())
                .marker(pkt.header.marker)
                .ext_vals(exts);
            if write_slot(&mut sub.rtc, &mut slot.ssrc, slot.mid, w) {
                slot.received.record(rw.seq as u16, at);
                sub.mark_dirty();
                sub.stats.rtp_forwarded += 1;
                sub.downlink.record_sent_audio(len);
                self.stats.rtp_forwarded += 1;
            }
        }
    }

    pub(super) fn rebuild_routes(&mut self) {
        self.routes.resize_with(self.slab.len(), Vec::new);
        for r in &mut self.routes {
            r.clear();
        }
        for (si, sub) in self.slab.iter().enumerate() {
            let Some(sub) = sub else { continue };
            for (k, s) in sub.video_slots.iter().enumerate() {
                for p in s.publishers().into_iter().flatten() {
                    if let Some(&pi) = self.index.get(&p) {
                        self.routes[pi].push(Route {
                            sub: si as u16,
                            slot: SlotRef::Video(k as u16),
                        });
                    }
                }
            }
            for (k, s) in sub.audio_slots.iter().enumerate() {
                if let Some(&pi) = s.holder().as_ref().and_then(|p| self.index.get(p)) {
                    self.routes[pi].push(Route {
                        sub: si as u16,
                        slot: SlotRef::Audio(k as u16),
                    });
                }
            }
        }
        self.routes_dirty = false;
    }
}

/// Queue a rewritten packet on a subscriber's slot stream (its SSRC looked
/// up once by mid, then by hash). False if the slot has no send stream.
fn write_slot(rtc: &mut Rtc, cached: &mut Option<Ssrc>, mid: Mid, w: RtpWrite) -> bool {
    let Some(ssrc) = Participant::slot_ssrc(rtc, cached, mid) else {
        return false;
    };
    let mut api = rtc.direct_api();
    let Some(stream) = api.stream_tx(&ssrc) else {
        return false;
    };
    stream.write_rtp(w);
    true
}

/// NAL unit types (RFC 6184 section 5.2; H.264 table 7-1).
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;

/// Whether an H.264 packet (packetization-mode 1) starts a keyframe: it
/// carries an IDR slice (alone, in a STAP-A, or as the start of an FU-A) or
/// the sequence parameter set that precedes one. Browsers send SPS and PPS
/// in their own packet (or STAP-A) just before the IDR, so a switch on the
/// IDR alone would drop them and leave a new subscriber unable to decode.
pub(crate) fn h264_starts_keyframe(payload: &[u8]) -> bool {
    detect_h264_nalu(payload, NAL_SPS) || detect_h264_nalu(payload, NAL_IDR)
}

#[cfg(test)]
mod tests {
    use super::h264_starts_keyframe;

    #[test]
    fn h264_keyframes_start_at_sps_or_idr_alone_aggregated_or_fragmented() {
        // SPS alone, IDR alone.
        assert!(h264_starts_keyframe(&[0x67, 0x42, 0xe0, 0x1f]));
        assert!(h264_starts_keyframe(&[0x65, 0x88, 0x84]));
        // STAP-A with SPS and PPS; STAP-A with an IDR.
        assert!(h264_starts_keyframe(&[
            0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce
        ]));
        assert!(h264_starts_keyframe(&[0x78, 0, 2, 0x65, 0x88]));
        // FU-A: the start of an IDR is one, its continuation is not.
        assert!(h264_starts_keyframe(&[0x7c, 0x85, 0x88]));
        assert!(!h264_starts_keyframe(&[0x7c, 0x05, 0x88]));
        assert!(!h264_starts_keyframe(&[0x7c, 0x45, 0x88]));
        // Delta slices (alone, FU-A start), PPS alone, garbage.
        assert!(!h264_starts_keyframe(&[0x41, 0x9a]));
        assert!(!h264_starts_keyframe(&[0x5c, 0x81, 0x9a]));
        assert!(!h264_starts_keyframe(&[0x68, 0xce]));
        assert!(!h264_starts_keyframe(&[]));
        assert!(!h264_starts_keyframe(&[0x78, 0xff, 0xff, 0x67]));
    }
}
