//! The sans-IO room: participants, slot assignment and forwarding.
//!
//! # Driving contract
//!
//! Inputs: [`Room::handle_receive`] for a datagram of one participant,
//! [`Room::handle_timeout`] when [`Room::poll_timeout`] is due, and the
//! control calls ([`Room::add`], [`Room::remove`], [`Room::set_locked`]).
//! After any batch of inputs call [`Room::flush`]: it gives every participant
//! that has pending writes one `Input::Timeout(now)` and drains its output
//! into the [`CoreOutput`]. Nothing here reads a clock, owns a socket or locks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::media::Mid;
use str0m::net::Receive;
use str0m::rtp::Ssrc;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

mod bandwidth;
mod chat;

pub use bandwidth::{SlotState, SubscriberStats};

use crate::config::RoomConfig;
use crate::core::CoreOutput;
use crate::core::control::{
    AudioSlotInfo, ClientMessage, ParticipantInfo, ServerMessage, VideoSlotInfo,
};
use crate::core::forwarder::Vp8Fields;
use crate::core::participant::{Participant, RxTrack, VideoFeed, source_index};
use crate::core::selector::{self, OnPacket};
use crate::core::speaker::SpeakerDetector;
use crate::event::{EngineEvent, LeaveReason, TrackKind};
use crate::ids::{Layer, ParticipantId, RoomId, VideoSource};
use crate::join::Prepared;

/// How often the room re-evaluates speakers, sends coalesced control
/// messages and retries keyframe requests.
const TICK: Duration = Duration::from_millis(100);
/// Audio slot hysteresis: a challenger must be this much louder (dB) than
/// the quietest holder to take its slot.
const AUDIO_SWITCH_MARGIN: f32 = 6.0;
/// Forward to a connected peer that has sent no SRTP yet after this long.
const MEDIA_READY_FALLBACK: Duration = Duration::from_millis(300);

/// Where a route delivers: a video or audio slot of one subscriber.
#[derive(Debug, Clone, Copy)]
enum SlotRef {
    Video(u16),
    Audio(u16),
}

#[derive(Debug, Clone, Copy)]
struct Route {
    sub: u16,
    slot: SlotRef,
}

/// Counters of one room.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoomStats {
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscriber slots.
    pub rtp_forwarded: u64,
    /// Keyframe requests sent to publishers.
    pub plis_sent: u64,
    /// Slot publisher/layer switches completed.
    pub slot_switches: u64,
    /// Packets dropped because their slot was waiting for a keyframe.
    pub dropped_waiting_keyframe: u64,
    /// Times a subscriber's loss report capped its estimate below str0m's.
    pub loss_caps: u64,
}

pub(crate) struct Room {
    pub id: RoomId,
    pub config: RoomConfig,
    pub locked: bool,
    slab: Vec<Option<Participant>>,
    index: HashMap<ParticipantId, usize>,
    join_seq: u64,
    /// Per publisher slab index: the slots its packets may go to.
    routes: Vec<Vec<Route>>,
    routes_dirty: bool,
    needs_reassign: bool,
    last_reassign: Option<Instant>,
    participants_dirty: bool,
    speaker_dirty: bool,
    speakers: SpeakerDetector,
    next_tick: Option<Instant>,
    to_remove: Vec<(ParticipantId, LeaveReason)>,
    /// When layer meters were last folded.
    meters_at: Option<Instant>,
    /// Chat history, limits and the E2EE key relay (`room/chat.rs`).
    chat: crate::core::chat::Chat,
    pub stats: RoomStats,
    /// Fault injection: panic on the next datagram or timer.
    #[cfg(feature = "fault-injection")]
    pub panic_armed: bool,
}

impl Room {
    pub fn new(id: RoomId, config: RoomConfig) -> Self {
        let chat = crate::core::chat::Chat::new(config.chat.clone(), config.e2ee);
        Room {
            chat,
            id,
            config,
            locked: false,
            slab: Vec::new(),
            index: HashMap::new(),
            join_seq: 0,
            routes: Vec::new(),
            routes_dirty: true,
            needs_reassign: false,
            last_reassign: None,
            participants_dirty: false,
            speaker_dirty: false,
            speakers: SpeakerDetector::default(),
            next_tick: None,
            to_remove: Vec::new(),
            meters_at: None,
            stats: RoomStats::default(),
            #[cfg(feature = "fault-injection")]
            panic_armed: false,
        }
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Adopt a prepared participant.
    pub fn add(&mut self, prepared: Prepared, now: Instant, out: &mut CoreOutput) {
        let id = prepared.id;
        let name = prepared.name.clone();
        self.join_seq += 1;
        let mut p = Participant::new(prepared, self.join_seq, now);
        // Size each slot's RTX cache: it answers subscriber NACKs, and with
        // the default 2000 packets x 3 s it dominates memory.
        p.reset_rtx_caches(self.config.rtx_cache_packets, self.config.rtx_cache_age);
        let slot = match self.slab.iter().position(Option::is_none) {
            Some(i) => {
                self.slab[i] = Some(p);
                i
            }
            None => {
                self.slab.push(Some(p));
                self.slab.len() - 1
            }
        };
        self.index.insert(id, slot);
        self.needs_reassign = true;
        self.participants_dirty = true;
        self.routes_dirty = true;
        if self.next_tick.is_none() {
            self.next_tick = Some(now);
        }
        out.events.push_back(EngineEvent::ParticipantJoined {
            room: self.id,
            participant: id,
            name,
        });
    }

    /// Remove a participant: disconnects its `Rtc` (queueing DTLS
    /// close_notify), drains it and frees everything it held.
    pub fn remove(
        &mut self,
        pid: ParticipantId,
        reason: LeaveReason,
        now: Instant,
        out: &mut CoreOutput,
    ) -> bool {
        let Some(i) = self.index.remove(&pid) else {
            return false;
        };
        if let Some(p) = self.slab[i].as_mut() {
            // Put the notice on the wire before the DTLS close_notify.
            let notice = match reason {
                LeaveReason::Kicked => Some(ServerMessage::Kicked {
                    reason: "removed by the room owner".into(),
                }),
                LeaveReason::RoomClosed => Some(ServerMessage::Closing {
                    reason: "the room was closed".into(),
                }),
                LeaveReason::Shutdown => Some(ServerMessage::Closing {
                    reason: "the server is shutting down; try again in a moment".into(),
                }),
                LeaveReason::Left | LeaveReason::Disconnected | LeaveReason::Timeout => None,
            };
            if let Some(notice) = notice {
                send_control(p, &notice);
                flush_transmits(p, now, out);
            }
            // close(): RTCP BYE, SCTP shutdown and DTLS close_notify, so the
            // peer learns at once (disconnect() would just go silent).
            if p.rtc.close().is_ok() {
                flush_transmits(p, now, out);
            }
            p.rtc.disconnect();
        }
        self.slab[i] = None;
        self.chat.forget(pid);
        let was_speaker = self.speakers.current() == Some(pid);
        self.speakers.remove(pid);
        self.needs_reassign = true;
        self.participants_dirty = true;
        self.routes_dirty = true;
        // Slots showing the leaver go dark at once.
        for p in self.slab.iter_mut().flatten() {
            for s in &mut p.video_slots {
                if s.current.is_some_and(|f| f.publisher == pid) {
                    s.current = None;
                    p.slots_dirty = true;
                }
                if s.target.is_some_and(|f| f.publisher == pid) {
                    s.target = None;
                    s.pending_since = None;
                }
            }
            for s in &mut p.audio_slots {
                if s.holder == Some(pid) {
                    s.holder = None;
                    p.slots_dirty = true;
                }
            }
            if p.pinned == Some(pid) {
                p.pinned = None;
            }
        }
        out.left.push(pid);
        out.events.push_back(EngineEvent::ParticipantLeft {
            room: self.id,
            participant: pid,
            reason,
        });
        if was_speaker {
            self.speaker_dirty = true;
            out.events.push_back(EngineEvent::ActiveSpeaker {
                room: self.id,
                participant: None,
            });
        }
        if self.index.is_empty() {
            // An empty room needs no tick until someone joins.
            self.next_tick = None;
        }
        true
    }

    /// Remove everyone (room closing).
    pub fn close(&mut self, reason: LeaveReason, now: Instant, out: &mut CoreOutput) {
        let ids: Vec<_> = self.index.keys().copied().collect();
        for p in ids {
            self.remove(p, reason, now, out);
        }
    }

    pub fn set_locked(&mut self, locked: bool) {
        self.locked = locked;
    }

    /// One datagram for participant `pid`.
    pub fn handle_receive(
        &mut self,
        pid: ParticipantId,
        now: Instant,
        r: Receive,
        srtp: bool,
        out: &mut CoreOutput,
    ) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.panic_armed {
            panic!("injected fault: room {} panics on a datagram", self.id);
        }
        let Some(&i) = self.index.get(&pid) else {
            return false;
        };
        let Some(p) = self.slab[i].as_mut() else {
            return false;
        };
        if let Err(e) = p.rtc.handle_input(Input::Receive(now, r)) {
            tracing::debug!(participant = %pid, "input refused: {e}");
            return false;
        }
        p.last_ingress = now;
        if srtp && p.connected && !p.media_ready {
            // SRTP from the peer: it has its keys, so what we send now is
            // decrypted (not dropped, as a keyframe sent before the peer's
            // DTLS completed would be).
            p.media_ready = true;
            self.routes_dirty = true;
        }
        self.drain(i, now, out);
        true
    }

    /// Earliest time the room needs [`Room::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtc = self.slab.iter().flatten().map(|p| p.next_timeout).min();
        match (rtc, self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drive the participants whose timers are due, and the room's own tick.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut CoreOutput) {
        #[cfg(feature = "fault-injection")]
        if self.panic_armed {
            panic!("injected fault: room {} panics on a timer", self.id);
        }
        for i in 0..self.slab.len() {
            let due = matches!(&self.slab[i], Some(p) if p.next_timeout <= now);
            if due && let Some(p) = self.slab[i].as_mut() {
                p.dirty = true;
            }
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.tick(now, out);
            self.next_tick = Some(now + TICK);
        }
        self.flush(now, out);
    }

    /// Give every participant with pending writes one timeout and drain it.
    pub fn flush(&mut self, now: Instant, out: &mut CoreOutput) {
        if self.needs_reassign && !self.reassign_throttled(now) {
            self.reassign(now);
            self.allocate_all(now);
            self.apply_switches(now);
        }
        // Draining can route packets that dirty others: loop until quiet.
        for _round in 0..4 {
            let mut any = false;
            for i in 0..self.slab.len() {
                let dirty = matches!(&self.slab[i], Some(p) if p.dirty);
                if !dirty {
                    continue;
                }
                any = true;
                if let Some(p) = self.slab[i].as_mut() {
                    p.dirty = false;
                    if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!(participant = %p.id, "timeout refused: {e}");
                    }
                }
                self.drain(i, now, out);
            }
            if !any {
                break;
            }
        }
        if !self.to_remove.is_empty() {
            let gone: Vec<_> = self.to_remove.drain(..).collect();
            for (pid, reason) in gone {
                self.remove(pid, reason, now, out);
            }
        }
    }

    fn reassign_throttled(&self, now: Instant) -> bool {
        // Structural changes (join/leave/publish) set `needs_reassign` too;
        // they are applied on the next tick at the latest.
        self.last_reassign
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.reassign_interval / 4)
    }

    fn tick(&mut self, now: Instant, out: &mut CoreOutput) {
        // Vanished peers. str0m's ICE-lite agent forgets a pair only after
        // 15 s without a binding request, and only while something else
        // drives its timers; a peer that never completed ICE has no pair to
        // forget. The room's own clock on accepted ingress covers both.
        let limit = self.config.inactivity_timeout;
        for p in self.slab.iter().flatten() {
            if now.saturating_duration_since(p.last_ingress) >= limit
                && !self.to_remove.iter().any(|(id, _)| *id == p.id)
            {
                tracing::debug!(participant = %p.id, "no ingress for {limit:?}: removing");
                self.to_remove.push((p.id, LeaveReason::Timeout));
            }
        }
        // A peer that sends no media still gets media a moment after it
        // connected (its DTLS has long completed by then).
        for p in self.slab.iter_mut().flatten() {
            let waited = p
                .connected_at
                .is_some_and(|t| now.saturating_duration_since(t) >= MEDIA_READY_FALLBACK);
            if !p.media_ready && waited {
                p.media_ready = true;
                self.routes_dirty = true;
            }
        }
        if let Some(change) = self.speakers.evaluate(now, self.config.speaker_switch_hold) {
            self.speaker_dirty = true;
            self.needs_reassign = true;
            out.events.push_back(EngineEvent::ActiveSpeaker {
                room: self.id,
                participant: change,
            });
        }
        // Audio slots follow loudness continuously.
        if self.update_audio_slots(now) {
            self.routes_dirty = true;
        }
        // Recent-speaker order shifts video slots; re-evaluate at the
        // configured interval.
        if self
            .last_reassign
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.reassign_interval)
        {
            self.needs_reassign = true;
        }
        if self.needs_reassign {
            self.reassign(now);
        }
        self.update_meters(now);
        self.allocate_all(now);
        self.apply_switches(now);
        self.dynacast(now);
        self.send_coalesced_control();
    }

    // ---------------------------------------------------------------- output

    fn drain(&mut self, i: usize, now: Instant, out: &mut CoreOutput) {
        loop {
            let Some(p) = self.slab[i].as_mut() else {
                return;
            };
            match p.rtc.poll_output() {
                Ok(Output::Transmit(t)) => out.transmits.push_back(t),
                Ok(Output::Timeout(t)) => {
                    p.next_timeout = t;
                    return;
                }
                Ok(Output::Event(e)) => self.on_event(i, e, now, out),
                Err(e) => {
                    let id = p.id;
                    tracing::debug!(participant = %id, "rtc error: {e}");
                    p.next_timeout = now + Duration::from_secs(3600);
                    self.to_remove.push((id, LeaveReason::Disconnected));
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, i: usize, e: Event, now: Instant, out: &mut CoreOutput) {
        match e {
            Event::RtpPacket(pkt) => self.route(i, pkt, now, out),
            Event::Connected => {
                let Some(p) = self.slab[i].as_mut() else {
                    return;
                };
                p.connected = true;
                p.connected_at = Some(now);
                self.needs_reassign = true;
                out.events.push_back(EngineEvent::ParticipantConnected {
                    room: self.id,
                    participant: p.id,
                });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                if let Some(p) = self.slab[i].as_ref() {
                    self.to_remove.push((p.id, LeaveReason::Disconnected));
                }
            }
            Event::ChannelOpen(id, _label) => {
                let Some(p) = self.slab[i].as_mut() else {
                    return;
                };
                p.channel = Some(id);
                let welcome = ServerMessage::Welcome {
                    participant: p.id.to_string(),
                    room: self.id.to_string(),
                    e2ee: self.config.e2ee,
                };
                send_control(p, &welcome);
                p.slots_dirty = true;
                self.participants_dirty = true;
                self.speaker_dirty = true;
                self.send_chat_history(i);
            }
            Event::ChannelClose(id) => {
                if let Some(p) = self.slab[i].as_mut()
                    && p.channel == Some(id)
                {
                    p.channel = None;
                }
            }
            Event::ChannelData(d) => self.on_client_message(i, &d.data, now),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.on_estimate(i, estimate.as_u64(), now);
            }
            Event::PeerStats(s) => self.on_peer_stats(i, &s, now),
            Event::KeyframeRequest(req) => {
                // A subscriber lost a picture: ask the publisher of that slot.
                let Some(p) = self.slab[i].as_ref() else {
                    return;
                };
                let feed = p
                    .video_slots
                    .iter()
                    .find(|s| s.mid == req.mid)
                    .and_then(|s| s.current);
                if let Some(f) = feed {
                    self.request_keyframe(f, now);
                }
            }
            _ => {}
        }
    }

    fn on_client_message(&mut self, i: usize, data: &[u8], now: Instant) {
        let msg = ClientMessage::parse(data);
        if let Ok(m @ (ClientMessage::Chat { .. } | ClientMessage::Key { .. })) = msg {
            self.on_chat(i, m, now);
            return;
        }
        let Some(p) = self.slab[i].as_mut() else {
            return;
        };
        match msg {
            Ok(ClientMessage::Pin { participant }) => {
                p.pinned = participant.and_then(|s| s.parse().ok());
                self.needs_reassign = true;
            }
            Ok(ClientMessage::MaxResolution { mid, height }) => {
                if let Some(s) = p.video_slots.iter_mut().find(|s| s.mid.to_string() == mid) {
                    s.max_height = height;
                    self.needs_reassign = true;
                }
            }
            Ok(ClientMessage::Pause { mid }) => {
                if let Some(s) = p.video_slots.iter_mut().find(|s| s.mid.to_string() == mid) {
                    s.paused = true;
                    p.slots_dirty = true;
                }
            }
            Ok(ClientMessage::Resume { mid }) => {
                if let Some(s) = p.video_slots.iter_mut().find(|s| s.mid.to_string() == mid)
                    && s.paused
                {
                    s.paused = false;
                    // Resuming needs a fresh keyframe: re-enter the switch path.
                    s.current = None;
                    s.pending_since = None;
                    p.slots_dirty = true;
                    self.needs_reassign = true;
                }
            }
            // Handled above (`on_chat`).
            Ok(ClientMessage::Chat { .. } | ClientMessage::Key { .. }) => {}
            Err(e) => {
                send_control(
                    p,
                    &ServerMessage::Error {
                        message: format!("unrecognised control message: {e}"),
                    },
                );
            }
        }
    }

    // ------------------------------------------------------------- forwarding

    fn route(&mut self, i: usize, pkt: RtpPacket, now: Instant, out: &mut CoreOutput) {
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
                        m.activated_at = Some(now);
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
                self.forward_video(i, feed, &pkt, now);
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

    fn forward_video(&mut self, i: usize, feed: VideoFeed, pkt: &RtpPacket, now: Instant) {
        // What one copy costs a downlink, as the layer meters count it.
        let len = pkt.payload.len() as u64 + 28;
        let desc = Vp8Descriptor::parse(&pkt.payload).ok();
        let keyframe = desc.is_some_and(|d| d.starts_keyframe(&pkt.payload));
        let vp8 = desc
            .map(|d| Vp8Fields {
                picture_id: d.picture_id(),
                long_picture_id: pkt.payload.len() > 2 && pkt.payload[2] & 0x80 != 0,
                tl0_pic_idx: d.tl0_pic_idx(),
            })
            .unwrap_or_default();
        let in_seq: u64 = *pkt.seq_no;
        let in_ts = pkt.header.timestamp;
        let routes = &self.routes[i];
        for r in routes {
            let SlotRef::Video(s) = r.slot else { continue };
            let Some(sub) = self.slab[r.sub as usize].as_mut() else {
                continue;
            };
            let Some(pt) = sub.layout.pt_vp8 else {
                continue;
            };
            let slot = &mut sub.video_slots[s as usize];
            // Nothing (not even a switch) before the subscriber can decrypt:
            // a consumed keyframe would leave it starting on a delta frame.
            if slot.paused || slot.bw_paused || !sub.media_ready {
                continue;
            }
            match selector::on_packet(slot.current, slot.target, feed, keyframe) {
                OnPacket::Drop => {
                    if slot.current.is_none() && slot.target == Some(feed) {
                        self.stats.dropped_waiting_keyframe += 1;
                    }
                    continue;
                }
                OnPacket::Switch => {
                    slot.rewriter.switch_to(in_seq, in_ts, vp8, now);
                    slot.current = Some(feed);
                    slot.pending_since = None;
                    sub.slots_dirty = true;
                    sub.stats.slot_switches += 1;
                    self.stats.slot_switches += 1;
                }
                OnPacket::Forward => {}
            }
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
                sub.dirty = true;
                sub.stats.rtp_forwarded += 1;
                sub.downlink.sent_bytes += len;
                self.stats.rtp_forwarded += 1;
            }
        }
    }

    fn forward_audio(&mut self, i: usize, pid: ParticipantId, pkt: &RtpPacket, now: Instant) {
        let len = pkt.payload.len() as u64 + 36;
        let in_seq: u64 = *pkt.seq_no;
        let in_ts = pkt.header.timestamp;
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
            if slot.holder != Some(pid) || !sub.media_ready {
                continue;
            }
            if slot.switch_pending {
                slot.rewriter
                    .switch_to(in_seq, in_ts, Vp8Fields::default(), now);
                slot.switch_pending = false;
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
                sub.dirty = true;
                sub.stats.rtp_forwarded += 1;
                sub.downlink.sent_bytes += len;
                self.stats.rtp_forwarded += 1;
            }
        }
    }

    fn rebuild_routes(&mut self) {
        self.routes.resize_with(self.slab.len(), Vec::new);
        for r in &mut self.routes {
            r.clear();
        }
        for (si, sub) in self.slab.iter().enumerate() {
            let Some(sub) = sub else { continue };
            for (k, s) in sub.video_slots.iter().enumerate() {
                let mut pubs = [
                    s.current.map(|f| f.publisher),
                    s.target.map(|f| f.publisher),
                ];
                if pubs[0] == pubs[1] {
                    pubs[1] = None;
                }
                for p in pubs.into_iter().flatten() {
                    if let Some(&pi) = self.index.get(&p) {
                        self.routes[pi].push(Route {
                            sub: si as u16,
                            slot: SlotRef::Video(k as u16),
                        });
                    }
                }
            }
            for (k, s) in sub.audio_slots.iter().enumerate() {
                if let Some(&pi) = s.holder.as_ref().and_then(|p| self.index.get(p)) {
                    self.routes[pi].push(Route {
                        sub: si as u16,
                        slot: SlotRef::Audio(k as u16),
                    });
                }
            }
        }
        self.routes_dirty = false;
    }

    // ------------------------------------------------------- slot assignment

    /// The room-wide order in which video sources claim slots: screen shares
    /// first, then the active speaker, then recent speakers (most recent
    /// first), then join order.
    fn video_ranking(&self, base: Instant) -> Vec<(ParticipantId, VideoSource)> {
        let speaker = self.speakers.current();
        let mut ranked: Vec<(u8, i128, u64, ParticipantId, VideoSource)> = Vec::new();
        for p in self.slab.iter().flatten() {
            if p.published.screen {
                let since = p
                    .published
                    .screen_since
                    .map(|t| signed_nanos(t, base))
                    .unwrap_or(0);
                ranked.push((0, since, p.join_seq, p.id, VideoSource::Screen));
            }
            if p.published.camera {
                let (class, key) = if Some(p.id) == speaker {
                    (1, 0)
                } else if let Some(t) = self.speakers.last_spoke(p.id) {
                    (2, -signed_nanos(t, base))
                } else {
                    (3, 0)
                };
                ranked.push((class, key, p.join_seq, p.id, VideoSource::Camera));
            }
        }
        ranked.sort();
        ranked.into_iter().map(|r| (r.3, r.4)).collect()
    }

    /// Decide which publisher fills which video slot (layers are the
    /// bandwidth allocator's job: [`Room::allocate_all`]).
    fn reassign(&mut self, now: Instant) {
        self.needs_reassign = false;
        self.last_reassign = Some(now);
        let ranking = self.video_ranking(now);
        for sub in self.slab.iter_mut().flatten() {
            let k = sub.video_slots.len();
            if k == 0 {
                continue;
            }
            let own = sub.id;
            let mut wanted: Vec<(ParticipantId, VideoSource)> = Vec::with_capacity(k);
            // Screens first, then the pinned camera, then the rest in ranking order.
            for &(p, src) in ranking
                .iter()
                .filter(|(p, s)| *s == VideoSource::Screen && *p != own)
            {
                if wanted.len() < k {
                    wanted.push((p, src));
                }
            }
            if let Some(pin) = sub.pinned
                && pin != own
                && ranking.contains(&(pin, VideoSource::Camera))
                && wanted.len() < k
            {
                wanted.push((pin, VideoSource::Camera));
            }
            for &(p, src) in ranking.iter() {
                if wanted.len() >= k {
                    break;
                }
                if p == own || wanted.contains(&(p, src)) {
                    continue;
                }
                wanted.push((p, src));
            }
            // Stable placement: a source already in a slot keeps it.
            let mut placed = vec![false; wanted.len()];
            let mut free: Vec<usize> = Vec::new();
            for (si, slot) in sub.video_slots.iter().enumerate() {
                let held = slot.target.map(|f| (f.publisher, f.source));
                match held.and_then(|h| wanted.iter().position(|w| *w == h)) {
                    Some(w) if !placed[w] => placed[w] = true,
                    _ => free.push(si),
                }
            }
            let mut free = free.into_iter();
            for (w, &(p, src)) in wanted.iter().enumerate() {
                if placed[w] {
                    continue;
                }
                let Some(si) = free.next() else { break };
                // Provisional layer; the allocator sets the real one.
                sub.video_slots[si].target = Some(VideoFeed {
                    publisher: p,
                    source: src,
                    layer: Layer::LOW,
                });
            }
            for si in free {
                let slot = &mut sub.video_slots[si];
                if slot.target.is_some() || slot.current.is_some() {
                    slot.target = None;
                    slot.current = None;
                    slot.pending_since = None;
                    sub.slots_dirty = true;
                }
            }
        }
        self.update_audio_slots(now);
        self.routes_dirty = true;
    }

    /// A loudest-first audio assignment with hysteresis. Returns whether any
    /// holder changed.
    fn update_audio_slots(&mut self, now: Instant) -> bool {
        let mut publishers: Vec<(ParticipantId, u64, f32)> = self
            .slab
            .iter()
            .flatten()
            .filter(|p| p.published.audio)
            .map(|p| (p.id, p.join_seq, 0.0))
            .collect();
        for e in &mut publishers {
            e.2 = self.speakers.loudness(e.0, now);
        }
        // Loudest first; join order breaks ties (and decides without levels).
        publishers.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.1.cmp(&b.1)));
        let mut changed = false;
        for sub in self.slab.iter_mut().flatten() {
            if sub.audio_slots.is_empty() {
                continue;
            }
            let own = sub.id;
            let loud = |p: ParticipantId| {
                publishers
                    .iter()
                    .find(|e| e.0 == p)
                    .map(|e| e.2)
                    .unwrap_or(f32::NEG_INFINITY)
            };
            // Fill empty slots with the loudest non-holders.
            for (pid, _, _) in &publishers {
                if *pid == own || sub.audio_slots.iter().any(|s| s.holder == Some(*pid)) {
                    continue;
                }
                if let Some(slot) = sub.audio_slots.iter_mut().find(|s| s.holder.is_none()) {
                    slot.holder = Some(*pid);
                    slot.switch_pending = true;
                    sub.slots_dirty = true;
                    changed = true;
                    continue;
                }
                // Replace the quietest holder if clearly out-talked.
                let (qi, qloud) = sub
                    .audio_slots
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i, s.holder.map(loud).unwrap_or(f32::NEG_INFINITY)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("audio_slots is not empty");
                if loud(*pid) > qloud + AUDIO_SWITCH_MARGIN {
                    let slot = &mut sub.audio_slots[qi];
                    slot.holder = Some(*pid);
                    slot.switch_pending = true;
                    sub.slots_dirty = true;
                    changed = true;
                }
            }
        }
        if changed {
            self.routes_dirty = true;
        }
        changed
    }

    fn request_keyframe(&mut self, feed: VideoFeed, now: Instant) {
        let interval = self.config.pli_interval;
        if let Some(&i) = self.index.get(&feed.publisher)
            && let Some(p) = self.slab[i].as_mut()
            && p.connected
            && p.request_keyframe(feed.source, feed.layer, now, interval)
        {
            self.stats.plis_sent += 1;
        }
    }

    /// Every slot whose target differs from what it shows waits for the
    /// target's keyframe: mark it pending and ask the publisher (throttled
    /// per publisher layer, so many subscribers cause one PLI).
    fn apply_switches(&mut self, now: Instant) {
        let mut waiting: Vec<VideoFeed> = Vec::new();
        for sub in self.slab.iter_mut().flatten() {
            for s in &mut sub.video_slots {
                let Some(t) = s.target else { continue };
                if s.current == Some(t) || s.paused || s.bw_paused {
                    s.pending_since = None;
                    continue;
                }
                s.pending_since.get_or_insert(now);
                if !waiting.contains(&t) {
                    waiting.push(t);
                }
            }
        }
        for f in waiting {
            self.request_keyframe(f, now);
        }
        self.routes_dirty = true;
    }

    // ------------------------------------------------------- control channel

    fn send_coalesced_control(&mut self) {
        let participants = if self.participants_dirty {
            self.participants_dirty = false;
            Some(ServerMessage::Participants {
                participants: self
                    .slab
                    .iter()
                    .flatten()
                    .map(|p| ParticipantInfo {
                        id: p.id.to_string(),
                        name: p.name.clone(),
                        audio: p.published.audio,
                        video: p.published.camera,
                        screen: p.published.screen,
                    })
                    .collect(),
            })
        } else {
            None
        };
        let speaker = if self.speaker_dirty {
            self.speaker_dirty = false;
            Some(ServerMessage::ActiveSpeaker {
                participant: self.speakers.current().map(|p| p.to_string()),
            })
        } else {
            None
        };
        for p in self.slab.iter_mut().flatten() {
            if p.channel.is_none() {
                continue;
            }
            if let Some(m) = &participants {
                send_control(p, m);
            }
            if let Some(m) = &speaker {
                send_control(p, m);
            }
            if p.slots_dirty {
                p.slots_dirty = false;
                let msg = slots_message(p);
                send_control(p, &msg);
            }
        }
    }

    // ------------------------------------------------------------ inspection

    /// A snapshot of who is in which slot for one subscriber.
    pub fn slots_of(&self, p: ParticipantId) -> Option<ServerMessage> {
        let i = *self.index.get(&p)?;
        self.slab[i].as_ref().map(slots_message)
    }

    /// The current dominant speaker.
    pub fn active_speaker(&self) -> Option<ParticipantId> {
        self.speakers.current()
    }

    /// What the room holds, counted (see [`crate::core::Footprint`]).
    pub fn footprint(&self, f: &mut crate::core::Footprint) {
        f.rooms += 1;
        f.participants += self.slab.iter().flatten().count();
        f.participant_index += self.index.len();
        f.routes += self.routes.iter().map(Vec::len).sum::<usize>();
        for p in self.slab.iter().flatten() {
            f.video_slots += p.video_slots.len();
            f.audio_slots += p.audio_slots.len();
            f.slots_showing += p.video_slots.iter().filter(|s| s.current.is_some()).count()
                + p.audio_slots.iter().filter(|s| s.holder.is_some()).count();
            f.rx_tracks += p.rx_tracks.len();
        }
        f.pending_removals += self.to_remove.len();
    }

    /// Per-participant forwarding counters: (id, rtp in, rtp forwarded to it).
    pub fn participant_stats(&self) -> Vec<(ParticipantId, u64, u64)> {
        self.slab
            .iter()
            .flatten()
            .map(|p| (p.id, p.stats.rtp_in, p.stats.rtp_forwarded))
            .collect()
    }

    /// Test hook: deliver a client control message as if it came on the data channel.
    #[cfg(any(test, feature = "sim"))]
    pub fn inject_client_message(&mut self, p: ParticipantId, data: &[u8], now: Instant) {
        if let Some(&i) = self.index.get(&p) {
            self.on_client_message(i, data, now);
        }
    }
}

fn slots_message(p: &Participant) -> ServerMessage {
    ServerMessage::Slots {
        video: p
            .video_slots
            .iter()
            .map(|s| VideoSlotInfo {
                mid: s.mid.to_string(),
                participant: s.current.map(|f| f.publisher.to_string()),
                source: s.current.map(|f| f.source),
                layer: s.current.map(|f| f.layer.name()),
                paused: s.paused || s.bw_paused,
                paused_reason: if s.paused {
                    Some("client".into())
                } else if s.bw_paused {
                    Some("bandwidth".into())
                } else {
                    None
                },
            })
            .collect(),
        audio: p
            .audio_slots
            .iter()
            .map(|s| AudioSlotInfo {
                mid: s.mid.to_string(),
                participant: s.holder.map(|h| h.to_string()),
            })
            .collect(),
    }
}

fn send_control(p: &mut Participant, msg: &ServerMessage) {
    let Some(id) = p.channel else { return };
    let bytes = msg.to_bytes();
    if let Some(mut ch) = p.rtc.channel(id) {
        if let Err(e) = ch.write(false, &bytes) {
            tracing::debug!(participant = %p.id, "control write failed: {e}");
        }
        p.dirty = true;
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

/// Move a participant's time to `now` and queue whatever it has to send,
/// ignoring events (used while removing it).
fn flush_transmits(p: &mut Participant, now: Instant, out: &mut CoreOutput) {
    let _ = p.rtc.handle_input(Input::Timeout(now));
    while let Ok(o) = p.rtc.poll_output() {
        match o {
            Output::Transmit(t) => out.transmits.push_back(t),
            Output::Timeout(_) => break,
            Output::Event(_) => {}
        }
    }
}

fn signed_nanos(t: Instant, base: Instant) -> i128 {
    if t >= base {
        (t - base).as_nanos() as i128
    } else {
        -((base - t).as_nanos() as i128)
    }
}
