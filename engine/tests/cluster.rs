//! Cluster mode end to end: a real `redis-server` on a loopback port in a
//! temporary directory and three `piazza` nodes as processes, with str0m
//! clients joining over HTTP and exchanging media over UDP.
//!
//! These tests need `redis-server` on the PATH, so they are `#[ignore]`d
//! in a plain `cargo test`; `engine/tests/cluster.sh` (which CI runs)
//! installs Redis and runs them with `--ignored`.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{API_KEY, Node, Redis, SECRET};
use piazza::server::{Claims, Grant, TokenKeys};
use piazza::sim::{ClientConfig, SimClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Short, so the failover test is quick; heartbeats go every third of it.
const NODE_TTL: Duration = Duration::from_secs(2);

struct Cluster {
    http: reqwest::Client,
    nodes: Vec<Node>,
    redis: Option<Redis>,
}

impl Cluster {
    /// Redis and three nodes `a`, `b`, `c` that all see each other.
    async fn start(extra: &[&str]) -> Cluster {
        let (redis, nodes) = common::start_cluster(&["a", "b", "c"], NODE_TTL, extra).await;
        Cluster {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            nodes,
            redis: Some(redis),
        }
    }

    fn url(&self, node: usize, path: &str) -> String {
        format!("{}{path}", self.nodes[node].url)
    }

    async fn try_get(
        &self,
        node: usize,
        path: &str,
        token: Option<&str>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut req = self.http.get(self.url(node, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        let status = res.status();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, node: usize, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.try_get(node, path, token).await.expect("node answers")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        node: usize,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let res = self
            .http
            .request(method, self.url(node, path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("node answers");
        let status = res.status();
        let headers = res.headers().clone();
        (status, headers, res.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, node: usize, body: Value) -> Room {
        let res = self
            .http
            .post(self.url(node, "/v1/rooms"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        let invite_url = v["invite_url"].as_str().unwrap().to_string();
        Room {
            id: v["room"].as_str().unwrap().to_string(),
            owner: v["owner_token"].as_str().unwrap().to_string(),
            invite: invite_url.split("#t=").nth(1).unwrap().to_string(),
        }
    }

    /// Rooms per node, from each node's own view.
    async fn rooms_per_node(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            let (_, v) = self.get(i, "/healthz", None).await;
            out.push(v["rooms"].as_u64().unwrap_or(0));
        }
        out
    }

    /// Which node hosts `room`: the one that answers for it without
    /// forwarding (a forwarded answer names the node it came from).
    async fn host_of(&self, room: &Room) -> usize {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.host_among(room, &all).await
    }

    /// [`Cluster::host_of`] asking only the nodes `among` (a stopped node
    /// would hold the request until the client's timeout).
    async fn host_among(&self, room: &Room, among: &[usize]) -> usize {
        for &i in among {
            let Ok(res) = self
                .http
                .get(self.url(i, &format!("/v1/rooms/{}", room.id)))
                .bearer_auth(&room.owner)
                .send()
                .await
            else {
                continue;
            };
            if res.status() == StatusCode::OK && !res.headers().contains_key("x-piazza-via") {
                return i;
            }
        }
        panic!("none of the nodes {among:?} hosts room {}", room.id);
    }

    /// One value of node `node`'s `/metrics`.
    async fn metric(&self, node: usize, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url(node, "/metrics"))
            .send()
            .await
            .expect("node answers")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in node {node}'s /metrics"))
    }

    /// Wait until node `observer` no longer lists node `gone` as alive
    /// (its entry expired), or panic after `within`.
    async fn until_gone(&self, observer: usize, gone: usize, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let (_, v) = self.get(observer, "/v1/cluster", Some(API_KEY)).await;
            let urls: Vec<&str> = v["nodes"]
                .as_array()
                .map(|n| n.iter().filter_map(|n| n["url"].as_str()).collect())
                .unwrap_or_default();
            if !urls.contains(&self.nodes[gone].url.as_str()) {
                return;
            }
            assert!(
                Instant::now() < end,
                "node {gone} still listed as alive {within:?} later: {urls:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Join with a str0m client through `node`; retries 503s (a node
    /// that died, until the TTL passes) until `deadline`.
    async fn join(
        &self,
        node: usize,
        room: &str,
        token: &str,
        name: &str,
        n: u32,
        deadline: Instant,
    ) -> Result<Peer, (StatusCode, Value)> {
        loop {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_nonblocking(true).unwrap();
            let mut cfg = ClientConfig::new(n);
            cfg.video_slots = 3;
            cfg.audio_slots = 2;
            cfg.speaking = n == 1;
            let mut client = SimClient::new(
                cfg,
                socket.local_addr().unwrap(),
                Instant::now(),
                Instant::now(),
            );
            let res = self
                .http
                .post(self.url(node, &format!("/v1/rooms/{room}/participants")))
                .query(&[("name", name)])
                .header("content-type", "application/sdp")
                .bearer_auth(token)
                .body(client.offer().to_string())
                .send()
                .await
                .unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.text().await.unwrap();
            if status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if status != StatusCode::CREATED {
                return Err((status, serde_json::from_str(&body).unwrap_or(Value::Null)));
            }
            client.accept_answer(&body).unwrap();
            client.handle_timeout(Instant::now());
            return Ok(Peer {
                client,
                socket,
                id: headers["x-piazza-participant"]
                    .to_str()
                    .unwrap()
                    .to_string(),
                token: headers["x-piazza-token"].to_str().unwrap().to_string(),
            });
        }
    }
}

impl Cluster {
    /// Two peers in a call in `room`, media flowing: Ada (owner token)
    /// joins through node `host + via[0]`, Bo (invite) through
    /// `host + via[1]` (0 is the hosting node, 1 and 2 the others).
    /// Returns the hosting node and the peers.
    async fn two_in_a_call(&self, room: &Room, via: [usize; 2], what: &str) -> (usize, Vec<Peer>) {
        let host = self.host_of(room).await;
        let node = |k: usize| (host + via[k]) % self.nodes.len();
        let far = Instant::now() + Duration::from_secs(10);
        let a = self
            .join(node(0), &room.id, &room.owner, "Ada", 1, far)
            .await
            .unwrap_or_else(|e| panic!("{what}: Ada's join: {e:?}"));
        let b = self
            .join(node(1), &room.id, &room.invite, "Bo", 2, far)
            .await
            .unwrap_or_else(|e| panic!("{what}: Bo's join: {e:?}"));
        let peers = media_flows(vec![a, b], Duration::from_secs(15), what).await;
        (host, peers)
    }

    /// Every peer joins `room` again through `node` with its participant
    /// token (retrying 503s until `deadline`), as a client does after its
    /// node died or drained.
    async fn rejoin_all(
        &self,
        node: usize,
        room: &Room,
        peers: &[Peer],
        deadline: Instant,
        what: &str,
    ) -> Vec<Peer> {
        let mut back = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            let n = i as u32 + 1;
            let peer = self
                .join(node, &room.id, &p.token, &format!("again {n}"), n, deadline)
                .await
                .unwrap_or_else(|e| panic!("{what}: rejoin of peer {n}: {e:?}"));
            back.push(peer);
        }
        back
    }
}

struct Room {
    id: String,
    owner: String,
    invite: String,
}

struct Peer {
    client: SimClient,
    socket: UdpSocket,
    id: String,
    token: String,
}

async fn drive(peers: Vec<Peer>, d: Duration) -> Vec<Peer> {
    tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        let end = Instant::now() + d;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < end {
            for p in peers.iter_mut() {
                p.client.step_udp(&p.socket, &mut buf, |_| {});
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        peers
    })
    .await
    .unwrap()
}

/// Video packets a peer received, over all its slots.
fn video_in(p: &Peer) -> u64 {
    p.client
        .stats()
        .slots
        .iter()
        .filter(|s| s.video)
        .map(|s| s.packets)
        .sum()
}

/// Drive until each peer has received video, or panic after `within`.
async fn media_flows(mut peers: Vec<Peer>, within: Duration, what: &str) -> Vec<Peer> {
    let before: Vec<u64> = peers.iter().map(video_in).collect();
    let end = Instant::now() + within;
    loop {
        peers = drive(peers, Duration::from_millis(250)).await;
        if peers
            .iter()
            .zip(&before)
            .all(|(p, b)| video_in(p) > *b + 20)
        {
            return peers;
        }
        assert!(
            Instant::now() < end,
            "{what}: media did not flow within {within:?} ({:?} -> {:?})",
            before,
            peers.iter().map(video_in).collect::<Vec<_>>()
        );
    }
}

fn code(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("<no error code>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run engine/tests/cluster.sh"]
async fn rooms_spread_any_node_answers_and_bad_input_is_refused() {
    let c = Cluster::start(&[
        "--rate-limit-rooms-per-minute",
        "12",
        "--rate-limit-joins-per-minute",
        "40",
    ])
    .await;

    // Rooms created through different nodes land on different nodes.
    let mut rooms = Vec::new();
    for i in 0..3 {
        let name = format!("room {i}");
        rooms.push(c.create(i, json!({ "name": name, "public": true })).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.rooms_per_node().await, vec![1, 1, 1], "one room per node");

    // A join through a node that does not host the room reaches the owner,
    // and media flows.
    let room = &rooms[0];
    let (host, mut peers) = c
        .two_in_a_call(room, [1, 2], "joined via other nodes")
        .await;
    let other = (host + 1) % 3;
    let third = (host + 2) % 3;
    let (_, v) = c.get(host, "/healthz", None).await;
    assert_eq!(v["participants"], 2, "both are on the hosting node");

    // The public list is the same from every node (counts as of the
    // nodes' last heartbeats).
    peers = drive(peers, NODE_TTL).await;
    let mut lists = Vec::new();
    for i in 0..3 {
        let (status, v) = c.get(i, "/v1/rooms", None).await;
        assert_eq!(status, StatusCode::OK);
        let mut l: Vec<(String, String, u64)> = v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["room"].as_str().unwrap().to_string(),
                    r["name"].as_str().unwrap().to_string(),
                    r["participants"].as_u64().unwrap(),
                )
            })
            .collect();
        l.sort();
        lists.push(l);
    }
    assert_eq!(lists[0].len(), 3, "{:?}", lists[0]);
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[1], lists[2]);
    assert!(lists[0].contains(&(room.id.clone(), "room 0".into(), 2)));

    // Lock from a non-owning node: joins are refused everywhere.
    let path = format!("/v1/rooms/{}", room.id);
    let (status, _, v) = c
        .send(
            reqwest::Method::PATCH,
            other,
            &path,
            &room.owner,
            json!({ "locked": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["locked"], true);
    let refused = c
        .join(third, &room.id, &room.invite, "Cy", 3, Instant::now())
        .await
        .err()
        .expect("locked");
    assert_eq!(
        (refused.0, code(&refused.1)),
        (StatusCode::LOCKED, "room_locked")
    );
    c.send(
        reqwest::Method::PATCH,
        third,
        &path,
        &room.owner,
        json!({ "locked": false }),
    )
    .await;

    // Kick from a non-owning node: the client is told, its token is dead
    // on every node.
    let kicked_id = peers[1].id.clone();
    let kicked_token = peers[1].token.clone();
    let (status, _, v) = c
        .send(
            reqwest::Method::DELETE,
            third,
            &format!("{path}/participants/{kicked_id}"),
            &room.owner,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    for _ in 0..100 {
        if peers[1].client.kicked {
            break;
        }
        peers = drive(peers, Duration::from_millis(100)).await;
    }
    assert!(peers[1].client.kicked, "the kicked client was told");
    for node in 0..3 {
        let refused = c
            .join(node, &room.id, &kicked_token, "Bo", 2, Instant::now())
            .await
            .err()
            .expect("kicked token refused");
        assert_eq!(
            (refused.0, code(&refused.1)),
            (StatusCode::FORBIDDEN, "kicked")
        );
    }

    // A token for a room that exists nowhere: 404 from every node.
    let ghost = TokenKeys::new(SECRET.as_bytes())
        .sign(&Claims::new(
            "NoSuchRoom42",
            "invite",
            &Grant::GUEST,
            Duration::from_secs(60),
        ))
        .unwrap();
    for node in 0..3 {
        let e = c
            .join(node, "NoSuchRoom42", &ghost, "X", 4, Instant::now())
            .await
            .err()
            .expect("no such room");
        assert_eq!((e.0, code(&e.1)), (StatusCode::NOT_FOUND, "unknown_room"));
    }

    // A client cannot pose as a node: a forged hop header is refused, and
    // no route registers nodes.
    let res = c
        .http
        .get(c.url(other, &path))
        .header("x-piazza-hop", "forged")
        .bearer_auth(&room.owner)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let forged_hop = TokenKeys::new(b"not the cluster's secret, no no no")
        .sign(&Claims::new("*", "hop:evil", &[], Duration::from_secs(60)))
        .unwrap();
    let res = c
        .http
        .get(c.url(other, &path))
        .header("x-piazza-hop", forged_hop)
        .bearer_auth(&room.owner)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A room token is no hop token either.
    let res = c
        .http
        .get(c.url(other, &path))
        .header("x-piazza-hop", &room.owner)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = c
        .http
        .post(c.url(0, "/v1/cluster"))
        .json(&json!({ "id": "evil", "url": "http://198.18.0.1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let (_, v) = c.get(0, "/v1/cluster", Some(API_KEY)).await;
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);

    // Rate limits per client address: 429 with Retry-After.
    let mut limited = None;
    for i in 0..30 {
        let res = c
            .http
            .post(c.url(2, "/v1/rooms"))
            .bearer_auth(API_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            let after: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let v: Value = res.json().await.unwrap();
            assert_eq!(code(&v), "rate_limited");
            limited = Some((i, after));
            break;
        }
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let (i, after) = limited.expect("room creation is rate limited");
    assert!(i <= 12, "limited after {i} creations");
    assert!((1..=5).contains(&after), "Retry-After {after}");
    let mut joins_limited = false;
    for _ in 0..60 {
        let res = c
            .http
            .post(c.url(1, &format!("/v1/rooms/{}/participants", room.id)))
            .header("content-type", "application/sdp")
            .bearer_auth(&room.invite)
            .body("not sdp")
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
            joins_limited = true;
            break;
        }
    }
    assert!(joins_limited, "join attempts are rate limited");
    drop(peers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run engine/tests/cluster.sh"]
async fn a_killed_node_s_room_comes_back_on_another_node_with_its_metadata() {
    let mut c = Cluster::start(&[]).await;
    let room = c
        .create(
            0,
            json!({ "name": "survivor", "public": true, "max_participants": 7 }),
        )
        .await;
    let (host, peers) = c.two_in_a_call(&room, [1, 1], "before the kill").await;
    let entry = (host + 1) % 3;

    c.nodes[host].kill9();
    let killed = Instant::now();
    // The clients notice and rejoin with their own tokens through a live
    // node; until the TTL passes they get 503 and retry.
    let deadline = killed + NODE_TTL + Duration::from_secs(10);
    let back = c
        .rejoin_all(entry, &room, &peers, deadline, "after the kill")
        .await;
    let rejoined = killed.elapsed();
    assert!(
        rejoined <= NODE_TTL + Duration::from_secs(10),
        "rejoined {rejoined:?} after the kill"
    );
    let back = media_flows(back, Duration::from_secs(15), "after failover").await;
    println!(
        "failover: rejoined {:.2} s after kill -9 (node TTL {} s)",
        rejoined.as_secs_f64(),
        NODE_TTL.as_secs()
    );

    // Metadata intact, on a live node.
    let (status, v) = c
        .get(entry, &format!("/v1/rooms/{}", room.id), Some(&room.owner))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "survivor");
    assert_eq!(v["public"], true);
    assert_eq!(v["max_participants"], 7);
    assert_eq!(v["participants"].as_array().unwrap().len(), 2);
    let (_, v) = c.get(entry, "/v1/cluster", Some(API_KEY)).await;
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2, "{v}");
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run engine/tests/cluster.sh"]
async fn drain_moves_a_live_room_s_participants_off_the_node() {
    let mut c = Cluster::start(&[]).await;
    let room = c.create(1, json!({ "name": "moving" })).await;
    let (host, mut peers) = c.two_in_a_call(&room, [0, 1], "before the drain").await;
    let entry = (host + 1) % 3;

    let (status, _, v) = c
        .send(
            reqwest::Method::POST,
            host,
            "/v1/node/drain",
            API_KEY,
            json!({ "deadline_seconds": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    // New rooms go elsewhere meanwhile (through the draining node too).
    let other_room = c.create(host, json!({ "name": "elsewhere" })).await;
    assert_ne!(c.host_of(&other_room).await, host);

    // At the deadline the participants are told, and the node exits.
    for _ in 0..100 {
        if peers.iter().all(|p| p.client.closing.is_some()) {
            break;
        }
        peers = drive(peers, Duration::from_millis(100)).await;
    }
    assert!(
        peers.iter().all(|p| p.client.closing.is_some()),
        "participants told to leave"
    );
    let end = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = c.nodes[host].child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the drained node did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "drained node exit status {exit}");

    // They rejoin (no TTL wait: the node released its rooms) elsewhere.
    let soon = Instant::now() + Duration::from_secs(10);
    let back = c
        .rejoin_all(entry, &room, &peers, soon, "after the drain")
        .await;
    let back = media_flows(back, Duration::from_secs(15), "after the drain").await;
    let (status, v) = c
        .get(entry, &format!("/v1/rooms/{}", room.id), Some(&room.owner))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["name"], "moving");
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run engine/tests/cluster.sh"]
async fn a_redis_restart_loses_no_running_room() {
    let mut c = Cluster::start(&[]).await;
    let room = c
        .create(2, json!({ "name": "steady", "public": true }))
        .await;
    let (host, mut peers) = c.two_in_a_call(&room, [1, 0], "before").await;
    let entry = (host + 1) % 3;

    // Redis goes away: media keeps flowing; what needs it says 503.
    let (port, dir) = c.redis.take().unwrap().kill();
    peers = media_flows(peers, Duration::from_secs(10), "Redis down").await;
    let res = c
        .http
        .post(c.url(entry, "/v1/rooms"))
        .bearer_auth(API_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    let v: Value = res.json().await.unwrap();
    assert_eq!(code(&v), "directory_unavailable");
    // The hosting node still answers for its own room.
    let (status, _) = c
        .get(host, &format!("/v1/rooms/{}", room.id), Some(&room.owner))
        .await;
    assert_eq!(status, StatusCode::OK);

    // An empty Redis comes back on the same port: the nodes re-register
    // and re-announce their rooms on their own.
    c.redis = Some(Redis::start_on(port, dir));
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = c
            .get(entry, &format!("/v1/rooms/{}", room.id), Some(&room.owner))
            .await;
        if status == StatusCode::OK {
            assert_eq!(v["name"], "steady");
            assert_eq!(v["participants"].as_array().unwrap().len(), 2);
            break;
        }
        assert!(
            Instant::now() < end,
            "room not back in the directory: {status} {v}"
        );
        peers = drive(peers, Duration::from_millis(200)).await;
    }
    let (_, v) = c.get(entry, "/v1/rooms", None).await;
    assert!(
        v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room"] == room.id.as_str())
    );
    let peers = media_flows(peers, Duration::from_secs(10), "after the restart").await;
    assert!(peers.iter().all(|p| p.client.is_alive()));
    // And new rooms can be made again.
    c.create(entry, json!({})).await;
}

/// The `ADOPT` path (docs/cluster.md, "a node cut off longer than
/// node_ttl"): a node that stalls past the TTL (SIGSTOP stands for a frozen
/// VM, a long pause or a cut network) while its clients stay, and whose room
/// a join has meanwhile recreated on a live node. Back, its first
/// heartbeat finds its own entry gone, re-announces its rooms, learns the
/// room has another live owner, and closes its copy: its participants are
/// told the room moved, and rejoin the surviving copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run engine/tests/cluster.sh"]
async fn a_node_back_from_a_stall_gives_up_a_room_recreated_elsewhere() {
    let c = Cluster::start(&[]).await;
    let room = c
        .create(0, json!({ "name": "split", "max_participants": 9 }))
        .await;
    let (host, mut peers) = c.two_in_a_call(&room, [1, 1], "before the stall").await;
    let entry = (host + 1) % 3;
    let live = [entry, (host + 2) % 3];

    c.nodes[host].signal("STOP");
    c.until_gone(entry, host, NODE_TTL + Duration::from_secs(5))
        .await;
    // Ada gives up on the silent node and rejoins: the room moves.
    let soon = Instant::now() + Duration::from_secs(10);
    let ada = c
        .join(entry, &room.id, &peers[0].token, "Ada", 1, soon)
        .await
        .unwrap_or_else(|e| panic!("Ada's rejoin while the host is stopped: {e:?}"));
    let new_host = c.host_among(&room, &live).await;
    assert_ne!(new_host, host);

    // The host is back. Bo's session there is closed, with a notice.
    c.nodes[host].signal("CONT");
    let resumed = Instant::now();
    let told = loop {
        let bo = &peers[1].client;
        if bo.closing.is_some() || !bo.is_alive() {
            break resumed.elapsed();
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(15),
            "Bo's session on the stalled node was not closed 15 s after it came back; its log:\n{}",
            c.nodes[host].log_tail(20)
        );
        peers = drive(peers, Duration::from_millis(100)).await;
    };
    println!(
        "stall: the stalled node closed its copy {:.2} s after it came back; Bo was told {:?}",
        told.as_secs_f64(),
        peers[1].client.closing
    );
    let reason = peers[1].client.closing.clone().unwrap_or_default();
    assert!(
        reason.contains("moved"),
        "Bo's client was not told the room moved (closing {:?})",
        peers[1].client.closing
    );
    let (_, v) = c.get(host, "/healthz", None).await;
    assert_eq!(v["rooms"], 0, "the stalled node keeps no copy: {v}");
    assert_eq!(c.metric(host, "piazza_cluster_rooms_lost_total").await, 1.0);
    // The directory still names the node that took the room over, and
    // its copy kept Ada.
    assert_eq!(c.host_of(&room).await, new_host);
    let (status, v) = c
        .get(host, &format!("/v1/rooms/{}", room.id), Some(&room.owner))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "split");
    assert_eq!(v["max_participants"], 9);
    let names: Vec<&str> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["Ada"]);

    // Bo rejoins through the node he was on: it forwards to the new host.
    let bo = c
        .join(
            host,
            &room.id,
            &peers[1].token,
            "Bo",
            2,
            soon + Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("Bo's rejoin: {e:?}"));
    let back = media_flows(vec![ada, bo], Duration::from_secs(15), "after the stall").await;
    let (_, v) = c.get(new_host, "/healthz", None).await;
    assert_eq!(v["participants"], 2, "both on the surviving copy: {v}");
    drop(back);
}

/// The other side of `ADOPT`: a node stalls past the TTL, nobody touches
/// its room meanwhile, and when it is back it re-announces the room and
/// keeps it: the same sessions carry on, and other nodes reach it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run engine/tests/cluster.sh"]
async fn a_node_back_from_a_stall_keeps_a_room_nobody_claimed() {
    let c = Cluster::start(&[]).await;
    let room = c
        .create(1, json!({ "name": "patient", "public": true }))
        .await;
    let (host, peers) = c.two_in_a_call(&room, [1, 1], "before the stall").await;
    let entry = (host + 1) % 3;

    c.nodes[host].signal("STOP");
    c.until_gone(entry, host, NODE_TTL + Duration::from_secs(5))
        .await;
    c.nodes[host].signal("CONT");
    // The same sessions carry on.
    let peers = media_flows(peers, Duration::from_secs(15), "after the stall").await;
    assert!(peers.iter().all(|p| p.client.closing.is_none()));

    // The node is back in the directory and owns its room again.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = c.get(entry, "/v1/cluster", Some(API_KEY)).await;
        if v["nodes"].as_array().is_some_and(|n| n.len() == 3) {
            break;
        }
        assert!(Instant::now() < end, "the node did not re-register: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.host_of(&room).await, host);
    let (status, v) = c
        .get(entry, &format!("/v1/rooms/{}", room.id), Some(&room.owner))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["participants"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(c.metric(host, "piazza_cluster_rooms_lost_total").await, 0.0);
    let log = std::fs::read_to_string(&c.nodes[host].log).unwrap();
    assert_eq!(
        log.matches("re-announcing this node's rooms").count(),
        1,
        "the node re-announced its room once after the stall; its log:\n{}",
        c.nodes[host].log_tail(20)
    );
    drop(peers);
}

/// The load generator's binary, built next to this test's (`cargo build
/// -p piazza-loadgen`, which engine/tests/cluster.sh runs), or
/// `PIAZZA_LOADGEN`.
fn loadgen_binary() -> std::path::PathBuf {
    let path = std::env::var_os("PIAZZA_LOADGEN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            // target/PROFILE/deps/cluster-HASH -> target/PROFILE/piazza-loadgen
            let exe = std::env::current_exe().expect("the test's own path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("the test binary is in target/PROFILE/deps")
                .join("piazza-loadgen")
        });
    assert!(
        path.is_file(),
        "{} is missing: cargo build -p piazza-loadgen (engine/tests/cluster.sh does)",
        path.display()
    );
    path
}

/// The load generator against the cluster (docs/loadgen.md): rooms created
/// and joined through every node, per-node figures in its report, and with
/// `--rejoin` the participants of a node killed mid-run back on the other
/// nodes, with how long it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and piazza-loadgen: run engine/tests/cluster.sh"]
async fn the_load_generator_rejoins_through_the_cluster_when_a_node_is_killed() {
    let loadgen = loadgen_binary();
    let mut c = Cluster::start(&[]).await;
    let targets: Vec<String> = c.nodes.iter().map(|n| n.url.clone()).collect();
    let json = std::env::temp_dir().join(format!(
        "piazza-cluster-loadgen-{}-{}.json",
        std::process::id(),
        common::free_port()
    ));
    let (rooms, per_room) = (3, 4);
    let mut run = std::process::Command::new(&loadgen)
        .args(["--target", &targets.join(","), "--rejoin"])
        .args(["--rooms", &rooms.to_string(), "-n", &per_room.to_string()])
        .args(["-d", "25", "--warmup", "2", "--slots", "3"])
        .args(["--audio-slots", "2", "--client-threads", "1"])
        .args(["--no-report", "--quiet", "--json"])
        .arg(&json)
        .env("PIAZZA_API_KEY", API_KEY)
        .spawn()
        .expect("piazza-loadgen runs");
    // Everyone in, then the node with the most participants dies.
    let end = Instant::now() + Duration::from_secs(20);
    let load = loop {
        let mut load = Vec::new();
        for i in 0..3 {
            let (_, v) = c.get(i, "/healthz", None).await;
            load.push(v["participants"].as_u64().unwrap_or(0));
        }
        if load.iter().sum::<u64>() == (rooms * per_room) as u64 {
            break load;
        }
        if Instant::now() > end || run.try_wait().unwrap().is_some() {
            let _ = run.kill();
            let _ = run.wait();
            panic!(
                "the load generator's {rooms} x {per_room} participants did not all join: {load:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = (0..3).max_by_key(|&i| load[i]).unwrap();
    c.nodes[victim].kill9();
    println!(
        "loadgen: killed node {victim} with {} of {load:?} participants",
        load[victim]
    );

    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = run.kill();
            let _ = run.wait();
            panic!("the load generator ran past its 25 s by more than a minute");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // 0, or 5 when the busy machine made the run invalid (the report is
    // written all the same); anything else is a failure.
    assert!(
        matches!(status.code(), Some(0 | 5)),
        "piazza-loadgen exited {status}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let cluster = &report["cluster"];
    let nodes = cluster["nodes"].as_array().expect("per-node figures");
    assert_eq!(nodes.len(), 3, "{cluster}");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["url"], targets[i].as_str());
        assert!(
            n["joins_sent"].as_u64().unwrap() > 0,
            "joins through every node: {n}"
        );
        assert_eq!(n["up_at_end"], i != victim, "{n}");
        if i != victim {
            assert!(n["egress_pps"].as_f64().unwrap() > 0.0, "{n}");
        }
    }
    let rooms_at_window: u64 = nodes.iter().map(|n| n["rooms"].as_u64().unwrap()).sum();
    assert_eq!(rooms_at_window, rooms as u64, "{cluster}");
    let j = &cluster["rejoins"];
    println!(
        "loadgen: {} lost, {} rejoined; last datagram to rejoined {} s median, {} s max; to media {} s median, {} s max (node TTL {} s)",
        j["lost"],
        j["rejoined"],
        j["rejoined_s_p50"],
        j["rejoined_s_max"],
        j["media_s_p50"],
        j["media_s_max"],
        NODE_TTL.as_secs()
    );
    assert_eq!(
        j["lost"], load[victim],
        "every session of the killed node, and only those: {j}"
    );
    assert_eq!(j["rejoined"], j["lost"], "{j}");
    // Silence for 3 s before it counts as lost, then at most the TTL
    // and 10 s.
    let bound = 3.0 + NODE_TTL.as_secs_f64() + 10.0;
    assert!(j["rejoined_s_max"].as_f64().unwrap() <= bound, "{j}");
    // Connected again, and media again (the first back in a room has
    // nobody to see yet: no media figure for it).
    for s in j["sessions"].as_array().unwrap() {
        assert!(s["connected_s"].as_f64().is_some(), "connected again: {s}");
    }
    assert!(j["media_s_max"].as_f64().is_some(), "media again: {j}");
    let survivors: u64 = [0, 1, 2]
        .iter()
        .filter(|&&i| i != victim)
        .map(|&i| nodes[i]["participants_at_end"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        survivors,
        (rooms * per_room) as u64,
        "everyone on the live nodes at the end: {cluster}"
    );
}
