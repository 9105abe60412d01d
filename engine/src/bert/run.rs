//! Private sentence embeddings on a local committee (n parties on threads over the in-memory mesh, fed by a
//! dealer): what `veil embed`, `veil bench --workload minilm` and the tests run. The client's part (lookup,
//! sharing, reconstruction) happens here too, outside the parties; see [`super::private`] for what each
//! party learns.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_protocols::material::Request;
use veil_protocols::prg::Seed;
use veil_protocols::rep3::{self, RepShare};
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds};
use veil_protocols::share::{reconstruct, share};
use veil_protocols::spdz2k;

use super::private::PrivateBert;
use crate::error::{EngineError, Result};
use crate::local::{LocalOptions, LocalRunReport, Protocol};
use crate::private::StepProfile;

/// One party's results.
struct PartyResult<O> {
    outputs: Vec<O>,
    latencies: Vec<std::time::Duration>,
    online: Vec<veil_protocols::net::NetStats>,
    profile: Vec<StepProfile>,
}

impl<O> PartyResult<O> {
    fn new() -> Self {
        Self {
            outputs: Vec::new(),
            latencies: Vec::new(),
            online: Vec::new(),
            profile: Vec::new(),
        }
    }
}

fn to_protocol(e: EngineError) -> veil_protocols::ProtocolError {
    match e {
        EngineError::Protocol(p) => p,
        other => veil_protocols::ProtocolError::Material(other.to_string()),
    }
}

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
    let seeds = match options.seed {
        Some(s) => DealtSeeds::from_master(&Seed::random_from(s), n),
        None => DealtSeeds::random(n),
    };
    let mut committee = Committee::new(n, options.gemm.clone());
    committee.fixed_point = fp;
    committee.timeout = options.timeout;
    committee.record_views = options.record_views;
    committee.shaping = options.shaping;
    let d = model.hidden();

    let (parties, dealer_bytes, dealer_elapsed, outputs, views) = match options.protocol {
        Protocol::Semi2k => {
            let mut rng = match options.seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_os_rng(),
            };
            let shares: Vec<Vec<Vec<u64>>> = inputs
                .iter()
                .map(|x| share(x, n, &mut rng))
                .collect::<std::result::Result<_, _>>()?;
            let requests: Vec<Request> = sequences
                .iter()
                .flat_map(|ids| model.requests(ids.len()))
                .collect();
            let run = run(&committee, &requests, &[], &seeds, |party, _| {
                let me = party.id();
                let mut result = PartyResult::new();
                for (ids, x) in sequences.iter().zip(&shares) {
                    let before = party.stats().clone();
                    let started = Instant::now();
                    let mut profile = Vec::new();
                    let out = model
                        .forward(
                            party,
                            x[me].clone(),
                            ids.len(),
                            options.profile.then_some(&mut profile),
                        )
                        .map_err(to_protocol)?;
                    result.latencies.push(started.elapsed());
                    result.online.push(party.stats().since(&before));
                    result.outputs.push(out);
                    result.profile = profile;
                }
                Ok(result)
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
            let views = run.parties.iter().map(|p| p.view.clone()).collect();
            let parties: Vec<PartyResult<()>> = run
                .parties
                .into_iter()
                .map(|p| PartyResult {
                    outputs: Vec::new(),
                    latencies: p.value.latencies,
                    online: p.value.online,
                    profile: p.value.profile,
                })
                .collect();
            (
                parties,
                run.dealer_bytes,
                run.dealer_elapsed,
                outputs,
                views,
            )
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
            let run = rep3::local::run(&committee, options.seed, |party| {
                let me = party.id();
                let mut result = PartyResult::new();
                for (ids, x) in sequences.iter().zip(&shares) {
                    let before = party.stats().clone();
                    let started = Instant::now();
                    let mut profile = Vec::new();
                    let out = model
                        .forward(
                            party,
                            x[me].clone(),
                            ids.len(),
                            options.profile.then_some(&mut profile),
                        )
                        .map_err(to_protocol)?;
                    result.latencies.push(started.elapsed());
                    result.online.push(party.stats().since(&before));
                    result.outputs.push(out);
                    result.profile = profile;
                }
                Ok(result)
            })?;
            let outputs = (0..sequences.len())
                .map(|i| {
                    let s: [RepShare; 3] = std::array::from_fn(|p| run[p].value.outputs[i].clone());
                    let words = RepShare::reconstruct(&s).ok_or_else(|| {
                        EngineError::Protocol(veil_protocols::ProtocolError::Verification(
                            "the parties' output shares disagree".into(),
                        ))
                    })?;
                    Ok(fp.decode(&words))
                })
                .collect::<Result<Vec<_>>>()?;
            let views = run.iter().map(|p| p.view.clone()).collect();
            let parties: Vec<PartyResult<()>> = run
                .into_iter()
                .map(|p| PartyResult {
                    outputs: Vec::new(),
                    latencies: p.value.latencies,
                    online: p.value.online,
                    profile: p.value.profile,
                })
                .collect();
            (parties, 0, std::time::Duration::ZERO, outputs, views)
        }
        Protocol::Spdz2k => {
            let mut requests = Vec::new();
            for ids in sequences {
                requests.push(Request::Input { len: ids.len() * d });
                requests.extend(model.requests(ids.len()));
            }
            let mut dealt = spdz2k::local::deal_job(&committee, &requests, &seeds.job)?;
            let (dealer_bytes, dealer_elapsed) = (dealt.dealer_bytes, dealt.elapsed);
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
                    let mut result = PartyResult::new();
                    for (ids, x) in sequences.iter().zip(&published) {
                        let before = party.stats().clone();
                        let started = Instant::now();
                        let mask = party.material().input(x.len())?;
                        let input = party.input_from_masked(mask, x);
                        let mut profile = Vec::new();
                        let out = model
                            .forward(
                                party,
                                input,
                                ids.len(),
                                options.profile.then_some(&mut profile),
                            )
                            .map_err(to_protocol)?;
                        // No output leaves a party before every value it opened passed the MAC check.
                        party.verify()?;
                        result.latencies.push(started.elapsed());
                        result.online.push(party.stats().since(&before));
                        result.outputs.push(out);
                        result.profile = profile;
                    }
                    Ok(result)
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
            let views = run.parties.iter().map(|p| p.view.clone()).collect();
            let parties: Vec<PartyResult<()>> = run
                .parties
                .into_iter()
                .map(|outcome| outcome.value)
                .map(|p| PartyResult {
                    outputs: Vec::new(),
                    latencies: p.latencies,
                    online: p.online,
                    profile: p.profile,
                })
                .collect();
            (parties, dealer_bytes, dealer_elapsed, outputs, views)
        }
    };
    let k = sequences.len();
    Ok(LocalRunReport {
        outputs,
        latencies: (0..k)
            .map(|i| {
                parties
                    .iter()
                    .map(|p| p.latencies[i])
                    .max()
                    .unwrap_or_default()
            })
            .collect(),
        // The encoder expands its material as it goes (a whole sequence's spdz2k material would take
        // gigabytes if expanded ahead), so its expansion is part of the online time and none is reported here.
        preparation: Vec::new(),
        online: (0..k)
            .map(|i| parties.iter().map(|p| p.online[i].clone()).collect())
            .collect(),
        setup: vec![veil_protocols::net::NetStats::default(); n],
        profiles: parties.iter().map(|p| p.profile.clone()).collect(),
        dealer_bytes,
        dealer_elapsed,
        views,
    })
}
