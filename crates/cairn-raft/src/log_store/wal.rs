//! The Raft log's entries in append-only segment files.
//!
//! Why not redb: a redb commit rewrites the B-tree path of every table it
//! touches, about 17 scattered 4 KiB pages for one small entry, and the
//! fsync has to flush all of them. On the 2-core VM of BENCHMARKS.md one
//! such fsync took 1.3 ms alone and ~3 ms with three members fsyncing at
//! once, against 0.15–0.33 ms for appending one record to a file. The log
//! is written once at its tail and read back mostly from memory (see
//! [`super::unflushed`]), so an append-only file fits it; redb keeps the
//! vote, the small metadata and the state machine.
//!
//! # Format
//!
//! The directory holds segments named `<16 hex digits>.wal`, numbered in
//! the order they were created. A segment is a sequence of records:
//!
//! ```text
//! payload length: u32 LE | crc32 of (index, payload): u32 LE | log index: u64 LE | payload
//! ```
//!
//! where the payload is the postcard-encoded entry. Indexes are contiguous
//! within a segment and from one segment to the next.
//!
//! # Crashes
//!
//! An append writes its records past the end of the active segment and then
//! `fdatasync`s it; the entries become readable from here only after that.
//! A crash mid-append leaves a torn record at the end of the last segment:
//! opening truncates it away (it was never acknowledged). A bad record
//! anywhere else is corruption and fails the open.
//!
//! # Preallocation
//!
//! An append that makes the file longer costs its `fdatasync` a second
//! write, of the inode (the file's new size), before the flush: about a
//! fifth of a small append's sync on the VM of BENCHMARKS.md, and a fifth
//! of the log's CPU (each write is a VM exit). So the active segment is
//! kept [`PREALLOCATE_BYTES`] of zeros ahead of its last record, and the
//! appends only overwrite them. The log writer lays down the next zeros
//! when it is idle and fewer than half are left
//! ([`Wal::preallocate_ahead`]); under load, the append that passes the
//! end writes them with its records. A segment therefore ends in zeros:
//! the scan takes an all-zero rest of a file as the end of its records (an
//! empty payload is never a record), and a rest holding anything else as a
//! torn write, as before.
//!
//! # A failed write
//!
//! After a write, sync or unlink of the log's files fails, the WAL refuses
//! every further change until it is opened again. A failed `fdatasync`
//! may have dropped the dirty pages it was to write, and a later one that
//! succeeds says nothing about them (PostgreSQL's "fsyncgate"), so the
//! files are trusted again only as a fresh open reads them: the member
//! restarts (openraft stops on the storage error anyway; this makes sure
//! no caller writes past it).
//!
//! Truncation unlinks the
//! later segments first, then cuts the segment it lands in, so a crash in
//! between leaves a prefix of the old log. Purging deletes only whole
//! segments, after the caller made `last_purged_log_id` durable.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::types::{Entry, LogId};

/// Start a new segment once the active one reaches this size, so purging
/// can free space by deleting whole files.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The largest payload a record may claim; a longer length is corruption.
/// (The transport caps a message at 64 MiB, so no entry gets near it.)
const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024;
const HEADER_BYTES: usize = 16;
/// Zeros kept written ahead of the active segment's last record (see
/// "Preallocation" above): an append that passes them writes the next
/// ones with its records, about 0.14 ms more than a plain small append's
/// sync here, once per this many bytes of log.
pub const PREALLOCATE_BYTES: u64 = 256 * 1024;
/// Tries of a read that a concurrent truncation keeps invalidating.
const READ_ATTEMPTS: usize = 8;

/// Where one entry's record lives.
#[derive(Clone, Copy, Debug)]
struct Loc {
    segment: u64,
    /// Offset of the record's header in the segment.
    offset: u64,
    payload_bytes: u32,
}

/// What readers see: every durable entry's location.
struct Index {
    /// The log index of `locs[0]` (or of the next append when empty).
    first: u64,
    locs: VecDeque<Loc>,
    /// The last entry's id; `None` when empty.
    last: Option<LogId>,
    /// Open segments by number, for reads.
    segments: BTreeMap<u64, Arc<File>>,
    /// Bumped by every truncation: a reader that copied locations before
    /// one may have read replaced bytes, and retries.
    truncations: u64,
}

impl Index {
    fn next(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    fn loc(&self, index: u64) -> Option<Loc> {
        let i = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(i).ok()?).copied()
    }
}

/// The segment appends go to. Only the log writer thread touches it.
struct Active {
    number: u64,
    file: Arc<File>,
    /// Bytes of valid records in it: where the next record goes.
    len: u64,
    /// The file's length: `[len, allocated)` holds zeros.
    allocated: u64,
}

pub(super) struct Wal {
    dir: PathBuf,
    /// Roll to a new segment past this size ([`SEGMENT_BYTES`]; small in tests).
    segment_bytes: u64,
    /// Zeros to keep ahead of the last record ([`PREALLOCATE_BYTES`]).
    preallocate_bytes: u64,
    index: RwLock<Index>,
    active: Mutex<Active>,
    /// The first failed write, sync or unlink (see "A failed write").
    failed: OnceLock<String>,
}

/// An encoded entry ready to append.
pub(super) struct Record<'a> {
    pub log_id: LogId,
    pub payload: &'a [u8],
}

impl Wal {
    /// Opens the segments in `dir` (creating it), drops a torn tail, and
    /// forgets entries at or below `purged`.
    pub fn open(dir: &Path, purged: Option<LogId>) -> io::Result<Wal> {
        Self::open_with(dir, purged, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, purged: Option<LogId>, segment_bytes: u64) -> io::Result<Wal> {
        fs::create_dir_all(dir).map_err(|e| wal_err(dir, "create directory", e))?;
        let mut numbers = segment_numbers(dir)?;
        numbers.sort_unstable();
        let floor = purged.map_or(0, |p| p.index + 1);

        let mut segments = BTreeMap::new();
        let mut locs: VecDeque<Loc> = VecDeque::new();
        let mut first: Option<u64> = None;
        let mut last: Option<LogId> = None;
        let mut prev_index: Option<u64> = None;
        let mut active: Option<Active> = None;
        let count = numbers.len();
        for (i, &number) in numbers.iter().enumerate() {
            let path = segment_path(dir, number);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| wal_err(&path, "open", e))?;
            let bytes = fs::read(&path).map_err(|e| wal_err(&path, "read", e))?;
            let is_last = i + 1 == count;
            let (records, valid_len, torn) = scan(&bytes, &path, is_last)?;
            if torn {
                tracing::warn!(
                    "raft wal: {}: dropping a torn record at offset {valid_len} \
                     ({} bytes), left by a crash mid-append",
                    path.display(),
                    bytes.len() as u64 - valid_len
                );
                file.set_len(valid_len)
                    .map_err(|e| wal_err(&path, "cut torn tail", e))?;
                file.sync_all().map_err(|e| wal_err(&path, "sync", e))?;
            }
            for Scanned {
                index,
                loc,
                log_id: entry_id,
            } in records
            {
                if let Some(p) = prev_index {
                    if index != p + 1 {
                        return Err(corrupt(
                            &path,
                            format!("index {index} follows index {p}: a hole in the log"),
                        ));
                    }
                }
                prev_index = Some(index);
                if index < floor {
                    continue;
                }
                first.get_or_insert(index);
                locs.push_back(Loc {
                    segment: number,
                    ..loc
                });
                last = Some(entry_id);
            }
            let file = Arc::new(file);
            if is_last {
                active = Some(Active {
                    number,
                    file: file.clone(),
                    len: valid_len,
                    allocated: if torn { valid_len } else { bytes.len() as u64 },
                });
            }
            segments.insert(number, file);
        }
        if let Some(f) = first {
            if f != floor && purged.is_some() {
                return Err(corrupt(
                    dir,
                    format!(
                        "the log resumes at index {f} but the last purged index is {}",
                        floor - 1
                    ),
                ));
            }
        }
        let first = first.unwrap_or(floor.max(prev_index.map_or(0, |p| p + 1)));
        let mut active = match active {
            Some(a) => a,
            None => create_segment(dir, 0)?,
        };
        segments.insert(active.number, active.file.clone());
        let mut index = Index {
            first,
            locs,
            last,
            segments,
            truncations: 0,
        };
        // Leftovers of a purge interrupted by a crash, and a last segment
        // holding only purged entries (appends must not follow purged
        // indexes in the same file).
        delete_unreferenced(dir, &mut index, &mut active)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            preallocate_bytes: PREALLOCATE_BYTES,
            index: RwLock::new(index),
            active: Mutex::new(active),
            failed: OnceLock::new(),
        };
        Ok(wal)
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        // Every mutation leaves the index consistent before it can panic.
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `e` as the failure that ends this WAL's writes; returns it.
    fn failed(&self, e: io::Error) -> io::Error {
        let _ = self.failed.set(e.to_string());
        e
    }

    /// Refuses a change once a write failed (see "A failed write").
    fn usable(&self) -> io::Result<()> {
        match self.failed.get() {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "raft wal: {}: an earlier write failed ({why}), so nothing more is written; \
                 restart the member to read the log back from disk",
                self.dir.display()
            ))),
        }
    }

    /// The index the next append must start at.
    #[cfg(test)]
    pub fn next_index(&self) -> u64 {
        self.read_index().next()
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.read_index().last
    }

    /// Writes `records` (contiguous, starting at [`Self::next_index`]) and
    /// fsyncs; they are readable once this returns `Ok`.
    pub fn append(&self, records: &[Record<'_>]) -> io::Result<()> {
        self.usable()?;
        let Some(head) = records.first() else {
            return Ok(());
        };
        let expected = {
            let index = self.read_index();
            // An empty log starts wherever openraft starts it (at or past
            // the purged index); otherwise appends follow the last entry.
            if index.locs.is_empty() && head.log_id.index >= index.first {
                head.log_id.index
            } else {
                index.next()
            }
        };
        for (i, r) in records.iter().enumerate() {
            if r.log_id.index != expected + i as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "raft wal: append of index {} where index {} is next",
                        r.log_id.index,
                        expected + i as u64
                    ),
                ));
            }
        }
        let mut active = self.lock_active();
        if active.len >= self.segment_bytes {
            roll(&self.dir, &mut active).map_err(|e| self.failed(e))?;
            // Published before any entry points into it.
            self.write_index()
                .segments
                .insert(active.number, active.file.clone());
        }
        let mut buf =
            Vec::with_capacity(records.iter().map(|r| HEADER_BYTES + r.payload.len()).sum());
        let mut locs = Vec::with_capacity(records.len());
        for r in records {
            let payload_bytes = u32::try_from(r.payload.len())
                .ok()
                .filter(|&n| n <= MAX_RECORD_BYTES)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "raft wal: entry {} is {} bytes, over the {MAX_RECORD_BYTES} limit",
                            r.log_id.index,
                            r.payload.len()
                        ),
                    )
                })?;
            locs.push(Loc {
                segment: active.number,
                offset: active.len + buf.len() as u64,
                payload_bytes,
            });
            encode_record(&mut buf, r.log_id.index, r.payload);
        }
        let records_bytes = buf.len() as u64;
        let end = active.len + records_bytes;
        if end > active.allocated {
            buf.resize((self.allocation_after(end) - active.len) as usize, 0);
        }
        let path = segment_path(&self.dir, active.number);
        let started = std::time::Instant::now();
        let written = active
            .file
            .write_all_at(&buf, active.len)
            .and_then(|()| active.file.sync_data());
        crate::metrics::WAL_FSYNC.observe(started.elapsed());
        if let Err(e) = written {
            // Leave no partial record behind for the next append to follow.
            let _ = active.file.set_len(active.len);
            active.allocated = active.len;
            return Err(self.failed(wal_err(&path, "append", e)));
        }
        active.allocated = active.allocated.max(active.len + buf.len() as u64);
        active.len = end;
        let mut index = self.write_index();
        if index.locs.is_empty() {
            index.first = head.log_id.index;
        }
        index.locs.extend(locs);
        index.last = records.last().map(|r| r.log_id);
        Ok(())
    }

    /// Writes the next [`PREALLOCATE_BYTES`] of zeros now if fewer than
    /// half of them are left ahead of the last record: for the log writer
    /// when idle, so the append that would have written them does not.
    pub fn preallocate_ahead(&self) -> io::Result<()> {
        self.usable()?;
        let mut active = self.lock_active();
        if active.allocated - active.len >= self.preallocate_bytes / 2
            || active.len >= self.segment_bytes
        {
            return Ok(());
        }
        let allocated = self.allocation_after(active.len);
        let zeros = vec![0u8; (allocated - active.allocated) as usize];
        // On failure, whatever got written is zeros past the records:
        // harmless, and the next append writes its own.
        active
            .file
            .write_all_at(&zeros, active.allocated)
            .and_then(|()| active.file.sync_data())
            .map_err(|e| {
                self.failed(wal_err(
                    &segment_path(&self.dir, active.number),
                    "preallocate",
                    e,
                ))
            })?;
        active.allocated = allocated;
        Ok(())
    }

    /// The file length to extend to when the records end at `end`: the
    /// page holding `end`, then [`Self::preallocate_bytes`] of zeros.
    fn allocation_after(&self, end: u64) -> u64 {
        end.next_multiple_of(4096) + self.preallocate_bytes
    }

    /// Removes every entry at index `from` and above, durably.
    pub fn truncate(&self, from: u64) -> io::Result<()> {
        self.usable()?;
        let mut active = self.lock_active();
        let mut index = self.write_index();
        let from = from.max(index.first);
        let Some(cut) = index.loc(from) else {
            return Ok(());
        };
        index.truncations += 1;
        // Later segments first: a crash part-way leaves a prefix of the log.
        let later: Vec<u64> = index
            .segments
            .range(cut.segment + 1..)
            .map(|(n, _)| *n)
            .collect();
        for n in later {
            index.segments.remove(&n);
            let path = segment_path(&self.dir, n);
            fs::remove_file(&path).map_err(|e| self.failed(wal_err(&path, "remove", e)))?;
        }
        let file = index
            .segments
            .get(&cut.segment)
            .cloned()
            .ok_or_else(|| corrupt(&self.dir, format!("segment {} is gone", cut.segment)))?;
        let path = segment_path(&self.dir, cut.segment);
        file.set_len(cut.offset)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.failed(wal_err(&path, "truncate", e)))?;
        sync_dir(&self.dir).map_err(|e| self.failed(e))?;
        *active = Active {
            number: cut.segment,
            file,
            len: cut.offset,
            allocated: cut.offset,
        };
        let keep = (from - index.first) as usize;
        index.locs.truncate(keep);
        index.last = match index.locs.back().copied() {
            Some(loc) => Some(read_entry(&index.segments, index.next() - 1, loc)?.log_id),
            None => None,
        };
        Ok(())
    }

    /// Forgets every entry up to and including `upto` and deletes the
    /// segments that held only such entries. The caller has made the purge
    /// durable elsewhere first.
    pub fn purge(&self, upto: u64) -> io::Result<()> {
        self.usable()?;
        let mut active = self.lock_active();
        let mut index = self.write_index();
        if upto < index.first {
            return Ok(());
        }
        let drop_n = (upto + 1 - index.first).min(index.locs.len() as u64) as usize;
        index.locs.drain(..drop_n);
        index.first = upto + 1;
        if index.locs.is_empty() {
            index.last = None;
        }
        delete_unreferenced(&self.dir, &mut index, &mut active).map_err(|e| self.failed(e))
    }

    /// The entries in `[lo, hi)` that are in the files, stopping after
    /// `budget` payload bytes (at least one entry). Returns the entries and
    /// the bytes read. Fails on corruption; never blocks appends.
    pub fn read(&self, lo: u64, hi: u64, budget: usize) -> io::Result<(Vec<Entry>, usize)> {
        // Truncations are rare (a follower dropping a conflicting suffix),
        // so a few retries always suffice; the bound keeps the loop finite.
        for _ in 0..READ_ATTEMPTS {
            let (locs, segments, truncations) = {
                let index = self.read_index();
                let lo = lo.max(index.first);
                let hi = hi.min(index.next());
                let mut locs = Vec::new();
                let mut bytes = 0usize;
                let mut i = lo;
                while i < hi && (locs.is_empty() || bytes < budget) {
                    let Some(loc) = index.loc(i) else { break };
                    bytes = bytes.saturating_add(loc.payload_bytes as usize);
                    locs.push((i, loc));
                    i += 1;
                }
                (locs, index.segments.clone(), index.truncations)
            };
            let mut out = Vec::with_capacity(locs.len());
            let mut bytes = 0usize;
            let mut result = Ok(());
            for (i, loc) in &locs {
                match read_entry(&segments, *i, *loc) {
                    Ok(e) => {
                        bytes = bytes.saturating_add(loc.payload_bytes as usize);
                        out.push(e);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if self.read_index().truncations != truncations {
                continue; // the bytes may have been replaced under us
            }
            return result.map(|()| (out, bytes));
        }
        Err(io::Error::other(format!(
            "raft wal: read of [{lo}, {hi}) raced {READ_ATTEMPTS} truncations"
        )))
    }

    /// The lowest index held.
    #[cfg(test)]
    pub fn first_index(&self) -> u64 {
        self.read_index().first
    }
}

/// Deletes segments before the first one still holding an entry. When no
/// entry is left, starts a fresh active segment, so the next append (which
/// follows the purged index, not the last one written) begins a file of its
/// own.
fn delete_unreferenced(dir: &Path, index: &mut Index, active: &mut Active) -> io::Result<()> {
    let keep_from = match index.locs.front() {
        Some(loc) => loc.segment,
        None => {
            if active.len > 0 {
                roll(dir, active)?;
                index.segments.insert(active.number, active.file.clone());
            }
            active.number
        }
    };
    let old: Vec<u64> = index.segments.range(..keep_from).map(|(n, _)| *n).collect();
    for n in old {
        index.segments.remove(&n);
        let path = segment_path(dir, n);
        fs::remove_file(&path).map_err(|e| wal_err(&path, "remove", e))?;
    }
    Ok(())
}

/// Starts the next segment and makes it the active one; the caller
/// publishes it in the index.
fn roll(dir: &Path, active: &mut Active) -> io::Result<()> {
    *active = create_segment(dir, active.number + 1)?;
    Ok(())
}

fn encode_record(buf: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&index.to_le_bytes());
    crc.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// A record found by [`scan`].
struct Scanned {
    index: u64,
    /// Its location, with `segment` still to be filled in.
    loc: Loc,
    log_id: LogId,
}

/// The records of one segment file, the length of the valid prefix, and
/// whether a torn write follows it. The records end where only zeros
/// follow (preallocated room). A bad record at the end of the last segment
/// is a torn write and ends the scan; anywhere else it is an error.
fn scan(bytes: &[u8], path: &Path, is_last: bool) -> io::Result<(Vec<Scanned>, u64, bool)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        if bytes[at..].iter().all(|b| *b == 0) {
            break;
        }
        match parse_record(&bytes[at..]) {
            Ok((index, payload)) => {
                let entry = decode_payload(index, payload).map_err(|e| corrupt(path, e))?;
                out.push(Scanned {
                    index,
                    loc: Loc {
                        segment: 0,
                        offset: at as u64,
                        payload_bytes: payload.len() as u32,
                    },
                    log_id: entry.log_id,
                });
                at += HEADER_BYTES + payload.len();
            }
            Err(why) if is_last => {
                tracing::debug!("raft wal: {}: end of log at {at}: {why}", path.display());
                return Ok((out, at as u64, true));
            }
            Err(why) => return Err(corrupt(path, format!("record at offset {at}: {why}"))),
        }
    }
    Ok((out, at as u64, false))
}

/// One record at the start of `bytes`: its index and payload.
fn parse_record(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than a header", bytes.len()));
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
    let index = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    if len > MAX_RECORD_BYTES {
        return Err(format!("length {len} over the limit"));
    }
    let end = HEADER_BYTES + len as usize;
    let Some(payload) = bytes.get(HEADER_BYTES..end) else {
        return Err(format!("length {len} past the end of the file"));
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    if h.finalize() != crc {
        return Err("checksum mismatch".into());
    }
    Ok((index, payload))
}

fn decode_payload(index: u64, payload: &[u8]) -> Result<Entry, String> {
    let entry: Entry = postcard::from_bytes(payload)
        .map_err(|e| format!("entry at index {index} does not decode: {e}"))?;
    if entry.log_id.index != index {
        return Err(format!(
            "the record of index {index} holds the entry of log id {}",
            entry.log_id
        ));
    }
    Ok(entry)
}

fn read_entry(segments: &BTreeMap<u64, Arc<File>>, index: u64, loc: Loc) -> io::Result<Entry> {
    let file = segments.get(&loc.segment).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("raft wal: segment {} of index {index} is gone", loc.segment),
        )
    })?;
    let mut buf = vec![0u8; HEADER_BYTES + loc.payload_bytes as usize];
    file.read_exact_at(&mut buf, loc.offset)?;
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft wal: corrupt record of index {index} (segment {:016x}, offset {}): {why}",
                loc.segment, loc.offset
            ),
        )
    };
    let (at, payload) = parse_record(&buf).map_err(bad)?;
    if at != index {
        return Err(bad(format!("it says index {at}")));
    }
    decode_payload(index, payload).map_err(bad)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.wal"))
}

fn segment_numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| wal_err(dir, "list", e))? {
        let item = item.map_err(|e| wal_err(dir, "list", e))?;
        let name = item.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if stem.len() == 16 {
            if let Ok(n) = u64::from_str_radix(stem, 16) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

fn create_segment(dir: &Path, number: u64) -> io::Result<Active> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| wal_err(&path, "create", e))?;
    // The new name must survive a crash before anything in it counts.
    sync_dir(dir)?;
    Ok(Active {
        number,
        file: Arc::new(file),
        len: 0,
        allocated: 0,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| wal_err(dir, "sync directory", e))
}

fn wal_err(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("raft wal: {what} {}: {e}", path.display()))
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("raft wal: corrupt {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests;
