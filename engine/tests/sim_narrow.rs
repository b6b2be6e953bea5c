//! Constrained downlinks: step down once, hold steady, never pause what
//! fits (simulator, virtual time, seeded).
//!
//! The scenario of the browser report that these tests stand in for: three
//! people, one of them behind a downlink cut from 2.5 Mbit/s to 500 kbit/s
//! while what it needs (two 320x180 layers plus audio) is about 430
//! kbit/s. The publishers declare three simulcast layers and send two, as
//! Chromium does with a 640x360 camera.

use std::collections::HashMap;
use std::time::Duration;

use piazza::core::control::ServerMessage;
use piazza::sim::{ClientConfig, LayerSpec, LinkConfig, SimConfig, Simulator};
use piazza::{Layer, ParticipantId};

fn pid(sim: &Simulator, i: usize) -> ParticipantId {
    sim.participants()[i].id.expect("joined")
}

/// Chromium with a 640x360 camera: 160x90 and 320x180 sent, the 640x360
/// layer declared and never sent.
fn chromium_layers() -> Vec<LayerSpec> {
    vec![
        LayerSpec {
            rid: "l".into(),
            bitrate_bps: 60_000,
            width: 160,
            height: 90,
        },
        LayerSpec {
            rid: "m".into(),
            bitrate_bps: 180_000,
            width: 320,
            height: 180,
        },
        LayerSpec {
            rid: "h".into(),
            bitrate_bps: 0,
            width: 640,
            height: 360,
        },
    ]
}

fn three_people(seed: u64) -> Simulator {
    three_people_behind(seed, 0)
}

/// [`three_people`], every downlink a token bucket `burst_bytes` deep
/// (zero: a plain rate limit).
fn three_people_behind(seed: u64, burst_bytes: u64) -> Simulator {
    let mut cfg = SimConfig::new(3);
    cfg.seed = seed;
    cfg.downlink = LinkConfig {
        rate_bps: Some(2_500_000),
        queue_limit: Duration::from_millis(500),
        burst_bytes,
        ..Default::default()
    };
    cfg.client = Box::new(|i| {
        let mut c = ClientConfig::new(i as u32);
        c.camera_layers = chromium_layers();
        c.video_slots = 2;
        c.audio_slots = 2;
        c.speaking = i == 1;
        c
    });
    Simulator::new(cfg).expect("simulator")
}

/// What one subscriber's slots did over a phase, sampled every 100 ms.
#[derive(Debug, Default)]
struct Watch {
    /// Per slot: (time, state) at every change; state `-` is paused.
    changes: HashMap<String, Vec<(Duration, String)>>,
    /// Last state per slot.
    last: HashMap<String, String>,
    /// Pauses decided while the link showed no congestion and delivered at
    /// least what was allocated (judged on the sample before the pause).
    paused_while_delivering: u32,
    /// The previous sample: no congestion, and delivery covered the
    /// allocation.
    was_delivering: bool,
}

impl Watch {
    fn sample(&mut self, sim: &Simulator, i: usize) {
        let s = sim
            .core()
            .subscriber_stats(sim.room(), pid(sim, i))
            .expect("subscriber");
        let t = sim.elapsed();
        let mut paused_now = false;
        for slot in &s.slots {
            let state = if slot.bandwidth_paused {
                "-".to_string()
            } else {
                match slot.target_layer.or(slot.current_layer) {
                    Some(l) => l.name(),
                    None => "?".into(),
                }
            };
            if self.last.get(&slot.mid) != Some(&state) {
                paused_now |= state == "-";
                if self.last.contains_key(&slot.mid) {
                    self.changes
                        .entry(slot.mid.clone())
                        .or_default()
                        .push((t, state.clone()));
                }
                self.last.insert(slot.mid.clone(), state);
            }
        }
        if paused_now && self.was_delivering {
            self.paused_while_delivering += 1;
        }
        self.was_delivering =
            !s.congested && s.allocated_bps > 0 && s.delivered_bps >= s.allocated_bps;
    }

    /// The most changes of one slot within any `window`.
    fn most_changes_in(&self, window: Duration) -> usize {
        self.changes
            .values()
            .map(|c| {
                c.iter()
                    .map(|(t, _)| {
                        c.iter()
                            .filter(|(u, _)| *u >= *t && *u < *t + window)
                            .count()
                    })
                    .max()
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }

    fn pauses(&self) -> usize {
        self.changes
            .values()
            .map(|c| c.iter().filter(|(_, s)| s == "-").count())
            .sum()
    }
}

/// Run `sim` until `until`, sampling subscriber 0 every 100 ms.
fn watch_until(sim: &mut Simulator, until: Duration, w: &mut Watch) {
    while sim.elapsed() < until {
        sim.run_for(Duration::from_millis(100));
        w.sample(sim, 0);
    }
}

fn audio_packets(sim: &Simulator, i: usize) -> u64 {
    sim.participants()[i]
        .client
        .stats()
        .slots
        .iter()
        .filter(|s| !s.video)
        .map(|s| s.packets)
        .sum()
}

fn print_changes(w: &Watch) {
    let mut mids: Vec<_> = w.changes.keys().collect();
    mids.sort();
    for m in mids {
        println!("slot {m}: {:?}", w.changes[m]);
    }
}

/// GCC's estimate dips (here: reported at 150 kbit/s every 100 ms for 5 s,
/// as str0m's did to 312-412 kbit/s in Chromium behind a 500 kbit/s token
/// bucket with the queue at 0-15 ms) while the 2.5 Mbit/s link shows no
/// loss and no queue: no slot is lowered or paused. Down only on evidence
/// of congestion: the budget's delivery floor (without it, the grid slot
/// pauses 0.6 s into the dip).
#[test]
fn an_estimate_dip_without_congestion_lowers_nothing() {
    let mut sim = three_people(14);
    let mut before = Watch::default();
    watch_until(&mut sim, Duration::from_secs(10), &mut before);
    let s = sim
        .core()
        .subscriber_stats(sim.room(), pid(&sim, 0))
        .unwrap();
    assert!(
        s.slots
            .iter()
            .all(|x| !x.bandwidth_paused && x.current_layer == Some(Layer::MEDIUM)),
        "both slots on m before the dip: {s:?}"
    );
    let (room, who) = (sim.room(), pid(&sim, 0));
    let mut dip = Watch::default();
    let mut congested_samples = 0;
    while sim.elapsed() < Duration::from_secs(15) {
        sim.core_mut().inject_estimate(room, who, 150_000);
        sim.run_for(Duration::from_millis(100));
        dip.sample(&sim, 0);
        let s = sim.core().subscriber_stats(room, who).unwrap();
        congested_samples += s.congested as u32;
    }
    print_changes(&dip);
    assert_eq!(congested_samples, 0, "the link showed congestion");
    assert!(
        dip.changes.is_empty(),
        "a slot moved on the estimate alone: {:?}",
        dip.changes
    );
}

/// The downlink is cut to 500 kbps while what the subscriber needs is
/// about 470 kbps on the wire: at most one pause (the cut's transient), at
/// most one layer change per slot per 10 s, and back to `m` within 5 s of
/// the limit lifting.
#[test]
fn a_cut_to_what_still_fits_pauses_nothing_and_changes_little() {
    let mut sim = three_people(14);
    let mut before = Watch::default();
    watch_until(&mut sim, Duration::from_secs(10), &mut before);
    sim.participant_mut(0).downlink.config.rate_bps = Some(500_000);
    let mut limited = Watch::default();
    watch_until(&mut sim, Duration::from_secs(40), &mut limited);
    sim.participant_mut(0).downlink.config.rate_bps = Some(2_500_000);
    let mut recovered_at = None;
    while sim.elapsed() < Duration::from_secs(50) {
        sim.run_for(Duration::from_millis(100));
        let s = sim
            .core()
            .subscriber_stats(sim.room(), pid(&sim, 0))
            .unwrap();
        if recovered_at.is_none()
            && s.slots
                .iter()
                .all(|x| !x.bandwidth_paused && x.current_layer == Some(Layer::MEDIUM))
        {
            recovered_at = Some(sim.elapsed() - Duration::from_secs(40));
        }
    }
    print_changes(&limited);
    let s = sim
        .core()
        .subscriber_stats(sim.room(), pid(&sim, 0))
        .unwrap();
    println!(
        "limited phase: {} pauses, at most {} changes of one slot in 10 s; recovered after {recovered_at:?}; {s:?}",
        limited.pauses(),
        limited.most_changes_in(Duration::from_secs(10)),
    );
    // The goal is no pause at all. What holds today: the cut's transient
    // (str0m's probes and padding sized for 2.5 Mbit/s meet a 500 kbit/s
    // queue; the loss cap fires) pauses one slot once, and it resumes
    // once the estimate recovers; no cycling.
    assert!(limited.pauses() <= 1, "pause cycling on a link that fits");
    assert!(
        limited.most_changes_in(Duration::from_secs(10)) <= 1,
        "more than one layer change per slot in 10 s"
    );
    assert_eq!(limited.paused_while_delivering, 0);
    assert!(
        recovered_at.is_some_and(|d| d <= Duration::from_secs(5)),
        "both slots back on m within 5 s: {recovered_at:?}"
    );
}

/// The downlink is cut to 250 kbps, below what the room needs: after the
/// cut's transient the slots hold still (no change at all in the last 20 s
/// of the limited phase), audio never stops, and a slot paused for
/// bandwidth still names whom it holds.
///
/// Short of issue 14's goal: str0m's estimate sinks to about 145 kbit/s on
/// this 250 kbit/s link, which after two audio streams funds no video, so
/// both slots pause (the goal is the speaker in view); see
/// docs/architecture.md.
#[test]
fn a_cut_below_the_need_settles_without_cycling() {
    let mut sim = three_people(15);
    let mut before = Watch::default();
    watch_until(&mut sim, Duration::from_secs(10), &mut before);
    sim.participant_mut(0).downlink.config.rate_bps = Some(250_000);
    let audio_at_cut = audio_packets(&sim, 0);
    let mut limited = Watch::default();
    watch_until(&mut sim, Duration::from_secs(20), &mut limited);
    let audio_mid = audio_packets(&sim, 0);
    let changes_at_20s: usize = limited.changes.values().map(Vec::len).sum();
    watch_until(&mut sim, Duration::from_secs(40), &mut limited);
    let audio_end = audio_packets(&sim, 0);
    print_changes(&limited);
    let s = sim
        .core()
        .subscriber_stats(sim.room(), pid(&sim, 0))
        .unwrap();
    println!("{s:?}");
    let changes_at_40s: usize = limited.changes.values().map(Vec::len).sum();
    assert_eq!(
        changes_at_40s, changes_at_20s,
        "slots changed 10-30 s after the cut"
    );
    assert!(
        audio_mid > audio_at_cut && audio_end > audio_mid,
        "audio kept flowing"
    );
    // A paused slot still names whom it holds.
    let Some(ServerMessage::Slots { video, .. }) = &sim.participants()[0].client.last_slots else {
        panic!("no slots message");
    };
    for v in video.iter().filter(|v| v.paused) {
        assert!(v.participant.is_some(), "{video:?}");
        assert_eq!(v.paused_reason.as_deref(), Some("bandwidth"));
    }
    assert!(video.iter().any(|v| v.paused), "{video:?}");
}

/// Issue 14 below the need: the downlink is cut to 250 kbit/s, less than
/// two slots and two audio streams need. The least important slot (the one
/// that does not hold the speaker) pauses first, and a slot that pauses
/// stays paused until the limit lifts (no cycling); audio never stops (no
/// 1 s without an audio packet); both slots are back on `m` within 5 s of
/// the limit lifting.
#[test]
fn below_the_need_the_least_important_slot_pauses_first_and_stays() {
    below_the_need(three_people(17));
}

/// The same behind a token bucket 5,000 bytes deep, as the browser test
/// has it (`tc ... tbf burst 5000`). With every slot paused, str0m's probe
/// clusters fit in the refilled bucket and read its line rate: the estimate
/// climbed to 446-848 kbit/s on the 250 kbit/s link, nothing contradicted
/// it while only audio flowed, and both slots resumed on `m` and paused
/// again within 1.5 s (these three seeds, and half of seeds 1 to 20,
/// before the resume was verified with padding).
#[test]
fn behind_a_token_bucket_a_probe_that_reads_the_burst_resumes_nothing() {
    for seed in [1, 4, 5] {
        below_the_need(three_people_behind(seed, 5_000));
    }
}

/// The 250 kbit/s scenario and its assertions (see
/// [`below_the_need_the_least_important_slot_pauses_first_and_stays`]).
fn below_the_need(mut sim: Simulator) {
    let mut before = Watch::default();
    watch_until(&mut sim, Duration::from_secs(10), &mut before);
    let speaker = pid(&sim, 1);
    sim.participant_mut(0).downlink.config.rate_bps = Some(250_000);
    // Per slot, what it held at each change; audio packets every 100 ms.
    let mut limited = Watch::default();
    let mut holders: HashMap<String, Option<ParticipantId>> = HashMap::new();
    let mut first_pause: Option<(Duration, String, Option<ParticipantId>)> = None;
    let mut audio = audio_packets(&sim, 0);
    let mut audio_still = Duration::ZERO;
    let mut longest_audio_gap = Duration::ZERO;
    while sim.elapsed() < Duration::from_secs(40) {
        sim.run_for(Duration::from_millis(100));
        limited.sample(&sim, 0);
        let s = sim
            .core()
            .subscriber_stats(sim.room(), pid(&sim, 0))
            .unwrap();
        for slot in &s.slots {
            if !slot.bandwidth_paused {
                holders.insert(slot.mid.clone(), slot.publisher);
            } else if first_pause.is_none() {
                first_pause = Some((
                    sim.elapsed(),
                    slot.mid.clone(),
                    holders.get(&slot.mid).copied().flatten(),
                ));
            }
        }
        let now = audio_packets(&sim, 0);
        if now > audio {
            audio_still = Duration::ZERO;
        } else {
            audio_still += Duration::from_millis(100);
            longest_audio_gap = longest_audio_gap.max(audio_still);
        }
        audio = now;
    }
    print_changes(&limited);
    // The shard's downlink gauges (`/metrics`) agree with the subscribers'
    // own state.
    let core = sim.core().stats();
    let each: Vec<_> = (0..3)
        .map(|i| {
            sim.core()
                .subscriber_stats(sim.room(), pid(&sim, i))
                .unwrap()
        })
        .collect();
    let d = core.downlinks;
    assert_eq!(d.subscribers, 3);
    assert_eq!(d.estimates.iter().sum::<u64>(), 3);
    assert_eq!(
        d.estimate_bps,
        each.iter().map(|s| s.estimate_bps.unwrap()).sum::<u64>()
    );
    assert_eq!(
        d.allocated_bps,
        each.iter().map(|s| s.allocated_bps).sum::<u64>()
    );
    assert_eq!(
        d.slots[3],
        each.iter().map(|s| s.paused_slots as u64).sum::<u64>()
    );
    assert!(d.slots[3] >= 1, "{d:?}");
    assert_eq!(
        core.bandwidth_pauses,
        each.iter().map(|s| s.pauses).sum::<u64>()
    );
    sim.participant_mut(0).downlink.config.rate_bps = Some(2_500_000);
    let mut recovered_at = None;
    while sim.elapsed() < Duration::from_secs(55) && recovered_at.is_none() {
        sim.run_for(Duration::from_millis(100));
        let s = sim
            .core()
            .subscriber_stats(sim.room(), pid(&sim, 0))
            .unwrap();
        if s.slots
            .iter()
            .all(|x| !x.bandwidth_paused && x.current_layer == Some(Layer::MEDIUM))
        {
            recovered_at = Some(sim.elapsed() - Duration::from_secs(40));
        }
    }
    println!(
        "250 kbit/s: first pause {first_pause:?} (speaker {speaker}), {} pauses, longest audio gap {longest_audio_gap:?}; recovered after {recovered_at:?}",
        limited.pauses()
    );
    let (_, mid, held) = first_pause.expect("a slot pauses below the need");
    assert_ne!(held, Some(speaker), "the speaker's slot {mid} paused first");
    for (mid, changes) in &limited.changes {
        if let Some(k) = changes.iter().position(|(_, s)| s == "-") {
            assert_eq!(
                k + 1,
                changes.len(),
                "slot {mid} did not stay paused: {changes:?}"
            );
        }
    }
    assert!(
        longest_audio_gap < Duration::from_secs(1),
        "audio stopped for {longest_audio_gap:?}"
    );
    assert!(
        recovered_at.is_some_and(|d| d <= Duration::from_secs(5)),
        "both slots back on m within 5 s: {recovered_at:?}"
    );
}

/// Dynacast in a steady room: every publisher declares a layer it never
/// sends; it is asked for once, not every 2 s.
#[test]
fn publish_layers_is_quiet_in_a_steady_room() {
    let mut sim = three_people(16);
    sim.run_until(Duration::from_secs(5));
    let before: Vec<u64> = (0..3)
        .map(|i| sim.participants()[i].client.stats().layer_updates)
        .collect();
    sim.run_until(Duration::from_secs(30));
    let during: Vec<u64> = (0..3)
        .map(|i| sim.participants()[i].client.stats().layer_updates - before[i])
        .collect();
    println!("publish_layers messages per publisher in 25 s of a steady room: {during:?}");
    for (i, n) in during.iter().enumerate() {
        assert!(*n <= 2, "publisher {i} got {n} publish_layers messages");
    }
}
