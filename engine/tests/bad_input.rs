//! Bad input gives a clear error naming the problem, never a panic.

mod common;

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions};
use veil_engine::{workloads, EngineError, Model, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

use common::*;

#[test]
fn wrong_input_shape_is_named() {
    let m = workloads::network_a(1, &device()).expect("builds");
    let plan = Plan::compile(&m, FixedPoint::default(), WeightMode::Shared).expect("compiles");
    let options = LocalOptions::new(3, Arc::new(RingGemm::new(1)));
    let err = run_private(&m, &plan, &[vec![0.5; 100]], 1, &options).expect_err("wrong size");
    assert!(
        matches!(
            err,
            EngineError::InputShape {
                got: 100,
                expected: 784,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("784"), "{err}");
    let err = m.forward_plain(&[0.0; 784], 0).expect_err("empty batch");
    assert!(matches!(err, EngineError::EmptyBatch));
    let err = run_private(&m, &plan, &[vec![f32::NAN; 784]], 1, &options).expect_err("NaN");
    assert!(err.to_string().contains("not finite"), "{err}");
}

#[test]
fn layers_that_do_not_chain_are_named() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let err = Model::new(
        "bad",
        vec![10],
        vec![linear(&mut rng, 10, 5), linear(&mut rng, 6, 2)],
        device(),
    )
    .expect_err("5 != 6");
    assert!(
        matches!(
            err,
            EngineError::LayerShape {
                index: 1,
                layer: "linear",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("layer 1 (linear) expects [6]"),
        "{err}"
    );
    let err = Model::new(
        "bad",
        vec![10],
        vec![conv(&mut rng, 1, 2, 3, 1, 0)],
        device(),
    )
    .expect_err("conv on flat");
    assert!(
        matches!(
            err,
            EngineError::LayerShape {
                index: 0,
                layer: "conv2d",
                ..
            }
        ),
        "{err}"
    );
    let err = Model::new(
        "bad",
        vec![1, 2, 2],
        vec![conv(&mut rng, 1, 2, 3, 1, 0)],
        device(),
    )
    .expect_err("kernel too big");
    assert!(err.to_string().contains("at least 3x3"), "{err}");
    let err = Model::new(
        "bad",
        vec![3, 8, 8],
        vec![conv(&mut rng, 1, 2, 3, 1, 0)],
        device(),
    )
    .expect_err("channels");
    assert!(err.to_string().contains("[1, height, width]"), "{err}");
}

#[test]
fn fewer_than_two_parties_is_refused() {
    let m = workloads::network_a(1, &device()).expect("builds");
    let plan = Plan::compile(&m, FixedPoint::default(), WeightMode::Shared).expect("compiles");
    for n in [0, 1] {
        let options = LocalOptions::new(n, Arc::new(RingGemm::new(1)));
        let err = run_private(&m, &plan, &[vec![0.5; 784]], 1, &options).expect_err("n < 2");
        assert!(err.to_string().contains("at least 2"), "{err}");
    }
}

#[test]
fn fractional_bits_too_large_for_the_ring_are_refused() {
    for f in [0, 27, 32, 64] {
        let err = FixedPoint::new(f).expect_err("f out of range");
        assert!(
            err.to_string().contains("too large for the ring")
                && err.to_string().contains("1..=26"),
            "{err}"
        );
    }
    assert!(FixedPoint::new(26).is_ok());
}
