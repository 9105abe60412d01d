//! The models shipped in `models/` (trained by `examples/train_models.rs` on real data): they load, their
//! ids are stable, their plaintext accuracy on the shipped held-out slices is what the training reported, and
//! a private run (semi2k, 3 parties, in memory) predicts exactly the plaintext class for every row.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use veil_engine::kernel::RingGemm;
use veil_engine::local::{run_private, LocalOptions};
use veil_engine::model_file::{argmax, ModelFile};
use veil_engine::{Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Rows of `features..., class`.
fn rows(path: &Path, features: usize) -> (Vec<Vec<f32>>, Vec<usize>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: Vec<f32> = line.split(',').map(|c| c.parse().unwrap()).collect();
        assert_eq!(v.len(), features + 1);
        ys.push(v[features] as usize);
        xs.push(v[..features].to_vec());
    }
    (xs, ys)
}

fn check(name: &str, features: usize, min_accuracy: f32) {
    let device = burn::tensor::Device::flex();
    let file = ModelFile::load(&models().join(name).join("model.safetensors"), &device).unwrap();
    let (xs, ys) = rows(&models().join(name).join("test.csv"), features);
    let batch = xs.len();
    let input: Vec<f32> = xs
        .iter()
        .flat_map(|x| file.prepare_input(x, 1).unwrap())
        .collect();
    let plain = file.model().forward_plain(&input, batch).unwrap();
    let classes = file.model().output_len();
    let plain_pred: Vec<usize> = plain.chunks(classes).map(|c| argmax(c).unwrap()).collect();
    let right = plain_pred.iter().zip(&ys).filter(|(p, y)| p == y).count();
    let accuracy = right as f32 / batch as f32;
    assert!(
        accuracy >= min_accuracy,
        "{name}: plaintext accuracy {accuracy} < {min_accuracy}"
    );

    let plan = Plan::compile(file.model(), FixedPoint::default(), WeightMode::Shared).unwrap();
    let mut options = LocalOptions::new(3, Arc::new(RingGemm::new(1)));
    options.seed = Some(5);
    let report = run_private(file.model(), &plan, &[input], batch, &options).unwrap();
    let private = &report.outputs[0];
    let err = private
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-2, "{name}: private logits differ by {err}");
    let private_pred: Vec<usize> = private
        .chunks(classes)
        .map(|c| argmax(c).unwrap())
        .collect();
    assert_eq!(
        private_pred, plain_pred,
        "{name}: private and plaintext predictions differ"
    );
}

#[test]
fn breast_cancer_private_predictions_equal_plaintext_on_the_whole_slice() {
    check("breast-cancer", 30, 0.9);
}

#[test]
fn mnist_private_predictions_equal_plaintext_on_the_whole_slice() {
    check("mnist", 784, 0.9);
}

#[test]
fn shipped_model_ids_are_stable() {
    let device = burn::tensor::Device::flex();
    let id = |name: &str| {
        ModelFile::load(&models().join(name).join("model.safetensors"), &device)
            .unwrap()
            .id()
            .to_string()
    };
    // The ids the training run printed; a change means the shipped weights changed.
    assert_eq!(
        id("breast-cancer"),
        "a5e31fcaf8f2ab53bc046cda5a364c2c77c0338d427c862a6efe4d02cfc095db"
    );
    assert_eq!(
        id("mnist"),
        "4885cdd129f17f24f456cb9ad0255232c44db82c22b22c1a7d89e91ee3d6af54"
    );
}
