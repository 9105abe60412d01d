//! The vocabulary shared by every module: node identities, time, hardware, collusion domains, heartbeats.
//!
//! Invariants kept here: a [`Hardware`] that passed [`Hardware::validate`] has at least one core, non-zero
//! memory and non-zero bandwidth, so [`Hardware::ops_per_s`] and [`Hardware::service_seconds`] never divide by
//! zero and always return finite, non-negative values.

use serde::{Deserialize, Serialize};

use crate::demand::RoleDemand;

/// Milliseconds since the Unix epoch (or since any fixed origin the caller chooses: the scheduler only ever
/// compares and subtracts them). Every state change takes the current time as an argument; nothing here
/// reads a clock.
pub type Millis = u64;

/// A node's dense identifier inside one registry: assigned at registration in increasing order, never
/// reused, persisted with the node so that it survives a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The index of this node in the registry's dense tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A GPU as reported by a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Model name, e.g. "H100".
    pub model: String,
    /// Device memory in bytes.
    pub memory_bytes: u64,
}

/// A node's hardware, as reported at registration (and refined by its trial job).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    /// CPU cores available to veil.
    pub cores: u32,
    /// Host memory available to veil, in bytes. This is the memory that placements reserve: shares live in
    /// host memory; a GPU adds compute rate (see [`Hardware::ops_per_s`]).
    pub memory_bytes: u64,
    /// The GPU, if any.
    pub gpu: Option<Gpu>,
    /// Measured network bandwidth in bytes per second (the smaller of up and down).
    pub bandwidth_bytes_per_s: u64,
    /// Measured ring-operation throughput in operations per second, set from the trial job; `None` until
    /// measured, in which case [`Hardware::ops_per_s`] estimates it from cores and GPU.
    pub measured_ops_per_s: Option<u64>,
}

/// Most CPU cores a node may claim. The largest single servers sold today have 2 sockets x 192 cores x 2
/// threads = 768 hardware threads; a claim beyond 1024 is not a machine, it is a lie about one.
pub const MAX_CORES: u32 = 1024;
/// Most host memory a node may claim: 64 TiB, twice the largest single-system-image machines (32 TiB).
pub const MAX_MEMORY_BYTES: u64 = 64 << 40;
/// Most GPU memory a node may claim: 2 TiB (one accelerator holds under 300 GiB today; this leaves room for
/// a few generations, not for a claim of unbounded compute).
pub const MAX_GPU_MEMORY_BYTES: u64 = 2 << 40;
/// Most network bandwidth a node may claim: 1 Tbit/s (125 GB/s), above a dual-port 400 GbE server.
pub const MAX_BANDWIDTH_BYTES_PER_S: u64 = 125_000_000_000;
/// Most ring-operation throughput a measurement may set: 10^15 operations per second (about the peak of a
/// rack of today's accelerators, far above one node).
pub const MAX_OPS_PER_S: u64 = 1_000_000_000_000_000;

/// Estimated ring operations per second of one CPU core (used only while a node has no measurement).
pub const CORE_OPS_PER_S: f64 = 1.0e9;
/// Estimated ring operations per second added by a GPU (used only while a node has no measurement).
pub const GPU_OPS_PER_S: f64 = 4.0e10;

impl Hardware {
    /// Checks the invariants listed in the module doc.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.cores == 0 {
            return Err("cores must be at least 1");
        }
        if self.memory_bytes == 0 {
            return Err("memory must be non-zero");
        }
        if self.bandwidth_bytes_per_s == 0 {
            return Err("bandwidth must be non-zero");
        }
        if self.measured_ops_per_s == Some(0) {
            return Err("a measured throughput must be non-zero");
        }
        if self.cores > MAX_CORES {
            return Err("more cores than any machine has (MAX_CORES = 1024)");
        }
        if self.memory_bytes > MAX_MEMORY_BYTES {
            return Err("more memory than any machine has (MAX_MEMORY_BYTES = 64 TiB)");
        }
        if self
            .gpu
            .as_ref()
            .is_some_and(|g| g.memory_bytes > MAX_GPU_MEMORY_BYTES)
        {
            return Err("more GPU memory than any accelerator has (MAX_GPU_MEMORY_BYTES = 2 TiB)");
        }
        if self.bandwidth_bytes_per_s > MAX_BANDWIDTH_BYTES_PER_S {
            return Err("more bandwidth than any node has (MAX_BANDWIDTH_BYTES_PER_S = 1 Tbit/s)");
        }
        if self.measured_ops_per_s.is_some_and(|m| m > MAX_OPS_PER_S) {
            return Err("a measured throughput above MAX_OPS_PER_S");
        }
        Ok(())
    }

    /// The compute rate the claimed hardware stands for: `cores * CORE_OPS_PER_S + (GPU ? GPU_OPS_PER_S :
    /// 0)`, ring operations per second.
    pub fn claimed_ops_per_s(&self) -> f64 {
        self.cores.max(1) as f64 * CORE_OPS_PER_S
            + if self.gpu.is_some() {
                GPU_OPS_PER_S
            } else {
                0.0
            }
    }

    /// Compute rate in ring operations per second: the smaller of the claimed rate and the trial's
    /// measurement when there is one (a claim never raises what was measured, nor a measurement what was
    /// claimed), else the claimed rate. Always > 0 for validated hardware.
    pub fn ops_per_s(&self) -> f64 {
        let claimed = self.claimed_ops_per_s();
        match self.measured_ops_per_s {
            Some(m) => (m.max(1) as f64).min(claimed),
            None => claimed,
        }
    }

    /// Seconds this node is busy serving `demand`: its operations at [`Hardware::ops_per_s`] plus its bytes
    /// at the measured bandwidth. This is the unit of load and of utilisation throughout the crate.
    pub fn service_seconds(&self, demand: &RoleDemand) -> f64 {
        demand.ops as f64 / self.ops_per_s()
            + demand.bytes as f64 / self.bandwidth_bytes_per_s.max(1) as f64
    }
}

/// A key that defines collusion domains: two nodes with the same value under any configured key may not sit
/// on one committee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainKey {
    /// The operator (organisation) running the node. The default, and always the first key.
    Operator,
    /// The region the node reports.
    Region,
    /// The autonomous system the node's address belongs to. A node without a known ASN belongs to one shared
    /// "unknown" ASN domain (the conservative choice: unknown nodes may collude with each other).
    Asn,
}

impl DomainKey {
    /// Every key, in the order of [`DomainKey::slot`].
    pub const ALL: [DomainKey; 3] = [DomainKey::Operator, DomainKey::Region, DomainKey::Asn];

    /// The slot of this key in per-node domain arrays.
    pub fn slot(self) -> usize {
        match self {
            DomainKey::Operator => 0,
            DomainKey::Region => 1,
            DomainKey::Asn => 2,
        }
    }

    /// Parses "operator", "region" or "asn".
    pub fn parse(s: &str) -> Option<DomainKey> {
        match s.trim().to_ascii_lowercase().as_str() {
            "operator" => Some(DomainKey::Operator),
            "region" => Some(DomainKey::Region),
            "asn" => Some(DomainKey::Asn),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            DomainKey::Operator => "operator",
            DomainKey::Region => "region",
            DomainKey::Asn => "asn",
        }
    }
}

impl std::fmt::Display for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a node sends to register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// The node's Ed25519 public key: 64 lowercase hex digits (the text form used by `veil-node`).
    pub public_key: String,
    /// The operator's identifier.
    pub operator: String,
    /// The region, e.g. "eu-west".
    pub region: String,
    /// The autonomous system number of the node's address, when known.
    pub asn: Option<u32>,
    /// The hardware.
    pub hardware: Hardware,
}

/// The status a node reports in its heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ReportedStatus {
    /// Accepting new jobs.
    #[default]
    Ready,
    /// Finishing its jobs and accepting no new ones (e.g. before an upgrade).
    Draining,
}

/// A heartbeat: liveness plus the node's own view of its load.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Heartbeat {
    /// The reported status.
    pub status: ReportedStatus,
    /// CPU load as a fraction in [0, 1] (values outside are clamped).
    pub load: f32,
    /// Jobs queued or running on the node, from every source.
    pub queue_len: u32,
}

/// Where a node stands, derived from its trial, its heartbeats and its own report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Registered, its trial job (known answer) not yet passed: never selected.
    Probation,
    /// Passed its trial, heartbeating, ready: selectable (if its reputation is above the minimum).
    Active,
    /// Passed its trial and heartbeating, but reported `Draining`: not selected.
    Draining,
    /// Missed heartbeats for longer than the timeout: not selected until its next heartbeat.
    Down,
    /// Failed its trial: never selected.
    Rejected,
}

/// A keyed 64-bit mix (SplitMix64 finaliser over `key ^ mix(x)`): deterministic, cheap, well spread. Used to
/// break ties and diversify choices from a seed; never for secrecy.
pub fn keyed_hash(key: u64, x: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    mix(key ^ mix(x))
}

/// Checks that `s` is a 64-hex-digit public key.
pub fn is_public_key_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
