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

/// Words produced per keystream request.
const CHUNK: usize = 512;

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

    /// Fills `out` with uniformly random ring elements.
    ///
    /// The stream is the same as drawing `next_u64` once per word (each word is the next 8 keystream bytes,
    /// little-endian), but the keystream is written in bulk, several blocks at a time, straight into `out`.
    pub fn fill(&mut self, out: &mut [u64]) {
        rand::Rng::fill(&mut self.rng, out);
    }

    /// `len` uniformly random ring elements.
    pub fn words(&mut self, len: usize) -> Vec<u64> {
        let mut out = vec![0u64; len];
        self.fill(&mut out);
        out
    }

    /// Appends `len` uniformly random ring elements to `out` (the stream of [`Self::fill`]).
    pub fn extend(&mut self, out: &mut Vec<u64>, len: usize) {
        let start = out.len();
        out.resize(start + len, 0);
        self.fill(&mut out[start..]);
    }

    /// `len` uniformly random elements of Z_2^128, each from two consecutive words (low first): the same
    /// values as pairing up `words(2 * len)`.
    pub fn wide(&mut self, len: usize) -> Vec<u128> {
        let mut out = Vec::with_capacity(len);
        let mut block = [0u64; CHUNK];
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK / 2);
            self.fill(&mut block[..2 * n]);
            out.extend(
                block[..2 * n]
                    .chunks_exact(2)
                    .map(|c| u128::from(c[0]) | (u128::from(c[1]) << 64)),
            );
            left -= n;
        }
        out
    }

    /// `len` random bits, packed 64 to a word, the unused high bits of the last word cleared.
    pub fn bits(&mut self, len: usize) -> Vec<u64> {
        let mut out = self.words(len.div_ceil(64));
        crate::bits::clear_tail(&mut out, len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_fill_is_the_word_by_word_stream() {
        let seed = Seed::random_from(3);
        let mut bulk = Prg::new(&seed);
        let mut single = ChaCha12Rng::from_seed(seed.0);
        // Odd lengths, one crossing the chunk size, so that blocks are split between calls.
        for len in [1usize, 3, 7, 513, 1000, 2] {
            let got = bulk.words(len);
            let want: Vec<u64> = (0..len).map(|_| single.next_u64()).collect();
            assert_eq!(got, want);
        }
        let (mut a, mut b) = (Prg::new(&seed), Prg::new(&seed));
        let pairs: Vec<u128> = a
            .words(2 * 700)
            .chunks_exact(2)
            .map(|c| u128::from(c[0]) | (u128::from(c[1]) << 64))
            .collect();
        assert_eq!(b.wide(700), pairs);
    }
}
