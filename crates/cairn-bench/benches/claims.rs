//! Block-claims apply micro-benchmarks: `cairn_store::Store` with no IO,
//! i.e. what one member spends applying a claims request of 1,000 keys
//! (every member applies every request).
//!
//! `cargo bench -p cairn-bench --bench claims`

use std::hint::black_box;
use std::time::{Duration, Instant};

use cairn_store::claims::{
    ClaimKey, ClaimsCommand, EvictionPolicy, KeyKind, NamespaceConfig, RegisterEntry,
};
use cairn_store::{Command, CommandResult, Store};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const NS: &str = "blocks";
const BATCH: usize = 1_000;
/// Cluster time advances this much per request, so leases (30 s) expire
/// and the live lease set stays near 30 000 / STEP_MS requests' worth
/// (300,000 keys: a table that fits this machine's 32 MiB L3 cache).
const STEP_MS: u64 = 100;
/// Requests that fill the big table before its benchmark: 4 M leases, as
/// a member holds a few seconds into a 16-client offload run, far more
/// than any cache (no lease expires: time moves 1 ms per request).
const BIG_TABLE_REQUESTS: usize = 4_000;

/// Cluster time per request in the steady-state benchmark: a 30 s lease
/// outlives 30,000 / 7 ≈ 4,300 requests, so ~4.3 M leases are live.
const STEADY_STEP_MS: u64 = 7;
/// Leases the expiry benchmark ends in one tick.
const EXPIRIES_PER_TICK: u32 = 10_000;

/// splitmix64: distinct, well-spread block hashes without a RNG crate.
fn hash(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct World {
    store: Store,
    session_id: i64,
    now_ms: u64,
    /// Cluster time between two requests.
    step_ms: u64,
    next_key: u64,
}

impl World {
    fn new() -> World {
        World::with_step(STEP_MS)
    }

    fn with_step(step_ms: u64) -> World {
        let mut store = Store::new();
        store.apply(&Command::Claims(ClaimsCommand::CreateNamespace {
            name: NS.into(),
            config: NamespaceConfig {
                capacity: 50_000_000,
                eviction: EvictionPolicy::Tail,
                key_kind: KeyKind::U64,
                max_value_bytes: 64,
                ..Default::default()
            },
        }));
        let session_id = match store
            .apply(&Command::LeaseGrant {
                id: 0,
                ttl_secs: 1_000_000,
                now_ms: 0,
            })
            .result
        {
            CommandResult::LeaseGrant(g) => g.id,
            other => panic!("lease grant: {other:?}"),
        };
        store.take_changes();
        World {
            store,
            session_id,
            now_ms: 1_000,
            step_ms,
            next_key: 0,
        }
    }

    fn fresh_keys(&mut self) -> Vec<ClaimKey> {
        let first = self.next_key;
        self.next_key += BATCH as u64;
        (first..self.next_key)
            .map(|n| ClaimKey::U64(hash(n)))
            .collect()
    }

    /// Apply one command the way the state machine does: apply, then take
    /// the changes for persistence, then a tick that expires due leases.
    fn apply(&mut self, cmd: ClaimsCommand) {
        self.apply_at_the_same_time(cmd);
        self.now_ms += self.step_ms;
        self.tick();
    }

    /// [`apply`](Self::apply) with no tick after it and cluster time left
    /// where it is: no lease comes due.
    fn apply_at_the_same_time(&mut self, cmd: ClaimsCommand) {
        let applied = self.store.apply(&Command::Claims(cmd));
        match applied.result {
            CommandResult::Claims(Ok(_)) => {}
            other => panic!("claims: {other:?}"),
        }
        black_box(self.store.take_changes());
    }

    /// A tick at the current time, which ends every claim lease due by
    /// then; returns how many it ended.
    fn tick(&mut self) -> u64 {
        let before = self.store.claims().lease_count();
        self.store.apply(&Command::Tick {
            now_ms: self.now_ms,
            // etcd leases (none here but the session's): the server's default.
            max_expiries: 1_000,
        });
        black_box(self.store.take_changes());
        (before - self.store.claims().lease_count()) as u64
    }

    fn offload(&mut self, keys: Vec<ClaimKey>) {
        self.apply(self.offload_command(keys));
    }

    fn offload_command(&self, keys: Vec<ClaimKey>) -> ClaimsCommand {
        ClaimsCommand::CanOffload {
            namespace: NS.into(),
            session_id: self.session_id,
            keys,
            now_ms: self.now_ms,
        }
    }

    fn register(&mut self, keys: Vec<ClaimKey>) {
        let entries = keys
            .into_iter()
            .map(|key| RegisterEntry {
                key,
                value: vec![7; 16],
                metadata: Vec::new(),
                parent: None,
                position: None,
            })
            .collect();
        let cmd = ClaimsCommand::Register {
            namespace: NS.into(),
            session_id: self.session_id,
            entries,
            now_ms: self.now_ms,
        };
        self.apply(cmd);
    }
}

fn claims(c: &mut Criterion) {
    let mut g = c.benchmark_group("claims_apply");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(BATCH as u64));

    // A fresh 1,000-key can_offload: every key granted.
    let mut w = World::new();
    g.bench_function("can_offload_1000_fresh", |b| {
        b.iter(|| {
            let keys = w.fresh_keys();
            w.offload(keys)
        })
    });

    // A worker's cycle minus the offload: register 1,000 keys it holds.
    let mut w = World::new();
    g.bench_function("register_1000_leased", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let keys = w.fresh_keys();
                w.offload(keys.clone());
                let started = Instant::now();
                w.register(keys);
                timed += started.elapsed();
            }
            timed
        })
    });

    // Reads: match_prefix of 1,000 stored keys.
    let mut w = World::new();
    let mut stored = Vec::new();
    for _ in 0..100 {
        let keys = w.fresh_keys();
        w.offload(keys.clone());
        w.register(keys.clone());
        stored.push(keys);
    }
    let mut n = 0;
    g.bench_function("match_prefix_1000_stored", |b| {
        b.iter(|| {
            n = (n + 1) % stored.len();
            black_box(w.store.claims().match_prefix(NS, &stored[n]).unwrap())
        })
    });
    // A fresh 1,000-key can_offload in a table of millions, where every
    // key is a cache miss. Last: the benchmarks after it ran slower in
    // the allocator the big table had used.
    let mut w = World::with_step(1);
    for _ in 0..BIG_TABLE_REQUESTS {
        let keys = w.fresh_keys();
        w.offload(keys);
    }
    g.bench_function("can_offload_1000_fresh_4m", |b| {
        b.iter(|| {
            let keys = w.fresh_keys();
            w.offload(keys)
        })
    });
    drop(w);
    // The same in a steady state: as many leases expire as are granted
    // (the tick after each request expires ~1,000), ~4 M live. Against the
    // one above, this is what expiring a lease costs.
    let mut w = World::with_step(STEADY_STEP_MS);
    for _ in 0..BIG_TABLE_REQUESTS + 1_000 {
        let keys = w.fresh_keys();
        w.offload(keys);
    }
    g.bench_function("can_offload_1000_steady_4m", |b| {
        b.iter(|| {
            let keys = w.fresh_keys();
            w.offload(keys)
        })
    });
    // Only the expiry: ten requests at one instant, then a tick ten
    // requests' time later, which ends the 10,000 leases granted ~4,300
    // requests before (long cold, were they looked up).
    g.throughput(Throughput::Elements(EXPIRIES_PER_TICK as u64));
    g.bench_function("expire_10000_steady_4m", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let requests = EXPIRIES_PER_TICK as usize / BATCH;
                for _ in 0..requests {
                    let keys = w.fresh_keys();
                    w.apply_at_the_same_time(w.offload_command(keys));
                }
                w.now_ms += requests as u64 * w.step_ms;
                let started = Instant::now();
                let expired = w.tick();
                timed += started.elapsed();
                assert!(expired > 0, "nothing expired");
            }
            timed
        })
    });
    g.finish();
}

/// What each member spends writing a 1,000-key `CanOffload` entry for its
/// log or a follower's stream, and reading one back: packed (what is
/// proposed) against listed (what logs before packing hold).
fn claims_encoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("claims_encoding");
    g.throughput(Throughput::Elements(BATCH as u64));
    let keys: Vec<ClaimKey> = (0..BATCH as u64).map(|n| ClaimKey::U64(hash(n))).collect();
    let (namespace, session_id, now_ms) = (NS.to_string(), 1, 1_000);
    let packed = Command::Claims(ClaimsCommand::CanOffload {
        namespace: namespace.clone(),
        session_id,
        keys: keys.clone(),
        now_ms,
    });
    let listed = Command::Claims(ClaimsCommand::CanOffloadListed {
        namespace,
        session_id,
        keys,
        now_ms,
    });
    for (name, cmd) in [("packed", &packed), ("listed", &listed)] {
        g.bench_function(format!("encode_can_offload_1000_{name}"), |b| {
            b.iter(|| postcard::to_allocvec(black_box(cmd)).unwrap())
        });
        let bytes = postcard::to_allocvec(cmd).unwrap();
        g.bench_function(format!("decode_can_offload_1000_{name}"), |b| {
            b.iter(|| postcard::from_bytes::<Command>(black_box(&bytes)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, claims, claims_encoding);
criterion_main!(benches);
