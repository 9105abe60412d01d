//! The burn encoder against an independent, naive f64 implementation of BERT written from the paper's
//! equations (Devlin et al., 2019; Vaswani et al., 2017) over the same safetensors bytes: on tiny random
//! encoders always, and on all-MiniLM-L6-v2 when `models/all-minilm-l6-v2` is present (`veil models fetch`).

use std::path::PathBuf;

use burn::tensor::Device;
use safetensors::SafeTensors;

use super::config::BertConfig;
use super::model::{cosine, mean_pool_normalise, Bert};
use super::random::{random_weights, tiny_config};
use super::SentenceEncoder;

/// erf with absolute error below 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), enough for a reference.
fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

struct Naive<'a> {
    file: SafeTensors<'a>,
    c: BertConfig,
}

impl Naive<'_> {
    fn get(&self, name: &str) -> Vec<f64> {
        let t = self.file.tensor(name).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()
    }

    /// `x [len, d_in]` times `W^T` (`W [d_out, d_in]`) plus bias.
    fn dense(&self, x: &[Vec<f64>], prefix: &str) -> Vec<Vec<f64>> {
        let w = self.get(&format!("{prefix}.weight"));
        let b = self.get(&format!("{prefix}.bias"));
        let d_in = x[0].len();
        x.iter()
            .map(|row| {
                (0..b.len())
                    .map(|o| b[o] + (0..d_in).map(|i| row[i] * w[o * d_in + i]).sum::<f64>())
                    .collect()
            })
            .collect()
    }

    fn norm(&self, x: Vec<Vec<f64>>, prefix: &str) -> Vec<Vec<f64>> {
        let g = self.get(&format!("{prefix}.weight"));
        let b = self.get(&format!("{prefix}.bias"));
        x.into_iter()
            .map(|row| {
                let n = row.len() as f64;
                let mean = row.iter().sum::<f64>() / n;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                let inv = 1.0 / (var + self.c.layer_norm_eps).sqrt();
                row.iter()
                    .enumerate()
                    .map(|(i, v)| (v - mean) * inv * g[i] + b[i])
                    .collect()
            })
            .collect()
    }

    fn embed(&self, ids: &[u32]) -> Vec<f32> {
        let d = self.c.hidden_size;
        let (word, pos, typ) = (
            self.get("embeddings.word_embeddings.weight"),
            self.get("embeddings.position_embeddings.weight"),
            self.get("embeddings.token_type_embeddings.weight"),
        );
        let x: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(t, &id)| {
                (0..d)
                    .map(|j| word[id as usize * d + j] + pos[t * d + j] + typ[j])
                    .collect()
            })
            .collect();
        let mut x = self.norm(x, "embeddings.LayerNorm");
        let (heads, hs) = (self.c.num_attention_heads, self.c.head_size());
        for l in 0..self.c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let q = self.dense(&x, &format!("{p}.attention.self.query"));
            let k = self.dense(&x, &format!("{p}.attention.self.key"));
            let v = self.dense(&x, &format!("{p}.attention.self.value"));
            let len = x.len();
            let mut ctx = vec![vec![0f64; d]; len];
            for h in 0..heads {
                for t in 0..len {
                    let scores: Vec<f64> = (0..len)
                        .map(|s| {
                            (0..hs)
                                .map(|j| q[t][h * hs + j] * k[s][h * hs + j])
                                .sum::<f64>()
                                / (hs as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for j in 0..hs {
                        ctx[t][h * hs + j] =
                            (0..len).map(|s| e[s] / z * v[s][h * hs + j]).sum::<f64>();
                    }
                }
            }
            let out = self.dense(&ctx, &format!("{p}.attention.output.dense"));
            let res: Vec<Vec<f64>> = x
                .iter()
                .zip(&out)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
                .collect();
            let attended = self.norm(res, &format!("{p}.attention.output.LayerNorm"));
            let inter: Vec<Vec<f64>> = self
                .dense(&attended, &format!("{p}.intermediate.dense"))
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|v| 0.5 * v * (1.0 + erf(v / 2f64.sqrt())))
                        .collect()
                })
                .collect();
            let out = self.dense(&inter, &format!("{p}.output.dense"));
            let res: Vec<Vec<f64>> = attended
                .iter()
                .zip(&out)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
                .collect();
            x = self.norm(res, &format!("{p}.output.LayerNorm"));
        }
        let flat: Vec<f32> = x.iter().flatten().map(|v| *v as f32).collect();
        mean_pool_normalise(&flat, ids.len(), d)
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiny_random_encoders_match_the_naive_reference() {
    let device = Device::flex();
    for (layers, hidden, heads, seed) in [(1, 16, 2, 1), (2, 24, 3, 2), (2, 32, 4, 3)] {
        let config = tiny_config(layers, hidden, heads);
        let bytes = random_weights(&config, seed).unwrap();
        let bert = Bert::from_bytes(&bytes, config.clone(), &device).unwrap();
        let naive = Naive {
            file: SafeTensors::deserialize(&bytes).unwrap(),
            c: config,
        };
        for ids in [
            vec![2u32],
            vec![2, 17, 55, 3],
            (0..40).map(|i| i * 2 + 1).collect(),
        ] {
            let ours = bert.embed(&ids).unwrap();
            let reference = naive.embed(&ids);
            let norm: f32 = ours.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "not normalised: {norm}");
            assert!(
                max_diff(&ours, &reference) < 1e-4,
                "layers {layers}: burn and naive differ by {}",
                max_diff(&ours, &reference)
            );
        }
    }
}

#[test]
fn bad_sequences_are_errors() {
    let device = Device::flex();
    let config = tiny_config(1, 16, 2);
    let bert = Bert::from_bytes(&random_weights(&config, 1).unwrap(), config, &device).unwrap();
    assert!(bert.embed(&[]).is_err());
    assert!(bert.embed(&[100]).is_err(), "id outside the vocabulary");
    assert!(
        bert.embed(&vec![1; 65]).is_err(),
        "longer than the positions"
    );
    // A wrong shape in the file is an error, not a panic.
    let mut other = tiny_config(1, 16, 2);
    other.intermediate_size = 32;
    let bytes = random_weights(&tiny_config(1, 16, 2), 1).unwrap();
    assert!(Bert::from_bytes(&bytes, other, &device).is_err());
    assert!(Bert::from_bytes(&bytes[..100], tiny_config(1, 16, 2), &device).is_err());
}

/// The real model's directory, when `veil models fetch all-minilm-l6-v2` has put it there.
fn minilm_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-minilm-l6-v2");
    dir.join("model.safetensors").exists().then_some(dir)
}

#[test]
fn minilm_tokenises_embeds_and_matches_the_reference() {
    let Some(dir) = minilm_dir() else {
        eprintln!("models/all-minilm-l6-v2 absent: run `veil models fetch all-minilm-l6-v2`");
        return;
    };
    let device = Device::flex();
    let encoder = SentenceEncoder::load(&dir, &device).unwrap();
    // BERT's uncased WordPiece vocabulary: [CLS] hello world [SEP].
    assert_eq!(
        encoder.tokenizer.ids("Hello world").unwrap(),
        vec![101, 7592, 2088, 102]
    );
    // Padding off, truncation at max_seq_length = 256 (not the file's 128).
    assert_eq!(encoder.tokenizer.ids("word ").unwrap().len(), 3);
    assert_eq!(
        encoder.tokenizer.ids(&"word ".repeat(1000)).unwrap().len(),
        256
    );
    let text = "A confidential report on quarterly revenue.";
    let ids = encoder.tokenizer.ids(text).unwrap();
    let ours = encoder.bert.embed(&ids).unwrap();
    assert_eq!(ours.len(), 384);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let naive = Naive {
        file: SafeTensors::deserialize(&bytes).unwrap(),
        c: encoder.bert.config.clone(),
    };
    let reference = naive.embed(&ids);
    assert!(
        max_diff(&ours, &reference) < 1e-4,
        "MiniLM: burn and naive differ by {}",
        max_diff(&ours, &reference)
    );
    // Meaning: a paraphrase is closer than an unrelated sentence.
    let para = encoder
        .embed("A private document about revenue in the last quarter.")
        .unwrap();
    let other = encoder
        .embed("The cat sat on the warm windowsill.")
        .unwrap();
    assert!(
        cosine(&ours, &para) > cosine(&ours, &other) + 0.2,
        "paraphrase {} vs unrelated {}",
        cosine(&ours, &para),
        cosine(&ours, &other)
    );
}
