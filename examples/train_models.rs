//! Trains the two models that veil ships in `models/`, with burn, from the real data sets, and writes them as
//! veil model files together with the held-out test slices the tests and `veil demo` use.
//!
//! ```text
//! scripts/fetch-data.sh                               # data/breast_cancer.csv, data/mnist_5k.csv.gz
//! cargo run --release --example train_models -- data models
//! ```
//!
//! - `models/breast-cancer/`: Wisconsin diagnostic breast cancer (569 x 30, classes malignant/benign), an MLP
//!   30-16-2 with ReLU on standardised features (the mean and scale are part of the model, applied by the
//!   client). 455 rows train, 114 held out.
//! - `models/mnist/`: 5,000 MNIST digits (28x28), an MLP 784-64-10 with ReLU on pixels / 255. 4,500 rows train,
//!   500 held out; the first 100 held-out rows are shipped.
//!
//! Training is plain mini-batch gradient descent with momentum on the softmax cross-entropy, gradients written
//! out by hand with burn tensor operations (the model is two layers; burn's autodiff backend would add a
//! build-time cost to every crate for no gain here). The split and the initial weights come from fixed seeds,
//! so the run is reproducible on one machine (burn's float kernels may differ in the last bits elsewhere).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::Param;
use burn::nn::{LinearConfig, Relu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use veil_engine::model_file::{argmax, ModelFile, Standardize};
use veil_engine::{Layer, Model};

/// A data set: rows of features and a class per row.
struct Data {
    x: Vec<Vec<f32>>,
    y: Vec<usize>,
}

/// splitmix64: a tiny deterministic generator for the split, the batches and the initial weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-k, k).
    fn uniform(&mut self, k: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * k
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The two-layer perceptron being trained; weights in burn's layout (`[in, out]`).
struct Mlp {
    w1: Tensor<2>,
    b1: Tensor<1>,
    w2: Tensor<2>,
    b2: Tensor<1>,
}

impl Mlp {
    fn new(d_in: usize, hidden: usize, d_out: usize, rng: &mut Rng, device: &Device) -> Self {
        let init = |rng: &mut Rng, len: usize, fan_in: usize| -> Vec<f32> {
            let k = (6.0 / fan_in as f32).sqrt() / 2.0;
            (0..len).map(|_| rng.uniform(k)).collect()
        };
        Self {
            w1: Tensor::from_data(
                TensorData::new(init(rng, d_in * hidden, d_in), [d_in, hidden]),
                device,
            ),
            b1: Tensor::zeros([hidden], device),
            w2: Tensor::from_data(
                TensorData::new(init(rng, hidden * d_out, hidden), [hidden, d_out]),
                device,
            ),
            b2: Tensor::zeros([d_out], device),
        }
    }

    /// Hidden activations and logits of a batch `x` (`[n, d_in]`).
    fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let h = (x.matmul(self.w1.clone()) + self.b1.clone().unsqueeze()).clamp_min(0.0);
        let logits = h.clone().matmul(self.w2.clone()) + self.b2.clone().unsqueeze();
        (h, logits)
    }
}

/// Velocity of every parameter (momentum).
struct Velocity {
    w1: Tensor<2>,
    b1: Tensor<1>,
    w2: Tensor<2>,
    b2: Tensor<1>,
}

/// One step of gradient descent with momentum on a batch; returns the batch's mean loss.
fn step(
    mlp: &mut Mlp,
    vel: &mut Velocity,
    x: Tensor<2>,
    y: Tensor<1, Int>,
    classes: usize,
    lr: f32,
) -> Result<f32> {
    let n = x.dims()[0] as f32;
    let (h, logits) = mlp.forward(x.clone());
    // Softmax, stabilised by the row maximum.
    let shifted = logits.clone() - logits.max_dim(1);
    let exp = shifted.clone().exp();
    let sum = exp.clone().sum_dim(1);
    let probs = exp / sum.clone();
    let onehot: Tensor<2> = y.one_hot(classes).float();
    let loss = (sum.log() - (shifted * onehot.clone()).sum_dim(1)).mean();
    // Gradients of the mean cross-entropy.
    let d_logits = (probs - onehot).div_scalar(n);
    let d_w2 = h.clone().transpose().matmul(d_logits.clone());
    let d_b2 = d_logits.clone().sum_dim(0).squeeze_dim(0);
    let d_h = d_logits.matmul(mlp.w2.clone().transpose()) * h.greater_elem(0.0).float();
    let d_w1 = x.transpose().matmul(d_h.clone());
    let d_b1 = d_h.sum_dim(0).squeeze_dim(0);
    const MOMENTUM: f32 = 0.9;
    vel.w1 = vel.w1.clone().mul_scalar(MOMENTUM) + d_w1;
    vel.b1 = vel.b1.clone().mul_scalar(MOMENTUM) + d_b1;
    vel.w2 = vel.w2.clone().mul_scalar(MOMENTUM) + d_w2;
    vel.b2 = vel.b2.clone().mul_scalar(MOMENTUM) + d_b2;
    mlp.w1 = mlp.w1.clone() - vel.w1.clone().mul_scalar(lr);
    mlp.b1 = mlp.b1.clone() - vel.b1.clone().mul_scalar(lr);
    mlp.w2 = mlp.w2.clone() - vel.w2.clone().mul_scalar(lr);
    mlp.b2 = mlp.b2.clone() - vel.b2.clone().mul_scalar(lr);
    let loss = loss
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(loss.first().copied().unwrap_or(f32::NAN))
}

struct Training {
    hidden: usize,
    epochs: usize,
    batch: usize,
    lr: f32,
}

/// Trains on `data` (already preprocessed) and returns the model as burn layers.
fn train(
    name: &str,
    data: &Data,
    classes: usize,
    t: &Training,
    rng: &mut Rng,
    device: &Device,
) -> Result<Model> {
    let d_in = data.x[0].len();
    let mut mlp = Mlp::new(d_in, t.hidden, classes, rng, device);
    let mut vel = Velocity {
        w1: mlp.w1.zeros_like(),
        b1: mlp.b1.zeros_like(),
        w2: mlp.w2.zeros_like(),
        b2: mlp.b2.zeros_like(),
    };
    let mut order: Vec<usize> = (0..data.x.len()).collect();
    for epoch in 0..t.epochs {
        rng.shuffle(&mut order);
        let mut total = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(t.batch) {
            let xs: Vec<f32> = chunk.iter().flat_map(|&i| data.x[i].clone()).collect();
            let ys: Vec<i64> = chunk.iter().map(|&i| data.y[i] as i64).collect();
            let x = Tensor::from_data(TensorData::new(xs, [chunk.len(), d_in]), device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(ys, [chunk.len()]), device);
            total += step(&mut mlp, &mut vel, x, y, classes, t.lr)?;
            batches += 1;
        }
        if epoch % 10 == 9 || epoch + 1 == t.epochs {
            println!(
                "{name}: epoch {:>3}, mean loss {:.4}",
                epoch + 1,
                total / batches as f32
            );
        }
    }
    let linear = |w: Tensor<2>, b: Tensor<1>| {
        let [i, o] = w.dims();
        let mut l = LinearConfig::new(i, o).init(device);
        l.weight = Param::from_tensor(w);
        l.bias = Some(Param::from_tensor(b));
        Layer::Linear(l)
    };
    let layers = vec![
        linear(mlp.w1, mlp.b1),
        Layer::Relu(Relu::new()),
        linear(mlp.w2, mlp.b2),
    ];
    Ok(Model::new(name, vec![d_in], layers, device.clone())?)
}

/// Accuracy of `file` on raw rows.
fn accuracy(file: &ModelFile, data: &Data) -> Result<f32> {
    let mut right = 0;
    for (x, y) in data.x.iter().zip(&data.y) {
        let input = file.prepare_input(x, 1)?;
        let out = file.model().forward_plain(&input, 1)?;
        if argmax(&out) == Some(*y) {
            right += 1;
        }
    }
    Ok(right as f32 / data.x.len() as f32)
}

/// Rows `features..., class` of numbers.
fn parse_rows(text: &str, skip: usize, features: usize) -> Result<Data> {
    let mut data = Data {
        x: Vec::new(),
        y: Vec::new(),
    };
    for (n, line) in text.lines().enumerate().skip(skip) {
        if line.trim().is_empty() {
            continue;
        }
        let values: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("line {}", n + 1))?;
        if values.len() != features + 1 {
            bail!(
                "line {}: {} values, expected {}",
                n + 1,
                values.len(),
                features + 1
            );
        }
        data.y.push(values[features] as usize);
        data.x.push(values[..features].to_vec());
    }
    Ok(data)
}

fn split(data: Data, test: usize, rng: &mut Rng) -> (Data, Data) {
    let mut order: Vec<usize> = (0..data.x.len()).collect();
    rng.shuffle(&mut order);
    let pick = |idx: &[usize]| Data {
        x: idx.iter().map(|&i| data.x[i].clone()).collect(),
        y: idx.iter().map(|&i| data.y[i]).collect(),
    };
    (pick(&order[test..]), pick(&order[..test]))
}

fn preprocess(data: &Data, p: &Standardize) -> Data {
    let n = p.mean.len();
    Data {
        x: data
            .x
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(i, v)| (v - p.mean[i % n]) / p.scale[i % n])
                    .collect()
            })
            .collect(),
        y: data.y.clone(),
    }
}

fn write_rows(path: &Path, data: &Data, rows: usize, integers: bool) -> Result<()> {
    let mut out = String::new();
    for (x, y) in data.x.iter().zip(&data.y).take(rows) {
        let cells: Vec<String> = x
            .iter()
            .map(|v| {
                if integers {
                    format!("{}", *v as i64)
                } else {
                    format!("{v}")
                }
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push_str(&format!(",{y}\n"));
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

fn breast_cancer(data_dir: &Path, out: &Path, device: &Device) -> Result<()> {
    let path = data_dir.join("breast_cancer.csv");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (run scripts/fetch-data.sh)", path.display()))?;
    // The first line is "569,30,malignant,benign"; the class column is 0 = malignant, 1 = benign.
    let all = parse_rows(&text, 1, 30)?;
    let mut rng = Rng(20_261_128);
    let (train_set, test_set) = split(all, 114, &mut rng);
    let features = 30;
    let rows = train_set.x.len() as f32;
    let mean: Vec<f32> = (0..features)
        .map(|j| train_set.x.iter().map(|r| r[j]).sum::<f32>() / rows)
        .collect();
    let scale: Vec<f32> = (0..features)
        .map(|j| {
            let var = train_set
                .x
                .iter()
                .map(|r| (r[j] - mean[j]).powi(2))
                .sum::<f32>()
                / rows;
            var.sqrt().max(1e-6)
        })
        .collect();
    let standardize = Standardize { mean, scale };
    let t = Training {
        hidden: 16,
        epochs: 60,
        batch: 32,
        lr: 0.02,
    };
    let model = train(
        "breast-cancer",
        &preprocess(&train_set, &standardize),
        2,
        &t,
        &mut rng,
        device,
    )?;
    let labels = vec!["malignant".to_string(), "benign".to_string()];
    let file = ModelFile::from_model(model, labels, Some(standardize))?;
    let dir = out.join("breast-cancer");
    std::fs::create_dir_all(&dir)?;
    file.save(&dir.join("model.safetensors"))?;
    write_rows(&dir.join("test.csv"), &test_set, test_set.x.len(), false)?;
    println!(
        "breast-cancer: train accuracy {:.3}, held-out accuracy {:.3} on {} rows, id {}",
        accuracy(&file, &train_set)?,
        accuracy(&file, &test_set)?,
        test_set.x.len(),
        file.id()
    );
    Ok(())
}

fn mnist(data_dir: &Path, out: &Path, device: &Device) -> Result<()> {
    let path = data_dir.join("mnist_5k.csv.gz");
    let gz = std::fs::File::open(&path)
        .with_context(|| format!("reading {} (run scripts/fetch-data.sh)", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz).read_to_string(&mut text)?;
    let all = parse_rows(&text, 0, 784)?;
    let mut rng = Rng(28 * 28);
    let (train_set, test_set) = split(all, 500, &mut rng);
    let standardize = Standardize {
        mean: vec![0.0],
        scale: vec![255.0],
    };
    let t = Training {
        hidden: 64,
        epochs: 30,
        batch: 64,
        lr: 0.05,
    };
    let model = train(
        "mnist",
        &preprocess(&train_set, &standardize),
        10,
        &t,
        &mut rng,
        device,
    )?;
    let labels = (0..10).map(|d| d.to_string()).collect();
    let file = ModelFile::from_model(model, labels, Some(standardize))?;
    let dir = out.join("mnist");
    std::fs::create_dir_all(&dir)?;
    file.save(&dir.join("model.safetensors"))?;
    write_rows(&dir.join("test.csv"), &test_set, 100, true)?;
    println!(
        "mnist: train accuracy {:.3}, held-out accuracy {:.3} on {} rows, id {}",
        accuracy(&file, &train_set)?,
        accuracy(&file, &test_set)?,
        test_set.x.len(),
        file.id()
    );
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let data_dir = PathBuf::from(args.next().unwrap_or_else(|| "data".into()));
    let out = PathBuf::from(args.next().unwrap_or_else(|| "models".into()));
    let device = Device::flex();
    breast_cancer(&data_dir, &out, &device)?;
    mnist(&data_dir, &out, &device)?;
    Ok(())
}
