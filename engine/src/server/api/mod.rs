//! Route handlers of the HTTP API (`/v1/...`, `/metrics`, `/healthz`).
//! Every route, status and body is documented in `docs/api.md` section 4.
//!
//! Check order on room routes: token present and verified (401), token for
//! this room (403), room exists (404), token not kicked (403), grant (403),
//! then the request itself (425, 415, 413, 400) and the engine's verdict
//! (423, 409, 400, 503).
//!
//! One file per resource: `status` (health, metrics, info, cluster),
//! `rooms`, `participants` (join, leave, kick) and `tokens`; this file holds
//! the router and the helpers they share.

mod bandwidth;
mod ice;
mod node;
mod participants;
mod rooms;
mod status;
mod tokens;

use ice::ice_servers;
use node::{cluster_view, drain};
use participants::{join, remove_participant};
use rooms::{close_room, create_room, get_room, list_rooms, patch_room};
use status::{healthz, info, metrics_text};
use tokens::mint_token;

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
        .route("/assets/chat.js", get(web::chat_js))
        .route("/assets/e2ee.js", get(web::e2ee_js))
        .route("/assets/e2ee-worker.js", get(web::e2ee_worker_js))
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
            get(bandwidth::participant_bandwidth),
        )
        .route("/v1/rooms/{room}/tokens", post(mint_token))
        .route("/v1/rooms/{room}/ice_servers", get(ice_servers))
        .route("/v1/cluster", get(cluster_view))
        .route("/v1/node/drain", post(drain))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::front::front_door,
        ))
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
fn verify_for_room(state: &AppState, token: &str, slug: &str) -> Result<Claims, ApiError> {
    let claims = state.keys.verify(token)?;
    if claims.room != slug {
        return Err(ApiError::forbidden(
            "wrong_room",
            format!("this token is for another room, not {slug}"),
        ));
    }
    Ok(claims)
}

fn check_not_kicked(room: &RoomState, claims: &Claims) -> Result<(), ApiError> {
    if room.kicked.contains(&claims.sub) {
        return Err(ApiError::forbidden(
            "kicked",
            "the room owner removed you from this room; this token can no longer be used",
        ));
    }
    Ok(())
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

/// Seconds since the Unix epoch of `t` (0 before it).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
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
    fn slugs_differ() {
        let a = random_slug().unwrap();
        let b = random_slug().unwrap();
        assert_eq!(a.len(), 10);
        assert_ne!(a, b);
    }
}
