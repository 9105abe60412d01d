//! Helpers shared by the engine's integration tests: small random models built from burn modules.

#![allow(dead_code)]

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use veil_engine::{Layer, Model};

/// The device every test model lives on.
pub fn device() -> Device {
    Device::flex()
}

/// `len` values drawn uniformly from `[-k, k)`.
pub fn uniform(rng: &mut ChaCha8Rng, len: usize, k: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-k..k)).collect()
}

/// A linear layer `d_in -> d_out` with weights and bias uniform in `+-1/sqrt(d_in)`.
pub fn linear(rng: &mut ChaCha8Rng, d_in: usize, d_out: usize) -> Layer {
    let dev = device();
    let mut l = LinearConfig::new(d_in, d_out).init(&dev);
    let k = 1.0 / (d_in as f32).sqrt();
    l.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(rng, d_in * d_out, k), [d_in, d_out]),
        &dev,
    ));
    l.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(rng, d_out, k), [d_out]),
        &dev,
    )));
    Layer::Linear(l)
}

/// A `k x k` convolution `c_in -> c_out` (stride and padding as given), weights uniform in
/// `+-1/sqrt(fan_in)` and biases in `+-0.5`.
pub fn conv(
    rng: &mut ChaCha8Rng,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Layer {
    let dev = device();
    let mut c = Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(&dev);
    let fan = (c_in * k * k) as f32;
    c.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(
            uniform(rng, c_out * c_in * k * k, 1.0 / fan.sqrt()),
            [c_out, c_in, k, k],
        ),
        &dev,
    ));
    c.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(rng, c_out, 0.5), [c_out]),
        &dev,
    )));
    Layer::Conv2d(c)
}

/// A ReLU layer.
pub fn relu() -> Layer {
    Layer::Relu(Relu::new())
}

/// A `k x k` max pooling with burn's default stride and no padding.
pub fn pool(k: usize) -> Layer {
    Layer::MaxPool2d(MaxPool2dConfig::new([k, k]).init())
}

/// A model named `test` over `input`, built from `layers` (panics if they do not chain).
pub fn model(input: Vec<usize>, layers: Vec<Layer>) -> Model {
    Model::new("test", input, layers, device()).expect("layers chain")
}
