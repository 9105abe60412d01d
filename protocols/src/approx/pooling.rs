//! The sentence-embedding tail: mean pooling over the tokens and L2 normalisation, on shares.
//!
//! - [`PoolingOps::mean_pool`]: column means of a shared `rows x cols` matrix, optionally followed by a public
//!   per-column affine map `scale_j * mean_j + shift_j` (a LayerNorm's gain and bias folded in, as in
//!   sentence-transformers' pooling after BERT's last LayerNorm). Local sums, one truncation: 1 round.
//!   Error: at most `2^-f` (truncation) plus `2^-(f+1) (|sum_j| + 1)` (rounding of the public coefficient
//!   `scale_j / rows` and of `shift_j`), where `sum_j` is the column's sum.
//! - [`PoolingOps::l2_normalize`]: each row divided by its Euclidean norm: `s = sum x^2` (1 product, 1 truncation),
//!   `r = rsqrt(s)` (Newton from a normalised guess, [`super::newton`]), `x r` (1 product, 1 truncation):
//!   `4 + (8 + 6 it)` rounds. Needs `s` in the configured range `[2^lo, 2^(hi + 1))`. Error per element:
//!   `|out| (e_r + 2^-f / (2 s)) + 4 |x| 2^-f + 2 2^-f`, where `e_r` (1e-4 with 3 iterations) is Newton's
//!   relative error, `2^-f / s` the relative rounding of the summed squares, and `4 |x| 2^-f` the ulps the
//!   fixed-point `1/sqrt(s)` carries (so large norms, whose reciprocal has few significant bits, are
//!   coarser).
//!
//! Only the shape is public; every value stays shared.

use super::newton::NewtonConfig;
use super::piecewise::fixed;
use crate::error::{ensure_shape, Result};
use crate::material::Request;
use crate::ops::MpcOps;

use super::newton::NewtonOps;
use super::rows::RowOps;

/// Material of [`PoolingOps::mean_pool`].
pub fn mean_pool_requests(cols: usize, frac_bits: u32) -> Vec<Request> {
    vec![Request::Trunc {
        len: cols,
        frac_bits,
    }]
}

/// Material of [`PoolingOps::l2_normalize`].
pub fn l2_normalize_requests(
    cfg: &NewtonConfig,
    rows: usize,
    cols: usize,
    frac_bits: u32,
) -> Vec<Request> {
    let mut out = vec![
        Request::Triples { len: rows * cols },
        Request::Trunc {
            len: rows,
            frac_bits,
        },
    ];
    out.extend(cfg.rsqrt_requests(rows, frac_bits));
    out.push(Request::Triples { len: rows * cols });
    out.push(Request::Trunc {
        len: rows * cols,
        frac_bits,
    });
    out
}

/// A public per-column affine map applied after pooling: `scale[j] * mean_j + shift[j]`.
#[derive(Debug, Clone, Copy)]
pub struct Affine<'a> {
    /// Per-column gain.
    pub scale: &'a [f64],
    /// Per-column bias.
    pub shift: &'a [f64],
}

/// The approximations of this module on any protocol's shares (a blanket implementation covers every
/// [`MpcOps`]).
pub trait PoolingOps: RowOps + NewtonOps + Sized {
    /// Column means of the shared `rows x cols` matrix `x` (row-major), then `affine` if given: `cols`
    /// values (see the module doc).
    fn mean_pool(
        &mut self,
        x: &Self::Share,
        rows: usize,
        cols: usize,
        affine: Option<Affine<'_>>,
    ) -> Result<Self::Share> {
        ensure_shape(Self::len(x) == rows * cols && rows > 0, "mean_pool", || {
            format!("{} elements for {rows} rows of {cols}", Self::len(x))
        })?;
        if let Some(a) = affine {
            ensure_shape(
                a.scale.len() == cols && a.shift.len() == cols,
                "mean_pool",
                || "one gain and one bias per column".into(),
            )?;
        }
        let f = self.fixed_point().frac_bits();
        let mut sums = Self::slice(x, 0..cols);
        for r in 1..rows {
            sums = Self::add(&sums, &Self::slice(x, r * cols..(r + 1) * cols));
        }
        let coefficient: Vec<u64> = (0..cols)
            .map(|j| fixed(affine.map_or(1.0, |a| a.scale[j]) / rows as f64, f))
            .collect();
        let mut scaled = Self::mul_public(&sums, &coefficient);
        if let Some(a) = affine {
            let shift: Vec<u64> = a.shift.iter().map(|s| fixed(*s, 2 * f)).collect();
            self.add_public(&mut scaled, &shift);
        }
        self.trunc(&scaled)
    }

    /// Each row of the shared `rows x cols` matrix `x` divided by its L2 norm (see the module doc).
    fn l2_normalize(
        &mut self,
        x: &Self::Share,
        rows: usize,
        cols: usize,
        cfg: &NewtonConfig,
    ) -> Result<Self::Share> {
        ensure_shape(
            Self::len(x) == rows * cols && cols > 0,
            "l2_normalize",
            || format!("{} elements for {rows} rows of {cols}", Self::len(x)),
        )?;
        let squares = self.mul(x, x)?;
        let sums = Self::row_sums(&squares, rows, cols);
        let sums = self.trunc(&sums)?;
        let inv = self.rsqrt(&sums, cfg)?;
        self.mul_fixed(x, &Self::broadcast(&inv, rows, cols))
    }
}

impl<P: MpcOps> PoolingOps for P {}
