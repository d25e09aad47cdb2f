//! `cairn claims ...`: block claims (the dedup registry). Keys are parsed
//! per the namespace's key kind (read from the server unless `--key-kind`
//! is given): u64 / u128 in decimal or `0x` hex, bytes in hex. Commands
//! on keys print one line per key: `<key> <STATUS> [value]`.

use std::time::Duration;

use anyhow::{bail, Context};
use cairn_client::claims::{
    parse_eviction, parse_key_kind, ClaimKey, ClaimsClient, ClaimsConfig, EvictionPolicy, KeyKind,
    NamespaceConfig, OffloadStatus, RegisterEntry, RegisterStatus,
};
use cairn_client::registry::Session;
use cairn_client::Client;

use super::{parse_duration, parse_lease_id, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum ClaimsCommand {
    /// Create a namespace (no-op if it exists with the same configuration).
    Create(CreateArgs),
    /// Ask to store blocks: per key GRANTED (the session holds the lease),
    /// ALREADY_STORED or LEASED (another session holds it).
    CanOffload(OffloadArgs),
    /// Record stored blocks (KEY=VALUE): per key STORED, ALREADY_STORED,
    /// LEASED_BY_OTHER or REJECTED_FULL.
    Register(RegisterArgs),
    /// Look keys up: per key STORED <value> or MISSING (with --prefix, the
    /// keys after the first miss are SKIPPED).
    Match(MatchArgs),
    /// Remove entries and release leases on the keys.
    Remove(KeysArgs),
    /// Counters of a namespace (or of all).
    Stats(StatsArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub namespace: String,
    /// Most stored entries.
    #[arg(long, default_value_t = 1_000_000)]
    pub capacity: u64,
    /// Lease TTL (e.g. 30s, 1500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// none, tail or positional.
    #[arg(long, default_value = "none", value_parser = parse_eviction)]
    pub eviction: EvictionPolicy,
    /// u64, u128 or bytes.
    #[arg(long, default_value = "u64", value_parser = parse_key_kind)]
    pub key_kind: KeyKind,
    #[arg(long, default_value_t = 256)]
    pub max_key_bytes: u32,
    #[arg(long, default_value_t = 1024)]
    pub max_value_bytes: u32,
    #[arg(long, default_value_t = 1024)]
    pub max_metadata_bytes: u32,
}

/// How keys are parsed.
#[derive(Debug, clap::Args)]
pub struct KeyKindArg {
    /// Parse keys as u64, u128 or bytes (default: the namespace's kind).
    #[arg(long, value_parser = parse_key_kind)]
    pub key_kind: Option<KeyKind>,
}

/// Which session owns the leases.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// Act for this existing session (hex, e.g. from `cairn lease grant`)
    /// instead of a new one.
    #[arg(long, value_parser = parse_lease_id, conflicts_with = "hold")]
    pub session: Option<i64>,
    /// TTL of the new session, in seconds: its leases end at most this
    /// long after the command exits.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// Keep the new session (and its leases) alive until interrupted, then
    /// close it, releasing them.
    #[arg(long)]
    pub hold: bool,
}

#[derive(Debug, clap::Args)]
pub struct OffloadArgs {
    pub namespace: String,
    #[arg(required = true)]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub kind: KeyKindArg,
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    pub namespace: String,
    /// KEY=VALUE pairs (the value is text).
    #[arg(required = true)]
    pub entries: Vec<String>,
    /// The registering session (hex): releases its own leases on the keys.
    /// Without it, keys leased by any live session are refused.
    #[arg(long, value_parser = parse_lease_id)]
    pub session: Option<i64>,
    /// Parent key of every entry (the previous block of the chain).
    #[arg(long)]
    pub parent: Option<String>,
    /// Metadata (text) of every entry.
    #[arg(long, default_value = "")]
    pub metadata: String,
    #[command(flatten)]
    pub kind: KeyKindArg,
}

#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    pub namespace: String,
    #[arg(required = true)]
    pub keys: Vec<String>,
    /// Only the longest stored prefix of the keys (match_prefix).
    #[arg(long)]
    pub prefix: bool,
    #[command(flatten)]
    pub kind: KeyKindArg,
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    pub namespace: String,
    #[arg(required = true)]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub kind: KeyKindArg,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The namespace (default: all).
    pub namespace: Option<String>,
}

pub async fn run(g: &GlobalArgs, command: ClaimsCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    match command {
        ClaimsCommand::Create(a) => {
            let config = NamespaceConfig {
                capacity: a.capacity,
                lease_ttl_ms: a.lease_ttl.as_millis() as u64,
                eviction: a.eviction,
                key_kind: a.key_kind,
                max_key_bytes: a.max_key_bytes,
                max_value_bytes: a.max_value_bytes,
                max_metadata_bytes: a.max_metadata_bytes,
            };
            let existed = claims(&client, 0, &a.namespace)
                .create_namespace(&config)
                .await?;
            println!("{}", if existed { "exists" } else { "created" });
        }
        ClaimsCommand::CanOffload(a) => can_offload(&client, a).await?,
        ClaimsCommand::Register(a) => register(&client, a).await?,
        ClaimsCommand::Match(a) => {
            let c = claims(&client, 0, &a.namespace);
            let keys = parse_keys(&c, &a.keys, a.kind.key_kind).await?;
            let found = if a.prefix {
                c.match_prefix(&keys).await?
            } else {
                c.match_all(&keys).await?
            };
            let mut found = found.into_iter().peekable();
            let mut missed = false;
            for (i, k) in keys.iter().enumerate() {
                match found.next_if(|m| m.index == i) {
                    Some(m) => println!("{k} STORED {}", String::from_utf8_lossy(&m.value)),
                    None if a.prefix && missed => println!("{k} SKIPPED"),
                    None => {
                        missed = true;
                        println!("{k} MISSING");
                    }
                }
            }
        }
        ClaimsCommand::Remove(a) => {
            let c = claims(&client, 0, &a.namespace);
            let keys = parse_keys(&c, &a.keys, a.kind.key_kind).await?;
            let r = c.remove(&keys).await?;
            println!(
                "removed={} leases_released={}",
                r.removed, r.leases_released
            );
        }
        ClaimsCommand::Stats(a) => {
            let c = claims(&client, 0, a.namespace.as_deref().unwrap_or("default"));
            let all = match &a.namespace {
                Some(_) => vec![c.stats().await?],
                None => c.stats_all().await?,
            };
            for s in all {
                println!(
                    "{} entries={} capacity={} active_leases={} granted={} refreshed={} \
                     denied={} already_stored={} expired={} released={} converted={} \
                     registered={} evicted={} removed={} match_hits={} match_misses={}",
                    s.namespace,
                    s.entries,
                    s.config.capacity,
                    s.active_leases,
                    s.granted,
                    s.refreshed,
                    s.denied,
                    s.already_stored,
                    s.expired,
                    s.released,
                    s.converted,
                    s.registered,
                    s.evicted,
                    s.removed,
                    s.match_hits,
                    s.match_misses
                );
            }
        }
    }
    Ok(())
}

fn claims(client: &Client, session: i64, namespace: &str) -> ClaimsClient {
    let config = ClaimsConfig::builder()
        .namespace(namespace)
        .request_timeout(client.options().request_timeout)
        .build();
    ClaimsClient::new(client, session, config)
}

/// Parse keys as `kind`, or as the namespace's kind.
async fn parse_keys(
    c: &ClaimsClient,
    keys: &[String],
    kind: Option<KeyKind>,
) -> anyhow::Result<Vec<ClaimKey>> {
    let kind = match kind {
        Some(k) => k,
        None => {
            c.stats()
                .await
                .context("read the namespace's key kind")?
                .config
                .key_kind
        }
    };
    keys.iter()
        .map(|k| parse_key(k, kind).map_err(anyhow::Error::msg))
        .collect()
}

/// A u64 / u128 in decimal or `0x` hex; bytes in hex (`0x` optional).
pub fn parse_key(s: &str, kind: KeyKind) -> Result<ClaimKey, String> {
    let s = s.trim();
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
    let bad = |what: &str| format!("{s:?} is not {what}");
    match kind {
        KeyKind::U64 => match hex {
            Some(h) => u64::from_str_radix(h, 16),
            None => s.parse(),
        }
        .map(ClaimKey::U64)
        .map_err(|_| bad("a u64 (decimal or 0x hex)")),
        KeyKind::U128 => match hex {
            Some(h) => u128::from_str_radix(h, 16),
            None => s.parse(),
        }
        .map(ClaimKey::U128)
        .map_err(|_| bad("a u128 (decimal or 0x hex)")),
        KeyKind::Bytes => {
            let h = hex.unwrap_or(s);
            if h.is_empty() || !h.is_ascii() || !h.len().is_multiple_of(2) {
                return Err(bad("an even number of hex digits"));
            }
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map(ClaimKey::Bytes)
                .map_err(|_| bad("hex bytes"))
        }
    }
}

fn offload_word(s: OffloadStatus) -> &'static str {
    match s {
        OffloadStatus::Granted => "GRANTED",
        OffloadStatus::AlreadyStored => "ALREADY_STORED",
        OffloadStatus::Leased => "LEASED",
    }
}

fn register_word(s: RegisterStatus) -> &'static str {
    match s {
        RegisterStatus::Stored => "STORED",
        RegisterStatus::AlreadyStored => "ALREADY_STORED",
        RegisterStatus::LeasedByOther => "LEASED_BY_OTHER",
        RegisterStatus::RejectedFull => "REJECTED_FULL",
    }
}

async fn can_offload(client: &Client, a: OffloadArgs) -> anyhow::Result<()> {
    let owned = match a.session.session {
        Some(_) => None,
        None => Some(
            Session::create(client, a.session.ttl)
                .await
                .context("create session")?,
        ),
    };
    let id = owned
        .as_ref()
        .map_or(a.session.session.unwrap_or(0), Session::id);
    let c = claims(client, id, &a.namespace);
    let keys = parse_keys(&c, &a.keys, a.kind.key_kind).await?;
    let r = c.can_offload(&keys).await?;
    for (k, s) in keys.iter().zip(&r.statuses) {
        println!("{k} {}", offload_word(*s));
    }
    let Some(session) = owned else { return Ok(()) };
    eprintln!("session={id:x}");
    if !a.session.hold {
        eprintln!(
            "note: the leases last until session {id:x} expires ({}s); use --hold to keep them",
            a.session.ttl
        );
        return Ok(());
    }
    tokio::select! {
        why = session.lost() => bail!("session {id:x} lost: {why}"),
        _ = super::stop_signal() => {}
    }
    session.close().await.context("close session")?;
    Ok(())
}

async fn register(client: &Client, a: RegisterArgs) -> anyhow::Result<()> {
    let c = claims(client, a.session.unwrap_or(0), &a.namespace);
    let kind = match a.kind.key_kind {
        Some(k) => k,
        None => c.stats().await?.config.key_kind,
    };
    let parent = a
        .parent
        .as_deref()
        .map(|p| parse_key(p, kind))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut entries = Vec::new();
    for pair in &a.entries {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("{pair:?} is not KEY=VALUE");
        };
        entries.push(RegisterEntry {
            key: parse_key(k, kind).map_err(anyhow::Error::msg)?,
            value: v.as_bytes().to_vec(),
            metadata: a.metadata.as_bytes().to_vec(),
            parent: parent.clone(),
            position: None,
        });
    }
    let r = c.register(&entries).await?;
    for (e, s) in entries.iter().zip(&r.statuses) {
        println!("{} {}", e.key, register_word(*s));
    }
    if r.evicted > 0 {
        eprintln!("evicted {} entries to make room", r.evicted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_per_kind() {
        assert_eq!(parse_key("42", KeyKind::U64), Ok(ClaimKey::U64(42)));
        assert_eq!(parse_key("0x2a", KeyKind::U64), Ok(ClaimKey::U64(42)));
        assert_eq!(
            parse_key("0xffffffffffffffffffffffffffffffff", KeyKind::U128),
            Ok(ClaimKey::U128(u128::MAX))
        );
        assert_eq!(parse_key("7", KeyKind::U128), Ok(ClaimKey::U128(7)));
        assert_eq!(
            parse_key("0a0B", KeyKind::Bytes),
            Ok(ClaimKey::Bytes(vec![10, 11]))
        );
        assert_eq!(
            parse_key("0xff", KeyKind::Bytes),
            Ok(ClaimKey::Bytes(vec![255]))
        );
        assert!(parse_key("abc", KeyKind::Bytes).is_err());
        assert!(parse_key("éé", KeyKind::Bytes).is_err());
        assert!(parse_key("-1", KeyKind::U64).is_err());
        assert!(parse_key("0x1ffffffffffffffff", KeyKind::U64).is_err());
        assert!(parse_key("zz", KeyKind::U128).is_err());
    }
}
