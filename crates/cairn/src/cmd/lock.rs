//! `cairn lock NAME [-- COMMAND...]`: hold a lock (in a new session) while
//! COMMAND runs, then release it. COMMAND gets the fencing token in
//! `CAIRN_LOCK_TOKEN` (and the session in `CAIRN_SESSION`) to pass to the
//! resource it writes. Without COMMAND, print the token and hold the lock
//! until interrupted.

use anyhow::{bail, Context};
use cairn_client::registry::Session;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    pub name: String,
    /// TTL of the lock's session, in seconds: how long the lock outlives
    /// this process if it dies.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// The command to run while holding the lock.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Exit status when the session was lost while COMMAND ran (COMMAND is
/// killed: it no longer holds the lock).
const LOST_EXIT_CODE: i32 = 3;

pub async fn run(g: &GlobalArgs, a: LockArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let session = Session::create(&client, a.ttl)
        .await
        .context("create session")?;
    let id = session.id();
    let lock = tokio::select! {
        l = client.lock(a.name.clone(), id) => l?,
        why = session.lost() => bail!("session {id:x} lost while waiting: {why}"),
    };
    let token = lock.fencing_token();
    let Some((program, args)) = a.command.split_first() else {
        println!("{} token={token} session={id:x}", a.name);
        tokio::select! {
            why = session.lost() => bail!("lock lost: session {id:x}: {why}"),
            _ = super::stop_signal() => {}
        }
        lock.unlock().await?;
        session.close().await?;
        return Ok(());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("CAIRN_LOCK_TOKEN", token.to_string())
        .env("CAIRN_SESSION", format!("{id:x}"))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let status = tokio::select! {
        s = child.wait() => s.context("waiting for the command")?,
        why = session.lost() => {
            let _ = child.kill().await;
            eprintln!("Error: lock lost (session {id:x}: {why}); command killed");
            std::process::exit(LOST_EXIT_CODE);
        }
    };
    lock.unlock().await?;
    session.close().await?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
