//! etcd's "require leader" (`hasleader: true` metadata, clientv3's
//! `WithRequireLeader`, which Kubernetes' watches use): on a member cut off
//! from the others, such streams end with "etcdserver: no leader" and such
//! calls are refused at once, while requests without it go on as before.

mod support;

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::*;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3electionpb::LeaderRequest;
use futures::StreamExt;
use support::Cluster;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const ELECTION: Duration = Duration::from_secs(10);

fn requiring_leader<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("hasleader", "true".parse().unwrap());
    r
}

fn watch_request(key: &str) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

/// `stream` ends, within a few election timeouts, with the no-leader
/// error.
async fn assert_ends_without_leader<T: std::fmt::Debug>(
    what: &str,
    stream: &mut tonic::Streaming<T>,
) {
    match tokio::time::timeout(ELECTION, stream.next()).await {
        Ok(Some(Err(status))) if is_no_leader(&status) => {}
        other => panic!("{what}: {other:?}"),
    }
}

fn is_no_leader(s: &Status) -> bool {
    s.code() == Code::Unavailable && s.message() == "etcdserver: no leader"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_requiring_a_leader_end_on_a_follower_left_alone() {
    left_alone(false).await;
}

/// The leader cut off from both followers keeps its office in openraft
/// (no higher term reaches it), but hears from no quorum: for these
/// requests it has no leader, as etcd's leader steps down (CheckQuorum).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_requiring_a_leader_end_on_a_leader_left_alone() {
    left_alone(true).await;
}

/// Streams and calls through the member left running when the other two
/// stop: the leader when `leader_alone`, else a follower.
async fn left_alone(leader_alone: bool) {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.wait_leader(ELECTION).await;
    let alone = if leader_alone {
        leader
    } else {
        (leader + 1) % 3
    };
    let addr = c.members[alone].server.as_ref().unwrap().client_addr;
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A watch requiring a leader, one not requiring it, a keep-alive
    // stream and an election observer requiring it: all through `alone`.
    let mut watch = WatchClient::new(ch.clone());
    let mut required = watch
        .watch(requiring_leader(futures::stream::iter([watch_request(
            "k",
        )])))
        .await
        .unwrap()
        .into_inner();
    let mut plain = watch
        .watch(Request::new(futures::stream::iter([watch_request("k")])))
        .await
        .unwrap()
        .into_inner();
    for s in [&mut required, &mut plain] {
        assert!(s.next().await.unwrap().unwrap().created);
    }
    let mut lease = LeaseClient::new(ch.clone());
    let id = lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    let (ka_tx, ka_rx) = tokio::sync::mpsc::channel(4);
    ka_tx.send(LeaseKeepAliveRequest { id }).await.unwrap();
    let mut keep_alive = lease
        .lease_keep_alive(requiring_leader(
            tokio_stream::wrappers::ReceiverStream::new(ka_rx),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keep_alive.next().await.unwrap().unwrap().id, id);
    let mut observe = ElectionClient::new(ch.clone())
        .observe(requiring_leader(LeaderRequest {
            name: b"e".to_vec(),
        }))
        .await
        .unwrap()
        .into_inner();

    for i in (0..3).filter(|i| *i != alone) {
        c.stop_member(i).await;
    }
    assert_ends_without_leader("the watch", &mut required).await;
    assert_ends_without_leader("the keep-alive", &mut keep_alive).await;
    assert_ends_without_leader("the observer", &mut observe).await;
    // The watch that did not ask for a leader stays open.
    let still = tokio::time::timeout(Duration::from_millis(500), plain.next()).await;
    assert!(still.is_err(), "the plain watch ended: {still:?}");

    // Calls requiring a leader are refused at once; others are served.
    let mut kv = KvClient::new(ch.clone());
    let get = RangeRequest {
        key: b"k".to_vec(),
        serializable: true,
        ..Default::default()
    };
    let refused = kv.range(requiring_leader(get.clone())).await.unwrap_err();
    assert!(is_no_leader(&refused), "{refused:?}");
    kv.range(Request::new(get)).await.unwrap();
    let mut refused = watch
        .watch(requiring_leader(futures::stream::iter([watch_request(
            "k",
        )])))
        .await;
    let refused = match &mut refused {
        Err(status) => status.clone(),
        Ok(stream) => stream.get_mut().next().await.unwrap().unwrap_err(),
    };
    assert!(is_no_leader(&refused), "{refused:?}");

    // The gRPC health service says so too.
    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    support::wait_until("gRPC health NOT_SERVING", ELECTION, || {
        let mut health = health.clone();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok_and(|r| {
                    r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
                })
        }
    })
    .await;

    // The JSON gateway, with grpc-gateway's form of the metadata.
    let body = r#"{"key": "aw==", "serializable": true}"#;
    let (status, answer) = post(addr, "/v3/kv/range", body, Some("true")).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.contains("etcdserver: no leader") && answer.contains("\"code\":14"),
        "{answer}"
    );
    assert_eq!(post(addr, "/v3/kv/range", body, None).await.0, 200);
}

/// `POST path` with a JSON body over HTTP/1.1, with
/// `Grpc-Metadata-Hasleader` when given: the status and the body.
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    has_leader: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra = has_leader.map_or(String::new(), |v| {
        format!("Grpc-Metadata-Hasleader: {v}\r\n")
    });
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(ELECTION, s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text)
}
