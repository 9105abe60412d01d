//! The client side of a job: assemble and sign the manifest, submit it to every member, hand each party its
//! weight and input shares, collect output shares and measurements, reconstruct.
//!
//! [`run_private`] is the multi-process twin of `veil_engine::local::run_private` and returns the same
//! [`LocalRunReport`], so the benchmark reports both transports with one piece of code. The client here
//! plays the model owner too (it deals the weight shares).
//!
//! Invariant: a job runs only after every member accepted the manifest, so every member has admitted every
//! other member's key before any party dials a peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use veil_engine::bert::private::PrivateBert;
use veil_engine::local::{deal_weights, LocalRunReport, Protocol};
use veil_engine::private::StepProfile;
use veil_engine::{Model, Plan};
use veil_protocols::net::NetStats;
use veil_protocols::rep3::RepShare;
use veil_protocols::share::{reconstruct, share};
use veil_protocols::spdz2k::transcript::CheckTranscript;

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::frame::{self, RecvError};
use crate::identity::{Identity, PublicKey};
use crate::manifest::{Manifest, Member, ModelSpec};
use crate::party::{replicated_share, replicated_words};
use crate::peers::Peers;
use crate::tls::AllowList;
use crate::wire::{
    seconds, AuthWords, JobId, Msg, OwnerMaterial, PartyReport, RunRequest, WireWeight, Words,
};

/// Generation jobs (a chat turn whose committee keeps the cache): `Client::generate`.
#[path = "chat_client.rs"]
pub mod chat;

/// How a client connects and waits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Local UDP address to bind.
    pub bind: SocketAddr,
    /// Handshake timeout.
    pub connect_timeout: Duration,
    /// How long to wait for a member's answer (a whole job may take this long).
    pub job_timeout: Duration,
    /// Largest frame accepted and sent.
    pub max_frame: usize,
    /// QUIC idle timeout: a member silent this long counts as gone.
    pub idle_timeout: Duration,
    /// Once a party has reported failure, how long to wait for the others' reports.
    pub failure_grace: Duration,
    /// Link shaping the parties of this client's jobs apply (benchmarks only; `None` by default).
    pub shaping: Option<veil_engine::lab::shaping::ShapingConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            connect_timeout: Duration::from_secs(10),
            job_timeout: Duration::from_secs(600),
            max_frame: crate::frame::DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(30),
            failure_grace: Duration::from_secs(5),
            shaping: None,
        }
    }
}

/// A client: an identity and a QUIC endpoint.
pub struct Client {
    runtime: Runtime,
    peers: Arc<Peers>,
    identity: Identity,
    options: ClientOptions,
}

type Bi = (SendStream, RecvStream);

impl Client {
    /// A client with `identity`.
    pub fn new(identity: Identity, options: ClientOptions) -> Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("veil-client-io")
            .enable_all()
            .build()
            .map_err(|e| NodeError::System("starting the runtime", e))?;
        let mut config = NodeConfig::new(options.bind, std::env::temp_dir());
        config.connect_timeout_ms = options.connect_timeout.as_millis().max(1) as u64;
        config.max_frame_bytes = options.max_frame;
        config.idle_timeout_ms = options.idle_timeout.as_millis().max(1) as u64;
        let (peers, _announced) = {
            let _guard = runtime.enter();
            // Nobody may connect to a client: its allow-list is empty.
            Peers::bind(&config, &identity, Arc::new(AllowList::new([])))?
        };
        Ok(Client {
            runtime,
            peers,
            identity,
            options,
        })
    }

    /// The client's public identity (the manifest signer).
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    async fn open(&self, member: &Member) -> Result<Bi> {
        let conn = self
            .peers
            .connect(member.public_key, member.address, true)
            .await?;
        conn.open_bi().await.map_err(NodeError::quic)
    }

    async fn read(&self, recv: &mut RecvStream, what: &'static str) -> Result<Msg> {
        match tokio::time::timeout(
            self.options.job_timeout,
            frame::read(recv, self.options.max_frame),
        )
        .await
        {
            Err(_) => Err(NodeError::Timeout(self.options.job_timeout, what)),
            Ok(Ok(m)) => Ok(m),
            Ok(Err(RecvError::Frame(e))) => Err(e.into()),
            Ok(Err(e)) => Err(NodeError::Quic(format!("{what}: {e}"))),
        }
    }

    /// Asks a member whether it is alive; returns its number of live jobs.
    pub fn ping(&self, member: &Member) -> Result<u32> {
        self.runtime.block_on(async {
            let (mut send, mut recv) = self.open(member).await?;
            frame::write(&mut send, &Msg::Ping)
                .await
                .map_err(|e| NodeError::Quic(e.to_string()))?;
            let _ = send.finish();
            match self.read(&mut recv, "waiting for Pong").await? {
                Msg::Pong { active_jobs } => Ok(active_jobs),
                other => Err(NodeError::Unexpected(format!("answered {}", other.name()))),
            }
        })
    }

    /// Signs `manifest`, submits it to every member, runs it with one request per party, and returns each
    /// party's report. Fails with every party's error if any party fails.
    pub fn run_job(&self, manifest: &Manifest, runs: Vec<RunRequest>) -> Result<Vec<PartyReport>> {
        self.run_job_with(manifest, |_| Ok(runs))
            .map(|(reports, _)| reports)
    }

    /// [`Self::run_job`] with the run requests made once every member accepted the manifest: `make_runs`
    /// gets the dealer's owner material (`spdz2k`: the client's masks; `None` for
    /// `semi2k`, and for `rep3`, which has no dealer), which is returned with the reports.
    pub fn run_job_with(
        &self,
        manifest: &Manifest,
        make_runs: impl FnOnce(Option<&OwnerMaterial>) -> Result<Vec<RunRequest>>,
    ) -> Result<(Vec<PartyReport>, Option<OwnerMaterial>)> {
        let signed = manifest.sign(&self.identity)?;
        self.runtime.block_on(async {
            let mut members: Vec<&Member> = manifest.parties.iter().collect();
            members.extend(manifest.dealer.as_ref());
            let mut streams = Vec::with_capacity(members.len());
            for (i, member) in members.iter().enumerate() {
                let (mut send, mut recv) = self.open(member).await.map_err(|e| {
                    NodeError::Job(format!("member {i} at {}: {e}", member.address))
                })?;
                frame::write(&mut send, &Msg::Submit(signed.clone()))
                    .await
                    .map_err(|e| NodeError::Quic(e.to_string()))?;
                match self
                    .read(&mut recv, "waiting for the manifest's acceptance")
                    .await?
                {
                    Msg::Accepted => streams.push((send, recv)),
                    Msg::Failed(why) => {
                        return Err(NodeError::Job(format!("member {i} refused the job: {why}")))
                    }
                    other => {
                        return Err(NodeError::Unexpected(format!(
                            "member {i} answered {}",
                            other.name()
                        )))
                    }
                }
            }
            let mut dealer_stream = match manifest.dealer {
                Some(_) => Some(
                    streams
                        .pop()
                        .ok_or_else(|| NodeError::Job("no dealer stream".into()))?,
                ),
                None => None,
            };
            let owner = if let Some((_, dealer_recv)) = dealer_stream
                .as_mut()
                .filter(|_| manifest.protocol == Protocol::Spdz2k)
            {
                match self
                    .read(dealer_recv, "waiting for the dealer's owner material")
                    .await?
                {
                    Msg::Owner(o) => Some(o),
                    Msg::Failed(why) => return Err(NodeError::Job(format!("the dealer: {why}"))),
                    other => {
                        return Err(NodeError::Unexpected(format!(
                            "the dealer answered {}",
                            other.name()
                        )))
                    }
                }
            } else {
                None
            };
            let runs = make_runs(owner.as_ref())?;
            if runs.len() != manifest.parties.len() {
                return Err(NodeError::Job(format!(
                    "{} run requests for {} parties",
                    runs.len(),
                    manifest.parties.len()
                )));
            }
            let mut set = JoinSet::new();
            for (i, ((mut send, mut recv), run)) in streams.into_iter().zip(runs).enumerate() {
                let timeout = self.options.job_timeout;
                let max_frame = self.options.max_frame;
                set.spawn(async move {
                    let result = async {
                        frame::write(&mut send, &Msg::Run(run))
                            .await
                            .map_err(|e| format!("sending the run request: {e}"))?;
                        let _ = send.finish();
                        match tokio::time::timeout(timeout, frame::read(&mut recv, max_frame)).await
                        {
                            Err(_) => Err(format!("no answer within {timeout:?}")),
                            Ok(Ok(Msg::Outputs(report))) => Ok(report),
                            Ok(Ok(Msg::Failed(why))) => Err(why),
                            Ok(Ok(other)) => Err(format!("answered {}", other.name())),
                            Ok(Err(e)) => Err(format!("connection to the party lost: {e}")),
                        }
                    }
                    .await;
                    (i, result)
                });
            }
            let mut results: Vec<Option<std::result::Result<PartyReport, String>>> =
                (0..manifest.parties.len()).map(|_| None).collect();
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                let next = match deadline {
                    None => set.join_next().await,
                    Some(at) => match tokio::time::timeout_at(at, set.join_next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            set.abort_all();
                            break;
                        }
                    },
                };
                match next {
                    None => break,
                    Some(Ok((i, r))) => {
                        if r.is_err() && deadline.is_none() {
                            deadline =
                                Some(tokio::time::Instant::now() + self.options.failure_grace);
                        }
                        results[i] = Some(r);
                    }
                    Some(Err(e)) => return Err(NodeError::Job(format!("client task failed: {e}"))),
                }
            }
            if let Some((dealer_send, _)) = dealer_stream.as_mut() {
                let _ = dealer_send.finish();
            }
            collect(results).map(|reports| (reports, owner))
        })
    }
}

/// All reports, or one error listing every party's failure, the root causes (not disconnections) first.
fn collect(
    results: Vec<Option<std::result::Result<PartyReport, String>>>,
) -> Result<Vec<PartyReport>> {
    let mut reports = Vec::new();
    let mut causes = Vec::new();
    let mut echoes = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(report)) => reports.push(report),
            Some(Err(why)) if why.contains("disconnected") => {
                echoes.push(format!("[party {i}] {why}"))
            }
            Some(Err(why)) => causes.push(format!("[party {i}] {why}")),
            None => echoes.push(format!("[party {i}] no answer (unreachable?)")),
        }
    }
    if causes.is_empty() && echoes.is_empty() {
        return Ok(reports);
    }
    causes.extend(echoes);
    Err(NodeError::Job(causes.join("; ")))
}

/// A private run over QUIC: the job's public description and local choices.
pub struct QuicJob<'a> {
    /// The model (the client computes nothing with it but input checks).
    pub model: &'a Model,
    /// Its plan (the model owner's weights in ring form).
    pub plan: &'a Plan,
    /// The public model description for the manifest (must describe `model`).
    pub spec: ModelSpec,
    /// Items per inference.
    pub batch: usize,
    /// Ring-kernel threads per party.
    pub threads: usize,
    /// Seed of the client's shares (reproducible runs); fresh randomness if `None`.
    pub seed: Option<u64>,
    /// Ask parties for a per-step profile of the last inference.
    pub profile: bool,
}

impl QuicJob<'_> {
    /// Checks every input against the model (shape and values) and encodes it in the plan's fixed point.
    fn encode(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<u64>>> {
        let fp = self.plan.fixed_point;
        inputs
            .iter()
            .map(|x| {
                self.model.check_input(x, self.batch)?;
                Ok(fp.encode(x).map_err(veil_protocols::ProtocolError::from)?)
            })
            .collect()
    }
}

/// The committee that runs a job.
#[derive(Debug, Clone)]
pub struct Committee {
    /// Execution parties in index order.
    pub parties: Vec<Member>,
    /// The dealer; `None` for a committee of a protocol without one (`rep3`).
    pub dealer: Option<Member>,
}

/// What a QUIC run produced: the same report as an in-memory run, plus QUIC's own traffic.
pub struct QuicRun {
    /// Outputs and measurements, as `veil_engine::local::run_private` reports them.
    pub report: LocalRunReport,
    /// Per inference, per party: UDP bytes sent to peers (payload and all overhead).
    pub udp_tx_bytes: Vec<Vec<u64>>,
    /// `spdz2k`: per party, its view of each MAC check (what a verifier checks with
    /// [`crate::verifier::verify_job`]); empty for `semi2k`.
    pub transcripts: Vec<Vec<CheckTranscript>>,
}

/// Runs `inputs.len()` private inferences of `job` on `committee`; see the module doc.
pub fn run_private(
    client: &Client,
    committee: &Committee,
    job: &QuicJob<'_>,
    inputs: &[Vec<f32>],
) -> Result<QuicRun> {
    let n = committee.parties.len();
    let fp = job.plan.fixed_point;
    let mut rng = match job.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    let mut input_shares: Vec<Vec<Words>> = (0..n).map(|_| Vec::new()).collect();
    for encoded in job.encode(inputs)? {
        for (i, s) in share(&encoded, n, &mut rng)?.into_iter().enumerate() {
            input_shares[i].push(Words(s));
        }
    }
    let weights = deal_weights(job.plan, n, &mut rng)?;
    let manifest = job_manifest(client, committee, job, inputs.len(), Protocol::Semi2k)?;
    let runs: Vec<RunRequest> = weights
        .into_iter()
        .zip(input_shares)
        .map(|(w, inputs)| RunRequest {
            threads: job.threads as u32,
            profile: job.profile,
            shaping: client.options.shaping,
            offline_first: true,
            ..RunRequest::new(
                manifest.job,
                w.into_iter().map(WireWeight::from).collect(),
                inputs,
            )
        })
        .collect();
    let reports = client.run_job(&manifest, runs)?;
    let outputs = open_semi2k(&reports, inputs.len(), fp)?;
    assemble(&reports, outputs)
}

/// The manifest of a job of `inferences` inferences of `job` under `protocol` on `committee`.
fn job_manifest(
    client: &Client,
    committee: &Committee,
    job: &QuicJob<'_>,
    inferences: usize,
    protocol: Protocol,
) -> Result<Manifest> {
    Ok(Manifest {
        job: JobId::random(),
        protocol,
        model: job.spec.clone(),
        batch: u32::try_from(job.batch).map_err(|_| NodeError::Job("batch too large".into()))?,
        inferences: u32::try_from(inferences)
            .map_err(|_| NodeError::Job("too many inferences".into()))?,
        parties: committee.parties.clone(),
        dealer: committee_dealer(committee, protocol)?,
        client: client.public_key(),
        output_key: None,
        verifier: None,
    })
}

/// The committee's dealer as a job under `protocol` names it: required if the protocol has one, left out
/// if it has none.
fn committee_dealer(committee: &Committee, protocol: Protocol) -> Result<Option<Member>> {
    if !protocol.has_dealer() {
        return Ok(None);
    }
    committee
        .dealer
        .clone()
        .map(Some)
        .ok_or_else(|| NodeError::Job(format!("{protocol} needs a dealer in the committee")))
}

/// Splits each of `values` into the three parties' replicated shares, as each party receives them
/// ([`replicated_words`]).
fn split_replicated(values: &[Vec<u64>], rng: &mut StdRng) -> Vec<Vec<Words>> {
    let mut per_party: Vec<Vec<Words>> = (0..3).map(|_| Vec::new()).collect();
    for x in values {
        let shares = RepShare::split(x, || rand::RngCore::next_u64(rng));
        for (i, s) in shares.iter().enumerate() {
            per_party[i].push(replicated_words(s));
        }
    }
    per_party
}

/// The `rep3` outputs of `inferences` inferences, reconstructed from the three parties' components (a
/// component two parties report differently is an error) and decoded.
pub fn open_rep3(
    outputs: &[Vec<Words>],
    inferences: usize,
    fp: veil_protocols::ring::FixedPoint,
) -> Result<Vec<Vec<f32>>> {
    if outputs.len() != 3 {
        return Err(NodeError::Unexpected(format!(
            "{} parties' outputs for a rep3 job",
            outputs.len()
        )));
    }
    (0..inferences)
        .map(|i| {
            let share = |p: usize| {
                outputs[p]
                    .get(i)
                    .and_then(|w| replicated_share(w.0.clone()))
                    .ok_or_else(|| {
                        NodeError::Unexpected(
                            "a party reported missing or malformed output shares".into(),
                        )
                    })
            };
            let shares = [share(0)?, share(1)?, share(2)?];
            let words = RepShare::reconstruct(&shares).ok_or_else(|| {
                NodeError::Job("the parties' replicated output shares disagree".into())
            })?;
            Ok(fp.decode(&words))
        })
        .collect()
}

/// Each party's reported outputs.
pub fn reported_outputs(reports: &[PartyReport]) -> Vec<Vec<Words>> {
    reports.iter().map(|r| r.outputs.clone()).collect()
}

/// [`run_private`] under `rep3` or `rep3m` (`protocol`): no dealer; the client splits each input (and, for
/// shared weights, each weight, as the model owner) into replicated shares, hands party `i` components `i`
/// and `i + 1`, and reconstructs the output from the three parties' components, refusing it if a
/// component's two holders disagree (under `rep3m` the parties released their shares only after their
/// checks passed).
fn run_private_rep3(
    client: &Client,
    committee: &Committee,
    job: &QuicJob<'_>,
    inputs: &[Vec<f32>],
    protocol: Protocol,
) -> Result<QuicRun> {
    if committee.parties.len() != 3 {
        return Err(NodeError::Job(format!(
            "{protocol} runs with exactly 3 parties, not {}",
            committee.parties.len()
        )));
    }
    let fp = job.plan.fixed_point;
    let mut rng = match job.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    let encoded = job.encode(inputs)?;
    let manifest = job_manifest(client, committee, job, inputs.len(), protocol)?;
    let runs: Vec<RunRequest> = replicated_runs(manifest.job, Some(job.plan), &encoded, &mut rng)
        .into_iter()
        .map(|run| RunRequest {
            threads: job.threads as u32,
            profile: job.profile,
            shaping: client.options.shaping,
            offline_first: true,
            ..run
        })
        .collect();
    let reports = client.run_job(&manifest, runs)?;
    let outputs = open_rep3(&reported_outputs(&reports), inputs.len(), fp)?;
    assemble(&reports, outputs)
}

/// The three `rep3` parties' run requests of job `job`: replicated shares of every `encoded` input and (if
/// `plan` is given: the client deals the model's weights, as its owner) of every shared weight, or the
/// public weights in the clear. Party `i` gets components `i` and `i + 1` of each value.
pub fn replicated_runs(
    job: JobId,
    plan: Option<&Plan>,
    encoded: &[Vec<u64>],
    rng: &mut StdRng,
) -> Vec<RunRequest> {
    let input_shares = split_replicated(encoded, rng);
    let mut weights: Vec<Vec<WireWeight>> = (0..3).map(|_| Vec::new()).collect();
    for w in plan.map_or(&[][..], |p| &p.weights) {
        let mode = plan.map_or(veil_engine::WeightMode::Public, |p| p.mode);
        match mode {
            veil_engine::WeightMode::Public => {
                for party in weights.iter_mut() {
                    party.push(WireWeight {
                        matrix: Words(w.matrix.clone()),
                        bias: w.bias.clone().map(Words),
                    });
                }
            }
            veil_engine::WeightMode::Shared => {
                let matrix = split_replicated(std::slice::from_ref(&w.matrix), rng);
                let bias = w
                    .bias
                    .as_ref()
                    .map(|b| split_replicated(std::slice::from_ref(b), rng));
                for (i, party) in weights.iter_mut().enumerate() {
                    party.push(WireWeight {
                        matrix: matrix[i][0].clone(),
                        bias: bias.as_ref().map(|b| b[i][0].clone()),
                    });
                }
            }
        }
    }
    weights
        .into_iter()
        .zip(input_shares)
        .map(|(w, inputs)| RunRequest::new(job, w, inputs))
        .collect()
}

/// [`run_private`] under `protocol`. For `spdz2k` the client plays the owners as the in-memory runner does:
/// once the members accepted the manifest, the dealer sends it the plaintext masks of the weights and inputs
/// and the output's MAC key; it publishes `value - mask` to every party, and opens each output only if every
/// element's MAC is right (a wrong share is a verification failure, and no output is returned).
pub fn run_private_protocol(
    client: &Client,
    committee: &Committee,
    job: &QuicJob<'_>,
    inputs: &[Vec<f32>],
    protocol: Protocol,
) -> Result<QuicRun> {
    match protocol {
        Protocol::Semi2k => return run_private(client, committee, job, inputs),
        Protocol::Rep3 | Protocol::Rep3m => {
            return run_private_rep3(client, committee, job, inputs, protocol)
        }
        Protocol::Spdz2k => {}
    }
    let n = committee.parties.len();
    let fp = job.plan.fixed_point;
    let encoded = job.encode(inputs)?;
    let manifest = job_manifest(client, committee, job, inputs.len(), Protocol::Spdz2k)?;
    let (reports, _owner) = client.run_job_with(&manifest, |owner| {
        let owner =
            owner.ok_or_else(|| NodeError::Job("the dealer sent no owner material".into()))?;
        let run = RunRequest {
            threads: job.threads as u32,
            profile: job.profile,
            shaping: client.options.shaping,
            offline_first: true,
            ..RunRequest::published(manifest.job, job.plan, &encoded, owner)?
        };
        Ok(vec![run; n])
    })?;
    let outputs = open_spdz2k(&reports, inputs.len(), fp)?;
    assemble(&reports, outputs)
}

/// The in-memory report shape from the parties' reports and the opened, decoded `outputs`.
fn assemble(reports: &[PartyReport], outputs: Vec<Vec<f32>>) -> Result<QuicRun> {
    let k = outputs.len();
    let complete = |r: &PartyReport| {
        r.latencies.len() == k && r.online.len() == k && r.udp_tx_bytes.len() == k
    };
    if reports.iter().any(|r| !complete(r)) {
        return Err(NodeError::Unexpected(format!(
            "a party reported other than {k} inferences"
        )));
    }
    let dealer_bytes = reports.first().map_or(0, |r| r.dealer_bytes);
    // The last party's figure covers the whole dealing (its corrections are dealt while streamed to it).
    let dealer_seconds = reports.iter().map(|r| r.dealer_seconds).fold(0.0, f64::max);
    let report = LocalRunReport {
        outputs,
        latencies: (0..k)
            .map(|i| {
                reports
                    .iter()
                    .map(|r| seconds(r.latencies[i]))
                    .max()
                    .unwrap_or_default()
            })
            .collect(),
        // Per inference, the slowest party's offline phase (as in memory).
        preparation: (0..k)
            .map(|i| {
                reports
                    .iter()
                    .filter_map(|r| r.preparation.get(i))
                    .map(|s| seconds(*s))
                    .max()
                    .unwrap_or_default()
            })
            .collect(),
        online: (0..k)
            .map(|i| {
                reports
                    .iter()
                    .map(|r| NetStats::from(&r.online[i]))
                    .collect()
            })
            .collect(),
        setup: reports.iter().map(|r| NetStats::from(&r.setup)).collect(),
        profiles: reports
            .iter()
            .map(|r| {
                r.profile
                    .iter()
                    .map(|s| StepProfile {
                        label: s.label.clone(),
                        elapsed: seconds(s.seconds),
                        net: NetStats::from(&s.net),
                        material: s.material,
                    })
                    .collect()
            })
            .collect(),
        dealer_bytes,
        dealer_elapsed: seconds(dealer_seconds),
        views: reports.iter().map(|_| Vec::new()).collect(),
    };
    Ok(QuicRun {
        report,
        udp_tx_bytes: (0..k)
            .map(|i| reports.iter().map(|r| r.udp_tx_bytes[i]).collect())
            .collect(),
        transcripts: reports.iter().map(|r| r.transcripts.clone()).collect(),
    })
}

/// A private embedding job over QUIC: a pretrained encoder (public weights) that every party loads itself
/// and checks against the model id the manifest pins.
pub struct EmbedJob<'a> {
    /// The encoder (the client uses its public tables to look the tokens up).
    pub model: &'a PrivateBert,
    /// The pretrained model's name (`veil_engine::bert::pretrained::NAMES`).
    pub name: String,
    /// Its model id (`veil_engine::bert::pretrained::model_id`).
    pub id: String,
    /// Ring-kernel threads per party.
    pub threads: usize,
    /// Seed of the client's shares (reproducible runs); fresh randomness if `None`.
    pub seed: Option<u64>,
    /// Ask parties for a per-step profile of the last inference.
    pub profile: bool,
}

impl EmbedJob<'_> {
    /// The public model description for the manifest: the pretrained model's name as workload, its id as the
    /// deployed model id (what sealed shares and receipts bind to); no architecture (parties load the files).
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            workload: self.name.clone(),
            seed: 0,
            weights: veil_engine::WeightMode::Public,
            frac_bits: self.model.config().fixed_point.frac_bits(),
            deployed: Some(crate::manifest::DeployedModel {
                id: self.id.clone(),
                architecture: String::new(),
                handoff: None,
                senders: 0,
                file_bytes: 0,
            }),
        }
    }
}

/// Embeds every token sequence of `sequences` (all of one length: the job's `batch` is its token count)
/// privately on `committee` under `protocol`, one inference per sequence in one job; returns the
/// L2-normalised embeddings and measurements in the in-memory report's shape (as
/// `veil_engine::bert::run::embed_private`). Under `spdz2k` the client publishes `x - r` against the
/// dealer's masks and opens each embedding only if its MACs are right.
pub fn embed_private(
    client: &Client,
    committee: &Committee,
    job: &EmbedJob<'_>,
    sequences: &[Vec<u32>],
    protocol: Protocol,
) -> Result<QuicRun> {
    let n = committee.parties.len();
    let fp = job.model.config().fixed_point;
    let len = sequences.first().map_or(0, Vec::len);
    if len == 0 || sequences.iter().any(|s| s.len() != len) {
        return Err(NodeError::Job(
            "an embedding job takes one or more sequences of one length".into(),
        ));
    }
    let encoded: Vec<Vec<u64>> = sequences
        .iter()
        .map(|ids| job.model.client_input(ids))
        .collect::<std::result::Result<_, _>>()?;
    let manifest = Manifest {
        job: JobId::random(),
        protocol,
        model: job.spec(),
        batch: u32::try_from(len).map_err(|_| NodeError::Job("sequence too long".into()))?,
        inferences: u32::try_from(sequences.len())
            .map_err(|_| NodeError::Job("too many sequences".into()))?,
        parties: committee.parties.clone(),
        dealer: committee_dealer(committee, protocol)?,
        client: client.public_key(),
        output_key: None,
        verifier: None,
    };
    let with_options = |run: RunRequest| RunRequest {
        threads: job.threads as u32,
        profile: job.profile,
        shaping: client.options.shaping,
        offline_first: true,
        ..run
    };
    let (reports, outputs) = match protocol {
        Protocol::Rep3 | Protocol::Rep3m => {
            let mut rng = match job.seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_os_rng(),
            };
            let runs = split_replicated(&encoded, &mut rng)
                .into_iter()
                .map(|inputs| with_options(RunRequest::new(manifest.job, Vec::new(), inputs)))
                .collect();
            let reports = client.run_job(&manifest, runs)?;
            let outputs = open_rep3(&reported_outputs(&reports), sequences.len(), fp)?;
            (reports, outputs)
        }
        Protocol::Semi2k => {
            let mut rng = match job.seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_os_rng(),
            };
            let mut shares: Vec<Vec<Words>> = (0..n).map(|_| Vec::new()).collect();
            for x in &encoded {
                for (i, s) in share(x, n, &mut rng)?.into_iter().enumerate() {
                    shares[i].push(Words(s));
                }
            }
            let runs = shares
                .into_iter()
                .map(|inputs| with_options(RunRequest::new(manifest.job, Vec::new(), inputs)))
                .collect();
            let reports = client.run_job(&manifest, runs)?;
            let outputs = open_semi2k(&reports, sequences.len(), fp)?;
            (reports, outputs)
        }
        Protocol::Spdz2k => {
            let (reports, _owner) = client.run_job_with(&manifest, |owner| {
                let owner = owner
                    .ok_or_else(|| NodeError::Job("the dealer sent no owner material".into()))?;
                if owner.masks.len() != encoded.len()
                    || owner
                        .masks
                        .iter()
                        .zip(&encoded)
                        .any(|(m, x)| m.0.len() != x.len())
                {
                    return Err(NodeError::Job(
                        "the dealer's input masks do not match the sequences".into(),
                    ));
                }
                let published = encoded
                    .iter()
                    .zip(&owner.masks)
                    .map(|(x, r)| Words(veil_protocols::ring::sub(x, &r.0)))
                    .collect();
                let run = with_options(RunRequest::new(manifest.job, Vec::new(), published));
                Ok(vec![run; n])
            })?;
            let outputs = open_spdz2k(&reports, sequences.len(), fp)?;
            (reports, outputs)
        }
    };
    assemble(&reports, outputs)
}

/// The `semi2k` outputs of `inferences` inferences, reconstructed and decoded.
fn open_semi2k(
    reports: &[PartyReport],
    inferences: usize,
    fp: veil_protocols::ring::FixedPoint,
) -> Result<Vec<Vec<f32>>> {
    (0..inferences)
        .map(|i| {
            let shares = reports
                .iter()
                .map(|r| r.outputs.get(i).map(|w| w.0.clone()))
                .collect::<Option<Vec<Vec<u64>>>>()
                .ok_or_else(|| NodeError::Unexpected("a party reported too few outputs".into()))?;
            Ok(fp.decode(&reconstruct(&shares)?))
        })
        .collect()
}

/// The `spdz2k` outputs of `inferences` inferences, opened under the MAC key the parties released after
/// their checks (every element's MAC checked) and decoded.
fn open_spdz2k(
    reports: &[PartyReport],
    inferences: usize,
    fp: veil_protocols::ring::FixedPoint,
) -> Result<Vec<Vec<f32>>> {
    let key = crate::wire::output_key(reports)
        .ok_or_else(|| NodeError::Job("a party released no MAC key share".into()))?;
    (0..inferences)
        .map(|i| {
            let shares = reports
                .iter()
                .map(|r| r.auth_outputs.get(i).and_then(AuthWords::to_auth))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    NodeError::Unexpected(
                        "a party reported missing or malformed output shares".into(),
                    )
                })?;
            let opened = veil_protocols::spdz2k::local::open_output(&shares, key)?;
            Ok(fp.decode(&opened))
        })
        .collect()
}
