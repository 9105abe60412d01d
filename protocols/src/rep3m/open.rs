//! Checked openings: party `i` receives the component it misses, `x_{i+2}`, from its previous party (that
//! component's first holder, as in `rep3`), and the component's second holder, its next party, vouches for
//! it with a running SHA-256 of every component it holds as `next` ([`Party::verify`] exchanges the
//! digests). The opened values may be used at once; nothing leaves the committee before a check passed
//! ([`Party::release`]).

use sha2::{Digest, Sha256};

use crate::adversary::Deviation;
use crate::error::{ProtocolError, Result};
use crate::net::Net;
use crate::rep3::{next_party, prev_party, RepShare};

use super::Party;

/// Bytes of a digest.
const DIGEST: usize = 32;

/// Appends one opening's words to a running digest: its length, then the words (little-endian), so that
/// two different sequences of openings never hash the same byte stream.
fn absorb(hash: &mut Sha256, words: &[u64]) {
    hash.update((words.len() as u64).to_le_bytes());
    hash.update(crate::ring::to_bytes(words));
}

/// Equality of two digests in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<N: Net> Party<N> {
    /// Reveals `x` to every party (one round, 8 bytes per element sent by each party, as `rep3`), recording
    /// the received component and the one this party vouches for. The result is checked at the next
    /// [`Self::verify`].
    pub fn open(&mut self, x: &RepShare) -> Result<Vec<u64>> {
        let (own, next) = x.components();
        let mut sent = own.to_vec();
        if let Some(a) = self.opening_deviation() {
            match a.kind {
                Deviation::SkipRound => return Err(self.go_silent()),
                _ => {
                    if let Some(w) = sent.first_mut() {
                        *w = w.wrapping_add(a.delta);
                    }
                }
            }
        }
        self.verified = false;
        let me = self.id();
        self.inner
            .send(next_party(me), crate::ring::to_bytes(&sent))?;
        let missing = self.inner.recv_words(prev_party(me), own.len())?;
        absorb(&mut self.received, &missing);
        absorb(&mut self.vouched, next);
        Ok(own
            .iter()
            .zip(next)
            .zip(&missing)
            .map(|((&a, &b), &c)| a.wrapping_add(b).wrapping_add(c))
            .collect())
    }

    /// Checks every opening so far (one round, 32 bytes sent by each party): sends the digest of what this
    /// party vouched for to its previous party, and compares the digest its next party sent with the one of
    /// what this party received. Fails with [`ProtocolError::Verification`] if they differ: some party
    /// sent a component its second holder does not hold. Then no output may be released.
    pub fn verify(&mut self) -> Result<()> {
        let me = self.id();
        let vouched = self.vouched.clone().finalize();
        self.inner.send(prev_party(me), vouched.to_vec())?;
        let theirs = self.inner.recv_words(next_party(me), DIGEST / 8)?;
        let received = self.received.clone().finalize();
        if !ct_eq(&crate::ring::to_bytes(&theirs), &received) {
            return Err(ProtocolError::Verification(format!(
                "party {me} received opened values that party {} does not vouch for",
                next_party(me)
            )));
        }
        self.prove_products()?;
        // The check passed: its view for an outside verifier, digests blinded with the pair keys' salts.
        let (own_salt, next_salt) = self.inner.pair_salts();
        let (as_a, as_b) = self.final_checks.take().unwrap_or_default();
        self.transcripts.push(super::transcript::CheckView {
            received: super::transcript::blind(next_salt, &received),
            vouched: super::transcript::blind(own_salt, &vouched),
            as_a,
            as_b,
        });
        self.verified = true;
        Ok(())
    }

    /// Whether every opening and every reshare so far passed a check.
    pub fn is_verified(&self) -> bool {
        self.verified && !self.products_pending()
    }
}
