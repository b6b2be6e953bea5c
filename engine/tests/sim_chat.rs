//! Chat and the E2EE key relay through the simulator: delivery to everyone
//! and to one participant, history for a later joiner, size and rate limits
//! with clear errors, and the rules of end-to-end encrypted rooms.

use std::time::Duration;

use piazza::core::control::{ClientMessage, ServerMessage};
use piazza::sim::{SimConfig, Simulator};

/// `n` participants joining `late` apart (zero: all at once).
fn sim(n: usize, e2ee: bool, late: Duration) -> Simulator {
    let mut cfg = SimConfig::new(n);
    cfg.room.e2ee = e2ee;
    cfg.room.bandwidth_estimation = false;
    cfg.join_spacing = late;
    Simulator::new(cfg).unwrap()
}

fn say(sim: &mut Simulator, i: usize, text: &str, to: Option<String>, local_id: &str) {
    sim.participant_mut(i)
        .client
        .send_control(&ClientMessage::Chat {
            text: text.into(),
            to,
            encrypted: false,
            local_id: Some(local_id.into()),
        });
}

/// The chat messages participant `i` received: (id, from, text, history).
fn chats(sim: &Simulator, i: usize) -> Vec<(u64, String, String, bool)> {
    sim.participants()[i]
        .client
        .chat
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat {
                id,
                from,
                text,
                history,
                ..
            } => Some((*id, from.clone(), text.clone(), *history)),
            _ => None,
        })
        .collect()
}

fn errors(sim: &Simulator, i: usize) -> Vec<(String, String, Option<String>, Option<u64>)> {
    sim.participants()[i]
        .client
        .chat
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ChatError {
                code,
                message,
                local_id,
                retry_after_ms,
            } => Some((
                code.clone(),
                message.clone(),
                local_id.clone(),
                *retry_after_ms,
            )),
            _ => None,
        })
        .collect()
}

fn id(sim: &Simulator, i: usize) -> String {
    sim.participants()[i].id.unwrap().to_string()
}

#[test]
fn chat_reaches_everyone_and_a_later_joiner_gets_the_history() {
    let mut sim = sim(3, false, Duration::from_secs(1));
    sim.run_until(Duration::from_millis(1500));
    say(&mut sim, 0, "hello room", None, "a1");
    sim.run_for(Duration::from_millis(300));
    say(&mut sim, 1, "hi Ann", None, "b1");
    sim.run_until(Duration::from_secs(4));
    let (ann, bob) = (id(&sim, 0), id(&sim, 1));
    let live = vec![
        (1, ann.clone(), "hello room".to_string(), false),
        (2, bob.clone(), "hi Ann".to_string(), false),
    ];
    assert_eq!(chats(&sim, 0), live, "the sender gets its own copy");
    assert_eq!(chats(&sim, 1), live);
    // Participant 2 joined at 2 s, after both messages: it gets them as history.
    let replay: Vec<_> = live
        .iter()
        .cloned()
        .map(|(i, f, t, _)| (i, f, t, true))
        .collect();
    assert_eq!(chats(&sim, 2), replay);
    // The sender's copy echoes its local id and carries name and time.
    let Some(ServerMessage::Chat {
        local_id,
        name,
        time,
        to,
        ..
    }) = sim.participants()[0].client.chat.front()
    else {
        panic!("no chat message");
    };
    assert_eq!(local_id.as_deref(), Some("a1"));
    assert_eq!(name, "sim-0");
    assert!(*time > 1_600_000_000_000, "Unix ms: {time}");
    assert_eq!(*to, None);
}

#[test]
fn a_private_message_reaches_only_its_recipient_and_the_sender() {
    let mut sim = sim(3, false, Duration::ZERO);
    sim.run_until(Duration::from_secs(1));
    let cy = id(&sim, 2);
    say(&mut sim, 0, "just for Cy", Some(cy.clone()), "p1");
    say(&mut sim, 0, "to nobody", Some("p999".into()), "p2");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(chats(&sim, 0).len(), 1);
    assert_eq!(chats(&sim, 1), vec![], "a bystander sees nothing");
    assert_eq!(chats(&sim, 2)[0].2, "just for Cy");
    let e = errors(&sim, 0);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "unknown_recipient");
    assert!(e[0].1.contains("p999"), "{}", e[0].1);
    assert_eq!(e[0].2.as_deref(), Some("p2"));
}

#[test]
fn size_and_rate_limits_refuse_with_clear_errors() {
    let mut sim = sim(2, false, Duration::ZERO);
    sim.run_until(Duration::from_secs(1));
    say(&mut sim, 0, &"x".repeat(5000), None, "big");
    for k in 0..12 {
        say(&mut sim, 0, &format!("m{k}"), None, &format!("r{k}"));
    }
    sim.run_for(Duration::from_millis(200));
    let e = errors(&sim, 0);
    assert_eq!(e[0].0, "too_long");
    assert!(
        e[0].1.contains("5000 bytes") && e[0].1.contains("4096"),
        "{}",
        e[0].1
    );
    // A burst of 10, then refusals that say when to retry.
    assert_eq!(chats(&sim, 1).len(), 10);
    let limited: Vec<_> = e.iter().filter(|e| e.0 == "rate_limited").collect();
    assert_eq!(limited.len(), 2, "{e:?}");
    assert_eq!(limited[0].2.as_deref(), Some("r10"));
    assert!(limited[0].3.is_some_and(|ms| ms > 0 && ms <= 1000));
    assert!(limited[0].1.contains("wait"), "{}", limited[0].1);
    // After a pause the sender may talk again.
    sim.run_for(Duration::from_secs(2));
    say(&mut sim, 0, "again", None, "later");
    sim.run_for(Duration::from_millis(200));
    assert_eq!(chats(&sim, 1).last().unwrap().2, "again");
}

#[test]
fn an_e2ee_room_refuses_plain_chat_and_relays_key_messages() {
    let mut sim = sim(3, true, Duration::ZERO);
    sim.run_until(Duration::from_secs(1));
    say(&mut sim, 0, "plaintext", None, "plain");
    sim.participant_mut(0)
        .client
        .send_control(&ClientMessage::Chat {
            text: "c2VhbGVk".into(),
            to: None,
            encrypted: true,
            local_id: None,
        });
    let bob = id(&sim, 1);
    sim.participant_mut(0)
        .client
        .send_control(&ClientMessage::Key {
            to: None,
            data: "hello-from-ann".into(),
        });
    sim.participant_mut(0)
        .client
        .send_control(&ClientMessage::Key {
            to: Some(bob.clone()),
            data: "wrapped-for-bob".into(),
        });
    sim.run_for(Duration::from_secs(1));
    let e = errors(&sim, 0);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "encryption_required");
    assert_eq!(chats(&sim, 1)[0].2, "c2VhbGVk");
    let keys = |i: usize| -> Vec<String> {
        sim.participants()[i]
            .client
            .chat
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Key { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(keys(0), Vec::<String>::new(), "the sender gets no copy");
    assert_eq!(keys(1), vec!["hello-from-ann", "wrapped-for-bob"]);
    assert_eq!(keys(2), vec!["hello-from-ann"]);
}

#[test]
fn key_messages_are_refused_in_a_normal_room() {
    let mut sim = sim(2, false, Duration::ZERO);
    sim.run_until(Duration::from_secs(1));
    sim.participant_mut(0)
        .client
        .send_control(&ClientMessage::Key {
            to: None,
            data: "x".into(),
        });
    sim.run_for(Duration::from_millis(500));
    assert_eq!(errors(&sim, 0)[0].0, "not_encrypted_room");
    assert!(sim.participants()[1].client.chat.is_empty());
}
