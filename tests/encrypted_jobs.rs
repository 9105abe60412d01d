//! Encrypted jobs end to end, over real processes: `veil devnet` (a coordinator and five nodes), then
//! `veil deploy` and `veil infer` as a user runs them.
//!
//! - The shipped breast-cancer model's private predictions equal its plaintext ones on the whole shipped
//!   test slice, with accuracy >= 0.9; and, from a record of every byte the coordinator and each node
//!   received (and every plaintext a node opened), the encoded plaintext input never appears anywhere and no
//!   node ever holds a share addressed to another node.
//! - A sealed input changed in one bit, sealed to the wrong node, or replayed from another job is refused by
//!   the node with a clear error, the job fails without retry, and the refusing node never computes on it.
//! - Input of the wrong shape or with NaN is refused by the client before anything is sent.

mod common;

use std::path::Path;
use std::process::Command;

use common::devnet::{exe, shipped, Devnet, Options};
use serde_json::Value;
use veil_engine::model_file::{argmax, ModelFile};

/// The shipped rows: 30 features, then the class.
fn rows() -> Vec<(Vec<f32>, usize)> {
    std::fs::read_to_string(shipped("test.csv"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Vec<f32> = l.split(',').map(|c| c.trim().parse().unwrap()).collect();
            (v[..30].to_vec(), v[30] as usize)
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every record of one process: (kind, bytes).
type Records = Vec<(u8, Vec<u8>)>;

struct Recording {
    /// Role (`coordinator`, `node-{key}`, `client`) -> its records.
    files: Vec<(String, Records)>,
}

impl Recording {
    fn load(dir: &Path) -> Recording {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("record dir") {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let role = name
                .rsplit_once('-')
                .map_or(name.clone(), |(r, _)| r.to_string());
            files.push((
                role,
                veil_node::record::read_file(&path).expect("record file"),
            ));
        }
        Recording { files }
    }

    fn of(&self, prefix: &str) -> Vec<&(String, Records)> {
        self.files
            .iter()
            .filter(|(r, _)| r.starts_with(prefix))
            .collect()
    }
}

#[test]
fn private_predictions_equal_plaintext_and_no_node_sees_the_input_or_another_nodes_share() {
    let record = tempfile::tempdir().unwrap();
    let net =
        Devnet::start_shipped(Options::default().env("VEIL_INSECURE_RECORD_DIR", record.path()));
    let id = net.deploy_shipped("semi2k");
    let input = shipped("test.csv");
    let result = net
        .veil_json_env(
            &[
                "infer",
                "--model",
                &id,
                "--input",
                input.to_str().unwrap(),
                "--with-labels",
            ],
            Some(("VEIL_INSECURE_RECORD_DIR", record.path())),
        )
        .unwrap_or_else(|e| panic!("infer: {e}"));

    // Private = plaintext on every shipped row; accuracy >= 0.9.
    let device = burn::tensor::Device::flex();
    let file = ModelFile::load(&shipped("model.safetensors"), &device).unwrap();
    assert_eq!(file.id(), id);
    let rows = rows();
    let outputs = result["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), rows.len());
    let mut right = 0;
    for (i, ((x, truth), out)) in rows.iter().zip(outputs).enumerate() {
        let private: Vec<f32> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let plain = file
            .model()
            .forward_plain(&file.prepare_input(x, 1).unwrap(), 1)
            .unwrap();
        assert_eq!(argmax(&private), argmax(&plain), "row {i}");
        let err = private
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "row {i}: error {err}");
        right += usize::from(argmax(&private) == Some(*truth));
    }
    let accuracy = right as f64 / rows.len() as f64;
    assert!(accuracy >= 0.9, "accuracy {accuracy}");
    assert_eq!(result["accuracy"].as_f64(), Some(accuracy));
    drop(net); // every process flushes and stops

    // What was received, by whom.
    let rec = Recording::load(record.path());
    let client = rec.of("client");
    assert_eq!(client.len(), 1, "one recording client");
    let inputs: Vec<&Vec<u8>> = client[0]
        .1
        .iter()
        .filter(|(k, _)| *k == veil_node::record::Kind::ClientInput as u8)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(inputs.len(), rows.len(), "one encoded input per row");
    let shares: Vec<(&[u8], &[u8])> = client[0]
        .1
        .iter()
        .filter(|(k, _)| *k == veil_node::record::Kind::ClientShare as u8)
        .map(|(_, b)| b.split_at(32))
        .collect();
    assert_eq!(shares.len(), 3 * rows.len(), "one share per party and row");
    let coordinator = rec.of("coordinator");
    assert_eq!(coordinator.len(), 1);
    let nodes = rec.of("node-");
    assert_eq!(nodes.len(), 5, "five recording nodes");

    let haystack = |records: &Vec<(u8, Vec<u8>)>| -> Vec<u8> {
        records
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    };
    let seen = haystack(&coordinator[0].1);
    assert!(
        seen.len() > 10_000,
        "the coordinator's record holds the job's blobs"
    );
    for (i, x) in inputs.iter().enumerate() {
        assert!(
            !contains(&seen, x),
            "the coordinator received input row {i}"
        );
    }
    for (key, s) in &shares {
        assert!(
            !contains(&seen, s),
            "the coordinator received a share in the clear"
        );
        let _ = key;
    }
    let mut holders = 0;
    for (role, records) in &nodes {
        let me = hex::decode(role.trim_start_matches("node-")).expect("node key in the file name");
        let held = haystack(records);
        for (i, x) in inputs.iter().enumerate() {
            assert!(
                !contains(&held, x),
                "{role} received or opened input row {i}"
            );
        }
        let mut own = 0;
        for (key, s) in &shares {
            if *key == me.as_slice() {
                own += usize::from(contains(&held, s));
            } else {
                assert!(
                    !contains(&held, s),
                    "{role} holds a share addressed to another node"
                );
            }
        }
        // Positive control: a party holds exactly its own shares (the search finds what is there).
        if own > 0 {
            assert_eq!(own, rows.len(), "{role} holds all its own shares");
            holders += 1;
        }
    }
    assert_eq!(holders, 3, "exactly the three parties hold shares");
}

/// The run id a refusal names (`... in job <32 hex> ...`).
fn refused_run(stderr: &str) -> String {
    let at = stderr.find(" in job ").expect("the error names the job") + 8;
    stderr[at..at + 32].to_string()
}

#[test]
fn tampered_misdirected_and_replayed_inputs_are_refused_and_never_computed_on() {
    let net = Devnet::start_shipped(Options::default());
    let id = net.deploy_shipped("semi2k");
    let input = shipped("test.csv");
    let input = input.to_str().unwrap();
    let kept = tempfile::tempdir().unwrap();
    let keep = format!("keep:{}", kept.path().display());
    let replay = format!("replay:{}", kept.path().display());
    // A clean job whose sealed blobs are kept, to be replayed into another job.
    net.veil_json_env(
        &[
            "infer",
            "--model",
            &id,
            "--input",
            input,
            "--with-labels",
            "--insecure-tamper",
            &keep,
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("the clean job: {e}"));
    for tamper in ["flip-bit", "swap-parties", replay.as_str()] {
        let err = net
            .veil_json_env(
                &[
                    "infer",
                    "--model",
                    &id,
                    "--input",
                    input,
                    "--with-labels",
                    "--insecure-tamper",
                    tamper,
                ],
                None,
            )
            .expect_err(tamper);
        assert!(
            err.contains("input rejected") && err.contains("refused its input"),
            "{tamper}: {err}"
        );
        assert!(
            err.contains("envelope does not open"),
            "{tamper}: the error says why: {err}"
        );
        let run = refused_run(&err);
        let logs = net.node_logs();
        // A refuser logged a refusal naming this job on one line (a node's whole log may name the job
        // because it computed on it as another, untampered party, and a refusal of an earlier job).
        let refusers: Vec<&String> = logs
            .iter()
            .filter(|log| {
                log.lines()
                    .any(|l| l.contains("refused the sealed input") && l.contains(&run))
            })
            .collect();
        assert!(!refusers.is_empty(), "{tamper}: a node logged the refusal");
        for log in refusers {
            assert!(
                !log.lines()
                    .any(|l| l.contains("computing") && l.contains(&run)),
                "{tamper}: the refusing node computed on the job"
            );
        }
    }
    // Failed without retry, and the network still works.
    let jobs = net.veil_json(&["jobs"]).unwrap();
    let failed: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["phase"] == "failed")
        .collect();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|j| j["attempt"] == 1), "no retry: {jobs}");
    net.veil_json_env(
        &["infer", "--model", &id, "--input", input, "--with-labels"],
        None,
    )
    .unwrap_or_else(|e| panic!("a clean job after the refusals: {e}"));
}

#[test]
fn bad_input_is_refused_by_the_client_before_anything_is_sent() {
    let net = Devnet::start_shipped(Options::default());
    let id = net.deploy_shipped("spdz2k");
    let dir = tempfile::tempdir().unwrap();
    let nan = dir.path().join("nan.csv");
    let mut row = vec!["1.0"; 30];
    row[7] = "NaN";
    std::fs::write(&nan, row.join(",")).unwrap();
    let short = dir.path().join("short.csv");
    std::fs::write(&short, "1,2,3\n").unwrap();
    let inf = dir.path().join("inf.json");
    let mut values = vec![0.5f64; 30];
    values[0] = 1e39; // beyond f32: infinite once read
    std::fs::write(&inf, serde_json::to_string(&vec![values]).unwrap()).unwrap();
    for (file, why) in [(&nan, "finite"), (&short, "30"), (&inf, "finite")] {
        let err = net
            .veil_json_env(
                &["infer", "--model", &id, "--input", file.to_str().unwrap()],
                None,
            )
            .expect_err("bad input");
        assert!(err.contains(why), "{}: {err}", file.display());
    }
    assert_eq!(net.jobs(), 0, "no job was submitted");
}

/// The plaintext model's outputs on the shipped rows.
fn plaintext_outputs() -> Vec<Vec<f32>> {
    let device = burn::tensor::Device::flex();
    let file = ModelFile::load(&shipped("model.safetensors"), &device).unwrap();
    rows()
        .iter()
        .map(|(x, _)| {
            file.model()
                .forward_plain(&file.prepare_input(x, 1).unwrap(), 1)
                .unwrap()
        })
        .collect()
}

#[test]
fn spdz2k_jobs_are_verified_and_their_receipts_check_out_and_stay_in_the_audit_log() {
    let record = tempfile::tempdir().unwrap();
    let net =
        Devnet::start_shipped(Options::default().env("VEIL_INSECURE_RECORD_DIR", record.path()));
    let id = net.deploy_shipped("spdz2k");
    let input = shipped("test.csv");
    let receipt = net.client_dir().join("receipt.json");
    let result = net
        .veil_json_env(
            &[
                "infer",
                "--model",
                &id,
                "--input",
                input.to_str().unwrap(),
                "--with-labels",
                "--receipt",
                receipt.to_str().unwrap(),
            ],
            Some(("VEIL_INSECURE_RECORD_DIR", record.path())),
        )
        .unwrap_or_else(|e| panic!("infer: {e}"));
    assert_eq!(result["protocol"], "spdz2k");
    assert_eq!(result["receipt"], true);
    let outputs = result["outputs"].as_array().unwrap();
    for (i, (out, plain)) in outputs.iter().zip(plaintext_outputs()).enumerate() {
        let private: Vec<f32> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(argmax(&private), argmax(&plain), "row {i}");
    }
    assert!(result["accuracy"].as_f64().unwrap() >= 0.9);

    // The saved receipt passes `veil verify` with the coordinator's key, and fails with another key or
    // once changed.
    let key = net.ready["coordinator_key"].as_str().unwrap();
    let verify = |path: &Path, key: &str| {
        Command::new(exe())
            .args(["verify", path.to_str().unwrap(), "--coordinator-key", key])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let ok = verify(&receipt, key);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("receipt OK"));
    let other = veil_node::Identity::generate()
        .unwrap()
        .public_key()
        .to_string();
    assert!(!verify(&receipt, &other).status.success());
    let text = std::fs::read_to_string(&receipt).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    let changed = net.client_dir().join("changed.json");
    assert!(json.get("output_commitment").is_some(), "{text}");
    json["output_commitment"] = Value::String("00".repeat(32));
    std::fs::write(&changed, serde_json::to_string(&json).unwrap()).unwrap();
    assert!(!verify(&changed, key).status.success());

    // The coordinator keeps it: the audit log lists the job with the same receipt.
    let log = net.veil_json(&["receipts"]).expect("veil receipts");
    let entries = log.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{log}");
    assert_eq!(entries[0]["receipt"].as_str().unwrap(), text);
    let job = entries[0]["job"].as_u64().unwrap();
    let status = net.veil_json(&["job", &job.to_string()]).unwrap();
    assert_eq!(status["phase"], "done");
    assert!(status["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["to"] == "verifying"));
    drop(net);

    // Under spdz2k the parties get the inputs published under the dealer's masks: the encoded input never
    // appears in anything the coordinator or a node received.
    let rec = Recording::load(record.path());
    let client = rec.of("client");
    let inputs: Vec<&Vec<u8>> = client[0]
        .1
        .iter()
        .filter(|(k, _)| *k == veil_node::record::Kind::ClientInput as u8)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(inputs.len(), rows().len());
    for (role, records) in rec.files.iter().filter(|(r, _)| r != "client") {
        let held: Vec<u8> = records
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        for (i, x) in inputs.iter().enumerate() {
            assert!(
                !contains(&held, x),
                "{role} received or opened input row {i}"
            );
        }
    }
}

#[test]
fn a_model_forced_into_two_stages_runs_on_two_committees_and_equals_plaintext() {
    // The breast-cancer MLP needs about 13 KB per party; capping a stage at 12.5 KB splits it in two.
    let net =
        Devnet::start_shipped(Options::default().args(&["--max-stage-memory-bytes", "12500"]));
    let id = net.deploy_shipped("semi2k");
    let input = shipped("test.csv");
    let result = net
        .veil_json_env(
            &[
                "infer",
                "--model",
                &id,
                "--input",
                input.to_str().unwrap(),
                "--with-labels",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("staged infer: {e}"));
    let stages = result["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2, "{result}");
    assert_eq!(stages[0][0], 0);
    assert_eq!(stages[0][1], stages[1][0], "contiguous");
    assert_eq!(stages[1][1], 3, "every layer");
    let jobs = result["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 2);
    let mut runs = Vec::new();
    for job in jobs {
        let view = net.veil_json(&["job", &job.to_string()]).unwrap();
        assert_eq!(view["phase"], "done", "{view}");
        assert_eq!(view["attempt"], 1);
        assert!(view["committee"]["parties"].as_array().unwrap().len() == 3);
        runs.push(view["run_id"].as_str().unwrap().to_string());
    }
    assert_ne!(runs[0], runs[1], "each stage is its own run");
    // The second stage's parties computed on hand-offs: each opened its input and computed.
    let logs = net.node_logs().join("\n");
    assert!(
        logs.contains(&format!("job={}", runs[1])),
        "stage 2 computed"
    );
    // Private = plaintext on every row.
    let outputs = result["outputs"].as_array().unwrap();
    for (i, (out, plain)) in outputs.iter().zip(plaintext_outputs()).enumerate() {
        let private: Vec<f32> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(argmax(&private), argmax(&plain), "row {i}");
        let err = private
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "row {i}: error {err}");
    }
    assert!(result["accuracy"].as_f64().unwrap() >= 0.9);
}
