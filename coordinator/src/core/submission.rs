//! Submission: model deployments (their public part), job requests checked and turned into a demand,
//! the client's input blobs for each attempt, cancellation, and each client's rate limit.

use veil_engine::model_file::Architecture;
use veil_engine::{workloads, WeightMode};
use veil_node::api::{
    stage_model_id, DeployRequest, JobView, ModelView, OnnxFile, StagesView, SubmitRequest,
};
use veil_node::envelope::SealingKey;
use veil_node::manifest::{DeployedModel, Handoff, MAX_ARCHITECTURE_BYTES, MAX_BATCH};
use veil_node::wire::JobId as RunId;
use veil_node::PublicKey;
use veil_protocols::protocol::Protocol;
use veil_scheduler::{Event, Job, JobDemand, JobId, Millis, Phase, RoleDemand};

use super::execution::wrong_phase;
use super::{Core, Entry, JobExtra, MODEL_RECORD};
use crate::blobs::{BlobDelete, BlobKey, Direction};
use crate::error::{Error, Result};

/// Most execution parties a job may ask for.
pub const MAX_PARTIES: u8 = 16;
/// Most inferences one job may run.
pub const MAX_INFERENCES: u32 = 10_000;

fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(Error::OutOfRange {
        field,
        value,
        min,
        max,
    })
}

fn check_parties(parties: u8) -> Result<()> {
    check_range("parties", parties.into(), 2, MAX_PARTIES.into())
}

/// The protocol a request names, if nodes run it with a committee of `parties` parties (`rep3`: exactly
/// 3, and no dealer).
pub(super) fn check_protocol(protocol: &str, parties: u8) -> Result<Protocol> {
    let p = match Protocol::parse(protocol) {
        Some(p) if veil_node::manifest::runs_on_nodes(p) => p,
        _ => {
            return Err(Error::Unsupported {
                field: "protocol",
                value: protocol.chars().take(32).collect(),
                expected: "semi2k, spdz2k, rep3, rep3m",
            })
        }
    };
    if !p.supports_parties(parties.into()) {
        return Err(Error::malformed(
            "parties",
            format!("{p} runs with {}, not {parties}", p.party_requirement()),
        ));
    }
    Ok(p)
}

pub(super) fn weight_mode(s: &str) -> Result<WeightMode> {
    match s {
        "shared" => Ok(WeightMode::Shared),
        "public" => Ok(WeightMode::Public),
        other => Err(Error::Unsupported {
            field: "weights",
            value: other.chars().take(32).collect(),
            expected: "shared, public",
        }),
    }
}

/// Checks a deployment: the id's form, the architecture (bounded, parses, builds), weights, parties and
/// fixed point. Returns the parsed architecture.
pub fn check_deployment(req: &DeployRequest) -> Result<Architecture> {
    check_model_id(&req.id)?;
    if req.pretrained.is_some() {
        return Err(Error::malformed(
            "pretrained",
            "a pretrained deployment carries no architecture",
        ));
    }
    if req.architecture.len() > MAX_ARCHITECTURE_BYTES {
        return Err(Error::TooLong {
            field: "architecture",
            max: MAX_ARCHITECTURE_BYTES,
        });
    }
    check_parties(req.parties)?;
    weight_mode(&req.weights)?;
    check_protocol(&req.protocol, req.parties)?;
    veil_protocols::ring::FixedPoint::new(req.frac_bits)
        .map_err(|e| Error::malformed("frac_bits", e))?;
    let architecture: Architecture =
        serde_json::from_str(&req.architecture).map_err(|e| Error::malformed("architecture", e))?;
    veil_engine::model_file::layer_shapes(&architecture)
        .map_err(|e| Error::malformed("architecture", e))?;
    Ok(architecture)
}

fn check_model_id(id: &str) -> Result<()> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::malformed("model id", "not 64 hex digits"));
    }
    Ok(())
}

/// Checks the deployment of a pretrained encoder or chat model: a known name (bounded), an id of 64 hex digits (the hash
/// of name, config and weights: every party checks its own files against it when a job runs), no
/// architecture, public weights, parties, protocol and fixed point. Returns the name.
pub fn check_pretrained(req: &DeployRequest) -> Result<&str> {
    let name = req
        .pretrained
        .as_deref()
        .ok_or_else(|| Error::malformed("pretrained", "missing"))?;
    if !veil_engine::bert::pretrained::is_pretrained(name) && name != veil_node::generation::SMOLLM2
    {
        return Err(Error::Unsupported {
            field: "pretrained",
            value: name.chars().take(32).collect(),
            expected: "all-minilm-l6-v2, smollm2-135m-instruct",
        });
    }
    check_model_id(&req.id)?;
    if !req.architecture.is_empty() {
        return Err(Error::malformed(
            "architecture",
            "a pretrained model's architecture is its files",
        ));
    }
    if weight_mode(&req.weights)? != WeightMode::Public {
        return Err(Error::malformed(
            "weights",
            "a pretrained model's weights are public",
        ));
    }
    check_parties(req.parties)?;
    check_protocol(&req.protocol, req.parties)?;
    veil_protocols::ring::FixedPoint::new(req.frac_bits)
        .map_err(|e| Error::malformed("frac_bits", e))?;
    Ok(name)
}

/// The deployment fields of an ONNX model, whose file the coordinator has checked or is checking: no
/// pretrained name, no architecture (the file travels apart), public weights, parties, protocol, fixed
/// point.
fn check_onnx_common(req: &DeployRequest) -> Result<()> {
    check_model_id(&req.id)?;
    if req.pretrained.is_some() {
        return Err(Error::malformed(
            "pretrained",
            "an ONNX deployment names no pretrained model",
        ));
    }
    if !req.architecture.is_empty() {
        return Err(Error::malformed(
            "architecture",
            "an ONNX model's file is uploaded apart (PUT /v1/models/{id}/onnx), not in the deployment",
        ));
    }
    if weight_mode(&req.weights)? != WeightMode::Public {
        return Err(Error::malformed(
            "weights",
            "an ONNX model's weights are public",
        ));
    }
    check_parties(req.parties)?;
    check_protocol(&req.protocol, req.parties)?;
    veil_protocols::ring::FixedPoint::new(req.frac_bits)
        .map_err(|e| Error::malformed("frac_bits", e))?;
    Ok(())
}

/// Checks an ONNX deployment's fields without touching the file (cheap, under the state lock): those of
/// [`check_onnx_common`], and the file's record ([`check_onnx`] made it) within bounds. Returns it.
pub fn check_onnx_fields(req: &DeployRequest) -> Result<OnnxFile> {
    check_onnx_common(req)?;
    let file = req
        .onnx_file
        .ok_or_else(|| Error::malformed("model", "an ONNX deployment without its checked file"))?;
    veil_node::onnx_model::check_size(file.bytes).map_err(|e| Error::malformed("model", e))?;
    Ok(file)
}

/// Checks an ONNX deployment whole with its uploaded file `bytes`: the fields ([`check_onnx_common`]),
/// the file's size and SHA-256 against the id, then imports it and prepares it for private inference, so
/// that a model veil cannot run (an unsupported operator, a dynamic shape, external data, not ONNX at
/// all) is refused at deploy with the importer's message. Returns what the model's record keeps of the
/// file ([`OnnxFile`]: size and the graph's figures for each job's demand). Heavy: run it outside the
/// state lock.
pub fn check_onnx(req: &DeployRequest, bytes: &[u8]) -> Result<OnnxFile> {
    check_onnx_common(req)?;
    veil_node::onnx_model::check_file(bytes, &req.id, None)
        .map_err(|e| Error::malformed("model", e))?;
    let graph = veil_node::onnx_model::import(bytes).map_err(|e| Error::malformed("model", e))?;
    let file = veil_node::onnx_model::figures(&graph, bytes.len() as u64);
    veil_node::onnx_model::prepare(graph, req.frac_bits)
        .map_err(|e| Error::malformed("model", e))?;
    Ok(file)
}

/// Checks a job on a deployed ONNX model (`file` what its record keeps of the file) and estimates its
/// demand from the graph's figures: per item every tensor is held as shares (8 bytes, 4 copies for masks
/// and openings) and sent about once per party; the dealer streams as much; two ring operations per
/// element; about 8 rounds per node. Estimates, for selection and load accounting only. Cheap: nothing is
/// imported.
pub fn onnx_demand_for(req: &SubmitRequest, file: &OnnxFile) -> Result<JobDemand> {
    let protocol = check_public_weight_job(
        req,
        PublicWeightJob {
            workload: veil_node::onnx_model::ONNX_WORKLOAD,
            wrong_workload: "an ONNX model's jobs run workload onnx",
            one_stage: "an ONNX job runs in one stage",
            public_weights: "an ONNX model's weights are public",
            // The graph's input shape is fixed at export: one item per inference.
            max_batch: 1,
        },
    )?;
    let elements = file.elements;
    let nodes = file.nodes;
    let items = u64::from(req.inferences);
    Ok(job_demand(
        protocol,
        req.parties,
        RoleDemand {
            memory_bytes: 32 * elements + (16 << 20),
            ops: 2 * elements * items,
            bytes: 8 * elements * items,
        },
        RoleDemand {
            memory_bytes: 64 << 20,
            ops: elements * items,
            bytes: 8 * elements * items * u64::from(req.parties),
        },
        RoleDemand {
            memory_bytes: 16 << 20,
            ops: 0,
            bytes: 0,
        },
        nodes.saturating_mul(8).saturating_mul(req.inferences),
    ))
}

/// What differs between the jobs on a public-weight model (a pretrained encoder, an ONNX model): the
/// workload they must name, the messages of their refusals, and their largest batch.
struct PublicWeightJob<'a> {
    workload: &'a str,
    wrong_workload: &'static str,
    one_stage: &'static str,
    public_weights: &'static str,
    max_batch: u32,
}

/// The checks every job on a public-weight model passes, in this order: no lab-only field, the model's
/// workload, one stage, public weights, then the parties, batch, inference count, fixed point, protocol
/// and output key within their bounds.
fn check_public_weight_job(req: &SubmitRequest, job: PublicWeightJob) -> Result<Protocol> {
    if req.shaping.is_some() {
        return Err(Error::LabOnly { field: "shaping" });
    }
    if req.threads.is_some() {
        return Err(Error::LabOnly { field: "threads" });
    }
    if req.workload != job.workload {
        return Err(Error::malformed("workload", job.wrong_workload));
    }
    if req.stage.is_some() {
        return Err(Error::malformed("stage", job.one_stage));
    }
    if weight_mode(&req.weights)? != WeightMode::Public {
        return Err(Error::malformed("weights", job.public_weights));
    }
    check_parties(req.parties)?;
    check_range("batch", req.batch.into(), 1, job.max_batch.into())?;
    check_range(
        "inferences",
        req.inferences.into(),
        1,
        MAX_INFERENCES.into(),
    )?;
    veil_protocols::ring::FixedPoint::new(req.frac_bits)
        .map_err(|e| Error::malformed("frac_bits", e))?;
    let protocol = check_protocol(&req.protocol, req.parties)?;
    if let Some(k) = &req.output_key {
        k.parse::<SealingKey>()
            .map_err(|e| Error::malformed("output_key", e))?;
    }
    Ok(protocol)
}

/// A job's demand under `protocol`: the dealer's needs iff the protocol has a dealer, the verifier's iff
/// its committees have a verifier ([`Protocol::has_verifier`]). The scheduler draws and reserves exactly
/// these roles, so a protocol without a dealer (`rep3`, `rep3m`) holds no node for one.
pub(super) fn job_demand(
    protocol: Protocol,
    parties: u8,
    party: RoleDemand,
    dealer: RoleDemand,
    verifier: RoleDemand,
    rounds: u32,
) -> JobDemand {
    JobDemand {
        parties,
        party,
        dealer: protocol.has_dealer().then_some(dealer),
        verifier: protocol.has_verifier().then_some(verifier),
        rounds,
    }
}

/// Weights of all-MiniLM-L6-v2's encoder layers (6 layers of 4 x 384 x 384 + 2 x 384 x 1536 weights):
/// what a party holds and multiplies, for the demand estimate of an embedding job.
const ENCODER_WEIGHTS: u64 = 6 * (4 * 384 * 384 + 2 * 384 * 1536);
/// Rounds of one embedding (all-MiniLM-L6-v2, semi2k), about: for the demand estimate only.
const ENCODER_ROUNDS: u32 = 1_000;

/// Checks an embedding job on pretrained encoder `name` and estimates its demand: each party holds the
/// public weights encoded (8 bytes each) plus 64 MiB of activations; computes 2 ring operations per weight
/// per token; sends about 4 KiB per token per layer. Estimates, for selection and load accounting only.
pub fn encoder_demand_for(req: &SubmitRequest, name: &str) -> Result<JobDemand> {
    let protocol = check_public_weight_job(
        req,
        PublicWeightJob {
            workload: name,
            wrong_workload: "not the deployed encoder's name",
            one_stage: "an encoder job runs in one stage",
            public_weights: "an encoder's weights are public",
            // The batch is the token count of every sequence (BERT's 512 positions at most).
            max_batch: 512,
        },
    )?;
    let tokens = u64::from(req.batch) * u64::from(req.inferences);
    Ok(job_demand(
        protocol,
        req.parties,
        RoleDemand {
            memory_bytes: 8 * ENCODER_WEIGHTS + (64 << 20),
            ops: 2 * ENCODER_WEIGHTS * tokens,
            bytes: (4 << 10) * 6 * tokens,
        },
        RoleDemand {
            memory_bytes: 64 << 20,
            ops: ENCODER_WEIGHTS * tokens,
            bytes: (4 << 10) * 6 * tokens * u64::from(req.parties),
        },
        RoleDemand {
            memory_bytes: 16 << 20,
            ops: 0,
            bytes: 0,
        },
        ENCODER_ROUNDS.saturating_mul(req.inferences),
    ))
}

/// The split of model `id` with `architecture` into stages of at most `max_stage_memory_bytes` per party
/// (0: one stage), from the layers' memory computed from their shapes (no tensor is built: cheap enough to
/// run outside the state lock on every request).
pub fn stages_of(
    id: &str,
    architecture: &Architecture,
    max_stage_memory_bytes: u64,
) -> Result<StagesView> {
    let memory = veil_engine::model_file::layer_memory(architecture)
        .map_err(|e| Error::malformed("architecture", e))?;
    let max = match max_stage_memory_bytes {
        0 => u64::MAX,
        m => m,
    };
    let stages = veil_scheduler::partition(&memory, max).map_err(|source| Error::Unsplittable {
        model: id.to_string(),
        source,
    })?;
    Ok(StagesView {
        model: id.to_string(),
        stages: stages.into_iter().map(|r| [r.start, r.end]).collect(),
        max_stage_memory_bytes: max,
    })
}

/// The weight count of built-in workload `name`, which does not depend on the seed, the fixed point or the
/// weight mode: compiled once per workload (on a seed of 0) and cached, so a submission builds no model.
/// Invariant: the cache holds only names [`workloads::by_name`] knows (a handful), so it is bounded.
fn workload_weights(
    name: &str,
    fp: veil_protocols::ring::FixedPoint,
    mode: WeightMode,
) -> Result<u64> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(&n) = cache.lock().ok().as_ref().and_then(|c| c.get(name)) {
        return Ok(n);
    }
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name(name, 0, &device)
        .ok_or_else(|| Error::Unsupported {
            field: "workload",
            value: name.chars().take(32).collect(),
            expected: "a model workload (network-a, lenet)",
        })?
        .map_err(Error::invariant)?;
    let plan = veil_engine::Plan::compile(&model, fp, mode).map_err(Error::invariant)?;
    let n = plan
        .weights
        .iter()
        .map(|w| (w.inner * w.outputs + w.bias.as_ref().map_or(0, |b| b.len())) as u64)
        .sum();
    if let Ok(mut c) = cache.lock() {
        c.insert(name.to_string(), n);
    }
    Ok(n)
}

/// Checks a job request and estimates what it asks of a committee from its compiled plan: each party
/// holds its weight shares, their masks and the opened masked weights (3 x 8 bytes per weight) plus 1 MiB
/// of activations; computes 2 ring operations per weight per item; sends the opened weights once and
/// about 64 KiB per inference. The dealer streams 8 bytes per weight. Rounds: the workload's measured
/// count per inference (network-a 20, lenet 61). Estimates, for selection and load accounting only.
pub fn demand_for(req: &SubmitRequest, deployed: Option<&Architecture>) -> Result<JobDemand> {
    if req.shaping.is_some() {
        return Err(Error::LabOnly { field: "shaping" });
    }
    // Members would read the architecture as an ONNX file: only an ONNX deployment runs this workload.
    if req.workload == veil_node::onnx_model::ONNX_WORKLOAD {
        return Err(Error::malformed(
            "workload",
            "onnx runs deployed ONNX models only",
        ));
    }
    if req.threads.is_some() {
        return Err(Error::LabOnly { field: "threads" });
    }
    check_parties(req.parties)?;
    check_range("batch", req.batch.into(), 1, MAX_BATCH.into())?;
    check_range(
        "inferences",
        req.inferences.into(),
        1,
        MAX_INFERENCES.into(),
    )?;
    let mode = weight_mode(&req.weights)?;
    let fp = veil_protocols::ring::FixedPoint::new(req.frac_bits)
        .map_err(|e| Error::malformed("frac_bits", e))?;
    let protocol = check_protocol(&req.protocol, req.parties)?;
    if let Some(k) = &req.output_key {
        k.parse::<SealingKey>()
            .map_err(|e| Error::malformed("output_key", e))?;
    }
    let weights: u64 = match (&req.model, deployed) {
        // A deployed model's weights count from its specs: no tensor is built for a request.
        (Some(_), Some(architecture)) => veil_engine::model_file::weight_count(architecture)
            .map_err(|e| Error::malformed("model", e))?,
        (Some(id), None) => return Err(Error::UnknownModel { model: id.clone() }),
        (None, _) => workload_weights(&req.workload, fp, mode)?,
    };
    let items = u64::from(req.batch) * u64::from(req.inferences);
    let rounds_per = if req.workload == "lenet" { 61 } else { 20 };
    Ok(job_demand(
        protocol,
        req.parties,
        RoleDemand {
            memory_bytes: 24 * weights + (1 << 20),
            ops: 2 * weights * items,
            bytes: 8 * weights + (64 << 10) * u64::from(req.inferences),
        },
        RoleDemand {
            memory_bytes: 64 << 20,
            ops: weights * u64::from(req.inferences),
            bytes: 8 * weights * u64::from(req.parties),
        },
        RoleDemand {
            memory_bytes: 16 << 20,
            ops: 0,
            bytes: 0,
        },
        rounds_per * req.inferences,
    ))
}

impl Core {
    /// Submits a job for `submitter`; it is placed at once if a committee is available.
    pub fn submit(
        &mut self,
        submitter: &PublicKey,
        req: SubmitRequest,
        demand: JobDemand,
        now: Millis,
    ) -> Result<JobView> {
        self.admit_submission(submitter, now)?;
        if let Some(stage) = &req.stage {
            if let Some(next) = stage.next {
                match self.jobs.get(&next) {
                    Some(e) if e.extra.submitter == submitter.0 => {}
                    _ => return Err(Error::NextStageNotOwned { job: next }),
                }
                // Its committee must be known now: this stage's manifest names its keys.
                self.deployed_spec(req.model.as_deref().unwrap_or_default(), &req)?;
            }
        }
        let id = self.next_job;
        self.next_job += 1;
        let mut policy = self.config.policy();
        policy.timeouts.running_ms = self.config.running_timeout_for(&demand);
        let job = Job::new(JobId(id), vec![demand], rand::random(), policy, now);
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
        self.job_view(id)
    }

    /// Deploys (or, for its owner, redeploys) a model's public part. The architecture must parse and
    /// build; the id cannot be checked here (the weights never come here) and binds the sealed shares.
    pub fn deploy(
        &mut self,
        owner: &PublicKey,
        req: DeployRequest,
        now: Millis,
    ) -> Result<ModelView> {
        if !req.onnx && req.onnx_file.is_some() {
            return Err(Error::malformed(
                "onnx_file",
                "only an ONNX deployment has a file record",
            ));
        }
        let name = match &req.pretrained {
            _ if req.onnx => {
                check_onnx_fields(&req)?;
                veil_node::onnx_model::ONNX_WORKLOAD.to_string()
            }
            Some(_) => check_pretrained(&req)?.to_string(),
            None => check_deployment(&req)?.name,
        };
        if let Some(old) = self.models.get(&req.id) {
            if old.owner != owner.to_string() {
                return Err(Error::ModelOwnedByOther { model: req.id });
            }
        }
        let view = ModelView {
            id: req.id.clone(),
            name,
            deployment: req,
            owner: owner.to_string(),
            deployed_at_ms: now,
        };
        self.dirty_records.push((
            format!("{MODEL_RECORD}/{}", view.id),
            serde_json::to_vec(&view).map_err(|e| Error::record("model", e))?,
        ));
        self.models.insert(view.id.clone(), view.clone());
        tracing::info!(model = %view.id, name = %view.name, "model deployed");
        Ok(view)
    }

    /// The manifest's model of a job on deployed model `id`: the whole model, or its stage with the
    /// stage's hand-off to the next stage's committee.
    pub(super) fn deployed_spec(&self, id: &str, req: &SubmitRequest) -> Result<DeployedModel> {
        let m = self.models.get(id).ok_or_else(|| Error::UnknownModel {
            model: id.to_string(),
        })?;
        if m.deployment.onnx {
            if req.stage.is_some() {
                return Err(Error::malformed("stage", "an ONNX job runs in one stage"));
            }
            // The file's id and size only: every member fetches the file, checks both and imports it.
            let file = check_onnx_fields(&m.deployment).map_err(|e| Error::record("model", e))?;
            return Ok(DeployedModel {
                id: m.id.clone(),
                architecture: String::new(),
                handoff: None,
                senders: 0,
                file_bytes: file.bytes,
            });
        }
        if m.deployment.pretrained.is_some() {
            if req.stage.is_some() {
                return Err(Error::malformed(
                    "stage",
                    "an encoder job runs in one stage",
                ));
            }
            // Its architecture is its files: every party loads them and checks them against the id.
            return Ok(DeployedModel {
                id: m.id.clone(),
                architecture: String::new(),
                handoff: None,
                senders: 0,
                file_bytes: 0,
            });
        }
        let Some(stage) = &req.stage else {
            return Ok(DeployedModel {
                id: m.id.clone(),
                architecture: m.deployment.architecture.clone(),
                handoff: None,
                senders: 0,
                file_bytes: 0,
            });
        };
        let architecture = self.job_architecture(req)?;
        let handoff = match stage.next {
            None => None,
            Some(next) => {
                let e = self
                    .jobs
                    .get(&next)
                    .ok_or(Error::UnknownJob { job: next })?;
                let a = match (&e.extra.attempt, e.job.phase()) {
                    (Some(a), Phase::Scheduled) => a,
                    _ => return Err(wrong_phase(next, e.job.phase(), "scheduled")),
                };
                let next_stage = e
                    .extra
                    .request
                    .stage
                    .as_ref()
                    .ok_or_else(|| Error::NotAStage { job: next })?;
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
                                .ok_or_else(|| {
                                    Error::invariant(format!("node {p} has no sealing key"))
                                })
                        })
                        .collect::<Result<_>>()?,
                })
            }
        };
        Ok(DeployedModel {
            id: stage_model_id(id, stage.start, stage.end),
            architecture: serde_json::to_string(&architecture).map_err(Error::invariant)?,
            handoff,
            senders: stage.senders,
            file_bytes: 0,
        })
    }

    /// The pretrained encoder a job runs, if its model is one.
    pub fn job_encoder(&self, req: &SubmitRequest) -> Result<Option<String>> {
        let Some(id) = req.model.as_deref() else {
            return Ok(None);
        };
        let m = self.models.get(id).ok_or_else(|| Error::UnknownModel {
            model: id.to_string(),
        })?;
        Ok(m.deployment.pretrained.clone())
    }

    /// What the record of the ONNX model a job runs keeps of its file, if its model is one.
    pub fn job_onnx(&self, req: &SubmitRequest) -> Result<Option<OnnxFile>> {
        let Some(id) = req.model.as_deref() else {
            return Ok(None);
        };
        let m = self.models.get(id).ok_or_else(|| Error::UnknownModel {
            model: id.to_string(),
        })?;
        if !m.deployment.onnx {
            return Ok(None);
        }
        check_onnx_fields(&m.deployment)
            .map(Some)
            .map_err(|e| Error::record("model", e))
    }

    /// What the record of deployed ONNX model `id` keeps of its file; unknown if there is no such ONNX
    /// model.
    pub fn onnx_model(&self, id: &str) -> Result<OnnxFile> {
        let unknown = || Error::UnknownModel {
            model: id.chars().take(80).collect(),
        };
        let m = self
            .models
            .get(id)
            .or_else(|| self.models.get(&id.to_ascii_lowercase()))
            .ok_or_else(unknown)?;
        if !m.deployment.onnx {
            return Err(unknown());
        }
        check_onnx_fields(&m.deployment).map_err(|e| Error::record("model", e))
    }

    /// The architecture a job on a deployed model runs: the model's, or its stage's.
    pub fn job_architecture(&self, req: &SubmitRequest) -> Result<Architecture> {
        let id = req.model.as_deref().ok_or(Error::NotDeployedJob)?;
        let whole = self.model_architecture(id)?;
        match &req.stage {
            None => Ok(whole),
            Some(s) => veil_engine::model_file::stage_architecture(&whole, s.start..s.end)
                .map_err(|e| Error::malformed("stage", e)),
        }
    }

    /// The split of deployed model `id` into stages under `max_stage_memory_bytes`.
    pub fn model_stages(&self, id: &str) -> Result<StagesView> {
        stages_of(
            id,
            &self.model_architecture(id)?,
            self.config.max_stage_memory_bytes,
        )
    }

    /// Every deployed model.
    pub fn models(&self) -> Vec<ModelView> {
        self.models.values().cloned().collect()
    }

    /// The architecture of deployed model `id`.
    pub fn model_architecture(&self, id: &str) -> Result<Architecture> {
        let m = self.models.get(id).ok_or_else(|| Error::UnknownModel {
            model: id.to_string(),
        })?;
        serde_json::from_str(&m.deployment.architecture).map_err(|e| Error::record("model", e))
    }

    /// Job `job`, which `key` must have submitted.
    pub(crate) fn owned(&self, key: &PublicKey, job: u64) -> Result<&Entry> {
        let e = self.jobs.get(&job).ok_or(Error::UnknownJob { job })?;
        if e.extra.submitter != key.0 {
            return Err(Error::NotSubmitter { job });
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
        bytes: Vec<u8>,
        now: Millis,
    ) -> Result<()> {
        let e = self.owned(key, job)?;
        let a = match &e.extra.attempt {
            Some(a) if a.number == attempt && e.job.phase() == Phase::Scheduled => a,
            _ => return Err(Error::StaleAttempt { job, attempt }),
        };
        if party >= a.parties.len() {
            return Err(Error::NoSuchParty { party });
        }
        if let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.extra.attempt.as_mut())
        {
            a.inputs[party] = true;
        }
        self.dirty_jobs.insert(job);
        self.write_blob(
            BlobKey {
                job,
                attempt,
                dir: Direction::Input,
                index: party,
            },
            bytes,
        );
        self.maybe_start(job, now)?;
        Ok(())
    }

    /// Cancels a job (its submitter); its attempt's blobs are deleted.
    pub fn cancel(&mut self, key: &PublicKey, job: u64, now: Millis) -> Result<JobView> {
        self.owned(key, job)?;
        let Some(e) = self.jobs.get_mut(&job) else {
            return Err(Error::UnknownJob { job });
        };
        let fx = e.job.apply(Event::Cancel, now).map_err(Error::NotAllowed)?;
        if let Some(a) = e.extra.attempt.take() {
            self.delete_blobs(BlobDelete::Attempt {
                job,
                attempt: a.number,
            });
        }
        self.apply_effects(fx, now);
        self.dirty_jobs.insert(job);
        self.job_view(job)
    }

    /// Counts a submission of `key` at `now` against `submissions_per_minute`.
    /// Counts a submission of `key` at `now` against `submissions_per_minute`.
    pub(super) fn admit_submission(&mut self, key: &PublicKey, now: Millis) -> Result<()> {
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
            return Err(Error::RateLimited { limit });
        }
        window.push_back(now);
        Ok(())
    }
}
