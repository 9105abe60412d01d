//! `veil verify` as a user runs it: the real binary on a good receipt file (exit 0, `receipt OK`), on the
//! same file with one field changed, and with another coordinator's key (non-zero exit, the reason).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use veil_node::evidence::{records_hash, sign, EvidenceKind, EvidenceRecord};
use veil_node::manifest::{Manifest, Member};
use veil_node::receipt::{
    commit_blobs, manifest_hash, model_id, Receipt, ReceiptBody, ReceiptFile,
};
use veil_node::wire::JobId;
use veil_node::Identity;

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .output()
        .expect("veil runs")
}

fn member(id: &Identity, port: u16) -> serde_json::Value {
    serde_json::to_value(Member {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        public_key: id.public_key(),
    })
    .unwrap()
}

/// A receipt file for a 2-party spdz2k job whose manifest `coordinator` signed, naming `verifier`, with
/// each party's signed transcript and output records.
fn receipt_file(coordinator: &Identity, verifier: &Identity) -> ReceiptFile {
    let nodes: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
    receipt_file_of(coordinator, verifier, &nodes)
}

fn receipt_file_of(coordinator: &Identity, verifier: &Identity, nodes: &[Identity]) -> ReceiptFile {
    // Built from JSON: optional fields left out are `None`.
    let manifest: Manifest = serde_json::from_value(serde_json::json!({
        "job": (JobId([3; 16])),
        "protocol": "spdz2k",
        "model": {"workload": "network-a", "seed": 7, "weights": "Shared", "frac_bits": 16},
        "batch": 1,
        "inferences": 1,
        "parties": [member(&nodes[0], 1), member(&nodes[1], 2)],
        "dealer": member(&nodes[2], 3),
        "client": coordinator.public_key(),
        "verifier": member(verifier, 4),
    }))
    .unwrap();
    let signed = manifest.sign(coordinator).unwrap();
    let run = manifest_hash(&signed).unwrap();
    let mut evidence: Vec<EvidenceRecord> = (0..2u32)
        .flat_map(|i| {
            let id = &nodes[i as usize];
            [
                sign(id, EvidenceKind::Transcript, &run, i, b"views"),
                sign(id, EvidenceKind::Output, &run, i, b"sealed output"),
            ]
        })
        .collect();
    evidence.push(sign(
        &nodes[2],
        EvidenceKind::OwnerMaterial,
        &run,
        2,
        b"sealed owner",
    ));
    let body = ReceiptBody {
        job: JobId([3; 16]),
        model_id: model_id(&manifest.model),
        manifest_hash: manifest_hash(&signed).unwrap(),
        input_commitment: commit_blobs([&b"sealed input 0"[..], b"sealed input 1"].into_iter()),
        output_commitment: commit_blobs([&b"sealed output 0"[..], b"sealed output 1"].into_iter()),
        protocol: "spdz2k".into(),
        transcript_hash: [4; 32],
        evidence_hash: records_hash(&evidence),
        verifier: verifier.public_key(),
        issued_at: 1_795_000_000,
    };
    ReceiptFile {
        receipt: Receipt::sign(verifier, body).unwrap(),
        manifest: signed,
        evidence,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn veil_verify_accepts_a_good_receipt_and_rejects_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Identity::generate().unwrap();
    let verifier = Identity::generate().unwrap();
    let file = receipt_file(&coordinator, &verifier);
    let text = file.to_json().unwrap();
    let good = write(dir.path(), "good.json", &text);
    let key = coordinator.public_key().to_string();

    let out = veil(&["verify", &good, "--coordinator-key", &key]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "good receipt refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("receipt OK: job 0303"), "{stdout}");

    // The key from a file.
    let key_file = write(dir.path(), "coordinator.key", &format!("{key}\n"));
    let out = veil(&["verify", &good, "--coordinator-key-file", &key_file]);
    assert!(out.status.success());

    // One hex digit of the transcript hash changed.
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hash = json["transcript_hash"].as_str().unwrap().to_string();
    let flipped = format!("5{}", &hash[1..]);
    assert_ne!(flipped, hash);
    json["transcript_hash"] = flipped.into();
    let tampered = write(dir.path(), "tampered.json", &json.to_string());
    let out = veil(&["verify", &tampered, "--coordinator-key", &key]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tampered receipt accepted");
    assert!(
        stderr.contains("receipt REJECTED") && stderr.contains("signature"),
        "{stderr}"
    );

    // A receipt signed by a key that is not the committee's verifier.
    let impostor = Identity::generate().unwrap();
    let mut body = file.receipt.body.clone();
    body.verifier = impostor.public_key();
    let forged = ReceiptFile {
        receipt: Receipt::sign(&impostor, body).unwrap(),
        manifest: file.manifest.clone(),
        evidence: file.evidence.clone(),
    };
    let forged = write(dir.path(), "forged.json", &forged.to_json().unwrap());
    let out = veil(&["verify", &forged, "--coordinator-key", &key]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not the committee's verifier"), "{stderr}");

    // The good receipt against another coordinator's key.
    let other = Identity::generate().unwrap().public_key().to_string();
    let out = veil(&["verify", &good, "--coordinator-key", &other]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed by the coordinator"));

    // Not a receipt at all; no key given.
    let junk = write(dir.path(), "junk.json", "{\"format\": 1}");
    assert!(!veil(&["verify", &junk, "--coordinator-key", &key])
        .status
        .success());
    assert!(!veil(&["verify", &good]).status.success());

    // A relay substitutes party 1's output record with one it signed itself: the records no longer hash
    // to what the verifier signed.
    let run = manifest_hash(&file.manifest).unwrap();
    let mut swapped = file.clone();
    swapped.evidence[3] = sign(
        &impostor,
        EvidenceKind::Output,
        &run,
        1,
        b"the relay's output",
    );
    let swapped = write(dir.path(), "swapped.json", &swapped.to_json().unwrap());
    let out = veil(&["verify", &swapped, "--coordinator-key", &key]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "substituted evidence accepted");
    assert!(stderr.contains("evidence"), "{stderr}");

    // A receipt whose verifier signed evidence that a party did not sign (a dishonest or fooled
    // verifier): the party's signature does not verify under its manifest key.
    let mut bad = file.clone();
    bad.evidence[0] = sign(&impostor, EvidenceKind::Transcript, &run, 0, b"views");
    bad.receipt.body.evidence_hash = records_hash(&bad.evidence);
    bad.receipt = Receipt::sign(&verifier, bad.receipt.body.clone()).unwrap();
    let bad = write(dir.path(), "unsigned.json", &bad.to_json().unwrap());
    let out = veil(&["verify", &bad, "--coordinator-key", &key]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "evidence no party signed accepted");
    assert!(
        stderr.contains("signature on the Transcript of member 0"),
        "{stderr}"
    );
}
