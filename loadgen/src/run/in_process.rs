//! `--in-process`: the engine's simulator (no sockets, virtual time, the
//! same `ShardCore` the shard threads drive). Time only advances to the next
//! packet or timer, so the run measures the core's pure CPU cost per packet
//! ([`piazza::sim::Simulator::core_busy`]) with nothing else competing.
//!
//! Rooms are simulated one after another (each simulator holds one room)
//! and their counters added, as if they had run side by side. Latency is
//! virtual: the links' delays (at least 1 ms each way) and nothing else.

use std::time::Duration;

use piazza::sim::{ClientConfig, LinkConfig, SimConfig, Simulator};
use piazza::{EngineEvent, LeaveReason};

use crate::error::LoadgenError;
use crate::metrics::{Collector, EngineSample, MediaTotals, ParticipantMeter, PauseWatch};
use crate::run::driver::thread_cpu_time;
use crate::run::{EngineWindow, Progress, RunOutcome};
use crate::scenario::Scenario;

/// Virtual time advanced between two looks at the clients.
const STEP: Duration = Duration::from_millis(20);
/// The shortest link delay the simulator is given (a zero-delay link makes
/// it take many zero-length steps).
const MIN_DELAY: Duration = Duration::from_millis(1);

/// Run the scenario in the simulator.
pub fn run(s: &Scenario, progress: &Progress) -> Result<RunOutcome, LoadgenError> {
    let cpu_start = thread_cpu_time();
    let bucket = s.bucket();
    let mut total = RoomTotals::default();
    let mut collector: Option<Collector> = None;
    let mut samples: Vec<EngineSample> = Vec::new();
    for r in 0..s.rooms {
        let room = run_room(s, r, progress)?;
        match &mut collector {
            None => collector = Some(room.collector.clone()),
            Some(c) => c.merge(&room.collector),
        }
        // Rooms ran one after another but stand for rooms side by side:
        // add their samples bucket by bucket.
        for (i, x) in room.samples.iter().enumerate() {
            match samples.get_mut(i) {
                Some(y) => {
                    y.forwarded += x.forwarded;
                    y.rtp_in += x.rtp_in;
                    y.bytes_out += x.bytes_out;
                    y.cpu += x.cpu;
                }
                None => samples.push(*x),
            }
        }
        total.add(room);
    }
    let collector = collector.unwrap_or_else(|| Collector::new(std::time::Instant::now(), bucket));
    let loadgen_cpu = thread_cpu_time()
        .saturating_sub(cpu_start)
        .saturating_sub(total.engine.cpu);
    total
        .participants
        .sort_by(|a, b| a.join_at_s.total_cmp(&b.join_at_s));
    Ok(RunOutcome {
        measured: total.measured,
        elapsed: s.duration(),
        collector,
        totals: total.totals,
        participants: total.participants,
        join_refused: total.join_refused,
        refusal_reasons: total
            .join_errors
            .iter()
            .fold(Default::default(), |mut m: std::collections::BTreeMap<String, usize>, e| {
                *m.entry(e.clone()).or_default() += 1;
                m
            }),
        join_errors: total.join_errors,
        planned_joins: s.total_participants(),
        health: None,
        disconnects: Some(total.disconnects),
        engine: total.engine,
        engine_samples: samples,
        shards: 1,
        panics: 0,
        events_dropped: 0,
        engine_send_drops: 0,
        engine_peak_rss_mb: None,
        loadgen_cpu,
        client_send_errors: 0,
        notes: vec![
            "in-process: virtual time; latency is the simulated link delay only; engine cpu_s is the real time spent inside the shard core".into(),
        ],
        flood: None,
        cluster: None,
        engine_tcp: None,
    })
}

#[derive(Default)]
struct RoomTotals {
    measured: Duration,
    totals: MediaTotals,
    participants: Vec<crate::metrics::ParticipantResult>,
    join_refused: usize,
    join_errors: Vec<String>,
    disconnects: u64,
    engine: EngineWindow,
}

impl RoomTotals {
    fn add(&mut self, r: RoomRun) {
        // Every room has the same window length.
        self.measured = r.measured;
        self.totals.merge(&r.totals);
        self.participants.extend(r.participants);
        self.join_refused += r.join_refused;
        self.join_errors.extend(r.join_errors);
        self.disconnects += r.disconnects;
        self.engine.rtp_in += r.engine.rtp_in;
        self.engine.forwarded += r.engine.forwarded;
        self.engine.bytes_out += r.engine.bytes_out;
        self.engine.cpu += r.engine.cpu;
    }
}

struct RoomRun {
    measured: Duration,
    collector: Collector,
    totals: MediaTotals,
    participants: Vec<crate::metrics::ParticipantResult>,
    join_refused: usize,
    join_errors: Vec<String>,
    disconnects: u64,
    engine: EngineWindow,
    samples: Vec<EngineSample>,
}

fn run_room(s: &Scenario, room: usize, progress: &Progress) -> Result<RoomRun, LoadgenError> {
    let n = s.participants;
    let mut cfg = SimConfig::new(n);
    cfg.seed = s.seed.wrapping_add(room as u64);
    cfg.room.max_participants = n;
    cfg.join_spacing = if s.join_rate > 0.0 {
        // The rate is over all rooms.
        Duration::from_secs_f64(s.rooms as f64 / s.join_rate)
    } else {
        Duration::ZERO
    };
    let (vs, audio_slots, fps) = (s.video_slots, s.audio_slots, s.fps);
    let keyframe_interval = Duration::from_secs_f64(s.keyframe_interval_s);
    let seed = s.seed;
    cfg.client = Box::new(move |i| {
        let mut c = ClientConfig::new(i as u32);
        c.video_slots = vs;
        c.audio_slots = audio_slots;
        c.fps = fps;
        c.keyframe_interval = keyframe_interval;
        c.record_arrivals = true;
        c.seed = seed.wrapping_mul(0x9e37_79b9).wrapping_add(i as u64);
        c
    });
    cfg.uplink = LinkConfig {
        delay: MIN_DELAY,
        ..Default::default()
    };
    cfg.downlink = LinkConfig {
        delay: Duration::from_secs_f64(s.delay_ms / 1000.0).max(MIN_DELAY),
        jitter: Duration::from_secs_f64(s.delay_jitter_ms / 1000.0),
        loss: s.loss,
        rate_bps: s.downlink_kbps.map(|k| k * 1000),
        queue_limit: Duration::from_millis(250),
        burst_bytes: 0,
    };
    let spacing = cfg.join_spacing;
    let mut sim = Simulator::new(cfg)?;
    let t0 = sim.start();
    let bucket = s.bucket();
    let mut collector = Collector::new(t0, bucket);
    let mut meters: Vec<ParticipantMeter> = Vec::with_capacity(n);
    let mut watches: Vec<PauseWatch> = Vec::with_capacity(n);
    let mut arrivals = Vec::new();
    let mut order: Vec<usize> = (0..n).collect();
    fastrand::Rng::with_seed(s.seed.wrapping_add(room as u64)).shuffle(&mut order);
    let rotation_every = Duration::from_secs_f64(s.speaker_rotation_s);
    let mut rotation = 0usize;
    let mut next_rotation = rotation_every;
    let window_at = spacing * (n as u32 - 1) + s.warmup();
    let mut window: Option<(std::time::Instant, Duration, piazza::core::CoreStats)> = None;
    let mut samples = vec![EngineSample::default()];
    let mut next_sample = bucket;
    let speaking =
        |rotation: usize, i: usize| (0..s.speakers).any(|j| order[(rotation + j) % n] == i);

    while sim.elapsed() < s.duration() {
        let to = (sim.elapsed() + STEP).min(s.duration());
        sim.run_until(to);
        // Newly joined participants get a meter (and a voice if due).
        while meters.len() < sim.participants().len() {
            let i = meters.len();
            let joined_at = sim.participants()[i].joined_at;
            let mut m =
                ParticipantMeter::new(room, i as u32, joined_at, i, s.video_slots, s.audio_slots);
            if let Some((at, _, _)) = window {
                m.start_window(at);
            }
            meters.push(m);
            watches.push(PauseWatch::default());
            let talk = speaking(rotation, i);
            let client = &mut sim.participant_mut(i).client;
            client.set_speaking(talk);
            for m in crate::run::embedded::cap_messages(client, s) {
                client.send_control(&m);
            }
        }
        let now = sim.now();
        for (i, (m, w)) in meters.iter_mut().zip(&mut watches).enumerate() {
            let c = &mut sim.participant_mut(i).client;
            c.take_arrivals(&mut arrivals);
            drop(c.take_latencies());
            for a in arrivals.drain(..) {
                m.on_arrival(&a, t0, &mut collector);
            }
            w.update(c, m, now);
        }
        let elapsed = sim.elapsed();
        if window.is_none() && elapsed >= window_at {
            let now = sim.now();
            for m in &mut meters {
                m.start_window(now);
            }
            window = Some((now, sim.core_busy(), sim.core().stats()));
        }
        if elapsed >= next_rotation {
            next_rotation += rotation_every;
            rotation += 1;
            for i in 0..meters.len() {
                let talk = speaking(rotation, i);
                sim.participant_mut(i).client.set_speaking(talk);
            }
        }
        if elapsed >= next_sample {
            let st = sim.core().stats();
            samples.push(EngineSample {
                t: elapsed,
                forwarded: st.rtp_forwarded,
                rtp_in: st.rtp_in,
                bytes_out: st.bytes_out,
                cpu: sim.core_busy(),
                ..Default::default()
            });
            next_sample += bucket;
        }
        progress.update(
            elapsed,
            sim.participants()
                .iter()
                .filter(|p| p.client.connected_at().is_some())
                .count(),
            n,
            0.0,
            0,
        );
        progress.message(&format!(
            "room {}/{}: simulated {:.1} of {:.1} s",
            room + 1,
            s.rooms,
            elapsed.as_secs_f64(),
            s.duration_s
        ));
    }

    let st = sim.core().stats();
    samples.push(EngineSample {
        t: sim.elapsed(),
        forwarded: st.rtp_forwarded,
        rtp_in: st.rtp_in,
        bytes_out: st.bytes_out,
        cpu: sim.core_busy(),
        ..Default::default()
    });
    let (measured, engine) = match window {
        Some((at, busy, start)) => (
            sim.now() - at,
            EngineWindow {
                rtp_in: st.rtp_in - start.rtp_in,
                forwarded: st.rtp_forwarded - start.rtp_forwarded,
                bytes_out: st.bytes_out - start.bytes_out,
                cpu: sim.core_busy().saturating_sub(busy),
            },
        ),
        None => (Duration::ZERO, EngineWindow::default()),
    };
    let mut totals = MediaTotals::default();
    let mut participants = Vec::with_capacity(meters.len());
    let end = sim.now();
    for (i, m) in meters.iter_mut().enumerate() {
        m.add_totals(end, &mut totals);
        totals.add_e2ee(sim.participants()[i].client.stats());
        participants.push(m.result(sim.participants()[i].client.connected_at(), t0));
    }
    let disconnects = sim
        .events()
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                EngineEvent::ParticipantLeft {
                    reason: LeaveReason::Disconnected | LeaveReason::Timeout,
                    ..
                }
            )
        })
        .count() as u64;
    Ok(RoomRun {
        measured,
        collector,
        totals,
        participants,
        join_refused: sim.join_failures().len(),
        join_errors: sim
            .join_failures()
            .iter()
            .take(10)
            .map(|e| e.to_string())
            .collect(),
        disconnects,
        engine,
        samples,
    })
}
