//! `cairn move-leader ID` (hex member ID).

use serde_json::json;

use super::output::{header_json, print_json};
use super::{parse_hex_u64, GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct MoveLeaderArgs {
    /// Member ID (hex) of the new leader; must be a voting member.
    #[arg(value_parser = parse_hex_u64)]
    pub target: u64,
}

pub async fn run(g: &GlobalArgs, args: MoveLeaderArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    // Who leads now, for the message (best effort).
    let before = client
        .status_all()
        .await
        .into_iter()
        .find_map(|(_, r)| r.ok().map(|s| s.leader).filter(|l| *l != 0));
    let header = client.move_leader(args.target).await?;
    if g.format(OutputFormat::Simple) == OutputFormat::Json {
        return print_json(&json!({ "header": header_json(&header) }));
    }
    match before {
        Some(from) => println!("Leadership transferred from {from:x} to {:x}", args.target),
        None => println!("Leadership transferred to {:x}", args.target),
    }
    Ok(())
}
