//! Chat on the network: [`NetworkChat`] runs each chat completion as one private turn of SmolLM2 through the
//! coordinator (`veil_client::Client::chat`): the prompt is rendered with the model file's own chat template
//! and tokenised here, its embedded vectors are secret-shared to the committee, and every token is chosen
//! here from the logits reconstructed here; the parties learn the prompt's length and the number of tokens.
//!
//! Generation runs semi2k (no MAC check yet), so its answers carry no receipt (`verified: false`).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use veil_client::{CallError, ChatError, ChatModelFile, ChatOptions, Client};
use veil_engine::llama::template::Message;
use veil_engine::llama::Sampling;
use veil_node::api::{self, ModelView};
use veil_node::generation::{smollm2_path, SMOLLM2};
use veil_protocols::protocol::Protocol;
use veil_protocols::ring::FixedPoint;

use crate::backend::{
    BackendError, ChatBackend, ChatOutput, ChatParams, FinishReason, JobInfo, MemberInfo,
    ModelEntry, ModelKind, VeilInfo,
};
use crate::network::{NetworkConfig, StartError};

/// The protocol private generation runs.
const PROTOCOL: Protocol = Protocol::Semi2k;

/// The coordinator-backed [`ChatBackend`] for SmolLM2-135M-Instruct.
pub struct NetworkChat {
    client: Client,
    /// The QUIC endpoint the turns run on (the parties admit its identity, the gateway's).
    quic: veil_node::client::Client,
    file: ChatModelFile,
    entry: ModelEntry,
    parties: u8,
    timeout: Duration,
}

fn model_error(reason: impl std::fmt::Display) -> StartError {
    StartError::Model {
        name: SMOLLM2.to_string(),
        reason: reason.to_string(),
    }
}

impl NetworkChat {
    /// Whether the chat model's file is fetched (`veil models fetch smollm2-135m-instruct`).
    pub fn fetched() -> bool {
        smollm2_path().exists()
    }

    /// Loads the fetched model file, and deploys it (semi2k, public weights) when the coordinator lacks it.
    pub fn connect(config: &NetworkConfig) -> Result<NetworkChat, StartError> {
        let (identity, client) = crate::network::session(config)?;
        let path = smollm2_path();
        let file = ChatModelFile::load(&path)
            .map_err(|e| model_error(format!("{e} (run `veil models fetch {SMOLLM2}` first)")))?;
        let deployments: Vec<ModelView> = client
            .api()
            .get_json(api::MODELS)
            .map_err(crate::network::call_error)?;
        let deployment = match deployments
            .into_iter()
            .find(|m| m.id == file.id && m.deployment.pretrained.as_deref() == Some(SMOLLM2))
        {
            Some(view) => view,
            None => client
                .deploy_pretrained(
                    SMOLLM2,
                    &file.id,
                    config.parties,
                    FixedPoint::default().frac_bits(),
                    PROTOCOL.name(),
                )
                .map_err(|e| match e.downcast::<CallError>() {
                    Ok(call) => crate::network::call_error(call),
                    Err(other) => model_error(format!("deploying: {other:#}")),
                })?,
        };
        let quic =
            veil_node::client::Client::new(identity, veil_node::client::ClientOptions::default())
                .map_err(|e| model_error(format!("QUIC endpoint: {e}")))?;
        Ok(NetworkChat {
            client,
            quic,
            file,
            entry: ModelEntry {
                id: SMOLLM2.to_string(),
                kind: ModelKind::Chat,
                created: deployment.deployed_at_ms / 1000,
                owned_by: deployment.owner.clone(),
                protocol: PROTOCOL.to_string(),
            },
            parties: deployment.deployment.parties,
            timeout: config.job_timeout,
        })
    }
}

fn chat_error(e: ChatError) -> BackendError {
    match e {
        ChatError::InvalidRequest(reason) => BackendError::BadInput { index: 0, reason },
        ChatError::Coordinator(call) if call.status().is_none() => {
            BackendError::Unreachable(call.to_string())
        }
        other => BackendError::JobFailed(other.to_string()),
    }
}

impl ChatBackend for NetworkChat {
    fn models(&self) -> Vec<ModelEntry> {
        vec![self.entry.clone()]
    }

    fn complete(
        &self,
        model: &str,
        params: &ChatParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<ChatOutput, BackendError> {
        if model != self.entry.id {
            return Err(BackendError::UnknownModel(model.to_string()));
        }
        let started = Instant::now();
        let messages: Vec<Message> = params
            .messages
            .iter()
            .map(|m| Message {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        let prompt = self.file.prompt_tokens(&messages).map_err(chat_error)?;
        let sampling = if params.temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Nucleus {
                temperature: f64::from(params.temperature),
                top_p: f64::from(params.top_p),
                seed: params.seed.unwrap_or_else(rand_seed),
            }
        };
        let options = ChatOptions {
            max_tokens: params.max_tokens as usize,
            sampling,
            stop: params.stop.clone(),
            parties: self.parties,
            timeout: self.timeout,
        };
        // Once the route says stop (a stop sequence the SDK also ends on, or a client gone), the turn ends
        // at that token: the committee generates nothing more.
        let mut open = true;
        let turn = self
            .client
            .chat(&self.quic, &self.file, &prompt, &options, |_, text| {
                if open && !text.is_empty() && on_text(text).is_break() {
                    open = false;
                }
                // A stream whose reader went away stops the turn: nothing more would be read.
                match open {
                    true => std::ops::ControlFlow::Continue(()),
                    false => std::ops::ControlFlow::Break(()),
                }
            })
            .map_err(chat_error)?;
        let member = |operator: &String| MemberInfo {
            node: None,
            public_key: None,
            operator: Some(operator.clone()),
        };
        let bytes: u64 = turn.bytes_per_party.iter().sum();
        let job = JobInfo {
            id: turn.job,
            attempt: 1,
            inputs: vec![0],
            tokens: turn.prompt_tokens.len(),
            parties: turn.committee.parties.iter().map(member).collect(),
            dealer: Some(member(&turn.committee.dealer)),
            verifier: None,
            receipt: turn
                .receipt
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok()),
            receipt_path: None,
            party_bytes_sent: bytes,
            dealer_bytes: 0,
            job_seconds: Some(turn.seconds),
        };
        Ok(ChatOutput {
            prompt_tokens: turn.prompt_tokens.len(),
            completion_tokens: turn.tokens.len(),
            finish_reason: match turn.finish {
                veil_client::FinishReason::Stop => FinishReason::Stop,
                veil_client::FinishReason::Length => FinishReason::Length,
                // Only a stream nobody reads any more is cancelled: its answer is never seen.
                veil_client::FinishReason::Cancelled => FinishReason::Stop,
            },
            veil: VeilInfo {
                protocol: PROTOCOL.to_string(),
                model_id: self.file.id.clone(),
                jobs: vec![job],
                verified: false,
                seconds: started.elapsed().as_secs_f64(),
                bytes,
            },
        })
    }
}

/// A sampling seed when the request gives none (from the standard library's per-process random keys).
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
