//! Runs a `rep3m` committee in one process: three parties on threads over the in-memory mesh, each with its
//! fresh PRF key (or keys derived from a seed), one of them deviating if the protocol lab says so.

use crate::adversary::Adversary;
use crate::error::{ProtocolError, Result};
use crate::mem_net::MemNet;
use crate::prg::Seed;
use crate::semi2k::local::{first_cause, join_all, Committee, LocalNet, PartyOutcome};

use super::Party;

/// Runs `program` on each of the three parties of `committee` (which must have 3 parties); the party that
/// `adversary` names (if any) deviates as it says. Keys are fresh from the operating system, or derived
/// from `seed` for reproducible runs.
pub fn run<T, F>(
    committee: &Committee,
    seed: Option<u64>,
    adversary: Option<Adversary>,
    program: F,
) -> Result<Vec<PartyOutcome<T>>>
where
    T: Send,
    F: Fn(&mut Party<LocalNet>) -> Result<T> + Sync,
{
    let master = seed.map(Seed::random_from);
    let keys: [Seed; 3] = std::array::from_fn(|i| match &master {
        Some(m) => m.derive(3, i as u64),
        None => Seed::random(),
    });
    run_with_keys(committee, keys, adversary, program)
}

/// [`run`] with each party's key given (tests that hold one party's randomness fixed).
pub fn run_with_keys<T, F>(
    committee: &Committee,
    keys: [Seed; 3],
    adversary: Option<Adversary>,
    program: F,
) -> Result<Vec<PartyOutcome<T>>>
where
    T: Send,
    F: Fn(&mut Party<LocalNet>) -> Result<T> + Sync,
{
    if committee.parties != 3 {
        return Err(ProtocolError::Committee(format!(
            "{} runs exactly 3 parties, got {}",
            super::NAME,
            committee.parties
        )));
    }
    let nets = MemNet::mesh(3, committee.timeout);
    let program = &program;
    let results: Vec<Result<PartyOutcome<T>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nets
            .into_iter()
            .zip(keys)
            .enumerate()
            .map(|(i, (net, key))| {
                let (net, view) = committee.attach(net);
                scope.spawn(move || -> Result<PartyOutcome<T>> {
                    let mut party =
                        Party::new(net, key, committee.fixed_point, committee.gemm.clone())?;
                    if let Some(a) = adversary.filter(|a| a.party == i) {
                        party.set_adversary(a);
                    }
                    let value = program(&mut party)?;
                    let (_net, stats) = party.finish();
                    Ok(PartyOutcome {
                        value,
                        stats,
                        view: view.map(|v| v.messages()).unwrap_or_default(),
                        transcript: Vec::new(),
                    })
                })
            })
            .collect();
        join_all(handles)
    });
    first_cause(results)
}
