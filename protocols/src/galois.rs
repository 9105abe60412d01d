//! The Galois ring `GR(2^64, D)` = `Z_2^64[X] / (F(X))` with `D = 48` and
//! `F(X) = X^48 + X^5 + X^3 + X^2 + 1`, irreducible modulo 2 (checked by Rabin's test in this module's
//! tests), the extension in which `rep3m`'s product proof runs (`rep3m/proof.rs`; Boyle, Gilboa, Ishai, Nof,
//! ASIACRYPT 2020; Abspoel, Cramer, Damgard, Escudero, Yuan, TCC 2019, for Schwartz-Zippel over Galois
//! rings).
//!
//! Facts the proof relies on:
//! - `Z_2^64` embeds as the constants, so an identity over `Z_2^64` holds in the ring exactly when it held
//!   before.
//! - An element is a unit exactly when its reduction modulo 2 (an element of `GF(2^48)`) is non-zero.
//! - **Exceptional set**: the elements whose coefficients are all 0 or 1 ([`Gr::from_mask`]), `2^48` of
//!   them. Two distinct ones differ by a polynomial with coefficients in `{-1, 0, 1}`, not all zero, whose
//!   reduction modulo 2 is non-zero: the difference is a unit. Hence (generalised Schwartz-Zippel) a
//!   non-zero polynomial of degree `t` over the ring vanishes at no more than `t` points of the set: write
//!   it as `2^j g` with `g` non-zero modulo 2; a root `a` of `2^j g` has `g(a) = 0` modulo `2^(64 - j)`, so
//!   modulo 2, and `g mod 2` has at most `t` roots in `GF(2^48)`, which the set's reductions cover once each.
//! - A uniform ring element `theta` and a non-zero `e` of `Z_2^64` give `theta e = 0` with probability at
//!   most `2^-48` (write `e = 2^j e'` with `e'` odd: `theta e = 0` forces `theta = 0` modulo 2).

use crate::gemm::Gemm;
use crate::prg::Prg;

/// Extension degree.
pub const D: usize = 48;

/// The low terms of `F`: `X^48 = -(X^5 + X^3 + X^2 + 1)` in the ring.
const LOW_TERMS: [usize; 4] = [5, 3, 2, 0];

/// Mask of the `D` coefficient bits of an exceptional element.
pub const MASK: u64 = (1 << D) - 1;

/// An element of `GR(2^64, 48)`: coefficient `j` of `X^j` at index `j`. Transparent over its words, so a
/// slice of elements is a row-major `len x D` matrix of words ([`words_of`]) that goes to the gemm kernel
/// without a copy.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Gr(pub [u64; D]);

/// The words of `v`, element after element (`D` words each): the row-major `v.len() x D` matrix of its
/// coefficients.
pub fn words_of(v: &[Gr]) -> &[u64] {
    // SAFETY: `Gr` is `repr(transparent)` over `[u64; D]`, so `v` is `v.len() * D` initialised `u64`s,
    // contiguous and aligned for `u64`; the borrow keeps `v` alive and unaliased-by-writers.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u64>(), v.len() * D) }
}

/// [`words_of`], mutable: every bit pattern of the words is a valid element.
pub fn words_of_mut(v: &mut [Gr]) -> &mut [u64] {
    // SAFETY: as in `words_of`; the exclusive borrow of `v` is handed on to the words, and any `u64`
    // values form a valid `Gr`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u64>(), v.len() * D) }
}

/// Entries per block of the folds and inner products on gemm: a block's scratch (`BLOCK * D` words,
/// 192 KiB) stays in the second-level cache, and a block's product (`BLOCK * D * D` multiply-adds) dwarfs a
/// gemm call's fixed cost. Sums over blocks are wrapping additions, so the blocking changes no result.
const BLOCK: usize = 512;

impl std::fmt::Debug for Gr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gr(..)")
    }
}

impl Default for Gr {
    fn default() -> Self {
        Self::ZERO
    }
}

impl Gr {
    /// Zero.
    pub const ZERO: Gr = Gr([0; D]);

    /// The constant `c` (the embedding of `Z_2^64`).
    pub fn constant(c: u64) -> Gr {
        let mut g = Gr::ZERO;
        g.0[0] = c;
        g
    }

    /// The exceptional-set element whose coefficient `j` is bit `j` of `mask` (bits `D..64` ignored).
    pub fn from_mask(mask: u64) -> Gr {
        let mut g = Gr::ZERO;
        for (j, c) in g.0.iter_mut().enumerate() {
            *c = (mask >> j) & 1;
        }
        g
    }

    /// A uniform element from `prg` (`D` words).
    pub fn random(prg: &mut Prg) -> Gr {
        let mut g = Gr::ZERO;
        prg.fill(&mut g.0);
        g
    }

    /// `n` uniform elements from `prg`: the next `n D` words of its stream, element after element (the
    /// same elements as `n` calls of [`Self::random`], drawn in one fill).
    pub fn random_vec(prg: &mut Prg, n: usize) -> Vec<Gr> {
        let mut v = vec![Gr::ZERO; n];
        prg.fill(words_of_mut(&mut v));
        v
    }

    /// A uniform exceptional-set element other than 0 and 1, so that it and `1 - r` are units (rejection
    /// sampling from `prg`; a rejection has probability `2^-47`).
    pub fn challenge(prg: &mut Prg) -> Gr {
        Gr::from_mask(Self::challenge_mask(prg))
    }

    /// The mask of [`Self::challenge`].
    pub fn challenge_mask(prg: &mut Prg) -> u64 {
        loop {
            let m = prg.words(1)[0] & MASK;
            if m >= 2 {
                return m;
            }
        }
    }

    /// `self + o`.
    pub fn add(&self, o: &Gr) -> Gr {
        let mut g = *self;
        g.add_assign(o);
        g
    }

    /// `self += o`.
    pub fn add_assign(&mut self, o: &Gr) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a = a.wrapping_add(*b);
        }
    }

    /// `self - o`.
    pub fn sub(&self, o: &Gr) -> Gr {
        let mut g = *self;
        for (a, b) in g.0.iter_mut().zip(&o.0) {
            *a = a.wrapping_sub(*b);
        }
        g
    }

    /// `self * c` for a constant `c` of `Z_2^64`.
    pub fn scale(&self, c: u64) -> Gr {
        let mut g = *self;
        for a in g.0.iter_mut() {
            *a = a.wrapping_mul(c);
        }
        g
    }

    /// `self += o * c` for a constant `c`.
    pub fn add_scaled(&mut self, o: &Gr, c: u64) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a = a.wrapping_add(b.wrapping_mul(c));
        }
    }

    /// `self * o` (schoolbook, then reduction by `F`); a constant factor costs `D` word products.
    pub fn mul(&self, o: &Gr) -> Gr {
        if is_constant(o) {
            return self.scale(o.0[0]);
        }
        if is_constant(self) {
            return o.scale(self.0[0]);
        }
        let mut t = [0u64; 2 * D];
        for (i, &a) in self.0.iter().enumerate() {
            for (tj, &b) in t[i..i + D].iter_mut().zip(&o.0) {
                *tj = tj.wrapping_add(a.wrapping_mul(b));
            }
        }
        reduce(&t)
    }

    /// `c * o` for the exceptional element `c` of `mask` ([`Self::from_mask`]): `D^2` masked additions,
    /// no products, branch-free.
    pub fn mul_mask(mask: u64, o: &Gr) -> Gr {
        let mut t = [0u64; 2 * D];
        let bits: [u64; D] = std::array::from_fn(|i| 0u64.wrapping_sub((mask >> i) & 1));
        mask_accumulate(&mut t, &o.0, &bits);
        reduce(&t)
    }

    /// `v <- v_L + c (v_R - v_L)` for the exceptional element `c` of `mask` (the first half of `v`, which
    /// has even length), as [`Self::fold_pair`].
    pub fn fold_gemm(v: &mut [Gr], mask: u64, gemm: &dyn crate::gemm::Gemm) {
        let h = v.len() / 2;
        let (lo, hi) = v.split_at_mut(h);
        Gr::fold_pair(lo, hi, mask, gemm);
    }

    /// `lo_j <- lo_j + c (hi_j - lo_j)` for every `j < lo.len()`, with `hi` read as zero past its end (so
    /// entries past `hi` become `(1 - c) lo_j`; entries of `hi` past `lo`'s end are ignored), for the
    /// exceptional element `c` of `mask`. Multiplication by `c` is a linear map of the `D` coefficients, so
    /// the products are matrix products on `gemm` with the map's matrix (row `j` is `c X^j`), [`BLOCK`]
    /// entries at a time through a cache-sized scratch, added into `lo` in place; short slices take the
    /// additions of [`Self::mul_mask`] instead.
    pub fn fold_pair(lo: &mut [Gr], hi: &[Gr], mask: u64, gemm: &dyn crate::gemm::Gemm) {
        if lo.len() < 32 {
            for (j, l) in lo.iter_mut().enumerate() {
                let x = hi.get(j).copied().unwrap_or(Gr::ZERO);
                l.add_assign(&Gr::mul_mask(mask, &x.sub(l)));
            }
            return;
        }
        let map = challenge_map(mask);
        let cap = BLOCK.min(lo.len()) * D;
        let (mut d, mut out) = (vec![0u64; cap], vec![0u64; cap]);
        for (b, lb) in lo.chunks_mut(BLOCK).enumerate() {
            let n = lb.len();
            let start = b * BLOCK;
            let hb = hi.get(start..).unwrap_or_default();
            let hb = &hb[..hb.len().min(n)];
            let (dw, ow) = (&mut d[..n * D], &mut out[..n * D]);
            let lw = words_of_mut(lb);
            let (lpair, ltail) = lw.split_at(hb.len() * D);
            let (dpair, dtail) = dw.split_at_mut(hb.len() * D);
            for ((x, &y), &l) in dpair.iter_mut().zip(words_of(hb)).zip(lpair) {
                *x = y.wrapping_sub(l);
            }
            for (x, &l) in dtail.iter_mut().zip(ltail) {
                *x = l.wrapping_neg();
            }
            gemm.gemm(n, D, D, dw, &map, ow);
            for (a, &c) in lw.iter_mut().zip(ow.iter()) {
                *a = a.wrapping_add(c);
            }
        }
    }

    /// `sum_j a_j b_j` (over the shorter slice) as `D x n x D` matrix products on `gemm`, [`BLOCK`] entries
    /// at a time (coefficient `(p, q)` of the sum of products is `sum_j a_j[p] b_j[q]`; `b`'s words go to
    /// the kernel as they are), then the diagonals folded and reduced once.
    pub fn inner_gemm(a: &[Gr], b: &[Gr], gemm: &dyn crate::gemm::Gemm) -> Gr {
        let len = a.len().min(b.len());
        inner_blocks(len, gemm, |r, at, _| {
            transpose(&a[r.clone()], at);
            Some(words_of(&b[r]))
        })
    }

    /// `sum_j (a_R - a_L)_j (b_R - b_L)_j` over `j < len` (the shortest slice) as [`Self::inner_gemm`],
    /// the differences materialised one block at a time only.
    pub fn inner_diff_gemm(
        al: &[Gr],
        ar: &[Gr],
        bl: &[Gr],
        br: &[Gr],
        gemm: &dyn crate::gemm::Gemm,
    ) -> Gr {
        let len = al.len().min(ar.len()).min(bl.len()).min(br.len());
        inner_blocks(len, gemm, |r, at, bw| {
            transpose_diff(&al[r.clone()], &ar[r.clone()], at);
            let (x, y) = (words_of(&bl[r.clone()]), words_of(&br[r]));
            for ((o, &l), &h) in bw.iter_mut().zip(x).zip(y) {
                *o = h.wrapping_sub(l);
            }
            None
        })
    }

    /// The words of the element (for messages).
    pub fn words(&self) -> &[u64] {
        &self.0
    }

    /// The element from exactly `D` words.
    pub fn from_words(w: &[u64]) -> Option<Gr> {
        let arr: [u64; D] = w.try_into().ok()?;
        Some(Gr(arr))
    }

    /// Whether the element is a unit (its reduction modulo 2 is non-zero).
    pub fn is_unit(&self) -> bool {
        self.0.iter().any(|c| c & 1 == 1)
    }
}

crate::simd::dispatch!(mask_accumulate(t: &mut [u64], o: &[u64], bits: &[u64]) {
    for (i, &m) in bits.iter().enumerate().take(D) {
        let dst = &mut t[i..][..D];
        let src = &o[..D];
        for j in 0..D {
            dst[j] = dst[j].wrapping_add(src[j] & m);
        }
    }
});

/// `sum_{j < len} a_j b_j` as `D x n x D` matrix products on `gemm`, one per block of [`BLOCK`] entries
/// (coefficient `(p, q)` of a block's sum of products is `sum_j a_j[p] b_j[q]`), then the diagonals folded
/// and reduced once. For each block `r` (`n` entries), `fill(r, at, bw)` writes the `D x n` transpose of
/// the block's `a_j` into `at` and returns the block's `b_j` words (`n x D`, row-major), or writes them into
/// `bw` and returns `None`.
fn inner_blocks<'b>(
    len: usize,
    gemm: &dyn crate::gemm::Gemm,
    mut fill: impl FnMut(std::ops::Range<usize>, &mut [u64], &mut [u64]) -> Option<&'b [u64]>,
) -> Gr {
    if len == 0 {
        return Gr::ZERO;
    }
    let cap = BLOCK.min(len) * D;
    let (mut at, mut bw) = (vec![0u64; cap], vec![0u64; cap]);
    let mut c = vec![0u64; D * D];
    let mut t = [0u64; 2 * D];
    for start in (0..len).step_by(BLOCK) {
        let n = BLOCK.min(len - start);
        let (atb, bwb) = (&mut at[..D * n], &mut bw[..n * D]);
        let direct = fill(start..start + n, atb, bwb);
        gemm.gemm(D, n, D, atb, direct.unwrap_or(bwb), &mut c);
        for (p, row) in c.chunks_exact(D).enumerate() {
            for (s, &x) in t[p..p + D].iter_mut().zip(row) {
                *s = s.wrapping_add(x);
            }
        }
    }
    reduce(&t)
}

/// Entries per sub-block of the transposes (their `D` words each stay in the first-level cache).
const SUB: usize = 16;

/// `at[p * n + j] = a_j[p]` for `n = a.len()`: the `D x n` transpose of the elements' coefficients.
fn transpose(a: &[Gr], at: &mut [u64]) {
    let n = a.len();
    for (s, sub) in a.chunks(SUB).enumerate() {
        for p in 0..D {
            let row = &mut at[p * n + s * SUB..][..sub.len()];
            for (dst, g) in row.iter_mut().zip(sub) {
                *dst = g.0[p];
            }
        }
    }
}

/// `at[p * n + j] = (r_j - l_j)[p]` for `n = l.len()` (`r` at least as long): the transpose of the
/// differences.
fn transpose_diff(l: &[Gr], r: &[Gr], at: &mut [u64]) {
    let n = l.len();
    for (s, (sl, sr)) in l.chunks(SUB).zip(r.chunks(SUB)).enumerate() {
        for p in 0..D {
            let row = &mut at[p * n + s * SUB..][..sl.len()];
            for ((dst, x), y) in row.iter_mut().zip(sl).zip(sr) {
                *dst = y.0[p].wrapping_sub(x.0[p]);
            }
        }
    }
}

/// The `D x D` matrix of multiplication by the exceptional element of `mask` (row `j` is `c X^j`): a row
/// vector of coefficients times it is the product's coefficients.
///
/// Row 0 is `c`'s coefficients, and row `j + 1` is row `j` times `X`: shifted up by one, the coefficient
/// that leaves at `X^48` coming back as `-(X^5 + X^3 + X^2 + 1)`; `D^2` additions, no products.
fn challenge_map(mask: u64) -> Vec<u64> {
    let mut map = vec![0u64; D * D];
    let mut row = Gr::from_mask(mask).0;
    for dst in map.chunks_exact_mut(D) {
        dst.copy_from_slice(&row);
        let top = row[D - 1];
        row.copy_within(..D - 1, 1);
        row[0] = 0;
        for &l in &LOW_TERMS {
            row[l] = row[l].wrapping_sub(top);
        }
    }
    map
}

/// Whether `g` is a constant (the embedding of `Z_2^64`).
fn is_constant(g: &Gr) -> bool {
    g.0[1..].iter().all(|&c| c == 0)
}

/// A product's `2D - 1` coefficients (the last word of `t` unused) reduced by `F`.
fn reduce(t: &[u64; 2 * D]) -> Gr {
    let mut t = *t;
    for j in (D..2 * D - 1).rev() {
        let c = t[j];
        for &l in &LOW_TERMS {
            t[j - D + l] = t[j - D + l].wrapping_sub(c);
        }
    }
    let mut g = Gr::ZERO;
    g.0.copy_from_slice(&t[..D]);
    g
}

/// `sum_j a_j b_j`.
pub fn inner(a: &[Gr], b: &[Gr]) -> Gr {
    let mut s = Gr::ZERO;
    for (x, y) in a.iter().zip(b) {
        s.add_assign(&x.mul(y));
    }
    s
}

/// The field `GF(2^64)` = `GF(2)[X] / (X^64 + X^4 + X^3 + X + 1)` (irreducible, checked in the tests), in
/// which `rep3m` proves its AND gates: bits embed as 0 and 1, addition is XOR, and every non-zero element is
/// a unit, so the whole field is an exceptional set.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct Gf64(pub u64);

impl std::fmt::Debug for Gf64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gf64(..)")
    }
}

/// Carry-less product of two 64-bit polynomials, portably.
fn clmul_portable(a: u64, b: u64) -> u128 {
    let mut r = 0u128;
    for i in 0..64 {
        if (b >> i) & 1 == 1 {
            r ^= u128::from(a) << i;
        }
    }
    r
}

/// Carry-less product with the CPU's instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
fn clmul_hw(a: u64, b: u64) -> u128 {
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_set_epi64x, _mm_unpackhi_epi64,
    };
    let x = _mm_set_epi64x(0, a as i64);
    let y = _mm_set_epi64x(0, b as i64);
    let r = _mm_clmulepi64_si128(x, y, 0);
    let lo = _mm_cvtsi128_si64(r) as u64;
    let hi = _mm_cvtsi128_si64(_mm_unpackhi_epi64(r, r)) as u64;
    (u128::from(hi) << 64) | u128::from(lo)
}

/// Carry-less product, with the CPU's instruction where it has one.
fn clmul(a: u64, b: u64) -> u128 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("pclmulqdq") {
            // SAFETY: the instruction set was detected just above.
            return unsafe { clmul_hw(a, b) };
        }
    }
    clmul_portable(a, b)
}

/// `lo_j ^= r (hi_j ^ lo_j)` for `j < lo.len()`, `hi` read as zero past its end, with the CPU's
/// carry-less product.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
fn gf_fold_hw(lo: &mut [Gf64], hi: &[Gf64], r: u64) {
    for (j, l) in lo.iter_mut().enumerate() {
        let x = hi.get(j).map_or(0, |x| x.0);
        l.0 ^= reduce64(clmul_hw(r, x ^ l.0));
    }
}

/// Eight `GF(2^64)` products by one scalar: with `s` the same word in every lane, lane `j` of the result is
/// `v_j s` (the 512-bit carry-less products, reduced by `X^4 + X^3 + X + 1` as two more: `t = hi * 0x1b`,
/// then `t`'s high word times `0x1b` again, into the low word of each 128-bit lane).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,vpclmulqdq")]
#[inline]
fn gf_mul8(
    v: std::arch::x86_64::__m512i,
    s: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::{
        _mm512_clmulepi64_epi128, _mm512_set1_epi64, _mm512_unpacklo_epi64, _mm512_xor_si512,
    };
    let poly = _mm512_set1_epi64(0x1b);
    let reduce = |p| {
        let t = _mm512_clmulepi64_epi128(p, poly, 0x01);
        let u = _mm512_clmulepi64_epi128(t, poly, 0x01);
        _mm512_xor_si512(_mm512_xor_si512(p, t), u)
    };
    let even = reduce(_mm512_clmulepi64_epi128(v, s, 0x00));
    let odd = reduce(_mm512_clmulepi64_epi128(v, s, 0x01));
    _mm512_unpacklo_epi64(even, odd)
}

/// [`gf_fold_hw`] eight entries at a time with the 512-bit carry-less product (the reduction by
/// `X^4 + X^3 + X + 1` as two more carry-less products): the entries paired with `hi`, then those past
/// `hi`'s end (paired with zero), each run's last few one at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq")]
fn gf_fold_wide(lo: &mut [Gf64], hi: &[Gf64], r: u64) {
    use std::arch::x86_64::{
        _mm512_loadu_si512, _mm512_set1_epi64, _mm512_setzero_si512, _mm512_storeu_si512,
        _mm512_xor_si512,
    };
    let h = hi.len().min(lo.len());
    let (lo, tail) = lo.split_at_mut(h);
    let n = h / 8 * 8;
    let rv = _mm512_set1_epi64(r as i64);
    // Eight entries `l` with their partners `x`: `l ^ r (l ^ x)`.
    let step = |lv, xv| _mm512_xor_si512(lv, gf_mul8(_mm512_xor_si512(lv, xv), rv));
    for (l, x) in lo[..n].chunks_exact_mut(8).zip(hi[..n].chunks_exact(8)) {
        // SAFETY: both chunks are eight `u64` words (`Gf64` is a transparent word), read and written
        // unaligned.
        let (lv, xv) = unsafe {
            (
                _mm512_loadu_si512(l.as_ptr().cast()),
                _mm512_loadu_si512(x.as_ptr().cast()),
            )
        };
        // SAFETY: as the loads.
        unsafe { _mm512_storeu_si512(l.as_mut_ptr().cast(), step(lv, xv)) };
    }
    for (l, x) in lo[n..].iter_mut().zip(&hi[n..]) {
        l.0 ^= reduce64(clmul_hw(r, x.0 ^ l.0));
    }
    let t = tail.len() / 8 * 8;
    for l in tail[..t].chunks_exact_mut(8) {
        // SAFETY: the chunk is eight `u64` words, read and written unaligned.
        let lv = unsafe { _mm512_loadu_si512(l.as_ptr().cast()) };
        // SAFETY: as the load.
        unsafe { _mm512_storeu_si512(l.as_mut_ptr().cast(), step(lv, _mm512_setzero_si512())) };
    }
    for l in &mut tail[t..] {
        l.0 ^= reduce64(clmul_hw(r, l.0));
    }
}

/// `sum_j a_j b_j` with the CPU's carry-less product, reduced once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
fn gf_inner_hw(a: &[Gf64], b: &[Gf64]) -> Gf64 {
    let mut acc = 0u128;
    for (x, y) in a.iter().zip(b) {
        acc ^= clmul_hw(x.0, y.0);
    }
    Gf64(reduce64(acc))
}

/// `sum_j (a_R - a_L)_j (b_R - b_L)_j` with the CPU's carry-less product, reduced once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
fn gf_inner_diff_hw(al: &[Gf64], ar: &[Gf64], bl: &[Gf64], br: &[Gf64]) -> Gf64 {
    let mut acc = 0u128;
    for ((l, r), (x, y)) in al.iter().zip(ar).zip(bl.iter().zip(br)) {
        acc ^= clmul_hw(l.0 ^ r.0, x.0 ^ y.0);
    }
    Gf64(reduce64(acc))
}

/// [`Ext::compact_fold_u`] for `GF(2^64)` with the CPU's carry-less product.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
fn gf_compact_fold_hw(theta: &[u64], a: &[u64], b: &[u64], w: u64, out: &mut Vec<Gf64>) {
    for (k, th) in theta.chunks(64).enumerate() {
        let (x, d) = (a[k], a[k] ^ b[k]);
        for (j, &c) in th.iter().enumerate() {
            let rt = reduce64(clmul_hw(w, c));
            let (xm, dm) = (
                0u64.wrapping_sub((x >> j) & 1),
                0u64.wrapping_sub((d >> j) & 1),
            );
            out.push(Gf64((c & xm) ^ (rt & dm)));
        }
    }
}

/// [`gf_compact_fold_hw`] eight gates at a time: the eight coins times the challenge with the 512-bit
/// carry-less product (reduced as in [`gf_fold_wide`]), then each gate's bits of `x` and `x ^ y` select
/// its coin and its product as lane masks; a word's last gates (if its coins are not a multiple of eight)
/// one at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq")]
fn gf_compact_fold_wide(theta: &[u64], a: &[u64], b: &[u64], w: u64, out: &mut Vec<Gf64>) {
    use std::arch::x86_64::{
        _mm512_loadu_si512, _mm512_maskz_mov_epi64, _mm512_set1_epi64, _mm512_storeu_si512,
        _mm512_xor_si512,
    };
    let wv = _mm512_set1_epi64(w as i64);
    out.reserve(theta.len());
    let mut buf = [Gf64::default(); 8];
    for (k, th) in theta.chunks(64).enumerate() {
        let (x, d) = (a[k], a[k] ^ b[k]);
        let full = th.len() / 8 * 8;
        for (i, c8) in th[..full].chunks_exact(8).enumerate() {
            // SAFETY: the chunk is eight `u64` words, read unaligned.
            let cv = unsafe { _mm512_loadu_si512(c8.as_ptr().cast()) };
            let rt = gf_mul8(cv, wv);
            // Lane `l` is gate `8 i + l` of the word: bit `8 i + l` of `x` and of `d`.
            let (xm, dm) = ((x >> (8 * i)) as u8, (d >> (8 * i)) as u8);
            let res = _mm512_xor_si512(
                _mm512_maskz_mov_epi64(xm, cv),
                _mm512_maskz_mov_epi64(dm, rt),
            );
            // SAFETY: `buf` is eight `Gf64`, transparent words, written unaligned.
            unsafe { _mm512_storeu_si512(buf.as_mut_ptr().cast(), res) };
            out.extend_from_slice(&buf);
        }
        for (j, &c) in th.iter().enumerate().skip(full) {
            let rt = reduce64(clmul_hw(w, c));
            let (xm, dm) = (
                0u64.wrapping_sub((x >> j) & 1),
                0u64.wrapping_sub((d >> j) & 1),
            );
            out.push(Gf64((c & xm) ^ (rt & dm)));
        }
    }
}

/// `r` modulo `X^64 + X^4 + X^3 + X + 1`.
fn reduce64(r: u128) -> u64 {
    let fold = |h: u128| h ^ (h << 1) ^ (h << 3) ^ (h << 4);
    let t = fold(r >> 64);
    let lo = (r as u64) ^ (t as u64);
    lo ^ (fold(t >> 64) as u64)
}

impl Gf64 {
    /// `self * o`.
    pub fn mul(&self, o: &Gf64) -> Gf64 {
        Gf64(reduce64(clmul(self.0, o.0)))
    }
}

/// The arithmetic the product proof needs from its extension (`GR(2^64, 48)` for ring products,
/// `GF(2^64)` for AND gates).
pub trait Ext: Copy + PartialEq + Default {
    /// Words of an element on the wire.
    const WORDS: usize;
    /// `self + o`.
    fn plus(&self, o: &Self) -> Self;
    /// `self - o`.
    fn minus(&self, o: &Self) -> Self;
    /// `self * o`.
    fn times(&self, o: &Self) -> Self;
    /// A uniform element.
    fn uniform(prg: &mut Prg) -> Self;
    /// A uniform challenge from the exceptional set, not 0 or 1, as one word (see [`Self::from_challenge`]).
    fn challenge_word(prg: &mut Prg) -> u64;
    /// The challenge a word encodes (bits outside the set ignored).
    fn from_challenge(w: u64) -> Self;
    /// Appends the element's words.
    fn put(&self, out: &mut Vec<u64>);
    /// The element from exactly [`Self::WORDS`] words.
    fn take(w: &[u64]) -> Option<Self>;
    /// `r * o` for the challenge `r` of the word `w`.
    fn times_challenge(w: u64, o: &Self) -> Self {
        Self::from_challenge(w).times(o)
    }
    /// `sum_j a_j b_j` (on `gemm` where that is faster).
    fn inner_product(a: &[Self], b: &[Self], _gemm: &dyn crate::gemm::Gemm) -> Self {
        a.iter()
            .zip(b)
            .fold(Self::default(), |s, (x, y)| s.plus(&x.times(y)))
    }
    /// `sum_j (a_R - a_L)_j (b_R - b_L)_j` over the shortest slice's length (on `gemm` where that is
    /// faster), without materialising the differences.
    fn inner_diff(al: &[Self], ar: &[Self], bl: &[Self], br: &[Self], _gemm: &dyn Gemm) -> Self {
        al.iter()
            .zip(ar)
            .zip(bl.iter().zip(br))
            .fold(Self::default(), |s, ((l, r), (x, y))| {
                s.plus(&r.minus(l).times(&y.minus(x)))
            })
    }
    /// `v <- v_L + r (v_R - v_L)` (the first half of `v`, which has even length) for the challenge of `w`
    /// (on `gemm` where that is faster), as [`Self::fold_pair`].
    fn fold_half(v: &mut [Self], w: u64, gemm: &dyn crate::gemm::Gemm) {
        let h = v.len() / 2;
        let (lo, hi) = v.split_at_mut(h);
        Self::fold_pair(lo, hi, w, gemm);
    }
    /// `lo_j <- lo_j + r (hi_j - lo_j)` for every `j < lo.len()` and the challenge `r` of `w`, with `hi`
    /// read as zero past its end (entries of `hi` past `lo`'s end are ignored): the fold of a vector whose
    /// left half is `lo` and whose right half is `hi` followed by zeros (on `gemm` where that is faster).
    fn fold_pair(lo: &mut [Self], hi: &[Self], w: u64, _gemm: &dyn crate::gemm::Gemm) {
        for (j, l) in lo.iter_mut().enumerate() {
            let x = hi.get(j).copied().unwrap_or_default();
            *l = l.plus(&Self::times_challenge(w, &x.minus(l)));
        }
    }
    /// Base values a word of a compact vector holds ([`Self::compact_terms`]): 1 for `Z_2^64`, 64 bits.
    const PER_WORD: usize;
    /// The first level's products of compact vectors, `terms` of them: `u` has entries `theta_t a_t`
    /// (left half) and `theta_t b_t` (right), `v` the base values `a2_t` and `b2_t` (`theta` holds
    /// [`Self::WORDS`] words a term, `a`, `b`, `a2`, `b2` [`Self::PER_WORD`] values a word). Returns
    /// `(sum_t theta_t a_t a2_t, sum_t theta_t (b_t - a_t) (b2_t - a2_t))`: `c_0` and `c_2`'s terms.
    fn compact_terms(
        theta: &[u64],
        u: (&[u64], &[u64]),
        v: (&[u64], &[u64]),
        terms: usize,
    ) -> (Self, Self);
    /// Appends the folded entries `theta_t a_t + r theta_t (b_t - a_t)` of a compact `u` for the challenge
    /// `r` of `w`.
    fn compact_fold_u(
        theta: &[u64],
        u: (&[u64], &[u64]),
        terms: usize,
        w: u64,
        out: &mut Vec<Self>,
        gemm: &dyn Gemm,
    );
    /// Appends the folded entries `a_t + r (b_t - a_t)` of a compact `v` for the challenge `r` of `w`.
    fn compact_fold_v(a: &[u64], b: &[u64], terms: usize, w: u64, out: &mut Vec<Self>);
}

impl Ext for Gr {
    const WORDS: usize = D;
    fn plus(&self, o: &Self) -> Self {
        self.add(o)
    }
    fn minus(&self, o: &Self) -> Self {
        self.sub(o)
    }
    fn times(&self, o: &Self) -> Self {
        self.mul(o)
    }
    fn uniform(prg: &mut Prg) -> Self {
        Gr::random(prg)
    }
    fn challenge_word(prg: &mut Prg) -> u64 {
        Gr::challenge_mask(prg)
    }
    fn from_challenge(w: u64) -> Self {
        Gr::from_mask(w)
    }
    fn put(&self, out: &mut Vec<u64>) {
        out.extend_from_slice(&self.0);
    }
    fn take(w: &[u64]) -> Option<Self> {
        Gr::from_words(w)
    }
    fn times_challenge(w: u64, o: &Self) -> Self {
        Gr::mul_mask(w, o)
    }
    fn inner_product(a: &[Self], b: &[Self], gemm: &dyn crate::gemm::Gemm) -> Self {
        Gr::inner_gemm(a, b, gemm)
    }
    fn fold_pair(lo: &mut [Self], hi: &[Self], w: u64, gemm: &dyn crate::gemm::Gemm) {
        Gr::fold_pair(lo, hi, w, gemm);
    }
    fn inner_diff(al: &[Self], ar: &[Self], bl: &[Self], br: &[Self], gemm: &dyn Gemm) -> Self {
        Gr::inner_diff_gemm(al, ar, bl, br, gemm)
    }
    const PER_WORD: usize = 1;
    fn compact_terms(
        theta: &[u64],
        (a, b): (&[u64], &[u64]),
        (a2, b2): (&[u64], &[u64]),
        terms: usize,
    ) -> (Self, Self) {
        let (mut c0, mut c2) = ([0u64; D], [0u64; D]);
        for (t, th) in theta.chunks_exact(D).enumerate().take(terms) {
            let s0 = a[t].wrapping_mul(a2[t]);
            let s2 = b[t]
                .wrapping_sub(a[t])
                .wrapping_mul(b2[t].wrapping_sub(a2[t]));
            for ((x, y), &c) in c0.iter_mut().zip(c2.iter_mut()).zip(th) {
                *x = x.wrapping_add(c.wrapping_mul(s0));
                *y = y.wrapping_add(c.wrapping_mul(s2));
            }
        }
        (Gr(c0), Gr(c2))
    }
    fn compact_fold_u(
        theta: &[u64],
        (a, b): (&[u64], &[u64]),
        terms: usize,
        w: u64,
        out: &mut Vec<Self>,
        gemm: &dyn Gemm,
    ) {
        // `r theta_t` for a block of terms as one `n x D x D` matrix product with the map of `r` (see
        // [`Gr::fold_gemm`]), then `a_t theta_t + (b_t - a_t) r theta_t`.
        const BLOCK: usize = 256;
        let map = challenge_map(w);
        let mut rt = vec![0u64; BLOCK * D];
        for start in (0..terms).step_by(BLOCK) {
            let n = BLOCK.min(terms - start);
            let th = &theta[start * D..(start + n) * D];
            gemm.gemm(n, D, D, th, &map, &mut rt[..n * D]);
            for (i, (c, r)) in th.chunks_exact(D).zip(rt.chunks_exact(D)).enumerate() {
                let (x, d) = (a[start + i], b[start + i].wrapping_sub(a[start + i]));
                let mut g = Gr::ZERO;
                for ((o, &c), &r) in g.0.iter_mut().zip(c).zip(r) {
                    *o = c.wrapping_mul(x).wrapping_add(r.wrapping_mul(d));
                }
                out.push(g);
            }
        }
    }
    fn compact_fold_v(a: &[u64], b: &[u64], terms: usize, w: u64, out: &mut Vec<Self>) {
        let bits: [u64; D] = std::array::from_fn(|i| 0u64.wrapping_sub((w >> i) & 1));
        for (&x, &y) in a.iter().zip(b).take(terms) {
            let d = y.wrapping_sub(x);
            let mut g = Gr::ZERO;
            for (o, &m) in g.0.iter_mut().zip(&bits) {
                *o = d & m;
            }
            g.0[0] = g.0[0].wrapping_add(x);
            out.push(g);
        }
    }
}

impl Ext for Gf64 {
    const WORDS: usize = 1;
    fn plus(&self, o: &Self) -> Self {
        Gf64(self.0 ^ o.0)
    }
    fn minus(&self, o: &Self) -> Self {
        Gf64(self.0 ^ o.0)
    }
    fn times(&self, o: &Self) -> Self {
        self.mul(o)
    }
    fn uniform(prg: &mut Prg) -> Self {
        Gf64(prg.words(1)[0])
    }
    fn challenge_word(prg: &mut Prg) -> u64 {
        loop {
            let w = prg.words(1)[0];
            if w >= 2 {
                return w;
            }
        }
    }
    fn from_challenge(w: u64) -> Self {
        Gf64(w)
    }
    fn put(&self, out: &mut Vec<u64>) {
        out.push(self.0);
    }
    fn take(w: &[u64]) -> Option<Self> {
        match w {
            [x] => Some(Gf64(*x)),
            _ => None,
        }
    }
    fn inner_product(a: &[Self], b: &[Self], _gemm: &dyn crate::gemm::Gemm) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("pclmulqdq") {
                // SAFETY: the instruction set was detected just above.
                return unsafe { gf_inner_hw(a, b) };
            }
        }
        let acc = a
            .iter()
            .zip(b)
            .fold(0u128, |s, (x, y)| s ^ clmul_portable(x.0, y.0));
        Gf64(reduce64(acc))
    }
    fn fold_pair(lo: &mut [Self], hi: &[Self], w: u64, _gemm: &dyn crate::gemm::Gemm) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("vpclmulqdq")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
            {
                // SAFETY: the instruction sets were detected just above.
                unsafe { gf_fold_wide(lo, hi, w) };
                return;
            }
            if std::arch::is_x86_feature_detected!("pclmulqdq") {
                // SAFETY: the instruction set was detected just above.
                unsafe { gf_fold_hw(lo, hi, w) };
                return;
            }
        }
        for (j, l) in lo.iter_mut().enumerate() {
            let x = hi.get(j).map_or(0, |x| x.0);
            l.0 ^= reduce64(clmul_portable(w, x ^ l.0));
        }
    }
    fn inner_diff(al: &[Self], ar: &[Self], bl: &[Self], br: &[Self], _gemm: &dyn Gemm) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("pclmulqdq") {
                // SAFETY: the instruction set was detected just above.
                return unsafe { gf_inner_diff_hw(al, ar, bl, br) };
            }
        }
        let acc = al
            .iter()
            .zip(ar)
            .zip(bl.iter().zip(br))
            .fold(0u128, |s, ((l, r), (x, y))| {
                s ^ clmul_portable(l.0 ^ r.0, x.0 ^ y.0)
            });
        Gf64(reduce64(acc))
    }
    const PER_WORD: usize = 64;
    fn compact_terms(
        theta: &[u64],
        (a, b): (&[u64], &[u64]),
        (a2, b2): (&[u64], &[u64]),
        terms: usize,
    ) -> (Self, Self) {
        let (mut c0, mut c2) = (0u64, 0u64);
        for (k, th) in theta.chunks(64).enumerate().take(terms.div_ceil(64)) {
            let m0 = a[k] & a2[k];
            let m2 = (a[k] ^ b[k]) & (a2[k] ^ b2[k]);
            for (j, &c) in th.iter().enumerate() {
                c0 ^= c & 0u64.wrapping_sub((m0 >> j) & 1);
                c2 ^= c & 0u64.wrapping_sub((m2 >> j) & 1);
            }
        }
        (Gf64(c0), Gf64(c2))
    }
    fn compact_fold_u(
        theta: &[u64],
        (a, b): (&[u64], &[u64]),
        terms: usize,
        w: u64,
        out: &mut Vec<Self>,
        _gemm: &dyn Gemm,
    ) {
        let theta = &theta[..terms.min(theta.len())];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("vpclmulqdq")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
            {
                // SAFETY: the instruction sets were detected just above.
                unsafe { gf_compact_fold_wide(theta, a, b, w, out) };
                return;
            }
            if std::arch::is_x86_feature_detected!("pclmulqdq") {
                // SAFETY: the instruction set was detected just above.
                unsafe { gf_compact_fold_hw(theta, a, b, w, out) };
                return;
            }
        }
        for (t, &th) in theta.iter().enumerate() {
            let (x, d) = (
                (a[t / 64] >> (t % 64)) & 1,
                ((a[t / 64] ^ b[t / 64]) >> (t % 64)) & 1,
            );
            let rt = reduce64(clmul_portable(w, th));
            out.push(Gf64(
                (th & 0u64.wrapping_sub(x)) ^ (rt & 0u64.wrapping_sub(d)),
            ));
        }
    }
    fn compact_fold_v(a: &[u64], b: &[u64], terms: usize, w: u64, out: &mut Vec<Self>) {
        for (k, (&x, &y)) in a.iter().zip(b).enumerate().take(terms.div_ceil(64)) {
            let d = x ^ y;
            let n = 64.min(terms - 64 * k);
            out.extend(
                (0..n).map(|j| Gf64(((x >> j) & 1) ^ (w & 0u64.wrapping_sub((d >> j) & 1)))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::Seed;

    /// `a * b` modulo the binary polynomial `f` of degree `d` (bit `j` = coefficient of `X^j`).
    fn mulmod2(mut a: u128, mut b: u128, f: u128, d: usize) -> u128 {
        let mut r = 0;
        while b != 0 {
            if b & 1 == 1 {
                r ^= a;
            }
            b >>= 1;
            a <<= 1;
            if (a >> d) & 1 == 1 {
                a ^= f;
            }
        }
        r
    }

    fn gcd2(mut a: u128, mut b: u128) -> u128 {
        while b != 0 {
            while a != 0 && 128 - a.leading_zeros() >= 128 - b.leading_zeros() {
                a ^= b << ((128 - a.leading_zeros()) - (128 - b.leading_zeros()));
            }
            std::mem::swap(&mut a, &mut b);
        }
        a
    }

    /// `X^(2^k)` modulo `f`.
    fn frobenius(f: u128, d: usize, k: usize) -> u128 {
        let mut x = 2;
        for _ in 0..k {
            x = mulmod2(x, x, f, d);
        }
        x
    }

    #[test]
    fn modulus_is_irreducible_mod_2() {
        // Rabin: F divides X^(2^48) - X, and gcd(X^(2^(48/p)) - X, F) = 1 for p = 2, 3.
        let f: u128 = (1 << D) | LOW_TERMS.iter().map(|&l| 1u128 << l).sum::<u128>();
        assert_eq!(frobenius(f, D, D), 2);
        for p in [2, 3] {
            assert_eq!(gcd2(f, frobenius(f, D, D / p) ^ 2), 1, "p = {p}");
        }
        // And a reducible one fails the test (X^48 + 1 = (X^3 + 1)^16).
        let g: u128 = (1 << D) | 1;
        assert_ne!(gcd2(g, frobenius(g, D, D / 3) ^ 2), 1);
    }

    fn prg(n: u64) -> Prg {
        Prg::new(&Seed::random_from(n))
    }

    #[test]
    fn ring_laws() {
        let mut p = prg(1);
        for _ in 0..20 {
            let (a, b, c) = (Gr::random(&mut p), Gr::random(&mut p), Gr::random(&mut p));
            assert_eq!(a.mul(&b), b.mul(&a));
            assert_eq!(a.mul(&b).mul(&c), a.mul(&b.mul(&c)));
            assert_eq!(a.mul(&b.add(&c)), a.mul(&b).add(&a.mul(&c)));
            assert_eq!(a.mul(&Gr::constant(1)), a);
            assert_eq!(a.mul(&Gr::constant(7)), a.scale(7));
            assert_eq!(a.sub(&a), Gr::ZERO);
            let mut d = a;
            d.add_scaled(&b, 5);
            assert_eq!(d, a.add(&b.scale(5)));
            let mask = p.words(1)[0];
            assert_eq!(Gr::mul_mask(mask, &a), Gr::from_mask(mask).mul(&a));
            assert_eq!(Gr::constant(9).mul(&a), a.scale(9));
        }
        // X^47 * X = X^48 = -(X^5 + X^3 + X^2 + 1).
        let x = Gr::from_mask(2);
        let x47 = Gr::from_mask(1 << 47);
        let mut want = Gr::ZERO;
        for l in LOW_TERMS {
            want.0[l] = u64::MAX;
        }
        assert_eq!(x47.mul(&x), want);
        // The constants multiply as Z_2^64.
        assert_eq!(
            Gr::constant(u64::MAX).mul(&Gr::constant(3)),
            Gr::constant(u64::MAX.wrapping_mul(3))
        );
    }

    #[test]
    fn exceptional_differences_are_units() {
        let mut p = prg(2);
        let one = Gr::constant(1);
        for _ in 0..20 {
            let (a, b) = (p.words(1)[0] & MASK, p.words(1)[0] & MASK);
            if a == b {
                continue;
            }
            let diff = Gr::from_mask(a).sub(&Gr::from_mask(b));
            assert!(diff.is_unit());
            // A unit has an inverse: u^(2^64 (2^48 - 1) ...) is impractical, so check that multiplying by
            // it is injective on a sample of the non-units' witnesses: u * 2^63 != 0.
            assert_ne!(diff.scale(1 << 63), Gr::ZERO);
            let r = Gr::challenge(&mut p);
            assert!(r.is_unit() && one.sub(&r).is_unit());
        }
        // A non-unit: 2 times anything is killed by 2^63.
        let two = Gr::constant(2).mul(&Gr::random(&mut p));
        assert!(!two.is_unit());
        assert_eq!(two.scale(1 << 63), Gr::ZERO);
    }

    #[test]
    fn gf64_modulus_is_irreducible_and_the_field_laws_hold() {
        let f: u128 = (1 << 64) | 0b11011;
        assert_eq!(frobenius(f, 64, 64), 2);
        assert_eq!(gcd2(f, frobenius(f, 64, 32) ^ 2), 1);
        let mut p = prg(4);
        for _ in 0..50 {
            let w = p.words(3);
            let (a, b, c) = (Gf64(w[0]), Gf64(w[1]), Gf64(w[2]));
            assert_eq!(clmul(w[0], w[1]), clmul_portable(w[0], w[1]));
            assert_eq!(a.mul(&b), b.mul(&a));
            assert_eq!(a.mul(&b).mul(&c), a.mul(&b.mul(&c)));
            assert_eq!(a.mul(&b.plus(&c)), a.mul(&b).plus(&a.mul(&c)));
            assert_eq!(a.mul(&Gf64(1)), a);
            let (xs, ys) = (p.words(9), p.words(9));
            let (xs, ys): (Vec<Gf64>, Vec<Gf64>) = (
                xs.into_iter().map(Gf64).collect(),
                ys.into_iter().map(Gf64).collect(),
            );
            let looped = xs
                .iter()
                .zip(&ys)
                .fold(Gf64(0), |s, (x, y)| s.plus(&x.mul(y)));
            assert_eq!(
                Gf64::inner_product(&xs, &ys, &crate::gemm::NaiveGemm),
                looped
            );
            // The wide fold (eight at a time) and its tail agree with the field's products.
            let long: Vec<Gf64> = p.words(74).into_iter().map(Gf64).collect();
            let mut got = long.clone();
            Gf64::fold_half(&mut got, w[2], &crate::gemm::NaiveGemm);
            for j in 0..37 {
                let want = long[j].plus(&Gf64(w[2]).mul(&long[37 + j].minus(&long[j])));
                assert_eq!(got[j], want);
            }
            let mut folded = xs.clone();
            folded.truncate(8);
            let mut want = folded.clone();
            Gf64::fold_half(&mut folded, w[2], &crate::gemm::NaiveGemm);
            for j in 0..4 {
                want[j] = want[j].plus(&Gf64(w[2]).mul(&want[4 + j].minus(&want[j])));
            }
            assert_eq!(folded[..4], want[..4]);
            // The reduction agrees with the bitwise one of the irreducibility test.
            assert_eq!(
                u128::from(a.mul(&b).0),
                mulmod2(u128::from(w[0]), u128::from(w[1]), f, 64)
            );
        }
    }

    #[test]
    fn folds_on_gemm_agree_with_the_loop() {
        let mut p = prg(6);
        for len in [2, 8, 64, 130] {
            let v = Gr::random_vec(&mut p, len);
            let mask = Gr::challenge_mask(&mut p);
            let mut got = v.clone();
            Gr::fold_gemm(&mut got, mask, &crate::gemm::NaiveGemm);
            let r = Gr::from_mask(mask);
            for j in 0..len / 2 {
                assert_eq!(
                    got[j],
                    v[j].add(&r.mul(&v[len / 2 + j].sub(&v[j]))),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn inner_products_on_gemm_agree_with_the_loop() {
        let mut p = prg(5);
        for len in [0, 1, 7, 33, BLOCK + 17] {
            let a = Gr::random_vec(&mut p, len);
            let b = Gr::random_vec(&mut p, len);
            assert_eq!(
                Gr::inner_gemm(&a, &b, &crate::gemm::NaiveGemm),
                inner(&a, &b)
            );
            let (c, d) = (Gr::random_vec(&mut p, len), Gr::random_vec(&mut p, len));
            let diff = |x: &[Gr], y: &[Gr]| -> Vec<Gr> {
                x.iter().zip(y).map(|(l, r)| r.sub(l)).collect()
            };
            assert_eq!(
                Gr::inner_diff_gemm(&a, &c, &b, &d, &crate::gemm::NaiveGemm),
                inner(&diff(&a, &c), &diff(&b, &d)),
                "len {len}"
            );
        }
    }

    #[test]
    fn folds_of_a_pair_read_a_short_right_half_as_zeros() {
        let mut p = prg(8);
        let g = &crate::gemm::NaiveGemm;
        for (lo_len, hi_len) in [
            (5, 2),
            (40, 0),
            (40, 39),
            (BLOCK + 40, BLOCK + 3),
            (BLOCK + 40, 7),
        ] {
            let lo = Gr::random_vec(&mut p, lo_len);
            let hi = Gr::random_vec(&mut p, hi_len);
            let mask = Gr::challenge_mask(&mut p);
            let r = Gr::from_mask(mask);
            let mut got = lo.clone();
            Gr::fold_pair(&mut got, &hi, mask, g);
            let (lw, hw): (Vec<u64>, Vec<u64>) = (p.words(lo_len), p.words(hi_len));
            let (gl, gh): (Vec<Gf64>, Vec<Gf64>) = (
                lw.iter().map(|&x| Gf64(x)).collect(),
                hw.iter().map(|&x| Gf64(x)).collect(),
            );
            let mut gf = gl.clone();
            Gf64::fold_pair(&mut gf, &gh, mask, g);
            for j in 0..lo_len {
                let x = hi.get(j).copied().unwrap_or(Gr::ZERO);
                assert_eq!(
                    got[j],
                    lo[j].add(&r.mul(&x.sub(&lo[j]))),
                    "{lo_len} {hi_len} {j}"
                );
                let y = gh.get(j).copied().unwrap_or_default();
                assert_eq!(
                    gf[j],
                    gl[j].plus(&Gf64(mask).times(&y.minus(&gl[j]))),
                    "{lo_len} {j}"
                );
            }
        }
    }

    #[test]
    fn the_compact_first_level_agrees_with_the_full_vectors() {
        let mut p = prg(7);
        let g = &crate::gemm::NaiveGemm;
        for terms in [1, 9, 300] {
            // Ring: u = (theta a | theta b), v = (a2 | b2).
            let theta = Gr::random_vec(&mut p, terms);
            let (a, b, a2, b2) = (
                p.words(terms),
                p.words(terms),
                p.words(terms),
                p.words(terms),
            );
            let flat: Vec<u64> = theta.iter().flat_map(|t| t.0).collect();
            let mut u: Vec<Gr> = theta.iter().zip(&a).map(|(t, &x)| t.scale(x)).collect();
            u.extend(theta.iter().zip(&b).map(|(t, &x)| t.scale(x)));
            let mut v: Vec<Gr> = a2.iter().map(|&x| Gr::constant(x)).collect();
            v.extend(b2.iter().map(|&x| Gr::constant(x)));
            let (ul, ur) = u.split_at(terms);
            let (vl, vr) = v.split_at(terms);
            let (c0, c2) = Gr::compact_terms(&flat, (&a, &b), (&a2, &b2), terms);
            assert_eq!(c0, inner(ul, vl), "terms {terms}");
            assert_eq!(c2, Gr::inner_diff(ul, ur, vl, vr, g), "terms {terms}");
            let w = Gr::challenge_mask(&mut p);
            let (mut fu, mut fv) = (Vec::new(), Vec::new());
            Gr::compact_fold_u(&flat, (&a, &b), terms, w, &mut fu, g);
            Gr::compact_fold_v(&a2, &b2, terms, w, &mut fv);
            let (mut wu, mut wv) = (u.clone(), v.clone());
            Gr::fold_half(&mut wu, w, g);
            Gr::fold_half(&mut wv, w, g);
            assert_eq!(fu[..], wu[..terms]);
            assert_eq!(fv[..], wv[..terms]);
            // Bits: 64 gates a word.
            let words = terms.div_ceil(64);
            let gates = 64 * words;
            let coins = p.words(gates);
            let (a, b, a2, b2) = (
                p.words(words),
                p.words(words),
                p.words(words),
                p.words(words),
            );
            let bit = |m: &[u64], t: usize| (m[t / 64] >> (t % 64)) & 1;
            let mut u: Vec<Gf64> = (0..gates).map(|t| Gf64(coins[t] * bit(&a, t))).collect();
            u.extend((0..gates).map(|t| Gf64(coins[t] * bit(&b, t))));
            let mut v: Vec<Gf64> = (0..gates).map(|t| Gf64(bit(&a2, t))).collect();
            v.extend((0..gates).map(|t| Gf64(bit(&b2, t))));
            let (ul, ur) = u.split_at(gates);
            let (vl, vr) = v.split_at(gates);
            let (c0, c2) = Gf64::compact_terms(&coins, (&a, &b), (&a2, &b2), gates);
            assert_eq!(c0, Gf64::inner_product(ul, vl, g));
            assert_eq!(c2, Gf64::inner_diff(ul, ur, vl, vr, g));
            let (mut fu, mut fv) = (Vec::new(), Vec::new());
            Gf64::compact_fold_u(&coins, (&a, &b), gates, w, &mut fu, g);
            Gf64::compact_fold_v(&a2, &b2, gates, w, &mut fv);
            let (mut wu, mut wv) = (u.clone(), v.clone());
            Gf64::fold_half(&mut wu, w, g);
            Gf64::fold_half(&mut wv, w, g);
            assert_eq!(fu[..], wu[..gates]);
            assert_eq!(fv[..], wv[..gates]);
        }
    }

    #[test]
    fn the_challenge_map_multiplies_by_the_challenge() {
        let mut p = prg(9);
        for _ in 0..4 {
            let mask = Gr::challenge_mask(&mut p);
            let map = challenge_map(mask);
            for (j, row) in map.chunks_exact(D).enumerate() {
                let mut xj = Gr::ZERO;
                xj.0[j] = 1;
                assert_eq!(row, &Gr::mul_mask(mask, &xj).0[..], "row {j}");
            }
        }
    }

    #[test]
    fn a_vector_draw_is_the_draws_one_by_one() {
        let (mut p, mut q) = (prg(10), prg(10));
        let v = Gr::random_vec(&mut p, 5);
        let w: Vec<Gr> = (0..5).map(|_| Gr::random(&mut q)).collect();
        assert_eq!(v, w);
        assert_eq!(p.words(3), q.words(3));
    }

    #[test]
    fn the_wide_compact_fold_agrees_with_the_one_at_a_time() {
        let mut p = prg(11);
        for gates in [8usize, 64, 150, 320] {
            let words = gates.div_ceil(64);
            let (coins, a, b) = (p.words(gates), p.words(words), p.words(words));
            let w = p.words(1)[0];
            let mut want = Vec::new();
            for (t, &th) in coins.iter().enumerate() {
                let (x, d) = (
                    (a[t / 64] >> (t % 64)) & 1,
                    ((a[t / 64] ^ b[t / 64]) >> (t % 64)) & 1,
                );
                let rt = Gf64(w).times(&Gf64(th)).0;
                want.push(Gf64(
                    (th & 0u64.wrapping_sub(x)) ^ (rt & 0u64.wrapping_sub(d)),
                ));
            }
            let mut got = Vec::new();
            Gf64::compact_fold_u(
                &coins,
                (&a, &b),
                gates,
                w,
                &mut got,
                &crate::gemm::NaiveGemm,
            );
            assert_eq!(got, want, "gates {gates}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("vpclmulqdq")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
            {
                let mut wide = Vec::new();
                // SAFETY: the instruction sets were detected just above.
                unsafe { gf_compact_fold_wide(&coins, &a, &b, w, &mut wide) };
                assert_eq!(wide, want, "gates {gates}");
            }
        }
    }

    #[test]
    fn words_round_trip() {
        let mut p = prg(3);
        let a = Gr::random(&mut p);
        assert_eq!(Gr::from_words(a.words()), Some(a));
        assert_eq!(Gr::from_words(&a.words()[1..]), None);
    }
}
