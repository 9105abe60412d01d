//! Products of shared values: `x y = sum_{j,k} x_j y_k`, and party `i` can compute the three terms
//! `x_i y_i + x_i y_{i+1} + x_{i+1} y_i` from its two components; the three parties' terms cover all nine
//! products. Each party adds its summand of a zero sharing and sends the sum to the previous party, which
//! then holds two consecutive components of the product (Araki et al., CCS 2016). One round, one ring
//! element per output element per party, nothing dealt.
//!
//! Matrix products (`X Y`, share by share, and `lower(X) W` for a fixed shared weight) are the same with
//! matrix products for the three terms: `X_i (Y_i + Y_{i+1}) + X_{i+1} Y_i`, two local products; the bytes
//! are those of the output (one element per output per party), whatever the inner dimension. Results carry
//! `2f` fractional bits.

use crate::error::{ensure_shape, Result};
use crate::lowering::Lowering;
use crate::net::Net;

use crate::rep3m::proof::Claim;

use super::{Party, RepShare};

/// A fixed secret-shared weight matrix (`inner x outputs`), prepared at model setup: this party's component
/// `W_i` and the sum `W_i + W_{i+1}` its products need.
pub struct RepWeight {
    inner: usize,
    outputs: usize,
    /// `W_i`.
    own: Vec<u64>,
    /// `W_i + W_{i+1}`.
    sum: Vec<u64>,
}

impl std::fmt::Debug for RepWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepWeight[{}x{}]", self.inner, self.outputs)
    }
}

impl RepWeight {
    /// Prepares the share `w` of an `inner x outputs` weight.
    pub fn new(w: &RepShare, [inner, outputs]: [usize; 2]) -> Result<Self> {
        ensure_shape(w.len() == inner * outputs, "rep3 weight", || {
            format!("{} elements for {inner}x{outputs}", w.len())
        })?;
        let mut sum = w.own.clone();
        crate::ring::add_assign(&mut sum, &w.next);
        Ok(Self {
            inner,
            outputs,
            own: w.own.clone(),
            sum,
        })
    }

    /// Inner dimension.
    pub fn inner(&self) -> usize {
        self.inner
    }

    /// Output columns.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

impl<N: Net> Party<N> {
    /// Elementwise product (one round).
    pub fn mul(&mut self, x: &RepShare, y: &RepShare) -> Result<RepShare> {
        ensure_shape(x.len() == y.len(), "mul", || {
            format!("lengths {} and {}", x.len(), y.len())
        })?;
        let z: Vec<u64> = (0..x.len())
            .map(|k| {
                let (a, b) = (x.own[k], x.next[k]);
                let (c, d) = (y.own[k], y.next[k]);
                a.wrapping_mul(c.wrapping_add(d))
                    .wrapping_add(b.wrapping_mul(c))
            })
            .collect();
        self.reshare(z, || vec![Claim::elementwise(x.clone(), y.clone())])
    }

    /// `X_i (Y_i + Y_{i+1}) + X_{i+1} Y_i`: this party's summand of `X Y`.
    fn product_summand(
        &self,
        [m, k, n]: [usize; 3],
        x: &RepShare,
        y_sum: &[u64],
        y_own: &[u64],
    ) -> Vec<u64> {
        let mut z = vec![0u64; m * n];
        self.gemm.gemm(m, k, n, &x.own, y_sum, &mut z);
        let mut t = vec![0u64; m * n];
        self.gemm.gemm(m, k, n, &x.next, y_own, &mut t);
        crate::ring::add_assign(&mut z, &t);
        z
    }

    /// `x_i · y_i` for every pair, shapes `dims[i] = [m, k, n]`, all in one round.
    pub fn matmuls(
        &mut self,
        pairs: &[(&RepShare, &RepShare)],
        dims: &[[usize; 3]],
    ) -> Result<Vec<RepShare>> {
        ensure_shape(pairs.len() == dims.len(), "matmuls", || {
            format!("{} products with {} shapes", pairs.len(), dims.len())
        })?;
        let mut summands = Vec::new();
        for ((x, y), &[m, k, n]) in pairs.iter().zip(dims) {
            ensure_shape(x.len() == m * k && y.len() == k * n, "matmuls", || {
                format!(
                    "operands of {} and {} elements for {m}x{k} by {k}x{n}",
                    x.len(),
                    y.len()
                )
            })?;
            let mut y_sum = y.own.clone();
            crate::ring::add_assign(&mut y_sum, &y.next);
            summands.extend(self.product_summand([m, k, n], x, &y_sum, &y.own));
        }
        let z = self.reshare(summands, || {
            pairs
                .iter()
                .zip(dims)
                .map(|((x, y), &dims)| Claim::Matmul {
                    x: (*x).clone(),
                    y: (*y).clone(),
                    dims,
                })
                .collect()
        })?;
        let mut out = Vec::with_capacity(pairs.len());
        let mut at = 0;
        for &[m, _, n] in dims {
            out.push(z.map(|c| c[at..at + m * n].to_vec()));
            at += m * n;
        }
        Ok(out)
    }

    /// `lower(x) · W` for a fixed weight (one round, one element per output per party).
    pub fn weight_product(
        &mut self,
        x: &RepShare,
        batch: usize,
        lowering: Lowering,
        w: &RepWeight,
    ) -> Result<RepShare> {
        ensure_shape(lowering.inner() == w.inner, "weight_product", || {
            format!(
                "lowered inner dimension {} against a {}x{} weight",
                lowering.inner(),
                w.inner,
                w.outputs
            )
        })?;
        let lowered = x.lower(&lowering, batch)?;
        let rows = batch * lowering.rows_per_item();
        let dims = [rows, w.inner, w.outputs];
        let z = self.product_summand(dims, &lowered, &w.sum, &w.own);
        self.reshare(z, || {
            vec![Claim::Matmul {
                y: RepShare {
                    own: w.own.clone(),
                    next: crate::ring::sub(&w.sum, &w.own),
                },
                x: lowered,
                dims,
            }]
        })
    }
}
