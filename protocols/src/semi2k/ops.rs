//! The op-family traits ([`crate::ops`]) for the dealer-backed party, by delegation to its own methods: the
//! same material, bytes and rounds as calling them directly. Also the approximations as inherent methods,
//! so callers that do not import the traits keep working.

use crate::approx::exp::{ExpNeg, ExpOps};
use crate::approx::gelu::{GeluEven, GeluOps};
use crate::approx::newton::{NewtonConfig, NewtonOps};
use crate::approx::piecewise::{Piecewise, PiecewiseOps};
use crate::approx::pooling::{Affine, PoolingOps};
use crate::approx::rows::{LayerNormConfig, RowOps, SoftmaxConfig, SoftmaxFastConfig};
use crate::approx::silu::{SiluEven, SiluOps};
use crate::domain::Domain;
use crate::error::Result;
use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::material::MaterialUse;
use crate::net::{Net, NetStats};
use crate::ops::{MpcOps, SignSelect, WeightOps};
use crate::ring::FixedPoint;

use super::sign::SignJob;
use super::{FixedWeight, Party};

impl<N: Net, D: Domain> MpcOps for Party<N, D> {
    type Share = D::Arith;

    fn len(x: &D::Arith) -> usize {
        D::len(x)
    }
    fn add(x: &D::Arith, y: &D::Arith) -> D::Arith {
        D::add(x, y)
    }
    fn sub(x: &D::Arith, y: &D::Arith) -> D::Arith {
        D::sub(x, y)
    }
    fn add_assign(x: &mut D::Arith, y: &D::Arith) {
        D::add_assign(x, y)
    }
    fn mul_public(x: &D::Arith, p: &[u64]) -> D::Arith {
        D::mul_public(x, p)
    }
    fn slice(x: &D::Arith, range: std::ops::Range<usize>) -> D::Arith {
        D::slice(x, range)
    }
    fn gather(x: &D::Arith, indices: &[usize]) -> D::Arith {
        D::gather(x, indices)
    }
    fn concat(parts: &[D::Arith]) -> D::Arith {
        D::concat(parts)
    }
    fn gemm_right(gemm: &dyn Gemm, mkn: [usize; 3], x: &D::Arith, f: &[u64]) -> D::Arith {
        D::gemm_right(gemm, mkn, x, f)
    }
    fn lower(lowering: &Lowering, x: &D::Arith, batch: usize) -> Result<D::Arith> {
        D::lower(lowering, x, batch)
    }

    fn id(&self) -> usize {
        Party::id(self)
    }
    fn fixed_point(&self) -> FixedPoint {
        Party::fixed_point(self)
    }
    fn gemm(&self) -> &dyn Gemm {
        Party::gemm(self)
    }
    fn stats(&self) -> &NetStats {
        Party::stats(self)
    }
    fn flush(&mut self) -> Result<()> {
        Party::flush(self)
    }
    fn start_line(&mut self) -> Result<()> {
        Party::start_line(self)
    }
    fn material_use(&self) -> MaterialUse {
        Party::material_use(self)
    }
    fn share_public(&self, values: &[u64]) -> D::Arith {
        Party::share_public(self, values)
    }
    fn add_public(&self, x: &mut D::Arith, values: &[u64]) {
        Party::add_public(self, x, values)
    }
    fn open(&mut self, x: &D::Arith) -> Result<Vec<u64>> {
        Party::open(self, x)
    }
    fn mul(&mut self, x: &D::Arith, y: &D::Arith) -> Result<D::Arith> {
        Party::mul(self, x, y)
    }
    fn matmuls(
        &mut self,
        pairs: &[(&D::Arith, &D::Arith)],
        dims: &[[usize; 3]],
    ) -> Result<Vec<D::Arith>> {
        Party::matmuls(self, pairs, dims)
    }
    fn trunc(&mut self, z: &D::Arith) -> Result<D::Arith> {
        Party::trunc(self, z)
    }
    fn sign_select(&mut self, job: SignSelect<'_, D::Arith>) -> Result<Vec<D::Arith>> {
        Party::sign_select(
            self,
            SignJob {
                z: job.z,
                truncate: job.truncate,
                select_self: job.select_self,
                extras: job.extras,
            },
        )
    }
    fn relu(&mut self, z: &D::Arith) -> Result<D::Arith> {
        Party::relu(self, z)
    }
    fn trunc_relu(&mut self, z: &D::Arith) -> Result<D::Arith> {
        Party::trunc_relu(self, z)
    }
    fn drelu(&mut self, z: &D::Arith) -> Result<D::Arith> {
        Party::drelu(self, z)
    }
}

impl<N: Net, D: Domain> WeightOps for Party<N, D> {
    type Weight = FixedWeight<D>;

    fn weight_product(
        &mut self,
        x: &D::Arith,
        batch: usize,
        lowering: Lowering,
        w: &FixedWeight<D>,
    ) -> Result<D::Arith> {
        Party::weight_product(self, x, batch, lowering, w)
    }
}

/// The approximations of [`crate::approx`] as inherent methods (each delegates to its trait).
impl<N: Net, D: Domain> Party<N, D> {
    /// See [`NewtonOps`]: `x * y` truncated to `f` fractional bits (2 rounds).
    pub fn mul_fixed(&mut self, x: &D::Arith, y: &D::Arith) -> Result<D::Arith> {
        <Self as MpcOps>::mul_fixed(self, x, y)
    }
    /// See [`PiecewiseOps::piecewise`].
    pub fn piecewise(&mut self, x: &D::Arith, approx: &Piecewise) -> Result<D::Arith> {
        <Self as PiecewiseOps>::piecewise(self, x, approx)
    }
    /// See [`ExpOps::exp_neg`].
    pub fn exp_neg(&mut self, x: &D::Arith, approx: &ExpNeg) -> Result<D::Arith> {
        <Self as ExpOps>::exp_neg(self, x, approx)
    }
    /// See [`GeluOps::gelu_even`].
    pub fn gelu_even(&mut self, x: &D::Arith, approx: &GeluEven) -> Result<D::Arith> {
        <Self as GeluOps>::gelu_even(self, x, approx)
    }
    /// See [`GeluOps::gelu_even_scaled`].
    pub fn gelu_even_scaled(&mut self, y: &D::Arith, approx: &GeluEven) -> Result<D::Arith> {
        <Self as GeluOps>::gelu_even_scaled(self, y, approx)
    }
    /// See [`SiluOps::silu_even`].
    pub fn silu_even(&mut self, x: &D::Arith, approx: &SiluEven) -> Result<D::Arith> {
        <Self as SiluOps>::silu_even(self, x, approx)
    }
    /// See [`SiluOps::silu_even_scaled`].
    pub fn silu_even_scaled(&mut self, y: &D::Arith, approx: &SiluEven) -> Result<D::Arith> {
        <Self as SiluOps>::silu_even_scaled(self, y, approx)
    }
    /// See [`NewtonOps::reciprocal`].
    pub fn reciprocal(&mut self, x: &D::Arith, cfg: &NewtonConfig) -> Result<D::Arith> {
        <Self as NewtonOps>::reciprocal(self, x, cfg)
    }
    /// See [`NewtonOps::rsqrt`].
    pub fn rsqrt(&mut self, x: &D::Arith, cfg: &NewtonConfig) -> Result<D::Arith> {
        <Self as NewtonOps>::rsqrt(self, x, cfg)
    }
    /// See [`RowOps::row_max`].
    pub fn row_max(&mut self, x: &D::Arith, rows: usize, cols: usize) -> Result<D::Arith> {
        <Self as RowOps>::row_max(self, x, rows, cols)
    }
    /// See [`RowOps::softmax`].
    pub fn softmax(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        cfg: &SoftmaxConfig,
    ) -> Result<D::Arith> {
        <Self as RowOps>::softmax(self, x, rows, cols, cfg)
    }
    /// See [`RowOps::softmax_fast`].
    pub fn softmax_fast(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        cfg: &SoftmaxFastConfig,
    ) -> Result<D::Arith> {
        <Self as RowOps>::softmax_fast(self, x, rows, cols, cfg)
    }
    /// See [`RowOps::layer_norm`].
    pub fn layer_norm(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        cfg: &LayerNormConfig,
    ) -> Result<D::Arith> {
        <Self as RowOps>::layer_norm(self, x, rows, cols, cfg)
    }
    /// See [`PoolingOps::mean_pool`].
    pub fn mean_pool(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        affine: Option<Affine<'_>>,
    ) -> Result<D::Arith> {
        <Self as PoolingOps>::mean_pool(self, x, rows, cols, affine)
    }
    /// See [`PoolingOps::l2_normalize`].
    pub fn l2_normalize(
        &mut self,
        x: &D::Arith,
        rows: usize,
        cols: usize,
        cfg: &NewtonConfig,
    ) -> Result<D::Arith> {
        <Self as PoolingOps>::l2_normalize(self, x, rows, cols, cfg)
    }
}
