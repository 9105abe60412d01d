//! `semi2k`: n-party additive secret sharing over Z_2^64 with a dealer, secure against up to n-1
//! honest-but-curious parties given a dealer that colludes with none of them.
//!
//! A [`Party`] is one participant's state: its link to the others, its dealer material, the fixed-point
//! parameters and the local matrix kernel. Every party of a committee runs the same sequence of calls (SPMD);
//! operations are data-oblivious, so the sequence, message sizes and rounds depend only on public shapes.
//!
//! Operations live one concept per file: `open` (revealing), `beaver` (products), `trunc`
//! (truncation), `sign` (comparison, DReLU, ReLU), `pool` (max, max pooling, argmax).

mod beaver;
pub mod local;
mod open;
mod pool;
pub mod requests;
mod sign;
mod trunc;

use std::sync::Arc;

use crate::error::{ProtocolError, Result};
use crate::gemm::Gemm;
use crate::material::PartyMaterial;
use crate::net::{CountedNet, Net, NetStats};
use crate::ring::FixedPoint;

pub use beaver::FixedWeight;
pub use pool::Pool2d;

/// Offset that moves a signed value of magnitude below 2^62 into `[0, 2^63)`.
pub(crate) const SIGN_OFFSET: u64 = 1 << 62;

/// One party of a `semi2k` committee.
pub struct Party<N: Net> {
    net: CountedNet<N>,
    material: PartyMaterial,
    fixed_point: FixedPoint,
    gemm: Arc<dyn Gemm>,
    /// Every value this party has opened, in wire form, when recording (privacy tests).
    transcript: Option<Vec<Vec<u8>>>,
}

impl<N: Net> Party<N> {
    /// A party over `net` with its material; fails unless the committee has at least two parties.
    pub fn new(
        net: N,
        material: PartyMaterial,
        fixed_point: FixedPoint,
        gemm: Arc<dyn Gemm>,
    ) -> Result<Self> {
        if net.parties() < 2 || net.party() >= net.parties() {
            return Err(ProtocolError::Committee(format!(
                "party {} of {}: a committee needs at least 2 parties",
                net.party(),
                net.parties()
            )));
        }
        Ok(Self {
            net: CountedNet::new(net),
            material,
            fixed_point,
            gemm,
            transcript: None,
        })
    }

    /// This party's index.
    pub fn id(&self) -> usize {
        self.net.party()
    }

    /// Committee size.
    pub fn parties(&self) -> usize {
        self.net.parties()
    }

    /// Fixed-point parameters.
    pub fn fixed_point(&self) -> FixedPoint {
        self.fixed_point
    }

    /// The local matrix kernel.
    pub fn gemm(&self) -> &dyn Gemm {
        self.gemm.as_ref()
    }

    /// Communication so far.
    pub fn stats(&self) -> &NetStats {
        self.net.stats()
    }

    /// Dealer material consumed so far.
    pub fn material_use(&self) -> crate::material::MaterialUse {
        self.material.used()
    }

    /// The transport.
    pub fn net(&self) -> &N {
        self.net.inner()
    }

    /// Starts recording every opened value: what this party learns beyond its own shares.
    pub fn record_transcript(&mut self) {
        self.transcript = Some(Vec::new());
    }

    /// The opened values recorded so far, one entry per round, each part in wire form (bit vectors packed,
    /// ring elements little-endian).
    pub fn transcript(&self) -> &[Vec<u8>] {
        self.transcript.as_deref().unwrap_or(&[])
    }

    /// Ends the job: fails unless every dealt request was consumed.
    pub fn finish(self) -> Result<(N, NetStats)> {
        self.material.finish()?;
        let stats = self.net.stats().clone();
        Ok((self.net.into_inner(), stats))
    }

    /// Whether this party adds public constants (party 0 does, the others do not).
    pub(crate) fn holds_constants(&self) -> bool {
        self.id() == 0
    }

    /// A sharing of the public vector `values`: party 0 holds it, the others hold zeros.
    pub fn share_public(&self, values: &[u64]) -> Vec<u64> {
        if self.holds_constants() {
            values.to_vec()
        } else {
            vec![0; values.len()]
        }
    }

    /// Adds the public `values` to the shared `x` (only party 0 changes its share).
    pub fn add_public(&self, x: &mut [u64], values: &[u64]) {
        if self.holds_constants() {
            crate::ring::add_assign(x, values);
        }
    }
}
