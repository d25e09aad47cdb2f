//! Bucket arrays made ahead of a slot table's growth, off the apply path.
//!
//! A growing table needs a fresh array twice its size, and the first
//! touch of fresh memory is a page fault per 4 KiB: on the VM the
//! benchmarks run on, ~10 µs each (the host backs the page then), inside
//! an apply that every member runs at the same time. Sized up front,
//! 1-client offload p50 was 1.5 instead of 1.8 ms and p99 2.4–2.7 instead
//! of 3.2–3.4 ms; with arrays made ahead here, p99 2.83–3.09 against
//! 3.13–3.92 ms (BENCHMARKS.md, session 16).
//!
//! So a table that is filling up *orders* its next array here, and a
//! thread outside the store (the server's, calling [`make_one_spare`] and
//! now and then [`drop_unused_spares`]) allocates it and writes every
//! bucket. Without such a thread nothing is made and tables allocate
//! their own, as before. When the table grows it takes a
//! spare of its size if one is ready, and otherwise allocates one itself
//! as before. A spare is empty buckets whoever made it: the store's
//! contents, and so every replica's state, are the same either way.
//!
//! Bounded: spares ordered or made and not yet taken hold at most
//! [`SPARE_BYTES_MAX`]; an order past it is not placed. Any table of the
//! same key type and size may take a spare, so one that its table did
//! not need (leases ran out and it never grew) serves the next.

use std::any::{Any, TypeId};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::namespace::Slot;

/// A table's buckets.
pub(super) type Buckets<K> = Vec<Option<(K, Slot)>>;

/// Most bytes of spares ordered and not yet taken, across the process.
pub const SPARE_BYTES_MAX: usize = 256 << 20;

/// Smallest array worth making ahead (64 KiB of `u64` buckets): smaller
/// ones fault in a few pages.
pub(super) const SPARE_MIN_BUCKETS: usize = 1 << 11;

/// Which arrays a spare can stand in for, and what it costs the budget.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Shape {
    key_type: TypeId,
    len: usize,
    bytes: usize,
}

impl Shape {
    fn of<K: 'static>(len: usize) -> Shape {
        Shape {
            key_type: TypeId::of::<K>(),
            len,
            bytes: len.saturating_mul(std::mem::size_of::<Option<(K, Slot)>>()),
        }
    }
}

struct Order {
    shape: Shape,
    make: fn(usize) -> Box<dyn Any + Send>,
}

struct Ready {
    shape: Shape,
    buckets: Box<dyn Any + Send>,
    /// [`Pool::round`] when it was made.
    round: u64,
}

#[derive(Default)]
struct Pool {
    orders: Vec<Order>,
    ready: Vec<Ready>,
    /// Bytes of everything in `orders`, `ready` and being made.
    bytes: usize,
    /// Spares taken by a growing table, for tests and metrics.
    taken: u64,
    /// Calls of [`drop_unused_spares`] so far.
    round: u64,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    orders: Vec::new(),
    ready: Vec::new(),
    bytes: 0,
    taken: 0,
    round: 0,
});
static ORDERED: Condvar = Condvar::new();

fn lock_pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tries of [`lock_pool_from_apply`] before it gives up.
const APPLY_LOCK_TRIES: usize = 64;

/// The pool for the apply path, which must not wait for the maker: that
/// thread runs only when a CPU is otherwise idle (the server puts it in
/// `SCHED_IDLE`), so were it preempted holding the lock, an apply that
/// blocked on it would wait for a CPU to fall idle. The lock is only ever
/// held for a few pushes and pops, so a short spin finds it free unless
/// its holder is off the CPU; then the apply goes on without a spare.
fn lock_pool_from_apply() -> Option<MutexGuard<'static, Pool>> {
    lock_briefly(&POOL)
}

/// `mutex` if a short spin gets it.
fn lock_briefly<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    for _ in 0..APPLY_LOCK_TRIES {
        match mutex.try_lock() {
            Ok(pool) => return Some(pool),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
        }
    }
    None
}

fn make<K: Send + 'static>(len: usize) -> Box<dyn Any + Send> {
    let mut buckets: Buckets<K> = Vec::with_capacity(len);
    buckets.resize_with(len, || None);
    Box::new(buckets)
}

/// Asks for an array of `len` empty buckets to be made ahead. Returns
/// false if the budget is spent (the table then allocates its own).
pub(super) fn order<K: Send + 'static>(len: usize) -> bool {
    let shape = Shape::of::<K>(len);
    let Some(mut pool) = lock_pool_from_apply() else {
        return false;
    };
    if pool.bytes.saturating_add(shape.bytes) > SPARE_BYTES_MAX {
        return false;
    }
    pool.bytes += shape.bytes;
    pool.orders.push(Order {
        shape,
        make: make::<K>,
    });
    drop(pool);
    ORDERED.notify_one();
    true
}

/// A ready array of `len` empty buckets, if one was made. On a miss, one
/// order of that size not yet started is dropped: its table is growing
/// without it. (An order the pool was too busy to look at is made all
/// the same, and freed unused by [`drop_unused_spares`].)
pub(super) fn take<K: Send + 'static>(len: usize) -> Option<Buckets<K>> {
    let shape = Shape::of::<K>(len);
    let mut pool = lock_pool_from_apply()?;
    if let Some(at) = pool.ready.iter().position(|r| r.shape == shape) {
        let ready = pool.ready.swap_remove(at);
        pool.bytes -= shape.bytes;
        pool.taken += 1;
        drop(pool);
        return ready.buckets.downcast::<Buckets<K>>().ok().map(|b| *b);
    }
    if let Some(at) = pool.orders.iter().position(|o| o.shape == shape) {
        pool.orders.swap_remove(at);
        pool.bytes -= shape.bytes;
    }
    None
}

/// Spares taken by growing tables so far.
pub fn spares_taken() -> u64 {
    lock_pool().taken
}

/// Makes the oldest waiting order, waiting up to `timeout` for one.
/// Returns whether it made one.
pub fn make_one_spare(timeout: Duration) -> bool {
    let mut pool = lock_pool();
    if pool.orders.is_empty() {
        pool = ORDERED
            .wait_timeout_while(pool, timeout, |p| p.orders.is_empty())
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    if pool.orders.is_empty() {
        return false;
    }
    let order = pool.orders.remove(0);
    drop(pool);
    // The page faults happen here, on this thread.
    let buckets = (order.make)(order.shape.len);
    let mut pool = lock_pool();
    let round = pool.round;
    pool.ready.push(Ready {
        shape: order.shape,
        buckets,
        round,
    });
    true
}

/// Frees the spares that were ready before the previous call and are
/// still not taken (a table whose expired leases made room instead of
/// growing does not take its spare). Called every few seconds, this
/// bounds how long unused spares hold memory.
pub fn drop_unused_spares() {
    let mut pool = lock_pool();
    let before = pool.round;
    pool.round += 1;
    let (kept, unused): (Vec<Ready>, Vec<Ready>) = std::mem::take(&mut pool.ready)
        .into_iter()
        .partition(|r| r.round >= before);
    pool.ready = kept;
    pool.bytes -= unused.iter().map(|r| r.shape.bytes).sum::<usize>();
    drop(pool);
    // Freed outside the lock: returning big arrays to the system takes
    // syscalls, and applies look at the pool meanwhile.
    drop(unused);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apply_side_gives_up_on_a_lock_held_elsewhere() {
        let mutex = Mutex::new(0);
        let held = mutex.lock().unwrap();
        // Would block forever with `lock`.
        assert!(lock_briefly(&mutex).is_none());
        drop(held);
        assert_eq!(lock_briefly(&mutex).map(|g| *g), Some(0));
    }
}
