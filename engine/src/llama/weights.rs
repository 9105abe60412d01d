//! A Llama model's weights in f32, loaded from GGUF (`token_embd`, `blk.N.*`, `output_norm`, and `output`
//! when the head is not tied to the embeddings), or made at random for tests.
//!
//! Matrices are kept as GGUF stores them: `out` rows of `in` values (`W x` for a column `x`).
//!
//! Invariant: every matrix has the shape [`LlamaConfig`] implies, and every value is finite.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gguf::write::GgufWriter;
use crate::gguf::{Gguf, Value};

use super::config::LlamaConfig;
use super::Result;

/// One block's weights.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// RMSNorm gain before attention, `[hidden]`.
    pub attn_norm: Vec<f32>,
    /// `[hidden rows of hidden]` (rows permuted for adjacent RoPE pairs, as GGUF stores them).
    pub q: Vec<f32>,
    /// `[kv_width rows of hidden]` (permuted likewise).
    pub k: Vec<f32>,
    /// `[kv_width rows of hidden]`.
    pub v: Vec<f32>,
    /// `[hidden rows of hidden]`.
    pub o: Vec<f32>,
    /// RMSNorm gain before the feed-forward layer, `[hidden]`.
    pub ffn_norm: Vec<f32>,
    /// `[ffn rows of hidden]`.
    pub gate: Vec<f32>,
    /// `[ffn rows of hidden]`.
    pub up: Vec<f32>,
    /// `[hidden rows of ffn]`.
    pub down: Vec<f32>,
}

/// All weights of a Llama model.
#[derive(Debug, Clone)]
pub struct LlamaWeights {
    /// The configuration.
    pub config: LlamaConfig,
    /// Token embeddings, `[vocab rows of hidden]`.
    pub embed: Vec<f32>,
    /// The blocks.
    pub blocks: Vec<BlockWeights>,
    /// The final RMSNorm's gain.
    pub final_norm: Vec<f32>,
    /// The output head, `[vocab rows of hidden]`; `None`: tied to [`Self::embed`].
    pub head: Option<Vec<f32>>,
}

impl LlamaWeights {
    /// Reads the weights of `g` for `config`.
    pub fn from_gguf(g: &Gguf, config: LlamaConfig) -> Result<Self> {
        let (d, ff, kv, vocab) = (
            config.hidden as u64,
            config.ffn as u64,
            config.kv_width() as u64,
            config.vocab as u64,
        );
        let t = |name: &str, dims: &[u64]| g.dequantize(name, dims);
        let blocks = (0..config.layers)
            .map(|i| -> Result<BlockWeights> {
                let b = |n: &str, dims: &[u64]| t(&format!("blk.{i}.{n}.weight"), dims);
                Ok(BlockWeights {
                    attn_norm: b("attn_norm", &[d])?,
                    q: b("attn_q", &[d, d])?,
                    k: b("attn_k", &[d, kv])?,
                    v: b("attn_v", &[d, kv])?,
                    o: b("attn_output", &[d, d])?,
                    ffn_norm: b("ffn_norm", &[d])?,
                    gate: b("ffn_gate", &[d, ff])?,
                    up: b("ffn_up", &[d, ff])?,
                    down: b("ffn_down", &[ff, d])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match g.tensor("output.weight") {
            Ok(_) => Some(t("output.weight", &[d, vocab])?),
            Err(_) => None,
        };
        Ok(Self {
            embed: t("token_embd.weight", &[d, vocab])?,
            blocks,
            final_norm: t("output_norm.weight", &[d])?,
            head,
            config,
        })
    }

    /// The output head, `[vocab rows of hidden]`.
    pub fn head(&self) -> &[f32] {
        self.head.as_deref().unwrap_or(&self.embed)
    }

    /// Random weights for `config` (seeded): normal-ish values scaled like a trained model's, gains near 1.
    pub fn random(config: LlamaConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, ff, kv, vocab) = (config.hidden, config.ffn, config.kv_width(), config.vocab);
        let mut m = |rows: usize, cols: usize| -> Vec<f32> {
            let s = 1.0 / (cols as f32).sqrt();
            (0..rows * cols)
                .map(|_| rng.random_range(-1.7f32..1.7) * s)
                .collect()
        };
        let embed = m(vocab, d).into_iter().map(|v| v * 8.0).collect();
        let blocks = (0..config.layers)
            .map(|_| BlockWeights {
                attn_norm: m(1, d).iter().map(|v| 1.0 + v).collect(),
                q: m(d, d),
                k: m(kv, d),
                v: m(kv, d),
                o: m(d, d),
                ffn_norm: m(1, d).iter().map(|v| 1.0 + v).collect(),
                gate: m(ff, d).iter().map(|v| v * 2.0).collect(),
                up: m(ff, d),
                down: m(d, ff),
            })
            .collect();
        let final_norm = m(1, d).iter().map(|v| 1.0 + v).collect();
        Self {
            embed,
            blocks,
            final_norm,
            head: None,
            config,
        }
    }

    /// These weights as a GGUF file (F32 tensors, the `llama.*` metadata), with `tokenizer` metadata
    /// pairs added as given.
    pub fn to_gguf(&self, tokenizer: Vec<(&str, Value)>) -> Vec<u8> {
        let c = &self.config;
        let (d, ff, kv, vocab) = (
            c.hidden as u64,
            c.ffn as u64,
            c.kv_width() as u64,
            c.vocab as u64,
        );
        let mut w = GgufWriter::new();
        let u = |v: usize| Value::U32(v as u32);
        w.meta("general.architecture", Value::String("llama".into()))
            .meta("llama.block_count", u(c.layers))
            .meta("llama.context_length", u(c.context))
            .meta("llama.embedding_length", u(c.hidden))
            .meta("llama.feed_forward_length", u(c.ffn))
            .meta("llama.attention.head_count", u(c.heads))
            .meta("llama.attention.head_count_kv", u(c.kv_heads))
            .meta(
                "llama.attention.layer_norm_rms_epsilon",
                Value::F32(c.rms_eps as f32),
            )
            .meta("llama.rope.freq_base", Value::F32(c.rope_theta as f32))
            .meta("llama.vocab_size", u(c.vocab));
        for (k, v) in tokenizer {
            w.meta(k, v);
        }
        w.f32_tensor("token_embd.weight", &[d, vocab], &self.embed);
        for (i, b) in self.blocks.iter().enumerate() {
            let name = |n: &str| format!("blk.{i}.{n}.weight");
            w.f32_tensor(&name("attn_norm"), &[d], &b.attn_norm)
                .f32_tensor(&name("attn_q"), &[d, d], &b.q)
                .f32_tensor(&name("attn_k"), &[d, kv], &b.k)
                .f32_tensor(&name("attn_v"), &[d, kv], &b.v)
                .f32_tensor(&name("attn_output"), &[d, d], &b.o)
                .f32_tensor(&name("ffn_norm"), &[d], &b.ffn_norm)
                .f32_tensor(&name("ffn_gate"), &[d, ff], &b.gate)
                .f32_tensor(&name("ffn_up"), &[d, ff], &b.up)
                .f32_tensor(&name("ffn_down"), &[ff, d], &b.down);
        }
        w.f32_tensor("output_norm.weight", &[d], &self.final_norm);
        w.to_bytes()
    }
}
