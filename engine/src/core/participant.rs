//! One participant: its `Rtc`, what it publishes and its receive slots.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::channel::ChannelId;
use str0m::media::{KeyframeRequestKind, Mid};
use str0m::rtp::Ssrc;

use crate::core::downlink::Downlink;
use crate::core::received::{self, Carried};
pub(crate) use crate::core::slot::VideoFeed;
use crate::core::slot::{AudioSlot, VideoSlot};
use crate::ids::{Layer, ParticipantId, VideoCodec, VideoSource};
use crate::join::{MediaLayout, Prepared};

/// An incoming RTP stream of a publisher, classified once per SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxTrack {
    Audio,
    Video(VideoSource, Layer),
    /// A stream the engine does not forward (extra m-lines).
    Ignored,
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
    /// How many times it was asked (the first publish counts as one).
    pub asked: u32,
    /// When a subscriber's slot last watched this layer (dynacast switches
    /// a layer off only a while after that).
    pub watched_at: Option<Instant>,
}

/// Smoothing weight of one tick's sample in a layer's bitrate.
const METER_ALPHA: f64 = 0.2;

/// One tick's sample counts for at most this many times the smoothed
/// rate. A keyframe is several frames' worth of bytes in one tick: in the
/// load generator's 800 kbit/s grid a publisher's `l` (156 kbit/s) read
/// 276 kbit/s after one, no longer fitted beside the tile it shared a
/// budget with, and was paused for every subscriber at once. Capped, one
/// keyframe lifts the rate by at most a tenth; a lasting rise still
/// compounds by that much every tick.
const METER_SPIKE_CAP: f64 = 1.5;

impl LayerMeter {
    /// Fold the bytes of the tick that lasted `dt` into the rate. A video
    /// layer's rate starts from its configured `hint` (what the allocator
    /// assumes until the layer is measured), not from its first tick: a
    /// layer starts with a keyframe, and one that stops soon after (dynacast
    /// switched it off while every slot showing it was paused) kept that
    /// tick's rate, 2.3 times the layer's, until it was shown again 14 s
    /// later (the load generator's 800 kbit/s grid: a burst of pauses across
    /// every subscriber). Without a hint (audio) the first tick sets it.
    pub fn fold(&mut self, dt: Duration, hint: Option<u64>) {
        if self.bytes == 0 || dt.is_zero() {
            return;
        }
        let sample = self.bytes as f64 * 8.0 / dt.as_secs_f64();
        self.bytes = 0;
        self.rate_bps = Some(match self.rate_bps.or(hint) {
            None => sample as u64,
            Some(r) => {
                let sample = sample.min(r as f64 * METER_SPIKE_CAP);
                (r as f64 * (1.0 - METER_ALPHA) + sample * METER_ALPHA) as u64
            }
        });
    }

    /// The publisher is asked (again) to send this layer.
    pub fn ask(&mut self, now: Instant) {
        self.activated_at = Some(now);
        self.asked += 1;
    }

    /// Asked for more than once and never a packet: a layer the publisher
    /// declares but does not send (Chromium declares a top simulcast layer
    /// its camera is too small for). Asked again, it stays unproven until
    /// a packet arrives.
    pub fn unproven(&self) -> bool {
        self.asked > 1 && self.last_packet.is_none()
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
    dirty: bool,
    /// Slot contents changed since the last `slots` control message.
    slots_dirty: bool,
    /// Last PLI per (source, layer) sent to this publisher.
    last_pli: HashMap<(VideoSource, Layer), Instant>,
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
    /// The codec each source (camera, screen) sends, from the payload type
    /// of its latest packet; `None` before the first.
    pub video_codec: [Option<VideoCodec>; 2],
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
            .zip(&p.layout.video_slot_pts)
            .map(|(&m, &pts)| VideoSlot::new(m, pts))
            .collect();
        let audio_slots = p
            .layout
            .audio_slots
            .iter()
            .map(|&m| AudioSlot::new(m))
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
            video_codec: [None; 2],
        }
    }

    /// Its `Rtc` has pending writes: it needs `Input::Timeout(now)` and a
    /// drain at the next flush.
    #[inline]
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether the next flush must drive it.
    #[inline]
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The flush drives it now: clears the mark, returns whether it was set.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::replace(&mut self.dirty, false)
    }

    /// What its slots show changed: a `slots` control message is due.
    #[inline]
    pub fn mark_slots_changed(&mut self) {
        self.slots_dirty = true;
    }

    /// Whether a `slots` message is due; clears the mark.
    pub fn take_slots_changed(&mut self) -> bool {
        std::mem::replace(&mut self.slots_dirty, false)
    }

    /// `publisher` left the room: every slot showing it goes dark at once,
    /// a pin on it is dropped.
    pub fn forget_publisher(&mut self, publisher: ParticipantId) {
        let mut changed = false;
        for s in &mut self.video_slots {
            changed |= s.forget_publisher(publisher);
        }
        for s in &mut self.audio_slots {
            changed |= s.forget_publisher(publisher);
        }
        if changed {
            self.slots_dirty = true;
        }
        if self.pinned == Some(publisher) {
            self.pinned = None;
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

    /// What a datagram its `Rtc` gave out carries: one of the packets the
    /// room wrote into its slots (with the receive stamp, taken once), or
    /// anything else.
    #[inline]
    pub fn carried(&mut self, datagram: &[u8]) -> Carried {
        let Some((ssrc, seq)) = received::rtp_ids(datagram) else {
            return Carried::Other;
        };
        let ssrc = Some(Ssrc::from(ssrc));
        if let Some(s) = self.video_slots.iter_mut().find(|s| s.ssrc == ssrc) {
            return s.received.take(seq);
        }
        if let Some(s) = self.audio_slots.iter_mut().find(|s| s.ssrc == ssrc) {
            return s.received.take(seq);
        }
        Carried::Other
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
