//! The network path of ONNX models (issue 22): `veil deploy --model X.onnx` uploads the file to the
//! coordinator (public weights, at most [`MAX_ONNX_BYTES`]; its id is the SHA-256 of the file, which every
//! party checks the copy it fetches against), and `veil infer --model ID --input ROWS` runs rows of the
//! graph's input size on the committees the coordinator picks.
//!
//! The client fetches the deployed file and checks it against the id (to check and encode the rows),
//! secret-shares (semi2k) or
//! publishes under the dealer's masks (spdz2k) each row, sealed per party, and reconstructs the outputs
//! (under spdz2k after checking the receipt).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use veil_node::api::{self, ModelView, SubmitRequest};
use veil_node::onnx_model::{self, MAX_ONNX_BYTES, ONNX_WORKLOAD};

use super::client::{read_rows, DeployArgs, InferArgs};

/// `veil deploy --model X.onnx`: the file must be self-contained (weights inside it) and at most
/// [`MAX_ONNX_BYTES`]; it is imported here first, so that a model veil cannot run is refused before any
/// byte leaves.
pub fn deploy(args: &DeployArgs) -> Result<()> {
    let path = &args.model;
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    ensure!(
        size <= MAX_ONNX_BYTES as u64,
        "{} has {size} bytes: at most {MAX_ONNX_BYTES} deploy",
        path.display()
    );
    if external_data(path) {
        bail!(
            "{} keeps its weights in an external data file beside it: deploy a self-contained file (re-export with the weights inside, e.g. onnx.save(model, path, save_as_external_data=False))",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let frac_bits = veil_protocols::ring::DEFAULT_FRAC_BITS;
    let graph = onnx_model::private_graph(&bytes, frac_bits).with_context(|| {
        format!(
            "{} (a deployable ONNX file is self-contained: weights inside it, no external data)",
            path.display()
        )
    })?;
    let client = args.connect.session()?;
    let view = client.deploy_onnx(&bytes, args.parties, frac_bits, &args.protocol)?;
    if args.json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        println!(
            "deployed {} ({size} bytes) as ONNX model {}\n  input {:?}, output {:?}, {} nodes; weights: public ({} parties, {}); every party fetches the file and checks it against the id\n  run: veil infer --model {} --input ROWS.csv",
            path.display(),
            view.id,
            graph.graph().input_shape(),
            graph.graph().output_shape(),
            graph.graph().nodes.len(),
            args.parties,
            args.protocol,
            view.id
        );
    }
    Ok(())
}

/// Whether the file names an external data file beside it that exists (the `torch.onnx` dynamo
/// exporter's `X.onnx.data`).
fn external_data(path: &Path) -> bool {
    let mut data = path.as_os_str().to_owned();
    data.push(".data");
    Path::new(&data).exists()
}

/// `veil infer` on deployed ONNX model `deployment`: one inference per row (each the graph's whole input).
pub fn infer(args: &InferArgs, client: &veil_client::Client, deployment: &ModelView) -> Result<()> {
    let d = &deployment.deployment;
    let file = d
        .onnx_file
        .context("the coordinator lists the ONNX model without its file's size")?;
    let bytes = client
        .onnx_file(&deployment.id, file.bytes)
        .context("fetching the deployed ONNX model")?;
    let model =
        onnx_model::private_graph(&bytes, d.frac_bits).context("the deployed ONNX model")?;
    drop(bytes);
    let rows = read_rows(&args.input)?;
    ensure!(
        !args.with_labels,
        "--with-labels is for classifiers deployed from veil model files"
    );
    for (i, r) in rows.iter().enumerate() {
        model
            .client_input(r)
            .with_context(|| format!("row {i} of {}", args.input.display()))?;
    }
    let request = SubmitRequest {
        workload: ONNX_WORKLOAD.into(),
        model_seed: 0,
        weights: d.weights.clone(),
        frac_bits: d.frac_bits,
        batch: 1,
        inferences: u32::try_from(rows.len()).context("too many rows")?,
        parties: d.parties,
        model: Some(deployment.id.clone()),
        output_key: None,
        protocol: d.protocol.clone(),
        stage: None,
        threads: None,
        shaping: None,
    };
    let started = Instant::now();
    let mut last = String::new();
    let quiet = args.json;
    let finished = client.run_onnx(
        request,
        &model,
        &rows,
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
    let result = serde_json::json!({
        "job": finished.job.id,
        "model": deployment.id,
        "attempts": finished.job.attempt,
        "outputs": finished.outputs,
        "output_shape": model.graph().output_shape(),
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
    for (i, o) in finished.outputs.iter().enumerate().take(20) {
        let values: Vec<String> = o.iter().take(16).map(|v| format!("{v:.4}")).collect();
        println!("  row {i:>4}: [{}]", values.join(", "));
    }
    println!(
        "{} private inferences in {:.2} s ({}){}",
        finished.outputs.len(),
        started.elapsed().as_secs_f64(),
        d.protocol,
        if finished.receipt.is_some() {
            "; receipt checked"
        } else {
            ""
        }
    );
    Ok(())
}

/// Whether `deployments` holds `id` as an ONNX model.
pub fn find<'a>(deployments: &'a [ModelView], id: &str) -> Option<&'a ModelView> {
    deployments.iter().find(|m| m.id == id && m.deployment.onnx)
}

/// The coordinator's deployments.
pub fn deployments(client: &veil_client::Client) -> Result<Vec<ModelView>> {
    Ok(client.api().get_json(api::MODELS)?)
}
