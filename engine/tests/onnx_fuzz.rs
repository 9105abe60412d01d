//! Property tests of ONNX import (issues 21 and 22): mutations of the shipped models (bit flips, truncation,
//! extension, overwritten runs and extreme integers, biased towards the start of the file where the
//! protobuf headers and the graph's first nodes are) must import as `Ok` or `Err`, never a panic; a graph
//! that imports must then run its plaintext forward pass and list its dealer material without a panic.

use std::path::PathBuf;

use proptest::prelude::*;
use veil_engine::onnx::{import, PrivateConfig, PrivateGraph};
use veil_protocols::ring::FixedPoint;

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Truncate { keep: usize },
    Extend { tail: Vec<u8> },
    Splice { at: usize, with: Vec<u8> },
    Integer { at: usize, value: u64 },
}

fn position() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0usize..512, 1 => any::<usize>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (position(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        position().prop_map(|keep| Mutation::Truncate { keep }),
        prop::collection::vec(any::<u8>(), 1..32).prop_map(|tail| Mutation::Extend { tail }),
        (position(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, with)| Mutation::Splice { at, with }),
        (
            position(),
            prop_oneof![Just(0u64), Just(u64::MAX), Just(1 << 40), any::<u64>()]
        )
            .prop_map(|(at, value)| Mutation::Integer { at, value }),
    ]
}

fn overwrite(out: &mut [u8], at: usize, with: &[u8]) {
    let len = out.len();
    for (i, b) in with.iter().enumerate() {
        out[(at + i) % len] = *b;
    }
}

fn apply(ms: &[Mutation], bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in ms {
        if out.is_empty() {
            break;
        }
        let len = out.len();
        match m {
            Mutation::Flip { at, bit } => out[at % len] ^= 1 << bit,
            Mutation::Truncate { keep } => out.truncate(keep % len),
            Mutation::Extend { tail } => out.extend_from_slice(tail),
            Mutation::Splice { at, with } => overwrite(&mut out, *at, with),
            Mutation::Integer { at, value } => overwrite(&mut out, *at, &value.to_le_bytes()),
        }
    }
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/onnx");
    ["cnn", "resnet", "encoder", "misc"]
        .iter()
        .map(|n| std::fs::read(dir.join(format!("{n}.onnx"))).unwrap())
        .collect()
}

/// Imports `bytes`; if that succeeds, runs what a caller would run next.
fn exercise(bytes: &[u8]) {
    if let Ok(graph) = import(bytes) {
        let _ = graph.forward(&vec![0.5; graph.input_len()]);
        let config = PrivateConfig::new(FixedPoint::default()).unwrap();
        if let Ok(model) = PrivateGraph::new(graph, config) {
            let _ = model.requests(1);
        }
    }
}

#[test]
fn every_seed_imports() {
    for s in seeds() {
        assert!(import(&s).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn mutated_models_never_panic(
        which in 0usize..4,
        ms in prop::collection::vec(mutation(), 1..4),
    ) {
        let s = &seeds()[which];
        exercise(&apply(&ms, s));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }
}
