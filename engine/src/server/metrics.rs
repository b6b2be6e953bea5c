//! `GET /metrics`: the engine's counters in the Prometheus text exposition
//! format (version 0.0.4), one series per shard.

use std::fmt::Write;
use std::time::Instant;

use crate::{ESTIMATE_BOUNDS_BPS, EngineStats, ForwardLatency, ShardStats};

/// Counters the HTTP layer keeps itself.
#[derive(Debug, Default, Clone)]
pub struct HttpCounters {
    /// Rooms created.
    pub rooms_created: u64,
    /// Rooms closed after their empty-room grace period.
    pub rooms_expired: u64,
    /// Successful joins.
    pub joins: u64,
    /// Refused joins, by error code.
    pub join_errors: Vec<(&'static str, u64)>,
    /// Room creations and joins refused by the per-address rate limits.
    pub rate_limited: u64,
}

impl HttpCounters {
    /// Count a refused join.
    pub fn join_error(&mut self, code: &'static str) {
        match self.join_errors.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.join_errors.push((code, 1)),
        }
    }
}

/// Forwarded packets per second per shard, from two samples of the
/// `rtp_forwarded` counter (the server samples about once a second).
#[derive(Debug, Default)]
pub struct RateSampler {
    last: Option<(Instant, Vec<u64>)>,
    rates: Vec<f64>,
}

impl RateSampler {
    /// Take a sample.
    pub fn sample(&mut self, now: Instant, stats: &EngineStats) {
        let counts: Vec<u64> = stats.shards.iter().map(|s| s.core.rtp_forwarded).collect();
        if let Some((t, prev)) = &self.last {
            let dt = now.duration_since(*t).as_secs_f64();
            if dt > 0.0 {
                self.rates = counts
                    .iter()
                    .zip(prev.iter().chain(std::iter::repeat(&0)))
                    .map(|(c, p)| c.saturating_sub(*p) as f64 / dt)
                    .collect();
            }
        }
        self.last = Some((now, counts));
    }

    /// The last computed rate of shard `i` (0 before two samples).
    pub fn rate(&self, i: usize) -> f64 {
        self.rates.get(i).copied().unwrap_or(0.0)
    }
}

/// Render the exposition text.
pub fn render(stats: &EngineStats, rates: &RateSampler, http: &HttpCounters) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let shards = &stats.shards;

    type Get = fn(&ShardStats) -> f64;
    let per_shard: [(&str, &str, &str, Get); 26] = [
        ("piazza_rooms", "gauge", "Rooms on the shard.", |s| {
            s.rooms as f64
        }),
        (
            "piazza_participants",
            "gauge",
            "Participants on the shard.",
            |s| s.participants as f64,
        ),
        (
            "piazza_datagrams_in_total",
            "counter",
            "UDP datagrams received.",
            |s| s.core.datagrams_in as f64,
        ),
        (
            "piazza_bytes_in_total",
            "counter",
            "Bytes of UDP datagrams received.",
            |s| s.core.bytes_in as f64,
        ),
        (
            "piazza_datagrams_out_total",
            "counter",
            "UDP datagrams sent.",
            |s| s.core.datagrams_out as f64,
        ),
        (
            "piazza_bytes_out_total",
            "counter",
            "Bytes of UDP datagrams sent.",
            |s| s.core.bytes_out as f64,
        ),
        (
            "piazza_rtp_in_total",
            "counter",
            "RTP packets received from publishers (after SRTP).",
            |s| s.core.rtp_in as f64,
        ),
        (
            "piazza_rtp_forwarded_total",
            "counter",
            "RTP packets written into subscriber slots.",
            |s| s.core.rtp_forwarded as f64,
        ),
        (
            "piazza_shard_cpu_seconds_total",
            "counter",
            "CPU time (user + system) of the shard thread.",
            |s| s.cpu_time.as_secs_f64(),
        ),
        (
            "piazza_slot_switches_total",
            "counter",
            "Slot publisher or simulcast layer switches, completed on keyframes.",
            |s| s.core.slot_switches as f64,
        ),
        (
            "piazza_plis_sent_total",
            "counter",
            "Keyframe requests (PLI) sent to publishers.",
            |s| s.core.plis_sent as f64,
        ),
        (
            "piazza_dropped_waiting_keyframe_total",
            "counter",
            "Video packets held from a slot waiting for its feed's first keyframe.",
            |s| s.core.dropped_waiting_keyframe as f64,
        ),
        (
            "piazza_loss_caps_total",
            "counter",
            "Times transport loss capped a subscriber's downlink estimate.",
            |s| s.core.loss_caps as f64,
        ),
        (
            "piazza_queue_caps_total",
            "counter",
            "Times a standing queue capped a subscriber's downlink estimate.",
            |s| s.core.queue_caps as f64,
        ),
        (
            "piazza_bandwidth_pauses_total",
            "counter",
            "Video slots the allocation paused for a subscriber's bandwidth.",
            |s| s.core.bandwidth_pauses as f64,
        ),
        (
            "piazza_downlink_allocated_bps",
            "gauge",
            "Video bitrate allocated to the shard's subscribers now, summed (bits/s).",
            |s| s.core.downlinks.allocated_bps as f64,
        ),
        (
            "piazza_downlink_delivered_bps",
            "gauge",
            "What the shard's subscribers' downlinks delivered over the last second, summed (bits/s; media sent times the share that arrived).",
            |s| s.core.downlinks.delivered_bps as f64,
        ),
        (
            "piazza_downlinks_congested",
            "gauge",
            "Subscribers whose downlink shows congestion now (loss, a queue, or a cap in force).",
            |s| s.core.downlinks.congested as f64,
        ),
        (
            "piazza_recv_batches_total",
            "counter",
            "recvmmsg calls that returned datagrams.",
            |s| s.socket.recv_batches as f64,
        ),
        (
            "piazza_send_batches_total",
            "counter",
            "sendmmsg calls.",
            |s| s.socket.send_batches as f64,
        ),
        (
            "piazza_events_dropped_total",
            "counter",
            "Engine events dropped because the events channel was full.",
            |s| s.events_dropped as f64,
        ),
        (
            "piazza_panics_total",
            "counter",
            "Panics caught in shard core work (each one is a bug).",
            |s| s.panics as f64,
        ),
        (
            "piazza_rooms_failed_total",
            "counter",
            "Rooms closed because a panic in their processing (a bug) failed them.",
            |s| s.core.rooms_failed as f64,
        ),
        (
            "piazza_joins_refused_overload_total",
            "counter",
            "Joins refused because the shard was at its admission budget.",
            |s| s.core.joins_refused_overload as f64,
        ),
        (
            "piazza_forward_latency_untracked_total",
            "counter",
            "Forwarded packets that left without their receive time (held past 128 later packets of their slot): not in piazza_forward_latency_seconds.",
            |s| s.core.latency_untracked as f64,
        ),
        (
            "piazza_participants_timed_out_total",
            "counter",
            "Participants removed after the inactivity timeout (vanished peers).",
            |s| s.core.participants_timed_out as f64,
        ),
    ];
    for (name, kind, help, get) in per_shard {
        header(&mut out, name, kind, help);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.index, get(s));
        }
    }

    header(
        &mut out,
        "piazza_forwarded_pps",
        "gauge",
        "RTP packets forwarded per second over the last sampling interval (about 1 s).",
    );
    for s in shards {
        let _ = writeln!(
            out,
            "piazza_forwarded_pps{{shard=\"{}\"}} {:.1}",
            s.index,
            rates.rate(s.index)
        );
    }

    forward_latency(&mut out, shards);
    downlinks(&mut out, shards);

    header(
        &mut out,
        "piazza_drops_total",
        "counter",
        "Datagrams (and ICE-TCP frames) dropped, by reason.",
    );
    for s in shards {
        let reasons = [
            ("malformed", s.core.drops.malformed),
            ("unknown_source", s.core.drops.unknown_source),
            ("unknown_ufrag", s.core.drops.unknown_ufrag),
            ("rate_limited", s.core.drops.rate_limited),
            ("address_limit", s.core.drops.address_limit),
            ("throttled", s.core.drops.throttled),
            ("rejected", s.core.drops.rejected),
            ("truncated", s.socket.truncated),
            ("recv_error", s.socket.recv_errors),
            ("send_error", s.socket.send_errors),
            ("send_would_block", s.socket.send_would_block),
        ];
        for (reason, n) in reasons {
            let _ = writeln!(
                out,
                "piazza_drops_total{{shard=\"{}\",reason=\"{reason}\"}} {n}",
                s.index
            );
        }
    }

    // Socket protection: the unvalidated-source table and learned addresses.
    type Gauge = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ShardStats) -> u64,
    );
    let ingress: [Gauge; 3] = [
        (
            "piazza_ingress_tracked_sources",
            "gauge",
            "Unvalidated sources whose STUN rate is tracked (bounded by the table size).",
            |s| s.core.ingress.tracked_sources as u64,
        ),
        (
            "piazza_ingress_source_evictions_total",
            "counter",
            "Unvalidated sources forgotten to make room in the fixed-size rate table.",
            |s| s.core.ingress.source_evictions,
        ),
        (
            "piazza_ingress_validated_addresses",
            "gauge",
            "Addresses validated by ICE (participants' routes).",
            |s| s.core.ingress.validated_addresses as u64,
        ),
    ];
    for (name, kind, help, get) in ingress {
        header(&mut out, name, kind, help);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.index, get(s));
        }
    }

    // ICE-TCP (all zero when it is off).
    header(
        &mut out,
        "piazza_tcp_connections",
        "gauge",
        "ICE-TCP connections open, by state (pending: not yet validated by ICE).",
    );
    for s in shards {
        let t = &s.core.tcp;
        for (state, n) in [("validated", t.open - t.pending), ("pending", t.pending)] {
            let _ = writeln!(
                out,
                "piazza_tcp_connections{{shard=\"{}\",state=\"{state}\"}} {n}",
                s.index
            );
        }
    }
    header(
        &mut out,
        "piazza_tcp_closed_total",
        "counter",
        "ICE-TCP connections refused or closed, by reason.",
    );
    for s in shards {
        let t = &s.core.tcp;
        let reasons = [
            ("refused_shard_limit", t.refused_shard_limit),
            ("refused_source_limit", t.refused_source_limit),
            ("evicted_pending", t.evicted_pending),
            ("handshake_timeout", t.closed_handshake_timeout),
            ("idle", t.closed_idle),
            ("bad_frame", t.closed_bad_frame),
            ("not_stun", t.closed_not_stun),
            ("rejected", t.closed_rejected),
            ("participant_gone", t.closed_participant_gone),
            ("by_peer", t.closed_by_peer),
        ];
        for (reason, n) in reasons {
            let _ = writeln!(
                out,
                "piazza_tcp_closed_total{{shard=\"{}\",reason=\"{reason}\"}} {n}",
                s.index
            );
        }
    }
    let tcp: [Gauge; 4] = [
        (
            "piazza_tcp_accepted_total",
            "counter",
            "ICE-TCP connections accepted (and kept at first).",
            |s| s.core.tcp.accepted,
        ),
        (
            "piazza_tcp_validated_total",
            "counter",
            "ICE-TCP connections validated by an answered STUN binding request.",
            |s| s.core.tcp.validated,
        ),
        (
            "piazza_tcp_send_dropped_total",
            "counter",
            "Frames dropped because an ICE-TCP connection's send queue was full.",
            |s| s.socket.tcp.send_dropped,
        ),
        (
            "piazza_tcp_accept_errors_total",
            "counter",
            "ICE-TCP accept failures (out of descriptors: accepting pauses 100 ms).",
            |s| s.socket.tcp.accept_errors,
        ),
    ];
    for (name, kind, help, get) in tcp {
        header(&mut out, name, kind, help);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.index, get(s));
        }
    }

    let server: [(&str, &str, &str, u64); 4] = [
        (
            "piazza_http_rooms_created_total",
            "counter",
            "Rooms created through the HTTP API.",
            http.rooms_created,
        ),
        (
            "piazza_http_rooms_expired_total",
            "counter",
            "Rooms closed after staying empty for the grace period.",
            http.rooms_expired,
        ),
        (
            "piazza_http_joins_total",
            "counter",
            "Successful joins through the HTTP API.",
            http.joins,
        ),
        (
            "piazza_http_rate_limited_total",
            "counter",
            "Room creations and joins refused with 429 by the per-address rate limits.",
            http.rate_limited,
        ),
    ];
    for (name, kind, help, v) in server {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        &mut out,
        "piazza_http_join_errors_total",
        "counter",
        "Refused joins, by error code.",
    );
    for (code, n) in &http.join_errors {
        let _ = writeln!(out, "piazza_http_join_errors_total{{error=\"{code}\"}} {n}");
    }
    if let Some(bytes) = peak_resident_bytes() {
        header(
            &mut out,
            "piazza_process_peak_resident_bytes",
            "gauge",
            "Peak resident set size of the server process (VmHWM).",
        );
        let _ = writeln!(out, "piazza_process_peak_resident_bytes {bytes}");
    }
    if let Some(bytes) = status_bytes("VmRSS:") {
        header(
            &mut out,
            "piazza_process_resident_bytes",
            "gauge",
            "Resident set size of the server process now (VmRSS).",
        );
        let _ = writeln!(out, "piazza_process_resident_bytes {bytes}");
    }
    if let Some(bytes) = process_heap_bytes() {
        header(
            &mut out,
            "piazza_process_heap_bytes",
            "gauge",
            "Heap in use by the server process: what its allocator (glibc malloc) has handed out and not taken back, every arena and mmapped block (mallinfo2 uordblks + hblkhd).",
        );
        let _ = writeln!(out, "piazza_process_heap_bytes {bytes}");
    }
    out
}

/// `VmHWM` of `/proc/self/status` in bytes; `None` where there is no procfs.
fn peak_resident_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// A `kB` line of `/proc/self/status` (`VmHWM:`, `VmRSS:`) in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Heap bytes this process has allocated and not freed, as glibc's malloc
/// counts them: every arena's in-use chunks plus mmapped blocks
/// (`mallinfo2`: `uordblks` + `hblkhd`; it sums every arena under its lock,
/// so read it about once a second, not per packet). `None` with another C
/// library; it counts nothing a global allocator other than malloc hands
/// out. The server's `piazza_process_heap_bytes`; the load generator reads
/// its own process with it.
pub fn process_heap_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// The SFU latency histogram of every shard (`ShardStats::forward_latency`),
/// as a Prometheus histogram in seconds.
fn forward_latency(out: &mut String, shards: &[ShardStats]) {
    const NAME: &str = "piazza_forward_latency_seconds";
    header(
        out,
        NAME,
        "histogram",
        "SFU-added latency of forwarded packets: from the receive batch (recvmmsg) to the sendmmsg that carried the copy, str0m's pacer queueing included.",
    );
    let bounds: Vec<f64> = ForwardLatency::bounds_ns()
        .iter()
        .map(|&b| b as f64 / 1e9)
        .collect();
    for s in shards {
        let h = &s.forward_latency;
        let sum = h.sum().as_secs_f64();
        histogram(out, NAME, s.index, &bounds, h.buckets(), sum, h.count());
    }
}

/// One shard's series of a Prometheus histogram: `buckets` are counts per
/// bucket (not cumulative), one more than `bounds` (the last: above them).
fn histogram<B: std::fmt::Display, S: std::fmt::Display>(
    out: &mut String,
    name: &str,
    shard: usize,
    bounds: &[B],
    buckets: &[u64],
    sum: S,
    count: u64,
) {
    let mut cumulative = 0;
    for (i, n) in buckets.iter().enumerate() {
        cumulative += n;
        let _ = match bounds.get(i) {
            Some(b) => writeln!(
                out,
                "{name}_bucket{{shard=\"{shard}\",le=\"{b}\"}} {cumulative}"
            ),
            None => writeln!(
                out,
                "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {cumulative}"
            ),
        };
    }
    let _ = writeln!(out, "{name}_sum{{shard=\"{shard}\"}} {sum}");
    let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {count}");
}

/// The subscribers' downlinks of every shard (`CoreStats::downlinks`): the
/// estimates as a histogram in bits/s, and the video slots by what they
/// show.
fn downlinks(out: &mut String, shards: &[ShardStats]) {
    const NAME: &str = "piazza_downlink_estimate_bps";
    header(
        out,
        NAME,
        "histogram",
        "The shard's subscribers' downlink bandwidth estimates now (str0m's GCC, bits/s).",
    );
    for s in shards {
        let d = &s.core.downlinks;
        let (sum, count) = (d.estimate_bps, d.subscribers);
        histogram(
            out,
            NAME,
            s.index,
            &ESTIMATE_BOUNDS_BPS,
            &d.estimates,
            sum,
            count,
        );
    }
    header(
        out,
        "piazza_video_slots",
        "gauge",
        "Subscribers' video slots showing each simulcast layer now, or paused for bandwidth.",
    );
    for s in shards {
        for (state, n) in ["l", "m", "h", "paused"].iter().zip(s.core.downlinks.slots) {
            let _ = writeln!(
                out,
                "piazza_video_slots{{shard=\"{}\",state=\"{state}\"}} {n}",
                s.index
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The cluster section: this node's view of the directory and its nodes.
pub(crate) fn render_cluster(out: &mut String, me: &str, c: &super::cluster::ClusterStats) {
    header(
        out,
        "piazza_cluster_directory_up",
        "gauge",
        "1 when the last call to the cluster directory (Redis) succeeded.",
    );
    let _ = writeln!(out, "piazza_cluster_directory_up {}", u8::from(c.up));
    header(
        out,
        "piazza_cluster_nodes_alive",
        "gauge",
        "Live nodes in the directory, as of this node's last heartbeat.",
    );
    let _ = writeln!(out, "piazza_cluster_nodes_alive {}", c.nodes.len());
    type NodeGauge = (
        &'static str,
        &'static str,
        fn(&super::cluster::NodeInfo) -> f64,
    );
    let per_node: [NodeGauge; 3] = [
        ("piazza_cluster_node_rooms", "Rooms per live node.", |n| {
            n.rooms as f64
        }),
        (
            "piazza_cluster_node_participants",
            "Participants per live node.",
            |n| n.participants as f64,
        ),
        (
            "piazza_cluster_node_draining",
            "1 for a live node that is draining.",
            |n| f64::from(u8::from(n.draining)),
        ),
    ];
    for (name, help, get) in per_node {
        header(out, name, "gauge", help);
        for n in &c.nodes {
            let _ = writeln!(
                out,
                "{name}{{node=\"{}\",self=\"{}\"}} {}",
                n.id,
                u8::from(n.id == me),
                get(n)
            );
        }
    }
    let counters: [(&str, &str, u64); 6] = [
        (
            "piazza_cluster_forwarded_total",
            "Requests proxied to the node hosting their room.",
            c.forwarded,
        ),
        (
            "piazza_cluster_forward_failures_total",
            "Proxied requests whose node did not answer (503 node_unreachable).",
            c.forward_failures,
        ),
        (
            "piazza_cluster_directory_errors_total",
            "Directory (Redis) calls that failed or timed out.",
            c.directory_errors,
        ),
        (
            "piazza_cluster_rooms_recreated_total",
            "Rooms recreated on this node from the directory after their node died or left.",
            c.rooms_recreated,
        ),
        (
            "piazza_cluster_rooms_lost_total",
            "Rooms closed here because another node took them while this one was cut off.",
            c.rooms_lost,
        ),
        (
            "piazza_cluster_loops_refused_total",
            "Forwarded requests refused (421) because the room had moved again.",
            c.loops_refused,
        ),
    ];
    for (name, help, v) in counters {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn the_heap_counts_what_is_allocated() {
        let before = super::process_heap_bytes().unwrap();
        // 64 MiB, touched: far above anything other test threads allocate
        // meanwhile.
        let block = vec![1u8; 64 << 20];
        let during = super::process_heap_bytes().unwrap();
        assert!(block.iter().all(|b| *b == 1));
        drop(block);
        let after = super::process_heap_bytes().unwrap();
        assert!(during >= before + (60 << 20), "{before} -> {during}");
        assert!(after + (60 << 20) <= during, "{during} -> {after}");
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn downlinks_are_a_histogram_and_gauges_per_shard() {
        let mut s = ShardStats::new(1, "127.0.0.1:5000".parse().unwrap());
        let d = &mut s.core.downlinks;
        for bps in [90_000, 250_000, 260_000, 7_000_000] {
            d.add_estimate(bps);
        }
        d.allocated_bps = 400_000;
        d.delivered_bps = 380_000;
        d.congested = 1;
        d.slots = [3, 2, 0, 1];
        s.core.bandwidth_pauses = 5;
        let text = render(
            &EngineStats { shards: vec![s] },
            &RateSampler::default(),
            &HttpCounters::default(),
        );
        let line = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .to_string()
        };
        assert!(text.contains("# TYPE piazza_downlink_estimate_bps histogram\n"));
        let b = "piazza_downlink_estimate_bps_bucket{shard=\"1\",le=";
        assert_eq!(line(&format!("{b}\"100000\"}}")), "1");
        assert_eq!(line(&format!("{b}\"200000\"}}")), "1");
        assert_eq!(line(&format!("{b}\"300000\"}}")), "3");
        assert_eq!(line(&format!("{b}\"5000000\"}}")), "3");
        assert_eq!(line(&format!("{b}\"+Inf\"}}")), "4");
        assert_eq!(line("piazza_downlink_estimate_bps_count{shard=\"1\"}"), "4");
        assert_eq!(
            line("piazza_downlink_estimate_bps_sum{shard=\"1\"}"),
            "7600000"
        );
        assert_eq!(line("piazza_downlink_allocated_bps{shard=\"1\"}"), "400000");
        assert_eq!(line("piazza_downlink_delivered_bps{shard=\"1\"}"), "380000");
        assert_eq!(line("piazza_downlinks_congested{shard=\"1\"}"), "1");
        assert_eq!(line("piazza_bandwidth_pauses_total{shard=\"1\"}"), "5");
        assert_eq!(line("piazza_video_slots{shard=\"1\",state=\"l\"}"), "3");
        assert_eq!(line("piazza_video_slots{shard=\"1\",state=\"m\"}"), "2");
        assert_eq!(line("piazza_video_slots{shard=\"1\",state=\"h\"}"), "0");
        assert_eq!(
            line("piazza_video_slots{shard=\"1\",state=\"paused\"}"),
            "1"
        );
    }

    #[test]
    fn forward_latency_is_a_prometheus_histogram_per_shard() {
        let mut s = ShardStats::new(3, "127.0.0.1:5000".parse().unwrap());
        for us in [5, 95, 95, 2_000, 7_000_000] {
            s.forward_latency.record(Duration::from_micros(us));
        }
        s.core.latency_untracked = 2;
        let text = render(
            &EngineStats { shards: vec![s] },
            &RateSampler::default(),
            &HttpCounters::default(),
        );
        assert!(text.contains("# TYPE piazza_forward_latency_seconds histogram\n"));
        let line = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .to_string()
        };
        let b = "piazza_forward_latency_seconds_bucket{shard=\"3\",le=";
        assert_eq!(line(&format!("{b}\"0.00001\"}}")), "1");
        assert_eq!(line(&format!("{b}\"0.0001\"}}")), "3");
        assert_eq!(line(&format!("{b}\"0.002\"}}")), "4");
        assert_eq!(line(&format!("{b}\"1\"}}")), "4");
        assert_eq!(line(&format!("{b}\"+Inf\"}}")), "5");
        assert_eq!(
            line("piazza_forward_latency_seconds_count{shard=\"3\"}"),
            "5"
        );
        let sum: f64 = line("piazza_forward_latency_seconds_sum{shard=\"3\"}")
            .parse()
            .unwrap();
        assert!((sum - 7.002195).abs() < 1e-9, "{sum}");
        assert_eq!(
            line("piazza_forward_latency_untracked_total{shard=\"3\"}"),
            "2"
        );
        // Cumulative counts never fall.
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with(b))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(counts.len(), ForwardLatency::bounds_ns().len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
    }
}
