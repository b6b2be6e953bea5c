//! `GET /v1/rooms/{room}/ice_servers`: the STUN/TURN servers a client
//! configures before it makes its offer.

use super::*;

/// `GET /v1/rooms/{room}/ice_servers`: the STUN/TURN servers a client
/// configures before it makes its offer (docs/api.md). Needs a token that
/// may join: TURN credentials let their holder relay traffic.
pub(super) async fn ice_servers(
    State(state): Shared,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let claims = verify_for_room(&state, bearer(&headers)?, &slug)?;
    {
        let rooms = state.rooms();
        let room = rooms
            .get(&slug)
            .ok_or_else(|| ApiError::unknown_room(&slug))?;
        check_not_kicked(room, &claims)?;
    }
    require(&claims, Grant::Join, "this token does not allow joining")?;
    let subject = format!("{slug}:{}", claims.sub);
    let (servers, expires) =
        super::super::ice::ice_servers_for(&state.config.ice_servers, &subject, SystemTime::now());
    Ok(axum::Json(serde_json::json!({
        "ice_servers": servers,
        "expires_at": expires.map(rfc3339),
    })))
}
