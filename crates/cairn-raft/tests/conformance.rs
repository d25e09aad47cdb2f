//! Storage conformance (openraft's suite) for the redb LogStore, persistence
//! and corruption tests, and transport tests over real gRPC on 127.0.0.1.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::raft::v1::raft_peer_client::RaftPeerClient;
use cairn_proto::raft::v1::{Payload, SnapshotChunk};
use cairn_raft::forward_frame;
use cairn_raft::log_store::{LogStore, LOG_TABLE, META_TABLE};
use cairn_raft::network::{NetworkConfig, NetworkFactory};
use cairn_raft::peer_service::{BoxFuture, PeerHandler, PeerService, UnimplementedPeerHandler};
use cairn_raft::types::{
    AppendEntriesRequest, CairnNode, CommandResult, Entry, LeaderId, LogId, Raft, RaftConfig,
    Request, Snapshot, SnapshotData, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    Vote, VoteRequest,
};
use futures::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::errors::RPCError;
use openraft::network::{RPCOption, RaftNetworkV2};
use openraft::storage::{
    EntryResponder, IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderId;
use openraft::{EntryPayload, Membership, OptionalSend};
use redb::Database;
use tempfile::TempDir;
use tokio::sync::oneshot;

// --- A minimal in-memory state machine ------------------------------------

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct MemState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Normal (application) entries applied.
    normal: u64,
}

#[derive(Debug, Default)]
struct MemInner {
    state: MemState,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

/// Applies nothing but tracks last-applied and membership; snapshots are the
/// postcard encoding of that, followed by `pad` filler bytes (to make
/// snapshots span several transport chunks).
#[derive(Debug, Clone, Default)]
struct MemSm {
    inner: Arc<Mutex<MemInner>>,
    pad: usize,
}

impl MemSm {
    fn padded(pad: usize) -> Self {
        MemSm {
            pad,
            ..Default::default()
        }
    }

    fn state(&self) -> MemState {
        self.inner.lock().unwrap().state.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemSm {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let mut inner = self.inner.lock().unwrap();
        let mut data = postcard::to_allocvec(&inner.state).map_err(io::Error::other)?;
        data.extend((0..self.pad).map(|i| i as u8));
        let meta = SnapshotMeta {
            last_log_id: inner.state.last_applied,
            last_membership: inner.state.membership.clone(),
        };
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: SnapshotData::Bytes(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MemSm {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = MemSm;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let s = self.state();
        Ok((s.last_applied, s.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            {
                let mut inner = self.inner.lock().unwrap();
                let log_id = entry.log_id();
                match &entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(_) => inner.state.normal += 1,
                    EntryPayload::Membership(m) => {
                        inner.state.membership = StoredMembership::new(Some(log_id), m.clone());
                    }
                }
                inner.state.last_applied = Some(log_id);
            }
            if let Some(r) = responder {
                r.send(CommandResult::Empty);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_bytes()?;
        let (state, rest): (MemState, _) = postcard::take_from_bytes(&data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if !rest.iter().enumerate().all(|(i, b)| *b == i as u8) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot filler garbled",
            ));
        }
        let mut inner = self.inner.lock().unwrap();
        inner.state = state;
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: SnapshotData::Bytes(data.clone()),
        }))
    }
}

// --- Helpers -------------------------------------------------------------------

fn wal_dir(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("wal")
}

fn open_db(dir: &TempDir) -> Arc<Database> {
    Arc::new(Database::create(dir.path().join("cairn.redb")).expect("create redb"))
}

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(
        <LeaderId as RaftLeaderId>::new(term, 1).to_committed(),
        index,
    )
}

fn put(key: &str) -> Request {
    Request::from(cairn_store::Command::Put(cairn_store::PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
}

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range
        .map(|i| match i % 3 {
            0 => Entry::new_blank(lid(term, i)),
            1 => Entry::new_normal(lid(term, i), put(&format!("k{i}"))),
            _ => Entry::new_membership(
                lid(term, i),
                Membership::new_with_defaults(vec![[1u64, 2, 3].into_iter().collect()], []),
            ),
        })
        .collect()
}

/// Appends and waits for the flush callback.
async fn append(store: &mut LogStore, ents: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(ents, IOFlushed::signal(tx)).await?;
    rx.await.map_err(io::Error::other)?
}

// --- openraft's storage conformance suite --------------------------------------

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, MemSm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, MemSm), StorageError> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let store = LogStore::open(open_db(&dir), &wal_dir(&dir))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, store, MemSm::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder)
        .await
        .expect("storage conformance suite");
}

// --- Persistence ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(3, 1);
    let written = entries(3, 1..=20);
    {
        let mut store = LogStore::open(open_db(&dir), &wal_dir(&dir))
            .unwrap()
            .with_durable_committed(true);
        append(&mut store, written[..10].to_vec()).await.unwrap();
        append(&mut store, written[10..].to_vec()).await.unwrap();
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(lid(3, 15))).await.unwrap();
        store.purge(lid(3, 5)).await.unwrap();
        store.truncate_after(Some(lid(3, 18))).await.unwrap();
        // Drop everything holding the database, then reopen the file.
    }
    let mut store = LogStore::open(open_db(&dir), &wal_dir(&dir)).unwrap();
    assert_eq!(store.read_committed().await.unwrap(), Some(lid(3, 15)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(3, 5)));
    assert_eq!(state.last_log_id, Some(lid(3, 18)));

    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(vote));
    let got = reader.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(got, written[5..18].to_vec());
    assert_eq!(
        reader.try_get_log_entries(7..=9).await.unwrap(),
        written[6..9].to_vec()
    );
    #[allow(clippy::reversed_empty_ranges)]
    let inverted = 9..7;
    assert!(reader
        .try_get_log_entries(inverted)
        .await
        .unwrap()
        .is_empty());

    // Purging everything keeps the last purged id as the last log id.
    store.purge(lid(3, 18)).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(3, 18)));
    assert_eq!(state.last_log_id, Some(lid(3, 18)));
    // Purge never moves backwards.
    store.purge(lid(3, 10)).await.unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_purged_log_id,
        Some(lid(3, 18))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_reads_respect_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(open_db(&dir), &wal_dir(&dir))
        .unwrap()
        .with_replication_batch_bytes(1);
    append(&mut store, entries(1, 1..=10)).await.unwrap();
    let mut reader = store.get_log_reader().await;
    // A budget smaller than one entry still returns one entry.
    assert_eq!(
        reader.limited_get_log_entries(1, 11).await.unwrap().len(),
        1
    );
    assert!(reader
        .limited_get_log_entries(5, 5)
        .await
        .unwrap()
        .is_empty());
    // try_get_log_entries is never limited.
    assert_eq!(reader.try_get_log_entries(1..11).await.unwrap().len(), 10);
}

// --- Corruption: errors, never panics --------------------------------------------

fn overwrite(db: &Database, f: impl FnOnce(&redb::WriteTransaction)) {
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

/// The one segment file of a small log.
fn only_segment(dir: &TempDir) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(wal_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_entry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let mut store = LogStore::open(db.clone(), &wal_dir(&dir)).unwrap();
    let written = entries(1, 1..=10);
    append(&mut store, written.clone()).await.unwrap();
    // Push the first ten out of the log's tail kept in memory (8192 entries
    // at most), so reads of them go to the segment file.
    append(&mut store, entries(1, 11..=9000)).await.unwrap();

    // Flip a byte inside the record of index 5 (records are laid out in
    // order, each a 16-byte header and the postcard entry).
    let seg = only_segment(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let record = |i: usize| 16 + postcard::to_allocvec(&written[i]).unwrap().len();
    let at: usize = (0..4).map(record).sum::<usize>() + 16;
    bytes[at] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();

    let mut reader = store.get_log_reader().await;
    let err = reader.try_get_log_entries(1..=10).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("index 5"), "{err}");
    // Entries around the corrupt one still read.
    assert_eq!(reader.try_get_log_entries(1..5).await.unwrap().len(), 4);
    assert_eq!(reader.try_get_log_entries(6..=10).await.unwrap().len(), 5);
    drop(reader);
    drop(store);
    // At open, a bad record in the last segment reads as the torn tail of a
    // write cut by a crash: the log is cut before it (see wal.rs "Crashes";
    // a bad record in an earlier segment fails the open, tested there).
    let mut store = LogStore::open(db.clone(), &wal_dir(&dir)).unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 4))
    );
    drop(store);

    // A corrupt vote fails reads of the vote, and reopening.
    std::fs::remove_dir_all(wal_dir(&dir)).unwrap();
    let mut store = LogStore::open(db.clone(), &wal_dir(&dir)).unwrap();
    let mut reader = store.get_log_reader().await;
    overwrite(&db, |txn| {
        let mut meta = txn.open_table(META_TABLE).unwrap();
        meta.insert("vote", [0xffu8].as_slice()).unwrap();
    });
    assert!(reader.read_vote().await.is_err());
    drop(reader);
    drop(store);
    assert!(LogStore::open(db.clone(), &wal_dir(&dir)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_in_redb_by_an_older_version_move_to_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let written = entries(2, 1..=6);
    overwrite(&db, |txn| {
        let mut log = txn.open_table(LOG_TABLE).unwrap();
        for e in &written {
            log.insert(e.log_id.index, postcard::to_allocvec(e).unwrap().as_slice())
                .unwrap();
        }
    });
    let mut store = LogStore::open(db.clone(), &wal_dir(&dir)).unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(2, 6))
    );
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(0..100).await.unwrap(), written);
    drop(reader);
    drop(store);
    let txn = redb::ReadableDatabase::begin_read(&*db).unwrap();
    assert_eq!(
        redb::ReadableTableMetadata::len(&txn.open_table(LOG_TABLE).unwrap()).unwrap(),
        0
    );
    drop(txn);
    // And a second open finds them in the files alone.
    let mut store = LogStore::open(db.clone(), &wal_dir(&dir)).unwrap();
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(0..100).await.unwrap(), written);
}

// --- Transport ---------------------------------------------------------------------

fn raft_config() -> Arc<RaftConfig> {
    Arc::new(
        RaftConfig {
            cluster_name: "cairn-test".into(),
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            install_snapshot_timeout: 2_000,
            enable_pre_vote: Some(true),
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    )
}

struct TestNode {
    id: u64,
    node: CairnNode,
    raft: Raft<MemSm>,
    sm: MemSm,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(id: u64) -> TestNode {
        Self::start_with(id, Arc::new(UnimplementedPeerHandler)).await
    }

    async fn start_with(id: u64, handler: Arc<dyn PeerHandler>) -> TestNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = CairnNode {
            name: format!("n{id}"),
            peer_url: format!("http://{addr}"),
            client_urls: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(open_db(&dir), &wal_dir(&dir)).unwrap();
        // 2.5 MiB snapshots: three 1 MiB transport chunks.
        let sm = MemSm::padded(5 << 19);
        let network = NetworkFactory::new(id, NetworkConfig::default());
        let raft = Raft::new(id, raft_config(), network, store, sm.clone())
            .await
            .unwrap();
        let service = PeerService::new(raft.clone(), handler);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        stopped.await.ok();
                    },
                ),
        );
        TestNode {
            id,
            node,
            raft,
            sm,
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// A gRPC client of its peer service.
    async fn client(&self) -> RaftPeerClient<tonic::transport::Channel> {
        RaftPeerClient::connect(self.node.peer_url.clone())
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        // Already shut down in some tests: ignore a second shutdown's result.
        let _ = self.raft.shutdown().await;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// Two voters elect a leader (Vote and PreVote over gRPC), replicate writes
/// (AppendEntries), hand leadership over (TransferLeader), and a learner
/// that joins after the log was purged catches up by snapshot
/// (InstallSnapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpcs_round_trip_over_grpc() {
    let n1 = TestNode::start(1).await;
    let n2 = TestNode::start(2).await;
    let members: BTreeMap<u64, CairnNode> = [(1, n1.node.clone()), (2, n2.node.clone())].into();
    n1.raft.initialize(members).await.unwrap();

    let m = n1
        .raft
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader is elected")
        .await
        .unwrap();
    let leader_id = m.current_leader.unwrap();
    let (leader, follower) = if leader_id == 1 {
        (&n1, &n2)
    } else {
        (&n2, &n1)
    };
    // A new leader accepts writes only once a quorum acknowledged its lease.
    leader
        .raft
        .wait(WAIT)
        .leader_with_quorum_acked(None, "leader lease")
        .await
        .unwrap();

    // Replication.
    let mut last = 0;
    for i in 0..20 {
        let resp = leader
            .raft
            .client_write(put(&format!("key-{i}")))
            .await
            .unwrap();
        assert_eq!(resp.data, CommandResult::Empty);
        last = resp.log_id.index;
    }
    for n in [&n1, &n2] {
        n.raft
            .wait(WAIT)
            .applied_index_at_least(Some(last), "writes applied")
            .await
            .unwrap();
        assert_eq!(n.sm.state().normal, 20, "node {}", n.id);
    }

    // Snapshot, purge, then a learner must be sent the snapshot.
    leader.raft.trigger().snapshot().await.unwrap();
    leader
        .raft
        .wait(WAIT)
        .metrics(
            |m| m.snapshot.as_ref().is_some_and(|s| s.index >= last),
            "snapshot built",
        )
        .await
        .unwrap();
    leader.raft.trigger().purge_log(last).await.unwrap();
    leader
        .raft
        .wait(WAIT)
        .metrics(
            |m| m.purged.as_ref().is_some_and(|p| p.index >= last),
            "log purged",
        )
        .await
        .unwrap();

    let n3 = TestNode::start(3).await;
    leader
        .raft
        .add_learner(3, n3.node.clone(), true)
        .await
        .unwrap();
    n3.raft
        .wait(WAIT)
        .applied_index_at_least(Some(last), "learner caught up")
        .await
        .unwrap();
    let installed = n3.sm.inner.lock().unwrap().snapshot.clone();
    let (meta, data) = installed.expect("the learner installed a snapshot");
    assert!(meta.last_log_id.as_ref().is_some_and(|l| l.index >= last));
    assert!(
        data.len() > 5 << 19,
        "the whole multi-chunk snapshot arrived"
    );
    assert_eq!(
        n3.sm.state().normal,
        20,
        "snapshot carried the state machine"
    );

    // Leadership transfer to the follower.
    leader
        .raft
        .trigger()
        .transfer_leader(follower.id)
        .await
        .unwrap();
    follower
        .raft
        .wait(WAIT)
        .leader_with_quorum_acked(None, "follower took over")
        .await
        .unwrap();
    let resp = follower
        .raft
        .client_write(put("after-transfer"))
        .await
        .unwrap();
    n3.raft
        .wait(WAIT)
        .applied_index_at_least(Some(resp.log_id.index), "new leader replicates")
        .await
        .unwrap();

    n3.stop().await;
    n2.stop().await;
    n1.stop().await;
}

fn vote_req() -> VoteRequest {
    VoteRequest::new(Vote::new(1, 9), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let factory = NetworkFactory::new(9, NetworkConfig::default());
    let node = CairnNode {
        peer_url: format!("http://{addr}"),
        ..Default::default()
    };
    let mut client = factory.client(1, &node);
    let option = RPCOption::new(Duration::from_secs(2));
    match client.vote(vote_req(), option.clone()).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("want Unreachable, got {other:?}"),
    }
    match client.pre_vote(vote_req(), option).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("want Unreachable, got {other:?}"),
    }

    // A URL that cannot be parsed is unreachable too.
    let bad = CairnNode {
        peer_url: "http://bad host:1".into(),
        ..Default::default()
    };
    match factory
        .client(2, &bad)
        .vote(vote_req(), RPCOption::new(Duration::from_secs(1)))
        .await
    {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("want Unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });

    let factory = NetworkFactory::new(9, NetworkConfig::default());
    let node = CairnNode {
        peer_url: addr.to_string(), // no scheme: http:// is assumed
        ..Default::default()
    };
    let started = std::time::Instant::now();
    match factory
        .client(1, &node)
        .vote(vote_req(), RPCOption::new(Duration::from_millis(400)))
        .await
    {
        Err(RPCError::Timeout(t)) => {
            assert_eq!((t.id, t.target), (9, 1));
        }
        other => panic!("want Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // Opening a replication stream times out the same way.
    let started = std::time::Instant::now();
    let heartbeat = AppendEntriesRequest {
        vote: Vote::new(1, 9),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    let input = Box::pin(futures::stream::once(async { heartbeat }));
    let mut client = factory.client(1, &node);
    match client
        .stream_append(input, RPCOption::new(Duration::from_millis(400)))
        .await
    {
        Err(RPCError::Timeout(t)) => assert_eq!((t.id, t.target), (9, 1)),
        Err(other) => panic!("want Timeout, got {other:?}"),
        Ok(_) => panic!("want Timeout, got a stream"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

/// Malformed requests are refused with INVALID_ARGUMENT; the node keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument() {
    let n = TestNode::start(1).await;
    let mut c = n.client().await;

    let garbage = || Payload {
        data: vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    };
    for status in [
        c.append_entries(garbage()).await.unwrap_err(),
        c.vote(garbage()).await.unwrap_err(),
        c.pre_vote(garbage()).await.unwrap_err(),
        c.transfer_leader(garbage()).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }

    let vote = postcard::to_allocvec(&Vote::new(1, 2)).unwrap();
    let meta = postcard::to_allocvec(&SnapshotMeta::default()).unwrap();
    let chunk = |vote: &[u8], meta: &[u8], done| SnapshotChunk {
        vote: vote.to_vec(),
        meta: meta.to_vec(),
        data: vec![1, 2, 3],
        done,
    };
    let malformed: Vec<Vec<SnapshotChunk>> = vec![
        vec![],
        vec![chunk(&[], &meta, true)],
        vec![chunk(&vote, &[], true)],
        vec![chunk(&vote, &meta, false)],
        vec![chunk(&vote, &meta, false), chunk(&vote, &meta, true)],
        vec![chunk(&vote, &meta, true), chunk(&[], &[], true)],
        vec![chunk(&[0xff], &meta, true)],
        vec![chunk(&vote, &[0xff, 0xff], true)],
    ];
    for stream in malformed {
        let status = c
            .install_snapshot(tokio_stream::iter(stream))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }

    // A malformed request in a replication stream ends it with
    // INVALID_ARGUMENT.
    let mut replies = c
        .stream_append(tokio_stream::iter(vec![garbage()]))
        .await
        .unwrap()
        .into_inner();
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Forward/ReadIndex reach the PeerHandler.
    let status = c.forward(Payload { data: vec![1] }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = c.read_index(Payload { data: vec![1] }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    // A well-formed vote still works: the node is alive.
    let mut client = NetworkFactory::new(9, NetworkConfig::default()).client(1, &n.node);
    client
        .vote(vote_req(), RPCOption::new(Duration::from_secs(2)))
        .await
        .unwrap();
    n.stop().await;
}

/// A stopped Raft answers with `Fatal`, which the client maps to Unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_raft_is_unreachable() {
    let n = TestNode::start(1).await;
    n.raft.shutdown().await.unwrap();
    let mut client = NetworkFactory::new(9, NetworkConfig::default()).client(1, &n.node);
    match client
        .vote(vote_req(), RPCOption::new(Duration::from_secs(2)))
        .await
    {
        Err(RPCError::Unreachable(e)) => assert!(e.to_string().contains("stopped"), "{e}"),
        other => panic!("want Unreachable, got {other:?}"),
    }
    n.stop().await;
}

/// Answers a forwarded payload with the payload reversed, after as many
/// milliseconds as its first byte says; "fail" gets `FAILED_PRECONDITION`.
struct SlowEcho;

impl PeerHandler for SlowEcho {
    fn forward(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        Box::pin(async move {
            if payload == b"fail" {
                return Err(tonic::Status::failed_precondition("asked to fail"));
            }
            let ms = payload.first().copied().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
            Ok(payload.into_iter().rev().collect())
        })
    }

    fn read_index(&self, _payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        Box::pin(async { Err(tonic::Status::unimplemented("read_index")) })
    }
}

/// `ForwardStream` answers each request by its id as soon as it is ready,
/// out of order, errors included; a frame too short for an id ends the
/// stream with INVALID_ARGUMENT once the answers under way are sent; a
/// member whose Raft stops ends its streams with UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_stream_answers_by_id_and_ends_on_bad_frames_and_shutdown() {
    let n = TestNode::start_with(1, Arc::new(SlowEcho)).await;
    let mut c = n.client().await;
    let frame = |payload: &[u8], id| Payload {
        data: forward_frame::request(payload.to_vec(), id),
    };

    let requests = vec![
        frame(&[60, 1], 10),
        frame(b"fail", 11),
        frame(&[0, 2], 12),
        Payload {
            data: vec![1, 2, 3],
        },
    ];
    let mut replies = c
        .forward_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    let end = loop {
        match replies.message().await {
            Ok(Some(p)) => answers.push(forward_frame::split_reply(p.data).unwrap()),
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::InvalidArgument, "{end:?}");
    let ids: Vec<u64> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 3, "every request before the bad frame: {ids:?}");
    assert_eq!(*ids.last().unwrap(), 10, "the slow one comes last: {ids:?}");
    for (id, answer) in answers {
        match id {
            10 => assert_eq!(answer.unwrap(), vec![1, 60]),
            11 => assert_eq!(answer.unwrap_err().code(), tonic::Code::FailedPrecondition),
            12 => assert_eq!(answer.unwrap(), vec![2, 0]),
            other => panic!("an answer to no request: {other}"),
        }
    }

    // An open stream ends when the member's Raft stops.
    let (tx, rx) = tokio::sync::mpsc::channel::<Payload>(4);
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    let mut replies = c.forward_stream(outbound).await.unwrap().into_inner();
    tx.send(frame(&[0, 7], 1)).await.unwrap();
    let (id, answer) =
        forward_frame::split_reply(replies.message().await.unwrap().unwrap().data).unwrap();
    assert_eq!((id, answer.unwrap()), (1, vec![7, 0]));
    n.raft.shutdown().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("the stream ends")
        .unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    drop(tx);
    n.stop().await;
}
