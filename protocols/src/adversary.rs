//! Deliberate deviations for the protocol lab (`veil bench --adversary`): one party misbehaves once, at a
//! chosen point of the job, so that tests and benchmarks can show that `spdz2k` aborts instead of returning a
//! wrong answer. Nothing in production sets an adversary.

use serde::{Deserialize, Serialize};

/// How the deviating party misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deviation {
    /// Adds an error (modulo 2^64, or a flipped bit) to a share it sends in the chosen opening.
    FlipShare,
    /// Uses a bad triple: adds an error to its share of the chosen triple's product.
    WrongTriple,
    /// Adds an error to its MAC share of a value it opens in the chosen opening.
    BadMac,
    /// Stays silent from the chosen opening on.
    SkipRound,
    /// Sends the output's recipient a wrong share of the output.
    WrongOutput,
    /// Adds an error to the first word of the chosen reshare it sends in a product (`rep3m`: its summand
    /// of a product, matrix product or bit-to-ring conversion; the product proof must catch it).
    WrongProduct,
}

impl Deviation {
    /// The deviations of the `spdz2k` lab, in CLI order (its tests strike each of them).
    pub const ALL: [Deviation; 5] = [
        Deviation::FlipShare,
        Deviation::WrongTriple,
        Deviation::BadMac,
        Deviation::SkipRound,
        Deviation::WrongOutput,
    ];

    /// Every deviation, in CLI order: [`Self::ALL`], then `wrong-product`, which only `rep3m` strikes (its
    /// reshares; `spdz2k` has none).
    pub const EVERY: [Deviation; 6] = [
        Deviation::FlipShare,
        Deviation::WrongTriple,
        Deviation::BadMac,
        Deviation::SkipRound,
        Deviation::WrongOutput,
        Deviation::WrongProduct,
    ];

    /// The CLI name (`flip-share`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Deviation::FlipShare => "flip-share",
            Deviation::WrongTriple => "wrong-triple",
            Deviation::BadMac => "bad-mac",
            Deviation::SkipRound => "skip-round",
            Deviation::WrongOutput => "wrong-output",
            Deviation::WrongProduct => "wrong-product",
        }
    }

    /// Parses a `spdz2k` lab name: one of [`Self::ALL`]. `wrong-product`, which `spdz2k` would not strike,
    /// is not among them; `veil bench --adversary` takes it from [`Self::EVERY`] for `rep3m` only (the `rep3m`
    /// lab also runs it in `protocols/tests/rep3m.rs` and `engine/tests/rep3m_inference.rs`).
    pub fn parse(name: &str) -> Option<Deviation> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// One deviation: which, by which party, where, and the error it injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adversary {
    /// The misbehaviour.
    pub kind: Deviation,
    /// The deviating party.
    pub party: usize,
    /// The index of the opening round (or triple use, output element, or `rep3m` reshare) where it strikes.
    pub at: usize,
    /// The error added (non-zero modulo 2^64).
    pub delta: u64,
}

#[cfg(test)]
mod tests {
    use super::Deviation;

    #[test]
    fn the_cli_names_are_the_spdz2k_labs_and_wrong_product_is_named_but_not_parsed() {
        for d in Deviation::ALL {
            assert_eq!(Deviation::parse(d.name()), Some(d));
        }
        assert_eq!(Deviation::WrongProduct.name(), "wrong-product");
        assert_eq!(Deviation::parse("wrong-product"), None);
        assert_eq!(Deviation::EVERY.len(), Deviation::ALL.len() + 1);
    }
}
