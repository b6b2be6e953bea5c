//! `/v1/rooms/{room}/participants`: join (WHIP-style SDP offer/answer),
//! leave and kick.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct JoinQuery {
    name: Option<String>,
}

/// Decrements the room's count of joins under way when the join ends.
pub(super) struct PendingJoin<'a> {
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

pub(super) async fn join(
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
    let (id, replaces, rejoining) = {
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
        let replaces = state
            .own_participant(&claims)
            .filter(|p| room.members.contains_key(p));
        (
            room.id,
            replaces,
            coming_back(state, room, &claims, replaces),
        )
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
        engine.join(id, &offer, JoinOptions::new(join_name).rejoining(rejoining))
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
        state.participant_sub(pid),
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

/// How long after a room was recreated on this node (its node died or
/// drained) participant tokens minted by another node count as its
/// participants coming back. The browser client retries for about a
/// minute.
const COMING_BACK_GRACE: Duration = Duration::from_secs(120);

/// Whether a join is a participant coming back rather than a newcomer, so
/// that a locked room admits it: a participant token replacing its own
/// session here (its connection was lost), or, in a room recreated here
/// from the cluster directory within [`COMING_BACK_GRACE`], a participant
/// token another node minted (the room's participants following it after
/// a failover or a drain). Kicked tokens were refused before this.
fn coming_back(
    state: &AppState,
    room: &RoomState,
    claims: &Claims,
    replaces: Option<ParticipantId>,
) -> bool {
    if replaces.is_some() {
        return true;
    }
    let recently_moved = room.recreated_at.is_some_and(|t| {
        SystemTime::now()
            .duration_since(t)
            .is_ok_and(|d| d < COMING_BACK_GRACE)
    });
    let from_elsewhere = state.cluster.as_ref().is_some_and(|c| {
        claims
            .sub
            .split_once('@')
            .is_some_and(|(pid, node)| node != c.id && pid.parse::<ParticipantId>().is_ok())
    });
    recently_moved && from_elsewhere
}

pub(super) async fn remove_participant(
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
        let kick = if state.own_participant(&claims) == Some(pid) {
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
            room.kicked.insert(state.participant_sub(pid));
        }
    }
    if kick && let Some(cluster) = &state.cluster {
        // So the token stays refused wherever the room is recreated.
        if let Err(e) = cluster
            .dir
            .add_kicked(&slug, &state.participant_sub(pid))
            .await
        {
            tracing::warn!(room = %slug, "the directory did not record a kick: {e}");
        }
    }
    tracing::info!(room = %slug, participant = %pid, kick, "participant removed");
    Ok(StatusCode::NO_CONTENT)
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
}
