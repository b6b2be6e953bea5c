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
//!
//! The scenarios are `browser/interop/interop.mjs`; these tests start the
//! server (and coturn) and run it. They install nothing:
//! `browser/interop/ci.sh` installs chromium, firefox-esr, coturn, the npm
//! packages and a Python venv with aiortc, then runs these ignored tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use piazza::server::{IceServerConfig, Server, ServerConfig};

/// A scenario takes 20-60 s; allow a busy machine plenty more.
const NODE_LIMIT: Duration = Duration::from_secs(300);

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
fn run_scenario(scenario: &str, mut config: ServerConfig, extra: &[String]) -> u64 {
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
    config.http = "127.0.0.1:0".parse().unwrap();
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

    let stats = engine.stats();
    let _ = stop.send(());
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), serving).await })
        .expect("server stops within 10 s")
        .unwrap()
        .unwrap();
    let status =
        status.unwrap_or_else(|| panic!("the {scenario} scenario ran past {NODE_LIMIT:?}"));
    assert!(status.success(), "the {scenario} scenario failed: {status}");
    stats.shards.iter().map(|s| s.core.rtp_forwarded).sum()
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
