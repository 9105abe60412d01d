//! MetaInf, the core of the veil coordinator: node registry, reputation, non-colluding committee selection,
//! partitioning of large models into stages, the job lifecycle and its persistence. Everything here is pure
//! (no clock, no network); the coordinator service wraps it, as `quinn` wraps `quinn-proto`.
//!
//! | module | job |
//! | --- | --- |
//! | [`types`] | ids, time, hardware, collusion keys, heartbeats |
//! | [`demand`] | what a job asks of a committee; models as resource profiles |
//! | [`reputation`] | the reputation rule |
//! | [`rtt`] | measured RTTs and region estimates |
//! | [`registry`] | nodes, eligibility, load accounting, the selection index |
//! | [`beacon`] | the coordinator's commit-reveal hash chain and the draw seeds derived from it |
//! | [`draw`] | the weighted random committee draw anyone can recompute from the published data |
//! | [`explain`] | a job's committees with everything needed to recheck them (`veil job N --explain`) |
//! | [`select`] | committee selection (the draw, or the cheapest) and the reasons a job cannot be placed |
//! | [`partition`] | splitting a model into stages |
//! | [`lifecycle`] | the job state machine |
//! | [`store`] | redb persistence |
//! | [`sim`] | the synthetic registry and workload behind `veil sim`, with an independent checker |
//!
//! The invariant that matters most: no committee returned by [`Registry::select`] has two members (dealer
//! and verifier included) that share a value under any configured collusion key.

#![forbid(unsafe_code)]

pub mod beacon;
pub mod committee;
pub mod demand;
pub mod draw;
pub mod explain;
pub mod lifecycle;
pub mod partition;
pub mod registry;
pub mod reputation;
pub mod rtt;
pub mod select;
pub mod sim;
pub mod store;
pub mod types;

pub use committee::{Committee, Placement};
pub use demand::{JobDemand, LayerNeeds, ModelProfile, Role, RoleDemand};
pub use lifecycle::{
    Effects, Event, FailureCause, Job, JobId, JobPolicy, LifecycleError, Phase, PhaseTimeouts,
};
pub use partition::{partition, PartitionError};
pub use registry::{
    Config, Measured, NodeEntry, NodeRecord, NodeStats, Registry, RegistryError, SelectionMode,
    SelectionTuning, Trial,
};
pub use reputation::{JobOutcome, Reputation, ReputationRule};
pub use select::{
    DrawRecord, RecomputeError, RoleKind, SelectRequest, StageUnplaceable, Unplaceable,
};
pub use store::{Batch, Store, StoreError};
pub use types::{
    DomainKey, Gpu, Hardware, Heartbeat, Millis, NodeId, NodeRegistration, NodeState,
    ReportedStatus, MAX_BANDWIDTH_BYTES_PER_S, MAX_CORES, MAX_GPU_MEMORY_BYTES, MAX_MEMORY_BYTES,
    MAX_OPS_PER_S,
};
