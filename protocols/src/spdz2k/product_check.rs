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

use crate::error::{ensure_shape, Result};
use crate::material::auth::AuthVec;
use crate::material::ProductCheck;

use super::split_gemm::SplitWeight;
use super::{add_received, gemm_public_left, hash_opened, mul_64_128, State};

/// `e · w - r` in the value shares only (no MAC shares: the opened `delta` carries none), through the split
/// halves of the weight's value shares where `split` has them.
pub(super) fn masked_values(
    mkn: [usize; 3],
    e: &[u64],
    w: &AuthVec,
    split: &SplitWeight,
    r: &AuthVec,
) -> AuthVec {
    let mut v = match split.values.product(mkn, e) {
        Some(v) => v,
        None => {
            let [v] = gemm_public_left(mkn, e, [&w.v]);
            v
        }
    };
    for (x, &mask) in v.iter_mut().zip(&r.v) {
        *x = x.wrapping_sub(mask);
    }
    AuthVec { v, m: Vec::new() }
}

/// The MAC shares of `W · rho = B · rho + F · rho` (`F` public, `inner x outputs`): all the check needs of
/// it. The value shares are left empty; the result serves only as [`finish`]'s `weight_rho`.
pub(super) fn weight_projection(
    [inner, outputs]: [usize; 2],
    f: &[u64],
    rho: &AuthVec,
    b_rho: &AuthVec,
) -> AuthVec {
    let [mut m] = gemm_public_left([inner, outputs, 1], f, [&rho.m]);
    for (x, &b) in m.iter_mut().zip(&b_rho.m) {
        *x = x.wrapping_add(b);
    }
    AuthVec { v: Vec::new(), m }
}

/// Sums the shares of `delta` in full width, hashes them into the view (every party must see the same
/// `delta`, or the MAC check's view comparison fails) and returns them as two words each, low first. Nothing
/// is recorded as an opened value: `delta` has no MAC, the projection check covers it.
pub(super) fn open_unchecked(state: &mut State, own: &AuthVec, received: &[&[u8]]) -> Vec<u64> {
    let mut sum = own.v.clone();
    add_received(&mut sum, received);
    hash_opened(&mut state.view, &sum);
    sum.iter()
        .flat_map(|&y| [y as u64, (y >> 64) as u64])
        .collect()
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
    fn masked_values_are_the_value_product_minus_the_mask_split_or_not() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let [m, k, n] = [2, 130, 70];
        let w = AuthVec {
            v: (0..k * n).map(|_| rng.random()).collect(),
            m: (0..k * n).map(|_| rng.random()).collect(),
        };
        let e: Vec<u64> = (0..m * k).map(|_| rng.random()).collect();
        let r = AuthVec {
            v: (0..m * n).map(|_| rng.random()).collect(),
            m: Vec::new(),
        };
        let [product] = gemm_public_left([m, k, n], &e, [&w.v]);
        let want: Vec<u128> = product
            .iter()
            .zip(&r.v)
            .map(|(p, x)| p.wrapping_sub(*x))
            .collect();
        let split = SplitWeight::new(&w, [k, n]);
        assert!(
            split.values.product([m, k, n], &e).is_some(),
            "wide enough to split"
        );
        assert_eq!(masked_values([m, k, n], &e, &w, &split, &r).v, want);
        assert_eq!(
            masked_values([m, k, n], &e, &w, &SplitWeight::default(), &r).v,
            want
        );
    }
}
