//! `veil jobs` (list), `veil job ID` (one job's status and history) and `veil submit` (run a private
//! inference through the coordinator and compare it with the plaintext model).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use veil_engine::{workloads, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

use super::coordinator::ConnectArgs;
use veil_node::api::{self, JobView, SubmitRequest};
use veil_scheduler::beacon::{hex32, SEED_LABEL};
use veil_scheduler::explain::{ExplainError, JobExplanation};

/// Prints an explanation and rechecks it: an error if the recheck fails.
fn explain(e: &JobExplanation, json: bool) -> Result<()> {
    let outcome = e.recheck();
    let verdict = match &outcome {
        Ok(()) => "ok".to_owned(),
        Err(ExplainError::NotRevealed { .. }) => "pending".to_owned(),
        Err(err) => format!("failed: {err}"),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "explanation": e, "recheck": verdict })
        );
    } else {
        print_explanation(e, &outcome);
    }
    match outcome {
        Ok(()) | Err(ExplainError::NotRevealed { .. }) => Ok(()),
        Err(err) => bail!("the recheck of job {} failed: {err}", e.job),
    }
}

fn print_explanation(e: &JobExplanation, outcome: &Result<(), ExplainError>) {
    let name = |n: veil_scheduler::NodeId| {
        e.names
            .iter()
            .find(|x| x.node == n)
            .map_or_else(String::new, |x| {
                format!(" (operator {}, region {})", x.operator, x.region)
            })
    };
    println!("job {} attempt {}: why this committee", e.job, e.attempt);
    println!(
        "  beacon: anchor {} (published before submission), chain from {} ms, epoch {} of {} ms",
        hex32(&e.anchor),
        e.chain_start_ms,
        e.epoch,
        e.epoch_ms
    );
    match &e.secret {
        Some(s) => println!("  epoch secret (revealed): {}", hex32(s)),
        None => println!(
            "  epoch secret: not revealed until {} ms (the epoch's end); run again then to recheck",
            e.chain_start_ms + e.epoch * e.epoch_ms
        ),
    }
    let keys: Vec<String> = e.collusion_keys.iter().map(|k| k.to_string()).collect();
    println!(
        "  eligible: nodes of admitted operators (valid certificate), trial passed, claims within physical \
         bounds, up, reputation at or above the floor"
    );
    println!(
        "  filters in the draw: no two members share {}; free memory for the role; capacity floor; excluded {:?}",
        keys.join(" or "),
        e.exclude.iter().map(|n| n.0).collect::<Vec<_>>()
    );
    for (t, s) in e.stages.iter().enumerate() {
        let r = &s.record;
        println!(
            "  stage {t}: {} eligible, set hash {}, total weight {}",
            s.eligible.len(),
            r.eligible_hash.as_ref().map_or_else(|| "-".into(), hex32),
            r.total_weight
        );
        println!(
            "    seed = SHA-256({:?} || epoch {} || secret || job {} || attempt {} || stage {} || client {}) = {}",
            String::from_utf8_lossy(SEED_LABEL),
            s.seed_input.epoch,
            s.seed_input.job,
            s.seed_input.attempt,
            s.seed_input.stage,
            hex32(&s.seed_input.client),
            hex32(&r.seed)
        );
        println!(
            "    draw: round {}, region boost {}, operator cap {} ppm, {} tries per role, reference machine {:?}{}",
            r.round,
            r.params.region_boost,
            r.params.operator_cap_ppm,
            r.params.max_tries,
            r.reference,
            if r.cheapest_fallback {
                " (no round completed: cheapest committee taken)"
            } else {
                ""
            }
        );
        for p in &r.picks {
            println!(
                "    {:?}: n{}{} weight {} ({} of {}), {} tr{}{}{}",
                p.role,
                p.node.0,
                name(p.node),
                p.weight,
                format_args!(
                    "{:.2}%",
                    p.weight as f64 * 100.0 / r.total_weight.max(1) as f64
                ),
                r.total_weight,
                p.tries,
                if p.tries == 1 { "y" } else { "ies" },
                if p.in_anchor_region {
                    ", anchor region"
                } else {
                    ""
                },
                if p.fallback { ", fallback" } else { "" }
            );
        }
        println!(
            "    candidates (node: operator/region/asn ids, free bytes, ops/s, bytes/s, weight):"
        );
        for c in &s.eligible {
            println!(
                "      n{}: {}/{}/{}, {}, {}, {}, {}",
                c.node.0,
                c.domains[0],
                c.domains[1],
                c.domains[2],
                c.free_memory,
                c.ops_per_s,
                c.bandwidth,
                c.weight
            );
        }
    }
    match outcome {
        Ok(()) => println!(
            "  recheck: ok (the secret hashes to the anchor, each seed follows from its inputs, and the \
             draw over the published eligible set picks this committee)"
        ),
        Err(ExplainError::NotRevealed { .. }) => {
            println!("  recheck: pending (the epoch's secret is not revealed yet)")
        }
        Err(err) => println!("  recheck: FAILED: {err}"),
    }
}

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
    /// Explain the committee: the beacon, the eligible set, the seed and the draw, rechecked here (exits
    /// non-zero if the recheck fails; says when the epoch's secret is not revealed yet).
    #[arg(long, conflicts_with = "cancel")]
    pub explain: bool,
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
            "  committee: parties [{}], {}, {}",
            ids.join(", "),
            dealer_text(c),
            verifier_text(c)
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

/// Jobs per page asked of `GET /v1/jobs` (the coordinator's largest page).
const PAGE: usize = 1000;
/// Most pages `veil jobs` reads: the listing stops after `PAGE * MAX_PAGES` jobs.
const MAX_PAGES: usize = 100;

/// The caller's jobs, oldest first, read page by page (`after` the last id seen).
fn all_jobs(api: &veil_node::api_client::ApiClient) -> Result<Vec<JobView>> {
    let mut jobs: Vec<JobView> = Vec::new();
    for _ in 0..MAX_PAGES {
        let after = jobs.last().map_or(0, |j| j.id);
        let page: Vec<JobView> =
            api.get_json(&format!("{}?after={after}&limit={PAGE}", api::JOBS))?;
        let full = page.len() == PAGE;
        jobs.extend(page);
        if !full {
            return Ok(jobs);
        }
    }
    eprintln!("note: listing only the first {} jobs", jobs.len());
    Ok(jobs)
}

/// Lists the caller's own jobs, newest first.
pub fn list(args: JobsArgs) -> Result<()> {
    let api = args.connect.client()?;
    let mut jobs = all_jobs(&api)?;
    jobs.reverse();
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
                format!("{} + {}", ids.join(","), dealer_text(c))
            },
        );
        println!(
            "{:>5}  {:<10}  {:>7}  {:<10}  {:>5}  {}",
            j.id, j.phase, j.attempt, j.request.workload, j.request.inferences, committee
        );
    }
    Ok(())
}

/// Arguments of `veil beacon`.
#[derive(Args, Debug)]
pub struct BeaconArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Prints the coordinator's draw beacon: the chain's anchor (fixed before any job of the chain is
/// submitted) and the last revealed epoch secret.
pub fn beacon(args: BeaconArgs) -> Result<()> {
    let api = args.connect.client()?;
    let v: serde_json::Value = api.get_json("/v1/beacon")?;
    if args.json {
        println!("{v}");
    } else {
        println!(
            "anchor {} (chain from {} ms, {} epochs of {} ms); epoch {} now; epoch {} revealed: {}",
            v["anchor"].as_str().unwrap_or("?"),
            v["chain_start_ms"],
            v["chain_epochs"],
            v["epoch_ms"],
            v["epoch"],
            v["revealed_epoch"],
            v["revealed"].as_str().unwrap_or("-")
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
    if args.explain {
        let e: JobExplanation = api.get_json(&format!("/v1/jobs/{}/explain", args.id))?;
        return explain(&e, args.json);
    }
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
        protocol: veil_protocols::protocol::Protocol::Semi2k.to_string(),
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

/// The committee's dealer as the job views print it: `dealer nK`, or `no dealer` (`rep3`).
pub(super) fn dealer_text(c: &veil_node::api::CommitteeView) -> String {
    c.dealer
        .as_ref()
        .map_or_else(|| "no dealer".into(), |d| format!("dealer n{}", d.node))
}

/// The committee's verifier as the job views print it: `verifier nK`, or `no verifier` (`rep3`).
pub(super) fn verifier_text(c: &veil_node::api::CommitteeView) -> String {
    c.verifier
        .as_ref()
        .map_or_else(|| "no verifier".into(), |v| format!("verifier n{}", v.node))
}
