//! Envelopes: a share encrypted to exactly one recipient's X25519 key, bound to where it belongs.
//!
//! Construction (ECIES-style, ephemeral-static): the sender draws a fresh X25519 key pair `(e, E)`, computes
//! `Z = X25519(e, R)` for the recipient's public key `R`, derives a 256-bit key with HKDF-SHA256 (RFC 5869;
//! salt `E || R`, input `Z`, info [`KDF_LABEL`] followed by the purpose), and encrypts with AES-256-GCM under
//! a random 96-bit nonce. The associated data is the canonical encoding of the [`Binding`] (purpose, job id,
//! party index, model id), so a ciphertext moved to another job, party, model or purpose fails to open, as
//! does one encrypted to another recipient (other `Z`, and `R` is in the salt) or changed in any bit.
//!
//! Invariants: secrets are zeroised on drop ([`x25519_dalek::StaticSecret`] does it); an all-zero shared
//! secret (a low-order public key) is refused; [`open`] returns either the exact plaintext that was sealed for
//! this recipient and binding, or an error, never partial data; errors say what failed but never why a tag
//! failed (which would help an attacker).

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};

/// Domain-separation label of the key derivation.
pub const KDF_LABEL: &[u8] = b"veil/envelope/v1";

/// Largest plaintext sealed or opened, bytes (bounds what a peer can make a node allocate).
pub const MAX_PLAINTEXT: usize = 256 << 20;

/// What went wrong opening or sealing an envelope.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The tag did not verify: wrong recipient, wrong binding (job, party, model, purpose) or tampering.
    #[error("envelope does not open: it was not sealed for this key and {0}, or it was altered")]
    Rejected(String),
    /// The other side's public key is a low-order point.
    #[error("the public key is invalid (low order)")]
    WeakKey,
    /// A plaintext or ciphertext larger than [`MAX_PLAINTEXT`].
    #[error("envelope of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A key file that cannot be read or written.
    #[error("key file {path}: {what}")]
    KeyFile {
        /// The file.
        path: String,
        /// What failed.
        what: String,
    },
}

/// Why a sealed payload exists; part of the key derivation and the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A client's input share for one party.
    InputShare,
    /// A model owner's weight share for one party.
    WeightShare,
    /// A party's output share for the client.
    OutputShare,
    /// A dealer's `spdz2k` owner material (the client's masks and output MAC key) for the client.
    OwnerMaterial,
    /// A stage's party's re-randomised output share for one party of the next stage.
    Handoff,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::InputShare => b"input-share",
            Purpose::WeightShare => b"weight-share",
            Purpose::OutputShare => b"output-share",
            Purpose::OwnerMaterial => b"owner-material",
            Purpose::Handoff => b"stage-handoff",
        }
    }
}

/// Where a sealed payload belongs. Everything here is public; it is authenticated, not hidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Why it was sealed.
    pub purpose: Purpose,
    /// The job (or deployment) it belongs to.
    pub job: String,
    /// The committee position of the party it is for (or comes from, for outputs).
    pub party: u32,
    /// The model id.
    pub model: String,
}

impl Binding {
    /// Canonical, unambiguous encoding: length-prefixed fields.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.job.len() + self.model.len());
        for field in [
            KDF_LABEL,
            self.purpose.tag(),
            self.job.as_bytes(),
            &self.party.to_le_bytes(),
            self.model.as_bytes(),
        ] {
            out.extend_from_slice(&(field.len() as u64).to_le_bytes());
            out.extend_from_slice(field);
        }
        out
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} of party {} in job {} (model {})",
            self.purpose, self.party, self.job, self.model
        )
    }
}

/// An X25519 public key (hex in text formats).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealingKey(pub [u8; 32]);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKey({})", hex::encode(self.0))
    }
}

impl fmt::Display for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for SealingKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s).map_err(|e| format!("sealing key: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "sealing key: expected 32 bytes".to_string())?;
        Ok(SealingKey(arr))
    }
}

impl Serialize for SealingKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for SealingKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A recipient's X25519 secret key. Never logged (its `Debug` prints only the public key).
pub struct OpeningKey {
    secret: StaticSecret,
}

impl fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpeningKey(public {})", self.public())
    }
}

impl OpeningKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self {
            secret: StaticSecret::from(bytes),
        }
    }

    /// The public half, to which others seal.
    pub fn public(&self) -> SealingKey {
        SealingKey(DhPublic::from(&self.secret).to_bytes())
    }

    /// Loads the key at `path`, or creates it (owner-only permissions) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, EnvelopeError> {
        let err = |what: String| EnvelopeError::KeyFile {
            path: path.display().to_string(),
            what,
        };
        match crate::secret_file::read_secret(path, 32) {
            Ok(bytes) => {
                let arr: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| err(format!("expected 32 bytes, found {}", bytes.len())))?;
                Ok(Self {
                    secret: StaticSecret::from(arr),
                })
            }
            Err(e) if e.is_not_found() => {
                let key = Self::generate();
                crate::secret_file::write_secret(path, &key.secret.to_bytes())
                    .map_err(|e| err(e.to_string()))?;
                Ok(key)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// A sealed payload: the sender's ephemeral public key, the nonce and the ciphertext with its tag.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// AES-GCM nonce.
    pub nonce: [u8; 12],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

fn cipher(
    shared: &x25519_dalek::SharedSecret,
    ephemeral: &[u8; 32],
    recipient: &SealingKey,
    purpose: Purpose,
) -> Result<Aes256Gcm, EnvelopeError> {
    if !shared.was_contributory() {
        return Err(EnvelopeError::WeakKey);
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(&recipient.0);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes());
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    let info = [KDF_LABEL, b"/", purpose.tag()].concat();
    hk.expand(&info, key.as_mut())
        .map_err(|_| EnvelopeError::Rejected("key derivation failed".into()))?;
    Aes256Gcm::new_from_slice(key.as_ref())
        .map_err(|_| EnvelopeError::Rejected("key derivation failed".into()))
}

/// Seals `plaintext` to `recipient` for `binding`.
pub fn seal(
    recipient: &SealingKey,
    binding: &Binding,
    plaintext: &[u8],
) -> Result<Sealed, EnvelopeError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EnvelopeError::TooLarge(plaintext.len()));
    }
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let ephemeral_secret = StaticSecret::from(seed);
    let ephemeral = DhPublic::from(&ephemeral_secret).to_bytes();
    let shared = ephemeral_secret.diffie_hellman(&DhPublic::from(recipient.0));
    let aead = cipher(&shared, &ephemeral, recipient, binding.purpose)?;
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let aad = binding.encode();
    let ciphertext = aead
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| EnvelopeError::Rejected("encryption failed".into()))?;
    Ok(Sealed {
        ephemeral,
        nonce,
        ciphertext,
    })
}

/// Opens `sealed` with `key`, if it was sealed to `key`'s public half for `binding` and not altered.
pub fn open(
    key: &OpeningKey,
    binding: &Binding,
    sealed: &Sealed,
) -> Result<Vec<u8>, EnvelopeError> {
    if sealed.ciphertext.len() > MAX_PLAINTEXT + 16 {
        return Err(EnvelopeError::TooLarge(sealed.ciphertext.len()));
    }
    let shared = key.secret.diffie_hellman(&DhPublic::from(sealed.ephemeral));
    let aead = cipher(&shared, &sealed.ephemeral, &key.public(), binding.purpose)?;
    let aad = binding.encode();
    aead.decrypt(
        Nonce::from_slice(&sealed.nonce),
        Payload {
            msg: &sealed.ciphertext,
            aad: &aad,
        },
    )
    .map_err(|_| EnvelopeError::Rejected(binding.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            purpose: Purpose::InputShare,
            job: "job-1".into(),
            party: 2,
            model: "ab12".into(),
        }
    }

    #[test]
    fn round_trip() {
        let node = OpeningKey::generate();
        let msg = b"share bytes".to_vec();
        let sealed = seal(&node.public(), &binding(), &msg).unwrap();
        assert_eq!(open(&node, &binding(), &sealed).unwrap(), msg);
        assert_eq!(sealed.ciphertext.len(), msg.len() + 16);
        // Fresh ephemeral key and nonce each time.
        let again = seal(&node.public(), &binding(), &msg).unwrap();
        assert_ne!(again.ephemeral, sealed.ephemeral);
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let node = OpeningKey::generate();
        let sealed = seal(&node.public(), &binding(), &[7u8; 40]).unwrap();
        let bits = |s: &Sealed| (s.ephemeral.len() + s.nonce.len() + s.ciphertext.len()) * 8;
        for bit in 0..bits(&sealed) {
            let mut bad = sealed.clone();
            let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
            if byte < 32 {
                bad.ephemeral[byte] ^= mask;
            } else if byte < 44 {
                bad.nonce[byte - 32] ^= mask;
            } else {
                bad.ciphertext[byte - 44] ^= mask;
            }
            assert!(open(&node, &binding(), &bad).is_err(), "bit {bit}");
        }
        let mut short = sealed.clone();
        short.ciphertext.pop();
        assert!(open(&node, &binding(), &short).is_err());
    }

    #[test]
    fn wrong_recipient_or_binding_is_rejected() {
        let node = OpeningKey::generate();
        let other = OpeningKey::generate();
        let sealed = seal(&node.public(), &binding(), b"x").unwrap();
        assert!(matches!(
            open(&other, &binding(), &sealed),
            Err(EnvelopeError::Rejected(_))
        ));
        let variants = [
            Binding {
                job: "job-2".into(),
                ..binding()
            },
            Binding {
                party: 1,
                ..binding()
            },
            Binding {
                model: "ab13".into(),
                ..binding()
            },
            Binding {
                purpose: Purpose::WeightShare,
                ..binding()
            },
        ];
        for b in variants {
            assert!(open(&node, &b, &sealed).is_err(), "{b}");
        }
    }

    #[test]
    fn low_order_keys_are_refused() {
        let node = OpeningKey::generate();
        assert_eq!(
            seal(&SealingKey([0; 32]), &binding(), b"x").unwrap_err(),
            EnvelopeError::WeakKey
        );
        let mut sealed = seal(&node.public(), &binding(), b"x").unwrap();
        sealed.ephemeral = [0; 32];
        assert_eq!(
            open(&node, &binding(), &sealed).unwrap_err(),
            EnvelopeError::WeakKey
        );
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealing.key");
        let a = OpeningKey::load_or_create(&path).unwrap();
        let b = OpeningKey::load_or_create(&path).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key file must be private");
        }
        std::fs::write(&path, [1u8; 5]).unwrap();
        assert!(OpeningKey::load_or_create(&path).is_err());
        assert!(!format!("{a:?}").contains(&hex::encode(a.secret.to_bytes())));
    }
}
