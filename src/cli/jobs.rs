//! `veil jobs` (list), `veil job ID` (one job's status and history) and `veil submit` (run a private
//! inference through the coordinator and compare it with the plaintext model).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use veil_engine::{workloads, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

use super::coordinator::ConnectArgs;
use veil_node::api::{self, JobView, SubmitRequest};

/// Arguments of `veil jobs`.
#[derive(Args, Debug)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `veil job`.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job's id.
    pub id: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Cancel the job (its submitter only: pass the identity that submitted it).
    #[arg(long)]
    pub cancel: bool,
}

/// Arguments of `veil submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Workload: network-a or lenet.
    #[arg(long, default_value = "network-a")]
    pub workload: String,
    /// Seed of the workload's weights (the client is the model owner here: it shares them).
    #[arg(long, default_value_t = 7)]
    pub model_seed: u64,
    /// Seed of the sample inputs.
    #[arg(long, default_value_t = 1)]
    pub input_seed: u64,
    /// Inferences (each on its own sample input).
    #[arg(long, default_value_t = 1)]
    pub inferences: u32,
    /// Execution parties.
    #[arg(long, default_value_t = 2)]
    pub parties: u8,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Print one JSON object (job, attempts, outputs, plaintext outputs, max_abs_err) as the last line.
    #[arg(long)]
    pub json: bool,
}

fn print_job(j: &JobView) {
    println!(
        "job {}: {} (attempt {}/{}), {} x{} on {} parties",
        j.id,
        j.phase,
        j.attempt,
        j.max_attempts,
        j.request.workload,
        j.request.inferences,
        j.request.parties
    );
    if let Some(c) = &j.committee {
        let ids: Vec<String> = c.parties.iter().map(|m| format!("n{}", m.node)).collect();
        println!(
            "  committee: parties [{}], dealer n{}, verifier n{}",
            ids.join(", "),
            c.dealer.node,
            c.verifier.node
        );
    }
    if let Some(why) = &j.unplaced_reason {
        println!("  waiting for a committee: {why}");
    }
    if let Some(f) = &j.failure {
        println!("  failure: {f}");
    }
    for t in &j.history {
        println!(
            "  {} attempt {}: {} -> {}{}",
            t.at_ms,
            t.attempt,
            t.from,
            t.to,
            t.cause
                .as_ref()
                .map_or_else(String::new, |c| format!(" ({c})"))
        );
    }
}

/// Lists jobs, newest first.
pub fn list(args: JobsArgs) -> Result<()> {
    let api = args.connect.client()?;
    let jobs: Vec<JobView> = api.get_json(api::JOBS)?;
    if args.json {
        println!("{}", serde_json::to_string(&jobs)?);
        return Ok(());
    }
    println!(
        "{:>5}  {:<10}  {:>7}  {:<10}  {:>5}  committee",
        "id", "phase", "attempt", "workload", "infer"
    );
    for j in jobs {
        let committee = j.committee.as_ref().map_or_else(
            || "-".into(),
            |c| {
                let ids: Vec<String> = c.parties.iter().map(|m| format!("n{}", m.node)).collect();
                format!("{} + dealer n{}", ids.join(","), c.dealer.node)
            },
        );
        println!(
            "{:>5}  {:<10}  {:>7}  {:<10}  {:>5}  {}",
            j.id, j.phase, j.attempt, j.request.workload, j.request.inferences, committee
        );
    }
    Ok(())
}

/// Arguments of `veil receipts`.
#[derive(Args, Debug)]
pub struct ReceiptsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON array (each entry with the receipt's JSON) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Lists the coordinator's audit log of receipts.
pub fn receipts(args: ReceiptsArgs) -> Result<()> {
    let api = args.connect.client()?;
    let entries: Vec<api::ReceiptEntry> = api.get_json(api::RECEIPTS)?;
    if args.json {
        println!("{}", serde_json::to_string(&entries)?);
        return Ok(());
    }
    println!(
        "{:>5}  {:>7}  {:>15}  receipt",
        "job", "attempt", "stored (ms)"
    );
    for e in entries {
        let summary = veil_node::receipt::ReceiptFile::from_json(&e.receipt).map_or_else(
            |err| format!("unreadable: {err}"),
            |f| {
                format!(
                    "run {} {} verifier {}",
                    f.receipt.body.job,
                    f.receipt.body.protocol,
                    f.receipt.body.verifier.short()
                )
            },
        );
        println!(
            "{:>5}  {:>7}  {:>15}  {summary}",
            e.job, e.attempt, e.stored_at_ms
        );
    }
    Ok(())
}

/// Shows (or cancels) one job.
pub fn show(args: JobArgs) -> Result<()> {
    let api = args.connect.client()?;
    let job: JobView = if args.cancel {
        api.post_json(&api::cancel(args.id), &())?
    } else {
        api.get_json(&api::job(args.id))?
    };
    if args.json {
        println!("{}", serde_json::to_string(&job)?);
    } else {
        print_job(&job);
    }
    Ok(())
}

/// Runs a private inference through the coordinator and compares it with plaintext burn.
pub fn submit(args: SubmitArgs) -> Result<()> {
    let client = args.connect.session()?;
    let device = burn::tensor::Device::flex();
    let Some(model) = workloads::by_name(&args.workload, args.model_seed, &device) else {
        bail!("unknown workload {:?}", args.workload);
    };
    let model = model?;
    let fp = FixedPoint::default();
    let plan = Plan::compile(&model, fp, WeightMode::Shared)?;
    let inputs: Vec<Vec<f32>> = (0..u64::from(args.inferences))
        .map(|i| workloads::sample_input(&model, 1, args.input_seed + i))
        .collect();
    let request = SubmitRequest {
        workload: args.workload.clone(),
        model_seed: args.model_seed,
        weights: "shared".into(),
        frac_bits: fp.frac_bits(),
        batch: 1,
        inferences: args.inferences,
        parties: args.parties,
        model: None,
        output_key: None,
        protocol: "semi2k".into(),
        stage: None,
        threads: None,
        shaping: None,
    };
    let started = Instant::now();
    let mut last = (String::new(), 0u32);
    let quiet = args.json;
    let finished = client.run_job(
        request,
        &model,
        &plan,
        &inputs,
        Duration::from_secs(args.timeout_s),
        |view| {
            let now = (view.phase.clone(), view.attempt);
            if now != last {
                if !quiet {
                    println!("job {}: {} (attempt {})", view.id, view.phase, view.attempt);
                }
                eprintln!(
                    "{{\"event\":\"progress\",\"job\":{},\"phase\":\"{}\",\"attempt\":{}}}",
                    view.id, view.phase, view.attempt
                );
                last = now;
            }
        },
    )?;
    let plain: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| model.forward_plain(x, 1))
        .collect::<Result<_, _>>()?;
    let max_abs_err = finished
        .outputs
        .iter()
        .zip(&plain)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let out = serde_json::json!({
            "job": finished.job.id,
            "phase": finished.job.phase,
            "attempts": finished.job.attempt,
            "history": finished.job.history,
            "committee": finished.job.committee,
            "outputs": finished.outputs,
            "plaintext": plain,
            "max_abs_err": max_abs_err,
            "seconds": seconds,
        });
        println!("{out}");
    } else {
        print_job(&finished.job);
        println!(
            "{} inference(s) in {seconds:.2} s; max abs error vs plaintext burn: {max_abs_err:.2e}",
            finished.outputs.len()
        );
    }
    Ok(())
}
