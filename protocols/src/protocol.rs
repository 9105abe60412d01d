//! Every protocol veil runs, named in one place: the CLI, the bench, the sweep, the report and the engine's
//! runners take a [`Protocol`], and its name is spelled only here.

use serde::{Deserialize, Serialize};

/// A protocol a committee runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// n-party additive sharing with a dealer; honest-but-curious (the default).
    #[default]
    Semi2k,
    /// n-party additive sharing with MACs and a dealer; malicious with abort.
    Spdz2k,
    /// Three-party replicated sharing with no dealer; honest-but-curious, honest majority.
    Rep3,
    /// `rep3` with malicious security with abort (see `rep3m/mod.rs`): openings checked by digests, every
    /// product, matrix product and AND gate reshare proven by a distributed zero-knowledge proof before any
    /// output is released, outputs refused by the client if two holders disagree.
    Rep3m,
}

impl Protocol {
    /// Every protocol, in CLI order.
    pub const ALL: [Protocol; 4] = [
        Protocol::Semi2k,
        Protocol::Spdz2k,
        Protocol::Rep3,
        Protocol::Rep3m,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Semi2k => "semi2k",
            Protocol::Spdz2k => "spdz2k",
            Protocol::Rep3 => crate::rep3::NAME,
            Protocol::Rep3m => crate::rep3m::NAME,
        }
    }

    /// Parses a CLI name.
    pub fn parse(name: &str) -> Option<Protocol> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether a dealer supplies the parties' correlated randomness.
    pub fn has_dealer(self) -> bool {
        !matches!(self, Protocol::Rep3 | Protocol::Rep3m)
    }

    /// Whether the protocol detects a deviating party (malicious security with abort).
    pub fn verifies(self) -> bool {
        matches!(self, Protocol::Spdz2k | Protocol::Rep3m)
    }

    /// Whether a committee running it has a verifier: exactly the protocols that verify
    /// ([`Self::verifies`]). `spdz2k`'s verifier checks the MAC-check transcripts and signs the receipt,
    /// `rep3m`'s the evidence of its product proofs. `semi2k` and `rep3` detect nothing, so a verifier would
    /// have no task: their committees have none, and no node is held idle for one. The scheduler draws, and
    /// reserves a node for, the verifier role iff this holds, and the dealer role iff [`Self::has_dealer`].
    pub fn has_verifier(self) -> bool {
        self.verifies()
    }

    /// Whether a committee of `parties` parties can run it.
    pub fn supports_parties(self, parties: usize) -> bool {
        match self {
            Protocol::Rep3 | Protocol::Rep3m => parties == 3,
            Protocol::Semi2k | Protocol::Spdz2k => parties >= 2,
        }
    }

    /// The committee sizes [`Self::supports_parties`] accepts, in words (for error messages).
    pub fn party_requirement(self) -> &'static str {
        match self {
            Protocol::Rep3 | Protocol::Rep3m => "exactly 3 parties",
            Protocol::Semi2k | Protocol::Spdz2k => "at least 2 parties",
        }
    }
}

/// A protocol name that is none of [`Protocol::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {name:?}: expected semi2k, spdz2k, rep3 or rep3m")]
pub struct UnknownProtocol {
    /// The name given (at most 32 characters of it).
    pub name: String,
}

impl std::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    /// Parses a CLI name ([`Protocol::parse`]).
    fn from_str(s: &str) -> Result<Protocol, UnknownProtocol> {
        Protocol::parse(s).ok_or_else(|| UnknownProtocol {
            name: s.chars().take(32).collect(),
        })
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_roles_follow_the_protocol() {
        for p in Protocol::ALL {
            assert_eq!(p.to_string().parse::<Protocol>(), Ok(p));
        }
        let e = "rep4".parse::<Protocol>().unwrap_err();
        assert!(e.to_string().contains("unknown protocol \"rep4\""), "{e}");
        // (dealer, verifier): the roles a committee has, hence the nodes the scheduler holds.
        let roles: Vec<(bool, bool)> = Protocol::ALL
            .iter()
            .map(|p| (p.has_dealer(), p.has_verifier()))
            .collect();
        assert_eq!(
            roles,
            [(true, false), (true, true), (false, false), (false, true)]
        );
        assert!(Protocol::ALL
            .iter()
            .all(|p| !p.verifies() || p.has_verifier()));
    }
}
