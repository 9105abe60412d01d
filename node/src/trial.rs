//! The trial job with a known answer that a new node must pass before the coordinator uses it.
//!
//! The coordinator draws fresh seeds for a workload's weights and input; the node runs that inference
//! privately (the semi2k protocol between two in-process parties with a dealer, on its own kernels) and
//! returns the logits; the coordinator compares them with the plaintext burn model on the same seeds. A node
//! whose arithmetic, kernels or protocol code is broken fails; the seeds are fresh per trial, so an answer
//! cannot be replayed. (It checks a node's computation, not its network path: a committee's first job does
//! that, and a failure there costs the node reputation like any other.)

use std::sync::Arc;
use std::time::Instant;

use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions};
use veil_engine::{workloads, Model, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

use crate::api::{TrialResult, TrialTask};
use crate::NodeError;

/// The trial's model: `task.workload` on `task.model_seed`.
pub fn model_of(task: &TrialTask) -> Result<Model, NodeError> {
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name(&task.workload, task.model_seed, &device)
        .ok_or_else(|| NodeError::Job(format!("unknown trial workload {:?}", task.workload)))??;
    Ok(model)
}

/// The node's side: runs the trial privately and returns its answer (the coordinator checks it against the
/// plaintext model on the same seeds).
pub fn run(task: &TrialTask) -> Result<TrialResult, NodeError> {
    let model = model_of(task)?;
    let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared)?;
    let input = workloads::sample_input(&model, 1, task.input_seed);
    let options = LocalOptions::new(2, Arc::new(RingGemm::new(1)));
    let started = Instant::now();
    let report = run_private(&model, &plan, &[input], 1, &options)?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let outputs = report
        .outputs
        .into_iter()
        .next()
        .ok_or_else(|| NodeError::Job("the trial's private run returned no output".into()))?;
    Ok(TrialResult {
        id: task.id,
        outputs,
        elapsed_ms,
    })
}
