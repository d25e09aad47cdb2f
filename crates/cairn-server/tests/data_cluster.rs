//! The KV, Watch and Lease services on a 3-member cluster: every member
//! serves them, followers included, with the same answers.

mod support;

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::*;
use futures::StreamExt;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

type Result<T = ()> = anyhow::Result<T>;

const ELECTION: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(10);

async fn channel(c: &Cluster, i: usize) -> Result<Channel> {
    let url = c.members[i].server.as_ref().unwrap().client_url();
    Ok(Channel::from_shared(url)?.connect().await?)
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Result<i64> {
    let resp = put_answer(kv, key, value).await?.into_inner();
    Ok(resp.header.unwrap().revision)
}

/// The put's whole answer, response headers included.
async fn put_answer(
    kv: &mut KvClient<Channel>,
    key: &str,
    value: &str,
) -> Result<tonic::Response<PutResponse>> {
    Ok(kv
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await?)
}

async fn next(s: &mut Streaming<WatchResponse>) -> Result<WatchResponse> {
    match tokio::time::timeout(WAIT, s.next()).await {
        Ok(Some(r)) => Ok(r?),
        Ok(None) => anyhow::bail!("watch stream ended"),
        Err(_) => anyhow::bail!("no watch response within {WAIT:?}"),
    }
}

fn request(r: RequestUnion) -> WatchRequest {
    WatchRequest {
        request_union: Some(r),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_serve_kv_watch_and_lease() -> Result {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.wait_leader(ELECTION).await;
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut kv_leader = KvClient::new(channel(&c, leader).await?);
    let follower = channel(&c, f1).await?;
    let mut kv_f1 = KvClient::new(follower.clone());
    let mut kv_f2 = KvClient::new(channel(&c, f2).await?);

    // A watcher on a follower sees writes made through the leader and the
    // other follower, in revision order.
    let (tx, rx) = mpsc::channel(4);
    let mut watch = WatchClient::new(follower.clone())
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    tx.send(request(RequestUnion::CreateRequest(WatchCreateRequest {
        key: "c/".into(),
        range_end: "c0".into(),
        ..Default::default()
    })))
    .await?;
    assert!(next(&mut watch).await?.created);
    let mut revs = Vec::new();
    for i in 0..10 {
        let kv = if i % 2 == 0 {
            &mut kv_leader
        } else {
            &mut kv_f2
        };
        revs.push(put(kv, &format!("c/{i}"), "v").await?);
    }
    // Linearizable: a read on a follower right after the write returns
    // sees it.
    let got = kv_f1
        .range(RangeRequest {
            key: "c/9".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(got.kvs.len(), 1);
    assert!(got.header.unwrap().revision >= revs[9]);

    let mut seen = Vec::new();
    while seen.len() < revs.len() {
        for e in next(&mut watch).await?.events {
            seen.push(e.kv.unwrap().mod_revision);
        }
    }
    assert_eq!(seen, revs);
    // A progress request on the follower reports at least the last write,
    // after its events.
    tx.send(request(RequestUnion::ProgressRequest(
        WatchProgressRequest {},
    )))
    .await?;
    let progress = next(&mut watch).await?;
    assert_eq!((progress.watch_id, progress.events.len()), (-1, 0));
    assert!(progress.header.unwrap().revision >= revs[9]);

    // Leases through followers: grant on one, keep alive on it, read the
    // TTL and revoke through the other; the attached key goes everywhere.
    let mut lease_f1 = LeaseClient::new(follower.clone());
    let mut lease_f2 = LeaseClient::new(channel(&c, f2).await?);
    let id = lease_f1
        .lease_grant(LeaseGrantRequest { ttl: 20, id: 0 })
        .await?
        .into_inner()
        .id;
    kv_f1
        .put(PutRequest {
            key: "c/leased".into(),
            value: "v".into(),
            lease: id,
            ..Default::default()
        })
        .await?;
    let (ka_tx, ka_rx) = mpsc::channel(1);
    let mut answers = lease_f1
        .lease_keep_alive(ReceiverStream::new(ka_rx))
        .await?
        .into_inner();
    ka_tx.send(LeaseKeepAliveRequest { id }).await?;
    let answer = tokio::time::timeout(WAIT, answers.next())
        .await?
        .expect("keep-alive answer")?;
    assert_eq!((answer.id, answer.ttl), (id, 20));
    let ttl = lease_f2
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await?
        .into_inner();
    assert_eq!(ttl.keys, [b"c/leased".to_vec()]);
    assert!((15..=20).contains(&ttl.ttl), "remaining {}", ttl.ttl);
    lease_f2.lease_revoke(LeaseRevokeRequest { id }).await?;
    for kv in [&mut kv_leader, &mut kv_f1, &mut kv_f2] {
        let got = kv
            .range(RangeRequest {
                key: "c/leased".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(got.kvs.is_empty());
    }
    // The watcher saw the put and the revoke's delete.
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        for e in next(&mut watch).await?.events {
            kinds.push((e.r#type, e.kv.unwrap().key));
        }
    }
    assert_eq!(
        kinds,
        [(0, b"c/leased".to_vec()), (1, b"c/leased".to_vec())],
        "put then delete"
    );
    // Open watch and keep-alive streams must not hold the shutdown up.
    tokio::time::timeout(WAIT, c.shutdown()).await?;
    Ok(())
}

/// A follower's answers name the leader (`cairn-leader`), so a client can
/// move there and skip the forwarding hop; the leader's answers name no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_name_the_leader_in_their_answers() -> Result {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;
    let leader_url = c.members[leader].server.as_ref().unwrap().client_url();
    // Members publish their client URLs once the cluster runs (as etcd's
    // do); until the follower knows the leader's, it has nothing to name.
    let leader_id = c.node(leader).member_id();
    wait_until("the follower knows the leader's client URL", WAIT, || {
        let known = c
            .node(follower)
            .members()
            .into_iter()
            .any(|m| m.id == leader_id && m.client_urls.first() == Some(&leader_url));
        async move { known }
    })
    .await;

    let mut kv = KvClient::new(channel(&c, follower).await?);
    let answer = put_answer(&mut kv, "hint", "v").await?;
    let named = answer
        .metadata()
        .get("cairn-leader")
        .and_then(|v| v.to_str().ok());
    assert_eq!(named, Some(leader_url.as_str()));
    // Reads answered by a follower name it too.
    let read = kv
        .range(RangeRequest {
            key: "hint".into(),
            ..Default::default()
        })
        .await?;
    assert!(read.metadata().get("cairn-leader").is_some());

    let mut kv = KvClient::new(channel(&c, leader).await?);
    let answer = put_answer(&mut kv, "hint", "w").await?;
    assert!(answer.metadata().get("cairn-leader").is_none());
    Ok(())
}

/// A member whose clock is behind its leader's counts a lease's remaining
/// TTL from the leader's time, which the leader's read-index answer
/// carries. Here the member is a learner that joined 3 s after the grant
/// and has applied no stamp since: before the fix it answered the full
/// 60 s (cairn-chaos saw the same from a member that installed a snapshot
/// after a whole-cluster crash).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_its_leader_counts_a_ttl_from_the_leaders_time() -> Result {
    // Ticks 10 s apart: the grant is the last stamp the learner applies
    // (the leader ticks once when elected, before the grant).
    let slow_ticks = |cfg: &mut cairn_server::ServerConfig| cfg.tick_interval_ms = 10_000;
    let mut c = Cluster::start(3, slow_ticks).await;
    let leader = c.wait_leader(ELECTION).await;
    let mut lease = LeaseClient::new(channel(&c, leader).await?);
    let id = lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await?
        .into_inner()
        .id;
    let granted_ms = c.node(leader).store().now_ms();
    wait_until("3 s of cluster time passed", WAIT, || {
        let ok = c.node(leader).clock.now_ms() >= granted_ms + 3_000;
        async move { ok }
    })
    .await;
    let (learner, _) = c.add_learner(leader, slow_ticks).await;
    wait_until("the learner has the lease", WAIT, || {
        let ok = c.node(learner).store().lease_info(id).is_some();
        async move { ok }
    })
    .await;
    let ttl_on = |ch: Channel| async move {
        let ttl = LeaseClient::new(ch)
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
            .await?
            .into_inner()
            .ttl;
        anyhow::Ok(ttl)
    };
    let on_leader = ttl_on(channel(&c, leader).await?).await?;
    let on_learner = ttl_on(channel(&c, learner).await?).await?;
    assert!(on_leader <= 57, "leader: {on_leader}s left");
    assert!(
        on_learner <= on_leader + 1,
        "learner: {on_learner}s left, leader {on_leader}s"
    );
    c.shutdown().await;
    Ok(())
}
