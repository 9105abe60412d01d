//! The dealer role: a node that serves a committee's correlated randomness.
//!
//! For a job, the dealer draws fresh seeds (one model seed and one job seed per party), deals the weight
//! masks ([`veil_protocols::material::deal_masks`]) and the job's corrections
//! ([`veil_protocols::material::deal`]) from the job's public description (the manifest: model name and
//! seed, weight mode, fixed point, batch, number of inferences), and sends each party its two seeds, plus the
//! corrections to the last party. Dealing happens once per job, on the first request.
//!
//! Invariants: the dealer never receives anything from a party but the request to be served, and serves each
//! party at most once, only to the connection that proved that party's key.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, OnceCell};
use veil_engine::kernel::RingGemm;
use veil_protocols::material;
use veil_protocols::prg::Seed;
use veil_protocols::semi2k::local::DealtSeeds;

use crate::error::{NodeError, Result};
use crate::manifest::Manifest;
use crate::party::compile_plan;
use crate::wire::{Dealt, Words};

/// What the dealer dealt for a job.
struct Dealing {
    seeds: DealtSeeds,
    corrections: Vec<u64>,
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
        let dealing = self
            .dealing
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
            .map_err(NodeError::Job)?;
        let n = manifest.parties.len();
        let dealt = Dealt {
            model_seed: dealing.seeds.model[party].clone(),
            job_seed: dealing.seeds.job[party].clone(),
            corrections: Words(if party + 1 == n {
                dealing.corrections.clone()
            } else {
                Vec::new()
            }),
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
    let plan = compile_plan(manifest)?;
    let n = manifest.parties.len();
    let one = plan.requests(manifest.batch as usize);
    let requests: Vec<_> = (0..manifest.inferences)
        .flat_map(|_| one.iter().cloned())
        .collect();
    let seeds = match seed {
        Some(s) => DealtSeeds::from_master(&Seed::random_from(s), n),
        None => DealtSeeds::random(n),
    };
    let masks = material::deal_masks(&seeds.model, &plan.mask_shapes())?;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let corrections = material::deal(&seeds.job, &requests, &masks, &RingGemm::new(threads))?;
    let bytes = material::dealer_bytes(n, corrections.len());
    tracing::info!(job = %manifest.job, parties = n, corrections = corrections.len(), "dealt");
    Ok(Dealing {
        seeds,
        corrections,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
