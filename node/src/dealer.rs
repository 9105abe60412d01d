//! The dealer role: a node that serves a committee's correlated randomness.
//!
//! For a job, the dealer draws fresh seeds (one model seed and one job seed per party), deals the weight
//! masks ([`veil_protocols::material::deal_masks`]) and the job's corrections
//! ([`veil_protocols::material::deal`]) from the job's public description (the manifest: model name and
//! seed, weight mode, fixed point, batch, number of inferences), and sends each party its two seeds, plus the
//! corrections to the last party. Dealing happens once per job, on the first request.
//!
//! For a `spdz2k` job the dealer deals authenticated material from the job seeds instead (no weight masks to
//! open: the owners publish masked values) and also answers the client, right after accepting its manifest,
//! with the plaintext masks of the client's inputs and weights ([`DealerState::owner`]). The MAC key alpha
//! is not part of it: the client gets alpha from the parties' reports, after their checks
//! (`wire::PartyReport::output_key_share`), so that it cannot help a party pass a check.
//!
//! Invariants: the dealer never receives anything from a party but the request to be served, and serves each
//! party at most once, only to the connection that proved that party's key; the owner material goes only to
//! the manifest's client.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, OnceCell};
use veil_engine::kernel::RingGemm;
use veil_protocols::material;
use veil_protocols::prg::Seed;
use veil_protocols::semi2k::local::DealtSeeds;

use veil_protocols::semi2k::local::Committee;
use veil_protocols::spdz2k;

use crate::error::{NodeError, Result};
use crate::manifest::{Manifest, SPDZ2K};
use crate::party::JobProgram;
use crate::wire::{Dealt, OwnerMaterial, Words};

/// What the dealer dealt for a job.
struct Dealing {
    seeds: DealtSeeds,
    corrections: Vec<u64>,
    /// `spdz2k`: the client's masks and the output key; `None` for `semi2k`.
    owner: Option<OwnerMaterial>,
    bytes: u64,
    seconds: f64,
}

/// A dealer's state for one job.
pub struct DealerState {
    dealing: OnceCell<std::result::Result<Arc<Dealing>, String>>,
    served: Mutex<Vec<bool>>,
    /// Test-only fixed seed ([`crate::config::NodeConfig::insecure_dealer_seed`]); fresh seeds if `None`.
    seed: Option<u64>,
    /// Notified once every party has been served.
    pub all_served: Notify,
}

impl DealerState {
    /// State for a committee of `parties`.
    pub fn new(parties: usize, seed: Option<u64>) -> Self {
        Self {
            dealing: OnceCell::new(),
            served: Mutex::new(vec![false; parties]),
            seed,
            all_served: Notify::new(),
        }
    }

    /// The job's dealing, done on the first call (on a blocking thread) and shared by every later one.
    async fn dealing(&self, manifest: &Manifest) -> Result<Arc<Dealing>> {
        self.dealing
            .get_or_init(|| async {
                let m = manifest.clone();
                let seed = self.seed;
                match tokio::task::spawn_blocking(move || deal(&m, seed)).await {
                    Ok(Ok(d)) => Ok(Arc::new(d)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("dealing task failed: {e}")),
                }
            })
            .await
            .clone()
            .map_err(NodeError::Job)
    }

    /// `spdz2k`: the client's material (its masks and the output key), dealing first if nobody has asked yet.
    /// The caller must have checked that it serves the manifest's client. Fails for a `semi2k` job.
    pub async fn owner(&self, manifest: &Manifest) -> Result<OwnerMaterial> {
        self.dealing(manifest)
            .await?
            .owner
            .clone()
            .ok_or_else(|| NodeError::Job("a semi2k job has no owner material".into()))
    }

    /// Party `party`'s material for the job of `manifest`, dealing first if nobody has asked yet.
    pub async fn serve(&self, manifest: &Manifest, party: usize) -> Result<Dealt> {
        {
            let served = self
                .served
                .lock()
                .map_err(|_| NodeError::Job("dealer state poisoned".into()))?;
            match served.get(party) {
                None => return Err(NodeError::Unexpected(format!("no party {party}"))),
                Some(true) => {
                    return Err(NodeError::Unexpected(format!(
                        "party {party} was served already"
                    )))
                }
                Some(false) => {}
            }
        }
        let dealing = self.dealing(manifest).await?;
        let n = manifest.parties.len();
        let dealt = Dealt {
            model_seed: dealing.seeds.model[party].clone(),
            job_seed: dealing.seeds.job[party].clone(),
            corrections: Words(if party + 1 == n {
                dealing.corrections.clone()
            } else {
                Vec::new()
            }),
            more_corrections: 0,
            dealer_bytes: dealing.bytes,
            dealer_seconds: dealing.seconds,
        };
        let mut served = self
            .served
            .lock()
            .map_err(|_| NodeError::Job("dealer state poisoned".into()))?;
        if served[party] {
            return Err(NodeError::Unexpected(format!(
                "party {party} was served already"
            )));
        }
        served[party] = true;
        if served.iter().all(|s| *s) {
            self.all_served.notify_one();
        }
        Ok(dealt)
    }
}

/// Deals a job: seeds (fresh unless the test-only `seed` is set), masks and corrections for every inference
/// of the manifest.
fn deal(manifest: &Manifest, seed: Option<u64>) -> Result<Dealing> {
    let started = Instant::now();
    let n = manifest.parties.len();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    // A generation job (semi2k, public weights): its steps' material, no masks.
    let (requests, mask_shapes) = if crate::generation::is_generation(&manifest.model.workload) {
        let job = crate::generation::GenerationJob::of(manifest)?;
        (job.requests(), Vec::new())
    } else {
        let program = JobProgram::of(manifest)?;
        if manifest.protocol == SPDZ2K {
            return deal_spdz2k(manifest, &program, seed, threads, started);
        }
        (program.requests(manifest), program.mask_shapes())
    };
    let seeds = match seed {
        Some(s) => DealtSeeds::from_master(&Seed::random_from(s), n),
        None => DealtSeeds::random(n),
    };
    let masks = material::deal_masks(&seeds.model, &mask_shapes)?;
    let corrections = material::deal(&seeds.job, &requests, &masks, &RingGemm::new(threads))?;
    let bytes = material::dealer_bytes(n, corrections.len());
    tracing::info!(job = %manifest.job, parties = n, corrections = corrections.len(), "dealt");
    Ok(Dealing {
        seeds,
        corrections,
        owner: None,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Deals a `spdz2k` job (authenticated material, as `veil_protocols::spdz2k::local::deal_job` does for the
/// in-memory committee, from the job seeds): corrections for the last party, and the client's masks and
/// output key. The model seeds are drawn but unused (weights are published masked, not opened).
fn deal_spdz2k(
    manifest: &Manifest,
    program: &JobProgram,
    seed: Option<u64>,
    threads: usize,
    started: Instant,
) -> Result<Dealing> {
    let n = manifest.parties.len();
    let requests = program.requests(manifest);
    let seeds = match seed {
        Some(s) => DealtSeeds::from_master(&Seed::random_from(s), n),
        None => DealtSeeds::random(n),
    };
    let committee = Committee::new(n, Arc::new(RingGemm::new(threads)));
    let dealt = spdz2k::local::deal_job(&committee, &requests, &seeds.job)?;
    let owner = OwnerMaterial {
        masks: dealt.deal.owner_masks.into_iter().map(Words).collect(),
    };
    tracing::info!(job = %manifest.job, parties = n, corrections = dealt.deal.corrections.len(), "dealt (spdz2k)");
    Ok(Dealing {
        seeds,
        corrections: dealt.deal.corrections,
        owner: Some(owner),
        bytes: dealt.dealer_bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
