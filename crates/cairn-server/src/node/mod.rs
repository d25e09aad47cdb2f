//! A Cairn member: storage, Raft, the write path, the watch hub and the
//! leader's housekeeping, wired together. Services talk to a `Node`.

pub mod data_format;
mod force_new_cluster;
pub mod forward;
mod forward_stream;
pub mod identity;
mod members;
pub mod peer_handler;
mod pending_voters;
pub mod removal;
mod router;

use openraft::async_runtime::WatchReceiver;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn_raft::log_store::LogStore;
use cairn_raft::network::{NetworkConfig, NetworkFactory};
use cairn_raft::snapshot_file::SnapshotFile;
use cairn_raft::state_machine::{ApplyObserver, SharedStore, Stamp, StateMachineStore};
use cairn_raft::types::CairnNode;
use cairn_store::{AlarmAction, AlarmKind, Command, CommandResult, Event, Store, StoreError};
use redb::Database;

use crate::clock::ClusterClock;
use crate::config::{ClusterState, ServerConfig};
use crate::error::ServerError;
use crate::proposer::Proposer;
use crate::saved_clock::SavedClock;
use crate::watch_hub::WatchHub;
pub use identity::Identity;
pub use members::Member;
pub use router::Router;

pub type Raft = cairn_raft::types::Raft<StateMachineStore>;

/// Etcd API version we answer with: the one whose wire contract we follow.
pub const ETCD_API_VERSION: &str = "3.5.0";

pub struct Node {
    pub identity: Identity,
    pub config: ServerConfig,
    pub raft: Raft,
    /// The replicated keyspace, read by services, written only by apply.
    pub store: SharedStore,
    pub hub: Arc<WatchHub>,
    pub clock: Arc<ClusterClock>,
    pub router: Arc<Router>,
    proposer: Proposer,
    db_path: std::path::PathBuf,
    /// Where this member writes Raft snapshots (received, or to send):
    /// `/metrics` reports the size of the last one.
    pub snapshots: Arc<SnapshotFile>,
    /// Where the clock's estimate is saved each tick, for a restart.
    saved_clock: Arc<SavedClock>,
    /// Why this member found itself removed from the cluster, once it has
    /// (removal.rs); it then serves nothing more.
    removed: tokio::sync::watch::Sender<Option<String>>,
    /// Whether the member started on data of its own (its identity was
    /// stored): only then has it a keyspace of its own for the initial
    /// corruption check to compare, as etcd checks only such members.
    pub held_data: bool,
    /// What `Authenticate` issues and requests present (`--auth-token`),
    /// its keys read at start.
    pub tokens: crate::auth::token::Tokens,
    /// Whether this member has long known no leader, for the streams of
    /// clients that require one (`require_leader`).
    pub leader_watch: crate::require_leader::LeaderWatch,
    /// Leaders seen taking office, for `/metrics`.
    pub leader_changes: crate::services::etcd_metrics::LeaderChanges,
    /// Members added as voters that are learners until they catch up; on
    /// disk, so that a restart still promotes them.
    pending_voters: Arc<pending_voters::PendingVoters>,
}

/// Whether a Raft runs, was stopped as asked, or stopped on its own.
enum RaftRun {
    Running,
    Stopped,
    Failed(String),
}

impl RaftRun {
    fn failure(self) -> Option<String> {
        match self {
            RaftRun::Failed(why) => Some(why),
            RaftRun::Running | RaftRun::Stopped => None,
        }
    }
}

fn raft_run(state: &Result<(), openraft::error::Fatal<cairn_raft::types::TypeConfig>>) -> RaftRun {
    match state {
        Ok(()) => RaftRun::Running,
        Err(openraft::error::Fatal::Stopped) => RaftRun::Stopped,
        Err(e) => RaftRun::Failed(e.to_string()),
    }
}

/// Feeds the watch hub and the cluster clock from applied batches.
struct Observer {
    hub: Arc<WatchHub>,
    clock: Arc<ClusterClock>,
    store: SharedStore,
    /// The member's Raft, once started: whom it follows in which term
    /// decides which stamps its clock follows (clock.rs).
    raft: Arc<OnceLock<Raft>>,
}

impl Observer {
    fn follow(&self, stamp: Stamp) {
        let Some(raft) = self.raft.get() else { return };
        let (term, leader, me) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            (m.current_term, m.current_leader, m.id)
        };
        if leader.is_some_and(|l| l != me) && stamp.term == term {
            self.clock.follow(stamp.now_ms, stamp.term);
        }
    }
}

impl ApplyObserver for Observer {
    fn wants_events(&self) -> bool {
        self.hub.has_watchers()
    }

    fn applied(&self, events: Option<Vec<Event>>, revision: i64, stamp: Option<Stamp>) {
        let now = self.store.read().map(|s| s.now_ms()).unwrap_or(0);
        self.clock.observe(now);
        if let Some(stamp) = stamp {
            self.follow(stamp);
        }
        match events {
            Some(events) => self.hub.applied(&events, revision),
            None => self.hub.applied_without_events(revision),
        }
    }

    fn snapshot_installed(&self, revision: i64) {
        let now = self.store.read().map(|s| s.now_ms()).unwrap_or(0);
        self.clock.observe(now);
        self.hub.resync_all(revision);
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("data dir {path}: {reason}")]
    DataDir {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    AuthToken(#[from] crate::auth::jwt::JwtKeyError),
    /// The initial corruption check found this member's keyspace unlike
    /// the one a majority of the members hold: it does not serve, as etcd
    /// does not.
    #[error(
        "initial corruption check: member {member_id:x} hashes revision {revision} to \
         {hash:#010x}, a majority of the members to {majority_hash:#010x}; \
         replace this member's data"
    )]
    Corrupt {
        member_id: u64,
        revision: i64,
        hash: u32,
        majority_hash: u32,
    },
}

impl Node {
    /// Open (or create) the data dir and start Raft. Bootstraps a new
    /// cluster from `initial_cluster` when the data dir is new.
    pub async fn start(config: ServerConfig) -> Result<Arc<Node>, StartError> {
        config.validate()?;
        // Key files first: a wrong one fails the start before any data is
        // touched.
        let tokens = crate::auth::token::Tokens::open(
            &config
                .token_spec()
                .map_err(|reason| crate::config::ConfigError::Invalid {
                    setting: "auth-token",
                    reason,
                })?,
            config.auth_token_ttl_secs,
        )?;
        start_spare_bucket_maker();
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| StartError::DataDir {
            path: data_dir.clone(),
            reason: e.to_string(),
        })?;
        let db_path = data_dir.join("cairn.redb");
        // How long this member was down (see clock.rs), before opening
        // the file touches it.
        let restarted = db_path.exists();
        let downtime_cap_ms = 10 * config.election_timeout_ms;
        let downtime_ms = crate::clock::downtime_ms(&db_path, downtime_cap_ms);
        let saved_clock = Arc::new(SavedClock::new(&data_dir));
        let pending_voters =
            Arc::new(pending_voters::PendingVoters::open(&data_dir).map_err(StartError::Storage)?);
        let db = open_database(&db_path, config.storage_cache_bytes).await?;
        // Before anything else reads the file.
        data_format::check_and_record(&db).map_err(|reason| StartError::DataDir {
            path: db_path.clone(),
            reason,
        })?;
        let db = Arc::new(db);

        let (identity, fresh) = match identity::load(&db).map_err(StartError::Storage)? {
            Some(id) => (id, false),
            None => {
                let id = Identity {
                    member_id: identity::member_id(
                        &config.advertise_peer_url(),
                        &config.initial_cluster_token,
                    ),
                    cluster_id: identity::cluster_id(&config.initial_cluster_token),
                    name: config.name.clone(),
                };
                identity::save(&db, &id).map_err(StartError::Storage)?;
                (id, true)
            }
        };

        let mut log_store = LogStore::open(db.clone(), &log_dir(&config)?)
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let mut sm = StateMachineStore::open(db.clone(), &data_dir.join("snapshot"))
            .map_err(|e| StartError::Storage(e.to_string()))?
            .with_writer(log_store.state_writer());
        if config.force_new_cluster {
            if fresh {
                tracing::warn!("--force-new-cluster ignored: the data dir holds no cluster yet");
            } else {
                let me = CairnNode {
                    name: identity.name.clone(),
                    peer_url: config.advertise_peer_url(),
                    client_urls: config.advertise_client_urls(),
                };
                match force_new_cluster::force(&mut log_store, &mut sm, identity.member_id, me)
                    .await?
                {
                    force_new_cluster::Forced::Alone { index, dropped } => tracing::warn!(
                        "--force-new-cluster: member {:x} is now alone in the cluster \
                         (membership at log index {index}); dropped members {}; wipe their \
                         data before they rejoin with `member add`, and start this member \
                         without the flag from now on",
                        identity.member_id,
                        dropped
                            .iter()
                            .map(|id| format!("{id:x}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    force_new_cluster::Forced::AlreadyAlone => tracing::info!(
                        "--force-new-cluster: member {:x} is already alone; nothing to do",
                        identity.member_id
                    ),
                }
            }
        }
        let store = sm.shared_store();
        let now = store.read().map(|s| s.now_ms()).unwrap_or(0);
        let saved = if restarted {
            saved_clock.load(downtime_cap_ms)
        } else {
            None
        };
        let clock = Arc::new(ClusterClock::at_start(restarted, now, downtime_ms, saved));
        tracing::info!(
            "cluster clock starts at {} ms ({}; store time {now} ms, downtime {downtime_ms} ms, saved {saved:?})",
            clock.now_ms(),
            if clock.running_ms().is_some() { "running" } else { "frozen until a leader's stamp" },
        );
        // At once: if the cluster goes down again before a leader stamps a
        // time, this estimate is all that remembers this downtime.
        if let Some(ms) = clock.running_ms() {
            saved_clock.save_in_background(ms);
        }
        let hub = WatchHub::new(store.clone());
        let observed_raft = Arc::new(OnceLock::new());
        sm.set_observer(Arc::new(Observer {
            hub: hub.clone(),
            clock: clock.clone(),
            store: store.clone(),
            raft: observed_raft.clone(),
        }));

        let raft_config = openraft::Config {
            cluster_name: format!("cairn-{:x}", identity.cluster_id),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_ms,
            election_timeout_max: config.election_timeout_ms * 2,
            // etcd's rule (`--snapshot-count`). A snapshot copies nothing
            // when built (`cairn_raft::state_machine::SnapshotBuilder`), so
            // its only cost is the log it lets go.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
            // Keep one snapshot interval of log so a briefly lagging follower
            // catches up from the log, not a whole snapshot.
            max_in_snapshot_log_to_keep: config.snapshot_entries,
            // openraft applies this per snapshot chunk; chunks are 1 MiB.
            install_snapshot_timeout: 10_000,
            // A restarted leader must not resume its term without an
            // election: it would serve ReadIndex reads before committing an
            // entry of its own, from a commit index that lags what it
            // acknowledged before the crash (stale reads, and lease
            // deadlines recomputed from a restarted clock; both found by
            // cairn-chaos, seeds 1001 and 901). A new term costs one
            // election, which the other members have usually held already.
            enable_leader_restore: Some(false),
            // A follower that cannot win (cut off, behind a stalled
            // snapshot) asks first whether it would, and only then raises
            // its term. Without it, such a follower's raised term deposed
            // a healthy leader once the links healed (cairn-chaos,
            // `--faults one-way`, seed 1063: the leader's lease refused its
            // votes, but its term stayed above the leader's).
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let peer_dial_tls = match config.peer_tls() {
            Some(files) => Some(crate::tls::peer_dial_config(files, &config.tls_policy()?)?),
            None => None,
        };
        let network = NetworkFactory::new(
            identity.member_id,
            NetworkConfig {
                commit_notice_delay: Duration::from_millis(config.commit_notice_delay_ms),
                cluster_id: Some(identity.cluster_id),
                tls: peer_dial_tls.clone(),
                ..NetworkConfig::default()
            },
        );
        let snapshots = sm.snapshot_file();
        let raft = Raft::new(
            identity.member_id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let _ = observed_raft.set(raft.clone());

        if fresh && config.initial_cluster_state == ClusterState::New {
            let members = config.initial_members()?;
            let nodes: std::collections::BTreeMap<u64, CairnNode> = members
                .iter()
                .map(|m| {
                    let id = identity::member_id(&m.peer_url, &config.initial_cluster_token);
                    (
                        id,
                        CairnNode {
                            name: m.name.clone(),
                            peer_url: m.peer_url.clone(),
                            client_urls: Vec::new(),
                        },
                    )
                })
                .collect();
            // Every initial member proposes the same membership as entry 0,
            // so it does not matter which of them wins the first election.
            if !raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
            {
                raft.initialize(nodes)
                    .await
                    .map_err(|e| StartError::Raft(e.to_string()))?;
            }
        }

        let router = Arc::new(Router::new(
            raft.clone(),
            Duration::from_millis(config.request_timeout_ms),
            clock.clone(),
            identity.cluster_id,
            peer_dial_tls,
        ));
        let proposer = Proposer::start(router.clone());
        let node = Arc::new(Node {
            identity,
            config,
            raft,
            store,
            hub,
            clock,
            router,
            proposer,
            db_path,
            snapshots,
            saved_clock,
            removed: tokio::sync::watch::Sender::new(None),
            held_data: !fresh,
            tokens,
            leader_watch: crate::require_leader::LeaderWatch::default(),
            leader_changes: Default::default(),
            pending_voters,
        });
        tokio::spawn(crate::services::etcd_metrics::count_leader_changes(
            Arc::downgrade(&node),
        ));
        tokio::spawn(crate::require_leader::watch_leader(
            Arc::downgrade(&node),
            Duration::from_millis(node.config.election_timeout_ms),
            node.leader_watch.clone(),
        ));
        tokio::spawn(node.hub.clone().run_catch_up(Duration::from_millis(100)));
        tokio::spawn(tick_loop(node.clone()));
        match node.config.auto_compaction() {
            Ok(policy) => {
                tokio::spawn(crate::compactor::run(Arc::downgrade(&node), policy));
            }
            // `validate` refuses it at start; a config built in code may not
            // have been validated.
            Err(e) => tracing::warn!("auto-compaction off: {e}"),
        }
        if node.config.corrupt_check_interval_ms > 0 {
            let interval = Duration::from_millis(node.config.corrupt_check_interval_ms);
            tokio::spawn(crate::corruption::run(Arc::downgrade(&node), interval));
        }
        tokio::spawn(cairn_raft::leader_watch::run(node.raft.clone(), network));
        tokio::spawn(members::publish_attributes(Arc::downgrade(&node)));
        tokio::spawn(members::promote_pending_voters(Arc::downgrade(&node)));
        let election_timeout = Duration::from_millis(node.config.election_timeout_ms);
        let tick_interval = Duration::from_millis(node.config.tick_interval_ms);
        tokio::spawn(removal::watch(
            Arc::downgrade(&node),
            election_timeout,
            2 * tick_interval.max(election_timeout),
        ));
        Ok(node)
    }

    pub fn member_id(&self) -> u64 {
        self.identity.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.identity.cluster_id
    }

    /// Read access to the keyspace. Hold it briefly: apply waits for it.
    pub fn store(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn raft_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    pub fn db_path(&self) -> &std::path::Path {
        &self.db_path
    }

    /// Replicate `command` and return its result; a store error comes back
    /// as `ServerError::Store`. Works on any member.
    pub async fn write(&self, command: Command) -> Result<CommandResult, ServerError> {
        if adds_data(&command) {
            self.check_quota().await?;
        }
        let started = std::time::Instant::now();
        let result = self.proposer.propose(command).await;
        WRITE_DURATION.observe(started.elapsed());
        result
    }

    /// [`Node::write`] on behalf of `caller`: checked against the auth
    /// state here, and again where it is applied.
    pub async fn write_as(
        &self,
        caller: &crate::auth::Caller,
        command: Command,
    ) -> Result<CommandResult, ServerError> {
        self.write(caller.command(self, command).await?).await
    }

    /// Refuse writes that add data once the keyspace is over quota, raising
    /// the NOSPACE alarm (replicated) the first time.
    async fn check_quota(&self) -> Result<(), ServerError> {
        let (over, raised) = {
            let s = self.store();
            let raised = s.alarms().iter().any(|(_, a)| *a == AlarmKind::NoSpace);
            (s.size_bytes() > self.config.quota_backend_bytes, raised)
        };
        if over {
            if !raised {
                let alarm = Command::Alarm {
                    action: AlarmAction::Activate,
                    member_id: self.member_id(),
                    alarm: AlarmKind::NoSpace,
                };
                self.proposer.propose(alarm).await?;
            }
            return Err(ServerError::Store(StoreError::NoSpace));
        }
        Ok(())
    }

    /// Wait until a read here would see every write acknowledged before
    /// this call (linearizable read). Serializable reads skip it.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        self.router.read_barrier().await
    }

    pub fn leader_id(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Whether this member knows a leader able to commit: another member
    /// it follows, or itself having heard from a quorum within two
    /// election timeouts (or being the only voter). An isolated leader
    /// keeps its office in openraft until it hears of a higher term; etcd's
    /// (with CheckQuorum) steps down, so by this test it has none, as
    /// etcd's would. For require-leader requests and `has_leader`.
    pub fn knows_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        match m.current_leader {
            None => false,
            Some(leader) if leader == m.id => {
                let alone = m.membership_config.membership().voter_ids().eq([m.id]);
                let within = Duration::from_millis(self.config.election_timeout_ms * 2);
                alone
                    || m.last_quorum_acked
                        .as_ref()
                        .is_some_and(|t| openraft::Instant::elapsed(&**t) < within)
            }
            Some(_) => true,
        }
    }

    /// Why this member's Raft stopped on its own (a storage error: a full
    /// disk, a failed fsync), if it did. Such a member serves nothing
    /// more; its last metrics may still name a leader.
    pub fn raft_failure(&self) -> Option<String> {
        raft_run(&self.raft.metrics().borrow_watched().running_state).failure()
    }

    /// Whether this member's Raft still runs (neither shut down nor
    /// stopped on its own).
    pub fn raft_running(&self) -> bool {
        matches!(
            raft_run(&self.raft.metrics().borrow_watched().running_state),
            RaftRun::Running
        )
    }

    /// Waits until this member's Raft stops on its own and says why. A
    /// stop asked for by [`shutdown`](Self::shutdown) never returns.
    pub async fn raft_failed(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            // Bound first: the metrics guard must not live across an await.
            let run = raft_run(&rx.borrow_watched().running_state);
            match run {
                RaftRun::Failed(why) => return why,
                RaftRun::Stopped => return std::future::pending().await,
                RaftRun::Running => {}
            }
            // Only a dropped sender errs: the core's task ended without
            // saying why (a panic).
            if rx.changed().await.is_err() {
                return "Raft's task ended".to_string();
            }
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Open the data file. A member restarted in the same process right after
/// a shutdown may find the file still held by threads that are finishing;
/// wait for them (bounded) rather than fail.
async fn open_database(path: &std::path::Path, cache_bytes: usize) -> Result<Database, StartError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
        {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => {
                return Err(StartError::DataDir {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// A client write's time in this member's write path, batching,
/// forwarding, consensus and apply included (`GET /metrics`).
pub static WRITE_DURATION: cairn_raft::metrics::Histogram = cairn_raft::metrics::Histogram::new(
    "cairn_server_write_duration_seconds",
    "A client write from this member's write path to its result (batching, forwarding to the leader, commit and apply).",
);

fn adds_data(c: &Command) -> bool {
    match c {
        Command::Put(_) | Command::LeaseGrant { .. } => true,
        Command::Txn(t) => cairn_store::txn::has_put(t),
        Command::Registry(r) => r.adds_data(),
        Command::As { command, .. } => adds_data(command),
        _ => false,
    }
}

/// While this node leads: advance cluster time and expire due leases (a
/// tick expires at most `max_lease_expiries_per_tick` etcd leases, each
/// deleting its keys; claim leases end by the count, all that are due).
///
/// A member that becomes leader ticks at once, not at its next interval:
/// its clock starts running then (a new cluster's is frozen until it
/// does), and its followers' clocks follow the first stamp of its term
/// (clock.rs) a commit later instead of up to an interval later.
async fn tick_loop(node: Arc<Node>) {
    let weak = Arc::downgrade(&node);
    let interval = Duration::from_millis(node.config.tick_interval_ms);
    let max_expiries = node.config.max_lease_expiries_per_tick;
    let me = node.identity.member_id;
    let mut server_metrics = node.raft.server_metrics();
    drop(node);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics_open = true;
    let mut was_leading = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = server_metrics.changed(), if metrics_open => {
                // Raft stopped: ticks alone from here (they find no leader).
                metrics_open = changed.is_ok();
                let leads = server_metrics.borrow_watched().current_leader == Some(me);
                if !leads || was_leading {
                    was_leading = leads;
                    continue;
                }
            }
        }
        let Some(node) = weak.upgrade() else { return };
        let leading = node.raft.is_leader();
        was_leading = leading;
        node.clock.set_leading(leading);
        // Every member, leading or not (saved_clock.rs).
        if let Some(ms) = node.clock.running_ms() {
            node.saved_clock.save_in_background(ms);
        }
        if !leading {
            continue;
        }
        let tick = Command::Tick {
            now_ms: node.clock.now_ms(),
            max_expiries,
        };
        // A failed tick (no longer leading, shutting down) is retried by
        // the next interval's.
        let _ = node.proposer.propose(tick).await;
    }
}

/// How long a claims table array made ahead may wait unused before it is
/// freed (see `cairn_store::claims::spare_buckets`).
const SPARE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts, once per process, the thread that makes the claims tables'
/// next arrays ahead of their growth, so that the page faults of fresh
/// memory are taken there instead of inside an apply every member runs.
/// Where the Raft log's segments live: `wal_dir` when given, else
/// `<data_dir>/raft-wal`. A log left in the data dir while `wal_dir` names
/// another place is refused rather than started without: the member would
/// come up with its state and none of its log.
fn log_dir(config: &ServerConfig) -> Result<std::path::PathBuf, StartError> {
    let in_data_dir = config.data_dir.join("raft-wal");
    let Some(wal_dir) = &config.wal_dir else {
        return Ok(in_data_dir);
    };
    let left_behind = wal_dir != &in_data_dir
        && std::fs::read_dir(&in_data_dir).is_ok_and(|mut d| d.next().is_some());
    if left_behind {
        return Err(StartError::DataDir {
            path: in_data_dir,
            reason: format!(
                "holds this member's Raft log, but --wal-dir names {}; move the files there \
                 (or drop --wal-dir)",
                wal_dir.display()
            ),
        });
    }
    Ok(wal_dir.clone())
}

fn start_spare_bucket_maker() {
    use cairn_store::claims::spare_buckets;
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("cairn-claims-spares".into())
            .spawn(|| {
                // Work done ahead: never worth a CPU a request waits for.
                // Under full load it may make few arrays; tables then
                // allocate their own, as before.
                cairn_raft::thread_priority::run_only_when_idle();
                let mut since_drop = std::time::Instant::now();
                loop {
                    spare_buckets::make_one_spare(SPARE_IDLE);
                    if since_drop.elapsed() >= SPARE_IDLE {
                        spare_buckets::drop_unused_spares();
                        since_drop = std::time::Instant::now();
                    }
                }
            });
        if let Err(e) = spawned {
            // Tables then allocate their own arrays, as they would anyway.
            tracing::warn!("claims: no thread to make table arrays ahead: {e}");
        }
    });
}
