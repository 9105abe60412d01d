//! An enterprise submits a private inference job to a committee of nodes over QUIC.
//!
//! Run: `cargo run --release --example enterprise_job`
//!
//! What happens, as in production but on 127.0.0.1: three execution nodes and a dealer node start (in this
//! process, each with its own identity and QUIC endpoint); the enterprise, holding its own key, signs a
//! manifest naming the committee, secret-shares its input and the model owner's weights, sends each party
//! only its shares, and reconstructs the output from the parties' output shares. No node ever sees the
//! input, the weights or the output. The example compares the result with the plaintext model and prints
//! the job's costs (MP-SPDZ style: data sent by one party, rounds, global data).
//!
//! Shaping: set `VEIL_LATENCY_MS` (and optionally `VEIL_BANDWIDTH_MBPS`) to run the same job over emulated
//! WAN links.

use std::time::Duration;

use anyhow::{Context, Result};
use veil_engine::lab::shaping::ShapingConfig;
use veil_engine::{workloads, Plan, WeightMode};
use veil_node::client::{run_private, Client, ClientOptions, Committee, QuicJob};
use veil_node::manifest::{Member, ModelSpec};
use veil_node::{Identity, Node, NodeConfig, PublicKey};
use veil_protocols::ring::FixedPoint;

/// A node on 127.0.0.1 that accepts jobs signed by `enterprise`.
fn start_node(enterprise: PublicKey, data_dir: &std::path::Path) -> Result<Node> {
    let mut config = NodeConfig::new(([127, 0, 0, 1], 0).into(), data_dir.to_path_buf());
    config.trusted_submitters = vec![enterprise];
    let identity = Identity::generate()?;
    Ok(Node::start(config, &identity)?)
}

fn member(node: &Node) -> Member {
    Member {
        address: node.address(),
        public_key: node.public_key(),
    }
}

fn shaping_from_env() -> Result<Option<ShapingConfig>> {
    let number = |name: &str| -> Result<Option<f64>> {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<f64>().with_context(|| format!("{name}={v:?}")))
            .transpose()
    };
    let (latency, bandwidth) = (number("VEIL_LATENCY_MS")?, number("VEIL_BANDWIDTH_MBPS")?);
    if latency.is_none() && bandwidth.is_none() {
        return Ok(None);
    }
    Ok(Some(ShapingConfig::new(latency.unwrap_or(0.0), bandwidth)?))
}

fn main() -> Result<()> {
    let state = tempfile::tempdir()?;
    let enterprise = Identity::generate()?;
    let parties: Vec<Node> = (0..3)
        .map(|_| start_node(enterprise.public_key(), state.path()))
        .collect::<Result<_>>()?;
    let dealer = start_node(enterprise.public_key(), state.path())?;
    let committee = Committee {
        parties: parties.iter().map(member).collect(),
        dealer: Some(member(&dealer)),
    };
    let client = Client::new(
        enterprise,
        ClientOptions {
            bind: ([127, 0, 0, 1], 0).into(),
            job_timeout: Duration::from_secs(300),
            shaping: shaping_from_env()?,
            ..ClientOptions::default()
        },
    )?;

    // The model both sides agree on: network-a (MLP 784-128-128-10) with the model owner's weights.
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name("network-a", 7, &device).context("network-a")??;
    let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared)?;
    let job = QuicJob {
        model: &model,
        plan: &plan,
        spec: ModelSpec {
            workload: "network-a".into(),
            seed: 7,
            weights: WeightMode::Shared,
            frac_bits: plan.fixed_point.frac_bits(),
            deployed: None,
        },
        batch: 1,
        threads: 1,
        seed: None,
        profile: false,
    };
    let input = workloads::sample_input(&model, 1, 3);
    let run = run_private(&client, &committee, &job, std::slice::from_ref(&input))?;

    let private = &run.report.outputs[0];
    let plain = model.forward_plain(&input, 1)?;
    let err = private
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("private output   {private:.4?}");
    println!("plaintext output {plain:.4?}");
    println!("max |error|      {err:.2e}");
    let online = &run.report.online[0];
    println!(
        "time {:.2} ms | data sent by one party {:.1} KB in {} rounds | global {:.1} KB | dealer {:.1} KB",
        run.report.latencies[0].as_secs_f64() * 1e3,
        online.iter().map(|s| s.bytes_sent).max().unwrap_or(0) as f64 / 1e3,
        online.iter().map(|s| s.rounds).max().unwrap_or(0),
        online.iter().map(|s| s.bytes_sent).sum::<u64>() as f64 / 1e3,
        run.report.dealer_bytes as f64 / 1e3
    );
    Ok(())
}
