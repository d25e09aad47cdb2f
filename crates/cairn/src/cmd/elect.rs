//! `cairn elect NAME VALUE`: campaign (in a new session) until elected,
//! print `NAME VALUE token=<fencing token>`, and lead until interrupted
//! (then resign). `cairn elect NAME --listen` prints each leader instead.

use anyhow::{bail, Context};
use cairn_client::registry::Session;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct ElectArgs {
    pub name: String,
    /// The value to proclaim as leader.
    #[arg(required_unless_present = "listen")]
    pub value: Option<String>,
    /// Print the leader and every change instead of campaigning.
    #[arg(long)]
    pub listen: bool,
    /// TTL of the candidate's session, in seconds.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
}

pub async fn run(g: &GlobalArgs, a: ElectArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    if a.listen {
        let mut observer = client.observe(a.name.clone()).await?;
        loop {
            let next = tokio::select! {
                n = observer.next() => n?,
                _ = super::stop_signal() => return Ok(()),
            };
            match next {
                None => bail!("the server ended the stream"),
                Some(None) => println!("{} (no leader)", a.name),
                Some(Some(l)) => println!(
                    "{} {} token={} session={:x}",
                    a.name,
                    String::from_utf8_lossy(&l.value),
                    l.fencing_token,
                    l.session
                ),
            }
        }
    }
    let value = a.value.unwrap_or_default();
    let session = Session::create(&client, a.ttl)
        .await
        .context("create session")?;
    let id = session.id();
    let token = tokio::select! {
        t = client.campaign(a.name.clone(), id, value.clone()) => t?,
        why = session.lost() => bail!("session {id:x} lost while campaigning: {why}"),
    };
    println!("{} {value} token={token} session={id:x}", a.name);
    tokio::select! {
        why = session.lost() => bail!("leadership lost: session {id:x}: {why}"),
        _ = super::stop_signal() => {}
    }
    client.resign(a.name, id, token).await?;
    session.close().await?;
    Ok(())
}
