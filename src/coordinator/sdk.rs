//! The client SDK's side of the coordinator: deploy a model's public part, submit a job, share the inputs
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

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_engine::local::deal_weights;
use veil_engine::model_file::ModelFile;
use veil_engine::{Model, Plan, WeightMode};
use veil_node::envelope::{OpeningKey, Purpose, SealingKey};
use veil_node::inbox::{binding_for, check_attestation, open_blob, seal_blob};
use veil_node::manifest::{Manifest, SignedManifest};
use veil_node::wire::{PartyReport, RunRequest, WireWeight, Words};
use veil_node::PublicKey;
use veil_protocols::share::{reconstruct, share};

use super::api::{self, CommitteeView, DeployRequest, JobView, ModelView, SubmitRequest};
use super::http::ApiClient;

/// The result of a job run through the coordinator.
pub struct Finished {
    /// The job's final status (history, attempts, committee).
    pub job: JobView,
    /// One output vector per inference.
    pub outputs: Vec<Vec<f32>>,
    /// Each party's report (public measurements: latency, bytes, rounds per inference).
    pub reports: Vec<PartyReport>,
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
    ) -> Result<ModelView> {
        let request = DeployRequest {
            id: file.id().to_string(),
            architecture: serde_json::to_string(file.architecture())?,
            weights: weight_name(weights).into(),
            parties,
            frac_bits,
        };
        Ok(self.api.post_json(api::MODELS, &request)?)
    }

    /// Submits `request` (which must describe `model` and `plan`), runs `inputs` through whatever
    /// committees the coordinator picks, and returns the reconstructed outputs. `progress` sees every
    /// status polled. The request's output key is set to this client's.
    #[allow(clippy::too_many_arguments)]
    pub fn run_job(
        &self,
        mut request: SubmitRequest,
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
        request.output_key = Some(self.output_key().to_string());
        let submitted: JobView = self.api.post_json(api::JOBS, &request)?;
        let id = submitted.id;
        let deadline = Instant::now() + timeout;
        // The current attempt's sealed blobs (drawn once per attempt, so every party gets shares of one
        // sharing) and which of them the coordinator has.
        let mut pending: Option<(u32, Vec<Vec<u8>>, Vec<bool>)> = None;
        loop {
            let view: JobView = match self.api.get_json(&api::job(id)) {
                Ok(v) => v,
                Err(e) if e.status().is_none() && Instant::now() < deadline => {
                    // The coordinator may be restarting: keep asking.
                    tracing::warn!("job {id}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            progress(&view);
            match view.phase.as_str() {
                "scheduled" => {
                    if pending.as_ref().map(|p| p.0) != Some(view.attempt) {
                        let manifest = self.checked_manifest(&view, &request)?;
                        let committee = view
                            .committee
                            .as_ref()
                            .context("scheduled without committee")?;
                        let mut blobs = sealed_inputs(plan, &manifest, committee, &encoded)?;
                        if let Some(t) = &self.tamper {
                            tracing::warn!("TEST ONLY: tampering with the sealed inputs ({t:?})");
                            t.apply(&mut blobs)?;
                        }
                        pending = Some((view.attempt, blobs, vec![false; manifest.parties.len()]));
                    }
                    if let Some((attempt, blobs, sent)) = pending.as_mut() {
                        for (party, blob) in blobs.iter().enumerate() {
                            if sent[party] {
                                continue;
                            }
                            let path = api::input_upload(id, *attempt, party);
                            match self.api.put_bytes(&path, blob.clone()) {
                                Ok(()) => sent[party] = true,
                                // The attempt moved on (a member failed): the next status says where to.
                                Err(e) if e.status() == Some(409) => break,
                                Err(e) if e.status().is_none() => {
                                    tracing::warn!(
                                        "job {id}: uploading party {party}'s input: {e}"
                                    );
                                    break;
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                }
                "done" => {
                    let manifest = self.checked_manifest(&view, &request)?;
                    let (outputs, reports) =
                        self.open_outputs(id, &manifest, plan, inputs.len())?;
                    return Ok(Finished {
                        job: view,
                        outputs,
                        reports,
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
            std::thread::sleep(Duration::from_millis(50));
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
            (Some(id), Some(d)) => *id == d.id,
            (None, None) => {
                manifest.model.workload == request.workload
                    && manifest.model.seed == request.model_seed
            }
            _ => false,
        };
        ensure!(model_ok, "the manifest runs another model");
        Ok(manifest)
    }

    /// Downloads, opens and reconstructs every party's sealed output.
    fn open_outputs(
        &self,
        id: u64,
        manifest: &Manifest,
        plan: &Plan,
        inferences: usize,
    ) -> Result<(Vec<Vec<f32>>, Vec<PartyReport>)> {
        let n = manifest.parties.len();
        let mut reports = Vec::with_capacity(n);
        for party in 0..n {
            let blob = self.api.get_bytes(&api::output_download(id, party))?;
            let binding = binding_for(manifest, Purpose::OutputShare, party);
            let bytes = open_blob(&self.key, &binding, &blob)
                .with_context(|| format!("party {party}'s sealed output"))?;
            let report: PartyReport = postcard::from_bytes(&bytes)
                .with_context(|| format!("party {party}'s output report"))?;
            ensure!(
                report.outputs.len() == inferences,
                "party {party} returned {} outputs for {inferences} inferences",
                report.outputs.len()
            );
            reports.push(report);
        }
        let fp = plan.fixed_point;
        let mut outputs = Vec::with_capacity(inferences);
        for k in 0..inferences {
            let shares: Vec<Vec<u64>> = reports.iter().map(|r| r.outputs[k].0.clone()).collect();
            ensure!(
                shares.iter().all(|s| s.len() == shares[0].len()),
                "output shares of inference {k} differ in length"
            );
            outputs.push(fp.decode(&reconstruct(&shares)?));
        }
        Ok((outputs, reports))
    }
}

fn weight_name(mode: WeightMode) -> &'static str {
    match mode {
        WeightMode::Shared => "shared",
        WeightMode::Public => "public",
    }
}

/// Each party's sealed input blob for one attempt: fresh shares of the weights and of every input, sealed
/// to the party's attested key under the attempt's binding.
fn sealed_inputs(
    plan: &Plan,
    manifest: &Manifest,
    committee: &CommitteeView,
    encoded: &[Vec<u64>],
) -> Result<Vec<Vec<u8>>> {
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
    let mut rng = StdRng::from_os_rng();
    let mut input_shares: Vec<Vec<Words>> = (0..parties).map(|_| Vec::new()).collect();
    for x in encoded {
        let recording = veil_node::record::enabled();
        if recording {
            veil_node::record::write(
                veil_node::record::Kind::ClientInput,
                &[&veil_protocols::ring::to_bytes(x)],
            );
        }
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
    weights
        .into_iter()
        .zip(input_shares)
        .enumerate()
        .map(|(i, (w, inputs))| {
            let run = RunRequest {
                job: manifest.job,
                weights: w
                    .into_iter()
                    .map(|w| WireWeight {
                        matrix: Words(w.matrix),
                        bias: w.bias.map(Words),
                    })
                    .collect(),
                inputs,
                threads: 1,
                profile: false,
                shaping: None,
            };
            let plain = zeroize::Zeroizing::new(postcard::to_stdvec(&run)?);
            let binding = binding_for(manifest, Purpose::InputShare, i);
            Ok(seal_blob(&keys[i], &binding, &plain)?)
        })
        .collect()
}
