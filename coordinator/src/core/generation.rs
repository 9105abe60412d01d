//! Generation jobs (`smollm2-135m-instruct`, a deployed pretrained chat model): the request of one chat
//! turn checked and its demand estimated. A turn is one job: `batch` is the prompt's length, `inferences`
//! the most tokens; the parties keep their key/value cache shares for the job's lifetime and the client
//! drives the decode steps on its own streams to them (`veil_node::generation`), so the coordinator relays
//! only the small sealed tickets.
//!
//! Bounds: a turn caches at most [`MAX_POSITIONS`] positions (a party's cache share at most
//! `MAX_POSITIONS x 30 layers x 2 x 192 x 8` bytes, 47 MB), and runs at most the configured running timeout.

use veil_node::api::SubmitRequest;
use veil_node::envelope::SealingKey;
use veil_protocols::protocol::Protocol;
use veil_scheduler::{JobDemand, RoleDemand};

use super::submission::{job_demand, weight_mode};
use crate::error::{Error, Result};

pub use veil_node::generation::MAX_POSITIONS;

/// SmolLM2's public weights in 64-bit fixed point, as a party holds them (measured: 1.3 GB).
const PARTY_WEIGHT_BYTES: u64 = 1_400_000_000;
/// A party's cache share per position: 30 layers x (keys + values) x 192 x 8 bytes.
const CACHE_BYTES_PER_POSITION: u64 = 30 * 2 * 192 * 8;
/// Ring operations per position, about: two per weight of the blocks and the tied head (135M).
const OPS_PER_POSITION: u64 = 2 * 135_000_000;
/// Bytes a party sends per decode step (measured, semi2k, 3 parties: 46.5 MB).
const BYTES_PER_STEP: u64 = 47_000_000;
/// Dealer bytes per step and party (measured: 23.2 MB).
const DEALER_BYTES_PER_STEP: u64 = 24_000_000;
/// Rounds per step (measured: 5100).
const ROUNDS_PER_STEP: u32 = 5_100;
/// Prompt positions per prefill step (`veil_engine::llama::run::PREFILL_CHUNK`).
const PREFILL_CHUNK: u32 = 8;

/// Checks a chat turn's request on deployed chat model `name` and estimates its demand (for selection,
/// load accounting and the running timeout only).
pub fn generation_demand_for(req: &SubmitRequest, name: &str) -> Result<JobDemand> {
    if req.shaping.is_some() {
        return Err(Error::LabOnly { field: "shaping" });
    }
    if req.threads.is_some() {
        return Err(Error::LabOnly { field: "threads" });
    }
    if req.workload != name {
        return Err(Error::malformed(
            "workload",
            "not the deployed chat model's name",
        ));
    }
    if req.stage.is_some() {
        return Err(Error::malformed("stage", "a chat turn runs in one stage"));
    }
    if weight_mode(&req.weights)? != veil_engine::WeightMode::Public {
        return Err(Error::malformed(
            "weights",
            "a chat model's weights are public",
        ));
    }
    if Protocol::parse(&req.protocol) != Some(Protocol::Semi2k) {
        return Err(Error::Unsupported {
            field: "protocol",
            value: req.protocol.chars().take(32).collect(),
            expected: "semi2k (private generation)",
        });
    }
    if !(2..=super::MAX_PARTIES).contains(&req.parties) {
        return Err(Error::OutOfRange {
            field: "parties",
            value: req.parties.into(),
            min: 2,
            max: super::MAX_PARTIES.into(),
        });
    }
    let max = MAX_POSITIONS as u64;
    for (field, value) in [("batch", req.batch), ("inferences", req.inferences)] {
        if !(1..=max).contains(&u64::from(value)) {
            return Err(Error::OutOfRange {
                field,
                value: value.into(),
                min: 1,
                max,
            });
        }
    }
    // The prompt and every generated token but the last are cached.
    let positions = u64::from(req.batch) + u64::from(req.inferences) - 1;
    if positions > max {
        return Err(Error::OutOfRange {
            field: "inferences",
            value: req.inferences.into(),
            min: 1,
            max: max + 1 - u64::from(req.batch),
        });
    }
    veil_protocols::ring::FixedPoint::new(req.frac_bits)
        .map_err(|e| Error::malformed("frac_bits", e))?;
    if let Some(k) = &req.output_key {
        k.parse::<SealingKey>()
            .map_err(|e| Error::malformed("output_key", e))?;
    }
    let steps = req.batch.div_ceil(PREFILL_CHUNK) + req.inferences - 1;
    Ok(job_demand(
        Protocol::Semi2k,
        req.parties,
        RoleDemand {
            memory_bytes: PARTY_WEIGHT_BYTES + CACHE_BYTES_PER_POSITION * positions + (64 << 20),
            ops: OPS_PER_POSITION * positions,
            bytes: BYTES_PER_STEP * u64::from(steps),
        },
        RoleDemand {
            memory_bytes: 256 << 20,
            ops: OPS_PER_POSITION * positions / 4,
            bytes: DEALER_BYTES_PER_STEP * u64::from(steps) * u64::from(req.parties),
        },
        RoleDemand {
            memory_bytes: 16 << 20,
            ops: 0,
            bytes: 0,
        },
        ROUNDS_PER_STEP.saturating_mul(steps),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(batch: u32, inferences: u32) -> SubmitRequest {
        SubmitRequest {
            workload: "smollm2-135m-instruct".into(),
            model_seed: 0,
            weights: "public".into(),
            frac_bits: 16,
            batch,
            inferences,
            parties: 3,
            model: Some("ab".repeat(32)),
            output_key: None,
            protocol: Protocol::Semi2k.to_string(),
            stage: None,
            threads: None,
            shaping: None,
        }
    }

    #[test]
    fn a_turn_is_bounded_by_its_cached_positions_and_runs_semi2k_only() {
        let name = "smollm2-135m-instruct";
        let d = generation_demand_for(&turn(32, 16), name).unwrap();
        // 32 prompt positions and 15 cached generated ones.
        assert_eq!(
            d.party.memory_bytes,
            PARTY_WEIGHT_BYTES + 47 * CACHE_BYTES_PER_POSITION + (64 << 20)
        );
        // Four prefill steps of 8 positions, then 15 decode steps.
        assert_eq!(d.rounds, 19 * ROUNDS_PER_STEP);
        assert!(generation_demand_for(&turn(500, 13), name).is_ok());
        assert!(generation_demand_for(&turn(500, 14), name).is_err());
        assert!(generation_demand_for(&turn(0, 4), name).is_err());
        assert!(generation_demand_for(&turn(8, 0), name).is_err());
        let mut spdz2k = turn(8, 4);
        spdz2k.protocol = Protocol::Spdz2k.to_string();
        assert!(generation_demand_for(&spdz2k, name).is_err());
        let mut other = turn(8, 4);
        other.workload = "all-minilm-l6-v2".into();
        assert!(generation_demand_for(&other, name).is_err());
        let mut shared = turn(8, 4);
        shared.weights = "shared".into();
        assert!(generation_demand_for(&shared, name).is_err());
    }
}
