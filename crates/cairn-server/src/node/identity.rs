//! Member and cluster IDs, and where this node keeps its own.
//!
//! A member's ID is a hash of its first peer URL and the cluster token, so
//! every member computes the same IDs from `--initial-cluster`, and a member
//! added with `member add` (which gives only peer URLs) gets the ID the new
//! process will compute for itself. Once chosen, the ID lives in the data
//! dir: a restart needs no bootstrap flags.

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const IDENTITY: TableDefinition<&str, &[u8]> = TableDefinition::new("node_identity");
const KEY: &str = "identity";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let id = u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"));
    // 0 means "none" in etcd's API.
    id.max(1)
}

pub fn member_id(peer_url: &str, token: &str) -> u64 {
    hash64(&[peer_url.as_bytes(), token.as_bytes()])
}

pub fn cluster_id(token: &str) -> u64 {
    hash64(&[b"cluster", token.as_bytes()])
}

pub fn load(db: &Database) -> Result<Option<Identity>, String> {
    let read = db.begin_read().map_err(|e| e.to_string())?;
    let table = match read.open_table(IDENTITY) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let Some(v) = table.get(KEY).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    postcard::from_bytes(v.value())
        .map(Some)
        .map_err(|e| format!("corrupt node identity: {e}"))
}

pub fn save(db: &Database, identity: &Identity) -> Result<(), String> {
    let bytes = postcard::to_allocvec(identity).map_err(|e| e.to_string())?;
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = txn.open_table(IDENTITY).map_err(|e| e.to_string())?;
        t.insert(KEY, bytes.as_slice()).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(member_id("http://a:1", "t"), member_id("http://a:1", "t"));
        assert_ne!(member_id("http://a:1", "t"), member_id("http://a:2", "t"));
        assert_ne!(member_id("http://a:1", "t"), member_id("http://a:1", "u"));
    }

    #[test]
    fn identity_round_trips_through_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        assert_eq!(load(&db).unwrap(), None);
        let id = Identity {
            member_id: 7,
            cluster_id: 9,
            name: "n1".into(),
        };
        save(&db, &id).unwrap();
        assert_eq!(load(&db).unwrap(), Some(id));
    }
}
