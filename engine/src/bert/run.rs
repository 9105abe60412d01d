//! Private sentence embeddings on a local committee (n parties on threads over the in-memory mesh, fed by a
//! dealer): what `veil embed`, `veil bench --workload minilm` and the tests run. The client's part (lookup,
//! sharing, reconstruction) happens here too, outside the parties; each party runs the one party program
//! ([`crate::session::PartySession`]) with the encoder as its [`crate::session::Program`]. See
//! [`super::private`] for what each party learns. The committee is [`crate::local_program::run_local`]'s.

use super::private::PrivateBert;
use crate::error::Result;
use crate::local::{LocalOptions, LocalRunReport, Protocol};

/// Embeds every token sequence of `sequences` privately, one after another in one job: returns the
/// L2-normalised embeddings (`outputs`, one per sequence) with the costs of each (`latencies`, `online`),
/// the last one's per-step profile when `options.profile`, and the dealer's cost. Under `spdz2k` every
/// embedding is released only after the parties' MAC check and the client's output check pass.
pub fn embed_private(
    model: &PrivateBert,
    sequences: &[Vec<u32>],
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let fp = model.config().fixed_point;
    let inputs: Vec<Vec<u64>> = sequences
        .iter()
        .map(|ids| model.client_input(ids))
        .collect::<Result<_>>()?;
    let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
    match options.protocol {
        Protocol::Rep3m => crate::local_rep3m::run_program(model, fp, &inputs, &lengths, options),
        _ => crate::local_program::run_local(model, fp, &inputs, &lengths, options),
    }
}
