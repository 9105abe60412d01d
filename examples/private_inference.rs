//! Private inference of a model you define with burn modules, in a few lines.
//!
//! Run: `cargo run --release --example private_inference`
//!
//! The model owner's weights and the client's input are secret-shared among three parties that run in this
//! process over the in-memory network; the output shares are reconstructed and compared with burn.

use std::sync::Arc;

use burn::nn::{LinearConfig, Relu};
use burn::tensor::Device;
use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions};
use veil_engine::{Layer, Model, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

fn main() -> anyhow::Result<()> {
    let device = Device::flex();
    // Any chain of Linear, Conv2d, Relu, MaxPool2d and Flatten modules works.
    let model = Model::new(
        "tiny-mlp",
        vec![4],
        vec![
            Layer::Linear(LinearConfig::new(4, 8).init(&device)),
            Layer::Relu(Relu::new()),
            Layer::Linear(LinearConfig::new(8, 2).init(&device)),
        ],
        device,
    )?;
    // Weights secret-shared (the default); f = 16 fractional bits.
    let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared)?;
    let input = vec![0.5, -1.0, 0.25, 2.0];
    let report = run_private(
        &model,
        &plan,
        std::slice::from_ref(&input),
        1,
        &LocalOptions::new(3, Arc::new(RingGemm::default())),
    )?;
    let plain = model.forward_plain(&input, 1)?;
    println!("private   {:?}", report.outputs[0]);
    println!("plaintext {plain:?}");
    println!(
        "{} bytes sent by the busiest party, {} rounds",
        report.online[0]
            .iter()
            .map(|s| s.bytes_sent)
            .max()
            .unwrap_or(0),
        report.online[0].iter().map(|s| s.rounds).max().unwrap_or(0)
    );
    Ok(())
}
