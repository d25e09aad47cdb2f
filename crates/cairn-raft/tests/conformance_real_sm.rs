//! openraft's storage conformance suite on the stores Cairn runs with: the
//! redb log store and the redb-backed `StateMachineStore`, sharing one file
//! as they do in a member.

use std::sync::Arc;

use cairn_raft::log_store::LogStore;
use cairn_raft::state_machine::StateMachineStore;
use cairn_raft::types::{StorageError, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use redb::Database;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let err = |e: &dyn std::error::Error| {
            StorageError::read(TypeConfig::err_from_error(&std::io::Error::other(
                e.to_string(),
            )))
        };
        let dir = tempfile::tempdir().map_err(|e| err(&e))?;
        let db = Arc::new(Database::create(dir.path().join("cairn.redb")).map_err(|e| err(&e))?);
        let log = LogStore::open(db.clone(), &dir.path().join("wal")).map_err(|e| err(&e))?;
        let sm = StateMachineStore::open(db, &dir.path().join("snapshot"))
            .map_err(|e| err(&e))?
            .with_writer(log.state_writer());
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_on_cairn_stores() {
    Suite::test_all(Builder)
        .await
        .expect("storage conformance suite on LogStore + StateMachineStore");
}
