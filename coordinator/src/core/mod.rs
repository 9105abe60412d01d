//! The coordinator's sans-IO core: its state and every decision it takes, one module per phase of a job.
//! No network, no clock, no disk: the driver ([`crate::Coordinator`]) calls these methods with the caller's
//! key and the current time, under one lock, then takes what to persist with [`Core::poll_commit`] (the
//! records to commit and the blobs to write or delete) and applies it.
//!
//! | module | phase |
//! | --- | --- |
//! | [`nodes`] | nodes and admission: registration, heartbeats, the tasks a node sees |
//! | [`trials`] | trials over QUIC: pairing a node on probation with an examiner, their outcome |
//! | [`submission`] | deployments, job requests and their demand, input uploads, cancellation, rate limits |
//! | [`generation`] | chat turns (generation jobs): their request and demand |
//! | [`scheduling`] | the timer: placement, phase timeouts, failed attempts, retention |
//! | [`execution`] | members acting on their tasks: accept, fail, inputs, outputs, transcripts, owner material |
//! | [`verification`] | the verifier's evidence and its receipt |
//! | [`results`] | what a client reads back: job status, outputs, owner material, receipts |
//!
//! A job's attempt goes through the lifecycle of `veil_scheduler::Job`:
//! - Submitted: the timer places it (`place_stages` with the job's attempt seed, excluding blamed and
//!   stale nodes) and signs a committee manifest naming a fresh run id: Scheduled.
//! - Scheduled: members see the task in their heartbeat reply and accept it (manifest checked, job
//!   registered on the node); the client uploads one input blob per party. When both are complete: Running,
//!   and the members' tasks say `go`.
//! - Running: every party uploads its output blob: Verifying, then Done (a protocol that verifies nothing,
//!   semi2k or rep3, has no verifier: its verification is the completeness check of the outputs).
//! - A member that is marked down, reports a failure, or does not act within its phase's timeout fails the
//!   attempt: blamed nodes lose reputation and are excluded, the attempt's blobs are deleted, and the job
//!   goes back to Submitted for a fresh committee (fresh dealer, fresh run id, fresh shares from the
//!   client), up to `max_attempts`.
//!
//! Invariants:
//! - every change a method makes is in the next [`Commit`] (the driver commits it, node records, jobs and
//!   their extras together, before the reply leaves);
//! - a job has an attempt record iff its phase is Scheduled, Running or Verifying, or it is Done (the
//!   attempt whose outputs are the result);
//! - a blob is served only to its addressee: an input to the party's node, an output to the submitter.

mod admission;
pub mod beacon;
mod execution;
mod generation;
mod nodes;
mod results;
mod scheduling;
mod submission;
pub mod trials;
mod verification;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use veil_node::api::{ModelView, ReceiptEntry, SubmitRequest};
use veil_node::{Identity, PublicKey};
use veil_scheduler::{
    Batch, Config, FailureCause, Heartbeat, Job, Millis, NodeId, NodeState, Phase, Placement,
    Registry,
};

use crate::blobs::{BlobDelete, BlobKey};
use crate::config::CoordinatorConfig;
use crate::error::{Error, Result};
use crate::store::Snapshot;

pub use admission::AdmissionError;
pub use execution::EvidenceSlot;
pub use generation::generation_demand_for;
pub use nodes::MAX_NAME_BYTES;
pub use submission::{
    check_deployment, check_onnx, check_onnx_fields, check_pretrained, demand_for,
    encoder_demand_for, onnx_demand_for, stages_of, MAX_INFERENCES, MAX_PARTIES,
};
pub use verification::MacRecheck;

/// Kinds of named records the core keeps (`{kind}/{name}`): receipts and deployed models.
pub const RECORD_KINDS: [&str; 2] = [RECEIPT_RECORD, MODEL_RECORD];
const RECEIPT_RECORD: &str = "receipt";
const MODEL_RECORD: &str = "model";
/// Measured RTTs (and the region table they move) are persisted at most this often, milliseconds.
pub const RTT_PERSIST_INTERVAL_MS: Millis = 60_000;

/// What the service keeps per node beside the registry's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeExtra {
    pub(crate) address: Option<SocketAddr>,
    /// X25519 key clients seal to, and the node's attestation of it (checked at registration).
    pub(crate) sealing_key: [u8; 32],
    pub(crate) sealing_attestation: Vec<u8>,
    /// The operator name the node declared (shown only; never a collusion domain where operators are
    /// admitted).
    pub(crate) declared_operator: String,
    /// What its certificate chain admitted it as (with `[admission]`).
    pub(crate) admission: Option<admission::NodeAdmission>,
    /// Its operator is no longer admitted (or its certificate expired): drained, it reports as draining
    /// whatever it sends, until it registers with a chain that is admitted again.
    pub(crate) revoked: bool,
}

/// The current attempt of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Attempt {
    pub(crate) number: u32,
    pub(crate) run_id: [u8; 16],
    /// postcard `SignedManifest`.
    pub(crate) manifest: Vec<u8>,
    pub(crate) parties: Vec<NodeId>,
    /// The dealer; `None` under a protocol without one (`rep3`, `rep3m`).
    pub(crate) dealer: Option<NodeId>,
    /// The verifier; `None` under a protocol whose committees have none (`rep3`, see
    /// `Protocol::has_verifier`).
    pub(crate) verifier: Option<NodeId>,
    /// Per party, then the dealer if there is one.
    pub(crate) accepted: Vec<bool>,
    pub(crate) inputs: Vec<bool>,
    pub(crate) outputs: Vec<bool>,
    /// `spdz2k`: the dealer's sealed owner material is in; the parties' transcripts are in.
    pub(crate) owner: bool,
    pub(crate) transcripts: Vec<bool>,
    /// `spdz2k`: the attempt ends with the verifier's receipt.
    pub(crate) verified: bool,
    /// The result blobs were deleted after the retention period.
    pub(crate) expired: bool,
}

impl Attempt {
    /// The member index (party i, or `parties.len()` for the dealer) of `node`.
    pub(crate) fn member_index(&self, node: NodeId) -> Option<usize> {
        if let Some(i) = self.parties.iter().position(|&p| p == node) {
            return Some(i);
        }
        (self.dealer == Some(node)).then_some(self.parties.len())
    }

    /// The parties, then the dealer if there is one.
    pub(crate) fn computing_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.parties.iter().copied().chain(self.dealer)
    }
}

/// What the service keeps per job beside the lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobExtra {
    pub(crate) submitter: [u8; 32],
    pub(crate) request: SubmitRequest,
    pub(crate) attempt: Option<Attempt>,
    pub(crate) unplaced: Option<String>,
}

pub(crate) struct Entry {
    pub(crate) job: Job,
    pub(crate) extra: JobExtra,
}

/// What to persist after a call: the records to commit (one transaction), the blobs to write before it
/// and the blobs to delete after it.
#[derive(Debug, Default)]
pub struct Commit {
    /// Node records, jobs, their extras and named records.
    pub batch: Batch,
    /// Blobs to write (durably) before the batch is committed.
    pub writes: Vec<(BlobKey, Vec<u8>)>,
    /// Blobs to delete once the batch is committed.
    pub deletes: Vec<BlobDelete>,
}

/// The coordinator's state (see the module doc).
pub struct Core {
    identity: Identity,
    config: CoordinatorConfig,
    registry: Registry,
    jobs: BTreeMap<u64, Entry>,
    /// Invariant: indexed by `NodeId::index()`, as long as the registry.
    nodes: Vec<NodeExtra>,
    /// The trials in flight by nonce (not persisted: a restarted coordinator pairs afresh).
    trials: BTreeMap<u64, trials::TrialRun>,
    /// Bootstrap pairs whose answer was wrong: not paired together again (not persisted).
    failed_pairs: BTreeSet<(NodeId, NodeId)>,
    /// Active nodes whose re-examination failed: not examined again before this time (not persisted).
    exam_after: BTreeMap<NodeId, Millis>,
    /// Invariant: greater than every job id.
    next_job: u64,
    /// Deployed models by id (persisted as records `model/{id}`).
    models: BTreeMap<String, ModelView>,
    /// The audit log of receipts by job (persisted as records `receipt/{job}`).
    receipts: BTreeMap<u64, ReceiptEntry>,
    /// Each client key's submissions of the last minute (rate limit; not persisted).
    submissions: HashMap<[u8; 32], VecDeque<Millis>>,
    dirty_nodes: BTreeSet<NodeId>,
    dirty_jobs: BTreeSet<u64>,
    dirty_records: Vec<(String, Vec<u8>)>,
    blob_writes: Vec<(BlobKey, Vec<u8>)>,
    blob_deletes: Vec<BlobDelete>,
    /// Nodes whose measured RTTs changed since they were last persisted. RTTs arrive with every
    /// heartbeat, so they are persisted with the region table at most every [`RTT_PERSIST_INTERVAL_MS`]
    /// ([`Core::tick`]), not on every flush; a crash loses at most that much of them (nodes report again).
    rtt_pending: BTreeSet<NodeId>,
    /// When the RTTs were last persisted.
    rtts_persisted_at: Millis,
    /// The region table changed (a registration may add a region; RTTs move the estimates) and goes with
    /// the next commit.
    regions_dirty: bool,
    /// The draw's beacon and the explanations of recent draws (not persisted: derived from the identity).
    beacon: beacon::Beacon,
    /// The nodes that saw each unfinished job's tasks when last noted ([`Core::note_viewers`]; not
    /// persisted). Invariant: only jobs with viewers, so bounded by the unfinished jobs.
    viewers: HashMap<u64, Vec<NodeId>>,
    /// Nodes whose heartbeat replies may have changed since the last [`Core::take_woken`] (not
    /// persisted). Invariant: bounded by the registry's nodes.
    woken: BTreeSet<NodeId>,
    /// Jobs changed since the last [`Core::take_woken`] (not persisted). Invariant: bounded by the jobs.
    woken_jobs: BTreeSet<u64>,
}

impl Core {
    /// The registry's configuration under `config` (its collusion keys and heartbeat timeout).
    pub fn registry_config(config: &CoordinatorConfig) -> Result<Config> {
        Ok(Config {
            collusion_keys: config
                .collusion_keys()
                .map_err(|e| Error::malformed("collusion", e))?,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms,
            ..Config::default()
        })
    }

    /// Rebuilds the state from a store's snapshot (loaded under [`Core::registry_config`] and with
    /// [`RECORD_KINDS`]): every node, job, attempt and reservation as it was. Nodes that were up get one
    /// heartbeat timeout of grace from `now` (the coordinator was away, not they).
    pub fn restore(
        config: CoordinatorConfig,
        identity: Identity,
        snapshot: Snapshot,
        now: Millis,
    ) -> Result<Core> {
        let registry_config = Core::registry_config(&config)?;
        let Snapshot {
            mut registry,
            jobs,
            node_extras,
            job_extras,
            records,
        } = snapshot;
        if registry.config() != &registry_config {
            // The file's settings win for timeouts and collusion keys: rebuild with them.
            let node_records = registry.records();
            let regions = Some(registry.region_snapshot());
            let in_flight: Vec<Placement> = jobs
                .iter()
                .filter(|j| !j.phase().is_terminal())
                .flat_map(|j| j.placements().iter().cloned())
                .collect();
            registry = Registry::from_records(registry_config, node_records, regions, &in_flight)
                .map_err(Error::invariant)?;
        }
        let mut extras: HashMap<u64, JobExtra> = HashMap::new();
        for (id, bytes) in job_extras {
            let extra: JobExtra =
                postcard::from_bytes(&bytes).map_err(|e| Error::record("job extra", e))?;
            extras.insert(id.0, extra);
        }
        let mut map = BTreeMap::new();
        for job in jobs {
            let Some(extra) = extras.remove(&job.id.0) else {
                return Err(Error::invariant(format!(
                    "job {} has no extra record",
                    job.id
                )));
            };
            map.insert(job.id.0, Entry { job, extra });
        }
        let mut nodes = vec![NodeExtra::default(); registry.len()];
        for (id, bytes) in node_extras {
            let extra: NodeExtra =
                postcard::from_bytes(&bytes).map_err(|e| Error::record("node extra", e))?;
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
            registry.heartbeat(id, hb, now).map_err(Error::invariant)?;
        }
        let next_job = map.keys().next_back().map_or(1, |k| k + 1);
        let mut receipts = BTreeMap::new();
        let mut models = BTreeMap::new();
        for (kind, entries) in records {
            for (id, bytes) in entries {
                match kind {
                    RECEIPT_RECORD => {
                        let entry: ReceiptEntry = serde_json::from_slice(&bytes)
                            .map_err(|e| Error::record("receipt", e))?;
                        receipts.insert(entry.job, entry);
                    }
                    MODEL_RECORD => {
                        let view: ModelView = serde_json::from_slice(&bytes)
                            .map_err(|e| Error::record("model", e))?;
                        models.insert(id, view);
                    }
                    _ => {}
                }
            }
        }
        tracing::info!(
            nodes = registry.len(),
            jobs = map.len(),
            "coordinator state loaded"
        );
        let beacon = beacon::Beacon::new(&identity, now);
        Ok(Core {
            beacon,
            identity,
            config,
            registry,
            jobs: map,
            nodes,
            trials: BTreeMap::new(),
            failed_pairs: BTreeSet::new(),
            exam_after: BTreeMap::new(),
            next_job,
            models,
            receipts,
            submissions: HashMap::new(),
            dirty_nodes: BTreeSet::new(),
            dirty_jobs: BTreeSet::new(),
            dirty_records: Vec::new(),
            blob_writes: Vec::new(),
            blob_deletes: Vec::new(),
            rtt_pending: BTreeSet::new(),
            rtts_persisted_at: now,
            regions_dirty: false,
            viewers: HashMap::new(),
            woken: BTreeSet::new(),
            woken_jobs: BTreeSet::new(),
        })
    }

    /// Every job's lifecycle record (phase, history, demand), by id: read-only, for metrics.
    pub fn job_records(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values().map(|e| &e.job)
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The coordinator's identity (it signs manifests and derives the beacon's chain).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The coordinator's identity key (it signs manifests; receipts are checked against it).
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Everything changed since the last call, to persist (`None` if nothing changed).
    pub fn poll_commit(&mut self) -> Result<Option<Commit>> {
        // The changed jobs' viewers are noted before the commit takes the dirty set.
        self.note_viewers();
        if self.dirty_nodes.is_empty()
            && self.dirty_jobs.is_empty()
            && self.dirty_records.is_empty()
            && self.blob_writes.is_empty()
            && self.blob_deletes.is_empty()
            && !self.regions_dirty
        {
            return Ok(None);
        }
        let mut batch = Batch {
            records: std::mem::take(&mut self.dirty_records),
            ..Batch::default()
        };
        for id in std::mem::take(&mut self.dirty_nodes) {
            if let Some(r) = self.registry.record(id) {
                batch.nodes.push(r);
            }
            if let Some(x) = self.nodes.get(id.index()) {
                let bytes = postcard::to_stdvec(x).map_err(|e| Error::record("node extra", e))?;
                batch.node_extras.push((id, bytes));
            }
        }
        for id in std::mem::take(&mut self.dirty_jobs) {
            if let Some(e) = self.jobs.get(&id) {
                batch.jobs.push(e.job.clone());
                let bytes =
                    postcard::to_stdvec(&e.extra).map_err(|e| Error::record("job extra", e))?;
                batch.job_extras.push((e.job.id, bytes));
            } else {
                // Pruned (`prune_jobs`): its record and extra go from the store.
                batch.remove_jobs.push(veil_scheduler::JobId(id));
            }
        }
        if std::mem::take(&mut self.regions_dirty) {
            batch.regions = Some(self.registry.region_snapshot());
        }
        Ok(Some(Commit {
            batch,
            writes: std::mem::take(&mut self.blob_writes),
            deletes: std::mem::take(&mut self.blob_deletes),
        }))
    }

    /// Moves the nodes whose RTTs changed, and the region table, into the next commit if the last time
    /// was at least [`RTT_PERSIST_INTERVAL_MS`] ago.
    fn persist_rtts_if_due(&mut self, now: Millis) {
        if self.rtt_pending.is_empty()
            || now.saturating_sub(self.rtts_persisted_at) < RTT_PERSIST_INTERVAL_MS
        {
            return;
        }
        self.dirty_nodes.append(&mut self.rtt_pending);
        self.regions_dirty = true;
        self.rtts_persisted_at = now;
    }

    /// The node registered under `key`.
    fn node_of(&self, key: &PublicKey) -> Result<NodeId> {
        self.registry
            .id_of(&key.to_string())
            .ok_or(Error::UnregisteredNode)
    }

    /// Asks for a blob to be written with the next commit.
    fn write_blob(&mut self, key: BlobKey, bytes: Vec<u8>) {
        self.blob_writes.push((key, bytes));
    }

    /// Asks for blobs to be deleted after the next commit.
    fn delete_blobs(&mut self, op: BlobDelete) {
        self.blob_deletes.push(op);
    }
}

pub(crate) fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Submitted => "submitted",
        Phase::Scheduled => "scheduled",
        Phase::Running => "running",
        Phase::Verifying => "verifying",
        Phase::Done => "done",
        Phase::Failed => "failed",
    }
}

pub(crate) fn state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::Probation => "probation",
        NodeState::Active => "active",
        NodeState::Draining => "draining",
        NodeState::Down => "down",
        NodeState::Rejected => "rejected",
    }
}

pub(crate) fn cause_text(c: &FailureCause) -> String {
    match c {
        FailureCause::Timeout(p) => format!("timeout in phase {}", phase_name(*p)),
        FailureCause::NodeFailure => "a member failed".into(),
        FailureCause::VerificationFailed => "verification failed".into(),
        FailureCause::Unplaceable(why) => format!("unplaceable: {why}"),
        FailureCause::Cancelled => "cancelled".into(),
        FailureCause::RejectedInput(why) => format!("input rejected: {why}"),
    }
}
