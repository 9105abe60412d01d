//! A node's identity: an Ed25519 key pair, persisted under the node's data directory, and the self-signed
//! certificate that carries it in TLS.
//!
//! Invariants:
//! - The public identity of a node is its raw 32-byte Ed25519 public key ([`PublicKey`], hex in text form).
//!   It is the key inside the certificate's SubjectPublicKeyInfo, so pinning a `PublicKey` pins the TLS peer.
//! - The secret key never leaves this module except as the rustls/rcgen key objects built from it; it is never
//!   logged (`Identity`'s `Debug` shows only the public key) and is stored with mode 0600.
//! - A key file that exists but does not parse is an error: the node never silently replaces its identity.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{NodeError, Result};
use crate::secret_file::{read_secret, write_secret};

/// File name of the PKCS#8 identity key inside a data directory.
pub const KEY_FILE: &str = "identity.pk8";

/// An Ed25519 PKCS#8 document is 83-85 bytes; a key file longer than this is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw key follows (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Name the certificates carry; verifiers ignore it (peers are identified by key, not by name).
pub const CERT_NAME: &str = "veil-node";

/// A node's public identity: a raw Ed25519 public key. Text form: 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key inside an Ed25519 SubjectPublicKeyInfo, or `None` for any other algorithm or encoding.
    pub fn from_spki(spki: &[u8]) -> Option<PublicKey> {
        let raw = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
        raw.try_into().ok().map(PublicKey)
    }

    /// The key of a certificate's subject, or `None` unless it is an Ed25519 certificate that parses.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Option<PublicKey> {
        let parsed = rustls::server::ParsedCertificate::try_from(cert).ok()?;
        PublicKey::from_spki(parsed.subject_public_key_info().as_ref())
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }

    /// A short form for logs: the first 8 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = NodeError;
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|e| NodeError::Identity(format!("a public key is 64 hex digits: {e}")))?;
        Ok(PublicKey(out))
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's key pair.
pub struct Identity {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public)
    }
}

impl Identity {
    /// A fresh identity from the operating system's generator (not persisted).
    pub fn generate() -> Result<Identity> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| NodeError::Identity("key generation failed".into()))?;
        Identity::from_pkcs8(doc.as_ref().to_vec())
    }

    /// A second handle on the same key pair (the key is parsed again from its PKCS#8 encoding).
    pub fn try_clone(&self) -> Result<Identity> {
        Identity::from_pkcs8(self.pkcs8.clone())
    }

    /// An identity from its PKCS#8 (v1 or v2) encoding.
    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Identity> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|e| NodeError::Identity(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public = PublicKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| NodeError::Identity("unexpected public key length".into()))?,
        );
        Ok(Identity {
            pkcs8,
            pair,
            public,
        })
    }

    /// The identity stored in `data_dir`, created (with the directory) if there is none yet.
    /// Returns it and whether it was created now.
    pub fn load_or_create(data_dir: &Path) -> Result<(Identity, bool)> {
        let path = data_dir.join(KEY_FILE);
        match read_secret(&path, MAX_KEY_FILE_BYTES) {
            Ok(bytes) => Ok((Identity::from_pkcs8(bytes)?, false)),
            Err(e) if e.is_not_found() => {
                std::fs::create_dir_all(data_dir).map_err(|source| NodeError::Io {
                    what: "creating data directory",
                    path: data_dir.to_path_buf(),
                    source,
                })?;
                let identity = Identity::generate()?;
                write_secret(&path, &identity.pkcs8)?;
                Ok((identity, true))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The public identity.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// An Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// A self-signed certificate for this key and the key in rustls form.
    pub fn certificate(&self) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
        let der = PrivatePkcs8KeyDer::from(self.pkcs8.clone());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
            .map_err(|e| NodeError::Identity(format!("key for certificate: {e}")))?;
        let params = rcgen::CertificateParams::new(vec![CERT_NAME.to_string()])
            .map_err(|e| NodeError::Identity(format!("certificate parameters: {e}")))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| NodeError::Identity(format!("self-signing: {e}")))?;
        Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_and_certificate_carries_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.public_key(), b.public_key());
        let (cert, _) = a.certificate().unwrap();
        assert_eq!(PublicKey::from_certificate(&cert), Some(a.public_key()));
        let sig = a.sign(b"m");
        assert!(a.public_key().verify(b"m", &sig));
        assert!(!a.public_key().verify(b"n", &sig));
        let text = a.public_key().to_string();
        assert_eq!(text.parse::<PublicKey>().unwrap(), a.public_key());
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        assert!(Identity::load_or_create(dir.path()).is_err());
    }
}
