//! The network path of pretrained encoders: `veil deploy --model all-minilm-l6-v2` publishes the fetched
//! model (public weights; its id is the hash of name, config and weights, which every party checks its
//! own copy against), and `veil embed TEXT... --coordinator ADDR --coordinator-key KEY` embeds on the
//! committees the coordinator picks.
//!
//! The client tokenises, looks the tokens up in the public tables and secret-shares (semi2k) or publishes
//! under the dealer's masks (spdz2k) the L x 384 vectors, sealed per party; it reconstructs the
//! embeddings (under spdz2k after checking the receipt): `veil_client::embed::embed_sequences`, which the
//! gateway calls too, groups the texts by length (one job per distinct length).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use veil_client::embed::{self, EmbedTarget};
use veil_engine::bert::pretrained;
use veil_engine::bert::private::{PrivateBert, PrivateConfig};
use veil_engine::bert::{cosine, SentenceEncoder};
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
    let deployment = embed::find_deployment(&client, &name, &id)?;
    let protocol = args.protocol.clone();
    let fp = FixedPoint::new(deployment.deployment.frac_bits)?;
    let model = PrivateBert::new(&encoder.bert, PrivateConfig::new(fp)?)?;
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| encoder.tokenizer.ids(t))
        .collect::<std::result::Result<_, _>>()?;
    let started = Instant::now();
    let quiet = args.json;
    let mut last = (0, String::new());
    let target = EmbedTarget {
        deployment: &deployment,
        name: &name,
        protocol: &protocol,
        model: &model,
    };
    let embedded = embed::embed_sequences(
        &client,
        &target,
        &ids,
        Duration::from_secs(args.timeout_s),
        |view| {
            if (view.id, view.phase.as_str()) != (last.0, last.1.as_str()) && !quiet {
                println!(
                    "[{:>6.2} s] job {} {} (attempt {})",
                    started.elapsed().as_secs_f64(),
                    view.id,
                    view.phase,
                    view.attempt
                );
            }
            last = (view.id, view.phase.clone());
        },
    )?;
    let receipts = embedded.jobs.iter().filter(|j| j.receipt.is_some()).count();
    let jobs: Vec<u64> = embedded.jobs.iter().map(|j| j.view.id).collect();
    let embeddings = embedded.embeddings;
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
