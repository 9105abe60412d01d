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

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_veil"))
}

fn shipped(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/breast-cancer")
        .join(file)
}

/// A running `veil devnet` whose coordinator tampers with `what`; closing its stdin stops it.
struct Devnet {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Value,
    client_dir: tempfile::TempDir,
}

impl Devnet {
    fn start(what: &str) -> Devnet {
        let mut child = Command::new(exe())
            .args(["devnet", "--nodes", "5", "--log", "info"])
            .env("VEIL_INSECURE_TAMPER", what)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start veil devnet");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("devnet ready line");
        let ready: Value = serde_json::from_str(line.trim()).expect("ready JSON");
        assert_eq!(ready["event"], "ready", "{line}");
        Devnet {
            child,
            stdin,
            ready,
            client_dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// `veil ARGS --json` against the network: Ok(last stdout line as JSON) or Err(stderr).
    fn veil(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(exe())
            .args(args)
            .args([
                "--coordinator",
                self.ready["coordinator"].as_str().unwrap(),
                "--coordinator-key",
                self.ready["coordinator_key"].as_str().unwrap(),
                "--identity",
                self.client_dir.path().to_str().unwrap(),
                "--json",
            ])
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run veil");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("")).map_err(|e| e.to_string())
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Deploys the shipped model under spdz2k and runs `veil infer` with `--receipt`; returns the infer
/// result and whether the receipt file was written.
fn infer_through(what: &str) -> (Devnet, Result<Value, String>, bool) {
    let net = Devnet::start(what);
    let model = shipped("model.safetensors");
    let deployed = net
        .veil(&[
            "deploy",
            "--model",
            model.to_str().unwrap(),
            "--protocol",
            "spdz2k",
        ])
        .unwrap_or_else(|e| panic!("deploy: {e}"));
    let id = deployed["id"].as_str().expect("model id").to_string();
    let input = shipped("test.csv");
    let receipt = net.client_dir.path().join("receipt.json");
    let result = net.veil(&[
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
    let log = net.veil(&["receipts"]).expect("veil receipts");
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
