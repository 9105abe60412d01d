//! The coordinator's HTTPS/JSON API: paths and the JSON bodies exchanged with nodes (the [`crate::agent`]),
//! clients (the `veil-client` SDK) and operators (`veil nodes`, `veil jobs`). It lives here, below both the
//! coordinator (`veil-coordinator`, which serves it) and its callers, so that neither depends on the other. Shares travel as opaque byte bodies
//! (`application/octet-stream`), never inside JSON, and the coordinator never decodes them.
//!
//! Authentication is TLS: the coordinator presents its pinned Ed25519 key, and a caller that presents a
//! certificate is known by its key. Node routes require the registered node's key; a job's input and output
//! routes require the key that submitted the job. Listing nodes and jobs shows only public metadata.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The binding id of layers `start..end` of deployed model `id`: hex SHA-256 of a label, the id and the
/// range (64 hex digits, like a model id). The coordinator names a stage's model by it in the manifest, and
/// the client checks that name.
pub fn stage_model_id(id: &str, start: usize, end: usize) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"veil stage v1\0");
    h.update(id.as_bytes());
    h.update((start as u64).to_le_bytes());
    h.update((end as u64).to_le_bytes());
    hex::encode(h.finalize())
}

/// Register or update this node (caller: the node's key). Body [`RegisterRequest`], reply [`NodeView`].
pub const REGISTER: &str = "/v1/nodes/register";
/// Liveness, load and assignments (caller: node). Body [`HeartbeatRequest`], reply [`HeartbeatReply`].
pub const HEARTBEAT: &str = "/v1/nodes/heartbeat";
/// A party's report of a trial job (caller: a party of the trial). Body [`TrialReport`], reply
/// [`NodeView`] (the caller's).
pub const TRIAL: &str = "/v1/nodes/trial";
/// A member accepted a trial's manifest (caller: a member of the trial). Body [`TrialAccepted`], reply
/// 204.
pub const TRIAL_ACCEPTED: &str = "/v1/nodes/trial/accepted";
/// Every node (anyone). Reply `[NodeView]`.
pub const NODES: &str = "/v1/nodes";
/// Submit (POST, body [`SubmitRequest`], reply [`JobView`]) or list (GET, reply `[JobView]`) jobs.
pub const JOBS: &str = "/v1/jobs";

/// Deploy (POST, body [`DeployRequest`], reply [`ModelView`]) or list (GET, reply `[ModelView]`) models.
pub const MODELS: &str = "/v1/models";

/// `/v1/jobs/{id}`: one job's status.
pub fn job(id: u64) -> String {
    format!("/v1/jobs/{id}")
}
/// `/v1/jobs/{id}` as a long poll: the coordinator holds the request for up to `wait.wait_ms` while the
/// job's status is still what `wait` describes ([`JobWait::unchanged`]). A coordinator that does not
/// hold answers at once, as for [`job`].
pub fn job_wait(id: u64, wait: &JobWait) -> String {
    format!(
        "/v1/jobs/{id}?wait_ms={}&phase={}&attempt={}&owner_ready={}",
        wait.wait_ms, wait.phase, wait.attempt, wait.owner_ready
    )
}

/// What a job status long poll ([`job_wait`]) waits past: the status a client last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobWait {
    /// How long the coordinator may hold the request, ms (it caps the wait).
    pub wait_ms: u64,
    /// The phase seen.
    pub phase: String,
    /// The attempt seen.
    pub attempt: u32,
    /// Whether the owner material was ready (`spdz2k`).
    pub owner_ready: bool,
}

/// Longest phase name accepted in a [`JobWait`] query, bytes.
pub const MAX_PHASE_BYTES: usize = 32;

impl JobWait {
    /// A wait of `wait_ms` past `view`.
    pub fn past(view: &JobView, wait_ms: u64) -> JobWait {
        JobWait {
            wait_ms,
            phase: view.phase.clone(),
            attempt: view.attempt,
            owner_ready: view.owner_ready,
        }
    }

    /// Whether `view` is still the status this wait is past (then a held request goes on waiting).
    pub fn unchanged(&self, view: &JobView) -> bool {
        view.phase == self.phase
            && view.attempt == self.attempt
            && view.owner_ready == self.owner_ready
    }

    /// Parses the query of [`job_wait`]; `None` for no query (a plain status request) or one that is not
    /// exactly these four fields, each once, the phase at most [`MAX_PHASE_BYTES`] of ASCII letters.
    pub fn parse(query: Option<&str>) -> Option<JobWait> {
        let (mut wait_ms, mut phase, mut attempt, mut owner_ready) = (None, None, None, None);
        for pair in query?.split('&') {
            let (name, value) = pair.split_once('=')?;
            let slot_taken = match name {
                "wait_ms" => wait_ms.replace(value.parse::<u64>().ok()?).is_some(),
                "phase" => {
                    let ok = value.len() <= MAX_PHASE_BYTES
                        && value.bytes().all(|b| b.is_ascii_alphabetic());
                    if !ok {
                        return None;
                    }
                    phase.replace(value.to_string()).is_some()
                }
                "attempt" => attempt.replace(value.parse::<u32>().ok()?).is_some(),
                "owner_ready" => owner_ready.replace(value.parse::<bool>().ok()?).is_some(),
                _ => return None,
            };
            if slot_taken {
                return None;
            }
        }
        Some(JobWait {
            wait_ms: wait_ms?,
            phase: phase?,
            attempt: attempt?,
            owner_ready: owner_ready?,
        })
    }
}

/// `/v1/jobs/{id}/cancel` (POST, the submitter).
pub fn cancel(id: u64) -> String {
    format!("/v1/jobs/{id}/cancel")
}
/// `/v1/jobs/{id}/attempts/{attempt}/inputs/{party}` (PUT bytes, the submitter): party `party`'s input blob
/// for attempt `attempt`.
pub fn input_upload(id: u64, attempt: u32, party: usize) -> String {
    format!("/v1/jobs/{id}/attempts/{attempt}/inputs/{party}")
}
/// `/v1/jobs/{id}/outputs/{party}` (GET bytes, the submitter): party `party`'s output blob once Done.
pub fn output_download(id: u64, party: usize) -> String {
    format!("/v1/jobs/{id}/outputs/{party}")
}
/// `/v1/jobs/{id}/attempts/{attempt}/owner` (GET bytes, the submitter): the dealer's owner material of a
/// `spdz2k` attempt (the masks the client publishes its values under), sealed to the client's output key.
pub fn owner_download(id: u64, attempt: u32) -> String {
    format!("/v1/jobs/{id}/attempts/{attempt}/owner")
}
/// `/v1/jobs/{id}/receipt` (GET, anyone): a verified job's receipt (`veil_node::receipt::ReceiptFile` JSON).
pub fn job_receipt(id: u64) -> String {
    format!("/v1/jobs/{id}/receipt")
}
/// Every receipt the coordinator keeps (GET, anyone): the audit log, `[ReceiptEntry]`.
pub const RECEIPTS: &str = "/v1/receipts";
/// `/v1/tasks/{id}/{attempt}/owner` (PUT bytes, the dealer): the sealed owner material.
pub fn task_owner(id: u64, attempt: u32) -> String {
    format!("/v1/tasks/{id}/{attempt}/owner")
}
/// `/v1/tasks/{id}/{attempt}/transcript` (PUT bytes, a party): its MAC-check views (postcard
/// `Vec<CheckTranscript>`; no share or value in them), for the verifier.
pub fn task_transcript(id: u64, attempt: u32) -> String {
    format!("/v1/tasks/{id}/{attempt}/transcript")
}
/// `/v1/tasks/{id}/{attempt}/evidence/{kind}/{party}` (GET bytes, the verifier): party `party`'s `input` or
/// `output` ciphertext (to commit to) or its `transcript`.
pub fn task_evidence(id: u64, attempt: u32, kind: &str, party: usize) -> String {
    format!("/v1/tasks/{id}/{attempt}/evidence/{kind}/{party}")
}
/// `/v1/tasks/{id}/{attempt}/receipt` (PUT JSON `ReceiptFile`, the verifier).
pub fn task_receipt(id: u64, attempt: u32) -> String {
    format!("/v1/tasks/{id}/{attempt}/receipt")
}
/// `/v1/tasks/{id}/{attempt}/accepted` (POST, a member): the member checked the manifest and is ready.
pub fn task_accepted(id: u64, attempt: u32) -> String {
    format!("/v1/tasks/{id}/{attempt}/accepted")
}
/// `/v1/tasks/{id}/{attempt}/failed` (POST [`TaskFailure`], a member).
pub fn task_failed(id: u64, attempt: u32) -> String {
    format!("/v1/tasks/{id}/{attempt}/failed")
}
/// `/v1/tasks/{id}/{attempt}/input` (GET bytes, the party): its input blob.
pub fn task_input(id: u64, attempt: u32) -> String {
    format!("/v1/tasks/{id}/{attempt}/input")
}
/// `/v1/tasks/{id}/{attempt}/output` (PUT bytes, the party): its output blob.
pub fn task_output(id: u64, attempt: u32) -> String {
    format!("/v1/tasks/{id}/{attempt}/output")
}

/// A node's hardware as it reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareReport {
    /// CPU cores offered.
    pub cores: u32,
    /// Memory offered, bytes.
    pub memory_bytes: u64,
    /// GPU model, if any.
    pub gpu_model: Option<String>,
    /// GPU memory, bytes.
    pub gpu_memory_bytes: Option<u64>,
    /// Measured bandwidth, bytes per second.
    pub bandwidth_bytes_per_s: u64,
}

/// What a node registers with (its key is the TLS client key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Operator (collusion domain).
    pub operator: String,
    /// Region.
    pub region: String,
    /// Autonomous system, if known.
    pub asn: Option<u32>,
    /// The node's QUIC address, as committee members dial it.
    pub address: SocketAddr,
    /// Hardware.
    pub hardware: HardwareReport,
    /// The node's X25519 key that clients seal its input shares to (hex).
    pub sealing_key: String,
    /// The node's Ed25519 signature binding `sealing_key` to its identity (hex; see
    /// `veil_node::inbox::check_attestation`).
    pub sealing_attestation: String,
    /// The operator's certificate chain of this node (`veil_node::operator::CertificateChain` text):
    /// required by a coordinator that admits operators.
    #[serde(default)]
    pub certificate: Option<String>,
}

/// A measured round-trip time to a peer node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RttReport {
    /// The peer's public key (hex).
    pub peer: String,
    /// Microseconds.
    pub rtt_us: u32,
}

/// A heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// `false` while the node drains (finishes its work, takes none).
    pub ready: bool,
    /// CPU load in [0, 1].
    pub load: f32,
    /// Jobs queued or running on the node.
    pub queue_len: u32,
    /// RTTs measured since the last heartbeat.
    #[serde(default)]
    pub rtts: Vec<RttReport>,
    /// Long poll: how long the coordinator may hold this request, ms, while the reply would equal the one
    /// tagged `seen` (it answers as soon as the node's tasks, a go or a cancellation change it, else once
    /// the wait ends; it caps the wait at [`MAX_HEARTBEAT_WAIT_MS`] or less). 0 (an older node): answer at
    /// once.
    #[serde(default)]
    pub wait_ms: u64,
    /// The [`HeartbeatReply::tag`] of the last reply this node handled, if any.
    #[serde(default)]
    pub seen: Option<String>,
}

/// The longest a coordinator holds a heartbeat ([`HeartbeatRequest::wait_ms`]), ms: well below every HTTP
/// timeout on the way (the node's call timeout, the coordinator's request timeout).
pub const MAX_HEARTBEAT_WAIT_MS: u64 = 5_000;

/// A node's role in a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskRole {
    /// Execution party `index`.
    Party {
        /// 0-based.
        index: usize,
    },
    /// The dealer.
    Dealer,
    /// The verifier (`spdz2k` jobs): checks the MAC-check transcripts, signs the receipt.
    Verifier,
}

/// One attempt of a job that a node takes part in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The job.
    pub job: u64,
    /// The attempt (1-based).
    pub attempt: u32,
    /// The node's role.
    pub role: TaskRole,
    /// The coordinator-signed committee manifest (postcard `SignedManifest`, hex).
    pub manifest: String,
    /// Every member accepted and the client uploaded every input: start computing.
    pub go: bool,
}

/// A trial job with a known answer, run over QUIC by a committee the coordinator assembled: party 0 is the
/// node on trial (the subject), party 1 its examiner (a node of another operator), the dealer a third node.
/// Every member sees it in its heartbeat replies until it is decided; see `veil_node::trial`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialTask {
    /// A nonce naming this trial.
    pub id: u64,
    /// The workload.
    pub workload: String,
    /// Seed of the workload's weights.
    pub model_seed: u64,
    /// Seed of the input.
    pub input_seed: u64,
    /// Seed of the public dealing of the weight and input shares (a trial keeps nothing private: every
    /// party derives its own shares from it).
    pub share_seed: u64,
    /// This node's role: party 0 (the subject), party 1 (the examiner) or the dealer.
    pub role: TaskRole,
    /// The coordinator-signed committee manifest (postcard `SignedManifest`, hex).
    pub manifest: String,
    /// Every member accepted the manifest: start.
    pub go: bool,
}

/// A member accepted a trial's manifest (its job is registered, the other members' keys admitted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialAccepted {
    /// The trial's nonce.
    pub id: u64,
}

/// Most output words a trial report may carry.
pub const MAX_TRIAL_OUTPUTS: usize = 1 << 16;
/// Longest failure reason kept from a trial report, bytes.
pub const MAX_TRIAL_REASON_BYTES: usize = 1024;

/// A party's report of a trial: its output share and what it measured, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialReport {
    /// The trial's nonce.
    pub id: u64,
    /// This party's share of the output (ring words; at most [`MAX_TRIAL_OUTPUTS`]). A trial's inputs and
    /// weights are public, so its shares are no secret.
    #[serde(default)]
    pub outputs: Vec<u64>,
    /// Online seconds of the inference as this party's clock saw them (wall time less preparation).
    #[serde(default)]
    pub online_seconds: f64,
    /// The QUIC round-trip time this party measured to the other party, microseconds.
    #[serde(default)]
    pub rtt_us: Option<u32>,
    /// Why the party failed (no output then).
    #[serde(default)]
    pub failure: Option<String>,
}

/// The reply to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The node's state: probation, active, draining, down, rejected.
    pub state: String,
    /// The node's current tasks (a task missing here was cancelled or rescheduled: drop it).
    pub tasks: Vec<TaskView>,
    /// The trials this node takes part in (its own while on probation, or as examiner or dealer of
    /// another's); a trial missing here was decided or given up: drop it.
    #[serde(default)]
    pub trials: Vec<TrialTask>,
    /// A digest of this reply's content (state, tasks, trials), for the next request's
    /// [`HeartbeatRequest::seen`]; `None` from a coordinator that does not hold heartbeats (the node then
    /// waits its period between heartbeats).
    #[serde(default)]
    pub tag: Option<String>,
    /// How long the coordinator held the request before answering, ms (a node's heartbeat round-trip
    /// metric leaves it out).
    #[serde(default)]
    pub held_ms: u64,
}

/// Why a member's task failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The error (no share, key or value in it).
    pub reason: String,
    /// The party refused its sealed input (does not open, bound elsewhere, replayed): the job fails
    /// without retry and without blaming a node.
    #[serde(default)]
    pub rejected_input: bool,
    /// The verifier found the MAC check failed (or the evidence inconsistent): the parties are blamed.
    #[serde(default)]
    pub verification_failed: bool,
}

/// One entry of the coordinator's audit log of receipts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptEntry {
    /// The coordinator's job id.
    pub job: u64,
    /// The attempt the receipt covers.
    pub attempt: u32,
    /// Unix time the coordinator stored it, ms.
    pub stored_at_ms: u64,
    /// The receipt (`veil_node::receipt::ReceiptFile` JSON).
    pub receipt: String,
}

/// A job request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Workload (`network-a`, `lenet`).
    pub workload: String,
    /// Seed of the workload's weights.
    pub model_seed: u64,
    /// `shared` or `public` weights.
    pub weights: String,
    /// Fractional bits of the fixed-point encoding.
    pub frac_bits: u32,
    /// Items per inference.
    pub batch: u32,
    /// Inferences.
    pub inferences: u32,
    /// Execution parties.
    pub parties: u8,
    /// A deployed model's id (hex): the job runs it instead of `workload`/`model_seed`.
    #[serde(default)]
    pub model: Option<String>,
    /// The client's X25519 key (hex): parties seal their output shares to it.
    #[serde(default)]
    pub output_key: Option<String>,
    /// `semi2k` or `spdz2k` (MAC-checked, with a verifier and a signed receipt).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// One stage of a deployed model split across committees (see `GET /v1/models/{id}/stages`).
    #[serde(default)]
    pub stage: Option<StageRequest>,
    /// Kernel threads per party. Refused (400) on coordinator jobs: the nodes choose their threads; a
    /// client-chosen count is the protocol lab's, for local runs. Kept in the API to be refused, not
    /// silently ignored. (No `skip_serializing_if`: the coordinator keeps requests in postcard.)
    #[serde(default)]
    pub threads: Option<u32>,
    /// Link shaping (latency, bandwidth). Refused (400) on coordinator jobs, like `threads`: a client that
    /// could slow honest parties into timeouts could grind their reputation down.
    #[serde(default)]
    pub shaping: Option<veil_engine::lab::shaping::ShapingConfig>,
}

/// One stage of a staged job: layers `start..end` of the deployed model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRequest {
    /// First layer.
    pub start: usize,
    /// One past the last layer.
    pub end: usize,
    /// The job of the next stage (submitted first, scheduled): this stage's parties hand their
    /// re-randomised output shares to its parties instead of returning them to the client.
    pub next: Option<u64>,
    /// The previous stage's parties (0 for the first stage): each party sums that many hand-offs into its
    /// input share.
    pub senders: u32,
}

/// How the coordinator splits a deployed model into stages (contiguous layer ranges whose party memory
/// fits `max_stage_memory_bytes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagesView {
    /// The model.
    pub model: String,
    /// Layer ranges `[start, end)`, in order.
    pub stages: Vec<[usize; 2]>,
    /// The largest memory a stage may need per party, bytes.
    pub max_stage_memory_bytes: u64,
}

/// `/v1/models/{id}/stages` (GET): the model's split into stages.
pub fn model_stages(id: &str) -> String {
    format!("/v1/models/{id}/stages")
}

fn default_protocol() -> String {
    "semi2k".into()
}

/// A model deployment: its public part. The weights never reach the coordinator: with shared weights the
/// owner's client deals fresh sealed shares to each attempt's committee; with public weights it seals the
/// weights themselves to each party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The model id (hex SHA-256 of architecture and weights, as `veil_engine::model_file` computes it).
    pub id: String,
    /// The architecture (JSON of `veil_engine::model_file::Architecture`).
    pub architecture: String,
    /// `shared` or `public` weights.
    pub weights: String,
    /// Execution parties its jobs use.
    pub parties: u8,
    /// Fractional bits of the fixed-point encoding.
    pub frac_bits: u32,
    /// The protocol of its jobs: `semi2k`, or `spdz2k` (MAC-checked, with a signed receipt).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// A pretrained encoder (one of `veil_engine::bert::pretrained::NAMES`): every party loads its files
    /// itself and checks them against `id` (the hash of name, config and weights). Then `architecture` is
    /// empty and the weights are public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// An ONNX model (see `crate::onnx_model`): `id` is the file's SHA-256, `architecture` is empty (the
    /// file is uploaded apart, [`model_onnx`]), the weights public; its jobs' workload is `onnx`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub onnx: bool,
    /// An ONNX model's file as the coordinator checked and imported it at deploy (set by the coordinator,
    /// never taken from a client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx_file: Option<OnnxFile>,
}

/// A deployed ONNX file as the coordinator recorded it once at deploy: its size, and the imported graph's
/// figures that each job's demand is estimated from (so no submission imports the file again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnnxFile {
    /// The file's size, bytes (at most `crate::onnx_model::MAX_ONNX_BYTES`).
    pub bytes: u64,
    /// Elements of every tensor of the graph (inputs, weights, activations, outputs).
    pub elements: u64,
    /// Nodes of the graph.
    pub nodes: u32,
}

/// `/v1/models/{id}/onnx`: the file of ONNX model `id`. PUT (the owner, `application/octet-stream`, at
/// most `crate::onnx_model::MAX_ONNX_BYTES`, with the query `parties=N&frac_bits=F&protocol=P`): deploys
/// it, reply [`ModelView`]. GET (any authenticated caller; its weights are public to the parties): the
/// file's bytes.
pub fn model_onnx(id: &str) -> String {
    format!("/v1/models/{id}/onnx")
}

/// A deployed model as the coordinator lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelView {
    /// The model id (hex).
    pub id: String,
    /// The architecture's name.
    pub name: String,
    /// The deployment.
    pub deployment: DeployRequest,
    /// The deployer's key (hex).
    pub owner: String,
    /// Unix time of the deployment, ms.
    pub deployed_at_ms: u64,
}

/// A committee member as a client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub node: u32,
    /// Public key (hex): input blobs are addressed to it.
    pub public_key: String,
    /// QUIC address.
    pub address: SocketAddr,
    /// The node's X25519 sealing key (hex): input blobs are sealed to it.
    pub sealing_key: String,
    /// The node's signature binding the sealing key to `public_key` (hex): check it before sealing.
    pub sealing_attestation: String,
}

/// The committee of the current attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitteeView {
    /// Parties, in index order.
    pub parties: Vec<MemberView>,
    /// The dealer; `None` under a protocol without one (`rep3`).
    pub dealer: Option<MemberView>,
    /// The verifier; `None` under a protocol whose committees have none (`rep3`).
    pub verifier: Option<MemberView>,
}

/// One lifecycle transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionView {
    /// Phase left.
    pub from: String,
    /// Phase entered.
    pub to: String,
    /// Unix time, ms.
    pub at_ms: u64,
    /// Attempt.
    pub attempt: u32,
    /// Cause of a failure.
    pub cause: Option<String>,
}

/// A job's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Id.
    pub id: u64,
    /// Phase: submitted, scheduled, running, verifying, done, failed.
    pub phase: String,
    /// Current attempt.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The submitter's key (hex).
    pub submitter: String,
    /// The request.
    pub request: SubmitRequest,
    /// The current attempt's committee (scheduled, running, verifying).
    pub committee: Option<CommitteeView>,
    /// The node-level job id of the current attempt (hex): input blobs must name it.
    pub run_id: Option<String>,
    /// The coordinator-signed manifest of the current attempt (hex of postcard `SignedManifest`): clients
    /// check it and derive what their sealed shares are bound to from it.
    pub manifest: Option<String>,
    /// Parties of the current attempt whose input blob is uploaded.
    pub inputs_uploaded: Vec<usize>,
    /// Why the last placement failed, while waiting for a committee.
    pub unplaced_reason: Option<String>,
    /// Why the job failed.
    pub failure: Option<String>,
    /// Nodes excluded from retries (blamed).
    pub excluded: Vec<u32>,
    /// Every transition.
    pub history: Vec<TransitionView>,
    /// A `spdz2k` job's attempt: the dealer's sealed owner material is uploaded.
    #[serde(default)]
    pub owner_ready: bool,
    /// A verified job has a receipt (`GET /v1/jobs/{id}/receipt`).
    #[serde(default)]
    pub has_receipt: bool,
}

/// A node as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Id.
    pub id: u32,
    /// Public key (hex).
    pub public_key: String,
    /// Operator: its collusion domain (the verified operator key, hex, where the coordinator admits
    /// operators; else the name the node declared).
    pub operator: String,
    /// The operator name the node declared (shown only).
    #[serde(default)]
    pub declared_operator: String,
    /// Region.
    pub region: String,
    /// QUIC address.
    pub address: Option<SocketAddr>,
    /// probation, active, draining, down, rejected.
    pub state: String,
    /// Reputation in (0, 1].
    pub reputation: f64,
    /// Unix time of the last heartbeat, ms.
    pub last_heartbeat_ms: u64,
    /// Reported load.
    pub load: f32,
    /// Reported queue length.
    pub queue_len: u32,
    /// Reservations the coordinator holds on it.
    pub active_jobs: u32,
    /// Successful jobs.
    pub successes: u64,
    /// Failed jobs (crash, abort).
    pub failures: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Hardware.
    pub hardware: HardwareReport,
    /// RTTs the node measured to peers: (peer node id, microseconds).
    pub measured_rtts: Vec<(u32, u32)>,
    /// Ring operations per second its hardware claim stands for (cores and GPU).
    #[serde(default)]
    pub claimed_ops_per_s: u64,
    /// Ring operations per second its examined trial measured, once it passed one.
    #[serde(default)]
    pub measured_ops_per_s: Option<u64>,
    /// What selection uses: the smaller of the claimed and the measured rate.
    #[serde(default)]
    pub ops_per_s: u64,
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_wait_goes_through_its_query_and_a_malformed_query_is_no_wait() {
        let wait = JobWait {
            wait_ms: 2_000,
            phase: "scheduled".into(),
            attempt: 3,
            owner_ready: true,
        };
        let path = job_wait(7, &wait);
        let (route, query) = path.split_once('?').unwrap();
        assert_eq!(route, job(7));
        assert_eq!(JobWait::parse(Some(query)), Some(wait));
        for bad in [
            "",
            "wait_ms=1&phase=running&attempt=1",
            "wait_ms=1&phase=running&attempt=1&owner_ready=false&wait_ms=2",
            "wait_ms=1&phase=run%20ning&attempt=1&owner_ready=false",
            "wait_ms=-1&phase=running&attempt=1&owner_ready=false",
            "wait_ms=1&phase=running&attempt=1&owner_ready=false&more=1",
        ] {
            assert_eq!(JobWait::parse(Some(bad)), None, "{bad}");
        }
        assert_eq!(JobWait::parse(None), None);
        let long = format!(
            "wait_ms=1&phase={}&attempt=1&owner_ready=false",
            "a".repeat(MAX_PHASE_BYTES + 1)
        );
        assert_eq!(JobWait::parse(Some(&long)), None);
    }
}
