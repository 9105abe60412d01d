//! TLS 1.3 configurations for QUIC whose verifiers accept a peer only by its pinned public key.
//!
//! There is no certificate authority: every node's certificate is self-signed with its identity key
//! ([`crate::identity`]). Trust comes from key pinning:
//! - a node dialling a peer pins exactly the key the committee manifest lists for that peer
//!   ([`PinnedServerVerifier`]);
//! - a node accepting a connection admits only keys in its [`AllowList`]: the submitters it trusts by
//!   configuration and the members of the jobs it currently serves ([`AllowListClientVerifier`]).
//!
//! Both verifiers are rustls `danger` implementations, and both do the two things a verifier must do:
//! they check the peer's certificate key against the pinned set (rejecting, and logging, any other key), and
//! they verify the TLS 1.3 handshake signature with the crypto provider
//! ([`rustls::crypto::verify_tls13_signature`]), which proves the peer holds the pinned key's secret half.
//! TLS 1.2 is refused outright. Only Ed25519 certificates are accepted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::Result;
use crate::identity::{Identity, PublicKey};

/// ALPN protocol identifier of veil's node protocol.
pub const ALPN: &[u8] = b"veil/1";

/// The crypto provider: ring (keeps builds light).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's TLS credentials: its self-signed certificate and key, made once at start.
pub struct TlsIdentity {
    public: PublicKey,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// Credentials for `identity`.
    pub fn new(identity: &Identity) -> Result<Self> {
        let (cert, key) = identity.certificate()?;
        Ok(Self {
            public: identity.public_key(),
            cert,
            key,
        })
    }

    /// The public identity these credentials prove.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }
}

/// The keys a node accepts connections from: fixed trusted submitters plus the members of live jobs
/// (reference-counted, so a key shared by two jobs stays admitted until both end).
#[derive(Debug, Default)]
pub struct AllowList {
    trusted: HashSet<PublicKey>,
    active: Mutex<HashMap<PublicKey, usize>>,
    rejected: AtomicU64,
}

impl AllowList {
    /// An allow-list of the given trusted submitters.
    pub fn new(trusted: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            trusted: trusted.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether `key` may connect now.
    pub fn admits(&self, key: &PublicKey) -> bool {
        self.trusted.contains(key)
            || self
                .active
                .lock()
                .map(|m| m.contains_key(key))
                .unwrap_or(false)
    }

    /// Whether `key` is a trusted submitter.
    pub fn is_trusted_submitter(&self, key: &PublicKey) -> bool {
        self.trusted.contains(key)
    }

    /// Admits `keys` (a job's members) until a matching [`AllowList::release`].
    pub fn admit(&self, keys: &[PublicKey]) {
        if let Ok(mut m) = self.active.lock() {
            for k in keys {
                *m.entry(*k).or_insert(0) += 1;
            }
        }
    }

    /// Ends one admission of `keys`.
    pub fn release(&self, keys: &[PublicKey]) {
        if let Ok(mut m) = self.active.lock() {
            for k in keys {
                if let Some(n) = m.get_mut(k) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(k);
                    }
                }
            }
        }
    }

    /// Handshakes rejected so far because of the peer's key.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// The Ed25519 key of a self-signed certificate, or a bad-encoding error.
pub fn key_of(end_entity: &CertificateDer<'_>) -> std::result::Result<PublicKey, rustls::Error> {
    PublicKey::from_certificate(end_entity).ok_or(rustls::Error::InvalidCertificate(
        CertificateError::BadEncoding,
    ))
}

/// The error every verifier here returns for a TLS 1.2 signature: only TLS 1.3 is accepted.
pub fn refuse_tls12() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not accepted".into())
}

/// Client-side verifier: the server must present exactly the pinned key, and sign the handshake with it.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    expected: PublicKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    /// A verifier that accepts exactly `expected`, checking signatures with [`provider`]'s algorithms.
    pub fn new(expected: PublicKey) -> Self {
        Self {
            expected,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let key = key_of(end_entity)?;
        if key != self.expected || !intermediates.is_empty() {
            tracing::warn!(
                expected = %self.expected.short(),
                got = %key.short(),
                "rejected server: certificate key is not the pinned key"
            );
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(refuse_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server-side verifier: client authentication is mandatory, and the client's key must be in the
/// [`AllowList`]; the handshake signature is verified with the provider.
#[derive(Debug)]
pub struct AllowListClientVerifier {
    allowed: Arc<AllowList>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AllowListClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let key = match key_of(end_entity) {
            Ok(k) => k,
            Err(e) => {
                self.allowed.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "rejected handshake: client certificate is not an Ed25519 certificate"
                );
                return Err(e);
            }
        };
        if !intermediates.is_empty() || !self.allowed.admits(&key) {
            self.allowed.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                key = %key,
                "rejected handshake: client key is in no committee manifest this node serves"
            );
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(refuse_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The server configuration of a node: TLS 1.3 only, mandatory client keys from `allowed`.
pub fn server_config(me: &TlsIdentity, allowed: Arc<AllowList>) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let verifier = Arc::new(AllowListClientVerifier {
        allowed,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![me.cert.clone()], me.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The client configuration for dialling the node whose key is `peer`: TLS 1.3 only, the peer pinned, this
/// node's certificate presented.
pub fn client_config(me: &TlsIdentity, peer: PublicKey) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PinnedServerVerifier::new(peer));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![me.cert.clone()], me.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}
