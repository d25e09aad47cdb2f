//! `cairn fenced-put FENCE_KEY TOKEN KEY VALUE`: write KEY only if TOKEN is
//! at least the highest fencing token FENCE_KEY has seen (then record it),
//! in one transaction. For commands run by `cairn lock`, with
//! `$CAIRN_LOCK_TOKEN`: a holder that lost its lock while paused is
//! refused once a newer holder has written.

use anyhow::bail;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct FencedPutArgs {
    pub fence_key: String,
    pub token: i64,
    pub key: String,
    pub value: String,
}

/// Exit status for a write refused because of a stale token.
pub const STALE_EXIT_CODE: i32 = 4;

pub async fn run(g: &GlobalArgs, a: FencedPutArgs) -> anyhow::Result<()> {
    if a.token <= 0 {
        bail!("token must be positive");
    }
    let client = g.client().await?;
    if client
        .fenced_put(a.fence_key, a.token, a.key, a.value)
        .await?
    {
        println!("OK");
        return Ok(());
    }
    eprintln!("Error: rejected: fencing token {} is stale", a.token);
    std::process::exit(STALE_EXIT_CODE);
}
