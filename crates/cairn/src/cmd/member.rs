//! `cairn member list|add|remove|promote|update` (IDs in hex).

use cairn_client::{Member, ResponseHeader};
use serde_json::{json, Value};

use super::output::{header_json, print_json, Table};
use super::{parse_hex_u64, GlobalArgs, OutputFormat};

#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {
    /// Every member.
    List,
    /// Add a member; prints the settings to start it with.
    Add {
        /// Name the new member will be started with.
        name: String,
        /// Comma-separated peer URLs of the new member.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member.
    Remove {
        #[arg(value_parser = parse_hex_u64)]
        id: u64,
    },
    /// Turn a learner into a voting member.
    Promote {
        #[arg(value_parser = parse_hex_u64)]
        id: u64,
    },
    /// Change a member's peer URLs.
    Update {
        #[arg(value_parser = parse_hex_u64)]
        id: u64,
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
    },
}

fn member_json(m: &Member) -> Value {
    json!({
        "ID": m.id,
        "name": m.name,
        "peerURLs": m.peer_urls,
        "clientURLs": m.client_urls,
        "isLearner": m.is_learner,
    })
}

fn members_json(header: &ResponseHeader, members: &[Member]) -> Value {
    let ms: Vec<_> = members.iter().map(member_json).collect();
    json!({ "header": header_json(header), "members": ms })
}

fn status(m: &Member) -> &'static str {
    if m.name.is_empty() {
        "unstarted"
    } else {
        "started"
    }
}

fn print_list(
    format: OutputFormat,
    header: &ResponseHeader,
    members: &[Member],
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => print_json(&members_json(header, members))?,
        OutputFormat::Simple => {
            for m in members {
                println!(
                    "{:x}, {}, {}, {}, {}, {}",
                    m.id,
                    status(m),
                    m.name,
                    m.peer_urls.join(","),
                    m.client_urls.join(","),
                    m.is_learner
                );
            }
        }
        OutputFormat::Table => {
            let mut t = Table::new(&[
                "ID",
                "STATUS",
                "NAME",
                "PEER ADDRS",
                "CLIENT ADDRS",
                "IS LEARNER",
            ]);
            for m in members {
                t.row(vec![
                    format!("{:x}", m.id),
                    status(m).into(),
                    m.name.clone(),
                    m.peer_urls.join(","),
                    m.client_urls.join(","),
                    m.is_learner.to_string(),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}

pub async fn run(g: &GlobalArgs, cmd: MemberCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    let json = g.format(OutputFormat::Simple) == OutputFormat::Json;
    match cmd {
        MemberCommand::List => {
            let r = client.member_list().await?;
            print_list(g.format(OutputFormat::Table), &r.header, &r.members)?;
        }
        MemberCommand::Add {
            name,
            peer_urls,
            learner,
        } => {
            let r = client.member_add(peer_urls.clone(), learner).await?;
            if json {
                let mut v = members_json(&r.header, &r.members);
                v["member"] = member_json(&r.member);
                print_json(&v)?;
                return Ok(());
            }
            let kind = if learner {
                "Member (learner)"
            } else {
                "Member"
            };
            println!(
                "{kind} {:x} added to cluster {:x}\n",
                r.member.id, r.header.cluster_id
            );
            let mut initial = Vec::new();
            for m in &r.members {
                let n = if m.id == r.member.id {
                    name.as_str()
                } else {
                    m.name.as_str()
                };
                for u in &m.peer_urls {
                    initial.push(format!("{n}={u}"));
                }
            }
            println!("CAIRN_NAME=\"{name}\"");
            println!("CAIRN_INITIAL_CLUSTER=\"{}\"", initial.join(","));
            println!("CAIRN_ADVERTISE_PEER=\"{}\"", peer_urls.join(","));
            println!("CAIRN_INITIAL_CLUSTER_STATE=\"existing\"");
        }
        MemberCommand::Remove { id } => {
            let r = client.member_remove(id).await?;
            if json {
                print_json(&members_json(&r.header, &r.members))?;
            } else {
                println!(
                    "Member {id:x} removed from cluster {:x}",
                    r.header.cluster_id
                );
            }
        }
        MemberCommand::Promote { id } => {
            let r = client.member_promote(id).await?;
            if json {
                print_json(&members_json(&r.header, &r.members))?;
            } else {
                println!(
                    "Member {id:x} promoted in cluster {:x}",
                    r.header.cluster_id
                );
            }
        }
        MemberCommand::Update { id, peer_urls } => {
            let r = client.member_update(id, peer_urls).await?;
            if json {
                print_json(&members_json(&r.header, &r.members))?;
            } else {
                println!("Member {id:x} updated in cluster {:x}", r.header.cluster_id);
            }
        }
    }
    Ok(())
}
