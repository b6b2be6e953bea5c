//! `--compare`: the same scenario on Piazza and on Janus VideoRoom, each
//! started here on loopback and stopped by its pid afterwards, alternating
//! which goes first over `--rounds`; one report with both side by side
//! (medians over the rounds).
//!
//! Piazza is its reference server binary (`piazza`, next to this one by
//! default). Janus runs with a configuration generated into a temporary
//! directory: only the VideoRoom plugin and the HTTP transport, on
//! 127.0.0.1, `debug_level` 3 (errors and warnings), ICE restricted to
//! 127.0.0.1, and an `LD_PRELOAD` shim (`loadgen/janus/loopback_shim.c`,
//! compiled here with `cc`) that clears `IFF_LOOPBACK` from `getifaddrs()`
//! so Janus gathers the loopback address at all.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::LoadgenError;
use crate::report::{self, Report, meta::Meta};
use crate::run::{self, Progress};
use crate::scenario::{Mode, Scenario, Sfu};

/// The shim's source, compiled at run time.
const SHIM_SRC: &str = include_str!("../janus/loopback_shim.c");
/// Janus's `debug_level` in the comparison (3: errors and warnings; 4
/// logs per event and costs CPU).
pub const JANUS_DEBUG_LEVEL: u32 = 3;
/// Longest wait for a started SFU to answer HTTP.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a stopped SFU to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Janus's plugin directories (Debian's janus package).
const JANUS_LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// Where the SFUs' programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Piazza's reference server.
    pub piazza: PathBuf,
    /// Janus.
    pub janus: PathBuf,
}

impl Programs {
    /// `piazza` next to this executable, `janus` from `PATH`.
    pub fn default_paths() -> Programs {
        let piazza = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("piazza")))
            .unwrap_or_else(|| PathBuf::from("piazza"));
        Programs {
            piazza,
            janus: PathBuf::from("janus"),
        }
    }
}

/// A started SFU; stopped (SIGTERM, then SIGKILL) by its pid on drop.
pub struct Server {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Its `--target` URL.
    pub url: String,
    log: Option<PathBuf>,
}

impl Server {
    /// Stop it: SIGTERM to its pid, then SIGKILL after `STOP_TIMEOUT`.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let Some(p) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released: another process
/// could take it in between; the start then fails with a clear message).
fn free_port() -> Result<u16, LoadgenError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| LoadgenError::Io(format!("finding a free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| LoadgenError::Io(e.to_string()))
}

/// Wait until `port` answers `GET path` with any HTTP status line, or the
/// child exits.
fn wait_ready(server: &mut Server, port: u16, path: &str, what: &str) -> Result<(), LoadgenError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(LoadgenError::Target(format!(
                "{what} exited at start ({status}); its log ends:\n{}",
                server.log_tail()
            )));
        }
        if let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            use std::io::Write;
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut head = [0u8; 12];
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_exact(&mut head).is_ok()
                && head.starts_with(b"HTTP/1.")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LoadgenError::Target(format!(
        "{what} did not answer HTTP on 127.0.0.1:{port} within {} s; its log ends:\n{}",
        START_TIMEOUT.as_secs(),
        server.log_tail()
    )))
}

/// Start Piazza's reference server on loopback with `shards` shards.
/// `max_participants`: the largest room the run creates (the server's
/// `--max-participants`; never below its default, 50).
pub fn start_piazza(
    bin: &Path,
    shards: usize,
    max_participants: usize,
    dir: &Path,
) -> Result<Server, LoadgenError> {
    let port = free_port()?;
    let log = dir.join("piazza.log");
    let out = std::fs::File::create(&log).map_err(|e| LoadgenError::Io(e.to_string()))?;
    let err = out
        .try_clone()
        .map_err(|e| LoadgenError::Io(e.to_string()))?;
    let child = Command::new(bin)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .args(["--shards", &shards.to_string()])
        .args(["--udp-bind", "127.0.0.1"])
        .args(["--max-participants-per-shard", "0"])
        .args(["--max-participants", &max_participants.max(50).to_string()])
        .env_remove("PIAZZA_API_KEY")
        .env_remove("PIAZZA_CONFIG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            LoadgenError::Target(format!(
                "cannot start {} ({e}): build it with `cargo build -p piazza --features server --bin piazza` or give --piazza-bin",
                bin.display()
            ))
        })?;
    let mut s = Server {
        pid: child.id(),
        child,
        url: format!("http://127.0.0.1:{port}"),
        log: Some(log),
    };
    wait_ready(&mut s, port, "/healthz", "piazza")?;
    Ok(s)
}

/// Compile the getifaddrs shim into `dir`.
fn build_shim(dir: &Path) -> Result<PathBuf, LoadgenError> {
    let src = dir.join("loopback_shim.c");
    let so = dir.join("loopback_shim.so");
    std::fs::write(&src, SHIM_SRC).map_err(|e| LoadgenError::Io(e.to_string()))?;
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .output()
        .map_err(|e| {
            LoadgenError::Target(format!(
                "cannot run cc to build the Janus loopback shim: {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(LoadgenError::Target(format!(
            "cc failed on the Janus loopback shim: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(so)
}

/// The names of the shared objects in `JANUS_LIB/kind` except `keep`.
fn others(kind: &str, keep: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(JANUS_LIB).join(kind))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".so") && n != keep)
        .collect();
    names.sort();
    names.join(",")
}

/// The three configuration files Janus needs, for HTTP `port`.
pub fn janus_config(dir: &Path, port: u16, admin_key: &str) -> Vec<(String, String)> {
    let d = dir.display();
    vec![
        (
            "janus.jcfg".into(),
            format!(
                r#"general: {{
	configs_folder = "{d}"
	plugins_folder = "{JANUS_LIB}/plugins"
	transports_folder = "{JANUS_LIB}/transports"
	events_folder = "{JANUS_LIB}/events"
	loggers_folder = "{JANUS_LIB}/loggers"
	debug_level = {JANUS_DEBUG_LEVEL}
	session_timeout = 60
}}
media: {{
	rtp_port_range = "20000-40000"
}}
nat: {{
	ice_enforce_list = "127.0.0.1"
	ignore_mdns = true
}}
plugins: {{
	disable = "{}"
}}
transports: {{
	disable = "{}"
}}
events: {{
	broadcast = false
	disable = "{}"
}}
loggers: {{
	disable = "{}"
}}
"#,
                others("plugins", "libjanus_videoroom.so"),
                others("transports", "libjanus_http.so"),
                others("events", ""),
                others("loggers", ""),
            ),
        ),
        (
            "janus.transport.http.jcfg".into(),
            format!(
                r#"general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {port}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_http = false
}}
"#
            ),
        ),
        (
            "janus.plugin.videoroom.jcfg".into(),
            format!("general: {{\n\tadmin_key = \"{admin_key}\"\n}}\n"),
        ),
    ]
}

/// Start Janus on loopback with a generated configuration in `dir`.
/// Returns the server and the VideoRoom admin key to create rooms with.
pub fn start_janus(bin: &Path, dir: &Path) -> Result<(Server, String), LoadgenError> {
    let shim = build_shim(dir)?;
    let port = free_port()?;
    let admin_key = format!("loadgen-{:x}", fastrand::u64(..));
    let cfg = dir.join("janus-config");
    std::fs::create_dir_all(&cfg).map_err(|e| LoadgenError::Io(e.to_string()))?;
    for (name, text) in janus_config(&cfg, port, &admin_key) {
        std::fs::write(cfg.join(name), text).map_err(|e| LoadgenError::Io(e.to_string()))?;
    }
    let log = dir.join("janus.log");
    let mut cmd = Command::new(bin);
    // Janus 1.1.2 sometimes crashes while it shuts down with many handles
    // (seen once after a 50-person run): no core file of ~1 GB in the
    // working directory for that.
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let child = cmd
        .arg("-C")
        .arg(cfg.join("janus.jcfg"))
        .arg("-F")
        .arg(&cfg)
        .args(["-o", "-N", "-L"])
        .arg(&log)
        .env("LD_PRELOAD", &shim)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            LoadgenError::Target(format!(
                "cannot start {} ({e}): install it (apt-get install -y janus) or give --janus-bin",
                bin.display()
            ))
        })?;
    let mut s = Server {
        pid: child.id(),
        child,
        url: format!("http://127.0.0.1:{port}/janus"),
        log: Some(log),
    };
    wait_ready(&mut s, port, "/janus/info", "janus")?;
    Ok((s, admin_key))
}

/// One SFU's run in one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRun {
    /// Round number, from 1.
    pub round: usize,
    /// 1: this SFU ran first in the round.
    pub position: usize,
    /// Which SFU.
    pub sfu: Sfu,
    /// Its full report (the same layout as a single run's report.json).
    pub report: Report,
}

/// Medians over the rounds of one SFU's valid, measured runs (all runs
/// when none is valid; `valid_rounds` says how many counted).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Side {
    /// Which SFU.
    pub sfu: Option<Sfu>,
    /// Rounds whose run was measured and valid.
    pub valid_rounds: usize,
    /// Rounds in the medians.
    pub counted_rounds: usize,
    /// Latency p50, ms.
    pub latency_p50_ms: f64,
    /// Latency p99, ms.
    pub latency_p99_ms: f64,
    /// Loss in the window, percent.
    pub loss_pct: f64,
    /// Mean jitter, ms.
    pub jitter_ms: f64,
    /// Freezes in the window.
    pub freezes: f64,
    /// First frame p50, ms.
    pub first_frame_p50_ms: f64,
    /// First frame p99, ms.
    pub first_frame_p99_ms: f64,
    /// Media packets per second the clients received.
    pub received_pps: f64,
    /// Forwarded packets per second (Piazza: its counter; Janus: what the
    /// clients received).
    pub egress_pps: f64,
    /// SFU process CPU, cores.
    pub cpu_cores: f64,
    /// SFU process CPU per packet the clients received, microseconds.
    pub cpu_us_per_received_packet: f64,
    /// Peak resident set of the SFU's process, MiB.
    pub peak_rss_mb: f64,
    /// Joins that connected, of those attempted.
    pub joined: f64,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Layout version.
    pub version: u32,
    /// Date, commit, command line, machine.
    pub meta: Meta,
    /// The scenario both ran.
    pub scenario: Scenario,
    /// Rounds.
    pub rounds: usize,
    /// Every run, in the order they ran.
    pub runs: Vec<RoundRun>,
    /// Medians per SFU: Piazza then Janus.
    pub sides: Vec<Side>,
    /// Janus's CPU per received packet over Piazza's (medians).
    pub cpu_per_packet_ratio_janus_to_piazza: f64,
    /// What differs between the two and other caveats.
    pub notes: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of `sfu`'s runs.
pub fn side(runs: &[RoundRun], sfu: Sfu) -> Side {
    let mine: Vec<&Report> = runs
        .iter()
        .filter(|r| r.sfu == sfu)
        .map(|r| &r.report)
        .collect();
    let good: Vec<&Report> = mine
        .iter()
        .copied()
        .filter(|r| r.validity.valid && r.measured_s > 0.0)
        .collect();
    let valid_rounds = good.len();
    let use_: Vec<&Report> = if good.is_empty() { mine } else { good };
    let m = |f: &dyn Fn(&Report) -> f64| median(use_.iter().map(|r| f(r)).collect());
    Side {
        sfu: Some(sfu),
        valid_rounds,
        counted_rounds: use_.len(),
        latency_p50_ms: m(&|r| r.latency_us.p50 as f64 / 1000.0),
        latency_p99_ms: m(&|r| r.latency_us.p99 as f64 / 1000.0),
        loss_pct: m(&|r| r.media.loss_ratio * 100.0),
        jitter_ms: m(&|r| r.media.jitter_ms),
        freezes: m(&|r| r.media.freezes as f64),
        first_frame_p50_ms: m(&|r| r.join.first_frame_p50_ms),
        first_frame_p99_ms: m(&|r| r.join.first_frame_p99_ms),
        received_pps: m(&|r| r.media.received_pps),
        egress_pps: m(&|r| r.media.egress_pps),
        cpu_cores: m(&|r| r.engine.cpu_cores),
        cpu_us_per_received_packet: m(&|r| {
            if r.media.received_pps > 0.0 {
                r.engine.cpu_cores / r.media.received_pps * 1e6
            } else {
                0.0
            }
        }),
        peak_rss_mb: m(&|r| r.engine.peak_rss_mb),
        joined: m(&|r| r.join.connected as f64),
    }
}

/// Run the comparison: `rounds` rounds, Piazza first in odd rounds and
/// Janus first in even ones. `each` sees every finished run (to print its
/// summary). Errors starting or running an SFU end the comparison.
pub fn run(
    base: &Scenario,
    rounds: usize,
    programs: &Programs,
    show_progress: bool,
    each: &mut dyn FnMut(&RoundRun),
) -> Result<Comparison, LoadgenError> {
    let meta_start = Meta::at_start();
    let dir = std::env::temp_dir().join(format!(
        "piazza-loadgen-compare-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| LoadgenError::Io(e.to_string()))?;
    let result = run_rounds(base, rounds, programs, show_progress, each, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let runs = result?;
    let mut meta = meta_start;
    meta.finish();
    let sides = vec![side(&runs, Sfu::Piazza), side(&runs, Sfu::Janus)];
    let ratio = if sides[0].cpu_us_per_received_packet > 0.0 {
        sides[1].cpu_us_per_received_packet / sides[0].cpu_us_per_received_packet
    } else {
        0.0
    };
    Ok(Comparison {
        version: 1,
        meta,
        scenario: base.clone(),
        rounds,
        runs,
        sides,
        cpu_per_packet_ratio_janus_to_piazza: ratio,
        notes: vec![
            crate::run::janus::DIFFERENCES.to_string(),
            format!(
                "both SFUs started by the load generator on 127.0.0.1: Piazza's reference server with {} shard(s), Janus 1.x with only VideoRoom and the HTTP transport, debug_level {JANUS_DEBUG_LEVEL}; CPU is each process's utime+stime (/proc/PID/stat), per packet the clients received",
                base.shards
            ),
            "the load generator's clients run on the same machine as the SFU: read each run's validity verdict".into(),
        ],
    })
}

fn run_rounds(
    base: &Scenario,
    rounds: usize,
    programs: &Programs,
    show_progress: bool,
    each: &mut dyn FnMut(&RoundRun),
    dir: &Path,
) -> Result<Vec<RoundRun>, LoadgenError> {
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [Sfu::Piazza, Sfu::Janus]
        } else {
            [Sfu::Janus, Sfu::Piazza]
        };
        for (i, sfu) in order.into_iter().enumerate() {
            let sub = dir.join(format!("r{round}-{}", sfu.name()));
            std::fs::create_dir_all(&sub).map_err(|e| LoadgenError::Io(e.to_string()))?;
            let mut s = base.clone();
            s.mode = Mode::Target;
            s.sfu = sfu;
            let (mut server, admin_key) = match sfu {
                Sfu::Piazza => (
                    start_piazza(&programs.piazza, base.shards, base.participants, &sub)?,
                    None,
                ),
                Sfu::Janus => {
                    let (srv, key) = start_janus(&programs.janus, &sub)?;
                    (srv, Some(key))
                }
            };
            s.target = Some(server.url.clone());
            s.sfu_pid = Some(server.pid);
            eprintln!(
                "round {round}/{rounds}: {} (pid {}, {})",
                sfu.name(),
                server.pid,
                server.url
            );
            let progress = Progress::new(s.duration(), show_progress);
            let meta = Meta::at_start();
            let outcome = match &admin_key {
                Some(k) => crate::run::janus::run_with_key(&s, &server.url, &progress, Some(k)),
                None => run::run(&s, &progress),
            };
            progress.finish();
            server.stop();
            let outcome = outcome?;
            let mut meta = meta;
            meta.finish();
            let mut report = report::build(&s, &outcome, meta);
            report.decide();
            let r = RoundRun {
                round,
                position: i + 1,
                sfu,
                report,
            };
            each(&r);
            runs.push(r);
        }
    }
    Ok(runs)
}

/// The side-by-side metric rows of the terminal table and the HTML report:
/// name, Piazza's value, Janus's value, decimals, unit.
pub(crate) fn metric_rows(
    p: &Side,
    j: &Side,
) -> [(&'static str, f64, f64, usize, &'static str); 12] {
    [
        ("latency p50", p.latency_p50_ms, j.latency_p50_ms, 2, "ms"),
        ("latency p99", p.latency_p99_ms, j.latency_p99_ms, 2, "ms"),
        ("loss", p.loss_pct, j.loss_pct, 4, "%"),
        ("jitter", p.jitter_ms, j.jitter_ms, 2, "ms"),
        ("freezes", p.freezes, j.freezes, 0, ""),
        (
            "first frame p50",
            p.first_frame_p50_ms,
            j.first_frame_p50_ms,
            0,
            "ms",
        ),
        (
            "first frame p99",
            p.first_frame_p99_ms,
            j.first_frame_p99_ms,
            0,
            "ms",
        ),
        (
            "clients received",
            p.received_pps,
            j.received_pps,
            0,
            "packets/s",
        ),
        ("SFU forwarded", p.egress_pps, j.egress_pps, 0, "packets/s"),
        ("SFU process CPU", p.cpu_cores, j.cpu_cores, 2, "cores"),
        (
            "SFU CPU per received packet",
            p.cpu_us_per_received_packet,
            j.cpu_us_per_received_packet,
            2,
            "us",
        ),
        ("SFU peak RSS", p.peak_rss_mb, j.peak_rss_mb, 0, "MiB"),
    ]
}

/// The terminal table: one row per figure, Piazza and Janus side by side.
pub fn render_table(c: &Comparison) -> String {
    use std::fmt::Write;
    let (p, j) = (&c.sides[0], &c.sides[1]);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nPiazza vs Janus: {} room(s) x {} participants, {:.0} s per run, {} round(s), medians of the valid rounds",
        c.scenario.rooms, c.scenario.participants, c.scenario.duration_s, c.rounds
    );
    let _ = writeln!(out, "  {:<34} {:>14} {:>14}", "", "piazza", "janus");
    let row = |out: &mut String, name: &str, a: String, b: String| {
        let _ = writeln!(out, "  {name:<34} {a:>14} {b:>14}");
    };
    row(
        &mut out,
        "valid rounds",
        format!("{}/{}", p.valid_rounds, c.rounds),
        format!("{}/{}", j.valid_rounds, c.rounds),
    );
    row(
        &mut out,
        "joined",
        format!("{:.0}", p.joined),
        format!("{:.0}", j.joined),
    );
    let f = |v: f64, d: usize, unit: &str| format!("{v:.d$} {unit}");
    for (name, a, b, d, unit) in metric_rows(p, j) {
        row(&mut out, name, f(a, d, unit), f(b, d, unit));
    }
    let _ = writeln!(
        out,
        "  CPU per packet, janus / piazza: {:.2}x",
        c.cpu_per_packet_ratio_janus_to_piazza
    );
    for r in &c.runs {
        if !r.report.validity.valid {
            let _ = writeln!(
                out,
                "  INVALID  round {} {}: {}",
                r.round,
                r.sfu.name(),
                r.report.validity.reasons.join("; ")
            );
        }
    }
    for n in &c.notes {
        let _ = writeln!(out, "  note  {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }

    #[test]
    fn janus_config_loads_only_videoroom_and_http() {
        let files = janus_config(Path::new("/tmp/x"), 18088, "k");
        let main = &files[0].1;
        assert!(main.contains("debug_level = 3"));
        assert!(main.contains("ice_enforce_list = \"127.0.0.1\""));
        if Path::new(JANUS_LIB).exists() {
            assert!(!main.contains("libjanus_videoroom.so"));
            assert!(!main.contains("libjanus_http.so"));
        }
        assert!(files[1].1.contains("port = 18088"));
        assert!(files[1].1.contains("ip = \"127.0.0.1\""));
        assert!(files[2].1.contains("admin_key = \"k\""));
    }
}
