//! `cairn status`: a table over every endpoint.

use cairn_client::StatusResponse;
use serde_json::json;

use super::output::{header_json, human_bytes, print_json, Table};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

pub async fn run(g: &GlobalArgs, _args: StatusArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let results = client.status_all().await;
    let mut ok: Vec<(String, StatusResponse)> = Vec::new();
    for (endpoint, r) in results {
        match r {
            Ok(s) => ok.push((endpoint, s)),
            Err(e) => eprintln!("Failed to get the status of endpoint {endpoint} ({e})"),
        }
    }
    if ok.is_empty() {
        anyhow::bail!("no endpoint answered");
    }
    match g.format(OutputFormat::Table) {
        OutputFormat::Json => {
            let list: Vec<_> = ok
                .iter()
                .map(|(e, s)| {
                    json!({
                        "Endpoint": e,
                        "Status": {
                            "header": header_json(&s.header),
                            "version": s.version,
                            "dbSize": s.db_size,
                            "dbSizeInUse": s.db_size_in_use,
                            "leader": s.leader,
                            "raftIndex": s.raft_index,
                            "raftTerm": s.raft_term,
                            "raftAppliedIndex": s.raft_applied_index,
                            "errors": s.errors,
                            "isLearner": s.is_learner,
                        }
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list))?;
        }
        OutputFormat::Simple => {
            for (e, s) in &ok {
                println!(
                    "{e}, {:x}, {}, {}, {}, {}, {}, {}, {}, {}",
                    s.header.member_id,
                    s.version,
                    human_bytes(s.db_size),
                    s.is_leader(),
                    s.is_learner,
                    s.raft_term,
                    s.raft_index,
                    s.raft_applied_index,
                    s.errors.join(", ")
                );
            }
        }
        OutputFormat::Table => {
            let mut t = Table::new(&[
                "ENDPOINT",
                "ID",
                "VERSION",
                "DB SIZE",
                "IS LEADER",
                "IS LEARNER",
                "RAFT TERM",
                "RAFT INDEX",
                "RAFT APPLIED INDEX",
                "ERRORS",
            ]);
            for (e, s) in &ok {
                t.row(vec![
                    e.clone(),
                    format!("{:x}", s.header.member_id),
                    s.version.clone(),
                    human_bytes(s.db_size),
                    s.is_leader().to_string(),
                    s.is_learner.to_string(),
                    s.raft_term.to_string(),
                    s.raft_index.to_string(),
                    s.raft_applied_index.to_string(),
                    s.errors.join(", "),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}
