//! Layer meters, per-subscriber bandwidth allocation, layer fallback and
//! dynacast for a [`Room`].

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::stats::PeerStats;

use super::{Room, send_control};
use crate::core::allocator::{AllocSlot, Budget, allocate};
use crate::core::control::ServerMessage;
use crate::core::participant::{MAX_LAYERS, Participant, SENT_TICKS, source_index};
use crate::core::selector::{self, LayerState};
use crate::ids::{Layer, ParticipantId, VideoSource};

/// Smoothing weight of one tick's sample in a layer's bitrate.
const METER_ALPHA: f64 = 0.2;
/// A layer the publisher was just asked for counts as available this long
/// before its first packet.
const ACTIVATION_GRACE: Duration = Duration::from_secs(2);
/// Least time between two layer upgrades of one subscriber.
const UPGRADE_SPACING: Duration = Duration::from_millis(300);
/// While the estimate is below what the slots want, ask str0m for a probe
/// this often.
const REPROBE_INTERVAL: Duration = Duration::from_secs(2);
/// At least this fraction of the last second's packets lost means the
/// downlink is overrun.
const LOSS_CAP_THRESHOLD: f32 = 0.1;
/// An estimate that has stayed above the effective one this long counts,
/// at the lowest value it took meanwhile, however small the rise.
const SUSTAINED_RISE: Duration = Duration::from_secs(1);
/// A loss cap holds the estimate down this long unless str0m's own
/// estimate falls below it first.
const LOSS_CAP_HOLD: Duration = Duration::from_secs(3);

/// One subscriber's bandwidth state, for stats.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberStats {
    /// The subscriber.
    pub participant: ParticipantId,
    /// Latest downlink estimate from BWE (bits/s).
    pub estimate_bps: Option<u64>,
    /// Bitrate of the video layers allocated now.
    pub allocated_bps: u64,
    /// Bitrate every slot at its cap would need.
    pub desired_bps: u64,
    /// Per video slot, in offer order.
    pub slots: Vec<SlotState>,
    /// Publisher or layer switches completed in this subscriber's slots.
    pub slot_switches: u64,
    /// Slots paused for bandwidth now.
    pub paused_slots: usize,
    /// Keyframe requests sent to this participant as a publisher.
    pub plis_received: u64,
}

/// One video slot's state.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotState {
    /// The slot's m-line.
    pub mid: String,
    /// Publisher shown now.
    pub publisher: Option<ParticipantId>,
    /// Layer shown now.
    pub current_layer: Option<Layer>,
    /// Layer the allocator wants.
    pub target_layer: Option<Layer>,
    /// Paused by the subscriber.
    pub paused: bool,
    /// Paused for lack of bandwidth.
    pub bandwidth_paused: bool,
}

impl Room {
    /// Fold the bytes seen since the last tick into each layer's bitrate.
    pub(super) fn update_meters(&mut self, now: Instant) {
        let dt = self
            .meters_at
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        self.meters_at = Some(now);
        if dt.is_zero() {
            return;
        }
        for p in self.slab.iter_mut().flatten() {
            let d = &mut p.downlink;
            d.sent_ticks[d.sent_at] = (d.sent_bytes, dt);
            d.sent_at = (d.sent_at + 1) % SENT_TICKS;
            d.sent_bytes = 0;
            if d.loss_capped_at
                .is_some_and(|at| now.saturating_duration_since(at) >= LOSS_CAP_HOLD)
            {
                d.loss_capped_at = None;
                d.rising = None;
                if let Some(e) = d.estimate_bps {
                    d.set_effective(e);
                }
            }
            // A rise str0m has not restated since (it reports on change).
            d.settle_rise(now, SUSTAINED_RISE);
            let Participant {
                meters,
                audio_meter,
                ..
            } = p;
            for m in meters
                .iter_mut()
                .flatten()
                .chain(std::iter::once(audio_meter))
            {
                if m.bytes > 0 {
                    let sample = m.bytes as f64 * 8.0 / dt.as_secs_f64();
                    m.rate_bps = Some(match m.rate_bps {
                        None => sample as u64,
                        Some(r) => (r as f64 * (1.0 - METER_ALPHA) + sample * METER_ALPHA) as u64,
                    });
                    m.bytes = 0;
                }
            }
        }
    }

    /// Record a subscriber's new downlink estimate. Falls count at once.
    /// Rises count when larger than the hysteresis, or once sustained: GCC's
    /// estimate is a sawtooth (additive rise, then a cut to 85 % of the
    /// measured rate on overuse), and taking falls at once but ignoring
    /// every rise under 15 % would pin the allocation to the troughs.
    pub(super) fn on_estimate(&mut self, i: usize, estimate_bps: u64, now: Instant) {
        let hysteresis = self.config.estimate_hysteresis;
        let Some(p) = self.slab[i].as_mut() else {
            return;
        };
        let d = &mut p.downlink;
        d.estimate_bps = Some(estimate_bps);
        if d.loss_capped_at.is_some() {
            if d.effective_bps.is_some_and(|cap| estimate_bps >= cap) {
                // str0m has not caught up with the loss yet: the cap holds.
                return;
            }
            d.loss_capped_at = None;
        }
        let counts_now = d.effective_bps.is_none_or(|eff| {
            estimate_bps <= eff || estimate_bps as f64 - eff as f64 > hysteresis * eff as f64
        });
        if counts_now {
            d.set_effective(estimate_bps);
            return;
        }
        let (_, low) = d.rising.get_or_insert((now, estimate_bps));
        *low = (*low).min(estimate_bps);
        d.settle_rise(now, SUSTAINED_RISE);
    }

    /// A subscriber's transport stats. GCC's loss-based control cuts the
    /// estimate in steps of at most half per round trip, and its
    /// delay-based side goes blind once a bottleneck queue is full, so a
    /// sudden capacity drop takes it seconds to follow. str0m's egress loss
    /// (from TWCC feedback: every packet on the transport, media, resends
    /// and padding, over the last second) says at once what the link
    /// carried: what was sent in that second, times the share that arrived.
    /// Cap the effective estimate there (the downgrade hold then applies)
    /// until str0m's estimate falls below the cap or the hold ends.
    ///
    /// Per-stream receiver reports are not used: their loss fraction counts
    /// a packet missing at report time even when it arrives later. In the
    /// simulator, with no packet dropped anywhere, every subscriber of one
    /// stream reported 11-15 % at once for packets that arrived after a
    /// NACK, and the caps dropped the speaker to `l` for dozens of them.
    pub(super) fn on_peer_stats(&mut self, i: usize, s: &PeerStats, now: Instant) {
        let Some(p) = self.slab[i].as_mut() else {
            return;
        };
        let Some(loss) = s.egress_loss_fraction.filter(|l| *l >= LOSS_CAP_THRESHOLD) else {
            return;
        };
        let d = &mut p.downlink;
        let (bytes, span) = d
            .sent_ticks
            .iter()
            .fold((0u64, Duration::ZERO), |(b, t), (tb, tt)| (b + tb, t + *tt));
        let Some(effective) = d.effective_bps.filter(|_| !span.is_zero()) else {
            return;
        };
        let sent = bytes as f64 * 8.0 / span.as_secs_f64();
        let delivered = (sent * (1.0 - loss.min(1.0) as f64)) as u64;
        if delivered < effective {
            let fresh = d.loss_capped_at.is_none();
            d.set_effective(delivered);
            d.loss_capped_at = Some(now);
            if fresh {
                self.stats.loss_caps += 1;
                // Retransmitting what the overrun lost would only overrun
                // the link again (a loss storm): forget the resend history.
                p.reset_rtx_caches(self.config.rtx_cache_packets, self.config.rtx_cache_age);
            }
        }
    }

    /// Whether a publisher's layer can be forwarded now (see
    /// [`selector::layer_available`]).
    fn layer_available(
        &self,
        p: &Participant,
        source: VideoSource,
        layer: u8,
        now: Instant,
    ) -> bool {
        if layer as usize >= MAX_LAYERS {
            return false;
        }
        let si = source_index(source);
        let m = &p.meters[si][layer as usize];
        let state = LayerState {
            declared: layer < p.declared_layers(source),
            switched_off: p.told_layers[si].is_some_and(|mask| mask & (1 << layer) == 0),
            since_packet: m.last_packet.map(|t| now.saturating_duration_since(t)),
            since_activated: m.activated_at.map(|t| now.saturating_duration_since(t)),
        };
        selector::layer_available(state, self.config.layer_stall, ACTIVATION_GRACE)
    }

    /// Run the allocator for every subscriber and set its slots' target
    /// layers (or pause them).
    pub(super) fn allocate_all(&mut self, now: Instant) {
        let speaker = self.speakers.current();
        let heights = &self.config.layer_heights;
        for si in 0..self.slab.len() {
            let Some(sub) = self.slab[si].as_ref() else {
                continue;
            };
            // Slots in priority order: screen, pinned, speaker, then slot order.
            let mut order: Vec<(u8, usize)> = sub
                .video_slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.target.is_some() && !s.paused)
                .map(|(k, s)| {
                    let t = s.target.expect("filtered on target");
                    let class = if t.source == VideoSource::Screen {
                        0
                    } else if Some(t.publisher) == sub.pinned {
                        1
                    } else if Some(t.publisher) == speaker {
                        2
                    } else {
                        3
                    };
                    (class, k)
                })
                .collect();
            order.sort();
            let mut slots = Vec::with_capacity(order.len());
            for &(class, k) in &order {
                let slot = &sub.video_slots[k];
                let t = slot.target.expect("filtered on target");
                let publisher = self
                    .index
                    .get(&t.publisher)
                    .and_then(|&pi| self.slab[pi].as_ref());
                let Some(publisher) = publisher else {
                    slots.push(AllocSlot {
                        featured: false,
                        layer_bps: Vec::new(),
                        max_layer: 0,
                        current: None,
                    });
                    continue;
                };
                let declared = publisher.declared_layers(t.source).max(1);
                let max_layer = selector::max_layer(
                    self.config.max_layer.0,
                    declared,
                    slot.max_height,
                    heights,
                );
                let si_src = source_index(t.source);
                let layer_bps = (0..declared)
                    .map(|l| {
                        self.layer_available(publisher, t.source, l, now).then(|| {
                            publisher.meters[si_src][l as usize]
                                .rate_bps
                                .unwrap_or_else(|| {
                                    self.config
                                        .layer_bitrate_hints
                                        .get(l as usize)
                                        .copied()
                                        .unwrap_or(1_000_000)
                                })
                        })
                    })
                    .collect();
                slots.push(AllocSlot {
                    featured: class < 3,
                    layer_bps,
                    max_layer,
                    current: (!slot.bw_paused).then_some(t.layer.0),
                });
            }
            // Audio is never starved: each audio slot keeps what its holder
            // measurably sends, and at least the configured reserve.
            let audio_reserve: u64 = sub
                .audio_slots
                .iter()
                .map(|a| {
                    let measured = a
                        .holder
                        .and_then(|h| self.index.get(&h))
                        .and_then(|&hi| self.slab[hi].as_ref())
                        .and_then(|h| h.audio_meter.rate_bps)
                        .unwrap_or(0);
                    measured.max(self.config.audio_reserve_bps)
                })
                .sum();
            // Keep headroom under the estimate: keyframes are several times a
            // frame's size, and allocating right up to the estimate makes the
            // delay-based estimator see overuse and halve it.
            // The featured slots may spend that headroom on reaching the
            // featured layer (see the allocator).
            let budget = self.config.bandwidth_estimation.then(|| {
                let estimate = sub
                    .downlink
                    .effective_bps
                    .unwrap_or(self.config.initial_bitrate_bps);
                let usable = (estimate as f64 * self.config.estimate_utilization) as u64;
                Budget {
                    bps: usable.saturating_sub(audio_reserve),
                    headroom_bps: estimate.saturating_sub(usable),
                }
            });
            let alloc = allocate(budget, &slots, self.config.featured_layer.0);

            let hold = self.config.upgrade_hold;
            let bwe = self.config.bandwidth_estimation;
            let Some(sub) = self.slab[si].as_mut() else {
                continue;
            };
            let holding = sub
                .downlink
                .last_downgrade
                .is_some_and(|t| now.saturating_duration_since(t) < hold);
            // One upgrade step at a time: each brings a keyframe burst, and
            // the estimator should see one settle before the next.
            let mut may_upgrade = sub
                .downlink
                .last_upgrade
                .is_none_or(|t| now.saturating_duration_since(t) >= UPGRADE_SPACING);
            let mut downgraded = false;
            // Only a downgrade the estimate forced holds back upgrades; layer
            // bitrates breathing with keyframes must not.
            let effective = sub.downlink.effective_bps;
            let estimate_fell = matches!(
                (effective, sub.downlink.allocated_for),
                (Some(now_e), Some(before)) if now_e < before
            );
            sub.downlink.allocated_for = effective;
            for (n, &(_, k)) in order.iter().enumerate() {
                let slot = &mut sub.video_slots[k];
                let Some(mut target) = slot.target else {
                    continue;
                };
                let old = (!slot.bw_paused).then_some(target.layer.0);
                let same_source = slot
                    .current
                    .is_some_and(|c| c.publisher == target.publisher && c.source == target.source);
                let new = alloc.layers[n];
                let up = match (old, new) {
                    (None, Some(_)) => true,
                    (Some(o), Some(l)) => l > o,
                    _ => false,
                };
                let down = match (old, new) {
                    (Some(_), None) => true,
                    (Some(o), Some(l)) => l < o,
                    _ => false,
                };
                if up && same_source {
                    if holding || !may_upgrade {
                        continue;
                    }
                    may_upgrade = false;
                    sub.downlink.last_upgrade = Some(now);
                }
                if down && same_source && estimate_fell {
                    downgraded = true;
                }
                match new {
                    None => {
                        if !slot.bw_paused {
                            slot.bw_paused = true;
                            slot.current = None;
                            slot.pending_since = None;
                            sub.slots_dirty = true;
                        }
                    }
                    Some(l) => {
                        if slot.bw_paused {
                            slot.bw_paused = false;
                            sub.slots_dirty = true;
                        }
                        target.layer = Layer(l);
                        slot.target = Some(target);
                    }
                }
            }
            if downgraded {
                sub.downlink.last_downgrade = Some(now);
            }
            // What is allocated now (held-back upgrades excluded).
            sub.downlink.allocated_bps = order
                .iter()
                .zip(&slots)
                .filter_map(|(&(_, k), a)| {
                    let s = &sub.video_slots[k];
                    let l = s.target.filter(|_| !s.bw_paused)?.layer.0;
                    a.layer_bps.get(l as usize).copied().flatten()
                })
                .sum();
            sub.downlink.desired_bps = alloc.desired_bps;
            if bwe {
                // Probe toward what the slots want. While a featured slot
                // (screen, pinned, speaker) is below the featured layer or
                // paused, or every slot is paused, sustain the rate its next step needs: str0m pads up
                // to it (capped by the estimate), so the estimator is not
                // application-limited and can grow. Otherwise no padding:
                // str0m's pacer pads into every gap between frames, which on
                // a link near the estimate builds a standing queue that a
                // delay-gradient estimator never sees; upgrades beyond the
                // featured layer rely on str0m's probes toward `desired`.
                let featured_layer = self.config.featured_layer.0;
                let nothing_fits = alloc.allocated_bps == 0;
                let deficient = slots.iter().zip(&alloc.layers).any(|(s, l)| {
                    (s.featured || nothing_fits)
                        && match l {
                            None => !s.layer_bps.is_empty(),
                            Some(l) => *l < featured_layer.min(s.max_layer),
                        }
                });
                // No padding while a loss report says the link is overrun.
                let congested = sub.downlink.loss_capped_at.is_some();
                let min = match alloc.next_step_bps {
                    Some(step) if deficient && !congested => {
                        alloc.allocated_bps + audio_reserve + step
                    }
                    _ => 0,
                };
                let mut desired = alloc.desired_bps + audio_reserve;
                // str0m's initial probe fires once, when the subscriber's
                // media starts, and is capped at twice the desired rate. In
                // an empty room nothing fills the slots yet, and a probe
                // capped by the audio reserve would leave the estimate
                // far below the link until the next allocation probe: aim
                // it at the configured initial bitrate instead.
                if slots.is_empty() {
                    desired = desired.max(self.config.initial_bitrate_bps);
                }
                // str0m probes when the desired rate rises above the estimate;
                // while short of what the slots want, ask again now and then
                // so a collapsed estimate (everything paused, nothing to
                // measure) can recover.
                let short = sub.downlink.estimate_bps.is_some_and(|e| e < desired);
                let reprobe = short
                    && sub
                        .downlink
                        .last_probe
                        .is_none_or(|t| now.saturating_duration_since(t) >= REPROBE_INTERVAL);
                if reprobe {
                    // str0m probes for an allocation only when the desired
                    // rate rises above the one it saw last. The measured layer
                    // rates (and so `desired`) often decay tick by tick (after
                    // a keyframe storm), so nudging this tick's value would
                    // still be a decrease: rise above the last one told.
                    let told = sub.downlink.told_bwe.map_or(0, |(_, d)| d);
                    desired = desired.max(told) + 1;
                    sub.downlink.last_probe = Some(now);
                }
                if sub.downlink.told_bwe != Some((min, desired)) {
                    sub.downlink.told_bwe = Some((min, desired));
                    sub.rtc
                        .bwe()
                        .set_bitrate(Bitrate::bps(min), Bitrate::bps(desired));
                    sub.dirty = true;
                }
            }
        }
    }

    /// Dynacast: tell each publisher which of its layers anybody watches.
    pub(super) fn dynacast(&mut self, now: Instant) {
        let mut watched: Vec<(ParticipantId, usize, u8)> = Vec::new();
        for sub in self.slab.iter().flatten() {
            for s in &sub.video_slots {
                if s.paused || s.bw_paused {
                    continue;
                }
                for f in [s.current, s.target].into_iter().flatten() {
                    let si = source_index(f.source);
                    match watched.iter_mut().find(|w| w.0 == f.publisher && w.1 == si) {
                        Some(w) => w.2 |= 1 << f.layer.0,
                        None => watched.push((f.publisher, si, 1 << f.layer.0)),
                    }
                }
            }
        }
        for p in self.slab.iter_mut().flatten() {
            if p.channel.is_none() {
                continue;
            }
            for source in [VideoSource::Camera, VideoSource::Screen] {
                let declared = p.declared_layers(source);
                let published = match source {
                    VideoSource::Camera => p.published.camera,
                    VideoSource::Screen => p.published.screen,
                };
                if declared == 0 || !published {
                    continue;
                }
                let si = source_index(source);
                let mask = watched
                    .iter()
                    .find(|w| w.0 == p.id && w.1 == si)
                    .map_or(0, |w| w.2);
                let before = p.told_layers[si].unwrap_or(u8::MAX);
                if p.told_layers[si] == Some(mask) {
                    continue;
                }
                for l in 0..declared.min(MAX_LAYERS as u8) {
                    if mask & (1 << l) != 0 && before & (1 << l) == 0 {
                        p.meters[si][l as usize].activated_at = Some(now);
                    }
                }
                p.told_layers[si] = Some(mask);
                let active = (0..declared).map(|l| mask & (1 << l) != 0).collect();
                send_control(p, &ServerMessage::PublishLayers { source, active });
            }
        }
    }

    /// Bandwidth state of one subscriber.
    pub fn subscriber_stats(&self, pid: ParticipantId) -> Option<SubscriberStats> {
        let p = self.slab[*self.index.get(&pid)?].as_ref()?;
        Some(SubscriberStats {
            participant: pid,
            estimate_bps: p.downlink.estimate_bps,
            allocated_bps: p.downlink.allocated_bps,
            desired_bps: p.downlink.desired_bps,
            slots: p
                .video_slots
                .iter()
                .map(|s| SlotState {
                    mid: s.mid.to_string(),
                    publisher: s.current.map(|f| f.publisher),
                    current_layer: s.current.map(|f| f.layer),
                    target_layer: s.target.filter(|_| !s.bw_paused).map(|f| f.layer),
                    paused: s.paused,
                    bandwidth_paused: s.bw_paused,
                })
                .collect(),
            slot_switches: p.stats.slot_switches,
            paused_slots: p.video_slots.iter().filter(|s| s.bw_paused).count(),
            plis_received: p.stats.plis_sent,
        })
    }
}
