//! AES-128 in counter mode on x86-64 with VAES and AVX-512F: four blocks per instruction, several registers in
//! flight.
//!
//! The stream is exactly [`super::Prg`]'s: for a key `k` and a starting counter `c` (a 128-bit integer), block
//! `j` is `AES-128_k((c + j) mod 2^128)`, the counter encrypted as its 16 little-endian bytes, and the block's
//! 16 output bytes are read as two little-endian 64-bit words, low word first. The key schedule is FIPS-197's
//! (section 5.2), computed with AES-NI's `aeskeygenassist`.
//!
//! Invariants: a [`Keys`] exists only where the CPU supports AES-NI, VAES and AVX-512F (its constructor
//! checks), which is what makes calling the `target_feature` functions below sound; the kernel never sees a
//! counter range whose low 64 bits wrap ([`Keys::ctr`] splits the run there), so it adds within the low words
//! only, and the carry into the high word is taken in `u128` arithmetic between runs.

use std::arch::x86_64::{
    __m128i, __m512i, _mm512_add_epi64, _mm512_aesenc_epi128, _mm512_aesenclast_epi128,
    _mm512_broadcast_i32x4, _mm512_mask_storeu_epi64, _mm512_set_epi64, _mm512_setzero_si512,
    _mm512_storeu_si512, _mm512_xor_si512, _mm_aeskeygenassist_si128, _mm_loadu_si128,
    _mm_set_epi64x, _mm_shuffle_epi32, _mm_slli_si128, _mm_xor_si128,
};
use std::mem::MaybeUninit;

/// Registers of four blocks each encrypted per iteration of the main loop (enough independent `vaesenc`s to
/// cover the instruction's latency).
const LANES: usize = 4;

/// Words per 512-bit register: four blocks of two words.
const WORDS: usize = 8;

/// The eleven AES-128 round keys. Holding one proves the CPU has AES-NI, VAES and AVX-512F.
pub(super) struct Keys([__m128i; 11]);

impl Keys {
    /// The round keys of `key`, or `None` where the CPU lacks AES-NI, VAES or AVX-512F.
    pub(super) fn new(key: &[u8; 16]) -> Option<Self> {
        let available = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("vaes")
            && std::arch::is_x86_feature_detected!("avx512f");
        if !available {
            return None;
        }
        // SAFETY: AES-NI is available (checked above).
        Some(Self(unsafe { expand(key) }))
    }

    /// Writes the keystream blocks for counters `counter, counter + 1, ...` (wrapping at 2^128) into `out`,
    /// two words per block: `out.len() / 2` blocks. `out.len()` must be even; every word is written.
    pub(super) fn ctr(&self, counter: u128, out: &mut [MaybeUninit<u64>]) {
        assert!(out.len().is_multiple_of(2), "whole blocks only");
        let mut counter = counter;
        let mut rest = out;
        while rest.len() >= 2 {
            let lo = counter as u64;
            let hi = (counter >> 64) as u64;
            // Blocks before the low word wraps: lo, lo + 1, ..., u64::MAX.
            let room = usize::try_from(u64::MAX - lo).map_or(usize::MAX, |r| r.saturating_add(1));
            let n = (rest.len() / 2).min(room);
            let (run, tail) = rest.split_at_mut(2 * n);
            // SAFETY: a `Keys` exists only where AES-NI, VAES and AVX-512F are available (see `new`).
            unsafe { ctr_run(&self.0, lo, hi, run) };
            counter = counter.wrapping_add(n as u128);
            rest = tail;
        }
    }
}

/// The next round key of FIPS-197's AES-128 schedule: words `w[i..i + 4]` from `w[i - 4..i]` (`prev`), with
/// `RCON` the round constant `Rcon[i / 4]`.
#[target_feature(enable = "aes")]
fn next_round_key<const RCON: i32>(prev: __m128i) -> __m128i {
    // Dword 3 of `aeskeygenassist` is RotWord(SubWord(w[i - 1])) xor Rcon: the schedule's `temp` for w[i].
    let temp = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<RCON>(prev));
    // w[i + j] = temp ^ w[i - 4] ^ ... ^ w[i - 4 + j]: a prefix xor of `prev`'s dwords, then `temp`.
    let mut k = _mm_xor_si128(prev, _mm_slli_si128::<4>(prev));
    k = _mm_xor_si128(k, _mm_slli_si128::<8>(k));
    _mm_xor_si128(k, temp)
}

/// FIPS-197's AES-128 key expansion: round key 0 is the key itself, each later one follows from the one before.
#[target_feature(enable = "aes")]
fn expand(key: &[u8; 16]) -> [__m128i; 11] {
    // SAFETY: `key` is 16 readable bytes; the load is unaligned.
    let k0 = unsafe { _mm_loadu_si128(key.as_ptr().cast()) };
    let k1 = next_round_key::<0x01>(k0);
    let k2 = next_round_key::<0x02>(k1);
    let k3 = next_round_key::<0x04>(k2);
    let k4 = next_round_key::<0x08>(k3);
    let k5 = next_round_key::<0x10>(k4);
    let k6 = next_round_key::<0x20>(k5);
    let k7 = next_round_key::<0x40>(k6);
    let k8 = next_round_key::<0x80>(k7);
    let k9 = next_round_key::<0x1b>(k8);
    let k10 = next_round_key::<0x36>(k9);
    [k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10]
}

/// AES-128 of the four blocks in `x` under the broadcast round keys `k`.
#[target_feature(enable = "avx512f,vaes")]
fn encrypt4(k: &[__m512i; 11], x: __m512i) -> __m512i {
    let mut s = _mm512_xor_si512(x, k[0]);
    for key in &k[1..10] {
        s = _mm512_aesenc_epi128(s, *key);
    }
    _mm512_aesenclast_epi128(s, k[10])
}

/// Writes the keystream of counters `hi * 2^64 + lo + j`, `j < out.len() / 2`, into `out` (even length). The
/// caller keeps `lo + out.len() / 2 - 1 <= u64::MAX`: the low word never wraps inside one run.
#[target_feature(enable = "avx512f,vaes,aes")]
fn ctr_run(rk: &[__m128i; 11], lo: u64, hi: u64, out: &mut [MaybeUninit<u64>]) {
    let mut k = [_mm512_setzero_si512(); 11];
    for (dst, src) in k.iter_mut().zip(rk) {
        *dst = _mm512_broadcast_i32x4(*src);
    }
    // Lanes are words: block b of a register is lanes 2b (low) and 2b + 1 (high).
    let base = _mm512_broadcast_i32x4(_mm_set_epi64x(hi as i64, lo as i64));
    let mut ctr = _mm512_add_epi64(base, _mm512_set_epi64(0, 3, 0, 2, 0, 1, 0, 0));
    let step = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
    let mut batches = out.chunks_exact_mut(LANES * WORDS);
    for batch in &mut batches {
        let mut s = [ctr; LANES];
        for x in &mut s {
            *x = _mm512_xor_si512(ctr, k[0]);
            ctr = _mm512_add_epi64(ctr, step);
        }
        for key in &k[1..10] {
            for x in &mut s {
                *x = _mm512_aesenc_epi128(*x, *key);
            }
        }
        for (x, dst) in s.iter().zip(batch.chunks_exact_mut(WORDS)) {
            // SAFETY: `dst` is 8 writable words (64 bytes); the store is unaligned.
            unsafe {
                _mm512_storeu_si512(dst.as_mut_ptr().cast(), _mm512_aesenclast_epi128(*x, k[10]))
            };
        }
    }
    let mut quads = batches.into_remainder().chunks_exact_mut(WORDS);
    for dst in &mut quads {
        let x = encrypt4(&k, ctr);
        ctr = _mm512_add_epi64(ctr, step);
        // SAFETY: `dst` is 8 writable words (64 bytes); the store is unaligned.
        unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), x) };
    }
    let tail = quads.into_remainder();
    if !tail.is_empty() {
        // Fewer than four blocks left (2, 4 or 6 words): a masked store writes only those lanes.
        let mask = (1u8 << tail.len()) - 1;
        // SAFETY: the mask selects the first `tail.len()` lanes, all inside `tail`; masked-off lanes are neither
        // written nor faulted on.
        unsafe { _mm512_mask_storeu_epi64(tail.as_mut_ptr().cast(), mask, encrypt4(&k, ctr)) };
    }
}
