//! The engine's forwarding in a simulated 50-person room (virtual time,
//! seeded network, real str0m peers and SRTP). These runs fix the layer at
//! `l` with bandwidth estimation off, so they test slots, rewriting and
//! NACK/RTX alone; allocation and layer switching have their own tests
//! (`sim_bandwidth.rs`).

use std::time::{Duration, Instant};

use piazza::Layer;
use piazza::sim::{ClientConfig, LinkConfig, SimConfig, Simulator};

const N: usize = 50;

/// A 50-person room forwarding the lowest layer, bandwidth estimation off.
fn fixed_layer_config() -> SimConfig {
    let mut cfg = SimConfig::new(N);
    cfg.room.bandwidth_estimation = false;
    cfg.room.max_layer = Layer::LOW;
    cfg
}

/// Rotate the talking participant every `every`, so recent-speaker order
/// (and with it the video slots) keeps changing.
fn run_with_rotating_speakers(sim: &mut Simulator, total: Duration, every: Duration) {
    let mut speaker = 0;
    while sim.elapsed() < total {
        for i in 0..sim.participants().len() {
            let talking = i == speaker;
            sim.participant_mut(i).client.set_speaking(talking);
        }
        sim.run_for(every.min(total - sim.elapsed()));
        speaker = (speaker + 7) % N;
    }
}

fn summary(sim: &Simulator, wall: Duration) {
    let st = sim.core().stats();
    let ns = sim.core_busy().as_nanos() as f64 / st.rtp_forwarded.max(1) as f64;
    println!(
        "simulated {:?} in {:?} wall; rtp in {} forwarded {} plis {} switches {}; core busy {:?} = {:.0} ns per forwarded packet",
        sim.elapsed(),
        wall,
        st.rtp_in,
        st.rtp_forwarded,
        st.plis_sent,
        st.slot_switches,
        sim.core_busy(),
        ns
    );
}

#[test]
fn fifty_person_room_lossless_every_slot_is_one_continuous_stream() {
    let wall = Instant::now();
    let mut sim = Simulator::new(fixed_layer_config()).unwrap();
    run_with_rotating_speakers(
        &mut sim,
        Duration::from_secs(10),
        Duration::from_millis(1500),
    );
    summary(&sim, wall.elapsed());
    assert!(sim.join_failures().is_empty(), "{:?}", sim.join_failures());

    let mut switches = 0;
    for (i, p) in sim.participants().iter().enumerate() {
        let s = p.client.stats();
        assert_eq!(s.unexpected_packets, 0, "client {i}");
        for slot in &s.slots {
            // Every slot is filled: 49 others publish, 9 video and 3 audio slots.
            assert!(
                slot.packets > 0,
                "client {i} slot {} (video {}) received nothing",
                slot.mid,
                slot.video
            );
            // One continuous RTP stream: no sequence gaps, even across
            // publisher switches, and nothing arrives out of order.
            assert_eq!(slot.lost(), 0, "client {i} slot {} has gaps", slot.mid);
            assert_eq!(slot.reordered, 0, "client {i} slot {}", slot.mid);
            if slot.video {
                assert_eq!(
                    slot.non_keyframe_starts, 0,
                    "client {i} slot {} switched on a delta frame",
                    slot.mid
                );
            }
            switches += slot.publisher_switches;
        }
    }
    assert!(
        switches > 0,
        "speaker rotation moved publishers between slots"
    );
    // Every participant's audio and camera reached everyone with a slot for it:
    // the engine's own counters agree with what the clients received.
    let received: u64 = sim
        .participants()
        .iter()
        .flat_map(|p| p.client.stats().slots.iter().map(|s| s.packets))
        .sum();
    // (what is still on the 10 ms downlinks when the run stops is the difference).
    let forwarded = sim.core().stats().rtp_forwarded;
    assert!(received <= forwarded && forwarded - received < forwarded / 100);
}

#[test]
fn one_percent_loss_on_every_link_freezes_no_slot_beyond_500ms() {
    let wall = Instant::now();
    let lossy = LinkConfig {
        loss: 0.01,
        delay: Duration::from_millis(20),
        ..Default::default()
    };
    let mut cfg = fixed_layer_config();
    cfg.uplink = lossy.clone();
    cfg.downlink = lossy;
    cfg.seed = 7;
    let mut sim = Simulator::new(cfg).unwrap();
    // Frames are measured once everybody has joined and settled.
    sim.run_until(Duration::from_secs(2));
    let from = sim.now();
    for i in 0..N {
        sim.participant_mut(i).client.measure_from(from);
    }
    run_with_rotating_speakers(
        &mut sim,
        Duration::from_secs(10),
        Duration::from_millis(1500),
    );
    summary(&sim, wall.elapsed());

    let mut worst = Duration::ZERO;
    let mut lost = 0;
    let mut packets = 0;
    for (i, p) in sim.participants().iter().enumerate() {
        for slot in p.client.stats().slots.iter().filter(|s| s.video) {
            assert!(slot.frames > 0, "client {i} slot {}", slot.mid);
            worst = worst.max(slot.max_frame_gap);
            assert!(
                slot.max_frame_gap <= Duration::from_millis(500),
                "client {i} slot {} froze for {:?}",
                slot.mid,
                slot.max_frame_gap
            );
        }
        for slot in &p.client.stats().slots {
            lost += slot.lost();
            packets += slot.packets;
        }
    }
    println!(
        "worst frame gap {worst:?}; residual loss {lost} of {packets} ({:.4} %) after NACK/RTX",
        lost as f64 * 100.0 / packets.max(1) as f64
    );
    let link_loss: u64 = sim
        .participants()
        .iter()
        .map(|p| p.uplink.stats.lost + p.downlink.stats.lost)
        .sum();
    assert!(link_loss > 0, "the links did lose packets");
    // Audio is not retransmitted, so ~2 % (two lossy hops) of audio stays lost;
    // video is repaired: overall residual loss must be well below the raw rate.
    assert!((lost as f64) < 0.01 * packets as f64);
}

#[test]
fn join_storm_fifty_in_one_second_all_receive_media_within_two_seconds() {
    let wall = Instant::now();
    let mut cfg = fixed_layer_config();
    cfg.join_spacing = Duration::from_millis(20);
    cfg.client = Box::new(|i| {
        let mut c = ClientConfig::new(i as u32);
        c.speaking = i % 10 == 0;
        c
    });
    let mut sim = Simulator::new(cfg).unwrap();
    sim.run_until(Duration::from_secs(4));
    summary(&sim, wall.elapsed());
    assert!(sim.join_failures().is_empty());
    let mut worst = Duration::ZERO;
    for (i, p) in sim.participants().iter().enumerate() {
        assert!(
            p.joined_at - sim.start() < Duration::from_secs(1),
            "all joins within one second"
        );
        for slot in &p.client.stats().slots {
            let first = if slot.video {
                slot.first_keyframe_at
            } else {
                slot.first_packet_at
            };
            let first = first.unwrap_or_else(|| panic!("client {i} slot {} got nothing", slot.mid));
            let took = first - p.joined_at;
            worst = worst.max(took);
            assert!(
                took <= Duration::from_secs(2),
                "client {i} slot {} first media after {took:?}",
                slot.mid
            );
        }
    }
    println!("slowest first media (video: first keyframe) after join: {worst:?}");
}
