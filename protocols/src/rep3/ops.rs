//! The op-family traits ([`crate::ops`]) for the `rep3` party.

use crate::error::Result;
use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::material::MaterialUse;
use crate::net::{Net, NetStats};
use crate::ops::{MpcOps, SignSelect, WeightOps};
use crate::ring::FixedPoint;

use super::{Party, RepShare, RepWeight};

impl<N: Net> MpcOps for Party<N> {
    type Share = RepShare;

    fn len(x: &RepShare) -> usize {
        x.len()
    }
    fn add(x: &RepShare, y: &RepShare) -> RepShare {
        x.add(y)
    }
    fn sub(x: &RepShare, y: &RepShare) -> RepShare {
        x.sub(y)
    }
    fn add_assign(x: &mut RepShare, y: &RepShare) {
        x.add_assign(y)
    }
    fn mul_public(x: &RepShare, p: &[u64]) -> RepShare {
        x.mul_public(p)
    }
    fn slice(x: &RepShare, range: std::ops::Range<usize>) -> RepShare {
        x.map(|c| c[range.clone()].to_vec())
    }
    fn gather(x: &RepShare, indices: &[usize]) -> RepShare {
        x.map(|c| indices.iter().map(|&i| c[i]).collect())
    }
    fn concat(parts: &[RepShare]) -> RepShare {
        RepShare::concat(parts)
    }
    fn gemm_right(gemm: &dyn Gemm, mkn: [usize; 3], x: &RepShare, f: &[u64]) -> RepShare {
        x.gemm_right(gemm, mkn, f)
    }
    fn lower(lowering: &Lowering, x: &RepShare, batch: usize) -> Result<RepShare> {
        x.lower(lowering, batch)
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
        MaterialUse::default()
    }
    fn share_public(&self, values: &[u64]) -> RepShare {
        Party::share_public(self, values)
    }
    fn add_public(&self, x: &mut RepShare, values: &[u64]) {
        Party::add_public(self, x, values)
    }
    fn open(&mut self, x: &RepShare) -> Result<Vec<u64>> {
        Party::open(self, x)
    }
    fn mul(&mut self, x: &RepShare, y: &RepShare) -> Result<RepShare> {
        Party::mul(self, x, y)
    }
    fn matmuls(
        &mut self,
        pairs: &[(&RepShare, &RepShare)],
        dims: &[[usize; 3]],
    ) -> Result<Vec<RepShare>> {
        Party::matmuls(self, pairs, dims)
    }
    fn trunc(&mut self, z: &RepShare) -> Result<RepShare> {
        Party::trunc(self, z)
    }
    fn linear_trunc(
        &mut self,
        mkn: [usize; 3],
        x: &RepShare,
        w: &[u64],
        bias: &[u64],
        addend: Option<&RepShare>,
    ) -> Result<RepShare> {
        Party::linear_trunc(self, mkn, x, w, bias, addend)
    }
    fn sign_select(&mut self, job: SignSelect<'_, RepShare>) -> Result<Vec<RepShare>> {
        Party::sign_select(self, job)
    }
}

impl<N: Net> WeightOps for Party<N> {
    type Weight = RepWeight;

    fn weight_product(
        &mut self,
        x: &RepShare,
        batch: usize,
        lowering: Lowering,
        w: &RepWeight,
    ) -> Result<RepShare> {
        Party::weight_product(self, x, batch, lowering, w)
    }
}
