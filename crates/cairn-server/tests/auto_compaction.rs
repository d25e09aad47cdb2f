//! Automatic compaction (etcd's `--auto-compaction-*`) on a real member:
//! history older than the retention goes, the window stays.

mod support;

use std::time::{Duration, Instant};

use support::{put, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_compaction_drops_history_older_than_the_retention_only() {
    let retention = Duration::from_millis(1000);
    let c = Cluster::start(3, |cfg| {
        cfg.auto_compaction_mode = "periodic".into();
        cfg.auto_compaction_retention = "1000ms".into();
    })
    .await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    // (sent at, revision) of every write.
    let mut writes: Vec<(Instant, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut compactions = 0;
    let mut last = 0;
    // Two compactions seen, each checked against the writes before it.
    while compactions < 2 {
        assert!(Instant::now() < deadline, "no auto-compaction within 20 s");
        let sent = Instant::now();
        let revision = put(c.node(leader), "k", "v").await;
        writes.push((sent, revision));
        let compacted = c.node(leader).store().compact_revision();
        if compacted > last {
            compactions += 1;
            last = compacted;
            // Every write sent within the retention is still there.
            let seen = Instant::now();
            for (at, rev) in &writes {
                if seen.duration_since(*at) < retention {
                    assert!(
                        *rev > compacted,
                        "write at {rev} within the window was compacted ({compacted})"
                    );
                }
            }
            // And it compacted something the window did not need.
            assert!(writes.iter().any(|(_, rev)| *rev <= compacted));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Followers apply the same compaction.
    support::wait_until("followers compacted too", Duration::from_secs(10), || {
        let ok = (0..3).all(|i| c.node(i).store().compact_revision() >= last);
        async move { ok }
    })
    .await;
    c.shutdown().await;
}
