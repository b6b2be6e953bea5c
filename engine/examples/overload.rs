//! Admission control under a join storm, over real UDP on loopback.
//!
//! A room of `running` participants (str0m clients with 9 video and 3 audio
//! slots, 360p cap) runs on a one-shard engine. After a baseline phase, a
//! storm tries a join every 50 ms. With a budget (`budget` = `running`)
//! every storm join is refused with `Error::Overloaded` and the running
//! room's latency stays where it was; with `none`, the storm is admitted
//! and everybody's latency and the shard's CPU grow. Prints, per phase, the
//! end-to-end forwarding latency the running participants measured
//! (publisher send to subscriber receive, through the engine), joins
//! admitted and refused, and the shard's CPU share.
//!
//! `cargo run --release -p piazza --example overload [running] [budget|none] [phase seconds]`

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use piazza::sim::{ClientConfig, SimClient};
use piazza::{Engine, Error, JoinOptions, RoomConfig, RoomId};

struct Peer {
    client: SimClient,
    socket: UdpSocket,
}

fn join(engine: &Engine, room: RoomId, n: u32, epoch: Instant) -> Result<Peer, Error> {
    let mut cfg = ClientConfig::new(n);
    cfg.video_slots = 9;
    cfg.audio_slots = 3;
    cfg.speaking = n < 2;
    let (mut client, socket) = SimClient::on_loopback(cfg, epoch).map_err(Error::from)?;
    client.join_engine(engine, room, JoinOptions::new(format!("p{n}")))?;
    Ok(Peer { client, socket })
}

fn step(peers: &mut [Peer], buf: &mut [u8]) {
    for p in peers.iter_mut() {
        p.client.step_udp(&p.socket, buf, |_| {});
    }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let running: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let budget: Option<usize> = match args.next().as_deref() {
        Some("none") => None,
        Some(b) => b.parse().ok(),
        None => Some(running),
    };
    let phase = Duration::from_secs(args.next().and_then(|a| a.parse().ok()).unwrap_or(8));
    let mut builder = Engine::builder().shards(1);
    if let Some(b) = budget {
        builder = builder.max_participants_per_shard(b);
    }
    let engine = builder.build()?;
    let room = engine.create_room(RoomConfig::named("running").max_participants(50))?;
    let epoch = Instant::now();
    let mut peers = Vec::new();
    for n in 0..running {
        peers.push(join(&engine, room, n as u32, epoch)?);
    }
    let mut buf = vec![0u8; 2000];
    // Settle: connections, first keyframes, allocator.
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        step(&mut peers, &mut buf);
        std::thread::sleep(Duration::from_micros(300));
    }
    for p in &mut peers {
        p.client.take_latencies();
    }
    println!("running room: {running} participants, budget {budget:?}, phases of {phase:?}");
    for name in ["baseline", "join storm"] {
        let storm = name == "join storm";
        let cpu0 = engine.refresh_stats()?.shards[0].cpu_time;
        let t0 = Instant::now();
        let (mut admitted, mut refused, mut next_join) = (0, 0, t0);
        let mut n = 1000;
        while t0.elapsed() < phase {
            if storm && Instant::now() >= next_join {
                next_join += Duration::from_millis(50);
                n += 1;
                match join(&engine, room, n, epoch) {
                    Ok(p) => {
                        admitted += 1;
                        peers.push(p);
                    }
                    Err(Error::Overloaded { .. }) | Err(Error::RoomFull { .. }) => refused += 1,
                    Err(e) => return Err(e),
                }
            }
            step(&mut peers, &mut buf);
            std::thread::sleep(Duration::from_micros(300));
        }
        let wall = t0.elapsed();
        let cpu = engine.refresh_stats()?.shards[0].cpu_time - cpu0;
        // The running room's original participants only.
        let mut lat: Vec<u32> = peers[..running]
            .iter_mut()
            .flat_map(|p| p.client.take_latencies())
            .collect();
        lat.sort_unstable();
        println!(
            "{name:>10}: latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} packets); joins admitted {admitted}, refused {refused}; shard CPU {:.0} %",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            lat.len(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        );
    }
    engine.shutdown();
    Ok(())
}
