//! H.264 forwarding (simulator, virtual time, seeded): simulcast H.264
//! reaches subscribers that negotiated H.264 with layer switches only where
//! a keyframe starts (its SPS/PPS STAP-A), never a slot that negotiated VP8
//! only, and rooms mixing VP8 and H.264 publishers give every subscriber
//! the publishers it can decode.

use std::time::Duration;

use piazza::core::control::ClientMessage;
use piazza::sim::{ClientConfig, SimClient, SimConfig, Simulator};
use piazza::{Layer, ParticipantId, VideoCodec};

fn pid(sim: &Simulator, i: usize) -> ParticipantId {
    sim.participants()[i].id.expect("joined")
}

/// Every (slot, publisher) subscriber `i`'s video slots show or are
/// switching to.
fn held(sim: &Simulator, i: usize) -> Vec<(String, ParticipantId)> {
    let s = sim
        .core()
        .subscriber_stats(sim.room(), pid(sim, i))
        .expect("joined");
    s.slots
        .iter()
        .flat_map(|slot| {
            [slot.publisher, slot.target_publisher]
                .into_iter()
                .flatten()
                .map(|p| (slot.mid.clone(), p))
        })
        .collect()
}

fn client(sim: &Simulator, i: usize) -> &SimClient {
    &sim.participants()[i].client
}

/// A client offering `codecs` (the first is what it publishes).
fn config(i: usize, codecs: &[VideoCodec], speaking: bool) -> ClientConfig {
    let mut c = ClientConfig::new(i as u32);
    c.video_codecs = codecs.to_vec();
    c.video_slots = 4;
    c.speaking = speaking;
    c
}

/// What every received H.264 packet must satisfy: intact payloads, and a
/// new (publisher, layer) starts with SPS/PPS, i.e. at a keyframe.
fn assert_h264_clean(sim: &Simulator, i: usize) {
    for s in client(sim, i).stats().slots.iter().filter(|s| s.video) {
        assert_eq!(s.non_keyframe_starts, 0, "client {i} slot {}: {s:?}", s.mid);
        assert_eq!(
            s.h264_starts_without_sps, 0,
            "client {i} slot {}: {s:?}",
            s.mid
        );
        assert_eq!(s.h264_malformed, 0, "client {i} slot {}: {s:?}", s.mid);
        assert_eq!(s.lost(), 0, "client {i} slot {}: {s:?}", s.mid);
    }
}

#[test]
fn h264_simulcast_reaches_h264_subscribers_switching_layers_at_keyframes() {
    const N: usize = 4;
    let mut cfg = SimConfig::new(N);
    cfg.seed = 11;
    cfg.join_spacing = Duration::from_millis(200);
    cfg.client = Box::new(|i| {
        if i == 0 {
            config(i, &[VideoCodec::H264, VideoCodec::Vp8], true)
        } else {
            config(i, &[VideoCodec::Vp8, VideoCodec::H264], false)
        }
    });
    let mut sim = Simulator::new(cfg).unwrap();
    // Everybody has joined after N * 200 ms.
    sim.run_until(Duration::from_secs(1));
    assert_eq!(client(&sim, 0).video_codec(), VideoCodec::H264);
    // The layer each subscriber's slot shows publisher 0 at, and its mid.
    let shown = |sim: &Simulator, i: usize| -> Option<(String, Option<Layer>)> {
        let s = sim.core().subscriber_stats(sim.room(), pid(sim, i))?;
        s.slots
            .iter()
            .find(|s| s.publisher == Some(pid(sim, 0)))
            .map(|s| (s.mid.clone(), s.current_layer))
    };
    let mut reached_h = [false; N];
    while sim.elapsed() < Duration::from_secs(5) {
        sim.run_for(Duration::from_millis(100));
        for (i, r) in reached_h.iter_mut().enumerate().skip(1) {
            *r |= shown(&sim, i).is_some_and(|(_, l)| l == Some(Layer::HIGH));
        }
    }
    // Down to l and back up to h: each subscriber caps the slot at 180
    // rows, then lifts the cap; both are layer switches of an H.264 track.
    let mids: Vec<String> = (1..N)
        .map(|i| shown(&sim, i).expect("shows publisher 0").0)
        .collect();
    for (i, mid) in (1..N).zip(&mids) {
        let msg = ClientMessage::MaxResolution {
            mid: mid.clone(),
            height: Some(180),
        };
        sim.participant_mut(i).client.send_control(&msg);
    }
    sim.run_for(Duration::from_secs(2));
    for i in 1..N {
        assert_eq!(
            shown(&sim, i).and_then(|s| s.1),
            Some(Layer::LOW),
            "subscriber {i}"
        );
    }
    for (i, mid) in (1..N).zip(&mids) {
        let msg = ClientMessage::MaxResolution {
            mid: mid.clone(),
            height: None,
        };
        sim.participant_mut(i).client.send_control(&msg);
    }
    sim.run_for(Duration::from_secs(3));
    for i in 1..N {
        assert_eq!(
            shown(&sim, i).and_then(|s| s.1),
            Some(Layer::HIGH),
            "subscriber {i}"
        );
    }
    for (i, reached) in reached_h.iter().enumerate().skip(1) {
        assert!(
            reached,
            "subscriber {i} never showed the H.264 publisher at h"
        );
        let slots = &client(&sim, i).stats().slots;
        let h264: Vec<_> = slots.iter().filter(|s| s.h264_packets > 0).collect();
        assert_eq!(
            h264.len(),
            1,
            "subscriber {i}: one slot shows publisher 0: {slots:?}"
        );
        let s = h264[0];
        assert_eq!(s.current().map(|c| c.0), Some(0), "subscriber {i}: {s:?}");
        // h -> l -> h at least, each switch at the SPS/PPS STAP-A opening a
        // keyframe (assert_h264_clean).
        assert!(s.layer_switches >= 2, "subscriber {i}: {s:?}");
        assert_eq!(s.current().map(|c| c.2), Some(2), "subscriber {i}: {s:?}");
        assert!(s.frames > 100, "subscriber {i}: {s:?}");
        assert_h264_clean(&sim, i);
    }
    // The publisher itself receives the VP8 subscribers' cameras as VP8.
    let own = &client(&sim, 0).stats().slots;
    assert!(own.iter().all(|s| s.h264_packets == 0), "{own:?}");
    assert_eq!(
        own.iter().filter(|s| s.vp8_packets > 0).count(),
        N - 1,
        "{own:?}"
    );
}

#[test]
fn vp8_only_and_h264_only_subscribers_get_only_what_they_decode_in_a_mixed_room() {
    // 0 publishes H.264, 1 publishes VP8 (and decodes VP8 only), 2 decodes
    // VP8 only, 3 decodes (and publishes) H.264 only, 4 decodes both and
    // publishes VP8. 0 speaks, so it ranks first everywhere.
    const N: usize = 5;
    let mut cfg = SimConfig::new(N);
    cfg.seed = 12;
    cfg.join_spacing = Duration::from_millis(200);
    cfg.client = Box::new(|i| match i {
        0 => config(i, &[VideoCodec::H264, VideoCodec::Vp8], true),
        1 | 2 => config(i, &[VideoCodec::Vp8], false),
        3 => config(i, &[VideoCodec::H264], false),
        _ => config(i, &[VideoCodec::Vp8, VideoCodec::H264], false),
    });
    let mut sim = Simulator::new(cfg).unwrap();
    sim.run_until(Duration::from_millis(1100));
    let vp8_only = [1, 2];
    let h264_pubs = [0, 3];
    let vp8_pubs = [1, 2, 4];
    let mut h264_only_saw_h264 = false;
    while sim.elapsed() < Duration::from_secs(8) {
        sim.run_for(Duration::from_millis(100));
        for &i in &vp8_only {
            for (mid, p) in held(&sim, i) {
                assert!(
                    !h264_pubs.iter().any(|&h| p == pid(&sim, h)),
                    "t={:?} VP8-only subscriber {i} slot {mid} holds H.264 publisher {p}",
                    sim.elapsed(),
                );
            }
        }
        for (mid, p) in held(&sim, 3) {
            assert!(
                !vp8_pubs.iter().any(|&v| p == pid(&sim, v)),
                "t={:?} H.264-only subscriber 3 slot {mid} holds VP8 publisher {p}",
                sim.elapsed(),
            );
            h264_only_saw_h264 |= p == pid(&sim, 0);
        }
    }
    assert!(h264_only_saw_h264, "subscriber 3 never got publisher 0");
    let shows = |i: usize, publisher: u32| {
        client(&sim, i)
            .stats()
            .slots
            .iter()
            .any(|s| s.current().map(|c| c.0) == Some(publisher) && s.frames > 50)
    };
    // The VP8-only subscribers: no H.264 packet, every VP8 camera.
    for &i in &vp8_only {
        let slots = &client(&sim, i).stats().slots;
        assert!(slots.iter().all(|s| s.h264_packets == 0), "{i}: {slots:?}");
        for p in vp8_pubs.iter().filter(|&&p| p != i) {
            assert!(
                shows(i, *p as u32),
                "subscriber {i} misses VP8 publisher {p}: {slots:?}"
            );
        }
    }
    // The H.264-only subscriber: publisher 0 (publisher 3 is itself), no VP8.
    let slots = &client(&sim, 3).stats().slots;
    assert!(slots.iter().all(|s| s.vp8_packets == 0), "{slots:?}");
    assert!(shows(3, 0), "{slots:?}");
    // Decoding both: every camera, each with its own codec.
    let slots = &client(&sim, 4).stats().slots;
    for p in [0, 1, 2, 3] {
        assert!(shows(4, p), "subscriber 4 misses publisher {p}: {slots:?}");
    }
    for s in slots.iter().filter(|s| s.video && s.packets > 0) {
        let h264 = s
            .current()
            .is_some_and(|c| h264_pubs.contains(&(c.0 as usize)));
        if s.publisher_switches == 0 {
            // A slot that showed one publisher only carries its codec.
            assert_eq!(s.vp8_packets == 0, h264, "{s:?}");
        }
    }
    for i in 0..N {
        assert_h264_clean(&sim, i);
    }
}
