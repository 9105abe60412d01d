//! `veil demo`: the main job, the whole path of an encrypted job on loopback. It starts a real network in
//! processes (a `veil coordinator` and five `veil node`s of five operators, each node passing its trial
//! job), deploys the shipped breast-cancer classifier (MLP 30-16-2, trained with burn on the Wisconsin
//! diagnostic data, `models/breast-cancer/`) with secret-shared weights, and classifies the 114 held-out
//! rows in one private job: the client secret-shares the rows and the weights, seals each party's shares
//! to that node's X25519 key, the coordinator picks a non-colluding committee (parties, dealer, verifier)
//! and relays only ciphertext, the parties compute over QUIC with mutual TLS, and seal their output
//! shares to the client, which opens and reconstructs them. Each prediction is printed next to burn's
//! plaintext prediction, with the accuracy, time and bytes per inference, and a line per phase.
//!
//! The model and the rows are compiled into the binary, so the demo runs from any directory; every process
//! it starts is stopped when it ends, also on error.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_engine::model_file::{argmax, ModelFile};
use veil_engine::{Plan, WeightMode};
use veil_protocols::protocol::Protocol;
use veil_protocols::ring::FixedPoint;

use super::local::{LocalNetwork, LocalOptions};
use veil_node::api::{JobView, SubmitRequest};

/// The shipped model file (`models/breast-cancer/model.safetensors`).
pub(super) const MODEL: &[u8] = include_bytes!("../../models/breast-cancer/model.safetensors");
/// The shipped held-out rows: 30 features and the class (0 malignant, 1 benign).
const ROWS: &str = include_str!("../../models/breast-cancer/test.csv");

/// Arguments of `veil demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Execution parties.
    #[arg(long, default_value_t = 3)]
    pub parties: usize,
    /// Node processes to start (at least parties + 2: a dealer and a verifier).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Rows printed one by one (all rows are classified).
    #[arg(long, default_value_t = 12)]
    pub show: usize,
    /// spdz2k (MAC-checked, verified, with a signed receipt) or semi2k.
    #[arg(long, default_value = "spdz2k")]
    pub protocol: Protocol,
    /// Write the job's receipt to this file (check it with `veil verify FILE --coordinator-key KEY`).
    #[arg(long)]
    pub receipt: Option<std::path::PathBuf>,
}

/// Parses the shipped rows.
pub(super) fn rows() -> Result<Vec<(Vec<f32>, usize)>> {
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

/// A one-line progress bar on stderr when it is a terminal (nothing otherwise: the phase lines on stdout
/// tell the same story).
struct Bar {
    tty: bool,
    started: Instant,
}

impl Bar {
    fn new() -> Bar {
        Bar {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn show(&self, done: usize, total: usize, what: &str) {
        if !self.tty {
            return;
        }
        let width = 30;
        let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r  [{}{}] {what:<40} {:>5.1} s",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.started.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r{:80}\r", "");
        }
    }
}

/// The job's phases in order, for the bar.
const PHASES: [&str; 5] = ["submitted", "scheduled", "running", "verifying", "done"];

fn committee_line(view: &JobView) -> String {
    match &view.committee {
        Some(c) => {
            let parties: Vec<String> = c.parties.iter().map(|m| format!("n{}", m.node)).collect();
            format!(
                "parties {}, {}, {}",
                parties.join(" "),
                super::jobs::dealer_text(c),
                super::jobs::verifier_text(c)
            )
        }
        None => String::new(),
    }
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    if args.parties < 2 {
        bail!("a committee needs at least 2 parties");
    }
    if !matches!(args.protocol, Protocol::Spdz2k | Protocol::Semi2k) {
        bail!("--protocol {}: use spdz2k or semi2k", args.protocol);
    }
    if args.nodes < args.parties + 2 {
        bail!(
            "--nodes must be at least parties + 2 = {}: the dealer and the verifier come from other operators",
            args.parties + 2
        );
    }
    let started = Instant::now();
    let device = burn::tensor::Device::flex();
    let file = ModelFile::parse(MODEL, None, &device).context("loading the shipped model")?;
    let model = file.model();
    let plan = Plan::compile(model, FixedPoint::default(), WeightMode::Shared)?;
    let rows = rows()?;
    // Every row is checked (shape, NaN/inf) before anything starts.
    let inputs: Vec<Vec<f32>> = rows
        .iter()
        .map(|(x, _)| file.prepare_input(x, 1))
        .collect::<Result<_, _>>()?;
    println!(
        "veil demo: breast-cancer classifier (MLP 30-16-2, model id {}...), {} held-out rows of the Wisconsin \
         diagnostic data",
        &file.id()[..16],
        rows.len()
    );
    println!(
        "  starting a coordinator and {} nodes of {} operators on 127.0.0.1 (real processes, QUIC + mutual TLS)",
        args.nodes, args.nodes
    );
    let bar = Bar::new();
    let exe = std::env::current_exe().context("locating the veil executable")?;
    let options = LocalOptions {
        nodes: args.nodes,
        log: "warn".into(),
        max_stage_memory_bytes: 0,
    };
    let net = LocalNetwork::start(&exe, &options)?;
    let client = net.client(None)?;
    net.wait_active(&client, args.nodes, Duration::from_secs(90), |active| {
        bar.show(
            active,
            args.nodes,
            &format!("{active}/{} nodes passed their trial", args.nodes),
        )
    })?;
    bar.clear();
    println!(
        "  [{:>5.2} s] network up: every node registered its keys and passed its known-answer trial over QUIC (examined by another operator's node, its speed measured)",
        started.elapsed().as_secs_f64()
    );
    let frac_bits = plan.fixed_point.frac_bits();
    let deployed = client.deploy(
        &file,
        WeightMode::Shared,
        args.parties as u8,
        frac_bits,
        args.protocol.name(),
    )?;
    println!(
        "  [{:>5.2} s] deployed model {}... ({}): architecture public, weights secret-shared per job, {}",
        started.elapsed().as_secs_f64(),
        &deployed.id[..16],
        deployed.name,
        args.protocol
    );
    let request = SubmitRequest {
        workload: "deployed".into(),
        model_seed: 0,
        weights: "shared".into(),
        frac_bits,
        batch: 1,
        inferences: rows.len() as u32,
        parties: args.parties as u8,
        model: Some(deployed.id.clone()),
        output_key: None,
        protocol: args.protocol.to_string(),
        stage: None,
        threads: None,
        shaping: None,
    };
    let job_started = Instant::now();
    let mut last = String::new();
    let finished = client.run_job(
        request,
        model,
        &plan,
        &inputs,
        Duration::from_secs(180),
        |view| {
            if last.is_empty() {
                bar.clear();
                println!(
                    "  [{:>5.2} s] job {} submitted: {} rows checked (shape, finite) and encoded, nothing sent yet",
                    started.elapsed().as_secs_f64(),
                    view.id,
                    inputs.len()
                );
            }
            if view.phase != last {
                bar.clear();
                let detail = match view.phase.as_str() {
                    "scheduled" => format!(
                        " on a non-colluding committee: {}; inputs and weights sealed to each party",
                        committee_line(view)
                    ),
                    "running" => " (the parties compute over QUIC)".to_string(),
                    "verifying" => {
                        " (the verifier checks the parties' MAC-check transcripts)".to_string()
                    }
                    "done" => " (output shares sealed to this client)".to_string(),
                    _ => String::new(),
                };
                println!(
                    "  [{:>5.2} s] job {} {}{detail}",
                    started.elapsed().as_secs_f64(),
                    view.id,
                    view.phase
                );
                last = view.phase.clone();
            }
            let step = PHASES.iter().position(|p| *p == view.phase).unwrap_or(0);
            bar.show(step + 1, PHASES.len(), &format!("job {}", view.phase));
        },
    );
    bar.clear();
    let finished = match finished {
        Ok(f) => f,
        Err(e) => bail!("the private job failed: {e:#}\n{}", net.logs()),
    };
    let job_seconds = job_started.elapsed().as_secs_f64();
    let coordinator_key = net.coordinator_key();
    drop(net);

    println!(
        "\n  {:>4}  {:>10}  {:>10}  {:>10}  {:>12}",
        "row", "truth", "private", "plaintext", "max |err|"
    );
    let (mut right_private, mut right_plain, mut agree) = (0, 0, 0);
    for (i, (((_, truth), input), private)) in
        rows.iter().zip(&inputs).zip(&finished.outputs).enumerate()
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
    let n = rows.len();
    let per_inference = |f: &dyn Fn(&veil_node::wire::PartyReport, usize) -> f64| -> f64 {
        median(
            (0..n)
                .map(|k| {
                    finished
                        .reports
                        .iter()
                        .map(|r| f(r, k))
                        .fold(0f64, f64::max)
                })
                .collect(),
        )
    };
    let ms = per_inference(&|r, k| r.latencies.get(k).copied().unwrap_or(0.0) * 1e3);
    let bytes = per_inference(&|r, k| r.online.get(k).map_or(0.0, |s| s.bytes_sent as f64));
    let rounds = per_inference(&|r, k| r.online.get(k).map_or(0.0, |s| s.rounds as f64));
    let dealer_bytes = finished.reports.first().map_or(0, |r| r.dealer_bytes);
    println!(
        "\n  accuracy: private {:.3}, plaintext {:.3}; {agree}/{n} private predictions equal the plaintext ones",
        right_private as f64 / n as f64,
        right_plain as f64 / n as f64,
    );
    println!(
        "  per inference (median): {ms:.2} ms computing, {:.1} KB sent by each party, {rounds} rounds; dealer {:.1} KB",
        bytes / 1e3,
        dealer_bytes as f64 / n as f64 / 1e3
    );
    println!(
        "  job: {n} inferences in {job_seconds:.2} s end to end (attempt {}); whole demo {:.1} s; every process stopped",
        finished.job.attempt,
        started.elapsed().as_secs_f64()
    );
    if let Some(receipt) = &finished.receipt {
        let file = veil_node::receipt::ReceiptFile::from_json(receipt)?;
        let body = &file.receipt.body;
        let verifier = finished
            .job
            .committee
            .as_ref()
            .and_then(|c| c.verifier.as_ref())
            .map_or(String::new(), |v| format!("n{} ", v.node));
        println!(
            "  receipt: signed by the verifier {verifier}({}...) over job {}, model {}..., inputs {}..., \
             outputs {}..., MAC-check transcripts {}...; checked by this client",
            &body.verifier.to_string()[..16],
            body.job,
            &hex::encode(body.model_id)[..16],
            &hex::encode(body.input_commitment)[..12],
            &hex::encode(body.output_commitment)[..12],
            &hex::encode(body.transcript_hash)[..12],
        );
        if let Some(path) = &args.receipt {
            std::fs::write(path, receipt).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "  receipt saved to {}: veil verify {} --coordinator-key {coordinator_key}",
                path.display(),
                path.display()
            );
        }
    }
    if agree != n {
        bail!("private and plaintext predictions differ on some rows");
    }
    Ok(())
}
