//! `spdz2k` end to end over real processes: three execution nodes and a dealer, each a `veil node` process
//! on 127.0.0.1, run network-a under the MAC-authenticated protocol. With the same (test-only) dealer seed
//! the outputs equal the in-memory runner's bit for bit, and every party's bytes, messages and rounds per
//! inference are the same; the parties' MAC-check transcripts pass the verifier, and a transcript changed in
//! one party's view fails it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private as run_in_memory, LocalOptions, Protocol};
use veil_engine::{workloads, Plan, WeightMode};
use veil_node::client::{run_private_protocol, Client, ClientOptions, Committee, QuicJob};
use veil_node::cluster::{ClusterOptions, LocalCluster};
use veil_node::manifest::ModelSpec;
use veil_node::verifier::{verify_job, VerifyError};
use veil_node::Identity;
use veil_protocols::ring::FixedPoint;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_veil"))
}

#[test]
fn spdz2k_over_quic_matches_memory_bit_for_bit_and_its_transcripts_verify() {
    let identity = Identity::generate().unwrap();
    let mut options = ClusterOptions::new(3, identity.public_key());
    // Test only: the dealer derives its seeds as the in-memory runner does.
    const SEED: u64 = 2027;
    options.insecure_dealer_seed = Some(SEED);
    let cluster = LocalCluster::spawn(exe(), &options).expect("nodes start");
    let client = Client::new(
        identity,
        ClientOptions {
            bind: ([127, 0, 0, 1], 0).into(),
            connect_timeout: Duration::from_secs(5),
            job_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        },
    )
    .expect("client");
    let committee = Committee {
        parties: cluster.parties(),
        dealer: Some(cluster.dealer().expect("dealer")),
    };
    let device = burn::tensor::Device::flex();
    let workload = "network-a";
    let model = workloads::by_name(workload, 7, &device).unwrap().unwrap();
    let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared).unwrap();
    let inputs: Vec<Vec<f32>> = (0..2)
        .map(|i| workloads::sample_input(&model, 1, 60 + i))
        .collect();
    let spec: ModelSpec = serde_json::from_value(serde_json::json!({
        "workload": workload, "seed": 7, "weights": "Shared",
        "frac_bits": FixedPoint::default().frac_bits(),
    }))
    .unwrap();
    let job = QuicJob {
        model: &model,
        plan: &plan,
        spec,
        batch: 1,
        threads: 1,
        seed: Some(SEED),
        profile: true,
    };
    let quic = match run_private_protocol(&client, &committee, &job, &inputs, Protocol::Spdz2k) {
        Ok(r) => r,
        Err(e) => panic!("spdz2k over QUIC failed: {e}\n{}", cluster.log_tails()),
    };
    for (input, private) in inputs.iter().zip(&quic.report.outputs) {
        let plain = model.forward_plain(input, 1).unwrap();
        let err = private
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "private vs plaintext burn differ by {err}");
    }

    let mut mem_options = LocalOptions::new(3, Arc::new(RingGemm::new(1)));
    mem_options.seed = Some(SEED);
    mem_options.protocol = Protocol::Spdz2k;
    let mem = run_in_memory(&model, &plan, &inputs, 1, &mem_options).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (q, m) in quic.report.outputs.iter().zip(&mem.outputs) {
        assert_eq!(bits(q), bits(m), "QUIC and in-memory outputs differ");
    }
    assert_eq!(quic.report.online.len(), mem.online.len());
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
                "QUIC and in-memory accounting differ"
            );
        }
    }
    assert_eq!(quic.report.dealer_bytes, mem.dealer_bytes);
    let setup_q: Vec<u64> = quic.report.setup.iter().map(|s| s.bytes_sent).collect();
    let setup_m: Vec<u64> = mem.setup.iter().map(|s| s.bytes_sent).collect();
    assert_eq!(setup_q, setup_m);

    // One MAC check per inference, every party's view of it the same, and the check passes at the verifier.
    assert_eq!(quic.transcripts.len(), 3);
    assert!(quic.transcripts.iter().all(|t| t.len() == inputs.len()));
    let digest = verify_job(&quic.transcripts).expect("honest transcripts verify");
    assert_eq!(digest, verify_job(&quic.transcripts).unwrap());
    // Party 1 reports a view in which party 2 opened another z: caught as equivocation.
    let mut forged = quic.transcripts.clone();
    forged[1][0].parties[2].z[0] ^= 1;
    assert_eq!(
        verify_job(&forged),
        Err(VerifyError::Equivocation { check: 0, party: 1 })
    );
    // Every party reports the changed z (a coalition's story): the commitment does not open.
    let mut forged = quic.transcripts.clone();
    for view in &mut forged {
        view[1].parties[2].z[0] ^= 1;
    }
    assert_eq!(
        verify_job(&forged),
        Err(VerifyError::Commitment { check: 1, party: 2 })
    );
}

/// Each deviation of the protocol lab, committed by one party process over QUIC: the job fails (a
/// verification failure, or a timeout for `skip-round`) and the client gets no output.
#[test]
fn spdz2k_over_quic_aborts_when_a_party_deviates() {
    use veil_protocols::adversary::{Adversary, Deviation};
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name("network-a", 7, &device)
        .unwrap()
        .unwrap();
    let plan = Plan::compile(&model, FixedPoint::default(), WeightMode::Shared).unwrap();
    let inputs = vec![workloads::sample_input(&model, 1, 61)];
    for (i, kind) in Deviation::ALL.into_iter().enumerate() {
        let identity = Identity::generate().unwrap();
        let mut options = ClusterOptions::new(3, identity.public_key());
        options.recv_timeout_ms = 2_000;
        options.insecure_adversary = Some(Adversary {
            kind,
            party: i % 3,
            at: 1 + 2 * i,
            delta: 1 << (i * 7),
        });
        let cluster = LocalCluster::spawn(exe(), &options).expect("nodes start");
        let client = Client::new(
            identity,
            ClientOptions {
                bind: ([127, 0, 0, 1], 0).into(),
                connect_timeout: Duration::from_secs(5),
                job_timeout: Duration::from_secs(120),
                idle_timeout: Duration::from_secs(5),
                failure_grace: Duration::from_secs(10),
                ..ClientOptions::default()
            },
        )
        .expect("client");
        let committee = Committee {
            parties: cluster.parties(),
            dealer: Some(cluster.dealer().expect("dealer")),
        };
        let spec: ModelSpec = serde_json::from_value(serde_json::json!({
            "workload": "network-a", "seed": 7, "weights": "Shared",
            "frac_bits": FixedPoint::default().frac_bits(),
        }))
        .unwrap();
        let job = QuicJob {
            model: &model,
            plan: &plan,
            spec,
            batch: 1,
            threads: 1,
            seed: None,
            profile: false,
        };
        let result = run_private_protocol(&client, &committee, &job, &inputs, Protocol::Spdz2k);
        let Err(e) = result else {
            panic!("{}: the job released an output", kind.name());
        };
        let why = e.to_string();
        if kind == Deviation::SkipRound {
            assert!(
                why.contains("timed out") || why.contains("timeout") || why.contains("adversary"),
                "{}: {why}",
                kind.name()
            );
        } else {
            assert!(
                why.contains("verification failed"),
                "{}: {why}\n{}",
                kind.name(),
                cluster.log_tails()
            );
        }
    }
}
