//! GELU by one even polynomial and two comparisons: the cheap form for transformer feed-forward layers.
//!
//! `GELU(x) = x/2 + w(x)` with `w(x) = (x/2) erf(x / sqrt 2)`, an even function: the form of
//! [`super::even_split`] (which has the method, its cost and its sources). The tails cost `T Phi(-T)`:
//! 1.3e-4 at `T = 4`.
//!
//! Cost of [`GeluOps::gelu_even`] on `n` values: `1 + 2 + 2 ceil(log2 m) + 7 + 1` rounds (15 for `m = 4`).
//!
//! Error (asserted in `protocols/tests/approx_transformer.rs`): the default (`T = 3.25`, `m = 4`) fits GELU
//! to within 3.8e-3 on all reals (3.7e-3 on `[-T, T]`, 1.9e-3 in the tails); on shares, fixed-point rounding
//! of the powers and coefficients adds at most about 1e-4, and the rounded public scale factors `s` and
//! `1/(2s)` add a relative `2.5e-5 |x|` ([`GeluOps::gelu_even_scaled`]: `1e-5 |x|`), which matters only
//! for large inputs.

use std::ops::Deref;

use super::even_split::{EvenSplit, EvenSplitConfig, EvenSplitOps};
use super::functions::gelu_exact;
use crate::error::Result;
use crate::ops::MpcOps;

/// Knobs of [`GeluEven`].
pub type GeluEvenConfig = EvenSplitConfig;

/// The default: `T = 3.25`, `m = 4` (error 3.8e-3 on all reals).
pub fn gelu_even_config() -> GeluEvenConfig {
    GeluEvenConfig {
        bound: 3.25,
        degree: 4,
        fit_nodes: 256,
    }
}

/// A fitted even-polynomial GELU (see the module doc); everything but the fit is [`EvenSplit`]'s.
#[derive(Debug, Clone)]
pub struct GeluEven(EvenSplit);

impl GeluEven {
    /// Fits the polynomial of `config`.
    pub fn fit(config: GeluEvenConfig) -> Result<Self> {
        EvenSplit::fit("gelu_even", gelu_exact, config).map(Self)
    }

    /// The default GELU of this form.
    pub fn default_fit() -> Result<Self> {
        Self::fit(gelu_even_config())
    }
}

impl Deref for GeluEven {
    type Target = EvenSplit;
    fn deref(&self) -> &EvenSplit {
        &self.0
    }
}

/// GELU on any protocol's shares (a blanket implementation covers every [`MpcOps`]).
pub trait GeluOps: MpcOps + Sized {
    /// Shares of `approx.eval_plain(x)` for shared fixed-point `x`, with `f` fractional bits.
    fn gelu_even(&mut self, x: &Self::Share, approx: &GeluEven) -> Result<Self::Share> {
        self.even_split(x, approx)
    }

    /// Shares of `approx.eval_plain(x)` with `2f` fractional bits, from shares of `y = s x` (`f` bits;
    /// `s` = [`EvenSplit::input_scale`]).
    fn gelu_even_scaled(&mut self, y: &Self::Share, approx: &GeluEven) -> Result<Self::Share> {
        self.even_split_scaled(y, approx)
    }
}

impl<P: MpcOps> GeluOps for P {}
