//! How long hashing the keyspace (`HashKV`, the corruption check) keeps
//! applies out: a store of 100,000 keys of 256 B behind the server's lock,
//! hashed in one go under one read lock (as the server did before), in
//! steps back to back on one thread, and as the server does now
//! (`cairn_server::kv_hash::hash_in_steps`). Prints, for each, the longest
//! single hold of the read lock and the whole hash's time, then the same
//! hashes while a writer applies a put every 100 µs: how long a put waited
//! for the write lock is the stall apply sees.
//!
//! `cargo bench -p cairn-bench --bench hash_stall`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use cairn_raft::state_machine::SharedStore;
use cairn_server::kv_hash::{hash_in_steps, STEP_RECORDS};
use cairn_store::{Command, HashProgress, PutRequest, Store};

const KEYS: u64 = 100_000;
/// Hashes timed per way; the worst and the median are shown.
const ROUNDS: usize = 5;
/// The writer's pause between puts.
const WRITE_EVERY: Duration = Duration::from_micros(100);
/// The pause between two hashes with the writer on, so the stall of each
/// is seen, not of several back to back.
const GAP: Duration = Duration::from_millis(30);

fn put(n: u64) -> Command {
    Command::Put(PutRequest {
        key: format!("bench/{:010}", n % KEYS).into_bytes(),
        value: vec![b'v'; 256],
        ..Default::default()
    })
}

/// KEYS keys of 256 B, history compacted away.
fn filled() -> SharedStore {
    let mut s = Store::new();
    for n in 0..KEYS {
        s.apply(&put(n));
    }
    let revision = s.revision();
    s.apply(&Command::Compact { revision });
    s.take_changes();
    Arc::new(RwLock::new(s))
}

/// One hash at the head, the way `how` names; returns the longest read
/// lock hold in it (none: not seen from outside) and its whole time.
fn hash(
    store: &SharedStore,
    how: How,
    rt: &tokio::runtime::Runtime,
) -> (Option<Duration>, Duration) {
    let start = Instant::now();
    match how {
        How::OneGo => {
            let s = store.read().unwrap();
            std::hint::black_box(s.hash_kv(0).unwrap());
            let held = start.elapsed();
            (Some(held), held)
        }
        How::Steps => {
            let mut cursor = store.read().unwrap().hash_cursor(0).unwrap();
            let mut longest = Duration::ZERO;
            loop {
                let step = Instant::now();
                let s = store.read().unwrap();
                let progress = s.hash_kv_step(&mut cursor, STEP_RECORDS).unwrap();
                drop(s);
                longest = longest.max(step.elapsed());
                match progress {
                    HashProgress::More => {}
                    HashProgress::Done { .. } => return (Some(longest), start.elapsed()),
                    HashProgress::Restart { .. } => panic!("no compaction here"),
                }
            }
        }
        How::Server => {
            std::hint::black_box(rt.block_on(hash_in_steps(store, 0)).unwrap());
            (None, start.elapsed())
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum How {
    /// `Store::hash_kv` under one read lock: the server before.
    OneGo,
    /// `Store::hash_kv_step` of the server's size, a read lock each,
    /// back to back on one thread.
    Steps,
    /// The server's `hash_in_steps`: steps on the blocking pool.
    Server,
}

/// Puts every [`WRITE_EVERY`] until `stop`; each put's wait for the
/// write lock, in order of length.
fn writer(store: SharedStore, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Duration>> {
    thread::spawn(move || {
        let mut waits = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(WRITE_EVERY);
            let asked = Instant::now();
            let mut s = store.write().unwrap();
            waits.push(asked.elapsed());
            s.apply(&put(n));
            s.take_changes();
            n += 1;
        }
        waits.sort();
        waits
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let store = filled();
    println!("hash of {KEYS} keys of 256 B, steps of {STEP_RECORDS} records, {ROUNDS} rounds (worst / median)");
    println!("-- alone");
    for how in [How::OneGo, How::Steps, How::Server] {
        let mut holds = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..ROUNDS {
            let (held, total) = hash(&store, how, &rt);
            holds.push(held);
            totals.push(total);
        }
        holds.sort();
        totals.sort();
        let held = match (holds[ROUNDS - 1], holds[ROUNDS / 2]) {
            (Some(worst), Some(median)) => format!("{} / {}", ms(worst), ms(median)),
            _ => "one step (unseen)".to_string(),
        };
        println!(
            "{how:?}: longest read-lock hold {held}, whole hash {} / {}",
            ms(totals[ROUNDS - 1]),
            ms(totals[ROUNDS / 2]),
        );
    }
    println!("-- with a put every {WRITE_EVERY:?}, {GAP:?} between hashes");
    for how in [None, Some(How::OneGo), Some(How::Steps), Some(How::Server)] {
        let stop = Arc::new(AtomicBool::new(false));
        let w = writer(SharedStore::clone(&store), stop.clone());
        let mut totals = Vec::new();
        for _ in 0..ROUNDS {
            thread::sleep(GAP);
            if let Some(how) = how {
                totals.push(hash(&store, how, &rt).1);
            }
        }
        thread::sleep(GAP);
        stop.store(true, Ordering::Relaxed);
        let waits = w.join().unwrap();
        totals.sort();
        let whole = totals.get(ROUNDS / 2).map_or("-".to_string(), |d| ms(*d));
        let over_1ms = waits
            .iter()
            .filter(|w| **w > Duration::from_millis(1))
            .count();
        println!(
            "{}: put waits: longest {}, p99 {}, {over_1ms} of {} over 1 ms; whole hash (median) {whole}",
            how.map_or("no hash".to_string(), |h| format!("{h:?}")),
            ms(waits[waits.len() - 1]),
            ms(waits[waits.len() * 99 / 100]),
            waits.len(),
        );
    }
}
