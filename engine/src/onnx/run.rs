//! An imported graph on a local committee: n parties on threads over the in-memory mesh (fed by a dealer
//! thread under `semi2k` and `spdz2k`; three parties without a dealer under `rep3`), each running the one
//! party program ([`crate::session::PartySession`]) with the graph as its [`Program`]. What `veil bench
//! --model X.onnx` and the tests run. The client's part (encoding, sharing, reconstruction) happens here.

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_protocols::domain::{Domain, Semi2k};
use veil_protocols::material::Request;
use veil_protocols::net::Net;
use veil_protocols::prg::Seed;
use veil_protocols::rep3::{self, RepShare};
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds};
use veil_protocols::semi2k::Party;
use veil_protocols::share::{reconstruct, share};
use veil_protocols::spdz2k::{self, Spdz2k};

use super::private::PrivateGraph;
use crate::error::{EngineError, Result};
use crate::local::{report, run_party, to_protocol, LocalOptions, LocalRunReport, Protocol};
use crate::private::StepProfile;
use crate::session::{job_requests, Program};
use crate::start_line::StartLine;

impl<D: Domain> Program<D> for PrivateGraph {
    fn input_len(&self, items: usize) -> usize {
        items * self.graph().input_len()
    }
    fn requests(&self, items: usize) -> Vec<Request> {
        PrivateGraph::requests(self, items)
    }
    fn run<N: Net>(
        &self,
        party: &mut Party<N, D>,
        input: D::Arith,
        items: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<D::Arith> {
        self.forward(party, input, items, profile)
    }
}

/// Runs `model` privately on every input of `inputs` (each the graph's whole input, f32), one inference
/// after another in one job; returns the decoded outputs with each one's costs. Under `spdz2k` an output is
/// released only after the parties' MAC check and the client's output check pass.
pub fn infer_private(
    model: &PrivateGraph,
    inputs: &[Vec<f32>],
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let n = options.parties;
    let fp = model.config().fixed_point;
    let encoded: Vec<Vec<u64>> = inputs
        .iter()
        .map(|x| model.client_input(x))
        .collect::<Result<_>>()?;
    let items = vec![1usize; inputs.len()];
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
    let mut rng = match options.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    match options.protocol {
        Protocol::Semi2k => {
            let shares: Vec<Vec<Vec<u64>>> = encoded
                .iter()
                .map(|x| share(x, n, &mut rng))
                .collect::<std::result::Result<_, _>>()?;
            let requests = job_requests::<Semi2k, _>(model, Vec::new(), &items);
            let run = run(&committee, &requests, &[], &seeds, |party, _| {
                let me = party.id();
                let words = shares.iter().map(|x| (x[me].clone(), 1));
                run_party(party, model, words, options, None, &start_line).map_err(to_protocol)
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
        Protocol::Rep3 => {
            let committee = crate::local_rep3::committee(options, fp)?;
            let shares: Vec<[RepShare; 3]> = encoded
                .iter()
                .map(|x| crate::local_rep3::split(x, &mut rng))
                .collect();
            let start_line = StartLine::new(3, options.timeout);
            let parties = rep3::local::run(&committee, options.seed, |party| {
                let me = party.id();
                let words = shares.iter().map(|x| (x[me].clone(), 1));
                crate::local_rep3::run_party(
                    party,
                    words,
                    options,
                    &start_line,
                    |party, input, items, profile| model.forward(party, input, items, profile),
                )
                .map_err(to_protocol)
            })?;
            let outputs = crate::local_rep3::open_outputs(&parties, inputs.len(), fp)?;
            Ok(report(crate::local_rep3::local_run(parties), outputs))
        }
        Protocol::Spdz2k => {
            let requests = job_requests::<Spdz2k, _>(model, Vec::new(), &items);
            let mut dealt = spdz2k::local::deal_job(&committee, &requests, &seeds.job)?;
            let (owner_masks, output_key) = (
                std::mem::take(&mut dealt.deal.owner_masks),
                dealt.deal.output_key,
            );
            if owner_masks.len() != encoded.len() {
                return Err(EngineError::Weights(
                    "the dealer's input masks do not match the inputs".into(),
                ));
            }
            let published: Vec<Vec<u64>> = encoded
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
                    let words = published.iter().cloned().map(|w| (w, 1));
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
        Protocol::Rep3m => Err(EngineError::Onnx(super::OnnxError::Graph(
            "imported graphs run under semi2k, spdz2k and rep3, not rep3m yet".into(),
        ))),
    }
}
