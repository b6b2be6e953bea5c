//! `piazza-loadgen`: see `docs/loadgen.md`.
//!
//! Exit codes (docs/loadgen.md): 0 success, 1 the run could not start or
//! finish, 2 bad usage (flags, scenario, SLO syntax, target URL), 3 a valid
//! run violated an SLO threshold, 4 nothing was measured (the window never
//! opened or most joins failed), 5 the run is invalid (the load generator
//! was the bottleneck).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{CommandFactory, FromArgMatches, Parser};
use piazza_loadgen::error::LoadgenError;
use piazza_loadgen::report::meta::Meta;
use piazza_loadgen::report::{self, EXIT_FAILED, EXIT_USAGE, Report, html, summary};
use piazza_loadgen::run::{self, Progress};
use piazza_loadgen::scenario::{Mode, Scenario, Sfu};
use piazza_loadgen::slo::Slo;

/// `--sfu`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SfuArg {
    Piazza,
    Janus,
}

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
    /// Participants whose session is lost (their node died, or it told
    /// them to rejoin) rejoin with their participant token through another
    /// node of --target, retrying 503s; the report gives the time to rejoin.
    #[arg(long)]
    rejoin: bool,
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
    /// A cluster: every node's URL, separated by commas; rooms and joins
    /// go through each node in turn, and the report has per-node figures.
    #[arg(long, value_name = "URL[,URL...]")]
    target: Option<String>,
    /// Compare Piazza and Janus VideoRoom: start each here on loopback
    /// (Piazza's `piazza` server, Janus with a generated configuration),
    /// run this scenario on each, alternating the order over --rounds,
    /// stop both, and write one report with the two side by side.
    /// With --capacity: the capacity search on each (one each, Piazza
    /// first), and the two capacities side by side at the same SLO.
    #[arg(long, conflicts_with_all = ["target", "in_process", "invite"])]
    compare: bool,
    /// Rounds of --compare (medians over rounds).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Piazza's server binary for --compare (default: `piazza` next to
    /// this executable).
    #[arg(long, value_name = "PATH")]
    piazza_bin: Option<PathBuf>,
    /// Janus binary for --compare.
    #[arg(long, value_name = "PATH", default_value = "janus")]
    janus_bin: PathBuf,
    /// Which SFU --target is: piazza (its HTTP API) or janus (Janus
    /// VideoRoom through the Janus HTTP transport, e.g.
    /// http://127.0.0.1:8088/janus; JANUS_ADMIN_KEY from the environment
    /// is sent when creating rooms).
    #[arg(long, value_enum, default_value = "piazza", requires = "target")]
    sfu: SfuArg,
    /// The SFU's process id: its /proc/PID/stat CPU time is the engine
    /// CPU (default: the process listening on --target's port).
    #[arg(long, value_name = "PID", requires = "target")]
    sfu_pid: Option<u32>,
    /// Join an existing room by its invite link
    /// (http://127.0.0.1:8080/r/ROOM#t=TOKEN) on a Piazza server on this
    /// machine, e.g. one real browsers are in; one room, the participants
    /// leave at the end.
    #[arg(long, value_name = "URL", conflicts_with_all = ["target", "in_process", "rooms"])]
    invite: Option<String>,
    /// Reports (report.json, report.html) go into a fresh directory named
    /// after the start time (UTC) under this one; its path is printed.
    #[arg(long, value_name = "DIR", default_value = "loadgen-reports")]
    out: PathBuf,
    /// Write no report files (only the terminal summary).
    #[arg(long)]
    no_report: bool,
    /// Also write the JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Thresholds, e.g. p99_ms=5,loss=0.001,freezes=0: exit code 3 when violated.
    #[arg(long, value_name = "SPEC")]
    slo: Option<String>,
    /// End-to-end encrypted room: clients encrypt every frame (docs/e2ee.md)
    /// and the engine forwards ciphertext; embedded engine only.
    #[arg(long)]
    e2ee: bool,
    /// Flood the shard ports with this many hostile datagrams per second
    /// (garbage, truncated RTP, bad STUN, replays) during the window.
    #[arg(long, value_name = "PER_SECOND")]
    flood_pps: Option<u64>,
    /// How long the flood lasts, seconds (default 10).
    #[arg(long, value_name = "SECONDS")]
    flood_duration: Option<f64>,
    /// Share of each room's participants that connect over ICE-TCP (the
    /// engine's passive TCP candidate, RFC 4571 framing) instead of UDP,
    /// 0..=1 (1: all); the embedded engine runs with ICE-TCP on.
    #[arg(long, value_name = "SHARE")]
    tcp_share: Option<f64>,
    /// Test hook for the validity check: each client thread sleeps MS
    /// milliseconds in every 200 ms of the window, so the run must come out
    /// invalid (exit code 5).
    #[arg(long, value_name = "MS")]
    starve_clients: Option<f64>,
    /// Capacity search: grow `participants` (per room) or `rooms` step by
    /// step until the SLO (--slo, default p99_ms=50,loss=0.01,freezes=0)
    /// breaks; report the largest load that held.
    #[arg(long, value_name = "WHAT", value_parser = ["participants", "rooms"])]
    capacity: Option<String>,
    /// Capacity search: first value [default: 10 participants, or 1 room].
    #[arg(long, value_name = "N", requires = "capacity")]
    capacity_start: Option<usize>,
    /// Capacity search: added each step [default: 10 participants, or 1 room].
    #[arg(long, value_name = "N", requires = "capacity")]
    capacity_step: Option<usize>,
    /// Capacity search: largest value tried [default: 200 participants, or 8 rooms].
    #[arg(long, value_name = "N", requires = "capacity")]
    capacity_max: Option<usize>,
    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Flags that override a scenario key, with the key whose default `--help`
/// shows.
const FLAG_KEYS: &[(&str, &str)] = &[
    ("rooms", "rooms"),
    ("participants", "participants"),
    ("duration", "duration_s"),
    ("warmup", "warmup_s"),
    ("shards", "shards"),
    ("client_threads", "client_threads"),
    ("speakers", "speakers"),
    ("speaker_rotation", "speaker_rotation_s"),
    ("slots", "video_slots"),
    ("audio_slots", "audio_slots"),
    ("max_height", "max_height"),
    ("join_rate", "join_rate"),
    ("churn", "churn_per_min"),
    ("rejoin_after", "rejoin_after_s"),
    ("downlink_kbps", "downlink_kbps"),
    ("loss", "loss"),
    ("delay", "delay_ms"),
    ("delay_jitter", "delay_jitter_ms"),
    ("fps", "fps"),
    ("keyframe_interval", "keyframe_interval_s"),
    ("seed", "seed"),
    ("slo", "slo"),
    ("flood_pps", "flood_pps"),
    ("flood_duration", "flood_s"),
    ("starve_clients", "starve_clients_ms"),
    ("tcp_share", "tcp_share"),
];

/// The command line, with every scenario default in its flag's help (taken
/// from `Scenario::default()`, so help and behaviour cannot disagree).
fn command() -> clap::Command {
    let defaults = serde_json::to_value(Scenario::default()).unwrap_or_default();
    let mut cmd = Cli::command();
    for (id, key) in FLAG_KEYS {
        let shown = match &defaults[*key] {
            serde_json::Value::Null => "none".to_string(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let extra = if *key == "warmup_s" {
            " (shrunk to a quarter of --duration when that is shorter)"
        } else {
            ""
        };
        cmd = cmd.mut_arg(*id, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            a.help(format!("{help} [default: {shown}{extra}]"))
        });
    }
    cmd
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
    set!(tcp_share => tcp_share);
    if let Some(h) = cli.max_height {
        s.max_height = Some(h);
    }
    if cli.downlink_kbps.is_some() {
        s.downlink_kbps = cli.downlink_kbps;
    }
    if cli.slo.is_some() {
        s.slo = cli.slo.clone();
    }
    if cli.e2ee {
        s.e2ee = true;
    }
    if cli.rejoin {
        s.rejoin = true;
    }
    if cli.in_process {
        s.mode = Mode::InProcess;
        s.target = None;
    }
    if let Some(t) = &cli.target {
        s.mode = Mode::Target;
        s.target = Some(t.clone());
        s.sfu = match cli.sfu {
            SfuArg::Piazza => Sfu::Piazza,
            SfuArg::Janus => Sfu::Janus,
        };
    }
    if cli.sfu_pid.is_some() {
        s.sfu_pid = cli.sfu_pid;
    }
    if let Some(link) = &cli.invite {
        let invite = piazza_loadgen::run::target::parse_invite(link)
            .map_err(LoadgenError::InvalidScenario)?;
        s.mode = Mode::Target;
        s.target = Some(invite.base);
        s.invite = Some(link.clone());
    }
    if let Some(ms) = cli.starve_clients {
        s.starve_clients_ms = ms;
    }
    // A warmup longer than a short run would leave nothing to measure:
    // when only --duration was given, shrink the default warmup to fit.
    if cli.warmup.is_none() && s.warmup_s >= s.duration_s {
        s.warmup_s = (s.duration_s / 4.0).min(s.warmup_s);
    }
    if cli.compare && s.tcp_share > 0.0 {
        return Err(LoadgenError::InvalidScenario(
            "tcp_share needs the embedded engine; --compare runs its scenario against servers, which pick their own transports".into(),
        ));
    }
    s.validate()?;
    Ok(s)
}

fn main() -> ExitCode {
    // Usage errors exit 2 with clap's one-line message (and a hint).
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let scenario = match scenario_from(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let slo = match scenario.slo.as_deref().map(Slo::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut meta = Meta::at_start();
    // The directory first: a run is not wasted on a path that cannot be written.
    let dir = if cli.no_report {
        None
    } else {
        match fresh_dir(&cli.out) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!(
                    "error: cannot create a report directory under {}: {e} (choose another with --out DIR, or --no-report)",
                    cli.out.display()
                );
                return ExitCode::from(EXIT_FAILED);
            }
        }
    };
    if let Some(what) = &cli.capacity {
        return capacity(&cli, what, &scenario, slo, dir);
    }
    if cli.compare {
        return compare(&cli, &scenario, dir);
    }
    let progress = Progress::new(
        scenario.duration(),
        !cli.quiet && std::io::stderr().is_terminal(),
    );
    let outcome = match run::run(&scenario, &progress) {
        Ok(o) => o,
        Err(e) => {
            progress.finish();
            eprintln!("error: {e}");
            if let Some(d) = &dir {
                // Nothing was written into it.
                let _ = std::fs::remove_dir(d);
            }
            return ExitCode::from(match e {
                LoadgenError::InvalidScenario(_) | LoadgenError::InvalidSlo(_) => EXIT_USAGE,
                _ => EXIT_FAILED,
            });
        }
    };
    progress.finish();
    meta.finish();
    let mut report = report::build(&scenario, &outcome, meta);
    if let Some(slo) = &slo {
        report.slo = slo.evaluate(&report);
    }
    let outcome = report.decide();
    print!("{}", summary::render(&report));
    let mut failed_write = false;
    let mut targets: Vec<(PathBuf, bool)> = Vec::new();
    if let Some(d) = &dir {
        targets.push((d.join("report.json"), true));
        targets.push((d.join("report.html"), false));
    }
    if let Some(p) = &cli.json {
        targets.push((p.clone(), true));
    }
    if let Some(p) = &cli.html {
        targets.push((p.clone(), false));
    }
    for (path, json) in &targets {
        if let Err(e) = write_report(&report, path, *json) {
            eprintln!("error: cannot write {}: {e}", path.display());
            failed_write = true;
        }
    }
    if let Some(d) = &dir {
        println!("  reports     {}/ (report.json, report.html)", d.display());
    }
    let code = outcome.exit_code();
    if code == 0 && failed_write {
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::from(code)
}

/// `--compare`: both SFUs, side by side. Exit code: 1 if an SFU could not
/// be started or a run failed, 4 if a run measured nothing, 5 if a run was
/// invalid (the load generator was the bottleneck), else 0.
fn compare(cli: &Cli, base: &Scenario, dir: Option<PathBuf>) -> ExitCode {
    use piazza_loadgen::compare::{self, Programs};
    use piazza_loadgen::report::{EXIT_INVALID, EXIT_NOT_MEASURED};
    let mut programs = Programs::default_paths();
    if let Some(p) = &cli.piazza_bin {
        programs.piazza = p.clone();
    }
    programs.janus = cli.janus_bin.clone();
    let show = !cli.quiet && std::io::stderr().is_terminal();
    let mut each = |r: &compare::RoundRun| {
        print!("{}", summary::render(&r.report));
    };
    let c = match compare::run(base, cli.rounds as usize, &programs, show, &mut each) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(d) = &dir {
                let _ = std::fs::remove_dir(d);
            }
            return ExitCode::from(EXIT_FAILED);
        }
    };
    print!("{}", compare::render_table(&c));
    let mut failed_write = false;
    if let Some(d) = &dir {
        let json = serde_json::to_string_pretty(&c).unwrap_or_default();
        for (name, text) in [
            ("compare.json", json),
            ("compare.html", html::render_compare(&c)),
        ] {
            if let Err(e) = std::fs::write(d.join(name), text) {
                eprintln!("error: cannot write {}: {e}", d.join(name).display());
                failed_write = true;
            }
        }
        println!(
            "  reports     {}/ (compare.json, compare.html)",
            d.display()
        );
    }
    if failed_write {
        return ExitCode::from(EXIT_FAILED);
    }
    if c.runs.iter().any(|r| r.report.measured_s <= 0.0) {
        return ExitCode::from(EXIT_NOT_MEASURED);
    }
    if c.runs.iter().any(|r| !r.report.validity.valid) {
        return ExitCode::from(EXIT_INVALID);
    }
    ExitCode::SUCCESS
}

/// The capacity search (`--capacity`): one run per step, each step's
/// reports and `capacity.json` in the report directory.
fn capacity(
    cli: &Cli,
    what: &str,
    base: &Scenario,
    slo: Option<Slo>,
    dir: Option<PathBuf>,
) -> ExitCode {
    use piazza_loadgen::capacity::{DEFAULT_SLO, Grow, Plan, Step, search};
    let grow = if what == "rooms" {
        Grow::Rooms
    } else {
        Grow::Participants
    };
    let (start, step, max) = match grow {
        Grow::Participants => (10, 10, 200),
        Grow::Rooms => (1, 1, 8),
    };
    let slo_text = base.slo.clone().unwrap_or_else(|| DEFAULT_SLO.to_string());
    let slo = match slo {
        Some(s) => s,
        // A constant known to parse (a unit test checks it).
        None => Slo::parse(DEFAULT_SLO).expect("the default capacity SLO parses"),
    };
    let plan = Plan {
        grow,
        start: cli.capacity_start.unwrap_or(start),
        step: cli.capacity_step.unwrap_or(step),
        max: cli.capacity_max.unwrap_or(max),
        slo: slo_text,
    };
    let values = plan.values();
    if values.is_empty() || plan.step == 0 {
        eprintln!(
            "error: --capacity-start {} --capacity-step {} --capacity-max {} gives no step",
            plan.start, plan.step, plan.max
        );
        return ExitCode::from(EXIT_USAGE);
    }
    for v in [values[0], *values.last().unwrap_or(&values[0])] {
        if let Err(e) = plan.scenario(base, v).validate() {
            eprintln!("error: capacity step {v}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    println!(
        "capacity search: {what} {} to {} by {}, {:.0} s per step, SLO {}",
        plan.start, plan.max, plan.step, base.duration_s, plan.slo
    );
    if cli.compare {
        return compare_capacity(cli, &plan, base, &slo, dir);
    }
    let mut run_one = |s: &Scenario| {
        let progress = Progress::new(s.duration(), !cli.quiet && std::io::stderr().is_terminal());
        let outcome = run::run(s, &progress);
        progress.finish();
        outcome
    };
    let mut on_step = |i: usize, v: usize, row: &Step, report: &Report| {
        print_step(i, row);
        if let Some(d) = &dir {
            write_step(d, "", i, v, report);
        }
    };
    let result = match search(&plan, base, &slo, &mut run_one, &mut on_step) {
        Ok(r) => r,
        Err((v, e)) => {
            eprintln!("error: capacity step {v}: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    print!("{}", result.render());
    if let Some(d) = &dir {
        if let Err(code) = write_capacity(&d.join("capacity.json"), &result) {
            return code;
        }
        println!(
            "  reports     {}/ (capacity.json, step-NN-*.json and .html)",
            d.display()
        );
    }
    ExitCode::from(result.exit_code())
}

/// `--compare --capacity`: the same capacity search on each SFU, each
/// started here on loopback (Piazza first, then Janus; one search each,
/// `--rounds` does not apply), then the two capacities side by side at the
/// same SLO. Exit code: 1 if an SFU could not be started or a run failed,
/// else the worse of the two searches' codes.
fn compare_capacity(
    cli: &Cli,
    plan: &piazza_loadgen::capacity::Plan,
    base: &Scenario,
    slo: &Slo,
    dir: Option<PathBuf>,
) -> ExitCode {
    use piazza_loadgen::capacity::{CapacityReport, Step, search};
    use piazza_loadgen::compare::{self, Programs};
    let mut programs = Programs::default_paths();
    if let Some(p) = &cli.piazza_bin {
        programs.piazza = p.clone();
    }
    programs.janus = cli.janus_bin.clone();
    let scratch = std::env::temp_dir().join(format!(
        "piazza-loadgen-capacity-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut results: Vec<(Sfu, CapacityReport)> = Vec::new();
    for sfu in [Sfu::Piazza, Sfu::Janus] {
        let sub = scratch.join(sfu.name());
        if let Err(e) = std::fs::create_dir_all(&sub) {
            eprintln!("error: cannot create {}: {e}", sub.display());
            return ExitCode::from(EXIT_FAILED);
        }
        let started = match sfu {
            Sfu::Piazza => {
                // Rooms as large as the search's largest step.
                let largest = plan
                    .values()
                    .iter()
                    .map(|v| plan.scenario(base, *v).participants)
                    .max()
                    .unwrap_or(base.participants);
                compare::start_piazza(&programs.piazza, base.shards, largest, &sub)
                    .map(|s| (s, None))
            }
            Sfu::Janus => compare::start_janus(&programs.janus, &sub).map(|(s, k)| (s, Some(k))),
        };
        let (mut server, admin_key) = match started {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                let _ = std::fs::remove_dir_all(&scratch);
                return ExitCode::from(EXIT_FAILED);
            }
        };
        println!("{} (pid {}, {})", sfu.name(), server.pid, server.url);
        let mut side = base.clone();
        side.mode = Mode::Target;
        side.sfu = sfu;
        side.target = Some(server.url.clone());
        side.sfu_pid = Some(server.pid);
        let url = server.url.clone();
        let mut run_one = |s: &Scenario| {
            let progress =
                Progress::new(s.duration(), !cli.quiet && std::io::stderr().is_terminal());
            let outcome = match &admin_key {
                Some(k) => run::janus::run_with_key(s, &url, &progress, Some(k)),
                None => run::run(s, &progress),
            };
            progress.finish();
            outcome
        };
        let prefix = format!("{}-", sfu.name());
        let mut on_step = |i: usize, v: usize, row: &Step, report: &Report| {
            print!("  {} ", sfu.name());
            print_step(i, row);
            if let Some(d) = &dir {
                write_step(d, &prefix, i, v, report);
            }
        };
        let result = search(plan, &side, slo, &mut run_one, &mut on_step);
        server.stop();
        match result {
            Ok(r) => results.push((sfu, r)),
            Err((v, e)) => {
                eprintln!("error: {} capacity step {v}: {e}", sfu.name());
                let _ = std::fs::remove_dir_all(&scratch);
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    for (sfu, r) in &results {
        print!("\n{}:{}", sfu.name(), r.render());
    }
    println!("\nCapacity side by side, SLO {}:", plan.slo);
    for (sfu, r) in &results {
        println!("  {:<7} {}", sfu.name(), capacity_line(r));
    }
    if let Some(d) = &dir {
        for (sfu, r) in &results {
            if let Err(code) = write_capacity(&d.join(format!("capacity-{}.json", sfu.name())), r) {
                return code;
            }
        }
        println!(
            "  reports     {}/ (capacity-piazza.json, capacity-janus.json, <sfu>-step-NN-*.json and .html)",
            d.display()
        );
    }
    let code = results
        .iter()
        .map(|(_, r)| r.exit_code())
        .max()
        .unwrap_or(1);
    ExitCode::from(code)
}

/// One line for a capacity: the largest step that held and its per-core
/// figure, or none.
fn capacity_line(r: &piazza_loadgen::capacity::CapacityReport) -> String {
    match &r.capacity {
        Some(c) => format!(
            "{}{} participants: {:.0} egress packets/s on {:.2} SFU cores = {:.0} per SFU core",
            if r.lower_bound { "at least " } else { "" },
            c.participants,
            c.egress_pps,
            c.sfu_cores,
            c.egress_pps_per_core
        ),
        None => format!("none held ({})", r.stopped),
    }
}

/// The terminal line of a finished capacity step.
fn print_step(i: usize, row: &piazza_loadgen::capacity::Step) {
    println!(
        "  step {:>2}: {} room(s) x {} participants: p99 {:.2} ms, loss {:.3} %, freezes {}, {:.0} egress packets/s on {:.2} SFU cores: {}",
        i + 1,
        row.rooms,
        row.participants_per_room,
        row.p99_ms,
        row.loss_ratio * 100.0,
        row.freezes,
        row.egress_pps,
        row.sfu_cores,
        if row.held() {
            "held".to_string()
        } else {
            format!("{:?}: {}", row.outcome, row.why.join("; "))
        }
    );
}

/// A capacity step's reports, `<prefix>step-NN-<value>.json` and `.html`.
fn write_step(d: &Path, prefix: &str, i: usize, v: usize, report: &Report) {
    let name = format!("{prefix}step-{:02}-{}", i + 1, v);
    for (ext, json) in [("json", true), ("html", false)] {
        let path = d.join(format!("{name}.{ext}"));
        if let Err(e) = write_report(report, &path, json) {
            eprintln!("error: cannot write {}: {e}", path.display());
        }
    }
}

/// A capacity search's result as JSON.
fn write_capacity(
    path: &Path,
    result: &piazza_loadgen::capacity::CapacityReport,
) -> Result<(), ExitCode> {
    // Plain structs of numbers and strings.
    let text = serde_json::to_string_pretty(result).expect("the capacity report serializes");
    std::fs::write(path, text + "\n").map_err(|e| {
        eprintln!("error: cannot write {}: {e}", path.display());
        ExitCode::from(EXIT_FAILED)
    })
}

/// Write `report` as JSON or HTML.
fn write_report(report: &Report, path: &Path, json: bool) -> std::io::Result<()> {
    let text = if json {
        // The report holds only numbers, strings and plain structs.
        serde_json::to_string_pretty(report).expect("the report serializes") + "\n"
    } else {
        html::render(report)
    };
    std::fs::write(path, text)
}

/// A new directory under `parent` named after the time (UTC), with a
/// suffix when one of that name exists.
fn fresh_dir(parent: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(parent)?;
    let stamp = report::meta::compact(SystemTime::now());
    for i in 0..1000 {
        let name = if i == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{i}")
        };
        let path = parent.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "1000 directories of this second exist",
    ))
}
