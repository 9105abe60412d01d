//! Several products of shared matrices in one round, each with its own dealt matrix triple (Beaver, CRYPTO
//! 1991, in matrix form as in SecureML, Mohassel and Zhang, S&P 2017): for `X (m x k)` and `Y (k x n)` with
//! the triple `(A, B, C = A B)`, open `E = X - A` and `F = Y - B`, then `X Y = C + E B + A F + E F`.
//!
//! One triple per matrix product, not per element: the bytes are those of the two operands (`m k + k n`
//! elements opened), not of the `m k n` elementwise products. Attention's `Q K^T` and `P V` for all heads are
//! each one call: every head's operands travel in the same round. Results carry `2f` fractional bits.
//! The dealer material is one `Request::MatTriple { m, k, n }` per product, in the order given.

use crate::domain::Domain;
use crate::error::{ensure_shape, Result};
use crate::net::Net;

use super::{open::Round, Party};

impl<N: Net, D: Domain> Party<N, D> {
    /// `x_i · y_i` for every `(x_i, y_i)` of `pairs` with shapes `dims[i] = [m, k, n]` (one round).
    pub fn matmuls(
        &mut self,
        pairs: &[(&D::Arith, &D::Arith)],
        dims: &[[usize; 3]],
    ) -> Result<Vec<D::Arith>> {
        ensure_shape(pairs.len() == dims.len(), "matmuls", || {
            format!("{} products with {} shapes", pairs.len(), dims.len())
        })?;
        let mut triples = Vec::with_capacity(pairs.len());
        let mut round = Round::default();
        for ((x, y), &[m, k, n]) in pairs.iter().zip(dims) {
            ensure_shape(D::len(x) == m * k && D::len(y) == k * n, "matmuls", || {
                format!(
                    "operands of {} and {} elements for {m}x{k} by {k}x{n}",
                    D::len(x),
                    D::len(y)
                )
            })?;
            let mut t = self.material.mat_triple(m, k, n)?;
            self.deviate_triple(&mut t.c);
            round.words(D::sub(x, &t.a));
            round.words(D::sub(y, &t.b));
            triples.push(t);
        }
        let opened = self.open_round(round)?;
        let mut out = Vec::with_capacity(pairs.len());
        for (i, (t, &[m, k, n])) in triples.iter().zip(dims).enumerate() {
            let (e, f) = (&opened[2 * i], &opened[2 * i + 1]);
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
            out.push(z);
        }
        Ok(out)
    }
}
