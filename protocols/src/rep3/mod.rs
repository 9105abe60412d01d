//! `rep3`: three-party replicated secret sharing over Z_2^64 (Araki, Furukawa, Lindell, Nof, Ohara, CCS 2016;
//! ABY3, Mohassel and Rindal, CCS 2018), secure against one honest-but-curious party, with **no dealer**: the
//! only correlated randomness comes from pairwise PRF keys the parties agree on at job start
//! ([`keys`](self::keys)).
//!
//! Party `i` holds components `(x_i, x_{i+1})` of `x = x_0 + x_1 + x_2` ([`RepShare`]). Linear operations
//! and products by public values are local. One concept per file:
//!
//! | file | operation | rounds | bytes sent per element (P0 / P1 / P2) |
//! | --- | --- | --- | --- |
//! | `open` | reveal | 1 | 8 / 8 / 8 |
//! | `mul` | elementwise product, share x share matrix product (per output), fixed-weight product (per output) | 1 | 8 / 8 / 8 |
//! | `trunc` | divide by `2^f` (ABY3's two-party truncation, one reshare) | 1 | 8 / 0 / 0 |
//! | `sign` | sign test with `k` payloads (DReLU, ReLU, max, comparisons) | 8 | `12 + 7.75 + 8 (1 + 2k)` / `16 + 8k` / `15.75 + 8k` (bits rounded to words: see `sign.rs`) |
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
mod trunc;

use std::sync::Arc;

use crate::error::{ProtocolError, Result};
use crate::gemm::Gemm;
use crate::net::{CountedNet, Net, NetStats};
use crate::prg::Seed;
use crate::ring::FixedPoint;

use keys::PairKeys;
pub use mul::RepWeight;
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
    fn send(&mut self, to: usize, payload: Vec<u8>) -> Result<()> {
        Ok(self.net.send(to, payload)?)
    }

    /// Receives exactly `words` words from `from`.
    fn recv_words(&mut self, from: usize, words: usize) -> Result<Vec<u64>> {
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

    /// The replicated share of `sum_i z_i` from this party's summand `z` (a 3-out-of-3 additive sharing):
    /// adds a zero sharing, sends the result to the previous party and receives the next party's (one round,
    /// `z.len()` words sent).
    fn reshare(&mut self, mut z: Vec<u64>) -> Result<RepShare> {
        let alpha = self.keys.zero(z.len());
        crate::ring::add_assign(&mut z, &alpha);
        self.send(prev_party(self.me), crate::ring::to_bytes(&z))?;
        let next = self.recv_words(next_party(self.me), z.len())?;
        Ok(RepShare { own: z, next })
    }

    /// The replicated share of `f_1 + f_2`, where party 1 holds `f_1` and party 2 holds `f_2` (party 0 passes
    /// nothing): component 0 is drawn from `k_0`, component 1 is `f_1 + F(k_2)` (party 1 sends it to party 0),
    /// component 2 is `f_2 - F(k_2) - F(k_0)` (party 2 sends it to party 1). One round; party 0 sends
    /// nothing, parties 1 and 2 send `len` words each. Party 0 sees `f_1` masked by `F(k_2)`, party 1 sees
    /// `f_2` masked by `F(k_0)`: neither holds the key.
    fn reshare_pair(&mut self, f: Option<Vec<u64>>, len: usize) -> Result<RepShare> {
        match self.me {
            0 => {
                let own = self.keys.component(0, len);
                let next = self.recv_words(1, len)?;
                Ok(RepShare { own, next })
            }
            1 => {
                let mut c1 = f.unwrap_or_else(|| vec![0; len]);
                crate::ring::add_assign(&mut c1, &self.keys.component(2, len));
                self.send(0, crate::ring::to_bytes(&c1))?;
                let next = self.recv_words(2, len)?;
                Ok(RepShare { own: c1, next })
            }
            _ => {
                let mut c2 = f.unwrap_or_else(|| vec![0; len]);
                crate::ring::sub_assign(&mut c2, &self.keys.component(2, len));
                let c0 = self.keys.component(0, len);
                crate::ring::sub_assign(&mut c2, &c0);
                self.send(1, crate::ring::to_bytes(&c2))?;
                Ok(RepShare { own: c2, next: c0 })
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
