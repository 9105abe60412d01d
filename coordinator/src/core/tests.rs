//! The core through its driver, on a real redb store and blob directory.

use std::net::SocketAddr;

use std::collections::BTreeMap;

use veil_node::api::{
    HardwareReport, HeartbeatReply, HeartbeatRequest, JobView, NodeView, RegisterRequest,
    SubmitRequest, TaskFailure, TaskRole, TrialReport, TrialTask,
};
use veil_node::{Identity, PublicKey};
use veil_scheduler::Millis;

use super::trials::TrialStep;
use super::{demand_for, MAX_NAME_BYTES};
use crate::blobs::{BlobKey, Direction};
use crate::config::CoordinatorConfig;
use crate::error::ErrorKind;
use crate::Coordinator;

/// The kind of a call's error, if it failed.
fn kind<T>(r: crate::error::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

const T0: Millis = 1_000_000;

fn config(dir: &std::path::Path) -> CoordinatorConfig {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nheartbeat_timeout_ms = 1000\n",
        dir.display()
    );
    let c: CoordinatorConfig = toml::from_str(&text).unwrap();
    c.validate().unwrap();
    c
}

fn registration(i: usize, id: &Identity) -> RegisterRequest {
    let sealing = veil_node::envelope::OpeningKey::generate().public();
    let attestation = id.sign(&veil_node::inbox::attestation_message(&sealing));
    RegisterRequest {
        sealing_key: sealing.to_string(),
        sealing_attestation: hex::encode(attestation),
        certificate: None,
        operator: format!("op-{i}"),
        region: "r".into(),
        asn: None,
        address: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
        hardware: HardwareReport {
            cores: 4,
            memory_bytes: 8 << 30,
            gpu_model: None,
            gpu_memory_bytes: None,
            bandwidth_bytes_per_s: 1 << 30,
        },
    }
}

fn request() -> SubmitRequest {
    SubmitRequest {
        workload: "network-a".into(),
        model_seed: 7,
        weights: "shared".into(),
        frac_bits: 16,
        batch: 1,
        inferences: 2,
        parties: 2,
        model: None,
        output_key: None,
        protocol: "semi2k".into(),
        stage: None,
        threads: None,
        shaping: None,
    }
}

fn heartbeat(c: &mut Coordinator, key: &PublicKey, now: Millis) -> HeartbeatReply {
    let req = HeartbeatRequest {
        ready: true,
        load: 0.0,
        queue_len: 0,
        rtts: Vec::new(),
        wait_ms: 0,
        seen: None,
    };
    c.heartbeat(key, req, now).unwrap()
}

/// Correct output shares of trial `t`: the plaintext answer, encoded and split at random.
fn shares_of(t: &TrialTask) -> [Vec<u64>; 2] {
    let out = veil_node::trial::reference(&t.workload, t.model_seed, t.input_seed).unwrap();
    let fp = veil_protocols::ring::FixedPoint::new(veil_node::trial::FRAC_BITS).unwrap();
    let encoded = fp.encode(&out).unwrap();
    let mask: Vec<u64> = (0..encoded.len()).map(|_| rand::random()).collect();
    let first = encoded
        .iter()
        .zip(&mask)
        .map(|(e, m)| e.wrapping_sub(*m))
        .collect();
    [first, mask]
}

/// A party's report of `t`.
fn trial_report(t: &TrialTask, outputs: Vec<u64>, online: f64, rtt_us: Option<u32>) -> TrialReport {
    TrialReport {
        id: t.id,
        outputs,
        online_seconds: online,
        rtt_us,
        failure: None,
    }
}

/// A trial as its members see it: the task and the members' keys (party 0, party 1, the dealer).
struct SeenTrial {
    task: TrialTask,
    members: [Option<PublicKey>; 3],
}

impl SeenTrial {
    fn member(&self, i: usize) -> PublicKey {
        self.members[i].unwrap()
    }
}

/// Every trial in the heartbeat replies of every node (two heartbeats each, at `now`: the first may pair
/// a node whose partners heartbeated before it).
fn trials_seen(c: &mut Coordinator, now: Millis) -> BTreeMap<u64, SeenTrial> {
    let keys: Vec<PublicKey> = c
        .nodes()
        .iter()
        .map(|n| n.public_key.parse().unwrap())
        .collect();
    for k in &keys {
        heartbeat(c, k, now);
    }
    let mut seen: BTreeMap<u64, SeenTrial> = BTreeMap::new();
    for k in &keys {
        for t in heartbeat(c, k, now).trials {
            let slot = match t.role {
                TaskRole::Party { index } => index,
                _ => 2,
            };
            let e = seen.entry(t.id).or_insert_with(|| SeenTrial {
                task: t.clone(),
                members: [None; 3],
            });
            e.members[slot] = Some(*k);
        }
    }
    seen
}

/// Reports `shares` for the two parties of `t` (online seconds `online`, RTTs `rtts`) and checks the
/// answer as the HTTP layer does; returns the last step.
fn report_trial(
    c: &mut Coordinator,
    t: &SeenTrial,
    shares: [Vec<u64>; 2],
    online: [f64; 2],
    rtts: [Option<u32>; 2],
    now: Millis,
) -> TrialStep {
    let mut last = TrialStep::Wait;
    for (p, share) in shares.into_iter().enumerate() {
        let report = trial_report(&t.task, share, online[p], rtts[p]);
        let (_, step) = c.trial_report(&t.member(p), report, now).unwrap();
        if let TrialStep::Check(check) = &step {
            let checked = crate::trial::check(check, 0.01).unwrap();
            c.record_trial_check(t.task.id, checked.correct, checked.ops, now)
                .unwrap();
        }
        last = step;
    }
    last
}

/// Runs every registered node's trial to a pass (pairing, acceptance, correct shares) at `now`.
fn admit_all(c: &mut Coordinator, now: Millis) {
    for _ in 0..10 {
        let seen = trials_seen(c, now);
        if seen.is_empty() {
            break;
        }
        for t in seen.values() {
            for m in t.members.iter().flatten() {
                c.trial_accepted(m, t.task.id).unwrap();
            }
            let shares = shares_of(&t.task);
            report_trial(c, t, shares, [0.01, 0.01], [None, None], now);
        }
    }
    for n in c.nodes() {
        assert_eq!(n.state, "active", "{n:?}");
    }
}

/// A coordinator with `n` nodes of distinct operators that passed their trial.
fn network(dir: &std::path::Path, n: usize) -> (Coordinator, Vec<PublicKey>) {
    let (c, ids) = network_with_identities(dir, n);
    (c, ids.iter().map(Identity::public_key).collect())
}

/// [`network`], keeping the nodes' identities (to sign evidence as nodes do).
fn network_with_identities(dir: &std::path::Path, n: usize) -> (Coordinator, Vec<Identity>) {
    let mut c = Coordinator::open(config(dir), Identity::generate().unwrap(), T0).unwrap();
    let ids: Vec<Identity> = (0..n).map(|_| Identity::generate().unwrap()).collect();
    let keys: Vec<PublicKey> = ids.iter().map(Identity::public_key).collect();
    for (i, k) in keys.iter().enumerate() {
        // An attestation by another key is refused.
        let forged = registration(i, &ids[(i + 1) % n]);
        assert!(kind(c.register(k, forged, T0)) == Some(ErrorKind::Invalid));
        let view = c.register(k, registration(i, &ids[i]), T0).unwrap();
        assert_eq!(view.state, "probation");
    }
    admit_all(&mut c, T0);
    for k in &keys {
        assert!(heartbeat(&mut c, k, T0).trials.is_empty());
    }
    (c, ids)
}

fn members(view: &JobView) -> Vec<String> {
    let c = view.committee.as_ref().unwrap();
    c.parties
        .iter()
        .chain(c.dealer.as_ref())
        .map(|m| m.public_key.clone())
        .collect()
}

fn key_of(keys: &[PublicKey], hex: &str) -> PublicKey {
    *keys.iter().find(|k| k.to_string() == hex).unwrap()
}

/// Accepts on every member and uploads every input: the attempt runs.
fn start(c: &mut Coordinator, keys: &[PublicKey], client: &PublicKey, now: Millis) -> JobView {
    let view = c.job_view(1).unwrap();
    for m in members(&view) {
        c.task_accepted(&key_of(keys, &m), 1, view.attempt, now)
            .unwrap();
    }
    for p in 0..2 {
        c.upload_input(client, 1, view.attempt, p, vec![p as u8; 10], now)
            .unwrap();
    }
    let view = c.job_view(1).unwrap();
    assert_eq!(view.phase, "running");
    view
}

#[test]
fn a_rep3_job_runs_on_three_parties_and_no_dealer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, keys) = network(dir.path(), 5);
    let client = Identity::generate().unwrap().public_key();
    // rep3 takes exactly 3 parties.
    let two = SubmitRequest {
        protocol: "rep3".into(),
        ..request()
    };
    let why = demand_for(&two, None).unwrap_err().to_string();
    assert!(why.contains("exactly 3 parties"), "{why}");
    // rep3m runs on the network too: three parties and a verifier, no dealer role.
    let malicious = SubmitRequest {
        protocol: "rep3m".into(),
        parties: 3,
        ..request()
    };
    let demand = demand_for(&malicious, None).unwrap();
    assert!(demand.dealer.is_none(), "no dealer role");
    assert!(demand.verifier.is_some(), "a verifier role");
    assert_eq!(demand.committee_size(), 4);
    let two = SubmitRequest {
        protocol: "rep3m".into(),
        ..request()
    };
    assert!(kind(demand_for(&two, None)).is_some());
    let req = SubmitRequest {
        protocol: "rep3".into(),
        parties: 3,
        ..request()
    };
    let demand = demand_for(&req, None).unwrap();
    // No dealer and no verifier role: the committee is its three parties.
    assert_eq!((demand.dealer, demand.verifier), (None, None));
    assert_eq!(demand.committee_size(), 3);
    let view = c.submit(&client, req, demand, T0 + 1).unwrap();
    assert_eq!(view.phase, "scheduled");
    let committee = view.committee.clone().unwrap();
    assert!(committee.dealer.is_none(), "no dealer in the committee");
    assert!(committee.verifier.is_none(), "no verifier in the committee");
    // Exactly three nodes are held for the job: no node sits in a dealer or verifier slot.
    let held: Vec<String> = c
        .nodes()
        .into_iter()
        .filter(|n| n.active_jobs > 0)
        .map(|n| n.public_key)
        .collect();
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(held.iter().all(|k| members(&view).contains(k)));
    let mut parties: Vec<&str> = committee
        .parties
        .iter()
        .map(|m| m.public_key.as_str())
        .collect();
    parties.sort_unstable();
    parties.dedup();
    assert_eq!(parties.len(), 3);
    // The signed manifest names no dealer.
    let bytes = hex::decode(view.manifest.as_deref().unwrap()).unwrap();
    let signed: veil_node::manifest::SignedManifest = postcard::from_bytes(&bytes).unwrap();
    let manifest: veil_node::manifest::Manifest = postcard::from_bytes(&signed.body.0).unwrap();
    assert_eq!(manifest.protocol, veil_node::manifest::Protocol::Rep3);
    assert!(manifest.dealer.is_none());
    assert!(manifest.verifier.is_none());
    // Only the parties have a task, each a party's.
    let mut tasks = 0;
    for k in &keys {
        for t in heartbeat(&mut c, k, T0 + 2).tasks {
            assert!(matches!(t.role, TaskRole::Party { .. }), "{:?}", t.role);
            tasks += 1;
        }
    }
    assert_eq!(tasks, 3);
    // The attempt runs once the three parties accepted and their inputs are in.
    for m in members(&view) {
        c.task_accepted(&key_of(&keys, &m), 1, view.attempt, T0 + 3)
            .unwrap();
    }
    for p in 0..3 {
        c.upload_input(&client, 1, view.attempt, p, vec![p as u8; 10], T0 + 3)
            .unwrap();
    }
    assert_eq!(c.job_view(1).unwrap().phase, "running");
}

#[test]
fn a_job_runs_through_its_lifecycle_and_blobs_reach_only_their_addressees() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, keys) = network(dir.path(), 5);
    let client = Identity::generate().unwrap().public_key();
    let stranger = Identity::generate().unwrap().public_key();
    let demand = demand_for(&request(), None).unwrap();
    let view = c.submit(&client, request(), demand, T0 + 1).unwrap();
    assert_eq!(view.phase, "scheduled");
    let committee = view.committee.clone().unwrap();
    // Three members of three operators: semi2k checks nothing, so no node is held as its verifier.
    assert!(committee.verifier.is_none());
    let mut all: Vec<&str> = committee
        .parties
        .iter()
        .chain(committee.dealer.as_ref())
        .map(|m| m.public_key.as_str())
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 3);
    let held: u32 = c.nodes().iter().map(|n| n.active_jobs).sum();
    assert_eq!(held, 3, "exactly the members are reserved");
    // Members see their task, not yet to start; a node outside the committee has none.
    let dealer = key_of(&keys, &committee.dealer.as_ref().unwrap().public_key);
    let tasks = heartbeat(&mut c, &dealer, T0 + 2).tasks;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].role, TaskRole::Dealer);
    assert!(!tasks[0].go);
    let outsider = *keys
        .iter()
        .find(|k| !all.contains(&k.to_string().as_str()))
        .unwrap();
    assert!(heartbeat(&mut c, &outsider, T0 + 2).tasks.is_empty());
    // Only the submitter uploads inputs; only members accept.
    assert!(
        kind(c.upload_input(&stranger, 1, 1, 0, b"x".to_vec(), T0 + 3))
            == Some(ErrorKind::Forbidden)
    );
    assert!(kind(c.task_accepted(&outsider, 1, 1, T0 + 3)) == Some(ErrorKind::Forbidden));
    let view = start(&mut c, &keys, &client, T0 + 3);
    assert!(heartbeat(&mut c, &dealer, T0 + 4).tasks[0].go);
    // A party gets its own input only.
    let p0 = key_of(&keys, &committee.parties[0].public_key);
    let p1 = key_of(&keys, &committee.parties[1].public_key);
    assert_eq!(c.task_input(&p0, 1, 1).unwrap(), vec![0u8; 10]);
    assert_eq!(c.task_input(&p1, 1, 1).unwrap(), vec![1u8; 10]);
    assert!(c.task_input(&dealer, 1, 1).is_err());
    c.task_output(&p0, 1, 1, b"out0".to_vec(), T0 + 5).unwrap();
    assert_eq!(c.job_view(1).unwrap().phase, "running");
    assert!(c.download_output(&client, 1, 0).is_err());
    c.task_output(&p1, 1, 1, b"out1".to_vec(), T0 + 6).unwrap();
    let done = c.job_view(1).unwrap();
    assert_eq!(done.phase, "done");
    let phases: Vec<&str> = done.history.iter().map(|t| t.to.as_str()).collect();
    assert_eq!(phases, ["scheduled", "running", "verifying", "done"]);
    assert_eq!(c.download_output(&client, 1, 1).unwrap(), b"out1");
    assert!(kind(c.download_output(&stranger, 1, 1)) == Some(ErrorKind::Forbidden));
    // Every member gained reputation and released its reservation.
    for n in c.nodes() {
        let member = members(&view).contains(&n.public_key);
        assert_eq!(n.successes, u64::from(member));
        assert_eq!(n.active_jobs, 0);
        assert!(!member || n.reputation > 0.8, "{n:?}");
    }
    // The results stay for the retention period, then go (the job's record stays).
    let retention = c.config().result_retention_ms;
    c.tick(T0 + 6 + retention - 1).unwrap();
    assert_eq!(c.download_output(&client, 1, 1).unwrap(), b"out1");
    c.tick(T0 + 6 + retention).unwrap();
    let err = c.download_output(&client, 1, 1).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(c.job_view(1).unwrap().phase, "done");
}

#[test]
fn a_client_submitting_faster_than_its_rate_limit_is_refused_for_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.submissions_per_minute = 3;
    let mut c = Coordinator::open(config, Identity::generate().unwrap(), T0).unwrap();
    let (client, other) = (
        Identity::generate().unwrap().public_key(),
        Identity::generate().unwrap().public_key(),
    );
    let demand = demand_for(&request(), None).unwrap();
    for i in 0..3 {
        c.submit(&client, request(), demand, T0 + i).unwrap();
    }
    let err = c.submit(&client, request(), demand, T0 + 10).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    c.submit(&other, request(), demand, T0 + 10).unwrap();
    c.submit(&client, request(), demand, T0 + 60_001).unwrap();
}

#[test]
fn a_silent_member_fails_the_attempt_and_the_job_moves_to_a_fresh_committee() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, keys) = network(dir.path(), 5);
    let client = Identity::generate().unwrap().public_key();
    let demand = demand_for(&request(), None).unwrap();
    c.submit(&client, request(), demand, T0 + 1).unwrap();
    let first = start(&mut c, &keys, &client, T0 + 2);
    let victim = key_of(
        &keys,
        &first.committee.as_ref().unwrap().parties[1].public_key,
    );
    // Everyone but the victim keeps heartbeating; past the timeout the victim is down.
    for t in [T0 + 500, T0 + 1000, T0 + 1500] {
        for k in keys.iter().filter(|k| **k != victim) {
            heartbeat(&mut c, k, t);
        }
        c.tick(t).unwrap();
    }
    let view = c.job_view(1).unwrap();
    assert_eq!(view.attempt, 2, "{view:?}");
    assert_eq!(view.phase, "scheduled");
    assert!(view.inputs_uploaded.is_empty(), "fresh shares are needed");
    assert!(!members(&view).contains(&victim.to_string()));
    assert_ne!(view.run_id, first.run_id);
    let victim_node = c
        .nodes()
        .into_iter()
        .find(|n| n.public_key == victim.to_string())
        .unwrap();
    assert_eq!(victim_node.state, "down");
    assert_eq!(victim_node.failures, 1);
    assert!(victim_node.reputation < 0.8);
    assert_eq!(view.excluded, vec![victim_node.id]);
    // The old attempt is gone: its blobs are refused, its inputs deleted.
    assert!(c
        .upload_input(&client, 1, 1, 0, b"x".to_vec(), T0 + 1600)
        .is_err());
    assert!(c
        .blobs()
        .get(&BlobKey {
            job: 1,
            attempt: 1,
            dir: Direction::Input,
            index: 0
        })
        .is_err());
    // A member's failure report blames the silent, not the reporter.
    let second = start(&mut c, &keys, &client, T0 + 1600);
    let reporter = key_of(
        &keys,
        &second.committee.as_ref().unwrap().parties[0].public_key,
    );
    c.task_failed(
        &reporter,
        1,
        2,
        &TaskFailure {
            reason: "peer timed out".into(),
            rejected_input: false,
            verification_failed: false,
        },
        T0 + 1700,
    )
    .unwrap();
    // Every member is alive as far as the coordinator sees: the report carries no evidence, blames
    // nobody else, and counts against the reporter (kept out of the job's next attempts).
    let view = c.job_view(1).unwrap();
    assert_eq!(view.attempt, 3);
    let reporter_node = c
        .nodes()
        .into_iter()
        .find(|n| n.public_key == reporter.to_string())
        .unwrap();
    assert_eq!(reporter_node.failures, 1);
    assert!(view.excluded.contains(&reporter_node.id));
    assert_eq!(
        c.nodes().iter().map(|n| n.failures).sum::<u64>(),
        2,
        "the victim and the reporter, nobody else"
    );
}

#[test]
fn phase_timeouts_blame_the_members_that_did_not_act_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, keys) = network(dir.path(), 5);
    let client = Identity::generate().unwrap().public_key();
    let demand = demand_for(&request(), None).unwrap();
    let view = c.submit(&client, request(), demand, T0 + 1).unwrap();
    // Every member but party 1 accepts; the client uploads everything; party 1 stays silent in its
    // task but keeps heartbeating (it is up, just not doing its part).
    let silent = key_of(
        &keys,
        &view.committee.as_ref().unwrap().parties[1].public_key,
    );
    for m in members(&view) {
        let k = key_of(&keys, &m);
        if k != silent {
            c.task_accepted(&k, 1, 1, T0 + 2).unwrap();
        }
    }
    for p in 0..2 {
        c.upload_input(&client, 1, 1, p, b"in".to_vec(), T0 + 2)
            .unwrap();
    }
    assert_eq!(c.job_view(1).unwrap().phase, "scheduled");
    let limit = c.config().scheduled_timeout_ms;
    for k in &keys {
        heartbeat(&mut c, k, T0 + limit + 1);
    }
    c.tick(T0 + limit + 1).unwrap();
    let view = c.job_view(1).unwrap();
    assert_eq!(view.attempt, 2, "{view:?}");
    let cause = view.history.iter().find_map(|t| t.cause.clone()).unwrap();
    assert_eq!(cause, "timeout in phase scheduled");
    let silent_view = c
        .nodes()
        .into_iter()
        .find(|n| n.public_key == silent.to_string())
        .unwrap();
    assert_eq!(silent_view.timeouts, 1);
    assert_eq!(view.excluded, vec![silent_view.id]);
    assert!(c.nodes().iter().filter(|n| n.timeouts > 0).count() == 1);
    // Requests out of bounds.
    let mut bad = request();
    bad.parties = 1;
    assert!(kind(demand_for(&bad, None)) == Some(ErrorKind::Invalid));
    let mut bad = request();
    bad.workload = "gpt-5".into();
    assert!(kind(demand_for(&bad, None)) == Some(ErrorKind::Invalid));
    let newcomer_id = Identity::generate().unwrap();
    let mut reg = registration(9, &newcomer_id);
    reg.operator = "x".repeat(MAX_NAME_BYTES + 1);
    let newcomer = newcomer_id.public_key();
    assert!(kind(c.register(&newcomer, reg, T0)) == Some(ErrorKind::Invalid));
    assert!(
        kind(c.heartbeat(
            &newcomer,
            HeartbeatRequest {
                ready: true,
                load: 0.0,
                queue_len: 0,
                rtts: Vec::new(),
                wait_ms: 0,
                seen: None,
            },
            T0
        )) == Some(ErrorKind::NotFound)
    );
}

#[test]
fn a_restart_keeps_nodes_jobs_attempts_and_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (mut c, keys) = network(dir.path(), 5);
        let client = Identity::generate().unwrap().public_key();
        let demand = demand_for(&request(), None).unwrap();
        c.submit(&client, request(), demand, T0 + 1).unwrap();
        start(&mut c, &keys, &client, T0 + 2);
        (c.nodes(), c.job_view(1).unwrap())
    };
    let (nodes, job) = before;
    let c = Coordinator::open(config(dir.path()), Identity::generate().unwrap(), T0 + 100).unwrap();
    let strip = |mut v: Vec<NodeView>| {
        for n in &mut v {
            n.last_heartbeat_ms = 0;
            n.reputation = (n.reputation * 1e6).round();
        }
        v
    };
    assert_eq!(strip(c.nodes()), strip(nodes));
    assert_eq!(c.job_view(1).unwrap(), job);
    // Two parties and the dealer (semi2k has no verifier).
    assert_eq!(c.nodes().iter().map(|n| n.active_jobs).sum::<u32>(), 3);
    assert_eq!(c.next_job, 2);
}

// ----- admission -----

use veil_node::operator::{CertKind, Certificate, CertificateChain};

/// Far enough past `T0` (in seconds) that certificates issued for the tests are valid.
const VALID_UNTIL_S: u64 = T0 / 1000 + 3600;

fn chain(operator: &Identity, node: PublicKey, expires_at_s: u64) -> String {
    CertificateChain {
        node: Certificate::issue(operator, CertKind::Node, node, expires_at_s, None, None).unwrap(),
        admission: None,
    }
    .to_text()
}

fn admitting(dir: &std::path::Path, operators: &[&Identity], max_nodes: u32) -> CoordinatorConfig {
    let mut c = config(dir);
    c.admission = Some(crate::config::AdmissionConfig {
        operators: operators.iter().map(|o| o.public_key()).collect(),
        admission_keys: Vec::new(),
        max_nodes_per_operator: max_nodes,
        max_role_share: 1.0,
        regions: Vec::new(),
        asns: Vec::new(),
    });
    c
}

/// Registers `id` with `certificate` (and a claimed operator name `op-{i}`); [`admit_all`] runs its
/// trial.
fn admit(c: &mut Coordinator, i: usize, id: &Identity, certificate: String) {
    let mut reg = registration(i, id);
    reg.certificate = Some(certificate);
    let k = id.public_key();
    c.register(&k, reg, T0).unwrap();
}

#[test]
fn forged_expired_unadmitted_and_misdirected_certificates_are_refused_with_403() {
    let dir = tempfile::tempdir().unwrap();
    let (admitted, stranger) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut c = Coordinator::open(
        admitting(dir.path(), &[&admitted], 0),
        Identity::generate().unwrap(),
        T0,
    )
    .unwrap();
    let node = Identity::generate().unwrap();
    let other = Identity::generate().unwrap().public_key();
    let refused = |c: &mut Coordinator, certificate: Option<String>| {
        let mut reg = registration(0, &node);
        reg.certificate = certificate;
        let err = c.register(&node.public_key(), reg, T0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
        err.to_string()
    };
    assert!(refused(&mut c, None).contains("register with your operator's certificate"));
    // Signed by an operator that is not admitted.
    let unadmitted = chain(&stranger, node.public_key(), VALID_UNTIL_S);
    assert!(refused(&mut c, Some(unadmitted)).contains("is not admitted"));
    // Expired.
    let expired = chain(&admitted, node.public_key(), T0 / 1000);
    assert!(refused(&mut c, Some(expired)).contains("expired"));
    // For another node.
    let misdirected = chain(&admitted, other, VALID_UNTIL_S);
    assert!(refused(&mut c, Some(misdirected)).contains("for node"));
    // Forged: an admitted operator's certificate whose node key was replaced after signing.
    let genuine =
        Certificate::issue(&admitted, CertKind::Node, other, VALID_UNTIL_S, None, None).unwrap();
    let forged = CertificateChain {
        node: Certificate {
            subject: node.public_key(),
            ..genuine
        },
        admission: None,
    };
    assert!(refused(&mut c, Some(forged.to_text())).contains("signature"));
    assert!(c.nodes().is_empty(), "nothing was registered");
    // The genuine chain is admitted, under the operator key, whatever name the node declares.
    let mut reg = registration(0, &node);
    reg.certificate = Some(chain(&admitted, node.public_key(), VALID_UNTIL_S));
    let view = c.register(&node.public_key(), reg, T0).unwrap();
    assert_eq!(view.operator, admitted.public_key().to_string());
    assert_eq!(view.declared_operator, "op-0");
}

#[test]
fn two_nodes_of_one_operator_never_share_a_committee_whatever_names_they_declare() {
    let dir = tempfile::tempdir().unwrap();
    let operators: Vec<Identity> = (0..4).map(|_| Identity::generate().unwrap()).collect();
    let refs: Vec<&Identity> = operators.iter().collect();
    let mut c = Coordinator::open(
        admitting(dir.path(), &refs, 2),
        Identity::generate().unwrap(),
        T0,
    )
    .unwrap();
    // Operator 0 runs two nodes that declare different operator names; the others one each.
    let twins = [Identity::generate().unwrap(), Identity::generate().unwrap()];
    for (i, n) in twins.iter().enumerate() {
        admit(
            &mut c,
            10 + i,
            n,
            chain(&operators[0], n.public_key(), VALID_UNTIL_S),
        );
    }
    for (i, o) in operators.iter().enumerate().skip(1) {
        let n = Identity::generate().unwrap();
        admit(&mut c, i, &n, chain(o, n.public_key(), VALID_UNTIL_S));
    }
    admit_all(&mut c, T0);
    // A third node of operator 0 is over its limit of two.
    let third = Identity::generate().unwrap();
    let mut reg = registration(20, &third);
    reg.certificate = Some(chain(&operators[0], third.public_key(), VALID_UNTIL_S));
    let err = c.register(&third.public_key(), reg, T0).unwrap_err();
    assert!(err.to_string().contains("its limit"), "{err}");
    let twins: Vec<String> = twins.iter().map(|t| t.public_key().to_string()).collect();
    let client = Identity::generate().unwrap().public_key();
    // Three parties and a dealer: four seats for four operators.
    let four_seats = SubmitRequest {
        parties: 3,
        ..request()
    };
    let demand = demand_for(&four_seats, None).unwrap();
    let mut twin_seats = 0;
    for j in 0..40u64 {
        let view = c
            .submit(&client, four_seats.clone(), demand, T0 + 1 + j)
            .unwrap();
        let committee = view.committee.as_ref().unwrap();
        let seated: Vec<&str> = committee
            .parties
            .iter()
            .chain(committee.dealer.as_ref())
            .chain(committee.verifier.as_ref())
            .map(|m| m.public_key.as_str())
            .filter(|k| twins.iter().any(|t| t == k))
            .collect();
        assert!(seated.len() <= 1, "job {}: {seated:?}", view.id);
        twin_seats += seated.len();
        c.cancel(&client, view.id, T0 + 1 + j).unwrap();
    }
    // Four seats of four operators: operator 0 sits on every committee, through one twin or the other.
    assert_eq!(twin_seats, 40);
}

#[test]
fn removing_an_operator_drains_its_nodes_and_reschedules_their_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let operators: Vec<Identity> = (0..5).map(|_| Identity::generate().unwrap()).collect();
    let refs: Vec<&Identity> = operators.iter().collect();
    let mut c = Coordinator::open(
        admitting(dir.path(), &refs, 0),
        Identity::generate().unwrap(),
        T0,
    )
    .unwrap();
    let nodes: Vec<Identity> = (0..5).map(|_| Identity::generate().unwrap()).collect();
    for (i, n) in nodes.iter().enumerate() {
        admit(
            &mut c,
            i,
            n,
            chain(&operators[i], n.public_key(), VALID_UNTIL_S),
        );
    }
    admit_all(&mut c, T0);
    let client = Identity::generate().unwrap().public_key();
    let demand = demand_for(&request(), None).unwrap();
    let first = c.submit(&client, request(), demand, T0 + 1).unwrap();
    let seated = first.committee.as_ref().unwrap().parties[0]
        .public_key
        .clone();
    let i = nodes
        .iter()
        .position(|n| n.public_key().to_string() == seated)
        .unwrap();
    // The reload admits every operator but i's.
    let mut admission = c.config().admission.clone().unwrap();
    admission
        .operators
        .retain(|k| *k != operators[i].public_key());
    let drained = c
        .update(|core| core.set_admission(Some(admission), T0 + 2))
        .unwrap();
    assert_eq!(drained.len(), 1);
    let view = c.job_view(first.id).unwrap();
    assert_eq!(view.attempt, 2, "{view:?}");
    assert_eq!(view.phase, "scheduled");
    assert!(!members(&view).contains(&seated));
    // The drained node stays draining whatever it reports, and gets no task.
    let reply = heartbeat(&mut c, &nodes[i].public_key(), T0 + 3);
    assert_eq!(reply.state, "draining");
    assert!(reply.tasks.is_empty());
}

#[test]
fn claims_beyond_physical_bounds_are_refused_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::open(config(dir.path()), Identity::generate().unwrap(), T0).unwrap();
    let id = Identity::generate().unwrap();
    let refused = |c: &mut Coordinator, edit: &dyn Fn(&mut HardwareReport)| {
        let mut reg = registration(0, &id);
        edit(&mut reg.hardware);
        let err = c.register(&id.public_key(), reg, T0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        err.to_string()
    };
    // The probe of the issue: a node that claimed 2^32 - 1 cores was accepted.
    assert!(refused(&mut c, &|h| h.cores = u32::MAX).contains("MAX_CORES"));
    assert!(refused(&mut c, &|h| h.memory_bytes =
        veil_scheduler::MAX_MEMORY_BYTES + 1)
    .contains("MAX_MEMORY_BYTES"));
    assert!(refused(&mut c, &|h| {
        h.bandwidth_bytes_per_s = veil_scheduler::MAX_BANDWIDTH_BYTES_PER_S + 1
    })
    .contains("MAX_BANDWIDTH"));
    assert!(refused(&mut c, &|h| {
        h.gpu_model = Some("g".into());
        h.gpu_memory_bytes = Some(veil_scheduler::MAX_GPU_MEMORY_BYTES + 1);
    })
    .contains("MAX_GPU_MEMORY"));
    assert!(c.nodes().is_empty());
    // At the bounds, a claim is accepted.
    let mut reg = registration(0, &id);
    reg.hardware.cores = veil_scheduler::MAX_CORES;
    reg.hardware.memory_bytes = veil_scheduler::MAX_MEMORY_BYTES;
    reg.hardware.bandwidth_bytes_per_s = veil_scheduler::MAX_BANDWIDTH_BYTES_PER_S;
    c.register(&id.public_key(), reg, T0).unwrap();
}

// ----- blame on evidence, timeouts, lab-only options -----

#[test]
fn client_chosen_shaping_and_threads_are_refused_with_400_not_run_to_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = network(dir.path(), 5);
    let client = Identity::generate().unwrap().public_key();
    let mut shaped = request();
    shaped.shaping = Some(veil_engine::lab::shaping::ShapingConfig {
        latency_ms: 3_600_000.0,
        bandwidth_mbps: Some(0.001),
        burst_bytes: 1,
    });
    let err = demand_for(&shaped, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("shaping is refused"), "{err}");
    let mut threads = request();
    threads.threads = Some(4096);
    let err = demand_for(&threads, None).unwrap_err();
    assert!(err.to_string().contains("threads is refused"), "{err}");
    // Nothing was submitted: no committee was tied up.
    assert!(c.jobs().is_empty());
    let demand = demand_for(&request(), None).unwrap();
    c.submit(&client, request(), demand, T0 + 1).unwrap();
}

#[test]
fn a_jobs_running_timeout_scales_with_its_estimated_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.min_running_timeout_ms = 30_000;
    config.running_timeout_ms = 600_000;
    let small = demand_for(&request(), None).unwrap();
    let mut big_request = request();
    big_request.inferences = 2_000;
    let big = demand_for(&big_request, None).unwrap();
    let (t_small, t_big) = (
        config.running_timeout_for(&small),
        config.running_timeout_for(&big),
    );
    // network-a: 20 rounds per inference at 100 ms, times 4: 2 inferences -> 16 s (floor 30 s); 2000
    // inferences -> 16 000 s (cap 600 s).
    assert_eq!(t_small, 30_000);
    assert_eq!(t_big, 600_000);
    let mut mid_request = request();
    mid_request.inferences = 20;
    let mid = demand_for(&mid_request, None).unwrap();
    let t_mid = config.running_timeout_for(&mid);
    assert!(t_mid > 4 * 100 * 20 * 20 && t_mid < 600_000, "{t_mid}");
    // A small job that stalls times out at its own limit, not at the configured cap.
    let dir = tempfile::tempdir().unwrap();
    let (mut c, keys) = network(dir.path(), 5);
    let client = Identity::generate().unwrap().public_key();
    c.submit(&client, request(), small, T0 + 1).unwrap();
    start(&mut c, &keys, &client, T0 + 2);
    let t = T0 + 2 + c.config().min_running_timeout_ms + 1;
    for k in &keys {
        heartbeat(&mut c, k, t);
    }
    c.tick(t).unwrap();
    let view = c.job_view(1).unwrap();
    let cause = view.history.iter().find_map(|t| t.cause.clone()).unwrap();
    assert_eq!(cause, "timeout in phase running");
    assert!(c.config().running_timeout_ms > 10 * c.config().min_running_timeout_ms);
}

#[test]
fn an_operator_at_its_share_of_the_roles_in_flight_gets_no_new_role() {
    let dir = tempfile::tempdir().unwrap();
    let operators: Vec<Identity> = (0..5).map(|_| Identity::generate().unwrap()).collect();
    let refs: Vec<&Identity> = operators.iter().collect();
    let mut config = admitting(dir.path(), &refs, 0);
    if let Some(a) = config.admission.as_mut() {
        a.max_role_share = 0.2;
    }
    let mut c = Coordinator::open(config, Identity::generate().unwrap(), T0).unwrap();
    for (i, o) in operators.iter().enumerate() {
        let n = Identity::generate().unwrap();
        admit(&mut c, i, &n, chain(o, n.public_key(), VALID_UNTIL_S));
    }
    admit_all(&mut c, T0);
    let client = Identity::generate().unwrap().public_key();
    let demand = demand_for(&request(), None).unwrap();
    // The first committee seats four of the five operators (one role each, 4 in flight).
    assert_eq!(
        c.submit(&client, request(), demand, T0 + 1).unwrap().phase,
        "scheduled"
    );
    // With 8 roles in flight after a second committee, a fifth is floor(0.2 x 8) = 1 role: the four
    // seated operators are at their share, so the second job waits.
    let second = c.submit(&client, request(), demand, T0 + 2).unwrap();
    assert_eq!(second.phase, "submitted", "{second:?}");
    // Once the first is cancelled (its roles released), the second is placed.
    c.cancel(&client, 1, T0 + 3).unwrap();
    for k in c
        .nodes()
        .iter()
        .map(|n| n.public_key.parse::<PublicKey>().unwrap())
    {
        heartbeat(&mut c, &k, T0 + 4);
    }
    c.tick(T0 + 4).unwrap();
    assert_eq!(c.job_view(second.id).unwrap().phase, "scheduled");
}

#[test]
fn a_client_lists_only_its_own_jobs_a_bounded_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::open(config(dir.path()), Identity::generate().unwrap(), T0).unwrap();
    let (alice, bob) = (
        Identity::generate().unwrap().public_key(),
        Identity::generate().unwrap().public_key(),
    );
    let demand = demand_for(&request(), None).unwrap();
    for i in 0..5 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        c.submit(who, request(), demand, T0 + i).unwrap();
    }
    let ids = |v: Vec<JobView>| v.iter().map(|j| j.id).collect::<Vec<u64>>();
    assert_eq!(ids(c.jobs_of(&alice, 0, 100)), [1, 3, 5]);
    assert_eq!(ids(c.jobs_of(&bob, 0, 100)), [2, 4]);
    // Pages: `after` the last id of the previous page.
    assert_eq!(ids(c.jobs_of(&alice, 0, 2)), [1, 3]);
    assert_eq!(ids(c.jobs_of(&alice, 3, 2)), [5]);
    assert_eq!(ids(c.jobs_of(&alice, 5, 2)), Vec::<u64>::new());
    assert_eq!(ids(c.jobs_of(&alice, u64::MAX, 2)), Vec::<u64>::new());
    let stranger = Identity::generate().unwrap().public_key();
    assert!(c.jobs_of(&stranger, 0, 100).is_empty());
}

#[test]
fn finished_jobs_are_pruned_after_the_retention_but_never_the_newest_and_not_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.job_retention_ms = 10_000;
    let mut c = Coordinator::open(cfg.clone(), Identity::generate().unwrap(), T0).unwrap();
    let client = Identity::generate().unwrap().public_key();
    let demand = demand_for(&request(), None).unwrap();
    for i in 0..3 {
        c.submit(&client, request(), demand, T0 + i).unwrap();
    }
    // Jobs 1 and 3 finish (cancelled) at T0 + 10; job 2 stays live.
    c.cancel(&client, 1, T0 + 10).unwrap();
    c.cancel(&client, 3, T0 + 10).unwrap();
    c.tick(T0 + 10 + 9_999).unwrap();
    assert!(c.job_view(1).is_ok(), "kept until the retention has passed");
    c.tick(T0 + 10 + 10_000).unwrap();
    assert_eq!(kind(c.job_view(1)), Some(ErrorKind::NotFound));
    assert!(c.job_view(2).is_ok(), "a live job is never pruned");
    assert!(
        c.job_view(3).is_ok(),
        "the newest job is kept: ids are never reused"
    );
    let ids: Vec<u64> = c.jobs_of(&client, 0, 100).iter().map(|j| j.id).collect();
    assert_eq!(ids, [2, 3]);
    // The pruning was committed: a restart does not bring job 1 back, and numbers new jobs after 3.
    drop(c);
    let mut c = Coordinator::open(cfg, Identity::generate().unwrap(), T0 + 20_000).unwrap();
    assert_eq!(kind(c.job_view(1)), Some(ErrorKind::NotFound));
    assert!(c.job_view(2).is_ok() && c.job_view(3).is_ok());
    assert_eq!(
        c.submit(&client, request(), demand, T0 + 20_001)
            .unwrap()
            .id,
        4
    );
}

#[test]
fn regions_and_asns_outside_the_allow_lists_are_refused_with_403() {
    let dir = tempfile::tempdir().unwrap();
    let operator = Identity::generate().unwrap();
    let mut config = admitting(dir.path(), &[&operator], 0);
    if let Some(a) = config.admission.as_mut() {
        a.regions = vec!["eu-west".into()];
        a.asns = vec![64512];
    }
    let mut c = Coordinator::open(config, Identity::generate().unwrap(), T0).unwrap();
    let register = |c: &mut Coordinator, region: Option<&str>, claimed: &str, asn: Option<u32>| {
        let node = Identity::generate().unwrap();
        let cert = Certificate::issue(
            &operator,
            CertKind::Node,
            node.public_key(),
            VALID_UNTIL_S,
            region.map(String::from),
            None,
        )
        .unwrap();
        let mut reg = registration(0, &node);
        reg.region = claimed.into();
        reg.asn = asn;
        reg.certificate = Some(
            CertificateChain {
                node: cert,
                admission: None,
            }
            .to_text(),
        );
        c.register(&node.public_key(), reg, T0)
    };
    // The certified region counts, not the claim.
    let err = register(&mut c, Some("moon"), "eu-west", Some(64512)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(err.to_string().contains("\"moon\""), "{err}");
    // Without a certified region the claim must be listed.
    assert!(register(&mut c, None, "r-1500", Some(64512)).is_err());
    // An ASN outside the list, or none, is refused.
    let err = register(&mut c, Some("eu-west"), "x", Some(1)).unwrap_err();
    assert!(err.to_string().contains("ASN"), "{err}");
    assert!(register(&mut c, Some("eu-west"), "x", None).is_err());
    register(&mut c, Some("eu-west"), "x", Some(64512)).unwrap();
    register(&mut c, None, "eu-west", Some(64512)).unwrap();
    assert_eq!(c.nodes().len(), 2);
}

#[test]
fn measured_rtts_are_persisted_in_batches_not_with_every_heartbeat() {
    use super::RTT_PERSIST_INTERVAL_MS;
    use veil_node::api::RttReport;
    let dir = tempfile::tempdir().unwrap();
    let rtt_heartbeats = |c: &mut Coordinator, keys: &[PublicKey], now: Millis| {
        for (me, peer, rtt_us) in [(0, 1, 5_000), (1, 0, 6_000)] {
            let req = HeartbeatRequest {
                ready: true,
                load: 0.0,
                queue_len: 0,
                rtts: vec![RttReport {
                    peer: keys[peer].to_string(),
                    rtt_us,
                }],
                wait_ms: 0,
                seen: None,
            };
            c.heartbeat(&keys[me], req, now).unwrap();
        }
    };
    let measured = |c: &Coordinator, key: &PublicKey| {
        c.nodes()
            .into_iter()
            .find(|n| n.public_key == key.to_string())
            .unwrap()
            .measured_rtts
    };
    let keys = {
        let (mut c, keys) = network(dir.path(), 3);
        rtt_heartbeats(&mut c, &keys, T0 + 10);
        c.tick(T0 + 20).unwrap();
        // Each node's own reports are in memory at once.
        assert_eq!(measured(&c, &keys[0]).len(), 1);
        assert_eq!(measured(&c, &keys[0])[0].1, 5_000);
        assert_eq!(measured(&c, &keys[1])[0].1, 6_000);
        keys
    };
    // Not yet persisted: a restart within the interval has no measured RTT.
    let keys = {
        let mut c =
            Coordinator::open(config(dir.path()), Identity::generate().unwrap(), T0 + 30).unwrap();
        assert!(measured(&c, &keys[0]).is_empty());
        rtt_heartbeats(&mut c, &keys, T0 + 40);
        c.tick(T0 + 40 + RTT_PERSIST_INTERVAL_MS).unwrap();
        keys
    };
    // After the interval's tick they are.
    let c = Coordinator::open(
        config(dir.path()),
        Identity::generate().unwrap(),
        T0 + 50 + RTT_PERSIST_INTERVAL_MS,
    )
    .unwrap();
    assert_eq!(measured(&c, &keys[0]).len(), 1);
    assert_eq!(measured(&c, &keys[0])[0].1, 5_000);
    assert_eq!(measured(&c, &keys[1])[0].1, 6_000);
}

#[test]
fn a_failed_commit_is_kept_and_written_before_the_next_one() {
    use crate::blobs::Blobs;
    use crate::store::{RedbStore, Snapshot, StateStore};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use veil_scheduler::{Batch, Config, StoreError};

    /// redb, refusing every commit while `failing` is set (a full disk, say).
    struct Flaky {
        inner: RedbStore,
        failing: Arc<AtomicBool>,
    }
    impl StateStore for Flaky {
        fn load(&self, default: Config, kinds: &[&'static str]) -> Result<Snapshot, StoreError> {
            self.inner.load(default, kinds)
        }
        fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Corrupt {
                    table: "test",
                    key: "-".into(),
                    detail: "the disk is full".into(),
                });
            }
            self.inner.commit(batch)
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let store = Flaky {
        inner: RedbStore::open(&cfg.data_dir.join("state.redb")).unwrap(),
        failing: failing.clone(),
    };
    let blobs = Blobs::new(cfg.data_dir.join("blobs"));
    let mut c =
        Coordinator::with_store(cfg.clone(), Identity::generate().unwrap(), store, blobs, T0)
            .unwrap();
    let ids: Vec<Identity> = (0..2).map(|_| Identity::generate().unwrap()).collect();
    // The registration's commit fails: the caller hears of it.
    assert!(c
        .register(&ids[0].public_key(), registration(0, &ids[0]), T0)
        .is_err());
    // The store recovers; the next call's persist writes the kept commit, then its own.
    failing.store(false, Ordering::SeqCst);
    c.register(&ids[1].public_key(), registration(1, &ids[1]), T0 + 1)
        .unwrap();
    drop(c);
    let c = Coordinator::open(cfg, Identity::generate().unwrap(), T0 + 2).unwrap();
    let mut stored: Vec<String> = c.nodes().into_iter().map(|n| n.public_key).collect();
    stored.sort();
    let mut want: Vec<String> = ids.iter().map(|i| i.public_key().to_string()).collect();
    want.sort();
    assert_eq!(stored, want);
}

/// A `spdz2k` job on a network of 5 whose members all accepted: the coordinator, the nodes' identities, the
/// job's view, its client and the run id its evidence is bound to.
struct AcceptedSpdz2kJob {
    c: Coordinator,
    ids: Vec<Identity>,
    committee: veil_node::api::CommitteeView,
    client: PublicKey,
    run: [u8; 32],
}

impl AcceptedSpdz2kJob {
    fn new(dir: &std::path::Path) -> AcceptedSpdz2kJob {
        let (mut c, ids) = network_with_identities(dir, 5);
        let client = Identity::generate().unwrap().public_key();
        let mut req = request();
        req.protocol = "spdz2k".into();
        let demand = demand_for(&req, None).unwrap();
        let view = c.submit(&client, req, demand, T0 + 1).unwrap();
        let committee = view.committee.clone().unwrap();
        let dealer: PublicKey = committee
            .dealer
            .as_ref()
            .unwrap()
            .public_key
            .parse()
            .unwrap();
        let task = heartbeat(&mut c, &dealer, T0 + 1)
            .tasks
            .into_iter()
            .find(|t| t.job == 1)
            .unwrap();
        let signed: veil_node::manifest::SignedManifest =
            postcard::from_bytes(&hex::decode(&task.manifest).unwrap()).unwrap();
        let run = veil_node::evidence::run_id(&signed).unwrap();
        for m in members(&view) {
            c.task_accepted(&m.parse().unwrap(), 1, 1, T0 + 2).unwrap();
        }
        AcceptedSpdz2kJob {
            c,
            ids,
            committee,
            client,
            run,
        }
    }

    /// The identity of the node whose key is `hex`.
    fn identity(&self, hex: &str) -> &Identity {
        self.ids
            .iter()
            .find(|i| i.public_key().to_string() == hex)
            .unwrap()
    }

    fn upload_inputs(&mut self) {
        for p in 0..2 {
            self.c
                .upload_input(&self.client, 1, 1, p, b"in".to_vec(), T0 + 2)
                .unwrap();
        }
    }
}

/// [`AcceptedSpdz2kJob`] run to `verifying` with evidence signed by its members as nodes sign it (the owner
/// material, each party's output, and a transcript that is not a valid MAC-check view), each upload checked
/// as the HTTP edge checks it.
fn verifying_spdz2k_job(dir: &std::path::Path) -> AcceptedSpdz2kJob {
    use veil_node::evidence::{self, EvidenceKind};
    let mut job = AcceptedSpdz2kJob::new(dir);
    let dealer = job.identity(&job.committee.dealer.as_ref().unwrap().public_key);
    let parties = job.committee.parties.len() as u32;
    let owner = evidence::seal(
        dealer,
        EvidenceKind::OwnerMaterial,
        &job.run,
        parties,
        b"owner".to_vec(),
    );
    let dealer = dealer.public_key();
    job.c
        .upload_slot(&dealer, 1, 1, Direction::Owner)
        .unwrap()
        .check(&owner)
        .unwrap();
    job.c.task_owner(&dealer, 1, 1, owner).unwrap();
    job.upload_inputs();
    for (i, p) in job.committee.parties.clone().iter().enumerate() {
        let id = job.identity(&p.public_key);
        let k = id.public_key();
        let transcript = evidence::seal(
            id,
            EvidenceKind::Transcript,
            &job.run,
            i as u32,
            vec![0xff; 8],
        );
        let output = evidence::seal(id, EvidenceKind::Output, &job.run, i as u32, vec![i as u8]);
        for (dir, blob) in [
            (Direction::Transcript, &transcript),
            (Direction::Output, &output),
        ] {
            job.c
                .upload_slot(&k, 1, 1, dir)
                .unwrap()
                .check(blob)
                .unwrap();
        }
        job.c.task_transcript(&k, 1, 1, transcript, T0 + 3).unwrap();
        job.c.task_output(&k, 1, 1, output, T0 + 3).unwrap();
    }
    assert_eq!(job.c.job_view(1).unwrap().phase, "verifying");
    job
}

fn mac_check_failed() -> TaskFailure {
    TaskFailure {
        reason: "MAC check failed".into(),
        rejected_input: false,
        verification_failed: true,
    }
}

fn failures_of(c: &Coordinator, key: &str) -> u64 {
    c.nodes()
        .into_iter()
        .find(|n| n.public_key == key)
        .unwrap()
        .failures
}

#[test]
fn a_verifiers_failed_verification_is_rechecked_on_the_stored_transcripts() {
    let dir = tempfile::tempdir().unwrap();
    let AcceptedSpdz2kJob {
        mut c, committee, ..
    } = verifying_spdz2k_job(dir.path());
    let key = |hex: &str| hex.parse::<PublicKey>().unwrap();
    let failure = mac_check_failed();
    // Only the verifier may report it.
    let party = key(&committee.parties[0].public_key);
    assert_eq!(
        kind(c.task_failed(&party, 1, 1, &failure, T0 + 4)),
        Some(ErrorKind::Forbidden)
    );
    c.task_failed(
        &key(&committee.verifier.as_ref().unwrap().public_key),
        1,
        1,
        &failure,
        T0 + 4,
    )
    .unwrap();
    // The coordinator's own re-check of the stored transcripts fails too: the parties are blamed, not
    // the verifier.
    let view = c.job_view(1).unwrap();
    assert_eq!(view.attempt, 2);
    let mut blamed: Vec<u32> = committee.parties.iter().map(|p| p.node).collect();
    blamed.sort_unstable();
    let mut excluded = view.excluded.clone();
    excluded.sort_unstable();
    assert_eq!(excluded, blamed);
    assert_eq!(
        failures_of(&c, &committee.verifier.as_ref().unwrap().public_key),
        0
    );
}

#[test]
fn evidence_changed_in_the_coordinators_keeping_blames_nobody() {
    for dir_kind in [Direction::Output, Direction::Transcript, Direction::Owner] {
        let dir = tempfile::tempdir().unwrap();
        let AcceptedSpdz2kJob {
            mut c, committee, ..
        } = verifying_spdz2k_job(dir.path());
        // The stored blob changes on disk after it was checked and stored (its last byte flipped).
        let blob = BlobKey {
            job: 1,
            attempt: 1,
            dir: dir_kind,
            index: 0,
        };
        let mut bytes = c.blobs().get(&blob).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        c.blobs().put(&blob, &bytes).unwrap();
        let verifier: PublicKey = committee
            .verifier
            .as_ref()
            .unwrap()
            .public_key
            .parse()
            .unwrap();
        c.task_failed(&verifier, 1, 1, &mac_check_failed(), T0 + 4)
            .unwrap();
        // The attempt is retried, and no member is blamed: not the verifier, not the parties.
        let view = c.job_view(1).unwrap();
        assert_eq!(view.attempt, 2, "{dir_kind:?}");
        assert!(
            view.excluded.is_empty(),
            "{dir_kind:?}: {:?}",
            view.excluded
        );
        for m in committee
            .parties
            .iter()
            .chain(committee.verifier.as_ref())
            .chain(committee.dealer.as_ref())
        {
            assert_eq!(failures_of(&c, &m.public_key), 0, "{dir_kind:?}");
        }
    }
}

#[test]
fn an_upload_that_is_not_its_members_signed_evidence_is_refused() {
    use veil_node::evidence::{self, EvidenceKind};
    let dir = tempfile::tempdir().unwrap();
    let mut job = AcceptedSpdz2kJob::new(dir.path());
    job.upload_inputs();
    let (p0, p1) = (
        job.identity(&job.committee.parties[0].public_key),
        job.identity(&job.committee.parties[1].public_key),
    );
    let run = job.run;
    let slot = job
        .c
        .upload_slot(&p0.public_key(), 1, 1, Direction::Output)
        .unwrap();
    let good = evidence::seal(p0, EvidenceKind::Output, &run, 0, b"out".to_vec());
    slot.check(&good).unwrap();
    let refused = [
        // Signed by another member.
        evidence::seal(p1, EvidenceKind::Output, &run, 0, b"out".to_vec()),
        // Another member's slot.
        evidence::seal(p0, EvidenceKind::Output, &run, 1, b"out".to_vec()),
        // Another kind.
        evidence::seal(p0, EvidenceKind::Transcript, &run, 0, b"out".to_vec()),
        // Another run.
        evidence::seal(p0, EvidenceKind::Output, &[7; 32], 0, b"out".to_vec()),
        // Not signed evidence at all, or with a byte appended.
        b"out".to_vec(),
        [good.as_slice(), &[0]].concat(),
    ];
    for bytes in refused {
        let err = slot.check(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    }
    // A non-party has no output slot, and a party no owner slot.
    let dealer: PublicKey = job
        .committee
        .dealer
        .as_ref()
        .unwrap()
        .public_key
        .parse()
        .unwrap();
    assert_eq!(
        kind(job.c.upload_slot(&dealer, 1, 1, Direction::Output)),
        Some(ErrorKind::Forbidden)
    );
    assert_eq!(
        kind(job.c.upload_slot(&p0.public_key(), 1, 1, Direction::Owner)),
        Some(ErrorKind::Forbidden)
    );
}

/// Registers `id` as node `i` of operator `op-{operator}` claiming `cores` cores.
fn enrol(c: &mut Coordinator, i: usize, operator: usize, id: &Identity, cores: u32, now: Millis) {
    let mut reg = registration(i, id);
    reg.operator = format!("op-{operator}");
    reg.hardware.cores = cores;
    c.register(&id.public_key(), reg, now).unwrap();
}

fn view_of(c: &Coordinator, key: &PublicKey) -> NodeView {
    c.nodes()
        .into_iter()
        .find(|n| n.public_key == key.to_string())
        .unwrap()
}

/// The one trial the replies show.
fn only_trial(c: &mut Coordinator, now: Millis) -> SeenTrial {
    let mut seen = trials_seen(c, now);
    assert_eq!(seen.len(), 1, "one trial");
    seen.pop_first().unwrap().1
}

#[test]
fn a_trial_waits_for_an_examiner_of_another_operator_and_a_dealer_and_bootstrap_pairs_examine_each_other(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::open(config(dir.path()), Identity::generate().unwrap(), T0).unwrap();
    let ids: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
    let keys: Vec<PublicKey> = ids.iter().map(Identity::public_key).collect();
    // Alone: no examiner.
    enrol(&mut c, 0, 0, &ids[0], 4, T0);
    assert!(trials_seen(&mut c, T0).is_empty());
    // Another operator's node could examine, but nobody is left to deal.
    enrol(&mut c, 1, 1, &ids[1], 4, T0);
    assert!(trials_seen(&mut c, T0).is_empty());
    for k in &keys[..2] {
        assert_eq!(view_of(&c, k).state, "probation");
    }
    // A second node of operator 0 deals; the two operators' nodes examine each other.
    enrol(&mut c, 2, 0, &ids[2], 4, T0);
    let t = only_trial(&mut c, T0);
    let parties = [t.member(0), t.member(1)];
    assert!(
        parties.contains(&keys[1]),
        "the only other operator examines"
    );
    assert!(parties.iter().any(|p| *p == keys[0] || *p == keys[2]));
    assert!(!parties.contains(&t.member(2)));
    assert!(!t.task.go);
    for m in t.members.iter().flatten() {
        c.trial_accepted(m, t.task.id).unwrap();
    }
    let seen = trials_seen(&mut c, T0);
    assert!(seen[&t.task.id].task.go, "every member accepted: go");
    let shares = shares_of(&t.task);
    assert!(
        matches!(
            report_trial(&mut c, &t, shares, [0.02, 0.01], [None, None], T0),
            TrialStep::Check(_)
        ),
        "the check runs on the second report"
    );
    for p in parties {
        let v = view_of(&c, &p);
        assert_eq!(v.state, "active", "both passed: {v:?}");
        assert!(v.measured_ops_per_s.is_some());
    }
    // The dealer of operator 0 is examined by the active node of operator 1, not by its operator's.
    let dealer = t.member(2);
    let seen = trials_seen(&mut c, T0);
    let next = seen
        .values()
        .find(|s| s.members[0] == Some(dealer))
        .expect("the dealer's own trial");
    assert_eq!(next.member(1), keys[1]);
    // A node that is not a member accepts nothing.
    let stranger = Identity::generate().unwrap();
    enrol(&mut c, 3, 3, &stranger, 4, T0);
    assert_eq!(
        kind(c.trial_accepted(&stranger.public_key(), next.task.id)),
        Some(ErrorKind::Conflict)
    );
}

#[test]
fn a_passed_trial_records_the_examiners_measurement_and_the_larger_rtt_and_selection_uses_the_smaller(
) {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, keys) = network(dir.path(), 4);
    // A node of operator 0 claiming 1024 cores: operator 0's active node may not examine it.
    let subject = Identity::generate().unwrap();
    enrol(&mut c, 9, 0, &subject, 1024, T0);
    let t = only_trial(&mut c, T0);
    assert_eq!(t.member(0), subject.public_key());
    assert_ne!(t.member(1), keys[0], "an examiner of another operator");
    assert_ne!(t.member(2), subject.public_key());
    for m in t.members.iter().flatten() {
        c.trial_accepted(m, t.task.id).unwrap();
    }
    // The subject claims it was fast; the examiner's clock says otherwise: the larger counts.
    let shares = shares_of(&t.task);
    report_trial(
        &mut c,
        &t,
        shares,
        [0.001, 0.05],
        [Some(1_000), Some(3_000)],
        T0,
    );
    let model = veil_node::trial::model_of(&t.task.workload, t.task.model_seed).unwrap();
    let ops = veil_node::trial::ops_of(&veil_node::trial::plan_of(&model).unwrap());
    let v = view_of(&c, &subject.public_key());
    assert_eq!(v.state, "active");
    let measured = (ops as f64 / 0.05).round() as u64;
    assert_eq!(v.measured_ops_per_s, Some(measured));
    assert_eq!(v.claimed_ops_per_s, 1_024_000_000_000);
    assert_eq!(v.ops_per_s, measured, "selection uses the smaller");
    assert!(measured < v.claimed_ops_per_s);
    // The examiner's measurement is not changed by examining.
    assert_eq!(
        view_of(&c, &t.member(1)).measured_ops_per_s,
        Some((ops as f64 / 0.01).round() as u64)
    );
    // Both ends reported the RTT: the pair counts at the larger.
    let id = |k: PublicKey| c.registry.id_of(&k.to_string()).unwrap();
    assert_eq!(
        c.registry.rtt_us(id(subject.public_key()), id(t.member(1))),
        3_000
    );
    // Decided: the trial is gone, and a late report finds nothing.
    assert!(trials_seen(&mut c, T0).is_empty());
    let late = trial_report(&t.task, Vec::new(), 0.1, None);
    assert!(c.trial_report(&t.member(0), late, T0).is_err());
}

#[test]
fn an_active_examiner_rejects_a_wrong_answer_a_failure_and_a_silence_but_a_silent_examiner_does_not(
) {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _keys) = network(dir.path(), 4);
    let heartbeat_all = |c: &mut Coordinator, now: Millis| {
        trials_seen(c, now);
    };
    // A wrong answer.
    let wrong = Identity::generate().unwrap();
    enrol(&mut c, 10, 10, &wrong, 4, T0);
    let t = only_trial(&mut c, T0);
    let mut shares = shares_of(&t.task);
    shares[0][0] = shares[0][0].wrapping_add(1 << 20);
    report_trial(&mut c, &t, shares, [0.01, 0.01], [None, None], T0);
    assert_eq!(view_of(&c, &wrong.public_key()).state, "rejected");
    // The examiner reports that the subject failed.
    let failing = Identity::generate().unwrap();
    enrol(&mut c, 11, 11, &failing, 4, T0);
    let t = only_trial(&mut c, T0);
    let report = TrialReport {
        failure: Some("party 1: no answer from party 0".into()),
        ..trial_report(&t.task, Vec::new(), 0.0, None)
    };
    let (_, step) = c.trial_report(&t.member(1), report, T0).unwrap();
    assert_eq!(step, TrialStep::Decided);
    assert_eq!(view_of(&c, &failing.public_key()).state, "rejected");
    // A subject that never reports, past the trial timeout, with its examiner and dealer up.
    let silent = Identity::generate().unwrap();
    enrol(&mut c, 12, 12, &silent, 4, T0);
    let t = only_trial(&mut c, T0);
    let timeout = c.config().trial_timeout_ms;
    heartbeat_all(&mut c, T0 + timeout - 1);
    c.tick(T0 + timeout - 1).unwrap();
    assert_eq!(view_of(&c, &silent.public_key()).state, "probation");
    heartbeat_all(&mut c, T0 + timeout);
    c.tick(T0 + timeout).unwrap();
    assert_eq!(view_of(&c, &silent.public_key()).state, "rejected");
    assert!(c
        .trial_report(
            &t.member(1),
            trial_report(&t.task, Vec::new(), 0.0, None),
            T0 + timeout
        )
        .is_err());
    // A trial whose examiner went silent is given up without blame; the subject is paired again.
    let later = T0 + 10 * timeout;
    let unlucky = Identity::generate().unwrap();
    enrol(&mut c, 13, 13, &unlucky, 4, later);
    let t = only_trial(&mut c, later);
    let examiner = t.member(1);
    let end = later + timeout;
    for n in c.nodes() {
        let k: PublicKey = n.public_key.parse().unwrap();
        if k != examiner {
            heartbeat(&mut c, &k, end);
        }
    }
    c.tick(end).unwrap();
    assert_eq!(view_of(&c, &unlucky.public_key()).state, "probation");
    let again = only_trial(&mut c, end);
    assert_eq!(again.member(0), unlucky.public_key());
    assert_ne!(again.task.id, t.task.id);
}

#[test]
fn a_bootstrap_pair_that_disagrees_or_times_out_stays_on_probation_and_a_wrong_pair_is_not_paired_again(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::open(config(dir.path()), Identity::generate().unwrap(), T0).unwrap();
    let ids: Vec<Identity> = (0..4).map(|_| Identity::generate().unwrap()).collect();
    for (i, id) in ids.iter().enumerate() {
        enrol(&mut c, i, i, id, 4, T0);
    }
    let seen = trials_seen(&mut c, T0);
    assert_eq!(seen.len(), 2, "two bootstrap pairs among four nodes");
    let t = seen.values().next().unwrap();
    let pair = [t.member(0), t.member(1)];
    let mut shares = shares_of(&t.task);
    shares[1][0] = shares[1][0].wrapping_add(1 << 20);
    report_trial(&mut c, t, shares, [0.01, 0.01], [None, None], T0);
    for p in &pair {
        assert_eq!(view_of(&c, p).state, "probation", "neither is blamed");
    }
    // The other pair times out: given up without blame.
    let timeout = c.config().trial_timeout_ms;
    for k in ids.iter().map(Identity::public_key) {
        heartbeat(&mut c, &k, T0 + timeout);
    }
    c.tick(T0 + timeout).unwrap();
    for id in &ids {
        assert_eq!(view_of(&c, &id.public_key()).state, "probation");
    }
    // Paired afresh: the pair that disagreed is not paired together again.
    let now = T0 + timeout + 1;
    for t in trials_seen(&mut c, now).values() {
        let p = [t.member(0), t.member(1)];
        assert!(
            !(p.contains(&pair[0]) && p.contains(&pair[1])),
            "the pair that disagreed is paired again"
        );
    }
}

#[test]
fn an_active_node_without_a_measurement_is_reexamined_without_blame_and_then_measured() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, keys) = network(dir.path(), 4);
    // Node 0 as a coordinator of before the measured trial left it: active, no measurement.
    c.update(|core| {
        let mut records = core.registry.records();
        records[0].registration.hardware.measured_ops_per_s = None;
        let regions = Some(core.registry.region_snapshot());
        let config = core.registry.config().clone();
        core.registry =
            veil_scheduler::Registry::from_records(config, records, regions, &[]).unwrap();
        Ok(())
    })
    .unwrap();
    let now = T0 + 1;
    let t = only_trial(&mut c, now);
    assert_eq!(t.member(0), keys[0]);
    assert!(keys[1..].contains(&t.member(1)), "an active examiner");
    // A wrong answer does not reject an active node; it is examined again only after the backoff.
    let mut shares = shares_of(&t.task);
    shares[0][0] ^= 1 << 30;
    report_trial(&mut c, &t, shares, [0.01, 0.01], [None, None], now);
    let v = view_of(&c, &keys[0]);
    assert_eq!((v.state.as_str(), v.measured_ops_per_s), ("active", None));
    assert!(trials_seen(&mut c, now + 1).is_empty());
    let later = now + super::trials::REEXAM_BACKOFF * c.config().trial_timeout_ms;
    let t = only_trial(&mut c, later);
    assert_eq!(t.member(0), keys[0]);
    let shares = shares_of(&t.task);
    report_trial(&mut c, &t, shares, [0.02, 0.01], [None, None], later);
    let v = view_of(&c, &keys[0]);
    assert_eq!(v.state, "active");
    assert!(v.measured_ops_per_s.is_some());
    assert_eq!(v.ops_per_s, v.measured_ops_per_s.unwrap());
}

/// The shipped cnn.onnx's graph: elements of all its tensors, and its nodes.
const CNN_ELEMENTS: u64 = 499;
const CNN_NODES: u32 = 7;

/// An ONNX deployment of `file` (shipped under `models/onnx`), and the file.
fn onnx_deployment(file: &str) -> (veil_node::api::DeployRequest, Vec<u8>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/onnx")
        .join(file);
    let bytes = std::fs::read(path).unwrap();
    let req = veil_node::api::DeployRequest {
        id: veil_node::onnx_model::model_id(&bytes),
        architecture: String::new(),
        weights: "public".into(),
        parties: 3,
        frac_bits: 16,
        protocol: "spdz2k".into(),
        pretrained: None,
        onnx: true,
        onnx_file: None,
    };
    (req, bytes)
}

#[test]
fn an_onnx_deployment_is_imported_once_and_pinned_by_its_hash() {
    let (good, bytes) = onnx_deployment("cnn.onnx");
    let file = super::check_onnx(&good, &bytes).unwrap();
    // The shipped cnn.onnx: its size and the imported graph's figures, recorded once.
    assert_eq!(
        file,
        veil_node::api::OnnxFile {
            bytes: 1751,
            elements: CNN_ELEMENTS,
            nodes: CNN_NODES,
        }
    );
    // Another id than the file's hash, secret weights, a file in the deployment, or an operator veil
    // cannot run: refused.
    let mut wrong_id = good.clone();
    wrong_id.id = "ab".repeat(32);
    let err = super::check_onnx(&wrong_id, &bytes).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(
        err.to_string().contains("does not hash to model id"),
        "{err}"
    );
    let mut shared = good.clone();
    shared.weights = "shared".into();
    assert_eq!(
        kind(super::check_onnx(&shared, &bytes)),
        Some(ErrorKind::Invalid)
    );
    let mut inline = good.clone();
    inline.architecture = hex::encode(&bytes);
    assert_eq!(
        kind(super::check_onnx(&inline, &bytes)),
        Some(ErrorKind::Invalid)
    );
    let (unsupported, unsupported_bytes) = onnx_deployment("unsupported.onnx");
    let unsupported = super::check_onnx(&unsupported, &unsupported_bytes).unwrap_err();
    assert!(
        unsupported.to_string().contains("unsupported operator"),
        "{unsupported}"
    );
    // A truncated file, or bytes that are not ONNX at all, hashed under their own id: refused by the
    // importer, with its message.
    for garbage in [
        &bytes[..bytes.len() / 2],
        b"not an onnx file at all".as_slice(),
    ] {
        let mut req = good.clone();
        req.id = veil_node::onnx_model::model_id(garbage);
        let err = super::check_onnx(&req, garbage).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert!(err.to_string().starts_with("model:"), "{err}");
    }
    // The core records a deployment only with its checked file.
    assert_eq!(
        kind(super::check_onnx_fields(&good)),
        Some(ErrorKind::Invalid)
    );
    let mut recorded = good.clone();
    recorded.onnx_file = Some(file);
    assert_eq!(super::check_onnx_fields(&recorded).unwrap(), file);

    // A job's demand comes from the graph: one item per inference, scaled by the inferences.
    let request = |batch: u32, inferences: u32| SubmitRequest {
        workload: "onnx".into(),
        model_seed: 0,
        weights: "public".into(),
        frac_bits: 16,
        batch,
        inferences,
        parties: 3,
        model: Some(good.id.clone()),
        output_key: None,
        protocol: "spdz2k".into(),
        stage: None,
        threads: None,
        shaping: None,
    };
    let one = super::onnx_demand_for(&request(1, 1), &file).unwrap();
    let four = super::onnx_demand_for(&request(1, 4), &file).unwrap();
    assert_eq!(four.party.ops, 4 * one.party.ops);
    assert_eq!(four.rounds, 4 * one.rounds);
    assert_eq!(one.rounds, 8 * CNN_NODES);
    assert_eq!(one.party.ops, 2 * CNN_ELEMENTS);
    assert_eq!(
        kind(super::onnx_demand_for(&request(2, 1), &file)),
        Some(ErrorKind::Invalid)
    );
    // Workload onnx on anything but an ONNX deployment: refused.
    assert_eq!(
        kind(demand_for(&request(1, 1), None)),
        Some(ErrorKind::Invalid)
    );
}

/// A node's heartbeat as a long poll: `seen` the tag it last got, held up to `wait_ms`.
fn long_poll(seen: Option<String>, wait_ms: u64) -> HeartbeatRequest {
    HeartbeatRequest {
        ready: true,
        load: 0.0,
        queue_len: 0,
        rtts: Vec::new(),
        wait_ms,
        seen,
    }
}

#[test]
fn a_held_heartbeat_answers_when_a_task_is_assigned_and_unchanged_when_its_wait_ends() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let (c, keys) = network(dir.path(), 5);
    let shared: crate::http::Shared = Arc::new(Mutex::new(c));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hold = |key: PublicKey, req: HeartbeatRequest| {
        let s = shared.clone();
        runtime.spawn(async move {
            let started = Instant::now();
            let reply = crate::http::held_heartbeat(&s, key, req).await;
            (reply.map_err(|_| ()).unwrap(), started.elapsed())
        })
    };
    // A first heartbeat (nothing seen yet) is answered at once, tagged.
    let (first, _) = runtime
        .block_on(hold(keys[0], long_poll(None, 60_000)))
        .unwrap();
    let tag = first.tag.clone().unwrap();
    assert!(first.tasks.is_empty());
    // Nothing changes: held for its whole wait, then answered with the same reply.
    let (quiet, took) = runtime
        .block_on(hold(keys[0], long_poll(Some(tag.clone()), 600)))
        .unwrap();
    assert_eq!(quiet.tag.as_deref(), Some(tag.as_str()));
    // It says how long it was held (a node's round-trip metric leaves that out); the first was not.
    assert!(quiet.held_ms >= 550, "held {} ms", quiet.held_ms);
    assert_eq!(first.held_ms, 0);
    assert!(quiet.tasks.is_empty());
    assert!(
        took >= Duration::from_millis(550),
        "answered after {took:?}"
    );
    // A tag the node has not seen (a changed reply) is answered at once, without a wait.
    let (stale, took) = runtime
        .block_on(hold(keys[0], long_poll(Some("old".into()), 60_000)))
        .unwrap();
    assert_eq!(stale.tag.as_deref(), Some(tag.as_str()));
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    // Every node waits (up to the coordinator's cap, 5 s); a job submitted meanwhile reaches each member
    // of its committee well before that.
    let tags: Vec<String> = keys
        .iter()
        .map(|k| {
            let (r, _) = runtime.block_on(hold(*k, long_poll(None, 0))).unwrap();
            r.tag.unwrap()
        })
        .collect();
    let waiting: Vec<_> = keys
        .iter()
        .zip(&tags)
        .map(|(k, t)| hold(*k, long_poll(Some(t.clone()), 60_000)))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let client = Identity::generate().unwrap().public_key();
    let demand = demand_for(&request(), None).unwrap();
    let view = {
        let mut c = shared.lock().unwrap();
        c.submit(&client, request(), demand, crate::http::now_ms())
            .unwrap()
    };
    let members = members(&view);
    assert_eq!(members.len(), 3);
    for (i, w) in waiting.into_iter().enumerate() {
        let member = members.contains(&keys[i].to_string());
        if !member {
            // Not in the committee: answered only at the end of the wait, unchanged.
            w.abort();
            continue;
        }
        let (reply, took) = runtime.block_on(w).unwrap();
        assert_eq!(reply.tasks.len(), 1, "member {i}");
        assert!(!reply.tasks[0].go);
        assert_ne!(reply.tag, Some(tags[i].clone()));
        assert!(
            took < Duration::from_millis(4_000),
            "member {i} after {took:?}"
        );
    }
}

#[test]
fn a_held_job_status_answers_when_the_job_moves_and_unchanged_when_its_wait_ends() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use veil_node::api::JobWait;
    let dir = tempfile::tempdir().unwrap();
    let (c, keys) = network(dir.path(), 5);
    let shared: crate::http::Shared = Arc::new(Mutex::new(c));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = Identity::generate().unwrap().public_key();
    let now = crate::http::now_ms();
    for k in &keys {
        heartbeat(&mut shared.lock().unwrap(), k, now);
    }
    let demand = demand_for(&request(), None).unwrap();
    let scheduled = shared
        .lock()
        .unwrap()
        .submit(&client, request(), demand, now)
        .unwrap();
    assert_eq!(scheduled.phase, "scheduled");
    let hold = |wait: JobWait| {
        let s = shared.clone();
        runtime.spawn(async move {
            let started = Instant::now();
            let view = crate::http::held_job_view(&s, 1, wait).await;
            (view.map_err(|_| ()).unwrap(), started.elapsed())
        })
    };
    // A status the caller has not seen yet is answered at once.
    let (view, took) = runtime
        .block_on(hold(JobWait {
            wait_ms: 60_000,
            phase: "submitted".into(),
            attempt: 0,
            owner_ready: false,
        }))
        .unwrap();
    assert_eq!(view.phase, "scheduled");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    // Nothing moves: held for the whole wait, then answered unchanged.
    let (view, took) = runtime
        .block_on(hold(JobWait::past(&scheduled, 600)))
        .unwrap();
    assert_eq!(view.phase, "scheduled");
    assert!(
        took >= Duration::from_millis(550),
        "answered after {took:?}"
    );
    // The job starts while the client waits (up to the cap, 5 s): answered well before that.
    let waiting = hold(JobWait::past(&scheduled, 60_000));
    std::thread::sleep(Duration::from_millis(200));
    start(
        &mut shared.lock().unwrap(),
        &keys,
        &client,
        crate::http::now_ms(),
    );
    let (view, took) = runtime.block_on(waiting).unwrap();
    assert_eq!(view.phase, "running");
    assert!(
        took < Duration::from_millis(4_000),
        "answered after {took:?}"
    );
}
