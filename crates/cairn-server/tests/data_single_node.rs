//! The etcd KV, Watch and Lease services of one real member, driven over
//! gRPC with the generated etcd clients.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::*;
use cairn_proto::mvccpb::event::EventType;
use cairn_server::serve::{start, RunningServer};
use cairn_server::ServerConfig;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

type Result<T = ()> = anyhow::Result<T>;

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

struct Env {
    server: RunningServer,
    _dir: tempfile::TempDir,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
}

fn config(dir: &Path) -> Result<ServerConfig> {
    Ok(ServerConfig {
        data_dir: dir.to_path_buf(),
        listen_client: "127.0.0.1:0".parse()?,
        listen_peer: "127.0.0.1:0".parse()?,
        ..Default::default()
    })
}

async fn start_server(config: ServerConfig) -> Result<RunningServer> {
    let server = start(config).await?;
    let deadline = Instant::now() + WAIT;
    while server.node.leader_id().is_none() {
        anyhow::ensure!(Instant::now() < deadline, "no leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(server)
}

impl Env {
    async fn start() -> Result<Env> {
        Env::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Result<Env> {
        let dir = tempfile::tempdir()?;
        let mut cfg = config(dir.path())?;
        tweak(&mut cfg);
        let server = start_server(cfg).await?;
        let channel = Channel::from_shared(server.client_url())?.connect().await?;
        Ok(Env {
            server,
            _dir: dir,
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel),
        })
    }

    async fn put(&mut self, key: &str, value: &str) -> Result<i64> {
        let resp = self
            .kv
            .put(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(resp.header.unwrap().revision)
    }

    async fn range(&mut self, req: RangeRequest) -> std::result::Result<RangeResponse, Status> {
        self.kv.range(req).await.map(|r| r.into_inner())
    }

    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let resp = self.range(single(key)).await?;
        Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
    }

    async fn revision(&mut self) -> Result<i64> {
        Ok(self.range(single("any")).await?.header.unwrap().revision)
    }

    async fn watch_stream(&mut self) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(16);
        let responses = self
            .watch
            .watch(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(WatchStream { tx, responses })
    }

    async fn shutdown(self) {
        stop(self.server).await;
    }
}

/// Shut a member down; open client streams must not hold it up.
async fn stop(server: RunningServer) {
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown within the wait");
}

fn single(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn prefix(p: &str) -> RangeRequest {
    RangeRequest {
        key: p.into(),
        range_end: prefix_end(p.as_bytes()),
        ..Default::default()
    }
}

fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    *end.last_mut().unwrap() += 1;
    end
}

fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn range_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(single(key))),
    }
}

fn value_is(key: &str, value: &str) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Value as i32,
        key: key.into(),
        target_union: Some(TargetUnion::Value(value.into())),
        range_end: vec![],
    }
}

fn assert_status(err: &Status, code: Code, message: &str) {
    assert_eq!((err.code(), err.message()), (code, message), "{err:?}");
}

struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

fn create(key: &str, range_end: &[u8]) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

impl WatchStream {
    async fn send(&self, req: RequestUnion) -> Result {
        self.tx
            .send(WatchRequest {
                request_union: Some(req),
            })
            .await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<WatchResponse> {
        match tokio::time::timeout(WAIT, self.responses.next()).await {
            Ok(Some(r)) => Ok(r?),
            Ok(None) => anyhow::bail!("watch stream ended"),
            Err(_) => anyhow::bail!("no watch response within {WAIT:?}"),
        }
    }

    /// Create a watcher and return its ID from the created response.
    async fn create(&mut self, req: WatchCreateRequest) -> Result<i64> {
        self.send(RequestUnion::CreateRequest(req)).await?;
        let resp = self.next().await?;
        assert!(resp.created && !resp.canceled, "{resp:?}");
        Ok(resp.watch_id)
    }

    /// Read responses until `n` events have arrived; return them with
    /// (type, key, mod revision).
    async fn events(&mut self, n: usize) -> Result<Vec<(EventType, String, i64)>> {
        let mut out = Vec::new();
        while out.len() < n {
            let resp = self.next().await?;
            assert!(!resp.canceled, "unexpected cancel {resp:?}");
            for e in resp.events {
                let kv = e.kv.unwrap();
                out.push((
                    EventType::try_from(e.r#type)?,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.mod_revision,
                ));
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// KV
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_revisions() -> Result {
    let mut env = Env::start().await?;
    let r1 = env.put("a", "1").await?;
    let r2 = env.put("a", "2").await?;
    assert_eq!(r2, r1 + 1);
    let resp = env.range(single("a")).await?;
    let header = resp.header.unwrap();
    assert_eq!(header.revision, r2);
    assert_eq!(header.member_id, env.server.node.member_id());
    assert_eq!(header.cluster_id, env.server.node.cluster_id());
    assert!(header.raft_term >= 1);
    let kv = &resp.kvs[0];
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"2"[..], r1, r2, 2)
    );
    assert_eq!(resp.count, 1);
    // prev_kv on put.
    let put = env
        .kv
        .put(PutRequest {
            key: "a".into(),
            value: "3".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(put.prev_kv.unwrap().value, b"2");
    assert_eq!(put.header.unwrap().revision, r2 + 1);
    // A missing key reads as nothing, at the current revision.
    let resp = env.range(single("missing")).await?;
    assert!(resp.kvs.is_empty());
    assert_eq!(resp.count, 0);
    assert_eq!(resp.header.unwrap().revision, r2 + 1);
    // Serializable reads are served locally and see the same data.
    let resp = env
        .range(RangeRequest {
            serializable: true,
            ..single("a")
        })
        .await?;
    assert_eq!(resp.kvs[0].value, b"3");
    // An empty key is refused with etcd's error.
    let err = env
        .kv
        .put(PutRequest::default())
        .await
        .expect_err("empty key");
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    let err = env.range(single("")).await.expect_err("empty key");
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_from_key_limit_sort_and_projections() -> Result {
    let mut env = Env::start().await?;
    for (k, v) in [
        ("a/2", "x"),
        ("a/1", "zz"),
        ("a/3", "y"),
        ("b", "1"),
        ("c", "2"),
    ] {
        env.put(k, v).await?;
    }
    let resp = env.range(prefix("a/")).await?;
    assert_eq!(keys(&resp), ["a/1", "a/2", "a/3"]);
    assert_eq!((resp.count, resp.more), (3, false));
    // From key: range_end = "\0".
    let resp = env
        .range(RangeRequest {
            range_end: vec![0],
            ..single("b")
        })
        .await?;
    assert_eq!(keys(&resp), ["b", "c"]);
    // Every key: key = range_end = "\0".
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let resp = env
        .range(RangeRequest {
            limit: 2,
            ..all.clone()
        })
        .await?;
    assert_eq!(keys(&resp), ["a/1", "a/2"]);
    assert_eq!((resp.count, resp.more), (5, true));
    let resp = env
        .range(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            ..prefix("a/")
        })
        .await?;
    assert_eq!(keys(&resp), ["a/3", "a/2", "a/1"]);
    // Sorting by mod revision: the order the keys were written.
    let resp = env
        .range(RangeRequest {
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Mod as i32,
            ..prefix("a/")
        })
        .await?;
    assert_eq!(keys(&resp), ["a/2", "a/1", "a/3"]);
    let resp = env
        .range(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Value as i32,
            limit: 1,
            ..prefix("a/")
        })
        .await?;
    assert_eq!((keys(&resp), resp.more), (vec!["a/1".to_string()], true));
    let resp = env
        .range(RangeRequest {
            keys_only: true,
            ..prefix("a/")
        })
        .await?;
    assert_eq!(resp.kvs.len(), 3);
    assert!(resp.kvs.iter().all(|kv| kv.value.is_empty()));
    let resp = env
        .range(RangeRequest {
            count_only: true,
            ..all.clone()
        })
        .await?;
    assert!(resp.kvs.is_empty());
    assert_eq!(resp.count, 5);
    let err = env
        .range(RangeRequest {
            sort_order: 7,
            ..all
        })
        .await
        .expect_err("bad sort order");
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: invalid sort option",
    );
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_compacted_and_future_revisions() -> Result {
    let mut env = Env::start().await?;
    let r1 = env.put("k", "v1").await?;
    let r2 = env.put("k", "v2").await?;
    let r3 = env.put("k", "v3").await?;
    let at = |revision| RangeRequest {
        revision,
        ..single("k")
    };
    let resp = env.range(at(r1)).await?;
    assert_eq!(resp.kvs[0].value, b"v1");
    // The header reports the current revision, as etcd does.
    assert_eq!(resp.header.unwrap().revision, r3);
    assert_eq!(env.range(at(r2)).await?.kvs[0].value, b"v2");

    let resp = env
        .kv
        .compact(CompactionRequest {
            revision: r2,
            physical: true,
        })
        .await?
        .into_inner();
    assert_eq!(resp.header.unwrap().revision, r3);
    let err = env.range(at(r1)).await.expect_err("compacted");
    assert_status(
        &err,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    // The compact revision itself is still readable.
    assert_eq!(env.range(at(r2)).await?.kvs[0].value, b"v2");
    let err = env.range(at(r3 + 100)).await.expect_err("future");
    assert_status(
        &err,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    // Compacting again at or below the compact revision is refused.
    let err = env
        .kv
        .compact(CompactionRequest {
            revision: r1,
            physical: false,
        })
        .await
        .expect_err("already compacted");
    assert_status(
        &err,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compare_branches_and_nesting() -> Result {
    let mut env = Env::start().await?;
    let r1 = env.put("flag", "on").await?;
    // Success branch: the compare holds.
    let resp = env
        .kv
        .txn(TxnRequest {
            compare: vec![value_is("flag", "on")],
            success: vec![
                put_op("x", "1"),
                range_op("x"),
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(TxnRequest {
                        compare: vec![value_is("flag", "off")],
                        success: vec![put_op("nested", "success")],
                        failure: vec![put_op("nested", "failure")],
                    })),
                },
            ],
            failure: vec![range_op("flag")],
        })
        .await?
        .into_inner();
    assert!(resp.succeeded);
    let rev = resp.header.unwrap().revision;
    assert_eq!(rev, r1 + 1, "one txn, one revision");
    assert_eq!(resp.responses.len(), 3);
    match &resp.responses[1].response {
        // The range sees the txn's own earlier put.
        Some(response_op::Response::ResponseRange(r)) => {
            assert_eq!(r.kvs[0].value, b"1");
            assert_eq!(r.kvs[0].mod_revision, rev);
        }
        other => panic!("expected a range response, got {other:?}"),
    }
    match &resp.responses[2].response {
        Some(response_op::Response::ResponseTxn(t)) => {
            assert!(!t.succeeded);
            assert!(matches!(
                t.responses[0].response,
                Some(response_op::Response::ResponsePut(_))
            ));
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    assert_eq!(env.get("nested").await?.as_deref(), Some(&b"failure"[..]));

    // Failure branch: the compare does not hold; a read-only branch takes
    // no revision.
    let resp = env
        .kv
        .txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Mod as i32,
                key: "flag".into(),
                target_union: Some(TargetUnion::ModRevision(r1)),
                range_end: vec![],
            }],
            success: vec![put_op("never", "1")],
            failure: vec![range_op("flag")],
        })
        .await?
        .into_inner();
    assert!(!resp.succeeded);
    assert_eq!(resp.header.unwrap().revision, rev);
    match &resp.responses[0].response {
        Some(response_op::Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b"on"),
        other => panic!("expected a range response, got {other:?}"),
    }
    assert_eq!(env.get("never").await?, None);
    // A compare on a missing key: version 0.
    let resp = env
        .kv
        .txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                key: "absent".into(),
                target_union: Some(TargetUnion::Version(0)),
                range_end: vec![],
            }],
            success: vec![put_op("absent", "created")],
            failure: vec![],
        })
        .await?
        .into_inner();
    assert!(resp.succeeded);
    assert_eq!(env.get("absent").await?.as_deref(), Some(&b"created"[..]));
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_and_request_limits_are_enforced() -> Result {
    let mut env = Env::start().await?;
    let before = env.revision().await?;
    let err = env
        .kv
        .txn(TxnRequest {
            success: vec![put_op("dup", "1"), put_op("dup", "2")],
            ..Default::default()
        })
        .await
        .expect_err("duplicate key");
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    let many: Vec<RequestOp> = (0..129).map(|i| put_op(&format!("k{i}"), "v")).collect();
    let err = env
        .kv
        .txn(TxnRequest {
            success: many.clone(),
            ..Default::default()
        })
        .await
        .expect_err("too many ops");
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    // 128 (the default limit) is fine.
    let resp = env
        .kv
        .txn(TxnRequest {
            success: many[..128].to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(resp.succeeded);
    assert_eq!(resp.responses.len(), 128);
    // Just over --max-request-bytes (1.5 MiB by default).
    let err = env
        .kv
        .put(PutRequest {
            key: "big".into(),
            value: vec![b'x'; 1536 * 1024],
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_status(
        &err,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    // Somewhat under the limit is accepted.
    env.kv
        .put(PutRequest {
            key: "big".into(),
            value: vec![b'x'; 1500 * 1024],
            ..Default::default()
        })
        .await?;
    assert_eq!(
        env.revision().await?,
        before + 2,
        "refused requests changed nothing"
    );
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_range_with_prev_kv() -> Result {
    let mut env = Env::start().await?;
    for k in ["d/1", "d/2", "d/3", "e"] {
        env.put(k, k).await?;
    }
    let resp = env
        .kv
        .delete_range(DeleteRangeRequest {
            key: "d/".into(),
            range_end: prefix_end(b"d/"),
            prev_kv: true,
        })
        .await?
        .into_inner();
    assert_eq!(resp.deleted, 3);
    let prev: Vec<_> = resp.prev_kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(prev, [b"d/1".to_vec(), b"d/2".to_vec(), b"d/3".to_vec()]);
    let rev = resp.header.unwrap().revision;
    assert!(env.range(prefix("d/")).await?.kvs.is_empty());
    assert_eq!(env.get("e").await?.as_deref(), Some(&b"e"[..]));
    // Deleting nothing succeeds and takes no revision.
    let resp = env
        .kv
        .delete_range(DeleteRangeRequest {
            key: "d/1".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!((resp.deleted, resp.header.unwrap().revision), (0, rev));
    env.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Lease
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_keepalive_ttl_and_revoke() -> Result {
    let mut env = Env::start().await?;
    let grant = env
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
        .await?
        .into_inner();
    assert_eq!(grant.ttl, 30);
    assert!(grant.id > 0);
    let id = grant.id;
    // A chosen ID; a taken one is refused.
    let chosen = env
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 1, id: 4242 })
        .await?
        .into_inner();
    assert_eq!(chosen.id, 4242);
    assert_eq!(chosen.ttl, 2, "raised to the minimum TTL");
    let err = env
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 10, id: 4242 })
        .await
        .expect_err("taken");
    assert_status(
        &err,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );

    for k in ["l/1", "l/2"] {
        env.kv
            .put(PutRequest {
                key: k.into(),
                value: "v".into(),
                lease: id,
                ..Default::default()
            })
            .await?;
    }
    let err = env
        .kv
        .put(PutRequest {
            key: "l/x".into(),
            lease: 777,
            ..Default::default()
        })
        .await
        .expect_err("unknown lease");
    assert_status(
        &err,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );

    let ttl = env
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await?
        .into_inner();
    assert_eq!((ttl.id, ttl.granted_ttl), (id, 30));
    assert!((25..=30).contains(&ttl.ttl), "remaining {}", ttl.ttl);
    assert_eq!(ttl.keys, [b"l/1".to_vec(), b"l/2".to_vec()]);
    let ttl = env
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
        .await?
        .into_inner();
    assert!(ttl.keys.is_empty());

    let leases = env
        .lease
        .lease_leases(LeaseLeasesRequest {})
        .await?
        .into_inner();
    let ids: BTreeSet<i64> = leases.leases.iter().map(|l| l.id).collect();
    assert_eq!(ids, BTreeSet::from([id, 4242]));

    // Keep-alive: several requests on one stream, each answered.
    let (tx, rx) = mpsc::channel(4);
    let mut answers = env
        .lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await?
        .into_inner();
    for _ in 0..3 {
        tx.send(LeaseKeepAliveRequest { id }).await?;
        let resp = tokio::time::timeout(WAIT, answers.next())
            .await?
            .expect("keep-alive answer")?;
        assert_eq!((resp.id, resp.ttl), (id, 30));
    }

    let rev_before = env.revision().await?;
    let revoke = env
        .lease
        .lease_revoke(LeaseRevokeRequest { id })
        .await?
        .into_inner();
    assert_eq!(
        revoke.header.unwrap().revision,
        rev_before + 1,
        "keys deleted at one revision"
    );
    assert!(env.range(prefix("l/")).await?.kvs.is_empty());
    let ttl = env
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await?
        .into_inner();
    assert_eq!(ttl.ttl, -1, "a revoked lease reads as TTL -1");
    // Keeping a lease that is gone answers TTL 0 and keeps the stream.
    tx.send(LeaseKeepAliveRequest { id }).await?;
    let resp = tokio::time::timeout(WAIT, answers.next())
        .await?
        .expect("keep-alive answer")?;
    assert_eq!((resp.id, resp.ttl), (id, 0));
    tx.send(LeaseKeepAliveRequest { id: 4242 }).await?;
    let resp = tokio::time::timeout(WAIT, answers.next())
        .await?
        .expect("keep-alive answer")?;
    assert_eq!((resp.id, resp.ttl), (4242, 2));
    // Closing our side ends the stream cleanly.
    drop(tx);
    let end = tokio::time::timeout(WAIT, answers.next()).await?;
    assert!(
        end.is_none(),
        "stream ends after the client closes: {end:?}"
    );

    let err = env
        .lease
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect_err("revoked twice");
    assert_status(
        &err,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires_and_its_keys_go() -> Result {
    let mut env = Env::start().await?;
    let id = env
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 2, id: 0 })
        .await?
        .into_inner()
        .id;
    let granted = Instant::now();
    env.kv
        .put(PutRequest {
            key: "ephemeral".into(),
            value: "v".into(),
            lease: id,
            ..Default::default()
        })
        .await?;
    // The remaining TTL counts down between ticks.
    let first = env
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
        .await?
        .into_inner()
        .ttl;
    assert!((1..=2).contains(&first), "remaining {first}");
    let deadline = granted + Duration::from_secs(6);
    while env.get("ephemeral").await?.is_some() {
        assert!(Instant::now() < deadline, "key still there after 6 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = granted.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_millis(4500),
        "lease of 2 s expired after {took:?}"
    );
    let ttl = env
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
        .await?
        .into_inner();
    assert_eq!(ttl.ttl, -1);
    env.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_events_in_order_and_cancels() -> Result {
    let mut env = Env::start().await?;
    let mut w = env.watch_stream().await?;
    let id = w.create(create("w/", &prefix_end(b"w/"))).await?;
    let r1 = env.put("w/a", "1").await?;
    env.put("other", "x").await?;
    let r2 = env.put("w/b", "2").await?;
    let r3 = env
        .kv
        .delete_range(DeleteRangeRequest {
            key: "w/a".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .unwrap()
        .revision;
    let events = w.events(3).await?;
    assert_eq!(
        events,
        [
            (EventType::Put, "w/a".to_string(), r1),
            (EventType::Put, "w/b".to_string(), r2),
            (EventType::Delete, "w/a".to_string(), r3),
        ]
    );
    // A second watcher on the same stream gets its own ID.
    let id2 = w.create(create("z", &[])).await?;
    assert_ne!(id, id2);
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: id,
    }))
    .await?;
    let resp = w.next().await?;
    assert!(resp.canceled && resp.watch_id == id, "{resp:?}");
    env.put("w/c", "after cancel").await?;
    let rz = env.put("z", "still watched").await?;
    let resp = w.next().await?;
    assert_eq!(resp.watch_id, id2, "nothing more for the cancelled watcher");
    assert_eq!(resp.events[0].kv.as_ref().unwrap().mod_revision, rz);
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_from_start_revision_with_prev_kv() -> Result {
    let mut env = Env::start().await?;
    let r1 = env.put("h/1", "a").await?;
    let r2 = env.put("h/1", "b").await?;
    let r3 = env.put("h/2", "c").await?;
    let mut w = env.watch_stream().await?;
    w.create(WatchCreateRequest {
        start_revision: r2,
        prev_kv: true,
        ..create("h/", &prefix_end(b"h/"))
    })
    .await?;
    let r4 = env.put("h/1", "d").await?;
    let mut got = Vec::new();
    while got.len() < 3 {
        for e in w.next().await?.events {
            got.push(e);
        }
    }
    let revs: Vec<i64> = got
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, [r2, r3, r4]);
    // prev_kv is the key's value before each event.
    let prev = |i: usize| {
        got[i]
            .prev_kv
            .as_ref()
            .map(|kv| (kv.value.clone(), kv.mod_revision))
    };
    assert_eq!(prev(0), Some((b"a".to_vec(), r1)));
    assert_eq!(prev(1), None, "h/2 did not exist before");
    assert_eq!(prev(2), Some((b"b".to_vec(), r2)));
    // Without prev_kv, none is sent.
    let mut plain = env.watch_stream().await?;
    plain.create(create("h/1", &[])).await?;
    env.put("h/1", "e").await?;
    let resp = plain.next().await?;
    assert!(resp.events[0].prev_kv.is_none());
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_duplicate_ids_and_chosen_ids() -> Result {
    let mut env = Env::start().await?;
    let mut w = env.watch_stream().await?;
    let id = w
        .create(WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            watch_id: 7,
            ..create("f", &[])
        })
        .await?;
    assert_eq!(id, 7, "the client's chosen ID");
    w.send(RequestUnion::CreateRequest(WatchCreateRequest {
        watch_id: 7,
        ..create("g", &[])
    }))
    .await?;
    let dup = w.next().await?;
    assert!(dup.created && dup.canceled && dup.watch_id == 7, "{dup:?}");
    assert!(dup.cancel_reason.contains("duplicate"), "{dup:?}");
    env.put("f", "1").await?;
    let rd = env
        .kv
        .delete_range(DeleteRangeRequest {
            key: "f".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .unwrap()
        .revision;
    let events = w.events(1).await?;
    assert_eq!(events, [(EventType::Delete, "f".to_string(), rd)]);
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_bounded_per_stream_and_per_member() -> Result {
    let mut env = Env::start_with(|c| {
        c.max_watchers_per_stream = 3;
        c.max_watchers = 5;
    })
    .await?;
    // Created and cancelled at once, with the reason, as etcd refuses.
    async fn refused(w: &mut WatchStream, key: &str) -> Result<String> {
        w.send(RequestUnion::CreateRequest(create(key, &[])))
            .await?;
        let resp = w.next().await?;
        assert!(resp.created && resp.canceled, "{resp:?}");
        Ok(resp.cancel_reason)
    }
    let mut a = env.watch_stream().await?;
    let mut ids = Vec::new();
    for key in ["a", "b", "c"] {
        ids.push(a.create(create(key, &[])).await?);
    }
    let reason = refused(&mut a, "d").await?;
    assert!(
        reason.contains("too many watchers on this stream (at most 3"),
        "{reason}"
    );
    // A cancel makes room again.
    a.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: ids[0],
    }))
    .await?;
    assert!(a.next().await?.canceled);
    a.create(create("d", &[])).await?;

    // Another stream: two more reach the member's bound of five.
    let mut b = env.watch_stream().await?;
    b.create(create("e", &[])).await?;
    b.create(create("f", &[])).await?;
    let reason = refused(&mut b, "g").await?;
    assert!(
        reason.contains("too many watchers on this member (at most 5)"),
        "{reason}"
    );
    // The watchers made still deliver.
    env.put("f", "1").await?;
    assert_eq!(b.events(1).await?[0].1, "f");
    // A stream that ends gives its watchers back.
    drop(a);
    let mut c = env.watch_stream().await?;
    let mut created = false;
    for _ in 0..100 {
        c.send(RequestUnion::CreateRequest(create("h", &[])))
            .await?;
        let resp = c.next().await?;
        if !resp.canceled {
            created = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(created, "the ended stream's watchers were not given back");
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_is_cancelled() -> Result {
    let mut env = Env::start().await?;
    for i in 0..5 {
        env.put("c", &i.to_string()).await?;
    }
    let current = env.revision().await?;
    env.kv
        .compact(CompactionRequest {
            revision: current - 1,
            physical: true,
        })
        .await?;
    let mut w = env.watch_stream().await?;
    w.send(RequestUnion::CreateRequest(WatchCreateRequest {
        start_revision: 1,
        ..create("c", &[])
    }))
    .await?;
    let created = w.next().await?;
    assert!(created.created, "{created:?}");
    let cancelled = w.next().await?;
    assert_eq!(cancelled.watch_id, created.watch_id);
    assert!(cancelled.canceled, "{cancelled:?}");
    assert_eq!(cancelled.compact_revision, current - 1);
    // From the compact revision on is fine.
    w.create(WatchCreateRequest {
        start_revision: current - 1,
        ..create("c", &[])
    })
    .await?;
    let events = w.events(2).await?;
    assert_eq!(events[0].2, current - 1);
    assert_eq!(events[1].2, current);
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_request_reports_the_current_revision() -> Result {
    let mut env = Env::start().await?;
    let mut w = env.watch_stream().await?;
    // With no watchers at all.
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await?;
    let resp = w.next().await?;
    assert_eq!(resp.watch_id, -1);
    assert!(resp.events.is_empty());
    assert_eq!(resp.header.unwrap().revision, env.revision().await?);

    w.create(create("p", &[])).await?;
    let rp = env.put("p", "1").await?;
    let rq = env.put("q", "unwatched").await?;
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await?;
    // The event comes first, then the notification at the newest revision.
    let resp = w.next().await?;
    assert_eq!(resp.events[0].kv.as_ref().unwrap().mod_revision, rp);
    let resp = w.next().await?;
    assert_eq!((resp.watch_id, resp.events.len()), (-1, 0), "{resp:?}");
    assert_eq!(resp.header.unwrap().revision, rq);
    env.shutdown().await;
    Ok(())
}

/// A watcher that asked for `progress_notify` gets a notification at the
/// current revision every `watch_progress_notify_interval_ms` it sees no
/// event (etcd's `--experimental-watch-progress-notify-interval`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_watchers_get_progress_at_the_configured_interval() -> Result {
    let mut env = Env::start_with(|c| c.watch_progress_notify_interval_ms = 100).await?;
    let mut w = env.watch_stream().await?;
    let id = w
        .create(WatchCreateRequest {
            progress_notify: true,
            ..create("n", &[])
        })
        .await?;
    let before = env.put("other", "x").await?;
    let started = Instant::now();
    let resp = w.next().await?;
    assert_eq!((resp.watch_id, resp.events.len()), (id, 0), "{resp:?}");
    assert_eq!(resp.header.unwrap().revision, before);
    let at = env.put("n", "1").await?;
    let mut saw_event = false;
    loop {
        let resp = w.next().await?;
        if !resp.events.is_empty() {
            saw_event = true;
            continue;
        }
        assert!(saw_event, "the event before any later notification");
        assert_eq!(resp.header.unwrap().revision, at);
        break;
    }
    // Both notifications in well under the 10 minutes of etcd's default.
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    env.shutdown().await;
    Ok(())
}

/// An HTTP/2 client on the client port that acknowledges the server's
/// settings and then answers nothing (a host gone without closing its
/// connections): whether the member has closed the connection `after`.
async fn silent_client_dropped(env: &Env, after: Duration) -> Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(env.server.client_addr).await?;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    // An empty SETTINGS frame, then the ack of the server's.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?;
    s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await?;
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(after, async {
        // The server's frames (settings, pings), unanswered, until it closes.
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(closed.is_ok())
}

/// etcd's `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`: a
/// connection that answers no ping is closed, so a vanished client's
/// streams and watchers do not live on. With etcd's default interval (2 h)
/// the same client stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_no_ping_is_disconnected() -> Result {
    let env = Env::start_with(|c| {
        c.grpc_keepalive_interval_ms = 200;
        c.grpc_keepalive_timeout_ms = 200;
    })
    .await?;
    assert!(silent_client_dropped(&env, WAIT).await?, "still connected");
    env.shutdown().await;
    let env = Env::start().await?;
    assert!(
        !silent_client_dropped(&env, Duration::from_secs(2)).await?,
        "dropped without keepalive pings"
    );
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_gets_every_event_in_order() -> Result {
    let mut env = Env::start().await?;
    let mut w = env.watch_stream().await?;
    w.create(create("s/", &prefix_end(b"s/"))).await?;
    let start = env.revision().await?;
    // Write 2,000 keys of 4 KiB, 16 at a time, without reading the watch
    // stream: 8 MiB, more than HTTP/2 flow control and the server's queues
    // hold, so the watcher falls behind and is caught up from history.
    const N: usize = 2000;
    let kv = env.kv.clone();
    let results: Vec<std::result::Result<_, Status>> = futures::stream::iter(0..N)
        .map(|i| {
            let mut kv = kv.clone();
            async move {
                kv.put(PutRequest {
                    key: format!("s/{i:05}").into_bytes(),
                    value: vec![b'v'; 4096],
                    ..Default::default()
                })
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let end = env.revision().await?;
    assert_eq!(end - start, N as i64);
    // Ask for progress while far behind: it may only come once every
    // event up to the revision it reports has been sent.
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await?;
    // Now read everything: each revision once, in order, every key.
    let mut revs = Vec::new();
    let mut keys = BTreeSet::new();
    let progress = loop {
        let resp = w.next().await?;
        if resp.watch_id == -1 {
            break resp.header.unwrap().revision;
        }
        for e in resp.events {
            let kv = e.kv.unwrap();
            revs.push(kv.mod_revision);
            keys.insert(kv.key);
        }
    };
    assert_eq!(progress, end);
    assert_eq!(
        revs.len(),
        N,
        "events sent before the progress notification"
    );
    assert_eq!(revs, ((start + 1)..=end).collect::<Vec<_>>());
    assert_eq!(keys.len(), N);
    // And the stream is live again.
    let last = env.put("s/live", "1").await?;
    assert_eq!(w.events(1).await?[0].2, last);
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_revisions_are_fragmented_only_for_watchers_that_ask() -> Result {
    // A 64 KiB limit. One txn (under the limit) overwrites 10 values of
    // 5 KiB at one revision; with prev_kv its events carry 100 KiB.
    const LIMIT: usize = 64 * 1024;
    let mut env = Env::start_with(|c| c.max_request_bytes = LIMIT).await?;
    let value = "x".repeat(5 * 1024);
    for i in 0..10 {
        env.put(&format!("big/{i}"), &value).await?;
    }
    let watch = WatchCreateRequest {
        prev_kv: true,
        ..create("big/", &prefix_end(b"big/"))
    };
    let mut fragmented = env.watch_stream().await?;
    fragmented
        .create(WatchCreateRequest {
            fragment: true,
            ..watch.clone()
        })
        .await?;
    let mut whole = env.watch_stream().await?;
    whole.create(watch).await?;
    let ops: Vec<RequestOp> = (0..10)
        .map(|i| put_op(&format!("big/{i}"), &value))
        .collect();
    let rev = env
        .kv
        .txn(TxnRequest {
            success: ops,
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .unwrap()
        .revision;

    let mut parts = Vec::new();
    loop {
        let resp = fragmented.next().await?;
        let more = resp.fragment;
        parts.push(resp);
        if !more {
            break;
        }
    }
    assert!(parts.len() >= 2, "split into {} parts", parts.len());
    for p in &parts {
        assert!(prost::Message::encoded_len(p) < LIMIT);
    }
    let events: Vec<_> = parts.iter().flat_map(|p| p.events.iter()).collect();
    assert_eq!(events.len(), 10);
    assert!(events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == rev && e.prev_kv.is_some()));

    let resp = whole.next().await?;
    assert!(!resp.fragment);
    assert_eq!(resp.events.len(), 10, "one revision is never split unasked");
    assert!(prost::Message::encoded_len(&resp) > LIMIT);
    env.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------

/// Start a member again on `dir`. The previous incarnation may still be
/// letting go of its database for a moment after `shutdown` returns, so a
/// refusal for the database lock is retried (bounded).
async fn restart(dir: &Path) -> Result<RunningServer> {
    let stopped = Instant::now();
    loop {
        match start_server(config(dir)?).await {
            Ok(s) => return Ok(s),
            Err(e) if e.to_string().contains("already open") && stopped.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_restart() -> Result {
    let dir = tempfile::tempdir()?;
    let server = start_server(config(dir.path())?).await?;
    let member_id = server.node.member_id();
    let mut kv = KvClient::connect(server.client_url()).await?;
    let mut last = 0;
    for i in 0..20 {
        last = kv
            .put(PutRequest {
                key: format!("r/{i:02}").into_bytes(),
                value: i.to_string().into_bytes(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
            .unwrap()
            .revision;
    }
    drop(kv);
    stop(server).await;

    let server = restart(dir.path()).await?;
    assert_eq!(server.node.member_id(), member_id, "identity kept");
    let mut kv = KvClient::connect(server.client_url()).await?;
    let resp = kv.range(prefix("r/")).await?.into_inner();
    assert_eq!(resp.count, 20);
    assert_eq!(resp.kvs[7].value, b"7");
    assert_eq!(resp.header.unwrap().revision, last);
    let next = kv
        .put(PutRequest {
            key: "r/after".into(),
            value: "x".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(next.header.unwrap().revision, last + 1);
    stop(server).await;
    Ok(())
}
