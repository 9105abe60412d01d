//! Receipts: the verifier's Ed25519 signature that a job's MAC checks passed, over what the job was.
//!
//! A [`ReceiptBody`] names the job (the manifest's id), the model (32-byte id), the committee (SHA-256 of the
//! coordinator-signed manifest's bytes), the encrypted input and output (32-byte commitments, taken as
//! given: SHA-256 over the parties' ciphertext blobs in order, see [`commit_blobs`]), the protocol, the
//! digest of the MAC-check transcripts ([`crate::verifier::verify_job`]), the verifier's public key and the
//! issue time. Its signing bytes are canonical and domain-separated ([`ReceiptBody::signing_bytes`]).
//!
//! A [`ReceiptFile`] (JSON, hex fields) carries the receipt and the signed manifest, so that anyone holding
//! the coordinator's public key can check it ([`ReceiptFile::verify`], `veil verify`):
//! 1. the manifest's bytes hash to the receipt's manifest hash;
//! 2. the manifest is signed by the coordinator's key;
//! 3. the manifest names a verifier, and the receipt's signer is that verifier;
//! 4. the receipt's job, protocol and model id are the manifest's ([`model_id`]);
//! 5. the verifier's signature over the receipt's signing bytes verifies.
//!
//! Invariants: a receipt changed in any field fails (each field is in the signing bytes, and the signer and
//! the manifest are bound by steps 1-3); hashes and keys are compared in constant time; parsing a file is
//! bounded ([`MAX_RECEIPT_FILE_BYTES`], exact hex lengths, [`MAX_PROTOCOL_LEN`]) and never panics.
//! Signatures are Ed25519 (RFC 8032) with the node's identity key ([`crate::identity`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::evidence::{check_records, records_hash, EvidenceKind, EvidenceRecord};
use crate::identity::{Identity, PublicKey};
use crate::manifest::Protocol;
use crate::manifest::{Manifest, ModelSpec, SignedManifest};
use crate::verifier::{JobViews, VerifyError};
use crate::wire::JobId;

/// Domain separation of receipt signatures.
pub const RECEIPT_DOMAIN: &[u8] = b"veil receipt v2\0";
/// The `format` field of a receipt file.
pub const FILE_FORMAT: &str = "veil receipt v2";
/// Longest protocol name a receipt may carry.
pub const MAX_PROTOCOL_LEN: usize = 32;
/// Largest receipt file accepted, bytes.
pub const MAX_RECEIPT_FILE_BYTES: usize = 1 << 20;
/// Domain separation of [`model_id`] for built-in workloads.
pub const MODEL_ID_DOMAIN: &[u8] = b"veil model id v1\0";
/// Domain separation of [`commit_blobs`].
pub const BLOBS_DOMAIN: &[u8] = b"veil blobs v1\0";

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReceiptError {
    /// The file or a field does not parse, or is out of bounds.
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// The receipt's signer is not the key that signs it.
    #[error("the signing identity is not the receipt's verifier")]
    WrongSigner,
    /// The manifest in the file is not the one the receipt names.
    #[error("the manifest does not match the receipt's manifest hash")]
    ManifestHash,
    /// The manifest is not signed by the coordinator's key.
    #[error("the committee manifest is not signed by the coordinator: {0}")]
    ManifestSignature(String),
    /// The manifest names no verifier.
    #[error("the committee manifest names no verifier")]
    NoVerifier,
    /// The receipt is signed by a key other than the manifest's verifier.
    #[error("the receipt's signer is not the committee's verifier")]
    NotTheVerifier,
    /// The receipt's job or protocol is not the manifest's.
    #[error("the receipt's {0} is not the manifest's")]
    Mismatch(&'static str),
    /// The verifier's signature does not verify.
    #[error("the verifier's signature does not verify")]
    BadSignature,
    /// The evidence records are not the ones the receipt commits to, or one does not verify.
    #[error("evidence: {0}")]
    Evidence(#[from] crate::evidence::EvidenceError),
    /// The evidence records in the file do not hash to the receipt's evidence hash.
    #[error("the evidence records are not the ones the receipt commits to")]
    EvidenceHash,
    /// The MAC-check transcripts do not verify ([`crate::verifier`]): no receipt is issued.
    #[error("transcripts: {0}")]
    Transcripts(#[from] VerifyError),
    /// The dealer's owner material the receipt's evidence records is not the blob the client received
    /// (the dealer signed two different owner blobs for one run).
    #[error("the receipt records other owner material than the dealer sent this client")]
    OwnerMaterial,
}

/// What a verifier signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptBody {
    /// The job (the manifest's id).
    pub job: JobId,
    /// The model's id.
    pub model_id: [u8; 32],
    /// SHA-256 of the coordinator-signed manifest's bytes ([`manifest_hash`]).
    pub manifest_hash: [u8; 32],
    /// Commitment to the encrypted input (SHA-256 over the parties' input ciphertexts in order).
    pub input_commitment: [u8; 32],
    /// Commitment to the encrypted output (SHA-256 over the parties' output ciphertexts in order).
    pub output_commitment: [u8; 32],
    /// The protocol (`spdz2k`), at most [`MAX_PROTOCOL_LEN`] bytes.
    pub protocol: String,
    /// Digest of the job's MAC-check transcripts ([`crate::verifier::verify_job`]).
    pub transcript_hash: [u8; 32],
    /// Commitment to the parties' signatures on their transcripts and outputs
    /// ([`crate::evidence::records_hash`] over the file's evidence records, in order).
    pub evidence_hash: [u8; 32],
    /// The verifier's public key (the signer).
    pub verifier: PublicKey,
    /// Issue time, seconds since the Unix epoch.
    pub issued_at: u64,
}

impl ReceiptBody {
    /// The canonical signing bytes: [`RECEIPT_DOMAIN`], job (16), model id, manifest hash, input and output
    /// commitments (32 each), the protocol's length (u8) and bytes, transcript hash (32), evidence hash
    /// (32), verifier key (32), issue time (u64 LE). Fails for a protocol name longer than [`MAX_PROTOCOL_LEN`].
    pub fn signing_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        let protocol = self.protocol.as_bytes();
        if protocol.len() > MAX_PROTOCOL_LEN {
            return Err(ReceiptError::Malformed(format!(
                "protocol name of {} bytes (at most {MAX_PROTOCOL_LEN})",
                protocol.len()
            )));
        }
        let mut out = Vec::with_capacity(RECEIPT_DOMAIN.len() + 16 + 5 * 32 + 1 + 32 + 8 + 32);
        out.extend_from_slice(RECEIPT_DOMAIN);
        out.extend_from_slice(&self.job.0);
        out.extend_from_slice(&self.model_id);
        out.extend_from_slice(&self.manifest_hash);
        out.extend_from_slice(&self.input_commitment);
        out.extend_from_slice(&self.output_commitment);
        out.push(protocol.len() as u8);
        out.extend_from_slice(protocol);
        out.extend_from_slice(&self.transcript_hash);
        out.extend_from_slice(&self.evidence_hash);
        out.extend_from_slice(&self.verifier.0);
        out.extend_from_slice(&self.issued_at.to_le_bytes());
        Ok(out)
    }
}

/// A signed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// What is signed.
    pub body: ReceiptBody,
    /// The verifier's Ed25519 signature of `body.signing_bytes()`.
    pub signature: [u8; 64],
}

impl Receipt {
    /// Signs `body` with the verifier's `identity`, which must be `body.verifier`.
    pub fn sign(identity: &Identity, body: ReceiptBody) -> Result<Receipt, ReceiptError> {
        if !bool::from(identity.public_key().0.ct_eq(&body.verifier.0)) {
            return Err(ReceiptError::WrongSigner);
        }
        let signature = identity
            .sign(&body.signing_bytes()?)
            .try_into()
            .map_err(|_| ReceiptError::Malformed("an Ed25519 signature is 64 bytes".into()))?;
        Ok(Receipt { body, signature })
    }

    /// Whether the signature is `body.verifier`'s over the signing bytes (nothing else is checked: see
    /// [`Receipt::verify`]).
    pub fn verify_signature(&self) -> Result<(), ReceiptError> {
        let bytes = self.body.signing_bytes()?;
        if self.body.verifier.verify(&bytes, &self.signature) {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature)
        }
    }

    /// Checks this receipt against the signed committee `manifest` and the coordinator's key (steps 1-5 of
    /// the module doc); returns the manifest.
    pub fn verify(
        &self,
        manifest: &SignedManifest,
        coordinator: &PublicKey,
    ) -> Result<Manifest, ReceiptError> {
        let hash = manifest_hash(manifest)?;
        if !bool::from(hash.ct_eq(&self.body.manifest_hash)) {
            return Err(ReceiptError::ManifestHash);
        }
        let m = manifest
            .verify_by(coordinator)
            .map_err(|e| ReceiptError::ManifestSignature(e.to_string()))?;
        let verifier = m.verifier.as_ref().ok_or(ReceiptError::NoVerifier)?;
        if !bool::from(verifier.public_key.0.ct_eq(&self.body.verifier.0)) {
            return Err(ReceiptError::NotTheVerifier);
        }
        if m.job != self.body.job {
            return Err(ReceiptError::Mismatch("job"));
        }
        if m.protocol.name() != self.body.protocol {
            return Err(ReceiptError::Mismatch("protocol"));
        }
        if !bool::from(model_id(&m.model).ct_eq(&self.body.model_id)) {
            return Err(ReceiptError::Mismatch("model id"));
        }
        self.verify_signature()?;
        Ok(m)
    }
}

/// The 32-byte id of the manifest's model, as a receipt names it: a deployed model's id (its 64 hex digits
/// decoded), or `SHA-256(MODEL_ID_DOMAIN || "workload:seed")` for a built-in workload (or a deployed id
/// that is not 64 hex digits, which the members refuse anyway).
pub fn model_id(spec: &ModelSpec) -> [u8; 32] {
    if let Some(d) = &spec.deployed {
        let mut id = [0u8; 32];
        if hex::decode_to_slice(&d.id, &mut id).is_ok() {
            return id;
        }
    }
    let mut h = Sha256::new();
    h.update(MODEL_ID_DOMAIN);
    h.update(spec.binding_id().as_bytes());
    h.finalize().into()
}

/// SHA-256 of a signed manifest's bytes (its postcard encoding, as the coordinator hands it to members).
pub fn manifest_hash(manifest: &SignedManifest) -> Result<[u8; 32], ReceiptError> {
    let bytes = postcard::to_stdvec(manifest)
        .map_err(|e| ReceiptError::Malformed(format!("manifest: {e}")))?;
    Ok(Sha256::digest(&bytes).into())
}

/// A commitment to blobs in order (the parties' input or output ciphertexts):
/// `SHA-256(BLOBS_DOMAIN || count u32 LE || (len u64 LE || blob)*)`. Receipts take commitments as given; this
/// is one way to make them.
pub fn commit_blobs<'a>(blobs: impl ExactSizeIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BLOBS_DOMAIN);
    h.update((blobs.len() as u32).to_le_bytes());
    for b in blobs {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    }
    h.finalize().into()
}

/// The verifier node's work for a finished verified job (`spdz2k`, `rep3m`): checks that `coordinator`
/// signed `manifest` and that it names this `identity` as its verifier, checks the parties' check views
/// (decoded by the manifest's protocol, which they must match; one view per party of the manifest, one
/// check per inference) with [`JobViews::verify`], and signs a receipt over the job with the given
/// commitments to the encrypted input and output and issue time (Unix seconds). Fails, and signs nothing, if any check fails.
pub fn issue(
    identity: &Identity,
    coordinator: &PublicKey,
    manifest: &SignedManifest,
    transcripts: &JobViews,
    evidence: &[EvidenceRecord],
    [input_commitment, output_commitment]: [[u8; 32]; 2],
    issued_at: u64,
) -> Result<ReceiptFile, ReceiptError> {
    let m = manifest
        .verify_by(coordinator)
        .map_err(|e| ReceiptError::ManifestSignature(e.to_string()))?;
    let verifier = m.verifier.as_ref().ok_or(ReceiptError::NoVerifier)?;
    if !bool::from(verifier.public_key.0.ct_eq(&identity.public_key().0)) {
        return Err(ReceiptError::NotTheVerifier);
    }
    if transcripts.parties() != m.parties.len() {
        return Err(VerifyError::Committee {
            views: transcripts.parties(),
            parties: m.parties.len(),
        }
        .into());
    }
    let views_match = matches!(
        (transcripts, m.protocol),
        (JobViews::Spdz2k(_), Protocol::Spdz2k) | (JobViews::Rep3m(_), Protocol::Rep3m)
    );
    if !views_match {
        return Err(VerifyError::Unverified {
            protocol: m.protocol,
        }
        .into());
    }
    // One check per inference (each released output follows its check).
    let checks = m.inferences as usize;
    if let Some((party, &got)) = transcripts
        .checks()
        .iter()
        .enumerate()
        .find(|(_, &t)| t != checks)
    {
        return Err(VerifyError::CheckCount {
            party,
            got,
            expected: checks,
        }
        .into());
    }
    // The parties' signatures first: a view counts only if its party signed it for this run.
    check_records(evidence, &m, &manifest_hash(manifest)?)?;
    let digest = transcripts.verify()?;
    let body = ReceiptBody {
        job: m.job,
        model_id: model_id(&m.model),
        manifest_hash: manifest_hash(manifest)?,
        input_commitment,
        output_commitment,
        protocol: m.protocol.name().to_string(),
        transcript_hash: digest.0,
        evidence_hash: records_hash(evidence),
        verifier: identity.public_key(),
        issued_at,
    };
    Ok(ReceiptFile {
        receipt: Receipt::sign(identity, body)?,
        manifest: manifest.clone(),
        evidence: evidence.to_vec(),
    })
}

/// A receipt with the committee manifest it refers to: what `veil verify` reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptFile {
    /// The receipt.
    pub receipt: Receipt,
    /// The coordinator-signed committee manifest.
    pub manifest: SignedManifest,
    /// The parties' signed evidence records the receipt commits to (`evidence_hash`).
    pub evidence: Vec<EvidenceRecord>,
}

/// The most evidence records a file may carry (two per party, with room to spare).
pub const MAX_EVIDENCE_RECORDS: usize = 1_024;

/// One evidence record in a receipt file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceJson {
    kind: String,
    index: u32,
    digest: String,
    signature: String,
}

/// The JSON form: every byte field in lowercase hex, the manifest as the hex of its postcard bytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptJson {
    format: String,
    job: String,
    model_id: String,
    manifest_hash: String,
    input_commitment: String,
    output_commitment: String,
    protocol: String,
    transcript_hash: String,
    evidence_hash: String,
    verifier: String,
    issued_at: u64,
    signature: String,
    manifest: String,
    evidence: Vec<EvidenceJson>,
}

fn from_hex<const L: usize>(field: &'static str, text: &str) -> Result<[u8; L], ReceiptError> {
    let mut out = [0u8; L];
    if text.len() != 2 * L {
        return Err(ReceiptError::Malformed(format!(
            "{field}: {} hex digits where {} were expected",
            text.len(),
            2 * L
        )));
    }
    hex::decode_to_slice(text, &mut out)
        .map_err(|e| ReceiptError::Malformed(format!("{field}: {e}")))?;
    Ok(out)
}

impl ReceiptFile {
    /// The file's JSON text (pretty-printed).
    pub fn to_json(&self) -> Result<String, ReceiptError> {
        let b = &self.receipt.body;
        let manifest = postcard::to_stdvec(&self.manifest)
            .map_err(|e| ReceiptError::Malformed(format!("manifest: {e}")))?;
        let json = ReceiptJson {
            format: FILE_FORMAT.into(),
            job: hex::encode(b.job.0),
            model_id: hex::encode(b.model_id),
            manifest_hash: hex::encode(b.manifest_hash),
            input_commitment: hex::encode(b.input_commitment),
            output_commitment: hex::encode(b.output_commitment),
            protocol: b.protocol.clone(),
            transcript_hash: hex::encode(b.transcript_hash),
            evidence_hash: hex::encode(b.evidence_hash),
            verifier: hex::encode(b.verifier.0),
            issued_at: b.issued_at,
            signature: hex::encode(self.receipt.signature),
            manifest: hex::encode(manifest),
            evidence: self
                .evidence
                .iter()
                .map(|r| EvidenceJson {
                    kind: r.kind.name().into(),
                    index: r.index,
                    digest: hex::encode(r.digest),
                    signature: hex::encode(r.signature),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&json).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// Parses a file's JSON text; bounded (see the module doc). Checks the form only: call
    /// [`ReceiptFile::verify`] before trusting it.
    pub fn from_json(text: &str) -> Result<ReceiptFile, ReceiptError> {
        if text.len() > MAX_RECEIPT_FILE_BYTES {
            return Err(ReceiptError::Malformed(format!(
                "{} bytes (at most {MAX_RECEIPT_FILE_BYTES})",
                text.len()
            )));
        }
        let j: ReceiptJson =
            serde_json::from_str(text).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        if j.format != FILE_FORMAT {
            return Err(ReceiptError::Malformed(format!(
                "format {:?} (this build reads {FILE_FORMAT:?})",
                j.format
            )));
        }
        if j.protocol.len() > MAX_PROTOCOL_LEN {
            return Err(ReceiptError::Malformed("protocol name too long".into()));
        }
        let manifest_bytes = hex::decode(&j.manifest)
            .map_err(|e| ReceiptError::Malformed(format!("manifest: {e}")))?;
        let manifest: SignedManifest = postcard::from_bytes(&manifest_bytes)
            .map_err(|e| ReceiptError::Malformed(format!("manifest: {e}")))?;
        let body = ReceiptBody {
            job: JobId(from_hex("job", &j.job)?),
            model_id: from_hex("model_id", &j.model_id)?,
            manifest_hash: from_hex("manifest_hash", &j.manifest_hash)?,
            input_commitment: from_hex("input_commitment", &j.input_commitment)?,
            output_commitment: from_hex("output_commitment", &j.output_commitment)?,
            protocol: j.protocol,
            transcript_hash: from_hex("transcript_hash", &j.transcript_hash)?,
            evidence_hash: from_hex("evidence_hash", &j.evidence_hash)?,
            verifier: PublicKey(from_hex("verifier", &j.verifier)?),
            issued_at: j.issued_at,
        };
        if j.evidence.len() > MAX_EVIDENCE_RECORDS {
            return Err(ReceiptError::Malformed(format!(
                "{} evidence records (at most {MAX_EVIDENCE_RECORDS})",
                j.evidence.len()
            )));
        }
        let evidence = j
            .evidence
            .iter()
            .map(|e| {
                Ok(EvidenceRecord {
                    kind: EvidenceKind::parse(&e.kind).ok_or_else(|| {
                        ReceiptError::Malformed(format!("evidence kind {:?}", e.kind))
                    })?,
                    index: e.index,
                    digest: from_hex("evidence digest", &e.digest)?,
                    signature: from_hex("evidence signature", &e.signature)?,
                })
            })
            .collect::<Result<Vec<_>, ReceiptError>>()?;
        Ok(ReceiptFile {
            evidence,
            receipt: Receipt {
                body,
                signature: from_hex("signature", &j.signature)?,
            },
            manifest,
        })
    }

    /// Checks that the dealer's owner material record among the evidence (member index `parties`, the
    /// dealer) has `digest`, the digest of the signed owner blob the client received and used: a dealer
    /// that gave the client one set of masks and recorded another for the verifier is caught here. Call
    /// after [`ReceiptFile::verify`] (which checks the record's signature).
    pub fn check_owner(&self, parties: usize, digest: &[u8; 32]) -> Result<(), ReceiptError> {
        let recorded = self
            .evidence
            .iter()
            .find(|r| r.kind == EvidenceKind::OwnerMaterial && r.index as usize == parties);
        match recorded {
            Some(r) if bool::from(r.digest.ct_eq(digest)) => Ok(()),
            _ => Err(ReceiptError::OwnerMaterial),
        }
    }

    /// Checks the receipt against its manifest and the coordinator's key ([`Receipt::verify`]), then its
    /// evidence: the records hash to the receipt's evidence hash, and every party's transcript and output
    /// record carries that party's signature for this run ([`check_records`]).
    pub fn verify(&self, coordinator: &PublicKey) -> Result<Manifest, ReceiptError> {
        let m = self.receipt.verify(&self.manifest, coordinator)?;
        if records_hash(&self.evidence) != self.receipt.body.evidence_hash {
            return Err(ReceiptError::EvidenceHash);
        }
        check_records(&self.evidence, &m, &self.receipt.body.manifest_hash)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::manifest::Member;
    use veil_protocols::spdz2k::transcript::CheckTranscript;

    struct Fixture {
        coordinator: Identity,
        verifier: Identity,
        /// Party 0, party 1, the dealer.
        nodes: Vec<Identity>,
        file: ReceiptFile,
    }

    /// Each party's signed transcript and output records for run `run`, then the dealer's owner record.
    fn records(nodes: &[Identity], run: &[u8; 32]) -> Vec<EvidenceRecord> {
        use crate::evidence::sign;
        let mut records: Vec<EvidenceRecord> = (0..2u32)
            .flat_map(|i| {
                let id = &nodes[i as usize];
                [
                    sign(id, EvidenceKind::Transcript, run, i, b"views"),
                    sign(id, EvidenceKind::Output, run, i, b"sealed output"),
                ]
            })
            .collect();
        records.push(sign(
            &nodes[2],
            EvidenceKind::OwnerMaterial,
            run,
            2,
            b"sealed owner",
        ));
        records
    }

    fn member(id: &Identity, port: u16) -> Member {
        Member {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            public_key: id.public_key(),
        }
    }

    /// A manifest of `nodes` (two parties, then the dealer) for `coordinator` (built from JSON: optional
    /// fields left out are `None`).
    fn manifest(
        coordinator: &Identity,
        verifier: Option<&Identity>,
        nodes: &[Identity],
    ) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "job": (JobId([7; 16])),
            "protocol": "spdz2k",
            "model": {"workload": "network-a", "seed": 7, "weights": "Shared", "frac_bits": 16},
            "batch": 1,
            "inferences": 1,
            "parties": [member(&nodes[0], 1), member(&nodes[1], 2)],
            "dealer": member(&nodes[2], 3),
            "client": coordinator.public_key(),
        }))
        .expect("manifest fixture");
        m.verifier = verifier.map(|v| member(v, 4));
        m
    }

    fn fixture() -> Fixture {
        let coordinator = Identity::generate().unwrap();
        let verifier = Identity::generate().unwrap();
        let nodes: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
        let m = manifest(&coordinator, Some(&verifier), &nodes);
        let signed = m.sign(&coordinator).unwrap();
        let evidence = records(&nodes, &manifest_hash(&signed).unwrap());
        let body = ReceiptBody {
            job: JobId([7; 16]),
            model_id: model_id(&m.model),
            manifest_hash: manifest_hash(&signed).unwrap(),
            input_commitment: commit_blobs([&b"in0"[..], b"in1"].into_iter()),
            output_commitment: commit_blobs([&b"out0"[..], b"out1"].into_iter()),
            protocol: "spdz2k".into(),
            transcript_hash: [5; 32],
            evidence_hash: records_hash(&evidence),
            verifier: verifier.public_key(),
            issued_at: 1_790_000_000,
        };
        let receipt = Receipt::sign(&verifier, body).unwrap();
        Fixture {
            coordinator,
            verifier,
            nodes,
            file: ReceiptFile {
                receipt,
                manifest: signed,
                evidence,
            },
        }
    }

    #[test]
    fn a_good_receipt_passes_and_round_trips_through_json() {
        let f = fixture();
        let m = f.file.verify(&f.coordinator.public_key()).unwrap();
        assert_eq!(m.job, JobId([7; 16]));
        let text = f.file.to_json().unwrap();
        let back = ReceiptFile::from_json(&text).unwrap();
        assert_eq!(back, f.file);
        back.verify(&f.coordinator.public_key()).unwrap();
    }

    /// Every field of the receipt, changed one at a time (by one bit where it is bytes), fails.
    #[test]
    fn a_receipt_changed_in_any_field_fails() {
        let f = fixture();
        let key = f.coordinator.public_key();
        let other = Identity::generate().unwrap().public_key();
        type Change = fn(&mut ReceiptFile, PublicKey);
        let changes: Vec<(&str, Change)> = vec![
            ("job", |r, _| r.receipt.body.job.0[0] ^= 1),
            ("model_id", |r, _| r.receipt.body.model_id[31] ^= 1),
            ("manifest_hash", |r, _| r.receipt.body.manifest_hash[3] ^= 1),
            ("input_commitment", |r, _| {
                r.receipt.body.input_commitment[0] ^= 0x80
            }),
            ("output_commitment", |r, _| {
                r.receipt.body.output_commitment[9] ^= 1
            }),
            ("protocol", |r, _| r.receipt.body.protocol = "semi2k".into()),
            ("transcript_hash", |r, _| {
                r.receipt.body.transcript_hash[0] ^= 1
            }),
            ("evidence_hash", |r, _| r.receipt.body.evidence_hash[0] ^= 1),
            ("evidence signature", |r, _| r.evidence[1].signature[0] ^= 1),
            ("evidence digest", |r, _| r.evidence[2].digest[0] ^= 1),
            ("evidence dropped", |r, _| {
                r.evidence.pop();
            }),
            ("verifier", |r, k| r.receipt.body.verifier = k),
            ("issued_at", |r, _| r.receipt.body.issued_at += 1),
            ("signature", |r, _| r.receipt.signature[10] ^= 1),
            ("manifest body", |r, _| {
                let last = r.manifest.body.0.len() - 1;
                r.manifest.body.0[last] ^= 1
            }),
            ("manifest signature", |r, _| r.manifest.signature.0[0] ^= 1),
        ];
        for (field, change) in changes {
            let mut t = f.file.clone();
            change(&mut t, other);
            assert!(t.verify(&key).is_err(), "{field} changed, still verifies");
            // And through the JSON form, as `veil verify` reads it.
            if let Ok(text) = t.to_json() {
                if let Ok(parsed) = ReceiptFile::from_json(&text) {
                    assert!(parsed.verify(&key).is_err(), "{field} (JSON)");
                }
            }
        }
    }

    #[test]
    fn the_owner_record_must_be_the_owner_blob_the_client_received() {
        let f = fixture();
        f.file.verify(&f.coordinator.public_key()).unwrap();
        let received: [u8; 32] = Sha256::digest(b"sealed owner").into();
        f.file.check_owner(2, &received).unwrap();
        // Other masks than the ones recorded, or the record looked up at a party's index.
        let other: [u8; 32] = Sha256::digest(b"other owner").into();
        assert_eq!(
            f.file.check_owner(2, &other),
            Err(ReceiptError::OwnerMaterial)
        );
        assert_eq!(
            f.file.check_owner(1, &received),
            Err(ReceiptError::OwnerMaterial)
        );
        // A receipt without the owner record.
        let mut t = f.file.clone();
        t.evidence.retain(|r| r.kind != EvidenceKind::OwnerMaterial);
        assert_eq!(
            t.check_owner(2, &received),
            Err(ReceiptError::OwnerMaterial)
        );
    }

    #[test]
    fn only_the_committees_verifier_may_sign() {
        let f = fixture();
        let key = f.coordinator.public_key();
        // Another key signs a receipt naming itself: a valid signature, but not the manifest's verifier.
        let impostor = Identity::generate().unwrap();
        let mut body = f.file.receipt.body.clone();
        body.verifier = impostor.public_key();
        let forged = ReceiptFile {
            receipt: Receipt::sign(&impostor, body).unwrap(),
            manifest: f.file.manifest.clone(),
            evidence: f.file.evidence.clone(),
        };
        forged.receipt.verify_signature().unwrap();
        assert_eq!(forged.verify(&key), Err(ReceiptError::NotTheVerifier));
        // Another key signs a body naming the real verifier.
        let body = f.file.receipt.body.clone();
        assert_eq!(
            Receipt::sign(&impostor, body.clone()),
            Err(ReceiptError::WrongSigner)
        );
        let forged = ReceiptFile {
            receipt: Receipt {
                signature: impostor
                    .sign(&body.signing_bytes().unwrap())
                    .try_into()
                    .unwrap(),
                body,
            },
            manifest: f.file.manifest.clone(),
            evidence: f.file.evidence.clone(),
        };
        assert_eq!(forged.verify(&key), Err(ReceiptError::BadSignature));
        // The right receipt, checked against another coordinator key.
        assert!(matches!(
            f.file.verify(&impostor.public_key()),
            Err(ReceiptError::ManifestSignature(_))
        ));
        // A manifest without a verifier.
        let signed = manifest(&f.coordinator, None, &f.nodes)
            .sign(&f.coordinator)
            .unwrap();
        let mut body = f.file.receipt.body.clone();
        body.manifest_hash = manifest_hash(&signed).unwrap();
        let file = ReceiptFile {
            receipt: Receipt::sign(&f.verifier, body).unwrap(),
            manifest: signed,
            evidence: f.file.evidence.clone(),
        };
        assert_eq!(file.verify(&key), Err(ReceiptError::NoVerifier));
    }

    #[test]
    fn the_model_id_is_the_manifests() {
        let f = fixture();
        let key = f.coordinator.public_key();
        let mut m = manifest(&f.coordinator, Some(&f.verifier), &f.nodes);
        assert_eq!(model_id(&m.model), f.file.receipt.body.model_id);
        // From JSON: the deployed model's other fields are irrelevant here.
        m.model.deployed = Some(
            serde_json::from_value(serde_json::json!({
                "id": hex::encode([0xab; 32]), "architecture": "{}", "senders": 0,
            }))
            .expect("deployed model fixture"),
        );
        assert_eq!(model_id(&m.model), [0xab; 32]);
        let signed = m.sign(&f.coordinator).unwrap();
        let evidence = records(&f.nodes, &manifest_hash(&signed).unwrap());
        let mut body = f.file.receipt.body.clone();
        body.manifest_hash = manifest_hash(&signed).unwrap();
        body.evidence_hash = records_hash(&evidence);
        let file = |body: ReceiptBody| ReceiptFile {
            receipt: Receipt::sign(&f.verifier, body).unwrap(),
            manifest: signed.clone(),
            evidence: evidence.clone(),
        };
        // Signed by the verifier, but for another model than the committee ran.
        assert_eq!(
            file(body.clone()).verify(&key),
            Err(ReceiptError::Mismatch("model id"))
        );
        body.model_id = [0xab; 32];
        file(body).verify(&key).unwrap();
    }

    /// Three `rep3m` parties' real views of one check (a product, then its release).
    fn rep3m_views() -> Vec<Vec<veil_protocols::rep3m::transcript::CheckView>> {
        use std::sync::Arc;
        use veil_protocols::ops::MpcOps;
        use veil_protocols::rep3::RepShare;
        let mut next = 1u64;
        let mut draw = || {
            next = next.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            next
        };
        let x = RepShare::split(&[3, 4, 5], &mut draw);
        let y = RepShare::split(&[6, 7, 8], &mut draw);
        let committee = veil_protocols::semi2k::local::Committee::new(
            3,
            Arc::new(veil_protocols::gemm::NaiveGemm),
        );
        veil_protocols::rep3m::local::run(&committee, Some(1), None, |p| {
            let me = p.id();
            let z = MpcOps::mul(p, &x[me], &y[me])?;
            p.release(&z)?;
            Ok(p.take_transcripts())
        })
        .unwrap()
        .into_iter()
        .map(|o| o.value)
        .collect()
    }

    #[test]
    fn a_rep3m_receipt_has_no_dealer_record_and_needs_views_that_verify() {
        use crate::evidence::sign;
        let coordinator = Identity::generate().unwrap();
        let key = coordinator.public_key();
        let verifier = Identity::generate().unwrap();
        let nodes: Vec<Identity> = (0..4).map(|_| Identity::generate().unwrap()).collect();
        let mut m = manifest(&coordinator, Some(&verifier), &nodes);
        m.protocol = Protocol::Rep3m;
        m.parties = (0..3).map(|i| member(&nodes[i], i as u16 + 1)).collect();
        m.dealer = None;
        let signed = m.sign(&coordinator).unwrap();
        let run = manifest_hash(&signed).unwrap();
        let evidence: Vec<EvidenceRecord> = (0..3u32)
            .flat_map(|i| {
                let id = &nodes[i as usize];
                [
                    sign(id, EvidenceKind::Transcript, &run, i, b"views"),
                    sign(id, EvidenceKind::Output, &run, i, b"sealed output"),
                ]
            })
            .collect();
        let views = rep3m_views();
        let issue_with = |views: &JobViews, evidence: &[EvidenceRecord]| {
            issue(
                &verifier,
                &key,
                &signed,
                views,
                evidence,
                [[1; 32], [2; 32]],
                17,
            )
        };
        let file = issue_with(&JobViews::Rep3m(views.clone()), &evidence).unwrap();
        assert_eq!(file.receipt.body.protocol, "rep3m");
        assert_eq!(
            file.receipt.body.transcript_hash,
            veil_protocols::rep3m::transcript::verify_rep3m_transcripts(&views).unwrap()
        );
        // What `veil verify` does: from the JSON, no dealer record needed.
        let again = ReceiptFile::from_json(&file.to_json().unwrap()).unwrap();
        assert_eq!(again.verify(&key).unwrap().protocol, Protocol::Rep3m);
        // A tampered final check (at both verifiers of prover 0): no receipt.
        let mut bad = views.clone();
        for (party, side) in [(2, true), (1, false)] {
            let check = if side {
                &mut bad[party][0].as_a
            } else {
                &mut bad[party][0].as_b
            };
            check.ring.as_mut().unwrap().z_a[0] ^= 1;
        }
        assert!(matches!(
            issue_with(&JobViews::Rep3m(bad), &evidence),
            Err(ReceiptError::Transcripts(VerifyError::Rep3m(
                veil_protocols::rep3m::transcript::TranscriptError::ProofFails { .. }
            )))
        ));
        // spdz2k views for a rep3m manifest, a missing party's record, a record for a dealer it lacks.
        assert!(matches!(
            issue_with(&JobViews::Spdz2k(vec![Vec::new(); 3]), &evidence),
            Err(ReceiptError::Transcripts(VerifyError::Unverified { .. }))
        ));
        assert!(issue_with(&JobViews::Rep3m(views.clone()), &evidence[..5]).is_err());
        let mut with_dealer = evidence.clone();
        with_dealer.push(sign(
            &nodes[3],
            EvidenceKind::OwnerMaterial,
            &run,
            3,
            b"owner",
        ));
        assert!(issue_with(&JobViews::Rep3m(views), &with_dealer).is_err());
    }

    #[test]
    fn the_verifier_issues_a_receipt_only_for_transcripts_that_verify() {
        let f = fixture();
        let key = f.coordinator.public_key();
        let views: Vec<Vec<CheckTranscript>> = (0..2)
            .map(|_| vec![crate::verifier::honest_transcript(2, 3)])
            .collect();
        let views = JobViews::Spdz2k(views);
        let commitments = [[1; 32], [2; 32]];
        let file = issue(
            &f.verifier,
            &key,
            &f.file.manifest,
            &views,
            &f.file.evidence,
            commitments,
            17,
        )
        .unwrap();
        let m = file.verify(&key).unwrap();
        assert_eq!(file.receipt.body.job, m.job);
        assert_eq!(file.receipt.body.transcript_hash, views.verify().unwrap().0);
        let JobViews::Spdz2k(views) = views else {
            unreachable!()
        };
        // A party's view differs: nothing is signed.
        let mut bad = views.clone();
        bad[1][0].parties[0].nonce[0] ^= 1;
        let bad = JobViews::Spdz2k(bad);
        assert!(matches!(
            issue(
                &f.verifier,
                &key,
                &f.file.manifest,
                &bad,
                &f.file.evidence,
                commitments,
                17
            ),
            Err(ReceiptError::Transcripts(VerifyError::Equivocation { .. }))
        ));
        // Two checks for a one-inference job.
        let two = JobViews::Spdz2k(views.iter().map(|v| vec![v[0].clone(); 2]).collect());
        let views = JobViews::Spdz2k(views);
        assert!(issue(
            &f.verifier,
            &key,
            &f.file.manifest,
            &two,
            &f.file.evidence,
            commitments,
            17
        )
        .is_err());
        // Only the manifest's verifier issues.
        let other = Identity::generate().unwrap();
        assert_eq!(
            issue(
                &other,
                &key,
                &f.file.manifest,
                &views,
                &f.file.evidence,
                commitments,
                17
            ),
            Err(ReceiptError::NotTheVerifier)
        );
    }

    #[test]
    fn parsing_is_bounded_and_strict() {
        let f = fixture();
        let text = f.file.to_json().unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (field, bad) in [
            ("job", serde_json::json!("00")),
            ("signature", serde_json::json!("zz".repeat(64))),
            (
                "protocol",
                serde_json::json!("x".repeat(MAX_PROTOCOL_LEN + 1)),
            ),
            ("format", serde_json::json!("veil receipt v0")),
            ("manifest", serde_json::json!("0102")),
        ] {
            let mut t = v.clone();
            t[field] = bad;
            assert!(
                matches!(
                    ReceiptFile::from_json(&t.to_string()),
                    Err(ReceiptError::Malformed(_))
                ),
                "{field}"
            );
        }
        v["extra"] = serde_json::json!(1);
        assert!(ReceiptFile::from_json(&v.to_string()).is_err());
        assert!(ReceiptFile::from_json(&" ".repeat(MAX_RECEIPT_FILE_BYTES + 1)).is_err());
        assert!(ReceiptFile::from_json("not json").is_err());
    }

    #[test]
    fn no_receipt_for_evidence_its_parties_did_not_sign() {
        let f = fixture();
        let key = f.coordinator.public_key();
        let views: Vec<Vec<CheckTranscript>> = (0..2)
            .map(|_| vec![crate::verifier::honest_transcript(2, 3)])
            .collect();
        let views = JobViews::Spdz2k(views);
        let run = manifest_hash(&f.file.manifest).unwrap();
        let issue_with = |evidence: &[EvidenceRecord]| {
            issue(
                &f.verifier,
                &key,
                &f.file.manifest,
                &views,
                evidence,
                [[1; 32], [2; 32]],
                17,
            )
        };
        issue_with(&f.file.evidence).unwrap();
        // A transcript record the coordinator signed in party 0's place.
        let mut forged = f.file.evidence.clone();
        forged[0] = crate::evidence::sign(&f.coordinator, EvidenceKind::Transcript, &run, 0, b"x");
        assert!(matches!(
            issue_with(&forged),
            Err(ReceiptError::Evidence(
                crate::evidence::EvidenceError::BadSignature { .. }
            ))
        ));
        // Party 1's output record missing.
        let short: Vec<EvidenceRecord> = f.file.evidence[..3].to_vec();
        assert!(matches!(
            issue_with(&short),
            Err(ReceiptError::Evidence(
                crate::evidence::EvidenceError::Incomplete { .. }
            ))
        ));
        // Records of another run (another attempt's manifest).
        let other = records(&f.nodes, &[9; 32]);
        assert!(matches!(issue_with(&other), Err(ReceiptError::Evidence(_))));
    }
}
