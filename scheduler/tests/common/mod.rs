//! Helpers shared by the integration tests.
#![allow(dead_code)]

use veil_scheduler::{
    Config, DomainKey, Hardware, Heartbeat, JobDemand, NodeId, NodeRegistration, Registry,
    RoleDemand,
};

pub const GIB: u64 = 1 << 30;

/// A valid public key derived from `i`.
pub fn key(i: u64) -> String {
    format!("{:064x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xabcdef)
}

pub fn hardware(cores: u32, memory_gib: u64) -> Hardware {
    Hardware {
        cores,
        memory_bytes: memory_gib * GIB,
        gpu: None,
        bandwidth_bytes_per_s: 1_000_000_000,
        measured_ops_per_s: None,
    }
}

pub fn registration(
    i: u64,
    operator: &str,
    region: &str,
    asn: Option<u32>,
    hw: Hardware,
) -> NodeRegistration {
    NodeRegistration {
        public_key: key(i),
        operator: operator.into(),
        region: region.into(),
        asn,
        hardware: hw,
    }
}

/// Registers and admits (trial passed) a node.
pub fn admit(reg: &mut Registry, r: NodeRegistration) -> NodeId {
    let id = reg.register(r, 0).expect("register");
    reg.record_trial(id, true, None, 0).expect("trial");
    id
}

/// A demand with `parties` parties needing `party_gib` GiB each; dealer and verifier need `aux_gib`.
pub fn demand(parties: u8, party_gib: u64, aux_gib: u64) -> JobDemand {
    JobDemand {
        parties,
        party: RoleDemand {
            memory_bytes: party_gib * GIB,
            ops: 1_000_000_000,
            bytes: 10_000_000,
        },
        dealer: Some(RoleDemand {
            memory_bytes: aux_gib * GIB,
            ops: 500_000_000,
            bytes: 30_000_000,
        }),
        verifier: Some(RoleDemand {
            memory_bytes: aux_gib * GIB,
            ops: 1_000_000,
            bytes: 0,
        }),
        rounds: 20,
    }
}

/// `n` admitted nodes, node `i` of operator `op-(i % operators)`, region `r-(i % regions)`.
pub fn simple_registry(
    n: u64,
    operators: u64,
    regions: u64,
    keys: Vec<DomainKey>,
) -> (Registry, Vec<NodeId>) {
    let mut reg = Registry::new(Config {
        collusion_keys: keys,
        ..Config::default()
    })
    .expect("config");
    let ids = (0..n)
        .map(|i| {
            let r = registration(
                i,
                &format!("op-{}", i % operators),
                &format!("r-{}", i % regions),
                Some(64_512 + (i % 7) as u32),
                hardware(8, 32),
            );
            admit(&mut reg, r)
        })
        .collect();
    (reg, ids)
}

pub fn ready() -> Heartbeat {
    Heartbeat::default()
}
