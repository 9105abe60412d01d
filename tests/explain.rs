//! `veil job N --explain` against a real coordinator with five node processes of five operators: the
//! committee of a finished job is explained with the beacon's anchor, the epoch's revealed secret, the
//! published eligible set and the draw record, and recomputing the draw from that data (here, independently
//! of the CLI's own recheck) gives the same committee. Tampered explanations fail the recheck.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use veil_node::config::CoordinatorLink;
use veil_node::NodeConfig;
use veil_scheduler::explain::{ExplainError, JobExplanation};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_veil"))
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Proc {
    child: Child,
    _stdout: ChildStdout,
    ready: Value,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `veil <args>` with stderr to `log` and waits for its JSON ready line on stdout.
fn start(args: &[&str], log: &Path) -> Proc {
    let file = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(exe())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start veil");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send((read, reader.into_inner()));
    });
    let Ok((Ok(line), stdout)) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!(
            "veil {args:?} did not become ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    };
    let ready: Value = serde_json::from_str(line.trim()).expect("ready line");
    Proc {
        child,
        _stdout: stdout,
        ready,
        log: log.to_path_buf(),
    }
}

struct Network {
    dir: tempfile::TempDir,
    coordinator: Proc,
    address: String,
    key: String,
    nodes: Vec<Proc>,
}

impl Network {
    fn start(nodes: usize) -> Network {
        let dir = tempfile::Builder::new()
            .prefix("veil-explain-test-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nheartbeat_timeout_ms = 1500\ntick_ms = 100\n",
                dir.path().join("coordinator-data").display()
            ),
        )
        .unwrap();
        let coordinator = start(
            &["coordinator", "--config", config.to_str().unwrap()],
            &dir.path().join("coordinator.log"),
        );
        let address = coordinator.ready["address"].as_str().unwrap().to_string();
        let key = coordinator.ready["public_key"]
            .as_str()
            .unwrap()
            .to_string();
        let mut net = Network {
            dir,
            coordinator,
            address,
            key,
            nodes: Vec::new(),
        };
        for i in 0..nodes {
            let base = net.dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&base).unwrap();
            let mut config = NodeConfig::new(([127, 0, 0, 1], 0).into(), base.join("data"));
            config.operator = format!("operator-{i}");
            config.coordinator = Some(CoordinatorLink {
                address: net.address.clone(),
                public_key: net.key.parse().unwrap(),
                region: "local".into(),
                asn: None,
                heartbeat_ms: 200,
                cores: Some(2),
                memory_bytes: 4 << 30,
                bandwidth_bytes_per_s: 125_000_000,
                gpu_model: None,
                gpu_memory_bytes: None,
                certificate: None,
            });
            let path = base.join("node.toml");
            std::fs::write(&path, config.to_toml().unwrap()).unwrap();
            let node = start(
                &["node", "--config", path.to_str().unwrap()],
                &base.join("node.log"),
            );
            net.nodes.push(node);
        }
        net
    }

    fn connect_args(&self) -> Vec<String> {
        vec![
            "--coordinator".into(),
            self.address.clone(),
            "--coordinator-key".into(),
            self.key.clone(),
            "--identity".into(),
            self.dir.path().join("client").display().to_string(),
        ]
    }

    /// Runs `veil <command> --json` and parses its last stdout line; or its stderr.
    fn try_query(&self, command: &[&str]) -> Result<Value, String> {
        let out = Command::new(exe())
            .args(command)
            .args(self.connect_args())
            .arg("--json")
            .output()
            .expect("run veil");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("")).map_err(|e| e.to_string())
    }

    fn query(&self, command: &[&str]) -> Value {
        self.try_query(command)
            .unwrap_or_else(|e| panic!("veil {command:?} failed: {e}\n{}", self.logs()))
    }

    fn logs(&self) -> String {
        let mut out = format!(
            "--- coordinator\n{}",
            std::fs::read_to_string(&self.coordinator.log).unwrap_or_default()
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!(
                "--- node {i}\n{}\n",
                lines[lines.len().saturating_sub(20)..].join("\n")
            ));
        }
        out
    }
}

#[test]
fn a_jobs_committee_is_explained_and_recomputed_from_the_published_draw() {
    let net = Network::start(5);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = net.query(&["nodes"]);
        let active = nodes
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["state"] == "active")
            .count();
        if active == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes not active: {nodes}\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The beacon's anchor is public before any job is submitted.
    let anchor_before = net.query(&["beacon"]);
    let out = Command::new(exe())
        .args(["submit", "--workload", "network-a", "--parties", "2"])
        .args(["--inferences", "1", "--timeout-s", "120", "--json"])
        .args(net.connect_args())
        .output()
        .expect("veil submit");
    assert!(
        out.status.success(),
        "veil submit: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        net.logs()
    );
    let job = net.query(&["job", "1"]);
    assert_eq!(job["phase"], "done", "{job}");

    // The epoch's secret is revealed when the epoch ends (5 s): poll until the CLI's recheck passes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let explained = loop {
        let v = net.query(&["job", "1", "--explain"]);
        if v["recheck"] == "ok" {
            break v;
        }
        assert_eq!(v["recheck"], "pending", "{v}");
        assert!(
            Instant::now() < deadline,
            "the secret was never revealed: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let e: JobExplanation = serde_json::from_value(explained["explanation"].clone()).unwrap();
    assert_eq!(e.job, 1);
    assert_eq!(
        serde_json::to_value(veil_scheduler::beacon::hex32(&e.anchor)).unwrap(),
        anchor_before["anchor"],
        "the draw's anchor is the one published before submission"
    );
    // Independently of the CLI: recompute, and compare with the committee the job ran on.
    e.recheck()
        .expect("the draw recomputes from the published data");
    assert_eq!(e.stages.len(), 1);
    let stage = &e.stages[0];
    assert_eq!(stage.eligible.len(), 5, "every node was eligible");
    let picked: Vec<u64> = stage
        .record
        .picks
        .iter()
        .map(|p| u64::from(p.node.0))
        .collect();
    let committee = &job["committee"];
    let mut ran: Vec<u64> = committee["parties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node"].as_u64().unwrap())
        .collect();
    ran.push(committee["dealer"]["node"].as_u64().unwrap());
    // semi2k checks nothing: no verifier is drawn or held.
    assert!(committee["verifier"].is_null(), "{committee}");
    assert_eq!(picked, ran, "the explained draw is the committee that ran");
    // Distinct operators throughout: two parties and the dealer.
    let mut operators: Vec<&str> = e.names.iter().map(|n| n.operator.as_str()).collect();
    operators.sort_unstable();
    operators.dedup();
    assert_eq!(operators.len(), 3);

    // Tampering with any published input fails the recheck.
    let mut t = e.clone();
    t.stages[0].eligible[0].weight += 1;
    assert!(matches!(t.recheck(), Err(ExplainError::Recompute { .. })));
    let mut t = e.clone();
    t.stages[0].record.seed[0] ^= 1;
    assert!(matches!(
        t.recheck(),
        Err(ExplainError::SeedMismatch { .. })
    ));
    let mut t = e.clone();
    if let Some(s) = t.secret.as_mut() {
        s[0] ^= 1;
    }
    assert!(matches!(t.recheck(), Err(ExplainError::Beacon(_))));
    let mut t = e.clone();
    t.stages[0].record.picks.swap(0, 1);
    assert!(matches!(
        t.recheck(),
        Err(ExplainError::PicksMismatch { .. })
    ));
}
