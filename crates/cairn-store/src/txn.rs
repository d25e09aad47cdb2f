//! Txn rules that need no state: the duplicate-key check and op counting.

use std::collections::BTreeSet;

use crate::command::{RequestOp, TxnRequest};
use crate::error::StoreError;
use crate::kv::KeyRange;

/// Reject a txn that writes the same key twice in one branch, or puts a key
/// that the same branch deletes (etcd: "duplicate key given in txn request").
/// The two branches of a nested txn are alternatives and may overlap.
pub fn check_duplicate_keys(txn: &TxnRequest) -> Result<(), StoreError> {
    for branch in [&txn.success, &txn.failure] {
        let (puts, dels) = writes_of(branch)?;
        if puts.iter().any(|k| dels.iter().any(|r| r.contains(k))) {
            return Err(StoreError::DuplicateKey);
        }
    }
    Ok(())
}

type Writes = (BTreeSet<Vec<u8>>, Vec<KeyRange>);

fn writes_of(ops: &[RequestOp]) -> Result<Writes, StoreError> {
    let mut puts = BTreeSet::new();
    let mut dels = Vec::new();
    for op in ops {
        match op {
            RequestOp::Put(p) => {
                if !puts.insert(p.key.clone()) {
                    return Err(StoreError::DuplicateKey);
                }
            }
            RequestOp::DeleteRange(d) => dels.push(d.range.clone()),
            RequestOp::Range(_) => {}
            RequestOp::Txn(nested) => {
                check_duplicate_keys(nested)?;
                let mut nested_puts = BTreeSet::new();
                for branch in [&nested.success, &nested.failure] {
                    let (p, d) = writes_of(branch)?;
                    nested_puts.extend(p);
                    dels.extend(d);
                }
                if nested_puts.iter().any(|k| puts.contains(k)) {
                    return Err(StoreError::DuplicateKey);
                }
                puts.extend(nested_puts);
            }
        }
    }
    Ok((puts, dels))
}

/// The largest number of ops in any one branch, nested branches included
/// (etcd's `--max-txn-ops` counts per branch).
pub fn max_branch_ops(txn: &TxnRequest) -> usize {
    let branch = |ops: &[RequestOp]| {
        ops.iter()
            .map(|op| match op {
                RequestOp::Txn(t) => max_branch_ops(t),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
            .max(ops.len())
    };
    branch(&txn.success)
        .max(branch(&txn.failure))
        .max(txn.compare.len())
}

/// True when the txn only reads (it then needs no revision and no quota).
pub fn is_read_only(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(t) => is_read_only(t),
        _ => false,
    })
}

/// True when the txn may put a key (rejected while NOSPACE is raised).
pub fn has_put(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        RequestOp::Put(_) => true,
        RequestOp::Txn(t) => has_put(t),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{DeleteRangeRequest, PutRequest};

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: k.into(),
            ..Default::default()
        })
    }
    fn del(r: KeyRange) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            range: r,
            prev_kv: false,
        })
    }

    #[test]
    fn duplicate_puts_and_put_inside_delete_are_rejected() {
        let t = |success| TxnRequest {
            success,
            ..Default::default()
        };
        assert_eq!(
            check_duplicate_keys(&t(vec![put("a"), put("a")])),
            Err(StoreError::DuplicateKey)
        );
        assert_eq!(
            check_duplicate_keys(&t(vec![put("ab"), del(KeyRange::prefix("a"))])),
            Err(StoreError::DuplicateKey)
        );
        assert_eq!(check_duplicate_keys(&t(vec![put("a"), put("b")])), Ok(()));
        assert_eq!(
            check_duplicate_keys(&t(vec![put("b"), del(KeyRange::prefix("a"))])),
            Ok(())
        );
    }

    #[test]
    fn nested_branches_may_overlap_each_other_but_not_the_parent() {
        let nested = TxnRequest {
            success: vec![put("a")],
            failure: vec![put("a")],
            ..Default::default()
        };
        let ok = TxnRequest {
            success: vec![RequestOp::Txn(nested.clone())],
            ..Default::default()
        };
        assert_eq!(check_duplicate_keys(&ok), Ok(()));
        let bad = TxnRequest {
            success: vec![put("a"), RequestOp::Txn(nested)],
            ..Default::default()
        };
        assert_eq!(check_duplicate_keys(&bad), Err(StoreError::DuplicateKey));
    }
}
