//! The `cairn.v1` registry API through the Rust client, against real
//! in-process members: one member for semantics, three for failover.

#[path = "../../cairn-server/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use cairn_client::registry::{EventKind, Mode, Registered, Session, SessionState, Updated};
use cairn_client::{Client, ClientOptions, GetOptions, PutOptions, RetryPolicy};
use support::{wait_until, Cluster};
use tokio::time::Instant;

/// Longest any single wait may take.
const WAIT: Duration = Duration::from_secs(20);

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

async fn single() -> (Cluster, Client) {
    let cluster = Cluster::start(1, |_| {}).await;
    cluster.wait_leader(WAIT).await;
    let client = client_for(&cluster).await;
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_through_the_client() {
    let (cluster, c) = single().await;
    let a = Session::create(&c, 10).await.unwrap();
    let b = Session::create(&c, 10).await.unwrap();
    assert!(c.create_registry("svc", Mode::Unique).await.unwrap());
    assert!(!c.create_registry("svc", Mode::Unique).await.unwrap());
    assert!(c.create_registry("pool", Mode::Duplicate).await.unwrap());

    let mut watch = c.watch_registry("svc", "", 0).await.unwrap();
    assert!(matches!(
        c.register(a.id(), "svc", "db", "a1").await.unwrap(),
        Registered::Registered { previous: None, .. }
    ));
    assert_eq!(
        c.register(b.id(), "svc", "db", "b1").await.unwrap(),
        Registered::AlreadyRegistered {
            owner: a.id(),
            value: b"a1".to_vec()
        }
    );
    match c.register_or_get(b.id(), "svc", "db", "b1").await.unwrap() {
        Registered::Existing(entries) => assert_eq!(entries[0].owner, a.id()),
        other => panic!("expected the existing owner, got {other:?}"),
    }
    assert_eq!(
        c.update_value(a.id(), "svc", "db", Some(b"zz".to_vec()), "a2")
            .await
            .unwrap(),
        Updated::Mismatch {
            current: b"a1".to_vec()
        }
    );
    assert!(matches!(
        c.update_value(a.id(), "svc", "db", Some(b"a1".to_vec()), "a2")
            .await
            .unwrap(),
        Updated::Updated { .. }
    ));
    assert!(!c.unregister(b.id(), "svc", "db").await.unwrap());
    assert!(c.unregister(a.id(), "svc", "db").await.unwrap());

    // The watch saw register, value change, unregister, in order.
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let events = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("registry events")
            .unwrap()
            .expect("stream open");
        kinds.extend(events.into_iter().map(|e| (e.kind, e.value)));
    }
    assert_eq!(
        kinds,
        vec![
            (EventKind::Registered, b"a1".to_vec()),
            (EventKind::ValueChanged, b"a2".to_vec()),
            (EventKind::Unregistered, b"a2".to_vec()),
        ]
    );
    // Resumable: replaying from the first event's revision gives it again.
    let first_rev = watch.last_revision() - 2;
    let mut replay = c.watch_registry("svc", "db", first_rev).await.unwrap();
    let events = replay.next().await.unwrap().unwrap();
    assert_eq!(events[0].kind, EventKind::Registered);

    // Duplicate mode, keys, count, listing.
    c.register(a.id(), "pool", "w/1", "a").await.unwrap();
    c.register(b.id(), "pool", "w/1", "b").await.unwrap();
    c.register(b.id(), "pool", "w/2", "b").await.unwrap();
    assert_eq!(c.count("pool", "w/1").await.unwrap(), 2);
    assert_eq!(
        c.registry_keys("pool", b.id()).await.unwrap(),
        vec![b"w/1".to_vec(), b"w/2".to_vec()]
    );
    let page = c.list_entries("pool", "w/", None, 2).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    let rest = c
        .list_entries("pool", "w/", page.next_cursor, 2)
        .await
        .unwrap();
    assert_eq!(rest.entries.len(), 1);
    assert!(rest.next_cursor.is_none());

    // etcd clients may read the reserved prefix but not write it.
    let raw = c.get("\0cairn/", GetOptions::prefix()).await.unwrap();
    assert!(raw.kvs.len() >= 3);
    let err = c
        .put(
            "\0cairn/name/pool/x/0000000000000001",
            "forged",
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(cairn_client::tonic::Code::InvalidArgument));

    // Closing a session removes its entries at once, others stay.
    a.close().await.unwrap();
    assert_eq!(c.count("pool", "w/1").await.unwrap(), 1);
    assert_eq!(c.lookup("pool", "w/1").await.unwrap()[0].owner, b.id());
    drop(b);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unique_registration_has_exactly_one_winner() {
    let (cluster, c) = single().await;
    c.create_registry("race", Mode::Unique).await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..12 {
        sessions.push(Session::create(&c, 10).await.unwrap());
    }
    let tasks: Vec<_> = sessions
        .iter()
        .map(|s| {
            let (c, id) = (c.clone(), s.id());
            tokio::spawn(async move {
                (
                    id,
                    c.register(id, "race", "leader", format!("{id:x}")).await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut owners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (id, Ok(Registered::Registered { .. })) => winners.push(id),
            (_, Ok(Registered::AlreadyRegistered { owner, .. })) => owners.push(owner),
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner");
    assert!(
        owners.iter().all(|o| *o == winners[0]),
        "losers see the winner"
    );
    assert_eq!(
        c.lookup("race", "leader").await.unwrap()[0].owner,
        winners[0]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_fifo_with_growing_tokens_and_elections_follow_sessions() {
    let (cluster, c) = single().await;
    let a = Session::create(&c, 10).await.unwrap();
    let b = Session::create(&c, 10).await.unwrap();
    let held = c.lock("job", a.id()).await.unwrap();
    let waiter = {
        let (c, id) = (c.clone(), b.id());
        tokio::spawn(async move { c.lock("job", id).await })
    };
    // B queues (its waiter key is readable through the etcd API) and
    // waits, by watch, until A releases.
    wait_until("B queued behind A", WAIT, || {
        let c = c.clone();
        async move {
            let q = c.get("\0cairn/lock/job/", GetOptions::prefix()).await;
            q.is_ok_and(|q| q.kvs.len() == 2)
        }
    })
    .await;
    assert!(!waiter.is_finished(), "B must wait while A holds the lock");
    let token_a = held.fencing_token();
    assert!(held.unlock().await.unwrap());
    let held_b = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("B gets the lock")
        .unwrap()
        .unwrap();
    assert!(held_b.fencing_token() > token_a);

    // Election: A leads, B waits; closing A's session hands over to B.
    let token = c.campaign("primary", a.id(), "a").await.unwrap();
    let mut observer = c.observe("primary").await.unwrap();
    let first = observer.next().await.unwrap().unwrap().unwrap();
    assert_eq!((first.session, first.fencing_token), (a.id(), token));
    c.proclaim("primary", a.id(), token, "a2").await.unwrap();
    let proclaimed = observer.next().await.unwrap().unwrap().unwrap();
    assert_eq!(proclaimed.value, b"a2".to_vec());
    let campaign_b = {
        let (c, id) = (c.clone(), b.id());
        tokio::spawn(async move { c.campaign("primary", id, "b").await })
    };
    a.close().await.unwrap();
    let token_b = tokio::time::timeout(WAIT, campaign_b)
        .await
        .expect("B leads")
        .unwrap()
        .unwrap();
    assert!(token_b > token);
    let leader = c.election_leader("primary").await.unwrap().unwrap();
    assert_eq!((leader.session, leader.value), (b.id(), b"b".to_vec()));
    drop(held_b);
    drop(b);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_fenced_off_after_its_session_expired() {
    let (cluster, c) = single().await;
    let ttl_secs = 2;
    let a = Session::create(&c, ttl_secs).await.unwrap();
    let lock_a = c.lock("res", a.id()).await.unwrap();
    let token_a = lock_a.fencing_token();
    assert!(c
        .fenced_put("res/fence", token_a, "res/data", "from a")
        .await
        .unwrap());
    // A "pauses": its keepalive stops, and it does not know it lost the lock.
    let a_id = a.id();
    std::mem::forget(lock_a);
    drop(a);
    let b = Session::create(&c, 10).await.unwrap();
    let lock_b = tokio::time::timeout(WAIT, c.lock("res", b.id()))
        .await
        .expect("B gets the lock once A's session expired")
        .unwrap();
    assert!(c.session_info(a_id).await.unwrap().is_none());
    assert!(lock_b.fencing_token() > token_a);
    assert!(c
        .fenced_put("res/fence", lock_b.fencing_token(), "res/data", "from b")
        .await
        .unwrap());
    // A wakes up and writes with its old token: the resource refuses.
    assert!(!c
        .fenced_put("res/fence", token_a, "res/data", "late a")
        .await
        .unwrap());
    let data = c.get("res/data", GetOptions::default()).await.unwrap();
    assert_eq!(data.kvs[0].value, b"from b".to_vec());
    drop(lock_b);
    drop(b);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_sessions_survive_leader_loss_and_ttls_keep_counting() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.wait_leader(WAIT).await;
    let c = client_for(&cluster).await;
    c.create_registry("svc", Mode::Unique).await.unwrap();
    // `kept` is renewed throughout; `abandoned` is never renewed, so it
    // must expire 6 s after creation although the leader changes between.
    let kept = Session::create(&c, 3).await.unwrap();
    let created = Instant::now();
    let abandoned = Session::create(&c, 6).await.unwrap();
    let abandoned_id = abandoned.id();
    drop(abandoned);
    c.register(kept.id(), "svc", "kept", "1").await.unwrap();
    c.register(abandoned_id, "svc", "abandoned", "2")
        .await
        .unwrap();

    // A lock held by `kept`, and a waiter queued behind it, across failover.
    let held = c.lock("L", kept.id()).await.unwrap();
    let waiter_session = Session::create(&c, 10).await.unwrap();
    let waiter = {
        let (c, id) = (c.clone(), waiter_session.id());
        tokio::spawn(async move { c.lock("L", id).await })
    };

    // The leader dies 3 s into the abandoned session's 6 s.
    tokio::time::sleep_until(created + Duration::from_secs(3)).await;
    cluster.stop_member(leader).await;
    let new_leader = cluster.wait_leader(WAIT).await;
    assert_ne!(new_leader, leader);
    let failover_done = created.elapsed();
    let c2 = client_for(&cluster).await;

    wait_until("the abandoned session expires", WAIT, || {
        let c2 = c2.clone();
        async move { c2.count("svc", "abandoned").await.unwrap_or(1) == 0 }
    })
    .await;
    let lived = created.elapsed();
    eprintln!("6 s session: failover done at {failover_done:?}, expired after {lived:?}");
    assert!(
        lived >= Duration::from_millis(5500),
        "expired early: {lived:?}"
    );
    // Restarting the TTL at failover would give at least failover + 6 s.
    assert!(
        lived + Duration::from_secs(1) <= failover_done + Duration::from_secs(6),
        "TTL restarted: lived {lived:?}, failover at {failover_done:?}"
    );
    // The waiter kept its place through the failover and gets the lock
    // when the holder releases it.
    assert!(!waiter.is_finished(), "the lock is still held");
    let token = held.fencing_token();
    assert!(held.unlock().await.unwrap());
    let got = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the waiter gets the lock")
        .unwrap()
        .unwrap();
    assert!(got.fencing_token() > token);
    drop(got);
    drop(waiter_session);
    // The kept session outlived several TTLs of failover and still owns its name.
    assert_eq!(kept.state(), SessionState::Alive);
    assert_eq!(c2.lookup("svc", "kept").await.unwrap()[0].owner, kept.id());
    drop(kept);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reports_lost_when_it_ends_elsewhere() {
    let (cluster, c) = single().await;
    c.create_registry("svc", Mode::Unique).await.unwrap();
    let s = Session::create(&c, 10).await.unwrap();
    c.register(s.id(), "svc", "k", "v").await.unwrap();
    // The session is a lease: revoking it through the etcd API ends it.
    c.lease_revoke(s.id()).await.unwrap();
    let why = tokio::time::timeout(WAIT, s.lost())
        .await
        .expect("the session reports it was lost");
    assert!(why.contains("expired or was closed"), "{why}");
    assert!(s.is_lost());
    assert_eq!(c.count("svc", "k").await.unwrap(), 0);
    // Registering for a session that is gone, or in a registry that does
    // not exist, is refused with NotFound.
    let gone = c.register(s.id(), "svc", "k", "v").await.unwrap_err();
    assert_eq!(gone.code(), Some(cairn_client::tonic::Code::NotFound));
    let s2 = Session::create(&c, 10).await.unwrap();
    let nope = c.register(s2.id(), "nope", "k", "v").await.unwrap_err();
    assert_eq!(nope.code(), Some(cairn_client::tonic::Code::NotFound));
    cluster.shutdown().await;
}

/// A lock wait abandoned on one member (its connection broke, the call
/// was cancelled) while the same session waits again on another member —
/// what the client's retry does — leaves the place to the retry: the
/// abandoned call's leave (`Abandon`) only takes a place nobody joined
/// since. With a plain leave, the retry lost its place when that leave
/// landed (or was told it held the lock, and then did not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_lock_wait_keeps_the_place_its_abandoned_call_leaves() {
    use cairn_proto::cairn::v1 as pb;
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.wait_leader(WAIT).await;
    let c = client_for(&cluster).await;
    let holder = Session::create(&c, 30).await.unwrap();
    let waiter = Session::create(&c, 30).await.unwrap();
    let held = c.lock("job", holder.id()).await.unwrap();
    let lock_on = |member: usize| {
        let url = cluster.members[member]
            .server
            .as_ref()
            .unwrap()
            .client_url();
        let request = pb::LockRequest {
            name: b"job".to_vec(),
            session_id: waiter.id(),
        };
        async move {
            let channel = tonic::transport::Channel::from_shared(url)
                .unwrap()
                .connect()
                .await
                .expect("connects");
            pb::lock_client::LockClient::new(channel)
                .lock(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    // The waiter's place: its token (create revision) and last write.
    let key = format!("\0cairn/lock/job/{:016x}", waiter.id() as u64).into_bytes();
    let place = |c: &Client| {
        let (c, key) = (c.clone(), key.clone());
        async move {
            let q = c.get(key, GetOptions::default()).await.unwrap();
            q.kvs
                .into_iter()
                .next()
                .map(|kv| (kv.create_revision, kv.mod_revision))
        }
    };
    // The first call queues on member 0 and waits.
    let first = tokio::spawn(lock_on(0));
    wait_until("the first call queued", WAIT, || {
        let p = place(&c);
        async move { p.await.is_some() }
    })
    .await;
    let (token, joined_at) = place(&c).await.unwrap();
    // The retry joins the same place on member 1 (recorded as a write).
    let retry = tokio::spawn(lock_on(1));
    wait_until("the retry joined", WAIT, || {
        let p = place(&c);
        async move { p.await.is_some_and(|(_, m)| m > joined_at) }
    })
    .await;
    // The first call is abandoned: member 0 leaves for it.
    first.abort();
    // The holder lets go: the retry gets the lock, with the place's token.
    assert!(held.unlock().await.unwrap());
    let got = tokio::time::timeout(WAIT, retry)
        .await
        .expect("the retry gets the lock")
        .unwrap()
        .expect("the retry keeps its place");
    assert_eq!(got.fencing_token, token);
    // And keeps it: the abandoned call's leave, whenever it lands, leaves
    // it alone (a bound on something that must not happen).
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        assert_eq!(place(&c).await.map(|(t, _)| t), Some(token), "place lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(waiter);
    drop(holder);
    cluster.shutdown().await;
}
