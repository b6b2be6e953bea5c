//! ICE-TCP faults on loopback, as `udp_faults.rs` tests UDP's: half-open
//! and slowly dribbling connections are closed at the handshake timeout, a
//! validated connection that falls silent at the idle timeout; the
//! per-source limits and a full shard refuse; a subscriber that stops
//! reading its connection costs a bounded queue (whole frames dropped,
//! counted) and its framing survives. The flood is `tcp_flood.rs`.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piazza::sim::{ClientConfig, SimClient, TcpLink};
use piazza::{Engine, JoinOptions, RoomConfig, RoomId, TcpConfig, TcpStats};

enum Transport {
    Udp(UdpSocket),
    Tcp(TcpLink),
}

struct Peer {
    client: SimClient,
    transport: Transport,
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
    client
        .join_engine(engine, room, JoinOptions::new(format!("peer-{n}")))
        .unwrap();
    Peer { client, transport }
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

/// Whether the server closed `s` (end of stream or a reset) within `d`.
fn closed_by_server(s: &mut TcpStream, d: Duration) -> bool {
    let end = Instant::now() + d;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Whether a connection from `from` is closed by the server at once (the
/// reset may even beat `connect`'s return on loopback).
fn refused(from: Ipv4Addr, target: SocketAddr) -> bool {
    match connect_from(from, target) {
        Ok(mut s) => closed_by_server(&mut s, Duration::from_secs(1)),
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    }
}

fn tcp_stats(engine: &Engine) -> TcpStats {
    engine.refresh_stats().unwrap().shards[0].core.tcp
}

#[test]
fn half_open_slow_and_idle_connections_are_closed_and_per_source_limits_hold() {
    let limits = TcpConfig {
        max_connections: 16,
        max_pending: 16,
        max_connections_per_source: 12,
        max_pending_per_source: 6,
        handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..TcpConfig::default()
    };
    let engine = Engine::builder()
        .shards(1)
        .bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .ice_tcp(Some(limits))
        .build()
        .unwrap();
    let target = engine.tcp_addrs()[0];
    let room = engine.create_room(RoomConfig::named("slow")).unwrap();
    let epoch = Instant::now();

    // Three silent connections and three that dribble a binding request
    // (a byte every 100 ms, far slower than its 1 s to validate).
    let src = Ipv4Addr::new(127, 3, 0, 1);
    let mut silent: Vec<TcpStream> = (0..3).map(|_| connect_from(src, target).unwrap()).collect();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut slow: Vec<(TcpStream, Vec<u8>)> = (0..3)
        .map(|_| {
            let s = connect_from(src, target).unwrap();
            (s, frame(&stun_request(&mut rng, "pz1abcdef:slow")))
        })
        .collect();
    // A seventh unvalidated connection from the same source is refused.
    assert!(refused(src, target));
    // Another source is not affected.
    let mut other = connect_from(Ipv4Addr::new(127, 3, 0, 2), target).unwrap();
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_millis(700) {
        for (s, rest) in &mut slow {
            if !rest.is_empty() {
                if let Err(e) = s.write_all(&rest[..1]) {
                    panic!("{e} after {:?}: {:?}", opened.elapsed(), tcp_stats(&engine));
                }
                rest.remove(0);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = tcp_stats(&engine);
    assert_eq!((t.open, t.pending), (7, 7), "{t:?}");
    assert_eq!(t.refused_source_limit, 1);
    // All seven go at the handshake timeout (within its sweep).
    for s in silent.iter_mut().chain(slow.iter_mut().map(|(s, _)| s)) {
        assert!(closed_by_server(s, Duration::from_secs(2)));
    }
    assert!(closed_by_server(&mut other, Duration::from_secs(1)));
    let closed_after = opened.elapsed();
    let t = tcp_stats(&engine);
    assert_eq!((t.open, t.pending), (0, 0), "{t:?}");
    assert_eq!(t.closed_handshake_timeout, 7, "{t:?}");
    assert!(
        closed_after < Duration::from_millis(1900),
        "{closed_after:?}"
    );

    // A validated client whose connection falls silent (the process hangs;
    // the socket stays open) is closed after the idle timeout, before the
    // room's inactivity timeout removes the participant.
    let (mut client, mut link) = SimClient::on_tcp(ClientConfig::new(0), epoch);
    client
        .join_engine(&engine, room, JoinOptions::new("quiet"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.connected_at().is_none() {
        assert!(Instant::now() < deadline, "the TCP client connected");
        client.step_tcp(&mut link, |_| {});
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = tcp_stats(&engine);
    assert_eq!((t.open, t.validated), (1, 1), "{t:?}");
    let silent_since = Instant::now();
    let deadline = silent_since + Duration::from_secs(5);
    while tcp_stats(&engine).closed_idle == 0 {
        assert!(Instant::now() < deadline, "not closed for idleness");
        std::thread::sleep(Duration::from_millis(50));
    }
    let idle_for = silent_since.elapsed();
    assert!(
        idle_for >= Duration::from_millis(1900) && idle_for < Duration::from_millis(3500),
        "{idle_for:?}"
    );
    let s = engine.refresh_stats().unwrap().shards[0].clone();
    assert_eq!((s.core.tcp.open, s.footprint.demux_tcp), (0, 0));
    // The participant itself is still there until its inactivity timeout.
    assert_eq!(s.participants, 1);
}

#[test]
fn a_full_shard_refuses_once_nothing_is_pending() {
    let limits = TcpConfig {
        max_connections: 2,
        max_pending: 2,
        ..TcpConfig::default()
    };
    let engine = Engine::builder()
        .shards(1)
        .bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .ice_tcp(Some(limits))
        .build()
        .unwrap();
    let room = engine.create_room(RoomConfig::named("full")).unwrap();
    let epoch = Instant::now();
    let mut peers: Vec<Peer> = (0..2)
        .map(|i| join(&engine, room, i, true, epoch))
        .collect();
    let capture: Captured = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !peers.iter().all(|p| p.client.connected_at().is_some()) {
        assert!(Instant::now() < deadline, "both connected");
        drive(&mut peers, Duration::from_millis(20), &capture);
    }
    // Both connections validated: the shard has no room, and nothing
    // pending to make room with.
    assert!(refused(Ipv4Addr::new(127, 4, 0, 1), engine.tcp_addrs()[0]));
    let t = tcp_stats(&engine);
    assert_eq!((t.open, t.refused_shard_limit), (2, 1), "{t:?}");
    drive(&mut peers, Duration::from_millis(300), &capture);
    for p in &peers {
        let Transport::Tcp(l) = &p.transport else {
            unreachable!()
        };
        assert!(!l.closed);
    }
}

#[test]
fn a_subscriber_that_stops_reading_costs_a_bounded_queue_and_its_framing_survives() {
    let limits = TcpConfig {
        max_frame_len: 1500,
        send_buffer_bytes: 16 * 1024,
        ..TcpConfig::default()
    };
    let engine = Engine::builder()
        .shards(1)
        .bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .ice_tcp(Some(limits))
        .build()
        .unwrap();
    let room = engine
        .create_room(RoomConfig::named("slow reader"))
        .unwrap();
    let epoch = Instant::now();
    // A UDP publisher and listener, and a TCP subscriber.
    let mut peers: Vec<Peer> = vec![
        join(&engine, room, 0, false, epoch),
        join(&engine, room, 1, true, epoch),
        join(&engine, room, 2, false, epoch),
    ];
    // A 4 KiB receive window: the kernel buffers on both sides fill in a
    // second once it stops reading (loopback would otherwise absorb
    // megabytes on the client's side).
    peers[1].transport = Transport::Tcp(TcpLink::with_receive_buffer(4096));
    let capture: Captured = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !peers.iter().all(|p| video_audio(p).0 > 0) {
        assert!(Instant::now() < deadline, "everyone receives video");
        drive(&mut peers, Duration::from_millis(50), &capture);
    }
    // The TCP subscriber hangs: nothing is read from its connection (nor
    // sent) for 4 s, while the publisher keeps sending.
    let mut hung = peers.remove(1);
    let before: Vec<(u64, u64)> = peers.iter().map(video_audio).collect();
    drive(&mut peers, Duration::from_secs(4), &capture);
    let s = engine.refresh_stats().unwrap().shards[0].clone();
    eprintln!("tcp {:?}\nsocket {:?}", s.core.tcp, s.socket.tcp);
    assert!(
        s.socket.tcp.send_dropped > 0,
        "the queue filled and dropped whole frames: {:?}",
        s.socket.tcp
    );
    assert_eq!(s.core.tcp.open, 1, "the connection stays open");
    for (i, p) in peers.iter().enumerate() {
        let (v, a) = video_audio(p);
        assert!(
            v > before[i].0 && a > before[i].1,
            "UDP peer {i} kept receiving"
        );
        for slot in &p.client.stats().slots {
            assert_eq!(slot.lost(), 0, "UDP peer {i} lost nothing");
        }
    }
    // It wakes up: what it reads is still whole frames (a dropped frame
    // never leaves half of itself in the stream), and media flows again.
    let (v0, _) = video_audio(&hung);
    let mut all = vec![hung];
    all.append(&mut peers);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        drive(&mut all, Duration::from_millis(100), &capture);
        let (v, _) = video_audio(&all[0]);
        if v > v0 + 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the woken subscriber receives again ({v0} -> {v})"
        );
    }
    hung = all.remove(0);
    assert!(hung.client.is_alive());
    let Transport::Tcp(link) = &hung.transport else {
        unreachable!()
    };
    assert!(!link.closed);
}
