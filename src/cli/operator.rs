//! `veil operator keygen|certify|admit`: an operator's key, the certificates it gives its nodes, and a network
//! admission key's certificate of an operator (see `veil_node::operator` and the README's Coordinator
//! section).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use veil_node::operator::{
    create_operator_key, load_operator_key, now_s, CertKind, Certificate, CertificateChain,
    MAX_REGION_BYTES, OPERATOR_KEY_FILE,
};
use veil_node::PublicKey;

/// Arguments of `veil operator`.
#[derive(Args, Debug)]
pub struct OperatorArgs {
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Subcommand, Debug)]
enum OperatorCommand {
    /// Creates an operator key (`DIR/operator.pk8`, mode 0600, never overwritten) and prints its public key.
    Keygen(KeygenArgs),
    /// Certifies that this operator runs the node whose identity key is `--node-key`.
    Certify(CertifyArgs),
    /// With a network admission key: certifies (admits) an operator key.
    Admit(AdmitArgs),
}

#[derive(Args, Debug)]
struct KeygenArgs {
    /// Directory of the new key.
    #[arg(long)]
    out: PathBuf,
}

/// Longest validity accepted, days (ten years).
const MAX_DAYS: u64 = 3650;

#[derive(Args, Debug)]
struct CertifyArgs {
    /// The operator key file (`operator.pk8` from `veil operator keygen`).
    #[arg(long)]
    operator_key: PathBuf,
    /// The node's identity key (hex; `veil keygen --data-dir NODE_DATA` prints it).
    #[arg(long)]
    node_key: PublicKey,
    /// Days until the certificate expires.
    #[arg(long, default_value_t = 365)]
    expires_days: u64,
    /// The node's region, as the operator states it.
    #[arg(long)]
    region: Option<String>,
    /// The node's autonomous system number.
    #[arg(long)]
    asn: Option<u32>,
    /// The operator's admission by a network admission key (`veil operator admit`), appended to the chain
    /// where the coordinator admits operators that way.
    #[arg(long)]
    admission: Option<PathBuf>,
    /// Where to write the certificate (the node's `[coordinator] certificate`).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct AdmitArgs {
    /// The network admission key file (created like an operator key).
    #[arg(long)]
    admission_key: PathBuf,
    /// The operator key to admit (hex).
    #[arg(long)]
    operator: PublicKey,
    /// Days until the admission expires.
    #[arg(long, default_value_t = 365)]
    expires_days: u64,
    /// Where to write it (give it to the operator: `veil operator certify --admission FILE`).
    #[arg(long)]
    out: PathBuf,
}

fn expiry(days: u64) -> Result<u64> {
    if !(1..=MAX_DAYS).contains(&days) {
        bail!("--expires-days must be in 1..={MAX_DAYS}");
    }
    Ok(now_s() + days * 86_400)
}

/// Writes `text` to a new file (never overwriting one).
fn write_new(path: &PathBuf, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Runs `veil operator ...`.
pub fn run(args: OperatorArgs) -> Result<()> {
    match args.command {
        OperatorCommand::Keygen(a) => {
            let key = create_operator_key(&a.out)
                .with_context(|| format!("creating {}", a.out.join(OPERATOR_KEY_FILE).display()))?;
            println!("{}", key.public_key());
        }
        OperatorCommand::Certify(a) => {
            if a.region
                .as_ref()
                .is_some_and(|r| r.len() > MAX_REGION_BYTES)
            {
                bail!("--region is at most {MAX_REGION_BYTES} bytes");
            }
            let operator = load_operator_key(&a.operator_key)?;
            let node = Certificate::issue(
                &operator,
                CertKind::Node,
                a.node_key,
                expiry(a.expires_days)?,
                a.region,
                a.asn,
            )?;
            let admission = match &a.admission {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let bytes = hex::decode(text.trim())
                        .with_context(|| format!("{}: not hex", path.display()))?;
                    Some(Certificate::from_bytes(&bytes)?)
                }
                None => None,
            };
            let chain = CertificateChain { node, admission };
            // The chain must read back as one (the admission must name this operator).
            CertificateChain::from_text(&chain.to_text())?;
            write_new(&a.out, &chain.to_text())?;
            println!(
                "certified node {} for operator {} until {} (Unix s): {}",
                a.node_key,
                operator.public_key(),
                chain.node.expires_at_s,
                a.out.display()
            );
        }
        OperatorCommand::Admit(a) => {
            let admission = load_operator_key(&a.admission_key)?;
            let cert = Certificate::issue(
                &admission,
                CertKind::Operator,
                a.operator,
                expiry(a.expires_days)?,
                None,
                None,
            )?;
            write_new(&a.out, &format!("{}\n", hex::encode(cert.to_bytes())))?;
            println!(
                "admitted operator {} by key {}: {}",
                a.operator,
                admission.public_key(),
                a.out.display()
            );
        }
    }
    Ok(())
}
