//! Dealer material: what each online operation consumes, how the dealer deals it, and how a party reads it.
//!
//! A job's material is described by a list of [`Request`]s, a pure function of the public computation (model
//! and batch), never of data. The dealer runs [`deal`] over that list, or [`Dealer`] over it a part at a time
//! (the same corrections, holding one part's), and [`count`] sizes it without dealing; each party reads its
//! share through [`PartyMaterial`], which checks that every operation takes exactly the next request in the
//! list, so a plan and its consumption can never drift apart silently. The last party's corrections may be
//! at hand or fed as it needs them ([`CorrectionFeed`]).

pub mod auth;
pub mod generator;
pub mod kinds;

use serde::{Deserialize, Serialize};

use crate::error::{ProtocolError, Result};
use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::prg::Seed;
pub use generator::{CorrectionFeed, Draws};
use generator::{DealerGenerator, DrawCounter, Generator, Hidden, PartyGenerator};
pub use kinds::{MatTriple, ProductCheck, SignMaterial, Triples, TruncMaterial, WeightTriple};

/// One unit of dealer material, as an online operation will ask for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `len` elementwise Beaver triples.
    Triples {
        /// Count.
        len: usize,
    },
    /// A matrix triple `m x k` by `k x n`.
    MatTriple {
        /// Rows of the left operand.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of the right operand.
        n: usize,
    },
    /// The per-inference triple of a product with fixed weight number `weight` (masked at model setup).
    WeightTriple {
        /// Index of the weight among the model's masked weights.
        weight: usize,
        /// How the activation is lowered to the left operand.
        lowering: Lowering,
        /// Batch size.
        batch: usize,
        /// Output columns (the weight's second dimension).
        outputs: usize,
    },
    /// Truncation of `len` values by `frac_bits`.
    Trunc {
        /// Count.
        len: usize,
        /// Bits shifted out.
        frac_bits: u32,
    },
    /// A sign test of `len` values, optionally fused with truncation, multiplying `payloads` vectors by the bit.
    Sign {
        /// Count.
        len: usize,
        /// Truncate by this many bits in the same opening.
        truncate: Option<u32>,
        /// Vectors multiplied by the sign bit.
        payloads: usize,
    },
    /// A uniform mask `r` of `len` elements whose plaintext the dealer hands to the owner of an input, who
    /// publishes `x - r` (the authenticated input of `spdz2k`).
    Input {
        /// Count.
        len: usize,
    },
    /// The mask `B` of fixed weight number `weight` (`len` elements), dealt in the job's own material with its
    /// plaintext for the model owner, who publishes `W - B` (`spdz2k` model setup).
    WeightMask {
        /// Index of the weight.
        weight: usize,
        /// Count.
        len: usize,
    },
}

/// A party's share of one request's material (`S`: share of ring elements, `B`: share of packed bits).
#[derive(Debug)]
pub enum Material<S = Vec<u64>, B = Vec<u64>> {
    /// See [`Request::Triples`].
    Triples(Triples<S>),
    /// See [`Request::MatTriple`].
    MatTriple(MatTriple<S>),
    /// See [`Request::WeightTriple`].
    WeightTriple(WeightTriple<S>),
    /// See [`Request::Trunc`].
    Trunc(TruncMaterial<S>),
    /// See [`Request::Sign`].
    Sign(SignMaterial<S, B>),
    /// See [`Request::Input`] and [`Request::WeightMask`].
    Input(S),
}

/// `mask(i)` borrows weight `i`'s mask as the role knows it (the dealer's plaintext; nothing on a party).
pub(crate) fn generate<'m, G: Generator>(
    g: &mut G,
    request: &Request,
    mask: &dyn Fn(usize) -> Result<&'m G::Plain>,
    gemm: &dyn Gemm,
) -> Result<Material<G::Share, G::BitShare>> {
    Ok(match *request {
        Request::Triples { len } => Material::Triples(kinds::triples(g, len)?),
        Request::MatTriple { m, k, n } => {
            Material::MatTriple(kinds::mat_triple(g, [m, k, n], gemm)?)
        }
        Request::WeightTriple {
            weight,
            ref lowering,
            batch,
            outputs,
        } => {
            let plain = mask(weight)?;
            Material::WeightTriple(kinds::weight_triple(
                g, lowering, batch, outputs, plain, gemm,
            )?)
        }
        Request::Trunc { len, frac_bits } => Material::Trunc(kinds::trunc(g, len, frac_bits)?.0),
        Request::Sign {
            len,
            truncate,
            payloads,
        } => Material::Sign(kinds::sign(g, len, truncate, payloads)?),
        Request::Input { len } | Request::WeightMask { len, .. } => {
            Material::Input(kinds::weight_mask(g, len).0)
        }
    })
}

/// Shapes (`inner x outputs` element counts) of a model's masked weights, in weight-index order.
pub type MaskShapes = [usize];

/// The dealer's plaintext weight masks of one model. Only the dealer holds these; parties hold shares.
pub struct DealerMasks {
    masks: Vec<Vec<u64>>,
}

/// Deals a model's weight masks from the model seeds (one per party): returns the dealer's plaintexts.
/// No corrections are needed: the masks are uniformly random.
pub fn deal_masks(model_seeds: &[Seed], shapes: &MaskShapes) -> Result<DealerMasks> {
    let mut g = DealerGenerator::new(model_seeds)?;
    Ok(DealerMasks {
        masks: shapes
            .iter()
            .map(|&len| kinds::weight_mask(&mut g, len).1)
            .collect(),
    })
}

/// A party's shares of its model's weight masks, from its model seed.
pub fn party_masks(
    party: usize,
    parties: usize,
    model_seed: &Seed,
    shapes: &MaskShapes,
) -> Result<Vec<Vec<u64>>> {
    let mut g = PartyGenerator::new(party, parties, model_seed, Vec::new())?;
    Ok(shapes
        .iter()
        .map(|&len| kinds::weight_mask(&mut g, len).0)
        .collect())
}

/// Deals a job's material: returns the corrections for the last party (the others need only their seed).
/// The same as one [`Dealer::deal`] call over the whole list.
pub fn deal(
    seeds: &[Seed],
    requests: &[Request],
    masks: &DealerMasks,
    gemm: &dyn Gemm,
) -> Result<Vec<u64>> {
    Dealer::new(seeds, masks)?.deal(requests, gemm)
}

/// A job's dealer that deals its request list a part at a time (an inference, a request), so that it never
/// holds more than one part's corrections.
///
/// Invariant: its generator keeps its PRG state between calls, so dealing a list in consecutive parts, in
/// order, yields exactly the corrections of dealing it at once ([`deal`]), whatever the split; the parties'
/// expansion of their seeds does not depend on how the dealer split its work.
pub struct Dealer<'m> {
    g: DealerGenerator,
    masks: &'m DealerMasks,
}

impl<'m> Dealer<'m> {
    /// The dealer of a job with one job seed per party, over the model's weight masks `masks`.
    pub fn new(seeds: &[Seed], masks: &'m DealerMasks) -> Result<Self> {
        Ok(Self {
            g: DealerGenerator::new(seeds)?,
            masks,
        })
    }

    /// Deals the next `requests` of the job: returns their corrections for the last party, in order.
    pub fn deal(&mut self, requests: &[Request], gemm: &dyn Gemm) -> Result<Vec<u64>> {
        let masks = self.masks;
        let mask = |i: usize| {
            masks
                .masks
                .get(i)
                .ok_or_else(|| ProtocolError::Material(format!("no mask for weight {i}")))
        };
        for request in requests {
            generate(&mut self.g, request, &mask, gemm)?;
        }
        Ok(self.g.take_corrections())
    }
}

/// What dealing `requests` (`semi2k`) draws and how many corrections it deals, counted without dealing
/// (no PRG runs): the size of a job's corrections before they exist.
pub fn count(requests: &[Request]) -> Result<Draws> {
    let mut g = DrawCounter::default();
    for request in requests {
        generate(&mut g, request, &|_| Ok(&Hidden), &crate::gemm::NaiveGemm)?;
    }
    Ok(g.draws)
}

/// How many 64-bit words a share occupies (values and, where the protocol has them, MACs).
pub trait ShareWords {
    /// Words held.
    fn share_words(&self) -> u64;
}

impl ShareWords for Vec<u64> {
    fn share_words(&self) -> u64 {
        self.len() as u64
    }
}

impl ShareWords for auth::AuthVec {
    fn share_words(&self) -> u64 {
        2 * (self.v.len() + self.m.len()) as u64
    }
}

impl ShareWords for auth::AuthBits {
    fn share_words(&self) -> u64 {
        (self.w.len() + self.m.len()) as u64
    }
}

fn len<T: ShareWords>(v: &T) -> u64 {
    v.share_words()
}

impl<S: ShareWords, B: ShareWords> Material<S, B> {
    /// Ring words (64-bit) of this party's share of the material: every vector it holds, summed.
    pub fn words(&self) -> u64 {
        let trunc = |t: &TruncMaterial<S>| len(&t.r) + len(&t.r_shift) + len(&t.r_msb);
        match self {
            Material::Triples(t) => len(&t.a) + len(&t.b) + len(&t.c),
            Material::MatTriple(t) => len(&t.a) + len(&t.b) + len(&t.c),
            Material::WeightTriple(t) => {
                len(&t.a)
                    + len(&t.c)
                    + t.check.as_ref().map_or(0, |c| {
                        len(&c.r) + len(&c.rho) + len(&c.r_rho) + len(&c.b_rho)
                    })
            }
            Material::Trunc(t) => trunc(t),
            Material::Sign(s) => {
                trunc(&s.mask)
                    + len(&s.r_planes)
                    + len(&s.r_pairs)
                    + s.levels
                        .iter()
                        .map(|l| len(&l.a) + len(&l.b) + len(&l.c) + len(&l.b2) + len(&l.c2))
                        .sum::<u64>()
                    + len(&s.u_bits)
                    + len(&s.u)
                    + len(&s.alpha)
                    + len(&s.alpha_u)
            }
            Material::Input(m) => len(m),
        }
    }
}

/// Dealer material a party has consumed so far (the protocol lab's per-step accounting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterialUse {
    /// Requests taken.
    pub requests: u64,
    /// Ring words of material the party holds for them, whether expanded from its seed or read from the
    /// dealer's corrections.
    pub words: u64,
    /// Of those, the words read from the dealer's corrections (last party only): what the dealer ships for
    /// them, 8 bytes each.
    pub dealer_words: u64,
}

impl MaterialUse {
    /// The consumption between an earlier snapshot and this one.
    pub fn since(&self, earlier: &MaterialUse) -> MaterialUse {
        MaterialUse {
            requests: self.requests.saturating_sub(earlier.requests),
            words: self.words.saturating_sub(earlier.words),
            dealer_words: self.dealer_words.saturating_sub(earlier.dealer_words),
        }
    }
}

/// Material expanded ahead of its use, with the dealer words it read (for the per-step accounting at `take`).
type Prepared<G> = (
    Material<<G as Generator>::Share, <G as Generator>::BitShare>,
    u64,
);

/// One party's view of a job's material: its generator and the list of requests it must follow.
///
/// Material is expanded from the party's seed (and, for the last party, the dealer's corrections) either on
/// demand, when an operation takes it, or ahead of time with [`PartyMaterial::prepare`], which is the
/// preprocessing phase: it depends only on the public request list, never on data, so a party can run it
/// before the input arrives. Invariant: `prepared` holds the material of `requests[next..next + prepared.len()]`
/// in order, so preparing never changes what any operation receives.
pub struct PartyMaterial<G: Generator = PartyGenerator> {
    generator: G,
    requests: Vec<Request>,
    next: usize,
    prepared: std::collections::VecDeque<Prepared<G>>,
    used: MaterialUse,
}

impl PartyMaterial {
    /// Material for party `party` of `parties`, from its seed and, for the last party, the corrections.
    pub fn new(
        party: usize,
        parties: usize,
        seed: &Seed,
        corrections: Vec<u64>,
        requests: Vec<Request>,
    ) -> Result<Self> {
        Ok(Self {
            generator: PartyGenerator::new(party, parties, seed, corrections)?,
            requests,
            next: 0,
            prepared: Default::default(),
            used: MaterialUse::default(),
        })
    }
}

impl<G> PartyMaterial<G>
where
    G: Generator<Plain = Hidden>,
    G::Share: ShareWords,
    G::BitShare: ShareWords,
{
    /// Material read through `generator` (any protocol's party side) following `requests`.
    pub fn from_generator(generator: G, requests: Vec<Request>) -> Self {
        Self {
            generator,
            requests,
            next: 0,
            prepared: Default::default(),
            used: MaterialUse::default(),
        }
    }

    /// Expands the material of the next `count` requests not yet expanded (fewer if the plan ends first), so
    /// that the operations taking it find it ready. Returns how many requests were expanded.
    pub fn prepare(&mut self, count: usize) -> Result<usize> {
        let from = self.next + self.prepared.len();
        let to = (from + count).min(self.requests.len());
        for index in from..to {
            let request = self.requests[index].clone();
            let expanded = self.expand(&request, index)?;
            self.prepared.push_back(expanded);
        }
        Ok(to - from)
    }

    /// Requests expanded ahead and not yet taken.
    pub fn prepared(&self) -> usize {
        self.prepared.len()
    }

    /// The material expanded ahead, each with its request, in the order the operations will take it (for
    /// further preprocessing of it; see `Party::precompute_weight_products`).
    pub fn prepared_mut(
        &mut self,
    ) -> impl Iterator<Item = (&Request, &mut Material<G::Share, G::BitShare>)> {
        self.requests[self.next..]
            .iter()
            .zip(self.prepared.iter_mut().map(|(material, _)| material))
    }

    /// Expands request number `index` through the generator; returns it with the dealer words it read.
    fn expand(&mut self, request: &Request, index: usize) -> Result<Prepared<G>> {
        let no_gemm = crate::gemm::NaiveGemm;
        let corrections_before = self.generator.remaining();
        let material = generate(&mut self.generator, request, &|_| Ok(&Hidden), &no_gemm)?;
        if self.generator.short() {
            return Err(ProtocolError::Material(format!(
                "dealer corrections ran out at operation {index}"
            )));
        }
        let dealer_words = corrections_before.saturating_sub(self.generator.remaining()) as u64;
        Ok((material, dealer_words))
    }

    /// The party-side generator (key shares live there for `spdz2k`).
    pub fn generator(&self) -> &G {
        &self.generator
    }

    /// The material consumed so far.
    pub fn used(&self) -> MaterialUse {
        self.used
    }

    /// Takes the material of the next request, which must equal `request`.
    fn take(&mut self, request: Request) -> Result<Material<G::Share, G::BitShare>> {
        match self.requests.get(self.next) {
            Some(expected) if *expected == request => {}
            Some(expected) => {
                return Err(ProtocolError::Material(format!(
                    "operation {} asked for {request:?}, the plan deals {expected:?}",
                    self.next
                )))
            }
            None => {
                return Err(ProtocolError::Material(format!(
                    "operation {} asked for {request:?} after the plan's {} requests",
                    self.next,
                    self.requests.len()
                )))
            }
        }
        let index = self.next;
        self.next += 1;
        let (material, dealer_words) = match self.prepared.pop_front() {
            Some(ready) => ready,
            None => self.expand(&request, index)?,
        };
        self.used.requests += 1;
        self.used.words += material.words();
        self.used.dealer_words += dealer_words;
        Ok(material)
    }

    /// Takes `len` Beaver triples.
    pub fn triples(&mut self, len: usize) -> Result<Triples<G::Share>> {
        match self.take(Request::Triples { len })? {
            Material::Triples(t) => Ok(t),
            other => Err(wrong_kind("Triples", &other)),
        }
    }

    /// Takes one matrix triple.
    pub fn mat_triple(&mut self, m: usize, k: usize, n: usize) -> Result<MatTriple<G::Share>> {
        match self.take(Request::MatTriple { m, k, n })? {
            Material::MatTriple(t) => Ok(t),
            other => Err(wrong_kind("MatTriple", &other)),
        }
    }

    /// Takes the triple of a product with fixed weight number `weight`.
    pub fn weight_triple(
        &mut self,
        weight: usize,
        lowering: Lowering,
        batch: usize,
        outputs: usize,
    ) -> Result<WeightTriple<G::Share>> {
        match self.take(Request::WeightTriple {
            weight,
            lowering,
            batch,
            outputs,
        })? {
            Material::WeightTriple(t) => Ok(t),
            other => Err(wrong_kind("WeightTriple", &other)),
        }
    }

    /// Takes truncation material.
    pub fn trunc(&mut self, len: usize, frac_bits: u32) -> Result<TruncMaterial<G::Share>> {
        match self.take(Request::Trunc { len, frac_bits })? {
            Material::Trunc(t) => Ok(t),
            other => Err(wrong_kind("Trunc", &other)),
        }
    }

    /// Takes sign-test material.
    pub fn sign(
        &mut self,
        len: usize,
        truncate: Option<u32>,
        payloads: usize,
    ) -> Result<SignMaterial<G::Share, G::BitShare>> {
        match self.take(Request::Sign {
            len,
            truncate,
            payloads,
        })? {
            Material::Sign(t) => Ok(t),
            other => Err(wrong_kind("Sign", &other)),
        }
    }

    /// Takes the mask of an owner's input of `len` elements.
    pub fn input(&mut self, len: usize) -> Result<G::Share> {
        match self.take(Request::Input { len })? {
            Material::Input(t) => Ok(t),
            other => Err(wrong_kind("Input", &other)),
        }
    }

    /// Takes the mask of weight number `weight` (`len` elements).
    pub fn weight_mask(&mut self, weight: usize, len: usize) -> Result<G::Share> {
        match self.take(Request::WeightMask { weight, len })? {
            Material::Input(t) => Ok(t),
            other => Err(wrong_kind("WeightMask", &other)),
        }
    }

    /// Checks that every request was consumed and every correction read.
    pub fn finish(&self) -> Result<()> {
        if self.next != self.requests.len()
            || !self.prepared.is_empty()
            || self.generator.remaining() != 0
        {
            return Err(ProtocolError::Material(format!(
                "{} of {} requests consumed, {} corrections unread",
                self.next,
                self.requests.len(),
                self.generator.remaining()
            )));
        }
        Ok(())
    }
}

fn wrong_kind<S, B>(wanted: &str, got: &Material<S, B>) -> ProtocolError {
    let got = match got {
        Material::Triples(_) => "Triples",
        Material::MatTriple(_) => "MatTriple",
        Material::WeightTriple(_) => "WeightTriple",
        Material::Trunc(_) => "Trunc",
        Material::Sign(_) => "Sign",
        Material::Input(_) => "Input",
    };
    ProtocolError::Material(format!("expected {wanted} material, generated {got}"))
}

/// Bytes the dealer sends for a job: a 32-byte seed per party plus 8 bytes per correction.
pub fn dealer_bytes(parties: usize, corrections: usize) -> u64 {
    (parties * 32 + corrections * 8) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowering::Lowering;

    fn plan() -> Vec<Request> {
        vec![
            Request::Triples { len: 5 },
            Request::Sign {
                len: 70,
                truncate: Some(16),
                payloads: 2,
            },
            Request::WeightTriple {
                weight: 0,
                lowering: Lowering::Dense { features: 4 },
                batch: 1,
                outputs: 3,
            },
            Request::Trunc {
                len: 9,
                frac_bits: 16,
            },
        ]
    }

    /// The last party's material (it reads the dealer's corrections), taken request by request, with
    /// `prepare_first` requests expanded ahead.
    fn take_all(prepare_first: usize) -> (Vec<String>, MaterialUse) {
        let seeds: Vec<Seed> = (0..3).map(Seed::random_from).collect();
        let masks = deal_masks(&seeds, &[12]).expect("masks");
        let corrections = deal(&seeds, &plan(), &masks, &crate::gemm::NaiveGemm).expect("deal");
        let mut m = PartyMaterial::new(2, 3, &seeds[2], corrections, plan()).expect("material");
        assert_eq!(
            m.prepare(prepare_first).expect("prepare"),
            prepare_first.min(4)
        );
        let mut seen = vec![
            format!("{:?}", m.triples(5).expect("triples").c),
            format!("{:?}", m.sign(70, Some(16), 2).expect("sign").levels[0].c),
        ];
        let w = m
            .weight_triple(0, Lowering::Dense { features: 4 }, 1, 3)
            .expect("weight triple");
        seen.push(format!("{:?} {:?}", w.a, w.c));
        seen.push(format!("{:?}", m.trunc(9, 16).expect("trunc").r_shift));
        m.finish().expect("everything consumed");
        (seen, m.used())
    }

    /// A plan of `inferences` inferences of [`plan`].
    fn job(inferences: usize) -> Vec<Request> {
        (0..inferences).flat_map(|_| plan()).collect()
    }

    #[test]
    fn dealing_a_job_part_by_part_yields_the_whole_jobs_corrections_and_the_count_is_exact() {
        let seeds: Vec<Seed> = (0..3).map(Seed::random_from).collect();
        let masks = deal_masks(&seeds, &[12]).expect("masks");
        let gemm = crate::gemm::NaiveGemm;
        let whole = deal(&seeds, &job(4), &masks, &gemm).expect("deal");
        // Per inference, then per request: the concatenation is the whole job's.
        let mut dealer = Dealer::new(&seeds, &masks).expect("dealer");
        let per_inference: Vec<Vec<u64>> = (0..4)
            .map(|_| dealer.deal(&plan(), &gemm).expect("inference"))
            .collect();
        assert!(per_inference.windows(2).all(|w| w[0].len() == w[1].len()));
        assert_eq!(per_inference.concat(), whole);
        let mut dealer = Dealer::new(&seeds, &masks).expect("dealer");
        let per_request: Vec<u64> = job(4)
            .iter()
            .flat_map(|r| {
                dealer
                    .deal(std::slice::from_ref(r), &gemm)
                    .expect("request")
            })
            .collect();
        assert_eq!(per_request, whole);
        // The count says where every PRG stands after the job.
        let draws = count(&job(4)).expect("count");
        for (i, skipped) in [(0, draws.others), (1, draws.others), (2, draws.last)] {
            let mut fresh = crate::prg::Prg::new(&seeds[i]);
            fresh.skip(skipped);
            assert_eq!(dealer.g.prgs[i].words(3), fresh.words(3), "PRG {i}");
        }
        // The count knows the size without dealing, pinned.
        let one = count(&plan()).expect("count");
        assert_eq!(one.corrections as usize, per_inference[0].len());
        assert_eq!(count(&job(4)).expect("count"), one.times(4));
        assert_eq!(one.corrections, 676);
        // The parties expand the part-by-part corrections exactly as the whole job's.
        let mut last = PartyMaterial::new(2, 3, &seeds[2], per_request, job(4)).expect("party");
        last.prepare(job(4).len()).expect("expand");
        assert_eq!(last.generator().remaining(), 0);
    }

    /// Corrections fed in chunks of `size`, counting how many were handed out.
    struct ChunkFeed {
        chunks: std::collections::VecDeque<Vec<u64>>,
        fed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl CorrectionFeed for ChunkFeed {
        fn next_chunk(&mut self) -> std::result::Result<Option<Vec<u64>>, String> {
            let next = self.chunks.pop_front();
            if next.is_some() {
                self.fed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(next)
        }
        fn pending(&self) -> u64 {
            self.chunks.iter().map(|c| c.len() as u64).sum()
        }
    }

    #[test]
    fn fed_corrections_expand_like_corrections_at_hand_and_are_read_only_as_needed() {
        let seeds: Vec<Seed> = (0..3).map(Seed::random_from).collect();
        let masks = deal_masks(&seeds, &[12]).expect("masks");
        let gemm = crate::gemm::NaiveGemm;
        let corrections = deal(&seeds, &job(3), &masks, &gemm).expect("deal");
        let at_hand = |prepare: usize| {
            let mut m =
                PartyMaterial::new(2, 3, &seeds[2], corrections.clone(), job(3)).expect("material");
            m.prepare(prepare).expect("prepare");
            let shown: Vec<String> = m.prepared_mut().map(|(_, x)| format!("{x:?}")).collect();
            shown
        };
        for size in [1, 7, 100, corrections.len()] {
            let fed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let feed = ChunkFeed {
                chunks: corrections.chunks(size).map(<[u64]>::to_vec).collect(),
                fed: fed.clone(),
            };
            let generator = PartyGenerator::streamed(3, &seeds[2], Box::new(feed)).expect("fed");
            let mut m = PartyMaterial::from_generator(generator, job(3));
            assert_eq!(m.generator().remaining(), corrections.len());
            // One inference read: not the job's corrections.
            m.prepare(plan().len()).expect("first inference");
            let read = fed.load(std::sync::atomic::Ordering::Relaxed);
            assert!(read < corrections.len().div_ceil(size) || size == corrections.len());
            let first = m.generator().remaining();
            assert_eq!(first, corrections.len() - corrections.len() / 3, "{size}");
            // The material is the same, and everything is consumed at the end.
            let mut all = m;
            all.prepare(job(3).len()).expect("rest");
            let shown: Vec<String> = all.prepared_mut().map(|(_, x)| format!("{x:?}")).collect();
            assert_eq!(shown, at_hand(job(3).len()));
            assert_eq!(all.generator().remaining(), 0);
        }
        // A feed that ends early is a shortage, as with corrections at hand.
        let feed = ChunkFeed {
            chunks: [corrections[..10].to_vec()].into(),
            fed: Default::default(),
        };
        let generator = PartyGenerator::streamed(3, &seeds[2], Box::new(feed)).expect("fed");
        let mut m = PartyMaterial::from_generator(generator, job(3));
        assert!(m.prepare(job(3).len()).is_err());
    }

    #[test]
    fn prepared_material_is_what_the_operations_would_have_expanded() {
        let lazy = take_all(0);
        for ahead in [1, 2, 4, 10] {
            assert_eq!(take_all(ahead), lazy, "{ahead} requests prepared ahead");
        }
    }

    #[test]
    fn unconsumed_prepared_material_fails_the_finish_check_and_order_is_enforced() {
        let seeds: Vec<Seed> = (0..2).map(Seed::random_from).collect();
        let mut m = PartyMaterial::new(0, 2, &seeds[0], Vec::new(), plan()).expect("material");
        m.prepare(2).expect("prepare");
        assert_eq!(m.prepared(), 2);
        assert!(
            m.trunc(9, 16).is_err(),
            "a request out of plan order is refused"
        );
        m.triples(5).expect("triples");
        assert!(
            m.finish().is_err(),
            "prepared but unconsumed material is reported"
        );
    }
}
