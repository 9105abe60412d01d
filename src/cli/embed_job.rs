//! The network path of pretrained encoders: `veil deploy --model all-minilm-l6-v2` publishes the fetched
//! model (public weights; its id is the hash of name, config and weights, which every party checks its
//! own copy against), and `veil embed TEXT... --coordinator ADDR --coordinator-key KEY` embeds on the
//! committees the coordinator picks.
//!
//! The client tokenises, looks the tokens up in the public tables and secret-shares (semi2k) or publishes
//! under the dealer's masks (spdz2k) the L x 384 vectors, sealed per party; it reconstructs the
//! embeddings (under spdz2k after checking the receipt). A job has one token count (the encoder has no
//! padding mask, and padding would change the mean pooling), so texts are grouped by length: one job per
//! distinct length, every text of that length in it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use veil_engine::bert::pretrained;
use veil_engine::bert::private::{PrivateBert, PrivateConfig};
use veil_engine::bert::{cosine, SentenceEncoder};
use veil_node::api::{self, ModelView, SubmitRequest};
use veil_protocols::ring::FixedPoint;

use super::client::DeployArgs;
use super::coordinator::ConnectArgs;
use super::embed::EmbedArgs;

/// Most texts one `veil embed` sends.
const MAX_TEXTS: usize = 10_000;
/// Largest `--input` file, bytes.
const MAX_INPUT_BYTES: u64 = 16 << 20;

/// `veil deploy --model NAME` for a pretrained encoder fetched under the models directory.
pub fn deploy_pretrained(name: &str, args: &DeployArgs) -> Result<()> {
    if args.weights != "public" && args.weights != "shared" {
        bail!("--weights {:?}: use shared or public", args.weights);
    }
    let dir = pretrained::model_dir(name);
    let id = pretrained::model_id(name, &dir).with_context(|| {
        format!(
            "hashing {} (run `veil models fetch {name}` first)",
            dir.display()
        )
    })?;
    let client = args.connect.session()?;
    let view = client.deploy_pretrained(
        name,
        &id,
        args.parties,
        FixedPoint::default().frac_bits(),
        &args.protocol,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        println!(
            "deployed pretrained {name} as model {}\n  weights: public ({} parties, {}); every party checks its files against the id\n  run: veil embed TEXT --coordinator {} --coordinator-key {}",
            view.id, args.parties, args.protocol, args.connect.coordinator, args.connect.coordinator_key
        );
    }
    Ok(())
}

/// The texts of `veil embed`: the arguments, then the lines of `--input` (empty lines skipped).
fn texts(args: &EmbedArgs) -> Result<Vec<String>> {
    let mut texts = args.texts.clone();
    if let Some(path) = &args.input {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if size > MAX_INPUT_BYTES {
            bail!(
                "{} has {size} bytes (at most {MAX_INPUT_BYTES})",
                path.display()
            );
        }
        let content = std::fs::read_to_string(path)?;
        texts.extend(
            content
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if texts.is_empty() {
        bail!("no text to embed");
    }
    if texts.len() > MAX_TEXTS {
        bail!("{} texts (at most {MAX_TEXTS})", texts.len());
    }
    Ok(texts)
}

/// Runs `veil embed --coordinator ADDR`.
pub fn run(args: &EmbedArgs, coordinator: String, encoder: &SentenceEncoder) -> Result<()> {
    let Some(coordinator_key) = args.coordinator_key else {
        bail!("--coordinator needs --coordinator-key");
    };
    let name = args
        .model
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| pretrained::is_pretrained(n))
        .context("--model must be a pretrained model's directory (models/all-minilm-l6-v2)")?
        .to_string();
    let texts = texts(args)?;
    let id = pretrained::model_id(&name, Path::new(&args.model))?;
    let connect = ConnectArgs {
        coordinator,
        coordinator_key,
        identity: args.identity.clone(),
        call_timeout_s: 30,
    };
    let client = connect.session()?;
    let deployments: Vec<ModelView> = client.api().get_json(api::MODELS)?;
    let Some(deployment) = deployments
        .into_iter()
        .find(|m| m.id == id && m.deployment.pretrained.as_deref() == Some(name.as_str()))
    else {
        bail!("{name} with model id {id} (the hash of this client's files) is not deployed on this coordinator");
    };
    let d = &deployment.deployment;
    let protocol = args.protocol.clone();
    let fp = FixedPoint::new(d.frac_bits)?;
    let model = PrivateBert::new(&encoder.bert, PrivateConfig::new(fp)?)?;
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| encoder.tokenizer.ids(t))
        .collect::<std::result::Result<_, _>>()?;
    // One job per token count, every text of that count in it.
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in ids.iter().enumerate() {
        groups.entry(s.len()).or_default().push(i);
    }
    let started = Instant::now();
    let mut embeddings: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    let mut jobs = Vec::new();
    let mut receipts = 0;
    for (len, members) in &groups {
        let sequences: Vec<Vec<u32>> = members.iter().map(|&i| ids[i].clone()).collect();
        let request = SubmitRequest {
            workload: name.clone(),
            model_seed: 0,
            weights: d.weights.clone(),
            frac_bits: d.frac_bits,
            batch: u32::try_from(*len)?,
            inferences: u32::try_from(sequences.len())?,
            parties: d.parties,
            model: Some(id.clone()),
            output_key: None,
            protocol: protocol.clone(),
            stage: None,
            threads: None,
            shaping: None,
        };
        let quiet = args.json;
        let mut last = String::new();
        let finished = client.run_embed(
            request,
            &model,
            &sequences,
            Duration::from_secs(args.timeout_s),
            |view| {
                if view.phase != last && !quiet {
                    println!(
                        "[{:>6.2} s] job {} {} (attempt {})",
                        started.elapsed().as_secs_f64(),
                        view.id,
                        view.phase,
                        view.attempt
                    );
                }
                last = view.phase.clone();
            },
        )?;
        if finished.outputs.len() != members.len() {
            bail!(
                "job {} returned {} embeddings for {} texts",
                finished.job.id,
                finished.outputs.len(),
                members.len()
            );
        }
        for (&i, e) in members.iter().zip(finished.outputs) {
            embeddings[i] = e;
        }
        receipts += usize::from(finished.receipt.is_some());
        jobs.push(finished.job.id);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cosines = if args.check {
        let mut c = Vec::with_capacity(texts.len());
        for (s, e) in ids.iter().zip(&embeddings) {
            c.push(cosine(e, &encoder.bert.embed(s)?));
        }
        Some(c)
    } else {
        None
    };
    if args.json {
        let out = serde_json::json!({
            "embeddings": embeddings,
            "mode": "network",
            "job": jobs.first(),
            "jobs": jobs,
            "protocol": protocol,
            "model": id,
            "tokens": ids.iter().map(Vec::len).collect::<Vec<_>>(),
            "receipts": receipts,
            "seconds": seconds,
            "cosine": cosines,
        });
        println!("{out}");
    } else {
        for (k, e) in embeddings.iter().enumerate() {
            let head: Vec<String> = e.iter().take(6).map(|v| format!("{v:.4}")).collect();
            let check = cosines.as_ref().map_or(String::new(), |c| {
                format!(", cosine with plaintext {:.6}", c[k])
            });
            println!(
                "text {k}: {} tokens, [{}, ...]{check}",
                ids[k].len(),
                head.join(", ")
            );
        }
        println!(
            "{} texts in {} jobs ({protocol}, {} checked receipts) in {seconds:.2} s",
            texts.len(),
            jobs.len(),
            receipts
        );
    }
    Ok(())
}
