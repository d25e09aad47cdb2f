//! Watch fan-out: `WatchHub::applied` with 100 synced watchers on one
//! prefix, one put event per applied batch (what a put-heavy cluster feeds
//! it). Measures the hub alone: selection, clone and channel send per
//! watcher; receivers are drained outside the timed section.
//!
//! `cargo bench -p cairn-bench --bench watch_hub`

use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cairn_server::watch_hub::{WatchHub, WatchSpec};
use cairn_store::{Event, EventKind, KeyRange, KeyValue, Store};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::sync::mpsc;

/// Channel capacity per watcher; drained before it can fill.
const CAP: usize = 256;

fn event(rev: i64) -> Event {
    Event {
        kind: EventKind::Put,
        kv: KeyValue {
            key: format!("bench/watch/{:010}", rev % 10_000).into_bytes(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            value: vec![b'v'; 256],
            lease: 0,
        },
        prev_kv: None,
    }
}

fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("watch_hub");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for watchers in [1usize, 100] {
        // Every watcher gets every event: throughput in events delivered.
        g.throughput(Throughput::Elements(watchers as u64));
        let store = Arc::new(RwLock::new(Store::new()));
        let hub = WatchHub::new(store);
        let mut rxs = Vec::new();
        for i in 0..watchers {
            let (tx, rx) = mpsc::channel(CAP);
            hub.register(
                i as i64,
                WatchSpec {
                    range: KeyRange::prefix(b"bench/watch/".to_vec()),
                    ..Default::default()
                },
                tx,
            )
            .expect("register");
            rxs.push(rx);
        }
        let mut rev = 0i64;
        g.bench_function(format!("applied_1_event_{watchers}_watchers"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CAP as u64 / 2);
                    let events: Vec<Vec<Event>> = (0..n)
                        .map(|_| {
                            rev += 1;
                            vec![event(rev)]
                        })
                        .collect();
                    let first = rev - n as i64 + 1;
                    let t0 = Instant::now();
                    for (i, evs) in events.iter().enumerate() {
                        hub.applied(evs, first + i as i64);
                    }
                    timed += t0.elapsed();
                    for rx in &mut rxs {
                        while let Ok(m) = rx.try_recv() {
                            black_box(m);
                        }
                    }
                    left -= n;
                }
                timed
            })
        });
        assert_eq!(hub.stats().watchers, watchers, "no watcher fell behind");
    }
    g.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
