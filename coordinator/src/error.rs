//! The coordinator's errors: one enum whose variants say what went wrong, with typed fields. Each has an
//! [`ErrorKind`] that the HTTP edge maps to a status (`http::error`); the core knows nothing of HTTP. A
//! message is safe to show the caller: it never contains a share, key material or a value.

use thiserror::Error;
use veil_scheduler::{LifecycleError, RegistryError, StoreError};

use crate::blobs::BlobKey;

/// What kind of failure an [`Error`] is (the HTTP edge maps each to one status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for something impossible.
    Invalid,
    /// The caller is not who this resource belongs to.
    Forbidden,
    /// No such node, job, model, trial or receipt.
    NotFound,
    /// The resource is not in a state that allows this now.
    Conflict,
    /// The caller submits faster than its rate limit allows.
    RateLimited,
    /// The coordinator failed: its store, its disk, an invariant.
    Internal,
}

/// A committee role, as errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleName {
    /// An execution party.
    Party,
    /// The dealer.
    Dealer,
    /// The verifier.
    Verifier,
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleName::Party => "a party",
            RoleName::Dealer => "the dealer",
            RoleName::Verifier => "the verifier",
        })
    }
}

/// Why the coordinator refused or failed a request.
#[derive(Debug, Error)]
pub enum Error {
    /// A name field is longer than allowed.
    #[error("{field} is longer than {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its bound.
        max: usize,
    },
    /// A number is outside its allowed range.
    #[error("{field} is {value}, outside {min}..={max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A field does not parse or does not build (its parser's message).
    #[error("{field}: {reason}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A field names something unknown (a protocol, a weight mode, a workload, an evidence kind).
    #[error("{field} {value:?} is not one of {expected}")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The node's sealing key is not attested by its identity key.
    #[error("the sealing key's attestation does not verify under the node's key")]
    BadAttestation,
    /// A GPU was reported with a model but no memory, or the reverse.
    #[error("a GPU needs both a model and its memory")]
    IncompleteGpu,
    /// The registry refused the registration.
    #[error("registration refused: {0}")]
    Registration(#[source] RegistryError),
    /// The attempt has no party of this index.
    #[error("no party {party} in this attempt")]
    NoSuchParty {
        /// The index asked for.
        party: usize,
    },
    /// An uploaded output, transcript or owner blob that does not open as its uploader's signed evidence
    /// for its slot (wrong kind or index, digest mismatch, bad signature, trailing bytes).
    #[error("attempt {attempt} of job {job}: the uploaded blob is not member {member}'s signed evidence: {source}")]
    BadEvidence {
        /// The job.
        job: u64,
        /// The attempt.
        attempt: u32,
        /// The uploader's member index (a party, or the dealer at the number of parties).
        member: u32,
        /// Why it does not open.
        source: veil_node::evidence::EvidenceError,
    },
    /// A receipt that does not cover the attempt's manifest, or does not verify.
    #[error("receipt: {reason}")]
    BadReceipt {
        /// What is wrong.
        reason: String,
    },
    /// A stage names a next job that is not the caller's.
    #[error("the next stage's job {job} is not one of yours")]
    NextStageNotOwned {
        /// The job named.
        job: u64,
    },
    /// A stage names a next job that is not a stage.
    #[error("job {job} is not a stage")]
    NotAStage {
        /// The job named.
        job: u64,
    },
    /// A client chose what only local runs may choose (link shaping, kernel threads).
    #[error("{field} is refused on coordinator jobs: client-chosen shaping and thread counts are the protocol lab's, for local runs")]
    LabOnly {
        /// The field.
        field: &'static str,
    },
    /// The request needs a deployed model and names none.
    #[error("not a deployed model's job")]
    NotDeployedJob,

    /// The node's operator is not admitted (no, a forged, an expired or another node's certificate, an
    /// operator not admitted, or over its node limit).
    #[error("admission refused: {0}")]
    Admission(#[from] crate::core::AdmissionError),
    /// The route needs a caller key and the connection presented none.
    #[error("this route needs a client certificate (a veil identity)")]
    NoCallerKey,
    /// The caller is not a member of the attempt.
    #[error("not a member of attempt {attempt} of job {job}")]
    NotMember {
        /// The job.
        job: u64,
        /// The attempt.
        attempt: u32,
    },
    /// Only one role of the attempt may do this.
    #[error("only {role} of attempt {attempt} of job {job} may do this")]
    NotRole {
        /// The job.
        job: u64,
        /// The attempt.
        attempt: u32,
        /// The role that may.
        role: RoleName,
    },
    /// The caller did not submit the job.
    #[error("not the submitter of job {job}")]
    NotSubmitter {
        /// The job.
        job: u64,
    },

    /// The caller's key is not a registered node.
    #[error("this key is not a registered node")]
    UnregisteredNode,
    /// No node has this id.
    #[error("no node {node}")]
    UnknownNode {
        /// The id.
        node: u32,
    },
    /// No job has this id.
    #[error("no job {job}")]
    UnknownJob {
        /// The id.
        job: u64,
    },
    /// No model of this id is deployed.
    #[error("model {model} is not deployed")]
    UnknownModel {
        /// The id.
        model: String,
    },
    /// The job has no receipt.
    #[error("job {job} has no receipt")]
    NoReceipt {
        /// The job.
        job: u64,
    },

    /// The trial answered is not the node's pending one.
    #[error("no pending trial {trial} for this node")]
    NoPendingTrial {
        /// The trial's nonce.
        trial: u64,
    },
    /// The attempt named is not the job's current one (it failed, was rescheduled or ended).
    #[error("attempt {attempt} of job {job} is not current")]
    StaleAttempt {
        /// The job.
        job: u64,
        /// The attempt.
        attempt: u32,
    },
    /// The job is not in the phase this needs.
    #[error("job {job} is {phase}; this needs it {expected}")]
    WrongPhase {
        /// The job.
        job: u64,
        /// Its phase.
        phase: &'static str,
        /// The phase (or phases) needed.
        expected: &'static str,
    },
    /// The dealer has not sent the attempt's owner material.
    #[error("no owner material for attempt {attempt} of job {job} (yet)")]
    NoOwnerMaterial {
        /// The job.
        job: u64,
        /// The attempt.
        attempt: u32,
    },
    /// The model id is deployed by another key.
    #[error("model {model} is deployed by another key")]
    ModelOwnedByOther {
        /// The model.
        model: String,
    },
    /// The model cannot be split into stages that fit the configured memory.
    #[error("model {model}: {source}")]
    Unsplittable {
        /// The model.
        model: String,
        /// Why.
        source: veil_scheduler::PartitionError,
    },
    /// The job's result blobs were deleted after the retention period.
    #[error("the results of job {job} expired and were deleted (result_retention_ms)")]
    ResultsExpired {
        /// The job.
        job: u64,
    },
    /// The job's lifecycle does not allow the event (cancelling a finished job).
    #[error("{0}")]
    NotAllowed(#[source] LifecycleError),

    /// The client exceeded its submissions per minute.
    #[error("at most {limit} jobs per minute per client")]
    RateLimited {
        /// The limit.
        limit: u32,
    },

    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A blob could not be written, read or found.
    #[error("blob {key}: {source}")]
    Blob {
        /// The blob.
        key: BlobKey,
        /// The cause.
        source: std::io::Error,
    },
    /// A role of the job needs more memory than any node that is not down or rejected offers: no
    /// committee could ever hold it.
    #[error("the job's {role} needs {needed} bytes of memory; the largest node offers {largest}")]
    TooMuchMemory {
        /// `dealer` or `party`.
        role: &'static str,
        /// What the role needs (the job's estimate), bytes.
        needed: u64,
        /// The most memory any eligible node offers, bytes.
        largest: u64,
    },
    /// A deployed model's file could not be stored or read.
    #[error("the file of model {model}: {source}")]
    ModelFile {
        /// The model id.
        model: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An uploaded blob could not be staged (written to the staging directory).
    #[error("staging an uploaded blob: {source}")]
    Staging {
        /// The cause.
        source: std::io::Error,
    },
    /// A record could not be encoded or decoded.
    #[error("record {what}: {reason}")]
    Record {
        /// Which record.
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// A state-machine or registry invariant was broken.
    #[error("invariant broken: {0}")]
    Invariant(String),
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            TooLong { .. }
            | OutOfRange { .. }
            | Malformed { .. }
            | TooMuchMemory { .. }
            | Unsupported { .. }
            | BadAttestation
            | IncompleteGpu
            | Registration(_)
            | NoSuchParty { .. }
            | BadEvidence { .. }
            | BadReceipt { .. }
            | NextStageNotOwned { .. }
            | NotAStage { .. }
            | NotDeployedJob
            | LabOnly { .. } => ErrorKind::Invalid,
            Admission(_)
            | NoCallerKey
            | NotMember { .. }
            | NotRole { .. }
            | NotSubmitter { .. } => ErrorKind::Forbidden,
            UnregisteredNode
            | UnknownNode { .. }
            | UnknownJob { .. }
            | UnknownModel { .. }
            | NoReceipt { .. } => ErrorKind::NotFound,
            NoPendingTrial { .. }
            | StaleAttempt { .. }
            | WrongPhase { .. }
            | NoOwnerMaterial { .. }
            | ModelOwnedByOther { .. }
            | Unsplittable { .. }
            | ResultsExpired { .. }
            | NotAllowed(_) => ErrorKind::Conflict,
            RateLimited { .. } => ErrorKind::RateLimited,
            Store(_)
            | DataDir { .. }
            | Blob { .. }
            | Staging { .. }
            | ModelFile { .. }
            | Record { .. }
            | Invariant(_) => ErrorKind::Internal,
        }
    }

    /// A malformed field, from its parser's error.
    pub(crate) fn malformed(field: &'static str, reason: impl std::fmt::Display) -> Error {
        Error::Malformed {
            field,
            reason: reason.to_string(),
        }
    }

    /// A broken invariant (a lifecycle or registry call that cannot fail when the core is consistent).
    pub(crate) fn invariant(e: impl std::fmt::Display) -> Error {
        Error::Invariant(e.to_string())
    }

    /// A record codec failure.
    pub(crate) fn record(what: &'static str, e: impl std::fmt::Display) -> Error {
        Error::Record {
            what,
            reason: e.to_string(),
        }
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
