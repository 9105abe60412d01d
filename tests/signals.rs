//! SIGTERM stops the daemons: `veil devnet` (not on a terminal) stops every process it started and exits
//! within 10 s, and so does a lone `veil coordinator`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pids whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the fields after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` still runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (at most `limit`) for `child` to exit; returns how long it took.
fn exits_within(child: &mut Child, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exited with {status}");
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

#[test]
fn sigterm_stops_devnet_and_every_process_it_started_within_10_s() {
    let mut devnet = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["devnet", "--nodes", "3", "--log", "warn"])
        // A pipe that stays open: only the signal may stop it.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = first_line(&mut devnet);
    let ready: serde_json::Value = serde_json::from_str(line.trim()).expect("the ready line");
    assert_eq!(ready["event"], "ready");
    let children = children_of(devnet.id());
    assert_eq!(children.len(), 4, "a coordinator and 3 nodes: {children:?}");
    sigterm(devnet.id());
    let took = exits_within(&mut devnet, Duration::from_secs(10));
    let left: Vec<u32> = children.iter().copied().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "still running after devnet exited: {left:?}"
    );
    eprintln!(
        "veil devnet and its 4 processes stopped {} ms after SIGTERM",
        took.as_millis()
    );
}

#[test]
fn sigterm_stops_a_coordinator_within_10_s() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("coordinator.log");
    let mut coordinator = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["--log-format", "json", "coordinator", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(first_line(&mut coordinator).contains("\"ready\""));
    sigterm(coordinator.id());
    let took = exits_within(&mut coordinator, Duration::from_secs(10));
    eprintln!(
        "veil coordinator stopped {} ms after SIGTERM",
        took.as_millis()
    );
    // `--log-format json`: every line of its log is one JSON object, and the stop is logged.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp_ms"].is_u64()));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "coordinator listening" && l["fields"]["address"].is_string()),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "stopping" && l["fields"]["signal"] == "SIGTERM"),
        "{text}"
    );
    // Its state closed cleanly: it starts again on the same directory.
    let mut again = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["coordinator", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(first_line(&mut again).contains("\"ready\""));
    sigterm(again.id());
    exits_within(&mut again, Duration::from_secs(10));
}
