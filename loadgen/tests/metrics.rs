//! The metric code against hand-computed expectations.

use std::time::{Duration, Instant};

use piazza::sim::client::Arrival;
use piazza::sim::media::Trailer;
use piazza_loadgen::metrics::{
    Collector, FreezeDetector, Jitter, LatencyHistogram, LossCounter, MediaTotals, ParticipantMeter,
};
use piazza_loadgen::report::percentile;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn jitter_follows_rfc3550_a8_by_hand() {
    // Opus, 48 kHz, one packet every 20 ms (960 ticks). Arrivals at 0, 20,
    // 45 and 60 ms: transit differences D = 0, +5 ms, -5 ms = 0, 240, 240
    // ticks in magnitude.
    // J1 = 0; J2 = 0 + (240 - 0)/16 = 15; J3 = 15 + (240 - 15)/16 = 29.0625.
    let t0 = Instant::now();
    let mut j = Jitter::new(48_000);
    j.on_packet(t0, 1000);
    j.on_packet(t0 + ms(20), 1960);
    assert_eq!(j.ticks(), 0.0);
    j.on_packet(t0 + ms(45), 2920);
    assert!((j.ticks() - 15.0).abs() < 1e-9, "{}", j.ticks());
    j.on_packet(t0 + ms(60), 3880);
    assert!((j.ticks() - 29.0625).abs() < 1e-9, "{}", j.ticks());
    // 29.0625 ticks / 48 kHz = 0.60546875 ms.
    let v = j.value().as_secs_f64() * 1000.0;
    assert!((v - 0.605_468_75).abs() < 1e-6, "{v}");
}

#[test]
fn jitter_handles_timestamp_wrap_and_restarts_on_a_new_source() {
    let t0 = Instant::now();
    let mut j = Jitter::new(90_000);
    // 33.333 ms at 90 kHz = 3000 ticks, across the 2^32 wrap: D = 0.
    j.on_packet(t0, u32::MAX - 999);
    j.on_packet(
        t0 + Duration::from_micros(33_333) + Duration::from_nanos(333),
        2000,
    );
    assert!(j.ticks() < 0.01, "{}", j.ticks());
    // A new publisher in the slot: its timestamps jump, but the first
    // packet after restart() contributes no difference.
    j.restart();
    j.on_packet(t0 + ms(40), 123_456_789);
    assert!(j.ticks() < 0.01, "{}", j.ticks());
    // Then 10 ms late against a 3000-tick step: D = 900, J = 900/16 = 56.25.
    j.on_packet(
        t0 + ms(40) + Duration::from_micros(43_333) + Duration::from_nanos(333),
        123_459_789,
    );
    assert!((j.ticks() - 56.25).abs() < 0.01, "{}", j.ticks());
}

#[test]
fn loss_counts_expected_minus_received_rfc3550_a3() {
    let mut l = LossCounter::default();
    for s in [1, 2, 3, 5, 6, 9] {
        l.on_packet(s);
    }
    // Expected 9 - 1 + 1 = 9, received 6: lost 3 (4, 7, 8).
    let snap = l.snapshot();
    assert_eq!((snap.expected, snap.received, snap.lost()), (9, 6, 3));
    // A late packet fills its hole.
    l.on_packet(7);
    assert_eq!(l.snapshot().lost(), 2);
}

#[test]
fn loss_of_an_interval_and_reordering_before_the_base() {
    let mut l = LossCounter::default();
    for s in [100, 101, 102, 104] {
        l.on_packet(s);
    }
    let start = l.snapshot(); // expected 5, received 4
    for s in [105, 106, 108] {
        l.on_packet(s);
    }
    // End: expected 9, received 7. Interval: expected 4, received 3, lost 1.
    assert_eq!(l.snapshot().since(&start), (4, 1));

    // A packet older than the first one seen lowers the base; no loss.
    let mut r = LossCounter::default();
    r.on_packet(10);
    r.on_packet(9);
    r.on_packet(11);
    let s = r.snapshot();
    assert_eq!((s.expected, s.received, s.lost()), (3, 3, 0));
}

#[test]
fn freeze_needs_max_of_three_times_average_and_average_plus_150ms() {
    let t0 = Instant::now();
    let mut f = FreezeDetector::default();
    let mut t = t0;
    // Six frames 33 ms apart: five delays, average 33 ms, threshold
    // max(99, 183) = 183 ms.
    f.on_frame(t, true);
    for _ in 0..5 {
        t += ms(33);
        assert!(!f.on_frame(t, true));
    }
    // 182 ms is not a freeze.
    t += ms(182);
    assert!(!f.on_frame(t, true));
    assert_eq!(f.freezes, 0);
    // Average is now (5 x 33 + 182) / 6 = 57.83 ms: threshold
    // max(173.5, 207.83) = 207.83 ms. 208 ms is a freeze.
    t += ms(208);
    assert!(f.on_frame(t, true));
    assert_eq!(f.freezes, 1);
    assert_eq!(f.freeze_time, ms(208));
    assert_eq!(f.max_delay, ms(208));
}

#[test]
fn freeze_waits_for_five_delays_and_uses_the_last_thirty() {
    let t0 = Instant::now();
    let mut f = FreezeDetector::default();
    // Four delays only: a 1 s gap is not judged yet.
    let mut t = t0;
    f.on_frame(t, true);
    for _ in 0..3 {
        t += ms(33);
        f.on_frame(t, true);
    }
    t += ms(1000);
    assert!(!f.on_frame(t, true));
    assert_eq!(f.freezes, 0);

    // 30 delays of 100 ms push everything older out of the average:
    // threshold max(300, 250) = 300 ms.
    for _ in 0..30 {
        t += ms(100);
        f.on_frame(t, true);
    }
    t += ms(299);
    assert!(!f.on_frame(t, true));
    // Now the window holds 29 x 100 + 299: average 106.63 ms, threshold
    // 319.9 ms. Outside the measurement window a freeze is not counted.
    t += ms(400);
    assert!(!f.on_frame(t, false));
    assert_eq!(f.freezes, 0);
    t += ms(100);
    f.on_frame(t, true);
    // Average of the last 30: 27 x 100 + 299 + 400 + 100 = 3499 / 30 =
    // 116.6 ms; threshold 350 ms; 351 ms freezes.
    t += ms(351);
    assert!(f.on_frame(t, true));
    assert_eq!((f.freezes, f.freeze_time), (1, ms(351)));
}

#[test]
fn histogram_merge_gives_the_percentiles_of_the_union() {
    let mut a = LatencyHistogram::new();
    let mut b = LatencyHistogram::new();
    for v in 1..=100 {
        a.record(v);
    }
    for v in 101..=200 {
        b.record(v);
    }
    a.merge(&b);
    a.merge(&LatencyHistogram::new());
    let p = a.percentiles();
    // 200 samples 1..=200 us (exact below 2048 with 3 digits): the value
    // with 50 % of samples at or below it is 100, 90 % -> 180, 99 % -> 198,
    // 99.9 % -> 200.
    assert_eq!(p.samples, 200);
    assert_eq!(
        (p.p50, p.p90, p.p99, p.p999, p.max),
        (100, 180, 198, 200, 200)
    );
    assert!((p.mean - 100.5).abs() < 0.01, "{}", p.mean);
}

#[test]
fn nearest_rank_percentile() {
    let v = [10.0, 20.0, 30.0, 40.0];
    assert_eq!(percentile(&v, 0.5), 20.0);
    assert_eq!(percentile(&v, 0.99), 40.0);
    assert_eq!(percentile(&v, 0.25), 10.0);
    assert_eq!(percentile(&[], 0.5), 0.0);
}

fn trailer(publisher: u32, seq: u64, sent: Duration, eof: bool, key: bool) -> Trailer {
    Trailer {
        publisher,
        seq,
        sent_ns: sent.as_nanos() as u64,
        layer: 0,
        track: 1,
        end_of_frame: eof,
        keyframe: key,
    }
}

#[test]
fn participant_meter_latency_loss_switches_and_first_frame() {
    let epoch = Instant::now();
    let t0 = epoch;
    let joined = t0 + ms(100);
    // 2 video slots, 1 audio slot; both videos had a publisher at join.
    let mut m = ParticipantMeter::new(0, 7, joined, 2, 2, 1);
    let mut c = Collector::new(t0, Duration::from_secs(1));
    m.start_window(t0);
    let arrival = |slot: u16, seq: u64, at: Duration, t: Trailer| Arrival {
        slot,
        seq,
        rtp_time: (seq as u32) * 3000,
        at: epoch + at,
        payload_len: 500,
        rtp_len: 520,
        trailer: Some(t),
    };
    // Slot 0: publisher 1, a keyframe completing at 300 ms, then a delta
    // frame; packets sent 2 ms before they arrive.
    m.on_arrival(
        &arrival(0, 10, ms(300), trailer(1, 0, ms(298), true, true)),
        epoch,
        &mut c,
    );
    m.on_arrival(
        &arrival(0, 11, ms(333), trailer(1, 1, ms(331), true, false)),
        epoch,
        &mut c,
    );
    // Seq 12 lost; publisher 2 takes the slot.
    m.on_arrival(
        &arrival(0, 13, ms(366), trailer(2, 0, ms(364), true, true)),
        epoch,
        &mut c,
    );
    // Slot 1: its first keyframe completes at 600 ms.
    m.on_arrival(
        &arrival(1, 50, ms(600), trailer(3, 0, ms(598), true, true)),
        epoch,
        &mut c,
    );

    let r = m.result(Some(joined + ms(40)), t0);
    assert_eq!(r.join_ms, Some(40.0));
    // The second expected video's first keyframe: 600 - 100 = 500 ms.
    assert_eq!(r.first_frame_ms, Some(500.0));
    assert!(!r.first_frame_missing);
    assert!((r.join_at_s - 0.1).abs() < 1e-9);

    let mut totals = MediaTotals::default();
    m.add_totals(t0 + ms(700), &mut totals);
    assert_eq!((totals.expected_window, totals.lost_window), (5, 1));
    assert_eq!(totals.publisher_switches, 1);
    assert_eq!(totals.layer_switches, 0);
    assert_eq!(totals.frames, 4);
    let p = c.latency.percentiles();
    assert_eq!((p.samples, p.p50, p.max), (4, 2000, 2000));
    assert_eq!(c.packets, 4);
}

/// One complete camera frame of `publisher` on `layer` in slot 0.
fn frame(
    m: &mut ParticipantMeter,
    c: &mut Collector,
    epoch: Instant,
    n: u64,
    publisher: u32,
    layer: u8,
) {
    let at = ms(n * 33);
    let mut t = trailer(publisher, n, at, true, n == 0);
    t.layer = layer;
    let a = Arrival {
        slot: 0,
        seq: n,
        rtp_time: (n as u32) * 3000,
        at: epoch + at,
        payload_len: 500,
        rtp_len: 520,
        trailer: Some(t),
    };
    m.on_arrival(&a, epoch, c);
}

#[test]
fn an_engine_paused_slot_is_a_pause_not_a_freeze() {
    let epoch = Instant::now();
    let mut m = ParticipantMeter::new(0, 9, epoch, 1, 1, 0);
    let mut c = Collector::new(epoch, Duration::from_secs(1));
    m.start_window(epoch);
    // Frames 0..=10 every 33 ms on `l` (the last at 330 ms); the engine
    // pauses the slot at 340 ms and resumes it at 2000 ms; frame 61 comes
    // at 2013 ms on `m`.
    for n in 0..=10 {
        frame(&mut m, &mut c, epoch, n, 4, 0);
    }
    m.on_slot_paused(0, true, epoch + ms(340));
    m.on_slot_paused(0, false, epoch + ms(2000));
    frame(&mut m, &mut c, epoch, 61, 4, 1);
    frame(&mut m, &mut c, epoch, 62, 4, 1);
    let mut t = MediaTotals::default();
    m.add_totals(epoch + ms(2100), &mut t);
    assert_eq!(t.freezes, 0, "a pause is not a freeze");
    assert_eq!((t.pauses, t.paused_slots), (1, 1));
    assert_eq!(t.paused_time, ms(1660));
    assert_eq!(t.max_frame_delay, ms(33), "the pause is not a frame gap");
    assert_eq!(t.layer_frames, [11, 2, 0]);
    let r = m.result(None, epoch);
    assert_eq!(r.layer_frames, [11, 2, 0]);
    // The gap is logged with both sides, as a pause.
    assert_eq!(c.gaps.len(), 1);
    let g = &c.gaps[0];
    assert!(g.paused && !g.freeze);
    assert_eq!(
        (g.gap_ms.round(), g.from.clone(), g.to.clone()),
        (1683.0, (4, "l".to_string()), (4, "m".to_string()))
    );
}

#[test]
fn the_same_gap_without_a_pause_is_a_freeze_and_logged() {
    let epoch = Instant::now();
    let mut m = ParticipantMeter::new(0, 9, epoch, 1, 1, 0);
    let mut c = Collector::new(epoch, Duration::from_secs(1));
    m.start_window(epoch);
    for n in 0..=10 {
        frame(&mut m, &mut c, epoch, n, 4, 0);
    }
    frame(&mut m, &mut c, epoch, 61, 5, 0);
    let mut t = MediaTotals::default();
    m.add_totals(epoch + ms(2100), &mut t);
    assert_eq!((t.freezes, t.pauses, t.paused_slots), (1, 0, 0));
    assert_eq!(t.freeze_time, ms(1683));
    let g = &c.gaps[0];
    assert!(g.freeze && !g.paused);
    assert_eq!((g.from.0, g.to.0), (4, 5), "a publisher switch");
}

#[test]
fn a_short_freeze_is_logged_too() {
    let epoch = Instant::now();
    let mut m = ParticipantMeter::new(0, 9, epoch, 1, 1, 0);
    let mut c = Collector::new(epoch, Duration::from_secs(1));
    m.start_window(epoch);
    for n in 0..=10 {
        frame(&mut m, &mut c, epoch, n, 4, 0);
    }
    // 231 ms after frame 10: above max(3 x 33, 33 + 150) ms, below 300 ms.
    frame(&mut m, &mut c, epoch, 17, 4, 0);
    assert_eq!(c.gaps.len(), 1);
    assert!(c.gaps[0].freeze);
    assert_eq!(c.gaps[0].gap_ms.round(), 231.0);
}

#[test]
fn a_slot_paused_before_its_first_frame_is_not_expected() {
    let t0 = Instant::now();
    // Two videos expected at join; the engine pauses slot 1 at once.
    let mut m = ParticipantMeter::new(0, 1, t0, 2, 2, 0);
    let mut c = Collector::new(t0, Duration::from_secs(1));
    m.on_slot_paused(1, true, t0 + ms(5));
    frame(&mut m, &mut c, t0, 0, 3, 0);
    // The engine fills slot 1 five seconds later: still not a first frame
    // the participant waited for.
    m.on_slot_paused(1, false, t0 + ms(5000));
    let late = Arrival {
        slot: 1,
        seq: 1,
        rtp_time: 0,
        at: t0 + ms(5010),
        payload_len: 500,
        rtp_len: 520,
        trailer: Some(trailer(8, 0, ms(5008), true, true)),
    };
    m.on_arrival(&late, t0, &mut c);
    let r = m.result(Some(t0 + ms(10)), t0);
    assert!(!r.first_frame_missing);
    assert_eq!(r.first_frame_ms, Some(0.0));
}

#[test]
fn a_missing_expected_video_is_reported() {
    let t0 = Instant::now();
    let m = ParticipantMeter::new(0, 1, t0, 3, 9, 3);
    let r = m.result(Some(t0 + ms(10)), t0);
    assert_eq!(r.first_frame_ms, None);
    assert!(r.first_frame_missing);
    // The first participant of a room expects no video at join.
    let first = ParticipantMeter::new(0, 0, t0, 0, 9, 3).result(None, t0);
    assert!(!first.first_frame_missing);
    assert_eq!(first.join_ms, None);
}

#[test]
fn collectors_merge_counts_and_series() {
    let t0 = Instant::now();
    let mut a = Collector::new(t0, Duration::from_secs(1));
    let mut b = Collector::new(t0, Duration::from_secs(1));
    a.on_packet(t0 + ms(100), 100, true);
    a.record_latency(t0 + ms(100), 100, true);
    b.on_packet(t0 + ms(1500), 100, true);
    b.record_latency(t0 + ms(1500), 200, true);
    b.on_packet(t0 + ms(1600), 100, false);
    a.merge(&b);
    assert_eq!(a.packets, 2);
    assert_eq!(a.latency.len(), 2);
    let s = a.series(Duration::from_secs(2), &[]);
    assert_eq!(s.t_s, vec![0.0, 1.0]);
    assert_eq!(s.received_pps, vec![1.0, 2.0]);
    // The series keeps 2 significant digits: exact up to 256 us.
    assert_eq!(s.p50_us, vec![100, 200]);
}
