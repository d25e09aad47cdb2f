//! Block claims through the Rust client against real in-process 3-member
//! clusters: concurrent workers racing for overlapping hashes (each hash
//! granted to one live session at a time, stored once, by its grantee; a
//! closed session's leases go to others only after it ended), and a leader
//! failover that keeps stored entries and live leases, whose TTLs keep
//! counting.

#[path = "../../cairn-server/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::claims::{
    ClaimKey, ClaimsClient, ClaimsConfig, ClaimsError, EvictionPolicy, NamespaceConfig,
    OffloadStatus, RegisterEntry, RegisterStatus,
};
use cairn_client::registry::{Session, SessionState};
use cairn_client::{Client, ClientOptions, RetryPolicy};
use support::{wait_until, Cluster};
use tokio::time::Instant;

/// Longest any single wait may take.
const WAIT: Duration = Duration::from_secs(30);

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 30,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
        },
        ..ClientOptions::default()
    }
}

async fn client_for(cluster: &Cluster) -> Client {
    let urls = cluster
        .running()
        .iter()
        .map(|i| cluster.members[*i].server.as_ref().unwrap().client_url())
        .collect();
    Client::connect(urls, options()).await.unwrap()
}

fn config(namespace: &str, batch_size: usize) -> ClaimsConfig {
    ClaimsConfig::builder()
        .namespace(namespace)
        .batch_size(batch_size)
        .flush_interval(Duration::from_millis(10))
        .request_timeout(Duration::from_secs(10))
        .build()
}

fn u64s(keys: impl IntoIterator<Item = u64>) -> Vec<ClaimKey> {
    keys.into_iter().map(ClaimKey::U64).collect()
}

fn key_u64(k: &ClaimKey) -> u64 {
    match k {
        ClaimKey::U64(v) => *v,
        other => panic!("u64 keys only, got {other:?}"),
    }
}

/// One `Granted` seen by a worker: which session, and when the call that
/// answered it started and ended.
#[derive(Debug, Clone, Copy)]
struct Grant {
    session: i64,
    ended: Instant,
}

/// Everything the workers saw.
#[derive(Default)]
struct Log {
    grants: BTreeMap<u64, Vec<Grant>>,
    /// (key, session, call end) of each `Leased` answer.
    leased: Vec<(u64, i64, Instant)>,
    /// Entries sent to register, and how many the server stored.
    register_attempts: u64,
    stored: u64,
    /// Register statuses other than Stored (must stay empty).
    odd_register: Vec<(u64, RegisterStatus)>,
}

const UNIVERSE: u64 = 240;
const WORKERS: usize = 16;
/// The closed worker's keys: claimed first, never registered.
const DOOMED_KEYS: std::ops::Range<u64> = 0..40;
/// The vanished worker's keys (its session expires): likewise.
const EXPIRED_KEYS: std::ops::Range<u64> = 40..60;
/// TTL of the vanished worker's session.
const VANISHED_TTL: Duration = Duration::from_secs(3);

/// A worker's overlapping slice of the universe, in its own order.
fn worker_keys(w: usize) -> Vec<u64> {
    let start = (w as u64 * 17) % UNIVERSE;
    let mut keys: Vec<u64> = (0..90).map(|i| (start + i) % UNIVERSE).collect();
    // Different workers walk in different orders to collide more.
    let n = keys.len();
    keys.rotate_left((w * 7) % n);
    if !w.is_multiple_of(2) {
        keys.reverse();
    }
    keys
}

/// Claim, "store" and register `keys` until none is leased by another
/// session any more. Even workers register through the batcher, odd ones
/// immediately. The stored value names the session that stored it.
async fn worker(w: usize, claims: ClaimsClient, log: Arc<Mutex<Log>>, calls: Arc<AtomicUsize>) {
    let me = claims.session_id();
    let batcher = w.is_multiple_of(2).then(|| claims.batcher());
    let mut todo = worker_keys(w);
    for _round in 0..2_000 {
        if todo.is_empty() {
            break;
        }
        let mut still_leased = Vec::new();
        for chunk in todo.chunks(12) {
            let keys = u64s(chunk.iter().copied());
            let offload = claims.can_offload(&keys).await.expect("can_offload");
            let ended = Instant::now();
            calls.fetch_add(1, Ordering::SeqCst);
            let mut granted = Vec::new();
            {
                let mut log = log.lock().unwrap();
                for (k, s) in chunk.iter().zip(&offload.statuses) {
                    match s {
                        OffloadStatus::Granted => {
                            log.grants
                                .entry(*k)
                                .or_default()
                                .push(Grant { session: me, ended });
                            granted.push(*k);
                        }
                        OffloadStatus::Leased => {
                            log.leased.push((*k, me, ended));
                            still_leased.push(*k);
                        }
                        OffloadStatus::AlreadyStored => {}
                    }
                }
            }
            if granted.is_empty() {
                continue;
            }
            // "Upload" the blocks, letting others run meanwhile.
            tokio::task::yield_now().await;
            let entries: Vec<RegisterEntry> = granted
                .iter()
                .map(|k| RegisterEntry::new(ClaimKey::U64(*k), format!("{me:x}")))
                .collect();
            log.lock().unwrap().register_attempts += entries.len() as u64;
            match &batcher {
                Some(b) => b.register(entries).await.expect("queue register"),
                None => {
                    let r = claims.register(&entries).await.expect("register");
                    let mut log = log.lock().unwrap();
                    for (k, s) in granted.iter().zip(&r.statuses) {
                        match s {
                            RegisterStatus::Stored => log.stored += 1,
                            other => log.odd_register.push((*k, *other)),
                        }
                    }
                }
            }
        }
        if let Some(b) = &batcher {
            let r = b.flush().await.expect("flush");
            let mut log = log.lock().unwrap();
            log.stored += r.stored;
            for _ in 0..r.already_stored + r.leased_by_other + r.rejected_full {
                log.odd_register
                    .push((u64::MAX, RegisterStatus::AlreadyStored));
            }
        }
        todo = still_leased;
        if !todo.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(todo.is_empty(), "worker {w} gave up with {todo:?} leased");
    if let Some(b) = batcher {
        assert_eq!(b.close().await.expect("close batcher").stored, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_workers_each_hash_is_granted_to_one_live_session_and_stored_once() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.wait_leader(WAIT).await;
    let c = client_for(&cluster).await;

    // The doomed worker holds DOOMED_KEYS first and never registers them.
    let doomed_session = Session::create(&c, 10).await.unwrap();
    let doomed = ClaimsClient::new(&c, doomed_session.id(), config("race", 100));
    let ns = NamespaceConfig {
        capacity: 100_000,
        lease_ttl_ms: 60_000,
        eviction: EvictionPolicy::None,
        ..NamespaceConfig::default()
    };
    assert!(!doomed.create_namespace(&ns).await.unwrap());
    let held = doomed.can_offload(&u64s(DOOMED_KEYS)).await.unwrap();
    assert!(held.statuses.iter().all(|s| *s == OffloadStatus::Granted));
    // The vanished worker holds EXPIRED_KEYS; its process "dies" mid-way
    // (renewals stop) and its session expires on the server.
    let vanished_session = Session::create(&c, VANISHED_TTL.as_secs() as i64)
        .await
        .unwrap();
    let vanished = ClaimsClient::new(&c, vanished_session.id(), config("race", 100));
    let held = vanished.can_offload(&u64s(EXPIRED_KEYS)).await.unwrap();
    assert!(held.statuses.iter().all(|s| *s == OffloadStatus::Granted));

    let log = Arc::new(Mutex::new(Log::default()));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut sessions = Vec::new();
    let mut tasks = Vec::new();
    for w in 0..WORKERS - 1 {
        let s = Session::create(&c, 10).await.unwrap();
        let claims = ClaimsClient::new(&c, s.id(), config("race", 8));
        sessions.push(s);
        tasks.push(tokio::spawn(worker(w, claims, log.clone(), calls.clone())));
    }

    // Mid-way, the doomed worker's session ends.
    wait_until("the workers are under way", WAIT, || {
        let n = calls.load(Ordering::SeqCst);
        async move { n >= 40 }
    })
    .await;
    let close_started = Instant::now();
    let doomed_id = doomed_session.id();
    // The vanished worker stops renewing; the server says how long its
    // session has left (renewals only ever push that later).
    let vanished_id = vanished_session.id();
    drop(vanished_session);
    let vanished_at = Instant::now();
    let (_, remaining) = c.session_info(vanished_id).await.unwrap().unwrap();
    let earliest_expiry = vanished_at + remaining.saturating_sub(Duration::from_millis(50));
    doomed_session.close().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    let universe: BTreeSet<u64> = (0..WORKERS - 1).flat_map(worker_keys).collect();
    // Every doomed key is in some worker's set, so all were re-granted.
    assert!(DOOMED_KEYS
        .chain(EXPIRED_KEYS)
        .all(|k| universe.contains(&k)));
    for k in &universe {
        let grants = log.grants.get(k).map(Vec::as_slice).unwrap_or_default();
        let sessions: BTreeSet<i64> = grants.iter().map(|g| g.session).collect();
        assert_eq!(
            sessions.len(),
            1,
            "key {k} granted to {} sessions: {grants:?}",
            sessions.len()
        );
        if DOOMED_KEYS.contains(k) {
            // Held by the live doomed session: never granted to anyone else
            // by a call that ended before its close was even sent.
            for g in grants {
                assert!(
                    g.ended >= close_started,
                    "key {k} re-granted before the doomed session ended"
                );
            }
        }
        if EXPIRED_KEYS.contains(k) {
            for g in grants {
                assert!(
                    g.ended >= earliest_expiry,
                    "key {k} re-granted {:?} after the vanished session's renewals \
                     stopped, {remaining:?} before its expiry",
                    g.ended - vanished_at
                );
            }
        }
    }
    // While the doomed session lived, its keys were refused to others.
    let refused_before_close = log
        .leased
        .iter()
        .filter(|(k, _, ended)| DOOMED_KEYS.contains(k) && *ended < close_started)
        .count();
    assert!(
        refused_before_close > 0,
        "the workers asked for the doomed keys while they were held"
    );
    let refused_before_expiry = log
        .leased
        .iter()
        .filter(|(k, _, ended)| EXPIRED_KEYS.contains(k) && *ended < vanished_at)
        .count();
    assert!(
        refused_before_expiry > 0,
        "the workers asked for the vanished worker's keys while they were held"
    );
    // Stored exactly once each, by the session granted it (the value names
    // the storing session), with no register wasted or refused.
    assert!(log.odd_register.is_empty(), "{:?}", log.odd_register);
    assert_eq!(log.stored, universe.len() as u64);
    assert_eq!(log.register_attempts, universe.len() as u64);
    let keys = u64s(universe.iter().copied());
    let found = doomed.match_all(&keys).await.unwrap();
    assert_eq!(found.len(), universe.len(), "every key is stored");
    for m in &found {
        let k = key_u64(&m.key);
        let grantee = log.grants[&k][0].session;
        assert_eq!(
            String::from_utf8_lossy(&m.value),
            format!("{grantee:x}"),
            "key {k} stored by its grantee"
        );
    }
    let stats = doomed.stats().await.unwrap();
    eprintln!("race stats: {stats:?}");
    assert_eq!(stats.entries, universe.len() as u64);
    assert_eq!(stats.active_leases, 0);
    assert_eq!(stats.converted, universe.len() as u64);
    // Both sessions' leases were released when the session ended (the
    // vanished one's session expiry releases them, none expires by itself:
    // the claim lease TTL is 60 s).
    assert_eq!(
        stats.released,
        (DOOMED_KEYS.count() + EXPIRED_KEYS.count()) as u64
    );
    assert_eq!(stats.expired, 0);
    // Each grant seen by a worker, plus the doomed worker's, is counted.
    let seen_grants: usize = log.grants.values().map(Vec::len).sum();
    assert_eq!(
        stats.granted + stats.refreshed,
        (seen_grants + DOOMED_KEYS.count() + EXPIRED_KEYS.count()) as u64
    );
    // The doomed session is gone: it can claim nothing any more.
    let gone = doomed.can_offload(&u64s([9999])).await.unwrap_err();
    assert!(
        matches!(gone, ClaimsError::SessionNotFound(id) if id == doomed_id),
        "{gone}"
    );
    drop(sessions);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_entries_and_live_leases_survive_leader_loss_and_ttls_keep_counting() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.wait_leader(WAIT).await;
    let c = client_for(&cluster).await;
    let a_session = Session::create(&c, 3).await.unwrap();
    let b_session = Session::create(&c, 3).await.unwrap();
    let a = ClaimsClient::new(&c, a_session.id(), config("fo", 100));
    let b = ClaimsClient::new(&c, b_session.id(), config("fo", 100));
    let ttl = Duration::from_secs(6);
    let ns = NamespaceConfig {
        lease_ttl_ms: ttl.as_millis() as u64,
        eviction: EvictionPolicy::Tail,
        ..NamespaceConfig::default()
    };
    a.create_namespace(&ns).await.unwrap();

    // A is granted keys 1..=10 and stores 1..=5; 6..=10 stay leased by A
    // (never refreshed), so they must expire 6 s after the grant.
    let granted_at = Instant::now();
    let got = a.can_offload(&u64s(1..=10)).await.unwrap();
    assert!(got.statuses.iter().all(|s| *s == OffloadStatus::Granted));
    let stored: Vec<RegisterEntry> = (1..=5)
        .map(|k| RegisterEntry::new(ClaimKey::U64(k), format!("loc-{k}")))
        .collect();
    let r = a.register(&stored).await.unwrap();
    assert!(r.statuses.iter().all(|s| *s == RegisterStatus::Stored));
    let seen = b.can_offload(&u64s(1..=10)).await.unwrap();
    let expect: Vec<OffloadStatus> = (1..=10)
        .map(|k| {
            if k <= 5 {
                OffloadStatus::AlreadyStored
            } else {
                OffloadStatus::Leased
            }
        })
        .collect();
    assert_eq!(seen.statuses, expect);

    // The leader dies 3 s into the leases' 6 s.
    tokio::time::sleep_until(granted_at + Duration::from_secs(3)).await;
    cluster.stop_member(leader).await;
    let new_leader = cluster.wait_leader(WAIT).await;
    assert_ne!(new_leader, leader);
    let failover_done = granted_at.elapsed();

    // Stored entries and A's live leases are all there.
    let found = b.match_prefix(&u64s(1..=10)).await.unwrap();
    let values: Vec<String> = found
        .iter()
        .map(|m| String::from_utf8_lossy(&m.value).into_owned())
        .collect();
    assert_eq!(
        values,
        (1..=5).map(|k| format!("loc-{k}")).collect::<Vec<_>>()
    );
    let asked_at = granted_at.elapsed();
    let seen = b.can_offload(&u64s(1..=10)).await.unwrap();
    assert!(
        asked_at < ttl,
        "failover took too long to check live leases: {asked_at:?}"
    );
    assert_eq!(seen.statuses, expect, "leases survived the failover");
    let stats = b.stats().await.unwrap();
    assert_eq!((stats.entries, stats.active_leases), (5, 5));

    // B polls until A's leases have expired and B is granted them.
    let answered_at = Arc::new(Mutex::new(Duration::ZERO));
    wait_until("A's leases expire", WAIT, || {
        let (b, answered_at) = (b.clone(), answered_at.clone());
        async move {
            let r = b.can_offload(&u64s(6..=10)).await.unwrap();
            *answered_at.lock().unwrap() = granted_at.elapsed();
            r.statuses.iter().all(|s| *s == OffloadStatus::Granted)
        }
    })
    .await;
    let lived = *answered_at.lock().unwrap();
    eprintln!("6 s claim leases: failover done at {failover_done:?}, expired after {lived:?}");
    assert!(
        lived >= Duration::from_millis(5500),
        "expired early: {lived:?}"
    );
    // Restarting the TTL at failover would give at least failover + 6 s.
    assert!(
        lived + Duration::from_secs(1) <= failover_done + ttl,
        "TTL restarted: lived {lived:?}, failover at {failover_done:?}"
    );
    // A's session lived through it all (renewed), only its unrefreshed
    // leases ended; A registering one now is refused: B holds it.
    assert_eq!(a_session.state(), SessionState::Alive);
    let late = a
        .register(&[RegisterEntry::new(ClaimKey::U64(6), "late")])
        .await
        .unwrap();
    assert_eq!(late.statuses, vec![RegisterStatus::LeasedByOther]);
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.expired, 5);
    drop((a_session, b_session));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_cache_precise_errors_and_no_false_offload_when_the_cluster_is_down() {
    let cluster = Cluster::start(1, |_| {}).await;
    cluster.wait_leader(WAIT).await;
    let url = cluster.members[0].server.as_ref().unwrap().client_url();
    let ns = NamespaceConfig {
        capacity: 3,
        eviction: EvictionPolicy::Tail,
        ..NamespaceConfig::default()
    };
    // Configured the way an existing deployment is: its DYN_REGISTRY_*
    // variables, plus where the Cairn members are.
    let env: std::collections::HashMap<&str, String> = [
        ("CAIRN_CLAIMS_ENDPOINTS", url.clone()),
        ("DYN_REGISTRY_CLIENT_NAMESPACE", "cached".into()),
        ("DYN_REGISTRY_CLIENT_LOCAL_CACHE", "100".into()),
        ("DYN_REGISTRY_CLIENT_REQUEST_TIMEOUT_MS", "2000".into()),
        ("DYN_REGISTRY_HUB_CAPACITY", "3".into()),
        ("DYN_REGISTRY_HUB_LEASE_TIMEOUT_SECS", "30".into()),
        ("CAIRN_CLAIMS_EVICTION", "tail".into()),
        ("CAIRN_CLAIMS_SESSION_TTL_SECS", "5".into()),
    ]
    .into();
    let config = ClaimsConfig::from_vars(|k| env.get(k).cloned()).unwrap();
    assert_eq!(config.create.as_ref(), Some(&ns));
    let claims = ClaimsClient::connect(config).await.unwrap();
    assert!(
        claims.create_namespace(&ns).await.unwrap(),
        "connect created it"
    );
    let other = ClaimsConfig::builder().namespace("cached").build();
    let stranger = ClaimsClient::new(
        &client_for(&cluster).await,
        Session::create(&client_for(&cluster).await, 5)
            .await
            .unwrap()
            .id(),
        other,
    );

    // Precise refusals, before or by the server.
    assert!(matches!(
        claims.can_offload(&[]).await,
        Err(ClaimsError::InvalidArgument(_))
    ));
    let wrong = claims.can_offload(&[ClaimKey::U128(1)]).await.unwrap_err();
    assert!(
        matches!(&wrong, ClaimsError::InvalidArgument(m) if m.contains("U128")),
        "{wrong}"
    );
    let nope = claims.with_namespace("nope").match_all(&u64s([1])).await;
    assert!(matches!(nope, Err(ClaimsError::NamespaceNotFound(n)) if n == "nope"));
    let changed = NamespaceConfig {
        capacity: 4,
        ..ns.clone()
    };
    assert!(matches!(
        claims.create_namespace(&changed).await,
        Err(ClaimsError::NamespaceExists(_))
    ));

    // Register fills the cache; eviction keeps capacity 3 on the server.
    let entries: Vec<RegisterEntry> = (1..=4)
        .map(|k| RegisterEntry::new(ClaimKey::U64(k), format!("v{k}")))
        .collect();
    claims.can_offload(&u64s(1..=4)).await.unwrap();
    let r = claims.register(&entries).await.unwrap();
    assert_eq!(r.evicted, 1);
    assert_eq!(claims.touch(&u64s(1..=4)).await.unwrap(), 3);
    // Another client sees the server's truth.
    assert_eq!(stranger.match_all(&u64s(1..=4)).await.unwrap().len(), 3);
    // This client's cache answers for all four (a hint: one was evicted).
    assert_eq!(claims.match_prefix(&u64s(1..=4)).await.unwrap().len(), 4);
    // Remove forgets in the cache too.
    let removed = claims.remove(&u64s([4])).await.unwrap();
    assert_eq!(removed.removed, 1);
    let after = claims.match_all(&u64s([4, 5])).await.unwrap();
    assert!(after.is_empty(), "{after:?}");

    let stats = claims.stats().await.unwrap();
    assert_eq!((stats.entries, stats.evicted, stats.removed), (2, 1, 1));
    assert!(claims
        .stats_all()
        .await
        .unwrap()
        .iter()
        .any(|s| s.namespace == "cached"));

    // close() ends a session connect() created, even while a batcher
    // shares it: its lease goes at once (the TTL is a minute).
    let config = ClaimsConfig::builder()
        .endpoints(vec![url])
        .namespace("cached")
        .session_ttl_secs(60)
        .build();
    let short = ClaimsClient::connect(config).await.unwrap();
    let _batcher = short.batcher();
    let got = short.can_offload(&u64s([50])).await.unwrap();
    assert_eq!(got.statuses, vec![OffloadStatus::Granted]);
    let seen = stranger.can_offload(&u64s([50])).await.unwrap();
    assert_eq!(seen.statuses, vec![OffloadStatus::Leased]);
    short.close().await.unwrap();
    let seen = stranger.can_offload(&u64s([50])).await.unwrap();
    assert_eq!(seen.statuses, vec![OffloadStatus::Granted]);

    // The cluster goes away: cached keys still answer AlreadyStored, and
    // anything else is an error, never "granted".
    cluster.shutdown().await;
    let cached = claims.can_offload(&u64s([1])).await.unwrap();
    assert_eq!(cached.statuses, vec![OffloadStatus::AlreadyStored]);
    let down = claims.can_offload(&u64s([1, 99])).await.unwrap_err();
    assert!(down.is_unavailable(), "{down:?}");
    let batcher = claims.batcher();
    batcher
        .register(vec![RegisterEntry::new(ClaimKey::U64(7), "x")])
        .await
        .unwrap();
    let failed = batcher.flush().await.unwrap_err();
    assert!(
        matches!(failed, ClaimsError::BatchFailed { entries: 1, .. }),
        "{failed}"
    );
}
