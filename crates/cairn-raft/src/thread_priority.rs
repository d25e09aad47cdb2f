//! Lower CPU priority for threads that do work ahead of or behind requests.
//!
//! Three members share two cores in the benchmarks, and a request waits
//! for threads of every member in turn (log writes, applies). Background
//! work running beside them at the same priority delays the request by
//! its time slices. 1-client offload/1000 p99, A B on fresh clusters
//! (BENCHMARKS.md, session 17): with the claims spare-array maker at
//! normal priority 2.93-6.86 ms over five runs, in `SCHED_IDLE`
//! 2.88-3.19; then with the durable checkpoints at nice 10 instead of 0,
//! 2.68-2.85 against 2.74-3.63 over four. Only on Linux; a call the
//! system refuses is logged at debug level and changes nothing else.

/// Linux's `SCHED_IDLE`: the calling thread runs only when a CPU has
/// nothing else to do. For work that may also never be done (it only
/// saves the request path a cost it can pay itself).
pub fn run_only_when_idle() {
    #[cfg(target_os = "linux")]
    set_policy(libc::SCHED_IDLE, "SCHED_IDLE");
}

/// Linux's `SCHED_BATCH`: waking the calling thread does not preempt the
/// thread that woke it (or any other); it runs once a CPU is free or the
/// running thread's time slice ends, at the same share of CPU as before.
/// For the log's writer, a group commit: the thread that queued an append
/// goes on to send the entries to the followers and to queue more appends,
/// which the writer then syncs together.
///
/// On the 2-CPU VM of BENCHMARKS.md, where a woken thread is kept on its
/// waker's CPU and preempted it, the writer woken for each append took the
/// runtime's thread off its CPU before the entries went to the followers.
/// With the writer in `SCHED_BATCH` (session 20, two pairs on fresh
/// clusters): puts at 64 clients 18.2K / 18.2K against 16.4K / 15.3K per
/// second and 77 against 86–91 µs of server CPU each, the watch row's
/// puts +12–17 %, 1-client puts to the leader 1.81–1.89K against
/// 1.69–1.87K; at 256 clients +3–7 % throughput but p99 27–29 against
/// 23.5 ms (still below etcd's); 1-client claims p99 unchanged. The cost
/// is the slice: on a CPU kept busy by other threads, a sync may start up
/// to a scheduler tick later.
pub fn wake_without_preempting() {
    #[cfg(target_os = "linux")]
    set_policy(libc::SCHED_BATCH, "SCHED_BATCH");
}

/// Moves the calling thread to the non-real-time `policy` (named `what`
/// in the log if the system refuses).
#[cfg(target_os = "linux")]
fn set_policy(policy: libc::c_int, what: &str) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a syscall on the calling thread (pid 0) with a valid,
    // initialised parameter; it reads nothing else.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc != 0 {
        tracing::debug!("{what}: {}", std::io::Error::last_os_error());
    }
}

/// Nice value of [`yield_to_requests`]: a tenth of a normal thread's CPU
/// share under contention, so the work still ends soon on a busy machine.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread to [`BACKGROUND_NICE`]: for work that must
/// get done, but not ahead of a request.
pub fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on our own
        // thread id reads nothing else. (On Linux a nice value is per
        // thread.)
        let rc = unsafe {
            let tid = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE)
        };
        if rc != 0 {
            tracing::debug!(
                "nice {BACKGROUND_NICE}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Runs `job` on a thread of its own named `name`, lowered with
/// [`yield_to_requests`], and waits for its result. For rare, long jobs
/// (building a snapshot): tokio's blocking pool reuses its threads, and
/// an unprivileged thread cannot raise its priority back.
pub async fn run_in_background<T, F>(name: &str, job: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            yield_to_requests();
            let _ = done.send(job());
        })?;
    result
        .await
        .map_err(|_| std::io::Error::other(format!("{name}: thread ended without a result")))
}

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    use super::*;

    /// Fields 19 (nice) and 41 (policy) of `/proc/thread-self/stat`.
    pub(crate) fn nice_and_policy() -> (i64, u32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The fields after the command name (which ends at the last ')')
        // start at field 3.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (
            fields[19 - 3].parse().unwrap(),
            fields[41 - 3].parse().unwrap(),
        )
    }

    #[tokio::test]
    async fn a_background_job_runs_niced_on_its_own_thread() {
        let (nice, name) = run_in_background("cairn-test-job", || {
            (
                nice_and_policy().0,
                std::thread::current().name().map(str::to_owned),
            )
        })
        .await
        .unwrap();
        assert_eq!(nice, BACKGROUND_NICE as i64);
        assert_eq!(name.as_deref(), Some("cairn-test-job"));
    }

    #[tokio::test]
    async fn a_background_job_that_panics_is_an_error() {
        let res: std::io::Result<()> =
            run_in_background("cairn-test-panic", || panic!("boom")).await;
        assert!(res.unwrap_err().to_string().contains("without a result"));
    }

    #[test]
    fn an_idle_thread_is_in_sched_idle() {
        let policy = std::thread::spawn(|| {
            assert_eq!(nice_and_policy().1, libc::SCHED_OTHER as u32);
            run_only_when_idle();
            nice_and_policy().1
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE as u32);
    }

    #[test]
    fn a_thread_that_wakes_without_preempting_is_in_sched_batch_at_its_nice() {
        let (nice, policy) = std::thread::spawn(|| {
            wake_without_preempting();
            nice_and_policy()
        })
        .join()
        .unwrap();
        assert_eq!(
            (nice, policy),
            (nice_and_policy().0, libc::SCHED_BATCH as u32)
        );
        assert_eq!(nice_and_policy().1, libc::SCHED_OTHER as u32);
    }

    #[test]
    fn a_background_thread_is_niced_and_others_are_not() {
        let (nice, policy) = std::thread::spawn(|| {
            yield_to_requests();
            nice_and_policy()
        })
        .join()
        .unwrap();
        assert_eq!(
            (nice, policy),
            (BACKGROUND_NICE as i64, libc::SCHED_OTHER as u32)
        );
        assert_eq!(nice_and_policy().0, 0, "only the calling thread");
    }
}
