//! The machinery of `random_registry_requests.rs`: one [`Fuzzer`] per
//! client task, the state the tasks share, the judging of answers and the
//! random values the requests are made of. The requests themselves are in
//! [`sessions`], [`registry`] (names), [`queues`] (locks and elections),
//! [`claims`] and [`etcd`] (the etcd API aimed at the reserved prefix).

/// A read the model needs, through `$client` (moved in), answered or the
/// run fails; see [`Fuzzer::must`].
macro_rules! must {
    ($fuzzer:expr, $client:expr, $method:ident, $request:expr) => {{
        let client = $client;
        let request = $request;
        $fuzzer
            .must(&request, || {
                let mut client = client.clone();
                let request = request.clone();
                async move { client.$method(request).await }
            })
            .await
    }};
}

pub mod claims;
pub mod etcd;
pub mod queues;
pub mod registry;
pub mod sessions;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairn::v1::claims_client::ClaimsClient;
use cairn_proto::cairn::v1::election_client::ElectionClient;
use cairn_proto::cairn::v1::lock_client::LockClient;
use cairn_proto::cairn::v1::registry_client::RegistryClient;
use cairn_proto::cairn::v1::session_client::SessionClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub use crate::support::member_panics as panics;
pub use crate::support::{describe, env_number, prefix_end};
use crate::support::{member_channel, record_member_panics, Cluster, REPRODUCE};

/// A call unanswered this long hangs (members time requests out at 5 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Responses are not what is limited here.
const RESPONSE_LIMIT: usize = 64 * 1024 * 1024;
/// The gRPC decode limit's slack over `max_request_bytes` (services' Limits).
pub const DECODE_SLACK: usize = 64 * 1024;
/// Registries every client writes to (made before the load, never removed).
pub const UNIQUE: &[u8] = b"u";
pub const DUPLICATE: &[u8] = b"d";
/// Lock and election names every client queues on.
pub const SHARED_QUEUES: &[&[u8]] = &[b"q0", b"q1"];
/// Keys of registries, drawn mostly from these so that clients collide.
pub const NAME_KEYS: &[&[u8]] = &[b"k0", b"k1", b"k2", b"k3"];

/// Codes a failed call may carry when the client sent more than the
/// member's gRPC decode limit: tonic refuses it before the service runs.
pub const TOO_BIG: &[Code] = &[Code::OutOfRange, Code::InvalidArgument];

/// Codes of the refusals, per request kind (see each module's doc).
pub const INVALID: &[Code] = &[Code::InvalidArgument];
pub const NOT_FOUND: &[Code] = &[Code::NotFound];
pub const ENTRY_REFUSALS: &[Code] = &[Code::InvalidArgument, Code::NotFound];
pub const QUEUE_REFUSALS: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::FailedPrecondition,
];
/// Reads take any bytes: nothing to refuse.
pub const READS: &[Code] = &[];

/// A registry key or lock/election name the store takes (`check_name`).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= cairn_store::registry::MAX_NAME_BYTES
}

static LOAD_RUNNING: AtomicBool = AtomicBool::new(false);

/// A member's panic is recorded with whether the load was running.
pub fn record_panics() {
    record_member_panics(|| {
        if LOAD_RUNNING.load(Ordering::SeqCst) {
            "during the load".to_string()
        } else {
            "outside the load".to_string()
        }
    });
}

pub fn load_running(running: bool) {
    LOAD_RUNNING.store(running, Ordering::SeqCst);
}

/// Every service's client on one connection to one member.
#[derive(Clone)]
pub struct Clients {
    pub session: SessionClient<Channel>,
    pub registry: RegistryClient<Channel>,
    pub lock: LockClient<Channel>,
    pub election: ElectionClient<Channel>,
    pub claims: ClaimsClient<Channel>,
    pub kv: KvClient<Channel>,
    pub lease: LeaseClient<Channel>,
    pub maintenance: MaintenanceClient<Channel>,
}

pub async fn connect(c: &Cluster, i: usize) -> Clients {
    let channel = member_channel(c, i).await;
    Clients {
        session: SessionClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        registry: RegistryClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        lock: LockClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        election: ElectionClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        claims: ClaimsClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        kv: KvClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        lease: LeaseClient::new(channel.clone()).max_decoding_message_size(RESPONSE_LIMIT),
        maintenance: MaintenanceClient::new(channel).max_decoding_message_size(RESPONSE_LIMIT),
    }
}

/// A lock or candidacy place some client was handed: others release it
/// with the right or a wrong session.
#[derive(Debug, Clone)]
pub struct Place {
    pub election: bool,
    pub name: Vec<u8>,
    pub session: i64,
    pub token: i64,
}

/// What the client tasks share.
pub struct Shared {
    pub seed: u64,
    pub members: Vec<Clients>,
    pub nodes: Vec<Arc<cairn_server::Node>>,
    pub max_request_bytes: usize,
    /// Set by the first client that fails: the others stop.
    pub stop: AtomicBool,
    pub started: Instant,
    pub budget: Duration,
    /// Answers by request kind and outcome, for the summary.
    pub tally: Mutex<BTreeMap<String, usize>>,
    /// Every session any client created (many closed or expired since).
    pub sessions: Mutex<Vec<i64>>,
    /// Places in the shared locks and elections handed out.
    pub places: Mutex<Vec<Place>>,
}

impl Shared {
    pub async fn new(c: &Cluster, seed: u64, budget: Duration) -> Shared {
        let mut members = Vec::new();
        for i in 0..c.members.len() {
            members.push(connect(c, i).await);
        }
        Shared {
            seed,
            members,
            nodes: (0..c.members.len()).map(|i| c.node(i).clone()).collect(),
            max_request_bytes: c.members[0].config.max_request_bytes,
            stop: AtomicBool::new(false),
            started: Instant::now(),
            budget,
            tally: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(Vec::new()),
            places: Mutex::new(Vec::new()),
        }
    }

    pub fn tally(&self) -> BTreeMap<String, usize> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record_session(&self, id: i64) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
    }
}

/// A session this client created: what it holds in the client's private
/// registry and election, which only this client writes, so the model
/// knows exactly what must be there.
#[derive(Debug, Clone)]
pub struct Own {
    pub id: i64,
    /// Keys it registered in the private registry and has not released.
    pub names: BTreeSet<Vec<u8>>,
    /// Its place in the private election, once a campaign succeeded.
    pub candidacy: Option<i64>,
    /// A campaign of it in the private election was abandoned: the server
    /// leaves that place on its own time, so the model asks nothing of it.
    pub abandoned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    CreateSession,
    KeepAlive,
    CloseSession,
    SessionInfo,
    CreateRegistry,
    Register,
    RegisterOrGet,
    Unregister,
    UpdateValue,
    Lookup,
    Count,
    Keys,
    List,
    RegistryWatch,
    ForeignRead,
    PrivateRegister,
    PrivateRelease,
    PrivateCampaign,
    Lock,
    Unlock,
    Campaign,
    Proclaim,
    Leader,
    Observe,
    Resign,
    CreateNamespace,
    CanOffload,
    ClaimsRegister,
    MatchPrefix,
    MatchAll,
    Remove,
    Touch,
    Stats,
    PrivateClaims,
    ReservedPut,
    ReservedDelete,
    ReservedTxn,
    ReservedRange,
    EtcdLease,
    Compact,
}

/// How many requests in 1,000 are of each kind.
const MIX: &[(Kind, u32)] = &[
    (Kind::CreateSession, 45),
    (Kind::KeepAlive, 35),
    (Kind::CloseSession, 20),
    (Kind::SessionInfo, 20),
    (Kind::CreateRegistry, 15),
    (Kind::Register, 60),
    (Kind::RegisterOrGet, 30),
    (Kind::Unregister, 30),
    (Kind::UpdateValue, 30),
    (Kind::Lookup, 30),
    (Kind::Count, 10),
    (Kind::Keys, 15),
    (Kind::List, 20),
    (Kind::RegistryWatch, 15),
    (Kind::ForeignRead, 15),
    (Kind::PrivateRegister, 45),
    (Kind::PrivateRelease, 20),
    (Kind::PrivateCampaign, 20),
    (Kind::Lock, 35),
    (Kind::Unlock, 25),
    (Kind::Campaign, 25),
    (Kind::Proclaim, 15),
    (Kind::Leader, 15),
    (Kind::Observe, 10),
    (Kind::Resign, 20),
    (Kind::CreateNamespace, 15),
    (Kind::CanOffload, 45),
    (Kind::ClaimsRegister, 40),
    (Kind::MatchPrefix, 15),
    (Kind::MatchAll, 15),
    (Kind::Remove, 12),
    (Kind::Touch, 8),
    (Kind::Stats, 8),
    (Kind::PrivateClaims, 30),
    (Kind::ReservedPut, 25),
    (Kind::ReservedDelete, 25),
    (Kind::ReservedTxn, 25),
    (Kind::ReservedRange, 10),
    (Kind::EtcdLease, 15),
    (Kind::Compact, 2),
];

/// One client task: its own seeded RNG, its own sessions and private
/// names, requests round-robin over the members.
pub struct Fuzzer {
    pub shared: Arc<Shared>,
    pub client: usize,
    pub rng: StdRng,
    pub index: usize,
    pub member: usize,
    pub kind: Kind,
    /// The request may break the API's rules anywhere; else it breaks
    /// only those that depend on the state (a session gone, a name held).
    pub hostile: bool,
    /// Every member's term when the request began.
    terms: Vec<u64>,
    /// Sessions created and not known to be gone.
    pub own: Vec<Own>,
    /// Own sessions known to be closed or expired.
    pub dead: Vec<i64>,
    /// Every session this client created.
    pub created: BTreeSet<i64>,
    /// The private claims namespace's stored entries: key → value.
    pub stored: BTreeMap<u64, Vec<u8>>,
    pub requests: usize,
}

impl Fuzzer {
    pub fn new(shared: Arc<Shared>, client: usize) -> Fuzzer {
        // Each client's stream of requests follows from the seed and its
        // number alone.
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
            kind: Kind::SessionInfo,
            hostile: false,
            terms: Vec::new(),
            own: Vec::new(),
            dead: Vec::new(),
            created: BTreeSet::new(),
            stored: BTreeMap::new(),
            requests: 0,
        }
    }

    pub fn private_registry(&self) -> Vec<u8> {
        format!("m{}", self.client).into_bytes()
    }

    pub fn private_election(&self) -> Vec<u8> {
        format!("pe{}", self.client).into_bytes()
    }

    pub fn private_namespace(&self) -> String {
        format!("p{}", self.client)
    }

    pub async fn run(mut self, requests: usize) -> Fuzzer {
        for index in 0..requests {
            if self.shared.stop.load(Ordering::SeqCst)
                || self.shared.started.elapsed() > self.shared.budget
            {
                break;
            }
            self.begin(index);
            self.kind = MIX
                .choose_weighted(&mut self.rng, |(_, weight)| *weight)
                .expect("weights")
                .0;
            self.one().await;
            self.requests = index + 1;
        }
        self
    }

    async fn one(&mut self) {
        match self.kind {
            Kind::CreateSession => self.create_session().await,
            Kind::KeepAlive => self.keep_alive().await,
            Kind::CloseSession => self.close_session().await,
            Kind::SessionInfo => self.session_info().await,
            Kind::CreateRegistry => self.create_registry().await,
            Kind::Register => self.register(false).await,
            Kind::RegisterOrGet => self.register(true).await,
            Kind::Unregister => self.unregister().await,
            Kind::UpdateValue => self.update_value().await,
            Kind::Lookup => self.lookup().await,
            Kind::Count => self.count_entries().await,
            Kind::Keys => self.keys().await,
            Kind::List => self.list().await,
            Kind::RegistryWatch => self.registry_watch().await,
            Kind::ForeignRead => self.foreign_read().await,
            Kind::PrivateRegister => self.private_register().await,
            Kind::PrivateRelease => self.private_release().await,
            Kind::PrivateCampaign => self.private_campaign().await,
            Kind::Lock => self.lock().await,
            Kind::Unlock => self.release_place(false).await,
            Kind::Campaign => self.campaign().await,
            Kind::Proclaim => self.proclaim().await,
            Kind::Leader => self.leader().await,
            Kind::Observe => self.observe().await,
            Kind::Resign => self.release_place(true).await,
            Kind::CreateNamespace => self.create_namespace().await,
            Kind::CanOffload => self.can_offload().await,
            Kind::ClaimsRegister => self.claims_register().await,
            Kind::MatchPrefix => self.match_keys(true).await,
            Kind::MatchAll => self.match_keys(false).await,
            Kind::Remove => self.remove_or_touch(true).await,
            Kind::Touch => self.remove_or_touch(false).await,
            Kind::Stats => self.stats().await,
            Kind::PrivateClaims => self.private_claims().await,
            Kind::ReservedPut => self.reserved_put().await,
            Kind::ReservedDelete => self.reserved_delete().await,
            Kind::ReservedTxn => self.reserved_txn().await,
            Kind::ReservedRange => self.reserved_range().await,
            Kind::EtcdLease => self.etcd_lease().await,
            Kind::Compact => self.compact().await,
        }
    }

    fn begin(&mut self, index: usize) {
        self.index = index;
        self.member = (self.client + index) % self.shared.members.len();
        self.terms = self.shared.nodes.iter().map(|n| n.raft_term()).collect();
        self.hostile = self.rng.random_bool(0.4);
    }

    pub fn fail(&self, request: &(dyn Debug + Sync), what: impl Display) -> ! {
        self.shared.stop.store(true, Ordering::SeqCst);
        panic!(
            "seed {seed}, client {client}, request #{index} {kind:?} (member {member}): {what}\n  \
             request: {request}\n  member panics before it: {panics:#?}\n  \
             {REPRODUCE}{seed} cargo test -p cairn-server --test random_registry_requests",
            seed = self.shared.seed,
            client = self.client,
            index = self.index,
            kind = self.kind,
            member = self.member,
            request = describe(request),
            panics = panics(),
        )
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

    /// The member this request goes to.
    pub fn client(&self) -> Clients {
        self.shared.members[self.member].clone()
    }

    /// Another member than the one that took the request: the model's
    /// reads check there (`step` 1 or 2).
    pub fn other(&self, step: usize) -> Clients {
        let n = self.shared.members.len();
        self.shared.members[(self.member + step) % n].clone()
    }

    /// An election began or a leader was lost since the request began.
    fn election_during_request(&self) -> bool {
        self.shared
            .nodes
            .iter()
            .zip(&self.terms)
            .any(|(n, term)| n.raft_term() != *term || n.leader_id().is_none())
    }

    /// A failed call must carry one of the codes a correct server gives
    /// this request (`allowed`). `Unavailable` is one only when an election
    /// ran during the call (etcd's "leader changed", "no leader").
    pub fn judge(&self, request: &(dyn Debug + Sync), status: &Status, allowed: &[Code]) {
        let code = status.code();
        if allowed.contains(&code) {
            self.count(format!("{code:?}"));
            return;
        }
        if code == Code::Unavailable
            && status.message().starts_with("etcdserver: ")
            && self.election_during_request()
        {
            self.count("Unavailable during an election");
            return;
        }
        self.fail(
            request,
            format_args!(
                "answered {code:?}: {:?} (a correct server answers Ok or one of {allowed:?})",
                status.message()
            ),
        )
    }

    /// Waits for `call`'s answer and judges (and counts) it.
    pub async fn settle<T>(
        &self,
        request: &(dyn Debug + Sync),
        allowed: &[Code],
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let answer = self.answer(request, call).await;
        match &answer {
            Ok(_) => self.count("Ok"),
            Err(status) => self.judge(request, status, allowed),
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

    /// A call the model needs answered (not counted). `Unavailable` during
    /// an election is retried.
    pub async fn must<T, F, Fut>(&self, request: &(dyn Debug + Sync), mut call: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        loop {
            match self.answer(request, call()).await {
                Ok(r) => return r,
                Err(s)
                    if s.code() == Code::Unavailable
                        && s.message().starts_with("etcdserver: ")
                        && self.election_during_request() =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => self.fail(
                    request,
                    format_args!("a read the model needs failed: {status:?}"),
                ),
            }
        }
    }

    // --- Random values -------------------------------------------------

    /// Bytes that are not UTF-8: a lone continuation byte, an overlong
    /// lead byte.
    pub fn not_utf8(&mut self) -> Vec<u8> {
        let mut b = b"x".to_vec();
        b.push(*[0x80, 0xc0, 0xff].choose(&mut self.rng).expect("bytes"));
        b
    }

    /// A registry name: mostly one of the shared ones.
    pub fn registry_name(&mut self) -> Vec<u8> {
        if !self.hostile || self.rng.random_bool(0.5) {
            return if self.rng.random_bool(0.5) {
                UNIQUE.to_vec()
            } else {
                DUPLICATE.to_vec()
            };
        }
        match self.rng.random_range(0..9) {
            0 => Vec::new(),
            1 => b"no-such-registry".to_vec(),
            // Reaches into `u`'s or `d`'s entries of keys under `k0/`.
            2 | 8 => [UNIQUE, DUPLICATE]
                .choose(&mut self.rng)
                .expect("names")
                .iter()
                .chain(b"/k0")
                .copied()
                .collect(),
            3 => self.not_utf8(),
            4 => vec![b'r'; 1025],
            5 => vec![b'r'; self.rng.random_range(2048..=64 * 1024)],
            6 => b"\0cairn/".to_vec(),
            _ => vec![0],
        }
    }

    /// A key of a registry, or a lock or election name.
    pub fn name_key(&mut self) -> Vec<u8> {
        if !self.hostile || self.rng.random_bool(0.6) {
            return NAME_KEYS.choose(&mut self.rng).expect("keys").to_vec();
        }
        match self.rng.random_range(0..8) {
            0 => Vec::new(),
            1 => self.not_utf8(),
            2 => vec![b'k'; 1024],
            3 => vec![b'k'; 1025],
            // Looks like an entry key's session suffix.
            4 => b"k0/0000000000000001".to_vec(),
            5 => b"k0/".to_vec(),
            6 => vec![0xff; self.rng.random_range(1..=3)],
            _ => vec![b'k'; self.rng.random_range(2048..=64 * 1024)],
        }
    }

    pub fn value(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..100) {
            0..=14 => Vec::new(),
            15..=24 => self.not_utf8(),
            25..=27 => vec![b'v'; self.rng.random_range(1024..=64 * 1024)],
            _ => format!("v{}", self.rng.random_range(0..1000)).into_bytes(),
        }
    }

    /// A value past the request limit: refused by the service's check, or
    /// (past the decode limit too) by gRPC.
    pub fn oversized_value(&mut self) -> Vec<u8> {
        let limit = self.shared.max_request_bytes;
        if self.rng.random_bool(0.7) {
            vec![b'o'; limit + self.rng.random_range(1..=1024)]
        } else {
            vec![b'o'; limit + DECODE_SLACK + self.rng.random_range(1..=4096)]
        }
    }

    /// A session ID: mostly one of this client's live sessions; else one
    /// of another client's, a closed or expired one, or nonsense.
    pub fn session(&mut self) -> i64 {
        let pick = self.rng.random_range(0..100);
        if pick < 60 || (!self.hostile && pick < 85) {
            if let Some(own) = self.own.choose(&mut self.rng) {
                return own.id;
            }
        }
        match pick % 5 {
            0 | 1 => {
                let all = self
                    .shared
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                all.choose(&mut self.rng).copied().unwrap_or(0)
            }
            2 => self.dead.choose(&mut self.rng).copied().unwrap_or(-1),
            3 => 0,
            _ => *[-1, 1, i64::MAX, i64::MIN, 0x7fff_0000]
                .choose(&mut self.rng)
                .expect("ids"),
        }
    }

    /// A TTL in seconds: short, so sessions expire while they hold names;
    /// or (hostile) one the server must refuse or raise.
    pub fn ttl(&mut self) -> i64 {
        if !self.hostile || self.rng.random_bool(0.5) {
            return self.rng.random_range(2..=5);
        }
        *[
            0,
            -1,
            1,
            i64::MIN,
            i64::MAX,
            cairn_store::MAX_LEASE_TTL_SECS,
            cairn_store::MAX_LEASE_TTL_SECS + 1,
            30,
        ]
        .choose(&mut self.rng)
        .expect("ttls")
    }

    /// An own session known to be gone: off the live list, onto the dead
    /// one, then checked to have left nothing behind.
    pub async fn session_gone(&mut self, id: i64) {
        let Some(at) = self.own.iter().position(|o| o.id == id) else {
            return;
        };
        let own = self.own.remove(at);
        self.dead.push(id);
        self.check_gone(&own).await;
    }
}
