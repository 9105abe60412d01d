//! The dealer's memory does not grow with a job's inferences: over QUIC, between in-process nodes, the most
//! correction words the dealer held at once for a job (`veil_node_dealer_material_peak_bytes`) is the same
//! for 1 and for 20 inferences, under `semi2k` and `spdz2k`, while what it sends grows twentyfold. The last
//! party reads its corrections as it consumes them, and the outputs still match the plaintext model's.
//!
//! One test in this binary: the metric is process-wide (the largest peak of any job dealt here).

mod common;

use veil_engine::local::Protocol;
use veil_node::client::run_private_protocol;
use veil_node::metrics::METRICS;
use veil_node::Identity;

/// The metric's value, bytes.
fn peak_bytes() -> f64 {
    let text = METRICS.render();
    text.lines()
        .find_map(|l| l.strip_prefix("veil_node_dealer_material_peak_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the dealer's peak is exposed")
}

#[test]
fn the_dealers_peak_is_one_inferences_material_whatever_the_number_of_inferences() {
    let client_id = Identity::generate().unwrap();
    let (_nodes, committee) = common::committee(3, &[client_id.public_key()], 10_000);
    let (model, plan) = common::network_a();
    let client = common::client(client_id);
    let job = common::job(&model, &plan);
    let input = veil_engine::workloads::sample_input(&model, 1, 3);
    let expected = model.forward_plain(&input, 1).unwrap();
    // (protocol, the pinned peak in bytes: semi2k's one inference's corrections; spdz2k's model setup's,
    // the weight masks' MACs, larger than one inference's; the bytes sent for 1 and 20 inferences).
    let cases = [
        (Protocol::Semi2k, 15_280.0, [15_376, 305_696]),
        (Protocol::Spdz2k, 1_892_512.0, [3_443_984, 14_941_264]),
    ];
    for (protocol, pinned, want_sent) in cases {
        let mut sent = Vec::new();
        for inferences in [1usize, 20] {
            let inputs = vec![input.clone(); inferences];
            let run = run_private_protocol(&client, &committee, &job, &inputs, protocol)
                .unwrap_or_else(|e| panic!("{protocol:?}, {inferences} inferences: {e}"));
            for out in &run.report.outputs {
                for (a, b) in out.iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-2, "{protocol:?}: {a} vs {b}");
                }
            }
            assert_eq!(
                peak_bytes(),
                pinned,
                "{protocol:?}, {inferences} inferences"
            );
            // The dealer's time came after the last correction, and counts their dealing.
            assert!(run.report.dealer_elapsed > std::time::Duration::ZERO);
            sent.push(run.report.dealer_bytes);
        }
        // The dealer sent far more than it ever held.
        assert_eq!(sent, want_sent, "{protocol:?}");
        assert!(sent[1] as f64 > 5.0 * pinned, "{protocol:?}: {sent:?}");
    }
}
