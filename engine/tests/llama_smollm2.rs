//! The real SmolLM2-135M-Instruct (`veil models fetch smollm2-135m-instruct`) against the independent
//! reference of `scripts/smollm2_reference.py` (numpy in f64, the `gguf` package's dequantisation, its own
//! byte-level BPE, jinja2): the rendered prompt's ids and the greedy tokens must be identical.
//!
//! Without the model the test says so and passes, except under `CI=true`, where it fails.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use burn::tensor::Device;
use veil_engine::llama::private::{PrivateConfig, PrivateLlama};
use veil_engine::llama::run::{generate_private, LocalSession};
use veil_engine::llama::{generate_plaintext, ChatModel, Message, Sampler, Sampling};
use veil_engine::local::LocalOptions;

fn model_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing under CI=true: run `veil models fetch smollm2-135m-instruct`",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing (run `veil models fetch smollm2-135m-instruct`)",
        p.display()
    );
    None
}

#[derive(serde::Deserialize)]
struct Fixture {
    prompt: String,
    system: Option<String>,
    max_tokens: usize,
    rendered: String,
    prompt_tokens: Vec<u32>,
    tokens: Vec<u32>,
    text: String,
}

/// The model, loaded once for this test binary.
fn model() -> Option<&'static ChatModel> {
    static MODEL: OnceLock<Option<ChatModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| model_path().map(|p| ChatModel::load(&p).unwrap()))
        .as_ref()
}

#[test]
fn architecture_comes_from_the_metadata() {
    let Some(model) = model() else { return };
    let c = &model.weights.config;
    assert_eq!(
        (c.layers, c.hidden, c.ffn, c.heads, c.kv_heads, c.head_dim, c.vocab),
        (30, 576, 1536, 9, 3, 64, 49152)
    );
    assert_eq!(c.rope_theta, 100_000.0);
    assert!(model.weights.head.is_none(), "the head is tied");
    // Digits are split one by one and spaces kept.
    let digits = model.tokenizer.encode("In 2024, 17 cats").unwrap();
    assert_eq!(model.tokenizer.decode(&digits).unwrap(), "In 2024, 17 cats");
}

fn check_fixture(model: &ChatModel, fixture: &Fixture) {
    let mut messages = Vec::new();
    if let Some(s) = &fixture.system {
        messages.push(Message::new("system", s));
    }
    messages.push(Message::new("user", &fixture.prompt));
    assert_eq!(model.template.render(&messages).unwrap(), fixture.rendered);
    let ids = model
        .prompt_ids(fixture.system.as_deref(), &fixture.prompt)
        .unwrap();
    assert_eq!(ids, fixture.prompt_tokens);
    // Greedy generation.
    let llama = model.plaintext(&Device::flex());
    let mut sampler = Sampler::new(Sampling::Greedy).unwrap();
    let generation = generate_plaintext(
        &llama,
        &ids,
        fixture.max_tokens,
        model.tokenizer.eos,
        &mut sampler,
        |_| {},
    )
    .unwrap();
    assert_eq!(generation.tokens, fixture.tokens);
    assert_eq!(
        model.tokenizer.decode(&generation.tokens).unwrap(),
        fixture.text
    );
}

#[test]
fn plaintext_reproduces_the_independent_reference() {
    let Some(model) = model() else { return };
    for text in [
        include_str!("fixtures/smollm2_greedy.json"),
        include_str!("fixtures/smollm2_greedy_system.json"),
    ] {
        let fixture: Fixture = serde_json::from_str(text).unwrap();
        check_fixture(model, &fixture);
    }
}

#[test]
fn private_chat_answers_with_paris() {
    let Some(model) = model() else { return };
    let private = PrivateLlama::new(
        &model.weights,
        PrivateConfig::new(Default::default()).unwrap(),
    )
    .unwrap();
    let mut options = LocalOptions::new(3, Arc::new(veil_engine::kernel::RingGemm::new(1)));
    options.seed = Some(1);
    let mut session = LocalSession::new(&private, &options).unwrap();
    let prompt = model
        .prompt_ids(None, "What is the capital of France?")
        .unwrap();
    let mut sampler = Sampler::new(Sampling::Greedy).unwrap();
    let generation = generate_private(
        &mut session,
        &prompt,
        8,
        model.tokenizer.eos,
        &mut sampler,
        |_| {},
    )
    .unwrap();
    let text = model.tokenizer.decode(&generation.tokens).unwrap();
    assert!(text.contains("Paris"), "private answer: {text:?}");
    // The committee cached every position but the last sampled token.
    assert_eq!(session.cached(), prompt.len() + generation.tokens.len() - 1);
}

#[test]
fn dequantisation_matches_the_gguf_package_on_the_real_file() {
    let Some(path) = model_path() else { return };
    let g = veil_engine::gguf::Gguf::open(&path).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/smollm2_dequant.json")).unwrap();
    for name in [
        "blk.0.attn_q.weight",
        "token_embd.weight",
        "blk.0.attn_norm.weight",
        "blk.29.ffn_down.weight",
    ] {
        let t = &fixture[name];
        let dims: Vec<u64> = serde_json::from_value(t["dims"].clone()).unwrap();
        let got = g.dequantize(name, &dims).unwrap();
        let first: Vec<f32> = serde_json::from_value(t["first"].clone()).unwrap();
        let last: Vec<f32> = serde_json::from_value(t["last"].clone()).unwrap();
        assert_eq!(&got[..64], &first[..], "{name}: first values");
        assert_eq!(&got[got.len() - 64..], &last[..], "{name}: last values");
    }
}
