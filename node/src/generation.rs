//! Private generation on a committee of nodes: one chat turn (or one benchmark prompt) is one job whose
//! parties keep their shares of the KV cache in memory for the job's lifetime.
//!
//! The job's public description is its manifest: the workload names the model (`smollm2-135m-instruct`, its
//! GGUF file pinned by the manifest's model id, the file's SHA-256; or `llama-tiny`, random weights from the
//! manifest's seed), `batch` is the prompt's length and `inferences` the most tokens the turn may generate.
//! The dealer and every party derive the same material from it ([`GenerationJob::requests`]): the prompt's
//! chunks of [`PREFILL_CHUNK`] positions, then one decode step per token after the first.
//!
//! On the party's `Run` stream the client and the party alternate:
//! 1. client: `Run` with one input, its share of the prompt's embedded vectors (`batch x hidden`);
//! 2. party: `Outputs` with one output, its share of the logits of every prompt position (of the last one
//!    only on a coordinator's job: [`PromptLogits`]), and the prefill's costs (one entry per chunk);
//! 3. client: `Run` with one input, its share of the next token's embedded vector (`hidden`); party:
//!    `Outputs` with its share of that position's logits and the step's costs; repeated at most
//!    `inferences - 1` times;
//! 4. client: `Run` with no input (or the stream's end): the turn is over.
//!
//! Each step runs through the one party program ([`PartySession`] over [`CachedLlama`]), so it costs the same
//! bytes and rounds as in memory. Bounds: at most [`MAX_POSITIONS`] positions (and the model's context), so
//! a party's cache share takes at most `MAX_POSITIONS x layers x 2 x kv_width x 8` bytes (47 MB for SmolLM2);
//! a job runs at most [`MAX_JOB_DURATION`]; the client has [`CLIENT_STEP_TIMEOUT`] to send each next token.
//!
//! Through a coordinator (`veil chat --coordinator`), the coordinator schedules the job and signs its
//! manifest; each party's sealed input (relayed by the coordinator, opened by the party only) is a
//! [`GenerationTicket`] naming the client's QUIC key. The party admits that key for the job's lifetime and
//! offers its seat ([`Seats`]); the client dials the party directly (mutual TLS, the party's key pinned by
//! the coordinator-signed manifest) and opens the stream with [`Msg::Attach`], which the party answers with
//! `Accepted` once the seat is the client's; the exchange above follows
//! on that stream ([`serve_attach`]), so no per-token traffic passes through the coordinator. A client
//! that does not attach within the node's wait fails the party's task.
//!
//! Invariant: a party sends the client only its own output shares and public measurements; it never sees a
//! token (only embedded vectors' shares). A seat is taken at most once, and only by its ticket's key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{RecvStream, SendStream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use veil_engine::kernel::RingGemm;
use veil_engine::lab::shaping::ShapedNet;
use veil_engine::llama::private::{PrivateConfig, PrivateLlama, StepShape};
use veil_engine::llama::program::CachedLlama;
use veil_engine::llama::run::PREFILL_CHUNK;
use veil_engine::llama::{ChatModel, LlamaConfig, LlamaWeights};
use veil_engine::session::PartySession;
use veil_protocols::domain::Semi2k;
use veil_protocols::material::{PartyMaterial, Request};
use veil_protocols::ring::FixedPoint;
use veil_protocols::semi2k::Party;

use crate::error::{NodeError, Result};
use crate::frame::{self, RecvError};
use crate::identity::PublicKey;
use crate::jobs::Arrival;
use crate::manifest::{Manifest, ModelSpec, Protocol};
use crate::party::PartyContext;
use crate::quic_net::QuicNet;
use crate::wire::{JobId, Msg, PartyReport, RunRequest, WireStats, WireStep, Words};

/// SmolLM2-135M-Instruct: the GGUF file under the node's models directory, pinned by its SHA-256.
pub const SMOLLM2: &str = "smollm2-135m-instruct";
/// The GGUF file's name in `models/smollm2-135m-instruct/`.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// A small random Llama ([`LlamaConfig::tiny`], weights from the manifest's seed): costs pinned in tests.
pub const TINY: &str = "llama-tiny";

/// Most positions (prompt and generated) one generation job may cache.
pub const MAX_POSITIONS: usize = 512;
/// Longest a generation job may run at a party, from its start.
pub const MAX_JOB_DURATION: Duration = Duration::from_secs(30 * 60);
/// Longest a party waits for the client's next token.
pub const CLIENT_STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether `workload` is a generation workload.
pub fn is_generation(workload: &str) -> bool {
    workload == SMOLLM2 || workload == TINY
}

/// Checks a generation manifest's model and sizes (before the job is accepted); the reason if refused.
pub fn check_spec(
    spec: &ModelSpec,
    batch: u32,
    inferences: u32,
) -> std::result::Result<(), String> {
    match (spec.workload.as_str(), &spec.deployed) {
        (SMOLLM2, Some(d)) => d.check_id().map_err(|e| e.to_string())?,
        (SMOLLM2, None) => return Err(format!("{SMOLLM2} without its model id")),
        (TINY, None) => {}
        (TINY, Some(_)) => return Err(format!("{TINY} is not a deployed model")),
        (other, _) => return Err(format!("{other:?} is not a generation workload")),
    }
    if spec.weights != veil_engine::WeightMode::Public {
        return Err("a chat model's weights are public".into());
    }
    let positions = batch as usize + (inferences as usize).saturating_sub(1);
    if batch == 0 || inferences == 0 || positions > MAX_POSITIONS {
        return Err(format!(
            "a prompt of {batch} and {inferences} tokens: at most {MAX_POSITIONS} positions"
        ));
    }
    Ok(())
}

/// The SHA-256 of `path`, hex (the model id of a GGUF file).
pub fn file_id(path: &std::path::Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where this process finds SmolLM2's file (`VEIL_MODELS_DIR`, else `models/`).
pub fn smollm2_path() -> PathBuf {
    veil_engine::bert::pretrained::model_dir(SMOLLM2).join(SMOLLM2_FILE)
}

/// The public shape of a generation job.
#[derive(Debug, Clone)]
pub struct GenerationJob {
    /// The model's steps.
    pub shape: StepShape,
    /// Prompt positions (`manifest.batch`).
    pub prompt_len: usize,
    /// Decode steps after the prefill (`manifest.inferences - 1`).
    pub decode_steps: usize,
}

impl GenerationJob {
    /// The job of `manifest` (its model's configuration read from the pinned file, or the tiny shape).
    pub fn of(manifest: &Manifest) -> Result<GenerationJob> {
        let spec = &manifest.model;
        check_spec(spec, manifest.batch, manifest.inferences).map_err(NodeError::Manifest)?;
        if manifest.protocol != Protocol::Semi2k {
            return Err(NodeError::Manifest(format!(
                "private generation runs under {}, not {}",
                Protocol::Semi2k,
                manifest.protocol
            )));
        }
        let config = match spec.workload.as_str() {
            SMOLLM2 => {
                let path = checked_smollm2(spec)?;
                let g = veil_engine::gguf::Gguf::open(&path)
                    .map_err(|e| engine(veil_engine::llama::LlamaError::from(e)))?;
                LlamaConfig::from_gguf(&g).map_err(engine)?
            }
            _ => LlamaConfig::tiny(),
        };
        let shape = StepShape {
            config,
            pcfg: private_config(spec.frac_bits)?,
        };
        let job = GenerationJob {
            shape,
            prompt_len: manifest.batch as usize,
            decode_steps: manifest.inferences as usize - 1,
        };
        let positions = job.prompt_len + job.decode_steps;
        if positions > job.shape.config.context {
            return Err(NodeError::Manifest(format!(
                "{positions} positions exceed the model's context of {}",
                job.shape.config.context
            )));
        }
        Ok(job)
    }

    /// The job's dealer material, in the order the party consumes it.
    pub fn requests(&self) -> Vec<Request> {
        self.shape
            .generation_requests(self.prompt_len, self.decode_steps, PREFILL_CHUNK)
    }
}

fn engine(e: impl Into<veil_engine::EngineError>) -> NodeError {
    NodeError::Engine(e.into())
}

fn private_config(frac_bits: u32) -> Result<PrivateConfig> {
    let fp = FixedPoint::new(frac_bits).map_err(veil_protocols::ProtocolError::from)?;
    PrivateConfig::new(fp).map_err(engine)
}

/// SmolLM2's file, checked against the manifest's model id.
fn checked_smollm2(spec: &ModelSpec) -> Result<PathBuf> {
    let want = spec
        .deployed
        .as_ref()
        .map(|d| d.id.to_ascii_lowercase())
        .ok_or_else(|| NodeError::Manifest(format!("{SMOLLM2} without its model id")))?;
    let path = smollm2_path();
    let got = file_id(&path).map_err(|e| NodeError::Job(format!("{}: {e}", path.display())))?;
    if got != want {
        return Err(NodeError::Manifest(format!(
            "the model file {} is not the manifest's model {want}",
            path.display()
        )));
    }
    Ok(path)
}

/// The chat model this process has loaded (at most one: SmolLM2's fixed-point weights take 1.3 GB), by
/// workload, id or seed, and fixed point.
static LOADED: Mutex<Option<(String, Arc<PrivateLlama>)>> = Mutex::new(None);

/// The private model of `spec`, loaded once.
fn model(spec: &ModelSpec) -> Result<Arc<PrivateLlama>> {
    let key = format!(
        "{}/{}/{}/{}",
        spec.workload,
        spec.deployed.as_ref().map_or("", |d| d.id.as_str()),
        spec.seed,
        spec.frac_bits
    );
    let mut loaded = LOADED
        .lock()
        .map_err(|_| NodeError::Job("model cache poisoned".into()))?;
    if let Some((k, m)) = loaded.as_ref() {
        if *k == key {
            return Ok(m.clone());
        }
    }
    *loaded = None;
    let weights = match spec.workload.as_str() {
        SMOLLM2 => {
            let path = checked_smollm2(spec)?;
            ChatModel::load(&path).map_err(engine)?.weights
        }
        TINY => LlamaWeights::random(LlamaConfig::tiny(), spec.seed),
        other => {
            return Err(NodeError::Manifest(format!(
                "{other:?} is not a generation workload"
            )))
        }
    };
    let m = Arc::new(PrivateLlama::new(&weights, private_config(spec.frac_bits)?).map_err(engine)?);
    *loaded = Some((key, m.clone()));
    Ok(m)
}

async fn write(send: &mut SendStream, msg: Msg) -> Result<()> {
    frame::write(send, &msg)
        .await
        .map_err(|e| NodeError::Quic(e.to_string()))
}

/// What the party thread hands the stream task.
enum Event {
    /// A step's logits share and costs, for the client.
    Step(Box<PartyReport>),
    /// The party is done (the turn is over, or it failed).
    Done(Result<()>),
}

/// Which prompt positions' logits the prefill returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptLogits {
    /// Every position's (the benchmark's teacher-forced agreement needs them).
    All,
    /// The last position's only (a chat turn: the first token's): one row whatever the prompt's length.
    Last,
}

/// How a turn ended at a party whose stream still worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEnd {
    /// The client ended the turn, or its tokens were spent.
    Done,
    /// The party failed; the client was sent the reason (never a share or a value).
    Failed {
        /// Why.
        reason: String,
        /// Whether the client caused it ([`NodeError::Client`]).
        client_fault: bool,
    },
}

/// Serves a generation job's party on the client's `Run` stream (see the module doc): runs the party on a
/// thread of its own and relays its steps and the client's next tokens. Ends the stream. An error: the
/// stream itself broke.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    ctx: PartyContext,
    manifest: Manifest,
    index: usize,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    first: RunRequest,
    prompt_logits: PromptLogits,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<TurnEnd> {
    let job = manifest.job;
    let max_frame = ctx.max_frame;
    let (events, mut from_party) = mpsc::unbounded_channel();
    let (to_party, next_tokens) = std_mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("veil-gen-{index}"))
        .spawn(move || {
            let result = run_party(
                &ctx,
                &manifest,
                index,
                arrivals,
                first,
                prompt_logits,
                &events,
                &next_tokens,
            );
            let _ = events.send(Event::Done(result));
        });
    if let Err(e) = thread {
        return Err(NodeError::System("starting the party thread", e));
    }
    loop {
        match from_party.recv().await {
            Some(Event::Step(report)) => {
                write(send, Msg::Outputs(*report))
                    .await
                    .map_err(|e| NodeError::Client(format!("its stream: {e}")))?;
                // `Ok(None)`: the client ended the turn; an error: it broke the exchange.
                let next =
                    match tokio::time::timeout(CLIENT_STEP_TIMEOUT, frame::read(recv, max_frame))
                        .await
                    {
                        Ok(Ok(Msg::Run(r))) if !r.inputs.is_empty() => Ok(Some(r)),
                        Ok(Ok(Msg::Run(_))) | Ok(Err(RecvError::Closed)) => Ok(None),
                        Ok(Ok(other)) => Err(NodeError::Client(format!(
                            "it sent {} mid-turn",
                            other.name()
                        ))),
                        Ok(Err(e)) => Err(NodeError::Client(format!("its stream: {e}"))),
                        Err(_) => Err(NodeError::Client(format!(
                            "no next token within {CLIENT_STEP_TIMEOUT:?}"
                        ))),
                    };
                // The party may have finished its last step already: then nobody listens.
                let _ = to_party.send(next);
            }
            Some(Event::Done(Ok(()))) => {
                tracing::info!(%job, party = index, "generation job done");
                let _ = send.finish();
                return Ok(TurnEnd::Done);
            }
            Some(Event::Done(Err(e))) => {
                tracing::error!(%job, party = index, "generation job failed: {e}");
                let client_fault = matches!(e, NodeError::Client(_));
                let reason = format!("party {index}: {e}");
                write(send, Msg::Failed(reason.clone())).await?;
                let _ = send.finish();
                return Ok(TurnEnd::Failed {
                    reason,
                    client_fault,
                });
            }
            None => {
                let reason = format!("party {index}: the party thread panicked");
                write(send, Msg::Failed(reason.clone())).await?;
                let _ = send.finish();
                return Ok(TurnEnd::Failed {
                    reason,
                    client_fault: false,
                });
            }
        }
    }
}

/// A coordinator generation job's sealed input to each party: which client may drive the turn. Sealed by
/// the client to the party's attested key, bound to the attempt's run, the party's index and the model
/// (`crate::inbox::binding_for`), relayed by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationTicket {
    /// The client's QUIC/TLS identity: the only key the party admits for the job's stream.
    pub driver: PublicKey,
}

/// Longest a party of a coordinator generation job waits for its client to attach.
pub const ATTACH_WAIT: Duration = Duration::from_secs(60);

/// A party of a coordinator generation job waiting for its client (see the module doc).
pub struct Seat {
    /// The only key that may take the seat (the ticket's driver).
    pub driver: PublicKey,
    /// The party's context.
    pub ctx: PartyContext,
    /// The checked manifest.
    pub manifest: Manifest,
    /// This node's party index.
    pub index: usize,
    /// The job's incoming party streams.
    pub arrivals: mpsc::UnboundedReceiver<Arrival>,
    /// Where the turn's outcome goes (the task that offered the seat waits on it).
    pub done: oneshot::Sender<Result<TurnEnd>>,
}

/// The seats of a node's coordinator generation jobs, by job.
/// Invariant: at most one seat per job; a seat leaves the map exactly once (taken by its driver or
/// withdrawn by the task that offered it).
#[derive(Default)]
pub struct Seats(Mutex<HashMap<JobId, Seat>>);

impl Seats {
    /// Offers `seat` for `job`; fails if the job has one already.
    pub fn offer(&self, job: JobId, seat: Seat) -> Result<()> {
        let mut map = self
            .0
            .lock()
            .map_err(|_| NodeError::Job("seats poisoned".into()))?;
        if map.contains_key(&job) {
            return Err(NodeError::Manifest(format!("job {job} has a seat already")));
        }
        map.insert(job, seat);
        Ok(())
    }

    /// Withdraws `job`'s seat; whether it was still free (nobody attached).
    pub fn withdraw(&self, job: &JobId) -> bool {
        self.0.lock().is_ok_and(|mut m| m.remove(job).is_some())
    }

    /// Takes `job`'s seat for `peer`, which must be its driver (the seat stays otherwise).
    fn take(&self, job: &JobId, peer: &PublicKey) -> std::result::Result<Seat, String> {
        let mut map = self.0.lock().map_err(|_| "seats poisoned".to_string())?;
        match map.get(job) {
            None => Err(format!("no generation party of job {job} waits here")),
            Some(seat) if seat.driver != *peer => {
                Err(format!("job {job} is driven by another client"))
            }
            Some(_) => map
                .remove(job)
                .ok_or_else(|| "the seat vanished".to_string()),
        }
    }
}

/// Serves a client's `Attach` stream: takes the job's seat (the peer must be its driver), answers
/// `Accepted` (or `Failed` when there is no seat for it), reads the first
/// `Run` (the prompt's shares) within `wait` and serves the turn ([`serve`]); the outcome goes to the seat's
/// task. Coordinator jobs refuse client-chosen link shaping, thread counts and profiles.
pub async fn serve_attach(
    seats: &Seats,
    peer: PublicKey,
    job: JobId,
    send: &mut SendStream,
    recv: &mut RecvStream,
    wait: Duration,
) -> Result<()> {
    let seat = match seats.take(&job, &peer) {
        Ok(s) => s,
        Err(why) => {
            write(send, Msg::Failed(why.clone())).await?;
            return Err(NodeError::Unexpected(why));
        }
    };
    // The client's TLS handshake completes before this node has checked its certificate: it learns that
    // it was admitted, and that it holds the seat, from this answer.
    if let Err(e) = write(send, Msg::Accepted).await {
        let _ = seat
            .done
            .send(Err(NodeError::Client(format!("its stream: {e}"))));
        return Ok(());
    }
    let first = match tokio::time::timeout(wait, frame::read(recv, seat.ctx.max_frame)).await {
        Ok(Ok(Msg::Run(r))) if r.shaping.is_none() && r.threads == 1 && !r.profile => Ok(r),
        Ok(Ok(Msg::Run(_))) => Err(NodeError::Client(
            "client-chosen link shaping, threads and profiles are refused on coordinator jobs"
                .into(),
        )),
        Ok(Ok(other)) => Err(NodeError::Client(format!("it began with {}", other.name()))),
        Ok(Err(e)) => Err(NodeError::Client(format!("its stream: {e}"))),
        Err(_) => Err(NodeError::Client(format!("no prompt within {wait:?}"))),
    };
    let outcome = match first {
        Ok(first) => {
            serve(
                seat.ctx,
                seat.manifest,
                seat.index,
                seat.arrivals,
                first,
                PromptLogits::Last,
                send,
                recv,
            )
            .await
        }
        Err(e) => {
            let _ = write(send, Msg::Failed(format!("party {}: {e}", seat.index))).await;
            let _ = send.finish();
            Err(e)
        }
    };
    // The task that offered the seat reports the outcome to the coordinator.
    let _ = seat.done.send(outcome);
    Ok(())
}

/// The party's link to its peers.
type Link = ShapedNet<QuicNet>;

/// One party's generation job: fetch the material, connect, prefill, then one decode step per token the
/// client sends, until the client ends the turn or the job's steps are spent.
#[allow(clippy::too_many_arguments)]
fn run_party(
    ctx: &PartyContext,
    manifest: &Manifest,
    party: usize,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    first: RunRequest,
    prompt_logits: PromptLogits,
    events: &mpsc::UnboundedSender<Event>,
    next_tokens: &std_mpsc::Receiver<Result<Option<RunRequest>>>,
) -> Result<()> {
    let started = Instant::now();
    let job = GenerationJob::of(manifest)?;
    let d = job.shape.config.hidden;
    if first.job != manifest.job || !first.weights.is_empty() {
        return Err(NodeError::Client(
            "a generation run request carries the job's id and no weights".into(),
        ));
    }
    let prompt = match first.inputs.as_slice() {
        [x] if x.0.len() == job.prompt_len * d => x.0.clone(),
        _ => {
            return Err(NodeError::Client(format!(
                "a generation job starts with one input of {} elements",
                job.prompt_len * d
            )))
        }
    };
    if let Some(Err(e)) = first.shaping.map(|s| s.check()) {
        return Err(NodeError::Client(format!("run request: {e}")));
    }
    let model = model(&manifest.model)?;
    let n = manifest.parties.len();
    let dealt = ctx
        .handle
        .block_on(async {
            tokio::time::timeout(
                ctx.deal_timeout,
                crate::party::fetch_material(&ctx.peers, manifest, party, ctx.max_frame),
            )
            .await
        })
        .map_err(|_| NodeError::Timeout(ctx.deal_timeout, "waiting for the dealer"))??;
    if party + 1 != n && !dealt.corrections.0.is_empty() {
        return Err(NodeError::Unexpected(
            "the dealer sent corrections to a party that takes none".into(),
        ));
    }
    let net: Link = ctx.open_links(manifest, party, arrivals, first.shaping)?;
    let material = PartyMaterial::new(
        party,
        n,
        &dealt.job_seed,
        dealt.corrections.0,
        job.requests(),
    )?;
    let fp = model.private_config().fixed_point;
    // The client's thread count, bounded by this machine's cores.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let gemm = Arc::new(RingGemm::new((first.threads as usize).clamp(1, cores)));
    let mut p = Party::<Link, Semi2k>::new(net, material, fp, gemm)?;
    tracing::info!(job = %manifest.job, party, prompt = job.prompt_len, steps = job.decode_steps, "generation party connected");
    let program = CachedLlama::<Semi2k>::new(&model);
    {
        let mut session = PartySession::new(&mut p, &program);
        // The prefill: the prompt's chunks, one inference each; the logits of every prompt position.
        let mut report = empty_report();
        report.dealer_bytes = dealt.dealer_bytes;
        report.dealer_seconds = dealt.dealer_seconds;
        let mut logits = Vec::new();
        for chunk in prompt.chunks(PREFILL_CHUNK * d) {
            let udp = session.party().net().inner().udp_tx_bytes();
            let done = session.infer(chunk.to_vec(), chunk.len() / d)?;
            record(
                &mut report,
                &done,
                udp,
                session.party().net().inner().udp_tx_bytes(),
            );
            logits.extend(done.output);
        }
        if prompt_logits == PromptLogits::Last {
            let vocab = job.shape.config.vocab;
            logits = logits.split_off(logits.len().saturating_sub(vocab));
        }
        report.outputs.push(Words(logits));
        send_step(events, report)?;
        session.set_profile(first.profile);
        for _ in 0..job.decode_steps {
            // The stream task bounds the wait (CLIENT_STEP_TIMEOUT); this one only guards against its loss.
            let next = match next_tokens.recv_timeout(CLIENT_STEP_TIMEOUT + Duration::from_secs(5))
            {
                Ok(Ok(Some(run))) => run,
                // The client ended the turn early: the rest of the material is never used.
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(NodeError::Client(format!(
                        "no next token within {CLIENT_STEP_TIMEOUT:?}"
                    )))
                }
            };
            if started.elapsed() > MAX_JOB_DURATION {
                return Err(NodeError::Timeout(MAX_JOB_DURATION, "the generation job"));
            }
            let x = match next.inputs.as_slice() {
                [x] if x.0.len() == d && next.job == manifest.job => x.0.clone(),
                _ => {
                    return Err(NodeError::Client(format!(
                        "a decode step takes one input of {d} elements"
                    )))
                }
            };
            let mut report = empty_report();
            let udp = session.party().net().inner().udp_tx_bytes();
            let done = session.infer(x, 1)?;
            record(
                &mut report,
                &done,
                udp,
                session.party().net().inner().udp_tx_bytes(),
            );
            report.profile = done
                .profile
                .iter()
                .map(|s| WireStep {
                    label: s.label.clone(),
                    seconds: s.elapsed.as_secs_f64(),
                    net: WireStats::from(&s.net),
                    material: s.material,
                })
                .collect();
            report.outputs.push(Words(done.output));
            send_step(events, report)?;
        }
    }
    // Every dealt request was consumed.
    p.finish()?;
    Ok(())
}

/// What a party of a coordinator generation job returns to the coordinator once the turn is done: no
/// outputs (the client got every step's shares on its own stream).
pub fn summary_report() -> PartyReport {
    empty_report()
}

fn empty_report() -> PartyReport {
    PartyReport {
        outputs: Vec::new(),
        latencies: Vec::new(),
        preparation: Vec::new(),
        online: Vec::new(),
        setup: WireStats::default(),
        profile: Vec::new(),
        dealer_bytes: 0,
        dealer_seconds: 0.0,
        udp_tx_bytes: Vec::new(),
        auth_outputs: Vec::new(),
        transcripts: Vec::new(),
        rep3m_checks: Vec::new(),
        // Generation runs semi2k only: no MAC key.
        output_key_share: None,
    }
}

/// Adds one inference's costs to `report`.
fn record(
    report: &mut PartyReport,
    done: &veil_engine::session::Inference<Semi2k>,
    udp_before: u64,
    udp_after: u64,
) {
    report.preparation.push(done.preparation.as_secs_f64());
    report.latencies.push(done.latency.as_secs_f64());
    report.online.push(WireStats::from(&done.online));
    report
        .udp_tx_bytes
        .push(udp_after.saturating_sub(udp_before));
}

fn send_step(events: &mpsc::UnboundedSender<Event>, report: PartyReport) -> Result<()> {
    events
        .send(Event::Step(Box::new(report)))
        .map_err(|_| NodeError::Job("the client's stream is gone".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_spec() -> ModelSpec {
        ModelSpec {
            workload: TINY.into(),
            seed: 1,
            weights: veil_engine::WeightMode::Public,
            frac_bits: 16,
            deployed: None,
        }
    }

    #[test]
    fn specs_are_bounded() {
        assert!(check_spec(&tiny_spec(), 8, 4).is_ok());
        // Positions: the prompt plus every token after the first.
        assert!(check_spec(&tiny_spec(), 500, 13).is_ok());
        assert!(check_spec(&tiny_spec(), 500, 14).is_err());
        assert!(check_spec(&tiny_spec(), 0, 4).is_err());
        assert!(check_spec(&tiny_spec(), 8, 0).is_err());
        let mut shared = tiny_spec();
        shared.weights = veil_engine::WeightMode::Shared;
        assert!(check_spec(&shared, 8, 4).is_err());
        let mut smollm2 = tiny_spec();
        smollm2.workload = SMOLLM2.into();
        assert!(check_spec(&smollm2, 8, 4).is_err(), "no model id");
        let mut other = tiny_spec();
        other.workload = "network-a".into();
        assert!(check_spec(&other, 8, 4).is_err());
    }

    #[test]
    fn tiny_job_material_is_its_steps_in_order() {
        let shape = StepShape {
            config: LlamaConfig::tiny(),
            pcfg: private_config(16).unwrap(),
        };
        let mut expected = shape.requests(0, 8, 8);
        expected.extend(shape.requests(8, 2, 2));
        expected.extend(shape.requests(10, 1, 1));
        expected.extend(shape.requests(11, 1, 1));
        assert_eq!(shape.generation_requests(10, 2, PREFILL_CHUNK), expected);
    }
}
