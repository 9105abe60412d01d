//! Seeded pseudo-random generators (ChaCha12) from which parties expand their dealer material.
//!
//! Invariant: a [`Prg`] is a pure function of its [`Seed`]; the dealer, holding every party's seed, reproduces
//! each party's stream exactly, which is what lets it send seeds instead of material.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

/// A 32-byte PRG seed. Its `Debug` form never shows the bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed(pub [u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Seed {
    /// A fresh seed from the operating system's generator.
    pub fn random() -> Self {
        let mut s = [0u8; 32];
        rand::rng().fill_bytes(&mut s);
        Seed(s)
    }

    /// A seed expanded from a number: for reproducible runs and tests only, never for production jobs.
    pub fn random_from(n: u64) -> Self {
        let mut rng = ChaCha12Rng::seed_from_u64(n);
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Seed(s)
    }

    /// Derives an independent seed for `label` and `index` (ChaCha keyed by this seed, stream by label).
    pub fn derive(&self, label: u64, index: u64) -> Seed {
        let mut rng = ChaCha12Rng::from_seed(self.0);
        rng.set_stream(label);
        rng.set_word_pos(u128::from(index) * 8);
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Seed(s)
    }
}

/// A deterministic stream of ring elements and bits.
pub struct Prg {
    rng: ChaCha12Rng,
}

impl Prg {
    /// The stream of `seed`.
    pub fn new(seed: &Seed) -> Self {
        Self {
            rng: ChaCha12Rng::from_seed(seed.0),
        }
    }

    /// `len` uniformly random ring elements.
    pub fn words(&mut self, len: usize) -> Vec<u64> {
        let mut out = vec![0u64; len];
        self.fill(&mut out);
        out
    }

    /// Fills `out` with uniformly random ring elements.
    pub fn fill(&mut self, out: &mut [u64]) {
        for w in out.iter_mut() {
            *w = self.rng.next_u64();
        }
    }

    /// `len` random bits, packed 64 to a word, the unused high bits of the last word cleared.
    pub fn bits(&mut self, len: usize) -> Vec<u64> {
        let mut out = self.words(len.div_ceil(64));
        crate::bits::clear_tail(&mut out, len);
        out
    }
}
