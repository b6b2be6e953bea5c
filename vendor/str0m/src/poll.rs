//! Readiness signalling threaded through the component tree.
//!
//! Everything below [`Rtc`][crate::Rtc] forms a tree, and both events and new
//! timeouts bubble up from the leaves. To avoid re-walking a quiescent tree on
//! every `poll_output`, each path that takes `&mut` access to a sub-component
//! is handed an armed [`Wake`] guard, threaded down like `&mut` state.
//!
//! A [`Wake`] defaults to re-polling *everything*: left untouched it signals
//! both a pending event drain and a timeout recompute. A component narrows it
//! locally — [`Wake::no_events`] / [`Wake::no_timeout`] — when it knows less
//! changed. The guard folds its (possibly narrowed) signal into the owning
//! [`Readiness`] on drop.
//!
//! The direction is deliberate: the safe default is to re-poll, and narrowing
//! is an opt-in optimization owned by the component that performed the
//! mutation. A forgotten narrowing or an over-broad wake costs at most one redundant
//! poll; it can never drop output. No component names another's scope, and
//! `Rtc` holds no knowledge of which mutation affects what.
//!
//! The app-facing API wrappers ([`DirectApi`][crate::change::DirectApi],
//! [`SdpApi`][crate::change::SdpApi], [`Channel`][crate::channel::Channel],
//! [`Bwe`][crate::bwe::Bwe]) hold an [`RtcMut`] instead of `&mut Rtc`. It arms
//! the readiness on *mutable* deref only, so a `&mut self` method that mutates
//! re-polls the tree while a `&self` reader never does — and neither has to
//! remember to call anything.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use crate::Rtc;

/// A `&mut Rtc` handle that re-polls the tree when it is used mutably.
///
/// Change detection, à la a dirty-flag on mutable access: `deref` is a plain
/// read and never arms; `deref_mut` arms both halves (the safe default).
/// Because a `&self` method can only reach `deref` and a mutating `&mut self`
/// method reaches `deref_mut`, "mutation re-polls, reads don't" is enforced by
/// the borrow checker — a new method can't forget, and a read-only method
/// can't accidentally arm.
///
/// Deliberately has no `Drop`: the API wrappers are held in `let` bindings
/// across other `Rtc` use, and a destructor would extend their borrow to the
/// end of scope. Arming therefore happens eagerly on the mutable access.
///
/// When a mutation only affects one half of the re-poll — and especially when
/// that isn't known until the mutation is underway — take it through
/// [`RtcMut::mutate`] and narrow the returned [`Mutation`] guard.
pub(crate) struct RtcMut<'a> {
    rtc: &'a mut Rtc,
}

impl<'a> RtcMut<'a> {
    pub(crate) fn new(rtc: &'a mut Rtc) -> Self {
        RtcMut { rtc }
    }

    /// Begin a mutation whose re-poll can be narrowed *after the fact*.
    ///
    /// The returned [`Mutation`] derefs to `Rtc`, so mutate through it, then
    /// (optionally, conditionally) call [`Mutation::no_events`] /
    /// [`Mutation::no_timeout`]. It folds its own — per-operation, never shared
    /// — signal into the readiness when it drops.
    ///
    /// Plain `&mut *` (via [`DerefMut`]) is the shorthand for "arm both": it's
    /// what methods that don't narrow, or that return a `&mut` borrowed from
    /// the tree (which can't outlive a guard), use instead.
    pub(crate) fn mutate(&mut self) -> Mutation<'_> {
        Mutation {
            rtc: self.rtc,
            events: true,
            timeout: true,
        }
    }

    /// Mutable access for a change confined to the send streams' queues.
    ///
    /// For `&mut StreamTx` handed to the application: its public `&mut`
    /// methods (`write_rtp`, `set_unpaced`, `set_rtx_cache`) only queue
    /// packets or change how the queue is paced and cached. Re-polls like
    /// [`DerefMut`], but keeps the other components' deadlines valid (see
    /// [`Wake::send_queues_only`]).
    pub(crate) fn send_queues(&mut self) -> &mut Rtc {
        let mut wake = self.rtc.readiness.wake();
        wake.send_queues_only();
        drop(wake);
        self.rtc
    }
}

impl Deref for RtcMut<'_> {
    type Target = Rtc;

    fn deref(&self) -> &Rtc {
        self.rtc
    }
}

impl DerefMut for RtcMut<'_> {
    fn deref_mut(&mut self) -> &mut Rtc {
        self.rtc.readiness.wake();
        self.rtc
    }
}

/// A single mutation in progress, obtained from [`RtcMut::mutate`].
///
/// Derefs to `Rtc` for the actual change. Armed for both halves by default;
/// narrow with [`Mutation::no_events`] / [`Mutation::no_timeout`] at any point
/// before it drops — including conditionally, once the mutation has revealed
/// which half it touched. Folds the (possibly narrowed) signal into the
/// readiness on drop.
///
/// The signal is private to this one guard, so narrowing here can never
/// interfere with another method call's decision regardless of call order —
/// the property a long-lived shared guard could not offer.
pub(crate) struct Mutation<'a> {
    rtc: &'a mut Rtc,
    events: bool,
    timeout: bool,
}

impl Mutation<'_> {
    /// Assert this mutation queued no event or transmit.
    pub(crate) fn no_events(&mut self) {
        self.events = false;
    }

    /// Assert this mutation moved no timer.
    pub(crate) fn no_timeout(&mut self) {
        self.timeout = false;
    }
}

impl Deref for Mutation<'_> {
    type Target = Rtc;

    fn deref(&self) -> &Rtc {
        self.rtc
    }
}

impl DerefMut for Mutation<'_> {
    fn deref_mut(&mut self) -> &mut Rtc {
        self.rtc
    }
}

impl Drop for Mutation<'_> {
    fn drop(&mut self) {
        let mut wake = self.rtc.readiness.wake();
        if !self.events {
            wake.no_events();
        }
        if !self.timeout {
            wake.no_timeout();
        }
    }
}

/// The accumulated re-poll signal owned by [`Rtc`][crate::Rtc].
///
/// `poll_output` reads it to decide whether to walk the event pipeline and
/// whether to recompute the next timeout, clearing each half once it has
/// proven that part of the tree quiescent.
#[derive(Debug)]
pub(crate) struct Readiness {
    events: bool,
    /// Whether the event sources (ICE and DTLS events, SCTP, the session's
    /// events, stats) must be asked again. Armed with `events`; cleared once
    /// they have all answered nothing, while the transmit sources after them
    /// may still have datagrams to give. Only `poll_output` itself runs
    /// between the two, so sending what it found need not re-walk the event
    /// sources (see `Rtc::do_poll_output`).
    sources: bool,
    timeout: bool,
    /// Until this instant an `Input::Timeout` finds no report, request or
    /// NACK due: the session's report deadline last computed by
    /// `Rtc::poll_timeout`, kept while every mutation since left the
    /// session's stream deadlines where they were (writes to send streams,
    /// RTCP and STUN received, timeouts before it, see
    /// [`Wake::stream_deadlines_unmoved`]). Any other mutation that may move
    /// a timer clears it.
    quiet_until: Option<Instant>,
}

impl Readiness {
    /// A fresh instance must poll the whole tree once.
    pub(crate) fn armed() -> Self {
        Readiness {
            events: true,
            sources: true,
            timeout: true,
            quiet_until: None,
        }
    }

    pub(crate) fn wants_events(&self) -> bool {
        self.events
    }

    pub(crate) fn wants_sources(&self) -> bool {
        self.sources
    }

    /// Every event source answered nothing since the last mutation.
    pub(crate) fn clear_sources(&mut self) {
        self.sources = false;
    }

    /// The output pipeline itself queued something an event source reports.
    pub(crate) fn arm_sources(&mut self) {
        self.sources = true;
    }

    pub(crate) fn wants_timeout(&self) -> bool {
        self.timeout
    }

    pub(crate) fn clear_events(&mut self) {
        self.events = false;
        self.sources = false;
    }

    pub(crate) fn clear_timeout(&mut self) {
        self.timeout = false;
    }

    /// Whether a timeout at `now` comes before anything outside the send
    /// queues and the pacer is due.
    #[cfg(test)]
    pub(crate) fn is_quiet_at(&self, now: Instant) -> bool {
        self.quiet_until_after(now).is_some()
    }

    /// The deadline, if a timeout at `now` comes before it.
    pub(crate) fn quiet_until_after(&self, now: Instant) -> Option<Instant> {
        self.quiet_until.filter(|q| now < *q)
    }

    /// Whether every mutation since the last `Rtc::poll_timeout` was confined
    /// to the send queues, or was a timeout before the deadline: the
    /// session's stream deadlines it computed still hold.
    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet_until.is_some()
    }

    /// Record the deadline just computed from the whole tree.
    pub(crate) fn set_quiet_until(&mut self, deadline: Instant) {
        self.quiet_until = Some(deadline);
    }

    /// Forget the deadline: the next timeout drives every component.
    pub(crate) fn clear_quiet_until(&mut self) {
        self.quiet_until = None;
    }

    /// Hand out an armed guard for a mutable descent into the tree.
    pub(crate) fn wake(&mut self) -> Wake<'_> {
        Wake {
            readiness: self,
            events: true,
            timeout: true,
            keeps_quiet: false,
        }
    }
}

/// An armed guard threaded into a component's mutating methods.
///
/// Narrowed locally by the component and folded into [`Readiness`] on drop.
/// See the [module docs][self].
///
/// Dropping it immediately (e.g. `self.rtc.readiness.wake();`) is the
/// conservative default: it re-polls everything. Narrow first to do less.
pub(crate) struct Wake<'a> {
    readiness: &'a mut Readiness,
    events: bool,
    timeout: bool,
    /// The report deadline (`Readiness::quiet_until`) and the session's
    /// stream deadlines survive this mutation.
    keeps_quiet: bool,
}

impl Wake<'_> {
    /// Assert this path queued no event or transmit, so the event pipeline
    /// need not be walked on its behalf.
    pub(crate) fn no_events(&mut self) {
        self.events = false;
    }

    /// Assert this path did not move any timer, so the next timeout need not
    /// be recomputed on its behalf.
    pub(crate) fn no_timeout(&mut self) {
        self.timeout = false;
    }

    /// Assert this path changed only what the send streams' queues hold or
    /// how they are paced: the next timeout must be recomputed (new packets
    /// need a timestamp and the pacer's attention), but no other component's
    /// deadline moved, so a timeout before it need not drive them.
    pub(crate) fn send_queues_only(&mut self) {
        self.keeps_quiet = true;
    }

    /// Assert this path moved none of the session's stream deadlines (the
    /// receiver and sender reports, keyframe and REMB requests, NACK round
    /// and receive stream pause checks, see `session::StreamDeadlines`) and
    /// listed every send stream it wrote to: other timers may have moved and
    /// are recomputed, but a timeout before the report deadline need not ask
    /// the streams for reports.
    pub(crate) fn stream_deadlines_unmoved(&mut self) {
        self.keeps_quiet = true;
    }
}

impl Drop for Wake<'_> {
    fn drop(&mut self) {
        self.readiness.events |= self.events;
        self.readiness.sources |= self.events;
        self.readiness.timeout |= self.timeout;
        if self.timeout && !self.keeps_quiet {
            self.readiness.quiet_until = None;
        }
    }
}

#[cfg(test)]
impl Readiness {
    pub(crate) fn idle() -> Self {
        Self {
            events: false,
            sources: false,
            timeout: false,
            quiet_until: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bwe::Bitrate;
    use crate::crypto::dtls::{KeyingMaterial, SrtpProfile};
    use crate::media::MediaKind;
    use crate::{Input, Output};
    use std::time::Instant;

    fn idle_rtc() -> Rtc {
        idle_rtc_with(false)
    }

    fn idle_rtc_with(raw_packets: bool) -> Rtc {
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .enable_bwe(Some(Bitrate::kbps(300)))
            .enable_raw_packets(raw_packets)
            .build(now);
        let profile = SrtpProfile::AEAD_AES_128_GCM;
        let mat = KeyingMaterial::new(&vec![0; profile.keying_material_len()]);
        rtc.session
            .set_keying_material(mat, crate::crypto::test_default_provider(), profile, true);
        rtc.direct_api()
            .declare_media("vid".into(), MediaKind::Video);
        rtc.direct_api()
            .declare_stream_tx(42.into(), None, "vid".into(), None);
        rtc.handle_input(Input::Timeout(now)).unwrap();
        while !matches!(rtc.poll_output().unwrap(), Output::Timeout(_)) {}
        assert!(!rtc.readiness.wants_events());
        assert!(!rtc.readiness.wants_timeout());
        rtc
    }

    #[test]
    fn readiness_bwe_set_bitrate_only_wakes_timeout() {
        let mut rtc = idle_rtc();
        rtc.bwe().set_bitrate(Bitrate::kbps(100), Bitrate::mbps(2));
        assert!(!rtc.readiness.wants_events());
        assert!(rtc.readiness.wants_timeout());
        assert!(
            rtc.session.poll_event().is_none(),
            "no hidden event behind the narrowed flag"
        );
        let expected = rtc.poll_timeout();
        assert!(matches!(rtc.poll_output().unwrap(), Output::Timeout(at) if at == expected));
    }

    #[test]
    fn readiness_bwe_reset_only_wakes_timeout() {
        let mut rtc = idle_rtc();
        rtc.bwe().reset(Bitrate::kbps(900));
        assert!(!rtc.readiness.wants_events());
        assert!(rtc.readiness.wants_timeout());
        assert!(
            rtc.session.poll_event().is_none(),
            "reset produces estimates on a later timeout"
        );
        let expected = rtc.poll_timeout();
        assert!(matches!(rtc.poll_output().unwrap(), Output::Timeout(at) if at == expected));
    }

    #[test]
    fn readiness_outgoing_app_feedback_only_wakes_events() {
        let mut rtc = idle_rtc();
        let before = rtc.session.poll_timeout(false);
        rtc.direct_api()
            .send_app_specific_feedback(42.into(), 43.into(), vec![1, 2, 3, 4]);
        assert!(rtc.readiness.wants_events());
        assert!(!rtc.readiness.wants_timeout());
        assert_eq!(rtc.session.poll_timeout(false), before);
        assert!(
            rtc.session.poll_datagram(rtc.last_now).is_some(),
            "queued feedback must be sendable without a timeout"
        );
    }

    #[test]
    fn readiness_api_narrowing_preserves_other_mutations() {
        for feedback_first in [false, true] {
            let mut rtc = idle_rtc();
            if feedback_first {
                rtc.direct_api()
                    .send_app_specific_feedback(42.into(), 43.into(), vec![1, 2, 3, 4]);
                rtc.bwe().reset(Bitrate::kbps(900));
            } else {
                rtc.bwe().reset(Bitrate::kbps(900));
                rtc.direct_api()
                    .send_app_specific_feedback(42.into(), 43.into(), vec![1, 2, 3, 4]);
            }
            assert!(rtc.readiness.wants_events());
            assert!(rtc.readiness.wants_timeout());
        }
    }

    #[test]
    fn narrowing_preserves_other_operations() {
        for events in [false, true] {
            for timeout in [false, true] {
                let mut readiness = Readiness {
                    events,
                    sources: events,
                    timeout,
                    quiet_until: None,
                };
                {
                    let mut wake = readiness.wake();
                    wake.no_events();
                    wake.no_timeout();
                }
                assert_eq!(readiness.wants_events(), events);
                assert_eq!(readiness.wants_timeout(), timeout);
            }
        }
    }

    /// Writing to a send stream keeps the deadline of the last drain as the
    /// bound before which a timeout drives only the send queues and the
    /// pacer, and so does a timeout before it; any other mutation that may
    /// move a timer forgets it, and so does a timeout at or after it until
    /// the next drain.
    #[test]
    fn readiness_only_send_stream_writes_keep_the_quiet_deadline() {
        use crate::streams::RtpWrite;

        let mut rtc = idle_rtc();
        // The stream's first timeout learnt its kind, which makes its first
        // sender report due; let it go.
        let now = rtc.last_now;
        rtc.handle_input(Input::Timeout(now)).unwrap();
        while !matches!(rtc.poll_output().unwrap(), Output::Timeout(_)) {}
        let deadline = rtc.session.reports_at();
        assert!(deadline > now, "the idle rtc has no report due");
        assert!(rtc.readiness.is_quiet_at(now));
        assert!(!rtc.readiness.is_quiet_at(deadline));

        let pt = video_pt(&rtc);
        {
            let mut api = rtc.direct_api();
            let tx = api.stream_tx(&42.into()).unwrap();
            tx.write_rtp(RtpWrite::new(pt, 0.into(), 0, now, vec![0_u8; 100]));
        }
        assert!(rtc.readiness.wants_timeout(), "the pacer must see the packet");
        assert!(rtc.readiness.is_quiet_at(now));

        rtc.handle_input(Input::Timeout(now)).unwrap();
        assert!(rtc.readiness.is_quiet_at(now), "an early timeout keeps it");
        while !matches!(rtc.poll_output().unwrap(), Output::Timeout(_)) {}
        assert!(rtc.readiness.is_quiet_at(now), "the drain's deadline");
        assert_eq!(rtc.session.reports_at(), deadline, "kept stream deadlines");

        rtc.bwe().set_bitrate(Bitrate::kbps(100), Bitrate::mbps(2));
        assert!(!rtc.readiness.is_quiet_at(now), "other mutations forget it");
        while !matches!(rtc.poll_output().unwrap(), Output::Timeout(_)) {}
        assert!(rtc.readiness.is_quiet_at(now), "a full drain sets it again");

        rtc.handle_input(Input::Timeout(deadline)).unwrap();
        assert!(
            !rtc.readiness.is_quiet_at(now),
            "a timeout at the deadline forgets it"
        );
    }

    /// A timeout before the deadline, after packets were written, sends the
    /// same datagrams and asks for the same next timeout as one that drives
    /// every component.
    #[test]
    fn early_timeout_after_writes_matches_a_full_timeout() {
        use crate::streams::RtpWrite;
        use std::time::Duration;

        let mut runs = vec![];
        for full in [false, true] {
            let mut rtc = idle_rtc();
            rtc.send_addr = Some(crate::SendAddr {
                proto: crate::net::Protocol::Udp,
                source: "127.0.0.1:1000".parse().unwrap(),
                destination: "127.0.0.1:2000".parse().unwrap(),
            });
            let start = rtc.last_now;
            let pt = video_pt(&rtc);
            let mut out = vec![];
            let mut quiet = 0;
            let mut sent = 0;
            for round in 0..20_u64 {
                let now = start + Duration::from_millis(3 * round);
                {
                    let mut api = rtc.direct_api();
                    let tx = api.stream_tx(&42.into()).unwrap();
                    for i in 0..3 {
                        let seq = round * 3 + i;
                        tx.write_rtp(RtpWrite::new(pt, seq.into(), 0, now, vec![7_u8; 600]));
                    }
                }
                if full {
                    rtc.readiness.clear_quiet_until();
                }
                if rtc.readiness.is_quiet_at(now) {
                    quiet += 1;
                }
                rtc.handle_input(Input::Timeout(now)).unwrap();
                loop {
                    match rtc.poll_output().unwrap() {
                        Output::Transmit(t) => {
                            sent += 1;
                            // Both carry the wall clock of each Rtc's own
                            // start (SR, abs-send-time, and the SRTP tag over
                            // them): compare the size, and for RTP which
                            // packet (payload type, sequence number, SSRC).
                            let c = &t.contents;
                            let rtcp = c.get(1).is_some_and(|pt| (200..=206).contains(pt));
                            let mut id = c.len().to_be_bytes().to_vec();
                            if !rtcp {
                                id.extend_from_slice(&c[..4]);
                                id.extend_from_slice(&c[8..12]);
                            }
                            out.push((round, id))
                        }
                        Output::Event(_) => {}
                        Output::Timeout(at) => {
                            out.push((round, format!("{:?}", at - start).into_bytes()));
                            break;
                        }
                    }
                }
            }
            assert_eq!(quiet > 0, !full, "early timeouts: {quiet}");
            assert!(sent >= 10, "the writes were sent: {sent}");
            runs.push(out);
        }
        let first_difference = runs[0]
            .iter()
            .zip(&runs[1])
            .position(|(a, b)| a != b)
            .map(|i| (i, &runs[0][i].0, runs[0][i].1.len(), runs[1][i].1.len()));
        assert_eq!(first_difference, None, "at (index, round, len, len)");
        assert_eq!(runs[0].len(), runs[1].len());
    }

    fn video_pt(rtc: &Rtc) -> crate::rtp_::Pt {
        rtc.codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec.is_video())
            .map(|p| p.pt())
            .unwrap()
    }

    /// Sending a datagram the drain found does not make the next poll ask
    /// the event sources again, unless sending queued an event itself (raw
    /// packet capture), which must still be delivered.
    #[test]
    fn readiness_sending_rewalks_event_sources_only_for_raw_packets() {
        use crate::Event;
        use crate::rtp::RawPacket;
        use crate::streams::RtpWrite;
        use std::time::Duration;

        for raw in [false, true] {
            let mut rtc = idle_rtc_with(raw);
            rtc.send_addr = Some(crate::SendAddr {
                proto: crate::net::Protocol::Udp,
                source: "127.0.0.1:1000".parse().unwrap(),
                destination: "127.0.0.1:2000".parse().unwrap(),
            });
            let now = rtc.last_now;
            let pt = rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec.is_video())
                .map(|p| p.pt())
                .unwrap();
            {
                let mut api = rtc.direct_api();
                let tx = api.stream_tx(&42.into()).unwrap();
                for i in 0..3_u64 {
                    tx.write_rtp(RtpWrite::new(pt, i.into(), 0, now, vec![0_u8; 100]));
                }
            }
            rtc.handle_input(Input::Timeout(now + Duration::from_millis(1)))
                .unwrap();
            let (mut sent, mut captured) = (0, 0);
            loop {
                match rtc.poll_output().unwrap() {
                    Output::Transmit(_) => {
                        sent += 1;
                        assert_eq!(
                            rtc.readiness.wants_sources(),
                            raw,
                            "raw {raw}, datagram {sent}"
                        );
                    }
                    Output::Event(Event::RawPacket(p)) => {
                        if matches!(*p, RawPacket::RtpTx(..)) {
                            captured += 1;
                        }
                    }
                    Output::Event(_) => {}
                    Output::Timeout(_) => break,
                }
            }
            assert!(sent >= 3, "raw {raw}: sent {sent}");
            // Every written packet is captured (and only when capturing).
            assert_eq!(captured >= 3, raw, "raw {raw}: captured {captured}");
            assert!(raw || captured == 0);
        }
    }
}
