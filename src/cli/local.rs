//! A whole veil network on loopback, in real processes: one `veil coordinator` and `n` `veil node`
//! processes (each of its own operator), started from this executable in a temporary directory, for
//! `veil demo` and `veil devnet`. Operators are admitted, not declared: each node's operator has its own
//! operator key (`node-{i}/operator/operator.pk8`), certifies its node (`node-{i}/node.cert`), and the
//! coordinator admits exactly those operator keys.
//!
//! Invariants: every process started here is killed (SIGKILL) and reaped when the [`LocalNetwork`] is
//! dropped, also on error or panic, and gets SIGTERM if this process dies first (Linux); the temporary directory (state, keys, logs) goes with it unless kept.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use veil_node::config::CoordinatorLink;
use veil_node::operator::{create_operator_key, now_s, CertKind, Certificate, CertificateChain};
use veil_node::{Identity, NodeConfig, PublicKey};

/// Each node's certificate file, in its directory.
const CERTIFICATE_FILE: &str = "node.cert";
/// Validity of the local operators' certificates, days.
const CERTIFICATE_DAYS: u64 = 30;

use veil_client::Client;
use veil_node::api::{self, NodeView};

/// A child process, killed and reaped on drop.
struct Proc {
    child: Child,
    _stdout: ChildStdout,
    ready: serde_json::Value,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `exe args` with stderr to `log`, and waits (at most `wait`) for its JSON ready line on stdout.
fn start(exe: &Path, args: &[&str], log: &Path, wait: Duration) -> Result<Proc> {
    // Appended to: a restarted process (`veil soak`) keeps its predecessor's log.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file));
    super::signals::die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {} {args:?}", exe.display()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        bail!("no stdout");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send((read, reader.into_inner()));
    });
    let outcome = rx.recv_timeout(wait);
    let (line, stdout) = match outcome {
        Ok((Ok(line), stdout)) if !line.trim().is_empty() => (line, stdout),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "veil {args:?} did not become ready; its log:\n{}",
                tail(&std::fs::read_to_string(log).unwrap_or_default())
            );
        }
    };
    let ready: serde_json::Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("veil {args:?}: ready line {line:?}: {e}");
        }
    };
    Ok(Proc {
        child,
        _stdout: stdout,
        ready,
        log: log.to_path_buf(),
    })
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Options of a local network.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Node processes (each its own operator).
    pub nodes: usize,
    /// Log level of the processes.
    pub log: String,
    /// The coordinator's `max_stage_memory_bytes` (0: models are never split into stages).
    pub max_stage_memory_bytes: u64,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            nodes: 5,
            log: "info".into(),
            max_stage_memory_bytes: 0,
        }
    }
}

/// A coordinator and its nodes on loopback (see the module doc).
pub struct LocalNetwork {
    // Dropped first: the processes go before their directory.
    nodes: Vec<Proc>,
    coordinator: Proc,
    address: String,
    key: PublicKey,
    dir: tempfile::TempDir,
}

impl LocalNetwork {
    /// Stops every process gracefully: SIGTERM to the nodes, then to the coordinator, each group given
    /// `grace` before SIGKILL; all are reaped. (Dropping the network kills whatever is still running.)
    pub fn stop(&mut self, grace: Duration) {
        let mut nodes: Vec<&mut Child> = self.nodes.iter_mut().map(|p| &mut p.child).collect();
        super::signals::stop_children(&mut nodes, grace);
        super::signals::stop_children(&mut [&mut self.coordinator.child], grace);
    }

    /// The coordinator's metrics URL (`http://ADDR/metrics`), if it serves metrics.
    pub fn metrics_url(&self) -> Option<String> {
        self.coordinator.ready["metrics"]
            .as_str()
            .map(|a| format!("http://{a}/metrics"))
    }

    /// Starts the coordinator and `options.nodes` nodes from executable `exe` (usually this one).
    pub fn start(exe: &Path, options: &LocalOptions) -> Result<LocalNetwork> {
        let dir = tempfile::Builder::new()
            .prefix("veil-local-")
            .tempdir()
            .context("creating a temporary directory")?;
        // Each operator's key and its node's identity, before anything starts: the coordinator admits the
        // operators, and each node presents its operator's certificate.
        let mut operators = Vec::with_capacity(options.nodes);
        for i in 0..options.nodes {
            let base = dir.path().join(format!("node-{i}"));
            let operator = create_operator_key(&base.join("operator"))?;
            let (node, _) = Identity::load_or_create(&base.join("data"))?;
            let cert = Certificate::issue(
                &operator,
                CertKind::Node,
                node.public_key(),
                now_s() + CERTIFICATE_DAYS * 86_400,
                Some("local".into()),
                None,
            )?;
            let chain = CertificateChain {
                node: cert,
                admission: None,
            };
            std::fs::write(base.join(CERTIFICATE_FILE), chain.to_text())?;
            operators.push(format!("\"{}\"", operator.public_key()));
        }
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n\
                 data_dir = \"{}\"\n\
                 log = \"{}\"\n\
                 heartbeat_timeout_ms = 3000\n\
                 tick_ms = 50\n\
                 max_attempts = 3\n\
                 scheduled_timeout_ms = 20000\n\
                 running_timeout_ms = 120000\n\
                 max_stage_memory_bytes = {}\n\
                 [admission]\n\
                 operators = [{}]\n\
                 max_nodes_per_operator = 1\n",
                dir.path().join("coordinator-data").display(),
                options.log,
                options.max_stage_memory_bytes,
                operators.join(", ")
            ),
        )?;
        let coordinator = start(
            exe,
            &["coordinator", "--config", &config.display().to_string()],
            &dir.path().join("coordinator.log"),
            Duration::from_secs(60),
        )?;
        let address = coordinator.ready["address"]
            .as_str()
            .context("the coordinator's ready line has no address")?
            .to_string();
        let key: PublicKey = coordinator.ready["public_key"]
            .as_str()
            .context("the coordinator's ready line has no key")?
            .parse()
            .map_err(|e| anyhow::anyhow!("coordinator key: {e}"))?;
        let mut net = LocalNetwork {
            nodes: Vec::new(),
            coordinator,
            address,
            key,
            dir,
        };
        for i in 0..options.nodes {
            net.start_node(exe, i, &options.log)?;
        }
        Ok(net)
    }

    fn start_node(&mut self, exe: &Path, i: usize, log: &str) -> Result<()> {
        let node = self.spawn_node(exe, i, log)?;
        self.nodes.push(node);
        Ok(())
    }

    /// Stops node `i`, with SIGKILL (`grace` none: a crash) or with SIGTERM and `grace` before SIGKILL,
    /// reaps it, then starts it again on its data directory, same key and certificate (for `veil soak`);
    /// returns once the new process is ready.
    pub fn restart_node(
        &mut self,
        exe: &Path,
        i: usize,
        log: &str,
        grace: Option<Duration>,
    ) -> Result<()> {
        let Some(old) = self.nodes.get_mut(i) else {
            bail!("no node {i}");
        };
        match grace {
            Some(grace) => super::signals::stop_children(&mut [&mut old.child], grace),
            None => {
                let _ = old.child.kill();
                let _ = old.child.wait();
            }
        }
        let node = self.spawn_node(exe, i, log)?;
        self.nodes[i] = node;
        Ok(())
    }

    /// The coordinator process's id.
    pub fn coordinator_pid(&self) -> u32 {
        self.coordinator.child.id()
    }

    fn spawn_node(&self, exe: &Path, i: usize, log: &str) -> Result<Proc> {
        let base = self.dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&base)?;
        let mut config = NodeConfig::new(([127, 0, 0, 1], 0).into(), base.join("data"));
        config.operator = format!("operator-{i}");
        config.log = log.to_string();
        config.recv_timeout_ms = 10_000;
        config.metrics_listen = Some(([127, 0, 0, 1], 0).into());
        config.submit_timeout_ms = 30_000;
        config.coordinator = Some(CoordinatorLink {
            address: self.address.clone(),
            public_key: self.key,
            region: "local".into(),
            asn: None,
            heartbeat_ms: 100,
            cores: Some(2),
            memory_bytes: 4 << 30,
            bandwidth_bytes_per_s: 125_000_000,
            gpu_model: None,
            gpu_memory_bytes: None,
            certificate: Some(base.join(CERTIFICATE_FILE)),
        });
        let path = base.join("node.toml");
        std::fs::write(&path, config.to_toml()?)?;
        start(
            exe,
            &["node", "--config", &path.display().to_string()],
            &base.join("node.log"),
            Duration::from_secs(60),
        )
    }

    /// The coordinator's HTTPS address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The coordinator's pinned key.
    pub fn coordinator_key(&self) -> PublicKey {
        self.key
    }

    /// The network's directory (logs under it: `coordinator.log`, `node-{i}/node.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Each node process's metrics address (`host:port`, Prometheus text at `/metrics`), in start order.
    pub fn node_metrics(&self) -> Vec<Option<String>> {
        self.nodes
            .iter()
            .map(|n| n.ready["metrics"].as_str().map(String::from))
            .collect()
    }

    /// The node processes' public keys, in start order.
    pub fn node_keys(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                n.ready["public_key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// A client with a fresh identity and output key, or with those kept under `identity_dir`.
    pub fn client(&self, identity_dir: Option<&Path>) -> Result<Client> {
        let (identity, key) = match identity_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (
                    veil_node::Identity::load_or_create(dir)?.0,
                    veil_node::envelope::OpeningKey::load_or_create(
                        &dir.join(veil_node::inbox::KEY_FILE),
                    )?,
                )
            }
            None => (
                veil_node::Identity::generate()?,
                veil_node::envelope::OpeningKey::generate(),
            ),
        };
        let api = veil_client::ApiClient::new(
            &identity,
            self.key,
            self.address.clone(),
            Duration::from_secs(30),
        )?;
        Ok(Client::new(api, self.key, key))
    }

    /// Waits until `n` nodes passed their trial and are active; `progress(active)` sees each count.
    pub fn wait_active(
        &self,
        client: &Client,
        n: usize,
        timeout: Duration,
        mut progress: impl FnMut(usize),
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes: Vec<NodeView> = client.api().get_json(api::NODES)?;
            let active = nodes.iter().filter(|v| v.state == "active").count();
            progress(active);
            if active >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "only {active} of {n} nodes passed their trial within {timeout:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every process's log.
    pub fn logs(&self) -> String {
        let read = |p: &Path| tail(&std::fs::read_to_string(p).unwrap_or_default());
        let mut out = format!("--- coordinator\n{}\n", read(&self.coordinator.log));
        for (i, n) in self.nodes.iter().enumerate() {
            out.push_str(&format!("--- node {i}\n{}\n", read(&n.log)));
        }
        out
    }
}
