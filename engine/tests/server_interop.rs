//! Interop with clients other than one Chromium, through the reference
//! server on loopback:
//!
//! - `aiortc_and_chromium_decode_each_other`: two aiortc (Python) peers and
//!   a Chromium page in one room, each decoding the others' video and audio.
//! - `firefox_and_chromium_decode_each_other`: Firefox ESR (headless, WebDriver
//!   BiDi) and Chromium, each decoding the other; Firefox's simulcast layers
//!   reach the Chromium subscriber.
//! - `relay_only_chromium_joins_through_coturn`: coturn started here on
//!   loopback with a shared secret; the server hands out time-limited TURN
//!   credentials; a Chromium page forced to relay and a UDP page decode each
//!   other.
//! - `chromium_without_udp_joins_over_ice_tcp`: the test makes two network
//!   namespaces joined by a veth pair, the server's and one whose nftables
//!   rules drop every UDP packet; a Chromium page in the second joins over
//!   ICE-TCP and exchanges media with two pages on UDP.
//! - `chromium_behind_a_narrow_downlink`: the same two namespaces, the
//!   second's downlink through a token bucket (`tc ... tbf`) cut to 500 and
//!   to 250 kbit/s; issue 14's rules for narrow links, in Chromium.
//!
//! The scenarios are `browser/interop/interop.mjs`; these tests start the
//! server (and coturn) and run it. They install nothing:
//! `browser/interop/ci.sh` installs chromium, firefox-esr, coturn, the npm
//! packages and a Python venv with aiortc, then runs these ignored tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use piazza::EngineStats;
use piazza::server::{IceServerConfig, Server, ServerConfig};

/// A scenario takes 20-60 s (the narrow one about 3 minutes); allow a busy
/// machine plenty more.
const NODE_LIMIT: Duration = Duration::from_secs(480);

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../browser/interop")
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{} not found: {what} (browser/interop/ci.sh does)",
        path.display()
    );
}

/// Start the server with `config`, run the scenario against it, stop the
/// server; returns the RTP packets the engine forwarded.
fn run_scenario(scenario: &str, config: ServerConfig, extra: &[String]) -> u64 {
    let stats = run_scenario_stats(scenario, config, extra);
    stats.shards.iter().map(|s| s.core.rtp_forwarded).sum()
}

/// [`run_scenario`], returning the engine's stats at the end. The HTTP API
/// listens on a free port of `config.http`'s IP.
fn run_scenario_stats(scenario: &str, mut config: ServerConfig, extra: &[String]) -> EngineStats {
    let dir = interop_dir();
    require(
        &dir.join("node_modules/playwright-core"),
        "run `npm ci` in browser/interop",
    );
    let chromium = std::env::var("PIAZZA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(Path::new(&chromium), "apt-get install -y chromium");

    let filter = std::env::var("PIAZZA_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    config.http.set_port(0);
    config.shards = Some(2);
    let server = runtime
        .block_on(Server::bind(config))
        .expect("server starts");
    let base = format!("http://{}", server.local_addr());
    let engine = server.engine();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run(async {
        let _ = stopped.await;
    }));

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop");
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(dir.join("interop.mjs"))
        .args([
            "--scenario",
            scenario,
            "--base",
            &base,
            "--chromium",
            &chromium,
        ])
        .arg("--out")
        .arg(&out)
        .args(extra)
        .current_dir(&dir)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (apt-get install -y nodejs npm)");
    let status = wait_bounded(&mut child, NODE_LIMIT);
    println!(
        "interop scenario {scenario} took {:.1} s; failure screenshots in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );

    let stats = engine.refresh_stats().expect("the engine runs");
    let _ = stop.send(());
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), serving).await })
        .expect("server stops within 10 s")
        .unwrap()
        .unwrap();
    let status =
        status.unwrap_or_else(|| panic!("the {scenario} scenario ran past {NODE_LIMIT:?}"));
    assert!(status.success(), "the {scenario} scenario failed: {status}");
    stats
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs chromium, python3 with aiortc and browser/interop/node_modules; run by browser/interop/ci.sh"]
fn aiortc_and_chromium_decode_each_other() {
    let python = std::env::var("PIAZZA_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| interop_dir().join(".venv/bin/python"));
    require(&python, "a Python venv with aiortc");
    let forwarded = run_scenario(
        "aiortc",
        ServerConfig::default(),
        &["--python".into(), python.display().to_string()],
    );
    assert!(
        forwarded > 100,
        "the engine forwarded {forwarded} RTP packets"
    );
}

#[test]
#[ignore = "needs chromium, firefox-esr and browser/interop/node_modules; run by browser/interop/ci.sh"]
fn firefox_and_chromium_decode_each_other() {
    let firefox = std::env::var("PIAZZA_FIREFOX").unwrap_or_else(|_| "/usr/bin/firefox-esr".into());
    require(Path::new(&firefox), "apt-get install -y firefox-esr");
    // Firefox's ICE does not pair its candidates with a loopback address
    // (its `media.peerconnection.ice.loopback` preference did not change
    // that here), so browser/interop/ci.sh runs this test in a network
    // namespace with a dummy interface on 198.18.0.1 and sets
    // PIAZZA_INTEROP_UDP_BIND to it.
    let mut config = ServerConfig::default();
    if let Ok(ip) = std::env::var("PIAZZA_INTEROP_UDP_BIND") {
        config.udp_bind = ip
            .parse()
            .expect("PIAZZA_INTEROP_UDP_BIND is an IP address");
    }
    let forwarded = run_scenario("firefox", config, &["--firefox".into(), firefox]);
    assert!(
        forwarded > 100,
        "the engine forwarded {forwarded} RTP packets"
    );
}

/// coturn on loopback, killed (by its pid) when dropped.
struct Coturn {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    // Bound and released: coturn binds it right after (a small race with
    // other programs, retried by the caller).
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_coturn(secret: &str) -> Coturn {
    let turnserver = std::env::var("PIAZZA_TURNSERVER").unwrap_or_else(|_| "turnserver".into());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("coturn");
    std::fs::create_dir_all(&dir).unwrap();
    for attempt in 0..5 {
        let port = free_udp_port();
        let log = dir.join(format!("turnserver-{port}.log"));
        let relay_min = 20000 + (port % 20000);
        let child = Command::new(&turnserver)
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                &format!("--min-port={relay_min}"),
                &format!("--max-port={}", relay_min + 500),
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=piazza.test",
                // The engine listens on loopback in this test; production
                // TURN servers must not relay to loopback.
                "--allow-loopback-peers",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--simple-log",
                // Logs each request it processes (ALLOCATE among them).
                "--verbose",
                &format!("--log-file={}", log.display()),
                &format!("--pidfile={}", dir.join(format!("{port}.pid")).display()),
                &format!("--userdb={}", dir.join(format!("{port}.db")).display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs (apt-get install -y coturn)");
        let mut coturn = Coturn { child, port, log };
        // Ready when it answers a STUN binding request.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let request = stun_binding_request();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if coturn.child.try_wait().unwrap().is_some() {
                break;
            }
            let _ = probe.send_to(&request, ("127.0.0.1", port));
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = probe.recv_from(&mut buf)
                && n >= 20
                && buf[0..2] == [0x01, 0x01]
            {
                println!("coturn listening on 127.0.0.1:{port} (attempt {attempt})");
                return coturn;
            }
        }
        println!(
            "coturn did not come up on port {port}; log:\n{}",
            std::fs::read_to_string(&coturn.log).unwrap_or_default()
        );
        let _ = coturn.child.kill();
        coturn.port = 0;
    }
    panic!("coturn did not start in 5 attempts");
}

/// A STUN binding request (RFC 8489 section 5) with a fixed transaction id.
fn stun_binding_request() -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(b"piazzaprobe!");
    m
}

#[test]
#[ignore = "needs chromium, coturn and browser/interop/node_modules; run by browser/interop/ci.sh"]
fn relay_only_chromium_joins_through_coturn() {
    let secret = format!("piazza-test-{}", std::process::id()) + "-shared-secret";
    let coturn = start_coturn(&secret);
    let config = ServerConfig {
        ice_servers: vec![IceServerConfig {
            urls: vec![
                format!("turn:127.0.0.1:{}?transport=udp", coturn.port),
                format!("turn:127.0.0.1:{}?transport=tcp", coturn.port),
            ],
            username: None,
            credential: None,
            secret: Some(secret.clone()),
            ttl: Some(Duration::from_secs(600)),
        }],
        ..Default::default()
    };
    let forwarded = run_scenario("turn", config, &[]);
    assert!(
        forwarded > 100,
        "the engine forwarded {forwarded} RTP packets"
    );
    let log = std::fs::read_to_string(&coturn.log).unwrap_or_default();
    // coturn logs each allocation it grants with the (REST) username.
    assert!(
        log.lines()
            .any(|l| l.contains("ALLOCATE processed, success")),
        "coturn granted no allocation; its log:\n{log}"
    );
}

/// Network namespaces made by a test, deleted when dropped.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Run `ip` (or, with `netns`, a command in that namespace); panics when it fails.
fn run(netns: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    match netns {
        Some(ns) => cmd.args(["netns", "exec", ns]).args(args),
        None => cmd.args(args),
    };
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e} (apt-get install -y iproute2)"));
    assert!(
        out.status.success(),
        "{netns:?} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Make network namespaces `server_ns` and `other_ns`, joined by a veth
/// pair (`v0` with `server_ip` in the first, `v1` with `other_ip` in the
/// second), each with a default route over it; deleted when the result is
/// dropped.
fn veth_namespaces(server_ns: &str, other_ns: &str, server_ip: &str, other_ip: &str) -> Namespaces {
    let mut namespaces = Namespaces(Vec::new());
    for ns in [server_ns, other_ns] {
        run(None, &["netns", "add", ns]);
        namespaces.0.push(ns.to_string());
    }
    for ns in [server_ns, other_ns] {
        run(Some(ns), &["ip", "link", "set", "lo", "up"]);
    }
    run(
        None,
        &[
            "-n", server_ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns",
            other_ns,
        ],
    );
    for (ns, dev, ip, gw) in [
        (server_ns, "v0", server_ip, other_ip),
        (other_ns, "v1", other_ip, server_ip),
    ] {
        run(
            None,
            &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
        );
        run(None, &["-n", ns, "link", "set", dev, "up"]);
        // Chromium gathers no host candidate without a default route.
        run(
            None,
            &["-n", ns, "route", "add", "default", "via", gw, "dev", dev],
        );
    }
    namespaces
}

/// The server's address in the ICE-TCP test's namespaces (RFC 2544
/// benchmarking range), and the address of the namespace without UDP.
const SERVER_IP: &str = "198.18.1.1";
const NO_UDP_IP: &str = "198.18.1.2";
/// Set for the test's second run, inside the server's namespace: the name of
/// the namespace without UDP.
const NO_UDP_NETNS: &str = "PIAZZA_INTEROP_NO_UDP_NETNS";

#[test]
#[ignore = "needs root (network namespaces, nftables), chromium and browser/interop/node_modules; run by browser/interop/ci.sh"]
fn chromium_without_udp_joins_over_ice_tcp() {
    if let Ok(no_udp) = std::env::var(NO_UDP_NETNS) {
        // The second run, in the server's namespace.
        let config = ServerConfig {
            http: format!("{SERVER_IP}:0").parse().unwrap(),
            udp_bind: SERVER_IP.parse().unwrap(),
            ice_tcp: true,
            ..Default::default()
        };
        let stats = run_scenario_stats("tcp", config, &["--blocked-netns".into(), no_udp]);
        let forwarded: u64 = stats.shards.iter().map(|s| s.core.rtp_forwarded).sum();
        assert!(
            forwarded > 100,
            "the engine forwarded {forwarded} RTP packets"
        );
        let validated: u64 = stats.shards.iter().map(|s| s.core.tcp.validated).sum();
        let frames: u64 = stats.shards.iter().map(|s| s.core.tcp.frames_in).sum();
        let sent: u64 = stats.shards.iter().map(|s| s.socket.tcp.frames_sent).sum();
        println!(
            "engine: {validated} TCP connection(s) validated, {frames} frames in, {sent} out; {:?}",
            stats.shards.iter().map(|s| s.core.tcp).collect::<Vec<_>>()
        );
        assert!(validated >= 1 && frames > 100 && sent > 100);
        for s in &stats.shards {
            assert_eq!(s.core.drops.total(), 0, "{:?}", s.core.drops);
        }
        return;
    }
    // The first run makes the namespaces: the server's, and one whose
    // firewall drops UDP both ways, joined by a veth pair; then runs this
    // test again in the server's namespace.
    let tag = std::process::id();
    let (server_ns, no_udp_ns) = (format!("pz-tcp-srv-{tag}"), format!("pz-tcp-noudp-{tag}"));
    let _namespaces = veth_namespaces(&server_ns, &no_udp_ns, SERVER_IP, NO_UDP_IP);
    let rules = "table inet no_udp {
        chain input { type filter hook input priority 0; policy accept; meta l4proto udp counter drop; }
        chain output { type filter hook output priority 0; policy accept; meta l4proto udp counter drop; }
    }";
    let rules_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("no-udp-{tag}.nft"));
    std::fs::write(&rules_file, rules).unwrap();
    let file = rules_file.display().to_string();
    run(Some(&no_udp_ns), &["nft", "-f", &file]);

    let exe = std::env::current_exe().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &server_ns])
        .arg(exe)
        .args([
            "chromium_without_udp_joins_over_ice_tcp",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(NO_UDP_NETNS, &no_udp_ns)
        .status()
        .expect("the test runs again in the server's namespace");
    let ruleset = run(Some(&no_udp_ns), &["nft", "list", "ruleset"]);
    println!("the namespace without UDP, after the run:\n{ruleset}");
    assert!(
        status.success(),
        "the run in the server's namespace failed: {status}"
    );
    // Chromium tried UDP (its host candidates, its checks) and the rules
    // dropped it: the page's media went over TCP for want of UDP.
    let dropped: u64 = ruleset
        .lines()
        .filter(|l| l.contains("udp counter"))
        .filter_map(|l| {
            l.split("packets ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(dropped > 0, "no UDP packet was dropped:\n{ruleset}");
}

/// The narrow-link test's addresses: the server's, and the narrow page's.
const NARROW_SERVER_IP: &str = "198.18.3.1";
const NARROW_IP: &str = "198.18.3.2";
/// Set for the narrow test's second run, inside the server's namespace: the
/// narrow page's namespace.
const NARROW_NETNS: &str = "PIAZZA_INTEROP_NARROW_NETNS";

/// Issue 14 in real Chromium: three pages, one of them in its own network
/// namespace whose downlink (the server's end of the veth pair, `v0`) goes
/// through a token bucket (`tc qdisc ... tbf`), cut from 2.5 Mbit/s to 500
/// kbit/s for 30 s (what the page needs, two 320x180 layers plus audio, is
/// about 430 kbit/s) and then to 250 kbit/s for 30 s (below the need). The
/// scenario (`narrow` in browser/interop/interop.mjs) measures and checks:
/// no pause at 500 kbit/s, at most one layer change per slot per 10 s,
/// under 1 s of freezes per tile, audio never stops, recovery within 5 s;
/// at 250 kbit/s the least important slot pauses first and stays paused;
/// the paused tile stays on the page (screenshot). Its JSON summary and the
/// screenshot land in `target/tmp/interop/narrow-*`.
#[test]
#[ignore = "needs root (network namespaces, tc), chromium and browser/interop/node_modules; not in CI yet, it fails about one run in two (docs/architecture.md); run it by hand"]
fn chromium_behind_a_narrow_downlink() {
    if let Ok(narrow) = std::env::var(NARROW_NETNS) {
        // The second run, in the server's namespace (where `v0` is).
        let config = ServerConfig {
            http: format!("{NARROW_SERVER_IP}:0").parse().unwrap(),
            udp_bind: NARROW_SERVER_IP.parse().unwrap(),
            ..Default::default()
        };
        let stats = run_scenario_stats(
            "narrow",
            config,
            &[
                "--narrow-netns".into(),
                narrow,
                "--limit-dev".into(),
                "v0".into(),
            ],
        );
        let forwarded: u64 = stats.shards.iter().map(|s| s.core.rtp_forwarded).sum();
        assert!(
            forwarded > 1000,
            "the engine forwarded {forwarded} RTP packets"
        );
        return;
    }
    let tag = std::process::id();
    let (server_ns, narrow_ns) = (format!("pz-nar-srv-{tag}"), format!("pz-nar-cli-{tag}"));
    let _namespaces = veth_namespaces(&server_ns, &narrow_ns, NARROW_SERVER_IP, NARROW_IP);
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &server_ns])
        .arg(exe)
        .args([
            "chromium_behind_a_narrow_downlink",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(NARROW_NETNS, &narrow_ns)
        .status()
        .expect("the test runs again in the server's namespace");
    let qdisc = run(
        Some(&server_ns),
        &["tc", "-s", "qdisc", "show", "dev", "v0"],
    );
    println!("the narrow page's downlink after the run:\n{qdisc}");
    assert!(
        status.success(),
        "the run in the server's namespace failed: {status}"
    );
    // The token bucket did limit: it queued or dropped packets.
    assert!(qdisc.contains("tbf"), "no token bucket on v0:\n{qdisc}");
}
