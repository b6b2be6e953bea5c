//! The simulated clients' side of a run: their sockets, link emulation and
//! resolution caps, and merging what their driver threads measured.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use piazza::core::control::ClientMessage;
use piazza::sim::{LinkConfig, SimClient};
use socket2::{Domain, Protocol, Socket, Type};

use crate::metrics::{Collector, LatencyHistogram, MediaTotals};
use crate::run::driver::{DriverHandle, thread_cpu_time};
use crate::scenario::Scenario;

/// Socket buffers of each client: a few keyframe bursts deep.
const CLIENT_SOCKET_BUFFER: usize = 1 << 20;
/// Longest queueing delay at an emulated downlink cap before tail drop.
const DOWNLINK_QUEUE: Duration = Duration::from_millis(250);

/// The `max_resolution` messages that cap every video slot of `client`.
pub(crate) fn cap_messages(client: &SimClient, s: &Scenario) -> Vec<ClientMessage> {
    let Some(height) = s.max_height.filter(|h| *h > 0) else {
        return Vec::new();
    };
    client
        .stats()
        .slots
        .iter()
        .filter(|slot| slot.video)
        .map(|slot| ClientMessage::MaxResolution {
            mid: slot.mid.clone(),
            height: Some(height),
        })
        .collect()
}

/// The receive-path impairment of every client, if any.
pub(crate) fn link_config(s: &Scenario) -> Option<LinkConfig> {
    s.impaired().then(|| LinkConfig {
        delay: Duration::from_secs_f64(s.delay_ms / 1000.0),
        jitter: Duration::from_secs_f64(s.delay_jitter_ms / 1000.0),
        loss: s.loss,
        rate_bps: s.downlink_kbps.map(|k| k * 1000),
        queue_limit: DOWNLINK_QUEUE,
        burst_bytes: 0,
    })
}

/// A client's nonblocking UDP socket on 127.0.0.1 with an OS-chosen port.
pub(crate) fn client_socket() -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at rmem_max / wmem_max.
    let _ = s.set_recv_buffer_size(CLIENT_SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(CLIENT_SOCKET_BUFFER);
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// What the driver threads measured, merged.
pub(crate) struct Gathered {
    pub collector: Collector,
    pub totals: MediaTotals,
    /// Sorted by join time.
    pub participants: Vec<crate::metrics::ParticipantResult>,
    /// This thread's CPU since `main_cpu_start` plus the drivers'.
    pub loadgen_cpu: Duration,
    pub client_send_errors: u64,
    pub lateness: LatencyHistogram,
    pub thread_cores: Vec<f64>,
}

/// Stop the driver threads and merge what they measured; observations go
/// to `notes`.
pub(crate) fn gather(
    drivers: Vec<DriverHandle>,
    t0: Instant,
    bucket: Duration,
    main_cpu_start: Duration,
    notes: &mut Vec<String>,
) -> Gathered {
    let mut collector = Collector::new(t0, bucket);
    let mut totals = MediaTotals::default();
    let mut participants = Vec::new();
    let mut loadgen_cpu = thread_cpu_time().saturating_sub(main_cpu_start);
    let mut client_send_errors = 0;
    let mut lateness = LatencyHistogram::new();
    let mut thread_cores = Vec::new();
    for d in drivers {
        if let Some(out) = d.join() {
            lateness.merge(&out.lateness);
            if out.window_wall > Duration::ZERO {
                thread_cores.push(out.window_cpu.as_secs_f64() / out.window_wall.as_secs_f64());
            }
            collector.merge(&out.collector);
            totals.merge(&out.totals);
            participants.extend(out.participants);
            loadgen_cpu += out.cpu;
            client_send_errors += out.send_errors;
            if out.blocked > 0 {
                notes.push(format!(
                    "{} datagrams to non-loopback destinations were not sent",
                    out.blocked
                ));
            }
        } else {
            notes.push("a client driver thread panicked; its participants are missing".into());
        }
    }
    participants.sort_by(|a, b| a.join_at_s.total_cmp(&b.join_at_s));
    Gathered {
        collector,
        totals,
        participants,
        loadgen_cpu,
        client_send_errors,
        lateness,
        thread_cores,
    }
}
