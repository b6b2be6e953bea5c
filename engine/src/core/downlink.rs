//! A subscriber's downlink: the estimate the allocator works with, the loss
//! cap, and what was last asked of str0m's bandwidth estimator.
//!
//! str0m's estimate arrives as [`Downlink::on_estimate`]; the transport's
//! loss as [`Downlink::on_egress_loss`]; the room's tick calls
//! [`Downlink::on_tick`]. The allocator reads [`Downlink::effective_bps`],
//! asks [`Downlink::upgrade_gate`] whether it may raise a layer, and hands
//! its wish to [`Downlink::bwe_request`].

use std::time::{Duration, Instant};

/// Ticks of sent-media history: a second of it at the room's 100 ms tick.
pub(crate) const SENT_TICKS: usize = 10;
/// The fewest ticks the delivery floor reads after a growth.
const FLOOR_MIN_TICKS: usize = 3;
/// At least this fraction of the last second's packets lost means the
/// downlink is overrun.
const LOSS_CAP_THRESHOLD: f32 = 0.1;
/// An estimate that has stayed above the effective one this long counts,
/// at the lowest value it took meanwhile, however small the rise.
const SUSTAINED_RISE: Duration = Duration::from_secs(1);
/// A loss cap holds the estimate down this long unless str0m's own
/// estimate falls below it first.
const LOSS_CAP_HOLD: Duration = Duration::from_secs(3);
/// Least time between two layer upgrades of one subscriber.
const UPGRADE_SPACING: Duration = Duration::from_millis(300);
/// While the estimate is below what the slots want, ask str0m for a probe
/// this often.
const REPROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Loss (share of the last second's packets, TWCC) at or above which the
/// link counts as congested: its delivery no longer sustains the
/// allocation. Below the loss cap's threshold: a loss this small only stops
/// the delivery floor, it does not cut the estimate.
const CONGESTION_LOSS: f32 = 0.02;
/// Queueing delay (TWCC round-trip time above the lowest one seen within
/// [`RTT_BASE_WINDOW`]) at or above which the link counts as congested.
const CONGESTION_QUEUE_DELAY: Duration = Duration::from_millis(60);
/// The lowest round-trip time is the link's base (no queue) for this long.
const RTT_BASE_WINDOW: Duration = Duration::from_secs(10);
/// A queue that has not fallen below [`CONGESTION_QUEUE_DELAY`] for this
/// long is a standing one: the link carries less than is sent, and the
/// estimate is capped at what it delivered, as after loss. A keyframe's
/// burst on a link with room drains sooner.
const STANDING_QUEUE: Duration = Duration::from_secs(1);

/// Downlink bandwidth state of one subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Downlink {
    /// Latest estimate from str0m's BWE.
    estimate_bps: Option<u64>,
    /// The estimate the allocator uses (moves only on changes beyond the
    /// hysteresis, or sustained rises).
    effective_bps: Option<u64>,
    /// Last downgrade forced by the estimate.
    last_downgrade: Option<Instant>,
    /// Last layer upgrade.
    last_upgrade: Option<Instant>,
    /// The effective estimate the previous allocation used.
    allocated_for: Option<u64>,
    /// Bitrate of the layers allocated now.
    allocated_bps: u64,
    /// Bitrate of every slot at its cap.
    desired_bps: u64,
    /// Last (minimum, desired) handed to `bwe().set_bitrate`.
    told_bwe: Option<(u64, u64)>,
    /// Last time a probe was asked for.
    last_probe: Option<Instant>,
    /// Media bytes written into this subscriber's slots since the last tick.
    sent_bytes: u64,
    /// Media bytes sent in each of the last ticks (ring, `sent_at` next).
    sent_ticks: [(u64, Duration); SENT_TICKS],
    /// Of `sent_bytes`, audio.
    audio_sent_bytes: u64,
    /// Of each of `sent_ticks`, audio.
    audio_ticks: [u64; SENT_TICKS],
    /// Next slot of `sent_ticks`.
    sent_at: usize,
    /// When a loss report or a standing queue capped the estimate; while
    /// set, `effective_bps` is the cap.
    loss_capped_at: Option<Instant>,
    /// Since when every estimate has been above `effective_bps`, and the
    /// lowest of them (a sustained rise).
    rising: Option<(Instant, u64)>,
    /// The effective estimate has fallen at least once, or loss capped it:
    /// the link has shown a limit. Until then a paused slot resumes as soon
    /// as the estimate covers it (its pause came from the first, unprobed
    /// estimate, not from congestion: nothing to cycle).
    limited: bool,
    /// Latest transport loss (TWCC, last second).
    loss: f32,
    /// Latest TWCC round-trip time.
    rtt: Option<Duration>,
    /// The lowest round-trip time seen, and when (the base expires after
    /// [`RTT_BASE_WINDOW`] so a route change is followed).
    rtt_base: Option<(Duration, Instant)>,
    /// Times the allocator paused a slot of this subscriber.
    pauses: u64,
    /// Since when every allocation has wanted to resume a paused slot.
    resume_wanted: Option<Instant>,
    /// Since when every transport report has shown a queue of at least
    /// [`CONGESTION_QUEUE_DELAY`].
    queued_since: Option<Instant>,
    /// Since when every allocation has wanted a layer climb that pauses a
    /// tile shown now.
    climb_wanted: Option<Instant>,
    /// Ticks closed since the last upgrade or resume (up to
    /// [`SENT_TICKS`]).
    ticks_since_growth: usize,
}

impl Downlink {
    /// Latest estimate from str0m.
    pub fn estimate_bps(&self) -> Option<u64> {
        self.estimate_bps
    }

    /// The estimate the allocator uses.
    pub fn effective_bps(&self) -> Option<u64> {
        self.effective_bps
    }

    /// Bitrate of the layers allocated now.
    pub fn allocated_bps(&self) -> u64 {
        self.allocated_bps
    }

    /// Bitrate every slot at its cap would need.
    pub fn desired_bps(&self) -> u64 {
        self.desired_bps
    }

    /// A loss report or a standing queue says the link is overrun (the cap
    /// holds).
    pub fn is_loss_capped(&self) -> bool {
        self.loss_capped_at.is_some()
    }

    /// Bitrate the link carried over the last second: media written into
    /// the slots times the share that arrived (TWCC loss).
    pub fn delivered_bps(&self) -> u64 {
        let w = self.last_ticks(SENT_TICKS);
        arrived_bps(w.bytes, w.span, self.loss)
    }

    /// Queueing delay: the latest round-trip time over the base one.
    pub fn queue_delay(&self) -> Duration {
        match (self.rtt, self.rtt_base) {
            (Some(r), Some((b, _))) => r.saturating_sub(b),
            _ => Duration::ZERO,
        }
    }

    /// Evidence that the link is full: the loss cap holds, packets are lost
    /// ([`CONGESTION_LOSS`]), or a queue builds ([`CONGESTION_QUEUE_DELAY`]).
    pub fn congested(&self) -> bool {
        self.is_loss_capped()
            || self.loss >= CONGESTION_LOSS
            || self.queue_delay() >= CONGESTION_QUEUE_DELAY
    }

    /// Whether this allocation wants to resume a paused slot; returns for
    /// how long every allocation has (zero when not now).
    pub fn resume_wanted(&mut self, wants: bool, now: Instant) -> Duration {
        wanted_for(&mut self.resume_wanted, wants, now)
    }

    /// Whether this allocation wants a layer climb that would pause a tile
    /// shown now; returns for how long every allocation has (zero when not
    /// now).
    pub fn climb_wanted(&mut self, wants: bool, now: Instant) -> Duration {
        wanted_for(&mut self.climb_wanted, wants, now)
    }

    /// Whether the latest allocation wanted to resume a paused slot (its
    /// hold is running).
    pub fn resume_pending(&self) -> bool {
        self.resume_wanted.is_some()
    }

    /// Whether the link has shown a limit (the effective estimate fell, or
    /// loss capped it) since this subscriber joined.
    pub fn has_been_limited(&self) -> bool {
        self.limited
    }

    /// A slot was paused for bandwidth.
    pub fn paused_one(&mut self) {
        self.pauses += 1;
    }

    /// Slots paused for bandwidth so far.
    pub fn pauses(&self) -> u64 {
        self.pauses
    }

    /// The newest `n` ticks of the sent-media history, summed.
    fn last_ticks(&self, n: usize) -> SentWindow {
        let mut w = SentWindow::default();
        for k in 1..=n.min(SENT_TICKS) {
            let i = (self.sent_at + SENT_TICKS - k) % SENT_TICKS;
            w.bytes += self.sent_ticks[i].0;
            w.span += self.sent_ticks[i].1;
            w.audio += self.audio_ticks[i];
        }
        w
    }

    /// The transport's loss and round-trip time (str0m's `PeerStats`, from
    /// TWCC feedback), every stats interval. A queue standing for
    /// [`STANDING_QUEUE`] caps the estimate at what the link delivered (see
    /// [`Downlink::on_egress_loss`]); returns whether a new cap began.
    ///
    /// GCC's delay-based estimator reacts to a queue that grows, not to one
    /// that stands: on an 800 kbit/s link str0m's estimate stayed at
    /// 720-835 kbit/s for 4 s while the queue held 90-190 ms (load
    /// generator, 20 people, `--downlink-kbps 800`, every packet of those
    /// seconds late by that much).
    pub fn on_transport(&mut self, loss: Option<f32>, rtt: Option<Duration>, now: Instant) -> bool {
        self.loss = loss.unwrap_or(0.0);
        let Some(rtt) = rtt else { return false };
        self.rtt = Some(rtt);
        let renew = self
            .rtt_base
            .is_none_or(|(b, at)| rtt <= b || now.saturating_duration_since(at) >= RTT_BASE_WINDOW);
        if renew {
            self.rtt_base = Some((rtt, now));
        }
        // Only while video is allocated: the cap is there to step video
        // down. With every slot paused the queue is audio and str0m's
        // probes, and a cap there stops the padding that keeps the link out
        // of str0m's application-limited probing; in Chromium behind a
        // 250 kbit/s token bucket such a probe then read 652 kbit/s, the
        // cap expired into it and both paused slots resumed on `m` and
        // paused again 0.5 s later (2 of 3 runs).
        if self.allocated_bps == 0 || self.queue_delay() < CONGESTION_QUEUE_DELAY {
            self.queued_since = None;
            return false;
        }
        let since = *self.queued_since.get_or_insert(now);
        if now.saturating_duration_since(since) < STANDING_QUEUE {
            return false;
        }
        // A further cap needs the queue to stand as long again.
        self.queued_since = None;
        self.cap_at_delivered(self.loss, now)
    }

    /// Media bytes written for this subscriber.
    #[inline]
    pub fn record_sent(&mut self, bytes: u64) {
        self.sent_bytes += bytes;
    }

    /// Audio bytes written for this subscriber (counted in
    /// [`Downlink::delivered_bps`] too).
    #[inline]
    pub fn record_sent_audio(&mut self, bytes: u64) {
        self.sent_bytes += bytes;
        self.audio_sent_bytes += bytes;
    }

    /// What the allocation may rely on however low str0m's estimate sinks:
    /// what the link measurably delivered over the last second, while
    /// there is no evidence of congestion (none otherwise). GCC's estimate
    /// undershoots a link it is not filling (after a loss burst it sank to
    /// 140-340 kbps on a 500 kbps link), and pausing a slot the link carries
    /// with no loss and no queue is the flapping this floor ends.
    ///
    /// Video alone: the allocation's budget is video, so its floor is too.
    /// Taking the audio reserve (at least 40 kbit/s per audio slot) off the
    /// whole delivery instead left less than the shown layers cost when the
    /// audio sent less than its reserve.
    ///
    /// Within a second of an upgrade or a resume the floor counts only the
    /// ticks since (at least [`FLOOR_MIN_TICKS`]): a second that is mostly
    /// from before the growth under-reads what the link carries now, and a
    /// dip of the estimate then paused a slot 0.4 s after its resume (the
    /// load generator's 800 kbit/s grid, in-process, seed 6).
    pub fn video_delivery_floor_bps(&self) -> u64 {
        if self.congested() {
            return 0;
        }
        let w = self.last_ticks(self.ticks_since_growth.max(FLOOR_MIN_TICKS));
        arrived_bps(w.bytes.saturating_sub(w.audio), w.span, self.loss)
    }

    /// Take `bps` as the effective estimate, dropping any pending rise.
    fn set_effective(&mut self, bps: u64) {
        self.limited |= self.effective_bps.is_some_and(|e| bps < e);
        self.effective_bps = Some(bps);
        self.rising = None;
    }

    /// Apply a pending rise once it has lasted [`SUSTAINED_RISE`], at the
    /// lowest estimate seen meanwhile.
    fn settle_rise(&mut self, now: Instant) {
        if let Some((since, low)) = self.rising
            && now.saturating_duration_since(since) >= SUSTAINED_RISE
        {
            self.set_effective(low);
        }
    }

    /// The room's tick, `dt` after the previous one: close a tick of sent
    /// bytes, end an expired loss cap, settle a rise str0m has not restated
    /// (it reports on change).
    pub fn on_tick(&mut self, now: Instant, dt: Duration) {
        self.sent_ticks[self.sent_at] = (self.sent_bytes, dt);
        self.audio_ticks[self.sent_at] = self.audio_sent_bytes;
        self.audio_sent_bytes = 0;
        self.sent_at = (self.sent_at + 1) % SENT_TICKS;
        self.sent_bytes = 0;
        self.ticks_since_growth = (self.ticks_since_growth + 1).min(SENT_TICKS);
        if self
            .loss_capped_at
            .is_some_and(|at| now.saturating_duration_since(at) >= LOSS_CAP_HOLD)
        {
            self.loss_capped_at = None;
            self.rising = None;
            if let Some(e) = self.estimate_bps {
                self.set_effective(e);
            }
        }
        self.settle_rise(now);
    }

    /// A new estimate from str0m. Falls count at once. Rises count when
    /// larger than `hysteresis` (a fraction), or once sustained: GCC's
    /// estimate is a sawtooth (additive rise, then a cut to 85 % of the
    /// measured rate on overuse), and taking falls at once but ignoring
    /// every rise under 15 % would pin the allocation to the troughs.
    pub fn on_estimate(&mut self, estimate_bps: u64, hysteresis: f64, now: Instant) {
        self.estimate_bps = Some(estimate_bps);
        if self.loss_capped_at.is_some() {
            if self.effective_bps.is_some_and(|cap| estimate_bps >= cap) {
                // str0m has not caught up with the loss yet: the cap holds.
                return;
            }
            self.loss_capped_at = None;
        }
        let counts_now = self.effective_bps.is_none_or(|eff| {
            estimate_bps <= eff || estimate_bps as f64 - eff as f64 > hysteresis * eff as f64
        });
        if counts_now {
            self.set_effective(estimate_bps);
            return;
        }
        let (_, low) = self.rising.get_or_insert((now, estimate_bps));
        *low = (*low).min(estimate_bps);
        self.settle_rise(now);
    }

    /// The transport's loss over the last second (str0m's egress loss from
    /// TWCC feedback). At [`LOSS_CAP_THRESHOLD`] or more, cap the effective
    /// estimate at what the link delivered: what was sent in the recorded
    /// ticks times the share that arrived. Returns whether a new cap began
    /// (a cap already in force is only lowered).
    pub fn on_egress_loss(&mut self, loss: Option<f32>, now: Instant) -> bool {
        let Some(loss) = loss.filter(|l| *l >= LOSS_CAP_THRESHOLD) else {
            return false;
        };
        self.cap_at_delivered(loss, now)
    }

    /// Cap the effective estimate at what was sent in the recorded ticks
    /// times the share that arrived (`1 - loss`), if that is lower. Returns
    /// whether a new cap began.
    fn cap_at_delivered(&mut self, loss: f32, now: Instant) -> bool {
        let w = self.last_ticks(SENT_TICKS);
        let Some(effective) = self.effective_bps.filter(|_| !w.span.is_zero()) else {
            return false;
        };
        let delivered = arrived_bps(w.bytes, w.span, loss);
        if delivered >= effective {
            return false;
        }
        let fresh = self.loss_capped_at.is_none();
        self.set_effective(delivered);
        self.loss_capped_at = Some(now);
        self.limited = true;
        fresh
    }

    /// Whether the allocator may raise a layer now: `(holding, may_upgrade)`,
    /// where `holding` means a forced downgrade happened less than `hold`
    /// ago and `may_upgrade` that the last upgrade is at least
    /// [`UPGRADE_SPACING`] old (one step at a time: each brings a keyframe
    /// burst, and the estimator should see one settle before the next).
    pub fn upgrade_gate(&self, now: Instant, hold: Duration) -> (bool, bool) {
        let holding = self
            .last_downgrade
            .is_some_and(|t| now.saturating_duration_since(t) < hold);
        let may_upgrade = self
            .last_upgrade
            .is_none_or(|t| now.saturating_duration_since(t) >= UPGRADE_SPACING);
        (holding, may_upgrade)
    }

    /// Start an allocation: whether the effective estimate fell since the
    /// previous one (only a downgrade the estimate forced holds back
    /// upgrades; layer bitrates breathing with keyframes must not).
    pub fn begin_allocation(&mut self) -> bool {
        let fell = matches!(
            (self.effective_bps, self.allocated_for),
            (Some(now_e), Some(before)) if now_e < before
        );
        self.allocated_for = self.effective_bps;
        fell
    }

    /// The allocation raised a layer.
    pub fn upgraded(&mut self, now: Instant) {
        self.last_upgrade = Some(now);
        self.ticks_since_growth = 0;
    }

    /// The allocation lowered a layer because the estimate fell.
    pub fn downgraded(&mut self, now: Instant) {
        self.last_downgrade = Some(now);
    }

    /// The allocation's totals.
    pub fn set_allocation(&mut self, allocated_bps: u64, desired_bps: u64) {
        self.allocated_bps = allocated_bps;
        self.desired_bps = desired_bps;
    }

    /// What to hand str0m's `bwe().set_bitrate` for `(min, desired)`, or
    /// `None` when it was told exactly that last time.
    ///
    /// str0m probes when the desired rate rises above the estimate; while
    /// the estimate is short of it, ask again every [`REPROBE_INTERVAL`] so
    /// a collapsed estimate (everything paused, nothing to measure) can
    /// recover. str0m probes for an allocation only when the desired rate
    /// rises above the one it saw last, and the measured layer rates (so
    /// `desired`) often decay tick by tick after a keyframe storm: a
    /// reprobe rises above the last value told.
    pub fn bwe_request(&mut self, min: u64, desired: u64, now: Instant) -> Option<(u64, u64)> {
        let mut desired = desired;
        let short = self.estimate_bps.is_some_and(|e| e < desired);
        let reprobe = short
            && self
                .last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= REPROBE_INTERVAL);
        if reprobe {
            let told = self.told_bwe.map_or(0, |(_, d)| d);
            desired = desired.max(told) + 1;
            self.last_probe = Some(now);
        }
        if self.told_bwe == Some((min, desired)) {
            return None;
        }
        self.told_bwe = Some((min, desired));
        self.told_bwe
    }
}

/// Sent-media history over some ticks.
#[derive(Debug, Default)]
struct SentWindow {
    /// Media bytes written, audio included.
    bytes: u64,
    /// Of them, audio.
    audio: u64,
    /// The ticks' length.
    span: Duration,
}

/// What arrived of `bytes` sent over `span` with a share `loss` lost,
/// bits/s (zero over no time).
fn arrived_bps(bytes: u64, span: Duration, loss: f32) -> u64 {
    if span.is_zero() {
        return 0;
    }
    let sent = bytes as f64 * 8.0 / span.as_secs_f64();
    (sent * (1.0 - loss.clamp(0.0, 1.0) as f64)) as u64
}

/// How long `since` says something has been wanted without a break,
/// starting it now if `wants` and ending it if not.
fn wanted_for(since: &mut Option<Instant>, wants: bool, now: Instant) -> Duration {
    if !wants {
        *since = None;
        return Duration::ZERO;
    }
    now.saturating_duration_since(*since.get_or_insert(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: f64 = 0.15;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_link_counts_as_limited_from_its_first_fall_on() {
        let t = Instant::now();
        let mut d = Downlink::default();
        assert!(!d.has_been_limited());
        // The first estimate and rises (probing a fresh link) are no limit.
        d.on_estimate(1_000_000, H, t);
        d.on_estimate(3_000_000, H, t + ms(500));
        d.on_estimate(6_000_000, H, t + ms(900));
        assert!(!d.has_been_limited());
        d.on_estimate(5_000_000, H, t + ms(1_500));
        assert!(d.has_been_limited());
        // It stays so when the estimate climbs back.
        d.on_estimate(8_000_000, H, t + ms(2_000));
        assert!(d.has_been_limited());
    }

    #[test]
    fn falls_and_large_rises_count_at_once() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(1_000_000, H, t);
        assert_eq!(d.effective_bps(), Some(1_000_000));
        d.on_estimate(800_000, H, t);
        assert_eq!(d.effective_bps(), Some(800_000));
        d.on_estimate(1_000_000, H, t);
        assert_eq!(d.effective_bps(), Some(1_000_000), "25 % > hysteresis");
    }

    #[test]
    fn small_rise_counts_once_sustained_at_its_lowest() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(1_000_000, H, t);
        d.on_estimate(1_100_000, H, t);
        d.on_estimate(1_050_000, H, t + ms(500));
        assert_eq!(d.effective_bps(), Some(1_000_000));
        d.on_tick(t + ms(999), ms(100));
        assert_eq!(d.effective_bps(), Some(1_000_000));
        d.on_tick(t + ms(1000), ms(100));
        assert_eq!(d.effective_bps(), Some(1_050_000));
    }

    #[test]
    fn a_fall_drops_a_pending_rise() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(1_000_000, H, t);
        d.on_estimate(1_100_000, H, t);
        d.on_estimate(900_000, H, t + ms(100));
        d.on_tick(t + ms(2000), ms(100));
        assert_eq!(d.effective_bps(), Some(900_000));
    }

    fn sent_one_second(d: &mut Downlink, t: Instant, bps: u64) {
        sent_ticks(d, t, bps, SENT_TICKS);
    }

    /// `n` ticks of 100 ms, each with a tick's worth of `bps` sent.
    fn sent_ticks(d: &mut Downlink, t: Instant, bps: u64, n: usize) {
        for _ in 0..n {
            d.record_sent(bps / 8 / SENT_TICKS as u64);
            d.on_tick(t, ms(100));
        }
    }

    /// Right after a resume the floor reads the ticks since (at least
    /// three), not a second that is mostly from before it.
    #[test]
    fn after_a_growth_the_floor_reads_the_ticks_since() {
        let t = Instant::now();
        let mut d = Downlink::default();
        sent_one_second(&mut d, t, 200_000);
        assert_eq!(d.video_delivery_floor_bps(), 200_000);
        d.upgraded(t);
        // Four ticks at 400 kbit/s after the resume.
        sent_ticks(&mut d, t, 400_000, 4);
        assert_eq!(d.video_delivery_floor_bps(), 400_000);
        // The whole second would read 280 kbit/s.
        assert_eq!(d.delivered_bps(), 280_000);
        // Two ticks after a growth: the last three count.
        d.upgraded(t);
        sent_ticks(&mut d, t, 100_000, 2);
        assert_eq!(d.video_delivery_floor_bps(), 200_000);
        // Audio is not part of the floor.
        d.record_sent_audio(50_000 / 8 / SENT_TICKS as u64);
        d.on_tick(t, ms(100));
        assert_eq!(d.video_delivery_floor_bps(), 66_666);
    }

    #[test]
    fn loss_caps_at_the_delivered_rate_until_the_estimate_follows() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(2_000_000, H, t);
        sent_one_second(&mut d, t, 1_600_000);
        assert!(!d.on_egress_loss(Some(0.05), t), "under the threshold");
        assert!(!d.on_egress_loss(None, t));
        assert!(d.on_egress_loss(Some(0.5), t));
        assert!(d.is_loss_capped());
        assert_eq!(d.effective_bps(), Some(800_000));
        assert!(!d.on_egress_loss(Some(0.75), t), "not a new cap");
        assert_eq!(d.effective_bps(), Some(400_000), "but lower");
        // A higher estimate from str0m does not lift it...
        d.on_estimate(1_500_000, H, t + ms(100));
        assert_eq!(d.effective_bps(), Some(400_000));
        // ...a lower one ends it.
        d.on_estimate(300_000, H, t + ms(200));
        assert!(!d.is_loss_capped());
        assert_eq!(d.effective_bps(), Some(300_000));
    }

    #[test]
    fn loss_cap_expires_to_the_latest_estimate() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(2_000_000, H, t);
        sent_one_second(&mut d, t, 1_000_000);
        assert!(d.on_egress_loss(Some(0.5), t));
        d.on_estimate(1_800_000, H, t + ms(100));
        d.on_tick(t + ms(2900), ms(100));
        assert!(d.is_loss_capped());
        d.on_tick(t + ms(3000), ms(100));
        assert!(!d.is_loss_capped());
        assert_eq!(d.effective_bps(), Some(1_800_000));
    }

    #[test]
    fn no_cap_when_the_link_delivered_more_than_the_estimate() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(500_000, H, t);
        sent_one_second(&mut d, t, 2_000_000);
        assert!(!d.on_egress_loss(Some(0.2), t));
        assert_eq!(d.effective_bps(), Some(500_000));
    }

    #[test]
    fn upgrades_are_spaced_and_held_after_a_forced_downgrade() {
        let t = Instant::now();
        let mut d = Downlink::default();
        assert_eq!(d.upgrade_gate(t, ms(5000)), (false, true));
        d.upgraded(t);
        assert_eq!(d.upgrade_gate(t + ms(299), ms(5000)), (false, false));
        assert_eq!(d.upgrade_gate(t + ms(300), ms(5000)), (false, true));
        d.downgraded(t + ms(300));
        assert!(d.upgrade_gate(t + ms(5299), ms(5000)).0);
        assert!(!d.upgrade_gate(t + ms(5300), ms(5000)).0);
    }

    #[test]
    fn estimate_fall_is_seen_by_one_allocation() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(1_000_000, H, t);
        assert!(!d.begin_allocation());
        d.on_estimate(700_000, H, t);
        assert!(d.begin_allocation());
        assert!(!d.begin_allocation(), "already allocated for it");
    }

    #[test]
    fn bwe_is_told_changes_and_reprobed_while_short() {
        let t = Instant::now();
        let mut d = Downlink::default();
        assert_eq!(d.bwe_request(0, 900_000, t), Some((0, 900_000)));
        assert_eq!(d.bwe_request(0, 900_000, t), None, "unchanged");
        d.on_estimate(300_000, H, t);
        // Short of what the slots want: rise above the last value told.
        assert_eq!(d.bwe_request(0, 800_000, t), Some((0, 900_001)));
        // Not again within the interval.
        assert_eq!(d.bwe_request(0, 800_000, t + ms(1000)), Some((0, 800_000)));
        assert_eq!(d.bwe_request(0, 800_000, t + ms(2000)), Some((0, 800_001)));
    }

    #[test]
    fn the_video_floor_leaves_the_audio_out() {
        let t = Instant::now();
        let mut d = Downlink::default();
        for _ in 0..SENT_TICKS {
            d.record_sent(300_000 / 8 / SENT_TICKS as u64);
            d.record_sent_audio(80_000 / 8 / SENT_TICKS as u64);
            d.on_tick(t, ms(100));
        }
        d.on_transport(Some(0.0), Some(ms(40)), t);
        assert_eq!(d.delivered_bps(), 380_000);
        assert_eq!(d.video_delivery_floor_bps(), 300_000);
    }

    #[test]
    fn the_delivery_floor_holds_only_without_congestion() {
        let t = Instant::now();
        let mut d = Downlink::default();
        sent_one_second(&mut d, t, 400_000);
        d.on_transport(Some(0.0), Some(ms(40)), t);
        assert!(!d.congested());
        assert_eq!(d.video_delivery_floor_bps(), 400_000);
        // A queue builds: 60 ms over the base round trip.
        d.on_transport(Some(0.0), Some(ms(100)), t + ms(200));
        assert_eq!(d.queue_delay(), ms(60));
        assert!(d.congested());
        assert_eq!(d.video_delivery_floor_bps(), 0);
        // Loss of 2 % or more.
        d.on_transport(Some(0.02), Some(ms(40)), t + ms(400));
        assert!(d.congested());
        d.on_transport(Some(0.01), Some(ms(41)), t + ms(600));
        assert!(!d.congested());
        assert_eq!(d.video_delivery_floor_bps(), 396_000);
    }

    #[test]
    fn the_round_trip_base_follows_a_route_change() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_transport(None, Some(ms(20)), t);
        d.on_transport(None, Some(ms(90)), t + ms(9_000));
        assert_eq!(d.queue_delay(), ms(70));
        d.on_transport(None, Some(ms(90)), t + ms(10_000));
        assert_eq!(d.queue_delay(), Duration::ZERO);
    }

    #[test]
    fn a_standing_queue_caps_at_the_delivered_rate_and_a_burst_does_not() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(835_000, H, t);
        sent_one_second(&mut d, t, 650_000);
        d.set_allocation(516_000, 4_500_000);
        assert!(!d.on_transport(Some(0.0), Some(ms(20)), t));
        // A keyframe's burst: 150 ms of queue that drains within the second.
        let mut at = t;
        for rtt in [170, 120, 90, 40, 20] {
            at += ms(200);
            assert!(!d.on_transport(Some(0.0), Some(ms(rtt)), at));
        }
        assert_eq!(d.effective_bps(), Some(835_000));
        // A queue that stands: 60 ms or more over the base for 1 s.
        for rtt in [100, 150, 120, 110, 90] {
            at += ms(200);
            assert!(!d.on_transport(Some(0.0), Some(ms(rtt)), at), "{rtt}");
        }
        at += ms(200);
        assert!(d.on_transport(Some(0.0), Some(ms(85)), at));
        assert!(d.is_loss_capped());
        assert_eq!(d.effective_bps(), Some(650_000));
        // It has to stand another second before it counts again.
        at += ms(200);
        assert!(!d.on_transport(Some(0.0), Some(ms(85)), at));
        // With no video allocated a standing queue caps nothing.
        let mut d = Downlink::default();
        d.on_estimate(835_000, H, t);
        sent_one_second(&mut d, t, 90_000);
        d.on_transport(Some(0.0), Some(ms(20)), t);
        for i in 1..=10 {
            assert!(!d.on_transport(Some(0.0), Some(ms(300)), t + ms(200 * i)));
        }
        assert_eq!(d.effective_bps(), Some(835_000));
    }
}
