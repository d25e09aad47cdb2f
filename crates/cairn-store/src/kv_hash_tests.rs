//! The keyspace hash taken in steps: the same hash as in one go, whatever
//! the step size, the writes between steps or where values live; a
//! compaction between steps asks for a restart instead of a hash.

use crate::history_tests::{put, twins, Persisted};
use crate::*;

fn del(key: &str) -> Command {
    Command::DeleteRange(DeleteRangeRequest {
        range: KeyRange::single(key),
        prev_kv: false,
    })
}

/// A txn that always succeeds: puts `put` and deletes `delete` at one
/// revision.
fn txn(put: &str, delete: &str) -> Command {
    Command::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: put.into(),
                value: format!("txn {put}").into_bytes(),
                ..Default::default()
            }),
            RequestOp::DeleteRange(DeleteRangeRequest {
                range: KeyRange::single(delete),
                prev_kv: false,
            }),
        ],
        failure: vec![],
    })
}

/// Puts over 20 keys, with deletes, txns (several records at one
/// revision) and a compaction among them.
fn mixed_history() -> Vec<Command> {
    let mut cmds = Vec::new();
    for i in 0..120 {
        cmds.push(put(&format!("k{}", i % 20), &format!("v{i}")));
        if i % 7 == 3 {
            cmds.push(del(&format!("k{}", (i + 5) % 20)));
        }
        if i % 11 == 5 {
            cmds.push(txn(&format!("k{}", (i + 1) % 20), &format!("k{}", i % 20)));
        }
        if i == 60 {
            cmds.push(Command::Compact { revision: 40 });
        }
    }
    cmds
}

fn store_of(cmds: &[Command]) -> Store {
    let mut s = Store::new();
    for cmd in cmds {
        s.apply(cmd);
    }
    s
}

#[test]
fn the_hash_of_a_known_history_is_the_one_earlier_versions_computed() {
    // Members of different versions compare hashes: the value must not
    // change. Computed by the one-shot hash before hashing in steps.
    let s = store_of(&mixed_history());
    assert_eq!(s.hash_kv(0), Ok((100851327, 40)));
    assert_eq!(s.hash_kv(100), Ok((1046057410, 40)));
}
