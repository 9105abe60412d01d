//! `rep3` through the coordinator, over real processes: `veil devnet` (a coordinator and five nodes, each
//! its own operator), then `veil deploy --protocol rep3` and `veil infer` as a user runs them.
//!
//! - The committee is three parties on three distinct nodes (so three operators), no dealer and no verifier.
//! - The shipped MLP (breast cancer, whole slice) and CNN (MNIST, a few rows) predict privately within 1e-3
//!   of plaintext.
//! - A rep3 deployment with other than 3 parties, and rep3m, are refused by the client.

mod common;

use common::devnet::{shipped, Devnet, Options};
use serde_json::Value;
use veil_engine::model_file::{argmax, ModelFile};

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

/// Deploys `model` under rep3 and infers `input`; checks every output against plaintext burn (within 1e-3,
/// same class) and the job's committee. `input` is CSV rows of `rows`, each followed by its class if
/// `with_labels`.
fn deploy_and_infer(
    net: &Devnet,
    model: &std::path::Path,
    input: &std::path::Path,
    with_labels: bool,
    rows: &[Vec<f32>],
) {
    let view = net
        .veil_json(&[
            "deploy",
            "--model",
            model.to_str().unwrap(),
            "--protocol",
            "rep3",
        ])
        .unwrap_or_else(|e| panic!("deploy: {e}"));
    let id = view["id"].as_str().expect("model id").to_string();
    let mut args = vec!["infer", "--model", &id, "--input", input.to_str().unwrap()];
    if with_labels {
        args.push("--with-labels");
    }
    let result = net
        .veil_json(&args)
        .unwrap_or_else(|e| panic!("infer: {e}\n{}", net.node_logs().join("\n")));
    assert_eq!(result["protocol"], "rep3");
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
    assert!(committee["verifier"].is_null(), "no verifier: {committee}");
}

#[test]
fn rep3_jobs_through_the_coordinator_match_plaintext_on_three_operators_and_no_dealer() {
    let net = Devnet::start_shipped(Options::default());
    let mlp_rows = rows(&shipped("test.csv"), 30, usize::MAX);
    deploy_and_infer(
        &net,
        &shipped("model.safetensors"),
        &shipped("test.csv"),
        true,
        &mlp_rows,
    );

    let mnist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnist");
    let cnn_rows = rows(&mnist.join("test.csv"), 784, 4);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.csv");
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
    deploy_and_infer(
        &net,
        &mnist.join("model.safetensors"),
        &input,
        false,
        &cnn_rows,
    );

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
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in memory only"));
}
