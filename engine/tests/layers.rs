//! Every layer, and whole models, run privately against burn's plaintext forward pass, for n in {2, 3, 5} and
//! shared or public weights.
//!
//! Error bound, per layer with inner dimension `k`, inputs and weights of magnitude at most 1, `f = 16`:
//! encoding rounds each input and weight by at most `2^-(f+1)`, so a product term is off by at most
//! `2 * 2^-(f+1)` plus the rounding of their product; truncation adds at most `2^-f`; ReLU and max pooling are
//! exact on shares. Hence `|private - plain| <= (k + 1) * 2^-f + 1e-6 * k` (the last term is burn's own f32
//! rounding). Tests assert this bound; whole models assert the issue's `1e-3`.

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions};
use veil_engine::{workloads, Model, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

use common::*;

fn private_vs_plain(
    model: &Model,
    parties: usize,
    mode: WeightMode,
    batch: usize,
    seed: u64,
) -> (f32, Vec<f32>) {
    let plan = Plan::compile(model, FixedPoint::default(), mode).expect("compiles");
    let input = workloads::sample_input(model, batch, seed);
    let mut options = LocalOptions::new(parties, Arc::new(RingGemm::new(1)));
    options.seed = Some(seed);
    let report = run_private(model, &plan, std::slice::from_ref(&input), batch, &options)
        .expect("private run");
    let plain = model.forward_plain(&input, batch).expect("plaintext run");
    let err = report.outputs[0]
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    (err, plain)
}

fn bound(inner: usize) -> f32 {
    (inner as f32 + 1.0) / 65536.0 + 1e-6 * inner as f32
}

fn parties() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![2usize, 3, 5])
}

fn mode() -> impl Strategy<Value = WeightMode> {
    prop::sample::select(vec![WeightMode::Shared, WeightMode::Public])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn linear_matches_burn(n in parties(), mode in mode(), d_in in 1usize..40, d_out in 1usize..12, batch in 1usize..4, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m = model(vec![d_in], vec![linear(&mut rng, d_in, d_out)]);
        let (err, _) = private_vs_plain(&m, n, mode, batch, seed);
        prop_assert!(err <= bound(d_in), "err {err} > {}", bound(d_in));
    }

    #[test]
    fn linear_relu_matches_burn(n in parties(), mode in mode(), d_in in 1usize..40, d_out in 1usize..12, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m = model(vec![d_in], vec![linear(&mut rng, d_in, d_out), relu()]);
        let (err, plain) = private_vs_plain(&m, n, mode, 2, seed);
        prop_assert!(plain.iter().all(|v| *v >= 0.0));
        prop_assert!(err <= bound(d_in), "err {err} > {}", bound(d_in));
    }

    #[test]
    fn conv_matches_burn(n in parties(), mode in mode(), c_in in 1usize..3, c_out in 1usize..4, k in 1usize..4, stride in 1usize..3, pad in 0usize..2, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m = model(vec![c_in, 7, 6], vec![conv(&mut rng, c_in, c_out, k, stride, pad)]);
        let (err, _) = private_vs_plain(&m, n, mode, 2, seed);
        prop_assert!(err <= bound(c_in * k * k), "err {err}");
    }

    #[test]
    fn relu_and_maxpool_alone_are_exact_on_encoded_inputs(n in parties(), c in 1usize..3, hw in 2usize..7, k in 1usize..3, seed in any::<u64>()) {
        prop_assume!(k <= hw);
        // No product: ReLU and max pooling act on the encoded input exactly, so the only error is encoding.
        let m = model(vec![c, hw, hw], vec![relu(), pool(k), veil_engine::Layer::Flatten]);
        let (err, _) = private_vs_plain(&m, n, WeightMode::Shared, 2, seed);
        prop_assert!(err <= 0.5 / 65536.0 + 1e-7, "err {err}");
    }

    #[test]
    fn conv_relu_pool_linear_chain_matches_burn(n in parties(), mode in mode(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m = model(vec![1, 8, 8], vec![
            conv(&mut rng, 1, 3, 3, 1, 0), relu(), pool(2), veil_engine::Layer::Flatten,
            linear(&mut rng, 27, 5), relu(), linear(&mut rng, 5, 3),
        ]);
        let (err, _) = private_vs_plain(&m, n, mode, 2, seed);
        prop_assert!(err <= 1e-3, "err {err}");
    }
}

#[test]
fn network_a_and_lenet_meet_the_error_targets() {
    let dev = device();
    for n in [2, 3, 5] {
        let (err, _) = private_vs_plain(
            &workloads::network_a(7, &dev).expect("builds"),
            n,
            WeightMode::Shared,
            1,
            11,
        );
        assert!(err <= 1e-3, "network-a with {n} parties: max abs err {err}");
    }
    let (err, _) = private_vs_plain(
        &workloads::lenet(7, &dev).expect("builds"),
        3,
        WeightMode::Shared,
        1,
        11,
    );
    assert!(err <= 1e-2, "lenet: max abs err {err}");
}

#[test]
fn relu_before_pool_is_swapped_and_the_rescale_is_fused() {
    let dev = device();
    let plan = Plan::compile(
        &workloads::lenet(7, &dev).expect("builds"),
        FixedPoint::default(),
        WeightMode::Shared,
    )
    .expect("compiles");
    let labels: Vec<&str> = plan.steps.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "conv2d#0",
            "maxpool2d#2",
            "relu#1+rescale",
            "conv2d#3",
            "maxpool2d#5",
            "relu#4+rescale",
            "linear#7",
            "relu#8+rescale",
            "linear#9",
            "rescale"
        ]
    );
}
