//! The default target: a [`piazza::Engine`] in this process (its own shard
//! threads, real UDP on 127.0.0.1) and simulated participants on their own
//! driver threads, each with its own socket.
//!
//! This thread is the orchestrator: it joins participants (the engine's
//! join preparation runs here, as it would on a signalling thread), rotates
//! speakers, churns, samples the engine's counters, opens the measurement
//! window and draws the progress line. Media never passes through it.
//!
//! The orchestrator drives a `Backend`: the embedded engine here, or an
//! external server through its HTTP API ([`crate::run::target`]); the
//! clients, the meters and the report are the same for both.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use piazza::sim::{ClientConfig, Link, SimClient};
use piazza::{Engine, EngineStats, TcpConfig};

use crate::error::LoadgenError;
use crate::metrics::{ParticipantMeter, Transport};
use crate::run::cluster::{ClusterReport, RejoinRecord, RejoinReport};
use crate::run::driver::{
    self, ClientSocket, Command, DriverHandle, Lost, NewClient, thread_cpu_time,
};
use crate::run::health::MachineWatch;
use crate::run::{ClientHealth, EngineTcp, EngineWindow, Progress, RunOutcome, flood};
use crate::scenario::Scenario;

/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// The progress line's packet rate is averaged over this long.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// Churned participants do not rejoin this close to the end of the run.
const LATE_JOIN_CUTOFF: Duration = Duration::from_secs(2);
/// Refusal messages kept for the report.
const MAX_ERRORS: usize = 10;
/// Distinct refusal messages counted; the rest are counted together.
const MAX_REASONS: usize = 20;

mod backend;
mod clients;
mod rejoin;

use backend::Embedded;
pub(crate) use backend::{Backend, Counters, MemberId};
pub(crate) use clients::{Gathered, cap_messages, client_socket, gather, link_config};
use rejoin::PendingRejoin;

struct Member {
    key: u64,
    id: MemberId,
    driver: usize,
}

struct RoomState {
    /// Participant positions; a churned position is refilled by a newcomer.
    positions: Vec<Option<Member>>,
    /// Speaking order of the positions (a seeded permutation).
    order: Vec<usize>,
    speaking: Vec<bool>,
    next_churn: Option<Instant>,
}

/// Everything the orchestrator keeps.
struct Orchestrator<'a> {
    s: &'a Scenario,
    backend: &'a mut dyn Backend,
    rooms: Vec<RoomState>,
    drivers: Vec<DriverHandle>,
    epoch: Instant,
    next_key: u64,
    rng: fastrand::Rng,
    rotation: usize,
    join_refused: usize,
    join_errors: Vec<String>,
    refusal_reasons: BTreeMap<String, usize>,
    disconnects: Option<u64>,
    /// Lost sessions reported by the drivers (`Scenario::rejoin`).
    lost: Option<crossbeam_channel::Receiver<Lost>>,
    pending_rejoins: Vec<PendingRejoin>,
    rejoins: Vec<RejoinRecord>,
}

/// Run the scenario against an embedded engine.
pub fn run(s: &Scenario, progress: &Progress) -> Result<RunOutcome, LoadgenError> {
    let main_cpu_start = thread_cpu_time();
    let mut builder = Engine::builder()
        .shards(s.shards)
        .bind(Ipv4Addr::LOCALHOST.into());
    if s.tcp_share > 0.0 {
        builder = builder.ice_tcp(Some(tcp_config(s)));
    }
    let engine = builder.build()?;
    let mut backend = Embedded {
        events: engine.events(),
        engine,
        rooms: Vec::new(),
        e2ee: s.e2ee,
    };
    drive(s, progress, &mut backend, main_cpu_start)
}

/// The embedded engine's ICE-TCP limits for a run with TCP clients: the
/// defaults, except that every simulated client connects from 127.0.0.1,
/// one source address, so the per-source limits (and the per-shard ones,
/// as all rooms may be on one shard) are raised to twice the run's TCP
/// participants (churned ones are replaced while their connection closes).
fn tcp_config(s: &Scenario) -> TcpConfig {
    let d = TcpConfig::default();
    let n = 2 * s.rooms * s.tcp_per_room();
    TcpConfig {
        max_connections: d.max_connections.max(n),
        max_pending: d.max_pending.max(n),
        max_connections_per_source: d.max_connections_per_source.max(n),
        max_pending_per_source: d.max_pending_per_source.max(n),
        ..d
    }
}

/// Run the scenario against `backend`; `main_cpu_start` is this thread's
/// CPU time when the run began.
pub(crate) fn drive(
    s: &Scenario,
    progress: &Progress,
    backend: &mut dyn Backend,
    main_cpu_start: Duration,
) -> Result<RunOutcome, LoadgenError> {
    if s.flood_pps > 0 {
        if backend.engine().is_none() {
            return Err(LoadgenError::InvalidScenario(
                "--flood-pps needs the embedded engine (it floods the shards' ports from 64 loopback addresses)".into(),
            ));
        }
        // Capture the clients' first datagrams (their STUN included) for
        // the flood's replays.
        flood::TAP.enable();
    }
    let mut flooding: Option<flood::Flood> = None;
    let mut flood_report: Option<flood::FloodReport> = None;
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let mut rooms = Vec::with_capacity(s.rooms);
    for i in 0..s.rooms {
        backend.create_room(i, s.participants)?;
        let mut order: Vec<usize> = (0..s.participants).collect();
        rng.shuffle(&mut order);
        rooms.push(RoomState {
            positions: (0..s.participants).map(|_| None).collect(),
            order,
            speaking: vec![false; s.participants],
            next_churn: None,
        });
    }

    let t0 = Instant::now();
    let epoch = t0;
    let bucket = s.bucket();
    let mut machine = MachineWatch::new();
    let starve =
        (s.starve_clients_ms > 0.0).then(|| Duration::from_secs_f64(s.starve_clients_ms / 1000.0));
    let mut drivers = Vec::with_capacity(s.client_threads);
    let (lost_tx, lost_rx) = match s.rejoin {
        true => {
            let (tx, rx) = crossbeam_channel::unbounded();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    for i in 0..s.client_threads {
        drivers.push(driver::spawn(
            i,
            driver::DriverConfig {
                epoch,
                t0,
                bucket,
                starve,
                lost: lost_tx.clone(),
            },
        )?);
    }
    drop(lost_tx);
    let disconnects = backend.disconnects();
    let mut o = Orchestrator {
        s,
        backend,
        rooms,
        drivers,
        epoch,
        next_key: 0,
        rng,
        rotation: 0,
        join_refused: 0,
        join_errors: Vec::new(),
        refusal_reasons: BTreeMap::new(),
        disconnects,
        lost: lost_rx,
        pending_rejoins: Vec::new(),
        rejoins: Vec::new(),
    };
    for r in 0..s.rooms {
        o.apply_speakers(r);
    }

    let end = t0 + s.duration();
    // Initial joins, round-robin over rooms.
    let plan: Vec<(usize, usize)> = (0..s.participants)
        .flat_map(|p| (0..s.rooms).map(move |r| (r, p)))
        .collect();
    let join_interval = if s.join_rate > 0.0 {
        Duration::from_secs_f64(1.0 / s.join_rate)
    } else {
        Duration::ZERO
    };
    let mut next_join = 0usize;
    let mut joins_done: Option<Instant> = None;
    let mut window_at: Option<Instant> = None;
    let mut window: Option<(Instant, Counters)> = None;
    let rotation_every = Duration::from_secs_f64(s.speaker_rotation_s);
    let mut next_rotation = t0 + rotation_every;
    let mut rejoins: Vec<(Instant, usize, usize)> = Vec::new();
    let mut samples = vec![o.backend.counters(false)?.sample];
    let mut next_sample = t0 + bucket;
    let mut next_progress = t0;
    // (when, packets received so far) over the last RATE_WINDOW: the
    // progress line's rate is their slope, smooth across the drivers'
    // 250 ms publishing steps.
    let mut recent: std::collections::VecDeque<(Instant, u64)> =
        std::collections::VecDeque::from([(t0, 0)]);
    let mut notes = Vec::new();
    progress.message("joining");

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Joins due now (a storm joins everyone back to back, checking
        // the clock in between so the run still ends on time).
        while next_join < plan.len() && t0 + join_interval * next_join as u32 <= Instant::now() {
            if Instant::now() >= end {
                break;
            }
            let (r, p) = plan[next_join];
            o.join(r, p);
            next_join += 1;
        }
        let now = Instant::now();
        if next_join == plan.len() && joins_done.is_none() {
            joins_done = Some(now);
            window_at = Some(now + s.warmup());
            if s.churn_per_min > 0.0 {
                let every = Duration::from_secs_f64(60.0 / s.churn_per_min);
                for (r, room) in o.rooms.iter_mut().enumerate() {
                    // Stagger rooms over one interval.
                    room.next_churn =
                        Some(now + s.warmup() + every.mul_f64((r as f64 + 0.5) / s.rooms as f64));
                }
            }
        }
        if window.is_none() && window_at.is_some_and(|w| now >= w) {
            let stats = o.backend.counters(true)?;
            for d in &o.drivers {
                d.send(Command::StartWindow);
            }
            machine.open_window();
            if s.flood_pps > 0
                && let Some(engine) = o.backend.engine()
            {
                flood_report = Some(flood::FloodReport {
                    pps: s.flood_pps,
                    drops_before_total: flood::EngineDrops::of(&engine.refresh_stats()?).total(),
                    rss_mb_at_start: flood::rss_mb(),
                    ..Default::default()
                });
                let targets = engine.shard_addrs();
                let d = Duration::from_secs_f64(s.flood_s);
                flooding = Some(flood::Flood::start(targets, s.flood_pps, d, s.seed)?);
            }
            window = Some((Instant::now(), stats));
        }
        if let (Some(f), Some(r)) = (&flooding, &mut flood_report)
            && f.is_done()
            && let Some(f) = flooding.take()
        {
            r.sent = f.finish();
            r.rss_mb_at_stop = flood::rss_mb();
        }
        if now >= next_rotation {
            next_rotation += rotation_every;
            o.rotation += 1;
            for r in 0..s.rooms {
                o.apply_speakers(r);
            }
        }
        // Churn: one leave per interval per room, and the rejoin later.
        if s.churn_per_min > 0.0 {
            let every = Duration::from_secs_f64(60.0 / s.churn_per_min);
            for r in 0..s.rooms {
                if o.rooms[r].next_churn.is_some_and(|t| now >= t) {
                    o.rooms[r].next_churn = Some(now + every);
                    if let Some(p) = o.leave_random(r) {
                        rejoins.push((now + Duration::from_secs_f64(s.rejoin_after_s), r, p));
                    }
                }
            }
        }
        o.take_lost(t0);
        o.rejoin_due(t0, end);
        let mut i = 0;
        while i < rejoins.len() {
            // No rejoin in the last seconds: it could not finish its join
            // before the end and would count as a failure.
            if now >= rejoins[i].0 && now + LATE_JOIN_CUTOFF < end {
                let (_, r, p) = rejoins.swap_remove(i);
                o.join(r, p);
            } else {
                i += 1;
            }
        }
        if now >= next_sample {
            let mut c = o.backend.counters(false)?.sample;
            c.t = now - t0;
            samples.push(c);
            next_sample += bucket;
            if window.is_some() {
                machine.sample();
            }
        }
        o.count_disconnects();
        if now >= next_progress {
            next_progress = now + PROGRESS_INTERVAL;
            let joined: usize = o
                .drivers
                .iter()
                .map(|d| d.live.connected.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            let packets: u64 = o
                .drivers
                .iter()
                .map(|d| d.live.packets.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            let p99 = o
                .drivers
                .iter()
                .map(|d| {
                    d.live
                        .recent_p99_us
                        .load(std::sync::atomic::Ordering::Relaxed)
                })
                .max()
                .unwrap_or(0);
            recent.push_back((now, packets));
            while recent.len() > 2 && now.duration_since(recent[1].0) >= RATE_WINDOW {
                recent.pop_front();
            }
            let pps = match recent.front() {
                Some(&(t, p)) if now > t => {
                    packets.saturating_sub(p) as f64 / (now - t).as_secs_f64()
                }
                _ => 0.0,
            };
            progress.update(now - t0, joined, s.total_participants(), pps, p99);
        }
        // Sleep until the next thing to do.
        let mut next = end.min(next_sample).min(next_progress).min(next_rotation);
        if next_join < plan.len() {
            next = next.min(t0 + join_interval * next_join as u32);
        }
        if let Some(w) = window_at.filter(|_| window.is_none()) {
            next = next.min(w);
        }
        for room in &o.rooms {
            if let Some(c) = room.next_churn {
                next = next.min(c);
            }
        }
        for &(t, _, _) in &rejoins {
            next = next.min(t);
        }
        for p in &o.pending_rejoins {
            next = next.min(p.next_try);
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
    }

    progress.message("finishing");
    if let (Some(f), Some(r)) = (flooding.take(), &mut flood_report) {
        r.sent = f.finish();
        r.rss_mb_at_stop = flood::rss_mb();
    }
    // The clients stop and the engine's counters are read together.
    let stop = Instant::now();
    for d in &o.drivers {
        d.send(Command::Stop);
    }
    let end_stats = o.backend.counters(true)?;
    let machine = machine.finish();
    if let Some(r) = &mut flood_report
        && let Some(engine) = o.backend.engine()
    {
        r.engine_drops = flood::EngineDrops::of(&engine.refresh_stats()?);
        r.rss_mb_at_end = flood::rss_mb();
    }
    let mut last = end_stats.sample;
    last.t = stop - t0;
    samples.push(last);
    let (measured, engine_window) = match &window {
        Some((at, start)) => {
            let a = start.sample;
            let b = end_stats.sample;
            (
                stop - *at,
                EngineWindow {
                    rtp_in: b.rtp_in.saturating_sub(a.rtp_in),
                    forwarded: b.forwarded.saturating_sub(a.forwarded),
                    bytes_out: b.bytes_out.saturating_sub(a.bytes_out),
                    cpu: b.cpu.saturating_sub(a.cpu),
                },
            )
        }
        None => {
            notes.push(format!(
                "the measurement window never opened: joins took until {:.1} s and warmup is {:.1} s of a {:.1} s run; lengthen --duration",
                joins_done.map_or(s.duration_s, |j| (j - t0).as_secs_f64()),
                s.warmup_s,
                s.duration_s
            ));
            (Duration::ZERO, EngineWindow::default())
        }
    };

    let drivers = std::mem::take(&mut o.drivers);
    let Gathered {
        collector,
        totals,
        participants,
        loadgen_cpu,
        client_send_errors,
        lateness,
        thread_cores,
    } = gather(drivers, t0, bucket, main_cpu_start, &mut notes);
    let peak_rss_mb = o.backend.peak_rss_mb();
    let nodes = o.backend.nodes(measured);
    let cluster = if nodes.is_some() || s.rejoin {
        let mut sessions = std::mem::take(&mut o.rejoins);
        for p in std::mem::take(&mut o.pending_rejoins) {
            let mut r = p.record;
            r.error
                .get_or_insert_with(|| "the run ended before it rejoined".into());
            sessions.push(r);
        }
        Some(ClusterReport {
            nodes: nodes.unwrap_or_default(),
            rejoins: s.rejoin.then(|| RejoinReport::new(sessions, &participants)),
        })
    } else {
        None
    };
    if o.backend.leave_at_end() {
        for (r, room) in o.rooms.iter_mut().enumerate() {
            for m in room.positions.iter_mut().filter_map(Option::take) {
                // Best effort: the server also times silent participants out.
                let _ = o.backend.leave(r, &m.id);
            }
        }
    }
    o.backend.close();
    o.count_disconnects();
    let shards = o.backend.shards();
    Ok(RunOutcome {
        measured,
        elapsed: stop - t0,
        collector,
        totals,
        participants,
        join_refused: o.join_refused,
        join_errors: o.join_errors,
        refusal_reasons: o.refusal_reasons,
        planned_joins: plan.len(),
        health: Some(ClientHealth {
            lateness,
            thread_cores,
            machine,
        }),
        disconnects: o.disconnects,
        engine: engine_window,
        engine_samples: samples,
        shards,
        panics: end_stats.panics,
        events_dropped: end_stats.events_dropped,
        engine_send_drops: end_stats.send_drops,
        engine_peak_rss_mb: peak_rss_mb,
        flood: flood_report,
        cluster,
        engine_tcp: end_stats.tcp.map(|end| EngineTcp {
            window_start: window.as_ref().and_then(|(_, w)| w.tcp),
            end,
        }),
        loadgen_cpu,
        client_send_errors,
        notes,
    })
}

impl Orchestrator<'_> {
    fn count_disconnects(&mut self) {
        if let (Some(total), Some(new)) = (self.disconnects.as_mut(), self.backend.disconnects()) {
            *total += new;
        }
    }

    /// Set who talks in room `r` for the current rotation.
    fn apply_speakers(&mut self, r: usize) {
        let n = self.s.participants;
        let room = &mut self.rooms[r];
        let mut want = vec![false; n];
        for j in 0..self.s.speakers {
            want[room.order[(self.rotation + j) % n]] = true;
        }
        for (p, &on) in want.iter().enumerate() {
            if on != room.speaking[p] {
                room.speaking[p] = on;
                if let Some(m) = &room.positions[p] {
                    self.drivers[m.driver].send(Command::Speaking(m.key, on));
                }
            }
        }
    }

    /// Join a new participant at position `p` of room `r`.
    fn join(&mut self, r: usize, p: usize) {
        match self.try_join(r, p) {
            Ok(()) => {}
            Err(e) => {
                self.join_refused += 1;
                if self.join_errors.len() < MAX_ERRORS {
                    self.join_errors.push(e.clone());
                }
                if self.refusal_reasons.len() < MAX_REASONS || self.refusal_reasons.contains_key(&e)
                {
                    *self.refusal_reasons.entry(e).or_default() += 1;
                } else {
                    *self
                        .refusal_reasons
                        .entry("other refusals (too many distinct messages)".into())
                        .or_default() += 1;
                }
            }
        }
    }

    fn try_join(&mut self, r: usize, p: usize) -> Result<(), String> {
        self.join_as(r, p, None).map(|_| ()).map_err(|(_, e)| e)
    }

    /// Join a participant at position `p` of room `r`: a newcomer, or with
    /// `rejoin` a lost session coming back (its participant token). The
    /// node the join went through when the backend says, and the new
    /// participant's publisher number.
    fn join_as(
        &mut self,
        r: usize,
        p: usize,
        rejoin: Option<&MemberId>,
    ) -> Result<(Option<String>, u32), (bool, String)> {
        let s = self.s;
        let tcp = s.tcp_at(p);
        let key = self.next_key;
        self.next_key += 1;
        let publisher = key as u32;
        let mut cfg = ClientConfig::new(publisher);
        cfg.video_slots = s.video_slots;
        cfg.audio_slots = s.audio_slots;
        cfg.fps = s.fps;
        cfg.keyframe_interval = Duration::from_secs_f64(s.keyframe_interval_s);
        cfg.record_arrivals = true;
        cfg.speaking = self.rooms[r].speaking[p];
        cfg.e2ee = s.e2ee;
        cfg.seed = s.seed.wrapping_mul(0x9e37_79b9).wrapping_add(key);
        let (mut client, socket) = if tcp {
            // An active TCP candidate only; the connection opens on the
            // first send, to the engine's passive candidate.
            let (client, link) = SimClient::on_tcp(cfg, self.epoch);
            (client, ClientSocket::Tcp(link))
        } else {
            let socket = client_socket().map_err(|e| (false, format!("client socket: {e}")))?;
            let addr = socket.local_addr().map_err(|e| (false, e.to_string()))?;
            let client = SimClient::new(cfg, addr, self.epoch, Instant::now());
            (client, ClientSocket::Udp(socket))
        };
        // Queued until the control channel opens.
        for m in cap_messages(&client, s) {
            client.send_control(&m);
        }
        let present = self.rooms[r].positions.iter().flatten().count();
        let requested = Instant::now();
        let name = format!("loadgen-{r}-{publisher}");
        let (answer, id, via) = match rejoin {
            None => self
                .backend
                .join(r, client.offer(), &name)
                .map(|(a, id)| (a, id, None))
                .map_err(|e| (false, e))?,
            Some(member) => self.backend.rejoin(r, client.offer(), &name, member)?,
        };
        client.accept_answer(&answer).map_err(|e| (false, e))?;
        let meter = ParticipantMeter::new(
            r,
            publisher,
            requested,
            present,
            s.video_slots,
            s.audio_slots,
        )
        .with_transport(if tcp { Transport::Tcp } else { Transport::Udp });
        let link =
            link_config(s).map(|c| Link::new(c, s.seed ^ key.wrapping_mul(0x2545_f491_4f6c_dd1d)));
        let driver = (key as usize) % self.drivers.len();
        self.drivers[driver].send(Command::Add(Box::new(NewClient {
            key,
            client,
            socket,
            meter,
            link,
            measured: true,
        })));
        self.rooms[r].positions[p] = Some(Member { key, id, driver });
        Ok((via, publisher))
    }

    /// A random present participant of room `r` leaves; returns its position.
    fn leave_random(&mut self, r: usize) -> Option<usize> {
        let present: Vec<usize> = (0..self.s.participants)
            .filter(|&p| self.rooms[r].positions[p].is_some())
            .collect();
        if present.is_empty() {
            return None;
        }
        let p = present[self.rng.usize(..present.len())];
        let m = self.rooms[r].positions[p].take()?;
        // The engine first (it stops forwarding), then the client.
        if let Err(e) = self.backend.leave(r, &m.id)
            && self.join_errors.len() < MAX_ERRORS
        {
            self.join_errors.push(format!("leave: {e}"));
        }
        self.drivers[m.driver].send(Command::Remove(m.key));
        Some(p)
    }
}

/// The engine's counters summed over shards.
fn counters(stats: &EngineStats) -> Counters {
    let mut x = Counters::default();
    for sh in &stats.shards {
        x.sample.forwarded += sh.core.rtp_forwarded;
        x.sample.rtp_in += sh.core.rtp_in;
        x.sample.bytes_out += sh.core.bytes_out;
        x.sample.cpu += sh.cpu_time;
        x.panics += sh.panics;
        x.events_dropped += sh.events_dropped;
        x.send_drops += sh.socket.send_errors + sh.socket.send_would_block;
        x.sample.add_shard_latency(sh);
    }
    x.tcp = crate::run::TcpCounters::of(stats);
    // This process: the engine and the clients together.
    x.sample.rss_bytes = crate::run::process::rss_bytes(std::process::id()).unwrap_or(0);
    x.sample.heap_bytes = piazza::server::process_heap_bytes().unwrap_or(0);
    x
}
