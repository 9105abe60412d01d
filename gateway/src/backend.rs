//! What the routes run on: [`Backend`] (embeddings and classifiers; [`crate::network::NetworkBackend`]
//! runs them as private jobs through a coordinator) and [`ChatBackend`] (chat models). The routes own the
//! HTTP schema, limits and errors; a backend owns tokenising, the jobs and the receipts.

use std::ops::ControlFlow;

use serde::Serialize;

use crate::error::ApiError;

/// What kind of model an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A sentence encoder: `POST /v1/embeddings`.
    Embedding,
    /// A `Sequential` classifier: `POST /v1/veil/predict`.
    Classifier,
    /// A chat model: `POST /v1/chat/completions`.
    Chat,
}

/// A served model as `GET /v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The id clients name (`all-minilm-l6-v2`, or a deployed model's hex id).
    pub id: String,
    /// Its kind.
    pub kind: ModelKind,
    /// Unix time of its deployment, seconds.
    pub created: u64,
    /// The deployer's key (hex).
    pub owned_by: String,
    /// The protocol of its jobs.
    pub protocol: String,
}

/// A committee member in the `veil` extension object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberInfo {
    /// Node id at the coordinator, where the job's status names it.
    pub node: Option<u32>,
    /// The node's Ed25519 key (hex), where the job's status names it.
    pub public_key: Option<String>,
    /// Its operator (collusion domain), as the coordinator lists it; `None` if the node is not listed.
    pub operator: Option<String>,
}

/// One job in the `veil` extension object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    /// The coordinator's job id.
    pub id: u64,
    /// The attempt that answered.
    pub attempt: u32,
    /// Which inputs of the request it computed (their indices).
    pub inputs: Vec<usize>,
    /// Tokens per input (embeddings), or rows' batch (classifiers).
    pub tokens: usize,
    /// The parties of its committee, in party order.
    pub parties: Vec<MemberInfo>,
    /// The dealer.
    pub dealer: Option<MemberInfo>,
    /// The verifier.
    pub verifier: Option<MemberInfo>,
    /// The receipt (`veil receipt v1` JSON; save it and run `veil verify FILE --coordinator-key KEY`),
    /// checked by the gateway before it answered. `None` for a protocol without one (semi2k).
    pub receipt: Option<serde_json::Value>,
    /// Where the coordinator serves the receipt too.
    pub receipt_path: Option<String>,
    /// Bytes the parties sent to each other, summed over the parties.
    pub party_bytes_sent: u64,
    /// Bytes the dealer sent to the parties, summed.
    pub dealer_bytes: u64,
    /// Seconds from submission to done, as the coordinator's history records them.
    pub job_seconds: Option<f64>,
}

/// The `veil` extension object every answer carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VeilInfo {
    /// The protocol of the jobs.
    pub protocol: String,
    /// The deployed model id the jobs ran.
    pub model_id: String,
    /// The jobs, with their committees and receipts.
    pub jobs: Vec<JobInfo>,
    /// Whether every job's receipt was checked before answering (MAC-checked protocols only).
    pub verified: bool,
    /// Seconds the gateway spent on the request (tokenising, jobs, checks).
    pub seconds: f64,
    /// Bytes: parties' plus dealer's, over every job.
    pub bytes: u64,
}

/// The answer of [`Backend::embed`].
#[derive(Debug, Clone)]
pub struct EmbedOutput {
    /// One embedding per input, in order.
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens over every input (special tokens included).
    pub prompt_tokens: usize,
    /// The extension object.
    pub veil: VeilInfo,
}

/// One classified row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The row's index in the request.
    pub index: usize,
    /// The model's output scores.
    pub scores: Vec<f32>,
    /// The argmax class, if the scores have one.
    pub class: Option<usize>,
    /// Its label.
    pub label: Option<String>,
}

/// The answer of [`Backend::predict`].
#[derive(Debug, Clone)]
pub struct PredictOutput {
    /// One prediction per row, in order.
    pub predictions: Vec<Prediction>,
    /// The extension object.
    pub veil: VeilInfo,
}

/// Why a backend call failed; each maps to one OpenAI-shaped answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The model is not served.
    #[error("model {0} is not served")]
    UnknownModel(String),
    /// The model is of another kind than the route's.
    #[error("model {model} is a {kind:?} model")]
    WrongKind {
        /// The model.
        model: String,
        /// Its kind.
        kind: ModelKind,
    },
    /// An input has more tokens than the model takes.
    #[error("input {index} has more than {max} tokens")]
    TooManyTokens {
        /// The input.
        index: usize,
        /// The model's limit.
        max: usize,
    },
    /// An input the model cannot take (shape, empty text, non-finite number).
    #[error("input {index}: {reason}")]
    BadInput {
        /// The input.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The coordinator did not answer.
    #[error("coordinator unreachable: {0}")]
    Unreachable(String),
    /// The job failed, was refused, or its result did not check.
    #[error("{0}")]
    JobFailed(String),
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        match &e {
            BackendError::UnknownModel(model) => ApiError::model_not_found(model),
            BackendError::WrongKind { .. } => ApiError::bad_request(format!(
                "{e}: use /v1/embeddings for embedding models, /v1/chat/completions for chat models and /v1/veil/predict for classifiers"
            ))
            .param("model")
            .code("wrong_model_kind"),
            BackendError::TooManyTokens { .. } => ApiError::bad_request(format!(
                "{e}: shorten it (this gateway does not truncate)"
            ))
            .param("input")
            .code("context_length_exceeded"),
            BackendError::BadInput { .. } => ApiError::bad_request(e.to_string()).param("input"),
            BackendError::Unreachable(_) => ApiError::unavailable(e.to_string()),
            BackendError::JobFailed(_) => ApiError::job_failed(e.to_string()),
        }
    }
}

/// Embeddings and classifiers.
pub trait Backend: Send + Sync + 'static {
    /// The models served (embedding and classifier kinds).
    fn models(&self) -> Vec<ModelEntry>;
    /// Embeds `texts` (non-empty, each non-empty) with `model`.
    fn embed(&self, model: &str, texts: &[String]) -> Result<EmbedOutput, BackendError>;
    /// Classifies `rows` (non-empty) with `model`.
    fn predict(&self, model: &str, rows: &[Vec<f32>]) -> Result<PredictOutput, BackendError>;
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatParams {
    /// The conversation, oldest first (at least one message).
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop sequences (at most 4, each 1 to 256 bytes). The route cuts the text at the first one whatever
    /// the backend does; a backend that can end its generation there should.
    pub stop: Vec<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn, or a stop sequence was met.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

/// The answer of [`ChatBackend::complete`].
#[derive(Debug, Clone)]
pub struct ChatOutput {
    /// Tokens of the prompt (the templated conversation).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Why it ended (the route overrides it with `stop` when a stop sequence ended it).
    pub finish_reason: FinishReason,
    /// The extension object.
    pub veil: VeilInfo,
}

/// Chat models. `on_text` gets each piece of generated text as soon as it is opened; it returns
/// `ControlFlow::Break` to stop the generation (a stop sequence was met, or the client went away).
pub trait ChatBackend: Send + Sync + 'static {
    /// The chat models served.
    fn models(&self) -> Vec<ModelEntry>;
    /// Generates the assistant's next turn.
    fn complete(
        &self,
        model: &str,
        params: &ChatParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<ChatOutput, BackendError>;
}
