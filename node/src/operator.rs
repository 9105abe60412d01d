//! Operator keys and certificates: how a node proves which operator runs it, so that the coordinator's
//! collusion domain is a verified operator key rather than a name the node declares.
//!
//! - An operator holds an Ed25519 **operator key** (`veil operator keygen`, [`create_operator_key`]) and
//!   certifies each of its nodes: a [`Certificate`] of kind [`CertKind::Node`] whose subject is the node's
//!   identity key and whose issuer is the operator key (`veil operator certify`).
//! - In a network that admits operators by a **network admission key** rather than by a list of operator
//!   keys, the admission key certifies the operator: a certificate of kind [`CertKind::Operator`] whose
//!   subject is the operator key (`veil operator admit`). The node presents both, as a [`CertificateChain`].
//!
//! Encoding (version 1, all integers little-endian, at most [`MAX_CERT_BYTES`]):
//! `version u8 | kind u8 | subject [32] | issuer [32] | expires_at_s u64 | region_len u8 | region |
//! has_asn u8 | asn u32 (if has_asn) | signature [64]`; the signature is the issuer's Ed25519 signature
//! of [`SIGNING_LABEL`] followed by every byte before the signature. A chain's file (and its form in a
//! registration) is one hex certificate per line, the node's first.
//!
//! Invariants: a decoded certificate used every byte it was given; a region is valid UTF-8 of at most
//! [`MAX_REGION_BYTES`] bytes; [`Certificate::verify`] checks the signature before anything else is trusted.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use thiserror::Error;

use crate::secret_file::{create_new_private, read_secret};
use crate::{Identity, NodeError, PublicKey};

/// The encoding's version.
pub const CERT_VERSION: u8 = 1;
/// Longest region name a certificate carries, bytes.
pub const MAX_REGION_BYTES: usize = 64;
/// Length of an Ed25519 signature.
const SIGNATURE_BYTES: usize = 64;
/// Longest encoded certificate, bytes.
pub const MAX_CERT_BYTES: usize =
    1 + 1 + 32 + 32 + 8 + 1 + MAX_REGION_BYTES + 1 + 4 + SIGNATURE_BYTES;
/// Most certificates in a chain (the node's, and the operator's admission).
pub const MAX_CHAIN: usize = 2;
/// Longest chain file or registration field, bytes (hex, newline-separated).
pub const MAX_CHAIN_TEXT_BYTES: usize = MAX_CHAIN * (2 * MAX_CERT_BYTES + 2);
/// What an issuer signs in front of the certificate's body (domain separation).
pub const SIGNING_LABEL: &[u8] = b"veil operator certificate v1\0";
/// The operator key's file name inside the directory `veil operator keygen` writes.
pub const OPERATOR_KEY_FILE: &str = "operator.pk8";

/// What a certificate vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// An operator (issuer) runs this node (subject).
    Node,
    /// A network admission key (issuer) admits this operator (subject).
    Operator,
}

impl CertKind {
    fn byte(self) -> u8 {
        match self {
            CertKind::Node => 1,
            CertKind::Operator => 2,
        }
    }
}

/// Why a certificate or chain was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CertError {
    /// Fewer bytes than the encoding needs.
    #[error("certificate truncated")]
    Truncated,
    /// Bytes left over after the signature, or more than the bound.
    #[error("certificate longer than its encoding ({len} bytes, at most {MAX_CERT_BYTES})")]
    TooLong {
        /// The length given.
        len: usize,
    },
    /// An encoding version this build does not read.
    #[error("certificate version {0} (this build reads {CERT_VERSION})")]
    Version(u8),
    /// An unknown kind byte.
    #[error("certificate kind {0} is unknown")]
    Kind(u8),
    /// The region is not UTF-8 or too long.
    #[error("certificate region is not UTF-8 of at most {MAX_REGION_BYTES} bytes")]
    Region,
    /// A byte that must be 0 or 1 is neither.
    #[error("certificate flag byte {0} is not 0 or 1")]
    Flag(u8),
    /// The signature does not verify under the issuer key.
    #[error("certificate signature does not verify under its issuer key")]
    BadSignature,
    /// The certificate expired.
    #[error("certificate expired at {expires_at_s} (now {now_s}, Unix seconds)")]
    Expired {
        /// Its expiry.
        expires_at_s: u64,
        /// The verifier's time.
        now_s: u64,
    },
    /// A chain with no certificate, too many, or not hex.
    #[error("certificate chain: {0}")]
    Chain(&'static str),
    /// A chain whose certificates do not link (kinds, subjects and issuers).
    #[error("certificate chain does not link: {0}")]
    Unlinked(&'static str),
}

/// One certificate (see the module doc for its encoding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// What it vouches for.
    pub kind: CertKind,
    /// The key vouched for: a node's identity key, or an operator key.
    pub subject: PublicKey,
    /// The key that signed: an operator key, or a network admission key.
    pub issuer: PublicKey,
    /// Unix time (seconds) after which it is refused.
    pub expires_at_s: u64,
    /// The node's region, as the operator states it (node certificates).
    /// Invariant: at most [`MAX_REGION_BYTES`] bytes.
    pub region: Option<String>,
    /// The node's autonomous system, as the operator states it.
    pub asn: Option<u32>,
    /// The issuer's signature (see [`SIGNING_LABEL`]).
    pub signature: [u8; SIGNATURE_BYTES],
}

impl Certificate {
    /// A certificate of `kind` for `subject`, signed by `issuer`.
    pub fn issue(
        issuer: &Identity,
        kind: CertKind,
        subject: PublicKey,
        expires_at_s: u64,
        region: Option<String>,
        asn: Option<u32>,
    ) -> Result<Certificate, CertError> {
        if region.as_ref().is_some_and(|r| r.len() > MAX_REGION_BYTES) {
            return Err(CertError::Region);
        }
        let mut cert = Certificate {
            kind,
            subject,
            issuer: issuer.public_key(),
            expires_at_s,
            region,
            asn,
            signature: [0; SIGNATURE_BYTES],
        };
        let mut message = SIGNING_LABEL.to_vec();
        message.extend_from_slice(&cert.body());
        let signature = issuer.sign(&message);
        cert.signature = signature
            .as_slice()
            .try_into()
            .map_err(|_| CertError::BadSignature)?;
        Ok(cert)
    }

    /// Every encoded byte before the signature.
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_CERT_BYTES);
        out.push(CERT_VERSION);
        out.push(self.kind.byte());
        out.extend_from_slice(&self.subject.0);
        out.extend_from_slice(&self.issuer.0);
        out.extend_from_slice(&self.expires_at_s.to_le_bytes());
        let region = self.region.as_deref().unwrap_or_default().as_bytes();
        out.push(region.len() as u8);
        out.extend_from_slice(region);
        match self.asn {
            Some(asn) => {
                out.push(1);
                out.extend_from_slice(&asn.to_le_bytes());
            }
            None => out.push(0),
        }
        out
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a certificate (its signature is not checked here: see [`Certificate::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Certificate, CertError> {
        if bytes.len() > MAX_CERT_BYTES {
            return Err(CertError::TooLong { len: bytes.len() });
        }
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != CERT_VERSION {
            return Err(CertError::Version(version));
        }
        let kind = match r.u8()? {
            1 => CertKind::Node,
            2 => CertKind::Operator,
            other => return Err(CertError::Kind(other)),
        };
        let subject = PublicKey(r.array()?);
        let issuer = PublicKey(r.array()?);
        let expires_at_s = u64::from_le_bytes(r.array()?);
        let region_len = usize::from(r.u8()?);
        if region_len > MAX_REGION_BYTES {
            return Err(CertError::Region);
        }
        let region = match region_len {
            0 => None,
            n => Some(String::from_utf8(r.take(n)?.to_vec()).map_err(|_| CertError::Region)?),
        };
        let asn = match r.u8()? {
            0 => None,
            1 => Some(u32::from_le_bytes(r.array()?)),
            other => return Err(CertError::Flag(other)),
        };
        let signature = r.array()?;
        if !r.0.is_empty() {
            return Err(CertError::TooLong { len: bytes.len() });
        }
        Ok(Certificate {
            kind,
            subject,
            issuer,
            expires_at_s,
            region,
            asn,
            signature,
        })
    }

    /// Checks the issuer's signature, then the expiry against `now_s` (Unix seconds).
    pub fn verify(&self, now_s: u64) -> Result<(), CertError> {
        let mut message = SIGNING_LABEL.to_vec();
        message.extend_from_slice(&self.body());
        if !self.issuer.verify(&message, &self.signature) {
            return Err(CertError::BadSignature);
        }
        if now_s >= self.expires_at_s {
            return Err(CertError::Expired {
                expires_at_s: self.expires_at_s,
                now_s,
            });
        }
        Ok(())
    }
}

/// A bounded reader over a certificate's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CertError> {
        if self.0.len() < n {
            return Err(CertError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CertError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CertError> {
        self.take(N)?.try_into().map_err(|_| CertError::Truncated)
    }
}

/// What a node presents at registration: its node certificate and, where operators are admitted by a
/// network admission key, its operator's admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateChain {
    /// The operator's certificate of the node.
    pub node: Certificate,
    /// The admission key's certificate of the operator, if the network needs one.
    pub admission: Option<Certificate>,
}

impl CertificateChain {
    /// The chain's text: one hex certificate per line, the node's first.
    pub fn to_text(&self) -> String {
        let mut out = hex::encode(self.node.to_bytes());
        out.push('\n');
        if let Some(a) = &self.admission {
            out.push_str(&hex::encode(a.to_bytes()));
            out.push('\n');
        }
        out
    }

    /// Parses a chain's text (bounded; blank lines ignored). The kinds are checked, the signatures not.
    pub fn from_text(text: &str) -> Result<CertificateChain, CertError> {
        if text.len() > MAX_CHAIN_TEXT_BYTES {
            return Err(CertError::Chain("longer than two certificates"));
        }
        let mut certs = Vec::with_capacity(MAX_CHAIN);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if certs.len() == MAX_CHAIN {
                return Err(CertError::Chain("more than two certificates"));
            }
            let bytes = hex::decode(line).map_err(|_| CertError::Chain("a line is not hex"))?;
            certs.push(Certificate::from_bytes(&bytes)?);
        }
        let mut certs = certs.into_iter();
        let node = certs.next().ok_or(CertError::Chain("no certificate"))?;
        let admission = certs.next();
        if node.kind != CertKind::Node {
            return Err(CertError::Unlinked("the first certificate is not a node's"));
        }
        if let Some(a) = &admission {
            if a.kind != CertKind::Operator || a.subject != node.issuer {
                return Err(CertError::Unlinked(
                    "the second certificate does not admit the node's operator",
                ));
            }
        }
        Ok(CertificateChain { node, admission })
    }

    /// Reads a chain file.
    pub fn load(path: &Path) -> Result<CertificateChain, NodeError> {
        let io = |source| NodeError::Io {
            what: "reading the operator certificate",
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_CHAIN_TEXT_BYTES as u64 {
            return Err(NodeError::Config(format!(
                "{}: {len} bytes, more than a certificate chain",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        CertificateChain::from_text(&text)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))
    }
}

/// Creates a fresh operator key in `dir` ([`OPERATOR_KEY_FILE`], mode 0600, exclusive create: never
/// overwriting a key, never following a planted link).
pub fn create_operator_key(dir: &Path) -> Result<Identity, NodeError> {
    std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
        what: "creating the operator key's directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| NodeError::Identity("key generation failed".into()))?;
    let path = dir.join(OPERATOR_KEY_FILE);
    {
        use std::io::Write;
        let mut f = create_new_private(&path)?;
        f.write_all(doc.as_ref())
            .and_then(|()| f.sync_all())
            .map_err(|source| NodeError::Io {
                what: "writing the operator key",
                path: path.clone(),
                source,
            })?;
    }
    Identity::from_pkcs8(doc.as_ref().to_vec())
}

/// Largest operator key file read, bytes (an Ed25519 PKCS#8 document is 83 or 85 bytes).
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Reads an operator (or admission) key file (owner-only, bounded: see `secret_file`).
pub fn load_operator_key(path: &Path) -> Result<Identity, NodeError> {
    Identity::from_pkcs8(read_secret(path, MAX_KEY_FILE_BYTES)?)
}

/// Unix time in seconds.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_cert(operator: &Identity, node: PublicKey, expires: u64) -> Certificate {
        Certificate::issue(
            operator,
            CertKind::Node,
            node,
            expires,
            Some("eu-west".into()),
            Some(64512),
        )
        .unwrap()
    }

    #[test]
    fn a_certificate_round_trips_verifies_and_refuses_tampering_and_expiry() {
        let operator = Identity::generate().unwrap();
        let node = Identity::generate().unwrap().public_key();
        let cert = node_cert(&operator, node, 2_000);
        let bytes = cert.to_bytes();
        // version, kind, two keys, expiry, region (1 + 7), asn (1 + 4), signature
        assert_eq!(bytes.len(), 1 + 1 + 32 + 32 + 8 + 8 + 5 + 64);
        let back = Certificate::from_bytes(&bytes).unwrap();
        assert_eq!(back, cert);
        back.verify(1_999).unwrap();
        assert_eq!(
            back.verify(2_000),
            Err(CertError::Expired {
                expires_at_s: 2_000,
                now_s: 2_000
            })
        );
        // Any flipped byte of the body or signature breaks the signature (or the decoding).
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let refused = Certificate::from_bytes(&bad).and_then(|c| c.verify(0));
            assert!(refused.is_err(), "byte {i}");
        }
        // Length bounds.
        assert_eq!(
            Certificate::from_bytes(&bytes[..bytes.len() - 1]),
            Err(CertError::Truncated)
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Certificate::from_bytes(&long),
            Err(CertError::TooLong { .. })
        ));
        assert!(matches!(
            Certificate::from_bytes(&vec![1; MAX_CERT_BYTES + 1]),
            Err(CertError::TooLong { .. })
        ));
    }

    #[test]
    fn a_chain_links_the_node_to_its_admitted_operator() {
        let admission = Identity::generate().unwrap();
        let operator = Identity::generate().unwrap();
        let node = Identity::generate().unwrap().public_key();
        let admit = Certificate::issue(
            &admission,
            CertKind::Operator,
            operator.public_key(),
            5_000,
            None,
            None,
        )
        .unwrap();
        let chain = CertificateChain {
            node: node_cert(&operator, node, 5_000),
            admission: Some(admit.clone()),
        };
        assert_eq!(
            CertificateChain::from_text(&chain.to_text()).unwrap(),
            chain
        );
        // An admission of another operator does not link.
        let stranger = Identity::generate().unwrap();
        let other = CertificateChain {
            node: node_cert(&stranger, node, 5_000),
            admission: Some(admit),
        };
        assert!(matches!(
            CertificateChain::from_text(&other.to_text()),
            Err(CertError::Unlinked(_))
        ));
        assert!(CertificateChain::from_text("").is_err());
        assert!(CertificateChain::from_text("zz\n").is_err());
    }

    #[test]
    fn an_operator_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = create_operator_key(dir.path()).unwrap();
        let path = dir.path().join(OPERATOR_KEY_FILE);
        assert_eq!(
            load_operator_key(&path).unwrap().public_key(),
            key.public_key()
        );
        assert!(
            create_operator_key(dir.path()).is_err(),
            "never overwritten"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
