//! The synthetic world of `veil sim`: operators, regions, hardware, reliability, churn, and the models jobs
//! run. Everything is drawn from one seeded ChaCha8 generator, so a seed names a world.
//!
//! - Regions: 8, at real coordinates; the RTT between two regions is `2 ms + 1.4 * distance / (100 km/ms)`
//!   (light in fibre, with a routing detour); 1.5 ms within a region. These are configured as the registry's
//!   region estimates; each node also reports measured RTTs to 16 random peers (estimate * U(0.8, 1.25) +
//!   U(0, 1) ms).
//! - Operators: `max(N / 20, committee + 3)`, sizes Zipf-like (weight `1 / rank^0.8`, each at least one
//!   node), each with a home region holding about 75% of its nodes; each has its own ASN, except 20% that
//!   share one of six cloud ASNs.
//! - Hardware: 40% small (4-8 cores, 16 GiB, 1 Gbit/s), 35% medium (16-32 cores, 64 GiB, 10 Gbit/s), 15% GPU
//!   (16 cores, 128 GiB, 24 GiB GPU, 10 Gbit/s), 10% big (64 cores, 512 GiB, 80 GiB GPU, 25 Gbit/s); the trial
//!   measures throughput within ±10% of the estimate.
//! - States: 2% never pass their trial (probation), 3% are down from the start, 1% go down for a fifth of
//!   the run at a random time and come back.
//! - Reliability: 95% honest (fail 0.2% of their jobs), 4% flaky (fail 5%), 1% malicious (as a party, cause a
//!   failed verification in 30% of their jobs).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::demand::{LayerNeeds, ModelProfile};
use crate::types::{Gpu, Hardware, NodeRegistration};

/// How a node behaves, unknown to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Fails rarely.
    Honest,
    /// Times out or crashes often.
    Flaky,
    /// Cheats as a party now and then (the MAC check catches it).
    Malicious,
}

/// The adversary of a world (see [`world`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Adversary {
    /// Fraction of the operators it controls (`0..1`).
    pub fraction: f64,
    /// The most nodes one operator may run (0: no limit); the adversary runs exactly this many per operator.
    pub max_nodes_per_operator: usize,
}

/// Hardware an adversarial node claims: the most a sane node could have.
pub fn maximal_claim() -> Hardware {
    Hardware {
        cores: 512,
        memory_bytes: 2048 * GIB,
        gpu: Some(Gpu {
            model: "H200".into(),
            memory_bytes: 141 * GIB,
        }),
        bandwidth_bytes_per_s: 12_500_000_000,
        measured_ops_per_s: None,
    }
}

/// One synthetic node: its registration and its hidden truth.
#[derive(Clone, Debug)]
pub struct SynthNode {
    /// What it registers with.
    pub registration: NodeRegistration,
    /// Whether it passes its trial.
    pub passes_trial: bool,
    /// Down from the start.
    pub down_at_start: bool,
    /// Down during `[start, end)` seconds of the run (fractions of the run's expected length).
    pub churn: Option<(f64, f64)>,
    /// Its behaviour.
    pub behaviour: Behaviour,
    /// Probability that it fails a job it takes part in.
    pub fail_prob: f64,
    /// Throughput its trial measures.
    pub measured_ops_per_s: u64,
    /// Run by an adversarial operator.
    pub adversarial: bool,
    /// Bandwidth its trial measures (its true bandwidth), bytes per second.
    pub measured_bandwidth_bytes_per_s: u64,
    /// Memory its trial measures (its true memory), bytes.
    pub measured_memory_bytes: u64,
}

/// A region with its coordinates.
pub struct Region {
    /// Name.
    pub name: &'static str,
    lat: f64,
    lon: f64,
}

/// The regions of the synthetic world.
pub const REGIONS: [Region; 8] = [
    Region {
        name: "us-east",
        lat: 39.0,
        lon: -77.5,
    },
    Region {
        name: "us-west",
        lat: 37.4,
        lon: -122.0,
    },
    Region {
        name: "eu-west",
        lat: 53.3,
        lon: -6.3,
    },
    Region {
        name: "eu-central",
        lat: 50.1,
        lon: 8.7,
    },
    Region {
        name: "ap-south",
        lat: 19.1,
        lon: 72.9,
    },
    Region {
        name: "ap-northeast",
        lat: 35.7,
        lon: 139.7,
    },
    Region {
        name: "sa-east",
        lat: -23.5,
        lon: -46.6,
    },
    Region {
        name: "af-south",
        lat: -26.2,
        lon: 28.0,
    },
];

/// RTT between two regions in microseconds (see the module doc).
pub fn region_rtt_us(a: usize, b: usize) -> u32 {
    if a == b {
        return 1_500;
    }
    let (ra, rb) = (&REGIONS[a], &REGIONS[b]);
    let (p1, p2) = (ra.lat.to_radians(), rb.lat.to_radians());
    let dl = (rb.lon - ra.lon).to_radians();
    let c = (p1.sin() * p2.sin() + p1.cos() * p2.cos() * dl.cos()).clamp(-1.0, 1.0);
    let km = 6371.0 * c.acos();
    (2_000.0 + 1.4 * km / 100.0 * 1_000.0) as u32
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const CLOUD_ASNS: [u32; 6] = [16509, 15169, 8075, 14061, 16276, 24940];

/// The synthetic world.
pub struct World {
    /// Nodes in registration order.
    pub nodes: Vec<SynthNode>,
    /// Number of operators.
    pub operators: usize,
    /// Region index of each node.
    pub region_of: Vec<usize>,
}

/// Operator of each node when operators are capped: the adversarial operators (`round(fraction *
/// operators)`, chosen uniformly) run `cap` nodes each (while nodes remain), the others share the rest by
/// the Zipf-like weights, a full operator's draw going to the next operator with room. Node order is
/// shuffled, so adversarial nodes are spread over the registration order.
fn capped_operators(
    n: usize,
    operators: usize,
    adversary: &Adversary,
    cumulative: &[f64],
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<bool>) {
    let cap = if adversary.max_nodes_per_operator == 0 {
        n
    } else {
        adversary.max_nodes_per_operator
    };
    let bad = ((adversary.fraction * operators as f64).round() as usize).min(operators);
    let mut order: Vec<usize> = (0..operators).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut adversarial = vec![false; operators];
    for &o in &order[..bad] {
        adversarial[o] = true;
    }
    let mut count = vec![0usize; operators];
    let mut ops = Vec::with_capacity(n);
    for &o in &order[..bad] {
        while count[o] < cap && ops.len() < n {
            count[o] += 1;
            ops.push(o);
        }
    }
    let acc = cumulative.last().copied().unwrap_or(1.0);
    // Every honest operator runs at least one node, then the Zipf draw.
    for o in (0..operators).filter(|&o| !adversarial[o]) {
        if ops.len() < n && count[o] < cap {
            count[o] += 1;
            ops.push(o);
        }
    }
    let honest_room = (0..operators)
        .filter(|&o| !adversarial[o])
        .any(|o| count[o] < cap);
    while ops.len() < n && honest_room {
        let x = rng.random::<f64>() * acc;
        let mut o = cumulative.partition_point(|&c| c < x).min(operators - 1);
        let mut tries = 0;
        while (adversarial[o] || count[o] >= cap) && tries < operators {
            o = (o + 1) % operators;
            tries += 1;
        }
        if tries == operators {
            break;
        }
        count[o] += 1;
        ops.push(o);
    }
    for i in (1..ops.len()).rev() {
        ops.swap(i, rng.random_range(0..=i));
    }
    (ops, adversarial)
}

/// Draws a world of `n` nodes for committees of `committee` members, without an adversary.
pub fn world(n: usize, committee: usize, rng: &mut ChaCha8Rng) -> World {
    world_with(n, committee, &Adversary::default(), rng)
}

/// Draws a world of `n` nodes for committees of `committee` members. With an adversary (`fraction > 0`)
/// or an operator cap, operators are assigned by `capped_operators`; an adversarial operator's nodes
/// register with [`maximal_claim`] (their trial measures their true compute rate, bandwidth and memory,
/// drawn like everyone's, and the registry keeps the smaller of claim and measurement), are
/// honest in behaviour (a capturing adversary keeps its reputation), never down, and always pass the trial.
/// The world may then hold fewer than `n` nodes when the caps leave no room.
pub fn world_with(
    n: usize,
    committee: usize,
    adversary: &Adversary,
    rng: &mut ChaCha8Rng,
) -> World {
    let operators = (n / 20).max(committee + 3).min(n.max(1));
    let home: Vec<usize> = (0..operators)
        .map(|_| rng.random_range(0..REGIONS.len()))
        .collect();
    let asn: Vec<u32> = (0..operators)
        .map(|o| {
            if rng.random::<f64>() < 0.2 {
                CLOUD_ASNS[rng.random_range(0..CLOUD_ASNS.len())]
            } else {
                64_512 + o as u32
            }
        })
        .collect();
    let weights: Vec<f64> = (0..operators)
        .map(|k| 1.0 / ((k + 1) as f64).powf(0.8))
        .collect();
    let mut cumulative = Vec::with_capacity(operators);
    let mut acc = 0.0;
    for w in &weights {
        acc += w;
        cumulative.push(acc);
    }
    let capped = adversary.fraction > 0.0 || adversary.max_nodes_per_operator > 0;
    let (assigned, adversarial_op) = if capped {
        capped_operators(n, operators, adversary, &cumulative, rng)
    } else {
        (Vec::new(), vec![false; operators])
    };
    let n = if capped { assigned.len() } else { n };
    let mut nodes = Vec::with_capacity(n);
    let mut region_of = Vec::with_capacity(n);
    for i in 0..n {
        let op = if let Some(&o) = assigned.get(i) {
            o
        } else if i < operators {
            i
        } else {
            let x = rng.random::<f64>() * acc;
            cumulative.partition_point(|&c| c < x).min(operators - 1)
        };
        let adversarial = adversarial_op[op];
        let region = if rng.random::<f64>() < 0.75 {
            home[op]
        } else {
            rng.random_range(0..REGIONS.len())
        };
        let class = rng.random::<f64>();
        let hardware = if class < 0.40 {
            Hardware {
                cores: rng.random_range(4..=8),
                memory_bytes: 16 * GIB,
                gpu: None,
                bandwidth_bytes_per_s: 125_000_000,
                measured_ops_per_s: None,
            }
        } else if class < 0.75 {
            Hardware {
                cores: rng.random_range(16..=32),
                memory_bytes: 64 * GIB,
                gpu: None,
                bandwidth_bytes_per_s: 1_250_000_000,
                measured_ops_per_s: None,
            }
        } else if class < 0.90 {
            Hardware {
                cores: 16,
                memory_bytes: 128 * GIB,
                gpu: Some(Gpu {
                    model: "RTX 4090".into(),
                    memory_bytes: 24 * GIB,
                }),
                bandwidth_bytes_per_s: 1_250_000_000,
                measured_ops_per_s: None,
            }
        } else {
            Hardware {
                cores: 64,
                memory_bytes: 512 * GIB,
                gpu: Some(Gpu {
                    model: "H100".into(),
                    memory_bytes: 80 * GIB,
                }),
                bandwidth_bytes_per_s: 3_125_000_000,
                measured_ops_per_s: None,
            }
        };
        let measured = (hardware.ops_per_s() * rng.random_range(0.9..1.1)) as u64;
        let true_bandwidth = hardware.bandwidth_bytes_per_s;
        let true_memory = hardware.memory_bytes;
        let mut key = [0u8; 32];
        rng.fill(&mut key);
        let public_key: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let b = rng.random::<f64>();
        let (behaviour, fail_prob) = if b < 0.95 {
            (Behaviour::Honest, 0.002)
        } else if b < 0.99 {
            (Behaviour::Flaky, 0.05)
        } else {
            (Behaviour::Malicious, 0.3)
        };
        let s = rng.random::<f64>();
        let (behaviour, fail_prob, s) = if adversarial {
            (Behaviour::Honest, 0.002, 1.0)
        } else {
            (behaviour, fail_prob, s)
        };
        let passes_trial = s >= 0.02;
        let down_at_start = (0.02..0.05).contains(&s);
        let churn = if (0.05..0.06).contains(&s) {
            let start = rng.random_range(0.1..0.6);
            Some((start, start + 0.2))
        } else {
            None
        };
        nodes.push(SynthNode {
            registration: NodeRegistration {
                public_key,
                operator: format!("op-{op:04}"),
                region: REGIONS[region].name.to_owned(),
                asn: Some(asn[op]),
                hardware: if adversarial {
                    maximal_claim()
                } else {
                    hardware
                },
            },
            passes_trial,
            down_at_start,
            churn,
            behaviour,
            fail_prob,
            measured_ops_per_s: measured.max(1),
            adversarial,
            measured_bandwidth_bytes_per_s: true_bandwidth,
            measured_memory_bytes: true_memory,
        });
        region_of.push(region);
    }
    World {
        nodes,
        operators,
        region_of,
    }
}

/// A model with `layers` identical layers.
fn uniform(layers: usize, layer: LayerNeeds) -> ModelProfile {
    ModelProfile {
        layers: vec![layer; layers],
        aux_memory_bytes: 256 * MIB,
    }
}

/// The models jobs run, with their share of the job mix.
pub fn models() -> Vec<(&'static str, f64, ModelProfile)> {
    vec![
        (
            "mlp",
            0.50,
            uniform(
                3,
                LayerNeeds {
                    memory_bytes: 4 * MIB,
                    party_ops: 100_000_000,
                    party_bytes: 1_000_000,
                    dealer_ops: 50_000_000,
                    dealer_bytes: 3_000_000,
                    verifier_ops: 1_000_000,
                    rounds: 8,
                },
            ),
        ),
        (
            "lenet",
            0.30,
            uniform(
                5,
                LayerNeeds {
                    memory_bytes: 16 * MIB,
                    party_ops: 1_000_000_000,
                    party_bytes: 20_000_000,
                    dealer_ops: 500_000_000,
                    dealer_bytes: 60_000_000,
                    verifier_ops: 10_000_000,
                    rounds: 20,
                },
            ),
        ),
        (
            "minilm",
            0.17,
            uniform(
                12,
                LayerNeeds {
                    memory_bytes: 64 * MIB,
                    party_ops: 4_000_000_000,
                    party_bytes: 100_000_000,
                    dealer_ops: 2_000_000_000,
                    dealer_bytes: 300_000_000,
                    verifier_ops: 50_000_000,
                    rounds: 40,
                },
            ),
        ),
        (
            "llm-7b",
            0.03,
            uniform(
                32,
                LayerNeeds {
                    memory_bytes: 3 * GIB,
                    party_ops: 20_000_000_000,
                    party_bytes: 500_000_000,
                    dealer_ops: 10_000_000_000,
                    dealer_bytes: 1_500_000_000,
                    verifier_ops: 200_000_000,
                    rounds: 30,
                },
            ),
        ),
    ]
}

/// The stage memory limit the sim plans large models with: 48 GiB per party.
pub const MAX_STAGE_MEMORY: u64 = 48 * GIB;

/// A generator for a seed.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
