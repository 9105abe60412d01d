//! `veil nodes`: the coordinator's registry, as a table or JSON.

use anyhow::Result;
use clap::Args;

use super::coordinator::ConnectArgs;
use veil_node::api::{self, NodeView};

/// Arguments of `veil nodes`.
#[derive(Args, Debug)]
pub struct NodesArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Lists the registered nodes.
pub fn run(args: NodesArgs) -> Result<()> {
    let api = args.connect.client()?;
    let nodes: Vec<NodeView> = api.get_json(api::NODES)?;
    if args.json {
        println!("{}", serde_json::to_string(&nodes)?);
        return Ok(());
    }
    println!(
        "{:>4}  {:<10}  {:<12}  {:<10}  {:<10}  {:>6}  {:>5}  {:>4}  {:>4}  address",
        "id", "key", "operator", "region", "state", "rep", "jobs", "ok", "fail"
    );
    for n in nodes {
        println!(
            "{:>4}  {:<10}  {:<12}  {:<10}  {:<10}  {:>6.3}  {:>5}  {:>4}  {:>4}  {}",
            n.id,
            n.public_key.get(..8).unwrap_or(""),
            operator_label(&n),
            n.region,
            n.state,
            n.reputation,
            n.active_jobs,
            n.successes,
            n.failures + n.timeouts,
            n.address.map_or_else(|| "-".into(), |a| a.to_string())
        );
    }
    Ok(())
}

/// The operator column: a verified operator key (64 hex digits, where the coordinator admits operators)
/// shortened to 8 digits with a `*` (the declared name is not what the coordinator trusts); else the
/// declared name.
fn operator_label(n: &NodeView) -> String {
    if n.operator.len() == 64 && n.operator.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("{}*", &n.operator[..8])
    } else {
        n.operator.clone()
    }
}
