//! `--sfu janus --target http://127.0.0.1:8088/janus`: the same scenario
//! against Janus VideoRoom through its HTTP transport.
//!
//! A participant is two str0m peers on the same driver thread: a publisher
//! (Opus plus the 3-layer VP8 simulcast camera, offered with
//! `"rid_order": "lmh"` because str0m lists the rids low to high while
//! Janus assumes high to low) and a multistream subscriber, whose offer
//! Janus makes and the client answers ([`SimClient::answering`]). The
//! subscriber carries the meter: its m-lines are the receive slots, 9
//! video then 3 audio by default, so latency, loss, jitter, freezes and
//! first frame come from the same code as on Piazza.
//!
//! Janus has no slot allocation of its own, so the orchestrator emulates
//! Piazza's: all publishers join first, then every participant subscribes
//! to the current and most recent speakers (video at the substream that
//! `max_height` asks for, audio of the talkers); at each speaker rotation
//! a new talker not yet shown replaces the video slot whose publisher
//! spoke longest ago (`switch`, then `configure` again since a switch
//! resets the substream), and the audio slots follow the talkers.
//!
//! What differs from Piazza, stated in the report: no dynacast (publishers
//! keep sending all three layers), no bandwidth-driven layer allocation
//! (the substream is fixed), no loudest-speaker audio (the driver switches
//! audio slots itself), and Janus's log level is its own setting.
//!
//! The SFU's CPU is its process's utime + stime from `/proc/PID/stat`
//! ([`crate::run::process`]); the forwarded packets are those the
//! clients received (Janus has no process-wide counter; its per-handle
//! admin counters agreed with the clients' within 1.5 % when checked).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use piazza::sim::{ClientConfig, Link, SimClient};
use serde_json::json;

use crate::error::LoadgenError;
use crate::metrics::{EngineSample, ParticipantMeter};
use crate::run::driver::{self, ClientSocket, Command, DriverHandle, NewClient, thread_cpu_time};
use crate::run::embedded::{Gathered, client_socket, gather, link_config};
use crate::run::health::MachineWatch;
use crate::run::{ClientHealth, EngineWindow, Progress, RunOutcome, process};
use crate::scenario::Scenario;

/// Longest wait for an asynchronous VideoRoom answer (join, publish, the
/// subscriber's offer).
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Refusal messages kept for the report.
const MAX_ERRORS: usize = 10;

mod session;

use session::{Session, first_mid};

/// What the report says differs on Janus.
pub const DIFFERENCES: &str = "Janus VideoRoom: no dynacast (publishers send all three layers all the time), no bandwidth-driven layer allocation (each video slot is pinned to the substream max_height asks for), no loudest-speaker audio (the load generator switches audio and video slots to the talkers itself with switch + configure); forwarded packets are those the clients received; Janus's ingress packets and bytes out are not measured (shown as 0); CPU is the Janus process's utime+stime from /proc";

/// One participant: its publisher feed and subscription.
struct Seat {
    /// Driver keys of the publisher and subscriber peers.
    pub_key: u64,
    pub_handle: u64,
    sub_key: Option<u64>,
    driver: usize,
    publisher: u32,
    feed: u64,
    audio_mid: String,
    video_mid: String,
    join_requested: Instant,
    sub_handle: Option<u64>,
    /// Position shown in each video slot (by the slot's mid), and in each
    /// audio slot.
    video_slots: Vec<(String, usize)>,
    audio_slots: Vec<(String, usize)>,
}

struct Room {
    id: u64,
    /// Speaking order of the positions (a seeded permutation).
    order: Vec<usize>,
    seats: Vec<Option<Seat>>,
    /// Rotation in which each position last started talking.
    last_spoke: Vec<Option<usize>>,
}

/// Run the scenario against Janus at `base` (`http://127.0.0.1:8088/janus`).
pub fn run(s: &Scenario, base: &str, progress: &Progress) -> Result<RunOutcome, LoadgenError> {
    let key = std::env::var("JANUS_ADMIN_KEY").ok();
    run_with_key(s, base, progress, key.as_deref())
}

/// [`run`] with the VideoRoom `admin_key` to create rooms with (`None`:
/// Janus asks for none).
pub fn run_with_key(
    s: &Scenario,
    base: &str,
    progress: &Progress,
    admin_key: Option<&str>,
) -> Result<RunOutcome, LoadgenError> {
    let main_cpu_start = thread_cpu_time();
    let pid = match s.sfu_pid {
        Some(p) => p,
        None => process::url_port(base)
            .and_then(process::listening_pid)
            .ok_or_else(|| {
                LoadgenError::Target(format!(
                    "no process of this user listens on {base}'s port: give the SFU's pid with --sfu-pid"
                ))
            })?,
    };
    let cpu_now = || {
        process::cpu_time(pid).ok_or_else(|| {
            LoadgenError::Target(format!(
                "the SFU's process {pid} is gone (/proc/{pid}/stat)"
            ))
        })
    };
    cpu_now()?;
    let mut session = Session::open(base)?;
    let control = session.attach().map_err(LoadgenError::Target)?;
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let mut rooms = Vec::new();
    let outcome = (|| {
        for r in 0..s.rooms {
            let id = 1_000_000 + rng.u64(0..1_000_000_000) * 100 + r as u64;
            let mut body = json!({
                "request": "create", "room": id, "publishers": s.participants,
                "bitrate": 0, "audiocodec": "opus", "videocodec": "vp8",
                "description": format!("loadgen-{r}"),
            });
            if let Some(k) = &admin_key {
                body["admin_key"] = json!(k);
            }
            session
                .message(control, body, None, false)
                .map_err(|e| LoadgenError::Target(format!("creating a room: {e}")))?;
            let mut order: Vec<usize> = (0..s.participants).collect();
            rng.shuffle(&mut order);
            rooms.push(Room {
                id,
                order,
                seats: (0..s.participants).map(|_| None).collect(),
                last_spoke: vec![None; s.participants],
            });
        }
        drive(s, progress, &mut session, &mut rooms, pid, main_cpu_start)
    })();
    for room in &rooms {
        let _ = session.message(
            control,
            json!({"request": "destroy", "room": room.id, "admin_key": admin_key}),
            None,
            false,
        );
    }
    session.destroy();
    outcome
}

/// The substream a video slot asks for: the largest layer not taller than
/// `max_height` (l 180, m 360, h 720).
fn substream(s: &Scenario) -> u8 {
    match s.max_height.filter(|h| *h > 0) {
        Some(h) if h < 360 => 0,
        Some(h) if h < 720 => 1,
        _ => 2,
    }
}

struct Orchestrator<'a> {
    s: &'a Scenario,
    session: &'a mut Session,
    rooms: &'a mut [Room],
    drivers: Vec<DriverHandle>,
    epoch: Instant,
    next_key: u64,
    rotation: usize,
    join_refused: usize,
    join_errors: Vec<String>,
    refusal_reasons: std::collections::BTreeMap<String, usize>,
}

fn drive(
    s: &Scenario,
    progress: &Progress,
    session: &mut Session,
    rooms: &mut [Room],
    pid: u32,
    main_cpu_start: Duration,
) -> Result<RunOutcome, LoadgenError> {
    let t0 = Instant::now();
    let bucket = s.bucket();
    let mut machine = MachineWatch::new();
    let starve =
        (s.starve_clients_ms > 0.0).then(|| Duration::from_secs_f64(s.starve_clients_ms / 1000.0));
    let mut drivers = Vec::with_capacity(s.client_threads);
    for i in 0..s.client_threads {
        drivers.push(driver::spawn(
            i,
            driver::DriverConfig {
                epoch: t0,
                t0,
                bucket,
                starve,
                lost: None,
            },
        )?);
    }
    let mut o = Orchestrator {
        s,
        session,
        rooms,
        drivers,
        epoch: t0,
        next_key: 0,
        rotation: 0,
        join_refused: 0,
        join_errors: Vec::new(),
        refusal_reasons: Default::default(),
    };
    let end = t0 + s.duration();
    let sample = |o: &Orchestrator, now: Instant| -> Result<EngineSample, LoadgenError> {
        Ok(EngineSample {
            t: now - t0,
            forwarded: o.received(),
            rtp_in: 0,
            bytes_out: 0,
            cpu: process::cpu_time(pid)
                .ok_or_else(|| LoadgenError::Target(format!("the SFU's process {pid} is gone")))?,
            rss_bytes: process::rss_bytes(pid).unwrap_or(0),
            ..Default::default()
        })
    };
    let mut samples = vec![sample(&o, t0)?];
    let mut notes = vec![DIFFERENCES.to_string()];
    progress.message("joining");
    // Publishers first (at the join rate), then the subscriptions: a
    // subscriber offer names the feeds it carries.
    let join_interval = if s.join_rate > 0.0 {
        Duration::from_secs_f64(1.0 / s.join_rate)
    } else {
        Duration::ZERO
    };
    let plan: Vec<(usize, usize)> = (0..s.participants)
        .flat_map(|p| (0..s.rooms).map(move |r| (r, p)))
        .collect();
    let mut planned = 0;
    for (i, &(r, p)) in plan.iter().enumerate() {
        let due = t0 + join_interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if Instant::now() >= end {
            break;
        }
        planned += 1;
        if let Err(e) = o.publish(r, p) {
            o.refused(e);
        }
        o.tick_progress(progress, t0);
    }
    // Janus refuses to subscribe to a feed whose PeerConnection is not up
    // yet ("No such feed"): wait for the publishers' webrtcup.
    let publishers: Vec<u64> = o
        .rooms
        .iter()
        .flat_map(|room| room.seats.iter().flatten().map(|x| x.pub_handle))
        .collect();
    let up_by = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < up_by.min(end) && !publishers.iter().all(|h| o.session.up.contains(h)) {
        o.session.drain();
        o.tick_progress(progress, t0);
        std::thread::sleep(Duration::from_millis(20));
    }
    for &(r, p) in &plan[..planned] {
        if Instant::now() >= end {
            break;
        }
        if o.rooms[r].seats[p].is_some()
            && let Err(e) = o.subscribe(r, p)
        {
            o.refused(format!("subscribe: {e}"));
        }
        o.tick_progress(progress, t0);
    }
    let joins_done = Instant::now();
    let window_at = joins_done + s.warmup();
    let rotation_every = Duration::from_secs_f64(s.speaker_rotation_s);
    let mut next_rotation = joins_done + rotation_every;
    let mut next_sample = t0 + bucket;
    let mut next_progress = Instant::now();
    let mut window: Option<(Instant, Duration)> = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if window.is_none() && now >= window_at {
            let cpu = process::cpu_time(pid).unwrap_or_default();
            for d in &o.drivers {
                d.send(Command::StartWindow);
            }
            machine.open_window();
            window = Some((Instant::now(), cpu));
        }
        if now >= next_rotation {
            next_rotation += rotation_every;
            o.rotate();
        }
        if now >= next_sample {
            samples.push(sample(&o, now)?);
            next_sample += bucket;
            if window.is_some() {
                machine.sample();
            }
        }
        o.session.drain();
        if now >= next_progress {
            next_progress = now + PROGRESS_INTERVAL;
            o.tick_progress(progress, t0);
        }
        let mut next = end.min(next_sample).min(next_progress).min(next_rotation);
        if window.is_none() {
            next = next.min(window_at);
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
    }
    progress.message("finishing");
    let stop = Instant::now();
    for d in &o.drivers {
        d.send(Command::Stop);
    }
    let end_cpu = process::cpu_time(pid);
    let machine = machine.finish();
    let mut last = sample(&o, stop).unwrap_or_default();
    last.t = stop - t0;
    samples.push(last);
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
    // Leave: the subscribers and publishers hang up.
    for room in o.rooms.iter_mut() {
        for seat in room.seats.iter_mut().filter_map(Option::take) {
            if let Some(h) = seat.sub_handle {
                let _ = o
                    .session
                    .message(h, json!({"request": "leave"}), None, false);
            }
        }
    }
    o.session.drain();
    let (measured, engine) = match (window, end_cpu) {
        (Some((at, cpu0)), Some(cpu1)) => (
            stop - at,
            EngineWindow {
                rtp_in: 0,
                forwarded: collector.packets,
                bytes_out: 0,
                cpu: cpu1.saturating_sub(cpu0),
            },
        ),
        (None, _) => {
            notes.push(format!(
                "the measurement window never opened: joins and subscriptions took until {:.1} s and warmup is {:.1} s of a {:.1} s run; lengthen --duration",
                (joins_done - t0).as_secs_f64(),
                s.warmup_s,
                s.duration_s
            ));
            (Duration::ZERO, EngineWindow::default())
        }
        (Some(_), None) => {
            notes.push(format!("the SFU's process {pid} ended during the run"));
            (Duration::ZERO, EngineWindow::default())
        }
    };
    if o.session.hangups > 0 {
        notes.push(format!(
            "Janus hung up {} peer connections during the run",
            o.session.hangups
        ));
    }
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
        disconnects: None,
        engine,
        engine_samples: samples,
        shards: 1,
        panics: 0,
        events_dropped: 0,
        engine_send_drops: 0,
        engine_peak_rss_mb: process::peak_rss_mb(pid),
        loadgen_cpu,
        client_send_errors,
        notes,
        flood: None,
        cluster: None,
        engine_tcp: None,
    })
}

impl Orchestrator<'_> {
    fn refused(&mut self, e: String) {
        self.join_refused += 1;
        if self.join_errors.len() < MAX_ERRORS {
            self.join_errors.push(e.clone());
        }
        *self.refusal_reasons.entry(e).or_default() += 1;
    }

    /// Packets the clients received so far (the drivers' live counters).
    fn received(&self) -> u64 {
        self.drivers
            .iter()
            .map(|d| d.live.packets.load(Ordering::Relaxed))
            .sum()
    }

    fn tick_progress(&self, progress: &Progress, t0: Instant) {
        let joined: usize = self
            .drivers
            .iter()
            .map(|d| d.live.connected.load(Ordering::Relaxed))
            .sum();
        let p99 = self
            .drivers
            .iter()
            .map(|d| d.live.recent_p99_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let elapsed = t0.elapsed();
        let pps = self.received() as f64 / elapsed.as_secs_f64().max(1.0);
        progress.update(elapsed, joined, self.s.total_participants(), pps, p99);
    }

    /// Whether position `p` of room `r` talks in the current rotation.
    fn speakers(&self, r: usize) -> Vec<usize> {
        let room = &self.rooms[r];
        let n = room.order.len();
        (0..self.s.speakers.min(n))
            .map(|j| room.order[(self.rotation + j) % n])
            .collect()
    }

    /// Positions of room `r` other than `me`, talkers first, then by how
    /// recently they spoke, then in speaking order; present seats only.
    fn ranking(&self, r: usize, me: usize) -> Vec<usize> {
        let room = &self.rooms[r];
        let n = room.order.len();
        let mut out: Vec<usize> = (0..n)
            .map(|j| room.order[(self.rotation + j) % n])
            .filter(|&q| q != me && room.seats[q].is_some())
            .collect();
        let talking = self.speakers(r);
        out.sort_by_key(|q| (!talking.contains(q), std::cmp::Reverse(room.last_spoke[*q])));
        out
    }

    fn publish(&mut self, r: usize, p: usize) -> Result<(), String> {
        let s = self.s;
        let requested = Instant::now();
        let socket = client_socket().map_err(|e| format!("client socket: {e}"))?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?;
        let key = self.next_key;
        self.next_key += 2;
        let publisher = key as u32 / 2;
        let mut cfg = ClientConfig::new(publisher);
        cfg.video_slots = 0;
        cfg.audio_slots = 0;
        cfg.fps = s.fps;
        cfg.keyframe_interval = Duration::from_secs_f64(s.keyframe_interval_s);
        cfg.speaking = self.speakers(r).contains(&p);
        cfg.seed = s.seed.wrapping_mul(0x9e37_79b9).wrapping_add(key);
        let mut client = SimClient::new(cfg, addr, self.epoch, Instant::now());
        let audio_mid = first_mid(client.offer(), "audio").ok_or("no audio m-line in the offer")?;
        let video_mid = first_mid(client.offer(), "video").ok_or("no video m-line in the offer")?;
        let handle = self.session.attach()?;
        let room = self.rooms[r].id;
        let joined = self.session.message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room,
                   "display": format!("loadgen-{r}-{publisher}")}),
            None,
            true,
        )?;
        let feed = joined["id"]
            .as_u64()
            .ok_or_else(|| format!("join: no feed id in {joined}"))?;
        let answer = self.session.message(
            handle,
            json!({"request": "publish", "audiocodec": "opus", "videocodec": "vp8"}),
            Some(
                json!({"type": "offer", "sdp": client.offer(), "trickle": false,
                        "rid_order": "lmh"}),
            ),
            true,
        )?;
        let sdp = answer["jsep"]["sdp"]
            .as_str()
            .ok_or("publish: no SDP answer")?;
        client.accept_answer(sdp)?;
        let driver = (publisher as usize) % self.drivers.len();
        // The publisher's meter has no slots and is not reported.
        let meter = ParticipantMeter::new(r, publisher, requested, 0, 0, 0);
        self.drivers[driver].send(Command::Add(Box::new(NewClient {
            key,
            client,
            socket: ClientSocket::Udp(socket),
            meter,
            link: None,
            measured: false,
        })));
        self.rooms[r].seats[p] = Some(Seat {
            pub_key: key,
            pub_handle: handle,
            sub_key: None,
            driver,
            publisher,
            feed,
            audio_mid,
            video_mid,
            join_requested: requested,
            sub_handle: None,
            video_slots: Vec::new(),
            audio_slots: Vec::new(),
        });
        Ok(())
    }

    fn subscribe(&mut self, r: usize, p: usize) -> Result<(), String> {
        let s = self.s;
        let ranking = self.ranking(r, p);
        let videos: Vec<usize> = ranking.iter().copied().take(s.video_slots).collect();
        let audios: Vec<usize> = ranking.iter().copied().take(s.audio_slots).collect();
        let layer = substream(s);
        let room = &self.rooms[r];
        let seat_of = |q: usize| room.seats[q].as_ref();
        let mut streams = Vec::new();
        for &q in &videos {
            let Some(o) = seat_of(q) else { continue };
            streams.push(json!({"feed": o.feed, "mid": o.video_mid, "substream": layer}));
        }
        for &q in &audios {
            let Some(o) = seat_of(q) else { continue };
            streams.push(json!({"feed": o.feed, "mid": o.audio_mid}));
        }
        let room_id = room.id;
        let handle = self.session.attach()?;
        let attached = self.session.message(
            handle,
            json!({"request": "join", "ptype": "subscriber", "room": room_id,
                   "streams": streams}),
            None,
            true,
        )?;
        let offer = attached["jsep"]["sdp"]
            .as_str()
            .ok_or("join: no SDP offer from Janus")?;
        let socket = client_socket().map_err(|e| format!("client socket: {e}"))?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?;
        let Some(seat) = self.rooms[r].seats[p].as_ref() else {
            return Err("the publisher left".into());
        };
        let (publisher, driver, requested) = (seat.publisher, seat.driver, seat.join_requested);
        let mut cfg = ClientConfig::new(publisher);
        cfg.record_arrivals = true;
        let client = SimClient::answering(cfg, addr, self.epoch, Instant::now(), offer)?;
        // Janus's subscriber m-lines follow the streams: videos, audios.
        let slots: Vec<(String, bool)> = client
            .stats()
            .slots
            .iter()
            .map(|x| (x.mid.clone(), x.video))
            .collect();
        let n_video = slots.iter().filter(|x| x.1).count();
        let video_slots: Vec<(String, usize)> = slots
            .iter()
            .filter(|x| x.1)
            .map(|x| x.0.clone())
            .zip(videos.iter().copied())
            .collect();
        let audio_slots: Vec<(String, usize)> = slots
            .iter()
            .filter(|x| !x.1)
            .map(|x| x.0.clone())
            .zip(audios.iter().copied())
            .collect();
        self.session.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": client.offer(), "trickle": false})),
            true,
        )?;
        let meter = ParticipantMeter::new(
            r,
            publisher,
            requested,
            videos.len(),
            n_video,
            slots.len() - n_video,
        );
        let key = self.rooms[r].seats[p].as_ref().map_or(0, |x| x.pub_key) + 1;
        let link =
            link_config(s).map(|c| Link::new(c, s.seed ^ key.wrapping_mul(0x2545_f491_4f6c_dd1d)));
        self.drivers[driver].send(Command::Add(Box::new(NewClient {
            key,
            client,
            socket: ClientSocket::Udp(socket),
            meter,
            link,
            measured: true,
        })));
        if let Some(seat) = self.rooms[r].seats[p].as_mut() {
            seat.sub_key = Some(key);
            seat.sub_handle = Some(handle);
            seat.video_slots = video_slots;
            seat.audio_slots = audio_slots;
        }
        Ok(())
    }

    /// The next talker starts: publishers' audio levels follow, and every
    /// subscription switches its audio slots to the talkers and shows a
    /// talker not yet on screen in the slot of whoever spoke longest ago.
    fn rotate(&mut self) {
        self.rotation += 1;
        let layer = substream(self.s);
        for r in 0..self.rooms.len() {
            let talking = self.speakers(r);
            let n = self.rooms[r].order.len();
            for p in 0..n {
                let on = talking.contains(&p);
                if on {
                    self.rooms[r].last_spoke[p] = Some(self.rotation);
                }
                if let Some(seat) = &self.rooms[r].seats[p] {
                    self.drivers[seat.driver].send(Command::Speaking(seat.pub_key, on));
                }
            }
            for p in 0..n {
                if let Err(e) = self.resubscribe(r, p, &talking, layer)
                    && self.join_errors.len() < MAX_ERRORS
                {
                    self.join_errors.push(format!("switch: {e}"));
                }
            }
        }
    }

    fn resubscribe(
        &mut self,
        r: usize,
        p: usize,
        talking: &[usize],
        layer: u8,
    ) -> Result<(), String> {
        let ranking = self.ranking(r, p);
        let room = &self.rooms[r];
        let Some(seat) = room.seats[p].as_ref() else {
            return Ok(());
        };
        let Some(handle) = seat.sub_handle else {
            return Ok(());
        };
        let mut video = seat.video_slots.clone();
        let mut audio = seat.audio_slots.clone();
        let mut switches = Vec::new();
        let mut layers = Vec::new();
        for &t in talking.iter().filter(|&&t| t != p) {
            if video.iter().any(|(_, q)| *q == t) || room.seats[t].is_none() {
                continue;
            }
            // The slot whose publisher spoke longest ago (never: first).
            let Some(i) = (0..video.len())
                .filter(|&i| !talking.contains(&video[i].1))
                .min_by_key(|&i| room.last_spoke[video[i].1])
            else {
                continue;
            };
            let Some(o) = room.seats[t].as_ref() else {
                continue;
            };
            video[i].1 = t;
            switches.push(json!({"feed": o.feed, "mid": o.video_mid, "sub_mid": video[i].0}));
            layers.push(json!({"mid": video[i].0, "substream": layer}));
        }
        let want: Vec<usize> = ranking.into_iter().take(audio.len()).collect();
        for &q in &want {
            if audio.iter().any(|(_, x)| *x == q) {
                continue;
            }
            let Some(i) = (0..audio.len()).find(|&i| !want.contains(&audio[i].1)) else {
                continue;
            };
            let Some(o) = room.seats[q].as_ref() else {
                continue;
            };
            audio[i].1 = q;
            switches.push(json!({"feed": o.feed, "mid": o.audio_mid, "sub_mid": audio[i].0}));
        }
        if switches.is_empty() {
            return Ok(());
        }
        self.session.message(
            handle,
            json!({"request": "switch", "streams": switches}),
            None,
            false,
        )?;
        if !layers.is_empty() {
            self.session.message(
                handle,
                json!({"request": "configure", "streams": layers}),
                None,
                false,
            )?;
        }
        if let Some(seat) = self.rooms[r].seats[p].as_mut() {
            seat.video_slots = video;
            seat.audio_slots = audio;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_answers_an_sfu_offer_with_one_slot_per_m_line() {
        // A publisher's offer (sendonly Opus + simulcast VP8) stands in for
        // Janus's subscriber offer: every audio/video m-line becomes a
        // receive slot, video first as offered, and the answer receives.
        let now = Instant::now();
        let mut cfg = ClientConfig::new(1);
        cfg.video_slots = 0;
        cfg.audio_slots = 0;
        let offerer = SimClient::new(cfg, "127.0.0.1:40000".parse().unwrap(), now, now);
        let answerer = SimClient::answering(
            ClientConfig::new(2),
            "127.0.0.1:40001".parse().unwrap(),
            now,
            now,
            offerer.offer(),
        )
        .unwrap();
        let slots: Vec<bool> = answerer.stats().slots.iter().map(|s| s.video).collect();
        assert_eq!(slots, vec![false, true]);
        let answer = answerer.offer();
        assert!(answer.contains("a=recvonly"), "{answer}");
        assert!(!answer.contains("a=sendonly"), "{answer}");
        assert!(answer.contains("127.0.0.1 40001"), "{answer}");
        assert!(
            SimClient::answering(
                ClientConfig::new(3),
                "127.0.0.1:40002".parse().unwrap(),
                now,
                now,
                "not sdp"
            )
            .is_err()
        );
    }

    #[test]
    fn layer_from_max_height() {
        let mut s = Scenario::default();
        assert_eq!(substream(&s), 1);
        s.max_height = Some(180);
        assert_eq!(substream(&s), 0);
        s.max_height = None;
        assert_eq!(substream(&s), 2);
    }
}
