//! `/v1/tasks/{job}/{attempt}/...`: committee members acting on their tasks (callers: the members'
//! nodes): accept, fail, fetch the input, return the output, the transcript, the owner material; the
//! verifier's evidence and receipt.

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use veil_node::api::TaskFailure;

use super::{
    blocking, now_ms, read_blob, with_state, with_uploaded_blob, Caller, HttpResult, Shared,
};
use crate::blobs::Direction;

/// Refuses an upload that is not the caller's signed evidence for its slot: the slot is looked up under
/// the state lock, the blob hashed and its signature checked outside it. Returns the blob.
async fn checked_evidence(
    s: &Shared,
    key: veil_node::PublicKey,
    job: u64,
    attempt: u32,
    dir: Direction,
    body: Bytes,
) -> HttpResult<Vec<u8>> {
    let slot = with_state(s, move |c| c.upload_slot(&key, job, attempt, dir)).await?;
    let bytes: Vec<u8> = body.into();
    blocking(move || slot.check(&bytes).map(|()| bytes)).await
}

/// The routes of tasks.
pub(super) fn router(max_blob: usize) -> Router<Shared> {
    let blob = || DefaultBodyLimit::max(max_blob);
    Router::new()
        .route("/v1/tasks/{id}/{attempt}/accepted", post(task_accepted))
        .route("/v1/tasks/{id}/{attempt}/failed", post(task_failed))
        .route("/v1/tasks/{id}/{attempt}/input", get(task_input))
        .route(
            "/v1/tasks/{id}/{attempt}/output",
            put(task_output).layer(blob()),
        )
        .route(
            "/v1/tasks/{id}/{attempt}/owner",
            put(task_owner).layer(blob()),
        )
        .route(
            "/v1/tasks/{id}/{attempt}/transcript",
            put(task_transcript).layer(blob()),
        )
        .route(
            "/v1/tasks/{id}/{attempt}/evidence/{kind}/{party}",
            get(task_evidence),
        )
        .route("/v1/tasks/{id}/{attempt}/receipt", put(task_receipt))
}

async fn task_accepted(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| c.task_accepted(&key, id, attempt, now_ms()))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

async fn task_failed(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    Json(failure): Json<TaskFailure>,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| {
        c.task_failed(&key, id, attempt, &failure, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn task_input(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
) -> HttpResult<Vec<u8>> {
    let key = caller.key()?;
    read_blob(&s, move |c| c.task_input(&key, id, attempt)).await
}

async fn task_output(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    body: Bytes,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    let bytes = checked_evidence(&s, key, id, attempt, Direction::Output, body).await?;
    with_uploaded_blob(&s, bytes, move |c, bytes| {
        c.task_output(&key, id, attempt, bytes, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn task_owner(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    body: Bytes,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    let bytes = checked_evidence(&s, key, id, attempt, Direction::Owner, body).await?;
    with_uploaded_blob(&s, bytes, move |c, bytes| {
        c.task_owner(&key, id, attempt, bytes)
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn task_transcript(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    body: Bytes,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    let bytes = checked_evidence(&s, key, id, attempt, Direction::Transcript, body).await?;
    with_uploaded_blob(&s, bytes, move |c, bytes| {
        c.task_transcript(&key, id, attempt, bytes, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn task_evidence(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt, kind, party)): Path<(u64, u32, String, usize)>,
) -> HttpResult<Vec<u8>> {
    let key = caller.key()?;
    read_blob(&s, move |c| {
        c.task_evidence(&key, id, attempt, &kind, party)
    })
    .await
}

async fn task_receipt(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    body: String,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| {
        c.task_receipt(&key, id, attempt, &body, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}
