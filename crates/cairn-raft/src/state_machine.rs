//! The Raft state machine: `cairn_store::Store` in memory, mirrored in redb.
//!
//! Every applied batch's changed records, leases, store scalars, last
//! applied log id and membership are written in one redb transaction (the
//! row thread's, shared with the batches around it, see
//! `log_store::writer`), so applied index and data can never disagree
//! after a crash. Those commits are not fsynced one by one; the log still
//! holds every entry they cover until the state is durable (see
//! `log_store::writer::rows::Checkpoint`).
//!
//! A snapshot is those rows as of one redb read transaction, written out
//! only when a leader sends it ([`crate::snapshot_data`]); a snapshot
//! received from a leader is saved to a file first
//! ([`crate::snapshot_file`]).

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use cairn_store::{
    auth::AuthState, CommandResult, Event, HistoryValues, LeaseRecord, Record, Revision, Store,
    StoreMeta, StoreSnapshot,
};
use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

use crate::apply_thread::{ApplyThread, Priority};
use crate::claims_rows::{self, ClaimsRows, LeaseLog};
use crate::log_store::StateWriter;
use crate::snapshot_file::SnapshotFile;
use crate::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};

const RECORDS: TableDefinition<(i64, i64), &[u8]> = TableDefinition::new("sm_records");
const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("sm_leases");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");

const KEY_STORE_META: &str = "store_meta";
const KEY_APPLIED: &str = "applied";
const KEY_MEMBERSHIP: &str = "membership";
/// The auth state (users, roles, permissions), written whole when it
/// changes; absent until the first auth change.
const KEY_AUTH: &str = "auth";
/// Where versions before the snapshot file kept the current snapshot; read
/// once at open to move it to the file.
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_snapshot");
const KEY_SNAPSHOT_META: &str = "meta";
const KEY_SNAPSHOT_DATA: &str = "data";

/// The keyspace shared between the state machine (writer) and the server's
/// readers. Apply holds the write lock only while it mutates memory.
pub type SharedStore = Arc<RwLock<Store>>;

/// The cluster time carried by the last applied command that carried one,
/// and the term of its entry: the leader of that term stamped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub term: u64,
    pub now_ms: u64,
}

/// Told about every applied batch, before its clients are answered: feeds
/// watchers.
pub trait ApplyObserver: Send + Sync + 'static {
    /// Whether the next batch should build events: asked before each
    /// batch is applied. Without a watcher, events are copies nobody reads.
    fn wants_events(&self) -> bool;

    /// `events` are in revision order, or `None` when `wants_events` said
    /// no for this batch (anyone watching since must read the batch's
    /// revisions from the store's history); `revision` is the store's
    /// revision after the batch; `stamp` is the batch's last time stamp,
    /// if any.
    fn applied(&self, events: Option<Vec<Event>>, revision: i64, stamp: Option<Stamp>);

    /// The state was replaced by a snapshot at `revision`: events between
    /// what observers saw and `revision` were never applied here one by one.
    fn snapshot_installed(&self, revision: i64);
}

/// An observer that ignores everything (tests, tools).
pub struct NoObserver;

impl ApplyObserver for NoObserver {
    fn wants_events(&self) -> bool {
        false
    }
    fn applied(&self, _events: Option<Vec<Event>>, _revision: i64, _stamp: Option<Stamp>) {}
    fn snapshot_installed(&self, _revision: i64) {}
}

pub struct StateMachineStore {
    db: Arc<Database>,
    store: SharedStore,
    /// Last log id applied, persisted with the data it produced.
    applied: Option<LogId>,
    membership: StoredMembership,
    observer: Arc<dyn ApplyObserver>,
    /// When set, applied rows go through the log's writer queue to its row
    /// thread and share its transactions (see `log_store::StateWriter`) instead of a
    /// transaction of their own that waits for redb's writer lock.
    writer: Option<StateWriter>,
    /// Where snapshots are written: the one received last, and the ones
    /// written to be sent.
    snapshots: Arc<SnapshotFile>,
    /// The claims lease log's rows, to trim and compact it in time.
    lease_log: LeaseLog,
    /// The store revision whose rows are committed in redb (readers see
    /// them): values of records superseded up to it may leave memory, as
    /// [`RedbHistory`] reads them back.
    persisted_revision: Arc<AtomicI64>,
    /// Where applies that no client here waits for run; started on the
    /// first one (see [`crate::apply_thread`]).
    apply_thread: Option<ApplyThread>,
    /// Where long applies run that a client waits for, or that a member
    /// far behind its log must do at once; started on the first one.
    long_apply_thread: Option<ApplyThread>,
    /// Batches applied on each so far, for tests.
    applied_in_background: u64,
    applied_on_long_apply_thread: u64,
}

/// Reads the values the store dropped from memory back from the records
/// table.
struct RedbHistory {
    /// Weak: the shared store outlives the node in tasks that still hold
    /// it, and must not keep the database file open (and locked) after the
    /// node stopped.
    db: Weak<Database>,
}

impl RedbHistory {
    fn of(db: &Arc<Database>) -> Arc<dyn HistoryValues> {
        Arc::new(RedbHistory {
            db: Arc::downgrade(db),
        })
    }
}

impl HistoryValues for RedbHistory {
    /// One read transaction for all of them.
    fn values(&self, revs: &[Revision]) -> Result<Vec<Vec<u8>>, String> {
        let db = self.db.upgrade().ok_or("the database is closed")?;
        let read = db.begin_read().map_err(|e| e.to_string())?;
        let table = read.open_table(RECORDS).map_err(|e| e.to_string())?;
        revs.iter()
            .map(|rev| {
                let row = table
                    .get((rev.main, rev.sub))
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no record row at {}.{}", rev.main, rev.sub))?;
                let (_, record): (ByteBuf, Record) =
                    decode("record", row.value()).map_err(|e| e.to_string())?;
                Ok(record.value.into_vec())
            })
            .collect()
    }
}

/// A snapshot's bytes on the wire and on disk.
#[derive(Serialize, Deserialize)]
struct SnapshotContents {
    store: StoreSnapshot,
}

impl SnapshotContents {
    /// Decodes a snapshot, also one made before the auth state was part of
    /// it (by an older member, or found on disk after an upgrade).
    fn decode(bytes: &[u8]) -> io::Result<SnapshotContents> {
        #[derive(Deserialize)]
        struct BeforeAuth {
            store: cairn_store::StoreSnapshotBeforeAuth,
        }
        decode("snapshot", bytes).or_else(|e| match postcard::from_bytes::<BeforeAuth>(bytes) {
            Ok(old) => Ok(SnapshotContents {
                store: old.store.into(),
            }),
            Err(_) => Err(e),
        })
    }
}

fn io_err(context: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{context}: {e}"))
}

fn encode<T: Serialize>(what: &str, value: &T) -> io::Result<Vec<u8>> {
    crate::encoding::to_vec_sized(value).map_err(|e| io_err(what, e))
}

fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io_err(&format!("corrupt {what}"), e))
}

impl StateMachineStore {
    /// Load the state persisted in `db` (empty on a new database); the
    /// current snapshot lives in `snapshot_dir`.
    pub fn open(db: Arc<Database>, snapshot_dir: &Path) -> io::Result<Self> {
        let observer: Arc<dyn ApplyObserver> = Arc::new(NoObserver);
        let snapshots = Arc::new(SnapshotFile::open(snapshot_dir)?);
        move_snapshot_out_of_redb(&db, &snapshots)?;
        let txn = db.begin_write().map_err(|e| io_err("begin", e))?;
        create_tables(&txn)?;
        let moved = claims_rows::move_lease_rows_to_log(&txn)?;
        if moved > 0 {
            tracing::info!("moved {moved} claim leases of an older layout to the lease log");
        }
        txn.commit().map_err(|e| io_err("commit", e))?;

        let persisted = read_persisted(&db)?;
        let mut store = Store::from_snapshot(persisted.store);
        // Every record was just read from its row.
        let persisted_revision = Arc::new(AtomicI64::new(store.revision()));
        store.set_history(RedbHistory::of(&db));
        let (applied, membership) = (persisted.applied, persisted.membership);
        Ok(StateMachineStore {
            persisted_revision,
            db,
            store: Arc::new(RwLock::new(store)),
            applied,
            membership,
            observer,
            writer: None,
            snapshots,
            lease_log: persisted.lease_log,
            apply_thread: None,
            long_apply_thread: None,
            applied_in_background: 0,
            applied_on_long_apply_thread: 0,
        })
    }

    /// Where `entries`, which a client here waits for or not, are applied.
    fn apply_place(&self, entries: &[crate::types::Entry], waited_for: bool) -> ApplyPlace {
        let keys: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(cmd) => cmd.keys_touched(),
                _ => 1,
            })
            .sum();
        // Nobody waits and this member does not trail its log by much (at
        // background priority on a busy machine it would fall further
        // behind, and follower reads and a new leader wait for the
        // applies).
        let near = self
            .writer
            .as_ref()
            .is_some_and(|w| w.entries_after(self.applied) <= BACKGROUND_APPLY_MAX_BEHIND);
        apply_place(keys, waited_for, near)
    }

    /// Write applied rows through the log store's writer thread. Both must
    /// use the same database.
    pub fn with_writer(mut self, writer: StateWriter) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Who hears about applied batches; set before handing the state
    /// machine to Raft.
    pub fn set_observer(&mut self, observer: Arc<dyn ApplyObserver>) {
        self.observer = observer;
    }

    pub fn shared_store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Where this state machine writes snapshots (for `/metrics`).
    pub fn snapshot_file(&self) -> Arc<SnapshotFile> {
        self.snapshots.clone()
    }

    /// Collect what the store changed plus the applied position, to be
    /// written in one transaction.
    fn changed_rows(&mut self) -> io::Result<ChangedRows> {
        let mut store = self
            .store
            .write()
            .map_err(|_| io_err("store", "lock poisoned"))?;
        let changes = store.take_changes();
        let mut records = Vec::with_capacity(changes.records_added.len());
        for (rev, key) in &changes.records_added {
            // A record added and compacted away in the same batch is gone.
            if let Some((key, record)) = store.record_of(key, *rev) {
                records.push((
                    (rev.main, rev.sub),
                    encode("record", &(Bytes::new(key), record))?,
                ));
            }
        }
        let mut leases = Vec::with_capacity(changes.leases.len());
        for id in &changes.leases {
            leases.push((
                *id,
                store
                    .lease_record(*id)
                    .map(|r| encode("lease", r))
                    .transpose()?,
            ));
        }
        Ok(ChangedRows {
            removed: changes
                .records_removed
                .iter()
                .map(|r| (r.main, r.sub))
                .collect(),
            records,
            leases,
            claims: ClaimsRows::changed(&store, &changes.claims, &mut self.lease_log)?,
            auth: if changes.auth {
                Some(encode("auth", store.auth())?)
            } else {
                None
            },
            store_meta: encode("store meta", store.meta())?,
            applied: encode("applied", &self.applied)?,
            membership: encode("membership", &self.membership)?,
        })
    }

    /// Every row of the current state, to replace the tables after a
    /// snapshot is installed.
    fn whole_rows(&mut self) -> io::Result<WholeRows> {
        let mut store = self
            .store
            .write()
            .map_err(|_| io_err("store", "lock poisoned"))?;
        store.take_changes();
        let snap = store.snapshot().map_err(|e| io_err("store", e))?;
        drop(store);
        Ok(WholeRows {
            rows: ChangedRows::of_snapshot(
                &snap,
                &self.applied,
                &self.membership,
                &mut self.lease_log,
            )?,
        })
    }
}

/// Encoded rows for one apply batch.
struct ChangedRows {
    removed: Vec<(i64, i64)>,
    records: Vec<((i64, i64), Vec<u8>)>,
    /// `None` deletes the lease row.
    leases: Vec<(i64, Option<Vec<u8>>)>,
    claims: ClaimsRows,
    /// The whole auth state, when it changed.
    auth: Option<Vec<u8>>,
    store_meta: Vec<u8>,
    applied: Vec<u8>,
    membership: Vec<u8>,
}

impl ChangedRows {
    /// Every row of a whole state (after a snapshot install or a restore).
    fn of_snapshot(
        snap: &StoreSnapshot,
        applied: &Option<LogId>,
        membership: &StoredMembership,
        lease_log: &mut LeaseLog,
    ) -> io::Result<ChangedRows> {
        let mut records = Vec::with_capacity(snap.records.len());
        for (key, record) in &snap.records {
            records.push((
                (record.rev.main, record.rev.sub),
                encode("record", &(Bytes::new(key), record))?,
            ));
        }
        let mut leases = Vec::with_capacity(snap.leases.len());
        for lease in &snap.leases {
            leases.push((lease.id, Some(encode("lease", lease)?)));
        }
        Ok(ChangedRows {
            removed: Vec::new(),
            records,
            leases,
            claims: ClaimsRows::of_snapshot(&snap.claims, lease_log)?,
            auth: Some(encode("auth", &snap.auth)?),
            store_meta: encode("store meta", &snap.meta)?,
            applied: encode("applied", applied)?,
            membership: encode("membership", membership)?,
        })
    }

    fn write(self, db: &Database, durability: Durability) -> io::Result<()> {
        let mut txn = db.begin_write().map_err(|e| io_err("begin", e))?;
        txn.set_durability(durability)
            .map_err(|e| io_err("durability", e))?;
        self.write_in(&txn)?;
        txn.commit().map_err(|e| io_err("commit", e))
    }

    /// Bytes of the rows (keys and values), to pace durable commits.
    fn bytes(&self) -> usize {
        self.removed.len() * 16
            + self
                .records
                .iter()
                .map(|(_, v)| 16 + v.len())
                .sum::<usize>()
            + self
                .leases
                .iter()
                .map(|(_, v)| 8 + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
            + self.claims.bytes()
            + self.store_meta.len()
            + self.auth.as_ref().map_or(0, Vec::len)
            + self.applied.len()
            + self.membership.len()
    }

    fn write_in(&self, txn: &redb::WriteTransaction) -> io::Result<()> {
        let mut records = txn
            .open_table(RECORDS)
            .map_err(|e| io_err("open records", e))?;
        for rev in &self.removed {
            records
                .remove(*rev)
                .map_err(|e| io_err("remove record", e))?;
        }
        for (rev, bytes) in &self.records {
            records
                .insert(*rev, bytes.as_slice())
                .map_err(|e| io_err("insert record", e))?;
        }
        let mut lease_table = txn
            .open_table(LEASES)
            .map_err(|e| io_err("open leases", e))?;
        for (id, bytes) in &self.leases {
            match bytes {
                Some(b) => lease_table.insert(*id, b.as_slice()).map(|_| ()),
                None => lease_table.remove(*id).map(|_| ()),
            }
            .map_err(|e| io_err("write lease", e))?;
        }
        self.claims.write_in(txn)?;
        let mut meta = txn.open_table(META).map_err(|e| io_err("open meta", e))?;
        meta.insert(KEY_STORE_META, self.store_meta.as_slice())
            .map_err(|e| io_err("write meta", e))?;
        if let Some(auth) = &self.auth {
            meta.insert(KEY_AUTH, auth.as_slice())
                .map_err(|e| io_err("write auth", e))?;
        }
        meta.insert(KEY_APPLIED, self.applied.as_slice())
            .map_err(|e| io_err("write applied", e))?;
        meta.insert(KEY_MEMBERSHIP, self.membership.as_slice())
            .map_err(|e| io_err("write membership", e))?;
        Ok(())
    }
}

/// Creates the state machine's tables that do not exist yet, so read
/// transactions (snapshot builds, history reads, a restart) find them all.
fn create_tables(txn: &WriteTransaction) -> io::Result<()> {
    txn.open_table(RECORDS)
        .map_err(|e| io_err("open records", e))?;
    txn.open_table(LEASES)
        .map_err(|e| io_err("open leases", e))?;
    txn.open_table(META).map_err(|e| io_err("open meta", e))?;
    txn.open_table(SNAPSHOT)
        .map_err(|e| io_err("open snapshot", e))?;
    claims_rows::create_tables(txn)
}

/// The full state after installing a snapshot, plus the snapshot itself.
struct WholeRows {
    rows: ChangedRows,
}

impl WholeRows {
    /// Replace the tables, durably: the log below the snapshot may be
    /// purged right after.
    fn write(self, db: &Database) -> io::Result<()> {
        let txn = db.begin_write().map_err(|e| io_err("begin", e))?;
        txn.delete_table(RECORDS)
            .map_err(|e| io_err("clear records", e))?;
        txn.delete_table(LEASES)
            .map_err(|e| io_err("clear leases", e))?;
        claims_rows::clear_tables(&txn)?;
        // A state without claims (or leases) writes no rows to their
        // tables; without this they stayed deleted, and the next snapshot
        // build failed to open them, which stopped the member's Raft
        // (found by cairn-chaos once its members took snapshots).
        create_tables(&txn)?;
        self.rows.write_in(&txn)?;
        txn.commit().map_err(|e| io_err("commit", e))
    }
}

/// The state as persisted in redb, read in one read transaction: the rows
/// and the applied log id they cover, consistent with each other whatever
/// the state machine applies meanwhile.
struct Persisted {
    store: StoreSnapshot,
    /// The claims lease log's bookkeeping, read with the claims.
    lease_log: LeaseLog,
    applied: Option<LogId>,
    membership: StoredMembership,
}

fn read_persisted(db: &Database) -> io::Result<Persisted> {
    let read = db.begin_read().map_err(|e| io_err("begin read", e))?;
    let SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
    } = persisted_meta(&read)?;
    let store_meta: StoreMeta = match read
        .open_table(META)
        .map_err(|e| io_err("open meta", e))?
        .get(KEY_STORE_META)
        .map_err(|e| io_err("read meta", e))?
    {
        Some(b) => decode("store meta", b.value())?,
        None => StoreMeta::default(),
    };
    let auth = read_auth(&read)?;
    let mut records = Vec::new();
    for row in read
        .open_table(RECORDS)
        .map_err(|e| io_err("open records", e))?
        .iter()
        .map_err(|e| io_err("scan", e))?
    {
        let (_, v) = row.map_err(|e| io_err("scan records", e))?;
        let (key, record) = decode::<(ByteBuf, Record)>("record", v.value())?;
        records.push((key.into_vec(), record));
    }
    let (claims, lease_log) = claims_rows::load(&read, store_meta.now_ms)?;
    let mut leases = Vec::new();
    for row in read
        .open_table(LEASES)
        .map_err(|e| io_err("open leases", e))?
        .iter()
        .map_err(|e| io_err("scan", e))?
    {
        let (_, v) = row.map_err(|e| io_err("scan leases", e))?;
        leases.push(decode::<LeaseRecord>("lease", v.value())?);
    }
    Ok(Persisted {
        store: StoreSnapshot {
            meta: store_meta,
            records,
            leases,
            claims,
            auth,
        },
        lease_log,
        applied,
        membership,
    })
}

/// The persisted auth state; the default (auth off, nobody) before the
/// first auth change.
fn read_auth(read: &ReadTransaction) -> io::Result<AuthState> {
    match read
        .open_table(META)
        .map_err(|e| io_err("open meta", e))?
        .get(KEY_AUTH)
        .map_err(|e| io_err("read auth", e))?
    {
        Some(b) => decode("auth", b.value()),
        None => Ok(AuthState::default()),
    }
}

/// The meta of the snapshot the persisted state makes, as of `read`.
fn persisted_meta(read: &ReadTransaction) -> io::Result<SnapshotMeta> {
    let meta_table = read.open_table(META).map_err(|e| io_err("open meta", e))?;
    let last_log_id: Option<LogId> = match meta_table
        .get(KEY_APPLIED)
        .map_err(|e| io_err("read meta", e))?
    {
        Some(b) => decode("applied log id", b.value())?,
        None => None,
    };
    let last_membership: StoredMembership = match meta_table
        .get(KEY_MEMBERSHIP)
        .map_err(|e| io_err("read meta", e))?
    {
        Some(b) => decode("membership", b.value())?,
        None => StoredMembership::default(),
    };
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
    })
}

/// Writes the persisted state as of `read`, encoded as a snapshot's data
/// ([`SnapshotContents`]), to `out`, row by row: a snapshot is never whole
/// in memory while it is made. Built from the rows' bytes as stored,
/// without decoding them: the rows hold exactly the postcard encoding of
/// each `(key, record)` / lease, and postcard encodes a struct as its
/// fields in order and a sequence as a varint count then its elements.
fn write_persisted(read: &ReadTransaction, out: &mut dyn Write) -> io::Result<()> {
    use redb::ReadableTableMetadata as _;
    let meta_table = read.open_table(META).map_err(|e| io_err("open meta", e))?;
    // Cluster time, to leave out the claim leases that ran out by then.
    let now_ms = match meta_table
        .get(KEY_STORE_META)
        .map_err(|e| io_err("read meta", e))?
    {
        Some(b) => {
            out.write_all(b.value())?;
            decode::<StoreMeta>("store meta", b.value())?.now_ms
        }
        None => {
            out.write_all(&encode("store meta", &StoreMeta::default())?)?;
            StoreMeta::default().now_ms
        }
    };
    let records = read
        .open_table(RECORDS)
        .map_err(|e| io_err("open records", e))?;
    let record_count = records.len().map_err(|e| io_err("count records", e))? as usize;
    out.write_all(&encode("record count", &record_count)?)?;
    for row in records.iter().map_err(|e| io_err("scan", e))? {
        out.write_all(row.map_err(|e| io_err("scan records", e))?.1.value())?;
    }
    let leases = read
        .open_table(LEASES)
        .map_err(|e| io_err("open leases", e))?;
    let lease_count = leases.len().map_err(|e| io_err("count leases", e))? as usize;
    out.write_all(&encode("lease count", &lease_count)?)?;
    for row in leases.iter().map_err(|e| io_err("scan", e))? {
        out.write_all(row.map_err(|e| io_err("scan leases", e))?.1.value())?;
    }
    out.write_all(&encode("claims", &claims_rows::load(read, now_ms)?.0)?)?;
    out.write_all(&encode("auth", &read_auth(read)?)?)
}

/// The persisted state as a snapshot, as of a read transaction it keeps
/// open: cheap to make, written out only when read
/// ([`SnapshotData::written`]). A read transaction sees one commit
/// whatever is written after it.
fn persisted_snapshot(db: &Database, snapshots: &Arc<SnapshotFile>) -> io::Result<Snapshot> {
    let read = db.begin_read().map_err(|e| io_err("begin read", e))?;
    let meta = persisted_meta(&read)?;
    let snapshot = SnapshotData::unwritten(
        snapshots.clone(),
        Box::new(move |out| write_persisted(&read, out)),
    );
    Ok(Snapshot { meta, snapshot })
}

/// Moves a snapshot left in redb by an older version into the file.
fn move_snapshot_out_of_redb(db: &Database, snapshots: &SnapshotFile) -> io::Result<()> {
    let txn = db.begin_write().map_err(|e| io_err("begin", e))?;
    {
        let mut t = txn
            .open_table(SNAPSHOT)
            .map_err(|e| io_err("open snapshot", e))?;
        let found = {
            let meta = t.get(KEY_SNAPSHOT_META).map_err(|e| io_err("read", e))?;
            let data = t.get(KEY_SNAPSHOT_DATA).map_err(|e| io_err("read", e))?;
            match (meta, data) {
                (Some(m), Some(d)) => Some((
                    decode::<SnapshotMeta>("snapshot meta", m.value())?,
                    d.value().to_vec(),
                )),
                _ => None,
            }
        };
        let Some((meta, data)) = found else {
            return Ok(());
        };
        snapshots.save(&meta, &data)?;
        t.remove(KEY_SNAPSHOT_META)
            .map_err(|e| io_err("remove snapshot", e))?;
        t.remove(KEY_SNAPSHOT_DATA)
            .map_err(|e| io_err("remove snapshot", e))?;
    }
    txn.commit().map_err(|e| io_err("commit", e))
}

/// Takes a snapshot of the persisted state, for openraft to purge the log
/// behind it.
///
/// openraft runs `build_snapshot` in a task of its own while the state
/// machine goes on applying, so the builder needs a view that later applies
/// cannot change: a redb read transaction (redb's readers see a fixed
/// commit), the rows and the applied log id written with them. That may be
/// a little behind what was applied in memory (rows queued to the writer
/// after the build began), which only makes the snapshot's log id smaller;
/// the build first waits for the rows queued before it.
///
/// Nothing is copied: openraft keeps only the meta of a built snapshot, and
/// a leader asks for the current one ([`RaftStateMachine::get_current_snapshot`])
/// when it must send one. The log is purged only after the rows it covers
/// are durable (`LogStore::purge` commits durably, queued behind them).
pub struct SnapshotBuilder {
    db: Arc<Database>,
    snapshots: Arc<SnapshotFile>,
    /// The log writer the applied rows are queued on, if any: the rows of
    /// everything applied before the build are written before it reads.
    writer: Option<StateWriter>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        if let Some(w) = &self.writer {
            w.run(|| Ok(())).await?;
        }
        persisted_snapshot(&self.db, &self.snapshots)
    }
}

/// Fewest keys a batch nobody here waits for must touch to be applied on
/// the [`ApplyThread`]. Handing it over costs two thread switches: on the
/// benchmark machine, with every follower batch handed over, 1-client
/// puts cost 12-25 % more server CPU each (60-135 µs per follower apply),
/// where a 1,000-key claims apply takes 0.2-0.4 ms.
const BACKGROUND_APPLY_KEYS: usize = 256;

/// Fewest keys a batch must touch to be applied on the long-apply
/// [`ApplyThread`] (at normal priority) rather than on the caller's, the
/// async runtime's, thread. About a millisecond of work: a 1,000-key
/// `CanOffload` applies in 0.1-0.4 ms, and the hand-over (two thread
/// switches) is worth it only well above that. 16 clients offloading
/// 1,000 keys each to a member with one runtime thread: p99 37-71 ms with
/// the long batches applied on the runtime's thread, 27-33 ms on this one
/// (two runtime threads and no such thread: 22-45 ms; BENCHMARKS.md,
/// session 20).
const LONG_APPLY_KEYS: usize = 4096;

/// Most log entries a member may hold beyond the batch being applied for
/// that batch to go to the [`ApplyThread`]; further behind, it applies on
/// the caller's thread at normal priority and catches up.
const BACKGROUND_APPLY_MAX_BEHIND: u64 = 32;

/// Where a batch is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApplyPlace {
    /// On the caller's thread (the async runtime's): most batches, which
    /// take less than the hand-over to another thread would.
    Here,
    /// On the background [`ApplyThread`].
    Background,
    /// On the long-apply [`ApplyThread`], at normal priority.
    Long,
}

/// Where a batch touching `keys` keys is applied: in the background if no
/// client here waits for it, it is long enough to be worth the two thread
/// switches, and the member is `near` the end of its log; otherwise on the
/// long-apply thread if it is long; otherwise here.
fn apply_place(keys: usize, waited_for: bool, near: bool) -> ApplyPlace {
    if !waited_for && near && keys >= BACKGROUND_APPLY_KEYS {
        ApplyPlace::Background
    } else if keys >= LONG_APPLY_KEYS {
        ApplyPlace::Long
    } else {
        ApplyPlace::Here
    }
}

/// The thread in `slot`, started (named `name`, at `priority`) on first
/// use.
fn thread_started<'a>(
    slot: &'a mut Option<ApplyThread>,
    name: &str,
    priority: Priority,
) -> io::Result<&'a ApplyThread> {
    let thread = match slot.take() {
        Some(t) => t,
        None => ApplyThread::start(name, priority)?,
    };
    Ok(slot.insert(thread))
}

/// What applying a batch to the store gives back.
struct Applied {
    /// One per entry, in order.
    results: Vec<CommandResult>,
    events: Vec<Event>,
    /// The batch's last time stamp, if any.
    stamp: Option<Stamp>,
    /// The store's revision after the batch.
    revision: i64,
}

/// Applies `entries` to the store under its write lock. `persisted` is
/// the revision whose rows redb holds: older values may leave memory.
fn apply_to_store(
    store: &SharedStore,
    persisted: i64,
    events_wanted: bool,
    entries: &[crate::types::Entry],
) -> io::Result<Applied> {
    let mut store = store
        .write()
        .map_err(|_| io_err("store", "lock poisoned"))?;
    store.drop_history_values(persisted);
    store.set_events_wanted(events_wanted);
    let mut results = Vec::with_capacity(entries.len());
    let mut events = Vec::new();
    let mut stamp = None;
    for entry in entries {
        let result = match &entry.payload {
            EntryPayload::Normal(cmd) => {
                if let Some(now_ms) = cmd.now_ms() {
                    stamp = Some(Stamp {
                        term: entry.log_id().leader_id.term,
                        now_ms,
                    });
                }
                let applied = store.apply(cmd);
                events.extend(applied.events);
                applied.result
            }
            EntryPayload::Blank | EntryPayload::Membership(_) => CommandResult::Empty,
        };
        results.push(result);
    }
    Ok(Applied {
        results,
        events,
        stamp,
        revision: store.revision(),
    })
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let batch: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut entries = Vec::with_capacity(batch.len());
        let mut responders = Vec::with_capacity(batch.len());
        for (entry, responder) in batch {
            self.applied = Some(entry.log_id());
            if let EntryPayload::Membership(m) = &entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id()), m.clone());
            }
            entries.push(entry);
            responders.push(responder);
        }
        let started = std::time::Instant::now();
        let store = self.store.clone();
        let persisted = self.persisted_revision.load(Ordering::Acquire);
        let events_wanted = self.observer.wants_events();
        // A client waits for this apply only on the member that proposed
        // the entries; elsewhere a long one yields to the work clients
        // wait for.
        let Applied {
            results,
            events,
            stamp,
            revision,
        } = match self.apply_place(&entries, responders.iter().any(Option::is_some)) {
            ApplyPlace::Here => apply_to_store(&store, persisted, events_wanted, &entries)?,
            place => {
                let thread = if place == ApplyPlace::Background {
                    self.applied_in_background += 1;
                    thread_started(
                        &mut self.apply_thread,
                        "cairn-raft-apply",
                        Priority::Background,
                    )?
                } else {
                    self.applied_on_long_apply_thread += 1;
                    thread_started(
                        &mut self.long_apply_thread,
                        "cairn-apply-big",
                        Priority::Normal,
                    )?
                };
                thread
                    .run(move || apply_to_store(&store, persisted, events_wanted, &entries))
                    .await??
            }
        };
        crate::metrics::APPLY.observe(started.elapsed());
        self.observer
            .applied(events_wanted.then_some(events), revision, stamp);
        // Answer first: the rows are not durable when queued either (the
        // log is, until a checkpoint covers them), and the next apply
        // waits for this one to return anyway.
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        let rows = self.changed_rows()?;
        match &self.writer {
            // Queued behind the log's writes, in order; durable with the
            // next fsync, like a `Durability::None` commit of our own.
            Some(w) => {
                let persisted = self.persisted_revision.clone();
                w.submit(
                    rows.bytes(),
                    Box::new(move |txn| rows.write_in(txn)),
                    Box::new(move || {
                        persisted.fetch_max(revision, Ordering::Release);
                    }),
                )?
            }
            None => {
                let db = self.db.clone();
                tokio::task::spawn_blocking(move || rows.write(&db, Durability::None))
                    .await
                    .map_err(|e| io_err("apply persist task", e))??;
                self.persisted_revision
                    .fetch_max(revision, Ordering::Release);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            writer: self.writer.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_bytes()?;
        let file = SnapshotContents::decode(&bytes)?;
        // The file first: if a crash comes before the rows below, this
        // member holds a snapshot ahead of its state, which is still a
        // committed state to send; the other order could leave it with a
        // purged log and only an older snapshot.
        let snapshots = self.snapshots.clone();
        let saved_meta = meta.clone();
        tokio::task::spawn_blocking(move || snapshots.save(&saved_meta, &bytes))
            .await
            .map_err(|e| io_err("snapshot save task", e))??;
        let mut store = Store::from_snapshot(file.store);
        store.set_history(RedbHistory::of(&self.db));
        let revision = store.revision();
        *self
            .store
            .write()
            .map_err(|_| io_err("store", "lock poisoned"))? = store;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let this_db = self.db.clone();
        let whole = self.whole_rows()?;
        match &self.writer {
            // After every queued batch's rows, which it replaces.
            Some(w) => w.run(move || whole.write(&this_db)).await?,
            None => tokio::task::spawn_blocking(move || whole.write(&this_db))
                .await
                .map_err(|e| io_err("install persist task", e))??,
        }
        self.persisted_revision
            .fetch_max(revision, Ordering::Release);
        // Watchers cannot be fed a gap: observers resynchronise from the
        // new state's history (or cancel watchers as compacted).
        self.observer.snapshot_installed(revision);
        Ok(())
    }

    /// The persisted state as of now (see [`persisted_snapshot`]): never
    /// older than the last snapshot built or installed, nor than the purged
    /// log (a purge makes the rows it covers durable first). The one
    /// exception is a saved snapshot ahead of the rows: a crash came
    /// between saving a received snapshot and writing its rows, and the
    /// saved file is the newer state (openraft installs it at start-up).
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let current = persisted_snapshot(&self.db, &self.snapshots)?;
        let saved = self.snapshots.saved_log_id()?;
        if saved.is_some_and(|saved| saved > current.meta.last_log_id) {
            let snapshots = self.snapshots.clone();
            let loaded = tokio::task::spawn_blocking(move || snapshots.load())
                .await
                .map_err(|e| io_err("snapshot load task", e))??;
            return Ok(loaded.map(|(meta, data)| Snapshot {
                meta,
                snapshot: data.into_data(),
            }));
        }
        Ok(current.meta.last_log_id.is_some().then_some(current))
    }
}

impl StateMachineStore {
    /// Write `store` into `db` as the whole persisted state of a state
    /// machine that has applied nothing: its records, leases and scalars,
    /// with no applied log id and an empty membership. A node opening `db`
    /// is therefore a fresh member (it bootstraps or joins as on an empty
    /// data dir) whose keyspace is `store`. This is how a snapshot is
    /// restored. Refuses a database that already holds state machine data.
    /// The write is durable.
    pub fn write_restored(db: &Database, store: &Store) -> io::Result<()> {
        use redb::ReadableTableMetadata as _;
        let snap = store.snapshot().map_err(|e| io_err("store", e))?;
        let rows = ChangedRows::of_snapshot(
            &snap,
            &None,
            &StoredMembership::default(),
            &mut LeaseLog::default(),
        )?;
        let txn = db.begin_write().map_err(|e| io_err("begin", e))?;
        {
            let records = txn
                .open_table(RECORDS)
                .map_err(|e| io_err("open records", e))?;
            let leases = txn
                .open_table(LEASES)
                .map_err(|e| io_err("open leases", e))?;
            let meta = txn.open_table(META).map_err(|e| io_err("open meta", e))?;
            let used = !records.is_empty().map_err(|e| io_err("scan records", e))?
                || !leases.is_empty().map_err(|e| io_err("scan leases", e))?
                || !meta.is_empty().map_err(|e| io_err("scan meta", e))?;
            if used {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the database already holds state machine data",
                ));
            }
        }
        rows.write_in(&txn)?;
        txn.commit().map_err(|e| io_err("commit", e))
    }
}

#[cfg(test)]
#[path = "state_machine_apply_tests.rs"]
mod apply_tests;

#[cfg(test)]
mod restored_tests {
    use super::*;
    use crate::types::{Entry, LeaderId, Request};
    use cairn_store::{Command, PutRequest};
    use openraft::vote::RaftLeaderId as _;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(LeaderId::new(term, 1).to_committed(), index)
    }

    /// A state machine opened on a database restored from
    /// [`sample_store`], its snapshots in `snapshot/` of the temporary
    /// directory.
    fn restored() -> (tempfile::TempDir, Arc<Database>, Store, StateMachineStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let store = sample_store();
        StateMachineStore::write_restored(&db, &store).unwrap();
        let sm = StateMachineStore::open(db.clone(), &dir.path().join("snapshot")).unwrap();
        (dir, db, store, sm)
    }

    fn sample_store() -> Store {
        let mut store = Store::new();
        let lease = match store
            .apply(&Command::LeaseGrant {
                id: 0,
                ttl_secs: 30,
                now_ms: 1_000,
            })
            .result
        {
            CommandResult::LeaseGrant(g) => g.id,
            other => panic!("lease grant: {other:?}"),
        };
        for (key, lease) in [("a", 0), ("b", lease), ("a", 0)] {
            store.apply(&Command::Put(PutRequest {
                key: key.into(),
                value: format!("{key}-value").into_bytes(),
                lease,
                ..Default::default()
            }));
        }
        store
    }

    #[tokio::test]
    async fn restored_state_opens_as_a_fresh_state_machine_with_the_same_keyspace() {
        let (_dir, _db, store, mut sm) = restored();
        let opened = sm.shared_store().read().unwrap().snapshot().unwrap();
        assert_eq!(opened, store.snapshot().unwrap());
        assert_eq!(opened.meta.revision, 3);
        assert_eq!(opened.leases.len(), 1);
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, None, "nothing applied: the node bootstraps");
        assert_eq!(membership, StoredMembership::default());
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn history_values_dropped_from_memory_are_read_back_from_their_rows() {
        let (_dir, db, store, sm) = restored();
        let shared = sm.shared_store();
        let old_a = cairn_store::RangeRequest {
            range: cairn_store::KeyRange::single("a"),
            revision: 1,
            ..Default::default()
        };
        let want = store.range(&old_a).unwrap();
        {
            let mut s = shared.write().unwrap();
            assert_eq!(s.superseded_values_held(), 1, "a@1, superseded at 3");
            let head = s.revision();
            s.drop_history_values(head);
            assert_eq!(s.superseded_values_held(), 0);
        }
        let got = shared.read().unwrap().range(&old_a).unwrap();
        assert_eq!(got, want);
        assert_eq!(got.kvs[0].value, b"a-value");
        assert_eq!(
            shared.read().unwrap().snapshot().unwrap(),
            store.snapshot().unwrap()
        );
        // The store does not keep the database open; once it is closed a
        // read back is an error, not an empty value.
        drop(sm);
        drop(db);
        let err = shared.read().unwrap().range(&old_a).unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }

    #[tokio::test]
    async fn a_snapshot_is_the_persisted_state_untouched_by_later_applies() {
        let (_dir, _db, store, mut sm) = restored();
        let mut builder = sm.get_snapshot_builder().await;
        // openraft builds in a task of its own while the state machine
        // applies on: a put lands in memory between making the builder and
        // building, its rows not yet written.
        sm.shared_store()
            .write()
            .unwrap()
            .apply(&Command::Put(PutRequest {
                key: "late".into(),
                value: b"v".to_vec(),
                ..Default::default()
            }));
        let snap = builder.build_snapshot().await.unwrap();
        let bytes = snap.snapshot.into_bytes().unwrap();
        let file: SnapshotContents = decode("snapshot", &bytes).unwrap();
        assert_eq!(file.store, store.snapshot().unwrap());
        assert_eq!(file.store.meta.revision, 3, "the late put is not in it");
    }

    /// Builds a snapshot of `sm` as openraft would.
    async fn build(sm: &mut StateMachineStore) -> io::Result<Snapshot> {
        sm.get_snapshot_builder().await.build_snapshot().await
    }

    /// A build copies nothing: the snapshot is written out only when it is
    /// read, from the state as of the build, whatever was written since;
    /// a snapshot that cannot be written fails its reader, not the build.
    #[tokio::test]
    async fn a_build_copies_nothing_and_its_view_outlives_later_writes() {
        let (dir, db, store, mut sm) = restored();
        let snapshot_dir = dir.path().join("snapshot");
        let built = build(&mut sm).await.unwrap();
        assert!(built.meta.last_log_id.is_none(), "a restored state");
        assert_eq!(std::fs::read_dir(&snapshot_dir).unwrap().count(), 0);
        assert_eq!(sm.snapshots.written_bytes(), 0);

        // Every record row deleted after the build.
        let txn = db.begin_write().unwrap();
        txn.open_table(RECORDS)
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        txn.commit().unwrap();

        let written = built.snapshot.clone().written().unwrap();
        assert!(sm.snapshots.written_bytes() > 0);
        let file: SnapshotContents = decode("snapshot", &written.into_bytes().unwrap()).unwrap();
        assert_eq!(file.store, store.snapshot().unwrap(), "as of the build");
        assert_eq!(std::fs::read_dir(&snapshot_dir).unwrap().count(), 0);

        // The directory gone: writing fails, building does not.
        std::fs::remove_dir(&snapshot_dir).unwrap();
        let err = built.snapshot.written().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(build(&mut sm).await.is_ok());
    }

    /// The current snapshot is the persisted state, except a received
    /// snapshot saved ahead of its rows (a crash between the two), which
    /// openraft must install at start-up.
    #[tokio::test]
    async fn the_current_snapshot_is_the_persisted_state_or_a_saved_one_ahead_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let leader_db = Arc::new(Database::create(dir.path().join("leader")).unwrap());
        let mut leader =
            StateMachineStore::open(leader_db, &dir.path().join("leader-snapshot")).unwrap();
        assert!(leader.get_current_snapshot().await.unwrap().is_none());
        let entries = [
            Entry::new_blank(log_id(1, 1)),
            Entry::new_normal(
                log_id(1, 2),
                Request::from(Command::Put(PutRequest {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            ),
        ];
        let batch = entries.into_iter().map(|e| Ok((e, None)));
        leader.apply(futures::stream::iter(batch)).await.unwrap();
        let current = leader.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(1, 2)));
        let sent = current.snapshot.into_bytes().unwrap();

        // A follower that saved the leader's snapshot and crashed before
        // writing its rows.
        let follower_dir = dir.path().join("follower-snapshot");
        SnapshotFile::open(&follower_dir)
            .unwrap()
            .save(&current.meta, &sent)
            .unwrap();
        let db = Arc::new(Database::create(dir.path().join("follower")).unwrap());
        let mut follower = StateMachineStore::open(db, &follower_dir).unwrap();
        let found = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(found.meta, current.meta);
        assert!(matches!(found.snapshot, SnapshotData::File { .. }));
        follower
            .install_snapshot(&found.meta, found.snapshot)
            .await
            .unwrap();
        // Installed: the persisted state stands for it again.
        let after = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(after.meta, current.meta);
        assert!(matches!(after.snapshot, SnapshotData::Unwritten(_)));
        assert_eq!(after.snapshot.into_bytes().unwrap(), sent);
    }

    /// A state without claims or leases writes no rows to their tables:
    /// installing it must leave them in place for the next build.
    #[tokio::test]
    async fn a_member_that_installed_a_snapshot_without_claims_builds_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let leader_db = Arc::new(Database::create(dir.path().join("leader")).unwrap());
        let mut store = Store::new();
        store.apply(&Command::Put(PutRequest {
            key: "k".into(),
            value: b"v".to_vec(),
            ..Default::default()
        }));
        StateMachineStore::write_restored(&leader_db, &store).unwrap();
        let mut leader =
            StateMachineStore::open(leader_db, &dir.path().join("leader-snapshot")).unwrap();
        let sent = build(&mut leader).await.unwrap();

        let db = Arc::new(Database::create(dir.path().join("follower")).unwrap());
        let mut follower =
            StateMachineStore::open(db.clone(), &dir.path().join("follower-snapshot")).unwrap();
        follower
            .install_snapshot(&sent.meta, sent.snapshot)
            .await
            .unwrap();
        let built = build(&mut follower).await.unwrap();
        let file: SnapshotContents =
            decode("snapshot", &built.snapshot.into_bytes().unwrap()).unwrap();
        assert_eq!(file.store, store.snapshot().unwrap());
        // And a restart reads the same state.
        drop(follower);
        let reopened = StateMachineStore::open(db, &dir.path().join("follower-snapshot")).unwrap();
        assert_eq!(
            reopened.shared_store().read().unwrap().snapshot().unwrap(),
            store.snapshot().unwrap()
        );
    }

    #[tokio::test]
    async fn a_snapshot_left_in_redb_by_an_older_version_moves_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
        };
        // Ahead of the (empty) persisted state, so it is the current one.
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(1, 5)),
            ..meta
        };
        let data = encode(
            "snapshot",
            &SnapshotContents {
                store: sample_store().snapshot().unwrap(),
            },
        )
        .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(SNAPSHOT).unwrap();
            t.insert(KEY_SNAPSHOT_META, encode("meta", &meta).unwrap().as_slice())
                .unwrap();
            t.insert(KEY_SNAPSHOT_DATA, data.as_slice()).unwrap();
        }
        txn.commit().unwrap();

        let mut sm = StateMachineStore::open(db.clone(), &dir.path().join("snapshot")).unwrap();
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, meta);
        assert_eq!(current.snapshot.into_bytes().unwrap(), data);
        let read = db.begin_read().unwrap();
        let t = read.open_table(SNAPSHOT).unwrap();
        assert!(
            t.get(KEY_SNAPSHOT_DATA).unwrap().is_none(),
            "moved, not copied"
        );
    }

    #[test]
    fn a_snapshot_encoded_from_the_rows_decodes_as_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let mut store = sample_store();
        store.apply(&Command::DeleteRange(cairn_store::DeleteRangeRequest {
            range: cairn_store::KeyRange::single("a"),
            prev_kv: false,
        }));
        StateMachineStore::write_restored(&db, &store).unwrap();
        let db = Arc::new(db);
        // Opening creates the tables write_restored left out (claims).
        drop(StateMachineStore::open(db.clone(), &dir.path().join("snapshot")).unwrap());
        let read = db.begin_read().unwrap();
        assert_eq!(persisted_meta(&read).unwrap().last_log_id, None);
        let mut bytes = Vec::new();
        write_persisted(&read, &mut bytes).unwrap();
        let decoded: SnapshotContents = decode("snapshot", &bytes).unwrap();
        assert_eq!(decoded.store, store.snapshot().unwrap());
        let persisted = read_persisted(&db).unwrap();
        assert_eq!(
            bytes,
            encode(
                "snapshot",
                &SnapshotContents {
                    store: persisted.store
                }
            )
            .unwrap()
        );
    }

    #[test]
    fn restoring_over_existing_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let store = sample_store();
        StateMachineStore::write_restored(&db, &store).unwrap();
        let err = StateMachineStore::write_restored(&db, &store).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
