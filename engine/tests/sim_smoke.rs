use std::time::Duration;

use piazza::sim::{SimConfig, Simulator};

#[test]
fn four_people_exchange_media() {
    let mut sim = Simulator::new(SimConfig::new(4)).unwrap();
    sim.run_until(Duration::from_secs(3));
    assert!(sim.join_failures().is_empty(), "{:?}", sim.join_failures());
    for (i, p) in sim.participants().iter().enumerate() {
        let s = p.client.stats();
        println!(
            "client {i}: connected {:?} sent {} slots {:?}",
            p.client.connected_at().map(|t| t - sim.start()),
            s.packets_sent,
            s.slots
                .iter()
                .map(|s| (s.mid.clone(), s.packets, s.lost(), s.frames))
                .collect::<Vec<_>>()
        );
    }
    let st = sim.core().stats();
    println!("core {st:?} busy {:?}", sim.core_busy());
    for p in sim.participants() {
        let s = p.client.stats();
        let video_with_media = s.slots.iter().filter(|s| s.video && s.packets > 0).count();
        let audio_with_media = s.slots.iter().filter(|s| !s.video && s.packets > 0).count();
        assert_eq!(video_with_media, 3);
        assert_eq!(audio_with_media, 3);
    }
}
