//! Reputation: one number per node in `[MIN_REPUTATION_VALUE, 1]`, updated after every job outcome and
//! decaying toward a prior as evidence ages.
//!
//! # The rule
//! With `R` the current value (after decay, below) and the default parameters:
//!
//! | outcome | update | default |
//! | --- | --- | --- |
//! | success | `R + g (1 - R)` | g = 0.02: slow recovery, never above 1 |
//! | timeout | `R * t` | t = 0.85 |
//! | failure (crash, abort, bad message) | `R * f` | f = 0.75 |
//! | failed verification, `k` suspects | `R * v^(1/k)` | v = 0.20: possible malice, the worst |
//!
//! then `R` is clamped to `[MIN_REPUTATION_VALUE, 1]`. A failed MAC check does not say which party cheated, so
//! the penalty `v` is shared among the `k` suspects (the same culprit shows up in every failing committee and
//! sinks fast; an honest co-member pays `v^(1/k)` once).
//!
//! Decay: between events, `R` relaxes toward the prior `p` (the value a node starts with after its trial):
//! `R(t) = p + (R(t0) - p) * 2^(-(t - t0) / half_life)`. Old failures and old successes both fade, so a node
//! can neither bank unlimited credit nor be punished forever for one bad day.
//!
//! # Properties (tested in `tests/reputation.rs`)
//! - bounded: every update maps `[MIN_REPUTATION_VALUE, 1]` into itself;
//! - monotone in the outcome: success >= R >= timeout >= failure >= verification failure (one suspect);
//! - order-preserving in R: if `R1 <= R2`, the same outcome keeps `R1' <= R2'`;
//! - a single failure of any kind (a failed verification with at most 16 suspects) costs more than a single
//!   success gains, for every `R >= 0.2`, the default selection threshold (for timeouts it holds for every
//!   `R > g / (g + 1 - t) ≈ 0.118`);
//! - decay never overshoots the prior and is monotone in elapsed time.
//!
//! Compared with `R' = R * 0.8^fail * 1.01^(1 - fail)` (Nesa): bounded above, failure kinds distinguished,
//! recovery proportional to the distance from 1 (fast when low, negligible near 1), evidence decays.

use serde::{Deserialize, Serialize};

use crate::types::Millis;

/// The smallest value a reputation can take (keeps it strictly positive and finite under any history).
pub const MIN_REPUTATION_VALUE: f64 = 1e-6;

/// The outcome of one job for one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    /// The node did its part and the job verified.
    Success,
    /// The node did not answer in time.
    Timeout,
    /// The node crashed, aborted or sent a malformed message.
    Failure,
    /// The job's MAC check failed and this node is one of `suspects` (>= 1) parties that could have cheated.
    VerificationFailed {
        /// How many nodes share the blame.
        suspects: u8,
    },
}

/// A node's reputation and when it was last updated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reputation {
    /// The value at `updated_at`, in `[MIN_REPUTATION_VALUE, 1]`.
    pub value: f64,
    /// When `value` was computed.
    pub updated_at: Millis,
}

/// The parameters of the rule (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReputationRule {
    /// Prior and starting value after a passed trial.
    pub prior: f64,
    /// `g`: fraction of the distance to 1 gained per success.
    pub success_gain: f64,
    /// `t`: factor per timeout.
    pub timeout_factor: f64,
    /// `f`: factor per failure.
    pub failure_factor: f64,
    /// `v`: factor per failed verification with one suspect.
    pub verification_factor: f64,
    /// Half-life of evidence, in milliseconds (0: no decay).
    pub half_life_ms: u64,
}

impl Default for ReputationRule {
    fn default() -> Self {
        ReputationRule {
            prior: 0.8,
            success_gain: 0.02,
            timeout_factor: 0.85,
            failure_factor: 0.75,
            verification_factor: 0.20,
            half_life_ms: 14 * 24 * 3600 * 1000,
        }
    }
}

fn clamp(r: f64) -> f64 {
    if r.is_nan() {
        MIN_REPUTATION_VALUE
    } else {
        r.clamp(MIN_REPUTATION_VALUE, 1.0)
    }
}

impl ReputationRule {
    /// A fresh reputation at the prior.
    pub fn initial(&self, now: Millis) -> Reputation {
        Reputation {
            value: clamp(self.prior),
            updated_at: now,
        }
    }

    /// The value of `r` at `now`, after decay toward the prior. A `now` before `r.updated_at` means no decay.
    pub fn decayed(&self, r: Reputation, now: Millis) -> f64 {
        let elapsed = now.saturating_sub(r.updated_at);
        if self.half_life_ms == 0 || elapsed == 0 {
            return clamp(r.value);
        }
        let keep = (-(elapsed as f64) / self.half_life_ms as f64).exp2();
        let p = clamp(self.prior);
        clamp(p + (r.value - p) * keep)
    }

    /// The factor a non-success outcome multiplies R by (1 for success).
    pub fn factor(&self, outcome: JobOutcome) -> f64 {
        match outcome {
            JobOutcome::Success => 1.0,
            JobOutcome::Timeout => self.timeout_factor,
            JobOutcome::Failure => self.failure_factor,
            JobOutcome::VerificationFailed { suspects } => self
                .verification_factor
                .powf(1.0 / f64::from(suspects.max(1))),
        }
    }

    /// The value after one outcome applied to the (already decayed) value `r`.
    pub fn update_value(&self, r: f64, outcome: JobOutcome) -> f64 {
        let r = clamp(r);
        match outcome {
            JobOutcome::Success => clamp(r + self.success_gain * (1.0 - r)),
            other => clamp(r * self.factor(other)),
        }
    }

    /// Applies one outcome at `now`: decay, then update.
    pub fn apply(&self, r: Reputation, outcome: JobOutcome, now: Millis) -> Reputation {
        let current = self.decayed(r, now);
        Reputation {
            value: self.update_value(current, outcome),
            updated_at: now.max(r.updated_at),
        }
    }
}
