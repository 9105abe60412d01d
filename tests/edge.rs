//! The coordinator's HTTPS edge under abuse, against the real `veil coordinator` process: idle connections
//! (raw TCP and after a TLS handshake) are closed, JSON routes refuse megabyte bodies with 413 while blob
//! routes still take them, rates give 429, and a GET of a huge model's stages does not hold up other
//! requests.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use veil_node::api::{self, DeployRequest, StagesView};
use veil_node::api_client::{ApiClient, CallError};
use veil_node::{Identity, PublicKey};

/// A `veil coordinator` killed on drop.
struct Coordinator {
    child: Child,
    address: String,
    key: PublicKey,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a coordinator whose configuration file is the defaults plus `extra` (TOML).
fn coordinator(extra: &str) -> Coordinator {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("coordinator.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{extra}",
            data.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("coordinator.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["coordinator", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start veil coordinator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "ready line {line:?}: {e}\n{}",
            std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default()
        )
    });
    Coordinator {
        child,
        address: ready["address"].as_str().unwrap().to_string(),
        key: ready["public_key"].as_str().unwrap().parse().unwrap(),
        metrics: ready["metrics"]
            .as_str()
            .expect("a metrics address")
            .to_string(),
        _dir: dir,
    }
}

fn client(c: &Coordinator, identity: &Identity) -> ApiClient {
    ApiClient::new(identity, c.key, c.address.clone(), Duration::from_secs(30)).unwrap()
}

/// Waits until the server closes `stream` (a read returns end-of-file or an error) and says how long that
/// took; `None` if it stayed open `limit`.
fn closed_within(
    mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match read(&mut buf) {
            Ok(0) | Err(_) => return Some(started.elapsed()),
            Ok(_) if started.elapsed() < limit => continue,
            Ok(_) => return None,
        }
    }
}

fn status(e: &CallError) -> Option<u16> {
    e.status()
}

/// Sends an oversized body with `call` five times and requires 413 every time.
///
/// The coordinator answers 413 as soon as the body passes its route's limit, before the client has sent
/// it all; it then reads and discards the rest (`coordinator/src/http/drain.rs`), so the client never sees
/// a reset in place of the answer. Five tries in a row show it is not luck.
fn refused_as_too_large(call: impl Fn() -> Result<(), CallError>) {
    for attempt in 0..5 {
        match call() {
            Ok(()) => panic!("an oversized body was accepted"),
            Err(e) => assert_eq!(status(&e), Some(413), "attempt {attempt}: {e}"),
        }
    }
}

/// `GET /metrics` over plain HTTP/1.1 from `address`: the body.
fn scrape(address: &str) -> String {
    use std::io::Write;
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// Parses Prometheus text exposition: every sample's family was declared by a `# TYPE` line before it
/// (histograms own their `_bucket`, `_sum` and `_count` series), names and label names are well formed,
/// every value is a number, and histogram buckets are cumulative. Returns each sample `name{labels}` with
/// its value.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut samples = Vec::new();
    let mut last_bucket: Option<(String, f64)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(valid_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "declared twice: {line}"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels of {line}"));
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("label in {line}"));
                assert!(valid_name(k), "{line}");
                assert!(!v.contains('\n'), "{line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE before {line}");
        if name.ends_with("_bucket") {
            if let Some((prev_family, prev)) = &last_bucket {
                if prev_family == family {
                    assert!(value >= *prev, "buckets not cumulative at {line}");
                }
            }
            last_bucket = Some((family.to_string(), value));
        }
        samples.push((series.to_string(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no sample {series}"))
        .1
}

#[test]
fn idle_connections_are_closed_big_json_gets_413_and_rates_give_429() {
    let c = coordinator("[limits]\nper_address = { per_second = 1, burst = 12 }\n");
    let limit = Duration::from_secs(30);
    // An idle TCP connection that never starts TLS (the handshake timeout, 10 s by default).
    let raw = {
        let address = c.address.clone();
        std::thread::spawn(move || {
            let mut tcp = std::net::TcpStream::connect(&address).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
            closed_within(|b| tcp.read(b), limit)
        })
    };
    // An idle connection after a complete TLS handshake (the header timeout, 20 s by default).
    let tls = {
        let config =
            veil_node::api_client::client_config(&Identity::generate().unwrap(), c.key).unwrap();
        let address = c.address.clone();
        std::thread::spawn(move || {
            let name = rustls::pki_types::ServerName::try_from(veil_node::api_client::SERVER_NAME)
                .unwrap();
            let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let tcp = std::net::TcpStream::connect(&address).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            while stream.conn.is_handshaking() {
                stream
                    .conn
                    .complete_io(&mut stream.sock)
                    .expect("TLS handshake");
            }
            closed_within(|b| stream.read(b), limit)
        })
    };

    let me = Identity::generate().unwrap();
    {
        // Body limits, on a coordinator with default rates (the probes must not spend the rate budget
        // tested below).
        let roomy = coordinator("");
        let api = client(&roomy, &me);
        // A 1 MB JSON heartbeat is refused before it is parsed.
        let big = serde_json::json!({ "padding": "x".repeat(1 << 20) });
        refused_as_too_large(|| api.post_json::<_, Value>(api::HEARTBEAT, &big).map(drop));
        // So is a 1 MB deployment; a 1 MB blob upload passes the body limit (and is refused for its unknown
        // job instead).
        refused_as_too_large(|| api.post_json::<_, Value>(api::MODELS, &big).map(drop));
        let err = api
            .put_bytes("/v1/jobs/1/attempts/0/inputs/0", vec![7u8; 1 << 20])
            .expect_err("no such job");
        assert_eq!(status(&err), Some(404), "{err}");
    }
    let api = client(&c, &me);

    // The source address's burst is 12 at 1 per second: within 20 requests one is refused with 429.
    let mut refused_after = None;
    for i in 0..20 {
        match api.get_json::<Vec<Value>>(api::NODES) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(status(&e), Some(429), "{e}");
                assert!(e.to_string().contains("rate limited"), "{e}");
                refused_after = Some(i);
                break;
            }
        }
    }
    let refused_after = refused_after.expect("a 429 within 20 requests");
    assert!(
        refused_after >= 8,
        "refused after only {refused_after} requests"
    );

    // The metrics parse as Prometheus text, with every family, and count the 429.
    let samples = parse_prometheus(&scrape(&c.metrics));
    for family in [
        "veil_jobs{phase=\"running\"}",
        "veil_jobs_finished_total{outcome=\"done\"}",
        "veil_attempt_failures_total{cause=\"node_failure\"}",
        "veil_job_decision_seconds_count",
        "veil_job_duration_seconds_bucket{le=\"+Inf\"}",
        "veil_job_estimated_bytes_total{role=\"parties\"}",
        "veil_job_estimated_rounds_total",
        "veil_dealer_material_bytes_total",
        "veil_dealer_memory_bytes",
        "veil_nodes{state=\"active\"}",
    ] {
        sample(&samples, family);
    }
    assert_eq!(
        sample(&samples, "veil_http_refused_total{limit=\"rate_address\"}"),
        1.0
    );
    assert_eq!(
        sample(&samples, "veil_http_refused_total{limit=\"rate_key\"}"),
        0.0
    );

    let raw = raw
        .join()
        .unwrap()
        .expect("the idle TCP connection stayed open 30 s");
    let tls = tls
        .join()
        .unwrap()
        .expect("the idle TLS connection stayed open 30 s");
    eprintln!(
        "idle TCP connection closed after {} ms; idle TLS connection after {} ms",
        raw.as_millis(),
        tls.as_millis()
    );
    assert!(raw < limit && tls < limit);
}

#[test]
fn a_huge_models_stages_get_does_not_block_other_requests() {
    // Two 8192 x 8192 linear layers: 2^27 weights (512 MiB as f32), the kind of model whose skeleton used to
    // be built under the state lock on every GET of its stages.
    let c = coordinator(
        "max_stage_memory_bytes = 2147483648\n\
         [limits]\n\
         per_address = { per_second = 100000, burst = 100000 }\n\
         per_key = { per_second = 100000, burst = 100000 }\n\
         global = { per_second = 100000, burst = 100000 }\n",
    );
    let owner = Identity::generate().unwrap();
    let api = client(&c, &owner);
    let architecture = serde_json::json!({
        "name": "huge",
        "input": [8192],
        "layers": [
            { "linear": { "inputs": 8192, "outputs": 8192 } },
            "relu",
            { "linear": { "inputs": 8192, "outputs": 8192 } }
        ],
        "labels": [],
        "preprocess": null
    });
    let id = "ab".repeat(32);
    let deploy = DeployRequest {
        id: id.clone(),
        architecture: architecture.to_string(),
        weights: "shared".into(),
        parties: 2,
        frac_bits: 16,
        protocol: "semi2k".into(),
        pretrained: None,
        onnx: false,
        onnx_file: None,
    };
    api.post_json::<_, Value>(api::MODELS, &deploy)
        .expect("deploy");
    let stages: StagesView = api.get_json(&api::model_stages(&id)).unwrap();
    // Per layer: 24 bytes per weight plus 8 per output value: 1,610,874,880; 65,536; 1,610,874,880. Under
    // 2 GiB per stage: the first linear layer with the relu, then the second.
    assert_eq!(stages.stages, vec![[0, 2], [2, 3]]);

    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        let (address, key) = (c.address.clone(), c.key);
        let id = id.clone();
        std::thread::spawn(move || {
            let api = ApiClient::new(
                &Identity::generate().unwrap(),
                key,
                address,
                Duration::from_secs(30),
            )
            .unwrap();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let s: StagesView = api.get_json(&api::model_stages(&id)).unwrap();
                assert_eq!(s.stages.len(), 2);
                n += 1;
            }
            n
        })
    };
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let _: Vec<Value> = api.get_json(api::NODES).unwrap();
        latencies.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let gets = hammer.join().unwrap();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    let p50 = latencies[latencies.len() / 2];
    eprintln!(
        "GET /v1/nodes while {gets} stage GETs of a 2^27-weight model ran: p50 {} ms, p99 {} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    assert!(gets > 0);
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?}");
}
