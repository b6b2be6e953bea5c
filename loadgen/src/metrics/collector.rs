//! What one client-driver thread gathers across its participants: the
//! latency histogram of the measurement window, packet counts, and a time
//! series (packets and latency percentiles per bucket) for the plots.
//! Threads' collectors merge into one at the end.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::latency::LatencyHistogram;

/// One bucket of the time series.
#[derive(Debug, Clone, Default)]
struct Bucket {
    packets: u64,
    bytes: u64,
    latency: Option<LatencyHistogram>,
}

/// Latency and packet counters of one or more driver threads.
#[derive(Debug, Clone)]
pub struct Collector {
    t0: Instant,
    bucket: Duration,
    /// One-way latency of every packet in the measurement window.
    pub latency: LatencyHistogram,
    /// Packets received in the window.
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
    buckets: Vec<Bucket>,
    /// Latency since the progress line last looked (2 digits).
    recent: LatencyHistogram,
    /// Packets since the progress line last looked.
    recent_packets: u64,
    /// The longest inter-frame gaps of the window: freezes first, then
    /// other gaps, then pauses; longest first in each.
    pub gaps: Vec<FrameGap>,
}

/// Longest gaps kept for the report.
pub const MAX_GAPS: usize = 20;

/// Gaps shorter than this are not kept unless they are freezes (a 30 fps
/// stream's frames are 33 ms apart; a keyframe burst or a scheduling hiccup
/// stays well below).
pub const GAP_LOG_MIN: Duration = Duration::from_millis(300);

/// One long gap between two frames of a video slot, with what the slot
/// carried on either side: enough to tell a publisher switch, a layer
/// switch, an engine pause and a stall of one stream apart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FrameGap {
    /// When the frame ending the gap arrived, seconds since the run started.
    pub at_s: f64,
    /// The gap, ms.
    pub gap_ms: f64,
    /// Counted as a W3C freeze.
    pub freeze: bool,
    /// The engine paused the slot during the gap (not a freeze).
    pub paused: bool,
    /// Room index.
    pub room: usize,
    /// The subscriber (its trailer number).
    pub subscriber: u32,
    /// Video slot index in the subscriber's offer.
    pub slot: usize,
    /// Publisher and layer (`l`, `m`, `h`; `s` for a screen share) of the
    /// frame before the gap.
    pub from: (u32, String),
    /// Publisher and layer of the frame after the gap.
    pub to: (u32, String),
}

/// A snapshot of the engine's counters, taken by the orchestrator.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineSample {
    /// Time since the start of the run.
    pub t: Duration,
    /// RTP packets written into subscriber slots (all shards).
    pub forwarded: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// Datagram bytes sent.
    pub bytes_out: u64,
    /// CPU time of the shard threads.
    pub cpu: Duration,
    /// The engine's SFU-added latency histogram (receive batch to
    /// `sendmmsg`), summed over shards; empty when the target does not
    /// export it.
    pub sfu_latency: piazza::ForwardLatency,
    /// Forwarded packets missing from that histogram (their receive time
    /// was lost).
    pub latency_untracked: u64,
    /// Resident set of the SFU's process, bytes (0: not known).
    pub rss_bytes: u64,
    /// Heap in use in the SFU's process, bytes (0: not known; the
    /// embedded engine's process holds the clients too).
    pub heap_bytes: u64,
}

impl EngineSample {
    /// Add one shard's SFU latency histogram and untracked count.
    pub fn add_shard_latency(&mut self, shard: &piazza::ShardStats) {
        self.sfu_latency.merge(&shard.forward_latency);
        self.latency_untracked += shard.core.latency_untracked;
    }
}

/// The time series of the report, one value per bucket.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Series {
    /// Bucket width, seconds.
    pub bucket_s: f64,
    /// Start of each bucket, seconds since the run started.
    pub t_s: Vec<f64>,
    /// Media packets the clients received per second.
    pub received_pps: Vec<f64>,
    /// RTP packets the engine forwarded per second.
    pub egress_pps: Vec<f64>,
    /// CPU cores the engine's shard threads used (CPU-seconds per second).
    pub engine_cores: Vec<f64>,
    /// Median one-way latency in the bucket, microseconds.
    pub p50_us: Vec<u64>,
    /// 99th percentile one-way latency in the bucket, microseconds.
    pub p99_us: Vec<u64>,
    /// Resident set of the SFU's process at the bucket's end, MiB (0: not
    /// known).
    pub rss_mb: Vec<f64>,
    /// Heap in use in the SFU's process at the bucket's end, MiB (0: not
    /// known).
    pub heap_mb: Vec<f64>,
}

impl Collector {
    /// Buckets of width `bucket` counted from `t0` (the run's start).
    pub fn new(t0: Instant, bucket: Duration) -> Self {
        Collector {
            t0,
            bucket: bucket.max(Duration::from_millis(1)),
            latency: LatencyHistogram::new(),
            packets: 0,
            bytes: 0,
            buckets: Vec::new(),
            recent: LatencyHistogram::with_precision(2),
            recent_packets: 0,
            gaps: Vec::new(),
        }
    }

    /// Seconds from the run's start to `at`.
    pub fn since_start(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// Keep `gap` if it is among the longest.
    pub fn record_gap(&mut self, gap: FrameGap) {
        self.gaps.push(gap);
        self.trim_gaps();
    }

    /// Freezes first, then other gaps, then pauses; longest first in each.
    fn trim_gaps(&mut self) {
        let rank = |g: &FrameGap| (g.freeze, !g.paused);
        self.gaps
            .sort_by(|a, b| rank(b).cmp(&rank(a)).then(b.gap_ms.total_cmp(&a.gap_ms)));
        self.gaps.truncate(MAX_GAPS);
    }

    fn bucket_mut(&mut self, at: Instant) -> &mut Bucket {
        let i =
            (at.saturating_duration_since(self.t0).as_nanos() / self.bucket.as_nanos()) as usize;
        // Bounded: runs last at most an hour and buckets are at least 1 s.
        let i = i.min(100_000);
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Bucket::default);
        }
        &mut self.buckets[i]
    }

    /// A media packet of `bytes` payload arrived at `at`.
    pub fn on_packet(&mut self, at: Instant, bytes: u64, in_window: bool) {
        let b = self.bucket_mut(at);
        b.packets += 1;
        b.bytes += bytes;
        self.recent_packets += 1;
        if in_window {
            self.packets += 1;
            self.bytes += bytes;
        }
    }

    /// A one-way latency sample of a packet that arrived at `at`.
    pub fn record_latency(&mut self, at: Instant, us: u64, in_window: bool) {
        self.bucket_mut(at)
            .latency
            .get_or_insert_with(|| LatencyHistogram::with_precision(2))
            .record(us);
        self.recent.record(us);
        if in_window {
            self.latency.record(us);
        }
    }

    /// Packets and p99 latency (us) since the last call (for the progress line).
    pub fn take_recent(&mut self) -> (u64, u64) {
        let r = (self.recent_packets, self.recent.quantile(0.99));
        self.recent = LatencyHistogram::with_precision(2);
        self.recent_packets = 0;
        r
    }

    /// Add another thread's (or run's) collector with the same start and bucket.
    pub fn merge(&mut self, o: &Collector) {
        self.latency.merge(&o.latency);
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.gaps.extend(o.gaps.iter().cloned());
        self.trim_gaps();
        if self.buckets.len() < o.buckets.len() {
            self.buckets.resize_with(o.buckets.len(), Bucket::default);
        }
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            a.packets += b.packets;
            a.bytes += b.bytes;
            if let Some(h) = &b.latency {
                a.latency
                    .get_or_insert_with(|| LatencyHistogram::with_precision(2))
                    .merge(h);
            }
        }
    }

    /// The time series up to `end` (time since start), with the engine's
    /// rates from `samples` (taken at bucket boundaries, in time order).
    pub fn series(&self, end: Duration, samples: &[EngineSample]) -> Series {
        let width = self.bucket.as_secs_f64();
        // A last partial bucket shorter than half a bucket is left out (its
        // rates would rest on too little time).
        let full = end.as_secs_f64() / width;
        let n = if full.fract() >= 0.5 {
            full.ceil()
        } else {
            full.floor()
        }
        .max(1.0) as usize;
        let mut s = Series {
            bucket_s: width,
            ..Default::default()
        };
        for i in 0..n {
            let from = i as f64 * width;
            let to = ((i + 1) as f64 * width).min(end.as_secs_f64());
            let len = (to - from).max(1e-9);
            let b = self.buckets.get(i).cloned().unwrap_or_default();
            s.t_s.push(from);
            s.received_pps.push(b.packets as f64 / len);
            let (p50, p99) = b
                .latency
                .as_ref()
                .map_or((0, 0), |h| (h.quantile(0.5), h.quantile(0.99)));
            s.p50_us.push(p50);
            s.p99_us.push(p99);
            // Engine rates between the last samples at or before `from`
            // and at or before `to`.
            let at = |t: f64| {
                samples
                    .iter()
                    .rev()
                    .find(|x| x.t.as_secs_f64() <= t + 1e-6)
                    .copied()
            };
            let (egress, cores) = match (at(from), at(to)) {
                (Some(a), Some(b)) if b.t > a.t => {
                    let dt = (b.t - a.t).as_secs_f64();
                    (
                        b.forwarded.saturating_sub(a.forwarded) as f64 / dt,
                        (b.cpu.saturating_sub(a.cpu)).as_secs_f64() / dt,
                    )
                }
                _ => (0.0, 0.0),
            };
            s.egress_pps.push(egress);
            s.engine_cores.push(cores);
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let last = at(to);
            s.rss_mb.push(last.map_or(0.0, |x| mib(x.rss_bytes)));
            s.heap_mb.push(last.map_or(0.0, |x| mib(x.heap_bytes)));
        }
        s
    }
}
