//! Private generation as one job on real `veil node` processes over QUIC (the `llama-tiny` workload): the
//! committee keeps the cache across steps, each step costs exactly the bytes and rounds it costs in memory
//! (pinned), the greedy tokens are the in-memory ones, and a party's death fails the turn with a clear error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use veil_engine::llama::private::{PrivateConfig, PrivateLlama};
use veil_engine::llama::run::{LocalSession, PREFILL_CHUNK};
use veil_engine::llama::sample::argmax;
use veil_engine::llama::{LlamaConfig, LlamaWeights};
use veil_engine::local::LocalOptions;
use veil_node::client::chat::ChatJob;
use veil_node::client::{Client, ClientOptions, Committee};
use veil_node::cluster::{ClusterOptions, LocalCluster};
use veil_node::Identity;
use veil_protocols::net::NetStats;

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

const SEED: u64 = 21;

fn tiny() -> PrivateLlama {
    let w = LlamaWeights::random(LlamaConfig::tiny(), SEED);
    PrivateLlama::new(&w, PrivateConfig::new(Default::default()).unwrap()).unwrap()
}

/// (rounds, bytes sent) of each party.
fn costs(stats: &[NetStats]) -> Vec<(u64, u64)> {
    stats.iter().map(|s| (s.rounds, s.bytes_sent)).collect()
}

#[test]
fn tiny_generation_over_quic_costs_what_it_costs_in_memory() {
    let model = tiny();
    // 10 prompt positions (chunks of 8 and 2), then 3 decode steps at positions 10, 11, 12.
    let prompt: Vec<u32> = (1..=10).collect();
    let tokens = 4;

    // In memory.
    let options = LocalOptions::new(3, Arc::new(veil_protocols::gemm::NaiveGemm));
    let mut session = LocalSession::new(&model, &options).unwrap();
    let prefill = session.prefill(&prompt, true, PREFILL_CHUNK).unwrap();
    let mut mem_top: Vec<u32> = prefill.iter().map(|r| argmax(r) as u32).collect();
    let mut generated = vec![*mem_top.last().unwrap()];
    while generated.len() < tokens {
        let logits = session.step(&[*generated.last().unwrap()], 1).unwrap();
        let t = argmax(&logits[0]) as u32;
        mem_top.push(t);
        generated.push(t);
    }
    let mem_costs: Vec<Vec<(u64, u64)>> = session.costs.iter().map(|c| costs(&c.online)).collect();
    assert_eq!(mem_costs.len(), 2 + 3);

    // Over QUIC, one job.
    let identity = Identity::generate().unwrap();
    let cluster = LocalCluster::spawn(exe(), &ClusterOptions::new(3, identity.public_key()))
        .expect("cluster");
    let client = client(identity);
    let mut job = ChatJob::tiny(&model, SEED);
    job.seed = Some(3);
    let mut quic_top = Vec::new();
    let run = client
        .generate(&committee(&cluster), &job, &prompt, tokens, |rows| {
            quic_top.extend(rows.iter().map(|r| argmax(r) as u32));
            quic_top.last().copied()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails()));
    assert_eq!(run.tokens, generated);
    assert_eq!(quic_top[..prompt.len() + tokens - 1], mem_top[..]);
    // The prefill: one report per party with one entry per chunk; then one report per decode step.
    assert_eq!(run.steps.len(), 1 + 3);
    let mut quic_costs: Vec<Vec<(u64, u64)>> = Vec::new();
    for chunk in 0..2 {
        quic_costs.push(
            run.steps[0]
                .iter()
                .map(|r| (r.online[chunk].rounds, r.online[chunk].bytes_sent))
                .collect(),
        );
    }
    for step in &run.steps[1..] {
        quic_costs.push(
            step.iter()
                .map(|r| {
                    assert_eq!(r.online.len(), 1);
                    (r.online[0].rounds, r.online[0].bytes_sent)
                })
                .collect(),
        );
    }
    assert_eq!(quic_costs, mem_costs);
    // Pinned: the first decode step (position 10) of the tiny model, 3 parties.
    assert_eq!(quic_costs[2], vec![PINNED_DECODE; 3]);
}

/// (rounds, bytes each party sends) of `llama-tiny`'s decode step at position 10, 3 parties, semi2k.
const PINNED_DECODE: (u64, u64) = (340, 142_368);

#[test]
fn a_dead_party_fails_the_turn_with_a_clear_error() {
    let model = tiny();
    let identity = Identity::generate().unwrap();
    let mut options = ClusterOptions::new(3, identity.public_key());
    options.recv_timeout_ms = 3_000;
    options.log = "error".into();
    let mut cluster = LocalCluster::spawn(exe(), &options).expect("cluster");
    let client = client(identity);
    let job = ChatJob::tiny(&model, SEED);
    let committee = committee(&cluster);
    let mut steps = 0;
    let mut killed = false;
    let outcome = client.generate(&committee, &job, &[1, 2, 3], 6, |rows| {
        steps += 1;
        if steps == 2 {
            cluster.kill(1).unwrap();
            killed = true;
        }
        Some(argmax(rows.last()?) as u32)
    });
    assert!(killed);
    let e = outcome
        .expect_err("a turn whose party died must fail")
        .to_string();
    assert!(e.contains("the turn failed") && e.contains("[party"), "{e}");
}
