//! `POST /v1/rooms/{room}/tokens`: the owner mints invite tokens.

use super::*;

/// `POST /v1/rooms/{room}/tokens` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MintToken {
    grants: Vec<Grant>,
    /// Seconds; at most the server's token lifetime.
    ttl: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct MintedToken {
    token: String,
    invite_url: String,
    grants: Vec<Grant>,
    expires_at: String,
}

pub(super) async fn mint_token(
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
