//! `veil soak`: a chaos run against a whole local network. It starts a coordinator and `--nodes` nodes in
//! processes (as `veil devnet` does), submits `--jobs` private jobs `--concurrency` at a time, and every
//! `--kill-every-s` seconds SIGKILLs (`--signal term`: SIGTERMs) a random node holding a role in a job in
//! flight and starts it again on its data directory (same key), so the network must recover from crashes
//! mid-job. Jobs alternate between network-a (semi2k, 2 parties,
//! weights from a seed) and the shipped breast-cancer classifier (deployed, spdz2k, 3 parties, verified with
//! a receipt), `--inferences` each; every output is compared with burn's plaintext forward pass.
//!
//! What it reports (`--json`: one object, the last line of stdout):
//! - `jobs`, `done`, `failed` (each with its cause, in `failures` and counted in `failures_by_cause`), `lost`
//!   (submitted, but neither done nor failed at the coordinator once the run is over and a grace period
//!   has passed);
//! - `wrong_outputs`: done jobs whose outputs differ from the plaintext ones by more than `tolerance`;
//! - `coordinator_peak_rss_bytes`: the coordinator's `VmHWM` (`/proc/PID/status`) at the end;
//! - `heartbeat_p99_ms`: the p99 round trip of heartbeat probes, sent every 50 ms during the whole run over
//!   the same path as the nodes' heartbeats (a fresh TLS connection, the edge's limits, the JSON body, the
//!   coordinator's state lock); the probe's key is not a registered node, so the coordinator answers 404
//!   after looking it up under the lock, without the bookkeeping of a real heartbeat;
//! - `ok`: whether the bar of issue 21 holds (lost 0, wrong 0, done >= 90%, every failure has a cause, peak
//!   RSS <= 300 MB, heartbeat p99 <= 200 ms).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::Rng;
use serde::Serialize;
use veil_engine::model_file::ModelFile;
use veil_engine::{workloads, Model, Plan, WeightMode};
use veil_node::api::{self, HeartbeatRequest, JobView, SubmitRequest};
use veil_protocols::protocol::Protocol;
use veil_protocols::ring::FixedPoint;

use super::local::{LocalNetwork, LocalOptions};

/// Arguments of `veil soak`.
#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Jobs to submit.
    #[arg(long, default_value_t = 60)]
    pub jobs: usize,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// SIGKILL a random node (and restart it) this often, seconds (0: never).
    #[arg(long, default_value_t = 5.0)]
    pub kill_every_s: f64,
    /// Inferences per job (network-a inputs drawn from a seed; breast-cancer rows cycled from the shipped
    /// held-out set): more make each job run longer, so more kills land mid-job.
    #[arg(long, default_value_t = 512)]
    pub inferences: usize,
    /// How a node is stopped: `kill` (SIGKILL, a crash) or `term` (SIGTERM: the node hands its tasks back,
    /// SIGKILL after 10 s).
    #[arg(long, default_value = "kill", value_parser = ["kill", "term"])]
    pub signal: String,
    /// Stop killing after this many kills (default: no limit).
    #[arg(long)]
    pub max_kills: Option<usize>,
    /// Node processes (each its own operator); a committee takes up to 5 (3 parties, dealer, verifier).
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Largest accepted |private - plaintext| of any output value.
    #[arg(long, default_value_t = 1e-2)]
    pub tolerance: f32,
    /// A job not done within this is given up by its client (it still counts where the coordinator ends it).
    #[arg(long, default_value_t = 300)]
    pub job_timeout_s: u64,
    /// Log level of the processes (logs under the network's directory, kept with `--keep-dir`).
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Keep the network's directory (logs, state) and print its path.
    #[arg(long)]
    pub keep_dir: bool,
    /// Print one JSON object (the last line of stdout).
    #[arg(long)]
    pub json: bool,
}

/// The kinds of job the soak submits, alternately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// network-a from a weights seed, semi2k, 2 parties.
    NetworkA,
    /// The deployed breast-cancer classifier, spdz2k, 3 parties.
    BreastCancer,
}

impl Kind {
    fn of(index: usize) -> Kind {
        if index.is_multiple_of(2) {
            Kind::NetworkA
        } else {
            Kind::BreastCancer
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::NetworkA => "network-a/semi2k",
            Kind::BreastCancer => "breast-cancer/spdz2k",
        }
    }
}

/// network-a's weights seed.
const NETWORK_A_SEED: u64 = 7;
/// How long the coordinator is given, after the last client returned, to end the jobs still open.
const SETTLE: Duration = Duration::from_secs(90);
/// Period of the heartbeat probe.
const PROBE_PERIOD: Duration = Duration::from_millis(50);

/// One model a worker runs jobs on.
struct Workload<'a> {
    model: &'a Model,
    plan: Plan,
}

/// What a worker learnt of one job.
#[derive(Debug, Clone)]
struct Attempted {
    index: usize,
    kind: Kind,
    /// The coordinator's job id, once submitted.
    id: Option<u64>,
    /// `Ok(max |private - plaintext|)`, or the client's error.
    result: std::result::Result<f32, String>,
}

/// One failed job, with its cause.
#[derive(Debug, Serialize)]
struct Failure {
    index: usize,
    job: Option<u64>,
    workload: &'static str,
    cause: String,
}

/// The soak's report (`--json`).
#[derive(Debug, Serialize)]
struct Report {
    jobs: usize,
    done: usize,
    failed: usize,
    lost: usize,
    wrong_outputs: usize,
    failures: Vec<Failure>,
    failures_by_cause: BTreeMap<String, usize>,
    attempt_failures_by_cause: BTreeMap<String, usize>,
    lost_jobs: Vec<u64>,
    coordinator_peak_rss_bytes: u64,
    heartbeat_p99_ms: f64,
    heartbeat_p50_ms: f64,
    heartbeat_max_ms: f64,
    heartbeat_probes: usize,
    heartbeat_probe_errors: usize,
    /// The nodes' own heartbeats (from their `/metrics`): how many were answered, and the bucket bound
    /// (ms) at or under which 99% of their round trips fall (an upper bound on their p99).
    node_heartbeats: u64,
    node_heartbeat_p99_bound_ms: Option<f64>,
    kills: usize,
    signal: String,
    restart_errors: usize,
    retried_jobs: usize,
    max_abs_err: f32,
    tolerance: f32,
    nodes: usize,
    concurrency: usize,
    inferences_per_job: usize,
    kill_every_s: f64,
    duration_s: f64,
    ok: bool,
}

/// Runs `veil soak`.
pub fn run(args: SoakArgs) -> Result<()> {
    if args.jobs == 0 || args.concurrency == 0 {
        bail!("--jobs and --concurrency must be at least 1");
    }
    if args.nodes < 6 {
        bail!("--nodes must be at least 6: a committee takes 5 nodes, and one may be down");
    }
    super::signals::install();
    let report = soak(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn soak(args: &SoakArgs) -> Result<Report> {
    let started = Instant::now();
    let exe = std::env::current_exe().context("locating the veil executable")?;
    let options = LocalOptions {
        nodes: args.nodes,
        log: args.log.clone(),
        max_stage_memory_bytes: 0,
    };
    let mut net = LocalNetwork::start(&exe, &options)?;
    let result = drive(args, &exe, &mut net, started);
    if args.keep_dir {
        eprintln!("veil soak: logs and state in {}", net.dir().display());
        keep(&net);
    }
    net.stop(Duration::from_secs(4));
    result
}

/// Leaks the network's directory so that it survives the network (for `--keep-dir`).
fn keep(net: &LocalNetwork) {
    let target = std::env::temp_dir().join(format!(
        "veil-soak-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    ));
    match copy_dir(net.dir(), &target) {
        Ok(()) => eprintln!("veil soak: copied to {}", target.display()),
        Err(e) => eprintln!("veil soak: copying the logs: {e}"),
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &dest)?;
        } else if path.extension().is_some_and(|e| e == "log") {
            std::fs::copy(&path, &dest)?;
        }
    }
    Ok(())
}

fn drive(
    args: &SoakArgs,
    exe: &std::path::Path,
    net: &mut LocalNetwork,
    started: Instant,
) -> Result<Report> {
    let owner = net.client(None)?;
    net.wait_active(&owner, args.nodes, Duration::from_secs(120), |_| {})?;
    // The breast-cancer model is deployed once (its public part); every worker deals its weights.
    let device = burn::tensor::Device::flex();
    let file =
        ModelFile::parse(super::demo::MODEL, None, &device).context("loading the shipped model")?;
    let fp = FixedPoint::default();
    let deployed = owner.deploy(
        &file,
        WeightMode::Shared,
        3,
        fp.frac_bits(),
        Protocol::Spdz2k.name(),
    )?;
    let rows = super::demo::rows()?;
    let rows: Vec<Vec<f32>> = rows
        .iter()
        .map(|(x, _)| file.prepare_input(x, 1))
        .collect::<std::result::Result<_, _>>()?;
    let rows = Arc::new(rows);

    // The heartbeat probe, for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let api = probe_client(net)?;
        let stop = stop.clone();
        std::thread::spawn(move || heartbeat_probe(&api, &stop))
    };

    // The workers.
    let next = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let attempted = Arc::new(Mutex::new(Vec::<Attempted>::new()));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(args.jobs) {
        let client = net.client(None)?;
        let (next, finished, attempted, rows) = (
            next.clone(),
            finished.clone(),
            attempted.clone(),
            rows.clone(),
        );
        let model_id = deployed.id.clone();
        let (jobs, per_job, timeout) = (
            args.jobs,
            args.inferences.max(1),
            Duration::from_secs(args.job_timeout_s),
        );
        workers.push(std::thread::spawn(move || -> Result<()> {
            let device = burn::tensor::Device::flex();
            let fp = FixedPoint::default();
            let network_a =
                workloads::by_name("network-a", NETWORK_A_SEED, &device).context("network-a")??;
            let network_a = Workload {
                plan: Plan::compile(&network_a, fp, WeightMode::Shared)?,
                model: &network_a,
            };
            let file = ModelFile::parse(super::demo::MODEL, None, &device)?;
            let breast = Workload {
                plan: Plan::compile(file.model(), fp, WeightMode::Shared)?,
                model: file.model(),
            };
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= jobs {
                    return Ok(());
                }
                let kind = Kind::of(index);
                let (workload, request, inputs) = match kind {
                    Kind::NetworkA => {
                        let inputs: Vec<Vec<f32>> = (0..per_job)
                            .map(|k| {
                                workloads::sample_input(
                                    network_a.model,
                                    1,
                                    (index * per_job + k) as u64,
                                )
                            })
                            .collect();
                        let request = submit_request(
                            "network-a",
                            NETWORK_A_SEED,
                            None,
                            2,
                            Protocol::Semi2k.name(),
                            inputs.len(),
                            fp,
                        );
                        (&network_a, request, inputs)
                    }
                    Kind::BreastCancer => {
                        let inputs: Vec<Vec<f32>> = (0..per_job)
                            .map(|k| rows[(index * per_job + k) % rows.len()].clone())
                            .collect();
                        let request = submit_request(
                            "deployed",
                            0,
                            Some(model_id.clone()),
                            3,
                            Protocol::Spdz2k.name(),
                            inputs.len(),
                            fp,
                        );
                        (&breast, request, inputs)
                    }
                };
                let mut id = None;
                let outcome = client.run_job(
                    request,
                    workload.model,
                    &workload.plan,
                    &inputs,
                    timeout,
                    |view| id = Some(view.id),
                );
                let result = outcome
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|f| max_error(workload.model, &inputs, &f.outputs));
                if let Err(e) = &result {
                    tracing::warn!(index, "soak job ended without outputs: {e}");
                }
                if let Ok(mut a) = attempted.lock() {
                    a.push(Attempted {
                        index,
                        kind,
                        id,
                        result,
                    });
                }
                finished.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    // Chaos: a random node SIGKILLed and restarted every period, while jobs are in flight.
    let (mut kills, mut restart_errors) = (0usize, 0usize);
    let mut retired = HeartbeatHistogram::default();
    let mut rng = rand::rng();
    let period = Duration::from_secs_f64(args.kill_every_s.max(0.0));
    let mut next_kill = Instant::now() + period;
    while finished.load(Ordering::SeqCst) < args.jobs {
        if super::signals::requested() {
            bail!("interrupted ({})", super::signals::name());
        }
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
        let kills_left = args.max_kills.is_none_or(|max| kills < max);
        if args.kill_every_s > 0.0 && kills_left && Instant::now() >= next_kill {
            let victim = pick_victim(&owner, net, args.nodes, &mut rng);
            tracing::info!(victim, signal = %args.signal, "soak: stop and restart");
            kills += 1;
            // The victim's heartbeat counters die with it: read them first.
            if let Some(Some(address)) = net.node_metrics().get(victim) {
                retired.add(&scrape_heartbeats(address).unwrap_or_default());
            }
            let grace = (args.signal == "term").then_some(Duration::from_secs(10));
            if let Err(e) = net.restart_node(exe, victim, &args.log, grace) {
                eprintln!("veil soak: restarting node {victim}: {e:#}");
                restart_errors += 1;
            }
            next_kill = Instant::now() + period;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for w in workers {
        match w.join() {
            Ok(r) => r?,
            Err(_) => bail!("a soak worker panicked"),
        }
    }

    // Every submitted job must end at the coordinator: done or failed, with a cause.
    let attempted = attempted
        .lock()
        .map(|a| a.clone())
        .map_err(|_| anyhow::anyhow!("the outcomes' lock is poisoned"))?;
    let settle_until = Instant::now() + SETTLE;
    let mut views: BTreeMap<u64, JobView> = BTreeMap::new();
    for a in &attempted {
        let Some(id) = a.id else { continue };
        loop {
            match owner.api().get_json::<JobView>(&api::job(id)) {
                Ok(v) if v.phase == "done" || v.phase == "failed" => {
                    views.insert(id, v);
                    break;
                }
                Ok(v) if Instant::now() >= settle_until => {
                    views.insert(id, v);
                    break;
                }
                Err(e) if Instant::now() >= settle_until => {
                    bail!("job {id}: the coordinator does not answer: {e}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (latencies, probe_errors) = probe.join().unwrap_or_default();
    let mut node_heartbeats = retired;
    for address in net.node_metrics().into_iter().flatten() {
        node_heartbeats.add(&scrape_heartbeats(&address).unwrap_or_default());
    }
    let rss = peak_rss_bytes(net.coordinator_pid()).unwrap_or(0);
    Ok(tally(
        args,
        &attempted,
        &views,
        latencies,
        probe_errors,
        &node_heartbeats,
        rss,
        kills,
        restart_errors,
        started,
    ))
}

#[allow(clippy::too_many_arguments)]
fn tally(
    args: &SoakArgs,
    attempted: &[Attempted],
    views: &BTreeMap<u64, JobView>,
    mut latencies: Vec<f64>,
    probe_errors: usize,
    node_heartbeats: &HeartbeatHistogram,
    rss: u64,
    kills: usize,
    restart_errors: usize,
    started: Instant,
) -> Report {
    let (mut done, mut wrong, mut max_err) = (0usize, 0usize, 0f32);
    let mut failures = Vec::new();
    let mut lost_jobs = Vec::new();
    let mut retried = 0usize;
    for a in attempted {
        let view = a.id.and_then(|id| views.get(&id));
        if view.is_some_and(|v| v.attempt > 1) {
            retried += 1;
        }
        let fail = |cause: String| Failure {
            index: a.index,
            job: a.id,
            workload: a.kind.name(),
            cause,
        };
        match (view.map(|v| v.phase.as_str()), &a.result) {
            // Never submitted: the client's error is the cause.
            (None, Err(e)) => failures.push(fail(format!("submission: {e}"))),
            (None, Ok(_)) => failures.push(fail("done without a job id".into())),
            (Some("done"), Ok(err)) => {
                done += 1;
                max_err = max_err.max(*err);
                if err.is_nan() || *err > args.tolerance {
                    wrong += 1;
                }
            }
            (Some("done"), Err(e)) => failures.push(fail(format!("client: {e}"))),
            (Some("failed"), _) => {
                let cause = view
                    .and_then(|v| v.failure.clone())
                    .filter(|c| !c.trim().is_empty())
                    .unwrap_or_default();
                failures.push(fail(cause));
            }
            (Some(_), _) => lost_jobs.extend(a.id),
        }
    }
    // Jobs no worker reached (a worker ended early) are lost too.
    let lost = lost_jobs.len() + args.jobs.saturating_sub(attempted.len());
    let mut by_cause = BTreeMap::new();
    for f in &failures {
        *by_cause.entry(cause_class(&f.cause)).or_insert(0) += 1;
    }
    // Every failed attempt (retried or final), by the coordinator's cause.
    let mut attempt_failures = BTreeMap::new();
    for v in views.values() {
        for t in &v.history {
            if let Some(cause) = &t.cause {
                *attempt_failures.entry(cause_class(cause)).or_insert(0) += 1;
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    let (p50, p99) = (quantile(0.50), quantile(0.99));
    let causes_present = failures.iter().all(|f| !f.cause.is_empty());
    let ok = lost == 0
        && wrong == 0
        && done * 10 >= args.jobs * 9
        && causes_present
        && rss > 0
        && rss <= 300_000_000
        && p99 <= 200.0;
    Report {
        jobs: args.jobs,
        done,
        failed: failures.len(),
        lost,
        wrong_outputs: wrong,
        failures,
        failures_by_cause: by_cause,
        attempt_failures_by_cause: attempt_failures,
        lost_jobs,
        coordinator_peak_rss_bytes: rss,
        heartbeat_p99_ms: p99,
        heartbeat_p50_ms: p50,
        heartbeat_max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        heartbeat_probes: latencies.len(),
        heartbeat_probe_errors: probe_errors,
        node_heartbeats: node_heartbeats.count,
        node_heartbeat_p99_bound_ms: node_heartbeats.quantile_bound(0.99).map(|s| s * 1e3),
        kills,
        signal: args.signal.clone(),
        restart_errors,
        retried_jobs: retried,
        max_abs_err: max_err,
        tolerance: args.tolerance,
        nodes: args.nodes,
        concurrency: args.concurrency,
        inferences_per_job: args.inferences.max(1),
        kill_every_s: args.kill_every_s,
        duration_s: started.elapsed().as_secs_f64(),
        ok,
    }
}

/// A random node among those holding a role in a job in flight (so that the stop lands mid-job), or
/// among all when none does or the coordinator does not answer.
fn pick_victim(
    owner: &veil_client::Client,
    net: &LocalNetwork,
    nodes: usize,
    rng: &mut impl Rng,
) -> usize {
    let keys = net.node_keys();
    let busy: Vec<usize> = owner
        .api()
        .get_json::<Vec<veil_node::api::NodeView>>(api::NODES)
        .map(|views| {
            views
                .iter()
                .filter(|v| v.active_jobs > 0)
                .filter_map(|v| keys.iter().position(|k| *k == v.public_key))
                .collect()
        })
        .unwrap_or_default();
    match busy.len() {
        0 => rng.random_range(0..nodes),
        n => busy[rng.random_range(0..n)],
    }
}

/// A failure cause without its numbers (job, node and attempt ids), cut at 80 characters: the key of
/// `failures_by_cause`.
fn cause_class(cause: &str) -> String {
    if cause.is_empty() {
        return "(no cause)".into();
    }
    let mut class = String::new();
    let mut last_digit = false;
    for c in cause.chars() {
        if c.is_ascii_digit() {
            if !last_digit {
                class.push('#');
            }
            last_digit = true;
        } else {
            class.push(c);
            last_digit = false;
        }
        if class.len() >= 80 {
            break;
        }
    }
    class
}

fn submit_request(
    workload: &str,
    model_seed: u64,
    model: Option<String>,
    parties: u8,
    protocol: &str,
    inferences: usize,
    fp: FixedPoint,
) -> SubmitRequest {
    SubmitRequest {
        workload: workload.into(),
        model_seed,
        weights: "shared".into(),
        frac_bits: fp.frac_bits(),
        batch: 1,
        inferences: inferences as u32,
        parties,
        model,
        output_key: None,
        protocol: protocol.into(),
        stage: None,
        threads: None,
        shaping: None,
    }
}

/// The largest |private - plaintext| over every output value of the job.
fn max_error(
    model: &Model,
    inputs: &[Vec<f32>],
    outputs: &[Vec<f32>],
) -> std::result::Result<f32, String> {
    if outputs.len() != inputs.len() {
        return Err(format!(
            "{} outputs for {} inputs",
            outputs.len(),
            inputs.len()
        ));
    }
    let mut max = 0f32;
    for (x, got) in inputs.iter().zip(outputs) {
        let want = model.forward_plain(x, 1).map_err(|e| e.to_string())?;
        if want.len() != got.len() {
            return Ok(f32::INFINITY);
        }
        for (a, b) in got.iter().zip(&want) {
            let d = (a - b).abs();
            // NaN counts as wrong.
            max = if d.is_nan() {
                f32::INFINITY
            } else {
                max.max(d)
            };
        }
    }
    Ok(max)
}

/// The nodes' heartbeat round-trip histogram (`veil_node_heartbeat_rtt_seconds`), summed over scrapes.
#[derive(Debug, Default, Clone, PartialEq)]
struct HeartbeatHistogram {
    /// `(le, cumulative count)` per finite bucket, in the order the node writes them.
    buckets: Vec<(f64, u64)>,
    count: u64,
}

impl HeartbeatHistogram {
    /// Adds another scrape (buckets matched by bound; the nodes all write the same ones).
    fn add(&mut self, other: &HeartbeatHistogram) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.iter().map(|&(le, _)| (le, 0)).collect();
        }
        for (le, n) in &other.buckets {
            if let Some(b) = self.buckets.iter_mut().find(|(l, _)| l == le) {
                b.1 += n;
            }
        }
        self.count += other.count;
    }

    /// The smallest bucket bound, seconds, under which at least `q` of the observations fall.
    fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let want = (q * self.count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|&&(_, n)| n >= want)
            .map(|&(le, _)| le)
    }

    /// Parses the family from Prometheus text.
    fn parse(text: &str) -> HeartbeatHistogram {
        let mut h = HeartbeatHistogram::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("veil_node_heartbeat_rtt_seconds_bucket{le=\"") {
                let Some((le, value)) = rest.split_once("\"} ") else {
                    continue;
                };
                let (Ok(le), Ok(n)) = (le.parse::<f64>(), value.trim().parse::<f64>()) else {
                    continue;
                };
                if le.is_finite() {
                    h.buckets.push((le, n as u64));
                }
            } else if let Some(v) = line.strip_prefix("veil_node_heartbeat_rtt_seconds_count ") {
                h.count = v.trim().parse::<f64>().map_or(0, |n| n as u64);
            }
        }
        h
    }
}

/// Reads a node's heartbeat histogram from its metrics listener (`host:port`).
fn scrape_heartbeats(address: &str) -> Option<HeartbeatHistogram> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut reply = Vec::new();
    stream.take(1 << 20).read_to_end(&mut reply).ok()?;
    let reply = String::from_utf8(reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| HeartbeatHistogram::parse(body))
}

/// An API client with a fresh key, for the heartbeat probe.
fn probe_client(net: &LocalNetwork) -> Result<veil_node::api_client::ApiClient> {
    let identity = veil_node::Identity::generate()?;
    Ok(veil_node::api_client::ApiClient::new(
        &identity,
        net.coordinator_key(),
        net.address().to_string(),
        Duration::from_secs(10),
    )?)
}

/// Sends a heartbeat every [`PROBE_PERIOD`] until `stop`; returns the round trips of the answered ones, ms,
/// and the count of unanswered ones (transport errors, timeouts).
fn heartbeat_probe(api: &veil_node::api_client::ApiClient, stop: &AtomicBool) -> (Vec<f64>, usize) {
    let body = HeartbeatRequest {
        ready: true,
        load: 0.0,
        queue_len: 0,
        rtts: Vec::new(),
        wait_ms: 0,
        seen: None,
    };
    let (mut latencies, mut errors) = (Vec::new(), 0usize);
    while !stop.load(Ordering::SeqCst) {
        let t0 = Instant::now();
        let answer = api.post_unit(api::HEARTBEAT, &body);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        match answer {
            // The probe's key is no node: 404 after the lookup under the lock is the expected answer.
            Ok(()) | Err(veil_node::api_client::CallError::Status { .. }) => latencies.push(ms),
            Err(_) => errors += 1,
        }
        std::thread::sleep(PROBE_PERIOD.saturating_sub(t0.elapsed()));
    }
    (latencies, errors)
}

/// The process's peak resident set (`VmHWM`), bytes.
fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status"))).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_heartbeat_histograms_sum_and_bound_their_p99() {
        let scrape = |n: [u64; 3], count: u64| {
            HeartbeatHistogram::parse(&format!(
                "# TYPE veil_node_heartbeat_rtt_seconds histogram\n\
                 veil_node_heartbeat_rtt_seconds_bucket{{le=\"0.05\"}} {}\n\
                 veil_node_heartbeat_rtt_seconds_bucket{{le=\"0.2\"}} {}\n\
                 veil_node_heartbeat_rtt_seconds_bucket{{le=\"1\"}} {}\n\
                 veil_node_heartbeat_rtt_seconds_bucket{{le=\"+Inf\"}} {count}\n\
                 veil_node_heartbeat_rtt_seconds_count {count}\n",
                n[0], n[1], n[2]
            ))
        };
        let mut sum = HeartbeatHistogram::default();
        sum.add(&scrape([90, 99, 100], 100));
        sum.add(&scrape([100, 100, 100], 100));
        assert_eq!(sum.count, 200);
        assert_eq!(sum.buckets, vec![(0.05, 190), (0.2, 199), (1.0, 200)]);
        assert_eq!(sum.quantile_bound(0.99), Some(0.2));
        assert_eq!(sum.quantile_bound(0.5), Some(0.05));
        // Past the last finite bucket: no bound.
        let mut slow = HeartbeatHistogram::default();
        slow.add(&scrape([0, 0, 0], 10));
        assert_eq!(slow.quantile_bound(0.99), None);
        assert_eq!(HeartbeatHistogram::default().quantile_bound(0.99), None);
    }

    #[test]
    fn causes_are_classed_without_their_numbers() {
        assert_eq!(
            cause_class("attempt 3 of job 12 failed: node 4 down"),
            "attempt # of job # failed: node # down"
        );
        assert_eq!(cause_class(""), "(no cause)");
        assert!(cause_class(&"x".repeat(500)).len() <= 80);
    }

    #[test]
    fn the_error_of_outputs_counts_nan_and_missing_values_as_wrong() {
        let device = burn::tensor::Device::flex();
        let model = workloads::by_name("network-a", 7, &device)
            .unwrap()
            .unwrap();
        let x = workloads::sample_input(&model, 1, 1);
        let plain = model.forward_plain(&x, 1).unwrap();
        let one = std::slice::from_ref(&x);
        assert_eq!(
            max_error(&model, one, std::slice::from_ref(&plain)),
            Ok(0.0)
        );
        let mut nan = plain.clone();
        nan[0] = f32::NAN;
        assert_eq!(max_error(&model, one, &[nan]), Ok(f32::INFINITY));
        assert_eq!(
            max_error(&model, one, &[plain[1..].to_vec()]),
            Ok(f32::INFINITY)
        );
        assert!(max_error(&model, &[x], &[]).is_err());
    }
}
