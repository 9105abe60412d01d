//! `veil verify RECEIPT`: checks a job's receipt against the coordinator's public key, as a client does
//! before it trusts a result (see `veil_node::receipt`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_node::receipt::{ReceiptFile, MAX_RECEIPT_FILE_BYTES};
use veil_node::PublicKey;

/// Arguments of `veil verify`.
#[derive(Args, Debug)]
#[command(after_help = "\
Checks, in order: the committee manifest in the file hashes to the receipt's manifest hash; the manifest is \
signed by the coordinator's key; the manifest names a verifier and the receipt is signed by it; the receipt's \
job, protocol and model id are the manifest's; the verifier's Ed25519 signature covers every field of the \
receipt; the parties' evidence records in the file hash to the receipt's evidence hash, and each party's \
transcript and output record carries that party's Ed25519 signature (its key in the manifest) for this run.

The coordinator's key is the `public_key` of the ready line `veil coordinator` prints when it starts, or what \
`veil keygen --data-dir DIR` prints for the coordinator's data directory.

Exit status: 0 and `receipt OK: ...` if every check passes; 1 and `receipt REJECTED: <reason>` otherwise.")]
pub struct VerifyArgs {
    /// The receipt file (JSON, `format: "veil receipt v1"`).
    pub receipt: PathBuf,
    /// The coordinator's Ed25519 public key, 64 hex digits.
    #[arg(
        long,
        value_name = "HEX",
        required_unless_present = "coordinator_key_file",
        conflicts_with = "coordinator_key_file"
    )]
    pub coordinator_key: Option<String>,
    /// A file that holds the coordinator's public key (64 hex digits; surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    pub coordinator_key_file: Option<PathBuf>,
}

/// Reads at most `limit` bytes of `path` as text; fails if it is longer.
fn read_bounded(path: &PathBuf, limit: usize) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.take(limit as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() > limit {
        bail!("{} is larger than {limit} bytes", path.display());
    }
    Ok(text)
}

/// Checks the receipt; prints `receipt OK: ...` or fails with the reason.
pub fn run(args: VerifyArgs) -> Result<()> {
    let key_text = match (&args.coordinator_key, &args.coordinator_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => read_bounded(path, 1024)?,
        (None, None) => bail!("give --coordinator-key HEX or --coordinator-key-file FILE"),
    };
    let coordinator: PublicKey = key_text
        .trim()
        .parse()
        .context("the coordinator key is not 64 hex digits")?;
    let text = read_bounded(&args.receipt, MAX_RECEIPT_FILE_BYTES)?;
    let checked = ReceiptFile::from_json(&text).and_then(|file| {
        let manifest = file.verify(&coordinator)?;
        Ok((file, manifest))
    });
    match checked {
        Ok((file, manifest)) => {
            let b = &file.receipt.body;
            println!(
                "receipt OK: job {} | protocol {} | model {} | {} parties | transcript {} | {} signed \
                 evidence records | verifier {} | issued at {} (unix)",
                b.job,
                b.protocol,
                hex::encode(b.model_id),
                manifest.parties.len(),
                hex::encode(b.transcript_hash),
                file.evidence.len(),
                b.verifier,
                b.issued_at
            );
            Ok(())
        }
        Err(e) => bail!("receipt REJECTED: {e}"),
    }
}
