//! Private BERT inference: the encoder, mean pooling and L2 normalisation on secret shares, with the weights
//! public to the parties (all-MiniLM-L6-v2 is a public model) and the text secret.
//!
//! # Who learns what
//! - The client tokenises the text and looks each token up in the public embedding tables itself (word,
//!   position and token-type rows, summed), then secret-shares the `len x hidden` matrix of embedded vectors
//!   (`semi2k`: additive shares; `spdz2k`: published `x - r` against dealt masks). No oblivious table lookup
//!   is needed because the tables are public and the client holds the ids: nothing about the ids leaves the
//!   client except the sequence length `len`, which is public (it sets the shapes, rounds and bytes).
//! - Each party sees its shares and values opened under fresh dealt masks (uniform), so it learns nothing
//!   beyond `len` and the public model; the dealer sees no online message. The client alone reconstructs
//!   the 384-value embedding.
//!
//! # The computation (per layer, `L` tokens, `H` heads of width `h`, hidden `d`, FFN width `ff`)
//! - Linear layers are local products of shares by public fixed-point weights (`f` fractional bits) with
//!   the bias added at `2f`, then one truncation. LayerNorm's gain and bias are folded into the next linear
//!   layer's weights (`LN(x) W + b = n (diag(gamma) W) + (beta W + b)`) and into the residual, which is added
//!   at `2f` before the same truncation; `1/sqrt(h)` is folded into the query weights.
//! - `Q K^T` and `P V` are share-by-share products: one dealt matrix triple per head and product, all heads
//!   in one round ([`veil_protocols::semi2k::Party::matmuls`]).
//! - softmax (row max, the one-piece exp of [`veil_protocols::approx::exp`], Newton reciprocal),
//!   LayerNorm (Newton rsqrt), GELU (the even polynomial of [`veil_protocols::approx::gelu`]), mean
//!   pooling and L2 normalisation ([`veil_protocols::approx::pooling`]) are the named approximations of
//!   `veil_protocols::approx`.
//! - GELU's input scale is folded into the FFN's first weights, and its output (with `2f` fractional bits)
//!   goes into the FFN's second product untruncated: one truncation of the `L x d` result (`3f -> 2f`) and
//!   one after the residual replace a truncation of the four times larger `L x ff` activation.
//!
//! Invariant: [`PrivateBert::requests`] lists exactly the dealer material [`PrivateBert::forward`]
//! consumes, in order, for a given length (the material reader rejects any drift).

use std::time::Instant;

use veil_protocols::approx::pooling::{l2_normalize_requests, mean_pool_requests, Affine};
use veil_protocols::approx::rows::{layer_norm_requests, softmax_fast_requests};
use veil_protocols::approx::{ExpNeg, GeluEven, LayerNormConfig, NewtonConfig, SoftmaxFastConfig};
use veil_protocols::material::Request;
use veil_protocols::ops::prelude::*;
use veil_protocols::ring::FixedPoint;

use super::model::{Bert, EncoderLayer};
use crate::error::{EngineError, Result};
use crate::model::values;
use crate::private::StepProfile;

/// The approximations' knobs of a private encoder.
#[derive(Debug, Clone)]
pub struct PrivateConfig {
    /// Fixed-point encoding of every shared value and public weight.
    pub fixed_point: FixedPoint,
    /// GELU of the feed-forward layers.
    pub gelu: GeluEven,
    /// softmax of the attention scores.
    pub softmax: SoftmaxFastConfig,
    /// LayerNorm of the embeddings.
    pub embed_norm: LayerNormConfig,
    /// LayerNorm of the residual stream (after attention and after the FFN).
    pub layer_norm: LayerNormConfig,
    /// The reciprocal square root of the pooled vector's squared norm.
    pub l2: NewtonConfig,
}

impl PrivateConfig {
    /// Defaults for BERT encoders like all-MiniLM-L6-v2: `f = 16`; the even GELU (`T = 3.25`, degree 4 in
    /// `x^2`); softmax with the one-piece exp (degree 8 on `[-8, 0]`) and 3 Newton iterations; LayerNorm variances in
    /// `[2^-14, 2^15)` (3 iterations); squared norms of the pooled vector in `[2^-10, 2^17)`.
    pub fn new(fixed_point: FixedPoint) -> Result<Self> {
        let norm = |lo, hi| LayerNormConfig {
            epsilon: 1e-12,
            rsqrt: NewtonConfig {
                lo,
                hi,
                iterations: 3,
            },
        };
        Ok(Self {
            fixed_point,
            gelu: GeluEven::default_fit()?,
            softmax: SoftmaxFastConfig {
                exp: ExpNeg::default_fit()?,
                iterations: 3,
            },
            embed_norm: norm(-14, 14),
            layer_norm: norm(-14, 14),
            l2: NewtonConfig {
                lo: -10,
                hi: 16,
                iterations: 3,
            },
        })
    }
}

/// A LayerNorm's gain (`f` fractional bits) and bias (`2f`), to rebuild `n gamma + beta` at `2f`.
#[derive(Debug, Clone)]
struct Affine2f {
    gamma: Vec<u64>,
    beta: Vec<u64>,
}

/// One encoder layer's public weights, folded and encoded (`[in, out]` row-major, `f` fractional bits;
/// biases at `2f`).
#[derive(Debug, Clone)]
struct LayerWeights {
    /// `[d, 3d]`: query (scaled by `1/sqrt(h)`), key, value, with the input LayerNorm's gain folded in.
    qkv: Vec<u64>,
    qkv_bias: Vec<u64>,
    out: Vec<u64>,
    out_bias: Vec<u64>,
    /// `[d, ff]` with the attention LayerNorm's gain and GELU's input scale folded in.
    ffn_in: Vec<u64>,
    ffn_in_bias: Vec<u64>,
    ffn_out: Vec<u64>,
    ffn_out_bias: Vec<u64>,
    /// The layer input's LayerNorm (the embeddings' for layer 0, else the previous layer's output norm).
    input_norm: Affine2f,
    /// The attention LayerNorm, for the FFN's residual.
    attention_norm: Affine2f,
}

/// A BERT encoder prepared for private inference: public folded fixed-point weights, the public
/// embedding tables for the client, and the approximations.
#[derive(Debug, Clone)]
pub struct PrivateBert {
    hidden: usize,
    heads: usize,
    ff: usize,
    max_positions: usize,
    vocab: usize,
    /// Word, position and token-type tables, f32, row-major `[rows, hidden]` (the client's lookup).
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    layers: Vec<LayerWeights>,
    /// The last LayerNorm's gain and bias (folded into mean pooling).
    final_gamma: Vec<f64>,
    final_beta: Vec<f64>,
    config: PrivateConfig,
}

fn tensor_values<const N: usize>(t: burn::tensor::Tensor<N>) -> Result<Vec<f64>> {
    Ok(values(t)?.into_iter().map(f64::from).collect())
}

fn enc(v: f64, bits: u32) -> u64 {
    (v * f64::from(bits).exp2()).round() as i64 as u64
}

/// A LayerNorm's gain and bias in f64.
fn norm_params(n: &burn::nn::LayerNorm, d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let gamma = tensor_values(n.gamma.val())?;
    let beta = match &n.beta {
        Some(b) => tensor_values(b.val())?,
        None => vec![0.0; d],
    };
    Ok((gamma, beta))
}

/// `[in, out]` weight and bias of a burn Linear in f64.
fn linear_params(l: &burn::nn::Linear) -> Result<(Vec<f64>, Vec<f64>)> {
    let w = tensor_values(l.weight.val())?;
    let outputs = l.weight.val().dims()[1];
    let b = match &l.bias {
        Some(b) => tensor_values(b.val())?,
        None => vec![0.0; outputs],
    };
    Ok((w, b))
}

impl PrivateBert {
    /// Prepares `bert` (its weights become public fixed-point constants of the computation).
    pub fn new(bert: &Bert, config: PrivateConfig) -> Result<Self> {
        let c = &bert.config;
        let (d, ff) = (c.hidden_size, c.intermediate_size);
        let f = config.fixed_point.frac_bits();
        let scale = 1.0 / (c.head_size() as f64).sqrt();
        let table = |e: &burn::nn::Embedding| values(e.weight.val());
        let affine = |(g, b): &(Vec<f64>, Vec<f64>)| Affine2f {
            gamma: g.iter().map(|v| enc(*v, f)).collect(),
            beta: b.iter().map(|v| enc(*v, 2 * f)).collect(),
        };
        // `n (diag(gamma) W) + (beta W + b)`, with per-output scales.
        let fold = |(w, b): (Vec<f64>, Vec<f64>),
                    (gamma, beta): &(Vec<f64>, Vec<f64>),
                    out_scale: &dyn Fn(usize) -> f64| {
            let (inputs, outputs) = (gamma.len(), b.len());
            let mut weight = vec![0u64; inputs * outputs];
            let mut bias: Vec<f64> = b.clone();
            for i in 0..inputs {
                for o in 0..outputs {
                    let wio = w[i * outputs + o];
                    weight[i * outputs + o] = enc(gamma[i] * wio * out_scale(o), f);
                    bias[o] += beta[i] * wio;
                }
            }
            let bias = bias
                .iter()
                .enumerate()
                .map(|(o, v)| enc(v * out_scale(o), 2 * f))
                .collect::<Vec<_>>();
            (weight, bias)
        };
        let plain = |(w, b): (Vec<f64>, Vec<f64>)| {
            (
                w.iter().map(|v| enc(*v, f)).collect::<Vec<_>>(),
                b.iter().map(|v| enc(*v, 2 * f)).collect::<Vec<_>>(),
            )
        };
        let mut input_norm = norm_params(&bert.embeddings_norm, d)?;
        let mut layers = Vec::with_capacity(bert.layers.len());
        for l in &bert.layers {
            let qkv = concat_linears(l)?;
            let (qkv, qkv_bias) = fold(qkv, &input_norm, &|o| if o < d { scale } else { 1.0 });
            let (out, out_bias) = plain(linear_params(&l.attention_out)?);
            let attention_norm = norm_params(&l.attention_norm, d)?;
            let gelu_scale = config.gelu.input_scale();
            let (ffn_in, ffn_in_bias) =
                fold(linear_params(&l.intermediate)?, &attention_norm, &|_| {
                    gelu_scale
                });
            let (ffn_out, ffn_out_bias) = plain(linear_params(&l.output)?);
            layers.push(LayerWeights {
                qkv,
                qkv_bias,
                out,
                out_bias,
                ffn_in,
                ffn_in_bias,
                ffn_out,
                ffn_out_bias,
                input_norm: affine(&input_norm),
                attention_norm: affine(&attention_norm),
            });
            input_norm = norm_params(&l.output_norm, d)?;
        }
        Ok(Self {
            hidden: d,
            heads: c.num_attention_heads,
            ff,
            max_positions: c.max_position_embeddings,
            vocab: c.vocab_size,
            word: table(&bert.word_embeddings)?,
            position: table(&bert.position_embeddings)?,
            token_type: table(&bert.token_type_embeddings)?,
            layers,
            final_gamma: input_norm.0,
            final_beta: input_norm.1,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PrivateConfig {
        &self.config
    }

    /// Width of the embedding.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The client's part: the embedded vectors of `ids` (word + position + token type 0), `[len, hidden]`,
    /// encoded in fixed point. Checks the ids against the tables.
    pub fn client_input(&self, ids: &[u32]) -> Result<Vec<u64>> {
        let d = self.hidden;
        if ids.is_empty() || ids.len() > self.max_positions {
            return Err(EngineError::InputShape {
                got: ids.len(),
                expected: self.max_positions,
                batch: 1,
                item: vec![self.max_positions],
            });
        }
        let mut x = Vec::with_capacity(ids.len() * d);
        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= self.vocab {
                return Err(EngineError::ModelFile(format!(
                    "token {t} has id {id} outside the vocabulary of {}",
                    self.vocab
                )));
            }
            for j in 0..d {
                x.push(self.word[id * d + j] + self.position[t * d + j] + self.token_type[j]);
            }
        }
        Ok(self.config.fixed_point.encode(&x)?)
    }

    /// The dealer material of one private embedding of `len` tokens, in the order [`Self::forward`] uses it.
    pub fn requests(&self, len: usize) -> Vec<Request> {
        let (d, ff, heads) = (self.hidden, self.ff, self.heads);
        let hs = d / heads;
        let f = self.config.fixed_point.frac_bits();
        let trunc = |n| Request::Trunc {
            len: n,
            frac_bits: f,
        };
        let mut out = layer_norm_requests(&self.config.embed_norm, len, d, f);
        for _ in &self.layers {
            out.push(trunc(len * 3 * d));
            out.extend((0..heads).map(|_| Request::MatTriple {
                m: len,
                k: hs,
                n: len,
            }));
            out.push(trunc(heads * len * len));
            out.extend(softmax_fast_requests(
                &self.config.softmax,
                heads * len,
                len,
                f,
            ));
            out.extend((0..heads).map(|_| Request::MatTriple {
                m: len,
                k: len,
                n: hs,
            }));
            out.push(trunc(len * d));
            out.push(trunc(len * d));
            out.extend(layer_norm_requests(&self.config.layer_norm, len, d, f));
            out.push(trunc(len * ff));
            out.extend(self.config.gelu.scaled_requests(len * ff, f));
            out.push(trunc(len * d));
            out.push(trunc(len * d));
            out.extend(layer_norm_requests(&self.config.layer_norm, len, d, f));
        }
        out.extend(mean_pool_requests(d, f));
        out.extend(l2_normalize_requests(&self.config.l2, 1, d, f));
        out
    }

    /// One party's side: from its share of the client's embedded vectors (`[len, hidden]`, see
    /// [`Self::client_input`]) to its share of the L2-normalised sentence embedding (`hidden` values, `f`
    /// fractional bits). `profile`, if given, receives one entry per step.
    pub fn forward<P: Approximations>(
        &self,
        party: &mut P,
        input: P::Share,
        len: usize,
        mut profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<P::Share> {
        let (d, ff, heads) = (self.hidden, self.ff, self.heads);
        let hs = d / heads;
        if len == 0 || P::len(&input) != len * d {
            return Err(EngineError::InputShape {
                got: P::len(&input),
                expected: len * d,
                batch: 1,
                item: vec![len, d],
            });
        }
        let cfg = &self.config;
        let mut step = Step::new(party);
        let mut n = party.layer_norm(&input, len, d, &cfg.embed_norm)?;
        step.done(party, &mut profile, "embeddings/layernorm");
        for (i, w) in self.layers.iter().enumerate() {
            let label = |s: &str| format!("layer{i}/{s}");
            // Q | K | V.
            let qkv = linear_trunc(party, &n, len, d, 3 * d, &w.qkv, &w.qkv_bias, None)?;
            step.done(party, &mut profile, &label("qkv"));
            // Scores of every head, one round of matrix products.
            let q: Vec<P::Share> = (0..heads)
                .map(|h| P::gather(&qkv, &block(len, 3 * d, h * hs, hs, false)))
                .collect();
            let kt: Vec<P::Share> = (0..heads)
                .map(|h| P::gather(&qkv, &block(len, 3 * d, d + h * hs, hs, true)))
                .collect();
            let v: Vec<P::Share> = (0..heads)
                .map(|h| P::gather(&qkv, &block(len, 3 * d, 2 * d + h * hs, hs, false)))
                .collect();
            let pairs: Vec<(&P::Share, &P::Share)> = q.iter().zip(&kt).collect();
            let scores = party.matmuls(&pairs, &vec![[len, hs, len]; heads])?;
            let scores = party.trunc(&P::concat(&scores))?;
            step.done(party, &mut profile, &label("scores"));
            let probs = party.softmax_fast(&scores, heads * len, len, &cfg.softmax)?;
            step.done(party, &mut profile, &label("softmax"));
            let p: Vec<P::Share> = (0..heads)
                .map(|h| P::slice(&probs, h * len * len..(h + 1) * len * len))
                .collect();
            let pairs: Vec<(&P::Share, &P::Share)> = p.iter().zip(&v).collect();
            let context = party.matmuls(&pairs, &vec![[len, len, hs]; heads])?;
            let context = P::gather(&P::concat(&context), &merge_heads(len, heads, hs));
            let context = party.trunc(&context)?;
            step.done(party, &mut profile, &label("context"));
            // Output projection + residual, one truncation.
            let residual = affine_2f(party, &n, len, &w.input_norm);
            let r = linear_trunc(
                party,
                &context,
                len,
                d,
                d,
                &w.out,
                &w.out_bias,
                Some(&residual),
            )?;
            step.done(party, &mut profile, &label("attention-out"));
            let n1 = party.layer_norm(&r, len, d, &cfg.layer_norm)?;
            step.done(party, &mut profile, &label("layernorm1"));
            // y = s h (s: GELU's input scale, folded into the weights).
            let y = linear_trunc(party, &n1, len, d, ff, &w.ffn_in, &w.ffn_in_bias, None)?;
            step.done(party, &mut profile, &label("ffn-in"));
            let g = party.gelu_even_scaled(&y, &cfg.gelu)?;
            step.done(party, &mut profile, &label("gelu"));
            // g has 2f fractional bits: g W2 has 3f, truncated to 2f, then bias and residual.
            let mut z =
                party.linear_trunc([len, ff, d], &g, &w.ffn_out, &vec![0; len * d], None)?;
            let tiled: Vec<u64> = (0..len * d).map(|i| w.ffn_out_bias[i % d]).collect();
            party.add_public(&mut z, &tiled);
            let z = P::add(&z, &affine_2f(party, &n1, len, &w.attention_norm));
            let r = party.trunc(&z)?;
            step.done(party, &mut profile, &label("ffn-out"));
            n = party.layer_norm(&r, len, d, &cfg.layer_norm)?;
            step.done(party, &mut profile, &label("layernorm2"));
        }
        let pooled = party.mean_pool(
            &n,
            len,
            d,
            Some(Affine {
                scale: &self.final_gamma,
                shift: &self.final_beta,
            }),
        )?;
        step.done(party, &mut profile, "mean-pool");
        let out = party.l2_normalize(&pooled, 1, d, &cfg.l2)?;
        step.done(party, &mut profile, "l2-normalize");
        Ok(out)
    }
}

/// Query, key and value weights side by side: `[d, 3d]` and `[3d]`.
fn concat_linears(l: &EncoderLayer) -> Result<(Vec<f64>, Vec<f64>)> {
    let parts = [
        linear_params(&l.query)?,
        linear_params(&l.key)?,
        linear_params(&l.value)?,
    ];
    let d = parts[0].1.len();
    let mut w = Vec::with_capacity(d * 3 * d);
    for i in 0..d {
        for (pw, _) in &parts {
            w.extend_from_slice(&pw[i * d..(i + 1) * d]);
        }
    }
    let b = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    Ok((w, b))
}

/// `trunc(x W + bias + addend)` for shared `x` (`rows x inner`), public `W` (`inner x outputs`), its bias at
/// `2f` (tiled over the rows) and an optional shared addend at `2f` (a residual).
#[allow(clippy::too_many_arguments)]
fn linear_trunc<P: MpcOps>(
    party: &mut P,
    x: &P::Share,
    rows: usize,
    inner: usize,
    outputs: usize,
    weight: &[u64],
    bias: &[u64],
    addend: Option<&P::Share>,
) -> Result<P::Share> {
    let tiled: Vec<u64> = (0..rows * outputs).map(|i| bias[i % outputs]).collect();
    Ok(party.linear_trunc([rows, inner, outputs], x, weight, &tiled, addend)?)
}

/// `n gamma + beta` at `2f` (a LayerNorm's affine part, for a residual added before a truncation).
fn affine_2f<P: MpcOps>(party: &P, n: &P::Share, rows: usize, a: &Affine2f) -> P::Share {
    let cols = a.gamma.len();
    let gamma: Vec<u64> = (0..rows * cols).map(|i| a.gamma[i % cols]).collect();
    let beta: Vec<u64> = (0..rows * cols).map(|i| a.beta[i % cols]).collect();
    let mut y = P::mul_public(n, &gamma);
    party.add_public(&mut y, &beta);
    y
}

/// Indices of columns `from..from + width` of a row-major `rows x cols` matrix: the block row-major, or
/// transposed (`width x rows`).
fn block(rows: usize, cols: usize, from: usize, width: usize, transposed: bool) -> Vec<usize> {
    if transposed {
        (0..width)
            .flat_map(|j| (0..rows).map(move |t| t * cols + from + j))
            .collect()
    } else {
        (0..rows)
            .flat_map(|t| (0..width).map(move |j| t * cols + from + j))
            .collect()
    }
}

/// Indices that turn `heads` blocks of `len x hs` (concatenated) into `len x (heads hs)` row-major.
fn merge_heads(len: usize, heads: usize, hs: usize) -> Vec<usize> {
    (0..len)
        .flat_map(|t| (0..heads * hs).map(move |c| (c / hs) * len * hs + t * hs + c % hs))
        .collect()
}

/// Per-step accounting: time, traffic and material since the last step.
struct Step {
    started: Instant,
    net: veil_protocols::net::NetStats,
    material: veil_protocols::material::MaterialUse,
}

impl Step {
    fn new<P: MpcOps>(party: &P) -> Self {
        Self {
            started: Instant::now(),
            net: party.stats().clone(),
            material: party.material_use(),
        }
    }

    fn done<P: MpcOps>(
        &mut self,
        party: &P,
        profile: &mut Option<&mut Vec<StepProfile>>,
        label: &str,
    ) {
        if let Some(p) = profile.as_deref_mut() {
            p.push(StepProfile {
                label: label.to_string(),
                elapsed: self.started.elapsed(),
                net: party.stats().since(&self.net),
                material: party.material_use().since(&self.material),
            });
        }
        *self = Self::new(party);
    }
}
