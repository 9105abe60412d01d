//! Signed evidence: every blob a committee member hands to the coordinator for someone else (a party's
//! sealed output report and its MAC-check transcript, the dealer's sealed owner material) travels with its
//! producer's Ed25519 signature, so that whoever relays or stores it (the coordinator, its blob directory)
//! cannot substitute it.
//!
//! # What is signed
//! An [`EvidenceRecord`] states: this *kind* of evidence, for this *run* (SHA-256 of the coordinator-signed
//! manifest's bytes, which names the job, the attempt and the whole committee), from the member at this
//! *index* (party `i`, or the dealer at index `parties`), has this *digest* (SHA-256 of the exact bytes
//! handed over: the ciphertext for outputs and owner material, the encoded views for transcripts). The
//! signature covers [`EvidenceRecord::signing_bytes`]: [`EVIDENCE_DOMAIN`], kind (u8), run (32), index (u32
//! LE), digest (32).
//!
//! # Who checks
//! - The verifier opens every party's transcript and output, and the dealer's owner material, with [`open`]
//!   against the manifest's keys before it looks at a view, and commits to the records in the receipt
//!   ([`records_hash`], see [`crate::receipt`]); [`check_records`] re-checks them from a receipt file alone
//!   (`veil verify`), and requires the dealer's record when the manifest names a dealer (`rep3m` has
//!   none), so a receipt binds the owner material the dealer signed (a client holding a receipt can compare the record's digest with the owner blob it was given).
//! - The client opens the dealer's owner material and every party's output with [`open`] before it uses a
//!   byte of them.
//!
//! Invariants: [`open`] returns a body only if its digest and signature check for exactly the expected kind,
//! run, index and signer; it never panics on input and bounds the body by the caller's limit; a record whose
//! signature is not 64 bytes does not parse. Digests and keys are public: plain comparisons leak nothing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::identity::{Identity, PublicKey};
use crate::manifest::{Manifest, SignedManifest};

/// Domain separation of evidence signatures.
pub const EVIDENCE_DOMAIN: &[u8] = b"veil/evidence/v1\0";
/// Domain separation of the hash over a list of records.
pub const RECORDS_DOMAIN: &[u8] = b"veil/evidence-records/v1\0";
/// Bytes of signed framing around a body ([`open`] accepts bodies up to the caller's limit plus this).
pub const FRAMING_BYTES: usize = 256;

/// What a piece of evidence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EvidenceKind {
    /// The dealer's owner material, sealed to the client (index = number of parties).
    OwnerMaterial,
    /// A party's MAC-check views, encoded (postcard).
    Transcript,
    /// A party's output report, sealed to the client.
    Output,
}

impl EvidenceKind {
    fn tag(self) -> u8 {
        match self {
            EvidenceKind::OwnerMaterial => 1,
            EvidenceKind::Transcript => 2,
            EvidenceKind::Output => 3,
        }
    }

    /// The lowercase name (receipt files use it).
    pub fn name(self) -> &'static str {
        match self {
            EvidenceKind::OwnerMaterial => "owner",
            EvidenceKind::Transcript => "transcript",
            EvidenceKind::Output => "output",
        }
    }

    /// Parses [`EvidenceKind::name`].
    pub fn parse(s: &str) -> Option<EvidenceKind> {
        match s {
            "owner" => Some(EvidenceKind::OwnerMaterial),
            "transcript" => Some(EvidenceKind::Transcript),
            "output" => Some(EvidenceKind::Output),
            _ => None,
        }
    }
}

/// Why evidence is refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EvidenceError {
    /// The signed blob does not decode.
    #[error("the signed {kind:?} blob of member {index} does not decode")]
    Malformed {
        /// What was expected.
        kind: EvidenceKind,
        /// From whom.
        index: u32,
    },
    /// The body is larger than the caller allows.
    #[error("the {kind:?} blob of member {index} is {len} bytes, more than {max}")]
    TooLarge {
        /// What was expected.
        kind: EvidenceKind,
        /// From whom.
        index: u32,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record names another kind or member than expected (a blob moved to another slot).
    #[error("a {got_kind:?} record of member {got_index} was handed over as the {kind:?} of member {index}")]
    WrongSlot {
        /// What was expected.
        kind: EvidenceKind,
        /// From whom.
        index: u32,
        /// The record's kind.
        got_kind: EvidenceKind,
        /// The record's index.
        got_index: u32,
    },
    /// The body's digest is not the signed one (the body was substituted).
    #[error("the {kind:?} of member {index} is not the one its producer signed")]
    DigestMismatch {
        /// What.
        kind: EvidenceKind,
        /// From whom.
        index: u32,
    },
    /// The signature does not verify under the member's key (substituted record, other run, other signer).
    #[error("the signature on the {kind:?} of member {index} does not verify under its key")]
    BadSignature {
        /// What.
        kind: EvidenceKind,
        /// From whom.
        index: u32,
    },
    /// The index names no member of the manifest.
    #[error("member {index} is not on the committee")]
    NoSuchMember {
        /// The index.
        index: u32,
    },
    /// A record the run needs is missing, or one is there twice.
    #[error("the evidence has {got} {kind:?} record(s) for member {index}, exactly one expected")]
    Incomplete {
        /// What.
        kind: EvidenceKind,
        /// For whom.
        index: u32,
        /// How many there are.
        got: usize,
    },
    /// The manifest does not encode.
    #[error("the manifest does not encode")]
    Manifest,
}

/// One signed statement about one blob (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// What it is.
    pub kind: EvidenceKind,
    /// Its producer's index: party `i`, or the dealer at `parties`.
    pub index: u32,
    /// SHA-256 of the blob.
    pub digest: [u8; 32],
    /// The producer's Ed25519 signature over [`EvidenceRecord::signing_bytes`].
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: Vec<u8> = Deserialize::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("an Ed25519 signature is 64 bytes"))
    }
}

impl EvidenceRecord {
    /// The bytes signed for a record of `kind`, `index` and `digest` in run `run`.
    pub fn signing_bytes(
        kind: EvidenceKind,
        run: &[u8; 32],
        index: u32,
        digest: &[u8; 32],
    ) -> Vec<u8> {
        let mut b = Vec::with_capacity(EVIDENCE_DOMAIN.len() + 1 + 32 + 4 + 32);
        b.extend_from_slice(EVIDENCE_DOMAIN);
        b.push(kind.tag());
        b.extend_from_slice(run);
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(digest);
        b
    }

    /// Checks the signature under `key` for run `run`.
    pub fn verify(&self, run: &[u8; 32], key: &PublicKey) -> Result<(), EvidenceError> {
        let bytes = Self::signing_bytes(self.kind, run, self.index, &self.digest);
        if key.verify(&bytes, &self.signature) {
            Ok(())
        } else {
            Err(EvidenceError::BadSignature {
                kind: self.kind,
                index: self.index,
            })
        }
    }
}

/// The run id evidence is bound to: SHA-256 of the signed manifest's bytes (the receipt's manifest hash).
pub fn run_id(manifest: &SignedManifest) -> Result<[u8; 32], EvidenceError> {
    crate::receipt::manifest_hash(manifest).map_err(|_| EvidenceError::Manifest)
}

/// Signs `body` as `kind` evidence of member `index` in run `run`.
pub fn sign(
    identity: &Identity,
    kind: EvidenceKind,
    run: &[u8; 32],
    index: u32,
    body: &[u8],
) -> EvidenceRecord {
    let digest: [u8; 32] = Sha256::digest(body).into();
    let sig = identity.sign(&EvidenceRecord::signing_bytes(kind, run, index, &digest));
    let mut signature = [0u8; 64];
    // Ed25519 signatures are 64 bytes (RFC 8032); `Identity::sign` returns exactly that.
    signature.copy_from_slice(&sig[..64.min(sig.len())]);
    EvidenceRecord {
        kind,
        index,
        digest,
        signature,
    }
}

/// The wire form of a signed blob: the record, then the body (postcard).
#[derive(Serialize, Deserialize)]
struct SignedBlob {
    record: EvidenceRecord,
    body: Vec<u8>,
}

/// Signs `body` and wraps it for the coordinator (see [`open`]).
pub fn seal(
    identity: &Identity,
    kind: EvidenceKind,
    run: &[u8; 32],
    index: u32,
    body: Vec<u8>,
) -> Vec<u8> {
    let record = sign(identity, kind, run, index, &body);
    // Encoding a struct of a record and a byte vector into a vector cannot fail.
    postcard::to_stdvec(&SignedBlob { record, body }).unwrap_or_default()
}

/// Decodes a signed blob that fills `bytes` exactly: trailing bytes would let one signed blob travel in many
/// encodings, so they are refused.
fn decode_exact(bytes: &[u8]) -> Option<SignedBlob> {
    match postcard::take_from_bytes::<SignedBlob>(bytes) {
        Ok((blob, [])) => Some(blob),
        _ => None,
    }
}

/// Opens a signed blob expected to be `kind` evidence of member `index` (signed by `key`) in run `run`, with
/// a body of at most `max_body` bytes. Returns the body and its record.
pub fn open(
    bytes: &[u8],
    kind: EvidenceKind,
    run: &[u8; 32],
    index: u32,
    key: &PublicKey,
    max_body: usize,
) -> Result<(Vec<u8>, EvidenceRecord), EvidenceError> {
    let limit = max_body.saturating_add(FRAMING_BYTES);
    if bytes.len() > limit {
        return Err(EvidenceError::TooLarge {
            kind,
            index,
            len: bytes.len(),
            max: limit,
        });
    }
    let blob = decode_exact(bytes).ok_or(EvidenceError::Malformed { kind, index })?;
    let r = blob.record;
    if r.kind != kind || r.index != index {
        return Err(EvidenceError::WrongSlot {
            kind,
            index,
            got_kind: r.kind,
            got_index: r.index,
        });
    }
    let digest: [u8; 32] = Sha256::digest(&blob.body).into();
    if digest != r.digest {
        return Err(EvidenceError::DigestMismatch { kind, index });
    }
    r.verify(run, key)?;
    Ok((blob.body, r))
}

/// The body of a signed blob *without* checking its signature: only for a holder that received the blob
/// from its producer over an authenticated channel (the coordinator re-checking the transcripts its
/// parties uploaded). Bounded like [`open`]; `None` if it does not decode or its digest does not match.
pub fn body_from_producer(bytes: &[u8], max_body: usize) -> Option<(Vec<u8>, EvidenceRecord)> {
    if bytes.len() > max_body.saturating_add(FRAMING_BYTES) {
        return None;
    }
    let blob = decode_exact(bytes)?;
    let digest: [u8; 32] = Sha256::digest(&blob.body).into();
    (digest == blob.record.digest).then_some((blob.body, blob.record))
}

/// The key of member `index`: party `i`, or the dealer at `parties.len()`.
pub fn member_key(manifest: &Manifest, index: u32) -> Result<PublicKey, EvidenceError> {
    let i = index as usize;
    if i < manifest.parties.len() {
        Ok(manifest.parties[i].public_key)
    } else if let Some(dealer) = manifest
        .dealer
        .as_ref()
        .filter(|_| i == manifest.parties.len())
    {
        Ok(dealer.public_key)
    } else {
        Err(EvidenceError::NoSuchMember { index })
    }
}

/// `SHA-256(RECORDS_DOMAIN || count u32 LE || (tag u8 || index u32 LE || digest || signature)*)`: what a
/// receipt commits to.
pub fn records_hash(records: &[EvidenceRecord]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(RECORDS_DOMAIN);
    h.update((records.len() as u32).to_le_bytes());
    for r in records {
        h.update([r.kind.tag()]);
        h.update(r.index.to_le_bytes());
        h.update(r.digest);
        h.update(r.signature);
    }
    h.finalize().into()
}

/// Checks a receipt's evidence against its manifest: every record's signature verifies under its member's
/// key for run `run`, each party has exactly one transcript record and one output record, and the dealer
/// (index = number of parties), if the manifest names one, exactly one owner-material record: so a receipt
/// binds the dealer's signed owner material as well as the parties' outputs and views. (A record for a
/// dealer the manifest does not name has no key and is refused.)
pub fn check_records(
    records: &[EvidenceRecord],
    manifest: &Manifest,
    run: &[u8; 32],
) -> Result<(), EvidenceError> {
    for r in records {
        r.verify(run, &member_key(manifest, r.index)?)?;
    }
    let parties = manifest.parties.len() as u32;
    let needed = (0..parties)
        .flat_map(|i| [(EvidenceKind::Transcript, i), (EvidenceKind::Output, i)])
        .chain(
            manifest
                .dealer
                .is_some()
                .then_some((EvidenceKind::OwnerMaterial, parties)),
        );
    for (kind, index) in needed {
        let got = records
            .iter()
            .filter(|r| r.kind == kind && r.index == index)
            .count();
        if got != 1 {
            return Err(EvidenceError::Incomplete { kind, index, got });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_blob_opens_only_in_its_slot_and_unchanged() {
        let party = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let run = [7u8; 32];
        let body = b"sealed output".to_vec();
        let blob = seal(&party, EvidenceKind::Output, &run, 1, body.clone());
        let key = party.public_key();
        let (got, record) = open(&blob, EvidenceKind::Output, &run, 1, &key, 1 << 20).unwrap();
        assert_eq!(got, body);
        assert_eq!(record.index, 1);

        // Another slot, another run, another signer, a substituted body, a forged record.
        assert!(matches!(
            open(&blob, EvidenceKind::Output, &run, 0, &key, 1 << 20),
            Err(EvidenceError::WrongSlot { .. })
        ));
        assert!(matches!(
            open(&blob, EvidenceKind::Transcript, &run, 1, &key, 1 << 20),
            Err(EvidenceError::WrongSlot { .. })
        ));
        assert!(matches!(
            open(&blob, EvidenceKind::Output, &[8; 32], 1, &key, 1 << 20),
            Err(EvidenceError::BadSignature { .. })
        ));
        assert!(matches!(
            open(
                &blob,
                EvidenceKind::Output,
                &run,
                1,
                &other.public_key(),
                1 << 20
            ),
            Err(EvidenceError::BadSignature { .. })
        ));
        let mut swapped: SignedBlob = postcard::from_bytes(&blob).unwrap();
        swapped.body = b"the coordinator's output".to_vec();
        let swapped_bytes = postcard::to_stdvec(&swapped).unwrap();
        assert_eq!(
            open(&swapped_bytes, EvidenceKind::Output, &run, 1, &key, 1 << 20).unwrap_err(),
            EvidenceError::DigestMismatch {
                kind: EvidenceKind::Output,
                index: 1
            }
        );
        // A coordinator that re-signs with its own key cannot pass as the party.
        let forged = seal(&other, EvidenceKind::Output, &run, 1, b"forged".to_vec());
        assert!(matches!(
            open(&forged, EvidenceKind::Output, &run, 1, &key, 1 << 20),
            Err(EvidenceError::BadSignature { .. })
        ));
        let big = seal(&party, EvidenceKind::Output, &run, 1, vec![0; 1_000]);
        assert!(open(&big, EvidenceKind::Output, &run, 1, &key, 1_000).is_ok());
        assert!(matches!(
            open(&big, EvidenceKind::Output, &run, 1, &key, 100),
            Err(EvidenceError::TooLarge { .. })
        ));
        assert!(matches!(
            open(&[1, 2, 3], EvidenceKind::Output, &run, 1, &key, 1 << 20),
            Err(EvidenceError::Malformed { .. })
        ));
    }

    #[test]
    fn records_hash_depends_on_every_field() {
        let id = Identity::generate().unwrap();
        let r = sign(&id, EvidenceKind::Transcript, &[1; 32], 0, b"views");
        let base = records_hash(&[r]);
        let mut changed = r;
        changed.signature[0] ^= 1;
        assert_ne!(records_hash(&[changed]), base);
        let mut changed = r;
        changed.index = 1;
        assert_ne!(records_hash(&[changed]), base);
        assert_ne!(records_hash(&[r, r]), base);
        assert_ne!(records_hash(&[]), base);
    }
}
