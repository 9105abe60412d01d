//! A party's view of one MAC check (see [`super::check`]): what every party committed to and then opened, as
//! this party received it. It is what a verifier re-checks without taking part in the computation.
//!
//! Contents, per party `p` of the committee, in party order:
//! - round 1 (joint seed): `seed_commitment = SHA-256("veil-seed" || p as u64 LE || seed)` and `seed`;
//! - round 2 (check values): `commitment = SHA-256("veil-check" || p as u64 LE || body)` and the opened body
//!   `z_p (16 bytes LE) || t_p (8 bytes LE) || h_p (32) || nonce (32)`.
//!
//! Invariant: nothing in a transcript is a share, a MAC share or an opened value. `z_p` and `t_p` are shares
//! of zero in an honest run (the check values of Cramer, Damgard, Escudero, Scholl, Xing, CRYPTO 2018, which
//! every party sees anyway); `h_p` is a hash of the masked values party `p` saw opened; the seeds and nonces
//! are fresh randomness.

use serde::{Deserialize, Serialize};

use crate::error::{ProtocolError, Result};

/// Label of the seed commitments.
pub const SEED_LABEL: &[u8] = b"veil-seed";
/// Label of the check-value commitments.
pub const CHECK_LABEL: &[u8] = b"veil-check";
/// Bytes of an opened check body: `z (16) || t (8) || h (32) || nonce (32)`.
pub const BODY_LEN: usize = 88;

/// One party's commitments and openings in one MAC check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOpening {
    /// Commitment to the party's seed contribution.
    pub seed_commitment: [u8; 32],
    /// The seed contribution it opened.
    pub seed: [u8; 32],
    /// Commitment to its check body.
    pub commitment: [u8; 32],
    /// `z_p` in Z_2^128, little-endian, as opened.
    pub z: [u8; 16],
    /// `t_p` in GF(2^64), little-endian, as opened.
    pub t: [u8; 8],
    /// `h_p`: the hash of every value party `p` saw opened since the previous check.
    pub h: [u8; 32],
    /// The commitment's nonce.
    pub nonce: [u8; 32],
}

impl CheckOpening {
    /// The opened body, as it travelled.
    pub fn body(&self) -> [u8; BODY_LEN] {
        let mut out = [0u8; BODY_LEN];
        out[..16].copy_from_slice(&self.z);
        out[16..24].copy_from_slice(&self.t);
        out[24..56].copy_from_slice(&self.h);
        out[56..].copy_from_slice(&self.nonce);
        out
    }

    /// `z_p` as a ring element.
    pub fn z_value(&self) -> u128 {
        u128::from_le_bytes(self.z)
    }

    /// `t_p` as a field element.
    pub fn t_value(&self) -> u64 {
        u64::from_le_bytes(self.t)
    }

    /// The commitment `seed` must open for party `party`.
    pub fn expected_seed_commitment(&self, party: usize) -> [u8; 32] {
        super::check::commit(SEED_LABEL, party, &self.seed)
    }

    /// The commitment the body must open for party `party`.
    pub fn expected_commitment(&self, party: usize) -> [u8; 32] {
        super::check::commit(CHECK_LABEL, party, &self.body())
    }
}

/// One party's view of one MAC check: every party's commitments and openings, indexed by party.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckTranscript {
    /// One entry per party of the committee, in party order.
    pub parties: Vec<CheckOpening>,
}

fn array<const L: usize>(bytes: &[u8], from: usize) -> Result<[u8; L]> {
    bytes.try_into().map_err(|_| ProtocolError::MessageLength {
        from,
        got: bytes.len(),
        expected: L,
    })
}

/// Party `me`'s transcript from its own seed and body and the four rounds it received (indexed by party,
/// its own slot ignored). Fails only if a received message has the wrong length (the exchange checks that
/// already).
pub(crate) fn record(
    me: usize,
    own_seed: &[u8],
    own_body: &[u8],
    [seed_commits, seeds, commits, bodies]: [&[Vec<u8>]; 4],
) -> Result<CheckTranscript> {
    let parties = seeds.len();
    let mut out = Vec::with_capacity(parties);
    for p in 0..parties {
        let (seed, body) = if p == me {
            (own_seed, own_body)
        } else {
            (seeds[p].as_slice(), bodies[p].as_slice())
        };
        let body: [u8; BODY_LEN] = array(body, p)?;
        let mut opening = CheckOpening {
            seed_commitment: [0; 32],
            seed: array(seed, p)?,
            commitment: [0; 32],
            z: array(&body[..16], p)?,
            t: array(&body[16..24], p)?,
            h: array(&body[24..56], p)?,
            nonce: array(&body[56..], p)?,
        };
        if p == me {
            opening.seed_commitment = opening.expected_seed_commitment(p);
            opening.commitment = opening.expected_commitment(p);
        } else {
            opening.seed_commitment = array(&seed_commits[p], p)?;
            opening.commitment = array(&commits[p], p)?;
        }
        out.push(opening);
    }
    Ok(CheckTranscript { parties: out })
}
