//! Block-claims state in redb, beside the state machine's other tables.
//!
//! `sm_claims` holds one row per claim slot (a lease or a stored entry):
//! key = namespace id (big-endian u32) + the postcard-encoded claim key,
//! value = the postcard-encoded slot. `sm_claims_ns` holds one row per
//! namespace (configuration, counters, touch sequence). Rows are written
//! in the state machine's per-batch transaction, so claims and the applied
//! log id never disagree; eviction and deadline indexes are rebuilt from
//! the rows at open.

use std::io;

use cairn_store::claims::{ClaimKey, ClaimsChanges, ClaimsSnapshot, NamespaceRow, Slot};
use cairn_store::Store;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

const CLAIMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sm_claims");
const CLAIMS_NS: TableDefinition<u32, &[u8]> = TableDefinition::new("sm_claims_ns");

fn io_err(context: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{context}: {e}"))
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| io_err(what, e))
}

fn decode<'a, T: serde::Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io_err(&format!("corrupt {what}"), e))
}

fn row_key(ns: u32, key: &ClaimKey) -> io::Result<Vec<u8>> {
    let mut out = ns.to_be_bytes().to_vec();
    out.extend(encode("claim key", key)?);
    Ok(out)
}

/// Encoded claims rows of one apply batch (or of a whole state).
#[derive(Default)]
pub(crate) struct ClaimsRows {
    /// `None` deletes the slot's row.
    slots: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    namespaces: Vec<(u32, Vec<u8>)>,
}

impl ClaimsRows {
    /// The rows `changes` names, as they are now in `store`.
    pub(crate) fn changed(store: &Store, changes: &ClaimsChanges) -> io::Result<ClaimsRows> {
        let claims = store.claims();
        let mut rows = ClaimsRows::default();
        for (ns, key) in &changes.slots {
            let value = claims
                .slot(*ns, key)
                .map(|s| encode("claim slot", s))
                .transpose()?;
            rows.slots.push((row_key(*ns, key)?, value));
        }
        for ns in &changes.namespaces {
            if let Some(row) = claims.namespace_row(*ns) {
                rows.namespaces
                    .push((*ns, encode("claims namespace", row)?));
            }
        }
        Ok(rows)
    }

    pub(crate) fn of_snapshot(snap: &ClaimsSnapshot) -> io::Result<ClaimsRows> {
        let mut rows = ClaimsRows::default();
        for (ns, key, slot) in &snap.slots {
            rows.slots
                .push((row_key(*ns, key)?, Some(encode("claim slot", slot)?)));
        }
        for row in &snap.namespaces {
            rows.namespaces
                .push((row.id, encode("claims namespace", row)?));
        }
        Ok(rows)
    }

    pub(crate) fn write_in(&self, txn: &WriteTransaction) -> io::Result<()> {
        if self.slots.is_empty() && self.namespaces.is_empty() {
            return Ok(());
        }
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
        let mut namespaces = txn
            .open_table(CLAIMS_NS)
            .map_err(|e| io_err("open claims namespaces", e))?;
        for (id, row) in &self.namespaces {
            namespaces
                .insert(*id, row.as_slice())
                .map_err(|e| io_err("write claims namespace", e))?;
        }
        Ok(())
    }
}

/// Create the tables so read transactions find them.
pub(crate) fn create_tables(txn: &WriteTransaction) -> io::Result<()> {
    txn.open_table(CLAIMS)
        .map_err(|e| io_err("open claims", e))?;
    txn.open_table(CLAIMS_NS)
        .map_err(|e| io_err("open claims namespaces", e))?;
    Ok(())
}

/// Drop every claims row (before a whole state replaces them).
pub(crate) fn clear_tables(txn: &WriteTransaction) -> io::Result<()> {
    txn.delete_table(CLAIMS)
        .map_err(|e| io_err("clear claims", e))?;
    txn.delete_table(CLAIMS_NS)
        .map_err(|e| io_err("clear claims namespaces", e))?;
    Ok(())
}

/// Read the whole claims state back.
pub(crate) fn load(read: &ReadTransaction) -> io::Result<ClaimsSnapshot> {
    let mut snap = ClaimsSnapshot::default();
    let namespaces = read
        .open_table(CLAIMS_NS)
        .map_err(|e| io_err("open claims namespaces", e))?;
    for row in namespaces.iter().map_err(|e| io_err("scan", e))? {
        let (_, v) = row.map_err(|e| io_err("scan claims namespaces", e))?;
        snap.namespaces
            .push(decode::<NamespaceRow>("claims namespace", v.value())?);
    }
    let slots = read
        .open_table(CLAIMS)
        .map_err(|e| io_err("open claims", e))?;
    for row in slots.iter().map_err(|e| io_err("scan", e))? {
        let (k, v) = row.map_err(|e| io_err("scan claims", e))?;
        let k = k.value();
        let (ns, key) = k
            .split_first_chunk::<4>()
            .ok_or_else(|| io_err("corrupt claim row key", "shorter than 4 bytes"))?;
        snap.slots.push((
            u32::from_be_bytes(*ns),
            decode::<ClaimKey>("claim key", key)?,
            decode::<Slot>("claim slot", v.value())?,
        ));
    }
    Ok(snap)
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
        match store
            .apply(&Command::LeaseGrant {
                id: 0,
                ttl_secs: 60,
                now_ms: 1_000,
            })
            .result
        {
            CommandResult::LeaseGrant(g) => g.id,
            other => panic!("{other:?}"),
        }
    }

    fn register(keys: &[u64]) -> ClaimsCommand {
        ClaimsCommand::Register {
            namespace: "ns".into(),
            session_id: 0,
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
            now_ms: 2_000,
        }
    }

    fn offload(session_id: i64, keys: &[u64]) -> ClaimsCommand {
        ClaimsCommand::CanOffload {
            namespace: "ns".into(),
            session_id,
            keys: keys.iter().map(|k| ClaimKey::U64(*k)).collect(),
            now_ms: 2_000,
        }
    }

    fn persist(db: &Database, store: &mut Store) {
        let changes = store.take_changes();
        let rows = ClaimsRows::changed(store, &changes.claims).unwrap();
        let txn = db.begin_write().unwrap();
        rows.write_in(&txn).unwrap();
        txn.commit().unwrap();
    }

    fn loaded(db: &Database) -> ClaimsSnapshot {
        load(&db.begin_read().unwrap()).unwrap()
    }

    #[test]
    fn batches_of_changed_rows_rebuild_the_same_claims_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        create_tables(&txn).unwrap();
        txn.commit().unwrap();

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
        persist(&db, &mut store);
        assert_eq!(loaded(&db), store.claims().snapshot());

        // Evictions (parents' child counts change), conversions, releases.
        claims(&mut store, register(&[0, 1, 2, 3, 4, 5]));
        claims(&mut store, offload(s, &[1, 5, 6]));
        persist(&db, &mut store);
        assert_eq!(loaded(&db), store.claims().snapshot());

        store.apply(&Command::LeaseRevoke { id: s });
        persist(&db, &mut store);
        let snap = loaded(&db);
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
        let opened = sm.shared_store().read().unwrap().snapshot();
        assert_eq!(opened, store.snapshot());
        assert_eq!(opened.claims.slots.len(), 4);
    }
}
