//! Snapshot files, next to the database: the one a leader last sent this
//! member (kept until its rows are written, and across a crash before),
//! and the unnamed ones a leader writes to send a snapshot
//! ([`SnapshotFile::write_unnamed`]).
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
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::snapshot_data::Written;
use crate::types::{LogId, SnapshotMeta};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 8;
const FILE_NAME: &str = "current.snap";
const TMP_NAME: &str = "current.snap.tmp";
/// Block size for writing and checking a snapshot file.
const BLOCK_BYTES: usize = 1024 * 1024;
/// Snapshot bytes written between two syncs of the file while it is made.
/// A whole snapshot left dirty for one sync at the end was written back in
/// bulk under the log's fsyncs, which on ext4 can wait for it: the log's
/// commits (and every watch event) stalled while a snapshot was saved.
const SYNC_EVERY_BYTES: u64 = 4 * 1024 * 1024;

/// Where the current snapshot lives, and a lock that orders its writers.
#[derive(Debug)]
pub struct SnapshotFile {
    dir: PathBuf,
    /// Held while a snapshot is saved; holds the log id of the one on
    /// disk (`None`: no file). Saves may race (an install and a migration
    /// at open): an older snapshot must not replace a newer one.
    saved: Mutex<Option<Option<LogId>>>,
    /// The data length of the last snapshot written here, saved or sent
    /// (0 for none), for `/metrics`.
    written_bytes: AtomicU64,
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
            written_bytes: AtomicU64::new(0),
        };
        if let Some((meta, data)) = file.load()? {
            *file.saved.lock().map_err(|_| poisoned())? = Some(meta.last_log_id);
            file.written_bytes.store(data.len(), Ordering::Relaxed);
        }
        Ok(file)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The snapshot on disk, if any: its meta and its data, left in the
    /// file. The whole file's checksum is verified first, reading it in
    /// blocks.
    pub fn load(&self) -> io::Result<Option<(SnapshotMeta, Written)>> {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        verify(&path, file).map(Some)
    }

    /// Makes `data` (the snapshot described by `meta`) the current one,
    /// durably, unless the one on disk is newer. Returns whether it was
    /// written.
    pub fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<bool> {
        Ok(self.save_with(meta, |w| w.write_all(data))?.is_some())
    }

    /// Like [`SnapshotFile::save`], with the data written by `fill` straight
    /// into the file: a snapshot is never whole in memory while it is made.
    /// Returns the data as written (in the file), if it was.
    pub fn save_with(
        &self,
        meta: &SnapshotMeta,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Option<Written>> {
        let mut saved = self.saved.lock().map_err(|_| poisoned())?;
        if *saved > Some(meta.last_log_id) {
            return Ok(None);
        }
        let tmp = self.dir.join(TMP_NAME);
        let data = match write_file(&tmp, meta, fill) {
            Ok(data) => data,
            Err(e) => {
                // Best effort: open() removes a leftover anyway.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, self.path())?;
        // The rename is durable once the directory is.
        File::open(&self.dir)?.sync_all()?;
        *saved = Some(meta.last_log_id);
        self.written_bytes.store(data.len(), Ordering::Relaxed);
        Ok(Some(data))
    }

    /// The log id of the snapshot on disk; `None` if there is none.
    pub fn saved_log_id(&self) -> io::Result<Option<Option<LogId>>> {
        Ok(*self.saved.lock().map_err(|_| poisoned())?)
    }

    /// Writes the data `fill` produces to a file without a name in this
    /// directory, to be sent: it is gone once the last handle drops, and a
    /// crash leaves nothing behind. Synced on the way like a saved
    /// snapshot (see [`SYNC_EVERY_BYTES`]), though nothing needs it to
    /// survive a crash.
    pub fn write_unnamed(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Written> {
        let f = tempfile::tempfile_in(&self.dir)?;
        let len = {
            let mut data = DataWriter::new(&f);
            fill(&mut data)?;
            data.out.flush()?;
            data.len
        };
        self.written_bytes.store(len, Ordering::Relaxed);
        Ok(Written::file(f, 0, len))
    }

    /// The data length of the last snapshot saved or written to be sent; 0
    /// if there is none.
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes.load(Ordering::Relaxed)
    }
}

/// Writes a whole snapshot file at `path`, fsynced; returns its data, read
/// through the same handle. The data's length is known only at its end,
/// so the header is written with a zero length and patched; the checksum
/// of header and data is combined from the two.
fn write_file(
    path: &Path,
    meta: &SnapshotMeta,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Written> {
    let meta_bytes = postcard::to_allocvec(meta).map_err(io::Error::other)?;
    let mut header = Vec::with_capacity(HEADER_BYTES + meta_bytes.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header.extend_from_slice(&meta_bytes);

    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(&header)?;
    let (data_crc, data_len) = {
        let mut data = DataWriter::new(&f);
        fill(&mut data)?;
        data.out.flush()?;
        (data.crc, data.len)
    };

    header[16..24].copy_from_slice(&data_len.to_le_bytes());
    f.write_all_at(&header[16..24], 16)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.combine(&data_crc);
    // `write_all_at` left the position at the data's end.
    f.write_all(&crc.finalize().to_le_bytes())?;
    f.sync_all()?;
    Ok(Written::file(f, header.len() as u64, data_len))
}

/// Counts and checksums the data on its way to the file, and syncs the
/// file every [`SYNC_EVERY_BYTES`].
struct DataWriter<'a> {
    out: BufWriter<&'a File>,
    crc: crc32fast::Hasher,
    len: u64,
    /// `len` at the last sync.
    synced_len: u64,
}

impl<'a> DataWriter<'a> {
    fn new(file: &'a File) -> Self {
        DataWriter {
            out: BufWriter::with_capacity(BLOCK_BYTES, file),
            crc: crc32fast::Hasher::new(),
            len: 0,
            synced_len: 0,
        }
    }
}

impl Write for DataWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        if self.len - self.synced_len >= SYNC_EVERY_BYTES {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
            self.synced_len = self.len;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn poisoned() -> io::Error {
    io::Error::other("snapshot file: lock poisoned")
}

/// Checks a snapshot file's header, length and checksum; returns its meta
/// and where its data is.
fn verify(path: &Path, file: File) -> io::Result<(SnapshotMeta, Written)> {
    let file_len = file.metadata()?.len();
    let mut header = [0u8; HEADER_BYTES];
    if file_len < (HEADER_BYTES + 4) as u64 {
        return Err(corrupt(path, "not a Cairn snapshot file"));
    }
    file.read_exact_at(&mut header, 0)?;
    if &header[..8] != MAGIC {
        return Err(corrupt(path, "not a Cairn snapshot file"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or([0; 4]));
    let version = u32_at(8);
    if version != VERSION {
        return Err(corrupt(path, &format!("unknown version {version}")));
    }
    let meta_len = u64::from(u32_at(12));
    let data_len = u64::from_le_bytes(header[16..24].try_into().unwrap_or([0; 8]));
    let expected = (HEADER_BYTES as u64)
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(data_len))
        .and_then(|n| n.checked_add(4));
    if expected != Some(file_len) {
        return Err(corrupt(path, "length does not match its header (torn?)"));
    }
    let body_end = file_len - 4;
    let mut crc = crc32fast::Hasher::new();
    let mut block = vec![0u8; BLOCK_BYTES.min(body_end as usize)];
    let mut pos = 0u64;
    while pos < body_end {
        let n = (body_end - pos).min(block.len() as u64) as usize;
        file.read_exact_at(&mut block[..n], pos)?;
        crc.update(&block[..n]);
        pos += n as u64;
    }
    let mut stored = [0u8; 4];
    file.read_exact_at(&mut stored, body_end)?;
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Err(corrupt(path, "checksum mismatch"));
    }
    let mut meta_bytes = vec![0u8; meta_len as usize];
    file.read_exact_at(&mut meta_bytes, HEADER_BYTES as u64)?;
    let meta: SnapshotMeta =
        postcard::from_bytes(&meta_bytes).map_err(|e| corrupt(path, &format!("meta: {e}")))?;
    let data = Written::file(file, HEADER_BYTES as u64 + meta_len, data_len);
    Ok((meta, data))
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
        assert_eq!(f.written_bytes(), 0);
        assert_eq!(f.saved_log_id().unwrap(), None);
        assert!(f.save(&meta(5), b"state at 5").unwrap());
        assert_eq!(f.written_bytes(), 10);
        assert!(!f.save(&meta(4), b"older").unwrap());
        assert_eq!(f.written_bytes(), 10, "an older snapshot is not saved");
        drop(f);
        let f = SnapshotFile::open(dir.path()).unwrap();
        assert_eq!(f.written_bytes(), 10, "read back at open");
        assert_eq!(f.saved_log_id().unwrap(), Some(meta(5).last_log_id));
        let (m, data) = f.load().unwrap().unwrap();
        assert_eq!(m, meta(5));
        assert_eq!(data.into_bytes().unwrap(), b"state at 5");
    }

    #[test]
    fn streamed_data_past_blocks_and_syncs_round_trips_and_a_failed_fill_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::open(dir.path()).unwrap();
        // Two syncs on the way and a partial block at the end.
        let len = SYNC_EVERY_BYTES as usize * 2 + BLOCK_BYTES / 2 + 77;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let written = f
            .save_with(&meta(7), |w| {
                for part in data.chunks(1000) {
                    w.write_all(part)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(written.unwrap().into_bytes().unwrap(), data);
        let sent = f
            .write_unnamed(|w| {
                for part in data.chunks(1000) {
                    w.write_all(part)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(sent.into_bytes().unwrap(), data, "written to be sent");
        let f = SnapshotFile::open(dir.path()).unwrap();
        let (m, got) = f.load().unwrap().unwrap();
        assert_eq!(m, meta(7));
        assert_eq!(got.len(), data.len() as u64);
        assert_eq!(got.into_bytes().unwrap(), data);

        let err = f
            .save_with(&meta(8), |w| {
                w.write_all(b"half")?;
                Err(io::Error::other("the source failed"))
            })
            .unwrap_err();
        assert!(err.to_string().contains("the source failed"));
        assert!(!dir.path().join(TMP_NAME).exists());
        let (m, got) = f.load().unwrap().unwrap();
        assert_eq!((m, got.into_bytes().unwrap()), (meta(7), data));
        assert!(
            f.save(&meta(8), b"eight").unwrap(),
            "7 is still the one saved"
        );
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
        assert_eq!(
            f.load().unwrap().unwrap().1.into_bytes().unwrap(),
            b"twelve"
        );
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
