//! A `veil devnet` (a coordinator and five node processes) for tests, and the fetched-model check they
//! share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The `veil` binary under test.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_veil"))
}

/// The repository's `models/` if `models/MODEL/FILE` was fetched. Without it: a panic under `CI=true`
/// (a test that needs a fetched model fails rather than skips there), else `None` with a SKIPPED line.
pub fn models_dir(model: &str, file: &str) -> Option<PathBuf> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if base.join(model).join(file).exists() {
        return Some(base);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{model} is missing under CI=true: run `veil models fetch {model}`");
    }
    eprintln!("SKIPPED: {model} is missing (run `veil models fetch {model}`)");
    None
}

/// A running `veil devnet` whose nodes find their models under `models`; closing its stdin (on drop)
/// stops it and every process it started.
pub struct Devnet {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its ready line.
    pub ready: Value,
    models: PathBuf,
    /// The client's identity directory for `veil` commands.
    client_dir: tempfile::TempDir,
}

impl Devnet {
    /// Starts it and waits (at most 120 s) for its ready line.
    pub fn start(models: PathBuf) -> Devnet {
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

    /// The coordinator's address and key.
    pub fn coordinator(&self) -> (String, veil_node::PublicKey) {
        (
            self.ready["coordinator"].as_str().expect("address").into(),
            self.ready["coordinator_key"]
                .as_str()
                .expect("key")
                .parse()
                .expect("key"),
        )
    }

    /// Runs `veil ARGS --coordinator .. --coordinator-key .. --identity .. --json` as the test's client.
    pub fn veil(&self, args: &[&str]) -> Output {
        let (address, key) = self.coordinator();
        Command::new(exe())
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
            .expect("run veil")
    }

    /// [`Devnet::veil`]: Ok(the last stdout line as JSON) or Err(stderr).
    pub fn veil_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.veil(args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("")).map_err(|e| e.to_string())
    }

    /// Kills (SIGKILL, as a crash) the node process whose key is `key`; its index.
    pub fn kill_node(&self, key: &str) -> usize {
        let index = self.ready["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .position(|k| k.as_str() == Some(key))
            .expect("a devnet node");
        let dir = self.ready["dir"].as_str().expect("dir");
        let config = format!("{dir}/node-{index}/node.toml");
        let pid = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok())
            .find(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&config))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .expect("the node's process");
        let status = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        index
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
