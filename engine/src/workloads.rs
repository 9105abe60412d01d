//! The benchmark workloads, with random weights from a fixed seed (Kaiming-uniform: `U(-1/sqrt(fan_in),
//! 1/sqrt(fan_in))`, drawn with ChaCha so that every machine builds the same model).

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{LinearConfig, Relu};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::model::{Layer, Model};

/// Names of the model workloads `veil bench` knows.
pub const MODEL_WORKLOADS: [&str; 2] = ["network-a", "lenet"];

fn uniform(rng: &mut ChaCha8Rng, len: usize, fan_in: usize) -> Vec<f32> {
    let k = 1.0 / (fan_in as f32).sqrt();
    (0..len).map(|_| rng.random_range(-k..k)).collect()
}

fn linear(rng: &mut ChaCha8Rng, d_in: usize, d_out: usize, device: &Device) -> Layer {
    let mut l = LinearConfig::new(d_in, d_out).init(device);
    l.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(rng, d_in * d_out, d_in), [d_in, d_out]),
        device,
    ));
    l.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(rng, d_out, d_in), [d_out]),
        device,
    )));
    Layer::Linear(l)
}

fn conv(rng: &mut ChaCha8Rng, c_in: usize, c_out: usize, k: usize, device: &Device) -> Layer {
    let mut c = Conv2dConfig::new([c_in, c_out], [k, k]).init(device);
    let fan_in = c_in * k * k;
    c.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(rng, c_out * fan_in, fan_in), [c_out, c_in, k, k]),
        device,
    ));
    c.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(uniform(rng, c_out, fan_in), [c_out]),
        device,
    )));
    Layer::Conv2d(c)
}

/// Network-A (SecureML / MiniONN): MLP 784-128-128-10 with ReLU.
pub fn network_a(seed: u64, device: &Device) -> Result<Model> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let layers = vec![
        linear(&mut rng, 784, 128, device),
        Layer::Relu(Relu::new()),
        linear(&mut rng, 128, 128, device),
        Layer::Relu(Relu::new()),
        linear(&mut rng, 128, 10, device),
    ];
    Model::new("network-a", vec![784], layers, device.clone())
}

/// LeNet-like CNN on 1x28x28: conv 5x5 1->16, ReLU, maxpool 2, conv 5x5 16->16, ReLU, maxpool 2,
/// fc 256->100, ReLU, fc 100->10.
pub fn lenet(seed: u64, device: &Device) -> Result<Model> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pool = || Layer::MaxPool2d(MaxPool2dConfig::new([2, 2]).init());
    let layers = vec![
        conv(&mut rng, 1, 16, 5, device),
        Layer::Relu(Relu::new()),
        pool(),
        conv(&mut rng, 16, 16, 5, device),
        Layer::Relu(Relu::new()),
        pool(),
        Layer::Flatten,
        linear(&mut rng, 256, 100, device),
        Layer::Relu(Relu::new()),
        linear(&mut rng, 100, 10, device),
    ];
    Model::new("lenet", vec![1, 28, 28], layers, device.clone())
}

/// A model workload by name.
pub fn by_name(name: &str, seed: u64, device: &Device) -> Option<Result<Model>> {
    match name {
        "network-a" => Some(network_a(seed, device)),
        "lenet" => Some(lenet(seed, device)),
        _ => None,
    }
}

/// A deterministic input batch in `[0, 1)`, like normalised pixels.
pub fn sample_input(model: &Model, batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..batch * model.input_len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect()
}
