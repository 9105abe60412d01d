//! The coordinator's metrics as Prometheus text (exposition format 0.0.4), written by hand from a snapshot
//! of the state at each scrape, and the plain-HTTP listener that serves them at `/metrics`
//! (`metrics_listen`, localhost by default).
//!
//! Families: jobs by phase and finished jobs by outcome; attempt failures by cause; decision latency
//! (submission to the first committee) and job latency (submission to done or failed) histograms; the
//! committees' estimated bytes and rounds and the dealer's material (from each job's demand estimate);
//! nodes by state and each node's reputation; requests the HTTPS edge refused, by limit. Jobs submitted
//! before this process started have no submission time here and are left out of the histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use veil_scheduler::{FailureCause, Phase};

use crate::http::limits::{Edge, Refusal};
use crate::http::Shared;
use crate::Coordinator;

/// Bucket bounds of the latency histograms, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// A Prometheus text exposition being written. Invariant: every sample follows its family's `# TYPE`.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let escaped = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{escaped}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, observations: &[f64]) {
        self.family(name, "histogram", help);
        for bound in LATENCY_BUCKETS {
            let n = observations.iter().filter(|&&x| x <= bound).count();
            self.sample(
                &format!("{name}_bucket"),
                &[("le", &bound.to_string())],
                n as f64,
            );
        }
        let count = observations.len() as f64;
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], count);
        self.sample(&format!("{name}_sum"), &[], observations.iter().sum());
        self.sample(&format!("{name}_count"), &[], count);
    }
}

fn phase_label(p: Phase) -> &'static str {
    match p {
        Phase::Submitted => "submitted",
        Phase::Scheduled => "scheduled",
        Phase::Running => "running",
        Phase::Verifying => "verifying",
        Phase::Done => "done",
        Phase::Failed => "failed",
    }
}

fn cause_label(c: &FailureCause) -> &'static str {
    match c {
        FailureCause::Timeout(_) => "timeout",
        FailureCause::NodeFailure => "node_failure",
        FailureCause::VerificationFailed => "verification_failed",
        FailureCause::Unplaceable(_) => "unplaceable",
        FailureCause::Cancelled => "cancelled",
        FailureCause::RejectedInput(_) => "rejected_input",
    }
}

const PHASES: [Phase; 6] = [
    Phase::Submitted,
    Phase::Scheduled,
    Phase::Running,
    Phase::Verifying,
    Phase::Done,
    Phase::Failed,
];

/// The exposition of `c`'s state and the edge's counters.
pub fn render(c: &Coordinator, edge: &Edge) -> String {
    let mut out = Exposition::default();
    let submitted = c.submission_times();
    let mut by_phase: BTreeMap<&str, u64> = PHASES.iter().map(|p| (phase_label(*p), 0)).collect();
    let mut causes: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut decisions, mut latencies) = (Vec::new(), Vec::new());
    let (mut party_bytes, mut dealer_bytes, mut rounds) = (0u64, 0u64, 0u64);
    let mut dealer_memory_in_use = 0u64;
    for job in c.job_records() {
        *by_phase.entry(phase_label(job.phase())).or_default() += 1;
        for t in job.history() {
            if let Some(cause) = &t.cause {
                *causes.entry(cause_label(cause)).or_default() += 1;
            }
        }
        for d in &job.stages {
            party_bytes =
                party_bytes.saturating_add(d.party.bytes.saturating_mul(u64::from(d.parties)));
            dealer_bytes = dealer_bytes.saturating_add(d.dealer.map_or(0, |r| r.bytes));
            rounds = rounds.saturating_add(u64::from(d.rounds));
            if matches!(
                job.phase(),
                Phase::Scheduled | Phase::Running | Phase::Verifying
            ) {
                dealer_memory_in_use =
                    dealer_memory_in_use.saturating_add(d.dealer.map_or(0, |r| r.memory_bytes));
            }
        }
        if let Some(&at) = submitted.get(&job.id.0) {
            let seconds = |t: u64| t.saturating_sub(at) as f64 / 1e3;
            if let Some(first) = job.history().iter().find(|t| t.to == Phase::Scheduled) {
                decisions.push(seconds(first.at));
            }
            if let Some(end) = job
                .history()
                .iter()
                .find(|t| matches!(t.to, Phase::Done | Phase::Failed))
            {
                latencies.push(seconds(end.at));
            }
        }
    }
    out.family("veil_jobs", "gauge", "Jobs by current phase.");
    for (phase, n) in &by_phase {
        out.sample("veil_jobs", &[("phase", phase)], *n as f64);
    }
    out.family(
        "veil_jobs_finished_total",
        "counter",
        "Jobs finished, by outcome.",
    );
    for outcome in ["done", "failed"] {
        out.sample(
            "veil_jobs_finished_total",
            &[("outcome", outcome)],
            by_phase.get(outcome).copied().unwrap_or(0) as f64,
        );
    }
    out.family(
        "veil_attempt_failures_total",
        "counter",
        "Attempts that failed (retried or final), by cause.",
    );
    for cause in [
        "timeout",
        "node_failure",
        "verification_failed",
        "unplaceable",
        "cancelled",
        "rejected_input",
    ] {
        out.sample(
            "veil_attempt_failures_total",
            &[("cause", cause)],
            causes.get(cause).copied().unwrap_or(0) as f64,
        );
    }
    out.histogram(
        "veil_job_decision_seconds",
        "From submission to the first committee chosen.",
        &decisions,
    );
    out.histogram(
        "veil_job_duration_seconds",
        "From submission to done or failed.",
        &latencies,
    );
    out.family(
        "veil_job_estimated_bytes_total",
        "counter",
        "Bytes the committees of all jobs are estimated to send, by role.",
    );
    out.sample(
        "veil_job_estimated_bytes_total",
        &[("role", "parties")],
        party_bytes as f64,
    );
    out.sample(
        "veil_job_estimated_bytes_total",
        &[("role", "dealer")],
        dealer_bytes as f64,
    );
    out.family(
        "veil_job_estimated_rounds_total",
        "counter",
        "Online rounds of all jobs, as estimated at submission.",
    );
    out.sample("veil_job_estimated_rounds_total", &[], rounds as f64);
    out.family(
        "veil_dealer_material_bytes_total",
        "counter",
        "Correlated material the dealers of all jobs are estimated to stream.",
    );
    out.sample("veil_dealer_material_bytes_total", &[], dealer_bytes as f64);
    out.family(
        "veil_dealer_memory_bytes",
        "gauge",
        "Memory the dealers of scheduled, running and verifying jobs are estimated to hold.",
    );
    out.sample("veil_dealer_memory_bytes", &[], dealer_memory_in_use as f64);

    let nodes = c.nodes();
    let mut by_state: BTreeMap<&str, u64> = ["probation", "active", "draining", "down", "rejected"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for n in &nodes {
        if let Some(count) = by_state.get_mut(n.state.as_str()) {
            *count += 1;
        }
    }
    out.family("veil_nodes", "gauge", "Nodes by state.");
    for (state, n) in &by_state {
        out.sample("veil_nodes", &[("state", state)], *n as f64);
    }
    out.family(
        "veil_node_reputation",
        "gauge",
        "Each node's reputation, in (0, 1].",
    );
    for n in &nodes {
        out.sample(
            "veil_node_reputation",
            &[("node", &n.id.to_string())],
            n.reputation,
        );
    }
    out.family(
        "veil_http_refused_total",
        "counter",
        "Requests the HTTPS edge refused, by limit.",
    );
    for reason in Refusal::ALL {
        out.sample(
            "veil_http_refused_total",
            &[("limit", reason.label())],
            edge.refused(reason) as f64,
        );
    }
    out.0
}

/// Serves `/metrics` over plain HTTP on `listener` (bind it to localhost: the figures are for the
/// operator).
pub async fn serve(listener: tokio::net::TcpListener, state: Shared, edge: Arc<Edge>) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (state, edge) = (state.clone(), edge.clone());
            async move {
                let text = tokio::task::spawn_blocking(move || {
                    state.lock().ok().map(|c| render(&c, &edge))
                })
                .await
                .ok()
                .flatten();
                match text {
                    Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                        .into_response(),
                    None => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics listener: {e}");
    }
}

/// The address the metrics listener binds by default.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
