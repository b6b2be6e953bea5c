//! Health, metrics and the server's limits.

use super::*;

pub(super) async fn healthz(State(state): Shared) -> Response {
    let stats = state.engine.stats();
    let body = serde_json::json!({
        "status": "ok",
        "rooms": state.rooms().len(),
        "participants": stats.participants(),
        "shards": stats.shards.len(),
        // This node's cluster id (null on its own).
        "node": state.cluster.as_ref().map(|c| c.id.clone()),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

pub(super) async fn metrics_text(State(state): Shared) -> Response {
    let stats = state.engine.stats();
    let text = {
        let rates = state.rates();
        let counters = state.counters();
        metrics::render(&stats, &rates, &counters)
    };
    let mut text = text;
    if let Some(cluster) = &state.cluster {
        metrics::render_cluster(&mut text, &cluster.id, &cluster.stats());
    }
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
pub(super) struct Info {
    api_key_required: bool,
    max_participants: usize,
    client_video_slots: usize,
    client_audio_slots: usize,
}

pub(super) async fn info(State(state): Shared) -> axum::Json<Info> {
    let c = &state.config;
    axum::Json(Info {
        api_key_required: c.api_key.is_some(),
        max_participants: c.max_participants,
        client_video_slots: c.client_video_slots,
        client_audio_slots: c.client_audio_slots,
    })
}
