//! The op-family traits ([`crate::ops`]) for the `rep3m` party: openings are checked ([`Party::open`]), the
//! sign test and truncation are `rep3`'s versions with no one-sided message
//! (`rep3::Party::sign_select_injected`, `rep3::Party::trunc_injected`), and products are `rep3`'s, proven
//! at the next check (`proof.rs`); after each op that reshares, a check runs at once if the reshares since
//! the last one reach the proof's memory budget (`proof::CHECK_BUDGET`).

use crate::error::Result;
use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::material::MaterialUse;
use crate::net::{Net, NetStats};
use crate::ops::{MpcOps, SignSelect, WeightOps};
use crate::rep3::{RepShare, RepWeight};
use crate::ring::FixedPoint;

use super::Party;

type Rep3<N> = crate::rep3::Party<N>;

impl<N: Net> MpcOps for Party<N> {
    type Share = RepShare;

    fn len(x: &RepShare) -> usize {
        <Rep3<N> as MpcOps>::len(x)
    }
    fn add(x: &RepShare, y: &RepShare) -> RepShare {
        <Rep3<N> as MpcOps>::add(x, y)
    }
    fn sub(x: &RepShare, y: &RepShare) -> RepShare {
        <Rep3<N> as MpcOps>::sub(x, y)
    }
    fn add_assign(x: &mut RepShare, y: &RepShare) {
        <Rep3<N> as MpcOps>::add_assign(x, y)
    }
    fn mul_public(x: &RepShare, p: &[u64]) -> RepShare {
        <Rep3<N> as MpcOps>::mul_public(x, p)
    }
    fn slice(x: &RepShare, range: std::ops::Range<usize>) -> RepShare {
        <Rep3<N> as MpcOps>::slice(x, range)
    }
    fn gather(x: &RepShare, indices: &[usize]) -> RepShare {
        <Rep3<N> as MpcOps>::gather(x, indices)
    }
    fn concat(parts: &[RepShare]) -> RepShare {
        <Rep3<N> as MpcOps>::concat(parts)
    }
    fn gemm_right(gemm: &dyn Gemm, mkn: [usize; 3], x: &RepShare, f: &[u64]) -> RepShare {
        <Rep3<N> as MpcOps>::gemm_right(gemm, mkn, x, f)
    }
    fn lower(lowering: &Lowering, x: &RepShare, batch: usize) -> Result<RepShare> {
        <Rep3<N> as MpcOps>::lower(lowering, x, batch)
    }

    fn id(&self) -> usize {
        Party::id(self)
    }
    fn fixed_point(&self) -> FixedPoint {
        self.inner.fixed_point()
    }
    fn gemm(&self) -> &dyn Gemm {
        self.inner.gemm()
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
        self.inner.share_public(values)
    }
    fn add_public(&self, x: &mut RepShare, values: &[u64]) {
        self.inner.add_public(x, values)
    }
    fn open(&mut self, x: &RepShare) -> Result<Vec<u64>> {
        Party::open(self, x)
    }
    fn mul(&mut self, x: &RepShare, y: &RepShare) -> Result<RepShare> {
        let z = self.inner.mul(x, y)?;
        self.check_if_due()?;
        Ok(z)
    }
    fn matmuls(
        &mut self,
        pairs: &[(&RepShare, &RepShare)],
        dims: &[[usize; 3]],
    ) -> Result<Vec<RepShare>> {
        let z = self.inner.matmuls(pairs, dims)?;
        self.check_if_due()?;
        Ok(z)
    }
    fn trunc(&mut self, z: &RepShare) -> Result<RepShare> {
        let t = self.inner.trunc_injected(z)?;
        self.check_if_due()?;
        Ok(t)
    }
    fn sign_select(&mut self, job: SignSelect<'_, RepShare>) -> Result<Vec<RepShare>> {
        let out = self.inner.sign_select_injected(job)?;
        self.check_if_due()?;
        Ok(out)
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
        let z = self.inner.weight_product(x, batch, lowering, w)?;
        self.check_if_due()?;
        Ok(z)
    }
}
