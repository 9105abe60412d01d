//! What a job asks of a committee: the scheduler knows a model only by its resource needs (memory, compute,
//! bytes, rounds per layer), never by its weights or architecture.
//!
//! Invariant: a [`JobDemand`] built by [`ModelProfile::stage_demand`] covers exactly the layers of its range;
//! the stages of [`ModelProfile::plan`] cover every layer once, in order.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::partition::{partition, PartitionError};

/// A role on a committee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Execution party number `i` (0-based).
    Party(u8),
    /// The dealer of correlated randomness.
    Dealer,
    /// The verifier (MAC check, receipt).
    Verifier,
}

/// The resources one member needs for one job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDemand {
    /// Memory held for the job's whole duration, in bytes.
    pub memory_bytes: u64,
    /// Ring operations.
    pub ops: u64,
    /// Bytes sent.
    pub bytes: u64,
}

impl RoleDemand {
    /// The sum of two demands (saturating).
    pub fn plus(self, other: RoleDemand) -> RoleDemand {
        RoleDemand {
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            ops: self.ops.saturating_add(other.ops),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// What one committee must provide for one job, or for one stage of a partitioned job.
///
/// The roles a committee has follow the demand: `parties` execution parties always, a dealer iff `dealer`
/// is `Some` (a protocol with correlated randomness from a dealer), a verifier iff `verifier` is `Some`.
/// Selection draws, and the registry reserves, exactly those roles: no node is held for an absent one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDemand {
    /// Execution parties (at least 2).
    pub parties: u8,
    /// Each execution party's needs.
    pub party: RoleDemand,
    /// The dealer's needs; `None`: the committee has no dealer (e.g. `rep3`, `rep3m`).
    pub dealer: Option<RoleDemand>,
    /// The verifier's needs; `None`: the committee has no verifier (e.g. `rep3`).
    pub verifier: Option<RoleDemand>,
    /// Online communication rounds among the parties: each costs about one round-trip between the two most
    /// distant parties, so it weights latency in selection.
    pub rounds: u32,
}

/// What an absent role asks: nothing.
const NO_DEMAND: RoleDemand = RoleDemand {
    memory_bytes: 0,
    ops: 0,
    bytes: 0,
};

impl JobDemand {
    /// Members of the committee: the parties, plus the dealer and the verifier where they exist.
    pub fn committee_size(&self) -> usize {
        self.parties as usize
            + usize::from(self.dealer.is_some())
            + usize::from(self.verifier.is_some())
    }

    /// Whether the committee has `role` (a party index below `parties`, or a dealer or verifier the demand
    /// names).
    pub fn has_role(&self, role: Role) -> bool {
        match role {
            Role::Party(i) => i < self.parties,
            Role::Dealer => self.dealer.is_some(),
            Role::Verifier => self.verifier.is_some(),
        }
    }

    /// The roles of the committee in draw order: party 0, 1, ..., then the dealer and the verifier where
    /// they exist.
    pub fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        (0..self.parties)
            .map(Role::Party)
            .chain(self.dealer.map(|_| Role::Dealer))
            .chain(self.verifier.map(|_| Role::Verifier))
    }

    /// The needs of one role (all zero for a role the committee does not have).
    pub fn role(&self, role: Role) -> &RoleDemand {
        match role {
            Role::Party(_) => &self.party,
            Role::Dealer => self.dealer.as_ref().unwrap_or(&NO_DEMAND),
            Role::Verifier => self.verifier.as_ref().unwrap_or(&NO_DEMAND),
        }
    }
}

/// The needs of one layer, per execution party unless named otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerNeeds {
    /// Memory each party holds for this layer (its shares of weights and activations), bytes.
    pub memory_bytes: u64,
    /// Ring operations per party.
    pub party_ops: u64,
    /// Bytes each party sends online.
    pub party_bytes: u64,
    /// Dealer operations for this layer's correlated randomness.
    pub dealer_ops: u64,
    /// Bytes the dealer sends (to all parties together).
    pub dealer_bytes: u64,
    /// Verifier operations (MAC check over this layer's opened values).
    pub verifier_ops: u64,
    /// Online rounds.
    pub rounds: u32,
}

/// A model as the scheduler sees it: per-layer needs, plus the small fixed memory of a dealer or verifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Layers in execution order.
    pub layers: Vec<LayerNeeds>,
    /// Memory of the dealer and of the verifier (they stream; they hold no model), bytes.
    pub aux_memory_bytes: u64,
}

impl ModelProfile {
    /// Per-layer party memory, the input of [`partition`].
    pub fn layer_memory(&self) -> Vec<u64> {
        self.layers.iter().map(|l| l.memory_bytes).collect()
    }

    /// The demand of running `layers` (a sub-range of the model) on one committee of `parties` parties,
    /// with a dealer and a verifier. Out-of-range indices are clamped to the model.
    pub fn stage_demand(&self, layers: Range<usize>, parties: u8) -> JobDemand {
        let end = layers.end.min(self.layers.len());
        let start = layers.start.min(end);
        let aux = RoleDemand {
            memory_bytes: self.aux_memory_bytes,
            ..RoleDemand::default()
        };
        let (mut party, mut dealer, mut verifier) = (RoleDemand::default(), aux, aux);
        let mut rounds = 0u32;
        for l in &self.layers[start..end] {
            party = party.plus(RoleDemand {
                memory_bytes: l.memory_bytes,
                ops: l.party_ops,
                bytes: l.party_bytes,
            });
            dealer = dealer.plus(RoleDemand {
                memory_bytes: 0,
                ops: l.dealer_ops,
                bytes: l.dealer_bytes,
            });
            verifier = verifier.plus(RoleDemand {
                memory_bytes: 0,
                ops: l.verifier_ops,
                bytes: 0,
            });
            rounds = rounds.saturating_add(l.rounds);
        }
        JobDemand {
            parties,
            party,
            dealer: Some(dealer),
            verifier: Some(verifier),
            rounds,
        }
    }

    /// Splits the model into the fewest contiguous stages whose party memory fits `max_stage_memory` (see
    /// [`partition`]) and returns each stage's layer range with its demand.
    pub fn plan(
        &self,
        parties: u8,
        max_stage_memory: u64,
    ) -> Result<Vec<(Range<usize>, JobDemand)>, PartitionError> {
        let stages = partition(&self.layer_memory(), max_stage_memory)?;
        Ok(stages
            .into_iter()
            .map(|r| (r.clone(), self.stage_demand(r, parties)))
            .collect())
    }
}
