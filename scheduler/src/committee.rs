//! A committee (who plays which role) and a placement (a committee plus what it reserved).
//!
//! Invariant of a committee returned by selection: its members are pairwise distinct and no two of them
//! share a value under any configured collusion key (dealer and verifier included).

use serde::{Deserialize, Serialize};

use crate::demand::{JobDemand, Role};
use crate::types::NodeId;

/// The members of one committee, by role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    /// Execution parties, party 0 first.
    pub parties: Vec<NodeId>,
    /// The dealer.
    pub dealer: NodeId,
    /// The verifier.
    pub verifier: NodeId,
}

impl Committee {
    /// Every member with its role: the parties in order, then the dealer, then the verifier.
    pub fn members(&self) -> impl Iterator<Item = (Role, NodeId)> + '_ {
        self.parties
            .iter()
            .enumerate()
            .map(|(i, &n)| (Role::Party(i as u8), n))
            .chain([(Role::Dealer, self.dealer), (Role::Verifier, self.verifier)])
    }

    /// Whether `node` sits on this committee.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members().any(|(_, n)| n == node)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.parties.len() + 2
    }

    /// Always false: a committee has at least a dealer and a verifier.
    pub fn is_empty(&self) -> bool {
        false
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
