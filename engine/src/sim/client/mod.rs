//! A simulated participant: a real str0m peer (full ICE, DTLS, SRTP) in RTP
//! mode, publishing synthetic Opus and VP8 simulcast, answering PLI with a
//! keyframe and NACK with a retransmission (str0m's RTX cache), and
//! receiving through slots while measuring what arrives.
//!
//! Sans-IO like the engine: datagrams and `now` in, datagrams out. The
//! simulator drives it in virtual time; the load generator and the real-UDP
//! tests drive it with sockets and the real clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::TcpType;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use crate::core::control::{ClientMessage, ServerMessage};
use crate::ids::{VideoCodec, VideoSource};
use crate::sim::e2ee::FrameKey;

mod recv;
mod send;
mod stats;

use send::VideoTx;
pub use stats::{Arrival, ClientStats, SlotStats};

/// One simulcast layer a simulated publisher sends.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// rid in the offer.
    pub rid: String,
    /// Target bitrate, bits per second. 0: declared in the offer but never
    /// sent (Chromium drops the top simulcast layer when the camera is too
    /// small for it).
    pub bitrate_bps: u32,
    /// Frame width and height (in the keyframe header).
    pub width: u16,
    /// See `width`.
    pub height: u16,
}

/// How a simulated participant behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Number embedded in every payload trailer (the simulator uses the index).
    pub publisher: u32,
    /// Publish Opus audio.
    pub audio: bool,
    /// Publish a VP8 simulcast camera with these layers (empty: no camera).
    pub camera_layers: Vec<LayerSpec>,
    /// Publish a single-layer VP8 screen share.
    pub screen: bool,
    /// Camera frame rate.
    pub fps: u32,
    /// Periodic keyframe interval (besides those answering PLI).
    pub keyframe_interval: Duration,
    /// Recvonly video m-lines (slots).
    pub video_slots: usize,
    /// Recvonly audio m-lines (slots).
    pub audio_slots: usize,
    /// Whether this participant is talking (audio level -20 dBov, else -127).
    pub speaking: bool,
    /// Seed for the start values of sequence numbers and picture ids.
    pub seed: u64,
    /// Largest RTP payload.
    pub mtu_payload: usize,
    /// Keep a log of every RTP packet the receive slots get, for
    /// [`SimClient::take_arrivals`] (the load generator computes its metrics
    /// from it). Off by default: the log grows until taken.
    pub record_arrivals: bool,
    /// End-to-end encrypted media (for rooms with
    /// [`RoomConfig::e2ee`](crate::RoomConfig::e2ee)): every payload is
    /// encrypted after its clear VP8 header bytes as the browser client
    /// does, and received payloads are decrypted ([`crate::sim::e2ee`]).
    /// Default off.
    pub e2ee: bool,
    /// Bytes written at the start of every payload's body (after the clear
    /// header bytes, when they fit): what an encrypted room must never let
    /// the engine see. Receivers count payloads that carry any client's
    /// marker as they arrive, before decryption
    /// ([`ClientStats::marker_packets`]). Default none.
    pub plaintext_marker: Option<Vec<u8>>,
    /// Reach the engine over ICE-TCP only: the client's one local candidate
    /// is an active TCP candidate (RFC 6544), so it pairs only with the
    /// engine's passive TCP candidate, and what it receives is TCP
    /// ([`SimClient::on_tcp`] and [`SimClient::step_tcp`] carry the
    /// frames). Default off (UDP).
    pub tcp: bool,
    /// The video codecs the client offers, most preferred first; it
    /// publishes its camera and screen with the first. `[Vp8]` by default;
    /// `[H264, Vp8]` publishes H.264 (constrained baseline 42e01f,
    /// packetization-mode 1: single NAL units, FU-A, SPS and PPS in a
    /// STAP-A before each IDR) and receives both. A client offers the same
    /// codecs on every m-line. Not combined with `e2ee` (its clear bytes
    /// are VP8's).
    pub video_codecs: Vec<VideoCodec>,
}

impl ClientConfig {
    /// Defaults: Opus, a 3-layer camera (150 kbps / 500 kbps / 1.5 Mbps at
    /// 30 fps), 9 video slots and 3 audio slots.
    pub fn new(publisher: u32) -> Self {
        ClientConfig {
            publisher,
            audio: true,
            camera_layers: default_layers(),
            screen: false,
            fps: 30,
            keyframe_interval: Duration::from_secs(10),
            video_slots: 9,
            audio_slots: 3,
            speaking: false,
            seed: publisher as u64,
            mtu_payload: 1100,
            record_arrivals: false,
            e2ee: false,
            plaintext_marker: None,
            tcp: false,
            video_codecs: vec![VideoCodec::Vp8],
        }
    }
}

/// l / m / h at 150 kbps, 500 kbps, 1.5 Mbps.
pub fn default_layers() -> Vec<LayerSpec> {
    vec![
        LayerSpec {
            rid: "l".into(),
            bitrate_bps: 150_000,
            width: 320,
            height: 180,
        },
        LayerSpec {
            rid: "m".into(),
            bitrate_bps: 500_000,
            width: 640,
            height: 360,
        },
        LayerSpec {
            rid: "h".into(),
            bitrate_bps: 1_500_000,
            width: 1280,
            height: 720,
        },
    ]
}

const SCREEN: LayerSpec = LayerSpec {
    rid: String::new(),
    bitrate_bps: 800_000,
    width: 1920,
    height: 1080,
};

/// A simulated participant.
pub struct SimClient {
    config: ClientConfig,
    rtc: Rtc,
    addr: SocketAddr,
    epoch: Instant,
    pending: Option<SdpPendingOffer>,
    offer: String,
    /// The engine's ICE ufrag and password, from its answer.
    remote_ice: Option<(String, String)>,
    connected_at: Option<Instant>,
    channel: Option<ChannelId>,
    control_out: VecDeque<Vec<u8>>,
    audio_mid: Option<Mid>,
    audio_seq: u64,
    audio_ts: u32,
    audio_payload_seq: u64,
    next_audio: Option<Instant>,
    video: Vec<VideoTx>,
    next_frame: Option<Instant>,
    next_screen_frame: Option<Instant>,
    slot_index: HashMap<Mid, usize>,
    pt_vp8: Option<Pt>,
    pt_h264: Option<Pt>,
    pt_opus: Option<Pt>,
    transmits: VecDeque<Transmit>,
    stats: ClientStats,
    /// This client's frame key and counter (end-to-end encryption).
    e2ee_key: Option<FrameKey>,
    e2ee_ctr: u64,
    /// Other senders' keys, by KID.
    e2ee_keys: HashMap<u64, FrameKey>,
    arrivals: Vec<Arrival>,
    measure_from: Option<Instant>,
    /// Hash of every RTP packet received (see [`SimClient::rx_trace`]).
    rx_trace: std::hash::DefaultHasher,
    /// Last `slots` message from the engine.
    pub last_slots: Option<ServerMessage>,
    /// Last `participants` message from the engine.
    pub last_participants: Option<ServerMessage>,
    /// Last active speaker announced by the engine.
    pub active_speaker: Option<String>,
    /// Whether a `kicked` message arrived.
    pub kicked: bool,
    /// The reason of a `closing` message (room closed, server shutting down).
    pub closing: Option<String>,
    /// The last 64 `chat`, `chat_error` and `key` messages received,
    /// oldest first.
    pub chat: VecDeque<ServerMessage>,
    timeout: Instant,
}

impl SimClient {
    /// Build the peer and its offer. `epoch` is the common time base of the
    /// payload trailers (all clients of one run share it).
    pub fn new(config: ClientConfig, addr: SocketAddr, epoch: Instant, now: Instant) -> Self {
        // Without a remote offer, building only adds media and offers it.
        Self::build(config, addr, epoch, now, None).expect("a fresh offer cannot fail")
    }

    /// A receive-only peer that answers `offer` from an SFU that makes the
    /// subscriber's offer (Janus VideoRoom): each audio or video m-line of
    /// the offer is a receive slot, in offer order; `config`'s own media
    /// and slot counts are ignored (nothing is published). Returns the
    /// peer; its SDP answer is [`SimClient::offer`].
    pub fn answering(
        mut config: ClientConfig,
        addr: SocketAddr,
        epoch: Instant,
        now: Instant,
        offer: &str,
    ) -> Result<Self, String> {
        config.audio = false;
        config.camera_layers.clear();
        config.screen = false;
        Self::build(config, addr, epoch, now, Some(offer))
    }

    fn build(
        mut config: ClientConfig,
        addr: SocketAddr,
        epoch: Instant,
        now: Instant,
        remote_offer: Option<&str>,
    ) -> Result<Self, String> {
        let mut rtc_config = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false);
        for c in &config.video_codecs {
            match c {
                VideoCodec::Vp8 => rtc_config = rtc_config.enable_vp8(true),
                // What browsers offer for constrained baseline.
                VideoCodec::H264 => {
                    rtc_config
                        .codec_config()
                        .add_h264(108.into(), Some(109.into()), true, 0x42e01f)
                }
            }
        }
        let mut rtc = rtc_config.build(now);
        // Only valid addresses reach here (the simulator and tests choose them).
        let candidate = if config.tcp {
            Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Active)
                .build()
        } else {
            Candidate::host(addr, "udp")
        };
        if let Ok(c) = candidate {
            rtc.add_local_candidate(c);
        }
        if let Some(remote) = remote_offer {
            let offer = SdpOffer::from_sdp_string(remote).map_err(|e| e.to_string())?;
            let answer = rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| e.to_string())?;
            let slot_mids = offer_slots(remote);
            config.video_slots = slot_mids.iter().filter(|(_, v)| *v).count();
            config.audio_slots = slot_mids.len() - config.video_slots;
            let mut c = Self::assemble(config, rtc, addr, epoch, now, None, answer.to_sdp_string());
            c.set_slots(&slot_mids);
            c.remote_ice = sdp_attr(remote, "ice-ufrag").zip(sdp_attr(remote, "ice-pwd"));
            return Ok(c);
        }
        let mut api = rtc.sdp_api();
        let audio_mid = config
            .audio
            .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let camera_mid = (!config.camera_layers.is_empty()).then(|| {
            let mut sim = Simulcast::new();
            for l in &config.camera_layers {
                sim.add_send_layer(SimulcastLayer::new(&l.rid));
            }
            let sim = (config.camera_layers.len() > 1).then_some(sim);
            api.add_media(MediaKind::Video, Direction::SendOnly, None, None, sim)
        });
        let screen_mid = config
            .screen
            .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        let mut slot_mids = Vec::new();
        for _ in 0..config.video_slots {
            slot_mids.push((
                api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None),
                true,
            ));
        }
        for _ in 0..config.audio_slots {
            slot_mids.push((
                api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None),
                false,
            ));
        }
        api.add_channel("control".into());
        // A fresh SdpApi with added media always yields an offer.
        let (offer, pending) = api.apply().ok_or("adding media did not make an offer")?;
        let mut c = Self::assemble(
            config,
            rtc,
            addr,
            epoch,
            now,
            Some(pending),
            offer.to_sdp_string(),
        );
        c.audio_mid = audio_mid;
        let mut rng = fastrand::Rng::with_seed(c.config.seed ^ 0x9e37_79b9_7f4a_7c15);
        if let Some(mid) = camera_mid {
            let simulcast = c.config.camera_layers.len() > 1;
            for (i, spec) in c.config.camera_layers.iter().enumerate() {
                let rid = simulcast.then(|| Rid::from(spec.rid.as_str()));
                c.video
                    .push(VideoTx::new(mid, rid, spec.clone(), 1, i as u8, &mut rng));
            }
        }
        if let Some(mid) = screen_mid {
            c.video
                .push(VideoTx::new(mid, None, SCREEN, 2, 0, &mut rng));
        }
        c.audio_seq = rng.u64(0..30_000);
        c.audio_ts = rng.u32(..);
        c.set_slots(&slot_mids);
        Ok(c)
    }

    /// Receive slots: these m-lines (video or audio), in this order.
    fn set_slots(&mut self, slot_mids: &[(Mid, bool)]) {
        self.stats.slots = slot_mids
            .iter()
            .map(|(mid, video)| SlotStats {
                mid: mid.to_string(),
                video: *video,
                ..Default::default()
            })
            .collect();
        self.slot_index = slot_mids
            .iter()
            .enumerate()
            .map(|(i, (m, _))| (*m, i))
            .collect();
    }

    fn assemble(
        config: ClientConfig,
        rtc: Rtc,
        addr: SocketAddr,
        epoch: Instant,
        now: Instant,
        pending: Option<SdpPendingOffer>,
        offer: String,
    ) -> Self {
        let e2ee_key = config
            .e2ee
            .then(|| FrameKey::for_publisher(config.publisher));
        SimClient {
            audio_seq: 0,
            audio_ts: 0,
            config,
            rtc,
            addr,
            epoch,
            pending,
            offer,
            remote_ice: None,
            connected_at: None,
            channel: None,
            control_out: VecDeque::new(),
            audio_mid: None,
            audio_payload_seq: 0,
            next_audio: None,
            video: Vec::new(),
            next_frame: None,
            next_screen_frame: None,
            slot_index: HashMap::new(),
            pt_vp8: None,
            pt_h264: None,
            pt_opus: None,
            transmits: VecDeque::new(),
            stats: ClientStats::default(),
            e2ee_key,
            e2ee_ctr: 0,
            e2ee_keys: HashMap::new(),
            arrivals: Vec::new(),
            measure_from: None,
            rx_trace: std::hash::DefaultHasher::new(),
            last_slots: None,
            last_participants: None,
            chat: VecDeque::new(),
            active_speaker: None,
            kicked: false,
            closing: None,
            timeout: now,
        }
    }

    /// The SDP offer to send to the engine.
    pub fn offer(&self) -> &str {
        &self.offer
    }

    /// The client's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Apply the engine's answer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), String> {
        self.remote_ice = sdp_attr(answer, "ice-ufrag").zip(sdp_attr(answer, "ice-pwd"));
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| e.to_string())?;
        let pending = self.pending.take().ok_or("answer already applied")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        self.pt_vp8 = self
            .rtc
            .codec_config()
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt());
        self.pt_h264 = self
            .rtc
            .codec_config()
            .iter()
            .find(|p| p.spec().codec == Codec::H264)
            .map(|p| p.pt());
        self.pt_opus = self
            .rtc
            .codec_config()
            .iter()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt());
        Ok(())
    }

    /// ICE credentials of the session once the answer is applied: the
    /// engine's ufrag and password, and this client's ufrag. What a STUN
    /// binding request to the engine must carry (USERNAME
    /// `engine_ufrag:client_ufrag`, MESSAGE-INTEGRITY keyed with the
    /// engine's password); the fuzz harness signs its requests with them.
    pub fn ice_credentials(&self) -> Option<(String, String, String)> {
        let (ufrag, pwd) = self.remote_ice.clone()?;
        Some((ufrag, pwd, sdp_attr(&self.offer, "ice-ufrag")?))
    }

    /// Send one RTP packet with these header fields and this payload on one
    /// of the client's published streams (0 is the audio stream when it
    /// publishes audio, then the camera layers lowest first, then the
    /// screen share), through its session (SRTP, pacing) like its own
    /// media. Its sequence number is `seq_offset` from the stream's next
    /// own one (the client's counters do not move), so the engine's SRTP
    /// rollover guess and replay window accept it as a real sender's
    /// packet. False when there is no such stream or the session cannot
    /// send yet. The fuzz harness uses it to put arbitrary payloads and
    /// header values behind valid SRTP.
    #[allow(clippy::too_many_arguments)]
    pub fn send_rtp(
        &mut self,
        now: Instant,
        stream: usize,
        seq_offset: i16,
        timestamp: u32,
        marker: bool,
        audio_level: Option<i8>,
        payload: Vec<u8>,
    ) -> bool {
        let audio = usize::from(self.audio_mid.is_some());
        let (mid, rid, pt, next) = if stream < audio {
            (self.audio_mid, None, self.pt_opus, self.audio_seq)
        } else {
            match self.video.get(stream - audio) {
                Some(v) => (Some(v.mid), v.rid, self.video_pt(), v.seq),
                None => return false,
            }
        };
        let seq = next.saturating_add_signed(seq_offset as i64);
        let (Some(mid), Some(pt)) = (mid, pt) else {
            return false;
        };
        let exts = ExtensionValues {
            audio_level,
            voice_activity: audio_level.map(|l| l > -127),
            ..Default::default()
        };
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, rid) else {
            return false;
        };
        stream.write_rtp(
            RtpWrite::new(pt, seq.into(), timestamp, now, payload)
                .marker(marker)
                .ext_vals(exts),
        );
        self.drive(now);
        true
    }

    /// The codec this client publishes (the first it offers).
    pub fn video_codec(&self) -> VideoCodec {
        self.config
            .video_codecs
            .first()
            .copied()
            .unwrap_or(VideoCodec::Vp8)
    }

    /// The payload type of the published video codec, once negotiated.
    fn video_pt(&self) -> Option<Pt> {
        match self.video_codec() {
            VideoCodec::Vp8 => self.pt_vp8,
            VideoCodec::H264 => self.pt_h264,
        }
    }

    /// ICE and DTLS completed at this time.
    pub fn connected_at(&self) -> Option<Instant> {
        self.connected_at
    }

    /// Whether the peer is still alive.
    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    /// Start or stop talking.
    pub fn set_speaking(&mut self, speaking: bool) {
        self.config.speaking = speaking;
    }

    /// Count freezes, frame gaps and latencies only from this time on (skip
    /// join-up): what was counted before is cleared.
    pub fn measure_from(&mut self, t: Instant) {
        self.measure_from = Some(t);
        self.stats.latencies_us.clear();
        for s in &mut self.stats.slots {
            s.max_frame_gap = Duration::ZERO;
            s.max_frame_gap_end = None;
            s.freezes = 0;
            s.freeze_time = Duration::ZERO;
        }
    }

    /// Send a control message to the engine.
    pub fn send_control(&mut self, msg: &ClientMessage) {
        // ClientMessage holds strings and numbers only.
        let bytes = serde_json::to_vec(msg).expect("client messages serialize");
        self.control_out.push_back(bytes);
    }

    /// A hash over every RTP packet this client received, after SRTP: its
    /// slot, sequence number, timestamp, payload and arrival time.
    pub fn rx_trace(&self) -> u64 {
        self.rx_trace.finish()
    }

    /// What was measured so far.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Take the latency samples gathered so far (keeps memory bounded in long runs).
    pub fn take_latencies(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.stats.latencies_us)
    }

    /// Move the packets logged since the last call into `into` (appended, in
    /// arrival order). Empty unless [`ClientConfig::record_arrivals`] is on.
    pub fn take_arrivals(&mut self, into: &mut Vec<Arrival>) {
        into.append(&mut self.arrivals);
    }

    /// Close the peer (DTLS close_notify); the engine notices.
    pub fn close(&mut self, now: Instant) {
        self.rtc.disconnect();
        self.drive(now);
    }

    /// A datagram for this client.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) {
        let proto = if self.config.tcp {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let Ok(r) = Receive::new(proto, source, self.addr, buf) else {
            return;
        };
        if self.rtc.handle_input(Input::Receive(now, r)).is_ok() {
            self.drain(now);
        }
    }

    /// When [`SimClient::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.timeout;
        for m in [self.next_audio, self.next_frame, self.next_screen_frame]
            .into_iter()
            .flatten()
        {
            t = t.min(m);
        }
        if !self.control_out.is_empty() && self.channel.is_some() {
            t = t.min(self.timeout);
        }
        t
    }

    /// Drive timers and media generation.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.connected_at.is_some() {
            self.generate_media(now);
        }
        self.drive(now);
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn drive(&mut self, now: Instant) {
        if let Some(id) = self.channel {
            while let Some(bytes) = self.control_out.pop_front() {
                if let Some(mut ch) = self.rtc.channel(id) {
                    let _ = ch.write(false, &bytes);
                }
            }
        }
        if self.rtc.handle_input(Input::Timeout(now)).is_ok() {
            self.drain(now);
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => self.transmits.push_back(t),
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Event(e)) => self.on_event(e, now),
                Err(_) => {
                    self.timeout = now + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event, now: Instant) {
        match e {
            Event::Connected => {
                self.connected_at = Some(now);
                self.next_audio = self.audio_mid.map(|_| now);
                self.next_frame = self.video.iter().any(|v| v.track == 1).then_some(now);
                self.next_screen_frame = self.video.iter().any(|v| v.track == 2).then_some(now);
            }
            Event::RtpPacket(p) => self.on_rtp(p, now),
            Event::KeyframeRequest(req) => {
                self.stats.keyframe_requests += 1;
                for v in &mut self.video {
                    if v.mid == req.mid && (req.rid.is_none() || v.rid == req.rid) {
                        v.force_keyframe = true;
                    }
                }
            }
            Event::ChannelOpen(id, _) => self.channel = Some(id),
            Event::ChannelData(d) => {
                self.stats.control_messages += 1;
                if let Ok(msg) = serde_json::from_slice::<ServerMessage>(&d.data) {
                    match &msg {
                        ServerMessage::Slots { video, .. } => {
                            // A slot the engine paused shows no video on
                            // purpose: the gap until it resumes is not a
                            // freeze (the W3C rule judges rendered video).
                            for info in video.iter().filter(|v| v.paused) {
                                if let Some(s) =
                                    self.stats.slots.iter_mut().find(|s| s.mid == info.mid)
                                {
                                    s.last_frame_at = None;
                                    s.pauses += 1;
                                }
                            }
                            self.last_slots = Some(msg)
                        }
                        ServerMessage::Participants { .. } => self.last_participants = Some(msg),
                        ServerMessage::ActiveSpeaker { participant } => {
                            self.active_speaker = participant.clone()
                        }
                        ServerMessage::Kicked { .. } => self.kicked = true,
                        ServerMessage::Chat { .. }
                        | ServerMessage::ChatError { .. }
                        | ServerMessage::Key { .. } => {
                            if self.chat.len() == 64 {
                                self.chat.pop_front();
                            }
                            self.chat.push_back(msg);
                        }
                        ServerMessage::Closing { reason } => self.closing = Some(reason.clone()),
                        ServerMessage::PublishLayers { source, active } => {
                            let track = match source {
                                VideoSource::Camera => 1,
                                VideoSource::Screen => 2,
                            };
                            for v in self.video.iter_mut().filter(|v| v.track == track) {
                                let on = active.get(v.layer as usize).copied().unwrap_or(true);
                                if on && !v.enabled {
                                    // A decoder joining this layer needs a keyframe.
                                    v.force_keyframe = true;
                                }
                                v.enabled = on;
                            }
                            self.stats.layer_updates += 1;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// The audio and video m-lines of an SDP offer with their mids, in order
/// (true: video).
fn offer_slots(sdp: &str) -> Vec<(Mid, bool)> {
    let mut out = Vec::new();
    let mut kind = None;
    for l in sdp.lines().map(str::trim_end) {
        if let Some(m) = l.strip_prefix("m=") {
            kind = match m.split(' ').next() {
                Some("video") => Some(true),
                Some("audio") => Some(false),
                _ => None,
            };
        } else if let (Some(video), Some(mid)) = (kind, l.strip_prefix("a=mid:")) {
            out.push((Mid::from(mid), video));
            kind = None;
        }
    }
    out
}

/// The value of the first `a=name:value` line of an SDP.
fn sdp_attr(sdp: &str, name: &str) -> Option<String> {
    sdp.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix("a=")?
            .strip_prefix(name)?
            .strip_prefix(':')
            .map(str::to_string)
    })
}
