//! What a dropped datagram costs the shard: nanoseconds and heap
//! allocations per datagram in `ShardCore::handle_datagram`, for each kind
//! of garbage a flood sends.
//!
//! ```sh
//! cargo run --release -p piazza --example drop_cost
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use piazza::core::ShardCore;
use piazza::sim::{CountingAlloc, FloodKind, FloodMix};
use piazza::{IngressConfig, ParticipantId, RoomConfig, RoomId};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const N: usize = 200_000;

fn main() {
    let local: SocketAddr = "127.0.0.1:3478".parse().expect("a literal address");
    let mut core = ShardCore::with_ingress(local, &IngressConfig::default());
    // A ufrag the core routes (to a participant the room does not hold:
    // the datagram passes every cheap check and the full STUN parse, and
    // is dropped just before an Rtc would see it), and a validated
    // address, to exhaust its throttle.
    core.create_room(RoomId::from_raw(1), RoomConfig::default());
    core.insert_route(
        RoomId::from_raw(1),
        ParticipantId::from_raw(1),
        None,
        Some("known".into()),
    );
    let validated: SocketAddr = "10.9.9.9:5000".parse().expect("a literal address");
    core.insert_route(
        RoomId::from_raw(1),
        ParticipantId::from_raw(2),
        Some(validated),
        None,
    );

    let mut mix = FloodMix::new(1, vec!["known".into()], Vec::new());
    let mut per_kind: Vec<(FloodKind, Vec<Vec<u8>>)> = FloodKind::ALL
        .iter()
        .filter(|k| **k != FloodKind::Replay)
        .map(|k| (*k, Vec::new()))
        .collect();
    let mut buf = Vec::new();
    while per_kind.iter().any(|(_, v)| v.len() < 1024) {
        let kind = mix.next_into(&mut buf);
        if let Some((_, v)) = per_kind.iter_mut().find(|(k, _)| *k == kind) {
            v.push(buf.clone());
        }
    }

    println!("kind                      ns/datagram  allocations/datagram  counted as");
    let mut now = Instant::now();
    let mut source_ip = 0u32;
    for (kind, datagrams) in &per_kind {
        // Sources spread over many IPs, so the rate limit lets STUN through
        // to the ufrag check (one source's burst would be used up at once).
        measure(&mut core, kind.name(), |core, i| {
            source_ip = source_ip.wrapping_add(1);
            let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(source_ip | 0x0b00_0000)), 9);
            core.handle_datagram(now, src, &datagrams[i % datagrams.len()]);
        });
        now += Duration::from_millis(1);
    }

    // The same STUN from one source: the rate limit stops it.
    let stun = &per_kind
        .iter()
        .find(|(k, _)| *k == FloodKind::StunUnknownUfrag)
        .expect("generated above")
        .1;
    let src: SocketAddr = "11.1.1.1:9".parse().expect("a literal address");
    measure(&mut core, "stun_one_source", |core, i| {
        core.handle_datagram(now, src, &stun[i % stun.len()]);
    });

    // A validated address far over its ingress rate: throttled.
    let rtp = vec![0x80u8; 1200];
    measure(&mut core, "over_ingress_rate", |core, _| {
        core.handle_datagram(now, validated, &rtp);
    });
    let ing = core.stats().ingress;
    println!(
        "source table: {} of {} entries, {} evictions",
        ing.tracked_sources, ing.source_table_capacity, ing.source_evictions
    );
}

/// Run `send` N times (with the iteration number) and print the time and
/// allocations per datagram, and which drop reasons counted them.
fn measure(core: &mut ShardCore, label: &str, mut send: impl FnMut(&mut ShardCore, usize)) {
    let before = core.stats().drops;
    let a0 = CountingAlloc::allocations();
    let t0 = Instant::now();
    for i in 0..N {
        send(core, i);
    }
    let ns = t0.elapsed().as_nanos() as f64 / N as f64;
    let allocs = (CountingAlloc::allocations() - a0) as f64 / N as f64;
    let d = core.stats().drops;
    println!(
        "{label:<25} {ns:>11.1}  {allocs:>20.3}  {}",
        reason(&before, &d)
    );
}

/// The drop reasons that grew, with their counts.
fn reason(a: &piazza::DropStats, b: &piazza::DropStats) -> String {
    let pairs = [
        ("unknown_source", b.unknown_source - a.unknown_source),
        ("rate_limited", b.rate_limited - a.rate_limited),
        ("unknown_ufrag", b.unknown_ufrag - a.unknown_ufrag),
        ("address_limit", b.address_limit - a.address_limit),
        ("throttled", b.throttled - a.throttled),
        ("malformed", b.malformed - a.malformed),
        ("rejected", b.rejected - a.rejected),
    ];
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
