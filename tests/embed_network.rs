//! Pretrained encoders on the network, over real processes: `veil devnet` (a coordinator and five nodes
//! that load all-MiniLM-L6-v2 from `VEIL_MODELS`), `veil deploy --model all-minilm-l6-v2`, then `veil
//! embed` of two texts through the coordinator: every embedding's cosine with the plaintext one is at
//! least 0.99. A deployment whose id is not the hash of the parties' files runs no job: the parties refuse
//! to load the encoder and the job fails.
//!
//! Needs the fetched model (`veil models fetch all-minilm-l6-v2`): fails under `CI=true` without it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_veil"))
}

fn models_dir() -> Option<PathBuf> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if base.join("all-minilm-l6-v2/model.safetensors").exists() {
        return Some(base);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "all-minilm-l6-v2 is missing under CI=true: run `veil models fetch all-minilm-l6-v2`"
        );
    }
    eprintln!("SKIPPED: all-minilm-l6-v2 is missing (run `veil models fetch all-minilm-l6-v2`)");
    None
}

/// A running `veil devnet`; closing its stdin (on drop) stops it and every process it started.
struct Devnet {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Value,
    models: PathBuf,
    client_dir: tempfile::TempDir,
}

impl Devnet {
    fn start(models: PathBuf) -> Devnet {
        let mut child = Command::new(exe())
            .args(["devnet", "--nodes", "5", "--log", "info"])
            .env(veil_engine::bert::pretrained::MODELS_DIR_VAR, &models)
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
            models,
            client_dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn coordinator(&self) -> (String, veil_node::PublicKey) {
        (
            self.ready["coordinator"].as_str().unwrap().to_string(),
            self.ready["coordinator_key"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        )
    }

    /// Runs `veil ARGS --coordinator .. --json`: Ok(last stdout line as JSON) or Err(stderr).
    fn veil(&self, args: &[&str]) -> Result<Value, String> {
        let (address, key) = self.coordinator();
        let out = Command::new(exe())
            .args(args)
            .args([
                "--coordinator",
                &address,
                "--coordinator-key",
                &key.to_string(),
            ])
            .arg("--identity")
            .arg(self.client_dir.path())
            .arg("--json")
            .env(veil_engine::bert::pretrained::MODELS_DIR_VAR, &self.models)
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

#[test]
fn minilm_deployed_on_devnet_embeds_through_the_coordinator() {
    let Some(models) = models_dir() else { return };
    let net = Devnet::start(models.clone());
    let deployed = net
        .veil(&[
            "deploy",
            "--model",
            "all-minilm-l6-v2",
            "--protocol",
            "semi2k",
        ])
        .unwrap_or_else(|e| panic!("deploy: {e}"));
    let name = veil_engine::bert::pretrained::NAMES[0];
    let id = veil_engine::bert::pretrained::model_id(name, &models.join(name)).expect("model id");
    assert_eq!(deployed["id"], id.as_str());
    assert_eq!(deployed["name"], name);

    let model = models.join(name);
    let out = net
        .veil(&[
            "embed",
            "Private inference keeps the input secret.",
            "The weather is nice today.",
            "--model",
            model.to_str().unwrap(),
            "--check",
        ])
        .unwrap_or_else(|e| panic!("embed: {e}"));
    assert_eq!(out["mode"], "network");
    assert_eq!(out["protocol"], "semi2k");
    let embeddings = out["embeddings"].as_array().expect("embeddings");
    assert_eq!(embeddings.len(), 2);
    for e in embeddings {
        assert_eq!(e.as_array().expect("embedding").len(), 384);
    }
    let cosines = out["cosine"].as_array().expect("cosines");
    assert_eq!(cosines.len(), 2);
    for c in cosines {
        let c = c.as_f64().expect("cosine");
        assert!(c >= 0.99, "cosine {c} below 0.99: {out}");
    }

    // A deployment under an id that is not the hash of the parties' files: the parties refuse to load it.
    let (address, key) = net.coordinator();
    let identity = veil_node::Identity::generate().unwrap();
    let api =
        veil_node::api_client::ApiClient::new(&identity, key, address, Duration::from_secs(30))
            .unwrap();
    let client = veil_client::Client::new(api, key, veil_node::envelope::OpeningKey::generate());
    let wrong = "ab".repeat(32);
    client
        .deploy_pretrained(name, &wrong, 3, 16, "semi2k")
        .expect("the coordinator cannot check the id: it records it");
    let encoder = veil_engine::bert::SentenceEncoder::load(&model, &burn::tensor::Device::flex())
        .expect("load encoder");
    let private = veil_engine::bert::private::PrivateBert::new(
        &encoder.bert,
        veil_engine::bert::private::PrivateConfig::new(
            veil_protocols::ring::FixedPoint::new(16).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let ids = encoder.tokenizer.ids("a text").unwrap();
    let request = veil_node::api::SubmitRequest {
        workload: name.into(),
        model_seed: 0,
        weights: "public".into(),
        frac_bits: 16,
        batch: ids.len() as u32,
        inferences: 1,
        parties: 3,
        model: Some(wrong),
        output_key: None,
        protocol: "semi2k".into(),
        stage: None,
        threads: None,
        shaping: None,
    };
    let refused = client.run_embed(request, &private, &[ids], Duration::from_secs(120), |_| {});
    let error = match refused {
        Ok(_) => panic!("a job on a wrong model id ran"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("failed"), "{error}");
}
