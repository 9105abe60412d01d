use proptest::prelude::*;

use super::quant::f16_to_f32;
use super::write::GgufWriter;
use super::*;

#[test]
fn halves_convert_exactly() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x0001), (-24f32).exp2());
    assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    assert!(f16_to_f32(0x7e00).is_nan());
}

#[test]
fn q4_0_block_by_hand() {
    // d = 0.5; byte 0 = 0x21: element 0 = (1 - 8) 0.5, element 16 = (2 - 8) 0.5; the rest 0x88: 0.
    let mut b = vec![0x00, 0x38, 0x21];
    b.extend([0x88; 15]);
    let v = TensorType::Q4_0.dequantize(&b);
    assert_eq!(v.len(), 32);
    assert_eq!(v[0], -3.5);
    assert_eq!(v[16], -3.0);
    assert!(v
        .iter()
        .enumerate()
        .all(|(i, x)| i == 0 || i == 16 || *x == 0.0));
}

#[test]
fn q4_1_block_by_hand() {
    // d = 0.25, m = -1; every byte 0xf0: low nibbles 0 -> -1, high nibbles 15 -> 2.75; byte 3 = 0x5a:
    // element 3 = 10 * 0.25 - 1, element 19 = 5 * 0.25 - 1.
    let mut b = vec![0x00, 0x34, 0x00, 0xbc];
    b.extend([0xf0; 16]);
    b[4 + 3] = 0x5a;
    let v = TensorType::Q4_1.dequantize(&b);
    assert_eq!(v.len(), 32);
    for (i, x) in v.iter().enumerate() {
        let want = match i {
            3 => 1.5,
            19 => 0.25,
            0..16 => -1.0,
            _ => 2.75,
        };
        assert_eq!(*x, want, "element {i}");
    }
}

#[test]
fn q8_0_block_by_hand() {
    // d = 2; q = -3, 127, -128, then 0.
    let mut b = vec![0x00, 0x40, (-3i8) as u8, 127, 0x80];
    b.extend([0; 29]);
    let v = TensorType::Q8_0.dequantize(&b);
    assert_eq!(v.len(), 32);
    assert_eq!(&v[..4], &[-6.0, 254.0, -256.0, 0.0]);
}

#[test]
fn f16_and_f32_tensors_by_hand() {
    let v = TensorType::F16.dequantize(&[0x00, 0x3c, 0x00, 0xc0]);
    assert_eq!(v, vec![1.0, -2.0]);
    let v = TensorType::F32.dequantize(&1.25f32.to_le_bytes());
    assert_eq!(v, vec![1.25]);
}

#[test]
fn data_sizes_are_checked() {
    assert_eq!(TensorType::Q4_1.data_size(&[64, 3]), Some(6 * 20));
    assert_eq!(TensorType::Q8_0.data_size(&[33]), None);
    assert_eq!(TensorType::F32.data_size(&[0, 2]), None);
    assert_eq!(TensorType::F32.data_size(&[u64::MAX, 2]), None);
    assert_eq!(TensorType::F32.data_size(&[]), None);
}

fn sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()))
        .meta("llama.block_count", Value::U32(2))
        .meta("llama.rope.freq_base", Value::F32(10000.0))
        .meta(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        )
        .f32_tensor("x", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let mut q8 = vec![0x00, 0x3c];
    q8.extend((0..32).map(|i| i as u8));
    w.raw_tensor("q", &[32], 8, q8);
    w.to_bytes()
}

#[test]
fn written_file_reads_back() {
    let g = Gguf::parse(sample()).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.str("general.architecture").unwrap(), "llama");
    assert_eq!(g.u64("llama.block_count").unwrap(), 2);
    assert_eq!(g.f64("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(g.strings("tokenizer.ggml.tokens").unwrap(), vec!["a", "b"]);
    assert_eq!(
        g.dequantize("x", &[2, 3]).unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    let q = g.dequantize("q", &[32]).unwrap();
    assert_eq!(q[31], 31.0);
    assert!(matches!(
        g.dequantize("x", &[3, 2]),
        Err(GgufError::WrongShape { .. })
    ));
    assert!(matches!(g.tensor("nope"), Err(GgufError::MissingTensor(_))));
    assert!(matches!(
        g.u64("general.architecture"),
        Err(GgufError::WrongType { .. })
    ));
}

#[test]
fn named_corruptions_are_typed_errors() {
    let good = sample();
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(Gguf::parse(b), Err(GgufError::BadMagic(_))));
    let mut b = good.clone();
    b[4] = 9;
    assert_eq!(
        Gguf::parse(b).unwrap_err(),
        GgufError::UnsupportedVersion(9)
    );
    // A huge metadata count.
    let mut b = good.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(Gguf::parse(b), Err(GgufError::TooMany { .. })));
    // A huge tensor count.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(Gguf::parse(b), Err(GgufError::TooMany { .. })));
    // The data section cut short: the last tensor no longer fits.
    let mut b = good.clone();
    b.truncate(b.len() - 40);
    assert!(matches!(
        Gguf::parse(b),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn truncated_files_are_errors(cut in 0usize..400) {
        let good = sample();
        let cut = cut.min(good.len() - 1);
        prop_assert!(Gguf::parse(good[..cut].to_vec()).is_err());
    }

    #[test]
    fn corrupt_bytes_never_panic(at in 0usize..400, byte in any::<u8>(), at2 in 0usize..400, byte2 in any::<u8>()) {
        let mut b = sample();
        let n = b.len();
        b[at % n] = byte;
        b[at2 % n] = byte2;
        if let Ok(g) = Gguf::parse(b) {
            for t in g.tensors.clone() {
                let _ = g.dequantize(&t.name, &t.dims);
            }
        }
    }
}
