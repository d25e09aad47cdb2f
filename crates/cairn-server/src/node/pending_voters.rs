//! Members added as voters that still have to become voters, kept on disk.
//!
//! A voter added to a cluster of one joins as a learner and is promoted
//! once it has caught up (members.rs, `VoterJoins::OnceCaughtUp`): the
//! change that adds it cannot commit without its vote, and `member add`
//! answers before that member starts. The promise "this member will vote"
//! was held by a task on the leader alone, so a leader restarted before
//! the new member caught up forgot it, and the member stayed a learner
//! with nobody saying so. The IDs are now written here, synced, before
//! `member add` answers, and whichever run of this member leads promotes
//! them (`members::promote_pending_voters`) until they vote or are removed.
//!
//! Only the member that took the `member add` holds the promise. In a
//! cluster of one that is the only voter, so the only possible leader.
//!
//! The file is `<data-dir>/pending_voters`, one member ID in hex a line,
//! replaced whole by a rename after a sync of the new copy and then of the
//! directory, so a crash leaves the old list or the new one.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::Notify;

const FILE: &str = "pending_voters";

/// The IDs to promote, as on disk.
#[derive(Debug)]
pub struct PendingVoters {
    path: PathBuf,
    /// What the file holds; changed only after the file was.
    ids: Mutex<BTreeSet<u64>>,
    /// Raised when an ID is added, so the promoting task looks at once.
    pub(super) added: Notify,
}

impl PendingVoters {
    /// Reads the list in `data_dir` (empty when there is no file). A file
    /// that does not parse is an error naming it: the writes are atomic, so
    /// it was not left half-written by a crash.
    pub fn open(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join(FILE);
        let ids = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(PendingVoters {
            path,
            ids: Mutex::new(ids),
            added: Notify::new(),
        })
    }

    pub fn ids(&self) -> BTreeSet<u64> {
        self.lock().clone()
    }

    /// Adds `id`, durably, before returning.
    pub fn add(&self, id: u64) -> io::Result<()> {
        let mut ids = self.lock();
        if ids.contains(&id) {
            return Ok(());
        }
        let mut next = ids.clone();
        next.insert(id);
        self.write(&next)?;
        *ids = next;
        drop(ids);
        self.added.notify_one();
        Ok(())
    }

    /// Drops `id` (promoted, or no longer a member).
    pub fn remove(&self, id: u64) -> io::Result<()> {
        let mut ids = self.lock();
        if !ids.contains(&id) {
            return Ok(());
        }
        let mut next = ids.clone();
        next.remove(&id);
        self.write(&next)?;
        *ids = next;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, ids: &BTreeSet<u64>) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for id in ids {
            text.push_str(&format!("{id:x}\n"));
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

fn parse(text: &str) -> Result<BTreeSet<u64>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| u64::from_str_radix(l, 16).map_err(|e| format!("bad member ID {l:?}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_reopen_and_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let p = PendingVoters::open(dir.path()).unwrap();
        assert!(p.ids().is_empty());
        p.add(0xabc).unwrap();
        p.add(7).unwrap();
        p.add(7).unwrap();
        assert_eq!(
            PendingVoters::open(dir.path()).unwrap().ids(),
            BTreeSet::from([7, 0xabc])
        );
        p.remove(0xabc).unwrap();
        p.remove(0xdead).unwrap();
        assert_eq!(
            PendingVoters::open(dir.path()).unwrap().ids(),
            BTreeSet::from([7])
        );
    }

    #[test]
    fn a_copy_left_by_a_crash_before_the_rename_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = PendingVoters::open(dir.path()).unwrap();
        p.add(1).unwrap();
        std::fs::write(dir.path().join("pending_voters.tmp"), "2\n").unwrap();
        assert_eq!(
            PendingVoters::open(dir.path()).unwrap().ids(),
            BTreeSet::from([1])
        );
    }

    #[test]
    fn a_file_that_does_not_parse_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "12\nnot-an-id\n").unwrap();
        let err = PendingVoters::open(dir.path()).unwrap_err();
        assert!(
            err.contains("pending_voters") && err.contains("not-an-id"),
            "{err}"
        );
    }
}
