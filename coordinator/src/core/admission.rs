//! Admission: which operators may run nodes, and what it costs a node whose operator is no longer admitted.
//!
//! With `[admission]` configured, a node registers with its operator's certificate chain
//! (`veil_node::operator`): the node certificate must name the caller's key, verify under its operator key
//! and not be expired; the operator must be listed, or admitted by a certificate of a listed network
//! admission key. The registry then knows the node under the verified operator key (the collusion domain),
//! never under the name the node declares. Per-operator limits cap the node count (at registration) and the
//! share of roles in flight (at placement).
//!
//! When an operator leaves the admitted set (a configuration reload or a restart) or a certificate
//! expires, its nodes are drained: they stay registered but report as draining whatever they send, take no
//! new role, and every attempt they take part in fails and is rescheduled on a fresh committee.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use veil_node::operator::{CertError, CertificateChain};
use veil_node::PublicKey;
use veil_scheduler::{FailureCause, Millis, NodeId, Phase};

use super::Core;
use crate::config::AdmissionConfig;
use crate::error::Result;

/// Why a node's admission was refused (HTTP 403).
#[derive(Debug, Error)]
pub enum AdmissionError {
    /// The node presented no certificate.
    #[error("this coordinator admits operators: register with your operator's certificate (veil operator certify, [coordinator] certificate)")]
    NoCertificate,
    /// The chain does not decode, does not verify, or expired.
    #[error("operator certificate refused: {0}")]
    Certificate(#[from] CertError),
    /// The node certificate names another node.
    #[error("the operator certificate is for node {certified}, not for this node")]
    ForAnotherNode {
        /// The node it certifies.
        certified: PublicKey,
    },
    /// Neither the operator nor an admission of it is recognised.
    #[error("operator {operator} is not admitted by this coordinator")]
    OperatorNotAdmitted {
        /// The operator key.
        operator: PublicKey,
    },
    /// The node's region is not in the allow-list (`[admission] regions`).
    #[error("region {region:?} is not among this coordinator's regions")]
    RegionNotAllowed {
        /// The region (certified, else claimed).
        region: String,
    },
    /// The node's ASN is not in the allow-list (`[admission] asns`), or it states none.
    #[error("ASN {asn:?} is not among this coordinator's ASNs")]
    AsnNotAllowed {
        /// The ASN (certified, else claimed), if any.
        asn: Option<u32>,
    },
    /// The operator already registered as many nodes as it may.
    #[error("operator {operator} already runs {max} nodes, its limit")]
    TooManyNodes {
        /// The operator key.
        operator: PublicKey,
        /// The limit.
        max: u32,
    },
}

/// What a verified chain admits a node as (kept with the node, re-checked on reloads and every tick).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeAdmission {
    /// The verified operator key: the node's collusion domain.
    pub(crate) operator: [u8; 32],
    /// The network admission key that admitted the operator, if it is not listed itself.
    pub(crate) via: Option<[u8; 32]>,
    /// When the first certificate of the chain expires, Unix seconds.
    pub(crate) expires_at_s: u64,
    /// The region the operator certified, if any.
    pub(crate) region: Option<String>,
    /// The ASN the operator certified, if any.
    pub(crate) asn: Option<u32>,
}

/// Checks `node`'s certificate chain `text` against `config` at `now_s` (Unix seconds).
pub(crate) fn verify_chain(
    config: &AdmissionConfig,
    node: &PublicKey,
    text: Option<&str>,
    now_s: u64,
) -> std::result::Result<NodeAdmission, AdmissionError> {
    let text = text.ok_or(AdmissionError::NoCertificate)?;
    let chain = CertificateChain::from_text(text)?;
    if chain.node.subject != *node {
        return Err(AdmissionError::ForAnotherNode {
            certified: chain.node.subject,
        });
    }
    chain.node.verify(now_s)?;
    let operator = chain.node.issuer;
    let mut expires_at_s = chain.node.expires_at_s;
    let via = if config.operators.contains(&operator) {
        None
    } else {
        match &chain.admission {
            Some(a) if config.admission_keys.contains(&a.issuer) => {
                a.verify(now_s)?;
                expires_at_s = expires_at_s.min(a.expires_at_s);
                Some(a.issuer.0)
            }
            _ => return Err(AdmissionError::OperatorNotAdmitted { operator }),
        }
    };
    Ok(NodeAdmission {
        operator: operator.0,
        via,
        expires_at_s,
        region: chain.node.region,
        asn: chain.node.asn,
    })
}

/// Whether an admission still holds under `config` at `now_s`.
fn still_admitted(config: &AdmissionConfig, a: &NodeAdmission, now_s: u64) -> bool {
    now_s < a.expires_at_s
        && (config.operators.contains(&PublicKey(a.operator))
            || a.via
                .is_some_and(|k| config.admission_keys.contains(&PublicKey(k))))
}

impl Core {
    /// Replaces the admission policy (a configuration reload) and drains the nodes it no longer admits.
    /// Returns them. Going back to open admission lifts every drain (nothing is verified any more).
    pub fn set_admission(
        &mut self,
        admission: Option<AdmissionConfig>,
        now: Millis,
    ) -> Result<Vec<NodeId>> {
        if admission.is_none() {
            for (i, extra) in self.nodes.iter_mut().enumerate() {
                if std::mem::take(&mut extra.revoked) {
                    self.dirty_nodes.insert(NodeId(i as u32));
                }
            }
        }
        self.config.admission = admission;
        self.enforce_admission(now)
    }

    /// Drains every node not (or no longer) admitted and fails the attempts it takes part in.
    pub(super) fn enforce_admission(&mut self, now: Millis) -> Result<Vec<NodeId>> {
        let Some(config) = &self.config.admission else {
            return Ok(Vec::new());
        };
        let now_s = now / 1000;
        let mut drained = Vec::new();
        for (i, extra) in self.nodes.iter_mut().enumerate() {
            let admitted = extra
                .admission
                .as_ref()
                .is_some_and(|a| still_admitted(config, a, now_s));
            if !admitted && !extra.revoked {
                extra.revoked = true;
                drained.push(NodeId(i as u32));
            }
        }
        for &id in &drained {
            tracing::warn!(node = %id, "operator no longer admitted (or certificate expired): draining");
            self.dirty_nodes.insert(id);
            self.report_draining(id, now)?;
        }
        let revoked: Vec<NodeId> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, x)| x.revoked)
            .map(|(i, _)| NodeId(i as u32))
            .collect();
        if revoked.is_empty() {
            return Ok(drained);
        }
        let hit: Vec<(u64, Vec<NodeId>)> = self
            .jobs
            .iter()
            .filter_map(|(&id, e)| {
                let a = e.extra.attempt.as_ref()?;
                let members: Vec<NodeId> = match e.job.phase() {
                    Phase::Scheduled | Phase::Running => a.computing_members().collect(),
                    Phase::Verifying if a.verified => a.verifier.into_iter().collect(),
                    _ => return None,
                };
                let blamed: Vec<NodeId> = members
                    .into_iter()
                    .filter(|m| revoked.contains(m))
                    .collect();
                (!blamed.is_empty()).then_some((id, blamed))
            })
            .collect();
        for (job, blamed) in hit {
            tracing::warn!(
                job,
                ?blamed,
                "a member's operator is no longer admitted: rescheduling"
            );
            self.fail_attempt(job, FailureCause::NodeFailure, blamed, now)?;
        }
        Ok(drained)
    }

    /// Sets a node's reported status to draining (it takes no new role).
    pub(super) fn report_draining(&mut self, id: NodeId, now: Millis) -> Result<()> {
        let Some(node) = self.registry.node(id) else {
            return Ok(());
        };
        let hb = veil_scheduler::Heartbeat {
            status: veil_scheduler::ReportedStatus::Draining,
            ..node.reported()
        };
        self.registry
            .heartbeat(id, hb, now)
            .map_err(crate::error::Error::invariant)
    }

    /// Nodes whose operator holds its share of the roles in flight (`max_role_share`), given a committee
    /// of `roles` more roles: they take no new role now.
    pub(super) fn over_role_share(&self, roles: u64) -> Vec<NodeId> {
        let Some(share) = self
            .config
            .admission
            .as_ref()
            .map(|a| a.max_role_share)
            .filter(|&s| s < 1.0)
        else {
            return Vec::new();
        };
        let mut held: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        let mut total = 0u64;
        for n in self.registry.nodes() {
            let jobs = u64::from(n.active_jobs());
            total += jobs;
            *held.entry(n.registration().operator.as_str()).or_default() += jobs;
        }
        let cap = ((share * (total + roles) as f64).floor() as u64).max(1);
        self.registry
            .nodes()
            .filter(|n| {
                held.get(n.registration().operator.as_str())
                    .is_some_and(|&h| h >= cap)
            })
            .map(|n| n.id())
            .collect()
    }
}
