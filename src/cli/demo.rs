//! `veil demo`: the main job. For now: a private inference of network-a by three parties, each prediction
//! next to the plaintext one computed by burn.

use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions};
use veil_engine::{workloads, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

/// Arguments of `veil demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Execution parties.
    #[arg(long, default_value_t = 3)]
    pub parties: usize,
    /// Number of inputs to classify.
    #[arg(long, default_value_t = 4)]
    pub inputs: usize,
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let device = burn::tensor::Device::flex();
    let model = workloads::network_a(7, &device)?;
    let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared)?;
    println!(
        "veil demo: network-a (MLP 784-128-128-10), weights secret-shared among {} parties, semi2k",
        args.parties
    );
    let inputs: Vec<Vec<f32>> = (0..args.inputs as u64)
        .map(|i| workloads::sample_input(&model, 1, 100 + i))
        .collect();
    let options = LocalOptions::new(args.parties, Arc::new(RingGemm::new(1)));
    let report = run_private(&model, &plan, &inputs, 1, &options)?;
    let mut agree = 0;
    for (i, (input, private)) in inputs.iter().zip(&report.outputs).enumerate() {
        let plain = model.forward_plain(input, 1)?;
        let err = private
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let (p, q) = (argmax(private), argmax(&plain));
        agree += usize::from(p == q);
        println!(
            "  input {i}: private class {p}, plaintext class {q}, max |logit error| {err:.2e}, {:.2} ms, {:.1} KB/party, {} rounds",
            report.latencies[i].as_secs_f64() * 1e3,
            report.online[i].iter().map(|s| s.bytes_sent).max().unwrap_or(0) as f64 / 1e3,
            report.online[i].iter().map(|s| s.rounds).max().unwrap_or(0),
        );
    }
    println!(
        "{agree}/{} private predictions equal the plaintext ones",
        inputs.len()
    );
    Ok(())
}
