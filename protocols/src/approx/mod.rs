//! Approximations of the nonlinear functions a transformer needs, on shares, written once over
//! [`crate::domain::Domain`] (so `semi2k` and `spdz2k` both run them). Each is a named function whose knobs
//! (segments and degrees, ranges, iterations) are configuration, with a companion that lists the dealer
//! material it consumes, and an error bound tested over a stated input range (`protocols/tests/approx.rs`).
//!
//! | module | one job |
//! | --- | --- |
//! | [`fit`] | least-squares polynomial fits (plain f64, at configuration time) and erf |
//! | [`piecewise`] | piecewise polynomials on shares: GELU, exp |
//! | [`functions`] | the default configurations of GELU and exp |
//! | [`newton`] | reciprocal and reciprocal square root by Newton from a normalised guess |
//! | [`rows`] | row max, softmax and LayerNorm |
//! | [`exp`] | exp on `x <= 0` as one polynomial and one comparison (softmax's cheap exp) |
//! | [`gelu`] | GELU as one even polynomial between two comparisons (the transformer's cheap GELU) |
//! | [`pooling`] | mean pooling and L2 normalisation (the sentence-embedding tail) |

pub mod exp;
pub mod fit;
pub mod functions;
pub mod gelu;
pub mod newton;
pub mod piecewise;
pub mod pooling;
pub mod rows;
pub mod silu;

pub use exp::{ExpNeg, ExpNegConfig};
pub use gelu::{GeluEven, GeluEvenConfig};
pub use newton::NewtonConfig;
pub use piecewise::{Linear, Piecewise, PiecewiseConfig, Segment};
pub use rows::{LayerNormConfig, SoftmaxConfig, SoftmaxFastConfig};
