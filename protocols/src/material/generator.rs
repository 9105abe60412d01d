//! The two sides of correlated randomness: the dealer, who knows every party's seed and so every plaintext, and a
//! party, who knows only its own share.
//!
//! Each kind of material is written once, generically over [`Generator`] (see `kinds.rs`): the same code runs on
//! the dealer, where it yields the corrections for the last party, and on each party, where it yields that
//! party's shares. Invariant that makes this work: both sides draw from the per-party PRGs in exactly the same
//! order, because they run the same code on the same request list.
//!
//! Dealing rule: party `i < n-1` draws every share it holds from PRG `i`. The last party draws *random* values
//! from PRG `n-1` too, and reads *fixed* values (those computed from other values, such as `c = a·b`) from the
//! dealer's explicit corrections. So the dealer sends a seed to every party and corrections to the last only.

use crate::error::{ProtocolError, Result};
use crate::material::kinds::ProductCheck;
use crate::prg::{Prg, Seed};

/// What a role knows about the plaintext of a correlated value.
///
/// The share types are associated so that one description of each kind serves both protocols: `semi2k` shares
/// are bare ring words (`Vec<u64>`), `spdz2k` shares carry MACs (see `auth.rs`). Derivations always see the
/// plaintext modulo 2^64 (the value ring); a wider dealer lifts their results back.
pub trait Generator {
    /// The dealer's plaintext, or nothing on a party ([`Hidden`]).
    type Plain;
    /// A party's share of a vector of ring elements.
    type Share: Default + std::fmt::Debug + Send;
    /// A party's share of packed bits.
    type BitShare: Default + std::fmt::Debug + Send;

    /// Fresh uniform value of `len` ring elements: returns this role's share and the plaintext.
    fn random(&mut self, len: usize) -> (Self::Share, Self::Plain);
    /// Fresh uniform bits in `words` words, XOR-shared.
    fn random_bits(&mut self, words: usize) -> (Self::BitShare, Self::Plain);
    /// Additive shares of a value the dealer computed.
    fn fixed(&mut self, value: &Self::Plain, len: usize) -> Result<Self::Share>;
    /// XOR shares of bits the dealer computed, in `words` words.
    fn fixed_bits(&mut self, value: &Self::Plain, words: usize) -> Result<Self::BitShare>;
    /// Corrections not consumed yet (parties; zero on the dealer).
    fn remaining(&self) -> usize {
        0
    }
    /// Whether a draw that could not report failure found the corrections exhausted.
    fn short(&self) -> bool {
        false
    }
    /// The material of a product check (see [`ProductCheck`]) for a fixed weight whose mask is `mask`, in
    /// roles whose shares carry MACs; `None` (nothing drawn) in the others.
    fn product_check(
        &mut self,
        _rows_inner_outputs: [usize; 3],
        _mask: &Self::Plain,
    ) -> Result<Option<ProductCheck<Self::Share>>> {
        Ok(None)
    }
    /// Computes a plaintext from plaintexts (modulo 2^64); a party skips the computation.
    fn derive<const K: usize>(
        inputs: [&Self::Plain; K],
        f: impl FnOnce([&[u64]; K]) -> Vec<u64>,
    ) -> Self::Plain;
}

/// A party's knowledge of a dealt plaintext: none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hidden;

/// Where the last party's corrections come from when they are not all at hand: the dealer's stream, read as
/// the party needs them (so that the party holds about one inference's corrections, not the job's).
pub trait CorrectionFeed: Send {
    /// The next chunk of corrections, in order, waiting for it if needed; `Ok(None)` once every announced
    /// word was returned. An error (the stream broke, the dealer stalled) says why.
    fn next_chunk(&mut self) -> std::result::Result<Option<Vec<u64>>, String>;
    /// Words announced and not returned yet.
    fn pending(&self) -> u64;
}

/// A party's side: its own PRG, and (last party only) the dealer's corrections, held or fed.
pub struct PartyGenerator {
    prg: Prg,
    is_last: bool,
    /// Corrections at hand; those before `cursor` were read.
    corrections: Vec<u64>,
    cursor: usize,
    /// Where more corrections come from (last party, streamed), if anywhere.
    feed: Option<Box<dyn CorrectionFeed>>,
}

impl PartyGenerator {
    /// Party `party` of `parties`; `corrections` must be empty except for the last party.
    pub fn new(party: usize, parties: usize, seed: &Seed, corrections: Vec<u64>) -> Result<Self> {
        if parties < 2 || party >= parties {
            return Err(ProtocolError::Committee(format!(
                "party {party} of {parties}"
            )));
        }
        let is_last = party + 1 == parties;
        if !is_last && !corrections.is_empty() {
            return Err(ProtocolError::Material(format!(
                "party {party} received corrections; only the last party does"
            )));
        }
        Ok(Self {
            prg: Prg::new(seed),
            is_last,
            corrections,
            cursor: 0,
            feed: None,
        })
    }

    /// The last party of `parties`, reading its corrections from `feed` as it needs them (the same
    /// material as [`PartyGenerator::new`] with every correction at hand).
    pub fn streamed(parties: usize, seed: &Seed, feed: Box<dyn CorrectionFeed>) -> Result<Self> {
        let mut g = Self::new(parties.saturating_sub(1), parties, seed, Vec::new())?;
        g.feed = Some(feed);
        Ok(g)
    }

    /// Corrections not consumed yet (at hand, and announced by the feed).
    pub fn remaining_corrections(&self) -> usize {
        let fed = self.feed.as_ref().map_or(0, |f| f.pending());
        (self.corrections.len() - self.cursor)
            .saturating_add(usize::try_from(fed).unwrap_or(usize::MAX))
    }

    /// Reads from the feed until `len` corrections are at hand (or the feed ends); the corrections read
    /// already are dropped first, so what is held stays about one chunk.
    fn ensure(&mut self, len: usize) -> Result<()> {
        while self.corrections.len() - self.cursor < len {
            let Some(feed) = self.feed.as_mut() else {
                return Ok(());
            };
            let chunk = feed
                .next_chunk()
                .map_err(|e| ProtocolError::Material(format!("dealer corrections: {e}")))?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            if self.cursor == self.corrections.len() {
                self.corrections = chunk;
            } else {
                self.corrections.drain(..self.cursor);
                self.corrections.extend_from_slice(&chunk);
            }
            self.cursor = 0;
        }
        Ok(())
    }

    /// The next `len` corrections.
    fn next_corrections(&mut self, len: usize) -> Result<&[u64]> {
        self.ensure(len)?;
        let end = self.cursor + len;
        let left = self.remaining_corrections();
        let slice = self.corrections.get(self.cursor..end).ok_or_else(|| {
            ProtocolError::Material(format!(
                "dealer corrections ran out: {len} needed, {left} left"
            ))
        })?;
        self.cursor = end;
        Ok(slice)
    }

    pub(crate) fn take_corrections(&mut self, len: usize) -> Result<Vec<u64>> {
        Ok(self.next_corrections(len)?.to_vec())
    }

    /// `len` fresh uniform elements of Z_2^128 from this party's PRG (two words each, low first: the same
    /// stream as `random(2 * len)` paired up).
    pub(crate) fn random_wide(&mut self, len: usize) -> Vec<u128> {
        self.prg.wide(len)
    }

    /// `len` elements of Z_2^128 drawn as `fixed(2 * len)` is (PRG, or corrections for the last party),
    /// paired up low word first, without an intermediate copy.
    pub(crate) fn fixed_wide(&mut self, len: usize) -> Result<Vec<u128>> {
        if !self.is_last {
            return Ok(self.prg.wide(len));
        }
        let slice = self.next_corrections(2 * len)?;
        Ok(crate::material::auth::to_wide(slice))
    }
}

impl Generator for PartyGenerator {
    type Plain = Hidden;
    type Share = Vec<u64>;
    type BitShare = Vec<u64>;

    fn remaining(&self) -> usize {
        self.remaining_corrections()
    }

    fn random(&mut self, len: usize) -> (Vec<u64>, Hidden) {
        (self.prg.words(len), Hidden)
    }

    fn random_bits(&mut self, words: usize) -> (Vec<u64>, Hidden) {
        (self.prg.words(words), Hidden)
    }

    fn fixed(&mut self, _value: &Hidden, len: usize) -> Result<Vec<u64>> {
        if self.is_last {
            self.take_corrections(len)
        } else {
            Ok(self.prg.words(len))
        }
    }

    fn fixed_bits(&mut self, value: &Hidden, words: usize) -> Result<Vec<u64>> {
        self.fixed(value, words)
    }

    fn derive<const K: usize>(
        _inputs: [&Hidden; K],
        _f: impl FnOnce([&[u64]; K]) -> Vec<u64>,
    ) -> Hidden {
        Hidden
    }
}

/// The dealer's side: every party's PRG; it collects the last party's corrections.
pub struct DealerGenerator {
    pub(crate) prgs: Vec<Prg>,
    corrections: Vec<u64>,
}

impl DealerGenerator {
    /// One PRG per party, from the seeds the dealer hands out.
    pub fn new(seeds: &[Seed]) -> Result<Self> {
        if seeds.len() < 2 {
            return Err(ProtocolError::Committee(format!(
                "dealing for {} parties; at least 2 needed",
                seeds.len()
            )));
        }
        Ok(Self {
            prgs: seeds.iter().map(Prg::new).collect(),
            corrections: Vec::new(),
        })
    }

    /// The corrections for the last party, in the order it will read them.
    pub fn into_corrections(self) -> Vec<u64> {
        self.corrections
    }

    /// The corrections dealt since the last call (or since the start), in order; the generator keeps its
    /// PRG state, so the next draws continue the same streams.
    pub fn take_corrections(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.corrections)
    }

    fn last(&self) -> usize {
        self.prgs.len() - 1
    }
}

impl Generator for DealerGenerator {
    type Plain = Vec<u64>;
    type Share = Vec<u64>;
    type BitShare = Vec<u64>;

    fn random(&mut self, len: usize) -> (Vec<u64>, Vec<u64>) {
        let mut plain = vec![0u64; len];
        for prg in &mut self.prgs {
            crate::ring::add_assign(&mut plain, &prg.words(len));
        }
        (Vec::new(), plain)
    }

    fn random_bits(&mut self, words: usize) -> (Vec<u64>, Vec<u64>) {
        let mut plain = vec![0u64; words];
        for prg in &mut self.prgs {
            crate::bits::xor_assign(&mut plain, &prg.words(words));
        }
        (Vec::new(), plain)
    }

    fn fixed(&mut self, value: &Vec<u64>, len: usize) -> Result<Vec<u64>> {
        check_len(value.len(), len)?;
        let mut correction = value.clone();
        let last = self.last();
        for prg in &mut self.prgs[..last] {
            crate::ring::sub_assign(&mut correction, &prg.words(len));
        }
        self.corrections.extend_from_slice(&correction);
        Ok(Vec::new())
    }

    fn fixed_bits(&mut self, value: &Vec<u64>, words: usize) -> Result<Vec<u64>> {
        check_len(value.len(), words)?;
        let mut correction = value.clone();
        let last = self.last();
        for prg in &mut self.prgs[..last] {
            crate::bits::xor_assign(&mut correction, &prg.words(words));
        }
        self.corrections.extend_from_slice(&correction);
        Ok(Vec::new())
    }

    fn derive<const K: usize>(
        inputs: [&Vec<u64>; K],
        f: impl FnOnce([&[u64]; K]) -> Vec<u64>,
    ) -> Vec<u64> {
        f(inputs.map(|v| v.as_slice()))
    }
}

pub(crate) fn check_len(got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(ProtocolError::Material(format!(
            "dealer computed {got} elements where {want} are dealt"
        )))
    }
}

/// What dealing some requests draws, learnt without dealing them (see [`DrawCounter`]): every party but the
/// last draws the same words, so two counts describe every PRG.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Draws {
    /// Words drawn from the PRG of each party but the last (by the dealer and by that party alike).
    pub others: u64,
    /// Words drawn from the last party's PRG.
    pub last: u64,
    /// Correction words dealt to the last party.
    pub corrections: u64,
}

impl Draws {
    /// The draws of `self` then `other`.
    pub fn plus(self, other: Draws) -> Draws {
        Draws {
            others: self.others.saturating_add(other.others),
            last: self.last.saturating_add(other.last),
            corrections: self.corrections.saturating_add(other.corrections),
        }
    }

    /// The draws of `times` repetitions.
    pub fn times(self, times: u64) -> Draws {
        Draws {
            others: self.others.saturating_mul(times),
            last: self.last.saturating_mul(times),
            corrections: self.corrections.saturating_mul(times),
        }
    }

    /// Moves every PRG of a dealer past these draws (`prgs[..n-1]` by `others`, the last by `last`).
    pub(crate) fn skip(&self, prgs: &mut [Prg]) {
        if let Some((last, others)) = prgs.split_last_mut() {
            others.iter_mut().for_each(|p| p.skip(self.others));
            last.skip(self.last);
        }
    }
}

/// A `semi2k` dealer that deals nothing: it counts what [`DealerGenerator`] would draw and correct, at no
/// cost (no PRG runs, no plaintext is computed). Invariant: it counts exactly the draws of
/// [`DealerGenerator`]'s methods (tested against real dealing).
#[derive(Debug, Default)]
pub struct DrawCounter {
    /// What was counted so far.
    pub draws: Draws,
}

impl Generator for DrawCounter {
    type Plain = Hidden;
    type Share = Vec<u64>;
    type BitShare = Vec<u64>;

    fn random(&mut self, len: usize) -> (Vec<u64>, Hidden) {
        self.draws.others += len as u64;
        self.draws.last += len as u64;
        (Vec::new(), Hidden)
    }

    fn random_bits(&mut self, words: usize) -> (Vec<u64>, Hidden) {
        self.random(words)
    }

    fn fixed(&mut self, _value: &Hidden, len: usize) -> Result<Vec<u64>> {
        self.draws.others += len as u64;
        self.draws.corrections += len as u64;
        Ok(Vec::new())
    }

    fn fixed_bits(&mut self, value: &Hidden, words: usize) -> Result<Vec<u64>> {
        self.fixed(value, words)
    }

    fn derive<const K: usize>(
        _inputs: [&Hidden; K],
        _f: impl FnOnce([&[u64]; K]) -> Vec<u64>,
    ) -> Hidden {
        Hidden
    }
}
