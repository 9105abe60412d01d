//! The QUIC endpoint of a node and its connections: one connection per pair of nodes, shared by all jobs.
//!
//! Invariants:
//! - every connection, dialled or accepted, passed pinned-key mutual TLS ([`crate::tls`]) and is filed in
//!   the pool under the key its peer proved;
//! - between two execution parties only the one with the smaller key dials; the other waits for that
//!   connection (bounded by the connect timeout), so a pair never ends up with two connections;
//! - clients and parties dial the nodes they need (the dealer never dials).
//!
//! New connections are announced on a channel so that the node can serve the streams its peers open.
//!
//! A job's data does not use these connections: each party of a job opens an endpoint of its own
//! ([`Peers::job_endpoint`], same identity and allow-list, a fresh port) inside the job's runtime, so that
//! its socket and connections are driven by the party's own thread (see `quic_net`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, IdleTimeout, TransportConfig, VarInt};
use tokio::sync::{mpsc, Mutex, Notify};

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::identity::{Identity, PublicKey, CERT_NAME};
use crate::tls::{self, AllowList, TlsIdentity};

/// Socket buffers of a job's endpoint: a round's messages from every peer may arrive while the party
/// computes and nothing reads the socket.
const JOB_SOCKET_BUFFER: usize = 4 << 20;
/// Initial congestion window of a job's connections: a committee's links are provisioned, and a round's
/// message should not wait for slow start on a connection that lives for one job.
const JOB_INITIAL_WINDOW: u64 = 1 << 20;

/// Largest UDP payload a job's connections may discover and use: the most an IPv4 datagram carries. On a
/// path with a large MTU (loopback, jumbo frames) a round's message then takes a few datagrams instead of
/// hundreds (per-datagram work dominates QUIC's cost); elsewhere MTU discovery stays at the path's MTU.
const JOB_MAX_UDP_PAYLOAD: u16 = 65_507;

/// The transport of a job's connections: the node's, with a larger initial window and MTU discovery up to
/// [`JOB_MAX_UDP_PAYLOAD`]. (Requesting fewer acknowledgements, QUIC's ACK frequency, cut the median by
/// about 5% but made some jobs stall for milliseconds: not used.)
fn job_transport_config(config: &NodeConfig) -> Result<TransportConfig> {
    let mut t = transport_config(config)?;
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(JOB_INITIAL_WINDOW);
    t.congestion_controller_factory(Arc::new(cubic));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(JOB_MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    Ok(t)
}

/// [`job_transport_config`] for a job endpoint bound to a loopback address: its datagrams never leave the
/// loopback interface (a socket bound there reaches no other), whose MTU (64 KiB) takes every datagram of
/// up to [`JOB_MAX_UDP_PAYLOAD`] bytes, so a connection starts at that size instead of QUIC's safe 1,200
/// bytes and the first messages of a job do not cost hundreds of datagrams while MTU discovery probes up.
fn loopback_job_transport_config(config: &NodeConfig) -> Result<TransportConfig> {
    let mut t = job_transport_config(config)?;
    t.initial_mtu(JOB_MAX_UDP_PAYLOAD);
    Ok(t)
}

/// A job endpoint's socket: quinn's tokio socket, one datagram per send and per receive slot. Segmentation
/// offload would batch datagrams of up to [`JOB_MAX_UDP_PAYLOAD`] bytes beyond what one send may carry (the
/// kernel refuses the batch, and quinn-udp drops it silently), and receive slots sized for offload would
/// take megabytes per job.
#[derive(Debug)]
struct OneDatagram(Arc<dyn quinn::AsyncUdpSocket>);

impl quinn::AsyncUdpSocket for OneDatagram {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

/// A connection and the key its peer proved.
pub type Announced = (PublicKey, Connection);

/// A node's endpoint and connection pool.
pub struct Peers {
    endpoint: Endpoint,
    tls: TlsIdentity,
    transport: Arc<TransportConfig>,
    job_transport: Arc<TransportConfig>,
    allowed: Arc<AllowList>,
    pool: Mutex<HashMap<PublicKey, Connection>>,
    arrived: Notify,
    announce: mpsc::UnboundedSender<Announced>,
    connect_timeout: Duration,
}

/// QUIC transport parameters derived from the node configuration.
fn transport_config(config: &NodeConfig) -> Result<TransportConfig> {
    let mut t = TransportConfig::default();
    let idle = IdleTimeout::try_from(config.idle_timeout()).map_err(NodeError::quic)?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(config.idle_timeout() / 3));
    t.max_concurrent_uni_streams(VarInt::from_u32(4096));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    // Flow-control windows large enough that one protocol message never waits for a window update.
    let frame = u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX);
    t.stream_receive_window(VarInt::from_u32(frame.max(8 << 20)));
    t.receive_window(VarInt::from_u32(frame.saturating_mul(2).max(32 << 20)));
    t.send_window(u64::from(frame.max(8 << 20)) * 2);
    Ok(t)
}

/// The public key a connection's peer proved in the handshake.
pub fn peer_key(conn: &Connection) -> Option<PublicKey> {
    let identity = conn.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    PublicKey::from_certificate(certs.first()?)
}

impl Peers {
    /// Binds the endpoint (call inside the node's runtime). Returns the pool and the channel on which new
    /// connections are announced.
    pub fn bind(
        config: &NodeConfig,
        identity: &Identity,
        allowed: Arc<AllowList>,
    ) -> Result<(Arc<Peers>, mpsc::UnboundedReceiver<Announced>)> {
        let tls = TlsIdentity::new(identity)?;
        let transport = Arc::new(transport_config(config)?);
        // A job endpoint binds the node's address (see `job_endpoint`).
        let job_transport = if config.listen.ip().is_loopback() {
            loopback_job_transport_config(config)?
        } else {
            job_transport_config(config)?
        };
        let server_tls = tls::server_config(&tls, allowed.clone())?;
        let quic_tls = QuicServerConfig::try_from(server_tls).map_err(NodeError::quic)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
        server.transport_config(transport.clone());
        let endpoint = Endpoint::server(server, config.listen)
            .map_err(|e| NodeError::System("binding the QUIC endpoint", e))?;
        let (announce, announced) = mpsc::unbounded_channel();
        Ok((
            Arc::new(Peers {
                endpoint,
                tls,
                transport,
                job_transport: Arc::new(job_transport),
                allowed,
                pool: Mutex::new(HashMap::new()),
                arrived: Notify::new(),
                announce,
                connect_timeout: config.connect_timeout(),
            }),
            announced,
        ))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| NodeError::System("reading the bound address", e))
    }

    /// This node's key.
    pub fn public_key(&self) -> PublicKey {
        self.tls.public_key()
    }

    /// The allow-list the server side checks.
    pub fn allowed(&self) -> &Arc<AllowList> {
        &self.allowed
    }

    /// Accepts connections until the endpoint closes; each handshake runs on its own task.
    pub async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let peers = self.clone();
            tokio::spawn(async move {
                let from = incoming.remote_address();
                let connecting = match incoming.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(%from, "handshake failed: {e}");
                        return;
                    }
                };
                match tokio::time::timeout(peers.connect_timeout, connecting).await {
                    Ok(Ok(conn)) => match peer_key(&conn) {
                        Some(key) => peers.adopt(key, conn).await,
                        None => conn.close(VarInt::from_u32(1), b"no identity"),
                    },
                    Ok(Err(e)) => tracing::warn!(%from, "handshake failed: {e}"),
                    Err(_) => tracing::warn!(%from, "handshake timed out"),
                }
            });
        }
    }

    /// Files a connection in the pool (replacing a dead one) and announces it.
    async fn adopt(&self, key: PublicKey, conn: Connection) {
        tracing::debug!(peer = %key.short(), addr = %conn.remote_address(), "connection up");
        self.pool.lock().await.insert(key, conn.clone());
        self.arrived.notify_waiters();
        let _ = self.announce.send((key, conn));
    }

    fn alive(conn: &Connection) -> bool {
        conn.close_reason().is_none()
    }

    /// A connection to the node `key` at `address`: the pooled one if alive; otherwise a new one if `dial`,
    /// else the one the peer will dial (waiting up to the connect timeout).
    pub async fn connect(
        &self,
        key: PublicKey,
        address: SocketAddr,
        dial: bool,
    ) -> Result<Connection> {
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            let arrived = self.arrived.notified();
            {
                let mut pool = self.pool.lock().await;
                if let Some(conn) = pool.get(&key) {
                    if Self::alive(conn) {
                        return Ok(conn.clone());
                    }
                    pool.remove(&key);
                }
                if dial {
                    drop(pool);
                    return self.dial(key, address).await;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, arrived).await.is_err() {
                return Err(NodeError::Timeout(
                    self.connect_timeout,
                    "waiting for a peer's connection",
                ));
            }
        }
    }

    async fn dial(&self, key: PublicKey, address: SocketAddr) -> Result<Connection> {
        let conn = self
            .handshake(&self.endpoint, &self.transport, key, address)
            .await?;
        self.adopt(key, conn.clone()).await;
        Ok(conn)
    }

    /// A new endpoint for one job: this node's identity and allow-list, a fresh UDP port on the node's IP.
    /// Call inside the job's runtime: its socket and its connections are driven there.
    pub fn job_endpoint(&self) -> Result<Endpoint> {
        let server_tls = tls::server_config(&self.tls, self.allowed.clone())?;
        let quic_tls = QuicServerConfig::try_from(server_tls).map_err(NodeError::quic)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
        server.transport_config(self.job_transport.clone());
        let ip = self.local_addr()?.ip();
        let socket = std::net::UdpSocket::bind((ip, 0))
            .map_err(|e| NodeError::System("binding a job's socket", e))?;
        let state = quinn::udp::UdpSocketState::new((&socket).into())
            .map_err(|e| NodeError::System("configuring a job's socket", e))?;
        // Best effort: the kernel caps the sizes (net.core.rmem_max, wmem_max).
        let _ = state.set_recv_buffer_size((&socket).into(), JOB_SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&socket).into(), JOB_SOCKET_BUFFER);
        let socket = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)
            .map_err(|e| NodeError::System("starting a job's socket", e))?;
        let mut endpoint = quinn::EndpointConfig::default();
        endpoint
            .max_udp_payload_size(JOB_MAX_UDP_PAYLOAD)
            .map_err(NodeError::quic)?;
        Endpoint::new_with_abstract_socket(
            endpoint,
            Some(server),
            Arc::new(OneDatagram(socket)),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| NodeError::System("starting a job's endpoint", e))
    }

    /// A connection from the job endpoint `endpoint` to the peer `key`'s job endpoint at `address`.
    pub async fn dial_job(
        &self,
        endpoint: &Endpoint,
        key: PublicKey,
        address: SocketAddr,
    ) -> Result<Connection> {
        self.handshake(endpoint, &self.job_transport, key, address)
            .await
    }

    /// Dials `address` from `endpoint` and completes the pinned-key handshake with `key`.
    async fn handshake(
        &self,
        endpoint: &Endpoint,
        transport: &Arc<TransportConfig>,
        key: PublicKey,
        address: SocketAddr,
    ) -> Result<Connection> {
        let client_tls = tls::client_config(&self.tls, key)?;
        let quic_tls = QuicClientConfig::try_from(client_tls).map_err(NodeError::quic)?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic_tls));
        client.transport_config(transport.clone());
        let connecting = endpoint
            .connect_with(client, address, CERT_NAME)
            .map_err(NodeError::quic)?;
        let conn = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| NodeError::Timeout(self.connect_timeout, "in the QUIC handshake"))?
            .map_err(|e| {
                tracing::warn!(peer = %key.short(), %address, "handshake failed: {e}");
                NodeError::quic(format!("connecting to {address}: {e}"))
            })?;
        Ok(conn)
    }

    /// Closes the endpoint and every connection.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(0), b"node shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job connection from a node bound to `listen` to a second node on loopback, and the path MTU it
    /// starts with (read before any data is sent).
    fn first_job_mtu(listen: std::net::IpAddr) -> u16 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (a_id, b_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
            let allowed = Arc::new(AllowList::new([a_id.public_key(), b_id.public_key()]));
            let config = |ip| NodeConfig::new(SocketAddr::new(ip, 0), std::env::temp_dir());
            let (a, _a_rx) = Peers::bind(&config(listen), &a_id, allowed.clone()).unwrap();
            let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
            let (b, _b_rx) = Peers::bind(&config(loopback), &b_id, allowed).unwrap();
            let (a_job, b_job) = (a.job_endpoint().unwrap(), b.job_endpoint().unwrap());
            let b_port = b_job.local_addr().unwrap().port();
            let accept = tokio::spawn(async move {
                let incoming = b_job.accept().await.unwrap();
                let conn = incoming.await.unwrap();
                (conn, b_job)
            });
            let conn = a
                .dial_job(&a_job, b_id.public_key(), SocketAddr::new(loopback, b_port))
                .await
                .unwrap();
            let _held = accept.await.unwrap();
            conn.stats().path.current_mtu
        })
    }

    #[test]
    fn a_loopback_node_starts_its_job_connections_at_the_largest_datagram() {
        assert_eq!(
            first_job_mtu(std::net::IpAddr::from([127, 0, 0, 1])),
            JOB_MAX_UDP_PAYLOAD
        );
    }

    #[test]
    fn a_node_on_another_address_starts_at_quics_safe_size_and_discovers_the_rest() {
        // Bound to every interface: its datagrams may cross a real link, so it starts at 1,200 bytes.
        assert_eq!(first_job_mtu(std::net::IpAddr::from([0, 0, 0, 0])), 1200);
    }
}
