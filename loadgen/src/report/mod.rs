//! The report: built from a [`RunOutcome`], written as JSON (`--json`),
//! a self-contained HTML page (`--html`) and a terminal summary. Every key
//! is documented in `docs/loadgen.md`.

pub mod html;
pub mod memory;
pub mod meta;
pub mod narrow;
pub mod sfu_latency;
pub mod summary;

use serde::Serialize;

use crate::metrics::Transport;
use crate::metrics::{FrameGap, ParticipantResult, Percentiles, Series};
use crate::run::cluster::ClusterReport;
use crate::run::flood::FloodReport;
use crate::run::health::{MachineReport, Verdict};
use crate::run::{RunOutcome, TcpCounters};
use crate::scenario::Scenario;
use crate::slo::SloReport;

/// Version of the JSON layout; bumped when a key changes meaning.
pub const VERSION: u32 = 2;

/// Exit code: the run completed, was valid, and every SLO threshold held.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run could not start or finish, or a report file could not
/// be written.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage (a flag, scenario key, SLO spec or target URL).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a valid run violated an SLO threshold.
pub const EXIT_SLO: u8 = 3;
/// Exit code: nothing was measured: the measurement window never opened, or
/// most joins failed.
pub const EXIT_NOT_MEASURED: u8 = 4;
/// Exit code: the run is invalid: the load generator, not the SFU, was the
/// bottleneck (see `validity`).
pub const EXIT_INVALID: u8 = 5;

/// The run's overall outcome, in the order it is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Measured, valid, every threshold held (or none given).
    #[default]
    Passed,
    /// The window never opened or most joins failed.
    NotMeasured,
    /// The clients were the bottleneck.
    Invalid,
    /// A valid run broke an SLO threshold.
    SloFailed,
}

impl Outcome {
    /// The process exit code of this outcome.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Passed => EXIT_OK,
            Outcome::NotMeasured => EXIT_NOT_MEASURED,
            Outcome::Invalid => EXIT_INVALID,
            Outcome::SloFailed => EXIT_SLO,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Layout version.
    pub version: u32,
    /// `passed`, `not_measured`, `invalid` or `slo_failed` (the exit code's
    /// reason); see [`Report::decide`].
    pub outcome: Outcome,
    /// Date, commit, command line, machine.
    pub meta: meta::Meta,
    /// Whether the load generator kept up (its own health).
    pub validity: Verdict,
    /// The scenario that ran.
    pub scenario: Scenario,
    /// Rooms.
    pub rooms: usize,
    /// Participants per room.
    pub participants_per_room: usize,
    /// Length of the run, seconds (joins included).
    pub duration_s: f64,
    /// Length of the measurement window, seconds.
    pub measured_s: f64,
    /// One-way latency, publisher to subscriber socket, in the window.
    pub latency_us: Percentiles,
    /// Packet rates and quality.
    pub media: MediaReport,
    /// Joins and time to first frame.
    pub join: JoinReport,
    /// The engine's cost.
    pub engine: EngineReport,
    /// The load generator's own cost.
    pub loadgen: LoadgenReport,
    /// Which transport the participants used, and the engine's ICE-TCP
    /// counters.
    pub transport: TransportReport,
    /// Per-bucket time series.
    pub series: Series,
    /// Latency distribution: [upper bound us, count], 10 buckets per decade.
    pub latency_histogram: Vec<[u64; 2]>,
    /// Per participant join outcome, in join order.
    pub participants: Vec<ParticipantResult>,
    /// Caveats about this run.
    pub notes: Vec<String>,
    /// SLO outcome.
    pub slo: SloReport,
    /// The flood and the engine's drop counters, when one ran (`--flood-pps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<FloodReport>,
    /// Per-node figures of a cluster target and the rejoins of lost
    /// sessions (`--rejoin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

/// Packet rates and quality.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MediaReport {
    /// RTP packets per second the engine received from publishers.
    pub ingress_pps: f64,
    /// RTP packets per second the engine forwarded to subscribers.
    pub egress_pps: f64,
    /// Megabits per second the engine sent (all datagrams, headers and SRTP included).
    pub egress_mbps: f64,
    /// Media packets per second the clients received.
    pub received_pps: f64,
    /// RFC 3550 lost / expected, over every receive slot, in the window.
    pub loss_ratio: f64,
    /// The same over the whole run.
    pub loss_ratio_total: f64,
    /// Lost packets in the window.
    pub packets_lost: u64,
    /// Expected packets in the window.
    pub packets_expected: u64,
    /// Mean RFC 3550 interarrival jitter of the slots at the end, ms.
    pub jitter_ms: f64,
    /// Largest jitter estimate of any slot in the window, ms.
    pub jitter_max_ms: f64,
    /// W3C freezes in the window, all video slots.
    pub freezes: u64,
    /// Their total duration, ms.
    pub freeze_ms_total: f64,
    /// Longest gap between two frames of a video slot in the window, ms.
    pub max_frame_gap_ms: f64,
    /// Changes of simulcast layer (same publisher) seen in slots.
    pub layer_switches: u64,
    /// Changes of publisher seen in slots.
    pub publisher_switches: u64,
    /// Video slots the engine paused (bandwidth) at some time in the window.
    pub paused_slots: u64,
    /// Pauses that began in the window (or were running when it opened).
    pub pauses: u64,
    /// Paused slot time in the window, ms (not freezes).
    pub paused_ms_total: f64,
    /// Which simulcast layers the subscribers received.
    pub layers: LayerShare,
    /// Runs with a downlink cap: paused share next to what the cap forces,
    /// and pauses once the room settled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub narrow: Option<narrow::NarrowReport>,
    /// End-to-end encrypted runs (`--e2ee`): what the clients decrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<E2eeReport>,
    /// The longest gaps between two frames of a slot in the window, with
    /// what the slot carried on either side: freezes first, then other
    /// gaps, then pauses; longest first in each.
    pub frame_gaps: Vec<FrameGap>,
}

/// What the clients of an end-to-end encrypted run decrypted, over the
/// whole run.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct E2eeReport {
    /// Received payloads decrypted.
    pub decrypted: u64,
    /// Received payloads that did not decrypt (no valid frame header, or
    /// failed authentication). Anything above 0 is a fault: the run says so.
    pub failures: u64,
}

/// Complete camera frames received in the window per simulcast layer.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct LayerShare {
    /// Frames of the `l` layer.
    pub l: u64,
    /// Frames of the `m` layer.
    pub m: u64,
    /// Frames of the `h` layer.
    pub h: u64,
    /// Their shares of all three, 0..1 (0 when none).
    pub share: [f64; 3],
}

impl LayerShare {
    /// From counts per layer.
    pub fn new(frames: [u64; 3]) -> Self {
        let sum: u64 = frames.iter().sum();
        let share = frames.map(|f| if sum == 0 { 0.0 } else { f as f64 / sum as f64 });
        LayerShare {
            l: frames[0],
            m: frames[1],
            h: frames[2],
            share,
        }
    }
}

/// Joins and first frames.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JoinReport {
    /// Joins attempted.
    pub attempted: usize,
    /// Joins that reached ICE + DTLS connected.
    pub connected: usize,
    /// Joins refused by the engine or never connected.
    pub failed: usize,
    /// Join request to connected, median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Join request to the first frame of every expected video, median, ms.
    pub first_frame_p50_ms: f64,
    /// 99th percentile, ms.
    pub first_frame_p99_ms: f64,
    /// Slowest, ms.
    pub first_frame_max_ms: f64,
    /// Initial joins the run ended before attempting.
    pub not_attempted: usize,
    /// Every failed join counted by reason, most frequent first.
    pub failures: Vec<FailureCount>,
    /// Participants missing a first frame on some expected video.
    pub first_frame_missing: usize,
    /// Participants the engine dropped for silence (ICE/DTLS timeout).
    /// (`null` against an external server: its HTTP API does not say.)
    pub disconnects: Option<u64>,
    /// The first refusal messages.
    pub errors: Vec<String>,
}

/// Failed joins with one reason.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct FailureCount {
    /// The refusal message, or why a join never connected.
    pub reason: String,
    /// Joins that failed so.
    pub count: usize,
}

/// The engine's cost.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EngineReport {
    /// Shards (threads).
    pub shards: usize,
    /// CPU seconds of the shard threads in the window (in-process: time
    /// inside the core).
    pub cpu_s: f64,
    /// cpu_s / measured_s: cores busy on average.
    pub cpu_cores: f64,
    /// Forwarded RTP packets per engine CPU-second.
    pub egress_pps_per_core: f64,
    /// Engine CPU nanoseconds per forwarded packet (1e9 / egress_pps_per_core).
    pub ns_per_egress_packet: f64,
    /// Peak resident set of the whole process (VmHWM), MiB.
    pub peak_rss_mb: f64,
    /// Datagrams the shards could not send.
    pub send_drops: u64,
    /// Panics the shards caught.
    pub panics: u64,
    /// Events dropped on a full events channel.
    pub events_dropped: u64,
    /// The engine's own latency (its histogram: receive batch to
    /// `sendmmsg`, pacer included) in the window; `null` when the target
    /// does not export it.
    pub sfu_latency: Option<sfu_latency::SfuLatencyReport>,
    /// The SFU process's resident set and heap over the window (a soak's
    /// leak check); `null` when they were not sampled.
    pub memory: Option<memory::MemoryReport>,
}

/// Which transport the participants used (`--tcp-share`).
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct TransportReport {
    /// Participants (accepted joins, rejoins included) over UDP.
    pub udp_participants: usize,
    /// Participants over ICE-TCP.
    pub tcp_participants: usize,
    /// Of the UDP participants, those that reached ICE + DTLS connected.
    pub udp_connected: usize,
    /// Of the TCP participants, those that reached ICE + DTLS connected.
    pub tcp_connected: usize,
    /// The engine's ICE-TCP counters; `null` when it ran without ICE-TCP.
    pub engine_tcp: Option<EngineTcpReport>,
}

/// The engine's ICE-TCP counters, summed over shards.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct EngineTcpReport {
    /// Over the whole run (since the engine started), read at its end.
    pub total: TcpCounters,
    /// Frames received per second in the window.
    pub frames_in_per_s: f64,
    /// Frames sent per second in the window.
    pub frames_out_per_s: f64,
}

impl TransportReport {
    fn of(o: &RunOutcome) -> TransportReport {
        let count = |t: Transport, connected: bool| {
            o.participants
                .iter()
                .filter(|p| p.transport == t && (!connected || p.join_ms.is_some()))
                .count()
        };
        let secs = o.measured.as_secs_f64();
        TransportReport {
            udp_participants: count(Transport::Udp, false),
            tcp_participants: count(Transport::Tcp, false),
            udp_connected: count(Transport::Udp, true),
            tcp_connected: count(Transport::Tcp, true),
            engine_tcp: o.engine_tcp.map(|t| {
                let rate = |f: fn(&TcpCounters) -> u64| match t.window_start {
                    Some(w) if secs > 0.0 => f(&t.end).saturating_sub(f(&w)) as f64 / secs,
                    _ => 0.0,
                };
                EngineTcpReport {
                    total: t.end,
                    frames_in_per_s: rate(|c| c.frames_in),
                    frames_out_per_s: rate(|c| c.frames_out),
                }
            }),
        }
    }
}

/// The load generator's own cost.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadgenReport {
    /// Client driver threads.
    pub client_threads: usize,
    /// CPU seconds of the load generator's threads over the whole run
    /// (embedded: the client drivers plus the orchestrator, which also runs
    /// the engine's join preparation).
    pub cpu_s: f64,
    /// Datagrams the clients could not send.
    pub send_errors: u64,
}

/// Nearest-rank percentile (the smallest value with at least `q` of the
/// values at or below it); 0 for no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

impl Report {
    /// Decide the outcome (after the SLO was evaluated): not measured
    /// first, then invalid, then the SLO. Returns it.
    pub fn decide(&mut self) -> Outcome {
        let most_failed = self.join.attempted + self.join.not_attempted > 0
            && self.join.failed + self.join.not_attempted
                > (self.join.attempted + self.join.not_attempted) / 2;
        self.outcome = if self.measured_s <= 0.0 || most_failed {
            Outcome::NotMeasured
        } else if !self.validity.valid {
            Outcome::Invalid
        } else if !self.slo.passed {
            Outcome::SloFailed
        } else {
            Outcome::Passed
        };
        self.outcome
    }
}

/// Reason for joins that were accepted but never reached connected.
pub const NEVER_CONNECTED: &str = "accepted, but ICE + DTLS did not complete before the run ended (or the participant left first)";

/// Failed joins by reason, most frequent first.
fn failures(o: &RunOutcome) -> Vec<FailureCount> {
    let mut v: Vec<FailureCount> = o
        .refusal_reasons
        .iter()
        .map(|(reason, count)| FailureCount {
            reason: reason.clone(),
            count: *count,
        })
        .collect();
    let never = o
        .participants
        .iter()
        .filter(|p| p.join_ms.is_none())
        .count();
    if never > 0 {
        v.push(FailureCount {
            reason: NEVER_CONNECTED.into(),
            count: never,
        });
    }
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    v
}

/// Build the report (without SLO outcome) from a run; `meta` says where
/// and when it ran.
pub fn build(s: &Scenario, o: &RunOutcome, meta: meta::Meta) -> Report {
    let secs = o.measured.as_secs_f64();
    let per_s = |x: u64| if secs > 0.0 { x as f64 / secs } else { 0.0 };
    let cpu_s = o.engine.cpu.as_secs_f64();
    let egress_pps_per_core = if cpu_s > 0.0 {
        o.engine.forwarded as f64 / cpu_s
    } else {
        0.0
    };

    let mut join_ms: Vec<f64> = o.participants.iter().filter_map(|p| p.join_ms).collect();
    join_ms.sort_by(f64::total_cmp);
    let mut first: Vec<f64> = o
        .participants
        .iter()
        .filter_map(|p| p.first_frame_ms)
        .collect();
    first.sort_by(f64::total_cmp);
    let attempted = o.participants.len() + o.join_refused;
    let connected = join_ms.len();

    let mut notes = o.notes.clone();
    if s.downlink_kbps.is_some() {
        notes.push(
            "downlink cap: applied in the clients' receive path; the engine's bandwidth allocator sees it through its estimate and lowers or pauses slots; a slot the engine paused counts in paused_slots and paused_ms_total, not as a freeze".into(),
        );
    }
    if s.e2ee && o.totals.e2ee_failures > 0 {
        notes.push(format!(
            "E2EE: {} of {} received payloads did not decrypt (a fault of the clients, the engine or the key relay; hold runs to it with --slo e2ee_failures=0)",
            o.totals.e2ee_failures,
            o.totals.e2ee_failures + o.totals.e2ee_decrypted
        ));
    }
    if s.mode == crate::scenario::Mode::Embedded {
        notes.push(
            "peak_rss_mb is the whole process: the embedded engine and the load generator's clients together".into(),
        );
    }
    if s.mode == crate::scenario::Mode::Target && s.sfu == crate::scenario::Sfu::Piazza {
        notes.push(
            "external server: engine counters and (when its process is not visible) CPU and peak_rss_mb come from its /metrics (the whole server, other rooms included, snapshots up to ~100 ms old); disconnects are not observable through its HTTP API".into(),
        );
    }

    let validity = match &o.health {
        Some(h) => Verdict::of(
            o.measured > std::time::Duration::ZERO,
            &h.lateness,
            h.thread_cores.clone(),
            h.machine.clone(),
        ),
        None => Verdict {
            valid: true,
            machine: MachineReport {
                cores: meta.cores,
                loadavg_start: meta.loadavg_start,
                loadavg_end: meta.loadavg_end,
                ..Default::default()
            },
            ..Default::default()
        },
    };
    notes.extend(validity.warnings.iter().cloned());
    let not_attempted = o
        .planned_joins
        .saturating_sub(o.participants.len() + o.join_refused);
    if not_attempted > 0 {
        notes.push(format!(
            "{not_attempted} of {} initial joins were never attempted: the run ended first; lengthen --duration or lower the load",
            o.planned_joins
        ));
    }

    Report {
        outcome: Outcome::Passed,
        meta,
        validity,
        flood: o.flood.clone(),
        cluster: o.cluster.clone(),
        version: VERSION,
        scenario: s.clone(),
        rooms: s.rooms,
        participants_per_room: s.participants,
        duration_s: s.duration_s,
        measured_s: secs,
        latency_us: o.collector.latency.percentiles(),
        media: MediaReport {
            ingress_pps: per_s(o.engine.rtp_in),
            egress_pps: per_s(o.engine.forwarded),
            egress_mbps: if secs > 0.0 {
                o.engine.bytes_out as f64 * 8.0 / secs / 1e6
            } else {
                0.0
            },
            received_pps: per_s(o.collector.packets),
            loss_ratio: o.totals.loss_ratio(),
            loss_ratio_total: o.totals.loss_ratio_total(),
            packets_lost: o.totals.lost_window,
            packets_expected: o.totals.expected_window,
            jitter_ms: o.totals.jitter_ms(),
            jitter_max_ms: o.totals.jitter_max_ms,
            freezes: o.totals.freezes,
            freeze_ms_total: o.totals.freeze_time.as_secs_f64() * 1000.0,
            max_frame_gap_ms: o.totals.max_frame_delay.as_secs_f64() * 1000.0,
            layer_switches: o.totals.layer_switches,
            publisher_switches: o.totals.publisher_switches,
            paused_slots: o.totals.paused_slots,
            pauses: o.totals.pauses,
            paused_ms_total: o.totals.paused_time.as_secs_f64() * 1000.0,
            layers: LayerShare::new(o.totals.layer_frames),
            narrow: narrow::NarrowReport::new(s, &o.totals, secs),
            e2ee: s.e2ee.then_some(E2eeReport {
                decrypted: o.totals.e2ee_decrypted,
                failures: o.totals.e2ee_failures,
            }),
            frame_gaps: o.collector.gaps.clone(),
        },
        join: JoinReport {
            attempted,
            connected,
            failed: attempted - connected,
            p50_ms: percentile(&join_ms, 0.5),
            p99_ms: percentile(&join_ms, 0.99),
            max_ms: join_ms.last().copied().unwrap_or(0.0),
            first_frame_p50_ms: percentile(&first, 0.5),
            first_frame_p99_ms: percentile(&first, 0.99),
            first_frame_max_ms: first.last().copied().unwrap_or(0.0),
            not_attempted,
            failures: failures(o),
            first_frame_missing: o
                .participants
                .iter()
                .filter(|p| p.first_frame_missing)
                .count(),
            disconnects: o.disconnects,
            errors: o.join_errors.clone(),
        },
        engine: EngineReport {
            shards: o.shards,
            cpu_s,
            cpu_cores: if secs > 0.0 { cpu_s / secs } else { 0.0 },
            egress_pps_per_core,
            ns_per_egress_packet: if egress_pps_per_core > 0.0 {
                1e9 / egress_pps_per_core
            } else {
                0.0
            },
            peak_rss_mb: o.engine_peak_rss_mb.unwrap_or_else(peak_rss_mb),
            send_drops: o.engine_send_drops,
            panics: o.panics,
            events_dropped: o.events_dropped,
            sfu_latency: sfu_latency::from_samples(&o.engine_samples, o.measured, o.elapsed),
            memory: memory::from_samples(
                &o.engine_samples,
                o.measured,
                o.elapsed,
                s.rooms * s.participants,
                if s.mode == crate::scenario::Mode::Embedded {
                    "this process: the embedded engine and the load generator's clients together"
                } else {
                    "the SFU's process"
                },
            ),
        },
        loadgen: LoadgenReport {
            client_threads: s.client_threads,
            cpu_s: o.loadgen_cpu.as_secs_f64(),
            send_errors: o.client_send_errors,
        },
        transport: TransportReport::of(o),
        series: o.collector.series(o.elapsed, &o.engine_samples),
        latency_histogram: o
            .collector
            .latency
            .log_buckets(10)
            .into_iter()
            .map(|(v, c)| [v, c])
            .collect(),
        participants: o.participants.clone(),
        notes,
        slo: SloReport {
            passed: true,
            violations: Vec::new(),
        },
    }
}

/// Peak resident set size of this process (VmHWM), MiB; 0 if unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
