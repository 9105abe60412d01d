//! The client side of a generation job (see [`crate::generation`]): submit the turn's manifest, share the
//! prompt's embedded vectors, then per step reconstruct the logits, choose the next token and share its
//! embedded vector, until the caller stops or the job's tokens are spent.
//!
//! Invariant: only this client sees a token; each party gets its share of embedded vectors only.

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_engine::llama::private::PrivateLlama;
use veil_protocols::share::{reconstruct, share};

use super::{Client, Committee};
use crate::error::{NodeError, Result};
use crate::frame;
use crate::generation::{SMOLLM2, TINY};
use crate::manifest::{DeployedModel, Manifest, ModelSpec, SEMI2K};
use crate::wire::{JobId, Msg, PartyReport, RunRequest, Words};

/// A generation job's public description and the client's local choices.
pub struct ChatJob<'a> {
    /// The private model (the client uses its public embedding table).
    pub model: &'a PrivateLlama,
    /// The manifest's model: [`ChatJob::smollm2`] or [`ChatJob::tiny`].
    pub spec: ModelSpec,
    /// Ring-kernel threads per party.
    pub threads: usize,
    /// Seed of the client's shares (reproducible runs); fresh randomness if `None`.
    pub seed: Option<u64>,
    /// Ask parties for each decode step's per-step profile.
    pub profile: bool,
}

impl<'a> ChatJob<'a> {
    /// SmolLM2 pinned by `id`, its GGUF file's SHA-256 ([`crate::generation::file_id`]).
    pub fn smollm2(model: &'a PrivateLlama, id: String) -> Self {
        Self::with_spec(
            model,
            ModelSpec {
                workload: SMOLLM2.into(),
                seed: 0,
                weights: veil_engine::WeightMode::Public,
                frac_bits: model.private_config().fixed_point.frac_bits(),
                deployed: Some(DeployedModel {
                    id,
                    architecture: String::new(),
                    handoff: None,
                    senders: 0,
                }),
            },
        )
    }

    /// The `llama-tiny` workload with weights from `seed` (`model` must be built from the same).
    pub fn tiny(model: &'a PrivateLlama, seed: u64) -> Self {
        Self::with_spec(
            model,
            ModelSpec {
                workload: TINY.into(),
                seed,
                weights: veil_engine::WeightMode::Public,
                frac_bits: model.private_config().fixed_point.frac_bits(),
                deployed: None,
            },
        )
    }

    fn with_spec(model: &'a PrivateLlama, spec: ModelSpec) -> Self {
        Self {
            model,
            spec,
            threads: 1,
            seed: None,
            profile: false,
        }
    }
}

/// What a generation job returned.
#[derive(Debug, Clone)]
pub struct GenerationRun {
    /// The job.
    pub job: JobId,
    /// Tokens the caller chose, in order.
    pub tokens: Vec<u32>,
    /// Per step (the prefill first, then each decode step), every party's report of it (output shares
    /// removed once reconstructed).
    pub steps: Vec<Vec<PartyReport>>,
}

/// One party's stream.
type Bi = (quinn::SendStream, quinn::RecvStream);

impl Client {
    /// Runs one generation job on `committee`: the prompt `prompt` (token ids), then up to `max_tokens`
    /// tokens. After each step `choose` gets the reconstructed logits (`[rows][vocab]`, every prompt
    /// position after the prefill, one row after a decode step) and returns the next token, or `None` to
    /// end the turn. A party's failure fails the turn with every party's reason.
    pub fn generate(
        &self,
        committee: &Committee,
        job: &ChatJob<'_>,
        prompt: &[u32],
        max_tokens: usize,
        mut choose: impl FnMut(&[Vec<f64>]) -> Option<u32>,
    ) -> Result<GenerationRun> {
        let n = committee.parties.len();
        let manifest = Manifest {
            job: JobId::random(),
            protocol: SEMI2K.into(),
            model: job.spec.clone(),
            batch: u32::try_from(prompt.len())
                .map_err(|_| NodeError::Job("prompt too long".into()))?,
            inferences: u32::try_from(max_tokens)
                .map_err(|_| NodeError::Job("too many tokens".into()))?,
            parties: committee.parties.clone(),
            dealer: committee.dealer.clone(),
            client: self.public_key(),
            output_key: None,
            verifier: None,
        };
        crate::generation::check_spec(&manifest.model, manifest.batch, manifest.inferences)
            .map_err(NodeError::Job)?;
        let (vocab, fp) = (
            job.model.config().vocab,
            job.model.private_config().fixed_point,
        );
        let scale = (-2.0 * f64::from(fp.frac_bits())).exp2();
        let mut rng = match job.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let signed = manifest.sign(&self.identity)?;
        self.runtime.block_on(async {
            let mut members: Vec<&crate::manifest::Member> = manifest.parties.iter().collect();
            members.push(&manifest.dealer);
            let mut streams: Vec<Bi> = Vec::with_capacity(members.len());
            for (i, member) in members.iter().enumerate() {
                let (mut send, mut recv) = self.open(member).await.map_err(|e| {
                    NodeError::Job(format!("member {i} at {}: {e}", member.address))
                })?;
                frame::write(&mut send, &Msg::Submit(signed.clone()))
                    .await
                    .map_err(|e| NodeError::Quic(e.to_string()))?;
                match self
                    .read(&mut recv, "waiting for the manifest's acceptance")
                    .await?
                {
                    Msg::Accepted => streams.push((send, recv)),
                    Msg::Failed(why) => {
                        return Err(NodeError::Job(format!("member {i} refused the job: {why}")))
                    }
                    other => {
                        return Err(NodeError::Unexpected(format!(
                            "member {i} answered {}",
                            other.name()
                        )))
                    }
                }
            }
            let (mut dealer_send, _dealer_recv) = streams
                .pop()
                .ok_or_else(|| NodeError::Job("no dealer stream".into()))?;
            let mut run = GenerationRun {
                job: manifest.job,
                tokens: Vec::new(),
                steps: Vec::new(),
            };
            let mut ids: Vec<u32> = prompt.to_vec();
            let mut first = true;
            let outcome = loop {
                let x = job.model.client_input(&ids).map_err(engine)?;
                let shares = share(&x, n, &mut rng)?;
                for (i, ((send, _), s)) in streams.iter_mut().zip(shares).enumerate() {
                    let mut request = RunRequest::new(manifest.job, Vec::new(), vec![Words(s)]);
                    if first {
                        request.threads = job.threads as u32;
                        request.profile = job.profile;
                        request.shaping = self.options.shaping;
                    }
                    frame::write(send, &Msg::Run(request))
                        .await
                        .map_err(|e| NodeError::Job(format!("party {i}: sending a step: {e}")))?;
                }
                first = false;
                let mut reports = Vec::with_capacity(n);
                let mut failures = Vec::new();
                for (i, (_, recv)) in streams.iter_mut().enumerate() {
                    match self.read(recv, "waiting for a step's logits").await {
                        Ok(Msg::Outputs(r)) => reports.push(r),
                        Ok(Msg::Failed(why)) => failures.push(format!("[party {i}] {why}")),
                        Ok(other) => {
                            failures.push(format!("[party {i}] answered {}", other.name()))
                        }
                        Err(e) => failures.push(format!("[party {i}] {e}")),
                    }
                }
                if !failures.is_empty() {
                    break Err(NodeError::Job(format!(
                        "the turn failed: {}",
                        failures.join("; ")
                    )));
                }
                let parts = reports
                    .iter_mut()
                    .map(|r| match r.outputs.as_mut_slice() {
                        [w] if w.0.len() == ids.len() * vocab => Ok(std::mem::take(&mut w.0)),
                        _ => Err(NodeError::Unexpected(
                            "a party's logits do not have the step's shape".into(),
                        )),
                    })
                    .collect::<Result<Vec<Vec<u64>>>>()?;
                for r in &mut reports {
                    r.outputs.clear();
                }
                run.steps.push(reports);
                let opened = reconstruct(&parts)?;
                let logits: Vec<Vec<f64>> = opened
                    .chunks_exact(vocab)
                    .map(|row| row.iter().map(|&v| v as i64 as f64 * scale).collect())
                    .collect();
                let Some(t) = choose(&logits) else {
                    break Ok(());
                };
                run.tokens.push(t);
                if run.tokens.len() >= max_tokens {
                    break Ok(());
                }
                ids = vec![t];
            };
            // The turn is over: tell every party (they free the cache) and close the streams.
            for (send, _) in &mut streams {
                let end = RunRequest::new(manifest.job, Vec::new(), Vec::new());
                let _ = frame::write(send, &Msg::Run(end)).await;
                let _ = send.finish();
            }
            let _ = dealer_send.finish();
            outcome.map(|()| run)
        })
    }
}

fn engine(e: impl Into<veil_engine::EngineError>) -> NodeError {
    NodeError::Engine(e.into())
}
