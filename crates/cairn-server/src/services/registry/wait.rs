//! Watching the keyspace through the node's watch hub: a bounded channel
//! per watch, watchers removed on drop.

use cairn_store::{KeyRange, StoreError};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::ServerError;
use crate::node::Node;
use crate::watch_hub::{WatchHub, WatchMessage, WatchSpec, WatcherKey};

/// Messages queued per watch; a slow reader is caught up from history by
/// the hub, never buffered without bound.
const WATCH_QUEUE: usize = 16;

/// Watchers on the hub feeding one channel.
pub struct Watch {
    hub: Arc<WatchHub>,
    keys: Vec<WatcherKey>,
    rx: mpsc::Receiver<WatchMessage>,
}

impl Watch {
    /// Watch `ranges` (with previous values) from revision `from` on.
    pub fn new(node: &Node, ranges: &[KeyRange], from: i64) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let mut watch = Watch {
            hub: node.hub.clone(),
            keys: Vec::new(),
            rx,
        };
        for range in ranges {
            let spec = WatchSpec {
                range: range.clone(),
                start_revision: from,
                prev_kv: true,
                ..Default::default()
            };
            match watch.hub.register(0, spec, tx.clone()) {
                Ok(k) => watch.keys.push(k),
                Err(e @ StoreError::Compacted { .. }) => return Err(ServerError::Store(e).into()),
                Err(e) => return Err(ServerError::Store(e).into()),
            }
        }
        Ok(watch)
    }

    /// The next batch of events. A compaction that overtook the watch
    /// ends it with an error (the caller re-reads the current state).
    pub async fn next(&mut self) -> Result<WatchMessage, Status> {
        match self.rx.recv().await {
            Some(m @ WatchMessage::Events { .. }) => Ok(m),
            Some(WatchMessage::Compacted {
                compact_revision, ..
            }) => Err(ServerError::Store(StoreError::Compacted { compact_revision }).into()),
            None => std::future::pending().await,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for k in self.keys.drain(..) {
            self.hub.cancel(k);
        }
    }
}

/// Resolves once the node's Raft has stopped, so waits and streams end
/// instead of holding the server open.
pub async fn stopped(node: &Node) {
    let _ = node
        .raft
        .wait(None)
        .metrics(|m| m.running_state.is_err(), "raft stops")
        .await;
}
