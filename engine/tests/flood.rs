//! Real UDP on loopback: a room of four str0m clients keeps every packet
//! while other sockets flood the shard's port with garbage, truncated RTP,
//! STUN with unknown ufrags and bad message integrity, and replays of the
//! clients' own captured datagrams from addresses that are not theirs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piazza::sim::{ClientConfig, SimClient};
use piazza::{DropStats, Engine, IngressConfig, JoinOptions, RoomConfig, RoomId};

/// Flood datagrams per second, and how long the flood lasts.
const FLOOD_PPS: u64 = 5000;
const FLOOD_TIME: Duration = Duration::from_secs(2);
/// Distinct flood source IPs (127.1.0.x), more than the source table holds.
const FLOOD_SOURCES: u8 = 200;
const SOURCE_TABLE: usize = 64;

struct Peer {
    client: SimClient,
    socket: UdpSocket,
    /// The engine's ICE ufrag for this peer (from the answer).
    engine_ufrag: String,
}

fn join(engine: &Engine, room: RoomId, n: u32, epoch: Instant) -> Peer {
    let mut cfg = ClientConfig::new(n);
    cfg.video_slots = 3;
    cfg.audio_slots = 3;
    cfg.speaking = n == 0;
    let (mut client, socket) = SimClient::on_loopback(cfg, epoch).unwrap();
    let joined = client
        .join_engine(engine, room, JoinOptions::new(format!("peer-{n}")))
        .unwrap();
    let engine_ufrag = joined
        .answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("the answer carries an ICE ufrag")
        .trim()
        .to_string();
    Peer {
        client,
        socket,
        engine_ufrag,
    }
}

/// Datagrams the clients sent, kept for replay.
#[derive(Default)]
struct Captured {
    srtp: Vec<Vec<u8>>,
    stun: Vec<Vec<u8>>,
}

/// Drive every peer with the real clock for `d`, capturing a few of the
/// first peer's outgoing datagrams.
fn drive(peers: &mut [Peer], d: Duration, capture: &Mutex<Captured>) {
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 2000];
    while Instant::now() < end {
        for (i, p) in peers.iter_mut().enumerate() {
            p.client.step_udp(&p.socket, &mut buf, |d| {
                if i == 0 {
                    let mut c = capture.lock().unwrap();
                    let first = d.first().copied().unwrap_or(0);
                    if (128..=191).contains(&first) && c.srtp.len() < 64 {
                        c.srtp.push(d.to_vec());
                    } else if first < 2 && c.stun.len() < 8 {
                        c.stun.push(d.to_vec());
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A STUN binding request with `username` and a MESSAGE-INTEGRITY that is
/// 20 random bytes (so it never verifies).
fn stun_request(rng: &mut fastrand::Rng, username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&[0x00, 0x06]);
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while !attrs.len().is_multiple_of(4) {
        attrs.push(0);
    }
    // PRIORITY, which a binding request must carry (RFC 8445 7.1.1).
    attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x7f, 0x1e, 0xff]);
    attrs.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    attrs.extend((0..20).map(|_| rng.u8(..)));
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend((0..12).map(|_| rng.u8(..)));
    m.extend_from_slice(&attrs);
    m
}

/// What the flood sent, by kind.
#[derive(Debug, Default)]
struct Sent {
    random: u64,
    truncated_rtp: u64,
    stun_unknown_ufrag: u64,
    stun_bad_integrity: u64,
    replayed: u64,
}

impl Sent {
    fn total(&self) -> u64 {
        self.random
            + self.truncated_rtp
            + self.stun_unknown_ufrag
            + self.stun_bad_integrity
            + self.replayed
    }
}

/// Send the mix at `FLOOD_PPS` for `FLOOD_TIME` from `FLOOD_SOURCES`
/// loopback IPs to `target`.
fn flood(target: SocketAddr, known_ufrags: Vec<String>, capture: Arc<Mutex<Captured>>) -> Sent {
    let sockets: Vec<UdpSocket> = (1..=FLOOD_SOURCES)
        .map(|i| UdpSocket::bind((Ipv4Addr::new(127, 1, 0, i), 0)).unwrap())
        .collect();
    let (srtp, stun) = {
        let c = capture.lock().unwrap();
        (c.srtp.clone(), c.stun.clone())
    };
    assert!(!srtp.is_empty(), "captured SRTP to replay");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut sent = Sent::default();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < FLOOD_TIME {
        // Pace: catch up to FLOOD_PPS, then sleep a millisecond.
        let due = (start.elapsed().as_secs_f64() * FLOOD_PPS as f64) as u64;
        while n < due {
            // STUN comes from one hot IP every other time (which the rate
            // limit stops) and from all the others in turn (more than the
            // source table holds).
            let socket = if n % 5 == 2 || n % 5 == 3 {
                &sockets[((n / 5) % 2 * (1 + n / 10) % sockets.len() as u64) as usize]
            } else {
                &sockets[(n % sockets.len() as u64) as usize]
            };
            let datagram = match n % 5 {
                0 => {
                    sent.random += 1;
                    (0..rng.usize(1..1200)).map(|_| rng.u8(..)).collect()
                }
                1 => {
                    sent.truncated_rtp += 1;
                    let mut p = vec![0x80, 0x60];
                    p.extend((0..rng.usize(0..10)).map(|_| rng.u8(..)));
                    p
                }
                2 => {
                    sent.stun_unknown_ufrag += 1;
                    stun_request(&mut rng, "nobody:flood")
                }
                3 => {
                    sent.stun_bad_integrity += 1;
                    let ufrag = &known_ufrags[rng.usize(..known_ufrags.len())];
                    stun_request(&mut rng, &format!("{ufrag}:flood"))
                }
                _ => {
                    sent.replayed += 1;
                    if rng.u8(..4) == 0 && !stun.is_empty() {
                        stun[rng.usize(..stun.len())].clone()
                    } else {
                        srtp[rng.usize(..srtp.len())].clone()
                    }
                }
            };
            let _ = socket.send_to(&datagram, target);
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_flood_at_the_shard_port_costs_the_room_no_packet() {
    let ingress = IngressConfig {
        stun_rate_per_source: 20,
        stun_burst_per_source: 20,
        source_table_capacity: SOURCE_TABLE,
        ..IngressConfig::default()
    };
    let engine = Engine::builder()
        .shards(1)
        .bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .ingress(ingress)
        .build()
        .unwrap();
    let room = engine.create_room(RoomConfig::named("flooded")).unwrap();
    let epoch = Instant::now();
    let mut peers: Vec<Peer> = (0..4).map(|i| join(&engine, room, i, epoch)).collect();
    let capture = Arc::new(Mutex::new(Captured::default()));
    // Until everyone receives every slot (bounded: real UDP on a loaded
    // machine takes what it takes), and at least 3 s so the capture has
    // SRTP and STUN to replay.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        drive(&mut peers, Duration::from_millis(100), &capture);
        let flowing = peers.iter().all(|p| {
            p.client.connected_at().is_some()
                && p.client.stats().slots.iter().all(|s| s.packets > 0)
        });
        if flowing && t0.elapsed() >= Duration::from_secs(3) {
            break;
        }
    }
    for (i, p) in peers.iter().enumerate() {
        assert!(p.client.connected_at().is_some(), "peer {i} connected");
        assert!(p.client.stats().slots.iter().all(|s| s.packets > 0));
    }
    let before = engine.refresh_stats().unwrap().shards[0].clone();
    assert_eq!(before.core.drops.total(), 0, "{:?}", before.core.drops);
    let packets_before: Vec<Vec<u64>> = peers
        .iter()
        .map(|p| p.client.stats().slots.iter().map(|s| s.packets).collect())
        .collect();
    let rss_before = resident_bytes();

    let target = engine.shard_addrs()[0];
    let ufrags: Vec<String> = peers.iter().map(|p| p.engine_ufrag.clone()).collect();
    let flooder = {
        let capture = capture.clone();
        std::thread::spawn(move || flood(target, ufrags, capture))
    };
    drive(&mut peers, FLOOD_TIME, &capture);
    let sent = flooder.join().unwrap();
    // Let the last of it drain, then keep the room running a moment.
    drive(&mut peers, Duration::from_secs(1), &capture);
    let after = engine.refresh_stats().unwrap().shards[0].clone();
    let rss_after = resident_bytes();

    // The room lost nothing and kept receiving throughout.
    for (i, p) in peers.iter().enumerate() {
        for (s, b) in p.client.stats().slots.iter().zip(&packets_before[i]) {
            assert_eq!(s.lost(), 0, "peer {i} slot {} lost packets", s.mid);
            assert!(s.packets > *b, "peer {i} slot {} stalled", s.mid);
        }
        assert!(p.client.is_alive(), "peer {i} still connected");
    }
    assert_eq!(after.panics, 0);
    assert_eq!(after.participants, 4);

    // The flood is accounted for by reason.
    let d = after.core.drops;
    let b = before.core.drops;
    let delta = |f: fn(&DropStats) -> u64| f(&d) - f(&b);
    eprintln!(
        "sent {sent:?}, drops {d:?}, ingress {:?}",
        after.core.ingress
    );
    // Random bytes, truncated RTP and replayed SRTP from unvalidated
    // addresses are refused before any parsing.
    assert!(delta(|d| d.unknown_source) > 0);
    // Each flood IP gets its burst of STUN, then is limited.
    assert!(delta(|d| d.rate_limited) > 0);
    assert!(delta(|d| d.unknown_ufrag) > 0);
    // Bad message integrity with a known ufrag reaches the ICE agent,
    // which refuses it.
    assert!(delta(|d| d.rejected) > 0);
    assert_eq!(delta(|d| d.throttled), 0, "the room's own traffic passes");
    assert!(
        d.total() - b.total() <= sent.total(),
        "only the flood was dropped: {} drops for {} sent",
        d.total() - b.total(),
        sent.total()
    );

    // Nothing grew: the source table stays within its fixed size although
    // the flood came from more IPs than it holds, and no flood address was
    // learned as a participant's.
    let ing = after.core.ingress;
    assert!(ing.source_table_capacity >= SOURCE_TABLE);
    assert!(ing.tracked_sources <= ing.source_table_capacity);
    assert!(ing.source_evictions > 0, "{ing:?}");
    // Replays of a client's captured binding request from flood addresses
    // are answered by its ICE agent until the participant reaches its
    // address limit; after that they are dropped unseen.
    assert!(ing.validated_addresses <= 4 * IngressConfig::default().max_addresses_per_participant);
    assert!(delta(|d| d.address_limit) > 0);
    assert!(
        rss_after < rss_before + 32 * 1024 * 1024,
        "resident memory grew from {rss_before} to {rss_after} bytes"
    );
    engine.shutdown();
}
