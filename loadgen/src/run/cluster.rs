//! The load generator against a Piazza cluster (`--target URL,URL,...`,
//! docs/cluster.md): per-node figures, and the rejoins of participants
//! whose session was lost (`--rejoin`), with how long each took.

use serde::Serialize;

use crate::metrics::ParticipantResult;

/// One node of the target, as the load generator saw it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct NodeReport {
    /// Its base URL (as given in `--target`).
    pub url: String,
    /// Its cluster node id (`/healthz`), when it said.
    pub node: Option<String>,
    /// Rooms it hosted when the measurement window opened.
    pub rooms: u64,
    /// Participants it hosted when the measurement window opened.
    pub participants: u64,
    /// Rooms it hosted at the end (`None`: it did not answer).
    pub rooms_at_end: Option<u64>,
    /// Participants it hosted at the end (`None`: it did not answer).
    pub participants_at_end: Option<u64>,
    /// RTP packets it forwarded per second in the window (up to its last
    /// answer, if it stopped answering).
    pub egress_pps: f64,
    /// CPU seconds per second its process used in the window.
    pub cpu_cores: f64,
    /// Initial joins and rejoins sent through this node.
    pub joins_sent: u64,
    /// Answered `/metrics` at the end of the run.
    pub up_at_end: bool,
}

/// One lost session and its rejoin.
#[derive(Debug, Clone, Serialize)]
pub struct RejoinRecord {
    /// Room index.
    pub room: usize,
    /// Why the session was over (`silent`, `ice_closed`, `closing: ...`).
    pub reason: String,
    /// Seconds after the run started when it last received a datagram.
    pub lost_at_s: f64,
    /// Last datagram to the load generator noticing the loss, seconds.
    pub noticed_s: f64,
    /// Join attempts until one was admitted (or given up).
    pub attempts: u32,
    /// Last datagram to the rejoin's `201`, seconds (`None`: never).
    pub rejoined_s: Option<f64>,
    /// Last datagram to the new session's ICE + DTLS connected, seconds.
    pub connected_s: Option<f64>,
    /// Last datagram to the new session's first complete video frame in
    /// each slot that had a publisher to show, seconds (`None` too when
    /// nobody was there to show: the first back in its room).
    pub media_s: Option<f64>,
    /// The node the rejoin went through.
    pub via: Option<String>,
    /// The last refusal, when it never rejoined.
    pub error: Option<String>,
    /// The new session's publisher number (to find its join outcome).
    #[serde(skip)]
    pub publisher: Option<u32>,
}

/// Rejoins summed up.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RejoinReport {
    /// Sessions lost.
    pub lost: usize,
    /// Of those, rejoined.
    pub rejoined: usize,
    /// Of those, not rejoined (given up after a minute, a refusal that
    /// retrying cannot fix, or the run ended first).
    pub failed: usize,
    /// Last datagram to the rejoin's `201`: median and largest, seconds.
    pub rejoined_s_p50: Option<f64>,
    /// See `rejoined_s_p50`.
    pub rejoined_s_max: Option<f64>,
    /// Last datagram to media again (first frame): median and largest, seconds.
    pub media_s_p50: Option<f64>,
    /// See `media_s_p50`.
    pub media_s_max: Option<f64>,
    /// Every lost session, in the order they were noticed.
    pub sessions: Vec<RejoinRecord>,
}

impl RejoinReport {
    /// Sum up `sessions`, taking each new session's connect and first-frame
    /// times from the join outcomes in `participants`.
    pub fn new(mut sessions: Vec<RejoinRecord>, participants: &[ParticipantResult]) -> Self {
        for r in &mut sessions {
            let (Some(publisher), Some(rejoined)) = (r.publisher, r.rejoined_s) else {
                continue;
            };
            let Some(p) = participants
                .iter()
                .find(|p| p.room == r.room && p.publisher == publisher)
            else {
                continue;
            };
            // The join outcome counts from the request; the request went
            // out at most the join's own duration before the 201.
            let requested = p.join_at_s - r.lost_at_s;
            r.connected_s = p.join_ms.map(|ms| (requested + ms / 1000.0).max(rejoined));
            r.media_s = p
                .first_frame_ms
                .map(|ms| (requested + ms / 1000.0).max(rejoined));
        }
        let median_max = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v.get(v.len() / 2).copied(), v.last().copied())
        };
        let (rejoined_s_p50, rejoined_s_max) =
            median_max(sessions.iter().filter_map(|r| r.rejoined_s).collect());
        let (media_s_p50, media_s_max) =
            median_max(sessions.iter().filter_map(|r| r.media_s).collect());
        let rejoined = sessions.iter().filter(|r| r.rejoined_s.is_some()).count();
        RejoinReport {
            lost: sessions.len(),
            rejoined,
            failed: sessions.len() - rejoined,
            rejoined_s_p50,
            rejoined_s_max,
            media_s_p50,
            media_s_max,
            sessions,
        }
    }
}

/// The cluster section of the report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClusterReport {
    /// Every node of the target, in `--target` order.
    pub nodes: Vec<NodeReport>,
    /// Lost sessions and their rejoins (`--rejoin`).
    pub rejoins: Option<RejoinReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lost_at_s: f64, rejoined_s: Option<f64>, publisher: u32) -> RejoinRecord {
        RejoinRecord {
            room: 0,
            reason: "silent".into(),
            lost_at_s,
            noticed_s: 3.0,
            attempts: 1,
            rejoined_s,
            connected_s: None,
            media_s: None,
            via: None,
            error: None,
            publisher: Some(publisher),
        }
    }

    #[test]
    fn rejoin_times_count_from_the_last_datagram() {
        let participants = vec![ParticipantResult {
            room: 0,
            publisher: 7,
            transport: crate::metrics::Transport::Udp,
            join_at_s: 14.0,
            join_ms: Some(300.0),
            first_frame_ms: Some(900.0),
            expected_videos: 1,
            first_frame_missing: false,
            layer_frames: [0; 3],
        }];
        let r = RejoinReport::new(
            vec![record(10.0, Some(4.2), 7), record(10.0, None, 8)],
            &participants,
        );
        assert_eq!((r.lost, r.rejoined, r.failed), (2, 1, 1));
        assert_eq!(r.rejoined_s_max, Some(4.2));
        let s = &r.sessions[0];
        assert!((s.connected_s.unwrap() - 4.3).abs() < 1e-9);
        assert!((s.media_s.unwrap() - 4.9).abs() < 1e-9);
        assert_eq!(r.media_s_p50, Some(s.media_s.unwrap()));
        assert_eq!(r.sessions[1].media_s, None);
    }
}
