//! `rep3m`'s finished checks (see `protocols/src/rep3m/mod.rs`: checked openings and output release; the
//! product proof is not written yet): an honest job opens, verifies and releases the right values with the
//! bytes and rounds pinned; each of the protocol lab's deviations that strike there (`flip-share`,
//! `wrong-output`, `skip-round`) aborts 200 runs out of 200 with no output released.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_protocols::adversary::{Adversary, Deviation};
use veil_protocols::gemm::NaiveGemm;
use veil_protocols::net::NetStats;
use veil_protocols::rep3::RepShare;
use veil_protocols::rep3m::{local::run, reconstruct_output, Party};
use veil_protocols::semi2k::local::{Committee, LocalNet};
use veil_protocols::ProtocolError;

/// Elements per shared vector.
const N: usize = 37;
/// Openings in [`program`].
const OPENINGS: usize = 3;
/// Runs per deviation.
const RUNS: usize = 200;

fn split(x: &[u64], rng: &mut ChaCha8Rng) -> [RepShare; 3] {
    RepShare::split(x, || rng.random())
}

/// The job: opens `x`, `x + y` and `x * y` (the product from `rep3`, unchecked by `rep3m` so far), then
/// releases `x * y + opened(x)` for the client. Returns the released share and this party's traffic.
fn program(
    party: &mut Party<LocalNet>,
    x: &RepShare,
    y: &RepShare,
) -> veil_protocols::Result<(RepShare, NetStats)> {
    let before = party.stats().clone();
    let opened_x = party.open(x)?;
    let sum = {
        let (xo, xn) = x.components();
        let (yo, yn) = y.components();
        RepShare::from_components(
            xo.iter().zip(yo).map(|(a, b)| a.wrapping_add(*b)).collect(),
            xn.iter().zip(yn).map(|(a, b)| a.wrapping_add(*b)).collect(),
        )
        .expect("same lengths")
    };
    party.open(&sum)?;
    let product = party.rep3().mul(x, y)?;
    party.open(&product)?;
    let mut out = product.clone();
    party.rep3().add_public(&mut out, &opened_x);
    let released = party.release(&out)?;
    Ok((released, party.stats().since(&before)))
}

struct Job {
    x: Vec<u64>,
    y: Vec<u64>,
    shares: [[RepShare; 3]; 2],
}

fn job(seed: u64) -> Job {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<u64> = (0..N).map(|_| rng.random()).collect();
    let y: Vec<u64> = (0..N).map(|_| rng.random()).collect();
    let shares = [split(&x, &mut rng), split(&y, &mut rng)];
    Job { x, y, shares }
}

/// Runs the job with `adversary` (if any) and a receive timeout; the client's view of the outcome: the
/// output, or why nothing was released.
fn client(
    job: &Job,
    adversary: Option<Adversary>,
    timeout: Duration,
) -> (veil_protocols::Result<Vec<u64>>, Vec<NetStats>) {
    let mut committee = Committee::new(3, Arc::new(NaiveGemm));
    committee.timeout = timeout;
    let run = run(
        &committee,
        Some(adversary.map_or(1, |a| a.at as u64 + 2)),
        adversary,
        |party| {
            let me = party.id();
            program(party, &job.shares[0][me], &job.shares[1][me])
        },
    );
    match run {
        Ok(parties) => {
            let released: [RepShare; 3] = std::array::from_fn(|i| parties[i].value.0.clone());
            let stats = parties.iter().map(|p| p.value.1.clone()).collect();
            (reconstruct_output(&released), stats)
        }
        Err(e) => (Err(e), Vec::new()),
    }
}

#[test]
fn an_honest_job_opens_verifies_and_releases_the_right_values_with_pinned_costs() {
    let job = job(5);
    let (out, stats) = client(&job, None, Duration::from_secs(30));
    let expected: Vec<u64> = job
        .x
        .iter()
        .zip(&job.y)
        .map(|(a, b)| a.wrapping_mul(*b).wrapping_add(*a))
        .collect();
    assert_eq!(out.expect("an honest job verifies"), expected);
    // Three openings and one product of N elements (8 bytes each), then the 32-byte check of the
    // openings and the product proof over 2N entries, per party.
    let (proof_bytes, proof_messages, proof_rounds) = proof_cost(2 * N);
    let bytes = (OPENINGS as u64 + 1) * 8 * N as u64 + 32 + proof_bytes;
    for s in &stats {
        assert_eq!(s.bytes_sent, bytes);
        assert_eq!(s.messages_sent, OPENINGS as u64 + 2 + proof_messages);
        assert_eq!(s.rounds, OPENINGS as u64 + 2 + proof_rounds);
    }
    // N = 37: 74 entries and 2 masks pad to 128, L = 7 levels.
    assert_eq!(proof_cost(2 * N), (7000, 17, 16));
}

/// The product proof's cost per party for `entries` combined entries (`rep3m/proof.rs`): bytes, messages
/// and rounds sent. `L = log2` of the entries plus the two masks, padded to a power of two; the coins seed
/// (32 bytes), per level the prover's two ring elements (768 bytes) and the challenge (8), and the final
/// two ring elements each way (1536).
fn proof_cost(entries: usize) -> (u64, u64, u64) {
    let levels = u64::from((entries + 2).next_power_of_two().trailing_zeros());
    (
        32 + levels * (768 + 8) + 1536,
        3 + 2 * levels,
        2 + 2 * levels,
    )
}

/// Runs `RUNS` jobs, each with `kind` struck by a random party at a random opening (or output element) with
/// a random non-zero error, eight at a time; every one must abort as `aborted` says.
fn every_run_aborts(kind: Deviation, timeout: Duration, aborted: fn(&ProtocolError) -> bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(kind as u64 + 40);
    let adversaries: Vec<Adversary> = (0..RUNS)
        .map(|_| Adversary {
            kind,
            party: rng.random_range(0..3),
            at: rng.random_range(
                0..if kind == Deviation::WrongOutput {
                    N
                } else {
                    OPENINGS
                },
            ),
            delta: rng.random_range(1..u64::MAX),
        })
        .collect();
    let mut aborts = 0;
    for chunk in adversaries.chunks(8) {
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, &a)| scope.spawn(move || client(&job(i as u64), Some(a), timeout).0))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        for (a, outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                Ok(_) => panic!("{a:?}: the client accepted an output"),
                Err(e) if aborted(&e) => aborts += 1,
                Err(e) => panic!("{a:?}: aborted, but not as expected: {e}"),
            }
        }
    }
    assert_eq!(aborts, RUNS);
}

fn verification(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Verification(_))
}

#[test]
fn a_flipped_share_in_any_opening_aborts_200_of_200_runs() {
    every_run_aborts(Deviation::FlipShare, Duration::from_secs(30), verification);
}

#[test]
fn a_wrong_output_share_is_refused_by_the_client_200_of_200_runs() {
    every_run_aborts(
        Deviation::WrongOutput,
        Duration::from_secs(30),
        verification,
    );
}

#[test]
fn a_silent_party_stops_the_job_200_of_200_runs() {
    every_run_aborts(Deviation::SkipRound, Duration::from_millis(50), |e| {
        matches!(e, ProtocolError::Net(_) | ProtocolError::Deviated(_))
    });
}

/// The products job of the `wrong-product` tests: an elementwise product, two matrix products in one
/// round, a sign test selecting a payload and a truncation (every kind of reshare the proof covers), then
/// the release of `relu(x y) + trunc(x y) + (X Y)` in the first elements.
fn products_program(
    party: &mut Party<LocalNet>,
    x: &RepShare,
    y: &RepShare,
) -> veil_protocols::Result<(RepShare, usize)> {
    use veil_protocols::ops::{MpcOps, SignSelect};
    let product = party.rep3().mul(x, y)?;
    let slice = |s: &RepShare, r: std::ops::Range<usize>| {
        let (o, n) = s.components();
        RepShare::from_components(o[r.clone()].to_vec(), n[r].to_vec()).expect("same lengths")
    };
    let (a, b) = (slice(x, 0..20), slice(y, 0..15));
    let (c, d) = (slice(y, 10..16), slice(x, 20..32));
    let mats = party
        .rep3()
        .matmuls(&[(&a, &b), (&c, &d)], &[[4, 5, 3], [3, 2, 6]])?;
    let relu = party.rep3().sign_select_injected(SignSelect {
        z: &product,
        truncate: false,
        select_self: true,
        extras: vec![x.clone()],
    })?;
    let t = party.rep3().trunc_injected(&product)?;
    let mut out = <Party<LocalNet> as MpcOps>::add(&relu[0], &t);
    let head = <Party<LocalNet> as MpcOps>::add(&slice(&out, 0..12), &mats[0]);
    let tail = slice(&out, 12..N);
    out = <Party<LocalNet> as MpcOps>::concat(&[head, tail]);
    let reshares = party.reshares();
    Ok((party.release(&out)?, reshares))
}

/// Reshares in [`products_program`], ring and AND gates in the job's order (pinned: one product, one matrix
/// round, the sign test's 8 AND rounds and its 2 selecting products, the truncation's 2 AND rounds and its
/// 2 bit-to-ring reshares).
const PRODUCT_RESHARES: usize = 16;

fn run_products(
    seed: u64,
    adversary: Option<Adversary>,
) -> veil_protocols::Result<(Vec<u64>, usize, Vec<NetStats>)> {
    let job = job(seed);
    let committee = Committee::new(3, Arc::new(NaiveGemm));
    let parties = run(&committee, Some(seed + 1000), adversary, |party| {
        let me = party.id();
        products_program(party, &job.shares[0][me], &job.shares[1][me])
    })?;
    let released: [RepShare; 3] = std::array::from_fn(|i| parties[i].value.0.clone());
    let stats = parties.iter().map(|p| p.stats.clone()).collect();
    Ok((reconstruct_output(&released)?, parties[0].value.1, stats))
}

#[test]
fn an_honest_products_job_passes_the_product_proof() {
    for seed in 0..5 {
        let job = job(seed);
        let (out, reshares, _) = run_products(seed, None).expect("an honest job verifies");
        assert_eq!(reshares, PRODUCT_RESHARES);
        let fp = 16;
        let mut checked = 0;
        for ((x, y), got) in job.x.iter().zip(&job.y).zip(&out).skip(12) {
            let p = x.wrapping_mul(*y);
            let relu = if (p as i64) >= 0 { p } else { 0 };
            let floor = ((p as i64) >> fp) as u64;
            // The truncation is `floor` or one less for |p| < 2^62 (its range); the other elements'
            // truncations are out of range and not compared.
            if (p as i64).unsigned_abs() < 1 << 62 {
                let off = relu.wrapping_add(floor).wrapping_sub(*got);
                assert!(off <= 1, "product {p:#x}");
                checked += 1;
            }
        }
        assert!(checked > 0);
    }
}

#[test]
fn a_wrong_product_in_any_reshare_aborts_200_of_200_runs_and_nothing_is_released() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let adversaries: Vec<Adversary> = (0..RUNS)
        .map(|_| Adversary {
            kind: Deviation::WrongProduct,
            party: rng.random_range(0..3),
            at: rng.random_range(0..PRODUCT_RESHARES),
            delta: rng.random_range(1..u64::MAX),
        })
        .collect();
    let mut aborts = 0;
    for chunk in adversaries.chunks(8) {
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, &a)| scope.spawn(move || run_products(i as u64, Some(a))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        for (a, outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                Ok(_) => panic!("{a:?}: an output was released"),
                Err(e) if verification(&e) => aborts += 1,
                Err(e) => panic!("{a:?}: aborted, but not by the proof: {e}"),
            }
        }
    }
    assert_eq!(aborts, RUNS);
    // The smallest error, in the highest bit alone, is caught too (a Z_2^64 zero divisor: the lift to the
    // Galois ring is what catches it).
    for party in 0..3 {
        for delta in [1u64 << 63, 1] {
            let a = Adversary {
                kind: Deviation::WrongProduct,
                party,
                at: 0,
                delta,
            };
            assert!(matches!(
                run_products(3, Some(a)),
                Err(ProtocolError::Verification(_))
            ));
        }
    }
}

/// The proof's cost for matrix products: a `[m, k, n]` product adds `2k` entries (its two cross terms
/// projected to inner products of length `k`), whatever `m` and `n`.
#[test]
fn the_product_proof_of_matrix_products_costs_what_its_doc_says() {
    let job = job(9);
    let committee = Committee::new(3, Arc::new(NaiveGemm));
    let out = run(&committee, Some(9), None, |party| {
        let me = party.id();
        let (x, y) = (&job.shares[0][me], &job.shares[1][me]);
        let (xo, xn) = x.components();
        let (yo, yn) = y.components();
        let a = RepShare::from_components(xo[..36].to_vec(), xn[..36].to_vec()).expect("lengths");
        let b = RepShare::from_components(yo[..12].to_vec(), yn[..12].to_vec()).expect("lengths");
        let z = party.rep3().matmuls(&[(&a, &b)], &[[12, 3, 4]])?;
        let before = party.stats().clone();
        party.verify()?;
        Ok((z, party.stats().since(&before), party.is_verified()))
    })
    .expect("an honest job verifies");
    // 2 * 3 = 6 entries and 2 masks: 8, L = 3; plus the 32-byte opening check in its own round.
    let (bytes, messages, rounds) = proof_cost(6);
    assert_eq!(bytes, 32 + 3 * 776 + 1536);
    for p in &out {
        assert!(p.value.2);
        assert_eq!(p.value.1.bytes_sent, 32 + bytes);
        assert_eq!(p.value.1.messages_sent, 1 + messages);
        assert_eq!(p.value.1.rounds, 1 + rounds);
    }
    // The product itself is right.
    let shares: [RepShare; 3] = std::array::from_fn(|i| out[i].value.0[0].clone());
    let got = RepShare::reconstruct(&shares).expect("consistent");
    for r in 0..12 {
        for c in 0..4 {
            let want = (0..3).fold(0u64, |s, t| {
                s.wrapping_add(job.x[r * 3 + t].wrapping_mul(job.y[t * 4 + c]))
            });
            assert_eq!(got[r * 4 + c], want);
        }
    }
}

/// The sign test with no one-sided message (`rep3`'s `sign_select_injected`, for `rep3m`): `[z >= 0]`,
/// `max(z, 0)` and a payload selected right for random values and the edges of Z_2^64, with the bytes and
/// rounds of its module doc.
#[test]
fn the_sign_test_without_one_sided_messages_is_exact_and_costs_what_its_doc_says() {
    use veil_protocols::ops::SignSelect;
    let n = 256;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut z: Vec<u64> = (0..n).map(|_| rng.random()).collect();
    let edges = [
        0,
        1,
        u64::MAX,
        1 << 63,
        (1 << 63) - 1,
        (1 << 63) + 1,
        2,
        u64::MAX - 1,
    ];
    z[..edges.len()].copy_from_slice(&edges);
    for v in z.iter_mut().skip(edges.len()).take(64) {
        *v = (*v >> 40).wrapping_sub(1 << 23);
    }
    let payload: Vec<u64> = (0..n).map(|_| rng.random()).collect();
    let zs = split(&z, &mut rng);
    let ps = split(&payload, &mut rng);
    let committee = Committee::new(3, Arc::new(NaiveGemm));
    let out = run(&committee, Some(3), None, |party| {
        let me = party.id();
        let before = party.stats().clone();
        let selected = party.rep3().sign_select_injected(SignSelect {
            z: &zs[me],
            truncate: false,
            select_self: true,
            extras: vec![ps[me].clone()],
        })?;
        Ok((selected, party.stats().since(&before)))
    })
    .expect("honest run");
    let opened = |j: usize| {
        let shares: [RepShare; 3] = std::array::from_fn(|i| out[i].value.0[j].clone());
        RepShare::reconstruct(&shares).expect("consistent")
    };
    let (relu, picked) = (opened(0), opened(1));
    for i in 0..n {
        let positive = (z[i] as i64) >= 0;
        assert_eq!(
            relu[i],
            if positive { z[i] } else { 0 },
            "relu of {:#x}",
            z[i]
        );
        assert_eq!(
            picked[i],
            if positive { payload[i] } else { 0 },
            "payload at {:#x}",
            z[i]
        );
    }
    // 249 AND planes of n / 64 words; the selection of k = 2 payloads sends (1 + 3k) n words.
    let words = 249 * (n as u64 / 64) + (1 + 3 * 2) * n as u64;
    for p in &out {
        assert_eq!(p.value.1.bytes_sent, 8 * words);
        assert_eq!(p.value.1.rounds, 10);
    }
}

/// The truncation with no one-sided message (`rep3`'s `trunc_injected`, for `rep3m`): `floor(z / 2^f)` or one
/// less for every `|z| < 2^62` (the edges included), and exactly `max(floor(z / 2^f), 0)` fused into the
/// sign test, with the bytes and rounds of its module doc.
#[test]
fn the_truncation_without_one_sided_messages_is_within_one_ulp_and_costs_what_its_doc_says() {
    use veil_protocols::ops::SignSelect;
    let n = 192;
    let f = 16;
    let bound = 1i64 << 62;
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut z: Vec<u64> = (0..n)
        .map(|i| {
            let bits = [62, 40, 20][i % 3];
            (rng.random::<i64>() >> (64 - bits)) as u64
        })
        .collect();
    let edges = [
        0,
        1,
        -1,
        bound - 1,
        -bound,
        -bound + 1,
        (1 << f) - 1,
        1 << f,
        -(1 << f),
        -(1 << f) - 1,
        -(1 << f) + 1,
    ];
    for (v, e) in z.iter_mut().zip(edges) {
        *v = e as u64;
    }
    let zs = split(&z, &mut rng);
    let committee = Committee::new(3, Arc::new(NaiveGemm));
    let out = run(&committee, Some(4), None, |party| {
        let me = party.id();
        let before = party.stats().clone();
        let t = party.rep3().trunc_injected(&zs[me])?;
        let middle = party.stats().clone();
        let relu = party.rep3().sign_select_injected(SignSelect {
            z: &zs[me],
            truncate: true,
            select_self: true,
            extras: Vec::new(),
        })?;
        Ok((t, relu, middle.since(&before), party.stats().since(&middle)))
    })
    .expect("honest run");
    let opened = |pick: &dyn Fn(usize) -> RepShare| {
        let shares: [RepShare; 3] = std::array::from_fn(pick);
        RepShare::reconstruct(&shares).expect("consistent")
    };
    let t = opened(&|i| out[i].value.0.clone());
    let relu = opened(&|i| out[i].value.1[0].clone());
    for i in 0..n {
        let floor = (z[i] as i64) >> f;
        let off = floor.wrapping_sub(t[i] as i64);
        assert!(
            off == 0 || off == 1,
            "trunc of {}: {}",
            z[i] as i64,
            t[i] as i64
        );
        assert_eq!(
            relu[i] as i64,
            floor.max(0),
            "trunc_relu of {}",
            z[i] as i64
        );
    }
    let w = n as u64 / 64;
    // Alone: 3 + 1 AND planes and three bits to the ring (3n + n words); fused: 276 planes, five bits to the
    // ring in two sums (5n + 2n) and one payload.
    for p in &out {
        assert_eq!(p.value.2.bytes_sent, 8 * (4 * w + 4 * n as u64));
        assert_eq!(p.value.2.rounds, 4);
        assert_eq!(p.value.3.bytes_sent, 8 * (276 * w + 8 * n as u64));
        assert_eq!(p.value.3.rounds, 11);
    }
}

/// Privacy of the sign test and truncation with no one-sided message: what one party receives is
/// uniformly masked and independent of the input. Every message is an AND gate's or product's reshare,
/// masked by the zero sharing's stream of the key the receiver lacks (`rep3/keys.rs`). The test holds the
/// observer's randomness fixed (its key and its two components of the input) while the other keys and the
/// third component vary, and checks for two inputs, for each observer: the view's structure (senders,
/// lengths) is the same; every received bit is a fair coin under both inputs (6 sigma over 100 runs); no
/// received 8-byte window equals an input value or the component the observer lacks.
#[test]
fn a_single_party_view_of_the_symmetric_sign_test_and_truncation_is_uniform_and_input_independent()
{
    use veil_protocols::ops::SignSelect;
    use veil_protocols::prg::Seed;
    use veil_protocols::rep3::local::run_with_keys;
    const TRIALS: u64 = 100;
    let n = 70;
    let inputs: [Vec<u64>; 2] = [
        (0..n as i64).map(|i| ((i - 35) << 20) as u64).collect(),
        (0..n as i64)
            .map(|i| ((i * 7919) % 1000 - 400) as u64)
            .collect(),
    ];
    for observer in 0..3 {
        let mut fixed = ChaCha8Rng::seed_from_u64(90 + observer as u64);
        let own: Vec<u64> = (0..n).map(|_| fixed.random()).collect();
        let next: Vec<u64> = (0..n).map(|_| fixed.random()).collect();
        let mut shapes: Vec<Vec<(usize, usize)>> = Vec::new();
        for input in &inputs {
            let mut ones: Vec<u32> = Vec::new();
            for trial in 0..TRIALS {
                let third: Vec<u64> = input
                    .iter()
                    .zip(own.iter().zip(&next))
                    .map(|(x, (a, b))| x.wrapping_sub(*a).wrapping_sub(*b))
                    .collect();
                let mut comps = vec![Vec::new(); 3];
                comps[observer] = own.clone();
                comps[(observer + 1) % 3] = next.clone();
                comps[(observer + 2) % 3] = third.clone();
                let shares: [RepShare; 3] = std::array::from_fn(|i| {
                    RepShare::from_components(comps[i].clone(), comps[(i + 1) % 3].clone())
                        .expect("lengths")
                });
                let keys: [Seed; 3] = std::array::from_fn(|i| {
                    if i == observer {
                        Seed::random_from(1)
                    } else {
                        Seed::random_from(7000 + 10 * trial + i as u64)
                    }
                });
                let mut committee = Committee::new(3, Arc::new(NaiveGemm));
                committee.record_views = true;
                let out = run_with_keys(&committee, keys, |party| {
                    let z = &shares[party.id()];
                    party.trunc_injected(z)?;
                    party.sign_select_injected(SignSelect {
                        z,
                        truncate: true,
                        select_self: true,
                        extras: Vec::new(),
                    })?;
                    party.sign_select_injected(SignSelect {
                        z,
                        truncate: false,
                        select_self: true,
                        extras: Vec::new(),
                    })
                })
                .expect("honest run");
                let view = &out[observer].view;
                let shape: Vec<(usize, usize)> = view.iter().map(|(f, m)| (*f, m.len())).collect();
                match shapes.first() {
                    Some(first) => assert_eq!(first, &shape, "observer {observer}: view structure"),
                    None => shapes.push(shape),
                }
                let bytes: Vec<u8> = view.iter().flat_map(|(_, m)| m.iter().copied()).collect();
                if ones.is_empty() {
                    ones = vec![0; bytes.len() * 8];
                }
                for (i, byte) in bytes.iter().enumerate() {
                    for b in 0..8 {
                        ones[i * 8 + b] += u32::from((byte >> b) & 1);
                    }
                }
                let secrets: Vec<u64> = input.iter().chain(&third).copied().collect();
                for window in bytes.windows(8) {
                    let word = u64::from_le_bytes(window.try_into().expect("8 bytes"));
                    assert!(
                        word == 0 || !secrets.contains(&word),
                        "observer {observer} received a secret word"
                    );
                }
            }
            // A fair coin over 100 runs: mean 50, sigma 5.
            for (bit, &count) in ones.iter().enumerate() {
                assert!(
                    (20..=80).contains(&count),
                    "observer {observer}: received bit {bit} was 1 in {count} of {TRIALS} runs"
                );
            }
        }
    }
}

/// Inside `rep3m` the `rep3` steps with one-sided messages (no check covers them) are refused, so every
/// message a `rep3m` party sends is a checked opening or a proven reshare.
#[test]
fn rep3_steps_with_unproven_messages_are_refused_inside_rep3m() {
    use veil_protocols::ops::SignSelect;
    let job = job(2);
    let committee = Committee::new(3, Arc::new(NaiveGemm));
    let out = run(&committee, Some(2), None, |party| {
        let x = &job.shares[0][party.id()];
        let refused = [
            party.rep3().open(x).is_err(),
            party.rep3().trunc(x).is_err(),
            party
                .rep3()
                .sign_select(SignSelect {
                    z: x,
                    truncate: false,
                    select_self: true,
                    extras: Vec::new(),
                })
                .is_err(),
        ];
        Ok((refused, party.stats().bytes_sent))
    })
    .expect("refusals end nothing");
    for p in &out {
        assert_eq!(p.value.0, [true; 3]);
        // Only the key agreement was sent.
        assert_eq!(p.value.1, 32);
    }
}

/// The proof's cost with both instances, pinned on a truncation of `n = 192` values (`w = 3` words a bit
/// plane): the ring instance proves the bit-to-ring conversion, `3n` terms in each of its two reshares, 2
/// entries a term (`12 n = 2304` entries, with the masks padded to `2^12`); the AND instance its 4 planes
/// of AND gates, `4 * 3 * 64 = 768` gates, 2 entries each (`1536`, padded to `2^11`).
#[test]
fn the_product_proof_with_ring_and_and_gate_instances_costs_what_its_doc_says() {
    let n: usize = 192;
    let job_z: Vec<u64> = (0..n as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9) >> 8)
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let zs = split(&job_z, &mut rng);
    let committee = Committee::new(3, Arc::new(NaiveGemm));
    let out = run(&committee, Some(21), None, |party| {
        let me = party.id();
        party.rep3().trunc_injected(&zs[me])?;
        let before = party.stats().clone();
        party.verify()?;
        Ok(party.stats().since(&before))
    })
    .expect("an honest job verifies");
    let (lr, lb) = (12u64, 11u64);
    assert_eq!((12 * n + 2).next_power_of_two(), 1usize << lr);
    assert_eq!((2 * 768 + 2usize).next_power_of_two(), 1usize << lb);
    let bytes = 32 + lr * (768 + 8) + lb * (16 + 8) + 2 * (768 + 16);
    assert_eq!(bytes, 11176);
    for s in out.iter().map(|p| &p.value) {
        // Plus the openings' 32-byte digest exchange in its own round.
        assert_eq!(s.bytes_sent, 32 + bytes);
        assert_eq!(s.messages_sent, 1 + 3 + 2 * lr);
        assert_eq!(s.rounds, 1 + 2 + 2 * lr);
    }
}

/// Zero knowledge of the product proof, tested like the sign test's privacy above: with the observer's key
/// and components fixed and the other keys and the third component varying, the observer's whole view of
/// a job with a product, a matrix product, a truncation (AND gates and bit-to-ring reshares) and the check
/// has the same structure under two inputs, no received 8-byte window equals an input value or the
/// component the observer lacks, and every received bit of the messages longer than 32 bytes (reshares,
/// the proof's level messages and final messages) is a fair coin under both inputs (6 sigma over 100
/// runs). The messages of 32 bytes or less are the openings' digest (constant here: nothing is opened),
/// the coins seed and the challenges, drawn from keys the observer lacks.
#[test]
fn a_single_party_view_of_the_product_proof_is_uniform_and_input_independent() {
    use veil_protocols::prg::Seed;
    use veil_protocols::rep3m::local::run_with_keys;
    const TRIALS: u64 = 100;
    let n = 70;
    let inputs: [Vec<u64>; 2] = [
        (0..n as i64).map(|i| ((i - 35) << 20) as u64).collect(),
        (0..n as i64)
            .map(|i| ((i * 7919) % 1000 - 400) as u64)
            .collect(),
    ];
    for observer in 0..3 {
        let mut fixed = ChaCha8Rng::seed_from_u64(190 + observer as u64);
        let own: Vec<u64> = (0..n).map(|_| fixed.random()).collect();
        let next: Vec<u64> = (0..n).map(|_| fixed.random()).collect();
        let mut shapes: Vec<Vec<(usize, usize)>> = Vec::new();
        for input in &inputs {
            let mut ones: Vec<u32> = Vec::new();
            for trial in 0..TRIALS {
                let third: Vec<u64> = input
                    .iter()
                    .zip(own.iter().zip(&next))
                    .map(|(x, (a, b))| x.wrapping_sub(*a).wrapping_sub(*b))
                    .collect();
                let mut comps = vec![Vec::new(); 3];
                comps[observer] = own.clone();
                comps[(observer + 1) % 3] = next.clone();
                comps[(observer + 2) % 3] = third.clone();
                let shares: [RepShare; 3] = std::array::from_fn(|i| {
                    RepShare::from_components(comps[i].clone(), comps[(i + 1) % 3].clone())
                        .expect("lengths")
                });
                let keys: [Seed; 3] = std::array::from_fn(|i| {
                    if i == observer {
                        Seed::random_from(1)
                    } else {
                        Seed::random_from(9000 + 10 * trial + i as u64)
                    }
                });
                let mut committee = Committee::new(3, Arc::new(NaiveGemm));
                committee.record_views = true;
                let out = run_with_keys(&committee, keys, None, |party| {
                    let z = &shares[party.id()];
                    let p = party.rep3().mul(z, z)?;
                    let (o, x) = z.components();
                    let a = RepShare::from_components(o[..20].to_vec(), x[..20].to_vec())
                        .expect("lengths");
                    party.rep3().matmuls(&[(&a, &a)], &[[4, 5, 4]])?;
                    party.rep3().trunc_injected(&p)?;
                    party.verify()
                })
                .expect("honest run");
                let view = &out[observer].view;
                let shape: Vec<(usize, usize)> = view.iter().map(|(f, m)| (*f, m.len())).collect();
                match shapes.first() {
                    Some(first) => assert_eq!(first, &shape, "observer {observer}: view structure"),
                    None => shapes.push(shape),
                }
                let bytes: Vec<u8> = view.iter().flat_map(|(_, m)| m.iter().copied()).collect();
                let secrets: Vec<u64> = input.iter().chain(&third).copied().collect();
                for window in bytes.windows(8) {
                    let word = u64::from_le_bytes(window.try_into().expect("8 bytes"));
                    assert!(
                        word == 0 || !secrets.contains(&word),
                        "observer {observer} received a secret word"
                    );
                }
                let long: Vec<u8> = view
                    .iter()
                    .filter(|(_, m)| m.len() > 32)
                    .flat_map(|(_, m)| m.iter().copied())
                    .collect();
                if ones.is_empty() {
                    ones = vec![0; long.len() * 8];
                }
                for (i, byte) in long.iter().enumerate() {
                    for b in 0..8 {
                        ones[i * 8 + b] += u32::from((byte >> b) & 1);
                    }
                }
            }
            assert!(
                ones.len() > 8 * 1000,
                "the proof's messages are in the view"
            );
            for (bit, &count) in ones.iter().enumerate() {
                assert!(
                    (20..=80).contains(&count),
                    "observer {observer}: received bit {bit} was 1 in {count} of {TRIALS} runs"
                );
            }
        }
    }
}
