//! The load generator's own health: can this run's numbers be trusted?
//!
//! The simulated clients share the machine with the SFU. When they fall
//! behind (a starved or saturated client thread, a machine busy with other
//! work) the media they send leaves late, and every latency, jitter and
//! freeze figure measured from the intended send time then describes the
//! load generator, not the SFU. Three things are measured during the
//! measurement window:
//!
//! - **schedule lateness**: how late each client timer (media generation,
//!   str0m's own timers) ran against the instant it was due, in the driver
//!   threads ([`crate::run::driver`]); an HDR histogram in microseconds;
//! - **client threads' CPU**: CPU-seconds per second of each driver thread;
//! - **the machine**: `/proc/loadavg` at the start and end of the run, the
//!   run queue (`procs_running` in `/proc/stat`) sampled every bucket, the
//!   share of time some task waited for a CPU (`/proc/pressure/cpu`, PSI
//!   `some`, when the kernel has it) and the machine's busy share of its CPU
//!   time (`/proc/stat` `cpu` line).
//!
//! The verdict ([`Verdict::of`]) marks the run invalid when the clients, not
//! the SFU, were the bottleneck: schedule lateness p99 above
//! [`LATE_P99_LIMIT_MS`], or a driver thread busier than
//! [`THREAD_BUSY_LIMIT`] cores (it cannot keep up even when it gets a CPU).
//! The machine figures are reported and explain a verdict; alone they do not
//! invalidate a run whose clients kept their schedule.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::LatencyHistogram;

/// A run whose client timers ran later than this at the 99th percentile is
/// invalid: late media inflates the measured latency by as much. 20 ms is a
/// whole audio frame (Opus 20 ms) and more than half a video frame at
/// 30 fps; a healthy run stays under 1 ms, and on a loaded 2-core machine
/// measured a few ms (docs/loadgen.md, "Validity").
pub const LATE_P99_LIMIT_MS: f64 = 20.0;
/// A driver thread busier than this share of one core over the window is
/// saturated: it cannot generate and receive its participants' media in time.
pub const THREAD_BUSY_LIMIT: f64 = 0.9;
/// Above this lateness p99 a valid run gets a warning note.
pub const LATE_P99_WARN_MS: f64 = 5.0;

/// A snapshot of the machine's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineSnapshot {
    /// When it was taken.
    pub at: Option<Instant>,
    /// `/proc/pressure/cpu` `some` total, microseconds (None: no PSI).
    pub psi_some_us: Option<u64>,
    /// `/proc/stat` `cpu` line: busy and total jiffies.
    pub busy_jiffies: u64,
    /// See `busy_jiffies`.
    pub total_jiffies: u64,
}

impl MachineSnapshot {
    /// Read the counters now.
    pub fn take() -> Self {
        let (busy, total) = cpu_jiffies().unwrap_or((0, 0));
        MachineSnapshot {
            at: Some(Instant::now()),
            psi_some_us: psi_some_total_us(),
            busy_jiffies: busy,
            total_jiffies: total,
        }
    }
}

/// The machine during the run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MachineReport {
    /// CPUs the scheduler may run this process on.
    pub cores: usize,
    /// `/proc/loadavg` 1, 5 and 15 minute averages when the run started.
    pub loadavg_start: [f64; 3],
    /// The same when it ended.
    pub loadavg_end: [f64; 3],
    /// Mean of `procs_running` (tasks runnable or running) over the window.
    pub run_queue_mean: f64,
    /// Largest sample of `procs_running` in the window.
    pub run_queue_max: u64,
    /// Share of the window in which some task waited for a CPU (PSI
    /// `some`), 0..1; `null` when the kernel has no `/proc/pressure`.
    pub cpu_pressure: Option<f64>,
    /// Share of all CPUs' time that was busy in the window, 0..1.
    pub cpu_busy: f64,
}

/// Machine counters kept by the orchestrator over the window.
#[derive(Debug, Default)]
pub struct MachineWatch {
    start: MachineSnapshot,
    run_queue: Vec<u64>,
    /// Load average when the run started.
    pub loadavg_start: [f64; 3],
}

impl MachineWatch {
    /// Start watching (at the start of the run).
    pub fn new() -> Self {
        MachineWatch {
            start: MachineSnapshot::default(),
            run_queue: Vec::new(),
            loadavg_start: loadavg(),
        }
    }

    /// The measurement window opens.
    pub fn open_window(&mut self) {
        self.start = MachineSnapshot::take();
        self.sample();
    }

    /// One run-queue sample (every bucket of the window).
    pub fn sample(&mut self) {
        if let Some(r) = procs_running() {
            self.run_queue.push(r);
        }
    }

    /// The window closed: the report.
    pub fn finish(&self) -> MachineReport {
        if self.start.at.is_none() {
            // The window never opened: only the load averages mean anything.
            return MachineReport {
                cores: cores(),
                loadavg_start: self.loadavg_start,
                loadavg_end: loadavg(),
                ..Default::default()
            };
        }
        let end = MachineSnapshot::take();
        let window = match (self.start.at, end.at) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        let cpu_pressure = match (self.start.psi_some_us, end.psi_some_us) {
            (Some(a), Some(b)) if window > Duration::ZERO => {
                Some((b.saturating_sub(a) as f64 / window.as_micros() as f64).min(1.0))
            }
            _ => None,
        };
        let total = end.total_jiffies.saturating_sub(self.start.total_jiffies);
        let busy = end.busy_jiffies.saturating_sub(self.start.busy_jiffies);
        MachineReport {
            cores: cores(),
            loadavg_start: self.loadavg_start,
            loadavg_end: loadavg(),
            run_queue_mean: if self.run_queue.is_empty() {
                0.0
            } else {
                self.run_queue.iter().sum::<u64>() as f64 / self.run_queue.len() as f64
            },
            run_queue_max: self.run_queue.iter().copied().max().unwrap_or(0),
            cpu_pressure,
            cpu_busy: if total > 0 {
                busy as f64 / total as f64
            } else {
                0.0
            },
        }
    }
}

/// How late the client timers ran, ms.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Lateness {
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Timer firings measured (in the window).
    pub samples: u64,
}

impl Lateness {
    /// From a histogram in microseconds.
    pub fn of(h: &LatencyHistogram) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Lateness {
            p50_ms: ms(h.quantile(0.5)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.quantile(1.0)),
            samples: h.len(),
        }
    }
}

/// Whether the run measured the SFU or the load generator's starvation.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Verdict {
    /// False: the clients were the bottleneck; the figures describe the load
    /// generator, not the SFU (exit code 5, no SLO verdict).
    pub valid: bool,
    /// Why the run is invalid (empty when valid).
    pub reasons: Vec<String>,
    /// Warnings that do not invalidate the run.
    pub warnings: Vec<String>,
    /// Client timer lateness in the window.
    pub schedule_lateness: Lateness,
    /// Each driver thread's CPU over the window, cores (CPU-s per s).
    pub client_thread_cores: Vec<f64>,
    /// The machine.
    pub machine: MachineReport,
}

impl Verdict {
    /// Judge a run. `window_open`: whether the measurement window opened
    /// (without one there is nothing to judge: the run is reported as not
    /// measured, not as invalid).
    pub fn of(
        window_open: bool,
        lateness: &LatencyHistogram,
        client_thread_cores: Vec<f64>,
        machine: MachineReport,
    ) -> Self {
        let schedule_lateness = Lateness::of(lateness);
        let mut reasons = Vec::new();
        let mut warnings = Vec::new();
        if window_open && schedule_lateness.samples > 0 {
            if schedule_lateness.p99_ms > LATE_P99_LIMIT_MS {
                reasons.push(format!(
                    "the clients ran their media schedule late: timer lateness p99 {:.1} ms (limit {LATE_P99_LIMIT_MS} ms), so latency, jitter and freezes include the load generator's own delay",
                    schedule_lateness.p99_ms
                ));
            } else if schedule_lateness.p99_ms > LATE_P99_WARN_MS {
                warnings.push(format!(
                    "client timer lateness p99 {:.1} ms: the load generator was under pressure (still below the {LATE_P99_LIMIT_MS} ms validity limit)",
                    schedule_lateness.p99_ms
                ));
            }
        }
        for (i, c) in client_thread_cores.iter().enumerate() {
            if window_open && *c > THREAD_BUSY_LIMIT {
                reasons.push(format!(
                    "client thread {i} was busy {:.0} % of the window (limit {:.0} %): it is saturated; use more --client-threads or fewer participants",
                    c * 100.0,
                    THREAD_BUSY_LIMIT * 100.0
                ));
            }
        }
        if !reasons.is_empty() {
            if let Some(p) = machine.cpu_pressure.filter(|p| *p > 0.2) {
                reasons.push(format!(
                    "the machine was contended: some task waited for a CPU {:.0} % of the window (PSI), run queue mean {:.1} tasks on {} core(s)",
                    p * 100.0,
                    machine.run_queue_mean,
                    machine.cores
                ));
            }
        } else if window_open && machine.run_queue_mean > machine.cores as f64 * 1.5 {
            warnings.push(format!(
                "busy machine: run queue mean {:.1} on {} core(s) during the window; the clients kept their schedule, but the SFU shared its CPUs",
                machine.run_queue_mean, machine.cores
            ));
        }
        Verdict {
            valid: reasons.is_empty(),
            reasons,
            warnings,
            schedule_lateness,
            client_thread_cores,
            machine,
        }
    }
}

/// CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `/proc/loadavg`'s three averages (zeros when unreadable).
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = [0.0; 3];
    for (slot, field) in v.iter_mut().zip(text.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    v
}

fn procs_running() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("procs_running "))
        .and_then(|v| v.trim().parse().ok())
}

/// (busy, total) jiffies of all CPUs from `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(text.lines().next()?)
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: busy is all
/// but idle and iowait.
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

fn psi_some_total_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    parse_psi_some(&text)
}

/// The `total=` of the `some` line of a PSI file.
fn parse_psi_some(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: &[u64]) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for v in values_us {
            h.record(*v);
        }
        h
    }

    #[test]
    fn late_clients_make_the_run_invalid() {
        let on_time = hist(&vec![200; 1000]);
        let v = Verdict::of(true, &on_time, vec![0.3], MachineReport::default());
        assert!(v.valid, "{:?}", v.reasons);
        let late = hist(&vec![60_000; 1000]);
        let v = Verdict::of(true, &late, vec![0.3], MachineReport::default());
        assert!(!v.valid);
        assert!(v.reasons[0].contains("late"), "{:?}", v.reasons);
        let busy = Verdict::of(true, &on_time, vec![0.2, 0.97], MachineReport::default());
        assert!(!busy.valid);
        assert!(busy.reasons[0].contains("client thread 1"));
        // No window: nothing to judge.
        assert!(Verdict::of(false, &late, vec![1.0], MachineReport::default()).valid);
    }

    #[test]
    fn proc_parsers() {
        assert_eq!(
            parse_cpu_line("cpu  100 5 50 800 20 1 2 3 0 0"),
            Some((161, 981))
        );
        assert_eq!(parse_cpu_line("intr 1 2 3"), None);
        assert_eq!(
            parse_psi_some(
                "some avg10=1.00 avg60=2.00 avg300=3.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            ),
            Some(12345)
        );
        assert!(loadavg().iter().all(|x| *x >= 0.0));
        assert!(cores() >= 1);
    }
}
