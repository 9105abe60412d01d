//! `veil demo`: the main job. A real model on real data: the shipped breast-cancer classifier (MLP 30-16-2,
//! trained with burn on the Wisconsin diagnostic data, `models/breast-cancer/`) classifies the 114 held-out
//! rows privately, weights and inputs secret-shared among the parties (semi2k, in memory), each prediction
//! printed next to burn's plaintext prediction, with accuracy, time, bytes and rounds per inference.
//!
//! The model and the rows are compiled into the binary, so the demo runs from any directory.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions};
use veil_engine::model_file::{argmax, ModelFile};
use veil_engine::{Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

/// The shipped model file (`models/breast-cancer/model.safetensors`).
const MODEL: &[u8] = include_bytes!("../../models/breast-cancer/model.safetensors");
/// The shipped held-out rows: 30 features and the class (0 malignant, 1 benign).
const ROWS: &str = include_str!("../../models/breast-cancer/test.csv");

/// Arguments of `veil demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Execution parties.
    #[arg(long, default_value_t = 3)]
    pub parties: usize,
    /// Rows printed one by one (all rows are classified).
    #[arg(long, default_value_t = 12)]
    pub show: usize,
}

/// Parses the shipped rows.
fn rows() -> Result<Vec<(Vec<f32>, usize)>> {
    ROWS.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let v: Vec<f32> = line
                .split(',')
                .map(|c| c.trim().parse::<f32>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("shipped row {i}"))?;
            match v.split_last() {
                Some((class, features)) if features.len() == 30 => {
                    Ok((features.to_vec(), *class as usize))
                }
                _ => bail!("shipped row {i} has {} values, expected 31", v.len()),
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    if args.parties < 2 {
        bail!("a committee needs at least 2 parties");
    }
    let device = burn::tensor::Device::flex();
    let file = ModelFile::parse(MODEL, None, &device).context("loading the shipped model")?;
    let model = file.model();
    let plan = Plan::compile(model, FixedPoint::default(), WeightMode::Shared)?;
    let rows = rows()?;
    println!(
        "veil demo: breast-cancer classifier (MLP 30-16-2, model id {}...), {} held-out rows of the Wisconsin \
         diagnostic data",
        &file.id()[..16],
        rows.len()
    );
    println!(
        "  weights and inputs secret-shared among {} parties (semi2k, dealer-assisted), nothing opened but masked values",
        args.parties
    );
    let inputs: Vec<Vec<f32>> = rows
        .iter()
        .map(|(x, _)| file.prepare_input(x, 1))
        .collect::<Result<_, _>>()?;
    let options = LocalOptions::new(args.parties, Arc::new(RingGemm::new(1)));
    let report = run_private(model, &plan, &inputs, 1, &options)?;

    println!(
        "\n  {:>4}  {:>10}  {:>10}  {:>10}  {:>12}",
        "row", "truth", "private", "plaintext", "max |err|"
    );
    let (mut right_private, mut right_plain, mut agree) = (0, 0, 0);
    for (i, (((_, truth), input), private)) in
        rows.iter().zip(&inputs).zip(&report.outputs).enumerate()
    {
        let plain = model.forward_plain(input, 1)?;
        let err = private
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let (p, q) = (argmax(private), argmax(&plain));
        right_private += usize::from(p == Some(*truth));
        right_plain += usize::from(q == Some(*truth));
        agree += usize::from(p == q);
        if i < args.show {
            let label = |c: Option<usize>| c.map_or("-".into(), |c| file.label(c));
            println!(
                "  {i:>4}  {:>10}  {:>10}  {:>10}  {err:>12.2e}",
                file.label(*truth),
                label(p),
                label(q)
            );
        }
    }
    if rows.len() > args.show {
        println!("  ... ({} more rows)", rows.len() - args.show);
    }
    let n = rows.len() as f64;
    let ms = median(
        report
            .latencies
            .iter()
            .map(|l| l.as_secs_f64() * 1e3)
            .collect(),
    );
    let bytes = median(
        report
            .online
            .iter()
            .map(|parties| parties.iter().map(|s| s.bytes_sent).max().unwrap_or(0) as f64)
            .collect(),
    );
    let rounds = report
        .online
        .first()
        .and_then(|p| p.iter().map(|s| s.rounds).max())
        .unwrap_or(0);
    println!(
        "\n  accuracy: private {:.3}, plaintext {:.3}; {agree}/{} private predictions equal the plaintext ones",
        right_private as f64 / n,
        right_plain as f64 / n,
        rows.len()
    );
    println!(
        "  per inference (median): {ms:.2} ms, {:.1} KB sent by each party, {rounds} rounds; dealer {:.1} KB",
        bytes / 1e3,
        report.dealer_bytes as f64 / n / 1e3
    );
    if agree != rows.len() {
        bail!("private and plaintext predictions differ on some rows");
    }
    Ok(())
}
