//! rep3m inference end to end (three parties, no dealer; see `protocols/src/rep3m/mod.rs` for what it checks
//! and what it does not yet): network-a and lenet within the semi2k error targets, tiny random BERT encoders
//! with cosine >= 0.99, no dealer bytes, a party that hands the client a wrong output share is refused
//! 200 runs out of 200, and a party that adds an error to one of its reshares (`wrong-product`) is caught
//! by the product proof 200 runs out of 200 with nothing released (inference opens nothing, so the output
//! and the reshares are the lab's sites of a deviation here).

mod common;

use std::sync::Arc;

use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_engine::bert::private::{PrivateBert, PrivateConfig};
use veil_engine::bert::random::{random_weights, tiny_config};
use veil_engine::bert::run::embed_private;
use veil_engine::bert::{cosine, Bert};
use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions, Protocol};
use veil_engine::{workloads, Model, Plan, WeightMode};
use veil_protocols::adversary::{Adversary, Deviation};
use veil_protocols::ring::FixedPoint;

use common::*;

fn rep3m_options(seed: u64) -> LocalOptions {
    let mut options = LocalOptions::new(3, Arc::new(RingGemm::new(1)));
    options.protocol = Protocol::Rep3m;
    options.seed = Some(seed);
    options
}

fn rep3m_vs_plain(model: &Model, mode: WeightMode, batch: usize, seed: u64) -> f32 {
    let plan = Plan::compile(model, FixedPoint::default(), mode).expect("compiles");
    let input = workloads::sample_input(model, batch, seed);
    let report = run_private(
        model,
        &plan,
        std::slice::from_ref(&input),
        batch,
        &rep3m_options(seed),
    )
    .expect("rep3m run");
    assert_eq!(report.dealer_bytes, 0, "rep3m has no dealer");
    assert!(report.setup.iter().all(|s| s.bytes_sent == 32));
    let plain = model.forward_plain(&input, batch).expect("plaintext run");
    report.outputs[0]
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn network_a_and_lenet_meet_the_error_targets_under_rep3m() {
    let dev = device();
    let network_a = workloads::network_a(7, &dev).expect("builds");
    let lenet = workloads::lenet(7, &dev).expect("builds");
    for batch in [1, 3] {
        let err = rep3m_vs_plain(&network_a, WeightMode::Shared, batch, 11);
        assert!(err <= 1e-3, "network-a batch {batch}: max abs err {err}");
    }
    let err = rep3m_vs_plain(&lenet, WeightMode::Shared, 1, 11);
    assert!(err <= 1e-3, "lenet: max abs err {err}");
    let err = rep3m_vs_plain(&lenet, WeightMode::Public, 1, 12);
    assert!(err <= 1e-3, "lenet, public weights: max abs err {err}");
}

#[test]
fn tiny_random_encoders_embed_under_rep3m_like_burn() {
    let device = Device::flex();
    let config = tiny_config(2, 32, 4);
    let bytes = random_weights(&config, 1).unwrap();
    let bert = Bert::from_bytes(&bytes, config, &device).unwrap();
    let model =
        PrivateBert::new(&bert, PrivateConfig::new(FixedPoint::default()).unwrap()).unwrap();
    let sequences: Vec<Vec<u32>> = vec![vec![1, 17, 42, 99, 2], vec![5]];
    let report = embed_private(&model, &sequences, &rep3m_options(3)).unwrap();
    assert_eq!(report.dealer_bytes, 0);
    for (ids, got) in sequences.iter().zip(&report.outputs) {
        let c = cosine(got, &bert.embed(ids).unwrap());
        assert!(c >= 0.99, "{} tokens: cosine {c}", ids.len());
    }
}

#[test]
fn a_wrong_output_share_is_refused_200_of_200_runs_and_other_deviations_are_refused_up_front() {
    let dev = device();
    let m = workloads::network_a(7, &dev).expect("builds");
    let plan = Plan::compile(&m, FixedPoint::default(), WeightMode::Shared).expect("compiles");
    let input = workloads::sample_input(&m, 1, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut refused = 0;
    for run in 0..200u64 {
        let mut options = rep3m_options(run);
        options.adversary = Some(Adversary {
            kind: Deviation::WrongOutput,
            party: rng.random_range(0..3),
            at: rng.random_range(0..plan.output_len),
            delta: rng.random_range(1..u64::MAX),
        });
        match run_private(&m, &plan, std::slice::from_ref(&input), 1, &options) {
            Ok(_) => panic!("run {run}: the client accepted a wrong output share"),
            Err(e) if e.to_string().contains("verification failed") => refused += 1,
            Err(e) => panic!("run {run}: failed, but not by the client's check: {e}"),
        }
    }
    assert_eq!(refused, 200);
    // Inference opens nothing, so a deviation at an opening has no site: the runner says so rather than
    // reporting a run that verified.
    for kind in [Deviation::FlipShare, Deviation::SkipRound] {
        let mut options = rep3m_options(1);
        options.adversary = Some(Adversary {
            kind,
            party: 0,
            at: 0,
            delta: 1,
        });
        assert!(run_private(&m, &plan, std::slice::from_ref(&input), 1, &options).is_err());
    }
}

/// Reshares in one network-a inference of batch 1 that the product proof covers, a lower bound for the
/// lab's `wrong-product` site (a tamper past the last reshare would strike nothing): each of the three
/// layers has its fixed-weight product, and each of the two hidden ReLUs (with truncation) at least four.
const NETWORK_A_RESHARES: usize = 8;

#[test]
fn a_wrong_product_is_caught_by_the_product_proof_200_of_200_runs_with_nothing_released() {
    let dev = device();
    let m = workloads::network_a(7, &dev).expect("builds");
    let plan = Plan::compile(&m, FixedPoint::default(), WeightMode::Shared).expect("compiles");
    let input = workloads::sample_input(&m, 1, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let mut caught = 0;
    for run in 0..200u64 {
        let mut options = rep3m_options(run);
        options.adversary = Some(Adversary {
            kind: Deviation::WrongProduct,
            party: rng.random_range(0..3),
            at: rng.random_range(0..NETWORK_A_RESHARES),
            delta: rng.random_range(1..u64::MAX),
        });
        match run_private(&m, &plan, std::slice::from_ref(&input), 1, &options) {
            Ok(_) => panic!("run {run}: an output was released after a wrong product"),
            Err(e) if e.to_string().contains("product proof") => caught += 1,
            Err(e) => panic!("run {run}: failed, but not by the product proof: {e}"),
        }
    }
    assert_eq!(caught, 200);
}
