//! Products of shared values with Beaver's method (Beaver, CRYPTO 1991): open the inputs masked by dealt
//! random values, then combine locally. Results carry `2f` fractional bits; callers truncate.
//!
//! Fixed weights: a model's weight `W` is masked once at setup by a dealt uniform `B`, and `F = W - B` is
//! opened then (it reveals nothing: `B` is uniform and never opened). Each inference then needs only a fresh
//! `A` shaped like the activation and `C = lower(A) · B`, and opens only `E = X - A`:
//! `X · W = lower(E) · (F + B) + lower(A) · F + C`, so the bytes per inference scale with the activations,
//! not with the weights.

use crate::domain::Domain;
use crate::error::{ensure_shape, Result};
use crate::lowering::Lowering;
use crate::material::{Material, ProductCheck, Request};
use crate::net::Net;

use super::{open::Round, Party};

/// A fixed weight matrix (`inner x outputs`) in the form a party multiplies with, after model setup.
pub struct FixedWeight<D: Domain = crate::domain::Semi2k> {
    index: usize,
    inner: usize,
    outputs: usize,
    /// `F = W - B`, public to the committee (modulo 2^64).
    opened: Vec<u64>,
    /// `F + B`: what multiplies `lower(E)`.
    for_masked_input: D::Arith,
    /// `F + B` in the form the domain's kernels multiply it (see [`Domain::weight_values`]).
    values: D::WeightValues,
}

impl<D: Domain> std::fmt::Debug for FixedWeight<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FixedWeight#{}[{}x{}]",
            self.index, self.inner, self.outputs
        )
    }
}

impl<D: Domain> FixedWeight<D> {
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

impl<N: Net, D: Domain> Party<N, D> {
    /// Elementwise product of two shared vectors (one round).
    pub fn mul(&mut self, x: &D::Arith, y: &D::Arith) -> Result<D::Arith> {
        let len = D::len(x);
        ensure_shape(len == D::len(y), "mul", || {
            format!("lengths {} and {}", len, D::len(y))
        })?;
        let mut t = self.material.triples(len)?;
        self.deviate_triple(&mut t.c);
        let mut round = Round::default();
        round.words(D::sub(x, &t.a));
        round.words(D::sub(y, &t.b));
        let opened = self.open_round(round)?;
        let (d, e) = (&opened[0], &opened[1]);
        let mut z = D::add(
            &D::add(&t.c, &D::mul_public(&t.b, d)),
            &D::mul_public(&t.a, e),
        );
        let de = crate::ring::mul(d, e);
        self.add_public(&mut z, &de);
        Ok(z)
    }

    /// Product of shared matrices `x` (m x k) and `y` (k x n) (one round).
    pub fn matmul(
        &mut self,
        x: &D::Arith,
        y: &D::Arith,
        [m, k, n]: [usize; 3],
    ) -> Result<D::Arith> {
        ensure_shape(D::len(x) == m * k && D::len(y) == k * n, "matmul", || {
            format!(
                "operands of {} and {} elements for {m}x{k} by {k}x{n}",
                D::len(x),
                D::len(y)
            )
        })?;
        let mut t = self.material.mat_triple(m, k, n)?;
        self.deviate_triple(&mut t.c);
        let mut round = Round::default();
        round.words(D::sub(x, &t.a));
        round.words(D::sub(y, &t.b));
        let opened = self.open_round(round)?;
        let (e, f) = (&opened[0], &opened[1]);
        // X·Y = C + E·B + A·F + E·F.
        let mut z = D::add(
            &t.c,
            &D::add(
                &D::gemm_left(self.gemm.as_ref(), [m, k, n], e, &t.b),
                &D::gemm_right(self.gemm.as_ref(), [m, k, n], &t.a, f),
            ),
        );
        let mut ef = vec![0u64; m * n];
        self.gemm.gemm(m, k, n, e, f, &mut ef);
        self.add_public(&mut z, &ef);
        Ok(z)
    }

    /// Model setup for weight number `index`: opens `F = W - B` from this party's shares of the weight and of
    /// its dealt mask (one round, once per model).
    pub fn setup_weight(
        &mut self,
        index: usize,
        weight: &D::Arith,
        mask: &D::Arith,
        [inner, outputs]: [usize; 2],
    ) -> Result<FixedWeight<D>> {
        ensure_shape(
            D::len(weight) == inner * outputs && D::len(mask) == D::len(weight),
            "setup_weight",
            || {
                format!(
                    "weight {} and mask {} elements for {inner}x{outputs}",
                    D::len(weight),
                    D::len(mask)
                )
            },
        )?;
        let opened = self.open(&D::sub(weight, mask))?;
        self.fixed_weight(index, mask.clone(), opened, [inner, outputs])
    }

    /// Model setup for weight number `index` when the model owner published `F = W - B` itself (it got the
    /// plaintext mask `B` from the dealer): no communication among the parties. `[W] = [B] + F`.
    pub fn fixed_weight(
        &mut self,
        index: usize,
        mask: D::Arith,
        opened: Vec<u64>,
        [inner, outputs]: [usize; 2],
    ) -> Result<FixedWeight<D>> {
        ensure_shape(
            D::len(&mask) == inner * outputs && opened.len() == inner * outputs,
            "fixed_weight",
            || {
                format!(
                    "mask {} and published {} elements for {inner}x{outputs}",
                    D::len(&mask),
                    opened.len()
                )
            },
        )?;
        let mut for_masked_input = mask;
        self.add_public(&mut for_masked_input, &opened);
        let values = D::weight_values(&for_masked_input, [inner, outputs]);
        Ok(FixedWeight {
            index,
            inner,
            outputs,
            opened,
            for_masked_input,
            values,
        })
    }

    /// `lower(x) · W` for a fixed weight set up with [`Party::setup_weight`] (one round).
    pub fn weight_product(
        &mut self,
        x: &D::Arith,
        batch: usize,
        lowering: Lowering,
        w: &FixedWeight<D>,
    ) -> Result<D::Arith> {
        ensure_shape(lowering.inner() == w.inner, "weight_product", || {
            format!(
                "lowered inner dimension {} against a {}x{} weight",
                lowering.inner(),
                w.inner,
                w.outputs
            )
        })?;
        let mut t = self
            .material
            .weight_triple(w.index, lowering, batch, w.outputs)?;
        self.deviate_triple(&mut t.c);
        ensure_shape(D::len(x) == D::len(&t.a), "weight_product", || {
            format!("input of {} elements, expected {}", D::len(x), D::len(&t.a))
        })?;
        let e = self.open(&D::sub(x, &t.a))?;
        let rows = batch * lowering.rows_per_item();
        let mkn = [rows, w.inner, w.outputs];
        // lower(X)·W = C + lower(E)·(F + B) + lower(A)·F; the last term may have been computed ahead.
        let a_times_opened = match t.a_times_opened.take() {
            Some(ready) => ready,
            None => D::gemm_right(
                self.gemm.as_ref(),
                mkn,
                &D::lower(&lowering, &t.a, batch)?,
                &w.opened,
            ),
        };
        let lowered = lowering.lower(&e, batch)?;
        let mut z = match t.check.take() {
            Some(check) => self.checked_product(mkn, &lowered, w, check)?,
            None => D::weight_gemm_left(
                self.gemm.as_ref(),
                mkn,
                &lowered,
                &w.for_masked_input,
                &w.values,
            ),
        };
        D::add_assign(&mut z, &a_times_opened);
        D::add_assign(&mut z, &t.c);
        Ok(z)
    }

    /// `lower(E) · W` for a product whose material carries a product check (`spdz2k`'s large products; see
    /// `spdz2k::product_check`): the value shares of the product only, re-authenticated through the dealt
    /// mask `R` (one more round), and the projection check recorded for the MAC check.
    fn checked_product(
        &mut self,
        mkn: [usize; 3],
        e: &[u64],
        w: &FixedWeight<D>,
        check: ProductCheck<D::Arith>,
    ) -> Result<D::Arith> {
        let computed;
        let weight_rho = match check.weight_rho.as_ref() {
            Some(ready) => ready,
            None => {
                computed = weight_projection(self.gemm.as_ref(), w, &check);
                &computed
            }
        };
        let mut round = Round::default();
        round.unchecked(D::masked_product_values(
            self.gemm.as_ref(),
            mkn,
            e,
            &w.for_masked_input,
            &w.values,
            &check.r,
        ));
        let opened = self.open_round(round)?.swap_remove(0);
        let constants = self.holds_constants();
        D::finish_checked_product(
            &mut self.state,
            mkn,
            e,
            &opened,
            &check,
            weight_rho,
            constants,
        )
    }

    /// Preprocessing of the fixed-weight products whose material is already prepared (see
    /// `PartyMaterial::prepare`): computes each one's `lower(A) · F` ahead of the input. `A` is dealt and
    /// `F = W - B` is public since model setup, so this depends on no data; the online product is then one
    /// matrix product instead of two. Products of weights not in `weights` are left to the online phase.
    pub fn precompute_weight_products(&mut self, weights: &[&FixedWeight<D>]) -> Result<()> {
        for (request, material) in self.material.prepared_mut() {
            let (
                Request::WeightTriple {
                    weight,
                    lowering,
                    batch,
                    outputs,
                },
                Material::WeightTriple(t),
            ) = (request, material)
            else {
                continue;
            };
            let Some(w) = weights.iter().find(|w| w.index == *weight) else {
                continue;
            };
            ensure_shape(
                lowering.inner() == w.inner && *outputs == w.outputs,
                "precompute_weight_products",
                || format!("weight {weight} is {}x{}", w.inner, w.outputs),
            )?;
            if let Some(check) = t.check.as_mut().filter(|c| c.weight_rho.is_none()) {
                check.weight_rho = Some(weight_projection(self.gemm.as_ref(), w, check));
            }
            if t.a_times_opened.is_none() {
                let rows = batch * lowering.rows_per_item();
                t.a_times_opened = Some(D::gemm_right(
                    self.gemm.as_ref(),
                    [rows, w.inner, w.outputs],
                    &D::lower(lowering, &t.a, *batch)?,
                    &w.opened,
                ));
            }
        }
        Ok(())
    }
}

/// The share of `W · rho = B · rho + F · rho` for a product check: `B · rho` is dealt, `F = W - B` public.
fn weight_projection<D: Domain>(
    gemm: &dyn crate::gemm::Gemm,
    w: &FixedWeight<D>,
    check: &ProductCheck<D::Arith>,
) -> D::Arith {
    D::weight_projection(
        gemm,
        [w.inner, w.outputs],
        &w.opened,
        &check.rho,
        &check.b_rho,
    )
}
