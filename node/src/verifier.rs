//! The verifier role's check of a verified job (`spdz2k`, `rep3m`; [`JobViews`] dispatches on the
//! manifest's protocol, the `rep3m` check being `veil_protocols::rep3m::transcript`'s, whose module doc
//! argues what it reveals and why a malicious party cannot make a failed check pass). For `spdz2k`: it
//! receives every party's view of each MAC check (the
//! [`CheckTranscript`]s in the parties' reports), re-checks them without any share or value, and yields the
//! digest a receipt signs ([`crate::receipt`]).
//!
//! What [`verify_transcripts`] checks for one MAC check (the batched check of Cramer, Damgard, Escudero,
//! Scholl, Xing, "SPDZ2k", CRYPTO 2018, as `veil_protocols::spdz2k::check` runs it):
//! 1. every party's view is byte for byte the same (one view per party, in party order);
//! 2. every party's seed opens its seed commitment, and its opened check values `(z_i, t_i, h_i, nonce)` open
//!    its check commitment (SHA-256 with the protocol's labels and the party's index);
//! 3. all `h_i` are equal: every party saw the same opened values;
//! 4. `sum z_i = 0 mod 2^128` and `xor t_i = 0` in GF(2^64): the MAC check passed.
//!
//! It returns the SHA-256 of the canonical encoding of the (common) view; [`verify_job`] does this for every
//! check of a job and hashes the digests in order.
//!
//! Why a malicious party cannot make the verifier accept a check that failed (up to n-1 malicious parties,
//! at least one honest, as in the threat model; each view reaches the verifier authenticated as its party's):
//! - Commitments come before openings. In the protocol every party sent its commitment to `(z_i, t_i, h_i)`
//!   before it received anyone's opening, and the honest party recorded both as it received them. A
//!   malicious party's `z_i` was therefore fixed before it saw the others' values; it cannot choose it later
//!   to cancel an error (SHA-256 is binding), and the verifier re-checks that each opening matches the
//!   commitment the honest party received.
//! - The honest party reports what it really received, so the honest view is among the views. Any other
//!   view that differs from it in a single byte (a malicious party that sent different commitments or
//!   openings to different parties, or that reports a made-up view) fails step 1. A view that equals the
//!   honest one carries the honest party's true commitments and openings.
//! - Steps 2-4 on the honest view are exactly the checks the honest party made before it released its
//!   output. If the check failed, the honest view has `sum z_i != 0`, `xor t_i != 0`, unequal `h_i` or an
//!   opening that does not match its commitment, and the verifier rejects it; a party that deviated in the
//!   computation passes the check itself only with the protocol's soundness error (about 2^-60 at
//!   k = s = 64).
//!
//! A malicious party can make the verifier reject an honest job (by reporting a different view): that is an
//! abort, which the threat model allows; it cannot make a failed check pass. The transcripts hold no share,
//! MAC share or opened value (see `veil_protocols::spdz2k::transcript`), so the verifier learns nothing
//! about the inputs, weights or outputs. Comparisons of received bytes run in constant time.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;
use veil_protocols::protocol::Protocol;
use veil_protocols::rep3m::transcript::{verify_rep3m_transcripts, CheckView, TranscriptError};
use veil_protocols::spdz2k::transcript::CheckTranscript;

use crate::manifest::MAX_PARTIES;

/// Domain separation of one check's canonical transcript.
pub const TRANSCRIPT_DOMAIN: &[u8] = b"veil check transcript v1\0";
/// Domain separation of a job's digest over its checks' digests.
pub const JOB_DOMAIN: &[u8] = b"veil job transcripts v1\0";
/// Most MAC checks one job may report (one per inference).
pub const MAX_CHECKS: usize = crate::manifest::MAX_INFERENCES as usize;

/// SHA-256 of a canonical transcript (one check) or of a job's checks. Text form: 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TranscriptDigest(pub [u8; 32]);

impl fmt::Display for TranscriptDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TranscriptDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TranscriptDigest({self})")
    }
}

/// Why the verifier refused a job's transcripts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// Not as many views as the committee has parties, or a committee size out of bounds.
    #[error("{views} views for a committee of {parties} parties (2 to {MAX_PARTIES} parties, one view each)")]
    Committee {
        /// Views received.
        views: usize,
        /// Parties the views describe.
        parties: usize,
    },
    /// The parties report different numbers of checks (or none, or too many).
    #[error("party {party} reports {got} MAC checks where {expected} were expected")]
    CheckCount {
        /// The party.
        party: usize,
        /// Checks it reported.
        got: usize,
        /// Checks expected (party 0's count; at least 1, at most [`MAX_CHECKS`]).
        expected: usize,
    },
    /// A party's view differs from party 0's: somebody equivocated or reported a false view.
    #[error("check {check}: party {party}'s view differs from party 0's (a party equivocated)")]
    Equivocation {
        /// The check.
        check: usize,
        /// The party whose view differs.
        party: usize,
    },
    /// A party's seed contribution does not open its commitment.
    #[error("check {check}: party {party}'s seed does not open its commitment")]
    SeedCommitment {
        /// The check.
        check: usize,
        /// The party.
        party: usize,
    },
    /// A party's check values do not open its commitment.
    #[error("check {check}: party {party}'s check values do not open its commitment")]
    Commitment {
        /// The check.
        check: usize,
        /// The party.
        party: usize,
    },
    /// A party saw different opened values than party 0.
    #[error("check {check}: party {party} saw different opened values")]
    Views {
        /// The check.
        check: usize,
        /// The party.
        party: usize,
    },
    /// `sum z_i != 0` or `xor t_i != 0`: an opened value or a MAC was wrong.
    #[error("check {check}: the MAC check fails (an opened value or a MAC was wrong)")]
    MacCheck {
        /// The check.
        check: usize,
    },
    /// A party's transcript body does not decode as its protocol's views.
    #[error("party {party}'s transcript does not decode as {protocol} views")]
    Decode {
        /// The party.
        party: usize,
        /// The manifest's protocol.
        protocol: Protocol,
    },
    /// The protocol has no transcripts to verify.
    #[error("{protocol} jobs have no checks to verify")]
    Unverified {
        /// The manifest's protocol.
        protocol: Protocol,
    },
    /// A `rep3m` job's views do not verify.
    #[error("rep3m: {0}")]
    Rep3m(#[from] TranscriptError),
}

/// A job's check views, one list per party (index = party), decoded by the manifest's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobViews {
    /// `spdz2k`: MAC-check transcripts ([`verify_job`]).
    Spdz2k(Vec<Vec<CheckTranscript>>),
    /// `rep3m`: opening digests and product-proof final checks
    /// (`veil_protocols::rep3m::transcript::verify_rep3m_transcripts`).
    Rep3m(Vec<Vec<CheckView>>),
}

impl JobViews {
    /// Decodes each party's transcript body (postcard, as a party's evidence carries it) as `protocol`'s
    /// views. Bodies are bounded by the caller (the evidence's size limit).
    pub fn decode(protocol: Protocol, bodies: &[Vec<u8>]) -> Result<JobViews, VerifyError> {
        fn each<T: serde::de::DeserializeOwned>(
            protocol: Protocol,
            bodies: &[Vec<u8>],
        ) -> Result<Vec<T>, VerifyError> {
            bodies
                .iter()
                .enumerate()
                .map(|(party, b)| {
                    postcard::from_bytes(b).map_err(|_| VerifyError::Decode { party, protocol })
                })
                .collect()
        }
        match protocol {
            Protocol::Spdz2k => Ok(JobViews::Spdz2k(each(protocol, bodies)?)),
            Protocol::Rep3m => Ok(JobViews::Rep3m(each(protocol, bodies)?)),
            Protocol::Semi2k | Protocol::Rep3 => Err(VerifyError::Unverified { protocol }),
        }
    }

    /// Parties with views.
    pub fn parties(&self) -> usize {
        match self {
            JobViews::Spdz2k(v) => v.len(),
            JobViews::Rep3m(v) => v.len(),
        }
    }

    /// Checks reported by each party, in party order.
    pub fn checks(&self) -> Vec<usize> {
        match self {
            JobViews::Spdz2k(v) => v.iter().map(Vec::len).collect(),
            JobViews::Rep3m(v) => v.iter().map(Vec::len).collect(),
        }
    }

    /// Verifies the views ([`verify_job`] or the `rep3m` check) and returns the digest a receipt signs.
    pub fn verify(&self) -> Result<TranscriptDigest, VerifyError> {
        match self {
            JobViews::Spdz2k(v) => verify_job(v),
            JobViews::Rep3m(v) => Ok(TranscriptDigest(verify_rep3m_transcripts(v)?)),
        }
    }
}

/// The canonical encoding of one check's transcript: the domain, the number of parties (u32 LE), then per
/// party in order its seed commitment, seed, check commitment, `z` (16 bytes LE), `t` (8 bytes LE), `h`
/// and nonce.
pub fn canonical_bytes(view: &CheckTranscript) -> Vec<u8> {
    let mut out = Vec::with_capacity(TRANSCRIPT_DOMAIN.len() + 4 + view.parties.len() * 216);
    out.extend_from_slice(TRANSCRIPT_DOMAIN);
    out.extend_from_slice(&(view.parties.len() as u32).to_le_bytes());
    for p in &view.parties {
        out.extend_from_slice(&p.seed_commitment);
        out.extend_from_slice(&p.seed);
        out.extend_from_slice(&p.commitment);
        out.extend_from_slice(&p.z);
        out.extend_from_slice(&p.t);
        out.extend_from_slice(&p.h);
        out.extend_from_slice(&p.nonce);
    }
    out
}

/// Checks the views of one MAC check, `views[i]` being party `i`'s (see the module doc), and returns the
/// SHA-256 of the canonical transcript.
pub fn verify_transcripts(views: &[CheckTranscript]) -> Result<TranscriptDigest, VerifyError> {
    verify_check(views, 0)
}

fn verify_check(views: &[CheckTranscript], check: usize) -> Result<TranscriptDigest, VerifyError> {
    let n = views.len();
    let first = views.first().ok_or(VerifyError::Committee {
        views: 0,
        parties: 0,
    })?;
    if !(2..=MAX_PARTIES).contains(&n) || views.iter().any(|v| v.parties.len() != n) {
        return Err(VerifyError::Committee {
            views: n,
            parties: first.parties.len(),
        });
    }
    let reference = canonical_bytes(first);
    for (party, view) in views.iter().enumerate().skip(1) {
        if !bool::from(canonical_bytes(view).ct_eq(&reference)) {
            return Err(VerifyError::Equivocation { check, party });
        }
    }
    let h = &first.parties[0].h;
    let (mut z, mut t) = (0u128, 0u64);
    for (party, opening) in first.parties.iter().enumerate() {
        if !bool::from(
            opening
                .expected_seed_commitment(party)
                .ct_eq(&opening.seed_commitment),
        ) {
            return Err(VerifyError::SeedCommitment { check, party });
        }
        if !bool::from(
            opening
                .expected_commitment(party)
                .ct_eq(&opening.commitment),
        ) {
            return Err(VerifyError::Commitment { check, party });
        }
        if !bool::from(opening.h.ct_eq(h)) {
            return Err(VerifyError::Views { check, party });
        }
        z = z.wrapping_add(opening.z_value());
        t ^= opening.t_value();
    }
    let zero = z.to_le_bytes().ct_eq(&[0u8; 16]) & t.to_le_bytes().ct_eq(&[0u8; 8]);
    if !bool::from(zero) {
        return Err(VerifyError::MacCheck { check });
    }
    Ok(TranscriptDigest(Sha256::digest(&reference).into()))
}

/// Checks every MAC check of a job, `views[i][c]` being party `i`'s view of check `c` (its report's
/// transcripts), and returns `SHA-256(JOB_DOMAIN || checks as u32 LE || digest of check 0 || ...)`. Every
/// party must report the same number of checks, at least one.
pub fn verify_job(views: &[Vec<CheckTranscript>]) -> Result<TranscriptDigest, VerifyError> {
    let checks = views.first().map_or(0, Vec::len);
    if views.len() < 2 || views.len() > MAX_PARTIES {
        return Err(VerifyError::Committee {
            views: views.len(),
            parties: views.len(),
        });
    }
    for (party, v) in views.iter().enumerate() {
        if v.len() != checks || checks == 0 || checks > MAX_CHECKS {
            return Err(VerifyError::CheckCount {
                party,
                got: v.len(),
                expected: checks.clamp(1, MAX_CHECKS),
            });
        }
    }
    let mut job = Sha256::new();
    job.update(JOB_DOMAIN);
    job.update((checks as u32).to_le_bytes());
    for c in 0..checks {
        let one: Vec<CheckTranscript> = views.iter().map(|v| v[c].clone()).collect();
        job.update(verify_check(&one, c)?.0);
    }
    Ok(TranscriptDigest(job.finalize().into()))
}

/// A consistent honest transcript of `n` parties (tests): z sums to 0, t xors to 0, equal h, commitments
/// that open (computed with the protocol's own commitment).
#[cfg(test)]
pub(crate) fn honest_transcript(n: usize, salt: u8) -> CheckTranscript {
    use veil_protocols::spdz2k::transcript::CheckOpening;
    let mut parties = Vec::new();
    let (mut z_sum, mut t_sum) = (0u128, 0u64);
    for p in 0..n {
        let (z, t) = if p + 1 == n {
            (0u128.wrapping_sub(z_sum), t_sum)
        } else {
            let z = u128::from_le_bytes([salt.wrapping_add(p as u8 * 7 + 1); 16]);
            let t = u64::from_le_bytes([salt ^ (p as u8 + 3); 8]);
            (z, t)
        };
        z_sum = z_sum.wrapping_add(z);
        t_sum ^= t;
        let mut o = CheckOpening {
            seed_commitment: [0; 32],
            seed: [salt ^ p as u8; 32],
            commitment: [0; 32],
            z: z.to_le_bytes(),
            t: t.to_le_bytes(),
            h: [salt; 32],
            nonce: [p as u8 + 100; 32],
        };
        o.seed_commitment = o.expected_seed_commitment(p);
        o.commitment = o.expected_commitment(p);
        parties.push(o);
    }
    CheckTranscript { parties }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_protocols::spdz2k::transcript::{CHECK_LABEL, SEED_LABEL};

    fn honest(n: usize, salt: u8) -> CheckTranscript {
        honest_transcript(n, salt)
    }

    #[test]
    fn job_views_decode_by_the_manifests_protocol() {
        let spdz: Vec<Vec<u8>> = (0..2)
            .map(|_| postcard::to_stdvec(&vec![honest_transcript(2, 3)]).unwrap())
            .collect();
        let views = JobViews::decode(Protocol::Spdz2k, &spdz).unwrap();
        assert_eq!((views.parties(), views.checks()), (2, vec![1, 1]));
        assert!(views.verify().is_ok());
        // The same bodies read as rep3m views, garbage, and protocols without checks.
        assert!(matches!(
            JobViews::decode(Protocol::Rep3m, &spdz),
            Err(VerifyError::Decode { party: 0, .. })
        ));
        let empty: Vec<Vec<u8>> = (0..3)
            .map(|_| postcard::to_stdvec(&Vec::<CheckView>::new()).unwrap())
            .collect();
        let rep3m = JobViews::decode(Protocol::Rep3m, &empty).unwrap();
        assert_eq!(rep3m.checks(), vec![0, 0, 0]);
        // No check at all does not verify.
        assert!(matches!(rep3m.verify(), Err(VerifyError::Rep3m(_))));
        let mut garbage = empty.clone();
        garbage[2] = vec![0xff; 3];
        assert!(matches!(
            JobViews::decode(Protocol::Rep3m, &garbage),
            Err(VerifyError::Decode { party: 2, .. })
        ));
        for protocol in [Protocol::Semi2k, Protocol::Rep3] {
            assert_eq!(
                JobViews::decode(protocol, &empty),
                Err(VerifyError::Unverified { protocol })
            );
        }
    }

    #[test]
    fn labels_are_the_protocols() {
        assert_eq!(SEED_LABEL, b"veil-seed");
        assert_eq!(CHECK_LABEL, b"veil-check");
    }

    #[test]
    fn honest_views_pass_and_digest_is_stable() {
        let t = honest(3, 9);
        let views = vec![t.clone(), t.clone(), t.clone()];
        let d = verify_transcripts(&views).unwrap();
        assert_eq!(d, verify_transcripts(&views).unwrap());
        assert_ne!(d, verify_transcripts(&vec![honest(3, 10); 3]).unwrap());
        let views: Vec<Vec<CheckTranscript>> =
            (0..3).map(|_| vec![honest(3, 1), honest(3, 2)]).collect();
        let job = verify_job(&views).unwrap();
        // The second check of one party's view differs: the job fails, naming the check.
        let mut bad = views.clone();
        bad[2][1].parties[0].nonce[0] ^= 1;
        assert_eq!(
            verify_job(&bad),
            Err(VerifyError::Equivocation { check: 1, party: 2 })
        );
        assert_ne!(job, d);
    }

    #[test]
    fn a_changed_z_fails_even_if_recommitted() {
        let mut t = honest(3, 5);
        // Changed z with the old commitment: the commitment does not open.
        t.parties[1].z[0] ^= 1;
        let views = vec![t.clone(), t.clone(), t.clone()];
        assert_eq!(
            verify_transcripts(&views),
            Err(VerifyError::Commitment { check: 0, party: 1 })
        );
        // Recommitted by the cheater: the commitment opens but the sum is not zero.
        t.parties[1].commitment = t.parties[1].expected_commitment(1);
        let views = vec![t.clone(), t.clone(), t.clone()];
        assert_eq!(
            verify_transcripts(&views),
            Err(VerifyError::MacCheck { check: 0 })
        );
    }

    #[test]
    fn equivocation_is_caught_by_the_honest_view() {
        let honest_view = honest(3, 6);
        let mut other = honest_view.clone();
        // Party 2 sent party 1 a different commitment.
        other.parties[2].commitment[5] ^= 0x80;
        let views = vec![honest_view.clone(), other, honest_view.clone()];
        assert_eq!(
            verify_transcripts(&views),
            Err(VerifyError::Equivocation { check: 0, party: 1 })
        );
    }

    #[test]
    fn bad_seed_unequal_views_and_sizes_fail() {
        let mut t = honest(3, 7);
        t.parties[0].seed[0] ^= 1;
        assert_eq!(
            verify_transcripts(&vec![t.clone(); 3]),
            Err(VerifyError::SeedCommitment { check: 0, party: 0 })
        );
        let mut t = honest(3, 7);
        t.parties[2].h[3] ^= 1;
        t.parties[2].commitment = t.parties[2].expected_commitment(2);
        assert_eq!(
            verify_transcripts(&vec![t; 3]),
            Err(VerifyError::Views { check: 0, party: 2 })
        );
        let t = honest(3, 7);
        assert!(matches!(
            verify_transcripts(&[t.clone(), t.clone()]),
            Err(VerifyError::Committee { .. })
        ));
        assert!(verify_transcripts(&[]).is_err());
        assert!(matches!(
            verify_job(&[vec![t.clone()], vec![t.clone(), t.clone()], vec![t]]),
            Err(VerifyError::CheckCount { party: 1, .. })
        ));
    }
}
