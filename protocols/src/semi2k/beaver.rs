//! Products of shared values with Beaver's method (Beaver, CRYPTO 1991): open the inputs masked by dealt
//! random values, then combine locally. Results carry `2f` fractional bits; callers truncate.
//!
//! Fixed weights: a model's weight `W` is masked once at setup by a dealt uniform `B`, and `F = W - B` is
//! opened then (it reveals nothing: `B` is uniform and never opened). Each inference then needs only a fresh
//! `A` shaped like the activation and `C = lower(A) · B`, and opens only `E = X - A`:
//! `X · W = lower(E) · (F + B) + lower(A) · F + C`, so the bytes per inference scale with the activations,
//! not with the weights.

use crate::error::{ensure_shape, Result};
use crate::lowering::Lowering;
use crate::net::Net;
use crate::ring;

use super::{open::Round, Party};

/// A fixed weight matrix (`inner x outputs`) in the form a party multiplies with, after model setup.
pub struct FixedWeight {
    index: usize,
    inner: usize,
    outputs: usize,
    /// `F = W - B`, public to the committee.
    opened: Vec<u64>,
    /// `F + B_0` on party 0, `B_i` on the others: what multiplies `lower(E)`.
    for_masked_input: Vec<u64>,
}

impl std::fmt::Debug for FixedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FixedWeight#{}[{}x{}]",
            self.index, self.inner, self.outputs
        )
    }
}

impl FixedWeight {
    /// Weight number (the index of its mask).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Output columns.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Inner dimension.
    pub fn inner(&self) -> usize {
        self.inner
    }
}

impl<N: Net> Party<N> {
    /// Elementwise product of two shared vectors (one round).
    pub fn mul(&mut self, x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
        ensure_shape(x.len() == y.len(), "mul", || {
            format!("lengths {} and {}", x.len(), y.len())
        })?;
        let t = self.material.triples(x.len())?;
        let mut round = Round::default();
        round.words(ring::sub(x, &t.a));
        round.words(ring::sub(y, &t.b));
        let opened = self.open_round(round)?;
        let (d, e) = (&opened[0], &opened[1]);
        let constants = self.holds_constants();
        Ok((0..x.len())
            .map(|i| {
                let mut z = t.c[i]
                    .wrapping_add(d[i].wrapping_mul(t.b[i]))
                    .wrapping_add(e[i].wrapping_mul(t.a[i]));
                if constants {
                    z = z.wrapping_add(d[i].wrapping_mul(e[i]));
                }
                z
            })
            .collect())
    }

    /// Product of shared matrices `x` (m x k) and `y` (k x n) (one round).
    pub fn matmul(&mut self, x: &[u64], y: &[u64], [m, k, n]: [usize; 3]) -> Result<Vec<u64>> {
        ensure_shape(x.len() == m * k && y.len() == k * n, "matmul", || {
            format!(
                "operands of {} and {} elements for {m}x{k} by {k}x{n}",
                x.len(),
                y.len()
            )
        })?;
        let t = self.material.mat_triple(m, k, n)?;
        let mut round = Round::default();
        round.words(ring::sub(x, &t.a));
        round.words(ring::sub(y, &t.b));
        let opened = self.open_round(round)?;
        let (e, f) = (&opened[0], &opened[1]);
        let mut z = t.c;
        let mut tmp = vec![0u64; m * n];
        let b_side = if self.holds_constants() {
            sum(f, &t.b)
        } else {
            t.b
        };
        self.gemm.gemm(m, k, n, e, &b_side, &mut tmp);
        ring::add_assign(&mut z, &tmp);
        self.gemm.gemm(m, k, n, &t.a, f, &mut tmp);
        ring::add_assign(&mut z, &tmp);
        Ok(z)
    }

    /// Model setup for weight number `index`: opens `F = W - B` from this party's shares of the weight and of
    /// its dealt mask (one round, once per model).
    pub fn setup_weight(
        &mut self,
        index: usize,
        weight: &[u64],
        mask: &[u64],
        [inner, outputs]: [usize; 2],
    ) -> Result<FixedWeight> {
        ensure_shape(
            weight.len() == inner * outputs && mask.len() == weight.len(),
            "setup_weight",
            || {
                format!(
                    "weight {} and mask {} elements for {inner}x{outputs}",
                    weight.len(),
                    mask.len()
                )
            },
        )?;
        let opened = self.open(&ring::sub(weight, mask))?;
        let for_masked_input = if self.holds_constants() {
            sum(&opened, mask)
        } else {
            mask.to_vec()
        };
        Ok(FixedWeight {
            index,
            inner,
            outputs,
            opened,
            for_masked_input,
        })
    }

    /// `lower(x) · W` for a fixed weight set up with [`Party::setup_weight`] (one round).
    pub fn weight_product(
        &mut self,
        x: &[u64],
        batch: usize,
        lowering: Lowering,
        w: &FixedWeight,
    ) -> Result<Vec<u64>> {
        ensure_shape(lowering.inner() == w.inner, "weight_product", || {
            format!(
                "lowered inner dimension {} against a {}x{} weight",
                lowering.inner(),
                w.inner,
                w.outputs
            )
        })?;
        let t = self
            .material
            .weight_triple(w.index, lowering, batch, w.outputs)?;
        ensure_shape(x.len() == t.a.len(), "weight_product", || {
            format!("input of {} elements, expected {}", x.len(), t.a.len())
        })?;
        let e = self.open(&ring::sub(x, &t.a))?;
        let rows = batch * lowering.rows_per_item();
        let mut z = t.c;
        let mut tmp = vec![0u64; rows * w.outputs];
        self.gemm.gemm(
            rows,
            w.inner,
            w.outputs,
            &lowering.lower(&e, batch)?,
            &w.for_masked_input,
            &mut tmp,
        );
        ring::add_assign(&mut z, &tmp);
        self.gemm.gemm(
            rows,
            w.inner,
            w.outputs,
            &lowering.lower(&t.a, batch)?,
            &w.opened,
            &mut tmp,
        );
        ring::add_assign(&mut z, &tmp);
        Ok(z)
    }
}

fn sum(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = a.to_vec();
    ring::add_assign(&mut out, b);
    out
}
