//! Protection at the socket: cheap classification of datagrams from
//! unvalidated addresses, a fixed-size per-source rate limiter for their
//! STUN binding requests, and token buckets that throttle each validated
//! address to its configured ingress rate.
//!
//! Everything here is allocation-free after construction: a flood of
//! garbage from spoofed sources costs a few hash computations per datagram
//! and never grows memory.

use std::hash::{DefaultHasher, Hasher};
use std::net::IpAddr;
use std::time::Instant;

use crate::config::IngressConfig;

/// STUN's magic cookie (RFC 8489 section 5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// STUN attribute USERNAME (RFC 8489 section 14.3).
const ATTR_USERNAME: u16 = 0x0006;
/// Ways of each set of the source table: a new source evicts the least
/// recently refilled of these.
const WAYS: usize = 4;

/// The local ufrag of a STUN binding request (RFC 8489 section 5, RFC 8445
/// section 7.2.2: USERNAME is `local:remote` from the receiver's view),
/// found without parsing the whole message or allocating. `None` for
/// anything that is not a well-formed-looking binding request with a
/// USERNAME.
pub(crate) fn binding_request_ufrag(buf: &[u8]) -> Option<&str> {
    if !is_binding_request(buf) {
        return None;
    }
    let mut attrs = &buf[20..];
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = u16::from_be_bytes([attrs[2], attrs[3]]) as usize;
        let value = attrs.get(4..4 + len)?;
        if typ == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to 4 bytes.
        let padded = 4 + len.div_ceil(4) * 4;
        attrs = attrs.get(padded..)?;
    }
    None
}

/// Header check of a STUN binding request: type 0x0001, the magic cookie,
/// and a length that matches the datagram.
pub(crate) fn is_binding_request(buf: &[u8]) -> bool {
    buf.len() >= 20
        && buf[0] == 0
        && buf[1] == 1
        && buf[4..8] == MAGIC_COOKIE
        && u16::from_be_bytes([buf[2], buf[3]]) as usize + 20 == buf.len()
}

/// A token bucket with time kept by the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f32,
    /// Last refill; `None` means full.
    at: Option<Instant>,
}

impl Bucket {
    /// A full bucket.
    pub const FULL: Bucket = Bucket {
        tokens: 0.0,
        at: None,
    };

    /// Refill at `rate` per second up to `burst`, then take `cost` if there
    /// is that much. Returns whether it was taken.
    pub fn take(&mut self, now: Instant, rate: f32, burst: f32, cost: f32) -> bool {
        let tokens = match self.at {
            None => burst,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f32();
                (self.tokens + dt * rate).min(burst)
            }
        };
        self.at = Some(now);
        if tokens >= cost {
            self.tokens = tokens - cost;
            true
        } else {
            self.tokens = tokens;
            false
        }
    }

    fn refilled_at(&self) -> Option<Instant> {
        self.at
    }
}

/// The two buckets of one validated address: bytes and datagrams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throttle {
    bytes: Bucket,
    packets: Bucket,
}

impl Throttle {
    pub const FULL: Throttle = Throttle {
        bytes: Bucket::FULL,
        packets: Bucket::FULL,
    };
}

/// Rates of [`Throttle`], precomputed from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThrottleLimits {
    bytes_per_s: f32,
    bytes_burst: f32,
    packets_per_s: f32,
    packets_burst: f32,
}

impl ThrottleLimits {
    pub fn new(c: &IngressConfig) -> Self {
        let burst = c.burst.as_secs_f32();
        let bytes_per_s = c.max_bitrate_bps as f32 / 8.0;
        let packets_per_s = c.max_packet_rate as f32;
        ThrottleLimits {
            bytes_per_s,
            // At least one full-size datagram, however short the burst.
            bytes_burst: (bytes_per_s * burst).max(2048.0),
            packets_per_s,
            packets_burst: (packets_per_s * burst).max(1.0),
        }
    }

    /// Account one datagram of `len` bytes; false when over either limit.
    pub fn admit(&self, t: &mut Throttle, now: Instant, len: usize) -> bool {
        // Both buckets are charged only when both have room, so a datagram
        // dropped for one limit does not use up the other.
        let mut bytes = t.bytes;
        let mut packets = t.packets;
        if bytes.take(now, self.bytes_per_s, self.bytes_burst, len as f32)
            && packets.take(now, self.packets_per_s, self.packets_burst, 1.0)
        {
            t.bytes = bytes;
            t.packets = packets;
            true
        } else {
            // Keep the refill, not the charge.
            t.bytes.take(now, self.bytes_per_s, self.bytes_burst, 0.0);
            t.packets
                .take(now, self.packets_per_s, self.packets_burst, 0.0);
            false
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: u128,
    used: bool,
    bucket: Bucket,
}

/// Per-source token buckets for STUN from unvalidated addresses, in a
/// fixed-size set-associative table: memory is allocated once, and a flood
/// from spoofed sources only recycles entries.
pub(crate) struct SourceLimiter {
    entries: Box<[Entry]>,
    sets_mask: usize,
    /// Secret keys of the set index, so an attacker cannot aim sources at
    /// one set (from the core's seed: OS-random in production).
    keys: (u64, u64),
    rate: f32,
    burst: f32,
    len: usize,
    evictions: u64,
}

impl SourceLimiter {
    pub fn new(c: &IngressConfig, seed: u64) -> Self {
        let sets = c.source_table_capacity.div_ceil(WAYS).next_power_of_two();
        let empty = Entry {
            key: 0,
            used: false,
            bucket: Bucket::FULL,
        };
        SourceLimiter {
            entries: vec![empty; sets * WAYS].into_boxed_slice(),
            sets_mask: sets - 1,
            keys: (crate::rng::derive(seed, 1), crate::rng::derive(seed, 2)),
            rate: c.stun_rate_per_source as f32,
            burst: c.stun_burst_per_source as f32,
            len: 0,
            evictions: 0,
        }
    }

    /// SipHash of the key behind the two secret words.
    fn set_hash(&self, key: u128) -> u64 {
        let mut h = DefaultHasher::new();
        h.write_u64(self.keys.0);
        h.write_u64(self.keys.1);
        h.write_u128(key);
        h.finish()
    }

    /// Take one token for `ip`; false when its source is over the limit.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        let set = (self.set_hash(key) as usize) & self.sets_mask;
        let ways = &mut self.entries[set * WAYS..(set + 1) * WAYS];
        let slot = match ways.iter().position(|e| e.used && e.key == key) {
            Some(i) => i,
            None => {
                let i = match ways.iter().position(|e| !e.used) {
                    Some(i) => {
                        self.len += 1;
                        i
                    }
                    None => {
                        self.evictions += 1;
                        // Every way is used, so every bucket has a refill time.
                        (0..WAYS)
                            .min_by_key(|&i| ways[i].bucket.refilled_at())
                            .unwrap_or(0)
                    }
                };
                ways[i] = Entry {
                    key,
                    used: true,
                    bucket: Bucket::FULL,
                };
                i
            }
        };
        ways[slot].bucket.take(now, self.rate, self.burst, 1.0)
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries the table holds (its fixed size).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Sources forgotten to make room for new ones.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

/// An IPv4 address, or an IPv6 /64 (one host usually owns a whole /64, so
/// per-address limits would be free to dodge).
pub(crate) fn source_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | 1,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while !attrs.len().is_multiple_of(4) {
            attrs.push(0);
        }
        // A PRIORITY attribute after it, as browsers send.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn ufrag_is_found_without_parsing_and_garbage_is_refused() {
        let m = binding_request(b"abcd:remote1");
        assert_eq!(binding_request_ufrag(&m), Some("abcd"));
        let m = binding_request(b"xyz");
        assert_eq!(binding_request_ufrag(&m), Some("xyz"));
        // Truncated: the length field no longer matches.
        assert_eq!(binding_request_ufrag(&m[..m.len() - 4]), None);
        // A binding response (0x0101) is not a request.
        let mut resp = m.clone();
        resp[0] = 0x01;
        assert_eq!(binding_request_ufrag(&resp), None);
        // An attribute that claims to run past the end.
        let mut bad = m.clone();
        bad[22] = 0xff;
        assert_eq!(binding_request_ufrag(&bad), None);
        assert_eq!(binding_request_ufrag(&[0u8; 19]), None);
        assert_eq!(binding_request_ufrag(&[0x80; 200]), None);
    }

    #[test]
    fn a_source_over_its_rate_is_limited_and_refills() {
        let c = IngressConfig {
            stun_rate_per_source: 10,
            stun_burst_per_source: 5,
            ..IngressConfig::default()
        };
        let mut l = SourceLimiter::new(&c, 7);
        let t = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!((0..20).filter(|_| l.admit(a, t)).count(), 5);
        // Another source has its own bucket.
        assert!(l.admit(b, t));
        // 10 per second: 2 tokens after 200 ms.
        let later = t + Duration::from_millis(200);
        assert_eq!((0..20).filter(|_| l.admit(a, later)).count(), 2);
    }

    #[test]
    fn ipv6_sources_are_limited_per_slash_64() {
        let c = IngressConfig {
            stun_burst_per_source: 3,
            ..IngressConfig::default()
        };
        let mut l = SourceLimiter::new(&c, 7);
        let t = Instant::now();
        let admitted = (0..10u16)
            .filter(|i| {
                let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, *i);
                l.admit(IpAddr::V6(ip), t)
            })
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn the_source_table_never_grows_past_its_capacity() {
        let c = IngressConfig {
            source_table_capacity: 64,
            ..IngressConfig::default()
        };
        let mut l = SourceLimiter::new(&c, 7);
        let cap = l.capacity();
        assert!((64..=128).contains(&cap), "capacity {cap}");
        let t = Instant::now();
        for i in 0..10_000u32 {
            l.admit(IpAddr::V4(Ipv4Addr::from(i)), t);
        }
        assert!(l.len() <= cap);
        assert!(l.evictions() >= 10_000 - cap as u64);
        assert_eq!(l.capacity(), cap);
    }

    #[test]
    fn throttle_drops_over_the_bitrate_and_the_packet_rate() {
        let c = IngressConfig {
            max_bitrate_bps: 800_000, // 100 kB/s
            max_packet_rate: 1000,
            burst: Duration::from_millis(100),
            ..IngressConfig::default()
        };
        let limits = ThrottleLimits::new(&c);
        let t0 = Instant::now();
        let mut th = Throttle::FULL;
        // 10 kB of burst: ten 1000-byte datagrams.
        let passed = (0..50).filter(|_| limits.admit(&mut th, t0, 1000)).count();
        assert_eq!(passed, 10);
        // 100 small datagrams of packet burst.
        let mut th = Throttle::FULL;
        let passed = (0..500).filter(|_| limits.admit(&mut th, t0, 10)).count();
        assert_eq!(passed, 100);
        // A steady 50 kB/s, 100 pps stream is never throttled.
        let mut th = Throttle::FULL;
        let dropped = (0..1000u64)
            .filter(|i| !limits.admit(&mut th, t0 + Duration::from_millis(10 * i), 500))
            .count();
        assert_eq!(dropped, 0);
    }
}
