//! The client SDK's side of the coordinator: submit a job, share the inputs (and, as model owner, the
//! weights) for whichever committee the coordinator gives each attempt, wait, fetch the parties' output
//! blobs and reconstruct.
//!
//! Invariants: shares are drawn fresh for every attempt (a retried job never reuses a committee's shares);
//! each party's blob is addressed to its attempt's run id, so a party can use it only in that attempt;
//! nothing here logs a share, an input or an output.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_engine::local::deal_weights;
use veil_engine::{Model, Plan};
use veil_node::wire::{JobId as RunId, PartyReport, RunRequest, WireWeight, Words};
use veil_protocols::share::{reconstruct, share};

use super::api::{self, JobView, SubmitRequest};
use super::http::ApiClient;

/// The result of a job run through the coordinator.
pub struct Finished {
    /// The job's final status (history, attempts, committee).
    pub job: JobView,
    /// One output vector per inference.
    pub outputs: Vec<Vec<f32>>,
}

/// Each party's input blob for one attempt: fresh shares of the weights and of every input.
fn blobs_for(
    plan: &Plan,
    model: &Model,
    inputs: &[Vec<f32>],
    batch: usize,
    parties: usize,
    run_id: RunId,
) -> Result<Vec<Vec<u8>>> {
    let mut rng = StdRng::from_os_rng();
    let fp = plan.fixed_point;
    let mut input_shares: Vec<Vec<Words>> = (0..parties).map(|_| Vec::new()).collect();
    for x in inputs {
        model.check_input(x, batch)?;
        let encoded = fp.encode(x)?;
        for (i, s) in share(&encoded, parties, &mut rng)?.into_iter().enumerate() {
            input_shares[i].push(Words(s));
        }
    }
    let weights = deal_weights(plan, parties, &mut rng)?;
    weights
        .into_iter()
        .zip(input_shares)
        .map(|(w, inputs)| {
            let run = RunRequest {
                job: run_id,
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
            Ok(postcard::to_stdvec(&run)?)
        })
        .collect()
}

fn run_id_of(view: &JobView) -> Result<RunId> {
    let hex_id = view.run_id.as_deref().context("no run id")?;
    let mut id = [0u8; 16];
    hex::decode_to_slice(hex_id, &mut id).context("run id")?;
    Ok(RunId(id))
}

/// Submits `request` (which must describe `model` and `plan`), runs `inputs` through whatever committees
/// the coordinator picks, and returns the reconstructed outputs. `progress` sees every status polled.
pub fn run_job(
    api: &ApiClient,
    request: SubmitRequest,
    model: &Model,
    plan: &Plan,
    inputs: &[Vec<f32>],
    timeout: Duration,
    mut progress: impl FnMut(&JobView),
) -> Result<Finished> {
    if inputs.len() != request.inferences as usize {
        bail!(
            "{} inputs for {} inferences",
            inputs.len(),
            request.inferences
        );
    }
    let batch = request.batch as usize;
    let submitted: JobView = api.post_json(api::JOBS, &request)?;
    let id = submitted.id;
    let deadline = Instant::now() + timeout;
    // The current attempt's blobs (drawn once per attempt, so every party gets shares of one sharing)
    // and which of them the coordinator has.
    let mut pending: Option<(u32, Vec<Vec<u8>>, Vec<bool>)> = None;
    loop {
        let view: JobView = match api.get_json(&api::job(id)) {
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
                    let committee = view
                        .committee
                        .as_ref()
                        .context("scheduled without committee")?;
                    let parties = committee.parties.len();
                    let blobs = blobs_for(plan, model, inputs, batch, parties, run_id_of(&view)?)?;
                    pending = Some((view.attempt, blobs, vec![false; parties]));
                }
                if let Some((attempt, blobs, sent)) = pending.as_mut() {
                    for (party, blob) in blobs.iter().enumerate() {
                        if sent[party] {
                            continue;
                        }
                        match api.put_bytes(&api::input_upload(id, *attempt, party), blob.clone()) {
                            Ok(()) => sent[party] = true,
                            // The attempt moved on (a member failed): the next status says where to.
                            Err(e) if e.status() == Some(409) => break,
                            Err(e) if e.status().is_none() => {
                                tracing::warn!("job {id}: uploading party {party}'s input: {e}");
                                break;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            "done" => {
                let n = view
                    .committee
                    .as_ref()
                    .map(|c| c.parties.len())
                    .context("done without committee")?;
                let mut reports = Vec::with_capacity(n);
                for party in 0..n {
                    let bytes = api.get_bytes(&api::output_download(id, party))?;
                    let report: PartyReport = postcard::from_bytes(&bytes)
                        .with_context(|| format!("party {party}'s output blob"))?;
                    if report.outputs.len() != inputs.len() {
                        bail!(
                            "party {party} returned {} outputs for {} inferences",
                            report.outputs.len(),
                            inputs.len()
                        );
                    }
                    reports.push(report);
                }
                let fp = plan.fixed_point;
                let mut outputs = Vec::with_capacity(inputs.len());
                for k in 0..inputs.len() {
                    let shares: Vec<Vec<u64>> =
                        reports.iter().map(|r| r.outputs[k].0.clone()).collect();
                    outputs.push(fp.decode(&reconstruct(&shares)?));
                }
                return Ok(Finished { job: view, outputs });
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
        std::thread::sleep(Duration::from_millis(100));
    }
}
