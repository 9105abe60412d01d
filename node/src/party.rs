//! The execution-party role: one party's part of a job, run on its own thread.
//!
//! Order of work (the multi-process twin of `veil_engine::local::run_private`): check the client's run
//! request against the plan; ask the dealer for this party's seeds (and, for the last party, corrections);
//! open the job's streams to the other parties; set up the model (opening the masked weights); run every
//! inference, measuring each; check that every dealt request was consumed; report output shares and costs.
//! Under `spdz2k` the weights and inputs arrive published (`value - mask`), every inference ends with the
//! MAC check before its output share is reported, and the report carries each check's transcript.
//!
//! Invariant: nothing here logs or returns anything but this party's own shares (to the client that sent
//! the inputs) and public measurements.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::VarInt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use veil_engine::kernel::RingGemm;
use veil_engine::local::spdz2k_requests;
use veil_engine::private::{setup, setup_published, PartyModel, PublishedWeight, WeightShare};
use veil_engine::{workloads, Plan};
use veil_protocols::adversary::{Adversary, Deviation};
use veil_protocols::domain::Domain;
use veil_protocols::material::auth::AuthPartyGenerator;
use veil_protocols::material::{self, PartyMaterial};
use veil_protocols::ring::FixedPoint;
use veil_protocols::semi2k::Party;
use veil_protocols::shaping::ShapedNet;
use veil_protocols::spdz2k::Spdz2k;

use crate::error::{NodeError, Result};
use crate::frame::{self, RecvError};
use crate::jobs::Arrival;
use crate::manifest::{Manifest, SPDZ2K};
use crate::peers::Peers;
use crate::quic_net::QuicNet;
use crate::wire::{AuthWords, Dealt, Msg, PartyReport, RunRequest, WireStats, WireStep, Words};

/// The public plan of a manifest's model: every member builds the same one from (workload, seed), or from
/// a deployed model's architecture (weights zero: parties get theirs, as shares or public, from the client).
pub fn compile_plan(manifest: &Manifest) -> Result<Plan> {
    let spec = &manifest.model;
    let device = burn::tensor::Device::flex();
    let model = match &spec.deployed {
        Some(deployed) => veil_engine::model_file::skeleton(&deployed.parse()?, &device)?,
        None => workloads::by_name(&spec.workload, spec.seed, &device).ok_or_else(|| {
            NodeError::Manifest(format!("unknown workload {:?}", spec.workload))
        })??,
    };
    let fp = FixedPoint::new(spec.frac_bits).map_err(veil_protocols::ProtocolError::from)?;
    Ok(Plan::compile(&model, fp, spec.weights)?)
}

/// What a party needs from its node.
pub struct PartyContext {
    /// The node's runtime.
    pub handle: Handle,
    /// The node's endpoint.
    pub peers: Arc<Peers>,
    /// How long to wait for a peer's message.
    pub timeout: Duration,
    /// How long to wait for the dealer (dealing grows with the job).
    pub deal_timeout: Duration,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// TEST ONLY ([`crate::config::NodeConfig::insecure_adversary`]): the deviation this node commits when
    /// it is the named party of a `spdz2k` job; `None` in production.
    pub adversary: Option<Adversary>,
}

/// Checks the client's weights and inputs against the plan and the manifest.
fn check_request(plan: &Plan, manifest: &Manifest, run: &RunRequest) -> Result<()> {
    if run.job != manifest.job {
        return Err(NodeError::Unexpected(format!(
            "run request for job {} on the stream of job {}",
            run.job, manifest.job
        )));
    }
    if run.inputs.len() != manifest.inferences as usize {
        return Err(NodeError::Unexpected(format!(
            "{} inputs for a job of {} inferences",
            run.inputs.len(),
            manifest.inferences
        )));
    }
    if run.weights.len() != plan.weights.len() {
        return Err(NodeError::Unexpected(format!(
            "{} weights for a plan of {}",
            run.weights.len(),
            plan.weights.len()
        )));
    }
    for (i, (w, spec)) in run.weights.iter().zip(&plan.weights).enumerate() {
        let bias_ok = match (&w.bias, &spec.bias) {
            (Some(b), Some(s)) => b.0.len() == s.len(),
            (None, None) => true,
            _ => false,
        };
        if w.matrix.0.len() != spec.inner * spec.outputs || !bias_ok {
            return Err(NodeError::Unexpected(format!(
                "weight {i} does not have the plan's shape"
            )));
        }
    }
    let expected = manifest.batch as usize * plan.input_len;
    if run.inputs.iter().any(|x| x.0.len() != expected) {
        return Err(NodeError::Unexpected(format!(
            "inputs must have {expected} elements"
        )));
    }
    Ok(())
}

/// Asks the dealer for party `party`'s material.
async fn fetch_material(
    peers: &Peers,
    manifest: &Manifest,
    party: usize,
    max_frame: usize,
) -> Result<Dealt> {
    let dealer = &manifest.dealer;
    let conn = peers
        .connect(dealer.public_key, dealer.address, true)
        .await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(NodeError::quic)?;
    let request = Msg::DealRequest {
        job: manifest.job,
        party: party as u32,
    };
    frame::write(&mut send, &request)
        .await
        .map_err(|e| NodeError::Quic(e.to_string()))?;
    let _ = send.finish();
    let answer = read_dealt(&mut recv, max_frame).await;
    let _ = recv.stop(VarInt::from_u32(0));
    answer
}

/// One frame from the dealer's stream.
async fn read_frame(recv: &mut quinn::RecvStream, max_frame: usize) -> Result<Msg> {
    match frame::read(recv, max_frame).await {
        Ok(m) => Ok(m),
        Err(RecvError::Frame(e)) => Err(e.into()),
        Err(e) => Err(NodeError::Quic(format!("dealer stream: {e}"))),
    }
}

/// The dealer's answer: `Dealt`, then its remaining corrections in `Corrections` frames. Memory grows only
/// as frames arrive (nothing is reserved from the announced count), and no frame may exceed what remains.
async fn read_dealt(recv: &mut quinn::RecvStream, max_frame: usize) -> Result<Dealt> {
    let mut dealt = match read_frame(recv, max_frame).await? {
        Msg::Dealt(d) => d,
        Msg::Failed(why) => return Err(NodeError::Job(format!("dealer: {why}"))),
        other => {
            return Err(NodeError::Unexpected(format!(
                "dealer answered {}",
                other.name()
            )))
        }
    };
    let mut remaining = dealt.more_corrections;
    while remaining > 0 {
        match read_frame(recv, max_frame).await? {
            Msg::Corrections(chunk)
                if (chunk.0.len() as u64) <= remaining && !chunk.0.is_empty() =>
            {
                remaining -= chunk.0.len() as u64;
                dealt.corrections.0.extend_from_slice(&chunk.0);
            }
            other => {
                return Err(NodeError::Unexpected(format!(
                    "dealer sent {} where {remaining} correction words were due",
                    other.name()
                )))
            }
        }
    }
    Ok(dealt)
}

/// Runs party `party`'s part of `manifest` with the client's `run` request. Blocks; call on a thread of its
/// own, not on the runtime.
pub fn run(
    ctx: &PartyContext,
    manifest: &Manifest,
    party: usize,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    run: RunRequest,
) -> Result<PartyReport> {
    let plan = compile_plan(manifest)?;
    check_request(&plan, manifest, &run)?;
    let n = manifest.parties.len();
    let batch = manifest.batch as usize;
    let handle = &ctx.handle;
    let dealt = handle
        .block_on(async {
            // The timer must be created inside the runtime's context.
            tokio::time::timeout(
                ctx.deal_timeout,
                fetch_material(&ctx.peers, manifest, party, ctx.max_frame),
            )
            .await
        })
        .map_err(|_| NodeError::Timeout(ctx.deal_timeout, "waiting for the dealer"))??;
    if party + 1 != n && !dealt.corrections.0.is_empty() {
        return Err(NodeError::Unexpected(
            "the dealer sent corrections to a party that takes none".into(),
        ));
    }
    let net = handle.block_on(QuicNet::open(
        &ctx.peers,
        manifest,
        party,
        arrivals,
        ctx.timeout,
        ctx.max_frame,
    ))?;
    tracing::info!(job = %manifest.job, party, inferences = run.inputs.len(), protocol = %manifest.protocol, "party connected, computing");
    let gemm = Arc::new(RingGemm::new(run.threads.max(1) as usize));
    if let Some(Err(e)) = run.shaping.map(|s| s.check()) {
        return Err(NodeError::Unexpected(format!("run request: {e}")));
    }
    let net = ShapedNet::optional(net, run.shaping);
    let mut report = PartyReport {
        outputs: Vec::new(),
        latencies: Vec::new(),
        online: Vec::new(),
        setup: WireStats::default(),
        profile: Vec::new(),
        dealer_bytes: dealt.dealer_bytes,
        dealer_seconds: dealt.dealer_seconds,
        udp_tx_bytes: Vec::new(),
        auth_outputs: Vec::new(),
        transcripts: Vec::new(),
    };
    if manifest.protocol == SPDZ2K {
        let adversary = ctx.adversary.filter(|a| a.party == party);
        run_spdz2k(
            &plan,
            manifest,
            (party, adversary),
            net,
            gemm,
            dealt,
            run,
            &mut report,
        )?;
        return Ok(report);
    }
    let one = plan.requests(batch);
    let requests: Vec<_> = (0..manifest.inferences)
        .flat_map(|_| one.iter().cloned())
        .collect();
    let masks = material::party_masks(party, n, &dealt.model_seed, &plan.mask_shapes())?;
    let material = PartyMaterial::new(party, n, &dealt.job_seed, dealt.corrections.0, requests)?;
    let mut p = Party::new(net, material, plan.fixed_point, gemm)?;
    let weights: Vec<WeightShare> = run
        .weights
        .into_iter()
        .map(|w| WeightShare {
            matrix: w.matrix.0,
            bias: w.bias.map(|b| b.0),
        })
        .collect();
    let model = setup(&mut p, &plan, weights, masks)?;
    report.setup = WireStats::from(p.stats());
    infer_all(
        &mut p,
        &model,
        run.inputs,
        (batch, run.profile),
        &mut report,
        (
            |_| Ok(()),
            |_, input| Ok(input),
            |_, out, report| {
                report.outputs.push(Words(out));
                Ok(())
            },
        ),
    )?;
    let (net, _) = p.finish()?;
    drop(net);
    Ok(report)
}

/// The party's link to its peers.
type Link = ShapedNet<QuicNet>;

/// The `spdz2k` twin of the `semi2k` part of [`run`] (as `veil_engine::local` runs it in memory): the
/// authenticated material from the dealer's job seed, the model set up from the owner's published weights,
/// each input from its published `x - mask`, and the MAC check after each inference, before its output
/// share leaves the party. The check's transcript goes into the report for the verifier.
#[allow(clippy::too_many_arguments)]
fn run_spdz2k(
    plan: &Plan,
    manifest: &Manifest,
    (party, adversary): (usize, Option<Adversary>),
    net: Link,
    gemm: Arc<RingGemm>,
    dealt: Dealt,
    run: RunRequest,
    report: &mut PartyReport,
) -> Result<()> {
    let n = manifest.parties.len();
    let batch = manifest.batch as usize;
    let requests = spdz2k_requests(plan, batch, manifest.inferences as usize);
    let generator = AuthPartyGenerator::new(party, n, &dealt.job_seed, dealt.corrections.0)?;
    let material = PartyMaterial::from_generator(generator, requests);
    let mut p = Party::<Link, Spdz2k>::with_material(net, material, plan.fixed_point, gemm)?;
    if let Some(a) = adversary {
        tracing::warn!(
            deviation = a.kind.name(),
            "this party deviates (test-only adversary)"
        );
        p.set_adversary(a);
    }
    let published: Vec<PublishedWeight> = run
        .weights
        .into_iter()
        .map(|w| PublishedWeight {
            matrix: w.matrix.0,
            bias: w.bias.map(|b| b.0),
        })
        .collect();
    let model = setup_published(&mut p, plan, &published)?;
    report.setup = WireStats::from(p.stats());
    let input_len = batch * plan.input_len;
    infer_all(
        &mut p,
        &model,
        run.inputs,
        (batch, run.profile),
        report,
        (
            // The MAC check's seed commitments depend on no data: exchanged before the online clock.
            |p| Ok(p.commit_check_seed()?),
            |p, published| {
                let mask = p.material().input(input_len)?;
                Ok(p.input_from_masked(mask, &published))
            },
            |p, out, report| {
                // No output share leaves this party before every value it opened passed the MAC check.
                report.transcripts.push(p.verify_transcript()?);
                let mut out = out;
                if let Some(a) = adversary.filter(|a| a.kind == Deviation::WrongOutput) {
                    let len = Spdz2k::len(&out).max(1);
                    Spdz2k::corrupt(&mut out, a.at % len, a.delta);
                }
                report.auth_outputs.push(AuthWords::from(&out));
                Ok(())
            },
        ),
    )?;
    let (net, _) = p.finish()?;
    drop(net);
    Ok(())
}

/// Runs every inference of a job on party `p`, measuring each. The hooks: `ahead` runs first, outside the
/// measured time (data-independent preprocessing); `prepare` turns the client's input into this party's share
/// and `finish` takes the output share (and does whatever must precede its release), both inside the measured
/// time. `(batch, profile)`: items per inference, and whether to profile the last one.
fn infer_all<D: Domain, A, P, F>(
    p: &mut Party<Link, D>,
    model: &PartyModel<'_, D>,
    inputs: Vec<Words>,
    (batch, profile_last): (usize, bool),
    report: &mut PartyReport,
    (mut ahead, mut prepare, mut finish): (A, P, F),
) -> Result<()>
where
    A: FnMut(&mut Party<Link, D>) -> Result<()>,
    P: FnMut(&mut Party<Link, D>, Vec<u64>) -> Result<D::Arith>,
    F: FnMut(&mut Party<Link, D>, D::Arith, &mut PartyReport) -> Result<()>,
{
    let inferences = inputs.len();
    for (k, input) in inputs.into_iter().enumerate() {
        ahead(p)?;
        let before = p.stats().clone();
        let udp_before = p.net().inner().udp_tx_bytes();
        let mut profile = Vec::new();
        let want_profile = profile_last && k + 1 == inferences;
        let started = Instant::now();
        let input = prepare(p, input.0)?;
        let out = model.infer(p, input, batch, want_profile.then_some(&mut profile))?;
        finish(p, out, report)?;
        report.latencies.push(started.elapsed().as_secs_f64());
        report
            .online
            .push(WireStats::from(&p.stats().since(&before)));
        report
            .udp_tx_bytes
            .push(p.net().inner().udp_tx_bytes().saturating_sub(udp_before));
        if want_profile {
            report.profile = profile
                .iter()
                .map(|s| WireStep {
                    label: s.label.clone(),
                    seconds: s.elapsed.as_secs_f64(),
                    net: WireStats::from(&s.net),
                    material: s.material,
                })
                .collect();
        }
    }
    Ok(())
}
