//! The `rep3m` twin of [`crate::local_rep3`]: the same owners' side (replicated shares of inputs and
//! weights, no dealer), parties that check their openings and release each output only after the check,
//! and a client that refuses an output whose two copies of a component differ: plans ([`run_rep3m`]), and
//! encoders and imported graphs ([`run_program`]). See
//! `protocols/src/rep3m/mod.rs` for what is checked and what is not yet (products).

use veil_protocols::adversary::{Adversary, Deviation};
use veil_protocols::rep3m;
use veil_protocols::semi2k::local::PartyOutcome;

use crate::error::{EngineError, Result};
use crate::local::{report, to_protocol, LocalOptions, LocalRunReport, PartyResult};
use crate::local_program::Forward;
use crate::local_rep3::{committee, local_run, open_outputs, owner_shares, run_party, split};
use crate::plan::Plan;
use crate::private::setup_rep3;
use crate::start_line::StartLine;

/// Runs the inferences of `encoded` (already validated and encoded) under `rep3m`.
pub(crate) fn run_rep3m(
    plan: &Plan,
    encoded: &[Vec<u64>],
    batch: usize,
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let committee = committee(options, plan.fixed_point)?;
    let adversary = lab_adversary(options)?;
    let owners = owner_shares(plan, encoded, options);
    let start_line = StartLine::new(3, options.timeout);
    let parties = rep3m::local::run(&committee, options.seed, adversary, |party| {
        let me = party.id();
        let weights = owners.shared.iter().map(|w| w[me].clone()).collect();
        let model = setup_rep3(plan, weights, &owners.public).map_err(to_protocol)?;
        let words = owners.inputs.iter().map(|x| (x[me].clone(), batch));
        run_party(
            party,
            words,
            options,
            &start_line,
            |party, input, items, profile| {
                let y = model.infer(party, input, items, profile)?;
                Ok(party.release(&y)?)
            },
        )
        .map_err(to_protocol)
    })?;
    finish(parties, encoded.len(), plan.fixed_point)
}

/// Runs `program` (an encoder, an imported graph: any [`Forward`] program on public weights) under `rep3m`
/// on each of `inputs` (the client's encoded inputs, `items[i]` units each: tokens, or 1 per graph input).
pub(crate) fn run_program<M: Forward>(
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
    let committee = committee(options, fp)?;
    let adversary = lab_adversary(options)?;
    let mut rng = crate::local_rep3::rng(options);
    let shares: Vec<_> = inputs.iter().map(|x| split(x, &mut rng)).collect();
    let start_line = StartLine::new(3, options.timeout);
    let parties = rep3m::local::run(&committee, options.seed, adversary, |party| {
        let me = party.id();
        let words = shares.iter().zip(items).map(|(x, &l)| (x[me].clone(), l));
        run_party(
            party,
            words,
            options,
            &start_line,
            |party, input, items, profile| {
                let y = program.forward_on(party, input, items, profile)?;
                Ok(party.release(&y)?)
            },
        )
        .map_err(to_protocol)
    })?;
    finish(parties, inputs.len(), fp)
}

/// The protocol lab's deviation for a rep3m inference: `wrong-output` (the output) and `wrong-product` (a
/// reshare, caught by the product proof) have sites; inference opens nothing, so any other is refused
/// rather than silently never struck.
fn lab_adversary(options: &LocalOptions) -> Result<Option<Adversary>> {
    match options.adversary {
        Some(a) if !matches!(a.kind, Deviation::WrongOutput | Deviation::WrongProduct) => Err(
            EngineError::Protocol(veil_protocols::ProtocolError::Committee(format!(
                "rep3m inference has no site for the deviation {}: only wrong-output and \
                 wrong-product strike it",
                a.kind.name()
            ))),
        ),
        other => Ok(other),
    }
}

/// The client's side: each output from the released shares (refused if two holders disagree), and the run's
/// measurements.
fn finish(
    parties: Vec<PartyOutcome<PartyResult<veil_protocols::rep3::RepShare>>>,
    k: usize,
    fp: veil_protocols::ring::FixedPoint,
) -> Result<LocalRunReport> {
    let outputs = open_outputs(&parties, k, fp)?;
    Ok(report(local_run(parties), outputs))
}
