//! `cairn name ...`: Cairn's registries (unique or duplicate names owned
//! by sessions). Values and keys are taken and printed as text.

use anyhow::{bail, Context};
use cairn_client::registry::{EventKind, Mode, Registered, Session};
use cairn_client::Client;

use super::{parse_lease_id, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum NameCommand {
    /// Create a registry (no-op if it exists with the same mode).
    Create(CreateArgs),
    /// Register KEY in REGISTRY with VALUE, owned by a session.
    Register(RegisterArgs),
    /// Remove the session's own entry for KEY.
    Unregister(UnregisterArgs),
    /// Print every entry of KEY: `<owner session hex> <value>` per line.
    Lookup(KeyArgs),
    /// Print the number of entries of KEY.
    Count(KeyArgs),
    /// Print the keys a session holds in REGISTRY, one per line.
    Keys(KeysArgs),
    /// Print register / unregister / value-change events until interrupted.
    Watch(WatchArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Unique,
    Duplicate,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub registry: String,
    #[arg(long, value_enum, default_value = "unique")]
    pub mode: ModeArg,
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    pub registry: String,
    pub key: String,
    pub value: String,
    /// Register for this existing session (hex) instead of a new one.
    #[arg(long, value_parser = parse_lease_id, conflicts_with = "hold")]
    pub session: Option<i64>,
    /// TTL of the new session, in seconds.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// Keep the new session alive, and the name registered, until
    /// interrupted (then close it). Without it the name lasts one TTL.
    #[arg(long)]
    pub hold: bool,
    /// Create the registry with this mode if it does not exist.
    #[arg(long, value_enum)]
    pub create: Option<ModeArg>,
}

#[derive(Debug, clap::Args)]
pub struct UnregisterArgs {
    pub registry: String,
    pub key: String,
    /// The owning session (hex).
    #[arg(long, value_parser = parse_lease_id)]
    pub session: i64,
}

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    pub registry: String,
    pub key: String,
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    pub registry: String,
    /// The session (hex).
    #[arg(long, value_parser = parse_lease_id)]
    pub session: i64,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    pub registry: String,
    /// Only this key (default: the whole registry).
    pub key: Option<String>,
    /// Start from this revision (default: changes from now on).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
}

fn mode(m: ModeArg) -> Mode {
    match m {
        ModeArg::Unique => Mode::Unique,
        ModeArg::Duplicate => Mode::Duplicate,
    }
}

pub async fn run(g: &GlobalArgs, command: NameCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    match command {
        NameCommand::Create(a) => {
            let created = client.create_registry(a.registry, mode(a.mode)).await?;
            println!("{}", if created { "created" } else { "exists" });
        }
        NameCommand::Register(a) => register(&client, a).await?,
        NameCommand::Unregister(a) => {
            if !client.unregister(a.session, a.registry, a.key).await? {
                bail!("session {:x} has no entry for that key", a.session);
            }
            println!("unregistered");
        }
        NameCommand::Lookup(a) => {
            for e in client.lookup(a.registry, a.key).await? {
                println!("{:x} {}", e.owner, String::from_utf8_lossy(&e.value));
            }
        }
        NameCommand::Count(a) => println!("{}", client.count(a.registry, a.key).await?),
        NameCommand::Keys(a) => {
            for k in client.registry_keys(a.registry, a.session).await? {
                println!("{}", String::from_utf8_lossy(&k));
            }
        }
        NameCommand::Watch(a) => watch(&client, a).await?,
    }
    Ok(())
}

async fn register(client: &Client, a: RegisterArgs) -> anyhow::Result<()> {
    if let Some(m) = a.create {
        client.create_registry(a.registry.clone(), mode(m)).await?;
    }
    let owned = match a.session {
        Some(_) => None,
        None => Some(
            Session::create(client, a.ttl)
                .await
                .context("create session")?,
        ),
    };
    let id = owned.as_ref().map_or(a.session.unwrap_or(0), Session::id);
    match client.register(id, a.registry, a.key, a.value).await? {
        Registered::Registered { .. } => println!("registered session={id:x}"),
        Registered::AlreadyRegistered { owner, value } => bail!(
            "already registered by session {owner:x} with value {}",
            String::from_utf8_lossy(&value)
        ),
        Registered::Existing(_) => bail!("unexpected answer: existing entries"),
    }
    let Some(session) = owned else { return Ok(()) };
    if !a.hold {
        eprintln!(
            "note: the name lasts until session {id:x} expires ({}s); use --hold to keep it",
            a.ttl
        );
        // Leave without closing: the session (and name) live one TTL.
        drop(session);
        return Ok(());
    }
    tokio::select! {
        why = session.lost() => bail!("session {id:x} lost: {why}"),
        _ = super::stop_signal() => {}
    }
    session.close().await.context("close session")?;
    Ok(())
}

async fn watch(client: &Client, a: WatchArgs) -> anyhow::Result<()> {
    let mut stream = client
        .watch_registry(a.registry, a.key.unwrap_or_default(), a.rev)
        .await?;
    loop {
        let events = tokio::select! {
            e = stream.next() => e?,
            _ = super::stop_signal() => return Ok(()),
        };
        let Some(events) = events else {
            bail!("the server ended the watch");
        };
        for e in events {
            let kind = match e.kind {
                EventKind::Registered => "REGISTERED",
                EventKind::Unregistered => "UNREGISTERED",
                EventKind::ValueChanged => "VALUE_CHANGED",
            };
            println!(
                "{kind} {} {:x} {} rev={}",
                String::from_utf8_lossy(&e.key),
                e.owner,
                String::from_utf8_lossy(&e.value),
                e.revision
            );
        }
    }
}
