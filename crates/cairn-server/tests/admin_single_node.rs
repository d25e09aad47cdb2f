//! The admin services (Cluster, Maintenance, Lock, Election) and snapshot
//! restore, against a real single-node server over gRPC.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::v3electionpb as epb;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3lockpb as lpb;
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_server::restore::{restore_snapshot, RestoreError};
use cairn_server::serve::{start, RunningServer};
use cairn_server::{Node, ServerConfig, ServerError};
use cairn_store::{
    Command, CommandResult, KeyRange, PutRequest, RangeRequest, StoreError, TxnRequest,
};
use sha2::{Digest, Sha256};
use tokio::time::{timeout, Instant};
use tonic::transport::Channel;
use tonic::Code;

const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(10);

/// Poll `cond` until it holds or `limit` passes.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        data_dir: data_dir.to_path_buf(),
        listen_client: "127.0.0.1:0".parse().unwrap(),
        listen_peer: "127.0.0.1:0".parse().unwrap(),
        heartbeat_interval_ms: 50,
        election_timeout_ms: 400,
        tick_interval_ms: 100,
        ..Default::default()
    }
}

struct Server {
    server: RunningServer,
    channel: Channel,
}

impl Server {
    async fn start(data_dir: &Path) -> Server {
        let server = start(config(data_dir)).await.expect("server starts");
        let node = server.node.clone();
        wait_until("a leader", LEADER_TIMEOUT, || {
            let ok = node.leader_id() == Some(node.member_id()) && node.raft.is_leader();
            async move { ok }
        })
        .await;
        let channel = Channel::from_shared(server.client_url())
            .unwrap()
            .connect()
            .await
            .expect("client connects");
        Server { server, channel }
    }

    fn node(&self) -> &Arc<Node> {
        &self.server.node
    }

    fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }

    fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone())
    }

    fn lock(&self) -> LockClient<Channel> {
        LockClient::new(self.channel.clone())
    }

    fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel.clone())
    }

    async fn shutdown(self) {
        drop(self.channel);
        self.server.shutdown().await;
    }
}

async fn put(node: &Node, key: &str, value: &str) -> Result<i64, ServerError> {
    match node
        .write(Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }))
        .await?
    {
        CommandResult::Put(p) => Ok(p.revision),
        other => panic!("put answered {other:?}"),
    }
}

fn get(node: &Node, key: &str) -> Option<Vec<u8>> {
    node.store()
        .range(&RangeRequest {
            range: KeyRange::single(key),
            ..Default::default()
        })
        .unwrap()
        .kvs
        .into_iter()
        .next()
        .map(|kv| kv.value)
}

fn exists(node: &Node, key: &[u8]) -> bool {
    !node
        .store()
        .range(&RangeRequest {
            range: KeyRange::single(key.to_vec()),
            count_only: true,
            ..Default::default()
        })
        .map(|r| r.count == 0)
        .unwrap()
}

async fn grant(node: &Node, ttl_secs: i64) -> i64 {
    match node
        .write(Command::LeaseGrant {
            id: 0,
            ttl_secs,
            now_ms: node.clock.now_ms(),
        })
        .await
        .unwrap()
    {
        CommandResult::LeaseGrant(g) => g.id,
        other => panic!("lease grant answered {other:?}"),
    }
}

async fn revoke(node: &Node, id: i64) {
    node.write(Command::LeaseRevoke { id }).await.unwrap();
}

/// The value of the next leader an `Observe` stream reports.
async fn next_value(observe: &mut tonic::Streaming<epb::LeaderResponse>) -> Vec<u8> {
    let msg = timeout(WAIT, observe.message())
        .await
        .expect("observe delivers")
        .unwrap()
        .expect("stream open");
    msg.kv.unwrap().value
}

/// Read a whole snapshot stream.
async fn snapshot_bytes(
    m: &mut MaintenanceClient<Channel>,
) -> (Vec<u8>, Vec<pb::SnapshotResponse>) {
    let mut stream = m
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    let mut msgs = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&msg.blob);
        msgs.push(pb::SnapshotResponse {
            blob: Vec::new(),
            ..msg
        });
    }
    (bytes, msgs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_shows_the_member_with_its_published_urls() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut cluster = s.cluster();
    let want_client_url = s.server.client_url();
    // The node publishes its name and client URL shortly after it starts.
    let deadline = Instant::now() + WAIT;
    let resp = loop {
        let resp = cluster
            .member_list(pb::MemberListRequest { linearizable: true })
            .await
            .unwrap()
            .into_inner();
        if resp.members.len() == 1 && resp.members[0].client_ur_ls == vec![want_client_url.clone()]
        {
            break resp;
        }
        assert!(
            Instant::now() < deadline,
            "member never published its URL: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let me = &resp.members[0];
    assert_eq!(me.id, s.node().member_id());
    assert_eq!(me.name, "default");
    assert_eq!(
        me.peer_ur_ls,
        vec![format!("http://{}", s.server.peer_addr)]
    );
    assert!(!me.is_learner);
    let h = resp.header.unwrap();
    assert_eq!(
        (h.member_id, h.cluster_id),
        (s.node().member_id(), s.node().cluster_id())
    );
    assert!(h.raft_term >= 1);

    // Promoting a voter is refused with etcd's error.
    let err = cluster
        .member_promote(pb::MemberPromoteRequest { id: me.id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "etcdserver: can only promote a learner member"
    );
    let err = cluster
        .member_remove(pb::MemberRemoveRequest { id: 12345 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_member_and_its_raft_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    put(s.node(), "a", "1").await.unwrap();
    // Raft's metrics trail the state machine by a moment.
    let deadline = Instant::now() + WAIT;
    let st = loop {
        let st = s
            .maintenance()
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if st.raft_applied_index >= 2 {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "bootstrap + put never applied: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(st.version, "3.5.0");
    assert_eq!(st.leader, s.node().member_id());
    assert!(st.raft_term >= 1);
    assert!(st.raft_index >= st.raft_applied_index, "{st:?}");
    let file_len = std::fs::metadata(s.node().db_path()).unwrap().len() as i64;
    assert!(st.db_size > 0 && st.db_size <= file_len, "{st:?}");
    assert!(st.db_size_in_use > 0, "{st:?}");
    assert!(!st.is_learner);
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    assert_eq!(st.header.unwrap().member_id, s.node().member_id());

    // Defragment has nothing to do on redb, and says so by succeeding.
    s.maintenance()
        .defragment(pb::DefragmentRequest {})
        .await
        .unwrap();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_raised_listed_enforced_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut m = s.maintenance();
    let me = s.node().member_id();
    let nospace = pb::AlarmType::Nospace as i32;

    let get = |mut m: MaintenanceClient<Channel>| async move {
        m.alarm(pb::AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: pb::AlarmType::None as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .alarms
    };
    assert!(get(m.clone()).await.is_empty());

    let resp = m
        .alarm(pb::AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: me,
            alarm: nospace,
        })
        .await
        .unwrap()
        .into_inner();
    let raised = pb::AlarmMember {
        member_id: me,
        alarm: nospace,
    };
    assert_eq!(resp.alarms, vec![raised]);
    assert_eq!(get(m.clone()).await, vec![raised]);
    let st = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.errors, vec![format!("memberID:{me} alarm:NOSPACE ")]);
    // NOSPACE is enforced: writes that add data are refused.
    assert_eq!(
        put(s.node(), "k", "v").await,
        Err(ServerError::Store(StoreError::NoSpace))
    );

    let resp = m
        .alarm(pb::AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: me,
            alarm: nospace,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.alarms, vec![raised]);
    assert!(get(m.clone()).await.is_empty());
    put(s.node(), "k", "v").await.unwrap();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_is_stable_without_writes_and_changes_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut m = s.maintenance();
    let rev = put(s.node(), "a", "1").await.unwrap();
    let hash_kv = |mut m: MaintenanceClient<Channel>, revision: i64| async move {
        m.hash_kv(pb::HashKvRequest { revision })
            .await
            .unwrap()
            .into_inner()
    };
    let before = hash_kv(m.clone(), 0).await;
    assert_eq!(before.hash_revision, rev);
    assert_eq!(before.header.unwrap().revision, rev);
    // A no-op: a transaction that changes nothing.
    s.node()
        .write(Command::Txn(TxnRequest::default()))
        .await
        .unwrap();
    assert_eq!(hash_kv(m.clone(), 0).await.hash, before.hash);

    let rev2 = put(s.node(), "b", "2").await.unwrap();
    let after = hash_kv(m.clone(), 0).await;
    assert_ne!(after.hash, before.hash);
    assert_eq!(after.hash_revision, rev2);
    // History is hashed as of the revision asked for.
    assert_eq!(hash_kv(m.clone(), rev).await.hash, before.hash);
    let err = m
        .hash_kv(pb::HashKvRequest {
            revision: rev2 + 100,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);

    let h1 = m.hash(pb::HashRequest {}).await.unwrap().into_inner();
    assert!(h1.header.is_some());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_streams_with_etcds_trailer_and_restores_into_a_new_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("original")).await;
    for i in 0..50 {
        put(s.node(), &format!("key/{i:02}"), &format!("value-{i}"))
            .await
            .unwrap();
    }
    let last_rev = put(s.node(), "key/00", "overwritten").await.unwrap();
    let (bytes, msgs) = snapshot_bytes(&mut s.maintenance()).await;
    assert_eq!(bytes.len() % 512, 32, "etcdctl requires len % 512 == 32");
    let (data, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(data).as_slice(), trailer);
    assert!(msgs[0].header.is_some());
    assert_eq!(msgs.last().unwrap().remaining_bytes, 0);
    let original_id = s.node().member_id();
    s.shutdown().await;

    let file = dir.path().join("backup.db");
    std::fs::write(&file, &bytes).unwrap();
    let restored_dir = dir.path().join("restored");
    restore_snapshot(&file, &config(&restored_dir)).unwrap();
    // A second restore into the now used dir is refused.
    assert!(matches!(
        restore_snapshot(&file, &config(&restored_dir)),
        Err(RestoreError::DataDirNotEmpty(_))
    ));
    // A corrupted copy is refused before anything is written.
    let mut corrupt = bytes.clone();
    corrupt[100] ^= 0xff;
    std::fs::write(&file, &corrupt).unwrap();
    assert!(matches!(
        restore_snapshot(&file, &config(&dir.path().join("other"))),
        Err(RestoreError::Checksum(_))
    ));
    assert!(!dir.path().join("other").exists());

    let r = Server::start(&restored_dir).await;
    assert_ne!(r.node().member_id(), original_id, "a new cluster, new IDs");
    assert_eq!(r.node().members().len(), 1);
    assert_eq!(r.node().store().revision(), last_rev);
    assert_eq!(
        get(r.node(), "key/00").as_deref(),
        Some(&b"overwritten"[..])
    );
    for i in 1..50 {
        assert_eq!(
            get(r.node(), &format!("key/{i:02}")),
            Some(format!("value-{i}").into_bytes())
        );
    }
    // The restored cluster takes writes, continuing the revisions.
    assert_eq!(put(r.node(), "new", "x").await.unwrap(), last_rev + 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_locker_waits_until_the_first_unlocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (l1, l2) = (grant(s.node(), 30).await, grant(s.node(), 30).await);
    let mut lock = s.lock();
    let first = timeout(
        WAIT,
        lock.lock(lpb::LockRequest {
            name: b"job".to_vec(),
            lease: l1,
        }),
    )
    .await
    .expect("uncontended lock is immediate")
    .unwrap()
    .into_inner();
    assert_eq!(first.key, format!("job/{l1:x}").into_bytes());

    let mut second = tokio::spawn({
        let mut lock = s.lock();
        async move {
            lock.lock(lpb::LockRequest {
                name: b"job".to_vec(),
                lease: l2,
            })
            .await
        }
    });
    // The second locker's key is queued, and it does not get the lock.
    let node = s.node().clone();
    let k2 = format!("job/{l2:x}").into_bytes();
    wait_until("the second locker queues", WAIT, || {
        let ok = exists(&node, &k2);
        async move { ok }
    })
    .await;
    assert!(
        timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "second locker got the lock while the first holds it"
    );

    let unlocked = lock
        .unlock(lpb::UnlockRequest {
            key: first.key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let got = timeout(WAIT, second)
        .await
        .expect("second locker gets the lock after unlock")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(got.key, k2);
    assert!(got.header.unwrap().revision >= unlocked.header.unwrap().revision);
    assert!(!exists(s.node(), &first.key));
    lock.unlock(lpb::UnlockRequest { key: got.key })
        .await
        .unwrap();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_locker_fails_when_its_lease_ends_and_leaves_when_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (l1, l2, l3) = (
        grant(s.node(), 30).await,
        grant(s.node(), 30).await,
        grant(s.node(), 30).await,
    );
    let mut lock = s.lock();
    let held = lock
        .lock(lpb::LockRequest {
            name: b"m".to_vec(),
            lease: l1,
        })
        .await
        .unwrap()
        .into_inner();

    // Lease ends while waiting: the locker is told its session expired.
    let waiter = tokio::spawn({
        let mut lock = s.lock();
        async move {
            lock.lock(lpb::LockRequest {
                name: b"m".to_vec(),
                lease: l2,
            })
            .await
        }
    });
    let node = s.node().clone();
    let k2 = format!("m/{l2:x}").into_bytes();
    wait_until("the waiter queues", WAIT, || {
        let ok = exists(&node, &k2);
        async move { ok }
    })
    .await;
    revoke(s.node(), l2).await;
    let err = timeout(WAIT, waiter).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.message(), "mutex: session is expired");

    // A waiter whose client goes away leaves the queue.
    let k3 = format!("m/{l3:x}").into_bytes();
    let abandoned = tokio::spawn({
        let mut lock = s.lock();
        async move {
            lock.lock(lpb::LockRequest {
                name: b"m".to_vec(),
                lease: l3,
            })
            .await
        }
    });
    wait_until("the third locker queues", WAIT, || {
        let ok = exists(&node, &k3);
        async move { ok }
    })
    .await;
    abandoned.abort();
    wait_until("the abandoned key is removed", WAIT, || {
        let ok = !exists(&node, &k3);
        async move { ok }
    })
    .await;
    assert!(exists(s.node(), &held.key), "the holder keeps the lock");

    // A lock on a lease that does not exist is refused.
    let err = lock
        .lock(lpb::LockRequest {
            name: b"m".to_vec(),
            lease: 0x7777,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    s.shutdown().await;
}

/// A lock wait abandoned (its client went away) while a retry with the
/// same lease waits on another connection: the retry keeps the key. etcd
/// deletes the abandoned call's key by its create revision, which the
/// retry shares: the retry then failed with "session is expired".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_lock_keeps_the_key_its_abandoned_wait_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (holder, waiter) = (grant(s.node(), 30).await, grant(s.node(), 30).await);
    let held = s
        .lock()
        .lock(lpb::LockRequest {
            name: b"m".to_vec(),
            lease: holder,
        })
        .await
        .unwrap()
        .into_inner();
    let node = s.node().clone();
    let key = format!("m/{waiter:x}").into_bytes();
    let revisions = |node: &Node| {
        let r = node
            .store()
            .range(&RangeRequest {
                range: KeyRange::single(key.clone()),
                ..Default::default()
            })
            .unwrap();
        r.kvs
            .first()
            .map(|kv| (kv.create_revision, kv.mod_revision))
    };
    let call = |s: &Server| {
        let mut lock = s.lock();
        async move {
            lock.lock(lpb::LockRequest {
                name: b"m".to_vec(),
                lease: waiter,
            })
            .await
        }
    };
    let first = tokio::spawn(call(&s));
    wait_until("the first call queues", WAIT, || {
        let ok = revisions(&node).is_some();
        async move { ok }
    })
    .await;
    let (created, joined_at) = revisions(&node).unwrap();
    let retry = tokio::spawn(call(&s));
    wait_until("the retry joins again", WAIT, || {
        let ok = revisions(&node).is_some_and(|(_, m)| m > joined_at);
        async move { ok }
    })
    .await;
    first.abort();
    // The holder lets go; the retry gets the lock with the same key.
    let mut lock = s.lock();
    lock.unlock(lpb::UnlockRequest { key: held.key })
        .await
        .unwrap();
    let got = timeout(WAIT, retry)
        .await
        .expect("the retry gets the lock")
        .unwrap()
        .expect("the retry keeps its key")
        .into_inner();
    assert_eq!(got.key, key);
    // And keeps it: the abandoned wait's delete, whenever it lands, leaves
    // it alone (a bound on something that must not happen).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(revisions(&node).map(|(c, _)| c), Some(created), "key lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_leader_proclaim_observe_resign() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (l1, l2) = (grant(s.node(), 30).await, grant(s.node(), 30).await);
    let mut e = s.election();
    let name = b"web".to_vec();

    let err = e
        .leader(epb::LeaderRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "election: no leader");

    let mut observe = e
        .observe(epb::LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    let first = timeout(
        WAIT,
        e.campaign(epb::CampaignRequest {
            name: name.clone(),
            lease: l1,
            value: b"one".to_vec(),
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner()
    .leader
    .unwrap();
    assert_eq!(first.key, format!("web/{l1:x}").into_bytes());
    assert_eq!((first.lease, first.name.as_slice()), (l1, &name[..]));
    assert_eq!(next_value(&mut observe).await, b"one");
    let leader = e
        .leader(epb::LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert_eq!(
        (leader.key.as_slice(), leader.create_revision),
        (&first.key[..], first.rev)
    );
    assert_eq!(leader.lease, l1);

    // A second candidate waits behind the leader.
    let mut second = tokio::spawn({
        let mut e = s.election();
        let name = name.clone();
        async move {
            e.campaign(epb::CampaignRequest {
                name,
                lease: l2,
                value: b"two".to_vec(),
            })
            .await
        }
    });
    let node = s.node().clone();
    let k2 = format!("web/{l2:x}").into_bytes();
    wait_until("the second candidate queues", WAIT, || {
        let ok = exists(&node, &k2);
        async move { ok }
    })
    .await;
    assert!(timeout(Duration::from_millis(300), &mut second)
        .await
        .is_err());

    e.proclaim(epb::ProclaimRequest {
        leader: Some(first.clone()),
        value: b"one-b".to_vec(),
    })
    .await
    .unwrap();
    assert_eq!(next_value(&mut observe).await, b"one-b");
    // The key keeps its lease.
    let leader = e
        .leader(epb::LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert_eq!((leader.value.as_slice(), leader.lease), (&b"one-b"[..], l1));
    // A stale leadership cannot proclaim.
    let stale = epb::LeaderKey {
        rev: first.rev + 1000,
        ..first.clone()
    };
    let err = e
        .proclaim(epb::ProclaimRequest {
            leader: Some(stale),
            value: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "election: not leader");

    e.resign(epb::ResignRequest {
        leader: Some(first.clone()),
    })
    .await
    .unwrap();
    let second = timeout(WAIT, second)
        .await
        .expect("second candidate leads after the resign")
        .unwrap()
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    assert_eq!(second.key, k2);
    assert_eq!(next_value(&mut observe).await, b"two");

    e.resign(epb::ResignRequest {
        leader: Some(second),
    })
    .await
    .unwrap();
    let err = e
        .leader(epb::LeaderRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "election: no leader");
    drop(observe);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_to_itself_succeeds_and_to_a_stranger_fails() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut m = s.maintenance();
    m.move_leader(pb::MoveLeaderRequest {
        target_id: s.node().member_id(),
    })
    .await
    .unwrap();
    assert_eq!(s.node().leader_id(), Some(s.node().member_id()));
    let err = m
        .move_leader(pb::MoveLeaderRequest { target_id: 42 })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "etcdserver: bad leader transferee");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_on_an_unreachable_url_is_added_updated_and_removed_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut c = s.cluster();
    let added = timeout(
        WAIT,
        c.member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: true,
        }),
    )
    .await
    .expect("adding a learner does not wait for it")
    .unwrap()
    .into_inner();
    let learner = added.member.unwrap();
    assert!(learner.is_learner);
    assert_eq!(learner.peer_ur_ls, vec!["http://127.0.0.1:1".to_string()]);
    assert_eq!(added.members.len(), 2);
    assert!(added.members.iter().any(|m| m.id == learner.id));

    // The learner does not vote: the cluster stays writable.
    timeout(WAIT, put(s.node(), "still", "writable"))
        .await
        .expect("write with a dead learner")
        .unwrap();

    let err = c
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "etcdserver: Peer URLs already exists");
    let err = c
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["not a url".into()],
            is_learner: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let updated = c
        .member_update(pb::MemberUpdateRequest {
            id: learner.id,
            peer_ur_ls: vec!["http://127.0.0.1:2".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let m = updated.members.iter().find(|m| m.id == learner.id).unwrap();
    assert_eq!(m.peer_ur_ls, vec!["http://127.0.0.1:2".to_string()]);

    let removed = c
        .member_remove(pb::MemberRemoveRequest { id: learner.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.members.len(), 1);
    assert_eq!(removed.members[0].id, s.node().member_id());
    put(s.node(), "after", "remove").await.unwrap();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_waiting_lockers_and_observers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (l1, l2) = (grant(s.node(), 30).await, grant(s.node(), 30).await);
    let mut lock = s.lock();
    lock.lock(lpb::LockRequest {
        name: b"s".to_vec(),
        lease: l1,
    })
    .await
    .unwrap();
    let waiter = tokio::spawn({
        let mut lock = s.lock();
        async move {
            lock.lock(lpb::LockRequest {
                name: b"s".to_vec(),
                lease: l2,
            })
            .await
        }
    });
    let mut observe = s
        .election()
        .observe(epb::LeaderRequest {
            name: b"s".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    // The lock holder's key is the "leader" of the same queue.
    let first = timeout(WAIT, observe.message()).await.unwrap().unwrap();
    assert_eq!(first.unwrap().kv.unwrap().lease, l1);
    let node = s.node().clone();
    let k2 = format!("s/{l2:x}").into_bytes();
    wait_until("the waiter queues", WAIT, || {
        let ok = exists(&node, &k2);
        async move { ok }
    })
    .await;
    drop(node);
    timeout(WAIT, s.shutdown())
        .await
        .expect("shutdown is not held up by waiting requests");
    assert!(timeout(WAIT, waiter).await.unwrap().unwrap().is_err());
    let end = timeout(WAIT, observe.message()).await.unwrap();
    assert!(end.is_err(), "observe ends with an error: {end:?}");
}
