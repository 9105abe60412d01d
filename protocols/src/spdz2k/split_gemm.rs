//! Products `e · w` modulo 2^128 of public words `e` with a fixed weight's 128-bit shares, on 32-bit lanes.
//!
//! A 64 x 128-bit product needs a widening 64-bit multiply, which vector units lack; split into 32-bit halves it
//! is four 32 x 32 -> 64-bit products (plus a 64-bit low product for the high half), which they have. The
//! weight's shares are split into their low and high 64-bit words once, at model setup ([`SplitWeight`]), and
//! each output row is accumulated as four column sums ([`split_product_row`]). Along a weight row the lanes
//! fill only for wide weights, so only those are split ([`SPLIT_MIN_OUTPUTS`]).

use crate::material::auth::AuthVec;

/// Output columns from which [`split_product_row`] beats the 128-bit scalar kernel (measured on AVX2: 1.6x
/// faster at 128 columns, 1.5x slower at 16).
pub(super) const SPLIT_MIN_OUTPUTS: usize = 64;

/// Inner dimensions below this keep [`split_product_row`]'s column sums exact: each adds fewer than
/// `3 * 2^32` per term.
const MAX_SPLIT_INNER: usize = 1 << 30;

/// The low and high 64-bit words of a `k x n` matrix of 128-bit shares, row-major; empty if not split.
#[derive(Default)]
pub(super) struct Halves {
    lo: Vec<u64>,
    hi: Vec<u64>,
}

impl Halves {
    fn new(x: &[u128]) -> Self {
        Self {
            lo: x.iter().map(|&v| v as u64).collect(),
            hi: x.iter().map(|&v| (v >> 64) as u64).collect(),
        }
    }

    /// `e · x` modulo 2^128 for public `e` (m x k), or `None` if this matrix is not split in that shape.
    pub(super) fn product(&self, [m, k, n]: [usize; 3], e: &[u64]) -> Option<Vec<u128>> {
        if self.lo.is_empty() || self.lo.len() != k * n || e.len() != m * k || k == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(m * n);
        let mut sums = vec![0u64; 4 * n];
        for row in e.chunks_exact(k) {
            sums.fill(0);
            split_product_row(row, &self.lo, &self.hi, &mut sums);
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
        Some(out)
    }
}

/// A fixed weight's value and MAC shares in split form, for weights wide enough to gain from it; both empty
/// otherwise.
#[derive(Default)]
pub struct SplitWeight {
    pub(super) values: Halves,
    pub(super) macs: Halves,
}

impl SplitWeight {
    /// Splits the shares of an `inner x outputs` weight if it has at least [`SPLIT_MIN_OUTPUTS`] columns.
    pub(super) fn new(w: &AuthVec, [inner, outputs]: [usize; 2]) -> Self {
        if outputs < SPLIT_MIN_OUTPUTS || inner >= MAX_SPLIT_INNER {
            return Self::default();
        }
        Self {
            values: Halves::new(&w.v),
            macs: Halves::new(&w.m),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn split_products_equal_products_modulo_2_128() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for [m, k, n] in [[3, 300, 70], [1, 5, 64], [4, 1, 65]] {
            let x: Vec<u128> = (0..k * n)
                .map(|i| if i % 5 == 0 { u128::MAX } else { rng.random() })
                .collect();
            let e: Vec<u64> = (0..m * k)
                .map(|i| if i % 3 == 0 { u64::MAX } else { rng.random() })
                .collect();
            let got = Halves::new(&x).product([m, k, n], &e).expect("split");
            for i in 0..m {
                for j in 0..n {
                    let want = (0..k).fold(0u128, |acc, p| {
                        acc.wrapping_add(u128::from(e[i * k + p]).wrapping_mul(x[p * n + j]))
                    });
                    assert_eq!(got[i * n + j], want, "{m}x{k}x{n}: row {i}, column {j}");
                }
            }
            assert!(
                Halves::new(&x).product([m, k + 1, n], &e).is_none(),
                "other shape"
            );
        }
        let narrow = AuthVec {
            v: vec![1; 10 * 63],
            m: vec![1; 10 * 63],
        };
        assert!(
            SplitWeight::new(&narrow, [10, 63]).values.lo.is_empty(),
            "too narrow"
        );
    }
}
