//! When forwarded packets came in, so the driver can measure the SFU's own
//! latency ([`crate::ForwardLatency`]) without the core reading a clock.
//!
//! Each slot keeps, for its last [`KEPT`] written packets, the `now` of the
//! receive that produced them, indexed by the outgoing sequence number. When
//! str0m hands out the datagram carrying one (after its pacer, however
//! late), the room reads the SSRC and sequence number from the clear RTP
//! header, finds the slot and takes the stamp back. Stamps are 32-bit
//! microseconds on the room's own clock (it wraps every ~71 minutes; only
//! differences of a few seconds are ever taken). Fixed arrays: nothing
//! allocates per packet.

use std::time::{Duration, Instant};

/// Written packets remembered per slot: a keyframe burst held by the pacer
/// fits; a packet that leaves after this many later ones of its slot is
/// counted as untracked instead ([`crate::CoreStats::latency_untracked`]).
pub(crate) const KEPT: usize = 128;

/// Marks a used entry (the low 48 bits are sequence number and stamp).
const USED: u64 = 1 << 48;

/// Receive stamps of one slot's recently written packets.
#[derive(Clone)]
pub(crate) struct ReceivedAt {
    ring: [u64; KEPT],
}

impl std::fmt::Debug for ReceivedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.ring.iter().filter(|e| *e & USED != 0).count();
        f.debug_struct("ReceivedAt").field("used", &used).finish()
    }
}

impl Default for ReceivedAt {
    fn default() -> Self {
        ReceivedAt { ring: [0; KEPT] }
    }
}

/// What a datagram a subscriber's `Rtc` gave out carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// Not one of the packets the room wrote (STUN, DTLS, SRTCP, RTX,
    /// padding, a stream that is not a slot).
    Other,
    /// A written packet whose stamp is gone (overwritten).
    Untracked,
    /// A written packet, received at this stamp.
    Stamp(u32),
}

impl ReceivedAt {
    /// Packet `seq` was written, received at `stamp`.
    #[inline]
    pub fn record(&mut self, seq: u16, stamp: u32) {
        self.ring[seq as usize % KEPT] = USED | (u64::from(seq) << 32) | u64::from(stamp);
    }

    /// The stamp of packet `seq`, once (a repeat of the same number is not
    /// the written packet's first departure).
    #[inline]
    pub fn take(&mut self, seq: u16) -> Carried {
        let e = &mut self.ring[seq as usize % KEPT];
        if *e & USED != 0 && (*e >> 32) as u16 == seq {
            let stamp = *e as u32;
            *e = 0;
            Carried::Stamp(stamp)
        } else {
            Carried::Untracked
        }
    }
}

/// `now` as a stamp on the clock that started at `epoch`.
#[inline]
pub(crate) fn stamp(epoch: Instant, now: Instant) -> u32 {
    // Truncation is the wrap.
    now.saturating_duration_since(epoch).as_micros() as u32
}

/// The instant of stamp `s`, given `now` and its stamp (`now` at most ~71
/// minutes later).
#[inline]
fn at(now: Instant, now_stamp: u32, s: u32) -> Option<Instant> {
    match now_stamp.wrapping_sub(s) {
        0 => Some(now),
        ago => now.checked_sub(Duration::from_micros(u64::from(ago))),
    }
}

/// A room's stamp clock: its origin, and the stamp of the last `now` it
/// was asked about (a step asks about one `now` for every packet it
/// forwards and sends: one clock conversion per step).
#[derive(Debug, Default)]
pub(crate) struct StampClock {
    epoch: Option<Instant>,
    last: Option<(Instant, u32)>,
}

impl StampClock {
    /// Start the clock at `now` unless it runs.
    pub fn start(&mut self, now: Instant) {
        self.epoch.get_or_insert(now);
    }

    /// `now` as a stamp (0 before the clock started).
    #[inline]
    pub fn stamp(&mut self, now: Instant) -> u32 {
        match (self.last, self.epoch) {
            (Some((t, s)), _) if t == now => s,
            (_, Some(epoch)) => {
                let s = stamp(epoch, now);
                self.last = Some((now, s));
                s
            }
            (_, None) => 0,
        }
    }

    /// The instant of stamp `s`, taken at `now`; `None` before the clock
    /// started.
    #[inline]
    pub fn instant_of(&mut self, now: Instant, s: u32) -> Option<Instant> {
        self.epoch?;
        let now_stamp = self.stamp(now);
        at(now, now_stamp, s)
    }
}

/// SSRC and sequence number of an SRTP datagram; `None` for STUN, DTLS and
/// SRTCP (RFC 7983 and RFC 5761 demultiplexing).
#[inline]
pub(crate) fn rtp_ids(b: &[u8]) -> Option<(u32, u16)> {
    if b.len() < 12 || b[0] & 0xC0 != 0x80 || (192..=223).contains(&b[1]) {
        return None;
    }
    Some((
        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_comes_back_once_and_only_for_its_number() {
        let mut r = ReceivedAt::default();
        r.record(7, 1_000);
        assert_eq!(r.take(7 + KEPT as u16), Carried::Untracked);
        assert_eq!(r.take(7), Carried::Stamp(1_000));
        assert_eq!(r.take(7), Carried::Untracked);
        r.record(65_535, 5);
        r.record(65_535u16.wrapping_add(KEPT as u16), 6);
        assert_eq!(r.take(65_535), Carried::Untracked, "overwritten");
    }

    #[test]
    fn stamps_survive_the_wrap() {
        let epoch = Instant::now();
        let t = epoch + Duration::from_micros(u64::from(u32::MAX) - 10);
        let s = stamp(epoch, t);
        let later = t + Duration::from_micros(500);
        assert!(stamp(epoch, later) < s, "wrapped");
        let back = at(later, stamp(epoch, later), s).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn the_clock_converts_once_per_now() {
        let mut c = StampClock::default();
        let t0 = Instant::now();
        assert_eq!(c.stamp(t0), 0);
        assert_eq!(c.instant_of(t0, 0), None, "not started");
        c.start(t0);
        let t1 = t0 + Duration::from_millis(5);
        let s1 = c.stamp(t1);
        assert_eq!(s1, 5_000);
        assert_eq!(c.instant_of(t1, s1), Some(t1));
        let t2 = t1 + Duration::from_micros(250);
        assert_eq!(c.instant_of(t2, s1), Some(t1));
        c.start(t2);
        assert_eq!(c.stamp(t2), 5_250, "a second start keeps the origin");
    }

    #[test]
    fn rtp_and_not_rtp() {
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        rtp[1] = 96;
        rtp[2..4].copy_from_slice(&513u16.to_be_bytes());
        rtp[8..12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        assert_eq!(rtp_ids(&rtp), Some((0xdead_beef, 513)));
        let mut rtcp = rtp;
        rtcp[1] = 200;
        assert_eq!(rtp_ids(&rtcp), None);
        assert_eq!(
            rtp_ids(&[0x00, 0x01, 0, 8, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0]),
            None
        );
        assert_eq!(rtp_ids(&[22, 254, 253]), None);
    }
}
