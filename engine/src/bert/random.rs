//! Small BERT encoders with random weights, made at test time: the tests of the encoder and of private
//! transformer inference run on them when the real model is not on the machine.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};

use super::config::BertConfig;
use crate::error::{EngineError, Result};

/// A tiny configuration: `layers` layers of width `hidden` with `heads` heads, FFN `4 * hidden`.
pub fn tiny_config(layers: usize, hidden: usize, heads: usize) -> BertConfig {
    BertConfig {
        model_type: "bert".into(),
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: 4 * hidden,
        hidden_act: "gelu".into(),
        max_position_embeddings: 64,
        type_vocab_size: 2,
        vocab_size: 100,
        layer_norm_eps: 1e-12,
        position_embedding_type: "absolute".into(),
    }
}

/// Every parameter name and shape of a `BertModel` with `config` (PyTorch layout).
pub fn parameter_shapes(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (d, ff) = (c.hidden_size, c.intermediate_size);
    let mut out = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, d],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, d],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, d],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![d]),
        ("embeddings.LayerNorm.bias".into(), vec![d]),
    ];
    for i in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        for (name, o, inp) in [
            ("attention.self.query", d, d),
            ("attention.self.key", d, d),
            ("attention.self.value", d, d),
            ("attention.output.dense", d, d),
            ("intermediate.dense", ff, d),
            ("output.dense", d, ff),
        ] {
            out.push((format!("{p}.{name}.weight"), vec![o, inp]));
            out.push((format!("{p}.{name}.bias"), vec![o]));
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            out.push((format!("{p}.{name}.weight"), vec![d]));
            out.push((format!("{p}.{name}.bias"), vec![d]));
        }
    }
    out
}

/// The bytes of a `model.safetensors` for `config` with weights drawn from `seed`: matrices and tables
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, LayerNorm gains near 1 and biases near 0, as in a trained model.
pub fn random_weights(config: &BertConfig, seed: u64) -> Result<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = parameter_shapes(config)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("LayerNorm.weight") {
                (0..n).map(|_| 1.0 + rng.random_range(-0.1..0.1)).collect()
            } else if shape.len() == 1 {
                (0..n).map(|_| rng.random_range(-0.05..0.05)).collect()
            } else {
                let k = 1.0 / (shape[1] as f32).sqrt();
                (0..n).map(|_| rng.random_range(-k..k)).collect()
            };
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| EngineError::ModelFile(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None::<HashMap<String, String>>)
        .map_err(|e| EngineError::ModelFile(e.to_string()))
}
