//! HTTP errors: every refusal is JSON `{"error": CODE, "message": TEXT}`
//! with the status the API documents (docs/api.md, section 4).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::Error;

/// `Retry-After` of every 503 (overloaded, at capacity, shutting down).
pub const RETRY_AFTER_SECONDS: &str = "5";

/// A refusal the client can act on: a status, a stable machine-readable
/// code and a sentence that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `room_locked`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// A refusal with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no token, or one that does not verify.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: a valid token that does not allow this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404 `unknown_room`.
    pub fn unknown_room(room: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_room",
            format!("room {room} does not exist or has closed"),
        )
    }

    /// 413 `body_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Map an engine refusal to the documented status. `room` is the room's
    /// public id, used instead of the engine's internal one in messages.
    pub fn from_engine(e: Error, room: &str) -> Self {
        use StatusCode as S;
        match e {
            Error::MalformedSdp(_) => Self::new(S::BAD_REQUEST, "malformed_sdp", e.to_string()),
            Error::NoUsableCodec | Error::EmptyOffer | Error::Negotiation(_) => {
                Self::new(S::BAD_REQUEST, "unusable_sdp", e.to_string())
            }
            Error::TooManySlots { .. } => {
                Self::new(S::BAD_REQUEST, "too_many_slots", e.to_string())
            }
            Error::UnknownRoom(_) => Self::unknown_room(room),
            Error::UnknownParticipant(p) => Self::new(
                S::NOT_FOUND,
                "unknown_participant",
                format!("participant {p} is not in room {room}"),
            ),
            Error::RoomFull {
                max_participants, ..
            } => Self::new(
                S::CONFLICT,
                "room_full",
                format!("room {room} is full ({max_participants} participants); try again later"),
            ),
            Error::RoomLocked(_) => Self::new(
                S::LOCKED,
                "room_locked",
                format!("room {room} is locked by its owner; ask them to unlock it"),
            ),
            Error::AtCapacity => Self::new(S::SERVICE_UNAVAILABLE, "at_capacity", e.to_string()),
            Error::Overloaded { .. } => {
                Self::new(S::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
            }
            Error::EngineClosed => Self::new(
                S::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down; try again in a moment",
            ),
            Error::InvalidConfig(_) => Self::bad_request(e.to_string()),
            other => {
                tracing::error!(room, "engine error: {other}");
                Self::internal(other.to_string())
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // RFC 9110 section 10.2.3: when to try again.
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 section 3: tell the client which scheme to use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"piazza\""),
            );
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}
