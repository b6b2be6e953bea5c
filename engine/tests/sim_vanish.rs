//! Vanishing peers: participants whose network goes away without a leave
//! are removed after the room's inactivity timeout, the others are told,
//! and what they held is freed.
//!
//! One test per file: the counting allocator below sees every thread of the
//! test binary.

use std::time::Duration;

use piazza::core::control::ServerMessage;
use piazza::core::{Footprint, ShardCore};
use piazza::sim::{CountingAlloc, SimConfig, Simulator};
use piazza::{EngineEvent, LeaveReason, ParticipantId};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

const TIMEOUT: Duration = Duration::from_secs(3);
const VANISH_AT: Duration = Duration::from_secs(3);
/// Well past the removals, so live participants have had every chance to
/// be (wrongly) timed out too.
const END: Duration = Duration::from_secs(12);
const VANISHING: [usize; 3] = [7, 8, 9];

fn sim(n: usize) -> Simulator {
    let mut cfg = SimConfig::new(n);
    cfg.room.inactivity_timeout = TIMEOUT;
    Simulator::new(cfg).unwrap()
}

/// Heap the core holds: dropping it frees exactly that.
fn engine_heap(sim: &mut Simulator) -> isize {
    let addr = sim.core().local_addr();
    let before = CountingAlloc::live_bytes();
    let core = std::mem::replace(sim.core_mut(), ShardCore::new(addr));
    drop(core);
    before - CountingAlloc::live_bytes()
}

fn footprint_at_end(n: usize, vanish: &[usize]) -> (Simulator, Footprint, isize) {
    let mut sim = sim(n);
    sim.run_until(VANISH_AT);
    for &i in vanish {
        sim.vanish(i);
    }
    sim.run_until(END);
    let f = sim.core().footprint();
    let heap = engine_heap(&mut sim);
    (sim, f, heap)
}

#[test]
fn three_of_ten_vanish_are_removed_after_the_timeout_and_everything_they_held_is_freed() {
    let (ten, ten_footprint, ten_heap) = footprint_at_end(10, &[]);
    let (seven, seven_footprint, seven_heap) = footprint_at_end(7, &[]);
    let (sim, footprint, heap) = footprint_at_end(10, &VANISHING);
    let start = sim.start();
    let id = |i: usize| sim.participants()[i].id.unwrap();
    let vanished: Vec<ParticipantId> = VANISHING.iter().map(|&i| id(i)).collect();

    // Exactly the three are removed, each as timed out, after the timeout
    // and within one room tick (100 ms) and a round trip of it.
    let mut left = Vec::new();
    for (at, e) in sim.events() {
        if let EngineEvent::ParticipantLeft {
            participant,
            reason,
            ..
        } = e
        {
            left.push((*participant, *reason, *at - start));
        }
    }
    assert_eq!(left.len(), 3, "{left:?}");
    for (p, reason, at) in &left {
        assert!(
            vanished.contains(p),
            "a live participant was removed: {left:?}"
        );
        assert_eq!(*reason, LeaveReason::Timeout, "{left:?}");
        assert!(
            *at >= VANISH_AT + TIMEOUT - Duration::from_millis(100),
            "removed before its timeout ran out: {at:?}"
        );
        assert!(
            *at <= VANISH_AT + TIMEOUT + Duration::from_millis(200),
            "removed late: {at:?}"
        );
        println!(
            "participant {p} removed {:?} after it vanished",
            *at - VANISH_AT
        );
    }
    // Nobody in the runs without vanishing was timed out.
    for s in [&ten, &seven] {
        assert!(
            !s.events()
                .iter()
                .any(|(_, e)| matches!(e, EngineEvent::ParticipantLeft { .. })),
            "a live participant was removed"
        );
    }

    // The others see it: their participant lists and slots lost the three,
    // and the six others keep arriving in their slots.
    for i in 0..7 {
        let c = &sim.participants()[i].client;
        let Some(ServerMessage::Participants { participants }) = &c.last_participants else {
            panic!("client {i} has no participant list");
        };
        assert_eq!(participants.len(), 7, "client {i}: {participants:?}");
        for v in &vanished {
            assert!(!participants.iter().any(|p| p.id == v.to_string()));
        }
        let Some(ServerMessage::Slots { video, audio }) = &c.last_slots else {
            panic!("client {i} has no slots");
        };
        for v in &vanished {
            let v = Some(v.to_string());
            assert!(
                video.iter().all(|s| s.participant != v)
                    && audio.iter().all(|s| s.participant != v),
                "client {i} still shows a vanished participant"
            );
        }
        let receiving = c
            .stats()
            .slots
            .iter()
            .filter(|s| s.video && s.current().is_some_and(|c| c.0 < 7))
            .count();
        assert_eq!(receiving, 6, "client {i}");
    }

    // Memory returns to the 7-participant level: the core holds exactly
    // what a room that only ever had the seven holds...
    println!("footprint: 10 {ten_footprint:?}\n 10-3 {footprint:?}\n 7 {seven_footprint:?}");
    assert_eq!(footprint, seven_footprint);
    assert_ne!(ten_footprint, seven_footprint);
    // ...and its heap is near a 7-person room's, not a 10-person room's:
    // removal gave back at least 80 % of what three participants cost.
    println!("engine heap: 10 {ten_heap} B, 10-3 {heap} B, 7 {seven_heap} B");
    let three = ten_heap - seven_heap;
    assert!(three > 0, "10 cost {ten_heap} B, 7 cost {seven_heap} B");
    assert!(
        heap - seven_heap < three / 5,
        "after the three went the engine holds {heap} B; 7 hold {seven_heap} B, 10 hold {ten_heap} B"
    );
}
