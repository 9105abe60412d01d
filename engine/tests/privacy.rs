//! Privacy of semi2k inference: what one party sees is uniformly masked and independent of the input.
//!
//! The argument. A party's view is its own shares, its dealer material and the messages it receives. Its
//! shares of the input and weights are uniform (any n-1 additive shares are). Its dealer material is expanded
//! from its own seed, except the last party's corrections `v - sum(other parties' PRG outputs)`, uniform
//! because the other parties' PRG outputs are. Every message is an opening of `value + mask`, where the mask is
//! fresh dealer randomness that the receiver does not know: `X - A` (Beaver and fixed-weight products, `A`
//! uniform), `W - B` once per model (`B` uniform, never opened), `z + 2^62 + r` (truncation and sign tests, `r`
//! uniform over the whole ring), `x ^ a` (AND gates, `a` uniform bits), `v - alpha` and `b ^ u` (the bit
//! product, `alpha`, `u` uniform). Each mask is used for one opening only, so the received messages are
//! uniformly random and jointly independent of the secrets: a simulator that sends uniform strings of the same
//! lengths produces the same distribution. Message lengths and order depend only on public shapes.
//!
//! The tests check the observable consequences, for party 1 of 3 with its own randomness (seeds, input share,
//! weight shares) held fixed while the other parties' randomness varies. "View" covers both each received
//! message and each opened value (own share combined with the received ones), since a leak can hide in a sum
//! of messages that are each uniform:
//! 1. the view's structure (messages, senders, lengths) is identical for two different inputs;
//! 2. every received bit is a fair coin under both inputs (6 sigma over 100 runs each), except wire padding
//!    (the few always-zero bits that round a bit vector up to whole bytes), so no message carries a biased,
//!    i.e. unmasked, value;
//! 3. no received 8-byte window equals an encoded input value, another party's input share, or an encoded
//!    weight.

mod common;

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_engine::kernel::RingGemm;
use veil_engine::private::{setup, WeightShare};
use veil_engine::{Plan, WeightMode};
use veil_protocols::prg::Seed;
use veil_protocols::ring::FixedPoint;
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds};

use common::*;

const PARTIES: usize = 3;
const OBSERVER: usize = 1;
const TRIALS: usize = 100;

/// Messages with their sender.
type View = Vec<(usize, Vec<u8>)>;

/// Party `OBSERVER`'s fixed randomness.
struct ObserverRandomness {
    job_seed: Seed,
    model_seed: Seed,
    input_share: Vec<u64>,
    weight_shares: Vec<WeightShare>,
}

/// Splits `secret` so that the observer holds `fixed` and the others random values.
fn split_around(secret: &[u64], fixed: &[u64], rng: &mut ChaCha8Rng) -> Vec<Vec<u64>> {
    let mut shares = vec![Vec::new(); PARTIES];
    let mut rest: Vec<u64> = secret
        .iter()
        .zip(fixed)
        .map(|(s, f)| s.wrapping_sub(*f))
        .collect();
    for (i, share) in shares.iter_mut().enumerate() {
        if i == OBSERVER {
            *share = fixed.to_vec();
        } else if i == PARTIES - 1 || (i == PARTIES - 2 && OBSERVER == PARTIES - 1) {
            *share = rest.clone();
        } else {
            let r: Vec<u64> = (0..secret.len()).map(|_| rng.random()).collect();
            rest.iter_mut()
                .zip(&r)
                .for_each(|(a, b)| *a = a.wrapping_sub(*b));
            *share = r;
        }
    }
    shares
}

/// The observer's view in one run: every message it received (with its sender), then every value it opened
/// (sender `usize::MAX`), which is what it learns by combining messages with its own shares.
fn observer_view(
    plan: &Plan,
    input: &[u64],
    me: &ObserverRandomness,
    trial: u64,
) -> (View, Vec<Vec<u64>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(1000 + trial);
    let input_shares = split_around(input, &me.input_share, &mut rng);
    let mut weight_shares: Vec<Vec<WeightShare>> = vec![Vec::new(); PARTIES];
    for (w, mine) in plan.weights.iter().zip(&me.weight_shares) {
        let matrices = split_around(&w.matrix, &mine.matrix, &mut rng);
        let biases = split_around(
            w.bias.as_deref().unwrap_or(&[]),
            mine.bias.as_deref().unwrap_or(&[]),
            &mut rng,
        );
        for i in 0..PARTIES {
            weight_shares[i].push(WeightShare {
                matrix: matrices[i].clone(),
                bias: w.bias.as_ref().map(|_| biases[i].clone()),
            });
        }
    }
    let mut seeds = DealtSeeds::from_master(&Seed::random_from(5000 + trial), PARTIES);
    seeds.job[OBSERVER] = me.job_seed.clone();
    seeds.model[OBSERVER] = me.model_seed.clone();
    let mut committee = Committee::new(PARTIES, Arc::new(RingGemm::new(1)));
    committee.record_views = true;
    let outcome = run(
        &committee,
        &plan.requests(1),
        &plan.mask_shapes(),
        &seeds,
        |party, masks| {
            let i = party.id();
            let model = setup(party, plan, weight_shares[i].clone(), masks)
                .map_err(|e| veil_protocols::ProtocolError::Material(e.to_string()))?;
            model
                .infer(party, input_shares[i].clone(), 1, None)
                .map_err(|e| veil_protocols::ProtocolError::Material(e.to_string()))
        },
    )
    .expect("private run");
    let others = (0..PARTIES)
        .filter(|&i| i != OBSERVER)
        .map(|i| input_shares[i].clone())
        .collect();
    let observer = &outcome.parties[OBSERVER];
    let mut view = observer.view.clone();
    view.extend(observer.transcript.iter().map(|t| (usize::MAX, t.clone())));
    (view, others)
}

fn fixture() -> (Plan, Vec<u64>, Vec<u64>, ObserverRandomness) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let m = model(
        vec![12],
        vec![
            linear(&mut rng, 12, 8),
            relu(),
            linear(&mut rng, 8, 8),
            relu(),
            linear(&mut rng, 8, 3),
        ],
    );
    let plan = Plan::compile(&m, FixedPoint::default(), WeightMode::Shared).expect("compiles");
    let fp = plan.fixed_point;
    let x1 = fp
        .encode(&(0..12).map(|i| 0.1 + 0.06 * i as f32).collect::<Vec<_>>())
        .expect("encodes");
    let x2 = fp
        .encode(&(0..12).map(|i| -0.8 + 0.13 * i as f32).collect::<Vec<_>>())
        .expect("encodes");
    let me = ObserverRandomness {
        job_seed: Seed::random_from(1),
        model_seed: Seed::random_from(2),
        input_share: (0..12).map(|_| rng.random()).collect(),
        weight_shares: plan
            .weights
            .iter()
            .map(|w| WeightShare {
                matrix: (0..w.matrix.len()).map(|_| rng.random()).collect(),
                bias: w
                    .bias
                    .as_ref()
                    .map(|b| (0..b.len()).map(|_| rng.random()).collect()),
            })
            .collect(),
    };
    (plan, x1, x2, me)
}

fn structure(view: &[(usize, Vec<u8>)]) -> Vec<(usize, usize)> {
    view.iter().map(|(from, m)| (*from, m.len())).collect()
}

#[test]
fn view_is_uniformly_masked_and_input_independent() {
    let (plan, x1, x2, me) = fixture();
    let mut counts: Vec<Vec<Vec<u32>>> = Vec::new(); // [input][message][bit] ones
    let mut layout = None;
    let mut forbidden: Vec<u64> = x1.iter().chain(&x2).copied().collect();
    forbidden.extend(
        plan.weights
            .iter()
            .flat_map(|w| w.matrix.iter().copied())
            .filter(|v| *v != 0 && *v != u64::MAX),
    );
    let mut windows_checked = 0usize;
    for x in [&x1, &x2] {
        let mut ones: Vec<Vec<u32>> = Vec::new();
        for trial in 0..TRIALS as u64 {
            let (view, other_shares) = observer_view(&plan, x, &me, trial);
            let shape = structure(&view);
            match &layout {
                None => layout = Some(shape),
                Some(l) => assert_eq!(
                    l, &shape,
                    "the view's structure depends on the input or the randomness"
                ),
            }
            if ones.is_empty() {
                ones = view.iter().map(|(_, m)| vec![0; m.len() * 8]).collect();
            }
            let mut secrets = forbidden.clone();
            secrets.extend(other_shares.iter().flatten().copied());
            for (k, (_, msg)) in view.iter().enumerate() {
                for (b, byte) in msg.iter().enumerate() {
                    for bit in 0..8 {
                        ones[k][b * 8 + bit] += u32::from((byte >> bit) & 1);
                    }
                }
                for w in msg.windows(8) {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(w);
                    let v = u64::from_le_bytes(word);
                    assert!(
                        !secrets.contains(&v),
                        "a message carries a secret value unmasked"
                    );
                    windows_checked += 1;
                }
            }
        }
        counts.push(ones);
    }
    assert!(
        windows_checked > 10_000,
        "the views are suspiciously small: {windows_checked}"
    );
    let limit = 6.0 * (0.25 / TRIALS as f64).sqrt();
    let mut random_bits = 0;
    for (k, (a, b)) in counts[0].iter().zip(&counts[1]).enumerate() {
        // A masked bit is constant over 2 x 100 runs with probability 2^-199, so a constant bit is either wire
        // padding (always zero: at most 7 bits after each of the at most 3 bit vectors in one message) or a leak.
        let padding = a
            .iter()
            .zip(b)
            .filter(|(&ca, &cb)| ca == 0 && cb == 0)
            .count();
        assert!(
            padding <= 21,
            "message {k}: {padding} bits are always zero: more than wire padding explains"
        );
        for (bit, (&ca, &cb)) in a.iter().zip(b).enumerate() {
            if ca == 0 && cb == 0 {
                continue;
            }
            for (input, c) in [(1, ca), (2, cb)] {
                let freq = f64::from(c) / TRIALS as f64;
                assert!((freq - 0.5).abs() <= limit, "message {k} bit {bit}: frequency {freq} under input {input} is not a fair coin");
            }
            random_bits += 1;
        }
    }
    assert!(
        random_bits > 10_000,
        "only {random_bits} random bits in the view"
    );
}
