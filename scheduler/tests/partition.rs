//! Partitioning into stages: contiguous, covering, within the limit, minimal, balanced.

use proptest::prelude::*;
use veil_scheduler::partition::stage_memory;
use veil_scheduler::{partition, PartitionError};

/// Brute force: the fewest stages, and with that many the smallest possible largest stage.
fn best(layers: &[u64], max: u64) -> Option<(usize, u64)> {
    let n = layers.len();
    let mut found: Option<(usize, u64)> = None;
    // Every subset of the n-1 cut points.
    for mask in 0u32..(1 << n.saturating_sub(1)) {
        let mut stages = 1;
        let mut largest = 0;
        let mut sum = 0;
        for (i, &m) in layers.iter().enumerate() {
            sum += m;
            if i + 1 < n && mask & (1 << i) != 0 {
                largest = largest.max(sum);
                sum = 0;
                stages += 1;
            }
        }
        largest = largest.max(sum);
        if largest <= max && found.is_none_or(|(s, l)| (stages, largest) < (s, l)) {
            found = Some((stages, largest));
        }
    }
    found
}

proptest! {
    #[test]
    fn minimal_balanced_and_covering(layers in prop::collection::vec(0u64..100, 1..12), max in 1u64..300) {
        match partition(&layers, max) {
            Ok(stages) => {
                let mut next = 0;
                for s in &stages {
                    prop_assert_eq!(s.start, next);
                    prop_assert!(s.end > s.start);
                    prop_assert!(stage_memory(&layers, s) <= max);
                    next = s.end;
                }
                prop_assert_eq!(next, layers.len());
                let (fewest, smallest_largest) = best(&layers, max).expect("a valid partition exists");
                prop_assert_eq!(stages.len(), fewest);
                let largest = stages.iter().map(|s| stage_memory(&layers, s)).max().unwrap_or(0);
                prop_assert_eq!(largest, smallest_largest);
            }
            Err(PartitionError::LayerTooLarge { layer, bytes, max: m }) => {
                prop_assert_eq!(m, max);
                prop_assert_eq!(layers[layer], bytes);
                prop_assert!(bytes > max);
                prop_assert!(layers[..layer].iter().all(|&x| x <= max));
            }
        }
    }
}

#[test]
#[allow(clippy::single_range_in_vec_init)]
fn examples() {
    assert_eq!(partition(&[], 10), Ok(vec![]));
    assert_eq!(partition(&[5, 5, 5], 15), Ok(vec![0..3]));
    assert_eq!(partition(&[5, 5, 5, 5], 10), Ok(vec![0..2, 2..4]));
    // Greedy alone would give [0..2, 2..3] with stages of 10 and 1; balanced gives 4 and 7.
    assert_eq!(partition(&[4, 6, 1], 10), Ok(vec![0..1, 1..3]));
    assert_eq!(
        partition(&[3, 11, 2], 10),
        Err(PartitionError::LayerTooLarge {
            layer: 1,
            bytes: 11,
            max: 10
        })
    );
    assert_eq!(
        partition(&[u64::MAX, u64::MAX], u64::MAX),
        Ok(vec![0..1, 1..2])
    );
}
