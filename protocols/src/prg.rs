//! Seeded pseudo-random generators from which parties expand their dealer material: AES-128 in counter mode
//! (the seed's first 16 bytes are the key, its last 16 the initial counter block), the keystream read as
//! little-endian 64-bit words. Seed derivation uses ChaCha12.
//!
//! The keystream is computed by a VAES/AVX-512 kernel (`prg/vaes.rs`) where the CPU has VAES, AVX-512F and
//! AES-NI, and by the `aes` crate elsewhere; both write blocks straight into the caller's words and produce the
//! same stream bit for bit (the tests compare them).
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
use std::mem::MaybeUninit;

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

#[cfg(target_arch = "x86_64")]
mod vaes;

/// The block cipher behind a [`Prg`]: the VAES kernel where the CPU has it, else the `aes` crate (which picks
/// AES-NI or a constant-time software implementation itself). Both produce the same keystream.
enum Cipher {
    #[cfg(target_arch = "x86_64")]
    Vaes(vaes::Keys),
    Portable(Box<Aes128>),
}

/// Blocks the portable path writes as counters and then encrypts in place, per pass (16 KiB: stays in L1).
const PORTABLE_BLOCKS: usize = 1024;

// The portable path views pairs of words as cipher blocks: 16 bytes, no alignment beyond a word's.
const _: () = assert!(
    std::mem::size_of::<Block>() == 16
        && std::mem::align_of::<Block>() <= std::mem::align_of::<u64>()
);

impl Cipher {
    /// Writes the keystream blocks of counters `counter, counter + 1, ...` (wrapping at 2^128) into `out`, two
    /// little-endian words per block: `out.len() / 2` blocks. `out.len()` must be even (checked), and every word
    /// is written: the callers' `set_len` relies on it.
    fn ctr(&self, counter: u128, out: &mut [MaybeUninit<u64>]) {
        assert!(out.len().is_multiple_of(2), "whole blocks only");
        match self {
            #[cfg(target_arch = "x86_64")]
            Cipher::Vaes(keys) => keys.ctr(counter, out),
            Cipher::Portable(cipher) => portable_ctr(cipher, counter, out),
        }
    }
}

/// [`Cipher::ctr`] with the `aes` crate: each pass writes its counter blocks' bytes into `out` and encrypts
/// them in place.
fn portable_ctr(cipher: &Aes128, counter: u128, out: &mut [MaybeUninit<u64>]) {
    let mut counter = counter;
    for pass in out.chunks_mut(2 * PORTABLE_BLOCKS) {
        let blocks = pass.len() / 2;
        for pair in pass.chunks_exact_mut(2) {
            // The counter's 16 little-endian bytes, as two words whose in-memory bytes are little-endian.
            pair[0].write((counter as u64).to_le());
            pair[1].write(((counter >> 64) as u64).to_le());
            counter = counter.wrapping_add(1);
        }
        // SAFETY: every word of `pass` was written just above, so its `2 * blocks` words are initialised;
        // `Block` is 16 bytes of `u8` (checked above: size 16, alignment at most a word's), valid for any bytes,
        // so the words' memory is `blocks` valid blocks; the exclusive borrow of `pass` is handed on.
        let blocks: &mut [Block] =
            unsafe { std::slice::from_raw_parts_mut(pass.as_mut_ptr().cast::<Block>(), blocks) };
        cipher.encrypt_blocks(blocks);
        #[cfg(target_endian = "big")]
        for pair in blocks.iter_mut() {
            let (lo, hi) = block_words(pair);
            pair[..8].copy_from_slice(&lo.to_ne_bytes());
            pair[8..].copy_from_slice(&hi.to_ne_bytes());
        }
    }
}

/// The two little-endian words of a keystream block.
#[cfg(any(test, target_endian = "big"))]
fn block_words(b: &Block) -> (u64, u64) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
}

/// `out` as slots to write, for the writers below, which only ever store initialised words.
fn as_slots(out: &mut [u64]) -> &mut [MaybeUninit<u64>] {
    // SAFETY: `MaybeUninit<u64>` has `u64`'s layout; every writer of the slots (`Prg::stream_into` and the
    // ciphers) stores initialised words only, so `out` stays initialised; the exclusive borrow is handed on.
    unsafe {
        std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<MaybeUninit<u64>>(), out.len())
    }
}

/// A deterministic stream of ring elements and bits.
pub struct Prg {
    cipher: Cipher,
    /// The next counter block (wrapping).
    counter: u128,
    /// The second word of a block whose first word ended the previous draw.
    pending: Option<u64>,
}

impl Prg {
    /// The stream of `seed`.
    pub fn new(seed: &Seed) -> Self {
        let (key, counter) = Self::key_and_counter(seed);
        #[cfg(target_arch = "x86_64")]
        if let Some(keys) = vaes::Keys::new(&key) {
            return Self {
                cipher: Cipher::Vaes(keys),
                counter,
                pending: None,
            };
        }
        Self::portable(&key, counter)
    }

    /// The seed's key (its first 16 bytes) and initial counter (its last 16, little-endian).
    fn key_and_counter(seed: &Seed) -> ([u8; 16], u128) {
        let mut key = [0u8; 16];
        key.copy_from_slice(&seed.0[..16]);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&seed.0[16..]);
        (key, u128::from_le_bytes(iv))
    }

    /// The stream of `key` from `counter` through the `aes` crate, whatever the CPU.
    fn portable(key: &[u8; 16], counter: u128) -> Self {
        Self {
            cipher: Cipher::Portable(Box::new(Aes128::new(key.into()))),
            counter,
            pending: None,
        }
    }

    /// Which block cipher implementation this stream runs on: `"vaes"` or `"aes-crate"`.
    #[cfg(test)]
    pub(crate) fn backend_name(&self) -> &'static str {
        match self.cipher {
            #[cfg(target_arch = "x86_64")]
            Cipher::Vaes(_) => "vaes",
            Cipher::Portable(_) => "aes-crate",
        }
    }

    /// Writes the next `out.len() / 2` blocks (`out.len()` even) and moves the counter past them.
    fn blocks(&mut self, out: &mut [MaybeUninit<u64>]) {
        self.cipher.ctr(self.counter, out);
        self.counter = self.counter.wrapping_add((out.len() / 2) as u128);
    }

    /// The next keystream block's two words.
    fn block(&mut self) -> [u64; 2] {
        let mut b = [0u64; 2];
        self.blocks(as_slots(&mut b));
        b
    }

    /// Writes the next `out.len()` words of the stream into `out`, every slot of it.
    fn stream_into(&mut self, out: &mut [MaybeUninit<u64>]) {
        let mut rest = out;
        if rest.is_empty() {
            return;
        }
        if let Some(w) = self.pending.take() {
            rest[0].write(w);
            rest = &mut rest[1..];
        }
        let even = rest.len() & !1;
        let (head, tail) = rest.split_at_mut(even);
        self.blocks(head);
        if let Some(last) = tail.first_mut() {
            let [lo, hi] = self.block();
            last.write(lo);
            self.pending = Some(hi);
        }
    }

    /// Fills `out` with uniformly random ring elements: the next `out.len()` words of the stream.
    pub fn fill(&mut self, out: &mut [u64]) {
        self.stream_into(as_slots(out));
    }

    /// `len` uniformly random ring elements.
    pub fn words(&mut self, len: usize) -> Vec<u64> {
        let mut out = Vec::new();
        self.extend(&mut out, len);
        out
    }

    /// Appends `len` uniformly random ring elements to `out` (the stream of [`Self::fill`]), written once
    /// straight into its spare capacity, never zero-filled first.
    pub fn extend(&mut self, out: &mut Vec<u64>, len: usize) {
        out.reserve(len);
        let start = out.len();
        self.stream_into(&mut out.spare_capacity_mut()[..len]);
        // SAFETY: `reserve` made room for `len` more words and `stream_into` wrote all of them.
        unsafe { out.set_len(start + len) };
    }

    /// `len` uniformly random elements of Z_2^128, each from two consecutive words (low first): the same
    /// values as pairing up `words(2 * len)`.
    pub fn wide(&mut self, len: usize) -> Vec<u128> {
        #[cfg(target_endian = "little")]
        {
            let mut out: Vec<u128> = Vec::with_capacity(len);
            let spare = &mut out.spare_capacity_mut()[..len];
            // SAFETY: `len` `u128` slots are `2 * len` `u64` slots (size 16 = 2 * 8, alignment 16 >= 8) of the
            // same exclusively borrowed allocation; on a little-endian target the `u128` made of the words
            // `[lo, hi]` in memory is `lo | hi << 64`.
            let words = unsafe {
                std::slice::from_raw_parts_mut(
                    spare.as_mut_ptr().cast::<MaybeUninit<u64>>(),
                    2 * len,
                )
            };
            self.stream_into(words);
            // SAFETY: `stream_into` wrote all `2 * len` words, i.e. the `len` elements, within the capacity.
            unsafe { out.set_len(len) };
            out
        }
        #[cfg(not(target_endian = "little"))]
        {
            let words = self.words(2 * len);
            words
                .chunks_exact(2)
                .map(|c| u128::from(c[0]) | (u128::from(c[1]) << 64))
                .collect()
        }
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
            self.pending = Some(self.block()[1]);
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

#[cfg(test)]
mod backend_tests {
    use super::*;

    /// A seed with the given key bytes and initial counter.
    fn seed_at(key: [u8; 16], counter: u128) -> Seed {
        let mut s = [0u8; 32];
        s[..16].copy_from_slice(&key);
        s[16..].copy_from_slice(&counter.to_le_bytes());
        Seed(s)
    }

    /// The stream of `seed` on the default backend (asserted to be VAES where the CPU has it) and on the `aes`
    /// crate.
    fn both(seed: &Seed) -> (Prg, Prg) {
        let fast = Prg::new(seed);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("vaes")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("aes")
        {
            assert_eq!(fast.backend_name(), "vaes");
        }
        let (key, counter) = Prg::key_and_counter(seed);
        let portable = Prg::portable(&key, counter);
        assert_eq!(portable.backend_name(), "aes-crate");
        (fast, portable)
    }

    /// Block `j` of the stream computed one block at a time, independently of both backends.
    fn reference_block(seed: &Seed, j: u128) -> (u64, u64) {
        let (key, counter) = Prg::key_and_counter(seed);
        let mut b: Block = counter.wrapping_add(j).to_le_bytes().into();
        Aes128::new(&key.into()).encrypt_block(&mut b);
        block_words(&b)
    }

    #[test]
    fn fips_197_example_vector() {
        // FIPS-197 appendix C.1: AES-128 of 00112233..ff under the key 00010203..0f.
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let plain: [u8; 16] = std::array::from_fn(|i| (i as u8) * 0x11);
        let expected = [
            0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4,
            0xc5, 0x5a,
        ];
        let (mut fast, mut portable) = both(&seed_at(key, u128::from_le_bytes(plain)));
        for prg in [&mut fast, &mut portable] {
            let w = prg.words(2);
            let mut got = [0u8; 16];
            got[..8].copy_from_slice(&w[0].to_le_bytes());
            got[8..].copy_from_slice(&w[1].to_le_bytes());
            assert_eq!(got, expected, "{}", prg.backend_name());
        }
    }

    #[test]
    fn backends_agree_for_many_seeds_and_lengths() {
        let lens = [
            0usize, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255,
            1000, 2048, 4097, 100_003,
        ];
        for n in 0..24u64 {
            let seed = Seed::random_from(1000 + n);
            for &len in &lens {
                let (mut fast, mut portable) = both(&seed);
                assert_eq!(fast.words(len), portable.words(len), "seed {n}, len {len}");
            }
            let (mut fast, _) = both(&seed);
            let all = fast.words(64);
            for j in [0usize, 1, 17, 31] {
                assert_eq!(
                    reference_block(&seed, j as u128),
                    (all[2 * j], all[2 * j + 1])
                );
            }
        }
    }

    #[test]
    fn backends_agree_on_mixed_draws() {
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        for n in 0..16u64 {
            let (mut fast, mut portable) = both(&Seed::random_from(50 + n));
            for step in 0..300 {
                let len = match rng.next_u32() % 4 {
                    0 => (rng.next_u32() % 4) as usize,
                    1 => (rng.next_u32() % 40) as usize,
                    2 => (rng.next_u32() % 300) as usize,
                    _ => (rng.next_u32() % 5000) as usize,
                };
                let what = rng.next_u32() % 6;
                let ctx = format!("seed {n}, step {step}, op {what}, len {len}");
                match what {
                    0 => assert_eq!(fast.words(len), portable.words(len), "{ctx}"),
                    1 => {
                        let (mut a, mut b) = (vec![1u64; 3], vec![1u64; 3]);
                        fast.extend(&mut a, len);
                        portable.extend(&mut b, len);
                        assert_eq!(a, b, "{ctx}");
                    }
                    2 => {
                        let (mut a, mut b) = (vec![0u64; len], vec![u64::MAX; len]);
                        fast.fill(&mut a);
                        portable.fill(&mut b);
                        assert_eq!(a, b, "{ctx}");
                    }
                    3 => assert_eq!(fast.wide(len / 2), portable.wide(len / 2), "{ctx}"),
                    4 => assert_eq!(fast.bits(len * 7), portable.bits(len * 7), "{ctx}"),
                    _ => {
                        fast.skip(len as u64);
                        portable.skip(len as u64);
                    }
                }
            }
            assert_eq!(fast.words(33), portable.words(33));
        }
    }

    #[test]
    fn counters_carry_into_the_high_word_and_wrap_at_2_128() {
        let key = Seed::random_from(11).0[..16].try_into().expect("16 bytes");
        let edges = [
            u128::from(u64::MAX),
            (5u128 << 64) | u128::from(u64::MAX),
            u128::MAX,
            u128::MAX ^ (1u128 << 64),
        ];
        for edge in edges {
            for back in [0u128, 1, 2, 3, 4, 5, 7, 15, 16, 17, 40] {
                let seed = seed_at(key, edge.wrapping_sub(back));
                let (mut fast, mut portable) = both(&seed);
                let a = fast.words(200);
                assert_eq!(a, portable.words(200), "edge {edge:#x} - {back}");
                for j in 0..100 {
                    assert_eq!(
                        reference_block(&seed, j),
                        (a[2 * j as usize], a[2 * j as usize + 1]),
                        "edge {edge:#x} - {back}, block {j}"
                    );
                }
                // Odd splits and skips across the carry.
                let (mut fast, mut portable) = both(&seed);
                for len in [1usize, 2, 5, 0, 9] {
                    fast.skip(len as u64);
                    portable.skip(len as u64);
                    assert_eq!(fast.words(len), portable.words(len));
                    assert_eq!(fast.wide(len), portable.wide(len));
                }
            }
        }
    }
}
