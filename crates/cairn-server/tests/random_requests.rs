//! Seeded random etcd v3 requests (well-formed, malformed and out of
//! range) against a real 3-member cluster, from several client tasks at
//! once ([`DEFAULT_CLIENTS`], or `CAIRN_FUZZ_CLIENTS`); each client spreads
//! its requests round-robin over the members, so followers forward, the
//! proposer batches writes of several clients, and hostile and
//! well-formed requests are applied interleaved.
//!
//! What it proves:
//! * every call answers, and answers either Ok or with an error code that
//!   tells the client what was wrong with its request or with the state it
//!   asked about ([`etcd_fuzz::ACTIONABLE`]); never `Internal`, `Unknown`,
//!   a dropped stream or a panic in a member's task;
//! * hostile input does not make the deterministic state machine diverge:
//!   afterwards the members are healthy, at one revision, with one
//!   `HashKV` there;
//! * a small model holds exactly, though clients write at once: each
//!   client writes only under its own prefix `c{client}/` (its deletes'
//!   range ends are cut back to it, it revokes only its own leases), so a
//!   put of its is visible to the next linearizable read of its key on
//!   another member, a key it deleted is gone, and after the load its keys
//!   hold what it last put or deleted there; a count-only range counts
//!   what a plain range returns (both at the revision the plain one was
//!   read at: these reads range over other clients' keys and the whole
//!   keyspace too, while they are written). Requests that reach past the
//!   prefix without writing there (reads, watches, txn compares), and
//!   compactions (which change no key's current value) are judged by
//!   their answer's code only. A NOSPACE alarm one client raises refuses
//!   the others' writes until it clears it: ResourceExhausted then.
//!
//! Why: the edge checks (services/data/convert.rs) and the store's
//! apply-time checks are written by hand after etcd's rules. An input
//! nobody thought of must end in a refusal the client can act on, not in a
//! panic in apply that stops a member, nor in an `Internal` answer. The
//! test was sequential before, one request at a time; concurrent clients
//! bring forwarding, proposal batching and applies of many clients'
//! requests together, where a sequential run never goes.
//!
//! Knobs: `CAIRN_FUZZ_SEED` (else [`DEFAULT_SEED`]), `CAIRN_FUZZ_CLIENTS`
//! (else [`DEFAULT_CLIENTS`]), `CAIRN_FUZZ_REQUESTS` (requests in all,
//! split among the clients; else [`DEFAULT_REQUESTS`]), cut short after
//! `CAIRN_FUZZ_SECS` seconds (else [`RUN_BUDGET_SECS`]); longer campaigns
//! raise both. Each client's requests are a function of the seed, its
//! number and the answers it gets (lease IDs, revisions, refusals); how
//! the clients' requests interleave on the cluster depends on timing, and
//! so do some answers. A failure prints the seed, the client count, the
//! client, the request's index and the request; a rerun with the same
//! seed and client count makes the same requests as far as the answers
//! agree, but not necessarily in the same interleaving, so a failure that
//! depends on one may need several reruns (or the failing request alone,
//! or `CAIRN_FUZZ_CLIENTS=1`, which runs one request at a time).

mod etcd_fuzz;
mod support;

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::*;
use etcd_fuzz::{record_panics, Fuzzer, Shared, CALL_TIMEOUT};
use support::*;
use tokio::time::Instant;
use tonic::{Code, Status};

const DEFAULT_SEED: u64 = 0x00c0_ffee;
/// Requests in all, over every client.
const DEFAULT_REQUESTS: usize = 3_000;
/// Client tasks sending at once.
const DEFAULT_CLIENTS: usize = 4;
/// Requests stop after this long (or `CAIRN_FUZZ_SECS`) even if fewer
/// were made: the test must stay well under a minute in a debug build on
/// 2 cores.
const RUN_BUDGET_SECS: u64 = 35;
const ELECTION: Duration = Duration::from_secs(10);
/// For the members to agree on one revision after the last request.
const SETTLE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_requests_get_actionable_answers_and_members_stay_equal() {
    record_panics();
    let seed = env_number("CAIRN_FUZZ_SEED", DEFAULT_SEED);
    let requests = env_number("CAIRN_FUZZ_REQUESTS", DEFAULT_REQUESTS);
    let clients = env_number("CAIRN_FUZZ_CLIENTS", DEFAULT_CLIENTS);
    assert!(clients >= 1, "CAIRN_FUZZ_CLIENTS must be at least 1");
    let budget = Duration::from_secs(env_number("CAIRN_FUZZ_SECS", RUN_BUDGET_SECS));
    let started = Instant::now();
    let c = Cluster::start(3, |_| {}).await;
    c.wait_leader(ELECTION).await;
    let shared = Arc::new(Shared::new(&c, seed, clients, budget).await);

    // Request `i` of all is client `i % clients`'s.
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let share = requests / clients + usize::from(client < requests % clients);
            tokio::spawn(Fuzzer::new(shared.clone(), client).run(share))
        })
        .collect();
    let (mut fuzzers, mut made, mut cut_short, mut crashed) = (Vec::new(), 0, false, None);
    for task in tasks {
        match task.await {
            Ok(fuzzer) => {
                made += fuzzer.requests;
                cut_short |= fuzzer.cut_short;
                fuzzers.push(fuzzer);
            }
            Err(e) if e.is_panic() => crashed = crashed.or(Some(e.into_panic())),
            Err(e) => panic!("seed {seed}: a client task was cancelled: {e}"),
        }
    }
    // The first client failure (others may have failed after it, for the
    // same cause).
    if let Some(failure) = shared.failure() {
        panic!("{failure}");
    }
    if let Some(panic) = crashed {
        std::panic::resume_unwind(panic);
    }
    if cut_short {
        eprintln!("seed {seed}: time budget spent after {made} of {requests} requests");
    }
    let load_time = started.elapsed();
    let mut known = 0;
    for fuzzer in &mut fuzzers {
        known += fuzzer.check_own_keys().await;
    }

    let finals = Finals { shared: &shared };
    let revision = finals.settle_cluster().await;
    finals.hashes_agree(revision).await;
    let panics = member_panics();
    assert!(
        panics.is_empty(),
        "seed {seed}: members panicked: {panics:#?}"
    );
    eprintln!(
        "seed {seed}: {made} requests from {clients} clients in {load_time:?}, {known} keys as \
         their writers left them, members agree at revision {revision}, {:?} in all; answers: \
         {:#?}",
        started.elapsed(),
        shared.tally()
    );
    c.shutdown().await;
}

/// The checks after the load, on every member.
struct Finals<'a> {
    shared: &'a Shared,
}

impl Finals<'_> {
    fn fail(&self, request: &dyn std::fmt::Debug, what: impl std::fmt::Display) -> ! {
        panic!(
            "seed {seed}, after the run: {what}\n  request: {request}\n  member panics: \
             {panics:#?}\n  {reproduce}",
            seed = self.shared.seed,
            request = describe(request),
            panics = member_panics(),
            reproduce = self.shared.reproduce(),
        )
    }

    /// Revokes every lease left, so no expiry moves the revision on, and
    /// returns the revision every member then reaches, each healthy and
    /// following one leader.
    async fn settle_cluster(&self) -> i64 {
        let mut lease = self.shared.members[0].lease.clone();
        let request = LeaseLeasesRequest {};
        let leases = match lease.lease_leases(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => self.fail(&request, format_args!("list leases: {s:?}")),
        };
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
            let key = |s: &Result<StatusResponse, Status>| {
                s.as_ref()
                    .ok()
                    .filter(|s| s.errors.is_empty() && s.leader != 0)
                    .map(|s| (s.leader, s.header.map(|h| h.revision)))
            };
            let first = key(&statuses[0]);
            if first.is_some() && statuses.iter().all(|s| key(s) == first) {
                return first.and_then(|(_, r)| r).unwrap_or(0);
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
        for m in &self.shared.members {
            let mut maintenance = m.maintenance.clone();
            let answer = tokio::time::timeout(CALL_TIMEOUT, maintenance.status(StatusRequest {}))
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("no status answer")));
            out.push(answer.map(tonic::Response::into_inner));
        }
        out
    }

    /// `HashKV` at `revision` answers the same on every member.
    async fn hashes_agree(&self, revision: i64) {
        let request = HashKvRequest { revision };
        let mut hashes = Vec::new();
        for m in &self.shared.members {
            let mut maintenance = m.maintenance.clone();
            match tokio::time::timeout(CALL_TIMEOUT, maintenance.hash_kv(request)).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    hashes.push((r.hash, r.compact_revision, r.hash_revision));
                }
                Ok(Err(s)) => self.fail(&request, format_args!("hash: {s:?}")),
                Err(_) => self.fail(&request, format_args!("no answer within {CALL_TIMEOUT:?}")),
            }
        }
        if hashes.iter().any(|h| *h != hashes[0]) || hashes[0].2 != revision {
            self.fail(
                &request,
                format_args!("(hash, compact revision, revision) per member: {hashes:?}"),
            );
        }
    }
}
