//! `cairn put KEY [VALUE]`.

use std::io::{Read, Write};

use cairn_client::PutOptions;
use serde_json::json;

use super::output::{header_json, kv_json, print_json, write_kv};
use super::{parse_lease_id, GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    pub key: String,
    /// The value; read from standard input when left out (unless
    /// --ignore-value).
    pub value: Option<String>,
    /// Attach the key to this lease (hex ID).
    #[arg(long, value_parser = parse_lease_id)]
    pub lease: Option<i64>,
    /// Print the previous key-value.
    #[arg(long)]
    pub prev_kv: bool,
    /// Keep the current value.
    #[arg(long, conflicts_with = "value")]
    pub ignore_value: bool,
    /// Keep the current lease.
    #[arg(long, conflicts_with = "lease")]
    pub ignore_lease: bool,
}

pub async fn run(g: &GlobalArgs, args: PutArgs) -> anyhow::Result<()> {
    let value = match (&args.value, args.ignore_value) {
        (Some(v), _) => v.clone().into_bytes(),
        (None, true) => Vec::new(),
        (None, false) => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
    };
    let options = PutOptions {
        lease: args.lease.unwrap_or(0),
        prev_kv: args.prev_kv,
        ignore_value: args.ignore_value,
        ignore_lease: args.ignore_lease,
    };
    let client = g.client().await?;
    let r = client.put(args.key, value, options).await?;
    match g.format(OutputFormat::Simple) {
        OutputFormat::Json => {
            let mut v = json!({ "header": header_json(&r.header) });
            if let Some(prev) = &r.prev_kv {
                v["prev_kv"] = kv_json(prev);
            }
            print_json(&v)?;
        }
        OutputFormat::Simple | OutputFormat::Table => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "OK")?;
            if let Some(prev) = &r.prev_kv {
                write_kv(&mut out, prev, false)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
