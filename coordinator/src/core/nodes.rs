//! Nodes and admission: registration (checked claims, the sealing key's attestation), heartbeats
//! (liveness, load, RTTs) and the tasks and trials ([`super::trials`]) each node sees in its replies.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use veil_node::api::{
    HardwareReport, HeartbeatReply, HeartbeatRequest, MemberView, NodeView, RegisterRequest,
    TaskRole, TaskView,
};
use veil_node::envelope::SealingKey;
use veil_node::inbox::check_attestation;
use veil_node::PublicKey;
use veil_scheduler::{
    Gpu, Hardware, Heartbeat, Millis, NodeId, NodeRegistration, NodeState, Phase, ReportedStatus,
};

use super::admission::{verify_chain, AdmissionError};
use super::{state_name, Core, NodeExtra};
use crate::error::{Error, Result};

/// A heartbeat reply's tag: the first 16 bytes of the SHA-256 of its content (state, tasks, trials) as
/// JSON, hex. Equal replies get equal tags within one coordinator build.
pub fn reply_tag(reply: &HeartbeatReply) -> String {
    use sha2::Digest;
    let content =
        serde_json::to_vec(&(&reply.state, &reply.tasks, &reply.trials)).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&content)[..16])
}

/// Longest operator, region or GPU name accepted, bytes.
pub const MAX_NAME_BYTES: usize = 128;

impl Core {
    /// Registers (or updates) the node whose key is `key`. A new node is on probation and gets a trial.
    /// Where operators are admitted, the node's certificate chain decides its operator (the collusion
    /// domain) and, when it states them, its region and ASN; a refusal is [`Error::Admission`].
    pub fn register(
        &mut self,
        key: &PublicKey,
        req: RegisterRequest,
        now: Millis,
    ) -> Result<NodeView> {
        let names = [
            ("operator", req.operator.as_str()),
            ("region", req.region.as_str()),
            (
                "GPU model",
                req.hardware.gpu_model.as_deref().unwrap_or_default(),
            ),
        ];
        if let Some((field, _)) = names.iter().find(|(_, v)| v.len() > MAX_NAME_BYTES) {
            return Err(Error::TooLong {
                field,
                max: MAX_NAME_BYTES,
            });
        }
        let sealing_key: SealingKey = req
            .sealing_key
            .parse()
            .map_err(|e: String| Error::malformed("sealing key", e))?;
        let attestation = hex::decode(&req.sealing_attestation)
            .map_err(|e| Error::malformed("sealing attestation", e))?;
        if !check_attestation(key, &sealing_key, &attestation) {
            return Err(Error::BadAttestation);
        }
        let h = &req.hardware;
        let gpu = match (&h.gpu_model, h.gpu_memory_bytes) {
            (Some(model), Some(memory_bytes)) => Some(Gpu {
                model: model.clone(),
                memory_bytes,
            }),
            (None, None) => None,
            _ => return Err(Error::IncompleteGpu),
        };
        let known = self.registry.id_of(&key.to_string());
        let measured = known
            .and_then(|id| self.registry.node(id))
            .and_then(|n| n.hardware().measured_ops_per_s);
        let admission = match &self.config.admission {
            None => None,
            Some(config) => {
                let admitted = verify_chain(config, key, req.certificate.as_deref(), now / 1000)?;
                let operator = PublicKey(admitted.operator);
                let max = config.max_nodes_per_operator;
                // Nodes that are down or rejected do not count: an operator may replace a dead machine.
                let others = self
                    .registry
                    .nodes()
                    .filter(|n| Some(n.id()) != known)
                    .filter(|n| !matches!(n.state(), NodeState::Down | NodeState::Rejected))
                    .filter(|n| n.registration().operator == operator.to_string())
                    .count();
                if max > 0 && others >= max as usize {
                    return Err(AdmissionError::TooManyNodes { operator, max }.into());
                }
                Some(admitted)
            }
        };
        let (operator, region, asn) = match &admission {
            Some(a) => (
                PublicKey(a.operator).to_string(),
                a.region.clone().unwrap_or_else(|| req.region.clone()),
                a.asn.or(req.asn),
            ),
            None => (req.operator.clone(), req.region.clone(), req.asn),
        };
        if let Some(config) = &self.config.admission {
            if !config.regions.is_empty() && !config.regions.contains(&region) {
                return Err(AdmissionError::RegionNotAllowed { region }.into());
            }
            if !config.asns.is_empty() && !asn.is_some_and(|a| config.asns.contains(&a)) {
                return Err(AdmissionError::AsnNotAllowed { asn }.into());
            }
        }
        let registration = NodeRegistration {
            public_key: key.to_string(),
            operator: operator.clone(),
            region: region.clone(),
            asn,
            hardware: Hardware {
                cores: h.cores,
                memory_bytes: h.memory_bytes,
                gpu,
                bandwidth_bytes_per_s: h.bandwidth_bytes_per_s,
                measured_ops_per_s: measured,
            },
        };
        let id = self
            .registry
            .register(registration, now)
            .map_err(Error::Registration)?;
        if self.nodes.len() <= id.index() {
            self.nodes.resize(id.index() + 1, NodeExtra::default());
        }
        let extra = &mut self.nodes[id.index()];
        extra.address = Some(req.address);
        extra.sealing_key = sealing_key.0;
        extra.sealing_attestation = attestation;
        extra.declared_operator = req.operator.clone();
        let readmitted = extra.revoked && admission.is_some();
        extra.admission = admission;
        if readmitted {
            extra.revoked = false;
        }
        self.dirty_nodes.insert(id);
        // A new region grows the region table.
        self.regions_dirty = true;
        tracing::info!(node = %id, %operator, declared = %req.operator, %region, "node registered");
        self.node_view(id)
    }

    /// A heartbeat: liveness, load, RTTs; the reply lists the node's tasks and its trials (a node on
    /// probation is paired for its trial here: [`super::trials`]).
    pub fn heartbeat(
        &mut self,
        key: &PublicKey,
        req: HeartbeatRequest,
        now: Millis,
    ) -> Result<HeartbeatReply> {
        let id = self.node_of(key)?;
        let before = self.registry.node(id).map(|n| n.state());
        let revoked = self.nodes.get(id.index()).is_some_and(|x| x.revoked);
        let hb = Heartbeat {
            status: if req.ready && !revoked {
                ReportedStatus::Ready
            } else {
                ReportedStatus::Draining
            },
            load: req.load,
            queue_len: req.queue_len,
        };
        self.registry
            .heartbeat(id, hb, now)
            .map_err(Error::invariant)?;
        let rtts: Vec<(NodeId, u32)> = req
            .rtts
            .iter()
            .take(64)
            .filter_map(|r| Some((self.registry.id_of(&r.peer)?, r.rtt_us)))
            .collect();
        if !rtts.is_empty() {
            self.registry
                .report_rtts(id, &rtts)
                .map_err(Error::invariant)?;
            // Persisted in batches by `tick`, not with every heartbeat.
            self.rtt_pending.insert(id);
        }
        let after = self.registry.node(id).map(|n| n.state());
        if before != after {
            self.dirty_nodes.insert(id);
        }
        self.reply_of(id, now)
    }

    /// The node registered under `key`.
    pub fn node_id(&self, key: &PublicKey) -> Result<NodeId> {
        self.node_of(key)
    }

    /// The reply a held heartbeat of the node under `key` gets now (its tasks and trials, tagged), without
    /// recording a heartbeat: the node's liveness is what its request's arrival proved
    /// ([`Core::heartbeat`]), not the end of the wait.
    pub fn heartbeat_reply(&mut self, key: &PublicKey, now: Millis) -> Result<HeartbeatReply> {
        let id = self.node_of(key)?;
        self.reply_of(id, now)
    }

    /// The node's heartbeat reply: its state, tasks and trials, and their [`reply_tag`].
    fn reply_of(&mut self, id: NodeId, now: Millis) -> Result<HeartbeatReply> {
        let state = self
            .registry
            .node(id)
            .map_or("unknown", |n| state_name(n.state()))
            .to_string();
        let mut reply = HeartbeatReply {
            state,
            tasks: self.tasks_of(id),
            trials: self.trials_of(id, now)?,
            tag: None,
            held_ms: 0,
        };
        reply.tag = Some(reply_tag(&reply));
        Ok(reply)
    }

    /// The nodes that see job `job`'s tasks in their heartbeat replies (a superset of what
    /// [`Core::tasks_of`] lists: every member and the verifier of the current attempt while the job is not
    /// over).
    pub(super) fn viewers_of(&self, job: u64) -> Vec<NodeId> {
        let Some(e) = self.jobs.get(&job) else {
            return Vec::new();
        };
        let Some(a) = &e.extra.attempt else {
            return Vec::new();
        };
        if e.job.phase().is_terminal() {
            return Vec::new();
        }
        let mut v: Vec<NodeId> = a.computing_members().chain(a.verifier).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Notes, for each job changed since the last commit (`dirty_jobs`), the nodes whose replies it may
    /// have changed: those that see it now and those that saw it when last noted (a member the job no
    /// longer lists must learn that its task is gone). They go to `woken`, and the jobs to `woken_jobs`
    /// (a client waits on its job's status), for [`Core::take_woken`].
    pub(super) fn note_viewers(&mut self) {
        let dirty: Vec<u64> = self.dirty_jobs.iter().copied().collect();
        self.woken_jobs.extend(&dirty);
        for job in dirty {
            let now = self.viewers_of(job);
            let before = if now.is_empty() {
                self.viewers.remove(&job)
            } else {
                self.viewers.insert(job, now.clone())
            };
            self.woken.extend(before.into_iter().flatten());
            self.woken.extend(now);
        }
    }

    /// The nodes whose heartbeat replies may have changed since the last call (a task assigned, a go, an
    /// attempt over or rescheduled, a trial's step), and the jobs that changed: the requests held for them
    /// are answered ([`crate::holds`]).
    pub fn take_woken(&mut self) -> (BTreeSet<NodeId>, BTreeSet<u64>) {
        self.note_viewers();
        (
            std::mem::take(&mut self.woken),
            std::mem::take(&mut self.woken_jobs),
        )
    }

    /// The tasks `node` sees in its heartbeat reply: its member role in scheduled and running attempts,
    /// and its verifier role in verifying `spdz2k` attempts.
    pub(super) fn tasks_of(&self, node: NodeId) -> Vec<TaskView> {
        let mut out = Vec::new();
        for e in self.jobs.values() {
            let phase = e.job.phase();
            let Some(a) = &e.extra.attempt else { continue };
            if phase == Phase::Verifying && a.verified && a.verifier == Some(node) {
                out.push(TaskView {
                    job: e.job.id.0,
                    attempt: a.number,
                    role: TaskRole::Verifier,
                    manifest: hex::encode(&a.manifest),
                    go: true,
                });
                continue;
            }
            if !matches!(phase, Phase::Scheduled | Phase::Running) {
                continue;
            }
            let Some(i) = a.member_index(node) else {
                continue;
            };
            let role = if i < a.parties.len() {
                TaskRole::Party { index: i }
            } else {
                TaskRole::Dealer
            };
            out.push(TaskView {
                job: e.job.id.0,
                attempt: a.number,
                role,
                manifest: hex::encode(&a.manifest),
                go: phase == Phase::Running,
            });
        }
        out
    }

    /// One node as operators see it.
    pub fn node_view(&self, id: NodeId) -> Result<NodeView> {
        let n = self
            .registry
            .node(id)
            .ok_or(Error::UnknownNode { node: id.0 })?;
        let reg = n.registration();
        let h = &reg.hardware;
        let stats = n.stats();
        Ok(NodeView {
            id: id.0,
            public_key: reg.public_key.clone(),
            operator: reg.operator.clone(),
            declared_operator: self
                .nodes
                .get(id.index())
                .map(|x| x.declared_operator.clone())
                .unwrap_or_default(),
            region: reg.region.clone(),
            address: self.nodes.get(id.index()).and_then(|x| x.address),
            state: state_name(n.state()).into(),
            reputation: n.reputation(),
            last_heartbeat_ms: n.last_heartbeat(),
            load: n.reported().load,
            queue_len: n.reported().queue_len,
            active_jobs: n.active_jobs(),
            successes: stats.successes,
            failures: stats.failures,
            timeouts: stats.timeouts,
            hardware: HardwareReport {
                cores: h.cores,
                memory_bytes: h.memory_bytes,
                gpu_model: h.gpu.as_ref().map(|g| g.model.clone()),
                gpu_memory_bytes: h.gpu.as_ref().map(|g| g.memory_bytes),
                bandwidth_bytes_per_s: h.bandwidth_bytes_per_s,
            },
            measured_rtts: self
                .registry
                .record(id)
                .map(|r| r.peers.iter().map(|&(p, us)| (p.0, us)).collect())
                .unwrap_or_default(),
            claimed_ops_per_s: h.claimed_ops_per_s().round() as u64,
            measured_ops_per_s: h.measured_ops_per_s,
            ops_per_s: h.ops_per_s().round() as u64,
        })
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.registry
            .nodes()
            .filter_map(|n| self.node_view(n.id()).ok())
            .collect()
    }

    /// A committee member as clients see it (key, address, attested sealing key).
    pub(crate) fn member_view(&self, id: NodeId) -> MemberView {
        MemberView {
            node: id.0,
            public_key: self
                .registry
                .node(id)
                .map(|n| n.registration().public_key.clone())
                .unwrap_or_default(),
            address: self
                .nodes
                .get(id.index())
                .and_then(|x| x.address)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            sealing_key: self
                .nodes
                .get(id.index())
                .map(|x| hex::encode(x.sealing_key))
                .unwrap_or_default(),
            sealing_attestation: self
                .nodes
                .get(id.index())
                .map(|x| hex::encode(&x.sealing_attestation))
                .unwrap_or_default(),
        }
    }
}
