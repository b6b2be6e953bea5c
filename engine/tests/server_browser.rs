//! The browser client in real headless Chromium against the reference
//! server, two scenarios:
//!
//! - `browser/e2e.mjs`: three participants join through invite links and
//!   decode each other, one shares a screen, the owner locks the room (a
//!   fourth gets 423), removes a participant, and leaves while the others
//!   keep receiving.
//! - `browser/e2ee.mjs`: chat in a normal room (everyone, private, history,
//!   rate limit), then an E2EE room where three participants decode each
//!   other through frame encryption, a participant without the room secret
//!   decodes nothing, and a removed participant cannot decrypt what is sent
//!   after the key change.
//!
//! - `browser/h264.mjs`: one page publishes its camera as H.264 simulcast,
//!   another (VP8 camera) decodes it as video/H264, also after the engine
//!   moves it up a layer, while the first decodes the second's VP8.
//!
//! - `browser/cluster.mjs`: failover in cluster mode. Redis and three
//!   `piazza` nodes as processes; two pages in a call through nodes that do
//!   not host the room; the owning node is killed with SIGKILL, and each
//!   page must be back in the room on a live node, decoding again, with the
//!   room's metadata intact, within 10 s of the node's TTL expiring.
//!
//! Each scenario is a script (playwright-core driving Debian's
//! `/usr/bin/chromium`); each test starts the server (or the cluster) on
//! 127.0.0.1 with ephemeral ports, runs its script, and checks the engine saw
//! the media. It installs nothing: `browser/ci.sh` installs chromium, Redis
//! and the npm packages, then runs these ignored tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use piazza::server::{Server, ServerConfig};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../browser")
}

#[test]
#[ignore = "needs chromium and browser/node_modules; run by browser/ci.sh"]
fn three_browsers_share_lock_kick_and_leave() {
    // The scenario takes ~20-40 s; a busy machine gets plenty more.
    run_scenario(
        "e2e.mjs",
        "browser-e2e",
        "three-participants.png",
        Duration::from_secs(300),
        1000,
    );
}

#[test]
#[ignore = "needs chromium and browser/node_modules; run by browser/ci.sh"]
fn an_h264_simulcast_camera_decodes_in_another_chromium() {
    // The scenario takes ~20-40 s; a busy machine gets plenty more.
    run_scenario(
        "h264.mjs",
        "browser-h264",
        "h264-bob.png",
        Duration::from_secs(240),
        // Two pages, about 7 s of media each way (one video slot and
        // audio): some hundreds of packets.
        300,
    );
}

#[test]
#[ignore = "needs chromium, browser/node_modules and redis-server; run by browser/ci.sh"]
fn a_chromium_client_rejoins_on_another_node_after_kill_9_of_its_node() {
    let chromium = prerequisites();
    // The default node TTL: heartbeats every 3.3 s. Chromium notices the
    // dead node before its entry expires, so the pages retry through the
    // 503s (`node_unreachable`) of the failover window.
    let ttl = Duration::from_secs(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (redis, nodes) = runtime.block_on(common::start_cluster(&["a", "b", "c"], ttl, &[]));
    let join = |f: fn(&common::Node) -> String| nodes.iter().map(f).collect::<Vec<_>>().join(",");
    let args = vec![
        "--nodes".to_string(),
        join(|n| n.url.clone()),
        "--pids".into(),
        join(|n| n.pid().to_string()),
        "--api-key".into(),
        common::API_KEY.into(),
        "--ttl-ms".into(),
        ttl.as_millis().to_string(),
    ];
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-cluster");
    // The scenario takes ~30 s; the script gives up at 200 s.
    let status = run_script(
        "cluster.mjs",
        &args,
        &out,
        &chromium,
        Duration::from_secs(240),
    );
    let passed = status.is_some_and(|s| s.success());
    if !passed {
        for n in &nodes {
            eprintln!(
                "--- log of node {} ({}):\n{}",
                n.url,
                n.log.display(),
                n.log_tail(40)
            );
        }
    }
    // Every node still running, and Redis, are killed by their PIDs here.
    drop(nodes);
    drop(redis);
    let status = status.unwrap_or_else(|| panic!("the cluster scenario ran past 240 s"));
    assert!(status.success(), "the cluster scenario failed: {status}");
    assert!(
        out.join("cluster-after.png").is_file(),
        "cluster-after.png was not written"
    );
}

#[test]
#[ignore = "needs chromium and browser/node_modules; run by browser/ci.sh"]
fn chat_and_an_end_to_end_encrypted_room_in_chromium() {
    // The scenario takes ~1-2 minutes; a busy machine gets plenty more.
    run_scenario(
        "e2ee.mjs",
        "browser-e2ee",
        "e2ee-three.png",
        Duration::from_secs(320),
        1000,
    );
}

/// The chromium to drive, after checking it and playwright-core are there.
fn prerequisites() -> String {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {} (browser/ci.sh does)",
        dir.display()
    );
    let chromium = std::env::var("PIAZZA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} not found: apt-get install -y chromium (browser/ci.sh does)"
    );
    chromium
}

/// Run `node browser/SCRIPT ARGS --out OUT --chromium CHROMIUM`; `None`
/// if it ran past `limit` (it is killed then).
fn run_script(
    script: &str,
    args: &[String],
    out: &Path,
    chromium: &str,
    limit: Duration,
) -> Option<ExitStatus> {
    let dir = browser_dir();
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--chromium")
        .arg(chromium)
        .current_dir(&dir)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (apt-get install -y nodejs npm)");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "browser scenario {script} took {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    status
}

/// Start the server, run `browser/SCRIPT` against it within `limit`, stop
/// the server, and check the script passed, the engine forwarded media and
/// the script left `screenshot` in its output folder `out_name`.
/// `min_forwarded`: RTP packets the engine must have forwarded by the end
/// (the page checks what it decoded; this checks it went through the
/// engine).
fn run_scenario(
    script: &str,
    out_name: &str,
    screenshot: &str,
    limit: Duration,
    min_forwarded: u64,
) {
    let chromium = prerequisites();

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
    let config = ServerConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        ..Default::default()
    };
    let server = runtime
        .block_on(Server::bind(config))
        .expect("server starts");
    let base = format!("http://{}", server.local_addr());
    let engine = server.engine();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run(async {
        let _ = stopped.await;
    }));

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(out_name);
    let status = run_script(script, &["--base".into(), base], &out, &chromium, limit);

    // A reading taken now, not the shards' last periodic snapshot.
    let stats = engine.refresh_stats().unwrap_or_else(|_| engine.stats());
    let _ = stop.send(());
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), serving).await })
        .expect("server stops within 10 s")
        .unwrap()
        .unwrap();

    let status = status.unwrap_or_else(|| panic!("the browser scenario ran past {limit:?}"));
    assert!(status.success(), "the browser scenario failed: {status}");
    let forwarded: u64 = stats.shards.iter().map(|s| s.core.rtp_forwarded).sum();
    assert!(
        forwarded >= min_forwarded,
        "the engine forwarded {forwarded} RTP packets (at least {min_forwarded} expected)"
    );
    assert!(
        out.join(screenshot).is_file(),
        "{screenshot} was not written"
    );
}
