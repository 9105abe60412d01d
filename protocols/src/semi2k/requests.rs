//! The dealer material each `semi2k` operation consumes, as a function of public shapes only.
//!
//! One function per operation, mirroring it exactly; a plan concatenates them in execution order. A mismatch
//! between a plan and the operations run is caught by `PartyMaterial`, which names the offending operation.

use crate::lowering::Lowering;
use crate::material::Request;

use super::pool::{tournament_levels, Pool2d};

/// [`super::Party::mul`] of `len` elements.
pub fn mul(len: usize) -> Vec<Request> {
    vec![Request::Triples { len }]
}

/// [`super::Party::matmul`].
pub fn matmul(m: usize, k: usize, n: usize) -> Vec<Request> {
    vec![Request::MatTriple { m, k, n }]
}

/// [`super::Party::weight_product`] with weight number `weight` of `outputs` columns.
pub fn weight_product(
    weight: usize,
    lowering: Lowering,
    batch: usize,
    outputs: usize,
) -> Vec<Request> {
    vec![Request::WeightTriple {
        weight,
        lowering,
        batch,
        outputs,
    }]
}

/// [`super::Party::trunc`].
pub fn trunc(len: usize, frac_bits: u32) -> Vec<Request> {
    vec![Request::Trunc { len, frac_bits }]
}

/// [`super::Party::relu`] and [`super::Party::max`].
pub fn relu(len: usize) -> Vec<Request> {
    vec![Request::Sign {
        len,
        truncate: None,
        payloads: 1,
    }]
}

/// [`super::Party::trunc_relu`].
pub fn trunc_relu(len: usize, frac_bits: u32) -> Vec<Request> {
    vec![Request::Sign {
        len,
        truncate: Some(frac_bits),
        payloads: 1,
    }]
}

/// [`super::Party::drelu`] and [`super::Party::greater_equal`].
pub fn drelu(len: usize) -> Vec<Request> {
    vec![Request::Sign {
        len,
        truncate: None,
        payloads: 1,
    }]
}

/// [`super::Party::max_pool2d`] over `batch` items.
pub fn max_pool2d(pool: &Pool2d, batch: usize) -> Vec<Request> {
    let width = batch * pool.output_len();
    tournament_levels(pool.window())
        .into_iter()
        .flat_map(|pairs| relu(pairs * width))
        .collect()
}

/// [`super::Party::argmax`] over `rows x cols`.
pub fn argmax(rows: usize, cols: usize) -> Vec<Request> {
    tournament_levels(cols)
        .into_iter()
        .map(|pairs| Request::Sign {
            len: pairs * rows,
            truncate: None,
            payloads: 2,
        })
        .collect()
}
