//! The coordinator's TOML configuration (`veil coordinator --config coordinator.toml`); every field is
//! documented in the README's "Coordinator" section and in `coordinator.toml` at the repository root.
//!
//! Invariant: a loaded [`CoordinatorConfig`] passed [`CoordinatorConfig::validate`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use veil_node::PublicKey;
use veil_scheduler::{DomainKey, JobPolicy, PhaseTimeouts};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this structure.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// A value is out of its range.
    #[error("{field} {requirement}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// The trial workload is not a known model workload.
    #[error("unknown trial workload {0:?}")]
    UnknownTrialWorkload(String),
    /// A collusion key is not one of operator, region, asn.
    #[error("collusion key {0:?}: expected operator, region or asn")]
    UnknownCollusionKey(String),
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Ring operations per second of the slow reference node a job's running timeout assumes (a tenth of
/// `veil_scheduler`'s per-core estimate).
pub const REFERENCE_OPS_PER_S: f64 = 1.0e8;
/// Bytes per second of the reference node's link (100 Mbit/s).
pub const REFERENCE_BYTES_PER_S: f64 = 12.5e6;
/// Milliseconds per online round on the reference network (an inter-region round trip).
pub const REFERENCE_ROUND_MS: f64 = 100.0;
/// How many times its estimated duration a job may run before it times out.
pub const RUNNING_SLACK: f64 = 4.0;

fn invalid(field: &'static str, requirement: &'static str) -> ConfigError {
    ConfigError::Invalid { field, requirement }
}

/// The coordinator's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// TCP address of the HTTPS API (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// State directory: identity key, redb database (`state.redb`), blobs.
    pub data_dir: PathBuf,
    /// Log level (the `VEIL_LOG` environment variable overrides it).
    #[serde(default = "default_log")]
    pub log: String,
    /// Collusion keys: no two committee members share a value under any of them.
    #[serde(default = "default_collusion")]
    pub collusion: Vec<String>,
    /// A node silent this long is marked down (its jobs' attempts fail and are rescheduled), ms.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: u64,
    /// Period of the timer that sweeps the registry, applies phase timeouts and places waiting jobs, ms.
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    /// Attempts per job (the first included).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Waiting for a committee, ms.
    #[serde(default = "default_submitted")]
    pub submitted_timeout_ms: u64,
    /// From scheduling until every member accepted and every input blob arrived, ms.
    #[serde(default = "default_scheduled")]
    pub scheduled_timeout_ms: u64,
    /// Computing, ms: the most any job gets. A job's own limit scales with its estimated work
    /// ([`CoordinatorConfig::running_timeout_for`]) between `min_running_timeout_ms` and this.
    #[serde(default = "default_running")]
    pub running_timeout_ms: u64,
    /// Computing, ms: the least any job gets (fixed costs: connections, the dealer's first material).
    #[serde(default = "default_min_running")]
    pub min_running_timeout_ms: u64,
    /// Verifying, ms.
    #[serde(default = "default_verifying")]
    pub verifying_timeout_ms: u64,
    /// Largest blob accepted, bytes.
    #[serde(default = "default_max_blob")]
    pub max_blob_bytes: usize,
    /// How long a finished job's result blobs (sealed outputs, owner material, transcripts) are kept for its
    /// client, ms; then they are deleted (the job's record and receipt stay).
    #[serde(default = "default_result_retention")]
    pub result_retention_ms: u64,
    /// How long a finished (done, failed or cancelled) job's record is kept, ms; then it is pruned from
    /// the state and the listings, with whatever blobs it still has (its receipt stays in the audit log).
    /// 0: kept forever. Counted from the job's last transition.
    #[serde(default = "default_job_retention")]
    pub job_retention_ms: u64,
    /// The most memory one stage of a model may need per execution party, bytes: a deployed model that
    /// needs more is split into stages run by successive committees (0: never split).
    #[serde(default)]
    pub max_stage_memory_bytes: u64,
    /// Jobs one client key may submit per minute (0: no limit).
    #[serde(default = "default_submissions_per_minute")]
    pub submissions_per_minute: u32,
    /// Workload of the trial job a new node must pass.
    #[serde(default = "default_trial_workload")]
    pub trial_workload: String,
    /// Largest absolute error between a trial's answer and the plaintext reference.
    #[serde(default = "default_trial_tolerance")]
    pub trial_tolerance: f32,
    /// How long a trial's committee (subject, examiner, dealer) has from its pairing to both parties'
    /// reports, ms; past it the trial is given up (against the subject only where the examiner and the
    /// dealer are active nodes) and the subject is paired again.
    #[serde(default = "default_trial_timeout_ms")]
    pub trial_timeout_ms: u64,
    /// Where Prometheus text is served at `/metrics`, plain HTTP (default `127.0.0.1:0`: localhost, a free
    /// port, printed in the ready line as `metrics`).
    #[serde(default = "crate::metrics::default_listen")]
    pub metrics_listen: SocketAddr,
    /// Limits of the HTTPS edge (`[limits]`): timeouts, connection and request caps, body sizes, rates.
    #[serde(default)]
    pub limits: EdgeLimits,
    /// How operators are admitted (`[admission]`). Absent: open admission, where a node's operator is the
    /// name it declares (development only: one actor can then pose as many operators).
    #[serde(default)]
    pub admission: Option<AdmissionConfig>,
}

/// A token bucket's rate: `per_second` tokens refill each second, up to `burst`; each request takes one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

/// Limits where input arrives at the coordinator's HTTPS edge. Every one applies before a request reaches
/// the state: a request over a rate gets 429, over the concurrency cap 503, over its body limit 413, past
/// the request timeout 408.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeLimits {
    /// TLS handshake, from the TCP accept, ms.
    pub handshake_timeout_ms: u64,
    /// Reading a request's headers, ms. The clock also runs while a kept-alive connection waits for its
    /// next request, so this is the idle timeout too (hyper starts it whenever the connection is ready to
    /// read a head).
    pub header_timeout_ms: u64,
    /// One request, from its head to its response (body upload included), ms.
    pub request_timeout_ms: u64,
    /// Open connections; further connections wait in the kernel's backlog.
    pub max_connections: u32,
    /// Requests being served at once; one more gets 503.
    pub max_concurrent_requests: u32,
    /// Largest body of a JSON route, bytes (blob uploads get `max_blob_bytes`, deployments 4 x the largest
    /// architecture).
    pub max_json_bytes: usize,
    /// Requests per client key (the key proven in the TLS handshake).
    pub per_key: Rate,
    /// Requests per source IP address.
    pub per_address: Rate,
    /// Requests in all.
    pub global: Rate,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            handshake_timeout_ms: 10_000,
            header_timeout_ms: 20_000,
            request_timeout_ms: 300_000,
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_json_bytes: 64 << 10,
            per_key: Rate {
                per_second: 100,
                burst: 400,
            },
            per_address: Rate {
                per_second: 500,
                burst: 2000,
            },
            global: Rate {
                per_second: 2000,
                burst: 8000,
            },
        }
    }
}

impl EdgeLimits {
    fn validate(&self) -> Result<()> {
        let positive = [
            (self.handshake_timeout_ms, "limits.handshake_timeout_ms"),
            (self.header_timeout_ms, "limits.header_timeout_ms"),
            (self.request_timeout_ms, "limits.request_timeout_ms"),
            (self.max_connections.into(), "limits.max_connections"),
            (
                self.max_concurrent_requests.into(),
                "limits.max_concurrent_requests",
            ),
            (self.per_key.per_second.into(), "limits.per_key.per_second"),
            (self.per_key.burst.into(), "limits.per_key.burst"),
            (
                self.per_address.per_second.into(),
                "limits.per_address.per_second",
            ),
            (self.per_address.burst.into(), "limits.per_address.burst"),
            (self.global.per_second.into(), "limits.global.per_second"),
            (self.global.burst.into(), "limits.global.burst"),
        ];
        for (value, field) in positive {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        if self.max_json_bytes < 1024 {
            return Err(invalid("limits.max_json_bytes", "must be at least 1024"));
        }
        Ok(())
    }
}

/// How the coordinator admits operators: a node must present its operator's certificate
/// (`veil_node::operator`), and its collusion domain is the certificate's verified operator key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Operator keys admitted directly (a permissioned network).
    #[serde(default)]
    pub operators: Vec<PublicKey>,
    /// Network admission keys: an operator is also admitted by a certificate one of them issued
    /// (`veil operator admit`), which its nodes present after their own.
    #[serde(default)]
    pub admission_keys: Vec<PublicKey>,
    /// Most nodes one operator may register (0: no limit).
    #[serde(default)]
    pub max_nodes_per_operator: u32,
    /// Largest share of the roles held across the jobs in flight that one operator's nodes may hold, in
    /// (0, 1]; an operator at its share gets no new role until others catch up (1: no cap).
    #[serde(default = "default_role_share")]
    pub max_role_share: f64,
    /// The regions a node may register in (its certified region, else its claim); empty: any. Bounds the
    /// region table, which grows with every distinct name, and keeps names meaningful for collusion keys.
    #[serde(default)]
    pub regions: Vec<String>,
    /// The ASNs a node may register with; empty: any. With a list, a node that states no ASN is refused.
    #[serde(default)]
    pub asns: Vec<u32>,
}

fn default_role_share() -> f64 {
    1.0
}

fn default_log() -> String {
    "info".into()
}
fn default_collusion() -> Vec<String> {
    vec!["operator".into()]
}
fn default_heartbeat_timeout() -> u64 {
    10_000
}
fn default_tick() -> u64 {
    250
}
fn default_attempts() -> u32 {
    3
}
fn default_submitted() -> u64 {
    60_000
}
fn default_scheduled() -> u64 {
    30_000
}
fn default_running() -> u64 {
    600_000
}
fn default_min_running() -> u64 {
    30_000
}
fn default_verifying() -> u64 {
    60_000
}
fn default_result_retention() -> u64 {
    24 * 3600 * 1000
}
fn default_job_retention() -> u64 {
    30 * 24 * 3600 * 1000
}
fn default_submissions_per_minute() -> u32 {
    600
}
fn default_max_blob() -> usize {
    256 << 20
}
fn default_trial_workload() -> String {
    "network-a".into()
}
fn default_trial_tolerance() -> f32 {
    1e-2
}
fn default_trial_timeout_ms() -> u64 {
    30_000
}

impl CoordinatorConfig {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: CoordinatorConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        self.collusion_keys()?;
        if self.heartbeat_timeout_ms == 0 || self.tick_ms == 0 {
            return Err(invalid(
                "heartbeat_timeout_ms and tick_ms",
                "must be positive",
            ));
        }
        if self.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1"));
        }
        self.limits.validate()?;
        if self.max_blob_bytes < 1024 {
            return Err(invalid("max_blob_bytes", "must be at least 1024"));
        }
        if !veil_engine::workloads::MODEL_WORKLOADS.contains(&self.trial_workload.as_str()) {
            return Err(ConfigError::UnknownTrialWorkload(
                self.trial_workload.clone(),
            ));
        }
        if !(self.trial_tolerance.is_finite() && self.trial_tolerance > 0.0) {
            return Err(invalid("trial_tolerance", "must be positive"));
        }
        if self.trial_timeout_ms < 1000 {
            return Err(invalid("trial_timeout_ms", "must be at least 1000"));
        }
        if let Some(a) = &self.admission {
            if a.operators.is_empty() && a.admission_keys.is_empty() {
                return Err(invalid(
                    "admission",
                    "needs at least one operator or admission key",
                ));
            }
            if !(a.max_role_share > 0.0 && a.max_role_share <= 1.0) {
                return Err(invalid("admission.max_role_share", "must be in (0, 1]"));
            }
        }
        Ok(())
    }

    /// The collusion keys, parsed.
    pub fn collusion_keys(&self) -> Result<Vec<DomainKey>> {
        if self.collusion.is_empty() {
            return Err(invalid("collusion", "needs at least one key"));
        }
        self.collusion
            .iter()
            .map(|k| DomainKey::parse(k).ok_or_else(|| ConfigError::UnknownCollusionKey(k.clone())))
            .collect()
    }

    /// The jobs' retry and timeout policy.
    pub fn policy(&self) -> JobPolicy {
        JobPolicy {
            max_attempts: self.max_attempts,
            timeouts: PhaseTimeouts {
                submitted_ms: self.submitted_timeout_ms,
                scheduled_ms: self.scheduled_timeout_ms,
                running_ms: self.running_timeout_ms,
                verifying_ms: self.verifying_timeout_ms,
            },
        }
    }

    /// The running-phase limit of a job of `demand`: [`RUNNING_SLACK`] times its estimated duration on a
    /// slow reference node ([`REFERENCE_OPS_PER_S`], [`REFERENCE_BYTES_PER_S`], [`REFERENCE_ROUND_MS`] per
    /// round), clamped to `[min_running_timeout_ms, running_timeout_ms]`. A small job that stalls fails
    /// fast (its honest members are freed), a large one is not failed for being large.
    pub fn running_timeout_for(&self, demand: &veil_scheduler::JobDemand) -> u64 {
        let party = &demand.party;
        let estimate_ms = 1e3 * party.ops as f64 / REFERENCE_OPS_PER_S
            + 1e3 * party.bytes as f64 / REFERENCE_BYTES_PER_S
            + REFERENCE_ROUND_MS * f64::from(demand.rounds);
        let scaled = (RUNNING_SLACK * estimate_ms).min(u64::MAX as f64) as u64;
        let floor = self.min_running_timeout_ms.min(self.running_timeout_ms);
        scaled.clamp(floor, self.running_timeout_ms)
    }

    /// A node whose last heartbeat is older than this is not picked for a new committee and is blamed
    /// when a member reports a failed attempt (half the down timeout).
    pub fn stale_ms(&self) -> u64 {
        (self.heartbeat_timeout_ms / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_loads_and_states_the_default_limits() {
        let c: CoordinatorConfig = toml::from_str(include_str!("../../coordinator.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.limits, EdgeLimits::default());
        assert_eq!(c.metrics_listen, crate::metrics::default_listen());
        // A limit of zero is refused with its field's name.
        let mut bad = c.clone();
        bad.limits.per_key.burst = 0;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("limits.per_key.burst"));
    }
}
