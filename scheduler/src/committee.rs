//! A committee (who plays which role) and a placement (a committee plus what it reserved).
//!
//! Invariant of a committee returned by selection: it has exactly the roles of its demand (the parties, a
//! dealer iff the demand names one, a verifier iff the demand names one), its members are pairwise distinct
//! and no two of them share a value under any configured collusion key (dealer and verifier included).

use serde::{Deserialize, Serialize};

use crate::demand::{JobDemand, Role};
use crate::types::NodeId;

/// The members of one committee, by role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    /// Execution parties, party 0 first.
    pub parties: Vec<NodeId>,
    /// The dealer; `None` when the demand has no dealer role.
    pub dealer: Option<NodeId>,
    /// The verifier; `None` when the demand has no verifier role.
    pub verifier: Option<NodeId>,
}

impl Committee {
    /// Every member with its role: the parties in order, then the dealer and the verifier where they exist.
    pub fn members(&self) -> impl Iterator<Item = (Role, NodeId)> + '_ {
        self.parties
            .iter()
            .enumerate()
            .map(|(i, &n)| (Role::Party(i as u8), n))
            .chain(self.dealer.map(|d| (Role::Dealer, d)))
            .chain(self.verifier.map(|v| (Role::Verifier, v)))
    }

    /// Whether `node` sits on this committee.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members().any(|(_, n)| n == node)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.parties.len()
            + usize::from(self.dealer.is_some())
            + usize::from(self.verifier.is_some())
    }

    /// Whether the committee has no member at all (never for one returned by selection).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A committee together with the demand it reserved in the registry: what [`crate::Registry::release`] needs
/// to give the resources back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The committee.
    pub committee: Committee,
    /// What each member reserved.
    pub demand: JobDemand,
}
