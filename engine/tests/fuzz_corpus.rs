//! The fuzz targets' seed corpora through their harnesses, without libFuzzer:
//! every seed of `piazza::fuzzing::seeds` runs on stable in the normal test
//! suite, with what each seed should do asserted, so the harnesses (and the
//! seeds' validity) cannot rot between fuzzing runs.

use piazza::fuzzing::seeds::{self, Seed};
use piazza::fuzzing::{control, datagram, http, sdp};

fn seeds_of(target: &str) -> Vec<Seed> {
    let s: Vec<Seed> = seeds::all()
        .into_iter()
        .filter(|s| s.target == target)
        .collect();
    assert!(!s.is_empty(), "no seeds for {target}");
    s
}

#[test]
fn every_target_has_seeds_and_only_known_targets_do() {
    for s in seeds::all() {
        assert!(seeds::TARGETS.contains(&s.target), "{}", s.target);
    }
    for t in seeds::TARGETS {
        seeds_of(t);
    }
}

#[test]
fn committed_seed_files_are_the_generated_set() {
    // `fuzz/seeds` is what the fuzzers start from; regenerate it with the
    // `fuzz_seeds` example when the seeds change.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let mut committed = Vec::new();
    for t in seeds::TARGETS {
        for e in std::fs::read_dir(dir.join(t)).expect("fuzz/seeds/<target>") {
            let e = e.expect("a directory entry");
            committed.push(format!("{t}/{}", e.file_name().to_string_lossy()));
            if t == "datagram" {
                let data = std::fs::read(e.path()).expect("a seed file");
                assert_eq!(datagram::encode(&datagram::decode(&data)), data);
            }
        }
    }
    let mut generated: Vec<String> = seeds::all()
        .iter()
        .map(|s| format!("{}/{}", s.target, s.name))
        .collect();
    committed.sort();
    generated.sort();
    assert_eq!(committed, generated);
}

#[test]
fn seed_inputs_decode_to_what_was_encoded() {
    for s in seeds_of("datagram") {
        let ops = datagram::decode(&s.data);
        assert!(!ops.is_empty(), "{}", s.name);
        assert_eq!(datagram::encode(&ops), s.data, "{}", s.name);
    }
}

#[test]
fn datagram_seeds_leave_the_room_intact() {
    // One rig for all seeds, as the fuzzer keeps one between inputs.
    let mut rig = datagram::Rig::new();
    assert!(rig.healthy(), "the rig's participants connect");
    for s in seeds_of("datagram") {
        rig.run(&s.data);
        assert!(rig.healthy(), "after seed {}", s.name);
    }
    let stats = rig.sim().core().stats();
    // The garbage seed's datagram from a participant's address is not
    // STUN, DTLS, RTP or RTCP (malformed); its datagram from a new address
    // and the DTLS hello from a new address are not binding requests
    // (unknown source); STUN with a made-up ufrag names nobody.
    assert!(stats.drops.malformed >= 1, "{:?}", stats.drops);
    assert!(stats.drops.unknown_source >= 2, "{:?}", stats.drops);
    assert!(stats.drops.unknown_ufrag >= 1, "{:?}", stats.drops);
}

#[test]
fn rtp_ops_reach_the_room_through_srtp() {
    // Two audio packets through participant 1's session, each followed by
    // the op's 12 ms for it to arrive, against the same 24 ms without them:
    // the rigs are built alike in virtual time, so the clients' own media
    // is the same in both.
    let rtp = |seq_offset| datagram::Op::Rtp {
        participant: 1,
        stream: 0,
        seq_offset,
        timestamp: 48_000,
        marker: false,
        audio_level: Some(30),
        payload: vec![0xfc; 60],
    };
    let baseline = datagram::run_fresh(&datagram::encode(&[datagram::Op::Advance { millis: 24 }]));
    let rig = datagram::run_fresh(&datagram::encode(&[rtp(0), rtp(1)]));
    let (before, after) = (baseline.sim().core().stats(), rig.sim().core().stats());
    assert_eq!(after.rtp_in, before.rtp_in + 2, "{before:?} {after:?}");
}

#[test]
fn control_seeds_leave_the_room_intact() {
    for s in seeds_of("control") {
        let rig = control::run_fresh(&s.data);
        assert!(rig.healthy(), "after seed {}", s.name);
    }
}

#[test]
fn control_placeholders_name_the_senders_slots() {
    let rig = control::run_fresh(br#"{"type":"pause","mid":"{v1}"}"#);
    let sim = rig.sim();
    let p = sim.participants()[0].id.expect("joined");
    let stats = sim
        .core()
        .subscriber_stats(sim.room(), p)
        .expect("a subscriber");
    assert!(stats.slots[1].paused, "{stats:?}");
    assert!(!stats.slots[0].paused, "{stats:?}");
}

#[test]
fn sdp_seeds_join_or_are_refused_as_expected() {
    for s in seeds_of("sdp") {
        let outcome = sdp::run(&s.data);
        match s.name.as_str() {
            "too-many-slots" => assert!(
                matches!(&outcome, sdp::Outcome::Refused(e) if e.contains("at most")),
                "{outcome:?}"
            ),
            _ => assert!(
                matches!(outcome, sdp::Outcome::Joined { answer_len } if answer_len > 0),
                "{}: {outcome:?}",
                s.name
            ),
        }
    }
    assert!(matches!(sdp::run(b"v=0\r\n"), sdp::Outcome::Refused(_)));
}

#[test]
fn http_seeds_get_their_documented_status() {
    let mut rig = http::Rig::new();
    for s in seeds_of("http") {
        let status = rig.run(&s.data).as_u16();
        let expected = match s.name.as_str() {
            "create-empty" | "create-full" | "create-unix-start" | "mint" | "mint-admin"
            | "join" | "join-guest" => 201,
            "lock" | "public" => 200,
            "create-unknown-field" | "join-not-sdp" => 400,
            "lock-as-guest" => 403,
            "mint-no-token" | "join-bad-token" => 401,
            other => panic!("no expectation for seed {other}"),
        };
        assert_eq!(status, expected, "seed {}", s.name);
    }
    // Every request was undone: the one room is open, unlocked and empty.
    let stats = rig.server().engine().stats();
    assert_eq!(stats.rooms(), 1, "{stats:?}");
    assert_eq!(stats.participants(), 0, "{stats:?}");
}

#[test]
fn chat_seeds_are_relayed_or_refused_as_the_room_says() {
    use piazza::core::control::ServerMessage;
    let received = |seed: &str, i: usize| -> Vec<ServerMessage> {
        let s = seeds_of("control")
            .into_iter()
            .find(|s| s.name == seed)
            .unwrap_or_else(|| panic!("no seed {seed}"));
        let rig = control::run_fresh(&s.data);
        assert!(rig.healthy(), "after seed {seed}");
        rig.sim().participants()[i]
            .client
            .chat
            .iter()
            .cloned()
            .collect()
    };
    let texts = |m: &[ServerMessage]| -> Vec<String> {
        m.iter()
            .filter_map(|m| match m {
                ServerMessage::Chat { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    };
    let codes = |m: &[ServerMessage]| -> Vec<String> {
        m.iter()
            .filter_map(|m| match m {
                ServerMessage::ChatError { code, .. } => Some(code.clone()),
                _ => None,
            })
            .collect()
    };
    let keys = |m: &[ServerMessage]| -> Vec<String> {
        m.iter()
            .filter_map(|m| match m {
                ServerMessage::Key { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        texts(&received("chat-all", 1)),
        ["hello room", "hi\nthere\t!"]
    );
    assert_eq!(texts(&received("chat-private", 1)), ["psst"]);
    assert_eq!(
        codes(&received("chat-to-self-and-nobody", 0)),
        ["to_self", "unknown_recipient", "unknown_recipient"]
    );
    assert_eq!(
        codes(&received("key-in-normal-room", 0)),
        ["not_encrypted_room"]
    );
    let e2ee = received("e2ee-chat", 0);
    assert_eq!(codes(&e2ee), ["encryption_required"]);
    assert_eq!(texts(&e2ee), ["AAECAw==", "BAUG"]);
    assert_eq!(keys(&received("e2ee-key-relay", 1)), [r#"{"t":"hello"}"#]);
    let sender = received("e2ee-key-relay", 0);
    assert_eq!(keys(&sender), ["wrapped"]);
    assert_eq!(codes(&sender), ["to_self", "empty"]);
}
