//! State-machine micro-benchmarks: `cairn_store::Store` with no IO at all,
//! i.e. the CPU ceiling of apply and of reads on one core.
//!
//! `cargo bench -p cairn-bench --bench store`

use std::hint::black_box;
use std::time::Duration;

use cairn_server::kv_hash::STEP_RECORDS;
use cairn_store::{
    Command, CommandResult, Compare, CompareResult, CompareTarget, KeyRange, PutRequest,
    RangeRequest, RequestOp, Store, TxnRequest,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const KEYS: u64 = 10_000;
/// History is compacted every this many puts, as a server with
/// auto-compaction would, so memory stays bounded however long it runs.
const COMPACT_EVERY: u64 = 10_000;

/// After the `n`th put of a run: compacts to the head every
/// [`COMPACT_EVERY`] puts.
fn compact_now_and_then(s: &mut Store, n: u64) {
    if n.is_multiple_of(COMPACT_EVERY) {
        let rev = s.revision();
        s.apply(&Command::Compact { revision: rev });
        s.take_changes();
    }
}

fn key(n: u64) -> Vec<u8> {
    format!("bench/{n:010}").into_bytes()
}

fn put(n: u64) -> Command {
    Command::Put(PutRequest {
        key: key(n % KEYS),
        value: vec![b'v'; 256],
        ..Default::default()
    })
}

/// A store holding KEYS keys of 256 B, history compacted away.
fn filled() -> Store {
    let mut s = Store::new();
    for n in 0..KEYS {
        s.apply(&put(n));
    }
    let rev = s.revision();
    s.apply(&Command::Compact { revision: rev });
    s.take_changes();
    s
}

/// `s` with auth on: root, and user `u` whose one role grants read-write
/// on `bench/` and on 16 other prefixes.
fn with_auth(mut s: Store) -> Store {
    use cairn_store::auth::{AuthCommand, PermType, Permission};
    let grant = |role: &str, prefix: &str| AuthCommand::RoleGrantPermission {
        role: role.into(),
        permission: Permission {
            perm_type: PermType::ReadWrite,
            range: KeyRange::prefix(prefix.as_bytes().to_vec()),
        },
    };
    let mut changes = vec![
        AuthCommand::UserAdd {
            name: "root".into(),
            credential: None,
        },
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        AuthCommand::UserAdd {
            name: "u".into(),
            credential: None,
        },
        AuthCommand::RoleAdd { name: "r".into() },
        grant("r", "bench/"),
    ];
    changes.extend((0..16).map(|i| grant("r", &format!("other{i:02}/"))));
    changes.push(AuthCommand::UserGrantRole {
        user: "u".into(),
        role: "r".into(),
    });
    changes.push(AuthCommand::Enable {
        token_key: vec![1; 32],
    });
    for c in changes {
        s.apply(&Command::Auth(c));
    }
    s.take_changes();
    s
}

fn apply_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let mut s = filled();
    let mut n = 0u64;
    g.bench_function("put_256B_10k_keys", |b| {
        b.iter(|| {
            n += 1;
            let a = s.apply(&put(n.wrapping_mul(7919)));
            black_box(&a);
            // The state machine takes the changes after every batch.
            black_box(s.take_changes());
            compact_now_and_then(&mut s, n);
        })
    });

    // As a member applies when no watcher is registered: no events built.
    let mut s = filled();
    s.set_events_wanted(false);
    let mut n = 0u64;
    g.bench_function("put_256B_10k_keys_unwatched", |b| {
        b.iter(|| {
            n += 1;
            black_box(s.apply(&put(n.wrapping_mul(7919))));
            black_box(s.take_changes());
            compact_now_and_then(&mut s, n);
        })
    });

    // With auth on, as a user whose role grants `bench/` among 16 other
    // prefixes: the check made where a write is applied.
    let mut s = with_auth(filled());
    let mut n = 0u64;
    g.bench_function("put_256B_10k_keys_as_user", |b| {
        b.iter(|| {
            n += 1;
            let as_user = Command::As {
                user: "u".into(),
                command: Box::new(put(n.wrapping_mul(7919))),
            };
            let a = s.apply(&as_user);
            debug_assert!(matches!(a.result, CommandResult::Put(_)), "{a:?}");
            black_box(&a);
            black_box(s.take_changes());
            compact_now_and_then(&mut s, n);
        })
    });

    // Compare-and-put on one key, tracking its mod revision.
    let mut s = filled();
    let k = key(42);
    let mut last = match s.range(&RangeRequest {
        range: KeyRange::single(k.clone()),
        ..Default::default()
    }) {
        Ok(r) => r.kvs[0].mod_revision,
        Err(e) => panic!("{e}"),
    };
    let mut n = 0u64;
    g.bench_function("txn_cas_put", |b| {
        b.iter(|| {
            n += 1;
            let cmd = Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(last),
                    range: KeyRange::single(k.clone()),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: k.clone(),
                    value: vec![b'v'; 256],
                    ..Default::default()
                })],
                failure: vec![RequestOp::Range(RangeRequest {
                    range: KeyRange::single(k.clone()),
                    ..Default::default()
                })],
            });
            match s.apply(&cmd).result {
                CommandResult::Txn(t) if t.succeeded => last = t.revision,
                other => panic!("cas failed: {other:?}"),
            }
            s.take_changes();
            compact_now_and_then(&mut s, n);
        })
    });

    g.bench_function("lease_grant_revoke", |b| {
        let mut s = Store::new();
        b.iter(|| {
            let id = match s
                .apply(&Command::LeaseGrant {
                    id: 0,
                    ttl_secs: 60,
                    now_ms: 0,
                })
                .result
            {
                CommandResult::LeaseGrant(g) => g.id,
                other => panic!("grant failed: {other:?}"),
            };
            black_box(s.apply(&Command::LeaseRevoke { id }));
            s.take_changes();
        })
    });
    g.finish();
}

fn range(c: &mut Criterion) {
    let mut g = c.benchmark_group("range_10k");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let s = filled();
    let all = RangeRequest {
        range: KeyRange::prefix(b"bench/".to_vec()),
        ..Default::default()
    };
    g.throughput(Throughput::Elements(KEYS));
    g.bench_function("all_keys", |b| b.iter(|| black_box(s.range(&all))));
    // What the corruption check (and `HashKV`) holds the store's read
    // lock for: every retained record hashed.
    g.bench_function("hash_kv", |b| b.iter(|| black_box(s.hash_kv(0))));
    // What it holds the lock for since the server hashes in steps: one
    // step of its size (`hash_kv_step_4096`).
    g.bench_function(format!("hash_kv_step_{STEP_RECORDS}"), |b| {
        b.iter(|| {
            let mut cursor = s.hash_cursor(0).unwrap();
            black_box(s.hash_kv_step(&mut cursor, STEP_RECORDS))
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("count_only", |b| {
        let req = RangeRequest {
            count_only: true,
            ..all.clone()
        };
        b.iter(|| black_box(s.range(&req)))
    });
    let mut n = 0u64;
    g.bench_function("single_key", |b| {
        b.iter_batched(
            || {
                n += 1;
                RangeRequest {
                    range: KeyRange::single(key(n.wrapping_mul(7919) % KEYS)),
                    ..Default::default()
                }
            },
            |req| black_box(s.range(&req)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, apply_put, range);
criterion_main!(benches);
