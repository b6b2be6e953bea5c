//! Per-subscriber bandwidth allocation over its video slots.
//!
//! The subscriber's downlink estimate (str0m's send-side BWE: GCC's
//! delay-based trendline plus loss-based control, fed by TWCC feedback) is
//! shared among its filled slots by priority, the way mediasoup and Jitsi
//! Videobridge do it:
//!
//! 1. the featured slots (screen share, pinned, active speaker) climb to the
//!    featured layer (`m`, 360p) first, so the person you are looking at is
//!    sharp before the grid is filled;
//! 2. every other slot gets its lowest layer, in priority order; a slot whose
//!    lowest layer no longer fits is paused (video off, audio stays);
//! 3. every slot climbs back to the layer it has, in priority order;
//! 4. the remaining budget upgrades slots one layer step at a time, in
//!    priority order, round after round, up to each slot's cap.
//!
//! Audio is never starved: its reserve is taken off the estimate before
//! video is allocated.
//!
//! Part of the estimate is held back as headroom for keyframe bursts and
//! the estimator's own wobble ([`Budget::headroom_bps`]). The featured
//! slots may spend it on the featured layer (all of it to keep a layer,
//! half of it to gain one), the grid never:
//! GCC's estimate already sits below the link (it backs off to 85 % of the
//! measured rate on every overuse), and on a 1 Mbps downlink the speaker's
//! `m` plus three audio streams need about 70 % of it, which the headroom
//! alone would deny.
//!
//! A slot keeps what it has more easily than it gains: the layer it is on
//! (and those below) are charged at [`KEEP_DISCOUNT`] of their measured
//! rate, so a layer's bitrate breathing with keyframes, or an estimate
//! wobbling by a few percent, does not flip a subscriber between "speaker on
//! `m`, grid paused" and "speaker on `l`, grid on `l`" every few seconds.

/// What a slot's current layer (and the layers below it) cost, as a share
/// of their measured rate.
pub(crate) const KEEP_DISCOUNT: f64 = 0.9;

/// What resuming a slot paused for bandwidth costs, as a share of its
/// layer's measured rate: the resume starts with a keyframe (about three
/// frames' worth of bytes in one burst), and a resume that only just fits
/// dips the estimate and trips the next pause. Charging it keeps a resume
/// for when the headroom covers the burst too.
pub(crate) const RESUME_CHARGE: f64 = 1.25;

/// One video slot as the allocator sees it, in priority order.
#[derive(Debug, Clone)]
pub(crate) struct AllocSlot {
    /// Screen share, pinned or active speaker: climbs first.
    pub featured: bool,
    /// Measured bitrate of each layer the publisher sends, lowest first;
    /// `None` for a layer that is not available.
    pub layer_bps: Vec<Option<u64>>,
    /// Highest layer allowed (subscriber's max resolution, room cap).
    pub max_layer: u8,
    /// The layer the slot is allocated now (`None`: paused or new).
    pub current: Option<u8>,
    /// Paused for bandwidth now: getting a layer is a resume
    /// ([`RESUME_CHARGE`]).
    pub paused: bool,
    /// Layers (a bit each) that count as available only because they were
    /// just asked for, and have never delivered a packet. They may be
    /// allocated, but they do not count in what the subscriber desires:
    /// desire is what str0m probes toward, and a probe toward a layer that
    /// may never come (Chromium declares a top layer its camera is too
    /// small for, and is asked for it again every 30 s) overruns a narrow
    /// link for nothing.
    pub unproven: u8,
}

/// What the allocator may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// For every slot.
    pub bps: u64,
    /// On top of `bps`, only for the featured slots' climb to the featured
    /// layer.
    pub headroom_bps: u64,
}

/// The outcome for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation {
    /// Layer per slot, `None` when paused for lack of bandwidth.
    pub layers: Vec<Option<u8>>,
    /// Bitrate of the chosen layers.
    pub allocated_bps: u64,
    /// Bitrate of every slot at its cap: what the subscriber would like.
    pub desired_bps: u64,
    /// Extra bitrate the next improvement (an unpause or a layer step, in
    /// priority order) would need; `None` when every slot is at its cap.
    pub next_step_bps: Option<u64>,
}

impl AllocSlot {
    /// The same slot with no layer above `cap` (none at all for `None`).
    pub(crate) fn capped_at(&self, cap: Option<u8>) -> AllocSlot {
        let layer_bps = self
            .layer_bps
            .iter()
            .enumerate()
            .map(|(l, r)| r.filter(|_| cap.is_some_and(|c| l <= usize::from(c))))
            .collect();
        AllocSlot {
            layer_bps,
            ..self.clone()
        }
    }
}

fn rate(slot: &AllocSlot, layer: u8) -> Option<u64> {
    slot.layer_bps.get(layer as usize).copied().flatten()
}

/// Whether the slot is allocated `layer` or more now.
fn keeps(slot: &AllocSlot, layer: u8) -> bool {
    slot.current.is_some_and(|c| layer <= c)
}

/// What `layer` costs this slot: its rate, discounted if the slot already
/// has it or more.
fn cost(slot: &AllocSlot, layer: u8) -> Option<u64> {
    let r = rate(slot, layer)?;
    Some(if keeps(slot, layer) {
        (r as f64 * KEEP_DISCOUNT) as u64
    } else if slot.paused {
        (r as f64 * RESUME_CHARGE) as u64
    } else {
        r
    })
}

fn lowest(slot: &AllocSlot) -> Option<u8> {
    (0..=slot.max_layer).find(|&l| rate(slot, l).is_some())
}

/// The next available layer above `layer`, within the cap.
fn next_up(slot: &AllocSlot, layer: u8) -> Option<u8> {
    (layer + 1..=slot.max_layer).find(|&l| rate(slot, l).is_some())
}

fn highest(slot: &AllocSlot) -> Option<u8> {
    (0..=slot.max_layer)
        .rev()
        .find(|&l| rate(slot, l).is_some())
}

/// The highest layer within the cap that has delivered packets (see
/// [`AllocSlot::unproven`]).
fn highest_proven(slot: &AllocSlot) -> Option<u8> {
    (0..=slot.max_layer)
        .rev()
        .find(|&l| rate(slot, l).is_some() && slot.unproven & (1 << l) == 0)
}

/// Share `budget` (None: unconstrained) among `slots` (priority order).
pub(crate) fn allocate(
    budget: Option<Budget>,
    slots: &[AllocSlot],
    featured_layer: u8,
) -> Allocation {
    let desired_bps = slots
        .iter()
        .filter_map(|s| highest_proven(s).and_then(|l| rate(s, l)))
        .sum();
    let Some(budget) = budget else {
        let layers: Vec<Option<u8>> = slots.iter().map(highest).collect();
        let allocated_bps = slots
            .iter()
            .zip(&layers)
            .filter_map(|(s, l)| l.and_then(|l| rate(s, l)))
            .sum();
        return Allocation {
            allocated_bps,
            layers,
            desired_bps,
            next_step_bps: None,
        };
    };
    let mut left = budget.bps + budget.headroom_bps;
    let mut layers: Vec<Option<u8>> = vec![None; slots.len()];

    // 1. Featured slots up to the featured layer.
    for (i, s) in slots.iter().enumerate().filter(|(_, s)| s.featured) {
        let Some(mut l) = lowest(s) else { continue };
        // A layer the slot already has may use all of the headroom; one it
        // would gain, half: keeping is easier than climbing.
        let room = |layer: u8, left: u64| {
            if keeps(s, layer) {
                left
            } else {
                left.saturating_sub(budget.headroom_bps / 2)
            }
        };
        let Some(r) = cost(s, l).filter(|r| *r <= room(l, left)) else {
            continue;
        };
        left -= r;
        while let Some(up) = next_up(s, l).filter(|u| *u <= featured_layer) {
            let (cur, next) = (cost(s, l).unwrap_or(0), cost(s, up).unwrap_or(0));
            let extra = next.saturating_sub(cur);
            if extra > room(up, left) {
                break;
            }
            left -= extra;
            l = up;
        }
        layers[i] = Some(l);
    }
    // The headroom is the featured slots' only.
    left = left.saturating_sub(budget.headroom_bps);
    // 2. Everyone else gets the lowest layer, or is paused: first the
    //    slots that show video now (never pause what fits to resume
    //    another), then the others, each group in priority order.
    let shown_first = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.current.is_some())
        .chain(
            slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.current.is_none()),
        );
    for (i, s) in shown_first {
        if layers[i].is_some() {
            continue;
        }
        let Some(l) = lowest(s) else { continue };
        if let Some(r) = cost(s, l).filter(|r| *r <= left) {
            left -= r;
            layers[i] = Some(l);
        }
    }
    // 3. Every slot climbs back to the layer it has, in priority order,
    //    before any slot gains one: keeping comes before gaining, so a
    //    budget that covers what is kept keeps it all.
    for (i, s) in slots.iter().enumerate() {
        let (Some(mut l), Some(cur)) = (layers[i], s.current) else {
            continue;
        };
        while let Some(up) = next_up(s, l).filter(|u| *u <= cur) {
            let extra = cost(s, up)
                .unwrap_or(0)
                .saturating_sub(cost(s, l).unwrap_or(0));
            if extra > left {
                break;
            }
            left -= extra;
            l = up;
        }
        layers[i] = Some(l);
    }
    // 4. Upgrades, one step per slot per round, in priority order.
    loop {
        let mut upgraded = false;
        for (i, s) in slots.iter().enumerate() {
            let Some(l) = layers[i] else { continue };
            let Some(up) = next_up(s, l) else { continue };
            let extra = cost(s, up)
                .unwrap_or(0)
                .saturating_sub(cost(s, l).unwrap_or(0));
            if extra <= left {
                left -= extra;
                layers[i] = Some(up);
                upgraded = true;
            }
        }
        if !upgraded {
            break;
        }
    }
    let next_step_bps = slots.iter().zip(&layers).find_map(|(s, l)| match l {
        None => lowest(s).and_then(|l| rate(s, l)),
        Some(l) => next_up(s, *l).map(|up| {
            rate(s, up)
                .unwrap_or(0)
                .saturating_sub(rate(s, *l).unwrap_or(0))
        }),
    });
    let allocated_bps = slots
        .iter()
        .zip(&layers)
        .filter_map(|(s, l)| l.and_then(|l| rate(s, l)))
        .sum();
    Allocation {
        allocated_bps,
        layers,
        desired_bps,
        next_step_bps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(bps: u64) -> Option<Budget> {
        Some(Budget {
            bps,
            headroom_bps: 0,
        })
    }

    fn cam(featured: bool) -> AllocSlot {
        AllocSlot {
            featured,
            layer_bps: vec![Some(150_000), Some(500_000), Some(1_500_000)],
            max_layer: 2,
            current: None,
            paused: false,
            unproven: 0,
        }
    }

    #[test]
    fn unconstrained_gives_every_slot_its_cap() {
        let mut capped = cam(false);
        capped.max_layer = 1;
        let a = allocate(None, &[cam(true), capped], 1);
        assert_eq!(a.layers, vec![Some(2), Some(1)]);
        assert_eq!(a.desired_bps, 2_000_000);
    }

    #[test]
    fn one_megabit_speaker_on_m_others_on_l_or_paused() {
        // 900 kbps for video: speaker m (500k), then 2 x l (300k), rest paused.
        let slots: Vec<_> = (0..9).map(|i| cam(i == 0)).collect();
        let a = allocate(b(900_000), &slots, 1);
        assert_eq!(a.layers[0], Some(1));
        assert_eq!(&a.layers[1..3], &[Some(0), Some(0)]);
        assert!(a.layers[3..].iter().all(|l| l.is_none()));
        assert_eq!(a.allocated_bps, 800_000);
        assert_eq!(
            a.next_step_bps,
            Some(1_000_000),
            "speaker m -> h comes next"
        );
    }

    #[test]
    fn upgrades_round_robin_in_priority_order() {
        // 150+150 base, then 350 each to reach m: 1.0 M fits both at m.
        let a = allocate(b(1_000_000), &[cam(false), cam(false)], 1);
        assert_eq!(a.layers, vec![Some(1), Some(1)]);
        // 1.5 M: the first slot climbs to h only when the step fits.
        let a = allocate(b(2_100_000), &[cam(false), cam(false)], 1);
        assert_eq!(a.layers, vec![Some(2), Some(1)]);
    }

    #[test]
    fn unavailable_layers_are_skipped() {
        let mut s = cam(false);
        s.layer_bps[1] = None;
        let a = allocate(b(2_000_000), &[s], 1);
        assert_eq!(a.layers, vec![Some(2)]);
        let mut only_h = cam(false);
        only_h.layer_bps = vec![None, None, Some(1_500_000)];
        assert_eq!(allocate(b(1_000_000), &[only_h], 1).layers, vec![None]);
    }

    #[test]
    fn a_slot_keeps_its_layer_through_a_small_shortfall() {
        // 650 kbps: the speaker's m (550k measured) plus a grid l (150k) do
        // not fit from scratch, so a newcomer gets speaker m, grid paused ...
        let mut slots: Vec<_> = (0..3).map(|i| cam(i == 0)).collect();
        slots[0].layer_bps[1] = Some(550_000);
        let fresh = allocate(b(650_000), &slots, 1);
        assert_eq!(fresh.layers, vec![Some(1), None, None]);
        // ... and a subscriber that has speaker m and one grid l keeps both
        // when the budget dips 10 % below their rate (charged at 85 %) ...
        slots[0].current = Some(1);
        slots[1].current = Some(0);
        let kept = allocate(b(630_000), &slots, 1);
        assert_eq!(kept.layers, vec![Some(1), Some(0), None]);
        assert_eq!(kept.allocated_bps, 700_000, "reported at the real rates");
        // ... but not when it falls 20 % short: the grid slot goes first.
        let cut = allocate(b(560_000), &slots, 1);
        assert_eq!(cut.layers, vec![Some(1), None, None]);
        // Gaining a layer is charged in full: the third slot stays paused.
        assert_eq!(allocate(b(740_000), &slots, 1).layers[2], None);
    }

    #[test]
    fn nothing_fits_pauses_everything() {
        let a = allocate(b(100_000), &[cam(true), cam(false)], 1);
        assert_eq!(a.layers, vec![None, None]);
        assert_eq!(a.allocated_bps, 0);
    }

    #[test]
    fn headroom_lifts_the_featured_slot_only() {
        // 520 kbps for everyone plus 120 kbps of headroom: the speaker's m
        // (550k) fits only with the headroom, the grid gets none of it.
        let mut slots: Vec<_> = (0..3).map(|i| cam(i == 0)).collect();
        slots[0].layer_bps[1] = Some(550_000);
        let budget = Budget {
            bps: 520_000,
            headroom_bps: 120_000,
        };
        let a = allocate(Some(budget), &slots, 1);
        assert_eq!(a.layers, vec![Some(1), None, None]);
        // Without the headroom the speaker falls to l and two grid slots
        // take what is left.
        let a = allocate(b(520_000), &slots, 1);
        assert_eq!(a.layers, vec![Some(0), Some(0), Some(0)]);
        // A headroom the speaker does not need stays unspent: the grid gets
        // 700k - 550k = 150k, one l.
        let budget = Budget {
            bps: 700_000,
            headroom_bps: 300_000,
        };
        let a = allocate(Some(budget), &slots, 1);
        assert_eq!(a.layers, vec![Some(1), Some(0), None]);
    }

    #[test]
    fn a_shown_slot_keeps_its_layer_before_a_paused_one_resumes() {
        // Room for one l: slot 0 (higher priority) is paused, slot 1 shows
        // l. The shown tile keeps it; no pause to resume another.
        let mut paused = cam(false);
        paused.paused = true;
        let mut shown = cam(false);
        shown.current = Some(0);
        let a = allocate(b(200_000), &[paused, shown], 1);
        assert_eq!(a.layers, vec![None, Some(0)]);
    }

    #[test]
    fn a_resume_is_charged_for_its_keyframe() {
        let mut paused = cam(false);
        paused.paused = true;
        // 150k fits a new slot's l, not a resume's (187.5k).
        assert_eq!(allocate(b(150_000), &[cam(false)], 1).layers, vec![Some(0)]);
        assert_eq!(
            allocate(b(150_000), &[paused.clone()], 1).layers,
            vec![None]
        );
        assert_eq!(allocate(b(187_500), &[paused], 1).layers, vec![Some(0)]);
    }

    #[test]
    fn a_layer_that_never_arrived_is_allocatable_but_not_desired() {
        // h was just asked for again and has sent nothing yet: the slot may
        // get it, but the subscriber's desire (what str0m probes toward)
        // stops at m, the highest layer that has delivered.
        let mut s = cam(false);
        s.unproven = 1 << 2;
        let a = allocate(b(3_000_000), std::slice::from_ref(&s), 1);
        assert_eq!(a.layers, vec![Some(2)]);
        assert_eq!(a.desired_bps, 500_000);
        let open = allocate(None, &[s], 1);
        assert_eq!(open.layers, vec![Some(2)]);
        assert_eq!(open.allocated_bps, 1_500_000);
        assert_eq!(open.desired_bps, 500_000);
    }

    #[test]
    fn a_budget_that_covers_what_is_kept_keeps_every_layer() {
        // The grid slot (lower priority) is on m, the first on l. Keeping
        // both costs 90 % of their rates; with exactly that, neither moves
        // (before the keep step, the first slot's l -> m took the grid
        // slot's m).
        let mut first = cam(false);
        first.layer_bps = vec![Some(100_000), Some(300_000), None];
        first.current = Some(0);
        let mut grid = cam(false);
        grid.current = Some(1);
        let slots = [first, grid];
        let kept = 90_000 + 450_000;
        let a = allocate(b(kept), &slots, 1);
        assert_eq!(a.layers, vec![Some(0), Some(1)]);
    }
}
