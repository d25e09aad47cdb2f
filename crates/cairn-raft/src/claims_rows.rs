//! Block-claims state in redb, beside the state machine's other tables.
//!
//! - `sm_claims`: one row per stored entry, key = namespace id (big-endian
//!   u32) + the postcard-encoded claim key, value = the postcard-encoded
//!   slot. (Databases written before the lease log held lease slots here
//!   too; opening one moves them to the lease log.)
//! - `sm_claims_ns`: one row per namespace (configuration, counters, touch
//!   sequence).
//! - `sm_claims_lease_log`: claim leases, as a log. Each apply batch that
//!   changes leases appends **one** row listing each changed key's lease as
//!   it now is (`None`: no lease). Leases are short-lived and their keys
//!   are random block hashes: as one row per key, every grant, refresh,
//!   conversion and expiry copy-on-wrote a different B-tree page, about a
//!   third of all CPU under CanOffload load. When the log has grown past
//!   twice its base (and a floor), the next batch replaces it with one base
//!   row holding every live lease, so its size stays proportional to the
//!   live leases.
//!
//! Rows are written in the state machine's per-batch transaction, so claims
//! and the applied log id never disagree; the eviction and deadline indexes
//! are rebuilt from the rows at open.

use std::collections::{BTreeMap, VecDeque};
use std::io;

use cairn_store::claims::{
    ClaimKey, ClaimsChanges, ClaimsSnapshot, KeyList, LeaseChange, LeaseChanges, LeaseChangesPart,
    NamespaceRow, Slot,
};
use cairn_store::Store;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

const CLAIMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sm_claims");
const CLAIMS_NS: TableDefinition<u32, &[u8]> = TableDefinition::new("sm_claims_ns");
const LEASE_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("sm_claims_lease_log");

/// The lease log is never compacted while it holds fewer bytes than this.
const LEASE_LOG_COMPACT_MIN_BYTES: u64 = 8 * 1024 * 1024;
/// Past [`LEASE_LOG_COMPACT_MIN_BYTES`], the log is compacted once it holds
/// more than this many records per live lease.
const LEASE_LOG_RECORDS_PER_LIVE: u64 = 4;

fn io_err(context: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{context}: {e}"))
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> io::Result<Vec<u8>> {
    crate::encoding::to_vec_sized(value).map_err(|e| io_err(what, e))
}

fn decode<'a, T: serde::Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io_err(&format!("corrupt {what}"), e))
}

fn row_key(ns: u32, key: &ClaimKey) -> io::Result<Vec<u8>> {
    let mut out = ns.to_be_bytes().to_vec();
    out.extend(encode("claim key", key)?);
    Ok(out)
}

/// The lease log as the writes queued so far leave it, to decide which
/// rows go: kept by the state machine across batches, rebuilt from the
/// table at open.
///
/// Two ways a row goes, both keeping the log proportional to the leases
/// that can still be live:
/// - **Trimmed** from the front: once every lease a row granted has a
///   deadline before the earliest lease deadline still pending
///   ([`Claims::lease_floor_ms`]), all of them have ended, and each key's
///   later state is in a later row or in `sm_claims`. Only a prefix is
///   trimmed, so a "no lease" record is never dropped while an older
///   record it overrides stays. This costs a row delete, no encoding, so
///   it runs on the apply path without a stall.
/// - **Compacted**: when leases are refreshed again and again within
///   their TTL, the log outgrows them before its rows can be trimmed;
///   past [`LEASE_LOG_RECORDS_PER_LIVE`] records per live lease (and a
///   floor in bytes) the next batch replaces it with one base row of the
///   live leases.
///
/// [`Claims::lease_floor_ms`]: cairn_store::claims::Claims::lease_floor_ms
#[derive(Debug, Clone)]
pub(crate) struct LeaseLog {
    rows: VecDeque<LeaseRow>,
    /// Id of the next row appended.
    next_id: u64,
    /// Records (one key's lease as of one batch) in all rows.
    records: u64,
    /// Encoded bytes of all rows.
    bytes: u64,
    /// Never compact below this ([`LEASE_LOG_COMPACT_MIN_BYTES`]; tests
    /// lower it).
    min_bytes: u64,
}

/// What the log keeps in memory about one of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaseRow {
    id: u64,
    /// The latest deadline of a lease the row grants (0 if none).
    last_deadline_ms: u64,
    records: u64,
    bytes: u64,
}

impl Default for LeaseLog {
    fn default() -> Self {
        LeaseLog {
            rows: VecDeque::new(),
            next_id: 0,
            records: 0,
            bytes: 0,
            min_bytes: LEASE_LOG_COMPACT_MIN_BYTES,
        }
    }
}

impl LeaseLog {
    fn push(&mut self, row: LeaseRow) {
        self.records += row.records;
        self.bytes += row.bytes;
        self.next_id = row.id + 1;
        self.rows.push_back(row);
    }

    /// Drops the rows whose leases have all ended, given that no live
    /// lease ends before `floor_ms` (`None`: none is live); returns the
    /// id of the last row dropped.
    fn trim(&mut self, floor_ms: Option<u64>) -> Option<u64> {
        let mut last = None;
        while let Some(row) = self.rows.front() {
            if floor_ms.is_some_and(|floor| row.last_deadline_ms >= floor) {
                break;
            }
            self.records -= row.records;
            self.bytes -= row.bytes;
            last = Some(row.id);
            self.rows.pop_front();
        }
        last
    }

    /// Appends a row of `records` records, `bytes` long; returns its id.
    fn append(&mut self, records: u64, bytes: u64, last_deadline_ms: u64) -> u64 {
        let id = self.next_id;
        self.push(LeaseRow {
            id,
            last_deadline_ms,
            records,
            bytes,
        });
        id
    }

    fn compaction_due(&self, live: usize) -> bool {
        self.bytes > self.min_bytes
            && self.records > LEASE_LOG_RECORDS_PER_LIVE.saturating_mul(live as u64)
    }

    /// The log is now one base row (id 0) of `records` live leases.
    fn rebase(&mut self, records: u64, bytes: u64, last_deadline_ms: u64) {
        *self = LeaseLog {
            min_bytes: self.min_bytes,
            ..LeaseLog::default()
        };
        self.push(LeaseRow {
            id: 0,
            last_deadline_ms,
            records,
            bytes,
        });
    }

    #[cfg(test)]
    pub(crate) fn with_min_bytes(min_bytes: u64) -> LeaseLog {
        LeaseLog {
            min_bytes,
            ..LeaseLog::default()
        }
    }
}

/// The latest deadline among `leases` (0 if none).
fn last_deadline<'a>(leases: impl Iterator<Item = &'a Option<(i64, u64)>>) -> u64 {
    leases.flatten().map(|(_, d)| *d).max().unwrap_or(0)
}

/// Encoded claims rows of one apply batch (or of a whole state).
#[derive(Default)]
pub(crate) struct ClaimsRows {
    /// Stored-entry rows; `None` deletes the key's row.
    slots: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    namespaces: Vec<(u32, Vec<u8>)>,
    /// Lease-log rows up to this id go (their leases have all ended).
    lease_trim_through: Option<u64>,
    /// This batch's lease-log row and its id, if any lease changed.
    lease_row: Option<(u64, Vec<u8>)>,
    /// Replaces the whole lease log (a compaction or a whole state).
    lease_base: Option<Vec<u8>>,
}

impl ClaimsRows {
    /// Bytes of the rows (keys and values).
    pub(crate) fn bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
            + self
                .namespaces
                .iter()
                .map(|(_, v)| 4 + v.len())
                .sum::<usize>()
            + self.lease_row.as_ref().map_or(0, |(_, v)| 8 + v.len())
            + self.lease_base.as_ref().map_or(0, Vec::len)
    }

    /// The rows `changes` names, as they are now in `store`; `log` is the
    /// lease log, updated for what these rows will write.
    pub(crate) fn changed(
        store: &Store,
        changes: &ClaimsChanges,
        log: &mut LeaseLog,
    ) -> io::Result<ClaimsRows> {
        let claims = store.claims();
        let mut rows = ClaimsRows::default();
        rows.slots.reserve(changes.stored.len());
        for (ns, key) in &changes.stored {
            let row = match claims.slot(*ns, key) {
                Some(slot @ Slot::Stored(_)) => Some(encode("claim slot", slot)?),
                // Removed, evicted, or removed and leased again.
                _ => None,
            };
            rows.slots.push((row_key(*ns, key)?, row));
        }
        for ns in &changes.namespaces {
            if let Some(row) = claims.namespace_row(*ns) {
                rows.namespaces
                    .push((*ns, encode("claims namespace", row)?));
            }
        }
        let leases = &changes.leases;
        let mut appended = None;
        if !leases.is_empty() {
            let row = encode_lease_changes(leases)?;
            let last = leases.last_deadline_ms();
            appended = Some((log.append(leases.len() as u64, row.len() as u64, last), row));
        }
        // After the append: a batch that ends the last live lease leaves
        // no row at all, its own included.
        let trimmed = log.trim(claims.lease_floor_ms());
        rows.lease_trim_through = trimmed;
        rows.lease_row = appended.filter(|(id, _)| trimmed.is_none_or(|last| *id > last));
        if log.compaction_due(claims.lease_count()) {
            let (base, records, last) = encode_leases(store)?;
            log.rebase(records, base.len() as u64, last);
            rows.lease_base = Some(base);
            rows.lease_row = None;
            rows.lease_trim_through = None;
        }
        Ok(rows)
    }

    /// Every row of a whole state; `log` becomes the new lease log.
    pub(crate) fn of_snapshot(snap: &ClaimsSnapshot, log: &mut LeaseLog) -> io::Result<ClaimsRows> {
        let mut rows = ClaimsRows::default();
        let mut leases: Vec<LeaseChange> = Vec::new();
        for (ns, key, slot) in &snap.slots {
            match slot {
                Slot::Stored(_) => rows
                    .slots
                    .push((row_key(*ns, key)?, Some(encode("claim slot", slot)?))),
                Slot::Leased {
                    session_id,
                    deadline_ms,
                } => leases.push((*ns, key.clone(), Some((*session_id, *deadline_ms)))),
            }
        }
        for row in &snap.namespaces {
            rows.namespaces
                .push((row.id, encode("claims namespace", row)?));
        }
        let base = encode("claim leases", &leases)?;
        let last = last_deadline(leases.iter().map(|(_, _, l)| l));
        log.rebase(leases.len() as u64, base.len() as u64, last);
        rows.lease_base = Some(base);
        Ok(rows)
    }

    pub(crate) fn write_in(&self, txn: &WriteTransaction) -> io::Result<()> {
        if !self.slots.is_empty() {
            let mut slots = txn
                .open_table(CLAIMS)
                .map_err(|e| io_err("open claims", e))?;
            for (key, value) in &self.slots {
                match value {
                    Some(v) => slots.insert(key.as_slice(), v.as_slice()).map(|_| ()),
                    None => slots.remove(key.as_slice()).map(|_| ()),
                }
                .map_err(|e| io_err("write claim", e))?;
            }
        }
        if !self.namespaces.is_empty() {
            let mut namespaces = txn
                .open_table(CLAIMS_NS)
                .map_err(|e| io_err("open claims namespaces", e))?;
            for (id, row) in &self.namespaces {
                namespaces
                    .insert(*id, row.as_slice())
                    .map_err(|e| io_err("write claims namespace", e))?;
            }
        }
        if let Some(base) = &self.lease_base {
            txn.delete_table(LEASE_LOG)
                .map_err(|e| io_err("clear claim lease log", e))?;
            txn.open_table(LEASE_LOG)
                .map_err(|e| io_err("open claim lease log", e))?
                .insert(0, base.as_slice())
                .map_err(|e| io_err("write claim lease base", e))?;
            return Ok(());
        }
        if self.lease_trim_through.is_none() && self.lease_row.is_none() {
            return Ok(());
        }
        let mut log = txn
            .open_table(LEASE_LOG)
            .map_err(|e| io_err("open claim lease log", e))?;
        if let Some(last) = self.lease_trim_through {
            log.retain_in(..=last, |_, _| false)
                .map_err(|e| io_err("trim claim lease log", e))?;
        }
        if let Some((id, row)) = &self.lease_row {
            log.insert(*id, row.as_slice())
                .map_err(|e| io_err("write claim lease log", e))?;
        }
        Ok(())
    }
}

/// `changes` as one lease-log row: the bytes of `Vec<LeaseChange>` in
/// postcard, written by hand for a grant's keys. A grant's changes differ
/// only in their key, so its namespace, key tag and lease are encoded once
/// and each key costs one varint and two copies: 9.6 µs for 1,000 `u64`
/// keys where serde took 20.8 µs (and building each change besides).
fn encode_lease_changes(changes: &LeaseChanges) -> io::Result<Vec<u8>> {
    let what = "claim leases";
    let mut out = Vec::with_capacity(changes.len() * 32 + 10);
    push_varint(&mut out, changes.len() as u128);
    for part in changes.parts() {
        let grant = match part {
            LeaseChangesPart::One(change) => {
                out.extend_from_slice(&encode(what, change)?);
                continue;
            }
            LeaseChangesPart::Granted(grant) => grant,
        };
        let lease = encode(what, &Some((grant.session_id, grant.deadline_ms)))?;
        // The namespace, then the key's enum tag: the encoding of the key
        // kind with the value 0 (one 0 byte) left off.
        let prefix = |zero: ClaimKey| -> io::Result<Vec<u8>> {
            let mut prefix = encode(what, &grant.namespace)?;
            prefix.extend_from_slice(&encode(what, &zero)?);
            prefix.pop();
            Ok(prefix)
        };
        match &grant.keys {
            KeyList::U64(keys) => {
                let prefix = prefix(ClaimKey::U64(0))?;
                out.reserve(keys.len() * (prefix.len() + 10 + lease.len()));
                for key in keys {
                    out.extend_from_slice(&prefix);
                    push_varint(&mut out, u128::from(*key));
                    out.extend_from_slice(&lease);
                }
            }
            KeyList::U128(keys) => {
                let prefix = prefix(ClaimKey::U128(0))?;
                out.reserve(keys.len() * (prefix.len() + 19 + lease.len()));
                for key in keys {
                    out.extend_from_slice(&prefix);
                    push_varint(&mut out, *key);
                    out.extend_from_slice(&lease);
                }
            }
            KeyList::Any(_) => {
                for change in grant.changes() {
                    out.extend_from_slice(&encode(what, &change)?);
                }
            }
        }
    }
    Ok(out)
}

/// postcard's varint: 7 bits a byte, least significant first, built on
/// the stack and appended in one copy (a push per byte was twice as slow).
fn push_varint(out: &mut Vec<u8>, mut value: u128) {
    let mut buf = [0u8; 19];
    let mut len = 0;
    while value >= 0x80 {
        buf[len] = value as u8 | 0x80;
        value >>= 7;
        len += 1;
    }
    buf[len] = value as u8;
    out.extend_from_slice(&buf[..=len]);
}

/// Every live lease of `store`, encoded as one lease-log row, with how
/// many and the latest deadline.
fn encode_leases(store: &Store) -> io::Result<(Vec<u8>, u64, u64)> {
    let claims = store.claims();
    let mut leases: Vec<LeaseChange> = Vec::with_capacity(claims.lease_count());
    for (ns, key, session_id, deadline_ms) in claims.leases() {
        leases.push((ns, key, Some((session_id, deadline_ms))));
    }
    let last = last_deadline(leases.iter().map(|(_, _, l)| l));
    Ok((encode("claim leases", &leases)?, leases.len() as u64, last))
}

/// Create the tables so read transactions find them.
pub(crate) fn create_tables(txn: &WriteTransaction) -> io::Result<()> {
    txn.open_table(CLAIMS)
        .map_err(|e| io_err("open claims", e))?;
    txn.open_table(CLAIMS_NS)
        .map_err(|e| io_err("open claims namespaces", e))?;
    txn.open_table(LEASE_LOG)
        .map_err(|e| io_err("open claim lease log", e))?;
    Ok(())
}

/// Moves the lease slots a database written before the lease log keeps in
/// `sm_claims` into one lease-log row, so that `sm_claims` holds stored
/// entries only and a lease never needs a row delete there. Returns how
/// many moved. Their keys have no record in the log (any change to such a
/// key removed its row), so the row's place in the log does not matter.
pub(crate) fn move_lease_rows_to_log(txn: &WriteTransaction) -> io::Result<usize> {
    let mut table = txn
        .open_table(CLAIMS)
        .map_err(|e| io_err("open claims", e))?;
    let mut moved: Vec<(Vec<u8>, LeaseChange)> = Vec::new();
    for row in table.iter().map_err(|e| io_err("scan", e))? {
        let (k, v) = row.map_err(|e| io_err("scan claims", e))?;
        // postcard writes the variant index first: 0 is `Leased`.
        if v.value().first() != Some(&0) {
            continue;
        }
        let Slot::Leased {
            session_id,
            deadline_ms,
        } = decode::<Slot>("claim slot", v.value())?
        else {
            continue;
        };
        let (ns, key) = split_row_key(k.value())?;
        moved.push((
            k.value().to_vec(),
            (ns, key, Some((session_id, deadline_ms))),
        ));
    }
    if moved.is_empty() {
        return Ok(0);
    }
    for (k, _) in &moved {
        table
            .remove(k.as_slice())
            .map_err(|e| io_err("move claim lease row", e))?;
    }
    let leases: Vec<&LeaseChange> = moved.iter().map(|(_, l)| l).collect();
    let mut log = txn
        .open_table(LEASE_LOG)
        .map_err(|e| io_err("open claim lease log", e))?;
    let next = match log.last().map_err(|e| io_err("read claim lease log", e))? {
        Some((id, _)) => id.value() + 1,
        None => 0,
    };
    log.insert(next, encode("claim leases", &leases)?.as_slice())
        .map_err(|e| io_err("write claim lease log", e))?;
    Ok(moved.len())
}

/// (namespace id, claim key) of an `sm_claims` row key.
fn split_row_key(k: &[u8]) -> io::Result<(u32, ClaimKey)> {
    let (ns, key) = k
        .split_first_chunk::<4>()
        .ok_or_else(|| io_err("corrupt claim row key", "shorter than 4 bytes"))?;
    Ok((
        u32::from_be_bytes(*ns),
        decode::<ClaimKey>("claim key", key)?,
    ))
}

/// Drop every claims row (before a whole state replaces them).
pub(crate) fn clear_tables(txn: &WriteTransaction) -> io::Result<()> {
    txn.delete_table(CLAIMS)
        .map_err(|e| io_err("clear claims", e))?;
    txn.delete_table(CLAIMS_NS)
        .map_err(|e| io_err("clear claims namespaces", e))?;
    txn.delete_table(LEASE_LOG)
        .map_err(|e| io_err("clear claim lease log", e))?;
    Ok(())
}

/// Read the whole claims state back at cluster time `now_ms`: stored
/// entries, then the lease log replayed in order, leases that ran out by
/// `now_ms` left out (their expiry is in the namespace rows' counters, and
/// nothing records it in the log). Slots come out sorted by (namespace,
/// key), as [`cairn_store::claims::Claims::snapshot`] lists them. Also the
/// lease log's bookkeeping ([`LeaseLog`]), from the same one decode of
/// each row.
pub(crate) fn load(read: &ReadTransaction, now_ms: u64) -> io::Result<(ClaimsSnapshot, LeaseLog)> {
    let mut snap = ClaimsSnapshot::default();
    let namespaces = read
        .open_table(CLAIMS_NS)
        .map_err(|e| io_err("open claims namespaces", e))?;
    for row in namespaces.iter().map_err(|e| io_err("scan", e))? {
        let (_, v) = row.map_err(|e| io_err("scan claims namespaces", e))?;
        snap.namespaces
            .push(decode::<NamespaceRow>("claims namespace", v.value())?);
    }
    let mut slots: BTreeMap<(u32, ClaimKey), Slot> = BTreeMap::new();
    let table = read
        .open_table(CLAIMS)
        .map_err(|e| io_err("open claims", e))?;
    for row in table.iter().map_err(|e| io_err("scan", e))? {
        let (k, v) = row.map_err(|e| io_err("scan claims", e))?;
        slots.insert(
            split_row_key(k.value())?,
            decode::<Slot>("claim slot", v.value())?,
        );
    }
    // Each key's lease is its last record in the log: fold the log first,
    // then add the live leases to the stored rows. A key with a stored
    // row is stored, whatever the log says: rows are written per batch as
    // the keys are then, and a key that became leased lost its stored row
    // in the same batch, while a key stored over a lease that ran out
    // leaves that lease's record behind.
    let mut leases: BTreeMap<(u32, ClaimKey), Option<(i64, u64)>> = BTreeMap::new();
    let log = read
        .open_table(LEASE_LOG)
        .map_err(|e| io_err("open claim lease log", e))?;
    let mut lease_log = LeaseLog::default();
    for row in log.iter().map_err(|e| io_err("scan", e))? {
        let (id, v) = row.map_err(|e| io_err("scan claim lease log", e))?;
        let records = decode::<Vec<LeaseChange>>("claim leases", v.value())?;
        lease_log.push(LeaseRow {
            id: id.value(),
            last_deadline_ms: last_deadline(records.iter().map(|(_, _, l)| l)),
            records: records.len() as u64,
            bytes: v.value().len() as u64,
        });
        for (ns, key, lease) in records {
            leases.insert((ns, key), lease);
        }
    }
    for (at, lease) in leases {
        // `None`: no lease now (the key's stored row, if any, stands).
        if let Some((session_id, deadline_ms)) = lease {
            if deadline_ms > now_ms {
                slots.entry(at).or_insert(Slot::Leased {
                    session_id,
                    deadline_ms,
                });
            }
        }
    }
    snap.slots = slots
        .into_iter()
        .map(|((ns, key), slot)| (ns, key, slot))
        .collect();
    Ok((snap, lease_log))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_store::claims::{ClaimsCommand, EvictionPolicy, NamespaceConfig, RegisterEntry};
    use cairn_store::{Command, CommandResult};
    use redb::{Database, ReadableDatabase};

    use super::*;
    use crate::state_machine::StateMachineStore;

    fn claims(store: &mut Store, c: ClaimsCommand) {
        match store.apply(&Command::Claims(c)).result {
            CommandResult::Claims(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    fn session(store: &mut Store) -> i64 {
        session_for(store, 60)
    }

    /// A session that outlives every test's clock.
    fn long_session(store: &mut Store) -> i64 {
        session_for(store, 1_000_000)
    }

    fn session_for(store: &mut Store, ttl_secs: i64) -> i64 {
        match store
            .apply(&Command::LeaseGrant {
                id: 0,
                ttl_secs,
                now_ms: 1_000,
            })
            .result
        {
            CommandResult::LeaseGrant(g) => g.id,
            other => panic!("{other:?}"),
        }
    }

    fn register(keys: &[u64]) -> ClaimsCommand {
        register_as(0, keys)
    }

    fn register_as(session_id: i64, keys: &[u64]) -> ClaimsCommand {
        register_at(session_id, keys, 2_000)
    }

    fn register_at(session_id: i64, keys: &[u64], now_ms: u64) -> ClaimsCommand {
        ClaimsCommand::Register {
            namespace: "ns".into(),
            session_id,
            entries: keys
                .iter()
                .map(|k| RegisterEntry {
                    key: ClaimKey::U64(*k),
                    value: vec![*k as u8],
                    metadata: vec![],
                    parent: (*k > 0).then(|| ClaimKey::U64(k - 1)),
                    position: None,
                })
                .collect(),
            now_ms,
        }
    }

    fn offload(session_id: i64, keys: &[u64]) -> ClaimsCommand {
        offload_at(session_id, keys, 2_000)
    }

    fn persist(db: &Database, store: &mut Store, log: &mut LeaseLog) {
        let changes = store.take_changes();
        let rows = ClaimsRows::changed(store, &changes.claims, log).unwrap();
        let txn = db.begin_write().unwrap();
        rows.write_in(&txn).unwrap();
        txn.commit().unwrap();
    }

    fn lease_log_rows(db: &Database) -> usize {
        let read = db.begin_read().unwrap();
        let log = read.open_table(LEASE_LOG).unwrap();
        log.iter().unwrap().count()
    }

    fn stored_rows(db: &Database) -> usize {
        let read = db.begin_read().unwrap();
        let t = read.open_table(CLAIMS).unwrap();
        t.iter().unwrap().count()
    }

    fn new_db(dir: &tempfile::TempDir) -> Database {
        let db = Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        create_tables(&txn).unwrap();
        txn.commit().unwrap();
        db
    }

    fn create_ns(store: &mut Store, capacity: u64) {
        claims(
            store,
            ClaimsCommand::CreateNamespace {
                name: "ns".into(),
                config: NamespaceConfig {
                    capacity,
                    eviction: EvictionPolicy::Tail,
                    ..Default::default()
                },
            },
        );
    }

    fn remove(keys: &[u64]) -> ClaimsCommand {
        ClaimsCommand::Remove {
            namespace: "ns".into(),
            keys: keys.iter().map(|k| ClaimKey::U64(*k)).collect(),
            now_ms: 2_000,
        }
    }

    /// Leases go to the lease log, one row per batch; stored entries to
    /// their own rows.
    #[test]
    fn lease_changes_encode_as_the_list_of_changes_does() {
        use cairn_store::claims::Grant;
        use std::sync::Arc;
        let grant = |keys: KeyList| {
            Arc::new(Grant {
                session_id: -3,
                namespace: 300,
                deadline_ms: u64::MAX - 1,
                keys,
            })
        };
        let mut changes = LeaseChanges::default();
        changes.push((1, ClaimKey::U64(9), None));
        changes.push_grant(grant(KeyList::U64(vec![0, 127, 128, u64::MAX])));
        changes.push_grant(grant(KeyList::U128(vec![u128::MAX, 5])));
        changes.push((2, ClaimKey::Bytes(vec![3; 20]), Some((7, 8))));
        changes.push_grant(grant(KeyList::Any(vec![
            ClaimKey::Bytes(vec![1; 40]),
            ClaimKey::U64(4),
        ])));
        let listed: Vec<LeaseChange> = changes.iter().collect();
        assert_eq!(listed.len(), 10);
        let bytes = encode_lease_changes(&changes).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&listed).unwrap());
        assert_eq!(decode::<Vec<LeaseChange>>("t", &bytes).unwrap(), listed);
    }

    #[test]
    fn leases_are_one_log_row_per_batch_and_entries_one_row_each() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let mut size = LeaseLog::default();
        let mut store = Store::new();
        let s = session(&mut store);
        create_ns(&mut store, 100);
        claims(&mut store, offload(s, &(0..50).collect::<Vec<_>>()));
        persist(&db, &mut store, &mut size);
        assert_eq!((lease_log_rows(&db), stored_rows(&db)), (1, 0));
        claims(&mut store, register_as(s, &[3, 4]));
        persist(&db, &mut store, &mut size);
        assert_eq!((lease_log_rows(&db), stored_rows(&db)), (2, 2));
        assert_eq!(loaded(&db, &store), store.claims().snapshot());
    }

    /// A stored key removed and leased again within one batch loses its
    /// stored row; a lease converted to an entry does not come back.
    #[test]
    fn a_key_removed_then_leased_in_one_batch_loads_as_a_lease() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let mut size = LeaseLog::default();
        let mut store = Store::new();
        let s = session(&mut store);
        create_ns(&mut store, 100);
        claims(&mut store, register(&[1, 2]));
        persist(&db, &mut store, &mut size);
        claims(&mut store, remove(&[1]));
        claims(&mut store, offload(s, &[1, 5]));
        persist(&db, &mut store, &mut size);
        assert_eq!(loaded(&db, &store), store.claims().snapshot());
        claims(&mut store, register_as(s, &[5]));
        persist(&db, &mut store, &mut size);
        let snap = loaded(&db, &store);
        assert_eq!(snap, store.claims().snapshot());
        assert!(matches!(
            snap.slots.iter().find(|(_, k, _)| *k == ClaimKey::U64(5)),
            Some((_, _, Slot::Stored(_)))
        ));
    }

    /// A lease that ran out leaves its record in the log (nothing records
    /// its end): it loads as nothing, and a key stored over it loads as
    /// stored, whether the slot was reused or not.
    #[test]
    fn leases_that_ran_out_load_as_nothing_and_entries_stored_over_them_stand() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let mut log = LeaseLog::default();
        let mut store = Store::new();
        let s = long_session(&mut store);
        create_ns(&mut store, 100);
        let ttl_ms = NamespaceConfig::default().lease_ttl_ms;
        claims(&mut store, offload(s, &[1, 2, 3]));
        // A lease in the same row that outlives the others keeps the row.
        claims(&mut store, offload_at(s, &[9], 2_000 + ttl_ms / 2));
        persist(&db, &mut store, &mut log);
        let after = 2_000 + ttl_ms;
        tick(&mut store, after);
        claims(&mut store, register_at(s, &[2], after));
        persist(&db, &mut store, &mut log);
        assert_eq!(lease_log_rows(&db), 1, "the grants' row is still there");
        let snap = loaded(&db, &store);
        assert_eq!(snap, store.claims().snapshot());
        let kinds: Vec<(ClaimKey, bool)> = snap
            .slots
            .iter()
            .map(|(_, k, slot)| (k.clone(), matches!(slot, Slot::Stored(_))))
            .collect();
        assert_eq!(kinds, [(ClaimKey::U64(2), true), (ClaimKey::U64(9), false)]);
        // Loaded before the deadline, the leases are there.
        let before = load(&db.begin_read().unwrap(), after - 1).unwrap().0;
        assert_eq!(before.slots.len(), 4);
        let restored = cairn_store::claims::Claims::restore(before.namespaces, before.slots, after);
        assert_eq!(restored.lease_count(), 1, "restored later: only 9 live");
    }

    /// Offloads at `now_ms` (deadline `now_ms` + the namespace's TTL).
    fn offload_at(session_id: i64, keys: &[u64], now_ms: u64) -> ClaimsCommand {
        ClaimsCommand::CanOffload {
            namespace: "ns".into(),
            session_id,
            keys: keys.iter().map(|k| ClaimKey::U64(*k)).collect(),
            now_ms,
        }
    }

    fn tick(store: &mut Store, now_ms: u64) {
        store.apply(&Command::Tick {
            now_ms,
            max_expiries: 1_000_000,
        });
    }

    /// What open would compute is what the writer tracked.
    fn assert_tracked(db: &Database, log: &LeaseLog) {
        let on_disk = load(&db.begin_read().unwrap(), 0).unwrap().1;
        assert_eq!(on_disk.rows, log.rows);
        assert_eq!((on_disk.records, on_disk.bytes), (log.records, log.bytes));
    }

    /// Rows whose leases have all ended leave the front of the log, with
    /// no compaction, and the state loads the same after each batch.
    #[test]
    fn rows_whose_leases_all_ended_are_trimmed_from_the_front() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let mut log = LeaseLog::default();
        let mut store = Store::new();
        let s = long_session(&mut store);
        create_ns(&mut store, 100_000);
        let ttl_ms = NamespaceConfig::default().lease_ttl_ms;
        let mut most_rows = 0;
        for round in 0..60u64 {
            let now_ms = 2_000 + round * ttl_ms / 10;
            tick(&mut store, now_ms);
            let keys: Vec<u64> = (round * 20..round * 20 + 20).collect();
            claims(&mut store, offload_at(s, &keys, now_ms));
            // Convert a few and refresh a few of an earlier round's.
            if round >= 3 {
                let old = (round - 3) * 20;
                claims(&mut store, register_at(s, &[old, old + 1], now_ms));
                claims(&mut store, offload_at(s, &[old + 2, old + 3], now_ms));
            }
            persist(&db, &mut store, &mut log);
            most_rows = most_rows.max(lease_log_rows(&db));
            assert_eq!(
                loaded(&db, &store),
                store.claims().snapshot(),
                "round {round}"
            );
            assert_tracked(&db, &log);
        }
        assert!(log.rows.front().is_some_and(|r| r.id > 40), "{log:?}");
        assert!(
            most_rows <= 12,
            "a TTL's worth of rows at most: {most_rows}"
        );
        // Every lease ends: the next batch trims the whole log.
        tick(&mut store, 2_000 + 100 * ttl_ms);
        persist(&db, &mut store, &mut log);
        assert_eq!(store.claims().lease_count(), 0);
        assert_eq!(lease_log_rows(&db), 0);
        assert_eq!(loaded(&db, &store), store.claims().snapshot());
        assert_tracked(&db, &log);
    }

    /// Leases refreshed within their TTL cannot be trimmed: past its
    /// threshold the log is replaced by one base row of the live leases,
    /// and the state loads the same.
    #[test]
    fn a_log_of_refreshed_leases_compacts_to_the_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let mut log = LeaseLog::with_min_bytes(2_000);
        let mut store = Store::new();
        let s = session(&mut store);
        create_ns(&mut store, 10_000);
        let keys: Vec<u64> = (0..40).collect();
        let mut most_rows = 0;
        let mut compacted = false;
        for round in 0..40u64 {
            claims(&mut store, offload_at(s, &keys, 2_000 + round));
            persist(&db, &mut store, &mut log);
            compacted |= log.rows.front().is_some_and(|r| r.id == 0) && round > 0;
            most_rows = most_rows.max(lease_log_rows(&db));
            assert_eq!(
                loaded(&db, &store),
                store.claims().snapshot(),
                "round {round}"
            );
            assert_tracked(&db, &log);
            assert!(log.records <= 40 * (LEASE_LOG_RECORDS_PER_LIVE + 1));
        }
        assert!(compacted, "compacted at least once: {log:?}");
        assert!(most_rows < 40, "the log never kept every row: {most_rows}");
    }

    /// Random batches of every claims operation by three sessions (one of
    /// which ends), over a small key space with evictions, persisted batch
    /// by batch while the lease log is trimmed and compacted: the rows
    /// always load as the store's state, and the log as it was tracked.
    #[test]
    fn random_batches_always_load_as_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let mut log = LeaseLog::with_min_bytes(3_000);
        let mut store = Store::new();
        let sessions = [
            long_session(&mut store),
            long_session(&mut store),
            session(&mut store),
        ];
        create_ns(&mut store, 300);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let (mut now_ms, mut trims, mut compactions) = (2_000u64, 0, 0);
        for batch in 0..400 {
            // Time runs fast for a while (leases end, rows are trimmed),
            // then slowly over fewer keys (leases are refreshed within
            // their TTL, the log outgrows them and is compacted).
            let fast = (batch / 100) % 2 == 0;
            let key_space = if fast { 600 } else { 60 };
            for _ in 0..1 + next(4) {
                let session_id = sessions[next(3) as usize];
                let keys: Vec<u64> = (0..1 + next(20)).map(|_| next(key_space)).collect();
                let namespace = "ns".to_string();
                let claim_keys = keys.iter().map(|k| ClaimKey::U64(*k)).collect();
                let command = match next(6) {
                    0..=2 => offload_at(session_id, &keys, now_ms),
                    3 => {
                        let mut c = register_as(session_id, &keys);
                        c.restamp(now_ms);
                        c
                    }
                    4 => ClaimsCommand::Remove {
                        namespace,
                        keys: claim_keys,
                        now_ms,
                    },
                    _ => ClaimsCommand::Touch {
                        namespace,
                        keys: claim_keys,
                        now_ms,
                    },
                };
                // Some fail (the third session ends): they change nothing.
                store.apply(&Command::Claims(command));
            }
            now_ms += if fast { next(4_000) } else { next(100) };
            tick(&mut store, now_ms);
            let first = log.rows.front().map(|r| r.id);
            persist(&db, &mut store, &mut log);
            match (first, log.rows.front().map(|r| r.id)) {
                (Some(a), Some(0)) if a > 0 => compactions += 1,
                (Some(a), b) if b.is_none_or(|b| b > a) => trims += 1,
                _ => {}
            }
            assert_eq!(
                loaded(&db, &store),
                store.claims().snapshot(),
                "batch {batch}"
            );
            assert_tracked(&db, &log);
        }
        assert!(
            trims > 10 && compactions > 0,
            "{trims} trims, {compactions} compactions"
        );
        assert!(store.claims().all_stats()[0].entries > 0);
    }

    /// A database from before the lease log holds lease slots in
    /// `sm_claims`: opening moves them to the lease log, and they load and
    /// change as any lease.
    #[test]
    fn lease_rows_of_an_older_version_move_to_the_lease_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let mut store = Store::new();
        let s = session(&mut store);
        create_ns(&mut store, 100);
        claims(&mut store, register(&[1]));
        claims(&mut store, offload(s, &[7, 8]));
        // Write the state as the old layout did: every slot a row.
        store.take_changes();
        let snap = store.claims().snapshot();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(CLAIMS).unwrap();
            for (ns, key, slot) in &snap.slots {
                t.insert(
                    row_key(*ns, key).unwrap().as_slice(),
                    encode("slot", slot).unwrap().as_slice(),
                )
                .unwrap();
            }
            let mut n = txn.open_table(CLAIMS_NS).unwrap();
            for row in &snap.namespaces {
                n.insert(row.id, encode("ns", row).unwrap().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        assert_eq!((stored_rows(&db), lease_log_rows(&db)), (3, 0));
        let txn = db.begin_write().unwrap();
        assert_eq!(move_lease_rows_to_log(&txn).unwrap(), 2);
        txn.commit().unwrap();
        assert_eq!((stored_rows(&db), lease_log_rows(&db)), (1, 1));
        assert_eq!(loaded(&db, &store), store.claims().snapshot());
        let txn = db.begin_write().unwrap();
        assert_eq!(move_lease_rows_to_log(&txn).unwrap(), 0, "once");
        txn.commit().unwrap();
        let mut log = load(&db.begin_read().unwrap(), 0).unwrap().1;
        claims(&mut store, register_as(s, &[7]));
        store.apply(&Command::LeaseRevoke { id: s });
        persist(&db, &mut store, &mut log);
        assert_eq!(loaded(&db, &store), store.claims().snapshot());
        assert_eq!(stored_rows(&db), 2, "the entries 1 and 7");
        assert_eq!(store.claims().lease_count(), 0);
    }

    fn loaded(db: &Database, store: &Store) -> ClaimsSnapshot {
        load(&db.begin_read().unwrap(), store.now_ms()).unwrap().0
    }

    #[test]
    fn batches_of_changed_rows_rebuild_the_same_claims_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(&dir);
        let mut size = LeaseLog::default();

        let mut store = Store::new();
        let s = session(&mut store);
        claims(
            &mut store,
            ClaimsCommand::CreateNamespace {
                name: "ns".into(),
                config: NamespaceConfig {
                    capacity: 4,
                    eviction: EvictionPolicy::Tail,
                    ..Default::default()
                },
            },
        );
        claims(&mut store, offload(s, &[7, 8, 9]));
        persist(&db, &mut store, &mut size);
        assert_eq!(loaded(&db, &store), store.claims().snapshot());

        // Evictions (parents' child counts change), conversions, releases.
        claims(&mut store, register(&[0, 1, 2, 3, 4, 5]));
        claims(&mut store, offload(s, &[1, 5, 6]));
        persist(&db, &mut store, &mut size);
        assert_eq!(loaded(&db, &store), store.claims().snapshot());

        store.apply(&Command::LeaseRevoke { id: s });
        persist(&db, &mut store, &mut size);
        let snap = loaded(&db, &store);
        assert_eq!(snap, store.claims().snapshot());
        assert!(snap
            .slots
            .iter()
            .all(|(_, _, s)| matches!(s, Slot::Stored(_))));
    }

    #[tokio::test]
    async fn a_state_machine_opened_on_written_state_holds_the_same_claims() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let mut store = Store::new();
        let s = session(&mut store);
        claims(
            &mut store,
            ClaimsCommand::CreateNamespace {
                name: "ns".into(),
                config: NamespaceConfig::default(),
            },
        );
        claims(&mut store, register(&[1, 2, 3]));
        claims(&mut store, offload(s, &[3, 4]));
        StateMachineStore::write_restored(&db, &store).unwrap();

        let sm = StateMachineStore::open(db, &dir.path().join("snapshot")).unwrap();
        let opened = sm.shared_store().read().unwrap().snapshot().unwrap();
        assert_eq!(opened, store.snapshot().unwrap());
        assert_eq!(opened.claims.slots.len(), 4);
    }
}
