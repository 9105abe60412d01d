//! What a `rep3m` party saw at each check ([`Party::verify`]) that lets an outsider (the network's verifier
//! node) re-check, holding no share, key or value, that the check passed, and the outsider's check
//! ([`verify_rep3m_transcripts`]).
//!
//! # A party's view of one check ([`CheckView`])
//!
//! - The two opening digests it took part in, **blinded**: `SHA-256(label || salt || digest)` of the running
//!   digest of the components it received (`received`) and of the one of the components it vouched for
//!   (`vouched`). The salt of party `i`'s `received` and of party `i + 1`'s `vouched` is drawn from the key
//!   `k_{i+1}` those two share (derived once at job start, no stream consumed), so equal digests stay equal
//!   and a digest of a low-entropy component cannot be guessed by an outsider, who lacks every key.
//! - For each of the two provers it verifies (as `A` of its next party, as `B` of its previous party, see
//!   `proof.rs`), the final-check messages of that prover's proof as this party saw them: the
//!   `(u, z_A)` that `A` sends to `B` and the `(v, z_B)` that `B` sends to `A`, for the ring instance over
//!   `GR(2^64, 48)` (48 words each) and the AND-gate instance over `GF(2^64)` (1 word each), each present
//!   exactly when that instance had claims in the check. A check with nothing to prove has neither.
//!
//! # What the outsider checks ([`verify_rep3m_transcripts`])
//!
//! Views from all three parties, the same number of checks from each; per check `c`:
//! 1. party `i`'s blinded `received` equals party `i + 1`'s blinded `vouched` (the opening check);
//! 2. for every prover `P`, its final check as `A = P - 1` recorded it equals, word for word, the one
//!    `B = P + 1` recorded (both saw both messages: one sent, one received);
//! 3. `u v = z_A + z_B` in the instance's ring (`GR(2^64, 48)` or `GF(2^64)`): the check each honest
//!    verifier made before it let its party release anything.
//!
//! It returns `SHA-256` of the canonical encoding of all views (one common view per check once 1 and 2
//! hold), which a receipt signs.
//!
//! # Why the outsider learns nothing about inputs, weights or outputs
//!
//! Per prover and instance the four values are simulated from nothing: `u` carries `u_0 prod_l (1 - r_l)`
//! (position 0 stays in the left half at every fold) and `v` carries `v_0 r_L prod_{l < L} (1 - r_l)`
//! (position 1 is in the right half only at the last fold, challenge `r_L`) (`proof.rs`, step 4), `u_0`
//! drawn from `k_P` (the prover and `A`), `v_0` from `k_{P+1}` (the prover and `B`), independently, and
//! these factors are units (challenges and their differences with 1 lie in the exceptional set's
//! differences; in `GF(2^64)` every non-zero element is a unit), so `u` and `v` are
//! uniform and independent. `z_A = c_0 (1 - 2 r) + r z + (r^2 - r) c_2` at the last level, with `A`'s part
//! `c_0` a fresh draw from `k_P`'s stream after `u_0`, and `1 - 2 r` a unit (`1` in `GF(2^64)`, congruent to
//! `1` modulo 2 in the Galois ring), so `z_A` is uniform and independent of `u`, `v`. `z_B = u v - z_A` when
//! the check passes, so it adds nothing. The draws are fresh per prover, instance and check, so the whole
//! set of views is uniform given which instances ran and how many checks there were (the model's public
//! shape). The blinded digests are pseudorandom to anyone without the pair keys; that two of them are
//! equal is what the check reveals. So unlike a share, a weight or a value, nothing here depends on the
//! data. (The spdz2k views, `node/src/verifier.rs`, reveal per check the parties' commitments and their
//! MAC-check values, masked by the check's random combination: the same standard, "uniform or
//! determined".)
//!
//! # Why one malicious party cannot make a failed check verify
//!
//! Every view reaches the verifier signed by its party (the node's evidence, so nobody between substitutes
//! one); at most one party deviates, and the verifier needs all three views.
//! - An honest party records a view only after its own check passed, and aborts (sends no view: no
//!   receipt) when it fails. So for an accepted job both honest parties' checks passed, and what they
//!   report is what they checked.
//! - Step 1: behind each digest comparison are two different parties, so one is honest and reports the
//!   digest it really used; the other's reported digest must equal it (a malicious party's lie is refused,
//!   and producing the same digest for other openings needs a SHA-256 collision).
//! - Steps 2-3: for each prover, `A` and `B` are two different parties, so at least one is honest and
//!   reports the four values it used; step 2 forces the other view to be the same words, and step 3
//!   recomputes the honest verifier's equation, so the outsider accepts only final checks that an honest
//!   verifier accepted. If the malicious party is the prover, `A` and `B` are both honest and the
//!   outsider's acceptance is theirs, whose soundness error is the proof's (`proof.rs`, below `2^-41` per
//!   job).
//!
//! A malicious party can make the outsider refuse an honest job (by reporting a false view): that is an
//! abort, which the threat model allows; it cannot make a failed check pass.
//!
//! Invariant: a [`Party`] records a [`CheckView`] only after the check passed, so an honest party's views
//! always verify.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::galois::{Ext, Gf64, Gr};
use crate::net::Net;
use crate::prg::Seed;
use crate::rep3::{next_party, prev_party};

use super::Party;

/// Domain separation of a blinded opening digest.
const BLIND: &[u8] = b"veil rep3m blinded digest v1\0";
/// Label of the salt derived from a pair key.
pub(crate) const SALT_LABEL: u64 = 0x7265_7033_6d73;
/// Domain separation of the canonical encoding of a job's views.
pub const TRANSCRIPT_DOMAIN: &[u8] = b"veil rep3m transcripts v1\0";
/// Most checks one job may report (above a node job's most inferences). A view is about 3.2 kB per check
/// with both instances (`4 x 48` ring words and `4` field words per prover, two provers), so a job's
/// views grow linearly with its inferences; the verifier bounds the blob it reads.
pub const MAX_CHECKS: usize = 1 << 20;

/// One instance's final-check messages for one prover: `A`'s `(u, z_A)` and `B`'s `(v, z_B)`, each element
/// as its wire words (48 for `GR(2^64, 48)`, 1 for `GF(2^64)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCheck {
    /// `A`'s folded vector entry.
    pub u: Vec<u64>,
    /// `A`'s part of the claim.
    pub z_a: Vec<u64>,
    /// `B`'s folded vector entry.
    pub v: Vec<u64>,
    /// `B`'s part of the claim.
    pub z_b: Vec<u64>,
}

/// A prover's final checks in one check: the ring instance and the AND-gate instance, each present exactly
/// when it had claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProverCheck {
    /// Over `GR(2^64, 48)`.
    pub ring: Option<FinalCheck>,
    /// Over `GF(2^64)`.
    pub bits: Option<FinalCheck>,
}

/// One party's view of one check (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckView {
    /// Blinded running digest of the components this party received in openings.
    pub received: [u8; 32],
    /// Blinded running digest of the components it vouched for.
    pub vouched: [u8; 32],
    /// The final check of its next party's proof (this party is `A`).
    pub as_a: ProverCheck,
    /// The final check of its previous party's proof (this party is `B`).
    pub as_b: ProverCheck,
}

/// Why an outsider refused a job's `rep3m` views.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TranscriptError {
    /// Not exactly three parties' views.
    #[error("{views} views where the 3 parties' were expected")]
    Committee {
        /// Views given.
        views: usize,
    },
    /// A party reports another number of checks than party 0 (or none, or too many).
    #[error("party {party} reports {got} checks where {expected} were expected")]
    CheckCount {
        /// The party.
        party: usize,
        /// Its checks.
        got: usize,
        /// Party 0's (at least 1, at most [`MAX_CHECKS`]).
        expected: usize,
    },
    /// Party `party`'s received digest differs from its next party's vouched one: an opening was wrong.
    #[error(
        "check {check}: party {party} received opened values its next party does not vouch for"
    )]
    Openings {
        /// The check.
        check: usize,
        /// The receiving party.
        party: usize,
    },
    /// The prover's two verifiers report different final checks (or one reports an instance the other
    /// does not): somebody equivocated or reported a false view.
    #[error(
        "check {check}: the verifiers of party {prover}'s proof report different final checks"
    )]
    Mismatch {
        /// The check.
        check: usize,
        /// The prover.
        prover: usize,
    },
    /// An element with the wrong number of words.
    #[error("check {check}: party {prover}'s final check has malformed elements")]
    Malformed {
        /// The check.
        check: usize,
        /// The prover.
        prover: usize,
    },
    /// `u v != z_A + z_B`: the prover's proof fails (a reshare it sent was not its summand).
    #[error("check {check}: party {prover}'s product proof fails")]
    ProofFails {
        /// The check.
        check: usize,
        /// The prover.
        prover: usize,
    },
}

/// `SHA-256(BLIND || salt || digest)`.
pub(crate) fn blind(salt: &Seed, digest: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BLIND);
    h.update(salt.0);
    h.update(digest);
    h.finalize().into()
}

/// The final checks of one check as this party saw them, from the proof's four final messages
/// (`to_b`: this party's `(u, z_A)` as `A`; `to_a`: its `(v, z_B)` as `B`; `from_b`: the `(v, z_B)` its
/// prover's `B` sent; `from_a`: the `(u, z_A)` its previous prover's `A` sent), ring words first (if
/// `ring`), then the AND gates' (if `bits`). Returns `(as_a, as_b)`; lengths the proof already checked.
pub(crate) fn final_checks(
    (ring, bits): (bool, bool),
    (to_b, to_a): (&[u64], &[u64]),
    (from_b, from_a): (&[u64], &[u64]),
) -> (ProverCheck, ProverCheck) {
    let split = if ring { 2 * Gr::WORDS } else { 0 };
    let one = |uz: &[u64], vz: &[u64], w: usize| {
        let (u, z_a) = uz.split_at(w.min(uz.len()));
        let (v, z_b) = vz.split_at(w.min(vz.len()));
        FinalCheck {
            u: u.to_vec(),
            z_a: z_a.to_vec(),
            v: v.to_vec(),
            z_b: z_b.to_vec(),
        }
    };
    let check = |uz: &[u64], vz: &[u64]| {
        let (ur, ub) = uz.split_at(split.min(uz.len()));
        let (vr, vb) = vz.split_at(split.min(vz.len()));
        ProverCheck {
            ring: ring.then(|| one(ur, vr, Gr::WORDS)),
            bits: bits.then(|| one(ub, vb, Gf64::WORDS)),
        }
    };
    (check(to_b, from_b), check(from_a, to_a))
}

impl<N: Net> Party<N> {
    /// The views of every check since the last call, in order (see the module doc); a check that failed
    /// is not among them.
    pub fn take_transcripts(&mut self) -> Vec<CheckView> {
        std::mem::take(&mut self.transcripts)
    }
}

/// Whether `u v = z_A + z_B` in `E`; `None` if an element has the wrong number of words.
fn holds<E: Ext>(c: &FinalCheck) -> Option<bool> {
    let take = |w: &[u64]| (w.len() == E::WORDS).then(|| E::take(w)).flatten();
    let (u, za, v, zb) = (take(&c.u)?, take(&c.z_a)?, take(&c.v)?, take(&c.z_b)?);
    Some(u.times(&v) == za.plus(&zb))
}

fn put_check(out: &mut Vec<u8>, c: &Option<FinalCheck>) {
    match c {
        None => out.push(0),
        Some(c) => {
            out.push(1);
            for w in [&c.u, &c.z_a, &c.v, &c.z_b] {
                out.extend_from_slice(&(w.len() as u32).to_le_bytes());
                out.extend_from_slice(&crate::ring::to_bytes(w));
            }
        }
    }
}

/// Checks the three parties' views of a `rep3m` job, `views[i][c]` being party `i`'s view of check `c`
/// (see the module doc), and returns the SHA-256 of their canonical encoding: [`TRANSCRIPT_DOMAIN`], the
/// number of checks (u32 LE), then per check party 0's, 1's and 2's blinded `received` digests and, per
/// prover `0, 1, 2`, its ring and AND-gate final checks (a presence byte, then `u`, `z_A`, `v`, `z_B`, each
/// as a u32 LE word count and its words LE).
pub fn verify_rep3m_transcripts(views: &[Vec<CheckView>]) -> Result<[u8; 32], TranscriptError> {
    if views.len() != 3 {
        return Err(TranscriptError::Committee { views: views.len() });
    }
    let checks = views[0].len();
    for (party, v) in views.iter().enumerate() {
        if v.len() != checks || checks == 0 || checks > MAX_CHECKS {
            return Err(TranscriptError::CheckCount {
                party,
                got: v.len(),
                expected: checks.clamp(1, MAX_CHECKS),
            });
        }
    }
    let mut canonical = Vec::new();
    canonical.extend_from_slice(TRANSCRIPT_DOMAIN);
    canonical.extend_from_slice(&(checks as u32).to_le_bytes());
    let per_check = views[0].iter().zip(&views[1]).zip(&views[2]);
    for (check, ((v0, v1), v2)) in per_check.enumerate() {
        let at = [v0, v1, v2];
        for party in 0..3 {
            // Digests are public once blinded: a plain comparison leaks nothing.
            if at[party].received != at[next_party(party)].vouched {
                return Err(TranscriptError::Openings { check, party });
            }
            canonical.extend_from_slice(&at[party].received);
        }
        for prover in 0..3 {
            let at_a = &at[prev_party(prover)].as_a;
            let at_b = &at[next_party(prover)].as_b;
            if at_a != at_b {
                return Err(TranscriptError::Mismatch { check, prover });
            }
            let ring = at_a.ring.as_ref().map(holds::<Gr>);
            let bits = at_a.bits.as_ref().map(holds::<Gf64>);
            for verdict in [ring, bits].into_iter().flatten() {
                match verdict {
                    None => return Err(TranscriptError::Malformed { check, prover }),
                    Some(false) => return Err(TranscriptError::ProofFails { check, prover }),
                    Some(true) => {}
                }
            }
            put_check(&mut canonical, &at_a.ring);
            put_check(&mut canonical, &at_a.bits);
        }
    }
    Ok(Sha256::digest(&canonical).into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gemm::NaiveGemm;
    use crate::ops::MpcOps;
    use crate::rep3::RepShare;
    use crate::semi2k::local::Committee;

    /// An honest job with an opening, a ring product and a ReLU (AND gates), two checks; every party's
    /// views.
    fn honest_views() -> Vec<Vec<CheckView>> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x: Vec<u64> = (0..9).map(|_| rng.random::<u64>() >> 20).collect();
        let y: Vec<u64> = (0..9).map(|_| rng.random::<u64>() >> 20).collect();
        let xs = RepShare::split(&x, || rng.random());
        let ys = RepShare::split(&y, || rng.random());
        let committee = Committee::new(3, Arc::new(NaiveGemm));
        let out = super::super::local::run(&committee, Some(3), None, |p| {
            let me = p.id();
            let z = MpcOps::mul(p, &xs[me], &ys[me])?;
            p.open(&z)?;
            p.release(&z)?;
            let r = MpcOps::relu(p, &z)?;
            p.release(&r)?;
            Ok(p.take_transcripts())
        })
        .unwrap();
        out.into_iter().map(|o| o.value).collect()
    }

    #[test]
    fn honest_views_verify_and_carry_both_instances() {
        let views = honest_views();
        assert_eq!(views[0].len(), 2);
        // The first check proves one ring product, the second the ReLU's AND gates (and its products).
        assert!(views[0][0].as_a.ring.is_some() && views[0][0].as_a.bits.is_none());
        assert!(views[0][1].as_a.bits.is_some());
        assert!(verify_rep3m_transcripts(&views).is_ok());
    }

    #[test]
    fn tampered_missing_and_mismatched_views_are_refused() {
        let views = honest_views();
        // A tampered value, consistently at both verifiers of prover 0 (A = 2, B = 1): the proof fails.
        let mut bad = views.clone();
        bad[2][1].as_a.bits.as_mut().unwrap().z_a[0] ^= 1;
        bad[1][1].as_b.bits.as_mut().unwrap().z_a[0] ^= 1;
        assert_eq!(
            verify_rep3m_transcripts(&bad),
            Err(TranscriptError::ProofFails {
                check: 1,
                prover: 0
            })
        );
        let mut bad = views.clone();
        let w = bad[0][0].as_a.ring.as_ref().unwrap().v[47].wrapping_add(1);
        bad[0][0].as_a.ring.as_mut().unwrap().v[47] = w;
        bad[2][0].as_b.ring.as_mut().unwrap().v[47] = w;
        assert_eq!(
            verify_rep3m_transcripts(&bad),
            Err(TranscriptError::ProofFails {
                check: 0,
                prover: 1
            })
        );
        // Only one verifier's copy changed: the views disagree.
        let mut bad = views.clone();
        bad[1][0].as_b.ring.as_mut().unwrap().z_b[0] ^= 4;
        assert_eq!(
            verify_rep3m_transcripts(&bad),
            Err(TranscriptError::Mismatch {
                check: 0,
                prover: 0
            })
        );
        // One verifier drops an instance.
        let mut bad = views.clone();
        bad[0][1].as_b.bits = None;
        assert_eq!(
            verify_rep3m_transcripts(&bad),
            Err(TranscriptError::Mismatch {
                check: 1,
                prover: 2
            })
        );
        // A short element.
        let mut bad = views.clone();
        bad[2][0].as_a.ring.as_mut().unwrap().u.pop();
        bad[1][0].as_b.ring.as_mut().unwrap().u.pop();
        assert_eq!(
            verify_rep3m_transcripts(&bad),
            Err(TranscriptError::Malformed {
                check: 0,
                prover: 0
            })
        );
        // An opening digest changed.
        let mut bad = views.clone();
        bad[1][1].vouched[0] ^= 1;
        assert_eq!(
            verify_rep3m_transcripts(&bad),
            Err(TranscriptError::Openings { check: 1, party: 0 })
        );
        // A missing view, a missing check.
        assert_eq!(
            verify_rep3m_transcripts(&views[..2]),
            Err(TranscriptError::Committee { views: 2 })
        );
        let mut short = views.clone();
        short[2].pop();
        assert_eq!(
            verify_rep3m_transcripts(&short),
            Err(TranscriptError::CheckCount {
                party: 2,
                got: 1,
                expected: 2
            })
        );
        let none: Vec<Vec<CheckView>> = vec![Vec::new(); 3];
        assert!(matches!(
            verify_rep3m_transcripts(&none),
            Err(TranscriptError::CheckCount { party: 0, .. })
        ));
    }
}
