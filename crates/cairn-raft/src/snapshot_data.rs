//! A snapshot's bytes as openraft hands them around
//! (`RaftStateMachine::SnapshotData`).
//!
//! Why not `Cursor<Vec<u8>>`: a snapshot holds every record of the history,
//! and a member that built or sent one from a `Vec` held all of it in
//! memory at once, on top of the same records in its store; that buffer was
//! a member's peak memory.
//!
//! Why a snapshot may be [`SnapshotData::Unwritten`]: a member builds a
//! snapshot to purge its log, and only a follower that fell behind the
//! purged log ever reads one. Writing every snapshot out copied the whole
//! store (with its history) each time the log grew by `snapshot_entries`,
//! which cost 17 % of the puts at 256 clients (BENCHMARKS.md, session 24).
//! A built snapshot is a fixed view of the persisted state (a redb read
//! transaction), written to a file only when a leader sends it.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use crate::snapshot_file::SnapshotFile;

/// Writes a snapshot's data from a view that later writes do not change.
pub type WriteState = Box<dyn Fn(&mut dyn Write) -> io::Result<()> + Send + Sync>;

/// The data part of a snapshot.
#[derive(Clone)]
pub enum SnapshotData {
    /// `len` bytes at `offset` of an open snapshot file. The handle keeps
    /// the bytes readable when a newer snapshot replaces the file by rename.
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// Bytes received from a leader (or built by a test's state machine).
    Bytes(Vec<u8>),
    /// A state not written out yet; see [`SnapshotData::written`].
    Unwritten(Arc<Unwritten>),
}

/// A snapshot still in the state it was taken from.
pub struct Unwritten {
    /// Writes the data; holds the view (a read transaction) alive.
    write: WriteState,
    /// Where it is written to be sent.
    files: Arc<SnapshotFile>,
}

impl fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotData::File { offset, len, .. } => f
                .debug_struct("File")
                .field("offset", offset)
                .field("len", len)
                .finish(),
            SnapshotData::Bytes(b) => f.debug_tuple("Bytes").field(&b.len()).finish(),
            SnapshotData::Unwritten(_) => f.write_str("Unwritten"),
        }
    }
}

impl SnapshotData {
    /// A snapshot `write` produces when it is read; `files` says where it
    /// is written to be sent.
    pub fn unwritten(files: Arc<SnapshotFile>, write: WriteState) -> SnapshotData {
        SnapshotData::Unwritten(Arc::new(Unwritten { write, files }))
    }

    /// The data in a file or in memory, ready to be read in chunks: an
    /// unwritten snapshot is written to an unnamed file in the snapshot
    /// directory (gone when the last handle drops). Blocking: call it off
    /// the async runtime.
    pub fn written(self) -> io::Result<Written> {
        match self {
            SnapshotData::Unwritten(u) => u.files.write_unnamed(|out| (u.write)(out)),
            data => Ok(Written(data)),
        }
    }

    /// All the bytes, in memory (to install or inspect them). Blocking.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            SnapshotData::Unwritten(u) => {
                let mut bytes = Vec::new();
                (u.write)(&mut bytes)?;
                Ok(bytes)
            }
            data => Written(data).into_bytes(),
        }
    }
}

/// Snapshot data that is in a file or in memory (never
/// [`SnapshotData::Unwritten`]): its length is known and it reads in
/// chunks.
#[derive(Debug, Clone)]
pub struct Written(SnapshotData);

impl Written {
    /// `len` bytes at `offset` of `file`.
    pub(crate) fn file(file: File, offset: u64, len: u64) -> Written {
        Written(SnapshotData::File {
            file: Arc::new(file),
            offset,
            len,
        })
    }

    pub fn len(&self) -> u64 {
        match &self.0 {
            SnapshotData::File { len, .. } => *len,
            SnapshotData::Bytes(b) => b.len() as u64,
            SnapshotData::Unwritten(_) => unreachable!("Written holds written data"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` bytes from `pos`; empty at or past the end. Blocking for
    /// a file: call it off the async runtime.
    pub fn read_chunk(&self, pos: u64, max: usize) -> io::Result<Vec<u8>> {
        let end = pos.saturating_add(max as u64).min(self.len());
        let start = pos.min(end);
        match &self.0 {
            SnapshotData::File { file, offset, .. } => {
                let mut buf = vec![0; (end - start) as usize];
                file.read_exact_at(&mut buf, offset + start)?;
                Ok(buf)
            }
            SnapshotData::Bytes(b) => Ok(b[start as usize..end as usize].to_vec()),
            SnapshotData::Unwritten(_) => unreachable!("Written holds written data"),
        }
    }

    /// All the bytes, in memory.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        if let SnapshotData::Bytes(b) = self.0 {
            return Ok(b);
        }
        let len = usize::try_from(self.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::OutOfMemory, "snapshot too large to read")
        })?;
        self.read_chunk(0, len)
    }

    /// The data, to hand back to openraft.
    pub fn into_data(self) -> SnapshotData {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn chunks_of_a_file_and_of_bytes_read_the_same() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(b"headerDATA-BYTES!trailer").unwrap();
        let file = SnapshotData::File {
            file: Arc::new(tmp),
            offset: 6,
            len: 11,
        }
        .written()
        .unwrap();
        let bytes = SnapshotData::Bytes(b"DATA-BYTES!".to_vec())
            .written()
            .unwrap();
        for data in [&file, &bytes] {
            assert_eq!(data.len(), 11);
            assert_eq!(data.read_chunk(0, 4).unwrap(), b"DATA");
            assert_eq!(data.read_chunk(8, 4).unwrap(), b"ES!");
            assert_eq!(data.read_chunk(11, 4).unwrap(), b"");
            assert_eq!(data.read_chunk(40, 4).unwrap(), b"");
        }
        assert_eq!(file.into_bytes().unwrap(), b"DATA-BYTES!");
    }

    #[test]
    fn an_unwritten_snapshot_is_written_only_when_read_into_a_file_that_leaves_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(SnapshotFile::open(dir.path()).unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let data = SnapshotData::unwritten(
            files.clone(),
            Box::new(move |out| {
                counted.fetch_add(1, Ordering::Relaxed);
                out.write_all(b"the state")
            }),
        );
        let copy = data.clone();
        assert_eq!(calls.load(Ordering::Relaxed), 0, "not written when made");
        let written = data.written().unwrap();
        assert_eq!(written.len(), 9);
        assert_eq!(written.read_chunk(4, 100).unwrap(), b"state");
        assert_eq!(files.written_bytes(), 9);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the file has no name: nothing to clean up after a crash"
        );
        assert_eq!(copy.into_bytes().unwrap(), b"the state");
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_failed_write_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(SnapshotFile::open(dir.path()).unwrap());
        let data = SnapshotData::unwritten(
            files,
            Box::new(|out| {
                out.write_all(b"half")?;
                Err(io::Error::other("the view failed"))
            }),
        );
        let err = data.clone().written().unwrap_err();
        assert!(err.to_string().contains("the view failed"), "{err}");
        assert!(data.into_bytes().is_err());
    }
}
