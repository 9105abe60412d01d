//! Every semi2k operation against its plaintext counterpart, for n in {2, 3, 5}, over random inputs.
//!
//! Error bounds (in ulps of 2^-f unless said otherwise), each asserted below:
//! - open, add, mul by public, Beaver mul and matmul (before truncation): exact in the ring.
//! - trunc: result in {floor(z / 2^f), floor(z / 2^f) + 1} (at most 1 ulp, never below).
//! - ReLU, max, max pooling, argmax, DReLU, comparison: exact.
//! - trunc + ReLU: max(trunc(z), 0) with trunc as above, so at most 1 ulp.

use std::sync::Arc;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_protocols::gemm::{Gemm, NaiveGemm};
use veil_protocols::lowering::{Conv2dGeometry, Lowering};
use veil_protocols::material::Request;
use veil_protocols::prg::Seed;
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds};
use veil_protocols::semi2k::{requests, Pool2d};
use veil_protocols::share::{reconstruct, share};

/// Runs `program` on `n` parties, each given its share of every input; returns the reconstructed outputs.
fn run_shared<F>(
    n: usize,
    inputs: &[Vec<u64>],
    reqs: Vec<Request>,
    masks: &[usize],
    program: F,
) -> Vec<u64>
where
    F: Fn(
            &mut veil_protocols::semi2k::Party<veil_protocols::semi2k::local::LocalNet>,
            &[Vec<u64>],
            Vec<Vec<u64>>,
        ) -> veil_protocols::Result<Vec<u64>>
        + Sync,
{
    let mut rng = ChaCha8Rng::seed_from_u64(inputs.len() as u64 * 7 + n as u64);
    let shared: Vec<Vec<Vec<u64>>> = inputs
        .iter()
        .map(|x| share(x, n, &mut rng).expect("n >= 2"))
        .collect();
    let committee = Committee::new(n, Arc::new(NaiveGemm));
    let out = run(
        &committee,
        &reqs,
        masks,
        &DealtSeeds::random(n),
        |party, party_masks| {
            let mine: Vec<Vec<u64>> = shared.iter().map(|s| s[party.id()].clone()).collect();
            program(party, &mine, party_masks)
        },
    )
    .expect("run succeeds");
    reconstruct(&out.parties.into_iter().map(|p| p.value).collect::<Vec<_>>())
        .expect("same lengths")
}

fn signed(v: i64) -> u64 {
    v as u64
}

fn values(len: std::ops::Range<usize>, bound: i64) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(-bound..bound, len).prop_map(|v| v.into_iter().map(signed).collect())
}

fn parties() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![2usize, 3, 5])
}

const BIG: i64 = 1 << 61;

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn share_then_reconstruct_is_identity(n in parties(), x in values(0..50, i64::MAX)) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let shares = share(&x, n, &mut rng).expect("n >= 2");
        prop_assert_eq!(shares.len(), n);
        prop_assert_eq!(reconstruct(&shares).expect("same lengths"), x);
    }

    #[test]
    fn open_and_linear_ops_are_exact(n in parties(), x in values(1..40, i64::MAX), k in any::<u64>()) {
        let y: Vec<u64> = x.iter().map(|v| v.rotate_left(7)).collect();
        let got = run_shared(n, &[x.clone(), y.clone()], vec![], &[], |p, s, _| {
            let mut z = s[0].clone();
            veil_protocols::ring::add_assign(&mut z, &s[1]);
            let mut z: Vec<u64> = z.iter().map(|v| v.wrapping_mul(k)).collect();
            let threes = vec![3; z.len()];
            p.add_public(&mut z, &threes);
            let opened = p.open(&z)?;
            // Every party learns the value; return it as a sharing (party 0 holds it) to reuse the harness.
            Ok(if p.id() == 0 { opened } else { vec![0; opened.len()] })
        });
        let want: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a.wrapping_add(*b).wrapping_mul(k).wrapping_add(3)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn beaver_mul_is_exact(n in parties(), x in values(1..40, i64::MAX)) {
        let y: Vec<u64> = x.iter().map(|v| v ^ 0x5555).collect();
        let got = run_shared(n, &[x.clone(), y.clone()], requests::mul(x.len()), &[], |p, s, _| p.mul(&s[0], &s[1]));
        prop_assert_eq!(got, veil_protocols::ring::mul(&x, &y));
    }

    #[test]
    fn matmul_is_exact(n in parties(), m in 1usize..5, k in 1usize..7, c in 1usize..5, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<u64> = (0..m * k).map(|_| rng.random()).collect();
        let y: Vec<u64> = (0..k * c).map(|_| rng.random()).collect();
        let got = run_shared(n, &[x.clone(), y.clone()], requests::matmul(m, k, c), &[], |p, s, _| p.matmul(&s[0], &s[1], [m, k, c]));
        let mut want = vec![0; m * c];
        NaiveGemm.gemm(m, k, c, &x, &y, &mut want);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn trunc_is_within_one_ulp_below(n in parties(), x in values(1..60, BIG)) {
        let got = run_shared(n, std::slice::from_ref(&x), requests::trunc(x.len(), 16), &[], |p, s, _| p.trunc(&s[0]));
        for (g, v) in got.iter().zip(&x) {
            let exact = (*v as i64) >> 16;
            let diff = *g as i64 - exact;
            prop_assert!(diff == 0 || diff == 1, "trunc({}) = {}, exact {}", *v as i64, *g as i64, exact);
        }
    }

    #[test]
    fn relu_drelu_and_compare_are_exact(n in parties(), x in values(1..80, BIG)) {
        let zero_and_edges: Vec<u64> = x.iter().copied().chain([0u64, 1, u64::MAX, signed(-BIG + 1), signed(BIG - 1)]).collect();
        let len = zero_and_edges.len();
        let mut reqs = requests::relu(len);
        reqs.extend(requests::drelu(len));
        let got = run_shared(n, std::slice::from_ref(&zero_and_edges), reqs, &[], |p, s, _| {
            let mut out = p.relu(&s[0])?;
            out.extend(p.drelu(&s[0])?);
            Ok(out)
        });
        for (i, v) in zero_and_edges.iter().enumerate() {
            let v = *v as i64;
            prop_assert_eq!(got[i] as i64, v.max(0));
            prop_assert_eq!(got[len + i], u64::from(v >= 0));
        }
    }

    #[test]
    fn trunc_relu_is_within_one_ulp(n in parties(), x in values(1..60, BIG)) {
        let got = run_shared(n, std::slice::from_ref(&x), requests::trunc_relu(x.len(), 16), &[], |p, s, _| p.trunc_relu(&s[0]));
        for (g, v) in got.iter().zip(&x) {
            let exact = ((*v as i64) >> 16).max(0);
            let diff = *g as i64 - exact;
            prop_assert!(diff == 0 || diff == 1,
                "trunc_relu({}) = {}, exact {}", *v as i64, *g as i64, exact);
        }
    }

    #[test]
    fn max_pool_and_argmax_are_exact(n in parties(), seed in any::<u64>(), c in 1usize..3, hw in 2usize..6) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pool = Pool2d { channels: c, height: hw, width: hw, kernel: [2, 2], stride: [2, 2] };
        let batch = 2;
        let x: Vec<u64> = (0..batch * pool.input_len()).map(|_| signed(rng.random_range(-1000..1000))).collect();
        let cols = 1 + (seed % 9) as usize;
        let rows = 3;
        let y: Vec<u64> = (0..rows * cols).map(|_| signed(rng.random_range(-5..5))).collect();
        let mut reqs = requests::max_pool2d(&pool, batch);
        reqs.extend(requests::argmax(rows, cols));
        let got = run_shared(n, &[x.clone(), y.clone()], reqs, &[], |p, s, _| {
            let mut out = p.max_pool2d(&s[0], batch, &pool)?;
            out.extend(p.argmax(&s[1], rows, cols)?);
            Ok(out)
        });
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
        let reqs = requests::weight_product(0, lowering, batch, outputs);
        let got = run_shared(n, &[x.clone(), w.clone()], reqs.clone(), &[inner * outputs], |p, s, masks| {
            let fixed = p.setup_weight(0, &s[1], &masks[0], [inner, outputs])?;
            p.weight_product(&s[0], batch, lowering, &fixed)
        });
        let rows = batch * lowering.rows_per_item();
        let mut want = vec![0; rows * outputs];
        NaiveGemm.gemm(rows, inner, outputs, &lowering.lower(&x, batch).expect("fits"), &w, &mut want);
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_plan_that_disagrees_with_the_operations_is_a_clear_error() {
    let committee = Committee::new(3, Arc::new(NaiveGemm));
    let seeds = DealtSeeds::from_master(&Seed([7; 32]), 3);
    let err = run(&committee, &requests::relu(4), &[], &seeds, |p, _| {
        p.trunc(&vec![0; 4])
    })
    .err()
    .expect("mismatch must fail");
    assert!(err.to_string().contains("asked for Trunc"), "{err}");
    let err = run(&committee, &requests::relu(4), &[], &seeds, |_, _| Ok(()))
        .err()
        .expect("unconsumed must fail");
    assert!(
        err.to_string().contains("0 of 1 requests consumed"),
        "{err}"
    );
}

#[test]
fn fewer_than_two_parties_is_refused() {
    let committee = Committee::new(1, Arc::new(NaiveGemm));
    let err = run(&committee, &[], &[], &DealtSeeds::random(1), |_, _| Ok(()))
        .err()
        .expect("n = 1 must fail");
    assert!(err.to_string().contains("at least 2 parties"), "{err}");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(share(&[1, 2], 1, &mut rng).is_err());
}
