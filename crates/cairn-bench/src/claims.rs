//! The block-claims workload (Cairn only, `cairn.v1.Claims`): per batch
//! size B, three rows —
//! - `claims-offload/B`: CanOffload of B fresh keys (each granted a lease
//!   to the client's session, so every op writes B leases);
//! - `claims-register/B`: Register of B fresh keys;
//! - `claims-match/B`: MatchPrefix of B keys one client registered in one
//!   batch (so the whole list matches).
//!
//! One op is one request; the row's detail gives keys/s (ops/s × B), the
//! number the target is stated in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use cairn_proto::cairn::v1::claims_client::ClaimsClient;
use cairn_proto::cairn::v1::{
    key, CanOffloadRequest, ClaimsRegisterRequest, CreateNamespaceRequest, EvictionPolicy, Key,
    KeyKind, KeyList, MatchRequest, NamespaceConfig, OffloadStatus, RegisterEntry, RegisterStatus,
};
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::LeaseGrantRequest;
use tonic::transport::Channel;

use crate::conn::{self, Pool};
use crate::driver::{drive, Rng, Worker};
use crate::report::Row;
use crate::workloads::Params;

/// Largest batch the server takes in one request.
pub const MAX_BATCH: usize = 10_000;

/// One batch size of `--claims-batches`: in 1..=10,000.
pub fn parse_batch(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("bad batch size {s:?}: expected e.g. 16,1000"))?;
    if !(1..=MAX_BATCH).contains(&n) {
        return Err(format!("batch size {n} is not in 1..={MAX_BATCH}"));
    }
    Ok(n)
}

/// Key `seq` of client `client` in run `salt`: distinct for distinct
/// (client, seq) within a run, spread over the u64 space like hashes.
fn block_key(salt: u64, client: usize, seq: u64) -> u64 {
    let mut r = Rng::new(salt ^ ((client as u64) << 40) ^ seq);
    r.next_u64()
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// What the rows of one batch size share: the namespace, one session per
/// client, and how many keys each client has registered (for matching).
struct Setup {
    namespace: String,
    sessions: Vec<i64>,
    salt: u64,
}

async fn setup(
    pool: &Pool,
    clients: usize,
    lease_ttl_ms: u64,
    p: &Params,
) -> anyhow::Result<Setup> {
    let salt = Rng::for_client(clients).next_u64();
    let namespace = format!("{}claims-{salt:016x}", p.key_prefix.replace('/', "-"));
    let mut claims = ClaimsClient::new(pool.get(0));
    claims
        .create_namespace(conn::req(CreateNamespaceRequest {
            namespace: namespace.clone(),
            config: Some(NamespaceConfig {
                // Room for every key a long run registers; the tail policy
                // keeps the namespace from refusing if it fills anyway.
                capacity: 50_000_000,
                lease_ttl_ms,
                eviction: EvictionPolicy::Tail as i32,
                key_kind: KeyKind::U64 as i32,
                // Register writes an 8-byte value (the key's number).
                max_value_bytes: 64,
                ..Default::default()
            }),
        }))
        .await
        .context("creating the bench namespace")?;
    let mut sessions = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut lease = LeaseClient::new(pool.get(i));
        let r = lease
            .lease_grant(conn::req(LeaseGrantRequest { ttl: 300, id: 0 }))
            .await
            .context("granting a session lease")?
            .into_inner();
        if !r.error.is_empty() {
            bail!("granting a session lease: {}", r.error);
        }
        sessions.push(r.id);
    }
    Ok(Setup {
        namespace,
        sessions,
        salt,
    })
}

struct OffloadWorker {
    claims: ClaimsClient<Channel>,
    namespace: String,
    session: i64,
    batch: usize,
    client: usize,
    salt: u64,
    /// Next key number; offload keys count down from the top so they never
    /// meet the keys the register row writes.
    seq: u64,
}

impl Worker for OffloadWorker {
    async fn op(&mut self) -> Result<(), String> {
        let keys: Vec<u64> = (0..self.batch as u64)
            .map(|i| block_key(self.salt, self.client, u64::MAX - self.seq - i))
            .collect();
        self.seq += self.batch as u64;
        let r = self
            .claims
            .can_offload(conn::req(CanOffloadRequest {
                namespace: self.namespace.clone(),
                session_id: self.session,
                keys: Some(KeyList {
                    u64s: keys,
                    ..Default::default()
                }),
            }))
            .await
            .map_err(status_text)?
            .into_inner();
        if r.statuses.len() != self.batch {
            return Err(format!(
                "{} statuses for {} keys",
                r.statuses.len(),
                self.batch
            ));
        }
        if r.statuses.contains(&(OffloadStatus::Unspecified as i32)) {
            return Err("a key without a status".into());
        }
        Ok(())
    }
}

struct RegisterWorker {
    claims: ClaimsClient<Channel>,
    namespace: String,
    session: i64,
    batch: usize,
    client: usize,
    salt: u64,
    /// Keys registered so far by this client; shared with the match row.
    registered: Arc<AtomicU64>,
}

impl Worker for RegisterWorker {
    async fn op(&mut self) -> Result<(), String> {
        let first = self.registered.load(Ordering::Relaxed);
        let entries: Vec<RegisterEntry> = (0..self.batch as u64)
            .map(|i| RegisterEntry {
                key: Some(Key {
                    kind: Some(key::Kind::U64(block_key(self.salt, self.client, first + i))),
                }),
                value: (first + i).to_le_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        let r = self
            .claims
            .register(conn::req(ClaimsRegisterRequest {
                namespace: self.namespace.clone(),
                session_id: self.session,
                entries,
            }))
            .await
            .map_err(status_text)?
            .into_inner();
        let stored = r
            .statuses
            .iter()
            .filter(|s| {
                **s == RegisterStatus::Stored as i32 || **s == RegisterStatus::AlreadyStored as i32
            })
            .count();
        if stored != self.batch {
            return Err(format!("{stored} of {} keys stored", self.batch));
        }
        self.registered
            .store(first + self.batch as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct MatchWorker {
    claims: ClaimsClient<Channel>,
    namespace: String,
    batch: usize,
    salt: u64,
    rng: Rng,
    /// Per client, keys it registered (whole batches, numbered from 0).
    registered: Vec<u64>,
}

impl Worker for MatchWorker {
    async fn op(&mut self) -> Result<(), String> {
        let client = self.rng.below(self.registered.len() as u64) as usize;
        let batches = self.registered[client] / self.batch as u64;
        if batches == 0 {
            return Err("nothing registered to match".into());
        }
        let first = self.rng.below(batches) * self.batch as u64;
        let keys: Vec<u64> = (0..self.batch as u64)
            .map(|i| block_key(self.salt, client, first + i))
            .collect();
        let r = self
            .claims
            .match_prefix(conn::req(MatchRequest {
                namespace: self.namespace.clone(),
                keys: Some(KeyList {
                    u64s: keys,
                    ..Default::default()
                }),
            }))
            .await
            .map_err(status_text)?
            .into_inner();
        if r.matches.len() != self.batch {
            return Err(format!(
                "matched {} of {} registered keys",
                r.matches.len(),
                self.batch
            ));
        }
        Ok(())
    }
}

fn row(
    p: &Params,
    name: &str,
    batch: usize,
    clients: usize,
    pool: &Pool,
    out: crate::driver::Outcome,
) -> Row {
    let mut row = Row::from_latency(
        &p.label,
        &format!("{name}/{batch}"),
        clients,
        pool.len(),
        out.ops,
        out.elapsed.as_secs_f64(),
        &out.latency,
        out.errors,
        out.first_error,
    );
    row.detail = format!(
        "{} keys/s ({batch} keys per request)",
        crate::report::fmt_rate(row.ops_per_sec * batch as f64)
    );
    row
}

/// The three rows for one batch size, in order: offload, register, match.
pub async fn rows(
    pool: &Pool,
    clients: usize,
    batch: usize,
    lease_ttl_ms: u64,
    p: &Params,
) -> anyhow::Result<Vec<Row>> {
    let s = setup(pool, clients, lease_ttl_ms, p).await?;
    let mut out = Vec::new();

    let workers = (0..clients)
        .map(|i| OffloadWorker {
            claims: ClaimsClient::new(pool.get(i)),
            namespace: s.namespace.clone(),
            session: s.sessions[i],
            batch,
            client: i,
            salt: s.salt,
            seq: 0,
        })
        .collect();
    out.push(row(
        p,
        "claims-offload",
        batch,
        clients,
        pool,
        drive(workers, p.limits).await,
    ));

    let registered: Vec<Arc<AtomicU64>> = (0..clients).map(|_| Arc::default()).collect();
    let workers = (0..clients)
        .map(|i| RegisterWorker {
            claims: ClaimsClient::new(pool.get(i)),
            namespace: s.namespace.clone(),
            session: s.sessions[i],
            batch,
            client: i,
            salt: s.salt,
            registered: registered[i].clone(),
        })
        .collect();
    out.push(row(
        p,
        "claims-register",
        batch,
        clients,
        pool,
        drive(workers, p.limits).await,
    ));

    let counts: Vec<u64> = registered
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .collect();
    let workers = (0..clients)
        .map(|i| MatchWorker {
            claims: ClaimsClient::new(pool.get(i)),
            namespace: s.namespace.clone(),
            batch,
            salt: s.salt,
            rng: Rng::for_client(i),
            registered: counts.clone(),
        })
        .collect();
    out.push(row(
        p,
        "claims-match",
        batch,
        clients,
        pool,
        drive(workers, p.limits).await,
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_parse() {
        assert_eq!(parse_batch("16"), Ok(16));
        assert_eq!(parse_batch(" 10000 "), Ok(10_000));
        assert!(parse_batch("").is_err());
        assert!(parse_batch("0").is_err());
        assert!(parse_batch("10001").is_err());
        assert!(parse_batch("many").is_err());
        let a = crate::BenchArgs::default();
        assert_eq!(a.claims_batches, vec![16, 1000]);
    }

    #[test]
    fn block_keys_differ_across_clients_and_sequence() {
        let mut seen = std::collections::HashSet::new();
        for c in 0..8 {
            for s in 0..1000 {
                assert!(seen.insert(block_key(7, c, s)));
            }
        }
        assert_eq!(block_key(7, 3, 5), block_key(7, 3, 5));
    }
}
