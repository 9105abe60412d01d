//! The messages nodes and clients exchange, one per frame ([`crate::frame`]).
//!
//! Conversations (each on its own QUIC stream):
//! - client -> node, bidirectional: `Submit` -> `Accepted` | `Failed`; then, for a party, `Run` -> `Outputs` |
//!   `Failed`; for the dealer, the client finishes the stream when the job is over.
//! - party i -> party j, unidirectional: `Hello { job, from: i }`, then one `Data` per protocol message.
//! - party -> dealer, bidirectional: `DealRequest` -> `Dealt` | `Failed`; to the last party, `Dealt` is
//!   followed by its corrections in `Corrections` frames (`more_corrections` words in all, generated while
//!   they are sent) and `DealerTime`; a `Failed` may replace any of them. This request is the only thing a
//!   party ever sends the dealer.
//! - `spdz2k` only, on the client's `Submit` stream to the dealer: `Accepted`, then `Owner` (the client's masks
//!   and output key) or `Failed`.
//! - anyone admitted -> node: `Ping` -> `Pong` (liveness).
//!
//! Bulk vectors travel as raw little-endian bytes ([`Bytes`], [`Words`]), not element by element.

use std::fmt;
use std::time::Duration;

use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use veil_protocols::net::NetStats;
use veil_protocols::prg::Seed;
use veil_protocols::spdz2k::transcript::CheckTranscript;
use veil_protocols::spdz2k::Shares as AuthVec;

use crate::manifest::SignedManifest;

/// A job identifier: 16 random bytes chosen by whoever assembles the manifest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobId(pub [u8; 16]);

impl JobId {
    /// A fresh random id.
    pub fn random() -> JobId {
        JobId(rand::random())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// Opaque bytes, serialized as one byte string.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes[{}]", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BytesVisitor).map(Bytes)
    }
}

/// Ring elements, serialized as their little-endian bytes. Never logged: `Debug` shows the length only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Words(pub Vec<u64>);

impl fmt::Debug for Words {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Words[{}]", self.0.len())
    }
}

impl Serialize for Words {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&veil_protocols::ring::to_bytes(&self.0))
    }
}

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = d.deserialize_byte_buf(BytesVisitor)?;
        veil_protocols::ring::from_bytes(&bytes)
            .map(Words)
            .ok_or_else(|| D::Error::custom("ring elements: length is not a multiple of 8"))
    }
}

/// One weight as the model owner deals it to a party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireWeight {
    /// Share (or plaintext, if public) of the matrix.
    pub matrix: Words,
    /// Share of the bias.
    pub bias: Option<Words>,
}

/// What the client sends a party to start its part of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The job (must match the submitted manifest).
    pub job: JobId,
    /// The party's weight shares, in plan order. `spdz2k`: what the owner published (`W - mask`, or the
    /// plaintext for public weights), the same for every party.
    pub weights: Vec<WireWeight>,
    /// The party's input shares, one per inference of the manifest. `spdz2k`: the published `x - mask`, the
    /// same for every party.
    pub inputs: Vec<Words>,
    /// Threads of the ring kernel.
    pub threads: u32,
    /// Whether to report a per-step profile of the last inference.
    pub profile: bool,
    /// Link shaping every party applies to its sends and receives (benchmarks; `None` in production).
    pub shaping: Option<veil_engine::lab::shaping::ShapingConfig>,
    /// Whether the last party reads each inference's dealer corrections before the inference's start line
    /// (benchmarks that time the online phase apart from the dealer, as the in-memory bench does; `false`
    /// in production, where the parties compute while the dealer still deals, which ends the job sooner).
    pub offline_first: bool,
}

impl From<veil_engine::private::WeightShare> for WireWeight {
    fn from(w: veil_engine::private::WeightShare) -> Self {
        Self {
            matrix: Words(w.matrix),
            bias: w.bias.map(Words),
        }
    }
}

impl From<veil_engine::private::PublishedWeight> for WireWeight {
    fn from(w: veil_engine::private::PublishedWeight) -> Self {
        Self {
            matrix: Words(w.matrix),
            bias: w.bias.map(Words),
        }
    }
}

impl RunRequest {
    /// A production run of `job` (one kernel thread, no profile, no shaping; callers that benchmark set
    /// those fields) with the party's weights, in plan order, and its inputs, one per inference.
    pub fn new(job: JobId, weights: Vec<WireWeight>, inputs: Vec<Words>) -> Self {
        Self {
            job,
            weights,
            inputs,
            threads: 1,
            profile: false,
            shaping: None,
            offline_first: false,
        }
    }

    /// `spdz2k`: the run every party of `job` gets, the same for all: what the owners publish under the
    /// dealer's masks (`value - mask` of every shared weight and of every input `encoded`, in request order;
    /// see [`veil_engine::local::publish_spdz2k`]). Fails if the dealer's owner material does not match the
    /// plan.
    pub fn published(
        job: JobId,
        plan: &veil_engine::Plan,
        encoded: &[Vec<u64>],
        owner: &OwnerMaterial,
    ) -> Result<Self, veil_engine::EngineError> {
        let masks: Vec<Vec<u64>> = owner.masks.iter().map(|m| m.0.clone()).collect();
        let (weights, published) = veil_engine::local::publish_spdz2k(plan, encoded, &masks)?;
        Ok(Self::new(
            job,
            weights.into_iter().map(WireWeight::from).collect(),
            published.into_iter().map(Words).collect(),
        ))
    }
}

/// What the dealer sends one party, first on its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dealt {
    /// The party's seed of the model's weight masks.
    pub model_seed: Seed,
    /// The party's seed of the job's material.
    pub job_seed: Seed,
    /// Corrections carried in this frame (empty: the dealer sends them all in `Corrections` frames; a
    /// reader appends those here).
    pub corrections: Words,
    /// How many correction words follow on the same stream (the last party only; zero for the others), in
    /// `Corrections` frames of at most [`CORRECTION_CHUNK_WORDS`] each, generated while they are sent (so
    /// that the dealer never holds a large job's corrections, and no frame exceeds the frame limit).
    pub more_corrections: u64,
    /// Bytes the dealer sends the whole committee for this job (known before any correction is dealt).
    pub dealer_bytes: u64,
    /// Seconds the dealer took to prepare the job when it sent this; for the last party, the `DealerTime`
    /// frame after the corrections replaces it with the whole dealing's time.
    pub dealer_seconds: f64,
}

/// Most correction words one frame carries (8 MiB).
pub const CORRECTION_CHUNK_WORDS: usize = 1 << 20;

/// [`NetStats`] on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireStats {
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Rounds.
    pub rounds: u64,
    /// Seconds blocked in `recv`.
    pub wait_seconds: f64,
}

impl From<&NetStats> for WireStats {
    fn from(s: &NetStats) -> Self {
        Self {
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            messages_sent: s.messages_sent,
            rounds: s.rounds,
            wait_seconds: s.wait.as_secs_f64(),
        }
    }
}

impl From<&WireStats> for NetStats {
    fn from(s: &WireStats) -> Self {
        NetStats {
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            messages_sent: s.messages_sent,
            rounds: s.rounds,
            wait: seconds(s.wait_seconds),
        }
    }
}

/// A duration from seconds received from a peer (negative or non-finite values become zero).
pub fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

/// One step of a party's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireStep {
    /// The step's label.
    pub label: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Communication during the step.
    pub net: WireStats,
    /// Dealer material the step consumed.
    pub material: veil_protocols::material::MaterialUse,
}

/// A party's results: its output shares and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartyReport {
    /// Output shares, one per inference.
    pub outputs: Vec<Words>,
    /// Wall time of each inference, seconds.
    pub latencies: Vec<f64>,
    /// Offline time of each inference before its input (material expansion, preprocessing, the MAC check's
    /// seed commitments), seconds.
    pub preparation: Vec<f64>,
    /// Online traffic of each inference.
    pub online: Vec<WireStats>,
    /// Traffic of the model setup.
    pub setup: WireStats,
    /// Per-step profile of the last inference (empty unless asked).
    pub profile: Vec<WireStep>,
    /// Bytes the dealer sent the committee.
    pub dealer_bytes: u64,
    /// Seconds the dealer took.
    pub dealer_seconds: f64,
    /// UDP bytes this party's QUIC connections to its peers transmitted during each inference (payload,
    /// framing, QUIC and UDP headers, acknowledgements, retransmissions).
    pub udp_tx_bytes: Vec<u64>,
    /// `spdz2k`: authenticated output shares, one per inference (`outputs` is empty then); empty for `semi2k`.
    pub auth_outputs: Vec<AuthWords>,
    /// `spdz2k`: this party's view of each MAC check it ran, in order (one per inference), for the
    /// verifier ([`crate::verifier`]); empty for `semi2k`. Holds no share or value.
    pub transcripts: Vec<CheckTranscript>,
    /// `rep3m`: this party's view of each check it passed, in order (one per inference), for the verifier
    /// (`veil_protocols::rep3m::transcript`); empty for the other protocols. Holds no share or value.
    pub rep3m_checks: Vec<veil_protocols::rep3m::transcript::CheckView>,
    /// `spdz2k`: this party's share of the MAC key alpha (little-endian), released after its last MAC check
    /// passed, inside the report sealed to the client: the client adds every party's share to check the
    /// output MACs ([`output_key`]). `None` for `semi2k`.
    pub output_key_share: Option<[u8; 16]>,
}

/// The output MAC key of a `spdz2k` job: the sum of every party's released share, or `None` if a report
/// lacks one.
pub fn output_key(reports: &[PartyReport]) -> Option<u128> {
    reports.iter().try_fold(0u128, |acc, r| {
        r.output_key_share
            .map(|s| acc.wrapping_add(u128::from_le_bytes(s)))
    })
}

/// A party's authenticated (`spdz2k`) share of a vector: value shares and MAC shares in Z_2^128, each element
/// as two little-endian words, low word first. Never logged: `Debug` shows the length only.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthWords {
    /// Value shares, two words per element.
    pub values: Words,
    /// MAC shares, two words per element.
    pub macs: Words,
}

impl fmt::Debug for AuthWords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthWords[{}]", self.values.0.len() / 2)
    }
}

fn words_of(wide: &[u128]) -> Words {
    Words(
        wide.iter()
            .flat_map(|&x| [x as u64, (x >> 64) as u64])
            .collect(),
    )
}

fn wide_of(words: &Words) -> Option<Vec<u128>> {
    if !words.0.len().is_multiple_of(2) {
        return None;
    }
    Some(
        words
            .0
            .chunks_exact(2)
            .map(|c| u128::from(c[0]) | (u128::from(c[1]) << 64))
            .collect(),
    )
}

impl From<&AuthVec> for AuthWords {
    fn from(x: &AuthVec) -> Self {
        AuthWords {
            values: words_of(&x.v),
            macs: words_of(&x.m),
        }
    }
}

impl AuthWords {
    /// The shares back, or `None` if the two halves do not describe the same number of elements.
    pub fn to_auth(&self) -> Option<AuthVec> {
        let v = wide_of(&self.values)?;
        let m = wide_of(&self.macs)?;
        (v.len() == m.len()).then_some(AuthVec { v, m })
    }
}

/// What the dealer of a `spdz2k` job sends the client (the owner of the inputs and the weights, and the
/// recipient of the output) right after accepting the manifest: the plaintext masks of every input and
/// weight mask the job deals, in request order (the client publishes `value - mask`), and the MAC key that
/// checks the output shares. Never logged: `Debug` shows sizes only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerMaterial {
    /// Masks, one per `Input` or `WeightMask` request, in request order. (No MAC key: the client gets it
    /// from the parties' reports, after their checks; see [`PartyReport::output_key_share`].)
    pub masks: Vec<Words>,
}

impl fmt::Debug for OwnerMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerMaterial[{} masks]", self.masks.len())
    }
}

/// Every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// A signed committee manifest for the receiving node to check and accept.
    Submit(SignedManifest),
    /// The manifest was accepted.
    Accepted,
    /// Start a party's part of a job.
    Run(RunRequest),
    /// A party's results.
    Outputs(PartyReport),
    /// The request failed; the text says why (never contains shares or values).
    Failed(String),
    /// First frame of a party-to-party data stream.
    Hello {
        /// The job.
        job: JobId,
        /// The sending party's index.
        from: u32,
    },
    /// One protocol message.
    Data(Bytes),
    /// A party asks the dealer for its material.
    DealRequest {
        /// The job.
        job: JobId,
        /// The asking party's index.
        party: u32,
    },
    /// The dealer's answer.
    Dealt(Dealt),
    /// Liveness probe.
    Ping,
    /// Answer to `Ping`.
    Pong {
        /// Jobs live on the node.
        active_jobs: u32,
    },
    /// `spdz2k`: the dealer's material for the job's client, sent on the client's `Submit` stream after
    /// `Accepted`.
    Owner(OwnerMaterial),
    /// More of a party's corrections, after `Dealt` (see [`Dealt::more_corrections`]).
    Corrections(Words),
    /// After `Hello` on a party's announcement stream: the address of its job's own endpoint, where its
    /// peers of higher index dial it (see `quic_net`).
    JobEndpoint(std::net::SocketAddr),
    /// First frame of a coordinator generation job's client stream to one of its parties: the client the
    /// party's sealed ticket names (`crate::generation::GenerationTicket`) takes the party's `Run` stream
    /// (`crate::generation`'s exchange follows on it).
    Attach {
        /// The job (its run id).
        job: JobId,
    },
    /// After the last party's corrections: the dealer's time to deal the job (preparing it and generating
    /// every correction, not counting the waits for the stream), in seconds.
    DealerTime {
        /// Seconds.
        seconds: f64,
    },
}

impl Msg {
    /// A guess of the encoded size, to size buffers.
    pub fn size_hint(&self) -> usize {
        match self {
            Msg::Data(b) => b.0.len() + 8,
            _ => 64,
        }
    }

    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Submit(_) => "Submit",
            Msg::Accepted => "Accepted",
            Msg::Run(_) => "Run",
            Msg::Outputs(_) => "Outputs",
            Msg::Failed(_) => "Failed",
            Msg::Hello { .. } => "Hello",
            Msg::Data(_) => "Data",
            Msg::DealRequest { .. } => "DealRequest",
            Msg::Dealt(_) => "Dealt",
            Msg::Ping => "Ping",
            Msg::Pong { .. } => "Pong",
            Msg::Owner(_) => "Owner",
            Msg::Corrections(_) => "Corrections",
            Msg::JobEndpoint(_) => "JobEndpoint",
            Msg::Attach { .. } => "Attach",
            Msg::DealerTime { .. } => "DealerTime",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_run_carries_value_minus_mask_and_refuses_masks_that_do_not_match_the_plan() {
        let device = burn::tensor::Device::flex();
        let model = veil_engine::workloads::by_name("network-a", 3, &device)
            .expect("known workload")
            .expect("model");
        let fp = veil_protocols::ring::FixedPoint::new(16).expect("fixed point");
        let plan =
            veil_engine::Plan::compile(&model, fp, veil_engine::WeightMode::Shared).expect("plan");
        // One mask per shared weight matrix and bias (request order), then one per input.
        let mut masks: Vec<Words> = Vec::new();
        for w in &plan.weights {
            masks.push(Words(vec![7; w.matrix.len()]));
            if let Some(b) = &w.bias {
                masks.push(Words(vec![7; b.len()]));
            }
        }
        let input = vec![100u64; plan.input_len];
        masks.push(Words(vec![1; plan.input_len]));
        let owner = OwnerMaterial { masks };
        let run =
            RunRequest::published(JobId([5; 16]), &plan, std::slice::from_ref(&input), &owner)
                .expect("matching masks");
        assert_eq!(run.job, JobId([5; 16]));
        assert_eq!(run.weights.len(), plan.weights.len());
        assert_eq!(run.inputs, vec![Words(vec![99; plan.input_len])]);
        assert_eq!((run.threads, run.profile, run.shaping), (1, false, None));
        let short = OwnerMaterial {
            masks: owner.masks[..owner.masks.len() - 1].to_vec(),
        };
        assert!(RunRequest::published(JobId([5; 16]), &plan, &[input], &short).is_err());
    }

    #[test]
    fn a_full_corrections_frame_fits_the_default_frame_limit() {
        let frame = crate::frame::encode(&Msg::Corrections(Words(vec![7; CORRECTION_CHUNK_WORDS])))
            .expect("encodes");
        assert!(frame.len() <= crate::frame::DEFAULT_MAX_FRAME);
        assert!(frame.len() > 8 * CORRECTION_CHUNK_WORDS);
    }
}
