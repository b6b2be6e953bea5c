//! A grid on narrow downlinks (simulator, virtual time, seeded): the load
//! generator's `--participants 20 --downlink-kbps 800` room. Twenty
//! people, nine video slots (capped at 360p) and three audio slots each,
//! two speakers at a time moving through the room every 2 s, every
//! downlink limited to 800 kbit/s.
//!
//! What the link allows: 800 kbit/s less three audio streams leaves room
//! for the speaker on `m` and nothing else, or four tiles on `l`. A new
//! speaker then has to take a tile from someone; issue 14's rule is that
//! this must not become a pause of one slot and a resume of another every
//! time the speaker changes ("at most one pause per slot per minute after
//! the first 5 s").

use std::collections::HashMap;
use std::time::Duration;

use piazza::ForwardLatency;
use piazza::core::control::ClientMessage;
use piazza::sim::{ClientConfig, LinkConfig, SimConfig, Simulator};

const N: usize = 20;

fn grid(seed: u64) -> Simulator {
    let mut cfg = SimConfig::new(N);
    cfg.seed = seed;
    cfg.downlink = LinkConfig {
        rate_bps: Some(800_000),
        ..Default::default()
    };
    cfg.client = Box::new(|i| {
        let mut c = ClientConfig::new(i as u32);
        c.video_slots = 9;
        c.audio_slots = 3;
        c.speaking = false;
        c
    });
    Simulator::new(cfg).expect("simulator")
}

/// Per subscriber and slot: pauses begun (after `from`) and paused time.
#[derive(Default)]
struct Tally {
    paused: HashMap<(usize, String), bool>,
    pauses_after: HashMap<(usize, String), u32>,
    paused_samples: u64,
    samples: u64,
}

impl Tally {
    fn sample(&mut self, sim: &Simulator, counting: bool) {
        for i in 0..N {
            let Some(pid) = sim.participants()[i].id else {
                continue;
            };
            let Some(s) = sim.core().subscriber_stats(sim.room(), pid) else {
                continue;
            };
            for slot in &s.slots {
                let key = (i, slot.mid.clone());
                let was = self.paused.insert(key.clone(), slot.bandwidth_paused);
                if counting {
                    self.samples += 1;
                    if slot.bandwidth_paused {
                        self.paused_samples += 1;
                        if was == Some(false) {
                            *self.pauses_after.entry(key).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
}

/// Every downlink's queueing delays, merged, and tail drops, summed.
fn queueing(sim: &Simulator) -> (ForwardLatency, u64) {
    let mut delays = ForwardLatency::default();
    let mut drops = 0;
    for p in sim.participants() {
        delays.merge(&p.downlink.stats.queue_delays);
        drops += p.downlink.stats.queue_drops;
    }
    (delays, drops)
}

/// Per participant: video frames completed, audio packets received,
/// freezes, over all its slots.
fn reception(sim: &Simulator) -> Vec<(u64, u64, u64)> {
    sim.participants()
        .iter()
        .map(|p| {
            let slots = &p.client.stats().slots;
            (
                slots.iter().filter(|s| s.video).map(|s| s.frames).sum(),
                slots.iter().filter(|s| !s.video).map(|s| s.packets).sum(),
                slots.iter().map(|s| s.freezes).sum(),
            )
        })
        .collect()
}

#[test]
fn a_new_speaker_takes_a_shown_tile_instead_of_pausing_one() {
    let mut sim = grid(21);
    // Every client caps its video slots at 360p, as the load generator's
    // default does.
    sim.run_until(Duration::from_secs(2));
    for i in 0..N {
        let mids: Vec<String> = sim.participants()[i]
            .client
            .stats()
            .slots
            .iter()
            .filter(|s| s.video)
            .map(|s| s.mid.clone())
            .collect();
        for mid in mids {
            sim.participant_mut(i)
                .client
                .send_control(&ClientMessage::MaxResolution {
                    mid,
                    height: Some(360),
                });
        }
    }
    let mut tally = Tally::default();
    let rotation = Duration::from_secs(2);
    let end = Duration::from_secs(65);
    let counting_from = Duration::from_secs(15);
    let mut at_window: Option<Vec<(u64, u64, u64)>> = None;
    let mut queue_at_window = None;
    let mut latency = ForwardLatency::default();
    let mut next_rotation = Duration::ZERO;
    let mut rot = 0usize;
    while sim.elapsed() < end {
        if sim.elapsed() >= next_rotation {
            for i in 0..N {
                let on = i == rot % N || i == (rot + 1) % N;
                sim.participant_mut(i).client.set_speaking(on);
            }
            rot += 1;
            next_rotation += rotation;
        }
        sim.run_for(Duration::from_millis(100));
        tally.sample(&sim, sim.elapsed() > counting_from);
        for i in 0..N {
            let l = sim.participant_mut(i).client.take_latencies();
            if sim.elapsed() > counting_from {
                for us in l {
                    latency.record(Duration::from_micros(u64::from(us)));
                }
            }
        }
        if at_window.is_none() && sim.elapsed() > counting_from {
            at_window = Some(reception(&sim));
            queue_at_window = Some(queueing(&sim));
        }
    }
    let before = at_window.expect("the window opened");
    let after = reception(&sim);
    for i in 0..N {
        let (frames, audio, freezes) = (
            after[i].0 - before[i].0,
            after[i].1 - before[i].1,
            after[i].2 - before[i].2,
        );
        assert!(frames > 0, "subscriber {i} saw no video");
        assert!(audio > 0, "subscriber {i} heard nothing");
        assert_eq!(freezes, 0, "subscriber {i} froze");
    }
    let (start, start_drops) = queue_at_window.expect("the window opened");
    let (queued, drops) = queueing(&sim);
    let (queued, drops) = (queued.since(&start), drops - start_drops);
    let q = |h: &ForwardLatency, q: f64| h.quantile(q).unwrap_or_default();
    println!(
        "downlink queueing delay over the window: p50 {:?}, p99 {:?}, p99.9 {:?}, {drops} tail drops",
        q(&queued, 0.5),
        q(&queued, 0.99),
        q(&queued, 0.999),
    );
    let p99 = q(&latency, 0.99);
    println!(
        "one-way latency over the window: p50 {:?}, p99 {p99:?}, p99.9 {:?} ({} packets)",
        q(&latency, 0.5),
        q(&latency, 0.999),
        latency.count()
    );
    let window_min = (end - counting_from).as_secs_f64() / 60.0;
    let most = tally.pauses_after.values().copied().max().unwrap_or(0);
    let total: u32 = tally.pauses_after.values().sum();
    let share = tally.paused_samples as f64 / tally.samples.max(1) as f64;
    println!(
        "{N} people, 800 kbit/s downlinks, {:.1} min counted: {total} pauses, at most {most} for one slot; paused slot-time {:.1} %",
        window_min,
        share * 100.0
    );
    assert!(
        f64::from(most) <= window_min.ceil(),
        "a slot paused {most} times in {window_min:.1} min"
    );
    // Issue 14's latency goal for this room. The simulator's engine costs
    // no time, so this is the queues alone: str0m's pacer and the link's.
    // At a pacing factor of 2.5 the link's queue reached 270 ms at p99.
    assert!(
        p99 < Duration::from_millis(150),
        "one-way latency p99 {p99:?} (goal under 150 ms)"
    );
    assert_eq!(drops, 0, "the downlinks tail-dropped");
}
