//! The coordinator's state and every decision it takes: the registry (veil-scheduler), the jobs with their
//! current attempt, trials, and persistence. No network and no clock here: the server calls these methods
//! with the caller's key and the current time, under one lock.
//!
//! A job's attempt goes through the lifecycle of `veil_scheduler::Job`:
//! - Submitted: the timer places it (`place_stages` with the job's attempt seed, excluding blamed and
//!   stale nodes) and signs a committee manifest naming a fresh run id: Scheduled.
//! - Scheduled: members see the task in their heartbeat reply and accept it (manifest checked, job
//!   registered on the node); the client uploads one input blob per party. When both are complete: Running,
//!   and the members' tasks say `go`.
//! - Running: every party uploads its output blob: Verifying, then Done (semi2k has no MAC check yet: the
//!   verifier slot is selected and reserved, and verification is the completeness check of the outputs).
//! - A member that is marked down, reports a failure, or does not act within its phase's timeout fails the
//!   attempt: blamed nodes lose reputation and are excluded, the attempt's blobs are deleted, and the job
//!   goes back to Submitted for a fresh committee (fresh dealer, fresh run id, fresh shares from the
//!   client), up to `max_attempts`.
//!
//! Invariants:
//! - every change is committed to the store before the method that made it returns (one redb
//!   transaction per method: node records, jobs and their service extras together);
//! - a job has an attempt record iff its phase is Scheduled, Running or Verifying, or it is Done (the
//!   attempt whose outputs are the result);
//! - a blob is served only to its addressee: an input to the party's node, an output to the submitter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use veil_engine::model_file::Architecture;
use veil_engine::{workloads, WeightMode};
use veil_node::envelope::SealingKey;
use veil_node::inbox::check_attestation;
use veil_node::manifest::{
    DeployedModel, Handoff, Manifest, Member, ModelSpec, SignedManifest, MAX_ARCHITECTURE_BYTES,
    MAX_BATCH,
};
use veil_node::wire::JobId as RunId;
use veil_node::{Identity, PublicKey};
use veil_scheduler::{
    Config, Event, FailureCause, Gpu, Hardware, Heartbeat, Job, JobDemand, JobId, Millis, NodeId,
    NodeRegistration, NodeState, Phase, Placement, Registry, ReportedStatus, RoleDemand, Store,
    Trial,
};

use super::api::{
    CommitteeView, DeployRequest, HardwareReport, HeartbeatReply, HeartbeatRequest, JobView,
    MemberView, ModelView, NodeView, ReceiptEntry, RegisterRequest, StagesView, SubmitRequest,
    TaskFailure, TaskRole, TaskView, TransitionView, TrialTask,
};
use super::blobs::{Blobs, Direction};
use super::config::CoordinatorConfig;
use super::error::{ApiError, ApiResult};

/// The MAC-checked protocol, whose jobs end with a verifier's receipt.
pub const SPDZ2K: &str = "spdz2k";

/// Most execution parties a job may ask for.
pub const MAX_PARTIES: u8 = 16;
/// Most inferences one job may run.
pub const MAX_INFERENCES: u32 = 10_000;
/// Longest operator, region or GPU name accepted, bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// What the service keeps per node beside the registry's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct NodeExtra {
    address: Option<SocketAddr>,
    /// X25519 key clients seal to, and the node's attestation of it (checked at registration).
    sealing_key: [u8; 32],
    sealing_attestation: Vec<u8>,
}

/// The current attempt of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Attempt {
    number: u32,
    run_id: [u8; 16],
    /// postcard `SignedManifest`.
    manifest: Vec<u8>,
    parties: Vec<NodeId>,
    dealer: NodeId,
    verifier: NodeId,
    /// Per party, then the dealer.
    accepted: Vec<bool>,
    inputs: Vec<bool>,
    outputs: Vec<bool>,
    /// `spdz2k`: the dealer's sealed owner material is in; the parties' transcripts are in.
    owner: bool,
    transcripts: Vec<bool>,
    /// `spdz2k`: the attempt ends with the verifier's receipt.
    verified: bool,
    /// The result blobs were deleted after the retention period.
    expired: bool,
}

impl Attempt {
    /// The member index (party i, or `parties.len()` for the dealer) of `node`.
    fn member_index(&self, node: NodeId) -> Option<usize> {
        if let Some(i) = self.parties.iter().position(|&p| p == node) {
            return Some(i);
        }
        (self.dealer == node).then_some(self.parties.len())
    }

    fn computing_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.parties.iter().copied().chain([self.dealer])
    }
}

/// What the service keeps per job beside the lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct JobExtra {
    submitter: [u8; 32],
    request: SubmitRequest,
    attempt: Option<Attempt>,
    unplaced: Option<String>,
}

struct Entry {
    job: Job,
    extra: JobExtra,
}

/// The coordinator's state.
pub struct Coordinator {
    identity: Identity,
    config: CoordinatorConfig,
    registry: Registry,
    store: Store,
    blobs: Blobs,
    jobs: BTreeMap<u64, Entry>,
    nodes: Vec<NodeExtra>,
    trials: HashMap<NodeId, TrialTask>,
    next_job: u64,
    /// Deployed models by id (persisted as records `model/{id}`).
    models: BTreeMap<String, ModelView>,
    /// The audit log of receipts by job (persisted as records `receipt/{job}`).
    receipts: BTreeMap<u64, ReceiptEntry>,
    /// Each client key's submissions of the last minute (rate limit; not persisted).
    submissions: HashMap<[u8; 32], std::collections::VecDeque<Millis>>,
    dirty_nodes: BTreeSet<NodeId>,
    dirty_jobs: BTreeSet<u64>,
    dirty_records: Vec<(String, Vec<u8>)>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Submitted => "submitted",
        Phase::Scheduled => "scheduled",
        Phase::Running => "running",
        Phase::Verifying => "verifying",
        Phase::Done => "done",
        Phase::Failed => "failed",
    }
}

fn state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::Probation => "probation",
        NodeState::Active => "active",
        NodeState::Draining => "draining",
        NodeState::Down => "down",
        NodeState::Rejected => "rejected",
    }
}

fn cause_text(c: &FailureCause) -> String {
    match c {
        FailureCause::Timeout(p) => format!("timeout in phase {}", phase_name(*p)),
        FailureCause::NodeFailure => "a member failed".into(),
        FailureCause::VerificationFailed => "verification failed".into(),
        FailureCause::Unplaceable(why) => format!("unplaceable: {why}"),
        FailureCause::Cancelled => "cancelled".into(),
        FailureCause::RejectedInput(why) => format!("input rejected: {why}"),
    }
}

fn weight_mode(s: &str) -> ApiResult<WeightMode> {
    match s {
        "shared" => Ok(WeightMode::Shared),
        "public" => Ok(WeightMode::Public),
        other => Err(ApiError::BadRequest(format!(
            "weights {other:?}: expected shared or public"
        ))),
    }
}

/// The binding id of layers `start..end` of deployed model `id`: hex SHA-256 of a label, the id and the
/// range (64 hex digits, like a model id).
pub fn stage_model_id(id: &str, start: usize, end: usize) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"veil stage v1\0");
    h.update(id.as_bytes());
    h.update((start as u64).to_le_bytes());
    h.update((end as u64).to_le_bytes());
    hex::encode(h.finalize())
}

/// Checks a deployment: the id's form, the architecture (bounded, parses, builds), weights, parties and
/// fixed point. Returns the parsed architecture.
pub fn check_deployment(req: &DeployRequest) -> ApiResult<Architecture> {
    if req.id.len() != 64 || !req.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest(
            "model id must be 64 hex digits".into(),
        ));
    }
    if req.architecture.len() > MAX_ARCHITECTURE_BYTES {
        return Err(ApiError::BadRequest(format!(
            "architecture of {} bytes (at most {MAX_ARCHITECTURE_BYTES})",
            req.architecture.len()
        )));
    }
    if !(2..=MAX_PARTIES).contains(&req.parties) {
        return Err(ApiError::BadRequest(format!(
            "parties must be between 2 and {MAX_PARTIES}"
        )));
    }
    weight_mode(&req.weights)?;
    if req.protocol != "semi2k" && req.protocol != SPDZ2K {
        return Err(ApiError::BadRequest(format!(
            "protocol {:?}: semi2k or spdz2k",
            req.protocol
        )));
    }
    veil_protocols::ring::FixedPoint::new(req.frac_bits)
        .map_err(|e| ApiError::BadRequest(format!("frac_bits: {e}")))?;
    let architecture: Architecture = serde_json::from_str(&req.architecture)
        .map_err(|e| ApiError::BadRequest(format!("architecture: {e}")))?;
    veil_engine::model_file::skeleton(&architecture, &burn::tensor::Device::flex())
        .map_err(|e| ApiError::BadRequest(format!("architecture: {e}")))?;
    Ok(architecture)
}

/// Checks a job request and estimates what it asks of a committee from its compiled plan: each party
/// holds its weight shares, their masks and the opened masked weights (3 x 8 bytes per weight) plus 1 MiB
/// of activations; computes 2 ring operations per weight per item; sends the opened weights once and
/// about 64 KiB per inference. The dealer streams 8 bytes per weight. Rounds: the workload's measured
/// count per inference (network-a 20, lenet 61). Estimates, for selection and load accounting only.
pub fn demand_for(req: &SubmitRequest, deployed: Option<&Architecture>) -> ApiResult<JobDemand> {
    if !(2..=MAX_PARTIES).contains(&req.parties) {
        return Err(ApiError::BadRequest(format!(
            "parties must be between 2 and {MAX_PARTIES}"
        )));
    }
    if !(1..=MAX_BATCH).contains(&req.batch) || !(1..=MAX_INFERENCES).contains(&req.inferences) {
        return Err(ApiError::BadRequest(format!(
            "batch must be in 1..={MAX_BATCH} and inferences in 1..={MAX_INFERENCES}"
        )));
    }
    let mode = weight_mode(&req.weights)?;
    let fp = veil_protocols::ring::FixedPoint::new(req.frac_bits)
        .map_err(|e| ApiError::BadRequest(format!("frac_bits: {e}")))?;
    if req.protocol != "semi2k" && req.protocol != SPDZ2K {
        return Err(ApiError::BadRequest(format!(
            "protocol {:?}: semi2k or spdz2k",
            req.protocol
        )));
    }
    if let Some(k) = &req.output_key {
        k.parse::<SealingKey>().map_err(ApiError::BadRequest)?;
    }
    let device = burn::tensor::Device::flex();
    let model = match (&req.model, deployed) {
        (Some(_), Some(architecture)) => {
            veil_engine::model_file::skeleton(architecture, &device)
                .map_err(|e| ApiError::BadRequest(format!("model: {e}")))?
        }
        (Some(id), None) => return Err(ApiError::NotFound(format!("model {id} is not deployed"))),
        (None, _) => workloads::by_name(&req.workload, req.model_seed, &device)
            .ok_or_else(|| ApiError::BadRequest(format!("unknown workload {:?}", req.workload)))?
            .map_err(internal)?,
    };
    let plan = veil_engine::Plan::compile(&model, fp, mode).map_err(internal)?;
    let weights: u64 = plan
        .weights
        .iter()
        .map(|w| (w.inner * w.outputs + w.bias.as_ref().map_or(0, |b| b.len())) as u64)
        .sum();
    let items = u64::from(req.batch) * u64::from(req.inferences);
    let rounds_per = if req.workload == "lenet" { 61 } else { 20 };
    Ok(JobDemand {
        parties: req.parties,
        party: RoleDemand {
            memory_bytes: 24 * weights + (1 << 20),
            ops: 2 * weights * items,
            bytes: 8 * weights + (64 << 10) * u64::from(req.inferences),
        },
        dealer: RoleDemand {
            memory_bytes: 64 << 20,
            ops: weights * u64::from(req.inferences),
            bytes: 8 * weights * u64::from(req.parties),
        },
        verifier: RoleDemand {
            memory_bytes: 16 << 20,
            ops: 0,
            bytes: 0,
        },
        rounds: rounds_per * req.inferences,
    })
}

impl Coordinator {
    /// Opens (or creates) the state under the configured data directory and rebuilds it: every node, job,
    /// attempt and reservation as it was. Nodes that were up get one heartbeat timeout of grace from `now`
    /// (the coordinator was away, not they).
    pub fn open(
        config: CoordinatorConfig,
        identity: Identity,
        now: Millis,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)?;
        let store = Store::open(config.data_dir.join("state.redb"))?;
        let registry_config = Config {
            collusion_keys: config.collusion_keys()?,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms,
            ..Config::default()
        };
        let (mut registry, jobs) = store.load_registry(registry_config.clone())?;
        if registry.config() != &registry_config {
            // The file's settings win for timeouts and collusion keys: rebuild with them.
            let records = registry.records();
            let regions = Some(registry.region_snapshot());
            let in_flight: Vec<Placement> = jobs
                .iter()
                .filter(|j| !j.phase().is_terminal())
                .flat_map(|j| j.placements().iter().cloned())
                .collect();
            registry = Registry::from_records(registry_config, records, regions, &in_flight)?;
        }
        let mut extras: HashMap<u64, JobExtra> = HashMap::new();
        for (id, bytes) in store.load_job_extras()? {
            let extra: JobExtra = postcard::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("job {id}: corrupt service record: {e}"))?;
            extras.insert(id.0, extra);
        }
        let mut map = BTreeMap::new();
        for job in jobs {
            let Some(extra) = extras.remove(&job.id.0) else {
                anyhow::bail!("job {} has no service record", job.id);
            };
            map.insert(job.id.0, Entry { job, extra });
        }
        let mut nodes = vec![NodeExtra::default(); registry.len()];
        for (id, bytes) in store.load_node_extras()? {
            let extra: NodeExtra = postcard::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("node {id}: corrupt service record: {e}"))?;
            if let Some(slot) = nodes.get_mut(id.index()) {
                *slot = extra;
            }
        }
        let up: Vec<(NodeId, Heartbeat)> = registry
            .nodes()
            .filter(|n| n.state() != NodeState::Down)
            .map(|n| (n.id(), n.reported()))
            .collect();
        for (id, hb) in up {
            registry.heartbeat(id, hb, now)?;
        }
        let next_job = map.keys().next_back().map_or(1, |k| k + 1);
        let mut receipts = BTreeMap::new();
        for (name, bytes) in store.load_records("receipt")? {
            let entry: ReceiptEntry = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("receipt {name}: corrupt record: {e}"))?;
            receipts.insert(entry.job, entry);
        }
        let mut models = BTreeMap::new();
        for (id, bytes) in store.load_records("model")? {
            let view: ModelView = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("model {id}: corrupt record: {e}"))?;
            models.insert(id, view);
        }
        let blobs = Blobs::new(config.data_dir.join("blobs"));
        tracing::info!(
            nodes = registry.len(),
            jobs = map.len(),
            "coordinator state loaded"
        );
        Ok(Coordinator {
            identity,
            config,
            registry,
            store,
            blobs,
            jobs: map,
            nodes,
            trials: HashMap::new(),
            next_job,
            models,
            receipts,
            submissions: HashMap::new(),
            dirty_nodes: BTreeSet::new(),
            dirty_jobs: BTreeSet::new(),
            dirty_records: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Commits every pending change in one transaction.
    fn flush(&mut self) -> ApiResult<()> {
        if self.dirty_nodes.is_empty()
            && self.dirty_jobs.is_empty()
            && self.dirty_records.is_empty()
        {
            return Ok(());
        }
        let mut batch = veil_scheduler::Batch {
            records: std::mem::take(&mut self.dirty_records),
            ..veil_scheduler::Batch::default()
        };
        for &id in &self.dirty_nodes {
            if let Some(r) = self.registry.record(id) {
                batch.nodes.push(r);
            }
            if let Some(x) = self.nodes.get(id.index()) {
                batch
                    .node_extras
                    .push((id, postcard::to_stdvec(x).map_err(internal)?));
            }
        }
        for id in &self.dirty_jobs {
            if let Some(e) = self.jobs.get(id) {
                batch.jobs.push(e.job.clone());
                batch
                    .job_extras
                    .push((e.job.id, postcard::to_stdvec(&e.extra).map_err(internal)?));
            }
        }
        batch.regions = Some(self.registry.region_snapshot());
        self.store.commit(&batch).map_err(internal)?;
        self.dirty_nodes.clear();
        self.dirty_jobs.clear();
        Ok(())
    }

    fn node_of(&self, key: &PublicKey) -> ApiResult<NodeId> {
        self.registry
            .id_of(&key.to_string())
            .ok_or_else(|| ApiError::NotFound("this key is not a registered node".into()))
    }

    // ----- nodes -----

    /// Registers (or updates) the node whose key is `key`. A new node is on probation and gets a trial.
    pub fn register(
        &mut self,
        key: &PublicKey,
        req: RegisterRequest,
        now: Millis,
    ) -> ApiResult<NodeView> {
        let too_long = |s: &str| s.len() > MAX_NAME_BYTES;
        if too_long(&req.operator)
            || too_long(&req.region)
            || req.hardware.gpu_model.as_deref().is_some_and(too_long)
        {
            return Err(ApiError::BadRequest(format!(
                "operator, region and GPU model are at most {MAX_NAME_BYTES} bytes"
            )));
        }
        let sealing_key: SealingKey = req
            .sealing_key
            .parse()
            .map_err(|e: String| ApiError::BadRequest(e))?;
        let attestation = hex::decode(&req.sealing_attestation)
            .map_err(|e| ApiError::BadRequest(format!("sealing attestation: {e}")))?;
        if !check_attestation(key, &sealing_key, &attestation) {
            return Err(ApiError::BadRequest(
                "the sealing key's attestation does not verify under the node's key".into(),
            ));
        }
        let h = &req.hardware;
        let gpu = match (&h.gpu_model, h.gpu_memory_bytes) {
            (Some(model), Some(memory_bytes)) => Some(Gpu {
                model: model.clone(),
                memory_bytes,
            }),
            (None, None) => None,
            _ => {
                return Err(ApiError::BadRequest(
                    "a GPU needs both a model and its memory".into(),
                ))
            }
        };
        let measured = self
            .registry
            .id_of(&key.to_string())
            .and_then(|id| self.registry.node(id))
            .and_then(|n| n.hardware().measured_ops_per_s);
        let registration = NodeRegistration {
            public_key: key.to_string(),
            operator: req.operator.clone(),
            region: req.region.clone(),
            asn: req.asn,
            hardware: Hardware {
                cores: h.cores,
                memory_bytes: h.memory_bytes,
                gpu,
                bandwidth_bytes_per_s: h.bandwidth_bytes_per_s,
                measured_ops_per_s: measured,
            },
        };
        let id = self
            .registry
            .register(registration, now)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if self.nodes.len() <= id.index() {
            self.nodes.resize(id.index() + 1, NodeExtra::default());
        }
        let extra = &mut self.nodes[id.index()];
        extra.address = Some(req.address);
        extra.sealing_key = sealing_key.0;
        extra.sealing_attestation = attestation;
        self.dirty_nodes.insert(id);
        self.flush()?;
        tracing::info!(node = %id, operator = %req.operator, region = %req.region, "node registered");
        self.node_view(id)
    }

    /// The trial a probation node must run (issued on first request, kept until answered).
    fn trial_for(&mut self, id: NodeId) -> Option<TrialTask> {
        let node = self.registry.node(id)?;
        if node.trial() != Trial::Pending {
            return None;
        }
        let workload = self.config.trial_workload.clone();
        Some(
            self.trials
                .entry(id)
                .or_insert_with(|| TrialTask {
                    id: rand::random(),
                    workload,
                    model_seed: rand::random::<u32>() as u64,
                    input_seed: rand::random::<u32>() as u64,
                })
                .clone(),
        )
    }

    /// The pending trial of `key`'s node, to be checked against `id` (outside the lock: the reference
    /// answer takes a plaintext run).
    pub fn pending_trial(&self, key: &PublicKey, id: u64) -> ApiResult<(NodeId, TrialTask)> {
        let node = self.node_of(key)?;
        match self.trials.get(&node) {
            Some(t) if t.id == id => Ok((node, t.clone())),
            _ => Err(ApiError::Conflict("no such pending trial".into())),
        }
    }

    /// Records a checked trial: passing admits the node, failing rejects it.
    pub fn record_trial(
        &mut self,
        node: NodeId,
        trial: u64,
        passed: bool,
        now: Millis,
    ) -> ApiResult<NodeView> {
        if self.trials.get(&node).map(|t| t.id) != Some(trial) {
            return Err(ApiError::Conflict("no such pending trial".into()));
        }
        self.trials.remove(&node);
        self.registry
            .record_trial(node, passed, None, now)
            .map_err(internal)?;
        tracing::info!(node = %node, passed, "trial recorded");
        self.dirty_nodes.insert(node);
        self.flush()?;
        self.node_view(node)
    }

    /// A heartbeat: liveness, load, RTTs; the reply lists the node's tasks (and its trial on probation).
    pub fn heartbeat(
        &mut self,
        key: &PublicKey,
        req: HeartbeatRequest,
        now: Millis,
    ) -> ApiResult<HeartbeatReply> {
        let id = self.node_of(key)?;
        let before = self.registry.node(id).map(|n| n.state());
        let hb = Heartbeat {
            status: if req.ready {
                ReportedStatus::Ready
            } else {
                ReportedStatus::Draining
            },
            load: req.load,
            queue_len: req.queue_len,
        };
        self.registry.heartbeat(id, hb, now).map_err(internal)?;
        let rtts: Vec<(NodeId, u32)> = req
            .rtts
            .iter()
            .take(64)
            .filter_map(|r| Some((self.registry.id_of(&r.peer)?, r.rtt_us)))
            .collect();
        if !rtts.is_empty() {
            self.registry.report_rtts(id, &rtts).map_err(internal)?;
            self.dirty_nodes.insert(id);
        }
        let after = self.registry.node(id).map(|n| n.state());
        if before != after {
            self.dirty_nodes.insert(id);
        }
        self.flush()?;
        let state = after.map_or("unknown", state_name).to_string();
        Ok(HeartbeatReply {
            state,
            tasks: self.tasks_of(id),
            trial: self.trial_for(id),
        })
    }

    fn tasks_of(&self, node: NodeId) -> Vec<TaskView> {
        let mut out = Vec::new();
        for e in self.jobs.values() {
            let phase = e.job.phase();
            let Some(a) = &e.extra.attempt else { continue };
            if phase == Phase::Verifying && a.verified && a.verifier == node {
                out.push(TaskView {
                    job: e.job.id.0,
                    attempt: a.number,
                    role: TaskRole::Verifier,
                    manifest: hex::encode(&a.manifest),
                    go: true,
                });
                continue;
            }
            if !matches!(phase, Phase::Scheduled | Phase::Running) {
                continue;
            }
            let Some(i) = a.member_index(node) else {
                continue;
            };
            let role = if i < a.parties.len() {
                TaskRole::Party { index: i }
            } else {
                TaskRole::Dealer
            };
            out.push(TaskView {
                job: e.job.id.0,
                attempt: a.number,
                role,
                manifest: hex::encode(&a.manifest),
                go: phase == Phase::Running,
            });
        }
        out
    }

    // ----- tasks (nodes acting on their assignments) -----

    fn attempt_of(&self, job: u64, attempt: u32) -> ApiResult<(&Entry, &Attempt)> {
        let e = self
            .jobs
            .get(&job)
            .ok_or_else(|| ApiError::NotFound(format!("job {job}")))?;
        match &e.extra.attempt {
            Some(a) if a.number == attempt && !e.job.phase().is_terminal() => Ok((e, a)),
            _ => Err(ApiError::Conflict(format!(
                "attempt {attempt} of job {job} is not current"
            ))),
        }
    }

    /// A member checked the manifest and registered the job.
    pub fn task_accepted(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        now: Millis,
    ) -> ApiResult<()> {
        let node = self.node_of(key)?;
        let (_, a) = self.attempt_of(job, attempt)?;
        let i = a
            .member_index(node)
            .ok_or_else(|| ApiError::Forbidden("not a member of this attempt".into()))?;
        if let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.extra.attempt.as_mut())
        {
            a.accepted[i] = true;
        }
        self.dirty_jobs.insert(job);
        self.maybe_start(job, now)?;
        self.flush()
    }

    /// A member reports that its part failed: the attempt fails, blaming the members that went silent
    /// (the reporter is the witness, not the suspect).
    pub fn task_failed(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        failure: &TaskFailure,
        now: Millis,
    ) -> ApiResult<()> {
        let (reason, rejected_input, verification_failed) = (
            failure.reason.as_str(),
            failure.rejected_input,
            failure.verification_failed,
        );
        let node = self.node_of(key)?;
        if verification_failed {
            // The verifier's word: the MAC check failed, so some party cheated; it cannot tell which.
            let (e, a) = self.attempt_of(job, attempt)?;
            if e.job.phase() != Phase::Verifying {
                return Err(ApiError::Conflict("the attempt is not verifying".into()));
            }
            if a.verifier != node {
                return Err(ApiError::Forbidden(
                    "only the verifier reports a failed check".into(),
                ));
            }
            let blamed = a.parties.clone();
            let reason: String = reason.chars().take(300).collect();
            tracing::warn!(job, attempt, "verification failed: {reason}");
            self.fail_attempt(job, FailureCause::VerificationFailed, blamed, now)?;
            return self.flush();
        }
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.member_index(node).is_none() {
            return Err(ApiError::Forbidden("not a member of this attempt".into()));
        }
        if !matches!(e.job.phase(), Phase::Scheduled | Phase::Running) {
            return Err(ApiError::Conflict("the attempt is past computing".into()));
        }
        let stale = self.config.stale_ms();
        let blamed: Vec<NodeId> = a
            .computing_members()
            .filter(|&m| {
                self.registry
                    .node(m)
                    .is_none_or(|n| now.saturating_sub(n.last_heartbeat()) > stale)
            })
            .collect();
        let reason: String = reason.chars().take(300).collect();
        if rejected_input {
            // The party's own report that its sealed input is bad: a fault of the client's data or of its
            // path, not of a node; the job ends (a retry would carry the same data).
            tracing::warn!(job, attempt, reporter = %node, "input rejected: {reason}");
            self.fail_attempt(job, FailureCause::RejectedInput(reason), Vec::new(), now)?;
            return self.flush();
        }
        tracing::warn!(job, attempt, reporter = %node, ?blamed, "attempt failed: {reason}");
        self.fail_attempt(job, FailureCause::NodeFailure, blamed, now)?;
        self.flush()
    }

    /// The party index of the caller `key` in attempt `attempt` of `job`, which must be running.
    fn running_party(&self, key: &PublicKey, job: u64, attempt: u32) -> ApiResult<usize> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        let i = a
            .parties
            .iter()
            .position(|&p| p == node)
            .ok_or_else(|| ApiError::Forbidden("not a party of this attempt".into()))?;
        if e.job.phase() != Phase::Running {
            return Err(ApiError::Conflict("the attempt is not running".into()));
        }
        Ok(i)
    }

    /// A party's input blob (its shares for this attempt), once the attempt runs.
    pub fn task_input(&self, key: &PublicKey, job: u64, attempt: u32) -> ApiResult<Vec<u8>> {
        let i = self.running_party(key, job, attempt)?;
        self.blobs
            .get(job, attempt, Direction::Input, i)
            .map_err(internal)
    }

    /// A party's output blob. When every party's is in (and, for `spdz2k`, every transcript), the attempt
    /// moves on ([`Coordinator::complete_if_ready`]).
    pub fn task_output(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: &[u8],
        now: Millis,
    ) -> ApiResult<()> {
        self.party_upload(key, job, attempt, Direction::Output, bytes, now)
    }

    /// A `spdz2k` party's MAC-check views, for the verifier. Like the output, it completes the attempt.
    pub fn task_transcript(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: &[u8],
        now: Millis,
    ) -> ApiResult<()> {
        self.party_upload(key, job, attempt, Direction::Transcript, bytes, now)
    }

    /// Stores a running party's output or transcript blob, marks it in, and moves the attempt on once
    /// complete.
    fn party_upload(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        dir: Direction,
        bytes: &[u8],
        now: Millis,
    ) -> ApiResult<()> {
        let i = self.running_party(key, job, attempt)?;
        self.blobs
            .put(job, attempt, dir, i, bytes)
            .map_err(internal)?;
        let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.extra.attempt.as_mut())
        else {
            return Err(ApiError::Conflict("no attempt".into()));
        };
        match dir {
            Direction::Transcript => a.transcripts[i] = true,
            _ => a.outputs[i] = true,
        }
        self.dirty_jobs.insert(job);
        self.complete_if_ready(job, attempt, now)?;
        self.flush()
    }

    /// Running -> Verifying once every output (and, for `spdz2k`, every transcript) is in; a `semi2k`
    /// attempt, which has no MAC check, goes on to Done at once.
    fn complete_if_ready(&mut self, job: u64, attempt: u32, now: Millis) -> ApiResult<()> {
        let Some(entry) = self.jobs.get_mut(&job) else {
            return Err(ApiError::NotFound(format!("job {job}")));
        };
        let Some(a) = entry.extra.attempt.as_ref() else {
            return Err(ApiError::Conflict("no attempt".into()));
        };
        let complete =
            a.outputs.iter().all(|&o| o) && (!a.verified || a.transcripts.iter().all(|&t| t));
        if !complete {
            return Ok(());
        }
        let (parties, verified) = (a.parties.len(), a.verified);
        let mut fx = entry.job.apply(Event::OutputReady, now).map_err(internal)?;
        if !verified {
            let done = entry.job.apply(Event::Verified, now).map_err(internal)?;
            fx.release.extend(done.release);
            fx.outcomes.extend(done.outcomes);
        }
        self.apply_effects(fx, now);
        if verified {
            tracing::info!(job, attempt, "outputs in: verifying");
        } else {
            self.blobs.remove_inputs(job, attempt, parties);
            tracing::info!(job, attempt, "job done");
        }
        Ok(())
    }

    /// The dealer of a `spdz2k` attempt uploads the owner material, sealed to the client.
    pub fn task_owner(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: &[u8],
    ) -> ApiResult<()> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.dealer != node || !a.verified {
            return Err(ApiError::Forbidden(
                "only the dealer of a spdz2k attempt sends owner material".into(),
            ));
        }
        if e.job.phase() != Phase::Scheduled {
            return Err(ApiError::Conflict("the attempt is past scheduling".into()));
        }
        self.blobs
            .put(job, attempt, Direction::Owner, 0, bytes)
            .map_err(internal)?;
        if let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.extra.attempt.as_mut())
        {
            a.owner = true;
        }
        self.dirty_jobs.insert(job);
        self.flush()
    }

    /// What the verifier of a verifying attempt reads: a party's input or output ciphertext (to commit to)
    /// or its transcript.
    pub fn task_evidence(
        &self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        kind: &str,
        party: usize,
    ) -> ApiResult<Vec<u8>> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.verifier != node || !a.verified {
            return Err(ApiError::Forbidden(
                "not the verifier of this attempt".into(),
            ));
        }
        if e.job.phase() != Phase::Verifying {
            return Err(ApiError::Conflict("the attempt is not verifying".into()));
        }
        if party >= a.parties.len() {
            return Err(ApiError::BadRequest(format!("no party {party}")));
        }
        let dir = match kind {
            "input" => Direction::Input,
            "output" => Direction::Output,
            "transcript" => Direction::Transcript,
            other => return Err(ApiError::BadRequest(format!("no evidence {other:?}"))),
        };
        self.blobs.get(job, attempt, dir, party).map_err(internal)
    }

    /// The verifier's receipt: checked against the attempt (signature, signer = the manifest's verifier,
    /// the manifest), kept in the audit log, and the job is done.
    pub fn task_receipt(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        text: &str,
        now: Millis,
    ) -> ApiResult<()> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.verifier != node || !a.verified {
            return Err(ApiError::Forbidden(
                "not the verifier of this attempt".into(),
            ));
        }
        if e.job.phase() != Phase::Verifying {
            return Err(ApiError::Conflict("the attempt is not verifying".into()));
        }
        let file = veil_node::receipt::ReceiptFile::from_json(text)
            .map_err(|e| ApiError::BadRequest(format!("receipt: {e}")))?;
        let signed: SignedManifest = postcard::from_bytes(&a.manifest).map_err(internal)?;
        if file.manifest != signed {
            return Err(ApiError::BadRequest(
                "the receipt covers another manifest".into(),
            ));
        }
        file.verify(&self.identity.public_key())
            .map_err(|e| ApiError::BadRequest(format!("receipt: {e}")))?;
        let parties = a.parties.len();
        let entry = ReceiptEntry {
            job,
            attempt,
            stored_at_ms: now,
            receipt: text.to_string(),
        };
        self.dirty_records.push((
            format!("receipt/{job:020}"),
            serde_json::to_vec(&entry).map_err(internal)?,
        ));
        self.receipts.insert(job, entry);
        let Some(e) = self.jobs.get_mut(&job) else {
            return Err(ApiError::NotFound(format!("job {job}")));
        };
        let fx = e.job.apply(Event::Verified, now).map_err(internal)?;
        self.apply_effects(fx, now);
        self.dirty_jobs.insert(job);
        self.blobs.remove_inputs(job, attempt, parties);
        tracing::info!(job, attempt, "receipt stored: job done");
        self.flush()
    }

    /// A job's receipt, if it has one.
    pub fn receipt(&self, job: u64) -> ApiResult<ReceiptEntry> {
        self.receipts
            .get(&job)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("job {job} has no receipt")))
    }

    /// The audit log: every receipt, oldest job first.
    pub fn receipts(&self) -> Vec<ReceiptEntry> {
        self.receipts.values().cloned().collect()
    }

    /// The sealed owner material of a `spdz2k` attempt, for its submitter.
    pub fn download_owner(&self, key: &PublicKey, job: u64, attempt: u32) -> ApiResult<Vec<u8>> {
        let e = self.owned(key, job)?;
        match &e.extra.attempt {
            Some(a) if a.number == attempt && a.owner => self
                .blobs
                .get(job, attempt, Direction::Owner, 0)
                .map_err(internal),
            _ => Err(ApiError::Conflict(
                "no owner material for this attempt (yet)".into(),
            )),
        }
    }

    // ----- clients -----

    /// Submits a job for `submitter`; it is placed at once if a committee is available.
    pub fn submit(
        &mut self,
        submitter: &PublicKey,
        req: SubmitRequest,
        demand: JobDemand,
        now: Millis,
    ) -> ApiResult<JobView> {
        self.admit_submission(submitter, now)?;
        if let Some(stage) = &req.stage {
            if let Some(next) = stage.next {
                match self.jobs.get(&next) {
                    Some(e) if e.extra.submitter == submitter.0 => {}
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "the next stage's job {next} is not one of yours"
                        )))
                    }
                }
                // Its committee must be known now: this stage's manifest names its keys.
                self.deployed_spec(req.model.as_deref().unwrap_or_default(), &req)?;
            }
        }
        let id = self.next_job;
        self.next_job += 1;
        let job = Job::new(
            JobId(id),
            vec![demand],
            rand::random(),
            self.config.policy(),
            now,
        );
        self.jobs.insert(
            id,
            Entry {
                job,
                extra: JobExtra {
                    submitter: submitter.0,
                    request: req,
                    attempt: None,
                    unplaced: None,
                },
            },
        );
        self.dirty_jobs.insert(id);
        tracing::info!(job = id, "job submitted");
        self.try_place(id, now)?;
        self.flush()?;
        self.job_view(id)
    }

    /// Deploys (or, for its owner, redeploys) a model's public part. The architecture must parse and
    /// build; the id cannot be checked here (the weights never come here) and binds the sealed shares.
    pub fn deploy(
        &mut self,
        owner: &PublicKey,
        req: DeployRequest,
        now: Millis,
    ) -> ApiResult<ModelView> {
        let architecture = check_deployment(&req)?;
        if let Some(old) = self.models.get(&req.id) {
            if old.owner != owner.to_string() {
                return Err(ApiError::Conflict(format!(
                    "model {} is deployed by another key",
                    req.id
                )));
            }
        }
        let view = ModelView {
            id: req.id.clone(),
            name: architecture.name.clone(),
            deployment: req,
            owner: owner.to_string(),
            deployed_at_ms: now,
        };
        self.dirty_records.push((
            format!("model/{}", view.id),
            serde_json::to_vec(&view).map_err(internal)?,
        ));
        self.models.insert(view.id.clone(), view.clone());
        self.flush()?;
        tracing::info!(model = %view.id, name = %view.name, "model deployed");
        Ok(view)
    }

    /// The manifest's model of a job on deployed model `id`: the whole model, or its stage with the
    /// stage's hand-off to the next stage's committee.
    fn deployed_spec(&self, id: &str, req: &SubmitRequest) -> ApiResult<DeployedModel> {
        let m = self
            .models
            .get(id)
            .ok_or_else(|| ApiError::NotFound(format!("model {id}")))?;
        let Some(stage) = &req.stage else {
            return Ok(DeployedModel {
                id: m.id.clone(),
                architecture: m.deployment.architecture.clone(),
                handoff: None,
                senders: 0,
            });
        };
        let architecture = self.job_architecture(req)?;
        let handoff = match stage.next {
            None => None,
            Some(next) => {
                let e = self
                    .jobs
                    .get(&next)
                    .ok_or_else(|| ApiError::NotFound(format!("job {next}")))?;
                let a = match (&e.extra.attempt, e.job.phase()) {
                    (Some(a), Phase::Scheduled) => a,
                    _ => {
                        return Err(ApiError::Conflict(format!(
                            "the next stage's job {next} is not scheduled"
                        )))
                    }
                };
                let next_stage =
                    e.extra.request.stage.as_ref().ok_or_else(|| {
                        ApiError::BadRequest(format!("job {next} is not a stage"))
                    })?;
                Some(Handoff {
                    run: RunId(a.run_id),
                    model: stage_model_id(id, next_stage.start, next_stage.end),
                    keys: a
                        .parties
                        .iter()
                        .map(|p| {
                            self.nodes
                                .get(p.index())
                                .map(|x| SealingKey(x.sealing_key))
                                .ok_or_else(|| internal(format!("node {p} has no sealing key")))
                        })
                        .collect::<ApiResult<_>>()?,
                })
            }
        };
        Ok(DeployedModel {
            id: stage_model_id(id, stage.start, stage.end),
            architecture: serde_json::to_string(&architecture).map_err(internal)?,
            handoff,
            senders: stage.senders,
        })
    }

    /// The architecture a job on a deployed model runs: the model's, or its stage's.
    pub fn job_architecture(&self, req: &SubmitRequest) -> ApiResult<Architecture> {
        let id = req
            .model
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("not a deployed model's job".into()))?;
        let whole = self.model_architecture(id)?;
        match &req.stage {
            None => Ok(whole),
            Some(s) => veil_engine::model_file::stage_architecture(
                &whole,
                s.start..s.end,
                &burn::tensor::Device::flex(),
            )
            .map_err(|e| ApiError::BadRequest(format!("stage: {e}"))),
        }
    }

    /// The split of deployed model `id` into stages under `max_stage_memory_bytes`.
    pub fn model_stages(&self, id: &str) -> ApiResult<StagesView> {
        let architecture = self.model_architecture(id)?;
        let memory =
            veil_engine::model_file::layer_memory(&architecture, &burn::tensor::Device::flex())
                .map_err(internal)?;
        let max = match self.config.max_stage_memory_bytes {
            0 => u64::MAX,
            m => m,
        };
        let stages = veil_scheduler::partition(&memory, max)
            .map_err(|e| ApiError::Conflict(format!("model {id}: {e}")))?;
        Ok(StagesView {
            model: id.to_string(),
            stages: stages.into_iter().map(|r| [r.start, r.end]).collect(),
            max_stage_memory_bytes: max,
        })
    }

    /// Every deployed model.
    pub fn models(&self) -> Vec<ModelView> {
        self.models.values().cloned().collect()
    }

    /// The architecture of deployed model `id`.
    pub fn model_architecture(&self, id: &str) -> ApiResult<Architecture> {
        let m = self
            .models
            .get(id)
            .ok_or_else(|| ApiError::NotFound(format!("model {id} is not deployed")))?;
        serde_json::from_str(&m.deployment.architecture)
            .map_err(|e| internal(format!("model {id}: {e}")))
    }

    fn owned(&self, key: &PublicKey, job: u64) -> ApiResult<&Entry> {
        let e = self
            .jobs
            .get(&job)
            .ok_or_else(|| ApiError::NotFound(format!("job {job}")))?;
        if e.extra.submitter != key.0 {
            return Err(ApiError::Forbidden("not the submitter of this job".into()));
        }
        Ok(e)
    }

    /// The submitter uploads party `party`'s input blob for attempt `attempt`.
    pub fn upload_input(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        party: usize,
        bytes: &[u8],
        now: Millis,
    ) -> ApiResult<()> {
        let e = self.owned(key, job)?;
        let a = match &e.extra.attempt {
            Some(a) if a.number == attempt && e.job.phase() == Phase::Scheduled => a,
            _ => {
                return Err(ApiError::Conflict(format!(
                    "attempt {attempt} of job {job} does not take inputs now"
                )))
            }
        };
        if party >= a.parties.len() {
            return Err(ApiError::BadRequest(format!("no party {party}")));
        }
        self.blobs
            .put(job, attempt, Direction::Input, party, bytes)
            .map_err(internal)?;
        if let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.extra.attempt.as_mut())
        {
            a.inputs[party] = true;
        }
        self.dirty_jobs.insert(job);
        self.maybe_start(job, now)?;
        self.flush()
    }

    /// Party `party`'s output blob of a done job, for its submitter.
    pub fn download_output(&self, key: &PublicKey, job: u64, party: usize) -> ApiResult<Vec<u8>> {
        let e = self.owned(key, job)?;
        if e.job.phase() != Phase::Done {
            return Err(ApiError::Conflict("the job is not done".into()));
        }
        let a = e
            .extra
            .attempt
            .as_ref()
            .ok_or_else(|| ApiError::Internal("done job without attempt".into()))?;
        if a.expired {
            return Err(ApiError::Conflict(
                "the job's results expired and were deleted (result_retention_ms)".into(),
            ));
        }
        if party >= a.parties.len() {
            return Err(ApiError::BadRequest(format!("no party {party}")));
        }
        self.blobs
            .get(job, a.number, Direction::Output, party)
            .map_err(internal)
    }

    /// Cancels a job (its submitter).
    pub fn cancel(&mut self, key: &PublicKey, job: u64, now: Millis) -> ApiResult<JobView> {
        self.owned(key, job)?;
        let Some(e) = self.jobs.get_mut(&job) else {
            return Err(ApiError::NotFound(format!("job {job}")));
        };
        let fx = e
            .job
            .apply(Event::Cancel, now)
            .map_err(|err| ApiError::Conflict(err.to_string()))?;
        if let Some(a) = e.extra.attempt.take() {
            self.blobs.remove_attempt(job, a.number);
        }
        self.apply_effects(fx, now);
        self.dirty_jobs.insert(job);
        self.flush()?;
        self.job_view(job)
    }

    // ----- the timer -----

    /// Marks silent nodes down and fails their attempts, applies phase timeouts, places waiting jobs.
    pub fn tick(&mut self, now: Millis) -> ApiResult<()> {
        let down = self.registry.sweep(now);
        for &n in &down {
            tracing::warn!(node = %n, "node marked down (missed heartbeats)");
            self.dirty_nodes.insert(n);
        }
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, e)| !e.job.phase().is_terminal())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.tick_job(id, &down, now)?;
        }
        self.expire_results(now);
        self.flush()
    }

    /// Deletes the result blobs of jobs finished longer than `result_retention_ms` ago.
    fn expire_results(&mut self, now: Millis) {
        let retention = self.config.result_retention_ms;
        for (&id, e) in self.jobs.iter_mut() {
            let finished_at = e.job.history().last().map_or(0, |t| t.at);
            let Some(a) = e.extra.attempt.as_mut() else {
                continue;
            };
            if a.expired
                || !e.job.phase().is_terminal()
                || now.saturating_sub(finished_at) < retention
            {
                continue;
            }
            self.blobs.remove_attempt(id, a.number);
            a.expired = true;
            self.dirty_jobs.insert(id);
            tracing::info!(job = id, "result blobs expired and deleted");
        }
    }

    /// Counts a submission of `key` at `now` against `submissions_per_minute`.
    fn admit_submission(&mut self, key: &PublicKey, now: Millis) -> ApiResult<()> {
        let limit = self.config.submissions_per_minute;
        if limit == 0 {
            return Ok(());
        }
        let window = self.submissions.entry(key.0).or_default();
        while window
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= 60_000)
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            return Err(ApiError::TooManyRequests(format!(
                "at most {limit} jobs per minute per client"
            )));
        }
        window.push_back(now);
        Ok(())
    }

    fn tick_job(&mut self, id: u64, down: &[NodeId], now: Millis) -> ApiResult<()> {
        let Some(e) = self.jobs.get(&id) else {
            return Ok(());
        };
        let phase = e.job.phase();
        if let Some(a) = &e.extra.attempt {
            let dead: Vec<NodeId> = a.computing_members().filter(|m| down.contains(m)).collect();
            if !dead.is_empty() && matches!(phase, Phase::Scheduled | Phase::Running) {
                tracing::warn!(
                    job = id,
                    attempt = a.number,
                    ?dead,
                    "member down: attempt fails"
                );
                return self.fail_attempt(id, FailureCause::NodeFailure, dead, now);
            }
        }
        if let Some(Event::Fail { cause, .. }) = e.job.timeout_event(now) {
            let blamed: Vec<NodeId> = match (&e.extra.attempt, phase) {
                (Some(a), Phase::Scheduled) => a
                    .computing_members()
                    .enumerate()
                    .filter(|&(i, _)| !a.accepted[i])
                    .map(|(_, m)| m)
                    .collect(),
                (Some(a), Phase::Verifying) if a.verified => vec![a.verifier],
                (Some(a), Phase::Running | Phase::Verifying) => a
                    .parties
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| !a.outputs[i])
                    .map(|(_, &m)| m)
                    .collect(),
                _ => Vec::new(),
            };
            let cause = match (phase, &e.extra.unplaced) {
                (Phase::Submitted, Some(why)) => FailureCause::Unplaceable(why.clone()),
                _ => cause,
            };
            tracing::warn!(job = id, ?blamed, "phase timed out: {}", cause_text(&cause));
            return self.fail_attempt(id, cause, blamed, now);
        }
        if phase == Phase::Submitted {
            self.try_place(id, now)?;
        }
        Ok(())
    }

    fn fail_attempt(
        &mut self,
        id: u64,
        cause: FailureCause,
        blamed: Vec<NodeId>,
        now: Millis,
    ) -> ApiResult<()> {
        let Some(e) = self.jobs.get_mut(&id) else {
            return Ok(());
        };
        let fx = e
            .job
            .apply(Event::Fail { cause, blamed }, now)
            .map_err(internal)?;
        if let Some(a) = e.extra.attempt.take() {
            self.blobs.remove_attempt(id, a.number);
        }
        let reschedule = fx.reschedule;
        self.apply_effects(fx, now);
        self.dirty_jobs.insert(id);
        if reschedule {
            self.try_place(id, now)?;
        }
        Ok(())
    }

    fn apply_effects(&mut self, fx: veil_scheduler::Effects, now: Millis) {
        for p in &fx.release {
            self.registry.release(p);
        }
        for (n, outcome) in fx.outcomes {
            if self.registry.record_outcome(n, outcome, now).is_ok() {
                self.dirty_nodes.insert(n);
            }
        }
    }

    /// Tries to place a Submitted job: select and reserve a committee, sign its manifest.
    fn try_place(&mut self, id: u64, now: Millis) -> ApiResult<()> {
        let stale = self.config.stale_ms();
        let Some(e) = self.jobs.get(&id) else {
            return Ok(());
        };
        if e.job.phase() != Phase::Submitted {
            return Ok(());
        }
        let mut exclude: Vec<NodeId> = e.job.excluded().to_vec();
        exclude.extend(
            self.registry
                .nodes()
                .filter(|n| now.saturating_sub(n.last_heartbeat()) > stale)
                .map(|n| n.id()),
        );
        exclude.sort_unstable();
        exclude.dedup();
        let stages = e.job.stages.clone();
        let seed = e.job.attempt_seed();
        let placements = match self.registry.place_stages(&stages, seed, &exclude) {
            Ok(p) => p,
            Err(why) => {
                let text = why.to_string();
                if let Some(e) = self.jobs.get_mut(&id) {
                    if e.extra.unplaced.as_deref() != Some(text.as_str()) {
                        tracing::info!(job = id, "waiting for a committee: {text}");
                        e.extra.unplaced = Some(text);
                        self.dirty_jobs.insert(id);
                    }
                }
                return Ok(());
            }
        };
        let attempt = match self.make_attempt(id, &placements) {
            Ok(a) => a,
            Err(err) => {
                for p in &placements {
                    self.registry.release(p);
                }
                return Err(err);
            }
        };
        let Some(e) = self.jobs.get_mut(&id) else {
            return Ok(());
        };
        if let Err(err) = e.job.apply(Event::Schedule(placements.clone()), now) {
            for p in &placements {
                self.registry.release(p);
            }
            return Err(internal(err));
        }
        tracing::info!(
            job = id,
            attempt = attempt.number,
            parties = ?attempt.parties,
            dealer = %attempt.dealer,
            verifier = %attempt.verifier,
            "committee scheduled"
        );
        e.extra.attempt = Some(attempt);
        e.extra.unplaced = None;
        self.dirty_jobs.insert(id);
        Ok(())
    }

    fn member(&self, id: NodeId) -> ApiResult<Member> {
        let node = self
            .registry
            .node(id)
            .ok_or_else(|| internal(format!("unknown node {id}")))?;
        let public_key: PublicKey = node.registration().public_key.parse().map_err(internal)?;
        let address = self
            .nodes
            .get(id.index())
            .and_then(|x| x.address)
            .ok_or_else(|| internal(format!("node {id} has no address")))?;
        Ok(Member {
            address,
            public_key,
        })
    }

    fn make_attempt(&self, id: u64, placements: &[Placement]) -> ApiResult<Attempt> {
        let e = self
            .jobs
            .get(&id)
            .ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
        let c = &placements
            .first()
            .ok_or_else(|| internal("no placement"))?
            .committee;
        let req = &e.extra.request;
        let run_id: [u8; 16] = rand::random();
        let deployed = match &req.model {
            Some(id) => Some(self.deployed_spec(id, req)?),
            None => None,
        };
        let output_key = req
            .output_key
            .as_deref()
            .map(str::parse::<SealingKey>)
            .transpose()
            .map_err(ApiError::BadRequest)?;
        let manifest = Manifest {
            job: RunId(run_id),
            protocol: req.protocol.clone(),
            model: ModelSpec {
                workload: req.workload.clone(),
                seed: req.model_seed,
                weights: weight_mode(&req.weights)?,
                frac_bits: req.frac_bits,
                deployed,
            },
            batch: req.batch,
            inferences: req.inferences,
            parties: c
                .parties
                .iter()
                .map(|&p| self.member(p))
                .collect::<ApiResult<_>>()?,
            dealer: self.member(c.dealer)?,
            client: self.identity.public_key(),
            output_key,
            verifier: Some(self.member(c.verifier)?),
        };
        let signed: SignedManifest = manifest.sign(&self.identity).map_err(internal)?;
        let n = c.parties.len();
        Ok(Attempt {
            number: e.job.attempt(),
            run_id,
            manifest: postcard::to_stdvec(&signed).map_err(internal)?,
            parties: c.parties.clone(),
            dealer: c.dealer,
            verifier: c.verifier,
            accepted: vec![false; n + 1],
            inputs: vec![false; n],
            outputs: vec![false; n],
            owner: false,
            transcripts: vec![false; n],
            verified: req.protocol == SPDZ2K,
            expired: false,
        })
    }

    /// Scheduled -> Running once every member accepted and every input is in.
    fn maybe_start(&mut self, id: u64, now: Millis) -> ApiResult<()> {
        let Some(e) = self.jobs.get_mut(&id) else {
            return Ok(());
        };
        let ready = e.job.phase() == Phase::Scheduled
            && e.extra
                .attempt
                .as_ref()
                .is_some_and(|a| a.accepted.iter().all(|&x| x) && a.inputs.iter().all(|&x| x));
        if ready {
            e.job.apply(Event::Start, now).map_err(internal)?;
            self.dirty_jobs.insert(id);
            tracing::info!(job = id, attempt = e.job.attempt(), "attempt running");
        }
        Ok(())
    }

    // ----- views -----

    /// One node as operators see it.
    pub fn node_view(&self, id: NodeId) -> ApiResult<NodeView> {
        let n = self
            .registry
            .node(id)
            .ok_or_else(|| ApiError::NotFound(format!("node {id}")))?;
        let reg = n.registration();
        let h = &reg.hardware;
        let stats = n.stats();
        Ok(NodeView {
            id: id.0,
            public_key: reg.public_key.clone(),
            operator: reg.operator.clone(),
            region: reg.region.clone(),
            address: self.nodes.get(id.index()).and_then(|x| x.address),
            state: state_name(n.state()).into(),
            reputation: n.reputation(),
            last_heartbeat_ms: n.last_heartbeat(),
            load: n.reported().load,
            queue_len: n.reported().queue_len,
            active_jobs: n.active_jobs(),
            successes: stats.successes,
            failures: stats.failures,
            timeouts: stats.timeouts,
            hardware: HardwareReport {
                cores: h.cores,
                memory_bytes: h.memory_bytes,
                gpu_model: h.gpu.as_ref().map(|g| g.model.clone()),
                gpu_memory_bytes: h.gpu.as_ref().map(|g| g.memory_bytes),
                bandwidth_bytes_per_s: h.bandwidth_bytes_per_s,
            },
            measured_rtts: self
                .registry
                .record(id)
                .map(|r| r.peers.iter().map(|&(p, us)| (p.0, us)).collect())
                .unwrap_or_default(),
        })
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.registry
            .nodes()
            .filter_map(|n| self.node_view(n.id()).ok())
            .collect()
    }

    fn member_view(&self, id: NodeId) -> MemberView {
        MemberView {
            node: id.0,
            public_key: self
                .registry
                .node(id)
                .map(|n| n.registration().public_key.clone())
                .unwrap_or_default(),
            address: self
                .nodes
                .get(id.index())
                .and_then(|x| x.address)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            sealing_key: self
                .nodes
                .get(id.index())
                .map(|x| hex::encode(x.sealing_key))
                .unwrap_or_default(),
            sealing_attestation: self
                .nodes
                .get(id.index())
                .map(|x| hex::encode(&x.sealing_attestation))
                .unwrap_or_default(),
        }
    }

    /// One job's status.
    pub fn job_view(&self, id: u64) -> ApiResult<JobView> {
        let e = self
            .jobs
            .get(&id)
            .ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
        let j = &e.job;
        let a = e.extra.attempt.as_ref();
        Ok(JobView {
            id,
            phase: phase_name(j.phase()).into(),
            attempt: j.attempt(),
            max_attempts: j.policy.max_attempts,
            submitter: hex::encode(e.extra.submitter),
            request: e.extra.request.clone(),
            committee: a.map(|a| CommitteeView {
                parties: a.parties.iter().map(|&p| self.member_view(p)).collect(),
                dealer: self.member_view(a.dealer),
                verifier: self.member_view(a.verifier),
            }),
            run_id: a.map(|a| hex::encode(a.run_id)),
            manifest: a.map(|a| hex::encode(&a.manifest)),
            inputs_uploaded: a.map_or_else(Vec::new, |a| {
                a.inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, &x)| x)
                    .map(|(i, _)| i)
                    .collect()
            }),
            unplaced_reason: e.extra.unplaced.clone(),
            failure: j.failure().map(cause_text),
            excluded: j.excluded().iter().map(|n| n.0).collect(),
            history: j
                .history()
                .iter()
                .map(|t| TransitionView {
                    from: phase_name(t.from).into(),
                    to: phase_name(t.to).into(),
                    at_ms: t.at,
                    attempt: t.attempt,
                    cause: t.cause.as_ref().map(cause_text),
                })
                .collect(),
            owner_ready: a.is_some_and(|a| a.owner),
            has_receipt: self.receipts.contains_key(&id),
        })
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Vec<JobView> {
        self.jobs
            .keys()
            .rev()
            .filter_map(|&id| self.job_view(id).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::api::HardwareReport;

    const T0: Millis = 1_000_000;

    fn config(dir: &std::path::Path) -> CoordinatorConfig {
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nheartbeat_timeout_ms = 1000\n",
            dir.display()
        );
        let c: CoordinatorConfig = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        c
    }

    fn registration(i: usize, id: &Identity) -> RegisterRequest {
        let sealing = veil_node::envelope::OpeningKey::generate().public();
        let attestation = id.sign(&veil_node::inbox::attestation_message(&sealing));
        RegisterRequest {
            sealing_key: sealing.to_string(),
            sealing_attestation: hex::encode(attestation),
            operator: format!("op-{i}"),
            region: "r".into(),
            asn: None,
            address: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
            hardware: HardwareReport {
                cores: 4,
                memory_bytes: 8 << 30,
                gpu_model: None,
                gpu_memory_bytes: None,
                bandwidth_bytes_per_s: 1 << 30,
            },
        }
    }

    fn request() -> SubmitRequest {
        SubmitRequest {
            workload: "network-a".into(),
            model_seed: 7,
            weights: "shared".into(),
            frac_bits: 16,
            batch: 1,
            inferences: 2,
            parties: 2,
            model: None,
            output_key: None,
            protocol: "semi2k".into(),
            stage: None,
        }
    }

    fn heartbeat(c: &mut Coordinator, key: &PublicKey, now: Millis) -> HeartbeatReply {
        let req = HeartbeatRequest {
            ready: true,
            load: 0.0,
            queue_len: 0,
            rtts: Vec::new(),
        };
        c.heartbeat(key, req, now).unwrap()
    }

    /// A coordinator with `n` nodes of distinct operators that passed their trial.
    fn network(dir: &std::path::Path, n: usize) -> (Coordinator, Vec<PublicKey>) {
        let mut c = Coordinator::open(config(dir), Identity::generate().unwrap(), T0).unwrap();
        let ids: Vec<Identity> = (0..n).map(|_| Identity::generate().unwrap()).collect();
        let keys: Vec<PublicKey> = ids.iter().map(Identity::public_key).collect();
        for (i, k) in keys.iter().enumerate() {
            // An attestation by another key is refused.
            let forged = registration(i, &ids[(i + 1) % n]);
            assert!(matches!(
                c.register(k, forged, T0),
                Err(ApiError::BadRequest(_))
            ));
            let view = c.register(k, registration(i, &ids[i]), T0).unwrap();
            assert_eq!(view.state, "probation");
            let trial = heartbeat(&mut c, k, T0)
                .trial
                .expect("a trial on probation");
            let (node, _) = c.pending_trial(k, trial.id).unwrap();
            assert!(c.pending_trial(k, trial.id + 1).is_err());
            c.record_trial(node, trial.id, true, T0).unwrap();
            assert!(heartbeat(&mut c, k, T0).trial.is_none());
        }
        (c, keys)
    }

    fn members(view: &JobView) -> Vec<String> {
        let c = view.committee.as_ref().unwrap();
        c.parties
            .iter()
            .chain([&c.dealer])
            .map(|m| m.public_key.clone())
            .collect()
    }

    fn key_of(keys: &[PublicKey], hex: &str) -> PublicKey {
        *keys.iter().find(|k| k.to_string() == hex).unwrap()
    }

    /// Accepts on every member and uploads every input: the attempt runs.
    fn start(c: &mut Coordinator, keys: &[PublicKey], client: &PublicKey, now: Millis) -> JobView {
        let view = c.job_view(1).unwrap();
        for m in members(&view) {
            c.task_accepted(&key_of(keys, &m), 1, view.attempt, now)
                .unwrap();
        }
        for p in 0..2 {
            c.upload_input(client, 1, view.attempt, p, &[p as u8; 10], now)
                .unwrap();
        }
        let view = c.job_view(1).unwrap();
        assert_eq!(view.phase, "running");
        view
    }

    #[test]
    fn a_job_runs_through_its_lifecycle_and_blobs_reach_only_their_addressees() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, keys) = network(dir.path(), 5);
        let client = Identity::generate().unwrap().public_key();
        let stranger = Identity::generate().unwrap().public_key();
        let demand = demand_for(&request(), None).unwrap();
        let view = c.submit(&client, request(), demand, T0 + 1).unwrap();
        assert_eq!(view.phase, "scheduled");
        let committee = view.committee.clone().unwrap();
        // Four members of four operators.
        let mut all: Vec<&str> = committee
            .parties
            .iter()
            .chain([&committee.dealer, &committee.verifier])
            .map(|m| m.public_key.as_str())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4);
        // Members see their task, not yet to start; the verifier has none.
        let dealer = key_of(&keys, &committee.dealer.public_key);
        let tasks = heartbeat(&mut c, &dealer, T0 + 2).tasks;
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].role, TaskRole::Dealer);
        assert!(!tasks[0].go);
        let verifier = key_of(&keys, &committee.verifier.public_key);
        assert!(heartbeat(&mut c, &verifier, T0 + 2).tasks.is_empty());
        // Only the submitter uploads inputs; only members accept.
        assert!(matches!(
            c.upload_input(&stranger, 1, 1, 0, b"x", T0 + 3),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            c.task_accepted(&verifier, 1, 1, T0 + 3),
            Err(ApiError::Forbidden(_))
        ));
        let view = start(&mut c, &keys, &client, T0 + 3);
        assert!(heartbeat(&mut c, &dealer, T0 + 4).tasks[0].go);
        // A party gets its own input only.
        let p0 = key_of(&keys, &committee.parties[0].public_key);
        let p1 = key_of(&keys, &committee.parties[1].public_key);
        assert_eq!(c.task_input(&p0, 1, 1).unwrap(), vec![0u8; 10]);
        assert_eq!(c.task_input(&p1, 1, 1).unwrap(), vec![1u8; 10]);
        assert!(c.task_input(&dealer, 1, 1).is_err());
        c.task_output(&p0, 1, 1, b"out0", T0 + 5).unwrap();
        assert_eq!(c.job_view(1).unwrap().phase, "running");
        assert!(c.download_output(&client, 1, 0).is_err());
        c.task_output(&p1, 1, 1, b"out1", T0 + 6).unwrap();
        let done = c.job_view(1).unwrap();
        assert_eq!(done.phase, "done");
        let phases: Vec<&str> = done.history.iter().map(|t| t.to.as_str()).collect();
        assert_eq!(phases, ["scheduled", "running", "verifying", "done"]);
        assert_eq!(c.download_output(&client, 1, 1).unwrap(), b"out1");
        assert!(matches!(
            c.download_output(&stranger, 1, 1),
            Err(ApiError::Forbidden(_))
        ));
        // Every member gained reputation and released its reservation.
        for n in c.nodes() {
            let member = members(&view).contains(&n.public_key)
                || n.public_key == committee.verifier.public_key;
            assert_eq!(n.successes, u64::from(member));
            assert_eq!(n.active_jobs, 0);
            assert!(!member || n.reputation > 0.8, "{n:?}");
        }
        // The results stay for the retention period, then go (the job's record stays).
        let retention = c.config().result_retention_ms;
        c.tick(T0 + 6 + retention - 1).unwrap();
        assert_eq!(c.download_output(&client, 1, 1).unwrap(), b"out1");
        c.tick(T0 + 6 + retention).unwrap();
        let err = c.download_output(&client, 1, 1).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert_eq!(c.job_view(1).unwrap().phase, "done");
    }

    #[test]
    fn a_client_submitting_faster_than_its_rate_limit_is_refused_for_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.submissions_per_minute = 3;
        let mut c = Coordinator::open(config, Identity::generate().unwrap(), T0).unwrap();
        let (client, other) = (
            Identity::generate().unwrap().public_key(),
            Identity::generate().unwrap().public_key(),
        );
        let demand = demand_for(&request(), None).unwrap();
        for i in 0..3 {
            c.submit(&client, request(), demand, T0 + i).unwrap();
        }
        let err = c.submit(&client, request(), demand, T0 + 10).unwrap_err();
        assert_eq!(err.status(), 429, "{err}");
        c.submit(&other, request(), demand, T0 + 10).unwrap();
        c.submit(&client, request(), demand, T0 + 60_001).unwrap();
    }

    #[test]
    fn a_silent_member_fails_the_attempt_and_the_job_moves_to_a_fresh_committee() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, keys) = network(dir.path(), 5);
        let client = Identity::generate().unwrap().public_key();
        let demand = demand_for(&request(), None).unwrap();
        c.submit(&client, request(), demand, T0 + 1).unwrap();
        let first = start(&mut c, &keys, &client, T0 + 2);
        let victim = key_of(
            &keys,
            &first.committee.as_ref().unwrap().parties[1].public_key,
        );
        // Everyone but the victim keeps heartbeating; past the timeout the victim is down.
        for t in [T0 + 500, T0 + 1000, T0 + 1500] {
            for k in keys.iter().filter(|k| **k != victim) {
                heartbeat(&mut c, k, t);
            }
            c.tick(t).unwrap();
        }
        let view = c.job_view(1).unwrap();
        assert_eq!(view.attempt, 2, "{view:?}");
        assert_eq!(view.phase, "scheduled");
        assert!(view.inputs_uploaded.is_empty(), "fresh shares are needed");
        assert!(!members(&view).contains(&victim.to_string()));
        assert_ne!(view.run_id, first.run_id);
        let victim_node = c
            .nodes()
            .into_iter()
            .find(|n| n.public_key == victim.to_string())
            .unwrap();
        assert_eq!(victim_node.state, "down");
        assert_eq!(victim_node.failures, 1);
        assert!(victim_node.reputation < 0.8);
        assert_eq!(view.excluded, vec![victim_node.id]);
        // The old attempt is gone: its blobs are refused, its inputs deleted.
        assert!(c.upload_input(&client, 1, 1, 0, b"x", T0 + 1600).is_err());
        assert!(c.blobs.get(1, 1, Direction::Input, 0).is_err());
        // A member's failure report blames the silent, not the reporter.
        let second = start(&mut c, &keys, &client, T0 + 1600);
        let reporter = key_of(
            &keys,
            &second.committee.as_ref().unwrap().parties[0].public_key,
        );
        c.task_failed(
            &reporter,
            1,
            2,
            &TaskFailure {
                reason: "peer timed out".into(),
                rejected_input: false,
                verification_failed: false,
            },
            T0 + 1700,
        )
        .unwrap();
        let view = c.job_view(1).unwrap();
        assert_eq!(view.attempt, 3);
        let reporter_node = c
            .nodes()
            .into_iter()
            .find(|n| n.public_key == reporter.to_string())
            .unwrap();
        assert_eq!(reporter_node.failures, 0);
    }

    #[test]
    fn phase_timeouts_blame_the_members_that_did_not_act_and_bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, keys) = network(dir.path(), 5);
        let client = Identity::generate().unwrap().public_key();
        let demand = demand_for(&request(), None).unwrap();
        let view = c.submit(&client, request(), demand, T0 + 1).unwrap();
        // Every member but party 1 accepts; the client uploads everything; party 1 stays silent in its
        // task but keeps heartbeating (it is up, just not doing its part).
        let silent = key_of(
            &keys,
            &view.committee.as_ref().unwrap().parties[1].public_key,
        );
        for m in members(&view) {
            let k = key_of(&keys, &m);
            if k != silent {
                c.task_accepted(&k, 1, 1, T0 + 2).unwrap();
            }
        }
        for p in 0..2 {
            c.upload_input(&client, 1, 1, p, b"in", T0 + 2).unwrap();
        }
        assert_eq!(c.job_view(1).unwrap().phase, "scheduled");
        let limit = c.config().scheduled_timeout_ms;
        for k in &keys {
            heartbeat(&mut c, k, T0 + limit + 1);
        }
        c.tick(T0 + limit + 1).unwrap();
        let view = c.job_view(1).unwrap();
        assert_eq!(view.attempt, 2, "{view:?}");
        let cause = view.history.iter().find_map(|t| t.cause.clone()).unwrap();
        assert_eq!(cause, "timeout in phase scheduled");
        let silent_view = c
            .nodes()
            .into_iter()
            .find(|n| n.public_key == silent.to_string())
            .unwrap();
        assert_eq!(silent_view.timeouts, 1);
        assert_eq!(view.excluded, vec![silent_view.id]);
        assert!(c.nodes().iter().filter(|n| n.timeouts > 0).count() == 1);
        // Requests out of bounds.
        let mut bad = request();
        bad.parties = 1;
        assert!(matches!(
            demand_for(&bad, None),
            Err(ApiError::BadRequest(_))
        ));
        let mut bad = request();
        bad.workload = "gpt-5".into();
        assert!(matches!(
            demand_for(&bad, None),
            Err(ApiError::BadRequest(_))
        ));
        let newcomer_id = Identity::generate().unwrap();
        let mut reg = registration(9, &newcomer_id);
        reg.operator = "x".repeat(MAX_NAME_BYTES + 1);
        let newcomer = newcomer_id.public_key();
        assert!(matches!(
            c.register(&newcomer, reg, T0),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            c.heartbeat(
                &newcomer,
                HeartbeatRequest {
                    ready: true,
                    load: 0.0,
                    queue_len: 0,
                    rtts: Vec::new()
                },
                T0
            ),
            Err(ApiError::NotFound(_))
        ));
    }

    #[test]
    fn a_restart_keeps_nodes_jobs_attempts_and_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let (mut c, keys) = network(dir.path(), 5);
            let client = Identity::generate().unwrap().public_key();
            let demand = demand_for(&request(), None).unwrap();
            c.submit(&client, request(), demand, T0 + 1).unwrap();
            start(&mut c, &keys, &client, T0 + 2);
            (c.nodes(), c.job_view(1).unwrap())
        };
        let (nodes, job) = before;
        let c =
            Coordinator::open(config(dir.path()), Identity::generate().unwrap(), T0 + 100).unwrap();
        let strip = |mut v: Vec<NodeView>| {
            for n in &mut v {
                n.last_heartbeat_ms = 0;
                n.reputation = (n.reputation * 1e6).round();
            }
            v
        };
        assert_eq!(strip(c.nodes()), strip(nodes));
        assert_eq!(c.job_view(1).unwrap(), job);
        assert_eq!(c.nodes().iter().map(|n| n.active_jobs).sum::<u32>(), 4);
        assert_eq!(c.next_job, 2);
    }
}
