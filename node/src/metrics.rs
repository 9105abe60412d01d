//! The node's metrics as Prometheus text (exposition format 0.0.4), and the plain-HTTP listener that
//! serves them at `/metrics` when `metrics_listen` is set in `node.toml` (opt-in; bind it to localhost).
//!
//! Families: heartbeats sent by outcome and their round-trip histogram; registrations by outcome; the
//! coordinator's tasks started by role and ended by outcome; calls to the coordinator retried; tasks
//! running now; trials by outcome; the most dealer material held at once for one job. Counters live in
//! process-wide atomics ([`METRICS`]), so a restart starts them from zero, as Prometheus expects of
//! counters.
//!
//! Invariants: the listener reads at most [`MAX_REQUEST_HEAD`] bytes of a request, waits at most
//! [`IO_TIMEOUT`] for them, answers only `GET /metrics` (404 otherwise) and closes every connection after
//! one answer; it exposes counts and times, never a share, key, input or output.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::NodeError;

/// Bucket bounds of the heartbeat round-trip histogram, seconds.
pub const HEARTBEAT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 10.0,
];
/// Longest request head the listener reads, bytes.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;
/// Longest wait for a request head or for the client to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A task's role, for the task families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// An execution party.
    Party,
    /// The dealer.
    Dealer,
    /// The verifier.
    Verifier,
}

/// How a task ended on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Its work was handed to the coordinator (output, owner material served, receipt).
    Done,
    /// It failed and was reported failed.
    Failed,
    /// The coordinator dropped it (the attempt ended elsewhere).
    Dropped,
    /// Handed back at shutdown.
    HandedBack,
    /// A previous process's task, reported failed after a restart.
    Orphaned,
}

const ROLES: [(TaskKind, &str); 3] = [
    (TaskKind::Party, "party"),
    (TaskKind::Dealer, "dealer"),
    (TaskKind::Verifier, "verifier"),
];
const OUTCOMES: [(TaskOutcome, &str); 5] = [
    (TaskOutcome::Done, "done"),
    (TaskOutcome::Failed, "failed"),
    (TaskOutcome::Dropped, "dropped"),
    (TaskOutcome::HandedBack, "handed_back"),
    (TaskOutcome::Orphaned, "orphaned"),
];

/// The node's counters.
pub struct NodeMetrics {
    heartbeats_ok: AtomicU64,
    heartbeats_failed: AtomicU64,
    /// Invariant: `heartbeat_buckets[i]` counts round trips <= `HEARTBEAT_BUCKETS[i]` (cumulative at
    /// render time, not here: each observation lands in its first fitting bucket, or none past the last).
    heartbeat_buckets: [AtomicU64; 12],
    heartbeat_sum_us: AtomicU64,
    registrations_ok: AtomicU64,
    registrations_failed: AtomicU64,
    tasks_started: [AtomicU64; 3],
    tasks_ended: [AtomicU64; 5],
    retries: AtomicU64,
    running: AtomicU64,
    trials_answered: AtomicU64,
    trials_failed: AtomicU64,
    /// The most correction words a dealer of this process held at once for one job.
    dealer_peak_words: AtomicU64,
}

/// The process's metrics.
pub static METRICS: NodeMetrics = NodeMetrics::new();

impl NodeMetrics {
    const fn new() -> NodeMetrics {
        NodeMetrics {
            heartbeats_ok: AtomicU64::new(0),
            heartbeats_failed: AtomicU64::new(0),
            heartbeat_buckets: [const { AtomicU64::new(0) }; 12],
            heartbeat_sum_us: AtomicU64::new(0),
            registrations_ok: AtomicU64::new(0),
            registrations_failed: AtomicU64::new(0),
            tasks_started: [const { AtomicU64::new(0) }; 3],
            tasks_ended: [const { AtomicU64::new(0) }; 5],
            retries: AtomicU64::new(0),
            running: AtomicU64::new(0),
            trials_answered: AtomicU64::new(0),
            trials_failed: AtomicU64::new(0),
            dealer_peak_words: AtomicU64::new(0),
        }
    }

    /// A heartbeat answered after `rtt` (`ok`: a 2xx; otherwise an error status or no answer).
    pub fn heartbeat(&self, ok: bool, rtt: Duration) {
        if !ok {
            self.heartbeats_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.heartbeats_ok.fetch_add(1, Ordering::Relaxed);
        let s = rtt.as_secs_f64();
        if let Some(i) = HEARTBEAT_BUCKETS.iter().position(|&b| s <= b) {
            self.heartbeat_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.heartbeat_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A registration attempt.
    pub fn registration(&self, ok: bool) {
        let c = if ok {
            &self.registrations_ok
        } else {
            &self.registrations_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A task started (and is running until [`NodeMetrics::task_ended`]).
    pub fn task_started(&self, kind: TaskKind) {
        let i = ROLES.iter().position(|(k, _)| *k == kind).unwrap_or(0);
        self.tasks_started[i].fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// A task ended.
    pub fn task_ended(&self, outcome: TaskOutcome) {
        let i = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.tasks_ended[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1));
    }

    /// A call to the coordinator tried again.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A trial answered (`ok`), or one that could not be run or sent.
    pub fn trial(&self, ok: bool) {
        let c = if ok {
            &self.trials_answered
        } else {
            &self.trials_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A dealt job's most correction words held at once (see `DealerState::peak_words`).
    pub fn dealer_held(&self, words: u64) {
        self.dealer_peak_words.fetch_max(words, Ordering::Relaxed);
    }

    /// The exposition.
    pub fn render(&self) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        family(
            &mut out,
            "veil_node_heartbeats_total",
            "counter",
            "Heartbeats sent to the coordinator, by outcome.",
        );
        sample(
            &mut out,
            "veil_node_heartbeats_total",
            &[("outcome", "ok")],
            load(&self.heartbeats_ok) as f64,
        );
        sample(
            &mut out,
            "veil_node_heartbeats_total",
            &[("outcome", "failed")],
            load(&self.heartbeats_failed) as f64,
        );
        let name = "veil_node_heartbeat_rtt_seconds";
        family(
            &mut out,
            name,
            "histogram",
            "Round trip of the heartbeats the coordinator answered (a fresh TLS connection each).",
        );
        let mut cumulative = 0u64;
        for (bound, count) in HEARTBEAT_BUCKETS.iter().zip(&self.heartbeat_buckets) {
            cumulative += load(count);
            sample(
                &mut out,
                &format!("{name}_bucket"),
                &[("le", &bound.to_string())],
                cumulative as f64,
            );
        }
        let total = load(&self.heartbeats_ok);
        sample(
            &mut out,
            &format!("{name}_bucket"),
            &[("le", "+Inf")],
            total as f64,
        );
        sample(
            &mut out,
            &format!("{name}_sum"),
            &[],
            load(&self.heartbeat_sum_us) as f64 / 1e6,
        );
        sample(&mut out, &format!("{name}_count"), &[], total as f64);
        family(
            &mut out,
            "veil_node_registrations_total",
            "counter",
            "Registrations with the coordinator, by outcome.",
        );
        for (label, c) in [
            ("ok", &self.registrations_ok),
            ("failed", &self.registrations_failed),
        ] {
            sample(
                &mut out,
                "veil_node_registrations_total",
                &[("outcome", label)],
                load(c) as f64,
            );
        }
        family(
            &mut out,
            "veil_node_tasks_started_total",
            "counter",
            "Coordinator tasks started, by role.",
        );
        for ((_, role), c) in ROLES.iter().zip(&self.tasks_started) {
            sample(
                &mut out,
                "veil_node_tasks_started_total",
                &[("role", role)],
                load(c) as f64,
            );
        }
        family(
            &mut out,
            "veil_node_tasks_ended_total",
            "counter",
            "Coordinator tasks ended, by outcome.",
        );
        for ((_, outcome), c) in OUTCOMES.iter().zip(&self.tasks_ended) {
            sample(
                &mut out,
                "veil_node_tasks_ended_total",
                &[("outcome", outcome)],
                load(c) as f64,
            );
        }
        family(
            &mut out,
            "veil_node_tasks_running",
            "gauge",
            "Coordinator tasks running on this node now.",
        );
        sample(
            &mut out,
            "veil_node_tasks_running",
            &[],
            load(&self.running) as f64,
        );
        family(
            &mut out,
            "veil_node_coordinator_retries_total",
            "counter",
            "Calls to the coordinator tried again (no answer, 408, 429 or 5xx).",
        );
        sample(
            &mut out,
            "veil_node_coordinator_retries_total",
            &[],
            load(&self.retries) as f64,
        );
        family(
            &mut out,
            "veil_node_trials_total",
            "counter",
            "Trial jobs, by outcome (answered, or not run or not sent).",
        );
        for (label, c) in [
            ("answered", &self.trials_answered),
            ("failed", &self.trials_failed),
        ] {
            sample(
                &mut out,
                "veil_node_trials_total",
                &[("outcome", label)],
                load(c) as f64,
            );
        }
        family(
            &mut out,
            "veil_node_dealer_material_peak_bytes",
            "gauge",
            "Most dealer material (corrections, 8 bytes a word) this node held at once for one job it dealt.",
        );
        sample(
            &mut out,
            "veil_node_dealer_material_peak_bytes",
            &[],
            load(&self.dealer_peak_words).saturating_mul(8) as f64,
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample; label values here are fixed names, never outside input.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Binds `address` and serves [`METRICS`] at `GET /metrics` on a thread of its own, one connection at a
/// time (a localhost scrape endpoint); returns the bound address.
pub fn serve(address: SocketAddr) -> Result<SocketAddr, NodeError> {
    let listener = TcpListener::bind(address)
        .map_err(|e| NodeError::System("binding the metrics listener", e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::System("reading the metrics listener's address", e))?;
    std::thread::Builder::new()
        .name("veil-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = answer(s) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("metrics listener: {e}"),
                }
            }
        })
        .map_err(|e| NodeError::System("starting the metrics listener", e))?;
    Ok(bound)
}

/// Reads one request head (bounded in size and time) and answers it.
fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "");
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next()) {
        (Some(b"GET"), Some(b"/metrics")) => respond(&mut stream, "200 OK", &METRICS.render()),
        _ => respond(&mut stream, "404 Not Found", ""),
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal check of the text format: every sample's family was declared before it with a known
    /// type, names and labels are well formed, values parse, histogram buckets are cumulative and end in
    /// `+Inf` equal to `_count`.
    /// One parsed sample: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    fn parse(text: &str) -> Vec<Sample> {
        let mut types = std::collections::HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with("# HELP ") || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => {
                    let l = l.strip_suffix('}').expect("closing brace");
                    let labels = l
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label k=v");
                            let v = v
                                .strip_prefix('"')
                                .and_then(|v| v.strip_suffix('"'))
                                .expect("quoted label value");
                            (k.to_string(), v.to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{name}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                .unwrap_or(&name);
            assert!(types.contains_key(family), "{name} before its # TYPE");
            samples.push((name, labels, value));
        }
        samples
    }

    #[test]
    fn the_exposition_parses_and_counts_what_happened() {
        let m = NodeMetrics::new();
        m.heartbeat(true, Duration::from_millis(3));
        m.heartbeat(true, Duration::from_millis(120));
        m.heartbeat(true, Duration::from_secs(20));
        m.heartbeat(false, Duration::from_millis(1));
        m.task_started(TaskKind::Dealer);
        m.task_started(TaskKind::Party);
        m.task_ended(TaskOutcome::Orphaned);
        m.retry();
        m.dealer_held(300);
        m.dealer_held(100);
        let samples = parse(&m.render());
        let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
            samples
                .iter()
                .find(|(n, l, _)| {
                    n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
                })
                .map(|s| s.2)
                .unwrap_or_else(|| panic!("{name} {label:?}"))
        };
        assert_eq!(
            value("veil_node_heartbeats_total", Some(("outcome", "ok"))),
            3.0
        );
        assert_eq!(
            value("veil_node_heartbeats_total", Some(("outcome", "failed"))),
            1.0
        );
        let bucket = |le: &str| value("veil_node_heartbeat_rtt_seconds_bucket", Some(("le", le)));
        assert_eq!(bucket("0.005"), 1.0);
        assert_eq!(bucket("0.1"), 1.0);
        assert_eq!(bucket("0.15"), 2.0);
        assert_eq!(bucket("10"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
        assert_eq!(value("veil_node_heartbeat_rtt_seconds_count", None), 3.0);
        let sum = value("veil_node_heartbeat_rtt_seconds_sum", None);
        assert!((sum - 20.123).abs() < 1e-9, "{sum}");
        assert_eq!(
            value("veil_node_tasks_started_total", Some(("role", "dealer"))),
            1.0
        );
        assert_eq!(
            value("veil_node_tasks_ended_total", Some(("outcome", "orphaned"))),
            1.0
        );
        assert_eq!(value("veil_node_tasks_running", None), 1.0);
        assert_eq!(value("veil_node_coordinator_retries_total", None), 1.0);
        assert_eq!(
            value("veil_node_dealer_material_peak_bytes", None),
            2400.0,
            "the largest job's peak, 8 bytes a word"
        );
    }

    #[test]
    fn the_listener_answers_get_metrics_and_nothing_else() {
        let address = serve(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let get = |request: &str| -> String {
            let mut s = TcpStream::connect(address).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            reply
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        let body = ok.split_once("\r\n\r\n").unwrap().1;
        assert!(!parse(body).is_empty());
        assert!(body.contains("# TYPE veil_node_heartbeat_rtt_seconds histogram"));
        let other = get("GET /secrets HTTP/1.1\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        // A head that never ends: refused once the bound is read (all of it, so the close is clean).
        assert!(get(&"a".repeat(MAX_REQUEST_HEAD)).starts_with("HTTP/1.1 431"));
    }
}
