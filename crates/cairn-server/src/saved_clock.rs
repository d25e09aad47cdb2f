//! A member's cluster-time estimate, saved to a file so that a restart
//! resumes from it plus the wall-clock time since (see `clock.rs`).
//!
//! Why a file of its own: a restarted member otherwise starts from the
//! store time in its durable rows plus the time since its data file was
//! last written. Those rows lag the log by up to a checkpoint, and starting
//! writes to the file. When the whole cluster crashed again before a leader
//! stamped a new time, every member lost the previous crash's downtime
//! and its own run, and leases lived that much longer: a 30 s lease read
//! 29 s left when 25.4 s were (`process_crash.rs`,
//! `a_lease_counts_down_through_two_crashes_in_a_row`), and cairn-chaos
//! `--faults kill-majority,kill-all --seed 703` saw a 3 s lease report
//! 1 s left 4.5 s after its last keep-alive, after two crashes of the
//! whole cluster 1.6 s apart.
//!
//! Every member saves its estimate at each tick interval while its clock
//! runs, and once at start. The file is replaced by a rename and not
//! synced: after a power loss it may hold an older estimate or nothing, and
//! an older estimate plus the time since it was taken is still a time the
//! cluster had reached.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a member's clock is saved.
#[derive(Debug)]
pub struct SavedClock {
    path: PathBuf,
    /// A background save is under way: the next is skipped, not queued.
    saving: AtomicBool,
    /// When a failed save was last logged.
    failure_logged: Mutex<Option<Instant>>,
}

/// The file: estimate (ms), wall-clock time it was taken at (ms since the
/// Unix epoch), check value; each a little-endian u64.
const FILE_BYTES: usize = 24;
/// Mixed into the check value, so that zeros do not pass for a record.
const MAGIC: u64 = 0x6361_6972_6e63_6c6b;

fn check(estimate_ms: u64, wall_ms: u64) -> u64 {
    estimate_ms ^ wall_ms.rotate_left(17) ^ MAGIC
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

impl SavedClock {
    pub fn new(data_dir: &Path) -> Self {
        SavedClock {
            path: data_dir.join("clock"),
            saving: AtomicBool::new(false),
            failure_logged: Mutex::new(None),
        }
    }

    /// The saved estimate plus the wall-clock time since it was saved, at
    /// most `cap_ms` of it (a wall clock that jumped ahead must not expire
    /// leases early by more); `None` without a valid file.
    pub fn load(&self, cap_ms: u64) -> Option<u64> {
        let bytes = std::fs::read(&self.path).ok()?;
        let bytes: [u8; FILE_BYTES] = bytes.try_into().ok()?;
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        let (estimate_ms, saved_at_ms) = (field(0), field(1));
        if field(2) != check(estimate_ms, saved_at_ms) {
            return None;
        }
        let since_ms = wall_ms(SystemTime::now()).saturating_sub(saved_at_ms);
        Some(estimate_ms.saturating_add(since_ms.min(cap_ms)))
    }

    /// Saves `estimate_ms` as the estimate now.
    fn save(&self, estimate_ms: u64) -> io::Result<()> {
        self.save_at(estimate_ms, SystemTime::now())
    }

    /// [`save`](Self::save) on a blocking thread: a file write and a
    /// rename may wait for a busy disk, and a member's async runtime may
    /// have one thread. Skipped while the previous one is under way (the
    /// estimate is taken earlier than the time saved with it, so a late
    /// save only undercounts). Failures are logged at most every
    /// [`SAVE_FAILURE_LOG_INTERVAL`]. Needs a Tokio runtime.
    pub fn save_in_background(self: &Arc<Self>, estimate_ms: u64) {
        if self.saving.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.save(estimate_ms) {
                let mut logged = this
                    .failure_logged
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if logged.is_none_or(|t| t.elapsed() >= SAVE_FAILURE_LOG_INTERVAL) {
                    tracing::warn!("saving the cluster clock: {e}");
                    *logged = Some(Instant::now());
                }
            }
            this.saving.store(false, Ordering::Release);
        });
    }

    fn save_at(&self, estimate_ms: u64, at: SystemTime) -> io::Result<()> {
        let at_ms = wall_ms(at);
        let mut bytes = [0u8; FILE_BYTES];
        bytes[..8].copy_from_slice(&estimate_ms.to_le_bytes());
        bytes[8..16].copy_from_slice(&at_ms.to_le_bytes());
        bytes[16..].copy_from_slice(&check(estimate_ms, at_ms).to_le_bytes());
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// How often at most a failed save is logged (it is retried every tick).
const SAVE_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_estimate_comes_back_with_the_time_since() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedClock::new(dir.path());
        assert_eq!(saved.load(10_000), None, "nothing saved");
        saved
            .save_at(5_000, SystemTime::now() - Duration::from_secs(3))
            .unwrap();
        let loaded = saved.load(10_000).unwrap();
        assert!((8_000..9_000).contains(&loaded), "{loaded}");
        assert_eq!(saved.load(1_000), Some(6_000), "the time since is capped");
        // The newest save replaces the last.
        saved.save(7_000).unwrap();
        let loaded = saved.load(10_000).unwrap();
        assert!((7_000..7_500).contains(&loaded), "{loaded}");
    }

    #[tokio::test]
    async fn a_background_save_lands_and_a_second_one_meanwhile_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let saved = Arc::new(SavedClock::new(dir.path()));
        saved.saving.store(true, Ordering::Release);
        saved.save_in_background(1_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(saved.load(0), None, "skipped while one is under way");
        saved.saving.store(false, Ordering::Release);
        saved.save_in_background(2_000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while saved.load(0).is_none() {
            assert!(Instant::now() < deadline, "the save never landed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(saved.load(0), Some(2_000));
    }

    #[test]
    fn a_save_from_the_future_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedClock::new(dir.path());
        saved
            .save_at(5_000, SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        assert_eq!(saved.load(10_000), Some(5_000));
    }

    #[test]
    fn a_damaged_or_short_file_is_no_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedClock::new(dir.path());
        saved.save(5_000).unwrap();
        let path = dir.path().join("clock");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(saved.load(10_000), None, "one bit flipped");
        std::fs::write(&path, [0u8; FILE_BYTES]).unwrap();
        assert_eq!(saved.load(10_000), None, "zeros");
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(saved.load(10_000), None, "torn");
    }
}
