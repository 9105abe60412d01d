//! ONNX models on the network, over real processes (issue 22): `veil devnet` (a coordinator and five
//! nodes), `veil deploy --model X.onnx` (the file travels to the coordinator, which imports it once; its id
//! is the file's SHA-256), then `veil infer` of the shipped reference input through the coordinator, under
//! semi2k, spdz2k (verified: the receipt passes `veil verify`) and rep3 (three parties, no dealer). Every
//! output is within 1e-2 of the PyTorch reference output shipped beside the model. A model with an unsupported operator, or with its
//! weights in an external data file, is refused at deploy with the importer's message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::devnet::{exe, Devnet, Options};
use serde_json::Value;

fn onnx(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/onnx")
        .join(file)
}

/// The shipped reference of `name`: its input and PyTorch's output.
fn reference(name: &str) -> (Vec<f32>, Vec<f32>) {
    let text = std::fs::read_to_string(onnx(&format!("{name}.json"))).expect("reference");
    let v: Value = serde_json::from_str(&text).expect("reference JSON");
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect()
    };
    (floats("input"), floats("output"))
}

/// Deploys `name`.onnx under `protocol` and infers its reference input; returns the output and the result.
fn deploy_and_infer(net: &Devnet, name: &str, protocol: &str) -> (Vec<f32>, Value) {
    let model = onnx(&format!("{name}.onnx"));
    let view = net
        .veil_json(&[
            "deploy",
            "--model",
            model.to_str().unwrap(),
            "--protocol",
            protocol,
            "--parties",
            "3",
        ])
        .unwrap_or_else(|e| panic!("deploy {name}: {e}"));
    let bytes = std::fs::read(&model).unwrap();
    let id = veil_node::onnx_model::model_id(&bytes);
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["name"], "onnx");
    assert_eq!(view["deployment"]["onnx"], true);
    assert_eq!(view["deployment"]["protocol"], protocol);

    let (input, _) = reference(name);
    let rows = net.client_dir().join(format!("{name}-{protocol}.json"));
    std::fs::write(&rows, serde_json::to_string(&vec![input]).unwrap()).unwrap();
    let receipt = net
        .client_dir()
        .join(format!("{name}-{protocol}.receipt.json"));
    let result = net
        .veil_json(&[
            "infer",
            "--model",
            &id,
            "--input",
            rows.to_str().unwrap(),
            "--receipt",
            receipt.to_str().unwrap(),
        ])
        .unwrap_or_else(|e| panic!("infer {name} {protocol}: {e}"));
    assert_eq!(result["protocol"], protocol);
    let outputs = result["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 1, "{result}");
    let output: Vec<f32> = outputs[0]
        .as_array()
        .expect("output")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect();
    (output, result)
}

fn assert_close(name: &str, protocol: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name} {protocol}: output length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{name} {protocol}: largest error {worst:.2e}");
    assert!(
        worst <= 1e-2,
        "{name} under {protocol}: largest error {worst} > 1e-2\n got  {got:?}\n want {want:?}"
    );
}

#[test]
fn shipped_onnx_models_deployed_on_devnet_match_their_reference_outputs() {
    let net = Devnet::start_shipped(Options::default());
    let key = net.ready["coordinator_key"].as_str().unwrap().to_string();
    for name in ["cnn", "resnet", "encoder"] {
        let (_, want) = reference(name);
        for protocol in ["semi2k", "spdz2k", "rep3"] {
            let (got, result) = deploy_and_infer(&net, name, protocol);
            assert_close(name, protocol, &got, &want);
            eprintln!("{name} {protocol}: {} s", result["seconds"]);
            let receipt = net
                .client_dir()
                .join(format!("{name}-{protocol}.receipt.json"));
            if protocol == "spdz2k" {
                assert_eq!(result["receipt"], true, "{result}");
                let ok = Command::new(exe())
                    .args([
                        "verify",
                        receipt.to_str().unwrap(),
                        "--coordinator-key",
                        &key,
                    ])
                    .env("RUST_BACKTRACE", "0")
                    .output()
                    .unwrap();
                assert!(
                    ok.status.success(),
                    "verify {name}: {}",
                    String::from_utf8_lossy(&ok.stderr)
                );
                assert!(String::from_utf8_lossy(&ok.stdout).contains("receipt OK"));
            } else {
                assert_eq!(result["receipt"], false, "{result}");
                assert!(!receipt.exists());
            }
        }
    }

    // A model with an operator veil does not run: refused at deploy, before any byte leaves the client.
    let unsupported = onnx("unsupported.onnx");
    let err = net
        .veil_json(&["deploy", "--model", unsupported.to_str().unwrap()])
        .expect_err("an unsupported model deploys");
    assert!(err.contains("unsupported operator"), "{err}");

    // The coordinator refuses it too when a client sends it anyway.
    let (address, coordinator) = net.coordinator();
    let identity = veil_node::Identity::generate().unwrap();
    let api = veil_node::api_client::ApiClient::new(
        &identity,
        coordinator,
        address,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let client = veil_client::Client::new(
        api,
        coordinator,
        veil_node::envelope::OpeningKey::generate(),
    );
    let bytes = std::fs::read(&unsupported).unwrap();
    let refused = client
        .deploy_onnx(&bytes, 3, 16, "semi2k")
        .expect_err("the coordinator deploys an unsupported model");
    let text = format!("{refused:#}");
    assert!(text.contains("unsupported operator"), "{text}");

    // A file whose weights are in an external data file: the client refuses it, and so does the
    // coordinator (it never reads a file beside the model).
    let external = onnx("dynamo/cnn.onnx");
    let err = net
        .veil_json(&["deploy", "--model", external.to_str().unwrap()])
        .expect_err("a model with external data deploys");
    assert!(err.contains("external data"), "{err}");
    let bytes = std::fs::read(&external).unwrap();
    let refused = client
        .deploy_onnx(&bytes, 3, 16, "semi2k")
        .expect_err("the coordinator deploys a model with external data");
    eprintln!("external data, coordinator: {refused:#}");
    assert!(format!("{refused:#}").contains("model:"), "{refused:#}");
}
