//! Privacy of rep3 inference: what one party sees is uniformly masked and independent of the input, for each
//! of the three parties (their roles differ: party 0 sends the sign test's and truncation's one-sided
//! messages, parties 1 and 2 the pair's).
//!
//! The argument. Party `i` holds components `i` and `i + 1` of every shared value, its own key `k_i` and
//! the key `k_{i+1}` that party `i + 1` sent it; it never holds `k_{i+2}`. Its components of the input and
//! weights are uniform (any two components are), and the third component, which carries the secret, is
//! never sent to it. Every message it receives is masked by the stream of a key it lacks: a product's or AND
//! gate's reshare `z_{i+1}` by `F(k_{i+2})` (from the zero sharing), party 0's messages to party 2 by
//! `F(k_1)`, the pair's reshares to party 0 by `F(k_2)` and to party 1 by `F(k_0)` (see
//! `protocols/src/rep3/{mul,trunc,sign}.rs`). Each stream position masks one message only, so the messages
//! are jointly pseudo-random and independent of the secrets; lengths and order depend only on shapes.
//!
//! The tests hold the observer's randomness fixed (its key, its two components of the input and of each
//! weight) while the other keys and the third components vary, and check for two different inputs:
//! 1. the view's structure (messages, senders, lengths) is the same;
//! 2. every received bit is a fair coin under both inputs (6 sigma over 100 runs each);
//! 3. no received 8-byte window equals an encoded input value, an encoded weight, or the component the
//!    observer lacks.

mod common;

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_engine::kernel::RingGemm;
use veil_engine::private::setup_rep3;
use veil_engine::{Plan, WeightMode};
use veil_protocols::prg::Seed;
use veil_protocols::rep3::{local::run_with_keys, RepShare};
use veil_protocols::ring::FixedPoint;
use veil_protocols::semi2k::local::Committee;

use common::*;

const TRIALS: usize = 100;

type View = Vec<(usize, Vec<u8>)>;

/// Two components of a shared vector (the observer's).
type Pair = (Vec<u64>, Vec<u64>);

/// Shares of `secret` in which `observer` holds the components `fixed = (own, next)`; the third is what the
/// secret leaves.
fn split_around(secret: &[u64], observer: usize, fixed: &Pair) -> [RepShare; 3] {
    let third: Vec<u64> = secret
        .iter()
        .zip(fixed.0.iter().zip(&fixed.1))
        .map(|(s, (a, b))| s.wrapping_sub(*a).wrapping_sub(*b))
        .collect();
    let mut comps = vec![Vec::new(); 3];
    comps[observer] = fixed.0.clone();
    comps[(observer + 1) % 3] = fixed.1.clone();
    comps[(observer + 2) % 3] = third;
    std::array::from_fn(|i| {
        RepShare::from_components(comps[i].clone(), comps[(i + 1) % 3].clone()).expect("lengths")
    })
}

fn random_pair(rng: &mut ChaCha8Rng, len: usize) -> Pair {
    (
        (0..len).map(|_| rng.random()).collect(),
        (0..len).map(|_| rng.random()).collect(),
    )
}

/// The observer's view in one run, and the component of the input it lacks.
fn observer_view(plan: &Plan, input: &[u64], observer: usize, trial: u64) -> (View, Vec<u64>) {
    let mut fixed_rng = ChaCha8Rng::seed_from_u64(77);
    let input_pair = random_pair(&mut fixed_rng, input.len());
    let weight_pairs: Vec<(Pair, Option<Pair>)> = plan
        .weights
        .iter()
        .map(|w| {
            (
                random_pair(&mut fixed_rng, w.matrix.len()),
                w.bias
                    .as_ref()
                    .map(|b| random_pair(&mut fixed_rng, b.len())),
            )
        })
        .collect();
    let inputs = split_around(input, observer, &input_pair);
    let weights: Vec<[(RepShare, Option<RepShare>); 3]> = plan
        .weights
        .iter()
        .zip(&weight_pairs)
        .map(|(w, (m, b))| {
            let ms = split_around(&w.matrix, observer, m);
            let bs = w
                .bias
                .as_ref()
                .zip(b.as_ref())
                .map(|(bias, fixed)| split_around(bias, observer, fixed));
            std::array::from_fn(|i| (ms[i].clone(), bs.as_ref().map(|b| b[i].clone())))
        })
        .collect();
    let keys: [Seed; 3] = std::array::from_fn(|i| {
        if i == observer {
            Seed::random_from(1)
        } else {
            Seed::random_from(5000 + 10 * trial + i as u64)
        }
    });
    let mut committee = Committee::new(3, Arc::new(RingGemm::new(1)));
    committee.record_views = true;
    let outcome = run_with_keys(&committee, keys, |party| {
        let i = party.id();
        let mine = weights.iter().map(|w| w[i].clone()).collect();
        let model = setup_rep3(plan, mine, &[])
            .map_err(|e| veil_protocols::ProtocolError::Material(e.to_string()))?;
        model
            .infer(party, inputs[i].clone(), 1, None)
            .map_err(|e| veil_protocols::ProtocolError::Material(e.to_string()))
    })
    .expect("private run");
    let lacking = inputs[(observer + 2) % 3].components().0.to_vec();
    (outcome[observer].view.clone(), lacking)
}

fn fixture() -> (Plan, Vec<u64>, Vec<u64>) {
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
    (plan, x1, x2)
}

fn structure(view: &[(usize, Vec<u8>)]) -> Vec<(usize, usize)> {
    view.iter().map(|(from, m)| (*from, m.len())).collect()
}

fn check_observer(observer: usize) {
    let (plan, x1, x2) = fixture();
    let mut counts: Vec<Vec<Vec<u32>>> = Vec::new();
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
            let (view, lacking) = observer_view(&plan, x, observer, trial);
            let shape = structure(&view);
            match &layout {
                None => layout = Some(shape),
                Some(l) => assert_eq!(l, &shape, "party {observer}: the view's structure varies"),
            }
            if ones.is_empty() {
                ones = view.iter().map(|(_, m)| vec![0; m.len() * 8]).collect();
            }
            let mut secrets = forbidden.clone();
            secrets.extend(lacking);
            for (k, (_, msg)) in view.iter().enumerate() {
                for (b, byte) in msg.iter().enumerate() {
                    for bit in 0..8 {
                        ones[k][b * 8 + bit] += u32::from((byte >> bit) & 1);
                    }
                }
                for w in msg.windows(8) {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(w);
                    assert!(
                        !secrets.contains(&u64::from_le_bytes(word)),
                        "party {observer}: a message carries a secret value unmasked"
                    );
                    windows_checked += 1;
                }
            }
        }
        counts.push(ones);
    }
    assert!(
        windows_checked > 5_000,
        "views too small: {windows_checked}"
    );
    let limit = 6.0 * (0.25 / TRIALS as f64).sqrt();
    let mut random_bits = 0;
    for (k, (a, b)) in counts[0].iter().zip(&counts[1]).enumerate() {
        for (bit, (&ca, &cb)) in a.iter().zip(b).enumerate() {
            for (input, c) in [(1, ca), (2, cb)] {
                let freq = f64::from(c) / TRIALS as f64;
                assert!(
                    (freq - 0.5).abs() <= limit,
                    "party {observer}, message {k} bit {bit}: frequency {freq} under input {input}"
                );
            }
            random_bits += 1;
        }
    }
    assert!(random_bits > 5_000, "only {random_bits} random bits");
}

#[test]
fn party_0_view_is_uniform_and_input_independent() {
    check_observer(0);
}

#[test]
fn party_1_view_is_uniform_and_input_independent() {
    check_observer(1);
}

#[test]
fn party_2_view_is_uniform_and_input_independent() {
    check_observer(2);
}
