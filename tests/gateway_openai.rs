//! The OpenAI-compatible gateway end to end, over real processes: `veil devnet` (a coordinator and five
//! nodes), `veil gateway` in front of it (which deploys all-MiniLM-L6-v2 under spdz2k itself), and
//! `tests/gateway_openai.py` driving it with the official `openai` Python package: two texts' embeddings
//! are 384 floats with cosine >= 0.99 against `veil embed --plaintext`, the receipt in the `veil` object
//! passes `veil verify`, and a wrong key, an unknown model and a too-long input raise
//! `AuthenticationError`, `NotFoundError` and `BadRequestError`. A breast-cancer classifier deployed by
//! the gateway's identity is served too: `POST /v1/veil/predict` gives the plaintext model's class for
//! each row, with a receipt that passes `veil verify`. With SmolLM2 fetched, the gateway serves it too, and
//! "What is the capital of France?" is answered with Paris, streamed and not streamed.
//!
//! Needs the fetched model (`veil models fetch all-minilm-l6-v2`) and a Python with `openai` (`VEIL_TEST_PYTHON`,
//! else `.venv-ci/bin/python`, else `python3`; `.ci/run` makes the venv): under `CI=true` a missing one
//! fails the test instead of skipping it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const TEXTS: [&str; 2] = [
    "Private inference keeps the input secret.",
    "The weather is nice today.",
];

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_veil"))
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (or fails, under CI) with `why`.
fn missing(why: &str) {
    if ci() {
        panic!("{why} (required under CI=true)");
    }
    eprintln!("SKIPPED: {why}");
}

fn models_dir() -> Option<PathBuf> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if base.join("all-minilm-l6-v2/model.safetensors").exists() {
        return Some(base);
    }
    missing("all-minilm-l6-v2 is missing: run `veil models fetch all-minilm-l6-v2`");
    None
}

/// A Python that can `import openai`.
fn python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-ci/bin/python");
    let candidate = match std::env::var_os("VEIL_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None if venv.exists() => venv,
        None => PathBuf::from("python3"),
    };
    let ok = Command::new(&candidate)
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(candidate);
    }
    missing(&format!(
        "{} cannot import openai: python3 -m venv .venv-ci && .venv-ci/bin/pip install openai",
        candidate.display()
    ));
    None
}

/// A child whose first stdout line is a JSON ready line; closing its stdin (devnet) or killing it
/// (gateway) on drop stops it.
struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Value,
}

impl Daemon {
    fn start(mut command: Command, what: &str, timeout: Duration) -> Daemon {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("{what}: no ready line within {timeout:?}"));
        let ready: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("{what}: ready line {line:?}: {e}"));
        assert_eq!(ready["event"], "ready", "{what}: {line}");
        Daemon {
            child,
            stdin,
            ready,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // devnet stops when its stdin closes; the gateway on SIGKILL (it holds no state to flush).
        if self.ready.get("coordinator").is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The first `n` rows of `dir/test.csv` (features only) and the plaintext model's class for each.
fn plaintext_classes(dir: &Path, n: usize) -> (Vec<Vec<f32>>, Vec<usize>) {
    let device = burn::tensor::Device::flex();
    let file = veil_engine::model_file::ModelFile::load(&dir.join("model.safetensors"), &device)
        .expect("load the classifier");
    let text = std::fs::read_to_string(dir.join("test.csv")).expect("test.csv");
    let rows: Vec<Vec<f32>> = text
        .lines()
        .filter(|l| !l.is_empty())
        .take(n)
        .map(|l| {
            let mut v: Vec<f32> = l.split(',').map(|c| c.trim().parse().unwrap()).collect();
            v.pop(); // the label
            v
        })
        .collect();
    let input: Vec<f32> = rows
        .iter()
        .flat_map(|r| file.prepare_input(r, 1).unwrap())
        .collect();
    let plain = file.model().forward_plain(&input, rows.len()).unwrap();
    let classes = file.model().output_len();
    let predicted = plain
        .chunks(classes)
        .map(|c| veil_engine::model_file::argmax(c).unwrap())
        .collect();
    (rows, predicted)
}

#[test]
fn openai_client_embeds_privately_through_the_gateway() {
    let Some(models) = models_dir() else { return };
    let Some(python) = python() else { return };
    let chat = models
        .join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        .exists();
    if !chat {
        missing("smollm2-135m-instruct is missing (veil models fetch smollm2-135m-instruct): chat is not checked");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut devnet = Command::new(exe());
    devnet
        .args(["devnet", "--nodes", "5", "--log", "info"])
        .env(veil_engine::bert::pretrained::MODELS_DIR_VAR, &models)
        .stderr(Stdio::null());
    let net = Daemon::start(devnet, "veil devnet", Duration::from_secs(120));
    let coordinator = net.ready["coordinator"]
        .as_str()
        .expect("address")
        .to_string();
    let coordinator_key = net.ready["coordinator_key"]
        .as_str()
        .expect("key")
        .to_string();

    // A classifier deployed by the gateway's identity (spdz2k, shared weights): served by default.
    let identity = dir.path().join("gateway-identity");
    let breast_cancer = models.join("breast-cancer");
    let deployed = Command::new(exe())
        .arg("deploy")
        .arg("--model")
        .arg(breast_cancer.join("model.safetensors"))
        .args([
            "--coordinator",
            &coordinator,
            "--coordinator-key",
            &coordinator_key,
        ])
        .arg("--identity")
        .arg(&identity)
        .arg("--json")
        .output()
        .expect("veil deploy");
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let deployed: Value = serde_json::from_slice(
        deployed
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap_or(b""),
    )
    .expect("deploy JSON");
    let classifier = deployed["id"].as_str().expect("model id").to_string();
    let (rows, plain_classes) = plaintext_classes(&breast_cancer, 16);

    let key = "sk-veil-test-0123456789abcdef";
    let key_file = dir.path().join("keys");
    std::fs::write(&key_file, format!("# test key\n{key}\n")).unwrap();
    let gateway_log = dir.path().join("gateway.log");
    let mut gateway = Command::new(exe());
    gateway
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--coordinator",
            &coordinator,
        ])
        .args(["--coordinator-key", &coordinator_key])
        .arg("--identity")
        .arg(&identity)
        .arg("--api-key-file")
        .arg(&key_file)
        .env(veil_engine::bert::pretrained::MODELS_DIR_VAR, &models)
        .stderr(std::fs::File::create(&gateway_log).unwrap());
    let gw = Daemon::start(gateway, "veil gateway", Duration::from_secs(300));
    let address = gw.ready["address"].as_str().expect("address").to_string();
    // By default: the fetched pretrained encoder, the classifier this identity deployed, and the fetched
    // chat model (deployed by the gateway).
    let mut expected_models = serde_json::json!(["all-minilm-l6-v2", classifier]);
    if chat {
        expected_models
            .as_array_mut()
            .unwrap()
            .push("smollm2-135m-instruct".into());
    }
    assert_eq!(gw.ready["models"], expected_models);

    // The plaintext embeddings the private ones are compared with.
    let mut plaintext = Vec::new();
    for text in TEXTS {
        let out = Command::new(exe())
            .args(["embed", text, "--plaintext", "--json", "--model"])
            .arg(models.join("all-minilm-l6-v2"))
            .output()
            .expect("veil embed --plaintext");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(
            out.stdout
                .split(|b| *b == b'\n')
                .rfind(|l| !l.is_empty())
                .unwrap_or(b""),
        )
        .expect("embed JSON");
        plaintext.push(v["embedding"].clone());
    }
    let expected = dir.path().join("plaintext.json");
    std::fs::write(
        &expected,
        serde_json::json!({
            "texts": TEXTS,
            "embeddings": plaintext,
            "classifier": classifier,
            "rows": rows,
            "classes": plain_classes,
        })
        .to_string(),
    )
    .unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway_openai.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("VEIL_GATEWAY_URL", format!("http://{address}/v1"))
        .env("VEIL_GATEWAY_KEY", key)
        .env("VEIL_EXE", exe())
        .env("VEIL_COORDINATOR_KEY", &coordinator_key)
        .env("VEIL_PLAINTEXT", &expected)
        .env("VEIL_WORKDIR", dir.path())
        .output()
        .expect("run the python test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let log = std::fs::read_to_string(&gateway_log).unwrap_or_default();
        panic!(
            "gateway_openai.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ngateway log:\n{log}"
        );
    }
    eprintln!("{stdout}");
    assert!(stdout.contains("ALL CHECKS PASSED"), "{stdout}");
    drop(gw);
    drop(net);
}
