//! Running a scenario against a target: the embedded engine over real UDP
//! ([`embedded`]), the in-process simulator ([`in_process`]), or an external
//! server through its HTTP API ([`target`]). Each produces a [`RunOutcome`], the raw
//! material of the report.

pub mod cluster;
pub mod driver;
pub mod embedded;
pub mod flood;
pub mod health;
pub mod in_process;
pub mod janus;
pub mod poll;
pub mod process;
pub mod progress;
pub mod target;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::LoadgenError;
use crate::metrics::{Collector, EngineSample, LatencyHistogram, MediaTotals, ParticipantResult};
use crate::scenario::{Mode, Scenario};

pub use progress::Progress;

/// The engine's counters over the measurement window.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineWindow {
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets forwarded into subscriber slots.
    pub forwarded: u64,
    /// Datagram bytes sent.
    pub bytes_out: u64,
    /// CPU time of the shard threads (or, in-process, time inside the core).
    pub cpu: Duration,
}

/// The engine's ICE-TCP counters, summed over its shards (`ShardStats`:
/// `core.tcp` and `socket.tcp`), since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TcpCounters {
    /// Connections accepted (and kept).
    pub accepted: u64,
    /// Connections that carried a binding request a participant's ICE
    /// agent answered.
    pub validated: u64,
    /// Connections open.
    pub open: u64,
    /// Connections refused at a limit (per shard or per source).
    pub refused: u64,
    /// Connections closed, for any reason.
    pub closed: u64,
    /// RFC 4571 frames received.
    pub frames_in: u64,
    /// Frames queued to connections.
    pub frames_out: u64,
    /// Bytes read from connections.
    pub bytes_in: u64,
    /// Frames dropped because a connection's send queue was full.
    pub send_dropped: u64,
    /// Connections that failed while reading or writing.
    pub io_errors: u64,
}

impl TcpCounters {
    /// The sums over the shards of `stats`; `None` when ICE-TCP is off.
    pub fn of(stats: &piazza::EngineStats) -> Option<TcpCounters> {
        if stats.shards.iter().all(|sh| sh.tcp_addr.is_none()) {
            return None;
        }
        let mut x = TcpCounters::default();
        for sh in &stats.shards {
            let (c, k) = (&sh.core.tcp, &sh.socket.tcp);
            x.accepted += c.accepted;
            x.validated += c.validated;
            x.open += c.open as u64;
            x.refused += c.refused_shard_limit + c.refused_source_limit;
            x.closed += c.evicted_pending
                + c.closed_handshake_timeout
                + c.closed_idle
                + c.closed_bad_frame
                + c.closed_not_stun
                + c.closed_rejected
                + c.closed_participant_gone
                + c.closed_by_peer;
            x.frames_in += c.frames_in;
            x.frames_out += k.frames_sent;
            x.bytes_in += k.bytes_received;
            x.send_dropped += k.send_dropped;
            x.io_errors += k.io_errors;
        }
        Some(x)
    }
}

/// The engine's ICE-TCP counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineTcp {
    /// When the measurement window opened (`None`: it never did).
    pub window_start: Option<TcpCounters>,
    /// At the end of the run.
    pub end: TcpCounters,
}

/// What a run produced, before it becomes a report.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Length of the measurement window.
    pub measured: Duration,
    /// Length of the whole run.
    pub elapsed: Duration,
    /// Latency histogram, packet counts, time series.
    pub collector: Collector,
    /// Loss, jitter, freezes, switches.
    pub totals: MediaTotals,
    /// Per participant join outcome.
    pub participants: Vec<ParticipantResult>,
    /// Joins the engine refused.
    pub join_refused: usize,
    /// The first few refusal messages.
    pub join_errors: Vec<String>,
    /// Every refusal, counted by message.
    pub refusal_reasons: BTreeMap<String, usize>,
    /// Initial joins the scenario planned (rooms x participants); fewer
    /// were attempted when the run ended first.
    pub planned_joins: usize,
    /// The load generator's own health (real client threads only).
    pub health: Option<ClientHealth>,
    /// Participants the engine reported as disconnected (ICE/DTLS timeout);
    /// `None` when the target cannot tell (an external server).
    pub disconnects: Option<u64>,
    /// Engine counters over the window.
    pub engine: EngineWindow,
    /// Engine counters sampled at bucket boundaries.
    pub engine_samples: Vec<EngineSample>,
    /// Shards.
    pub shards: usize,
    /// Panics the shards caught.
    pub panics: u64,
    /// Engine events dropped because the channel was full.
    pub events_dropped: u64,
    /// Datagrams the shards could not send (socket full or refused).
    pub engine_send_drops: u64,
    /// Peak resident set of the engine's process, MiB, when that is not
    /// this process (an external server); `None`: this process.
    pub engine_peak_rss_mb: Option<f64>,
    /// CPU time of the load generator's own threads.
    pub loadgen_cpu: Duration,
    /// Datagrams the clients could not send.
    pub client_send_errors: u64,
    /// Observations worth a line in the report.
    pub notes: Vec<String>,
    /// The flood's numbers, when one ran (`--flood-pps`).
    pub flood: Option<flood::FloodReport>,
    /// Per-node figures and rejoins (a cluster target, or `--rejoin`).
    pub cluster: Option<cluster::ClusterReport>,
    /// The engine's ICE-TCP counters, when it ran with ICE-TCP on.
    pub engine_tcp: Option<EngineTcp>,
}

/// What the client threads and the machine did during the window.
#[derive(Debug, Clone, Default)]
pub struct ClientHealth {
    /// Client timer lateness in the window, microseconds.
    pub lateness: LatencyHistogram,
    /// Each driver thread's CPU-seconds per second in the window.
    pub thread_cores: Vec<f64>,
    /// The machine.
    pub machine: health::MachineReport,
}

/// Run the scenario against its target.
pub fn run(scenario: &Scenario, progress: &Progress) -> Result<RunOutcome, LoadgenError> {
    match scenario.mode {
        Mode::Embedded => embedded::run(scenario, progress),
        Mode::InProcess => in_process::run(scenario, progress),
        Mode::Target => match scenario.target.as_deref() {
            Some(url) if scenario.sfu == crate::scenario::Sfu::Janus => {
                janus::run(scenario, url, progress)
            }
            Some(url) => target::run(scenario, url, progress),
            None => Err(LoadgenError::InvalidScenario(
                "mode = \"target\" needs `target`, the server's base URL".into(),
            )),
        },
    }
}
