//! The protocol lab end to end, through the `veil` binary: per-step accounting that adds up to the run's
//! totals (in memory and over QUIC), shaped links, the MP-SPDZ summary, sweeps and the HTML report (opened in
//! headless Chromium when it is installed).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .expect("the veil binary runs")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "veil failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn last_json(out: &Output) -> Value {
    ok(out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).expect("the last line is JSON")
}

fn bench(extra: &[&str]) -> Value {
    let mut args = vec!["bench", "--json", "--reps", "1"];
    args.extend_from_slice(extra);
    last_json(&veil(&args))
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn f(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// Every per-step sum equals the run's total, exactly.
fn assert_layers_add_up(j: &Value) {
    let layers = j["layers"].as_array().expect("layers");
    assert!(!layers.is_empty(), "{j}");
    let sum = |field: &str| layers.iter().map(|l| u(l, field)).sum::<u64>();
    assert_eq!(sum("bytes_sent"), u(j, "bytes_per_party"), "{j}");
    assert_eq!(sum("bytes_sent"), u(j, "data_sent_bytes"), "{j}");
    assert_eq!(sum("rounds"), u(j, "rounds"), "{j}");
    assert_eq!(sum("bytes_all_parties"), u(j, "bytes_all_parties"), "{j}");
    // The per-operation view is the same entries regrouped: it adds up too, one entry per distinct op.
    let ops = j["ops"].as_array().expect("ops");
    let op_sum = |field: &str| ops.iter().map(|o| u(o, field)).sum::<u64>();
    for field in [
        "bytes_sent",
        "rounds",
        "bytes_all_parties",
        "material_words",
    ] {
        assert_eq!(op_sum(field), sum(field), "{field}: {j}");
    }
    let distinct: std::collections::BTreeSet<&str> =
        layers.iter().filter_map(|l| l["op"].as_str()).collect();
    assert_eq!(ops.len(), distinct.len(), "{j}");
    if j["protocol"] != "semi2k" {
        return;
    }
    // semi2k does nothing outside its plan's steps.
    assert!(layers.iter().all(|l| l["op"] != "verify"), "{j}");
    // semi2k's dealer ships a seed per party and the corrections each step consumes, for every inference.
    let parties = u(j, "parties");
    let inferences = u(j, "inferences");
    assert_eq!(
        sum("dealer_bytes") * inferences + 32 * parties,
        u(j, "dealer_bytes_job"),
        "{j}"
    );
    for l in layers {
        let op = l["op"].as_str().expect("op");
        assert!(
            [
                "matmul",
                "matmul-public",
                "trunc",
                "trunc-relu",
                "relu",
                "maxpool"
            ]
            .contains(&op),
            "{l}"
        );
        // Every private step of semi2k consumes dealer material and communicates.
        assert!(u(l, "material_words") > 0, "{l}");
        assert!(u(l, "material_requests") > 0, "{l}");
        assert!(u(l, "rounds") > 0 && u(l, "bytes_sent") > 0, "{l}");
        assert!(f(l, "ms") + 1e-9 >= f(l, "wait_ms"), "{l}");
    }
}

#[test]
fn per_step_bytes_rounds_and_material_add_up_to_the_totals_in_memory() {
    for workload in ["network-a", "lenet"] {
        let j = bench(&["--workload", workload, "--parties", "3"]);
        assert_layers_add_up(&j);
    }
    // spdz2k's closing MAC check runs after the plan's steps: it is accounted as one more entry.
    let j = bench(&[
        "--workload",
        "network-a",
        "--parties",
        "3",
        "--protocol",
        "spdz2k",
    ]);
    assert_layers_add_up(&j);
    let last = j["layers"]
        .as_array()
        .and_then(|l| l.last())
        .expect("layers");
    assert_eq!(last["op"], "verify", "{j}");
    assert!(u(last, "rounds") > 0, "{j}");
}

#[test]
fn per_step_bytes_rounds_and_material_add_up_to_the_totals_over_quic() {
    let j = bench(&[
        "--workload",
        "network-a",
        "--parties",
        "3",
        "--transport",
        "quic",
    ]);
    assert_eq!(j["transport"], "quic");
    assert_layers_add_up(&j);
}

#[test]
fn profile_prints_a_table_of_steps_whose_totals_match() {
    let out = veil(&[
        "bench",
        "--workload",
        "network-a",
        "--parties",
        "2",
        "--reps",
        "1",
        "--profile",
    ]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("layer") && text.contains("op") && text.contains("rounds"));
    assert!(
        text.contains("matmul") && text.contains("linear#0"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.trim_start().starts_with("total")));
}

#[test]
fn offline_include_adds_the_dealer_phase_and_exclude_does_not() {
    let ex = bench(&["--parties", "2", "--offline", "exclude"]);
    assert_eq!(ex["offline"], "exclude");
    assert!(
        (f(&ex, "time_ms") - f(&ex, "online_ms")).abs() < 1e-9,
        "{ex}"
    );
    assert_eq!(
        u(&ex, "global_data_sent_bytes"),
        u(&ex, "bytes_all_parties")
    );
    let inc = bench(&["--parties", "2", "--offline", "include"]);
    assert_eq!(inc["offline"], "include");
    assert!(f(&inc, "offline_ms") > 0.0, "{inc}");
    // Offline is the dealer's work plus the parties' preprocessing, which in memory happens before the clock.
    assert!(f(&inc, "preprocess_ms") > 0.0, "{inc}");
    assert!(
        (f(&inc, "offline_ms") - f(&inc, "dealer_ms") - f(&inc, "preprocess_ms")).abs() < 1e-9,
        "{inc}"
    );
    assert!(
        (f(&inc, "time_ms") - f(&inc, "online_ms") - f(&inc, "offline_ms")).abs() < 1e-9,
        "{inc}"
    );
    assert_eq!(
        u(&inc, "global_data_sent_bytes"),
        u(&inc, "bytes_all_parties") + u(&inc, "dealer_bytes")
    );
}

#[test]
fn every_bench_adversary_aborts_and_releases_nothing_in_memory_and_over_quic() {
    for transport in ["mem", "quic"] {
        for adversary in [
            "flip-share",
            "wrong-triple",
            "bad-mac",
            "skip-round",
            "wrong-output",
        ] {
            let out = veil(&[
                "bench",
                "--workload",
                "network-a",
                "--protocol",
                "spdz2k",
                "--transport",
                transport,
                "--adversary",
                adversary,
                "--json",
            ]);
            let j = last_json(&out);
            assert_eq!(j["adversary"], adversary, "{j}");
            assert_eq!(j["verified"], false, "{transport} {adversary}: {j}");
            assert_eq!(j["output_released"], false, "{transport} {adversary}: {j}");
            let outcome = j["outcome"].as_str().unwrap_or_default();
            let expected = if adversary == "skip-round" {
                "timed out"
            } else {
                "verification failed"
            };
            assert!(
                outcome.contains(expected),
                "{transport} {adversary}: {outcome}"
            );
        }
    }
    let semi = veil(&["bench", "--protocol", "semi2k", "--adversary", "flip-share"]);
    assert!(!semi.status.success(), "semi2k cannot detect a deviation");
}

fn assert_shaped_lower_bound(transport: &str) {
    let plain = bench(&[
        "--workload",
        "network-a",
        "--parties",
        "2",
        "--transport",
        transport,
    ]);
    let shaped = bench(&[
        "--workload",
        "network-a",
        "--parties",
        "2",
        "--transport",
        transport,
        "--latency",
        "20",
    ]);
    let rounds = u(&shaped, "rounds");
    assert!(rounds > 0);
    // Each round waits for a message sent in it, which no link delivers in under 20 ms.
    assert!(
        f(&shaped, "latency_ms") >= rounds as f64 * 20.0,
        "{} ms for {rounds} rounds",
        f(&shaped, "latency_ms")
    );
    // Shaping changes time, not the protocol: the same bytes and rounds.
    assert_eq!(u(&shaped, "bytes_per_party"), u(&plain, "bytes_per_party"));
    assert_eq!(rounds, u(&plain, "rounds"));
    assert_eq!(shaped["network"]["latency_ms"], 20.0);
    let estimate = f(&shaped, "estimated_ms");
    assert!(estimate >= rounds as f64 * 20.0, "{shaped}");
}

#[test]
fn shaped_links_take_at_least_rounds_times_latency_in_memory() {
    assert_shaped_lower_bound("mem");
}

#[test]
fn shaped_links_take_at_least_rounds_times_latency_over_quic() {
    assert_shaped_lower_bound("quic");
}

#[test]
fn bad_shaping_and_unknown_protocols_are_clear_errors() {
    let out = veil(&["bench", "--latency=-3", "--reps", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("latency"));
    let out = veil(&["bench", "--protocol", "nope", "--reps", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("semi2k"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sweep.jsonl");
    let out = veil(&[
        "bench",
        "--sweep",
        "--out",
        file.to_str().expect("utf-8 path"),
        "--sweep-protocols",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown protocol"));
}

/// Opens `index` in headless Chromium; returns the rendered DOM and the browser's log.
fn chromium(index: &Path) -> Option<(String, String)> {
    let browser = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let profile = tempfile::tempdir().expect("temp dir");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", index.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn attr(dom: &str, name: &str) -> Option<usize> {
    let start = dom.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + dom[start..].find('"')?;
    dom[start..end].parse().ok()
}

#[test]
fn the_report_renders_a_sweep_of_several_protocols_and_opens_cleanly_in_chromium() {
    // A real run, then a synthetic sweep: the same run under three protocol names and two networks.
    let base = bench(&["--workload", "network-a", "--parties", "2"]);
    let wan = bench(&[
        "--workload",
        "network-a",
        "--parties",
        "2",
        "--latency",
        "5",
        "--bandwidth",
        "1000",
    ]);
    let mut lines = Vec::new();
    for (i, protocol) in ["semi2k", "spdz2k", "<lab-proto>"].into_iter().enumerate() {
        for run in [&base, &wan] {
            let mut r = run.clone();
            r["protocol"] = Value::from(protocol);
            r["parties"] = Value::from(2 + i);
            lines.push(serde_json::to_string(&r).expect("json"));
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sweep = dir.path().join("sweep.jsonl");
    std::fs::write(&sweep, lines.join("\n") + "\n").expect("write sweep");
    let out_dir = dir.path().join("report");
    ok(&veil(&[
        "report",
        sweep.to_str().expect("utf-8 path"),
        "--out",
        out_dir.to_str().expect("utf-8 path"),
    ]));
    let index = out_dir.join("index.html");
    let html = std::fs::read_to_string(&index).expect("index.html");
    let charts = attr(&html, "data-charts").expect("chart count");
    // network-a: latency x 2 networks, bytes, per-step time and bytes; and measured vs estimated WAN.
    assert_eq!(charts, 6, "{html:.400}");
    assert_eq!(html.matches("<svg").count(), charts);
    assert!(html.contains("spdz2k") && html.contains("&lt;lab-proto&gt;"));
    assert!(!html.contains("<lab-proto>"), "labels must be escaped");
    assert!(html.contains("estimated"));

    match chromium(&index) {
        Some((dom, log)) => {
            assert_eq!(
                attr(&dom, "data-charts-rendered"),
                Some(charts),
                "not every chart rendered:\n{log}"
            );
            let console: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
                .collect();
            assert!(console.is_empty(), "console output: {console:#?}");
        }
        None => eprintln!("chromium not installed: the browser check is skipped"),
    }
}

#[test]
fn a_small_sweep_writes_one_line_per_run_and_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sweep = dir.path().join("sweep.jsonl");
    let out = veil(&[
        "bench",
        "--sweep",
        "--out",
        sweep.to_str().expect("utf-8 path"),
        "--sweep-parties",
        "2,3",
        "--sweep-workloads",
        "network-a",
        "--sweep-networks",
        "none,2:1000",
        "--reps",
        "1",
        "--wan-reps",
        "1",
    ]);
    ok(&out);
    let text = std::fs::read_to_string(&sweep).expect("sweep file");
    let runs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    // Every protocol the bench measures x the party counts it runs with (rep3, rep3m: 3 only) x 2 networks.
    assert!(runs
        .iter()
        .filter(|r| r["protocol"] == "rep3" || r["protocol"] == "rep3m")
        .all(|r| r["parties"] == 3 && r["dealer_bytes"] == 0));
    // Every protocol at every party count it runs with, unshaped and shaped, with its exact online bytes
    // (busiest party) and rounds per inference on network-a (deterministic: shaping changes neither).
    let pinned: [(&str, u64, u64, u64); 6] = [
        ("semi2k", 2, 15_280, 18),
        ("semi2k", 3, 30_560, 18),
        ("spdz2k", 2, 29_976, 22),
        ("spdz2k", 3, 59_952, 22),
        ("rep3", 3, 17_456, 16),
        ("rep3m", 3, 39_848, 68),
    ];
    assert_eq!(runs.len(), 2 * pinned.len());
    for (protocol, parties, bytes, rounds) in pinned {
        let rows: Vec<&Value> = runs
            .iter()
            .filter(|r| r["protocol"] == protocol && r["parties"] == parties)
            .collect();
        assert_eq!(rows.len(), 2, "{protocol} {parties}p");
        for r in rows {
            assert_eq!(
                (u(r, "bytes_per_party"), u(r, "rounds")),
                (bytes, rounds),
                "{protocol} {parties}p"
            );
        }
    }
    assert!(runs.iter().any(|r| r["network"].is_null()));
    assert!(runs
        .iter()
        .any(|r| r["network"]["latency_ms"] == 2.0 && r["estimated_ms"].is_number()));
    for r in &runs {
        assert_layers_add_up(r);
    }
    let out_dir = dir.path().join("report");
    ok(&veil(&[
        "report",
        sweep.to_str().expect("utf-8 path"),
        "--out",
        out_dir.to_str().expect("utf-8 path"),
    ]));
    assert!(out_dir.join("index.html").exists());
}
