//! Runs a `spdz2k` committee in one process (the twin of `semi2k::local`): the dealer deals authenticated
//! material from the job seeds, the owners of inputs get their plaintext masks, the parties run on threads
//! over an in-memory mesh, and the output's recipient checks the output shares against the MAC key.

use std::time::Instant;

use crate::adversary::Adversary;
use crate::error::{ProtocolError, Result};
use crate::material::auth::{deal, AuthDeal, AuthPartyGenerator, AuthVec};
use crate::material::{PartyMaterial, Request};
use crate::mem_net::MemNet;
use crate::prg::Seed;
use crate::semi2k::local::{
    first_cause, join_all, outcome, Committee, LocalNet, LocalRun, PartyOutcome,
};

use super::Party;

/// The dealer's work for a job, with its cost.
pub struct Dealt {
    /// Corrections, owner masks and the output key.
    pub deal: AuthDeal,
    /// Bytes the dealer sends: seeds and corrections to the parties, masks to the owners.
    pub dealer_bytes: u64,
    /// Time the dealer took.
    pub elapsed: std::time::Duration,
}

/// Deals a job's authenticated material for `requests` from one seed per party.
pub fn deal_job(committee: &Committee, requests: &[Request], seeds: &[Seed]) -> Result<Dealt> {
    let started = Instant::now();
    let deal = deal(seeds, requests, committee.gemm.as_ref())?;
    let owner_words: usize = deal.owner_masks.iter().map(Vec::len).sum();
    let dealer_bytes =
        crate::material::dealer_bytes(committee.parties, deal.corrections.len() + owner_words);
    Ok(Dealt {
        deal,
        dealer_bytes,
        elapsed: started.elapsed(),
    })
}

/// Runs `program` on every party of `committee` with the material `dealt` for `requests`. The party that
/// `adversary` names (if any) deviates as it says. The dealer's corrections move into the last party rather
/// than being copied: a job's material can be gigabytes (a MiniLM embedding's), so take what the caller still
/// needs of `dealt` (owner masks, output key) before handing it over.
pub fn run<T, F>(
    committee: &Committee,
    requests: &[Request],
    seeds: &[Seed],
    dealt: Dealt,
    adversary: Option<Adversary>,
    program: F,
) -> Result<LocalRun<T>>
where
    T: Send,
    F: Fn(&mut Party<LocalNet>) -> Result<T> + Sync,
{
    let n = committee.parties;
    if n < 2 || seeds.len() != n {
        return Err(ProtocolError::Committee(format!(
            "{n} parties with {} seeds; at least 2 parties, one seed each",
            seeds.len()
        )));
    }
    let nets = MemNet::mesh(n, committee.timeout);
    let program = &program;
    let (dealer_bytes, dealer_elapsed) = (dealt.dealer_bytes, dealt.elapsed);
    let mut last_corrections = Some(dealt.deal.corrections);
    let results: Vec<Result<PartyOutcome<T>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nets
            .into_iter()
            .enumerate()
            .map(|(i, net)| {
                let (net, view) = committee.attach(net);
                let own = if i + 1 == n {
                    last_corrections.take().unwrap_or_default()
                } else {
                    Vec::new()
                };
                let requests = requests.to_vec();
                let seed = &seeds[i];
                scope.spawn(move || -> Result<PartyOutcome<T>> {
                    let generator = AuthPartyGenerator::new(i, n, seed, own)?;
                    let material = PartyMaterial::from_generator(generator, requests);
                    let mut party = Party::with_material(
                        net,
                        material,
                        committee.fixed_point,
                        committee.gemm.clone(),
                    )?;
                    if let Some(a) = adversary.filter(|a| a.party == i) {
                        party.set_adversary(a);
                    }
                    if committee.record_views {
                        party.record_transcript();
                    }
                    let value = program(&mut party)?;
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

/// [`open_output`] for every inference of a run: `per_party[p][i]` is party `p`'s share of inference `i`'s
/// output. Fails if the parties hold different numbers of outputs, or if any output fails its MAC check.
pub fn open_outputs(per_party: &[&[AuthVec]], alpha: u128) -> Result<Vec<Vec<u64>>> {
    let count = per_party.first().map_or(0, |outputs| outputs.len());
    if per_party.iter().any(|outputs| outputs.len() != count) {
        return Err(ProtocolError::Verification(
            "the parties hold different numbers of outputs".into(),
        ));
    }
    (0..count)
        .map(|i| {
            let shares: Vec<AuthVec> = per_party.iter().map(|outputs| outputs[i].clone()).collect();
            open_output(&shares, alpha)
        })
        .collect()
}

/// The output's recipient: adds up the parties' output shares and checks every element's MAC against the
/// key `alpha` it got from the dealer (`sum m_i = alpha * sum x_i mod 2^128`, compared in constant time).
/// Returns the values modulo 2^64, or a verification failure and nothing else.
pub fn open_output(shares: &[AuthVec], alpha: u128) -> Result<Vec<u64>> {
    let first = shares
        .first()
        .ok_or_else(|| ProtocolError::Committee("no output shares".into()))?;
    let len = first.len();
    if shares.iter().any(|s| s.v.len() != len || s.m.len() != len) {
        return Err(ProtocolError::Verification(
            "output shares of different lengths".into(),
        ));
    }
    let mut bad = 0u128;
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let v = shares.iter().fold(0u128, |a, s| a.wrapping_add(s.v[i]));
        let m = shares.iter().fold(0u128, |a, s| a.wrapping_add(s.m[i]));
        bad |= m ^ alpha.wrapping_mul(v);
        out.push(v as u64);
    }
    if bad != 0 {
        return Err(ProtocolError::Verification(
            "an output share does not match its MAC".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two parties' shares of `values` under `alpha`: the first party holds `(1, 2)` per element.
    fn shares(values: &[u128], alpha: u128) -> [AuthVec; 2] {
        let first = AuthVec {
            v: vec![1; values.len()],
            m: vec![2; values.len()],
        };
        let second = AuthVec {
            v: values.iter().map(|x| x.wrapping_sub(1)).collect(),
            m: values
                .iter()
                .map(|x| alpha.wrapping_mul(*x).wrapping_sub(2))
                .collect(),
        };
        [first, second]
    }

    #[test]
    fn every_inference_opens_like_one_output_and_uneven_parties_are_refused() {
        let alpha = 0x1234_5678_9abc_def0_1111_2222_3333_4445;
        let [a0, a1] = shares(&[5, 6, 7], alpha);
        let [b0, b1] = shares(&[8], alpha);
        let (p0, p1) = (vec![a0, b0], vec![a1, b1]);
        let opened = open_outputs(&[&p0, &p1], alpha).expect("MACs check");
        assert_eq!(opened, vec![vec![5, 6, 7], vec![8]]);
        assert!(open_outputs(&[&p0, &p1[..1]], alpha).is_err());
        let mut forged = p1.clone();
        forged[1].v[0] = forged[1].v[0].wrapping_add(1);
        assert!(open_outputs(&[&p0, &forged], alpha).is_err());
    }
}
