//! `cairn del KEY [RANGE_END]`.

use std::io::Write;

use cairn_client::DeleteOptions;
use serde_json::json;

use super::output::{header_json, kv_json, print_json, write_kv};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct DelArgs {
    pub key: String,
    /// End of the range [KEY, RANGE_END).
    #[arg(conflicts_with_all = ["prefix", "from_key"])]
    pub range_end: Option<String>,
    /// Every key starting with KEY.
    #[arg(long, conflicts_with = "from_key")]
    pub prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    pub from_key: bool,
    /// Print the deleted key-values.
    #[arg(long)]
    pub prev_kv: bool,
}

pub async fn run(g: &GlobalArgs, args: DelArgs) -> anyhow::Result<()> {
    let options = DeleteOptions {
        prefix: args.prefix,
        from_key: args.from_key,
        range_end: args.range_end.map(String::into_bytes),
        prev_kv: args.prev_kv,
    };
    let client = g.client().await?;
    let r = client.delete(args.key, options).await?;
    match g.format(OutputFormat::Simple) {
        OutputFormat::Json => {
            let prev: Vec<_> = r.prev_kvs.iter().map(kv_json).collect();
            print_json(&json!({
                "header": header_json(&r.header),
                "deleted": r.deleted,
                "prev_kvs": prev,
            }))?;
        }
        OutputFormat::Simple | OutputFormat::Table => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", r.deleted)?;
            for kv in &r.prev_kvs {
                write_kv(&mut out, kv, false)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
