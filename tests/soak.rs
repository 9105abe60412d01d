//! `veil soak` in small: a local network in processes, a few jobs of both kinds (network-a semi2k, the
//! deployed breast-cancer classifier spdz2k) in flight while a node holding a role is stopped (SIGKILL: a
//! crash; SIGTERM: a graceful stop that hands its tasks back) and restarted. The invariants of the full run
//! hold: no job is lost (each ends done or failed at the coordinator), no output differs from the
//! plaintext model, every failure carries its cause, and the stop happened.

use std::process::Command;

fn small_soak(signal: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args([
            "soak",
            "--jobs",
            "6",
            "--concurrency",
            "3",
            "--kill-every-s",
            "0.5",
            "--max-kills",
            "1",
            "--signal",
            signal,
            "--nodes",
            "6",
            "--inferences",
            "512",
            "--job-timeout-s",
            "120",
            "--json",
        ])
        .output()
        .expect("running veil soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "veil soak failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().expect("a JSON line");
    let r: serde_json::Value = serde_json::from_str(last).expect("the report is JSON");
    let count = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(count("jobs"), 6);
    assert_eq!(count("lost"), 0, "{r}");
    assert_eq!(count("wrong_outputs"), 0, "{r}");
    assert_eq!(count("done") + count("failed"), 6, "{r}");
    assert_eq!(count("kills"), 1, "{r}");
    assert_eq!(r["signal"], signal, "{r}");
    assert_eq!(count("restart_errors"), 0, "{r}");
    let failures = r["failures"].as_array().expect("failures");
    assert_eq!(failures.len() as u64, count("failed"));
    for f in failures {
        let cause = f["cause"].as_str().unwrap_or_default();
        assert!(!cause.trim().is_empty(), "a failure without its cause: {f}");
    }
    let by_cause: u64 = r["failures_by_cause"]
        .as_object()
        .expect("failures_by_cause")
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_cause, count("failed"));
    // Measured, not assumed: the coordinator's peak RSS and the heartbeat probes are there.
    assert!(count("coordinator_peak_rss_bytes") > 1 << 20, "{r}");
    assert!(count("heartbeat_probes") > 10, "{r}");
    assert!(
        r["heartbeat_p99_ms"].as_f64().is_some_and(|p| p > 0.0),
        "{r}"
    );
    // The nodes' own heartbeats, scraped from their /metrics listeners (node.toml metrics_listen).
    assert!(count("node_heartbeats") > 10, "{r}");
    assert!(r["node_heartbeat_p99_bound_ms"].as_f64().is_some(), "{r}");
}

#[test]
fn a_small_soak_with_a_crash_loses_no_job_and_gets_no_output_wrong() {
    small_soak("kill");
}

#[test]
fn a_small_soak_with_a_graceful_stop_loses_no_job_and_gets_no_output_wrong() {
    small_soak("term");
}
