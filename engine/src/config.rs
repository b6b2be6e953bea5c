//! Per-room and per-join configuration. Every field has a default that serves
//! a 50-person call.

use std::time::Duration;

use crate::ids::Layer;

/// Configuration of one room.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RoomConfig {
    /// Display name (theme) of the room.
    pub name: String,
    /// Joins beyond this many participants are refused with
    /// [`Error::RoomFull`](crate::Error::RoomFull). Default 50.
    pub max_participants: usize,
    /// Most recvonly video m-lines (slots) one offer may carry. Default 49.
    pub max_video_slots: usize,
    /// Most recvonly audio m-lines (slots) one offer may carry. Default 8.
    pub max_audio_slots: usize,
    /// The highest simulcast layer ever forwarded; the bandwidth allocator
    /// picks at or below it, capped further by each slot's requested maximum
    /// resolution. Default [`Layer::HIGH`].
    pub max_layer: Layer,
    /// The layer featured slots (screen share, pinned, active speaker) climb
    /// to before the other slots get their lowest layer. Default
    /// [`Layer::MEDIUM`].
    pub featured_layer: Layer,
    /// Send-side bandwidth estimation (TWCC + GCC in str0m) on every
    /// participant, driving the per-subscriber allocator. Default on; off
    /// means every slot gets its cap.
    pub bandwidth_estimation: bool,
    /// The estimate a new participant starts from (the speaker on `m` and a
    /// few `l`; str0m probes up from there within a second on a fast link).
    /// Default 1 Mbps: starting higher overruns slow downlinks for seconds
    /// (at 800 kbps, 2.5 Mbps gave 2 s of queueing delay at join).
    pub initial_bitrate_bps: u64,
    /// Bitrate kept for each audio slot before video is allocated: what its
    /// holder measurably sends, and at least this. Default 40 kbps.
    pub audio_reserve_bps: u64,
    /// Share of the estimate the allocator hands out to every slot. The
    /// rest absorbs keyframe bursts, and only featured slots (screen,
    /// pinned, speaker) may spend it, on reaching the featured layer.
    /// Default 0.85.
    pub estimate_utilization: f64,
    /// Estimate rises smaller than this fraction count only once they have
    /// lasted 1 s (falls always count: the allocator's discount on layers a
    /// slot already has keeps small falls from flipping layers). Default
    /// 0.15.
    pub estimate_hysteresis: f64,
    /// str0m's pacer sends each subscriber's queued packets at this multiple
    /// of its estimate. Default 1.5: at str0m's 1.1, on 800 kbit/s links
    /// whose delay-based estimate had backed off to 410-610 kbit/s, the pacer
    /// held keyframe bursts for up to 0.8 s (p99.9 of the engine's own
    /// latency) that the link itself would have carried at once; at 2.5
    /// (libwebrtc's factor) the bursts reached the link whole and its
    /// queue grew past 250 ms (see `docs/architecture.md`, "Pacing").
    pub pacing_factor: f64,
    /// After a downgrade forced by the estimate, no slot is upgraded for
    /// this long. Default 4 s.
    pub upgrade_hold: Duration,
    /// A forwarded layer that stops arriving for this long is replaced by a
    /// lower one. Default 500 ms.
    pub layer_stall: Duration,
    /// Assumed bitrate of each layer until it has been measured (lowest first).
    /// Default 150 kbps, 500 kbps, 1.5 Mbps.
    pub layer_bitrate_hints: Vec<u64>,
    /// Nominal frame heights of the layers (lowest first), used to honour a
    /// subscriber's per-slot maximum resolution. Default 180, 360, 720.
    pub layer_heights: Vec<u32>,
    /// Minimum time between two keyframe requests (PLI) to one publisher layer.
    /// Default 500 ms: 49 subscribers switching at once cause one PLI.
    pub pli_interval: Duration,
    /// How long the active speaker must be out-talked before it changes.
    /// Default 500 ms.
    pub speaker_switch_hold: Duration,
    /// How often slot assignments are re-evaluated after speaker changes.
    /// Default 250 ms.
    pub reassign_interval: Duration,
    /// RTX cache per forwarded video slot: packets and age. Answers subscriber
    /// NACKs without asking the publisher. Default 512 packets / 1.5 s.
    pub rtx_cache_packets: usize,
    /// See [`RoomConfig::rtx_cache_packets`].
    pub rtx_cache_age: Duration,
    /// A participant from whom no datagram its session accepts (STUN
    /// consent check, DTLS, SRTP, SRTCP) has arrived for this long is
    /// removed with [`LeaveReason::Timeout`](crate::LeaveReason::Timeout),
    /// exactly as if it had left. Counted from the join until the first
    /// datagram. Browsers send a consent check at least every 5 s (RFC 7675)
    /// and RTCP every second, so a live peer is never this quiet.
    /// Default 10 s.
    pub inactivity_timeout: Duration,
    /// End-to-end encrypted room: the clients encrypt media frames and chat
    /// (`docs/e2ee.md`); the engine forwards them unchanged, as always,
    /// requires chat messages flagged encrypted and relays the clients'
    /// key-exchange messages. Told to every client in its `welcome`.
    /// Default off.
    pub e2ee: bool,
    /// Chat limits and history bounds.
    pub chat: crate::core::chat::ChatConfig,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            max_participants: 50,
            max_video_slots: 49,
            max_audio_slots: 8,
            max_layer: Layer::HIGH,
            featured_layer: Layer::MEDIUM,
            bandwidth_estimation: true,
            initial_bitrate_bps: 1_000_000,
            audio_reserve_bps: 40_000,
            estimate_utilization: 0.85,
            estimate_hysteresis: 0.15,
            pacing_factor: 1.5,
            upgrade_hold: Duration::from_secs(4),
            layer_stall: Duration::from_millis(500),
            layer_bitrate_hints: vec![150_000, 500_000, 1_500_000],
            layer_heights: vec![180, 360, 720],
            pli_interval: Duration::from_millis(500),
            speaker_switch_hold: Duration::from_millis(500),
            reassign_interval: Duration::from_millis(250),
            rtx_cache_packets: 512,
            rtx_cache_age: Duration::from_millis(1500),
            inactivity_timeout: Duration::from_secs(10),
            e2ee: false,
            chat: Default::default(),
        }
    }
}

impl RoomConfig {
    /// Check every field; the error names the first that cannot work.
    /// [`Engine::create_room`](crate::Engine::create_room) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::new(field, reason));
        if self.max_participants == 0 {
            return bad("max_participants", "must be at least 1");
        }
        if !(self.estimate_utilization > 0.0 && self.estimate_utilization <= 1.0) {
            return bad("estimate_utilization", "must be above 0 and at most 1");
        }
        if !(self.estimate_hysteresis >= 0.0 && self.estimate_hysteresis.is_finite()) {
            return bad(
                "estimate_hysteresis",
                "must be a finite fraction, 0 or more",
            );
        }
        if !(self.pacing_factor >= 1.0 && self.pacing_factor.is_finite()) {
            return bad("pacing_factor", "must be a finite multiple, 1 or more");
        }
        if self.layer_stall.is_zero() {
            return bad("layer_stall", "must be longer than zero");
        }
        if self.layer_heights.windows(2).any(|w| w[0] > w[1]) {
            return bad(
                "layer_heights",
                "must be in ascending order, lowest layer first",
            );
        }
        if self.inactivity_timeout < Duration::from_millis(100) {
            return bad(
                "inactivity_timeout",
                "must be at least 100 ms (peers would be dropped between packets)",
            );
        }
        if self.initial_bitrate_bps == 0 {
            return bad("initial_bitrate_bps", "must be above 0");
        }
        Ok(())
    }

    /// A room with a display name and default limits.
    pub fn named(name: impl Into<String>) -> Self {
        RoomConfig {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Set [`RoomConfig::max_participants`].
    pub fn max_participants(mut self, n: usize) -> Self {
        self.max_participants = n;
        self
    }

    /// Set [`RoomConfig::inactivity_timeout`].
    pub fn inactivity_timeout(mut self, d: Duration) -> Self {
        self.inactivity_timeout = d;
        self
    }

    /// Set [`RoomConfig::e2ee`].
    pub fn e2ee(mut self, on: bool) -> Self {
        self.e2ee = on;
        self
    }

    /// Set [`RoomConfig::max_layer`].
    pub fn max_layer(mut self, layer: Layer) -> Self {
        self.max_layer = layer;
        self
    }
}

/// Options of one join.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// Display name shown to the others.
    pub name: String,
    /// A participant coming back, not a newcomer (its connection was lost,
    /// or the room moved to this engine after its server failed): a locked
    /// room admits it. The embedder decides who that is; default false.
    pub rejoining: bool,
}

impl JoinOptions {
    /// Join under a display name.
    pub fn new(name: impl Into<String>) -> Self {
        JoinOptions {
            name: name.into(),
            rejoining: false,
        }
    }

    /// Set [`JoinOptions::rejoining`].
    pub fn rejoining(mut self, rejoining: bool) -> Self {
        self.rejoining = rejoining;
        self
    }
}

/// Limits on what one shard accepts from its UDP socket. Every shard gets
/// its own copy; see `docs/operations.md` (section 6) for what each limit
/// protects and the drop counter it feeds.
///
/// Datagrams from addresses no participant has validated are accepted only
/// as STUN binding requests carrying a known ufrag, and at most
/// [`IngressConfig::stun_rate_per_source`] per second from one source (an
/// IPv4 address or an IPv6 /64). Each validated address may send at most
/// [`IngressConfig::max_bitrate_bps`] and [`IngressConfig::max_packet_rate`];
/// the excess is dropped before any decryption.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressConfig {
    /// STUN binding requests per second accepted from one unvalidated
    /// source. Default 50 (a client's connectivity checks need a few).
    pub stun_rate_per_source: u32,
    /// Requests one unvalidated source may send at once before
    /// [`IngressConfig::stun_rate_per_source`] applies. Default 100: a
    /// NAT with a few dozen clients joining together.
    pub stun_burst_per_source: u32,
    /// Unvalidated sources whose rate is tracked, per shard. The table is
    /// allocated once at this size and never grows: when it is full the
    /// least recently refilled source in the same bucket is forgotten.
    /// Default 4096 (about 160 KiB per shard).
    pub source_table_capacity: usize,
    /// Bitrate one validated address may send. Default 20 Mbps: several
    /// times a 3-layer simulcast publisher with a screen share and audio
    /// (about 2.3 Mbps + 1.5 Mbps + 40 kbps), keyframe bursts included.
    pub max_bitrate_bps: u64,
    /// Datagrams per second one validated address may send. Default 5000
    /// (a publisher at 4 Mbps sends about 400).
    pub max_packet_rate: u32,
    /// How much of [`IngressConfig::max_bitrate_bps`] and
    /// [`IngressConfig::max_packet_rate`] may arrive at once: the depth of
    /// both token buckets, in time at the full rate. Default 1 s.
    pub burst: std::time::Duration,
    /// Addresses one participant may validate over its life (ICE learns
    /// another one when a client's network changes). Binding requests from
    /// further addresses are dropped before the participant's ICE agent
    /// sees them, so replays of a captured request from many sources cost
    /// no HMAC and grow no state. Default 4.
    pub max_addresses_per_participant: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            stun_rate_per_source: 50,
            stun_burst_per_source: 100,
            source_table_capacity: 4096,
            max_bitrate_bps: 20_000_000,
            max_packet_rate: 5000,
            burst: std::time::Duration::from_secs(1),
            max_addresses_per_participant: 4,
        }
    }
}

impl IngressConfig {
    /// Check the limits; the error names the field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::new(field, reason));
        if self.stun_rate_per_source == 0 {
            return bad(
                "ingress.stun_rate_per_source",
                "must be at least 1 (nobody could join)",
            );
        }
        if self.stun_burst_per_source == 0 {
            return bad(
                "ingress.stun_burst_per_source",
                "must be at least 1 (nobody could join)",
            );
        }
        if self.source_table_capacity == 0 {
            return bad("ingress.source_table_capacity", "must be at least 1");
        }
        if self.max_bitrate_bps < 100_000 {
            return bad(
                "ingress.max_bitrate_bps",
                "must be at least 100000 (audio alone needs that)",
            );
        }
        if self.max_packet_rate < 50 {
            return bad(
                "ingress.max_packet_rate",
                "must be at least 50 (audio alone needs that)",
            );
        }
        if self.burst < std::time::Duration::from_millis(10) {
            return bad("ingress.burst", "must be at least 10 ms");
        }
        if self.max_addresses_per_participant == 0 {
            return bad(
                "ingress.max_addresses_per_participant",
                "must be at least 1",
            );
        }
        Ok(())
    }
}

/// ICE-TCP (RFC 6544): every shard listens on a TCP port beside its UDP
/// one (the same port number) and offers a passive TCP host candidate
/// there, so a client whose network drops UDP still reaches the engine.
/// Media on TCP is framed as RFC 4571 says (a 2-byte length before each
/// datagram). Clients prefer the UDP candidate (its ICE priority is
/// higher) whenever it works. Off unless [`EngineBuilder::ice_tcp`]
/// turns it on.
///
/// Every resource a connection holds is bounded: connections per shard and
/// per source, unvalidated ("pending") connections, the frame length, the
/// per-connection send buffer, and how long a connection may stay
/// unvalidated or silent. Until a connection carries a STUN binding request
/// that a participant's ICE agent answers (its ufrag known, its message
/// integrity verified), nothing else it sends is looked at. Each reason a
/// connection is refused or closed has its own counter
/// ([`TcpStats`](crate::TcpStats)).
///
/// [`EngineBuilder::ice_tcp`]: crate::EngineBuilder::ice_tcp
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    /// Open connections per shard. At the limit, the oldest unvalidated
    /// connection is closed for a new one; with none, the new one is
    /// refused. Default 1024.
    pub max_connections: usize,
    /// Unvalidated connections per shard; at the limit the oldest is closed
    /// for a new one (a flood of idle connections cannot lock clients out
    /// for longer than it takes them to send their first check). Default 256.
    pub max_pending: usize,
    /// Open connections from one source (an IPv4 address or an IPv6 /64):
    /// more are refused. Default 64 (a NAT with a room's worth of clients).
    pub max_connections_per_source: usize,
    /// Unvalidated connections from one source; more are refused. Default 8.
    pub max_pending_per_source: usize,
    /// Longest frame accepted (RFC 4571 allows 65535); a connection that
    /// announces a longer one is closed. Default 2048, the longest UDP
    /// datagram a shard receives.
    pub max_frame_len: usize,
    /// An unvalidated connection is closed this long after it was accepted.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// A validated connection that delivers no complete frame for this long
    /// is closed (bytes that never complete a frame do not count: a slow
    /// dribble is as idle as silence). Browsers send a consent check at
    /// least every 5 s. Default 30 s.
    pub idle_timeout: Duration,
    /// Bytes queued per connection while the kernel's send buffer (fixed
    /// at 128 KiB per connection, which Linux doubles) is full; frames
    /// beyond it are dropped, as a full UDP socket drops datagrams. Queued
    /// media is late media: together the two hold about 1.5 s of a
    /// 2 Mbps downlink. Default 128 KiB.
    pub send_buffer_bytes: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_connections: 1024,
            max_pending: 256,
            max_connections_per_source: 64,
            max_pending_per_source: 8,
            max_frame_len: 2048,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            send_buffer_bytes: 128 * 1024,
        }
    }
}

impl TcpConfig {
    /// Check the limits; the error names the field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::new(field, reason));
        if self.max_connections == 0 {
            return bad("tcp.max_connections", "must be at least 1");
        }
        if self.max_pending == 0 || self.max_pending > self.max_connections {
            return bad(
                "tcp.max_pending",
                "must be at least 1 and at most max_connections",
            );
        }
        if self.max_connections_per_source == 0 {
            return bad("tcp.max_connections_per_source", "must be at least 1");
        }
        if self.max_pending_per_source == 0 {
            return bad("tcp.max_pending_per_source", "must be at least 1");
        }
        if !(576..=65535).contains(&self.max_frame_len) {
            return bad(
                "tcp.max_frame_len",
                "must be 576 to 65535 (a frame's length field has 16 bits)",
            );
        }
        if self.handshake_timeout < Duration::from_millis(100) {
            return bad("tcp.handshake_timeout", "must be at least 100 ms");
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return bad(
                "tcp.idle_timeout",
                "must be at least 1 s (consent checks come every few seconds)",
            );
        }
        if self.send_buffer_bytes < 2 + self.max_frame_len {
            return bad(
                "tcp.send_buffer_bytes",
                "must hold at least one frame (2 + max_frame_len)",
            );
        }
        Ok(())
    }
}

/// A configuration value that cannot work: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The field, as named in the configuration type (`max_participants`,
    /// `ingress.burst`, `shards`).
    pub field: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacing_factor_below_one_or_not_finite_is_refused() {
        for bad in [0.9, f64::NAN, f64::INFINITY] {
            let c = RoomConfig {
                pacing_factor: bad,
                ..Default::default()
            };
            assert_eq!(c.validate().unwrap_err().field, "pacing_factor", "{bad}");
        }
        let c = RoomConfig {
            pacing_factor: 1.0,
            ..Default::default()
        };
        c.validate().unwrap();
    }
}
