//! The coordinator's randomness beacon: a per-epoch commit-reveal hash chain, and the committee draw seed
//! derived from it.
//!
//! # The chain
//! The coordinator draws a secret `s_N` and computes `s_{e-1} = H(CHAIN_LABEL || e || s_e)` down to `s_0`
//! (`H` is SHA-256, `e` a little-endian u64). It publishes the *anchor* `s_0` once, before any job of the
//! chain's epochs is submitted; at the end of epoch `e` (`e >= 1`) it reveals `s_e`. Anyone holding the anchor
//! (or any earlier reveal `s_d`) checks a reveal by hashing forward: `s_d == H^(e-d)(s_e)`
//! ([`verify_reveal`]). Because SHA-256 is preimage- and collision-resistant, the anchor fixes every `s_e`:
//! the coordinator cannot choose an epoch's secret after it has seen that epoch's jobs. Until `s_e` is
//! revealed, nobody but the coordinator can predict a seed of epoch `e`.
//!
//! # The seed
//! A committee draw for job `j`, attempt `a`, stage `t`, submitted in epoch `e`, uses
//! `seed = H(SEED_LABEL || e || s_e || j || a || t || client)` ([`draw_seed`]), where `client` is 32 bytes
//! the submitter fixed (a hash of its submission; zeros when there is none). The client's bytes are fixed
//! before `s_e` is public and the chain is fixed before the submission, so neither the client alone nor a
//! later choice of the coordinator's secret steers the draw.
//!
//! What this does not stop: the coordinator knows its own chain, so it can predict a seed before the reveal
//! and, if it also assigns job ids freely, try several ids for one submission. Job ids are sequential and
//! published (`veil jobs`), so skipped or reordered ids are visible to anyone auditing the log.
//!
//! Invariants: a [`BeaconChain`] holds `s_0..=s_N` with `s_{e-1} = step(e, s_e)` for every `e`; reveals are
//! only ever of epochs `1..=N`; the secret `s_N` is never logged (`Debug` prints the anchor only).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Domain label of a chain step.
pub const CHAIN_LABEL: &[u8] = b"veil/beacon/chain/v1";
/// Domain label of a draw seed.
pub const SEED_LABEL: &[u8] = b"veil/beacon/seed/v1";
/// The longest chain [`BeaconChain::generate`] builds and [`verify_reveal`] walks (epochs).
pub const MAX_CHAIN_EPOCHS: u64 = 1 << 20;

/// Errors of the beacon.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BeaconError {
    /// The epoch is outside the chain (`1..=N`), or not after the reference point.
    #[error("epoch {epoch} is outside the chain (1..={length}) or not after epoch {after}")]
    EpochOutOfRange {
        /// The epoch asked for.
        epoch: u64,
        /// The chain's length (or the most epochs a check walks).
        length: u64,
        /// The reference epoch it must follow.
        after: u64,
    },
    /// A revealed secret does not hash forward to the commitment.
    #[error("the secret revealed for epoch {epoch} does not hash to the commitment of epoch {committed_epoch}")]
    RevealMismatch {
        /// The revealed epoch.
        epoch: u64,
        /// The epoch of the commitment it was checked against.
        committed_epoch: u64,
    },
    /// The chain's length is zero or too long.
    #[error("a beacon chain has 1..={max} epochs, asked for {length}")]
    BadLength {
        /// The length asked for.
        length: u64,
        /// [`MAX_CHAIN_EPOCHS`].
        max: u64,
    },
}

/// One step of the chain: `s_{e-1} = H(CHAIN_LABEL || e || s_e)`.
pub fn step(epoch: u64, secret: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHAIN_LABEL);
    h.update(epoch.to_le_bytes());
    h.update(secret);
    h.finalize().into()
}

/// The coordinator's chain (secret side).
#[derive(Clone)]
pub struct BeaconChain {
    /// `secrets[e] = s_e` for `e` in `0..=N`. Invariant: `secrets[e-1] == step(e, secrets[e])`.
    secrets: Vec<[u8; 32]>,
}

impl std::fmt::Debug for BeaconChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeaconChain")
            .field("anchor", &hex32(&self.anchor()))
            .field("epochs", &self.epochs())
            .finish()
    }
}

impl BeaconChain {
    /// Builds the chain of `epochs` epochs from the secret root `s_N` (draw it from a CSPRNG; persist it).
    pub fn generate(root: [u8; 32], epochs: u64) -> Result<BeaconChain, BeaconError> {
        if epochs == 0 || epochs > MAX_CHAIN_EPOCHS {
            return Err(BeaconError::BadLength {
                length: epochs,
                max: MAX_CHAIN_EPOCHS,
            });
        }
        let mut secrets = vec![[0u8; 32]; epochs as usize + 1];
        secrets[epochs as usize] = root;
        for e in (1..=epochs as usize).rev() {
            secrets[e - 1] = step(e as u64, &secrets[e]);
        }
        Ok(BeaconChain { secrets })
    }

    /// The number of epochs `N`.
    pub fn epochs(&self) -> u64 {
        self.secrets.len() as u64 - 1
    }

    /// The anchor `s_0`: the public commitment to the whole chain.
    pub fn anchor(&self) -> [u8; 32] {
        self.secrets[0]
    }

    /// The secret of epoch `e` (`1..=N`): the coordinator's own use before the reveal, and the reveal after.
    pub fn secret(&self, epoch: u64) -> Result<[u8; 32], BeaconError> {
        if epoch == 0 || epoch > self.epochs() {
            return Err(BeaconError::EpochOutOfRange {
                epoch,
                length: self.epochs(),
                after: 0,
            });
        }
        Ok(self.secrets[epoch as usize])
    }
}

/// Checks that `secret` is the chain's secret of epoch `epoch`, given the commitment `committed` of an
/// earlier epoch `committed_epoch` (the anchor is epoch 0): `H^(epoch - committed_epoch)(secret)` must equal
/// it. Walks at most [`MAX_CHAIN_EPOCHS`] steps.
pub fn verify_reveal(
    committed_epoch: u64,
    committed: &[u8; 32],
    epoch: u64,
    secret: &[u8; 32],
) -> Result<(), BeaconError> {
    if epoch <= committed_epoch || epoch - committed_epoch > MAX_CHAIN_EPOCHS {
        return Err(BeaconError::EpochOutOfRange {
            epoch,
            length: MAX_CHAIN_EPOCHS,
            after: committed_epoch,
        });
    }
    let mut s = *secret;
    for e in (committed_epoch + 1..=epoch).rev() {
        s = step(e, &s);
    }
    // Public values: a plain comparison leaks nothing.
    if &s == committed {
        Ok(())
    } else {
        Err(BeaconError::RevealMismatch {
            epoch,
            committed_epoch,
        })
    }
}

/// What a draw's seed is derived from (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedInput {
    /// The epoch the job was submitted in (`>= 1`).
    pub epoch: u64,
    /// The job's id.
    pub job: u64,
    /// The attempt (0 first).
    pub attempt: u32,
    /// The pipeline stage (0 first).
    pub stage: u32,
    /// 32 bytes the submitter fixed (e.g. a hash of its submission); zeros when there are none.
    pub client: [u8; 32],
}

/// The draw seed `H(SEED_LABEL || e || s_e || job || attempt || stage || client)`.
pub fn draw_seed(secret: &[u8; 32], input: &SeedInput) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SEED_LABEL);
    h.update(input.epoch.to_le_bytes());
    h.update(secret);
    h.update(input.job.to_le_bytes());
    h.update(input.attempt.to_le_bytes());
    h.update(input.stage.to_le_bytes());
    h.update(input.client);
    h.finalize().into()
}

/// The epoch a time falls in, for epochs of `epoch_ms` starting at `start_ms` (epoch 1 is the first).
pub fn epoch_at(start_ms: u64, epoch_ms: u64, now_ms: u64) -> u64 {
    now_ms.saturating_sub(start_ms) / epoch_ms.max(1) + 1
}

/// Lowercase hex of 32 bytes.
pub fn hex32(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reveals_check_against_the_anchor_and_later_reveals() {
        let chain = BeaconChain::generate([7; 32], 50).unwrap();
        let anchor = chain.anchor();
        let s10 = chain.secret(10).unwrap();
        let s11 = chain.secret(11).unwrap();
        verify_reveal(0, &anchor, 10, &s10).unwrap();
        verify_reveal(10, &s10, 11, &s11).unwrap();
        verify_reveal(0, &anchor, 11, &s11).unwrap();
        assert_eq!(
            verify_reveal(0, &anchor, 10, &s11),
            Err(BeaconError::RevealMismatch {
                epoch: 10,
                committed_epoch: 0
            })
        );
        let mut forged = s10;
        forged[0] ^= 1;
        assert!(verify_reveal(0, &anchor, 10, &forged).is_err());
        assert!(verify_reveal(10, &s10, 10, &s10).is_err());
        assert!(chain.secret(0).is_err() && chain.secret(51).is_err());
        assert!(BeaconChain::generate([0; 32], 0).is_err());
    }

    #[test]
    fn seeds_depend_on_every_input() {
        let s = [3u8; 32];
        let base = SeedInput {
            epoch: 4,
            job: 9,
            attempt: 0,
            stage: 0,
            client: [0; 32],
        };
        let a = draw_seed(&s, &base);
        let variants = [
            SeedInput { epoch: 5, ..base },
            SeedInput { job: 10, ..base },
            SeedInput { attempt: 1, ..base },
            SeedInput { stage: 1, ..base },
            SeedInput {
                client: [1; 32],
                ..base
            },
        ];
        for v in variants {
            assert_ne!(draw_seed(&s, &v), a);
        }
        assert_ne!(draw_seed(&[4; 32], &base), a);
        assert_eq!(draw_seed(&s, &base), a);
        assert_eq!(epoch_at(1_000, 60_000, 1_000), 1);
        assert_eq!(epoch_at(1_000, 60_000, 61_000), 2);
    }
}
