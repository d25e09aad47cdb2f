//! Latency histograms of a member's write path, served as Prometheus text
//! on `GET /metrics` (etcd serves the same measures as
//! `etcd_disk_wal_fsync_duration_seconds` and
//! `etcd_disk_backend_commit_duration_seconds`): where a write's time
//! goes, without a profiler.
//!
//! Process-wide statics, as Prometheus' default registry is: a member in
//! production is one process. The members of an in-process test cluster
//! share them. Recording is three relaxed atomic additions.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 100 µs doubling to ~6.5 s (a
/// log fsync takes ~0.2 ms on the machine we measure on, where etcd's
/// first bucket, 1 ms, would hold nearly all of them).
const BOUNDS_S: [f64; 17] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536,
];

/// A Prometheus histogram of durations with [`BOUNDS_S`] buckets.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    /// Observations per bucket (not cumulative); the last is above every
    /// bound (`+Inf`).
    buckets: [AtomicU64; BOUNDS_S.len() + 1],
    /// Sum of the observations, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str) -> Histogram {
        Histogram {
            name,
            help,
            buckets: [const { AtomicU64::new(0) }; BOUNDS_S.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BOUNDS_S
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BOUNDS_S.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Appends the histogram in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut count = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            count += bucket.load(Relaxed);
            match BOUNDS_S.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
                }
            }
        }
        let sum_s = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum_s}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// One write of a group of log appends and its `fdatasync`.
pub static WAL_FSYNC: Histogram = Histogram::new(
    "cairn_disk_wal_fsync_duration_seconds",
    "Write and fdatasync of one group of Raft log appends.",
);

/// One redb commit of applied state rows (not durable: see checkpoints).
pub static BACKEND_COMMIT: Histogram = Histogram::new(
    "cairn_disk_backend_commit_duration_seconds",
    "One redb commit of the state rows of applied batches (not fsynced).",
);

/// One durable redb commit, which writes out what the commits before it
/// left in memory.
pub static BACKEND_CHECKPOINT: Histogram = Histogram::new(
    "cairn_disk_backend_checkpoint_duration_seconds",
    "One durable redb commit (writes out the state rows committed since the last, and fsyncs).",
);

/// Applying one batch of committed entries to the in-memory store.
pub static APPLY: Histogram = Histogram::new(
    "cairn_apply_duration_seconds",
    "Applying one batch of committed entries to the in-memory store.",
);

/// Every histogram of this crate, in the Prometheus text format.
pub fn render(out: &mut String) {
    for histogram in [&WAL_FSYNC, &BACKEND_COMMIT, &BACKEND_CHECKPOINT, &APPLY] {
        histogram.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_in_seconds() {
        let h = Histogram::new("t_seconds", "A test.");
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(150));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out);
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {out}"))
                .to_string()
        };
        assert_eq!(
            line("t_seconds_bucket{le=\"0.0001\"}"),
            "t_seconds_bucket{le=\"0.0001\"} 2"
        );
        assert_eq!(
            line("t_seconds_bucket{le=\"0.0002\"}"),
            "t_seconds_bucket{le=\"0.0002\"} 3"
        );
        assert_eq!(
            line("t_seconds_bucket{le=\"6.5536\"}"),
            "t_seconds_bucket{le=\"6.5536\"} 3"
        );
        assert_eq!(
            line("t_seconds_bucket{le=\"+Inf\"}"),
            "t_seconds_bucket{le=\"+Inf\"} 4"
        );
        assert_eq!(line("t_seconds_count"), "t_seconds_count 4");
        assert_eq!(line("t_seconds_sum"), "t_seconds_sum 10.0003");
        assert!(out.starts_with("# HELP t_seconds A test.\n# TYPE t_seconds histogram\n"));
    }
}
