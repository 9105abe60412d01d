//! The coordinator's randomness beacon and the explanations of its draws (`veil job N --explain`).
//!
//! # Chains
//! Time is cut into periods of [`CHAIN_EPOCHS`] epochs of [`EPOCH_MS`] each, counted from the Unix epoch.
//! Period `p` has its own commit-reveal chain ([`BeaconChain`], see `veil_scheduler::beacon`) whose secret
//! root is `SHA-256(ROOT_LABEL || Ed25519-sign(identity, ROOT_LABEL || p))`: Ed25519 signatures are
//! deterministic, so the root is a secret only the coordinator's key can make, the same after a restart,
//! and needs no storage. The chain's anchor `s_0` is public from the moment the coordinator runs
//! (`GET /v1/beacon`), so it is fixed before any job of the period is submitted. Epoch `e` (1-based) of
//! period `p` covers `[start + (e-1) * EPOCH_MS, start + e * EPOCH_MS)`, `start = p * CHAIN_EPOCHS *
//! EPOCH_MS`; its secret is revealed once it has ended.
//!
//! # Seeds
//! An attempt is drawn from the secret of the epoch in which it entered the queue (the submission, for a
//! first attempt; the failure that rescheduled it, for a retry), with the job id, the attempt and the stage
//! (`veil_scheduler::beacon::draw_seed`; the client's 32 bytes are zeros). The coordinator therefore cannot
//! pick a seed after seeing the job. What it can do (stated in the README): predict seeds of the current
//! epoch, since it knows the chain.
//!
//! # Explanations
//! The last [`MAX_EXPLANATIONS`] placed attempts (fewer when their eligible sets hold more than
//! [`MAX_KEPT_CANDIDATES`] candidates in all) keep their explanation (eligible sets, records, seeds) in
//! memory; a restarted coordinator has none for earlier attempts and says so (404).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use veil_node::Identity;
use veil_scheduler::beacon::{BeaconChain, SeedInput};
use veil_scheduler::explain::JobExplanation;

/// Length of an epoch, milliseconds.
pub const EPOCH_MS: u64 = 5_000;
/// Epochs per chain (a period): 2^16 epochs of 5 s, about 3.8 days.
pub const CHAIN_EPOCHS: u64 = 1 << 16;
/// Domain label of a chain's secret root.
pub const ROOT_LABEL: &[u8] = b"veil/beacon/root/v1";
/// Attempts whose explanations are kept.
pub const MAX_EXPLANATIONS: usize = 4_096;
/// Candidates kept over all explanations (about 56 bytes each, so about 56 MiB): on a large network the
/// eligible sets, not the count of attempts, bound what is kept.
pub const MAX_KEPT_CANDIDATES: usize = 1 << 20;

/// The beacon's public state (`GET /v1/beacon`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconView {
    /// The current chain's anchor `s_0` (hex).
    pub anchor: String,
    /// Unix milliseconds at which the chain's epoch 1 began.
    pub chain_start_ms: u64,
    /// Length of an epoch, milliseconds.
    pub epoch_ms: u64,
    /// Epochs in the chain.
    pub chain_epochs: u64,
    /// The current epoch.
    pub epoch: u64,
    /// The last ended epoch (0: none yet in this chain).
    pub revealed_epoch: u64,
    /// Its secret (hex).
    pub revealed: Option<String>,
}

/// Lower-case hex of 32 bytes.
pub fn hex(b: &[u8; 32]) -> String {
    veil_scheduler::beacon::hex32(b)
}

/// Where a time falls: the period, the epoch within it, and the period's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochAt {
    /// The period (chain).
    pub period: u64,
    /// The epoch (1-based) within the period.
    pub epoch: u64,
    /// Unix milliseconds at which epoch 1 of the period began.
    pub start_ms: u64,
}

/// The period and epoch of Unix time `now_ms`.
pub fn epoch_at(now_ms: u64) -> EpochAt {
    let span = CHAIN_EPOCHS * EPOCH_MS;
    let period = now_ms / span;
    let start_ms = period * span;
    EpochAt {
        period,
        epoch: (now_ms - start_ms) / EPOCH_MS + 1,
        start_ms,
    }
}

/// The beacon: the current period's chain (others rebuilt on demand) and the kept explanations.
#[derive(Clone)]
///
/// Invariant: `chain` is period `period`'s chain; `explanations` holds at most [`MAX_EXPLANATIONS`]
/// entries, keyed by (job, attempt), with `kept_candidates` candidates in all, at most
/// [`MAX_KEPT_CANDIDATES`] (beyond one explanation that alone exceeds it).
pub struct Beacon {
    period: u64,
    chain: BeaconChain,
    explanations: BTreeMap<(u64, u32), JobExplanation>,
    kept_candidates: usize,
}

impl std::fmt::Debug for Beacon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beacon")
            .field("period", &self.period)
            .field("chain", &self.chain)
            .finish()
    }
}

fn chain_of(identity: &Identity, period: u64) -> BeaconChain {
    let mut message = ROOT_LABEL.to_vec();
    message.extend_from_slice(&period.to_le_bytes());
    let signature = identity.sign(&message);
    let mut h = Sha256::new();
    h.update(ROOT_LABEL);
    h.update(&signature);
    // CHAIN_EPOCHS is within 1..=MAX_CHAIN_EPOCHS: generate cannot fail.
    BeaconChain::generate(h.finalize().into(), CHAIN_EPOCHS)
        .expect("CHAIN_EPOCHS is a valid chain length")
}

impl Beacon {
    /// The beacon of `identity` at Unix time `now_ms`.
    pub fn new(identity: &Identity, now_ms: u64) -> Beacon {
        let period = epoch_at(now_ms).period;
        let chain = chain_of(identity, period);
        Beacon {
            period,
            chain,
            explanations: BTreeMap::new(),
            kept_candidates: 0,
        }
    }

    /// `period`'s chain: the kept one, or rebuilt (about 2^16 hashes) for another period.
    fn chain(&self, identity: &Identity, period: u64) -> Cow<'_, BeaconChain> {
        if period == self.period {
            Cow::Borrowed(&self.chain)
        } else {
            Cow::Owned(chain_of(identity, period))
        }
    }

    /// Moves the kept chain to the period of `now_ms` (call as time passes).
    pub fn advance(&mut self, identity: &Identity, now_ms: u64) {
        let period = epoch_at(now_ms).period;
        if period != self.period {
            self.chain = chain_of(identity, period);
            self.period = period;
        }
    }

    /// The anchor of `period`'s chain.
    pub fn anchor(&self, identity: &Identity, period: u64) -> [u8; 32] {
        self.chain(identity, period).anchor()
    }

    /// The secret of `at`'s epoch: for drawing (the coordinator's own use, never published early).
    pub fn secret(&self, identity: &Identity, at: EpochAt) -> [u8; 32] {
        // epoch is in 1..=CHAIN_EPOCHS by construction of `epoch_at`.
        self.chain(identity, at.period)
            .secret(at.epoch)
            .expect("epoch_at gives an epoch inside the chain")
    }

    /// The secret of `at`'s epoch if it has ended by `now_ms` (what may be published).
    pub fn revealed(&self, identity: &Identity, at: EpochAt, now_ms: u64) -> Option<[u8; 32]> {
        let end = at.start_ms + at.epoch * EPOCH_MS;
        (now_ms >= end).then(|| self.secret(identity, at))
    }

    /// The seed of stage `stage` of attempt `attempt` of job `job`, drawn in epoch `at`.
    pub fn seed(
        &self,
        identity: &Identity,
        at: EpochAt,
        job: u64,
        attempt: u32,
        stage: u32,
    ) -> (SeedInput, [u8; 32]) {
        let input = SeedInput {
            epoch: at.epoch,
            job,
            attempt,
            stage,
            client: [0; 32],
        };
        let secret = self.secret(identity, at);
        (input, veil_scheduler::beacon::draw_seed(&secret, &input))
    }

    /// Keeps an attempt's explanation (dropping the oldest beyond [`MAX_EXPLANATIONS`]).
    pub fn keep(&mut self, explanation: JobExplanation) {
        let size = |e: &JobExplanation| e.stages.iter().map(|s| s.eligible.len()).sum::<usize>();
        self.kept_candidates += size(&explanation);
        if let Some(old) = self
            .explanations
            .insert((explanation.job, explanation.attempt), explanation)
        {
            self.kept_candidates -= size(&old);
        }
        while self.explanations.len() > MAX_EXPLANATIONS
            || (self.kept_candidates > MAX_KEPT_CANDIDATES && self.explanations.len() > 1)
        {
            if let Some((_, old)) = self.explanations.pop_first() {
                self.kept_candidates -= size(&old);
            }
        }
    }

    /// The kept explanation of job `job`'s latest explained attempt, with the epoch's secret filled in if
    /// the epoch has ended by `now_ms`.
    pub fn explanation(
        &self,
        identity: &Identity,
        job: u64,
        now_ms: u64,
    ) -> Option<JobExplanation> {
        let mut e = self
            .explanations
            .range((job, 0)..=(job, u32::MAX))
            .next_back()
            .map(|(_, e)| e.clone())?;
        let at = EpochAt {
            period: e.chain_start_ms / (CHAIN_EPOCHS * EPOCH_MS),
            epoch: e.epoch,
            start_ms: e.chain_start_ms,
        };
        e.secret = self.revealed(identity, at, now_ms);
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_scheduler::beacon::verify_reveal;

    #[test]
    fn epochs_and_reveals() {
        let at = epoch_at(CHAIN_EPOCHS * EPOCH_MS * 3 + 7 * EPOCH_MS + 1);
        assert_eq!(
            at,
            EpochAt {
                period: 3,
                epoch: 8,
                start_ms: CHAIN_EPOCHS * EPOCH_MS * 3
            }
        );
        let id = Identity::generate().unwrap();
        let b = Beacon::new(&id, at.start_ms);
        let anchor = b.anchor(&id, 3);
        let end = at.start_ms + 8 * EPOCH_MS;
        assert_eq!(b.revealed(&id, at, end - 1), None);
        let s = b.revealed(&id, at, end).unwrap();
        verify_reveal(0, &anchor, 8, &s).unwrap();
        // The same key gives the same chain after a restart; another key another.
        assert_eq!(Beacon::new(&id, at.start_ms).anchor(&id, 3), anchor);
        let other = Identity::generate().unwrap();
        assert_ne!(Beacon::new(&other, at.start_ms).anchor(&other, 3), anchor);
    }
}
