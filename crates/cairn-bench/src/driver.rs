//! The closed-loop driver: N client tasks each issue one operation at a
//! time until the time limit, the operation count or a stop request ends
//! the run. Every operation has its own timeout, and the whole run is cut
//! off shortly after its deadline, so nothing can hang.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::hist::Latency;

/// Set by Ctrl-C: every loop stops at its next check.
static STOP: AtomicBool = AtomicBool::new(false);

pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// One client's operation. `op` returns the error text on failure.
pub trait Worker: Send + 'static {
    fn op(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Run at most this long.
    pub duration: Duration,
    /// Run at most this many operations in all (0: no limit).
    pub count: u64,
    /// Pace operations to this many per second in all (0: as fast as the
    /// clients go).
    pub rate: f64,
    /// Give up on one operation after this long (counted as an error).
    pub op_timeout: Duration,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub latency: Latency,
    /// Successful operations.
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the start until the last operation finished.
    pub elapsed: Duration,
}

#[derive(Default)]
struct ClientResult {
    latency: Latency,
    ops: u64,
    errors: u64,
    first_error: Option<(Instant, String)>,
}

/// Run `workers` concurrently, one task each, within `limits`.
pub async fn drive<W: Worker>(workers: Vec<W>, limits: Limits) -> Outcome {
    let start = Instant::now();
    let deadline = start + limits.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for mut w in workers {
        let issued = issued.clone();
        set.spawn(async move {
            let mut res = ClientResult::default();
            loop {
                if stop_requested() || Instant::now() >= deadline {
                    break;
                }
                let k = issued.fetch_add(1, Ordering::Relaxed);
                if limits.count > 0 && k >= limits.count {
                    break;
                }
                if limits.rate > 0.0 {
                    let at = start + Duration::from_secs_f64(k as f64 / limits.rate);
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                let t0 = Instant::now();
                let r = match tokio::time::timeout(limits.op_timeout, w.op()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {:?}", limits.op_timeout)),
                };
                match r {
                    Ok(()) => {
                        res.latency.record(t0.elapsed());
                        res.ops += 1;
                    }
                    Err(e) => {
                        res.errors += 1;
                        if res.first_error.is_none() {
                            res.first_error = Some((Instant::now(), e));
                        }
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            res
        });
    }
    // Each task stops by the deadline plus one operation timeout; cut off
    // anything that has not.
    let hard_stop = deadline + limits.op_timeout + Duration::from_secs(2);
    let mut out = Outcome::default();
    let mut first: Option<(Instant, String)> = None;
    loop {
        let next = tokio::time::timeout_at(hard_stop.into(), set.join_next()).await;
        match next {
            Ok(Some(Ok(res))) => {
                out.latency.merge(&res.latency);
                out.ops += res.ops;
                out.errors += res.errors;
                if let Some((t, e)) = res.first_error {
                    if first.as_ref().is_none_or(|(ft, _)| t < *ft) {
                        first = Some((t, e));
                    }
                }
            }
            Ok(Some(Err(e))) => {
                out.errors += 1;
                first.get_or_insert((Instant::now(), format!("client task failed: {e}")));
            }
            Ok(None) => break,
            Err(_) => {
                let n = set.len() as u64;
                set.abort_all();
                out.errors += n;
                first.get_or_insert((Instant::now(), format!("{n} clients did not stop in time")));
                break;
            }
        }
    }
    out.elapsed = start.elapsed();
    out.first_error = first.map(|(_, e)| e);
    out
}

/// Small, fast, seedable generator (splitmix64) for keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the clock and a per-client number.
    pub fn for_client(i: usize) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(t ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleepy {
        every: u64,
        n: u64,
        ms: u64,
    }

    impl Worker for Sleepy {
        async fn op(&mut self) -> Result<(), String> {
            self.n += 1;
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
            if self.every > 0 && self.n.is_multiple_of(self.every) {
                Err(format!("op {} failed", self.n))
            } else {
                Ok(())
            }
        }
    }

    fn limits(duration_ms: u64, count: u64) -> Limits {
        Limits {
            duration: Duration::from_millis(duration_ms),
            count,
            rate: 0.0,
            op_timeout: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn count_bounds_the_run() {
        let ws = (0..4)
            .map(|_| Sleepy {
                every: 0,
                n: 0,
                ms: 1,
            })
            .collect();
        let out = drive(ws, limits(10_000, 50)).await;
        assert_eq!(out.ops, 50);
        assert_eq!(out.errors, 0);
        assert_eq!(out.latency.count(), 50);
        assert!(out.elapsed < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn duration_bounds_the_run_and_errors_are_counted() {
        let ws = (0..2)
            .map(|_| Sleepy {
                every: 2,
                n: 0,
                ms: 5,
            })
            .collect();
        let out = drive(ws, limits(300, 0)).await;
        assert!(out.elapsed >= Duration::from_millis(300));
        assert!(out.elapsed < Duration::from_secs(2), "{:?}", out.elapsed);
        assert!(out.ops > 0 && out.errors > 0, "{out:?}");
        assert!(out.first_error.unwrap().ends_with("failed"));
    }

    #[tokio::test]
    async fn slow_operations_time_out_as_errors() {
        let ws = vec![Sleepy {
            every: 0,
            n: 0,
            ms: 1_000,
        }];
        let out = drive(ws, limits(300, 0)).await;
        assert_eq!(out.ops, 0);
        assert!(out.errors >= 1);
        assert!(out.first_error.unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn rate_paces_operations() {
        let ws = (0..4)
            .map(|_| Sleepy {
                every: 0,
                n: 0,
                ms: 0,
            })
            .collect();
        let mut l = limits(500, 0);
        l.rate = 40.0;
        let out = drive(ws, l).await;
        // 40/s for 0.5 s: 20 operations, give or take the edges.
        assert!((18..=21).contains(&out.ops), "{}", out.ops);
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
    }
}
