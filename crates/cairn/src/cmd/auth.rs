//! `cairn auth enable|disable|status`.

use cairn_client::ResponseHeader;
use serde_json::json;

use super::output::{header_json, print_done, print_json};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Turn authentication on (needs a `root` user holding the `root` role).
    Enable,
    /// Turn authentication off (as root).
    Disable,
    /// Whether authentication is on, and the auth state's revision.
    Status,
}

pub async fn run(g: &GlobalArgs, cmd: AuthCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    let json = g.format(OutputFormat::Simple) == OutputFormat::Json;
    let done = |header: ResponseHeader, text: &str| print_done(json, &header, text);
    match cmd {
        AuthCommand::Enable => done(client.auth_enable().await?, "Authentication Enabled"),
        AuthCommand::Disable => done(client.auth_disable().await?, "Authentication Disabled"),
        AuthCommand::Status => {
            let r = client.auth_status().await?;
            if json {
                return print_json(&json!({
                    "header": header_json(&r.header),
                    "enabled": r.enabled,
                    "authRevision": r.auth_revision,
                }));
            }
            println!("Authentication Status: {}", r.enabled);
            println!("AuthRevision: {}", r.auth_revision);
            Ok(())
        }
    }
}
