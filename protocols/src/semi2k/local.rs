//! Runs a whole committee in one process: n parties on threads over an in-memory mesh, fed by a dealer.
//! Tests and the in-memory benchmark use it; the QUIC transport replaces only the mesh.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::Domain;
use crate::error::{ProtocolError, Result};
use crate::gemm::Gemm;
use crate::material::{self, PartyMaterial, Request};
use crate::mem_net::{MemNet, ViewLog};
use crate::net::{Net, NetStats};
use crate::prg::Seed;
use crate::ring::FixedPoint;

use super::Party;

/// A committee's public parameters.
#[derive(Clone)]
pub struct Committee {
    /// Number of parties (at least 2).
    pub parties: usize,
    /// Fixed-point encoding.
    pub fixed_point: FixedPoint,
    /// How long a party waits for a message.
    pub timeout: Duration,
    /// Local matrix kernel.
    pub gemm: Arc<dyn Gemm>,
    /// Record every message each party receives (privacy tests).
    pub record_views: bool,
    /// What stands between each party and the in-memory mesh (the lab's link shaping); `None`: the bare
    /// mesh.
    pub link: Option<Link>,
}

/// Wraps a party's endpoint of the in-memory mesh (e.g. in simulated links); see [`Committee::link`].
pub type Link = Arc<dyn Fn(MemNet) -> LocalNet + Send + Sync>;

/// The transport of a local committee: the in-memory mesh, behind the committee's link if it has one.
pub type LocalNet = Box<dyn Net>;

impl Committee {
    /// `parties` parties with default fixed point, timeout and the given kernel.
    pub fn new(parties: usize, gemm: Arc<dyn Gemm>) -> Self {
        Self {
            parties,
            fixed_point: FixedPoint::default(),
            timeout: crate::mem_net::DEFAULT_TIMEOUT,
            gemm,
            record_views: false,
            link: None,
        }
    }

    /// Party `net`'s transport: the view recorded if the committee records views, then the link applied.
    pub(crate) fn attach(&self, mut net: MemNet) -> (LocalNet, Option<ViewLog>) {
        let view = self.record_views.then(|| net.record_view());
        let net = match &self.link {
            Some(link) => link(net),
            None => Box::new(net),
        };
        (net, view)
    }
}

/// The seeds the dealer hands out: per party, one for the model's weight masks and one for the job.
#[derive(Clone, Debug)]
pub struct DealtSeeds {
    /// Model seeds, one per party.
    pub model: Vec<Seed>,
    /// Job seeds, one per party.
    pub job: Vec<Seed>,
}

impl DealtSeeds {
    /// Fresh random seeds for `parties` parties.
    pub fn random(parties: usize) -> Self {
        Self {
            model: (0..parties).map(|_| Seed::random()).collect(),
            job: (0..parties).map(|_| Seed::random()).collect(),
        }
    }

    /// Seeds derived from one master seed (reproducible runs).
    pub fn from_master(master: &Seed, parties: usize) -> Self {
        Self {
            model: (0..parties as u64).map(|i| master.derive(1, i)).collect(),
            job: (0..parties as u64).map(|i| master.derive(2, i)).collect(),
        }
    }
}

/// What one party returned, with its traffic.
pub struct PartyOutcome<T> {
    /// The party's result.
    pub value: T,
    /// Its traffic.
    pub stats: NetStats,
    /// Messages it received (empty unless views are recorded).
    pub view: Vec<(usize, Vec<u8>)>,
    /// Values it opened, one entry per round (empty unless views are recorded).
    pub transcript: Vec<Vec<u8>>,
}

/// The outcome of a local run.
pub struct LocalRun<T> {
    /// Per party, in index order.
    pub parties: Vec<PartyOutcome<T>>,
    /// Bytes the dealer sent (seeds and corrections).
    pub dealer_bytes: u64,
    /// Time the dealer took to deal (the offline phase).
    pub dealer_elapsed: Duration,
}

/// Runs `program` on every party of `committee`, with dealer material for `requests` and weight masks of
/// `mask_shapes` elements. `program` gets the party and its mask shares.
pub fn run<T, F>(
    committee: &Committee,
    requests: &[Request],
    mask_shapes: &[usize],
    seeds: &DealtSeeds,
    program: F,
) -> Result<LocalRun<T>>
where
    T: Send,
    F: Fn(&mut Party<LocalNet>, Vec<Vec<u64>>) -> Result<T> + Sync,
{
    let n = committee.parties;
    if n < 2 {
        return Err(ProtocolError::Committee(format!(
            "a committee needs at least 2 parties, got {n}"
        )));
    }
    if seeds.model.len() != n || seeds.job.len() != n {
        return Err(ProtocolError::Committee(format!(
            "{} parties but seeds for {}",
            n,
            seeds.job.len()
        )));
    }
    let dealing = std::time::Instant::now();
    let dealer_masks = material::deal_masks(&seeds.model, mask_shapes)?;
    let corrections = material::deal(&seeds.job, requests, &dealer_masks, committee.gemm.as_ref())?;
    let dealer_bytes = material::dealer_bytes(n, corrections.len());
    let dealer_elapsed = dealing.elapsed();
    let mut corrections = Some(corrections);
    let nets = MemNet::mesh(n, committee.timeout);
    let program = &program;
    let results: Vec<Result<PartyOutcome<T>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nets
            .into_iter()
            .enumerate()
            .map(|(i, net)| {
                let (net, view) = committee.attach(net);
                let own = if i + 1 == n {
                    corrections.take().unwrap_or_default()
                } else {
                    Vec::new()
                };
                let job_seed = seeds.job[i].clone();
                let model_seed = seeds.model[i].clone();
                let requests = requests.to_vec();
                scope.spawn(move || -> Result<PartyOutcome<T>> {
                    let masks = material::party_masks(i, n, &model_seed, mask_shapes)?;
                    let material = PartyMaterial::new(i, n, &job_seed, own, requests)?;
                    let mut party =
                        Party::new(net, material, committee.fixed_point, committee.gemm.clone())?;
                    if committee.record_views {
                        party.record_transcript();
                    }
                    let value = program(&mut party, masks)?;
                    outcome(party, value, view)
                })
            })
            .collect();
        join_all(handles)
    });
    let parties = first_cause(results)?;
    Ok(LocalRun {
        parties,
        dealer_bytes,
        dealer_elapsed,
    })
}

/// A party's outcome once its program returned `value`: the opened transcript, its traffic and the messages it
/// received (`view`, if recorded).
pub(crate) fn outcome<T, D: Domain>(
    party: Party<LocalNet, D>,
    value: T,
    view: Option<ViewLog>,
) -> Result<PartyOutcome<T>> {
    let transcript = party.transcript().to_vec();
    let (_net, stats) = party.finish()?;
    Ok(PartyOutcome {
        value,
        stats,
        view: view.map(|v| v.messages()).unwrap_or_default(),
        transcript,
    })
}

/// Joins the party threads; a thread that panicked is a committee error, not a panic here.
pub(crate) fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<PartyOutcome<T>>>>,
) -> Vec<Result<PartyOutcome<T>>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(ProtocolError::Committee("a party thread panicked".into())))
        })
        .collect()
}

/// All parties' results, or the error that caused the failure: a party that failed on its own is reported
/// before the parties that only saw it disconnect.
pub(crate) fn first_cause<T>(results: Vec<Result<T>>) -> Result<Vec<T>> {
    // A deliberate deviation (the protocol lab) is not what the honest parties observed: report theirs.
    let is_echo = |e: &ProtocolError| {
        matches!(
            e,
            ProtocolError::Net(crate::net::NetError::Disconnected { .. })
                | ProtocolError::Deviated(_)
                | ProtocolError::Abandoned(_)
        )
    };
    let mut echo = None;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(v) => out.push(v),
            Err(e) if is_echo(&e) => echo = echo.or(Some(e)),
            Err(e) => return Err(e),
        }
    }
    match echo {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
