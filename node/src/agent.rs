//! The coordinator agent inside `veil node`: registers the node, heartbeats, takes part in trials (its
//! own, or another node's as examiner or dealer: [`crate::trial`]), and carries
//! out the tasks the heartbeat replies list (accept the manifest, wait for `go`, fetch the party's input
//! blob, compute over the node's QUIC links, return the output blob; or serve as dealer).
//!
//! Invariants: blobs are passed through without being logged; a task that disappears from the replies
//! (the attempt failed or was rescheduled) is dropped as soon as the agent notices, which ends the job on
//! the node; a network error, a 408, a 429 or a 5xx from the coordinator is retried with exponential
//! backoff (the coordinator may be restarting or overloaded) until the task disappears; every worker
//! thread ends once its task is done or dropped.
//!
//! Crashes and stops: a party or dealer task listed in the first heartbeat reply this process gets was
//! handed to a previous incarnation of the node (a fresh process has accepted nothing), whose QUIC
//! sessions, dealer material and opened inputs are gone: the agent reports it failed as a fault of this
//! node (never as a refused input), so the coordinator reschedules the job at once instead of waiting for a
//! timeout, and a restarted dealer can never deal a second, different set of material to a running
//! committee. A verifier task keeps no state, so a restarted verifier runs it again. A sealed
//! input found already opened (the replay record of a previous incarnation) is reported the same way. On
//! SIGTERM, [`Agent::hand_off`] reports every live task failed (a node fault, reason "node stopping") so
//! that its jobs move to new committees before the process exits.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{
    self, HardwareReport, HeartbeatReply, HeartbeatRequest, NodeView, RegisterRequest, RttReport,
    TaskFailure, TaskRole, TaskView, TrialAccepted, TrialReport, TrialTask,
};
use crate::api_client::{ApiClient, CallError};
use crate::config::CoordinatorLink;
use crate::envelope::Purpose;
use crate::evidence::{self, EvidenceKind};
use crate::inbox::{binding_for, seal_blob, Inbox, InboxError};
use crate::manifest::{Role, SignedManifest};
use crate::metrics::{TaskKind, TaskOutcome, METRICS};
use crate::operator::CertificateChain;
use crate::stage::{hand_off, take_over, StageInput, StageOutput};
use crate::trial;
use crate::wire::RunRequest;
use crate::{Identity, Node, NodeError};

/// A task's flags, shared between the heartbeat loop and its worker.
#[derive(Default)]
struct TaskFlags {
    go: AtomicBool,
    dropped: AtomicBool,
    /// Set once the task was reported failed (for the metrics).
    failed: AtomicBool,
    /// Wakes a worker waiting for `go` ([`TaskFlags::give_go`], [`TaskFlags::wait_go`]).
    go_signal: (Mutex<()>, std::sync::Condvar),
}

impl TaskFlags {
    /// Sets `go` and wakes the worker waiting for it.
    fn give_go(&self) {
        self.go.store(true, Ordering::SeqCst);
        let _guard = self.go_signal.0.lock();
        self.go_signal.1.notify_all();
    }

    /// Returns once `go` is set (at once if it is), or after `at_most` (the caller checks `dropped` and
    /// waits again). Invariant: a go given while this waits wakes it (it is checked under the lock that
    /// [`TaskFlags::give_go`] takes after setting it).
    fn wait_go(&self, at_most: Duration) {
        let Ok(guard) = self.go_signal.0.lock() else {
            return std::thread::sleep(at_most);
        };
        if self.go.load(Ordering::SeqCst) {
            return;
        }
        let _ = self.go_signal.1.wait_timeout(guard, at_most);
    }
}

/// What the agent shares with its workers.
struct Shared {
    node: Arc<Node>,
    /// Opens sealed inputs (once per job) and attests the sealing key.
    inbox: Inbox,
    /// The attestation of the inbox's sealing key by the node's identity (hex).
    attestation: String,
    /// The operator's certificate chain of this node (text), if configured.
    certificate: Option<String>,
    /// The node's identity (the verifier signs receipts with it).
    identity: Identity,
    /// The coordinator's key (manifests must carry its signature).
    coordinator: crate::PublicKey,
    api: ApiClient,
    submit_timeout: Duration,
    tasks: Mutex<HashMap<(u64, u32), Arc<TaskFlags>>>,
    busy: std::sync::atomic::AtomicU32,
    /// The trials this node takes part in, by nonce (dropped once the replies stop listing them).
    trials: Mutex<HashMap<u64, Arc<TaskFlags>>>,
    /// RTTs measured to fellow committee members since the last heartbeat.
    rtts: Mutex<Vec<RttReport>>,
    /// Invariant: false until this process handled its first heartbeat reply; tasks listed in that
    /// reply belong to a previous incarnation (see the module doc).
    seen_first_reply: AtomicBool,
    /// Set once the node is stopping: no new task is started.
    stopping: AtomicBool,
    /// Deployed model files fetched from the coordinator (ONNX), kept by hash.
    models: crate::model_cache::ModelCache,
}

/// The longest heartbeat the agent lets the coordinator hold ([`HeartbeatRequest::wait_ms`]), well below
/// its API client's call timeout.
const MAX_HEARTBEAT_WAIT: Duration = Duration::from_secs(5);

/// The running agent (its threads live as long as the process); [`Agent::hand_off`] on shutdown.
pub struct Agent {
    shared: Arc<Shared>,
}

/// Reason reported for the tasks of a node that stops.
pub const STOPPING_REASON: &str = "node stopping: its tasks are handed back to the coordinator";
/// Reason reported for the tasks of a previous incarnation of a restarted node.
pub const RESTARTED_REASON: &str =
    "node restarted mid-task: the task's state (sessions, material, opened input) is gone";

impl Agent {
    /// Graceful stop: starts no new task and reports every live task failed as a fault of this node, so
    /// the coordinator reschedules its jobs now; returns once every report was sent or `within` passed
    /// (the reports run on a thread of their own, so an unreachable coordinator cannot hold the stop up).
    pub fn hand_off(&self, within: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let live: Vec<((u64, u32), Arc<TaskFlags>)> = match self.shared.tasks.lock() {
            Ok(t) => t.iter().map(|(k, f)| (*k, f.clone())).collect(),
            Err(_) => return,
        };
        if live.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let (done, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("veil-hand-off".into())
            .spawn(move || {
                for ((job, attempt), flags) in live {
                    flags.dropped.store(true, Ordering::SeqCst);
                    let body = TaskFailure {
                        reason: STOPPING_REASON.into(),
                        rejected_input: false,
                        verification_failed: false,
                    };
                    match shared.api.post_unit(&api::task_failed(job, attempt), &body) {
                        Ok(()) => tracing::info!(job, attempt, "task handed back"),
                        Err(e) => tracing::warn!(job, attempt, "handing the task back: {e}"),
                    }
                }
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => {
                if wait.recv_timeout(within).is_err() {
                    tracing::warn!("not every task was handed back within {within:?}");
                }
            }
            Err(e) => tracing::warn!("starting the hand-off: {e}"),
        }
    }
}

/// Starts the agent on its own threads; it runs as long as the process (see [`Agent::hand_off`]).
pub fn spawn(
    node: Arc<Node>,
    inbox: Inbox,
    identity: Identity,
    link: CoordinatorLink,
    operator: String,
    submit_timeout: Duration,
) -> Result<Agent, NodeError> {
    let api = ApiClient::new(
        &identity,
        link.public_key,
        link.address.clone(),
        Duration::from_secs(30),
    )?;
    let attestation = hex::encode(inbox.attest(&identity));
    let certificate = match &link.certificate {
        Some(path) => {
            let chain = CertificateChain::load(path)?;
            if chain.node.subject != identity.public_key() {
                return Err(NodeError::Config(format!(
                    "{}: the certificate is for node {}, not this node ({})",
                    path.display(),
                    chain.node.subject,
                    identity.public_key()
                )));
            }
            Some(chain.to_text())
        }
        None => None,
    };
    let coordinator = link.public_key;
    let models = crate::model_cache::ModelCache::new(node.data_dir().join("models"));
    let shared = Arc::new(Shared {
        node,
        inbox,
        attestation,
        certificate,
        identity,
        coordinator,
        api,
        submit_timeout,
        tasks: Mutex::new(HashMap::new()),
        busy: std::sync::atomic::AtomicU32::new(0),
        trials: Mutex::new(HashMap::new()),
        rtts: Mutex::new(Vec::new()),
        seen_first_reply: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        models,
    });
    let agent = Agent {
        shared: shared.clone(),
    };
    std::thread::Builder::new()
        .name("veil-agent".into())
        .spawn(move || heartbeat_loop(&shared, &link, &operator))
        .map_err(|e| NodeError::System("starting the coordinator agent", e))?;
    Ok(agent)
}

fn registration(shared: &Shared, link: &CoordinatorLink, operator: &str) -> RegisterRequest {
    let node = &shared.node;
    let cores = link
        .cores
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    RegisterRequest {
        operator: operator.to_string(),
        region: link.region.clone(),
        asn: link.asn,
        address: node.address(),
        hardware: HardwareReport {
            cores,
            memory_bytes: link.memory_bytes,
            gpu_model: link.gpu_model.clone(),
            gpu_memory_bytes: link.gpu_memory_bytes,
            bandwidth_bytes_per_s: link.bandwidth_bytes_per_s,
        },
        sealing_key: shared.inbox.sealing_key().to_string(),
        sealing_attestation: shared.attestation.clone(),
        certificate: shared.certificate.clone(),
    }
}

/// Registers, then heartbeats as long polls: each heartbeat names the reply the node last handled
/// (`seen`) and lets the coordinator hold it for up to one period (`wait_ms`) until the reply changes (a
/// task, its go, a cancellation), so a change reaches the node at once while heartbeats still arrive once a
/// period (liveness, load, RTTs). A reply that changed is followed by the next heartbeat at once; an
/// unchanged one that came back early (a coordinator that does not hold, or that had no room to) after
/// the rest of the period, as before long polls; so is a failed call.
fn heartbeat_loop(shared: &Arc<Shared>, link: &CoordinatorLink, operator: &str) {
    let period = Duration::from_millis(link.heartbeat_ms);
    let wait = period.min(MAX_HEARTBEAT_WAIT);
    let mut registered = false;
    // The tag of the last reply handled (`None` until one came, or from a coordinator without tags).
    let mut seen: Option<String> = None;
    loop {
        let mut pause = period;
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if !registered {
            let req = registration(shared, link, operator);
            match shared.api.post_json::<_, NodeView>(api::REGISTER, &req) {
                Ok(view) => {
                    METRICS.registration(true);
                    tracing::info!(node = view.id, state = %view.state, "registered with the coordinator");
                    registered = true;
                }
                Err(e) if e.status() == Some(403) => {
                    METRICS.registration(false);
                    tracing::error!("the coordinator refused this node's admission (retrying): {e}")
                }
                Err(e) => {
                    METRICS.registration(false);
                    tracing::warn!("registration failed (retrying): {e}")
                }
            }
        }
        if registered {
            let busy = shared.busy.load(Ordering::Relaxed);
            let rtts = shared
                .rtts
                .lock()
                .map(|mut r| std::mem::take(&mut *r))
                .unwrap_or_default();
            let req = HeartbeatRequest {
                ready: true,
                load: 0.0,
                queue_len: busy,
                rtts,
                wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                seen: seen.clone(),
            };
            let sent = std::time::Instant::now();
            let answer = shared
                .api
                .post_json::<_, HeartbeatReply>(api::HEARTBEAT, &req);
            // The round trip, less the time the coordinator held the request.
            let held = answer
                .as_ref()
                .map_or(0, |r| r.held_ms)
                .min(u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX));
            METRICS.heartbeat(
                answer.is_ok(),
                sent.elapsed().saturating_sub(Duration::from_millis(held)),
            );
            match answer {
                Ok(reply) => {
                    let tag = reply.tag.clone();
                    let changed = tag.is_some() && tag != seen;
                    handle_reply(shared, reply);
                    pause = if changed {
                        Duration::ZERO
                    } else {
                        period.saturating_sub(sent.elapsed())
                    };
                    seen = tag;
                }
                Err(e) if e.status() == Some(404) => {
                    tracing::warn!("the coordinator does not know this node: registering again");
                    registered = false;
                    continue;
                }
                Err(e) => tracing::warn!("heartbeat failed: {e}"),
            }
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

fn handle_reply(shared: &Arc<Shared>, reply: HeartbeatReply) {
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    handle_trials(shared, reply.trials);
    let first = !shared.seen_first_reply.swap(true, Ordering::SeqCst);
    let Ok(mut tasks) = shared.tasks.lock() else {
        return;
    };
    let listed: HashSet<(u64, u32)> = reply.tasks.iter().map(|t| (t.job, t.attempt)).collect();
    tasks.retain(|key, flags| {
        let keep = listed.contains(key);
        if !keep {
            flags.dropped.store(true, Ordering::Relaxed);
        }
        keep
    });
    for t in reply.tasks {
        let key = (t.job, t.attempt);
        if let Some(flags) = tasks.get(&key) {
            if t.go {
                flags.give_go();
            }
            continue;
        }
        let flags = Arc::new(TaskFlags::default());
        flags.go.store(t.go, Ordering::Relaxed);
        tasks.insert(key, flags.clone());
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("veil-task-{}-{}", t.job, t.attempt))
            .spawn(move || {
                worker.busy.fetch_add(1, Ordering::Relaxed);
                METRICS.task_started(match t.role {
                    TaskRole::Verifier => TaskKind::Verifier,
                    TaskRole::Dealer => TaskKind::Dealer,
                    _ => TaskKind::Party,
                });
                // A verifier keeps no state between its steps (it fetches the evidence, checks it and
                // signs): a restarted one simply verifies again.
                let outcome = if first && t.role != TaskRole::Verifier {
                    tracing::warn!(
                        job = t.job,
                        attempt = t.attempt,
                        "a task of this node's previous process: reporting it failed"
                    );
                    report_failure(&worker, &t, &flags, RESTARTED_REASON.into());
                    TaskOutcome::Orphaned
                } else {
                    run_task(&worker, &t, &flags);
                    if worker.stopping.load(Ordering::Relaxed) {
                        TaskOutcome::HandedBack
                    } else if flags.failed.load(Ordering::Relaxed) {
                        TaskOutcome::Failed
                    } else if flags.dropped.load(Ordering::Relaxed) {
                        TaskOutcome::Dropped
                    } else {
                        TaskOutcome::Done
                    }
                };
                METRICS.task_ended(outcome);
                worker.busy.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            tracing::error!("starting a task thread: {e}");
        }
    }
}

/// Starts a worker for each trial seen for the first time, passes `go` on, and drops the trials no
/// longer listed (decided or given up).
fn handle_trials(shared: &Arc<Shared>, listed: Vec<TrialTask>) {
    let Ok(mut trials) = shared.trials.lock() else {
        return;
    };
    let ids: HashSet<u64> = listed.iter().map(|t| t.id).collect();
    trials.retain(|id, flags| {
        let keep = ids.contains(id);
        if !keep {
            flags.dropped.store(true, Ordering::Relaxed);
        }
        keep
    });
    for task in listed {
        if let Some(flags) = trials.get(&task.id) {
            if task.go {
                flags.give_go();
            }
            continue;
        }
        let flags = Arc::new(TaskFlags::default());
        flags.go.store(task.go, Ordering::Relaxed);
        trials.insert(task.id, flags.clone());
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("veil-trial-{}", task.id))
            .spawn(move || {
                worker.busy.fetch_add(1, Ordering::Relaxed);
                run_trial(&worker, &task, &flags);
                worker.busy.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            tracing::error!("starting a trial thread: {e}");
        }
    }
}

/// Round-trip probes of a trial's other party; the smallest counts (the least queued one).
const TRIAL_PINGS: usize = 3;

/// One trial member's part (see [`crate::trial`]): accept the coordinator's manifest, wait for `go`, then
/// deal, or run the party (its shares derived from the trial's public seeds), measure the RTT to the other
/// party and report the output share and the online time.
fn run_trial(shared: &Arc<Shared>, task: &TrialTask, flags: &TaskFlags) {
    let report = |body: TrialReport| {
        if retry(flags, "reporting the trial", || {
            shared.api.post_json::<_, NodeView>(api::TRIAL, &body)
        })
        .is_some()
        {
            METRICS.trial(body.failure.is_none());
        }
    };
    let failed = |why: String| TrialReport {
        id: task.id,
        outputs: Vec::new(),
        online_seconds: 0.0,
        rtt_us: None,
        failure: Some(why),
    };
    let party = matches!(task.role, TaskRole::Party { .. });
    let signed = hex::decode(&task.manifest)
        .ok()
        .and_then(|b| postcard::from_bytes::<SignedManifest>(&b).ok());
    let Some(signed) = signed else {
        tracing::error!(trial = task.id, "the trial's manifest does not decode");
        if party {
            report(failed("the trial's manifest does not decode".into()));
        }
        return;
    };
    let assigned = match shared.node.accept_assigned(&signed) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(trial = task.id, "refused the trial's manifest: {e}");
            if party {
                report(failed(format!("manifest refused: {e}")));
            }
            return;
        }
    };
    let accepted = TrialAccepted { id: task.id };
    if retry(flags, "accepting a trial", || {
        shared.api.post_unit(api::TRIAL_ACCEPTED, &accepted)
    })
    .is_none()
    {
        return;
    }
    while !flags.go.load(Ordering::SeqCst) {
        if flags.dropped.load(Ordering::Relaxed) {
            tracing::info!(trial = task.id, "trial dropped before it started");
            return;
        }
        flags.wait_go(Duration::from_millis(20));
    }
    let index = match assigned.role() {
        Role::Dealer => {
            let served = assigned.serve_dealer(shared.submit_timeout);
            tracing::info!(trial = task.id, served, "trial dealt");
            return;
        }
        Role::Party(i) => i,
    };
    tracing::info!(trial = task.id, party = index, workload = %task.workload, "running a trial");
    let other = assigned.manifest().parties.get(1 - index.min(1)).cloned();
    let rtt_us = other.and_then(|peer| {
        (0..TRIAL_PINGS)
            .filter_map(|_| shared.node.ping_member(&peer, Duration::from_secs(2)).ok())
            .min()
            .map(|rtt| u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1))
    });
    let run = match trial::run_request(task, assigned.job(), index) {
        Ok(r) => r,
        Err(e) => return report(failed(format!("trial input: {e}"))),
    };
    let body = match assigned.run_party(run) {
        Ok(r) => TrialReport {
            id: task.id,
            online_seconds: trial::online_seconds(&r),
            outputs: r
                .outputs
                .into_iter()
                .next()
                .map(|w| w.0)
                .unwrap_or_default(),
            rtt_us,
            failure: None,
        },
        Err(e) => {
            tracing::warn!(trial = task.id, party = index, "the trial failed: {e}");
            TrialReport {
                rtt_us,
                ..failed(format!("party {index}: {e}"))
            }
        }
    };
    report(body);
}

/// First wait before retrying a call to the coordinator.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether a failed call is worth trying again: no answer (the coordinator may be restarting), or an
/// answer that says "later" (408 request timeout, 429 rate limited, any 5xx). Other statuses (403, 404,
/// 409: the attempt is over or not this node's) are final.
fn transient(e: &CallError) -> bool {
    match e.status() {
        None => true,
        Some(s) => s == 408 || s == 429 || (500..600).contains(&s),
    }
}

/// The wait before try `n + 1` (n >= 1): doubling from [`RETRY_FIRST`] up to [`RETRY_MAX`], with up to
/// 50% random jitter so that the nodes of a network do not retry in step.
fn backoff(n: u32) -> Duration {
    let base = RETRY_FIRST
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(RETRY_MAX);
    let jitter = rand::random::<f64>() * 0.5;
    base.mul_f64(1.0 + jitter).min(RETRY_MAX)
}

/// Retries `call` while the failure is [`transient`] and the task is live, with [`backoff`]. `None`: the
/// task is gone (dropped, or the coordinator says the attempt is over).
fn retry<T>(
    flags: &TaskFlags,
    what: &str,
    mut call: impl FnMut() -> Result<T, CallError>,
) -> Option<T> {
    let mut tries = 0u32;
    loop {
        if flags.dropped.load(Ordering::Relaxed) {
            return None;
        }
        match call() {
            Ok(v) => return Some(v),
            Err(e) if !transient(&e) => {
                tracing::warn!("{what}: {e}");
                return None;
            }
            Err(e) => {
                tries = tries.saturating_add(1);
                METRICS.retry();
                let wait = backoff(tries);
                tracing::warn!("{what} (retrying in {wait:?}): {e}");
                sleep_unless_dropped(flags, wait);
            }
        }
    }
}

/// Sleeps `wait`, waking early once the task is dropped.
fn sleep_unless_dropped(flags: &TaskFlags, wait: Duration) {
    let until = std::time::Instant::now() + wait;
    while !flags.dropped.load(Ordering::Relaxed) {
        let now = std::time::Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

fn report_failure(shared: &Shared, t: &TaskView, flags: &TaskFlags, reason: String) {
    send_failure(shared, t, flags, reason, false)
}

fn send_failure(
    shared: &Shared,
    t: &TaskView,
    flags: &TaskFlags,
    reason: String,
    rejected_input: bool,
) {
    flags.failed.store(true, Ordering::Relaxed);
    let body = TaskFailure {
        reason,
        rejected_input,
        verification_failed: false,
    };
    retry(flags, "reporting a failure", || {
        shared
            .api
            .post_unit(&api::task_failed(t.job, t.attempt), &body)
    });
}

/// Measures the RTT to each fellow member (they admit this node while the job is live) on a thread of its
/// own, for the next heartbeat: the coordinator's selection weighs committee latency with them.
fn measure_rtts(shared: &Arc<Shared>, peers: Vec<crate::manifest::Member>) {
    let worker = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("veil-rtt".into())
        .spawn(move || {
            for peer in peers {
                match worker.node.ping_member(&peer, Duration::from_secs(2)) {
                    Ok(rtt) => {
                        let report = RttReport {
                            peer: peer.public_key.to_string(),
                            rtt_us: u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1),
                        };
                        if let Ok(mut r) = worker.rtts.lock() {
                            if r.len() < 64 {
                                r.push(report);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %peer.public_key.short(), "RTT probe failed: {e}")
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("starting the RTT probe: {e}");
    }
}

fn run_task(shared: &Arc<Shared>, t: &TaskView, flags: &TaskFlags) {
    let signed = hex::decode(&t.manifest)
        .ok()
        .and_then(|b| postcard::from_bytes::<SignedManifest>(&b).ok());
    let Some(signed) = signed else {
        tracing::error!(job = t.job, "the task's manifest does not decode");
        return report_failure(shared, t, flags, "manifest does not decode".into());
    };
    if t.role == TaskRole::Verifier {
        return run_verifier(shared, t, flags, &signed);
    }
    // An ONNX model's graph, held while the task runs (its parties and dealer compute from it).
    let _graph = match onnx_graph(shared, flags, &signed) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(job = t.job, "the task's ONNX model: {e}");
            return report_failure(shared, t, flags, format!("ONNX model: {e}"));
        }
    };
    let assigned = match shared.node.accept_assigned(&signed) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(job = t.job, "refused the task's manifest: {e}");
            return report_failure(shared, t, flags, format!("manifest refused: {e}"));
        }
    };
    if retry(flags, "accepting a task", || {
        shared
            .api
            .post_unit(&api::task_accepted(t.job, t.attempt), &())
    })
    .is_none()
    {
        return;
    }
    // spdz2k: the client needs its masks before it can publish its inputs (it uploads them while the
    // attempt is scheduled), so the dealer sends them, sealed to the client, as soon as it accepted.
    if assigned.role() == Role::Dealer
        && assigned.manifest().protocol == crate::manifest::Protocol::Spdz2k
    {
        match owner_blob(shared, &signed, &assigned) {
            Ok(blob) => {
                if retry(flags, "sending the owner material", || {
                    shared
                        .api
                        .put_bytes(&api::task_owner(t.job, t.attempt), blob.clone())
                })
                .is_none()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(job = t.job, "owner material: {e}");
                return report_failure(shared, t, flags, format!("owner material: {e}"));
            }
        }
    }
    while !flags.go.load(Ordering::Relaxed) {
        if flags.dropped.load(Ordering::Relaxed) {
            tracing::info!(
                job = t.job,
                attempt = t.attempt,
                "task dropped before it started"
            );
            return;
        }
        flags.wait_go(Duration::from_millis(20));
    }
    measure_rtts(shared, assigned.peers());
    match assigned.role() {
        Role::Dealer => {
            let served = assigned.serve_dealer(shared.submit_timeout);
            tracing::info!(job = t.job, attempt = t.attempt, served, "dealer task over");
        }
        Role::Party(index) => {
            let Some(blob) = retry(flags, "fetching the input blob", || {
                shared.api.get_bytes(&api::task_input(t.job, t.attempt))
            }) else {
                return;
            };
            let manifest = assigned.manifest().clone();
            let binding = binding_for(&manifest, Purpose::InputShare, index);
            let opened = shared.inbox.open_once(&binding, &blob);
            drop(blob);
            let plain = match opened {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(
                        job = t.job,
                        attempt = t.attempt,
                        "refused the sealed input: {e}"
                    );
                    // This node's own fault, not the client's: its state, or a previous process of
                    // this node that opened the input already (a restart mid-task).
                    let node_fault =
                        matches!(e, InboxError::State { .. } | InboxError::Replayed(_));
                    let reason = if matches!(e, InboxError::Replayed(_)) {
                        format!("party {index}: {RESTARTED_REASON}")
                    } else {
                        format!("party {index} refused its input: {e}")
                    };
                    return send_failure(shared, t, flags, reason, !node_fault);
                }
            };
            let generation = crate::generation::is_generation(&manifest.model.workload);
            let outcome = if generation {
                // A generation job: the sealed input is the ticket naming the client that drives the
                // turn on its own stream to this party (`crate::generation`).
                let ticket = postcard::from_bytes::<crate::generation::GenerationTicket>(&plain);
                drop(plain);
                let ticket = match ticket {
                    Ok(t) => t,
                    Err(e) => {
                        return send_failure(
                            shared,
                            t,
                            flags,
                            format!("party {index} refused its ticket: {e}"),
                            true,
                        )
                    }
                };
                assigned.run_generation(ticket.driver, crate::generation::ATTACH_WAIT)
            } else {
                let senders = manifest.model.deployed.as_ref().map_or(0, |d| d.senders);
                let decoded = if senders > 0 {
                    // A later stage: the input shares come as the previous stage's hand-offs.
                    postcard::from_bytes::<StageInput>(&plain)
                        .map_err(|e| e.to_string())
                        .and_then(|input| {
                            take_over(shared.inbox.opening_key(), &manifest, index, input)
                                .map_err(|e| e.to_string())
                        })
                } else {
                    postcard::from_bytes::<RunRequest>(&plain).map_err(|e| e.to_string())
                };
                let run = match decoded.and_then(production_run) {
                    Ok(r) => r,
                    Err(e) => {
                        return send_failure(
                            shared,
                            t,
                            flags,
                            format!("party {index} refused its input: {e}"),
                            true,
                        )
                    }
                };
                drop(plain);
                assigned.run_party(run)
            };
            match outcome {
                Ok(mut report) => {
                    // A stage followed by another: the outputs go, re-randomised and sealed, to the next
                    // stage's parties (inside the client's envelope, which the client relays).
                    let handoff = manifest
                        .model
                        .deployed
                        .as_ref()
                        .and_then(|d| d.handoff.clone());
                    let stage_output = match handoff {
                        Some(h) => match hand_off(&h, index, &report.outputs) {
                            Ok(handoffs) => {
                                report.outputs.clear();
                                Some(StageOutput {
                                    report: report.clone(),
                                    handoffs,
                                })
                            }
                            Err(e) => {
                                return report_failure(shared, t, flags, format!("hand-off: {e}"))
                            }
                        },
                        None => None,
                    };
                    let Some(output_key) = manifest.output_key else {
                        return report_failure(
                            shared,
                            t,
                            flags,
                            "the manifest names no key to seal the outputs to".into(),
                        );
                    };
                    // Transcript and output go out signed by this party, bound to the run and its index.
                    let run = match evidence::run_id(&signed) {
                        Ok(r) => r,
                        Err(e) => return report_failure(shared, t, flags, format!("run id: {e}")),
                    };
                    // The views of the party's checks: spdz2k's MAC checks or rep3m's (the verifier
                    // decodes them by the manifest's protocol).
                    let encoded = if manifest.protocol == crate::manifest::Protocol::Rep3m {
                        Some(postcard::to_stdvec(&report.rep3m_checks))
                    } else {
                        (!report.transcripts.is_empty())
                            .then(|| postcard::to_stdvec(&report.transcripts))
                    };
                    if let Some(encoded) = encoded {
                        let views = match encoded {
                            Ok(v) => evidence::seal(
                                &shared.identity,
                                EvidenceKind::Transcript,
                                &run,
                                index as u32,
                                v,
                            ),
                            Err(e) => {
                                return report_failure(shared, t, flags, format!("encoding: {e}"))
                            }
                        };
                        if retry(flags, "sending the MAC-check transcript", || {
                            shared
                                .api
                                .put_bytes(&api::task_transcript(t.job, t.attempt), views.clone())
                        })
                        .is_none()
                        {
                            return;
                        }
                    }
                    let binding = binding_for(&manifest, Purpose::OutputShare, index);
                    let encoded = match &stage_output {
                        Some(out) => postcard::to_stdvec(out),
                        None => postcard::to_stdvec(&report),
                    };
                    let sealed = encoded.map_err(|e| e.to_string()).and_then(|b| {
                        seal_blob(&output_key, &binding, &b).map_err(|e| e.to_string())
                    });
                    let bytes = match sealed {
                        Ok(b) => evidence::seal(
                            &shared.identity,
                            EvidenceKind::Output,
                            &run,
                            index as u32,
                            b,
                        ),
                        Err(e) => {
                            return report_failure(shared, t, flags, format!("encoding: {e}"))
                        }
                    };
                    retry(flags, "returning the output blob", || {
                        shared
                            .api
                            .put_bytes(&api::task_output(t.job, t.attempt), bytes.clone())
                    });
                }
                // The client broke off a generation turn: the fault is its own, no node's (the job
                // ends without blame, as for a refused input).
                Err(e @ NodeError::Client(_)) => {
                    send_failure(shared, t, flags, format!("party {index}: {e}"), true)
                }
                Err(e) => report_failure(shared, t, flags, format!("party {index}: {e}")),
            }
        }
    }
}

/// The graph of the ONNX model a manifest (signed by the coordinator) runs, if it runs one: its file from
/// the cache or fetched from the coordinator, checked against the manifest's id and size before it is
/// imported (once per process, `crate::onnx_model::install`).
fn onnx_graph(
    shared: &Shared,
    flags: &TaskFlags,
    signed: &SignedManifest,
) -> Result<Option<Arc<veil_engine::onnx::PrivateGraph>>, NodeError> {
    // Another workload (or a manifest that does not decode, which the acceptance reports): nothing here.
    let workload =
        postcard::from_bytes::<crate::manifest::Manifest>(&signed.body.0).map(|m| m.model.workload);
    if workload.as_deref().ok() != Some(crate::onnx_model::ONNX_WORKLOAD) {
        return Ok(None);
    }
    // Nothing is fetched for a manifest the coordinator did not sign.
    let manifest = signed.verify_by(&shared.coordinator)?;
    let d = manifest
        .model
        .deployed
        .as_ref()
        .ok_or_else(|| NodeError::Manifest("an ONNX job without its deployed model".into()))?;
    let bytes = shared
        .models
        .get_or_fetch(&d.id, d.file_bytes, || {
            retry(flags, "fetching the ONNX model", || {
                shared
                    .api
                    .get_bytes_bounded(&api::model_onnx(&d.id), crate::onnx_model::MAX_ONNX_BYTES)
            })
            .ok_or_else(|| "the coordinator did not hand the file over".to_string())
        })
        .map_err(|e| NodeError::Manifest(e.to_string()))?;
    crate::onnx_model::install(&d.id, d.file_bytes, manifest.model.frac_bits, &bytes).map(Some)
}

/// A coordinator job's run as a client may ask for it: one kernel thread, no profile, no link shaping.
/// Client-chosen shaping (latency, bandwidth) and thread counts are the protocol lab's, for local runs; on
/// a coordinator job they would let a client slow honest parties into timeouts, so the input is refused
/// (the job fails at once, blaming no node) instead of run.
fn production_run(run: RunRequest) -> Result<RunRequest, String> {
    if run.shaping.is_some() {
        return Err("client-chosen link shaping is refused on coordinator jobs".into());
    }
    if run.threads != 1 || run.profile {
        return Err("client-chosen threads and profiling are refused on coordinator jobs".into());
    }
    if run.offline_first {
        return Err("a benchmark's offline-first dealing is refused on coordinator jobs".into());
    }
    Ok(run)
}

/// The dealer's owner material for the job's client, sealed to the manifest's output key and signed by the
/// dealer as evidence (`crate::evidence`), so that a relay cannot substitute its own masks.
fn owner_blob(
    shared: &Shared,
    signed: &SignedManifest,
    assigned: &crate::node::AssignedJob,
) -> Result<Vec<u8>, String> {
    let manifest = assigned.manifest();
    let key = manifest
        .output_key
        .ok_or("the manifest names no client key to seal the owner material to")?;
    let owner = assigned.owner_material().map_err(|e| e.to_string())?;
    let plain = zeroize::Zeroizing::new(postcard::to_stdvec(&owner).map_err(|e| e.to_string())?);
    let binding = binding_for(manifest, Purpose::OwnerMaterial, manifest.parties.len());
    let sealed = seal_blob(&key, &binding, &plain).map_err(|e| e.to_string())?;
    let run = evidence::run_id(signed).map_err(|e| e.to_string())?;
    let dealer = manifest.parties.len() as u32;
    Ok(evidence::seal(
        &shared.identity,
        EvidenceKind::OwnerMaterial,
        &run,
        dealer,
        sealed,
    ))
}

/// Largest transcript blob a verifier reads, bytes (a view is a few hundred bytes per check).
const MAX_TRANSCRIPT_BYTES: usize = 64 << 20;
/// Largest output blob a verifier checks the signature of, bytes.
const MAX_OUTPUT_BYTES: usize = 1 << 30;

/// The verifier's task: fetch every party's check views (spdz2k's MAC checks, rep3m's checks) and the input
/// and output ciphertexts, check the views and sign the receipt (`crate::receipt::issue`), or report the failed verification.
fn run_verifier(shared: &Arc<Shared>, t: &TaskView, flags: &TaskFlags, signed: &SignedManifest) {
    let manifest = match signed.verify_by(&shared.coordinator) {
        Ok(m) => m,
        Err(e) => return report_failure(shared, t, flags, format!("manifest refused: {e}")),
    };
    let n = manifest.parties.len();
    let run = match evidence::run_id(signed) {
        Ok(r) => r,
        Err(e) => return report_failure(shared, t, flags, format!("run id: {e}")),
    };
    let mut bodies = Vec::with_capacity(n);
    let mut inputs = Vec::with_capacity(n);
    let mut outputs = Vec::with_capacity(n);
    let mut records = Vec::with_capacity(2 * n);
    for party in 0..n {
        let fetch = |kind: &str| {
            retry(flags, "fetching the evidence", || {
                shared
                    .api
                    .get_bytes(&api::task_evidence(t.job, t.attempt, kind, party))
            })
        };
        let (Some(view), Some(input), Some(output)) =
            (fetch("transcript"), fetch("input"), fetch("output"))
        else {
            return;
        };
        // The parties' signatures before anything else: a transcript or output the coordinator (or anyone
        // between) substituted is refused here, and the receipt commits to the signatures.
        let key = manifest.parties[party].public_key;
        let index = party as u32;
        let opened = evidence::open(
            &view,
            EvidenceKind::Transcript,
            &run,
            index,
            &key,
            MAX_TRANSCRIPT_BYTES,
        )
        .and_then(|(view, tr)| {
            evidence::open(
                &output,
                EvidenceKind::Output,
                &run,
                index,
                &key,
                MAX_OUTPUT_BYTES,
            )
            .map(|(_, or)| (view, tr, or))
        });
        let view = match opened {
            Ok((view, tr, or)) => {
                records.extend([tr, or]);
                view
            }
            Err(e) => return send_verdict(shared, t, flags, format!("party {party}: {e}")),
        };
        bodies.push(view);
        inputs.push(input);
        outputs.push(output);
    }
    // The views, decoded by the manifest's protocol (spdz2k's MAC checks, rep3m's checks).
    let views = match crate::verifier::JobViews::decode(manifest.protocol, &bodies) {
        Ok(v) => v,
        Err(e) => return send_verdict(shared, t, flags, e.to_string()),
    };
    drop(bodies);
    // The dealer's signed owner material, if the job has a dealer (rep3m has none): the receipt commits
    // to its record too.
    if let Some(dealer) = &manifest.dealer {
        let Some(owner) = retry(flags, "fetching the evidence", || {
            shared
                .api
                .get_bytes(&api::task_evidence(t.job, t.attempt, "owner", n))
        }) else {
            return;
        };
        match evidence::open(
            &owner,
            EvidenceKind::OwnerMaterial,
            &run,
            n as u32,
            &dealer.public_key,
            MAX_OUTPUT_BYTES,
        ) {
            Ok((_, record)) => records.push(record),
            Err(e) => return send_verdict(shared, t, flags, format!("dealer: {e}")),
        }
    }
    let commit =
        |blobs: &[Vec<u8>]| crate::receipt::commit_blobs(blobs.iter().map(|b| b.as_slice()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match crate::receipt::issue(
        &shared.identity,
        &shared.coordinator,
        signed,
        &views,
        &records,
        [commit(&inputs), commit(&outputs)],
        now,
    ) {
        Ok(file) => {
            let json = match file.to_json() {
                Ok(j) => j,
                Err(e) => return report_failure(shared, t, flags, format!("receipt: {e}")),
            };
            tracing::info!(
                job = t.job,
                attempt = t.attempt,
                "checks verified: receipt signed"
            );
            retry(flags, "sending the receipt", || {
                shared
                    .api
                    .put_text(&api::task_receipt(t.job, t.attempt), json.clone())
            });
        }
        Err(e) => {
            tracing::warn!(job = t.job, attempt = t.attempt, "verification failed: {e}");
            send_verdict(shared, t, flags, format!("verification failed: {e}"));
        }
    }
}

/// Reports a failed verification (the coordinator blames the parties).
fn send_verdict(shared: &Shared, t: &TaskView, flags: &TaskFlags, reason: String) {
    flags.failed.store(true, Ordering::Relaxed);
    let body = TaskFailure {
        reason,
        rejected_input: false,
        verification_failed: true,
    };
    retry(flags, "reporting the failed verification", || {
        shared
            .api
            .post_unit(&api::task_failed(t.job, t.attempt), &body)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::JobId;

    fn status(status: u16) -> CallError {
        CallError::Status {
            status,
            message: String::new(),
        }
    }

    #[test]
    fn no_answer_timeouts_rate_limits_and_5xx_are_retried_other_statuses_are_final() {
        let transport = CallError::Transport {
            address: "127.0.0.1:1".into(),
            message: "connecting: refused".into(),
        };
        assert!(transient(&transport));
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(transient(&status(s)), "{s}");
        }
        for s in [400, 403, 404, 409, 413] {
            assert!(!transient(&status(s)), "{s}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        for n in 1..40 {
            let wait = backoff(n);
            let base = RETRY_FIRST
                .saturating_mul(1u32 << (n - 1).min(16))
                .min(RETRY_MAX);
            assert!(
                wait >= base && wait <= RETRY_MAX.min(base.mul_f64(1.5)),
                "{n}: {wait:?}"
            );
        }
    }

    #[test]
    fn a_transient_failure_is_retried_until_it_succeeds_and_a_final_one_is_not() {
        let flags = TaskFlags::default();
        let mut calls = 0;
        let got = retry(&flags, "test", || {
            calls += 1;
            if calls < 3 {
                Err(status(503))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got, Some(3));
        let mut calls = 0;
        let got: Option<()> = retry(&flags, "test", || {
            calls += 1;
            Err(status(409))
        });
        assert_eq!((got, calls), (None, 1));
        // A dropped task stops the retries.
        flags.dropped.store(true, Ordering::Relaxed);
        let got: Option<()> = retry(&flags, "test", || Err(status(503)));
        assert_eq!(got, None);
    }

    #[test]
    fn client_chosen_shaping_threads_and_profiles_are_refused_before_any_computation() {
        let plain = RunRequest::new(JobId([7; 16]), Vec::new(), Vec::new());
        assert!(production_run(plain.clone()).is_ok());
        let shaped = RunRequest {
            shaping: Some(veil_engine::lab::shaping::ShapingConfig {
                latency_ms: 3_600_000.0,
                bandwidth_mbps: Some(0.001),
                burst_bytes: 1,
            }),
            ..plain.clone()
        };
        assert!(production_run(shaped).unwrap_err().contains("shaping"));
        let threads = RunRequest {
            threads: 4096,
            ..plain.clone()
        };
        assert!(production_run(threads).unwrap_err().contains("threads"));
        let profiled = RunRequest {
            profile: true,
            ..plain
        };
        assert!(production_run(profiled).is_err());
        let offline_first = RunRequest {
            offline_first: true,
            ..RunRequest::new(JobId([7; 16]), Vec::new(), Vec::new())
        };
        assert!(production_run(offline_first)
            .unwrap_err()
            .contains("offline-first"));
    }
}
