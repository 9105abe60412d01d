//! Pairwise PRF keys and the correlated randomness the three parties draw from them, with no dealer.
//!
//! At job start each party `i` samples a key `k_i` and sends it to party `i - 1` (one 32-byte message per
//! party, one round). Afterwards party `i` holds `k_i` (shared with `i - 1`) and `k_{i+1}` (shared with
//! `i + 1`); key `k_j` is exactly the key of component `j`'s two holders. Each key drives one AES-128-CTR
//! stream ([`crate::prg::Prg`]).
//!
//! - **Random component** `j`: both holders of component `j` draw it from `k_j`; a random sharing is all three.
//! - **Zero sharing**: `alpha_i = F(k_i) - F(k_{i+1})` sums to zero over the parties (XOR for bits); each
//!   `alpha_i` is uniform to the other two parties (each misses one of its keys).
//!
//! Invariant: the two holders of a key draw from it in the same order and amounts (every protocol step
//! draws from a key only in code that both holders run with the same public shapes), so their streams stay
//! in step; a party never draws from a key it does not hold.

use crate::prg::{Prg, Seed};
use crate::ring::to_bytes;

/// A party's two PRF streams.
pub(crate) struct PairKeys {
    me: usize,
    /// Stream of `k_me` (shared with party `me - 1`).
    own: Prg,
    /// Stream of `k_{me+1}` (shared with party `me + 1`).
    next: Prg,
    /// Salts derived once from `k_me` and `k_{me+1}` (no stream drawn): `rep3m` blinds the opening digests
    /// it records for an outside verifier with them (`rep3m::transcript`).
    salts: (Seed, Seed),
}

impl PairKeys {
    /// The streams of party `me` from its own key and the one its next neighbour sent.
    pub(crate) fn new(me: usize, own: &Seed, next: &Seed) -> Self {
        let salt = |k: &Seed| k.derive(crate::rep3m::transcript::SALT_LABEL, 0);
        Self {
            me,
            own: Prg::new(own),
            next: Prg::new(next),
            salts: (salt(own), salt(next)),
        }
    }

    /// The salts derived from `k_me` and `k_{me+1}` (see the field).
    pub(crate) fn salts(&self) -> &(Seed, Seed) {
        &self.salts
    }

    /// `len` words of component `comp`'s stream; this party must hold `comp` (`me` or `me + 1`).
    pub(crate) fn component(&mut self, comp: usize, len: usize) -> Vec<u64> {
        if comp == self.me {
            self.own.words(len)
        } else {
            debug_assert_eq!(
                comp,
                (self.me + 1) % 3,
                "a component this party does not hold"
            );
            self.next.words(len)
        }
    }

    /// This party's summand of an additive zero sharing of `len` words.
    pub(crate) fn zero(&mut self, len: usize) -> Vec<u64> {
        let a = self.own.words(len);
        let b = self.next.words(len);
        crate::ring::sub(&a, &b)
    }

    /// This party's summand of an additive zero sharing of `len` words as its two draws, the own key's and
    /// the next key's (the summand is their difference): `rep3m` records them for its product proof.
    pub(crate) fn zero_parts(&mut self, len: usize) -> (Vec<u64>, Vec<u64>) {
        (self.own.words(len), self.next.words(len))
    }

    /// A fresh seed drawn from component `comp`'s stream (4 words), for a sub-protocol whose randomness
    /// both holders of the key must share (`rep3m`'s product proof); this party must hold `comp`.
    pub(crate) fn fork(&mut self, comp: usize) -> Seed {
        let words = self.component(comp, 4);
        let mut s = [0u8; 32];
        s.copy_from_slice(&to_bytes(&words));
        Seed(s)
    }

    /// This party's summand of an XOR zero sharing of `len` words.
    pub(crate) fn zero_bits(&mut self, len: usize) -> Vec<u64> {
        let a = self.own.words(len);
        let b = self.next.words(len);
        crate::bits::xor(&a, &b)
    }
}
