//! exp on non-positive inputs with one polynomial and one comparison: the cheap exp of attention's softmax,
//! whose inputs `x - max(row)` are never positive.
//!
//! On `[-T, 0]`, `e^x ~ p(u)` with `u = 2x/T + 1` in `[-1, 1]` (a least-squares fit on Chebyshev nodes, as
//! in [`super::piecewise`]); below `-T` the result is 0 (`e^-T` is the error there). With `b = [x >= -T]`
//! from one sign test, `exp(x) ~ b p(u)`: the payload is selected with `2f` fractional bits and truncated
//! once, so for `x < -T`, where `p(u)` may have wrapped around the ring, the garbage is multiplied by 0
//! exactly before any truncation. Positive inputs are outside the domain (`x = 0`, the row's maximum, is
//! inside).
//!
//! Against [`super::functions::exp_config`] (five pieces): one threshold instead of six and `d - 1`
//! products instead of twenty, at a coarser but sufficient accuracy for softmax (the reciprocal of the row
//! sum follows, and the sum is at least 1).
//!
//! Cost on `n` values: 1 truncation (`u`), `ceil(log2 d)` levels of powers (product and truncation each),
//! one sign test with one payload, 1 truncation: `1 + 2 ceil(log2 d) + 7 + 1` rounds (15 for `d = 8`).
//! Error (asserted in `protocols/tests/approx_transformer.rs`): the default (`T = 8`, `d = 8`) is within
//! 3.5e-4 on `x <= 0` (9.5e-5 on `[-8, 0]`, `e^-8 = 3.4e-4` below); shares add about 2e-5.

use super::fit;
use super::piecewise::fixed;
use crate::error::{ensure_shape, ProtocolError, Result};
use crate::material::Request;
use crate::ops::{MpcOps, SignSelect};

/// Knobs of [`ExpNeg`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpNegConfig {
    /// `T`: the polynomial covers `[-T, 0]`; 0 below.
    pub bound: f64,
    /// Degree of the polynomial.
    pub degree: usize,
    /// Chebyshev nodes of the fit.
    pub fit_nodes: usize,
}

/// The default: `T = 8`, degree 8.
pub fn exp_neg_config() -> ExpNegConfig {
    ExpNegConfig {
        bound: 8.0,
        degree: 8,
        fit_nodes: 256,
    }
}

/// A fitted one-piece exp for `x <= 0` (see the module doc).
#[derive(Debug, Clone)]
pub struct ExpNeg {
    config: ExpNegConfig,
    coefficients: Vec<f64>,
}

impl ExpNeg {
    /// Fits the polynomial of `config`.
    pub fn fit(config: ExpNegConfig) -> Result<Self> {
        if !(config.bound.is_finite() && config.bound > 0.0 && config.bound <= 64.0)
            || config.degree == 0
            || config.degree > 16
        {
            return Err(ProtocolError::Shape {
                op: "exp_neg",
                detail: format!("needs 0 < bound <= 64 and degree in 1..=16: {config:?}"),
            });
        }
        let half = config.bound / 2.0;
        let coefficients = fit::least_squares(
            |u| (half * (u - 1.0)).exp(),
            config.degree,
            config.fit_nodes,
        );
        Ok(Self {
            config,
            coefficients,
        })
    }

    /// The default exp of this form.
    pub fn default_fit() -> Result<Self> {
        Self::fit(exp_neg_config())
    }

    /// The configuration.
    pub fn config(&self) -> &ExpNegConfig {
        &self.config
    }

    /// The approximation in f64, for `x <= 0`.
    pub fn eval_plain(&self, x: f64) -> f64 {
        if x < -self.config.bound {
            0.0
        } else {
            fit::eval(&self.coefficients, 2.0 * x / self.config.bound + 1.0)
        }
    }

    /// The largest `|approximation - e^x|` over `samples + 1` evenly spaced points of `[from, to]`.
    pub fn fit_error(&self, from: f64, to: f64, samples: usize) -> f64 {
        (0..=samples)
            .map(|i| from + (to - from) * i as f64 / samples as f64)
            .map(|x| (self.eval_plain(x) - x.exp()).abs())
            .fold(0.0, f64::max)
    }

    fn levels(&self) -> Vec<(usize, usize)> {
        let d = self.config.degree;
        let mut have = 1;
        let mut out = Vec::new();
        while have < d {
            let count = have.min(d - have);
            out.push((have, count));
            have += count;
        }
        out
    }

    /// The dealer material [`ExpOps::exp_neg`] consumes for `len` values, in order.
    pub fn requests(&self, len: usize, frac_bits: u32) -> Vec<Request> {
        let mut out = vec![Request::Trunc { len, frac_bits }];
        for (_, count) in self.levels() {
            out.push(Request::Triples { len: count * len });
            out.push(Request::Trunc {
                len: count * len,
                frac_bits,
            });
        }
        out.push(Request::Sign {
            len,
            truncate: None,
            payloads: 1,
        });
        out.push(Request::Trunc { len, frac_bits });
        out
    }
}

/// The approximations of this module on any protocol's shares (a blanket implementation covers every
/// [`MpcOps`]).
pub trait ExpOps: MpcOps + Sized {
    /// Shares of `approx.eval_plain(x)` for shared fixed-point `x <= 0` (see the module doc).
    fn exp_neg(&mut self, x: &Self::Share, approx: &ExpNeg) -> Result<Self::Share> {
        let n = Self::len(x);
        let f = self.fixed_point().frac_bits();
        let t = approx.config.bound;
        // u = 2x/T + 1.
        let mut scaled = Self::mul_public(x, &vec![fixed(2.0 / t, f); n]);
        self.add_public(&mut scaled, &vec![fixed(1.0, 2 * f); n]);
        let u = self.trunc(&scaled)?;
        let mut powers = vec![u];
        for (from, count) in approx.levels() {
            let left = Self::concat(&vec![powers[from - 1].clone(); count]);
            let right = Self::concat(&powers[..count]);
            let next = self.mul_fixed(&left, &right)?;
            for j in 0..count {
                powers.push(Self::slice(&next, j * n..(j + 1) * n));
            }
        }
        let c = &approx.coefficients;
        let mut p = self.share_public(&vec![fixed(c[0], 2 * f); n]);
        for (k, ck) in c.iter().enumerate().skip(1) {
            p = Self::add(
                &p,
                &Self::mul_public(&powers[k - 1], &vec![fixed(*ck, f); n]),
            );
        }
        let mut z = x.clone();
        self.add_public(&mut z, &vec![fixed(t, f); n]);
        let selected = self
            .sign_select(SignSelect {
                z: &z,
                truncate: false,
                select_self: false,
                extras: vec![p],
            })?
            .pop()
            .ok_or_else(|| ProtocolError::Shape {
                op: "exp_neg",
                detail: "the sign test returned no payload".into(),
            })?;
        let out = self.trunc(&selected)?;
        ensure_shape(Self::len(&out) == n, "exp_neg", || "output length".into())?;
        Ok(out)
    }
}

impl<P: MpcOps> ExpOps for P {}
