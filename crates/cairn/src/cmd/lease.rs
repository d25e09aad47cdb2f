//! `cairn lease grant|revoke|timetolive|list|keep-alive` (IDs in hex).

use cairn_client::KeepAliveState;
use serde_json::json;

use super::output::{base64, header_json, print_json};
use super::{parse_lease_id, GlobalArgs, OutputFormat};

#[derive(Debug, clap::Subcommand)]
pub enum LeaseCommand {
    /// Create a lease of TTL seconds.
    Grant { ttl: i64 },
    /// Revoke a lease and delete its keys.
    Revoke {
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Remaining and granted TTL of a lease.
    Timetolive {
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Also list the attached keys.
        #[arg(long)]
        keys: bool,
    },
    /// Every live lease.
    List,
    /// Keep a lease alive until Ctrl-C (or renew once).
    KeepAlive {
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
}

pub async fn run(g: &GlobalArgs, cmd: LeaseCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    let json = g.format(OutputFormat::Simple) == OutputFormat::Json;
    match cmd {
        LeaseCommand::Grant { ttl } => {
            let r = client.lease_grant(ttl, 0).await?;
            if json {
                print_json(&json!({
                    "header": header_json(&r.header), "ID": r.id, "TTL": r.ttl,
                }))?;
            } else {
                println!("lease {:016x} granted with TTL({}s)", r.id, r.ttl);
            }
        }
        LeaseCommand::Revoke { id } => {
            let r = client.lease_revoke(id).await?;
            if json {
                print_json(&json!({ "header": header_json(&r.header) }))?;
            } else {
                println!("lease {id:016x} revoked");
            }
        }
        LeaseCommand::Timetolive { id, keys } => {
            let r = client.lease_time_to_live(id, keys).await?;
            if json {
                let ks: Vec<_> = r.keys.iter().map(|k| base64(k)).collect();
                print_json(&json!({
                    "header": header_json(&r.header),
                    "ID": r.id,
                    "TTL": r.ttl,
                    "grantedTTL": r.granted_ttl,
                    "keys": ks,
                }))?;
            } else if r.ttl == -1 {
                println!("lease {id:016x} already expired");
            } else {
                let mut line = format!(
                    "lease {id:016x} granted with TTL({}s), remaining({}s)",
                    r.granted_ttl, r.ttl
                );
                if keys {
                    let ks: Vec<String> = r
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    line.push_str(&format!(", attached keys([{}])", ks.join(" ")));
                }
                println!("{line}");
            }
        }
        LeaseCommand::List => {
            let r = client.lease_leases().await?;
            if json {
                let leases: Vec<_> = r.leases.iter().map(|id| json!({ "ID": id })).collect();
                print_json(&json!({ "header": header_json(&r.header), "leases": leases }))?;
            } else {
                println!("found {} leases", r.leases.len());
                for id in r.leases {
                    println!("{id:016x}");
                }
            }
        }
        LeaseCommand::KeepAlive { id, once } => {
            let print = |ttl: i64, header: Option<&cairn_client::ResponseHeader>| {
                if json {
                    let mut v = json!({ "ID": id, "TTL": ttl });
                    if let Some(h) = header {
                        v["header"] = header_json(h);
                    }
                    print_json(&v)
                } else {
                    println!("lease {id:016x} keepalived with TTL({ttl})");
                    Ok(())
                }
            };
            if once {
                let r = client.keep_alive_once(id).await?;
                print(r.ttl, Some(&r.header))?;
                return Ok(());
            }
            let mut keeper = client.lease_keep_alive(id).await?;
            if let Some(ttl) = keeper.ttl() {
                print(ttl, None)?;
            }
            let stop = super::stop_signal();
            tokio::pin!(stop);
            loop {
                let state = tokio::select! {
                    _ = &mut stop => return Ok(()),
                    s = keeper.changed() => s,
                };
                match state {
                    Some(KeepAliveState::Alive { ttl }) => print(ttl, None)?,
                    Some(KeepAliveState::Expired) | None => {
                        println!("lease {id:016x} expired or revoked.");
                        return Ok(());
                    }
                    Some(KeepAliveState::Failed(e)) => {
                        anyhow::bail!("lease {id:016x}: keep-alive failed: {e}")
                    }
                    Some(other) => anyhow::bail!("lease {id:016x}: {other:?}"),
                }
            }
        }
    }
    Ok(())
}
