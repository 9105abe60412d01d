//! The product proof: at [`Party::verify`], each party proves to the other two that every reshare message
//! it sent since the last check was its correct summand of the product (a distributed zero-knowledge proof,
//! Boyle, Gilboa, Ishai, Nof, CCS 2019, section 4's recursive compression of an inner-product claim; over
//! `Z_2^64` through the Galois ring `GR(2^64, 48)` as in Boyle, Gilboa, Ishai, Nof, ASIACRYPT 2020, see
//! [`crate::galois`]).
//!
//! # The statement
//!
//! Prover `P = i` sent its previous party `A = i - 1` the word `m = sum_terms (x_i y_i + x_i y_{i+1} +
//! x_{i+1} y_i) + r_i - r_{i+1}`, where `r_j` is the draw of key `k_j`. `A` holds `x_i, y_i, r_i` and `m`;
//! its next party `B = i + 1` holds `x_{i+1}, y_{i+1}, r_{i+1}`. So `m` is right exactly when
//! `c + r_{i+1} = x_i y_{i+1} + x_{i+1} y_i` with `c = m - x_i y_i - r_i` known to `A`: a sum of products of
//! an `A` value with a `B` value. `A` and `B` share key `k_{i-1}`, which `P` lacks.
//!
//! # The proof, per prover
//!
//! 1. **Coins** (after the messages are fixed): `B` sends `P` a seed drawn from `k_{i-1}` (32 bytes); `A`
//!    draws the same. An elementwise claim with `o` outputs gets `theta in GR^o`; a matrix product
//!    `[m, k, n]` gets `rho in GR^m`, `sigma in GR^n` (Freivalds: `rho^T E sigma` for its error matrix `E`).
//!    All claims become one inner-product claim `<u, v> = z_A + z_B`: `u` known to `A` (`theta x_i`,
//!    `theta y_i`; `rho^T X_i`, `Y_i sigma`), `v` to `B` (`y_{i+1}`, `x_{i+1}`; `Y_{i+1} sigma`,
//!    `rho^T X_{i+1}`), `z_A = sum theta (m - r_i - x_i y_i)` (`rho^T (M - R_i) sigma - <rho^T X_i, Y_i
//!    sigma>`), `z_B = sum theta r_{i+1}` (`rho^T R_{i+1} sigma`). A wrong message leaves a non-zero error
//!    vector `e` in `Z_2^64`; the combined claim is then false except with probability `2 / 2^48` (a
//!    polynomial of degree at most 2 in the coins, non-zero modulo 2 after dividing out the largest power
//!    of 2 of `e`; see [`crate::galois`]).
//! 2. **Layout and masks**: `u` and `v` have length `2^L = 2h`. Each half starts with a mask slot, then
//!    one entry per elementwise term, then the matrix products' entries, then zero padding. Term `t` of
//!    an elementwise claim is `theta_t x_i` in `u`'s left half, `theta_t y_i` in its right half, and
//!    `y_{i+1}` / `x_{i+1}` in `v`'s (so the first fold pairs a term's two products, which share their
//!    coin); a matrix product puts `rho^T X_i` / `Y_i sigma` in `u`'s halves and `Y_{i+1} sigma` /
//!    `rho^T X_{i+1}` in `v`'s. For zero knowledge, position 0 is `(u_0, 0)` with `u_0` from `k_i` (`P`
//!    and `A`), position `h` is `(0, v_0)` with `v_0` from `k_{i+1}` (`P` and `B`). `h` is
//!    `1 + terms + projections` rounded up to a power of two, so `2h` is the entries plus two rounded up
//!    to a power of two: `L` is `log2` of that.
//! 3. **Compression**, `L` levels: with `u = (u_L, u_R)`, `v = (v_L, v_R)`, the prover's
//!    `h(X) = <u_L + X (u_R - u_L), v_L + X (v_R - v_L)> = c_0 + c_1 X + c_2 X^2` satisfies
//!    `h(0) + h(1) = <u, v>`. `P` additively shares `c_0, c_2` between the verifiers: `A`'s part from
//!    `k_i`, `B`'s part sent (2 ring elements, 768 bytes); each verifier sets its part of
//!    `c_1 = z - 2 c_0 - c_2`. `B` draws a challenge `r` from `k_{i-1}`, in the exceptional set, not 0 or 1,
//!    and sends it to `P` (8 bytes); `A` draws the same. All fold: `u <- u_L + r (u_R - u_L)` (`A`, `P`),
//!    `v` likewise (`B`, `P`), `z <- h(r)` on the parts. If the claim was false, `h` differs from the true
//!    polynomial (their sums at 0 and 1 differ), a non-zero polynomial of degree 2, so the new claim is
//!    false except with probability `2 / (2^48 - 2)`.
//! 4. **Final check**: `A` sends `B` `(u, z_A)`, `B` sends `A` `(v, z_B)` (768 bytes each way); both check
//!    `u v = z_A + z_B`, which is exact. `u` carries `u_0` times `prod_l (1 - r_l)`, `v` carries `v_0`
//!    times `r_1 prod_{l > 1} (1 - r_l)`, units, so each is uniform to the verifier that receives it;
//!    every share of `c` is masked by a key that verifier lacks: a single verifier's view is simulated
//!    from nothing.
//!
//! **The first level is compact.** Before the first fold, a `u` is kept as every term's coin and its
//! two base values (`x_i`, `y_i`), a `v` as its base values, plus the projections and the masks
//! ([`Compact`]): the first level's `c_0 = sum_t theta_t x_i y_{i+1} + ...` and
//! `c_2 = sum_t theta_t (y_i - x_i) (x_{i+1} - y_{i+1}) - u_0 v_0 + ...` take `D` word products per term
//! (a masked word per AND gate) instead of `D^2` ring work, and the first fold writes the half-length
//! vectors directly (`theta_t x_i + (y_i - x_i) r theta_t`, `y_{i+1} + (x_{i+1} - y_{i+1}) r`); the
//! full-length extension vectors are never built. The messages are those of the full vectors.
//!
//! **AND gates** (`rep3`'s `and_bits`, 64 gates a word) are the same statement over `GF(2^64)`
//! ([`crate::galois::Gf64`]): every bit of every word is a gate `o` with its own `theta_o`; `u` entries are
//! `theta_o x_P`, `theta_o y_P` (0 or `theta_o`), `v` entries the bits `y_{P+1}`, `x_{P+1}`; addition is XOR,
//! so `c_1 = z + c_2`. The two instances run side by side: each level's message carries the active
//! instances' parts, each return message their challenges.
//!
//! # Soundness
//!
//! A check fails to catch a deviating prover (the only one that can cheat: the honest parties' claims are
//! true) with probability at most
//! `eps <= (2 + 2 L_r) / (2^48 - 2) + (1 + 2 L_b) / (2^64 - 2)`: the batching (degree 2 in the coins for a
//! matrix product, 1 otherwise) plus two points per level of each instance. For `L_r, L_b <= 40` (up to
//! `2^40` entries) `eps < 82 / 2^48 + 81 / 2^64 < 2^-41.6`. Per job the same bound holds: every reshare is
//! proven in exactly one check, and the first failed check aborts the job, so a deviating party whose
//! cheating is ever caught releases nothing afterwards; its chance that some cheat goes through is at most
//! the chance for the first check it cheats in.
//!
//! # Cost
//!
//! Per check, every party alike (it is one prover, one `A` and one `B`): `2 + 2 L` rounds as
//! [`crate::net::NetStats`] counts them, `L = max(L_r, L_b)`; bytes sent
//! `32 + L_r (768 + 8) + L_b (16 + 8) + 2 (768 [ring] + 16 [bits])`; messages `3 + 2 L`. Local work,
//! per party: at the first level (compact), `2 D` word products per elementwise term for `c_0` and
//! `c_2`, and for each of the two `u` folds the `D x D` map of the challenge applied to every term's coin
//! on the gemm kernel (`v` folds are masked words); at the later levels, per instance, the prover's two
//! inner products (the ring's as `48 x len x 48` matrix products on the gemm kernel) and four folds by
//! the challenge (a ring challenge has 0/1 coefficients: its map is a 0/1 matrix), all on the entries
//! before the zero padding only (`min(N, 2^l)` entries at the level of length `2^l`, `N` the entries
//! after the first fold: a padding up to twice the entries costs nothing), in blocks of 512 entries
//! through cache-sized scratch, the vectors folded in place; the projections of a
//! `[m, k, n]` matrix product are three products on the gemm kernel, `48 (m k + k n + m n)` word
//! products, per role. AND gates alike over `GF(2^64)` with carry-less products (at the first level,
//! masked words and one carry-less product per gate for each `u` fold).
//!
//! Coverage: every reshare of a product, matrix product, fixed-weight product, bit-to-ring conversion and
//! AND gate. `rep3`'s steps with one-sided messages are refused inside `rep3m`.

use crate::error::{ProtocolError, Result};
use crate::galois::{words_of, words_of_mut, Ext, Gf64, Gr, D};
use crate::gemm::Gemm;
use crate::net::Net;
use crate::prg::{Prg, Seed};
use crate::rep3::{next_party, prev_party, RepBits, RepShare};

use super::Party;

/// How a party's summand of one reshare was computed from its components (`rep3`'s product formula
/// `x_own (y_own + y_next) + x_next y_own`); a reshare's claims cover its words in order.
pub(crate) enum Claim {
    /// Term `t` adds `x_t y_t`'s summand to output `out[t]` (output `t` when `out` is `None`).
    Elementwise {
        x: RepShare,
        y: RepShare,
        out: Option<Vec<usize>>,
        outputs: usize,
    },
    /// The `m x n` product of `x` (`m x k`) and `y` (`k x n`), row-major.
    Matmul {
        x: RepShare,
        y: RepShare,
        dims: [usize; 3],
    },
}

impl Claim {
    /// `x * y` elementwise.
    pub(crate) fn elementwise(x: RepShare, y: RepShare) -> Claim {
        let outputs = x.len();
        Claim::Elementwise {
            x,
            y,
            out: None,
            outputs,
        }
    }

    /// Words of the reshare this claim covers.
    fn outputs(&self) -> usize {
        match self {
            Claim::Elementwise { outputs, .. } => *outputs,
            Claim::Matmul {
                dims: [m, _, n], ..
            } => m * n,
        }
    }
}

/// One recorded reshare at this party.
pub(crate) struct Reshare {
    /// How this party's summand was computed.
    pub(crate) claims: Vec<Claim>,
    /// The zero sharing's draw from this party's own key (`r_me`).
    pub(crate) own_draw: Vec<u64>,
    /// The draw from its next key (`r_{me+1}`).
    pub(crate) next_draw: Vec<u64>,
    /// The next party's message.
    pub(crate) received: Vec<u64>,
}

/// One recorded AND-gate reshare at this party (`rep3`'s `and_bits`): words of 64 gates each.
pub(crate) struct BitReshare {
    /// The gates' left inputs.
    pub(crate) x: RepBits,
    /// Their right inputs.
    pub(crate) y: RepBits,
    /// The XOR zero sharing's draw from this party's own key.
    pub(crate) own_draw: Vec<u64>,
    /// The draw from its next key.
    pub(crate) next_draw: Vec<u64>,
    /// The next party's message.
    pub(crate) received: Vec<u64>,
}

/// Every reshare since the last check, and the lab's `wrong-product` deviation.
#[derive(Default)]
pub(crate) struct ProductLog {
    reshares: Vec<Reshare>,
    bits: Vec<BitReshare>,
    /// Entries of the proof's ring side vectors the recorded claims make: `len` per elementwise claim, `2 k`
    /// per `[m, k, n]` matrix product (its two Freivalds projections), each an extension element.
    ///
    /// Invariant: the sum over `reshares`, zero when it is empty.
    ring_entries: usize,
    /// AND gates recorded: 64 per word (the length of the proof's bit side vectors).
    ///
    /// Invariant: the sum over `bits`, zero when it is empty.
    bit_entries: usize,
    /// Reshares so far in the job (the lab counts them).
    count: usize,
    /// `(reshare index, error)`: the lab's deviation, adding the error to the first word sent then.
    tamper: Option<(usize, u64)>,
}

impl ProductLog {
    /// Adds the lab's error to `sent` if this is the reshare it strikes (counts the reshare).
    pub(crate) fn tamper(&mut self, sent: &mut [u64]) {
        if let (Some((at, delta)), Some(w)) = (self.tamper, sent.first_mut()) {
            if at == self.count {
                *w = w.wrapping_add(delta);
            }
        }
        self.count += 1;
    }

    /// Records a reshare.
    pub(crate) fn push(&mut self, r: Reshare) {
        let entries: usize = r
            .claims
            .iter()
            .map(|c| match c {
                Claim::Elementwise { x, .. } => x.len(),
                Claim::Matmul {
                    dims: [_, k, _], ..
                } => 2 * k,
            })
            .sum();
        self.ring_entries = self.ring_entries.saturating_add(entries);
        self.reshares.push(r);
    }

    /// Records an AND-gate reshare.
    pub(crate) fn push_bits(&mut self, r: BitReshare) {
        self.bit_entries = self.bit_entries.saturating_add(64 * r.x.own.len());
        self.bits.push(r);
    }

    /// Whether the reshares recorded since the last check reach a [`CHECK_BUDGET`] (the caller then runs a
    /// check before it goes on, so that one proof's memory stays bounded).
    pub(crate) fn check_due(&self) -> bool {
        self.ring_entries >= CHECK_BUDGET.ring || self.bit_entries >= CHECK_BUDGET.bits
    }

    /// Whether no reshare awaits a proof.
    pub(crate) fn is_empty(&self) -> bool {
        self.reshares.is_empty() && self.bits.is_empty()
    }

    /// Makes the `at`-th reshare of the job carry `delta` in its first word (the protocol lab).
    pub(crate) fn set_tamper(&mut self, at: usize, delta: u64) {
        self.tamper = Some((at, delta));
    }

    /// Reshares so far in the job.
    pub(crate) fn count(&self) -> usize {
        self.count
    }
}

/// The most entries one proof takes before [`Party`] runs a check in the middle of an inference (ring side
/// vector entries, each an element of `GR(2^64, 48)`, 384 bytes, several copies per role; and AND gates,
/// one `GF(2^64)` element each). A check is a whole `verify` (openings and products) at a
/// point every party reaches together (the counts follow the public SPMD sequence), so splitting an
/// inference's reshares over several checks leaves the soundness per job as derived above (each reshare is
/// proven in exactly one check; the first failed check aborts) and changes only rounds and bytes: `2 + 2 L`
/// rounds per extra check. network-a stays below both budgets (one check per inference, as pinned); lenet
/// takes several; a MiniLM inference would otherwise hold all its reshares in one proof (more than the
/// 24 GB of this machine at 2 tokens).
pub(crate) struct CheckBudget {
    /// Ring entries.
    pub(crate) ring: usize,
    /// AND gates.
    pub(crate) bits: usize,
}

/// See [`CheckBudget`].
pub(crate) const CHECK_BUDGET: CheckBudget = CheckBudget {
    ring: 1 << 16,
    bits: 1 << 20,
};

/// Derivation labels of the proof's streams (the index is the prover).
const COINS: u64 = 0x7072_6f6f_6601;
const PROVER_A: u64 = 0x7072_6f6f_6602;
const PROVER_B: u64 = 0x7072_6f6f_6603;
const CHALLENGE: u64 = 0x7072_6f6f_6604;

/// The coins of one claim.
enum Coins {
    Theta(Vec<Gr>),
    RhoSigma(Vec<Gr>, Vec<Gr>),
}

fn draw_coins(log: &[Reshare], prg: &mut Prg) -> Vec<Vec<Coins>> {
    log.iter()
        .map(|r| {
            r.claims
                .iter()
                .map(|c| match c {
                    Claim::Elementwise { outputs, .. } => {
                        Coins::Theta(Gr::random_vec(prg, *outputs))
                    }
                    Claim::Matmul {
                        dims: [m, _, n], ..
                    } => Coins::RhoSigma(Gr::random_vec(prg, *m), Gr::random_vec(prg, *n)),
                })
                .collect()
        })
        .collect()
}

/// Appends `rho^T X` for `X` (`m x k`) to `dst` (`k` entries), as one `D x m x k` matrix product on
/// `gemm` (row `p` of the result is coefficient `p` of every entry). `rho` has `m` entries.
fn left(gemm: &dyn Gemm, rho: &[Gr], x: &[u64], m: usize, k: usize, dst: &mut Vec<Gr>) {
    let mut rt = vec![0u64; D * m];
    for (r, g) in rho.iter().enumerate().take(m) {
        for (p, &c) in g.0.iter().enumerate() {
            rt[p * m + r] = c;
        }
    }
    let mut out = vec![0u64; D * k];
    gemm.gemm(D, m, k, &rt, x, &mut out);
    let start = dst.len();
    dst.resize(start + k, Gr::ZERO);
    for (p, row) in out.chunks_exact(k.max(1)).enumerate() {
        for (g, &c) in dst[start..].iter_mut().zip(row) {
            g.0[p] = c;
        }
    }
}

/// Appends `Y sigma` for `Y` (`k x n`) to `dst` (`k` entries), as one `k x n x D` matrix product on
/// `gemm` written straight into `dst`'s words (`sigma`'s first `n` entries are the row-major `n x D`
/// matrix of their coefficients).
fn right(gemm: &dyn Gemm, y: &[u64], sigma: &[Gr], k: usize, n: usize, dst: &mut Vec<Gr>) {
    let start = dst.len();
    dst.resize(start + k, Gr::ZERO);
    gemm.gemm(
        k,
        n,
        D,
        y,
        words_of(&sigma[..n]),
        words_of_mut(&mut dst[start..]),
    );
}

/// `rho^T S sigma` for `S` (`m x n`).
fn bilinear(gemm: &dyn Gemm, rho: &[Gr], s: &[u64], sigma: &[Gr], m: usize, n: usize) -> Gr {
    let mut t = Vec::with_capacity(m);
    right(gemm, s, sigma, m, n, &mut t);
    Gr::inner_gemm(rho, &t, gemm)
}

/// Which components a role reads: the prover's own pair, `A`'s view of the next party (its `next`
/// components, the message received), `B`'s view of the previous party (its `own` components).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `u` and `z_A` from the prover's component (`next` at `A`, `own` at the prover).
    A { at_prover: bool },
    /// `v` and `z_B` from the component after the prover's (`own` at `B`, `next` at the prover).
    B { at_prover: bool },
}

/// A side vector before the first fold, compact: each half of length `half` is slot 0, then one entry per
/// elementwise term, then the matrix products' ring entries, then zeros. A `u` (side `A`) holds
/// `theta_t a_t` (left half) and `theta_t b_t` (right) at term `t`, a `v` (side `B`) the base values `a_t`
/// and `b_t`; so the first level's products and folds cost base-ring (or bit) work per term, and the
/// full-length vectors are never built.
struct Compact<E> {
    /// `u`: every term's coin ([`Ext::WORDS`] words each); `None` for `v`.
    theta: Option<Vec<u64>>,
    /// The terms' left and right base values ([`Ext::PER_WORD`] a word).
    a: Vec<u64>,
    b: Vec<u64>,
    /// Elementwise terms.
    terms: usize,
    /// The matrix products' entries of the left and right halves.
    dense: (Vec<E>, Vec<E>),
    /// Slot 0 of the left and right halves (the mask of `u` left, of `v` right).
    slot: (E, E),
}

impl<E: Ext> Compact<E> {
    fn new(coins: bool) -> Self {
        Self {
            theta: coins.then(Vec::new),
            a: Vec::new(),
            b: Vec::new(),
            terms: 0,
            dense: (Vec::new(), Vec::new()),
            slot: (E::default(), E::default()),
        }
    }

    /// Half the padded length: the mask slot, the terms and the ring entries, to a power of two.
    fn half(&self) -> usize {
        (1 + self.terms + self.dense.0.len()).next_power_of_two()
    }

    /// The first level's `(c_0, c_2)` of `<u, v>` (`self` is `u`).
    fn first_message(&self, v: &Compact<E>, gemm: &dyn Gemm) -> (E, E) {
        let (t0, t2) = E::compact_terms(
            self.theta.as_deref().unwrap_or_default(),
            (&self.a, &self.b),
            (&v.a, &v.b),
            self.terms.min(v.terms),
        );
        let (ul, ur) = (&self.dense.0, &self.dense.1);
        let (vl, vr) = (&v.dense.0, &v.dense.1);
        let c0 = self
            .slot
            .0
            .times(&v.slot.0)
            .plus(&t0)
            .plus(&E::inner_product(ul, vl, gemm));
        let c2 = self
            .slot
            .1
            .minus(&self.slot.0)
            .times(&v.slot.1.minus(&v.slot.0))
            .plus(&t2)
            .plus(&E::inner_diff(ul, ur, vl, vr, gemm));
        (c0, c2)
    }

    /// The vector after the first fold by the challenge of `w`: `v_L + r (v_R - v_L)`, without its zero
    /// padding: `1 + terms + dense` entries of the [`Self::half`] (see [`Instance`]). Folds the matrix
    /// products' entries in place (the left half's), so it consumes the compact vector.
    fn fold(mut self, w: u64, gemm: &dyn Gemm) -> Vec<E> {
        let mut out = Vec::with_capacity(1 + self.terms + self.dense.0.len());
        let (l, r) = self.slot;
        out.push(l.plus(&E::times_challenge(w, &r.minus(&l))));
        match &self.theta {
            Some(theta) => {
                E::compact_fold_u(theta, (&self.a, &self.b), self.terms, w, &mut out, gemm)
            }
            None => E::compact_fold_v(&self.a, &self.b, self.terms, w, &mut out),
        }
        let (dl, dr) = &mut self.dense;
        E::fold_pair(dl, dr, w, gemm);
        out.extend_from_slice(dl);
        out
    }
}

/// The components of `s` a role reads (see [`Side`]).
fn pick(s: &RepShare, from_own: bool) -> &[u64] {
    let (own, next) = s.components();
    if from_own {
        own
    } else {
        next
    }
}

/// `u` (side `A`: `theta_o x_P` left, `theta_o y_P` right; `rho^T X_P` left, `Y_P sigma` right) or `v`
/// (side `B`: `y_{P+1}` left, `x_{P+1}` right; `Y_{P+1} sigma` left, `rho^T X_{P+1}` right) for every
/// claim, compact, and the side's part of `z` (the prover needs no `z`: it is computed only by the
/// verifiers).
fn side_vector(
    log: &[Reshare],
    coins: &[Vec<Coins>],
    side: Side,
    gemm: &dyn Gemm,
) -> (Compact<Gr>, Gr) {
    let is_a = matches!(side, Side::A { .. });
    let mut vec = Compact::new(is_a);
    let (terms, dense) = log
        .iter()
        .flat_map(|r| &r.claims)
        .fold((0, 0), |(t, d), c| match c {
            Claim::Elementwise { x, .. } => (t + x.len(), d),
            Claim::Matmul {
                dims: [_, k, _], ..
            } => (t, d + k),
        });
    if let Some(t) = vec.theta.as_mut() {
        t.reserve_exact(terms * D);
    }
    vec.a.reserve_exact(terms);
    vec.b.reserve_exact(terms);
    vec.dense.0.reserve_exact(dense);
    vec.dense.1.reserve_exact(dense);
    let mut z = Gr::ZERO;
    let from_own = matches!(
        side,
        Side::A { at_prover: true } | Side::B { at_prover: false }
    );
    let verifier = !matches!(
        side,
        Side::A { at_prover: true } | Side::B { at_prover: true }
    );
    for (r, coins) in log.iter().zip(coins) {
        let mut at = 0;
        for (claim, c) in r.claims.iter().zip(coins) {
            let outputs = claim.outputs();
            // The verifier's known scalar per output: A: m - r_i (minus x_i y_i below); B: r_{i+1}.
            let mut known: Vec<u64> = if verifier {
                match side {
                    Side::A { .. } => crate::ring::sub(
                        &r.received[at..at + outputs],
                        &r.next_draw[at..at + outputs],
                    ),
                    Side::B { .. } => r.own_draw[at..at + outputs].to_vec(),
                }
            } else {
                Vec::new()
            };
            match (claim, c) {
                (Claim::Elementwise { x, y, out, .. }, Coins::Theta(theta)) => {
                    let (xs, ys) = (pick(x, from_own), pick(y, from_own));
                    vec.terms += xs.len();
                    if is_a {
                        vec.a.extend_from_slice(xs);
                        vec.b.extend_from_slice(ys);
                        for (t, (&xt, &yt)) in xs.iter().zip(ys).enumerate() {
                            let o = out.as_ref().map_or(t, |m| m[t]);
                            if let Some(th) = vec.theta.as_mut() {
                                th.extend_from_slice(&theta[o].0);
                            }
                            if verifier {
                                known[o] = known[o].wrapping_sub(xt.wrapping_mul(yt));
                            }
                        }
                    } else {
                        vec.a.extend_from_slice(ys);
                        vec.b.extend_from_slice(xs);
                    }
                    if verifier {
                        for (th, &k) in theta.iter().zip(&known) {
                            z.add_scaled(th, k);
                        }
                    }
                }
                (
                    Claim::Matmul {
                        x,
                        y,
                        dims: [m, k, n],
                    },
                    Coins::RhoSigma(rho, sigma),
                ) => {
                    let (xs, ys) = (pick(x, from_own), pick(y, from_own));
                    // `u`: `rho^T X` left, `Y sigma` right; `v` the other way round.
                    let (p_dst, q_dst) = if is_a {
                        (&mut vec.dense.0, &mut vec.dense.1)
                    } else {
                        (&mut vec.dense.1, &mut vec.dense.0)
                    };
                    let at = p_dst.len();
                    left(gemm, rho, xs, *m, *k, p_dst);
                    right(gemm, ys, sigma, *k, *n, q_dst);
                    if verifier {
                        z.add_assign(&bilinear(gemm, rho, &known, sigma, *m, *n));
                        if is_a {
                            z = z.sub(&Gr::inner_gemm(&p_dst[at..], &q_dst[at..], gemm));
                        }
                    }
                }
                _ => unreachable!("coins are drawn per claim kind"),
            }
            at += outputs;
        }
    }
    (vec, z)
}

/// The AND gates' side vectors over `GF(2^64)`, compact: every bit of every word is a gate, output `o` in
/// order. `A`: `u` entries `theta_o x_P` (left) and `theta_o y_P` (right), and
/// `z_A = sum theta_o (m ^ r_P ^ x_P y_P)`; `B`: `v` entries `y_{P+1}` (left) and `x_{P+1}` (right) as 0
/// or 1, and `z_B = sum theta_o r_{P+1}`; the prover both vectors.
fn bit_vectors(log: &[BitReshare], theta: &mut Prg, side: Side) -> (Compact<Gf64>, Gf64) {
    let is_a = matches!(side, Side::A { .. });
    let mut vec = Compact::new(is_a);
    let words: usize = log.iter().map(|r| r.x.own.len()).sum();
    vec.terms = 64 * words;
    vec.a.reserve(words);
    vec.b.reserve(words);
    let mut z = 0u64;
    let from_own = matches!(
        side,
        Side::A { at_prover: true } | Side::B { at_prover: false }
    );
    let verifier = !matches!(
        side,
        Side::A { at_prover: true } | Side::B { at_prover: true }
    );
    let mut coins = vec![0u64; if verifier || is_a { 64 * words } else { 0 }];
    theta.fill(&mut coins);
    let mut at = 0;
    for r in log {
        let (xs, ys) = if from_own {
            (&r.x.own, &r.y.own)
        } else {
            (&r.x.next, &r.y.next)
        };
        if is_a {
            vec.a.extend_from_slice(xs);
            vec.b.extend_from_slice(ys);
        } else {
            vec.a.extend_from_slice(ys);
            vec.b.extend_from_slice(xs);
        }
        if verifier {
            for (w, (&xw, &yw)) in xs.iter().zip(ys).enumerate() {
                let known = match side {
                    Side::A { .. } => r.received[w] ^ r.next_draw[w] ^ (xw & yw),
                    Side::B { .. } => r.own_draw[w],
                };
                for (b, &th) in coins[64 * (at + w)..][..64].iter().enumerate() {
                    z ^= th & 0u64.wrapping_sub((known >> b) & 1);
                }
            }
        }
        at += xs.len();
    }
    if is_a {
        vec.theta = Some(coins);
    }
    (vec, Gf64(z))
}

/// `v <- v_L + r (v_R - v_L)` for the challenge `r` of the word `w`, `v` of padded length `len` held
/// without its zeros (see [`Instance`]): its first `min(v.len(), len / 2)` entries pair with the rest
/// (zero past `v`'s end), and the zeros past them stay zeros.
fn fold<E: Ext>(v: &mut Vec<E>, len: usize, w: u64, gemm: &dyn Gemm) {
    let keep = v.len().min(len / 2);
    let (lo, hi) = v.split_at_mut(keep);
    E::fold_pair(lo, hi, w, gemm);
    v.truncate(keep);
}

/// Entry 0 of a folded vector (zero if it holds no entry: see [`Instance`]).
fn head<E: Ext>(v: &[E]) -> E {
    v.first().copied().unwrap_or_default()
}

/// The halves of `v` (padded length `len`, held without its zeros) as `(left, right)` slices, the right
/// one no longer than the left (zeros past both ends).
fn halves<E>(v: &[E], len: usize) -> (&[E], &[E]) {
    v.split_at(v.len().min(len / 2))
}

/// A verifier's part of `z` after a level: `c_0 + c_1 r + c_2 r^2` with `c_1 = z - 2 c_0 - c_2`.
fn next_claim<E: Ext>(z: &E, c0: &E, c2: &E, r: &E) -> E {
    let c1 = z.minus(&c0.plus(c0)).minus(c2);
    c0.plus(&r.times(&c1.plus(&r.times(c2))))
}

/// One proof instance (ring products over `GR(2^64, 48)`, or AND gates over `GF(2^64)`) at one party in
/// its three roles: prover (`pu`, `pv`), `A` of the next party (`au`, `az`), `B` of the previous (`bv`,
/// `bz`), with the streams each role shares with its partners.
///
/// After the first fold the vectors have the padded length `len` (a power of two) but hold only their
/// entries before the padding: every entry past a vector's end is zero. A fold keeps that true (zero
/// pairs with zero give zero), so the levels do no work on padding; the four vectors, built from the
/// same log, always hold the same number of entries.
struct Instance<E: Ext> {
    /// The four vectors before the first fold, compact (`pu`, `pv`, `au`, `bv`); `None` after it.
    first: Option<Box<[Compact<E>; 4]>>,
    /// The vectors' padded length after the first fold (0 before it).
    len: usize,
    pu: Vec<E>,
    pv: Vec<E>,
    au: Vec<E>,
    az: E,
    bv: Vec<E>,
    bz: E,
    /// The prover's stream shared with its `A` (key `k_me`).
    p_pa: Prg,
    /// `A`'s copy of its prover's stream (key `k_{me+1}`).
    a_pa: Prg,
    /// `A`'s challenge stream, shared with `B` (key `k_me`).
    a_chal: Prg,
    /// `B`'s challenge stream, shared with `A` (key `k_{me+1}`).
    b_chal: Prg,
    /// `B`'s parts of the current level's `c_0`, `c_2`.
    b_parts: (E, E),
}

/// Seeds of one instance's streams at one party.
struct Keys<'a> {
    own: &'a Seed,
    next: &'a Seed,
    me: u64,
    prev: u64,
    next_party: u64,
    /// Distinguishes the instances' streams.
    kind: u64,
}

impl Keys<'_> {
    fn prg(&self, key: &Seed, label: u64, prover: u64) -> Prg {
        Prg::new(&key.derive(label + (self.kind << 8), prover))
    }
}

impl<E: Ext> Instance<E> {
    /// The instance from the compact side vectors (masks not yet in place) of the three roles: `u`'s
    /// mask goes to slot 0 of its left half, `v`'s to slot 0 of its right half.
    fn new(
        k: &Keys<'_>,
        (mut pu, mut pv): (Compact<E>, Compact<E>),
        (mut au, az): (Compact<E>, E),
        (mut bv, bz): (Compact<E>, E),
    ) -> Self {
        let mut p_pa = k.prg(k.own, PROVER_A, k.me);
        let mut p_pb = k.prg(k.next, PROVER_B, k.me);
        let mut a_pa = k.prg(k.next, PROVER_A, k.next_party);
        let mut b_pb = k.prg(k.own, PROVER_B, k.prev);
        pu.slot.0 = E::uniform(&mut p_pa);
        pv.slot.1 = E::uniform(&mut p_pb);
        au.slot.0 = E::uniform(&mut a_pa);
        bv.slot.1 = E::uniform(&mut b_pb);
        Self {
            first: Some(Box::new([pu, pv, au, bv])),
            len: 0,
            pu: Vec::new(),
            pv: Vec::new(),
            au: Vec::new(),
            bv: Vec::new(),
            az,
            bz,
            p_pa,
            a_pa,
            a_chal: k.prg(k.own, CHALLENGE, k.next_party),
            b_chal: k.prg(k.next, CHALLENGE, k.prev),
            b_parts: (E::default(), E::default()),
        }
    }

    /// Whether a compression level is left.
    fn levels_left(&self) -> bool {
        self.first.is_some() || self.len > 1
    }

    /// The prover's message of this level (`B`'s parts of `c_0`, `c_2`), appended to `out`.
    fn prover_message(&mut self, out: &mut Vec<u64>, gemm: &dyn Gemm) {
        let (c0, c2) =
            match &self.first {
                Some(f) => f[0].first_message(&f[1], gemm),
                None => {
                    // Past the right halves' ends both differences are `-u_L`, `-v_L`: their product is
                    // `u_L v_L` there.
                    let ((ul, ur), (vl, vr)) =
                        (halves(&self.pu, self.len), halves(&self.pv, self.len));
                    let n = ur.len().min(vr.len());
                    let c2 = E::inner_diff(&ul[..n], ur, &vl[..n], vr, gemm)
                        .plus(&E::inner_product(&ul[n..], &vl[n..], gemm));
                    (E::inner_product(ul, vl, gemm), c2)
                }
            };
        let (s0, s2) = (E::uniform(&mut self.p_pa), E::uniform(&mut self.p_pa));
        c0.minus(&s0).put(out);
        c2.minus(&s2).put(out);
    }

    /// `B` takes the prover's message (exactly `2 WORDS` words) and draws the challenge it sends back.
    fn b_receive(&mut self, words: &[u64]) -> Option<u64> {
        let (w0, w2) = words.split_at(E::WORDS);
        self.b_parts = (E::take(w0)?, E::take(w2)?);
        Some(E::challenge_word(&mut self.b_chal))
    }

    /// Ends the level: the prover folds with the challenge it received, `A` with its own draw, `B` with
    /// the one it sent.
    fn fold_level(&mut self, prover_challenge: u64, b_challenge: u64, gemm: &dyn Gemm) {
        let rb = E::from_challenge(b_challenge);
        let (a0, a2) = (E::uniform(&mut self.a_pa), E::uniform(&mut self.a_pa));
        let wa = E::challenge_word(&mut self.a_chal);
        let ra = E::from_challenge(wa);
        match self.first.take() {
            Some(f) => {
                let [pu, pv, au, bv] = *f;
                self.len = pu.half();
                self.pu = pu.fold(prover_challenge, gemm);
                self.pv = pv.fold(prover_challenge, gemm);
                self.au = au.fold(wa, gemm);
                self.bv = bv.fold(b_challenge, gemm);
            }
            None => {
                let len = self.len;
                fold(&mut self.pu, len, prover_challenge, gemm);
                fold(&mut self.pv, len, prover_challenge, gemm);
                fold(&mut self.au, len, wa, gemm);
                fold(&mut self.bv, len, b_challenge, gemm);
                self.len = len / 2;
            }
        }
        self.az = next_claim(&self.az, &a0, &a2, &ra);
        let (b0, b2) = self.b_parts;
        self.bz = next_claim(&self.bz, &b0, &b2, &rb);
    }

    /// `A`'s final message `(u, z_A)` and `B`'s `(v, z_B)`.
    fn final_messages(&self, a_out: &mut Vec<u64>, b_out: &mut Vec<u64>) {
        head(&self.au).put(a_out);
        self.az.put(a_out);
        head(&self.bv).put(b_out);
        self.bz.put(b_out);
    }

    /// `(A accepts, B accepts)` from `B`'s final message (to `A`) and `A`'s (to `B`).
    fn check(&self, from_b: &[u64], from_a: &[u64]) -> (bool, bool) {
        let w = E::WORDS;
        let ok_a = match (E::take(&from_b[..w]), E::take(&from_b[w..])) {
            (Some(v), Some(zb)) => head(&self.au).times(&v) == self.az.plus(&zb),
            _ => false,
        };
        let ok_b = match (E::take(&from_a[..w]), E::take(&from_a[w..])) {
            (Some(u), Some(za)) => u.times(&head(&self.bv)) == za.plus(&self.bz),
            _ => false,
        };
        (ok_a, ok_b)
    }
}

impl<N: Net> Party<N> {
    /// Whether a reshare since the last check awaits its proof.
    pub(crate) fn products_pending(&self) -> bool {
        self.inner.log.as_ref().is_some_and(|l| !l.is_empty())
    }

    /// Makes this party's `at`-th reshare carry `delta` (the lab's `wrong-product`).
    pub(crate) fn tamper_product(&mut self, at: usize, delta: u64) {
        if let Some(log) = self.inner.log.as_mut() {
            log.set_tamper(at, delta);
        }
    }

    /// Runs a check now if the reshares since the last one reach [`CHECK_BUDGET`] (called after every op
    /// that reshares; every party reaches the same decision at the same op).
    pub(crate) fn check_if_due(&mut self) -> Result<()> {
        if self.inner.log.as_ref().is_some_and(ProductLog::check_due) {
            self.verify()?;
        }
        Ok(())
    }

    /// Reshares (ring and AND gates) so far in the job.
    pub fn reshares(&self) -> usize {
        self.inner.log.as_ref().map_or(0, ProductLog::count)
    }

    /// Runs the proof for every reshare since the last check, this party in all three roles (see the
    /// module doc), the ring instance and the AND-gate instance side by side: `2 + 2 L` rounds with
    /// `L = max(L_ring, L_bits)`. Fails with [`ProtocolError::Verification`] if a proof this party verifies
    /// does not check out. Nothing to prove (no reshare since the last check) costs nothing.
    pub(crate) fn prove_products(&mut self) -> Result<()> {
        let (log, bit_log) = match self.inner.log.as_mut() {
            Some(l) if !l.is_empty() => {
                l.ring_entries = 0;
                l.bit_entries = 0;
                (std::mem::take(&mut l.reshares), std::mem::take(&mut l.bits))
            }
            _ => return Ok(()),
        };
        let me = self.id();
        let (prev, next) = (prev_party(me), next_party(me));
        // This party is the prover `me`, `A` of prover `next` and `B` of prover `prev`.
        let (own_key, next_key) = self.inner.fork_keys();
        // Coins: as B (key k_{prev - 1} = k_{me + 1}) send prover `prev` its seed; as A (key k_me) draw
        // prover `next`'s; as the prover, receive ours from `next`.
        let coins_b = next_key.derive(COINS, prev as u64);
        let coins_a = own_key.derive(COINS, next as u64);
        self.inner.send(prev, coins_b.0.to_vec())?;
        let got = self.inner.recv_words(next, 4)?;
        let mut mine = [0u8; 32];
        mine.copy_from_slice(&crate::ring::to_bytes(&got));
        let coins_p = Seed(mine);

        let keys = |kind| Keys {
            own: &own_key,
            next: &next_key,
            me: me as u64,
            prev: prev as u64,
            next_party: next as u64,
            kind,
        };
        let gemm = self.inner.gemm_arc();
        let gemm = gemm.as_ref();
        let ring = (!log.is_empty()).then(|| {
            let draw = |seed: &Seed| draw_coins(&log, &mut Prg::new(seed));
            let (cp, ca, cb) = (draw(&coins_p), draw(&coins_a), draw(&coins_b));
            let (pu, _) = side_vector(&log, &cp, Side::A { at_prover: true }, gemm);
            let (pv, _) = side_vector(&log, &cp, Side::B { at_prover: true }, gemm);
            Instance::<Gr>::new(
                &keys(0),
                (pu, pv),
                side_vector(&log, &ca, Side::A { at_prover: false }, gemm),
                side_vector(&log, &cb, Side::B { at_prover: false }, gemm),
            )
        });
        drop(log);
        let bits = (!bit_log.is_empty()).then(|| {
            let theta = |seed: &Seed| Prg::new(&seed.derive(COINS, 1));
            let (pu, _) = bit_vectors(&bit_log, &mut theta(&coins_p), Side::A { at_prover: true });
            let (pv, _) = bit_vectors(&bit_log, &mut theta(&coins_p), Side::B { at_prover: true });
            Instance::<Gf64>::new(
                &keys(1),
                (pu, pv),
                bit_vectors(&bit_log, &mut theta(&coins_a), Side::A { at_prover: false }),
                bit_vectors(&bit_log, &mut theta(&coins_b), Side::B { at_prover: false }),
            )
        });
        drop(bit_log);
        let (mut ring, mut bits) = (ring, bits);

        loop {
            let ring_on = ring.as_ref().is_some_and(Instance::levels_left);
            let bits_on = bits.as_ref().is_some_and(Instance::levels_left);
            if !ring_on && !bits_on {
                break;
            }
            // Prover: this level's parts for B, ring instance first.
            let mut msg = Vec::new();
            let mut expect = 0;
            if let (true, Some(i)) = (ring_on, ring.as_mut()) {
                i.prover_message(&mut msg, self.inner.gemm());
                expect += 2 * Gr::WORDS;
            }
            if let (true, Some(i)) = (bits_on, bits.as_mut()) {
                i.prover_message(&mut msg, self.inner.gemm());
                expect += 2 * Gf64::WORDS;
            }
            self.inner.send(next, crate::ring::to_bytes(&msg))?;
            // As B: the previous party's parts, then the challenges back.
            let got = self.inner.recv_words(prev, expect)?;
            let bad = || ProtocolError::MessageLength {
                from: prev,
                got: expect * 8,
                expected: expect * 8,
            };
            let (g_ring, g_bits) = got.split_at(if ring_on { 2 * Gr::WORDS } else { 0 });
            let mut challenges = Vec::new();
            if let (true, Some(i)) = (ring_on, ring.as_mut()) {
                challenges.push(i.b_receive(g_ring).ok_or_else(bad)?);
            }
            if let (true, Some(i)) = (bits_on, bits.as_mut()) {
                challenges.push(i.b_receive(g_bits).ok_or_else(bad)?);
            }
            self.inner.send(prev, crate::ring::to_bytes(&challenges))?;
            let mine = self.inner.recv_words(next, challenges.len())?;
            let mut at = 0;
            if let (true, Some(i)) = (ring_on, ring.as_mut()) {
                i.fold_level(mine[at], challenges[at], gemm);
                at += 1;
            }
            if let (true, Some(i)) = (bits_on, bits.as_mut()) {
                i.fold_level(mine[at], challenges[at], gemm);
            }
        }
        // Final: A sends (u, z_A) to B (its previous party), B sends (v, z_B) to A (its next party).
        let (mut to_b, mut to_a) = (Vec::new(), Vec::new());
        if let Some(i) = &ring {
            i.final_messages(&mut to_b, &mut to_a);
        }
        if let Some(i) = &bits {
            i.final_messages(&mut to_b, &mut to_a);
        }
        self.inner.send(prev, crate::ring::to_bytes(&to_b))?;
        self.inner.send(next, crate::ring::to_bytes(&to_a))?;
        let from_b = self.inner.recv_words(prev, to_a.len())?;
        let from_a = self.inner.recv_words(next, to_b.len())?;
        self.final_checks = Some(super::transcript::final_checks(
            (ring.is_some(), bits.is_some()),
            (&to_b, &to_a),
            (&from_b, &from_a),
        ));
        let split = if ring.is_some() { 2 * Gr::WORDS } else { 0 };
        let mut verdicts = Vec::new();
        if let Some(i) = &ring {
            verdicts.push(i.check(&from_b[..split], &from_a[..split]));
        }
        if let Some(i) = &bits {
            verdicts.push(i.check(&from_b[split..], &from_a[split..]));
        }
        if verdicts.iter().any(|v| !v.0) {
            return Err(ProtocolError::Verification(format!(
                "party {me} rejects party {next}'s product proof: a reshare it sent was not its summand"
            )));
        }
        if verdicts.iter().any(|v| !v.1) {
            return Err(ProtocolError::Verification(format!(
                "party {me} rejects party {prev}'s product proof: a reshare it sent was not its summand"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    fn share(len: usize) -> RepShare {
        RepShare {
            own: vec![0; len],
            next: vec![0; len],
        }
    }

    fn reshare(claims: Vec<Claim>, outputs: usize) -> Reshare {
        Reshare {
            claims,
            own_draw: vec![0; outputs],
            next_draw: vec![0; outputs],
            received: vec![0; outputs],
        }
    }

    #[test]
    fn a_check_is_due_once_the_recorded_entries_reach_the_budget_and_not_before() {
        let mut log = ProductLog::default();
        let below = CHECK_BUDGET.ring - 1;
        log.push(reshare(
            vec![Claim::elementwise(share(below), share(below))],
            below,
        ));
        assert!(!log.check_due(), "one entry below the ring budget");
        // A [4, 1, 4] product projects to 2 k = 2 entries: the budget is reached.
        let x = share(4);
        let y = share(4);
        log.push(reshare(
            vec![Claim::Matmul {
                x,
                y,
                dims: [4, 1, 4],
            }],
            16,
        ));
        assert!(log.check_due(), "the ring budget reached");

        let mut bits = ProductLog::default();
        let words = CHECK_BUDGET.bits / 64;
        let gates = |w: usize| RepBits {
            own: vec![0; w],
            next: vec![0; w],
        };
        bits.push_bits(BitReshare {
            x: gates(words - 1),
            y: gates(words - 1),
            own_draw: vec![0; words - 1],
            next_draw: vec![0; words - 1],
            received: vec![0; words - 1],
        });
        assert!(!bits.check_due(), "64 gates below the AND-gate budget");
        bits.push_bits(BitReshare {
            x: gates(1),
            y: gates(1),
            own_draw: vec![0],
            next_draw: vec![0],
            received: vec![0],
        });
        assert!(bits.check_due(), "the AND-gate budget reached");
    }
}
