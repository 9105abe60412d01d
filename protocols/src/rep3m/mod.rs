//! `rep3m`: the malicious-with-abort variant of [`crate::rep3`] (three parties, honest majority, Z_2^64,
//! no dealer). **Status: every message is checked.** A `rep3m` party sends only (a) openings, checked by the
//! second holder's running digest, (b) reshares of ring products, matrix products, fixed-weight products
//! and bit-to-ring conversions, and (c) reshares of AND gates; (b) and (c) are proven by the distributed
//! zero-knowledge proof of `proof.rs` at every [`Party::verify`], which [`Party::release`] runs before any
//! output leaves the committee; the `rep3` steps with one-sided messages are refused inside `rep3m`
//! (`rep3::Party::refuse_unproven`). So [`crate::protocol::Protocol::verifies`] is true for it: a single
//! deviating party is caught, and nothing released, except with probability below `2^-41` per job (the
//! bound is derived in `proof.rs`). The price is local work and rounds at each check (see "Costs").
//!
//! # The technique, and why
//!
//! With replicated shares every component is held by two parties, at least one of them honest. Anything a
//! party sends that a second party can compute too is checked by that second party's hash ("jointly sent",
//! no soundness error beyond SHA-256 collisions). What one party alone can compute is its summand of a
//! product, `x_i y_i + x_i y_{i+1} + x_{i+1} y_i` (Araki, Furukawa, Lindell, Nof, Ohara, CCS 2016): a
//! deviation there adds an error of the sender's choice to the product, and only a product check catches it.
//!
//! The candidates for that check over Z_2^64, costed for our workloads (matrix products dominate; every
//! product carries 8 bytes per output element per party in `rep3`):
//!
//! - SPDZ-wise replicated MACs (Chida, Genkin, Hamada, Ikarashi, Kikuchi, Lindell, Nof, CRYPTO 2018; over
//!   rings, Abspoel, Cramer, Damgard, Escudero, Yuan, TCC 2019): every value carried twice, `[x]` and
//!   `[alpha x]`, in Z_2^(64+s). With s = 64 each product sends 2 x 16 bytes instead of 8 (4x) and every
//!   local matrix product runs twice in 128-bit arithmetic; soundness about `2^(-s + log2(s + 1))`.
//! - Sacrificing a second product (Lindell and Nof, CCS 2017; over Z_2^k, Eerikson, Keller, Orlandi,
//!   Pullonen, Puura, Simkin, ITC 2020): the same 4x, the same lift to Z_2^(64+s).
//! - Distributed zero-knowledge proofs (Boyle, Gilboa, Ishai, Nof, CCS 2019; over Z_2^k with a Galois-ring
//!   extension GR(2^64, d), Boyle, Gilboa, Ishai, Nof, ASIACRYPT 2020): each party proves to the other two,
//!   who hold its two components between them and share a PRF key it lacks, that each summand it sent is the
//!   degree-2 function of its components; one batched random linear combination per job, compressed
//!   recursively. Shares stay in Z_2^64, so the online bytes are `rep3`'s plus `O(d log N)` words per party
//!   per job; the cost is local work, `O(d)` word products per checked element (a matrix product is
//!   projected first, Freivalds-style, so its check costs `O(d (m k + k n))`, not `O(m k n)`). Soundness
//!   (Schwartz-Zippel over the Teichmueller set of GR(2^64, d), one degree-2 identity per recursion level
//!   plus the linear combination): `eps <= (1 + 2 log2 N) / 2^d` for `N` checked products; with d = 64 and
//!   `N <= 2^32`, `eps < 2^-57`, the order of spdz2k's `2^-60`.
//!
//! **Chosen: distributed zero-knowledge proofs**, because they are the only candidate whose online cost
//! can meet "rep3m <= 2x rep3": the MAC and sacrifice variants quadruple every product's bytes and
//! double-plus its local work by construction. Two changes to `rep3` go with it, since a proof covers only
//! messages that are low-degree functions of components two parties hold between them:
//! 1. the sign test and truncation must lose their one-sided messages (party 0 sends bits of
//!    `z_0 + z_1`, which only it knows): instead each component's bits are injected locally (component `j`
//!    of a binary sharing of `bits(z_j)` is held by exactly the two holders of `z_j`, no message), a
//!    carry-save layer and a carry tree of replicated AND gates give the sign bit (and, for truncation, the
//!    two small carry counts below and across bit `f`), and a two-product bit-to-ring conversion brings the
//!    bit back; every message is then a product's or an AND gate's reshare;
//! 2. the AND gates get the same proof over GF(2^64) (no Galois-ring lift needed for bits).
//!
//! # What this module implements
//!
//! - [`Party::open`]: an opening in which the component a party receives (from its previous party) is
//!   vouched for by the component's second holder (its next party) with a running SHA-256 of every value it
//!   vouches for, exchanged in one 32-byte message at [`Party::verify`] and compared in constant time. A
//!   single deviating party cannot change what an honest party opens without failing the check: the two
//!   holders of the missing component cannot both be it. Cost: one round and 8 bytes per element per party
//!   per opening (as `rep3`), plus one round and 32 bytes per party per check.
//! - The product proof (`proof.rs`, Boyle, Gilboa, Ishai, Nof, CCS 2019 and ASIACRYPT 2020): every reshare
//!   since the last check, recorded by `rep3` when it runs inside `rep3m` (`rep3`'s own runs record
//!   nothing and pay nothing), proven by its sender to the other two: ring claims over `GR(2^64, 48)`
//!   ([`crate::galois`]), matrix products projected Freivalds-style first, AND gates over `GF(2^64)`, the
//!   two instances side by side. Per check and party: `2 + 2 L` rounds and
//!   `32 + 776 L_r + 24 L_b + 1536 [ring] + 32 [bits]` bytes, `L_r`, `L_b` the two instances' levels
//!   (`log2` of their entries plus 2, rounded up to a power of two; `L = max`). Soundness per job below
//!   `2^-41`.
//! - [`Party::release`]: the output leaves the committee only after [`Party::verify`] passed (openings and
//!   products); each party hands the client both of its components, so the client receives every component
//!   twice and [`reconstruct_output`] refuses an output whose two copies of any component differ (one
//!   holder is honest). Deterministic, no soundness error.
//! - A party that stays silent is noticed by its peers' receive timeout: the job fails and nothing is
//!   released.
//! - The op families ([`crate::ops`], `ops.rs`): the sign test and the truncation with no one-sided
//!   message (`rep3/sign_injected.rs`: local bit injection of each component, a carry-save layer and carry
//!   trees of AND gates, a two-round bit-to-ring conversion): a sign test with `k` payloads is 10 rounds and
//!   about `31 + 8 + 24k` bytes per element at every party (`rep3`: 8 hops, `27 + 16k` bytes at party 0); a
//!   truncation is 4 rounds and about 33 bytes, `floor(z / 2^f)` or one less like `rep3`'s (2 hops,
//!   16 / 8 / 8 bytes); a truncating ReLU is 11 rounds and exact. Products, matrix products and
//!   fixed-weight products are `rep3`'s, recorded.
//!
//! The lab's deviations (`protocols/tests/rep3m.rs` runs each 200 times): `flip-share` changes the
//! component a party sends in one opening, `wrong-output` changes a component it hands the client,
//! `skip-round` goes silent at one opening, `wrong-product` adds an error to the first word of one reshare
//! (ring or AND gate) it sends. Inference opens nothing, so the engine's runner accepts `wrong-output` and
//! `wrong-product` for an inference (`engine/tests/rep3m_inference.rs`, 200 of 200 each) and refuses the
//! others rather than report a run they never struck.
//!
//! # Costs, and what is left
//!
//! The proof's bytes are small (a few kB per check) but its rounds (`2 + 2 L`) and local work are not.
//! The first level runs on compact vectors (coins and base values per term: `2 D` word products per ring
//! term, masked words per AND gate, and one coin map per term for each `u` fold, see `proof.rs`); the
//! later levels, on half as many entries (only those before the zero padding), cost per ring entry and
//! party about two `GR(2^64, 48)` inner-product terms and four folds, as matrix products on the gemm
//! kernel in blocks of 512 entries, folded in place, and per AND-gate entry six carry-less products (the
//! folds, and the first level's `u` folds, eight at a time where the CPU has the 512-bit instruction);
//! plus the projections of every matrix product. Measured (`veil bench --json`, in memory, batch 1, on
//! this 2-core machine shared with other jobs, so noisy; medians of five runs interleaved with the build
//! before the local-work pass of `rep3mspeed`, network-a `--reps 20`, lenet `--reps 3`): network-a
//! `rep3m` 28.4 ms against 36.4 ms before (68 rounds, 39,848 bytes per party; one check per inference
//! with `2^13` ring entries and `2^18` AND-gate entries, `L = 18`); lenet 791 ms against 1.30 s (218
//! rounds, 873,832 bytes; several checks under the proof's memory budget), and 440 ms against 657 ms in a
//! quieter earlier round. `rep3` alone (measured earlier): network-a 0.24 ms, lenet 2.1 ms. Earlier, on a quieter machine:
//! 43.4 ms and 1.42 s before the compact first level, 28.8 ms and 531 ms after it (lenet then in one check
//! of 130 rounds). So `rep3m` is still far above the "2x `rep3`" target. Known ways down, not done:
//! keeping `v` in base-ring (or bit) coordinates over the products of the challenges for several levels
//! (`2^(l-1)` base words per entry at level `l`, so `D` word products per basis element instead of `D^2`
//! per entry); `k`-ary compression (fewer rounds); tensor-structured coins, which keep `u` factored past
//! the first level; Fiat-Shamir challenges (no return messages); folds by a challenge (0/1 coefficients)
//! as shifted additions instead of the gemm kernel's word products, which are most of the local time now.

pub mod local;
mod open;
mod ops;
mod output;
pub(crate) mod proof;
pub mod transcript;

use sha2::{Digest, Sha256};

use crate::adversary::{Adversary, Deviation};
use crate::error::{ProtocolError, Result};
use crate::gemm::Gemm;
use crate::net::{Net, NetStats};
use crate::prg::Seed;
use crate::rep3;
use crate::ring::FixedPoint;

pub use output::reconstruct_output;

/// Protocol name, for messages and reports.
pub const NAME: &str = "rep3m";

/// One of the three parties: a `rep3` party plus the record of what it opened and vouched for.
pub struct Party<N: Net> {
    inner: rep3::Party<N>,
    /// SHA-256 of every component this party received in an opening (from its previous party), in order.
    received: Sha256,
    /// SHA-256 of every component this party vouches for: its `next` component of each opening, which its
    /// previous party receives from the component's other holder, in order.
    ///
    /// Invariant: at an honest party, `vouched` covers the values its previous party's `received` must
    /// cover, in the same order (both follow the SPMD sequence of openings).
    vouched: Sha256,
    /// Openings since the job started (the lab's deviations count them).
    openings: usize,
    /// A deviation this party commits (the protocol lab; never set in production).
    adversary: Option<Adversary>,
    /// Whether every opening so far passed a check and nothing was opened since.
    verified: bool,
    /// The views of the checks that passed since [`Self::take_transcripts`] (`transcript.rs`).
    transcripts: Vec<transcript::CheckView>,
    /// The last product proof's final checks as this party saw them `(as A, as B)`, until its check is
    /// recorded.
    final_checks: Option<(transcript::ProverCheck, transcript::ProverCheck)>,
}

impl<N: Net> Party<N> {
    /// Joins the committee (the `rep3` key agreement; see [`rep3::Party::new`]).
    pub fn new(
        net: N,
        key: Seed,
        fixed_point: FixedPoint,
        gemm: std::sync::Arc<dyn Gemm>,
    ) -> Result<Self> {
        let mut inner = rep3::Party::new(net, key, fixed_point, gemm)?;
        inner.log = Some(proof::ProductLog::default());
        Ok(Self {
            inner,
            received: Sha256::new(),
            vouched: Sha256::new(),
            openings: 0,
            adversary: None,
            verified: true,
            transcripts: Vec::new(),
            final_checks: None,
        })
    }

    /// Makes this party deviate as `adversary` says (the protocol lab; never set in production).
    pub fn set_adversary(&mut self, adversary: Adversary) {
        if adversary.kind == Deviation::WrongProduct {
            self.tamper_product(adversary.at, adversary.delta);
        }
        self.adversary = Some(adversary);
    }

    /// This party's index.
    pub fn id(&self) -> usize {
        self.inner.id()
    }

    /// The underlying `rep3` party: its products and AND gates are recorded and proven at the next
    /// [`Self::verify`]; its steps with one-sided messages are refused.
    pub fn rep3(&mut self) -> &mut rep3::Party<N> {
        &mut self.inner
    }

    /// Sends on every message the transport may still hold (see [`Net::flush`]).
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }

    /// Waits at the transport's start line (see [`crate::net::Net::start_line`]; not counted as traffic).
    pub fn start_line(&mut self) -> Result<()> {
        self.inner.start_line()
    }

    /// Communication so far.
    pub fn stats(&self) -> &NetStats {
        self.inner.stats()
    }

    /// Openings so far.
    pub fn openings(&self) -> usize {
        self.openings
    }

    /// Ends the job: the transport and the traffic.
    pub fn finish(self) -> (N, NetStats) {
        self.inner.finish()
    }

    /// The deviation to commit at this opening, if any (counts the opening).
    fn opening_deviation(&mut self) -> Option<Adversary> {
        let at = self.openings;
        self.openings += 1;
        self.adversary
            .filter(|a| a.at == at && matches!(a.kind, Deviation::FlipShare | Deviation::SkipRound))
    }

    /// Stays silent for the rest of the job (`skip-round`).
    fn go_silent(&mut self) -> ProtocolError {
        self.inner.drain_until_peers_give_up();
        ProtocolError::Deviated("stayed silent".into())
    }
}
