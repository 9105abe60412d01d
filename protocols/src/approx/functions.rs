//! The named approximations a transformer needs, each a configuration with a default and a tested error
//! bound over a stated input range (the bounds are asserted in `protocols/tests/approx.rs`):
//!
//! | function | method | default configuration | input range | max abs error (fit / on shares) |
//! | --- | --- | --- | --- | --- |
//! | GELU, exact erf form | piecewise polynomial | 0 below -5; degree 6 on [-5,-2], [-2,0], [0,2], [2,4]; x above 4 | \|x\| < 2^29 | 1.3e-4 / 4e-4 |
//! | exp | piecewise polynomial | 0 below -16; degree 5 on [-16,-8], [-8,-4], [-4,-2], [-2,-1], [-1,0] | x <= 0 | 9e-6 / 1e-4 |
//!
//! GELU's error is largest at the ends of the polynomial range: `|GELU(4) - 4| = 1.3e-4`, `|GELU(-5)| = 1.4e-6`.
//! On shares, each of the four truncations on the way adds at most one ulp (`2^-16 = 1.5e-5`) times the
//! coefficient it meets.
//! (The table's exact segments are in [`gelu_config`] and [`exp_config`]; reciprocal and rsqrt are in
//! [`super::newton`], softmax and LayerNorm in [`super::rows`].)

use super::fit::normal_cdf;
use super::piecewise::{Linear, Piecewise, PiecewiseConfig, Segment};
use crate::error::Result;

/// GELU as BERT defines it: `x * Phi(x)`, with the exact normal CDF.
pub fn gelu_exact(x: f64) -> f64 {
    x * normal_cdf(x)
}

/// The default GELU approximation: 0 below -5 (`|GELU| < 1.5e-6` there), `x` above 4 (`|GELU - x| < 1.3e-4`
/// there), degree-6 polynomials between.
pub fn gelu_config() -> PiecewiseConfig {
    let seg = |start, end| Segment {
        start,
        end,
        degree: 6,
    };
    PiecewiseConfig {
        low: Linear {
            constant: 0.0,
            slope: 0.0,
        },
        segments: vec![
            seg(-5.0, -2.0),
            seg(-2.0, 0.0),
            seg(0.0, 2.0),
            seg(2.0, 4.0),
        ],
        high: Linear {
            constant: 0.0,
            slope: 1.0,
        },
        fit_nodes: 256,
    }
}

/// The fitted default GELU.
pub fn gelu() -> Result<Piecewise> {
    Piecewise::fit(gelu_config(), gelu_exact)
}

/// The default exp for `x <= 0` (softmax's max-subtracted inputs): 0 below -16 (`e^-16 < 1.2e-7`), degree-5
/// pieces on octaves of the range, `1 + x` above 0 (where only rounding noise lands).
pub fn exp_config() -> PiecewiseConfig {
    let seg = |start, end| Segment {
        start,
        end,
        degree: 5,
    };
    PiecewiseConfig {
        low: Linear {
            constant: 0.0,
            slope: 0.0,
        },
        segments: vec![
            seg(-16.0, -8.0),
            seg(-8.0, -4.0),
            seg(-4.0, -2.0),
            seg(-2.0, -1.0),
            seg(-1.0, 0.0),
        ],
        high: Linear {
            constant: 1.0,
            slope: 1.0,
        },
        fit_nodes: 256,
    }
}

/// The fitted default exp (for `x <= 0`).
pub fn exp() -> Result<Piecewise> {
    Piecewise::fit(exp_config(), f64::exp)
}
