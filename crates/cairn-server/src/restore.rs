//! Snapshot files: what `Maintenance.Snapshot` streams (and `cairn snapshot
//! save` writes to disk), and `restore_snapshot`, which turns one into the
//! data dir of a new member.
//!
//! # File format
//!
//! All integers are big-endian.
//!
//! | offset     | size | content                                        |
//! |------------|------|------------------------------------------------|
//! | 0          | 8    | magic, `CAIRNSNP`                              |
//! | 8          | 4    | format version, [`FORMAT_VERSION`]             |
//! | 12         | 8    | payload length `n`                             |
//! | 20         | `n`  | payload: a postcard-encoded [`StoreSnapshot`]  |
//! | 20 + `n`   | pad  | zeros, up to a multiple of 512 bytes           |
//! | end − 32   | 32   | SHA-256 of every byte before it                |
//!
//! The padding and trailer follow etcd's snapshot stream, so the length of a
//! whole file is 32 more than a multiple of 512 and the last 32 bytes are the
//! SHA-256 of the rest: what etcdctl's `snapshot save` checks.
//!
//! # Restoring
//!
//! A restored data dir holds the snapshot's keyspace (keys with their whole
//! retained history, revisions, leases) and its auth state (users, roles,
//! whether auth is on, the token key: tokens of the old cluster verify
//! until they expire), and nothing else: no Raft log, no
//! membership, no member identity. Started with `cairn serve`, the member
//! therefore bootstraps a brand-new cluster from `initial_cluster`, with new
//! member IDs, exactly as on an empty data dir. Alarms are dropped: they name
//! members of the old cluster, and a NOSPACE alarm is raised again by the
//! first write that finds the keyspace over quota.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use cairn_raft::state_machine::StateMachineStore;
use cairn_store::{Store, StoreSnapshot};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, ServerConfig};

/// First bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// Version of the layout and payload encoding this build writes. Version 1
/// (before the auth state joined the payload) is still read.
pub const FORMAT_VERSION: u32 = 2;
/// The data before the checksum is padded to a multiple of this.
pub const ALIGN: usize = 512;
/// Length of the trailing SHA-256.
pub const HASH_LEN: usize = 32;
/// Magic, version and payload length.
const HEADER_LEN: usize = 8 + 4 + 8;
/// Name of the database file in a data dir (as `Node::start` opens it).
const DB_FILE: &str = "cairn.redb";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The trailer is missing or does not match: truncated or corrupt.
    #[error("snapshot checksum: {0}")]
    Checksum(String),
    #[error("not a Cairn snapshot (bad magic bytes)")]
    NotASnapshot,
    #[error("snapshot format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    /// The checksum holds but the content does not decode.
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
    #[error("data dir {0} already holds data; restore into a new directory")]
    DataDirNotEmpty(PathBuf),
    #[error("writing the restored state: {0}")]
    Storage(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encode `snapshot` as a whole snapshot file, trailer included.
pub fn encode_snapshot(snapshot: &StoreSnapshot) -> Result<Vec<u8>, RestoreError> {
    let payload = postcard::to_allocvec(snapshot)
        .map_err(|e| RestoreError::Corrupt(format!("cannot encode the store: {e}")))?;
    let data_len = (HEADER_LEN + payload.len()).div_ceil(ALIGN) * ALIGN;
    let mut out = Vec::with_capacity(data_len + HASH_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(&payload);
    out.resize(data_len, 0);
    let sha = Sha256::digest(&out);
    out.extend_from_slice(&sha);
    Ok(out)
}

/// Check the trailer: length 32 more than a multiple of 512, and the last
/// 32 bytes the SHA-256 of the rest.
pub fn verify_snapshot(bytes: &[u8]) -> Result<(), RestoreError> {
    if bytes.len() < HASH_LEN || !(bytes.len() - HASH_LEN).is_multiple_of(ALIGN) {
        return Err(RestoreError::Checksum(format!(
            "{} bytes is not a multiple of {ALIGN} plus a {HASH_LEN}-byte SHA-256: \
             truncated or not a snapshot",
            bytes.len()
        )));
    }
    let (data, trailer) = bytes.split_at(bytes.len() - HASH_LEN);
    if Sha256::digest(data).as_slice() != trailer {
        return Err(RestoreError::Checksum(
            "SHA-256 mismatch: the snapshot is corrupt".into(),
        ));
    }
    Ok(())
}

/// Verify and decode a whole snapshot file.
pub fn decode_snapshot(bytes: &[u8]) -> Result<StoreSnapshot, RestoreError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(RestoreError::NotASnapshot);
    }
    verify_snapshot(bytes)?;
    let data = &bytes[..bytes.len() - HASH_LEN];
    if data.len() < HEADER_LEN {
        return Err(RestoreError::Corrupt("header is truncated".into()));
    }
    let version = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION && version != 1 {
        return Err(RestoreError::UnsupportedVersion(version));
    }
    let len = u64::from_be_bytes(data[12..20].try_into().expect("8 bytes"));
    let payload = usize::try_from(len)
        .ok()
        .and_then(|len| data.get(HEADER_LEN..HEADER_LEN.checked_add(len)?))
        .ok_or_else(|| RestoreError::Corrupt(format!("payload length {len} exceeds the file")))?;
    let end = HEADER_LEN + payload.len();
    if data[end..].iter().any(|b| *b != 0) {
        return Err(RestoreError::Corrupt("padding is not zeros".into()));
    }
    let corrupt = |e: postcard::Error| RestoreError::Corrupt(e.to_string());
    if version == 1 {
        let old: cairn_store::StoreSnapshotBeforeAuth =
            postcard::from_bytes(payload).map_err(corrupt)?;
        return Ok(old.into());
    }
    postcard::from_bytes(payload).map_err(corrupt)
}

/// Read, verify and decode the snapshot file at `path`.
pub fn read_snapshot_file(path: &Path) -> Result<StoreSnapshot, RestoreError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    decode_snapshot(&bytes)
}

/// Create `config.data_dir` holding the keyspace of the snapshot file at
/// `snapshot`, ready for `cairn serve` with the same config to bootstrap a
/// new cluster from `config.initial_cluster` (see the module docs).
///
/// Refuses a data dir that exists and is not empty. On failure, whatever
/// this call created is removed again.
pub fn restore_snapshot(snapshot: &Path, config: &ServerConfig) -> Result<(), RestoreError> {
    config.validate_for_restore()?;
    let mut snap = read_snapshot_file(snapshot)?;
    // Alarms name members of the old cluster (see the module docs).
    snap.meta.alarms.clear();
    let store = Store::from_snapshot(snap);

    let dir = &config.data_dir;
    let created_dir = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::DataDirNotEmpty(dir.clone()));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            true
        }
        Err(e) => return Err(io_error(dir)(e)),
    };
    let db_path = dir.join(DB_FILE);
    let result = write_db(&db_path, &store);
    if result.is_err() {
        if created_dir {
            let _ = std::fs::remove_dir_all(dir);
        } else {
            let _ = std::fs::remove_file(&db_path);
        }
    }
    result
}

fn write_db(db_path: &Path, store: &Store) -> Result<(), RestoreError> {
    let db = redb::Database::create(db_path)
        .map_err(|e| RestoreError::Storage(format!("{}: {e}", db_path.display())))?;
    StateMachineStore::write_restored(&db, store)
        .map_err(|e| RestoreError::Storage(e.to_string()))?;
    drop(db);
    // Make the new directory entry durable too.
    if let Some(parent) = db_path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Write a snapshot file atomically: to `<path>.part`, fsynced, then renamed.
pub fn write_snapshot_file(path: &Path, bytes: &[u8]) -> Result<(), RestoreError> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut f = std::fs::File::create(&part).map_err(io_error(&part))?;
    f.write_all(bytes).map_err(io_error(&part))?;
    f.sync_all().map_err(io_error(&part))?;
    drop(f);
    std::fs::rename(&part, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::{AlarmAction, AlarmKind, Command, PutRequest};

    fn sample() -> Store {
        let mut store = Store::new();
        for i in 0..20 {
            store.apply(&Command::Put(PutRequest {
                key: format!("k{i:02}").into_bytes(),
                value: vec![b'v'; i * 10],
                ..Default::default()
            }));
        }
        store.apply(&Command::Alarm {
            action: AlarmAction::Activate,
            member_id: 9,
            alarm: AlarmKind::NoSpace,
        });
        store
    }

    #[test]
    fn encoded_snapshot_has_the_etcd_trailer_and_round_trips() {
        let snap = sample().snapshot().unwrap();
        let bytes = encode_snapshot(&snap).unwrap();
        assert_eq!(bytes.len() % ALIGN, HASH_LEN);
        assert_eq!(&bytes[..8], MAGIC);
        verify_snapshot(&bytes).unwrap();
        assert_eq!(decode_snapshot(&bytes).unwrap(), snap);
    }

    #[test]
    fn corruption_truncation_and_foreign_files_are_refused() {
        let bytes = encode_snapshot(&sample().snapshot().unwrap()).unwrap();
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(matches!(
            decode_snapshot(&flipped),
            Err(RestoreError::Checksum(_))
        ));
        assert!(matches!(
            decode_snapshot(&bytes[..bytes.len() - 1]),
            Err(RestoreError::Checksum(_))
        ));
        let mut foreign = vec![0u8; 512];
        foreign.extend_from_slice(&Sha256::digest(&foreign));
        assert!(matches!(
            decode_snapshot(&foreign),
            Err(RestoreError::NotASnapshot)
        ));
        // A valid trailer over a future format version.
        let mut future = bytes[..bytes.len() - HASH_LEN].to_vec();
        future[8..12].copy_from_slice(&3u32.to_be_bytes());
        let sha = Sha256::digest(&future);
        future.extend_from_slice(&sha);
        assert!(matches!(
            decode_snapshot(&future),
            Err(RestoreError::UnsupportedVersion(3))
        ));
    }

    /// Files from before the auth state (format 1) still restore, with
    /// auth off; format 2 carries users and roles.
    #[test]
    fn a_format_1_file_still_decodes_and_format_2_keeps_auth() {
        let mut store = sample();
        store.apply(&Command::Auth(cairn_store::auth::AuthCommand::UserAdd {
            name: "alice".into(),
            credential: None,
        }));
        let snap = store.snapshot().unwrap();
        let bytes = encode_snapshot(&snap).unwrap();
        assert_eq!(decode_snapshot(&bytes).unwrap().auth, snap.auth);

        let payload =
            postcard::to_allocvec(&(&snap.meta, &snap.records, &snap.leases, &snap.claims))
                .unwrap();
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        v1.extend_from_slice(&payload);
        v1.resize(v1.len().div_ceil(ALIGN) * ALIGN, 0);
        let sha = Sha256::digest(&v1);
        v1.extend_from_slice(&sha);
        let old = decode_snapshot(&v1).unwrap();
        assert_eq!(old.records, snap.records);
        assert_eq!(old.auth, cairn_store::auth::AuthState::default());
    }

    #[test]
    fn restore_writes_a_fresh_data_dir_and_refuses_a_used_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = sample();
        let file = dir.path().join("snap.db");
        write_snapshot_file(&file, &encode_snapshot(&store.snapshot().unwrap()).unwrap()).unwrap();
        let config = ServerConfig {
            data_dir: dir.path().join("restored"),
            ..Default::default()
        };
        restore_snapshot(&file, &config).unwrap();
        let db =
            std::sync::Arc::new(redb::Database::create(config.data_dir.join(DB_FILE)).unwrap());
        let sm = StateMachineStore::open(db, &config.data_dir.join("snapshot")).unwrap();
        let restored = sm.shared_store().read().unwrap().snapshot().unwrap();
        let mut want = store.snapshot().unwrap();
        want.meta.alarms.clear();
        assert_eq!(restored, want);
        drop(sm);

        let err = restore_snapshot(&file, &config).unwrap_err();
        assert!(matches!(err, RestoreError::DataDirNotEmpty(_)), "{err}");
    }

    #[test]
    fn a_bad_snapshot_is_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.db");
        std::fs::write(&file, b"garbage").unwrap();
        let config = ServerConfig {
            data_dir: dir.path().join("restored"),
            ..Default::default()
        };
        assert!(restore_snapshot(&file, &config).is_err());
        assert!(!config.data_dir.exists());
    }
}
