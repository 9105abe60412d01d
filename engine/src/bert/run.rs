//! Private sentence embeddings on a local committee (n parties on threads over the in-memory mesh, fed by a
//! dealer): what `veil embed`, `veil bench --workload minilm` and the tests run. The client's part (lookup,
//! sharing, reconstruction) happens here too, outside the parties; each party runs the one party program
//! ([`crate::session::PartySession`]) with the encoder as its [`crate::session::Program`]. See
//! [`super::private`] for what each party learns.

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_protocols::domain::Semi2k;
use veil_protocols::prg::Seed;
use veil_protocols::rep3::{self, RepShare};
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds};
use veil_protocols::share::{reconstruct, share};
use veil_protocols::spdz2k::{self, Spdz2k};

use super::private::PrivateBert;
use crate::error::{EngineError, Result};
use crate::local::{report, run_party, to_protocol, LocalOptions, LocalRunReport, Protocol};
use crate::session::job_requests;
use crate::start_line::StartLine;

/// Embeds every token sequence of `sequences` privately, one after another in one job: returns the
/// L2-normalised embeddings (`outputs`, one per sequence) with the costs of each (`latencies`, `online`),
/// the last one's per-step profile when `options.profile`, and the dealer's cost. Under `spdz2k` every
/// embedding is released only after the parties' MAC check and the client's output check pass.
pub fn embed_private(
    model: &PrivateBert,
    sequences: &[Vec<u32>],
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let n = options.parties;
    let fp = model.config().fixed_point;
    let inputs: Vec<Vec<u64>> = sequences
        .iter()
        .map(|ids| model.client_input(ids))
        .collect::<Result<_>>()?;
    let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
    let seeds = match options.seed {
        Some(s) => DealtSeeds::from_master(&Seed::random_from(s), n),
        None => DealtSeeds::random(n),
    };
    let mut committee = Committee::new(n, options.gemm.clone());
    committee.fixed_point = fp;
    committee.timeout = options.timeout;
    committee.record_views = options.record_views;
    committee.link = options.shaping.map(crate::lab::shaping::link);
    let start_line = StartLine::new(n, options.timeout);

    match options.protocol {
        Protocol::Semi2k => {
            let mut rng = match options.seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_os_rng(),
            };
            let shares: Vec<Vec<Vec<u64>>> = inputs
                .iter()
                .map(|x| share(x, n, &mut rng))
                .collect::<std::result::Result<_, _>>()?;
            let requests = job_requests::<Semi2k, _>(model, Vec::new(), &lengths);
            let run = run(&committee, &requests, &[], &seeds, |party, _| {
                let me = party.id();
                let words = shares
                    .iter()
                    .zip(&lengths)
                    .map(|(x, &l)| (x[me].clone(), l));
                run_party(party, model, words, options, None, &start_line).map_err(to_protocol)
            })?;
            let outputs = (0..sequences.len())
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
        Protocol::Rep3 => {
            let committee = crate::local_rep3::committee(options, fp)?;
            let mut rng = match options.seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_os_rng(),
            };
            let shares: Vec<[RepShare; 3]> = inputs
                .iter()
                .map(|x| crate::local_rep3::split(x, &mut rng))
                .collect();
            let start_line = StartLine::new(3, options.timeout);
            let parties = rep3::local::run(&committee, options.seed, |party| {
                let me = party.id();
                let words = shares
                    .iter()
                    .zip(&lengths)
                    .map(|(x, &l)| (x[me].clone(), l));
                crate::local_rep3::run_party(
                    party,
                    words,
                    options,
                    &start_line,
                    |party, input, items, profile| model.forward(party, input, items, profile),
                )
                .map_err(to_protocol)
            })?;
            let outputs = crate::local_rep3::open_outputs(&parties, sequences.len(), fp)?;
            Ok(report(crate::local_rep3::local_run(parties), outputs))
        }
        Protocol::Rep3m => crate::local_rep3m::embed_rep3m(model, &inputs, &lengths, options),
        Protocol::Spdz2k => {
            let requests = job_requests::<Spdz2k, _>(model, Vec::new(), &lengths);
            let mut dealt = spdz2k::local::deal_job(&committee, &requests, &seeds.job)?;
            let (owner_masks, output_key) = (
                std::mem::take(&mut dealt.deal.owner_masks),
                dealt.deal.output_key,
            );
            // The client publishes `x - r` with the masks the dealer gave it.
            if owner_masks.len() != inputs.len() {
                return Err(EngineError::Weights(
                    "the dealer's input masks do not match the sequences".into(),
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
                &committee,
                &requests,
                &seeds.job,
                dealt,
                options.adversary,
                |party| {
                    let adversary = options.adversary.filter(|a| a.party == party.id());
                    let words = published.iter().cloned().zip(lengths.iter().copied());
                    run_party(party, model, words, options, adversary, &start_line)
                        .map_err(to_protocol)
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
    }
}
