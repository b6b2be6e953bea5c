//! `GET /v1/rooms/{room}/participants/{participant}/bandwidth`: one
//! subscriber's downlink as the allocator sees it (estimate, allocated,
//! delivered, per-slot layers, pauses). Readable by the participant itself
//! and by the room's owner.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::super::AppState;
use super::super::error::ApiError;
use crate::ParticipantId;

/// One video slot in [`BandwidthView`].
#[derive(Debug, Serialize)]
pub(super) struct SlotView {
    mid: String,
    participant: Option<String>,
    layer: Option<String>,
    target_layer: Option<String>,
    paused: bool,
    bandwidth_paused: bool,
}

/// The response body.
#[derive(Debug, Serialize)]
pub(super) struct BandwidthView {
    participant: String,
    estimate_bps: Option<u64>,
    allocated_bps: u64,
    desired_bps: u64,
    delivered_bps: u64,
    queue_delay_ms: u64,
    congested: bool,
    pauses: u64,
    paused_slots: usize,
    slot_switches: u64,
    slots: Vec<SlotView>,
}

pub(super) async fn participant_bandwidth(
    State(state): State<Arc<AppState>>,
    Path((slug, participant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<BandwidthView>, ApiError> {
    let claims = super::verify_for_room(&state, super::bearer(&headers)?, &slug)?;
    let pid: ParticipantId = participant.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_participant",
            format!("{participant:?} is not a participant id (they look like p12)"),
        )
    })?;
    if claims.participant() != Some(pid) && !claims.has(super::super::tokens::Grant::Admin) {
        return Err(ApiError::forbidden(
            "not_owner",
            "only the participant itself or the room owner can read its bandwidth",
        ));
    }
    let id = {
        let rooms = state.rooms();
        let room = rooms
            .get(&slug)
            .ok_or_else(|| ApiError::unknown_room(&slug))?;
        super::check_not_kicked(room, &claims)?;
        room.id
    };
    let engine = state.engine.clone();
    let s = super::blocking(move || engine.subscriber_stats(id, pid))
        .await?
        .map_err(|e| ApiError::from_engine(e, &slug))?;
    Ok(axum::Json(BandwidthView {
        participant: s.participant.to_string(),
        estimate_bps: s.estimate_bps,
        allocated_bps: s.allocated_bps,
        desired_bps: s.desired_bps,
        delivered_bps: s.delivered_bps,
        queue_delay_ms: s.queue_delay.as_millis() as u64,
        congested: s.congested,
        pauses: s.pauses,
        paused_slots: s.paused_slots,
        slot_switches: s.slot_switches,
        slots: s
            .slots
            .iter()
            .map(|x| SlotView {
                mid: x.mid.clone(),
                participant: x.publisher.map(|p| p.to_string()),
                layer: x.current_layer.map(|l| l.name()),
                target_layer: x.target_layer.map(|l| l.name()),
                paused: x.paused,
                bandwidth_paused: x.bandwidth_paused,
            })
            .collect(),
    }))
}
