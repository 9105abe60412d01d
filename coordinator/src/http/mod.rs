//! The coordinator's HTTPS edge: axum routers over the [`Coordinator`], one per resource ([`nodes`],
//! [`jobs`], [`tasks`], [`models`], [`receipts`]), served with hyper over rustls (the caller's proven key,
//! if any, is attached to every request of its connection), the mapping of the core's errors to HTTP
//! statuses, and the timer that sweeps the registry, applies phase timeouts and places waiting jobs.
//!
//! Invariant: every state change runs on a blocking thread under the one state lock, and is committed to
//! the store before the reply leaves (see [`Coordinator`]).

mod drain;
mod jobs;
pub use jobs::check_fits;
#[cfg(test)]
pub(crate) use jobs::held_job_view;
pub mod limits;
mod models;
mod nodes;
#[cfg(test)]
pub(crate) use nodes::held_heartbeat;
mod receipts;
mod tasks;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use veil_node::api::ErrorBody;
use veil_node::PublicKey;

use crate::config::EdgeLimits;
use crate::error::{Error, ErrorKind, Result};
use crate::Coordinator;

/// The key a connection's client proved in the TLS handshake, if it presented one.
#[derive(Clone, Copy, Debug)]
struct Caller(pub(crate) Option<PublicKey>);

impl Caller {
    fn key(&self) -> Result<PublicKey> {
        self.0.ok_or(Error::NoCallerKey)
    }
}

/// The HTTP status of an error's kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as the HTTP edge answers it: its kind's status and its message as JSON. Internal errors are
/// logged here and answered without detail.
pub(crate) struct Reply(Error);

impl From<Error> for Reply {
    fn from(e: Error) -> Reply {
        Reply(e)
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        let error = match kind {
            ErrorKind::Internal => {
                tracing::error!("internal error: {}", self.0);
                format!("internal: {}", self.0)
            }
            _ => self.0.to_string(),
        };
        (status_of(kind), Json(ErrorBody { error })).into_response()
    }
}

/// What handlers return.
pub(crate) type HttpResult<T> = std::result::Result<T, Reply>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The state as the handlers share it.
pub type Shared = Arc<Mutex<Coordinator>>;

/// Runs `f` on the state, on a blocking thread (it may write to the database and to blob files).
///
/// A panic inside `f` does not poison the state: it is caught under the lock, the state is rebuilt from
/// the store (undoing `f`'s half-made change, see [`Coordinator::recover_from_panic`]) and the request gets
/// a 500. The lock itself is never left poisoned, so every later request is served as before.
async fn with_state<T: Send + 'static>(
    state: &Shared,
    f: impl FnOnce(&mut Coordinator) -> Result<T> + Send + 'static,
) -> HttpResult<T> {
    let state = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut c = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut c))) {
            Ok(result) => result,
            Err(_) => Err(c.recover_from_panic(now_ms())),
        }
    })
    .await
    .map_err(Error::invariant)?;
    Ok(outcome?)
}

/// An upload: writes `bytes` durably to the staging directory on a blocking thread outside the state
/// lock, then runs `f` with them under the lock, where the core's write of them is a rename
/// ([`crate::Coordinator::with_staged`]). So a large blob's write and sync do not hold up heartbeats.
async fn with_uploaded_blob<T: Send + 'static>(
    state: &Shared,
    bytes: Vec<u8>,
    f: impl FnOnce(&mut Coordinator, Vec<u8>) -> Result<T> + Send + 'static,
) -> HttpResult<T> {
    let blobs = with_state(state, |c| Ok(c.blobs().clone())).await?;
    let (bytes, staged) = blocking(move || {
        let staged = blobs
            .stage(&bytes)
            .map_err(|source| Error::Staging { source })?;
        Ok((bytes, staged))
    })
    .await?;
    with_state(state, move |c| c.with_staged(staged, |c| f(c, bytes))).await
}

/// Runs `f` on a blocking thread outside the state lock (a plaintext reference run, a plan compile).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> HttpResult<T> {
    let outcome = tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::invariant)?;
    Ok(outcome?)
}

/// Reads the blob that `name` picks (after checking the caller may read it, under the state lock), then
/// reads it from disk outside the lock, so a large download does not hold up other requests. A blob deleted
/// in between (its retention ended) is an error like any failed read.
async fn read_blob(
    state: &Shared,
    name: impl FnOnce(&crate::core::Core) -> Result<crate::blobs::BlobKey> + Send + 'static,
) -> HttpResult<Vec<u8>> {
    let (key, blobs) = with_state(state, move |c| Ok((name(c)?, c.blobs().clone()))).await?;
    blocking(move || crate::service::relay_blob(&blobs, key)).await
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
    /// Where `/metrics` is served (plain HTTP), if anywhere.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// The API's routes: one router per resource, merged, with the edge's limits and the test-only recorder.
///
/// Body limits are per route: `limits.max_json_bytes` for JSON (the default), `max_blob` only on the
/// routes that take a blob upload (inputs, outputs, owner material, transcripts), 4 x the largest
/// architecture on deployments (its JSON is escaped inside the request), and an ONNX file's upload is
/// bounded by `veil_node::onnx_model::MAX_ONNX_BYTES` while it is read (`models::read_bounded`). Rates, the concurrency cap and the
/// request timeout apply to every request before it reaches a handler ([`limits::enforce`]).
pub fn router(state: Shared, edge: Arc<limits::Edge>, max_blob: usize) -> Router {
    let json_limit = edge.max_json_bytes();
    Router::new()
        .merge(nodes::router())
        .merge(jobs::router(max_blob))
        .merge(tasks::router(max_blob))
        .merge(models::router())
        .merge(receipts::router())
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                record_body(req, next, max_blob)
            },
        ))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                limits::enforce(edge.clone(), req, next)
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

/// Accepts TLS connections and serves the router on each; the client's key rides along as [`Caller`], its
/// address as [`limits::Peer`].
///
/// Limits: at most `limits.max_connections` connections are served at once (further ones wait in the
/// kernel's backlog); a TLS handshake that takes longer than `handshake_timeout_ms` is dropped; a request's
/// head must arrive within `header_timeout_ms`, and since hyper runs that clock whenever a connection waits
/// for a head, an idle kept-alive connection is closed after it too.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: &EdgeLimits,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.max_connections as usize));
    let handshake_timeout = Duration::from_millis(limits.handshake_timeout_ms);
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
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
            let _permit = permit;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let caller = Caller(tls::peer_key(stream.get_ref().1));
            let service = TowerToHyperService::new(
                app.layer(Extension(caller))
                    .layer(Extension(limits::Peer(peer))),
            );
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

/// Reloads `[admission]` from the configuration file at `path` whenever the file changes (checked every
/// `period`): operators taken out are drained and their attempts rescheduled. A file that no longer loads is
/// logged and ignored (the running configuration stays).
pub async fn watch_admission(state: Shared, path: std::path::PathBuf, period: Duration) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = modified(&path);
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = modified(&path);
        if now == last {
            continue;
        }
        last = now;
        let admission = match crate::CoordinatorConfig::load(&path) {
            Ok(config) => config.admission,
            Err(e) => {
                tracing::error!(
                    "reloading {}: {e} (the running configuration stays)",
                    path.display()
                );
                continue;
            }
        };
        match with_state(&state, move |c| {
            c.update(|core| core.set_admission(admission, now_ms()))
        })
        .await
        {
            Ok(drained) => tracing::info!(drained = drained.len(), "admission reloaded"),
            Err(Reply(e)) => tracing::error!("reloading the admission: {e}"),
        }
    }
}

/// Every `tick`, sweeps the registry, applies phase timeouts and places waiting jobs.
pub async fn timer(state: Shared, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(Reply(e)) = with_state(&state, |c| c.tick(now_ms())).await {
            tracing::error!("timer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_node::Identity;

    fn state(dir: &std::path::Path) -> Shared {
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.display()
        );
        let config: crate::config::CoordinatorConfig = toml::from_str(&text).unwrap();
        let c = Coordinator::open(config, Identity::generate().unwrap(), now_ms()).unwrap();
        Arc::new(std::sync::Mutex::new(c))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_under_the_lock_poisons_nothing_and_keeps_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let owner = Identity::generate().unwrap().public_key();
        // A request that deploys a model (committed at once), then panics before returning.
        let outcome = with_state(&s, move |c| {
            c.deploy(
                &owner,
                veil_node::api::DeployRequest {
                    id: "ab".repeat(32),
                    architecture: r#"{"name":"m","input":[2],"layers":[{"linear":{"inputs":2,"outputs":1}}],"labels":[],"preprocess":null}"#.into(),
                    weights: "shared".into(),
                    parties: 2,
                    frac_bits: 16,
                    protocol: "semi2k".into(),
                    pretrained: None,
                    onnx: false,
                    onnx_file: None,
                },
                now_ms(),
            )?;
            if c.models().len() == 1 {
                panic!("a bug under the lock");
            }
            Ok(())
        })
        .await;
        assert!(outcome.is_err(), "the panicking request gets an error");
        assert!(!s.is_poisoned(), "the lock is not poisoned");
        // Later requests are served, on the state rebuilt from the store: the committed deployment is there.
        let models = with_state(&s, |c| Ok(c.models().len()))
            .await
            .map_err(|_| ());
        assert_eq!(models, Ok(1));
    }
}
