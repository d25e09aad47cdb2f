//! Seeded random etcd v3 requests (well-formed, malformed and out of
//! range) against a real 3-member cluster, spread round-robin over the
//! members so followers forward.
//!
//! What it proves:
//! * every call answers, and answers either Ok or with an error code that
//!   tells the client what was wrong with its request or with the state it
//!   asked about ([`ACTIONABLE`]); never `Internal`, `Unknown`, a dropped
//!   stream or a panic in a member's task;
//! * hostile input does not make the deterministic state machine diverge:
//!   afterwards the members are healthy, at one revision, with one
//!   `HashKV` there;
//! * a small model holds where it is cheap to keep: a put is visible to the
//!   next linearizable read of its key on another member, a deleted key is
//!   gone, and a count-only range counts what a plain range returns.
//!
//! Why: the edge checks (services/data/convert.rs) and the store's
//! apply-time checks are written by hand after etcd's rules. An input
//! nobody thought of must end in a refusal the client can act on, not in a
//! panic in apply that stops a member, nor in an `Internal` answer.
//!
//! The seed comes from `CAIRN_FUZZ_SEED` (else [`DEFAULT_SEED`]); the
//! number of requests from `CAIRN_FUZZ_REQUESTS` (else
//! [`DEFAULT_REQUESTS`]), cut short after `CAIRN_FUZZ_SECS` seconds (else
//! [`RUN_BUDGET_SECS`]); longer campaigns raise both. The requests follow
//! from the seed and from the cluster's answers (lease IDs, revisions), so
//! a failure, which prints the seed, the request's index and the request,
//! reproduces with the same seed.

mod support;

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::compare::TargetUnion;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::*;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use support::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

const DEFAULT_SEED: u64 = 0x00c0_ffee;
const DEFAULT_REQUESTS: usize = 2_000;
/// Requests stop after this long (or `CAIRN_FUZZ_SECS`) even if fewer
/// were made: the test must stay well under a minute in a debug build on
/// 2 cores (2,000 requests take about 28 s there).
const RUN_BUDGET_SECS: u64 = 35;
/// A call unanswered this long hangs (members time requests out at 5 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const ELECTION: Duration = Duration::from_secs(10);
/// For the members to agree on one revision after the last request.
const SETTLE: Duration = Duration::from_secs(15);
/// A watch stream that says nothing for this long has said all it will.
const WATCH_QUIET: Duration = Duration::from_millis(100);
/// Most time spent reading one watch stream (history replays can be long).
const WATCH_READ: Duration = Duration::from_secs(1);
/// Responses are not what is limited here: ranges over old revisions with
/// long values run to many MiB.
const RESPONSE_LIMIT: usize = 256 * 1024 * 1024;
/// Keys are drawn mostly from these bytes, at most 3 long, so requests
/// collide on the same few dozen keys.
const KEY_ALPHABET: &[u8] = b"ab/c";
/// Written only by the cairn.v1 registry API; etcd writes are refused.
const RESERVED_PREFIX: &[u8] = b"\0cairn/";
/// The gRPC decode limit's slack over `max_request_bytes` (Limits).
const DECODE_SLACK: usize = 64 * 1024;

/// Codes that tell the client what was wrong with its request or with the
/// state it asked about, so it can act on them. Only those the etcd API
/// gives such requests with auth off: a permission, authentication,
/// "already exists" or "aborted" answer here would be a wrong one.
const ACTIONABLE: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::OutOfRange,
    Code::FailedPrecondition,
    Code::ResourceExhausted,
];

#[derive(Debug, Clone, Copy)]
enum Kind {
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

/// The index of the request in flight, for the panic hook.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(usize::MAX);
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Members run in this process: a panic in one of their tasks is recorded
/// with the request in flight. A task that dies can leave its member
/// serving, so the answers alone would not show it.
fn record_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let at = match IN_FLIGHT.load(Ordering::SeqCst) {
            usize::MAX => "outside the requests".to_string(),
            i => format!("during request #{i}"),
        };
        PANICS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{at}: {info}"));
        default(info);
    }));
}

#[derive(Clone)]
struct Clients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    cluster: ClusterClient<Channel>,
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
struct Limits {
    max_request_bytes: usize,
    max_txn_ops: usize,
}

struct Fuzzer {
    seed: u64,
    rng: StdRng,
    members: Vec<Clients>,
    nodes: Vec<Arc<cairn_server::Node>>,
    limits: Limits,
    /// The request being made (none in the checks after the run), and the
    /// member it goes to.
    index: Option<usize>,
    member: usize,
    /// Every member's term when the request began.
    terms: Vec<u64>,
    /// The highest revision any answer reported.
    head: i64,
    /// The highest revision a compaction succeeded at.
    compacted: i64,
    granted: Vec<i64>,
    revoked: Vec<i64>,
    /// What the request in flight is, for the tally.
    kind: Kind,
    /// The request in flight may break etcd's rules anywhere (empty keys,
    /// unknown enum numbers, clashing flags, empty txn ops, ...); else it
    /// breaks only those that depend on the state (a lease gone, a key
    /// missing), so that deep txns get applied too.
    hostile: bool,
    /// Answers by request kind and outcome, for the summary.
    tally: BTreeMap<String, usize>,
}

impl Fuzzer {
    async fn new(c: &Cluster, seed: u64) -> Fuzzer {
        let mut members = Vec::new();
        for i in 0..c.members.len() {
            members.push(connect(c, i).await);
        }
        let config = &c.members[0].config;
        Fuzzer {
            seed,
            rng: StdRng::seed_from_u64(seed),
            members,
            nodes: (0..c.members.len()).map(|i| c.node(i).clone()).collect(),
            limits: Limits {
                max_request_bytes: config.max_request_bytes,
                max_txn_ops: config.max_txn_ops,
            },
            index: None,
            member: 0,
            terms: Vec::new(),
            head: 1,
            compacted: 0,
            granted: Vec::new(),
            revoked: Vec::new(),
            kind: Kind::Status,
            hostile: false,
            tally: BTreeMap::new(),
        }
    }

    fn fail(&self, request: &dyn Debug, what: impl Display) -> ! {
        let at = match self.index {
            Some(i) => format!("request #{i}"),
            None => "after the run".into(),
        };
        panic!(
            "seed {seed}, {at} (member {member}): {what}\n  request: {request}\n  \
             reproduce: CAIRN_FUZZ_SEED={seed} cargo test -p cairn-server --test random_requests",
            seed = self.seed,
            member = self.member,
            request = describe(request),
        )
    }

    fn count(&mut self, outcome: impl Display) {
        let key = format!("{:?} {outcome}", self.kind);
        *self.tally.entry(key).or_default() += 1;
    }

    fn saw(&mut self, header: &Option<ResponseHeader>) {
        if let Some(h) = header {
            self.head = self.head.max(h.revision);
        }
    }

    fn begin(&mut self, index: usize) {
        self.index = Some(index);
        self.member = index % self.members.len();
        self.terms = self.nodes.iter().map(|n| n.raft_term()).collect();
        self.hostile = self.rng.random_bool(0.4);
        IN_FLIGHT.store(index, Ordering::SeqCst);
    }

    fn client(&self) -> Clients {
        self.members[self.member].clone()
    }

    /// The next member round-robin: the model's reads check another
    /// member than the one that took the write.
    fn other_client(&self) -> Clients {
        self.members[(self.member + 1) % self.members.len()].clone()
    }

    /// An election began or a leader was lost since the request began.
    fn election_during_request(&self) -> bool {
        self.nodes
            .iter()
            .zip(&self.terms)
            .any(|(n, term)| n.raft_term() != *term || n.leader_id().is_none())
    }

    /// A failed call must name a problem the client can act on.
    /// `Unavailable` is one only when an election ran during the call
    /// (etcd's "leader changed", "no leader"): otherwise a member refused
    /// a request it should have served.
    fn judge(&mut self, request: &dyn Debug, status: &Status) {
        let code = status.code();
        if ACTIONABLE.contains(&code) {
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
            format_args!("answered {code:?}: {:?}", status.message()),
        )
    }

    /// Waits for `call`'s answer and judges (and counts) it.
    async fn settle<T>(
        &mut self,
        request: &dyn Debug,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let answer = self.answer(request, call).await;
        match &answer {
            Ok(_) => self.count("Ok"),
            Err(status) => self.judge(request, status),
        }
        answer
    }

    async fn answer<T>(
        &self,
        request: &dyn Debug,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let Ok(answer) = tokio::time::timeout(CALL_TIMEOUT, call).await else {
            self.fail(request, format_args!("no answer within {CALL_TIMEOUT:?}"))
        };
        answer.map(tonic::Response::into_inner)
    }

    /// A call the model needs answered (not counted).
    async fn must<T>(
        &mut self,
        request: &dyn Debug,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> T {
        match self.answer(request, call).await {
            Ok(r) => r,
            Err(status) => self.fail(
                request,
                format_args!("a check the model needs failed: {status:?}"),
            ),
        }
    }

    async fn run(&mut self, requests: usize, budget: Duration) -> usize {
        let started = Instant::now();
        for index in 0..requests {
            if started.elapsed() > budget {
                eprintln!(
                    "seed {}: time budget spent after {index} requests",
                    self.seed
                );
                return index;
            }
            self.begin(index);
            self.kind = MIX
                .choose_weighted(&mut self.rng, |(_, weight)| *weight)
                .expect("weights")
                .0;
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
        requests
    }

    // --- Random values -------------------------------------------------

    fn small_key(&mut self) -> Vec<u8> {
        let len = self.rng.random_range(1..=3);
        (0..len)
            .map(|_| *KEY_ALPHABET.choose(&mut self.rng).expect("alphabet"))
            .collect()
    }

    fn key(&mut self) -> Vec<u8> {
        let pick = self.rng.random_range(0..100);
        if self.hostile && pick < 3 {
            return Vec::new();
        }
        if self.hostile && pick < 5 {
            return [RESERVED_PREFIX, &self.small_key()].concat();
        }
        match pick {
            // Not UTF-8: a lone continuation byte, an overlong lead byte.
            5..=7 => {
                let mut key = self.small_key();
                key.push(*[0x80, 0xc0, 0xff].choose(&mut self.rng).expect("bytes"));
                key
            }
            8 => {
                let mut key = self.small_key();
                let len = self.rng.random_range(1024..=64 * 1024);
                key.resize(key.len() + len, b'k');
                key
            }
            _ => self.small_key(),
        }
    }

    fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0..=6 => Vec::new(),
            7..=9 => vec![0],
            10..=14 => prefix_end(key),
            15..=17 => self.key(),
            _ => key.to_vec(),
        }
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..1000) {
            0..=99 => Vec::new(),
            100..=149 => {
                let len = self.rng.random_range(1..=16);
                (0..len)
                    .map(|_| self.rng.random_range(0x80..=0xff))
                    .collect()
            }
            150..=179 => vec![b'm'; self.rng.random_range(1024..=16 * 1024)],
            // Long, but a put of it stays under the request limit.
            180..=186 => {
                let most = self.limits.max_request_bytes - 8 * 1024;
                vec![b'l'; self.rng.random_range(64 * 1024..=most)]
            }
            _ => {
                let len = self.rng.random_range(1..=8);
                (0..len)
                    .map(|_| *b"xyz".choose(&mut self.rng).expect("alphabet"))
                    .collect()
            }
        }
    }

    fn any_i64(&mut self) -> i64 {
        match self.rng.random_range(0..6) {
            0 => -1,
            1 => 0,
            2 => self.rng.random_range(1..=10),
            3 => i64::MAX,
            4 => i64::MIN,
            _ => self.rng.random(),
        }
    }

    /// An enum's wire number: mostly one of its `count` values, else one
    /// no enum has.
    fn enum_int(&mut self, count: i32) -> i32 {
        if !self.hostile || self.rng.random_bool(0.7) {
            return self.rng.random_range(0..count);
        }
        *[-1, count, count + 7, i32::MAX, i32::MIN]
            .choose(&mut self.rng)
            .expect("numbers")
    }

    /// A revision to read at: the head, an older one (maybe compacted), a
    /// future one, or nonsense.
    fn revision(&mut self) -> i64 {
        if !self.hostile {
            return match self.rng.random_range(0..4) {
                0 | 1 => 0,
                2 => self.head,
                _ => self
                    .rng
                    .random_range(self.compacted.max(1)..=self.head.max(1)),
            };
        }
        match self.rng.random_range(0..10) {
            0 => -self.rng.random_range(1..=1000),
            1..=3 => 0,
            4..=5 => self.head,
            6..=7 => self.rng.random_range(1..=self.head.max(1)),
            8 => self.head + self.rng.random_range(1..=100),
            _ => *[i64::MAX, i64::MIN, self.compacted, self.compacted - 1]
                .choose(&mut self.rng)
                .expect("revisions"),
        }
    }

    fn limit(&mut self) -> i64 {
        match self.rng.random_range(0..10) {
            0..=3 => 0,
            4..=6 => self.rng.random_range(1..=5),
            7 => -self.rng.random_range(1..=10),
            8 => i64::MAX,
            _ => self.any_i64(),
        }
    }

    /// A lease ID: one granted (maybe since expired), one revoked, or one
    /// that never was.
    fn lease_id(&mut self) -> i64 {
        match self.rng.random_range(0..6) {
            0 | 1 => self.granted.choose(&mut self.rng).copied().unwrap_or(0),
            2 => self.revoked.choose(&mut self.rng).copied().unwrap_or(0),
            3 => 0,
            4 => self.rng.random_range(1..=1000),
            _ => self.any_i64(),
        }
    }

    fn range_request(&mut self) -> RangeRequest {
        let key = self.key();
        let range_end = self.range_end(&key);
        let filtered = self.rng.random_bool(0.25);
        let filter = |f: &mut Self| if filtered { f.revision() } else { 0 };
        RangeRequest {
            key,
            range_end,
            limit: self.limit(),
            revision: self.revision(),
            sort_order: self.enum_int(3),
            sort_target: self.enum_int(5),
            serializable: self.rng.random_bool(0.3),
            keys_only: self.rng.random_bool(0.2),
            count_only: self.rng.random_bool(0.15),
            min_mod_revision: filter(self),
            max_mod_revision: filter(self),
            min_create_revision: filter(self),
            max_create_revision: filter(self),
        }
    }

    fn put_request(&mut self) -> PutRequest {
        let ignore_value = self.rng.random_bool(0.1);
        let ignore_lease = self.rng.random_bool(0.1);
        // What the flags allow, or (hostile) sometimes what they forbid.
        let clash = |f: &mut Self| f.hostile && f.rng.random_bool(0.3);
        let value = if ignore_value && !clash(self) {
            Vec::new()
        } else {
            self.value()
        };
        let lease = if (ignore_lease && !clash(self)) || self.rng.random_bool(0.6) {
            0
        } else if self.hostile {
            self.lease_id()
        } else {
            self.granted.last().copied().unwrap_or(0)
        };
        PutRequest {
            key: self.key(),
            value,
            lease,
            prev_kv: self.rng.random_bool(0.3),
            ignore_value,
            ignore_lease,
        }
    }

    fn delete_request(&mut self) -> DeleteRangeRequest {
        let key = self.key();
        DeleteRangeRequest {
            range_end: self.range_end(&key),
            key,
            prev_kv: self.rng.random_bool(0.4),
        }
    }

    fn compare(&mut self) -> Compare {
        let key = self.key();
        let range_end = if self.rng.random_bool(0.3) {
            self.range_end(&key)
        } else {
            Vec::new()
        };
        // The operand often matches the target, sometimes not (it then
        // reads as zero), sometimes it is missing.
        let target_union = match self.rng.random_range(0..6) {
            0 => None,
            1 => Some(TargetUnion::Version(self.any_i64())),
            2 => Some(TargetUnion::CreateRevision(self.revision())),
            3 => Some(TargetUnion::ModRevision(self.revision())),
            4 => Some(TargetUnion::Value(self.value())),
            _ => Some(TargetUnion::Lease(self.lease_id())),
        };
        Compare {
            result: self.enum_int(4),
            target: self.enum_int(5),
            key,
            range_end,
            target_union,
        }
    }

    /// One branch of a txn at `depth` (1 for the top); txns nest at most
    /// two deep.
    fn ops(&mut self, depth: usize) -> Vec<RequestOp> {
        // Over etcd's `--max-txn-ops`.
        if self.hostile && self.rng.random_ratio(1, 100) {
            return (0..=self.limits.max_txn_ops)
                .map(|i| RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: format!("many/{i}").into_bytes(),
                        ..Default::default()
                    })),
                })
                .collect();
        }
        let mut ops: Vec<RequestOp> = Vec::new();
        for _ in 0..self.rng.random_range(0..=4) {
            let request = match self.rng.random_range(0..20) {
                0..=5 => Some(Op::RequestRange(self.range_request())),
                6..=11 => Some(Op::RequestPut(self.put_request())),
                12..=14 => Some(Op::RequestDeleteRange(self.delete_request())),
                15..=17 if depth < 2 => Some(Op::RequestTxn(self.txn_request(depth + 1))),
                // etcd refuses an op with nothing in it.
                18 if self.hostile => None,
                // A second write to a key this branch writes: refused.
                19 if self.hostile => {
                    let written = ops.iter().find_map(|op| match &op.request {
                        Some(Op::RequestPut(p)) => Some(p.key.clone()),
                        _ => None,
                    });
                    let mut put = self.put_request();
                    put.key = written.unwrap_or(put.key);
                    Some(Op::RequestPut(put))
                }
                _ => Some(Op::RequestRange(self.range_request())),
            };
            ops.push(RequestOp { request });
        }
        ops
    }

    fn txn_request(&mut self, depth: usize) -> TxnRequest {
        let compares = self.rng.random_range(0..=4);
        TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        }
    }

    // --- Requests ------------------------------------------------------

    async fn range(&mut self) {
        let request = self.range_request();
        let mut kv = self.client().kv;
        let Ok(resp) = self.settle(&request, kv.range(request.clone())).await else {
            return;
        };
        self.saw(&resp.header);
        self.check_range(&request, &resp).await;
    }

    /// What a range answer must be whatever the keyspace holds.
    async fn check_range(&mut self, request: &RangeRequest, resp: &RangeResponse) {
        if request.count_only && !resp.kvs.is_empty() {
            self.fail(request, "count_only answered with key-values");
        }
        if request.limit > 0 && resp.kvs.len() as u64 > request.limit as u64 {
            self.fail(
                request,
                format_args!("{} kvs over the limit", resp.kvs.len()),
            );
        }
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        if request.limit != 0 || filtered || request.count_only {
            return;
        }
        if resp.more || resp.count != resp.kvs.len() as i64 {
            self.fail(
                request,
                format_args!(
                    "unlimited range: count {} more {} with {} kvs",
                    resp.count,
                    resp.more,
                    resp.kvs.len()
                ),
            );
        }
        // The same range counted at the revision it was read at, on the
        // same member (serializable: that revision is applied there).
        let at = match (request.revision, &resp.header) {
            (r, _) if r > 0 => r,
            (_, Some(h)) => h.revision,
            (_, None) => self.fail(request, "no header"),
        };
        let count_request = RangeRequest {
            key: request.key.clone(),
            range_end: request.range_end.clone(),
            revision: at,
            serializable: true,
            count_only: true,
            ..Default::default()
        };
        let mut kv = self.client().kv;
        let counted = self
            .must(&count_request, kv.range(count_request.clone()))
            .await;
        if counted.count != resp.kvs.len() as i64 {
            self.fail(
                request,
                format_args!(
                    "count_only at {at} counts {}, the plain range returned {} kvs",
                    counted.count,
                    resp.kvs.len()
                ),
            );
        }
    }

    async fn put(&mut self) {
        let mut request = self.put_request();
        let too_large = self.limits.max_request_bytes;
        let undecodable = too_large + DECODE_SLACK;
        // A few over the request limit; fewer past the gRPC decode limit
        // too, which tonic refuses before the service sees them.
        let refusal: Option<&[Code]> = match self.rng.random_range(0..1000) {
            0..=9 => {
                request.value = vec![b'o'; too_large + self.rng.random_range(1..=1024)];
                Some(&[Code::InvalidArgument])
            }
            10..=14 => {
                request.value = vec![b'o'; undecodable + self.rng.random_range(1..=4096)];
                Some(&[Code::OutOfRange, Code::InvalidArgument])
            }
            _ if request.key.is_empty() || request.key.starts_with(RESERVED_PREFIX) => {
                Some(&[Code::InvalidArgument])
            }
            _ => None,
        };
        let mut kv = self.client().kv;
        let answer = self.settle(&request, kv.put(request.clone())).await;
        let resp = match (answer, refusal) {
            (Ok(_), Some(codes)) => self.fail(
                &request,
                format_args!("accepted, expected one of {codes:?}"),
            ),
            (Err(status), Some(codes)) if !codes.contains(&status.code()) => self.fail(
                &request,
                format_args!("refused with {status:?}, expected one of {codes:?}"),
            ),
            (Err(_), _) => return,
            (Ok(resp), None) => resp,
        };
        self.saw(&resp.header);
        if !request.prev_kv && resp.prev_kv.is_some() {
            self.fail(&request, "prev_kv returned unasked");
        }
        // Only a key with no lease is sure to outlive the read.
        if request.lease == 0 && !request.ignore_lease {
            let written = resp.header.as_ref().map_or(0, |h| h.revision);
            let kv = self.read_key(&request.key).await;
            let ok = kv.as_ref().is_some_and(|kv| {
                kv.mod_revision == written
                    && kv.lease == 0
                    && (request.ignore_value || kv.value == request.value)
            });
            if !ok {
                self.fail(
                    &request,
                    format_args!(
                        "put at {written} then read on another member: {}",
                        describe(&kv)
                    ),
                );
            }
        }
    }

    /// A linearizable read of exactly `key` on another member.
    async fn read_key(&mut self, key: &[u8]) -> Option<cairn_proto::mvccpb::KeyValue> {
        let request = RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let mut kv = self.other_client().kv;
        let resp = self.must(&request, kv.range(request.clone())).await;
        if resp.kvs.len() > 1 {
            self.fail(&request, "a single-key range found several keys");
        }
        resp.kvs.into_iter().next()
    }

    async fn delete_range(&mut self) {
        let request = self.delete_request();
        let mut kv = self.client().kv;
        let answer = self
            .settle(&request, kv.delete_range(request.clone()))
            .await;
        let resp = match answer {
            Ok(_) if request.key.is_empty() => self.fail(&request, "accepted an empty key"),
            Ok(resp) => resp,
            Err(_) => return,
        };
        self.saw(&resp.header);
        let prev = resp.prev_kvs.len() as i64;
        if (request.prev_kv && prev != resp.deleted) || (!request.prev_kv && prev != 0) {
            self.fail(
                &request,
                format_args!("deleted {} with {prev} prev_kvs", resp.deleted),
            );
        }
        if request.range_end.is_empty() {
            if let Some(kv) = self.read_key(&request.key).await {
                self.fail(&request, format_args!("deleted key still reads {kv:?}"));
            }
        }
    }

    async fn txn(&mut self) {
        let request = self.txn_request(1);
        let mut kv = self.client().kv;
        let Ok(resp) = self.settle(&request, kv.txn(request.clone())).await else {
            return;
        };
        self.saw(&resp.header);
        let branch = if resp.succeeded {
            &request.success
        } else {
            &request.failure
        };
        let answered_each_op = branch.len() == resp.responses.len()
            && branch.iter().zip(&resp.responses).all(|(op, r)| {
                matches!(
                    (&op.request, &r.response),
                    (
                        Some(Op::RequestRange(_)),
                        Some(OpResponse::ResponseRange(_))
                    ) | (Some(Op::RequestPut(_)), Some(OpResponse::ResponsePut(_)))
                        | (
                            Some(Op::RequestDeleteRange(_)),
                            Some(OpResponse::ResponseDeleteRange(_))
                        )
                        | (Some(Op::RequestTxn(_)), Some(OpResponse::ResponseTxn(_)))
                )
            });
        if !answered_each_op {
            self.fail(
                &request,
                format_args!("the answers do not match the branch: {}", describe(&resp)),
            );
        }
    }

    async fn compact(&mut self) {
        let revision = match self.rng.random_range(0..6) {
            0 => -self.rng.random_range(0..=10),
            1 => self.rng.random_range(1..=self.head.max(1)),
            // Close behind the head, so reads of the recent past still work.
            2 | 3 => (self.head - self.rng.random_range(0..=20)).max(1),
            4 => self.head + self.rng.random_range(1..=10),
            _ => self.compacted,
        };
        let request = CompactionRequest {
            revision,
            physical: self.rng.random_bool(0.5),
        };
        let mut kv = self.client().kv;
        if let Ok(resp) = self.settle(&request, kv.compact(request)).await {
            self.saw(&resp.header);
            self.compacted = self.compacted.max(revision);
        }
    }

    async fn lease_grant(&mut self) {
        let ttl = match self.rng.random_range(0..8) {
            0 => -self.rng.random_range(1..=100),
            1 => 0,
            2..=5 => self.rng.random_range(1..=100),
            6 => cairn_store::MAX_LEASE_TTL_SECS + self.rng.random_range(0..=1),
            _ => i64::MAX,
        };
        let id = match self.rng.random_range(0..6) {
            0..=2 => 0,
            3 => self.rng.random_range(1..=1000),
            4 => self.granted.choose(&mut self.rng).copied().unwrap_or(0),
            _ => self.any_i64(),
        };
        let request = LeaseGrantRequest { ttl, id };
        let mut lease = self.client().lease;
        let Ok(resp) = self.settle(&request, lease.lease_grant(request)).await else {
            return;
        };
        self.saw(&resp.header);
        if resp.id <= 0 || (id != 0 && resp.id != id) {
            self.fail(&request, format_args!("granted lease {}", resp.id));
        }
        self.granted.push(resp.id);
    }

    async fn lease_revoke(&mut self) {
        let request = LeaseRevokeRequest {
            id: self.lease_id(),
        };
        let mut lease = self.client().lease;
        if let Ok(resp) = self.settle(&request, lease.lease_revoke(request)).await {
            self.saw(&resp.header);
            self.revoked.push(request.id);
        }
    }

    async fn lease_time_to_live(&mut self) {
        let request = LeaseTimeToLiveRequest {
            id: self.lease_id(),
            keys: self.rng.random_bool(0.5),
        };
        let mut lease = self.client().lease;
        if let Ok(resp) = self
            .settle(&request, lease.lease_time_to_live(request))
            .await
        {
            if resp.id != request.id || (!request.keys && !resp.keys.is_empty()) {
                self.fail(&request, format_args!("answered {}", describe(&resp)));
            }
        }
    }

    async fn lease_leases(&mut self) {
        let request = LeaseLeasesRequest {};
        let mut lease = self.client().lease;
        let _ = self.settle(&request, lease.lease_leases(request)).await;
    }

    /// A keep-alive stream used once: one request, one answer, dropped.
    async fn lease_keep_alive(&mut self) {
        let request = LeaseKeepAliveRequest {
            id: self.lease_id(),
        };
        let (tx, rx) = mpsc::channel(1);
        tx.send(request)
            .await
            .expect("the stream is not yet opened");
        let mut lease = self.client().lease;
        let Ok(mut answers) = self
            .settle(&request, lease.lease_keep_alive(ReceiverStream::new(rx)))
            .await
        else {
            return;
        };
        match tokio::time::timeout(CALL_TIMEOUT, answers.next()).await {
            Err(_) => self.fail(&request, "no keep-alive answer"),
            Ok(None) => self.fail(&request, "the keep-alive stream ended unanswered"),
            Ok(Some(Err(status))) => self.judge(&request, &status),
            Ok(Some(Ok(resp))) if resp.id != request.id => {
                self.fail(&request, format_args!("answered {resp:?}"))
            }
            Ok(Some(Ok(_))) => {}
        }
    }

    fn watch_request(&mut self) -> WatchRequest {
        let watch_id = |f: &mut Self| match f.rng.random_range(0..4) {
            0 | 1 => 0,
            2 => f.rng.random_range(1..=3),
            _ => f.any_i64(),
        };
        let request_union = match self.rng.random_range(0..20) {
            0..=11 => {
                let key = self.key();
                let filters = self.rng.random_range(0..=3);
                Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    range_end: self.range_end(&key),
                    key,
                    start_revision: self.revision(),
                    progress_notify: self.rng.random_bool(0.3),
                    filters: (0..filters).map(|_| self.enum_int(2)).collect(),
                    prev_kv: self.rng.random_bool(0.3),
                    watch_id: watch_id(self),
                    fragment: self.rng.random_bool(0.3),
                }))
            }
            12..=15 => Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: watch_id(self),
            })),
            16..=18 => Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
            _ => None,
        };
        WatchRequest { request_union }
    }

    /// A watch stream with a few random requests on it, read until it goes
    /// quiet; then dropped.
    async fn watch(&mut self) {
        let count = self.rng.random_range(1..=5);
        let requests: Vec<WatchRequest> = (0..count).map(|_| self.watch_request()).collect();
        let (tx, rx) = mpsc::channel(requests.len());
        for r in &requests {
            tx.send(r.clone()).await.expect("room for every request");
        }
        let mut watch = self.client().watch;
        let Ok(mut answers) = self
            .settle(&requests, watch.watch(ReceiverStream::new(rx)))
            .await
        else {
            return;
        };
        let until = Instant::now() + WATCH_READ;
        while Instant::now() < until {
            match tokio::time::timeout(WATCH_QUIET, answers.next()).await {
                Err(_) => break,
                // `tx` is still open: the member must not end the stream.
                Ok(None) => self.fail(&requests, "the watch stream ended"),
                Ok(Some(Err(status))) => {
                    self.judge(&requests, &status);
                    break;
                }
                Ok(Some(Ok(resp))) => self.saw(&resp.header),
            }
        }
        drop(tx);
    }

    async fn status(&mut self) {
        let request = StatusRequest {};
        let mut maintenance = self.client().maintenance;
        if let Ok(resp) = self.settle(&request, maintenance.status(request)).await {
            self.saw(&resp.header);
        }
    }

    async fn alarm(&mut self) {
        let member_id = match self.rng.random_range(0..3) {
            0 => 0,
            1 => self.nodes[self.member].member_id(),
            _ => self.rng.random(),
        };
        let mut request = AlarmRequest {
            action: self.enum_int(3),
            member_id,
            alarm: self.enum_int(3),
        };
        // A raised CORRUPT alarm stops every write by design: what it
        // would show is not a bug.
        if request.action == AlarmAction::Activate as i32
            && request.alarm == AlarmType::Corrupt as i32
        {
            request.action = AlarmAction::Get as i32;
        }
        let mut maintenance = self.client().maintenance;
        let answer = self.settle(&request, maintenance.alarm(request)).await;
        // A raised NOSPACE alarm refuses every put: clear it at once, so
        // the rest of the run still writes.
        if answer.is_ok()
            && request.action == AlarmAction::Activate as i32
            && request.alarm == AlarmType::Nospace as i32
        {
            let clear = AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: 0,
                alarm: AlarmType::Nospace as i32,
            };
            let cleared = self.must(&clear, maintenance.alarm(clear)).await;
            if !cleared
                .alarms
                .iter()
                .any(|a| a.member_id == member_id && a.alarm == AlarmType::Nospace as i32)
            {
                self.fail(
                    &request,
                    format_args!("the alarm raised was not cleared: {cleared:?}"),
                );
            }
        }
    }

    async fn hash_kv(&mut self) {
        let request = HashKvRequest {
            revision: self.revision(),
        };
        let mut maintenance = self.client().maintenance;
        if let Ok(resp) = self.settle(&request, maintenance.hash_kv(request)).await {
            self.saw(&resp.header);
        }
    }

    async fn member_list(&mut self) {
        let request = MemberListRequest {
            linearizable: self.rng.random_bool(0.5),
        };
        let mut cluster = self.client().cluster;
        if let Ok(resp) = self.settle(&request, cluster.member_list(request)).await {
            if resp.members.len() != self.members.len() {
                self.fail(&request, format_args!("lists {:?}", resp.members));
            }
        }
    }

    // --- Afterwards ----------------------------------------------------

    /// Revokes every lease left, so no expiry moves the revision on, and
    /// returns the revision every member then reaches, each healthy and
    /// following one leader.
    async fn settle_cluster(&mut self) -> i64 {
        self.index = None;
        IN_FLIGHT.store(usize::MAX, Ordering::SeqCst);
        self.member = 0;
        let request = LeaseLeasesRequest {};
        let mut lease = self.client().lease;
        let leases = self.must(&request, lease.lease_leases(request)).await;
        for id in leases.leases.iter().map(|l| l.id) {
            let request = LeaseRevokeRequest { id };
            match lease.lease_revoke(request).await {
                Ok(_) => {}
                // Expired since it was listed.
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => self.fail(&request, format_args!("final revoke: {s:?}")),
            }
        }
        let deadline = Instant::now() + SETTLE;
        loop {
            let statuses = self.statuses().await;
            let agreed = statuses.iter().all(|s| {
                s.as_ref().is_ok_and(|s| {
                    s.errors.is_empty()
                        && s.leader != 0
                        && Some(s.leader) == statuses[0].as_ref().ok().map(|f| f.leader)
                        && s.header.map(|h| h.revision)
                            == statuses[0]
                                .as_ref()
                                .ok()
                                .and_then(|f| f.header.map(|h| h.revision))
                })
            });
            if agreed {
                let first = statuses[0].as_ref().ok().and_then(|s| s.header);
                return first.map_or(0, |h| h.revision);
            }
            if Instant::now() > deadline {
                self.fail(
                    &StatusRequest {},
                    format_args!("members unhealthy or apart after {SETTLE:?}: {statuses:#?}"),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn statuses(&self) -> Vec<Result<StatusResponse, Status>> {
        let mut out = Vec::new();
        for m in &self.members {
            let mut maintenance = m.maintenance.clone();
            let answer = tokio::time::timeout(CALL_TIMEOUT, maintenance.status(StatusRequest {}))
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("no status answer")));
            out.push(answer.map(tonic::Response::into_inner));
        }
        out
    }

    /// `HashKV` at `revision` answers the same on every member.
    async fn hashes_agree(&mut self, revision: i64) {
        let request = HashKvRequest { revision };
        let mut hashes = Vec::new();
        for i in 0..self.members.len() {
            self.member = i;
            let mut maintenance = self.client().maintenance;
            let resp = self.must(&request, maintenance.hash_kv(request)).await;
            hashes.push((resp.hash, resp.compact_revision, resp.hash_revision));
        }
        if hashes.iter().any(|h| *h != hashes[0]) || hashes[0].2 != revision {
            self.fail(
                &request,
                format_args!("(hash, compact revision, revision) per member: {hashes:?}"),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_requests_get_actionable_answers_and_members_stay_equal() {
    record_panics();
    let seed = env_number("CAIRN_FUZZ_SEED", DEFAULT_SEED);
    let requests = env_number("CAIRN_FUZZ_REQUESTS", DEFAULT_REQUESTS);
    let budget = Duration::from_secs(env_number("CAIRN_FUZZ_SECS", RUN_BUDGET_SECS));
    let started = Instant::now();
    let c = Cluster::start(3, |_| {}).await;
    c.wait_leader(ELECTION).await;
    let mut fuzz = Fuzzer::new(&c, seed).await;
    let made = fuzz.run(requests, budget).await;
    let revision = fuzz.settle_cluster().await;
    fuzz.hashes_agree(revision).await;
    let panics = PANICS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        panics.is_empty(),
        "seed {seed}: members panicked: {panics:#?}"
    );
    eprintln!(
        "seed {seed}: {made} requests, members agree at revision {revision}, {:?} in all; answers: {:#?}",
        started.elapsed(),
        fuzz.tally
    );
    c.shutdown().await;
}
