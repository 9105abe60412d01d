//! `rep3` through the coordinator, over real processes: `veil devnet` (a coordinator and five nodes, each
//! its own operator), then `veil deploy --protocol rep3` and `veil infer` as a user runs them.
//!
//! - The committee is three parties on three distinct nodes (so three operators), no dealer and no verifier.
//! - The shipped MLP (breast cancer, whole slice) and CNN (MNIST, a few rows) predict privately within 1e-3
//!   of plaintext.
//! - A rep3 deployment with other than 3 parties is refused by the client.
//! - `rep3m` the same way, plus a verifier: the answer carries a receipt (signed by the committee's verifier
//!   over the parties' check views) that `veil verify` accepts; and a `rep3m` party process that deviates
//!   (`wrong-product`, `wrong-output`: the nodes' test-only adversary) aborts the job with no output.

mod common;

use common::devnet::{shipped, Devnet, Options};
use serde_json::Value;
use std::process::{Command, Output};
use veil_engine::model_file::{argmax, ModelFile};

/// Runs the `veil` binary with `args`.
fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the veil binary runs")
}

/// Rows of `features..., class` from `path`, at most `limit`.
fn rows(path: &std::path::Path, features: usize, limit: usize) -> Vec<Vec<f32>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(limit)
        .map(|l| {
            let v: Vec<f32> = l.split(',').map(|c| c.trim().parse().unwrap()).collect();
            assert_eq!(v.len(), features + 1);
            v[..features].to_vec()
        })
        .collect()
}

/// Deploys `model` under `protocol` (rep3 or rep3m) and infers `input`; checks every output against
/// plaintext burn (within 1e-3, same class) and the job's committee. `input` is CSV rows of `rows`, each
/// followed by its class if `with_labels`. Under rep3m the receipt is saved to `receipt` and must be there.
fn deploy_and_infer(
    net: &Devnet,
    protocol: &str,
    model: &std::path::Path,
    input: &std::path::Path,
    with_labels: bool,
    rows: &[Vec<f32>],
    receipt: Option<&std::path::Path>,
) {
    let view = net
        .veil_json(&[
            "deploy",
            "--model",
            model.to_str().unwrap(),
            "--protocol",
            protocol,
        ])
        .unwrap_or_else(|e| panic!("deploy: {e}"));
    let id = view["id"].as_str().expect("model id").to_string();
    let mut args = vec!["infer", "--model", &id, "--input", input.to_str().unwrap()];
    if with_labels {
        args.push("--with-labels");
    }
    if let Some(r) = receipt {
        args.extend(["--receipt", r.to_str().unwrap()]);
    }
    let result = net
        .veil_json(&args)
        .unwrap_or_else(|e| panic!("infer: {e}\n{}", net.node_logs().join("\n")));
    assert_eq!(result["protocol"], protocol);
    assert_eq!(result["receipt"], receipt.is_some(), "{result}");
    let device = burn::tensor::Device::flex();
    let file = ModelFile::load(model, &device).unwrap();
    let outputs = result["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), rows.len());
    for (i, (x, out)) in rows.iter().zip(outputs).enumerate() {
        let private: Vec<f32> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let plain = file
            .model()
            .forward_plain(&file.prepare_input(x, 1).unwrap(), 1)
            .unwrap();
        let err = private
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err <= 1e-3, "{}: row {i}: error {err}", model.display());
        assert_eq!(argmax(&private), argmax(&plain), "row {i}");
    }

    // The job's committee: three parties on three nodes, no dealer and no verifier (no node is held for a
    // role rep3 lacks).
    let job = result["job"].as_u64().expect("job id").to_string();
    let view: Value = net.veil_json(&["job", &job]).expect("job view");
    let committee = &view["committee"];
    let parties: Vec<u64> = committee["parties"]
        .as_array()
        .expect("parties")
        .iter()
        .map(|m| m["node"].as_u64().unwrap())
        .collect();
    assert_eq!(parties.len(), 3);
    let mut distinct = parties.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "three distinct nodes (operators): {parties:?}"
    );
    assert!(committee["dealer"].is_null(), "no dealer: {committee}");
    if let Some(r) = receipt {
        assert!(committee["verifier"].is_object(), "a verifier: {committee}");
        verify_receipt(net, r, protocol);
    } else {
        assert!(committee["verifier"].is_null(), "no verifier: {committee}");
    }
}

/// `veil verify` accepts the receipt at `path` with the coordinator's key (it names `protocol` and carries
/// each party's signed transcript and output records, and no dealer's), and refuses it with another key or
/// once a commitment changed.
fn verify_receipt(net: &Devnet, path: &std::path::Path, protocol: &str) {
    let key = net.ready["coordinator_key"].as_str().unwrap().to_string();
    let verify = |path: &std::path::Path, key: &str| {
        veil(&["verify", path.to_str().unwrap(), "--coordinator-key", key])
    };
    let ok = verify(path, &key);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("receipt OK"));
    let text = std::fs::read_to_string(path).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["protocol"], protocol);
    let kinds: Vec<&str> = json["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.len(),
        6,
        "two records per party, none from a dealer: {kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k.contains("owner")), "{kinds:?}");
    let other = veil_node::Identity::generate()
        .unwrap()
        .public_key()
        .to_string();
    assert!(!verify(path, &other).status.success());
    let mut changed = json.clone();
    changed["output_commitment"] = Value::String("00".repeat(32));
    let changed_path = path.with_extension("changed.json");
    std::fs::write(&changed_path, serde_json::to_string(&changed).unwrap()).unwrap();
    assert!(!verify(&changed_path, &key).status.success());
}

/// The MNIST CNN's first `n` test rows, written without labels to a CSV in `dir`; the rows and the file.
fn cnn_input(dir: &std::path::Path, n: usize) -> (Vec<Vec<f32>>, std::path::PathBuf) {
    let mnist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnist");
    let cnn_rows = rows(&mnist.join("test.csv"), 784, n);
    let input = dir.join("rows.csv");
    let text: Vec<String> = cnn_rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    std::fs::write(&input, text.join("\n")).unwrap();
    (cnn_rows, input)
}

/// The MNIST CNN's weights file.
fn cnn_model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnist/model.safetensors")
}

#[test]
fn rep3_jobs_through_the_coordinator_match_plaintext_on_three_operators_and_no_dealer() {
    let net = Devnet::start_shipped(Options::default());
    let mlp_rows = rows(&shipped("test.csv"), 30, usize::MAX);
    deploy_and_infer(
        &net,
        "rep3",
        &shipped("model.safetensors"),
        &shipped("test.csv"),
        true,
        &mlp_rows,
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let (cnn_rows, input) = cnn_input(dir.path(), 4);
    deploy_and_infer(&net, "rep3", &cnn_model(), &input, false, &cnn_rows, None);

    // Refused before anything is deployed: rep3 with 2 parties, and rep3m (not on the network yet).
    let model = shipped("model.safetensors");
    let out = net.veil(&[
        "deploy",
        "--model",
        model.to_str().unwrap(),
        "--protocol",
        "rep3",
        "--parties",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly 3 parties"));
    let out = net.veil(&[
        "deploy",
        "--model",
        model.to_str().unwrap(),
        "--protocol",
        "rep3m",
        "--parties",
        "4",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly 3 parties"));
}

#[test]
fn rep3m_jobs_through_the_coordinator_match_plaintext_and_carry_a_receipt_veil_verify_accepts() {
    let net = Devnet::start_shipped(Options::default());
    let dir = tempfile::tempdir().unwrap();
    // A few MLP rows (each inference runs its own check).
    let mlp_rows = rows(&shipped("test.csv"), 30, 8);
    let mlp_input = dir.path().join("mlp.csv");
    let text: Vec<String> = std::fs::read_to_string(shipped("test.csv"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(8)
        .map(str::to_string)
        .collect();
    std::fs::write(&mlp_input, text.join("\n")).unwrap();
    deploy_and_infer(
        &net,
        "rep3m",
        &shipped("model.safetensors"),
        &mlp_input,
        true,
        &mlp_rows,
        Some(&dir.path().join("mlp.receipt.json")),
    );
    let (cnn_rows, input) = cnn_input(dir.path(), 2);
    deploy_and_infer(
        &net,
        "rep3m",
        &cnn_model(),
        &input,
        false,
        &cnn_rows,
        Some(&dir.path().join("cnn.receipt.json")),
    );
}

/// A `rep3m` party process that deviates (the nodes' test-only adversary, through `veil bench --transport
/// quic`) makes the job abort with nothing released: a wrong reshare is caught by the product proof, a wrong
/// output share by the client's comparison of the two copies of each component (after the checks passed).
/// In memory the same.
#[test]
fn a_deviating_rep3m_party_process_aborts_the_job_and_nothing_is_released() {
    for transport in ["quic", "mem"] {
        for adversary in ["wrong-product", "wrong-output"] {
            let out = veil(&[
                "bench",
                "--workload",
                "network-a",
                "--protocol",
                "rep3m",
                "--parties",
                "3",
                "--transport",
                transport,
                "--adversary",
                adversary,
                "--json",
            ]);
            assert!(
                out.status.success(),
                "{transport} {adversary}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let j: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
            assert_eq!(j["protocol"], "rep3m", "{j}");
            assert_eq!(j["adversary"], adversary, "{j}");
            assert_eq!(j["verified"], false, "{transport} {adversary}: {j}");
            assert_eq!(j["output_released"], false, "{transport} {adversary}: {j}");
            let outcome = j["outcome"].as_str().unwrap_or_default();
            assert!(
                outcome.contains("verification failed") || outcome.contains("disagree"),
                "{transport} {adversary}: {outcome}"
            );
        }
    }
}
