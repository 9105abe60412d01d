//! The trial job with a known answer that a new node must pass before the coordinator uses it: a timed
//! private inference run over QUIC with other nodes, not in-process.
//!
//! The coordinator pairs the node on trial (the *subject*) with an *examiner*: an active node of another
//! operator (at bootstrap, when there is none, another node on probation, and the two examine each other).
//! It signs a committee manifest of a 2-party `semi2k` job of the trial workload: party 0 the subject,
//! party 1 the examiner, the dealer a third node. Every member sees the trial in its heartbeat replies,
//! accepts the manifest, and starts once all three accepted. The trial's weights, input and share dealing
//! are public seeds ([`run_request`]: each party derives its own shares; a trial keeps nothing private),
//! so no client is needed: each party runs its side over its QUIC links exactly as in a coordinator job,
//! measures the QUIC round-trip time to the other party, and reports its output share, its online seconds
//! and that RTT ([`crate::api::TrialReport`]).
//!
//! The coordinator (`veil_coordinator::trial`) adds the two shares and compares the result with the
//! plaintext model on the same seeds; on a pass it records the subject's measured compute rate as the trial's
//! ring operations over the online time (the larger of the two parties' reports), and both RTT reports
//! (a pair's RTT counts once both ends reported it, at the larger of the two).
//!
//! What a lying node can and cannot do:
//! - a subject cannot look faster than it is: the online phase is a joint protocol, so the examiner's clock
//!   sees the subject's real speed, and the larger of the two reports is used (a subject that reports a
//!   smaller time changes nothing; a larger one only lowers its own rate). A measurement only ever lowers the
//!   claimed rate (selection uses the smaller), so a claim of 1024 cores buys nothing beyond what was
//!   measured;
//! - a subject whose arithmetic, kernels or protocol code is broken, or that answers at random, fails:
//!   the seeds are fresh per trial, so an answer cannot be replayed;
//! - an examiner (or the dealer) can make an honest subject fail or look slow (a wrong share, bad
//!   material, a late report): that is why only an active examiner and dealer (nodes that passed their own
//!   trial) count against the subject, and why a bootstrap pair that disagrees is left on probation to be
//!   paired again rather than rejected. An examiner that reports a short time cannot raise the subject
//!   above its claim;
//! - two nodes of different operators examined at bootstrap could both lie together; the bootstrap happens
//!   once, when the operators start the network, and their measurement is still capped by their claims.

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_engine::local::deal_weights;
use veil_engine::{workloads, Model, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;
use veil_protocols::share::share;

use crate::api::TrialTask;
use crate::wire::{seconds, JobId, PartyReport, RunRequest, WireWeight, Words};
use crate::NodeError;

/// Fractional bits of the trial's fixed-point encoding (the manifest's `frac_bits`).
pub const FRAC_BITS: u32 = 16;

/// The trial's model: `workload` on `model_seed`.
pub fn model_of(workload: &str, model_seed: u64) -> Result<Model, NodeError> {
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name(workload, model_seed, &device)
        .ok_or_else(|| NodeError::Job(format!("unknown trial workload {workload:?}")))??;
    Ok(model)
}

/// The trial's plan (shared weights, [`FRAC_BITS`]).
pub fn plan_of(model: &Model) -> Result<Plan, NodeError> {
    let fp = FixedPoint::new(FRAC_BITS).map_err(veil_protocols::ProtocolError::from)?;
    Ok(Plan::compile(model, fp, WeightMode::Shared)?)
}

/// Ring operations of one trial inference in the unit the scheduler's demand uses (two per weight per
/// item: `veil_coordinator::core::demand_for`), so that a rate measured with it compares like with like
/// with a claimed one.
pub fn ops_of(plan: &Plan) -> u64 {
    let weights: u64 = plan
        .weights
        .iter()
        .map(|w| (w.inner * w.outputs + w.bias.as_ref().map_or(0, |b| b.len())) as u64)
        .sum();
    2 * weights
}

/// Party `index`'s run of `task` for the job `job`: its shares of the weights and of the input, dealt from
/// the trial's public share seed (every party deals the same way and keeps its own).
pub fn run_request(task: &TrialTask, job: JobId, index: usize) -> Result<RunRequest, NodeError> {
    const PARTIES: usize = 2;
    if index >= PARTIES {
        return Err(NodeError::Job(format!("a trial has no party {index}")));
    }
    let model = model_of(&task.workload, task.model_seed)?;
    let plan = plan_of(&model)?;
    let input = workloads::sample_input(&model, 1, task.input_seed);
    let encoded = plan
        .fixed_point
        .encode(&input)
        .map_err(veil_protocols::ProtocolError::from)?;
    let mut rng = StdRng::seed_from_u64(task.share_seed);
    let mut inputs = share(&encoded, PARTIES, &mut rng)?;
    let mut weights = deal_weights(&plan, PARTIES, &mut rng)?;
    let weights = weights.swap_remove(index);
    let input = inputs.swap_remove(index);
    Ok(RunRequest::new(
        job,
        weights.into_iter().map(WireWeight::from).collect(),
        vec![Words(input)],
    ))
}

/// Online seconds of a party's single trial inference: its wall time less its preparation.
pub fn online_seconds(report: &PartyReport) -> f64 {
    let wall = report.latencies.first().copied().unwrap_or_default();
    let prep = report.preparation.first().copied().unwrap_or_default();
    seconds((wall - prep).max(0.0)).as_secs_f64()
}

/// The plaintext answer of the trial (what the coordinator compares the opened output with).
pub fn reference(workload: &str, model_seed: u64, input_seed: u64) -> Result<Vec<f32>, NodeError> {
    let model = model_of(workload, model_seed)?;
    let input = workloads::sample_input(&model, 1, input_seed);
    Ok(model.forward_plain(&input, 1)?)
}

/// Opens and decodes a trial's output from the two parties' shares.
pub fn open(shares: &[Vec<u64>]) -> Result<Vec<f32>, NodeError> {
    let fp = FixedPoint::new(FRAC_BITS).map_err(veil_protocols::ProtocolError::from)?;
    let words = veil_protocols::share::reconstruct(shares)?;
    Ok(fp.decode(&words))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TaskRole;

    fn task() -> TrialTask {
        TrialTask {
            id: 1,
            workload: "network-a".into(),
            model_seed: 3,
            input_seed: 4,
            share_seed: 5,
            role: TaskRole::Party { index: 0 },
            manifest: String::new(),
            go: false,
        }
    }

    #[test]
    fn the_parties_deal_the_same_shares_and_their_input_shares_add_up_to_the_input() {
        let t = task();
        let job = JobId::random();
        let a = run_request(&t, job, 0).unwrap();
        let b = run_request(&t, job, 1).unwrap();
        assert_eq!(a, run_request(&t, job, 0).unwrap(), "deterministic");
        assert_ne!(a.inputs, b.inputs);
        let opened = open(&[a.inputs[0].0.clone(), b.inputs[0].0.clone()]).unwrap();
        let model = model_of(&t.workload, t.model_seed).unwrap();
        let input = workloads::sample_input(&model, 1, t.input_seed);
        let err = opened
            .iter()
            .zip(&input)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "{err}");
        assert!(run_request(&t, job, 2).is_err());
        let plan = plan_of(&model).unwrap();
        assert!(ops_of(&plan) > 0);
    }
}
