//! ICE-TCP on loopback: str0m clients that reach the engine only over TCP
//! (an active TCP candidate, RFC 4571 frames on a real connection) join
//! rooms with UDP clients on an engine with two shards, and everyone gets
//! everyone's media; a leave closes the connection; an engine without TCP
//! offers no TCP candidate.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use piazza::sim::{ClientConfig, SimClient, TcpLink};
use piazza::{Engine, JoinOptions, ParticipantId, RoomConfig, RoomId, TcpConfig};

/// Upper bound of every wait (never reached when it works).
const WAIT: Duration = Duration::from_secs(20);

enum Transport {
    Udp(UdpSocket),
    Tcp(TcpLink),
}

struct Peer {
    client: SimClient,
    transport: Transport,
    pid: ParticipantId,
    answer: String,
}

fn config(n: u32) -> ClientConfig {
    let mut cfg = ClientConfig::new(n);
    cfg.video_slots = 3;
    cfg.audio_slots = 3;
    cfg.speaking = n.is_multiple_of(2);
    cfg
}

fn join(engine: &Engine, room: RoomId, n: u32, tcp: bool, epoch: Instant) -> Peer {
    let (mut client, transport) = if tcp {
        let (c, link) = SimClient::on_tcp(config(n), epoch);
        (c, Transport::Tcp(link))
    } else {
        let (c, s) = SimClient::on_loopback(config(n), epoch).unwrap();
        (c, Transport::Udp(s))
    };
    let joined = client
        .join_engine(engine, room, JoinOptions::new(format!("peer-{n}")))
        .unwrap();
    Peer {
        client,
        transport,
        pid: joined.participant,
        answer: joined.answer,
    }
}

fn drive(peers: &mut [Peer], d: Duration) {
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 2000];
    while Instant::now() < end {
        for p in peers.iter_mut() {
            match &mut p.transport {
                Transport::Udp(s) => p.client.step_udp(s, &mut buf, |_| {}),
                Transport::Tcp(l) => p.client.step_tcp(l, |_| {}),
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn drive_until(peers: &mut [Peer], mut done: impl FnMut(&[Peer]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(peers) {
        assert!(Instant::now() < deadline, "not within {WAIT:?}");
        drive(peers, Duration::from_millis(20));
    }
}

/// Video and audio packets per receive slot.
fn received(p: &Peer) -> Vec<u64> {
    p.client.stats().slots.iter().map(|s| s.packets).collect()
}

/// Video and audio packets received over all slots.
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

fn tcp_engine(shards: usize) -> Engine {
    Engine::builder()
        .shards(shards)
        .bind("127.0.0.1".parse().unwrap())
        .ice_tcp(Some(TcpConfig::default()))
        .build()
        .unwrap()
}

#[test]
fn tcp_clients_and_udp_clients_share_a_room_and_all_media() {
    let engine = tcp_engine(2);
    let tcp_addrs = engine.tcp_addrs();
    assert_eq!(tcp_addrs.len(), 2);
    for (u, t) in engine.shard_addrs().iter().zip(&tcp_addrs) {
        assert_eq!(u.port(), t.port(), "TCP on the UDP socket's port number");
    }
    let _other = engine.create_room(RoomConfig::named("other")).unwrap();
    let room = engine.create_room(RoomConfig::named("mixed")).unwrap();
    let shard = engine.room_shard(room).unwrap();
    assert_eq!(shard, 1, "the second room is on the second shard");
    let epoch = Instant::now();
    // Two over UDP, two over TCP.
    let mut peers: Vec<Peer> = (0..4)
        .map(|n| join(&engine, room, n, n >= 2, epoch))
        .collect();

    // The answer offers both candidates of the room's shard, UDP first and
    // preferred, in every m-section.
    let answer = &peers[0].answer;
    let port = tcp_addrs[shard].port();
    let udp_line = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.contains(" udp "))
        .expect("a UDP candidate");
    let tcp_line = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.contains(" tcp "))
        .expect("a TCP candidate");
    let prio = |l: &str| l.split(' ').nth(3).unwrap().parse::<u32>().unwrap();
    assert!(
        tcp_line.contains(&format!(
            " tcp {} 127.0.0.1 {port} typ host tcptype passive",
            prio(tcp_line)
        )),
        "{tcp_line}"
    );
    assert!(prio(udp_line) > prio(tcp_line), "{udp_line} / {tcp_line}");
    let sections = answer.split("\r\nm=").count() - 1;
    assert_eq!(
        answer.matches(tcp_line).count(),
        sections,
        "the TCP candidate in every m-section"
    );

    drive_until(&mut peers, |peers| {
        peers
            .iter()
            .all(|p| p.client.connected_at().is_some() && received(p).iter().all(|&n| n > 0))
    });
    // Video and audio keep flowing to everyone (which slot shows what,
    // at which layer, is the allocator's business: the downlink estimates
    // are still rising).
    let before: Vec<(u64, u64)> = peers.iter().map(video_audio).collect();
    drive(&mut peers, Duration::from_secs(1));
    for (i, p) in peers.iter().enumerate() {
        let (v, a) = video_audio(p);
        assert!(v > before[i].0, "peer {i} video stopped: {before:?}");
        assert!(a > before[i].1, "peer {i} audio stopped: {before:?}");
    }
    for p in &peers[2..] {
        let Transport::Tcp(link) = &p.transport else {
            unreachable!()
        };
        assert_eq!(link.remote_addr(), Some(tcp_addrs[shard]));
        assert!(link.frames_in > 100 && link.frames_out > 100, "{link:?}");
    }

    let stats = engine.refresh_stats().unwrap();
    let s = &stats.shards[shard];
    assert_eq!(s.core.tcp.open, 2, "{:?}", s.core.tcp);
    assert_eq!(s.core.tcp.pending, 0);
    assert_eq!(s.core.tcp.validated, 2);
    assert_eq!(s.footprint.demux_tcp, 2);
    assert_eq!(s.footprint.demux_addrs, 2, "the two UDP peers");
    assert!(s.socket.tcp.frames_sent > 100, "{:?}", s.socket.tcp);
    assert_eq!(s.socket.tcp.send_dropped, 0);
    assert_eq!(s.core.drops.total(), 0, "{:?}", s.core.drops);
    assert_eq!(stats.shards[1 - shard].core.tcp.accepted, 0);

    // A TCP peer leaves: the engine closes its connection, the others
    // carry on.
    engine.leave(room, peers[3].pid).unwrap();
    drive_until(
        &mut peers,
        |peers| matches!(&peers[3].transport, Transport::Tcp(l) if l.closed),
    );
    let s = engine.refresh_stats().unwrap().shards[shard].clone();
    assert_eq!(s.core.tcp.open, 1);
    assert_eq!(s.core.tcp.closed_participant_gone, 1);
    assert_eq!(s.footprint.demux_tcp, 1);
    let rest = &mut peers[..3];
    let before: Vec<u64> = rest.iter().map(|p| received(p).iter().sum()).collect();
    drive(rest, Duration::from_secs(1));
    for (i, p) in rest.iter().enumerate() {
        assert!(
            received(p).iter().sum::<u64>() > before[i],
            "peer {i} stopped"
        );
    }

    // A TCP peer that vanishes (its connection closes) is counted, and
    // removed like a vanished UDP peer after the inactivity timeout.
    if let Transport::Tcp(l) = &mut peers[2].transport {
        l.close();
    }
    drive_until(&mut peers[..2], |_| {
        engine.refresh_stats().unwrap().shards[shard]
            .core
            .tcp
            .closed_by_peer
            == 1
    });
    let s = engine.refresh_stats().unwrap().shards[shard].clone();
    assert_eq!((s.core.tcp.open, s.footprint.demux_tcp), (0, 0));
}

#[test]
fn without_ice_tcp_there_is_no_listener_and_no_tcp_candidate() {
    let engine = Engine::builder()
        .shards(1)
        .bind("127.0.0.1".parse().unwrap())
        .build()
        .unwrap();
    assert!(engine.tcp_addrs().is_empty());
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let peer = join(&engine, room, 0, false, Instant::now());
    assert!(!peer.answer.contains(" tcp "), "{}", peer.answer);
    assert!(engine.stats().shards[0].tcp_addr.is_none());
    // Nobody listens on the UDP socket's port over TCP.
    let port = engine.shard_addrs()[0].port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_tcp_only_client_cannot_join_an_engine_without_tcp() {
    let engine = Engine::builder()
        .shards(1)
        .bind("127.0.0.1".parse().unwrap())
        .build()
        .unwrap();
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let mut peers = vec![join(&engine, room, 0, true, Instant::now())];
    drive(&mut peers, Duration::from_secs(1));
    assert!(peers[0].client.connected_at().is_none());
}
