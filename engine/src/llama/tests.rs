//! Small random Llama configurations: the GGUF round trip, the burn model (with its cache) and the private
//! forward against the straightforward f64 implementation.

use std::sync::Arc;

use burn::tensor::Device;

use super::private::{PrivateConfig, PrivateLlama};
use super::run::LocalSession;
use super::*;
use crate::gguf::{Gguf, Value};
use crate::local::LocalOptions;

fn small(layers: usize, heads: usize, kv_heads: usize) -> LlamaConfig {
    LlamaConfig {
        layers,
        hidden: heads * 8,
        ffn: 40,
        heads,
        kv_heads,
        head_dim: 8,
        rms_eps: f64::from(1e-5f32),
        rope_theta: 10_000.0,
        vocab: 50,
        context: 64,
    }
}

fn tokenizer_meta(vocab: usize) -> Vec<(&'static str, Value)> {
    // "a" and "b" merge into "ab"; token 2 is a control token (eos).
    let tokens: Vec<Value> = (0..vocab)
        .map(|i| match i {
            0 => Value::String("a".into()),
            1 => Value::String("ab".into()),
            4 => Value::String("b".into()),
            _ => Value::String(format!("t{i}")),
        })
        .collect();
    let mut types = vec![Value::I32(1); vocab];
    types[2] = Value::I32(3);
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("a b".into())]),
        ),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        (
            "tokenizer.chat_template",
            Value::String("{% for m in messages %}{{ m['content'] }}{% endfor %}".into()),
        ),
    ]
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn gguf_round_trip_keeps_config_and_weights() {
    let w = LlamaWeights::random(small(2, 4, 2), 1);
    let g = Gguf::parse(w.to_gguf(tokenizer_meta(50))).unwrap();
    let model = ChatModel::from_gguf(&g).unwrap();
    assert_eq!(model.weights.config, w.config);
    assert_eq!(model.weights.blocks[1].down, w.blocks[1].down);
    assert_eq!(model.weights.embed, w.embed);
    // The tokenizer applies the merge and matches the control token whole.
    assert_eq!(model.tokenizer.encode("ab").unwrap(), vec![1]);
    assert_eq!(model.tokenizer.encode("abt2ba").unwrap(), vec![1, 2, 4, 0]);
    assert_eq!(model.tokenizer.eos, 2);
    assert_eq!(
        model
            .template
            .render(&[Message::new("user", "hi")])
            .unwrap(),
        "hi"
    );
}

#[test]
fn burn_model_with_cache_matches_f64_reference() {
    for (layers, heads, kv) in [(1, 2, 2), (2, 4, 2), (2, 3, 1)] {
        let w = LlamaWeights::random(small(layers, heads, kv), 7 + layers as u64);
        let ids = [3u32, 17, 5, 42, 8, 0, 49];
        let want = reference::logits(&w, &ids).unwrap();
        let model = Llama::new(&w, &Device::default());
        // All positions at once.
        let mut cache = KvCache::default();
        let all = model.forward(&ids, &mut cache, ids.len()).unwrap();
        let vocab = w.config.vocab;
        for (t, row) in want.iter().enumerate() {
            let got: Vec<f64> = all[t * vocab..(t + 1) * vocab]
                .iter()
                .map(|v| f64::from(*v))
                .collect();
            assert!(max_diff(&got, row) < 1e-3, "position {t}");
        }
        // Prefill of 4, then decode steps of one position over the cache.
        let mut cache = KvCache::default();
        model.forward(&ids[..4], &mut cache, 1).unwrap();
        for t in 4..ids.len() {
            let got: Vec<f64> = model
                .forward(&ids[t..t + 1], &mut cache, 1)
                .unwrap()
                .iter()
                .map(|v| f64::from(*v))
                .collect();
            assert!(max_diff(&got, &want[t]) < 1e-3, "decode at {t}");
        }
        assert_eq!(cache.len(), ids.len());
    }
}

#[test]
fn burn_model_refuses_bad_inputs() {
    let w = LlamaWeights::random(small(1, 2, 1), 3);
    let model = Llama::new(&w, &Device::default());
    let mut cache = KvCache::default();
    assert!(model.forward(&[50], &mut cache, 1).is_err());
    assert!(model.forward(&[], &mut cache, 0).is_err());
    assert!(model.forward(&vec![1; 65], &mut cache, 1).is_err());
    assert!(matches!(
        reference::logits(&w, &[1, 50]),
        Err(LlamaError::TokenOutOfVocabulary { id: 50, vocab: 50 })
    ));
}

#[test]
fn private_prefill_and_decode_match_f64_reference() {
    let w = LlamaWeights::random(small(2, 4, 2), 11);
    let ids = [3u32, 17, 5, 42, 8, 9];
    let want = reference::logits(&w, &ids).unwrap();
    let fp = veil_protocols::ring::FixedPoint::default();
    let mut pcfg = PrivateConfig::new(fp).unwrap();
    // Random embeddings are larger than SmolLM2's: the first norm takes the general range.
    pcfg.first_norm = pcfg.norm;
    let model = PrivateLlama::new(&w, pcfg).unwrap();
    let mut options = LocalOptions::new(3, Arc::new(veil_protocols::gemm::NaiveGemm));
    options.seed = Some(5);
    let mut session = LocalSession::new(&model, &options).unwrap();
    let prefill = session.step(&ids[..4], 4).unwrap();
    for (t, row) in prefill.iter().enumerate() {
        let e = max_diff(row, &want[t]);
        assert!(e < 0.05, "prefill position {t}: error {e}");
        assert_eq!(sample::argmax(row), sample::argmax(&want[t]));
    }
    for t in 4..ids.len() {
        let got = session.step(&ids[t..t + 1], 1).unwrap();
        let e = max_diff(&got[0], &want[t]);
        assert!(e < 0.05, "decode at {t}: error {e}");
    }
    assert_eq!(session.cached(), ids.len());
    // A decode step is one position: its material is far smaller than a prefill of the same context.
    let decode = &session.costs[2];
    assert_eq!(decode.positions, 1);
    assert!(decode.dealer_bytes < session.costs[0].dealer_bytes);
}

#[test]
fn steps_consume_exactly_their_requested_material() {
    // A party's job fails at its end unless it consumed every dealt request, and the reader rejects a
    // request of another kind or size: steps of several shapes over the cache pass both checks.
    let w = LlamaWeights::random(small(1, 2, 1), 2);
    let model = PrivateLlama::new(&w, PrivateConfig::new(Default::default()).unwrap()).unwrap();
    let options = LocalOptions::new(2, Arc::new(veil_protocols::gemm::NaiveGemm));
    let mut session = LocalSession::new(&model, &options).unwrap();
    session.step(&[1, 2, 3], 1).unwrap();
    session.step(&[4], 1).unwrap();
    session.step(&[5, 6], 2).unwrap();
    assert_eq!(session.cached(), 6);
    assert!(matches!(
        session.step(&[50], 1),
        Err(LlamaError::TokenOutOfVocabulary { id: 50, .. })
    ));
}

#[test]
fn sampling_is_greedy_or_seeded() {
    let logits = [0.1, 2.0, 2.0, -1.0];
    let mut g = Sampler::new(Sampling::Greedy).unwrap();
    assert_eq!(g.next(&logits), 1);
    let nucleus = Sampling::Nucleus {
        temperature: 1.0,
        top_p: 0.9,
        seed: 3,
    };
    let a: Vec<u32> = {
        let mut s = Sampler::new(nucleus).unwrap();
        (0..20).map(|_| s.next(&logits)).collect()
    };
    let b: Vec<u32> = {
        let mut s = Sampler::new(nucleus).unwrap();
        (0..20).map(|_| s.next(&logits)).collect()
    };
    assert_eq!(a, b);
    assert!(a.iter().all(|t| *t == 1 || *t == 2 || *t == 0));
    assert!(Sampler::new(Sampling::Nucleus {
        temperature: 0.0,
        top_p: 0.9,
        seed: 0
    })
    .is_none());
}

#[test]
fn decode_step_costs_are_pinned() {
    // Bytes and rounds depend only on the shapes: pinned for a 2-block model, 3 parties, a decode step
    // at position 4 (so a change in the protocol's cost shows up here).
    let w = LlamaWeights::random(small(2, 4, 2), 2);
    let model = PrivateLlama::new(&w, PrivateConfig::new(Default::default()).unwrap()).unwrap();
    let options = LocalOptions::new(3, Arc::new(veil_protocols::gemm::NaiveGemm));
    let mut session = LocalSession::new(&model, &options).unwrap();
    session.step(&[1, 2, 3, 4], 1).unwrap();
    session.step(&[5], 1).unwrap();
    let decode = &session.costs[1];
    let rounds: Vec<u64> = decode.online.iter().map(|s| s.rounds).collect();
    let bytes: Vec<u64> = decode.online.iter().map(|s| s.bytes_sent).collect();
    assert_eq!(
        (rounds, bytes, decode.dealer_bytes),
        (vec![326; 3], vec![109_076; 3], 78_168)
    );
}
