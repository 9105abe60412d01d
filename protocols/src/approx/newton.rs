//! Reciprocal and reciprocal square root of shared positive values by Newton's method from a normalised
//! initial guess (the scaling idea of Catrina and Saxena, FC 2010, and SecretFlow-SPU's `reciprocal`).
//!
//! For `x` in the configured range `[2^lo, 2^(hi + 1))`, one sign test gives the bits `b_j = [x >= 2^j]` for
//! `j = lo + 1 ..= hi` (integer shares); since they are `1` exactly for `j <= k` where `2^k <= x < 2^(k + 1)`,
//! any function of `k` is linear in them: `g(k) = g(lo) + sum_j b_j (g(j) - g(j - 1))`, computed locally. So
//! the initial guess costs one sign test (7 rounds) and no product:
//! - reciprocal: `y0 = c 2^-k` with `c = 2/3`, so `x y0` is in `[2/3, 4/3)` and `|1 - x y0| <= 1/3`; each
//!   iteration `y <- y (2 - x y)` squares the relative error (4 rounds): `(1/3)^(2^i)`.
//! - rsqrt: `y0 = c 2^(-k/2)` with `c = 2 / (1 + sqrt 2)`, so `sqrt(x) y0` is in `[0.83, 1.17)`; each
//!   iteration `y <- y (3/2 - (x/2) y^2)` (6 rounds) takes the relative error `e` to about `1.5 e^2`.
//!
//! Fixed point bounds the result's precision: with `f` fractional bits, `1/x` is known to about
//! `iterations * 2^-f` absolutely, which is a relative error of `2^(k - f)`: large `x` give coarse
//! reciprocals. Inputs below `2^lo` still converge, more slowly (`x y0^2 < 3` keeps Newton stable); inputs of
//! `2^(hi + 1)` or more make the guess too large and the result wrong: the range is part of the configuration.

use crate::error::{ProtocolError, Result};
use crate::material::Request;
use crate::ops::{MpcOps, SignSelect};

use super::piecewise::fixed;

/// Range and iteration count of [`NewtonOps::reciprocal`] and [`NewtonOps::rsqrt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewtonConfig {
    /// `x >= 2^lo` (may be negative).
    pub lo: i32,
    /// `x < 2^(hi + 1)`.
    pub hi: i32,
    /// Newton iterations.
    pub iterations: usize,
}

impl NewtonConfig {
    fn check(&self) -> Result<()> {
        if self.hi < self.lo || self.hi - self.lo > 62 || self.iterations > 16 {
            return Err(ProtocolError::Shape {
                op: "newton",
                detail: format!("needs lo <= hi, hi - lo <= 62, at most 16 iterations: {self:?}"),
            });
        }
        Ok(())
    }

    fn thresholds(&self) -> usize {
        (self.hi - self.lo) as usize
    }

    /// Material of [`NewtonOps::reciprocal`] on `len` values.
    pub fn reciprocal_requests(&self, len: usize, frac_bits: u32) -> Vec<Request> {
        let mut out = self.bit_requests(len);
        for _ in 0..self.iterations {
            for _ in 0..2 {
                out.push(Request::Triples { len });
                out.push(Request::Trunc { len, frac_bits });
            }
        }
        out
    }

    /// Material of [`NewtonOps::rsqrt`] on `len` values.
    pub fn rsqrt_requests(&self, len: usize, frac_bits: u32) -> Vec<Request> {
        let mut out = self.bit_requests(len);
        out.push(Request::Trunc { len, frac_bits });
        for _ in 0..self.iterations {
            for _ in 0..3 {
                out.push(Request::Triples { len });
                out.push(Request::Trunc { len, frac_bits });
            }
        }
        out
    }

    fn bit_requests(&self, len: usize) -> Vec<Request> {
        if self.thresholds() == 0 {
            return Vec::new();
        }
        vec![Request::Sign {
            len: self.thresholds() * len,
            truncate: None,
            payloads: 1,
        }]
    }
}

/// The approximations of this module on any protocol's shares (a blanket implementation covers every
/// [`MpcOps`]).
pub trait NewtonOps: MpcOps + Sized {
    /// `g(k)` for `2^k <= x < 2^(k+1)`, as fixed-point shares, from one sign test (see the module doc).
    fn by_exponent(
        &mut self,
        x: &Self::Share,
        cfg: &NewtonConfig,
        g: impl Fn(i32) -> f64,
    ) -> Result<Self::Share> {
        let n = Self::len(x);
        let f = self.fixed_point().frac_bits();
        let mut out = self.share_public(&vec![fixed(g(cfg.lo), f); n]);
        if cfg.thresholds() == 0 {
            return Ok(out);
        }
        let tests: Vec<Self::Share> = (cfg.lo + 1..=cfg.hi)
            .map(|j| {
                let mut z = x.clone();
                self.add_public(&mut z, &vec![fixed(-f64::from(j).exp2(), f); n]);
                z
            })
            .collect();
        let ones = self.share_public(&vec![1; cfg.thresholds() * n]);
        let bits = self
            .sign_select(SignSelect {
                z: &Self::concat(&tests),
                truncate: false,
                select_self: false,
                extras: vec![ones],
            })?
            .pop()
            .ok_or_else(|| ProtocolError::Shape {
                op: "newton",
                detail: "the sign test returned no payload".into(),
            })?;
        for (i, j) in (cfg.lo + 1..=cfg.hi).enumerate() {
            let step = fixed(g(j) - g(j - 1), f);
            let b = Self::slice(&bits, i * n..(i + 1) * n);
            out = Self::add(&out, &Self::mul_public(&b, &vec![step; n]));
        }
        Ok(out)
    }

    /// `1 / x` for shared `x` in `[2^lo, 2^(hi + 1))`: 8 + 4 * iterations rounds (see the module doc).
    fn reciprocal(&mut self, x: &Self::Share, cfg: &NewtonConfig) -> Result<Self::Share> {
        cfg.check()?;
        let n = Self::len(x);
        let f = self.fixed_point().frac_bits();
        let mut y = self.by_exponent(x, cfg, |k| 2.0 / 3.0 * (-f64::from(k)).exp2())?;
        for _ in 0..cfg.iterations {
            let xy = self.mul_fixed(x, &y)?;
            let two = self.share_public(&vec![fixed(2.0, f); n]);
            y = self.mul_fixed(&y, &Self::sub(&two, &xy))?;
        }
        Ok(y)
    }

    /// `1 / sqrt(x)` for shared `x` in `[2^lo, 2^(hi + 1))`: 9 + 6 * iterations rounds.
    fn rsqrt(&mut self, x: &Self::Share, cfg: &NewtonConfig) -> Result<Self::Share> {
        cfg.check()?;
        let n = Self::len(x);
        let f = self.fixed_point().frac_bits();
        let c = 2.0 / (1.0 + std::f64::consts::SQRT_2);
        let mut y = self.by_exponent(x, cfg, |k| c * (-f64::from(k) / 2.0).exp2())?;
        let half_x = self.trunc(&Self::mul_public(x, &vec![fixed(0.5, f); n]))?;
        for _ in 0..cfg.iterations {
            // (x/2 y) y rather than x/2 (y y): for large x, y^2 has few significant bits in fixed point,
            // while x y (about sqrt x) keeps them.
            let xy = self.mul_fixed(&half_x, &y)?;
            let t = self.mul_fixed(&xy, &y)?;
            let three_halves = self.share_public(&vec![fixed(1.5, f); n]);
            y = self.mul_fixed(&y, &Self::sub(&three_halves, &t))?;
        }
        Ok(y)
    }
}

impl<P: MpcOps> NewtonOps for P {}
