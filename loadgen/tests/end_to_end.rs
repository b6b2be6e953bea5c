//! The binary end to end: a few participants for 2 s against the embedded
//! engine over loopback, the JSON report's keys, plausible latency, and the
//! exit codes of a violated SLO and of `--target`.

use std::path::PathBuf;
use std::process::Command;

/// Runs of the binary one at a time: parallel tests starving each other
/// would make the validity check (rightly) call a normal run invalid.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The binary, writing its report directories under the temp dir (not
/// into the source tree).
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_piazza-loadgen"));
    c.arg("--out").arg(tmp("reports"));
    c
}

/// Run `cmd` (rebuilt by `make` for each try) until it is not an invalid
/// run (exit 5: the machine starved the clients, which these tests do not
/// test), at most three times.
fn run_valid(make: impl Fn() -> Command) -> std::process::Output {
    let mut out = make().output().expect("run the load generator");
    for _ in 0..2 {
        if out.status.code() != Some(5) {
            break;
        }
        out = make().output().expect("run the load generator");
    }
    out
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("piazza-loadgen-{}-{name}", std::process::id()))
}

#[test]
fn short_run_writes_every_report_key_with_plausible_latency() {
    let _serial = serial();
    let json = tmp("report.json");
    let html = tmp("report.html");
    let out = run_valid(|| {
        let mut c = bin();
        c.args([
            "-n", "3", "-d", "2", "--warmup", "0.5", "--slots", "2", "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg("--slo")
        .arg("join_failed=0");
        c
    });
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
    assert_eq!(r["version"], 2);
    assert_eq!(r["outcome"], "passed");
    assert_eq!(r["validity"]["valid"], true, "{text}");
    for key in [
        "/meta/date_utc",
        "/meta/git_commit",
        "/meta/command_line",
        "/meta/cpu_model",
        "/meta/cores",
        "/meta/loadavg_start",
        "/meta/loadavg_end",
        "/validity/schedule_lateness/p99_ms",
        "/validity/client_thread_cores",
        "/validity/machine/run_queue_mean",
        "/join/failures",
        "/join/not_attempted",
    ] {
        assert!(r.pointer(key).is_some(), "missing {key} in {text}");
    }
    assert!(
        r["meta"]["command_line"]
            .as_str()
            .unwrap()
            .contains("--slots 2")
    );
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
    // All over UDP, and an engine without ICE-TCP.
    assert_eq!(r["transport"]["udp_participants"], 3, "{text}");
    assert_eq!(r["transport"]["tcp_participants"], 0);
    assert!(r["transport"]["engine_tcp"].is_null(), "{text}");
    assert_eq!(r["participants"][0]["transport"], "udp");

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
    let _serial = serial();
    let out = run_valid(|| {
        let mut c = bin();
        c.args([
            "-n", "2", "-d", "1.5", "--warmup", "0.5", "--slots", "1", "--quiet",
        ])
        .args(["--slo", "p99_ms=0.001"]);
        c
    });
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

/// An end-to-end encrypted run says what its clients decrypted, and can be
/// held to no failure.
#[test]
fn an_e2ee_run_reports_what_the_clients_decrypted() {
    let _serial = serial();
    let json = tmp("e2ee.json");
    let out = run_valid(|| {
        let mut c = bin();
        c.args([
            "-n", "3", "-d", "2", "--warmup", "0.5", "--slots", "2", "--e2ee",
        ])
        .args(["--slo", "e2ee_failures=0"])
        .arg("--json")
        .arg(&json);
        c
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}", out.status);
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let r: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let decrypted = r["media"]["e2ee"]["decrypted"]
        .as_u64()
        .expect("e2ee.decrypted");
    assert!(decrypted > 100, "{text}");
    assert_eq!(r["media"]["e2ee"]["failures"], 0, "{text}");
    assert!(stdout.contains("received payloads decrypted"), "{stdout}");
    let _ = std::fs::remove_file(json);
}

/// Half the room over ICE-TCP (the engine's passive candidate, RFC 4571
/// frames on real loopback connections), half over UDP: everyone connects
/// and receives video from the others, and the report counts each
/// transport and the engine's TCP frames.
#[test]
fn a_tcp_run_carries_media_and_counts_its_transports() {
    let _serial = serial();
    let json = tmp("tcp.json");
    let html = tmp("tcp.html");
    let out = run_valid(|| {
        let mut c = bin();
        c.args([
            "-n",
            "4",
            "-d",
            "4",
            "--warmup",
            "1",
            "--slots",
            "3",
            "--tcp-share",
            "0.5",
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html);
        c
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let r: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let t = &r["transport"];
    assert_eq!(t["udp_participants"], 2, "{text}");
    assert_eq!(t["tcp_participants"], 2, "{text}");
    assert_eq!(t["udp_connected"], 2, "{text}");
    assert_eq!(t["tcp_connected"], 2, "{text}");
    let participants = r["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 4);
    let tcp = participants
        .iter()
        .filter(|p| p["transport"] == "tcp")
        .count();
    assert_eq!(tcp, 2, "{text}");
    // Every participant, on either transport, received camera frames from
    // the others in the window.
    for p in participants {
        let frames: u64 = p["layer_frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_u64().unwrap())
            .sum();
        assert!(frames > 0, "no video for {p}");
        assert_eq!(p["first_frame_missing"], false, "{p}");
    }
    // The engine saw exactly the two TCP clients' connections, and media
    // frames both ways on them.
    let e = &t["engine_tcp"]["total"];
    assert_eq!(e["validated"], 2, "{text}");
    assert_eq!(e["refused"], 0, "{text}");
    assert!(e["frames_in"].as_u64().unwrap() > 100, "{text}");
    assert!(e["frames_out"].as_u64().unwrap() > 100, "{text}");
    assert!(t["engine_tcp"]["frames_out_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        stdout.contains("2 UDP (2 connected), 2 TCP (2 connected)"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&html).expect("HTML report written");
    assert!(page.contains("2 TCP (2 connected)"));
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(html);
}

#[test]
fn bad_flags_say_what_is_wrong() {
    for (args, word) in [
        (&["--loss", "2"][..], "loss"),
        (&["--participants", "x"][..], "participants"),
        (&["--no-such-flag"][..], "no-such-flag"),
        (&["--target", "https://127.0.0.1:8080"][..], "--target"),
        (&["--target", "http://192.0.2.1:8080"][..], "loopback"),
        (&["--target", "http://127.0.0.1:notaport"][..], "port"),
        (
            &["--invite", "http://127.0.0.1:8080/r/room"][..],
            "--invite",
        ),
        (&["--capacity", "bananas"][..], "capacity"),
        (&["--starve-clients", "999"][..], "starve"),
        (&["--tcp-share", "1.5"][..], "tcp_share"),
        (&["--tcp-share=-0.1"][..], "tcp_share"),
        (&["--tcp-share", "1", "--in-process"][..], "tcp_share"),
        (
            &["--tcp-share", "1", "--target", "http://127.0.0.1:8080"][..],
            "tcp_share",
        ),
        (&["--tcp-share", "0.5", "--compare"][..], "tcp_share"),
    ] {
        let out = bin().args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(word), "{args:?}: {stderr}");
        // One clear line (clap adds a usage hint after a blank line).
        assert!(
            stderr.trim().lines().next().unwrap().starts_with("error:"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn help_shows_every_default() {
    let out = bin().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for shown in [
        "[default: 50]",
        "[default: 20.0]",
        "[default: 9]",
        "[default: 360]",
        "[default: loadgen-reports]",
        "[default: none]",
    ] {
        assert!(help.contains(shown), "{shown} missing in\n{help}");
    }
}

/// The clients fall behind on purpose (each client thread sleeps 120 ms of
/// every 200 ms): the run must be flagged invalid, exit 5 and say why; the
/// same scenario without starvation is valid.
#[test]
fn a_starved_run_is_flagged_invalid_and_a_normal_run_is_not() {
    let _serial = serial();
    let dir = tmp("starve");
    let _ = std::fs::remove_dir_all(&dir);
    let args = [
        "-n", "4", "-d", "4", "--warmup", "1", "--slots", "3", "--quiet",
    ];
    let starved = Command::new(env!("CARGO_BIN_EXE_piazza-loadgen"))
        .args(args)
        .args(["--starve-clients", "120", "--slo", "p99_ms=100000"])
        .arg("--out")
        .arg(&dir)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&starved.stdout);
    assert_eq!(starved.status.code(), Some(5), "{stdout}");
    assert!(stdout.contains("INVALID RUN"), "{stdout}");
    // The report went into one fresh directory, whose path was printed.
    let runs: Vec<_> = std::fs::read_dir(&dir)
        .expect("report directory made")
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1);
    let run_dir = runs[0].path();
    assert!(stdout.contains(&run_dir.display().to_string()), "{stdout}");
    let text = std::fs::read_to_string(run_dir.join("report.json")).expect("report.json");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["outcome"], "invalid");
    assert_eq!(r["validity"]["valid"], false);
    assert!(
        r["validity"]["schedule_lateness"]["p99_ms"]
            .as_f64()
            .unwrap()
            > 20.0
    );
    let page = std::fs::read_to_string(run_dir.join("report.html")).expect("report.html");
    assert!(page.contains("INVALID RUN"));

    // The same run without starvation is valid. Other processes on a busy
    // CI machine can starve it for real (and then it is rightly invalid):
    // up to three tries, one valid run needed.
    let mut tries = Vec::new();
    for _ in 0..3 {
        let normal = bin()
            .args(args)
            .arg("--json")
            .arg(dir.join("normal.json"))
            .output()
            .expect("run");
        let text = std::fs::read_to_string(dir.join("normal.json")).expect("normal.json");
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        if r["validity"]["valid"] == true {
            assert_eq!(r["outcome"], "passed", "{text}");
            assert_eq!(normal.status.code(), Some(0), "{text}");
            tries.clear();
            break;
        }
        assert_eq!(normal.status.code(), Some(5), "{text}");
        tries.push(r["validity"].to_string());
    }
    assert!(tries.is_empty(), "no valid normal run in 3: {tries:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// More participants than the run can join: it ends before the window
/// opens, exits 4 (not measured) and says why, grouped.
#[test]
fn an_oversized_room_is_not_measured_and_says_why() {
    let _serial = serial();
    let out = bin()
        .args([
            "--participants",
            "500",
            "-d",
            "1.5",
            "--warmup",
            "0.5",
            "--quiet",
        ])
        .arg("--no-report")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("NOT MEASURED"), "{stdout}");
    assert!(
        stdout.contains("never attempted") || stdout.contains("join failed"),
        "{stdout}"
    );
}
