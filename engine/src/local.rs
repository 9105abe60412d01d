//! Private inference of a whole committee in one process, over the in-memory network: what tests, the
//! in-memory benchmark and the demo run. The client's and the model owner's parts (sharing the input and the
//! weights, reconstructing the output) happen here too, outside the parties.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_protocols::adversary::{Adversary, Deviation};
use veil_protocols::domain::Domain;
use veil_protocols::gemm::Gemm;
use veil_protocols::material::Request;
use veil_protocols::net::NetStats;
use veil_protocols::prg::Seed;
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds, LocalRun};
use veil_protocols::share::{reconstruct, share};
use veil_protocols::spdz2k::{self, Spdz2k};

use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::plan::{Plan, WeightMode};
use crate::private::{setup, setup_published, PublishedWeight, StepProfile, WeightShare};
use crate::start_line::StartLine;

/// Which protocol a committee runs (named in one place, `veil_protocols::protocol`).
pub use veil_protocols::protocol::Protocol;

/// How to run a committee locally.
#[derive(Clone)]
pub struct LocalOptions {
    /// Number of execution parties.
    pub parties: usize,
    /// Local matrix kernel.
    pub gemm: Arc<dyn Gemm>,
    /// Seed for every random choice (shares, dealer seeds); fresh randomness if `None`.
    pub seed: Option<u64>,
    /// How long a party waits for a message.
    pub timeout: Duration,
    /// Record per-step profiles.
    pub profile: bool,
    /// Record every message each party receives.
    pub record_views: bool,
    /// Link shaping (latency, uplink rate) of the in-memory mesh; `None`: unshaped.
    pub shaping: Option<veil_protocols::shaping::ShapingConfig>,
    /// The protocol.
    pub protocol: Protocol,
    /// A party that deviates (the protocol lab; `spdz2k` must abort).
    pub adversary: Option<Adversary>,
}

impl LocalOptions {
    /// `parties` parties with the given kernel and defaults for the rest.
    pub fn new(parties: usize, gemm: Arc<dyn Gemm>) -> Self {
        Self {
            parties,
            gemm,
            seed: None,
            timeout: veil_protocols::mem_net::DEFAULT_TIMEOUT,
            profile: false,
            record_views: false,
            shaping: None,
            protocol: Protocol::Semi2k,
            adversary: None,
        }
    }
}

/// Per-party results of one local run.
struct PartyResult<O = Vec<u64>> {
    outputs: Vec<O>,
    /// Per inference, the time this party spent expanding the inference's material before it (offline).
    preparation: Vec<Duration>,
    latencies: Vec<Duration>,
    online: Vec<NetStats>,
    setup: NetStats,
    profile: Vec<StepProfile>,
}

/// What a local private run measured and produced.
#[derive(Debug)]
pub struct LocalRunReport {
    /// Decoded outputs, one vector (`batch * output_len`) per inference.
    pub outputs: Vec<Vec<f32>>,
    /// Per inference, the slowest party's wall time (online phase: its material was ready before it).
    pub latencies: Vec<Duration>,
    /// Per inference, the slowest party's preprocessing: expanding the inference's dealer material from its
    /// seed (and corrections) before the input arrives. Offline, like the dealer's own work.
    pub preparation: Vec<Duration>,
    /// Per inference, per party, the online traffic.
    pub online: Vec<Vec<NetStats>>,
    /// Per party, the model-setup traffic (shared weights only).
    pub setup: Vec<NetStats>,
    /// Per party, per-step profile of the last inference (empty unless profiling).
    pub profiles: Vec<Vec<StepProfile>>,
    /// Bytes the dealer sent for all the inferences.
    pub dealer_bytes: u64,
    /// Dealer time for all the inferences.
    pub dealer_elapsed: Duration,
    /// Messages each party received (empty unless recording).
    pub views: Vec<Vec<(usize, Vec<u8>)>>,
}

/// Shares the model owner's weights among `parties` (or hands every party the plaintext, if public).
pub fn deal_weights(
    plan: &Plan,
    parties: usize,
    rng: &mut StdRng,
) -> Result<Vec<Vec<WeightShare>>> {
    let mut per_party: Vec<Vec<WeightShare>> = vec![Vec::new(); parties];
    for w in &plan.weights {
        match plan.mode {
            WeightMode::Public => per_party.iter_mut().for_each(|p| {
                p.push(WeightShare {
                    matrix: w.matrix.clone(),
                    bias: w.bias.clone(),
                })
            }),
            WeightMode::Shared => {
                let matrices = share(&w.matrix, parties, rng)?;
                let biases = w
                    .bias
                    .as_ref()
                    .map(|b| share(b, parties, rng))
                    .transpose()?;
                for (i, matrix) in matrices.into_iter().enumerate() {
                    per_party[i].push(WeightShare {
                        matrix,
                        bias: biases.as_ref().map(|b| b[i].clone()),
                    });
                }
            }
        }
    }
    Ok(per_party)
}

/// Runs `inputs.len()` private inferences (each a batch of `batch` items) of `plan` on a local committee,
/// after one model setup. Inputs are validated and encoded before anything runs.
pub fn run_private(
    model: &Model,
    plan: &Plan,
    inputs: &[Vec<f32>],
    batch: usize,
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let n = options.parties;
    let fp = plan.fixed_point;
    let encoded: Vec<Vec<u64>> = inputs
        .iter()
        .map(|x| {
            model.check_input(x, batch)?;
            Ok(fp.encode(x)?)
        })
        .collect::<Result<_>>()?;
    match options.protocol {
        Protocol::Spdz2k => return run_spdz2k(plan, &encoded, batch, options),
        Protocol::Rep3 => return crate::local_rep3::run_rep3(plan, &encoded, batch, options),
        Protocol::Semi2k => {}
    }
    let mut rng = match options.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    let input_shares: Vec<Vec<Vec<u64>>> = encoded
        .iter()
        .map(|x| share(x, n, &mut rng))
        .collect::<std::result::Result<_, _>>()?;
    let weight_shares = deal_weights(plan, n, &mut rng)?;
    let seeds = match options.seed {
        Some(s) => DealtSeeds::from_master(&Seed::random_from(s), n),
        None => DealtSeeds::random(n),
    };
    let one = plan.requests(batch);
    let requests: Vec<_> = (0..inputs.len())
        .flat_map(|_| one.iter().cloned())
        .collect();
    let mut committee = Committee::new(n, options.gemm.clone());
    committee.fixed_point = fp;
    committee.timeout = options.timeout;
    committee.record_views = options.record_views;
    committee.shaping = options.shaping;
    let start_line = StartLine::new(n, options.timeout);

    let run = run(
        &committee,
        &requests,
        &plan.mask_shapes(),
        &seeds,
        |party, masks| {
            let me = party.id();
            let model =
                setup(party, plan, weight_shares[me].clone(), masks).map_err(to_protocol)?;
            let setup_stats = party.stats().clone();
            let mut result = PartyResult {
                outputs: Vec::new(),
                preparation: Vec::new(),
                latencies: Vec::new(),
                online: Vec::new(),
                setup: setup_stats,
                profile: Vec::new(),
            };
            let _leaving = start_line.guard();
            for shares in &input_shares {
                result
                    .preparation
                    .push(prepare_inference(party, &model, one.len(), &start_line)?);
                let before = party.stats().clone();
                let started = Instant::now();
                let mut profile = Vec::new();
                let out = model
                    .infer(
                        party,
                        shares[me].clone(),
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
        },
    )?;

    let k = inputs.len();
    let mut outputs = Vec::with_capacity(k);
    for i in 0..k {
        let shares: Vec<Vec<u64>> = run
            .parties
            .iter()
            .map(|p| p.value.outputs[i].clone())
            .collect();
        outputs.push(fp.decode(&reconstruct(&shares)?));
    }
    Ok(report(run, outputs))
}

/// The `spdz2k` twin of the run above. The model owner and the client publish their values masked by dealt
/// masks (authenticated inputs), the parties set up and infer, run the MAC check before each output leaves
/// them, and the client opens each output only if every element's MAC is right. A failed check or a
/// timeout is an error and nothing is decoded.
fn run_spdz2k(
    plan: &Plan,
    encoded: &[Vec<u64>],
    batch: usize,
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let n = options.parties;
    let fp = plan.fixed_point;
    let seeds = match options.seed {
        Some(s) => DealtSeeds::from_master(&Seed::random_from(s), n),
        None => DealtSeeds::random(n),
    };
    let input_len = batch * plan.input_len;
    let requests = spdz2k_requests(plan, batch, encoded.len());
    let mut committee = Committee::new(n, options.gemm.clone());
    committee.fixed_point = fp;
    committee.timeout = options.timeout;
    committee.record_views = options.record_views;
    committee.shaping = options.shaping;
    let dealt = spdz2k::local::deal_job(&committee, &requests, &seeds.job)?;
    // One inference takes its input's mask and then the plan's requests.
    let per_inference = 1 + plan.requests(batch).len();
    let start_line = StartLine::new(n, options.timeout);

    let (published, published_inputs) = publish_spdz2k(plan, encoded, &dealt.deal.owner_masks)?;
    let output_key = dealt.deal.output_key;

    let run = spdz2k::local::run(
        &committee,
        &requests,
        &seeds.job,
        dealt,
        options.adversary,
        |party| {
            let model = setup_published(party, plan, &published).map_err(to_protocol)?;
            let mut result = PartyResult {
                outputs: Vec::new(),
                preparation: Vec::new(),
                latencies: Vec::new(),
                online: Vec::new(),
                setup: party.stats().clone(),
                profile: Vec::new(),
            };
            let _leaving = start_line.guard();
            for x in &published_inputs {
                let mut prepared = prepare_inference(party, &model, per_inference, &start_line)?;
                // The MAC check's seed commitments depend on no data: exchanged before the online clock.
                let committing = Instant::now();
                party.commit_check_seed()?;
                prepared += committing.elapsed();
                result.preparation.push(prepared);
                let before = party.stats().clone();
                let started = Instant::now();
                let mask = party.material().input(input_len)?;
                let input = party.input_from_masked(mask, x);
                let mut profile = Vec::new();
                let mut out = model
                    .infer(party, input, batch, options.profile.then_some(&mut profile))
                    .map_err(to_protocol)?;
                // No output leaves a party before every value it opened passed the MAC check.
                party.verify()?;
                result.latencies.push(started.elapsed());
                result.online.push(party.stats().since(&before));
                if let Some(a) = options
                    .adversary
                    .filter(|a| a.kind == Deviation::WrongOutput && a.party == party.id())
                {
                    let len = Spdz2k::len(&out).max(1);
                    Spdz2k::corrupt(&mut out, a.at % len, a.delta);
                }
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
    let outputs = spdz2k::local::open_outputs(&per_party, output_key)?
        .iter()
        .map(|opened| fp.decode(opened))
        .collect();
    Ok(report(run, outputs))
}

/// The dealer material of a `spdz2k` job of `inferences` inferences: the model setup's masks, then per
/// inference the input's mask and the plan's requests. The dealer and every party derive the same list.
pub fn spdz2k_requests(plan: &Plan, batch: usize, inferences: usize) -> Vec<Request> {
    let one = plan.requests(batch);
    let mut requests = plan.setup_requests();
    for _ in 0..inferences {
        requests.push(Request::Input {
            len: batch * plan.input_len,
        });
        requests.extend(one.iter().cloned());
    }
    requests
}

/// What the owners publish under `spdz2k` (the model owner its weights, the client its inputs): `value - mask`
/// with the plaintext masks the dealer gave them (`owner_masks`, in request order: each shared weight's
/// matrix then bias, then each input), or the plaintext weights if they are public. Fails if the masks do not
/// match the plan.
pub fn publish_spdz2k(
    plan: &Plan,
    encoded: &[Vec<u64>],
    owner_masks: &[Vec<u64>],
) -> Result<(Vec<PublishedWeight>, Vec<Vec<u64>>)> {
    // The owners publish `value - mask` with the masks the dealer gave them, in request order.
    let mut masks = owner_masks.iter();
    let mut next_mask = |len: usize| -> Result<Vec<u64>> {
        masks
            .next()
            .filter(|m| m.len() == len)
            .cloned()
            .ok_or_else(|| {
                EngineError::Weights("the dealer's owner masks do not match the plan".into())
            })
    };
    let published: Vec<PublishedWeight> = match plan.mode {
        WeightMode::Public => plan
            .weights
            .iter()
            .map(|w| PublishedWeight {
                matrix: w.matrix.clone(),
                bias: w.bias.clone(),
            })
            .collect(),
        WeightMode::Shared => plan
            .weights
            .iter()
            .map(|w| {
                let matrix = veil_protocols::ring::sub(&w.matrix, &next_mask(w.matrix.len())?);
                let bias = match &w.bias {
                    Some(b) => Some(veil_protocols::ring::sub(b, &next_mask(b.len())?)),
                    None => None,
                };
                Ok(PublishedWeight { matrix, bias })
            })
            .collect::<Result<_>>()?,
    };
    let published_inputs: Vec<Vec<u64>> = encoded
        .iter()
        .map(|x| Ok(veil_protocols::ring::sub(x, &next_mask(x.len())?)))
        .collect::<Result<_>>()?;
    Ok((published, published_inputs))
}

/// Gathers the measurements of a run whose outputs were already opened and decoded.
fn report<O>(run: LocalRun<PartyResult<O>>, outputs: Vec<Vec<f32>>) -> LocalRunReport {
    let k = outputs.len();
    LocalRunReport {
        outputs,
        latencies: slowest(&run, |p| &p.latencies, k),
        preparation: slowest(&run, |p| &p.preparation, k),
        online: (0..k)
            .map(|i| {
                run.parties
                    .iter()
                    .map(|p| p.value.online[i].clone())
                    .collect()
            })
            .collect(),
        setup: run.parties.iter().map(|p| p.value.setup.clone()).collect(),
        profiles: run
            .parties
            .iter()
            .map(|p| p.value.profile.clone())
            .collect(),
        dealer_bytes: run.dealer_bytes,
        dealer_elapsed: run.dealer_elapsed,
        views: run.parties.iter().map(|p| p.view.clone()).collect(),
    }
}

/// Per inference, the largest of the parties' durations that `of` selects.
fn slowest<O>(
    run: &LocalRun<PartyResult<O>>,
    of: impl Fn(&PartyResult<O>) -> &Vec<Duration>,
    inferences: usize,
) -> Vec<Duration> {
    (0..inferences)
        .map(|i| {
            run.parties
                .iter()
                .filter_map(|p| of(&p.value).get(i).copied())
                .max()
                .unwrap_or_default()
        })
        .collect()
}

/// The offline phase of one inference on one party: waits at the start line until every party has finished
/// the previous inference (so that no party's preparation competes for the cores with another's online
/// phase), expands the material of the inference's `requests` requests and does the model's preprocessing
/// on it, then waits at the start line again, so that the online clock starts with every party's material
/// ready (as MP-SPDZ's online figures assume). Returns the time spent preparing.
fn prepare_inference<N: veil_protocols::net::Net, D: Domain>(
    party: &mut veil_protocols::semi2k::Party<N, D>,
    model: &crate::private::PartyModel<'_, D>,
    requests: usize,
    start_line: &StartLine,
) -> veil_protocols::Result<Duration> {
    start_line.wait()?;
    let started = Instant::now();
    party.material().prepare(requests)?;
    model.precompute(party).map_err(to_protocol)?;
    let spent = started.elapsed();
    start_line.wait()?;
    Ok(spent)
}

/// Engine errors inside a party travel as protocol errors through the committee runner.
fn to_protocol(e: EngineError) -> veil_protocols::ProtocolError {
    match e {
        EngineError::Protocol(p) => p,
        other => veil_protocols::ProtocolError::Material(other.to_string()),
    }
}
