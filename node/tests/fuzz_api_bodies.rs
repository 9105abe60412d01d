//! Property tests of what the coordinator and the nodes decode from the network (issue 21, fuzzing): the JSON
//! bodies of the HTTP API ([`veil_node::api`]), the framed postcard messages between nodes ([`Msg`], the
//! signed manifest inside `Submit`), receipt files and evidence blobs. Arbitrary bytes and mutations of valid
//! samples (bit flips, truncation, extension, overwritten runs) decode without panicking, and every check run
//! on what decodes (manifest signature and contents, deployed-model bounds, receipt and evidence
//! verification) returns `Err` rather than panicking; a mutated signed object never verifies.

use std::net::SocketAddr;

use proptest::prelude::*;
use veil_engine::WeightMode;
use veil_node::api::{
    DeployRequest, HeartbeatRequest, RegisterRequest, StageRequest, SubmitRequest, TaskFailure,
    TrialReport,
};
use veil_node::evidence::{self, EvidenceKind};
use veil_node::frame;
use veil_node::identity::Identity;
use veil_node::manifest::{DeployedModel, Manifest, Member, ModelSpec, SignedManifest};
use veil_node::receipt::{self, Receipt, ReceiptBody, ReceiptFile};
use veil_node::tls::AllowList;
use veil_node::wire::{Bytes, JobId, Msg};

/// Cases per property: short enough for CI, enough to cover each sample's fields.
const CASES: u32 = 256;

/// Largest frame body decoded here.
const FRAME_LIMIT: usize = 1 << 20;

/// Valid JSON bodies of every request the coordinator's HTTP API accepts.
const BODIES: [&str; 7] = [
    r#"{"operator":"op-1","region":"eu-west","asn":64512,"address":"127.0.0.1:4433","hardware":{"cores":8,"memory_bytes":17179869184,"gpu_model":null,"gpu_memory_bytes":null,"bandwidth_bytes_per_s":125000000},"sealing_key":"1111111111111111111111111111111111111111111111111111111111111111","sealing_attestation":"abcd","certificate":null}"#,
    r#"{"ready":true,"load":0.25,"queue_len":3,"rtts":[{"peer":"ab12","rtt_us":900}]}"#,
    r#"{"id":7,"outputs":[5,18446744073709551615,3],"online_seconds":0.0125,"rtt_us":900,"failure":null}"#,
    r#"{"workload":"network-a","model_seed":1,"weights":"shared","frac_bits":16,"batch":1,"inferences":2,"parties":2,"model":null,"output_key":null,"protocol":"semi2k","stage":{"start":0,"end":2,"next":null,"senders":2},"threads":4}"#,
    r#"{"reason":"peer went away","rejected_input":false,"verification_failed":true}"#,
    r#"{"id":"0000000000000000000000000000000000000000000000000000000000000000","architecture":"{\"name\":\"m\",\"input\":[4],\"layers\":[{\"linear\":{\"inputs\":4,\"outputs\":2}}]}","weights":"AAAA","parties":2,"frac_bits":16,"protocol":"spdz2k"}"#,
    r#"{"start":1,"end":3,"next":9,"senders":2}"#,
];

/// Decodes `bytes` as every API body type; none may panic. Returns how many decoded.
fn decode_bodies(bytes: &[u8]) -> usize {
    let mut n = 0;
    n += usize::from(serde_json::from_slice::<RegisterRequest>(bytes).is_ok());
    n += usize::from(serde_json::from_slice::<HeartbeatRequest>(bytes).is_ok());
    n += usize::from(serde_json::from_slice::<TrialReport>(bytes).is_ok());
    n += usize::from(serde_json::from_slice::<TaskFailure>(bytes).is_ok());
    n += usize::from(serde_json::from_slice::<StageRequest>(bytes).is_ok());
    if let Ok(req) = serde_json::from_slice::<SubmitRequest>(bytes) {
        n += 1;
        if let Some(stage) = &req.stage {
            let _ = veil_node::api::stage_model_id("ab", stage.start, stage.end);
        }
    }
    if let Ok(req) = serde_json::from_slice::<DeployRequest>(bytes) {
        n += 1;
        // What a member later checks of a deployed model.
        let deployed = DeployedModel {
            id: req.id,
            architecture: req.architecture,
            handoff: None,
            senders: 0,
            file_bytes: 0,
        };
        let _ = deployed.parse();
    }
    n
}

/// A change to valid bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of the byte at `at` (modulo the length).
    Flip { at: usize, bit: u8 },
    /// Keep the first `keep` bytes (modulo the length).
    Truncate { keep: usize },
    /// Append bytes.
    Extend { tail: Vec<u8> },
    /// Overwrite bytes from `at` (modulo the length) with `with`.
    Splice { at: usize, with: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        prop::collection::vec(any::<u8>(), 1..32).prop_map(|tail| Mutation::Extend { tail }),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..12),
                // Extreme varints and JSON tokens.
                Just(vec![0xff; 10]),
                Just(b"1e999".to_vec()),
                Just(b"-1".to_vec()),
                Just(b"18446744073709551616".to_vec()),
                Just(b"null".to_vec()),
                Just(b"[[[[[[[[".to_vec()),
            ]
        )
            .prop_map(|(at, with)| Mutation::Splice { at, with }),
    ]
}

/// Applies the mutations to `bytes` in turn.
fn apply(ms: &[Mutation], bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in ms {
        if out.is_empty() {
            break;
        }
        let len = out.len();
        match m {
            Mutation::Flip { at, bit } => out[at % len] ^= 1 << bit,
            Mutation::Truncate { keep } => out.truncate(keep % len),
            Mutation::Extend { tail } => out.extend_from_slice(tail),
            Mutation::Splice { at, with } => {
                let at = at % len;
                for (i, b) in with.iter().enumerate() {
                    match out.get_mut(at + i) {
                        Some(slot) => *slot = *b,
                        None => out.push(*b),
                    }
                }
            }
        }
    }
    out
}

/// A committee of two parties, a dealer, a verifier and a client (the coordinator that signs the manifest),
/// with every identity.
struct Committee {
    client: Identity,
    party: Identity,
    other: Identity,
    dealer: Identity,
    verifier: Identity,
    manifest: Manifest,
}

fn member(identity: &Identity, port: u16) -> Member {
    Member {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        public_key: identity.public_key(),
    }
}

fn committee() -> Committee {
    let client = Identity::generate().unwrap();
    let party = Identity::generate().unwrap();
    let other = Identity::generate().unwrap();
    let dealer = Identity::generate().unwrap();
    let verifier = Identity::generate().unwrap();
    let manifest = Manifest {
        job: JobId([7; 16]),
        protocol: veil_node::manifest::Protocol::Semi2k,
        model: ModelSpec {
            workload: "network-a".into(),
            seed: 1,
            weights: WeightMode::Shared,
            frac_bits: 16,
            deployed: None,
        },
        batch: 1,
        inferences: 1,
        parties: vec![member(&party, 5001), member(&other, 5002)],
        dealer: Some(member(&dealer, 5003)),
        client: client.public_key(),
        output_key: None,
        verifier: Some(member(&verifier, 5004)),
    };
    Committee {
        client,
        party,
        other,
        dealer,
        verifier,
        manifest,
    }
}

/// A complete receipt file for the committee's job: every member's evidence record, the verifier's signature.
fn receipt_file(c: &Committee) -> ReceiptFile {
    let signed = c.manifest.sign(&c.client).unwrap();
    let run = evidence::run_id(&signed).unwrap();
    let mut records = Vec::new();
    for (i, who) in [&c.party, &c.other].into_iter().enumerate() {
        for kind in [EvidenceKind::Transcript, EvidenceKind::Output] {
            records.push(evidence::sign(who, kind, &run, i as u32, b"body"));
        }
    }
    records.push(evidence::sign(
        &c.dealer,
        EvidenceKind::OwnerMaterial,
        &run,
        2,
        b"owner",
    ));
    let body = ReceiptBody {
        job: c.manifest.job,
        model_id: receipt::model_id(&c.manifest.model),
        manifest_hash: receipt::manifest_hash(&signed).unwrap(),
        input_commitment: [1; 32],
        output_commitment: [2; 32],
        protocol: c.manifest.protocol.name().to_string(),
        transcript_hash: [3; 32],
        evidence_hash: evidence::records_hash(&records),
        verifier: c.verifier.public_key(),
        issued_at: 1_700_000_000,
    };
    ReceiptFile {
        receipt: Receipt::sign(&c.verifier, body).unwrap(),
        manifest: signed,
        evidence: records,
    }
}

/// The case the evidence property found: a signed blob with bytes after it used to open (postcard ignores
/// trailing bytes), so one blob travelled in many encodings; now it is malformed.
#[test]
fn an_evidence_blob_with_trailing_bytes_is_refused() {
    let party = Identity::generate().unwrap();
    let run = [9u8; 32];
    let mut blob = evidence::seal(&party, EvidenceKind::Output, &run, 1, b"out".to_vec());
    let key = party.public_key();
    assert!(evidence::open(&blob, EvidenceKind::Output, &run, 1, &key, 64).is_ok());
    blob.push(0);
    assert!(matches!(
        evidence::open(&blob, EvidenceKind::Output, &run, 1, &key, 64),
        Err(evidence::EvidenceError::Malformed { .. })
    ));
    assert!(evidence::body_from_producer(&blob, 64).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Mutated API bodies decode or fail; the checks run on what decodes return without panicking.
    #[test]
    fn mutated_api_bodies_never_panic(
        which in 0..BODIES.len(),
        ms in prop::collection::vec(mutation(), 1..4),
    ) {
        prop_assert!(decode_bodies(BODIES[which].as_bytes()) >= 1, "the seed decodes");
        decode_bodies(&apply(&ms, BODIES[which].as_bytes()));
    }

    /// Arbitrary bytes as an API body never panic.
    #[test]
    fn arbitrary_api_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_bodies(&bytes);
    }

    /// A mutated signed manifest, in a framed `Submit`, either fails to decode or is refused by both checks a
    /// receiver runs (the client's signature, and the node's full check); the original passes them.
    #[test]
    fn mutated_submit_frames_are_refused(ms in prop::collection::vec(mutation(), 1..3)) {
        let c = committee();
        let signed = c.manifest.sign(&c.client).unwrap();
        let allowed = AllowList::new([c.client.public_key()]);
        let me = c.party.public_key();
        let framed = frame::encode(&Msg::Submit(signed.clone())).unwrap();
        let (decoded, used) = frame::decode(&framed, FRAME_LIMIT).unwrap();
        prop_assert_eq!(used, framed.len());
        prop_assert_eq!(&decoded, &Msg::Submit(signed.clone()));
        prop_assert!(signed.verify_by(&c.client.public_key()).is_ok());
        prop_assert!(signed.open(&me, &allowed).is_ok());
        let changed = apply(&ms, &framed);
        if let Ok((Msg::Submit(tampered), _)) = frame::decode(&changed, FRAME_LIMIT) {
            if tampered != signed {
                prop_assert!(tampered.verify_by(&c.client.public_key()).is_err());
                prop_assert!(tampered.open(&me, &allowed).is_err());
            }
        }
    }

    /// A signed manifest whose body is arbitrary (or a mutated valid body) is refused.
    #[test]
    fn manifests_with_other_bodies_are_refused(
        ms in prop::collection::vec(mutation(), 1..3),
        arbitrary in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let c = committee();
        let signed = c.manifest.sign(&c.client).unwrap();
        let allowed = AllowList::new([c.client.public_key()]);
        for body in [apply(&ms, &signed.body.0), arbitrary] {
            if body == signed.body.0 {
                continue;
            }
            let tampered = SignedManifest { body: Bytes(body), signature: signed.signature.clone() };
            prop_assert!(tampered.verify_by(&c.client.public_key()).is_err());
            prop_assert!(tampered.open(&c.party.public_key(), &allowed).is_err());
        }
    }

    /// Arbitrary frames and frame bodies decode to a message or an error, never a panic; a `Submit` that
    /// decodes from arbitrary bytes is refused.
    #[test]
    fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let c = committee();
        let allowed = AllowList::new([c.client.public_key()]);
        for msg in [frame::decode(&bytes, FRAME_LIMIT).map(|(m, _)| m), frame::decode_body(&bytes)]
            .into_iter()
            .flatten()
        {
            if let Msg::Submit(s) = msg {
                prop_assert!(s.open(&c.party.public_key(), &allowed).is_err());
            }
        }
    }

    /// Mutated evidence blobs are refused by [`evidence::open`]; unsigned reading is bounded and total.
    #[test]
    fn mutated_evidence_is_refused(
        ms in prop::collection::vec(mutation(), 1..3),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let c = committee();
        let signed = c.manifest.sign(&c.client).unwrap();
        let run = evidence::run_id(&signed).unwrap();
        let blob = evidence::seal(&c.party, EvidenceKind::Transcript, &run, 0, body.clone());
        let key = c.party.public_key();
        let opened = evidence::open(&blob, EvidenceKind::Transcript, &run, 0, &key, 1024);
        prop_assert_eq!(opened.unwrap().0, body.clone());
        let changed = apply(&ms, &blob);
        if changed != blob {
            prop_assert!(evidence::open(&changed, EvidenceKind::Transcript, &run, 0, &key, 1024).is_err());
        }
        let _ = evidence::body_from_producer(&changed, 1024);
    }

    /// A valid receipt file verifies; a mutated one fails to parse or is refused; arbitrary text never panics.
    #[test]
    fn mutated_receipt_files_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        ms in prop::collection::vec(mutation(), 1..4),
    ) {
        let c = committee();
        let coordinator = c.client.public_key();
        let file = receipt_file(&c);
        let text = file.to_json().unwrap();
        let parsed = ReceiptFile::from_json(&text).unwrap();
        prop_assert!(parsed.verify(&coordinator).is_ok());
        let mutated = String::from_utf8_lossy(&apply(&ms, text.as_bytes())).into_owned();
        if let Ok(changed) = ReceiptFile::from_json(&mutated) {
            if changed != file {
                prop_assert!(changed.verify(&coordinator).is_err());
            }
        }
        if let Ok(arbitrary) = ReceiptFile::from_json(&String::from_utf8_lossy(&bytes)) {
            prop_assert!(arbitrary.verify(&coordinator).is_err());
        }
    }
}
