//! Pretrained encoders on the network, over real processes: `veil devnet` (a coordinator and five nodes
//! that load all-MiniLM-L6-v2 from `VEIL_MODELS`), `veil deploy --model all-minilm-l6-v2`, then `veil
//! embed` of two texts through the coordinator: every embedding's cosine with the plaintext one is at
//! least 0.99. A deployment whose id is not the hash of the parties' files runs no job: the parties refuse
//! to load the encoder and the job fails.
//!
//! Needs the fetched model (`veil models fetch all-minilm-l6-v2`): fails under `CI=true` without it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::devnet::Devnet;

fn models_dir() -> Option<PathBuf> {
    common::devnet::models_dir("all-minilm-l6-v2", "model.safetensors")
}

#[test]
fn minilm_deployed_on_devnet_embeds_through_the_coordinator() {
    let Some(models) = models_dir() else { return };
    let net = Devnet::start(models.clone());
    let deployed = net
        .veil_json(&[
            "deploy",
            "--model",
            "all-minilm-l6-v2",
            "--protocol",
            "semi2k",
        ])
        .unwrap_or_else(|e| panic!("deploy: {e}"));
    let name = veil_engine::bert::pretrained::NAMES[0];
    let id = veil_engine::bert::pretrained::model_id(name, &models.join(name)).expect("model id");
    assert_eq!(deployed["id"], id.as_str());
    assert_eq!(deployed["name"], name);

    let model = models.join(name);
    let out = net
        .veil_json(&[
            "embed",
            "Private inference keeps the input secret.",
            "The weather is nice today.",
            // Five token counts (9, 8, 4, 17, 11): five jobs, more than run at once
            // (`MAX_JOBS_IN_FLIGHT`), so a worker takes a second job from the queue.
            "Hi.",
            "Secret sharing splits every value into random-looking parts held by different nodes.",
            "Three parties compute on shares of every value.",
            "--model",
            model.to_str().unwrap(),
            "--check",
        ])
        .unwrap_or_else(|e| panic!("embed: {e}"));
    assert_eq!(out["mode"], "network");
    assert_eq!(out["protocol"], "semi2k");
    let embeddings = out["embeddings"].as_array().expect("embeddings");
    assert_eq!(embeddings.len(), 5);
    for e in embeddings {
        assert_eq!(e.as_array().expect("embedding").len(), 384);
    }
    // One job per token count; each text's embedding in its place (the cosines against each text's own
    // plaintext embedding below).
    let tokens: Vec<u64> = out["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("a token count"))
        .collect();
    assert_eq!(tokens, [9, 8, 4, 17, 11], "{out}");
    assert_eq!(out["jobs"].as_array().expect("jobs").len(), 5, "{out}");
    let cosines = out["cosine"].as_array().expect("cosines");
    assert_eq!(cosines.len(), 5);
    for c in cosines {
        let c = c.as_f64().expect("cosine");
        assert!(c >= 0.99, "cosine {c} below 0.99: {out}");
    }

    // A deployment under an id that is not the hash of the parties' files: the parties refuse to load it.
    let (address, key) = net.coordinator();
    let identity = veil_node::Identity::generate().unwrap();
    let api =
        veil_node::api_client::ApiClient::new(&identity, key, address, Duration::from_secs(30))
            .unwrap();
    let client = veil_client::Client::new(api, key, veil_node::envelope::OpeningKey::generate());
    let wrong = "ab".repeat(32);
    client
        .deploy_pretrained(name, &wrong, 3, 16, "semi2k")
        .expect("the coordinator cannot check the id: it records it");
    let encoder = veil_engine::bert::SentenceEncoder::load(&model, &burn::tensor::Device::flex())
        .expect("load encoder");
    let private = veil_engine::bert::private::PrivateBert::new(
        &encoder.bert,
        veil_engine::bert::private::PrivateConfig::new(
            veil_protocols::ring::FixedPoint::new(16).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let ids = encoder.tokenizer.ids("a text").unwrap();
    let request = veil_node::api::SubmitRequest {
        workload: name.into(),
        model_seed: 0,
        weights: "public".into(),
        frac_bits: 16,
        batch: ids.len() as u32,
        inferences: 1,
        parties: 3,
        model: Some(wrong),
        output_key: None,
        protocol: "semi2k".into(),
        stage: None,
        threads: None,
        shaping: None,
    };
    let refused = client.run_embed(request, &private, &[ids], Duration::from_secs(120), |_| {});
    let error = match refused {
        Ok(_) => panic!("a job on a wrong model id ran"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("failed"), "{error}");
}
