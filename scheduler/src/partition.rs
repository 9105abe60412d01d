//! Splitting a model that does not fit one committee into stages: contiguous layer ranges, each run by its
//! own committee, one after the other (a pipeline).
//!
//! Invariants of [`partition`]'s result: the ranges are non-empty, contiguous and in order, cover
//! `0..layer_memory.len()` exactly, each range's memory is at most `max_stage_memory`, their number is the
//! minimum possible, and among partitions with that number of stages the largest stage is as small as
//! possible (so that stages are balanced and need the least memory per party).

use std::ops::Range;

use thiserror::Error;

/// Why a model cannot be partitioned.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PartitionError {
    /// One layer alone needs more memory than a stage may hold.
    #[error("layer {layer} needs {bytes} bytes, more than a stage may hold ({max} bytes)")]
    LayerTooLarge {
        /// The layer's index.
        layer: usize,
        /// Its memory.
        bytes: u64,
        /// The limit per stage.
        max: u64,
    },
}

/// Greedy cut with threshold `limit` (every layer must be <= limit): the fewest stages whose sums are at
/// most `limit`, each stage as long as possible.
fn greedy(layer_memory: &[u64], limit: u64) -> Vec<Range<usize>> {
    let mut stages = Vec::new();
    let mut start = 0;
    let mut sum: u64 = 0;
    for (i, &m) in layer_memory.iter().enumerate() {
        match sum.checked_add(m) {
            Some(s) if s <= limit => sum = s,
            _ => {
                stages.push(start..i);
                start = i;
                sum = m;
            }
        }
    }
    if start < layer_memory.len() {
        stages.push(start..layer_memory.len());
    }
    stages
}

/// Partitions layers (given by their memory) into the fewest contiguous stages of at most `max_stage_memory`
/// bytes each, balanced as stated in the module doc. An empty model gives no stages.
///
/// Cost: O(L log(max_stage_memory)).
pub fn partition(
    layer_memory: &[u64],
    max_stage_memory: u64,
) -> Result<Vec<Range<usize>>, PartitionError> {
    if let Some((layer, &bytes)) = layer_memory
        .iter()
        .enumerate()
        .find(|(_, &m)| m > max_stage_memory)
    {
        return Err(PartitionError::LayerTooLarge {
            layer,
            bytes,
            max: max_stage_memory,
        });
    }
    if layer_memory.is_empty() {
        return Ok(Vec::new());
    }
    let fewest = greedy(layer_memory, max_stage_memory).len();
    // The smallest threshold that still gives `fewest` stages: greedy's stage count is monotone
    // (non-increasing) in the threshold, so binary search it between the largest layer and the limit.
    let mut lo = layer_memory.iter().copied().max().unwrap_or(0);
    let mut hi = max_stage_memory;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if greedy(layer_memory, mid).len() <= fewest {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(greedy(layer_memory, lo))
}

/// The memory of one stage.
pub fn stage_memory(layer_memory: &[u64], stage: &Range<usize>) -> u64 {
    layer_memory[stage.clone()]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b))
}
