//! The node daemon: binds the QUIC endpoint, accepts streams, and runs the party and dealer roles.
//!
//! Streams a node serves (see [`crate::wire`] for the conversations):
//! - bidirectional, from a trusted client: `Submit` (then `Run` for a party); from a party: `DealRequest`;
//!   from anyone admitted: `Ping`;
//! - unidirectional, from a party of a live job: `Hello` then data, routed to the job.
//!
//! Invariants:
//! - a bad frame (malformed, truncated, oversized, wrong version) closes only the stream it came on, with a
//!   logged error; the node goes on serving its other streams and jobs;
//! - every wait on a peer is bounded (connect timeout for first frames, receive timeout for jobs), and every
//!   job's state is dropped with the handler that owns it ([`crate::jobs::JobGuard`]).

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::frame::{self, RecvError};
use crate::identity::{Identity, PublicKey};
use crate::jobs::{JobSlot, Jobs};
use crate::manifest::{Role, SignedManifest};
use crate::party::{self, PartyContext};
use crate::peers::{Announced, Peers};
use crate::quic_net::BAD_FRAME;
use crate::tls::AllowList;
use crate::wire::{JobId, Msg};

/// The line a node prints on stdout once it listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// Always `"ready"`.
    pub event: String,
    /// The bound address.
    pub address: SocketAddr,
    /// The node's public identity.
    pub public_key: PublicKey,
    /// The node's operator.
    pub operator: String,
}

/// What the stream handlers share.
struct Shared {
    config: NodeConfig,
    peers: Arc<Peers>,
    jobs: Arc<Jobs>,
    /// Coordinator generation jobs' parties waiting for their client ([`crate::generation::Seats`]).
    seats: crate::generation::Seats,
}

/// A running node.
pub struct Node {
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
    ready: ReadyLine,
}

impl Node {
    /// Starts a node with `identity`: binds the endpoint and serves in the background.
    pub fn start(config: NodeConfig, identity: &Identity) -> Result<Node> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads)
            .thread_name("veil-node-io")
            .enable_all()
            .build()
            .map_err(|e| NodeError::System("starting the runtime", e))?;
        let allowed = Arc::new(AllowList::new(config.trusted_submitters.iter().copied()));
        let (peers, announced) = {
            let _guard = runtime.enter();
            Peers::bind(&config, identity, allowed.clone())?
        };
        #[cfg(feature = "insecure-test-hooks")]
        {
            if config.insecure_dealer_seed.is_some() {
                tracing::warn!(
                    "insecure_dealer_seed is set: this node deals predictable material (tests only)"
                );
            }
            if let Some(a) = config.insecure_adversary {
                tracing::warn!(
                    deviation = a.kind.name(),
                    party = a.party,
                    "insecure_adversary is set: this node deviates when it is that party (tests only)"
                );
            }
        }
        let jobs = Jobs::new(allowed, config.test_dealer_seed());
        let ready = ReadyLine {
            event: "ready".into(),
            address: peers.local_addr()?,
            public_key: identity.public_key(),
            operator: config.operator.clone(),
        };
        let shared = Arc::new(Shared {
            config,
            peers: peers.clone(),
            jobs,
            seats: crate::generation::Seats::default(),
        });
        runtime.spawn(peers.accept_loop());
        runtime.spawn(serve_connections(shared.clone(), announced));
        tracing::info!(address = %ready.address, key = %ready.public_key, "node listening");
        Ok(Node {
            runtime: Some(runtime),
            shared,
            ready,
        })
    }

    /// The node's data directory (its identity, sealing key and cached model files).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.shared.config.data_dir
    }

    /// The address and identity to announce.
    pub fn ready_line(&self) -> &ReadyLine {
        &self.ready
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.ready.address
    }

    /// The node's public identity.
    pub fn public_key(&self) -> PublicKey {
        self.ready.public_key
    }

    /// Jobs currently live on this node.
    pub fn active_jobs(&self) -> usize {
        self.shared.jobs.count()
    }

    /// Handshakes refused because of the peer's key.
    pub fn rejected_handshakes(&self) -> u64 {
        self.shared.peers.allowed().rejected()
    }

    /// Serves until the process ends.
    pub fn run_forever(&self) {
        if let Some(rt) = &self.runtime {
            rt.block_on(std::future::pending::<()>());
        }
    }
}

impl Node {
    /// Stops the node abruptly, as a crash would: no connection is closed, so peers notice only the
    /// silence (tests of failure handling use it).
    pub fn crash(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            self.shared.peers.close();
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

/// Serves the streams of every connection the endpoint announces.
async fn serve_connections(shared: Arc<Shared>, mut announced: mpsc::UnboundedReceiver<Announced>) {
    while let Some((key, conn)) = announced.recv().await {
        tokio::spawn(accept_uni(shared.clone(), key, conn.clone()));
        tokio::spawn(accept_bi(shared.clone(), key, conn));
    }
}

async fn accept_uni(shared: Arc<Shared>, key: PublicKey, conn: Connection) {
    while let Ok(recv) = conn.accept_uni().await {
        tokio::spawn(route_data_stream(shared.clone(), key, recv));
    }
}

async fn accept_bi(shared: Arc<Shared>, key: PublicKey, conn: Connection) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut stream = Stream { send, recv };
            if let Err(e) = serve_bi(&shared, key, &mut stream).await {
                stream.fail(key, &e);
            }
        });
    }
}

/// A bidirectional stream being served.
struct Stream {
    send: SendStream,
    recv: RecvStream,
}

impl Stream {
    async fn read(&mut self, shared: &Shared, wait: std::time::Duration) -> Result<Msg> {
        match tokio::time::timeout(
            wait,
            frame::read(&mut self.recv, shared.config.max_frame_bytes),
        )
        .await
        {
            Err(_) => Err(NodeError::Timeout(wait, "waiting for a frame")),
            Ok(Ok(m)) => Ok(m),
            Ok(Err(RecvError::Frame(e))) => Err(NodeError::Frame(e)),
            Ok(Err(e)) => Err(NodeError::Quic(e.to_string())),
        }
    }

    async fn write(&mut self, msg: &Msg) -> Result<()> {
        frame::write(&mut self.send, msg)
            .await
            .map_err(|e| NodeError::Quic(e.to_string()))
    }

    /// Ends the stream after an error: a bad frame closes it (logged as an error), other failures are
    /// reported to the peer if the stream still works.
    fn fail(&mut self, peer: PublicKey, e: &NodeError) {
        match e {
            NodeError::Frame(_) => {
                tracing::error!(peer = %peer.short(), "bad frame, stream closed: {e}");
            }
            _ => tracing::warn!(peer = %peer.short(), "stream failed: {e}"),
        }
        let _ = self.recv.stop(VarInt::from_u32(BAD_FRAME));
        let _ = self.send.reset(VarInt::from_u32(BAD_FRAME));
    }
}

async fn serve_bi(shared: &Arc<Shared>, peer: PublicKey, stream: &mut Stream) -> Result<()> {
    let first = stream.read(shared, shared.config.connect_timeout()).await?;
    match first {
        Msg::Ping => {
            stream
                .write(&Msg::Pong {
                    active_jobs: u32::try_from(shared.jobs.count()).unwrap_or(u32::MAX),
                })
                .await?;
            let _ = stream.send.finish();
            Ok(())
        }
        Msg::Submit(signed) => serve_submit(shared, peer, stream, signed).await,
        Msg::DealRequest { job, party } => {
            serve_deal(shared, peer, stream, job, party as usize).await
        }
        Msg::Attach { job } => {
            crate::generation::serve_attach(
                &shared.seats,
                peer,
                job,
                &mut stream.send,
                &mut stream.recv,
                shared.config.connect_timeout(),
            )
            .await
        }
        other => Err(NodeError::Unexpected(format!(
            "{} cannot open a stream",
            other.name()
        ))),
    }
}

/// A party's data stream: its `Hello` names the job and the sender, checked against the connection's key.
async fn route_data_stream(shared: Arc<Shared>, peer: PublicKey, mut recv: RecvStream) {
    let wait = shared.config.connect_timeout();
    let hello =
        tokio::time::timeout(wait, frame::read(&mut recv, shared.config.max_frame_bytes)).await;
    let refuse = |recv: &mut RecvStream, why: String| {
        tracing::error!(peer = %peer.short(), "data stream refused: {why}");
        let _ = recv.stop(VarInt::from_u32(BAD_FRAME));
    };
    let (job, from) = match hello {
        Ok(Ok(Msg::Hello { job, from })) => (job, from as usize),
        Ok(Ok(other)) => return refuse(&mut recv, format!("began with {}", other.name())),
        Ok(Err(e)) => return refuse(&mut recv, format!("bad first frame: {e}")),
        Err(_) => return refuse(&mut recv, "no Hello in time".into()),
    };
    let Some(slot) = shared.jobs.get(&job) else {
        return refuse(&mut recv, format!("unknown job {job}"));
    };
    let m = slot.manifest.manifest();
    let sender_ok = m
        .parties
        .get(from)
        .is_some_and(|member| member.public_key == peer);
    if !matches!(slot.manifest.role(), Role::Party(i) if i != from) || !sender_ok {
        return refuse(
            &mut recv,
            format!("party {from} of job {job} is not this peer"),
        );
    }
    if slot.arrivals.send((from, recv)).is_err() {
        tracing::warn!(%job, from, "data stream for a job that has ended");
    }
}

async fn serve_submit(
    shared: &Arc<Shared>,
    peer: PublicKey,
    stream: &mut Stream,
    signed: SignedManifest,
) -> Result<()> {
    let me = shared.peers.public_key();
    let checked = match signed.open(&me, shared.peers.allowed()) {
        Ok(c) if c.manifest().client == peer => c,
        Ok(_) => {
            let e = NodeError::Manifest("submitted by a key other than its signer".into());
            stream.write(&Msg::Failed(e.to_string())).await?;
            return Err(e);
        }
        Err(e) => {
            stream.write(&Msg::Failed(e.to_string())).await?;
            return Err(e);
        }
    };
    let role = checked.role();
    let job = checked.manifest().job;
    let registered = shared.jobs.register(checked);
    let (guard, slot, arrivals) = match registered {
        Ok(r) => r,
        Err(e) => {
            stream.write(&Msg::Failed(e.to_string())).await?;
            return Err(e);
        }
    };
    tracing::info!(%job, ?role, "job accepted");
    stream.write(&Msg::Accepted).await?;
    let outcome = match role {
        Role::Party(index) => run_party(shared, stream, &slot, index, arrivals).await,
        Role::Dealer => match serve_owner(stream, &slot).await {
            Ok(()) => {
                // Serve until every party has its material, the client ends the job, or the timeout.
                let wait = shared.config.submit_timeout();
                tokio::select! {
                    _ = slot.dealer.all_served.notified() => {}
                    _ = stream.read(shared, wait) => {}
                }
                let _ = stream.send.finish();
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    drop(guard);
    outcome
}

/// `spdz2k`: sends the client (the submitter, already checked to be the manifest's client) its masks and the
/// output key on its `Submit` stream; nothing for `semi2k`.
async fn serve_owner(stream: &mut Stream, slot: &JobSlot) -> Result<()> {
    let manifest = slot.manifest.manifest();
    if manifest.protocol != crate::manifest::Protocol::Spdz2k {
        return Ok(());
    }
    match slot.dealer.owner(manifest).await {
        Ok(owner) => stream.write(&Msg::Owner(owner)).await,
        Err(e) => {
            stream.write(&Msg::Failed(e.to_string())).await?;
            Err(e)
        }
    }
}

async fn run_party(
    shared: &Arc<Shared>,
    stream: &mut Stream,
    slot: &Arc<JobSlot>,
    index: usize,
    arrivals: mpsc::UnboundedReceiver<crate::jobs::Arrival>,
) -> Result<()> {
    let job = slot.manifest.manifest().job;
    let run = match stream.read(shared, shared.config.submit_timeout()).await? {
        Msg::Run(r) => r,
        other => {
            return Err(NodeError::Unexpected(format!(
                "expected Run, got {}",
                other.name()
            )))
        }
    };
    let ctx = PartyContext::new(
        tokio::runtime::Handle::current(),
        shared.peers.clone(),
        &shared.config,
    );
    let manifest = slot.manifest.manifest().clone();
    if crate::generation::is_generation(&manifest.model.workload) {
        return crate::generation::serve(
            ctx,
            manifest,
            index,
            arrivals,
            run,
            crate::generation::PromptLogits::All,
            &mut stream.send,
            &mut stream.recv,
        )
        .await
        .map(|_| ());
    }
    let (tx, rx) = oneshot::channel();
    let started = std::thread::Builder::new()
        .name(format!("veil-party-{index}"))
        .spawn(move || {
            let result = party::run(&ctx, &manifest, index, arrivals, run);
            let _ = tx.send(result);
        });
    if let Err(e) = started {
        return Err(NodeError::System("starting the party thread", e));
    }
    let result = rx
        .await
        .unwrap_or_else(|_| Err(NodeError::Job("the party thread panicked".into())));
    match result {
        Ok(report) => {
            tracing::info!(%job, party = index, "job done");
            stream.write(&Msg::Outputs(report)).await?;
            let _ = stream.send.finish();
            Ok(())
        }
        Err(e) => {
            tracing::error!(%job, party = index, "job failed: {e}");
            stream
                .write(&Msg::Failed(format!("party {index}: {e}")))
                .await?;
            let _ = stream.send.finish();
            Ok(())
        }
    }
}

async fn serve_deal(
    shared: &Arc<Shared>,
    peer: PublicKey,
    stream: &mut Stream,
    job: JobId,
    party: usize,
) -> Result<()> {
    let Some(slot) = shared.jobs.get(&job) else {
        stream
            .write(&Msg::Failed(format!("unknown job {job}")))
            .await?;
        return Err(NodeError::Unexpected(format!(
            "deal request for unknown job {job}"
        )));
    };
    let m = slot.manifest.manifest();
    let is_party = m.parties.get(party).is_some_and(|p| p.public_key == peer);
    if slot.manifest.role() != Role::Dealer || !is_party {
        stream
            .write(&Msg::Failed("not the dealer of this party".into()))
            .await?;
        return Err(NodeError::Unexpected(format!(
            "deal request for party {party} of job {job} from another key"
        )));
    }
    // The party's seeds, then (last party) its corrections, dealt while they are written.
    match slot.dealer.serve(m, party, &mut stream.send).await {
        Ok(()) => {
            let _ = stream.send.finish();
            tracing::debug!(%job, party, "material served");
            Ok(())
        }
        Err(e) => {
            stream.write(&Msg::Failed(e.to_string())).await?;
            Err(e)
        }
    }
}

/// A job handed to this node in-process (by a coordinator agent) instead of by a client's `Submit` stream:
/// its manifest passed every check of [`SignedManifest::open`] and the job is registered, so the other
/// members' keys are admitted. Dropping it ends the job on this node (its state and admissions go).
pub struct AssignedJob {
    _guard: crate::jobs::JobGuard,
    slot: Arc<JobSlot>,
    arrivals: mpsc::UnboundedReceiver<crate::jobs::Arrival>,
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
}

impl Node {
    /// Checks and registers a job handed over in-process (the coordinator's signed manifest); the caller
    /// then runs it with [`AssignedJob::run_party`] or [`AssignedJob::serve_dealer`]. The signer must be a
    /// trusted submitter of this node, exactly as for a submitted job.
    pub fn accept_assigned(&self, signed: &SignedManifest) -> Result<AssignedJob> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| NodeError::Job("the node has stopped".into()))?;
        let me = self.shared.peers.public_key();
        let checked = signed.open(&me, self.shared.peers.allowed())?;
        let (guard, slot, arrivals) = self.shared.jobs.register(checked)?;
        tracing::info!(job = %slot.manifest.manifest().job, role = ?slot.manifest.role(), "assigned job accepted");
        Ok(AssignedJob {
            _guard: guard,
            slot,
            arrivals,
            shared: self.shared.clone(),
            handle: runtime.handle().clone(),
        })
    }
}

impl AssignedJob {
    /// This node's role in the job.
    pub fn role(&self) -> Role {
        self.slot.manifest.role()
    }

    /// The checked manifest of the job.
    pub fn manifest(&self) -> &crate::manifest::Manifest {
        self.slot.manifest.manifest()
    }

    /// `spdz2k`, dealer: the owner material for the job's client (its masks and output key), dealing first
    /// if nobody asked yet. Blocks; call off the runtime. The caller hands it only to the manifest's
    /// client (sealed to the manifest's output key).
    pub fn owner_material(&self) -> Result<crate::wire::OwnerMaterial> {
        if self.role() != Role::Dealer {
            return Err(NodeError::Job("only the dealer has owner material".into()));
        }
        let manifest = self.slot.manifest.manifest().clone();
        self.handle.block_on(self.slot.dealer.owner(&manifest))
    }

    /// The job's id (the manifest's).
    pub fn job(&self) -> JobId {
        self.slot.manifest.manifest().job
    }

    /// Runs this node's party with `run` (its input and weight shares) and returns its report. Blocks the
    /// calling thread, which must not be a runtime thread. Fails if this node is the job's dealer.
    pub fn run_party(self, run: crate::wire::RunRequest) -> Result<crate::wire::PartyReport> {
        let Role::Party(index) = self.role() else {
            return Err(NodeError::Job("this node deals this job".into()));
        };
        let ctx = PartyContext::new(
            self.handle.clone(),
            self.shared.peers.clone(),
            &self.shared.config,
        );
        let manifest = self.slot.manifest.manifest().clone();
        let job = manifest.job;
        tracing::info!(%job, party = index, "assigned job running");
        let result = party::run(&ctx, &manifest, index, self.arrivals, run);
        match &result {
            Ok(_) => tracing::info!(%job, party = index, "job done"),
            Err(e) => tracing::error!(%job, party = index, "job failed: {e}"),
        }
        result
    }

    /// Runs this node's party of a coordinator generation job (see [`crate::generation`]): admits `driver`
    /// (the client its sealed ticket names) for the job's lifetime, waits up to `attach_wait` for it to
    /// attach, then serves the turn on its stream. Returns a report without outputs (the client got every
    /// step's shares on its stream); a failed turn is an error, [`NodeError::Client`] where the client
    /// caused it (it never attached, went silent, broke the exchange). Blocks the
    /// calling thread, which must not be a runtime thread.
    pub fn run_generation(
        self,
        driver: PublicKey,
        attach_wait: std::time::Duration,
    ) -> Result<crate::wire::PartyReport> {
        use crate::generation::{Seat, TurnEnd, MAX_JOB_DURATION};
        let Role::Party(index) = self.role() else {
            return Err(NodeError::Job("this node deals this job".into()));
        };
        let AssignedJob {
            _guard,
            slot,
            arrivals,
            shared,
            handle,
        } = self;
        let manifest = slot.manifest.manifest().clone();
        let job = manifest.job;
        let ctx = PartyContext::new(handle.clone(), shared.peers.clone(), &shared.config);
        let (done, mut outcome) = oneshot::channel();
        shared.seats.offer(
            job,
            Seat {
                driver,
                ctx,
                manifest,
                index,
                arrivals,
                done,
            },
        )?;
        // Admitted once the seat is there, so the client's first stream finds it.
        let _admitted = Admission::new(shared.peers.allowed().clone(), driver);
        tracing::info!(%job, party = index, "generation party waiting for its client");
        let end = handle.block_on(async {
            if let Ok(end) = tokio::time::timeout(attach_wait, &mut outcome).await {
                return end;
            }
            if shared.seats.withdraw(&job) {
                return Ok(Err(NodeError::Client(format!(
                    "it did not attach within {attach_wait:?}"
                ))));
            }
            // Attached meanwhile: the turn is bounded by the job's duration.
            let limit = MAX_JOB_DURATION + std::time::Duration::from_secs(60);
            match tokio::time::timeout(limit, outcome).await {
                Ok(end) => end,
                Err(_) => Ok(Err(NodeError::Timeout(limit, "the generation job"))),
            }
        });
        match end {
            Ok(Ok(TurnEnd::Done)) => Ok(crate::generation::summary_report()),
            Ok(Ok(TurnEnd::Failed {
                reason,
                client_fault,
            })) => Err(match client_fault {
                true => NodeError::Client(reason),
                false => NodeError::Job(reason),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NodeError::Job("the client's stream task ended".into())),
        }
    }

    /// Serves the dealer's part until every party has its material or `wait` passes; returns whether every
    /// party was served. Blocks the calling thread, which must not be a runtime thread.
    pub fn serve_dealer(self, wait: std::time::Duration) -> bool {
        if self.role() != Role::Dealer {
            return false;
        }
        let slot = self.slot.clone();
        self.handle.block_on(async move {
            tokio::time::timeout(wait, slot.dealer.all_served.notified())
                .await
                .is_ok()
        })
    }
}

impl Node {
    /// Measures the round-trip time of a `Ping` to `member` over this node's pooled connection (dialled if
    /// needed). The member must admit this node's key: it does while they share a live job.
    pub fn ping_member(
        &self,
        member: &crate::manifest::Member,
        wait: std::time::Duration,
    ) -> Result<std::time::Duration> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| NodeError::Job("the node has stopped".into()))?;
        let peers = self.shared.peers.clone();
        let max_frame = self.shared.config.max_frame_bytes;
        let member = member.clone();
        runtime.handle().block_on(async move {
            let exchange = async {
                let conn = peers
                    .connect(member.public_key, member.address, true)
                    .await?;
                let started = std::time::Instant::now();
                let (mut send, mut recv) = conn.open_bi().await.map_err(NodeError::quic)?;
                frame::write(&mut send, &Msg::Ping)
                    .await
                    .map_err(|e| NodeError::Quic(e.to_string()))?;
                let _ = send.finish();
                match frame::read(&mut recv, max_frame).await {
                    Ok(Msg::Pong { .. }) => Ok(started.elapsed()),
                    Ok(other) => Err(NodeError::Unexpected(format!("answered {}", other.name()))),
                    Err(e) => Err(NodeError::Quic(e.to_string())),
                }
            };
            tokio::time::timeout(wait, exchange)
                .await
                .map_err(|_| NodeError::Timeout(wait, "waiting for a Pong"))?
        })
    }
}

impl AssignedJob {
    /// The job's other computing members (parties and dealer), as the manifest lists them.
    pub fn peers(&self) -> Vec<crate::manifest::Member> {
        let m = self.slot.manifest.manifest();
        let me = self.shared.peers.public_key();
        m.parties
            .iter()
            .chain(m.dealer.as_ref())
            .filter(|p| p.public_key != me)
            .cloned()
            .collect()
    }
}

/// Admits one key to a node's allow-list until dropped.
struct Admission {
    allowed: Arc<AllowList>,
    key: PublicKey,
}

impl Admission {
    fn new(allowed: Arc<AllowList>, key: PublicKey) -> Self {
        allowed.admit(&[key]);
        Self { allowed, key }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.allowed.release(&[self.key]);
    }
}
