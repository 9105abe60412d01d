//! veil's OpenAI-compatible gateway (`veil-gateway`): it runs on the enterprise's side, next to its
//! applications, and turns each request into private jobs: the plaintext is tokenised and secret-shared
//! here, sealed to the committee's parties, and the answer is reconstructed here, after the receipt checks
//! for a MAC-checked protocol. Applications change one base URL.
//!
//! Routes (OpenAI's request and response shapes, field names and status codes; unknown request fields are
//! ignored as OpenAI does):
//! - `GET /v1/models`, `GET /v1/models/{id}`;
//! - `POST /v1/embeddings`: `model`, `input` (a string or an array of strings), `encoding_format`
//!   (`float` or `base64`), `dimensions` (only the model's own); `usage.prompt_tokens`;
//! - `POST /v1/chat/completions`: `messages`, `max_tokens` / `max_completion_tokens`, `temperature`,
//!   `top_p`, `seed`, `stop`, `stream` (server-sent `chat.completion.chunk` events ending in
//!   `data: [DONE]`), `finish_reason`, `usage` (served when a [`ChatBackend`] is given:
//!   [`network_chat::NetworkChat`] runs SmolLM2 turns through the coordinator);
//! - `POST /v1/veil/predict` for veil's classifiers (not an OpenAI endpoint):
//!   `{"model": ID, "inputs": [[f32, ...], ...]}` (one row of raw features per prediction) answers
//!   `{"object": "list", "model": ID, "data": [{"object": "prediction", "index", "scores", "class",
//!   "label"}], "veil": {...}}`.
//!
//! Every answer carries a `veil` object ([`VeilInfo`]): the jobs, their protocol and committees (with each
//! member's operator), the receipts (checkable with `veil verify`), the time and the bytes.
//!
//! Errors are OpenAI's error object ([`ApiError`]): 401 for a missing or wrong bearer key, 404 for an
//! unknown model, 400 for a malformed body, an empty or oversized input or too many tokens, 413 for a body
//! over [`Limits::max_body_bytes`], 429 when [`Limits::max_concurrent`] requests are running, 503 when the
//! coordinator does not answer, 502 when a job fails or does not check.

#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
mod chat;
pub mod error;
pub mod network;
pub mod network_chat;
mod routes;
mod stream;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;

pub use auth::ApiKeys;
pub use backend::{
    Backend, BackendError, ChatBackend, ChatMessage, ChatOutput, ChatParams, EmbedOutput,
    FinishReason, JobInfo, MemberInfo, ModelEntry, ModelKind, PredictOutput, Prediction, VeilInfo,
};
pub use error::ApiError;

/// Names of the chat models veil knows (`veil models fetch` names): asked for from a gateway that does not
/// serve them, they answer a 404 that says how to serve them.
pub const CHAT_MODEL_NAMES: [&str; 1] = ["smollm2-135m-instruct"];

/// The gateway's bounds on what a request may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, bytes (413 above).
    pub max_body_bytes: usize,
    /// Requests running at once (429 above).
    pub max_concurrent: usize,
    /// Most texts in one `/v1/embeddings` request (400 above).
    pub max_inputs: usize,
    /// Most rows in one `/v1/veil/predict` request (400 above).
    pub max_rows: usize,
    /// Most messages in one chat request.
    pub max_messages: usize,
    /// Most tokens one chat completion may generate (`max_tokens` above it: 400; the default when unset).
    pub max_completion_tokens: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 2 << 20,
            max_concurrent: 16,
            max_inputs: 256,
            max_rows: 10_000,
            max_messages: 64,
            max_completion_tokens: 256,
        }
    }
}

/// The gateway's state: the backends, the accepted keys and the limits.
pub struct Gateway {
    backend: Arc<dyn Backend>,
    chat: Option<Arc<dyn ChatBackend>>,
    keys: ApiKeys,
    limits: Limits,
    /// Invariant: holds `limits.max_concurrent` permits; a request holds one until its answer (for a
    /// stream: its last event) is produced.
    permits: Arc<Semaphore>,
    /// Numbers the chat completions' ids.
    completions: AtomicU64,
}

impl Gateway {
    /// A gateway over `backend` (and `chat`, if chat models are served) accepting `keys`.
    pub fn new(
        backend: Arc<dyn Backend>,
        chat: Option<Arc<dyn ChatBackend>>,
        keys: ApiKeys,
        limits: Limits,
    ) -> Gateway {
        Gateway {
            backend,
            chat,
            keys,
            permits: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            limits,
            completions: AtomicU64::new(0),
        }
    }

    /// Every model served, embedding and classifier models first.
    pub fn models(&self) -> Vec<ModelEntry> {
        let mut models = self.backend.models();
        if let Some(chat) = &self.chat {
            models.extend(chat.models());
        }
        models
    }
}

/// The gateway's routes (see the crate doc).
pub fn router(gateway: Gateway) -> Router {
    let limit = gateway.limits.max_body_bytes;
    Router::new()
        .route("/v1/models", get(routes::list_models))
        .route("/v1/models/{id}", get(routes::get_model))
        .route("/v1/embeddings", post(routes::embeddings))
        .route("/v1/veil/predict", post(routes::predict))
        .route("/v1/chat/completions", post(chat::completions))
        .fallback(routes::fallback)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(Arc::new(gateway))
}

/// Serves `router` on `listener` until `shutdown` completes (then finishes the requests under way).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
