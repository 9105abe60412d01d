//! The `rep3` twin of [`crate::local::run_private`]: three parties, no dealer. The client splits its input
//! and the model owner its weights into replicated shares (here, outside the parties); each party agrees on
//! its PRF keys with its neighbours, sets the model up without communicating, and infers.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use veil_protocols::net::NetStats;
use veil_protocols::rep3::{self, RepShare};
use veil_protocols::semi2k::local::Committee;

use crate::error::{EngineError, Result};
use crate::local::{LocalOptions, LocalRunReport};
use crate::plan::{Plan, WeightMode};
use crate::private::{setup_rep3, StepProfile, WeightShare};
use crate::start_line::StartLine;

/// Per-party results.
struct PartyResult {
    outputs: Vec<RepShare>,
    latencies: Vec<Duration>,
    online: Vec<NetStats>,
    setup: NetStats,
    profile: Vec<StepProfile>,
}

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
    committee.shaping = options.shaping;
    Ok(committee)
}

/// The client's (or model owner's) replicated sharing of `values`.
pub(crate) fn split(values: &[u64], rng: &mut StdRng) -> [RepShare; 3] {
    RepShare::split(values, || rng.next_u64())
}

/// Runs the inferences of `encoded` (already validated and encoded) under `rep3`.
pub(crate) fn run_rep3(
    plan: &Plan,
    encoded: &[Vec<u64>],
    batch: usize,
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let committee = committee(options, plan.fixed_point)?;
    let mut rng = match options.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    let inputs: Vec<[RepShare; 3]> = encoded.iter().map(|x| split(x, &mut rng)).collect();
    // The model owner's shares: per weight, per party.
    let shared: Vec<[(RepShare, Option<RepShare>); 3]> = match plan.mode {
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
    let public: Vec<WeightShare> = match plan.mode {
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
    let start_line = StartLine::new(3, options.timeout);
    let to_protocol = |e: EngineError| match e {
        EngineError::Protocol(p) => p,
        other => veil_protocols::ProtocolError::Material(other.to_string()),
    };
    let parties = rep3::local::run(&committee, options.seed, |party| {
        let me = party.id();
        let weights = shared.iter().map(|w| w[me].clone()).collect();
        let model = setup_rep3(plan, weights, &public).map_err(to_protocol)?;
        let mut result = PartyResult {
            outputs: Vec::new(),
            latencies: Vec::new(),
            online: Vec::new(),
            setup: party.stats().clone(),
            profile: Vec::new(),
        };
        let _leaving = start_line.guard();
        for x in &inputs {
            // Every party starts the clock together (nothing to prepare: no dealer material).
            start_line.wait()?;
            let before = party.stats().clone();
            let started = Instant::now();
            let mut profile = Vec::new();
            let out = model
                .infer(
                    party,
                    x[me].clone(),
                    batch,
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
    let k = encoded.len();
    let mut outputs = Vec::with_capacity(k);
    for i in 0..k {
        let shares: [RepShare; 3] = std::array::from_fn(|p| parties[p].value.outputs[i].clone());
        let words = RepShare::reconstruct(&shares).ok_or_else(|| {
            EngineError::Protocol(veil_protocols::ProtocolError::Verification(
                "the parties' output shares disagree".into(),
            ))
        })?;
        outputs.push(plan.fixed_point.decode(&words));
    }
    Ok(LocalRunReport {
        outputs,
        latencies: (0..k)
            .map(|i| {
                parties
                    .iter()
                    .map(|p| p.value.latencies[i])
                    .max()
                    .unwrap_or_default()
            })
            .collect(),
        preparation: vec![Duration::ZERO; k],
        online: (0..k)
            .map(|i| parties.iter().map(|p| p.value.online[i].clone()).collect())
            .collect(),
        setup: parties.iter().map(|p| p.value.setup.clone()).collect(),
        profiles: parties.iter().map(|p| p.value.profile.clone()).collect(),
        dealer_bytes: 0,
        dealer_elapsed: Duration::ZERO,
        views: parties.iter().map(|p| p.view.clone()).collect(),
    })
}
