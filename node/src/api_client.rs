//! A small HTTPS client for the coordinator's API, used by node agents, the client SDK and the operator
//! commands: one TLS 1.3 connection per request (the coordinator's key pinned, the caller's identity
//! presented), HTTP/1.1 with hyper, blocking calls on an internal runtime.
//!
//! Invariant: a reply body is read up to [`MAX_REPLY`] bytes and every call is bounded by the client's
//! timeout; a reply is never trusted beyond its JSON shape.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;

use crate::api::ErrorBody;
use crate::tls::{provider, PinnedServerVerifier};
use crate::{Identity, NodeError, PublicKey};

/// The name callers put in the TLS handshake (verifiers ignore it: trust is by key).
pub const SERVER_NAME: &str = "veil-coordinator";

/// A caller's TLS configuration: TLS 1.3, the coordinator's key pinned, the caller's certificate presented
/// (the coordinator knows the caller by that key).
pub fn client_config(
    me: &Identity,
    coordinator: PublicKey,
) -> Result<rustls::ClientConfig, NodeError> {
    let (cert, key) = me.certificate()?;
    let verifier = Arc::new(PinnedServerVerifier::new(coordinator));
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Largest reply body read, bytes.
pub const MAX_REPLY: usize = 512 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: connection, TLS, timeout, or an unreadable reply.
    #[error("coordinator at {address}: {message}")]
    Transport {
        /// The coordinator's address.
        address: String,
        /// What failed.
        message: String,
    },
    /// The coordinator answered with an error status.
    #[error("coordinator answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
}

impl CallError {
    /// The HTTP status, if the coordinator answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            CallError::Transport { .. } => None,
        }
    }
}

/// A client of one coordinator.
pub struct ApiClient {
    runtime: Runtime,
    connector: TlsConnector,
    address: String,
    timeout: Duration,
}

impl ApiClient {
    /// A client of the coordinator at `address` (`host:port`) whose key is `coordinator`, calling as
    /// `identity`, each call bounded by `timeout`.
    pub fn new(
        identity: &Identity,
        coordinator: PublicKey,
        address: String,
        timeout: Duration,
    ) -> Result<ApiClient, NodeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("veil-api-client")
            .enable_all()
            .build()
            .map_err(|e| NodeError::System("starting the API client's runtime", e))?;
        let config = client_config(identity, coordinator)?;
        Ok(ApiClient {
            runtime,
            connector: TlsConnector::from(Arc::new(config)),
            address,
            timeout,
        })
    }

    fn transport(&self, message: impl std::fmt::Display) -> CallError {
        CallError::Transport {
            address: self.address.clone(),
            message: message.to_string(),
        }
    }

    async fn call_async(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        max_reply: usize,
    ) -> Result<(u16, Bytes), CallError> {
        let tcp = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| self.transport(format!("connecting: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name =
            rustls::pki_types::ServerName::try_from(SERVER_NAME).map_err(|e| self.transport(e))?;
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| self.transport(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.transport(format!("HTTP: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, SERVER_NAME)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.transport(e))?;
        let reply = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(format!("request: {e}")))?;
        let status = reply.status().as_u16();
        let body = Limited::new(reply.into_body(), max_reply)
            .collect()
            .await
            .map_err(|e| self.transport(format!("reading the reply: {e}")))?
            .to_bytes();
        Ok((status, body))
    }

    fn call_unrecorded(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        max_reply: usize,
    ) -> Result<Bytes, CallError> {
        let (status, bytes) = self.runtime.block_on(async {
            tokio::time::timeout(
                self.timeout,
                self.call_async(method, path, content_type, body, max_reply),
            )
            .await
            .map_err(|_| self.transport(format!("no answer within {:?}", self.timeout)))?
        })?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("{} bytes of non-JSON error", bytes.len()));
        Err(CallError::Status { status, message })
    }

    fn json<T: DeserializeOwned>(&self, bytes: Bytes) -> Result<T, CallError> {
        serde_json::from_slice(&bytes).map_err(|e| self.transport(format!("reply: {e}")))
    }

    /// GET a JSON reply.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        let bytes = self.call(Method::GET, path, "application/json", Vec::new())?;
        self.json(bytes)
    }

    /// POST a JSON body, read a JSON reply.
    pub fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| self.transport(e))?;
        let bytes = self.call(Method::POST, path, "application/json", body)?;
        self.json(bytes)
    }

    /// POST a JSON body, expect an empty reply.
    pub fn post_unit<B: Serialize>(&self, path: &str, body: &B) -> Result<(), CallError> {
        let body = serde_json::to_vec(body).map_err(|e| self.transport(e))?;
        self.call(Method::POST, path, "application/json", body)
            .map(|_| ())
    }

    /// PUT a UTF-8 text body (JSON documents kept verbatim, such as receipts), expect an empty reply.
    pub fn put_text(&self, path: &str, body: String) -> Result<(), CallError> {
        self.call(
            Method::PUT,
            path,
            "text/plain; charset=utf-8",
            body.into_bytes(),
        )
        .map(|_| ())
    }

    /// PUT an opaque blob.
    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> Result<(), CallError> {
        self.call(Method::PUT, path, "application/octet-stream", body)
            .map(|_| ())
    }

    /// PUT an opaque blob, read a JSON reply.
    pub fn put_bytes_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, CallError> {
        let bytes = self.call(Method::PUT, path, "application/octet-stream", body)?;
        self.json(bytes)
    }

    /// GET an opaque blob.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, CallError> {
        self.call(Method::GET, path, "application/octet-stream", Vec::new())
            .map(|b| b.to_vec())
    }

    /// GET an opaque blob of at most `max` bytes (at most [`MAX_REPLY`]): a longer reply is refused
    /// while it is read.
    pub fn get_bytes_bounded(&self, path: &str, max: usize) -> Result<Vec<u8>, CallError> {
        let reply = self.call_unrecorded(
            Method::GET,
            path,
            "application/octet-stream",
            Vec::new(),
            max.min(MAX_REPLY),
        )?;
        crate::record::received(&reply);
        Ok(reply.to_vec())
    }

    /// One call, its reply body recorded when the test-only recorder is on (`crate::record`).
    fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, CallError> {
        let reply = self.call_unrecorded(method, path, content_type, body, MAX_REPLY)?;
        crate::record::received(&reply);
        Ok(reply)
    }
}
