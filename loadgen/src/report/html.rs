//! The HTML report: one self-contained page (inline CSS and SVG, no
//! script, nothing fetched) with the summary, the latency histogram,
//! latency and throughput over time, and join times.

use std::fmt::Write;

use crate::report::{Outcome, Report};

const W: f64 = 540.0;
const H: f64 = 260.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 42.0;
const BLUE: &str = "#2563eb";
const ORANGE: &str = "#ea580c";
const GREEN: &str = "#16a34a";
const GREY: &str = "#6b7280";

/// Escape text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// "Nice" tick values covering `lo..=hi` (steps of 1, 2 or 5 x 10^k).
pub fn ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).ceil() * step;
    let mut v = Vec::new();
    let mut t = start;
    while t <= hi + step * 1e-9 && v.len() < 50 {
        v.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    v
}

/// The smallest "nice" tick at or above `max` (1 for nothing to show).
fn nice_top(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let t = ticks(0.0, max, 5);
    let step = if t.len() >= 2 { t[1] - t[0] } else { max };
    (max / step).ceil() * step
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v.abs() >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// A plot area with linear or log x and linear y.
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    log_x: bool,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        let (a, b, x) = if self.log_x {
            (self.x0.log10(), self.x1.log10(), x.max(self.x0).log10())
        } else {
            (self.x0, self.x1, x)
        };
        LEFT + (x - a) / (b - a).max(1e-12) * (W - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y - self.y0) / (self.y1 - self.y0).max(1e-12) * (H - TOP - BOTTOM)
    }
}

fn open_svg(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{LEFT}" y="18" class="title">{t}</text>"#,
        t = esc(title)
    );
}

fn axes(out: &mut String, f: &Frame, x_label: &str, y_label: &str) {
    // Y grid and labels.
    for t in ticks(f.y0, f.y1, 5) {
        let y = f.py(t);
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{l}</text>"#,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            l = fmt_tick(t)
        );
    }
    // X ticks.
    let xt: Vec<f64> = if f.log_x {
        let mut v = Vec::new();
        let mut d = 10f64.powf(f.x0.log10().floor());
        while d <= f.x1 * 1.0001 {
            if d >= f.x0 * 0.9999 {
                v.push(d);
            }
            d *= 10.0;
        }
        v
    } else {
        ticks(f.x0, f.x1, 6)
    };
    for t in xt {
        let x = f.px(t);
        let label = if f.log_x { log_label(t) } else { fmt_tick(t) };
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{y1}" y2="{y2}" class="axis"/><text x="{x:.1}" y="{ty}" class="tick" text-anchor="middle">{label}</text>"#,
            y1 = H - BOTTOM,
            y2 = H - BOTTOM + 4.0,
            ty = H - BOTTOM + 16.0
        );
    }
    let _ = write!(
        out,
        r#"<line x1="{LEFT}" x2="{x2}" y1="{y}" y2="{y}" class="axis"/><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{y}" class="axis"/><text x="{cx}" y="{ly}" class="label" text-anchor="middle">{xl}</text><text x="14" y="{cy}" class="label" text-anchor="middle" transform="rotate(-90 14 {cy})">{yl}</text>"#,
        x2 = W - RIGHT,
        y = H - BOTTOM,
        cx = (LEFT + W - RIGHT) / 2.0,
        ly = H - 6.0,
        cy = (TOP + H - BOTTOM) / 2.0,
        xl = esc(x_label),
        yl = esc(y_label)
    );
}

fn log_label(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1000.0 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} us", trim(us))
    }
}

fn legend(out: &mut String, items: &[(&str, &str)]) {
    let mut x = W - RIGHT;
    for (name, color) in items.iter().rev() {
        x -= 12.0 + name.len() as f64 * 6.5 + 16.0;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="26" width="12" height="8" fill="{color}"/><text x="{tx:.1}" y="34" class="tick">{n}</text>"#,
            tx = x + 16.0,
            n = esc(name)
        );
    }
}

/// One line of a chart: name, colour, points.
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Lines over time, with the measurement window shaded.
fn line_chart(
    title: &str,
    y_label: &str,
    lines: &[Line<'_>],
    window: (f64, f64),
    x_max: f64,
) -> String {
    let mut out = String::new();
    open_svg(&mut out, title);
    let y_max = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let f = Frame {
        x0: 0.0,
        x1: x_max.max(1.0),
        y0: 0.0,
        y1: nice_top(y_max * 1.05),
        log_x: false,
    };
    if window.1 > window.0 {
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{TOP}" width="{w:.1}" height="{h}" class="window"/>"#,
            x = f.px(window.0),
            w = f.px(window.1) - f.px(window.0),
            h = H - TOP - BOTTOM
        );
    }
    axes(&mut out, &f, "time since start (s)", y_label);
    for (_, color, pts) in lines {
        if pts.is_empty() {
            continue;
        }
        let d: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", f.px(*x), f.py(*y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            d.join(" ")
        );
    }
    let items: Vec<(&str, &str)> = lines.iter().map(|l| (l.0, l.1)).collect();
    legend(&mut out, &items);
    out.push_str("</svg>");
    out
}

/// The latency distribution on a log axis, percent of samples per bucket.
fn histogram_chart(r: &Report) -> String {
    let mut out = String::new();
    open_svg(
        &mut out,
        "One-way latency distribution (measurement window)",
    );
    let total: u64 = r.latency_histogram.iter().map(|b| b[1]).sum();
    if total == 0 {
        let _ = write!(
            out,
            r#"<text x="{LEFT}" y="{y}" class="label">no latency samples</text></svg>"#,
            y = H / 2.0
        );
        return out;
    }
    let first = r.latency_histogram[0][0] as f64;
    let last = r.latency_histogram[r.latency_histogram.len() - 1][0] as f64;
    let x0 = 10f64.powf((first / 10f64.powf(0.1)).max(1.0).log10().floor());
    let x1 = 10f64.powf(last.log10().ceil()).max(x0 * 10.0);
    let max_pct = r
        .latency_histogram
        .iter()
        .map(|b| b[1] as f64 * 100.0 / total as f64)
        .fold(0.0, f64::max);
    let f = Frame {
        x0,
        x1,
        y0: 0.0,
        y1: nice_top(max_pct * 1.15),
        log_x: true,
    };
    axes(&mut out, &f, "one-way latency (log scale)", "% of packets");
    for b in &r.latency_histogram {
        let hi = b[0] as f64;
        let lo = hi / 10f64.powf(0.1);
        let pct = b[1] as f64 * 100.0 / total as f64;
        let (xa, xb) = (f.px(lo), f.px(hi));
        let y = f.py(pct);
        let _ = write!(
            out,
            r#"<rect x="{xa:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{BLUE}"><title>{l}..{u}: {pct:.2} %</title></rect>"#,
            w = (xb - xa - 1.0).max(1.0),
            h = (H - BOTTOM - y).max(0.0),
            l = log_label(lo),
            u = log_label(hi)
        );
    }
    // Labels on staggered rows so close percentiles stay readable.
    for (row, (name, v, color)) in [
        ("p50", r.latency_us.p50, GREEN),
        ("p99", r.latency_us.p99, ORANGE),
        ("p99.9", r.latency_us.p999, GREY),
    ]
    .into_iter()
    .enumerate()
    {
        let x = f.px((v as f64).max(x0));
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y}" stroke="{color}" stroke-dasharray="4 3" stroke-width="1.5"/><text x="{tx:.1}" y="{ty}" class="tick" fill="{color}">{name}</text>"#,
            y = H - BOTTOM,
            tx = x + 3.0,
            ty = TOP - 12.0 + 11.0 * row as f64
        );
    }
    out.push_str("</svg>");
    out
}

/// Join and first-frame times of every participant, by when it joined.
fn join_chart(r: &Report) -> String {
    let mut out = String::new();
    open_svg(
        &mut out,
        "Join time and time to first frame, per participant",
    );
    let joins: Vec<(f64, f64)> = r
        .participants
        .iter()
        .filter_map(|p| p.join_ms.map(|j| (p.join_at_s, j)))
        .collect();
    let firsts: Vec<(f64, f64)> = r
        .participants
        .iter()
        .filter_map(|p| p.first_frame_ms.map(|j| (p.join_at_s, j)))
        .collect();
    let x_max = r
        .participants
        .iter()
        .map(|p| p.join_at_s)
        .fold(0.0, f64::max);
    let y_max = joins.iter().chain(&firsts).map(|p| p.1).fold(0.0, f64::max);
    let f = Frame {
        x0: 0.0,
        x1: nice_top((x_max * 1.05).max(0.1)),
        y0: 0.0,
        y1: nice_top((y_max * 1.1).max(1.0)),
        log_x: false,
    };
    axes(
        &mut out,
        &f,
        "join requested at (s since start)",
        "ms after the join request",
    );
    for (pts, color, shape) in [(&firsts, ORANGE, "rect"), (&joins, BLUE, "circle")] {
        for (x, y) in pts.iter() {
            let (cx, cy) = (f.px(*x), f.py(*y));
            if shape == "circle" {
                let _ = write!(
                    out,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{color}" fill-opacity="0.8"/>"#
                );
            } else {
                let _ = write!(
                    out,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="6" height="6" fill="{color}" fill-opacity="0.8"/>"#,
                    x = cx - 3.0,
                    y = cy - 3.0
                );
            }
        }
    }
    legend(
        &mut out,
        &[
            ("connected (ICE+DTLS)", BLUE),
            ("first frame of every video", ORANGE),
        ],
    );
    out.push_str("</svg>");
    out
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let s = &r.series;
    let window = (r.duration_s - r.measured_s, r.duration_s);
    let x_max = s
        .t_s
        .last()
        .map_or(r.duration_s, |t| t + s.bucket_s)
        .max(r.duration_s);
    let mid = |i: usize| s.t_s[i] + s.bucket_s / 2.0;
    let pick = |v: &[f64]| -> Vec<(f64, f64)> {
        (0..v.len().min(s.t_s.len()))
            .map(|i| (mid(i), v[i]))
            .collect()
    };
    let pick_us = |v: &[u64]| -> Vec<(f64, f64)> {
        (0..v.len().min(s.t_s.len()))
            .filter(|&i| v[i] > 0)
            .map(|i| (mid(i), v[i] as f64 / 1000.0))
            .collect()
    };
    let latency_chart = line_chart(
        "One-way latency over time",
        "ms",
        &[
            ("p50", GREEN, pick_us(&s.p50_us)),
            ("p99", ORANGE, pick_us(&s.p99_us)),
        ],
        window,
        x_max,
    );
    let throughput_chart = line_chart(
        "Packets per second over time",
        "packets/s",
        &[
            ("engine forwarded", BLUE, pick(&s.egress_pps)),
            ("clients received", ORANGE, pick(&s.received_pps)),
        ],
        window,
        x_max,
    );
    let cpu_chart = line_chart(
        "Engine CPU over time (shard threads)",
        "cores",
        &[("engine cores", BLUE, pick(&s.engine_cores))],
        window,
        x_max,
    );

    let rows: Vec<(&str, String)> = vec![
        (
            "Participants",
            format!("{} room(s) x {}", r.rooms, r.participants_per_room),
        ),
        (
            "Run",
            format!(
                "{:.1} s, {:.1} s measured ({:?})",
                r.duration_s, r.measured_s, r.scenario.mode
            ),
        ),
        (
            "Joins",
            format!(
                "{} ok, {} failed; p50 {:.1} ms, p99 {:.1} ms",
                r.join.connected, r.join.failed, r.join.p50_ms, r.join.p99_ms
            ),
        ),
        (
            "First frame",
            format!(
                "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                r.join.first_frame_p50_ms, r.join.first_frame_p99_ms, r.join.first_frame_max_ms
            ),
        ),
        (
            "Latency",
            format!(
                "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                ms(r.latency_us.p50),
                ms(r.latency_us.p90),
                ms(r.latency_us.p99),
                ms(r.latency_us.p999),
                ms(r.latency_us.max)
            ),
        ),
        (
            "Throughput",
            format!(
                "engine in {:.0} packets/s, out {:.0} packets/s ({:.1} Mbit/s)",
                r.media.ingress_pps, r.media.egress_pps, r.media.egress_mbps
            ),
        ),
        (
            "Quality",
            format!(
                "loss {:.4} %, jitter {:.3} ms, freezes {} ({:.0} ms)",
                r.media.loss_ratio * 100.0,
                r.media.jitter_ms,
                r.media.freezes,
                r.media.freeze_ms_total
            ),
        ),
        (
            "Video",
            format!(
                "layers l {:.1} % / m {:.1} % / h {:.1} % of frames; {} slot(s) paused by the engine ({:.0} ms)",
                r.media.layers.share[0] * 100.0,
                r.media.layers.share[1] * 100.0,
                r.media.layers.share[2] * 100.0,
                r.media.paused_slots,
                r.media.paused_ms_total
            ),
        ),
        (
            "Narrow link",
            r.media
                .narrow
                .as_ref()
                .map_or_else(|| "no downlink cap".into(), |n| n.line()),
        ),
        (
            "Engine",
            format!(
                "{:.2} CPU-s ({:.2} cores), {:.0} egress packets/s per core ({:.0} ns per packet), peak RSS {:.0} MiB",
                r.engine.cpu_s,
                r.engine.cpu_cores,
                r.engine.egress_pps_per_core,
                r.engine.ns_per_egress_packet,
                r.engine.peak_rss_mb
            ),
        ),
        ("Transport", crate::report::summary::transport(r)),
        (
            "Load generator",
            format!(
                "{:.2} CPU-s; timer lateness p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; client threads {} cores in the window",
                r.loadgen.cpu_s,
                r.validity.schedule_lateness.p50_ms,
                r.validity.schedule_lateness.p99_ms,
                r.validity.schedule_lateness.max_ms,
                r.validity
                    .client_thread_cores
                    .iter()
                    .map(|c| format!("{c:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        ),
        (
            "Machine",
            format!(
                "{} ({} cores), host {}; load average {:.2} / {:.2} / {:.2} at start, {:.2} / {:.2} / {:.2} at end; run queue mean {:.1}, cpu busy {:.0} %{}",
                r.meta.cpu_model,
                r.meta.cores,
                r.meta.host,
                r.meta.loadavg_start[0],
                r.meta.loadavg_start[1],
                r.meta.loadavg_start[2],
                r.meta.loadavg_end[0],
                r.meta.loadavg_end[1],
                r.meta.loadavg_end[2],
                r.validity.machine.run_queue_mean,
                r.validity.machine.cpu_busy * 100.0,
                r.validity
                    .machine
                    .cpu_pressure
                    .map_or(String::new(), |p| format!(
                        ", CPU pressure (PSI some) {:.0} %",
                        p * 100.0
                    ))
            ),
        ),
        ("Date", r.meta.date_utc.clone()),
        ("Commit", r.meta.git_commit.clone()),
        ("Command", r.meta.command_line.clone()),
    ];
    let mut table = String::new();
    for (k, v) in rows {
        let _ = write!(table, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    let slo = if r.scenario.slo.is_none() {
        String::new()
    } else if r.slo.passed {
        format!(
            r#"<p class="ok">SLO passed: {}</p>"#,
            esc(r.scenario.slo.as_deref().unwrap_or(""))
        )
    } else {
        let items: String = r
            .slo
            .violations
            .iter()
            .map(|v| format!("<li>{}</li>", esc(v)))
            .collect();
        format!(r#"<div class="bad">SLO violated<ul>{items}</ul></div>"#)
    };
    let banner = match r.outcome {
        Outcome::Invalid => {
            let items: String = r
                .validity
                .reasons
                .iter()
                .map(|v| format!("<li>{}</li>", esc(v)))
                .collect();
            format!(
                r#"<div class="bad banner">INVALID RUN: the load generator, not the SFU, was the bottleneck; latency, jitter and freezes describe the clients' starvation.<ul>{items}</ul></div>"#
            )
        }
        Outcome::NotMeasured => format!(
            r#"<div class="bad banner">NOT MEASURED: {}</div>"#,
            if r.measured_s <= 0.0 {
                "the measurement window never opened (see the notes)"
            } else {
                "most joins failed (see the join failures)"
            }
        ),
        Outcome::Passed | Outcome::SloFailed => String::new(),
    };
    let failures: String = if r.join.failures.is_empty() {
        String::new()
    } else {
        let items: String = r
            .join
            .failures
            .iter()
            .map(|f| format!("<li>{} x {}</li>", f.count, esc(&f.reason)))
            .collect();
        format!("<h2>Join failures</h2><ul>{items}</ul>")
    };
    let notes: String = r
        .notes
        .iter()
        .map(|n| format!("<li>{}</li>", esc(n)))
        .collect();
    let scenario = serde_json::to_string_pretty(&r.scenario).unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Piazza load test</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #111827; max-width: 1180px; }}
h1 {{ font-size: 20px; margin: 0 0 12px; }}
table {{ border-collapse: collapse; margin-bottom: 12px; }}
th {{ text-align: left; padding: 2px 16px 2px 0; color: #374151; font-weight: 600; }}
td {{ padding: 2px 0; font-variant-numeric: tabular-nums; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 16px; }}
.charts svg {{ border: 1px solid #e5e7eb; border-radius: 6px; background: #fff; }}
svg .title {{ font-size: 13px; font-weight: 600; fill: #111827; }}
svg .tick {{ font-size: 10px; fill: #4b5563; }}
svg .label {{ font-size: 11px; fill: #374151; }}
svg .grid {{ stroke: #f3f4f6; }}
svg .axis {{ stroke: #9ca3af; }}
svg .window {{ fill: #eff6ff; }}
.ok {{ color: #166534; font-weight: 600; }}
.bad {{ color: #991b1b; font-weight: 600; }}
.banner {{ border: 2px solid #991b1b; background: #fef2f2; padding: 8px 12px; margin: 8px 0; }}
pre {{ background: #f9fafb; padding: 8px; font-size: 12px; }}
</style></head><body>
<h1>Piazza load test</h1>
{banner}
<table>{table}</table>
{slo}
{failures}
<p>Shaded: the measurement window (latency, loss, freezes and rates are counted there).</p>
<div class="charts">
{hist}
{latency_chart}
{throughput_chart}
{cpu_chart}
{joins}
</div>
<h2>Notes</h2><ul>{notes}</ul>
<h2>Scenario</h2><pre>{scenario}</pre>
</body></html>
"#,
        hist = histogram_chart(r),
        joins = join_chart(r),
        scenario = esc(&scenario),
    )
}

/// The comparison's page (`--compare`): the median table, then each chart
/// with every run of both SFUs (Piazza blue, Janus orange).
pub fn render_compare(c: &crate::compare::Comparison) -> String {
    let (p, j) = (&c.sides[0], &c.sides[1]);
    let mut rows = String::new();
    let mut row = |name: &str, a: String, b: String| {
        let _ = write!(
            rows,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            esc(name),
            esc(&a),
            esc(&b)
        );
    };
    row(
        "valid rounds",
        format!("{}/{}", p.valid_rounds, c.rounds),
        format!("{}/{}", j.valid_rounds, c.rounds),
    );
    for (name, a, b, d, unit) in crate::compare::metric_rows(p, j) {
        row(name, format!("{a:.d$} {unit}"), format!("{b:.d$} {unit}"));
    }
    row(
        "CPU per packet, janus / piazza",
        String::new(),
        format!("{:.2}x", c.cpu_per_packet_ratio_janus_to_piazza),
    );
    let x_max = c
        .runs
        .iter()
        .map(|r| r.report.duration_s)
        .fold(1.0f64, f64::max);
    let names: Vec<String> = c
        .runs
        .iter()
        .map(|r| format!("{} r{}", r.sfu.name(), r.round))
        .collect();
    let chart = |title: &str, unit: &str, f: &dyn Fn(&Report) -> Vec<(f64, f64)>| {
        let lines: Vec<Line<'_>> = c
            .runs
            .iter()
            .zip(&names)
            .map(|(r, n)| {
                let color = match r.sfu {
                    crate::scenario::Sfu::Piazza => BLUE,
                    crate::scenario::Sfu::Janus => ORANGE,
                };
                (n.as_str(), color, f(&r.report))
            })
            .collect();
        line_chart(title, unit, &lines, (0.0, 0.0), x_max)
    };
    let points = |r: &Report, v: &dyn Fn(usize) -> Option<f64>| -> Vec<(f64, f64)> {
        let s = &r.series;
        (0..s.t_s.len())
            .filter_map(|i| v(i).map(|y| (s.t_s[i] + s.bucket_s / 2.0, y)))
            .collect()
    };
    let p99 = chart("Latency p99 over time", "ms", &|r| {
        points(r, &|i| {
            r.series
                .p99_us
                .get(i)
                .filter(|v| **v > 0)
                .map(|v| *v as f64 / 1000.0)
        })
    });
    let rate = chart(
        "Packets per second the clients received",
        "packets/s",
        &|r| points(r, &|i| r.series.received_pps.get(i).copied()),
    );
    let cpu = chart("SFU process CPU over time", "cores", &|r| {
        points(r, &|i| r.series.engine_cores.get(i).copied())
    });
    let notes: String = c
        .notes
        .iter()
        .chain(
            c.runs
                .iter()
                .filter(|r| !r.report.validity.valid)
                .flat_map(|r| &r.report.validity.reasons),
        )
        .map(|n| format!("<li>{}</li>", esc(n)))
        .collect();
    let m = &c.meta;
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Piazza vs Janus</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #111827; max-width: 1180px; }}
table {{ border-collapse: collapse; margin-bottom: 12px; }}
th {{ text-align: left; padding: 2px 16px 2px 0; color: #374151; font-weight: 600; }}
td {{ padding: 2px 16px 2px 0; font-variant-numeric: tabular-nums; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 16px; }}
.charts svg {{ border: 1px solid #e5e7eb; border-radius: 6px; background: #fff; }}
svg .title {{ font-size: 13px; font-weight: 600; fill: #111827; }}
svg .tick {{ font-size: 10px; fill: #4b5563; }}
svg .label {{ font-size: 11px; fill: #374151; }}
svg .grid {{ stroke: #f3f4f6; }}
svg .axis {{ stroke: #9ca3af; }}
</style></head><body>
<h1>Piazza vs Janus: {rooms} room(s) x {n}, {d:.0} s per run, {rounds} round(s)</h1>
<p>{date} &middot; commit {commit} &middot; {cpu} ({cores} cores) &middot; <code>{cmd}</code></p>
<table><tr><th>median of valid rounds</th><th>piazza</th><th>janus</th></tr>{rows}</table>
<div class="charts">{p99}{rate}{cpu_chart}</div>
<h2>Notes</h2><ul>{notes}</ul>
</body></html>
"#,
        rooms = c.scenario.rooms,
        n = c.scenario.participants,
        d = c.scenario.duration_s,
        rounds = c.rounds,
        date = esc(&m.date_utc),
        commit = esc(&m.git_commit),
        cpu = esc(&m.cpu_model),
        cores = m.cores,
        cmd = esc(&m.command_line),
        cpu_chart = cpu,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 0.9, 3), vec![0.0, 0.5]);
    }

    #[test]
    fn nice_tops() {
        assert_eq!(nice_top(26.0), 30.0);
        assert_eq!(nice_top(0.0), 1.0);
        assert_eq!(nice_top(0.42), 0.5);
    }

    #[test]
    fn escapes() {
        assert_eq!(esc("<a&\"b>"), "&lt;a&amp;&quot;b&gt;");
    }
}
