//! Seeded random requests to the `cairn.v1` services (Session, Registry,
//! Lock, Election, Claims), well-formed and hostile, from several client
//! tasks at once against a real 3-member cluster; each client spreads its
//! requests round-robin over the members, so followers forward. Beside
//! them, the etcd API aims Put, DeleteRange and Txn at the reserved prefix
//! where the registry keeps its records, and sessions of a few seconds
//! expire while they hold names, locks, candidacies and claims.
//!
//! What it proves:
//! * every call answers Ok or with the code a correct server gives that
//!   request (each request kind lists its own: InvalidArgument, NotFound,
//!   FailedPrecondition, OutOfRange, AlreadyExists only for a claims
//!   namespace created again differently); never `Internal`, `Unknown`,
//!   `Unavailable` outside an election, a dropped stream or a panic in a
//!   member's task;
//! * the etcd API cannot write the reserved prefix: puts there are
//!   refused, deletes and txns are refused exactly while they would touch
//!   a record, and every record stays one the registry wrote (an owned one
//!   attached to its owner's session);
//! * a small model holds where it is cheap: each client has a private
//!   registry, election and claims namespace that only it writes, so a
//!   name it registered is seen by a lookup on another member (a
//!   linearizable read) as long as its session lives, a session that was
//!   closed or expired leaves no name and no lead behind, an election
//!   winner is the leader another member reports, and which claims are
//!   stored is known exactly;
//! * afterwards, with every session ended, no name, lock or candidacy is
//!   left in the reserved prefix, no claim lease is live, the members
//!   are healthy at one revision with one `HashKV`, and their claims
//!   state (stats, stored entries) is the same.
//!
//! Why: the registry's and claims' checks are written by hand, split
//! between the edge (services/registry, services/claims) and apply
//! (cairn-store registry and claims). Concurrent clients on a small name
//! space make the races (unique-name conflicts, queues, owner death during
//! a wait) that a sequential test never reaches.
//!
//! Knobs: `CAIRN_FUZZ_SEED` (else [`DEFAULT_SEED`]), `CAIRN_FUZZ_REQUESTS`
//! (requests in all, shared by the [`CLIENTS`] clients; else
//! [`DEFAULT_REQUESTS`]), cut short after `CAIRN_FUZZ_SECS` seconds (else
//! [`RUN_BUDGET_SECS`]). Each client's requests follow from the seed, its
//! number and the answers it gets; which of them meet on the cluster
//! depends on timing, so a failure prints the seed, the client, the
//! request's index and the request, and a rerun with the seed makes the
//! same requests.

mod registry_fuzz;
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairn::v1 as pb;
use cairn_proto::etcdserverpb as etcd;
use registry_fuzz::claims::{private_namespace_config, shared_namespaces};
use registry_fuzz::etcd::RESERVED_PREFIX;
use registry_fuzz::*;
use support::Cluster;
use tokio::time::Instant;
use tonic::Code;

const DEFAULT_SEED: u64 = 0x00c0_ffee;
/// Requests in all, over every client.
const DEFAULT_REQUESTS: usize = 4_000;
/// Client tasks sending at once.
const CLIENTS: usize = 7;
/// Requests stop after this long (or `CAIRN_FUZZ_SECS`) even if fewer
/// were made: the test must stay under ~40 s in a debug build on 2 cores.
const RUN_BUDGET_SECS: u64 = 24;
const ELECTION: Duration = Duration::from_secs(10);
/// For the members to agree on one revision after the last request.
const SETTLE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_registry_requests_get_precise_answers_and_leave_nothing_behind() {
    record_panics();
    let seed = env_number("CAIRN_FUZZ_SEED", DEFAULT_SEED);
    let requests = env_number("CAIRN_FUZZ_REQUESTS", DEFAULT_REQUESTS);
    let budget = Duration::from_secs(env_number("CAIRN_FUZZ_SECS", RUN_BUDGET_SECS));
    let started = Instant::now();
    let c = Cluster::start(3, |_| {}).await;
    c.wait_leader(ELECTION).await;
    let shared = Arc::new(Shared::new(&c, seed, budget).await);
    set_up(&shared.members[0]).await;

    load_running(true);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let fuzzer = Fuzzer::new(shared.clone(), client);
            tokio::spawn(fuzzer.run(requests.div_ceil(CLIENTS)))
        })
        .collect();
    let mut made = 0;
    for task in tasks {
        match task.await {
            Ok(fuzzer) => made += fuzzer.requests,
            // A client's failure, with the seed and the request in it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("seed {seed}: a client task was cancelled: {e}"),
        }
    }
    load_running(false);
    assert!(
        !shared.stop.load(Ordering::SeqCst),
        "seed {seed}: a client failed"
    );
    let load_time = started.elapsed();

    let finals = Finals { shared: &shared };
    finals.end_every_session().await;
    let revision = finals.settle_cluster().await;
    finals.hashes_agree(revision).await;
    finals.nothing_left_behind().await;
    finals.claims_agree().await;
    let panics = panics();
    assert!(
        panics.is_empty(),
        "seed {seed}: members panicked: {panics:#?}"
    );
    eprintln!(
        "seed {seed}: {made} requests from {CLIENTS} clients in {load_time:?}, members agree at \
         revision {revision}, {:?} in all; answers: {:#?}",
        started.elapsed(),
        shared.tally()
    );
    c.shutdown().await;
}

/// The shared registries and namespaces, and every client's private ones.
async fn set_up(member: &Clients) {
    let mut registry = member.registry.clone();
    let mut registries = vec![
        (UNIQUE.to_vec(), pb::Mode::Unique),
        (DUPLICATE.to_vec(), pb::Mode::Duplicate),
    ];
    registries.extend((0..CLIENTS).map(|c| (format!("m{c}").into_bytes(), pb::Mode::Unique)));
    for (name, mode) in registries {
        let request = pb::CreateRegistryRequest {
            registry: name,
            mode: mode as i32,
        };
        registry
            .create_registry(request.clone())
            .await
            .unwrap_or_else(|e| panic!("create registry {request:?}: {e:?}"));
    }
    let mut claims = member.claims.clone();
    let mut namespaces = shared_namespaces();
    namespaces.extend((0..CLIENTS).map(|c| (format!("p{c}"), private_namespace_config())));
    for (namespace, config) in namespaces {
        let request = pb::CreateNamespaceRequest {
            namespace,
            config: Some(config),
        };
        claims
            .create_namespace(request.clone())
            .await
            .unwrap_or_else(|e| panic!("create namespace {request:?}: {e:?}"));
    }
}

/// The checks after the load, on every member.
struct Finals<'a> {
    shared: &'a Shared,
}

impl Finals<'_> {
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "seed {seed}, after the run: {what}\n  member panics: {panics:#?}\n  \
             reproduce: CAIRN_FUZZ_SEED={seed} cargo test -p cairn-server --test random_registry_requests",
            seed = self.shared.seed,
            panics = panics(),
        )
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> T {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => self.fail(format_args!("{what}: {status:?}")),
            Err(_) => self.fail(format_args!("{what}: no answer within {CALL_TIMEOUT:?}")),
        }
    }

    /// Revokes every lease left, so every session ends (and no expiry
    /// moves the revision on afterwards).
    async fn end_every_session(&self) {
        let mut lease = self.shared.members[0].lease.clone();
        let leases = self
            .call(
                "list leases",
                lease.lease_leases(etcd::LeaseLeasesRequest {}),
            )
            .await;
        for id in leases.leases.iter().map(|l| l.id) {
            match lease.lease_revoke(etcd::LeaseRevokeRequest { id }).await {
                Ok(_) => {}
                // Expired since it was listed.
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => self.fail(format_args!("final revoke of {id:x}: {s:?}")),
            }
        }
    }

    /// The revision every member reaches, each healthy and following one
    /// leader.
    async fn settle_cluster(&self) -> i64 {
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut statuses = Vec::new();
            for m in &self.shared.members {
                let mut maintenance = m.maintenance.clone();
                let answer =
                    tokio::time::timeout(CALL_TIMEOUT, maintenance.status(etcd::StatusRequest {}))
                        .await;
                statuses.push(match answer {
                    Ok(Ok(r)) => Some(r.into_inner()),
                    _ => None,
                });
            }
            let key = |s: &Option<etcd::StatusResponse>| {
                s.as_ref()
                    .filter(|s| s.errors.is_empty() && s.leader != 0)
                    .map(|s| (s.leader, s.header.map(|h| h.revision)))
            };
            let first = key(&statuses[0]);
            if first.is_some() && statuses.iter().all(|s| key(s) == first) {
                return first.and_then(|(_, r)| r).unwrap_or(0);
            }
            if Instant::now() > deadline {
                self.fail(format_args!(
                    "members unhealthy or apart after {SETTLE:?}: {statuses:#?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `HashKV` at `revision` answers the same on every member.
    async fn hashes_agree(&self, revision: i64) {
        let mut hashes = Vec::new();
        for m in &self.shared.members {
            let mut maintenance = m.maintenance.clone();
            let resp = self
                .call(
                    "hash",
                    maintenance.hash_kv(etcd::HashKvRequest { revision }),
                )
                .await;
            hashes.push((resp.hash, resp.compact_revision, resp.hash_revision));
        }
        if hashes.iter().any(|h| *h != hashes[0]) || hashes[0].2 != revision {
            self.fail(format_args!(
                "(hash, compact revision, revision) per member at {revision}: {hashes:?}"
            ));
        }
    }

    /// With every session ended, the reserved prefix holds the registries'
    /// modes and nothing else (no name, lock waiter or candidate), and no
    /// key is attached to a lease.
    async fn nothing_left_behind(&self) {
        for (i, m) in self.shared.members.iter().enumerate() {
            let mut kv = m.kv.clone();
            let request = etcd::RangeRequest {
                key: RESERVED_PREFIX.to_vec(),
                range_end: prefix_end(RESERVED_PREFIX),
                serializable: true,
                ..Default::default()
            };
            let records = self
                .call("range the reserved prefix", kv.range(request))
                .await;
            let mut modes = BTreeMap::new();
            for record in &records.kvs {
                let Some(name) = record
                    .key
                    .strip_prefix(RESERVED_PREFIX)
                    .and_then(|k| k.strip_prefix(b"reg/"))
                else {
                    self.fail(format_args!(
                        "member {i} holds a record whose session ended: {record:?}"
                    ));
                };
                modes.insert(name.to_vec(), record.value.clone());
            }
            for (name, mode) in [(UNIQUE, &b"unique"[..]), (DUPLICATE, b"duplicate")] {
                if modes.get(name).map(Vec::as_slice) != Some(mode) {
                    self.fail(format_args!("member {i}: registry modes {modes:?}"));
                }
            }
            let request = etcd::RangeRequest {
                key: vec![0],
                range_end: vec![0],
                serializable: true,
                keys_only: true,
                ..Default::default()
            };
            let all = self.call("range every key", kv.range(request)).await;
            if let Some(kv) = all.kvs.iter().find(|kv| kv.lease != 0) {
                self.fail(format_args!(
                    "member {i}: a key is attached to a lease after every lease ended: {kv:?}"
                ));
            }
        }
    }

    /// Every member has the same claims state: the same counters
    /// (matches aside: each member counts the reads it served), no live
    /// lease, the same stored entries.
    async fn claims_agree(&self) {
        let mut per_member = Vec::new();
        for (i, m) in self.shared.members.iter().enumerate() {
            let mut claims = m.claims.clone();
            let stats = self
                .call(
                    "claims stats",
                    claims.stats(pb::StatsRequest {
                        namespace: String::new(),
                    }),
                )
                .await;
            let mut namespaces = stats.namespaces;
            for n in &mut namespaces {
                if n.active_leases != 0 {
                    self.fail(format_args!(
                        "member {i}: claims leases live after every session ended: {n:?}"
                    ));
                }
                n.match_hits = 0;
                n.match_misses = 0;
            }
            let mut entries = Vec::new();
            for (namespace, config) in shared_namespaces()
                .into_iter()
                .chain((0..CLIENTS).map(|c| (format!("p{c}"), private_namespace_config())))
            {
                let keys = match config.key_kind {
                    k if k == pb::KeyKind::U64 as i32 => pb::KeyList {
                        u64s: (0..64).collect(),
                        ..Default::default()
                    },
                    k if k == pb::KeyKind::U128 as i32 => pb::KeyList {
                        u128s: (0..32u128).map(|k| k.to_be_bytes().to_vec()).collect(),
                        ..Default::default()
                    },
                    _ => pb::KeyList {
                        bytes: (0..32).map(|k| format!("b{k}").into_bytes()).collect(),
                        ..Default::default()
                    },
                };
                let request = pb::MatchRequest {
                    namespace,
                    keys: Some(keys),
                };
                entries.push(self.call("match all", claims.match_all(request)).await);
            }
            per_member.push((namespaces, entries));
        }
        if per_member.iter().any(|m| *m != per_member[0]) {
            self.fail(format_args!(
                "the members' claims differ: {}",
                describe(&per_member)
            ));
        }
    }
}
