//! `piazza-loadgen`: see `docs/loadgen.md`.
//!
//! Exit codes: 0 success, 1 the run could not start or finish, 2 bad
//! usage (flags, scenario, SLO syntax), 3 an SLO threshold was violated.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use piazza_loadgen::error::LoadgenError;
use piazza_loadgen::report::{self, html, summary};
use piazza_loadgen::run::{self, Progress};
use piazza_loadgen::scenario::{Mode, Scenario};
use piazza_loadgen::slo::Slo;

/// Load generator for the Piazza SFU: simulated WebRTC participants (str0m
/// peers with ICE, DTLS and SRTP) in rooms against an engine, reporting
/// latency, loss, jitter, freezes, join times and the engine's CPU cost.
///
/// With no arguments: one 50-person room for 20 s against an engine
/// embedded in this process (real UDP on 127.0.0.1).
#[derive(Debug, Parser)]
#[command(name = "piazza-loadgen", version, about, long_about = None)]
struct Cli {
    /// Scenario file (TOML, keys as in docs/loadgen.md); flags override it.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Rooms running at once.
    #[arg(long)]
    rooms: Option<usize>,
    /// Participants per room.
    #[arg(long, short = 'n')]
    participants: Option<usize>,
    /// Run length in seconds, joins included; the run stops by itself then.
    #[arg(long, short = 'd', value_name = "SECONDS")]
    duration: Option<f64>,
    /// Settling time after the initial joins before measuring, seconds.
    #[arg(long, value_name = "SECONDS")]
    warmup: Option<f64>,
    /// Engine shards (threads with a UDP socket each).
    #[arg(long)]
    shards: Option<usize>,
    /// Threads driving the simulated clients.
    #[arg(long)]
    client_threads: Option<usize>,
    /// Participants talking at once in each room (they rotate).
    #[arg(long)]
    speakers: Option<usize>,
    /// Seconds between speaker rotations.
    #[arg(long, value_name = "SECONDS")]
    speaker_rotation: Option<f64>,
    /// Video receive slots per participant.
    #[arg(long)]
    slots: Option<usize>,
    /// Audio receive slots per participant.
    #[arg(long)]
    audio_slots: Option<usize>,
    /// Tallest frame each video slot asks for, pixels (0: no cap).
    #[arg(long, value_name = "PIXELS")]
    max_height: Option<u32>,
    /// Initial joins per second (0: everyone at once, a join storm).
    #[arg(long, value_name = "PER_SECOND")]
    join_rate: Option<f64>,
    /// Leaves per minute per room; each leaver rejoins after --rejoin-after.
    #[arg(long, value_name = "PER_MINUTE")]
    churn: Option<f64>,
    /// Seconds before a churned participant rejoins.
    #[arg(long, value_name = "SECONDS")]
    rejoin_after: Option<f64>,
    /// Per-subscriber downlink cap in kbit/s (client receive path).
    #[arg(long, value_name = "KBPS")]
    downlink_kbps: Option<u64>,
    /// Random loss on each client's receive path, 0..1 (0.01 = 1 %).
    #[arg(long)]
    loss: Option<f64>,
    /// Extra one-way delay on each client's receive path, ms.
    #[arg(long, value_name = "MS")]
    delay: Option<f64>,
    /// Extra random delay, uniform 0..MS, on top of --delay.
    #[arg(long, value_name = "MS")]
    delay_jitter: Option<f64>,
    /// Camera frame rate.
    #[arg(long)]
    fps: Option<u32>,
    /// Publishers' periodic keyframe interval, seconds.
    #[arg(long, value_name = "SECONDS")]
    keyframe_interval: Option<f64>,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Use the in-process simulator (virtual time, no sockets): the
    /// engine's pure CPU cost per packet.
    #[arg(long, conflicts_with = "target")]
    in_process: bool,
    /// An external Piazza server on this machine, by its HTTP base URL
    /// (http://127.0.0.1:8080): rooms, joins and metrics through its API.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Thresholds, e.g. p99_ms=5,loss=0.001,freezes=0: exit code 3 when violated.
    #[arg(long, value_name = "SPEC")]
    slo: Option<String>,
    /// Flood the shard ports with this many hostile datagrams per second
    /// (garbage, truncated RTP, bad STUN, replays) during the window.
    #[arg(long, value_name = "PER_SECOND")]
    flood_pps: Option<u64>,
    /// How long the flood lasts, seconds (default 10).
    #[arg(long, value_name = "SECONDS")]
    flood_duration: Option<f64>,
    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn scenario_from(cli: &Cli) -> Result<Scenario, LoadgenError> {
    let mut s = match &cli.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| LoadgenError::ScenarioFile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            Scenario::from_toml(&text).map_err(|e| LoadgenError::ScenarioFile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?
        }
        None => Scenario::default(),
    };
    macro_rules! set {
        ($flag:ident => $field:ident) => {
            if let Some(v) = cli.$flag.clone() {
                s.$field = v;
            }
        };
    }
    set!(rooms => rooms);
    set!(participants => participants);
    set!(duration => duration_s);
    set!(warmup => warmup_s);
    set!(shards => shards);
    set!(client_threads => client_threads);
    set!(speakers => speakers);
    set!(speaker_rotation => speaker_rotation_s);
    set!(slots => video_slots);
    set!(audio_slots => audio_slots);
    set!(join_rate => join_rate);
    set!(churn => churn_per_min);
    set!(rejoin_after => rejoin_after_s);
    set!(loss => loss);
    set!(delay => delay_ms);
    set!(delay_jitter => delay_jitter_ms);
    set!(fps => fps);
    set!(keyframe_interval => keyframe_interval_s);
    set!(seed => seed);
    set!(flood_pps => flood_pps);
    set!(flood_duration => flood_s);
    if let Some(h) = cli.max_height {
        s.max_height = Some(h);
    }
    if cli.downlink_kbps.is_some() {
        s.downlink_kbps = cli.downlink_kbps;
    }
    if cli.slo.is_some() {
        s.slo = cli.slo.clone();
    }
    if cli.in_process {
        s.mode = Mode::InProcess;
        s.target = None;
    }
    if let Some(t) = &cli.target {
        s.mode = Mode::Target;
        s.target = Some(t.clone());
    }
    // A warmup longer than a short run would leave nothing to measure:
    // when only --duration was given, shrink the default warmup to fit.
    if cli.warmup.is_none() && s.warmup_s >= s.duration_s {
        s.warmup_s = (s.duration_s / 4.0).min(s.warmup_s);
    }
    s.validate()?;
    Ok(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let scenario = match scenario_from(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let slo = match scenario.slo.as_deref().map(Slo::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let progress = Progress::new(
        scenario.duration(),
        !cli.quiet && std::io::stderr().is_terminal(),
    );
    let outcome = match run::run(&scenario, &progress) {
        Ok(o) => o,
        Err(e) => {
            progress.finish();
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    progress.finish();
    let mut report = report::build(&scenario, &outcome);
    if let Some(slo) = &slo {
        report.slo = slo.evaluate(&report);
    }
    print!("{}", summary::render(&report));
    let mut failed_write = false;
    if let Some(path) = &cli.json {
        // The report holds only numbers, strings and plain structs.
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("error: cannot write {}: {e}", path.display());
            failed_write = true;
        }
    }
    if let Some(path) = &cli.html
        && let Err(e) = std::fs::write(path, html::render(&report))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        failed_write = true;
    }
    if !report.slo.passed {
        return ExitCode::from(3);
    }
    if failed_write {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
