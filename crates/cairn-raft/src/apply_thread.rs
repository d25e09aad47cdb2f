//! A thread of its own, at background priority, for applies no client is
//! waiting for.
//!
//! A follower applies every entry, but nobody waits on that apply: the
//! leader answers its clients after its own apply (and a follower's
//! linearizable read waits only for entries committed before it). On the
//! benchmark machine three members share two cores, so a follower's
//! apply ran beside the leader's at the same priority and took its time
//! slices: a leader apply of 0.2-0.4 ms of CPU took 1.2-2.3 ms of wall
//! time now and then. Here it runs at [`BACKGROUND_NICE`], still at once
//! whenever a CPU is free.
//!
//! One thread per state machine, made on first use and kept: a thread
//! cannot raise its priority back once lowered, so the applies that
//! answer clients stay on the caller's thread.
//!
//! [`BACKGROUND_NICE`]: crate::thread_priority::BACKGROUND_NICE

use std::io;
use std::sync::mpsc;

use crate::thread_priority;

/// A job and where its result goes.
type Job = Box<dyn FnOnce() + Send>;

/// Jobs queued before the thread takes them: the state machine awaits
/// each apply before the next, so one is all it ever queues (a second
/// only if an apply was abandoned half way, which openraft does only when
/// it stops).
const QUEUED_JOBS: usize = 1;

pub(crate) struct ApplyThread {
    jobs: mpsc::SyncSender<Job>,
}

impl ApplyThread {
    /// Starts the thread, named `name`; it ends when this is dropped.
    pub(crate) fn start(name: &str) -> io::Result<ApplyThread> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUED_JOBS);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                thread_priority::yield_to_requests();
                while let Ok(job) = queue.recv() {
                    job();
                }
            })?;
        Ok(ApplyThread { jobs })
    }

    /// Runs `job` on the thread and waits for its result.
    pub(crate) async fn run<T, F>(&self, job: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        // The queue has room unless a previous call was abandoned before
        // its result: never wait for the thread on an async task.
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => io::Error::other("apply thread is busy"),
            mpsc::TrySendError::Disconnected(_) => io::Error::other("apply thread has stopped"),
        })?;
        result
            .await
            .map_err(|_| io::Error::other("apply thread ended without a result"))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::thread_priority::tests::nice_and_policy;

    #[tokio::test]
    async fn jobs_run_in_turn_on_one_niced_thread() {
        let thread = ApplyThread::start("cairn-test-apply").unwrap();
        let where_ = || (std::thread::current().id(), nice_and_policy().0);
        let first = thread.run(where_).await.unwrap();
        let second = thread.run(where_).await.unwrap();
        assert_eq!(first, second, "the same thread each time");
        assert_ne!(first.0, std::thread::current().id());
        assert_eq!(first.1, thread_priority::BACKGROUND_NICE as i64);
    }

    #[tokio::test]
    async fn a_job_that_panics_is_an_error_and_so_is_every_later_one() {
        let thread = ApplyThread::start("cairn-test-apply-panic").unwrap();
        let err = thread.run(|| panic!("boom")).await.unwrap_err();
        assert!(err.to_string().contains("without a result"), "{err}");
        // The thread is gone; a later job fails instead of waiting forever.
        let later = thread.run(|| 1).await;
        assert!(later.is_err());
    }
}
