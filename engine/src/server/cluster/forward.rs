//! Proxying a room's request to the node that hosts it.
//!
//! Proxy rather than redirect: a browser drops the `Authorization` header
//! on a cross-origin redirect (Fetch standard, "HTTP-redirect fetch"), and
//! each node would need CORS; a proxied join answers with the owner's SDP,
//! whose ICE candidates carry the owner's media address, so media goes
//! straight to the owner and only the signalling takes one extra hop.
//!
//! The forwarded request carries `x-piazza-hop`, a token signed with the
//! cluster's shared secret naming the forwarding node; a node never
//! forwards a request that has one (no loop can form) and refuses a hop
//! header that does not verify (a client cannot forge one).

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Cluster;
use crate::server::error::ApiError;
use crate::server::tokens::{Claims, TokenKeys};

/// Marks (and authenticates) a request forwarded by another node.
pub(crate) const HOP_HEADER: &str = "x-piazza-hop";
/// The original client's address, set by the forwarding node.
pub(crate) const CLIENT_IP_HEADER: &str = "x-piazza-client-ip";
/// How long a hop token is valid.
const HOP_TTL: Duration = Duration::from_secs(60);
/// Largest body a forwarded request may carry.
const MAX_FORWARD_BODY: usize = 1024 * 1024;

/// Headers that belong to one connection (RFC 9110 section 7.6.1) or that
/// the forwarding node sets itself.
fn skipped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | HOP_HEADER
            | CLIENT_IP_HEADER
    )
}

/// Verify a hop header: the forwarding node's id.
pub(crate) fn verify_hop(keys: &TokenKeys, value: &HeaderValue) -> Result<String, ApiError> {
    let bad = || {
        ApiError::unauthorized(
            "invalid_hop",
            "x-piazza-hop is set by Piazza nodes only; remove it",
        )
    };
    let token = value.to_str().map_err(|_| bad())?;
    let claims = keys.verify(token).map_err(|_| bad())?;
    match claims.sub.strip_prefix("hop:") {
        Some(node) if claims.grants.is_empty() => Ok(node.to_string()),
        _ => Err(bad()),
    }
}

impl Cluster {
    /// Send `req` to the node at `base` and relay its answer.
    pub(crate) async fn forward(
        &self,
        keys: &TokenKeys,
        req: Request,
        base: &str,
        client: IpAddr,
    ) -> Response {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORWARD_BODY).await {
            Ok(b) => b,
            Err(_) => return ApiError::too_large(MAX_FORWARD_BODY).into_response(),
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let hop = match keys.sign(&Claims::new("*", format!("hop:{}", self.id), &[], HOP_TTL)) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if !skipped(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(&hop) {
            headers.insert(HOP_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
            headers.insert(CLIENT_IP_HEADER, v);
        }
        let sent = self
            .http
            .request(parts.method, &url)
            .headers(headers)
            .body(bytes)
            .send()
            .await;
        let res = match sent {
            Ok(r) => r,
            Err(e) => return self.unreachable(base, &e.to_string()),
        };
        let status = res.status();
        let mut out_headers = HeaderMap::new();
        for (name, value) in res.headers() {
            if !skipped(name) {
                out_headers.append(name.clone(), value.clone());
            }
        }
        let body = match res.bytes().await {
            Ok(b) => b,
            Err(e) => return self.unreachable(base, &e.to_string()),
        };
        self.count(|s| s.forwarded += 1);
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        *response.headers_mut() = out_headers;
        if let Ok(v) = HeaderValue::from_str(&self.id) {
            response.headers_mut().insert("x-piazza-via", v);
        }
        response
    }

    fn unreachable(&self, base: &str, why: &str) -> Response {
        self.count(|s| s.forward_failures += 1);
        tracing::warn!(node = %base, "forwarding to the room's node failed: {why}");
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_unreachable",
            "the node hosting this room does not answer; if it stopped, the room moves to \
             another node within the node TTL: try again in a few seconds",
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        r
    }
}
