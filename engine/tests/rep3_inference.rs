//! rep3 inference end to end (three parties, no dealer) against plaintext: network-a and lenet within the
//! semi2k error targets, shared and public weights and batches, tiny random BERT encoders with cosine >= 0.99,
//! and the run's accounting (no dealer bytes, no setup traffic beyond the key agreement).

mod common;

use std::sync::Arc;

use burn::tensor::Device;
use veil_engine::bert::private::{PrivateBert, PrivateConfig};
use veil_engine::bert::random::{random_weights, tiny_config};
use veil_engine::bert::run::embed_private;
use veil_engine::bert::{cosine, Bert};
use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions, Protocol};
use veil_engine::{workloads, Model, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

use common::*;

fn rep3_options(seed: u64) -> LocalOptions {
    let mut options = LocalOptions::new(3, Arc::new(RingGemm::new(1)));
    options.protocol = Protocol::Rep3;
    options.seed = Some(seed);
    options
}

fn rep3_vs_plain(model: &Model, mode: WeightMode, batch: usize, seed: u64) -> f32 {
    let plan = Plan::compile(model, FixedPoint::default(), mode).expect("compiles");
    let input = workloads::sample_input(model, batch, seed);
    let report = run_private(
        model,
        &plan,
        std::slice::from_ref(&input),
        batch,
        &rep3_options(seed),
    )
    .expect("rep3 run");
    assert_eq!(report.dealer_bytes, 0, "rep3 has no dealer");
    // Setup: each party sends its 32-byte PRF key to one neighbour and nothing else (weights are shared by
    // their owner, no opening).
    assert!(report.setup.iter().all(|s| s.bytes_sent == 32));
    let plain = model.forward_plain(&input, batch).expect("plaintext run");
    report.outputs[0]
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn network_a_and_lenet_meet_the_error_targets_under_rep3() {
    let dev = device();
    let network_a = workloads::network_a(7, &dev).expect("builds");
    let lenet = workloads::lenet(7, &dev).expect("builds");
    for mode in [WeightMode::Shared, WeightMode::Public] {
        for batch in [1, 3] {
            let err = rep3_vs_plain(&network_a, mode, batch, 11);
            assert!(
                err <= 1e-3,
                "network-a {mode:?} batch {batch}: max abs err {err}"
            );
        }
        let err = rep3_vs_plain(&lenet, mode, 1, 11);
        assert!(err <= 1e-3, "lenet {mode:?}: max abs err {err}");
    }
}

#[test]
fn rep3_needs_exactly_three_parties() {
    let dev = device();
    let m = workloads::network_a(7, &dev).expect("builds");
    let plan = Plan::compile(&m, FixedPoint::default(), WeightMode::Shared).expect("compiles");
    let input = workloads::sample_input(&m, 1, 1);
    let mut options = rep3_options(1);
    options.parties = 2;
    assert!(run_private(&m, &plan, &[input], 1, &options).is_err());
}

#[test]
fn tiny_random_encoders_embed_under_rep3_like_burn() {
    let device = Device::flex();
    for (layers, hidden, heads, seed) in [(2, 32, 4, 1u64), (1, 48, 3, 2)] {
        let config = tiny_config(layers, hidden, heads);
        let bytes = random_weights(&config, seed).unwrap();
        let bert = Bert::from_bytes(&bytes, config, &device).unwrap();
        let model =
            PrivateBert::new(&bert, PrivateConfig::new(FixedPoint::default()).unwrap()).unwrap();
        let sequences: Vec<Vec<u32>> = vec![
            vec![1, 17, 42, 99, 2],
            (0..23).map(|i| (i * 37 % 100) as u32).collect(),
            vec![5],
        ];
        let report = embed_private(&model, &sequences, &rep3_options(3)).unwrap();
        assert_eq!(report.dealer_bytes, 0);
        for (ids, got) in sequences.iter().zip(&report.outputs) {
            let c = cosine(got, &bert.embed(ids).unwrap());
            assert!(
                c >= 0.99,
                "{layers} layers of {hidden}, {} tokens: cosine {c}",
                ids.len()
            );
        }
    }
}
