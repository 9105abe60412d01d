//! A coordinator that tampers with the blobs it relays (TEST ONLY: cargo feature `insecure-test-hooks`,
//! `VEIL_INSECURE_TAMPER`, see `coordinator/src/tamper.rs`), over real processes: `veil devnet` and `veil
//! infer` on a `spdz2k` model. Each relayed blob is signed by its producer (`veil_node::evidence`):
//! - substituted owner material: the client refuses it before it publishes any input under its masks;
//! - a substituted output blob or MAC-check transcript: the verifier refuses to sign, so the job fails
//!   and the client gets no result.
//!
//! In no case is a receipt issued (the audit log stays empty), so there is nothing `veil verify` could
//! accept.
//!
//! The hook exists only in builds with the `insecure-test-hooks` feature, which the root package's
//! dev-dependencies turn on for every `cargo test` build (so `cargo test --release --workspace` runs this).

mod common;

use common::devnet::{shipped, Devnet, Options};
use serde_json::Value;

/// Deploys the shipped model under spdz2k and runs `veil infer` with `--receipt`; returns the infer
/// result and whether the receipt file was written.
fn infer_through(what: &str) -> (Devnet, Result<Value, String>, bool) {
    let net = Devnet::start_shipped(Options::default().env("VEIL_INSECURE_TAMPER", what));
    let model = shipped("model.safetensors");
    let deployed = net
        .veil_json(&[
            "deploy",
            "--model",
            model.to_str().unwrap(),
            "--protocol",
            "spdz2k",
        ])
        .unwrap_or_else(|e| panic!("deploy: {e}"));
    let id = deployed["id"].as_str().expect("model id").to_string();
    let input = shipped("test.csv");
    let receipt = net.client_dir().join("receipt.json");
    let result = net.veil_json(&[
        "infer",
        "--model",
        &id,
        "--input",
        input.to_str().unwrap(),
        "--with-labels",
        "--receipt",
        receipt.to_str().unwrap(),
    ]);
    let written = receipt.exists();
    (net, result, written)
}

fn assert_no_receipt(net: &Devnet) {
    let log = net.veil_json(&["receipts"]).expect("veil receipts");
    assert_eq!(log.as_array().map(Vec::len), Some(0), "{log}");
}

#[test]
fn substituted_owner_material_is_refused_by_the_client() {
    let (net, result, written) = infer_through("owner");
    let err = result.expect_err("the client accepted substituted owner material");
    assert!(
        err.contains("signed owner") && err.contains("not the one its producer signed"),
        "{err}"
    );
    assert!(!written);
    assert_no_receipt(&net);
}

#[test]
fn a_substituted_output_blob_gets_no_receipt_and_no_result() {
    let (net, result, written) = infer_through("output");
    let err = result.expect_err("a result came back despite a substituted output");
    assert!(err.contains("failed"), "{err}");
    assert!(!written);
    assert_no_receipt(&net);
}

#[test]
fn a_substituted_transcript_gets_no_receipt_and_no_result() {
    let (net, result, written) = infer_through("transcript");
    let err = result.expect_err("a result came back despite a substituted transcript");
    assert!(err.contains("failed"), "{err}");
    assert!(!written);
    assert_no_receipt(&net);
}
