//! The current Raft snapshot, in a file of its own next to the database.
//!
//! Why not a redb table: writing a snapshot of tens of megabytes is one
//! long redb write transaction with an fsync of all its pages, and redb has
//! one writer. The log's writer thread needs that lock for every group's
//! state rows, so every snapshot stalled all writes for hundreds of
//! milliseconds (put c=256 p99 210–270 ms with a snapshot every 10 000
//! entries, 41–49 ms with none). A file is written beside the database and
//! replaced atomically by rename.
//!
//! # Format
//!
//! ```text
//! magic "CAIRNSNP" | version: u32 LE | meta length: u32 LE | data length: u64 LE
//! | meta (postcard SnapshotMeta) | data | crc32 of everything before it: u32 LE
//! ```
//!
//! A file that does not parse or whose checksum fails is an error, never an
//! empty snapshot: members would otherwise be sent nothing as the state.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::types::{LogId, SnapshotMeta};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 8;
const FILE_NAME: &str = "current.snap";
const TMP_NAME: &str = "current.snap.tmp";

/// Where the current snapshot lives, and a lock that orders its writers.
#[derive(Debug)]
pub struct SnapshotFile {
    dir: PathBuf,
    /// Held while a snapshot is written; holds the log id of the one on
    /// disk. openraft builds snapshots in tasks of their own, so a build
    /// started before an install may finish after it: the older one must
    /// not replace the newer.
    saved: Mutex<Option<LogId>>,
}

fn corrupt(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot file {}: {what}", path.display()),
    )
}

impl SnapshotFile {
    /// Opens (creating) `dir` and reads which snapshot it holds.
    pub fn open(dir: &Path) -> io::Result<SnapshotFile> {
        fs::create_dir_all(dir)?;
        // A temporary file is a write a crash cut short.
        match fs::remove_file(dir.join(TMP_NAME)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = SnapshotFile {
            dir: dir.to_path_buf(),
            saved: Mutex::new(None),
        };
        let saved = file.load()?.and_then(|(meta, _)| meta.last_log_id);
        *file.saved.lock().map_err(|_| poisoned())? = saved;
        Ok(file)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The snapshot on disk, if any.
    pub fn load(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        decode(&path, &bytes).map(Some)
    }

    /// Makes `data` (the snapshot described by `meta`) the current one,
    /// durably, unless the one on disk is newer. Returns whether it was
    /// written.
    pub fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<bool> {
        let mut saved = self.saved.lock().map_err(|_| poisoned())?;
        if *saved > meta.last_log_id {
            return Ok(false);
        }
        let meta_bytes = postcard::to_allocvec(meta).map_err(io::Error::other)?;
        let mut header = Vec::with_capacity(HEADER_BYTES + meta_bytes.len());
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        header.extend_from_slice(&(data.len() as u64).to_le_bytes());
        header.extend_from_slice(&meta_bytes);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(data);

        let tmp = self.dir.join(TMP_NAME);
        let mut f = File::create(&tmp)?;
        f.write_all(&header)?;
        f.write_all(data)?;
        f.write_all(&crc.finalize().to_le_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.path())?;
        // The rename is durable once the directory is.
        File::open(&self.dir)?.sync_all()?;
        *saved = meta.last_log_id;
        Ok(true)
    }
}

fn poisoned() -> io::Error {
    io::Error::other("snapshot file: lock poisoned")
}

fn decode(path: &Path, bytes: &[u8]) -> io::Result<(SnapshotMeta, Vec<u8>)> {
    if bytes.len() < HEADER_BYTES + 4 || &bytes[..8] != MAGIC {
        return Err(corrupt(path, "not a Cairn snapshot file"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
    let version = u32_at(8);
    if version != VERSION {
        return Err(corrupt(path, &format!("unknown version {version}")));
    }
    let meta_len = u32_at(12) as usize;
    let data_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or([0; 8]));
    let expected = (HEADER_BYTES as u64)
        .checked_add(meta_len as u64)
        .and_then(|n| n.checked_add(data_len))
        .and_then(|n| n.checked_add(4));
    if expected != Some(bytes.len() as u64) {
        return Err(corrupt(path, "length does not match its header (torn?)"));
    }
    let body_end = bytes.len() - 4;
    if crc32fast::hash(&bytes[..body_end]) != u32_at(body_end) {
        return Err(corrupt(path, "checksum mismatch"));
    }
    let meta_end = HEADER_BYTES + meta_len;
    let meta: SnapshotMeta = postcard::from_bytes(&bytes[HEADER_BYTES..meta_end])
        .map_err(|e| corrupt(path, &format!("meta: {e}")))?;
    Ok((meta, bytes[meta_end..body_end].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LeaderId, StoredMembership};
    use openraft::vote::RaftLeaderId;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(
                <LeaderId as RaftLeaderId>::new(1, 1).to_committed(),
                index,
            )),
            last_membership: StoredMembership::default(),
        }
    }

    #[test]
    fn saves_and_loads_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::open(dir.path()).unwrap();
        assert!(f.load().unwrap().is_none());
        assert!(f.save(&meta(5), b"state at 5").unwrap());
        drop(f);
        let f = SnapshotFile::open(dir.path()).unwrap();
        let (m, data) = f.load().unwrap().unwrap();
        assert_eq!(m, meta(5));
        assert_eq!(data, b"state at 5");
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::open(dir.path()).unwrap();
        assert!(f.save(&meta(9), b"nine").unwrap());
        assert!(!f.save(&meta(4), b"four").unwrap());
        assert!(f.save(&meta(12), b"twelve").unwrap());
        // Also across a reopen.
        let f = SnapshotFile::open(dir.path()).unwrap();
        assert!(!f.save(&meta(10), b"ten").unwrap());
        assert_eq!(f.load().unwrap().unwrap().1, b"twelve");
    }

    #[test]
    fn damage_is_an_error_and_a_leftover_temporary_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::open(dir.path()).unwrap();
        f.save(&meta(3), b"some state bytes").unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = fs::read(&path).unwrap();
        fs::write(dir.path().join(TMP_NAME), b"half a wri").unwrap();
        assert!(SnapshotFile::open(dir.path()).is_ok());
        assert!(!dir.path().join(TMP_NAME).exists());

        let mut flipped = good.clone();
        let at = flipped.len() - 6;
        flipped[at] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let err = f.load().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");

        fs::write(&path, &good[..good.len() - 3]).unwrap();
        let err = SnapshotFile::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");

        fs::write(&path, b"CAIRNSNP").unwrap();
        assert!(f.load().is_err());
    }
}
