//! SiLU (`x sigmoid(x)`, Llama's feed-forward activation) by one even polynomial and two comparisons, the
//! form of [`super::gelu`]:
//!
//! `SiLU(x) = x/2 + w(x)` with `w(x) = (x/2) tanh(x/2)`, an even function, so on `[-T, T]` it is a polynomial
//! `q` in `u = 2x^2/T^2 - 1`. Outside, `SiLU(x) = 0` below `-T` and `x` above `T` (the tails cost at most
//! `T e^-T`: 2.7e-3 at `T = 8`). With the bits `b1 = [x >= -T]` and `b2 = [x >= T]` from one sign test,
//!
//! `SiLU(x) ~ b1 (x/2 + q(u)) + b2 (x/2 - q(u))`
//!
//! The payloads are selected with `2f` fractional bits, so for `|x| > T`, where `q(u)` may have wrapped, `q`
//! cancels exactly. The work is done on `y = s x` with `s = sqrt(2) / T` (so `u = y^2 - 1`); a caller whose
//! `x` comes out of a linear layer folds `s` into the weights ([`Party::silu_even_scaled`]).
//!
//! Cost on `n` values ([`Party::silu_even_scaled`]): `y^2` (1 product, 1 truncation), `ceil(log2 m)` levels
//! of powers, one sign test on `2n` values with one payload: `2 + 2 ceil(log2 m) + 7` rounds (15 for `m = 8`).
//!
//! Error (asserted in this module's tests): the default (`T = 8`, `m = 8`) is within 2.8e-3 of SiLU on all
//! reals; on shares, fixed-point rounding adds about `1e-4` plus a relative `2^-f |x|` from the rounded
//! scale factors.

use super::fit;
use super::piecewise::fixed;
use crate::domain::Domain;
use crate::error::{ensure_shape, ProtocolError, Result};
use crate::material::Request;
use crate::net::Net;
use crate::semi2k::{sign::SignJob, Party};

/// SiLU in f64.
pub fn silu_exact(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Knobs of [`SiluEven`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiluEvenConfig {
    /// `T`: the polynomial covers `[-T, T]`; 0 below, the identity above.
    pub bound: f64,
    /// `m`: degree in `u = 2x^2/T^2 - 1`.
    pub degree: usize,
    /// Chebyshev nodes of the least-squares fit.
    pub fit_nodes: usize,
}

/// The default: `T = 8`, `m = 8` (error 2.8e-3 on all reals).
pub fn silu_even_config() -> SiluEvenConfig {
    SiluEvenConfig {
        bound: 8.0,
        degree: 8,
        fit_nodes: 256,
    }
}

/// A fitted even-polynomial SiLU.
#[derive(Debug, Clone)]
pub struct SiluEven {
    config: SiluEvenConfig,
    /// `q(u) = sum c[k] u^k`, approximating `(x/2) tanh(x/2)`.
    coefficients: Vec<f64>,
}

impl SiluEven {
    /// Fits the polynomial of `config`.
    pub fn fit(config: SiluEvenConfig) -> Result<Self> {
        if !(config.bound.is_finite() && config.bound > 0.0 && config.bound < 64.0)
            || config.degree == 0
            || config.degree > 16
        {
            return Err(ProtocolError::Shape {
                op: "silu_even",
                detail: format!("needs 0 < bound < 64 and degree in 1..=16: {config:?}"),
            });
        }
        let t = config.bound;
        let w = |u: f64| {
            let x = t * ((u + 1.0) / 2.0).max(0.0).sqrt();
            silu_exact(x) - x / 2.0
        };
        Ok(Self {
            config,
            coefficients: fit::least_squares(w, config.degree, config.fit_nodes),
        })
    }

    /// The default SiLU of this form.
    pub fn default_fit() -> Result<Self> {
        Self::fit(silu_even_config())
    }

    /// The configuration.
    pub fn config(&self) -> &SiluEvenConfig {
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

    /// The largest `|approximation - SiLU|` over `samples + 1` evenly spaced points of `[from, to]`.
    pub fn fit_error(&self, from: f64, to: f64, samples: usize) -> f64 {
        (0..=samples)
            .map(|i| from + (to - from) * i as f64 / samples as f64)
            .map(|x| (self.eval_plain(x) - silu_exact(x)).abs())
            .fold(0.0, f64::max)
    }

    /// `(from, count)`: one round computes `u^(from+1) ..= u^(from+count)`.
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

    /// `s = sqrt(2) / T`: [`Party::silu_even_scaled`] takes `y = s x`.
    pub fn input_scale(&self) -> f64 {
        std::f64::consts::SQRT_2 / self.config.bound
    }

    /// The dealer material [`Party::silu_even`] consumes for `len` values, in order.
    pub fn requests(&self, len: usize, frac_bits: u32) -> Vec<Request> {
        let mut out = vec![Request::Trunc { len, frac_bits }];
        out.extend(self.scaled_requests(len, frac_bits));
        out.push(Request::Trunc { len, frac_bits });
        out
    }

    /// The dealer material [`Party::silu_even_scaled`] consumes for `len` values, in order.
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

impl<N: Net, D: Domain> Party<N, D> {
    /// Shares of `approx.eval_plain(x)` (`f` fractional bits in and out).
    pub fn silu_even(&mut self, x: &D::Arith, approx: &SiluEven) -> Result<D::Arith> {
        let f = self.fixed_point().frac_bits();
        let scale = vec![fixed(approx.input_scale(), f); D::len(x)];
        let y = self.trunc(&D::mul_public(x, &scale))?;
        let wide = self.silu_even_scaled(&y, approx)?;
        self.trunc(&wide)
    }

    /// Shares of `approx.eval_plain(x)` with `2f` fractional bits, from shares of `y = s x` (`f` bits).
    pub fn silu_even_scaled(&mut self, y: &D::Arith, approx: &SiluEven) -> Result<D::Arith> {
        let n = D::len(y);
        let f = self.fixed_point().frac_bits();
        let s = approx.input_scale();
        let mut u = self.mul_fixed(y, y)?;
        self.add_public(&mut u, &vec![fixed(-1.0, f); n]);
        let mut powers = vec![u];
        for (from, count) in approx.levels() {
            let left = D::concat(&vec![powers[from - 1].clone(); count]);
            let right = D::concat(&powers[..count]);
            let next = self.mul_fixed(&left, &right)?;
            for j in 0..count {
                powers.push(D::slice(&next, j * n..(j + 1) * n));
            }
        }
        let c = &approx.coefficients;
        let mut q = self.share_public(&vec![fixed(c[0], 2 * f); n]);
        for (k, ck) in c.iter().enumerate().skip(1) {
            q = D::add(&q, &D::mul_public(&powers[k - 1], &vec![fixed(*ck, f); n]));
        }
        let half = D::mul_public(y, &vec![fixed(0.5 / s, f); n]);
        let payload = D::concat(&[D::add(&half, &q), D::sub(&half, &q)]);
        // b1 = [x >= -T] = [y + sqrt 2 >= 0], b2 = [x >= T] = [y - sqrt 2 >= 0].
        let edge = fixed(std::f64::consts::SQRT_2, f);
        let mut low = y.clone();
        self.add_public(&mut low, &vec![edge; n]);
        let mut high = y.clone();
        self.add_public(&mut high, &vec![edge.wrapping_neg(); n]);
        let selected = self
            .sign_select(SignJob {
                z: &D::concat(&[low, high]),
                truncate: false,
                select_self: false,
                extras: vec![payload],
            })?
            .pop()
            .ok_or_else(|| ProtocolError::Shape {
                op: "silu_even",
                detail: "the sign test returned no payload".into(),
            })?;
        let out = D::add(&D::slice(&selected, 0..n), &D::slice(&selected, n..2 * n));
        ensure_shape(D::len(&out) == n, "silu_even", || "output length".into())?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semi2k::local::{run, Committee, DealtSeeds};
    use crate::share::{reconstruct, share};
    use rand::SeedableRng;

    #[test]
    fn default_fit_is_within_its_stated_bound() {
        let s = SiluEven::default_fit().unwrap();
        let e = s.fit_error(-64.0, 64.0, 256_000);
        assert!(e < 2.8e-3, "error {e}");
        // And it is a real approximation, not exact: the bound is tight to within a factor 2.
        assert!(e > 1.4e-3, "error {e}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut c = silu_even_config();
        c.degree = 0;
        assert!(SiluEven::fit(c).is_err());
        c.degree = 8;
        c.bound = f64::NAN;
        assert!(SiluEven::fit(c).is_err());
    }

    #[test]
    fn shares_match_the_plain_approximation() {
        let approx = SiluEven::default_fit().unwrap();
        let fp = crate::ring::FixedPoint::default();
        let xs: Vec<f64> = (0..401).map(|i| -20.0 + 0.1 * i as f64).collect();
        let n = xs.len();
        let enc = fp
            .encode(&xs.iter().map(|v| *v as f32).collect::<Vec<_>>())
            .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let shares = share(&enc, 3, &mut rng).unwrap();
        let committee = Committee::new(3, std::sync::Arc::new(crate::gemm::NaiveGemm));
        let requests = approx.requests(n, fp.frac_bits());
        let seeds = DealtSeeds::from_master(&crate::prg::Seed::random_from(1), 3);
        let out = run(&committee, &requests, &[], &seeds, |party, _| {
            let me = party.id();
            party.silu_even(&shares[me], &approx)
        })
        .unwrap();
        let parts: Vec<Vec<u64>> = out.parties.iter().map(|p| p.value.clone()).collect();
        let got = fp.decode(&reconstruct(&parts).unwrap());
        for (x, g) in xs.iter().zip(&got) {
            let g = f64::from(*g);
            // Away from the edges +-T (where the rounded input may fall on either side), the shares compute
            // the plain approximation up to fixed-point rounding.
            if (x.abs() - 8.0).abs() > 0.01 {
                let want = approx.eval_plain(*x);
                assert!(
                    (g - want).abs() < 2e-4 + 1e-4 * x.abs(),
                    "x {x}: {g} vs {want}"
                );
            }
            // Everywhere, within the fit's bound of SiLU plus rounding.
            let exact = silu_exact(*x);
            assert!(
                (g - exact).abs() < 3e-3 + 1e-4 * x.abs(),
                "x {x}: {g} vs {exact}"
            );
        }
    }
}
