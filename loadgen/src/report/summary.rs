//! The terminal summary printed at the end of every run.

use std::fmt::Write;

use crate::report::{Outcome, Report};
use crate::scenario::Mode;

/// The summary table as text.
pub fn render(r: &Report) -> String {
    let s = &r.scenario;
    let ms = |us: u64| us as f64 / 1000.0;
    let target = match s.mode {
        Mode::Embedded => format!(
            "embedded engine, {} shard(s), real {} on 127.0.0.1",
            r.engine.shards,
            if s.tcp_share > 0.0 {
                "UDP and ICE-TCP"
            } else {
                "UDP"
            }
        ),
        Mode::InProcess => "in-process simulator (virtual time)".to_string(),
        Mode::Target => format!(
            "external {}server {}",
            match s.sfu {
                crate::scenario::Sfu::Piazza => "",
                crate::scenario::Sfu::Janus => "Janus ",
            },
            s.target.as_deref().unwrap_or("?")
        ),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nPiazza load test: {} room(s) x {} participants, {:.1} s ({:.1} s measured), {target}",
        r.rooms, r.participants_per_room, r.duration_s, r.measured_s
    );
    let _ = writeln!(
        out,
        "  scenario  {} video slots{} + {} audio slots, {} speaker(s) rotating every {:.1} s, joins {}{}",
        s.video_slots,
        s.max_height
            .filter(|h| *h > 0)
            .map_or(String::new(), |h| format!(" (up to {h}p)")),
        s.audio_slots,
        s.speakers,
        s.speaker_rotation_s,
        if s.join_rate > 0.0 {
            format!("at {}/s", s.join_rate)
        } else {
            "all at once".into()
        },
        impairment(r)
    );
    let rows: Vec<(&str, String)> = vec![
        (
            "joins",
            format!(
                "{} ok, {} failed{}   join p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                r.join.connected,
                r.join.failed,
                if r.join.not_attempted > 0 {
                    format!(", {} never attempted", r.join.not_attempted)
                } else {
                    String::new()
                },
                r.join.p50_ms,
                r.join.p99_ms,
                r.join.max_ms
            ),
        ),
        (
            "first frame",
            format!(
                "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
                r.join.first_frame_p50_ms,
                r.join.first_frame_p99_ms,
                r.join.first_frame_max_ms,
                if r.join.first_frame_missing > 0 {
                    format!(
                        ", {} participant(s) missing a video",
                        r.join.first_frame_missing
                    )
                } else {
                    String::new()
                }
            ),
        ),
        (
            "latency",
            format!(
                "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
                ms(r.latency_us.p50),
                ms(r.latency_us.p90),
                ms(r.latency_us.p99),
                ms(r.latency_us.p999),
                ms(r.latency_us.max),
                r.latency_us.samples
            ),
        ),
        (
            "sfu latency",
            r.engine.sfu_latency.as_ref().map_or(
                "not exported by the target".into(),
                super::sfu_latency::summary_text,
            ),
        ),
        (
            "throughput",
            format!(
                "engine in {:.0} packets/s, out {:.0} packets/s ({:.1} Mbit/s); clients received {:.0} packets/s",
                r.media.ingress_pps, r.media.egress_pps, r.media.egress_mbps, r.media.received_pps
            ),
        ),
        (
            "quality",
            format!(
                "loss {:.4} % ({} of {} packets), jitter {:.3} ms (max {:.3} ms), freezes {} ({:.0} ms), longest frame gap {:.0} ms",
                r.media.loss_ratio * 100.0,
                r.media.packets_lost,
                r.media.packets_expected,
                r.media.jitter_ms,
                r.media.jitter_max_ms,
                r.media.freezes,
                r.media.freeze_ms_total,
                r.media.max_frame_gap_ms
            ),
        ),
        (
            "video",
            format!(
                "layers l {:.1} % / m {:.1} % / h {:.1} % of frames; paused slots {} ({} pauses, {:.0} ms)",
                r.media.layers.share[0] * 100.0,
                r.media.layers.share[1] * 100.0,
                r.media.layers.share[2] * 100.0,
                r.media.paused_slots,
                r.media.pauses,
                r.media.paused_ms_total
            ),
        ),
        (
            "narrow",
            r.media
                .narrow
                .as_ref()
                .map(|n| n.line())
                .unwrap_or_default(),
        ),
        (
            "e2ee",
            match &r.media.e2ee {
                Some(e) => format!(
                    "{} received payloads decrypted, {} did not (whole run)",
                    e.decrypted, e.failures
                ),
                None => String::new(),
            },
        ),
        (
            "switches",
            format!(
                "publisher {}, layer {}",
                r.media.publisher_switches, r.media.layer_switches
            ),
        ),
        (
            "engine",
            format!(
                "cpu {:.2} CPU-s ({:.2} cores), {:.0} egress packets/s per core ({:.0} ns CPU per packet), peak RSS {:.0} MiB",
                r.engine.cpu_s,
                r.engine.cpu_cores,
                r.engine.egress_pps_per_core,
                r.engine.ns_per_egress_packet,
                r.engine.peak_rss_mb
            ),
        ),
        ("transport", transport(r)),
        ("memory", memory(r)),
        (
            "loadgen",
            format!(
                "cpu {:.2} CPU-s on {} client thread(s){}; timer lateness p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
                r.loadgen.cpu_s,
                r.loadgen.client_threads,
                if r.validity.client_thread_cores.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} cores each in the window)",
                        r.validity
                            .client_thread_cores
                            .iter()
                            .map(|c| format!("{c:.2}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                r.validity.schedule_lateness.p50_ms,
                r.validity.schedule_lateness.p99_ms,
                r.validity.schedule_lateness.max_ms
            ),
        ),
        ("machine", machine(r)),
        (
            "run",
            format!(
                "{} commit {} on {} ({} core(s))",
                r.meta.date_utc,
                short(&r.meta.git_commit),
                r.meta.cpu_model,
                r.meta.cores
            ),
        ),
    ];
    // Without a window the media rows are zeros that describe nothing.
    let unmeasured = ["latency", "throughput", "quality", "video", "switches"];
    let mut said = false;
    for (k, v) in rows {
        // A row that does not apply to this run (e2ee without --e2ee).
        if v.is_empty() {
            continue;
        }
        if r.measured_s <= 0.0 && unmeasured.contains(&k) {
            if !said {
                said = true;
                let _ = writeln!(
                    out,
                    "  {:<11} not measured: the measurement window never opened",
                    "media"
                );
            }
            continue;
        }
        let _ = writeln!(out, "  {k:<11} {v}");
    }
    for g in r.media.frame_gaps.iter().filter(|g| g.freeze).take(5) {
        let _ = writeln!(
            out,
            "  freeze      {:.0} ms at {:.1} s: room {} subscriber {} slot {}, {}/{} -> {}/{}",
            g.gap_ms, g.at_s, g.room, g.subscriber, g.slot, g.from.0, g.from.1, g.to.0, g.to.1
        );
    }
    for f in r.join.failures.iter().take(10) {
        let _ = writeln!(out, "  join failed {} x {}", f.count, f.reason);
    }
    if let Some(f) = &r.flood {
        let d = &f.engine_drops.drops;
        let _ = writeln!(
            out,
            "  flood       {} datagrams in {:.1} s ({} pps target); engine drops {} (unknown_source {}, rate_limited {}, unknown_ufrag {}, address_limit {}, throttled {}, malformed {}, rejected {}); RSS {:.0} / {:.0} / {:.0} MiB at flood start / stop / end",
            f.sent.datagrams,
            f.sent.seconds,
            f.pps,
            f.engine_drops.total().saturating_sub(f.drops_before_total),
            d.unknown_source,
            d.rate_limited,
            d.unknown_ufrag,
            d.address_limit,
            d.throttled,
            d.malformed,
            d.rejected,
            f.rss_mb_at_start,
            f.rss_mb_at_stop,
            f.rss_mb_at_end
        );
    }
    if let Some(c) = &r.cluster {
        for n in &c.nodes {
            let _ = writeln!(
                out,
                "  node        {} {}: {} rooms, {} participants at the window, {:.0} pkt/s out, {:.2} cores; {} joins sent; {}",
                n.url,
                n.node.as_deref().unwrap_or("-"),
                n.rooms,
                n.participants,
                n.egress_pps,
                n.cpu_cores,
                n.joins_sent,
                match (n.up_at_end, n.rooms_at_end, n.participants_at_end) {
                    (true, Some(rooms), Some(p)) =>
                        format!("{rooms} rooms, {p} participants at the end"),
                    _ => "down at the end".to_string(),
                }
            );
        }
        if let Some(j) = &c.rejoins {
            let s = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} s"));
            let _ = writeln!(
                out,
                "  rejoins     {} sessions lost, {} rejoined, {} not; last datagram to rejoined {} median, {} max; to media again {} median, {} max",
                j.lost,
                j.rejoined,
                j.failed,
                s(j.rejoined_s_p50),
                s(j.rejoined_s_max),
                s(j.media_s_p50),
                s(j.media_s_max)
            );
            for f in j.sessions.iter().filter(|r| r.rejoined_s.is_none()).take(5) {
                let _ = writeln!(
                    out,
                    "  not back    room {} lost at {:.1} s ({}), {} attempts: {}",
                    f.room,
                    f.lost_at_s,
                    f.reason,
                    f.attempts,
                    f.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note        {n}");
    }
    match r.outcome {
        Outcome::NotMeasured => {
            let _ = writeln!(
                out,
                "\n  NOT MEASURED  {}",
                if r.measured_s <= 0.0 {
                    "the measurement window never opened (see the notes): no figure above describes a running room"
                } else {
                    "most joins failed (reasons above): the figures describe a partial room"
                }
            );
        }
        Outcome::Invalid => {
            let _ = writeln!(
                out,
                "\n  INVALID RUN  the load generator, not the SFU, was the bottleneck; latency, jitter and freezes above describe the clients' starvation:"
            );
            for reason in &r.validity.reasons {
                let _ = writeln!(out, "               - {reason}");
            }
        }
        Outcome::Passed | Outcome::SloFailed => {}
    }
    if s.slo.is_some() && r.outcome != Outcome::NotMeasured && r.outcome != Outcome::Invalid {
        if r.slo.passed {
            let _ = writeln!(
                out,
                "  SLO         passed ({})",
                s.slo.as_deref().unwrap_or("")
            );
        } else {
            for v in &r.slo.violations {
                let _ = writeln!(out, "  SLO FAILED  {v}");
            }
        }
    }
    out
}

/// A commit hash shortened to 12 characters (a `-dirty` mark kept).
fn short(commit: &str) -> String {
    match commit.split_once('-') {
        Some((h, rest)) => format!("{}-{rest}", &h[..h.len().min(12)]),
        None => commit[..commit.len().min(12)].to_string(),
    }
}

fn machine(r: &Report) -> String {
    let m = &r.validity.machine;
    format!(
        "load average {:.2} at start, {:.2} at end; run queue mean {:.1}, max {} tasks; cpu busy {:.0} %{}",
        r.meta.loadavg_start[0],
        r.meta.loadavg_end[0],
        m.run_queue_mean,
        m.run_queue_max,
        m.cpu_busy * 100.0,
        m.cpu_pressure.map_or(String::new(), |p| format!(
            ", tasks waiting for a CPU {:.0} % of the time (PSI)",
            p * 100.0
        ))
    )
}

fn impairment(r: &Report) -> String {
    let s = &r.scenario;
    let mut parts = Vec::new();
    if s.loss > 0.0 {
        parts.push(format!("loss {:.2} %", s.loss * 100.0));
    }
    if s.delay_ms > 0.0 || s.delay_jitter_ms > 0.0 {
        parts.push(format!(
            "delay {} ms + 0..{} ms",
            s.delay_ms, s.delay_jitter_ms
        ));
    }
    if let Some(k) = s.downlink_kbps {
        parts.push(format!("downlink {k} kbit/s"));
    }
    if s.churn_per_min > 0.0 {
        parts.push(format!("churn {}/min per room", s.churn_per_min));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

/// The memory row: resident set and heap over the window, with their
/// trend (a soak's leak check).
/// Participants per transport, and the engine's ICE-TCP counters (the
/// summary's and the HTML page's line).
pub fn transport(r: &Report) -> String {
    let t = &r.transport;
    let mut line = format!(
        "{} UDP ({} connected), {} TCP ({} connected)",
        t.udp_participants, t.udp_connected, t.tcp_participants, t.tcp_connected
    );
    if let Some(e) = &t.engine_tcp {
        let _ = write!(
            line,
            "; engine ICE-TCP: {} connections accepted, {} open at the end, {} refused, frames in {:.0}/s, out {:.0}/s in the window ({} in, {} out in the run, {} dropped on full send queues)",
            e.total.accepted,
            e.total.open,
            e.total.refused,
            e.frames_in_per_s,
            e.frames_out_per_s,
            e.total.frames_in,
            e.total.frames_out,
            e.total.send_dropped
        );
    }
    line
}

fn memory(r: &Report) -> String {
    let Some(m) = &r.engine.memory else {
        return "not sampled".into();
    };
    let mut out = format!(
        "RSS {:.1} -> {:.1} MiB over the window (trend {:+.1} MiB/h)",
        m.rss_mb_start, m.rss_mb_end, m.rss_trend_mb_per_h
    );
    if let (Some(a), Some(b), Some(t)) = (m.heap_mb_start, m.heap_mb_end, m.heap_trend_mb_per_h) {
        out += &format!(", heap {a:.1} -> {b:.1} MiB (trend {t:+.1} MiB/h)");
    }
    if let Some(k) = m.heap_kb_per_participant {
        out += &format!(", {k:.0} KiB heap per participant");
    }
    out
}
