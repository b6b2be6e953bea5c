//! Lost sessions (`Scenario::rejoin`): noticed by the driver threads,
//! taken off their positions, and joined again with their participant
//! tokens on a backoff schedule.

use std::time::{Duration, Instant};

use super::{LATE_JOIN_CUTOFF, MemberId, Orchestrator};
use crate::run::cluster::RejoinRecord;
use crate::run::driver::{Command, Lost};

/// A lost session's rejoin is retried this long after it was noticed,
/// then given up.
const REJOIN_GIVE_UP: Duration = Duration::from_secs(60);
/// Waits between a lost session's join attempts: quick first tries, then
/// every 3 s (the browser client's schedule, docs/cluster.md).
const REJOIN_BACKOFF_MS: [u64; 4] = [0, 500, 1000, 2000];
/// The wait after the attempts of `REJOIN_BACKOFF_MS`.
const REJOIN_RETRY: Duration = Duration::from_secs(3);

/// A lost session waiting for its rejoin.
pub(super) struct PendingRejoin {
    room: usize,
    position: usize,
    id: MemberId,
    noticed: Instant,
    pub(super) next_try: Instant,
    pub(super) record: RejoinRecord,
}

impl Orchestrator<'_> {
    /// Take the sessions the drivers found lost: each leaves its position
    /// (its client is closed and measured up to now) and waits for its
    /// rejoin.
    pub(super) fn take_lost(&mut self, t0: Instant) {
        let Some(rx) = &self.lost else {
            return;
        };
        let lost: Vec<Lost> = rx.try_iter().collect();
        for l in lost {
            let found = self.rooms.iter().enumerate().find_map(|(r, room)| {
                room.positions
                    .iter()
                    .position(|m| m.as_ref().is_some_and(|m| m.key == l.key))
                    .map(|p| (r, p))
            });
            let Some((r, p)) = found else {
                continue; // It left meanwhile (churn).
            };
            let Some(m) = self.rooms[r].positions[p].take() else {
                continue;
            };
            self.drivers[m.driver].send(Command::Remove(m.key));
            let since = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
            self.pending_rejoins.push(PendingRejoin {
                room: r,
                position: p,
                id: m.id,
                noticed: l.noticed,
                next_try: l.noticed,
                record: RejoinRecord {
                    room: r,
                    reason: l.reason,
                    lost_at_s: since(l.last_rx),
                    noticed_s: l.noticed.saturating_duration_since(l.last_rx).as_secs_f64(),
                    attempts: 0,
                    rejoined_s: None,
                    connected_s: None,
                    media_s: None,
                    via: None,
                    error: None,
                    publisher: None,
                },
            });
        }
    }

    /// Try the rejoins that are due; a refusal that may pass is retried
    /// (`REJOIN_BACKOFF_MS`, then every `REJOIN_RETRY`) for
    /// `REJOIN_GIVE_UP`, none starts in the run's last seconds.
    pub(super) fn rejoin_due(&mut self, t0: Instant, end: Instant) {
        let mut i = 0;
        while i < self.pending_rejoins.len() {
            let now = Instant::now();
            if self.pending_rejoins[i].next_try > now || now + LATE_JOIN_CUTOFF >= end {
                i += 1;
                continue;
            }
            let mut p = self.pending_rejoins.swap_remove(i);
            p.record.attempts += 1;
            match self.join_as(p.room, p.position, Some(&p.id)) {
                Ok((via, publisher)) => {
                    let lost_at = t0 + Duration::from_secs_f64(p.record.lost_at_s);
                    p.record.rejoined_s =
                        Some(Instant::now().duration_since(lost_at).as_secs_f64());
                    p.record.via = via;
                    p.record.publisher = Some(publisher);
                    p.record.error = None;
                    self.rejoins.push(p.record);
                }
                Err((retry, e)) => {
                    let attempt = p.record.attempts as usize;
                    p.record.error = Some(e);
                    let now = Instant::now();
                    if retry && now < p.noticed + REJOIN_GIVE_UP {
                        p.next_try = now
                            + REJOIN_BACKOFF_MS
                                .get(attempt)
                                .map_or(REJOIN_RETRY, |ms| Duration::from_millis(*ms));
                        self.pending_rejoins.push(p);
                    } else {
                        self.rejoins.push(p.record);
                    }
                }
            }
        }
    }
}
