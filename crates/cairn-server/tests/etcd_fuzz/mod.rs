//! The machinery of `random_requests.rs`: one [`Fuzzer`] per client task,
//! the state the tasks share and the judging of answers. The random values
//! the requests are made of are in [`values`] (where each client's keys
//! are confined to its own prefix); the requests themselves in [`kv`]
//! (Range, Put, DeleteRange, Txn, Compact) and [`others`] (leases, watch,
//! maintenance, cluster).

pub mod kv;
pub mod others;
pub mod values;

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::ResponseHeader;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub use crate::support::{describe, prefix_end};
use crate::support::{member_channel, member_panics, record_member_panics, Cluster, REPRODUCE};

/// A call unanswered this long hangs (members time requests out at 5 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A watch stream that says nothing for this long has said all it will.
const WATCH_QUIET: Duration = Duration::from_millis(100);
/// Most time spent reading one watch stream (history replays can be long).
const WATCH_READ: Duration = Duration::from_secs(1);
/// Responses are not what is limited here: ranges over old revisions with
/// long values run to many MiB.
const RESPONSE_LIMIT: usize = 256 * 1024 * 1024;
/// Keys are drawn mostly from these bytes, at most 3 long after the
/// client's prefix, so a client's requests collide on its few dozen keys.
const KEY_ALPHABET: &[u8] = b"ab/c";
/// Written only by the cairn.v1 registry API; etcd writes are refused.
pub const RESERVED_PREFIX: &[u8] = b"\0cairn/";
/// The gRPC decode limit's slack over `max_request_bytes` (Limits).
const DECODE_SLACK: usize = 64 * 1024;

/// Codes that tell the client what was wrong with its request or with the
/// state it asked about, so it can act on them. Only those the etcd API
/// gives such requests with auth off: a permission, authentication,
/// "already exists" or "aborted" answer here would be a wrong one.
pub const ACTIONABLE: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::OutOfRange,
    Code::FailedPrecondition,
    Code::ResourceExhausted,
];

/// [`Fuzzer::index`] in the checks after the run.
pub const AFTER_THE_RUN: usize = usize::MAX;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Range,
    Put,
    Delete,
    Txn,
    Compact,
    LeaseGrant,
    LeaseRevoke,
    LeaseTimeToLive,
    Leases,
    KeepAlive,
    Watch,
    Status,
    Alarm,
    HashKv,
    MemberList,
}

/// How many requests in 100 are of each kind: mostly KV, whose checks
/// are the most involved; compactions rarely, so reads of the past still
/// work most of the time.
const MIX: &[(Kind, u32)] = &[
    (Kind::Range, 20),
    (Kind::Put, 24),
    (Kind::Delete, 7),
    (Kind::Txn, 15),
    (Kind::Compact, 1),
    (Kind::LeaseGrant, 6),
    (Kind::LeaseRevoke, 3),
    (Kind::LeaseTimeToLive, 3),
    (Kind::Leases, 2),
    (Kind::KeepAlive, 3),
    (Kind::Watch, 7),
    (Kind::Status, 3),
    (Kind::Alarm, 2),
    (Kind::HashKv, 2),
    (Kind::MemberList, 2),
];

/// What each client is sending, for the panic hook.
static IN_FLIGHT: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn set_in_flight(client: usize, what: String) {
    let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    if in_flight.len() <= client {
        in_flight.resize(client + 1, "nothing".into());
    }
    in_flight[client] = what;
}

/// A member's panic is recorded with every client's request in flight.
pub fn record_panics() {
    record_member_panics(|| {
        let in_flight = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        format!("requests in flight {in_flight:?}")
    });
}

/// Every etcd service's client on one connection to one member.
#[derive(Clone)]
pub struct Clients {
    pub kv: KvClient<Channel>,
    pub lease: LeaseClient<Channel>,
    pub watch: WatchClient<Channel>,
    pub maintenance: MaintenanceClient<Channel>,
    pub cluster: ClusterClient<Channel>,
}

async fn connect(c: &Cluster, i: usize) -> Clients {
    let channel = member_channel(c, i).await;
    Clients {
        kv: KvClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        lease: LeaseClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        watch: WatchClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        maintenance: MaintenanceClient::new(channel.clone())
            .max_decoding_message_size(RESPONSE_LIMIT),
        cluster: ClusterClient::new(channel).max_decoding_message_size(RESPONSE_LIMIT),
    }
}

/// The members' request limits, as configured.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

/// What the client tasks share.
pub struct Shared {
    pub seed: u64,
    /// How many client tasks run.
    pub clients: usize,
    pub members: Vec<Clients>,
    pub nodes: Vec<Arc<cairn_server::Node>>,
    pub limits: Limits,
    /// Set by the first client that fails: the others stop.
    pub stop: AtomicBool,
    /// The first client failure's message.
    pub failure: Mutex<Option<String>>,
    pub started: Instant,
    pub budget: Duration,
    /// Answers by request kind and outcome, for the summary.
    pub tally: Mutex<BTreeMap<String, usize>>,
    /// Held by an Alarm request from before it is sent until a NOSPACE
    /// alarm it raised is cleared: another client's Deactivate would clear
    /// it first, and its own check would fail.
    pub alarms: tokio::sync::Mutex<()>,
    /// Odd while a NOSPACE alarm a client raised may be up: every write
    /// is then refused with ResourceExhausted, even one refused otherwise
    /// when no alarm is up. One more each time one is raised or cleared.
    pub nospace: AtomicU64,
}

impl Shared {
    pub async fn new(c: &Cluster, seed: u64, clients: usize, budget: Duration) -> Shared {
        let mut members = Vec::new();
        for i in 0..c.members.len() {
            members.push(connect(c, i).await);
        }
        let config = &c.members[0].config;
        Shared {
            seed,
            clients,
            members,
            nodes: (0..c.members.len()).map(|i| c.node(i).clone()).collect(),
            limits: Limits {
                max_request_bytes: config.max_request_bytes,
                max_txn_ops: config.max_txn_ops,
            },
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            started: Instant::now(),
            budget,
            tally: Mutex::new(BTreeMap::new()),
            alarms: tokio::sync::Mutex::new(()),
            nospace: AtomicU64::new(0),
        }
    }

    pub fn tally(&self) -> BTreeMap<String, usize> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How to rerun this test with the same requests.
    pub fn reproduce(&self) -> String {
        format!(
            "{REPRODUCE}{} CAIRN_FUZZ_CLIENTS={} cargo test -p cairn-server --test random_requests",
            self.seed, self.clients
        )
    }
}

/// One client task: its own seeded RNG, its own key prefix and leases,
/// requests round-robin over the members.
pub struct Fuzzer {
    pub shared: Arc<Shared>,
    pub client: usize,
    pub rng: StdRng,
    /// The request being made, and the member it goes to.
    pub index: usize,
    pub member: usize,
    /// Every member's term when the request began.
    terms: Vec<u64>,
    /// [`Shared::nospace`] when the request began.
    nospace: u64,
    /// The highest revision any answer to this client reported.
    pub head: i64,
    /// The highest compaction revision this client learned of.
    pub compacted: i64,
    /// Leases this client was granted, and those it revoked.
    pub granted: Vec<i64>,
    /// What this client knows its keys hold: a key it put with no lease
    /// (its mod revision and value, as read back), or one it deleted.
    /// Only this client writes them, so this holds until it writes them
    /// again; checked at the end ([`Fuzzer::check_own_keys`]).
    pub known: BTreeMap<Vec<u8>, Option<(i64, Vec<u8>)>>,
    pub revoked: Vec<i64>,
    /// What the request in flight is, for the tally.
    pub kind: Kind,
    /// The request in flight may break etcd's rules anywhere (empty keys,
    /// unknown enum numbers, clashing flags, empty txn ops, ...); else it
    /// breaks only those that depend on the state (a lease gone, a key
    /// missing), so that deep txns get applied too.
    pub hostile: bool,
    /// How many requests this client made.
    pub requests: usize,
    /// The time budget ran out before all were made.
    pub cut_short: bool,
}

impl Fuzzer {
    pub fn new(shared: Arc<Shared>, client: usize) -> Fuzzer {
        // Each client's stream of requests follows from the seed, its
        // number and its answers alone.
        let seed = shared
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(client as u64 + 1);
        Fuzzer {
            shared,
            client,
            rng: StdRng::seed_from_u64(seed),
            index: 0,
            member: client,
            terms: Vec::new(),
            nospace: 0,
            head: 1,
            compacted: 0,
            granted: Vec::new(),
            known: BTreeMap::new(),
            revoked: Vec::new(),
            kind: Kind::Status,
            hostile: false,
            requests: 0,
            cut_short: false,
        }
    }

    pub async fn run(mut self, requests: usize) -> Fuzzer {
        for index in 0..requests {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if self.shared.started.elapsed() > self.shared.budget {
                self.cut_short = true;
                break;
            }
            self.begin(index);
            self.kind = MIX
                .choose_weighted(&mut self.rng, |(_, weight)| *weight)
                .expect("weights")
                .0;
            set_in_flight(
                self.client,
                format!("client {} #{index} {:?}", self.client, self.kind),
            );
            self.one().await;
            self.requests = index + 1;
        }
        set_in_flight(self.client, format!("client {} done", self.client));
        self
    }

    async fn one(&mut self) {
        match self.kind {
            Kind::Range => self.range().await,
            Kind::Put => self.put().await,
            Kind::Delete => self.delete_range().await,
            Kind::Txn => self.txn().await,
            Kind::Compact => self.compact().await,
            Kind::LeaseGrant => self.lease_grant().await,
            Kind::LeaseRevoke => self.lease_revoke().await,
            Kind::LeaseTimeToLive => self.lease_time_to_live().await,
            Kind::Leases => self.lease_leases().await,
            Kind::KeepAlive => self.lease_keep_alive().await,
            Kind::Watch => self.watch().await,
            Kind::Status => self.status().await,
            Kind::Alarm => self.alarm().await,
            Kind::HashKv => self.hash_kv().await,
            Kind::MemberList => self.member_list().await,
        }
    }

    fn begin(&mut self, index: usize) {
        self.index = index;
        self.member = (self.client + index) % self.shared.members.len();
        self.terms = self.shared.nodes.iter().map(|n| n.raft_term()).collect();
        self.nospace = self.shared.nospace.load(Ordering::SeqCst);
        self.hostile = self.rng.random_bool(0.4);
    }

    pub fn fail(&self, request: &(dyn Debug + Sync), what: impl Display) -> ! {
        let at = match self.index {
            AFTER_THE_RUN => "after its requests".to_string(),
            i => format!("request #{i} {:?}", self.kind),
        };
        let message = format!(
            "seed {seed}, client {client} of {clients}, {at} (member {member}): {what}\n  \
             request: {request}\n  member panics before it: {panics:#?}\n  {reproduce}",
            seed = self.shared.seed,
            client = self.client,
            clients = self.shared.clients,
            member = self.member,
            request = describe(request),
            panics = member_panics(),
            reproduce = self.shared.reproduce(),
        );
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| message.clone());
        panic!("{message}")
    }

    pub fn count(&self, outcome: impl Display) {
        let key = format!("{:?} {outcome}", self.kind);
        *self
            .shared
            .tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub fn saw(&mut self, header: &Option<ResponseHeader>) {
        if let Some(h) = header {
            self.head = self.head.max(h.revision);
        }
    }

    /// The member this request goes to.
    pub fn client(&self) -> Clients {
        self.shared.members[self.member].clone()
    }

    /// The next member round-robin: the model's reads check another
    /// member than the one that took the write.
    pub fn other_client(&self) -> Clients {
        self.shared.members[(self.member + 1) % self.shared.members.len()].clone()
    }

    /// An election began or a leader was lost since the request began.
    fn election_during_request(&self) -> bool {
        self.shared
            .nodes
            .iter()
            .zip(&self.terms)
            .any(|(n, term)| n.raft_term() != *term || n.leader_id().is_none())
    }

    /// `status` refuses a write for lack of space, and a NOSPACE alarm
    /// was raised during the request.
    pub fn no_space_during_request(&self, status: &Status) -> bool {
        status.code() == Code::ResourceExhausted
            && status.message() == "etcdserver: mvcc: database space exceeded"
            && (self.nospace % 2 == 1 || self.shared.nospace.load(Ordering::SeqCst) != self.nospace)
    }

    fn unavailable_in_election(&self, status: &Status) -> bool {
        status.code() == Code::Unavailable
            && status.message().starts_with("etcdserver: ")
            && self.election_during_request()
    }

    /// A failed call must name a problem the client can act on.
    /// `Unavailable` is one only when an election ran during the call
    /// (etcd's "leader changed", "no leader"): otherwise a member refused
    /// a request it should have served.
    pub fn judge(&self, request: &(dyn Debug + Sync), status: &Status) {
        let code = status.code();
        if ACTIONABLE.contains(&code) {
            self.count(format!("{code:?}"));
            return;
        }
        if self.unavailable_in_election(status) {
            self.count("Unavailable during an election");
            return;
        }
        self.fail(
            request,
            format_args!("answered {code:?}: {:?}", status.message()),
        )
    }

    /// Waits for `call`'s answer and judges (and counts) it.
    pub async fn settle<T>(
        &self,
        request: &(dyn Debug + Sync),
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let answer = self.answer(request, call).await;
        match &answer {
            Ok(_) => self.count("Ok"),
            Err(status) => self.judge(request, status),
        }
        answer
    }

    pub async fn answer<T>(
        &self,
        request: &(dyn Debug + Sync),
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let Ok(answer) = tokio::time::timeout(CALL_TIMEOUT, call).await else {
            self.fail(request, format_args!("no answer within {CALL_TIMEOUT:?}"))
        };
        answer.map(tonic::Response::into_inner)
    }

    /// A read the model needs answered (not counted); `Unavailable`
    /// during an election is retried. A read of the past that another
    /// client compacted away answers `None` when `past` (else it fails).
    pub async fn must<T, F, Fut>(
        &self,
        request: &(dyn Debug + Sync),
        past: bool,
        mut call: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        loop {
            match self.answer(request, call()).await {
                Ok(r) => return Some(r),
                Err(s) if self.unavailable_in_election(&s) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s)
                    if past
                        && s.code() == Code::OutOfRange
                        && s.message().contains("has been compacted") =>
                {
                    self.count("check skipped: compacted meanwhile");
                    return None;
                }
                Err(status) => self.fail(
                    request,
                    format_args!("a read the model needs failed: {status:?}"),
                ),
            }
        }
    }
}
