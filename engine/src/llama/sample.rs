//! Choosing the next token from logits: greedy (the first largest logit), or temperature and nucleus
//! (top-p) sampling with a seeded generator.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The largest logit (the lowest id among equals).
    Greedy,
    /// Softmax of `logits / temperature`, cut to the smallest set of most likely tokens whose mass reaches
    /// `top_p`, renormalised and drawn from.
    Nucleus {
        /// Positive temperature.
        temperature: f64,
        /// Mass kept, in `(0, 1]`.
        top_p: f64,
        /// Seed of the generator.
        seed: u64,
    },
}

/// Draws tokens under a [`Sampling`].
#[derive(Debug)]
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha20Rng,
}

/// The index of the first largest value (0 for an empty slice).
pub fn argmax(logits: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best
}

impl Sampler {
    /// A sampler; `Nucleus` with a non-positive or non-finite temperature, or `top_p` outside `(0, 1]`,
    /// is refused.
    pub fn new(sampling: Sampling) -> Option<Self> {
        let seed = match sampling {
            Sampling::Greedy => 0,
            Sampling::Nucleus {
                temperature,
                top_p,
                seed,
            } => {
                if !(temperature.is_finite() && temperature > 0.0 && top_p > 0.0 && top_p <= 1.0) {
                    return None;
                }
                seed
            }
        };
        Some(Self {
            sampling,
            rng: ChaCha20Rng::seed_from_u64(seed),
        })
    }

    /// The next token for `logits`.
    pub fn next(&mut self, logits: &[f64]) -> u32 {
        match self.sampling {
            Sampling::Greedy => argmax(logits) as u32,
            Sampling::Nucleus {
                temperature, top_p, ..
            } => {
                let max = logits[argmax(logits)];
                let mut p: Vec<(usize, f64)> = logits
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i, ((l - max) / temperature).exp()))
                    .collect();
                let sum: f64 = p.iter().map(|x| x.1).sum();
                p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut kept = 0.0;
                let mut cut = p.len();
                for (i, (_, w)) in p.iter().enumerate() {
                    kept += w / sum;
                    if kept >= top_p {
                        cut = i + 1;
                        break;
                    }
                }
                p.truncate(cut.max(1));
                let total: f64 = p.iter().map(|x| x.1).sum();
                let mut u = self.rng.random::<f64>() * total;
                for (i, w) in &p {
                    if u < *w {
                        return *i as u32;
                    }
                    u -= w;
                }
                p.last().map_or(0, |x| x.0 as u32)
            }
        }
    }
}
