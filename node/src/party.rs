//! The execution-party role: one party's part of a job, run on its own thread.
//!
//! Order of work (the party program itself is `veil_engine::session::PartySession`, as in local runs; this
//! module adapts it to a node): check the client's run
//! request against the plan; ask the dealer for this party's seeds (the last party then reads its corrections
//! from the dealer's stream as its material needs them, a few frames ahead: `DealerFeed`);
//! open the job's streams to the other parties; set up the model (opening the masked weights); run every
//! inference, measuring each; check that every dealt request was consumed; report output shares and costs.
//! Under `spdz2k` the weights and inputs arrive published (`value - mask`), every inference ends with the
//! MAC check before its output share is reported, and the report carries each check's transcript.
//! Under `rep3` there is no dealer: the three parties agree on their pairwise PRF keys over the job's
//! streams (as `veil_protocols::rep3::Party::new` does), every input and shared weight arrives as this
//! party's two replicated components (see [`replicated_words`]), and each inference runs through
//! `veil_engine::session::infer_replicated`, as in memory. `rep3m` runs the same way with its own party
//! type: each output share is reported only after the check passed, and the report carries each check's
//! view for the verifier (`veil_protocols::rep3m::transcript`).
//!
//! Invariant: nothing here logs or returns anything but this party's own shares (to the client that sent
//! the inputs) and public measurements.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::VarInt;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use veil_engine::bert::pretrained;
use veil_engine::bert::private::PrivateBert;
use veil_engine::kernel::RingGemm;
use veil_engine::lab::shaping::{ShapedNet, ShapingConfig};
use veil_engine::onnx::PrivateGraph;
use veil_engine::private::{
    setup, setup_published, setup_rep3, PublishedWeight, StepProfile, WeightShare,
};
use veil_engine::session::{
    infer_replicated, job_requests, PartySession, Program, ReplicatedInference, SessionDomain,
};
use veil_engine::{workloads, Plan};
use veil_protocols::adversary::{Adversary, Deviation};
use veil_protocols::domain::{Domain, Semi2k};
use veil_protocols::material::auth::AuthPartyGenerator;
use veil_protocols::material::generator::PartyGenerator;
use veil_protocols::material::{self, CorrectionFeed, PartyMaterial, Request};
use veil_protocols::ops::WeightOps;
use veil_protocols::prg::Seed;
use veil_protocols::rep3::{self, RepShare, RepWeight};
use veil_protocols::rep3m::{self, transcript::CheckView};
use veil_protocols::ring::FixedPoint;
use veil_protocols::semi2k::Party;
use veil_protocols::spdz2k::{Shares as AuthVec, Spdz2k};

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::frame::{self, RecvError};
use crate::jobs::Arrival;
use crate::manifest::{Manifest, Protocol};
use crate::onnx_model;
use crate::peers::Peers;
use crate::quic_net::{LinkLimits, QuicNet};
use crate::wire::{
    AuthWords, Dealt, Msg, PartyReport, RunRequest, WireStats, WireStep, WireWeight, Words,
};

/// The public plan of a manifest's model: every member builds the same one from (workload, seed), or from
/// a deployed model's architecture (weights zero: parties get theirs, as shares or public, from the client).
pub fn compile_plan(manifest: &Manifest) -> Result<Plan> {
    let spec = &manifest.model;
    let device = burn::tensor::Device::flex();
    let model = match &spec.deployed {
        Some(deployed) => veil_engine::model_file::skeleton(&deployed.parse()?, &device)?,
        None => workloads::by_name(&spec.workload, spec.seed, &device).ok_or_else(|| {
            NodeError::Manifest(format!("unknown workload {:?}", spec.workload))
        })??,
    };
    let fp = FixedPoint::new(spec.frac_bits).map_err(veil_protocols::ProtocolError::from)?;
    Ok(Plan::compile(&model, fp, spec.weights)?)
}

/// What a job's parties compute, from the manifest's public model description. Every member (and the
/// dealer) derives the same program, hence the same dealer requests.
pub enum JobProgram {
    /// A sequential model's plan (a workload, or a deployed model's architecture).
    Plan(Plan),
    /// A pretrained sentence encoder (public weights, pinned by the manifest's model id) embedding sequences
    /// of `manifest.batch` tokens, one per inference.
    Encoder(Arc<PrivateBert>),
    /// A deployed ONNX model's graph (public weights, the file pinned by the manifest's model id), one
    /// input of the graph's shape per inference.
    Graph(Arc<PrivateGraph>),
}

/// Pretrained encoders this process has loaded, by model id and fixed point (loading and hashing ~90 MB
/// takes seconds; a node keeps each encoder once). Invariant: at most [`MAX_ENCODERS`] entries, the most
/// recently loaded last.
static ENCODERS: Mutex<Vec<(String, Arc<PrivateBert>)>> = Mutex::new(Vec::new());

/// Most encoders a node keeps loaded.
const MAX_ENCODERS: usize = 2;

/// The pretrained encoder `name` with model id `id` and `frac_bits` fractional bits, from this process's
/// models directory (see `veil_engine::bert::pretrained::model_dir`), loaded once.
fn encoder(name: &str, id: &str, frac_bits: u32) -> Result<Arc<PrivateBert>> {
    let key = format!("{id}/{frac_bits}");
    let mut cache = ENCODERS
        .lock()
        .map_err(|_| NodeError::Job("encoder cache poisoned".into()))?;
    if let Some((_, e)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(e.clone());
    }
    let dir = pretrained::model_dir(name);
    let loaded = Arc::new(pretrained::load_checked(name, &dir, id, frac_bits)?);
    if cache.len() >= MAX_ENCODERS {
        cache.remove(0);
    }
    cache.push((key, loaded.clone()));
    Ok(loaded)
}

impl JobProgram {
    /// The program of `manifest`: a pretrained encoder if its workload names one (its deployed id pins the
    /// weights), else the compiled plan.
    pub fn of(manifest: &Manifest) -> Result<JobProgram> {
        let spec = &manifest.model;
        if spec.workload == onnx_model::ONNX_WORKLOAD {
            let d = spec.deployed.as_ref().ok_or_else(|| {
                NodeError::Manifest("an ONNX job without its deployed model".into())
            })?;
            if spec.weights != veil_engine::WeightMode::Public {
                return Err(NodeError::Manifest(
                    "an ONNX model's weights are public".into(),
                ));
            }
            // Fetched, checked against the id and the size, and imported before the job was accepted.
            return Ok(JobProgram::Graph(onnx_model::loaded(
                &d.id,
                spec.frac_bits,
            )?));
        }
        if pretrained::is_pretrained(&spec.workload) {
            let id = spec
                .deployed
                .as_ref()
                .map(|d| d.id.as_str())
                .ok_or_else(|| {
                    NodeError::Manifest(format!(
                        "pretrained model {:?} without its model id",
                        spec.workload
                    ))
                })?;
            if spec.weights != veil_engine::WeightMode::Public {
                return Err(NodeError::Manifest(
                    "a pretrained model's weights are public".into(),
                ));
            }
            return Ok(JobProgram::Encoder(encoder(
                &spec.workload,
                id,
                spec.frac_bits,
            )?));
        }
        Ok(JobProgram::Plan(compile_plan(manifest)?))
    }

    /// The job's dealer requests, in the order its parties consume them.
    pub fn requests(&self, manifest: &Manifest) -> Vec<Request> {
        self.request_parts(manifest).all()
    }

    /// The job's dealer requests in parts: the model setup's, then one inference's, repeated for every
    /// inference of the manifest (what [`JobProgram::requests`] lists in full).
    pub fn request_parts(&self, manifest: &Manifest) -> JobRequests {
        let batch = manifest.batch as usize;
        if !manifest.protocol.has_dealer() {
            // No dealer, no material: the parties' PRF keys are all their correlated randomness.
            return JobRequests {
                setup: Vec::new(),
                inference: Vec::new(),
                inferences: manifest.inferences as usize,
            };
        }
        let spdz2k = manifest.protocol == Protocol::Spdz2k;
        let (setup, inference) = match self {
            JobProgram::Plan(plan) if spdz2k => {
                let mut one = vec![Request::Input {
                    len: batch * plan.input_len,
                }];
                one.extend(plan.requests(batch));
                (plan.setup_requests(), one)
            }
            JobProgram::Plan(plan) => (Vec::new(), plan.requests(batch)),
            JobProgram::Encoder(e) if spdz2k => (
                Vec::new(),
                job_requests::<Spdz2k, PrivateBert>(e, Vec::new(), &[batch]),
            ),
            JobProgram::Encoder(e) => (
                Vec::new(),
                job_requests::<Semi2k, PrivateBert>(e, Vec::new(), &[batch]),
            ),
            JobProgram::Graph(g) if spdz2k => (
                Vec::new(),
                job_requests::<Spdz2k, PrivateGraph>(g, Vec::new(), &[batch]),
            ),
            JobProgram::Graph(g) => (
                Vec::new(),
                job_requests::<Semi2k, PrivateGraph>(g, Vec::new(), &[batch]),
            ),
        };
        JobRequests {
            setup,
            inference,
            inferences: manifest.inferences as usize,
        }
    }

    /// Element counts of the weight masks dealt once per model (`semi2k` shared weights).
    pub fn mask_shapes(&self) -> Vec<usize> {
        match self {
            JobProgram::Plan(plan) => plan.mask_shapes(),
            JobProgram::Encoder(_) | JobProgram::Graph(_) => Vec::new(),
        }
    }

    /// The weights the client must send (their shapes: `inner * outputs` and the bias length).
    fn weight_shapes(&self) -> Vec<(usize, Option<usize>)> {
        match self {
            JobProgram::Plan(plan) => plan
                .weights
                .iter()
                .map(|w| (w.inner * w.outputs, w.bias.as_ref().map(Vec::len)))
                .collect(),
            JobProgram::Encoder(_) | JobProgram::Graph(_) => Vec::new(),
        }
    }

    /// Elements of one inference's input.
    fn input_len(&self, items: usize) -> usize {
        match self {
            JobProgram::Plan(plan) => items * plan.input_len,
            JobProgram::Encoder(e) => items * e.hidden(),
            JobProgram::Graph(g) => items * g.graph().input_len(),
        }
    }

    /// The fixed-point encoding.
    fn fixed_point(&self) -> FixedPoint {
        match self {
            JobProgram::Plan(plan) => plan.fixed_point,
            JobProgram::Encoder(e) => e.config().fixed_point,
            JobProgram::Graph(g) => g.config().fixed_point,
        }
    }
}

/// A job's dealer requests in parts, in the order the parties consume them: `setup` once, then `inference`
/// `inferences` times. The dealer deals them a part at a time; a party reads the whole list ([`Self::all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequests {
    /// The model setup's requests (`spdz2k`: the weight masks), or a job's only list (a generation job).
    pub setup: Vec<Request>,
    /// One inference's requests (its input's, then the program's).
    pub inference: Vec<Request>,
    /// Inferences in the job.
    pub inferences: usize,
}

impl JobRequests {
    /// One list of requests, dealt at once.
    pub fn single(requests: Vec<Request>) -> Self {
        Self {
            setup: requests,
            inference: Vec::new(),
            inferences: 0,
        }
    }

    /// The parts in order: the setup, then every inference.
    pub fn parts(&self) -> impl Iterator<Item = &[Request]> {
        std::iter::once(self.setup.as_slice()).chain(std::iter::repeat_n(
            self.inference.as_slice(),
            self.inferences,
        ))
    }

    /// The whole list.
    pub fn all(&self) -> Vec<Request> {
        self.parts().flat_map(|p| p.iter().cloned()).collect()
    }
}

/// What a party needs from its node.
pub struct PartyContext {
    /// The node's runtime.
    pub handle: Handle,
    /// The node's endpoint.
    pub peers: Arc<Peers>,
    /// How long to wait for a peer's message.
    pub timeout: Duration,
    /// How long to wait for the committee's other parties to join the job (announce and connect their job
    /// endpoints). Each joins when its own node sees the go, has fetched and opened its input and loaded
    /// the model, so on a loaded machine they arrive seconds apart: this is the node's submit timeout, not
    /// the (shorter) wait for one message.
    pub join_timeout: Duration,
    /// How long to wait for the dealer (dealing grows with the job).
    pub deal_timeout: Duration,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// TEST ONLY ([`crate::config::NodeConfig::insecure_adversary`]): the deviation this node commits when
    /// it is the named party of a `spdz2k` job; `None` in production.
    pub adversary: Option<Adversary>,
}

impl PartyContext {
    /// The context a party of this node runs in: the node's runtime and endpoint, and the timeouts and
    /// frame limit of its configuration.
    pub fn new(handle: Handle, peers: Arc<Peers>, config: &NodeConfig) -> PartyContext {
        PartyContext {
            handle,
            peers,
            timeout: config.recv_timeout(),
            join_timeout: config.submit_timeout(),
            deal_timeout: config.submit_timeout(),
            max_frame: config.max_frame_bytes,
            adversary: config.test_adversary(),
        }
    }

    /// Party `party`'s links to the rest of `manifest`'s committee ([`QuicNet::open`]), under the run's
    /// link `shaping` if it asks for one (the caller checked it).
    pub(crate) fn open_links(
        &self,
        manifest: &Manifest,
        party: usize,
        arrivals: mpsc::UnboundedReceiver<Arrival>,
        shaping: Option<ShapingConfig>,
    ) -> Result<ShapedNet<QuicNet>> {
        let net = QuicNet::open(
            &self.handle,
            &self.peers,
            manifest,
            party,
            arrivals,
            LinkLimits {
                join_timeout: self.join_timeout,
                timeout: self.timeout,
                max_frame: self.max_frame,
            },
        )?;
        Ok(ShapedNet::optional(net, shaping))
    }
}

/// Words per shared element a party receives under `protocol`: 2 under `rep3` and `rep3m` (its two replicated
/// components), else 1.
fn share_width(protocol: Protocol) -> usize {
    if !protocol.has_dealer() {
        2
    } else {
        1
    }
}

/// A `rep3` party's share as it travels: its own component, then the next (twice the value's length).
pub fn replicated_words(share: &RepShare) -> Words {
    let (own, next) = share.components();
    let mut words = Vec::with_capacity(own.len() * 2);
    words.extend_from_slice(own);
    words.extend_from_slice(next);
    Words(words)
}

/// The `rep3` share that [`replicated_words`] encoded; `None` if the word count is odd.
pub fn replicated_share(mut words: Vec<u64>) -> Option<RepShare> {
    if !words.len().is_multiple_of(2) {
        return None;
    }
    let next = words.split_off(words.len() / 2);
    RepShare::from_components(words, next)
}

/// Checks the client's weights and inputs against the program and the manifest (under `rep3`, shared
/// values carry two components each; public weights are plaintext).
fn check_request(program: &JobProgram, manifest: &Manifest, run: &RunRequest) -> Result<()> {
    if run.job != manifest.job {
        return Err(NodeError::Unexpected(format!(
            "run request for job {} on the stream of job {}",
            run.job, manifest.job
        )));
    }
    if run.inputs.len() != manifest.inferences as usize {
        return Err(NodeError::Unexpected(format!(
            "{} inputs for a job of {} inferences",
            run.inputs.len(),
            manifest.inferences
        )));
    }
    let width = share_width(manifest.protocol);
    let weight_width = if manifest.model.weights == veil_engine::WeightMode::Shared {
        width
    } else {
        1
    };
    let shapes: Vec<(usize, Option<usize>)> = program
        .weight_shapes()
        .into_iter()
        .map(|(m, b)| (m * weight_width, b.map(|b| b * weight_width)))
        .collect();
    if run.weights.len() != shapes.len() {
        return Err(NodeError::Unexpected(format!(
            "{} weights for a model of {}",
            run.weights.len(),
            shapes.len()
        )));
    }
    for (i, (w, (matrix, bias))) in run.weights.iter().zip(&shapes).enumerate() {
        if w.matrix.0.len() != *matrix || w.bias.as_ref().map(|b| b.0.len()) != *bias {
            return Err(NodeError::Unexpected(format!(
                "weight {i} does not have the plan's shape"
            )));
        }
    }
    let expected = program.input_len(manifest.batch as usize) * width;
    if run.inputs.iter().any(|x| x.0.len() != expected) {
        return Err(NodeError::Unexpected(format!(
            "inputs must have {expected} elements"
        )));
    }
    Ok(())
}

/// Asks the dealer for party `party`'s material and reads it whole: its seeds and (last party) every
/// correction (a generation job's party; an inference job's last party reads its corrections as it needs
/// them instead, see [`DealerFeed`]).
pub(crate) async fn fetch_material(
    peers: &Peers,
    manifest: &Manifest,
    party: usize,
    max_frame: usize,
) -> Result<Dealt> {
    let (mut dealt, mut recv) = request_material(peers, manifest, party, max_frame).await?;
    let last = party + 1 == manifest.parties.len();
    let answer = read_rest(&mut recv, max_frame, &mut dealt, last).await;
    let _ = recv.stop(VarInt::from_u32(0));
    answer.map(|()| dealt)
}

/// Asks the dealer for party `party`'s material: returns its header (the seeds, and how many corrections
/// follow) and the stream the rest arrives on.
async fn request_material(
    peers: &Peers,
    manifest: &Manifest,
    party: usize,
    max_frame: usize,
) -> Result<(Dealt, quinn::RecvStream)> {
    let dealer = manifest.dealer.as_ref().ok_or_else(|| {
        NodeError::Manifest(format!("a {} job without a dealer", manifest.protocol))
    })?;
    let conn = peers
        .connect(dealer.public_key, dealer.address, true)
        .await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(NodeError::quic)?;
    let request = Msg::DealRequest {
        job: manifest.job,
        party: party as u32,
    };
    frame::write(&mut send, &request)
        .await
        .map_err(|e| NodeError::Quic(e.to_string()))?;
    let _ = send.finish();
    let dealt = match read_frame(&mut recv, max_frame).await? {
        Msg::Dealt(d) => d,
        Msg::Failed(why) => return Err(NodeError::Job(format!("dealer: {why}"))),
        other => {
            return Err(NodeError::Unexpected(format!(
                "dealer answered {}",
                other.name()
            )))
        }
    };
    let last = party + 1 == manifest.parties.len();
    if !last && (dealt.more_corrections != 0 || !dealt.corrections.0.is_empty()) {
        return Err(NodeError::Unexpected(
            "the dealer sent corrections to a party that takes none".into(),
        ));
    }
    Ok((dealt, recv))
}

/// One frame from the dealer's stream.
async fn read_frame(recv: &mut quinn::RecvStream, max_frame: usize) -> Result<Msg> {
    match frame::read(recv, max_frame).await {
        Ok(m) => Ok(m),
        Err(RecvError::Frame(e)) => Err(e.into()),
        Err(e) => Err(NodeError::Quic(format!("dealer stream: {e}"))),
    }
}

/// One `Corrections` frame of at most `remaining` words (and at least one).
async fn read_chunk(
    recv: &mut quinn::RecvStream,
    max_frame: usize,
    remaining: u64,
) -> Result<Vec<u64>> {
    match read_frame(recv, max_frame).await? {
        Msg::Corrections(chunk) if (chunk.0.len() as u64) <= remaining && !chunk.0.is_empty() => {
            Ok(chunk.0)
        }
        Msg::Failed(why) => Err(NodeError::Job(format!("dealer: {why}"))),
        other => Err(NodeError::Unexpected(format!(
            "dealer sent {} where {remaining} correction words were due",
            other.name()
        ))),
    }
}

/// The dealer's time, which ends the last party's stream (`DealerTime`).
async fn read_dealer_time(recv: &mut quinn::RecvStream, max_frame: usize) -> Result<f64> {
    match read_frame(recv, max_frame).await? {
        Msg::DealerTime { seconds } => Ok(seconds),
        Msg::Failed(why) => Err(NodeError::Job(format!("dealer: {why}"))),
        other => Err(NodeError::Unexpected(format!(
            "dealer sent {} where its time was due",
            other.name()
        ))),
    }
}

/// The rest of the dealer's answer after its header: (`last` party) its corrections in `Corrections`
/// frames, appended to `dealt`, and the dealer's time, which replaces the header's. Memory grows only as
/// frames arrive (nothing is reserved from the announced count), and no frame may exceed what remains.
async fn read_rest(
    recv: &mut quinn::RecvStream,
    max_frame: usize,
    dealt: &mut Dealt,
    last: bool,
) -> Result<()> {
    let mut remaining = dealt.more_corrections;
    while remaining > 0 {
        let chunk = read_chunk(recv, max_frame, remaining).await?;
        remaining -= chunk.len() as u64;
        dealt.corrections.0.extend_from_slice(&chunk);
    }
    if last {
        dealt.dealer_seconds = read_dealer_time(recv, max_frame).await?;
    }
    Ok(())
}

/// Chunks of corrections the reader task holds ahead of the party (besides the one it is reading): enough to
/// overlap the dealer's stream with the party's reading, a few frames at most.
const READ_AHEAD_CHUNKS: usize = 2;

/// The most correction words the last party reads into memory ahead of an inference ([`Prefetch::fill`]):
/// 512 MiB. An inference that takes more (a long `spdz2k` sequence) reads the rest from the stream during
/// its online phase, as the dealer deals it.
const PREFETCH_BUDGET_WORDS: u64 = 64 << 20;

/// The last party's corrections, read from the dealer's stream (a [`CorrectionFeed`] on the party's thread):
/// a task on the runtime reads up to [`READ_AHEAD_CHUNKS`] frames ahead, and the party's thread moves them
/// into its own buffer as its material needs them, or, in a benchmark (`RunRequest::offline_first`),
/// before each inference all of that inference's corrections at once, up to [`PREFETCH_BUDGET_WORDS`]
/// ([`Prefetch::fill`], its offline phase: a local run's last party likewise holds its corrections before
/// the start line, so the dealer's work is not timed as the parties'). The dealer, held back by QUIC's flow
/// control, deals them as they are read, so it prepares the next inference's while the parties compute this
/// one. Each frame is awaited at most the deal timeout; the dealer's time, which follows the
/// last correction, comes on the channel [`DealerFeed::start`] returns.
struct DealerFeed {
    state: Arc<Mutex<FeedState>>,
}

/// What [`DealerFeed`] and its [`Prefetch`] share (only the party's thread touches it).
struct FeedState {
    chunks: mpsc::Receiver<std::result::Result<Vec<u64>, String>>,
    /// Chunks read from `chunks` and not handed to the party's material yet, in order.
    buffered: std::collections::VecDeque<Vec<u64>>,
    /// Invariant: the words in `buffered`.
    buffered_words: u64,
    /// Correction words announced and not handed to the party's material yet (`buffered` included).
    pending: u64,
}

impl FeedState {
    /// The next chunk from the reader task, waiting for it (on the party's thread, outside any runtime).
    fn receive(&mut self) -> std::result::Result<Vec<u64>, String> {
        match self.chunks.blocking_recv() {
            Some(Ok(chunk)) => Ok(chunk),
            Some(Err(e)) => Err(e),
            None => Err("the dealer's stream ended early".into()),
        }
    }
}

/// Reads an inference's corrections ahead of it (see [`DealerFeed`]).
#[derive(Clone)]
struct Prefetch {
    state: Arc<Mutex<FeedState>>,
    /// Correction words one inference takes.
    per_inference: u64,
}

impl Prefetch {
    /// Reads from the stream until the next inference's corrections are in memory (at most
    /// [`PREFETCH_BUDGET_WORDS`], and no more than were announced; the party's material may hold a few
    /// of them already, so this reads at most a chunk more than needed).
    fn fill(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let want = self
            .per_inference
            .min(PREFETCH_BUDGET_WORDS)
            .min(state.pending);
        while state.buffered_words < want {
            let chunk = state.receive().map_err(|e| {
                NodeError::Unexpected(format!("reading the dealer's corrections: {e}"))
            })?;
            state.buffered_words += chunk.len() as u64;
            state.buffered.push_back(chunk);
        }
        Ok(())
    }
}

impl DealerFeed {
    /// The feed of the stream after `dealt`'s header (whose `corrections` must be empty), and where the
    /// dealer's time arrives: the reader task reads it at the end, even if no correction follows.
    fn start(
        ctx: &PartyContext,
        dealt: &Dealt,
        mut recv: quinn::RecvStream,
    ) -> Result<(Self, oneshot::Receiver<f64>)> {
        if !dealt.corrections.0.is_empty() {
            return Err(NodeError::Unexpected(
                "the dealer sent corrections in its header".into(),
            ));
        }
        let (tx, chunks) = mpsc::channel(READ_AHEAD_CHUNKS);
        let (time_tx, time_rx) = oneshot::channel();
        let (wait, max_frame, announced) =
            (ctx.deal_timeout, ctx.max_frame, dealt.more_corrections);
        ctx.handle.spawn(async move {
            let mut remaining = announced;
            let read = async {
                while remaining > 0 {
                    let chunk =
                        tokio::time::timeout(wait, read_chunk(&mut recv, max_frame, remaining))
                            .await
                            .map_err(|_| {
                                NodeError::Timeout(wait, "waiting for the dealer's corrections")
                            })??;
                    remaining -= chunk.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The party is gone (its job ended or failed).
                        return Ok(());
                    }
                }
                let seconds = tokio::time::timeout(wait, read_dealer_time(&mut recv, max_frame))
                    .await
                    .map_err(|_| NodeError::Timeout(wait, "waiting for the dealer's time"))??;
                let _ = time_tx.send(seconds);
                Ok::<(), NodeError>(())
            };
            if let Err(e) = read.await {
                let _ = tx.send(Err(e.to_string())).await;
            }
            let _ = recv.stop(VarInt::from_u32(0));
        });
        let feed = DealerFeed {
            state: Arc::new(Mutex::new(FeedState {
                chunks,
                buffered: Default::default(),
                buffered_words: 0,
                pending: announced,
            })),
        };
        Ok((feed, time_rx))
    }

    /// The reader of each inference's `per_inference` correction words ahead of it.
    fn prefetch(&self, per_inference: u64) -> Prefetch {
        Prefetch {
            state: self.state.clone(),
            per_inference,
        }
    }
}

impl CorrectionFeed for DealerFeed {
    fn next_chunk(&mut self) -> std::result::Result<Option<Vec<u64>>, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.pending == 0 {
            return Ok(None);
        }
        let chunk = match state.buffered.pop_front() {
            Some(chunk) => {
                state.buffered_words = state.buffered_words.saturating_sub(chunk.len() as u64);
                chunk
            }
            None => state.receive()?,
        };
        state.pending = state.pending.saturating_sub(chunk.len() as u64);
        Ok(Some(chunk))
    }

    fn pending(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).pending
    }
}

/// Runs party `party`'s part of `manifest` with the client's `run` request. Blocks; call on a thread of its
/// own, not on the runtime.
pub fn run(
    ctx: &PartyContext,
    manifest: &Manifest,
    party: usize,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    run: RunRequest,
) -> Result<PartyReport> {
    let program = JobProgram::of(manifest)?;
    check_request(&program, manifest, &run)?;
    if !manifest.protocol.has_dealer() {
        return run_rep3(ctx, manifest, party, arrivals, run, &program);
    }
    let n = manifest.parties.len();
    let handle = &ctx.handle;
    let (dealt, recv) = handle
        .block_on(async {
            // The timer must be created inside the runtime's context.
            tokio::time::timeout(
                ctx.deal_timeout,
                request_material(&ctx.peers, manifest, party, ctx.max_frame),
            )
            .await
        })
        .map_err(|_| NodeError::Timeout(ctx.deal_timeout, "waiting for the dealer"))??;
    // The last party reads its corrections from the dealer's stream as it consumes them.
    let (mut feed, dealer_time) = if party + 1 == n {
        let (feed, time) = DealerFeed::start(ctx, &dealt, recv)?;
        (Some(feed), Some(time))
    } else {
        let mut recv = recv;
        let _ = recv.stop(VarInt::from_u32(0));
        (None, None)
    };
    if let Some(Err(e)) = run.shaping.map(|s| s.check()) {
        return Err(NodeError::Unexpected(format!("run request: {e}")));
    }
    let net = ctx.open_links(manifest, party, arrivals, run.shaping)?;
    tracing::info!(job = %manifest.job, party, inferences = run.inputs.len(), protocol = %manifest.protocol, "party connected, computing");
    let gemm = Arc::new(RingGemm::new(run.threads.max(1) as usize));
    let mut report = PartyReport {
        outputs: Vec::new(),
        latencies: Vec::new(),
        preparation: Vec::new(),
        online: Vec::new(),
        setup: WireStats::default(),
        profile: Vec::new(),
        dealer_bytes: dealt.dealer_bytes,
        dealer_seconds: dealt.dealer_seconds,
        udp_tx_bytes: Vec::new(),
        auth_outputs: Vec::new(),
        transcripts: Vec::new(),
        rep3m_checks: Vec::new(),
        output_key_share: None,
    };
    let parts = program.request_parts(manifest);
    // A benchmark times the online phase apart from the dealer; a production job lets the parties
    // compute while the dealer still deals (`RunRequest::offline_first`).
    let prefetch = match &feed {
        Some(f) if run.offline_first => {
            Some(f.prefetch(inference_corrections(manifest.protocol, &parts)?))
        }
        _ => None,
    };
    let requests = parts.all();
    let fp = program.fixed_point();
    let job = Job {
        program: &program,
        items: manifest.batch as usize,
        profile_last: run.profile,
        prefetch,
    };
    if manifest.protocol == Protocol::Spdz2k {
        let generator = match feed.take() {
            Some(f) => AuthPartyGenerator::streamed(n, &dealt.job_seed, Box::new(f))?,
            None => AuthPartyGenerator::new(party, n, &dealt.job_seed, Vec::new())?,
        };
        let material = PartyMaterial::from_generator(generator, requests);
        let mut p = Party::<Link, Spdz2k>::with_material(net, material, fp, gemm)?;
        let adversary = ctx.adversary.filter(|a| a.party == party);
        if let Some(a) = adversary {
            tracing::warn!(
                deviation = a.kind.name(),
                "this party deviates (test-only adversary)"
            );
            p.set_adversary(a);
        }
        let release = |mut out: AuthVec, report: &mut PartyReport| {
            if let Some(a) = adversary.filter(|a| a.kind == Deviation::WrongOutput) {
                let len = Spdz2k::len(&out).max(1);
                Spdz2k::corrupt(&mut out, a.at % len, a.delta);
            }
            report.auth_outputs.push(AuthWords::from(&out));
        };
        match &program {
            JobProgram::Plan(plan) => {
                let model = setup_published(&mut p, plan, &published(run.weights))?;
                job.infer_all(&mut p, &model, run.inputs, &mut report, release)?;
            }
            JobProgram::Encoder(e) => {
                job.infer_all(&mut p, e.as_ref(), run.inputs, &mut report, release)?
            }
            JobProgram::Graph(g) => {
                job.infer_all(&mut p, g.as_ref(), run.inputs, &mut report, release)?
            }
        }
        // Every output share is out and every opening passed its check: alpha's share may go too.
        report.output_key_share = Some(p.release_output_key_share()?.to_le_bytes());
        p.finish()?;
    } else {
        let masks = material::party_masks(party, n, &dealt.model_seed, &program.mask_shapes())?;
        let generator = match feed.take() {
            Some(f) => PartyGenerator::streamed(n, &dealt.job_seed, Box::new(f))?,
            None => PartyGenerator::new(party, n, &dealt.job_seed, Vec::new())?,
        };
        let material = PartyMaterial::from_generator(generator, requests);
        let mut p = Party::new(net, material, fp, gemm)?;
        let release = |out: Vec<u64>, report: &mut PartyReport| report.outputs.push(Words(out));
        match &program {
            JobProgram::Plan(plan) => {
                let model = setup(&mut p, plan, weight_shares(run.weights), masks)?;
                job.infer_all(&mut p, &model, run.inputs, &mut report, release)?;
            }
            JobProgram::Encoder(e) => {
                job.infer_all(&mut p, e.as_ref(), run.inputs, &mut report, release)?
            }
            JobProgram::Graph(g) => {
                job.infer_all(&mut p, g.as_ref(), run.inputs, &mut report, release)?
            }
        }
        p.finish()?;
    }
    // The last party's figure covers the whole dealing (it comes after the last correction).
    if let Some(time) = dealer_time {
        let wait = ctx.deal_timeout;
        match handle.block_on(async { tokio::time::timeout(wait, time).await }) {
            Ok(Ok(seconds)) => report.dealer_seconds = seconds,
            _ => {
                tracing::warn!(job = %manifest.job, "the dealer's time did not come; reporting its preparation's")
            }
        }
    }
    Ok(report)
}

/// The party's link to its peers.
type Link = ShapedNet<QuicNet>;

/// A dealer-free replicated party type a node runs: `rep3`'s, or `rep3m`'s, which checks every opening and
/// reshare before it releases an output share.
trait Replicated: WeightOps<Share = RepShare, Weight = RepWeight> {
    /// The party's link to its peers.
    fn link(&mut self) -> &Link;
    /// This party's share of output `y` for the client: `rep3` hands it over as it is; `rep3m` first runs
    /// its check ([`rep3m::Party::release`]) and fails, releasing nothing, if the check fails.
    fn release_share(&mut self, y: &RepShare) -> veil_protocols::Result<RepShare>;
    /// The views of the checks passed since the last call, for the verifier (`rep3m`; none for `rep3`).
    fn take_checks(&mut self) -> Vec<CheckView>;
}

impl Replicated for rep3::Party<Link> {
    fn link(&mut self) -> &Link {
        self.net()
    }
    fn release_share(&mut self, y: &RepShare) -> veil_protocols::Result<RepShare> {
        Ok(y.clone())
    }
    fn take_checks(&mut self) -> Vec<CheckView> {
        Vec::new()
    }
}

impl Replicated for rep3m::Party<Link> {
    fn link(&mut self) -> &Link {
        self.rep3().net()
    }
    fn release_share(&mut self, y: &RepShare) -> veil_protocols::Result<RepShare> {
        self.release(y)
    }
    fn take_checks(&mut self) -> Vec<CheckView> {
        self.take_transcripts()
    }
}

/// A `rep3` or `rep3m` party's part of `manifest` (checked by [`run`]): no dealer. It agrees on its PRF
/// keys with its neighbours over the job's streams (one 32-byte message each way, the model setup's
/// traffic), sets the model up from its replicated weight shares (or the public weights) without
/// communicating, and runs every inference; it reports its two components of each output. Under `rep3m`
/// each output share is reported only after the check (openings and the product proof) passed, and the
/// report carries each check's view for the verifier; the lab's adversary (a test-only node option) may
/// make this party deviate (`wrong-output`, `wrong-product`).
fn run_rep3(
    ctx: &PartyContext,
    manifest: &Manifest,
    party: usize,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    run: RunRequest,
    program: &JobProgram,
) -> Result<PartyReport> {
    if let Some(Err(e)) = run.shaping.map(|s| s.check()) {
        return Err(NodeError::Unexpected(format!("run request: {e}")));
    }
    let net = ctx.open_links(manifest, party, arrivals, run.shaping)?;
    tracing::info!(job = %manifest.job, party, inferences = run.inputs.len(), protocol = %manifest.protocol, "party connected, computing");
    let gemm = Arc::new(RingGemm::new(run.threads.max(1) as usize));
    let fp = program.fixed_point();
    if manifest.protocol == Protocol::Rep3m {
        let mut p = rep3m::Party::new(net, Seed::random(), fp, gemm)?;
        if let Some(a) = ctx.adversary.filter(|a| a.party == party) {
            if !matches!(a.kind, Deviation::WrongOutput | Deviation::WrongProduct) {
                return Err(NodeError::Unexpected(format!(
                    "rep3m inference has no site for the deviation {}",
                    a.kind.name()
                )));
            }
            tracing::warn!(
                deviation = a.kind.name(),
                "this party deviates (test-only adversary)"
            );
            p.set_adversary(a);
        }
        let report = replicated_job(&mut p, manifest, run, program)?;
        let _ = p.finish();
        Ok(report)
    } else {
        let mut p = rep3::Party::new(net, Seed::random(), fp, gemm)?;
        let report = replicated_job(&mut p, manifest, run, program)?;
        let _ = p.finish();
        Ok(report)
    }
}

/// The model setup and every inference of a replicated job at party `p` (see [`run_rep3`]).
fn replicated_job<P: Replicated>(
    p: &mut P,
    manifest: &Manifest,
    run: RunRequest,
    program: &JobProgram,
) -> Result<PartyReport> {
    let malformed = || NodeError::Unexpected("a replicated share with an odd word count".into());
    let inputs = run
        .inputs
        .into_iter()
        .map(|x| replicated_share(x.0).ok_or_else(malformed))
        .collect::<Result<Vec<_>>>()?;
    let mut report = PartyReport {
        outputs: Vec::new(),
        latencies: Vec::new(),
        preparation: Vec::new(),
        online: Vec::new(),
        setup: WireStats::from(p.stats()),
        profile: Vec::new(),
        dealer_bytes: 0,
        dealer_seconds: 0.0,
        udp_tx_bytes: Vec::new(),
        auth_outputs: Vec::new(),
        transcripts: Vec::new(),
        rep3m_checks: Vec::new(),
        output_key_share: None,
    };
    let items = manifest.batch as usize;
    let profile_last = run.profile;
    match program {
        JobProgram::Plan(plan) => {
            let (shared, public) = match plan.mode {
                veil_engine::WeightMode::Shared => {
                    let shares = run
                        .weights
                        .into_iter()
                        .map(|w| {
                            let matrix = replicated_share(w.matrix.0).ok_or_else(malformed)?;
                            let bias = w
                                .bias
                                .map(|b| replicated_share(b.0).ok_or_else(malformed))
                                .transpose()?;
                            Ok((matrix, bias))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    (shares, Vec::new())
                }
                veil_engine::WeightMode::Public => (Vec::new(), weight_shares(run.weights)),
            };
            let model = setup_rep3(plan, shared, &public)?;
            replicated_infer_all(
                p,
                &inputs,
                items,
                profile_last,
                &mut report,
                |p, x, n, prof| model.infer(p, x, n, prof),
            )?;
        }
        JobProgram::Encoder(e) => replicated_infer_all(
            p,
            &inputs,
            items,
            profile_last,
            &mut report,
            |p, x, n, prof| e.forward(p, x, n, prof),
        )?,
        JobProgram::Graph(g) => replicated_infer_all(
            p,
            &inputs,
            items,
            profile_last,
            &mut report,
            |p, x, n, prof| g.forward(p, x, n, prof),
        )?,
    }
    Ok(report)
}

/// Runs every inference of a replicated job through [`infer_replicated`] (the in-memory runs' step),
/// measuring each; each output share (both components) goes in `report` once the party released it
/// ([`Replicated::release_share`]: after the check, under `rep3m`), with the views of the checks passed.
fn replicated_infer_all<P: Replicated>(
    p: &mut P,
    inputs: &[RepShare],
    items: usize,
    profile_last: bool,
    report: &mut PartyReport,
    infer: impl Fn(
        &mut P,
        RepShare,
        usize,
        Option<&mut Vec<StepProfile>>,
    ) -> veil_engine::Result<RepShare>,
) -> Result<()> {
    for (k, input) in inputs.iter().enumerate() {
        let profile = profile_last && k + 1 == inputs.len();
        let udp_before = p.link().inner().udp_tx_bytes();
        let done: ReplicatedInference =
            infer_replicated(p, input.clone(), items, profile, |p, x, n, prof| {
                let y = infer(p, x, n, prof)?;
                Ok(p.release_share(&y)?)
            })?;
        let udp = p.link().inner().udp_tx_bytes().saturating_sub(udp_before);
        let times = (Duration::ZERO, done.latency);
        record(report, times, &done.online, &done.profile, profile, udp);
        report.outputs.push(replicated_words(&done.output));
        report.rep3m_checks.extend(p.take_checks());
    }
    Ok(())
}

/// Records one inference's measurements in `report`: `(preparation, latency)`, its traffic, its UDP bytes,
/// and its profile if `profile`.
fn record(
    report: &mut PartyReport,
    (preparation, latency): (Duration, Duration),
    online: &veil_protocols::net::NetStats,
    steps: &[StepProfile],
    profile: bool,
    udp: u64,
) {
    report.preparation.push(preparation.as_secs_f64());
    report.latencies.push(latency.as_secs_f64());
    report.online.push(WireStats::from(online));
    report.udp_tx_bytes.push(udp);
    if profile {
        report.profile = steps
            .iter()
            .map(|s| WireStep {
                label: s.label.clone(),
                seconds: s.elapsed.as_secs_f64(),
                net: WireStats::from(&s.net),
                material: s.material,
            })
            .collect();
    }
}

/// The client's weights as `semi2k` shares.
fn weight_shares(weights: Vec<WireWeight>) -> Vec<WeightShare> {
    weights
        .into_iter()
        .map(|w| WeightShare {
            matrix: w.matrix.0,
            bias: w.bias.map(|b| b.0),
        })
        .collect()
}

/// The owner's weights as published under `spdz2k` (`W - B`, or the plaintext if public).
fn published(weights: Vec<WireWeight>) -> Vec<PublishedWeight> {
    weights
        .into_iter()
        .map(|w| PublishedWeight {
            matrix: w.matrix.0,
            bias: w.bias.map(|b| b.0),
        })
        .collect()
}

/// Correction words one inference of a job takes from the dealer (as the dealer counts them).
fn inference_corrections(protocol: Protocol, parts: &JobRequests) -> Result<u64> {
    let draws = if protocol == Protocol::Spdz2k {
        material::auth::count(&parts.inference)?
    } else {
        material::count(&parts.inference)?
    };
    Ok(draws.corrections)
}

/// The public shape of a job's inferences.
struct Job<'a> {
    program: &'a JobProgram,
    /// Units per inference (batch items, or tokens).
    items: usize,
    /// Whether to profile the last inference.
    profile_last: bool,
    /// The last party's reading of each inference's corrections before it (none at the other parties).
    prefetch: Option<Prefetch>,
}

impl Job<'_> {
    /// Runs every inference of the job on party `p` through the party program ([`PartySession`]), measuring
    /// each, and hands each verified output share to `release` (which puts it in the report).
    fn infer_all<D: SessionDomain, P: Program<D>>(
        &self,
        p: &mut Party<Link, D>,
        program: &P,
        inputs: Vec<Words>,
        report: &mut PartyReport,
        mut release: impl FnMut(D::Arith, &mut PartyReport),
    ) -> Result<()> {
        debug_assert_eq!(
            program.input_len(self.items),
            self.program.input_len(self.items)
        );
        let inferences = inputs.len();
        let mut session = PartySession::new(p, program);
        report.setup = WireStats::from(session.setup_stats());
        for (k, input) in inputs.into_iter().enumerate() {
            let want_profile = self.profile_last && k + 1 == inferences;
            session.set_profile(want_profile);
            if let Some(prefetch) = &self.prefetch {
                // Offline: this inference's corrections in memory before the start line, as in a local run.
                prefetch.fill()?;
            }
            let udp_before = session.party().net().inner().udp_tx_bytes();
            let done = session.infer(input.0, self.items)?;
            let udp = session
                .party()
                .net()
                .inner()
                .udp_tx_bytes()
                .saturating_sub(udp_before);
            let times = (done.preparation, done.latency);
            record(
                report,
                times,
                &done.online,
                &done.profile,
                want_profile,
                udp,
            );
            if let Some(transcript) = done.transcript {
                report.transcripts.push(transcript);
            }
            release(done.output, report);
        }
        Ok(())
    }
}
