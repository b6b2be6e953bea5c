//! The embedding API over real loopback sockets: typed errors, room
//! placement across shards, and one str0m client that connects over UDP.
//!
//! No browser; every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use piazza::{
    Engine, EngineEvent, Error, JoinOptions, LeaveReason, ParticipantId, RoomConfig, RoomId,
};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const WAIT: Duration = Duration::from_secs(15);

fn engine(shards: usize) -> Engine {
    Engine::builder()
        .shards(shards)
        .bind("127.0.0.1".parse().unwrap())
        .build()
        .expect("engine on loopback")
}

/// A client offer like a browser's: sendonly audio, sendonly VP8, two
/// recvonly video slots, one recvonly audio slot and a data channel.
fn client_offer(rtc: &mut Rtc) -> (String, SdpPendingOffer) {
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_channel("control".into());
    let (offer, pending) = api.apply().expect("new media makes an offer");
    (offer.to_sdp_string(), pending)
}

fn client_rtc(local: SocketAddr) -> Rtc {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    rtc
}

/// An offer with no socket behind it (for tests that never connect).
fn offer() -> String {
    let mut rtc = client_rtc("127.0.0.1:9".parse().unwrap());
    client_offer(&mut rtc).0
}

/// Wait for the first event matching `pred`, skipping others.
fn wait_event(events: &piazza::Events, mut pred: impl FnMut(&EngineEvent) -> bool) -> EngineEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if pred(&e) => return e,
            Ok(_) => {}
            Err(e) => panic!("no matching event within {WAIT:?}: {e}"),
        }
    }
}

#[test]
fn malformed_sdp_is_a_typed_error() {
    let engine = engine(1);
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let err = engine
        .join(room, "this is not sdp", JoinOptions::new("x"))
        .unwrap_err();
    assert!(matches!(err, Error::MalformedSdp(_)), "{err:?}");
    let err = engine.join(room, "", JoinOptions::new("x")).unwrap_err();
    assert!(matches!(err, Error::MalformedSdp(_)), "{err:?}");
    // Nothing was admitted.
    assert_eq!(engine.stats().participants(), 0);
}

/// An offer with two video m-lines of only the codecs `enable` turns on.
fn video_offer(enable: impl FnOnce(RtcConfig) -> RtcConfig) -> String {
    let mut rtc = enable(RtcConfig::new().clear_codecs()).build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    offer.to_sdp_string()
}

#[test]
fn offer_with_only_vp9_has_no_usable_codec() {
    let engine = engine(1);
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let sdp = video_offer(|c| c.enable_vp9(true));
    assert!(
        sdp.contains("VP9") && !sdp.contains("VP8") && !sdp.contains("H264"),
        "{sdp}"
    );
    let err = engine.join(room, &sdp, JoinOptions::new("x")).unwrap_err();
    assert_eq!(err, Error::NoUsableCodec);
    assert_eq!(engine.stats().participants(), 0);
}

#[test]
fn offer_with_only_h264_joins() {
    let engine = engine(1);
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let sdp = video_offer(|c| c.enable_h264(true));
    assert!(sdp.contains("H264") && !sdp.contains("VP8"), "{sdp}");
    let joined = engine.join(room, &sdp, JoinOptions::new("x")).unwrap();
    let answer = joined.answer;
    assert!(
        answer.contains("H264/90000") && answer.contains("packetization-mode=1"),
        "{answer}"
    );
}

#[test]
fn unknown_room_and_participant() {
    let engine = engine(1);
    let ghost = RoomId::from_raw(9999);
    let err = engine
        .join(ghost, &offer(), JoinOptions::new("x"))
        .unwrap_err();
    assert_eq!(err, Error::UnknownRoom(ghost));
    assert_eq!(engine.lock(ghost, true), Err(Error::UnknownRoom(ghost)));
    assert_eq!(engine.close_room(ghost), Err(Error::UnknownRoom(ghost)));

    let room = engine.create_room(RoomConfig::default()).unwrap();
    let nobody = ParticipantId::from_raw(4242);
    assert_eq!(
        engine.leave(room, nobody),
        Err(Error::UnknownParticipant(nobody))
    );
    engine.close_room(room).unwrap();
    assert_eq!(
        engine
            .join(room, &offer(), JoinOptions::new("x"))
            .unwrap_err(),
        Error::UnknownRoom(room)
    );
}

#[test]
fn full_room_refuses_and_frees_on_leave() {
    let engine = engine(1);
    let events = engine.events();
    let room = engine
        .create_room(RoomConfig::named("tiny").max_participants(1))
        .unwrap();
    let first = engine.join(room, &offer(), JoinOptions::new("a")).unwrap();
    let err = engine
        .join(room, &offer(), JoinOptions::new("b"))
        .unwrap_err();
    assert_eq!(
        err,
        Error::RoomFull {
            room,
            max_participants: 1
        }
    );

    // Leaving frees the place at once: the shard updates the registry's
    // count before it answers.
    engine.leave(room, first.participant).unwrap();
    let second = engine.join(room, &offer(), JoinOptions::new("b")).unwrap();
    assert_ne!(first.participant, second.participant);

    // Kicking frees it too.
    engine.kick(room, second.participant).unwrap();
    let third = engine.join(room, &offer(), JoinOptions::new("c")).unwrap();
    assert_eq!(
        engine.kick(room, second.participant),
        Err(Error::UnknownParticipant(second.participant))
    );

    let got: Vec<EngineEvent> = events.try_iter().collect();
    assert!(got.contains(&EngineEvent::ParticipantLeft {
        room,
        participant: first.participant,
        reason: LeaveReason::Left
    }));
    assert!(got.contains(&EngineEvent::ParticipantLeft {
        room,
        participant: second.participant,
        reason: LeaveReason::Kicked
    }));
    assert!(got.iter().any(|e| matches!(e,
        EngineEvent::ParticipantJoined { participant, name, .. }
            if *participant == third.participant && name == "c")));
    assert_eq!(engine.stats().participants(), 1);
}

#[test]
fn locked_room_refuses_joins_until_unlocked() {
    let engine = engine(1);
    let room = engine.create_room(RoomConfig::default()).unwrap();
    engine.join(room, &offer(), JoinOptions::new("a")).unwrap();
    engine.lock(room, true).unwrap();
    assert_eq!(
        engine
            .join(room, &offer(), JoinOptions::new("b"))
            .unwrap_err(),
        Error::RoomLocked(room)
    );
    engine.lock(room, false).unwrap();
    engine.join(room, &offer(), JoinOptions::new("b")).unwrap();
    assert_eq!(engine.stats().participants(), 2);
}

#[test]
fn closed_engine_refuses_everything() {
    let engine = engine(2);
    let events = engine.events();
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let joined = engine.join(room, &offer(), JoinOptions::new("a")).unwrap();
    engine.shutdown();
    engine.shutdown(); // idempotent

    assert_eq!(
        engine.create_room(RoomConfig::default()),
        Err(Error::EngineClosed)
    );
    assert_eq!(
        engine
            .join(room, &offer(), JoinOptions::new("b"))
            .unwrap_err(),
        Error::EngineClosed
    );
    assert_eq!(
        engine.leave(room, joined.participant),
        Err(Error::EngineClosed)
    );
    assert_eq!(engine.lock(room, true), Err(Error::EngineClosed));
    assert_eq!(engine.close_room(room), Err(Error::EngineClosed));
    assert!(engine.refresh_stats().is_err());

    // Shutting down closed the room: its participant left, told why.
    let got: Vec<EngineEvent> = events.try_iter().collect();
    assert!(got.contains(&EngineEvent::ParticipantLeft {
        room,
        participant: joined.participant,
        reason: LeaveReason::Shutdown
    }));
    assert!(got.contains(&EngineEvent::RoomClosed { room }));
}

#[test]
// The empty port range is the point of one case.
#[allow(clippy::reversed_empty_ranges)]
fn invalid_configs_are_typed_errors() {
    for builder in [
        Engine::builder().shards(0),
        Engine::builder().port_range(20..=10),
        Engine::builder().port_range(0..=100),
        Engine::builder().bind("0.0.0.0".parse().unwrap()),
        Engine::builder().events_capacity(0),
    ] {
        let err = builder.build().unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    }
    let engine = engine(1);
    assert!(matches!(
        engine.create_room(RoomConfig::default().max_participants(0)),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn port_range_is_honoured() {
    // Find a free port, then ask for a small range starting there.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = probe.local_addr().unwrap().port();
    drop(probe);
    if base > u16::MAX - 20 {
        return;
    }
    let Ok(engine) = Engine::builder()
        .shards(2)
        .port_range(base..=base + 20)
        .build()
    else {
        // Another process raced us to every port in the range: not our bug.
        return;
    };
    let addrs = engine.shard_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0].port(), addrs[1].port());
    for a in &addrs {
        assert!((base..=base + 20).contains(&a.port()), "{a}");
    }
}

#[test]
fn rooms_spread_over_shards_and_answers_name_their_shard() {
    let engine = engine(2);
    let addrs = engine.shard_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);

    let a = engine.create_room(RoomConfig::named("a")).unwrap();
    let b = engine.create_room(RoomConfig::named("b")).unwrap();
    let (sa, sb) = (engine.room_shard(a).unwrap(), engine.room_shard(b).unwrap());
    assert_ne!(
        sa, sb,
        "two rooms on two idle shards go to different shards"
    );

    let ja = engine.join(a, &offer(), JoinOptions::new("alice")).unwrap();
    let jb = engine.join(b, &offer(), JoinOptions::new("bob")).unwrap();
    assert!(
        ja.answer
            .contains(&format!("127.0.0.1 {}", addrs[sa].port())),
        "answer names shard {sa}'s port: {}",
        ja.answer
    );
    assert!(
        jb.answer
            .contains(&format!("127.0.0.1 {}", addrs[sb].port())),
        "answer names shard {sb}'s port: {}",
        jb.answer
    );

    // A third room goes to the shard with fewer participants: add one to
    // room a's shard first.
    engine.join(a, &offer(), JoinOptions::new("carol")).unwrap();
    let c = engine.create_room(RoomConfig::named("c")).unwrap();
    assert_eq!(engine.room_shard(c).unwrap(), sb);

    let stats = engine.stats();
    assert_eq!(stats.shards.len(), 2);
    assert_eq!(stats.shards[sa].participants, 2);
    assert_eq!(stats.shards[sb].participants, 1);
    assert_eq!(stats.shards[sa].rooms, 1);
    assert_eq!(stats.shards[sb].rooms, 2);
    assert_eq!(stats.shards[sa].local_addr, addrs[sa]);

    let fresh = engine.refresh_stats().unwrap();
    assert_eq!(fresh.participants(), 3);
    assert_eq!(fresh.rooms(), 3);
}

/// A str0m client over a real UDP socket on the test thread.
struct UdpClient {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
    connected: bool,
    channel_open: bool,
}

impl UdpClient {
    fn new() -> (Self, String, SdpPendingOffer) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = client_rtc(local);
        let (offer, pending) = client_offer(&mut rtc);
        let client = UdpClient {
            rtc,
            socket,
            local,
            buf: vec![0; 2000],
            connected: false,
            channel_open: false,
        };
        (client, offer, pending)
    }

    /// Drain the client's outputs, then wait for one datagram or its next
    /// timeout (capped, so the caller can check engine events).
    fn step(&mut self) {
        let timeout = loop {
            match self.rtc.poll_output().expect("client rtc") {
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Timeout(t) => break t,
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::ChannelOpen(..)) => self.channel_open = true,
                Output::Event(_) => {}
            }
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        self.socket.set_read_timeout(Some(wait)).unwrap();
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, source)) => {
                let r = Receive::new(Protocol::Udp, source, self.local, &self.buf[..n])
                    .expect("server datagram parses");
                self.rtc
                    .handle_input(Input::Receive(Instant::now(), r))
                    .expect("client accepts input");
            }
            Err(_) => {
                self.rtc
                    .handle_input(Input::Timeout(Instant::now()))
                    .expect("client accepts timeout");
            }
        }
    }
}

/// Join `room` with a fresh UDP client and drive it until both sides report
/// the connection (and the data channel is open).
fn connect(engine: &Engine, events: &piazza::Events, room: RoomId) -> (UdpClient, ParticipantId) {
    let (mut client, offer, pending) = UdpClient::new();
    let joined = engine.join(room, &offer, JoinOptions::new("udp")).unwrap();
    let answer = SdpAnswer::from_sdp_string(&joined.answer).unwrap();
    client.rtc.sdp_api().accept_answer(pending, answer).unwrap();

    let pid = joined.participant;
    let deadline = Instant::now() + WAIT;
    let mut server_connected = false;
    while !(server_connected && client.connected && client.channel_open) {
        assert!(
            Instant::now() < deadline,
            "not connected within {WAIT:?} (server {server_connected}, client {}, channel {})",
            client.connected,
            client.channel_open
        );
        client.step();
        for e in events.try_iter() {
            if e == (EngineEvent::ParticipantConnected {
                room,
                participant: pid,
            }) {
                server_connected = true;
            }
        }
    }
    (client, pid)
}

#[test]
fn client_connects_over_udp_then_leaves() {
    let engine = engine(2);
    let events = engine.events();
    let room = engine.create_room(RoomConfig::named("udp")).unwrap();
    let (_client, pid) = connect(&engine, &events, room);

    let stats = engine.refresh_stats().unwrap();
    let shard = &stats.shards[engine.room_shard(room).unwrap()];
    assert!(shard.core.datagrams_in > 0, "{shard:?}");
    assert!(shard.socket.datagrams_sent > 0, "{shard:?}");
    assert_eq!(shard.socket.send_errors, 0, "{shard:?}");
    assert_eq!(shard.participants, 1);
    assert_eq!(shard.panics, 0);

    // An idle shard sleeps until its next deadline: no busy polling. A
    // spinning shard would burn ~all of the interval.
    let idx = engine.room_shard(room).unwrap();
    let before = shard.cpu_time;
    std::thread::sleep(Duration::from_millis(500));
    let after = engine.refresh_stats().unwrap().shards[idx].cpu_time;
    assert!(
        after - before < Duration::from_millis(250),
        "shard used {:?} of CPU in 500 ms while idle",
        after - before
    );

    engine.leave(room, pid).unwrap();
    wait_event(&events, |e| {
        *e == EngineEvent::ParticipantLeft {
            room,
            participant: pid,
            reason: LeaveReason::Left,
        }
    });
    assert_eq!(engine.stats().participants(), 0);

    engine.shutdown();
}

#[test]
fn client_hangup_frees_its_place() {
    let engine = engine(1);
    let events = engine.events();
    let room = engine
        .create_room(RoomConfig::named("hangup").max_participants(1))
        .unwrap();
    let (mut client, pid) = connect(&engine, &events, room);

    // The client closes its session (DTLS close_notify): the shard removes
    // it as disconnected, and the room has room again.
    client.rtc.close().unwrap();
    let deadline = Instant::now() + WAIT;
    let mut left = false;
    while !left {
        assert!(
            Instant::now() < deadline,
            "no ParticipantLeft within {WAIT:?}"
        );
        if client.rtc.is_alive() {
            client.step();
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        left = events.try_iter().any(|e| {
            e == EngineEvent::ParticipantLeft {
                room,
                participant: pid,
                reason: LeaveReason::Disconnected,
            }
        });
    }
    // The registry's count dropped before the event was sent.
    engine
        .join(room, &offer(), JoinOptions::new("next"))
        .unwrap();
    assert_eq!(engine.refresh_stats().unwrap().participants(), 1);
}
