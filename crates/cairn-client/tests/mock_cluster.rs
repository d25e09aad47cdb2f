//! The client's failover, retry, watch, keep-alive and snapshot behaviour
//! against scripted in-process gRPC servers (no real Cairn needed).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::proto::etcdserverpb as pb;
use cairn_client::proto::mvccpb;
use cairn_client::tonic::{self, Request, Response, Status};
use cairn_client::{
    Client, ClientError, ClientOptions, GetOptions, KeepAliveState, PutOptions, RetryPolicy,
    SnapshotVerifier, WatchOptions, LEADER_METADATA_KEY,
};
use futures::StreamExt;
use pb::kv_server::{Kv, KvServer};
use pb::lease_server::{Lease, LeaseServer};
use pb::maintenance_server::{Maintenance, MaintenanceServer};
use pb::watch_server::{Watch, WatchServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

// ---------------------------------------------------------------------------
// A scripted member.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct State {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    revision: i64,
    range_calls: usize,
    put_calls: usize,
    /// Errors returned (in order) by the next calls before serving.
    script: VecDeque<Status>,
    /// When set, every KV call is refused with a redirect here.
    redirect_to: Option<String>,
    /// Delay before answering a KV call.
    delay: Duration,
    /// Start revisions of the watch creates received.
    watch_creates: Vec<i64>,
    /// Per watch session: events to send, then whether to break the stream.
    watch_plans: VecDeque<WatchPlan>,
    /// Keep-alive answers: lease IDs that no longer exist.
    dead_leases: Vec<i64>,
    keep_alives: usize,
    /// Chunks of the snapshot stream.
    snapshot_chunks: Vec<Vec<u8>>,
}

#[derive(Clone)]
struct WatchPlan {
    /// Mod revisions of put events to send after the created response.
    events: Vec<i64>,
    /// Then: break the stream with this error (None: keep it open and
    /// answer a cancel).
    then_fail: Option<Status>,
    /// Answer the create with created + canceled (compacted).
    compacted: Option<i64>,
}

#[derive(Clone, Default)]
struct Mock(Arc<Mutex<State>>);

impl Mock {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }

    async fn before_kv(&self) -> Result<(), Status> {
        let (delay, redirect, scripted) =
            self.with(|s| (s.delay, s.redirect_to.clone(), s.script.pop_front()));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(url) = redirect {
            let mut st = Status::unavailable("etcdserver: not leader");
            st.metadata_mut()
                .insert(LEADER_METADATA_KEY, url.parse().unwrap());
            return Err(st);
        }
        match scripted {
            Some(st) => Err(st),
            None => Ok(()),
        }
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: self.with(|s| s.revision),
            raft_term: 3,
        })
    }
}

#[tonic::async_trait]
impl Kv for Mock {
    async fn range(
        &self,
        r: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.with(|s| s.range_calls += 1);
        self.before_kv().await?;
        let r = r.into_inner();
        let kvs: Vec<mvccpb::KeyValue> = self.with(|s| {
            s.data
                .iter()
                .filter(|(k, _)| {
                    if r.range_end.is_empty() {
                        **k == r.key
                    } else {
                        **k >= r.key && (r.range_end == [0] || **k < r.range_end)
                    }
                })
                .map(|(k, v)| mvccpb::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                    ..Default::default()
                })
                .collect()
        });
        Ok(Response::new(pb::RangeResponse {
            header: self.header(),
            count: kvs.len() as i64,
            kvs,
            more: false,
        }))
    }

    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.with(|s| s.put_calls += 1);
        self.before_kv().await?;
        let r = r.into_inner();
        self.with(|s| {
            s.revision += 1;
            s.data.insert(r.key, r.value);
        });
        Ok(Response::new(pb::PutResponse {
            header: self.header(),
            prev_kv: None,
        }))
    }

    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
}

type Out<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Watch for Mock {
    type WatchStream = Out<pb::WatchResponse>;

    async fn watch(
        &self,
        r: Request<tonic::Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mock = self.clone();
        tokio::spawn(async move {
            let Ok(Some(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
            })) = inbound.message().await
            else {
                return;
            };
            let plan = mock.with(|s| {
                s.watch_creates.push(create.start_revision);
                s.watch_plans.pop_front()
            });
            let Some(plan) = plan else { return };
            let header = Some(pb::ResponseHeader {
                revision: 10,
                ..Default::default()
            });
            let id = 7;
            if let Some(compact_revision) = plan.compacted {
                let _ = tx
                    .send(Ok(pb::WatchResponse {
                        header,
                        watch_id: id,
                        created: true,
                        canceled: true,
                        compact_revision,
                        cancel_reason: "mvcc: required revision has been compacted".into(),
                        ..Default::default()
                    }))
                    .await;
                return;
            }
            let _ = tx
                .send(Ok(pb::WatchResponse {
                    header,
                    watch_id: id,
                    created: true,
                    ..Default::default()
                }))
                .await;
            for rev in plan.events {
                let event = mvccpb::Event {
                    r#type: mvccpb::event::EventType::Put as i32,
                    kv: Some(mvccpb::KeyValue {
                        key: create.key.clone(),
                        value: format!("v{rev}").into_bytes(),
                        mod_revision: rev,
                        ..Default::default()
                    }),
                    prev_kv: None,
                };
                let _ = tx
                    .send(Ok(pb::WatchResponse {
                        header: Some(pb::ResponseHeader {
                            revision: rev,
                            ..Default::default()
                        }),
                        watch_id: id,
                        events: vec![event],
                        ..Default::default()
                    }))
                    .await;
            }
            if let Some(err) = plan.then_fail {
                let _ = tx.send(Err(err)).await;
                return;
            }
            while let Ok(Some(req)) = inbound.message().await {
                if let Some(pb::watch_request::RequestUnion::CancelRequest(c)) = req.request_union {
                    let _ = tx
                        .send(Ok(pb::WatchResponse {
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        }))
                        .await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Lease for Mock {
    type LeaseKeepAliveStream = Out<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        r: Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mock = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let dead = mock.with(|s| {
                    s.keep_alives += 1;
                    s.dead_leases.contains(&req.id)
                });
                let ttl = if dead { 0 } else { 1 };
                if tx
                    .send(Ok(pb::LeaseKeepAliveResponse {
                        header: None,
                        id: req.id,
                        ttl,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_grant(
        &self,
        _: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn lease_revoke(
        &self,
        _: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn lease_time_to_live(
        &self,
        _: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
}

#[tonic::async_trait]
impl Maintenance for Mock {
    type SnapshotStream = Out<pb::SnapshotResponse>;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let chunks = self.with(|s| s.snapshot_chunks.clone());
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut remaining: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            for c in chunks {
                remaining -= c.len() as u64;
                let m = pb::SnapshotResponse {
                    header: None,
                    remaining_bytes: remaining,
                    blob: c,
                    version: String::new(),
                };
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(pb::StatusResponse {
            header: self.header(),
            version: "mock".into(),
            leader: 2,
            ..Default::default()
        }))
    }

    async fn alarm(
        &self,
        _: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn hash_kv(
        &self,
        _: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn move_leader(
        &self,
        _: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn downgrade(
        &self,
        _: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }
}

/// Serve a mock on a free port until the test ends.
async fn serve(mock: Mock) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(KvServer::new(mock.clone()))
            .add_service(WatchServer::new(mock.clone()))
            .add_service(LeaseServer::new(mock.clone()))
            .add_service(MaintenanceServer::new(mock))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

/// An address nothing listens on.
async fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        retry: RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        },
        ..ClientOptions::default()
    }
}

async fn client(endpoints: Vec<String>) -> Client {
    Client::connect(endpoints, fast_options()).await.unwrap()
}

// ---------------------------------------------------------------------------
// Unary calls.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reads_fail_over_dead_endpoints_and_follow_leader_redirects() {
    let leader = Mock::default();
    leader.with(|s| {
        s.data.insert(b"k".to_vec(), b"v".to_vec());
    });
    let leader_url = serve(leader.clone()).await;
    let follower = Mock::default();
    follower.with(|s| s.redirect_to = Some(leader_url.clone()));
    let follower_url = serve(follower.clone()).await;

    let c = client(vec![dead_endpoint().await, follower_url]).await;
    let r = c.get("k", GetOptions::default()).await.unwrap();
    assert_eq!(r.kvs[0].value, b"v");
    assert_eq!(r.header_revision, 0);
    assert_eq!(follower.with(|s| s.range_calls), 1);
    assert_eq!(leader.with(|s| s.range_calls), 1);
    // The redirect target joined the list and is now preferred.
    assert_eq!(c.current_endpoint(), leader_url);
    assert_eq!(c.endpoints().len(), 3);
}

#[tokio::test]
async fn writes_are_retried_when_not_delivered() {
    let m = Mock::default();
    m.with(|s| {
        s.script
            .push_back(Status::unavailable("etcdserver: no leader"))
    });
    let url = serve(m.clone()).await;
    let c = client(vec![dead_endpoint().await, url]).await;
    c.put("a", "1", PutOptions::default()).await.unwrap();
    assert_eq!(m.with(|s| s.put_calls), 2);
    assert_eq!(
        m.with(|s| s.data.get(&b"a"[..]).cloned()),
        Some(b"1".to_vec())
    );
}

#[tokio::test]
async fn writes_with_unknown_outcome_are_not_retried() {
    for msg in [
        "etcdserver: leader changed",
        "etcdserver: request timed out",
    ] {
        let m = Mock::default();
        m.with(|s| s.script.push_back(Status::unavailable(msg)));
        let c = client(vec![serve(m.clone()).await]).await;
        let err = c.put("a", "1", PutOptions::default()).await.unwrap_err();
        assert!(err.is_outcome_unknown(), "{err}");
        assert!(err.to_string().contains(msg), "{err}");
        assert_eq!(m.with(|s| s.put_calls), 1);
    }
}

#[tokio::test]
async fn reads_are_retried_on_unavailable() {
    let m = Mock::default();
    m.with(|s| {
        s.script
            .push_back(Status::unavailable("etcdserver: leader changed"));
        s.script
            .push_back(Status::unavailable("etcdserver: request timed out"));
    });
    let c = client(vec![serve(m.clone()).await]).await;
    c.get("x", GetOptions::default()).await.unwrap();
    assert_eq!(m.with(|s| s.range_calls), 3);
}

#[tokio::test]
async fn definite_errors_are_returned_without_retry() {
    let m = Mock::default();
    m.with(|s| {
        s.script
            .push_back(Status::invalid_argument("etcdserver: key is not provided"))
    });
    let c = client(vec![serve(m.clone()).await]).await;
    let err = c.put("", "1", PutOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    assert_eq!(err.to_string(), "etcdserver: key is not provided");
    assert_eq!(m.with(|s| s.put_calls), 1);
}

#[tokio::test]
async fn exhausted_retries_report_unavailable() {
    let c = client(vec![dead_endpoint().await, dead_endpoint().await]).await;
    match c.put("a", "1", PutOptions::default()).await {
        Err(ClientError::Unavailable { attempts, .. }) => assert_eq!(attempts, 5),
        other => panic!("{other:?}"),
    }
    match c.get("a", GetOptions::default()).await {
        Err(ClientError::Unavailable { attempts, .. }) => assert_eq!(attempts, 5),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn slow_answers_time_out() {
    let m = Mock::default();
    m.with(|s| s.delay = Duration::from_secs(5));
    let url = serve(m.clone()).await;
    let c = Client::connect(
        vec![url],
        ClientOptions {
            request_timeout: Duration::from_millis(300),
            ..fast_options()
        },
    )
    .await
    .unwrap();
    let err = c.put("a", "1", PutOptions::default()).await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err}");
    let err = c.get("a", GetOptions::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout { .. } | ClientError::Unavailable { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn status_of_each_endpoint() {
    let url = serve(Mock::default()).await;
    let dead = dead_endpoint().await;
    let c = client(vec![url.clone(), dead.clone()]).await;
    let all = c.status_all().await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, url);
    assert!(all[0].1.as_ref().unwrap().is_leader());
    assert!(matches!(all[1].1, Err(ClientError::Unavailable { .. })));
}

// ---------------------------------------------------------------------------
// Watch.
// ---------------------------------------------------------------------------

fn plan(events: Vec<i64>, then_fail: Option<Status>) -> WatchPlan {
    WatchPlan {
        events,
        then_fail,
        compacted: None,
    }
}

#[tokio::test]
async fn watches_resume_after_the_stream_breaks() {
    let m = Mock::default();
    m.with(|s| {
        s.watch_plans.push_back(plan(
            vec![11],
            Some(Status::unavailable("member going away")),
        ));
        s.watch_plans.push_back(plan(vec![12], None));
    });
    let c = client(vec![serve(m.clone()).await]).await;
    let mut w = c.watch("k", WatchOptions::default()).await.unwrap();
    assert_eq!(w.watch_id(), 7);
    let r = w.next().await.unwrap().unwrap();
    assert_eq!(r.events[0].kv.mod_revision, 11);
    assert_eq!(r.events[0].kv.value, b"v11");
    let r = w.next().await.unwrap().unwrap();
    assert_eq!(r.events[0].kv.mod_revision, 12);
    // Resumed from the first undelivered revision.
    assert_eq!(m.with(|s| s.watch_creates.clone()), vec![0, 12]);
    tokio::time::timeout(Duration::from_secs(2), w.cancel())
        .await
        .unwrap()
        .unwrap();
    assert!(w.next().await.is_none());
}

#[tokio::test]
async fn compacted_watches_end_with_an_error() {
    let m = Mock::default();
    m.with(|s| {
        s.watch_plans.push_back(WatchPlan {
            events: vec![],
            then_fail: None,
            compacted: Some(5),
        })
    });
    let c = client(vec![serve(m).await]).await;
    let err = c
        .watch(
            "k",
            WatchOptions {
                start_revision: 2,
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap();
    match err {
        ClientError::WatchCanceled {
            compact_revision, ..
        } => assert_eq!(compact_revision, 5),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Leases.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn keep_alive_once_and_in_the_background() {
    let m = Mock::default();
    m.with(|s| s.dead_leases.push(404));
    let c = client(vec![serve(m.clone()).await]).await;
    assert_eq!(c.keep_alive_once(1).await.unwrap().ttl, 1);
    assert!(matches!(
        c.keep_alive_once(404).await,
        Err(ClientError::LeaseNotFound { id: 404 })
    ));
    assert!(matches!(
        c.lease_keep_alive(404).await.err().unwrap(),
        ClientError::LeaseNotFound { .. }
    ));

    let mut ka = c.lease_keep_alive(9).await.unwrap();
    assert_eq!(ka.ttl(), Some(1));
    // TTL 1s: renewed every ~333ms.
    let next = tokio::time::timeout(Duration::from_secs(2), ka.changed())
        .await
        .unwrap();
    assert_eq!(next, Some(KeepAliveState::Alive { ttl: 1 }));
    // The server forgets the lease: the keeper reports it expired.
    m.with(|s| s.dead_leases.push(9));
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ka.changed().await {
                Some(KeepAliveState::Alive { .. }) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end, Some(KeepAliveState::Expired));
    assert!(m.with(|s| s.keep_alives) >= 5);
}

// ---------------------------------------------------------------------------
// Snapshot.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn snapshots_stream_and_verify() {
    use sha2::Digest;
    let mut data = vec![42u8; 700];
    data.resize(1024, 0);
    let sum = sha2::Sha256::digest(&data);
    data.extend_from_slice(&sum);
    let m = Mock::default();
    m.with(|s| s.snapshot_chunks = data.chunks(100).map(<[u8]>::to_vec).collect());
    let c = client(vec![serve(m).await]).await;
    let mut stream = c.snapshot().await.unwrap();
    let mut v = SnapshotVerifier::new();
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        v.update(&chunk);
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, data);
    assert_eq!(v.finish().unwrap().data_len, 1024);
}
