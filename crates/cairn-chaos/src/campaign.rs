//! One chaos run: a real cluster ([`crate::harness`]), a seeded fault
//! schedule, concurrent recording clients, then heal and check.
//!
//! [`run`] does, for one [`Config`]:
//!
//! 1. start `members` `cairn` processes and wait until they see a leader;
//! 2. start `clients` tokio tasks doing put / linearizable get /
//!    compare-and-swap txn / delete on `keys` keys, each recorded with the
//!    [`Recorder`] (an error that certainly had no effect is discarded,
//!    anything else unclear is recorded as indeterminate);
//! 3. meanwhile inject the faults of [`plan`] (derived from the seed only,
//!    so the same seed gives the same schedule): SIGKILL + restart of a
//!    random member or of the current leader, SIGSTOP + SIGCONT of the
//!    leader for longer than the election timeout. One fault at a time;
//! 4. heal (SIGCONT everything, restart dead members), wait until every
//!    member sees a leader, read every key through every member
//!    (linearizable, recorded — this is what makes lost acknowledged writes
//!    visible to the checker);
//! 5. check the history for linearizability ([`check_history`], bounded
//!    budget) and check that the replicas agree: all members reach the
//!    same revision and `Maintenance.HashKV` at that revision is equal
//!    everywhere.
//!
//! A failure ([`Failure`]) carries the seed, the executed fault schedule,
//! the minimal failing history and the path of the saved history JSON.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::faults::{plan, FaultKind, Injector};
use crate::harness::{self, ProcCluster};
use crate::lease_check::Outages;
use crate::netns::NetLab;
use crate::power::PowerDisks;
use crate::side_workloads::{SideSummary, SideWorkloads};
use crate::{check_history, Budget, Call, CheckOptions, CheckResult, History, Recorder, Ret};

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub members: usize,
    pub clients: usize,
    pub keys: usize,
    /// How long the workload (and the faults) run.
    pub duration: Duration,
    /// Per-request client timeout.
    pub request_timeout: Duration,
    /// Upper bound on operations per client.
    pub max_ops_per_client: usize,
    /// Random pause between two operations of a client, up to this long
    /// (keeps histories checkable on slow machines).
    pub think_time: Duration,
    /// Budget of the linearizability check.
    pub check_budget: Duration,
    /// Keep the data dirs and logs of a failing run.
    pub keep_on_failure: bool,
    /// The fault kinds the schedule draws from. Kinds that need network
    /// namespaces (or netem) are dropped, with a printed note, where
    /// those are unavailable.
    pub faults: Vec<FaultKind>,
    /// Run the members in network namespaces when possible even if no
    /// partition fault is selected (same addresses as a partition run).
    pub prefer_namespaces: bool,
    /// Watchers of the whole workload prefix (half of them reconnect).
    pub watchers: usize,
    /// Clients granting, attaching, keeping alive and abandoning leases.
    pub lease_clients: usize,
    /// Slots running `cairn name register --hold` processes that are
    /// SIGKILLed (see [`crate::names`]).
    pub name_holders: usize,
    /// The members' `--snapshot-entries` (`None`: their default). Small,
    /// so that snapshots are built, logs purged and snapshots installed
    /// (on members that were down, cut off or added) under the faults.
    pub snapshot_entries: Option<u64>,
    /// Members run TLS on both ports with client and peer certificates
    /// required; every client of the run dials them with one.
    pub tls: bool,
    /// With `tls`: auth is on from the start of the run, every client
    /// running as the user its certificate names (with the root role).
    pub auth: bool,
}

/// [`Config::snapshot_entries`] of the profiles here: a run of a few
/// thousand writes builds several snapshots on every member.
pub const SNAPSHOT_ENTRIES: u64 = 200;
/// The members' `--corrupt-check-interval-ms`: the online corruption
/// check runs through every fault, and a run whose replicas agree must end
/// with no CORRUPT alarm (a false alarm would also stop the cluster).
pub const CORRUPT_CHECK_INTERVAL_MS: u64 = 500;

impl Config {
    /// The short profile used by `cargo test`.
    pub fn short(seed: u64) -> Config {
        Config {
            seed,
            members: 3,
            clients: 4,
            keys: 5,
            duration: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
            max_ops_per_client: 2_000,
            think_time: Duration::from_millis(5),
            check_budget: Duration::from_secs(30),
            keep_on_failure: true,
            faults: FaultKind::ALL.to_vec(),
            prefer_namespaces: false,
            watchers: 4,
            lease_clients: 2,
            name_holders: 2,
            snapshot_entries: Some(SNAPSHOT_ENTRIES),
            tls: false,
            auth: false,
        }
    }
}

/// Creates the network lab if the selected faults need one (or
/// `prefer_namespaces`), drops the fault kinds that cannot run here, and
/// says whether delay/loss needs the userspace proxies (no `tc netem`).
/// Returns the lab, the kinds to plan with, whether to proxy peer traffic,
/// and notes saying what was skipped or replaced and why.
fn prepare_network(cfg: &Config) -> (Option<NetLab>, Vec<FaultKind>, bool, Vec<String>) {
    let mut notes = Vec::new();
    let mut kinds = cfg.faults.clone();
    let wants_lab = cfg.prefer_namespaces
        || kinds
            .iter()
            .any(|k| k.needs_lab() || *k == FaultKind::Degrade);
    let lab = if wants_lab {
        match NetLab::create(cfg.members) {
            Ok(lab) => Some(lab),
            Err(why) => {
                if kinds.iter().any(|k| k.needs_lab()) {
                    notes.push(format!(
                        "SKIPPED partition faults (members on 127.0.0.1): {why}"
                    ));
                }
                kinds.retain(|k| !k.needs_lab());
                None
            }
        }
    } else {
        None
    };
    let mut proxied = false;
    if kinds.contains(&FaultKind::Degrade) {
        match lab.as_ref().map(|l| l.netem_unavailable()) {
            Some(None) => notes.push("delay/loss faults via tc netem".into()),
            Some(Some(why)) => {
                proxied = true;
                notes.push(format!(
                    "delay/loss faults via userspace TCP proxies, loss as stalls (tc netem unavailable here: {why}); partitions also held in the proxies"
                ));
            }
            None => {
                proxied = true;
                notes.push(
                    "delay/loss faults via userspace TCP proxies on 127.0.0.1, loss as stalls (no network namespaces)"
                        .into(),
                );
            }
        }
    }
    if kinds.iter().any(|k| k.needs_disks()) {
        if let Err(why) = PowerDisks::precondition() {
            notes.push(format!("SKIPPED power faults: {why}"));
            kinds.retain(|k| !k.needs_disks());
        }
    }
    (lab, kinds, proxied, notes)
}

/// Outcome of a run that found nothing wrong.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    /// The faults as injected (with resolved targets).
    pub schedule: Vec<String>,
    pub ops: usize,
    pub indeterminate: usize,
    /// Client requests that failed (timeouts and errors, all members).
    pub client_errors: u64,
    /// The check ran out of budget on these keys (no violation found, but
    /// not proven either).
    pub undecided_keys: Vec<String>,
    pub revision: i64,
    pub check_time: Duration,
    /// Watch and lease checks.
    pub side: SideSummary,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} ops ({} indeterminate, {} client errors), {} faults, replicas agree at revision {}, check {:.1}s: {}; {}",
            self.seed,
            self.ops,
            self.indeterminate,
            self.client_errors,
            self.schedule.len(),
            self.revision,
            self.check_time.as_secs_f64(),
            if self.undecided_keys.is_empty() {
                "linearizable".to_string()
            } else {
                format!("UNDECIDED (budget) for keys {:?}", self.undecided_keys)
            },
            self.side
        )
    }
}

/// What went wrong.
#[derive(Debug, Clone)]
pub enum FailureKind {
    /// The history is not linearizable (shows the minimised violation).
    Linearizability(String),
    /// Members disagree on the data at the same revision.
    Divergence(String),
    /// A watcher missed, duplicated or reordered a change, or the revision
    /// log disagrees with the acknowledged writes.
    Watch(String),
    /// A key on an expired lease survived, or a TTL restarted.
    Lease(String),
    /// The cluster did not come back / a member exited by itself.
    Availability(String),
    /// The harness itself failed (spawn error, malformed history...).
    Harness(String),
}

/// A failed run, with everything needed to reproduce it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub members: usize,
    pub duration: Duration,
    pub schedule: Vec<String>,
    pub kind: FailureKind,
    /// Where the recorded history was saved (JSON, see `History::load`).
    pub history_path: Option<PathBuf>,
    /// Where data dirs and logs were kept.
    pub cluster_dir: Option<PathBuf>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos run FAILED (seed {})", self.seed)?;
        writeln!(
            f,
            "reproduce: cargo run -p cairn-chaos --bin chaos -- --seed {} --members {} --duration {}",
            self.seed,
            self.members,
            self.duration.as_secs()
        )?;
        writeln!(f, "fault schedule:")?;
        for s in &self.schedule {
            writeln!(f, "  {s}")?;
        }
        match &self.kind {
            FailureKind::Linearizability(v) => writeln!(f, "{v}")?,
            FailureKind::Divergence(m) => writeln!(f, "replicas diverge: {m}")?,
            FailureKind::Watch(m) => writeln!(f, "watch check: {m}")?,
            FailureKind::Lease(m) => writeln!(f, "lease check: {m}")?,
            FailureKind::Availability(m) => writeln!(f, "availability: {m}")?,
            FailureKind::Harness(m) => writeln!(f, "harness error: {m}")?,
        }
        if let Some(p) = &self.history_path {
            writeln!(f, "history saved to {}", p.display())?;
        }
        if let Some(p) = &self.cluster_dir {
            writeln!(f, "data dirs and logs kept in {}", p.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

fn key_name(i: usize) -> String {
    format!("chaos/k{i}")
}

/// Whether a failed request certainly had no effect: reads never have one;
/// a write only when the client could not even connect (the request was
/// never sent). A status that came from the server has no source.
fn certainly_no_effect(call: &Call, status: &tonic::Status) -> bool {
    if matches!(call, Call::Get) {
        return true;
    }
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let Some(src) = std::error::Error::source(status) else {
        return false;
    };
    let mut text = src.to_string();
    let mut cur = src.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    let text = text.to_ascii_lowercase();
    text.contains("tcp connect error") || text.contains("connection refused")
}

async fn execute(kv: &mut KvClient<Channel>, key: &str, call: &Call) -> Result<Ret, tonic::Status> {
    let k = key.as_bytes().to_vec();
    match call {
        Call::Get => {
            let r = kv
                .range(pb::RangeRequest {
                    key: k,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Ret::Value(
                r.kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            ))
        }
        Call::Put { value } => {
            kv.put(pb::PutRequest {
                key: k,
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?;
            Ok(Ret::Ok)
        }
        Call::Delete => {
            let r = kv
                .delete_range(pb::DeleteRangeRequest {
                    key: k,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Ret::Deleted(r.deleted > 0))
        }
        Call::Cas { expected, new } => {
            let compare = match expected {
                Some(v) => pb::Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: k.clone(),
                    target_union: Some(TargetUnion::Value(v.as_bytes().to_vec())),
                    ..Default::default()
                },
                None => pb::Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: k.clone(),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            };
            let r = kv
                .txn(pb::TxnRequest {
                    compare: vec![compare],
                    success: vec![pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                            key: k,
                            value: new.as_bytes().to_vec(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await?
                .into_inner();
            Ok(Ret::Cas(r.succeeded))
        }
    }
}

struct ClientCtx {
    id: u64,
    urls: Vec<String>,
    recorder: Recorder,
    keys: usize,
    seed: u64,
    deadline: Instant,
    timeout: Duration,
    max_ops: usize,
    think_time: Duration,
    errors: Arc<AtomicU64>,
}

async fn client_loop(ctx: ClientCtx) {
    let mut rng =
        StdRng::seed_from_u64(ctx.seed ^ (ctx.id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let n = ctx.urls.len();
    let kvs: Vec<KvClient<Channel>> = ctx
        .urls
        .iter()
        .map(|u| KvClient::new(harness::channel(u, ctx.timeout)))
        .collect();
    let mut member = ctx.id as usize % n;
    let mut last_seen: HashMap<String, Option<String>> = HashMap::new();
    let mut seq = 0u64;
    for _ in 0..ctx.max_ops {
        if Instant::now() >= ctx.deadline {
            break;
        }
        let key = key_name(rng.random_range(0..ctx.keys));
        seq += 1;
        let fresh = format!("c{}-{seq}", ctx.id);
        let call = match rng.random_range(0..100) {
            0..30 => Call::Get,
            30..60 => Call::Put { value: fresh },
            60..85 => Call::Cas {
                expected: last_seen.get(&key).cloned().flatten(),
                new: fresh,
            },
            _ => Call::Delete,
        };
        let mut kv = kvs[member].clone();
        let op = ctx.recorder.invoke(ctx.id, key.clone(), call.clone());
        let outcome = tokio::time::timeout(ctx.timeout, execute(&mut kv, &key, &call)).await;
        let failed = match outcome {
            Ok(Ok(ret)) => {
                match (&call, &ret) {
                    (Call::Get, Ret::Value(v)) => {
                        last_seen.insert(key, v.clone());
                    }
                    (Call::Put { value }, _) | (Call::Cas { new: value, .. }, Ret::Cas(true)) => {
                        last_seen.insert(key, Some(value.clone()));
                    }
                    (Call::Delete, _) => {
                        last_seen.insert(key, None);
                    }
                    _ => {}
                }
                op.complete(ret);
                false
            }
            Ok(Err(status)) => {
                if certainly_no_effect(&call, &status) {
                    op.discard();
                } else {
                    op.unknown();
                }
                true
            }
            Err(_elapsed) => {
                op.unknown();
                true
            }
        };
        if failed {
            ctx.errors.fetch_add(1, Ordering::Relaxed);
            member = (member + 1) % n;
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..100))).await;
        } else if !ctx.think_time.is_zero() {
            let ms = rng.random_range(0..=ctx.think_time.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// Reads every key through every member (linearizable reads, recorded as
/// clients `1000 + member`), retrying failed reads a bounded number of
/// times.
async fn final_reads(urls: &[String], keys: usize, recorder: &Recorder, timeout: Duration) {
    for (m, url) in urls.iter().enumerate() {
        let mut kv = KvClient::new(harness::channel(url, timeout));
        for k in 0..keys {
            let key = key_name(k);
            for _attempt in 0..20 {
                let op = recorder.invoke(1000 + m as u64, key.clone(), Call::Get);
                match tokio::time::timeout(timeout, execute(&mut kv, &key, &Call::Get)).await {
                    Ok(Ok(ret)) => {
                        op.complete(ret);
                        break;
                    }
                    _ => {
                        op.discard();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}

/// Waits until every member has applied the same revision (stable over two
/// polls), then compares `HashKV` at that revision. Returns the revision.
async fn check_replicas(urls: &[String], timeout: Duration) -> Result<i64, FailureKind> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<Vec<i64>> = None;
    let revision = loop {
        let mut revs = Vec::new();
        for u in urls {
            revs.push(harness::local_revision(u, timeout).await.unwrap_or(-1));
        }
        let agreed = revs.iter().all(|r| *r == revs[0] && *r >= 0);
        if agreed && last.as_ref() == Some(&revs) {
            break revs[0];
        }
        if Instant::now() > deadline {
            return Err(FailureKind::Divergence(format!(
                "members did not converge on one revision within 30s: {revs:?}"
            )));
        }
        last = Some(revs);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut hashes = Vec::new();
    for u in urls {
        let mut h = Err(String::new());
        for _ in 0..10 {
            h = harness::hash_kv(u, revision, timeout).await;
            if h.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match h {
            Ok(h) => hashes.push(h),
            Err(e) => {
                return Err(FailureKind::Availability(format!("HashKV on {u}: {e}")));
            }
        }
    }
    if hashes.iter().any(|h| *h != hashes[0]) {
        return Err(FailureKind::Divergence(format!(
            "HashKV at revision {revision} differs: {:?}",
            urls.iter().zip(&hashes).collect::<Vec<_>>()
        )));
    }
    // The members agree, so the online check (every member runs it, see
    // CORRUPT_CHECK_INTERVAL_MS) must not have named anyone.
    let named = harness::corrupt_alarms(&urls[0], timeout)
        .await
        .map_err(|e| FailureKind::Availability(format!("alarm list on {}: {e}", urls[0])))?;
    if !named.is_empty() {
        return Err(FailureKind::Divergence(format!(
            "the corruption check raised CORRUPT for {named:x?} though the replicas agree"
        )));
    }
    Ok(revision)
}

fn save_history(seed: u64, history: &History) -> Option<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "cairn-chaos-seed{seed}-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    history.save(&path).ok().map(|_| path)
}

/// Runs one chaos run (blocking; creates its own tokio runtime).
pub fn run(cfg: &Config) -> Result<Report, Box<Failure>> {
    let fail = |kind: FailureKind,
                schedule: &[String],
                history: Option<&History>,
                cluster: Option<&mut ProcCluster>| {
        let history_path = history.and_then(|h| save_history(cfg.seed, h));
        let cluster_dir = match cluster {
            Some(c) if cfg.keep_on_failure => Some(c.keep_dir()),
            _ => None,
        };
        Box::new(Failure {
            seed: cfg.seed,
            members: cfg.members,
            duration: cfg.duration,
            schedule: schedule.to_vec(),
            kind,
            history_path,
            cluster_dir,
        })
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(FailureKind::Harness(e.to_string()), &[], None, None))?;

    let (lab, kinds, proxied, notes) = prepare_network(cfg);
    for n in &notes {
        eprintln!("cairn-chaos (seed {}): {n}", cfg.seed);
    }
    let proxy_seed = proxied.then_some(cfg.seed);
    let mut serve_args: Vec<String> = match cfg.snapshot_entries {
        Some(n) => vec!["--snapshot-entries".into(), n.to_string()],
        None => Vec::new(),
    };
    serve_args.extend([
        "--corrupt-check-interval-ms".into(),
        CORRUPT_CHECK_INTERVAL_MS.to_string(),
    ]);
    let mut cluster = ProcCluster::start_with_tls(
        cfg.members,
        Duration::from_secs(30),
        lab,
        proxy_seed,
        serve_args,
        cfg.tls,
        kinds.iter().any(|k| k.needs_disks()),
    )
    .map_err(|e| fail(FailureKind::Harness(e), &notes, None, None))?;
    let urls = cluster.client_urls();
    if cfg.auth {
        if !cfg.tls {
            return Err(fail(
                FailureKind::Harness("auth needs tls (clients are named by certificate)".into()),
                &notes,
                None,
                None,
            ));
        }
        rt.block_on(harness::enable_auth_for_cert_user(
            &urls[0],
            Duration::from_secs(10),
        ))
        .map_err(|e| fail(FailureKind::Harness(e), &notes, None, None))?;
    }
    let ids = rt
        .block_on(harness::member_ids(&urls, Duration::from_secs(10)))
        .map_err(|e| fail(FailureKind::Harness(e), &[], None, None))?;
    let recorder = Recorder::new();
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + cfg.duration;

    let workers: Vec<_> = (0..cfg.clients)
        .map(|id| {
            rt.spawn(client_loop(ClientCtx {
                id: id as u64,
                urls: urls.clone(),
                recorder: recorder.clone(),
                keys: cfg.keys,
                seed: cfg.seed,
                deadline,
                timeout: cfg.request_timeout,
                max_ops: cfg.max_ops_per_client,
                think_time: cfg.think_time,
                errors: errors.clone(),
            }))
        })
        .collect();

    let outages = Outages::default();
    let mut side = match SideWorkloads::start(
        &rt,
        &urls,
        cfg.seed,
        cfg.watchers,
        cfg.lease_clients,
        cfg.name_holders,
        harness::cairn_bin().ok().as_deref(),
        deadline,
        start,
        cfg.request_timeout,
        &outages,
    ) {
        Ok(s) => s,
        Err(e) => {
            return Err(fail(
                FailureKind::Harness(format!("starting watchers: {e}")),
                &notes,
                None,
                Some(&mut cluster),
            ))
        }
    };

    // Inject the planned faults, one at a time.
    let mut injector = Injector {
        cluster: &mut cluster,
        rt: &rt,
        ids,
        log: notes,
        outages,
        origin: start,
    };
    let mut injected = Ok(());
    for f in plan(cfg.seed, cfg.members, cfg.duration, &kinds) {
        let now = start.elapsed();
        if f.at > now {
            std::thread::sleep(f.at - now);
        }
        if Instant::now() >= deadline {
            break;
        }
        injected = injector.inject(&f, start.elapsed());
        if injected.is_err() {
            break;
        }
    }
    let schedule_log = std::mem::take(&mut injector.log);
    drop(injector);
    if let Err(e) = injected {
        return Err(fail(
            FailureKind::Availability(format!("{e}\n{}", cluster.logs(40))),
            &schedule_log,
            Some(&recorder.history()),
            Some(&mut cluster),
        ));
    }

    // Let the workload finish (every op is bounded by the request timeout).
    let joined = rt.block_on(async {
        tokio::time::timeout(
            cfg.duration + cfg.request_timeout * 4 + Duration::from_secs(10),
            futures_join(workers),
        )
        .await
    });
    if joined.is_err() {
        return Err(fail(
            FailureKind::Harness("clients did not stop in time".into()),
            &schedule_log,
            Some(&recorder.history()),
            Some(&mut cluster),
        ));
    }

    let leases = side.finish_leases(&rt);

    // Heal and wait for the cluster.
    let exits = cluster.unexpected_exits();
    if let Err(e) = cluster.heal() {
        return Err(fail(
            FailureKind::Harness(e),
            &schedule_log,
            Some(&recorder.history()),
            Some(&mut cluster),
        ));
    }
    if !exits.is_empty() {
        let msg = format!(
            "member(s) exited by themselves: {exits:?}\n{}",
            cluster.logs(40)
        );
        return Err(fail(
            FailureKind::Availability(msg),
            &schedule_log,
            Some(&recorder.history()),
            Some(&mut cluster),
        ));
    }
    if let Err(e) = cluster.wait_healthy(Duration::from_secs(30)) {
        return Err(fail(
            FailureKind::Availability(e),
            &schedule_log,
            Some(&recorder.history()),
            Some(&mut cluster),
        ));
    }
    rt.block_on(final_reads(&urls, cfg.keys, &recorder, cfg.request_timeout));

    let history = recorder.history();
    let indeterminate = history.ops.iter().filter(|o| o.is_indeterminate()).count();

    // Replica agreement.
    let revision = match rt.block_on(check_replicas(&urls, cfg.request_timeout)) {
        Ok(r) => r,
        Err(kind) => {
            return Err(fail(
                kind,
                &schedule_log,
                Some(&history),
                Some(&mut cluster),
            ));
        }
    };
    // Linearizability (and with the final reads, durability of
    // acknowledged writes).
    let opts = CheckOptions {
        budget: Budget::time(cfg.check_budget),
        minimize: true,
        minimize_budget: Budget::time(Duration::from_secs(20)).with_steps(50_000_000),
    };
    let t0 = Instant::now();
    let result = match check_history(&history, &opts) {
        Ok(r) => r,
        Err(e) => {
            return Err(fail(
                FailureKind::Harness(format!("malformed history: {e}")),
                &schedule_log,
                Some(&history),
                Some(&mut cluster),
            ));
        }
    };
    let check_time = t0.elapsed();
    let undecided_keys = match result {
        CheckResult::Ok => Vec::new(),
        CheckResult::Timeout { keys } => keys,
        CheckResult::Illegal(v) => {
            let failure = fail(
                FailureKind::Linearizability(v.to_string()),
                &schedule_log,
                Some(&history),
                Some(&mut cluster),
            );
            // Also save the minimised violation next to the full history.
            if let Some(p) = &failure.history_path {
                let _ = v.history().save(p.with_extension("min.json"));
            }
            return Err(failure);
        }
    };
    if let Err(e) = leases {
        return Err(fail(
            FailureKind::Lease(e),
            &schedule_log,
            Some(&history),
            Some(&mut cluster),
        ));
    }
    let side_summary =
        match side.finish_watches(&rt, &urls, revision, &history, cfg.request_timeout) {
            Ok(s) => s,
            Err(e) => {
                return Err(fail(
                    FailureKind::Watch(e),
                    &schedule_log,
                    Some(&history),
                    Some(&mut cluster),
                ))
            }
        };
    Ok(Report {
        seed: cfg.seed,
        schedule: schedule_log,
        ops: history.len(),
        indeterminate,
        client_errors: errors.load(Ordering::Relaxed),
        undecided_keys,
        revision,
        check_time,
        side: side_summary,
    })
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_message_has_seed_schedule_and_reproduce_command() {
        let f = Failure {
            seed: 42,
            members: 5,
            duration: Duration::from_secs(60),
            schedule: vec!["t=1.000s SIGKILL n2 (leader), restart after 500ms".into()],
            kind: FailureKind::Linearizability("linearizability violation on key".into()),
            history_path: Some(PathBuf::from("/tmp/h.json")),
            cluster_dir: None,
        };
        let text = f.to_string();
        assert!(text.contains("seed 42"), "{text}");
        assert!(
            text.contains("--seed 42 --members 5 --duration 60"),
            "{text}"
        );
        assert!(text.contains("SIGKILL n2"), "{text}");
        assert!(text.contains("linearizability violation"), "{text}");
        assert!(text.contains("/tmp/h.json"), "{text}");
    }

    #[test]
    fn reads_and_server_errors_are_classified_conservatively() {
        let put = Call::Put { value: "v".into() };
        assert!(certainly_no_effect(
            &Call::Get,
            &tonic::Status::unavailable("x")
        ));
        // A status from the server (no source) may hide an applied write.
        assert!(!certainly_no_effect(
            &put,
            &tonic::Status::unavailable("etcdserver: no leader")
        ));
        assert!(!certainly_no_effect(
            &put,
            &tonic::Status::deadline_exceeded("timeout")
        ));
    }
}
