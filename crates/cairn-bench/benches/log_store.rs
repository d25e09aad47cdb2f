//! Raft log append through `cairn_raft::log_store::LogStore` on the real
//! disk (a temp dir under the target directory): one redb transaction with
//! `Durability::Immediate`, i.e. one fsync, per `append` call. The batch
//! sizes show what group commit buys.
//!
//! `cargo bench -p cairn-bench --bench log_store`

use std::sync::Arc;
use std::time::Duration;

use cairn_raft::log_store::LogStore;
use cairn_raft::types::{Entry, LeaderId, LogId, Request, TypeConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderId;
use redb::Database;

fn lid(index: u64) -> LogId {
    LogId::new(<LeaderId as RaftLeaderId>::new(1, 1).to_committed(), index)
}

fn put(index: u64) -> Entry {
    Entry::new_normal(
        lid(index),
        Request::from(cairn_store::Command::Put(cairn_store::PutRequest {
            key: format!("bench/{:010}", index % 10_000).into_bytes(),
            value: vec![b'v'; 256],
            ..Default::default()
        })),
    )
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // Not /tmp: it may be a tmpfs, where fsync costs nothing.
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let db = Arc::new(Database::create(dir.path().join("log.redb")).expect("create redb"));
    let mut store = LogStore::open(db, &dir.path().join("wal")).expect("open log store");
    let mut next = 1u64;

    let mut g = c.benchmark_group("log_append_fsync");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for batch in [1u64, 16, 64] {
        g.throughput(Throughput::Elements(batch));
        g.bench_function(format!("batch_{batch}_x_256B"), |b| {
            b.iter(|| {
                let ents: Vec<Entry> = (next..next + batch).map(put).collect();
                next += batch;
                rt.block_on(async {
                    let (tx, rx) = TypeConfig::oneshot();
                    store
                        .append(ents, IOFlushed::signal(tx))
                        .await
                        .expect("append");
                    rx.await.expect("flush signal").expect("flush");
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
