//! `--target URL`: the load generator against the reference server, started
//! in this test process on an ephemeral loopback port, through its HTTP API.

use std::path::PathBuf;
use std::process::Command;

use piazza::server::{Server, ServerConfig};

/// Run the load generator with `args` until it is not an invalid run (exit
/// 5: the machine starved the clients, which these tests do not test), at
/// most three times.
fn run_valid(args: &[&str], json: &PathBuf) -> std::process::Output {
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_piazza-loadgen"))
            .args(args)
            .arg("--json")
            .arg(json)
            .output()
            .expect("run the load generator")
    };
    let mut out = run();
    for _ in 0..2 {
        if out.status.code() != Some(5) {
            break;
        }
        out = run();
    }
    out
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "piazza-loadgen-target-{}-{name}",
        std::process::id()
    ))
}

#[test]
fn target_runs_against_the_reference_server_through_its_http_api() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = ServerConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        shards: Some(1),
        ..Default::default()
    };
    let server = rt.block_on(Server::bind(config)).expect("server starts");
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });

    let json = tmp("report.json");
    let out = run_valid(
        &[
            "--target",
            &base,
            "--no-report",
            "-n",
            "3",
            "-d",
            "3",
            "--warmup",
            "0.5",
            "--slots",
            "2",
            "--quiet",
        ],
        &json,
    );
    let _ = stop.send(());
    rt.block_on(task).expect("server stops");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("external server {base}")),
        "{stdout}"
    );

    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let _ = std::fs::remove_file(&json);
    let r: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for key in [
        "/scenario/mode",
        "/scenario/target",
        "/latency_us/p50",
        "/latency_us/p99",
        "/media/egress_pps",
        "/media/received_pps",
        "/media/loss_ratio",
        "/media/freezes",
        "/media/paused_slots",
        "/media/layers/share",
        "/join/connected",
        "/join/first_frame_p99_ms",
        "/engine/shards",
        "/engine/cpu_s",
        "/engine/egress_pps_per_core",
        "/engine/peak_rss_mb",
        "/loadgen/cpu_s",
    ] {
        assert!(r.pointer(key).is_some(), "missing {key} in {text}");
    }
    assert_eq!(r["scenario"]["mode"], "target");
    assert_eq!(r["scenario"]["target"], base.as_str());
    // Everyone joined through the HTTP API and connected over UDP.
    assert_eq!(r["join"]["attempted"], 3);
    assert_eq!(r["join"]["connected"], 3);
    assert_eq!(r["join"]["failed"], 0);
    // The server cannot report disconnects through its API.
    assert!(r["join"]["disconnects"].is_null());
    assert_eq!(r["engine"]["shards"], 1);
    // Media flowed both ways through the server: it forwarded packets the
    // clients received, and its shard CPU came from its /metrics.
    assert!(r["media"]["ingress_pps"].as_f64().unwrap() > 0.0, "{text}");
    assert!(r["media"]["egress_pps"].as_f64().unwrap() > 0.0, "{text}");
    assert!(r["media"]["received_pps"].as_f64().unwrap() > 0.0, "{text}");
    assert!(r["latency_us"]["samples"].as_u64().unwrap() > 0, "{text}");
    assert!(r["engine"]["cpu_s"].as_f64().unwrap() > 0.0, "{text}");
    assert!(
        r["engine"]["egress_pps_per_core"].as_f64().unwrap() > 0.0,
        "{text}"
    );
    assert!(r["engine"]["peak_rss_mb"].as_f64().unwrap() > 0.0, "{text}");
}

#[test]
fn target_refuses_a_server_elsewhere_and_https() {
    for url in ["https://127.0.0.1:8080", "http://192.0.2.1:8080"] {
        let out = Command::new(env!("CARGO_BIN_EXE_piazza-loadgen"))
            .args(["--target", url, "--quiet", "-d", "1", "--no-report"])
            .output()
            .expect("run the load generator");
        assert_eq!(out.status.code(), Some(2), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--target"), "{url}: {stderr}");
    }
}

/// `--invite URL`: the load generator joins a room somebody else made (as a
/// person would paste the link a browser shows) and leaves it at the end;
/// the room stays open for its owner.
#[test]
fn invite_joins_an_existing_room_and_leaves_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = ServerConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        shards: Some(1),
        ..Default::default()
    };
    let server = rt.block_on(Server::bind(config)).expect("server starts");
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });

    // The owner makes a room, as the browser client would.
    let created: serde_json::Value = serde_json::from_str(
        &ureq::post(format!("{base}/v1/rooms"))
            .header("Content-Type", "application/json")
            .send(r#"{"name":"standup"}"#)
            .expect("create a room")
            .body_mut()
            .read_to_string()
            .expect("a body"),
    )
    .expect("JSON");
    let link = created["invite_url"]
        .as_str()
        .expect("invite_url")
        .to_string();
    let room = created["room"].as_str().unwrap().to_string();
    let owner = created["owner_token"].as_str().unwrap().to_string();

    let json = tmp("invite.json");
    let out = run_valid(
        &[
            "--invite",
            &link,
            "--no-report",
            "-n",
            "3",
            "-d",
            "3",
            "--warmup",
            "0.5",
            "--slots",
            "2",
            "--quiet",
        ],
        &json,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let after: serde_json::Value = serde_json::from_str(
        &ureq::get(format!("{base}/v1/rooms/{room}"))
            .header("Authorization", format!("Bearer {owner}"))
            .call()
            .expect("the room still exists")
            .body_mut()
            .read_to_string()
            .expect("a body"),
    )
    .expect("JSON");
    let _ = stop.send(());
    rt.block_on(task).expect("server stops");
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let _ = std::fs::remove_file(&json);
    let r: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(r["join"]["connected"], 3, "{text}");
    assert!(r["media"]["received_pps"].as_f64().unwrap() > 0.0, "{text}");
    // Everyone left; the owner's room is still there.
    assert_eq!(
        after["participants"].as_array().map(Vec::len),
        Some(0),
        "{after}"
    );
}
