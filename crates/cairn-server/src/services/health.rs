//! Health: the standard gRPC health service and HTTP `GET /health`, both
//! healthy only while this member sees a leader.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use tonic::service::Routes;
use tonic_health::ServingStatus;

use cairn_store::AlarmKind;

use crate::node::Node;
use crate::services::claims::{metrics, ReadCounters as ClaimReads};

pub fn add(routes: Routes, node: Arc<Node>) -> Routes {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let weak = Arc::downgrade(&node);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let Some(node) = weak.upgrade() else { return };
            let status = match unhealthy_reason(&node) {
                None => ServingStatus::Serving,
                Some(_) => ServingStatus::NotServing,
            };
            drop(node);
            if last != Some(status) {
                reporter.set_service_status("", status).await;
                last = Some(status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    routes.add_service(health_service)
}

/// HTTP `GET /health` and `GET /metrics`: on the client port, and alone on
/// the metrics port (etcd's `--listen-metrics-urls`, where orchestrators
/// probe a member without reaching its client API).
pub fn http_router(node: Arc<Node>, claim_reads: Arc<ClaimReads>) -> axum::Router {
    let metrics_node = node.clone();
    axum::Router::new()
        .route(
            "/health",
            axum::routing::get(move |query: axum::extract::RawQuery| {
                let node = node.clone();
                async move { http_health(&node, &HealthQuery::parse(query.0.as_deref())).await }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let node = metrics_node.clone();
                let reads = claim_reads.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        render_metrics(&node, &reads),
                    )
                }
            }),
        )
}

/// Every metric this member exports, in Prometheus' text format.
fn render_metrics(node: &Node, reads: &ClaimReads) -> String {
    let stats = node.store().claims().all_stats();
    let mut text = metrics::render(&stats, reads);
    crate::node::WRITE_DURATION.render(&mut text);
    text.push_str(&format!(
        "# HELP cairn_forward_streams_opened_total Streams this member opened to forward requests to a leader.\n\
         # TYPE cairn_forward_streams_opened_total counter\n\
         cairn_forward_streams_opened_total {}\n\
         # HELP cairn_forward_calls_total Requests this member forwarded one call each, to a leader without forward streams.\n\
         # TYPE cairn_forward_calls_total counter\n\
         cairn_forward_calls_total {}\n\
         # HELP cairn_claims_spare_arrays_taken_total Claims table arrays made ahead of a growth and taken by it (process-wide).\n\
         # TYPE cairn_claims_spare_arrays_taken_total counter\n\
         cairn_claims_spare_arrays_taken_total {}\n",
        node.router.forward_streams_opened(),
        node.router.forward_calls(),
        cairn_store::claims::spare_buckets::spares_taken()
    ));
    let watch = node.hub.stats();
    text.push_str(&format!(
        "# HELP cairn_watchers Watchers on this member (client watch streams and registry waits).\n\
         # TYPE cairn_watchers gauge\n\
         cairn_watchers {}\n\
         # HELP cairn_watchers_unsynced Watchers catching up from history (their stream fell behind, or they missed live events).\n\
         # TYPE cairn_watchers_unsynced gauge\n\
         cairn_watchers_unsynced {}\n\
         # HELP cairn_watchers_fell_behind_total Times a watcher's stream was found full and it fell back to catching up.\n\
         # TYPE cairn_watchers_fell_behind_total counter\n\
         cairn_watchers_fell_behind_total {}\n",
        watch.watchers, watch.unsynced, watch.fell_behind_total
    ));
    render_log_positions(node, &mut text);
    cairn_raft::metrics::render(&mut text);
    crate::tls::render_metrics(&mut text);
    crate::corruption::render_metrics(&mut text);
    super::etcd_metrics::render_etcd(node, &mut text);
    super::etcd_metrics::render_process(&mut text);
    text
}

/// Where this member's log stands: what it applied, its last snapshot and
/// what it purged (log indexes; -1 for none), and the snapshot's size.
fn render_log_positions(node: &Node, out: &mut String) {
    let (applied, snapshot, purged) = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow_watched();
        let index = |l: Option<&cairn_raft::types::LogId>| l.map_or(-1, |l| l.index as i128);
        (
            index(m.last_applied.as_ref()),
            index(m.snapshot.as_ref()),
            index(m.purged.as_ref()),
        )
    };
    let gauges = [
        (
            "cairn_raft_applied_index",
            "Index of the last log entry this member applied.",
            applied,
        ),
        (
            "cairn_raft_snapshot_index",
            "Index of the last log entry in this member's current snapshot.",
            snapshot,
        ),
        (
            "cairn_raft_purged_index",
            "Index of the last log entry this member purged.",
            purged,
        ),
        (
            "cairn_raft_snapshot_bytes",
            "Data bytes of the last snapshot this member wrote out (received, or to send one).",
            node.snapshots.written_bytes() as i128,
        ),
    ];
    for (name, help, value) in gauges {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
}

/// etcd's `/health` query: `exclude=NOSPACE` (repeatable) leaves an
/// alarm out of the verdict, `serializable=true` asks only whether this
/// member serves its own reads (no leader needed, no quorum read).
#[derive(Debug, Default, PartialEq, Eq)]
struct HealthQuery {
    excluded: Vec<AlarmKind>,
    serializable: bool,
}

impl HealthQuery {
    fn parse(query: Option<&str>) -> HealthQuery {
        let mut q = HealthQuery::default();
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("exclude", alarm)) => {
                    if let Some(kind) = alarm_kind(alarm) {
                        q.excluded.push(kind);
                    }
                }
                Some(("serializable", value)) => q.serializable = value == "true",
                _ => {}
            }
        }
        q
    }
}

fn alarm_kind(name: &str) -> Option<AlarmKind> {
    match name {
        "NOSPACE" => Some(AlarmKind::NoSpace),
        "CORRUPT" => Some(AlarmKind::Corrupt),
        _ => None,
    }
}

fn alarm_name(kind: AlarmKind) -> &'static str {
    match kind {
        AlarmKind::NoSpace => "NOSPACE",
        AlarmKind::Corrupt => "CORRUPT",
    }
}

/// etcd's `/health`, checked in etcd's order: raised alarms, a leader,
/// then a quorum read (a read barrier through the leader) answered within
/// two election timeouts. `serializable=true` skips the last two.
async fn http_health(
    node: &Node,
    query: &HealthQuery,
) -> (
    http::StatusCode,
    [(http::HeaderName, &'static str); 1],
    String,
) {
    let json = [(http::header::CONTENT_TYPE, "application/json")];
    let verdict = async {
        if let Some(reason) = stopped_reason(node) {
            return Err(reason.to_string());
        }
        let alarms: Vec<AlarmKind> = node.store().alarms().iter().map(|(_, k)| *k).collect();
        if let Some(kind) = alarms.into_iter().find(|k| !query.excluded.contains(k)) {
            return Err(format!("ALARM {}", alarm_name(kind)));
        }
        if query.serializable {
            return Ok(());
        }
        if node.leader_id().is_none() {
            return Err("RAFT NO LEADER".to_string());
        }
        let within = Duration::from_millis(node.config.election_timeout_ms.saturating_mul(2));
        match tokio::time::timeout(within, node.read_barrier()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("QGET ERROR:{e}")),
            Err(_) => Err(format!("QGET ERROR:no quorum read within {within:?}")),
        }
    };
    match verdict.await {
        Ok(()) => (
            http::StatusCode::OK,
            json,
            r#"{"health":"true","reason":""}"#.into(),
        ),
        Err(reason) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            json,
            serde_json::json!({"health": "false", "reason": reason}).to_string(),
        ),
    }
}

/// Why this member is not healthy, in etcd's words where etcd has them;
/// `None` if it is. What the gRPC health service reports: a leader that
/// hears from no quorum knows none ([`Node::knows_leader`]).
fn unhealthy_reason(node: &Node) -> Option<&'static str> {
    stopped_reason(node).or_else(|| (!node.knows_leader()).then_some("RAFT NO LEADER"))
}

/// Why this member serves nothing at all, if it does not.
fn stopped_reason(node: &Node) -> Option<&'static str> {
    if node.raft_failure().is_some() {
        // A storage error stopped Raft; its last metrics may still name a
        // leader. (Why is in the member's log and `cairn serve`'s exit.)
        Some("RAFT STOPPED")
    } else if node.removal().is_some() {
        Some("MEMBER REMOVED")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_query_reads_as_etcds() {
        assert_eq!(HealthQuery::parse(None), HealthQuery::default());
        assert_eq!(
            HealthQuery::parse(Some("exclude=NOSPACE&serializable=true")),
            HealthQuery {
                excluded: vec![AlarmKind::NoSpace],
                serializable: true
            }
        );
        assert_eq!(
            HealthQuery::parse(Some(
                "exclude=CORRUPT&exclude=NOSPACE&exclude=BOGUS&x&serializable=1"
            )),
            HealthQuery {
                excluded: vec![AlarmKind::Corrupt, AlarmKind::NoSpace],
                serializable: false
            }
        );
    }
}
