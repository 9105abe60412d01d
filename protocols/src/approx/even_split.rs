//! The shape GELU and SiLU share: `f(x) = x/2 + w(x)` with `w` even, `f(x) -> 0` as `x -> -inf` and
//! `f(x) -> x` as `x -> +inf`. On `[-T, T]` the even part is a polynomial `q` in `u = 2x^2/T^2 - 1` (in
//! `[-1, 1]` there): a degree-`m` fit in `u` is a degree-`2m` fit in `x` for the price of `m` powers.
//! Outside, `f` is taken as `0` below `-T` and `x` above `T`. With the bits `b1 = [x >= -T]` and
//! `b2 = [x >= T]` from one sign test,
//!
//! `f(x) ~ b1 (x/2 + q(u)) + b2 (x/2 - q(u))`
//!
//! which is `0`, `x/2 + q` and `x` on the three ranges. The payloads are selected with `2f` fractional bits
//! and truncated once at the end, so for `|x| > T`, where `q(u)` may have wrapped around the ring, `q`
//! cancels exactly (`b1 = b2`) and never reaches a truncation.
//!
//! The same idea (a low-degree polynomial on a middle range, 0 and the identity outside) is the GELU of
//! PUMA (Dong et al., 2023, section 5.2) and BumbleBee (Lu et al., NDSS 2025); using the evenness of `w`
//! halves the number of powers.
//!
//! The work is done on `y = s x` with `s = sqrt(2) / T`, so that `u = y^2 - 1` needs one truncation after
//! the square. [`EvenSplitOps::even_split_scaled`] takes `y` (a caller whose `x` comes out of a linear layer
//! folds `s` into the weights, for free) and returns the result with `2f` fractional bits (a caller that
//! feeds it to a linear layer truncates once after that layer, on fewer values);
//! [`EvenSplitOps::even_split`] is the plain function (`x` in, `f` bits out) with one truncation for the
//! scaling and one at the end.
//!
//! Cost of [`EvenSplitOps::even_split`] on `n` values: the scaling (1 truncation), `y^2` (1 product,
//! 1 truncation), `ceil(log2 m)` levels of powers (product and truncation each), one sign test on `2n`
//! values with one payload, the final truncation: `1 + 2 + 2 ceil(log2 m) + 7 + 1` rounds.
//!
//! Error: the fit's error on all reals is [`EvenSplit::fit_error`] (each function's module states and
//! tests its default's bound); on shares, fixed-point rounding of the powers and coefficients adds about
//! 1e-4, and the rounded public scale factors `s` and `1/(2s)` add a relative `2^-f |x| / s`, which matters
//! only for large inputs.

use super::fit;
use super::piecewise::fixed;
use crate::error::{ensure_shape, ProtocolError, Result};
use crate::material::Request;
use crate::ops::{MpcOps, SignSelect};

/// Knobs of an [`EvenSplit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvenSplitConfig {
    /// `T`: the polynomial covers `[-T, T]`; 0 below, the identity above.
    pub bound: f64,
    /// `m`: degree of the polynomial in `u = 2x^2/T^2 - 1` (degree `2m` in `x`).
    pub degree: usize,
    /// Chebyshev nodes of the least-squares fit.
    pub fit_nodes: usize,
}

/// A fitted approximation of the form of the module doc.
///
/// Invariant: `coefficients.len() == config.degree + 1`, and `config` passed [`EvenSplit::fit`]'s checks
/// (`0 < bound < 64`, `1 <= degree <= 16`).
#[derive(Debug, Clone)]
pub struct EvenSplit {
    /// The function's name, for errors (`gelu_even`, `silu_even`).
    op: &'static str,
    /// The function approximated, in f64.
    exact: fn(f64) -> f64,
    config: EvenSplitConfig,
    /// `q(u) = sum c[k] u^k`, approximating the even part `exact(x) - x/2`.
    coefficients: Vec<f64>,
}

impl EvenSplit {
    /// Fits the even part of `exact` with `config`; `op` names the function in errors.
    pub fn fit(op: &'static str, exact: fn(f64) -> f64, config: EvenSplitConfig) -> Result<Self> {
        if !(config.bound.is_finite() && config.bound > 0.0 && config.bound < 64.0)
            || config.degree == 0
            || config.degree > 16
        {
            return Err(ProtocolError::Shape {
                op,
                detail: format!("needs 0 < bound < 64 and degree in 1..=16: {config:?}"),
            });
        }
        let t = config.bound;
        let w = |u: f64| {
            let x = t * ((u + 1.0) / 2.0).max(0.0).sqrt();
            exact(x) - x / 2.0
        };
        let coefficients = fit::least_squares(w, config.degree, config.fit_nodes);
        Ok(Self {
            op,
            exact,
            config,
            coefficients,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EvenSplitConfig {
        &self.config
    }

    /// The approximation in f64 (what the shares compute, up to fixed-point rounding).
    pub fn eval_plain(&self, x: f64) -> f64 {
        let t = self.config.bound;
        if x < -t {
            0.0
        } else if x >= t {
            x
        } else {
            x / 2.0 + fit::eval(&self.coefficients, 2.0 * x * x / (t * t) - 1.0)
        }
    }

    /// The largest `|approximation - exact|` over `samples + 1` evenly spaced points of `[from, to]`.
    pub fn fit_error(&self, from: f64, to: f64, samples: usize) -> f64 {
        (0..=samples)
            .map(|i| from + (to - from) * i as f64 / samples as f64)
            .map(|x| (self.eval_plain(x) - (self.exact)(x)).abs())
            .fold(0.0, f64::max)
    }

    /// Multiplication levels: `(from, count)` computes `u^(from+1) ..= u^(from+count)` in one round.
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

    /// `s = sqrt(2) / T`: [`EvenSplitOps::even_split_scaled`] takes `y = s x`.
    pub fn input_scale(&self) -> f64 {
        std::f64::consts::SQRT_2 / self.config.bound
    }

    /// The dealer material [`EvenSplitOps::even_split`] consumes for `len` values, in order.
    pub fn requests(&self, len: usize, frac_bits: u32) -> Vec<Request> {
        let mut out = vec![Request::Trunc { len, frac_bits }];
        out.extend(self.scaled_requests(len, frac_bits));
        out.push(Request::Trunc { len, frac_bits });
        out
    }

    /// The dealer material [`EvenSplitOps::even_split_scaled`] consumes for `len` values, in order.
    pub fn scaled_requests(&self, len: usize, frac_bits: u32) -> Vec<Request> {
        let mut out = vec![Request::Triples { len }, Request::Trunc { len, frac_bits }];
        for (_, count) in self.levels() {
            out.push(Request::Triples { len: count * len });
            out.push(Request::Trunc {
                len: count * len,
                frac_bits,
            });
        }
        out.push(Request::Sign {
            len: 2 * len,
            truncate: None,
            payloads: 1,
        });
        out
    }
}

/// [`EvenSplit`] on any protocol's shares (a blanket implementation covers every [`MpcOps`]).
pub trait EvenSplitOps: MpcOps + Sized {
    /// Shares of `approx.eval_plain(x)` for shared fixed-point `x`, with `f` fractional bits.
    fn even_split(&mut self, x: &Self::Share, approx: &EvenSplit) -> Result<Self::Share> {
        let f = self.fixed_point().frac_bits();
        let scale = vec![fixed(approx.input_scale(), f); Self::len(x)];
        let y = self.trunc(&Self::mul_public(x, &scale))?;
        let wide = self.even_split_scaled(&y, approx)?;
        self.trunc(&wide)
    }

    /// Shares of `approx.eval_plain(x)` with `2f` fractional bits, from shares of `y = s x` (`f` bits;
    /// `s` = [`EvenSplit::input_scale`]).
    fn even_split_scaled(&mut self, y: &Self::Share, approx: &EvenSplit) -> Result<Self::Share> {
        let n = Self::len(y);
        let f = self.fixed_point().frac_bits();
        let s = approx.input_scale();
        // u = y^2 - 1 = 2 x^2 / T^2 - 1.
        let mut u = self.mul_fixed(y, y)?;
        self.add_public(&mut u, &vec![fixed(-1.0, f); n]);
        // Powers u^1 ..= u^m.
        let mut powers = vec![u];
        for (from, count) in approx.levels() {
            let left = Self::concat(&vec![powers[from - 1].clone(); count]);
            let right = Self::concat(&powers[..count]);
            let next = self.mul_fixed(&left, &right)?;
            for j in 0..count {
                powers.push(Self::slice(&next, j * n..(j + 1) * n));
            }
        }
        // q(u) and x/2 = y / (2s) with 2f fractional bits.
        let c = &approx.coefficients;
        let mut q = self.share_public(&vec![fixed(c[0], 2 * f); n]);
        for (k, ck) in c.iter().enumerate().skip(1) {
            q = Self::add(
                &q,
                &Self::mul_public(&powers[k - 1], &vec![fixed(*ck, f); n]),
            );
        }
        let half = Self::mul_public(y, &vec![fixed(0.5 / s, f); n]);
        let payload = Self::concat(&[Self::add(&half, &q), Self::sub(&half, &q)]);
        // b1 = [x >= -T] = [y + sqrt 2 >= 0], b2 = [x >= T] = [y - sqrt 2 >= 0], in one sign test.
        let edge = fixed(std::f64::consts::SQRT_2, f);
        let mut low = y.clone();
        self.add_public(&mut low, &vec![edge; n]);
        let mut high = y.clone();
        self.add_public(&mut high, &vec![edge.wrapping_neg(); n]);
        let selected = self
            .sign_select(SignSelect {
                z: &Self::concat(&[low, high]),
                truncate: false,
                select_self: false,
                extras: vec![payload],
            })?
            .pop()
            .ok_or_else(|| ProtocolError::Shape {
                op: approx.op,
                detail: "the sign test returned no payload".into(),
            })?;
        let out = Self::add(
            &Self::slice(&selected, 0..n),
            &Self::slice(&selected, n..2 * n),
        );
        ensure_shape(Self::len(&out) == n, approx.op, || "output length".into())?;
        Ok(out)
    }
}

impl<P: MpcOps> EvenSplitOps for P {}
