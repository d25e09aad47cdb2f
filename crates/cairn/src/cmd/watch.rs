//! `cairn watch KEY [RANGE_END]`: print events until Ctrl-C.

use std::io::Write;

use cairn_client::{WatchOptions, WatchResponse};
use futures::StreamExt;
use serde_json::json;

use super::output::{event_json, header_json, print_json, write_kv};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    pub key: String,
    /// End of the range [KEY, RANGE_END).
    #[arg(conflicts_with = "prefix")]
    pub range_end: Option<String>,
    /// Every key starting with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Start from this revision (0: from now on).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Print each event's previous key-value too.
    #[arg(long)]
    pub prev_kv: bool,
    /// Ask for periodic progress notifications (printed in JSON output).
    #[arg(long)]
    pub progress_notify: bool,
}

pub async fn run(g: &GlobalArgs, args: WatchArgs) -> anyhow::Result<()> {
    let format = g.format(OutputFormat::Simple);
    let options = WatchOptions {
        prefix: args.prefix,
        range_end: args.range_end.map(String::into_bytes),
        start_revision: args.rev,
        prev_kv: args.prev_kv,
        progress_notify: args.progress_notify,
        ..WatchOptions::default()
    };
    let client = g.client().await?;
    let mut stream = client.watch(args.key, options).await?;
    let stop = super::stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => {
                stream.cancel().await?;
                return Ok(());
            }
            next = stream.next() => match next {
                Some(Ok(resp)) => print_response(format, &resp)?,
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}

fn print_response(format: OutputFormat, r: &WatchResponse) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            let events: Vec<_> = r.events.iter().map(event_json).collect();
            print_json(&json!({
                "header": header_json(&r.header),
                "watch_id": r.watch_id,
                "events": events,
            }))?;
        }
        OutputFormat::Simple | OutputFormat::Table => {
            let mut out = std::io::stdout().lock();
            for e in &r.events {
                writeln!(out, "{}", e.event_type)?;
                if let Some(prev) = &e.prev_kv {
                    write_kv(&mut out, prev, false)?;
                }
                // As etcdctl: a delete prints an empty value line.
                write_kv(&mut out, &e.kv, false)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
