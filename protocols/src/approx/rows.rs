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

use crate::error::{ensure_shape, Result};
use crate::material::Request;
use crate::ops::MpcOps;

use super::exp::ExpOps;
use super::newton::NewtonOps;
use super::piecewise::PiecewiseOps;

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

/// Material of [`RowOps::row_max`].
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

/// Material of [`RowOps::softmax`].
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

/// [`RowOps::softmax_fast`]'s knobs: the one-piece exp and the reciprocal's iterations.
#[derive(Debug, Clone)]
pub struct SoftmaxFastConfig {
    /// exp on `x <= 0`.
    pub exp: ExpNeg,
    /// Newton iterations of the reciprocal of the row sum.
    pub iterations: usize,
}

/// Material of [`RowOps::softmax_fast`].
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

/// Material of [`RowOps::layer_norm`].
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

/// The approximations of this module on any protocol's shares (a blanket implementation covers every
/// [`MpcOps`]).
pub trait RowOps: PiecewiseOps + ExpOps + NewtonOps + Sized {
    /// Refuses `x` (a shape error naming `op`) unless it holds `rows x cols` elements and `cols >= 1`.
    fn check_matrix(x: &Self::Share, rows: usize, cols: usize, op: &'static str) -> Result<()> {
        ensure_shape(Self::len(x) == rows * cols && cols > 0, op, || {
            format!("{} elements for {rows} rows of {cols}", Self::len(x))
        })
    }

    /// Each row's sum, `rows` values (local).
    fn row_sums(x: &Self::Share, rows: usize, cols: usize) -> Self::Share {
        let columns: Vec<Self::Share> = (0..cols)
            .map(|c| Self::gather(x, &(0..rows).map(|r| r * cols + c).collect::<Vec<_>>()))
            .collect();
        columns
            .iter()
            .skip(1)
            .fold(columns[0].clone(), |acc, c| Self::add(&acc, c))
    }

    /// Each row repeated `cols` times: `rows * cols` values (local).
    fn broadcast(v: &Self::Share, rows: usize, cols: usize) -> Self::Share {
        Self::gather(v, &(0..rows * cols).map(|i| i / cols).collect::<Vec<_>>())
    }

    /// The maximum of each row (`rows` values).
    fn row_max(&mut self, x: &Self::Share, rows: usize, cols: usize) -> Result<Self::Share> {
        Self::check_matrix(x, rows, cols, "row_max")?;
        let mut columns: Vec<Self::Share> = (0..cols)
            .map(|c| Self::gather(x, &(0..rows).map(|r| r * cols + c).collect::<Vec<_>>()))
            .collect();
        while columns.len() > 1 {
            let pairs = columns.len() / 2;
            let a = Self::concat(&columns[..pairs]);
            let b = Self::concat(&columns[pairs..2 * pairs]);
            let m = self.max(&a, &b)?;
            let mut next: Vec<Self::Share> = (0..pairs)
                .map(|i| Self::slice(&m, i * rows..(i + 1) * rows))
                .collect();
            next.extend(columns.drain(2 * pairs..));
            columns = next;
        }
        Ok(columns.swap_remove(0))
    }

    /// Softmax of each row (see the module doc).
    fn softmax(
        &mut self,
        x: &Self::Share,
        rows: usize,
        cols: usize,
        cfg: &SoftmaxConfig,
    ) -> Result<Self::Share> {
        self.softmax_with(x, rows, cols, cfg.iterations, |p, s| {
            p.piecewise(s, &cfg.exp)
        })
    }

    /// Softmax of each row with the one-piece exp (see the module doc).
    fn softmax_fast(
        &mut self,
        x: &Self::Share,
        rows: usize,
        cols: usize,
        cfg: &SoftmaxFastConfig,
    ) -> Result<Self::Share> {
        self.softmax_with(x, rows, cols, cfg.iterations, |p, s| p.exp_neg(s, &cfg.exp))
    }

    /// Row softmax with `exp` applied to the max-subtracted rows (every value <= 0): the two softmax
    /// variants differ only there.
    fn softmax_with(
        &mut self,
        x: &Self::Share,
        rows: usize,
        cols: usize,
        iterations: usize,
        exp: impl FnOnce(&mut Self, &Self::Share) -> Result<Self::Share>,
    ) -> Result<Self::Share> {
        Self::check_matrix(x, rows, cols, "softmax")?;
        let max = self.row_max(x, rows, cols)?;
        let shifted = Self::sub(x, &Self::broadcast(&max, rows, cols));
        let e = exp(self, &shifted)?;
        let sums = Self::row_sums(&e, rows, cols);
        let inv = self.reciprocal(&sums, &sum_range(cols, iterations))?;
        self.mul_fixed(&e, &Self::broadcast(&inv, rows, cols))
    }

    /// LayerNorm of each row without the affine part (see the module doc).
    fn layer_norm(
        &mut self,
        x: &Self::Share,
        rows: usize,
        cols: usize,
        cfg: &LayerNormConfig,
    ) -> Result<Self::Share> {
        Self::check_matrix(x, rows, cols, "layer_norm")?;
        let f = self.fixed_point().frac_bits();
        let inv_cols = vec![fixed(1.0 / cols as f64, f); rows];
        let mean = self.trunc(&Self::mul_public(&Self::row_sums(x, rows, cols), &inv_cols))?;
        let centred = Self::sub(x, &Self::broadcast(&mean, rows, cols));
        let squares = self.mul_fixed(&centred, &centred)?;
        let mut var = self.trunc(&Self::mul_public(
            &Self::row_sums(&squares, rows, cols),
            &inv_cols,
        ))?;
        let eps = fixed(cfg.epsilon, f).max(1);
        self.add_public(&mut var, &vec![eps; rows]);
        let inv_std = self.rsqrt(&var, &cfg.rsqrt)?;
        self.mul_fixed(&centred, &Self::broadcast(&inv_std, rows, cols))
    }
}

impl<P: MpcOps> RowOps for P {}
