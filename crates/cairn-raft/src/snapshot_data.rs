//! A snapshot's bytes as openraft hands them around
//! (`RaftStateMachine::SnapshotData`).
//!
//! Why not `Cursor<Vec<u8>>`: a snapshot holds every record of the history,
//! and a member that built or sent one from a `Vec` held all of it in
//! memory at once, on top of the same records in its store; that buffer was
//! a member's peak memory. A snapshot built here stays in its file, and
//! leaders send it from there chunk by chunk. Only a snapshot received from
//! a leader is whole in memory, because installing it decodes all of it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

/// The data part of a snapshot.
#[derive(Debug, Clone)]
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
}

impl SnapshotData {
    pub fn len(&self) -> u64 {
        match self {
            SnapshotData::File { len, .. } => *len,
            SnapshotData::Bytes(b) => b.len() as u64,
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
        match self {
            SnapshotData::File { file, offset, .. } => {
                let mut buf = vec![0; (end - start) as usize];
                file.read_exact_at(&mut buf, offset + start)?;
                Ok(buf)
            }
            SnapshotData::Bytes(b) => Ok(b[start as usize..end as usize].to_vec()),
        }
    }

    /// All the bytes, in memory (to install or inspect them).
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            SnapshotData::Bytes(b) => Ok(b),
            SnapshotData::File { .. } => {
                let len = usize::try_from(self.len()).map_err(|_| {
                    io::Error::new(io::ErrorKind::OutOfMemory, "snapshot too large to read")
                })?;
                self.read_chunk(0, len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn chunks_of_a_file_and_of_bytes_read_the_same() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(b"headerDATA-BYTES!trailer").unwrap();
        let file = SnapshotData::File {
            file: Arc::new(tmp),
            offset: 6,
            len: 11,
        };
        let bytes = SnapshotData::Bytes(b"DATA-BYTES!".to_vec());
        for data in [&file, &bytes] {
            assert_eq!(data.len(), 11);
            assert_eq!(data.read_chunk(0, 4).unwrap(), b"DATA");
            assert_eq!(data.read_chunk(8, 4).unwrap(), b"ES!");
            assert_eq!(data.read_chunk(11, 4).unwrap(), b"");
            assert_eq!(data.read_chunk(40, 4).unwrap(), b"");
        }
        assert_eq!(file.into_bytes().unwrap(), b"DATA-BYTES!");
    }
}
