//! `/v1/nodes`: registration, heartbeats, trial acceptances and reports (callers: nodes) and the node list
//! (anyone).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use veil_node::api::{
    self, HeartbeatReply, HeartbeatRequest, NodeView, RegisterRequest, TrialAccepted, TrialReport,
};

use super::{blocking, now_ms, with_state, Caller, HttpResult, Shared};
use crate::core::trials::TrialStep;
use crate::trial;

/// The routes of nodes.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route(api::REGISTER, post(register))
        .route(api::HEARTBEAT, post(heartbeat))
        .route(api::TRIAL, post(trial_report))
        .route(api::TRIAL_ACCEPTED, post(trial_accepted))
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
    held_heartbeat(&s, key, req).await.map(Json)
}

/// A heartbeat as a long poll: recorded at once (liveness, load, RTTs); answered at once unless the reply
/// equals the one the node saw and it asked to wait, else held (no lock across the wait) until the node's
/// reply changes (a task assigned, its go, an attempt over: [`crate::holds`]) or the wait ends, and then
/// answered with the reply of that moment.
pub(crate) async fn held_heartbeat(
    s: &Shared,
    key: veil_node::PublicKey,
    req: HeartbeatRequest,
) -> HttpResult<HeartbeatReply> {
    let seen = req.seen.clone();
    let (reply, hold) = with_state(s, move |c| c.heartbeat_held(&key, req, now_ms())).await?;
    let Some(mut hold) = hold else {
        return Ok(reply);
    };
    let held = tokio::time::Instant::now();
    let deadline = held + hold.wait;
    loop {
        let woken = tokio::time::timeout_at(deadline, hold.changed()).await;
        let mut reply = with_state(s, move |c| c.heartbeat_reply(&key, now_ms())).await?;
        // A wake that left this node's reply as it was (another member's upload, say): wait on.
        if !matches!(woken, Ok(true)) || reply.tag != seen {
            reply.held_ms = u64::try_from(held.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Ok(reply);
        }
    }
}

async fn trial_accepted(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<TrialAccepted>,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| c.trial_accepted(&key, body.id))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

/// A party's report; once both shares are in, the output is opened and checked outside the lock (the
/// reference takes a plaintext run) and the outcome recorded.
async fn trial_report(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(report): Json<TrialReport>,
) -> HttpResult<Json<NodeView>> {
    let key = caller.key()?;
    let id = report.id;
    let (node, step, tolerance) = with_state(&s, move |c| {
        let (node, step) = c.trial_report(&key, report, now_ms())?;
        Ok((node, step, c.config().trial_tolerance))
    })
    .await?;
    if let TrialStep::Check(check) = step {
        let checked = blocking(move || trial::check(&check, tolerance)).await?;
        with_state(&s, move |c| {
            c.record_trial_check(id, checked.correct, checked.ops, now_ms())
        })
        .await?;
    }
    with_state(&s, move |c| c.node_view(node)).await.map(Json)
}

async fn list_nodes(State(s): State<Shared>) -> HttpResult<Json<Vec<NodeView>>> {
    with_state(&s, |c| Ok(c.nodes())).await.map(Json)
}
