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
mod matmul;
mod open;
mod ops;
mod pool;
pub mod requests;
pub(crate) mod sign;
mod trunc;

use std::sync::Arc;

use crate::adversary::{Adversary, Deviation};
use crate::domain::{Domain, Semi2k};
use crate::error::{ProtocolError, Result};
use crate::gemm::Gemm;
use crate::material::PartyMaterial;
use crate::net::{CountedNet, Net, NetStats};
use crate::ring::FixedPoint;

pub use beaver::FixedWeight;
pub use pool::Pool2d;

/// Offset that moves a signed value of magnitude below 2^62 into `[0, 2^63)`.
pub(crate) const SIGN_OFFSET: u64 = 1 << 62;

/// One party of a committee. `D` is the share domain: [`Semi2k`] (the default) or
/// [`crate::spdz2k::Spdz2k`]; the protocol logic is the same for both.
pub struct Party<N: Net, D: Domain = Semi2k> {
    pub(crate) net: CountedNet<N>,
    material: PartyMaterial<D::Gen>,
    fixed_point: FixedPoint,
    gemm: Arc<dyn Gemm>,
    /// Every value this party has opened, in wire form, when recording (privacy tests).
    transcript: Option<Vec<Vec<u8>>>,
    /// Key shares and opened values (spdz2k), nothing (semi2k).
    pub(crate) state: D::State,
    /// A deviation this party will commit (the protocol lab), and counters of the sites it may hit.
    adversary: Option<Adversary>,
    openings: usize,
    triples_used: usize,
}

impl<N: Net> Party<N> {
    /// A `semi2k` party over `net` with its material; fails unless the committee has at least two parties.
    pub fn new(
        net: N,
        material: PartyMaterial,
        fixed_point: FixedPoint,
        gemm: Arc<dyn Gemm>,
    ) -> Result<Self> {
        Self::with_material(net, material, fixed_point, gemm)
    }
}

impl<N: Net, D: Domain> Party<N, D> {
    /// A party of domain `D` over `net` with its material; fails unless the committee has at least two
    /// parties.
    pub fn with_material(
        net: N,
        material: PartyMaterial<D::Gen>,
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
        let state = D::state(material.generator());
        Ok(Self {
            net: CountedNet::new(net),
            material,
            fixed_point,
            gemm,
            transcript: None,
            state,
            adversary: None,
            openings: 0,
            triples_used: 0,
        })
    }

    /// Makes this party deviate as `adversary` says (the protocol lab; never set in production).
    pub fn set_adversary(&mut self, adversary: Adversary) {
        self.adversary = Some(adversary);
    }

    /// The domain state (key shares, record of opened values).
    pub fn state(&self) -> &D::State {
        &self.state
    }

    /// Counts an opening round; returns the deviation to commit in it, if this is the chosen one.
    pub(crate) fn opening_deviation(&mut self) -> Option<Adversary> {
        let n = self.openings;
        self.openings += 1;
        self.adversary.filter(|a| {
            a.at == n
                && matches!(
                    a.kind,
                    Deviation::FlipShare | Deviation::BadMac | Deviation::SkipRound
                )
        })
    }

    /// A `bad-mac` deviation waiting for a round with ring elements (bit-only rounds carry no such MAC).
    pub(crate) fn defer_deviation(&mut self, a: Adversary) {
        self.adversary = Some(Adversary {
            at: self.openings,
            ..a
        });
    }

    /// Counts a use of a dealt triple; corrupts this party's share of its product if this is the chosen one.
    pub(crate) fn deviate_triple(&mut self, c: &mut D::Arith) {
        if self.triple_hit() {
            let delta = self.adversary.map_or(1, |a| a.delta);
            D::corrupt(c, 0, delta);
        }
    }

    /// As [`Self::deviate_triple`] for an AND triple's bits.
    pub(crate) fn deviate_bit_triple(&mut self, c: &mut D::Bits) {
        if self.triple_hit() {
            D::flip_bit(c, 0);
        }
    }

    fn triple_hit(&mut self) -> bool {
        let n = self.triples_used;
        self.triples_used += 1;
        matches!(self.adversary, Some(a) if a.kind == Deviation::WrongTriple && a.at == n)
    }

    /// Opening rounds so far (where `flip-share`, `bad-mac` and `skip-round` may strike).
    pub fn openings(&self) -> usize {
        self.openings
    }

    /// Dealt triples used so far (where `wrong-triple` may strike).
    pub fn triples_used(&self) -> usize {
        self.triples_used
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

    /// Sends on every message the transport may still hold (see [`Net::flush`]).
    pub fn flush(&mut self) -> Result<()> {
        Ok(self.net.flush()?)
    }

    /// Waits at the transport's start line (see [`Net::start_line`]; not counted as traffic).
    pub fn start_line(&mut self) -> Result<()> {
        Ok(self.net.start_line()?)
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

    /// The material reader.
    pub fn material(&mut self) -> &mut PartyMaterial<D::Gen> {
        &mut self.material
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

    /// A sharing of the public vector `values`: party 0 holds it, the others hold zeros (and, with MACs,
    /// every party its key share times it).
    pub fn share_public(&self, values: &[u64]) -> D::Arith {
        D::public(&self.state, values, self.holds_constants())
    }

    /// Adds the public `values` to the shared `x` (only party 0 changes its value share).
    pub fn add_public(&self, x: &mut D::Arith, values: &[u64]) {
        D::add_public(&self.state, x, values, self.holds_constants());
    }

    /// Shares of an owner's input from the dealt mask `r` (whose plaintext the owner got from the dealer) and
    /// the published `x - r`: `[x] = [r] + (x - r)`. No communication among the parties.
    pub fn input_from_masked(&self, mask: D::Arith, published: &[u64]) -> D::Arith {
        let mut x = mask;
        self.add_public(&mut x, published);
        x
    }
}
