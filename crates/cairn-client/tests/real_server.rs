//! The client against real in-process Cairn members on 127.0.0.1.

#[path = "../../cairn-server/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use cairn_client::tonic;
use cairn_client::{
    Client, ClientError, ClientOptions, Compare, CompareOp, DeleteOptions, EventType, GetOptions,
    KeepAliveState, PutOptions, RetryPolicy, SnapshotVerifier, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use cairn_server::serve::{start, RunningServer};
use futures::StreamExt;
use tokio::time::Instant;

/// Longest any single wait may take.
const WAIT: Duration = Duration::from_secs(15);

use support::free_port;

async fn wait_leader(server: &RunningServer) {
    let deadline = Instant::now() + WAIT;
    while server.node.leader_id().is_none() {
        assert!(Instant::now() < deadline, "no leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
        },
        ..ClientOptions::default()
    }
}

async fn single() -> (tempfile::TempDir, RunningServer, Client) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(support::test_config("n1", dir.path().join("n1"), 0, 0))
        .await
        .unwrap();
    wait_leader(&server).await;
    let client = Client::connect(vec![server.client_url()], options())
        .await
        .unwrap();
    (dir, server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_txn() {
    let (_dir, server, c) = single().await;

    let r = c.put("a/1", "x", PutOptions::default()).await.unwrap();
    assert!(r.prev_kv.is_none());
    c.put("a/2", "y", PutOptions::default()).await.unwrap();
    let r = c
        .put(
            "a/1",
            "z",
            PutOptions {
                prev_kv: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.prev_kv.unwrap().value, b"x");

    let r = c.get("a/", GetOptions::prefix()).await.unwrap();
    assert_eq!(r.count, 2);
    assert_eq!(r.header_revision, r.header.revision);
    assert_eq!(r.kvs[0].value, b"z");
    assert_eq!(r.kvs[0].version, 2);

    let r = c
        .get(
            "a/",
            GetOptions {
                prefix: true,
                limit: 1,
                sort: Some((SortTarget::Key, SortOrder::Descend)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (r.kvs.len(), r.more, r.kvs[0].key.as_slice()),
        (1, true, &b"a/2"[..])
    );

    let r = c
        .get(
            "",
            GetOptions {
                from_key: true,
                count_only: true,
                serializable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.count, r.kvs.len()), (2, 0));

    // Txn: create-if-absent.
    let t = || {
        Txn::new()
            .when([Compare::version("lock", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("lock", "me", PutOptions::default())])
            .or_else([TxnOp::get("lock", GetOptions::default())])
    };
    let r = c.txn(t()).await.unwrap();
    assert!(r.succeeded);
    let r = c.txn(t()).await.unwrap();
    assert!(!r.succeeded);
    match &r.responses[0] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs[0].value, b"me"),
        other => panic!("{other:?}"),
    }

    // A definite server error is returned as is.
    let err = c.put("", "v", PutOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");

    let r = c
        .delete(
            "a/",
            DeleteOptions {
                prefix: true,
                prev_kv: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.deleted, r.prev_kvs.len()), (2, 2));

    // Compaction, then reading below it fails.
    let rev = c
        .get("lock", GetOptions::default())
        .await
        .unwrap()
        .header_revision;
    c.compact(rev, true).await.unwrap();
    let err = c
        .get(
            "lock",
            GetOptions {
                revision: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange), "{err}");

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_keep_alive() {
    let (_dir, server, c) = single().await;
    let g = c.lease_grant(5, 0).await.unwrap();
    assert!(g.id > 0 && g.ttl == 5, "{g:?}");
    c.put(
        "leased",
        "v",
        PutOptions {
            lease: g.id,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t = c.lease_time_to_live(g.id, true).await.unwrap();
    assert_eq!(
        (t.granted_ttl, t.keys.clone()),
        (5, vec![b"leased".to_vec()])
    );
    assert!(c.lease_leases().await.unwrap().leases.contains(&g.id));
    assert_eq!(c.keep_alive_once(g.id).await.unwrap().ttl, 5);

    let mut ka = c.lease_keep_alive(g.id).await.unwrap();
    assert_eq!(ka.ttl(), Some(5));
    drop(ka);

    c.lease_revoke(g.id).await.unwrap();
    assert_eq!(
        c.get("leased", GetOptions::default()).await.unwrap().count,
        0
    );
    assert!(matches!(
        c.keep_alive_once(g.id).await,
        Err(ClientError::LeaseNotFound { .. })
    ));
    assert_eq!(c.lease_time_to_live(g.id, false).await.unwrap().ttl, -1);

    // A short lease kept alive outlives its TTL; once no longer kept alive
    // it expires.
    let g = c.lease_grant(1, 0).await.unwrap();
    let ttl = g.ttl;
    ka = c.lease_keep_alive(g.id).await.unwrap();
    let deadline = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < deadline {
        match tokio::time::timeout(WAIT, ka.changed()).await.unwrap() {
            Some(KeepAliveState::Alive { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(c.lease_time_to_live(g.id, false).await.unwrap().ttl >= 0);
    ka.stop();
    let deadline = Instant::now() + WAIT;
    while c.lease_time_to_live(g.id, false).await.unwrap().ttl != -1 {
        assert!(
            Instant::now() < deadline,
            "lease of TTL {ttl}s never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_and_cancel() {
    let (_dir, server, c) = single().await;
    let start = c.put("w/0", "old", PutOptions::default()).await.unwrap();
    let mut w = c
        .watch(
            "w/",
            WatchOptions {
                prefix: true,
                prev_kv: true,
                start_revision: start.header.revision,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    c.put("w/1", "a", PutOptions::default()).await.unwrap();
    c.delete("w/0", DeleteOptions::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = tokio::time::timeout(WAIT, w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend(r.events);
    }
    assert_eq!(seen[0].kv.key, b"w/0");
    assert_eq!(
        (seen[1].event_type, seen[1].kv.value.as_slice()),
        (EventType::Put, &b"a"[..])
    );
    assert_eq!(seen[2].event_type, EventType::Delete);
    assert_eq!(seen[2].prev_kv.as_ref().unwrap().value, b"old");

    tokio::time::timeout(WAIT, w.cancel())
        .await
        .unwrap()
        .unwrap();
    assert!(w.next().await.is_none());

    // Watching from a compacted revision fails with the compact revision.
    let rev = c
        .put("w/2", "b", PutOptions::default())
        .await
        .unwrap()
        .header
        .revision;
    c.compact(rev, true).await.unwrap();
    let outcome = match c
        .watch(
            "w/",
            WatchOptions {
                prefix: true,
                start_revision: 1,
                ..Default::default()
            },
        )
        .await
    {
        Err(e) => e,
        Ok(mut w) => tokio::time::timeout(WAIT, w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err(),
    };
    match outcome {
        ClientError::WatchCanceled {
            compact_revision, ..
        } => assert_eq!(compact_revision, rev),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_maintenance() {
    let (_dir, server, c) = single().await;
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members.len(), 1);
    assert_eq!(members.members[0].name, "n1");
    let s = c.status(&server.client_url()).await.unwrap();
    assert!(s.is_leader(), "{s:?}");
    assert!(s.raft_index >= s.raft_applied_index.min(s.raft_index));
    assert!(c.alarm_list().await.unwrap().alarms.is_empty());
    c.put("h", "1", PutOptions::default()).await.unwrap();
    let h1 = c.hash_kv(0).await.unwrap();
    let h2 = c.hash_kv_at(&server.client_url(), 0).await.unwrap();
    assert_eq!(h1.hash, h2.hash);

    let mut stream = c.snapshot().await.unwrap();
    let mut v = SnapshotVerifier::new();
    while let Some(chunk) = stream.next().await {
        v.update(&chunk.unwrap());
    }
    let info = v.finish().unwrap();
    assert!(info.data_len > 0);
    server.shutdown().await;
}

/// Three members; the client knows a dead endpoint too. Writes keep being
/// acknowledged across the loss of the leader.
/// Three in-process members on fresh ports, a leader elected; with their
/// (client, peer) ports.
async fn three_members() -> (
    tempfile::TempDir,
    Vec<Option<RunningServer>>,
    Vec<(u16, u16)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = (0..3)
        .map(|i| format!("n{}=http://127.0.0.1:{}", i + 1, ports[i].1))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let mut cfg = support::test_config(&name, dir.path().join(&name), *client, *peer);
        cfg.initial_cluster = initial.clone();
        servers.push(Some(start(cfg).await.unwrap()));
    }
    for s in servers.iter().flatten() {
        wait_leader(s).await;
    }
    // Members publish their client URLs once the cluster runs (as etcd's
    // do): wait until every member knows every other's.
    let deadline = Instant::now() + WAIT;
    for s in servers.iter().flatten() {
        while s.node.members().iter().any(|m| m.client_urls.is_empty()) {
            assert!(Instant::now() < deadline, "client URLs not published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (dir, servers, ports)
}

/// The index of the member every running member follows.
fn leader_index(servers: &[Option<RunningServer>]) -> usize {
    let leader_id = servers.iter().flatten().next().unwrap().node.leader_id();
    servers
        .iter()
        .position(|s| {
            s.as_ref()
                .is_some_and(|s| Some(s.node.member_id()) == leader_id)
        })
        .unwrap()
}

/// Given only a follower, the client moves to the leader that follower
/// names in its first answer, so later writes skip the forwarding hop;
/// with `follow_leader` off it stays where it was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_moves_to_the_leader_a_follower_names() {
    let (_dir, servers, _) = three_members().await;
    let leader = leader_index(&servers);
    let leader_url = servers[leader].as_ref().unwrap().client_url();
    let follower_url = servers[(leader + 1) % 3].as_ref().unwrap().client_url();

    let c = Client::connect(vec![follower_url.clone()], options())
        .await
        .unwrap();
    assert_eq!(c.current_endpoint(), follower_url);
    c.put("moved", "1", PutOptions::default()).await.unwrap();
    assert_eq!(c.current_endpoint(), leader_url);
    assert_eq!(
        c.endpoints(),
        vec![follower_url.clone(), leader_url.clone()]
    );
    c.put("moved", "2", PutOptions::default()).await.unwrap();
    assert_eq!(c.current_endpoint(), leader_url);

    let stay = ClientOptions {
        follow_leader: false,
        ..options()
    };
    let c = Client::connect(vec![follower_url.clone()], stay)
        .await
        .unwrap();
    c.put("stayed", "1", PutOptions::default()).await.unwrap();
    assert_eq!(c.current_endpoint(), follower_url);
    assert_eq!(c.endpoints(), vec![follower_url]);
    for s in servers.into_iter().flatten() {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_leader_loss() {
    let (_dir, mut servers, ports) = three_members().await;
    let mut endpoints = vec![format!("http://127.0.0.1:{}", free_port())];
    endpoints.extend(ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")));
    let c = Client::connect(endpoints, options()).await.unwrap();

    for i in 0..10 {
        c.put(format!("k{i}"), "v", PutOptions::default())
            .await
            .unwrap();
    }
    let leader = leader_index(&servers);
    servers[leader].take().unwrap().shutdown().await;

    let mut acked = 10;
    for i in 10..20 {
        match c.put(format!("k{i}"), "v", PutOptions::default()).await {
            Ok(_) => acked += 1,
            // Allowed around the election, never silently retried.
            Err(e) if e.is_outcome_unknown() => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(acked >= 15, "only {acked} writes acknowledged");
    let r = c.get("k", GetOptions::prefix()).await.unwrap();
    assert!(r.count >= acked, "{} < {acked}", r.count);
    for s in servers.into_iter().flatten() {
        s.shutdown().await;
    }
}
