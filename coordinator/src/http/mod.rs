//! The coordinator's HTTPS server: an axum router over the [`Coordinator`] state, served with hyper over
//! rustls (the caller's proven key, if any, is attached to every request of its connection), and the timer
//! that sweeps the registry, applies phase timeouts and places waiting jobs.
//!
//! Invariant: every state change runs on a blocking thread under the one state lock, and is committed to
//! the store before the reply leaves (see [`Coordinator`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use veil_node::PublicKey;

use super::api::{
    self, DeployRequest, ErrorBody, HeartbeatReply, HeartbeatRequest, JobView, ModelView, NodeView,
    ReceiptEntry, RegisterRequest, SubmitRequest, TaskFailure, TrialResult,
};
use super::error::{ApiError, ApiResult};
use super::state::{demand_for, Coordinator};
use super::trial;

/// The key a connection's client proved in the TLS handshake, if it presented one.
#[derive(Clone, Copy, Debug)]
struct Caller(Option<PublicKey>);

impl Caller {
    fn key(&self) -> ApiResult<PublicKey> {
        self.0.ok_or_else(|| {
            ApiError::Forbidden("this route needs a client certificate (a veil identity)".into())
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type Shared = Arc<Mutex<Coordinator>>;

/// Runs `f` on the state, on a blocking thread (it may write to the database and to blob files).
async fn with_state<T: Send + 'static>(
    state: &Shared,
    f: impl FnOnce(&mut Coordinator) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = state
            .lock()
            .map_err(|_| ApiError::Internal("state lock poisoned".into()))?;
        f(&mut c)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// The line `veil coordinator` prints on stdout once it listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// Always `"ready"`.
    pub event: String,
    /// The bound address.
    pub address: SocketAddr,
    /// The coordinator's public key (nodes and clients pin it).
    pub public_key: String,
}

/// The API's routes.
pub fn router(state: Shared, max_blob: usize) -> Router {
    Router::new()
        .route(api::REGISTER, post(register))
        .route(api::HEARTBEAT, post(heartbeat))
        .route(api::TRIAL, post(trial_result))
        .route(api::NODES, get(list_nodes))
        .route(api::JOBS, get(list_jobs).post(submit))
        .route(api::MODELS, get(list_models).post(deploy))
        .route(api::RECEIPTS, get(list_receipts))
        .route("/v1/models/{id}/stages", get(model_stages))
        .route("/v1/jobs/{id}/receipt", get(job_receipt))
        .route(
            "/v1/jobs/{id}/attempts/{attempt}/owner",
            get(download_owner),
        )
        .route("/v1/tasks/{id}/{attempt}/owner", put(task_owner))
        .route("/v1/tasks/{id}/{attempt}/transcript", put(task_transcript))
        .route(
            "/v1/tasks/{id}/{attempt}/evidence/{kind}/{party}",
            get(task_evidence),
        )
        .route("/v1/tasks/{id}/{attempt}/receipt", put(task_receipt))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route(
            "/v1/jobs/{id}/attempts/{attempt}/inputs/{party}",
            put(upload_input),
        )
        .route("/v1/jobs/{id}/outputs/{party}", get(download_output))
        .route("/v1/tasks/{id}/{attempt}/accepted", post(task_accepted))
        .route("/v1/tasks/{id}/{attempt}/failed", post(task_failed))
        .route("/v1/tasks/{id}/{attempt}/input", get(task_input))
        .route("/v1/tasks/{id}/{attempt}/output", put(task_output))
        .layer(DefaultBodyLimit::max(max_blob))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                record_body(req, next, max_blob)
            },
        ))
        .with_state(state)
}

/// TEST ONLY (`veil_node::record`): records each request body the coordinator receives, then passes the
/// request on unchanged. A no-op unless the recorder is on.
async fn record_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    max_blob: usize,
) -> Response {
    if !veil_node::record::enabled() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, max_blob).await {
        Ok(bytes) => {
            veil_node::record::received(&bytes);
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    }
}

async fn register(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<Json<NodeView>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.register(&key, req, now_ms()))
        .await
        .map(Json)
}

async fn heartbeat(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<HeartbeatRequest>,
) -> ApiResult<Json<HeartbeatReply>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.heartbeat(&key, req, now_ms()))
        .await
        .map(Json)
}

async fn trial_result(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(result): Json<TrialResult>,
) -> ApiResult<Json<NodeView>> {
    let key = caller.key()?;
    let id = result.id;
    let (node, task, tolerance) = with_state(&s, move |c| {
        let (node, task) = c.pending_trial(&key, id)?;
        Ok((node, task, c.config().trial_tolerance))
    })
    .await?;
    let passed = tokio::task::spawn_blocking(move || trial::check(&task, &result, tolerance))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    with_state(&s, move |c| c.record_trial(node, id, passed, now_ms()))
        .await
        .map(Json)
}

async fn list_nodes(State(s): State<Shared>) -> ApiResult<Json<Vec<NodeView>>> {
    with_state(&s, |c| Ok(c.nodes())).await.map(Json)
}

async fn list_models(State(s): State<Shared>) -> ApiResult<Json<Vec<ModelView>>> {
    with_state(&s, |c| Ok(c.models())).await.map(Json)
}

async fn deploy(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<DeployRequest>,
) -> ApiResult<Json<ModelView>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.deploy(&key, req, now_ms()))
        .await
        .map(Json)
}

async fn model_stages(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> ApiResult<Json<super::api::StagesView>> {
    with_state(&s, move |c| c.model_stages(&id)).await.map(Json)
}

async fn list_receipts(State(s): State<Shared>) -> ApiResult<Json<Vec<ReceiptEntry>>> {
    with_state(&s, |c| Ok(c.receipts())).await.map(Json)
}

async fn job_receipt(
    State(s): State<Shared>,
    Path(id): Path<u64>,
) -> ApiResult<Json<ReceiptEntry>> {
    with_state(&s, move |c| c.receipt(id)).await.map(Json)
}

async fn download_owner(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
) -> ApiResult<Vec<u8>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.download_owner(&key, id, attempt)).await
}

async fn task_owner(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| c.task_owner(&key, id, attempt, &body))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

async fn task_transcript(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| {
        c.task_transcript(&key, id, attempt, &body, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn task_evidence(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt, kind, party)): Path<(u64, u32, String, usize)>,
) -> ApiResult<Vec<u8>> {
    let key = caller.key()?;
    with_state(&s, move |c| {
        c.task_evidence(&key, id, attempt, &kind, party)
    })
    .await
}

async fn task_receipt(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    body: String,
) -> ApiResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| {
        c.task_receipt(&key, id, attempt, &body, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn list_jobs(State(s): State<Shared>) -> ApiResult<Json<Vec<JobView>>> {
    with_state(&s, |c| Ok(c.jobs())).await.map(Json)
}

async fn submit(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<SubmitRequest>,
) -> ApiResult<Json<JobView>> {
    let key = caller.key()?;
    let check = req.clone();
    let architecture = match req.model.is_some() {
        true => {
            let r = req.clone();
            Some(with_state(&s, move |c| c.job_architecture(&r)).await?)
        }
        false => None,
    };
    let demand = tokio::task::spawn_blocking(move || demand_for(&check, architecture.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    with_state(&s, move |c| c.submit(&key, req, demand, now_ms()))
        .await
        .map(Json)
}

async fn job_status(State(s): State<Shared>, Path(id): Path<u64>) -> ApiResult<Json<JobView>> {
    with_state(&s, move |c| c.job_view(id)).await.map(Json)
}

async fn cancel(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
) -> ApiResult<Json<JobView>> {
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
) -> ApiResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| {
        c.upload_input(&key, id, attempt, party, &body, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

async fn download_output(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, party)): Path<(u64, usize)>,
) -> ApiResult<Vec<u8>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.download_output(&key, id, party)).await
}

async fn task_accepted(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
) -> ApiResult<StatusCode> {
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
) -> ApiResult<StatusCode> {
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
) -> ApiResult<Vec<u8>> {
    let key = caller.key()?;
    with_state(&s, move |c| c.task_input(&key, id, attempt)).await
}

async fn task_output(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((id, attempt)): Path<(u64, u32)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let key = caller.key()?;
    with_state(&s, move |c| {
        c.task_output(&key, id, attempt, &body, now_ms())
    })
    .await
    .map(|()| StatusCode::NO_CONTENT)
}

/// Accepts TLS connections and serves the router on each; the client's key rides along as [`Caller`].
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let caller = Caller(super::tls::peer_key(stream.get_ref().1));
            let service = TowerToHyperService::new(app.layer(Extension(caller)));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

/// Every `tick`, sweeps the registry, applies phase timeouts and places waiting jobs.
pub async fn timer(state: Shared, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = with_state(&state, |c| c.tick(now_ms())).await {
            tracing::error!("timer: {e}");
        }
    }
}
