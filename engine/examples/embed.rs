//! Embedding Piazza: start an engine, open a room, join one client and watch
//! the events.
//!
//! The "client" here is a str0m `Rtc` on this thread with its own UDP socket,
//! standing in for a browser: it makes the offer a browser would (sendonly
//! audio and VP8, recvonly slots, a data channel), takes the engine's answer
//! and connects over loopback.
//!
//! Run with `cargo run -p piazza --example embed`.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use piazza::{Engine, EngineEvent, JoinOptions, RoomConfig};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, RtcConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The engine: two shard threads, each with a UDP socket on loopback.
    let engine = Engine::builder()
        .shards(2)
        .bind("127.0.0.1".parse()?)
        .build()?;
    println!("shards listening on {:?}", engine.shard_addrs());
    let events = engine.events();

    let room = engine.create_room(RoomConfig::named("demo"))?;
    println!("created room {room}");

    // The client's side: a socket, an Rtc and an offer.
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let local = socket.local_addr()?;
    let mut client = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    client.add_local_candidate(Candidate::host(local, "udp")?);
    let mut api = client.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None); // microphone
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None); // camera (VP8)
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None); // video slot 1
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None); // video slot 2
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None); // audio slot
    api.add_channel("control".into());
    let (offer, pending) = api.apply().ok_or("the client made no offer")?;

    // Signalling would carry the offer to the server; here it is a call.
    let joined = engine.join(room, &offer.to_sdp_string(), JoinOptions::new("Alice"))?;
    println!("joined as {}; the answer begins:", joined.participant);
    for line in joined.answer.lines().take(8) {
        println!("    {line}");
    }
    client
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&joined.answer)?)?;

    // Drive the client until the engine reports it connected (ICE + DTLS).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 2000];
    let mut connected = false;
    while !connected && Instant::now() < deadline {
        let timeout = loop {
            match client.poll_output()? {
                Output::Transmit(t) => {
                    socket.send_to(&t.contents, t.destination)?;
                }
                Output::Timeout(t) => break t,
                Output::Event(Event::ChannelData(d)) => {
                    println!("control message: {}", String::from_utf8_lossy(&d.data));
                }
                Output::Event(_) => {}
            }
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                let receive = Receive::new(Protocol::Udp, source, local, &buf[..n])?;
                client.handle_input(Input::Receive(Instant::now(), receive))?;
            }
            Err(_) => client.handle_input(Input::Timeout(Instant::now()))?,
        }
        for event in events.try_iter() {
            println!("event: {event:?}");
            connected |= matches!(event, EngineEvent::ParticipantConnected { .. });
        }
    }
    if !connected {
        return Err("the client did not connect within 10 s".into());
    }

    // `stats()` reads the snapshot the shards publish (cheap, up to ~100 ms
    // old); `refresh_stats()` asks each shard thread now.
    for shard in engine.refresh_stats()?.shards {
        println!(
            "shard {} at {}: {} room(s), {} participant(s), {} datagrams in, {:?} CPU",
            shard.index,
            shard.local_addr,
            shard.rooms,
            shard.participants,
            shard.core.datagrams_in,
            shard.cpu_time
        );
    }

    engine.leave(room, joined.participant)?;
    engine.close_room(room)?;
    engine.shutdown();
    for event in events.try_iter() {
        println!("event: {event:?}");
    }
    println!("engine shut down");
    Ok(())
}
