//! The workloads, each written against the generated etcd v3 clients only,
//! so the same code drives Cairn and etcd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::conn::{self, Pool};
use crate::driver::{self, drive, Limits, Rng, Worker};
use crate::hist::Latency;
use crate::report::Row;

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// `bench/0000001234`: fixed width, so keys sort like their numbers.
pub fn key(prefix: &str, n: u64) -> Vec<u8> {
    format!("{prefix}{n:010}").into_bytes()
}

/// The first key after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A value of `size` bytes (at least 8) whose first 8 bytes carry `stamp`.
pub fn stamped_value(size: usize, stamp: u64) -> Vec<u8> {
    let mut v = vec![b'x'; size.max(8)];
    v[..8].copy_from_slice(&stamp.to_le_bytes());
    v
}

pub fn read_stamp(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// What every workload needs to know.
#[derive(Debug, Clone)]
pub struct Params {
    pub label: String,
    pub key_prefix: String,
    pub key_space: u64,
    pub val_size: usize,
    pub limits: Limits,
}

// ---------------------------------------------------------------- put

pub struct PutWorker {
    kv: KvClient<Channel>,
    rng: Rng,
    prefix: String,
    key_space: u64,
    value: Vec<u8>,
}

impl Worker for PutWorker {
    async fn op(&mut self) -> Result<(), String> {
        let k = self.rng.below(self.key_space);
        self.kv
            .put(conn::req(PutRequest {
                key: key(&self.prefix, k),
                value: self.value.clone(),
                ..Default::default()
            }))
            .await
            .map(drop)
            .map_err(status_text)
    }
}

pub async fn put(pool: &Pool, clients: usize, p: &Params) -> Row {
    let workers = (0..clients)
        .map(|i| PutWorker {
            kv: KvClient::new(pool.get(i)),
            rng: Rng::for_client(i),
            prefix: p.key_prefix.clone(),
            key_space: p.key_space,
            value: vec![b'v'; p.val_size],
        })
        .collect();
    let out = drive(workers, p.limits).await;
    row(p, "put", clients, pool.len(), out)
}

fn row(p: &Params, workload: &str, clients: usize, conns: usize, out: driver::Outcome) -> Row {
    Row::from_latency(
        &p.label,
        workload,
        clients,
        conns,
        out.ops,
        out.elapsed.as_secs_f64(),
        &out.latency,
        out.errors,
        out.first_error,
    )
}

// ---------------------------------------------------------------- range

pub struct RangeWorker {
    kv: KvClient<Channel>,
    rng: Rng,
    prefix: String,
    key_space: u64,
    serializable: bool,
}

impl Worker for RangeWorker {
    async fn op(&mut self) -> Result<(), String> {
        let k = self.rng.below(self.key_space);
        self.kv
            .range(conn::req(RangeRequest {
                key: key(&self.prefix, k),
                serializable: self.serializable,
                ..Default::default()
            }))
            .await
            .map(drop)
            .map_err(status_text)
    }
}

/// Single-key gets of random keys in the key space (as etcd's
/// `benchmark range` does), linearizable or serializable.
pub async fn range(pool: &Pool, clients: usize, serializable: bool, p: &Params) -> Row {
    let workers = (0..clients)
        .map(|i| RangeWorker {
            kv: KvClient::new(pool.get(i)),
            rng: Rng::for_client(i),
            prefix: p.key_prefix.clone(),
            key_space: p.key_space,
            serializable,
        })
        .collect();
    let out = drive(workers, p.limits).await;
    let name = if serializable { "range-s" } else { "range-l" };
    row(p, name, clients, pool.len(), out)
}

/// Write every key of the key space once so reads find values. Bounded by
/// `within`; returns how many keys were written.
pub async fn prefill(pool: &Pool, p: &Params, within: Duration) -> anyhow::Result<u64> {
    struct Fill {
        kv: KvClient<Channel>,
        next: Arc<AtomicU64>,
        prefix: String,
        key_space: u64,
        value: Vec<u8>,
    }
    impl Worker for Fill {
        async fn op(&mut self) -> Result<(), String> {
            let k = self.next.fetch_add(1, Ordering::Relaxed) % self.key_space;
            self.kv
                .put(conn::req(PutRequest {
                    key: key(&self.prefix, k),
                    value: self.value.clone(),
                    ..Default::default()
                }))
                .await
                .map(drop)
                .map_err(status_text)
        }
    }
    let next = Arc::new(AtomicU64::new(0));
    let workers = (0..64)
        .map(|i| Fill {
            kv: KvClient::new(pool.get(i)),
            next: next.clone(),
            prefix: p.key_prefix.clone(),
            key_space: p.key_space,
            value: vec![b'v'; p.val_size],
        })
        .collect();
    let limits = Limits {
        duration: within,
        count: p.key_space,
        rate: 0.0,
        op_timeout: p.limits.op_timeout,
    };
    let out = drive(workers, limits).await;
    if out.ops < p.key_space {
        bail!(
            "prefill wrote {} of {} keys in {within:?} ({} errors, first: {})",
            out.ops,
            p.key_space,
            out.errors,
            out.first_error.unwrap_or_default()
        );
    }
    Ok(out.ops)
}

// ---------------------------------------------------------------- txn

/// Compare-and-put on the client's own key: `if mod_revision(k) == last
/// { put k } else { get k }`, tracking `last` from the responses, as an
/// optimistic-concurrency loop does.
pub struct TxnCasWorker {
    kv: KvClient<Channel>,
    key: Vec<u8>,
    last_mod: i64,
    value: Vec<u8>,
    failed_compares: Arc<AtomicU64>,
}

impl Worker for TxnCasWorker {
    async fn op(&mut self) -> Result<(), String> {
        let req = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: self.key.clone(),
                target_union: Some(TargetUnion::ModRevision(self.last_mod)),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: self.key.clone(),
                    value: self.value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: self.key.clone(),
                    ..Default::default()
                })),
            }],
        };
        let resp = self
            .kv
            .txn(conn::req(req))
            .await
            .map_err(status_text)?
            .into_inner();
        if resp.succeeded {
            self.last_mod = resp
                .header
                .map(|h| h.revision)
                .ok_or("txn response without header")?;
        } else {
            self.failed_compares.fetch_add(1, Ordering::Relaxed);
            self.last_mod = match resp.responses.into_iter().next().and_then(|r| r.response) {
                Some(OpResponse::ResponseRange(r)) => r.kvs.first().map_or(0, |kv| kv.mod_revision),
                _ => return Err("failed txn without its range response".into()),
            };
        }
        Ok(())
    }
}

pub async fn txn_cas(pool: &Pool, clients: usize, p: &Params) -> Row {
    let failed = Arc::new(AtomicU64::new(0));
    let workers = (0..clients)
        .map(|i| TxnCasWorker {
            kv: KvClient::new(pool.get(i)),
            key: key(&format!("{}cas/", p.key_prefix), i as u64),
            last_mod: 0,
            value: vec![b'v'; p.val_size],
            failed_compares: failed.clone(),
        })
        .collect();
    let out = drive(workers, p.limits).await;
    let mut r = row(p, "txn-cas", clients, pool.len(), out);
    r.detail = format!(
        "{} compares failed (first txn on a key left by an earlier run)",
        failed.load(Ordering::Relaxed)
    );
    r
}

// ---------------------------------------------------------------- lease

/// One operation = LeaseGrant followed by LeaseRevoke of that lease.
pub struct LeaseWorker {
    lease: LeaseClient<Channel>,
    ttl: i64,
}

impl Worker for LeaseWorker {
    async fn op(&mut self) -> Result<(), String> {
        let g = self
            .lease
            .lease_grant(conn::req(LeaseGrantRequest {
                ttl: self.ttl,
                id: 0,
            }))
            .await
            .map_err(status_text)?
            .into_inner();
        if !g.error.is_empty() {
            return Err(format!("lease grant: {}", g.error));
        }
        self.lease
            .lease_revoke(conn::req(LeaseRevokeRequest { id: g.id }))
            .await
            .map(drop)
            .map_err(status_text)
    }
}

pub async fn lease(pool: &Pool, clients: usize, ttl: i64, p: &Params) -> Row {
    let workers = (0..clients)
        .map(|i| LeaseWorker {
            lease: LeaseClient::new(pool.get(i)),
            ttl,
        })
        .collect();
    let out = drive(workers, p.limits).await;
    let mut r = row(p, "lease", clients, pool.len(), out);
    r.detail = "one op = grant + revoke (2 writes)".into();
    r
}

// ---------------------------------------------------------------- watch

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Running,
    /// Writers are done after this many acknowledged puts.
    Draining(u64),
    Stop,
}

#[derive(Default)]
struct WatcherResult {
    latency: Latency,
    events: u64,
    last_event: Option<Instant>,
    error: Option<String>,
}

/// Writers stamp each value with the time since `base`.
struct StampedPut {
    kv: KvClient<Channel>,
    rng: Rng,
    prefix: String,
    key_space: u64,
    val_size: usize,
    base: Instant,
}

impl Worker for StampedPut {
    async fn op(&mut self) -> Result<(), String> {
        let k = self.rng.below(self.key_space);
        let stamp = self.base.elapsed().as_nanos() as u64;
        self.kv
            .put(conn::req(PutRequest {
                key: key(&self.prefix, k),
                value: stamped_value(self.val_size, stamp),
                ..Default::default()
            }))
            .await
            .map(drop)
            .map_err(status_text)
    }
}

/// `watchers` watch streams on one prefix, each over its own gRPC stream,
/// spread over the connections; `writers` clients put stamped values under
/// the prefix. Reports events delivered per second (all watchers) and the
/// delivery latency: from just before the put is sent to the event's
/// arrival, so it includes the commit.
pub async fn watch_fanout(pool: &Pool, watchers: usize, writers: usize, p: &Params) -> Row {
    let prefix = format!("{}watch/", p.key_prefix);
    let range_end = prefix_end(prefix.as_bytes());
    let base = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let mut readers = tokio::task::JoinSet::new();
    let mut setup_errors = 0u64;
    let mut first_error: Option<String> = None;

    for i in 0..watchers {
        let opened = open_watch(pool.get(i), &prefix, &range_end, p.limits.op_timeout).await;
        let (stream, req_tx) = match opened {
            Ok(s) => s,
            Err(e) => {
                setup_errors += 1;
                first_error.get_or_insert(format!("opening watcher {i}: {e:#}"));
                continue;
            }
        };
        let mut phase = phase_rx.clone();
        let prefix = prefix.clone().into_bytes();
        readers.spawn(async move {
            // Keep the request side open for the stream's lifetime.
            let _req_tx = req_tx;
            let mut stream = stream;
            let mut res = WatcherResult::default();
            loop {
                match *phase.borrow_and_update() {
                    Phase::Stop => break,
                    Phase::Draining(n) if res.events >= n => break,
                    _ => {}
                }
                tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(resp)) => {
                            let now = Instant::now();
                            if resp.canceled {
                                res.error = Some(format!("watch canceled: {}", resp.cancel_reason));
                                break;
                            }
                            for ev in resp.events {
                                let Some(kv) = ev.kv else { continue };
                                if !kv.key.starts_with(&prefix) {
                                    continue;
                                }
                                res.events += 1;
                                res.last_event = Some(now);
                                if let Some(stamp) = read_stamp(&kv.value) {
                                    let sent = base + Duration::from_nanos(stamp);
                                    res.latency.record(now.saturating_duration_since(sent));
                                }
                            }
                        }
                        Ok(None) => { res.error = Some("watch stream ended".into()); break; }
                        Err(s) => { res.error = Some(status_text(s)); break; }
                    },
                    c = phase.changed() => if c.is_err() { break },
                }
            }
            res
        });
    }

    let start = Instant::now();
    let put_workers = (0..writers)
        .map(|i| StampedPut {
            kv: KvClient::new(pool.get(i)),
            rng: Rng::for_client(i),
            prefix: prefix.clone(),
            key_space: p.key_space,
            val_size: p.val_size,
            base,
        })
        .collect();
    let puts = drive(put_workers, p.limits).await;
    let _ = phase_tx.send(Phase::Draining(puts.ops));
    // Let delivery catch up, for at most 5 s.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    let mut acc = Collected {
        latency: Latency::new(),
        events: 0,
        last_event: start,
        stream_errors: 0,
        missing: 0,
        expected: puts.ops,
        first_error,
    };
    loop {
        match tokio::time::timeout_at(drain_deadline.into(), readers.join_next()).await {
            Ok(Some(Ok(res))) => acc.add(res),
            Ok(Some(Err(e))) => acc.error(format!("watcher task failed: {e}")),
            Ok(None) => break,
            Err(_) => {
                // Stop the stragglers and count what they got.
                let _ = phase_tx.send(Phase::Stop);
                while let Ok(Some(r)) =
                    tokio::time::timeout(Duration::from_secs(2), readers.join_next()).await
                {
                    match r {
                        Ok(res) => acc.add(res),
                        Err(e) => acc.error(format!("watcher task failed: {e}")),
                    }
                }
                readers.abort_all();
                break;
            }
        }
    }
    let Collected {
        latency,
        events,
        last_event,
        stream_errors,
        missing,
        mut first_error,
        ..
    } = acc;
    let _ = phase_tx.send(Phase::Stop);
    if let Some(e) = puts.first_error.clone() {
        first_error.get_or_insert(format!("put: {e}"));
    }
    let elapsed = last_event
        .saturating_duration_since(start)
        .max(puts.elapsed);
    let mut r = Row::from_latency(
        &p.label,
        "watch",
        watchers,
        pool.len().min(watchers.max(writers)),
        events,
        elapsed.as_secs_f64(),
        &latency,
        setup_errors + stream_errors + puts.errors + missing,
        first_error,
    );
    r.detail = format!(
        "{} puts by {writers} writers ({:.0}/s, {} put errors), {missing} events missing; \
         ops = events delivered, latency = put sent -> event received",
        puts.ops,
        puts.ops as f64 / puts.elapsed.as_secs_f64().max(1e-9),
        puts.errors
    );
    r
}

/// The watchers' results, added up.
struct Collected {
    latency: Latency,
    events: u64,
    last_event: Instant,
    stream_errors: u64,
    missing: u64,
    /// Events each watcher should have seen (acknowledged puts).
    expected: u64,
    first_error: Option<String>,
}

impl Collected {
    fn add(&mut self, res: WatcherResult) {
        self.latency.merge(&res.latency);
        self.events += res.events;
        self.missing += self.expected.saturating_sub(res.events);
        if let Some(t) = res.last_event {
            self.last_event = self.last_event.max(t);
        }
        if let Some(e) = res.error {
            self.error(e);
        }
    }

    fn error(&mut self, e: String) {
        self.stream_errors += 1;
        self.first_error.get_or_insert(e);
    }
}

type WatchStream = tonic::Streaming<cairn_proto::etcdserverpb::WatchResponse>;

async fn open_watch(
    ch: Channel,
    prefix: &str,
    range_end: &[u8],
    timeout: Duration,
) -> anyhow::Result<(WatchStream, mpsc::Sender<WatchRequest>)> {
    let mut client = WatchClient::new(ch);
    let (tx, rx) = mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        })),
    })
    .await
    .context("queueing the create request")?;
    let resp = tokio::time::timeout(timeout, client.watch(conn::req(ReceiverStream::new(rx))))
        .await
        .context("watch call timed out")?
        .map_err(|s| anyhow::anyhow!(status_text(s)))?;
    let mut stream = resp.into_inner();
    let first = tokio::time::timeout(timeout, stream.message())
        .await
        .context("no created response in time")?
        .map_err(|s| anyhow::anyhow!(status_text(s)))?
        .context("watch stream ended before created")?;
    if !first.created || first.canceled {
        bail!("watch not created: {}", first.cancel_reason);
    }
    Ok((stream, tx))
}

// ---------------------------------------------------------------- failover

/// SIGKILL the leader (via `kill_cmd`) and time until the first write is
/// acknowledged by any surviving member. Probes every 50 ms on each
/// surviving endpoint, with overlapping attempts, so a request stuck on the
/// dead leader does not delay the measurement.
pub async fn failover(endpoints: &[String], kill_cmd: &str, p: &Params) -> anyhow::Result<Row> {
    let within = p.limits.duration.max(Duration::from_secs(20));
    let leader = conn::find_leader(endpoints, Duration::from_secs(10)).await?;
    let survivors: Vec<String> = endpoints
        .iter()
        .filter(|e| **e != leader.endpoint)
        .cloned()
        .collect();
    if survivors.is_empty() {
        bail!("failover needs at least two endpoints");
    }
    let mut clients = Vec::new();
    for ep in &survivors {
        let mut kv = KvClient::new(conn::connect(ep, p.limits.op_timeout).await?);
        // Warm the connection and check the cluster takes writes.
        kv.put(conn::req(PutRequest {
            key: format!("{}failover/warmup", p.key_prefix).into_bytes(),
            value: vec![b'v'; p.val_size],
            ..Default::default()
        }))
        .await
        .map_err(|s| anyhow::anyhow!("warm-up put via {ep}: {}", status_text(s)))?;
        clients.push(kv);
    }
    eprintln!(
        "failover: leader {:x} at {}; running kill command",
        leader.member_id, leader.endpoint
    );
    let port = conn::endpoint_port(&leader.endpoint)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(kill_cmd)
            .env("BENCH_LEADER_ENDPOINT", &leader.endpoint)
            .env("BENCH_LEADER_PORT", port)
            .env("BENCH_LEADER_ID", format!("{:x}", leader.member_id))
            .status(),
    )
    .await
    .context("kill command did not finish in 10 s")?
    .context("running the kill command")?;
    let killed_at = Instant::now();
    if !status.success() {
        bail!("kill command failed: {status}");
    }

    let attempt_timeout = Duration::from_secs(2);
    let deadline = killed_at + within;
    let mut inflight = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n = 0u64;
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let acked = loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() < deadline && !driver::stop_requested() {
                    for kv in &clients {
                        let mut kv = kv.clone();
                        n += 1;
                        let req = PutRequest {
                            key: format!("{}failover/{n:08}", p.key_prefix).into_bytes(),
                            value: vec![b'v'; p.val_size],
                            ..Default::default()
                        };
                        inflight.push(async move {
                            match tokio::time::timeout(attempt_timeout, kv.put(conn::req(req))).await {
                                Ok(Ok(_)) => Ok(Instant::now()),
                                Ok(Err(s)) => Err(status_text(s)),
                                Err(_) => Err("attempt timed out".to_string()),
                            }
                        });
                    }
                } else if inflight.is_empty() {
                    break None;
                }
            }
            Some(r) = inflight.next(), if !inflight.is_empty() => match r {
                Ok(at) => break Some(at),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            },
        }
    };
    let mut latency = Latency::new();
    let ops = match acked {
        Some(at) => {
            latency.record(at.saturating_duration_since(killed_at));
            1
        }
        None => {
            errors += 1;
            first_error.get_or_insert(format!("no write acknowledged within {within:?}"));
            0
        }
    };
    let mut r = Row::from_latency(
        &p.label,
        "failover",
        1,
        survivors.len(),
        ops,
        latency.max_ms() / 1000.0,
        &latency,
        errors,
        first_error,
    );
    r.ops_per_sec = 0.0;
    r.detail = format!(
        "killed leader {:x} ({}); SIGKILL -> first acknowledged put = {:.0} ms; \
         {errors} failed attempts meanwhile",
        leader.member_id,
        leader.endpoint,
        latency.max_ms()
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width() {
        assert_eq!(key("bench/", 42), b"bench/0000000042".to_vec());
        assert!(key("p/", 9) < key("p/", 10));
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"bench/watch/"), b"bench/watch0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn stamps_round_trip() {
        let v = stamped_value(256, 123_456_789);
        assert_eq!(v.len(), 256);
        assert_eq!(read_stamp(&v), Some(123_456_789));
        assert_eq!(stamped_value(2, 5).len(), 8);
        assert_eq!(read_stamp(b"short"), None);
    }
}
