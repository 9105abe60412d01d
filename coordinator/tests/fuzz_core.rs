//! Property tests of the coordinator's own checks of what strangers send it (issue 21, fuzzing): the body
//! decoding is fuzzed in `node/tests/fuzz_api_bodies.rs`; here bodies that *do* decode, with arbitrary field
//! values, go through the same calls the HTTP handlers make (registration, heartbeats, deployments and the
//! submission pipeline `job_encoder` / `job_architecture` / `demand_for` / `check_fits` / `submit`).
//!
//! Properties: no call panics; every refusal is a client error (never [`ErrorKind::Internal`], which would
//! mean a stranger can make the coordinator fail); whatever is accepted respects the bounds the coordinator
//! promises (names within [`MAX_NAME_BYTES`], batch and inference counts within their limits), and the
//! coordinator still answers afterwards.

use std::net::SocketAddr;

use proptest::prelude::*;
use veil_coordinator::core::{
    demand_for, encoder_demand_for, generation_demand_for, MAX_NAME_BYTES,
};
use veil_coordinator::http::check_fits;
use veil_coordinator::{Coordinator, CoordinatorConfig, ErrorKind};
use veil_node::api::{
    DeployRequest, HardwareReport, HeartbeatRequest, RegisterRequest, RttReport, StageRequest,
    SubmitRequest,
};
use veil_node::Identity;

/// Cases per property: short enough for CI.
const CASES: u32 = 96;

/// Simulated time of every call.
const NOW: u64 = 1_000_000;

fn coordinator(dir: &std::path::Path) -> Coordinator {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nheartbeat_timeout_ms = 1000\n",
        dir.display()
    );
    let config: CoordinatorConfig = toml::from_str(&text).expect("test config");
    config.validate().expect("valid test config");
    Coordinator::open(config, Identity::generate().expect("key"), NOW).expect("coordinator")
}

/// The error kind of a refused call; `Internal` fails the property.
fn refused_as_client_error<T>(r: veil_coordinator::error::Result<T>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert_ne!(
            e.kind(),
            ErrorKind::Internal,
            "internal error on a stranger's body: {}",
            e
        );
    }
    Ok(())
}

/// Strings a stranger might send: empty, ordinary, long, non-ASCII, control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,12}",
        "\\PC{0,40}",
        "[\\x00-\\x1f]{1,8}",
        (1usize..3000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Workload names: known ones and strangers.
fn workload() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("network-a".to_string()),
        Just("lenet".to_string()),
        Just("all-minilm-l6-v2".to_string()),
        Just("smollm2-135m-instruct".to_string()),
        text(),
    ]
}

fn hardware() -> impl Strategy<Value = HardwareReport> {
    (
        any::<u32>(),
        any::<u64>(),
        proptest::option::of(text()),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
    )
        .prop_map(
            |(cores, memory_bytes, gpu_model, gpu_memory_bytes, bandwidth_bytes_per_s)| {
                HardwareReport {
                    cores,
                    memory_bytes,
                    gpu_model,
                    gpu_memory_bytes,
                    bandwidth_bytes_per_s,
                }
            },
        )
}

fn submit_request() -> impl Strategy<Value = SubmitRequest> {
    (
        (
            workload(),
            any::<u64>(),
            prop_oneof![
                Just("shared".to_string()),
                Just("public".to_string()),
                text()
            ],
        ),
        (
            prop_oneof![Just(16u32), any::<u32>()],
            prop_oneof![1u32..4, any::<u32>()],
            prop_oneof![1u32..4, any::<u32>()],
        ),
        (
            any::<u8>(),
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
        prop_oneof![
            Just("semi2k".to_string()),
            Just("spdz2k".to_string()),
            Just("rep3".to_string()),
            text()
        ],
        proptest::option::of((
            any::<usize>(),
            any::<usize>(),
            proptest::option::of(any::<u64>()),
            any::<u32>(),
        )),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(
                (workload, model_seed, weights),
                (frac_bits, batch, inferences),
                (parties, model, output_key),
                protocol,
                stage,
                threads,
            )| {
                SubmitRequest {
                    workload,
                    model_seed,
                    weights,
                    frac_bits,
                    batch,
                    inferences,
                    parties,
                    model,
                    output_key,
                    protocol,
                    stage: stage.map(|(start, end, next, senders)| StageRequest {
                        start,
                        end,
                        next,
                        senders,
                    }),
                    threads,
                    shaping: None,
                }
            },
        )
}

/// What the HTTP submit handler does with a decoded body (`coordinator/src/http/jobs.rs`).
fn submit_like_the_handler(
    c: &mut Coordinator,
    client: &veil_node::PublicKey,
    req: SubmitRequest,
) -> veil_coordinator::error::Result<()> {
    if let Some(name) = c.job_encoder(&req)? {
        let demand = match name == veil_node::generation::SMOLLM2 {
            true => generation_demand_for(&req, &name)?,
            false => encoder_demand_for(&req, &name)?,
        };
        check_fits(&c.nodes(), &demand)?;
        c.submit(client, req, demand, NOW)?;
        return Ok(());
    }
    let architecture = match req.model.is_some() {
        true => Some(c.job_architecture(&req)?),
        false => None,
    };
    let demand = demand_for(&req, architecture.as_ref())?;
    check_fits(&c.nodes(), &demand)?;
    let view = c.submit(client, req.clone(), demand, NOW)?;
    // Accepted: within the promised bounds.
    assert!(req.batch >= 1 && req.inferences >= 1, "accepted {view:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, .. ProptestConfig::default() })]

    /// Registrations with arbitrary claims: refused as client errors, or accepted within bounds.
    #[test]
    fn registrations_with_arbitrary_claims_are_refused_or_bounded(
        operator in text(),
        region in text(),
        asn in proptest::option::of(any::<u32>()),
        port in any::<u16>(),
        hardware in hardware(),
        sealing_key in prop_oneof![text(), "[0-9a-f]{64}"],
        attestation in prop_oneof![text(), "[0-9a-f]{128}"],
        certificate in proptest::option::of(text()),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = coordinator(dir.path());
        let id = Identity::generate().expect("key");
        let req = RegisterRequest {
            operator,
            region,
            asn,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            hardware,
            sealing_key,
            sealing_attestation: attestation,
            certificate,
        };
        match c.register(&id.public_key(), req, NOW) {
            Ok(view) => {
                prop_assert!(view.operator.len() <= MAX_NAME_BYTES);
                prop_assert!(view.region.len() <= MAX_NAME_BYTES);
            }
            Err(e) => prop_assert_ne!(e.kind(), ErrorKind::Internal, "{}", e),
        }
        prop_assert!(c.nodes().len() <= 1);
    }

    /// A registered node's heartbeats with arbitrary load, queue and RTT reports (NaN and infinities
    /// included) never fail the coordinator, and the node list still serialises.
    #[test]
    fn heartbeats_with_arbitrary_reports_are_refused_or_absorbed(
        load in prop_oneof![any::<f32>(), Just(f32::NAN), Just(f32::INFINITY), Just(-1.0f32)],
        queue_len in any::<u32>(),
        rtts in proptest::collection::vec((prop_oneof![text(), "[0-9a-f]{64}"], any::<u32>()), 0..40),
        ready in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = coordinator(dir.path());
        let id = Identity::generate().expect("key");
        let sealing = veil_node::envelope::OpeningKey::generate().public();
        let attestation = id.sign(&veil_node::inbox::attestation_message(&sealing));
        let req = RegisterRequest {
            operator: "op".into(),
            region: "r".into(),
            asn: None,
            address: SocketAddr::from(([127, 0, 0, 1], 9000)),
            hardware: HardwareReport {
                cores: 4,
                memory_bytes: 8 << 30,
                gpu_model: None,
                gpu_memory_bytes: None,
                bandwidth_bytes_per_s: 1 << 30,
            },
            sealing_key: sealing.to_string(),
            sealing_attestation: hex::encode(attestation),
            certificate: None,
        };
        c.register(&id.public_key(), req, NOW).expect("a valid registration");
        let beat = HeartbeatRequest {
            ready,
            load,
            queue_len,
            rtts: rtts.into_iter().map(|(peer, rtt_us)| RttReport { peer, rtt_us }).collect(),
            wait_ms: 0,
            seen: None,
        };
        refused_as_client_error(c.heartbeat(&id.public_key(), beat, NOW))?;
        let nodes = c.nodes();
        prop_assert_eq!(nodes.len(), 1);
        prop_assert!(serde_json::to_string(&nodes).is_ok());
    }

    /// Deployments with arbitrary architecture text, ids and settings are refused as client errors or
    /// accepted; a model accepted is listed.
    #[test]
    fn deployments_with_arbitrary_fields_are_refused_or_listed(
        id in prop_oneof![text(), "[0-9a-f]{64}"],
        architecture in prop_oneof![
            text(),
            Just(r#"{"name":"m","input":[4],"layers":[{"linear":{"inputs":4,"outputs":2}}]}"#.to_string()),
            Just(r#"{"name":"m","input":[1,1048576,1048576],"layers":[{"flatten":{}}]}"#.to_string()),
            Just(r#"{"name":"m","input":[4],"layers":[{"linear":{"inputs":4294967295,"outputs":4294967295}}]}"#.to_string()),
        ],
        weights in prop_oneof![Just("shared".to_string()), Just("public".to_string()), text()],
        parties in any::<u8>(),
        frac_bits in prop_oneof![Just(16u32), any::<u32>()],
        protocol in prop_oneof![Just("semi2k".to_string()), Just("spdz2k".to_string()), text()],
        pretrained in proptest::option::of(prop_oneof![Just("all-minilm-l6-v2".to_string()), text()]),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = coordinator(dir.path());
        let owner = Identity::generate().expect("key").public_key();
        let req = DeployRequest { id, architecture, weights, parties, frac_bits, protocol, pretrained, onnx: false, onnx_file: None };
        match c.deploy(&owner, req, NOW) {
            Ok(view) => prop_assert!(c.models().iter().any(|m| m.id == view.id)),
            Err(e) => prop_assert_ne!(e.kind(), ErrorKind::Internal, "{}", e),
        }
    }

    /// Submissions with arbitrary fields through the handler's pipeline: refused as client errors, or
    /// accepted within bounds; the coordinator still lists the client's jobs afterwards.
    #[test]
    fn submissions_with_arbitrary_fields_are_refused_or_bounded(
        reqs in proptest::collection::vec(submit_request(), 1..4),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = coordinator(dir.path());
        let client = Identity::generate().expect("key").public_key();
        let mut accepted = 0;
        for req in reqs {
            match submit_like_the_handler(&mut c, &client, req) {
                Ok(()) => accepted += 1,
                Err(e) => prop_assert_ne!(e.kind(), ErrorKind::Internal, "{}", e),
            }
        }
        prop_assert_eq!(c.jobs_of(&client, 0, 100).len(), accepted);
    }
}

/// The pipeline above accepts a valid body (so the properties' "accepted" branch is reachable) and refuses
/// a lab-only field as a client error.
#[test]
fn the_handler_pipeline_accepts_a_valid_submission_and_refuses_lab_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = coordinator(dir.path());
    let client = Identity::generate().expect("key").public_key();
    let valid = SubmitRequest {
        workload: "network-a".into(),
        model_seed: 7,
        weights: "shared".into(),
        frac_bits: 16,
        batch: 1,
        inferences: 2,
        parties: 2,
        model: None,
        output_key: None,
        protocol: "semi2k".into(),
        stage: None,
        threads: None,
        shaping: None,
    };
    submit_like_the_handler(&mut c, &client, valid.clone()).expect("a valid submission");
    assert_eq!(c.jobs_of(&client, 0, 100).len(), 1);
    let lab = SubmitRequest {
        threads: Some(64),
        ..valid
    };
    let refused = submit_like_the_handler(&mut c, &client, lab).expect_err("threads is lab-only");
    assert_eq!(refused.kind(), ErrorKind::Invalid);
}
