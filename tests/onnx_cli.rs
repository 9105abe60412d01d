//! `veil models inspect` and `veil bench --model X.onnx` on the shipped ONNX test models (issue 22): the
//! real binary, as a user runs it.

use std::process::Command;

fn veil(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the veil binary runs")
}

#[test]
fn models_inspect_lists_every_node_with_shape_and_protocol_step() {
    let out = veil(&["models", "inspect", "models/onnx/resnet.onnx"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("input [1, 2, 6, 6] -> output [1, 3], 11 nodes"),
        "{text}"
    );
    assert!(text.contains("Conv2d+BatchNormalization"), "{text}");
    assert!(text.contains("[1, 4, 3, 3]"), "{text}");
    assert!(text.contains("tournament of sign tests"), "{text}");
}

#[test]
fn models_inspect_names_an_unsupported_operator() {
    let out = veil(&["models", "inspect", "models/onnx/unsupported.onnx"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported operator Cos at node"), "{err}");
}

#[test]
fn bench_measures_an_onnx_model_with_the_usual_fields() {
    for protocol in ["semi2k", "spdz2k", "rep3", "rep3m"] {
        let out = veil(&[
            "bench",
            "--model",
            "models/onnx/encoder.onnx",
            "--protocol",
            protocol,
            "--reps",
            "1",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(v["workload"], "encoder.onnx");
        assert_eq!(v["protocol"], protocol);
        assert!(v["max_abs_err"].as_f64().unwrap() < 1e-2, "{v}");
        assert!(v["rounds"].as_u64().unwrap() > 100, "{v}");
        assert!(v["bytes_per_party"].as_u64().unwrap() > 0, "{v}");
        // One entry per node (25), plus spdz2k's closing MAC check or rep3m's closing product proof.
        let layers = v["layers"].as_array().unwrap().len();
        let checked = matches!(protocol, "spdz2k" | "rep3m");
        assert_eq!(layers, if checked { 26 } else { 25 }, "{v}");
        if protocol == "rep3m" {
            assert_eq!(v["verified"], true, "{v}");
            assert_eq!(v["dealer_bytes"], 0, "{v}");
        }
    }
}
