//! `rep3`: three-party replicated secret sharing over Z_2^64 (Araki, Furukawa, Lindell, Nof, Ohara, CCS 2016;
//! ABY3, Mohassel and Rindal, CCS 2018), secure against one honest-but-curious party, with **no dealer**: the
//! only correlated randomness comes from pairwise PRF keys the parties agree on at job start
//! ([`keys`](self::keys)).
//!
//! Party `i` holds components `(x_i, x_{i+1})` of `x = x_0 + x_1 + x_2` ([`RepShare`]). Linear operations
//! and products by public values are local. One concept per file:
//!
//! | file | operation | message hops | bytes sent per element (party 0 / 1 / 2) |
//! | --- | --- | --- | --- |
//! | `open` | reveal | 1 | 8 / 8 / 8 |
//! | `mul` | elementwise product; share x share and fixed-weight matrix products (per output element) | 1 | 8 / 8 / 8 |
//! | `trunc` | divide by `2^f`, exact to one ulp for `|z| < 2^62` (ABY3's two-party split, wrap corrected) | 2 | 16 / 8 / 8 |
//! | `sign` | sign test with `k` payloads (DReLU, ReLU, max, comparisons; with truncation `+16` / `+8` / `+8`) | 8 | `19.25 + 8 + 16k` / `15.6 + 8k` / `15.6 + 8k` |
//!
//! (Sign-test bits travel as whole 64-bit words per bit plane, so the per-element figures hold for batches
//! that are multiples of 64; `protocols/tests/rep3.rs` pins the exact counts.) Rounds as
//! [`crate::net::NetStats`] counts them (a round ends when a party that sent starts to receive): 1 for
//! open and products at every party; a truncation 1 / 1 / 0; the sign test 6 / 7 / 5.
//!
//! Every party runs the same sequence of calls (SPMD) on public shapes, so messages, sizes and rounds depend
//! only on shapes. Every message's length is checked before it is read.
//!
//! Privacy: every message a party receives is masked by a PRF stream of a key that party does not hold (see
//! each file), so one party's view is pseudo-random and independent of the inputs
//! (`engine/tests/privacy_rep3.rs`).

mod keys;
pub mod local;
mod mul;
mod open;
mod ops;
mod share;
mod sign;
mod sign_injected;
mod trunc;

use std::sync::Arc;

use crate::error::{ProtocolError, Result};
use crate::gemm::Gemm;
use crate::net::{CountedNet, Net, NetStats};
use crate::prg::Seed;
use crate::ring::FixedPoint;

use keys::PairKeys;
pub use mul::RepWeight;
pub(crate) use share::RepBits;
pub use share::RepShare;

/// Protocol name, as `veil bench --protocol` spells it.
pub const NAME: &str = "rep3";

/// One of the three parties.
pub struct Party<N: Net> {
    net: CountedNet<N>,
    me: usize,
    keys: PairKeys,
    fixed_point: FixedPoint,
    gemm: Arc<dyn Gemm>,
    /// `rep3m`'s record of every reshare this party takes part in, for its product proof; `None` in `rep3`,
    /// which then pays nothing for it (the claim closures passed to [`Self::reshare`] are never called).
    pub(crate) log: Option<crate::rep3m::proof::ProductLog>,
}

impl<N: Net> Party<N> {
    /// Joins the committee over `net` (exactly 3 parties): sends `key` (fresh, secret, this party's) to the
    /// previous party and receives the next party's key (one round, 32 bytes sent).
    pub fn new(net: N, key: Seed, fixed_point: FixedPoint, gemm: Arc<dyn Gemm>) -> Result<Self> {
        if net.parties() != 3 || net.party() >= 3 {
            return Err(ProtocolError::Committee(format!(
                "rep3 needs exactly 3 parties, got party {} of {}",
                net.party(),
                net.parties()
            )));
        }
        let me = net.party();
        let mut net = CountedNet::new(net);
        net.send(prev_party(me), key.0.to_vec())?;
        let got = net.recv(next_party(me))?;
        let bytes: [u8; 32] =
            got.as_slice()
                .try_into()
                .map_err(|_| ProtocolError::MessageLength {
                    from: next_party(me),
                    got: got.len(),
                    expected: 32,
                })?;
        Ok(Self {
            net,
            me,
            keys: PairKeys::new(me, &key, &Seed(bytes)),
            fixed_point,
            gemm,
            log: None,
        })
    }

    /// This party's index.
    pub fn id(&self) -> usize {
        self.me
    }

    /// Fixed-point parameters.
    pub fn fixed_point(&self) -> FixedPoint {
        self.fixed_point
    }

    /// The local matrix kernel.
    pub fn gemm(&self) -> &dyn Gemm {
        self.gemm.as_ref()
    }

    /// The local matrix kernel, shared.
    pub(crate) fn gemm_arc(&self) -> Arc<dyn Gemm> {
        self.gemm.clone()
    }

    /// Sends on every message the transport may still hold (see [`Net::flush`]).
    pub fn flush(&mut self) -> Result<()> {
        Ok(self.net.flush()?)
    }

    /// Waits at the transport's start line (see [`Net::start_line`]; not counted as traffic).
    pub fn start_line(&mut self) -> Result<()> {
        Ok(self.net.start_line()?)
    }

    /// Communication so far.
    pub fn stats(&self) -> &NetStats {
        self.net.stats()
    }

    /// The transport.
    pub fn net(&self) -> &N {
        self.net.inner()
    }

    /// Ends the job: the transport and the traffic.
    pub fn finish(self) -> (N, NetStats) {
        let stats = self.net.stats().clone();
        (self.net.into_inner(), stats)
    }

    /// A sharing of the public `values`: component 0 holds them, the others are zero.
    pub fn share_public(&self, values: &[u64]) -> RepShare {
        let zeros = vec![0; values.len()];
        let (own, next) = match self.me {
            0 => (values.to_vec(), zeros),
            2 => (zeros, values.to_vec()),
            _ => (zeros.clone(), zeros),
        };
        RepShare { own, next }
    }

    /// Adds the public `values` to `x` (to component 0).
    pub fn add_public(&self, x: &mut RepShare, values: &[u64]) {
        match self.me {
            0 => crate::ring::add_assign(&mut x.own, values),
            2 => crate::ring::add_assign(&mut x.next, values),
            _ => {}
        }
    }

    /// Sends `payload` to `to`.
    pub(crate) fn send(&mut self, to: usize, payload: Vec<u8>) -> Result<()> {
        Ok(self.net.send(to, payload)?)
    }

    /// Receives exactly `words` words from `from`.
    pub(crate) fn recv_words(&mut self, from: usize, words: usize) -> Result<Vec<u64>> {
        let got = self.net.recv(from)?;
        if got.len() != words * 8 {
            return Err(ProtocolError::MessageLength {
                from,
                got: got.len(),
                expected: words * 8,
            });
        }
        crate::ring::from_bytes(&got).ok_or(ProtocolError::MessageLength {
            from,
            got: got.len(),
            expected: words * 8,
        })
    }

    /// Stays silent (the protocol lab's `skip-round`): receives and drops whatever the peers still send until
    /// each of them gives up (a timeout or a closed link).
    pub(crate) fn drain_until_peers_give_up(&mut self) {
        for peer in [next_party(self.me), prev_party(self.me)] {
            while self.net.recv(peer).is_ok() {}
        }
    }

    /// The replicated share of `sum_i z_i` from this party's summand `z` (a 3-out-of-3 additive sharing):
    /// adds a zero sharing, sends the result to the previous party and receives the next party's (one round,
    /// `z.len()` words sent). `claims` says how `z` was computed from this party's components; it is called
    /// only when `rep3m` records the reshare for its product proof ([`Self::log`]).
    fn reshare(
        &mut self,
        mut z: Vec<u64>,
        claims: impl FnOnce() -> Vec<crate::rep3m::proof::Claim>,
    ) -> Result<RepShare> {
        if self.log.is_some() {
            return self.reshare_logged(z, claims());
        }
        let alpha = self.keys.zero(z.len());
        crate::ring::add_assign(&mut z, &alpha);
        self.send(prev_party(self.me), crate::ring::to_bytes(&z))?;
        let next = self.recv_words(next_party(self.me), z.len())?;
        Ok(RepShare { own: z, next })
    }

    /// [`Self::reshare`] with the record `rep3m` proves: the two zero-sharing draws, what was received, and
    /// the claims; the protocol lab's `wrong-product` changes one sent word here.
    fn reshare_logged(
        &mut self,
        mut z: Vec<u64>,
        claims: Vec<crate::rep3m::proof::Claim>,
    ) -> Result<RepShare> {
        let (own_draw, next_draw) = self.keys.zero_parts(z.len());
        crate::ring::add_assign(&mut z, &own_draw);
        crate::ring::sub_assign(&mut z, &next_draw);
        let mut sent = z.clone();
        if let Some(log) = self.log.as_mut() {
            log.tamper(&mut sent);
        }
        self.send(prev_party(self.me), crate::ring::to_bytes(&sent))?;
        let next = self.recv_words(next_party(self.me), z.len())?;
        if let Some(log) = self.log.as_mut() {
            log.push(crate::rep3m::proof::Reshare {
                claims,
                own_draw,
                next_draw,
                received: next.clone(),
            });
        }
        Ok(RepShare { own: z, next })
    }

    /// `rep3`'s AND gate reshare (`sign.rs`) with the record `rep3m` proves: `z` is this party's summand
    /// `x_own & (y_own ^ y_next) ^ x_next & y_own`, before the zero sharing.
    pub(crate) fn and_bits_logged(
        &mut self,
        x: &RepBits,
        y: &RepBits,
        mut z: Vec<u64>,
    ) -> Result<RepBits> {
        let (own_draw, next_draw) = self.keys.zero_parts(z.len());
        crate::bits::xor_assign(&mut z, &own_draw);
        crate::bits::xor_assign(&mut z, &next_draw);
        let mut sent = z.clone();
        if let Some(log) = self.log.as_mut() {
            log.tamper(&mut sent);
        }
        self.send(prev_party(self.me), crate::ring::to_bytes(&sent))?;
        let next = self.recv_words(next_party(self.me), z.len())?;
        if let Some(log) = self.log.as_mut() {
            log.push_bits(crate::rep3m::proof::BitReshare {
                x: x.clone(),
                y: y.clone(),
                own_draw,
                next_draw,
                received: next.clone(),
            });
        }
        Ok(RepBits { own: z, next })
    }

    /// Refuses a step with a one-sided message (one no product proof covers) when this party runs inside
    /// `rep3m` ([`Self::log`] set), so that every message `rep3m` sends is an opening or a proven reshare.
    pub(crate) fn refuse_unproven(&self, what: &str) -> Result<()> {
        if self.log.is_some() {
            return Err(ProtocolError::Committee(format!(
                "rep3m sends no message its checks do not cover: rep3's {what} is refused"
            )));
        }
        Ok(())
    }

    /// Salts derived once from this party's two keys (own key's, next key's), drawing nothing from their
    /// streams (`rep3m`'s recorded opening digests).
    pub(crate) fn pair_salts(&self) -> &(Seed, Seed) {
        self.keys.salts()
    }

    /// Seeds forked from this party's two PRF streams (own key's, next key's), at a point of the SPMD
    /// sequence every party reaches together (`rep3m`'s product proof).
    pub(crate) fn fork_keys(&mut self) -> (Seed, Seed) {
        let me = self.me;
        (self.keys.fork(me), self.keys.fork(next_party(me)))
    }

    /// The replicated share of `f_1 + f_2`, where party 1 holds `f_1` and party 2 holds `f_2` (party 0 passes
    /// nothing): component 0 is drawn from `k_0`, component 1 is `f_1 + F(k_2)` (party 1 sends it to party 0),
    /// component 2 is `f_2 - F(k_2) - F(k_0)` (party 2 sends it to party 1). One hop after party 2 has its
    /// summand; party 0 sends nothing, parties 1 and 2 send `len` words each. Party 0 sees `f_1` masked by
    /// `F(k_2)`, party 1 sees `f_2` masked by `F(k_0)`: neither holds the key.
    fn reshare_pair(&mut self, f: Option<Vec<u64>>, len: usize) -> Result<RepShare> {
        let (_, words) = self.reshare_pair_both(None, 0, f, len)?;
        Ok(words)
    }

    /// [`Self::reshare_pair`] for an XOR summand of `bits_len` words and an additive one of `len` words at
    /// once, in one message each way (the bits masked by XOR, the words by addition, from the same streams).
    fn reshare_pair_both(
        &mut self,
        bits: Option<Vec<u64>>,
        bits_len: usize,
        f: Option<Vec<u64>>,
        len: usize,
    ) -> Result<(share::RepBits, RepShare)> {
        self.refuse_unproven("one-sided reshare")?;
        let total = bits_len + len;
        let split = |mut v: Vec<u64>| {
            let words = v.split_off(bits_len);
            (v, words)
        };
        match self.me {
            0 => {
                let (b0, c0) = split(self.keys.component(0, total));
                let (b1, c1) = split(self.recv_words(1, total)?);
                Ok((
                    share::RepBits { own: b0, next: b1 },
                    RepShare { own: c0, next: c1 },
                ))
            }
            1 => {
                let (mut b1, mut c1) = (
                    bits.unwrap_or_else(|| vec![0; bits_len]),
                    f.unwrap_or_else(|| vec![0; len]),
                );
                let (mb, mc) = split(self.keys.component(2, total));
                crate::bits::xor_assign(&mut b1, &mb);
                crate::ring::add_assign(&mut c1, &mc);
                let mut message = b1.clone();
                message.extend_from_slice(&c1);
                self.send(0, crate::ring::to_bytes(&message))?;
                let (b2, c2) = split(self.recv_words(2, total)?);
                Ok((
                    share::RepBits { own: b1, next: b2 },
                    RepShare { own: c1, next: c2 },
                ))
            }
            _ => {
                let (mut b2, mut c2) = (
                    bits.unwrap_or_else(|| vec![0; bits_len]),
                    f.unwrap_or_else(|| vec![0; len]),
                );
                let (mb2, mc2) = split(self.keys.component(2, total));
                let (b0, c0) = split(self.keys.component(0, total));
                crate::bits::xor_assign(&mut b2, &mb2);
                crate::bits::xor_assign(&mut b2, &b0);
                crate::ring::sub_assign(&mut c2, &mc2);
                crate::ring::sub_assign(&mut c2, &c0);
                let mut message = b2.clone();
                message.extend_from_slice(&c2);
                self.send(1, crate::ring::to_bytes(&message))?;
                Ok((
                    share::RepBits { own: b2, next: b0 },
                    RepShare { own: c2, next: c0 },
                ))
            }
        }
    }
}

/// The previous party (`i - 1` modulo 3).
pub(crate) fn prev_party(i: usize) -> usize {
    (i + 2) % 3
}

/// The next party (`i + 1` modulo 3).
pub(crate) fn next_party(i: usize) -> usize {
    (i + 1) % 3
}
