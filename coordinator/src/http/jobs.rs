//! `/v1/jobs`: submission and listing, a job's status, and (callers: the submitter) cancellation, input
//! uploads per attempt, output and owner-material downloads.

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use veil_node::api::{self, JobView, SubmitRequest};

use super::{blocking, now_ms, read_blob, with_state, Caller, HttpResult, Shared};
use crate::core::{demand_for, encoder_demand_for};

/// The routes of jobs.
pub(super) fn router(max_blob: usize) -> Router<Shared> {
    Router::new()
        .route(api::JOBS, get(list_jobs).post(submit))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/explain", get(explain))
        .route("/v1/beacon", get(beacon))
        .route(
            "/v1/jobs/{id}/attempts/{attempt}/inputs/{party}",
            put(upload_input).layer(DefaultBodyLimit::max(max_blob)),
        )
        .route("/v1/jobs/{id}/outputs/{party}", get(download_output))
        .route(
            "/v1/jobs/{id}/attempts/{attempt}/owner",
            get(download_owner),
        )
}

async fn list_jobs(State(s): State<Shared>) -> HttpResult<Json<Vec<JobView>>> {
    with_state(&s, |c| Ok(c.jobs())).await.map(Json)
}

async fn submit(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<SubmitRequest>,
) -> HttpResult<Json<JobView>> {
    let key = caller.key()?;
    let check = req.clone();
    let r = req.clone();
    if let Some(name) = with_state(&s, move |c| c.job_encoder(&r)).await? {
        let demand = encoder_demand_for(&check, &name)?;
        return with_state(&s, move |c| c.submit(&key, req, demand, now_ms()))
            .await
            .map(Json);
    }
    let architecture = match req.model.is_some() {
        true => {
            let r = req.clone();
            Some(with_state(&s, move |c| c.job_architecture(&r)).await?)
        }
        false => None,
    };
    let demand = blocking(move || demand_for(&check, architecture.as_ref())).await?;
    with_state(&s, move |c| c.submit(&key, req, demand, now_ms()))
        .await
        .map(Json)
}

async fn job_status(State(s): State<Shared>, Path(id): Path<u64>) -> HttpResult<Json<JobView>> {
    with_state(&s, move |c| c.job_view(id)).await.map(Json)
}

/// Why the current committee: the draws, recheckable (`veil job N --explain`).
async fn explain(
    State(s): State<Shared>,
    Path(id): Path<u64>,
) -> HttpResult<Json<veil_scheduler::explain::JobExplanation>> {
    with_state(&s, move |c| c.explanation(id, now_ms()))
        .await
        .map(Json)
}

/// The draw beacon's anchor and last revealed secret.
async fn beacon(State(s): State<Shared>) -> HttpResult<Json<crate::core::beacon::BeaconView>> {
    with_state(&s, move |c| Ok(c.beacon_view(now_ms())))
        .await
        .map(Json)
}

async fn cancel(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
) -> HttpResult<Json<JobView>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.cancel(&key, id, now_ms()))
        .await
        .map(Json)
}

async fn upload_input(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt, party)): Path<(u64, u32, usize)>,
    body: Bytes,
) -> HttpResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| {
        c.upload_input(&key, id, attempt, party, body.into(), now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn download_output(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, party)): Path<(u64, usize)>,
) -> HttpResult<Vec<u8>> {
    let key = caller.key()?;
    read_blob(&s, move |c| c.download_output(&key, id, party)).await
}

async fn download_owner(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
) -> HttpResult<Vec<u8>> {
    let key = caller.key()?;
    read_blob(&s, move |c| c.download_owner(&key, id, attempt)).await
}
