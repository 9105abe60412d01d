//! The real backend: every request becomes private jobs through a MetaInf coordinator, run by the
//! `veil-client` SDK under the gateway's identity. The plaintext never leaves this process unshared:
//! texts are tokenised here, rows prepared here, shares sealed here to each attested party, and the
//! outputs opened here, under spdz2k only after the SDK checked the job's receipt.
//!
//! Models served: the pretrained encoders fetched under the models directory (`veil models fetch`),
//! deployed by the gateway itself when the coordinator lacks them, and the classifiers this identity
//! deployed (`veil deploy`; their weights are kept in `IDENTITY/models/ID.safetensors`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use veil_client::embed::{embed_sequences, EmbedError, EmbedTarget};
use veil_client::{ApiClient, CallError, Client};
use veil_engine::bert::pretrained;
use veil_engine::bert::private::{PrivateBert, PrivateConfig};
use veil_engine::bert::{SentenceEncoder, TextTokenizer};
use veil_engine::model_file::{argmax, ModelFile};
use veil_engine::{Plan, WeightMode};
use veil_node::api::{
    self, CommitteeView, JobView, MemberView, ModelView, NodeView, SubmitRequest,
};
use veil_node::envelope::OpeningKey;
use veil_node::{Identity, PublicKey};
use veil_protocols::protocol::Protocol;
use veil_protocols::ring::FixedPoint;

use crate::backend::{
    Backend, BackendError, EmbedOutput, JobInfo, MemberInfo, ModelEntry, ModelKind, PredictOutput,
    Prediction, VeilInfo,
};

/// How to reach the coordinator and what to serve.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The coordinator's address, host:port.
    pub coordinator: String,
    /// Its pinned Ed25519 key.
    pub coordinator_key: PublicKey,
    /// The gateway's identity directory (created if missing): its TLS identity, its X25519 output key,
    /// and the classifiers it deployed.
    pub identity: PathBuf,
    /// The model ids to serve; empty: every model this identity deployed plus every fetched pretrained
    /// model. Chat models among them are [`crate::network_chat::NetworkChat`]'s; this backend skips them
    /// and may serve nothing.
    pub models: Vec<String>,
    /// The protocol of the pretrained deployments the gateway uses or makes.
    pub protocol: Protocol,
    /// Parties of the pretrained deployments it makes.
    pub parties: u8,
    /// Longest a request's jobs may take.
    pub job_timeout: Duration,
    /// Longest one call to the coordinator may take.
    pub call_timeout: Duration,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The identity directory could not be read or created.
    #[error("identity in {dir}: {reason}")]
    Identity {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The coordinator did not answer.
    #[error("coordinator unreachable: {0}")]
    Unreachable(CallError),
    /// The coordinator refused a call.
    #[error("coordinator refused: {0}")]
    Refused(CallError),
    /// A model asked for with `--model` is neither a fetched pretrained encoder nor deployed by this
    /// identity.
    #[error("model {0}: not a fetched pretrained encoder nor a model this identity deployed")]
    UnknownModel(String),
    /// A model's files could not be loaded or checked.
    #[error("model {name}: {reason}")]
    Model {
        /// The model.
        name: String,
        /// Why.
        reason: String,
    },
    /// Nothing to serve (checked by the caller over every backend).
    #[error("no model to serve: fetch one (veil models fetch all-minilm-l6-v2) or deploy one with this identity")]
    NoModels,
}

pub(crate) fn call_error(e: CallError) -> StartError {
    if e.status().is_none() {
        StartError::Unreachable(e)
    } else {
        StartError::Refused(e)
    }
}

/// A pretrained encoder served for `/v1/embeddings`.
struct Encoder {
    entry: ModelEntry,
    name: String,
    deployment: ModelView,
    /// Truncates at `max_tokens + 1`, so that a longer text is seen (and refused), not cut.
    tokenizer: TextTokenizer,
    max_tokens: usize,
    model: PrivateBert,
}

/// A classifier served for `/v1/veil/predict`.
struct Classifier {
    entry: ModelEntry,
    deployment: ModelView,
    file: ModelFile,
    plan: Plan,
}

/// The coordinator-backed [`Backend`].
pub struct NetworkBackend {
    client: Client,
    encoders: Vec<Encoder>,
    /// Invariant: the models are used under the lock only (burn's tensors are not shared across threads).
    classifiers: Vec<Mutex<Classifier>>,
    /// Invariant: entry `i` is `classifiers[i]`'s (kept apart so listing takes no lock).
    classifier_entries: Vec<ModelEntry>,
    /// Node key (hex) -> operator, from `GET /v1/nodes`, refreshed when a committee names an unknown key.
    operators: Mutex<HashMap<String, String>>,
    job_timeout: Duration,
}

fn entry(id: &str, kind: ModelKind, view: &ModelView) -> ModelEntry {
    ModelEntry {
        id: id.to_string(),
        kind,
        created: view.deployed_at_ms / 1000,
        owned_by: view.owner.clone(),
        protocol: view.deployment.protocol.clone(),
    }
}

fn stored_model(identity: &Path, id: &str) -> PathBuf {
    identity.join("models").join(format!("{id}.safetensors"))
}

fn model_error(name: &str, reason: impl std::fmt::Display) -> StartError {
    StartError::Model {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// The gateway's identity (created in `config.identity` if missing) and an SDK client of the coordinator
/// under it, opening outputs with the X25519 key kept beside it.
pub(crate) fn session(config: &NetworkConfig) -> Result<(Identity, Client), StartError> {
    let identity_error = |reason: String| StartError::Identity {
        dir: config.identity.clone(),
        reason,
    };
    std::fs::create_dir_all(&config.identity).map_err(|e| identity_error(e.to_string()))?;
    let (identity, _) =
        Identity::load_or_create(&config.identity).map_err(|e| identity_error(e.to_string()))?;
    let key = OpeningKey::load_or_create(&config.identity.join(veil_node::inbox::KEY_FILE))
        .map_err(|e| identity_error(e.to_string()))?;
    let api = ApiClient::new(
        &identity,
        config.coordinator_key,
        config.coordinator.clone(),
        config.call_timeout,
    )
    .map_err(|e| identity_error(e.to_string()))?;
    Ok((identity, Client::new(api, config.coordinator_key, key)))
}

impl NetworkBackend {
    /// Connects, lists the coordinator's models, deploys the missing pretrained encoders, and loads every
    /// model served.
    pub fn connect(config: &NetworkConfig) -> Result<NetworkBackend, StartError> {
        let (identity, client) = session(config)?;
        let me = identity.public_key().to_string();
        let deployments: Vec<ModelView> = client.api().get_json(api::MODELS).map_err(call_error)?;
        let owned = |id: &str| {
            deployments
                .iter()
                .find(|m| m.id == id && m.owner == me && m.deployment.pretrained.is_none())
        };
        let (encoder_names, classifier_ids): (Vec<String>, Vec<String>) =
            if config.models.is_empty() {
                let encoders = pretrained::NAMES
                    .iter()
                    .filter(|n| pretrained::model_dir(n).join("model.safetensors").exists())
                    .map(|n| n.to_string())
                    .collect();
                let classifiers = deployments
                    .iter()
                    .filter(|m| m.owner == me && m.deployment.pretrained.is_none())
                    .filter(|m| stored_model(&config.identity, &m.id).exists())
                    .map(|m| m.id.clone())
                    .collect();
                (encoders, classifiers)
            } else {
                let mut encoders = Vec::new();
                let mut classifiers = Vec::new();
                for name in &config.models {
                    if pretrained::is_pretrained(name) {
                        encoders.push(name.clone());
                    } else if crate::CHAT_MODEL_NAMES.contains(&name.as_str()) {
                        // Served by `network_chat::NetworkChat`.
                        continue;
                    } else if owned(name).is_some() {
                        classifiers.push(name.clone());
                    } else {
                        return Err(StartError::UnknownModel(name.clone()));
                    }
                }
                (encoders, classifiers)
            };
        let mut encoders = Vec::new();
        for name in &encoder_names {
            encoders.push(Self::encoder(&client, config, &deployments, name)?);
        }
        let mut classifiers = Vec::new();
        let mut classifier_entries = Vec::new();
        for id in &classifier_ids {
            let view = owned(id).ok_or_else(|| StartError::UnknownModel(id.clone()))?;
            let c = Self::classifier(config, view)?;
            classifier_entries.push(c.entry.clone());
            classifiers.push(Mutex::new(c));
        }
        Ok(NetworkBackend {
            client,
            encoders,
            classifiers,
            classifier_entries,
            operators: Mutex::new(HashMap::new()),
            job_timeout: config.job_timeout,
        })
    }

    fn encoder(
        client: &Client,
        config: &NetworkConfig,
        deployments: &[ModelView],
        name: &str,
    ) -> Result<Encoder, StartError> {
        let dir = pretrained::model_dir(name);
        let id = pretrained::model_id(name, &dir).map_err(|e| {
            model_error(name, format!("{e} (run `veil models fetch {name}` first)"))
        })?;
        // The id names the files, not the protocol: a deployment of another protocol is used as it is
        // (the coordinator keys deployments by id).
        let of_name =
            |m: &&ModelView| m.id == id && m.deployment.pretrained.as_deref() == Some(name);
        let existing = deployments
            .iter()
            .filter(of_name)
            .find(|m| Protocol::parse(&m.deployment.protocol) == Some(config.protocol))
            .or_else(|| deployments.iter().find(of_name));
        if let Some(m) =
            existing.filter(|m| Protocol::parse(&m.deployment.protocol) != Some(config.protocol))
        {
            tracing::warn!(
                "{name} is deployed with {} on this coordinator: its jobs use {}, not {}",
                m.deployment.protocol,
                m.deployment.protocol,
                config.protocol
            );
        }
        let deployment = match existing {
            Some(view) => view.clone(),
            None => client
                .deploy_pretrained(
                    name,
                    &id,
                    config.parties,
                    FixedPoint::default().frac_bits(),
                    config.protocol.name(),
                )
                .map_err(|e| match e.downcast::<CallError>() {
                    Ok(call) => call_error(call),
                    Err(other) => model_error(name, format!("deploying: {other:#}")),
                })?,
        };
        let encoder = SentenceEncoder::load(&dir, &burn::tensor::Device::flex())
            .map_err(|e| model_error(name, e))?;
        let max_tokens = encoder.tokenizer.max_len();
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"), max_tokens + 1)
            .map_err(|e| model_error(name, e))?;
        let fp =
            FixedPoint::new(deployment.deployment.frac_bits).map_err(|e| model_error(name, e))?;
        let model = PrivateConfig::new(fp)
            .and_then(|c| PrivateBert::new(&encoder.bert, c))
            .map_err(|e| model_error(name, e))?;
        Ok(Encoder {
            entry: entry(name, ModelKind::Embedding, &deployment),
            name: name.to_string(),
            deployment,
            tokenizer,
            max_tokens,
            model,
        })
    }

    fn classifier(config: &NetworkConfig, view: &ModelView) -> Result<Classifier, StartError> {
        let path = stored_model(&config.identity, &view.id);
        let file = ModelFile::load(&path, &burn::tensor::Device::flex())
            .map_err(|e| model_error(&view.id, format!("{}: {e}", path.display())))?;
        if file.id() != view.id {
            return Err(model_error(
                &view.id,
                format!("{} holds model {}", path.display(), file.id()),
            ));
        }
        let d = &view.deployment;
        let mode = match d.weights.as_str() {
            "public" => WeightMode::Public,
            _ => WeightMode::Shared,
        };
        let fp = FixedPoint::new(d.frac_bits).map_err(|e| model_error(&view.id, e))?;
        let plan = Plan::compile(file.model(), fp, mode).map_err(|e| model_error(&view.id, e))?;
        Ok(Classifier {
            entry: entry(&view.id, ModelKind::Classifier, view),
            deployment: view.clone(),
            file,
            plan,
        })
    }

    /// The operator of each key, refreshing the cached node list when one is unknown.
    fn operators(&self, keys: &[&str]) -> HashMap<String, String> {
        let mut cache = self
            .operators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if keys.iter().any(|k| !cache.contains_key(*k)) {
            match self.client.api().get_json::<Vec<NodeView>>(api::NODES) {
                Ok(nodes) => {
                    cache.clear();
                    for n in nodes {
                        cache.insert(n.public_key, n.operator);
                    }
                }
                Err(e) => {
                    tracing::warn!("listing the coordinator's nodes for their operators: {e}")
                }
            }
        }
        cache.clone()
    }

    fn job_info(
        &self,
        view: &JobView,
        inputs: Vec<usize>,
        tokens: usize,
        receipt: Option<&str>,
        bytes: (u64, u64),
    ) -> JobInfo {
        let committee: Option<&CommitteeView> = view.committee.as_ref();
        let mut keys: Vec<&str> = Vec::new();
        if let Some(c) = committee {
            keys.extend(c.parties.iter().map(|m| m.public_key.as_str()));
            keys.extend(c.dealer.as_ref().map(|d| d.public_key.as_str()));
            keys.extend(c.verifier.as_ref().map(|v| v.public_key.as_str()));
        }
        let operators = self.operators(&keys);
        let member = |m: &MemberView| MemberInfo {
            node: Some(m.node),
            public_key: Some(m.public_key.clone()),
            operator: operators.get(&m.public_key).cloned(),
        };
        let submitted = view.history.first().map(|t| t.at_ms);
        let done = view
            .history
            .iter()
            .rev()
            .find(|t| t.to == "done")
            .map(|t| t.at_ms);
        JobInfo {
            id: view.id,
            attempt: view.attempt,
            inputs,
            tokens,
            parties: committee.map_or_else(Vec::new, |c| c.parties.iter().map(member).collect()),
            dealer: committee.and_then(|c| c.dealer.as_ref()).map(member),
            verifier: committee.and_then(|c| c.verifier.as_ref()).map(member),
            receipt: receipt.and_then(|r| serde_json::from_str(r).ok()),
            receipt_path: receipt.map(|_| api::job_receipt(view.id)),
            party_bytes_sent: bytes.0,
            dealer_bytes: bytes.1,
            job_seconds: match (submitted, done) {
                (Some(s), Some(d)) => Some(d.saturating_sub(s) as f64 / 1000.0),
                _ => None,
            },
        }
    }
}

fn veil_info(protocol: &str, model_id: &str, jobs: Vec<JobInfo>, started: Instant) -> VeilInfo {
    let verified = !jobs.is_empty() && jobs.iter().all(|j| j.receipt.is_some());
    let bytes = jobs
        .iter()
        .map(|j| j.party_bytes_sent + j.dealer_bytes)
        .sum();
    VeilInfo {
        protocol: protocol.to_string(),
        model_id: model_id.to_string(),
        jobs,
        verified,
        seconds: started.elapsed().as_secs_f64(),
        bytes,
    }
}

fn embed_error(e: EmbedError) -> BackendError {
    match e {
        EmbedError::BadSequence { index, reason } => BackendError::BadInput { index, reason },
        EmbedError::Empty | EmbedError::TooMany { .. } => BackendError::BadInput {
            index: 0,
            reason: e.to_string(),
        },
        EmbedError::Unreachable(call) => BackendError::Unreachable(call.to_string()),
        other => BackendError::JobFailed(other.to_string()),
    }
}

fn job_error(e: anyhow::Error) -> BackendError {
    match e.downcast::<CallError>() {
        Ok(call) if call.status().is_none() => BackendError::Unreachable(call.to_string()),
        Ok(call) => BackendError::JobFailed(call.to_string()),
        Err(other) => BackendError::JobFailed(format!("{other:#}")),
    }
}

impl Backend for NetworkBackend {
    fn models(&self) -> Vec<ModelEntry> {
        self.encoders
            .iter()
            .map(|e| e.entry.clone())
            .chain(self.classifier_entries.iter().cloned())
            .collect()
    }

    fn embed(&self, model: &str, texts: &[String]) -> Result<EmbedOutput, BackendError> {
        let started = Instant::now();
        let Some(encoder) = self.encoders.iter().find(|e| e.entry.id == model) else {
            return Err(BackendError::UnknownModel(model.to_string()));
        };
        let mut ids = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let s = encoder
                .tokenizer
                .ids(text)
                .map_err(|e| BackendError::BadInput {
                    index,
                    reason: e.to_string(),
                })?;
            if s.len() > encoder.max_tokens {
                return Err(BackendError::TooManyTokens {
                    index,
                    max: encoder.max_tokens,
                });
            }
            ids.push(s);
        }
        let prompt_tokens = ids.iter().map(Vec::len).sum();
        let protocol = encoder.deployment.deployment.protocol.clone();
        let target = EmbedTarget {
            deployment: &encoder.deployment,
            name: &encoder.name,
            protocol: &protocol,
            model: &encoder.model,
        };
        let embedded = embed_sequences(&self.client, &target, &ids, self.job_timeout, |_| {})
            .map_err(embed_error)?;
        let jobs = embedded
            .jobs
            .iter()
            .map(|j| {
                self.job_info(
                    &j.view,
                    j.members.clone(),
                    j.tokens,
                    j.receipt.as_deref(),
                    (j.party_bytes_sent, j.dealer_bytes),
                )
            })
            .collect();
        Ok(EmbedOutput {
            embeddings: embedded.embeddings,
            prompt_tokens,
            veil: veil_info(&protocol, &encoder.deployment.id, jobs, started),
        })
    }

    fn predict(&self, model: &str, rows: &[Vec<f32>]) -> Result<PredictOutput, BackendError> {
        let started = Instant::now();
        // Invariant: `classifier_entries[i]` describes `classifiers[i]`.
        let Some(slot) = self
            .classifier_entries
            .iter()
            .position(|e| e.id == model)
            .and_then(|i| self.classifiers.get(i))
        else {
            return Err(BackendError::UnknownModel(model.to_string()));
        };
        let classifier = slot.lock().unwrap_or_else(|p| p.into_inner());
        let inputs: Vec<Vec<f32>> = rows
            .iter()
            .enumerate()
            .map(|(index, r)| {
                classifier
                    .file
                    .prepare_input(r, 1)
                    .map_err(|e| BackendError::BadInput {
                        index,
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let d = &classifier.deployment.deployment;
        let inferences = u32::try_from(inputs.len()).map_err(|_| BackendError::BadInput {
            index: 0,
            reason: "too many rows".into(),
        })?;
        let request = SubmitRequest {
            workload: "deployed".into(),
            model_seed: 0,
            weights: d.weights.clone(),
            frac_bits: d.frac_bits,
            batch: 1,
            inferences,
            parties: d.parties,
            model: Some(classifier.deployment.id.clone()),
            output_key: None,
            protocol: d.protocol.clone(),
            stage: None,
            threads: None,
            shaping: None,
        };
        let finished = self
            .client
            .run_job(
                request,
                classifier.file.model(),
                &classifier.plan,
                &inputs,
                self.job_timeout,
                |_| {},
            )
            .map_err(job_error)?;
        let predictions = finished
            .outputs
            .iter()
            .enumerate()
            .map(|(index, scores)| {
                let class = argmax(scores);
                Prediction {
                    index,
                    scores: scores.clone(),
                    class,
                    label: class.map(|c| classifier.file.label(c)),
                }
            })
            .collect();
        let party_bytes = finished
            .reports
            .iter()
            .map(|r| r.setup.bytes_sent + r.online.iter().map(|w| w.bytes_sent).sum::<u64>())
            .sum();
        let dealer_bytes = finished.reports.iter().map(|r| r.dealer_bytes).sum();
        let job = self.job_info(
            &finished.job,
            (0..rows.len()).collect(),
            1,
            finished.receipt.as_deref(),
            (party_bytes, dealer_bytes),
        );
        Ok(PredictOutput {
            predictions,
            veil: veil_info(&d.protocol, &classifier.deployment.id, vec![job], started),
        })
    }
}
