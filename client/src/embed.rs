//! Sentence embeddings on the network: the client's whole path for a deployed pretrained encoder (the
//! `veil embed --coordinator` command and the OpenAI-compatible gateway both call [`embed_sequences`]).
//!
//! A job has one token count (the encoder has no padding mask, and padding would change the mean pooling),
//! so the sequences are grouped by length: one job per distinct length, every sequence of that length in
//! it, up to [`MAX_JOBS_IN_FLIGHT`] jobs at a time (their scheduling, setup and waits overlap), the largest
//! first, each worker taking the next job as soon as its own is done. Each job is shared (semi2k) or
//! published under the dealer's masks (spdz2k), sealed per party, submitted, waited for and reconstructed
//! by [`Client::run_embed`]; under spdz2k its receipt is checked before any output is opened.
//!
//! Invariant: the returned embeddings are in the order of the given sequences, one per sequence, each
//! from a job whose outputs count matched its sequences count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use veil_engine::bert::private::PrivateBert;
use veil_node::api::{self, JobView, ModelView, SubmitRequest};

use crate::{CallError, Client};

/// Most sequences one call embeds.
pub const MAX_SEQUENCES: usize = 10_000;

/// Most jobs (distinct lengths) one call runs at a time: their setup, scheduling and waits overlap, and
/// the coordinator spreads them over its nodes.
pub const MAX_JOBS_IN_FLIGHT: usize = 4;

/// Why an embedding through the coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Nothing to embed.
    #[error("no text to embed")]
    Empty,
    /// More sequences than [`MAX_SEQUENCES`].
    #[error("{count} texts (at most {max})")]
    TooMany {
        /// Sequences given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A sequence the encoder cannot take (empty, too long, or an id outside its vocabulary).
    #[error("text {index}: {reason}")]
    BadSequence {
        /// Its position among the sequences.
        index: usize,
        /// What the encoder said.
        reason: String,
    },
    /// The model is not deployed on this coordinator under the id of this client's files.
    #[error("{name} with model id {id} (the hash of this client's files) is not deployed on this coordinator")]
    NotDeployed {
        /// The pretrained model's name.
        name: String,
        /// The id this client computed from its files.
        id: String,
    },
    /// The coordinator did not answer (connection, TLS or timeout).
    #[error("coordinator unreachable: {0}")]
    Unreachable(CallError),
    /// The coordinator answered with an error status.
    #[error("coordinator refused: {0}")]
    Refused(CallError),
    /// A job returned a different number of embeddings than it had sequences.
    #[error("job {job} returned {got} embeddings for {expected} texts")]
    WrongCount {
        /// The job.
        job: u64,
        /// Embeddings returned.
        got: usize,
        /// Sequences sent.
        expected: usize,
    },
    /// A text's job never ran (no job failed, yet its embedding is missing).
    #[error("text {index} was not embedded")]
    NotEmbedded {
        /// The text's position.
        index: usize,
    },
    /// A job failed, timed out, or its manifest, attestations or receipt did not check.
    #[error("embedding job failed: {0}")]
    Job(Box<dyn std::error::Error + Send + Sync>),
}

impl EmbedError {
    /// Classifies an error of the SDK: a coordinator call's failure keeps its kind, the rest is a job's.
    fn from_run(error: anyhow::Error) -> EmbedError {
        match error.downcast::<CallError>() {
            Ok(call) if call.status().is_none() => EmbedError::Unreachable(call),
            Ok(call) => EmbedError::Refused(call),
            Err(other) => EmbedError::Job(other.into()),
        }
    }

    fn from_call(call: CallError) -> EmbedError {
        if call.status().is_none() {
            EmbedError::Unreachable(call)
        } else {
            EmbedError::Refused(call)
        }
    }
}

/// One finished job of an embedding call.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    /// The job's final status (committee, history, protocol).
    pub view: JobView,
    /// Token count of its sequences.
    pub tokens: usize,
    /// Which sequences (positions in the call) it embedded.
    pub members: Vec<usize>,
    /// spdz2k: its receipt (`veil_node::receipt::ReceiptFile` JSON), already checked by the SDK.
    pub receipt: Option<String>,
    /// Bytes the parties sent to each other (setup and online), summed over the parties (their reports).
    pub party_bytes_sent: u64,
    /// Bytes of correlated randomness the dealer sent, summed over the parties (their reports).
    pub dealer_bytes: u64,
}

/// The result of [`embed_sequences`].
#[derive(Debug, Clone)]
pub struct Embedded {
    /// One L2-normalised embedding per sequence, in the given order.
    pub embeddings: Vec<Vec<f32>>,
    /// The jobs, shortest token count first.
    pub jobs: Vec<EmbedJob>,
}

/// What to embed with: the deployment and the encoder's public tables.
pub struct EmbedTarget<'a> {
    /// The deployment (from `GET /v1/models`): its id, parties, fixed point, weights.
    pub deployment: &'a ModelView,
    /// The pretrained model's name (`all-minilm-l6-v2`): the job's workload.
    pub name: &'a str,
    /// The protocol of the jobs (`semi2k` or `spdz2k`).
    pub protocol: &'a str,
    /// The encoder's public tables, for the client's share of the work (token lookup).
    pub model: &'a PrivateBert,
}

/// Finds the deployment of pretrained `name` under model `id` among the coordinator's models.
pub fn find_deployment(client: &Client, name: &str, id: &str) -> Result<ModelView, EmbedError> {
    let deployments: Vec<ModelView> = client
        .api()
        .get_json(api::MODELS)
        .map_err(EmbedError::from_call)?;
    deployments
        .into_iter()
        .find(|m| m.id == id && m.deployment.pretrained.as_deref() == Some(name))
        .ok_or_else(|| EmbedError::NotDeployed {
            name: name.to_string(),
            id: id.to_string(),
        })
}

/// Embeds `sequences` (token ids) on the committees the coordinator picks: one job per distinct length
/// (see the module doc). `progress` sees every job status polled.
pub fn embed_sequences(
    client: &Client,
    target: &EmbedTarget<'_>,
    sequences: &[Vec<u32>],
    timeout: Duration,
    mut progress: impl FnMut(&JobView),
) -> Result<Embedded, EmbedError> {
    if sequences.is_empty() {
        return Err(EmbedError::Empty);
    }
    if sequences.len() > MAX_SEQUENCES {
        return Err(EmbedError::TooMany {
            count: sequences.len(),
            max: MAX_SEQUENCES,
        });
    }
    // Everything is checked before the first byte leaves.
    for (index, s) in sequences.iter().enumerate() {
        target
            .model
            .client_input(s)
            .map_err(|e| EmbedError::BadSequence {
                index,
                reason: e.to_string(),
            })?;
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in sequences.iter().enumerate() {
        groups.entry(s.len()).or_default().push(i);
    }
    let d = &target.deployment.deployment;
    let mut requests = Vec::with_capacity(groups.len());
    for (len, members) in groups {
        let group: Vec<Vec<u32>> = members.iter().map(|&i| sequences[i].clone()).collect();
        // Both fit: a length is at most the encoder's positions, a count at most MAX_SEQUENCES.
        let (Ok(batch), Ok(inferences)) = (u32::try_from(len), u32::try_from(group.len())) else {
            return Err(EmbedError::TooMany {
                count: group.len(),
                max: MAX_SEQUENCES,
            });
        };
        let request = SubmitRequest {
            workload: target.name.to_string(),
            model_seed: 0,
            weights: d.weights.clone(),
            frac_bits: d.frac_bits,
            batch,
            inferences,
            parties: d.parties,
            model: Some(target.deployment.id.clone()),
            output_key: None,
            protocol: target.protocol.to_string(),
            stage: None,
            threads: None,
            shaping: None,
        };
        requests.push((len, members, group, request));
    }
    // Largest first (tokens: length times sequences), each worker taking the next job as soon as its own is
    // done: the call's jobs end close together instead of the largest running last, alone, after a wave.
    requests.sort_by_key(|(len, members, _, _)| std::cmp::Reverse(len * members.len()));
    let workers = requests.len().min(MAX_JOBS_IN_FLIGHT);
    let queue = Mutex::new(requests.into_iter());
    // Set by the first failed job: no worker starts another.
    let failed = AtomicBool::new(false);
    let outcomes = std::thread::scope(|scope| {
        let (views, polled) = std::sync::mpsc::channel::<JobView>();
        let running: Vec<_> = (0..workers)
            .map(|_| {
                let views = views.clone();
                let (queue, failed) = (&queue, &failed);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        // The lock is held for `next` alone, which cannot leave the queue half-changed.
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .next();
                        let Some((len, members, group, request)) = next else {
                            break;
                        };
                        let finished = client.run_embed(
                            request,
                            target.model,
                            &group,
                            timeout,
                            |view: &JobView| {
                                let _ = views.send(view.clone());
                            },
                        );
                        if finished.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        done.push((len, members, finished));
                    }
                    done
                })
            })
            .collect();
        // The statuses the jobs poll reach `progress` on this thread, until every worker is done.
        drop(views);
        for view in polled {
            progress(&view);
        }
        running
            .into_iter()
            .map(|handle| handle.join())
            .collect::<Vec<_>>()
    });
    let mut embeddings: Vec<Vec<f32>> = vec![Vec::new(); sequences.len()];
    let mut jobs = Vec::new();
    for worker in outcomes {
        let Ok(done) = worker else {
            return Err(EmbedError::Job("an embedding job's thread panicked".into()));
        };
        for (len, members, finished) in done {
            let finished = finished.map_err(EmbedError::from_run)?;
            if finished.outputs.len() != members.len() {
                return Err(EmbedError::WrongCount {
                    job: finished.job.id,
                    got: finished.outputs.len(),
                    expected: members.len(),
                });
            }
            for (&i, e) in members.iter().zip(finished.outputs) {
                embeddings[i] = e;
            }
            let party_bytes_sent = finished
                .reports
                .iter()
                .map(|r| r.setup.bytes_sent + r.online.iter().map(|w| w.bytes_sent).sum::<u64>())
                .sum();
            let dealer_bytes = finished.reports.iter().map(|r| r.dealer_bytes).sum();
            jobs.push(EmbedJob {
                view: finished.job,
                tokens: len,
                members,
                receipt: finished.receipt,
                party_bytes_sent,
                dealer_bytes,
            });
        }
    }
    // Every text has its embedding (the jobs cover every group, or one failed and returned above).
    if let Some(index) = embeddings.iter().position(Vec::is_empty) {
        return Err(EmbedError::NotEmbedded { index });
    }
    // In order of token count, as the groups are.
    jobs.sort_by_key(|j| j.tokens);
    Ok(Embedded { embeddings, jobs })
}
