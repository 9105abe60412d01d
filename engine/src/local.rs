//! Private inference of a whole committee in one process, over the in-memory network: what tests, the
//! in-memory benchmark and the demo run. The client's and the model owner's parts (sharing the input and the
//! weights, reconstructing the output) happen here too, outside the parties. Each party runs the one party
//! program, [`crate::session::PartySession`], as nodes do; only the transport and the dealer are local.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_protocols::adversary::{Adversary, Deviation};
use veil_protocols::gemm::Gemm;
use veil_protocols::material::Request;
use veil_protocols::net::{Net, NetStats};
use veil_protocols::prg::Seed;
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds, LocalRun};
use veil_protocols::semi2k::Party;
use veil_protocols::share::{reconstruct, share};
use veil_protocols::spdz2k;

use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::plan::{Plan, WeightMode};
use crate::private::{setup, setup_published, PublishedWeight, StepProfile, WeightShare};
use crate::session::{PartySession, Program, SessionDomain};
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
    pub shaping: Option<crate::lab::shaping::ShapingConfig>,
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
pub(crate) struct PartyResult<O = Vec<u64>> {
    pub(crate) outputs: Vec<O>,
    /// Per inference, the time this party spent expanding the inference's material before it (offline).
    pub(crate) preparation: Vec<Duration>,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) online: Vec<NetStats>,
    pub(crate) setup: NetStats,
    pub(crate) profile: Vec<StepProfile>,
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
        Protocol::Rep3m => return crate::local_rep3m::run_rep3m(plan, &encoded, batch, options),
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
    committee.link = options.shaping.map(crate::lab::shaping::link);
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
            let shares = input_shares.iter().map(|x| (x[me].clone(), batch));
            run_party(party, &model, shares, options, None, &start_line).map_err(to_protocol)
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
    let requests = spdz2k_requests(plan, batch, encoded.len());
    let mut committee = Committee::new(n, options.gemm.clone());
    committee.fixed_point = fp;
    committee.timeout = options.timeout;
    committee.record_views = options.record_views;
    committee.link = options.shaping.map(crate::lab::shaping::link);
    let dealt = spdz2k::local::deal_job(&committee, &requests, &seeds.job)?;
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
            let adversary = options.adversary.filter(|a| a.party == party.id());
            let inputs = published_inputs.iter().map(|x| (x.clone(), batch));
            run_party(party, &model, inputs, options, adversary, &start_line).map_err(to_protocol)
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
pub(crate) fn report<O>(run: LocalRun<PartyResult<O>>, outputs: Vec<Vec<f32>>) -> LocalRunReport {
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

/// The party program of a local run: a [`PartySession`] over this party's link, running every inference of
/// `inputs` (this party's words: input shares, or published `x - r`, each with its units), the parties
/// meeting at `start_line` before and after each offline phase. `adversary` (the protocol lab): a
/// `WrongOutput` deviation corrupts this party's verified output share before release.
pub(crate) fn run_party<N: Net, D: SessionDomain, P: Program<D>>(
    party: &mut Party<N, D>,
    program: &P,
    inputs: impl IntoIterator<Item = (Vec<u64>, usize)>,
    options: &LocalOptions,
    adversary: Option<Adversary>,
    start_line: &StartLine,
) -> Result<PartyResult<D::Arith>> {
    let mut session = PartySession::new(party, program)
        .with_start_line(start_line)
        .with_profile(options.profile);
    let mut result = PartyResult {
        outputs: Vec::new(),
        preparation: Vec::new(),
        latencies: Vec::new(),
        online: Vec::new(),
        setup: session.setup_stats().clone(),
        profile: Vec::new(),
    };
    let _leaving = start_line.guard();
    for (words, items) in inputs {
        let mut done = session.infer(words, items)?;
        if let Some(a) = adversary.filter(|a| a.kind == Deviation::WrongOutput) {
            let len = D::len(&done.output).max(1);
            D::corrupt(&mut done.output, a.at % len, a.delta);
        }
        result.preparation.push(done.preparation);
        result.latencies.push(done.latency);
        result.online.push(done.online);
        result.outputs.push(done.output);
        result.profile = done.profile;
    }
    Ok(result)
}

/// Engine errors inside a party travel as protocol errors through the committee runner.
pub(crate) fn to_protocol(e: EngineError) -> veil_protocols::ProtocolError {
    match e {
        EngineError::Protocol(p) => p,
        other => veil_protocols::ProtocolError::Material(other.to_string()),
    }
}
