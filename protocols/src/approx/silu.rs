//! SiLU (`x sigmoid(x)`, Llama's feed-forward activation) by one even polynomial and two comparisons:
//! `SiLU(x) = x/2 + w(x)` with `w(x) = (x/2) tanh(x/2)`, an even function, so it has the form of
//! [`super::even_split`] (which has the method, its cost and its sources). The tails cost at most
//! `T e^-T`: 2.7e-3 at `T = 8`.
//!
//! Cost on `n` values ([`SiluOps::silu_even_scaled`]): `y^2` (1 product, 1 truncation), `ceil(log2 m)`
//! levels of powers, one sign test on `2n` values with one payload: `2 + 2 ceil(log2 m) + 7` rounds (15 for
//! `m = 8`).
//!
//! Error (asserted in this module's tests): the default (`T = 8`, `m = 8`) is within 2.8e-3 of SiLU on all
//! reals; on shares, fixed-point rounding adds about `1e-4` plus a relative `2^-f |x|` from the rounded
//! scale factors.

use std::ops::Deref;

use super::even_split::{EvenSplit, EvenSplitConfig, EvenSplitOps};
use crate::error::Result;
use crate::ops::MpcOps;

/// SiLU in f64.
pub fn silu_exact(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Knobs of [`SiluEven`].
pub type SiluEvenConfig = EvenSplitConfig;

/// The default: `T = 8`, `m = 8` (error 2.8e-3 on all reals).
pub fn silu_even_config() -> SiluEvenConfig {
    SiluEvenConfig {
        bound: 8.0,
        degree: 8,
        fit_nodes: 256,
    }
}

/// A fitted even-polynomial SiLU (see the module doc); everything but the fit is [`EvenSplit`]'s.
#[derive(Debug, Clone)]
pub struct SiluEven(EvenSplit);

impl SiluEven {
    /// Fits the polynomial of `config`.
    pub fn fit(config: SiluEvenConfig) -> Result<Self> {
        EvenSplit::fit("silu_even", silu_exact, config).map(Self)
    }

    /// The default SiLU of this form.
    pub fn default_fit() -> Result<Self> {
        Self::fit(silu_even_config())
    }
}

impl Deref for SiluEven {
    type Target = EvenSplit;
    fn deref(&self) -> &EvenSplit {
        &self.0
    }
}

/// SiLU on any protocol's shares (a blanket implementation covers every [`MpcOps`]).
pub trait SiluOps: MpcOps + Sized {
    /// Shares of `approx.eval_plain(x)` (`f` fractional bits in and out).
    fn silu_even(&mut self, x: &Self::Share, approx: &SiluEven) -> Result<Self::Share> {
        self.even_split(x, approx)
    }

    /// Shares of `approx.eval_plain(x)` with `2f` fractional bits, from shares of `y = s x` (`f` bits;
    /// `s` = [`EvenSplit::input_scale`]).
    fn silu_even_scaled(&mut self, y: &Self::Share, approx: &SiluEven) -> Result<Self::Share> {
        self.even_split_scaled(y, approx)
    }
}

impl<P: MpcOps> SiluOps for P {}

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
