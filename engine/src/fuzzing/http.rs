//! The `http` target: request bodies to the reference server's API, driven
//! in-process through its router (no TCP): the JSON bodies of room creation,
//! room changes and token minting, and the SDP body of a join, each with
//! every check in front of it (token, grants, size, content type).
//!
//! An input is a selector byte and the body. `selector % 4` picks the
//! request, `selector / 4 % 4` the bearer token:
//!
//! | request | token |
//! |---|---|
//! | 0 `POST /v1/rooms` (JSON) | 0 the room owner's |
//! | 1 `PATCH /v1/rooms/{room}` (JSON) | 1 the invite's |
//! | 2 `POST /v1/rooms/{room}/tokens` (JSON) | 2 none |
//! | 3 `POST /v1/rooms/{room}/participants` (SDP) | 3 one that does not verify |
//!
//! The oracle besides "no panic": the API never answers 500 (an internal
//! error is a bug by its own definition). What a request changes is undone
//! after it (rooms created are closed, participants removed, the room
//! unlocked), so every input meets the same server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::server::{Server, ServerConfig};

/// A running engine and the API's router with one open room.
pub struct Rig {
    rt: tokio::runtime::Runtime,
    server: Server,
    router: axum::Router,
    room: String,
    owner: String,
    invite: String,
}

/// One response: status, `x-piazza-participant` header and body.
struct Answer {
    status: StatusCode,
    participant: Option<String>,
    body: Vec<u8>,
}

impl Rig {
    /// Start the engine (one shard, loopback), and create the room.
    pub fn new() -> Rig {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime on this thread");
        let config = ServerConfig {
            http: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            shards: Some(1),
            token_secret: Some("fuzzing-secret-fuzzing-secret-32".into()),
            ..Default::default()
        };
        let server = rt
            .block_on(Server::bind(config))
            .expect("the server binds loopback ports");
        let router = server.router();
        let mut rig = Rig {
            rt,
            server,
            router,
            room: String::new(),
            owner: String::new(),
            invite: String::new(),
        };
        let created = rig.send(Method::POST, "/v1/rooms", None, "application/json", b"{}");
        assert_eq!(created.status, StatusCode::CREATED, "the room is created");
        let v: serde_json::Value =
            serde_json::from_slice(&created.body).expect("room creation answers JSON");
        let field = |k: &str| v[k].as_str().map(str::to_string).unwrap_or_default();
        rig.room = field("room");
        rig.owner = field("owner_token");
        rig.invite = field("invite_token");
        rig
    }

    /// The engine behind the router (for assertions in tests).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Run one input; returns the status of the fuzzed request.
    pub fn run(&mut self, data: &[u8]) -> StatusCode {
        let Some((&selector, body)) = data.split_first() else {
            return StatusCode::OK;
        };
        let token = match selector / 4 % 4 {
            0 => Some(self.owner.clone()),
            1 => Some(self.invite.clone()),
            2 => None,
            _ => Some("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl".to_string()),
        };
        let room = self.room.clone();
        let (method, path, content_type) = match selector % 4 {
            0 => (Method::POST, "/v1/rooms".to_string(), "application/json"),
            1 => (
                Method::PATCH,
                format!("/v1/rooms/{room}"),
                "application/json",
            ),
            2 => (
                Method::POST,
                format!("/v1/rooms/{room}/tokens"),
                "application/json",
            ),
            _ => (
                Method::POST,
                format!("/v1/rooms/{room}/participants?name=Fuzz"),
                "application/sdp",
            ),
        };
        let answer = self.send(method, &path, token.as_deref(), content_type, body);
        assert_ne!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path} answered 500: {}",
            String::from_utf8_lossy(&answer.body)
        );
        self.undo(selector % 4, &answer);
        answer.status
    }

    /// Put the server back as it was before the request.
    fn undo(&mut self, request: u8, answer: &Answer) {
        let owner = self.owner.clone();
        let room = self.room.clone();
        match request {
            0 if answer.status == StatusCode::CREATED => {
                let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
                if let (Some(slug), Some(token)) = (v["room"].as_str(), v["owner_token"].as_str()) {
                    let path = format!("/v1/rooms/{slug}");
                    self.send(Method::DELETE, &path, Some(token), "", b"");
                }
            }
            1 => {
                let path = format!("/v1/rooms/{room}");
                let body = br#"{"locked": false, "public": false}"#;
                self.send(Method::PATCH, &path, Some(&owner), "application/json", body);
            }
            3 => {
                if let Some(p) = &answer.participant {
                    let path = format!("/v1/rooms/{room}/participants/{p}");
                    self.send(Method::DELETE, &path, Some(&owner), "", b"");
                }
            }
            _ => {}
        }
    }

    fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1");
        if !content_type.is_empty() {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        // Method, path and headers are ours and valid.
        let req = req
            .body(Body::from(body.to_vec()))
            .expect("a valid request");
        let router = self.router.clone();
        self.rt.block_on(async move {
            // The router's error type is Infallible.
            let response = router.oneshot(req).await.expect("the router answers");
            let status = response.status();
            let participant = response
                .headers()
                .get("x-piazza-participant")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default();
            Answer {
                status,
                participant,
                body,
            }
        })
    }
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

thread_local! {
    static RIG: std::cell::RefCell<Option<Rig>> = const { std::cell::RefCell::new(None) };
}

/// Run one input on the server kept between inputs: the fuzz target.
pub fn run(data: &[u8]) {
    RIG.with(|cell| {
        cell.borrow_mut().get_or_insert_with(Rig::new).run(data);
    });
}
