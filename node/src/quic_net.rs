//! [`QuicNet`]: the protocols' [`Net`] over QUIC.
//!
//! For one job, party `i` opens one unidirectional stream to every peer `j` on the pair's shared connection;
//! its first frame is `Hello { job, from: i }` and every later frame is one protocol message (`Data`). The
//! peer's node routes the stream to the job by its `Hello`, after checking that the connection's proven key is
//! party `i`'s key in the manifest.
//!
//! Invariants:
//! - `send` writes the frame into the peer's stream from the calling thread (no hop through another task:
//!   each hop costs a wake-up per round). It does not wait for the peer to read: the transport's flow-control
//!   windows (see `peers::transport_config`) are at least the maximum frame size, and in every protocol round
//!   a party reads what it was sent before the next round, so a write never waits for a window update and two
//!   parties sending to each other cannot deadlock. Messages to a peer keep their order (one stream).
//! - `recv` blocks the calling (non-runtime) thread for at most the configured timeout, then fails with
//!   [`NetError::Timeout`]; a stream that ends or breaks is [`NetError::Disconnected`], a malformed or
//!   oversized frame is [`NetError::Transport`] (logged, the stream stopped).
//! - only protocol payloads pass through `send`/`recv`, so `CountedNet` counts exactly what it counts over
//!   the in-memory mesh; framing and QUIC overhead show in [`QuicNet::udp_tx_bytes`] instead.

use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use veil_protocols::net::{Net, NetError};

use crate::error::{NodeError, Result};
use crate::frame::{self, RecvError, HEADER_LEN};
use crate::jobs::Arrival;
use crate::manifest::Manifest;
use crate::peers::Peers;
use crate::wire::{Bytes, JobId, Msg};

/// Application error code with which a node stops a stream that sent a bad frame.
pub const BAD_FRAME: u32 = 1;

/// One party's links to the rest of its committee for one job.
pub struct QuicNet {
    job: JobId,
    party: usize,
    parties: usize,
    handle: Handle,
    out: Vec<Option<SendStream>>,
    inbound: Vec<Option<RecvStream>>,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    connections: Vec<Connection>,
    timeout: Duration,
    max_frame: usize,
}

impl QuicNet {
    /// Connects party `party` of `manifest` to its peers: one outgoing stream each, announced by `Hello`.
    /// Incoming streams arrive on `arrivals` (routed by the node). Call inside the node's runtime.
    pub async fn open(
        peers: &Peers,
        manifest: &Manifest,
        party: usize,
        arrivals: mpsc::UnboundedReceiver<Arrival>,
        timeout: Duration,
        max_frame: usize,
    ) -> Result<QuicNet> {
        let parties = manifest.parties.len();
        let me = peers.public_key();
        let mut out = Vec::with_capacity(parties);
        let mut connections = Vec::new();
        for (j, member) in manifest.parties.iter().enumerate() {
            if j == party {
                out.push(None);
                continue;
            }
            let dial = me < member.public_key;
            let conn = peers
                .connect(member.public_key, member.address, dial)
                .await?;
            let mut send = conn.open_uni().await.map_err(NodeError::quic)?;
            let hello = Msg::Hello {
                job: manifest.job,
                from: party as u32,
            };
            frame::write(&mut send, &hello)
                .await
                .map_err(|e| NodeError::Quic(e.to_string()))?;
            out.push(Some(send));
            connections.push(conn);
        }
        Ok(QuicNet {
            job: manifest.job,
            party,
            parties,
            handle: Handle::current(),
            out,
            inbound: (0..parties).map(|_| None).collect(),
            arrivals,
            connections,
            timeout,
            max_frame,
        })
    }

    /// UDP bytes transmitted so far on this party's connections to its peers (all jobs sharing them).
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

    async fn read_from(&mut self, from: usize) -> std::result::Result<Vec<u8>, NetError> {
        while self.inbound[from].is_none() {
            match self.arrivals.recv().await {
                Some((j, stream)) if j < self.parties && j != self.party => {
                    if self.inbound[j].is_some() {
                        tracing::warn!(job = %self.job, peer = j, "second data stream from a party ignored");
                    } else {
                        self.inbound[j] = Some(stream);
                    }
                }
                Some((j, _)) => {
                    tracing::warn!(job = %self.job, peer = j, "data stream from a non-peer ignored")
                }
                None => return Err(NetError::Disconnected { peer: from }),
            }
        }
        let Some(stream) = self.inbound[from].as_mut() else {
            return Err(NetError::Disconnected { peer: from });
        };
        match frame::read(stream, self.max_frame).await {
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
        let frame = frame::encode(&Msg::Data(Bytes(payload)))
            .map_err(|e| NetError::Transport(e.to_string()))?;
        let (job, handle) = (self.job, self.handle.clone());
        let Some(stream) = self.out.get_mut(to).and_then(Option::as_mut) else {
            return Err(NetError::NoSuchPeer {
                me: self.party,
                peer: to,
                parties: self.parties,
            });
        };
        handle.block_on(stream.write_all(&frame)).map_err(|e| {
            tracing::warn!(%job, peer = to, "data stream write failed: {e}");
            NetError::Disconnected { peer: to }
        })
    }

    fn recv(&mut self, from: usize) -> std::result::Result<Vec<u8>, NetError> {
        if from >= self.parties || from == self.party {
            return Err(self.no_peer(from));
        }
        let handle = self.handle.clone();
        let timeout = self.timeout;
        // The timer must be created inside the runtime's context, hence the async block.
        match handle.block_on(async { tokio::time::timeout(timeout, self.read_from(from)).await }) {
            Ok(result) => result,
            Err(_) => Err(NetError::Timeout {
                from,
                waited: timeout,
            }),
        }
    }
}
