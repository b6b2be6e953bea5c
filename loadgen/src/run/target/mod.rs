//! `--target URL`: an external Piazza server (the reference server of
//! `engine/src/server`) through its HTTP API (`docs/api.md` section 4).
//!
//! The load generator creates its rooms with `POST /v1/rooms` (sending
//! `PIAZZA_API_KEY` from its environment as the bearer when set), joins each
//! simulated client with its SDP offer on `POST /v1/rooms/{room}/participants`
//! with the room's invite token, and applies the SDP answer: the server's
//! ICE host candidate in it is where the client sends its media. Churned
//! participants leave with `DELETE .../participants/{id}` and their own
//! participant token; the rooms are closed with the owner token at the end.
//! The engine's counters (forwarded packets, shard CPU seconds, drops,
//! panics, peak RSS) come from `GET /metrics`.
//!
//! A cluster (`--target URL,URL,...`, docs/cluster.md): each room request
//! goes through the next node in turn, the counters are summed over the
//! nodes, and the report gets per-node figures ([`NodeReport`]). With
//! `Scenario::rejoin`, lost sessions rejoin with their participant tokens
//! (`Backend::rejoin`).
//!
//! HTTP through `ureq` (blocking, plain HTTP/1.1, connections reused). The
//! server must be on this machine: the clients send only to loopback
//! addresses.

use std::time::Duration;

use crate::error::LoadgenError;
use crate::metrics::EngineSample;
use crate::run::cluster::NodeReport;
use crate::run::driver::thread_cpu_time;
use crate::run::embedded::{self, Backend, Counters, MemberId};
use crate::run::{Progress, RunOutcome};
use crate::scenario::Scenario;

mod http;
mod metrics;

pub use http::check_base;
pub(crate) use http::{Http, Response};
use metrics::Metrics;

/// Longest wait for one HTTP exchange (a join waits at most 5 s for a free
/// join slot on the server, then is refused).
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response accepted (a `/metrics` page of a few shards is ~10 KiB).
const MAX_RESPONSE: usize = 4 << 20;

/// An invite link `{base}/r/{room}#t={token}` taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub base: String,
    /// The room id.
    pub room: String,
    /// The invite token.
    pub token: String,
}

/// Parse an invite link as the server prints it (`invite_url`,
/// docs/api.md): `http://HOST:PORT/r/ROOM#t=TOKEN`. A usage error says what
/// is missing.
pub fn parse_invite(url: &str) -> Result<Invite, String> {
    let bad = |why: &str| {
        format!(
            "--invite {url}: {why} (an invite link looks like http://127.0.0.1:8080/r/ROOM#t=TOKEN)"
        )
    };
    let (before, fragment) = url.split_once('#').ok_or_else(|| bad("no #t=TOKEN part"))?;
    let token = fragment
        .split('&')
        .find_map(|kv| kv.strip_prefix("t="))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("no t=TOKEN after #"))?;
    let (base, room) = before
        .rsplit_once("/r/")
        .ok_or_else(|| bad("no /r/ROOM path"))?;
    let room = room.trim_end_matches('/');
    if room.is_empty() || room.contains('/') || room.contains('?') {
        return Err(bad("the room id after /r/ is empty or malformed"));
    }
    let base = check_base(base)?;
    Ok(Invite {
        base,
        room: room.to_string(),
        token: token.to_string(),
    })
}

/// Run the scenario against the server at `url`, or against the nodes of a
/// cluster (`url` is then their base URLs separated by commas).
pub fn run(s: &Scenario, url: &str, progress: &Progress) -> Result<RunOutcome, LoadgenError> {
    let (url, invite) = match &s.invite {
        Some(link) => {
            let i = parse_invite(link).map_err(LoadgenError::InvalidScenario)?;
            (i.base.clone(), Some(i))
        }
        None => (url.to_string(), None),
    };
    let main_cpu_start = thread_cpu_time();
    let urls: Vec<&str> = url.split(',').collect();
    let mut nodes = Vec::with_capacity(urls.len());
    for url in &urls {
        let http = Http::new(url)?;
        let health = http.get_json("/healthz")?;
        let shards = health["shards"].as_u64().ok_or_else(|| {
            LoadgenError::Target(format!(
                "{url}/healthz did not say how many shards the server runs: is this a Piazza server?"
            ))
        })? as usize;
        // `--sfu-pid` names the one server; each node of a cluster is
        // the process listening on its port.
        let pid = s.sfu_pid.filter(|_| urls.len() == 1).or_else(|| {
            crate::run::process::url_port(url).and_then(crate::run::process::listening_pid)
        });
        nodes.push(Node {
            http,
            url: url.to_string(),
            id: health["node"].as_str().map(str::to_string),
            shards,
            pid,
            last: None,
            window: Vec::new(),
            at_window: None,
            joins_sent: 0,
            up: true,
        });
    }
    let mut backend = Server {
        nodes,
        next_node: 0,
        api_key: std::env::var("PIAZZA_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        rooms: Vec::new(),
        invite,
    };
    let pids: Vec<Option<u32>> = backend.nodes.iter().map(|n| n.pid).collect();
    let mut outcome = embedded::drive(s, progress, &mut backend, main_cpu_start);
    match &mut outcome {
        Err(_) => backend.close(),
        Ok(o) => o.notes.push(match pids.as_slice() {
            [Some(p)] => format!(
                "engine CPU: the server process {p}'s utime+stime (/proc/{p}/stat), HTTP and event threads included"
            ),
            [None] => "engine CPU: the shards' own counter (the server's process is not visible to this user; give --sfu-pid)".into(),
            many => format!(
                "engine CPU: the sum over the {} nodes of their processes' utime+stime ({} of them visible here; the shards' own counter for the others), HTTP and event threads included; a node that stopped answering counts up to its last answer",
                many.len(),
                many.iter().filter(|p| p.is_some()).count()
            ),
        }),
    }
    outcome
}

/// A room the load generator created on the server.
struct ServerRoom {
    id: String,
    invite: String,
    /// None: a room joined by its invite link (not ours to close).
    owner: Option<String>,
}

/// One server, or one node of a cluster (one URL of `--target`).
struct Node {
    http: Http,
    url: String,
    /// Its cluster node id (`/healthz`), when it is in a cluster.
    id: Option<String>,
    shards: usize,
    /// Its process (`--sfu-pid`, or the one listening on its port): its
    /// `/proc/PID/stat` CPU time is its engine CPU, measured as for any
    /// other SFU.
    pid: Option<u32>,
    /// Its last reading, kept when it stops answering so that sums over
    /// the nodes never go back.
    last: Option<Counters>,
    /// Its readings when the window opened and the latest fresh one.
    window: Vec<Counters>,
    /// Rooms and participants it hosted when the window opened.
    at_window: Option<(u64, u64)>,
    /// Joins sent through it.
    joins_sent: u64,
    /// Its last `/metrics` request succeeded.
    up: bool,
}

impl Node {
    /// Its counters now.
    fn read(&self) -> Result<Counters, LoadgenError> {
        let text = self.http.get_text("/metrics")?;
        let m = Metrics::parse(&text);
        let cpu = m.sum("piazza_shard_cpu_seconds_total").ok_or_else(|| {
            LoadgenError::Target(format!(
                "{}/metrics has no piazza_shard_cpu_seconds_total: the engine's CPU cannot be measured",
                self.url
            ))
        })?;
        let count = |name: &str| m.sum(name).unwrap_or(0.0) as u64;
        // The whole process (HTTP, event pump and shards), as for Janus;
        // the shards' own figure when the process is not visible.
        let cpu = match self.pid.and_then(crate::run::process::cpu_time) {
            Some(t) => t.as_secs_f64(),
            None => cpu,
        };
        Ok(Counters {
            sample: EngineSample {
                t: Duration::ZERO,
                forwarded: count("piazza_rtp_forwarded_total"),
                rtp_in: count("piazza_rtp_in_total"),
                bytes_out: count("piazza_bytes_out_total"),
                cpu: Duration::from_secs_f64(cpu.max(0.0)),
                sfu_latency: m.forward_latency().unwrap_or_default(),
                latency_untracked: count("piazza_forward_latency_untracked_total"),
                // The server's own figures; its process's when it has none.
                rss_bytes: match m.sum("piazza_process_resident_bytes") {
                    Some(b) => b as u64,
                    None => self
                        .pid
                        .and_then(crate::run::process::rss_bytes)
                        .unwrap_or(0),
                },
                heap_bytes: count("piazza_process_heap_bytes"),
            },
            panics: count("piazza_panics_total"),
            events_dropped: count("piazza_events_dropped_total"),
            send_drops: m.sum_where("piazza_drops_total", "reason=\"send_error\"") as u64
                + m.sum_where("piazza_drops_total", "reason=\"send_would_block\"") as u64,
            // The load generator's clients use UDP against a server.
            tcp: None,
        })
    }

    /// Rooms and participants it hosts now (`/healthz`).
    fn load(&self) -> Option<(u64, u64)> {
        let v = self.http.get_json("/healthz").ok()?;
        Some((v["rooms"].as_u64()?, v["participants"].as_u64()?))
    }
}

/// The external server, or the nodes of a cluster, as a [`Backend`].
struct Server {
    nodes: Vec<Node>,
    /// The node the next room request goes through (round robin).
    next_node: usize,
    api_key: Option<String>,
    rooms: Vec<ServerRoom>,
    /// `--invite`: join this existing room instead of creating one.
    invite: Option<Invite>,
}

/// Whether a join refused with `status` may pass if tried again later: the
/// room is moving (its node died: 503 until the TTL; a forwarded request
/// that found it moved: 421) or the node is busy.
fn retryable(status: u16) -> bool {
    matches!(status, 421 | 429 | 502 | 503 | 504)
}

impl Server {
    fn cluster(&self) -> bool {
        self.nodes.len() > 1
    }

    /// Send a room request through the next node in turn; in a cluster a
    /// node that does not answer is skipped for the next. The response
    /// and the node's index; the transport error if no node answered.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<(Response, usize), LoadgenError> {
        let n = self.nodes.len();
        let mut last = None;
        for _ in 0..n {
            let i = self.next_node % n;
            self.next_node = (i + 1) % n;
            match self.nodes[i].http.request(method, path, headers, body) {
                Ok(res) => return Ok((res, i)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LoadgenError::Target("no node to send to".into())))
    }

    /// A join (`token`: invite or participant token) through the next node.
    fn post_join(
        &mut self,
        room: usize,
        offer: &str,
        name: &str,
        token: &str,
    ) -> Result<(String, MemberId, usize), (bool, String)> {
        let path = format!("/v1/rooms/{}/participants?name={name}", self.rooms[room].id);
        let headers = [
            ("Content-Type", "application/sdp".to_string()),
            ("Authorization", format!("Bearer {token}")),
        ];
        // No node answering at all may pass too (a cluster whose nodes
        // restart); a single server that does not answer is an error.
        let cluster = self.cluster();
        let (res, node) = self
            .send("POST", &path, &headers, offer.as_bytes())
            .map_err(|e| (cluster, e.to_string()))?;
        self.nodes[node].joins_sent += 1;
        if res.status != 201 {
            return Err((retryable(res.status), format!("join: {}", res.refusal())));
        }
        let id = res
            .header("x-piazza-participant")
            .ok_or((false, "join: no X-Piazza-Participant".to_string()))?;
        let token = res
            .header("x-piazza-token")
            .ok_or((false, "join: no X-Piazza-Token".to_string()))?;
        let answer = String::from_utf8(res.body)
            .map_err(|_| (false, "join: the answer is not UTF-8".to_string()))?;
        Ok((answer, MemberId::Server { id, token }, node))
    }
}

impl Backend for Server {
    fn shards(&self) -> usize {
        self.nodes.iter().map(|n| n.shards).sum()
    }

    fn create_room(&mut self, index: usize, participants: usize) -> Result<(), LoadgenError> {
        if let Some(i) = &self.invite {
            // Check the link before the first join: the room's state as
            // an invited participant sees it.
            let res = self.nodes[0].http.request(
                "GET",
                &format!("/v1/rooms/{}", i.room),
                &[("Authorization", format!("Bearer {}", i.token))],
                b"",
            )?;
            if res.status != 200 {
                return Err(LoadgenError::Target(format!(
                    "the invite link's room {}: {}",
                    i.room,
                    res.refusal()
                )));
            }
            self.rooms.push(ServerRoom {
                id: i.room.clone(),
                invite: i.token.clone(),
                owner: None,
            });
            return Ok(());
        }
        let body = serde_json::json!({
            "name": format!("loadgen-{index}"),
            "max_participants": participants,
        })
        .to_string();
        let mut headers = vec![("Content-Type", "application/json".to_string())];
        if let Some(k) = &self.api_key {
            headers.push(("Authorization", format!("Bearer {k}")));
        }
        // In a cluster, through each node in turn: placement (not the
        // node asked) decides where the room lives.
        let (res, _) = self.send("POST", "/v1/rooms", &headers, body.as_bytes())?;
        if res.status != 201 {
            return Err(LoadgenError::Target(format!(
                "creating a room: {}",
                res.refusal()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&res.body)
            .map_err(|e| LoadgenError::Target(format!("creating a room: {e}")))?;
        let field = |k: &str| {
            v[k].as_str().map(str::to_string).ok_or_else(|| {
                LoadgenError::Target(format!("creating a room: no `{k}` in the answer"))
            })
        };
        self.rooms.push(ServerRoom {
            id: field("room")?,
            invite: field("invite_token")?,
            owner: Some(field("owner_token")?),
        });
        Ok(())
    }

    fn join(&mut self, room: usize, offer: &str, name: &str) -> Result<(String, MemberId), String> {
        let invite = self.rooms[room].invite.clone();
        self.post_join(room, offer, name, &invite)
            .map(|(answer, id, _)| (answer, id))
            .map_err(|(_, e)| e)
    }

    fn rejoin(
        &mut self,
        room: usize,
        offer: &str,
        name: &str,
        member: &MemberId,
    ) -> Result<(String, MemberId, Option<String>), (bool, String)> {
        let MemberId::Server { token, .. } = member else {
            return Err((false, "not a participant of the server".into()));
        };
        let token = token.clone();
        let (answer, id, node) = self.post_join(room, offer, name, &token)?;
        Ok((answer, id, Some(self.nodes[node].url.clone())))
    }

    fn leave(&mut self, room: usize, member: &MemberId) -> Result<(), String> {
        let MemberId::Server { id, token } = member else {
            return Err("not a participant of the server".into());
        };
        let path = format!("/v1/rooms/{}/participants/{id}", self.rooms[room].id);
        let (res, _) = self
            .send(
                "DELETE",
                &path,
                &[("Authorization", format!("Bearer {token}"))],
                b"",
            )
            .map_err(|e| e.to_string())?;
        match res.status {
            204 => Ok(()),
            _ => Err(format!("leave: {}", res.refusal())),
        }
    }

    fn counters(&mut self, fresh: bool) -> Result<Counters, LoadgenError> {
        // Each server's /metrics always reads its latest snapshot.
        let cluster = self.cluster();
        let mut sum = Counters::default();
        let mut answered = 0;
        for node in &mut self.nodes {
            let c = match node.read() {
                Ok(c) => {
                    node.up = true;
                    answered += 1;
                    node.last = Some(c);
                    c
                }
                // A node of a cluster that stopped answering counts with
                // its last reading; a single server's error ends the run.
                Err(e) if !cluster => return Err(e),
                Err(_) => {
                    node.up = false;
                    node.last.unwrap_or_default()
                }
            };
            if fresh {
                if node.window.is_empty() {
                    node.at_window = node.load();
                }
                node.window.truncate(1);
                node.window.push(c);
            }
            sum.sample.forwarded += c.sample.forwarded;
            sum.sample.rtp_in += c.sample.rtp_in;
            sum.sample.bytes_out += c.sample.bytes_out;
            sum.sample.cpu += c.sample.cpu;
            sum.sample.sfu_latency.merge(&c.sample.sfu_latency);
            sum.sample.latency_untracked += c.sample.latency_untracked;
            // A cluster's memory is its processes' together.
            sum.sample.rss_bytes += c.sample.rss_bytes;
            sum.sample.heap_bytes += c.sample.heap_bytes;
            sum.panics += c.panics;
            sum.events_dropped += c.events_dropped;
            sum.send_drops += c.send_drops;
        }
        if answered == 0 {
            return Err(LoadgenError::Target(
                "no node of the cluster answers /metrics".into(),
            ));
        }
        Ok(sum)
    }

    fn disconnects(&mut self) -> Option<u64> {
        None
    }

    fn leave_at_end(&self) -> bool {
        true
    }

    fn peak_rss_mb(&mut self) -> Option<f64> {
        // The largest node's (a cluster's nodes are separate machines).
        self.nodes
            .iter()
            .filter_map(|n| {
                if let Some(mb) = n.pid.and_then(crate::run::process::peak_rss_mb) {
                    return Some(mb);
                }
                let text = n.http.get_text("/metrics").ok()?;
                Metrics::parse(&text)
                    .sum("piazza_process_peak_resident_bytes")
                    .map(|b| b / (1024.0 * 1024.0))
            })
            .reduce(f64::max)
    }

    fn nodes(&mut self, measured: Duration) -> Option<Vec<NodeReport>> {
        if !self.cluster() {
            return None;
        }
        let secs = measured.as_secs_f64();
        let rate = |a: u64, b: u64| {
            if secs > 0.0 {
                b.saturating_sub(a) as f64 / secs
            } else {
                0.0
            }
        };
        Some(
            self.nodes
                .iter()
                .map(|n| {
                    let (first, last) = match n.window.as_slice() {
                        [a, b] => (Some(*a), Some(*b)),
                        [a] => (Some(*a), n.last),
                        _ => (None, None),
                    };
                    let now = n.load();
                    let (egress_pps, cpu_cores) = match (first, last) {
                        (Some(a), Some(b)) => (
                            rate(a.sample.forwarded, b.sample.forwarded),
                            if secs > 0.0 {
                                b.sample.cpu.saturating_sub(a.sample.cpu).as_secs_f64() / secs
                            } else {
                                0.0
                            },
                        ),
                        _ => (0.0, 0.0),
                    };
                    let (rooms, participants) = n.at_window.unwrap_or_default();
                    NodeReport {
                        url: n.url.clone(),
                        node: n.id.clone(),
                        rooms,
                        participants,
                        rooms_at_end: now.map(|l| l.0),
                        participants_at_end: now.map(|l| l.1),
                        egress_pps,
                        cpu_cores,
                        joins_sent: n.joins_sent,
                        up_at_end: n.up && now.is_some(),
                    }
                })
                .collect(),
        )
    }

    fn close(&mut self) {
        // Best effort: the server also closes empty rooms after its grace.
        for r in std::mem::take(&mut self.rooms) {
            let Some(owner) = r.owner else {
                continue;
            };
            let _ = self.send(
                "DELETE",
                &format!("/v1/rooms/{}", r.id),
                &[("Authorization", format!("Bearer {owner}"))],
                b"",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_links() {
        assert_eq!(
            parse_invite("http://127.0.0.1:8080/r/k3J9xQ2mLp#t=eyJ0.a-b_c").unwrap(),
            Invite {
                base: "http://127.0.0.1:8080".into(),
                room: "k3J9xQ2mLp".into(),
                token: "eyJ0.a-b_c".into(),
            }
        );
        for bad in [
            "http://127.0.0.1:8080/r/room",
            "http://127.0.0.1:8080/x/room#t=abc",
            "http://127.0.0.1:8080/r/#t=abc",
            "http://127.0.0.1:8080/r/room#t=",
            "https://127.0.0.1:8080/r/room#t=abc",
            "http://192.0.2.1:8080/r/room#t=abc",
        ] {
            assert!(parse_invite(bad).is_err(), "{bad}");
        }
    }
}
