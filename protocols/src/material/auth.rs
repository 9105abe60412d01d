//! Authenticated dealer material for `spdz2k` (Cramer, Damgard, Escudero, Scholl, Xing, "SPDZ2k: Efficient MPC
//! mod 2^k with Active Security for Dishonest Majority", CRYPTO 2018), with k = 64 and s = 64.
//!
//! Arithmetic values live in Z_2^128 (k + s bits): a party holds an additive share `x_i` and a MAC share `m_i`
//! with `sum m_i = alpha * sum x_i mod 2^128`, for a MAC key `alpha = sum alpha_i` uniform in Z_2^128 that no
//! party knows. Only `x mod 2^64` is meaningful; the upper bits are whatever the computation left there.
//!
//! Bits (the sign test's binary part) are XOR-shared and authenticated in GF(2^64) with a second key
//! `beta = xor beta_i`: a bit `b` carries the MAC `b * beta`, XOR-shared. This is field SPDZ restricted to the
//! subfield GF(2), so opening a bit still sends one bit, and a forged bit passes a check with probability
//! 2^-64.
//!
//! Dealing follows `generator.rs`: every share (value or MAC) of party `i < n-1` comes from its PRG; the last
//! party reads fixed values from corrections (128-bit values as two words, low first). Uniform values are
//! uniform in all 128 bits, so they mask any opened value completely; values the dealer derives (products,
//! shifts, bits) only need to be right modulo 2^64 and are zero-extended.

use crate::error::Result;
use crate::material::generator::{check_len, Draws, Generator, Hidden, PartyGenerator};
use crate::material::kinds::ProductCheck;
use crate::prg::{Prg, Seed};

/// A party's authenticated share of a vector in Z_2^128: value shares and MAC shares, element by element.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthVec {
    /// Value shares.
    pub v: Vec<u128>,
    /// MAC shares (`alpha * value`, additively shared).
    pub m: Vec<u128>,
}

impl std::fmt::Debug for AuthVec {
    /// Shows the length only: shares are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthVec[{}]", self.v.len())
    }
}

impl AuthVec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.v.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }
}

/// A party's authenticated share of packed bits, in one of two forms:
/// - **full**: `w` XOR-shares 64 bits per word and `m` XOR-shares every bit's MAC in GF(2^64), bit-sliced:
///   `m[64 * word + t]` holds bit `t` of the MACs of the word's 64 bits (`m.len() == 64 * w.len()`; see
///   `spdz2k::gf2`). Dealt bits are full; only full bits can be selected by public bits or enter an AND gate
///   as an operand.
/// - **folded**: `m.len() == w.len()` (and `w` not empty), and `m[word]` is the XOR-share of the word's MACs
///   folded over its valid positions (`gf2::fold` of the MACs with padding positions counted as zero; which
///   positions are valid is the producer's `bits::Layout`). That is all the batched MAC check needs of an
///   opened word, and folding is GF(2)-linear, so folded values can still be XORed (with each other, with
///   public bits, with full values whose folds are cached), appended and opened. The comparison's tree values
///   are kept folded: their per-bit MACs are never written.
///
/// `f` caches a full value's valid-position folds per word (`f.len() == w.len()`), filled by preprocessing
/// for the dealt bits that are XORed into folded values; empty otherwise.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthBits {
    /// Packed value shares.
    pub w: Vec<u64>,
    /// MAC shares: one per bit position (full) or one folded per word (folded).
    pub m: Vec<u64>,
    /// Cached valid-position folds of a full value, or empty.
    pub f: Vec<u64>,
}

impl AuthBits {
    /// Full value and MAC shares, without a folded cache.
    pub fn new(w: Vec<u64>, m: Vec<u64>) -> Self {
        Self {
            w,
            m,
            f: Vec::new(),
        }
    }

    /// Whether this value is in the folded form.
    pub fn is_folded(&self) -> bool {
        !self.w.is_empty() && self.m.len() == self.w.len()
    }

    /// Whether a full value carries its folds.
    pub fn has_folds(&self) -> bool {
        !self.w.is_empty() && self.f.len() == self.w.len()
    }
}

impl std::fmt::Debug for AuthBits {
    /// Shows the size only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthBits[{} words]", self.w.len())
    }
}

/// This party's shares of the two MAC keys.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyShares {
    /// Share of the arithmetic key `alpha` (additive, Z_2^128).
    pub alpha: u128,
    /// Share of the binary key `beta` (XOR, GF(2^64)).
    pub beta: u64,
}

impl std::fmt::Debug for KeyShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyShares(..)")
    }
}

pub(crate) fn to_wide(words: &[u64]) -> Vec<u128> {
    words
        .chunks_exact(2)
        .map(|c| u128::from(c[0]) | (u128::from(c[1]) << 64))
        .collect()
}

fn to_words(wide: &[u128]) -> Vec<u64> {
    wide.iter()
        .flat_map(|&x| [x as u64, (x >> 64) as u64])
        .collect()
}

/// A party's side of authenticated dealing.
pub struct AuthPartyGenerator {
    base: PartyGenerator,
    keys: KeyShares,
    /// Set when the dealer's corrections ran out while drawing a MAC (reported by [`Generator::short`]).
    short: bool,
}

impl AuthPartyGenerator {
    /// Party `party` of `parties`; draws its key shares first (the dealer does the same).
    pub fn new(party: usize, parties: usize, seed: &Seed, corrections: Vec<u64>) -> Result<Self> {
        Ok(Self::with_base(PartyGenerator::new(
            party,
            parties,
            seed,
            corrections,
        )?))
    }

    /// The last party of `parties`, reading its corrections from `feed` as it needs them (see
    /// [`PartyGenerator::streamed`]).
    pub fn streamed(
        parties: usize,
        seed: &Seed,
        feed: Box<dyn crate::material::generator::CorrectionFeed>,
    ) -> Result<Self> {
        Ok(Self::with_base(PartyGenerator::streamed(
            parties, seed, feed,
        )?))
    }

    fn with_base(mut base: PartyGenerator) -> Self {
        let alpha = to_wide(&base.random(2).0)[0];
        let beta = base.random(1).0[0];
        Self {
            base,
            keys: KeyShares { alpha, beta },
            short: false,
        }
    }

    /// This party's key shares.
    pub fn keys(&self) -> KeyShares {
        self.keys
    }

    fn wide_fixed(&mut self, len: usize) -> Result<Vec<u128>> {
        self.base.fixed_wide(len)
    }

    /// A fixed value drawn where the trait cannot fail: on a shortage, zeros of the right length, and the
    /// shortage is remembered.
    fn fixed_or_flag(&mut self, words: usize) -> Vec<u64> {
        match self.base.fixed(&Hidden, words) {
            Ok(w) => w,
            Err(_) => {
                self.short = true;
                vec![0; words]
            }
        }
    }
}

impl Generator for AuthPartyGenerator {
    type Plain = Hidden;
    type Share = AuthVec;
    type BitShare = AuthBits;

    fn random(&mut self, len: usize) -> (AuthVec, Hidden) {
        let v = self.base.random_wide(len);
        let m = match self.base.fixed_wide(len) {
            Ok(m) => m,
            Err(_) => {
                self.short = true;
                vec![0; len]
            }
        };
        (AuthVec { v, m }, Hidden)
    }

    fn random_bits(&mut self, words: usize) -> (AuthBits, Hidden) {
        let w = self.base.random_bits(words).0;
        let m = self.fixed_or_flag(64 * words);
        (AuthBits::new(w, m), Hidden)
    }

    fn fixed(&mut self, _value: &Hidden, len: usize) -> Result<AuthVec> {
        let v = self.wide_fixed(len)?;
        let m = self.wide_fixed(len)?;
        Ok(AuthVec { v, m })
    }

    fn fixed_bits(&mut self, _value: &Hidden, words: usize) -> Result<AuthBits> {
        let w = self.base.fixed(&Hidden, words)?;
        let m = self.base.fixed(&Hidden, 64 * words)?;
        Ok(AuthBits::new(w, m))
    }

    fn remaining(&self) -> usize {
        self.base.remaining_corrections()
    }

    fn product_check(
        &mut self,
        [rows, inner, outputs]: [usize; 3],
        _mask: &Hidden,
    ) -> Result<Option<ProductCheck<AuthVec>>> {
        let (r, _) = self.random(rows * outputs);
        let (rho, _) = self.random(outputs);
        let r_rho = self.fixed(&Hidden, rows)?;
        let b_rho = self.fixed(&Hidden, inner)?;
        Ok(Some(ProductCheck {
            r,
            rho,
            r_rho,
            b_rho,
            weight_rho: None,
        }))
    }

    fn short(&self) -> bool {
        self.short
    }

    fn derive<const K: usize>(
        _inputs: [&Hidden; K],
        _f: impl FnOnce([&[u64]; K]) -> Vec<u64>,
    ) -> Hidden {
        Hidden
    }
}

/// The dealer's side of authenticated dealing: every party's PRG and both MAC keys.
pub struct AuthDealerGenerator {
    prgs: Vec<Prg>,
    corrections: Vec<u64>,
    alpha: u128,
    beta: u64,
}

impl AuthDealerGenerator {
    /// One PRG per party; draws each party's key shares as the parties do.
    pub fn new(seeds: &[Seed]) -> Result<Self> {
        let base = crate::material::generator::DealerGenerator::new(seeds)?;
        let mut prgs = base.prgs;
        let (mut alpha, mut beta) = (0u128, 0u64);
        for prg in &mut prgs {
            alpha = alpha.wrapping_add(to_wide(&prg.words(2))[0]);
            beta ^= prg.words(1)[0];
        }
        Ok(Self {
            prgs,
            corrections: Vec::new(),
            alpha,
            beta,
        })
    }

    /// The corrections for the last party, in the order it will read them.
    pub fn into_corrections(self) -> Vec<u64> {
        self.corrections
    }

    /// The corrections dealt since the last call (or since the start), in order; the PRGs keep their state.
    pub fn take_corrections(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.corrections)
    }

    /// The arithmetic MAC key. Only the trusted dealer knows it; it hands it to the output's recipient after
    /// the job, so that the recipient can check the output shares it receives.
    pub fn alpha(&self) -> u128 {
        self.alpha
    }

    fn wide_correction(&mut self, values: &[u128]) {
        let last = self.prgs.len() - 1;
        let mut correction = values.to_vec();
        for prg in &mut self.prgs[..last] {
            let drawn = to_wide(&prg.words(2 * values.len()));
            for (c, d) in correction.iter_mut().zip(drawn) {
                *c = c.wrapping_sub(d);
            }
        }
        self.corrections.extend(to_words(&correction));
    }

    fn word_correction_xor(&mut self, words: &[u64]) {
        let last = self.prgs.len() - 1;
        let mut correction = words.to_vec();
        for prg in &mut self.prgs[..last] {
            crate::bits::xor_assign(&mut correction, &prg.words(words.len()));
        }
        self.corrections.extend(correction);
    }

    fn macs(&self, values: &[u128]) -> Vec<u128> {
        values.iter().map(|&x| x.wrapping_mul(self.alpha)).collect()
    }

    /// The bit-sliced MACs of packed bits (see [`AuthBits`]): MAC word `t` of a packed word `w` is `w` where
    /// bit `t` of `beta` is set, else zero.
    fn bit_macs(&self, words: &[u64]) -> Vec<u64> {
        let keys: [u64; 64] = std::array::from_fn(|t| ((self.beta >> t) & 1).wrapping_neg());
        let mut out = Vec::with_capacity(64 * words.len());
        for &w in words {
            out.extend(keys.iter().map(|&k| k & w));
        }
        out
    }
}

impl Generator for AuthDealerGenerator {
    type Plain = Vec<u128>;
    type Share = AuthVec;
    type BitShare = AuthBits;

    fn random(&mut self, len: usize) -> (AuthVec, Vec<u128>) {
        let mut plain = vec![0u128; len];
        for prg in &mut self.prgs {
            for (p, x) in plain.iter_mut().zip(to_wide(&prg.words(2 * len))) {
                *p = p.wrapping_add(x);
            }
        }
        let macs = self.macs(&plain);
        self.wide_correction(&macs);
        (AuthVec::default(), plain)
    }

    fn random_bits(&mut self, words: usize) -> (AuthBits, Vec<u128>) {
        let mut plain = vec![0u64; words];
        for prg in &mut self.prgs {
            crate::bits::xor_assign(&mut plain, &prg.words(words));
        }
        let macs = self.bit_macs(&plain);
        self.word_correction_xor(&macs);
        (
            AuthBits::default(),
            plain.into_iter().map(u128::from).collect(),
        )
    }

    fn fixed(&mut self, value: &Vec<u128>, len: usize) -> Result<AuthVec> {
        check_len(value.len(), len)?;
        self.wide_correction(value);
        let macs = self.macs(value);
        self.wide_correction(&macs);
        Ok(AuthVec::default())
    }

    fn product_check(
        &mut self,
        [rows, inner, outputs]: [usize; 3],
        mask: &Vec<u128>,
    ) -> Result<Option<ProductCheck<AuthVec>>> {
        check_len(mask.len(), inner * outputs)?;
        let (_, r) = self.random(rows * outputs);
        let (_, rho) = self.random(outputs);
        self.fixed(&projected(&r, &rho), rows)?;
        self.fixed(&projected(mask, &rho), inner)?;
        Ok(Some(ProductCheck::default()))
    }

    fn fixed_bits(&mut self, value: &Vec<u128>, words: usize) -> Result<AuthBits> {
        check_len(value.len(), words)?;
        let w: Vec<u64> = value.iter().map(|&x| x as u64).collect();
        self.word_correction_xor(&w);
        let macs = self.bit_macs(&w);
        self.word_correction_xor(&macs);
        Ok(AuthBits::default())
    }

    fn derive<const K: usize>(
        inputs: [&Vec<u128>; K],
        f: impl FnOnce([&[u64]; K]) -> Vec<u64>,
    ) -> Vec<u128> {
        let low: [Vec<u64>; K] = inputs.map(|v| v.iter().map(|&x| x as u64).collect());
        let refs: [&[u64]; K] = std::array::from_fn(|i| low[i].as_slice());
        f(refs).into_iter().map(u128::from).collect()
    }
}

/// `x · rho` modulo 2^128 for `x` with `rho.len()` columns, row by row.
fn projected(x: &[u128], rho: &[u128]) -> Vec<u128> {
    x.chunks_exact(rho.len().max(1))
        .map(|row| {
            row.iter()
                .zip(rho)
                .fold(0u128, |acc, (&a, &b)| acc.wrapping_add(a.wrapping_mul(b)))
        })
        .collect()
}

/// What the dealer of a `spdz2k` job produces.
pub struct AuthDeal {
    /// Corrections for the last party.
    pub corrections: Vec<u64>,
    /// Plaintext masks (modulo 2^64) of every [`Request::Input`] and [`Request::WeightMask`], in request
    /// order: the owners of those inputs get them, and publish `value - mask`.
    pub owner_masks: Vec<Vec<u64>>,
    /// The arithmetic MAC key, for the output's recipient to check the output shares it receives.
    pub output_key: u128,
}

impl std::fmt::Debug for AuthDeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuthDeal[{} corrections, {} owner masks]",
            self.corrections.len(),
            self.owner_masks.len()
        )
    }
}

/// Deals a `spdz2k` job: authenticated material for `requests`, with weight masks and input masks dealt in
/// the same list (so that one MAC key covers them all). The same as one [`AuthDealer::deal`] call over the
/// whole list.
pub fn deal(
    seeds: &[Seed],
    requests: &[crate::material::Request],
    gemm: &dyn crate::gemm::Gemm,
) -> Result<AuthDeal> {
    AuthDealer::new(seeds)?.deal(requests, gemm)
}

/// A `spdz2k` job's dealer that deals its request list a part at a time, so that it never holds more than
/// one part's corrections (and the model's weight masks, which later products need).
///
/// Invariant: its generator keeps its PRG state between calls, so consecutive parts, in order, yield
/// exactly what dealing the list at once yields ([`deal`]): the concatenated corrections and owner masks.
/// [`AuthDealer::owner_masks`] moves the state exactly as [`AuthDealer::deal`] does, so the two can be mixed.
pub struct AuthDealer {
    g: AuthDealerGenerator,
    /// The plaintext mask of each weight dealt so far (a `WeightTriple` checks its product against it).
    weight_masks: Vec<Option<Vec<u128>>>,
}

impl AuthDealer {
    /// The dealer of a job with one job seed per party (draws the MAC keys as the parties do).
    pub fn new(seeds: &[Seed]) -> Result<Self> {
        Ok(Self {
            g: AuthDealerGenerator::new(seeds)?,
            weight_masks: Vec::new(),
        })
    }

    /// Deals the owner mask of an `Input` or `WeightMask` request (its MAC corrections stay in the
    /// generator); `None` for any other request.
    fn owner_mask(&mut self, request: &crate::material::Request) -> Option<Vec<u64>> {
        use crate::material::{kinds, Request};
        match *request {
            Request::Input { len } => {
                let (_, plain) = kinds::weight_mask(&mut self.g, len);
                Some(plain.iter().map(|&x| x as u64).collect())
            }
            Request::WeightMask { weight, len } => {
                let (_, plain) = kinds::weight_mask(&mut self.g, len);
                let owner = plain.iter().map(|&x| x as u64).collect();
                if self.weight_masks.len() <= weight {
                    self.weight_masks.resize(weight + 1, None);
                }
                self.weight_masks[weight] = Some(plain);
                Some(owner)
            }
            _ => None,
        }
    }

    /// Deals the next `requests` of the job: their corrections for the last party and the owner masks of
    /// their `Input` and `WeightMask` requests, in order.
    pub fn deal(
        &mut self,
        requests: &[crate::material::Request],
        gemm: &dyn crate::gemm::Gemm,
    ) -> Result<AuthDeal> {
        let mut owner_masks = Vec::new();
        for request in requests {
            if let Some(mask) = self.owner_mask(request) {
                owner_masks.push(mask);
                continue;
            }
            let weight_masks = &self.weight_masks;
            let mask = |i: usize| {
                weight_masks.get(i).and_then(Option::as_ref).ok_or_else(|| {
                    crate::ProtocolError::Material(format!("no mask for weight {i}"))
                })
            };
            crate::material::generate(&mut self.g, request, &mask, gemm)?;
        }
        Ok(AuthDeal {
            corrections: self.g.take_corrections(),
            owner_masks,
            output_key: self.g.alpha(),
        })
    }

    /// The owner masks of the next `requests` (what [`AuthDealer::deal`] would return in
    /// [`AuthDeal::owner_masks`]) without dealing the rest: the PRGs skip every other request's draws
    /// (counted by [`count`]), and no correction is kept. The client's material at a small fraction of the
    /// dealing's cost and memory.
    pub fn owner_masks(&mut self, requests: &[crate::material::Request]) -> Result<Vec<Vec<u64>>> {
        let mut masks = Vec::new();
        let mut skipped = Draws::default();
        for request in requests {
            if matches!(
                request,
                crate::material::Request::Input { .. }
                    | crate::material::Request::WeightMask { .. }
            ) {
                skipped.skip(&mut self.g.prgs);
                skipped = Draws::default();
                masks.extend(self.owner_mask(request));
                drop(self.g.take_corrections());
            } else {
                skipped = skipped.plus(count(std::slice::from_ref(request))?);
            }
        }
        skipped.skip(&mut self.g.prgs);
        Ok(masks)
    }
}

/// What dealing `requests` (`spdz2k`, after the MAC keys) draws and how many corrections it deals, counted
/// without dealing (no PRG runs): the size of a job's corrections before they exist.
pub fn count(requests: &[crate::material::Request]) -> Result<Draws> {
    let mut g = AuthDrawCounter::default();
    for request in requests {
        crate::material::generate(&mut g, request, &|_| Ok(&Hidden), &crate::gemm::NaiveGemm)?;
    }
    Ok(g.draws)
}

/// An authenticated dealer that deals nothing: it counts what [`AuthDealerGenerator`] would draw and
/// correct. Invariant: it counts exactly the draws of [`AuthDealerGenerator`]'s methods (tested against
/// real dealing).
#[derive(Debug, Default)]
struct AuthDrawCounter {
    draws: Draws,
}

impl AuthDrawCounter {
    /// `words` words drawn from every PRG.
    fn everyone(&mut self, words: usize) {
        self.draws.others += words as u64;
        self.draws.last += words as u64;
    }

    /// `words` correction words (drawn from every PRG but the last).
    fn corrected(&mut self, words: usize) {
        self.draws.others += words as u64;
        self.draws.corrections += words as u64;
    }
}

impl Generator for AuthDrawCounter {
    type Plain = Hidden;
    type Share = AuthVec;
    type BitShare = AuthBits;

    fn random(&mut self, len: usize) -> (AuthVec, Hidden) {
        self.everyone(2 * len);
        self.corrected(2 * len);
        (AuthVec::default(), Hidden)
    }

    fn random_bits(&mut self, words: usize) -> (AuthBits, Hidden) {
        self.everyone(words);
        self.corrected(64 * words);
        (AuthBits::default(), Hidden)
    }

    fn fixed(&mut self, _value: &Hidden, len: usize) -> Result<AuthVec> {
        self.corrected(4 * len);
        Ok(AuthVec::default())
    }

    fn fixed_bits(&mut self, _value: &Hidden, words: usize) -> Result<AuthBits> {
        self.corrected(65 * words);
        Ok(AuthBits::default())
    }

    fn product_check(
        &mut self,
        [rows, inner, outputs]: [usize; 3],
        _mask: &Hidden,
    ) -> Result<Option<ProductCheck<AuthVec>>> {
        self.random(rows * outputs);
        self.random(outputs);
        self.fixed(&Hidden, rows)?;
        self.fixed(&Hidden, inner)?;
        Ok(Some(ProductCheck::default()))
    }

    fn derive<const K: usize>(
        _inputs: [&Hidden; K],
        _f: impl FnOnce([&[u64]; K]) -> Vec<u64>,
    ) -> Hidden {
        Hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowering::Lowering;
    use crate::material::Request;

    /// A model setup (two weight masks) and `inferences` inferences, each an input and some operations,
    /// one of them a product checked by projection.
    fn job(inferences: usize) -> (Vec<Request>, Vec<Request>) {
        let setup = vec![
            Request::WeightMask { weight: 0, len: 12 },
            Request::WeightMask {
                weight: 1,
                len: 128 * 600,
            },
        ];
        let one = [
            Request::Input { len: 4 },
            Request::WeightTriple {
                weight: 0,
                lowering: Lowering::Dense { features: 4 },
                batch: 1,
                outputs: 3,
            },
            Request::Sign {
                len: 70,
                truncate: Some(16),
                payloads: 2,
            },
            Request::WeightTriple {
                weight: 1,
                lowering: Lowering::Dense { features: 128 },
                batch: 1,
                outputs: 600,
            },
            Request::Triples { len: 5 },
            Request::Trunc {
                len: 9,
                frac_bits: 16,
            },
            Request::MatTriple { m: 2, k: 3, n: 4 },
        ];
        let mut all = setup.clone();
        (0..inferences).for_each(|_| all.extend(one.iter().cloned()));
        (setup, all)
    }

    #[test]
    fn dealing_part_by_part_or_skipping_to_the_owner_masks_matches_the_whole_job() {
        let seeds: Vec<Seed> = (10..13).map(Seed::random_from).collect();
        let gemm = crate::gemm::NaiveGemm;
        let (setup, all) = job(3);
        assert!(crate::material::kinds::uses_product_check(1, 128, 600));
        let whole = deal(&seeds, &all, &gemm).expect("whole job");
        assert_eq!(whole.owner_masks.len(), 2 + 3);
        // Setup, then one inference at a time.
        let mut dealer = AuthDealer::new(&seeds).expect("dealer");
        let mut parts = vec![dealer.deal(&setup, &gemm).expect("setup")];
        let one = &all[setup.len()..setup.len() + (all.len() - setup.len()) / 3];
        parts.extend((0..3).map(|_| dealer.deal(one, &gemm).expect("inference")));
        let corrections: Vec<u64> = parts.iter().flat_map(|p| p.corrections.clone()).collect();
        let owner: Vec<Vec<u64>> = parts.iter().flat_map(|p| p.owner_masks.clone()).collect();
        assert_eq!(corrections, whole.corrections);
        assert_eq!(owner, whole.owner_masks);
        assert!(parts.iter().all(|p| p.output_key == whole.output_key));
        assert_eq!(parts[1].corrections.len(), parts[3].corrections.len());
        // The owner's pass skips everything else and finds the same masks.
        let mut skipping = AuthDealer::new(&seeds).expect("dealer");
        assert_eq!(
            skipping.owner_masks(&all).expect("owner"),
            whole.owner_masks
        );
        // Skipping moves the PRGs where dealing does: dealing after a skipped inference is unchanged.
        let mut mixed = AuthDealer::new(&seeds).expect("dealer");
        let mut owner = mixed.owner_masks(&setup).expect("setup masks");
        owner.extend(mixed.owner_masks(one).expect("first inference"));
        let rest = mixed.deal(one, &gemm).expect("second inference");
        assert_eq!(rest.corrections, parts[2].corrections);
        owner.extend(rest.owner_masks);
        assert_eq!(owner[..], whole.owner_masks[..4]);
        // The count is exact.
        let counted = count(&all).expect("count");
        assert_eq!(counted.corrections as usize, whole.corrections.len());
        assert_eq!(
            count(one).expect("count").corrections as usize,
            parts[1].corrections.len()
        );
    }

    #[test]
    fn the_last_party_expands_part_by_part_corrections_like_the_whole_jobs() {
        let seeds: Vec<Seed> = (20..22).map(Seed::random_from).collect();
        let gemm = crate::gemm::NaiveGemm;
        let (_, all) = job(2);
        let mut dealer = AuthDealer::new(&seeds).expect("dealer");
        let corrections: Vec<u64> = all
            .iter()
            .flat_map(|r| {
                dealer
                    .deal(std::slice::from_ref(r), &gemm)
                    .expect("request")
                    .corrections
            })
            .collect();
        assert_eq!(
            corrections,
            deal(&seeds, &all, &gemm).expect("whole").corrections
        );
        let generator = AuthPartyGenerator::new(1, 2, &seeds[1], corrections).expect("last");
        let mut material = crate::material::PartyMaterial::from_generator(generator, all.clone());
        assert_eq!(material.prepare(all.len()).expect("expand"), all.len());
        assert_eq!(material.generator().remaining(), 0);
    }
}
