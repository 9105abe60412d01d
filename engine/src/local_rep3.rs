//! The `rep3` twin of [`crate::local::run_private`] (and the owners' side that `rep3m` shares with it):
//! three parties, no dealer. The client splits its input
//! and the model owner its weights into replicated shares (here, outside the parties); each party agrees on
//! its PRF keys with its neighbours, sets the model up without communicating, and infers.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use veil_protocols::rep3::{self, RepShare};
use veil_protocols::semi2k::local::{Committee, PartyOutcome};

use veil_protocols::ops::MpcOps;
use veil_protocols::semi2k::local::LocalRun;

use crate::error::{EngineError, Result};
use crate::local::{report, to_protocol, LocalOptions, LocalRunReport, PartyResult};
use crate::plan::{Plan, WeightMode};
use crate::private::{setup_rep3, StepProfile, WeightShare};
use crate::session::infer_replicated;
use crate::start_line::StartLine;

/// A committee of three for `options` (which must ask for 3 parties).
pub(crate) fn committee(
    options: &LocalOptions,
    fp: veil_protocols::ring::FixedPoint,
) -> Result<Committee> {
    if options.parties != 3 {
        return Err(EngineError::Protocol(
            veil_protocols::ProtocolError::Committee(format!(
                "rep3 runs exactly 3 parties, not {}",
                options.parties
            )),
        ));
    }
    let mut committee = Committee::new(3, options.gemm.clone());
    committee.fixed_point = fp;
    committee.timeout = options.timeout;
    committee.record_views = options.record_views;
    committee.link = options.shaping.map(crate::lab::shaping::link);
    Ok(committee)
}

/// The client's (or model owner's) replicated sharing of `values`.
pub(crate) fn split(values: &[u64], rng: &mut StdRng) -> [RepShare; 3] {
    RepShare::split(values, || rng.next_u64())
}

/// The owners' side of a replicated job: the client's sharing of each input and the model owner's of each
/// weight (per weight, per party), or the public weights.
pub(crate) struct OwnerShares {
    pub(crate) inputs: Vec<[RepShare; 3]>,
    pub(crate) shared: Vec<[(RepShare, Option<RepShare>); 3]>,
    pub(crate) public: Vec<WeightShare>,
}

/// The owners' randomness: seeded by `options.seed` if set, else from the operating system.
pub(crate) fn rng(options: &LocalOptions) -> StdRng {
    match options.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    }
}

/// Splits `encoded` and the plan's weights into replicated shares.
pub(crate) fn owner_shares(
    plan: &Plan,
    encoded: &[Vec<u64>],
    options: &LocalOptions,
) -> OwnerShares {
    let mut rng = rng(options);
    let inputs: Vec<[RepShare; 3]> = encoded.iter().map(|x| split(x, &mut rng)).collect();
    let shared = match plan.mode {
        WeightMode::Shared => plan
            .weights
            .iter()
            .map(|w| {
                let m = split(&w.matrix, &mut rng);
                let b = w.bias.as_ref().map(|b| split(b, &mut rng));
                std::array::from_fn(|i| (m[i].clone(), b.as_ref().map(|b| b[i].clone())))
            })
            .collect(),
        WeightMode::Public => Vec::new(),
    };
    let public = match plan.mode {
        WeightMode::Public => plan
            .weights
            .iter()
            .map(|w| WeightShare {
                matrix: w.matrix.clone(),
                bias: w.bias.clone(),
            })
            .collect(),
        WeightMode::Shared => Vec::new(),
    };
    OwnerShares {
        inputs,
        shared,
        public,
    }
}

/// Runs the inferences of `encoded` (already validated and encoded) under `rep3`.
pub(crate) fn run_rep3(
    plan: &Plan,
    encoded: &[Vec<u64>],
    batch: usize,
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let committee = committee(options, plan.fixed_point)?;
    let owners = owner_shares(plan, encoded, options);
    let start_line = StartLine::new(3, options.timeout);
    let parties = rep3::local::run(&committee, options.seed, |party| {
        let me = party.id();
        let weights = owners.shared.iter().map(|w| w[me].clone()).collect();
        let model = setup_rep3(plan, weights, &owners.public).map_err(to_protocol)?;
        let words = owners.inputs.iter().map(|x| (x[me].clone(), batch));
        run_party(
            party,
            words,
            options,
            &start_line,
            |party, input, items, profile| model.infer(party, input, items, profile),
        )
        .map_err(to_protocol)
    })?;
    let outputs = open_outputs(&parties, encoded.len(), plan.fixed_point)?;
    Ok(report(local_run(parties), outputs))
}

/// A rep3 run in the shape of a dealer-backed one: no dealer bytes, no dealer time.
pub(crate) fn local_run<T>(parties: Vec<PartyOutcome<T>>) -> LocalRun<T> {
    LocalRun {
        parties,
        dealer_bytes: 0,
        dealer_elapsed: Duration::ZERO,
    }
}

/// The client's reconstruction of each of `k` outputs from the three parties' shares.
pub(crate) fn open_outputs(
    parties: &[PartyOutcome<PartyResult<RepShare>>],
    k: usize,
    fp: veil_protocols::ring::FixedPoint,
) -> Result<Vec<Vec<f32>>> {
    (0..k)
        .map(|i| {
            let shares: [RepShare; 3] = std::array::from_fn(|p| {
                parties
                    .get(p)
                    .and_then(|o| o.value.outputs.get(i))
                    .cloned()
                    .unwrap_or_default()
            });
            let words = RepShare::reconstruct(&shares).ok_or_else(|| {
                EngineError::Protocol(veil_protocols::ProtocolError::Verification(
                    "the parties' output shares disagree".into(),
                ))
            })?;
            Ok(fp.decode(&words))
        })
        .collect()
}

/// One rep3 (or rep3m) party's program over its inputs: every party starts each inference's clock together
/// (there is nothing to prepare: no dealer material), then `infer` runs it.
pub(crate) fn run_party<P: MpcOps<Share = RepShare>>(
    party: &mut P,
    inputs: impl IntoIterator<Item = (RepShare, usize)>,
    options: &LocalOptions,
    start_line: &StartLine,
    infer: impl Fn(&mut P, RepShare, usize, Option<&mut Vec<StepProfile>>) -> Result<RepShare>,
) -> Result<PartyResult<RepShare>> {
    let mut result = PartyResult {
        outputs: Vec::new(),
        preparation: Vec::new(),
        latencies: Vec::new(),
        online: Vec::new(),
        setup: party.stats().clone(),
        profile: Vec::new(),
    };
    let _leaving = start_line.guard();
    for (input, items) in inputs {
        start_line.wait()?;
        let done = infer_replicated(party, input, items, options.profile, &infer)?;
        result.latencies.push(done.latency);
        result.preparation.push(Duration::ZERO);
        result.online.push(done.online);
        result.outputs.push(done.output);
        result.profile = done.profile;
    }
    Ok(result)
}
