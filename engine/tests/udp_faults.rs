//! Faults over real UDP on loopback: vanishing peers, a panicking room,
//! admission control and graceful shutdown. The panic is injected with the
//! test-only `fault-injection` hook (enabled for this crate's tests through
//! its dev-dependency on itself).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use piazza::core::control::ServerMessage;
use piazza::sim::{ClientConfig, SimClient};
use piazza::{
    Engine, EngineEvent, Error, JoinOptions, LeaveReason, ParticipantId, RoomConfig, RoomId,
};

/// Upper bound of every wait on the engine (never reached when it works).
const WAIT: Duration = Duration::from_secs(20);

struct Peer {
    client: SimClient,
    socket: Option<UdpSocket>,
    pid: ParticipantId,
}

fn engine(shards: usize) -> Engine {
    Engine::builder()
        .shards(shards)
        .bind("127.0.0.1".parse().unwrap())
        .build()
        .unwrap()
}

fn client(n: u32) -> (SimClient, UdpSocket) {
    let mut cfg = ClientConfig::new(n);
    cfg.video_slots = 3;
    cfg.audio_slots = 2;
    cfg.speaking = n.is_multiple_of(3);
    SimClient::on_loopback(cfg, Instant::now()).unwrap()
}

fn join(engine: &Engine, room: RoomId, n: u32) -> Result<Peer, Error> {
    let (mut client, socket) = client(n);
    let joined = client.join_engine(engine, room, JoinOptions::new(format!("peer-{n}")))?;
    Ok(Peer {
        client,
        socket: Some(socket),
        pid: joined.participant,
    })
}

/// Drive every peer that still has a socket with the real clock for `d`.
fn drive(peers: &mut [Peer], d: Duration) {
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 2000];
    while Instant::now() < end {
        for p in peers.iter_mut() {
            let Some(socket) = &p.socket else { continue };
            p.client.step_udp(socket, &mut buf, |_| {});
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Drive `peers` until `done` holds for the events seen so far.
fn drive_until(
    peers: &mut [Peer],
    events: &piazza::Events,
    seen: &mut Vec<(Instant, EngineEvent)>,
    mut done: impl FnMut(&[(Instant, EngineEvent)]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {seen:?}");
        drive(peers, Duration::from_millis(20));
        seen.extend(events.try_iter().map(|e| (Instant::now(), e)));
    }
}

/// Video packets each peer has received over all its slots.
fn received(peers: &[Peer]) -> Vec<u64> {
    peers
        .iter()
        .map(|p| p.client.stats().slots.iter().map(|s| s.packets).sum())
        .collect()
}

fn assert_all_grew(before: &[u64], after: &[u64]) {
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        assert!(
            a > b,
            "peer {i} received nothing more: {before:?} -> {after:?}"
        );
    }
}

#[test]
fn three_of_ten_vanish_over_udp_and_are_removed_as_timed_out() {
    let timeout = Duration::from_secs(2);
    let engine = engine(1);
    let events = engine.events();
    let room = engine
        .create_room(RoomConfig::named("vanish").inactivity_timeout(timeout))
        .unwrap();
    let mut peers: Vec<Peer> = (0..10).map(|n| join(&engine, room, n).unwrap()).collect();
    drive(&mut peers, Duration::from_secs(2));
    let ten = engine.refresh_stats().unwrap().shards[0].footprint;
    assert_eq!((ten.participants, ten.demux_addrs), (10, 10), "{ten:?}");

    // Their sockets close; they never say goodbye.
    let gone: Vec<ParticipantId> = peers[7..].iter().map(|p| p.pid).collect();
    for p in &mut peers[7..] {
        p.socket = None;
    }
    let vanished_at = Instant::now();
    let mut seen = Vec::new();
    drive_until(&mut peers, &events, &mut seen, |seen| {
        seen.iter()
            .filter(|(_, e)| matches!(e, EngineEvent::ParticipantLeft { .. }))
            .count()
            >= 3
    });
    for (at, e) in &seen {
        if let EngineEvent::ParticipantLeft {
            participant,
            reason,
            ..
        } = e
        {
            assert!(gone.contains(participant), "{e:?}");
            assert_eq!(*reason, LeaveReason::Timeout);
            println!(
                "{participant} removed {:?} after its socket closed (timeout {timeout:?})",
                *at - vanished_at
            );
        }
    }

    // The seven see it and keep receiving each other.
    drive(&mut peers[..7], Duration::from_millis(700));
    let before = received(&peers[..7]);
    drive(&mut peers[..7], Duration::from_secs(1));
    assert_all_grew(&before, &received(&peers[..7]));
    for p in &peers[..7] {
        let Some(ServerMessage::Participants { participants }) = &p.client.last_participants else {
            panic!("no participant list");
        };
        assert_eq!(participants.len(), 7, "{participants:?}");
    }
    let stats = engine.refresh_stats().unwrap();
    let seven = stats.shards[0].footprint;
    assert_eq!(stats.participants(), 7);
    assert_eq!(stats.shards[0].core.participants_timed_out, 3);
    assert_eq!(
        (
            seven.participants,
            seven.participant_index,
            seven.demux_addrs,
            seven.demux_ufrags,
            seven.pending_removals
        ),
        (7, 7, 7, 7, 0),
        "{seven:?}"
    );
    // Each of the seven shows the six others, and nobody routes to the gone.
    assert_eq!(seven.video_slots, 7 * 3);
    assert!(seven.routes < ten.routes, "{ten:?} -> {seven:?}");
}

#[test]
fn a_panic_in_one_room_fails_that_room_and_the_shards_other_room_keeps_forwarding() {
    let engine = engine(1);
    let events = engine.events();
    let doomed = engine.create_room(RoomConfig::named("doomed")).unwrap();
    let healthy = engine.create_room(RoomConfig::named("healthy")).unwrap();
    assert_eq!(
        engine.room_shard(doomed).unwrap(),
        engine.room_shard(healthy).unwrap()
    );
    // Peers 0-2 in the doomed room, 3-5 in the healthy one.
    let mut all: Vec<Peer> = (0..6)
        .map(|n| join(&engine, if n < 3 { doomed } else { healthy }, n).unwrap())
        .collect();
    drive(&mut all, Duration::from_secs(2));
    let before = received(&all[3..]);

    engine.inject_panic(doomed).unwrap();
    let mut seen = Vec::new();
    drive_until(&mut all, &events, &mut seen, |seen| {
        seen.iter()
            .any(|(_, e)| matches!(e, EngineEvent::RoomFailed { room, .. } if *room == doomed))
    });
    let reason = seen.iter().find_map(|(_, e)| match e {
        EngineEvent::RoomFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.unwrap().contains("injected fault"));

    // The healthy room on the same shard keeps forwarding.
    drive(&mut all, Duration::from_secs(1));
    let after = received(&all[3..]);
    assert_all_grew(&before, &after);
    drive(&mut all, Duration::from_secs(1));
    assert_all_grew(&after, &received(&all[3..]));

    // The failed room's participants were removed and told; its id is gone.
    for p in &all[..3] {
        assert!(seen.iter().any(|(_, e)| *e
            == EngineEvent::ParticipantLeft {
                room: doomed,
                participant: p.pid,
                reason: LeaveReason::RoomClosed,
            }));
        assert!(!p.client.is_alive(), "a failed room's peer got no close");
    }
    assert!(
        !seen.iter().any(|(_, e)| matches!(
            e,
            EngineEvent::ParticipantLeft { room, .. } if *room == healthy
        )),
        "{seen:?}"
    );
    assert!(matches!(
        join(&engine, doomed, 9).err(),
        Some(Error::UnknownRoom(r)) if r == doomed
    ));
    assert!(matches!(
        engine.leave(doomed, all[0].pid),
        Err(Error::UnknownRoom(_))
    ));
    let stats = engine.refresh_stats().unwrap();
    let shard = &stats.shards[0];
    assert_eq!(shard.core.rooms_failed, 1);
    assert_eq!(shard.panics, 0, "contained in the room, not the shard");
    assert_eq!((shard.rooms, shard.participants), (1, 3));
    assert_eq!(shard.footprint.demux_addrs, 3, "{:?}", shard.footprint);
    assert_eq!(shard.footprint.demux_ufrags, 3, "{:?}", shard.footprint);
    // And it still admits people.
    join(&engine, healthy, 10).unwrap();
}

#[test]
fn joins_past_the_shard_budget_are_refused_and_the_running_room_keeps_receiving() {
    let engine = Engine::builder()
        .shards(1)
        .bind("127.0.0.1".parse().unwrap())
        .max_participants_per_shard(4)
        .build()
        .unwrap();
    let room = engine.create_room(RoomConfig::named("busy")).unwrap();
    let mut peers: Vec<Peer> = (0..4).map(|n| join(&engine, room, n).unwrap()).collect();
    drive(&mut peers, Duration::from_secs(2));

    let refused = join(&engine, room, 4).err();
    assert_eq!(
        refused,
        Some(Error::Overloaded {
            participants: 4,
            budget: 4
        })
    );
    assert!(refused.unwrap().to_string().contains("try again later"));
    assert_eq!(
        engine.create_room(RoomConfig::named("more")).err(),
        Some(Error::AtCapacity)
    );
    let stats = engine.refresh_stats().unwrap();
    assert_eq!(stats.participants(), 4);
    assert_eq!(stats.shards[0].core.joins_refused_overload, 1);

    // Those already in keep receiving everyone.
    let before = received(&peers);
    drive(&mut peers, Duration::from_secs(1));
    assert_all_grew(&before, &received(&peers));

    // Headroom again after a leave.
    engine.leave(room, peers[0].pid).unwrap();
    join(&engine, room, 5).unwrap();
}

#[test]
fn the_shard_rechecks_the_budget_so_concurrent_joins_cannot_overshoot_it() {
    let engine = Engine::builder()
        .shards(1)
        .bind("127.0.0.1".parse().unwrap())
        .max_participants_per_shard(3)
        .build()
        .unwrap();
    let room = engine.create_room(RoomConfig::named("race")).unwrap();
    let results: Vec<Result<Peer, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                s.spawn({
                    let engine = &engine;
                    move || join(engine, room, n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 3);
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, Error::Overloaded { budget: 3, .. }), "{e}");
        }
    }
    let stats = engine.refresh_stats().unwrap();
    assert_eq!(stats.participants(), 3);
    assert_eq!(stats.shards[0].core.joins_refused_overload, 5);
}

#[test]
fn graceful_shutdown_tells_every_participant_and_stops_within_the_bound() {
    let engine = engine(2);
    let events = engine.events();
    let rooms: Vec<RoomId> = (0..2)
        .map(|i| {
            engine
                .create_room(RoomConfig::named(format!("r{i}")))
                .unwrap()
        })
        .collect();
    let mut peers: Vec<Peer> = (0..4)
        .map(|n| join(&engine, rooms[n as usize % 2], n).unwrap())
        .collect();
    let mut seen = Vec::new();
    drive_until(&mut peers, &events, &mut seen, |seen| {
        seen.iter()
            .filter(|(_, e)| matches!(e, EngineEvent::ParticipantConnected { .. }))
            .count()
            == 4
    });
    drive(&mut peers, Duration::from_millis(500));

    assert!(engine.shutdown_within(Duration::from_secs(5)));
    assert!(matches!(
        join(&engine, rooms[0], 9).err(),
        Some(Error::EngineClosed)
    ));
    let seen: Vec<EngineEvent> = events.try_iter().collect();
    for p in &peers {
        assert!(
            seen.iter().any(|e| matches!(
                e,
                EngineEvent::ParticipantLeft { participant, reason: LeaveReason::Shutdown, .. }
                    if *participant == p.pid
            )),
            "{seen:?}"
        );
    }
    for r in &rooms {
        assert!(seen.contains(&EngineEvent::RoomClosed { room: *r }));
    }
    // What the shards sent before stopping reaches the peers: the notice
    // and the DTLS close.
    let deadline = Instant::now() + WAIT;
    while peers
        .iter()
        .any(|p| p.client.closing.is_none() || p.client.is_alive())
    {
        assert!(Instant::now() < deadline, "peers were not told");
        drive(&mut peers, Duration::from_millis(20));
    }
    for p in &peers {
        assert!(
            p.client
                .closing
                .as_deref()
                .unwrap()
                .contains("shutting down"),
            "{:?}",
            p.client.closing
        );
    }
    // Idempotent.
    assert!(engine.shutdown_within(Duration::from_secs(1)));
}
