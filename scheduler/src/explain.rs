//! The explanation of a job attempt's committees: what `veil job N --explain` prints and what anyone holding
//! it rechecks without trusting the coordinator.
//!
//! An explanation carries, per stage: the published eligible set (every candidate the draw could pick, with
//! its domains, free memory, measured rate and bandwidth, weight and busy seconds), the demand, the seed's
//! inputs (beacon epoch, job, attempt, stage) and the [`DrawRecord`]; and once per attempt the beacon's
//! anchor and, after the epoch ended, its revealed secret. [`JobExplanation::recheck`]:
//! 1. checks the revealed secret against the anchor ([`verify_reveal`]);
//! 2. recomputes each stage's seed ([`draw_seed`]) and compares it with the record's;
//! 3. rebuilds the eligible set, compares its hash with the record's and redraws ([`DrawRecord::recompute`]),
//!    comparing the picks with the record's.
//!
//! What it proves: given the published eligible set, the committee is the draw's, from a seed the
//! coordinator fixed (through the anchor) before the job was submitted. What it does not prove: that the
//! eligible set was the registry's true state (which nodes were up, their free memory and busy seconds are
//! the coordinator's accounts; the set's hash is bound into the record, so a later change shows).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::beacon::{draw_seed, verify_reveal, BeaconError, SeedInput};
use crate::demand::JobDemand;
use crate::draw::{Candidate, EligibleSet, EligibleSetError, Pick};
use crate::select::{DrawRecord, RecomputeError};
use crate::types::{DomainKey, NodeId};

/// The most candidates one stage's explanation may carry (bounds what a client parses).
pub const MAX_EXPLAINED_CANDIDATES: usize = 1 << 20;

/// One stage's draw, with everything needed to recompute it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageExplanation {
    /// The stage's demand.
    pub demand: JobDemand,
    /// The seed's inputs (see [`draw_seed`]).
    pub seed_input: SeedInput,
    /// The draw's record (seed, round, params, reference, picks, eligible-set hash).
    pub record: DrawRecord,
    /// The eligible set drawn from, in node-id order.
    pub eligible: Vec<Candidate>,
}

/// A node's names, for printing (the draw itself reads interned values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNames {
    /// The node.
    pub node: NodeId,
    /// Its operator (the verified operator key where operators are admitted).
    pub operator: String,
    /// Its region.
    pub region: String,
}

/// The explanation of one attempt (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExplanation {
    /// The job.
    pub job: u64,
    /// The attempt (1-based).
    pub attempt: u32,
    /// The beacon chain's anchor `s_0` (published before the job was submitted).
    pub anchor: [u8; 32],
    /// Milliseconds since the Unix epoch at which the chain's epoch 1 began.
    pub chain_start_ms: u64,
    /// Length of an epoch, milliseconds.
    pub epoch_ms: u64,
    /// The epoch whose secret seeds the draw (the one in which the attempt entered the queue).
    pub epoch: u64,
    /// That epoch's secret, once the epoch has ended (`None` before: recheck later).
    pub secret: Option<[u8; 32]>,
    /// The collusion keys in force.
    pub collusion_keys: Vec<DomainKey>,
    /// Nodes the attempt had to avoid (blamed earlier, silent, over their operator's share of roles).
    pub exclude: Vec<NodeId>,
    /// One entry per stage.
    pub stages: Vec<StageExplanation>,
    /// Names of the picked nodes.
    pub names: Vec<NodeNames>,
}

/// Why a recheck failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ExplainError {
    /// The epoch's secret is not revealed yet.
    #[error("the beacon secret of epoch {epoch} is revealed when the epoch ends; recheck then")]
    NotRevealed {
        /// The epoch.
        epoch: u64,
    },
    /// The revealed secret does not hash to the anchor.
    #[error("beacon: {0}")]
    Beacon(#[from] BeaconError),
    /// A stage's seed is not the one its inputs give.
    #[error("stage {stage}: the record's seed is not draw_seed(secret, inputs)")]
    SeedMismatch {
        /// The stage.
        stage: usize,
    },
    /// A stage's seed inputs name another job, attempt, epoch or stage.
    #[error("stage {stage}: the seed's inputs name another job, attempt, epoch or stage")]
    InputMismatch {
        /// The stage.
        stage: usize,
    },
    /// A stage has more candidates than [`MAX_EXPLAINED_CANDIDATES`].
    #[error("stage {stage}: too many candidates")]
    TooManyCandidates {
        /// The stage.
        stage: usize,
    },
    /// A stage's eligible set is malformed.
    #[error("stage {stage}: {source}")]
    EligibleSet {
        /// The stage.
        stage: usize,
        /// Why.
        source: EligibleSetError,
    },
    /// The redraw failed or the set's hash is not the record's.
    #[error("stage {stage}: {source}")]
    Recompute {
        /// The stage.
        stage: usize,
        /// Why.
        source: RecomputeError,
    },
    /// The redraw picked other nodes than the record says.
    #[error("stage {stage}: the redraw picks {recomputed:?}, the record says {recorded:?}")]
    PicksMismatch {
        /// The stage.
        stage: usize,
        /// Nodes the redraw picked.
        recomputed: Vec<NodeId>,
        /// Nodes the record names.
        recorded: Vec<NodeId>,
    },
    /// No draw round completed and the cheapest committee was taken: nothing random to recheck.
    #[error("stage {stage}: no draw round completed; the coordinator took the cheapest committee")]
    CheapestFallback {
        /// The stage.
        stage: usize,
    },
}

impl JobExplanation {
    /// Rechecks every stage (see the module doc). `Ok` means every committee is the draw's.
    pub fn recheck(&self) -> Result<(), ExplainError> {
        let secret = self
            .secret
            .ok_or(ExplainError::NotRevealed { epoch: self.epoch })?;
        verify_reveal(0, &self.anchor, self.epoch, &secret)?;
        let keys: Vec<usize> = self.collusion_keys.iter().map(|k| k.slot()).collect();
        for (stage, s) in self.stages.iter().enumerate() {
            let expected = SeedInput {
                epoch: self.epoch,
                job: self.job,
                attempt: self.attempt,
                stage: stage as u32,
                client: s.seed_input.client,
            };
            if s.seed_input != expected {
                return Err(ExplainError::InputMismatch { stage });
            }
            if draw_seed(&secret, &s.seed_input) != s.record.seed {
                return Err(ExplainError::SeedMismatch { stage });
            }
            if s.record.cheapest_fallback {
                return Err(ExplainError::CheapestFallback { stage });
            }
            if s.eligible.len() > MAX_EXPLAINED_CANDIDATES {
                return Err(ExplainError::TooManyCandidates { stage });
            }
            let set = EligibleSet::new(s.eligible.clone(), s.record.reference, &s.record.params)
                .map_err(|source| ExplainError::EligibleSet { stage, source })?;
            let picks = s
                .record
                .recompute(&set, &s.demand, &keys, &self.exclude)
                .map_err(|source| ExplainError::Recompute { stage, source })?;
            if picks != s.record.picks {
                return Err(ExplainError::PicksMismatch {
                    stage,
                    recomputed: nodes(&picks),
                    recorded: nodes(&s.record.picks),
                });
            }
        }
        Ok(())
    }
}

fn nodes(picks: &[Pick]) -> Vec<NodeId> {
    picks.iter().map(|p| p.node).collect()
}
