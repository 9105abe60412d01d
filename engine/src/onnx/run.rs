//! An imported graph on a local committee: n parties on threads over the in-memory mesh (fed by a dealer
//! thread under `semi2k` and `spdz2k`; three parties without a dealer under `rep3` and `rep3m`), each
//! running the one party program ([`crate::session::PartySession`]) with the graph as its [`Program`], or
//! the replicated parties' step. What `veil bench --model X.onnx` and the tests run. The client's part
//! (encoding) happens here, the committee is [`crate::local_program::run_local`]'s (`rep3m`:
//! [`crate::local_rep3m::run_program`]'s, where each output is released only after the parties' checks).

use veil_protocols::domain::Domain;
use veil_protocols::material::Request;
use veil_protocols::net::Net;
use veil_protocols::semi2k::Party;

use super::private::PrivateGraph;
use crate::error::Result;
use crate::local::{LocalOptions, LocalRunReport, Protocol};
use crate::private::StepProfile;
use crate::session::Program;

impl<D: Domain> Program<D> for PrivateGraph {
    fn input_len(&self, items: usize) -> usize {
        items * self.graph().input_len()
    }
    fn requests(&self, items: usize) -> Vec<Request> {
        PrivateGraph::requests(self, items)
    }
    fn run<N: Net>(
        &self,
        party: &mut Party<N, D>,
        input: D::Arith,
        items: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<D::Arith> {
        self.forward(party, input, items, profile)
    }
}

/// Runs `model` privately on every input of `inputs` (each the graph's whole input, f32), one inference
/// after another in one job; returns the decoded outputs with each one's costs. Under `spdz2k` an output is
/// released only after the parties' MAC check and the client's output check pass.
pub fn infer_private(
    model: &PrivateGraph,
    inputs: &[Vec<f32>],
    options: &LocalOptions,
) -> Result<LocalRunReport> {
    let fp = model.config().fixed_point;
    let encoded: Vec<Vec<u64>> = inputs
        .iter()
        .map(|x| model.client_input(x))
        .collect::<Result<_>>()?;
    let items = vec![1usize; inputs.len()];
    match options.protocol {
        Protocol::Rep3m => crate::local_rep3m::run_program(model, fp, &encoded, &items, options),
        _ => crate::local_program::run_local(model, fp, &encoded, &items, options),
    }
}
