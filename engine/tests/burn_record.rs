//! Burn records as model files: the shipped models round-trip through burn's record format with the same id and
//! the same predictions, records written by burn's own `save_file` load (with the architecture beside them),
//! veil's records load back into burn modules, the format is told by content, and bad records are errors, never
//! panics.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use burn_pack::{Bytes, DType, Writer};
use veil_engine::burn_record::{sidecar_path, ModelFormat};
use veil_engine::model_file::{argmax, Architecture, LayerSpec, ModelFile, ARCHITECTURE_KEY};
use veil_engine::{workloads, Layer};

fn device() -> Device {
    Device::flex()
}

fn shipped(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(model)
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-burn-record-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Rows of `features` raw values followed by the class.
fn test_rows(model: &str, features: usize) -> Vec<(Vec<f32>, usize)> {
    let text = std::fs::read_to_string(shipped(model).join("test.csv")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Vec<f32> = l.split(',').map(|x| x.trim().parse().unwrap()).collect();
            assert_eq!(v.len(), features + 1);
            (v[..features].to_vec(), v[features] as usize)
        })
        .collect()
}

/// The plaintext output of every row.
fn predictions(file: &ModelFile, rows: &[(Vec<f32>, usize)]) -> Vec<Vec<f32>> {
    rows.iter()
        .map(|(x, _)| {
            let input = file.prepare_input(x, 1).unwrap();
            file.model().forward_plain(&input, 1).unwrap()
        })
        .collect()
}

#[test]
fn shipped_models_round_trip_through_burn_records_with_the_same_id_and_predictions() {
    let d = device();
    let dir = scratch("shipped");
    for (model, features) in [("breast-cancer", 30), ("mnist", 784)] {
        let safetensors = ModelFile::load(&shipped(model).join("model.safetensors"), &d).unwrap();
        let path = dir.join(format!("{model}.bpk"));
        safetensors.save_burn_record(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            ModelFormat::detect(&bytes).unwrap(),
            ModelFormat::BurnRecord
        );
        let record = ModelFile::load(&path, &d).unwrap();
        assert_eq!(record.id(), safetensors.id(), "{model}");
        assert_eq!(record.architecture(), safetensors.architecture());
        let rows = test_rows(model, features);
        let expected = predictions(&safetensors, &rows);
        assert_eq!(predictions(&record, &rows), expected, "{model}");
        if model == "breast-cancer" {
            let right = expected
                .iter()
                .zip(&rows)
                .filter(|(out, (_, y))| argmax(out) == Some(*y))
                .count();
            assert!(right as f32 / rows.len() as f32 >= 0.9);
        }
        // And back: the record written as safetensors is the shipped model again.
        assert_eq!(
            ModelFile::parse(&record.to_bytes().unwrap(), None, &d)
                .unwrap()
                .id(),
            safetensors.id()
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_format_is_told_by_content_not_by_extension() {
    let d = device();
    let dir = scratch("content");
    let file = ModelFile::load(&shipped("breast-cancer").join("model.safetensors"), &d).unwrap();
    let as_st = dir.join("record.safetensors");
    let as_bpk = dir.join("safetensors.bpk");
    std::fs::write(&as_st, file.to_burn_record().unwrap()).unwrap();
    std::fs::write(&as_bpk, file.to_bytes().unwrap()).unwrap();
    assert_eq!(ModelFile::load(&as_st, &d).unwrap().id(), file.id());
    assert_eq!(ModelFile::load(&as_bpk, &d).unwrap().id(), file.id());
    let junk = dir.join("junk.bpk");
    std::fs::write(&junk, b"PK\x03\x04 not a model").unwrap();
    let err = ModelFile::load(&junk, &d).unwrap_err();
    assert!(err.to_string().contains("neither"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The breast-cancer MLP as the burn module a burn user would save: one entry per layer, `None` where the
/// layer has no parameters, so its parameters are named `"{i}.weight"` and `"{i}.bias"`.
fn as_burn_mlp(file: &ModelFile) -> Vec<Option<Linear>> {
    file.model()
        .layers()
        .iter()
        .map(|l| match l {
            Layer::Linear(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn records_saved_by_burn_load_with_a_sidecar_or_an_architecture() {
    let d = device();
    let dir = scratch("burn-saved");
    let file = ModelFile::load(&shipped("breast-cancer").join("model.safetensors"), &d).unwrap();
    let path = dir.join("mlp.bpk");
    // burn's own API: no architecture in the file.
    as_burn_mlp(&file).save_file(&path).unwrap();

    let err = ModelFile::load(&path, &d).unwrap_err();
    assert!(err.to_string().contains("sidecar"), "{err}");

    let by_argument =
        ModelFile::load_with_architecture(&path, file.architecture().clone(), &d).unwrap();
    assert_eq!(by_argument.id(), file.id());

    let json = serde_json::to_string_pretty(file.architecture()).unwrap();
    std::fs::write(sidecar_path(&path), json).unwrap();
    let by_sidecar = ModelFile::load(&path, &d).unwrap();
    assert_eq!(by_sidecar.id(), file.id());
    let rows = test_rows("breast-cancer", 30);
    assert_eq!(predictions(&by_sidecar, &rows), predictions(&file, &rows));

    // A record that embeds an architecture and a sidecar that says otherwise: refused.
    let embedded = dir.join("embedded.bpk");
    file.save_burn_record(&embedded).unwrap();
    let mut other = file.architecture().clone();
    other.name = "something else".into();
    std::fs::write(
        sidecar_path(&embedded),
        serde_json::to_string(&other).unwrap(),
    )
    .unwrap();
    let err = ModelFile::load(&embedded, &d).unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
    // A sidecar that is not an architecture: refused.
    std::fs::write(sidecar_path(&path), "{\"name\": 3}").unwrap();
    assert!(ModelFile::load(&path, &d).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn veil_records_load_into_burn_modules() {
    let d = device();
    let file = ModelFile::load(&shipped("breast-cancer").join("model.safetensors"), &d).unwrap();
    let record =
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(file.to_burn_record().unwrap())).unwrap();
    // Load into a module of the same shapes, all zeros, with burn's own loader.
    let zeros: Vec<Option<Linear>> = as_burn_mlp(&file)
        .into_iter()
        .map(|l| {
            l.map(|mut l| {
                l.weight = l.weight.map(|w| w.zeros_like());
                l.bias = l.bias.map(|b| b.map(|b| b.zeros_like()));
                l
            })
        })
        .collect();
    let loaded = zeros.try_load_record(record).unwrap();
    for (a, b) in loaded.iter().zip(as_burn_mlp(&file)) {
        if let (Some(a), Some(b)) = (a, b) {
            let v = |l: &Linear| l.weight.val().into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(v(a), v(&b));
            assert!(v(a).iter().any(|x| *x != 0.0));
        }
    }
}

/// A layer of a burn model with convolutions: burn names its parameters `"{i}.Conv2d.weight"` and so on.
#[derive(Module, Debug)]
enum Block {
    Linear(Linear),
    Conv2d(Conv2d),
}

#[test]
fn conv_models_saved_by_burn_enum_modules_load() {
    let d = device();
    let dir = scratch("conv");
    let model = workloads::lenet(5, &d).unwrap();
    let file = ModelFile::from_model(model, vec![], None).unwrap();
    let blocks: Vec<Option<Block>> = file
        .model()
        .layers()
        .iter()
        .map(|l| match l {
            Layer::Linear(l) => Some(Block::Linear(l.clone())),
            Layer::Conv2d(c) => Some(Block::Conv2d(c.clone())),
            _ => None,
        })
        .collect();
    let path = dir.join("lenet.bpk");
    blocks.save_file(&path).unwrap();
    let back = ModelFile::load_with_architecture(&path, file.architecture().clone(), &d).unwrap();
    assert_eq!(back.id(), file.id());
    let x = workloads::sample_input(file.model(), 2, 11);
    assert_eq!(
        back.model().forward_plain(&x, 2).unwrap(),
        file.model().forward_plain(&x, 2).unwrap()
    );
    // veil's own record of it, too.
    let bytes = file.to_burn_record().unwrap();
    assert_eq!(
        ModelFile::parse_burn_record(&bytes, None, &d).unwrap().id(),
        file.id()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_and_corrupted_records_are_errors_not_panics() {
    let d = device();
    let file = ModelFile::load(&shipped("breast-cancer").join("model.safetensors"), &d).unwrap();
    let bytes = file.to_burn_record().unwrap();
    for cut in 0..bytes.len() {
        let r = ModelFile::parse_any(&bytes[..cut], None, &d);
        assert!(
            r.is_err(),
            "a record cut at {cut} of {} loaded",
            bytes.len()
        );
    }
    // Every byte flipped, one at a time: an error, or a valid model (a flipped weight), never a panic.
    let mut refused = 0;
    let mut copy = bytes.clone();
    for i in 0..copy.len() {
        copy[i] ^= 0xff;
        match ModelFile::parse_any(&copy, None, &d) {
            Err(_) => refused += 1,
            Ok(m) => assert_eq!(m.architecture(), file.architecture()),
        }
        copy[i] ^= 0xff;
    }
    assert!(refused > 0);
    for junk in [
        &b""[..],
        b"NRUB",
        b"NRUB\x01\x00\xff\xff\xff\x7f",
        b"NRUB\x01\x00\x04\x00\x00\x00\xa1\x61x\x00",
        &[0xffu8; 300][..],
    ] {
        assert!(ModelFile::parse_any(junk, None, &d).is_err());
        assert!(ModelFile::parse_burn_record(junk, None, &d).is_err());
    }
}

/// A one-layer architecture, Linear 2 -> 1.
fn tiny() -> Architecture {
    Architecture {
        name: "tiny".into(),
        input: vec![2],
        layers: vec![LayerSpec::Linear {
            inputs: 2,
            outputs: 1,
        }],
        labels: vec![],
        preprocess: None,
    }
}

fn f32_tensor(name: &str, shape: Vec<usize>, v: &[f32]) -> burn_pack::Tensor {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    burn_pack::Tensor::new(
        name.into(),
        DType::F32,
        shape,
        None,
        Bytes::from_bytes_vec(bytes),
    )
}

fn pack(tensors: Vec<burn_pack::Tensor>, architecture: Option<&str>) -> Vec<u8> {
    let mut w = Writer::new(tensors);
    if let Some(a) = architecture {
        w = w.with_metadata(ARCHITECTURE_KEY, a);
    }
    w.into_bytes().unwrap().to_vec()
}

#[test]
fn records_with_wrong_tensors_are_rejected_with_clear_errors() {
    let d = device();
    let arch = tiny();
    let json = serde_json::to_string(&arch).unwrap();
    let weight = |v: &[f32]| f32_tensor("0.weight", vec![2, 1], v);
    let bias = || f32_tensor("0.bias", vec![1], &[0.5]);
    let load = |tensors, a: Option<&str>| ModelFile::parse_burn_record(&pack(tensors, a), None, &d);
    let err_of = |tensors, a: Option<&str>| load(tensors, a).unwrap_err().to_string();

    // burn's layout, [in, out]: 3 * 1 + 1 * (-2) + 0.5.
    let ok = load(vec![weight(&[1.0, -2.0]), bias()], Some(&json)).unwrap();
    assert_eq!(ok.model().forward_plain(&[3.0, 1.0], 1).unwrap(), vec![1.5]);
    // The enum-variant name is the same model.
    let tagged = load(
        vec![
            f32_tensor("0.Linear.weight", vec![2, 1], &[1.0, -2.0]),
            f32_tensor("0.Linear.bias", vec![1], &[0.5]),
        ],
        Some(&json),
    )
    .unwrap();
    assert_eq!(tagged.id(), ok.id());
    // Half precision converts exactly, so the id does not change.
    let half = |x: f32| burn::tensor::f16::from_f32(x).to_bits().to_le_bytes();
    let f16_weight = burn_pack::Tensor::new(
        "0.weight".into(),
        DType::F16,
        vec![2, 1],
        None,
        Bytes::from_bytes_vec([half(1.0), half(-2.0)].concat()),
    );
    assert_eq!(
        load(vec![f16_weight, bias()], Some(&json)).unwrap().id(),
        ok.id()
    );

    let e = err_of(
        vec![f32_tensor("0.weight", vec![1, 2], &[1.0, 1.0]), bias()],
        Some(&json),
    );
    assert!(e.contains("shape"), "{e}");
    let e = err_of(vec![weight(&[1.0, 1.0])], Some(&json));
    assert!(e.contains("missing tensor `0.bias`"), "{e}");
    let e = err_of(vec![weight(&[f32::NAN, 1.0]), bias()], Some(&json));
    assert!(e.contains("non-finite"), "{e}");
    let e = err_of(vec![weight(&[f32::INFINITY, 1.0]), bias()], Some(&json));
    assert!(e.contains("non-finite"), "{e}");
    let e = err_of(
        vec![
            weight(&[1.0, 1.0]),
            bias(),
            f32_tensor("9.weight", vec![1], &[1.0]),
        ],
        Some(&json),
    );
    assert!(e.contains("belong to no layer"), "{e}");
    let e = err_of(
        vec![
            weight(&[1.0, 1.0]),
            f32_tensor("0.Linear.weight", vec![2, 1], &[1.0, 1.0]),
            bias(),
        ],
        Some(&json),
    );
    assert!(e.contains("both"), "{e}");
    let ints = burn_pack::Tensor::new(
        "0.weight".into(),
        DType::I32,
        vec![2, 1],
        None,
        Bytes::from_bytes_vec(vec![0u8; 8]),
    );
    let e = err_of(vec![ints, bias()], Some(&json));
    assert!(e.contains("dtype"), "{e}");
    let e = err_of(vec![weight(&[1.0, 1.0]), bias()], None);
    assert!(e.contains(ARCHITECTURE_KEY), "{e}");
    let e = err_of(vec![weight(&[1.0, 1.0]), bias()], Some("{\"layers\": 1"));
    assert!(e.contains("architecture metadata"), "{e}");
    // An architecture given separately overrides the embedded one, and is checked against the tensors.
    let mut wider = tiny();
    wider.layers[0] = LayerSpec::Linear {
        inputs: 3,
        outputs: 1,
    };
    let bytes = pack(vec![weight(&[1.0, 1.0]), bias()], Some(&json));
    let e = ModelFile::parse_burn_record(&bytes, Some(wider), &d).unwrap_err();
    assert!(e.to_string().contains("shape"), "{e}");
    // Sizes the architecture may not have are refused by the same checks as safetensors.
    let mut zero = tiny();
    zero.layers[0] = LayerSpec::Linear {
        inputs: 0,
        outputs: 1,
    };
    let bytes = pack(vec![f32_tensor("0.weight", vec![0, 1], &[]), bias()], None);
    assert!(ModelFile::parse_burn_record(&bytes, Some(zero), &d).is_err());
}
