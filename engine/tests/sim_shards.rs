//! The simulator as the engine runs: several rooms on several shards, each
//! shard the shard thread's own loop step, joins and leaves as the engine's
//! commands; a seeded run replays; counters survive a room's close.

use std::time::Duration;

use piazza::core::control::ServerMessage;
use piazza::sim::{LinkConfig, SEND_AT, SimConfig, Simulator};
use piazza::{EngineEvent, LeaveReason};

/// Eight participants, two rooms, two shards: room 1 on shard 0 with
/// participants 0, 2, 4, 6; room 2 on shard 1 with 1, 3, 5, 7.
fn two_rooms_two_shards(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(8);
    cfg.rooms = 2;
    cfg.shards = 2;
    cfg.seed = seed;
    cfg
}

#[test]
fn two_rooms_on_two_shards_forward_only_within_each_room() {
    let mut sim = Simulator::new(two_rooms_two_shards(1)).unwrap();
    sim.run_for(Duration::from_secs(4));
    assert!(sim.join_failures().is_empty(), "{:?}", sim.join_failures());
    assert_eq!(sim.rooms().len(), 2);
    let (room_a, shard_a) = sim.rooms()[0];
    let (room_b, shard_b) = sim.rooms()[1];
    assert_ne!(shard_a, shard_b, "one room per shard");
    assert_eq!(sim.core_of(shard_a).room_len(room_a), Some(4));
    assert_eq!(sim.core_of(shard_b).room_len(room_b), Some(4));
    assert_eq!(sim.core_of(shard_a).room_len(room_b), None);
    for k in [shard_a, shard_b] {
        let st = sim.core_of(k).stats();
        assert!(st.rtp_forwarded > 0, "shard {k} forwarded nothing: {st:?}");
    }
    // Every subscriber's video slots show members of its own room only.
    for (i, p) in sim.participants().iter().enumerate() {
        let id = p.id.expect("joined");
        let slots = sim.core_of(p.shard).slots_of(p.room, id).expect("slots");
        let ServerMessage::Slots { video, .. } = slots else {
            panic!("not a slots message");
        };
        let showing: Vec<&str> = video
            .iter()
            .filter_map(|s| s.participant.as_deref())
            .collect();
        assert_eq!(showing.len(), 3, "participant {i}: {video:?}");
        for shown in showing {
            let j = sim
                .participants()
                .iter()
                .position(|q| q.id.map(|x| x.to_string()).as_deref() == Some(shown))
                .expect("a participant");
            assert_eq!(j % 2, i % 2, "participant {i} sees {j} of the other room");
        }
        let received: u64 = p.client.stats().slots.iter().map(|s| s.packets).sum();
        assert!(received > 0, "participant {i} received nothing");
    }
    // A leave goes through the room's shard.
    sim.leave(3).unwrap();
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.core_of(shard_b).room_len(room_b), Some(3));
    assert!(sim.events().iter().any(|(_, e)| matches!(
        e,
        EngineEvent::ParticipantLeft {
            reason: LeaveReason::Left,
            room,
            ..
        } if *room == room_b
    )));
}

#[test]
fn a_seeded_run_replays_exactly() {
    let run = |seed| {
        let mut sim = Simulator::new(two_rooms_two_shards(seed)).unwrap();
        sim.run_for(Duration::from_secs(3));
        // A leave and its consequences are part of the trace too.
        sim.leave(2).unwrap();
        sim.run_for(Duration::from_secs(1));
        let forwarded: u64 = (0..2).map(|k| sim.core_of(k).stats().rtp_forwarded).sum();
        (sim.trace_hash(), forwarded, sim.events().len())
    };
    let a = run(42);
    let b = run(42);
    assert!(a.1 > 0, "nothing forwarded");
    assert_eq!(a, b, "two runs with seed 42 differ");
}

/// A narrow, lossy, jittery run: everything that turns a seed into
/// behaviour (random loss and jitter, a rate limit that spaces packets by
/// their size, bandwidth estimation from round-trip times) is in play.
fn narrow_lossy_run(seed: u64) -> (u64, u64) {
    let mut cfg = SimConfig::new(4);
    cfg.seed = seed;
    cfg.downlink = LinkConfig {
        rate_bps: Some(700_000),
        loss: 0.01,
        jitter: Duration::from_millis(3),
        ..Default::default()
    };
    cfg.uplink = LinkConfig {
        loss: 0.01,
        ..Default::default()
    };
    let mut sim = Simulator::new(cfg).unwrap();
    sim.run_for(Duration::from_secs(6));
    let forwarded = sim.core_of(0).stats().rtp_forwarded;
    (sim.trace_hash(), forwarded)
}

/// The same seed gives the same run in a fresh process: the child runs
/// this test again with `PIAZZA_REPLAY_CHILD` set and prints its trace;
/// nothing it computes may depend on the process (the wall clock, the
/// crypto library's randomness, hash seeds, other tests running beside
/// it).
#[test]
fn a_seeded_run_replays_in_another_process() {
    const NAME: &str = "a_seeded_run_replays_in_another_process";
    let here = narrow_lossy_run(11);
    if std::env::var_os("PIAZZA_REPLAY_CHILD").is_some() {
        println!("replay-trace {} {}", here.0, here.1);
        return;
    }
    assert!(here.1 > 0, "nothing forwarded");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("PIAZZA_REPLAY_CHILD", "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("replay-trace ").map(|(_, t)| t))
        .unwrap_or_else(|| panic!("no trace in the child's output: {stdout}"));
    assert_eq!(
        line,
        format!("{} {}", here.0, here.1),
        "seed 11 ran differently in another process"
    );
}

#[test]
fn counters_only_go_up_across_a_room_close() {
    let mut sim = Simulator::new(two_rooms_two_shards(3)).unwrap();
    sim.run_for(Duration::from_secs(3));
    let (room_a, shard_a) = sim.rooms()[0];
    let before = sim.core_of(shard_a).stats();
    assert!(before.rtp_forwarded > 0 && before.rtp_in > 0, "{before:?}");
    sim.close_room(room_a).unwrap();
    sim.run_for(Duration::from_millis(200));
    let after = sim.core_of(shard_a).stats();
    assert_eq!(sim.core_of(shard_a).room_len(room_a), None, "closed");
    assert!(after.rtp_in >= before.rtp_in, "{before:?} -> {after:?}");
    assert!(after.rtp_forwarded >= before.rtp_forwarded);
    assert!(after.plis_sent >= before.plis_sent);
    assert!(after.slot_switches >= before.slot_switches);
    assert!(after.dropped_waiting_keyframe >= before.dropped_waiting_keyframe);
    assert!(after.loss_caps >= before.loss_caps);
}

/// Issue 12: a receive batch that fans out to hundreds of datagrams used to
/// send none of them until the last was made, so the first copies waited
/// for all the others. The shard's loop now sends each time `SEND_AT` are
/// ready. The same seeded run, with and without that rule, sends the same
/// datagrams at the same (virtual) times, in more and smaller rounds.
#[test]
fn a_large_step_sends_its_first_datagrams_before_making_the_rest() {
    let run = |send_at| {
        let mut cfg = SimConfig::new(20);
        cfg.send_at = send_at;
        let mut sim = Simulator::new(cfg).unwrap();
        sim.run_for(Duration::from_secs(3));
        (sim.trace_hash(), sim.send_rounds())
    };
    let (whole_trace, whole) = run(usize::MAX);
    let (trace, rounds) = run(SEND_AT);
    println!("at the end of each flush: {whole:?}; every {SEND_AT}: {rounds:?}");
    assert_eq!(trace, whole_trace, "the rule changed what was sent");
    assert_eq!(rounds.largest_step, whole.largest_step);
    assert!(
        whole.largest_flush > 4 * SEND_AT,
        "no flush was large enough to tell: {whole:?}"
    );
    assert!(
        rounds.largest_flush < whole.largest_flush / 2,
        "{rounds:?} vs {whole:?}"
    );
    assert!(rounds.flushes > whole.flushes, "{rounds:?} vs {whole:?}");
}
