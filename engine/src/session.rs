//! The party program, written once: what one execution party does in a job, over any [`Net`] (the
//! in-memory mesh of a local run, QUIC on a node) and any share [`Domain`] that implements
//! [`SessionDomain`].
//!
//! A job is: set up the model (the caller does it with [`crate::private::setup`] or
//! [`crate::private::setup_published`], or nothing for public weights), then, per inference,
//! [`PartySession::infer`]:
//! 1. *offline*: wait at the start line (local runs), expand the inference's dealer material and run the
//!    program's preprocessing ([`Program::precompute`]) if the program expands ahead, commit the MAC check's
//!    seed ([`SessionDomain::commit`]), then wait at the transport's start line (`Net::start_line`: over
//!    QUIC the parties exchange an empty frame, not counted as traffic; nothing in memory); none of it
//!    depends on the input;
//! 2. *online*, timed: turn the client's words into this party's input ([`SessionDomain::input`]: an additive
//!    share, or `x - r` against a dealt mask), run the program, verify every opened value
//!    ([`SessionDomain::verify`]), and only then hand the output share back for release.
//!
//! The transport and the material's origin (a dealer thread, a dealer node) are the caller's: local runs
//! (`crate::local`, `crate::bert::run`) and nodes (`veil_node::party`) differ only in them, so every workload
//! costs the same bytes and rounds on every transport.
//!
//! Invariant: [`PartySession::infer`] returns an output share only after [`SessionDomain::verify`] passed
//! for every value opened since the previous inference.
//!
//! The dealer-free replicated protocols (`rep3`, and `rep3m` in memory) have no offline phase and their own
//! party type: one inference of theirs is [`infer_replicated`], which in-memory runs (`crate::local_rep3`)
//! and nodes (`veil_node::party`) both call, so they too cost the same bytes and rounds on every transport.

use std::time::{Duration, Instant};

use veil_protocols::domain::{Domain, Semi2k};
use veil_protocols::material::Request;
use veil_protocols::net::{Net, NetStats};
use veil_protocols::ops::MpcOps;
use veil_protocols::rep3::RepShare;
use veil_protocols::semi2k::Party;
use veil_protocols::spdz2k::transcript::CheckTranscript;
use veil_protocols::spdz2k::Spdz2k;

use crate::bert::private::PrivateBert;
use crate::error::{EngineError, Result};
use crate::private::{PartyModel, StepProfile};
use crate::start_line::StartLine;

/// The model-dependent part of the party program: what one inference computes. An inference has `items`
/// units: batch items for a [`PartyModel`], tokens for a [`PrivateBert`].
pub trait Program<D: Domain>: Sync {
    /// Elements of one inference's input.
    fn input_len(&self, items: usize) -> usize;
    /// The dealer material of one inference, in the order [`Self::run`] consumes it (after the input's own
    /// material, see [`SessionDomain::input_requests`]).
    fn requests(&self, items: usize) -> Vec<Request>;
    /// Whether an inference's material is expanded (and [`Self::precompute`] run) before its input arrives.
    /// `false` for programs whose material is too large to hold expanded at once: they expand as they go.
    fn expands_ahead(&self) -> bool {
        true
    }
    /// Preprocessing once the inference's material is expanded (offline); nothing by default.
    fn precompute<N: Net>(&self, _party: &mut Party<N, D>) -> Result<()> {
        Ok(())
    }
    /// Runs the program on this party's input share; returns its output share. `profile`, if given,
    /// receives one entry per step.
    fn run<N: Net>(
        &self,
        party: &mut Party<N, D>,
        input: D::Arith,
        items: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<D::Arith>;
}

impl<D: Domain> Program<D> for PartyModel<'_, D> {
    fn input_len(&self, items: usize) -> usize {
        items * self.plan().input_len
    }
    fn requests(&self, items: usize) -> Vec<Request> {
        self.plan().requests(items)
    }
    fn precompute<N: Net>(&self, party: &mut Party<N, D>) -> Result<()> {
        PartyModel::precompute(self, party)
    }
    fn run<N: Net>(
        &self,
        party: &mut Party<N, D>,
        input: D::Arith,
        items: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<D::Arith> {
        self.infer(party, input, items, profile)
    }
}

impl<D: Domain> Program<D> for PrivateBert {
    fn input_len(&self, items: usize) -> usize {
        items * self.hidden()
    }
    fn requests(&self, items: usize) -> Vec<Request> {
        PrivateBert::requests(self, items)
    }
    /// A whole sequence's `spdz2k` material would take gigabytes expanded: the encoder expands as it goes.
    fn expands_ahead(&self) -> bool {
        false
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

/// The protocol-dependent steps of the party program around one inference.
pub trait SessionDomain: Domain {
    /// The dealer material an input of `len` elements takes before the program's (`spdz2k`: its mask).
    fn input_requests(len: usize) -> Vec<Request>;
    /// Data-independent work before the input arrives (`spdz2k`: the MAC check's seed commitments).
    fn commit<N: Net>(party: &mut Party<N, Self>) -> Result<()>;
    /// This party's input share from what the client sent it: an additive share (`semi2k`), or the
    /// published `x - r` against the dealt mask `[r]` (`spdz2k`).
    fn input<N: Net>(party: &mut Party<N, Self>, words: Vec<u64>) -> Result<Self::Arith>;
    /// Checks every value opened since the last check; its transcript where the protocol has one. Must pass
    /// before any output share leaves the party.
    fn verify<N: Net>(party: &mut Party<N, Self>) -> Result<Option<CheckTranscript>>;
}

impl SessionDomain for Semi2k {
    fn input_requests(_len: usize) -> Vec<Request> {
        Vec::new()
    }
    fn commit<N: Net>(_party: &mut Party<N, Self>) -> Result<()> {
        Ok(())
    }
    fn input<N: Net>(_party: &mut Party<N, Self>, words: Vec<u64>) -> Result<Vec<u64>> {
        Ok(words)
    }
    fn verify<N: Net>(_party: &mut Party<N, Self>) -> Result<Option<CheckTranscript>> {
        Ok(None)
    }
}

impl SessionDomain for Spdz2k {
    fn input_requests(len: usize) -> Vec<Request> {
        vec![Request::Input { len }]
    }
    fn commit<N: Net>(party: &mut Party<N, Self>) -> Result<()> {
        Ok(party.commit_check_seed()?)
    }
    fn input<N: Net>(party: &mut Party<N, Self>, words: Vec<u64>) -> Result<Self::Arith> {
        let mask = party.material().input(words.len())?;
        Ok(party.input_from_masked(mask, &words))
    }
    fn verify<N: Net>(party: &mut Party<N, Self>) -> Result<Option<CheckTranscript>> {
        Ok(Some(party.verify_transcript()?))
    }
}

/// The dealer material of a job of one inference per entry of `items`, after `setup` (the model setup's
/// requests): per inference, the input's then the program's. The dealer and every party derive the same list.
pub fn job_requests<D: SessionDomain, P: Program<D>>(
    program: &P,
    setup: Vec<Request>,
    items: &[usize],
) -> Vec<Request> {
    let mut requests = setup;
    for &n in items {
        requests.extend(D::input_requests(program.input_len(n)));
        requests.extend(program.requests(n));
    }
    requests
}

/// What one inference produced at one party.
pub struct Inference<D: Domain> {
    /// This party's output share, verified (see the module invariant).
    pub output: D::Arith,
    /// Offline time before the input: material expansion, preprocessing, seed commitments.
    pub preparation: Duration,
    /// Online wall time, from the input to the verified output.
    pub latency: Duration,
    /// Online traffic.
    pub online: NetStats,
    /// Per-step profile (empty unless profiling).
    pub profile: Vec<StepProfile>,
    /// The MAC check's transcript (`spdz2k`), for a verifier.
    pub transcript: Option<CheckTranscript>,
}

/// One party's program over its link `N` in share domain `D`, running `P` (see the module doc).
pub struct PartySession<'a, N: Net, D: SessionDomain, P: Program<D>> {
    party: &'a mut Party<N, D>,
    program: &'a P,
    start_line: Option<&'a StartLine>,
    profile: bool,
    setup: NetStats,
}

impl<'a, N: Net, D: SessionDomain, P: Program<D>> PartySession<'a, N, D, P> {
    /// A session for `party`, whose model setup (if any) is done: `program` is its result.
    pub fn new(party: &'a mut Party<N, D>, program: &'a P) -> Self {
        let setup = party.stats().clone();
        Self {
            party,
            program,
            start_line: None,
            profile: false,
            setup,
        }
    }

    /// Waits at `line` before and after each inference's offline phase (an in-process committee: every
    /// party's online clock starts together).
    pub fn with_start_line(mut self, line: &'a StartLine) -> Self {
        self.start_line = Some(line);
        self
    }

    /// Records per-step profiles.
    pub fn with_profile(mut self, profile: bool) -> Self {
        self.profile = profile;
        self
    }

    /// Starts or stops recording per-step profiles (from the next inference).
    pub fn set_profile(&mut self, profile: bool) {
        self.profile = profile;
    }

    /// The model setup's traffic.
    pub fn setup_stats(&self) -> &NetStats {
        &self.setup
    }

    /// The party (its link, stats, transcript).
    pub fn party(&self) -> &Party<N, D> {
        self.party
    }

    /// One inference of `items` units from the client's `words` (see [`SessionDomain::input`]).
    pub fn infer(&mut self, words: Vec<u64>, items: usize) -> Result<Inference<D>> {
        let expected = self.program.input_len(items);
        if words.len() != expected {
            return Err(EngineError::InputShape {
                got: words.len(),
                expected,
                batch: items,
                item: vec![expected / items.max(1)],
            });
        }
        let preparation = self.offline(items)?;
        let before = self.party.stats().clone();
        let started = Instant::now();
        let mut profile = Vec::new();
        let input = D::input(self.party, words)?;
        let output = self.program.run(
            self.party,
            input,
            items,
            self.profile.then_some(&mut profile),
        )?;
        // No output share leaves the party before every value it opened passed the check.
        let transcript = D::verify(self.party)?;
        let latency = started.elapsed();
        // What the party sent last must not wait in its transport while it waits for the next input.
        self.party.flush()?;
        Ok(Inference {
            output,
            preparation,
            latency,
            online: self.party.stats().since(&before),
            profile,
            transcript,
        })
    }

    /// The offline phase of one inference; returns the time it took (start-line waits excluded).
    fn offline(&mut self, items: usize) -> Result<Duration> {
        let mut spent = Duration::ZERO;
        if let Some(line) = self.start_line {
            line.wait()?;
        }
        if self.program.expands_ahead() {
            let started = Instant::now();
            let requests = D::input_requests(self.program.input_len(items)).len()
                + self.program.requests(items).len();
            self.party.material().prepare(requests)?;
            self.program.precompute(self.party)?;
            spent += started.elapsed();
        }
        if let Some(line) = self.start_line {
            line.wait()?;
        }
        let committing = Instant::now();
        D::commit(self.party)?;
        spent += committing.elapsed();
        // Over a network, the parties' own start line (a no-op in memory, where `start_line` did it).
        self.party.start_line()?;
        Ok(spent)
    }
}

/// What one inference of a replicated (dealer-free) party produced.
pub struct ReplicatedInference {
    /// This party's replicated share of the output (its two components).
    pub output: RepShare,
    /// Online wall time, from the input share to the output share.
    pub latency: Duration,
    /// Online traffic.
    pub online: NetStats,
    /// Per-step profile (empty unless profiling).
    pub profile: Vec<StepProfile>,
}

/// One inference of a `rep3` (or `rep3m`) party on its replicated `input` share of `items` units: `infer`
/// runs the program (a plan, an encoder, a graph) and the traffic and time it took are measured. There is no
/// offline phase: the only correlated randomness comes from the PRF keys agreed when the party joined.
pub fn infer_replicated<P: MpcOps<Share = RepShare>>(
    party: &mut P,
    input: RepShare,
    items: usize,
    profile: bool,
    infer: impl FnOnce(&mut P, RepShare, usize, Option<&mut Vec<StepProfile>>) -> Result<RepShare>,
) -> Result<ReplicatedInference> {
    // Every party's online clock starts together (the transport's start line; in memory the runner's).
    party.start_line()?;
    let before = party.stats().clone();
    let started = Instant::now();
    let mut steps = Vec::new();
    let output = infer(party, input, items, profile.then_some(&mut steps))?;
    // Nothing this party sent may wait in its transport while it waits for its next input.
    party.flush()?;
    Ok(ReplicatedInference {
        output,
        latency: started.elapsed(),
        online: party.stats().since(&before),
        profile: steps,
    })
}
