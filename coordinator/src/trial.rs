//! The coordinator's side of the known-answer trial (the nodes' side is `veil_node::trial`, the pairing and
//! the outcome are [`crate::core::trials`]): whether the output the two parties' shares open to is the
//! plaintext model's output on the trial's seeds, within a tolerance, and how many ring operations the
//! trial's inference counts.
//!
//! What is measured, and by whom: the trial runs over QUIC between the node on trial (party 0) and an
//! examiner of another operator (party 1), with a third node dealing. Each party reports its own online
//! seconds and the QUIC RTT it measured to the other; the coordinator takes the larger online time (the
//! protocol is joint, so the examiner's clock bounds the subject's speed from below: a subject cannot report
//! itself faster) and records `ops / online` as the subject's measured rate, which selection uses only where
//! it is below the claimed one (`veil_scheduler::Hardware::ops_per_s`). The RTT of the pair counts once
//! both ends reported it, at the larger report. A subject cannot pass without the right output; an examiner
//! or dealer can make a subject fail or look slow, which is why only active ones count against it (see
//! `veil_node::trial` for the whole list).

use crate::core::trials::TrialCheck;
use crate::error::{Error, Result};

/// What a trial's check found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checked {
    /// The opened output is the plaintext answer within the tolerance.
    pub correct: bool,
    /// Ring operations of the trial's inference (`veil_node::trial::ops_of`).
    pub ops: u64,
}

/// Opens `check`'s shares and compares the output with the plaintext reference, within `tolerance` (max
/// abs error; a NaN, or shares of the wrong length, fail).
pub fn check(check: &TrialCheck, tolerance: f32) -> Result<Checked> {
    let s = &check.seeds;
    let model = veil_node::trial::model_of(&s.workload, s.model_seed).map_err(Error::invariant)?;
    let plan = veil_node::trial::plan_of(&model).map_err(Error::invariant)?;
    let ops = veil_node::trial::ops_of(&plan);
    let expected = veil_node::trial::reference(&s.workload, s.model_seed, s.input_seed)
        .map_err(Error::invariant)?;
    let wrong = Checked {
        correct: false,
        ops,
    };
    if check.shares.len() != 2 || check.shares.iter().any(|x| x.len() != expected.len()) {
        return Ok(wrong);
    }
    let Ok(outputs) = veil_node::trial::open(&check.shares) else {
        return Ok(wrong);
    };
    let err = outputs
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(
            0f32,
            |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) },
        );
    Ok(Checked {
        correct: err <= tolerance,
        ops,
    })
}
