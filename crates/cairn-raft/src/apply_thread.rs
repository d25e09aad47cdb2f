//! Threads of their own for applies that should not run on the async
//! runtime's thread: at background priority for applies no client is
//! waiting for, at normal priority for long ones a client waits for.
//!
//! A follower applies every entry, but nobody waits on that apply: the
//! leader answers its clients after its own apply (and a follower's
//! linearizable read waits only for entries committed before it). On the
//! benchmark machine three members share two cores, so a follower's
//! apply ran beside the leader's at the same priority and took its time
//! slices: a leader apply of 0.2-0.4 ms of CPU took 1.2-2.3 ms of wall
//! time now and then. Such applies run at [`BACKGROUND_NICE`], still at
//! once whenever a CPU is free.
//!
//! A long apply a client waits for runs at normal priority, but off the
//! runtime: a member's runtime may have a single worker thread (see
//! `cairn serve --worker-threads`), and a batch of many thousand claims
//! keys held it for milliseconds, so no request was read and no entry
//! replicated meanwhile.
//!
//! One thread per state machine and kind, made on first use and kept: a
//! thread cannot raise its priority back once lowered, so the applies that
//! answer clients never run on the background one.
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

/// Whom an [`ApplyThread`]'s applies hold up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Nobody waits: give way to everything else.
    Background,
    /// A client waits: as urgent as the rest of the member's work.
    Normal,
}

impl ApplyThread {
    /// Starts the thread, named `name`; it ends when this is dropped.
    pub(crate) fn start(name: &str, priority: Priority) -> io::Result<ApplyThread> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUED_JOBS);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if priority == Priority::Background {
                    thread_priority::yield_to_requests();
                }
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
        let thread = ApplyThread::start("cairn-test-apply", Priority::Background).unwrap();
        let where_ = || (std::thread::current().id(), nice_and_policy().0);
        let first = thread.run(where_).await.unwrap();
        let second = thread.run(where_).await.unwrap();
        assert_eq!(first, second, "the same thread each time");
        assert_ne!(first.0, std::thread::current().id());
        assert_eq!(first.1, thread_priority::BACKGROUND_NICE as i64);

        let normal = ApplyThread::start("cairn-test-now", Priority::Normal).unwrap();
        let (on, nice) = normal.run(where_).await.unwrap();
        assert_ne!(on, std::thread::current().id());
        assert_eq!(
            nice,
            nice_and_policy().0,
            "applies a client waits for keep the member's priority"
        );
    }

    #[tokio::test]
    async fn a_job_that_panics_is_an_error_and_so_is_every_later_one() {
        let thread = ApplyThread::start("cairn-test-apply-panic", Priority::Background).unwrap();
        let err = thread.run(|| panic!("boom")).await.unwrap_err();
        assert!(err.to_string().contains("without a result"), "{err}");
        // The thread is gone; a later job fails instead of waiting forever.
        let later = thread.run(|| 1).await;
        assert!(later.is_err());
    }
}
