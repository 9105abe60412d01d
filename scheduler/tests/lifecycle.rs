//! The job state machine: legal paths, illegal transitions, timeouts, retries with exclusions.

use veil_scheduler::{
    Committee, Event, FailureCause, Job, JobDemand, JobId, JobOutcome, JobPolicy, LifecycleError,
    NodeId, Phase, PhaseTimeouts, Placement, RoleDemand,
};

fn demand() -> JobDemand {
    JobDemand {
        parties: 2,
        party: RoleDemand {
            memory_bytes: 1,
            ops: 1,
            bytes: 1,
        },
        dealer: Some(RoleDemand::default()),
        verifier: Some(RoleDemand::default()),
        rounds: 1,
    }
}

fn placement(base: u32) -> Placement {
    Placement {
        committee: Committee {
            parties: vec![NodeId(base), NodeId(base + 1)],
            dealer: Some(NodeId(base + 2)),
            verifier: Some(NodeId(base + 3)),
        },
        demand: demand(),
    }
}

fn job(max_attempts: u32) -> Job {
    Job::new(
        JobId(7),
        vec![demand()],
        99,
        JobPolicy {
            max_attempts,
            timeouts: PhaseTimeouts::default(),
        },
        1_000,
    )
}

#[test]
fn happy_path_records_every_transition() {
    let mut j = job(3);
    assert_eq!(j.phase(), Phase::Submitted);
    j.apply(Event::Schedule(vec![placement(0)]), 1_010).unwrap();
    j.apply(Event::Start, 1_020).unwrap();
    j.apply(Event::OutputReady, 1_030).unwrap();
    let fx = j.apply(Event::Verified, 1_040).unwrap();
    assert_eq!(j.phase(), Phase::Done);
    assert_eq!(fx.release, vec![placement(0)]);
    assert_eq!(fx.outcomes.len(), 4);
    assert!(fx.outcomes.iter().all(|&(_, o)| o == JobOutcome::Success));
    assert!(!fx.reschedule);
    let phases: Vec<(Phase, Phase, u64)> =
        j.history().iter().map(|t| (t.from, t.to, t.at)).collect();
    assert_eq!(
        phases,
        vec![
            (Phase::Submitted, Phase::Scheduled, 1_010),
            (Phase::Scheduled, Phase::Running, 1_020),
            (Phase::Running, Phase::Verifying, 1_030),
            (Phase::Verifying, Phase::Done, 1_040),
        ]
    );
    assert!(j.placements().is_empty());
}

#[test]
fn illegal_transitions_are_typed_errors() {
    let mut j = job(3);
    let e = j.apply(Event::Start, 1_000).unwrap_err();
    assert_eq!(
        e,
        LifecycleError::IllegalTransition {
            job: JobId(7),
            from: Phase::Submitted,
            event: "start"
        }
    );
    assert!(j.apply(Event::Verified, 1_000).is_err());
    assert!(matches!(
        j.apply(Event::Schedule(vec![]), 1_000),
        Err(LifecycleError::WrongPlacements { .. })
    ));
    j.apply(Event::Schedule(vec![placement(0)]), 1_000).unwrap();
    assert!(j.apply(Event::OutputReady, 1_001).is_err());
    assert!(matches!(
        j.apply(Event::Start, 999),
        Err(LifecycleError::TimeWentBackwards { .. })
    ));
    j.apply(Event::Cancel, 1_002).unwrap();
    assert_eq!(j.phase(), Phase::Failed);
    assert_eq!(j.failure(), Some(&FailureCause::Cancelled));
    // Terminal: nothing leaves it.
    for ev in [
        Event::Start,
        Event::Cancel,
        Event::Verified,
        Event::Schedule(vec![placement(0)]),
    ] {
        assert!(matches!(
            j.apply(ev, 2_000),
            Err(LifecycleError::IllegalTransition {
                from: Phase::Failed,
                ..
            })
        ));
    }
    // An unchanged phase after an error: the failed event left no trace.
    assert_eq!(j.history().len(), 2);
}

#[test]
fn failures_retry_on_a_fresh_committee_then_give_up() {
    let mut j = job(2);
    let first_seed = j.attempt_seed();
    j.apply(Event::Schedule(vec![placement(0)]), 1_000).unwrap();
    j.apply(Event::Start, 1_001).unwrap();
    let fx = j
        .apply(
            Event::Fail {
                cause: FailureCause::NodeFailure,
                blamed: vec![NodeId(1), NodeId(1)],
            },
            1_002,
        )
        .unwrap();
    assert!(fx.reschedule);
    assert_eq!(fx.release, vec![placement(0)]);
    assert_eq!(fx.outcomes, vec![(NodeId(1), JobOutcome::Failure)]);
    assert_eq!(j.phase(), Phase::Submitted);
    assert_eq!(j.attempt(), 2);
    assert_eq!(j.excluded(), &[NodeId(1)]);
    assert_ne!(j.attempt_seed(), first_seed);

    j.apply(Event::Schedule(vec![placement(10)]), 1_003)
        .unwrap();
    j.apply(Event::Start, 1_004).unwrap();
    j.apply(Event::OutputReady, 1_005).unwrap();
    let blamed = vec![NodeId(10), NodeId(11)];
    let fx = j
        .apply(
            Event::Fail {
                cause: FailureCause::VerificationFailed,
                blamed,
            },
            1_006,
        )
        .unwrap();
    assert!(!fx.reschedule);
    assert_eq!(
        fx.outcomes,
        vec![
            (NodeId(10), JobOutcome::VerificationFailed { suspects: 2 }),
            (NodeId(11), JobOutcome::VerificationFailed { suspects: 2 }),
        ]
    );
    assert_eq!(j.phase(), Phase::Failed);
    assert_eq!(j.failure(), Some(&FailureCause::VerificationFailed));
    assert_eq!(j.excluded(), &[NodeId(1), NodeId(10), NodeId(11)]);
    assert_eq!(j.attempt(), 2);
}

#[test]
fn a_rejected_input_fails_the_job_at_once_and_blames_nobody() {
    let mut j = job(3);
    j.apply(Event::Schedule(vec![placement(0)]), 1_000).unwrap();
    j.apply(Event::Start, 1_001).unwrap();
    let cause = FailureCause::RejectedInput("party 0: envelope does not open".into());
    let fx = j
        .apply(
            Event::Fail {
                cause: cause.clone(),
                blamed: vec![NodeId(0)],
            },
            1_002,
        )
        .unwrap();
    assert!(!fx.reschedule, "the client's input is at fault: no retry");
    assert!(fx.outcomes.is_empty(), "no node loses reputation");
    assert_eq!(fx.release, vec![placement(0)]);
    assert_eq!(j.phase(), Phase::Failed);
    assert_eq!(j.failure(), Some(&cause));
    assert_eq!(j.attempt(), 1);
}

#[test]
fn per_phase_timeouts() {
    let timeouts = PhaseTimeouts {
        submitted_ms: 100,
        scheduled_ms: 50,
        running_ms: 1_000,
        verifying_ms: 0,
    };
    let mut j = Job::new(
        JobId(1),
        vec![demand()],
        0,
        JobPolicy {
            max_attempts: 3,
            timeouts,
        },
        0,
    );
    assert_eq!(j.deadline(), Some(100));
    assert_eq!(j.timeout_event(99), None);
    assert!(j.timeout_event(100).is_some());
    j.apply(Event::Schedule(vec![placement(0)]), 10).unwrap();
    assert_eq!(j.deadline(), Some(60));
    let ev = j.timeout_event(60).unwrap();
    assert_eq!(
        ev,
        Event::Fail {
            cause: FailureCause::Timeout(Phase::Scheduled),
            blamed: vec![]
        }
    );
    let fx = j.apply(ev, 60).unwrap();
    assert!(fx.reschedule && fx.outcomes.is_empty());
    j.apply(Event::Schedule(vec![placement(0)]), 70).unwrap();
    j.apply(Event::Start, 80).unwrap();
    assert_eq!(j.deadline(), Some(1_080));
    j.apply(Event::OutputReady, 90).unwrap();
    assert_eq!(j.deadline(), None, "a zero limit means no timeout");
}

#[test]
fn a_job_round_trips_through_serde() {
    let mut j = job(3);
    j.apply(Event::Schedule(vec![placement(0)]), 1_000).unwrap();
    let bytes = postcard::to_stdvec(&j).unwrap();
    let back: Job = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, j);
}
