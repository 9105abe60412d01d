//! The operation families a private executor calls, as traits (in the style of burn's backend op traits), so
//! one executor runs over any protocol: `semi2k` and `spdz2k` ([`crate::semi2k::Party`], dealer material) and
//! `rep3` ([`crate::rep3::Party`], no dealer).
//!
//! - [`MpcOps`]: the share type and its local operations, plus the interactive core every protocol provides
//!   (open, products, truncation, the sign test) and the accounting. Comparisons, ReLU, max, max pooling and
//!   argmax are provided methods written once over the sign test ([`MpcOps::sign_select`]); a protocol may
//!   override them (the `semi2k` party delegates to its own implementations, so its bytes and rounds are
//!   unchanged).
//! - [`Approximations`]: the transformer's named approximations (GELU, exp, softmax, reciprocal, rsqrt,
//!   LayerNorm, mean pooling, L2 normalisation), written once over [`MpcOps`] in [`crate::approx`], with the
//!   same configurations, iteration counts and error bounds for every protocol. Implemented for every
//!   [`MpcOps`].
//! - [`WeightOps`]: products by a fixed secret-shared weight prepared at model setup (the prepared form is
//!   the protocol's own: a dealt mask for `semi2k`, replicated shares for `rep3`).

use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::material::MaterialUse;
use crate::net::NetStats;
use crate::ring::FixedPoint;
use crate::Result;

/// The sign test's job: `b = [z >= 0]` multiplied into payloads (see `semi2k/sign.rs` and `rep3/sign.rs`).
pub struct SignSelect<'a, S> {
    /// The value tested.
    pub z: &'a S,
    /// Truncate `z` by `f` in the same rounds (only meaningful with `select_self`).
    pub truncate: bool,
    /// Include `z` itself (or its truncation) as the first payload.
    pub select_self: bool,
    /// Further payloads, each as long as `z`.
    pub extras: Vec<S>,
}

/// The local share operations and the interactive core of a protocol. Every party of a committee makes the
/// same sequence of calls (SPMD); the calls are data-oblivious.
pub trait MpcOps {
    /// A party's share of a vector of ring elements (Z_2^64, fixed point with `f` fractional bits).
    type Share: Clone + Default + Send + Sync + std::fmt::Debug;

    /// Number of elements.
    fn len(x: &Self::Share) -> usize;
    /// `x + y`.
    fn add(x: &Self::Share, y: &Self::Share) -> Self::Share;
    /// `x - y`.
    fn sub(x: &Self::Share, y: &Self::Share) -> Self::Share;
    /// `x += y`.
    fn add_assign(x: &mut Self::Share, y: &Self::Share) {
        *x = Self::add(x, y);
    }
    /// `x * p`, elementwise, by public `p`.
    fn mul_public(x: &Self::Share, p: &[u64]) -> Self::Share;
    /// Elements `range` of `x`.
    fn slice(x: &Self::Share, range: std::ops::Range<usize>) -> Self::Share;
    /// The elements of `x` at `indices`, in that order.
    fn gather(x: &Self::Share, indices: &[usize]) -> Self::Share;
    /// Concatenation.
    fn concat(parts: &[Self::Share]) -> Self::Share;
    /// `x · f` for shared `x` (m x k) and public `f` (k x n).
    fn gemm_right(gemm: &dyn Gemm, mkn: [usize; 3], x: &Self::Share, f: &[u64]) -> Self::Share;
    /// The lowering of a share (a share of the lowering).
    fn lower(lowering: &Lowering, x: &Self::Share, batch: usize) -> Result<Self::Share>;

    /// This party's index.
    fn id(&self) -> usize;
    /// Fixed-point parameters.
    fn fixed_point(&self) -> FixedPoint;
    /// The local matrix kernel.
    fn gemm(&self) -> &dyn Gemm;
    /// Communication so far.
    fn stats(&self) -> &NetStats;
    /// Dealer material consumed so far (zero for protocols without a dealer).
    fn material_use(&self) -> MaterialUse;
    /// Sends on every message the transport may still hold ([`crate::net::Net::flush`]): a party calls it
    /// before it waits for anything outside the committee (the next input), so no peer waits on it.
    fn flush(&mut self) -> Result<()>;
    /// Waits at the transport's start line ([`crate::net::Net::start_line`]): every party of the committee
    /// calls it just before an inference's online phase, so their online clocks start together. Neither
    /// counted nor timed as traffic.
    fn start_line(&mut self) -> Result<()>;

    /// A sharing of the public vector `values`.
    fn share_public(&self, values: &[u64]) -> Self::Share;
    /// Adds the public `values` to the shared `x`.
    fn add_public(&self, x: &mut Self::Share, values: &[u64]);
    /// Reveals a shared vector to every party.
    fn open(&mut self, x: &Self::Share) -> Result<Vec<u64>>;
    /// Elementwise product (result with `2f` fractional bits).
    fn mul(&mut self, x: &Self::Share, y: &Self::Share) -> Result<Self::Share>;
    /// `x_i · y_i` for every pair, shapes `dims[i] = [m, k, n]`, in one round.
    fn matmuls(
        &mut self,
        pairs: &[(&Self::Share, &Self::Share)],
        dims: &[[usize; 3]],
    ) -> Result<Vec<Self::Share>>;
    /// Divides a value with `2f` fractional bits by `2^f` (at most one ulp off, see each protocol's bound).
    fn trunc(&mut self, z: &Self::Share) -> Result<Self::Share>;
    /// The sign test: `[z >= 0] * payload` for every payload (self, or its truncation, first; then extras).
    fn sign_select(&mut self, job: SignSelect<'_, Self::Share>) -> Result<Vec<Self::Share>>;

    /// `trunc(x · W + bias + addend)` for shared `x` (m x k), public `W` (k x n), public `bias` and an
    /// optional shared `addend` (both m x n, at the product's scale): a linear layer with its truncation. A
    /// protocol may compute it with fewer local products than the two steps (`rep3`: one per party).
    fn linear_trunc(
        &mut self,
        mkn: [usize; 3],
        x: &Self::Share,
        w: &[u64],
        bias: &[u64],
        addend: Option<&Self::Share>,
    ) -> Result<Self::Share> {
        let mut z = Self::gemm_right(self.gemm(), mkn, x, w);
        self.add_public(&mut z, bias);
        if let Some(a) = addend {
            Self::add_assign(&mut z, a);
        }
        self.trunc(&z)
    }
    /// Elementwise `x * y` truncated back to `f` fractional bits.
    fn mul_fixed(&mut self, x: &Self::Share, y: &Self::Share) -> Result<Self::Share> {
        let z = self.mul(x, y)?;
        self.trunc(&z)
    }
    /// `max(z, 0)`.
    fn relu(&mut self, z: &Self::Share) -> Result<Self::Share> {
        first(self.sign_select(SignSelect {
            z,
            truncate: false,
            select_self: true,
            extras: Vec::new(),
        })?)
    }
    /// `max(trunc(z), 0)`.
    fn trunc_relu(&mut self, z: &Self::Share) -> Result<Self::Share> {
        first(self.sign_select(SignSelect {
            z,
            truncate: true,
            select_self: true,
            extras: Vec::new(),
        })?)
    }
    /// Shares of the integer bit `[z >= 0]`.
    fn drelu(&mut self, z: &Self::Share) -> Result<Self::Share> {
        let ones = self.share_public(&vec![1; Self::len(z)]);
        first(self.sign_select(SignSelect {
            z,
            truncate: false,
            select_self: false,
            extras: vec![ones],
        })?)
    }
    /// Elementwise `max(a, b)`.
    fn max(&mut self, a: &Self::Share, b: &Self::Share) -> Result<Self::Share> {
        crate::error::ensure_shape(Self::len(a) == Self::len(b), "max", || {
            format!("lengths {} and {}", Self::len(a), Self::len(b))
        })?;
        let mut out = self.relu(&Self::sub(a, b))?;
        Self::add_assign(&mut out, b);
        Ok(out)
    }
    /// Max pooling of `batch` items (a tournament of sign tests, one per level).
    fn max_pool2d(
        &mut self,
        x: &Self::Share,
        batch: usize,
        pool: &crate::semi2k::Pool2d,
    ) -> Result<Self::Share> {
        let mut candidates: Vec<Self::Share> = pool
            .candidate_indices(Self::len(x), batch)?
            .iter()
            .map(|idx| Self::gather(x, idx))
            .collect();
        while candidates.len() > 1 {
            let pairs = candidates.len() / 2;
            let width = Self::len(&candidates[0]);
            let diff = Self::concat(
                &(0..pairs)
                    .map(|j| Self::sub(&candidates[2 * j], &candidates[2 * j + 1]))
                    .collect::<Vec<_>>(),
            );
            let selected = self.relu(&diff)?;
            let mut next: Vec<Self::Share> = (0..pairs)
                .map(|j| {
                    let mut max = Self::slice(&selected, j * width..(j + 1) * width);
                    Self::add_assign(&mut max, &candidates[2 * j + 1]);
                    max
                })
                .collect();
            if candidates.len() % 2 == 1 {
                next.extend(candidates.pop());
            }
            candidates = next;
        }
        Ok(candidates.pop().unwrap_or_default())
    }
    /// Index of the largest of each row of `x` (`rows x cols`), as shares of an integer: a tournament of
    /// sign tests that select the larger value and its index together. Ties go to the lower index.
    fn argmax(&mut self, x: &Self::Share, rows: usize, cols: usize) -> Result<Self::Share> {
        crate::error::ensure_shape(Self::len(x) == rows * cols && cols > 0, "argmax", || {
            format!("{} elements for {rows} rows of {cols}", Self::len(x))
        })?;
        let mut values: Vec<Self::Share> = (0..cols)
            .map(|c| Self::gather(x, &(0..rows).map(|r| r * cols + c).collect::<Vec<_>>()))
            .collect();
        let mut indices: Vec<Self::Share> = (0..cols as u64)
            .map(|c| self.share_public(&vec![c; rows]))
            .collect();
        while values.len() > 1 {
            let pairs = values.len() / 2;
            let diff = Self::concat(
                &(0..pairs)
                    .map(|j| Self::sub(&values[2 * j], &values[2 * j + 1]))
                    .collect::<Vec<_>>(),
            );
            let idx_diff = Self::concat(
                &(0..pairs)
                    .map(|j| Self::sub(&indices[2 * j], &indices[2 * j + 1]))
                    .collect::<Vec<_>>(),
            );
            let selected = self.sign_select(SignSelect {
                z: &diff,
                truncate: false,
                select_self: true,
                extras: vec![idx_diff],
            })?;
            let (mut next_values, mut next_indices) = (Vec::new(), Vec::new());
            for j in 0..pairs {
                let range = j * rows..(j + 1) * rows;
                next_values.push(Self::add(
                    &Self::slice(&selected[0], range.clone()),
                    &values[2 * j + 1],
                ));
                next_indices.push(Self::add(
                    &Self::slice(&selected[1], range),
                    &indices[2 * j + 1],
                ));
            }
            if values.len() % 2 == 1 {
                next_values.extend(values.pop());
                next_indices.extend(indices.pop());
            }
            values = next_values;
            indices = next_indices;
        }
        Ok(indices.pop().unwrap_or_default())
    }
}

/// The single payload of a sign test.
fn first<S>(mut v: Vec<S>) -> Result<S> {
    v.drain(..).next().ok_or(crate::ProtocolError::Shape {
        op: "sign_select",
        detail: "the sign test returned no payload".into(),
    })
}

/// Products by a fixed secret-shared weight, prepared once at model setup.
pub trait WeightOps: MpcOps {
    /// The prepared weight.
    type Weight: Send + Sync;
    /// `lower(x) · W` (result with `2f` fractional bits).
    fn weight_product(
        &mut self,
        x: &Self::Share,
        batch: usize,
        lowering: Lowering,
        w: &Self::Weight,
    ) -> Result<Self::Share>;
}

/// The transformer's approximations, for every protocol (bodies in [`crate::approx`], one trait per module;
/// import [`prelude`] to call them).
pub trait Approximations:
    crate::approx::RowOps + crate::approx::PoolingOps + crate::approx::GeluOps
{
}

impl<P: MpcOps> Approximations for P {}

/// Every op-family trait, for `use veil_protocols::ops::prelude::*`.
pub mod prelude {
    pub use super::{Approximations, MpcOps, SignSelect, WeightOps};
    pub use crate::approx::{ExpOps, GeluOps, NewtonOps, PiecewiseOps, PoolingOps, RowOps};
}
