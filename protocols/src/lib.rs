//! veil's MPC protocols: the ring Z_2^64 with fixed-point encoding, additive n-party sharing, dealer material
//! expanded from per-party seeds, and the `semi2k` and `spdz2k` protocols (one implementation over a share
//! [`domain::Domain`]: the MAC is a property of the share type), and `rep3`, three-party replicated sharing
//! with no dealer ([`rep3`]). The executors call protocols through the op-family traits of [`ops`]; every
//! protocol is named once, in [`protocol::Protocol`].
//!
//! Everything here is sans-IO: protocols talk through the [`net::Net`] trait, which an in-memory mesh
//! ([`mem_net::MemNet`]) implements for tests and a QUIC transport implements in production, with identical
//! results and identical byte and round counts. Local matrix products go through [`gemm::Gemm`], which the
//! engine implements with its SIMD kernel.

pub mod adversary;
pub mod approx;
pub mod bits;
pub mod domain;
pub mod error;
pub mod galois;
pub mod gemm;
pub mod lowering;
pub mod material;
pub mod mem_net;
pub mod net;
pub mod ops;
pub mod prg;
pub mod protocol;
pub mod rep3;
pub mod rep3m;
pub mod ring;
pub mod semi2k;
pub mod share;
pub(crate) mod simd;
pub mod spdz2k;

pub use error::{ProtocolError, Result};
