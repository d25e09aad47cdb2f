//! Metrics under the names etcd and Prometheus' process collector export,
//! on `GET /metrics` beside Cairn's own: operators' alerts and dashboards
//! for etcd (no leader, leader changes, the backend near its quota,
//! memory) and `etcdctl check datascale` (which reads
//! `process_resident_memory_bytes`) work unchanged.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Weak;

use openraft::async_runtime::WatchReceiver;

use crate::node::Node;

/// Leaders this member has seen take office (etcd's
/// `etcd_server_leader_changes_seen_total`), counted by
/// [`count_leader_changes`].
#[derive(Debug, Default)]
pub struct LeaderChanges(AtomicU64);

impl LeaderChanges {
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Counts every new leader Raft's metrics name (not a loss of one); ends
/// with the node or its Raft.
pub async fn count_leader_changes(node: Weak<Node>) {
    let Some(mut metrics) = node.upgrade().map(|n| n.raft.metrics()) else {
        return;
    };
    let mut last = None;
    loop {
        let leader = metrics.borrow_watched().current_leader;
        if leader.is_some() && leader != last {
            let Some(n) = node.upgrade() else { return };
            n.leader_changes.0.fetch_add(1, Relaxed);
            last = leader;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// One metric with its help and type lines.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// etcd's server and backend metrics this member can state.
pub fn render_etcd(node: &Node, out: &mut String) {
    let (leader, committed, applied) = {
        let m = node.raft.metrics();
        let m = m.borrow_watched();
        (
            m.current_leader,
            m.last_log_index.unwrap_or(0),
            m.last_applied.as_ref().map_or(0, |l| l.index),
        )
    };
    let me = node.member_id();
    let in_use = node.store().size_bytes();
    let db_bytes = std::fs::metadata(node.db_path()).map_or(0, |m| m.len());
    let gauges: [(&str, &str, u64); 5] = [
        (
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            u64::from(node.knows_leader()),
        ),
        (
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            u64::from(leader == Some(me)),
        ),
        (
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            db_bytes,
        ),
        (
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            in_use,
        ),
        (
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            node.config.quota_backend_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        metric(out, name, "gauge", help, value);
    }
    let counters: [(&str, &str, u64); 3] = [
        (
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            node.leader_changes.get(),
        ),
        (
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            committed,
        ),
        (
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            applied,
        ),
    ];
    for (name, help, value) in counters {
        metric(out, name, "counter", help, value);
    }
}

/// Prometheus' standard process metrics, from `/proc/self` (Linux; on
/// other systems, or if `/proc` cannot be read, they are left out).
pub fn render_process(out: &mut String) {
    let Some(p) = ProcessStats::read() else {
        return;
    };
    metric(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    metric(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes,
    );
    metric(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes,
    );
    metric(
        out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds,
    );
    if let Some(max) = p.max_fds {
        metric(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    if let Some(start) = p.start_time_seconds {
        metric(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
}

/// What [`render_process`] reports.
#[derive(Debug)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: usize,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (ticks, page) = (u64::try_from(ticks).ok()?, u64::try_from(page).ok()?);
        if ticks == 0 {
            return None;
        }
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and
        // may itself hold spaces: state is field 3, utime 14, stime 15,
        // starttime 22, vsize 23, rss (pages) 24.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let cpu_ticks = field(14)? + field(15)?;
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse().ok())
            });
        Some(ProcessStats {
            cpu_seconds: cpu_ticks as f64 / ticks as f64,
            resident_bytes: field(24)?.saturating_mul(page),
            virtual_bytes: field(23)?,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count(),
            max_fds,
            start_time_seconds: boot_time
                .zip(field(22))
                .map(|(boot, start)| boot as f64 + start as f64 / ticks as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read_from_proc() {
        let p = ProcessStats::read().expect("Linux /proc");
        assert!(p.resident_bytes > 1024 * 1024, "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(
            p.open_fds >= 3 && p.max_fds.is_some_and(|m| m >= p.open_fds as u64),
            "{p:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = p.start_time_seconds.expect("btime");
        assert!(
            started <= now + 1.0 && started > now - 24.0 * 3600.0,
            "{p:?}"
        );
        let mut out = String::new();
        render_process(&mut out);
        assert!(out.contains("\nprocess_resident_memory_bytes "), "{out}");
        assert!(
            out.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{out}"
        );
    }
}
