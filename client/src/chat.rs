//! Private chat through a coordinator: one turn of a deployed chat model (SmolLM2-135M-Instruct) is one
//! job on a committee the coordinator picks (execution parties and a dealer, semi2k), whose parties keep
//! their shares of the key/value cache for the job's lifetime.
//!
//! The flow of [`Client::chat`]:
//! 1. submit the turn (`batch` = the prompt's length, `inferences` = the most tokens) for the deployed
//!    model whose id is the SHA-256 of this client's copy of the GGUF file (every party checks its own copy
//!    against the same id);
//! 2. when the attempt is scheduled: check its manifest (signed by the pinned coordinator key, this
//!    client's output key, the job asked for) and every party's attested sealing key, then upload to each
//!    party, sealed to it and bound to the attempt, a `veil_node::generation::GenerationTicket` naming this
//!    client's QUIC key. The coordinator relays only these tickets;
//! 3. once the attempt runs: dial every party directly (mutual TLS, the party's key pinned by the
//!    manifest), share the prompt's embedded vectors, and per token reconstruct the last position's
//!    logits, sample, and share the chosen token's embedded vector (`veil_node::client::Client::
//!    generate_attached`); no per-token traffic passes through the coordinator;
//! 4. wait for the coordinator to record the job done (every party returned its report).
//!
//! What each party learns: the prompt's length and the number of generated tokens (they set shapes, bytes
//! and rounds), nothing else; no token, logit or activation is opened to it. The coordinator learns the
//! same two numbers from the request.
//!
//! Invariants: tickets are sealed per attempt (an attempt rescheduled before the turn started gets fresh
//! ones); once the turn started, a failure fails the turn (the job is cancelled so that it is not
//! rescheduled), and the caller may retry from the prompt; nothing here logs a token, a share or a logit.

use std::path::Path;
use std::time::{Duration, Instant};

use veil_engine::llama::{ChatModel, Sampler};
use veil_node::api::{self, JobView, ModelView, NodeView, SubmitRequest};
use veil_node::envelope::Purpose;
use veil_node::generation::{GenerationTicket, MAX_POSITIONS, SMOLLM2};
use veil_node::inbox::{binding_for, seal_blob};
use veil_node::manifest::Manifest;
use veil_node::wire::PartyReport;
use veil_protocols::ring::FixedPoint;

pub use veil_engine::llama::template::Message;
pub use veil_engine::llama::Sampling;
pub use veil_node::api_client::CallError;

use super::{attested_keys, Client};

/// How long the client keeps dialling a party that has not admitted it yet (it does once it opened its
/// ticket, shortly after the attempt starts running).
const ATTACH_WAIT: Duration = Duration::from_secs(60);
/// Most stop strings, and longest one, bytes.
const MAX_STOPS: usize = 8;
const MAX_STOP_BYTES: usize = 256;

/// What went wrong in a chat turn.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The model file could not be read, hashed or loaded.
    #[error("model file {path}: {reason}")]
    ModelFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The request is invalid (options, prompt length); nothing was submitted.
    #[error("invalid chat request: {0}")]
    InvalidRequest(String),
    /// The coordinator has no deployment of this model under this client's file's id.
    #[error("chat model {model} (the SHA-256 of this client's GGUF file) is not deployed on this coordinator")]
    NotDeployed {
        /// The model id.
        model: String,
    },
    /// A call to the coordinator failed.
    #[error(transparent)]
    Coordinator(#[from] CallError),
    /// The attempt's manifest or committee failed this client's checks (nothing was sent to it).
    #[error("job {job}: the coordinator's committee was refused: {reason}")]
    Committee {
        /// The job.
        job: u64,
        /// Why.
        reason: String,
    },
    /// The coordinator failed the job before the turn started (no committee, a member refused, ...).
    #[error("job {job} failed: {reason}")]
    JobFailed {
        /// The job.
        job: u64,
        /// The coordinator's reason.
        reason: String,
    },
    /// The turn failed on the committee (a party failed, a stream broke, a step timed out); the reason
    /// names every party that reported. The turn may be retried from the prompt.
    #[error("job {job}: the turn failed: {reason}")]
    Turn {
        /// The job.
        job: u64,
        /// Every party's reason.
        reason: String,
    },
    /// The job did not reach `phase`'s successor within the turn's timeout.
    #[error("job {job}: still {phase} at the deadline")]
    Timeout {
        /// The job.
        job: u64,
        /// Its phase then.
        phase: String,
    },
}

/// A chat model as a client holds it: the GGUF file's id (its SHA-256) and the model (its public
/// embedding table, tokenizer and chat template; this client never runs the model).
pub struct ChatModelFile {
    /// The model id (hex SHA-256 of the file): the deployment and every party's copy must match it.
    pub id: String,
    /// The loaded model.
    pub model: ChatModel,
}

impl ChatModelFile {
    /// Hashes and loads the GGUF file at `path` (`models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf`).
    pub fn load(path: &Path) -> Result<ChatModelFile, ChatError> {
        let fail = |reason: String| ChatError::ModelFile {
            path: path.display().to_string(),
            reason,
        };
        let id = veil_node::generation::file_id(path).map_err(|e| fail(e.to_string()))?;
        let model = ChatModel::load(path).map_err(|e| fail(e.to_string()))?;
        Ok(ChatModelFile { id, model })
    }

    /// The prompt's token ids for `messages` (roles `system`, `user`, `assistant`), rendered with the file's
    /// own chat template (its default system message when none is given), with the assistant's turn opened.
    pub fn prompt_tokens(&self, messages: &[Message]) -> Result<Vec<u32>, ChatError> {
        let text = self
            .model
            .template
            .render(messages)
            .map_err(|e| ChatError::InvalidRequest(format!("chat template: {e}")))?;
        self.model
            .tokenizer
            .encode(&text)
            .map_err(|e| ChatError::InvalidRequest(format!("tokenizer: {e}")))
    }

    /// The embedded vectors of `ids` in `fp` (what the client secret-shares), `[len x hidden]`.
    fn embed(&self, ids: &[u32], fp: FixedPoint) -> veil_node::Result<Vec<u64>> {
        let w = &self.model.weights;
        let d = w.config.hidden;
        let mut x = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let row = w
                .embed
                .get(id as usize * d..(id as usize + 1) * d)
                .ok_or_else(|| {
                    veil_node::NodeError::Job(format!("token {id} out of vocabulary"))
                })?;
            x.extend_from_slice(row);
        }
        fp.encode(&x)
            .map_err(|e| veil_node::NodeError::Job(format!("encoding the embedding: {e}")))
    }
}

/// Why the turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model's end-of-turn token, or a stop string.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The caller stopped the turn: its `on_token` returned `ControlFlow::Break` (a streaming client went
    /// away, say). The committee ends the job as after a stop string; nothing more is generated.
    Cancelled,
}

/// The options of a turn.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Most tokens generated (the end-of-turn token included), at least 1.
    pub max_tokens: usize,
    /// Greedy, or temperature and nucleus sampling with a seed (done by this client only).
    pub sampling: Sampling,
    /// Stop strings: the turn ends when the generated text contains one; it is not part of the text
    /// returned or streamed. At most 8, each 1 to 256 bytes.
    pub stop: Vec<String>,
    /// Execution parties (3 by default; the coordinator adds a dealer).
    pub parties: u8,
    /// Longest the whole turn may take (submission, scheduling, the turn, completion).
    pub timeout: Duration,
}

impl Default for ChatOptions {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            sampling: Sampling::Greedy,
            stop: Vec::new(),
            parties: 3,
            timeout: Duration::from_secs(600),
        }
    }
}

/// The operators of a turn's committee (from the coordinator's node list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCommittee {
    /// Each execution party's operator, in party order.
    pub parties: Vec<String>,
    /// The dealer's operator.
    pub dealer: String,
}

/// A finished turn.
#[derive(Debug, Clone)]
pub struct ChatTurn {
    /// The coordinator's job id.
    pub job: u64,
    /// The attempt's run id (hex), as the manifest names it.
    pub run: String,
    /// The prompt's token ids.
    pub prompt_tokens: Vec<u32>,
    /// The generated ids (ending with the end-of-turn id when the model stopped by itself).
    pub tokens: Vec<u32>,
    /// The generated text (cut before a stop string).
    pub text: String,
    /// Why the turn ended.
    pub finish: FinishReason,
    /// Who ran it.
    pub committee: ChatCommittee,
    /// The verifier's receipt (`veil_node::receipt::ReceiptFile` JSON) where one exists: always `None` for
    /// now, as generation runs semi2k, whose jobs have no MAC check to attest.
    pub receipt: Option<String>,
    /// The prefill's time, ms (the slowest party's own measure).
    pub prefill_ms: f64,
    /// Median decode step, ms (per step the slowest party's own measure).
    pub ms_per_token: f64,
    /// Per party, the bytes it sent to the other parties during the turn.
    pub bytes_per_party: Vec<u64>,
    /// The whole turn as this client saw it (submission to completion), seconds.
    pub seconds: f64,
}

impl Client {
    /// Runs one private chat turn of the deployed chat model `model` through this client's coordinator:
    /// `prompt` is the rendered prompt's token ids ([`ChatModelFile::prompt_tokens`]); `quic` is this
    /// client's QUIC endpoint (its identity is the key the parties admit; it may be the one this client's
    /// coordinator connection uses). `on_token(id, text)` is called for each generated token as soon as it
    /// is chosen, with the text it adds (possibly empty: an incomplete UTF-8 sequence, or text held back
    /// while it may begin a stop string; held text comes with a later token, and text after a stop string
    /// never comes); it returns `ControlFlow::Break(())` to end the turn there
    /// ([`FinishReason::Cancelled`]), `Continue(())` to go on. The streamed text is always a prefix of [`ChatTurn::text`]; text still held when the
    /// turn ends is in [`ChatTurn::text`] only. Blocks until the turn is over and the coordinator recorded
    /// the job done; see the module doc for the flow and what each party learns. Errors: [`ChatError`];
    /// after [`ChatError::Turn`] the job is cancelled and the turn may be retried from the prompt; a
    /// [`ChatError::JobFailed`] or [`ChatError::Timeout`] may also come after every token was streamed (the
    /// coordinator did not record the job done).
    ///
    /// Blocking: `quic` runs its own runtime, so call this from a plain thread (in an async server,
    /// `tokio::task::spawn_blocking`, with `on_token` sending into a channel), never on a runtime thread.
    /// One `quic` endpoint serves successive turns; concurrent turns on one endpoint are untested (give each
    /// worker thread its own).
    pub fn chat(
        &self,
        quic: &veil_node::client::Client,
        model: &ChatModelFile,
        prompt: &[u32],
        options: &ChatOptions,
        mut on_token: impl FnMut(u32, &str) -> std::ops::ControlFlow<()>,
    ) -> Result<ChatTurn, ChatError> {
        let started = Instant::now();
        let deadline = started + options.timeout;
        let config = &model.model.weights.config;
        check_options(prompt, options, config.context)?;

        let mut sampler = Sampler::new(options.sampling).ok_or_else(|| {
            ChatError::InvalidRequest(
                "the temperature must be positive and finite, top_p in (0, 1]".into(),
            )
        })?;
        let deployments: Vec<ModelView> = self.api.get_json(api::MODELS)?;
        let deployment = deployments
            .into_iter()
            .find(|m| m.id == model.id && m.deployment.pretrained.as_deref() == Some(SMOLLM2))
            .ok_or_else(|| ChatError::NotDeployed {
                model: model.id.clone(),
            })?;
        let frac_bits = deployment.deployment.frac_bits;
        let fp = FixedPoint::new(frac_bits)
            .map_err(|e| ChatError::InvalidRequest(format!("the deployment's fixed point: {e}")))?;
        let request = SubmitRequest {
            workload: SMOLLM2.into(),
            model_seed: 0,
            weights: "public".into(),
            frac_bits,
            batch: prompt.len() as u32,
            inferences: options.max_tokens as u32,
            parties: options.parties,
            model: Some(model.id.clone()),
            output_key: Some(self.output_key().to_string()),
            protocol: veil_protocols::protocol::Protocol::Semi2k.to_string(),
            stage: None,
            threads: None,
            shaping: None,
        };
        let submitted: JobView = self.api.post_json(api::JOBS, &request)?;
        let job = submitted.id;
        let (view, manifest) = self.await_running(job, &request, quic, deadline)?;
        let committee = self.committee_operators(&view)?;

        // The turn: tokens chosen here only.
        let eos = model.model.tokenizer.eos;
        let mut stream = TextStream::new(&options.stop);
        let mut tokens: Vec<u32> = Vec::new();
        let mut finish = FinishReason::Length;
        let input = |ids: &[u32]| model.embed(ids, fp);
        let generated = quic.generate_attached(
            &manifest,
            &input,
            config.vocab,
            frac_bits,
            prompt,
            ATTACH_WAIT,
            |logits| {
                let row = logits.last()?;
                let t = sampler.next(row);
                tokens.push(t);
                let text = model.model.tokenizer.decode(&tokens).unwrap_or_default();
                let (delta, stopped) = stream.push(&text);
                let flow = on_token(t, &delta);
                if t == eos || stopped {
                    finish = FinishReason::Stop;
                    return None;
                }
                if flow.is_break() {
                    finish = FinishReason::Cancelled;
                    return None;
                }
                Some(t)
            },
        );
        let run = match generated {
            Ok(run) => run,
            Err(e) => {
                // Not rescheduled: the caller decides whether to retry from the prompt.
                let _ = self.api.post_json::<_, JobView>(&api::cancel(job), &());
                return Err(ChatError::Turn {
                    job,
                    reason: e.to_string(),
                });
            }
        };
        let text = stream.finish(&model.model.tokenizer.decode(&tokens).unwrap_or_default());
        let (prefill_ms, ms_per_token, bytes_per_party) = costs(&run.steps, manifest.parties.len());
        self.await_done(job, deadline)?;
        Ok(ChatTurn {
            job,
            run: manifest.job.to_string(),
            prompt_tokens: prompt.to_vec(),
            tokens,
            text,
            finish,
            committee,
            receipt: None,
            prefill_ms,
            ms_per_token,
            bytes_per_party,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Polls job `job` until its attempt runs, sealing and uploading the tickets of each scheduled attempt;
    /// returns the running attempt's view and checked manifest.
    fn await_running(
        &self,
        job: u64,
        request: &SubmitRequest,
        quic: &veil_node::client::Client,
        deadline: Instant,
    ) -> Result<(JobView, Manifest), ChatError> {
        let refused = |e: anyhow::Error| ChatError::Committee {
            job,
            reason: format!("{e:#}"),
        };
        // The attempt this client sealed tickets for, its manifest, and which tickets are in.
        let mut ticketed: Option<Tickets> = None;
        loop {
            let view: JobView = self.api.get_json(&api::job(job))?;
            match view.phase.as_str() {
                "scheduled" => {
                    if ticketed.as_ref().map(|t| t.attempt) != Some(view.attempt) {
                        let manifest = self.checked_manifest(&view, request).map_err(refused)?;
                        let members =
                            view.committee
                                .as_ref()
                                .ok_or_else(|| ChatError::Committee {
                                    job,
                                    reason: "scheduled without a committee".into(),
                                })?;
                        let keys = attested_keys(&manifest, members).map_err(refused)?;
                        let ticket = GenerationTicket {
                            driver: quic.public_key(),
                        };
                        let plain = postcard::to_stdvec(&ticket)
                            .map_err(|e| refused(anyhow::anyhow!("encoding the ticket: {e}")))?;
                        let blobs = keys
                            .iter()
                            .enumerate()
                            .map(|(i, key)| {
                                let binding = binding_for(&manifest, Purpose::InputShare, i);
                                seal_blob(key, &binding, &plain)
                                    .map_err(|e| refused(anyhow::anyhow!("sealing: {e}")))
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        let n = blobs.len();
                        ticketed = Some(Tickets {
                            attempt: view.attempt,
                            manifest,
                            blobs,
                            sent: vec![false; n],
                        });
                    }
                    if let Some(Tickets {
                        attempt,
                        blobs,
                        sent,
                        ..
                    }) = ticketed.as_mut()
                    {
                        for (party, blob) in blobs.iter().enumerate() {
                            if sent[party] {
                                continue;
                            }
                            match self
                                .api
                                .put_bytes(&api::input_upload(job, *attempt, party), blob.clone())
                            {
                                Ok(()) => sent[party] = true,
                                // The attempt moved on: the next status says where to.
                                Err(e) if e.status() == Some(409) => break,
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                }
                "running" => match ticketed.take() {
                    Some(t) if t.attempt == view.attempt => return Ok((view, t.manifest)),
                    _ => {
                        return Err(ChatError::Committee {
                            job,
                            reason: "the attempt runs without this client's tickets".into(),
                        })
                    }
                },
                "failed" | "done" => {
                    return Err(ChatError::JobFailed {
                        job,
                        reason: view
                            .failure
                            .unwrap_or_else(|| format!("{} before the turn started", view.phase)),
                    })
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(ChatError::Timeout {
                    job,
                    phase: view.phase,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the coordinator records job `job` done (every party returned its report).
    fn await_done(&self, job: u64, deadline: Instant) -> Result<(), ChatError> {
        loop {
            let view: JobView = self.api.get_json(&api::job(job))?;
            match view.phase.as_str() {
                "done" => return Ok(()),
                "failed" => {
                    return Err(ChatError::JobFailed {
                        job,
                        reason: view.failure.unwrap_or_else(|| view.phase.clone()),
                    })
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(ChatError::Timeout {
                    job,
                    phase: view.phase,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The operators of the view's committee.
    fn committee_operators(&self, view: &JobView) -> Result<ChatCommittee, ChatError> {
        let nodes: Vec<NodeView> = self.api.get_json(api::NODES)?;
        let operator = |id: u32| {
            nodes
                .iter()
                .find(|n| n.id == id)
                .map_or_else(|| format!("node {id}"), |n| n.operator.clone())
        };
        let c = view
            .committee
            .as_ref()
            .ok_or_else(|| ChatError::Committee {
                job: view.id,
                reason: "running without a committee".into(),
            })?;
        let dealer = c.dealer.as_ref().ok_or_else(|| ChatError::Committee {
            job: view.id,
            reason: "a chat committee without a dealer".into(),
        })?;
        Ok(ChatCommittee {
            parties: c.parties.iter().map(|m| operator(m.node)).collect(),
            dealer: operator(dealer.node),
        })
    }
}

/// The tickets of one scheduled attempt: sealed once, uploaded until each is in.
struct Tickets {
    attempt: u32,
    manifest: Manifest,
    blobs: Vec<Vec<u8>>,
    sent: Vec<bool>,
}

/// Checks a turn's options before anything is submitted.
fn check_options(prompt: &[u32], options: &ChatOptions, context: usize) -> Result<(), ChatError> {
    let bad = |s: String| Err(ChatError::InvalidRequest(s));
    if prompt.is_empty() {
        return bad("an empty prompt".into());
    }
    if options.max_tokens == 0 {
        return bad("max_tokens must be at least 1".into());
    }
    let positions = prompt.len() + options.max_tokens - 1;
    let limit = MAX_POSITIONS.min(context);
    if positions > limit {
        return bad(format!(
            "a prompt of {} tokens and {} more: at most {limit} positions",
            prompt.len(),
            options.max_tokens
        ));
    }
    if options.stop.len() > MAX_STOPS
        || options
            .stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return bad(format!(
            "at most {MAX_STOPS} stop strings of 1 to {MAX_STOP_BYTES} bytes"
        ));
    }
    if options.parties < 2 {
        return bad("at least 2 parties".into());
    }
    Ok(())
}

/// The text streamed so far, cut at stop strings.
struct TextStream<'a> {
    stops: &'a [String],
    /// Bytes of the text already streamed.
    shown: usize,
}

impl<'a> TextStream<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self { stops, shown: 0 }
    }

    /// Given the whole text decoded so far: the new text safe to stream, and whether a stop string ended it.
    fn push(&mut self, text: &str) -> (String, bool) {
        if let Some(cut) = self.stop_at(text) {
            let delta = text.get(self.shown..cut).unwrap_or_default().to_string();
            self.shown = self.shown.max(cut);
            return (delta, true);
        }
        // An incomplete UTF-8 sequence decodes to U+FFFD: wait for the rest.
        let mut end = text.len();
        if text.ends_with('\u{fffd}') {
            end -= '\u{fffd}'.len_utf8();
        }
        end -= self.held_back(&text[..end]);
        let delta = text.get(self.shown..end).unwrap_or_default().to_string();
        self.shown = self.shown.max(end);
        (delta, false)
    }

    /// The final text: cut before the first stop string.
    fn finish(&self, text: &str) -> String {
        let cut = self.stop_at(text).unwrap_or(text.len());
        text[..cut].to_string()
    }

    /// Where the first stop string begins in `text`.
    fn stop_at(&self, text: &str) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
    }

    /// Bytes at the end of `text` that may begin a stop string (held back until it is decided).
    fn held_back(&self, text: &str) -> usize {
        self.stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]))
                    .max()
            })
            .max()
            .unwrap_or(0)
    }
}

/// The prefill's ms, the median decode step's ms (per step, the slowest party), and each party's bytes
/// sent, from the parties' per-step reports.
fn costs(steps: &[Vec<PartyReport>], parties: usize) -> (f64, f64, Vec<u64>) {
    let step_ms = |reports: &[PartyReport]| {
        reports
            .iter()
            .map(|r| r.latencies.iter().sum::<f64>() * 1e3)
            .fold(0.0, f64::max)
    };
    let prefill_ms = steps.first().map_or(0.0, |s| step_ms(s));
    let mut decode: Vec<f64> = steps.iter().skip(1).map(|s| step_ms(s)).collect();
    decode.sort_by(f64::total_cmp);
    let ms_per_token = match decode.len() {
        0 => 0.0,
        n if n % 2 == 1 => decode[n / 2],
        n => (decode[n / 2 - 1] + decode[n / 2]) / 2.0,
    };
    let bytes = (0..parties)
        .map(|p| {
            steps
                .iter()
                .filter_map(|s| s.get(p))
                .flat_map(|r| r.online.iter().map(|o| o.bytes_sent))
                .sum()
        })
        .collect();
    (prefill_ms, ms_per_token, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_text_holds_back_a_possible_stop_string_and_never_shows_it() {
        let stops = vec!["\n\nUser".to_string()];
        let mut s = TextStream::new(&stops);
        assert_eq!(s.push("Paris"), ("Paris".into(), false));
        // "\n" may begin the stop string: held back.
        assert_eq!(s.push("Paris.\n"), (".".into(), false));
        assert_eq!(s.push("Paris.\nIt"), ("\nIt".into(), false));
        assert_eq!(s.push("Paris.\nIt\n\nUs"), ("".into(), false));
        assert_eq!(s.push("Paris.\nIt\n\nUser: hi"), ("".into(), true));
        assert_eq!(s.finish("Paris.\nIt\n\nUser: hi"), "Paris.\nIt");
        // An incomplete UTF-8 sequence waits for its end.
        let mut t = TextStream::new(&[]);
        assert_eq!(t.push("caf\u{fffd}"), ("caf".into(), false));
        assert_eq!(t.push("café"), ("é".into(), false));
    }

    #[test]
    fn options_are_checked_before_submission() {
        let ok = ChatOptions::default();
        assert!(check_options(&[1, 2, 3], &ok, 8192).is_ok());
        assert!(check_options(&[], &ok, 8192).is_err());
        let zero = ChatOptions {
            max_tokens: 0,
            ..ChatOptions::default()
        };
        assert!(check_options(&[1], &zero, 8192).is_err());
        // The prompt and every generated token but the last are cached.
        let long = ChatOptions {
            max_tokens: MAX_POSITIONS,
            ..ChatOptions::default()
        };
        assert!(check_options(&[1], &long, 8192).is_ok());
        assert!(check_options(&[1, 2], &long, 8192).is_err());
        assert!(check_options(&[1], &long, 100).is_err());
        let stops = ChatOptions {
            stop: vec![String::new()],
            ..ChatOptions::default()
        };
        assert!(check_options(&[1], &stops, 8192).is_err());
    }
}
