//! Checking a large fixed-weight product instead of carrying MACs through it.
//!
//! The online cost of `spdz2k` on a dense layer is the product `U = E · W` of the opened, masked activation
//! `E` (public, m x k) with the shared weight `W` (k x n): done the usual way it multiplies `E` with the value
//! shares *and* with the MAC shares of `W`, `2 m k n` products in Z_2^128. Here the parties multiply only the
//! value shares and obtain `U`'s MACs, and a guarantee that `U` is right, from dealt material that is linear
//! in `n`, `m` and `k` (see [`ProductCheck`]):
//!
//! 1. **Re-authentication.** Each party opens `U_i - R_i` for a dealt, authenticated, uniform `R` (one round,
//!    full 128-bit elements, so `delta = U - R` is uniform and reveals nothing). Then `U~ = delta + R`: the
//!    value shares are `R`'s (plus `delta` on one party) and the MAC shares `m(R) + alpha_i * delta`. This is
//!    a correctly authenticated sharing of `U~ = U + e`, where `e` is whatever error a cheating party put in
//!    its share of `U` or in the opening of `delta`. Nothing so far stops `e != 0`.
//! 2. **Projection check** (Freivalds, "Probabilistic machines can use less running time", IFIP 1977, applied
//!    to shares). For the dealt, secret, uniform `rho` in Z_2^128^n, every row `i` satisfies
//!    `d_i = <U~_i, rho> - E_i · (W rho) = <e_i, rho>`, and `d_i` is a linear function of authenticated
//!    values with public coefficients: `<U~_i, rho> = <delta_i, [rho]> + [R rho]_i` and
//!    `W rho = B rho + F rho` (`B rho` dealt, `F = W - B` public). So every party can compute its MAC share of
//!    `d_i`, `m(d_i) = <delta_i, m(rho)> + m(R rho)_i - E_i · m(W rho)`, without any product of secrets, and
//!    each `d_i` is recorded as an *opened zero*: the batched MAC check then verifies `alpha * d_i = 0`
//!    together with every other opened value, at no extra byte or round.
//!
//! Honest runs give `d_i = 0` exactly (all dealt values are exact modulo 2^128, and `U = E · W` modulo 2^128 is
//! what the value shares sum to), so the check reveals nothing. A cheat with `e_i != 0 mod 2^64`, of 2-adic
//! valuation `v < 64`, gives `d_i = 2^v * u` with `u` uniform modulo `2^(128-v)` (one coordinate of `e_i` is
//! `2^v` times an odd number and `rho` is uniform and unknown to the cheat), and the MAC check passes only if
//! `val(alpha) + val(chi) + val(d_i) >= 128`, with `chi` the check's coefficient. Three independent uniform
//! valuations summing to at least 65 (the worst case `v = 63`) happen with probability about
//! `C(67, 2) * 2^-66 < 2^-55`, against `2^-59` for the MAC check's own bound; the cheat learns nothing about
//! `rho` before the check, since `d_i` is never opened.
//!
//! Cost: one more round and `m n` more opened elements, and `m (k + n)` MAC products online, against the
//! `m k n` MAC products saved; `F rho` (`k n` products) is preprocessing. So `spdz2k` uses it only for large
//! products ([`crate::material::kinds::uses_product_check`]).

use sha2::Digest;

use crate::error::{ensure_shape, Result};
use crate::material::auth::AuthVec;
use crate::material::ProductCheck;

use super::{gemm_public_left, mul_64_128, read_u128, State};

/// A fixed weight's value shares split into their low and high 64-bit halves (row-major, like the weight),
/// which [`split_product_row`] multiplies with 32-bit lanes; empty for weights too narrow to be checked.
#[derive(Default)]
pub struct SplitValues {
    lo: Vec<u64>,
    hi: Vec<u64>,
}

impl SplitValues {
    /// The halves of `w`'s value shares if its products can be checked (see
    /// [`crate::material::kinds::uses_product_check`]), else nothing.
    pub(super) fn new(w: &AuthVec, [inner, _]: [usize; 2]) -> Self {
        if !(crate::material::kinds::PRODUCT_CHECK_MIN_INNER..MAX_SPLIT_INNER).contains(&inner) {
            return Self::default();
        }
        Self {
            lo: w.v.iter().map(|&x| x as u64).collect(),
            hi: w.v.iter().map(|&x| (x >> 64) as u64).collect(),
        }
    }
}

/// Inner dimensions below this keep [`split_product_row`]'s column sums exact: each adds fewer than
/// `3 * 2^32` per term.
const MAX_SPLIT_INNER: usize = 1 << 30;

crate::simd::dispatch!(split_product_row(e: &[u64], lo: &[u64], hi: &[u64], sums: &mut [u64]) {
    // One output row of `e · w` modulo 2^128 for `w = lo + 2^64 hi`, as four column sums of 64-bit words
    // (`sums = s0 | s1 | s2 | s3`, `n` each): with `x = x0 + 2^32 x1` and `v = v0 + 2^32 v1` (32-bit halves),
    // `x v = x0 v0 + 2^32 (x0 v1 + x1 v0) + 2^64 x1 v1`, and the row's value is
    // `s0 + 2^32 s1 + 2^64 (s2 + s3)` where s0..s2 sum 32-bit pieces exactly and s3 sums the terms of weight
    // 2^64 modulo 2^64. Only 32 x 32 -> 64-bit products, so the loop vectorises.
    let n = sums.len() / 4;
    let (s0, rest) = sums.split_at_mut(n);
    let (s1, rest) = rest.split_at_mut(n);
    let (s2, s3) = rest.split_at_mut(n);
    const LOW: u64 = 0xffff_ffff;
    for ((&x, l), h) in e.iter().zip(lo.chunks_exact(n)).zip(hi.chunks_exact(n)) {
        let (x0, x1) = (x & LOW, x >> 32);
        for j in 0..n {
            let (v0, v1) = (l[j] & LOW, l[j] >> 32);
            let (a, b, c, d) = (x0 * v0, x0 * v1, x1 * v0, x1 * v1);
            s0[j] = s0[j].wrapping_add(a & LOW);
            s1[j] = s1[j].wrapping_add((a >> 32) + (b & LOW) + (c & LOW));
            s2[j] = s2[j].wrapping_add((b >> 32) + (c >> 32));
            s3[j] = s3[j].wrapping_add(d.wrapping_add(x.wrapping_mul(h[j])));
        }
    }
});

/// `e · w - r` in the value shares only (no MAC shares: the opened `delta` carries none), through the split
/// halves when `values` has them.
pub(super) fn masked_values(
    mkn: [usize; 3],
    e: &[u64],
    w: &AuthVec,
    values: &SplitValues,
    r: &AuthVec,
) -> AuthVec {
    let [m, k, n] = mkn;
    let mut v = if !values.lo.is_empty() && values.lo.len() == k * n && n > 0 && e.len() == m * k {
        let mut out = Vec::with_capacity(m * n);
        let mut sums = vec![0u64; 4 * n];
        for row in e.chunks_exact(k.max(1)) {
            sums.fill(0);
            split_product_row(row, &values.lo, &values.hi, &mut sums);
            let (s0, rest) = sums.split_at(n);
            let (s1, rest) = rest.split_at(n);
            let (s2, s3) = rest.split_at(n);
            out.extend((0..n).map(|j| {
                u128::from(s0[j])
                    .wrapping_add(u128::from(s1[j]) << 32)
                    .wrapping_add(u128::from(s2[j]) << 64)
                    .wrapping_add(u128::from(s3[j]) << 64)
            }));
        }
        out
    } else {
        let [v] = gemm_public_left(mkn, e, [&w.v]);
        v
    };
    for (x, &mask) in v.iter_mut().zip(&r.v) {
        *x = x.wrapping_sub(mask);
    }
    AuthVec { v, m: Vec::new() }
}

/// Sums the shares of `delta` in full width, hashes them into the view (every party must see the same
/// `delta`, or the MAC check's view comparison fails) and returns them as two words each, low first. Nothing
/// is recorded as an opened value: `delta` has no MAC, the projection check covers it.
pub(super) fn open_unchecked(state: &mut State, own: &AuthVec, received: &[&[u8]]) -> Vec<u64> {
    let mut sum = own.v.clone();
    for chunk in received {
        for (s, c) in sum.iter_mut().zip(chunk.chunks_exact(16)) {
            *s = s.wrapping_add(read_u128(c));
        }
    }
    let mut words = Vec::with_capacity(2 * sum.len());
    for y in &sum {
        words.extend([*y as u64, (*y >> 64) as u64]);
    }
    state.view.update(crate::ring::to_bytes(&words));
    words
}

/// `U~ = delta + R` with its MACs, and the projection check of each row recorded as an opened zero (see the
/// module documentation). `opened` is `delta` as [`open_unchecked`] returns it; `weight_rho` the share of
/// `W · rho`; `constants` whether this party adds public values.
pub(super) fn finish(
    state: &mut State,
    [rows, inner, outputs]: [usize; 3],
    e: &[u64],
    opened: &[u64],
    check: &ProductCheck<AuthVec>,
    weight_rho: &AuthVec,
    constants: bool,
) -> Result<AuthVec> {
    ensure_shape(
        opened.len() == 2 * rows * outputs
            && e.len() == rows * inner
            && check.r.v.len() == rows * outputs
            && check.r.m.len() == rows * outputs
            && check.rho.m.len() == outputs
            && check.r_rho.m.len() == rows
            && weight_rho.m.len() == inner,
        "checked product",
        || {
            format!(
                "{rows}x{inner} by {inner}x{outputs} with {} opened words, {} mask, {} projection, {} \
                 projected mask and {} projected weight elements",
                opened.len(),
                check.r.v.len(),
                check.rho.m.len(),
                check.r_rho.m.len(),
                weight_rho.m.len()
            )
        },
    )?;
    let delta: Vec<u128> = opened
        .chunks_exact(2)
        .map(|w| u128::from(w[0]) | (u128::from(w[1]) << 64))
        .collect();
    let alpha = state.keys.alpha;
    let mut u = check.r.clone();
    for ((v, m), &d) in u.v.iter_mut().zip(u.m.iter_mut()).zip(&delta) {
        if constants {
            *v = v.wrapping_add(d);
        }
        *m = m.wrapping_add(alpha.wrapping_mul(d));
    }
    for ((d_row, e_row), &r_rho) in delta
        .chunks_exact(outputs.max(1))
        .zip(e.chunks_exact(inner.max(1)))
        .zip(&check.r_rho.m)
    {
        let projected = d_row
            .iter()
            .zip(&check.rho.m)
            .fold(r_rho, |acc, (&d, &m)| acc.wrapping_add(d.wrapping_mul(m)));
        let expected = e_row
            .iter()
            .zip(&weight_rho.m)
            .fold(0u128, |acc, (&x, &m)| acc.wrapping_add(mul_64_128(x, m)));
        state.opened.push(0);
        state.macs.push(projected.wrapping_sub(expected));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn split_products_equal_products_modulo_2_128() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let [m, k, n] = [3, 300, 7];
        let w = AuthVec {
            v: (0..k * n)
                .map(|i| if i % 5 == 0 { u128::MAX } else { rng.random() })
                .collect(),
            m: vec![0; k * n],
        };
        let e: Vec<u64> = (0..m * k)
            .map(|i| if i % 3 == 0 { u64::MAX } else { rng.random() })
            .collect();
        let r = AuthVec {
            v: (0..m * n).map(|_| rng.random()).collect(),
            m: Vec::new(),
        };
        let split = SplitValues::new(&w, [k, n]);
        assert_eq!(split.lo.len(), k * n, "wide enough to be split");
        let got = masked_values([m, k, n], &e, &w, &split, &r);
        let unsplit = masked_values([m, k, n], &e, &w, &SplitValues::default(), &r);
        for i in 0..m {
            for j in 0..n {
                let product = (0..k).fold(0u128, |acc, p| {
                    acc.wrapping_add(u128::from(e[i * k + p]).wrapping_mul(w.v[p * n + j]))
                });
                let want = product.wrapping_sub(r.v[i * n + j]);
                assert_eq!(got.v[i * n + j], want, "row {i}, column {j}");
                assert_eq!(unsplit.v[i * n + j], want, "row {i}, column {j}");
            }
        }
        assert!(SplitValues::new(&w, [100, n]).lo.is_empty(), "too narrow");
    }
}
