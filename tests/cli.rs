//! The `veil` binary as a user runs it: a real process, its output and exit status.

use std::process::Command;

fn veil(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .expect("the veil binary runs")
}

fn last_json(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).expect("the last line is JSON")
}

#[test]
fn bench_network_a_reports_every_field_and_meets_the_byte_round_and_error_targets() {
    let out = veil(&[
        "bench",
        "--workload",
        "network-a",
        "--protocol",
        "semi2k",
        "--parties",
        "3",
        "--batch",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = last_json(&out);
    for field in [
        "workload",
        "protocol",
        "parties",
        "batch",
        "transport",
        "latency_ms",
        "plaintext_ms",
        "bytes_per_party",
        "dealer_bytes",
        "rounds",
        "max_abs_err",
        "layers",
    ] {
        assert!(j.get(field).is_some(), "missing {field} in {j}");
    }
    assert_eq!(j["workload"], "network-a");
    assert_eq!(j["transport"], "mem");
    assert!(
        j["bytes_per_party"].as_u64().expect("number") <= 200_000,
        "{j}"
    );
    assert!(j["rounds"].as_u64().expect("number") <= 40, "{j}");
    assert!(j["max_abs_err"].as_f64().expect("number") <= 1e-3, "{j}");
    // The per-layer figures add up to the run's totals.
    let layers = j["layers"].as_array().expect("array");
    let bytes: u64 = layers
        .iter()
        .map(|l| l["bytes_sent"].as_u64().expect("number"))
        .sum();
    let rounds: u64 = layers
        .iter()
        .map(|l| l["rounds"].as_u64().expect("number"))
        .sum();
    assert_eq!(rounds, j["rounds"].as_u64().expect("number"));
    assert!(bytes >= j["bytes_per_party"].as_u64().expect("number"));
}

#[test]
fn bench_lenet_meets_the_byte_and_error_targets() {
    let out = veil(&[
        "bench",
        "--workload",
        "lenet",
        "--parties",
        "3",
        "--reps",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = last_json(&out);
    assert!(
        j["bytes_per_party"].as_u64().expect("number") <= 5_000_000,
        "{j}"
    );
    assert!(j["max_abs_err"].as_f64().expect("number") <= 1e-2, "{j}");
}

#[test]
fn bench_gemm_reports_ring_and_f32_throughput() {
    let out = veil(&["bench", "--workload", "gemm", "--reps", "3", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = last_json(&out);
    assert!(j["ring_gops"].as_f64().expect("number") > 0.0);
    assert!(j["f32_gops"].as_f64().expect("number") > 0.0);
}

#[test]
fn demo_classifies_the_held_out_rows_like_plaintext() {
    let out = veil(&["demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("114/114 private predictions equal the plaintext ones"),
        "{stdout}"
    );
    let accuracy: f64 = stdout
        .split("accuracy: private ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .expect("an accuracy line");
    assert!(accuracy >= 0.9, "{stdout}");
}

#[test]
fn bad_arguments_fail_with_a_clear_message_and_no_panic() {
    for (args, needle) in [
        (vec!["bench", "--parties", "1"], "at least 2"),
        (vec!["bench", "--workload", "resnet"], "unknown workload"),
        (vec!["bench", "--frac-bits", "40"], "too large for the ring"),
        (vec!["bench", "--protocol", "nope"], "unknown protocol"),
    ] {
        let out = veil(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
