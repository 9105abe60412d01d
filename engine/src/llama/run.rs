//! A chat turn on a local committee (semi2k; n parties on threads over the in-memory mesh, fed by a dealer):
//! what `veil chat` and `veil bench --workload smollm2` run. The client's part (lookup, sharing,
//! reconstruction, sampling) happens here, outside the parties.
//!
//! Each step (the prefill, then one decode step per token) is one dealt job: the dealer deals exactly that
//! step's material, the parties run it, and each party keeps its cache share in its own slot of the
//! session between steps, so a decode step costs one position over the cached keys and values.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_protocols::net::NetStats;
use veil_protocols::prg::Seed;
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds};
use veil_protocols::share::{reconstruct, share};

use super::private::{CacheShare, PrivateLlama};
use super::sample::Sampler;
use super::{Generation, LlamaError, Result};
use crate::local::{LocalOptions, Protocol};
use crate::private::StepProfile;

/// The costs of one step (the prefill or a decode step).
#[derive(Debug, Clone)]
pub struct StepCost {
    /// Positions run.
    pub positions: usize,
    /// Wall time of the parties' online phase (the slowest party).
    pub elapsed: Duration,
    /// Traffic of each party.
    pub online: Vec<NetStats>,
    /// Bytes the dealer sent.
    pub dealer_bytes: u64,
    /// Time the dealer took.
    pub dealer_elapsed: Duration,
    /// The first party's per-step profile (when asked for).
    pub profile: Vec<StepProfile>,
}

/// A committee holding one conversation's cache.
pub struct LocalSession<'m> {
    model: &'m PrivateLlama,
    committee: Committee,
    options: LocalOptions,
    caches: Vec<Mutex<CacheShare<Vec<u64>>>>,
    rng: StdRng,
    steps: u64,
    /// The cost of every step so far.
    pub costs: Vec<StepCost>,
}

impl<'m> LocalSession<'m> {
    /// A fresh committee for `model` (semi2k only).
    pub fn new(model: &'m PrivateLlama, options: &LocalOptions) -> Result<Self> {
        if options.protocol != Protocol::Semi2k {
            return Err(LlamaError::Protocol(options.protocol));
        }
        let n = options.parties;
        let mut committee = Committee::new(n, options.gemm.clone());
        committee.fixed_point = model.private_config().fixed_point;
        committee.timeout = options.timeout;
        committee.link = options.shaping.map(crate::lab::shaping::link);
        Ok(Self {
            model,
            committee,
            options: options.clone(),
            caches: (0..n).map(|_| Mutex::new(model.empty_cache())).collect(),
            rng: match options.seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_os_rng(),
            },
            steps: 0,
            costs: Vec::new(),
        })
    }

    /// Positions cached by the committee.
    pub fn cached(&self) -> usize {
        self.caches[0].lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Runs `ids` (the client embeds and shares them) after the cached positions and returns the logits of
    /// the last `logits_rows` positions, reconstructed by the client, `[logits_rows][vocab]`.
    pub fn step(&mut self, ids: &[u32], logits_rows: usize) -> Result<Vec<Vec<f64>>> {
        let n = self.options.parties;
        let fp = self.model.private_config().fixed_point;
        let x = self.model.client_input(ids)?;
        let shares = share(&x, n, &mut self.rng)?;
        let start = self.cached();
        let requests = self.model.requests(start, ids.len(), logits_rows);
        let seeds = match self.options.seed {
            Some(s) => DealtSeeds::from_master(
                &Seed::random_from(s.wrapping_add(self.steps.wrapping_mul(0x9e37_79b9))),
                n,
            ),
            None => DealtSeeds::random(n),
        };
        self.steps += 1;
        let model = self.model;
        let caches = &self.caches;
        let profile = self.options.profile;
        let len = ids.len();
        let out = run(&self.committee, &requests, &[], &seeds, |party, _| {
            let me = party.id();
            let mut cache = caches[me].lock().map_err(|_| {
                veil_protocols::ProtocolError::Committee("a cache lock was poisoned".into())
            })?;
            let started = Instant::now();
            let before = party.stats().clone();
            let mut prof = Vec::new();
            let logits = model
                .step(
                    party,
                    &mut cache,
                    shares[me].clone(),
                    len,
                    logits_rows,
                    (profile && me == 0).then_some(&mut prof),
                )
                .map_err(|e| veil_protocols::ProtocolError::Material(e.to_string()))?;
            Ok((
                logits,
                started.elapsed(),
                party.stats().since(&before),
                prof,
            ))
        })?;
        let parts: Vec<Vec<u64>> = out.parties.iter().map(|p| p.value.0.clone()).collect();
        let opened = reconstruct(&parts)?;
        let scale = (-2.0 * f64::from(fp.frac_bits())).exp2();
        let vocab = self.model.config().vocab;
        let logits: Vec<Vec<f64>> = opened
            .chunks_exact(vocab)
            .map(|row| row.iter().map(|&v| v as i64 as f64 * scale).collect())
            .collect();
        self.costs.push(StepCost {
            positions: len,
            elapsed: out
                .parties
                .iter()
                .map(|p| p.value.1)
                .max()
                .unwrap_or_default(),
            online: out.parties.iter().map(|p| p.value.2.clone()).collect(),
            dealer_bytes: out.dealer_bytes,
            dealer_elapsed: out.dealer_elapsed,
            profile: out
                .parties
                .into_iter()
                .next()
                .map(|p| p.value.3)
                .unwrap_or_default(),
        });
        Ok(logits)
    }
}

/// Prompt positions per prefill step: a long prompt is prefilled in chunks over the growing cache, so the
/// dealer's material for one step (and the memory it takes) stays bounded.
pub const PREFILL_CHUNK: usize = 8;

impl LocalSession<'_> {
    /// Prefills `ids` in steps of at most `chunk` positions; returns the logits of every position when
    /// `all_rows`, else of the last one.
    pub fn prefill(&mut self, ids: &[u32], all_rows: bool, chunk: usize) -> Result<Vec<Vec<f64>>> {
        let chunk = chunk.max(1);
        let mut out = Vec::new();
        let pieces: Vec<&[u32]> = ids.chunks(chunk).collect();
        for (i, piece) in pieces.iter().enumerate() {
            // Without `all_rows`, an intermediate chunk's one logit row is computed and dropped.
            let rows = if all_rows { piece.len() } else { 1 };
            let logits = self.step(piece, rows)?;
            if all_rows || i + 1 == pieces.len() {
                out.extend(logits);
            }
        }
        Ok(out)
    }
}

/// Generates up to `max_tokens` tokens after `prompt` privately: the prefill (in steps of
/// [`PREFILL_CHUNK`] positions), then one decode step per token, stopping after `eos`. `on_token` sees each token as the client samples it.
pub fn generate_private(
    session: &mut LocalSession<'_>,
    prompt: &[u32],
    max_tokens: usize,
    eos: u32,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32),
) -> Result<Generation> {
    let mut logits = session.prefill(prompt, false, PREFILL_CHUNK)?;
    let mut tokens = Vec::new();
    for i in 0..max_tokens {
        let row = logits.pop().ok_or(LlamaError::NoLogits)?;
        let t = sampler.next(&row);
        tokens.push(t);
        on_token(t);
        if t == eos || i + 1 == max_tokens {
            break;
        }
        logits = session.step(&[t], 1)?;
    }
    Ok(Generation {
        prompt_tokens: prompt.to_vec(),
        tokens,
    })
}
