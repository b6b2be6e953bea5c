//! What a run does: the scenario, from defaults, a TOML file and flags (in
//! that order of precedence). The same struct is echoed in the JSON report.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LoadgenError;

/// Where the simulated participants connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// An [`piazza::Engine`] in this process: its own shard threads, real UDP
    /// on 127.0.0.1.
    #[default]
    Embedded,
    /// The in-process simulator: no sockets, virtual time; measures the
    /// engine core's pure CPU cost per packet.
    InProcess,
    /// An external Piazza server through its HTTP API (`target`).
    Target,
}

/// Which SFU an external target (`--target`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sfu {
    /// Piazza's reference server (its HTTP API, docs/api.md).
    #[default]
    Piazza,
    /// Janus VideoRoom through the Janus HTTP transport (`run::janus`).
    Janus,
}

impl Sfu {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Sfu::Piazza => "piazza",
            Sfu::Janus => "janus",
        }
    }
}

/// A load test scenario. Every field has a default; see `docs/loadgen.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Where the participants connect.
    pub mode: Mode,
    /// Base URL of an external server (mode `target`); for a Piazza
    /// cluster, the nodes' base URLs separated by commas: rooms are created
    /// and participants join through each node in turn.
    pub target: Option<String>,
    /// Which SFU the target is (mode `target`).
    pub sfu: Sfu,
    /// The SFU's process id, whose CPU time (`/proc/PID/stat` utime +
    /// stime) is the engine CPU of the report (mode `target`); `None`: the
    /// process listening on the target's TCP port.
    pub sfu_pid: Option<u32>,
    /// An existing room's invite link (`http://HOST:PORT/r/ROOM#t=TOKEN`):
    /// the participants join that room (mode `target`, one room) instead of
    /// creating their own, and leave it at the end.
    pub invite: Option<String>,
    /// Rooms, all running at once.
    pub rooms: usize,
    /// Participants per room (each publishes and subscribes).
    pub participants: usize,
    /// Length of the whole run, seconds, joins included. The run stops by
    /// itself at this time.
    pub duration_s: f64,
    /// Settling time after the initial joins before the measurement window
    /// opens (latency, loss, jitter, freezes, packet rates, CPU), seconds.
    pub warmup_s: f64,
    /// Engine shards (threads with their own UDP socket).
    pub shards: usize,
    /// Threads driving the simulated clients.
    pub client_threads: usize,
    /// Participants talking at once in each room.
    pub speakers: usize,
    /// Every this many seconds one talker stops and the next starts.
    pub speaker_rotation_s: f64,
    /// Receive slots for video per participant.
    pub video_slots: usize,
    /// Receive slots for audio per participant.
    pub audio_slots: usize,
    /// Tallest frame each video slot asks for (the control channel's
    /// `max_resolution`), pixels; `None` or 0 asks for no cap. The default 360
    /// is a 3x3 grid's tile: the engine forwards the `m` layer at most.
    pub max_height: Option<u32>,
    /// Initial joins per second over all rooms; 0 joins everyone at once
    /// (a storm, as fast as the engine answers).
    pub join_rate: f64,
    /// Leaves per minute in each room during the run; each leaver rejoins
    /// as a new participant after `rejoin_after_s`.
    pub churn_per_min: f64,
    /// Delay before a churned participant rejoins, seconds.
    pub rejoin_after_s: f64,
    /// A participant whose session is lost (nothing received for 3 s, its
    /// ICE agent gave up, or the server said `closing` for a stopping node
    /// or a moved room) rejoins with its participant token through a node
    /// of the target, as the browser client does, retrying `503`s for up
    /// to a minute; the report's `cluster.rejoins` says how long it took.
    /// A Piazza `target` only.
    pub rejoin: bool,
    /// Per-subscriber downlink cap, kbit/s (applied in the client's receive path).
    pub downlink_kbps: Option<u64>,
    /// Random loss on each client's receive path, 0..1.
    pub loss: f64,
    /// Extra one-way delay on each client's receive path, milliseconds.
    pub delay_ms: f64,
    /// Extra random delay, uniform in 0..this, on top of `delay_ms`.
    pub delay_jitter_ms: f64,
    /// Camera frame rate.
    pub fps: u32,
    /// Periodic keyframe interval of the publishers (besides PLI), seconds.
    pub keyframe_interval_s: f64,
    /// Seed of every random choice (speaker order, churn, impairment).
    pub seed: u64,
    /// SLO thresholds (`p99_ms=5,loss=0.001,freezes=0`); see [`crate::slo`].
    pub slo: Option<String>,
    /// End-to-end encrypted rooms (`docs/e2ee.md`): the room is created
    /// with E2EE on and every client encrypts its frames SFrame-style after
    /// the clear VP8 header bytes, as the browser client does, and decrypts
    /// what it receives. Embedded target only.
    pub e2ee: bool,
    /// Hostile datagrams per second sent at the shard ports while the room
    /// runs (0: none); see `run::flood`. Embedded target only.
    pub flood_pps: u64,
    /// How long the flood lasts from the start of the measurement window,
    /// seconds.
    pub flood_s: f64,
    /// Share of each room's participants that reach the engine over ICE-TCP
    /// (RFC 6544 active candidate to the engine's passive one, RFC 4571
    /// framing on a real loopback connection) instead of UDP, 0..=1: in
    /// each room, `floor(tcp_share * participants)` positions spread
    /// evenly over the room (a churned participant's successor keeps the
    /// position's transport). Anything above 0 builds the embedded engine
    /// with ICE-TCP on. Embedded target only.
    pub tcp_share: f64,
    /// Test hook for the validity check: every client thread sleeps this
    /// many milliseconds in every 200 ms of the measurement window, so the
    /// clients fall behind their media schedule on purpose (0: never).
    pub starve_clients_ms: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            mode: Mode::Embedded,
            target: None,
            sfu: Sfu::Piazza,
            sfu_pid: None,
            invite: None,
            rooms: 1,
            participants: 50,
            duration_s: 20.0,
            warmup_s: 2.0,
            shards: 2,
            client_threads: 1,
            speakers: 2,
            speaker_rotation_s: 2.0,
            video_slots: 9,
            audio_slots: 3,
            max_height: Some(360),
            join_rate: 0.0,
            churn_per_min: 0.0,
            rejoin_after_s: 1.0,
            rejoin: false,
            downlink_kbps: None,
            loss: 0.0,
            delay_ms: 0.0,
            delay_jitter_ms: 0.0,
            fps: 30,
            keyframe_interval_s: 10.0,
            seed: 1,
            slo: None,
            e2ee: false,
            flood_pps: 0,
            flood_s: 10.0,
            tcp_share: 0.0,
            starve_clients_ms: 0.0,
        }
    }
}

impl Scenario {
    /// Parse a TOML scenario file's text (keys as in this struct).
    pub fn from_toml(text: &str) -> Result<Scenario, LoadgenError> {
        toml::from_str(text).map_err(|e| LoadgenError::InvalidScenario(e.to_string()))
    }

    /// Check the values; the message says which one is wrong and what fits.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let bad = |m: String| Err(LoadgenError::InvalidScenario(m));
        if self.rooms == 0 || self.rooms > 64 {
            return bad(format!("rooms = {}: use 1..=64", self.rooms));
        }
        if self.participants < 2 || self.participants > 500 {
            return bad(format!(
                "participants = {}: use 2..=500 per room (the engine's default room holds 50)",
                self.participants
            ));
        }
        if !(self.duration_s.is_finite() && self.duration_s >= 1.0 && self.duration_s <= 3600.0) {
            return bad(format!(
                "duration_s = {}: use 1..=3600 seconds",
                self.duration_s
            ));
        }
        if !(self.warmup_s.is_finite() && self.warmup_s >= 0.0 && self.warmup_s < self.duration_s) {
            return bad(format!(
                "warmup_s = {}: use 0 up to less than duration_s ({})",
                self.warmup_s, self.duration_s
            ));
        }
        if self.shards == 0 || self.shards > 64 {
            return bad(format!("shards = {}: use 1..=64", self.shards));
        }
        if self.client_threads == 0 || self.client_threads > 16 {
            return bad(format!(
                "client_threads = {}: use 1..=16",
                self.client_threads
            ));
        }
        if self.speakers > self.participants {
            return bad(format!(
                "speakers = {} exceeds participants = {}",
                self.speakers, self.participants
            ));
        }
        if !(self.speaker_rotation_s.is_finite() && self.speaker_rotation_s >= 0.1) {
            return bad(format!(
                "speaker_rotation_s = {}: use at least 0.1 s",
                self.speaker_rotation_s
            ));
        }
        if self.video_slots > 49 || self.audio_slots > 8 {
            return bad(format!(
                "video_slots = {}, audio_slots = {}: the engine's default room allows up to 49 video and 8 audio slots",
                self.video_slots, self.audio_slots
            ));
        }
        if !(self.join_rate.is_finite() && self.join_rate >= 0.0) {
            return bad(format!(
                "join_rate = {}: use 0 (storm) or a positive rate",
                self.join_rate
            ));
        }
        if !(self.churn_per_min.is_finite() && self.churn_per_min >= 0.0) {
            return bad(format!(
                "churn_per_min = {}: use 0 or more",
                self.churn_per_min
            ));
        }
        if !(self.rejoin_after_s.is_finite() && self.rejoin_after_s >= 0.0) {
            return bad(format!(
                "rejoin_after_s = {}: use 0 or more",
                self.rejoin_after_s
            ));
        }
        if self.downlink_kbps == Some(0) {
            return bad("downlink_kbps = 0: omit it for no cap, or give a positive rate".into());
        }
        if !(self.loss.is_finite() && (0.0..1.0).contains(&self.loss)) {
            return bad(format!(
                "loss = {}: a probability in 0..1 (0.01 is 1 %)",
                self.loss
            ));
        }
        for (name, v) in [
            ("delay_ms", self.delay_ms),
            ("delay_jitter_ms", self.delay_jitter_ms),
        ] {
            if !(v.is_finite() && (0.0..=10_000.0).contains(&v)) {
                return bad(format!("{name} = {v}: use 0..=10000 ms"));
            }
        }
        if self.fps == 0 || self.fps > 120 {
            return bad(format!("fps = {}: use 1..=120", self.fps));
        }
        if !(self.keyframe_interval_s.is_finite() && self.keyframe_interval_s >= 0.1) {
            return bad(format!(
                "keyframe_interval_s = {}: use at least 0.1",
                self.keyframe_interval_s
            ));
        }
        match (self.mode, &self.target) {
            (Mode::Target, None) => {
                return bad("mode = \"target\" needs target = \"http://host:port\"".into());
            }
            (Mode::Embedded | Mode::InProcess, Some(_)) => {
                return bad("target is set but mode is not \"target\"".into());
            }
            _ => {}
        }
        if let Some(urls) = &self.target {
            for url in urls.split(',') {
                crate::run::target::check_base(url).map_err(LoadgenError::InvalidScenario)?;
            }
            if urls.contains(',') && (self.sfu != Sfu::Piazza || self.invite.is_some()) {
                return bad(
                    "several target URLs (a Piazza cluster) need sfu = \"piazza\" and no invite link".into(),
                );
            }
        }
        if self.rejoin && (self.mode != Mode::Target || self.sfu != Sfu::Piazza) {
            return bad(
                "rejoin needs a Piazza target (--target URL[,URL...]): participants rejoin through its HTTP API".into(),
            );
        }
        if let Some(link) = &self.invite {
            let invite =
                crate::run::target::parse_invite(link).map_err(LoadgenError::InvalidScenario)?;
            if self.mode != Mode::Target || self.target.as_deref() != Some(invite.base.as_str()) {
                return bad(format!(
                    "invite needs mode = \"target\" and target = \"{}\" (the invite link's server)",
                    invite.base
                ));
            }
            if self.rooms != 1 {
                return bad(format!(
                    "rooms = {}: an invite link names one room; use rooms = 1",
                    self.rooms
                ));
            }
        }
        if self.sfu == Sfu::Janus {
            if self.mode != Mode::Target {
                return bad("sfu = \"janus\" needs mode = \"target\" (--target http://127.0.0.1:8088/janus)".into());
            }
            if self.invite.is_some() || self.churn_per_min > 0.0 {
                return bad("sfu = \"janus\" supports neither invite links nor churn".into());
            }
        }
        if self.flood_pps > 200_000 || !(self.flood_s.is_finite() && self.flood_s > 0.0) {
            return bad(format!(
                "flood_pps = {}, flood_s = {}: use 0..=200000 datagrams per second for more than 0 s",
                self.flood_pps, self.flood_s
            ));
        }
        if self.e2ee && self.mode != Mode::Embedded {
            return bad("e2ee needs the embedded engine (the room is created with E2EE on)".into());
        }
        if self.flood_pps > 0 && self.mode != Mode::Embedded {
            return bad(
                "flood_pps needs the embedded engine (the flood aims at its shard ports)".into(),
            );
        }
        if !(self.tcp_share.is_finite() && (0.0..=1.0).contains(&self.tcp_share)) {
            return bad(format!(
                "tcp_share = {}: a share of each room's participants in 0..=1 (0: all UDP, 1: all TCP)",
                self.tcp_share
            ));
        }
        if self.tcp_share > 0.0 && self.mode != Mode::Embedded {
            return bad(
                "tcp_share needs the embedded engine (it is built with ICE-TCP on for the run); --in-process has no sockets and --target/--invite/--compare servers choose their own transports".into(),
            );
        }
        if !(self.starve_clients_ms.is_finite() && (0.0..=200.0).contains(&self.starve_clients_ms))
        {
            return bad(format!(
                "starve_clients_ms = {}: use 0..=200 (milliseconds of every 200 ms)",
                self.starve_clients_ms
            ));
        }
        if self.mode == Mode::InProcess && self.starve_clients_ms > 0.0 {
            return bad(
                "starve_clients_ms needs real client threads (the embedded engine or --target)"
                    .into(),
            );
        }
        if self.mode == Mode::InProcess && self.churn_per_min > 0.0 {
            return bad(
                "churn is not supported with --in-process (the simulator has no rejoin); run it against the embedded engine"
                    .into(),
            );
        }
        Ok(())
    }

    /// Total participants over all rooms.
    pub fn total_participants(&self) -> usize {
        self.rooms * self.participants
    }

    /// `duration_s` as a [`Duration`].
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }

    /// `warmup_s` as a [`Duration`].
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }

    /// Whether the participant at `position` of its room reaches the engine
    /// over ICE-TCP: `floor(tcp_share * participants)` positions per room,
    /// spread evenly.
    pub fn tcp_at(&self, position: usize) -> bool {
        let before = |p: usize| (p as f64 * self.tcp_share).floor();
        before(position + 1) > before(position)
    }

    /// Participants per room over ICE-TCP (see [`Scenario::tcp_at`]).
    pub fn tcp_per_room(&self) -> usize {
        (0..self.participants).filter(|&p| self.tcp_at(p)).count()
    }

    /// Whether any receive-path impairment is configured.
    pub fn impaired(&self) -> bool {
        self.loss > 0.0
            || self.delay_ms > 0.0
            || self.delay_jitter_ms > 0.0
            || self.downlink_kbps.is_some()
    }

    /// Width of one bucket of the time series: one second, or more for long
    /// runs so there are at most 300 buckets.
    pub fn bucket(&self) -> Duration {
        Duration::from_secs_f64((self.duration_s / 300.0).max(1.0).ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_overrides() {
        Scenario::default().validate().unwrap();
        let s = Scenario::from_toml("rooms = 2\nparticipants = 10\nloss = 0.01\n").unwrap();
        assert_eq!(s.rooms, 2);
        assert_eq!(s.participants, 10);
        assert_eq!(s.duration_s, 20.0);
        s.validate().unwrap();
    }

    #[test]
    fn unknown_toml_key_is_an_error() {
        let e = Scenario::from_toml("room = 2\n").unwrap_err();
        assert!(e.to_string().contains("room"), "{e}");
    }

    #[test]
    fn tcp_share_picks_evenly_spread_positions() {
        let with = |participants, tcp_share| Scenario {
            participants,
            tcp_share,
            ..Default::default()
        };
        let positions =
            |s: &Scenario| -> Vec<usize> { (0..s.participants).filter(|&p| s.tcp_at(p)).collect() };
        assert!(positions(&with(20, 0.0)).is_empty());
        assert_eq!(positions(&with(4, 1.0)), vec![0, 1, 2, 3]);
        assert_eq!(positions(&with(4, 0.5)), vec![1, 3]);
        assert_eq!(positions(&with(10, 0.3)), vec![3, 6, 9]);
        assert_eq!(with(50, 0.25).tcp_per_room(), 12);
        assert_eq!(with(7, 0.99).tcp_per_room(), 6);
        for share in [-0.1, 1.01, f64::NAN] {
            let e = with(4, share).validate().unwrap_err().to_string();
            assert!(e.contains("tcp_share"), "{e}");
        }
        let target = Scenario {
            mode: Mode::Target,
            target: Some("http://127.0.0.1:8080".into()),
            ..with(4, 0.5)
        };
        let e = target.validate().unwrap_err().to_string();
        assert!(e.contains("tcp_share needs the embedded engine"), "{e}");
        let in_process = Scenario {
            mode: Mode::InProcess,
            ..with(4, 1.0)
        };
        assert!(in_process.validate().is_err());
        with(4, 1.0).validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let s = Scenario {
            loss: 1.5,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("loss"));
    }
}
