//! TLS for the coordinator's HTTPS API, with the same trust model as the nodes' QUIC links: no certificate
//! authority, Ed25519 keys pinned.
//!
//! - The coordinator presents the self-signed certificate of its identity; a caller pins the coordinator's
//!   public key (`veil_node::api_client::client_config`) and checks the TLS 1.3 handshake signature with it.
//! - A caller may present its own self-signed Ed25519 certificate; the coordinator accepts any such key
//!   after checking the handshake signature ([`AnyEd25519Client`]), so a request's caller is the key that
//!   proved possession in the handshake. Which key may do what is decided per route by the API.
//!
//! TLS 1.2 is refused; only Ed25519 certificates are accepted.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use veil_node::tls::{key_of, provider, refuse_tls12};
use veil_node::{Identity, NodeError, PublicKey};

/// Server side: a client certificate is optional; if present it must be a single Ed25519 certificate, and
/// the handshake signature must verify with its key.
#[derive(Debug)]
struct AnyEd25519Client {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyEd25519Client {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        key_of(end_entity)?;
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(refuse_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The coordinator's server configuration: TLS 1.3, its identity's certificate, optional client keys.
pub fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, NodeError> {
    let provider = provider();
    let (cert, key) = identity.certificate()?;
    let verifier = Arc::new(AnyEd25519Client {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The key a TLS connection's client proved, if it presented a certificate.
pub fn peer_key(conn: &rustls::ServerConnection) -> Option<PublicKey> {
    let certs = conn.peer_certificates()?;
    PublicKey::from_certificate(certs.first()?)
}
