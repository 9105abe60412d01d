//! The enterprise path: `veil deploy` (publish a model's public part to a coordinator, keep its weights) and
//! `veil infer` (private predictions on rows of a CSV or JSON file through the coordinator).
//!
//! The client directory (`--identity`, default `veil-client/`) holds the client's Ed25519 identity (jobs and
//! deployments belong to it), its X25519 key (outputs are sealed to it) and the models it deployed
//! (`models/{id}.safetensors`): with shared weights the owner's client deals fresh weight shares to each
//! job's committee, so `veil infer` needs the weights the owner deployed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use veil_engine::model_file::{argmax, ModelFile};
use veil_engine::{Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

use super::coordinator::ConnectArgs;
use veil_node::api::{self, DeployRequest, ModelView, StagesView, SubmitRequest};

/// Default client directory.
const DEFAULT_CLIENT_DIR: &str = "veil-client";
/// Most rows one `veil infer` sends (the coordinator's limit of inferences per job).
const MAX_ROWS: usize = 10_000;

/// Arguments of `veil deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The model file (veil safetensors with its architecture, a burn record, or an ONNX file; see
    /// models/README.md), or the name of a fetched pretrained encoder (`all-minilm-l6-v2`: public weights, id = hash of its files).
    #[arg(long)]
    pub model: PathBuf,
    /// `shared`: the weights are secret-shared too (nobody but the owner sees them); `public`. An ONNX
    /// model's (`X.onnx`, a self-contained file) are always public to the parties.
    #[arg(long, default_value = "shared")]
    pub weights: String,
    /// Execution parties of its jobs.
    #[arg(long, default_value_t = 3)]
    pub parties: u8,
    /// Protocol: semi2k, spdz2k (MAC-checked: a cheating party aborts the job; every answer carries a
    /// receipt signed by the committee's verifier), rep3 (three parties of three operators, no dealer;
    /// honest majority, honest-but-curious; needs --parties 3), or rep3m (rep3 with malicious security
    /// with abort: every answer carries a receipt signed by the committee's verifier; needs --parties 3).
    #[arg(long, default_value = "spdz2k")]
    pub protocol: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the deployment as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `veil infer`.
#[derive(Args, Debug)]
pub struct InferArgs {
    /// The deployed model's id (what `veil deploy` printed).
    #[arg(long)]
    pub model: String,
    /// Rows to classify: CSV (one item per line, comma-separated numbers; `#` comments) or a JSON array of
    /// arrays (`.json`).
    #[arg(long)]
    pub input: PathBuf,
    /// The last CSV column is the true class: it is not sent, and the accuracy is printed.
    #[arg(long)]
    pub with_labels: bool,
    /// Write the predictions as JSON to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// spdz2k, rep3m: write the job's receipt (checked) to this file, for `veil verify`.
    #[arg(long)]
    pub receipt: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the result as one JSON object (last line).
    #[arg(long)]
    pub json: bool,
    /// TEST ONLY fault injection on the sealed inputs: flip-bit, swap-parties, keep:DIR, replay:DIR.
    #[arg(long, hide = true)]
    pub insecure_tamper: Option<veil_client::Tamper>,
}

fn client_dir(connect: &ConnectArgs) -> PathBuf {
    connect
        .identity
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CLIENT_DIR))
}

fn stored_model(dir: &Path, id: &str) -> PathBuf {
    dir.join("models").join(format!("{id}.safetensors"))
}

fn weight_mode(s: &str) -> Result<WeightMode> {
    match s {
        "shared" => Ok(WeightMode::Shared),
        "public" => Ok(WeightMode::Public),
        other => bail!("--weights {other:?}: use shared or public"),
    }
}

/// Runs `veil deploy`.
pub fn deploy(mut args: DeployArgs) -> Result<()> {
    use veil_protocols::protocol::Protocol;
    let protocol = Protocol::parse(&args.protocol)
        .filter(|&p| veil_node::manifest::runs_on_nodes(p))
        .with_context(|| {
            format!(
                "--protocol {:?}: use semi2k, spdz2k, rep3 or rep3m",
                args.protocol
            )
        })?;
    if !protocol.supports_parties(args.parties.into()) {
        bail!(
            "{protocol} runs with {}, not --parties {}",
            protocol.party_requirement(),
            args.parties
        );
    }
    if args.model.to_str() == Some(veil_node::generation::SMOLLM2) {
        return super::chat::deploy(&args);
    }
    if let Some(name) = args
        .model
        .to_str()
        .filter(|n| veil_engine::bert::pretrained::is_pretrained(n))
    {
        return super::embed_job::deploy_pretrained(name, &args);
    }
    if veil_engine::onnx::looks_like_onnx_file(&args.model) {
        // An ONNX model's weights are public to the parties (`--weights` does not apply).
        let dir = client_dir(&args.connect);
        args.connect.identity = Some(dir);
        return super::onnx_job::deploy(&args);
    }
    let mode = weight_mode(&args.weights)?;
    let device = burn::tensor::Device::flex();
    let file = ModelFile::load(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let dir = client_dir(&args.connect);
    args.connect.identity = Some(dir.clone());
    let client = args.connect.session()?;
    let view = client.deploy(
        &file,
        mode,
        args.parties,
        FixedPoint::default().frac_bits(),
        &args.protocol,
    )?;
    let path = stored_model(&dir, &view.id);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    file.save(&path)?;
    if args.json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        println!(
            "deployed {} as model {}\n  weights: {} ({} parties, {}); kept for your jobs in {}\n  run: veil infer --model {} --input ROWS.csv",
            view.name,
            view.id,
            args.weights,
            args.parties,
            args.protocol,
            path.display(),
            view.id
        );
    }
    Ok(())
}

/// Parses the rows of `path`: CSV or JSON (by extension).
pub(super) fn read_rows(path: &Path) -> Result<Vec<Vec<f32>>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        meta.len() <= 256 << 20,
        "{} is larger than 256 MiB",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Vec<f32>> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: a JSON array of arrays", path.display()))?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(i, line)| {
                line.split(',')
                    .map(|c| c.trim().parse::<f32>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| {
                        format!("{} line {}: not a row of numbers", path.display(), i + 1)
                    })
            })
            .collect::<Result<_>>()?
    };
    ensure!(!rows.is_empty(), "{} holds no rows", path.display());
    ensure!(
        rows.len() <= MAX_ROWS,
        "{} rows: at most {MAX_ROWS} per job",
        rows.len()
    );
    Ok(rows)
}

/// Runs `veil infer`.
pub fn infer(mut args: InferArgs) -> Result<()> {
    let dir = client_dir(&args.connect);
    args.connect.identity = Some(dir.clone());
    let path = stored_model(&dir, &args.model);
    if !path.exists() {
        // Not a veil model file this client deployed: an ONNX model (its file is in the deployment)?
        let mut client = args.connect.session()?;
        client.tamper = args.insecure_tamper.clone();
        let deployments = super::onnx_job::deployments(&client)?;
        if let Some(d) = super::onnx_job::find(&deployments, &args.model) {
            veil_node::record::init("client");
            return super::onnx_job::infer(&args, &client, d);
        }
    }
    let device = burn::tensor::Device::flex();
    let file = ModelFile::load(&path, &device).with_context(|| {
        format!(
            "model {} is not among the models this client deployed (looked for {})",
            args.model,
            path.display()
        )
    })?;
    ensure!(
        file.id() == args.model,
        "{} holds model {}, not {}",
        path.display(),
        file.id(),
        args.model
    );
    // Everything is read and checked (shape, NaN/inf) before anything is sent.
    let mut rows = read_rows(&args.input)?;
    let labels: Option<Vec<usize>> = if args.with_labels {
        let mut labels = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter_mut().enumerate() {
            let label = r.pop().with_context(|| format!("row {i} is empty"))?;
            ensure!(
                label >= 0.0 && label.fract() == 0.0,
                "row {i}: the label column holds {label}, not a class index"
            );
            labels.push(label as usize);
        }
        Some(labels)
    } else {
        None
    };
    let inputs: Vec<Vec<f32>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            file.prepare_input(r, 1)
                .with_context(|| format!("row {i} of {}", args.input.display()))
        })
        .collect::<Result<_>>()?;
    veil_node::record::init("client");
    let mut client = args.connect.session()?;
    client.tamper = args.insecure_tamper.clone();
    let deployments: Vec<ModelView> = client.api().get_json(api::MODELS)?;
    let Some(deployment) = deployments.into_iter().find(|m| m.id == args.model) else {
        bail!("model {} is not deployed on this coordinator", args.model);
    };
    let d = &deployment.deployment;
    let mode = weight_mode(&d.weights)?;
    let fp = FixedPoint::new(d.frac_bits)?;
    let plan = Plan::compile(file.model(), fp, mode)?;
    let request = SubmitRequest {
        workload: "deployed".into(),
        model_seed: 0,
        weights: d.weights.clone(),
        frac_bits: d.frac_bits,
        batch: 1,
        inferences: inputs.len() as u32,
        parties: d.parties,
        model: Some(args.model.clone()),
        output_key: None,
        protocol: d.protocol.clone(),
        stage: None,
        threads: None,
        shaping: None,
    };
    let started = Instant::now();
    let mut last = String::new();
    let quiet = args.json;
    let staging: StagesView = client.api().get_json(&api::model_stages(&args.model))?;
    if staging.stages.len() > 1 {
        return infer_staged(
            &args,
            &client,
            &file,
            d,
            &staging,
            &inputs,
            labels.as_deref(),
        );
    }
    let finished = client.run_job(
        request,
        file.model(),
        &plan,
        &inputs,
        Duration::from_secs(args.timeout_s),
        |view| {
            if view.phase != last {
                if !quiet {
                    println!(
                        "[{:>6.2} s] job {} {} (attempt {})",
                        started.elapsed().as_secs_f64(),
                        view.id,
                        view.phase,
                        view.attempt
                    );
                }
                last = view.phase.clone();
            }
        },
    )?;
    let predictions: Vec<Option<usize>> = finished.outputs.iter().map(|o| argmax(o)).collect();
    let accuracy = accuracy_of(labels.as_deref(), &predictions);
    let result = serde_json::json!({
        "job": finished.job.id,
        "model": args.model,
        "attempts": finished.job.attempt,
        "outputs": finished.outputs,
        "predictions": predictions
            .iter()
            .map(|p| p.map(|c| file.label(c)))
            .collect::<Vec<_>>(),
        "accuracy": accuracy,
        "stages": [[0, file.architecture().layers.len()]],
        "jobs": [finished.job.id],
        "protocol": d.protocol,
        "receipt": finished.receipt.is_some(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let (Some(path), Some(receipt)) = (&args.receipt, &finished.receipt) {
        std::fs::write(path, receipt).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(out) = &args.output {
        std::fs::write(out, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{result}");
        return Ok(());
    }
    for (i, (p, o)) in predictions
        .iter()
        .zip(&finished.outputs)
        .enumerate()
        .take(20)
    {
        let scores: Vec<String> = o.iter().map(|v| format!("{v:.3}")).collect();
        println!(
            "  row {i:>4}: {:<12} scores [{}]",
            p.map_or("-".into(), |c| file.label(c)),
            scores.join(", ")
        );
    }
    if predictions.len() > 20 {
        println!("  ... ({} more rows)", predictions.len() - 20);
    }
    if let Some(a) = accuracy {
        println!("  accuracy against the labels: {a:.3}");
    }
    println!(
        "{} private predictions in {:.2} s ({})",
        predictions.len(),
        started.elapsed().as_secs_f64(),
        d.protocol
    );
    if finished.receipt.is_some() {
        match &args.receipt {
            Some(path) => println!(
                "receipt checked (the verifier's signature, this job's manifest, the ciphertexts sent and received); saved to {}",
                path.display()
            ),
            None => println!("receipt checked (save it with --receipt FILE; check it again with veil verify)"),
        }
    }
    Ok(())
}

fn accuracy_of(labels: Option<&[usize]>, predictions: &[Option<usize>]) -> Option<f64> {
    labels.map(|l| {
        let right = l
            .iter()
            .zip(predictions)
            .filter(|(t, p)| Some(**t) == **p)
            .count();
        right as f64 / l.len() as f64
    })
}

/// `veil infer` on a model the coordinator splits into stages (its memory exceeds `max_stage_memory_bytes`):
/// one committee per stage, shares handed from stage to stage re-randomised.
fn infer_staged(
    args: &InferArgs,
    client: &veil_client::Client,
    file: &ModelFile,
    deployment: &DeployRequest,
    staging: &StagesView,
    inputs: &[Vec<f32>],
    labels: Option<&[usize]>,
) -> Result<()> {
    let started = Instant::now();
    if !args.json {
        let ranges: Vec<String> = staging
            .stages
            .iter()
            .map(|[s, e]| format!("layers {s}..{e}"))
            .collect();
        println!(
            "model {} is split into {} stages ({}): one committee each",
            args.model,
            staging.stages.len(),
            ranges.join(", ")
        );
    }
    let mut seen = std::collections::HashMap::new();
    let quiet = args.json;
    let finished = client.run_staged(
        &args.model,
        file,
        deployment,
        &staging.stages,
        inputs,
        Duration::from_secs(args.timeout_s),
        |stage, view| {
            if seen.insert(view.id, view.phase.clone()).as_ref() != Some(&view.phase) && !quiet {
                println!(
                    "[{:>6.2} s] stage {stage}: job {} {}",
                    started.elapsed().as_secs_f64(),
                    view.id,
                    view.phase
                );
            }
        },
    )?;
    let predictions: Vec<Option<usize>> = finished.outputs.iter().map(|o| argmax(o)).collect();
    let accuracy = accuracy_of(labels, &predictions);
    let result = serde_json::json!({
        "jobs": finished.jobs,
        "stages": staging.stages,
        "model": args.model,
        "outputs": finished.outputs,
        "predictions": predictions
            .iter()
            .map(|p| p.map(|c| file.label(c)))
            .collect::<Vec<_>>(),
        "accuracy": accuracy,
        "protocol": deployment.protocol,
        "receipt": false,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let Some(out) = &args.output {
        std::fs::write(out, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{result}");
    } else {
        if let Some(a) = accuracy {
            println!("  accuracy against the labels: {a:.3}");
        }
        println!(
            "{} private predictions through {} stages in {:.2} s",
            predictions.len(),
            staging.stages.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
