//! Approximations of the nonlinear functions a transformer needs, on shares, written once over the op
//! traits of [`crate::ops`] (one extension trait per module, implemented for every [`crate::ops::MpcOps`]),
//! so `semi2k`, `spdz2k` and `rep3` all run the same definitions with the same error bounds. Each is a named
//! function whose knobs (segments and degrees, ranges, iterations) are configuration, with a companion that
//! lists the dealer material it consumes under `semi2k`/`spdz2k` (`rep3` has none), and an error bound tested
//! over a stated input range (`protocols/tests/approx.rs`, and `protocols/tests/rep3.rs` under `rep3`).
//!
//! | module | one job |
//! | --- | --- |
//! | [`fit`] | least-squares polynomial fits (plain f64, at configuration time) and erf |
//! | [`piecewise`] | piecewise polynomials on shares: GELU, exp |
//! | [`functions`] | the default configurations of GELU and exp |
//! | [`newton`] | reciprocal and reciprocal square root by Newton from a normalised guess |
//! | [`rows`] | row max, softmax and LayerNorm |
//! | [`exp`] | exp on `x <= 0` as one polynomial and one comparison (softmax's cheap exp) |
//! | [`even_split`] | `x/2` plus an even polynomial between two comparisons: the form GELU and SiLU share |
//! | [`gelu`] | GELU of that form (the transformer's cheap GELU) |
//! | [`silu`] | SiLU of that form (Llama's feed-forward activation) |
//! | [`pooling`] | mean pooling and L2 normalisation (the sentence-embedding tail) |

pub mod even_split;
pub mod exp;
pub mod fit;
pub mod functions;
pub mod gelu;
pub mod newton;
pub mod piecewise;
pub mod pooling;
pub mod rows;
pub mod silu;

pub use even_split::EvenSplitOps;
pub use exp::ExpOps;
pub use gelu::GeluOps;
pub use newton::NewtonOps;
pub use piecewise::PiecewiseOps;
pub use pooling::PoolingOps;
pub use rows::RowOps;
pub use silu::SiluOps;

pub use even_split::{EvenSplit, EvenSplitConfig};
pub use exp::{ExpNeg, ExpNegConfig};
pub use gelu::{GeluEven, GeluEvenConfig};
pub use newton::NewtonConfig;
pub use piecewise::{Linear, Piecewise, PiecewiseConfig, Segment};
pub use rows::{LayerNormConfig, SoftmaxConfig, SoftmaxFastConfig};
pub use silu::{SiluEven, SiluEvenConfig};
