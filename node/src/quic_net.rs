//! [`QuicNet`]: the protocols' [`Net`] over QUIC.
//!
//! Each party of a job opens a QUIC endpoint of its own (`Peers::job_endpoint`: the node's identity and
//! allow-list on a fresh port) inside a current-thread tokio runtime that the job owns and that only the
//! party's thread enters. Setup:
//! 1. party `i` announces its endpoint to every peer `j` on the pair's shared node connection: a
//!    unidirectional stream with `Hello { job, from: i }` then `JobEndpoint(address)`; `j`'s node routes it
//!    to the job by its `Hello`, after checking that the connection's proven key is party `i`'s key in the
//!    manifest;
//! 2. party `i` dials every peer `j > i` at its announced endpoint (pinned to `j`'s key) and opens one
//!    bidirectional stream, whose first frame is `Hello { job, from: i }`; it accepts a connection from every
//!    `j < i` whose proven key is `j`'s and whose stream's `Hello` names this job and `j`.
//!
//! Every later frame is one protocol message (`Data`). Because the job's sockets and connections are driven
//! by its runtime, a round's messages leave from the sender's own thread, and the receiving party's thread,
//! blocked in `recv`, is woken by its socket: one thread wake-up per message, as between threads in memory,
//! instead of hand-offs through the nodes' runtime workers.
//!
//! Invariants:
//! - `send` moves the payload into the peer's stream (no copy: the frame is `frame::data_prefix` then the
//!   payload) and returns; a message of [`FLUSH_AT`] bytes or more starts to leave at once, smaller ones
//!   when the connections' drivers next run, at the party's next `recv` or `flush`, in one turn of the
//!   job's runtime (a round's small writes leave together: one scheduler pass instead of one per message). `PartySession` flushes at the end of every inference,
//!   so no message waits here while the party waits for something else. `send` does not
//!   wait for the peer to read: the transport's flow-control
//!   windows (see `peers::transport_config`) are at least the maximum frame size, and in every protocol round
//!   a party reads what it was sent before the next round, so a write never waits for a window update and two
//!   parties sending to each other cannot deadlock. Messages to a peer keep their order (one stream).
//! - `recv` reads a `Data` payload with one copy out of the stream (`frame::read_data`); it blocks the
//!   calling (non-runtime) thread for at most the configured timeout, then fails with
//!   [`NetError::Timeout`]; it fails at once if the node's runtime stopped; a stream that ends or breaks
//!   is [`NetError::Disconnected`], a malformed or oversized frame is [`NetError::Transport`] (logged, the
//!   stream stopped).
//! - the start line (`Net::start_line`, before each inference's online phase) is an empty `Data` frame to
//!   and from every peer; it passes beneath `CountedNet`, so it is neither counted nor timed;
//! - only protocol payloads pass through `send`/`recv`, so `CountedNet` counts exactly what it counts over
//!   the in-memory mesh; framing and QUIC overhead show in [`QuicNet::udp_tx_bytes`] instead.
//! - while the party computes, its connections are not driven: what it sent has left already, what arrives
//!   waits in the socket's buffer (enlarged for this, see `peers`), and timers (acknowledgements, loss
//!   detection) run at its next `send`/`recv`.
//! - dropping a `QuicNet` finishes its streams and waits (at most [`LINGER`]) until each peer has read or
//!   stopped its stream, so nothing sent is lost when the party's thread stops driving the connection.

use std::net::SocketAddr;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, oneshot};
use veil_protocols::net::{Net, NetError};

use crate::error::{NodeError, Result};
use crate::frame::{self, RecvError, HEADER_LEN};
use crate::jobs::Arrival;
use crate::manifest::Manifest;
use crate::peers::Peers;
use crate::wire::{JobId, Msg};

/// Application error code with which a node stops a stream that sent a bad frame.
pub const BAD_FRAME: u32 = 1;

/// A message of at least this many bytes is handed to the connection's driver at once (its first
/// datagrams leave while the party prepares the next message); smaller ones wait for the round's other
/// writes and leave together at the next `recv` or `flush`. Measured: deferring every message made minilm
/// (messages of up to megabytes) no faster, deferring small ones made network-a about 5% faster.
pub const FLUSH_AT: usize = 64 << 10;

/// The longest a finished job waits for its peers to read or stop its streams.
pub const LINGER: Duration = Duration::from_secs(5);

/// The bounds of a party's links.
#[derive(Debug, Clone, Copy)]
pub struct LinkLimits {
    /// The setup fails if a peer has not joined (announced and connected) within this.
    pub join_timeout: Duration,
    /// Longest wait for one message.
    pub timeout: Duration,
    /// Largest frame accepted or sent.
    pub max_frame: usize,
}

/// One party's links to the rest of its committee for one job.
pub struct QuicNet {
    job: JobId,
    party: usize,
    parties: usize,
    /// Invariant: entered only from the party's thread (`send`, `recv`, drop); drives the job's connections.
    runtime: Runtime,
    /// The job's endpoint (its socket), driven by `runtime`.
    endpoint: Endpoint,
    /// Invariant: `out[j]` and `inbound[j]` are set for every peer `j` once `open` returned.
    out: Vec<Option<SendStream>>,
    inbound: Vec<Option<RecvStream>>,
    connections: Vec<Connection>,
    /// Fails once the node's runtime is gone (its sender lives in a task on that runtime): a party whose
    /// node stopped stops too, instead of computing on with its own runtime.
    node_alive: oneshot::Receiver<()>,
    timeout: Duration,
    max_frame: usize,
    /// Set by `send`, cleared when the connections were last driven: messages written to their streams that
    /// the connections' drivers have not had a turn to transmit yet.
    unflushed: bool,
}

impl QuicNet {
    /// Connects party `party` of `manifest` to its peers (see the module doc). `node` is the node's runtime
    /// (it drives the shared connections the endpoints are announced on); incoming announcements arrive on
    /// `arrivals` (routed by the node); `limits` bound the waits and frames. Blocks: call on the party's
    /// thread, outside any runtime.
    pub fn open(
        node: &Handle,
        peers: &Peers,
        manifest: &Manifest,
        party: usize,
        mut arrivals: mpsc::UnboundedReceiver<Arrival>,
        limits: LinkLimits,
    ) -> Result<QuicNet> {
        let LinkLimits {
            join_timeout,
            timeout,
            max_frame,
        } = limits;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NodeError::System("starting the job's runtime", e))?;
        let parties = manifest.parties.len();
        let me = manifest
            .parties
            .get(party)
            .ok_or_else(|| NodeError::Manifest(format!("no party {party}")))?;
        let endpoint = {
            let _inside = runtime.enter();
            peers.job_endpoint()?
        };
        let port = endpoint
            .local_addr()
            .map_err(|e| NodeError::System("reading a job's address", e))?
            .port();
        let announced = SocketAddr::new(me.address.ip(), port);
        node.block_on(announce(peers, manifest, party, announced))?;
        let job = manifest.job;
        let links = runtime.block_on(async {
            let setup = async {
                let (mut dialled, accepted) = tokio::try_join!(
                    dial_higher(peers, &endpoint, manifest, party, &mut arrivals, max_frame),
                    accept_lower(&endpoint, manifest, party, max_frame),
                )?;
                dialled.extend(accepted);
                Ok::<_, NodeError>(dialled)
            };
            tokio::time::timeout(join_timeout, setup)
                .await
                .map_err(|_| NodeError::Timeout(join_timeout, "connecting a job's parties"))?
        })?;
        let mut out: Vec<Option<SendStream>> = (0..parties).map(|_| None).collect();
        let mut inbound: Vec<Option<RecvStream>> = (0..parties).map(|_| None).collect();
        let mut connections = Vec::with_capacity(links.len());
        for (j, send, recv, conn) in links {
            out[j] = Some(send);
            inbound[j] = Some(recv);
            connections.push(conn);
        }
        let (mut alive, node_alive) = oneshot::channel::<()>();
        // Ends when this net is dropped (the receiver closes), or never runs again if the node stops.
        node.spawn(async move { alive.closed().await });
        Ok(QuicNet {
            job,
            party,
            parties,
            runtime,
            endpoint,
            out,
            inbound,
            connections,
            node_alive,
            timeout,
            max_frame,
            unflushed: false,
        })
    }

    /// UDP bytes transmitted so far on this job's connections to its peers (payload and all overhead).
    pub fn udp_tx_bytes(&self) -> u64 {
        self.connections
            .iter()
            .map(|c| c.stats().udp_tx.bytes)
            .sum()
    }

    fn no_peer(&self, peer: usize) -> NetError {
        NetError::NoSuchPeer {
            me: self.party,
            peer,
            parties: self.parties,
        }
    }
}

/// What a read needs to know of its link (borrowed apart from the runtime that drives it).
struct Link {
    job: JobId,
    max_frame: usize,
}

impl Link {
    async fn read_from(
        &self,
        stream: &mut RecvStream,
        from: usize,
    ) -> std::result::Result<Vec<u8>, NetError> {
        match frame::read_data(stream, self.max_frame).await {
            Ok(Msg::Data(bytes)) => Ok(bytes.0),
            Ok(other) => {
                tracing::error!(job = %self.job, peer = from, msg = other.name(), "unexpected message on a data stream");
                let _ = stream.stop(VarInt::from_u32(BAD_FRAME));
                Err(NetError::Transport(format!(
                    "party {from} sent {} where protocol data was expected",
                    other.name()
                )))
            }
            Err(RecvError::Closed) => Err(NetError::Disconnected { peer: from }),
            Err(RecvError::Stream(e)) => {
                tracing::warn!(job = %self.job, peer = from, "data stream broke: {e}");
                Err(NetError::Disconnected { peer: from })
            }
            Err(RecvError::Frame(e)) => {
                tracing::error!(job = %self.job, peer = from, "bad frame on a data stream, stream closed: {e}");
                let _ = stream.stop(VarInt::from_u32(BAD_FRAME));
                Err(NetError::Transport(format!(
                    "bad frame from party {from}: {e}"
                )))
            }
        }
    }
}

/// One link of a job: the peer, its data stream's halves, the connection.
type JobLink = (usize, SendStream, RecvStream, Connection);

/// Step 1 of the setup: tells every peer where this party's job endpoint listens, on the shared
/// connections (driven by the node's runtime).
async fn announce(
    peers: &Peers,
    manifest: &Manifest,
    party: usize,
    address: SocketAddr,
) -> Result<()> {
    let me = peers.public_key();
    for (j, member) in manifest.parties.iter().enumerate() {
        if j == party {
            continue;
        }
        let dial = me < member.public_key;
        let conn = peers
            .connect(member.public_key, member.address, dial)
            .await?;
        let mut send = conn.open_uni().await.map_err(NodeError::quic)?;
        for msg in [
            Msg::Hello {
                job: manifest.job,
                from: party as u32,
            },
            Msg::JobEndpoint(address),
        ] {
            frame::write(&mut send, &msg)
                .await
                .map_err(|e| NodeError::Quic(e.to_string()))?;
        }
        let _ = send.finish();
    }
    Ok(())
}

/// Step 2, towards the peers of higher index: waits for every peer's announcement, then dials each
/// higher peer's job endpoint and opens the data stream with `Hello`.
async fn dial_higher(
    peers: &Peers,
    endpoint: &Endpoint,
    manifest: &Manifest,
    party: usize,
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
    max_frame: usize,
) -> Result<Vec<JobLink>> {
    let n = manifest.parties.len();
    let mut addresses: Vec<Option<SocketAddr>> = vec![None; n];
    while addresses
        .iter()
        .enumerate()
        .any(|(j, a)| j != party && a.is_none())
    {
        let Some((j, mut stream)) = arrivals.recv().await else {
            return Err(NodeError::Job("the job ended while connecting".into()));
        };
        if j >= n || j == party || addresses[j].is_some() {
            tracing::warn!(job = %manifest.job, peer = j, "unexpected announcement ignored");
            continue;
        }
        match frame::read(&mut stream, max_frame).await {
            Ok(Msg::JobEndpoint(address)) => addresses[j] = Some(address),
            Ok(other) => {
                return Err(NodeError::Unexpected(format!(
                    "party {j} announced {} instead of its endpoint",
                    other.name()
                )))
            }
            Err(e) => return Err(NodeError::Quic(format!("party {j}'s announcement: {e}"))),
        }
    }
    let mut links = Vec::new();
    for (j, address) in addresses.into_iter().enumerate().skip(party + 1) {
        let (Some(address), Some(member)) = (address, manifest.parties.get(j)) else {
            continue;
        };
        let conn = peers.dial_job(endpoint, member.public_key, address).await?;
        let (mut send, recv) = conn.open_bi().await.map_err(NodeError::quic)?;
        let hello = Msg::Hello {
            job: manifest.job,
            from: party as u32,
        };
        frame::write(&mut send, &hello)
            .await
            .map_err(|e| NodeError::Quic(e.to_string()))?;
        links.push((j, send, recv, conn));
    }
    Ok(links)
}

/// Step 2, from the peers of lower index: accepts their connections on this party's job endpoint. A
/// connection is kept only if its proven key is a lower peer's that has no link yet and its stream begins
/// with that peer's `Hello` for this job; anything else is closed and the wait goes on.
async fn accept_lower(
    endpoint: &Endpoint,
    manifest: &Manifest,
    party: usize,
    max_frame: usize,
) -> Result<Vec<JobLink>> {
    let mut links: Vec<JobLink> = Vec::with_capacity(party);
    while links.len() < party {
        let Some(incoming) = endpoint.accept().await else {
            return Err(NodeError::Job("the job's endpoint closed".into()));
        };
        let conn = match incoming.accept() {
            Ok(connecting) => match connecting.await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(job = %manifest.job, "a job connection failed its handshake: {e}");
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(job = %manifest.job, "a job connection was refused: {e}");
                continue;
            }
        };
        let key = crate::peers::peer_key(&conn);
        let Some(j) = manifest.parties[..party]
            .iter()
            .position(|m| Some(m.public_key) == key)
            .filter(|j| links.iter().all(|l| l.0 != *j))
        else {
            conn.close(VarInt::from_u32(BAD_FRAME), b"not a lower peer of this job");
            continue;
        };
        let (send, mut recv) = match conn.accept_bi().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(job = %manifest.job, peer = j, "no data stream: {e}");
                continue;
            }
        };
        match frame::read(&mut recv, max_frame).await {
            Ok(Msg::Hello { job, from }) if job == manifest.job && from as usize == j => {
                links.push((j, send, recv, conn));
            }
            _ => {
                tracing::warn!(job = %manifest.job, peer = j, "a job connection did not say Hello for this job");
                conn.close(VarInt::from_u32(BAD_FRAME), b"bad hello");
            }
        }
    }
    Ok(links)
}

impl Net for QuicNet {
    fn party(&self) -> usize {
        self.party
    }

    fn parties(&self) -> usize {
        self.parties
    }

    fn send(&mut self, to: usize, payload: Vec<u8>) -> std::result::Result<(), NetError> {
        if self.out.get(to).and_then(Option::as_ref).is_none() {
            return Err(self.no_peer(to));
        }
        // postcard adds at most 1 (variant) + 10 (varint length) bytes to the payload.
        let limit = self.max_frame.saturating_sub(HEADER_LEN + 16);
        if payload.len() > limit {
            return Err(NetError::TooLarge {
                len: payload.len(),
                limit,
            });
        }
        let payload_len = payload.len();
        let prefix =
            frame::data_prefix(payload_len).map_err(|e| NetError::Transport(e.to_string()))?;
        let job = self.job;
        let Some(stream) = self.out.get_mut(to).and_then(Option::as_mut) else {
            return Err(NetError::NoSuchPeer {
                me: self.party,
                peer: to,
                parties: self.parties,
            });
        };
        // The payload moves into the stream's buffer without a copy; the frame is `prefix ++ payload`.
        let mut chunks = [quinn_bytes(prefix), quinn_bytes(payload)];
        // The write only queues the frame (the flow-control windows hold it, see the module doc); the
        // connection's driver transmits it at this party's next `recv` or `flush`, together with the rest of
        // the round's messages.
        let large = payload_len >= FLUSH_AT;
        self.runtime.block_on(async {
            stream.write_all_chunks(&mut chunks).await.map_err(|e| {
                tracing::warn!(%job, peer = to, "data stream write failed: {e}");
                NetError::Disconnected { peer: to }
            })?;
            if large {
                // A large message starts to leave now, while the party prepares its next one.
                tokio::task::yield_now().await;
            }
            Ok::<(), NetError>(())
        })?;
        // The drivers get a turn at the next recv or flush in any case: a large message may need several.
        self.unflushed = true;
        Ok(())
    }

    fn recv(&mut self, from: usize) -> std::result::Result<Vec<u8>, NetError> {
        if from >= self.parties || from == self.party {
            return Err(self.no_peer(from));
        }
        let timeout = self.timeout;
        let runtime = &self.runtime;
        let link = Link {
            job: self.job,
            max_frame: self.max_frame,
        };
        let Some(stream) = self.inbound.get_mut(from).and_then(Option::as_mut) else {
            return Err(NetError::Disconnected { peer: from });
        };
        let node_alive = &mut self.node_alive;
        let flush = std::mem::take(&mut self.unflushed);
        // The timer must be created inside the runtime's context, hence the async block.
        runtime.block_on(async {
            if flush {
                // One turn of the scheduler: the drivers transmit what this party wrote since its last turn
                // (even when the awaited message is here already).
                tokio::task::yield_now().await;
            }
            tokio::select! {
                biased;
                _ = node_alive => Err(NetError::Transport("this party's node stopped".into())),
                read = tokio::time::timeout(timeout, link.read_from(stream, from)) => match read {
                    Ok(result) => result,
                    Err(_) => Err(NetError::Timeout {
                        from,
                        waited: timeout,
                    }),
                },
            }
        })
    }

    fn flush(&mut self) -> std::result::Result<(), NetError> {
        if std::mem::take(&mut self.unflushed) {
            self.runtime.block_on(tokio::task::yield_now());
        }
        Ok(())
    }

    /// An empty `Data` frame to every peer, then one from every peer (a protocol message is never read
    /// here: every party calls this at the same point of the program, and each stream keeps its order).
    fn start_line(&mut self) -> std::result::Result<(), NetError> {
        let peers: Vec<usize> = (0..self.parties).filter(|&j| j != self.party).collect();
        for &j in &peers {
            self.send(j, Vec::new())?;
        }
        for &j in &peers {
            let got = self.recv(j)?;
            if !got.is_empty() {
                return Err(NetError::Transport(format!(
                    "party {j} sent {} bytes where the start line was expected",
                    got.len()
                )));
            }
        }
        Ok(())
    }
}

/// `bytes` as the stream's buffer type, without copying.
fn quinn_bytes(bytes: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(bytes)
}

impl Drop for QuicNet {
    fn drop(&mut self) {
        // Stop reading first: peers lingering on their own streams to this party must not wait for this one
        // to finish lingering.
        self.inbound.clear();
        let mut out: Vec<SendStream> = self.out.drain(..).flatten().collect();
        let job = self.job;
        self.runtime.block_on(async {
            for stream in &mut out {
                let _ = stream.finish();
            }
            let read = async {
                for stream in &mut out {
                    let _ = stream.stopped().await;
                }
            };
            if tokio::time::timeout(LINGER, read).await.is_err() {
                tracing::warn!(%job, "a peer did not read this party's last messages in time");
            }
        });
        for conn in &self.connections {
            conn.close(VarInt::from_u32(0), b"job done");
        }
        self.endpoint.close(VarInt::from_u32(0), b"job done");
        // Let the drivers send the close.
        self.runtime.block_on(tokio::task::yield_now());
    }
}
