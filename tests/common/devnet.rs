//! A `veil devnet` (a coordinator and five node processes) for tests, and the fetched-model check they
//! share.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A shipped file of the breast-cancer model (`models/breast-cancer/FILE`, in the repository).
pub fn shipped(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/breast-cancer")
        .join(file)
}

/// How to start a [`Devnet`]: extra `veil devnet` arguments and environment (test-only hooks such as
/// `VEIL_INSECURE_RECORD_DIR` or `VEIL_INSECURE_TAMPER`).
#[derive(Default)]
pub struct Options {
    /// Arguments after `veil devnet --nodes 5 --log info`.
    pub args: Vec<String>,
    /// Environment of the devnet process.
    pub env: Vec<(String, OsString)>,
}

impl Options {
    /// One more environment variable.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Options {
        self.env.push((key.into(), value.into()));
        self
    }

    /// More `veil devnet` arguments.
    pub fn args(mut self, args: &[&str]) -> Options {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
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
        Devnet::start_with(models, Options::default())
    }

    /// Starts one with only the models shipped in the repository (no fetched model needed).
    pub fn start_shipped(options: Options) -> Devnet {
        Devnet::start_with(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
            options,
        )
    }

    /// [`Devnet::start`] with `options`.
    pub fn start_with(models: PathBuf, options: Options) -> Devnet {
        let mut command = Command::new(exe());
        command
            .args(["devnet", "--nodes", "5", "--log", "info"])
            .args(&options.args)
            .env(veil_engine::bert::pretrained::MODELS_DIR_VAR, &models)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start veil devnet");
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

    /// The client's identity directory (where tests also put receipts and other client files).
    pub fn client_dir(&self) -> &Path {
        self.client_dir.path()
    }

    /// Runs `veil ARGS --coordinator .. --coordinator-key .. --identity .. --json` as the test's client.
    pub fn veil(&self, args: &[&str]) -> Output {
        self.veil_env(args, None)
    }

    /// [`Devnet::veil`] with one more environment variable for the client.
    pub fn veil_env(&self, args: &[&str], env: Option<(&str, &Path)>) -> Output {
        let (address, key) = self.coordinator();
        let mut command = Command::new(exe());
        if let Some((k, v)) = env {
            command.env(k, v);
        }
        command
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
        self.veil_json_env(args, None)
    }

    /// [`Devnet::veil_json`] with one more environment variable for the client.
    pub fn veil_json_env(
        &self,
        args: &[&str],
        env: Option<(&str, &Path)>,
    ) -> Result<Value, String> {
        let out = self.veil_env(args, env);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("")).map_err(|e| e.to_string())
    }

    /// Deploys the shipped breast-cancer model under `protocol`; its id.
    pub fn deploy_shipped(&self, protocol: &str) -> String {
        let model = shipped("model.safetensors");
        let view = self
            .veil_json(&[
                "deploy",
                "--model",
                model.to_str().expect("path"),
                "--protocol",
                protocol,
            ])
            .unwrap_or_else(|e| panic!("deploy: {e}"));
        view["id"].as_str().expect("model id").to_string()
    }

    /// Every node's log file, in node order (empty where missing).
    pub fn node_logs(&self) -> Vec<String> {
        let dir = Path::new(self.ready["dir"].as_str().expect("dir"));
        (0..5)
            .map(|i| {
                std::fs::read_to_string(dir.join(format!("node-{i}/node.log"))).unwrap_or_default()
            })
            .collect()
    }

    /// How many jobs `veil jobs` lists for the test's client.
    pub fn jobs(&self) -> usize {
        self.veil_json(&["jobs"])
            .expect("veil jobs")
            .as_array()
            .expect("array")
            .len()
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
    /// Closes its stdin (a graceful stop) and waits up to 20 s, then kills it.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
