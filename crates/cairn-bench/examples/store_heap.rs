//! Heap bytes the store keeps per revision of history: 300 000 puts of
//! 256-byte values over 10 000 keys (the shape of `cairn bench`'s put
//! rows), with every value in memory and with superseded values dropped
//! (as a member drops them once their rows are in redb).
//!
//! `cargo run --release -p cairn-bench --example store_heap`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn_store::{Command, HistoryValues, PutRequest, Revision, Store};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PUTS: u64 = 300_000;
const KEYS: u64 = 10_000;

/// Never asked: nothing reads history here.
struct Unread;

impl HistoryValues for Unread {
    fn values(&self, _revs: &[Revision]) -> Result<Vec<Vec<u8>>, String> {
        Err("not stored".into())
    }
}

fn filled(drop_values: bool) -> (Store, usize) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut store = Store::new();
    if drop_values {
        store.set_history(Arc::new(Unread));
    }
    let mut x = 1u64;
    for _ in 0..PUTS {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        store.apply(&Command::Put(PutRequest {
            key: format!("bench/{}", (x >> 33) % KEYS).into_bytes(),
            value: vec![7; 256],
            ..Default::default()
        }));
        store.take_changes();
        store.drop_history_values(store.revision());
    }
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    (store, bytes)
}

fn main() {
    for drop_values in [false, true] {
        let (store, bytes) = filled(drop_values);
        println!(
            "{:<32} {:>5} MiB, {:>4} B per revision",
            if drop_values {
                "superseded values dropped:"
            } else {
                "every value in memory:"
            },
            bytes >> 20,
            bytes as u64 / PUTS
        );
        drop(store);
    }
}
