//! The job lifecycle as a pure state machine: no clock, no I/O; every call takes the time.
//!
//! ```text
//!              schedule          start          output_ready        verified
//!  Submitted ───────────▶ Scheduled ─────▶ Running ──────────▶ Verifying ─────────▶ Done
//!      ▲  │                   │               │                    │
//!      │  │ fail              └───────────────┴────── fail ────────┤
//!      │  ▼                                                        ▼
//!      │ Failed ◀──────────────────── attempts used up ─────── (failure)
//!      └──────────────────────────── retry: attempt + 1, blamed nodes excluded
//! ```
//! `cancel` moves any non-terminal job to `Failed`.
//!
//! Invariants: the history holds every transition in order with non-decreasing times; `phase` equals the last
//! transition's target; `placements` is non-empty iff the phase is Scheduled, Running or Verifying; `attempt`
//! (1-based) never exceeds `max_attempts`; `excluded` only grows. Done and Failed are terminal: every event
//! there is an [`LifecycleError::IllegalTransition`].

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::committee::Placement;
use crate::demand::JobDemand;
use crate::reputation::JobOutcome;
use crate::types::{keyed_hash, Millis, NodeId};

/// A job's identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "j{}", self.0)
    }
}

/// A job's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for a committee.
    Submitted,
    /// Committee chosen, manifest sent, parties not yet started.
    Scheduled,
    /// Parties computing.
    Running,
    /// Output shares produced, verifier checking.
    Verifying,
    /// Verified and returned. Terminal.
    Done,
    /// Given up. Terminal.
    Failed,
}

impl Phase {
    /// Whether no event may leave this phase.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed)
    }
}

/// Why an attempt (or the job) failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCause {
    /// The phase outlived its timeout.
    Timeout(Phase),
    /// A member crashed, aborted or misbehaved visibly.
    NodeFailure,
    /// The MAC check failed.
    VerificationFailed,
    /// No committee could be found (the text says why).
    Unplaceable(String),
    /// Cancelled by the client or an operator.
    Cancelled,
    /// A party refused its sealed input (it does not open, is bound elsewhere, or replays a job id): the
    /// client's data or its path is at fault, not a node, so nobody is blamed and the job is not retried.
    RejectedInput(String),
}

/// What happens to a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Committees were chosen and reserved (one per stage).
    Schedule(Vec<Placement>),
    /// The parties started.
    Start,
    /// The output shares are ready for verification.
    OutputReady,
    /// The verifier accepted.
    Verified,
    /// The attempt failed; `blamed` are the nodes held responsible (excluded from the retry).
    Fail {
        /// Why.
        cause: FailureCause,
        /// Who.
        blamed: Vec<NodeId>,
    },
    /// Give up now.
    Cancel,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Schedule(_) => "schedule",
            Event::Start => "start",
            Event::OutputReady => "output_ready",
            Event::Verified => "verified",
            Event::Fail { .. } => "fail",
            Event::Cancel => "cancel",
        }
    }
}

/// Errors of the state machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LifecycleError {
    /// The event is not allowed in the current phase.
    #[error("job {job}: {event} is not allowed in phase {from:?}")]
    IllegalTransition {
        /// The job.
        job: JobId,
        /// Its phase.
        from: Phase,
        /// The event's name.
        event: &'static str,
    },
    /// The event is older than the job's last transition.
    #[error("job {job}: time {at} is before the last transition at {last}")]
    TimeWentBackwards {
        /// The job.
        job: JobId,
        /// The event's time.
        at: Millis,
        /// The last transition's time.
        last: Millis,
    },
    /// A schedule event without placements, or with a number of placements other than the stages.
    #[error("job {job}: {got} placements for {stages} stages")]
    WrongPlacements {
        /// The job.
        job: JobId,
        /// Placements given.
        got: usize,
        /// Stages of the job.
        stages: usize,
    },
}

/// One transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Phase left.
    pub from: Phase,
    /// Phase entered.
    pub to: Phase,
    /// When.
    pub at: Millis,
    /// The attempt it belongs to (1-based).
    pub attempt: u32,
    /// The failure, for transitions caused by one.
    pub cause: Option<FailureCause>,
}

/// Per-phase time limits in milliseconds (0: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTimeouts {
    /// Waiting for a committee.
    pub submitted_ms: u64,
    /// From scheduling to the parties' start.
    pub scheduled_ms: u64,
    /// Computing.
    pub running_ms: u64,
    /// Verifying.
    pub verifying_ms: u64,
}

impl Default for PhaseTimeouts {
    fn default() -> Self {
        PhaseTimeouts {
            submitted_ms: 60_000,
            scheduled_ms: 30_000,
            running_ms: 600_000,
            verifying_ms: 60_000,
        }
    }
}

impl PhaseTimeouts {
    /// The limit of a phase (None for terminal phases and zero limits).
    pub fn of(&self, phase: Phase) -> Option<u64> {
        let ms = match phase {
            Phase::Submitted => self.submitted_ms,
            Phase::Scheduled => self.scheduled_ms,
            Phase::Running => self.running_ms,
            Phase::Verifying => self.verifying_ms,
            Phase::Done | Phase::Failed => 0,
        };
        (ms > 0).then_some(ms)
    }
}

/// Retry and timeout policy of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPolicy {
    /// Attempts allowed in total (at least 1).
    pub max_attempts: u32,
    /// Per-phase limits.
    pub timeouts: PhaseTimeouts,
}

impl Default for JobPolicy {
    fn default() -> Self {
        JobPolicy {
            max_attempts: 3,
            timeouts: PhaseTimeouts::default(),
        }
    }
}

/// What the caller must do after a transition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Placements to release in the registry.
    pub release: Vec<Placement>,
    /// Reputation outcomes to record.
    pub outcomes: Vec<(NodeId, JobOutcome)>,
    /// The job went back to `Submitted` and needs a committee (excluding [`Job::excluded`]).
    pub reschedule: bool,
}

/// A job and its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// One demand per stage (a single stage for a model that fits one committee).
    pub stages: Vec<JobDemand>,
    /// The seed of its selections; attempt `a` uses [`Job::attempt_seed`].
    pub seed: u64,
    /// Its policy.
    pub policy: JobPolicy,
    phase: Phase,
    attempt: u32,
    entered_at: Millis,
    history: Vec<Transition>,
    excluded: Vec<NodeId>,
    placements: Vec<Placement>,
    failure: Option<FailureCause>,
}

impl Job {
    /// A job submitted at `now`.
    pub fn new(
        id: JobId,
        stages: Vec<JobDemand>,
        seed: u64,
        policy: JobPolicy,
        now: Millis,
    ) -> Job {
        let policy = JobPolicy {
            max_attempts: policy.max_attempts.max(1),
            ..policy
        };
        Job {
            id,
            stages,
            seed,
            policy,
            phase: Phase::Submitted,
            attempt: 1,
            entered_at: now,
            history: Vec::new(),
            excluded: Vec::new(),
            placements: Vec::new(),
            failure: None,
        }
    }

    /// Its phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// The current attempt (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// When the current phase began (submission time for a fresh job).
    pub fn entered_at(&self) -> Millis {
        self.entered_at
    }
    /// Every transition so far.
    pub fn history(&self) -> &[Transition] {
        &self.history
    }
    /// Nodes excluded from future committees of this job (sorted, distinct).
    pub fn excluded(&self) -> &[NodeId] {
        &self.excluded
    }
    /// The current placements (empty unless Scheduled, Running or Verifying).
    pub fn placements(&self) -> &[Placement] {
        &self.placements
    }
    /// Why the job failed, once Failed.
    pub fn failure(&self) -> Option<&FailureCause> {
        self.failure.as_ref()
    }
    /// The selection seed of the current attempt: differs per attempt so a retry is not steered to the same
    /// ties.
    pub fn attempt_seed(&self) -> u64 {
        keyed_hash(self.seed, u64::from(self.attempt))
    }

    /// When the current phase times out, if it has a limit.
    pub fn deadline(&self) -> Option<Millis> {
        self.policy
            .timeouts
            .of(self.phase)
            .map(|ms| self.entered_at.saturating_add(ms))
    }

    /// The timeout failure due at `now`, if the phase is past its deadline (apply it with [`Job::apply`]).
    /// Blames no one: the caller knows which member did not answer and may blame it instead.
    pub fn timeout_event(&self, now: Millis) -> Option<Event> {
        let deadline = self.deadline()?;
        (now >= deadline).then(|| Event::Fail {
            cause: FailureCause::Timeout(self.phase),
            blamed: Vec::new(),
        })
    }

    fn go(&mut self, to: Phase, now: Millis, cause: Option<FailureCause>) {
        self.history.push(Transition {
            from: self.phase,
            to,
            at: now,
            attempt: self.attempt,
            cause,
        });
        self.phase = to;
        self.entered_at = now;
    }

    fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.placements
            .iter()
            .flat_map(|p| p.committee.members().map(|(_, n)| n))
    }

    /// Applies one event at `now`; returns what the caller must do (release, reputation, reschedule).
    pub fn apply(&mut self, event: Event, now: Millis) -> Result<Effects, LifecycleError> {
        let illegal = LifecycleError::IllegalTransition {
            job: self.id,
            from: self.phase,
            event: event.name(),
        };
        if self.phase.is_terminal() {
            return Err(illegal);
        }
        let last = self.history.last().map_or(self.entered_at, |t| t.at);
        if now < last {
            return Err(LifecycleError::TimeWentBackwards {
                job: self.id,
                at: now,
                last,
            });
        }
        let mut fx = Effects::default();
        match (self.phase, event) {
            (Phase::Submitted, Event::Schedule(placements)) => {
                if placements.is_empty() || placements.len() != self.stages.len() {
                    return Err(LifecycleError::WrongPlacements {
                        job: self.id,
                        got: placements.len(),
                        stages: self.stages.len(),
                    });
                }
                self.placements = placements;
                self.go(Phase::Scheduled, now, None);
            }
            (Phase::Scheduled, Event::Start) => self.go(Phase::Running, now, None),
            (Phase::Running, Event::OutputReady) => self.go(Phase::Verifying, now, None),
            (Phase::Verifying, Event::Verified) => {
                fx.outcomes = self.members().map(|n| (n, JobOutcome::Success)).collect();
                fx.release = std::mem::take(&mut self.placements);
                self.go(Phase::Done, now, None);
            }
            (
                Phase::Scheduled | Phase::Running | Phase::Verifying,
                Event::Fail { cause, blamed },
            ) => {
                let outcome = match &cause {
                    FailureCause::Timeout(_) => Some(JobOutcome::Timeout),
                    FailureCause::NodeFailure => Some(JobOutcome::Failure),
                    FailureCause::VerificationFailed => Some(JobOutcome::VerificationFailed {
                        suspects: blamed.len().clamp(1, 255) as u8,
                    }),
                    FailureCause::Unplaceable(_)
                    | FailureCause::Cancelled
                    | FailureCause::RejectedInput(_) => None,
                };
                let mut blamed = blamed;
                blamed.sort_unstable();
                blamed.dedup();
                if let Some(o) = outcome {
                    fx.outcomes = blamed.iter().map(|&n| (n, o)).collect();
                }
                fx.release = std::mem::take(&mut self.placements);
                self.excluded.extend(blamed);
                self.excluded.sort_unstable();
                self.excluded.dedup();
                let retriable = !matches!(cause, FailureCause::RejectedInput(_));
                if retriable && self.attempt < self.policy.max_attempts {
                    self.go(Phase::Submitted, now, Some(cause));
                    self.attempt += 1;
                    fx.reschedule = true;
                } else {
                    self.failure = Some(cause.clone());
                    self.go(Phase::Failed, now, Some(cause));
                }
            }
            (Phase::Submitted, Event::Fail { cause, .. }) => {
                self.failure = Some(cause.clone());
                self.go(Phase::Failed, now, Some(cause));
            }
            (_, Event::Cancel) => {
                fx.release = std::mem::take(&mut self.placements);
                self.failure = Some(FailureCause::Cancelled);
                self.go(Phase::Failed, now, Some(FailureCause::Cancelled));
            }
            _ => return Err(illegal),
        }
        Ok(fx)
    }
}
