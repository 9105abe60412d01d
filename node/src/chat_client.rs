//! The client side of a generation job (see [`crate::generation`]): submit the turn's manifest, share the
//! prompt's embedded vectors, then per step reconstruct the logits, choose the next token and share its
//! embedded vector, until the caller stops or the job's tokens are spent.
//!
//! Invariant: only this client sees a token; each party gets its share of embedded vectors only.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_engine::llama::private::PrivateLlama;
use veil_protocols::share::{reconstruct, share};

use super::{Client, Committee};
use crate::error::{NodeError, Result};
use crate::frame;
use crate::generation::{PromptLogits, SMOLLM2, TINY};
use crate::manifest::{DeployedModel, Manifest, ModelSpec, Protocol};
use crate::wire::{JobId, Msg, PartyReport, RunRequest, Words};

/// How long the client waits for a party's answer to `Attach`.
const ATTACH_ANSWER_WAIT: Duration = Duration::from_secs(10);

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
                    file_bytes: 0,
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
        let manifest = Manifest {
            job: JobId::random(),
            protocol: Protocol::Semi2k,
            model: job.spec.clone(),
            batch: u32::try_from(prompt.len())
                .map_err(|_| NodeError::Job("prompt too long".into()))?,
            inferences: u32::try_from(max_tokens)
                .map_err(|_| NodeError::Job("too many tokens".into()))?,
            parties: committee.parties.clone(),
            dealer: Some(
                committee
                    .dealer
                    .clone()
                    .ok_or_else(|| NodeError::Job("private generation needs a dealer".into()))?,
            ),
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
        let mut streams = self.runtime.block_on(async {
            let mut members: Vec<&crate::manifest::Member> = manifest.parties.iter().collect();
            members.extend(manifest.dealer.as_ref());
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
            Ok(streams)
        })?;
        let (mut dealer_send, _dealer_recv) = streams
            .pop()
            .ok_or_else(|| NodeError::Job("no dealer stream".into()))?;
        let first = FirstStep {
            threads: job.threads as u32,
            profile: job.profile,
            shaping: self.options.shaping,
        };
        let input = |ids: &[u32]| job.model.client_input(ids).map_err(engine);
        let outcome = self.drive(
            &mut streams,
            manifest.job,
            &input,
            (vocab, scale),
            &mut rng,
            first,
            PromptLogits::All,
            prompt,
            max_tokens,
            &mut choose,
        );
        let _ = dealer_send.finish();
        outcome
    }

    /// Drives a coordinator's generation job (see [`crate::generation`]): `manifest` is the attempt's
    /// manifest, already checked by the caller against the coordinator's key, whose parties each hold a
    /// sealed ticket naming this client. Dials every party (its key pinned by the manifest; retried until
    /// `attach_wait` passes, as a party admits this client only once it has opened its ticket), attaches,
    /// then runs the turn as [`Client::generate`] does, except that the prefill returns the last prompt
    /// position's logits only (`choose` sees one row after it): `input` embeds token ids in the parties' fixed
    /// point (`frac_bits`), `vocab` is the logits' width, `choose` picks each next token or ends the turn.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_attached(
        &self,
        manifest: &Manifest,
        input: &dyn Fn(&[u32]) -> Result<Vec<u64>>,
        vocab: usize,
        frac_bits: u32,
        prompt: &[u32],
        attach_wait: Duration,
        mut choose: impl FnMut(&[Vec<f64>]) -> Option<u32>,
    ) -> Result<GenerationRun> {
        crate::generation::check_spec(&manifest.model, manifest.batch, manifest.inferences)
            .map_err(NodeError::Job)?;
        if prompt.len() != manifest.batch as usize {
            return Err(NodeError::Job(format!(
                "a prompt of {} tokens for a job of {}",
                prompt.len(),
                manifest.batch
            )));
        }
        let max_tokens = manifest.inferences as usize;
        let scale = (-2.0 * f64::from(frac_bits)).exp2();
        let mut rng = StdRng::from_os_rng();
        let mut streams = self.runtime.block_on(async {
            let deadline = Instant::now() + attach_wait;
            let mut streams: Vec<Bi> = Vec::with_capacity(manifest.parties.len());
            for (i, member) in manifest.parties.iter().enumerate() {
                // The TLS handshake completes on this side before the party has checked this client's
                // certificate, so admission is known only from the party's answer to `Attach`: retried
                // until the deadline (the party admits this client once it opened its ticket).
                let bi = loop {
                    let attempt = async {
                        let (mut send, mut recv) = self.open(member).await?;
                        frame::write(&mut send, &Msg::Attach { job: manifest.job })
                            .await
                            .map_err(|e| NodeError::Quic(e.to_string()))?;
                        let answer = tokio::time::timeout(
                            ATTACH_ANSWER_WAIT,
                            frame::read(&mut recv, self.options.max_frame),
                        )
                        .await;
                        match answer {
                            Ok(Ok(Msg::Accepted)) => Ok((send, recv)),
                            Ok(Ok(Msg::Failed(why))) => Err(NodeError::Job(why)),
                            Ok(Ok(other)) => Err(NodeError::Unexpected(format!(
                                "answered {}",
                                other.name()
                            ))),
                            Ok(Err(e)) => Err(NodeError::Quic(e.to_string())),
                            Err(_) => Err(NodeError::Timeout(
                                ATTACH_ANSWER_WAIT,
                                "waiting for the party's answer to Attach",
                            )),
                        }
                    }
                    .await;
                    match attempt {
                        Ok(bi) => break bi,
                        Err(e) if Instant::now() >= deadline => {
                            return Err(NodeError::Job(format!(
                                "party {i} at {} did not take this client within {attach_wait:?}: {e}",
                                member.address
                            )))
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                };
                streams.push(bi);
            }
            Ok(streams)
        })?;
        let first = FirstStep {
            threads: 1,
            profile: false,
            shaping: None,
        };
        self.drive(
            &mut streams,
            manifest.job,
            input,
            (vocab, scale),
            &mut rng,
            first,
            PromptLogits::Last,
            prompt,
            max_tokens,
            &mut choose,
        )
    }

    /// The turn on the parties' streams: the prompt's shares, then per step the logits reconstructed,
    /// `choose`'s token shared, until `choose` ends the turn or `max_tokens` are chosen; then every party is
    /// told the turn is over. `logits` is the vocabulary and the scale of a logit's fixed point. Each step's
    /// exchange runs on this client's runtime; `input` and `choose` run outside it (they may block).
    #[allow(clippy::too_many_arguments)]
    fn drive(
        &self,
        streams: &mut [Bi],
        job: JobId,
        input: &dyn Fn(&[u32]) -> Result<Vec<u64>>,
        (vocab, scale): (usize, f64),
        rng: &mut StdRng,
        first_step: FirstStep,
        prompt_logits: PromptLogits,
        prompt: &[u32],
        max_tokens: usize,
        choose: &mut dyn FnMut(&[Vec<f64>]) -> Option<u32>,
    ) -> Result<GenerationRun> {
        let n = streams.len();
        let mut run = GenerationRun {
            job,
            tokens: Vec::new(),
            steps: Vec::new(),
        };
        let mut ids: Vec<u32> = prompt.to_vec();
        let mut first = true;
        let outcome = loop {
            let x = input(&ids)?;
            let shares = share(&x, n, rng)?;
            // Rows of logits this step returns (a decode step: its one position).
            let rows = match prompt_logits {
                PromptLogits::All => ids.len(),
                PromptLogits::Last => 1,
            };
            let exchanged = self.runtime.block_on(self.exchange(
                streams,
                job,
                shares,
                first.then_some(first_step),
            ));
            first = false;
            let mut reports = match exchanged {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            let parts = reports
                .iter_mut()
                .map(|r| match r.outputs.as_mut_slice() {
                    [w] if w.0.len() == rows * vocab => Ok(std::mem::take(&mut w.0)),
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
        self.runtime.block_on(async {
            for (send, _) in streams.iter_mut() {
                let end = RunRequest::new(job, Vec::new(), Vec::new());
                let _ = frame::write(send, &Msg::Run(end)).await;
                let _ = send.finish();
            }
        });
        outcome.map(|()| run)
    }

    /// One step's exchange: each party's share out (with the turn's first-step options on the first), then
    /// every party's report; a failure names every party that reported one.
    async fn exchange(
        &self,
        streams: &mut [Bi],
        job: JobId,
        shares: Vec<Vec<u64>>,
        first_step: Option<FirstStep>,
    ) -> Result<Vec<PartyReport>> {
        let n = streams.len();
        for (i, ((send, _), s)) in streams.iter_mut().zip(shares).enumerate() {
            let mut request = RunRequest::new(job, Vec::new(), vec![Words(s)]);
            if let Some(f) = first_step {
                request.threads = f.threads;
                request.profile = f.profile;
                request.shaping = f.shaping;
            }
            frame::write(send, &Msg::Run(request))
                .await
                .map_err(|e| NodeError::Job(format!("party {i}: sending a step: {e}")))?;
        }
        let mut reports = Vec::with_capacity(n);
        let mut failures = Vec::new();
        for (i, (_, recv)) in streams.iter_mut().enumerate() {
            match self.read(recv, "waiting for a step's logits").await {
                Ok(Msg::Outputs(r)) => reports.push(r),
                Ok(Msg::Failed(why)) => failures.push(format!("[party {i}] {why}")),
                Ok(other) => failures.push(format!("[party {i}] answered {}", other.name())),
                Err(e) => failures.push(format!("[party {i}] {e}")),
            }
        }
        if !failures.is_empty() {
            return Err(NodeError::Job(format!(
                "the turn failed: {}",
                failures.join("; ")
            )));
        }
        Ok(reports)
    }
}

/// The options of a turn's first `Run` (the lab's knobs; a coordinator job's parties refuse all but the
/// defaults).
#[derive(Clone, Copy)]
struct FirstStep {
    threads: u32,
    profile: bool,
    shaping: Option<veil_engine::lab::shaping::ShapingConfig>,
}

fn engine(e: impl Into<veil_engine::EngineError>) -> NodeError {
    NodeError::Engine(e.into())
}
