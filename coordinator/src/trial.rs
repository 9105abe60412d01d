//! The coordinator's side of the known-answer trial job (the node's side is `veil_node::trial`): whether a
//! node's answer is the plaintext model's output on the trial's seeds, within a tolerance.

use veil_engine::workloads;
use veil_node::api::{TrialResult, TrialTask};

use crate::error::{Error, Result};

/// Whether `result` is the trial's answer within `tolerance` (max abs error; a NaN fails).
pub fn check(task: &TrialTask, result: &TrialResult, tolerance: f32) -> Result<bool> {
    let model = veil_node::trial::model_of(task).map_err(Error::invariant)?;
    let input = workloads::sample_input(&model, 1, task.input_seed);
    let expected = model.forward_plain(&input, 1).map_err(Error::invariant)?;
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
