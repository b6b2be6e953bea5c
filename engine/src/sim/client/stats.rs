//! What a simulated client measured.

use std::time::{Duration, Instant};

use crate::sim::media::Trailer;
#[cfg(doc)]
use crate::sim::{ClientConfig, SimClient};

/// Reception measured in one receive slot.
#[derive(Debug, Clone, Default)]
pub struct SlotStats {
    /// The slot's m-line.
    pub mid: String,
    /// Video (true) or audio slot.
    pub video: bool,
    /// RTP packets received.
    pub packets: u64,
    /// First and highest extended sequence number seen.
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub max_seq: Option<u64>,
    /// Times the sequence went backwards (late/retransmitted packets).
    pub reordered: u64,
    /// Publisher changes seen in the slot (from payload trailers).
    pub publisher_switches: u64,
    /// (publisher, layer) changes whose first packet was not part of a keyframe.
    pub non_keyframe_starts: u64,
    /// Packets that arrived with the client's VP8 payload type.
    pub vp8_packets: u64,
    /// Packets that arrived with the client's H.264 payload type.
    pub h264_packets: u64,
    /// H.264 (publisher, layer) changes whose first packet did not start
    /// with the sequence parameter set (a decoder joining there has no SPS
    /// and PPS for the IDR that follows).
    pub h264_starts_without_sps: u64,
    /// H.264 payloads that are not well-formed packetization-mode 1 (a
    /// STAP-A whose unit lengths do not add up to the payload, a cut FU-A):
    /// what a VP8 descriptor rewrite would do to them.
    pub h264_malformed: u64,
    /// Layer or track changes of the same publisher.
    pub layer_switches: u64,
    /// Frames completed (end-of-frame packets).
    pub frames: u64,
    /// Arrival of the first packet.
    pub first_packet_at: Option<Instant>,
    /// Arrival of the first keyframe packet.
    pub first_keyframe_at: Option<Instant>,
    /// Completion time of the last frame.
    pub last_frame_at: Option<Instant>,
    /// Longest gap between completed frames after `measure_from`.
    pub max_frame_gap: Duration,
    /// When that longest gap ended (the frame that closed it completed).
    pub max_frame_gap_end: Option<Instant>,
    /// `slots` messages that said this slot is paused; the gap across a
    /// pause is neither a frame gap nor a freeze.
    pub pauses: u64,
    /// Freezes per W3C webrtc-stats (gap >= max(3 x mean, mean + 150 ms)).
    pub freezes: u64,
    /// Total duration of those freezes.
    pub freeze_time: Duration,
    /// Sum of frame gaps, for the mean.
    pub(super) gap_sum: Duration,
    pub(super) gap_count: u64,
    pub(super) current: Option<(u32, u8, u8)>,
}

impl SlotStats {
    /// What the slot shows now, from the last payload trailer:
    /// (publisher number, track 0 audio / 1 camera / 2 screen, layer).
    pub fn current(&self) -> Option<(u32, u8, u8)> {
        self.current
    }

    /// RFC 3550 A.3: expected minus received (never negative).
    pub fn lost(&self) -> u64 {
        match (self.first_seq, self.max_seq) {
            (Some(a), Some(b)) => (b - a + 1).saturating_sub(self.packets),
            _ => 0,
        }
    }
}

/// One RTP packet received in a slot, as logged when
/// [`ClientConfig::record_arrivals`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Index of the receive slot (offer order, video slots first), as in
    /// [`ClientStats::slots`].
    pub slot: u16,
    /// Extended RTP sequence number (str0m unrolls the 16-bit wrap).
    pub seq: u64,
    /// RTP timestamp of the header (90 kHz video, 48 kHz Opus).
    pub rtp_time: u32,
    /// When the datagram carrying it was received (the `now` given to
    /// [`SimClient::handle_datagram`]).
    pub at: Instant,
    /// Payload bytes.
    pub payload_len: u32,
    /// The RTP packet's bytes as it arrived, header (with extensions) and
    /// payload, decrypted: the datagram is this plus the SRTP tag.
    pub rtp_len: u32,
    /// The measurement trailer, when the payload carries one.
    pub trailer: Option<Trailer>,
}

/// Everything a simulated client measured.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Per receive slot, in offer order (video slots first).
    pub slots: Vec<SlotStats>,
    /// One-way latencies (send time in the trailer to arrival), microseconds.
    pub latencies_us: Vec<u32>,
    /// Media packets written (all layers and tracks).
    pub packets_sent: u64,
    /// Keyframe requests received from the engine.
    pub keyframe_requests: u64,
    /// Control messages received.
    pub control_messages: u64,
    /// RTP packets that arrived on an m-line that is not a slot.
    pub unexpected_packets: u64,
    /// Dynacast messages received (which layers to encode).
    pub layer_updates: u64,
    /// Received payloads that carried the configured
    /// [`ClientConfig::plaintext_marker`](super::ClientConfig::plaintext_marker),
    /// as forwarded (before decryption).
    pub marker_packets: u64,
    /// Received payloads decrypted (end-to-end encrypted clients).
    pub e2ee_decrypted: u64,
    /// Received payloads that did not decrypt (no valid header, or failed
    /// authentication).
    pub e2ee_failures: u64,
}
