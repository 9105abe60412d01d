//! The batched MAC check (SPDZ2k, CRYPTO 2018, the MAC-check procedure; field SPDZ for the bits): one check
//! covers every value opened since the previous one, and runs before any output leaves the parties.
//!
//! 1. A joint random seed: each party commits to 32 random bytes (SHA-256 of a label, its index and the bytes),
//!    then opens them; the seed hashes all of them. Nobody can bias it without breaking a commitment, and it
//!    is fixed only after every checked value was opened.
//! 2. From the seed, coefficients `chi_j` in Z_2^64 for the arithmetic openings and `chi_w` in GF(2^64) for
//!    each 64-bit word of opened bits. Party `i` computes
//!    `z_i = sum_j chi_j * m_ij - alpha_i * sum_j chi_j * y_j  (mod 2^128)` and
//!    `t_i = sum_w chi_w * (M_iw - beta_i * y_w)` in GF(2^64), where `M_iw = sum_b x^b * m_iwb` folds the MAC
//!    shares of the word's 64 bits with the powers of `x` (the word `y_w` read as a polynomial of degree < 64 is
//!    non-zero exactly when some bit is, so a flipped bit leaves a non-zero error that only a guess of `beta`
//!    can cancel).
//! 3. Each party commits to `(z_i, t_i, h_i)` with a fresh nonce, `h_i` the hash of every value it saw opened,
//!    then opens. Everyone checks the commitments, that all `h_i` agree (no party was shown different values)
//!    and that `sum z_i = 0` and `xor t_i = 0`.
//!
//! An honest run gives exactly zero, so the check reveals nothing; a party that changed an opened value by
//! `e != 0 mod 2^64` passes with probability about 2^-60 (k = s = 64; the SPDZ2k bound is 2^(-s + log s)).
//! Cost: 4 rounds, 32 + 32 + 32 + 88 bytes to each peer; 3 rounds online when the seed commitments were
//! exchanged ahead (`commit_check_seed`, which local runs and nodes call before each inference's input).
//!
//! Products checked by projection (`product_check`) add their checks to the record as opened zeros with their
//! MAC shares: the check above verifies them with everything else.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{ProtocolError, Result};
use crate::net::Net;
use crate::prg::{Prg, Seed};

use super::gf2::{clmul, reduce};
use super::{Party, State};

/// Multiplication in GF(2^64) = GF(2)[x] / (x^64 + x^4 + x^3 + x + 1) (hardware carry-less multiply where
/// the CPU has it; see `gf2.rs`).
pub fn gf_mul(a: u64, b: u64) -> u64 {
    reduce(clmul(a, b))
}

pub(crate) fn commit(label: &[u8], party: usize, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update((party as u64).to_le_bytes());
    h.update(body);
    h.finalize().into()
}

/// Equality of byte strings in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn fail(why: String) -> ProtocolError {
    ProtocolError::Verification(why)
}

/// A party's share of a check's joint seed and every party's commitment to its own, exchanged before the check
/// (indexed by party; this party's slot empty). The share is secret until the check opens it.
pub(crate) struct SeedCommitment {
    mine: [u8; 32],
    commitments: Vec<Vec<u8>>,
}

/// This party's check values `(z_i, t_i)` under the coefficients of `seed`.
///
/// The bit MACs were folded per word when they were recorded (`M_w = sum_b x^b m_wb`, see `gf2::fold`), so
/// `t_i = sum_w chi_w * M_w - beta_i * sum_w chi_w * y_w` is two GF(2^64) inner products.
fn check_values(state: &State, seed: &Seed) -> (u128, u64) {
    let mut prg = Prg::new(seed);
    let chi = prg.words(state.opened.len());
    let (mut y, mut m) = (0u128, 0u128);
    for ((&c, &o), &mac) in chi.iter().zip(&state.opened).zip(&state.macs) {
        let c = u128::from(c);
        y = y.wrapping_add(c.wrapping_mul(o));
        m = m.wrapping_add(c.wrapping_mul(mac));
    }
    let z = m.wrapping_sub(state.keys.alpha.wrapping_mul(y));

    let chi_bits = prg.words(state.bit_words.len());
    let folded = super::gf2::dot(&chi_bits, &state.bit_macs);
    let opened = super::gf2::dot(&chi_bits, &state.bit_words);
    let t = folded ^ gf_mul(state.keys.beta, opened);
    (z, t)
}

impl<N: Net> Party<N> {
    /// This party's share of the MAC key alpha, for the output's recipient, released only when no opened
    /// value awaits a MAC check (every opening so far passed one). The recipient adds the shares of every
    /// party to check the output MACs: it learns alpha only after the checks it could otherwise have helped
    /// a colluding party to pass, so alpha never reaches a client before or during the online phase.
    pub fn release_output_key_share(&self) -> Result<u128> {
        if !self.state.opened.is_empty() || !self.state.bit_words.is_empty() {
            return Err(fail(
                "values were opened since the last MAC check: the key share stays".into(),
            ));
        }
        Ok(self.state.keys.alpha)
    }

    /// Runs the batched MAC check over every value opened since the last check; on success the record is
    /// cleared. Fails with [`ProtocolError::Verification`] if any opened value or MAC was wrong, or if the
    /// parties saw different openings.
    pub fn verify(&mut self) -> Result<()> {
        self.verify_transcript().map(drop)
    }

    /// [`Self::verify`], returning this party's view of the check (every party's commitments and openings as
    /// received; see [`super::transcript`]) for a verifier. Same messages, bytes and rounds.
    pub fn verify_transcript(&mut self) -> Result<super::transcript::CheckTranscript> {
        let me = self.id();
        let peers: Vec<usize> = (0..self.parties()).filter(|&p| p != me).collect();
        let mut rng = rand::rng();

        // 1. Joint seed (its commitments may have been exchanged ahead, see `commit_check_seed`).
        let SeedCommitment {
            mine,
            commitments: seed_commits,
        } = match self.state.seed_commitment.take() {
            Some(ahead) => ahead,
            None => self.exchange_seed_commitments()?,
        };
        let seeds = self.exchange(&mine, &peers, 32)?;
        let mut joint = Sha256::new();
        for p in 0..self.parties() {
            let s: &[u8] = if p == me { &mine } else { &seeds[p] };
            if p != me && !ct_eq(&commit(b"veil-seed", p, s), &seed_commits[p]) {
                return Err(fail(format!(
                    "party {p} opened a seed it did not commit to"
                )));
            }
            joint.update(s);
        }
        let seed = Seed(joint.finalize().into());

        // 2. Check values and the hash of the view.
        let (z, t) = check_values(&self.state, &seed);
        let view: [u8; 32] = self.state.view.clone().finalize().into();
        let mut body = Vec::with_capacity(88);
        body.extend_from_slice(&z.to_le_bytes());
        body.extend_from_slice(&t.to_le_bytes());
        body.extend_from_slice(&view);
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        body.extend_from_slice(&nonce);

        // 3. Commit, then open.
        let commits = self.exchange(&commit(b"veil-check", me, &body), &peers, 32)?;
        let bodies = self.exchange(&body, &peers, body.len())?;
        let (mut z_sum, mut t_sum) = (z, t);
        for &p in &peers {
            let theirs = &bodies[p];
            if !ct_eq(&commit(b"veil-check", p, theirs), &commits[p]) {
                return Err(fail(format!(
                    "party {p} opened check values it did not commit to"
                )));
            }
            if !ct_eq(&theirs[24..56], &view) {
                return Err(fail(format!("party {p} saw different opened values")));
            }
            let mut zb = [0u8; 16];
            zb.copy_from_slice(&theirs[..16]);
            let mut tb = [0u8; 8];
            tb.copy_from_slice(&theirs[16..24]);
            z_sum = z_sum.wrapping_add(u128::from_le_bytes(zb));
            t_sum ^= u64::from_le_bytes(tb);
        }
        if !ct_eq(&z_sum.to_le_bytes(), &[0u8; 16]) || !ct_eq(&t_sum.to_le_bytes(), &[0u8; 8]) {
            return Err(fail(
                "MAC check failed: an opened value or a MAC was wrong".into(),
            ));
        }
        let state = &mut self.state;
        state.opened.clear();
        state.macs.clear();
        state.bit_words.clear();
        state.bit_macs.clear();
        super::transcript::record(me, &mine, &body, [&seed_commits, &seeds, &commits, &bodies])
    }

    /// The check's first round ahead of time: commits to this party's share of the next check's joint seed and
    /// receives every peer's commitment. It depends on no data, so it can run in preprocessing; the next
    /// [`Self::verify`] then starts by opening the seeds (3 rounds instead of 4). The seed stays hidden until
    /// that check opens it, after every value it covers was opened, so committing early changes nothing for
    /// its security. Does nothing while a commitment is pending. All parties must call it alike.
    pub fn commit_check_seed(&mut self) -> Result<()> {
        if self.state.seed_commitment.is_none() {
            let ahead = self.exchange_seed_commitments()?;
            self.state.seed_commitment = Some(ahead);
        }
        Ok(())
    }

    /// One round: a fresh seed share for this party, and every party's commitment to its own.
    fn exchange_seed_commitments(&mut self) -> Result<SeedCommitment> {
        let me = self.id();
        let peers: Vec<usize> = (0..self.parties()).filter(|&p| p != me).collect();
        let mut mine = [0u8; 32];
        rand::rng().fill_bytes(&mut mine);
        let commitments = self.exchange(&commit(b"veil-seed", me, &mine), &peers, 32)?;
        Ok(SeedCommitment { mine, commitments })
    }

    /// Sends `message` to every peer and receives one message of exactly `len` bytes from each; returns them
    /// indexed by party (this party's slot empty).
    fn exchange(&mut self, message: &[u8], peers: &[usize], len: usize) -> Result<Vec<Vec<u8>>> {
        for &p in peers {
            self.net.send(p, message.to_vec())?;
        }
        let mut out = vec![Vec::new(); self.parties()];
        for &p in peers {
            let got = self.net.recv(p)?;
            if got.len() != len {
                return Err(ProtocolError::MessageLength {
                    from: p,
                    got: got.len(),
                    expected: len,
                });
            }
            out[p] = got;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gf_mul_is_a_field_product() {
        let (a, b, c) = (
            0x0123_4567_89ab_cdefu64,
            0xfedc_ba98_7654_3210u64,
            0x1357_9bdf_0246_8aceu64,
        );
        assert_eq!(gf_mul(a, 1), a);
        assert_eq!(gf_mul(a, b), gf_mul(b, a));
        assert_eq!(gf_mul(gf_mul(a, b), c), gf_mul(a, gf_mul(b, c)));
        assert_eq!(gf_mul(a, b ^ c), gf_mul(a, b) ^ gf_mul(a, c));
        // x^63 * x = x^64 = x^4 + x^3 + x + 1.
        assert_eq!(gf_mul(1 << 63, 2), 0b11011);
    }
}
