//! Control-channel behaviour through the simulator: pin, pause/resume,
//! per-slot maximum resolution, leave and kick.

use std::time::Duration;

use piazza::core::control::{ClientMessage, ServerMessage};
use piazza::sim::{ClientConfig, SimConfig, Simulator};
use piazza::{EngineEvent, Layer, LeaveReason};

fn sim(n: usize, slots: usize, max_layer: Layer) -> Simulator {
    let mut cfg = SimConfig::new(n);
    cfg.room.max_layer = max_layer;
    // Unconstrained links: every slot gets its cap, which these tests steer.
    cfg.room.bandwidth_estimation = false;
    cfg.client = Box::new(move |i| {
        let mut c = ClientConfig::new(i as u32);
        c.video_slots = slots;
        // Participant 1 talks, so it holds a slot by speaking.
        c.speaking = i == 1;
        c
    });
    Simulator::new(cfg).unwrap()
}

fn slot_publishers(sim: &Simulator, i: usize) -> Vec<Option<u32>> {
    sim.participants()[i]
        .client
        .stats()
        .slots
        .iter()
        .filter(|s| s.video)
        .map(|s| s.current().map(|c| c.0))
        .collect()
}

#[test]
fn pinned_participant_takes_a_slot() {
    let mut sim = sim(8, 2, Layer::LOW);
    sim.run_until(Duration::from_secs(2));
    let last = sim.participants()[7].id.unwrap();
    assert!(
        !slot_publishers(&sim, 0).contains(&Some(7)),
        "without a pin, the last joiner who never spoke has no slot of 2"
    );
    sim.participant_mut(0)
        .client
        .send_control(&ClientMessage::Pin {
            participant: Some(last.to_string()),
        });
    sim.run_for(Duration::from_secs(2));
    let pubs = slot_publishers(&sim, 0);
    assert!(pubs.contains(&Some(7)), "{pubs:?}");
    assert!(
        pubs.contains(&Some(1)),
        "the speaker keeps the other slot: {pubs:?}"
    );
    let Some(ServerMessage::Slots { video, .. }) = &sim.participants()[0].client.last_slots else {
        panic!("no slots message");
    };
    assert!(
        video
            .iter()
            .any(|s| s.participant == Some(last.to_string()))
    );
}

#[test]
fn pause_stops_and_resume_restarts_a_slot_on_a_keyframe() {
    let mut sim = sim(3, 2, Layer::LOW);
    sim.run_until(Duration::from_secs(2));
    let mid = sim.participants()[0].client.stats().slots[0].mid.clone();
    sim.participant_mut(0)
        .client
        .send_control(&ClientMessage::Pause { mid: mid.clone() });
    sim.run_for(Duration::from_millis(500));
    let paused_at = sim.participants()[0].client.stats().slots[0].packets;
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.participants()[0].client.stats().slots[0].packets,
        paused_at,
        "nothing arrives in a paused slot"
    );
    let other = sim.participants()[0].client.stats().slots[1].packets;
    assert!(other > 0);
    sim.participant_mut(0)
        .client
        .send_control(&ClientMessage::Resume { mid });
    sim.run_for(Duration::from_secs(1));
    let s = &sim.participants()[0].client.stats().slots[0];
    assert!(s.packets > paused_at, "media resumes");
    assert_eq!(s.lost(), 0, "the stream stays continuous across the pause");
    assert_eq!(s.non_keyframe_starts, 0);
}

#[test]
fn max_resolution_caps_the_forwarded_layer() {
    let mut sim = sim(3, 2, Layer::HIGH);
    sim.run_until(Duration::from_secs(2));
    let layers = |sim: &Simulator| -> Vec<Option<u8>> {
        sim.participants()[0]
            .client
            .stats()
            .slots
            .iter()
            .filter(|s| s.video)
            .map(|s| s.current().map(|c| c.2))
            .collect()
    };
    assert_eq!(layers(&sim), vec![Some(2), Some(2)], "the cap, h");
    let mid = sim.participants()[0].client.stats().slots[0].mid.clone();
    sim.participant_mut(0)
        .client
        .send_control(&ClientMessage::MaxResolution {
            mid,
            height: Some(360),
        });
    sim.run_for(Duration::from_secs(2));
    assert_eq!(layers(&sim), vec![Some(1), Some(2)], "slot 0 capped to m");
    let s = &sim.participants()[0].client.stats().slots[0];
    assert_eq!(s.lost(), 0);
    assert_eq!(
        s.non_keyframe_starts, 0,
        "the layer switch waited for a keyframe"
    );
}

#[test]
fn leave_and_kick_free_slots_and_tell_the_others() {
    let mut sim = sim(6, 5, Layer::LOW);
    sim.run_until(Duration::from_secs(2));
    let id = |sim: &Simulator, i: usize| sim.participants()[i].id.unwrap();
    let (leaver, kicked) = (id(&sim, 4), id(&sim, 5));
    sim.leave(4).unwrap();
    sim.kick(5).unwrap();
    assert!(
        sim.kick(5).is_err(),
        "a removed participant cannot be removed twice"
    );
    sim.run_for(Duration::from_secs(2));

    let left: Vec<_> = sim
        .events()
        .iter()
        .filter_map(|(_, e)| match e {
            EngineEvent::ParticipantLeft {
                participant,
                reason,
                ..
            } => Some((*participant, *reason)),
            _ => None,
        })
        .collect();
    assert!(left.contains(&(leaver, LeaveReason::Left)));
    assert!(left.contains(&(kicked, LeaveReason::Kicked)));
    assert!(
        sim.participants()[5].client.kicked,
        "the kicked client was told"
    );
    assert_eq!(sim.core().room_len(sim.room()), Some(4));

    for i in 0..4 {
        let c = &sim.participants()[i].client;
        let Some(ServerMessage::Participants { participants }) = &c.last_participants else {
            panic!("client {i} has no participant list");
        };
        let ids: Vec<_> = participants.iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids.len(), 4, "client {i}: {ids:?}");
        assert!(!ids.contains(&leaver.to_string()) && !ids.contains(&kicked.to_string()));
        let Some(ServerMessage::Slots { video, .. }) = &c.last_slots else {
            panic!("client {i} has no slots");
        };
        assert!(
            video
                .iter()
                .all(|s| s.participant != Some(leaver.to_string())
                    && s.participant != Some(kicked.to_string())),
            "client {i} still shows a leaver: {video:?}"
        );
        // The three remaining others keep arriving.
        let receiving = c
            .stats()
            .slots
            .iter()
            .filter(|s| s.video && s.current().is_some_and(|c| c.0 < 4))
            .count();
        assert_eq!(receiving, 3, "client {i}");
    }
}
