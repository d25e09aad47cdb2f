//! Fan-out of applied events to watchers, with bounded memory.
//!
//! A watcher is *synced* when it has been sent every event up to the
//! store's revision; the hub then pushes each applied batch to it directly.
//! When its stream's bounded channel is full the watcher drops to
//! *unsynced*, and a catch-up task replays its events from the store's
//! history at the pace the stream drains, until it is synced again. A
//! watcher whose next revision was compacted away is cancelled with the
//! compact revision. Nothing is ever buffered per watcher beyond the
//! stream's channel, however slow the client.
//!
//! Lock order: hub state, then the store's read lock. Apply takes the
//! store's write lock and releases it before calling `applied`, so the two
//! never wait on each other in a cycle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_raft::state_machine::SharedStore;
use cairn_store::{Event, EventKind, KeyRange, StoreError};
use tokio::sync::{mpsc, Notify};

/// Most events replayed for one watcher per catch-up round.
const CATCH_UP_EVENTS_PER_ROUND: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchSpec {
    pub range: KeyRange,
    /// First revision to deliver; 0 for "after the current one".
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

/// What the hub sends down a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Events of whole revisions, in order. `revision` is the store revision
    /// they bring the watcher up to.
    Events {
        watch_id: i64,
        revision: i64,
        events: Vec<Event>,
    },
    /// The watcher's next revision was compacted; it is cancelled.
    Compacted {
        watch_id: i64,
        compact_revision: i64,
    },
}

/// A stream's channel as the hub holds it, with a flag the hub raises
/// when it found the channel full and a watcher fell behind. The stream's
/// reader takes the flag once it has made room and asks for a catch-up
/// round ([`WatchHub::wake_catch_up`]), so a watcher that lagged resumes
/// as soon as its client reads, not at the catch-up task's next poll.
#[derive(Debug, Clone)]
pub struct WatchSender {
    tx: mpsc::Sender<WatchMessage>,
    lagging: Arc<AtomicBool>,
}

impl WatchSender {
    pub fn new(tx: mpsc::Sender<WatchMessage>) -> Self {
        WatchSender {
            tx,
            lagging: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True, once, after the hub found the channel full.
    pub fn take_lagging(&self) -> bool {
        self.lagging.load(Ordering::Acquire) && self.lagging.swap(false, Ordering::AcqRel)
    }

    fn try_send(&self, msg: WatchMessage) -> Result<(), mpsc::error::TrySendError<WatchMessage>> {
        let sent = self.tx.try_send(msg);
        if matches!(sent, Err(mpsc::error::TrySendError::Full(_))) {
            self.lagging.store(true, Ordering::Release);
        }
        sent
    }
}

impl From<mpsc::Sender<WatchMessage>> for WatchSender {
    fn from(tx: mpsc::Sender<WatchMessage>) -> Self {
        WatchSender::new(tx)
    }
}

struct Watcher {
    /// The ID the client knows, unique within its stream.
    watch_id: i64,
    spec: WatchSpec,
    /// First revision not yet sent.
    next_rev: i64,
    synced: bool,
    tx: WatchSender,
}

#[derive(Default)]
struct HubState {
    next_key: u64,
    watchers: BTreeMap<u64, Watcher>,
}

pub struct WatchHub {
    store: SharedStore,
    state: Mutex<HubState>,
    wake: Notify,
    /// Times a synced watcher's stream was found full, so that it fell
    /// back to catching up from history (a slow client, for operators).
    fell_behind: AtomicU64,
}

/// What the hub holds now, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchStats {
    pub watchers: usize,
    /// Watchers catching up from history.
    pub unsynced: usize,
    pub fell_behind_total: u64,
}

/// Handle to remove a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatcherKey(u64);

impl WatchHub {
    pub fn new(store: SharedStore) -> Arc<Self> {
        Arc::new(WatchHub {
            store,
            state: Mutex::new(HubState::default()),
            wake: Notify::new(),
            fell_behind: AtomicU64::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a watcher. Fails with `Compacted` if its start revision is gone.
    pub fn register(
        &self,
        watch_id: i64,
        spec: WatchSpec,
        tx: impl Into<WatchSender>,
    ) -> Result<WatcherKey, StoreError> {
        let tx = tx.into();
        let mut state = self.state();
        let (current, compacted) = {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            (store.revision(), store.compact_revision())
        };
        if spec.start_revision > 0 && spec.start_revision < compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        let next_rev = if spec.start_revision > 0 {
            spec.start_revision
        } else {
            current + 1
        };
        let synced = next_rev > current;
        let key = state.next_key;
        state.next_key += 1;
        state.watchers.insert(
            key,
            Watcher {
                watch_id,
                spec,
                next_rev,
                synced,
                tx,
            },
        );
        drop(state);
        if !synced {
            self.wake.notify_one();
        }
        Ok(WatcherKey(key))
    }

    /// Run a catch-up round soon: a stream whose channel was full has
    /// made room (see [`WatchSender::take_lagging`]).
    pub fn wake_catch_up(&self) {
        self.wake.notify_one();
    }

    pub fn cancel(&self, key: WatcherKey) -> bool {
        self.state().watchers.remove(&key.0).is_some()
    }

    /// How many watchers are registered (client streams' and registry
    /// waits').
    pub fn watcher_count(&self) -> usize {
        self.state().watchers.len()
    }

    pub fn stats(&self) -> WatchStats {
        let state = self.state();
        WatchStats {
            watchers: state.watchers.len(),
            unsynced: state.watchers.values().filter(|w| !w.synced).count(),
            fell_behind_total: self.fell_behind.load(Ordering::Relaxed),
        }
    }

    /// True when every listed watcher has been sent everything up to the
    /// store's current revision (what a progress notification promises).
    pub fn all_synced(&self, keys: &[WatcherKey]) -> bool {
        let state = self.state();
        keys.iter()
            .all(|k| state.watchers.get(&k.0).is_none_or(|w| w.synced))
    }

    /// Feed one applied batch. Called by the state machine after persisting.
    pub fn applied(&self, events: &[Event], revision: i64) {
        let mut state = self.state();
        let mut lagging = false;
        state.watchers.retain(|_, w| {
            if !w.synced {
                return true;
            }
            let mine = select(events, w.next_rev, &w.spec);
            if mine.is_empty() {
                w.next_rev = w.next_rev.max(revision + 1);
                return true;
            }
            let msg = WatchMessage::Events {
                watch_id: w.watch_id,
                revision,
                events: mine,
            };
            match w.tx.try_send(msg) {
                Ok(()) => {
                    w.next_rev = revision + 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.synced = false;
                    lagging = true;
                    self.fell_behind.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        drop(state);
        if lagging {
            self.wake.notify_one();
        }
    }

    /// Whether any watcher is registered: the state machine builds events
    /// for a batch only if so.
    pub fn has_watchers(&self) -> bool {
        !self.state().watchers.is_empty()
    }

    /// A batch up to `revision` was applied without building events (no
    /// watcher was registered when it began). A watcher registered since
    /// whose next revision is in the batch catches up from the store's
    /// history, as one that fell behind does.
    pub fn applied_without_events(&self, revision: i64) {
        if self.unsync(|w| w.next_rev <= revision) {
            self.wake.notify_one();
        }
    }

    /// The store was replaced by a snapshot: no watcher may assume it saw
    /// everything. All fall back to catching up from the new store's
    /// history (or are cancelled as compacted if it no longer has it).
    pub fn resync_all(&self, _revision: i64) {
        self.unsync(|_| true);
        self.wake.notify_one();
    }

    /// Sends the synced watchers `behind` picks back to catching up from
    /// history; true if it picked any.
    fn unsync(&self, behind: impl Fn(&Watcher) -> bool) -> bool {
        let mut state = self.state();
        let mut any = false;
        for w in state.watchers.values_mut() {
            if w.synced && behind(w) {
                w.synced = false;
                any = true;
            }
        }
        any
    }

    /// Replay history to unsynced watchers until they are synced. Runs for
    /// the node's lifetime; wakes on demand and every `poll` otherwise
    /// (a full channel frees up without telling us).
    pub async fn run_catch_up(self: Arc<Self>, poll: Duration) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            while self.catch_up_round() {
                tokio::task::yield_now().await;
            }
        }
    }

    /// One bounded pass over unsynced watchers. Returns true if some made
    /// progress and remain behind, so another round should follow at once.
    fn catch_up_round(&self) -> bool {
        let mut state = self.state();
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        let head = store.revision();
        let mut again = false;
        state.watchers.retain(|_, w| {
            if w.synced {
                return true;
            }
            match store.events_since(w.next_rev, &w.spec.range, CATCH_UP_EVENTS_PER_ROUND) {
                Err(StoreError::Compacted { compact_revision }) => {
                    let msg = WatchMessage::Compacted {
                        watch_id: w.watch_id,
                        compact_revision,
                    };
                    // Keep trying until the cancellation is delivered.
                    !matches!(
                        w.tx.try_send(msg),
                        Ok(()) | Err(mpsc::error::TrySendError::Closed(_))
                    )
                }
                Err(_) => true,
                Ok((events, next)) => {
                    let mine = select(&events, w.next_rev, &w.spec);
                    if !mine.is_empty() {
                        let msg = WatchMessage::Events {
                            watch_id: w.watch_id,
                            revision: next - 1,
                            events: mine,
                        };
                        match w.tx.try_send(msg) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => return true,
                            Err(mpsc::error::TrySendError::Closed(_)) => return false,
                        }
                    }
                    w.next_rev = next;
                    w.synced = next > head;
                    again |= !w.synced;
                    true
                }
            }
        });
        again
    }
}

/// The events a watcher should get: from `next_rev` on, in range, filtered.
fn select(events: &[Event], next_rev: i64, spec: &WatchSpec) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.kv.mod_revision >= next_rev && spec.range.contains(&e.kv.key))
        .filter(|e| match e.kind {
            EventKind::Put => !spec.no_put,
            EventKind::Delete => !spec.no_delete,
        })
        // Field by field: a whole clone would copy the previous key and value
        // for every watcher that then drops them (most ask for no prev_kv).
        .map(|e| Event {
            kind: e.kind,
            kv: e.kv.clone(),
            prev_kv: if spec.prev_kv {
                e.prev_kv.clone()
            } else {
                None
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::{Command, PutRequest, Store};
    use std::sync::RwLock;

    fn put(store: &SharedStore, hub: &WatchHub, key: &str) {
        let applied = store.write().unwrap().apply(&Command::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        }));
        let rev = store.read().unwrap().revision();
        hub.applied(&applied.events, rev);
    }

    fn revisions(rx: &mut mpsc::Receiver<WatchMessage>) -> Vec<i64> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let WatchMessage::Events { events, .. } = m {
                out.extend(events.iter().map(|e| e.kv.mod_revision));
            }
        }
        out
    }

    /// As the state machine applies a batch: events only if the hub has
    /// a watcher when the batch begins.
    fn apply_as_the_state_machine(
        store: &SharedStore,
        hub: &WatchHub,
        wanted: bool,
        keys: &[&str],
    ) -> i64 {
        let mut events = Vec::new();
        {
            let mut s = store.write().unwrap();
            s.set_events_wanted(wanted);
            for key in keys {
                events.extend(
                    s.apply(&Command::Put(PutRequest {
                        key: key.as_bytes().to_vec(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    }))
                    .events,
                );
            }
        }
        let rev = store.read().unwrap().revision();
        if wanted {
            hub.applied(&events, rev);
        } else {
            assert!(events.is_empty(), "no events built");
            hub.applied_without_events(rev);
        }
        rev
    }

    #[test]
    fn a_watcher_registered_while_a_batch_applied_without_events_reads_it_from_history() {
        let store: SharedStore = Arc::new(RwLock::new(Store::new()));
        let hub = WatchHub::new(store.clone());
        assert!(!hub.has_watchers());
        apply_as_the_state_machine(&store, &hub, false, &["k0"]);
        // The next batch starts without a watcher; one registers before it
        // is applied (it expects revision 2 on).
        let wanted = hub.has_watchers();
        let (tx, mut rx) = mpsc::channel(16);
        let spec = WatchSpec {
            range: KeyRange::prefix("k"),
            ..Default::default()
        };
        hub.register(1, spec.clone(), tx).unwrap();
        assert!(hub.has_watchers());
        apply_as_the_state_machine(&store, &hub, wanted, &["k1", "k2"]);
        assert_eq!(hub.stats().unsynced, 1, "it missed the batch's events");
        hub.catch_up_round();
        assert_eq!(revisions(&mut rx), vec![2, 3], "read from history");
        assert_eq!(hub.stats().unsynced, 0);
        // With a watcher, batches build events and they flow live.
        apply_as_the_state_machine(&store, &hub, hub.has_watchers(), &["k3"]);
        assert_eq!(revisions(&mut rx), vec![4]);
        // A watcher that starts after a batch without events is not set
        // back: it expects nothing from that batch.
        let (tx2, mut rx2) = mpsc::channel(16);
        hub.register(2, spec, tx2).unwrap();
        let rev = apply_as_the_state_machine(&store, &hub, true, &["k4"]);
        hub.applied_without_events(rev);
        assert_eq!(hub.stats().unsynced, 0, "both were past the batch");
        assert_eq!(revisions(&mut rx), vec![5]);
        assert_eq!(revisions(&mut rx2), vec![5]);
    }

    #[test]
    fn slow_watcher_is_caught_up_from_history_without_gaps_or_duplicates() {
        let store: SharedStore = Arc::new(RwLock::new(Store::new()));
        let hub = WatchHub::new(store.clone());
        let (tx, mut rx) = mpsc::channel(2);
        hub.register(
            1,
            WatchSpec {
                range: KeyRange::prefix("k"),
                ..Default::default()
            },
            tx,
        )
        .unwrap();
        for i in 0..10 {
            put(&store, &hub, &format!("k{i}"));
        }
        let behind = WatchStats {
            watchers: 1,
            unsynced: 1,
            fell_behind_total: 1,
        };
        assert_eq!(hub.stats(), behind, "it fell behind once and stays behind");
        // Only two fit; the rest must come from history as the client reads.
        let mut seen = revisions(&mut rx);
        for _ in 0..20 {
            hub.catch_up_round();
            seen.extend(revisions(&mut rx));
        }
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        assert_eq!(hub.stats().unsynced, 0, "caught up");
        put(&store, &hub, "k10");
        assert_eq!(
            revisions(&mut rx),
            vec![11],
            "synced again: live events flow"
        );
    }

    #[tokio::test]
    async fn a_lagging_watcher_resumes_when_its_reader_made_room_not_at_the_next_poll() {
        let store: SharedStore = Arc::new(RwLock::new(Store::new()));
        let hub = WatchHub::new(store.clone());
        // A poll so slow the test would time out waiting for it.
        tokio::spawn(hub.clone().run_catch_up(Duration::from_secs(3600)));
        let (tx, mut rx) = mpsc::channel(2);
        let sender = WatchSender::new(tx);
        let spec = WatchSpec {
            range: KeyRange::prefix("k"),
            ..Default::default()
        };
        hub.register(1, spec, sender.clone()).unwrap();
        for i in 0..10 {
            put(&store, &hub, &format!("k{i}"));
        }
        // The catch-up task runs the round the hub asked for against the
        // full queue, and then waits.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut wakes = 0;
        while seen.len() < 10 {
            let msg = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("caught up without waiting for the hourly poll")
                .unwrap();
            if let WatchMessage::Events { events, .. } = msg {
                seen.extend(events.iter().map(|e| e.kv.mod_revision));
            }
            // What a watch session does once its queue has room.
            if rx.len() <= 1 && sender.take_lagging() {
                hub.wake_catch_up();
                wakes += 1;
            }
        }
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        assert!(
            wakes >= 1,
            "the hub raised the flag when the queue was full"
        );
        assert!(!sender.take_lagging(), "a taken flag stays down");
    }

    #[test]
    fn start_revision_replays_and_compacted_start_is_refused() {
        let store: SharedStore = Arc::new(RwLock::new(Store::new()));
        let hub = WatchHub::new(store.clone());
        for i in 0..3 {
            put(&store, &hub, &format!("k{i}"));
        }
        let (tx, mut rx) = mpsc::channel(16);
        hub.register(
            7,
            WatchSpec {
                range: KeyRange::prefix("k"),
                start_revision: 2,
                ..Default::default()
            },
            tx.clone(),
        )
        .unwrap();
        hub.catch_up_round();
        assert_eq!(revisions(&mut rx), vec![2, 3]);
        store
            .write()
            .unwrap()
            .apply(&Command::Compact { revision: 3 });
        let err = hub.register(
            8,
            WatchSpec {
                range: KeyRange::prefix("k"),
                start_revision: 1,
                ..Default::default()
            },
            tx,
        );
        assert_eq!(
            err,
            Err(StoreError::Compacted {
                compact_revision: 3
            })
        );
    }

    #[test]
    fn only_a_watcher_that_asked_gets_the_previous_value() {
        let store: SharedStore = Arc::new(RwLock::new(Store::new()));
        let hub = WatchHub::new(store.clone());
        put(&store, &hub, "a");
        let (with_tx, mut with_rx) = mpsc::channel(16);
        let (without_tx, mut without_rx) = mpsc::channel(16);
        let spec = |prev_kv| WatchSpec {
            range: KeyRange::single("a"),
            prev_kv,
            ..Default::default()
        };
        hub.register(1, spec(true), with_tx).unwrap();
        hub.register(2, spec(false), without_tx).unwrap();
        put(&store, &hub, "a");
        let event = |rx: &mut mpsc::Receiver<WatchMessage>| match rx.try_recv() {
            Ok(WatchMessage::Events { mut events, .. }) if events.len() == 1 => events.remove(0),
            other => panic!("expected one event, got {other:?}"),
        };
        let with = event(&mut with_rx);
        let without = event(&mut without_rx);
        assert_eq!(with.kv, without.kv);
        assert_eq!(with.kv.mod_revision, 2);
        assert_eq!(with.prev_kv.map(|kv| kv.mod_revision), Some(1));
        assert_eq!(without.prev_kv, None);
    }

    #[test]
    fn filters_and_range_apply() {
        let store: SharedStore = Arc::new(RwLock::new(Store::new()));
        let hub = WatchHub::new(store.clone());
        let (tx, mut rx) = mpsc::channel(16);
        hub.register(
            1,
            WatchSpec {
                range: KeyRange::single("a"),
                no_put: true,
                ..Default::default()
            },
            tx,
        )
        .unwrap();
        put(&store, &hub, "a");
        put(&store, &hub, "b");
        assert!(revisions(&mut rx).is_empty());
        assert!(hub.all_synced(&[WatcherKey(0)]));
    }
}
