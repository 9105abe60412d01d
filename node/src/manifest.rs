//! The committee manifest: who computes what, signed by whoever assembled the committee.
//!
//! Every member checks a manifest before it computes ([`SignedManifest::open`]):
//! - the signer is a submitter the node trusts by configuration, and the Ed25519 signature over the
//!   domain-separated encoding verifies;
//! - the protocol is one this node runs with a committee it supports (`rep3`: exactly 3 parties), and a
//!   dealer is named if and only if the protocol has one; the model is a known workload, the sizes are within
//!   bounds;
//! - the members' keys are distinct, and the node itself appears exactly once (as a party or as the dealer).
//!
//! Invariant: a node acts on a manifest only through [`CheckedManifest`], which only `open` creates.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use veil_engine::WeightMode;
pub use veil_protocols::protocol::Protocol;

use crate::error::{NodeError, Result};
use crate::identity::{Identity, PublicKey};
use crate::tls::AllowList;
use crate::wire::{Bytes, JobId};

/// Domain separation of manifest signatures.
const DOMAIN: &[u8] = b"veil committee manifest v1\0";
/// Most parties a committee may have.
pub const MAX_PARTIES: usize = 64;
/// Most inferences one job may run.
pub const MAX_INFERENCES: u32 = 100_000;
/// Largest batch of one inference.
pub const MAX_BATCH: u32 = 4096;

/// Whether a node runs `protocol` on the network (every protocol does now; kept as the one place to say
/// otherwise).
pub fn runs_on_nodes(protocol: Protocol) -> bool {
    matches!(
        protocol,
        Protocol::Semi2k | Protocol::Spdz2k | Protocol::Rep3 | Protocol::Rep3m
    )
}

/// A committee member: where it listens and the key it must present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// QUIC address.
    pub address: SocketAddr,
    /// Pinned identity.
    pub public_key: PublicKey,
}

/// The public description of the model a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Workload name (`network-a`, `lenet`): every member builds the same public plan from it.
    pub workload: String,
    /// Seed of the workload's weights.
    pub seed: u64,
    /// Weight visibility.
    pub weights: WeightMode,
    /// Fractional bits of the fixed-point encoding.
    pub frac_bits: u32,
    /// A deployed model (its architecture, public): when set, members compile the plan from it instead of
    /// from `workload`, and `seed` is unused.
    pub deployed: Option<DeployedModel>,
}

/// Largest architecture JSON a manifest may carry, bytes.
pub const MAX_ARCHITECTURE_BYTES: usize = 64 << 10;

/// The public part of a model deployed by its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedModel {
    /// The model id (hex SHA-256 of architecture and weights): sealed shares are bound to it.
    pub id: String,
    /// The architecture, as JSON (`veil_engine::model_file::Architecture`).
    pub architecture: String,
    /// A stage of a model split across committees that is followed by another: where the parties send
    /// their re-randomised output shares instead of to the client.
    pub handoff: Option<Handoff>,
    /// A stage that follows another: the number of parties of the previous stage whose re-randomised
    /// shares each party sums into its input share (0: the input comes from the client).
    pub senders: u32,
    /// A model whose file travels apart from the manifest (ONNX, `crate::onnx_model`): the file's size,
    /// bytes, which each member checks the fetched file against with the id (its SHA-256); 0 otherwise.
    #[serde(default)]
    pub file_bytes: u64,
}

/// Where a stage's output goes: the next stage's committee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The next stage's run id (its parties open the hand-off only in that run).
    pub run: JobId,
    /// The next stage's model binding id.
    pub model: String,
    /// The next stage's parties' sealing keys, in party order.
    pub keys: Vec<crate::envelope::SealingKey>,
}

impl DeployedModel {
    /// Checks that the model id is 64 hex digits.
    pub fn check_id(&self) -> Result<()> {
        if self.id.len() != 64 || !self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NodeError::Manifest("model id must be 64 hex digits".into()));
        }
        Ok(())
    }

    /// The parsed architecture, bounded by [`MAX_ARCHITECTURE_BYTES`].
    pub fn parse(&self) -> Result<veil_engine::model_file::Architecture> {
        if self.architecture.len() > MAX_ARCHITECTURE_BYTES {
            return Err(NodeError::Manifest(format!(
                "architecture of {} bytes (at most {MAX_ARCHITECTURE_BYTES})",
                self.architecture.len()
            )));
        }
        self.check_id()?;
        if self.senders as usize > MAX_PARTIES
            || self.handoff.as_ref().is_some_and(|h| {
                h.keys.is_empty() || h.keys.len() > MAX_PARTIES || h.model.len() > 128
            })
        {
            return Err(NodeError::Manifest("stage hand-off out of bounds".into()));
        }
        serde_json::from_str(&self.architecture)
            .map_err(|e| NodeError::Manifest(format!("architecture: {e}")))
    }
}

impl ModelSpec {
    /// The id sealed shares are bound to: the deployed model's id, or `workload:seed`.
    pub fn binding_id(&self) -> String {
        match &self.deployed {
            Some(d) => d.id.clone(),
            None => format!("{}:{}", self.workload, self.seed),
        }
    }
}

/// A job's committee and computation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job.
    pub job: JobId,
    /// The protocol (its serde name, lowercase, is the one the CLI spells).
    pub protocol: Protocol,
    /// The model.
    pub model: ModelSpec,
    /// Items per inference.
    pub batch: u32,
    /// Inferences in the job (each one batch).
    pub inferences: u32,
    /// Execution parties, in party-index order.
    pub parties: Vec<Member>,
    /// The dealer: present if and only if `protocol` has one ([`Protocol::has_dealer`]; `rep3` has none).
    pub dealer: Option<Member>,
    /// The client that submits the job and signs this manifest.
    pub client: PublicKey,
    /// When set, parties seal their output shares to this X25519 key (the client that submitted the job
    /// through a coordinator), so that nobody between them and the client reads them.
    pub output_key: Option<crate::envelope::SealingKey>,
    /// The verifier that checks the job's MAC-check transcripts and signs its receipt
    /// ([`crate::receipt`]); `None` for a job without one. A receipt is valid only if signed by this key.
    pub verifier: Option<Member>,
}

impl Manifest {
    /// Every key of the committee: parties, the dealer if there is one, client, and the verifier if there is
    /// one.
    pub fn keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self.parties.iter().map(|m| m.public_key).collect();
        keys.extend(self.dealer.as_ref().map(|d| d.public_key));
        keys.push(self.client);
        keys.extend(self.verifier.as_ref().map(|v| v.public_key));
        keys
    }

    /// Signs this manifest with `signer`, which must be the manifest's client.
    pub fn sign(&self, signer: &Identity) -> Result<SignedManifest> {
        if signer.public_key() != self.client {
            return Err(NodeError::Manifest(
                "the signer must be the manifest's client".into(),
            ));
        }
        let body = postcard::to_stdvec(self).map_err(|e| NodeError::Manifest(e.to_string()))?;
        let signature = signer.sign(&signed_bytes(&body));
        Ok(SignedManifest {
            body: Bytes(body),
            signature: Bytes(signature),
        })
    }
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(body);
    m
}

/// A manifest as it travels: its encoding and the client's signature over it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// postcard encoding of the [`Manifest`].
    pub body: Bytes,
    /// Ed25519 signature of the domain tag followed by `body`, by the manifest's client.
    pub signature: Bytes,
}

/// This node's place in a committee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Execution party number `index`.
    Party(usize),
    /// The dealer.
    Dealer,
}

/// A manifest that passed every check, with this node's role in it.
#[derive(Debug, Clone)]
pub struct CheckedManifest {
    manifest: Manifest,
    role: Role,
}

impl CheckedManifest {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }
}

impl SignedManifest {
    /// Decodes the manifest and checks that `signer` signed it and is its client (what a client of a
    /// coordinator checks: the manifest came from the coordinator it pins). No membership check.
    pub fn verify_by(&self, signer: &PublicKey) -> Result<Manifest> {
        let manifest: Manifest = postcard::from_bytes(&self.body.0)
            .map_err(|e| NodeError::Manifest(format!("does not decode: {e}")))?;
        if manifest.client != *signer
            || !signer.verify(&signed_bytes(&self.body.0), &self.signature.0)
        {
            return Err(NodeError::Manifest("not signed by the expected key".into()));
        }
        Ok(manifest)
    }

    /// Checks the signature, the signer and the contents for the node `me`; see the module doc.
    pub fn open(&self, me: &PublicKey, allowed: &AllowList) -> Result<CheckedManifest> {
        let bad = |s: String| Err(NodeError::Manifest(s));
        let manifest: Manifest = postcard::from_bytes(&self.body.0)
            .map_err(|e| NodeError::Manifest(format!("does not decode: {e}")))?;
        if !allowed.is_trusted_submitter(&manifest.client) {
            return bad(format!(
                "signer {} is not a trusted submitter",
                manifest.client.short()
            ));
        }
        if !manifest
            .client
            .verify(&signed_bytes(&self.body.0), &self.signature.0)
        {
            return bad("the signature does not verify".into());
        }
        let protocol = manifest.protocol;
        if !runs_on_nodes(protocol) {
            return bad(format!(
                "protocol {protocol}: nodes do not run it yet (it runs in memory only)"
            ));
        }
        if manifest.dealer.is_some() != protocol.has_dealer() {
            return bad(if protocol.has_dealer() {
                format!("a {protocol} job needs a dealer")
            } else {
                format!("{protocol} has no dealer, and the manifest names one")
            });
        }
        match &manifest.model.deployed {
            // A chat model: its file pinned by the id, or the tiny shape (see `crate::generation`).
            _ if crate::generation::is_generation(&manifest.model.workload) => {
                if let Err(why) = crate::generation::check_spec(
                    &manifest.model,
                    manifest.batch,
                    manifest.inferences,
                ) {
                    return bad(why);
                }
            }
            // A pretrained model: its architecture is its files, pinned by the id (checked when loaded).
            Some(d) if veil_engine::bert::pretrained::is_pretrained(&manifest.model.workload) => {
                d.check_id()?;
            }
            // An ONNX model: the manifest names its file by id (SHA-256) and size; each member fetches
            // the file and checks both before importing it (`crate::onnx_model`).
            Some(d) if manifest.model.workload == crate::onnx_model::ONNX_WORKLOAD => {
                crate::onnx_model::check_deployed(d)?;
            }
            Some(d) => {
                d.parse()?;
            }
            None => {
                if !veil_engine::workloads::MODEL_WORKLOADS
                    .contains(&manifest.model.workload.as_str())
                {
                    return bad(format!("unknown workload {:?}", manifest.model.workload));
                }
            }
        }
        let n = manifest.parties.len();
        if !(2..=MAX_PARTIES).contains(&n) {
            return bad(format!("{n} parties (between 2 and {MAX_PARTIES} allowed)"));
        }
        if !protocol.supports_parties(n) {
            return bad(format!(
                "{protocol} runs with {}, not {n}",
                protocol.party_requirement()
            ));
        }
        if !(1..=MAX_BATCH).contains(&manifest.batch)
            || !(1..=MAX_INFERENCES).contains(&manifest.inferences)
        {
            return bad(format!(
                "batch {} and {} inferences out of bounds",
                manifest.batch, manifest.inferences
            ));
        }
        let mut keys = manifest.keys();
        keys.sort();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return bad("a key appears twice in the committee".into());
        }
        let role = if manifest
            .dealer
            .as_ref()
            .is_some_and(|d| d.public_key == *me)
        {
            Role::Dealer
        } else if let Some(i) = manifest.parties.iter().position(|m| m.public_key == *me) {
            Role::Party(i)
        } else {
            return bad("this node is not a member of the committee".into());
        };
        Ok(CheckedManifest { manifest, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &Identity, port: u16) -> Member {
        Member {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            public_key: id.public_key(),
        }
    }

    #[test]
    fn checks() {
        let client = Identity::generate().unwrap();
        let nodes: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
        let m = Manifest {
            job: JobId::random(),
            protocol: Protocol::Semi2k,
            model: ModelSpec {
                workload: "network-a".into(),
                seed: 7,
                weights: WeightMode::Shared,
                frac_bits: 16,
                deployed: None,
            },
            batch: 1,
            inferences: 2,
            parties: vec![member(&nodes[0], 1), member(&nodes[1], 2)],
            dealer: Some(member(&nodes[2], 3)),
            client: client.public_key(),
            output_key: None,
            verifier: None,
        };
        let signed = m.sign(&client).unwrap();
        let allowed = AllowList::new([client.public_key()]);
        let c = signed.open(&nodes[1].public_key(), &allowed).unwrap();
        assert_eq!(c.role(), Role::Party(1));
        assert_eq!(
            signed
                .open(&nodes[2].public_key(), &allowed)
                .unwrap()
                .role(),
            Role::Dealer
        );
        // Not a member.
        assert!(signed.open(&client.public_key(), &allowed).is_err());
        // Untrusted signer.
        assert!(signed
            .open(&nodes[0].public_key(), &AllowList::new([]))
            .is_err());
        // Tampered body.
        let mut t = signed.clone();
        let last = t.body.0.len() - 1;
        t.body.0[last] ^= 1;
        assert!(t.open(&nodes[0].public_key(), &allowed).is_err());
        // Duplicate key.
        let mut d = m.clone();
        d.parties[1] = member(&nodes[0], 2);
        let ds = d.sign(&client).unwrap();
        assert!(ds.open(&nodes[0].public_key(), &allowed).is_err());
        // Only the client may sign.
        assert!(m.sign(&nodes[0]).is_err());
        // semi2k without a dealer.
        let why = |m: &Manifest| {
            m.sign(&client)
                .unwrap()
                .open(&nodes[0].public_key(), &allowed)
                .unwrap_err()
                .to_string()
        };
        let no_dealer = Manifest {
            dealer: None,
            ..m.clone()
        };
        assert!(why(&no_dealer).contains("needs a dealer"));
    }

    #[test]
    fn a_rep3_manifest_has_three_parties_and_no_dealer() {
        let client = Identity::generate().unwrap();
        let nodes: Vec<Identity> = (0..4).map(|_| Identity::generate().unwrap()).collect();
        let m = Manifest {
            job: JobId::random(),
            protocol: Protocol::Rep3,
            model: ModelSpec {
                workload: "network-a".into(),
                seed: 7,
                weights: WeightMode::Shared,
                frac_bits: 16,
                deployed: None,
            },
            batch: 1,
            inferences: 1,
            parties: (0..3).map(|i| member(&nodes[i], i as u16 + 1)).collect(),
            dealer: None,
            client: client.public_key(),
            output_key: None,
            verifier: None,
        };
        let allowed = AllowList::new([client.public_key()]);
        let open = |m: &Manifest, who: usize| {
            m.sign(&client)
                .unwrap()
                .open(&nodes[who].public_key(), &allowed)
        };
        assert_eq!(open(&m, 2).unwrap().role(), Role::Party(2));
        // A dealer named in a rep3 manifest.
        let dealt = Manifest {
            dealer: Some(member(&nodes[3], 4)),
            ..m.clone()
        };
        let why = open(&dealt, 0).unwrap_err().to_string();
        assert!(why.contains("has no dealer"), "{why}");
        // Two or four parties.
        for parties in [2, 4] {
            let other = Manifest {
                parties: (0..parties)
                    .map(|i| member(&nodes[i], i as u16 + 1))
                    .collect(),
                ..m.clone()
            };
            let why = open(&other, 0).unwrap_err().to_string();
            assert!(why.contains("exactly 3 parties"), "{parties}: {why}");
        }
        // rep3m runs on nodes the same way: three parties, no dealer.
        let malicious = Manifest {
            protocol: Protocol::Rep3m,
            ..m.clone()
        };
        open(&malicious, 0).unwrap();
        let dealt = Manifest {
            dealer: Some(member(&nodes[3], 4)),
            ..malicious.clone()
        };
        let why = open(&dealt, 0).unwrap_err().to_string();
        assert!(why.contains("has no dealer"), "{why}");
        // The wire name is the CLI's.
        assert_eq!(serde_json::to_string(&m.protocol).unwrap(), "\"rep3\"");
    }
}
