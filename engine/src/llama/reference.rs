//! A straightforward f64 Llama forward pass over the whole sequence (no cache, no batching, loops only):
//! the independent check of the burn model and of the private forward in tests.

use super::weights::LlamaWeights;
use super::{LlamaError, Result};

fn matvec(w: &[f32], x: &[f64], rows: usize) -> Vec<f64> {
    let cols = x.len();
    (0..rows)
        .map(|r| (0..cols).map(|c| f64::from(w[r * cols + c]) * x[c]).sum())
        .collect()
}

fn rms_norm(x: &[f64], gain: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter()
        .zip(gain)
        .map(|(v, g)| v * r * f64::from(*g))
        .collect()
}

/// The logits of every position of `ids`, `[len][vocab]`.
pub fn logits(w: &LlamaWeights, ids: &[u32]) -> Result<Vec<Vec<f64>>> {
    let c = &w.config;
    if let Some(&id) = ids.iter().find(|&&t| t as usize >= c.vocab) {
        return Err(LlamaError::TokenOutOfVocabulary { id, vocab: c.vocab });
    }
    let (d, hd, kvw) = (c.hidden, c.head_dim, c.kv_width());
    let mut xs: Vec<Vec<f64>> = ids
        .iter()
        .map(|&t| {
            w.embed[t as usize * d..(t as usize + 1) * d]
                .iter()
                .map(|v| f64::from(*v))
                .collect()
        })
        .collect();
    let rotate = |v: &mut [f64], pos: usize| {
        for head in v.chunks_exact_mut(hd) {
            for i in 0..hd / 2 {
                let (cos, sin) = c.rope(pos, i);
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * cos - b * sin;
                head[2 * i + 1] = a * sin + b * cos;
            }
        }
    };
    for b in &w.blocks {
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let n = rms_norm(x, &b.attn_norm, c.rms_eps);
            let mut q = matvec(&b.q, &n, d);
            let mut k = matvec(&b.k, &n, kvw);
            rotate(&mut q, pos);
            rotate(&mut k, pos);
            qs.push(q);
            ks.push(k);
            vs.push(matvec(&b.v, &n, kvw));
        }
        for (t, x) in xs.iter_mut().enumerate() {
            let mut ctx = vec![0.0; d];
            for h in 0..c.heads {
                let kvh = h / c.group();
                let q = &qs[t][h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (0..=t)
                    .map(|s| {
                        let k = &ks[s][kvh * hd..(kvh + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (s, p) in e.iter().enumerate() {
                    for j in 0..hd {
                        ctx[h * hd + j] += p / sum * vs[s][kvh * hd + j];
                    }
                }
            }
            let o = matvec(&b.o, &ctx, d);
            x.iter_mut().zip(o).for_each(|(a, b)| *a += b);
            let n = rms_norm(x, &b.ffn_norm, c.rms_eps);
            let g = matvec(&b.gate, &n, c.ffn);
            let u = matvec(&b.up, &n, c.ffn);
            let h: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let y = matvec(&b.down, &h, d);
            x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
        }
    }
    Ok(xs
        .iter()
        .map(|x| matvec(w.head(), &rms_norm(x, &w.final_norm, c.rms_eps), c.vocab))
        .collect())
}
