//! The real SmolLM2-135M-Instruct (`veil models fetch smollm2-135m-instruct`) against the independent
//! reference of `scripts/smollm2_reference.py` (numpy in f64, the `gguf` package's dequantisation, its own
//! byte-level BPE, jinja2): the rendered prompt's ids and the greedy tokens must be identical.
//!
//! Without the model the test says so and passes, except under `CI=true`, where it fails.

use std::path::PathBuf;

use burn::tensor::Device;
use veil_engine::llama::{generate_plaintext, ChatModel, Sampler, Sampling};

fn model_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{} is missing under CI=true: run `veil models fetch smollm2-135m-instruct`", p.display());
    }
    eprintln!("SKIPPED: {} is missing (run `veil models fetch smollm2-135m-instruct`)", p.display());
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

#[test]
fn plaintext_reproduces_the_independent_reference() {
    let Some(path) = model_path() else { return };
    let fixture: Fixture =
        serde_json::from_str(include_str!("fixtures/smollm2_greedy.json")).unwrap();
    let model = ChatModel::load(&path).unwrap();
    let c = &model.weights.config;
    assert_eq!(
        (c.layers, c.hidden, c.ffn, c.heads, c.kv_heads, c.head_dim, c.vocab),
        (30, 576, 1536, 9, 3, 64, 49152)
    );
    assert_eq!(c.rope_theta, 100_000.0);
    assert!(model.weights.head.is_none(), "the head is tied");
    // Template and tokenizer.
    let mut messages = Vec::new();
    if let Some(s) = &fixture.system {
        messages.push(veil_engine::llama::Message::new("system", s));
    }
    messages.push(veil_engine::llama::Message::new("user", &fixture.prompt));
    assert_eq!(model.template.render(&messages).unwrap(), fixture.rendered);
    let ids = model
        .prompt_ids(fixture.system.as_deref(), &fixture.prompt)
        .unwrap();
    assert_eq!(ids, fixture.prompt_tokens);
    // Digits are split one by one and spaces kept, as the reference does.
    let digits = model.tokenizer.encode("In 2024, 17 cats").unwrap();
    assert_eq!(model.tokenizer.decode(&digits).unwrap(), "In 2024, 17 cats");
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
