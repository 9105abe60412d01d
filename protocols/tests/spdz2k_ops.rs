//! Every spdz2k operation against its plaintext counterpart, for n in {2, 3, 5}, over random inputs, with
//! authenticated inputs (owners publish `x - r`), the batched MAC check before any output, and the output
//! recipient's MAC check. Error bounds are those of `ops.rs` (the protocol code is the same): exact in the
//! ring except truncation, which is at most one ulp above the floor.
//!
//! Also: tampering with an opened value or a MAC makes the check fail, and honest runs always pass it.

use std::sync::Arc;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_protocols::adversary::{Adversary, Deviation};
use veil_protocols::gemm::{Gemm, NaiveGemm};
use veil_protocols::lowering::{Conv2dGeometry, Lowering};
use veil_protocols::material::kinds::uses_product_check;
use veil_protocols::material::Request;
use veil_protocols::prg::Seed;
use veil_protocols::semi2k::local::{Committee, LocalNet};
use veil_protocols::semi2k::{requests, Pool2d};
use veil_protocols::spdz2k::{local, Party, Shares};
use veil_protocols::ProtocolError;

type Program<'a> =
    dyn Fn(&mut Party<LocalNet>, &[Shares]) -> veil_protocols::Result<Shares> + Sync + 'a;

/// Runs `program` over authenticated inputs `inputs` on `n` parties; the parties run the MAC check before
/// handing out their output shares, and the recipient checks the output MACs. Returns the opened output.
fn run_auth(
    n: usize,
    inputs: &[Vec<u64>],
    reqs: Vec<Request>,
    program: &Program<'_>,
) -> veil_protocols::Result<Vec<u64>> {
    run_auth_against(n, inputs, reqs, None, program)
}

/// [`run_auth`] with one party deviating as `adversary` says.
fn run_auth_against(
    n: usize,
    inputs: &[Vec<u64>],
    reqs: Vec<Request>,
    adversary: Option<Adversary>,
    program: &Program<'_>,
) -> veil_protocols::Result<Vec<u64>> {
    let mut all: Vec<Request> = inputs
        .iter()
        .map(|x| Request::Input { len: x.len() })
        .collect();
    all.extend(reqs);
    let committee = Committee::new(n, Arc::new(NaiveGemm));
    let seeds: Vec<Seed> = (0..n).map(|_| Seed::random()).collect();
    let dealt = local::deal_job(&committee, &all, &seeds)?;
    let published: Vec<Vec<u64>> = inputs
        .iter()
        .zip(&dealt.deal.owner_masks)
        .map(|(x, r)| veil_protocols::ring::sub(x, r))
        .collect();
    let output_key = dealt.deal.output_key;
    let run = local::run(&committee, &all, &seeds, dealt, adversary, |party| {
        let mut shares = Vec::new();
        for x in &published {
            let mask = party.material().input(x.len())?;
            shares.push(party.input_from_masked(mask, x));
        }
        let out = program(party, &shares)?;
        party.verify()?;
        Ok(out)
    })?;
    let outs: Vec<Shares> = run.parties.into_iter().map(|p| p.value).collect();
    local::open_output(&outs, output_key)
}

fn values(len: std::ops::Range<usize>, bound: i64) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(-bound..bound, len)
        .prop_map(|v| v.into_iter().map(|x| x as u64).collect())
}

fn parties() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![2usize, 3, 5])
}

const BIG: i64 = 1 << 61;

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn inputs_open_and_linear_ops_are_exact(n in parties(), x in values(1..40, i64::MAX), k in any::<u64>()) {
        let got = run_auth(n, std::slice::from_ref(&x), vec![], &|p, s| {
            let mut z = <veil_protocols::spdz2k::Spdz2k as veil_protocols::domain::Domain>::mul_public(&s[0], &vec![k; s[0].len()]);
            let threes = vec![3; z.len()];
            p.add_public(&mut z, &threes);
            let opened = p.open(&z)?;
            // Every party learns the value; hand it on as a sharing to reuse the harness.
            Ok(p.share_public(&opened))
        }).expect("verifies");
        let want: Vec<u64> = x.iter().map(|a| a.wrapping_mul(k).wrapping_add(3)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn beaver_mul_and_matmul_are_exact(n in parties(), seed in any::<u64>(), m in 1usize..4, k in 1usize..5, c in 1usize..4) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<u64> = (0..m * k).map(|_| rng.random()).collect();
        let y: Vec<u64> = (0..k * c).map(|_| rng.random()).collect();
        let y2: Vec<u64> = x.iter().map(|v| v ^ 0x5555).collect();
        let mut reqs = requests::mul(x.len());
        reqs.extend(requests::matmul(m, k, c));
        let got = run_auth(n, &[x.clone(), y.clone(), y2.clone()], reqs, &|p, s| {
            let prod = p.mul(&s[0], &s[2])?;
            let mm = p.matmul(&s[0], &s[1], [m, k, c])?;
            Ok(<veil_protocols::spdz2k::Spdz2k as veil_protocols::domain::Domain>::concat(&[prod, mm]))
        }).expect("verifies");
        let mut want = veil_protocols::ring::mul(&x, &y2);
        let mut mm = vec![0; m * c];
        NaiveGemm.gemm(m, k, c, &x, &y, &mut mm);
        want.extend(mm);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn trunc_and_trunc_relu_are_within_one_ulp(n in parties(), x in values(1..50, BIG)) {
        let len = x.len();
        let mut reqs = requests::trunc(len, 16);
        reqs.extend(requests::trunc_relu(len, 16));
        let got = run_auth(n, std::slice::from_ref(&x), reqs, &|p, s| {
            let t = p.trunc(&s[0])?;
            let tr = p.trunc_relu(&s[0])?;
            Ok(<veil_protocols::spdz2k::Spdz2k as veil_protocols::domain::Domain>::concat(&[t, tr]))
        }).expect("verifies");
        for (i, v) in x.iter().enumerate() {
            let exact = (*v as i64) >> 16;
            let d1 = got[i] as i64 - exact;
            let d2 = got[len + i] as i64 - exact.max(0);
            prop_assert!(d1 == 0 || d1 == 1, "trunc({}) = {}", *v as i64, got[i] as i64);
            prop_assert!(d2 == 0 || d2 == 1, "trunc_relu({}) = {}", *v as i64, got[len + i] as i64);
        }
    }

    #[test]
    fn relu_drelu_and_compare_are_exact(n in parties(), x in values(1..70, BIG)) {
        let edges: Vec<u64> = x.iter().copied().chain([0u64, 1, u64::MAX, (1 - BIG) as u64, (BIG - 1) as u64]).collect();
        let len = edges.len();
        let y: Vec<u64> = edges.iter().map(|v| v.rotate_left(3) >> 4).collect();
        let mut reqs = requests::relu(len);
        reqs.extend(requests::drelu(len));
        reqs.extend(requests::drelu(len));
        let got = run_auth(n, &[edges.clone(), y.clone()], reqs, &|p, s| {
            let r = p.relu(&s[0])?;
            let d = p.drelu(&s[0])?;
            let y_small = <veil_protocols::spdz2k::Spdz2k as veil_protocols::domain::Domain>::mul_public(&s[1], &vec![0; len]);
            let ge = p.greater_equal(&s[0], &y_small)?;
            Ok(<veil_protocols::spdz2k::Spdz2k as veil_protocols::domain::Domain>::concat(&[r, d, ge]))
        }).expect("verifies");
        for (i, v) in edges.iter().enumerate() {
            let v = *v as i64;
            prop_assert_eq!(got[i] as i64, v.max(0));
            prop_assert_eq!(got[len + i], u64::from(v >= 0));
            prop_assert_eq!(got[2 * len + i], u64::from(v >= 0));
        }
    }

    #[test]
    fn max_pool_and_argmax_are_exact(n in parties(), seed in any::<u64>(), c in 1usize..3, hw in 2usize..6) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pool = Pool2d { channels: c, height: hw, width: hw, kernel: [2, 2], stride: [2, 2] };
        let batch = 2;
        let x: Vec<u64> = (0..batch * pool.input_len()).map(|_| rng.random_range(-1000i64..1000) as u64).collect();
        let cols = 1 + (seed % 9) as usize;
        let rows = 3;
        let y: Vec<u64> = (0..rows * cols).map(|_| rng.random_range(-5i64..5) as u64).collect();
        let mut reqs = requests::max_pool2d(&pool, batch);
        reqs.extend(requests::argmax(rows, cols));
        let got = run_auth(n, &[x.clone(), y.clone()], reqs, &|p, s| {
            let mp = p.max_pool2d(&s[0], batch, &pool)?;
            let am = p.argmax(&s[1], rows, cols)?;
            Ok(<veil_protocols::spdz2k::Spdz2k as veil_protocols::domain::Domain>::concat(&[mp, am]))
        }).expect("verifies");
        let [oh, ow] = pool.output_hw().expect("fits");
        let mut want = Vec::new();
        for plane in 0..batch * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let at = |dy: usize, dx: usize| x[plane * hw * hw + (2 * oy + dy) * hw + 2 * ox + dx] as i64;
                    want.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)) as u64);
                }
            }
        }
        for r in 0..rows {
            let row: Vec<i64> = (0..cols).map(|j| y[r * cols + j] as i64).collect();
            let best = *row.iter().max().expect("cols > 0");
            want.push(row.iter().position(|&v| v == best).expect("present") as u64);
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn fixed_weight_products_are_exact(n in parties(), seed in any::<u64>(), conv in any::<bool>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let batch = 2;
        let lowering = if conv {
            Lowering::Conv2d(Conv2dGeometry { in_channels: 2, height: 5, width: 4, kernel: [3, 2], stride: [1, 2], padding: [1, 0] })
        } else {
            Lowering::Dense { features: 7 }
        };
        let outputs = 3;
        let inner = lowering.inner();
        let w: Vec<u64> = (0..inner * outputs).map(|_| rng.random()).collect();
        let x: Vec<u64> = (0..batch * lowering.input_len()).map(|_| rng.random()).collect();
        // Setup by opening W - B from authenticated weight shares (the semi2k way), then one product.
        let mut reqs = vec![Request::WeightMask { weight: 0, len: inner * outputs }];
        reqs.extend(requests::weight_product(0, lowering, batch, outputs));
        let got = run_auth(n, &[x.clone(), w.clone()], reqs, &|p, s| {
            let mask = p.material().weight_mask(0, inner * outputs)?;
            let fixed = p.setup_weight(0, &s[1], &mask, [inner, outputs])?;
            p.weight_product(&s[0], batch, lowering, &fixed)
        }).expect("verifies");
        let rows = batch * lowering.rows_per_item();
        let mut want = vec![0; rows * outputs];
        NaiveGemm.gemm(rows, inner, outputs, &lowering.lower(&x, batch).expect("fits"), &w, &mut want);
        prop_assert_eq!(got, want);
    }
}

/// A dense product large enough to be checked by projection (`spdz2k::product_check`) instead of carrying MACs
/// through it: the weight's setup opens once, the product twice (the masked activation, then the masked
/// product). Returns the opened product.
fn checked_dense_product(
    n: usize,
    x: &[u64],
    w: &[u64],
    [batch, inner, outputs]: [usize; 3],
    adversary: Option<Adversary>,
) -> veil_protocols::Result<Vec<u64>> {
    let lowering = Lowering::Dense { features: inner };
    let mut reqs = vec![Request::WeightMask {
        weight: 0,
        len: inner * outputs,
    }];
    reqs.extend(requests::weight_product(0, lowering, batch, outputs));
    run_auth_against(n, &[x.to_vec(), w.to_vec()], reqs, adversary, &|p, s| {
        let mask = p.material().weight_mask(0, inner * outputs)?;
        let fixed = p.setup_weight(0, &s[1], &mask, [inner, outputs])?;
        let before = p.openings();
        let z = p.weight_product(&s[0], batch, lowering, &fixed)?;
        assert_eq!(
            p.openings() - before,
            2,
            "the product was checked, not authenticated"
        );
        Ok(z)
    })
}

#[test]
fn wide_unchecked_products_through_split_shares_are_exact_and_verify() {
    // 70 output columns: the weight's value and MAC shares are multiplied in split form (`split_gemm`); the
    // product is too small to be checked, so it carries its MACs, and the MAC check covers them.
    let [batch, inner, outputs] = [1, 20, 70];
    assert!(!uses_product_check(batch, inner, outputs));
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let w: Vec<u64> = (0..inner * outputs).map(|_| rng.random()).collect();
    let x: Vec<u64> = (0..batch * inner).map(|_| rng.random()).collect();
    let lowering = Lowering::Dense { features: inner };
    let mut want = vec![0; batch * outputs];
    NaiveGemm.gemm(batch, inner, outputs, &x, &w, &mut want);
    for n in [2, 3] {
        let mut reqs = vec![Request::WeightMask {
            weight: 0,
            len: inner * outputs,
        }];
        reqs.extend(requests::weight_product(0, lowering, batch, outputs));
        let got = run_auth(n, &[x.clone(), w.clone()], reqs, &|p, s| {
            let mask = p.material().weight_mask(0, inner * outputs)?;
            let fixed = p.setup_weight(0, &s[1], &mask, [inner, outputs])?;
            p.weight_product(&s[0], batch, lowering, &fixed)
        })
        .expect("verifies");
        assert_eq!(got, want, "n = {n}");
    }
}

#[test]
fn checked_products_are_exact_and_an_error_in_them_fails_the_check() {
    let [batch, inner, outputs] = [2, 160, 210];
    assert!(uses_product_check(batch, inner, outputs));
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let w: Vec<u64> = (0..inner * outputs).map(|_| rng.random()).collect();
    let x: Vec<u64> = (0..batch * inner).map(|_| rng.random()).collect();
    let mut want = vec![0; batch * outputs];
    NaiveGemm.gemm(batch, inner, outputs, &x, &w, &mut want);
    for n in [2, 3, 5] {
        let got = checked_dense_product(n, &x, &w, [batch, inner, outputs], None)
            .expect("honest runs verify");
        assert_eq!(got, want, "n = {n}");
        // The masked product's opening is the third (after W - B and the masked input). An error in a
        // party's share of it is what any wrong local product looks like to the others; bit 63 alone is the
        // case with the weakest bound (see `product_check`).
        for (party, delta) in [(n - 1, 1), (0, 1 << 40), (n / 2, 1 << 63)] {
            let flip = Adversary {
                kind: Deviation::FlipShare,
                party,
                at: 2,
                delta,
            };
            let result = checked_dense_product(n, &x, &w, [batch, inner, outputs], Some(flip));
            assert!(
                is_verification(result),
                "n = {n}: an error of {delta} in the opened product went unnoticed"
            );
        }
    }
}

fn is_verification(r: veil_protocols::Result<Vec<u64>>) -> bool {
    matches!(r, Err(ProtocolError::Verification(_)))
}

#[test]
fn a_wrong_share_or_mac_fails_the_check_and_honest_runs_pass() {
    use veil_protocols::domain::Domain;
    use veil_protocols::spdz2k::Spdz2k;
    let x: Vec<u64> = (0..20u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 3)
        .collect();
    for n in [2, 3, 5] {
        for cheat in 0..4 {
            let result = run_auth(
                n,
                std::slice::from_ref(&x),
                requests::relu(x.len()),
                &|p, s| {
                    let mut z = s[0].clone();
                    let me = p.id();
                    match cheat {
                        // An error in a value share (no MAC change) before the relu's openings.
                        1 if me == n - 1 => Spdz2k::corrupt(&mut z, 5, 1 << 40),
                        // An error in a MAC share only.
                        2 if me == 0 => Spdz2k::corrupt_mac(&mut z, 3, 7),
                        // An error that only touches bit 63: still a wrong value modulo 2^64.
                        3 if me == 1 => Spdz2k::corrupt(&mut z, 0, 1 << 63),
                        _ => {}
                    }
                    p.relu(&z)
                },
            );
            if cheat == 0 {
                let got = result.expect("honest runs verify");
                let want: Vec<u64> = x.iter().map(|&v| (v as i64).max(0) as u64).collect();
                assert_eq!(got, want);
            } else {
                assert!(
                    is_verification(result),
                    "n = {n}, cheat {cheat} went unnoticed"
                );
            }
        }
    }
}

#[test]
fn a_wrong_output_share_is_refused_by_the_recipient() {
    use veil_protocols::domain::Domain;
    use veil_protocols::spdz2k::Spdz2k;
    let x: Vec<u64> = vec![5, 6, 7];
    let result = run_auth(3, std::slice::from_ref(&x), vec![], &|p, s| {
        let mut z = s[0].clone();
        if p.id() == 2 {
            Spdz2k::corrupt(&mut z, 1, 1);
        }
        Ok(z)
    });
    assert!(is_verification(result));
}
