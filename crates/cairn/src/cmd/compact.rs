//! `cairn compact REV`.

use serde_json::json;

use super::output::{header_json, print_json};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Discard history before this revision.
    pub revision: i64,
    /// Wait until the compaction is physically applied.
    #[arg(long)]
    pub physical: bool,
}

pub async fn run(g: &GlobalArgs, args: CompactArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let r = client.compact(args.revision, args.physical).await?;
    match g.format(OutputFormat::Simple) {
        OutputFormat::Json => print_json(&json!({ "header": header_json(&r.header) }))?,
        _ => println!("compacted revision {}", args.revision),
    }
    Ok(())
}
