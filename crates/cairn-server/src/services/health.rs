//! Health: the standard gRPC health service and HTTP `GET /health`, both
//! healthy only while this member sees a leader.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::node::Node;
use crate::services::claims::{metrics, ReadCounters as ClaimReads};

pub fn add(routes: Routes, node: Arc<Node>, claim_reads: Arc<ClaimReads>) -> Routes {
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
    let router = routes.add_service(health_service).into_axum_router();
    let metrics_node = node.clone();
    let router = router
        .route(
            "/health",
            axum::routing::get(move || {
                let node = node.clone();
                async move { http_health(&node) }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let node = metrics_node.clone();
                let reads = claim_reads.clone();
                async move {
                    let stats = node.store().claims().all_stats();
                    let mut text = metrics::render(&stats, &reads);
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
                    render_log_positions(&node, &mut text);
                    cairn_raft::metrics::render(&mut text);
                    crate::tls::render_metrics(&mut text);
                    crate::corruption::render_metrics(&mut text);
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        text,
                    )
                }
            }),
        );
    Routes::from(router)
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

fn http_health(
    node: &Node,
) -> (
    http::StatusCode,
    [(http::HeaderName, &'static str); 1],
    String,
) {
    let json = [(http::header::CONTENT_TYPE, "application/json")];
    match unhealthy_reason(node) {
        None => (
            http::StatusCode::OK,
            json,
            r#"{"health":"true","reason":""}"#.into(),
        ),
        Some(reason) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            json,
            format!(r#"{{"health":"false","reason":"{reason}"}}"#),
        ),
    }
}

/// Why this member is not healthy, in etcd's words where etcd has them;
/// `None` if it is.
fn unhealthy_reason(node: &Node) -> Option<&'static str> {
    if node.raft_failure().is_some() {
        // A storage error stopped Raft; its last metrics may still name a
        // leader. (Why is in the member's log and `cairn serve`'s exit.)
        Some("RAFT STOPPED")
    } else if node.removal().is_some() {
        Some("MEMBER REMOVED")
    } else if node.leader_id().is_none() {
        Some("RAFT NO LEADER")
    } else {
        None
    }
}
