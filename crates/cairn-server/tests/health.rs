//! etcd's `GET /health` (alarms, a leader, a quorum read; `exclude=` and
//! `serializable=true`) and the metrics port of `--listen-metrics-urls`,
//! which serves `/health` and `/metrics` and nothing else.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{AlarmRequest, AlarmType};
use support::{wait_until, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ELECTION: Duration = Duration::from_secs(10);

/// `GET path` over HTTP/1.1: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn metrics_addr(c: &Cluster, i: usize) -> SocketAddr {
    c.members[i].server.as_ref().unwrap().metrics_addrs[0]
}

fn with_metrics_port(cfg: &mut cairn_server::ServerConfig) {
    cfg.listen_metrics = vec!["127.0.0.1:0".parse().unwrap()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_serves_health_and_metrics_only() {
    let c = Cluster::start(1, with_metrics_port).await;
    c.wait_leader(ELECTION).await;
    let addr = metrics_addr(&c, 0);
    let (status, body) = get(addr, "/health").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("cairn_watchers "), "{body}");
    // Not the client API: no gateway, no version.
    assert_eq!(get(addr, "/v3/kv/range").await.0, 404);
    assert_eq!(get(addr, "/version").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_makes_a_member_unhealthy_unless_excluded() {
    let c = Cluster::start(1, with_metrics_port).await;
    c.wait_leader(ELECTION).await;
    let addr = metrics_addr(&c, 0);
    let client_addr = c.members[0].server.as_ref().unwrap().client_addr;
    let mut m = MaintenanceClient::connect(format!("http://{client_addr}"))
        .await
        .unwrap();
    m.alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: c.node(0).member_id(),
        alarm: AlarmType::Nospace as i32,
    })
    .await
    .unwrap();
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, 503);
    assert_eq!(body, r#"{"health":"false","reason":"ALARM NOSPACE"}"#);
    // The client port answers the same.
    assert_eq!(get(client_addr, "/health").await.0, 503);
    assert_eq!(get(addr, "/health?exclude=NOSPACE").await.0, 200);
    assert_eq!(get(addr, "/health?exclude=CORRUPT").await.0, 503);
    assert_eq!(get(addr, "/health?serializable=true").await.0, 503);
    assert_eq!(
        get(addr, "/health?exclude=NOSPACE&serializable=true")
            .await
            .0,
        200
    );
}

/// A member cut off from a quorum is unhealthy by default and healthy for
/// `serializable=true`, which asks only whether it serves its own reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_without_quorum_is_healthy_only_serializably() {
    let mut c = Cluster::start(3, with_metrics_port).await;
    let leader = c.wait_leader(ELECTION).await;
    let alone = (leader + 1) % 3;
    let addr = metrics_addr(&c, alone);
    assert_eq!(get(addr, "/health").await.0, 200);
    for i in (0..3).filter(|i| *i != alone) {
        c.stop_member(i).await;
    }
    wait_until(
        "the lone member is unhealthy",
        ELECTION * 2,
        || async move {
            let (status, body) = get(addr, "/health").await;
            status == 503 && (body.contains("RAFT NO LEADER") || body.contains("QGET ERROR"))
        },
    )
    .await;
    let (status, body) = get(addr, "/health?serializable=true").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
}

/// etcd's and the process collector's metric names, for alerts and
/// dashboards written for etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_etcds_names() {
    let c = Cluster::start(1, with_metrics_port).await;
    c.wait_leader(ELECTION).await;
    support::put(c.node(0), "k", "v").await;
    let (status, body) = get(metrics_addr(&c, 0), "/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert_eq!(value("etcd_server_is_leader"), 1.0);
    assert!(value("etcd_server_leader_changes_seen_total") >= 1.0);
    assert!(value("etcd_server_proposals_applied_total") >= 2.0);
    assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(value("etcd_mvcc_db_total_size_in_use_in_bytes") > 0.0);
    assert_eq!(
        value("etcd_server_quota_backend_bytes"),
        c.node(0).config.quota_backend_bytes as f64
    );
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_cpu_seconds_total") > 0.0);
}
