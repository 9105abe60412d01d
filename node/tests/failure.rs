//! A party that vanishes mid-job makes the job fail on the others within the configured timeout, with a
//! clear error; the surviving nodes drop the job's state and keep serving.

mod common;

use std::time::{Duration, Instant};

use veil_node::client::run_private;
use veil_node::Identity;

#[test]
fn vanished_party_fails_the_job_within_the_timeout() {
    let client_id = Identity::generate().unwrap();
    let (mut nodes, committee) = common::committee(3, &[client_id.public_key()], 1_000);
    let (model, plan) = common::network_a();
    let client = common::client(client_id);
    let input = veil_engine::workloads::sample_input(&model, 1, 3);
    // Enough inferences that the job is still running when party 2 crashes.
    let inputs = vec![input; 3_000];
    let started = Instant::now();
    let job = common::job(&model, &plan);
    let outcome = std::thread::scope(|s| {
        let runner = s.spawn(|| run_private(&client, &committee, &job, &inputs));
        // Wait until the parties compute.
        let deadline = Instant::now() + Duration::from_secs(60);
        while common::log_text()
            .matches("party connected, computing")
            .count()
            < 3
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        // Party 2 crashes: its runtime stops without closing its connections.
        let victim = nodes.remove(2);
        victim.crash();
        runner.join().unwrap()
    });
    let elapsed = started.elapsed();
    let err = match outcome {
        Ok(_) => panic!("the job must fail when a party vanishes"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("timed out") || err.contains("disconnected"),
        "unclear error: {err}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    // Survivors drop the job and keep serving.
    let deadline = Instant::now() + Duration::from_secs(5);
    while nodes.iter().any(|n| n.active_jobs() > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in &nodes {
        assert_eq!(n.active_jobs(), 0, "job state leaked");
    }
    let probe = common::client(Identity::generate().unwrap());
    let _ = probe;
}
