//! One participant: its `Rtc`, what it publishes and its receive slots.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::channel::ChannelId;
use str0m::media::{KeyframeRequestKind, Mid};
use str0m::rtp::Ssrc;

use crate::core::forwarder::Rewriter;
use crate::ids::{Layer, ParticipantId, VideoSource};
use crate::join::{MediaLayout, Prepared};

/// A publisher's video track at one simulcast layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct VideoFeed {
    pub publisher: ParticipantId,
    pub source: VideoSource,
    pub layer: Layer,
}

/// An incoming RTP stream of a publisher, classified once per SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxTrack {
    Audio,
    Video(VideoSource, Layer),
    /// A stream the engine does not forward (extra m-lines).
    Ignored,
}

/// One recvonly video m-line of the subscriber.
#[derive(Debug)]
pub(crate) struct VideoSlot {
    pub mid: Mid,
    /// Cached send SSRC (`stream_tx` by SSRC is a hash lookup; by mid a scan).
    pub ssrc: Option<Ssrc>,
    /// What the slot should show.
    pub target: Option<VideoFeed>,
    /// What the slot shows now (switches to `target` on its keyframe).
    pub current: Option<VideoFeed>,
    pub rewriter: Rewriter,
    /// The subscriber asked not to receive video in this slot.
    pub paused: bool,
    /// Subscriber's cap on the forwarded frame height.
    pub max_height: Option<u32>,
    /// When the slot started waiting for `target`'s keyframe.
    pub pending_since: Option<Instant>,
    /// The bandwidth allocator paused this slot (not even the lowest layer fits).
    pub bw_paused: bool,
}

/// One recvonly audio m-line of the subscriber.
#[derive(Debug)]
pub(crate) struct AudioSlot {
    pub mid: Mid,
    pub ssrc: Option<Ssrc>,
    pub holder: Option<ParticipantId>,
    /// The holder changed; re-base on its next packet.
    pub switch_pending: bool,
    pub rewriter: Rewriter,
}

/// What the participant has actually sent (first packet seen).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Published {
    pub audio: bool,
    pub camera: bool,
    pub screen: bool,
    pub screen_since: Option<Instant>,
}

/// Most simulcast layers tracked per video source.
pub(crate) const MAX_LAYERS: usize = 4;

/// Incoming bitrate of one layer of a publisher's video source.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LayerMeter {
    /// Bytes since the last tick.
    pub bytes: u64,
    /// Smoothed bitrate; `None` until measured.
    pub rate_bps: Option<u64>,
    /// Arrival of the last packet.
    pub last_packet: Option<Instant>,
    /// When the publisher was (re)asked to send this layer.
    pub activated_at: Option<Instant>,
}

/// Ticks of sent-media history per subscriber: a receiver report covers
/// about the last second.
pub(crate) const SENT_TICKS: usize = 10;

/// Downlink bandwidth state of a subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Downlink {
    /// Latest estimate from str0m's BWE.
    pub estimate_bps: Option<u64>,
    /// The estimate the allocator uses (moves only on changes beyond the hysteresis).
    pub effective_bps: Option<u64>,
    /// Last downgrade forced by the estimate.
    pub last_downgrade: Option<Instant>,
    /// Bitrate of the layers allocated now.
    pub allocated_bps: u64,
    /// Bitrate of every slot at its cap.
    pub desired_bps: u64,
    /// Last (minimum, desired) handed to `bwe().set_bitrate`.
    pub told_bwe: Option<(u64, u64)>,
    /// Last layer upgrade.
    pub last_upgrade: Option<Instant>,
    /// The effective estimate the previous allocation used.
    pub allocated_for: Option<u64>,
    /// Last time a probe was asked for.
    pub last_probe: Option<Instant>,
    /// Media bytes written into this subscriber's slots since the last tick.
    pub sent_bytes: u64,
    /// Media bytes sent in each of the last ticks (ring, `sent_at` next).
    pub sent_ticks: [(u64, Duration); SENT_TICKS],
    /// Next slot of `sent_ticks`.
    pub sent_at: usize,
    /// When a loss report capped the estimate (see `Room::on_egress_stats`);
    /// while set, `effective_bps` is the cap.
    pub loss_capped_at: Option<Instant>,
    /// Since when every estimate has been above `effective_bps`, and the
    /// lowest of them (a sustained rise; see `Room::on_estimate`).
    pub rising: Option<(Instant, u64)>,
}

impl Downlink {
    /// Take `bps` as the effective estimate, dropping any pending rise.
    pub fn set_effective(&mut self, bps: u64) {
        self.effective_bps = Some(bps);
        self.rising = None;
    }

    /// Apply a pending rise once it has lasted `sustained`, at the lowest
    /// estimate seen meanwhile.
    pub fn settle_rise(&mut self, now: Instant, sustained: Duration) {
        if let Some((since, low)) = self.rising
            && now.saturating_duration_since(since) >= sustained
        {
            self.set_effective(low);
        }
    }
}

/// Per-participant counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ParticipantStats {
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    pub plis_sent: u64,
    pub slot_switches: u64,
}

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub name: String,
    pub rtc: Rtc,
    pub layout: MediaLayout,
    /// Join order within the room.
    pub join_seq: u64,
    pub connected: bool,
    pub connected_at: Option<Instant>,
    /// When the peer last sent a datagram its `Rtc` accepted (join time
    /// until then): the room removes it after
    /// [`RoomConfig::inactivity_timeout`](crate::RoomConfig::inactivity_timeout)
    /// of silence.
    pub last_ingress: Instant,
    /// The peer has sent SRTP since connecting, so it can decrypt ours.
    pub media_ready: bool,
    pub channel: Option<ChannelId>,
    pub video_slots: Vec<VideoSlot>,
    pub audio_slots: Vec<AudioSlot>,
    pub published: Published,
    pub rx_tracks: HashMap<Ssrc, RxTrack>,
    pub pinned: Option<ParticipantId>,
    /// The Rtc's own next timeout.
    pub next_timeout: Instant,
    /// Has pending writes: needs `Input::Timeout(now)` and a drain.
    pub dirty: bool,
    /// Slot contents changed since the last `slots` control message.
    pub slots_dirty: bool,
    /// Last PLI per (source, layer) sent to this publisher.
    pub last_pli: HashMap<(VideoSource, Layer), Instant>,
    pub stats: ParticipantStats,
    pub downlink: Downlink,
    /// Incoming layer meters per source (camera, screen) and layer.
    pub meters: [[LayerMeter; MAX_LAYERS]; 2],
    /// Incoming audio meter (what one audio slot holding this participant
    /// costs a subscriber).
    pub audio_meter: LayerMeter,
    /// Layers of each source this publisher was last told to send (bit per
    /// layer); `None` until told (it sends everything).
    pub told_layers: [Option<u8>; 2],
}

/// Index of a source in per-source arrays.
pub(crate) fn source_index(s: VideoSource) -> usize {
    match s {
        VideoSource::Camera => 0,
        VideoSource::Screen => 1,
    }
}

impl Participant {
    /// Give each video slot a fresh resend cache of `packets` over `age`
    /// (it answers the subscriber's NACKs; a fresh one forgets what was
    /// sent before) and turn resends off for audio slots.
    pub(crate) fn reset_rtx_caches(&mut self, packets: usize, age: Duration) {
        for s in &self.layout.video_slots {
            if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(*s, None) {
                stream.set_rtx_cache(packets, age, Some(0.15));
            }
        }
        for s in &self.layout.audio_slots {
            if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(*s, None) {
                stream.set_rtx_cache(0, Duration::ZERO, None);
            }
        }
    }

    pub fn new(p: Prepared, join_seq: u64, now: Instant) -> Self {
        let video_slots = p
            .layout
            .video_slots
            .iter()
            .map(|&mid| VideoSlot {
                mid,
                ssrc: None,
                target: None,
                current: None,
                rewriter: Rewriter::new(90_000),
                paused: false,
                max_height: None,
                pending_since: None,
                bw_paused: false,
            })
            .collect();
        let audio_slots = p
            .layout
            .audio_slots
            .iter()
            .map(|&mid| AudioSlot {
                mid,
                ssrc: None,
                holder: None,
                switch_pending: false,
                rewriter: Rewriter::new(48_000),
            })
            .collect();
        Participant {
            id: p.id,
            name: p.name,
            rtc: p.rtc,
            layout: p.layout,
            join_seq,
            connected: false,
            connected_at: None,
            last_ingress: now,
            media_ready: false,
            channel: None,
            video_slots,
            audio_slots,
            published: Published::default(),
            rx_tracks: HashMap::new(),
            pinned: None,
            next_timeout: now,
            dirty: true,
            slots_dirty: true,
            last_pli: HashMap::new(),
            stats: ParticipantStats::default(),
            downlink: Downlink::default(),
            meters: [[LayerMeter::default(); MAX_LAYERS]; 2],
            audio_meter: LayerMeter::default(),
            told_layers: [None; 2],
        }
    }

    /// Which track an incoming SSRC belongs to (cached after the first packet).
    pub fn classify(&mut self, ssrc: Ssrc) -> RxTrack {
        if let Some(t) = self.rx_tracks.get(&ssrc) {
            return *t;
        }
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_rx(&ssrc) else {
            return RxTrack::Ignored;
        };
        let (mid, rid) = (stream.mid(), stream.rid());
        let layer_of = |rids: &[str0m::media::Rid]| -> Layer {
            rid.and_then(|r| rids.iter().position(|x| *x == r))
                .map(|i| Layer(i as u8))
                .unwrap_or(Layer::LOW)
        };
        let track = if self.layout.audio_in.as_ref().is_some_and(|t| t.mid == mid) {
            RxTrack::Audio
        } else if let Some(t) = self.layout.camera_in.as_ref().filter(|t| t.mid == mid) {
            RxTrack::Video(VideoSource::Camera, layer_of(&t.rids))
        } else if let Some(t) = self.layout.screen_in.as_ref().filter(|t| t.mid == mid) {
            RxTrack::Video(VideoSource::Screen, layer_of(&t.rids))
        } else {
            RxTrack::Ignored
        };
        self.rx_tracks.insert(ssrc, track);
        track
    }

    /// Number of simulcast layers the publisher declared for a source.
    pub fn declared_layers(&self, source: VideoSource) -> u8 {
        let t = match source {
            VideoSource::Camera => self.layout.camera_in.as_ref(),
            VideoSource::Screen => self.layout.screen_in.as_ref(),
        };
        t.map(|t| t.rids.len().max(1) as u8).unwrap_or(0)
    }

    /// Ask this publisher for a keyframe of one layer, at most once per
    /// `interval`. Returns whether a PLI was sent.
    pub fn request_keyframe(
        &mut self,
        source: VideoSource,
        layer: Layer,
        now: Instant,
        interval: std::time::Duration,
    ) -> bool {
        if let Some(last) = self.last_pli.get(&(source, layer))
            && now.saturating_duration_since(*last) < interval
        {
            return false;
        }
        let track = match source {
            VideoSource::Camera => self.layout.camera_in.as_ref(),
            VideoSource::Screen => self.layout.screen_in.as_ref(),
        };
        let Some(track) = track else { return false };
        let rid = track.rids.get(layer.0 as usize).copied();
        let mid = track.mid;
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, rid) else {
            return false;
        };
        stream.request_keyframe(KeyframeRequestKind::Pli);
        self.last_pli.insert((source, layer), now);
        self.stats.plis_sent += 1;
        self.dirty = true;
        true
    }

    /// Send SSRC of a slot m-line, cached.
    pub fn slot_ssrc(rtc: &mut Rtc, cached: &mut Option<Ssrc>, mid: Mid) -> Option<Ssrc> {
        if cached.is_none() {
            *cached = rtc
                .direct_api()
                .stream_tx_by_mid(mid, None)
                .map(|s| s.ssrc());
        }
        *cached
    }
}
