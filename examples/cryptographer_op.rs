//! A cryptographer writes a new protocol operation and benchmarks it against the existing one with the
//! protocol lab's accounting (bytes, rounds, dealer material) and network shaping.
//!
//! Run: `cargo run --release --example cryptographer_op`
//!
//! The operation: ReLU6, `min(max(x, 0), 6)`, used by mobile networks.
//! - Existing composition: `6 - relu(6 - relu(x))`, two ReLUs one after the other: two sign tests in
//!   sequence, so twice the rounds of one.
//! - New operation: `relu(x) - relu(x - 6)` (equal for every x), whose two ReLUs do not depend on each
//!   other, so they run as ONE batched sign test of `2n` values: the same bytes and dealer material, half
//!   the rounds. Under a 40 ms WAN that is where the time goes.
//!
//! Both run on a 3-party semi2k committee in this process, on a LAN (0.1 ms, 10 Gbit/s) and a WAN (40 ms,
//! 100 Mbit/s) emulated by `veil_engine::lab::shaping`, and are checked against plaintext.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use veil_engine::kernel::RingGemm;
use veil_engine::lab::shaping::ShapingConfig;
use veil_protocols::material::MaterialUse;
use veil_protocols::net::{Net, NetStats};
use veil_protocols::ring::{self, FixedPoint};
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds};
use veil_protocols::semi2k::{requests, Party};
use veil_protocols::share::{reconstruct, share};

const PARTIES: usize = 3;
const LEN: usize = 4096;

/// The existing way: `6 - relu(6 - relu(x))` (two dependent sign tests).
fn relu6_sequential<N: Net>(
    p: &mut Party<N>,
    x: &[u64],
    six: &[u64],
) -> veil_protocols::Result<Vec<u64>> {
    let r = p.relu(&x.to_vec())?;
    let mut t = p.share_public(six);
    ring::sub_assign(&mut t, &r);
    let r2 = p.relu(&t)?;
    let mut out = p.share_public(six);
    ring::sub_assign(&mut out, &r2);
    Ok(out)
}

/// The new operation: `relu(x) - relu(x - 6)`, both ReLUs in one batched sign test.
fn relu6_batched<N: Net>(
    p: &mut Party<N>,
    x: &[u64],
    minus_six: &[u64],
) -> veil_protocols::Result<Vec<u64>> {
    let mut shifted = x.to_vec();
    p.add_public(&mut shifted, minus_six);
    let both: Vec<u64> = x.iter().chain(&shifted).copied().collect();
    let r = p.relu(&both)?;
    let (a, b) = r.split_at(x.len());
    let mut out = a.to_vec();
    ring::sub_assign(&mut out, b);
    Ok(out)
}

struct Measured {
    elapsed: Duration,
    net: NetStats,
    material: MaterialUse,
    max_err: f64,
}

fn measure(batched: bool, shaping: Option<ShapingConfig>) -> Result<Measured> {
    let fp = FixedPoint::default();
    // Inputs across [-10, 10], so both kinks (0 and 6) are crossed.
    let xs: Vec<f32> = (0..LEN)
        .map(|i| -10.0 + 20.0 * i as f32 / (LEN - 1) as f32)
        .collect();
    let mut rng = StdRng::seed_from_u64(1);
    let shares = share(&fp.encode(&xs)?, PARTIES, &mut rng)?;
    let six = fp.encode(&vec![6.0; LEN])?;
    let minus_six = fp.encode(&vec![-6.0; LEN])?;
    let requests = if batched {
        requests::relu(2 * LEN)
    } else {
        [requests::relu(LEN), requests::relu(LEN)].concat()
    };
    let mut committee = Committee::new(PARTIES, Arc::new(RingGemm::new(1)));
    committee.link = shaping.map(veil_engine::lab::shaping::link);
    let started = Instant::now();
    let result = run(
        &committee,
        &requests,
        &[],
        &DealtSeeds::random(PARTIES),
        |p, _masks| {
            let x = &shares[p.id()];
            let (net0, mat0) = (p.stats().clone(), p.material_use());
            let out = if batched {
                relu6_batched(p, x, &minus_six)
            } else {
                relu6_sequential(p, x, &six)
            }?;
            Ok((out, p.stats().since(&net0), p.material_use().since(&mat0)))
        },
    )?;
    let elapsed = started.elapsed();
    let outs: Vec<Vec<u64>> = result.parties.iter().map(|p| p.value.0.clone()).collect();
    let got = fp.decode(&reconstruct(&outs)?);
    let max_err = got
        .iter()
        .zip(&xs)
        .map(|(g, x)| f64::from((g - x.clamp(0.0, 6.0)).abs()))
        .fold(0.0, f64::max);
    let busiest = result
        .parties
        .iter()
        .max_by_key(|p| p.value.1.bytes_sent)
        .map(|p| (p.value.1.clone(), p.value.2))
        .unwrap_or_default();
    Ok(Measured {
        elapsed,
        net: busiest.0,
        material: busiest.1,
        max_err,
    })
}

fn main() -> Result<()> {
    let lan = ShapingConfig::new(0.1, Some(10_000.0))?;
    let wan = ShapingConfig::new(40.0, Some(100.0))?;
    println!("ReLU6 of {LEN} values, {PARTIES} parties, semi2k");
    println!(
        "{:<10} {:<6} {:>10} {:>8} {:>10} {:>14} {:>10}",
        "variant", "net", "ms", "rounds", "KB sent", "material KB", "max err"
    );
    for (name, net) in [("lan", lan), ("wan", wan)] {
        let mut rounds = Vec::new();
        for batched in [false, true] {
            let m = measure(batched, Some(net))?;
            ensure!(m.max_err < 1e-3, "wrong result: error {}", m.max_err);
            println!(
                "{:<10} {:<6} {:>10.2} {:>8} {:>10.1} {:>14.1} {:>10.1e}",
                if batched { "batched" } else { "existing" },
                name,
                m.elapsed.as_secs_f64() * 1e3,
                m.net.rounds,
                m.net.bytes_sent as f64 / 1e3,
                m.material.words as f64 * 8.0 / 1e3,
                m.max_err
            );
            rounds.push(m.net.rounds);
        }
        ensure!(rounds[1] < rounds[0], "batching must save rounds");
    }
    Ok(())
}
