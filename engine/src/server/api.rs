//! Route handlers of the HTTP API (`/v1/...`, `/metrics`, `/healthz`).
//! Every route, status and body is documented in `docs/api.md` section 4.
//!
//! Check order on room routes: token present and verified (401), token for
//! this room (403), room exists (404), token not kicked (403), grant (403),
//! then the request itself (425, 415, 413, 400) and the engine's verdict
//! (423, 409, 400, 503).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::rooms::{MemberView, RoomState};
use super::tokens::{Claims, Grant};
use super::{metrics, web};
use crate::{JoinOptions, ParticipantId, RoomConfig};

/// Largest JSON body (room options, PATCH, token requests).
const MAX_JSON_BYTES: usize = 16 * 1024;
/// Longest room name.
const MAX_ROOM_NAME: usize = 100;
/// Longest participant display name.
const MAX_DISPLAY_NAME: usize = 64;
/// How long a join waits for a free preparation slot before 503.
const JOIN_QUEUE_WAIT: Duration = Duration::from_secs(5);

type Shared = State<Arc<AppState>>;

pub(super) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/r/{room}", get(web::index))
        .route("/assets/app.js", get(web::app_js))
        .route("/assets/style.css", get(web::style_css))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/info", get(info))
        .route("/v1/rooms", post(create_room).get(list_rooms))
        .route(
            "/v1/rooms/{room}",
            get(get_room).patch(patch_room).delete(close_room),
        )
        .route("/v1/rooms/{room}/participants", post(join))
        .route(
            "/v1/rooms/{room}/participants/{participant}",
            delete(remove_participant),
        )
        .route(
            "/v1/rooms/{room}/participants/{participant}/bandwidth",
            get(super::bandwidth_api::participant_bandwidth),
        )
        .route("/v1/rooms/{room}/tokens", post(mint_token))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Turn any error response that is not already JSON (axum's own
/// rejections, e.g. a path that is not UTF-8) into the documented
/// `{"error", "message"}` body, keeping the status.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see docs/api.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method; see docs/api.md",
    )
}

// ---------------------------------------------------------------------------
// Health, metrics, info

async fn healthz(State(state): Shared) -> Response {
    let stats = state.engine.stats();
    let body = serde_json::json!({
        "status": "ok",
        "rooms": state.rooms().len(),
        "participants": stats.participants(),
        "shards": stats.shards.len(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics_text(State(state): Shared) -> Response {
    let stats = state.engine.stats();
    let text = {
        let rates = state.rates();
        let counters = state.counters();
        metrics::render(&stats, &rates, &counters)
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[derive(Serialize)]
struct Info {
    api_key_required: bool,
    max_participants: usize,
    client_video_slots: usize,
    client_audio_slots: usize,
}

async fn info(State(state): Shared) -> axum::Json<Info> {
    let c = &state.config;
    axum::Json(Info {
        api_key_required: c.api_key.is_some(),
        max_participants: c.max_participants,
        client_video_slots: c.client_video_slots,
        client_audio_slots: c.client_audio_slots,
    })
}

// ---------------------------------------------------------------------------
// Rooms

/// `POST /v1/rooms` body; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: Option<String>,
    max_participants: Option<usize>,
    public: Option<bool>,
    starts_at: Option<StartsAt>,
}

/// RFC 3339 UTC text or Unix seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StartsAt {
    Unix(u64),
    Text(String),
}

/// How far ahead a room may be scheduled.
const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(366 * 24 * 3600);

impl StartsAt {
    fn time(&self) -> Result<SystemTime, ApiError> {
        let t = match self {
            StartsAt::Unix(s) => UNIX_EPOCH.checked_add(Duration::from_secs(*s)),
            StartsAt::Text(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|e| {
                ApiError::bad_request(format!(
                    "starts_at {t:?} is not an RFC 3339 UTC time such as \"2030-01-02T10:00:00Z\" ({e})"
                ))
            })?),
        };
        let limit = SystemTime::now() + MAX_SCHEDULE_AHEAD;
        match t {
            Some(t) if t <= limit => Ok(t),
            _ => Err(ApiError::bad_request(
                "starts_at must be at most a year from now",
            )),
        }
    }
}

#[derive(Serialize)]
struct CreatedRoom {
    room: String,
    name: String,
    public: bool,
    max_participants: usize,
    starts_at: Option<String>,
    invite_url: String,
    invite_token: String,
    owner_token: String,
    expires_at: String,
}

async fn create_room(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(key) = &state.config.api_key {
        let given = bearer(&headers).map_err(|_| {
            ApiError::unauthorized(
                "missing_api_key",
                "this server requires an API key to create rooms: send Authorization: Bearer KEY",
            )
        })?;
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            return Err(ApiError::unauthorized(
                "invalid_api_key",
                "the API key is wrong",
            ));
        }
    }
    let bytes = read_body(body, MAX_JSON_BYTES).await?;
    let req: CreateRoom = parse_json(&bytes)?;

    let name = req.name.unwrap_or_default().trim().to_string();
    if name.chars().count() > MAX_ROOM_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "name must be at most {MAX_ROOM_NAME} characters, without control characters"
        )));
    }
    let limit = state.config.max_participants;
    let max_participants = req.max_participants.unwrap_or(limit);
    if max_participants == 0 || max_participants > limit {
        return Err(ApiError::bad_request(format!(
            "max_participants must be between 1 and {limit}"
        )));
    }
    let starts_at = req.starts_at.as_ref().map(StartsAt::time).transpose()?;
    let public = req.public.unwrap_or(false);

    let _creating = state.create.lock().await;
    if state.rooms().len() >= state.config.max_rooms {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "at_capacity",
            format!(
                "the server already holds {} rooms, its maximum; try again later",
                state.config.max_rooms
            ),
        ));
    }
    let slug = random_slug()?;
    let engine = state.engine.clone();
    let config = RoomConfig::named(name.clone()).max_participants(max_participants);
    let id = blocking(move || engine.create_room(config))
        .await?
        .map_err(|e| ApiError::from_engine(e, &slug))?;
    let now = SystemTime::now();
    state.rooms().insert(RoomState {
        id,
        slug: slug.clone(),
        name: name.clone(),
        public,
        max_participants,
        starts_at,
        created_at: now,
        locked: false,
        members: BTreeMap::new(),
        gone: HashSet::new(),
        kicked: HashSet::new(),
        empty_since: Some(now),
        pending_joins: 0,
    });
    state.counters().rooms_created += 1;
    tracing::info!(room = %slug, engine_room = %id, public, "room created");

    let ttl = state.config.token_ttl;
    let owner = Claims::new(&slug, "owner", &Grant::ALL, ttl);
    let invite = Claims::new(&slug, "invite", &Grant::GUEST, ttl);
    let invite_token = state.keys.sign(&invite)?;
    let body = CreatedRoom {
        invite_url: invite_url(&state, &headers, &slug, &invite_token),
        invite_token,
        owner_token: state.keys.sign(&owner)?,
        expires_at: rfc3339(owner.expires_at()),
        room: slug.clone(),
        name,
        public,
        max_participants,
        starts_at: starts_at.map(rfc3339),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/rooms/{slug}"))],
        axum::Json(body),
    )
        .into_response())
}

#[derive(Serialize)]
struct RoomView {
    room: String,
    name: String,
    public: bool,
    locked: bool,
    max_participants: usize,
    starts_at: Option<String>,
    created_at: String,
    participants: Vec<MemberView>,
    /// Only for tokens with `admin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    invite_url: Option<String>,
}

fn room_view(
    state: &AppState,
    headers: &HeaderMap,
    room: &RoomState,
    admin: bool,
) -> Result<RoomView, ApiError> {
    let invite_url = if admin {
        let claims = Claims::new(&room.slug, "invite", &Grant::GUEST, state.config.token_ttl);
        let token = state.keys.sign(&claims)?;
        Some(invite_url(state, headers, &room.slug, &token))
    } else {
        None
    };
    Ok(RoomView {
        room: room.slug.clone(),
        name: room.name.clone(),
        public: room.public,
        locked: room.locked,
        max_participants: room.max_participants,
        starts_at: room.starts_at.map(rfc3339),
        created_at: rfc3339(room.created_at),
        participants: room.member_views(),
        invite_url,
    })
}

async fn get_room(
    State(state): Shared,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<RoomView>, ApiError> {
    let claims = match bearer(&headers) {
        Ok(token) => Some(verify_for_room(&state, token, &slug)?),
        Err(e) => {
            // Public rooms are readable without a token.
            let rooms = state.rooms();
            match rooms.get(&slug) {
                Some(r) if r.public => None,
                Some(_) => return Err(e),
                None => return Err(ApiError::unknown_room(&slug)),
            }
        }
    };
    let rooms = state.rooms();
    let room = rooms
        .get(&slug)
        .ok_or_else(|| ApiError::unknown_room(&slug))?;
    if let Some(c) = &claims {
        check_not_kicked(room, c)?;
    }
    let admin = claims.as_ref().is_some_and(|c| c.has(Grant::Admin));
    Ok(axum::Json(room_view(&state, &headers, room, admin)?))
}

/// `PATCH /v1/rooms/{room}` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRoom {
    locked: Option<bool>,
    public: Option<bool>,
}

async fn patch_room(
    State(state): Shared,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<RoomView>, ApiError> {
    let claims = verify_for_room(&state, bearer(&headers)?, &slug)?;
    let id = {
        let rooms = state.rooms();
        let room = rooms
            .get(&slug)
            .ok_or_else(|| ApiError::unknown_room(&slug))?;
        check_not_kicked(room, &claims)?;
        require(
            &claims,
            Grant::Admin,
            "only the room owner can change the room",
        )?;
        room.id
    };
    let bytes = read_body(body, MAX_JSON_BYTES).await?;
    let patch: PatchRoom = parse_json(&bytes)?;
    if patch.locked.is_none() && patch.public.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: send {\"locked\": true} or {\"locked\": false}",
        ));
    }
    if let Some(locked) = patch.locked {
        let engine = state.engine.clone();
        blocking(move || engine.lock(id, locked))
            .await?
            .map_err(|e| ApiError::from_engine(e, &slug))?;
        tracing::info!(room = %slug, locked, "room lock changed");
    }
    let mut rooms = state.rooms();
    let room = rooms
        .get_mut(&slug)
        .ok_or_else(|| ApiError::unknown_room(&slug))?;
    if let Some(locked) = patch.locked {
        room.locked = locked;
    }
    if let Some(public) = patch.public {
        room.public = public;
    }
    Ok(axum::Json(room_view(&state, &headers, room, true)?))
}

async fn close_room(
    State(state): Shared,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let claims = verify_for_room(&state, bearer(&headers)?, &slug)?;
    let id = {
        let mut rooms = state.rooms();
        let room = rooms
            .get(&slug)
            .ok_or_else(|| ApiError::unknown_room(&slug))?;
        check_not_kicked(room, &claims)?;
        require(
            &claims,
            Grant::Admin,
            "only the room owner can close the room",
        )?;
        let id = room.id;
        rooms.remove(&slug);
        id
    };
    let engine = state.engine.clone();
    match blocking(move || engine.close_room(id)).await? {
        Ok(()) | Err(crate::Error::UnknownRoom(_)) => {}
        Err(e) => return Err(ApiError::from_engine(e, &slug)),
    }
    tracing::info!(room = %slug, "room closed by its owner");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct ListedRoom {
    room: String,
    name: String,
    participants: usize,
    max_participants: usize,
    locked: bool,
    starts_at: Option<String>,
    invite_url: String,
}

#[derive(Serialize)]
struct RoomList {
    rooms: Vec<ListedRoom>,
}

async fn list_rooms(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<axum::Json<RoomList>, ApiError> {
    let rooms = state.rooms();
    let mut listed = Vec::new();
    for r in rooms.rooms().filter(|r| r.public) {
        let claims = Claims::new(&r.slug, "invite", &Grant::GUEST, state.config.token_ttl);
        let token = state.keys.sign(&claims)?;
        listed.push(ListedRoom {
            room: r.slug.clone(),
            name: r.name.clone(),
            participants: r.members.len(),
            max_participants: r.max_participants,
            locked: r.locked,
            starts_at: r.starts_at.map(rfc3339),
            invite_url: invite_url(&state, &headers, &r.slug, &token),
        });
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name).then(a.room.cmp(&b.room)));
    Ok(axum::Json(RoomList { rooms: listed }))
}

// ---------------------------------------------------------------------------
// Participants

#[derive(Debug, Deserialize)]
struct JoinQuery {
    name: Option<String>,
}

/// Decrements the room's count of joins under way when the join ends.
struct PendingJoin<'a> {
    state: &'a AppState,
    slug: &'a str,
}

impl Drop for PendingJoin<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.state.rooms().get_mut(self.slug) {
            r.pending_joins = r.pending_joins.saturating_sub(1);
        }
    }
}

async fn join(
    State(state): Shared,
    Path(slug): Path<String>,
    query: Result<Query<JoinQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match join_inner(&state, &slug, query, &headers, body).await {
        Ok(r) => {
            state.counters().joins += 1;
            r
        }
        Err(e) => {
            state.counters().join_error(e.code);
            tracing::debug!(room = %slug, "join refused: {e}");
            e.into_response()
        }
    }
}

async fn join_inner(
    state: &Arc<AppState>,
    slug: &str,
    query: Result<Query<JoinQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = verify_for_room(state, bearer(headers)?, slug)?;
    let (id, replaces) = {
        let mut rooms = state.rooms();
        let room = rooms
            .get_mut(slug)
            .ok_or_else(|| ApiError::unknown_room(slug))?;
        check_not_kicked(room, &claims)?;
        require(&claims, Grant::Join, "this token does not allow joining")?;
        if let Some(start) = room.starts_at
            && start > SystemTime::now()
            && !claims.has(Grant::Admin)
        {
            let wait = start
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs();
            return Err(ApiError::new(
                StatusCode::TOO_EARLY,
                "not_started",
                format!(
                    "room {slug} opens at {} (in {wait} s); come back then",
                    rfc3339(start)
                ),
            ));
        }
        room.pending_joins += 1;
        let replaces = claims
            .participant()
            .filter(|p| room.members.contains_key(p));
        (room.id, replaces)
    };
    let _pending = PendingJoin { state, slug };
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let name = display_name(query.name.as_deref())?;

    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
    if !is_sdp {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the SDP offer with Content-Type: application/sdp",
        ));
    }
    let bytes = read_body(body, state.config.max_sdp_bytes).await?;
    let offer = String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_sdp",
            "the offer is not UTF-8 text",
        )
    })?;
    let (sends, receives) = offer_directions(&offer);
    if sends && !claims.has(Grant::Publish) {
        return Err(ApiError::forbidden(
            "no_publish_grant",
            "this token does not allow publishing: offer every audio and video m-line as recvonly",
        ));
    }
    if receives && !claims.has(Grant::Subscribe) {
        return Err(ApiError::forbidden(
            "no_subscribe_grant",
            "this token does not allow receiving: offer no recvonly m-lines",
        ));
    }

    let _permit = tokio::time::timeout(JOIN_QUEUE_WAIT, state.joins.acquire())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy admitting others; try again in a moment",
            )
        })?;

    let engine = state.engine.clone();
    let join_name = name.clone();
    let joined = blocking(move || {
        if let Some(old) = replaces {
            // A participant token rejoining: its old session gives way.
            match engine.leave(id, old) {
                Ok(()) | Err(crate::Error::UnknownParticipant(_)) => {}
                Err(e) => return Err(e),
            }
        }
        engine.join(id, &offer, JoinOptions::new(join_name))
    })
    .await?
    .map_err(|e| ApiError::from_engine(e, slug))?;
    let pid = joined.participant;

    if let Some(room) = state.rooms().get_mut(slug) {
        // The engine has removed the old session already; its
        // `ParticipantLeft` event may reach the room list later.
        if let Some(old) = replaces {
            room.depart(old, SystemTime::now());
        }
        room.admit(pid, name.clone());
    }
    // The participant token carries the grants of the token it joined with.
    let token = state.keys.sign(&Claims::new(
        slug,
        pid.to_string(),
        &claims.grants,
        state.config.token_ttl,
    ))?;
    tracing::info!(room = %slug, participant = %pid, %name, "joined");

    let mut response = (StatusCode::CREATED, joined.answer).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!("/v1/rooms/{slug}/participants/{pid}");
    for (name, value) in [
        (header::LOCATION.as_str(), location),
        ("x-piazza-token", token),
        ("x-piazza-participant", pid.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Ok(response)
}

async fn remove_participant(
    State(state): Shared,
    Path((slug, participant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let claims = verify_for_room(&state, bearer(&headers)?, &slug)?;
    let (id, pid, kick) = {
        let rooms = state.rooms();
        let room = rooms
            .get(&slug)
            .ok_or_else(|| ApiError::unknown_room(&slug))?;
        check_not_kicked(room, &claims)?;
        let pid: ParticipantId = participant.parse().map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_participant",
                format!("{participant:?} is not a participant id (they look like p12)"),
            )
        })?;
        let kick = if claims.participant() == Some(pid) {
            false
        } else if claims.has(Grant::Admin) {
            true
        } else {
            return Err(ApiError::forbidden(
                "not_owner",
                "only the room owner can remove other participants",
            ));
        };
        (room.id, pid, kick)
    };
    let engine = state.engine.clone();
    blocking(move || {
        if kick {
            engine.kick(id, pid)
        } else {
            engine.leave(id, pid)
        }
    })
    .await?
    .map_err(|e| ApiError::from_engine(e, &slug))?;
    if let Some(room) = state.rooms().get_mut(&slug) {
        // Gone from the room's view now, not when the engine's
        // `ParticipantLeft` event comes through the event pump: a GET right
        // after the 204 must not list it.
        room.depart(pid, SystemTime::now());
        if kick {
            room.kicked.insert(pid);
        }
    }
    tracing::info!(room = %slug, participant = %pid, kick, "participant removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/rooms/{room}/tokens` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintToken {
    grants: Vec<Grant>,
    /// Seconds; at most the server's token lifetime.
    ttl: Option<u64>,
}

#[derive(Serialize)]
struct MintedToken {
    token: String,
    invite_url: String,
    grants: Vec<Grant>,
    expires_at: String,
}

async fn mint_token(
    State(state): Shared,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = verify_for_room(&state, bearer(&headers)?, &slug)?;
    {
        let rooms = state.rooms();
        let room = rooms
            .get(&slug)
            .ok_or_else(|| ApiError::unknown_room(&slug))?;
        check_not_kicked(room, &claims)?;
        require(&claims, Grant::Admin, "only the room owner can mint tokens")?;
    }
    let bytes = read_body(body, MAX_JSON_BYTES).await?;
    let req: MintToken = parse_json(&bytes)?;
    if req.grants.is_empty() {
        return Err(ApiError::bad_request(
            "grants is empty: give some of join, publish, subscribe, admin",
        ));
    }
    let max = state.config.token_ttl;
    let ttl = match req.ttl {
        Some(0) => return Err(ApiError::bad_request("ttl must be at least 1 second")),
        Some(s) if Duration::from_secs(s) > max => {
            return Err(ApiError::bad_request(format!(
                "ttl must be at most {} seconds",
                max.as_secs()
            )));
        }
        Some(s) => Duration::from_secs(s),
        None => max,
    };
    let mut grants: Vec<Grant> = Vec::with_capacity(req.grants.len());
    for g in req.grants {
        if !grants.contains(&g) {
            grants.push(g);
        }
    }
    let minted = Claims::new(&slug, "invite", &grants, ttl);
    let token = state.keys.sign(&minted)?;
    let body = MintedToken {
        invite_url: invite_url(&state, &headers, &slug, &token),
        token,
        grants,
        expires_at: rfc3339(minted.expires_at()),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

// ---------------------------------------------------------------------------
// Helpers

/// The bearer token of the request; 401 when absent.
pub(super) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::unauthorized(
            "missing_token",
            "send the room token as Authorization: Bearer TOKEN (it is in the invite link)",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

/// Verify a token (401) and that it is for `slug` (403).
pub(super) fn verify_for_room(
    state: &AppState,
    token: &str,
    slug: &str,
) -> Result<Claims, ApiError> {
    let claims = state.keys.verify(token)?;
    if claims.room != slug {
        return Err(ApiError::forbidden(
            "wrong_room",
            format!("this token is for another room, not {slug}"),
        ));
    }
    Ok(claims)
}

pub(super) fn check_not_kicked(room: &RoomState, claims: &Claims) -> Result<(), ApiError> {
    match claims.participant() {
        Some(p) if room.kicked.contains(&p) => Err(ApiError::forbidden(
            "kicked",
            "the room owner removed you from this room; this token can no longer be used",
        )),
        _ => Ok(()),
    }
}

fn require(claims: &Claims, grant: Grant, message: &str) -> Result<(), ApiError> {
    if claims.has(grant) {
        Ok(())
    } else {
        let code = match grant {
            Grant::Admin => "not_owner",
            _ => "missing_grant",
        };
        Err(ApiError::forbidden(code, message))
    }
}

/// Read a body of at most `limit` bytes; 413 beyond.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Parse a JSON body; an empty body is the type's default.
fn parse_json<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the JSON body is not valid: {e}")))
}

fn display_name(name: Option<&str>) -> Result<String, ApiError> {
    let name = name.unwrap_or("").trim();
    if name.chars().count() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "name must be at most {MAX_DISPLAY_NAME} characters, without control characters"
        )));
    }
    Ok(if name.is_empty() {
        "Guest".to_string()
    } else {
        name.to_string()
    })
}

/// Whether the offer's audio/video m-lines send (sendonly/sendrecv) and
/// receive (recvonly/sendrecv), from the client's side. A section without
/// a direction attribute inherits the session's, default sendrecv.
fn offer_directions(sdp: &str) -> (bool, bool) {
    #[derive(Clone, Copy, PartialEq)]
    enum Dir {
        SendRecv,
        SendOnly,
        RecvOnly,
        Inactive,
    }
    fn parse(line: &str) -> Option<Dir> {
        match line.trim_end() {
            "a=sendrecv" => Some(Dir::SendRecv),
            "a=sendonly" => Some(Dir::SendOnly),
            "a=recvonly" => Some(Dir::RecvOnly),
            "a=inactive" => Some(Dir::Inactive),
            _ => None,
        }
    }
    let mut session = Dir::SendRecv;
    let mut sections: Vec<(bool, Option<Dir>)> = Vec::new();
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let av = m.starts_with("audio") || m.starts_with("video");
            sections.push((av, None));
        } else if let Some(d) = parse(line) {
            match sections.last_mut() {
                Some((_, dir)) => *dir = Some(d),
                None => session = d,
            }
        }
    }
    let (mut sends, mut receives) = (false, false);
    for (av, dir) in sections {
        if !av {
            continue;
        }
        match dir.unwrap_or(session) {
            Dir::SendRecv => {
                sends = true;
                receives = true;
            }
            Dir::SendOnly => sends = true,
            Dir::RecvOnly => receives = true,
            Dir::Inactive => {}
        }
    }
    (sends, receives)
}

/// `{base}/r/{room}#t={token}`: the token rides in the fragment, which
/// browsers never send to servers or in `Referer`.
fn invite_url(state: &AppState, headers: &HeaderMap, slug: &str, token: &str) -> String {
    format!("{}/r/{slug}#t={token}", base_url(state, headers))
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| state.config.http.to_string());
    format!("http://{host}")
}

/// RFC 3339 UTC text; Unix seconds for times humantime cannot format
/// (after year 9999), never a panic.
fn rfc3339(t: SystemTime) -> String {
    use std::fmt::Write;
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut out = String::new();
    match write!(
        out,
        "{}",
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
    ) {
        Ok(()) => out,
        Err(_) => secs.to_string(),
    }
}

/// Ten characters of base62: ~59 bits, not guessable.
fn random_slug() -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("no randomness for a room id: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Run a blocking engine call on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!("engine call panicked: {e}");
        ApiError::internal("the engine call failed unexpectedly; it was logged")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_from_the_client_side() {
        let sdp = "v=0\r\nm=audio 9 UDP 111\r\na=sendonly\r\nm=video 9 UDP 96\r\na=recvonly\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert_eq!(offer_directions(sdp), (true, true));
        let viewer = "v=0\r\nm=video 9 UDP 96\r\na=recvonly\r\nm=audio 9 UDP 111\r\na=recvonly\r\n";
        assert_eq!(offer_directions(viewer), (false, true));
        let default = "v=0\r\nm=audio 9 UDP 111\r\n";
        assert_eq!(offer_directions(default), (true, true));
        let session =
            "v=0\r\na=inactive\r\nm=audio 9 UDP 111\r\nm=video 9 UDP 96\r\na=sendonly\r\n";
        assert_eq!(offer_directions(session), (true, false));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(display_name(None).unwrap(), "Guest");
        assert_eq!(display_name(Some("  Ada ")).unwrap(), "Ada");
        assert!(display_name(Some("a\u{7}b")).is_err());
        assert!(display_name(Some(&"x".repeat(65))).is_err());
    }

    #[test]
    fn slugs_differ() {
        let a = random_slug().unwrap();
        let b = random_slug().unwrap();
        assert_eq!(a.len(), 10);
        assert_ne!(a, b);
    }
}
