//! The data dir's format version, so that a build never reads a layout it
//! does not know.
//!
//! Log entries, rows and snapshots are postcard, which carries no field
//! names: a build reading another build's changed layout would decode the
//! wrong fields or fail deep in Raft's start with a decode error. So the
//! data file holds the version of the layout it was written in, and a
//! member refuses to start on one newer than it reads, naming both
//! versions (run the newer build again, or restore a snapshot into a new
//! data dir). A layout change raises [`CURRENT`] and migrates older data
//! dirs at open, before anything else reads them.
//!
//! Data dirs written before the marker existed hold layout 1, and get the
//! marker at their next start, as do new ones and restored ones at their
//! first.

use redb::{Database, ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<&str, u32> = TableDefinition::new("data_format");
const KEY: &str = "version";

/// The layout this build writes and reads.
pub const CURRENT: u32 = 1;

/// Checks the data file's format version, and records [`CURRENT`] in a
/// file that has none (new, or written before the marker).
pub fn check_and_record(db: &Database) -> Result<(), String> {
    match read(db)? {
        Some(v) if v == CURRENT => Ok(()),
        Some(v) if v > CURRENT => Err(format!(
            "written in data format {v} by a newer Cairn; this build reads format {CURRENT} \
             and older: run the newer build, or restore a snapshot into a new data dir"
        )),
        Some(v) => Err(format!(
            "data format {v} is unknown (this build reads formats 1 to {CURRENT})"
        )),
        None => record(db),
    }
}

fn read(db: &Database) -> Result<Option<u32>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let version = table.get(KEY).map_err(|e| e.to_string())?;
    Ok(version.map(|v| v.value()))
}

/// Writes [`CURRENT`], durably.
fn record(db: &Database) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = txn.open_table(TABLE).map_err(|e| e.to_string())?;
        t.insert(KEY, CURRENT).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overwrite(db: &Database, version: u32) {
        let txn = db.begin_write().unwrap();
        txn.open_table(TABLE).unwrap().insert(KEY, version).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_file_without_a_version_gets_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        assert_eq!(read(&db).unwrap(), None);
        check_and_record(&db).unwrap();
        assert_eq!(read(&db).unwrap(), Some(CURRENT));
        check_and_record(&db).unwrap();
    }

    #[test]
    fn a_newer_or_unknown_version_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        overwrite(&db, CURRENT + 1);
        let e = check_and_record(&db).unwrap_err();
        assert!(
            e.contains(&format!("format {}", CURRENT + 1)) && e.contains("newer Cairn"),
            "{e}"
        );
        overwrite(&db, 0);
        let e = check_and_record(&db).unwrap_err();
        assert!(e.contains("data format 0 is unknown"), "{e}");
    }
}
