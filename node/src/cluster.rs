//! A local committee of `veil node` processes on 127.0.0.1 (random free ports), for benchmarks and tests.
//!
//! Each node gets its own configuration and data directory under a temporary directory, and its log (stderr)
//! in a file there. A node is ready when it prints its [`ReadyLine`] on stdout.
//!
//! Invariant: dropping a [`LocalCluster`] kills and reaps every process it started (also on error paths),
//! then deletes the temporary directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::identity::PublicKey;
use crate::manifest::Member;
use crate::node::ReadyLine;

/// How the nodes of a local cluster are configured.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Execution parties (a dealer is started besides them if `dealer`).
    pub parties: usize,
    /// Whether to start a dealer node after the parties (`false` for `rep3`, which has none).
    pub dealer: bool,
    /// Keys allowed to submit jobs.
    pub trusted_submitters: Vec<PublicKey>,
    /// Receive timeout of every node, ms.
    pub recv_timeout_ms: u64,
    /// QUIC idle timeout, ms.
    pub idle_timeout_ms: u64,
    /// Log level of the nodes.
    pub log: String,
    /// How long to wait for a node to print its ready line.
    pub ready_timeout: Duration,
    /// TEST ONLY: the dealer's fixed seed ([`NodeConfig::insecure_dealer_seed`]); `None` by default.
    #[cfg(feature = "insecure-test-hooks")]
    pub insecure_dealer_seed: Option<u64>,
    /// TEST ONLY: a deviating party ([`NodeConfig::insecure_adversary`], set on every node; only the named
    /// party acts on it); `None` by default.
    #[cfg(feature = "insecure-test-hooks")]
    pub insecure_adversary: Option<veil_protocols::adversary::Adversary>,
    /// Directory the nodes load pretrained models from (`veil_engine::bert::pretrained::MODELS_DIR_VAR`);
    /// `None`: what the nodes inherit (`models` under their working directory by default).
    pub models_dir: Option<PathBuf>,
}

impl ClusterOptions {
    /// TEST ONLY: makes every node act out `adversary` when it is the named party. Without the
    /// `insecure-test-hooks` feature nodes cannot deviate: this sets nothing and returns `false` for a
    /// deviation (`true` for `None`).
    pub fn set_test_adversary(
        &mut self,
        adversary: Option<veil_protocols::adversary::Adversary>,
    ) -> bool {
        #[cfg(feature = "insecure-test-hooks")]
        {
            self.insecure_adversary = adversary;
            true
        }
        #[cfg(not(feature = "insecure-test-hooks"))]
        {
            adversary.is_none()
        }
    }

    /// `parties` parties trusting `submitter`, with defaults.
    pub fn new(parties: usize, submitter: PublicKey) -> Self {
        Self {
            parties,
            dealer: true,
            trusted_submitters: vec![submitter],
            recv_timeout_ms: 60_000,
            idle_timeout_ms: 30_000,
            log: "info".into(),
            ready_timeout: Duration::from_secs(30),
            #[cfg(feature = "insecure-test-hooks")]
            insecure_dealer_seed: None,
            #[cfg(feature = "insecure-test-hooks")]
            insecure_adversary: None,
            models_dir: None,
        }
    }
}

/// One node process.
pub struct NodeProcess {
    child: Child,
    _stdout: ChildStdout,
    /// What the node announced.
    pub ready: ReadyLine,
    /// Its log file.
    pub log_path: PathBuf,
}

impl NodeProcess {
    /// The process's id (to read its resource use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The committee member this node is.
    pub fn member(&self) -> Member {
        Member {
            address: self.ready.address,
            public_key: self.ready.public_key,
        }
    }
}

/// Running node processes: the parties, then the dealer if there is one.
pub struct LocalCluster {
    nodes: Vec<NodeProcess>,
    parties: usize,
    dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts `options.parties` execution nodes and (if `options.dealer`) one dealer node from the `veil`
    /// executable `exe`.
    pub fn spawn(exe: &Path, options: &ClusterOptions) -> Result<LocalCluster> {
        let dir = tempfile::Builder::new()
            .prefix("veil-cluster-")
            .tempdir()
            .map_err(|e| NodeError::System("creating the cluster directory", e))?;
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            parties: options.parties,
            dir,
        };
        let mut pending = Vec::new();
        for i in 0..options.parties + usize::from(options.dealer) {
            let name = if i == options.parties {
                "dealer".to_string()
            } else {
                format!("party-{i}")
            };
            pending.push(cluster.start(exe, options, &name)?);
        }
        for (child, stdout, log_path) in pending {
            cluster.await_ready(child, stdout, log_path, options.ready_timeout)?;
        }
        Ok(cluster)
    }

    fn start(
        &self,
        exe: &Path,
        options: &ClusterOptions,
        name: &str,
    ) -> Result<(Child, ChildStdout, PathBuf)> {
        let base = self.dir.path().join(name);
        let mut config = NodeConfig::new(([127, 0, 0, 1], 0).into(), base.join("data"));
        config.operator = name.to_string();
        config.trusted_submitters = options.trusted_submitters.clone();
        config.recv_timeout_ms = options.recv_timeout_ms;
        config.idle_timeout_ms = options.idle_timeout_ms;
        config.log = options.log.clone();
        #[cfg(feature = "insecure-test-hooks")]
        {
            config.insecure_dealer_seed = options.insecure_dealer_seed;
            config.insecure_adversary = options.insecure_adversary;
        }
        std::fs::create_dir_all(&base).map_err(|source| NodeError::Io {
            what: "creating node directory",
            path: base.clone(),
            source,
        })?;
        let config_path = base.join("node.toml");
        std::fs::write(&config_path, config.to_toml()?).map_err(|source| NodeError::Io {
            what: "writing node configuration",
            path: config_path.clone(),
            source,
        })?;
        let log_path = base.join("node.log");
        let log = std::fs::File::create(&log_path).map_err(|source| NodeError::Io {
            what: "creating node log",
            path: log_path.clone(),
            source,
        })?;
        let mut command = Command::new(exe);
        if let Some(dir) = &options.models_dir {
            command.env(veil_engine::bert::pretrained::MODELS_DIR_VAR, dir);
        }
        let mut child = command
            .arg("node")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| NodeError::System("starting a node process", e))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NodeError::Job("node process without stdout".into()));
        };
        Ok((child, stdout, log_path))
    }

    fn await_ready(
        &mut self,
        mut child: Child,
        stdout: ChildStdout,
        log_path: PathBuf,
        wait: Duration,
    ) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        // The reader hands the pipe back with the line, so the node's stdout stays open while it runs.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send((read, reader.into_inner()));
        });
        let outcome = rx.recv_timeout(wait);
        let (line, stdout) = match outcome {
            Ok((Ok(line), stdout)) => (line, stdout),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NodeError::Job(format!(
                    "node did not become ready (log: {})",
                    tail(&log_path)
                )));
            }
        };
        match serde_json::from_str::<ReadyLine>(line.trim()) {
            Ok(ready) if ready.event == "ready" => {
                self.nodes.push(NodeProcess {
                    child,
                    _stdout: stdout,
                    ready,
                    log_path,
                });
                Ok(())
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(NodeError::Job(format!(
                    "node printed no ready line (log: {})",
                    tail(&log_path)
                )))
            }
        }
    }

    /// The execution parties.
    pub fn parties(&self) -> Vec<Member> {
        let n = self.parties.min(self.nodes.len());
        self.nodes[..n].iter().map(NodeProcess::member).collect()
    }

    /// The dealer, if the cluster has one.
    pub fn dealer(&self) -> Option<Member> {
        self.nodes.get(self.parties).map(NodeProcess::member)
    }

    /// Node `i` (parties first, the dealer last).
    pub fn node(&self, i: usize) -> Option<&NodeProcess> {
        self.nodes.get(i)
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let node = self
            .nodes
            .get_mut(i)
            .ok_or_else(|| NodeError::Job(format!("no node {i}")))?;
        node.child
            .kill()
            .map_err(|e| NodeError::System("killing a node", e))?;
        let _ = node.child.wait();
        Ok(())
    }

    /// Whether node `i` is still running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes
            .get_mut(i)
            .is_some_and(|n| matches!(n.child.try_wait(), Ok(None)))
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        self.nodes
            .get(i)
            .and_then(|n| std::fs::read_to_string(&n.log_path).ok())
            .unwrap_or_default()
    }

    /// The last lines of every node's log (for error reports).
    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.ready.operator, tail(&n.log_path)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}
