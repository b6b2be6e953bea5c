//! The binary end to end: a few participants for 2 s against the embedded
//! engine over loopback, the JSON report's keys, plausible latency, and the
//! exit codes of a violated SLO and of `--target`.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_piazza-loadgen"))
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("piazza-loadgen-{}-{name}", std::process::id()))
}

#[test]
fn short_run_writes_every_report_key_with_plausible_latency() {
    let json = tmp("report.json");
    let html = tmp("report.html");
    let out = bin()
        .args([
            "-n", "3", "-d", "2", "--warmup", "0.5", "--slots", "2", "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg("--slo")
        .arg("join_failed=0")
        .output()
        .expect("run the load generator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("latency"), "{stdout}");

    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let r: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for key in [
        "/version",
        "/scenario",
        "/rooms",
        "/participants_per_room",
        "/duration_s",
        "/latency_us/p50",
        "/latency_us/p90",
        "/latency_us/p99",
        "/latency_us/p999",
        "/latency_us/max",
        "/media/ingress_pps",
        "/media/egress_pps",
        "/media/egress_mbps",
        "/media/loss_ratio",
        "/media/jitter_ms",
        "/media/freezes",
        "/media/freeze_ms_total",
        "/media/layer_switches",
        "/media/paused_slots",
        "/media/pauses",
        "/media/paused_ms_total",
        "/media/layers/share",
        "/media/frame_gaps",
        "/join/p50_ms",
        "/join/p99_ms",
        "/join/first_frame_p99_ms",
        "/join/failed",
        "/engine/shards",
        "/engine/cpu_s",
        "/engine/egress_pps_per_core",
        "/engine/peak_rss_mb",
        "/slo/passed",
        "/slo/violations",
    ] {
        assert!(r.pointer(key).is_some(), "missing {key} in {text}");
    }
    assert_eq!(r["version"], 1);
    assert_eq!(r["rooms"], 1);
    assert_eq!(r["participants_per_room"], 3);
    assert_eq!(r["join"]["failed"], 0);
    assert_eq!(r["slo"]["passed"], true);
    // Loopback through an SFU: more than nothing, far less than a second
    // (the p99 bound is loose: CI machines are busy).
    let p50 = r["latency_us"]["p50"].as_u64().unwrap();
    let p99 = r["latency_us"]["p99"].as_u64().unwrap();
    assert!(p50 > 0 && p50 < 100_000, "p50 {p50} us");
    assert!(p99 >= p50 && p99 < 5_000_000, "p99 {p99} us");
    assert!(r["latency_us"]["samples"].as_u64().unwrap() > 100);
    assert!(r["media"]["egress_pps"].as_f64().unwrap() > 0.0);
    assert!(r["engine"]["egress_pps_per_core"].as_f64().unwrap() > 0.0);
    assert!(r["engine"]["peak_rss_mb"].as_f64().unwrap() > 0.0);
    // Two slots capped at 360p: the camera frames arrive on `l` or `m`.
    let layers = &r["media"]["layers"];
    assert!(layers["l"].as_u64().unwrap() + layers["m"].as_u64().unwrap() > 0);
    assert_eq!(layers["h"], 0);

    let page = std::fs::read_to_string(&html).expect("HTML report written");
    assert!(
        page.contains("<svg") && !page.contains("<script src"),
        "self-contained"
    );
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(html);
}

#[test]
fn violated_slo_exits_non_zero_and_names_the_threshold() {
    let out = bin()
        .args([
            "-n", "2", "-d", "1.5", "--warmup", "0.5", "--slots", "1", "--quiet",
        ])
        .args(["--slo", "p99_ms=0.001"])
        .output()
        .expect("run the load generator");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SLO FAILED") && stdout.contains("p99_ms=0.001"),
        "{stdout}"
    );
}

#[test]
fn bad_flags_say_what_is_wrong() {
    let out = bin().args(["--loss", "2"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loss"));
}
