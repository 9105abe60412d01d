//! Arithmetic of the bits' MACs: GF(2^64) products, and the bulk loops over per-bit MAC shares.
//!
//! Field: GF(2^64) = GF(2)[x] / (x^64 + x^4 + x^3 + x + 1). A bit's MAC share is a field element (one word);
//! a packed word of 64 bits carries 64 MAC words, bit-sliced: `m[64 * word + t]` holds bit `t` of the MACs of
//! the word's 64 bits (its bit `b` is bit `t` of bit `b`'s MAC). So the MAC of a bit vector `w` under the key
//! `beta` is `m_t = w if beta_t else 0`, a public word selects its bits' MACs with one AND per MAC word
//! (`m_t & w`), and the fold of the 64 MACs, `sum_b x^b MAC_b = sum_t x^t m_t` (each `m_t` read as a
//! polynomial), is one sum of shifted words either way (see [`fold`]).
//!
//! Every loop here has a portable body and, on x86-64, the same body compiled for AVX2 (or the carry-less
//! multiply instruction, PCLMULQDQ), chosen at run time. Invariant: both give bit-identical results (tested on
//! random inputs below). No branch or memory access depends on a share or a MAC, only on lengths and on
//! public bits (opened values, constants).

/// Carry-less product of two 64-bit polynomials (degree < 127).
pub fn clmul(a: u64, b: u64) -> u128 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("pclmulqdq") {
            // SAFETY: the instruction set was detected just above.
            return unsafe { x86::clmul(a, b) };
        }
    }
    clmul_portable(a, b)
}

/// [`clmul`] by shifts and XORs: 64 steps, each selected by a mask (no branch on the operands).
pub fn clmul_portable(a: u64, b: u64) -> u128 {
    let mut r = 0u128;
    let wide = u128::from(a);
    for i in 0..64 {
        r ^= (wide << i) & 0u128.wrapping_sub(u128::from((b >> i) & 1));
    }
    r
}

/// Reduction of a polynomial of degree < 128 modulo x^64 + x^4 + x^3 + x + 1.
#[inline(always)]
pub fn reduce(r: u128) -> u64 {
    let (lo, hi) = (r as u64, (r >> 64) as u64);
    let fold = |h: u64| h ^ (h << 1) ^ (h << 3) ^ (h << 4);
    let over = (hi >> 63) ^ (hi >> 61) ^ (hi >> 60);
    lo ^ fold(hi) ^ fold(over)
}

/// `sum_i a_i * b_i` in GF(2^64) (products accumulated unreduced, one reduction at the end).
pub fn dot(a: &[u64], b: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("pclmulqdq") {
            // SAFETY: the instruction set was detected just above.
            return reduce(unsafe { x86::clmul_dot(a, b) });
        }
    }
    reduce(
        a.iter()
            .zip(b)
            .fold(0u128, |acc, (&x, &y)| acc ^ clmul_portable(x, y)),
    )
}

/// `M = sum_t x^t * m_t` in GF(2^64) for the 64 bit-sliced MAC words `m` of one packed word: the word's MACs
/// folded into one field element, `sum_b x^b MAC_b` (both sums are `sum_{b,t} x^(b+t) MAC_b[t]`). The check's
/// per-word value; linear, so folding shares folds the MACs.
pub fn fold(m: &[u64]) -> u64 {
    fold_inline(m)
}

#[inline(always)]
fn fold_inline(m: &[u64]) -> u64 {
    debug_assert_eq!(m.len(), 64);
    let (mut lo, mut hi) = (m[0], 0u64);
    for (b, &mac) in m.iter().enumerate().skip(1) {
        lo ^= mac << b;
        hi ^= mac >> (64 - b);
    }
    reduce(u128::from(lo) | (u128::from(hi) << 64))
}

/// All-ones if bit `bit` of `word` is set, else zero.
#[inline(always)]
fn sel(word: u64, bit: usize) -> u64 {
    ((word >> bit) & 1).wrapping_neg()
}

/// The MAC words of public bits under `key`, per bit-sliced position: `sel(key, t)` for every `t`.
fn key_masks(key: u64) -> [u64; 64] {
    std::array::from_fn(|t| sel(key, t))
}

crate::simd::dispatch!(select_and(macs: &[u64], words: &[u64], out: &mut Vec<u64>) {
    // Appends the MACs of [w] x: macs[64w + t] & words[w] (one word of bits at a time, no zero-fill).
    let mut tmp = [0u64; 64];
    for (m, &w) in macs.chunks_exact(64).zip(words) {
        for t in 0..64 {
            tmp[t] = m[t] & w;
        }
        out.extend_from_slice(&tmp);
    }
});

crate::simd::dispatch!(select_xor(macs: &[u64], words: &[u64], key: u64, out: &mut Vec<u64>) {
    // Appends the MACs of x ^ w for public w: macs[64w + t] ^ (words[w] if bit t of key is set).
    let keys = key_masks(key);
    let mut tmp = [0u64; 64];
    for (m, &w) in macs.chunks_exact(64).zip(words) {
        for t in 0..64 {
            tmp[t] = m[t] ^ (keys[t] & w);
        }
        out.extend_from_slice(&tmp);
    }
});

crate::simd::dispatch!(xor_append(x: &[u64], y: &[u64], out: &mut Vec<u64>) {
    // Appends x ^ y, 64 words at a time through a buffer (no zero-fill of the destination).
    let mut tmp = [0u64; 64];
    let mut xs = x.chunks_exact(64);
    let mut ys = y.chunks_exact(64);
    for (a, b) in (&mut xs).zip(&mut ys) {
        for i in 0..64 {
            tmp[i] = a[i] ^ b[i];
        }
        out.extend_from_slice(&tmp);
    }
    out.extend(xs.remainder().iter().zip(ys.remainder()).map(|(a, b)| a ^ b));
});

// The folds, over the positions `valid` keeps, of the first comparison level's G and P from dealt bits (see
// `Domain::pair_leaves`): per word, with `h`, `l` the public complements (restricted to the kept positions)
// and `high`, `low`, `both` the MAC words of r_h, r_l, r_h & r_l,
//   G = [h] high ^ [l] both ^ [h & l] low,   P = both ^ [l] high ^ [h] low ^ [h & l] key.
// A public selection is an AND of every bit-sliced MAC word. `both` enters P whole, so it is given by its
// folds (`both_folds`, one per word) and read word by word for G only.
crate::simd::dispatch!(pair_leaf_folds(
    macs: [&[u64]; 3],
    both_folds: &[u64],
    public: [&[u64]; 3],
    key: u64,
    outs: [&mut Vec<u64>; 2]
) {
    let ([high, low, both], [nh, nl, valid], [g_out, p_out]) = (macs, public, outs);
    let (mut g_tmp, mut p_tmp) = ([0u64; 64], [0u64; 64]);
    for (i, ((&hw, &lw), (&v, &bf))) in nh.iter().zip(nl).zip(valid.iter().zip(both_folds)).enumerate() {
        let (h, l) = (hw & v, lw & v);
        let hl = h & l;
        let words = 64 * i..64 * (i + 1);
        let (hm, lm, bm) = (&high[words.clone()], &low[words.clone()], &both[words]);
        for t in 0..64 {
            g_tmp[t] = (hm[t] & h) ^ (bm[t] & l) ^ (lm[t] & hl);
            p_tmp[t] = (hm[t] & l) ^ (lm[t] & h);
        }
        g_out.push(fold_inline(&g_tmp));
        p_out.push(fold_inline(&p_tmp) ^ bf ^ reduce(clmul(key, hl)));
    }
});

crate::simd::dispatch!(xor_into(out: &mut [u64], x: &[u64]) {
    for (o, a) in out.iter_mut().zip(x) {
        *o ^= a;
    }
});

// The folds, over the positions `valid` keeps, of the MAC shares of c ^ [d] b ^ [e] a ^ [d & e] key (a public
// selection is an AND of every bit-sliced MAC word), one per word: AND gates whose results are folded. `c` is given by
// its folds (one per word, over the same positions): it is not selected, and folding is linear, so only `a`
// and `b` are read word by word; the [d & e] key term folds to key times the word. Two gates at once, G with
// (b, c, e) over every word of `d` and P with (b2, c2, e2) over the first `e2.len()` words, as a prefix level
// has them: both use the mask `a` and the opened `d`, so `a`'s MACs are read once. Selectors are restricted
// to the kept positions.
crate::simd::dispatch!(and_gate_pair_folds(
    abb: [&[u64]; 3],
    c_folds: [&[u64]; 2],
    dee: [&[u64]; 3],
    valid: &[u64],
    key: u64,
    outs: [&mut Vec<u64>; 2]
) {
    let ([a, b, b2], [cf, cf2], [d, e, e2], [g_out, p_out]) = (abb, c_folds, dee, outs);
    let (mut g_tmp, mut p_tmp) = ([0u64; 64], [0u64; 64]);
    for (i, (((&dw, &ew), &v), &c)) in d.iter().zip(e).zip(valid).zip(cf).enumerate() {
        let (dv, ev) = (dw & v, ew & v);
        let (am, bm) = (&a[64 * i..64 * (i + 1)], &b[64 * i..64 * (i + 1)]);
        match e2.get(i) {
            Some(&e2w) => {
                let e2v = e2w & v;
                let b2m = &b2[64 * i..64 * (i + 1)];
                for t in 0..64 {
                    let at = am[t];
                    g_tmp[t] = (bm[t] & dv) ^ (at & ev);
                    p_tmp[t] = (b2m[t] & dv) ^ (at & e2v);
                }
                p_out.push(fold_inline(&p_tmp) ^ reduce(clmul(key, dv & e2v)) ^ cf2[i]);
            }
            None => {
                for t in 0..64 {
                    g_tmp[t] = (bm[t] & dv) ^ (am[t] & ev);
                }
            }
        }
        g_out.push(fold_inline(&g_tmp) ^ reduce(clmul(key, dv & ev)) ^ c);
    }
});

crate::simd::dispatch!(fold_words(macs: &[u64], out: &mut [u64]) {
    // out[w] = fold(macs[64w..64w + 64]).
    for (o, m) in out.iter_mut().zip(macs.chunks_exact(64)) {
        *o = fold_inline(m);
    }
});

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, _mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_set_epi64x, _mm_srli_si128,
        _mm_xor_si128,
    };

    fn split(v: __m128i) -> u128 {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe {
            let lo = _mm_cvtsi128_si64(v) as u64;
            let hi = _mm_cvtsi128_si64(_mm_srli_si128::<8>(v)) as u64;
            u128::from(lo) | (u128::from(hi) << 64)
        }
    }

    /// # Safety
    /// The CPU must support PCLMULQDQ.
    #[target_feature(enable = "pclmulqdq")]
    pub(super) unsafe fn clmul(a: u64, b: u64) -> u128 {
        let v = _mm_clmulepi64_si128::<0>(_mm_set_epi64x(0, a as i64), _mm_set_epi64x(0, b as i64));
        split(v)
    }

    /// # Safety
    /// The CPU must support PCLMULQDQ.
    #[target_feature(enable = "pclmulqdq")]
    pub(super) unsafe fn clmul_dot(a: &[u64], b: &[u64]) -> u128 {
        let mut acc = _mm_set_epi64x(0, 0);
        let mut pairs = a.chunks_exact(2).zip(b.chunks_exact(2));
        for (x, y) in &mut pairs {
            let xv = _mm_set_epi64x(x[1] as i64, x[0] as i64);
            let yv = _mm_set_epi64x(y[1] as i64, y[0] as i64);
            acc = _mm_xor_si128(acc, _mm_clmulepi64_si128::<0x00>(xv, yv));
            acc = _mm_xor_si128(acc, _mm_clmulepi64_si128::<0x11>(xv, yv));
        }
        let n = a.len().min(b.len());
        if n % 2 == 1 {
            let v = _mm_clmulepi64_si128::<0>(
                _mm_set_epi64x(0, a[n - 1] as i64),
                _mm_set_epi64x(0, b[n - 1] as i64),
            );
            acc = _mm_xor_si128(acc, v);
        }
        split(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn words(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<u64> {
        (0..n).map(|_| rng.random()).collect()
    }

    #[test]
    fn hardware_and_portable_products_agree() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..2000 {
            let (a, b): (u64, u64) = (rng.random(), rng.random());
            assert_eq!(clmul(a, b), clmul_portable(a, b));
        }
        assert_eq!(
            clmul(u64::MAX, u64::MAX),
            clmul_portable(u64::MAX, u64::MAX)
        );
        for n in [0usize, 1, 2, 7, 64] {
            let (a, b) = (words(&mut rng, n), words(&mut rng, n));
            let want = reduce(
                a.iter()
                    .zip(&b)
                    .fold(0, |acc, (&x, &y)| acc ^ clmul_portable(x, y)),
            );
            assert_eq!(dot(&a, &b), want);
        }
    }

    /// Bit-sliced MAC words from per-bit MACs and back: each 64 x 64 bit block transposed (its own inverse).
    fn transpose(m: &[u64]) -> Vec<u64> {
        m.chunks_exact(64)
            .flat_map(|block| {
                (0..64)
                    .map(move |t| (0..64).fold(0u64, |word, b| word | (((block[b] >> t) & 1) << b)))
            })
            .collect()
    }

    #[test]
    fn fold_is_the_same_for_per_bit_and_bit_sliced_macs() {
        // sum_b x^b MAC_b = sum_t x^t m_t: both are sum_{b,t} x^(b+t) MAC_b[t].
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for _ in 0..20 {
            let m = words(&mut rng, 64);
            assert_eq!(transpose(&transpose(&m)), m);
            assert_eq!(fold(&transpose(&m)), fold(&m));
        }
    }

    #[test]
    fn fold_is_the_sum_of_shifted_macs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let m = words(&mut rng, 64);
        let mut acc = 0u128;
        for (b, &mac) in m.iter().enumerate() {
            acc ^= u128::from(mac) << b;
        }
        assert_eq!(fold(&m), reduce(acc));
        let mut out = vec![0; 1];
        fold_words(&m, &mut out);
        assert_eq!(out[0], reduce(acc));
    }

    #[test]
    fn bulk_loops_match_bit_by_bit_definitions() {
        // `a`, `b`, ... are per-bit MACs (the definitions are bit by bit); the kernels get them bit-sliced.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 3;
        let (a, b, c) = (
            words(&mut rng, 64 * n),
            words(&mut rng, 64 * n),
            words(&mut rng, 64 * n),
        );
        let (d, e) = (words(&mut rng, n), words(&mut rng, n));
        let key: u64 = rng.random();
        let bit = |w: &[u64], i: usize| (w[i / 64] >> (i % 64)) & 1 == 1;
        let (ta, tb, tc) = (transpose(&a), transpose(&b), transpose(&c));
        let mut out = Vec::new();
        select_and(&ta, &d, &mut out);
        let per_bit = transpose(&out);
        for i in 0..64 * n {
            assert_eq!(per_bit[i], if bit(&d, i) { a[i] } else { 0 });
        }
        out.clear();
        select_xor(&ta, &d, key, &mut out);
        let per_bit = transpose(&out);
        for i in 0..64 * n {
            assert_eq!(per_bit[i], if bit(&d, i) { a[i] ^ key } else { a[i] });
        }
        // Per-bit definitions, then folded over the kept positions (the last word keeps 10 of 64).
        let valid = [u64::MAX, u64::MAX, (1u64 << 10) - 1];
        let keep = |m: Vec<u64>| -> Vec<u64> {
            m.iter()
                .enumerate()
                .map(|(i, &x)| if bit(&valid, i) { x } else { 0 })
                .collect()
        };
        let refold = |m: &[u64]| m.chunks_exact(64).map(fold).collect::<Vec<_>>();
        // Per bit, the XOR of the MAC terms whose condition holds.
        let xor_where = |terms: &dyn Fn(usize) -> [(bool, u64); 4]| -> Vec<u64> {
            (0..64 * n)
                .map(|i| {
                    terms(i)
                        .iter()
                        .filter(|(on, _)| *on)
                        .fold(0, |w, (_, x)| w ^ x)
                })
                .collect()
        };
        let gate = xor_where(&|i| {
            let (di, ei) = (bit(&d, i), bit(&e, i));
            [(true, c[i]), (di, b[i]), (ei, a[i]), (di && ei, key)]
        });
        let mut gate_folds = Vec::new();
        let c_folds = refold(&keep(c.clone()));
        and_gate_pair_folds(
            [&ta, &tb, &[]],
            [&c_folds, &[]],
            [&d, &e, &[]],
            &valid,
            key,
            [&mut gate_folds, &mut Vec::new()],
        );
        assert_eq!(gate_folds, refold(&keep(gate)));
        // The pair: G over all 3 words, P over the first 2, against the single gates.
        let (b2, c2) = (words(&mut rng, 64 * n), words(&mut rng, 64 * n));
        let tb2 = transpose(&b2);
        let e2 = words(&mut rng, 2);
        let c2_folds = refold(&keep(c2.clone()));
        let (mut p_single, mut pair_g, mut pair_p) = (Vec::new(), Vec::new(), Vec::new());
        and_gate_pair_folds(
            [&ta[..128], &tb2[..128], &[]],
            [&c2_folds[..2], &[]],
            [&d[..2], &e2, &[]],
            &valid[..2],
            key,
            [&mut p_single, &mut Vec::new()],
        );
        and_gate_pair_folds(
            [&ta, &tb, &tb2],
            [&c_folds, &c2_folds],
            [&d, &e, &e2],
            &valid,
            key,
            [&mut pair_g, &mut pair_p],
        );
        assert_eq!((pair_g, pair_p), (gate_folds.clone(), p_single));
        // First-level pairs: high = a, low = b, both = c (any words: the kernel is linear in them).
        let (nh, nl) = (words(&mut rng, n), words(&mut rng, n));
        let (mut pair_g, mut pair_p) = (Vec::new(), Vec::new());
        pair_leaf_folds(
            [&ta, &tb, &tc],
            &c_folds,
            [&nh, &nl, &valid],
            key,
            [&mut pair_g, &mut pair_p],
        );
        let want_g = xor_where(&|i| {
            let (hi, li) = (bit(&nh, i), bit(&nl, i));
            [(hi, a[i]), (li, c[i]), (hi && li, b[i]), (false, 0)]
        });
        let want_p = xor_where(&|i| {
            let (hi, li) = (bit(&nh, i), bit(&nl, i));
            [(true, c[i]), (li, a[i]), (hi, b[i]), (hi && li, key)]
        });
        assert_eq!(pair_g, refold(&keep(want_g)));
        assert_eq!(pair_p, refold(&keep(want_p)));
        let mut acc = b.clone();
        xor_into(&mut acc, &a);
        assert!((0..64 * n).all(|i| acc[i] == a[i] ^ b[i]));
        let mut xored = vec![7];
        xor_append(&a[..130], &b[..130], &mut xored);
        assert_eq!(xored.len(), 131);
        assert!((0..130).all(|i| xored[i + 1] == a[i] ^ b[i]));
    }
}
