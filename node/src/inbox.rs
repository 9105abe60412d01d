//! A node's inbox for sealed blobs: its X25519 opening key, the attestation that binds that key to the node's
//! Ed25519 identity, and the persisted record of every job whose input it has already opened.
//!
//! What reaches a node through the coordinator is a [`Sealed`] envelope (postcard), sealed by the client to
//! this node's [`SealingKey`] and bound to (purpose, job, party, model). [`Inbox::open_once`] accepts it only
//! if it opens under the expected binding AND its job was never opened before; the job is recorded in the
//! node's redb database before the plaintext is returned, so a replayed job id is refused even after a
//! restart, and nothing is computed on a refused blob.
//!
//! Invariants: the opening key never leaves this module (only its public half and the attestation do); a
//! recorded job stays recorded (the table only grows; entries are 40 bytes, so a node that ran a million
//! jobs holds 40 MB); errors name the binding but never the plaintext.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;

use crate::envelope::{self, Binding, EnvelopeError, OpeningKey, Sealed, SealingKey};
use crate::identity::{Identity, PublicKey};

/// File of the opening key under the data directory.
pub const KEY_FILE: &str = "sealing.key";
/// File of the replay record under the data directory.
pub const REPLAY_FILE: &str = "opened-jobs.redb";
/// Domain separation of the attestation signature.
const ATTESTATION_DOMAIN: &[u8] = b"veil sealing key v1\0";
/// Largest sealed blob accepted, bytes (the envelope's own limit plus its header).
pub const MAX_SEALED_BYTES: usize = envelope::MAX_PLAINTEXT + 1024;

/// job id (hex) -> unix time (ms) of the first opening.
const OPENED: TableDefinition<&str, u64> = TableDefinition::new("opened_jobs");

/// Why a sealed blob was refused.
#[derive(Debug, Error)]
pub enum InboxError {
    /// The bytes are not an envelope.
    #[error("the sealed blob does not decode ({0})")]
    Malformed(String),
    /// The envelope does not open for this node and binding (altered, or sealed to another node, job,
    /// party, model or purpose).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// This job's input was opened before: a replay.
    #[error("job {0} was already opened on this node: a replayed job id is refused")]
    Replayed(String),
    /// The key file or the replay record cannot be used.
    #[error("inbox state {path}: {what}")]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        what: String,
    },
}

/// The signature that binds a sealing key to a node identity.
pub fn attestation_message(key: &SealingKey) -> Vec<u8> {
    let mut m = ATTESTATION_DOMAIN.to_vec();
    m.extend_from_slice(&key.0);
    m
}

/// Checks that `signature` is `node`'s attestation of `key` (clients call this before sealing to a key
/// the coordinator handed them).
pub fn check_attestation(node: &PublicKey, key: &SealingKey, signature: &[u8]) -> bool {
    node.verify(&attestation_message(key), signature)
}

/// A node's inbox (see the module doc).
pub struct Inbox {
    key: OpeningKey,
    opened: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inbox({})", self.key.public())
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Inbox {
    /// Opens (or creates) the inbox under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Inbox, InboxError> {
        let state = |path: &Path, what: String| InboxError::State {
            path: path.to_path_buf(),
            what,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| state(data_dir, e.to_string()))?;
        let key = OpeningKey::load_or_create(&data_dir.join(KEY_FILE))?;
        let path = data_dir.join(REPLAY_FILE);
        let opened = Database::create(&path).map_err(|e| state(&path, e.to_string()))?;
        let txn = opened
            .begin_write()
            .map_err(|e| state(&path, e.to_string()))?;
        txn.open_table(OPENED)
            .map_err(|e| state(&path, e.to_string()))?;
        txn.commit().map_err(|e| state(&path, e.to_string()))?;
        Ok(Inbox { key, opened, path })
    }

    /// The opening key, for payloads that are not a job's input (a stage's hand-offs: their own binding,
    /// opened inside an input that was opened once).
    pub fn opening_key(&self) -> &OpeningKey {
        &self.key
    }

    /// The public key clients seal to.
    pub fn sealing_key(&self) -> SealingKey {
        self.key.public()
    }

    /// `identity`'s signature over the sealing key (see [`check_attestation`]).
    pub fn attest(&self, identity: &Identity) -> Vec<u8> {
        identity.sign(&attestation_message(&self.sealing_key()))
    }

    /// Whether `job`'s input was already opened here.
    pub fn was_opened(&self, job: &str) -> Result<bool, InboxError> {
        let txn = self.opened.begin_read().map_err(|e| self.state(e))?;
        let table = txn.open_table(OPENED).map_err(|e| self.state(e))?;
        Ok(table.get(job).map_err(|e| self.state(e))?.is_some())
    }

    /// Opens `blob` (a postcard [`Sealed`]) under `binding`, once per job: see the module doc.
    pub fn open_once(&self, binding: &Binding, blob: &[u8]) -> Result<Vec<u8>, InboxError> {
        let sealed = decode(blob)?;
        let plaintext = envelope::open(&self.key, binding, &sealed)?;
        let txn = self.opened.begin_write().map_err(|e| self.state(e))?;
        {
            let mut table = txn.open_table(OPENED).map_err(|e| self.state(e))?;
            if table
                .get(binding.job.as_str())
                .map_err(|e| self.state(e))?
                .is_some()
            {
                return Err(InboxError::Replayed(binding.job.clone()));
            }
            table
                .insert(binding.job.as_str(), unix_ms())
                .map_err(|e| self.state(e))?;
        }
        txn.commit().map_err(|e| self.state(e))?;
        crate::record::write(crate::record::Kind::Opened, &[&plaintext]);
        Ok(plaintext)
    }

    fn state(&self, e: impl std::fmt::Display) -> InboxError {
        InboxError::State {
            path: self.path.clone(),
            what: e.to_string(),
        }
    }
}

/// The binding of party `party`'s sealed payload of `purpose` in the job of `manifest`: its run id, the
/// party index and the model's binding id. Client and party compute it from the same signed manifest.
pub fn binding_for(
    manifest: &crate::manifest::Manifest,
    purpose: envelope::Purpose,
    party: usize,
) -> Binding {
    Binding {
        purpose,
        job: manifest.job.to_string(),
        party: party as u32,
        model: manifest.model.binding_id(),
    }
}

/// Decodes a sealed blob, bounded by [`MAX_SEALED_BYTES`].
pub fn decode(blob: &[u8]) -> Result<Sealed, InboxError> {
    if blob.len() > MAX_SEALED_BYTES {
        return Err(InboxError::Envelope(EnvelopeError::TooLarge(blob.len())));
    }
    postcard::from_bytes(blob).map_err(|e| InboxError::Malformed(e.to_string()))
}

/// Seals `plaintext` to `recipient` under `binding` and encodes it as a blob for [`Inbox::open_once`] (or,
/// for outputs, [`open_blob`]).
pub fn seal_blob(
    recipient: &SealingKey,
    binding: &Binding,
    plaintext: &[u8],
) -> Result<Vec<u8>, InboxError> {
    let sealed = envelope::seal(recipient, binding, plaintext)?;
    postcard::to_stdvec(&sealed).map_err(|e| InboxError::Malformed(e.to_string()))
}

/// Opens a blob sealed to `key` under `binding` (no replay record: clients opening their outputs).
pub fn open_blob(key: &OpeningKey, binding: &Binding, blob: &[u8]) -> Result<Vec<u8>, InboxError> {
    Ok(envelope::open(key, binding, &decode(blob)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Purpose;

    fn binding(job: &str, party: u32) -> Binding {
        Binding {
            purpose: Purpose::InputShare,
            job: job.into(),
            party,
            model: "m".into(),
        }
    }

    #[test]
    fn a_blob_opens_once_per_job_and_the_record_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let key = inbox.sealing_key();
        let blob = seal_blob(&key, &binding("j1", 0), b"share").unwrap();
        assert_eq!(inbox.open_once(&binding("j1", 0), &blob).unwrap(), b"share");
        assert!(matches!(
            inbox.open_once(&binding("j1", 0), &blob),
            Err(InboxError::Replayed(_))
        ));
        drop(inbox);
        let again = Inbox::open(dir.path()).unwrap();
        assert_eq!(again.sealing_key(), key, "the key persists");
        assert!(again.was_opened("j1").unwrap());
        let fresh = seal_blob(&key, &binding("j1", 0), b"other").unwrap();
        assert!(matches!(
            again.open_once(&binding("j1", 0), &fresh),
            Err(InboxError::Replayed(_))
        ));
    }

    #[test]
    fn altered_misbound_or_garbage_blobs_are_refused_without_recording_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let key = inbox.sealing_key();
        let mut blob = seal_blob(&key, &binding("j2", 1), b"share").unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(matches!(
            inbox.open_once(&binding("j2", 1), &blob),
            Err(InboxError::Envelope(_))
        ));
        let blob = seal_blob(&key, &binding("j2", 1), b"share").unwrap();
        assert!(inbox.open_once(&binding("j2", 0), &blob).is_err());
        assert!(inbox.open_once(&binding("j3", 1), &blob).is_err());
        assert!(matches!(
            inbox.open_once(&binding("j2", 1), &[1, 2, 3]),
            Err(InboxError::Malformed(_))
        ));
        assert!(!inbox.was_opened("j2").unwrap());
        // Sealed to another node.
        let other = OpeningKey::generate().public();
        let blob = seal_blob(&other, &binding("j2", 1), b"share").unwrap();
        assert!(inbox.open_once(&binding("j2", 1), &blob).is_err());
        // The good one still opens.
        let blob = seal_blob(&key, &binding("j2", 1), b"share").unwrap();
        assert!(inbox.open_once(&binding("j2", 1), &blob).is_ok());
    }

    #[test]
    fn attestations_bind_the_key_to_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let id = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let sig = inbox.attest(&id);
        assert!(check_attestation(
            &id.public_key(),
            &inbox.sealing_key(),
            &sig
        ));
        assert!(!check_attestation(
            &other.public_key(),
            &inbox.sealing_key(),
            &sig
        ));
        let wrong = OpeningKey::generate().public();
        assert!(!check_attestation(&id.public_key(), &wrong, &sig));
    }
}
