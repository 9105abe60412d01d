//! Hand-over between the stages of a model split across committees (MetaInf partitioning).
//!
//! A stage's party `i` does not return its output share `s_i` to the client: it re-randomises it into `m`
//! fresh additive shares `s_i = r_i1 + ... + r_im` (the first `m - 1` uniformly random) and seals `r_ij` to
//! the next stage's party `j` ([`Handoff`]), bound to the next stage's run id, `j`, and a model id that
//! names the sender. Party `j` of the next stage opens one hand-off from each of the `n` senders and sums
//! them: `sum_i r_ij` over `j` is `sum_i s_i`, the same value, under a sharing that no sender knows (each
//! knows only its own `r_ij`), so each committee holds only its own stage's shares. The hand-offs travel
//! inside the client's sealed blobs (the client relays what it cannot open): stage outputs to the client
//! as a [`StageOutput`], stage inputs from the client as a [`StageInput`].
//!
//! Invariants: a party opens exactly one hand-off per sender, each bound to its own run and index and to the
//! sender's index, and all of the same length; anything else is refused before computing.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::envelope::{Binding, OpeningKey, Purpose};
use crate::error::{NodeError, Result};
use crate::inbox::{open_blob, seal_blob};
use crate::manifest::{Handoff, Manifest};
use crate::wire::{Bytes, PartyReport, RunRequest, Words};

/// What a stage's party returns to the client when its manifest names a next stage: its report (with no
/// outputs) and one sealed hand-off per party of the next stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageOutput {
    /// Measurements (outputs empty).
    pub report: PartyReport,
    /// Sealed hand-offs, in the next stage's party order.
    pub handoffs: Vec<Bytes>,
}

/// What the client sends a party of a stage that follows another: its run (weights; inputs empty) and the
/// hand-off from each party of the previous stage, in sender order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageInput {
    /// The run request; its `inputs` are filled from the hand-offs.
    pub run: RunRequest,
    /// Sealed hand-offs, one per previous-stage party.
    pub handoffs: Vec<Bytes>,
}

/// The binding of the hand-off from sender `from` to party `to` of the run `run` of model `model`.
fn binding(run: &str, model: &str, to: usize, from: usize) -> Binding {
    Binding {
        purpose: Purpose::Handoff,
        job: run.to_string(),
        party: to as u32,
        model: format!("{model}#from-{from}"),
    }
}

/// Re-randomises this party's (`from`) output shares (one vector per inference) for the next stage and
/// seals each part to its recipient.
pub fn hand_off(handoff: &Handoff, from: usize, outputs: &[Words]) -> Result<Vec<Bytes>> {
    let m = handoff.keys.len();
    let mut parts: Vec<Vec<Words>> = vec![Vec::with_capacity(outputs.len()); m];
    let mut rng = rand::rng();
    for share in outputs {
        let mut last = share.0.clone();
        for part in parts.iter_mut().take(m - 1) {
            let r: Vec<u64> = (0..share.0.len()).map(|_| rng.next_u64()).collect();
            for (l, x) in last.iter_mut().zip(&r) {
                *l = l.wrapping_sub(*x);
            }
            part.push(Words(r));
        }
        parts[m - 1].push(Words(last));
    }
    let run = handoff.run.to_string();
    parts
        .into_iter()
        .zip(&handoff.keys)
        .enumerate()
        .map(|(to, (part, key))| {
            let plain = zeroize::Zeroizing::new(
                postcard::to_stdvec(&part).map_err(|e| NodeError::Job(e.to_string()))?,
            );
            let sealed = seal_blob(key, &binding(&run, &handoff.model, to, from), &plain)
                .map_err(|e| NodeError::Job(format!("sealing a hand-off: {e}")))?;
            Ok(Bytes(sealed))
        })
        .collect()
}

/// Party `me` of a stage that follows another: opens the hand-off of each of the manifest's `senders` and
/// sums them into the run's inputs (one vector per inference; every sender's of the same shape, which the
/// party checks against its plan like any input).
pub fn take_over(
    key: &OpeningKey,
    manifest: &Manifest,
    me: usize,
    input: StageInput,
) -> Result<RunRequest> {
    let senders = manifest
        .model
        .deployed
        .as_ref()
        .map_or(0, |d| d.senders as usize);
    if senders == 0 || input.handoffs.len() != senders {
        return Err(NodeError::Job(format!(
            "{} hand-offs for a stage with {senders} senders",
            input.handoffs.len()
        )));
    }
    let inferences = manifest.inferences as usize;
    let run_id = manifest.job.to_string();
    let model = manifest.model.binding_id();
    let mut sums: Vec<Vec<u64>> = Vec::new();
    for (from, sealed) in input.handoffs.iter().enumerate() {
        let plain = open_blob(key, &binding(&run_id, &model, me, from), &sealed.0)
            .map_err(|e| NodeError::Job(format!("the hand-off from party {from}: {e}")))?;
        let parts: Vec<Words> = postcard::from_bytes(&plain)
            .map_err(|e| NodeError::Job(format!("the hand-off from party {from}: {e}")))?;
        if from == 0 {
            sums = parts.iter().map(|p| vec![0u64; p.0.len()]).collect();
        }
        if parts.len() != inferences
            || parts
                .iter()
                .zip(&sums)
                .any(|(p, sum)| p.0.len() != sum.len())
        {
            return Err(NodeError::Job(format!(
                "the hand-off from party {from} has the wrong shape"
            )));
        }
        for (sum, part) in sums.iter_mut().zip(&parts) {
            for (s, x) in sum.iter_mut().zip(&part.0) {
                *s = s.wrapping_add(*x);
            }
        }
    }
    let mut run = input.run;
    run.inputs = sums.into_iter().map(Words).collect();
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::OpeningKey;
    use crate::manifest::{DeployedModel, Member, ModelSpec};
    use crate::wire::JobId;

    fn manifest(run: JobId, senders: u32) -> Manifest {
        let id = crate::identity::Identity::generate().unwrap();
        let member = |port| Member {
            address: ([127, 0, 0, 1], port).into(),
            public_key: crate::identity::Identity::generate().unwrap().public_key(),
        };
        Manifest {
            job: run,
            protocol: crate::manifest::Protocol::Semi2k,
            model: ModelSpec {
                workload: "deployed".into(),
                seed: 0,
                weights: veil_engine::WeightMode::Shared,
                frac_bits: 16,
                deployed: Some(DeployedModel {
                    id: "ab".repeat(32),
                    architecture: "{}".into(),
                    handoff: None,
                    senders,
                    file_bytes: 0,
                }),
            },
            batch: 1,
            inferences: 2,
            parties: vec![member(1), member(2), member(3)],
            dealer: Some(member(4)),
            client: id.public_key(),
            output_key: None,
            verifier: None,
        }
    }

    #[test]
    fn hand_offs_reshare_the_same_values_and_open_only_where_they_belong() {
        let run = JobId::random();
        let next = manifest(run, 2);
        let keys: Vec<OpeningKey> = (0..3).map(|_| OpeningKey::generate()).collect();
        let handoff = Handoff {
            run,
            model: next.model.binding_id(),
            keys: keys.iter().map(OpeningKey::public).collect(),
        };
        // Two senders hold shares of two inferences of 4 values.
        let values = [vec![1u64, 2, 3, u64::MAX], vec![7, 0, 9, 1 << 40]];
        let a: Vec<Words> = vec![Words(vec![5, 6, 7, 8]), Words(vec![1, 1, 1, 1])];
        let b: Vec<Words> = values
            .iter()
            .zip(&a)
            .map(|(v, s)| {
                Words(
                    v.iter()
                        .zip(&s.0)
                        .map(|(x, y)| x.wrapping_sub(*y))
                        .collect(),
                )
            })
            .collect();
        let from_a = hand_off(&handoff, 0, &a).unwrap();
        let from_b = hand_off(&handoff, 1, &b).unwrap();
        let empty = RunRequest {
            job: run,
            weights: Vec::new(),
            inputs: Vec::new(),
            threads: 1,
            profile: false,
            shaping: None,
            offline_first: false,
        };
        let mut total = vec![vec![0u64; 4]; 2];
        for j in 0..3 {
            let input = StageInput {
                run: empty.clone(),
                handoffs: vec![from_a[j].clone(), from_b[j].clone()],
            };
            let got = take_over(&keys[j], &next, j, input).unwrap();
            for (t, x) in total.iter_mut().zip(&got.inputs) {
                for (u, y) in t.iter_mut().zip(&x.0) {
                    *u = u.wrapping_add(*y);
                }
            }
            // A recipient's new share is not a sender's old one.
            assert_ne!(got.inputs[0].0, a[0].0);
        }
        assert_eq!(total, values.to_vec());
        // Another recipient's hand-off, senders swapped, or a missing sender: refused.
        let swap = StageInput {
            run: empty.clone(),
            handoffs: vec![from_a[1].clone(), from_b[1].clone()],
        };
        assert!(take_over(&keys[0], &next, 0, swap).is_err());
        let swapped = StageInput {
            run: empty.clone(),
            handoffs: vec![from_b[0].clone(), from_a[0].clone()],
        };
        assert!(take_over(&keys[0], &next, 0, swapped).is_err());
        let short = StageInput {
            run: empty.clone(),
            handoffs: vec![from_a[0].clone()],
        };
        assert!(take_over(&keys[0], &next, 0, short).is_err());
        // Another run.
        let other = manifest(JobId::random(), 2);
        let input = StageInput {
            run: empty,
            handoffs: vec![from_a[0].clone(), from_b[0].clone()],
        };
        assert!(take_over(&keys[0], &other, 0, input).is_err());
    }
}
