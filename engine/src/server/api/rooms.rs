//! `/v1/rooms` and `/v1/rooms/{room}`: create, read, change, close, list.

use super::*;
use crate::server::cluster::RoomMeta;

/// `POST /v1/rooms` body; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRoom {
    name: Option<String>,
    max_participants: Option<usize>,
    public: Option<bool>,
    starts_at: Option<StartsAt>,
    /// End-to-end encrypted media and chat (`docs/e2ee.md`).
    e2ee: Option<bool>,
}

/// RFC 3339 UTC text or Unix seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum StartsAt {
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
pub(super) struct CreatedRoom {
    room: String,
    name: String,
    public: bool,
    max_participants: usize,
    starts_at: Option<String>,
    e2ee: bool,
    invite_url: String,
    invite_token: String,
    owner_token: String,
    expires_at: String,
}

pub(super) async fn create_room(
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
    let e2ee = req.e2ee.unwrap_or(false);
    if e2ee && public {
        return Err(ApiError::bad_request(
            "a public room cannot be end-to-end encrypted: the room list shows invite links without the room secret; create it with \"public\": false and share the invite link with its secret",
        ));
    }

    if state.drain.is_draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this server is draining and takes no new rooms; try again (another node takes it)",
        ));
    }
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
    let config = RoomConfig::named(name.clone())
        .max_participants(max_participants)
        .e2ee(e2ee);
    let id = blocking(move || engine.create_room(config))
        .await?
        .map_err(|e| ApiError::from_engine(e, &slug))?;
    let now = SystemTime::now();
    if let Some(cluster) = &state.cluster {
        // The directory first: a room it does not know could be created
        // twice, on two nodes.
        let meta = RoomMeta {
            slug: slug.clone(),
            name: name.clone(),
            public,
            max_participants,
            starts_at: starts_at.map(unix_secs).unwrap_or(0),
            created_at: unix_secs(now),
            locked: false,
            participants: 0,
            e2ee,
        };
        let recorded = match cluster.dir.create(&meta, &cluster.id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::internal(
                "a room id collided in the directory; try again",
            )),
            Err(e) => Err(cluster.unavailable(&e)),
        };
        if let Err(e) = recorded {
            let engine = state.engine.clone();
            let _ = blocking(move || engine.close_room(id)).await;
            return Err(e);
        }
    }
    let mut room = RoomState::new(
        id,
        slug.clone(),
        name.clone(),
        public,
        max_participants,
        starts_at,
        now,
        now,
    );
    room.e2ee = e2ee;
    state.rooms().insert(room);
    state.counters().rooms_created += 1;
    tracing::info!(room = %slug, engine_room = %id, public, e2ee, "room created");

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
        e2ee,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/rooms/{slug}"))],
        axum::Json(body),
    )
        .into_response())
}

#[derive(Serialize)]
pub(super) struct RoomView {
    room: String,
    name: String,
    public: bool,
    locked: bool,
    max_participants: usize,
    starts_at: Option<String>,
    created_at: String,
    e2ee: bool,
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
        locked: state
            .engine
            .room_info(room.id)
            .is_ok_and(|info| info.locked),
        max_participants: room.max_participants,
        starts_at: room.starts_at.map(rfc3339),
        created_at: rfc3339(room.created_at),
        e2ee: room.e2ee,
        participants: room.member_views(),
        invite_url,
    })
}

pub(super) async fn get_room(
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
pub(super) struct PatchRoom {
    locked: Option<bool>,
    public: Option<bool>,
}

pub(super) async fn patch_room(
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
    if let Some(cluster) = &state.cluster {
        // The directory first: the room's metadata must survive its node.
        cluster
            .dir
            .update(&slug, patch.locked, patch.public)
            .await
            .map_err(|e| cluster.unavailable(&e))?;
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
    if let Some(public) = patch.public {
        room.public = public;
    }
    Ok(axum::Json(room_view(&state, &headers, room, true)?))
}

pub(super) async fn close_room(
    State(state): Shared,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
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
            "only the room owner can close the room",
        )?;
        room.id
    };
    if let Some(cluster) = &state.cluster {
        cluster
            .dir
            .forget(&slug, &cluster.id)
            .await
            .map_err(|e| cluster.unavailable(&e))?;
    }
    state.rooms().remove(&slug);
    let engine = state.engine.clone();
    match blocking(move || engine.close_room(id)).await? {
        Ok(()) | Err(crate::Error::UnknownRoom(_)) => {}
        Err(e) => return Err(ApiError::from_engine(e, &slug)),
    }
    tracing::info!(room = %slug, "room closed by its owner");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub(super) struct ListedRoom {
    room: String,
    name: String,
    participants: usize,
    max_participants: usize,
    locked: bool,
    starts_at: Option<String>,
    invite_url: String,
}

#[derive(Serialize)]
pub(super) struct RoomList {
    rooms: Vec<ListedRoom>,
}

pub(super) async fn list_rooms(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<axum::Json<RoomList>, ApiError> {
    let mut listed = Vec::new();
    if let Some(cluster) = &state.cluster {
        // The whole cluster's public rooms, from the directory.
        let metas = cluster
            .dir
            .public_rooms()
            .await
            .map_err(|e| cluster.unavailable(&e))?;
        for m in metas {
            let claims = Claims::new(&m.slug, "invite", &Grant::GUEST, state.config.token_ttl);
            let token = state.keys.sign(&claims)?;
            listed.push(ListedRoom {
                invite_url: invite_url(&state, &headers, &m.slug, &token),
                room: m.slug,
                name: m.name,
                participants: m.participants,
                max_participants: m.max_participants,
                locked: m.locked,
                starts_at: (m.starts_at > 0)
                    .then(|| UNIX_EPOCH + Duration::from_secs(m.starts_at))
                    .map(rfc3339),
            });
        }
    } else {
        let rooms = state.rooms();
        for r in rooms.rooms().filter(|r| r.public) {
            let claims = Claims::new(&r.slug, "invite", &Grant::GUEST, state.config.token_ttl);
            let token = state.keys.sign(&claims)?;
            let info = state.engine.room_info(r.id).ok();
            listed.push(ListedRoom {
                room: r.slug.clone(),
                name: r.name.clone(),
                participants: info.map_or(r.members.len(), |i| i.participants),
                max_participants: r.max_participants,
                locked: info.is_some_and(|i| i.locked),
                starts_at: r.starts_at.map(rfc3339),
                invite_url: invite_url(&state, &headers, &r.slug, &token),
            });
        }
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name).then(a.room.cmp(&b.room)));
    Ok(axum::Json(RoomList { rooms: listed }))
}
