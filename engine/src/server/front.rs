//! The front door, in front of every route: per-address rate limits on
//! room creation and joins, and in cluster mode, sending each room's
//! requests to the node that hosts it (recreating a dead node's room here
//! when the directory gives it to this node).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::cluster::{CLIENT_IP_HEADER, Cluster, HOP_HEADER, Located, RoomMeta, verify_hop};
use super::error::ApiError;
use super::rooms::RoomState;
use crate::RoomConfig;

/// What kind of request this is, from its method and path.
enum Kind {
    CreateRoom,
    /// `/v1/rooms/{slug}...`; `join` for `POST .../participants`.
    Room {
        slug: String,
        join: bool,
    },
    Other,
}

fn classify(method: &Method, path: &str) -> Kind {
    if path == "/v1/rooms" {
        return if method == Method::POST {
            Kind::CreateRoom
        } else {
            Kind::Other
        };
    }
    let Some(rest) = path.strip_prefix("/v1/rooms/") else {
        return Kind::Other;
    };
    let mut parts = rest.split('/');
    let slug = parts.next().unwrap_or_default();
    let tail: Vec<&str> = parts.collect();
    // Room ids are base62; anything else is no room, left to the handlers.
    if slug.is_empty() || slug.len() > 64 || !slug.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Kind::Other;
    }
    Kind::Room {
        slug: slug.to_string(),
        join: method == Method::POST && tail == ["participants"],
    }
}

/// The client's address: the configured proxy header, else the TCP peer.
fn client_ip(state: &AppState, req: &Request) -> IpAddr {
    if let Some(name) = &state.config.client_ip_header
        && let Some(ip) = req
            .headers()
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn too_many(wait: std::time::Duration, what: &str) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what} from your address; try again in {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

pub(super) async fn front_door(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let kind = classify(req.method(), req.uri().path());
    // A forwarded request: authenticated by the hop token, rate limited
    // at the node it first reached, never forwarded again.
    let hop = match req.headers().get(HOP_HEADER) {
        Some(v) => match verify_hop(&state.keys, v) {
            Ok(from) => Some(from),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let client = match &hop {
        Some(_) => req
            .headers()
            .get(CLIENT_IP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        None => client_ip(&state, &req),
    };
    if hop.is_none() {
        let limited = match &kind {
            Kind::CreateRoom => state
                .create_limit
                .check(client, Instant::now())
                .err()
                .map(|w| (w, "room creations")),
            Kind::Room { join: true, .. } => state
                .join_limit
                .check(client, Instant::now())
                .err()
                .map(|w| (w, "join attempts")),
            _ => None,
        };
        if let Some((wait, what)) = limited {
            state.counters().rate_limited += 1;
            return too_many(wait, what);
        }
    }
    let Some(cluster) = state.cluster.clone() else {
        return next.run(req).await;
    };
    match kind {
        Kind::CreateRoom if hop.is_none() => match cluster.dir.pick().await {
            Ok(Some((id, _))) if id == cluster.id => next.run(req).await,
            Ok(Some((_, url))) => cluster.forward(&state.keys, req, &url, client).await,
            Ok(None) => no_node().into_response(),
            Err(e) => cluster.unavailable(&e).into_response(),
        },
        Kind::Room { slug, .. } => {
            if state.rooms().get(&slug).is_some() {
                return hosted_here(next.run(req).await, &cluster);
            }
            // Only a valid token for the room may move it to a live node.
            let claim = super::api::bearer(req.headers())
                .ok()
                .and_then(|t| state.keys.verify(t).ok())
                .is_some_and(|c| c.room == slug);
            match cluster.dir.locate(&slug, claim).await {
                Err(e) => cluster.unavailable(&e).into_response(),
                Ok(Located::Missing) => next.run(req).await,
                Ok(Located::Orphan { .. }) if claim => no_node().into_response(),
                Ok(Located::Orphan { .. }) => next.run(req).await,
                Ok(Located::Hosted { owner, meta, .. }) if owner == cluster.id => {
                    match recreate(&state, &cluster, meta).await {
                        Ok(()) => hosted_here(next.run(req).await, &cluster),
                        Err(e) => e.into_response(),
                    }
                }
                Ok(Located::Hosted { owner, .. }) if hop.is_some() => {
                    // Sent here by a node that thought we host it, and the
                    // directory names another: refuse rather than bounce.
                    cluster.count(|s| s.loops_refused += 1);
                    tracing::warn!(room = %slug, %owner, from = ?hop, "misdirected forwarded request");
                    ApiError::new(
                        StatusCode::MISDIRECTED_REQUEST,
                        "misdirected",
                        "the room moved while this request was forwarded; try again",
                    )
                    .into_response()
                }
                Ok(Located::Hosted { url, .. }) => {
                    cluster.forward(&state.keys, req, &url, client).await
                }
            }
        }
        _ => next.run(req).await,
    }
}

/// Header naming the node that hosts the room a response is about (cluster
/// mode; relayed unchanged when another node proxied the request). A
/// client compares it with the node it joined: a different node means its
/// room moved (its node died or drained), so rejoining is the way back.
const NODE_HEADER: &str = "x-piazza-node";

/// Mark a response to a request for a room this node hosts.
fn hosted_here(mut response: Response, cluster: &Cluster) -> Response {
    if let Ok(v) = HeaderValue::from_str(&cluster.id) {
        response.headers_mut().insert(NODE_HEADER, v);
    }
    response
}

fn no_node() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_node",
        "no live node takes rooms right now; try again in a few seconds",
    )
}

/// Open a room here from its directory metadata (its node died or left).
async fn recreate(
    state: &Arc<AppState>,
    cluster: &Cluster,
    meta: RoomMeta,
) -> Result<(), ApiError> {
    let _creating = state.create.lock().await;
    if state.rooms().get(&meta.slug).is_some() {
        return Ok(());
    }
    let kicked = cluster
        .dir
        .kicked(&meta.slug)
        .await
        .map_err(|e| cluster.unavailable(&e))?;
    let engine = state.engine.clone();
    let config = RoomConfig::named(meta.name.clone())
        .max_participants(meta.max_participants)
        .e2ee(meta.e2ee);
    let locked = meta.locked;
    let id = super::api::blocking(move || {
        let id = engine.create_room(config)?;
        if locked {
            engine.lock(id, true)?;
        }
        Ok::<_, crate::Error>(id)
    })
    .await?
    .map_err(|e| ApiError::from_engine(e, &meta.slug))?;
    let at = |s: u64| (s > 0).then(|| UNIX_EPOCH + std::time::Duration::from_secs(s));
    let now = SystemTime::now();
    let mut room = RoomState::new(
        id,
        meta.slug.clone(),
        meta.name.clone(),
        meta.public,
        meta.max_participants,
        at(meta.starts_at),
        at(meta.created_at).unwrap_or(now),
        now,
    );
    room.kicked = kicked;
    room.e2ee = meta.e2ee;
    room.recreated_at = Some(now);
    state.rooms().insert(room);
    cluster.count(|s| s.rooms_recreated += 1);
    tracing::info!(room = %meta.slug, engine_room = %id, "room recreated here from the directory");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_path() {
        assert!(matches!(
            classify(&Method::POST, "/v1/rooms"),
            Kind::CreateRoom
        ));
        assert!(matches!(classify(&Method::GET, "/v1/rooms"), Kind::Other));
        assert!(matches!(
            classify(&Method::POST, "/v1/rooms/abc123/participants"),
            Kind::Room { join: true, .. }
        ));
        assert!(matches!(
            classify(&Method::DELETE, "/v1/rooms/abc123/participants/p1"),
            Kind::Room { join: false, .. }
        ));
        assert!(matches!(
            classify(&Method::GET, "/v1/rooms/a%2Fb"),
            Kind::Other
        ));
        assert!(matches!(classify(&Method::GET, "/metrics"), Kind::Other));
    }
}
