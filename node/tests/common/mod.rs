//! Helpers of the node tests: in-process nodes on 127.0.0.1 and a client that trusts nothing else.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use veil_engine::{workloads, Model, Plan, WeightMode};
use veil_node::client::{Client, ClientOptions, Committee, QuicJob};
use veil_node::manifest::{Member, ModelSpec};
use veil_node::{Identity, Node, NodeConfig, PublicKey};
use veil_protocols::ring::FixedPoint;

/// Everything logged by this test binary.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_writer(move || LogWriter(sink.clone()))
            .with_ansi(false)
            .try_init();
        buf
    })
    .clone()
}

/// The captured log as text.
pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A node on 127.0.0.1 with a fresh identity, trusting `submitter`.
pub fn start_node(submitter: PublicKey, recv_timeout_ms: u64) -> Node {
    start_node_trusting(&[submitter], recv_timeout_ms)
}

/// A node on 127.0.0.1 with a fresh identity, trusting `submitters`.
pub fn start_node_trusting(submitters: &[PublicKey], recv_timeout_ms: u64) -> Node {
    logs();
    let mut config = NodeConfig::new(([127, 0, 0, 1], 0).into(), std::env::temp_dir());
    config.trusted_submitters = submitters.to_vec();
    config.recv_timeout_ms = recv_timeout_ms;
    config.idle_timeout_ms = 3_000;
    config.connect_timeout_ms = 3_000;
    let identity = Identity::generate().unwrap();
    Node::start(config, &identity).unwrap()
}

pub fn member(node: &Node) -> Member {
    Member {
        address: node.address(),
        public_key: node.public_key(),
    }
}

pub fn client(identity: Identity) -> Client {
    let options = ClientOptions {
        bind: ([127, 0, 0, 1], 0).into(),
        connect_timeout: Duration::from_secs(3),
        job_timeout: Duration::from_secs(60),
        ..ClientOptions::default()
    };
    Client::new(identity, options).unwrap()
}

/// `n` parties and a dealer trusting `submitter`; the dealer is last.
pub fn committee(
    n: usize,
    submitters: &[PublicKey],
    recv_timeout_ms: u64,
) -> (Vec<Node>, Committee) {
    let nodes: Vec<Node> = (0..=n)
        .map(|_| start_node_trusting(submitters, recv_timeout_ms))
        .collect();
    let committee = Committee {
        parties: nodes[..n].iter().map(member).collect(),
        dealer: Some(member(&nodes[n])),
    };
    (nodes, committee)
}

pub fn network_a() -> (Model, Plan) {
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name("network-a", 7, &device)
        .unwrap()
        .unwrap();
    let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared).unwrap();
    (model, plan)
}

pub fn job<'a>(model: &'a Model, plan: &'a Plan) -> QuicJob<'a> {
    QuicJob {
        model,
        plan,
        spec: ModelSpec {
            workload: "network-a".into(),
            seed: 7,
            weights: WeightMode::Shared,
            frac_bits: FixedPoint::default().frac_bits(),
            deployed: None,
        },
        batch: 1,
        threads: 1,
        seed: Some(1),
        profile: false,
    }
}
