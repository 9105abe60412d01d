//! One local committee for every program whose forward pass is written once over the op families (an
//! encoder, an imported graph): n parties on threads over the in-memory mesh, fed by a dealer thread under
//! `semi2k` and `spdz2k`, three parties and no dealer under `rep3`, each running the one party program
//! ([`crate::session::PartySession`], or [`crate::session::infer_replicated`] under `rep3`). The client's
//! part (sharing the encoded inputs, reconstructing and decoding the outputs) happens here, outside the
//! parties. `rep3m` is the caller's (its runner is `crate::local_rep3m`).
//!
//! Invariant: under `spdz2k` an output is decoded only after the parties' MAC check and the client's output
//! check ([`spdz2k::local::open_outputs`]) passed.

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_protocols::domain::Semi2k;
use veil_protocols::ops::Approximations;
use veil_protocols::prg::Seed;
use veil_protocols::rep3::{self, RepShare};
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds};
use veil_protocols::share::{reconstruct, share};
use veil_protocols::spdz2k::{self, Spdz2k};

use crate::error::{EngineError, Result};
use crate::local::{report, run_party, to_protocol, LocalOptions, LocalRunReport, Protocol};
use crate::private::StepProfile;
use crate::session::{job_requests, Program};
use crate::start_line::StartLine;

/// A program with one forward pass over any op family: what [`run_local`] runs under each protocol.
pub trait Forward: Program<Semi2k> + Program<Spdz2k> {
    /// The forward pass on this party's share of one inference of `items` units.
    fn forward_on<P: Approximations>(
        &self,
        party: &mut P,
        input: P::Share,
        items: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<P::Share>;
}

/// `Forward` for a type whose inherent `forward` already takes any op family.
macro_rules! forward_by_inherent_method {
    ($($ty:ty),+) => {$(
        impl Forward for $ty {
            fn forward_on<P: Approximations>(
                &self,
                party: &mut P,
                input: P::Share,
                items: usize,
                profile: Option<&mut Vec<StepProfile>>,
            ) -> Result<P::Share> {
                self.forward(party, input, items, profile)
            }
        }
    )+};
}

forward_by_inherent_method!(crate::bert::private::PrivateBert, crate::onnx::PrivateGraph);

/// Runs `program` privately on every encoded input of `inputs` (`items[i]` units each), one inference after
/// another in one job, under `options.protocol` (`semi2k`, `spdz2k` or `rep3`); returns the decoded outputs
/// (fixed point `fp`) with each one's costs.
pub fn run_local<M: Forward>(
    program: &M,
    fp: veil_protocols::ring::FixedPoint,
    inputs: &[Vec<u64>],
    items: &[usize],
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    if inputs.len() != items.len() {
        return Err(EngineError::Weights(
            "every input needs its number of items".into(),
        ));
    }
    let n = options.parties;
    let mut rng = match options.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    let start_line = StartLine::new(n, options.timeout);
    match options.protocol {
        Protocol::Rep3 => {
            let committee = crate::local_rep3::committee(options, fp)?;
            let shares: Vec<[RepShare; 3]> = inputs
                .iter()
                .map(|x| crate::local_rep3::split(x, &mut rng))
                .collect();
            let parties = rep3::local::run(&committee, options.seed, |party| {
                let me = party.id();
                let words = shares.iter().zip(items).map(|(x, &l)| (x[me].clone(), l));
                crate::local_rep3::run_party(
                    party,
                    words,
                    options,
                    &start_line,
                    |party, input, items, profile| program.forward_on(party, input, items, profile),
                )
                .map_err(to_protocol)
            })?;
            let outputs = crate::local_rep3::open_outputs(&parties, inputs.len(), fp)?;
            Ok(report(crate::local_rep3::local_run(parties), outputs))
        }
        Protocol::Semi2k | Protocol::Spdz2k => {
            let seeds = match options.seed {
                Some(s) => DealtSeeds::from_master(&Seed::random_from(s), n),
                None => DealtSeeds::random(n),
            };
            let mut committee = Committee::new(n, options.gemm.clone());
            committee.fixed_point = fp;
            committee.timeout = options.timeout;
            committee.record_views = options.record_views;
            committee.link = options.shaping.map(crate::lab::shaping::link);
            if options.protocol == Protocol::Semi2k {
                run_semi2k(
                    program, fp, inputs, items, options, &committee, &seeds, &mut rng,
                )
            } else {
                run_spdz2k(program, fp, inputs, items, options, &committee, &seeds)
            }
        }
        Protocol::Rep3m => Err(EngineError::Protocol(
            veil_protocols::ProtocolError::Committee(
                "rep3m runs through its own runner (crate::local_rep3m)".into(),
            ),
        )),
    }
}

/// `semi2k`: the client splits each input into additive shares, one per party.
#[allow(clippy::too_many_arguments)]
fn run_semi2k<M: Forward>(
    program: &M,
    fp: veil_protocols::ring::FixedPoint,
    inputs: &[Vec<u64>],
    items: &[usize],
    options: &LocalOptions,
    committee: &Committee,
    seeds: &DealtSeeds,
    rng: &mut StdRng,
) -> Result<LocalRunReport> {
    let n = options.parties;
    let start_line = StartLine::new(n, options.timeout);
    let shares: Vec<Vec<Vec<u64>>> = inputs
        .iter()
        .map(|x| share(x, n, rng))
        .collect::<std::result::Result<_, _>>()?;
    let requests = job_requests::<Semi2k, _>(program, Vec::new(), items);
    let run = run(committee, &requests, &[], seeds, |party, _| {
        let me = party.id();
        let words = shares.iter().zip(items).map(|(x, &l)| (x[me].clone(), l));
        run_party(party, program, words, options, None, &start_line).map_err(to_protocol)
    })?;
    let outputs = (0..inputs.len())
        .map(|i| {
            let s: Vec<Vec<u64>> = run
                .parties
                .iter()
                .map(|p| p.value.outputs[i].clone())
                .collect();
            Ok(fp.decode(&reconstruct(&s)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(report(run, outputs))
}

/// `spdz2k`: the client publishes `x - r` for the mask `r` the dealer gave it, and checks the outputs.
fn run_spdz2k<M: Forward>(
    program: &M,
    fp: veil_protocols::ring::FixedPoint,
    inputs: &[Vec<u64>],
    items: &[usize],
    options: &LocalOptions,
    committee: &Committee,
    seeds: &DealtSeeds,
) -> Result<LocalRunReport> {
    let start_line = StartLine::new(options.parties, options.timeout);
    let requests = job_requests::<Spdz2k, _>(program, Vec::new(), items);
    let mut dealt = spdz2k::local::deal_job(committee, &requests, &seeds.job)?;
    let (owner_masks, output_key) = (
        std::mem::take(&mut dealt.deal.owner_masks),
        dealt.deal.output_key,
    );
    if owner_masks.len() != inputs.len() {
        return Err(EngineError::Weights(
            "the dealer's input masks do not match the inputs".into(),
        ));
    }
    let published: Vec<Vec<u64>> = inputs
        .iter()
        .zip(&owner_masks)
        .map(|(x, r)| {
            if x.len() == r.len() {
                Ok(veil_protocols::ring::sub(x, r))
            } else {
                Err(EngineError::Weights(
                    "an input mask has the wrong length".into(),
                ))
            }
        })
        .collect::<Result<_>>()?;
    let run = spdz2k::local::run(
        committee,
        &requests,
        &seeds.job,
        dealt,
        options.adversary,
        |party| {
            let adversary = options.adversary.filter(|a| a.party == party.id());
            let words = published.iter().cloned().zip(items.iter().copied());
            run_party(party, program, words, options, adversary, &start_line).map_err(to_protocol)
        },
    )?;
    let per_party: Vec<&[_]> = run
        .parties
        .iter()
        .map(|p| p.value.outputs.as_slice())
        .collect();
    let outputs: Vec<_> = spdz2k::local::open_outputs(&per_party, output_key)?
        .iter()
        .map(|opened| fp.decode(opened))
        .collect();
    Ok(report(run, outputs))
}
