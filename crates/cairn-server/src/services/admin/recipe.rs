//! The queue behind etcd's mutex and election recipes, run on the server as
//! etcd's `v3lock` and `v3election` services run them.
//!
//! Each contender owns the key `<name>/<lease in hex>`, attached to its
//! lease. Keys under `<name>/` form a queue ordered by create revision: the
//! oldest key holds the lock (leads the election). A contender waits for
//! the deletion of the key created just before its own, then looks again;
//! waiting uses the node's watch hub, never polling. If its own key
//! disappears meanwhile (its lease expired or someone deleted it), it has
//! lost its place.

use std::sync::Arc;

use cairn_store::{
    Command, CommandResult, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange,
    KeyValue, PutRequest, RangeRequest, RequestOp, ResponseOp, SortOrder, SortTarget, Store,
    StoreError, TxnRequest, TxnResponse,
};
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;
use crate::watch_hub::{WatchHub, WatchMessage, WatchSpec, WatcherKey};

/// TTL of the lease granted for a request that names none, as etcd's
/// server-side session does (`concurrency.NewSession` default).
const DEFAULT_SESSION_TTL_SECS: i64 = 60;

/// `<name>/`: the prefix of a lock's or an election's queue.
pub fn queue_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// `<prefix><lease in hex>`, as Go's `fmt.Sprintf("%s%x", pfx, lease)`.
pub fn queue_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut k = prefix.to_vec();
    k.extend_from_slice(hex.as_bytes());
    k
}

/// The lease a contender's key lives on: the one given, or (for 0) a new
/// lease of etcd's default session TTL that nobody keeps alive.
pub async fn session_lease(node: &Node, caller: &Caller, lease: i64) -> Result<i64, ServerError> {
    if lease != 0 {
        return Ok(lease);
    }
    let grant = Command::LeaseGrant {
        id: 0,
        ttl_secs: DEFAULT_SESSION_TTL_SECS,
        now_ms: node.clock.now_ms(),
    };
    match node.write_as(caller, grant).await? {
        CommandResult::LeaseGrant(g) => Ok(g.id),
        other => Err(unexpected("lease grant", other)),
    }
}

pub fn unexpected(what: &str, result: CommandResult) -> ServerError {
    ServerError::Internal(format!("unexpected result for {what}: {result:?}"))
}

/// Run a transaction through consensus, as `caller`.
pub async fn txn(
    node: &Node,
    caller: &Caller,
    txn: TxnRequest,
) -> Result<TxnResponse, ServerError> {
    match node.write_as(caller, Command::Txn(txn)).await? {
        CommandResult::Txn(t) => Ok(t),
        other => Err(unexpected("txn", other)),
    }
}

fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Create(rev),
        range: KeyRange::single(key),
    }
}

/// etcd's `WithFirstCreate`: the oldest key of the queue.
fn first_created_request(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        range: KeyRange::prefix(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..Default::default()
    }
}

fn range_kvs(op: Option<&ResponseOp>) -> &[KeyValue] {
    match op {
        Some(ResponseOp::Range(r)) => &r.kvs,
        _ => &[],
    }
}

/// The head of the queue under `prefix`, if any.
pub fn first_created(store: &Store, prefix: &[u8]) -> Result<Option<KeyValue>, StoreError> {
    Ok(store
        .range(&first_created_request(prefix))?
        .kvs
        .into_iter()
        .next())
}

/// A contender's place in a queue.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Create revision of `key`: the contender's place.
    pub create_revision: i64,
    /// Revision the joining transaction ran at, which wrote `key`: its
    /// mod revision until another call joins or proclaims with it.
    pub revision: i64,
    /// True when the key heads the queue.
    pub first: bool,
}

/// Take a place in the queue under `prefix` with `key` (holding `value`,
/// attached to `lease`), or find the place this key already has; learn in
/// the same transaction whether it heads the queue. etcd's
/// `Mutex.tryAcquire` / `Election.Campaign` transaction, except that a key
/// that exists already (the same lease joined before: a retry) is written
/// again with `value` (as etcd's `Campaign` then proclaims it), so that an
/// earlier call's wait, abandoned, does not delete it ([`LeaveOnDrop`]).
pub async fn join(
    node: &Node,
    caller: &Caller,
    prefix: &[u8],
    key: &[u8],
    value: Vec<u8>,
    lease: i64,
) -> Result<Joined, ServerError> {
    let value_again = value.clone();
    let resp = txn(
        node,
        caller,
        TxnRequest {
            compare: vec![created_at(key, 0)],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: key.to_vec(),
                    value,
                    lease,
                    ..Default::default()
                }),
                RequestOp::Range(first_created_request(prefix)),
            ],
            failure: vec![
                RequestOp::Put(PutRequest {
                    key: key.to_vec(),
                    value: value_again,
                    lease,
                    ..Default::default()
                }),
                RequestOp::Range(RangeRequest {
                    range: KeyRange::single(key),
                    keys_only: true,
                    ..Default::default()
                }),
                RequestOp::Range(first_created_request(prefix)),
            ],
        },
    )
    .await?;
    let create_revision = if resp.succeeded {
        resp.revision
    } else {
        range_kvs(resp.responses.get(1))
            .first()
            .map(|kv| kv.create_revision)
            // Deleted between the compare and the read: cannot happen inside
            // one transaction.
            .ok_or_else(|| ServerError::Internal("queue key vanished inside a txn".into()))?
    };
    let head = if resp.succeeded { 1 } else { 2 };
    let first = range_kvs(resp.responses.get(head))
        .first()
        .is_none_or(|owner| owner.create_revision == create_revision);
    Ok(Joined {
        create_revision,
        revision: resp.revision,
        first,
    })
}

/// Outcome of waiting for one's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The key heads the queue, as of `revision` (checked after a read
    /// barrier, so it reflects every write acknowledged before).
    Mine { revision: i64 },
    /// The key was deleted (or re-created) while waiting.
    Lost,
}

/// Where a key stands in its queue, in the local store.
enum Standing {
    Lost,
    First,
    /// Behind this key: the youngest one created before ours.
    Behind(Vec<u8>),
}

fn standing(
    node: &Node,
    prefix: &[u8],
    key: &[u8],
    my_rev: i64,
) -> Result<(Standing, i64), ServerError> {
    let store = node.store();
    let revision = store.revision();
    let mine = store.range(&RangeRequest {
        range: KeyRange::single(key),
        keys_only: true,
        ..Default::default()
    })?;
    if mine
        .kvs
        .first()
        .is_none_or(|kv| kv.create_revision != my_rev)
    {
        return Ok((Standing::Lost, revision));
    }
    let queue = store.range(&RangeRequest {
        range: KeyRange::prefix(prefix),
        keys_only: true,
        ..Default::default()
    })?;
    let before = queue
        .kvs
        .into_iter()
        .filter(|kv| kv.create_revision < my_rev)
        .max_by_key(|kv| kv.create_revision);
    Ok(match before {
        None => (Standing::First, revision),
        Some(kv) => (Standing::Behind(kv.key), revision),
    })
}

/// Wait until `key` (created at `my_rev`) heads the queue under `prefix`,
/// or is lost. Ends with `Stopped` if the node shuts down meanwhile.
pub async fn wait_turn(
    node: &Node,
    prefix: &[u8],
    key: &[u8],
    my_rev: i64,
) -> Result<Turn, ServerError> {
    // The joining write may have been applied on the leader only so far.
    node.read_barrier().await?;
    let mut fresh = true;
    loop {
        let (standing, revision) = standing(node, prefix, key, my_rev)?;
        match standing {
            Standing::Lost => return Ok(Turn::Lost),
            Standing::First if fresh => return Ok(Turn::Mine { revision }),
            // Confirm against the leader: our lease may have expired there.
            Standing::First => {
                node.read_barrier().await?;
                fresh = true;
            }
            Standing::Behind(before) => {
                let ranges = [KeyRange::single(before), KeyRange::single(key)];
                let mut watch = HubWatch::new(node.hub.clone(), &ranges, revision + 1)?;
                tokio::select! {
                    _ = watch.changed() => {}
                    _ = stopped(node) => return Err(ServerError::Stopped),
                }
                fresh = false;
            }
        }
    }
}

/// Delete `key` if nothing wrote it since revision `rev`, the revision
/// of the call's own join (the abandoned wait of [`LeaveOnDrop`]).
async fn delete_if_written_at(
    node: &Node,
    caller: &Caller,
    key: &[u8],
    rev: i64,
) -> Result<i64, ServerError> {
    delete_if(node, caller, key, CompareTarget::Mod(rev)).await
}

/// Delete `key` if it still has create revision `rev` (etcd's `Resign`).
/// Returns the revision the transaction ran at.
pub async fn delete_if_created_at(
    node: &Node,
    caller: &Caller,
    key: &[u8],
    rev: i64,
) -> Result<i64, ServerError> {
    delete_if(node, caller, key, CompareTarget::Create(rev)).await
}

/// Delete `key` if its `target` revision is the one given.
async fn delete_if(
    node: &Node,
    caller: &Caller,
    key: &[u8],
    target: CompareTarget,
) -> Result<i64, ServerError> {
    let resp = txn(
        node,
        caller,
        TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target,
                range: KeyRange::single(key),
            }],
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                range: KeyRange::single(key),
                prev_kv: false,
            })],
            failure: Vec::new(),
        },
    )
    .await?;
    Ok(resp.revision)
}

/// Leaves the queue if the request fails or is abandoned (the client went
/// away) before the key holds the lock, as etcd releases the key when its
/// wait fails. Dropping it armed deletes the key if nothing wrote it after
/// this call's join: a retry with the same lease (on another connection,
/// say) joins again by writing the key, and keeps it; deleting by create
/// revision, as etcd does, took the key from under that retry.
pub struct LeaveOnDrop {
    armed: Option<(Arc<Node>, Caller, Vec<u8>, i64)>,
}

impl LeaveOnDrop {
    /// `joined_at`: [`Joined::revision`] of this call's join.
    pub fn new(node: Arc<Node>, caller: Caller, key: Vec<u8>, joined_at: i64) -> Self {
        LeaveOnDrop {
            armed: Some((node, caller, key, joined_at)),
        }
    }

    /// Keep the key: the request succeeded, or the key is gone already.
    pub fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        let Some((node, caller, key, rev)) = self.armed.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if let Err(e) = delete_if_written_at(&node, &caller, &key, rev).await {
                tracing::warn!(
                    "could not remove abandoned queue key {}: {e}",
                    String::from_utf8_lossy(&key)
                );
            }
        });
    }
}

/// Resolves once the node's Raft has stopped (shutdown or fatal error), so
/// waits end instead of holding the server open.
pub async fn stopped(node: &Node) {
    let _ = node
        .raft
        .wait(None)
        .metrics(|m| m.running_state.is_err(), "raft stops")
        .await;
}

/// Watchers on the hub feeding one channel, removed on drop.
pub struct HubWatch {
    hub: Arc<WatchHub>,
    keys: Vec<WatcherKey>,
    rx: mpsc::Receiver<WatchMessage>,
}

/// Messages queued per `HubWatch`; a slow reader is caught up from history
/// by the hub.
const HUB_WATCH_QUEUE: usize = 16;

impl HubWatch {
    /// Watch `ranges` from revision `from` on. If `from` was compacted away
    /// meanwhile, the watch reports a change at once (the caller looks
    /// again at the current state).
    pub fn new(hub: Arc<WatchHub>, ranges: &[KeyRange], from: i64) -> Result<Self, ServerError> {
        let (tx, rx) = mpsc::channel(HUB_WATCH_QUEUE);
        let mut watch = HubWatch {
            hub,
            keys: Vec::new(),
            rx,
        };
        for range in ranges {
            let spec = WatchSpec {
                range: range.clone(),
                start_revision: from,
                ..Default::default()
            };
            match watch.hub.register(0, spec, tx.clone()) {
                Ok(k) => watch.keys.push(k),
                Err(StoreError::Compacted { compact_revision }) => {
                    let _ = tx.try_send(WatchMessage::Compacted {
                        watch_id: 0,
                        compact_revision,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(watch)
    }

    /// Wait for the next change in the watched ranges. A compaction that
    /// overtook the watchers counts as a change (after it, they are gone).
    pub async fn changed(&mut self) -> WatchMessage {
        match self.rx.recv().await {
            Some(m) => m,
            // Every watcher was dropped by the hub: nothing will come.
            None => std::future::pending().await,
        }
    }
}

impl Drop for HubWatch {
    fn drop(&mut self) {
        for k in self.keys.drain(..) {
            self.hub.cancel(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_etcds_naming() {
        assert_eq!(queue_prefix(b"job"), b"job/".to_vec());
        assert_eq!(
            queue_key(b"job/", 0x0069_4d7f_12ab),
            b"job/694d7f12ab".to_vec()
        );
        assert_eq!(queue_key(b"job/", -255), b"job/-ff".to_vec());
    }
}
