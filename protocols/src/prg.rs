//! Seeded pseudo-random generators from which parties expand their dealer material: AES-128 in counter mode
//! (the seed's first 16 bytes are the key, its last 16 the initial counter block), the keystream read as
//! little-endian 64-bit words. Seed derivation uses ChaCha12.
//!
//! Invariant: a [`Prg`] is a pure function of its [`Seed`]; the dealer, holding every party's seed, reproduces
//! each party's stream exactly, which is what lets it send seeds instead of material. A draw of any length
//! continues the stream where the previous draw stopped, so how the words are split into draws does not
//! change them.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128, Block};
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

/// Words produced per request when a draw goes through a buffer.
const CHUNK: usize = 512;

/// The two little-endian words of a keystream block.
fn block_words(b: &Block) -> (u64, u64) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
}

/// A deterministic stream of ring elements and bits.
pub struct Prg {
    cipher: Aes128,
    /// The next counter block (wrapping).
    counter: u128,
    /// The second word of a block whose first word ended the previous draw.
    pending: Option<u64>,
}

/// Blocks encrypted per batch (the cipher pipelines several blocks at a time).
const BLOCKS: usize = 64;

impl Prg {
    /// The stream of `seed`.
    pub fn new(seed: &Seed) -> Self {
        let mut key = [0u8; 16];
        key.copy_from_slice(&seed.0[..16]);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&seed.0[16..]);
        Self {
            cipher: Aes128::new(&key.into()),
            counter: u128::from_le_bytes(iv),
            pending: None,
        }
    }

    /// Encrypts the next `blocks.len()` counter blocks into `blocks`.
    fn keystream(&mut self, blocks: &mut [Block]) {
        for b in blocks.iter_mut() {
            *b = self.counter.to_le_bytes().into();
            self.counter = self.counter.wrapping_add(1);
        }
        self.cipher.encrypt_blocks(blocks);
    }

    /// Fills `out` with uniformly random ring elements: the next `out.len()` words of the stream.
    pub fn fill(&mut self, out: &mut [u64]) {
        let mut rest = out;
        if rest.is_empty() {
            return;
        }
        if let Some(w) = self.pending.take() {
            rest[0] = w;
            rest = &mut rest[1..];
        }
        let mut blocks = [Block::default(); BLOCKS];
        while rest.len() >= 2 {
            let n = (rest.len() / 2).min(BLOCKS);
            self.keystream(&mut blocks[..n]);
            let (head, tail) = rest.split_at_mut(2 * n);
            for (pair, b) in head.chunks_exact_mut(2).zip(&blocks[..n]) {
                let (lo, hi) = block_words(b);
                pair[0] = lo;
                pair[1] = hi;
            }
            rest = tail;
        }
        if let Some(last) = rest.first_mut() {
            self.keystream(&mut blocks[..1]);
            let (lo, hi) = block_words(&blocks[0]);
            *last = lo;
            self.pending = Some(hi);
        }
    }

    /// `len` uniformly random ring elements.
    pub fn words(&mut self, len: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(len);
        self.extend(&mut out, len);
        out
    }

    /// Appends `len` uniformly random ring elements to `out` (the stream of [`Self::fill`]), through a small
    /// buffer, so the destination is written once and never zero-filled first.
    pub fn extend(&mut self, out: &mut Vec<u64>, len: usize) {
        let mut block = [0u64; CHUNK];
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK);
            self.fill(&mut block[..n]);
            out.extend_from_slice(&block[..n]);
            left -= n;
        }
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

    /// Moves `words` words ahead in the stream without producing them: the next draw continues as if
    /// `words(words)` had been drawn. Costs at most one block's encryption (counter mode seeks).
    pub fn skip(&mut self, words: u64) {
        let mut left = words;
        if left == 0 {
            return;
        }
        if self.pending.take().is_some() {
            left -= 1;
        }
        self.counter = self.counter.wrapping_add(u128::from(left / 2));
        if left % 2 == 1 {
            let mut block = [Block::default()];
            self.keystream(&mut block);
            self.pending = Some(block_words(&block[0]).1);
        }
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
    fn draws_continue_one_aes_ctr_stream_however_they_are_split() {
        let seed = Seed::random_from(3);
        let mut whole = Prg::new(&seed);
        let all = whole.words(3000);
        // The stream is AES-128(key, iv + j), words little-endian.
        let key: [u8; 16] = seed.0[..16].try_into().expect("16 bytes");
        let iv = u128::from_le_bytes(seed.0[16..].try_into().expect("16 bytes"));
        let cipher = Aes128::new(&key.into());
        for j in [0usize, 1, 700, 1499] {
            let mut b: Block = iv.wrapping_add(j as u128).to_le_bytes().into();
            cipher.encrypt_block(&mut b);
            assert_eq!(block_words(&b), (all[2 * j], all[2 * j + 1]));
        }
        // Odd lengths and lengths past one batch, so that blocks are split between draws.
        let mut split = Prg::new(&seed);
        let mut got = Vec::new();
        for len in [1usize, 3, 0, 7, 129, 513, 1000, 2] {
            got.extend(split.words(len));
        }
        let mut extended = Vec::new();
        split.extend(&mut extended, 3000 - got.len());
        got.extend(extended);
        assert_eq!(got, all);
        let (mut a, mut b) = (Prg::new(&seed), Prg::new(&seed));
        let pairs: Vec<u128> = a
            .words(2 * 700)
            .chunks_exact(2)
            .map(|c| u128::from(c[0]) | (u128::from(c[1]) << 64))
            .collect();
        assert_eq!(b.wide(700), pairs);
        // A wide draw after an odd draw continues the stream too.
        let (mut c, mut d) = (Prg::new(&seed), Prg::new(&seed));
        c.words(1);
        let w = c.wide(3);
        let x = d.words(7);
        assert_eq!(w[0], u128::from(x[1]) | (u128::from(x[2]) << 64));
    }

    #[test]
    fn skipping_lands_where_drawing_would_have() {
        let seed = Seed::random_from(9);
        let all = Prg::new(&seed).words(4000);
        // Skips of every parity, from both an aligned and a split block.
        let mut prg = Prg::new(&seed);
        let mut at = 0usize;
        for (skip, draw) in [
            (0u64, 1usize),
            (1, 2),
            (2, 3),
            (5, 0),
            (0, 4),
            (7, 1),
            (1000, 9),
            (1, 1),
        ] {
            prg.skip(skip);
            at += skip as usize;
            assert_eq!(prg.words(draw), all[at..at + draw], "after skipping {skip}");
            at += draw;
        }
        assert_eq!(prg.words(3), all[at..at + 3]);
    }
}
