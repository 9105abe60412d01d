//! Row-wise functions on a shared `rows x cols` matrix (row-major): maximum, softmax, LayerNorm, mean.
//!
//! - `row_max`: a tournament over the columns, `ceil(log2 cols)` levels of one comparison (7 rounds each).
//! - `softmax`: `e_j = exp(x_j - max)` (inputs `<= 0`, the piecewise exp), `s = sum_j e_j` in `[1, cols]`
//!   (the maximum contributes `e^0 = 1`), `p_j = e_j * (1 / s)` with the Newton reciprocal on `[1, 2^hi+1)`.
//!   Rounds: `7 ceil(log2 cols) + (2 + 2 ceil(log2 d) + 7) + (7 + 4 it) + 2` for the exp's degree `d`.
//! - `softmax_fast`: the same with the one-piece exp of [`super::exp`] (one comparison per value instead of
//!   six). Rounds: `7 ceil(log2 cols) + (2 + 2 ceil(log2 d) + 7) + (7 + 4 it) + 2`.
//! - `layer_norm`: `c = x - mean`, `v = mean(c^2)`, `c * rsqrt(v + eps)` (the affine part, gamma and beta,
//!   is the caller's: they are model weights). Rounds: `1 + 2 + 1 + (8 + 6 it) + 2`.
//!
//! Only the row length is public; every value stays shared.

use crate::domain::Domain;
use crate::error::{ensure_shape, Result};
use crate::material::Request;
use crate::net::Net;
use crate::semi2k::Party;

use super::exp::ExpNeg;
use super::newton::NewtonConfig;
use super::piecewise::{fixed, Piecewise};

/// Pairs compared at each level of a tournament over `cols` columns.
fn tournament(cols: usize) -> Vec<usize> {
    let mut left = cols;
    let mut out = Vec::new();
    while left > 1 {
        out.push(left / 2);
        left -= left / 2;
    }
    out
}

/// Softmax knobs: the exp approximation and the reciprocal's iterations.
#[derive(Debug, Clone)]
pub struct SoftmaxConfig {
    /// exp on `x <= 0`.
    pub exp: Piecewise,
    /// Newton iterations of the reciprocal of the row sum.
    pub iterations: usize,
}

/// LayerNorm knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormConfig {
    /// Added to the variance (clamped up to one ulp of the fixed point, its smallest positive value).
    pub epsilon: f64,
    /// The variance's expected range and iterations, for the reciprocal square root.
    pub rsqrt: NewtonConfig,
}

/// Material of [`Party::row_max`].
pub fn row_max_requests(rows: usize, cols: usize) -> Vec<Request> {
    tournament(cols)
        .into_iter()
        .map(|pairs| Request::Sign {
            len: pairs * rows,
            truncate: None,
            payloads: 1,
        })
        .collect()
}

/// The reciprocal's range for a softmax over `cols` columns.
fn sum_range(cols: usize, iterations: usize) -> NewtonConfig {
    let hi = usize::BITS - cols.max(1).leading_zeros(); // 2^hi > cols
    NewtonConfig {
        lo: 0,
        hi: hi as i32 - 1,
        iterations,
    }
}

/// Material of [`Party::softmax`].
pub fn softmax_requests(
    cfg: &SoftmaxConfig,
    rows: usize,
    cols: usize,
    frac_bits: u32,
) -> Vec<Request> {
    let mut out = row_max_requests(rows, cols);
    out.extend(cfg.exp.requests(rows * cols, frac_bits));
    out.extend(sum_range(cols, cfg.iterations).reciprocal_requests(rows, frac_bits));
    out.push(Request::Triples { len: rows * cols });
    out.push(Request::Trunc {
        len: rows * cols,
        frac_bits,
    });
    out
}

/// [`Party::softmax_fast`]'s knobs: the one-piece exp and the reciprocal's iterations.
#[derive(Debug, Clone)]
pub struct SoftmaxFastConfig {
    /// exp on `x <= 0`.
    pub exp: ExpNeg,
    /// Newton iterations of the reciprocal of the row sum.
    pub iterations: usize,
}

/// Material of [`Party::softmax_fast`].
pub fn softmax_fast_requests(
    cfg: &SoftmaxFastConfig,
    rows: usize,
    cols: usize,
    frac_bits: u32,
) -> Vec<Request> {
    let mut out = row_max_requests(rows, cols);
    out.extend(cfg.exp.requests(rows * cols, frac_bits));
    out.extend(sum_range(cols, cfg.iterations).reciprocal_requests(rows, frac_bits));
    out.push(Request::Triples { len: rows * cols });
    out.push(Request::Trunc {
        len: rows * cols,
        frac_bits,
    });
    out
}

/// Material of [`Party::layer_norm`].
pub fn layer_norm_requests(
    cfg: &LayerNormConfig,
    rows: usize,
    cols: usize,
    frac_bits: u32,
) -> Vec<Request> {
    let mut out = vec![
        Request::Trunc {
            len: rows,
            frac_bits,
        },
        Request::Triples { len: rows * cols },
        Request::Trunc {
            len: rows * cols,
            frac_bits,
        },
        Request::Trunc {
            len: rows,
            frac_bits,
        },
    ];
    out.extend(cfg.rsqrt.rsqrt_requests(rows, frac_bits));
    out.push(Request::Triples { len: rows * cols });
    out.push(Request::Trunc {
        len: rows * cols,
        frac_bits,
    });
    out
}

impl<N: Net, D: Domain> Party<N, D> {
    fn check_matrix(x: &D::Arith, rows: usize, cols: usize, op: &'static str) -> Result<()> {
        ensure_shape(D::len(x) == rows * cols && cols > 0, op, || {
            format!("{} elements for {rows} rows of {cols}", D::len(x))
        })
    }

    /// Each row's sum, `rows` values (local).
    pub(crate) fn row_sums(x: &D::Arith, rows: usize, cols: usize) -> D::Arith {
        let columns: Vec<D::Arith> = (0..cols)
            .map(|c| D::gather(x, &(0..rows).map(|r| r * cols + c).collect::<Vec<_>>()))
            .collect();
        columns
            .iter()
            .skip(1)
            .fold(columns[0].clone(), |acc, c| D::add(&acc, c))
    }

    /// Each row repeated `cols` times: `rows * cols` values (local).
    pub(crate) fn broadcast(v: &D::Arith, rows: usize, cols: usize) -> D::Arith {
        D::gather(v, &(0..rows * cols).map(|i| i / cols).collect::<Vec<_>>())
    }

    /// The maximum of each row (`rows` values).
    pub fn row_max(&mut self, x: &D::Arith, rows: usize, cols: usize) -> Result<D::Arith> {
        Self::check_matrix(x, rows, cols, "row_max")?;
        let mut columns: Vec<D::Arith> = (0..cols)
            .map(|c| D::gather(x, &(0..rows).map(|r| r * cols + c).collect::<Vec<_>>()))
            .collect();
        while columns.len() > 1 {
            let pairs = columns.len() / 2;
            let a = D::concat(&columns[..pairs]);
            let b = D::concat(&columns[pairs..2 * pairs]);
            let m = self.max(&a, &b)?;
            let mut next: Vec<D::Arith> = (0..pairs)
                .map(|i| D::slice(&m, i * rows..(i + 1) * rows))
                .collect();
            next.extend(columns.drain(2 * pairs..));
            columns = next;
        }
        Ok(columns.swap_remove(0))
    }

    /// Softmax of each row (see the module doc).
    pub fn softmax(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        cfg: &SoftmaxConfig,
    ) -> Result<D::Arith> {
        self.softmax_with(x, rows, cols, cfg.iterations, |p, s| {
            p.piecewise(s, &cfg.exp)
        })
    }

    /// Softmax of each row with the one-piece exp (see the module doc).
    pub fn softmax_fast(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        cfg: &SoftmaxFastConfig,
    ) -> Result<D::Arith> {
        self.softmax_with(x, rows, cols, cfg.iterations, |p, s| p.exp_neg(s, &cfg.exp))
    }

    /// Row softmax with `exp` applied to the max-subtracted rows (every value <= 0): the two softmax
    /// variants differ only there.
    fn softmax_with(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        iterations: usize,
        exp: impl FnOnce(&mut Self, &D::Arith) -> Result<D::Arith>,
    ) -> Result<D::Arith> {
        Self::check_matrix(x, rows, cols, "softmax")?;
        let max = self.row_max(x, rows, cols)?;
        let shifted = D::sub(x, &Self::broadcast(&max, rows, cols));
        let e = exp(self, &shifted)?;
        let sums = Self::row_sums(&e, rows, cols);
        let inv = self.reciprocal(&sums, &sum_range(cols, iterations))?;
        self.mul_fixed(&e, &Self::broadcast(&inv, rows, cols))
    }

    /// LayerNorm of each row without the affine part (see the module doc).
    pub fn layer_norm(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        cfg: &LayerNormConfig,
    ) -> Result<D::Arith> {
        Self::check_matrix(x, rows, cols, "layer_norm")?;
        let f = self.fixed_point().frac_bits();
        let inv_cols = vec![fixed(1.0 / cols as f64, f); rows];
        let mean = self.trunc(&D::mul_public(&Self::row_sums(x, rows, cols), &inv_cols))?;
        let centred = D::sub(x, &Self::broadcast(&mean, rows, cols));
        let squares = self.mul_fixed(&centred, &centred)?;
        let mut var = self.trunc(&D::mul_public(
            &Self::row_sums(&squares, rows, cols),
            &inv_cols,
        ))?;
        let eps = fixed(cfg.epsilon, f).max(1);
        self.add_public(&mut var, &vec![eps; rows]);
        let inv_std = self.rsqrt(&var, &cfg.rsqrt)?;
        self.mul_fixed(&centred, &Self::broadcast(&inv_std, rows, cols))
    }
}
