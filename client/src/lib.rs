//! veil's client SDK (`veil-client`): the client's side of the coordinator. Deploy a model's public part, submit a job, share the inputs
//! (and, as model owner, the weights) for whichever committee the coordinator gives each attempt, seal each
//! party's shares to that party's node, wait, fetch the sealed output shares, open and reconstruct them.
//!
//! What the client checks before it seals anything (so that the coordinator, which relays every blob, only
//! ever holds ciphertext it cannot open, and cannot redirect a share to a key of its choosing unnoticed):
//! - the attempt's committee manifest is signed by the pinned coordinator key, names this client's output
//!   key, and describes the job that was asked for (model, batch, inferences, parties);
//! - each party's X25519 sealing key carries an attestation by that party's Ed25519 identity (the key the
//!   manifest pins for the party's QUIC/TLS links).
//!
//! Invariants: shares are drawn fresh for every attempt (a retried job never reuses a committee's shares);
//! each sealed blob is bound to (purpose, the attempt's run id, the party index, the model id), so a node
//! can open only its own and only in that attempt; inputs are checked (shape, NaN/inf) before anything is
//! sent; nothing here logs a share, an input or an output.

#![forbid(unsafe_code)]

pub mod embed;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_engine::bert::private::PrivateBert;
use veil_engine::local::deal_weights;
use veil_engine::model_file::ModelFile;
use veil_engine::{Model, Plan, WeightMode};
use veil_node::envelope::{OpeningKey, Purpose, SealingKey};
use veil_node::evidence::{self, EvidenceKind};
use veil_node::inbox::{binding_for, check_attestation, open_blob, seal_blob};
use veil_node::manifest::{Manifest, SignedManifest};
use veil_node::receipt::{commit_blobs, ReceiptFile};
use veil_node::stage::{StageInput, StageOutput};
use veil_node::wire::{
    AuthWords, Bytes, OwnerMaterial, PartyReport, RunRequest, WireWeight, Words,
};
use veil_node::PublicKey;
use veil_protocols::protocol::Protocol;
use veil_protocols::ring::FixedPoint;
use veil_protocols::share::{reconstruct, share};

use veil_node::api::{
    self, CommitteeView, DeployRequest, JobView, ModelView, ReceiptEntry, StageRequest,
    SubmitRequest,
};
pub use veil_node::api_client::{ApiClient, CallError};

pub mod chat;
pub use chat::{
    ChatCommittee, ChatError, ChatModelFile, ChatOptions, ChatTurn, FinishReason, Message, Sampling,
};

/// The result of a job run through the coordinator.
pub struct Finished {
    /// The job's final status (history, attempts, committee).
    pub job: JobView,
    /// One output vector per inference.
    pub outputs: Vec<Vec<f32>>,
    /// Each party's report (public measurements: latency, bytes, rounds per inference).
    pub reports: Vec<PartyReport>,
    /// `spdz2k`: the verifier's receipt (`veil_node::receipt::ReceiptFile` JSON), checked: signed by the
    /// committee's verifier, over this job's manifest, and committing to exactly the ciphertexts this
    /// client uploaded and downloaded.
    pub receipt: Option<String>,
}

/// TEST ONLY fault injection on a client's sealed inputs, for the end-to-end tests of the nodes' checks
/// (`veil infer --insecure-tamper`). Never set in production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// Flip one bit of party 0's sealed blob.
    FlipBit,
    /// Give party 0 the blob sealed for party 1 and party 1 party 0's (shares sent to the wrong node).
    SwapParties,
    /// Write each attempt's sealed blobs to this directory (`party-{i}.blob`), for a later replay.
    Keep(std::path::PathBuf),
    /// Upload the blobs kept in this directory instead of fresh ones (replayed ciphertext of another job).
    Replay(std::path::PathBuf),
}

impl std::str::FromStr for Tamper {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "flip-bit" => Ok(Tamper::FlipBit),
            None if s == "swap-parties" => Ok(Tamper::SwapParties),
            Some(("keep", dir)) => Ok(Tamper::Keep(dir.into())),
            Some(("replay", dir)) => Ok(Tamper::Replay(dir.into())),
            _ => Err(format!(
                "{s:?}: use flip-bit, swap-parties, keep:DIR or replay:DIR"
            )),
        }
    }
}

impl Tamper {
    fn apply(&self, blobs: &mut [Vec<u8>]) -> Result<()> {
        match self {
            Tamper::FlipBit => {
                if let Some(last) = blobs.first_mut().and_then(|b| b.last_mut()) {
                    *last ^= 1;
                }
            }
            Tamper::SwapParties => {
                if blobs.len() >= 2 {
                    blobs.swap(0, 1);
                }
            }
            Tamper::Keep(dir) => {
                std::fs::create_dir_all(dir)?;
                for (i, b) in blobs.iter().enumerate() {
                    std::fs::write(dir.join(format!("party-{i}.blob")), b)?;
                }
            }
            Tamper::Replay(dir) => {
                for (i, b) in blobs.iter_mut().enumerate() {
                    *b = std::fs::read(dir.join(format!("party-{i}.blob")))?;
                }
            }
        }
        Ok(())
    }
}

/// How long a status request may be held: [`JOB_WAIT`], less near the deadline.
fn wait_ms(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    u64::try_from(JOB_WAIT.min(left).as_millis()).unwrap_or(0)
}

/// Between two status requests of a job: if `view` is the status `last` was (the request asked at `asked`
/// was not held, or was held to its end), the rest of [`JOB_POLL`] passes before the next.
fn pause_if_unchanged(last: Option<&JobView>, view: &JobView, asked: Instant) {
    if last.is_some_and(|l| api::JobWait::past(l, 0).unchanged(view)) {
        std::thread::sleep(JOB_POLL.saturating_sub(asked.elapsed()));
    }
}

/// The result of a staged job.
pub struct StagedFinished {
    /// The stages' jobs, first to last.
    pub jobs: Vec<u64>,
    /// One output vector per inference.
    pub outputs: Vec<Vec<f32>>,
}

/// How often a client asks for the status of a job it waits for where the coordinator does not hold the
/// request (an older coordinator, or no room to hold it): each phase change (scheduled, done) is seen
/// within this, so it adds at most this much to a job's time, twice.
const JOB_POLL: Duration = Duration::from_millis(20);

/// How long a client lets the coordinator hold a status request of a job it waits for
/// ([`api::job_wait`]): a phase change reaches it as it happens.
const JOB_WAIT: Duration = Duration::from_secs(2);

/// A client of the coordinator: its TLS identity, the pinned coordinator key, and the X25519 key its
/// output shares are sealed to.
pub struct Client {
    api: ApiClient,
    coordinator: PublicKey,
    key: OpeningKey,
    /// TEST ONLY: see [`Tamper`].
    pub tamper: Option<Tamper>,
}

impl Client {
    /// A client over `api` (which pins `coordinator`), opening outputs with `key`.
    pub fn new(api: ApiClient, coordinator: PublicKey, key: OpeningKey) -> Client {
        Client {
            api,
            coordinator,
            key,
            tamper: None,
        }
    }

    /// The API client (for status and listing calls).
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// The key parties seal their output shares to.
    pub fn output_key(&self) -> SealingKey {
        self.key.public()
    }

    /// Deploys `file`'s public part (architecture and id); the weights stay with the caller, who deals
    /// them to each job's committee (sealed), or seals them whole to each party when `weights` is public.
    pub fn deploy(
        &self,
        file: &ModelFile,
        weights: WeightMode,
        parties: u8,
        frac_bits: u32,
        protocol: &str,
    ) -> Result<ModelView> {
        let request = DeployRequest {
            id: file.id().to_string(),
            architecture: serde_json::to_string(file.architecture())?,
            weights: weight_name(weights).into(),
            parties,
            frac_bits,
            protocol: protocol.to_string(),
            pretrained: None,
            onnx: false,
            onnx_file: None,
        };
        Ok(self.api.post_json(api::MODELS, &request)?)
    }

    /// Deploys pretrained encoder `name` (public weights) under model `id`, the hash of its files
    /// (`veil_engine::bert::pretrained::model_id`): every party checks its own copy against it.
    pub fn deploy_pretrained(
        &self,
        name: &str,
        id: &str,
        parties: u8,
        frac_bits: u32,
        protocol: &str,
    ) -> Result<ModelView> {
        let request = DeployRequest {
            id: id.to_string(),
            architecture: String::new(),
            weights: weight_name(WeightMode::Public).into(),
            parties,
            frac_bits,
            protocol: protocol.to_string(),
            pretrained: Some(name.to_string()),
            onnx: false,
            onnx_file: None,
        };
        Ok(self.api.post_json(api::MODELS, &request)?)
    }

    /// Deploys the ONNX file `bytes` (self-contained: weights inside, public to the parties) under its
    /// SHA-256, uploading the file itself (`PUT /v1/models/{id}/onnx`): the coordinator checks the hash,
    /// imports it once, refuses what veil cannot run and stores it; each job's manifest names it by id
    /// and size, and every member fetches it and checks both. Refuses a file over
    /// `veil_node::onnx_model::MAX_ONNX_BYTES` before sending.
    pub fn deploy_onnx(
        &self,
        bytes: &[u8],
        parties: u8,
        frac_bits: u32,
        protocol: &str,
    ) -> Result<ModelView> {
        veil_node::onnx_model::check_size(bytes.len() as u64)?;
        let id = veil_node::onnx_model::model_id(bytes);
        self.upload_onnx(&id, bytes.to_vec(), parties, frac_bits, protocol)
    }

    /// Uploads `file` as the ONNX file of model `id` with no check here (the coordinator checks): what
    /// [`Client::deploy_onnx`] sends, and how the tests send what an honest client would not.
    pub fn upload_onnx(
        &self,
        id: &str,
        file: Vec<u8>,
        parties: u8,
        frac_bits: u32,
        protocol: &str,
    ) -> Result<ModelView> {
        ensure!(
            protocol.bytes().all(|b| b.is_ascii_alphanumeric()),
            "protocol {protocol:?}: letters and digits only"
        );
        let path = format!(
            "{}?parties={parties}&frac_bits={frac_bits}&protocol={protocol}",
            api::model_onnx(id)
        );
        Ok(self.api.put_bytes_json(&path, file)?)
    }

    /// The file of deployed ONNX model `id` of `size` bytes, fetched from the coordinator and checked
    /// (size and SHA-256) against them before it is returned.
    pub fn onnx_file(&self, id: &str, size: u64) -> Result<Vec<u8>> {
        veil_node::onnx_model::check_id(id)?;
        veil_node::onnx_model::check_size(size)?;
        let bytes = self
            .api
            .get_bytes_bounded(&api::model_onnx(id), veil_node::onnx_model::MAX_ONNX_BYTES)?;
        veil_node::onnx_model::check_file(&bytes, id, Some(size))?;
        Ok(bytes)
    }

    /// Runs `inputs` (each the graph's whole input, f32) through deployed ONNX model `model` (the graph
    /// this client imported from the deployment, which `request` names): one inference per input, shared
    /// (semi2k) or published under the dealer's masks (spdz2k, receipt checked); returns the outputs.
    pub fn run_onnx(
        &self,
        request: SubmitRequest,
        model: &veil_engine::onnx::PrivateGraph,
        inputs: &[Vec<f32>],
        timeout: Duration,
        mut progress: impl FnMut(&JobView),
    ) -> Result<Finished> {
        ensure!(
            inputs.len() == request.inferences as usize && request.batch == 1,
            "{} inputs for {} inferences of batch {}",
            inputs.len(),
            request.inferences,
            request.batch
        );
        let encoded: Vec<Vec<u64>> = inputs
            .iter()
            .map(|x| model.client_input(x))
            .collect::<std::result::Result<_, _>>()?;
        self.run_encoded(
            request,
            Program::Encoder,
            &encoded,
            model.config().fixed_point,
            timeout,
            &mut progress,
        )
    }

    /// Submits `request` (which must describe `model` and `plan`), runs `inputs` through whatever
    /// committees the coordinator picks, and returns the reconstructed outputs. `progress` sees every
    /// status polled. The request's output key is set to this client's.
    #[allow(clippy::too_many_arguments)]
    pub fn run_job(
        &self,
        request: SubmitRequest,
        model: &Model,
        plan: &Plan,
        inputs: &[Vec<f32>],
        timeout: Duration,
        mut progress: impl FnMut(&JobView),
    ) -> Result<Finished> {
        ensure!(
            inputs.len() == request.inferences as usize,
            "{} inputs for {} inferences",
            inputs.len(),
            request.inferences
        );
        let batch = request.batch as usize;
        // Everything about the inputs is checked before the first byte leaves.
        let fp = plan.fixed_point;
        let mut encoded = Vec::with_capacity(inputs.len());
        for x in inputs {
            model.check_input(x, batch)?;
            encoded.push(fp.encode(x)?);
        }
        self.run_encoded(
            request,
            Program::Plan(plan),
            &encoded,
            fp,
            timeout,
            &mut progress,
        )
    }

    /// Embeds `sequences` (token ids, all of one length: the request's `batch`; one inference each) with
    /// the deployed pretrained encoder the request names: this client looks the tokens up in `model`'s
    /// public tables and secret-shares the vectors (semi2k) or publishes them under the dealer's masks
    /// (spdz2k, receipt checked) for whichever committee the coordinator picks, and returns the
    /// L2-normalised embeddings. The parties load the encoder's files themselves, checked against the id.
    pub fn run_embed(
        &self,
        request: SubmitRequest,
        model: &PrivateBert,
        sequences: &[Vec<u32>],
        timeout: Duration,
        mut progress: impl FnMut(&JobView),
    ) -> Result<Finished> {
        ensure!(
            sequences.len() == request.inferences as usize,
            "{} sequences for {} inferences",
            sequences.len(),
            request.inferences
        );
        ensure!(
            sequences.iter().all(|s| s.len() == request.batch as usize),
            "every sequence of one job must have the request's {} tokens",
            request.batch
        );
        let encoded: Vec<Vec<u64>> = sequences
            .iter()
            .map(|ids| model.client_input(ids))
            .collect::<std::result::Result<_, _>>()?;
        self.run_encoded(
            request,
            Program::Encoder,
            &encoded,
            model.config().fixed_point,
            timeout,
            &mut progress,
        )
    }

    /// Runs `encoded` (checked, fixed-point inputs, one per inference) through the committees of
    /// `request`'s attempts and opens the outputs.
    fn run_encoded(
        &self,
        mut request: SubmitRequest,
        program: Program<'_>,
        encoded: &[Vec<u64>],
        fp: FixedPoint,
        timeout: Duration,
        progress: &mut dyn FnMut(&JobView),
    ) -> Result<Finished> {
        let inferences = encoded.len();
        request.output_key = Some(self.output_key().to_string());
        let submitted: JobView = self.api.post_json(api::JOBS, &request)?;
        let id = submitted.id;
        let deadline = Instant::now() + timeout;
        // The current attempt's sealed blobs (drawn once per attempt, so every party gets shares of one
        // sharing) and which of them the coordinator has.
        let mut pending: Option<(u32, Vec<Vec<u8>>, Vec<bool>)> = None;
        // spdz2k: the attempt and digest of the owner material this client received (its receipt must
        // record the same).
        let mut owner_seen: Option<(u32, [u8; 32])> = None;
        // The submission's reply is the first status (no request for it); each later request waits
        // past the status last seen.
        let mut first = Some(submitted);
        let mut last: Option<JobView> = None;
        loop {
            let asked = Instant::now();
            // While an input of the attempt last seen is still to upload, the status is asked at once;
            // otherwise waiting is all that is left, and the request may be held until the job moves.
            let uploads_due = match (&pending, &last) {
                (Some(p), Some(v)) => p.0 == v.attempt && !p.2.iter().all(|&sent| sent),
                _ => false,
            };
            let view: JobView = match first.take() {
                Some(v) => v,
                None => {
                    let path = match last.as_ref().filter(|_| !uploads_due) {
                        Some(v) => api::job_wait(id, &api::JobWait::past(v, wait_ms(deadline))),
                        None => api::job(id),
                    };
                    match self.api.get_json(&path) {
                        Ok(v) => v,
                        Err(e) if e.status().is_none() && Instant::now() < deadline => {
                            // The coordinator may be restarting: keep asking.
                            tracing::warn!("job {id}: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            progress(&view);
            match view.phase.as_str() {
                "scheduled" => {
                    let spdz2k = Protocol::parse(&request.protocol) == Some(Protocol::Spdz2k);
                    if pending.as_ref().map(|p| p.0) != Some(view.attempt)
                        && (!spdz2k || view.owner_ready)
                    {
                        let manifest = self.checked_manifest(&view, &request)?;
                        let committee = view
                            .committee
                            .as_ref()
                            .context("scheduled without committee")?;
                        let keys = attested_keys(&manifest, committee)?;
                        let runs = match (spdz2k, program) {
                            (true, _) => {
                                let run = run_id_of(&view)?;
                                let (owner, digest) =
                                    self.owner_material(id, view.attempt, &manifest, &run)?;
                                owner_seen = Some((view.attempt, digest));
                                match program {
                                    Program::Plan(plan) => {
                                        published_runs(plan, &manifest, encoded, &owner)?
                                    }
                                    Program::Encoder => {
                                        published_encoder_runs(&manifest, encoded, &owner)?
                                    }
                                }
                            }
                            // rep3, rep3m: replicated shares, party i holding components i and i + 1.
                            (false, program)
                                if matches!(
                                    Protocol::parse(&request.protocol),
                                    Some(Protocol::Rep3 | Protocol::Rep3m)
                                ) =>
                            {
                                record_inputs(encoded);
                                let plan = match program {
                                    Program::Plan(plan) => Some(plan),
                                    Program::Encoder => None,
                                };
                                veil_node::client::replicated_runs(
                                    manifest.job,
                                    plan,
                                    encoded,
                                    &mut StdRng::from_os_rng(),
                                )
                            }
                            (false, Program::Plan(plan)) => shared_runs(plan, &manifest, encoded)?,
                            (false, Program::Encoder) => shared_encoder_runs(&manifest, encoded)?,
                        };
                        let mut blobs = seal_runs(&manifest, &keys, runs)?;
                        if let Some(t) = &self.tamper {
                            tracing::warn!("TEST ONLY: tampering with the sealed inputs ({t:?})");
                            t.apply(&mut blobs)?;
                        }
                        pending = Some((view.attempt, blobs, vec![false; manifest.parties.len()]));
                    }
                    if let Some((attempt, blobs, sent)) = pending.as_mut() {
                        // The parties' inputs go up together (each on its own connection).
                        for (party, outcome) in self.upload_inputs(id, *attempt, blobs, sent) {
                            match outcome {
                                Ok(()) => sent[party] = true,
                                // The attempt moved on (a member failed): the next status says where to.
                                Err(e) if e.status() == Some(409) => {}
                                Err(e) if e.status().is_none() => {
                                    tracing::warn!(
                                        "job {id}: uploading party {party}'s input: {e}"
                                    );
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                }
                "done" => {
                    let manifest = self.checked_manifest(&view, &request)?;
                    let run = run_id_of(&view)?;
                    let (blobs, reports) = self.fetch_outputs(id, &manifest, &run, inferences)?;
                    let protocol = Protocol::parse(&request.protocol);
                    // The inputs this client sealed for the attempt that finished (a receipt binds them).
                    let uploaded_inputs = || {
                        pending
                            .as_ref()
                            .filter(|p| p.0 == view.attempt)
                            .map(|p| p.1.as_slice())
                            .context("done, but not on the attempt this client sealed inputs for")
                    };
                    let (outputs, receipt) = if protocol == Some(Protocol::Spdz2k) {
                        let uploaded = uploaded_inputs()?;
                        let owner = owner_seen
                            .filter(|o| o.0 == view.attempt)
                            .map(|o| o.1)
                            .context("done, but without the owner material of this attempt")?;
                        let receipt =
                            self.checked_receipt(id, &manifest, uploaded, &blobs, Some(&owner))?;
                        // Alpha from the parties' reports (released after their checks), not from
                        // the dealer: this client never held it while the parties computed.
                        let key = veil_node::wire::output_key(&reports)
                            .context("a party released no MAC key share")?;
                        (
                            open_authenticated(&reports, key, fp, inferences)?,
                            Some(receipt),
                        )
                    } else if protocol == Some(Protocol::Rep3m) {
                        // The parties released their shares after their checks; the verifier checked
                        // their views and signed the receipt. No dealer, so no owner material.
                        let uploaded = uploaded_inputs()?;
                        let receipt =
                            self.checked_receipt(id, &manifest, uploaded, &blobs, None)?;
                        let shares = veil_node::client::reported_outputs(&reports);
                        (
                            veil_node::client::open_rep3(&shares, inferences, fp)?,
                            Some(receipt),
                        )
                    } else if protocol == Some(Protocol::Rep3) {
                        let shares = veil_node::client::reported_outputs(&reports);
                        (veil_node::client::open_rep3(&shares, inferences, fp)?, None)
                    } else {
                        (reconstruct_outputs(&reports, fp, inferences)?, None)
                    };
                    return Ok(Finished {
                        job: view,
                        outputs,
                        reports,
                        receipt,
                    });
                }
                "failed" => bail!(
                    "job {id} failed: {}",
                    view.failure.as_deref().unwrap_or("unknown cause")
                ),
                _ => {}
            }
            if Instant::now() >= deadline {
                bail!(
                    "job {id} not done within {timeout:?} (phase {})",
                    view.phase
                );
            }
            pause_if_unchanged(last.as_ref(), &view, asked);
            last = Some(view);
        }
    }

    /// Runs `inputs` (already prepared: preprocessed and checked) through deployed model `model_id`, split
    /// into `stages` (layer ranges, from `GET /v1/models/{id}/stages`), one committee per stage (semi2k).
    /// The stages are submitted last first (each stage's manifest names the next stage's parties); this
    /// client deals each stage's weights to its own committee only, checks that each stage hands its
    /// re-randomised output shares to exactly the next stage's attested parties, and relays the sealed
    /// hand-offs it cannot open. Staged jobs are not retried: a stage whose committee changes fails the job.
    #[allow(clippy::too_many_arguments)]
    pub fn run_staged(
        &self,
        model_id: &str,
        file: &ModelFile,
        deployment: &DeployRequest,
        stages: &[[usize; 2]],
        inputs: &[Vec<f32>],
        timeout: Duration,
        mut progress: impl FnMut(usize, &JobView),
    ) -> Result<StagedFinished> {
        ensure!(!stages.is_empty(), "no stages");
        ensure!(
            Protocol::parse(&deployment.protocol) == Some(Protocol::Semi2k),
            "staged jobs run semi2k (this model is deployed for {})",
            deployment.protocol
        );
        let device = burn::tensor::Device::flex();
        let fp = veil_protocols::ring::FixedPoint::new(deployment.frac_bits)?;
        let mode = match deployment.weights.as_str() {
            "public" => WeightMode::Public,
            _ => WeightMode::Shared,
        };
        let parts: Vec<ModelFile> = stages
            .iter()
            .map(|[s, e]| file.stage(*s..*e, &device))
            .collect::<Result<_, _>>()?;
        let plans: Vec<Plan> = parts
            .iter()
            .map(|p| Plan::compile(p.model(), fp, mode))
            .collect::<Result<_, _>>()?;
        let mut encoded = Vec::with_capacity(inputs.len());
        for x in inputs {
            parts[0].model().check_input(x, 1)?;
            encoded.push(fp.encode(x)?);
        }
        let deadline = Instant::now() + timeout;
        // Submit the stages last first; each waits for its successor's committee.
        let mut jobs: Vec<(u64, SubmitRequest)> = Vec::with_capacity(stages.len());
        for (k, [start, end]) in stages.iter().enumerate().rev() {
            let request = SubmitRequest {
                workload: "deployed".into(),
                model_seed: 0,
                weights: deployment.weights.clone(),
                frac_bits: deployment.frac_bits,
                batch: 1,
                inferences: inputs.len() as u32,
                parties: deployment.parties,
                model: Some(model_id.to_string()),
                output_key: Some(self.output_key().to_string()),
                protocol: Protocol::Semi2k.to_string(),
                stage: Some(StageRequest {
                    start: *start,
                    end: *end,
                    next: jobs.last().map(|(id, _)| *id),
                    senders: if k == 0 {
                        0
                    } else {
                        u32::from(deployment.parties)
                    },
                }),
                threads: None,
                shaping: None,
            };
            let view: JobView = self.api.post_json(api::JOBS, &request)?;
            progress(k, &view);
            let view = self.wait_phase(view.id, deadline, |v| v.phase != "submitted")?;
            progress(k, &view);
            ensure!(
                view.phase == "scheduled",
                "stage {k}: job {} is {}",
                view.id,
                view.phase
            );
            jobs.push((view.id, request));
        }
        jobs.reverse();
        // Run them first to last.
        let mut handoffs: Vec<Vec<Bytes>> = Vec::new();
        let mut last = None;
        for (k, (id, request)) in jobs.iter().enumerate() {
            let view = self.wait_phase(*id, deadline, |v| v.phase != "submitted")?;
            ensure!(
                view.phase == "scheduled",
                "stage {k}: job {id} is {}",
                view.phase
            );
            let manifest = self.checked_manifest(&view, request)?;
            let committee = view
                .committee
                .as_ref()
                .context("scheduled without committee")?;
            let keys = attested_keys(&manifest, committee)?;
            if let Some((next_id, next_request)) = jobs.get(k + 1) {
                // The hand-off must go to the next stage's parties and nowhere else.
                let next_view: JobView = self.api.get_json(&api::job(*next_id))?;
                let next_manifest = self.checked_manifest(&next_view, next_request)?;
                let next_committee = next_view.committee.as_ref().context("no committee")?;
                let next_keys = attested_keys(&next_manifest, next_committee)?;
                let handoff = manifest
                    .model
                    .deployed
                    .as_ref()
                    .and_then(|d| d.handoff.as_ref())
                    .context("a stage with a successor has no hand-off")?;
                ensure!(
                    handoff.keys == next_keys
                        && handoff.run == next_manifest.job
                        && handoff.model == next_manifest.model.binding_id(),
                    "stage {k} would hand its shares to someone other than stage {}'s parties",
                    k + 1
                );
            }
            // Stage k > 0 gets its inputs from the hand-offs: deal only its weights.
            let mut runs = shared_runs(&plans[k], &manifest, if k == 0 { &encoded } else { &[] })?;
            let blobs: Vec<Vec<u8>> = if k == 0 {
                seal_runs(&manifest, &keys, runs)?
            } else {
                ensure!(
                    handoffs.iter().all(|h| h.len() == keys.len()),
                    "the previous stage handed off to another number of parties"
                );
                runs.iter_mut().for_each(|r| r.inputs.clear());
                let staged: Vec<Vec<u8>> = runs
                    .into_iter()
                    .enumerate()
                    .map(|(j, run)| {
                        let input = StageInput {
                            run,
                            handoffs: handoffs.iter().map(|h| h[j].clone()).collect(),
                        };
                        let plain = zeroize::Zeroizing::new(postcard::to_stdvec(&input)?);
                        let binding = binding_for(&manifest, Purpose::InputShare, j);
                        Ok(seal_blob(&keys[j], &binding, &plain)?)
                    })
                    .collect::<Result<_>>()?;
                staged
            };
            for (party, blob) in blobs.into_iter().enumerate() {
                self.api
                    .put_bytes(&api::input_upload(*id, view.attempt, party), blob)?;
            }
            let done = self.wait_phase(*id, deadline, |v| {
                progress(k, v);
                matches!(v.phase.as_str(), "done" | "failed")
            })?;
            if done.phase == "failed" {
                bail!(
                    "stage {k} (job {id}) failed: {}",
                    done.failure.as_deref().unwrap_or("unknown cause")
                );
            }
            if done.attempt != view.attempt {
                bail!("stage {k} (job {id}) was rescheduled: staged jobs are not retried");
            }
            let n = manifest.parties.len();
            let run = run_id_of(&done)?;
            if k + 1 < jobs.len() {
                handoffs.clear();
                for party in 0..n {
                    let blob = self.api.get_bytes(&api::output_download(*id, party))?;
                    let blob = open_signed(&blob, EvidenceKind::Output, &run, &manifest, party)?;
                    let binding = binding_for(&manifest, Purpose::OutputShare, party);
                    let bytes = open_blob(&self.key, &binding, &blob)
                        .with_context(|| format!("stage {k}, party {party}'s sealed output"))?;
                    let out: StageOutput = postcard::from_bytes(&bytes)
                        .with_context(|| format!("stage {k}, party {party}'s output"))?;
                    handoffs.push(out.handoffs);
                }
            } else {
                let (_, reports) = self.fetch_outputs(*id, &manifest, &run, inputs.len())?;
                last = Some(reconstruct_outputs(
                    &reports,
                    plans[k].fixed_point,
                    inputs.len(),
                )?);
            }
        }
        Ok(StagedFinished {
            jobs: jobs.iter().map(|(id, _)| *id).collect(),
            outputs: last.context("no last stage")?,
        })
    }

    /// Uploads the inputs of attempt `attempt` not yet `sent`, one thread per party, and returns each
    /// upload's outcome by party.
    fn upload_inputs(
        &self,
        id: u64,
        attempt: u32,
        blobs: &[Vec<u8>],
        sent: &[bool],
    ) -> Vec<(usize, std::result::Result<(), CallError>)> {
        let api = &self.api;
        std::thread::scope(|scope| {
            let uploads: Vec<_> = blobs
                .iter()
                .enumerate()
                .filter(|(party, _)| !sent.get(*party).copied().unwrap_or(true))
                .map(|(party, blob)| {
                    let path = api::input_upload(id, attempt, party);
                    (
                        party,
                        scope.spawn(move || api.put_bytes(&path, blob.clone())),
                    )
                })
                .collect();
            uploads
                .into_iter()
                .map(|(party, upload)| {
                    let outcome = upload.join().unwrap_or_else(|_| {
                        Err(CallError::Transport {
                            address: String::new(),
                            message: "the upload's thread panicked".into(),
                        })
                    });
                    (party, outcome)
                })
                .collect()
        })
    }

    /// Waits until job `id`'s status satisfies `until` (or the deadline passes): after the first status,
    /// each request is held by the coordinator until the status changes ([`api::job_wait`]), so a change
    /// reaches the client as it happens; a status that comes back unchanged (the request was not held)
    /// is asked again after the rest of [`JOB_POLL`].
    fn wait_phase(
        &self,
        id: u64,
        deadline: Instant,
        mut until: impl FnMut(&JobView) -> bool,
    ) -> Result<JobView> {
        let mut last: Option<JobView> = None;
        loop {
            let asked = Instant::now();
            let path = match &last {
                Some(v) => api::job_wait(id, &api::JobWait::past(v, wait_ms(deadline))),
                None => api::job(id),
            };
            let view: JobView = self.api.get_json(&path)?;
            if until(&view) {
                return Ok(view);
            }
            if Instant::now() >= deadline {
                bail!("job {id} still {} at the deadline", view.phase);
            }
            pause_if_unchanged(last.as_ref(), &view, asked);
            last = Some(view);
        }
    }

    /// The attempt's manifest, checked as the module doc says.
    fn checked_manifest(&self, view: &JobView, request: &SubmitRequest) -> Result<Manifest> {
        let bytes = hex::decode(view.manifest.as_deref().context("no manifest")?)
            .context("manifest hex")?;
        let signed: SignedManifest = postcard::from_bytes(&bytes).context("manifest encoding")?;
        let manifest = signed
            .verify_by(&self.coordinator)
            .context("the attempt's manifest")?;
        ensure!(
            manifest.output_key == Some(self.output_key()),
            "the manifest seals outputs to another key"
        );
        ensure!(
            view.run_id.as_deref() == Some(manifest.job.to_string().as_str()),
            "the manifest names another run"
        );
        ensure!(
            manifest.batch == request.batch
                && manifest.inferences == request.inferences
                && manifest.parties.len() == usize::from(request.parties),
            "the manifest describes another job"
        );
        let model_ok = match (&request.model, &manifest.model.deployed) {
            (Some(id), Some(d)) => match &request.stage {
                Some(s) => d.id == api::stage_model_id(id, s.start, s.end),
                None => *id == d.id,
            },
            (None, None) => {
                manifest.model.workload == request.workload
                    && manifest.model.seed == request.model_seed
            }
            _ => false,
        };
        ensure!(model_ok, "the manifest runs another model");
        Ok(manifest)
    }

    /// Downloads and opens every party's sealed output report; returns the ciphertexts too (a receipt
    /// commits to them).
    fn fetch_outputs(
        &self,
        id: u64,
        manifest: &Manifest,
        run: &[u8; 32],
        inferences: usize,
    ) -> Result<(Vec<Vec<u8>>, Vec<PartyReport>)> {
        let n = manifest.parties.len();
        let mut blobs = Vec::with_capacity(n);
        let mut reports = Vec::with_capacity(n);
        // The parties' outputs come down together (each on its own connection), then are opened in order.
        let api = &self.api;
        let downloaded: Vec<std::result::Result<Vec<u8>, CallError>> =
            std::thread::scope(|scope| {
                let downloads: Vec<_> = (0..n)
                    .map(|party| {
                        scope.spawn(move || api.get_bytes(&api::output_download(id, party)))
                    })
                    .collect();
                downloads
                    .into_iter()
                    .map(|d| {
                        d.join().unwrap_or_else(|_| {
                            Err(CallError::Transport {
                                address: String::new(),
                                message: "the download's thread panicked".into(),
                            })
                        })
                    })
                    .collect()
            });
        for (party, blob) in downloaded.into_iter().enumerate() {
            let blob = blob?;
            let sealed = open_signed(&blob, EvidenceKind::Output, run, manifest, party)?;
            let binding = binding_for(manifest, Purpose::OutputShare, party);
            let bytes = open_blob(&self.key, &binding, &sealed)
                .with_context(|| format!("party {party}'s sealed output"))?;
            let report: PartyReport = postcard::from_bytes(&bytes)
                .with_context(|| format!("party {party}'s output report"))?;
            let got = report.outputs.len().max(report.auth_outputs.len());
            ensure!(
                got == inferences,
                "party {party} returned {got} outputs for {inferences} inferences"
            );
            blobs.push(blob);
            reports.push(report);
        }
        Ok((blobs, reports))
    }

    /// The dealer's owner material of a `spdz2k` attempt, opened.
    fn owner_material(
        &self,
        id: u64,
        attempt: u32,
        manifest: &Manifest,
        run: &[u8; 32],
    ) -> Result<(OwnerMaterial, [u8; 32])> {
        let blob = self.api.get_bytes(&api::owner_download(id, attempt))?;
        // The dealer's signature first: masks substituted on the way would let whoever chose them read
        // the inputs published under them.
        let (blob, record) = open_signed_record(
            &blob,
            EvidenceKind::OwnerMaterial,
            run,
            manifest,
            manifest.parties.len(),
        )?;
        let binding = binding_for(manifest, Purpose::OwnerMaterial, manifest.parties.len());
        let bytes = zeroize::Zeroizing::new(
            open_blob(&self.key, &binding, &blob).context("the dealer's sealed owner material")?,
        );
        let owner = postcard::from_bytes(&bytes).context("the dealer's owner material")?;
        Ok((owner, record.digest))
    }

    /// The job's receipt, checked: it verifies under the pinned coordinator key (manifest signature,
    /// signer = the committee's verifier, signature), covers this attempt's manifest, commits to the
    /// ciphertexts this client uploaded and downloaded, and records the owner material this client
    /// received (`owner`: its digest; `None` for a job without a dealer, `rep3m`).
    fn checked_receipt(
        &self,
        id: u64,
        manifest: &Manifest,
        uploaded: &[Vec<u8>],
        downloaded: &[Vec<u8>],
        owner: Option<&[u8; 32]>,
    ) -> Result<String> {
        let entry: ReceiptEntry = self.api.get_json(&api::job_receipt(id))?;
        let file = ReceiptFile::from_json(&entry.receipt).context("the job's receipt")?;
        let covered = file
            .verify(&self.coordinator)
            .context("the job's receipt does not verify")?;
        ensure!(
            covered.job == manifest.job,
            "the receipt covers another attempt"
        );
        let commit = |blobs: &[Vec<u8>]| commit_blobs(blobs.iter().map(|b| b.as_slice()));
        let body = &file.receipt.body;
        ensure!(
            body.input_commitment == commit(uploaded),
            "the receipt commits to other inputs than this client sealed"
        );
        ensure!(
            body.output_commitment == commit(downloaded),
            "the receipt commits to other outputs than this client received"
        );
        if let Some(owner) = owner {
            file.check_owner(manifest.parties.len(), owner)
                .context("the job's receipt")?;
        }
        Ok(entry.receipt)
    }
}

/// The run id evidence is bound to (`veil_node::evidence::run_id`): the hash of the attempt's signed
/// manifest as the job view carries it.
fn run_id_of(view: &JobView) -> Result<[u8; 32]> {
    let bytes =
        hex::decode(view.manifest.as_deref().context("no manifest")?).context("manifest hex")?;
    let signed: SignedManifest = postcard::from_bytes(&bytes).context("manifest encoding")?;
    evidence::run_id(&signed).context("the manifest's run id")
}

/// The most bytes of a signed blob the client opens.
const MAX_SIGNED_BLOB_BYTES: usize = 1 << 30;

/// Opens a blob signed as `kind` evidence by committee member `index` (a party, or the dealer at
/// `parties`): refuses it unless that member signed exactly these bytes for this run.
fn open_signed(
    blob: &[u8],
    kind: EvidenceKind,
    run: &[u8; 32],
    manifest: &Manifest,
    index: usize,
) -> Result<Vec<u8>> {
    open_signed_record(blob, kind, run, manifest, index).map(|(body, _)| body)
}

/// [`open_signed`], with the member's signed record of the blob.
fn open_signed_record(
    blob: &[u8],
    kind: EvidenceKind,
    run: &[u8; 32],
    manifest: &Manifest,
    index: usize,
) -> Result<(Vec<u8>, evidence::EvidenceRecord)> {
    let index = u32::try_from(index).context("member index")?;
    let key = evidence::member_key(manifest, index)?;
    evidence::open(blob, kind, run, index, &key, MAX_SIGNED_BLOB_BYTES)
        .with_context(|| format!("member {index}'s signed {}", kind.name()))
}

/// TEST ONLY (`veil_node::record`): the encoded plaintext inputs, the reference the privacy test searches
/// every received byte for. A no-op unless the recorder is on.
fn record_inputs(encoded: &[Vec<u64>]) {
    if veil_node::record::enabled() {
        for x in encoded {
            veil_node::record::write(
                veil_node::record::Kind::ClientInput,
                &[&veil_protocols::ring::to_bytes(x)],
            );
        }
    }
}

/// Each party's semi2k run: fresh additive shares of the weights and of every input.
fn shared_runs(plan: &Plan, manifest: &Manifest, encoded: &[Vec<u64>]) -> Result<Vec<RunRequest>> {
    let parties = manifest.parties.len();
    let mut rng = StdRng::from_os_rng();
    let mut input_shares: Vec<Vec<Words>> = (0..parties).map(|_| Vec::new()).collect();
    record_inputs(encoded);
    let recording = veil_node::record::enabled();
    for x in encoded {
        for (i, s) in share(x, parties, &mut rng)?.into_iter().enumerate() {
            if recording {
                veil_node::record::write(
                    veil_node::record::Kind::ClientShare,
                    &[
                        &manifest.parties[i].public_key.0,
                        &veil_protocols::ring::to_bytes(&s),
                    ],
                );
            }
            input_shares[i].push(Words(s));
        }
    }
    let weights = deal_weights(plan, parties, &mut rng)?;
    Ok(weights
        .into_iter()
        .zip(input_shares)
        .map(|(w, inputs)| {
            RunRequest::new(
                manifest.job,
                w.into_iter().map(WireWeight::from).collect(),
                inputs,
            )
        })
        .collect())
}

/// Each party's spdz2k run: the values published under the dealer's masks (`value - mask`, the same for
/// every party: the masks are uniformly random and known only to this client and the dealer, so the
/// published values reveal nothing to a party).
fn published_runs(
    plan: &Plan,
    manifest: &Manifest,
    encoded: &[Vec<u64>],
    owner: &OwnerMaterial,
) -> Result<Vec<RunRequest>> {
    let run = RunRequest::published(manifest.job, plan, encoded, owner)?;
    record_inputs(encoded);
    Ok(vec![run; manifest.parties.len()])
}

/// semi2k, pretrained encoder: each party's additive shares of the looked-up vectors; no weights (the
/// parties load the public encoder themselves).
fn shared_encoder_runs(manifest: &Manifest, encoded: &[Vec<u64>]) -> Result<Vec<RunRequest>> {
    let parties = manifest.parties.len();
    let mut rng = StdRng::from_os_rng();
    let mut input_shares: Vec<Vec<Words>> = (0..parties).map(|_| Vec::new()).collect();
    for x in encoded {
        for (i, s) in share(x, parties, &mut rng)?.into_iter().enumerate() {
            input_shares[i].push(Words(s));
        }
    }
    Ok(input_shares
        .into_iter()
        .map(|inputs| RunRequest::new(manifest.job, Vec::new(), inputs))
        .collect())
}

/// spdz2k, pretrained encoder: `x - r` against the dealer's input masks `r`, the same for every party.
fn published_encoder_runs(
    manifest: &Manifest,
    encoded: &[Vec<u64>],
    owner: &OwnerMaterial,
) -> Result<Vec<RunRequest>> {
    ensure!(
        owner.masks.len() == encoded.len()
            && owner
                .masks
                .iter()
                .zip(encoded)
                .all(|(m, x)| m.0.len() == x.len()),
        "the dealer's input masks do not match the sequences"
    );
    let published = encoded
        .iter()
        .zip(&owner.masks)
        .map(|(x, r)| Words(veil_protocols::ring::sub(x, &r.0)))
        .collect();
    let run = RunRequest::new(manifest.job, Vec::new(), published);
    Ok(vec![run; manifest.parties.len()])
}

/// What a job's committee runs, as far as the client prepares its inputs.
#[derive(Clone, Copy)]
enum Program<'a> {
    /// A compiled plan: the client deals (or seals) its weights.
    Plan(&'a Plan),
    /// A public-weight model the parties hold themselves (a pretrained encoder, an ONNX graph): inputs only.
    Encoder,
}

/// semi2k: the outputs reconstructed from the parties' additive shares.
fn reconstruct_outputs(
    reports: &[PartyReport],
    fp: FixedPoint,
    inferences: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut outputs = Vec::with_capacity(inferences);
    for k in 0..inferences {
        let shares: Vec<Vec<u64>> = reports.iter().map(|r| r.outputs[k].0.clone()).collect();
        ensure!(
            shares.iter().all(|s| s.len() == shares[0].len()),
            "output shares of inference {k} differ in length"
        );
        outputs.push(fp.decode(&reconstruct(&shares)?));
    }
    Ok(outputs)
}

/// spdz2k: the outputs opened from the parties' authenticated shares, each element's MAC checked under
/// the output key (a wrong share is an error, never a wrong output).
fn open_authenticated(
    reports: &[PartyReport],
    key: u128,
    fp: FixedPoint,
    inferences: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut outputs = Vec::with_capacity(inferences);
    for k in 0..inferences {
        let shares = reports
            .iter()
            .map(|r| r.auth_outputs.get(k).and_then(AuthWords::to_auth))
            .collect::<Option<Vec<_>>>()
            .context("a party reported missing or malformed authenticated outputs")?;
        let opened = veil_protocols::spdz2k::local::open_output(&shares, key)
            .context("the outputs' MACs do not verify")?;
        outputs.push(fp.decode(&opened));
    }
    Ok(outputs)
}

fn weight_name(mode: WeightMode) -> &'static str {
    match mode {
        WeightMode::Shared => "shared",
        WeightMode::Public => "public",
    }
}

/// Each party's X25519 key from the committee view, checked against its attestation by the node the
/// manifest names.
fn attested_keys(manifest: &Manifest, committee: &CommitteeView) -> Result<Vec<SealingKey>> {
    let parties = manifest.parties.len();
    ensure!(
        committee.parties.len() == parties,
        "the committee view and the manifest disagree"
    );
    let mut keys = Vec::with_capacity(parties);
    for (i, (member, view)) in manifest.parties.iter().zip(&committee.parties).enumerate() {
        let key: SealingKey = view
            .sealing_key
            .parse()
            .map_err(|e| anyhow::anyhow!("party {i}: {e}"))?;
        let attestation = hex::decode(&view.sealing_attestation)
            .with_context(|| format!("party {i}'s attestation"))?;
        ensure!(
            check_attestation(&member.public_key, &key, &attestation),
            "party {i}'s sealing key is not attested by the node the manifest names"
        );
        keys.push(key);
    }
    Ok(keys)
}

/// Each party's run request sealed to its key under the attempt's binding.
fn seal_runs(
    manifest: &Manifest,
    keys: &[SealingKey],
    runs: Vec<RunRequest>,
) -> Result<Vec<Vec<u8>>> {
    ensure!(runs.len() == keys.len(), "one run per party");
    runs.into_iter()
        .enumerate()
        .map(|(i, run)| {
            let plain = zeroize::Zeroizing::new(postcard::to_stdvec(&run)?);
            let binding = binding_for(manifest, Purpose::InputShare, i);
            Ok(seal_blob(&keys[i], &binding, &plain)?)
        })
        .collect()
}
