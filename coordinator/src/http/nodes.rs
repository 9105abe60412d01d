//! `/v1/nodes`: registration, heartbeats, trial answers (callers: nodes) and the node list (anyone).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use veil_node::api::{
    self, HeartbeatReply, HeartbeatRequest, NodeView, RegisterRequest, TrialResult,
};

use super::{blocking, now_ms, with_state, Caller, HttpResult, Shared};
use crate::trial;

/// The routes of nodes.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route(api::REGISTER, post(register))
        .route(api::HEARTBEAT, post(heartbeat))
        .route(api::TRIAL, post(trial_result))
        .route(api::NODES, get(list_nodes))
}

async fn register(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RegisterRequest>,
) -> HttpResult<Json<NodeView>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.register(&key, req, now_ms()))
        .await
        .map(Json)
}

async fn heartbeat(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<HeartbeatRequest>,
) -> HttpResult<Json<HeartbeatReply>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.heartbeat(&key, req, now_ms()))
        .await
        .map(Json)
}

async fn trial_result(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(result): Json<TrialResult>,
) -> HttpResult<Json<NodeView>> {
    let key = caller.key()?;
    let id = result.id;
    let (node, task, tolerance) = with_state(&s, move |c| {
        let (node, task) = c.pending_trial(&key, id)?;
        Ok((node, task, c.config().trial_tolerance))
    })
    .await?;
    let passed = blocking(move || trial::check(&task, &result, tolerance)).await?;
    with_state(&s, move |c| c.record_trial(node, id, passed, now_ms()))
        .await
        .map(Json)
}

async fn list_nodes(State(s): State<Shared>) -> HttpResult<Json<Vec<NodeView>>> {
    with_state(&s, |c| Ok(c.nodes())).await.map(Json)
}
