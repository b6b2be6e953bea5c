//! Per-participant measurement: one [`SlotMeter`] per receive slot, fed
//! with the packets the simulated client logged
//! ([`piazza::sim::client::Arrival`]).

use std::time::{Duration, Instant};

use piazza::core::control::ServerMessage;
use piazza::sim::SimClient;
use piazza::sim::client::Arrival;
use serde::Serialize;

use crate::metrics::collector::{Collector, FrameGap, GAP_LOG_MIN};
use crate::metrics::freeze::FreezeDetector;
use crate::metrics::jitter::Jitter;
use crate::metrics::loss::{LossCounter, LossSnapshot};

/// RTP clock of VP8.
const VIDEO_CLOCK: u32 = 90_000;
/// RTP clock of Opus.
const AUDIO_CLOCK: u32 = 48_000;
/// The SRTP authentication tag on every media datagram (AEAD_AES_256_GCM,
/// what str0m peers negotiate): a datagram is the RTP packet plus this.
pub const SRTP_TAG: u64 = 16;
/// IPv4 and UDP headers: what a downlink cap charges each datagram on top
/// of its bytes (the load generator's link model does, as a `tc` token
/// bucket counts the IP packet).
pub const IP_UDP_HEADERS: u64 = 28;
/// Pauses that begin this long or more into the window count as the
/// settled room's (`late_pauses`); before, the joins' first allocations.
pub const PAUSE_SETTLE: Duration = Duration::from_secs(5);

/// What one receive slot measured.
#[derive(Debug, Clone)]
pub struct SlotMeter {
    video: bool,
    loss: LossCounter,
    window_start: Option<LossSnapshot>,
    jitter: Jitter,
    jitter_max: Duration,
    freeze: FreezeDetector,
    /// (publisher, track, layer) of the last packet, from its trailer.
    current: Option<(u32, u8, u8)>,
    publisher_switches: u64,
    layer_switches: u64,
    frames: u64,
    first_frame: Option<Instant>,
    /// (publisher, track, layer) of the last complete frame.
    last_frame_key: Option<(u32, u8, u8)>,
    /// The engine says the slot is paused (its `slots` message).
    paused: bool,
    /// When the current pause began.
    paused_at: Option<Instant>,
    /// A pause began since the last complete frame: the next frame's delay
    /// spans it.
    pause_pending: bool,
    /// The slot was paused before its first complete keyframe.
    paused_before_first_frame: bool,
    /// Pauses that began in the window.
    pauses: u64,
    /// Pauses that began [`PAUSE_SETTLE`] or more into the window.
    late_pauses: u64,
    /// Bytes received in the window as the link carries them (RTP packet
    /// plus [`SRTP_TAG`] plus [`IP_UDP_HEADERS`]): per camera layer (l, m, h) on video slots, in
    /// `[0]` on audio slots.
    wire_bytes: [u64; 3],
    /// Paused time inside the window.
    paused_time: Duration,
    /// Complete camera frames in the window per layer (l, m, h).
    layer_frames: [u64; 3],
}

impl SlotMeter {
    fn new(video: bool) -> Self {
        SlotMeter {
            video,
            loss: LossCounter::default(),
            window_start: None,
            jitter: Jitter::new(if video { VIDEO_CLOCK } else { AUDIO_CLOCK }),
            jitter_max: Duration::ZERO,
            freeze: FreezeDetector::default(),
            current: None,
            publisher_switches: 0,
            layer_switches: 0,
            frames: 0,
            first_frame: None,
            last_frame_key: None,
            paused: false,
            paused_at: None,
            pause_pending: false,
            paused_before_first_frame: false,
            pauses: 0,
            late_pauses: 0,
            wire_bytes: [0; 3],
            paused_time: Duration::ZERO,
            layer_frames: [0; 3],
        }
    }

    /// Paused time from `at` (or the window's start) until `until`.
    fn close_pause(&mut self, until: Instant, window: Option<Instant>) {
        if let (Some(from), Some(w)) = (self.paused_at.take(), window) {
            let from = from.max(w);
            self.paused_time += until.saturating_duration_since(from);
        }
    }
}

/// The name of a layer in reports: `l`, `m`, `h` for camera layers 0..2,
/// `s` for the screen share.
fn layer_name(track: u8, layer: u8) -> String {
    match (track, layer) {
        (2, _) => "s".into(),
        (_, 0) => "l".into(),
        (_, 1) => "m".into(),
        (_, 2) => "h".into(),
        (_, n) => n.to_string(),
    }
}

/// Media counters summed over slots, participants and threads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaTotals {
    /// RFC 3550 expected packets in the window.
    pub expected_window: u64,
    /// RFC 3550 lost packets in the window.
    pub lost_window: u64,
    /// Expected packets over the whole run.
    pub expected_total: u64,
    /// Lost packets over the whole run.
    pub lost_total: u64,
    /// W3C freezes in the window.
    pub freezes: u64,
    /// Their total duration.
    pub freeze_time: Duration,
    /// Longest inter-frame delay in the window.
    pub max_frame_delay: Duration,
    /// Sum of the slots' final jitter estimates, milliseconds.
    pub jitter_sum_ms: f64,
    /// Slots contributing to `jitter_sum_ms`.
    pub jitter_slots: u64,
    /// Largest jitter estimate any slot reached in the window, milliseconds.
    pub jitter_max_ms: f64,
    /// Publisher changes in slots (whole run).
    pub publisher_switches: u64,
    /// Layer (or track) changes of the same publisher in slots (whole run).
    pub layer_switches: u64,
    /// Video frames completed (whole run).
    pub frames: u64,
    /// Video slots the engine paused at some time in the window.
    pub paused_slots: u64,
    /// Pauses that began in the window.
    pub pauses: u64,
    /// Pauses that began [`PAUSE_SETTLE`] or more into the window.
    pub late_pauses: u64,
    /// The most of those on one slot.
    pub most_late_pauses: u64,
    /// Paused slot time in the window.
    pub paused_time: Duration,
    /// Bytes of camera frames received in the window per layer (l, m, h),
    /// RTP plus [`SRTP_TAG`] plus [`IP_UDP_HEADERS`]; with `layer_frames`,
    /// a layer's bytes per frame on the link.
    pub layer_wire_bytes: [u64; 3],
    /// Datagram bytes received on audio slots in the window.
    pub audio_wire_bytes: u64,
    /// Complete camera frames received in the window per layer (l, m, h).
    pub layer_frames: [u64; 3],
    /// End-to-end encrypted runs: received payloads the clients decrypted
    /// (whole run).
    pub e2ee_decrypted: u64,
    /// ... and those that did not decrypt (no valid header, failed
    /// authentication; whole run).
    pub e2ee_failures: u64,
}

impl MediaTotals {
    /// Add another total.
    pub fn merge(&mut self, o: &MediaTotals) {
        self.expected_window += o.expected_window;
        self.lost_window += o.lost_window;
        self.expected_total += o.expected_total;
        self.lost_total += o.lost_total;
        self.freezes += o.freezes;
        self.freeze_time += o.freeze_time;
        self.max_frame_delay = self.max_frame_delay.max(o.max_frame_delay);
        self.jitter_sum_ms += o.jitter_sum_ms;
        self.jitter_slots += o.jitter_slots;
        self.jitter_max_ms = self.jitter_max_ms.max(o.jitter_max_ms);
        self.publisher_switches += o.publisher_switches;
        self.layer_switches += o.layer_switches;
        self.frames += o.frames;
        self.paused_slots += o.paused_slots;
        self.pauses += o.pauses;
        self.late_pauses += o.late_pauses;
        self.most_late_pauses = self.most_late_pauses.max(o.most_late_pauses);
        self.paused_time += o.paused_time;
        for (a, b) in self.layer_wire_bytes.iter_mut().zip(o.layer_wire_bytes) {
            *a += b;
        }
        self.audio_wire_bytes += o.audio_wire_bytes;
        for (a, b) in self.layer_frames.iter_mut().zip(o.layer_frames) {
            *a += b;
        }
        self.e2ee_decrypted += o.e2ee_decrypted;
        self.e2ee_failures += o.e2ee_failures;
    }

    /// Count what one client decrypted and failed to (its whole run).
    pub fn add_e2ee(&mut self, client: &piazza::sim::ClientStats) {
        self.e2ee_decrypted += client.e2ee_decrypted;
        self.e2ee_failures += client.e2ee_failures;
    }

    /// Lost / expected in the window (0 when nothing was expected).
    pub fn loss_ratio(&self) -> f64 {
        ratio(self.lost_window, self.expected_window)
    }

    /// Lost / expected over the whole run.
    pub fn loss_ratio_total(&self) -> f64 {
        ratio(self.lost_total, self.expected_total)
    }

    /// Mean of the slots' jitter estimates, milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        if self.jitter_slots == 0 {
            0.0
        } else {
            self.jitter_sum_ms / self.jitter_slots as f64
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// How a participant reached the engine.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Its own UDP socket.
    #[default]
    Udp,
    /// A TCP connection to the engine's ICE-TCP candidate (RFC 4571 frames).
    Tcp,
}

/// One participant's join and first-frame outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParticipantResult {
    /// Room index (0-based, in creation order).
    pub room: usize,
    /// The number in its payload trailers.
    pub publisher: u32,
    /// `udp` or `tcp` (ICE-TCP).
    pub transport: Transport,
    /// When the join was requested, seconds after the run started.
    pub join_at_s: f64,
    /// Join request to ICE + DTLS connected, ms (`None`: never connected).
    pub join_ms: Option<f64>,
    /// Join request to the first complete keyframe in each video slot that
    /// had a publisher to show at join time, ms (`None`: not applicable or
    /// missing, see `first_frame_missing`).
    pub first_frame_ms: Option<f64>,
    /// Video slots that had a publisher to show at join time.
    pub expected_videos: usize,
    /// Some expected video never delivered a complete keyframe.
    pub first_frame_missing: bool,
    /// Complete camera frames it received in the window per layer
    /// (l, m, h): which layers the engine gave this subscriber.
    pub layer_frames: [u64; 3],
}

/// Everything measured for one participant.
#[derive(Debug, Clone)]
pub struct ParticipantMeter {
    room: usize,
    publisher: u32,
    transport: Transport,
    join_requested: Instant,
    expected_videos: usize,
    slots: Vec<SlotMeter>,
    window_start: Option<Instant>,
}

impl ParticipantMeter {
    /// A participant with `video_slots` then `audio_slots` receive slots
    /// (the offer order), whose join was requested at `join_requested`,
    /// while `expected_videos` of its video slots had somebody to show.
    pub fn new(
        room: usize,
        publisher: u32,
        join_requested: Instant,
        expected_videos: usize,
        video_slots: usize,
        audio_slots: usize,
    ) -> Self {
        let slots = (0..video_slots)
            .map(|_| SlotMeter::new(true))
            .chain((0..audio_slots).map(|_| SlotMeter::new(false)))
            .collect();
        ParticipantMeter {
            room,
            publisher,
            transport: Transport::Udp,
            join_requested,
            expected_videos: expected_videos.min(video_slots),
            slots,
            window_start: None,
        }
    }

    /// The same participant, reaching the engine over `transport`.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The measurement window opens at `at`: loss is counted from here.
    pub fn start_window(&mut self, at: Instant) {
        self.window_start = Some(at);
        for s in &mut self.slots {
            s.window_start = Some(s.loss.snapshot());
            if s.paused {
                s.pauses += 1;
            }
        }
    }

    /// The engine said (its `slots` control message, at `at`) whether video
    /// slot `slot` is paused. A pause is the engine's decision (the
    /// subscriber's downlink cannot carry the slot), not a freeze: the gap
    /// it causes is counted as paused time, and the freeze detector starts
    /// afresh with the first frame after it.
    pub fn on_slot_paused(&mut self, slot: usize, paused: bool, at: Instant) {
        let window = self.window_start;
        let Some(s) = self.slots.get_mut(slot).filter(|s| s.video) else {
            return;
        };
        if paused == s.paused {
            return;
        }
        s.paused = paused;
        if paused {
            s.paused_at = Some(at);
            s.pause_pending = true;
            if s.first_frame.is_none() {
                s.paused_before_first_frame = true;
            }
            if window.is_some_and(|w| at >= w) {
                s.pauses += 1;
            }
            if window.is_some_and(|w| at >= w + PAUSE_SETTLE) {
                s.late_pauses += 1;
            }
        } else {
            s.close_pause(at, window);
        }
    }

    /// One logged packet. `epoch` is the time base of the payload trailers.
    pub fn on_arrival(&mut self, a: &Arrival, epoch: Instant, sink: &mut Collector) {
        let in_window = self.window_start.is_some_and(|w| a.at >= w);
        let Some(slot) = self.slots.get_mut(a.slot as usize) else {
            return;
        };
        slot.loss.on_packet(a.seq);
        sink.on_packet(a.at, a.payload_len as u64, in_window);
        if in_window {
            let wire = a.rtp_len as u64 + SRTP_TAG + IP_UDP_HEADERS;
            match (slot.video, a.trailer) {
                (false, _) => slot.wire_bytes[0] += wire,
                (true, Some(t)) if t.track == 1 && t.layer < 3 => {
                    slot.wire_bytes[t.layer as usize] += wire
                }
                _ => {}
            }
        }
        if let Some(t) = a.trailer {
            let key = (t.publisher, t.track, t.layer);
            if slot.current != Some(key) {
                if let Some(c) = slot.current {
                    if c.0 != t.publisher {
                        slot.publisher_switches += 1;
                    } else {
                        slot.layer_switches += 1;
                    }
                }
                slot.current = Some(key);
                slot.jitter.restart();
            }
            let arrived_ns = a.at.saturating_duration_since(epoch).as_nanos() as u64;
            let latency_us = arrived_ns.saturating_sub(t.sent_ns) / 1000;
            sink.record_latency(a.at, latency_us, in_window);
            if slot.video && t.end_of_frame {
                slot.frames += 1;
                if in_window && t.track == 1 && t.layer < 3 {
                    slot.layer_frames[t.layer as usize] += 1;
                }
                let before = slot.last_frame_key.replace(key);
                let last = slot.freeze.last_frame();
                let across_pause = slot.pause_pending;
                let froze = if across_pause {
                    slot.freeze.resume(a.at);
                    // Frames still in flight when the pause began do not
                    // end it; the first frame after the resume does.
                    slot.pause_pending = slot.paused;
                    false
                } else {
                    slot.freeze.on_frame(a.at, in_window)
                };
                if let (Some(last), Some(before), true) = (last, before, in_window) {
                    let gap = a.at.saturating_duration_since(last);
                    if froze || gap >= GAP_LOG_MIN {
                        sink.record_gap(FrameGap {
                            at_s: sink.since_start(a.at),
                            gap_ms: gap.as_secs_f64() * 1000.0,
                            freeze: froze,
                            paused: across_pause,
                            room: self.room,
                            subscriber: self.publisher,
                            slot: a.slot as usize,
                            from: (before.0, layer_name(before.1, before.2)),
                            to: (key.0, layer_name(key.1, key.2)),
                        });
                    }
                }
                if t.keyframe && slot.first_frame.is_none() {
                    slot.first_frame = Some(a.at);
                }
            }
        }
        slot.jitter.on_packet(a.at, a.rtp_time);
        if in_window {
            slot.jitter_max = slot.jitter_max.max(slot.jitter.value());
        }
    }

    /// The join and first-frame outcome; `connected_at` from the client,
    /// `t0` the start of the run.
    pub fn result(&self, connected_at: Option<Instant>, t0: Instant) -> ParticipantResult {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        // A slot the engine paused before its first frame shows "paused",
        // not "loading": it is not an expected video, even if the engine
        // fills it later.
        let mut firsts: Vec<Instant> = self
            .slots
            .iter()
            .filter(|s| s.video && !s.paused_before_first_frame)
            .filter_map(|s| s.first_frame)
            .collect();
        firsts.sort();
        let paused_early = self
            .slots
            .iter()
            .filter(|s| s.video && s.paused_before_first_frame)
            .count();
        let (first_frame_ms, missing) = match self.expected_videos.saturating_sub(paused_early) {
            0 => (None, false),
            n => match firsts.get(n - 1) {
                Some(t) => (
                    Some(ms(t.saturating_duration_since(self.join_requested))),
                    false,
                ),
                None => (None, true),
            },
        };
        ParticipantResult {
            room: self.room,
            publisher: self.publisher,
            transport: self.transport,
            join_at_s: self
                .join_requested
                .saturating_duration_since(t0)
                .as_secs_f64(),
            join_ms: connected_at.map(|c| ms(c.saturating_duration_since(self.join_requested))),
            first_frame_ms,
            expected_videos: self.expected_videos,
            first_frame_missing: missing,
            layer_frames: self.slots.iter().fold([0; 3], |mut acc, s| {
                for (a, b) in acc.iter_mut().zip(s.layer_frames) {
                    *a += b;
                }
                acc
            }),
        }
    }

    /// Add this participant's media counters to `totals`; `end` closes
    /// pauses still running.
    pub fn add_totals(&mut self, end: Instant, totals: &mut MediaTotals) {
        let window = self.window_start;
        for s in &mut self.slots {
            if s.paused {
                s.close_pause(end, window);
            }
            if s.pauses > 0 {
                totals.paused_slots += 1;
            }
            totals.pauses += s.pauses;
            totals.late_pauses += s.late_pauses;
            totals.most_late_pauses = totals.most_late_pauses.max(s.late_pauses);
            totals.paused_time += s.paused_time;
            if s.video {
                for (a, b) in totals.layer_wire_bytes.iter_mut().zip(s.wire_bytes) {
                    *a += b;
                }
            } else {
                totals.audio_wire_bytes += s.wire_bytes[0];
            }
            for (a, b) in totals.layer_frames.iter_mut().zip(s.layer_frames) {
                *a += b;
            }
            let now = s.loss.snapshot();
            totals.expected_total += now.expected;
            totals.lost_total += now.lost();
            if let Some(start) = s.window_start {
                let (expected, lost) = now.since(&start);
                totals.expected_window += expected;
                totals.lost_window += lost;
            }
            totals.freezes += s.freeze.freezes;
            totals.freeze_time += s.freeze.freeze_time;
            totals.max_frame_delay = totals.max_frame_delay.max(s.freeze.max_delay);
            if now.received >= 2 {
                totals.jitter_sum_ms += s.jitter.value().as_secs_f64() * 1000.0;
                totals.jitter_slots += 1;
            }
            totals.jitter_max_ms = totals
                .jitter_max_ms
                .max(s.jitter_max.as_secs_f64() * 1000.0);
            totals.publisher_switches += s.publisher_switches;
            totals.layer_switches += s.layer_switches;
            totals.frames += s.frames;
        }
    }
}

/// Follows a simulated client's `slots` control messages and tells its
/// meter when the engine pauses or resumes a video slot.
#[derive(Debug, Clone, Default)]
pub struct PauseWatch {
    seen: u64,
}

impl PauseWatch {
    /// Look at `client`'s latest `slots` message if a control message
    /// arrived since the last call; `at` is when it was handled.
    pub fn update(&mut self, client: &SimClient, meter: &mut ParticipantMeter, at: Instant) {
        let n = client.stats().control_messages;
        if n == self.seen {
            return;
        }
        self.seen = n;
        let Some(ServerMessage::Slots { video, .. }) = &client.last_slots else {
            return;
        };
        let slots = &client.stats().slots;
        for v in video {
            if let Some(i) = slots.iter().position(|s| s.mid == v.mid) {
                meter.on_slot_paused(i, v.paused, at);
            }
        }
    }
}
