//! Operator routes: `GET /v1/cluster` (this node and the live nodes it
//! sees) and `POST /v1/node/drain`. Both need the API key when one is
//! configured; drain always does.

use super::*;

/// Check `Authorization: Bearer API_KEY`.
fn require_api_key(state: &AppState, headers: &HeaderMap, needed: bool) -> Result<(), ApiError> {
    let Some(key) = &state.config.api_key else {
        return if needed {
            Err(ApiError::forbidden(
                "no_api_key_configured",
                "this route needs the server's API key; configure api_key (or send SIGUSR1 to drain)",
            ))
        } else {
            Ok(())
        };
    };
    let given = bearer(headers).map_err(|_| {
        ApiError::unauthorized(
            "missing_api_key",
            "send the server's API key as Authorization: Bearer KEY",
        )
    })?;
    if constant_time_eq(given.as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid_api_key",
            "the API key is wrong",
        ))
    }
}

#[derive(Serialize)]
pub(super) struct NodeView {
    id: String,
    url: Option<String>,
    draining: bool,
    rooms: usize,
    participants: usize,
}

#[derive(Serialize)]
pub(super) struct ClusterView {
    /// `single` or `cluster`.
    mode: &'static str,
    node: NodeView,
    /// Whether the last directory call worked (always true single-node).
    directory_up: bool,
    /// Live nodes, from the directory (this node alone when single).
    nodes: Vec<crate::server::cluster::NodeInfo>,
}

pub(super) async fn cluster_view(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<axum::Json<ClusterView>, ApiError> {
    require_api_key(&state, &headers, false)?;
    let stats = state.engine.stats();
    let node = NodeView {
        id: state
            .cluster
            .as_ref()
            .map_or_else(|| "single".to_string(), |c| c.id.clone()),
        url: state.cluster.as_ref().map(|c| c.config.node_url.clone()),
        draining: state.drain.is_draining(),
        rooms: state.rooms().len(),
        participants: stats.participants(),
    };
    let Some(cluster) = &state.cluster else {
        return Ok(axum::Json(ClusterView {
            mode: "single",
            node,
            directory_up: true,
            nodes: Vec::new(),
        }));
    };
    let (nodes, up) = match cluster.dir.nodes().await {
        Ok(n) => (n, true),
        Err(e) => {
            tracing::debug!("cluster view from the last heartbeat: {e}");
            (cluster.stats().nodes, false)
        }
    };
    Ok(axum::Json(ClusterView {
        mode: "cluster",
        node,
        directory_up: up,
        nodes,
    }))
}

/// `POST /v1/node/drain` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DrainRequest {
    /// Seconds running rooms may continue; default `drain_timeout`.
    deadline_seconds: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct Draining {
    draining: bool,
    rooms: usize,
    deadline_seconds: u64,
}

pub(super) async fn drain(
    State(state): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_api_key(&state, &headers, true)?;
    let bytes = read_body(body, MAX_JSON_BYTES).await?;
    let req: DrainRequest = parse_json(&bytes)?;
    let deadline = match req.deadline_seconds {
        Some(s) if s > 24 * 3600 => {
            return Err(ApiError::bad_request(
                "deadline_seconds must be at most 86400",
            ));
        }
        Some(s) => Duration::from_secs(s),
        None => state.config.drain_timeout,
    };
    state.drain.start(deadline);
    let body = Draining {
        draining: true,
        rooms: state.rooms().len(),
        deadline_seconds: deadline.as_secs(),
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}
