//! Counters and sizes of a shard core.

#[cfg(doc)]
use crate::config::{IngressConfig, TcpConfig};
#[cfg(doc)]
use crate::error::Error;
#[cfg(doc)]
use crate::event::{EngineEvent, LeaveReason};

/// Why a datagram was dropped, counted per shard. Each datagram is counted
/// under one reason, the first check it fails, in the order of the fields.
/// Serializes as an object with one key per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DropStats {
    /// From an address no participant has validated, and not a STUN binding
    /// request (by its header: type, magic cookie, length).
    pub unknown_source: u64,
    /// A STUN binding request from an unvalidated source that has sent more
    /// than [`IngressConfig::stun_rate_per_source`] allows.
    pub rate_limited: u64,
    /// A STUN binding request from an unvalidated source whose USERNAME is
    /// missing or names a ufrag no participant owns.
    pub unknown_ufrag: u64,
    /// A STUN binding request with a known ufrag from a new address, for a
    /// participant that already has
    /// [`IngressConfig::max_addresses_per_participant`] validated addresses.
    pub address_limit: u64,
    /// From a validated address sending more than
    /// [`IngressConfig::max_bitrate_bps`] or [`IngressConfig::max_packet_rate`].
    pub throttled: u64,
    /// From a validated address (or a binding request with a known ufrag),
    /// but not STUN, DTLS, RTP or RTCP.
    pub malformed: u64,
    /// The participant's `Rtc` refused the datagram (bad SRTP, ...), or,
    /// from an unvalidated address, did not answer it (a binding request
    /// whose message integrity failed).
    pub rejected: u64,
}

impl std::ops::AddAssign for DropStats {
    /// Sum two shards' counters.
    fn add_assign(&mut self, o: DropStats) {
        self.unknown_source += o.unknown_source;
        self.rate_limited += o.rate_limited;
        self.unknown_ufrag += o.unknown_ufrag;
        self.address_limit += o.address_limit;
        self.throttled += o.throttled;
        self.malformed += o.malformed;
        self.rejected += o.rejected;
    }
}

impl DropStats {
    /// All dropped datagrams.
    pub fn total(&self) -> u64 {
        self.unknown_source
            + self.rate_limited
            + self.unknown_ufrag
            + self.address_limit
            + self.throttled
            + self.malformed
            + self.rejected
    }
}

/// Gauges and counters of the socket protection of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IngressStats {
    /// Unvalidated sources whose STUN rate is tracked now.
    pub tracked_sources: usize,
    /// The fixed size of that table ([`IngressConfig::source_table_capacity`]
    /// rounded up to a power of two times 4).
    pub source_table_capacity: usize,
    /// Sources forgotten to make room for new ones (a high rate means many
    /// distinct sources: a spoofed flood, or a table too small).
    pub source_evictions: u64,
    /// Validated addresses (participants' routes).
    pub validated_addresses: usize,
}

/// ICE-TCP connections of one shard ([`TcpConfig`]): gauges, and one
/// counter per reason a connection was refused or closed. All zero when
/// TCP is off. Frames a connection delivers go through the same checks as
/// UDP datagrams and are counted in [`DropStats`] when dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TcpStats {
    /// Connections open now.
    pub open: usize,
    /// Of those, not yet validated by an answered STUN binding request.
    pub pending: usize,
    /// Connections accepted (and kept) so far.
    pub accepted: u64,
    /// Connections that carried a binding request a participant's ICE
    /// agent answered.
    pub validated: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Refused: the shard had [`TcpConfig::max_connections`], none of them
    /// unvalidated.
    pub refused_shard_limit: u64,
    /// Refused: the source had [`TcpConfig::max_connections_per_source`]
    /// connections, or [`TcpConfig::max_pending_per_source`] unvalidated.
    pub refused_source_limit: u64,
    /// Closed: the oldest unvalidated connection, to make room for a new
    /// one ([`TcpConfig::max_pending`] or [`TcpConfig::max_connections`]).
    pub evicted_pending: u64,
    /// Closed: not validated within [`TcpConfig::handshake_timeout`]
    /// (half-open, silent or dribbling connections).
    pub closed_handshake_timeout: u64,
    /// Closed: a validated connection delivered no complete frame for
    /// [`TcpConfig::idle_timeout`].
    pub closed_idle: u64,
    /// Closed: a frame longer than [`TcpConfig::max_frame_len`], or of
    /// length zero.
    pub closed_bad_frame: u64,
    /// Closed: an unvalidated connection sent something other than a STUN
    /// binding request.
    pub closed_not_stun: u64,
    /// Closed: an unvalidated connection's binding request was refused
    /// (unknown ufrag, failed message integrity, the participant's address
    /// limit).
    pub closed_rejected: u64,
    /// Closed: its participant left (or its room closed).
    pub closed_participant_gone: u64,
    /// Closed by the client (or a socket error).
    pub closed_by_peer: u64,
}

/// Upper bounds (bits/s) of the buckets of [`DownlinkStats::estimates`]; a
/// last bucket holds the estimates above the last bound.
pub const ESTIMATE_BOUNDS_BPS: [u64; 9] = [
    100_000, 200_000, 300_000, 500_000, 800_000, 1_200_000, 2_000_000, 3_000_000, 5_000_000,
];

/// The subscribers' downlinks on a shard now (gauges, not counters): the
/// sums and distributions an operator graphs. One subscriber's own state is
/// `ShardCore::subscriber_stats` (and the reference server's
/// `GET .../participants/{participant}/bandwidth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownlinkStats {
    /// Subscribers with a bandwidth estimate (none without bandwidth
    /// estimation).
    pub subscribers: u64,
    /// The sum of their estimates (str0m's), bits/s.
    pub estimate_bps: u64,
    /// How many of them have an estimate up to each of
    /// [`ESTIMATE_BOUNDS_BPS`] (not cumulative; the last entry: above the
    /// last bound).
    pub estimates: [u64; ESTIMATE_BOUNDS_BPS.len() + 1],
    /// Video bitrate allocated to every subscriber, summed, bits/s.
    pub allocated_bps: u64,
    /// What every subscriber's downlink delivered over the last second
    /// (media written times the share that arrived), summed, bits/s.
    pub delivered_bps: u64,
    /// Subscribers whose link shows congestion now (loss, a queue, or a
    /// cap in force).
    pub congested: u64,
    /// Video slots showing `l`, `m`, `h` now, and paused for bandwidth.
    pub slots: [u64; 4],
}

impl DownlinkStats {
    /// Count one subscriber's estimate.
    pub(crate) fn add_estimate(&mut self, bps: u64) {
        self.subscribers += 1;
        self.estimate_bps += bps;
        let i = ESTIMATE_BOUNDS_BPS
            .iter()
            .position(|&b| bps <= b)
            .unwrap_or(ESTIMATE_BOUNDS_BPS.len());
        self.estimates[i] += 1;
    }
}

/// Counters of one shard core. Every counter only goes up: a closed or
/// failed room's counts stay in the totals.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct CoreStats {
    /// Datagrams handed to `ShardCore::handle_datagram`.
    pub datagrams_in: u64,
    /// Bytes of those datagrams.
    pub bytes_in: u64,
    /// Datagrams given out by `ShardCore::poll_transmit`.
    pub datagrams_out: u64,
    /// Bytes of those.
    pub bytes_out: u64,
    /// RTP packets received from publishers (after SRTP).
    pub rtp_in: u64,
    /// RTP packets written into subscriber slots.
    pub rtp_forwarded: u64,
    /// Keyframe requests sent to publishers.
    pub plis_sent: u64,
    /// Slot switches completed on keyframes.
    pub slot_switches: u64,
    /// Video packets not forwarded to a slot because it waits for the first
    /// keyframe of the feed it is to show.
    pub dropped_waiting_keyframe: u64,
    /// Times a subscriber's transport loss capped its downlink estimate
    /// below str0m's.
    pub loss_caps: u64,
    /// Times a standing queue on a subscriber's downlink (at least 60 ms
    /// over the base round trip for 1 s) capped its estimate below str0m's.
    pub queue_caps: u64,
    /// Video slots the allocation paused for bandwidth.
    pub bandwidth_pauses: u64,
    /// The subscribers' downlinks now (gauges: they follow the rooms, not
    /// the totals).
    pub downlinks: DownlinkStats,
    /// Forwarded packets that left without their receive time (str0m held
    /// them past 128 later packets of the same slot): they are missing
    /// from the SFU latency histogram ([`crate::ForwardLatency`]).
    pub latency_untracked: u64,
    /// Dropped datagrams by reason.
    pub drops: DropStats,
    /// Rooms failed by a panic in their processing (each one is a bug;
    /// see the logs and [`EngineEvent::RoomFailed`]).
    pub rooms_failed: u64,
    /// Joins refused because the shard was at its admission budget
    /// ([`Error::Overloaded`]).
    pub joins_refused_overload: u64,
    /// Participants removed after the inactivity timeout
    /// ([`LeaveReason::Timeout`]).
    pub participants_timed_out: u64,
    /// The socket protection's table sizes and counters.
    pub ingress: IngressStats,
    /// ICE-TCP connections (all zero when TCP is off).
    pub tcp: TcpStats,
}

impl CoreStats {
    /// Add one room's counters.
    pub(crate) fn add_room(&mut self, r: &crate::core::RoomStats) {
        self.rtp_in += r.rtp_in;
        self.rtp_forwarded += r.rtp_forwarded;
        self.plis_sent += r.plis_sent;
        self.slot_switches += r.slot_switches;
        self.dropped_waiting_keyframe += r.dropped_waiting_keyframe;
        self.loss_caps += r.loss_caps;
        self.queue_caps += r.queue_caps;
        self.bandwidth_pauses += r.bandwidth_pauses;
        self.latency_untracked += r.latency_untracked;
    }
}

/// What a shard core holds, counted: the sizes a leak would grow. Compare
/// them before and after participants go (see `ShardCore::footprint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Rooms.
    pub rooms: usize,
    /// Live participants (each owns one str0m `Rtc`).
    pub participants: usize,
    /// Entries of the rooms' participant-id indexes.
    pub participant_index: usize,
    /// Publisher-to-slot routes.
    pub routes: usize,
    /// Receive video slots of the live participants.
    pub video_slots: usize,
    /// Receive audio slots of the live participants.
    pub audio_slots: usize,
    /// Slots currently showing (or holding) a publisher.
    pub slots_showing: usize,
    /// Classified incoming RTP streams.
    pub rx_tracks: usize,
    /// Removals queued but not yet done.
    pub pending_removals: usize,
    /// Source addresses in the demultiplexing map (UDP).
    pub demux_addrs: usize,
    /// Validated TCP connections in the demultiplexing map.
    pub demux_tcp: usize,
    /// TCP connections open (validated or not).
    pub tcp_connections: usize,
    /// ICE ufrags in the demultiplexing map.
    pub demux_ufrags: usize,
    /// Rooms with a scheduled deadline.
    pub deadlines: usize,
}
