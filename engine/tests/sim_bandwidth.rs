//! Simulcast layer selection and bandwidth allocation, driven by each
//! subscriber's own downlink estimate (simulator, virtual time, seeded).
//!
//! The assertions are the allocation issue's targets. str0m's GCC needs
//! 2-3.5 s to notice a 10x capacity drop into a full 500 ms tail-drop queue
//! (delay stops rising once the queue is full, so only the slower
//! loss-based path reacts); the engine's loss cap (str0m's TWCC transport
//! loss >= 10 % caps the estimate at what the link delivered) brings the
//! allocation down 1 s after the drop. What the engine does not fix:
//! str0m's estimate then undershoots the link (at 500 kbps it sinks to
//! 190-410 kbps), so for a few seconds nothing fits and later only one `l`
//! does.

use std::collections::HashSet;
use std::time::Duration;

use piazza::sim::{ClientConfig, LinkConfig, SimConfig, Simulator};
use piazza::{Layer, ParticipantId};

fn kbps(v: u64) -> Option<u64> {
    Some(v * 1000)
}

fn pid(sim: &Simulator, i: usize) -> ParticipantId {
    sim.participants()[i].id.expect("joined")
}

/// One line of a subscriber's layer timeline.
fn timeline_line(sim: &Simulator, i: usize) -> String {
    let s = sim
        .core()
        .subscriber_stats(sim.room(), pid(sim, i))
        .expect("subscriber");
    let layers: Vec<String> = s
        .slots
        .iter()
        .map(|s| match (s.bandwidth_paused, s.current_layer) {
            (true, _) => "-".into(),
            (false, Some(l)) => l.name(),
            (false, None) => "?".into(),
        })
        .collect();
    format!(
        "t={:5.1}s estimate {:>5} kbps allocated {:>5} kbps layers [{}]",
        sim.elapsed().as_secs_f64(),
        s.estimate_bps.unwrap_or(0) / 1000,
        s.allocated_bps / 1000,
        layers.join(" ")
    )
}

/// The allocation issue's first target, asserted as the issue states it,
/// at every 100 ms sample after convergence (not only at the end). The
/// seed fixes the run: the same samples in every run and every process
/// (`sim_shards.rs`, `a_seeded_run_replays_in_another_process`). Before the
/// runs were seeded, at the last change 48 of 48 consecutive runs passed, every subscriber
/// had the speaker on `m` or better in every sample, and the worst
/// queueing delay after convergence was 52-113 ms. Before the initial
/// estimate came down to 1 Mbps (from 2.5 Mbps, which overran every
/// downlink at join) about one run in 15 failed: a few subscribers' GCC
/// estimates collapsed to about 650 kbps late in the run.
#[test]
fn fifty_people_on_one_megabit_downlinks_speaker_at_m_rest_low_or_paused() {
    const N: usize = 50;
    let mut cfg = SimConfig::new(N);
    cfg.seed = 3;
    cfg.downlink = LinkConfig {
        rate_bps: kbps(1000),
        queue_limit: Duration::from_millis(500),
        ..Default::default()
    };
    cfg.client = Box::new(|i| {
        let mut c = ClientConfig::new(i as u32);
        c.speaking = i == 0;
        c
    });
    let mut sim = Simulator::new(cfg).unwrap();
    sim.run_until(Duration::from_secs(5));
    for i in 0..N {
        let from = sim.now();
        sim.participant_mut(i).client.measure_from(from);
    }
    // Watch which slots the allocator pauses from now on.
    let mut ever_paused: HashSet<(usize, String)> = HashSet::new();
    let convergence = Duration::from_secs(12);
    let mut samples = 0u32;
    let mut sharp_samples = [0u32; N];
    while sim.elapsed() < Duration::from_secs(25) {
        sim.run_for(Duration::from_millis(100));
        if sim.elapsed() >= convergence && sim.elapsed() < convergence + Duration::from_millis(100)
        {
            for i in 0..N {
                sim.participant_mut(i).downlink.stats = Default::default();
            }
        }
        let measuring = sim.elapsed() > convergence;
        if measuring {
            samples += 1;
        }
        let speaker = pid(&sim, 0);
        for (i, sharp) in sharp_samples.iter_mut().enumerate() {
            let s = sim
                .core()
                .subscriber_stats(sim.room(), pid(&sim, i))
                .unwrap();
            for slot in s.slots.iter().filter(|s| s.bandwidth_paused) {
                ever_paused.insert((i, slot.mid.clone()));
            }
            if measuring
                && s.slots.iter().any(|x| {
                    x.publisher == Some(speaker)
                        && x.target_layer.or(x.current_layer) >= Some(Layer::MEDIUM)
                })
            {
                *sharp += 1;
            }
        }
    }
    let shares: Vec<f64> = sharp_samples[1..]
        .iter()
        .map(|n| *n as f64 / samples as f64)
        .collect();
    let least = shares.iter().cloned().fold(1.0, f64::min);
    println!(
        "share of samples after convergence with the speaker on m or better: least {least:.3}"
    );
    for (i, share) in shares.iter().enumerate() {
        assert!(
            *share >= 1.0,
            "subscriber {} had the speaker on m or better in only {share:.3} of the samples",
            i + 1
        );
    }
    println!("subscriber 1: {}", timeline_line(&sim, 1));
    println!("subscriber 0 (the speaker): {}", timeline_line(&sim, 0));

    let speaker = pid(&sim, 0);
    assert_eq!(sim.core().active_speaker(sim.room()), Some(speaker));
    let mut worst_queue = Duration::ZERO;
    let mut worst_gap = Duration::ZERO;
    let mut speaker_sharp = 0;
    for i in 0..N {
        let s = sim
            .core()
            .subscriber_stats(sim.room(), pid(&sim, i))
            .unwrap();
        for slot in &s.slots {
            if slot.bandwidth_paused {
                continue;
            }
            // Judge the allocator's decision (the target); the slot may be
            // waiting for that layer's keyframe at this instant.
            let Some(layer) = slot.target_layer.or(slot.current_layer) else {
                continue;
            };
            if slot.publisher == Some(speaker) {
                if layer >= Layer::MEDIUM {
                    speaker_sharp += 1;
                } else {
                    println!("subscriber {i} sees the speaker on {layer:?}: {s:?}");
                }
            } else if slot.publisher.is_some() {
                assert_eq!(layer, Layer::LOW, "subscriber {i} slot {}", slot.mid);
            }
        }
        if i != 0 {
            assert!(
                s.slots
                    .iter()
                    .any(|x| x.publisher == Some(speaker) && !x.bandwidth_paused),
                "subscriber {i} has the speaker in view"
            );
        }
        let link = &sim.participants()[i].downlink.stats;
        worst_queue = worst_queue.max(link.max_queue_delay);
        for slot in sim.participants()[i]
            .client
            .stats()
            .slots
            .iter()
            .filter(|s| s.video)
        {
            if !ever_paused.contains(&(i, slot.mid.clone())) {
                worst_gap = worst_gap.max(slot.max_frame_gap);
                assert!(
                    slot.max_frame_gap <= Duration::from_millis(500),
                    "subscriber {i} slot {} froze {:?}, until t={:?}",
                    slot.mid,
                    slot.max_frame_gap,
                    slot.max_frame_gap_end.map(|t| t - sim.start()),
                );
            }
        }
    }
    println!(
        "after convergence: worst downlink queueing delay {worst_queue:?}; worst frame gap of unpaused slots {worst_gap:?}; {speaker_sharp} of {} see the speaker on m or better",
        N - 1
    );
    assert_eq!(
        speaker_sharp,
        N - 1,
        "everyone sees the speaker on m or better"
    );
    assert!(
        worst_queue < Duration::from_millis(300),
        "downlink overrun: {worst_queue:?}"
    );
}

#[test]
fn capacity_steps_five_megabit_to_500k_and_back() {
    let mut cfg = SimConfig::new(6);
    cfg.seed = 5;
    cfg.downlink = LinkConfig {
        rate_bps: kbps(5000),
        ..Default::default()
    };
    cfg.client = Box::new(|i| {
        let mut c = ClientConfig::new(i as u32);
        c.video_slots = 5;
        c.speaking = i == 1;
        c
    });
    let mut sim = Simulator::new(cfg).unwrap();
    let allocated = |sim: &Simulator| {
        sim.core()
            .subscriber_stats(sim.room(), pid(sim, 0))
            .unwrap()
            .allocated_bps
    };
    let mut timeline = Vec::new();
    let step = |sim: &mut Simulator, until: u64, timeline: &mut Vec<(f64, u64)>| {
        while sim.elapsed() < Duration::from_secs(until) {
            sim.run_for(Duration::from_millis(500));
            let l = sim.participants()[0].downlink.stats;
            println!(
                "{} link drops {} max queue {:?}",
                timeline_line(sim, 0),
                l.queue_drops,
                l.max_queue_delay
            );
            sim.participant_mut(0).downlink.stats.max_queue_delay = Duration::ZERO;
            timeline.push((sim.elapsed().as_secs_f64(), allocated(sim)));
        }
    };
    step(&mut sim, 15, &mut timeline);
    let high = allocated(&sim);
    sim.participant_mut(0).downlink.config.rate_bps = kbps(500);
    let drop_at = 15.0;
    step(&mut sim, 30, &mut timeline);
    let low = allocated(&sim);
    sim.participant_mut(0).downlink.config.rate_bps = kbps(5000);
    let recover_at = 30.0;
    step(&mut sim, 42, &mut timeline);

    let down_by = timeline
        .iter()
        .find(|(t, a)| *t > drop_at && (*a as f64) < 0.85 * high as f64)
        .map(|(t, _)| t - drop_at);
    let up_by = timeline
        .iter()
        .find(|(t, a)| *t > recover_at && *a > low.max(150_000) * 2)
        .map(|(t, _)| t - recover_at);
    println!(
        "allocated at 5 Mbps {high}, at 500 kbps {low}; down after {down_by:?} s, up after {up_by:?} s"
    );
    assert!(
        high > 1_500_000,
        "5 Mbps carries more than the lowest layers: {high}"
    );
    assert!(
        low <= 500_000,
        "the constrained allocation fits 500 kbps: {low}"
    );
    // Target: down within 2 s of the drop (the loss cap: 1.0 s in every
    // run seen, sampled every 500 ms).
    assert!(
        down_by.is_some_and(|d| d <= 2.0),
        "allocation went down: {down_by:?}"
    );
    assert!(
        up_by.is_some_and(|d| d <= 10.0),
        "allocation went back up within 10 s"
    );
    assert!(
        timeline
            .iter()
            .any(|(t, a)| *t > recover_at && *t <= recover_at + 10.0 && *a >= 1_000_000),
        "and above 1 Mbps within 10 s of the recovery"
    );
}

#[test]
fn unconstrained_speaker_reaches_h_within_5s_and_switches_are_keyframe_aligned() {
    let mut cfg = SimConfig::new(6);
    cfg.seed = 9;
    cfg.join_spacing = Duration::from_millis(200);
    cfg.client = Box::new(|i| {
        let mut c = ClientConfig::new(i as u32);
        c.video_slots = 5;
        c.speaking = i == 0;
        c
    });
    let mut sim = Simulator::new(cfg).unwrap();
    let speaker_mid = |sim: &Simulator, i: usize| -> Option<(String, Option<Layer>)> {
        let s = sim.core().subscriber_stats(sim.room(), pid(sim, i))?;
        s.slots
            .iter()
            .find(|s| s.publisher == Some(pid(sim, 0)))
            .map(|s| (s.mid.clone(), s.current_layer))
    };
    let mut reached: Vec<Option<Duration>> = vec![None; 6];
    while sim.elapsed() < Duration::from_secs(8) {
        sim.run_for(Duration::from_millis(100));
        for (i, r) in reached.iter_mut().enumerate().skip(1) {
            if r.is_none()
                && sim.participants().get(i).and_then(|p| p.id).is_some()
                && speaker_mid(&sim, i).is_some_and(|(_, l)| l == Some(Layer::HIGH))
            {
                *r = Some(sim.now() - sim.participants()[i].joined_at);
            }
        }
    }
    println!("speaker reached h after joining: {reached:?}");
    for (i, r) in reached.iter().enumerate().skip(1) {
        assert!(
            r.is_some_and(|d| d <= Duration::from_secs(5)),
            "subscriber {i}: {r:?}"
        );
    }
    for (i, p) in sim.participants().iter().enumerate() {
        for s in &p.client.stats().slots {
            assert_eq!(s.non_keyframe_starts, 0, "client {i} slot {}: {s:?}", s.mid);
            assert_eq!(s.lost(), 0, "client {i} slot {}", s.mid);
        }
    }
}

#[test]
fn forty_nine_subscribers_switching_to_h_at_once_cause_a_handful_of_plis() {
    const N: usize = 50;
    let mut cfg = SimConfig::new(N);
    cfg.room.bandwidth_estimation = false;
    cfg.client = Box::new(|i| {
        let mut c = ClientConfig::new(i as u32);
        c.video_slots = 3;
        c.audio_slots = 1;
        // Participant 0 talks, so everyone has it in a slot.
        c.speaking = i == 0;
        c
    });
    let mut sim = Simulator::new(cfg).unwrap();
    sim.run_until(Duration::from_secs(3));
    // Everyone caps the speaker's slot at 180p ...
    let slot_of_speaker = |sim: &Simulator, i: usize| {
        let s = sim
            .core()
            .subscriber_stats(sim.room(), pid(sim, i))
            .unwrap();
        s.slots
            .iter()
            .find(|s| s.publisher == Some(pid(sim, 0)))
            .map(|s| s.mid.clone())
            .expect("speaker in view")
    };
    for i in 1..N {
        let mid = slot_of_speaker(&sim, i);
        sim.participant_mut(i).client.send_control(
            &piazza::core::control::ClientMessage::MaxResolution {
                mid,
                height: Some(180),
            },
        );
    }
    sim.run_for(Duration::from_secs(3));
    let before = sim.participants()[0].client.stats().keyframe_requests;
    // ... then all 49 lift the cap in the same instant: all want h at once.
    for i in 1..N {
        let mid = slot_of_speaker(&sim, i);
        sim.participant_mut(i).client.send_control(
            &piazza::core::control::ClientMessage::MaxResolution { mid, height: None },
        );
    }
    sim.run_for(Duration::from_secs(2));
    let plis = sim.participants()[0].client.stats().keyframe_requests - before;
    let on_h = (1..N)
        .filter(|&i| {
            let s = sim
                .core()
                .subscriber_stats(sim.room(), pid(&sim, i))
                .unwrap();
            s.slots
                .iter()
                .any(|s| s.publisher == Some(pid(&sim, 0)) && s.current_layer == Some(Layer::HIGH))
        })
        .count();
    println!(
        "{on_h} of 49 subscribers switched to h; the publisher got {plis} keyframe requests in 2 s"
    );
    assert_eq!(on_h, N - 1);
    assert!(plis <= 6, "PLI storm: {plis} in 2 s");
}
