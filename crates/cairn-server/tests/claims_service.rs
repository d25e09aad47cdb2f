//! The `cairn.v1.Claims` service of one real member over gRPC: every status
//! a client can see, session end releasing leases, precise refusals that
//! change nothing, and the `/metrics` exposition.

use std::path::Path;
use std::time::Duration;

use cairn_proto::cairn::v1 as pb;
use cairn_proto::cairn::v1::claims_client::ClaimsClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use cairn_server::serve::{start, RunningServer};
use cairn_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

type Result<T = ()> = anyhow::Result<T>;

const WAIT: Duration = Duration::from_secs(10);
const GRANTED: i32 = pb::OffloadStatus::Granted as i32;
const ALREADY_STORED: i32 = pb::OffloadStatus::AlreadyStored as i32;
const LEASED: i32 = pb::OffloadStatus::Leased as i32;
const STORED: i32 = pb::RegisterStatus::Stored as i32;
const REG_ALREADY: i32 = pb::RegisterStatus::AlreadyStored as i32;
const LEASED_BY_OTHER: i32 = pb::RegisterStatus::LeasedByOther as i32;

fn config(dir: &Path) -> Result<ServerConfig> {
    Ok(ServerConfig {
        data_dir: dir.to_path_buf(),
        listen_client: "127.0.0.1:0".parse()?,
        listen_peer: "127.0.0.1:0".parse()?,
        ..Default::default()
    })
}

async fn start_server(dir: &Path) -> Result<RunningServer> {
    let server = start(config(dir)?).await?;
    let deadline = Instant::now() + WAIT;
    while server.node.leader_id().is_none() {
        anyhow::ensure!(Instant::now() < deadline, "no leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(server)
}

fn keys(ks: &[u64]) -> Option<pb::KeyList> {
    Some(pb::KeyList {
        u64s: ks.to_vec(),
        ..Default::default()
    })
}

fn entry(k: u64, value: &str) -> pb::RegisterEntry {
    pb::RegisterEntry {
        key: Some(pb::Key {
            kind: Some(pb::key::Kind::U64(k)),
        }),
        value: value.into(),
        ..Default::default()
    }
}

async fn session(lease: &mut LeaseClient<Channel>) -> Result<i64> {
    Ok(lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await?
        .into_inner()
        .id)
}

/// A claims and a lease client on one connection to `server`.
async fn clients(server: &RunningServer) -> Result<(ClaimsClient<Channel>, LeaseClient<Channel>)> {
    let channel = Channel::from_shared(server.client_url())?.connect().await?;
    Ok((
        ClaimsClient::new(channel.clone()),
        LeaseClient::new(channel),
    ))
}

/// The stats of the one namespace `blocks`.
async fn stats(c: &mut ClaimsClient<Channel>) -> Result<pb::StatsResponse> {
    let request = pb::StatsRequest {
        namespace: "blocks".into(),
    };
    Ok(c.stats(request).await?.into_inner())
}

async fn can_offload(c: &mut ClaimsClient<Channel>, session: i64, ks: &[u64]) -> Result<Vec<i32>> {
    Ok(c.can_offload(pb::CanOffloadRequest {
        namespace: "blocks".into(),
        session_id: session,
        keys: keys(ks),
    })
    .await?
    .into_inner()
    .statuses)
}

async fn register(c: &mut ClaimsClient<Channel>, session: i64, ks: &[u64]) -> Result<Vec<i32>> {
    Ok(c.register(pb::ClaimsRegisterRequest {
        namespace: "blocks".into(),
        session_id: session,
        entries: ks.iter().map(|k| entry(*k, &format!("v{k}"))).collect(),
    })
    .await?
    .into_inner()
    .statuses)
}

fn matched(resp: pb::MatchResponse) -> Vec<(u32, Vec<u8>)> {
    resp.matches
        .into_iter()
        .map(|m| (m.index, m.value))
        .collect()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out)).await??;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_over_grpc() -> Result {
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let (mut c, mut lease) = clients(&server).await?;
    let (a, b) = (session(&mut lease).await?, session(&mut lease).await?);

    // Unknown namespace: NOT_FOUND, before and after nothing exists.
    let err = can_offload(&mut c, a, &[1]).await.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let created = c
        .create_namespace(pb::CreateNamespaceRequest {
            namespace: "blocks".into(),
            config: Some(pb::NamespaceConfig {
                capacity: 100,
                lease_ttl_ms: 30_000,
                max_value_bytes: 64,
                max_metadata_bytes: 64,
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    assert!(!created.existed);

    // Granted / Leased / AlreadyStored, in request order.
    assert_eq!(can_offload(&mut c, a, &[1, 2, 3]).await?, [GRANTED; 3]);
    assert_eq!(can_offload(&mut c, b, &[2, 4]).await?, [LEASED, GRANTED]);
    assert_eq!(
        can_offload(&mut c, a, &[1]).await?,
        [GRANTED],
        "re-ask refreshes"
    );
    assert_eq!(register(&mut c, a, &[1, 2]).await?, [STORED, STORED]);
    assert_eq!(can_offload(&mut c, b, &[1, 2]).await?, [ALREADY_STORED; 2]);
    assert_eq!(register(&mut c, b, &[2]).await?, [REG_ALREADY]);
    // A non-holder registering a key another live session leased is refused.
    assert_eq!(register(&mut c, a, &[4]).await?, [LEASED_BY_OTHER]);

    // match_prefix stops at the first miss; match_all skips misses.
    let prefix = c
        .match_prefix(pb::MatchRequest {
            namespace: "blocks".into(),
            keys: keys(&[1, 2, 3, 1]),
        })
        .await?
        .into_inner();
    assert_eq!(matched(prefix), [(0, b"v1".to_vec()), (1, b"v2".to_vec())]);
    let all = c
        .match_all(pb::MatchRequest {
            namespace: "blocks".into(),
            keys: keys(&[3, 2, 9, 1]),
        })
        .await?
        .into_inner();
    assert_eq!(matched(all), [(1, b"v2".to_vec()), (3, b"v1".to_vec())]);

    // Bad input changes nothing.
    let before = stats(&mut c).await?;
    let status = c
        .can_offload(pb::CanOffloadRequest {
            namespace: "blocks".into(),
            session_id: a,
            keys: keys(&[]),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let after = stats(&mut c).await?;
    assert_eq!(before.namespaces, after.namespaces);
    let blocks = &after.namespaces[0];
    assert_eq!(blocks.entries, 2);
    assert_eq!(blocks.active_leases, 2, "a holds 3, b holds 4");

    // Ending b's session releases its lease on 4 in the same apply.
    lease.lease_revoke(LeaseRevokeRequest { id: b }).await?;
    assert_eq!(can_offload(&mut c, a, &[4]).await?, [GRANTED]);

    // remove / touch count what was there.
    let removed = c
        .remove(pb::ClaimsKeysRequest {
            namespace: "blocks".into(),
            keys: keys(&[1, 9]),
        })
        .await?
        .into_inner();
    assert_eq!(removed.removed, 1);
    let touched = c
        .touch(pb::ClaimsKeysRequest {
            namespace: "blocks".into(),
            keys: keys(&[1, 2]),
        })
        .await?
        .into_inner();
    assert_eq!(touched.present, 1);

    // The same counters as Prometheus text on the client port.
    let metrics = http_get(server.client_addr, "/metrics").await?;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("blocks"), "{metrics}");
    // The watch hub's gauges and counter (no watchers here).
    for line in [
        "cairn_watchers 0",
        "cairn_watchers_unsynced 0",
        "cairn_watchers_fell_behind_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in {metrics}"
        );
    }
    // Where the log stands: entries applied, no snapshot or purge yet.
    let gauge = |name: &str| -> i64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(gauge("cairn_raft_applied_index") > 0);
    assert_eq!(gauge("cairn_raft_snapshot_index"), -1);
    assert_eq!(gauge("cairn_raft_purged_index"), -1);
    assert_eq!(gauge("cairn_raft_snapshot_bytes"), 0);
    // And the write path's latency histograms, each with writes in it.
    for histogram in [
        "cairn_server_write_duration_seconds",
        "cairn_disk_wal_fsync_duration_seconds",
        "cairn_apply_duration_seconds",
    ] {
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{histogram}_count ")))
            .unwrap_or_else(|| panic!("no {histogram}_count in {metrics}"));
        assert!(count.parse::<u64>()? > 0, "{histogram}: {count}");
    }
    server.shutdown().await;
    Ok(())
}

/// A backlog of claim leases all end in time: the first tick past their
/// deadline ends every one of them (by count, whatever their number; an
/// expiry bounded per tick, at one tick per 500 ms, would take seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_due_claim_leases_expires_within_one_interval() -> Result {
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let (mut c, mut lease) = clients(&server).await?;
    let a = session(&mut lease).await?;
    let ttl_ms = 1_000;
    c.create_namespace(pb::CreateNamespaceRequest {
        namespace: "blocks".into(),
        config: Some(pb::NamespaceConfig {
            capacity: 1_000_000,
            lease_ttl_ms: ttl_ms,
            ..Default::default()
        }),
    })
    .await?;
    for request in 0..10u64 {
        let ks: Vec<u64> = (request * 10_000..(request + 1) * 10_000).collect();
        let statuses = can_offload(&mut c, a, &ks).await?;
        assert!(statuses.iter().all(|s| *s == GRANTED));
    }
    let active = |stats: pb::StatsResponse| {
        let ns = &stats.namespaces[0];
        (ns.active_leases, ns.expired)
    };
    let granted_at = Instant::now();
    assert_eq!(active(stats(&mut c).await?).0, 100_000);
    let deadline = granted_at + Duration::from_millis(ttl_ms) + Duration::from_millis(2_500);
    loop {
        let (left, expired) = active(stats(&mut c).await?);
        if left == 0 {
            assert_eq!(expired, 100_000);
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} leases still live {:?} after the grants (TTL {ttl_ms} ms)",
            granted_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
    Ok(())
}
