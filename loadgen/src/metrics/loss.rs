//! Packet loss of one RTP stream, RFC 3550 appendix A.3, on the extended
//! (wrap-free) sequence numbers str0m reports.
//!
//! `expected = highest - base + 1`, `lost = expected - received`. str0m drops
//! duplicates before they reach us, so `lost` never goes negative in
//! practice; it is clamped at zero all the same. A packet older than the
//! base (reordered before the first one seen) lowers the base, so it is not
//! mistaken for a duplicate.
//!
//! For the loss of an interval (the measurement window), take a
//! [`LossCounter::snapshot`] at its start and subtract it from the one at its
//! end, as RFC 3550 section 6.4.1 does for "fraction lost".

/// Sequence-number bookkeeping of one stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossCounter {
    base: Option<u64>,
    highest: u64,
    received: u64,
}

/// Expected and received packets at one point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossSnapshot {
    /// Packets expected (highest - base + 1).
    pub expected: u64,
    /// Packets received.
    pub received: u64,
}

impl LossSnapshot {
    /// Expected minus received, never negative.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    /// The interval from `earlier` to `self`: (expected, lost), both
    /// clamped at zero.
    pub fn since(&self, earlier: &LossSnapshot) -> (u64, u64) {
        let expected = self.expected.saturating_sub(earlier.expected);
        let received = self.received.saturating_sub(earlier.received);
        (expected, expected.saturating_sub(received))
    }
}

impl LossCounter {
    /// One packet with extended sequence number `seq` arrived.
    pub fn on_packet(&mut self, seq: u64) {
        self.received += 1;
        match self.base {
            None => {
                self.base = Some(seq);
                self.highest = seq;
            }
            Some(base) => {
                if seq > self.highest {
                    self.highest = seq;
                } else if seq < base {
                    self.base = Some(seq);
                }
            }
        }
    }

    /// Expected and received so far.
    pub fn snapshot(&self) -> LossSnapshot {
        LossSnapshot {
            expected: self.base.map_or(0, |b| self.highest - b + 1),
            received: self.received,
        }
    }
}
