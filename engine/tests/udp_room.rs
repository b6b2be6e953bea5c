//! Real UDP on loopback: str0m clients join rooms of an `Engine` with two
//! shards, exchange media, leave and get kicked.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use piazza::sim::{ClientConfig, SimClient};
use piazza::{Engine, EngineEvent, JoinOptions, LeaveReason, ParticipantId, RoomConfig, RoomId};

struct Peer {
    client: SimClient,
    socket: UdpSocket,
    pid: ParticipantId,
    room: RoomId,
    active: bool,
}

fn join(engine: &Engine, room: RoomId, n: u32, slots: usize, epoch: Instant) -> Peer {
    let mut cfg = ClientConfig::new(n);
    cfg.video_slots = slots;
    cfg.audio_slots = slots.min(3);
    cfg.speaking = n.is_multiple_of(3);
    let (mut client, socket) = SimClient::on_loopback(cfg, epoch).unwrap();
    let joined = client
        .join_engine(engine, room, JoinOptions::new(format!("peer-{n}")))
        .unwrap();
    Peer {
        client,
        socket,
        pid: joined.participant,
        room,
        active: true,
    }
}

/// Drive every active peer with the real clock for `d`.
fn drive(peers: &mut [Peer], d: Duration) {
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 2000];
    while Instant::now() < end {
        for p in peers.iter_mut().filter(|p| p.active) {
            p.client.step_udp(&p.socket, &mut buf, |_| {});
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Drive every active peer until `done` holds (checked every 100 ms) or
/// `max` passed; returns whether it held. Real UDP on a loaded machine
/// (tests run in parallel, CI has two cores): the wait is bounded by what
/// must happen, not by a guess of how long it takes.
fn drive_until(peers: &mut [Peer], max: Duration, done: impl Fn(&[Peer]) -> bool) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        drive(peers, Duration::from_millis(100));
        if done(peers) {
            return true;
        }
    }
    done(peers)
}

fn packets(p: &Peer) -> Vec<u64> {
    p.client.stats().slots.iter().map(|s| s.packets).collect()
}

#[test]
fn six_clients_two_shards_leave_kick_and_an_unaffected_second_room() {
    let engine = Engine::builder()
        .shards(2)
        .bind("127.0.0.1".parse().unwrap())
        .build()
        .unwrap();
    let room_a = engine.create_room(RoomConfig::named("a")).unwrap();
    let room_b = engine.create_room(RoomConfig::named("b")).unwrap();
    let epoch = Instant::now();
    let mut peers: Vec<Peer> = (0..6).map(|i| join(&engine, room_a, i, 5, epoch)).collect();
    peers.extend((6..9).map(|i| join(&engine, room_b, i, 2, epoch)));
    let stats = engine.stats();
    assert_eq!(stats.shards.len(), 2);
    assert!(
        stats.shards.iter().all(|s| s.rooms == 1),
        "the second room lands on the other shard: {:?}",
        stats.shards.iter().map(|s| s.rooms).collect::<Vec<_>>()
    );

    let all_flowing = |peers: &[Peer]| {
        peers.iter().all(|p| {
            p.client.connected_at().is_some()
                && p.client.stats().slots.iter().all(|s| s.packets > 0)
        })
    };
    drive_until(&mut peers, Duration::from_secs(20), all_flowing);
    for (i, p) in peers.iter().enumerate() {
        assert!(p.client.connected_at().is_some(), "peer {i} connected");
        for s in &p.client.stats().slots {
            assert!(
                s.packets > 0,
                "peer {i} slot {} (video {}) got nothing",
                s.mid,
                s.video
            );
        }
    }

    // One leaves, one is kicked.
    engine.leave(room_a, peers[4].pid).unwrap();
    engine.kick(room_a, peers[5].pid).unwrap();
    assert!(engine.kick(room_a, peers[5].pid).is_err());
    drive_until(&mut peers, Duration::from_secs(10), |p| p[5].client.kicked);
    assert!(peers[5].client.kicked, "the kicked client was told");
    peers[4].active = false;
    peers[5].active = false;
    // Let the room settle on its four members (slots reassigned, the
    // gone publishers' last packets delivered), then count from there.
    drive(&mut peers, Duration::from_millis(500));
    let before: Vec<Vec<u64>> = peers.iter().map(packets).collect();
    let live = |p: &Peer, before: &[u64], video: bool| {
        p.client
            .stats()
            .slots
            .iter()
            .zip(before)
            .filter(|(s, b)| s.video == video && s.packets > **b)
            .count()
    };
    drive_until(&mut peers, Duration::from_secs(15), |peers| {
        peers
            .iter()
            .enumerate()
            .take(4)
            .all(|(i, p)| live(p, &before[i], true) >= 3 && live(p, &before[i], false) >= 3)
            && peers.iter().enumerate().skip(6).all(|(i, p)| {
                p.client
                    .stats()
                    .slots
                    .iter()
                    .zip(&before[i])
                    .all(|(s, b)| s.packets > *b)
            })
    });

    // The four left in room A keep receiving the three others.
    for (i, p) in peers.iter().enumerate().take(4) {
        assert_eq!(
            live(p, &before[i], true),
            3,
            "peer {i} receives the 3 remaining others"
        );
        assert_eq!(live(p, &before[i], false), 3);
    }
    // Room B on the other shard never noticed.
    for (i, p) in peers.iter().enumerate().skip(6) {
        for (s, b) in p.client.stats().slots.iter().zip(&before[i]) {
            assert!(s.packets > *b, "room B peer {i} slot {} stalled", s.mid);
            assert_eq!(s.lost(), 0, "room B peer {i} slot {} lost packets", s.mid);
        }
        assert_eq!(p.room, room_b);
    }

    let events: Vec<EngineEvent> = engine.events().try_iter().collect();
    let left = |pid, reason| {
        events.iter().any(|e| {
            matches!(e, EngineEvent::ParticipantLeft { participant, reason: r, .. }
                if *participant == pid && *r == reason)
        })
    };
    // Bandwidth state is exposed per subscriber through the engine.
    let bw = engine.subscriber_stats(room_a, peers[0].pid).unwrap();
    assert_eq!(bw.slots.len(), 5);
    assert!(bw.estimate_bps.is_some_and(|e| e > 0), "{bw:?}");
    assert_eq!(bw.slots.iter().filter(|s| s.publisher.is_some()).count(), 3);
    assert!(engine.subscriber_stats(room_a, peers[4].pid).is_err());
    assert!(left(peers[4].pid, LeaveReason::Left));
    assert!(left(peers[5].pid, LeaveReason::Kicked));
    assert_eq!(engine.stats().participants(), 7);

    // The SFU's own latency: every forwarded packet that left is in the
    // shards' histograms (a few may still sit in str0m's pacer), none lost
    // track of, and on an idle loopback the engine adds well under 100 ms.
    for s in engine.refresh_stats().unwrap().shards {
        let h = &s.forward_latency;
        let forwarded = s.core.rtp_forwarded;
        assert_eq!(s.core.latency_untracked, 0, "shard {}", s.index);
        assert!(
            h.count() <= forwarded && h.count() + 200 >= forwarded,
            "shard {}: {} of {forwarded} forwarded packets in the histogram",
            s.index,
            h.count()
        );
        let p50 = h.quantile(0.5).unwrap();
        assert!(
            p50 < Duration::from_millis(100),
            "shard {}: p50 {p50:?}",
            s.index
        );
        assert!(h.sum() > Duration::ZERO);
    }
    engine.shutdown();
}
