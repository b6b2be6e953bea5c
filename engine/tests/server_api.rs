//! The reference server's HTTP API, over real HTTP on 127.0.0.1 with an
//! ephemeral port: rooms, tokens, every documented error status, lock,
//! kick, leave, owner leave, empty-room close, metrics, and str0m clients
//! joining through the API and receiving media over UDP.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use piazza::Engine;
use piazza::server::{Claims, Grant, Server, ServerConfig, TokenKeys};
use piazza::sim::{ClientConfig, SimClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "test secret: 32 bytes or more, ok";

struct TestServer {
    base: String,
    engine: Arc<Engine>,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut config = ServerConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            shards: Some(1),
            token_secret: Some(SECRET.into()),
            ..Default::default()
        };
        tweak(&mut config);
        let server = Server::bind(config).await.expect("server starts");
        let base = format!("http://{}", server.local_addr());
        let engine = server.engine();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            base,
            engine,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn create(&self, body: Value) -> Room {
        let res = self
            .http
            .post(self.url("/v1/rooms"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        let invite_url = v["invite_url"].as_str().unwrap().to_string();
        let invite = invite_url.split("#t=").nth(1).unwrap().to_string();
        Room {
            id: v["room"].as_str().unwrap().to_string(),
            owner: v["owner_token"].as_str().unwrap().to_string(),
            invite,
        }
    }

    /// POST an offer; returns status, headers and body.
    async fn join_raw(
        &self,
        room: &str,
        token: Option<&str>,
        name: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self
            .http
            .post(self.url(&format!("/v1/rooms/{room}/participants")))
            .query(&[("name", name)])
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        (status, headers, res.text().await.unwrap())
    }

    /// Join with a str0m client's offer.
    async fn join(
        &self,
        room: &str,
        token: &str,
        name: &str,
        n: u32,
    ) -> Result<Peer, (StatusCode, Value)> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut cfg = ClientConfig::new(n);
        cfg.video_slots = 3;
        cfg.audio_slots = 2;
        cfg.speaking = n == 1;
        let epoch = Instant::now();
        let mut client = SimClient::new(cfg, socket.local_addr().unwrap(), epoch, Instant::now());
        let offer = client.offer().to_string();
        let (status, headers, body) = self
            .join_raw(room, Some(token), name, "application/sdp", offer)
            .await;
        if status != StatusCode::CREATED {
            return Err((status, serde_json::from_str(&body).unwrap_or(Value::Null)));
        }
        assert_eq!(headers["content-type"], "application/sdp");
        let location = headers["location"].to_str().unwrap().to_string();
        let id = location.rsplit('/').next().unwrap().to_string();
        assert_eq!(location, format!("/v1/rooms/{room}/participants/{id}"));
        assert_eq!(headers["x-piazza-participant"].to_str().unwrap(), id);
        let token = headers["x-piazza-token"].to_str().unwrap().to_string();
        client.accept_answer(&body).unwrap();
        client.handle_timeout(Instant::now());
        Ok(Peer {
            client,
            socket,
            id,
            token,
        })
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .http
            .patch(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .unwrap();
        }
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

/// Drive the peers over real UDP with the real clock for `d`.
fn drive(peers: &mut [Peer], d: Duration) {
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 2000];
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.client.step_udp(&p.socket, &mut buf, |_| {});
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

async fn drive_async(peers: Vec<Peer>, d: Duration) -> Vec<Peer> {
    tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        drive(&mut peers, d);
        peers
    })
    .await
    .unwrap()
}

/// Drive the peers until `done` holds (checked every 100 ms) or `max`
/// passed. Real UDP on a loaded machine: wait for what must happen,
/// bounded, not for a guessed time.
async fn drive_async_until(
    peers: Vec<Peer>,
    max: Duration,
    done: impl Fn(&[Peer]) -> bool + Send + 'static,
) -> Vec<Peer> {
    tokio::task::spawn_blocking(move || {
        let mut peers = peers;
        let end = Instant::now() + max;
        while Instant::now() < end && !done(&peers) {
            drive(&mut peers, Duration::from_millis(100));
        }
        peers
    })
    .await
    .unwrap()
}

fn error_code(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("<no error code>")
}

fn sign(claims: &Claims) -> String {
    TokenKeys::new(SECRET.as_bytes()).sign(claims).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_unknown_routes() {
    let s = TestServer::start(|_| {}).await;
    let (status, v) = s.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["shards"], 1);

    let res = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();
    for needle in [
        "# TYPE piazza_rooms gauge",
        "piazza_participants{shard=\"0\"} 0",
        "# TYPE piazza_rtp_forwarded_total counter",
        "piazza_forwarded_pps{shard=\"0\"}",
        "piazza_shard_cpu_seconds_total{shard=\"0\"}",
        "piazza_drops_total{shard=\"0\",reason=\"malformed\"} 0",
        "piazza_plis_sent_total{shard=\"0\"}",
        "piazza_slot_switches_total{shard=\"0\"}",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }

    let (status, v) = s.get("/v1/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&v), "not_found");
    let res = s.http.put(s.url("/v1/rooms")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let v: Value = res.json().await.unwrap();
    assert_eq!(error_code(&v), "method_not_allowed");

    // The browser client is served at / and /r/{room}.
    for path in ["/", "/r/anything"] {
        let res = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.text().await.unwrap().contains("/assets/app.js"));
    }
    let res = s.http.get(s.url("/assets/app.js")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rooms_with_options_and_list_the_public_ones() {
    let s = TestServer::start(|c| c.public_url = Some("https://meet.example.test/".into())).await;
    let res = s.http.post(s.url("/v1/rooms")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let v: Value = res.json().await.unwrap();
    let id = v["room"].as_str().unwrap();
    assert_eq!(location, format!("/v1/rooms/{id}"));
    assert_eq!(v["max_participants"], 50);
    assert_eq!(v["public"], false);
    let invite_url = v["invite_url"].as_str().unwrap();
    assert!(
        invite_url.starts_with(&format!("https://meet.example.test/r/{id}#t=")),
        "{invite_url}"
    );
    assert!(v["owner_token"].as_str().unwrap().len() > 20);

    let res = s
        .http
        .post(s.url("/v1/rooms"))
        .json(&json!({"name": "Standup", "max_participants": 3, "public": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let public: Value = res.json().await.unwrap();

    let (status, list) = s.get("/v1/rooms", None).await;
    assert_eq!(status, StatusCode::OK);
    let rooms = list["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1, "only the public room is listed: {list}");
    assert_eq!(rooms[0]["room"], public["room"]);
    assert_eq!(rooms[0]["name"], "Standup");
    assert_eq!(rooms[0]["max_participants"], 3);
    assert!(rooms[0]["invite_url"].as_str().unwrap().contains("#t="));

    // A public room is readable without a token; a private one is not.
    let (status, v) = s
        .get(
            &format!("/v1/rooms/{}", public["room"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["name"], "Standup");
    assert!(
        v.get("invite_url").is_none(),
        "no invite for anonymous readers"
    );
    let (status, v) = s.get(&format!("/v1/rooms/{id}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&v), "missing_token");
    let (status, v) = s.get("/v1/rooms/doesnotexist", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&v), "unknown_room");

    // Bad bodies: 400 with a message; too large: 413.
    for body in [
        "{not json",
        r#"{"max_participants": 0}"#,
        r#"{"max_participants": 51}"#,
        r#"{"colour": "red"}"#,
        r#"{"starts_at": "next tuesday"}"#,
        r#"{"starts_at": 18446744073709551615}"#,
        r#"{"starts_at": "9999-12-31T23:59:59Z"}"#,
    ] {
        let res = s
            .http
            .post(s.url("/v1/rooms"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(error_code(&v), "bad_request");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    let long_name = json!({ "name": "x".repeat(101) });
    let res = s
        .http
        .post(s.url("/v1/rooms"))
        .json(&long_name)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let huge = json!({ "name": "x".repeat(20_000) });
    let res = s
        .http
        .post(s.url("/v1/rooms"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = res.json().await.unwrap();
    assert_eq!(error_code(&v), "body_too_large");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_room_creation_and_max_rooms_gives_503() {
    let s = TestServer::start(|c| {
        c.api_key = Some("let-me-in".into());
        c.max_rooms = 1;
    })
    .await;
    let res = s.http.post(s.url("/v1/rooms")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key("www-authenticate"));
    let v: Value = res.json().await.unwrap();
    assert_eq!(error_code(&v), "missing_api_key");
    let res = s
        .http
        .post(s.url("/v1/rooms"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = s
        .http
        .post(s.url("/v1/rooms"))
        .bearer_auth("let-me-in")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = s
        .http
        .post(s.url("/v1/rooms"))
        .bearer_auth("let-me-in")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = res.json().await.unwrap();
    assert_eq!(error_code(&v), "at_capacity");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_missing_bad_tampered_expired_wrong_room_and_missing_grants() {
    let s = TestServer::start(|_| {}).await;
    let a = s.create(json!({})).await;
    let b = s.create(json!({})).await;
    let offer = SimClient::new(
        ClientConfig::new(1),
        "127.0.0.1:9".parse().unwrap(),
        Instant::now(),
        Instant::now(),
    )
    .offer()
    .to_string();
    let join = |token: Option<String>| {
        let offer = offer.clone();
        let s = &s;
        let room = a.id.clone();
        async move {
            let (status, _, body) = s
                .join_raw(&room, token.as_deref(), "x", "application/sdp", offer)
                .await;
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };

    let (status, v) = join(None).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "missing_token")
    );
    let (status, v) = join(Some("not.a.token".into())).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );

    // Tampered: the payload of a valid token changed to another room.
    let parts: Vec<&str> = a.invite.split('.').collect();
    let forged = Claims::new(&b.id, "invite", &Grant::ALL, Duration::from_secs(60));
    let forged_payload = sign(&forged).split('.').nth(1).unwrap().to_string();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let (status, v) = join(Some(tampered)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    // Signed with another secret.
    let other = TokenKeys::new(b"some other server's secret key!!")
        .sign(&Claims::new(
            &a.id,
            "invite",
            &Grant::ALL,
            Duration::from_secs(60),
        ))
        .unwrap();
    let (status, v) = join(Some(other)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );

    let mut expired = Claims::new(&a.id, "invite", &Grant::GUEST, Duration::ZERO);
    expired.exp -= 5;
    let (status, v) = join(Some(sign(&expired))).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "token_expired")
    );

    let (status, v) = join(Some(b.invite.clone())).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "wrong_room")
    );

    // A token for a room that does not exist (or closed): 404.
    let ghost = sign(&Claims::new(
        "ghostroom1",
        "invite",
        &Grant::GUEST,
        Duration::from_secs(60),
    ));
    let (status, _, body) = s
        .join_raw(
            "ghostroom1",
            Some(&ghost),
            "x",
            "application/sdp",
            offer.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Grants: minted by the owner through the API.
    let mint = |grants: Value| {
        let s = &s;
        let a = &a;
        async move {
            let res = s
                .http
                .post(s.url(&format!("/v1/rooms/{}/tokens", a.id)))
                .bearer_auth(&a.owner)
                .json(&json!({ "grants": grants, "ttl": 600 }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            let v: Value = res.json().await.unwrap();
            v["token"].as_str().unwrap().to_string()
        }
    };
    let (status, v) = join(Some(mint(json!(["subscribe", "publish"])).await)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "missing_grant")
    );
    let (status, v) = join(Some(mint(json!(["join", "subscribe"])).await)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "no_publish_grant")
    );
    let (status, v) = join(Some(mint(json!(["join", "publish"])).await)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "no_subscribe_grant")
    );
    // Only the owner mints.
    let res = s
        .http
        .post(s.url(&format!("/v1/rooms/{}/tokens", a.id)))
        .bearer_auth(&a.invite)
        .json(&json!({ "grants": ["join"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The invite works.
    let (status, v) = join(Some(a.invite.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refusals_sdp_size_full_locked_and_not_started() {
    let s = TestServer::start(|c| c.max_sdp_bytes = 64 * 1024).await;
    let room = s.create(json!({ "max_participants": 2 })).await;

    let (status, _, body) = s
        .join_raw(&room.id, Some(&room.invite), "x", "text/plain", "v=0")
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, _, body) = s
        .join_raw(
            &room.id,
            Some(&room.invite),
            "x",
            "application/sdp",
            "hello",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_code(&v), "malformed_sdp");
    // Parseable, but nothing the engine can use (VP9 only, no data channel).
    let vp9 = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n\
        a=rtpmap:102 VP9/90000\r\n";
    let (status, _, body) = s
        .join_raw(&room.id, Some(&room.invite), "x", "application/sdp", vp9)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let big = format!("v=0\r\n{}", "a=x\r\n".repeat(20_000));
    let (status, _, body) = s
        .join_raw(&room.id, Some(&room.invite), "x", "application/sdp", big)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, _, body) = s
        .join_raw(
            &room.id,
            Some(&room.invite),
            &"n".repeat(100),
            "application/sdp",
            "v=0",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Lock: only the owner; a locked room answers 423; unlocking reopens it.
    let path = format!("/v1/rooms/{}", room.id);
    let (status, v) = s.patch(&path, &room.invite, json!({"locked": true})).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "not_owner")
    );
    let (status, v) = s.patch(&path, &room.owner, json!({"locked": "yes"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = s.patch(&path, &room.owner, json!({"locked": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["locked"], true);
    let err = s.join(&room.id, &room.invite, "A", 1).await.err().unwrap();
    assert_eq!(
        (err.0, error_code(&err.1)),
        (StatusCode::LOCKED, "room_locked")
    );
    let (status, v) = s.patch(&path, &room.owner, json!({"locked": false})).await;
    assert_eq!((status, &v["locked"]), (StatusCode::OK, &json!(false)));

    // Full at max_participants.
    let a = s.join(&room.id, &room.invite, "A", 1).await.unwrap();
    let b = s.join(&room.id, &room.invite, "B", 2).await.unwrap();
    let err = s.join(&room.id, &room.invite, "C", 3).await.err().unwrap();
    assert_eq!(
        (err.0, error_code(&err.1)),
        (StatusCode::CONFLICT, "room_full")
    );
    drop((a, b));

    // Scheduled: guests wait (425), the owner may enter early.
    let later = s
        .create(json!({ "starts_at": tokens_now() + 3600, "name": "later" }))
        .await;
    let err = s
        .join(&later.id, &later.invite, "early", 4)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (err.0, error_code(&err.1)),
        (StatusCode::TOO_EARLY, "not_started")
    );
    assert!(err.1["message"].as_str().unwrap().contains("opens at"));
    assert!(s.join(&later.id, &later.owner, "host", 5).await.is_ok());
    let rfc = s
        .create(json!({ "starts_at": "2001-01-01T00:00:00Z" }))
        .await;
    assert!(s.join(&rfc.id, &rfc.invite, "late", 6).await.is_ok());
    s.stop().await;
}

fn tokens_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A locked room refuses newcomers but lets its own participant back in
/// (its connection was lost: the browser client rejoins with its
/// participant token); one that left on its own is a newcomer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_room_lets_its_own_participant_back_in() {
    let s = TestServer::start(|_| {}).await;
    let room = s.create(json!({ "name": "locked" })).await;
    let a = s.join(&room.id, &room.invite, "A", 1).await.unwrap();
    let path = format!("/v1/rooms/{}", room.id);
    let (status, _) = s.patch(&path, &room.owner, json!({"locked": true})).await;
    assert_eq!(status, StatusCode::OK);
    let err = s.join(&room.id, &room.invite, "B", 2).await.err().unwrap();
    assert_eq!(
        (err.0, error_code(&err.1)),
        (StatusCode::LOCKED, "room_locked")
    );
    // A comes back with its participant token: its old session gives way.
    let again = s
        .join(&room.id, &a.token, "A", 1)
        .await
        .unwrap_or_else(|e| panic!("rejoin into the locked room: {e:?}"));
    let (_, v) = s.get(&path, Some(&room.owner)).await;
    let ids: Vec<&str> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, [again.id.as_str()], "{v}");
    // Left on its own: its token no longer gets past the lock.
    let (status, _) = s
        .delete(&format!("{path}/participants/{}", again.id), &again.token)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let err = s.join(&room.id, &again.token, "A", 1).await.err().unwrap();
    assert_eq!(
        (err.0, error_code(&err.1)),
        (StatusCode::LOCKED, "room_locked")
    );
    drop(a);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_kick_rejoin_and_media_through_the_api() {
    let s = TestServer::start(|_| {}).await;
    let room = s.create(json!({ "name": "media" })).await;
    let owner = s.join(&room.id, &room.owner, "Olive", 1).await.unwrap();
    let guest = s.join(&room.id, &room.invite, "Gus", 2).await.unwrap();
    let third = s.join(&room.id, &room.invite, "Tess", 3).await.unwrap();

    let mut peers = drive_async_until(
        vec![owner, guest, third],
        Duration::from_secs(20),
        |peers| {
            peers.iter().all(|p| {
                let slots = &p.client.stats().slots;
                p.client.connected_at().is_some()
                    && slots.iter().filter(|s| s.video && s.packets > 0).count() >= 2
                    && slots.iter().filter(|s| !s.video && s.packets > 0).count() >= 2
            })
        },
    )
    .await;
    for p in &peers {
        assert!(p.client.connected_at().is_some(), "{} connected", p.id);
        let slots = &p.client.stats().slots;
        let live = slots.iter().filter(|s| s.video && s.packets > 0).count();
        assert_eq!(live, 2, "{} receives the two others' video", p.id);
        let audio = slots.iter().filter(|s| !s.video && s.packets > 0).count();
        assert_eq!(audio, 2, "{} receives the two others' audio", p.id);
    }
    let path = format!("/v1/rooms/{}", room.id);
    let (status, v) = s.get(&path, Some(&peers[1].token)).await;
    assert_eq!(status, StatusCode::OK);
    let list = v["participants"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{v}");
    let gus = list.iter().find(|p| p["name"] == "Gus").unwrap();
    assert_eq!(gus["id"], peers[1].id.as_str());
    assert_eq!(
        (&gus["audio"], &gus["video"], &gus["screen"]),
        (&json!(true), &json!(true), &json!(false))
    );
    assert!(
        v.get("invite_url").is_none(),
        "guests do not get the invite"
    );
    let (_, v) = s.get(&path, Some(&peers[0].token)).await;
    assert!(
        v["invite_url"].as_str().unwrap().contains("#t="),
        "the owner's participant token is admin"
    );

    // Every packet a client received was forwarded (and counted) first;
    // /metrics reads the shards' last published snapshot, so it may lag
    // for a moment (bounded wait).
    let received: u64 = peers
        .iter()
        .flat_map(|p| p.client.stats().slots.iter().map(|s| s.packets))
        .sum();
    let mut metrics = String::new();
    let mut forwarded = 0.0;
    for _ in 0..50 {
        let res = s.http.get(s.url("/metrics")).send().await.unwrap();
        metrics = res.text().await.unwrap();
        forwarded = metric(&metrics, "piazza_rtp_forwarded_total{shard=\"0\"}");
        if forwarded >= received as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        forwarded >= received as f64 && received > 0,
        "forwarded {forwarded}, clients received {received}"
    );
    assert_eq!(metric(&metrics, "piazza_participants{shard=\"0\"}"), 3.0);
    assert_eq!(metric(&metrics, "piazza_http_joins_total"), 3.0);

    // A subscriber's downlink as the allocator sees it: readable by the
    // participant itself and by the owner, not by another guest.
    let bw = format!(
        "/v1/rooms/{}/participants/{}/bandwidth",
        room.id, peers[1].id
    );
    let (status, v) = s.get(&bw, Some(&peers[1].token)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["participant"], peers[1].id.as_str(), "{v}");
    assert!(v["estimate_bps"].as_u64().is_some_and(|e| e > 0), "{v}");
    let slots = v["slots"].as_array().expect("slots");
    let video_slots = peers[1]
        .client
        .stats()
        .slots
        .iter()
        .filter(|x| x.video)
        .count();
    assert_eq!(slots.len(), video_slots, "{v}");
    let shown: Vec<&str> = slots
        .iter()
        .filter_map(|x| x["participant"].as_str())
        .collect();
    assert!(!shown.is_empty(), "{v}");
    for p in shown {
        assert!(p == peers[0].id || p == peers[2].id, "{p} in {v}");
    }
    let (status, _) = s.get(&bw, Some(&peers[0].token)).await;
    assert_eq!(status, StatusCode::OK, "the owner reads it too");
    let (status, v) = s.get(&bw, Some(&peers[2].token)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "not_owner")
    );
    let (status, _) = s
        .get(
            &format!("/v1/rooms/{}/participants/p999999/bandwidth", room.id),
            Some(&room.owner),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A guest cannot remove others; unknown participants are 404.
    let p = |id: &str| format!("/v1/rooms/{}/participants/{id}", room.id);
    let (status, v) = s.delete(&p(&peers[0].id), &peers[1].token).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "not_owner")
    );
    let (status, v) = s.delete(&p("p999999"), &room.owner).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::NOT_FOUND, "unknown_participant")
    );
    let (status, _) = s.delete(&p("nonsense"), &room.owner).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The owner kicks Tess: told over the data channel, token dead.
    let tess = peers.pop().unwrap();
    let (status, _) = s.delete(&p(&tess.id), &peers[0].token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut all = peers;
    all.push(tess);
    let mut all = drive_async_until(all, Duration::from_secs(10), |p| p[2].client.kicked).await;
    assert!(all[2].client.kicked, "the kicked client was told");
    let tess = all.pop().unwrap();
    let err = s
        .join(&room.id, &tess.token, "Tess again", 4)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (err.0, error_code(&err.1)),
        (StatusCode::FORBIDDEN, "kicked")
    );
    let (status, v) = s.get(&path, Some(&tess.token)).await;
    assert_eq!((status, error_code(&v)), (StatusCode::FORBIDDEN, "kicked"));

    // A participant token rejoins, replacing its old session.
    let gus_token = all[1].token.clone();
    let old_gus = all[1].id.clone();
    let new_gus = s.join(&room.id, &gus_token, "Gus", 5).await.unwrap();
    assert_ne!(new_gus.id, old_gus);
    let (_, v) = s.get(&path, Some(&room.owner)).await;
    let ids: Vec<&str> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&new_gus.id.as_str()) && !ids.contains(&old_gus.as_str()),
        "{ids:?}"
    );
    all[1] = new_gus;

    // The owner leaves with its own token; the room goes on.
    let (status, _) = s.delete(&p(&all[0].id), &all[0].token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = s.get(&path, Some(&room.invite)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["participants"].as_array().unwrap().len(), 1, "{v}");
    s.stop().await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_rooms_close_after_the_grace_period_and_the_owner_can_close() {
    let s = TestServer::start(|c| c.empty_room_grace = Duration::from_millis(600)).await;
    let unused = s.create(json!({})).await;
    let used = s.create(json!({})).await;
    let closed = s.create(json!({})).await;
    let peer = s.join(&used.id, &used.invite, "solo", 1).await.unwrap();

    // The owner closes a room at once.
    let (status, v) = s
        .delete(&format!("/v1/rooms/{}", closed.id), &closed.invite)
        .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "not_owner")
    );
    let (status, _) = s
        .delete(&format!("/v1/rooms/{}", closed.id), &closed.owner)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .get(&format!("/v1/rooms/{}", closed.id), Some(&closed.owner))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    wait_for(Duration::from_secs(5), || async {
        s.get(&format!("/v1/rooms/{}", unused.id), Some(&unused.owner))
            .await
            .0
            == StatusCode::NOT_FOUND
    })
    .await;
    // The occupied room stays while someone is in it...
    let (status, _) = s
        .get(&format!("/v1/rooms/{}", used.id), Some(&used.owner))
        .await;
    assert_eq!(status, StatusCode::OK);
    // ...and closes a grace period after the last one leaves.
    let (status, _) = s
        .delete(
            &format!("/v1/rooms/{}/participants/{}", used.id, peer.id),
            &peer.token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for(Duration::from_secs(5), || async {
        s.get(&format!("/v1/rooms/{}", used.id), Some(&used.owner))
            .await
            .0
            == StatusCode::NOT_FOUND
    })
    .await;
    let err = s
        .join(&used.id, &used.invite, "late", 2)
        .await
        .err()
        .unwrap();
    assert_eq!(err.0, StatusCode::NOT_FOUND);
    assert_eq!(s.engine.stats().rooms(), 0);
    s.stop().await;
}

async fn wait_for<F, Fut>(limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within {limit:?}");
}

/// Start the `piazza` binary with `args`; its stdout lines arrive on the
/// receiver.
fn spawn_binary(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_piazza"))
        .args(args)
        .env("PIAZZA_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the piazza binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn the_binary_starts_and_says_where_to_open_the_page() {
    let (mut child, rx) = spawn_binary(&["--http", "127.0.0.1:0", "--shards", "1"]);
    let end = Instant::now() + Duration::from_secs(20);
    let mut url = None;
    while Instant::now() < end && url.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && let Some(i) = line.find("open http://")
        {
            let rest = &line[i + 5..];
            url = rest.split_whitespace().next().map(str::to_string);
        }
    }
    let url = url.expect("startup log names the page to open");
    // The page is there.
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let _ = child.kill();
    let _ = child.wait();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_requests_get_json_errors_and_the_server_stays_up() {
    let s = TestServer::start(|_| {}).await;
    let room = s.create(json!({})).await;
    let join_path = format!("/v1/rooms/{}/participants", room.id);

    // Broken Authorization headers.
    for auth in [
        &b"Bearer"[..],
        b"Bearer ",
        b"Basic dXNlcjpwYXNz",
        b"bearer \xff\xfe",
        b"Bearer a.b.c.d",
    ] {
        let res = s
            .http
            .post(s.url(&join_path))
            .header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(auth).unwrap(),
            )
            .header("content-type", "application/sdp")
            .body("v=0")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let v: Value = res.json().await.unwrap();
        assert!(v["message"].is_string());
    }

    // A bad query string.
    let res = s
        .http
        .post(format!("{}?name=%ZZ&name=x", s.url(&join_path)))
        .bearer_auth(&room.invite)
        .header("content-type", "application/sdp")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());

    // Random bytes as offers, and random mutations of a real offer.
    let offer = SimClient::new(
        ClientConfig::new(1),
        "127.0.0.1:9".parse().unwrap(),
        Instant::now(),
        Instant::now(),
    )
    .offer()
    .to_string();
    let mut rng = fastrand::Rng::with_seed(6);
    for i in 0..60 {
        let body: Vec<u8> = if i % 2 == 0 {
            (0..rng.usize(0..3000)).map(|_| rng.u8(..)).collect()
        } else {
            let mut b = offer.clone().into_bytes();
            for _ in 0..rng.usize(1..20) {
                let at = rng.usize(..b.len());
                b[at] = rng.u8(b' '..=b'~');
            }
            b.truncate(rng.usize(b.len() / 2..=b.len()));
            b
        };
        let (status, _, text) = s
            .join_raw(
                &room.id,
                Some(&room.invite),
                "fuzz",
                "application/sdp",
                body,
            )
            .await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::CREATED,
            "case {i}: {status} {text}"
        );
        if status == StatusCode::BAD_REQUEST {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert!(v["error"].is_string(), "case {i}: {text}");
        }
    }

    // Odd paths and bodies elsewhere.
    let (status, v) = s.get("/v1/rooms/%ff%fe", Some(&room.invite)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let (status, v) = s.get("/v1/rooms/%00", Some(&room.invite)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "wrong_room")
    );
    let (status, _) = s
        .patch(
            &format!("/v1/rooms/{}", room.id),
            &room.owner,
            json!([1, 2, 3]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s
        .patch(&format!("/v1/rooms/{}", room.id), &room.owner, json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, v) = s.get("/healthz", None).await;
    assert_eq!((status, &v["status"]), (StatusCode::OK, &json!("ok")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_past_the_shard_budget_get_503_overloaded_with_retry_after() {
    let s = TestServer::start(|c| c.max_participants_per_shard = 2).await;
    let room = s.create(json!({})).await;
    let a = s.join(&room.id, &room.invite, "A", 1).await.unwrap();
    let b = s.join(&room.id, &room.invite, "B", 2).await.unwrap();
    let offer = SimClient::new(
        ClientConfig::new(3),
        "127.0.0.1:9".parse().unwrap(),
        Instant::now(),
        Instant::now(),
    )
    .offer()
    .to_string();
    let (status, headers, body) = s
        .join_raw(&room.id, Some(&room.invite), "C", "application/sdp", offer)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "5");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_code(&v), "overloaded");
    assert!(
        v["message"].as_str().unwrap().contains("try again later"),
        "{v}"
    );

    // Every shard is at its budget: no new room either.
    let res = s
        .http
        .post(s.url("/v1/rooms"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "5");
    let v: Value = res.json().await.unwrap();
    assert_eq!(error_code(&v), "at_capacity");

    let res = s.http.get(s.url("/metrics")).send().await.unwrap();
    let metrics = res.text().await.unwrap();
    assert_eq!(
        metric(&metrics, "piazza_joins_refused_overload_total{shard=\"0\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "piazza_rooms_failed_total{shard=\"0\"}"),
        0.0
    );
    drop((a, b));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_tells_every_participant_it_is_shutting_down() {
    let s = TestServer::start(|c| c.shutdown_timeout = Duration::from_secs(3)).await;
    let room = s.create(json!({})).await;
    let a = s.join(&room.id, &room.invite, "A", 1).await.unwrap();
    let b = s.join(&room.id, &room.invite, "B", 2).await.unwrap();
    let peers = drive_async(vec![a, b], Duration::from_secs(2)).await;
    assert!(peers.iter().all(|p| p.client.is_alive()));
    let engine = s.engine.clone();
    // The same path as SIGTERM: the shutdown future completes.
    s.stop().await;
    assert!(matches!(
        engine.create_room(piazza::RoomConfig::default()),
        Err(piazza::Error::EngineClosed)
    ));
    let mut peers = peers;
    for _ in 0..100 {
        if peers
            .iter()
            .all(|p| p.client.closing.is_some() && !p.client.is_alive())
        {
            break;
        }
        peers = drive_async(peers, Duration::from_millis(50)).await;
    }
    for p in &peers {
        assert!(
            p.client
                .closing
                .as_deref()
                .is_some_and(|r| r.contains("shutting down")),
            "{:?}",
            p.client.closing
        );
        assert!(!p.client.is_alive(), "no DTLS close reached the peer");
    }
}

#[cfg(unix)]
#[test]
fn the_binary_shuts_down_gracefully_on_sigterm() {
    let (mut child, rx) = spawn_binary(&[
        "--http",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--shutdown-timeout",
        "3s",
    ]);
    let wait_for = |needle: &str| {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
                && line.contains(needle)
            {
                return true;
            }
        }
        false
    };
    assert!(wait_for("piazza is running"), "the server did not start");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(
        wait_for("engine stopped"),
        "no graceful engine shutdown logged"
    );
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_creation_and_joins_are_rate_limited_per_client_address() {
    let s = TestServer::start(|c| {
        c.rate_limit_rooms_per_minute = 2;
        c.rate_limit_joins_per_minute = 3;
    })
    .await;
    let room = s.create(json!({})).await;
    s.create(json!({})).await;
    let res = s
        .http
        .post(s.url("/v1/rooms"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One token every 30 s at 2 per minute.
    assert!((29..=30).contains(&after), "Retry-After {after}");
    let v: Value = res.json().await.unwrap();
    assert_eq!(error_code(&v), "rate_limited");

    // Join attempts count whether or not they succeed.
    for _ in 0..3 {
        let (status, _, _) = s
            .join_raw(&room.id, Some(&room.invite), "x", "text/plain", "no")
            .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let (status, headers, body) = s
        .join_raw(&room.id, Some(&room.invite), "x", "application/sdp", "v=0")
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key("retry-after"));
    let res = s.http.get(s.url("/metrics")).send().await.unwrap();
    let text = res.text().await.unwrap();
    assert!(text.contains("piazza_http_rate_limited_total 2"), "{text}");
    s.stop().await;
}
