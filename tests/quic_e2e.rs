//! End to end over real processes: three execution nodes and a dealer, each a `veil node` process on
//! 127.0.0.1, run network-a and lenet privately; the results match plaintext burn, and, with the same
//! (test-only) seeds, the outputs and the traffic per inference equal the in-memory run's bit for bit. A party killed mid-job fails the job cleanly.
//! A sentence encoder (a small random one, installed as the pretrained model the nodes load by name and id)
//! embeds over QUIC with the same party program: outputs, bytes and rounds equal the in-memory run's.
//! `rep3` runs on three party processes and no dealer process, with the in-memory run's bytes and rounds
//! per party (pinned), directly and through `veil bench --transport quic`; so does `rep3m` (its checks included).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private as run_in_memory, LocalOptions};
use veil_engine::{workloads, Plan, WeightMode};
use veil_node::client::{run_private, Client, ClientOptions, Committee, QuicJob};
use veil_node::cluster::{ClusterOptions, LocalCluster};
use veil_node::manifest::ModelSpec;
use veil_node::Identity;
use veil_protocols::ring::FixedPoint;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_veil"))
}

fn client(identity: Identity) -> Client {
    Client::new(
        identity,
        ClientOptions {
            bind: ([127, 0, 0, 1], 0).into(),
            connect_timeout: Duration::from_secs(5),
            job_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(3),
            ..ClientOptions::default()
        },
    )
    .expect("client")
}

fn committee(cluster: &LocalCluster) -> Committee {
    Committee {
        parties: cluster.parties(),
        dealer: Some(cluster.dealer().expect("dealer")),
    }
}

/// Writes a tiny random encoder as `dir/all-minilm-l6-v2` (config and weights: what the parties load).
fn install_random_encoder(dir: &Path, seed: u64) -> veil_engine::bert::Bert {
    use veil_engine::bert::random::{random_weights, tiny_config};
    let config = tiny_config(2, 32, 4);
    let json = serde_json::json!({
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "vocab_size": config.vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "position_embedding_type": config.position_embedding_type,
    });
    let model = dir.join(veil_engine::bert::pretrained::NAMES[0]);
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), json.to_string()).unwrap();
    let weights = random_weights(&config, seed).unwrap();
    std::fs::write(model.join("model.safetensors"), &weights).unwrap();
    veil_engine::bert::Bert::from_bytes(&weights, config, &burn::tensor::Device::flex()).unwrap()
}

#[test]
fn an_encoder_embeds_over_quic_processes_as_in_memory() {
    use veil_engine::bert::pretrained;
    use veil_engine::bert::private::{PrivateBert, PrivateConfig};
    use veil_engine::bert::run::embed_private as embed_in_memory;
    use veil_engine::local::Protocol;
    use veil_node::client::{embed_private, EmbedJob};

    let models = tempfile::tempdir().unwrap();
    let bert = install_random_encoder(models.path(), 5);
    let name = pretrained::NAMES[0];
    let id = pretrained::model_id(name, &models.path().join(name)).unwrap();
    let model =
        PrivateBert::new(&bert, PrivateConfig::new(FixedPoint::default()).unwrap()).unwrap();
    const SEED: u64 = 2027;
    let identity = Identity::generate().unwrap();
    let mut options = ClusterOptions::new(3, identity.public_key());
    options.insecure_dealer_seed = Some(SEED);
    options.models_dir = Some(models.path().to_path_buf());
    let cluster = LocalCluster::spawn(exe(), &options).expect("nodes start");
    let client = client(identity);
    let committee = committee(&cluster);
    let sequences: Vec<Vec<u32>> = vec![vec![1, 17, 42, 99, 7, 2], vec![1, 3, 5, 8, 13, 2]];
    for protocol in [Protocol::Semi2k, Protocol::Spdz2k, Protocol::Rep3] {
        let job = EmbedJob {
            model: &model,
            name: name.into(),
            id: id.clone(),
            threads: 1,
            seed: Some(SEED),
            profile: false,
        };
        let quic = match embed_private(&client, &committee, &job, &sequences, protocol) {
            Ok(r) => r,
            Err(e) => panic!(
                "{protocol:?} embedding over QUIC failed: {e}\n{}",
                cluster.log_tails()
            ),
        };
        let mut mem_options = LocalOptions::new(3, Arc::new(RingGemm::new(1)));
        mem_options.seed = Some(SEED);
        mem_options.protocol = protocol;
        let mem = embed_in_memory(&model, &sequences, &mem_options).unwrap();
        assert_eq!(quic.report.outputs.len(), sequences.len());
        for ((ids, q), m) in sequences.iter().zip(&quic.report.outputs).zip(&mem.outputs) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            // rep3's parties draw their PRF keys themselves (no test seed reaches them): their
            // truncations round differently, so only the accuracy and the traffic compare.
            if protocol != Protocol::Rep3 {
                assert_eq!(
                    bits(q),
                    bits(m),
                    "{protocol:?}: QUIC and in-memory embeddings differ"
                );
            }
            let c = veil_engine::bert::cosine(q, &bert.embed(ids).unwrap());
            assert!(c >= 0.99, "{protocol:?}: cosine {c} against plaintext burn");
        }
        for (q, m) in quic.report.online.iter().zip(&mem.online) {
            let counts = |s: &veil_protocols::net::NetStats| {
                (s.bytes_sent, s.bytes_received, s.messages_sent, s.rounds)
            };
            let q: Vec<_> = q.iter().map(counts).collect();
            let m: Vec<_> = m.iter().map(counts).collect();
            assert_eq!(q, m, "{protocol:?}: QUIC and in-memory accounting differ");
        }
        assert_eq!(quic.report.dealer_bytes, mem.dealer_bytes, "{protocol:?}");
    }
    // A job that names other weights is refused by every party, before anything is computed.
    let wrong = EmbedJob {
        model: &model,
        name: name.into(),
        id: "0".repeat(64),
        threads: 1,
        seed: None,
        profile: false,
    };
    let refused = embed_private(&client, &committee, &wrong, &sequences, Protocol::Semi2k);
    let why = refused
        .err()
        .expect("a wrong model id is refused")
        .to_string();
    assert!(why.contains("not the job's"), "{why}");
}

#[test]
fn network_a_and_lenet_over_quic_processes_match_plaintext_and_memory() {
    let identity = Identity::generate().unwrap();
    let mut options = ClusterOptions::new(3, identity.public_key());
    // Test only: the dealer derives its seeds as the in-memory runner does, so both runs draw the same
    // randomness and must agree bit for bit.
    const SEED: u64 = 2026;
    options.insecure_dealer_seed = Some(SEED);
    let cluster = LocalCluster::spawn(exe(), &options).expect("nodes start");
    let client = client(identity);
    let committee = committee(&cluster);
    let device = burn::tensor::Device::flex();
    for workload in ["network-a", "lenet"] {
        let model = workloads::by_name(workload, 7, &device).unwrap().unwrap();
        let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared).unwrap();
        let inputs: Vec<Vec<f32>> = (0..2)
            .map(|i| workloads::sample_input(&model, 1, 40 + i))
            .collect();
        let job = QuicJob {
            model: &model,
            plan: &plan,
            spec: ModelSpec {
                workload: workload.into(),
                seed: 7,
                weights: WeightMode::Shared,
                frac_bits: FixedPoint::default().frac_bits(),
                deployed: None,
            },
            batch: 1,
            threads: 1,
            seed: Some(SEED),
            profile: true,
        };
        let quic = match run_private(&client, &committee, &job, &inputs) {
            Ok(r) => r,
            Err(e) => panic!("{workload} over QUIC failed: {e}\n{}", cluster.log_tails()),
        };
        for (input, private) in inputs.iter().zip(&quic.report.outputs) {
            let plain = model.forward_plain(input, 1).unwrap();
            let err = private
                .iter()
                .zip(&plain)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                err < 1e-3,
                "{workload}: private vs plaintext burn differ by {err}"
            );
        }
        let mut mem_options = LocalOptions::new(3, Arc::new(RingGemm::new(1)));
        mem_options.seed = Some(SEED);
        let mem = run_in_memory(&model, &plan, &inputs, 1, &mem_options).unwrap();
        for (q, m) in quic.report.outputs.iter().zip(&mem.outputs) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(q),
                bits(m),
                "{workload}: QUIC and in-memory outputs differ"
            );
        }
        for (q, m) in quic.report.online.iter().zip(&mem.online) {
            for (qs, ms) in q.iter().zip(m) {
                assert_eq!(
                    (
                        qs.bytes_sent,
                        qs.bytes_received,
                        qs.messages_sent,
                        qs.rounds
                    ),
                    (
                        ms.bytes_sent,
                        ms.bytes_received,
                        ms.messages_sent,
                        ms.rounds
                    ),
                    "{workload}: QUIC and in-memory accounting differ"
                );
            }
        }
        assert_eq!(quic.report.dealer_bytes, mem.dealer_bytes, "{workload}");
        let setup_q: Vec<u64> = quic.report.setup.iter().map(|s| s.bytes_sent).collect();
        let setup_m: Vec<u64> = mem.setup.iter().map(|s| s.bytes_sent).collect();
        assert_eq!(setup_q, setup_m, "{workload}");
        // QUIC's own bytes exceed the payload (headers, acknowledgements), but not wildly.
        let payload = quic.report.online[1]
            .iter()
            .map(|s| s.bytes_sent)
            .max()
            .unwrap();
        let udp = quic.udp_tx_bytes[1].iter().copied().max().unwrap();
        assert!(
            udp >= payload && udp < payload * 2 + 20_000,
            "{workload}: udp {udp} for payload {payload}"
        );
    }
}

#[test]
fn a_killed_party_fails_the_job_within_the_timeout() {
    let identity = Identity::generate().unwrap();
    let mut options = ClusterOptions::new(3, identity.public_key());
    options.recv_timeout_ms = 1_500;
    options.idle_timeout_ms = 3_000;
    let mut cluster = LocalCluster::spawn(exe(), &options).expect("nodes start");
    let client = client(identity);
    let committee = committee(&cluster);
    let device = burn::tensor::Device::flex();
    let model = workloads::network_a(7, &device).unwrap();
    let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared).unwrap();
    let input = workloads::sample_input(&model, 1, 5);
    let inputs = vec![input; 3_000];
    let job = QuicJob {
        model: &model,
        plan: &plan,
        spec: ModelSpec {
            workload: "network-a".into(),
            seed: 7,
            weights: WeightMode::Shared,
            frac_bits: FixedPoint::default().frac_bits(),
            deployed: None,
        },
        batch: 1,
        threads: 1,
        seed: None,
        profile: false,
    };
    let (outcome, killed_at) = std::thread::scope(|s| {
        let runner = s.spawn(|| run_private(&client, &committee, &job, &inputs));
        // Wait until the parties are computing.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(0..3).all(|i| cluster.log(i).contains("party connected, computing"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        cluster.kill(2).expect("kill party 2");
        let killed_at = Instant::now();
        (runner.join().unwrap(), killed_at)
    });
    let waited = killed_at.elapsed();
    let err = match outcome {
        Ok(_) => panic!("the job must fail when a party is killed"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("timed out") && err.contains("party 2"),
        "the error must say who went silent: {err}"
    );
    assert!(waited < Duration::from_secs(15), "failure took {waited:?}");
    for i in [0, 1, 3] {
        assert!(cluster.is_running(i), "node {i} must survive");
    }
    // Survivors drop the job's state and keep serving.
    let members = [
        committee.parties[0].clone(),
        committee.parties[1].clone(),
        committee.dealer.clone().expect("dealer"),
    ];
    for m in &members {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live = client.ping(m).expect("survivor answers");
            if live == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job state leaked on {}",
                m.address
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(cluster.log(0).contains("job failed") || cluster.log(1).contains("job failed"));
}

#[test]
fn bench_over_quic_reports_the_in_memory_json_shape() {
    let run = |transport: &str| -> serde_json::Value {
        let out = std::process::Command::new(exe())
            .args([
                "bench",
                "--workload",
                "network-a",
                "--reps",
                "3",
                "--json",
                "--transport",
                transport,
            ])
            .output()
            .expect("run veil bench");
        assert!(
            out.status.success(),
            "veil bench --transport {transport} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
    };
    let quic = run("quic");
    let mem = run("mem");
    assert_eq!(quic["transport"], "quic");
    for key in [
        "bytes_per_party",
        "bytes_all_parties",
        "rounds",
        "dealer_bytes",
        "setup_bytes_per_party",
    ] {
        assert_eq!(quic[key], mem[key], "{key}");
    }
    assert!(quic["max_abs_err"].as_f64().unwrap() < 1e-3);
    assert!(quic["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(
        quic["quic_udp_bytes_per_party"].as_u64().unwrap()
            >= quic["bytes_per_party"].as_u64().unwrap()
    );
    let mut mem_keys: Vec<_> = mem.as_object().unwrap().keys().cloned().collect();
    mem_keys.push("quic_udp_bytes_per_party".into());
    mem_keys.sort();
    let mut quic_keys: Vec<_> = quic.as_object().unwrap().keys().cloned().collect();
    quic_keys.sort();
    assert_eq!(quic_keys, mem_keys, "same JSON shape");
}

/// Per party: (bytes sent, bytes received, messages sent, rounds).
fn counts(parties: &[veil_protocols::net::NetStats]) -> Vec<(u64, u64, u64, u64)> {
    parties
        .iter()
        .map(|s| (s.bytes_sent, s.bytes_received, s.messages_sent, s.rounds))
        .collect()
}

#[test]
fn rep3_runs_on_three_party_processes_and_no_dealer_with_the_in_memory_traffic() {
    use veil_engine::local::Protocol;
    use veil_node::client::run_private_protocol;

    let identity = Identity::generate().unwrap();
    let mut options = ClusterOptions::new(3, identity.public_key());
    options.dealer = false;
    let cluster = LocalCluster::spawn(exe(), &options).expect("nodes start");
    assert!(cluster.dealer().is_none(), "no dealer process");
    assert!(cluster.node(3).is_none(), "three processes");
    let client = client(identity);
    let committee = Committee {
        parties: cluster.parties(),
        dealer: None,
    };
    let device = burn::tensor::Device::flex();
    // Per workload, the most bytes one party sends in one inference and that party's rounds (the bench's
    // `bytes_per_party` and `rounds`), pinned.
    for (workload, bytes_per_party, rounds) in [("network-a", 17_456, 16), ("lenet", 573_264, 47)] {
        let model = workloads::by_name(workload, 7, &device).unwrap().unwrap();
        let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared).unwrap();
        let inputs: Vec<Vec<f32>> = (0..2)
            .map(|i| workloads::sample_input(&model, 1, 40 + i))
            .collect();
        let job = QuicJob {
            model: &model,
            plan: &plan,
            spec: ModelSpec {
                workload: workload.into(),
                seed: 7,
                weights: WeightMode::Shared,
                frac_bits: FixedPoint::default().frac_bits(),
                deployed: None,
            },
            batch: 1,
            threads: 1,
            seed: None,
            profile: false,
        };
        let quic = match run_private_protocol(&client, &committee, &job, &inputs, Protocol::Rep3) {
            Ok(r) => r,
            Err(e) => panic!(
                "{workload} under rep3 over QUIC failed: {e}\n{}",
                cluster.log_tails()
            ),
        };
        for (input, private) in inputs.iter().zip(&quic.report.outputs) {
            let plain = model.forward_plain(input, 1).unwrap();
            let err = private
                .iter()
                .zip(&plain)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                err < 1e-3,
                "{workload}: rep3 vs plaintext burn differ by {err}"
            );
        }
        let mut mem_options = LocalOptions::new(3, Arc::new(RingGemm::new(1)));
        mem_options.protocol = Protocol::Rep3;
        let mem = run_in_memory(&model, &plan, &inputs, 1, &mem_options).unwrap();
        assert_eq!(quic.report.online.len(), mem.online.len());
        for (q, m) in quic.report.online.iter().zip(&mem.online) {
            assert_eq!(
                counts(q),
                counts(m),
                "{workload}: QUIC and in-memory accounting differ"
            );
        }
        assert_eq!(
            counts(&quic.report.setup),
            counts(&mem.setup),
            "{workload}: key agreement"
        );
        assert!(quic.report.setup.iter().all(|s| s.bytes_sent == 32));
        assert_eq!((quic.report.dealer_bytes, mem.dealer_bytes), (0, 0));
        let busiest = quic.report.online[1]
            .iter()
            .rev()
            .max_by_key(|s| s.bytes_sent)
            .unwrap();
        println!(
            "{workload}: rep3 bytes_per_party {} rounds {}",
            busiest.bytes_sent, busiest.rounds
        );
        assert_eq!(
            (busiest.bytes_sent, busiest.rounds),
            (bytes_per_party, rounds),
            "{workload}"
        );
    }
}

/// `veil bench --workload network-a --protocol PROTOCOL --reps 2 --json --transport TRANSPORT`'s report.
fn bench_json(protocol: &str, transport: &str) -> serde_json::Value {
    let out = std::process::Command::new(exe())
        .args([
            "bench",
            "--workload",
            "network-a",
            "--protocol",
            protocol,
            "--reps",
            "2",
            "--json",
            "--transport",
            transport,
        ])
        .output()
        .expect("run veil bench");
    assert!(
        out.status.success(),
        "veil bench --protocol {protocol} --transport {transport} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

/// The QUIC run's traffic equals the in-memory run's, key by key.
fn assert_same_traffic(quic: &serde_json::Value, mem: &serde_json::Value, protocol: &str) {
    assert_eq!(
        (quic["transport"].as_str(), quic["protocol"].as_str()),
        (Some("quic"), Some(protocol))
    );
    for key in [
        "bytes_per_party",
        "bytes_all_parties",
        "rounds",
        "dealer_bytes",
        "dealer_bytes_job",
        "setup_bytes_per_party",
    ] {
        assert_eq!(quic[key], mem[key], "{protocol}: {key}");
    }
}

#[test]
fn bench_rep3_over_quic_reports_the_in_memory_bytes_and_rounds() {
    assert_replicated_bench_over_quic("rep3", 17_456, 16);
}

/// `rep3m` on three party processes (no dealer process): each inference's check (openings and the product
/// proof) runs over QUIC with exactly the in-memory run's bytes and rounds, pinned.
#[test]
fn bench_rep3m_over_quic_reports_the_in_memory_bytes_and_rounds() {
    assert_replicated_bench_over_quic("rep3m", 39_848, 68);
}

/// `veil bench --protocol PROTOCOL` (a dealer-free replicated one) over QUIC: the in-memory run's traffic,
/// pinned at `bytes_per_party` and `rounds` on network-a, no dealer bytes, the 32-byte key agreement, and
/// the accuracy bound.
fn assert_replicated_bench_over_quic(protocol: &str, bytes_per_party: u64, rounds: u64) {
    let quic = bench_json(protocol, "quic");
    let mem = bench_json(protocol, "mem");
    assert_same_traffic(&quic, &mem, protocol);
    assert_eq!(quic["bytes_per_party"], bytes_per_party, "{protocol}");
    assert_eq!(quic["rounds"], rounds, "{protocol}");
    assert_eq!(quic["dealer_bytes_job"], 0, "{protocol}");
    assert_eq!(quic["setup_bytes_per_party"], 32, "{protocol}");
    let err = quic["max_abs_err"].as_f64().expect("max_abs_err");
    assert!(err < 1e-3, "{protocol}: max_abs_err {err}");
}
