//! ICE-TCP's ingress protection on loopback, as `flood.rs` tests UDP's: a
//! room of UDP and TCP clients keeps every packet while other connections
//! flood the shard's TCP port (silent, garbage, oversized frames, STUN with
//! unknown ufrags and bad message integrity, replayed SRTP, dribbling
//! bytes) from many addresses; every refusal and close is counted by its
//! reason, and open and pending connections stay within their limits. One
//! test in this binary, so its memory measurement is its own (the faults
//! are `tcp_faults.rs`).

use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piazza::sim::{ClientConfig, SimClient, TcpLink};
use piazza::{Engine, JoinOptions, RoomConfig, RoomId, TcpConfig, TcpStats};

/// Connections the flood opens per second, and how long it lasts.
const FLOOD_CPS: u64 = 400;
const FLOOD_TIME: Duration = Duration::from_secs(2);
/// Distinct flood source IPs (127.2.0.x).
const FLOOD_SOURCES: u8 = 40;

enum Transport {
    Udp(UdpSocket),
    Tcp(TcpLink),
}

struct Peer {
    client: SimClient,
    transport: Transport,
    engine_ufrag: String,
}

fn join(engine: &Engine, room: RoomId, n: u32, tcp: bool, epoch: Instant) -> Peer {
    let mut cfg = ClientConfig::new(n);
    cfg.video_slots = 3;
    cfg.audio_slots = 3;
    cfg.speaking = n == 0;
    let (mut client, transport) = if tcp {
        let (c, l) = SimClient::on_tcp(cfg, epoch);
        (c, Transport::Tcp(l))
    } else {
        let (c, s) = SimClient::on_loopback(cfg, epoch).unwrap();
        (c, Transport::Udp(s))
    };
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
        transport,
        engine_ufrag,
    }
}

/// SRTP frames a TCP client sent, kept for replay.
type Captured = Arc<Mutex<Vec<Vec<u8>>>>;

fn drive(peers: &mut [Peer], d: Duration, capture: &Captured) {
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 2000];
    while Instant::now() < end {
        for p in peers.iter_mut() {
            match &mut p.transport {
                Transport::Udp(s) => p.client.step_udp(s, &mut buf, |_| {}),
                Transport::Tcp(l) => p.client.step_tcp(l, |d| {
                    let mut c = capture.lock().unwrap();
                    if matches!(d.first(), Some(128..=191)) && c.len() < 64 {
                        c.push(d.to_vec());
                    }
                }),
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Video and audio packets received over all slots (which slot shows
/// what at which layer is the bandwidth allocator's business).
fn video_audio(p: &Peer) -> (u64, u64) {
    let slots = &p.client.stats().slots;
    let sum = |video: bool| {
        slots
            .iter()
            .filter(|s| s.video == video)
            .map(|s| s.packets)
            .sum()
    };
    (sum(true), sum(false))
}

/// A STUN binding request with `username`, a PRIORITY and a
/// MESSAGE-INTEGRITY that is 20 random bytes (it never verifies).
fn stun_request(rng: &mut fastrand::Rng, username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&[0x00, 0x06]);
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while !attrs.len().is_multiple_of(4) {
        attrs.push(0);
    }
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

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A connection to `target` from `from` (any port).
fn connect_from(from: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    s.connect_timeout(&target.into(), Duration::from_secs(1))?;
    Ok(s.into())
}

/// What the flood sent, by kind.
#[derive(Debug, Default)]
struct Sent {
    connections: u64,
    silent: u64,
    garbage: u64,
    oversized: u64,
    stun_unknown_ufrag: u64,
    stun_bad_integrity: u64,
    replayed_srtp: u64,
    dribbling: u64,
    /// Refused so fast that the reset beat `connect`'s return.
    reset_at_connect: u64,
    connect_failed: u64,
}

/// Open connections at `FLOOD_CPS` for `FLOOD_TIME` from `FLOOD_SOURCES`
/// loopback IPs to `target`, each doing one kind of mischief. Silent and
/// dribbling ones are held open (the server must close them).
fn flood(target: SocketAddr, ufrags: Vec<String>, capture: Captured) -> Sent {
    let srtp = capture.lock().unwrap().clone();
    assert!(!srtp.is_empty(), "captured SRTP to replay");
    let mut rng = fastrand::Rng::with_seed(11);
    let mut sent = Sent::default();
    let mut held: Vec<TcpStream> = Vec::new();
    let mut dribblers: Vec<(TcpStream, Vec<u8>)> = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < FLOOD_TIME {
        let due = (start.elapsed().as_secs_f64() * FLOOD_CPS as f64) as u64;
        while n < due {
            // Silent connections come from one hot address (which its
            // per-source limit stops), the rest from all the others.
            let from = if n.is_multiple_of(8) {
                Ipv4Addr::new(127, 2, 1, 1)
            } else {
                Ipv4Addr::new(127, 2, 0, 1 + (n % FLOOD_SOURCES as u64) as u8)
            };
            n += 1;
            let mut s = match connect_from(from, target) {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    sent.reset_at_connect += 1;
                    continue;
                }
                Err(_) => {
                    sent.connect_failed += 1;
                    continue;
                }
            };
            sent.connections += 1;
            let bytes: Vec<u8> = match (n - 1) % 8 {
                0 => {
                    sent.silent += 1;
                    held.push(s);
                    continue;
                }
                1 => {
                    sent.garbage += 1;
                    // A plausible length, then noise.
                    let mut g = frame(
                        &(0..rng.usize(20..200))
                            .map(|_| rng.u8(..))
                            .collect::<Vec<_>>(),
                    );
                    g[2] = 0xff;
                    g
                }
                2 => {
                    sent.oversized += 1;
                    vec![0xff, 0xff, 1, 2, 3]
                }
                3 => {
                    sent.stun_unknown_ufrag += 1;
                    frame(&stun_request(&mut rng, "nobody:flood"))
                }
                4 => {
                    sent.stun_bad_integrity += 1;
                    let u = &ufrags[rng.usize(..ufrags.len())];
                    frame(&stun_request(&mut rng, &format!("{u}:flood")))
                }
                5 | 6 => {
                    sent.replayed_srtp += 1;
                    frame(&srtp[rng.usize(..srtp.len())])
                }
                _ => {
                    sent.dribbling += 1;
                    let u = &ufrags[rng.usize(..ufrags.len())];
                    let f = frame(&stun_request(&mut rng, &format!("{u}:slow")));
                    let _ = s.set_nonblocking(true);
                    dribblers.push((s, f));
                    continue;
                }
            };
            let _ = s.write_all(&bytes);
            held.push(s);
        }
        // One byte per dribbler per round.
        for (s, rest) in &mut dribblers {
            if !rest.is_empty() && s.write(&rest[..1]).is_ok() {
                rest.remove(0);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Keep what is still open until the server has had time to close it.
    std::thread::sleep(Duration::from_millis(1500));
    drop(held);
    drop(dribblers);
    sent
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn tcp_stats(engine: &Engine) -> TcpStats {
    engine.refresh_stats().unwrap().shards[0].core.tcp
}

#[test]
fn a_flood_of_bad_connections_costs_the_room_no_packet() {
    let limits = TcpConfig {
        max_connections: 96,
        max_pending: 24,
        max_connections_per_source: 8,
        max_pending_per_source: 4,
        handshake_timeout: Duration::from_secs(1),
        ..TcpConfig::default()
    };
    let engine = Engine::builder()
        .shards(1)
        .bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .ice_tcp(Some(limits.clone()))
        .build()
        .unwrap();
    let room = engine.create_room(RoomConfig::named("flooded")).unwrap();
    let epoch = Instant::now();
    // Two over UDP, two over TCP.
    let mut peers: Vec<Peer> = (0..4)
        .map(|i| join(&engine, room, i, i >= 2, epoch))
        .collect();
    let capture: Captured = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !peers.iter().all(|p| {
        p.client.connected_at().is_some() && p.client.stats().slots.iter().all(|s| s.packets > 0)
    }) {
        assert!(
            Instant::now() < deadline,
            "every peer connected and received"
        );
        drive(&mut peers, Duration::from_millis(100), &capture);
    }
    drive(&mut peers, Duration::from_millis(500), &capture);
    let before = engine.refresh_stats().unwrap().shards[0].clone();
    assert_eq!(before.core.drops.total(), 0, "{:?}", before.core.drops);
    assert_eq!((before.core.tcp.open, before.core.tcp.validated), (2, 2));
    let packets_before: Vec<(u64, u64)> = peers.iter().map(video_audio).collect();
    let rss_before = resident_bytes();

    let target = engine.tcp_addrs()[0];
    let ufrags: Vec<String> = peers.iter().map(|p| p.engine_ufrag.clone()).collect();
    let flooder = {
        let capture = capture.clone();
        std::thread::spawn(move || flood(target, ufrags, capture))
    };
    let mut peak_open = 0;
    let mut peak_pending = 0;
    let end = Instant::now() + FLOOD_TIME + Duration::from_millis(1500);
    while Instant::now() < end {
        drive(&mut peers, Duration::from_millis(100), &capture);
        let t = tcp_stats(&engine);
        peak_open = peak_open.max(t.open);
        peak_pending = peak_pending.max(t.pending);
    }
    let sent = flooder.join().unwrap();
    // The handshake timeout passes for whatever the flood left behind.
    drive(&mut peers, Duration::from_millis(1500), &capture);
    let after = engine.refresh_stats().unwrap().shards[0].clone();
    let rss_after = resident_bytes();
    let t = after.core.tcp;
    eprintln!(
        "sent {sent:?}\ntcp {t:?}\nsocket {:?}\ndrops {:?}\npeak open {peak_open}, pending {peak_pending}",
        after.socket.tcp, after.core.drops
    );

    // The room lost nothing and kept receiving throughout; the TCP peers'
    // connections were never touched.
    for (i, p) in peers.iter().enumerate() {
        for s in &p.client.stats().slots {
            assert_eq!(s.lost(), 0, "peer {i} slot {} lost packets", s.mid);
        }
        let (v, a) = video_audio(p);
        assert!(v > packets_before[i].0, "peer {i}'s video stalled");
        assert!(a > packets_before[i].1, "peer {i}'s audio stalled");
        assert!(p.client.is_alive(), "peer {i} still connected");
        if let Transport::Tcp(l) = &p.transport {
            assert!(!l.closed, "peer {i}'s connection was closed");
        }
    }
    assert_eq!(after.panics, 0);
    assert_eq!(after.participants, 4);

    // Bounded throughout, and back to the room's own two at the end.
    assert!(peak_open <= limits.max_connections, "{peak_open}");
    assert!(peak_pending <= limits.max_pending, "{peak_pending}");
    assert_eq!((t.open, t.pending), (2, 0), "{t:?}");
    assert_eq!(t.validated, 2, "no flood connection was validated");
    assert_eq!(after.footprint.demux_tcp, 2);

    // Every kind is accounted for by its reason.
    assert!(t.refused_source_limit > 0, "{t:?}");
    assert!(t.evicted_pending > 0, "{t:?}");
    assert!(t.closed_not_stun > 0, "garbage and replayed SRTP: {t:?}");
    assert!(t.closed_bad_frame > 0, "oversized frames: {t:?}");
    assert!(
        t.closed_rejected > 0,
        "unknown ufrags, bad integrity: {t:?}"
    );
    assert!(
        t.closed_handshake_timeout + t.evicted_pending > 0,
        "silent and dribbling connections: {t:?}"
    );
    let closes = t.refused_source_limit
        + t.refused_shard_limit
        + t.evicted_pending
        + t.closed_handshake_timeout
        + t.closed_not_stun
        + t.closed_bad_frame
        + t.closed_rejected
        + t.closed_by_peer;
    assert_eq!(sent.connect_failed, 0);
    let made = sent.connections + sent.reset_at_connect;
    assert_eq!(
        t.accepted + t.refused_source_limit + t.refused_shard_limit,
        made + 2,
        "every connection the flood made was seen ({t:?})"
    );
    assert_eq!(
        closes, made,
        "and every one of them was closed for a counted reason ({t:?})"
    );
    let d = after.core.drops;
    assert_eq!(d.throttled, 0, "the room's own traffic passes");
    assert!(
        d.unknown_source > 0 && d.unknown_ufrag > 0 && d.rejected > 0,
        "{d:?}"
    );
    assert!(
        rss_after < rss_before + 32 * 1024 * 1024,
        "resident memory grew from {rss_before} to {rss_after} bytes"
    );
    engine.shutdown();
}
