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

use super::api::{TrialResult, TrialTask};
use super::error::{ApiError, ApiResult};

fn model_of(task: &TrialTask) -> anyhow::Result<Model> {
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name(&task.workload, task.model_seed, &device)
        .ok_or_else(|| anyhow::anyhow!("unknown trial workload {:?}", task.workload))??;
    Ok(model)
}

/// The node's side: runs the trial privately and returns its answer.
pub fn run(task: &TrialTask) -> anyhow::Result<TrialResult> {
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
        .ok_or_else(|| anyhow::anyhow!("the private run returned no output"))?;
    Ok(TrialResult {
        id: task.id,
        outputs,
        elapsed_ms,
    })
}

/// The coordinator's side: whether `result` is the trial's answer within `tolerance` (max abs error).
pub fn check(task: &TrialTask, result: &TrialResult, tolerance: f32) -> ApiResult<bool> {
    let model = model_of(task).map_err(|e| ApiError::Internal(e.to_string()))?;
    let input = workloads::sample_input(&model, 1, task.input_seed);
    let expected = model
        .forward_plain(&input, 1)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if result.outputs.len() != expected.len() {
        return Ok(false);
    }
    let err = result
        .outputs
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(
            0f32,
            |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) },
        );
    Ok(err <= tolerance)
}
