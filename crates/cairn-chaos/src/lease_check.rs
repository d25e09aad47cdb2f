//! Lease workload and its check.
//!
//! Each lease client ([`lease_loop`]) repeatedly: grants a lease of
//! [`LEASE_TTL_S`], puts one key on it (a value never written again),
//! keeps the lease alive for 0–2 s, then stops and watches it die:
//! `LeaseTimeToLive` and a linearizable `Range` of the key every 300 ms
//! until well past the latest moment the lease may expire. Every request
//! is recorded with invoke and completion times ([`LeaseRecord`]).
//!
//! [`check_lease`] then requires, with the bounded tolerances below:
//!
//! * **gone**: every read invoked after `last refresh + TTL +
//!   GONE_TOLERANCE` finds the key absent and the lease unknown (TTL -1),
//!   so the key never reappears either;
//! * **TTL keeps counting** (also across leader changes during the run):
//!   a `TimeToLive` answer `t > 0` invoked at time `i` satisfies
//!   `i + t <= last refresh + TTL + TTL_TOLERANCE` — a new leader that
//!   restarted the countdown would report too much time left.
//!
//! "Last refresh" is the latest completion of the grant or of an
//! acknowledged keep-alive; a keep-alive whose outcome is unknown counts
//! as a refresh at its invoke time + [`AMBIGUOUS_GRACE`].
//!
//! Only a leader expires leases. While a majority is down (the
//! `kill-majority` and `kill-all` faults, recorded in [`Outages`]) there
//! is none, so a lease whose "gone" bound falls in such an outage must be
//! gone [`GONE_TOLERANCE`] after it ends instead. Its TTL still counts
//! through the outage: the "TTL keeps counting" bound does not move.
//!
//! Names/sessions (issue 3) are leases underneath: a hook for them is
//! [`LeaseRecord`] + [`check_lease`] — a session client records its lease
//! and its owned name as `key`, and the same checks say the name vanishes
//! within TTL after the client is killed and never reappears.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::harness;

/// TTL of every lease granted by the workload.
pub const LEASE_TTL_S: i64 = 3;
/// How late expiry may be: the leader expires leases on its next tick
/// (500 ms) after the deadline in cluster time; after a fault a leader
/// must first be elected (election timeout 0.5–1 s, plus noticing that a
/// paused or cut-off leader is gone, about one more timeout), and a new
/// leader's clock may lag the old one by up to a tick; plus slack for a
/// loaded 2-core machine.
pub const GONE_TOLERANCE: Duration = Duration::from_secs(4);
/// How much remaining TTL may exceed the true remainder: `TimeToLive`
/// rounds up to whole seconds (up to 1 s) and a member's cluster-time
/// estimate lags the leader's by up to about a second under load.
pub const TTL_TOLERANCE: Duration = Duration::from_secs(2);
/// How much earlier than `refresh sent + TTL` a lease may expire: the
/// member that stamps a keep-alive uses its estimate of cluster time,
/// which may trail the leader's by replication delay.
pub const EARLY_TOLERANCE: Duration = Duration::from_secs(1);
/// A keep-alive that timed out may still be applied later (it may sit in
/// a forward queue until the server's own request timeout): counted as a
/// refresh this long after it was sent.
pub const AMBIGUOUS_GRACE: Duration = Duration::from_secs(5);

/// The spans in which the cluster had no majority up, as the fault
/// injector caused them: `(begin, end)` in ns since the run's origin, the
/// end `None` while one lasts. Shared by the injector and the lease and
/// name clients, which watch a lease die until past its bound.
#[derive(Debug, Clone, Default)]
pub struct Outages(Arc<Mutex<Vec<Span>>>);

/// `(begin, end)` of one outage; no end while it lasts.
type Span = (u64, Option<u64>);

impl Outages {
    fn spans(&self) -> std::sync::MutexGuard<'_, Vec<Span>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An outage begins at `at_ns`.
    pub fn begin(&self, at_ns: u64) {
        self.spans().push((at_ns, None));
    }

    /// The outage under way ends at `at_ns`.
    pub fn end(&self, at_ns: u64) {
        if let Some(last) = self.spans().last_mut() {
            last.1.get_or_insert(at_ns);
        }
    }

    /// `bound_ns`, moved to `after_ns` past the end of every outage that
    /// began by then (an outage under way moves it past any time).
    pub fn extend(&self, bound_ns: u64, after_ns: u64) -> u64 {
        let mut bound = bound_ns;
        // In the order they began: once one began after the bound, so did
        // every later one.
        for (begin, end) in self.spans().iter() {
            if *begin > bound {
                break;
            }
            bound = bound.max(end.map_or(u64::MAX, |e| e.saturating_add(after_ns)));
        }
        bound
    }
}

/// One observation of a lease after its keep-alives stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// `Range` of the key: present?
    KeyPresent(bool),
    /// `LeaseTimeToLive`: remaining TTL in seconds (-1: unknown lease).
    Ttl(i64),
}

/// What a lease client did with one lease (times: ns since the run's
/// origin).
#[derive(Debug, Clone, Default)]
pub struct LeaseRecord {
    pub client: u64,
    pub lease_id: i64,
    pub ttl_s: i64,
    pub key: String,
    pub value: String,
    /// Invoke and completion of the grant.
    pub granted_ns: (u64, u64),
    /// When the put of the key was acknowledged (`None`: unknown).
    pub put_acknowledged_ns: Option<u64>,
    /// Invoke and completion of acknowledged keep-alives (TTL > 0).
    pub refreshed_ns: Vec<(u64, u64)>,
    /// Invoke times of keep-alives with unknown outcome.
    pub ambiguous_refresh_ns: Vec<u64>,
    /// `(invoke_ns, complete_ns, what)`.
    pub seen: Vec<(u64, u64, Seen)>,
    /// When the cluster could expire no lease (see the module docs).
    pub outages: Outages,
}

impl LeaseRecord {
    /// The latest moment the lease may have been refreshed (see module
    /// docs).
    pub fn last_refresh_ns(&self) -> u64 {
        let acked = self.refreshed_ns.iter().map(|r| r.1).max().unwrap_or(0);
        let ambiguous = self
            .ambiguous_refresh_ns
            .iter()
            .map(|i| i + AMBIGUOUS_GRACE.as_nanos() as u64)
            .max()
            .unwrap_or(0);
        self.granted_ns.1.max(acked).max(ambiguous)
    }

    /// The lease must be alive until this, as far as the refreshes that
    /// were acknowledged before `at` say (sent + TTL - tolerance).
    pub fn must_live_until_ns(&self, at: u64) -> u64 {
        let ttl_ns = (self.ttl_s.max(0) as u64) * 1_000_000_000;
        std::iter::once(self.granted_ns)
            .chain(self.refreshed_ns.iter().copied())
            .filter(|(_, c)| *c <= at)
            .map(|(i, _)| (i + ttl_ns).saturating_sub(EARLY_TOLERANCE.as_nanos() as u64))
            .max()
            .unwrap_or(0)
    }

    /// After this, the key must be gone for good.
    pub fn gone_by_ns(&self) -> u64 {
        let tolerance_ns = GONE_TOLERANCE.as_nanos() as u64;
        let bound =
            self.last_refresh_ns() + (self.ttl_s.max(0) as u64) * 1_000_000_000 + tolerance_ns;
        self.outages.extend(bound, tolerance_ns)
    }
}

/// Checks one lease record (see the module docs).
pub fn check_lease(r: &LeaseRecord) -> Result<(), String> {
    check_lease_inner(r).map_err(|e| format!("{e}\n{}", r.timeline()))
}

impl LeaseRecord {
    /// Everything recorded about the lease, one line per event.
    pub fn timeline(&self) -> String {
        let secs = |ns: u64| ns as f64 / 1e9;
        let mut lines = vec![format!(
            "  t={:.3}s granted (TTL {}s), put {}",
            secs(self.granted_ns.1),
            self.ttl_s,
            match self.put_acknowledged_ns {
                Some(t) => format!("acknowledged t={:.3}s", secs(t)),
                None => "unknown".to_string(),
            }
        )];
        lines.extend(self.refreshed_ns.iter().map(|(i, c)| {
            format!(
                "  t={:.3}s..{:.3}s keep-alive acknowledged",
                secs(*i),
                secs(*c)
            )
        }));
        lines.extend(
            self.ambiguous_refresh_ns
                .iter()
                .map(|t| format!("  t={:.3}s keep-alive sent, outcome unknown", secs(*t))),
        );
        lines.extend(
            self.seen
                .iter()
                .map(|(i, c, s)| format!("  t={:.3}s..{:.3}s {s:?}", secs(*i), secs(*c))),
        );
        lines.join("\n")
    }
}

fn check_lease_inner(r: &LeaseRecord) -> Result<(), String> {
    let who = format!(
        "lease {:x} (client {}, key {}, TTL {}s)",
        r.lease_id, r.client, r.key, r.ttl_s
    );
    let secs = |ns: u64| ns as f64 / 1e9;
    let last = r.last_refresh_ns();
    let gone_by = r.gone_by_ns();
    let ttl_bound =
        last + (r.ttl_s.max(0) as u64) * 1_000_000_000 + TTL_TOLERANCE.as_nanos() as u64;
    for (invoke, complete, seen) in &r.seen {
        match seen {
            Seen::KeyPresent(true) | Seen::Ttl(1..) if *invoke > gone_by => {
                return Err(format!(
                    "{who}: still alive at t={:.3}s ({seen:?}, answered t={:.3}s), last refresh t={:.3}s, must be gone by t={:.3}s",
                    secs(*invoke),
                    secs(*complete),
                    secs(last),
                    secs(gone_by)
                ));
            }
            Seen::Ttl(t) if *t > 0 => {
                let end = invoke + (*t as u64) * 1_000_000_000;
                if end > ttl_bound {
                    return Err(format!(
                        "{who}: TTL did not keep counting: {t}s left at t={:.3}s, but last refresh was t={:.3}s (bound t={:.3}s incl. {TTL_TOLERANCE:?} tolerance)",
                        secs(*invoke),
                        secs(last),
                        secs(ttl_bound)
                    ));
                }
            }
            _ => {}
        }
        let gone = match seen {
            Seen::Ttl(t) => *t <= 0,
            Seen::KeyPresent(p) => !p && r.put_acknowledged_ns.is_some_and(|t| t < *invoke),
        };
        let lives_until = r.must_live_until_ns(*complete);
        if gone && *complete < lives_until {
            return Err(format!(
                "{who}: expired early: {seen:?} at t={:.3}s..{:.3}s, but an acknowledged refresh keeps it alive until t={:.3}s (incl. {EARLY_TOLERANCE:?} tolerance)",
                secs(*invoke),
                secs(*complete),
                secs(lives_until)
            ));
        }
    }
    Ok(())
}

/// Parameters of one lease client.
pub struct LeaseCtx {
    pub id: u64,
    pub urls: Vec<String>,
    pub prefix: String,
    pub seed: u64,
    /// No new lease after this.
    pub deadline: Instant,
    pub origin: Instant,
    pub timeout: Duration,
    pub out: Arc<Mutex<Vec<LeaseRecord>>>,
    pub outages: Outages,
}

impl LeaseCtx {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// One keep-alive round trip on a fresh stream: `Ok(ttl)` or `Err` if the
/// outcome is unknown.
async fn keep_alive(lc: &mut LeaseClient<Channel>, id: i64) -> Result<i64, ()> {
    let req = pb::LeaseKeepAliveRequest { id };
    let stream = tokio_stream::iter(vec![req]);
    let mut resp = lc
        .lease_keep_alive(stream)
        .await
        .map_err(|_| ())?
        .into_inner();
    match resp.message().await {
        Ok(Some(r)) => Ok(r.ttl),
        _ => Err(()),
    }
}

/// Grants, attaches, keeps alive, then observes leases until `deadline`;
/// appends every record to `ctx.out`.
pub async fn lease_loop(ctx: LeaseCtx) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (0x1EA5E + ctx.id));
    let chans: Vec<Channel> = ctx
        .urls
        .iter()
        .map(|u| harness::channel(u, ctx.timeout))
        .collect();
    let mut member = ctx.id as usize % chans.len();
    for n in 0..1_000u64 {
        if Instant::now() >= ctx.deadline {
            break;
        }
        member = (member + 1) % chans.len();
        let mut lc = LeaseClient::new(chans[member].clone());
        let mut kv = KvClient::new(chans[member].clone());
        let grant_invoke = ctx.now_ns();
        let granted = tokio::time::timeout(
            ctx.timeout,
            lc.lease_grant(pb::LeaseGrantRequest {
                ttl: LEASE_TTL_S,
                id: 0,
            }),
        )
        .await;
        let Ok(Ok(g)) = granted else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let g = g.into_inner();
        let mut rec = LeaseRecord {
            client: ctx.id,
            lease_id: g.id,
            ttl_s: g.ttl,
            key: format!("{}c{}-{n}", ctx.prefix, ctx.id),
            value: format!("L{}-{n}", ctx.id),
            granted_ns: (grant_invoke, ctx.now_ns()),
            outages: ctx.outages.clone(),
            ..Default::default()
        };
        let put = tokio::time::timeout(
            ctx.timeout,
            kv.put(pb::PutRequest {
                key: rec.key.clone().into_bytes(),
                value: rec.value.clone().into_bytes(),
                lease: g.id,
                ..Default::default()
            }),
        )
        .await;
        if let Ok(Ok(_)) = put {
            rec.put_acknowledged_ns = Some(ctx.now_ns());
        }
        // Keep alive for a while.
        let keep_until = Instant::now() + Duration::from_millis(rng.random_range(0..2000));
        while Instant::now() < keep_until {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let invoke = ctx.now_ns();
            match tokio::time::timeout(ctx.timeout, keep_alive(&mut lc, g.id)).await {
                Ok(Ok(ttl)) if ttl > 0 => {
                    rec.refreshed_ns.push((invoke, ctx.now_ns()));
                    // The key must be there while the lease is kept alive.
                    read_key(&ctx, &mut kv, &mut rec).await;
                }
                Ok(Ok(_)) => {
                    // Unknown lease: it expired (or was never granted).
                    rec.seen.push((invoke, ctx.now_ns(), Seen::Ttl(-1)));
                    break;
                }
                _ => {
                    rec.ambiguous_refresh_ns.push(invoke);
                    member = (member + 1) % chans.len();
                    lc = LeaseClient::new(chans[member].clone());
                }
            }
        }
        observe(&ctx, &chans, &mut rec).await;
        ctx.out.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
    }
}

/// One linearizable read of the key, recorded (failures are dropped).
async fn read_key(ctx: &LeaseCtx, kv: &mut KvClient<Channel>, rec: &mut LeaseRecord) {
    let invoke = ctx.now_ns();
    if let Ok(Ok(r)) = tokio::time::timeout(
        ctx.timeout,
        kv.range(pb::RangeRequest {
            key: rec.key.clone().into_bytes(),
            ..Default::default()
        }),
    )
    .await
    {
        let present = !r.into_inner().kvs.is_empty();
        rec.seen
            .push((invoke, ctx.now_ns(), Seen::KeyPresent(present)));
    }
}

/// Reads the lease and its key every 300 ms until 1 s past the moment it
/// must be gone (bounded).
async fn observe(ctx: &LeaseCtx, chans: &[Channel], rec: &mut LeaseRecord) {
    let mut member = 0usize;
    for _ in 0..200 {
        let now = ctx.now_ns();
        if now > rec.gone_by_ns().saturating_add(1_000_000_000) {
            break;
        }
        member = (member + 1) % chans.len();
        let mut lc = LeaseClient::new(chans[member].clone());
        let mut kv = KvClient::new(chans[member].clone());
        let invoke = ctx.now_ns();
        if let Ok(Ok(r)) = tokio::time::timeout(
            ctx.timeout,
            lc.lease_time_to_live(pb::LeaseTimeToLiveRequest {
                id: rec.lease_id,
                keys: false,
            }),
        )
        .await
        {
            rec.seen
                .push((invoke, ctx.now_ns(), Seen::Ttl(r.into_inner().ttl)));
        }
        read_key(ctx, &mut kv, rec).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn record() -> LeaseRecord {
        LeaseRecord {
            client: 1,
            lease_id: 0xabc,
            ttl_s: 3,
            key: "chaos/lease/c1-0".into(),
            value: "L1-0".into(),
            granted_ns: (S, S),
            put_acknowledged_ns: Some(S),
            refreshed_ns: vec![(2 * S, 2 * S)],
            ambiguous_refresh_ns: vec![],
            seen: vec![],
            outages: Outages::default(),
        }
    }

    #[test]
    fn an_outage_moves_the_gone_bound_only_if_it_began_by_then() {
        let o = Outages::default();
        assert_eq!(o.extend(9 * S, 4 * S), 9 * S, "none");
        o.begin(10 * S);
        o.end(11 * S);
        assert_eq!(o.extend(9 * S, 4 * S), 9 * S, "began after the bound");
        assert_eq!(o.extend(10 * S, 4 * S), 15 * S, "began at the bound");
        // A second outage that began before the moved bound moves it on.
        o.begin(14 * S);
        o.end(16 * S);
        assert_eq!(o.extend(10 * S, 4 * S), 20 * S);
        // One under way holds it off for good.
        o.begin(30 * S);
        assert_eq!(o.extend(30 * S, 4 * S), u64::MAX);
        assert_eq!(o.extend(29 * S, 0), 29 * S);
    }

    #[test]
    fn a_lease_may_outlive_its_bound_while_no_majority_is_up() {
        let mut r = record();
        // Gone by 9 s without outages; the majority is down 8..12 s.
        r.outages.begin(8 * S);
        r.outages.end(12 * S);
        r.seen = vec![(10 * S, 10 * S + 1, Seen::KeyPresent(true))];
        assert_eq!(check_lease(&r), Ok(()));
        // 4 s after the outage it must be gone.
        r.seen = vec![(16 * S + 1, 16 * S + 2, Seen::KeyPresent(true))];
        let e = check_lease(&r).unwrap_err();
        assert!(e.contains("must be gone by t=16.000s"), "{e}");
        // Its TTL still counts through the outage.
        r.seen = vec![(10 * S, 10 * S + 1, Seen::Ttl(3))];
        let e = check_lease(&r).unwrap_err();
        assert!(e.contains("did not keep counting"), "{e}");
    }

    #[test]
    fn lease_that_counts_down_and_expires_in_time_passes() {
        let mut r = record();
        // refreshed at 2 s, TTL 3 s: 2 s left at 3 s, gone by 2+3+4 = 9 s.
        r.seen = vec![
            (3 * S, 3 * S + 1, Seen::Ttl(2)),
            (3 * S, 3 * S + 1, Seen::KeyPresent(true)),
            (6 * S, 6 * S + 1, Seen::KeyPresent(true)),
            (9 * S + 1, 10 * S, Seen::KeyPresent(false)),
            (10 * S, 10 * S, Seen::Ttl(-1)),
        ];
        assert_eq!(check_lease(&r), Ok(()));
    }

    #[test]
    fn key_alive_after_expiry_is_caught() {
        let mut r = record();
        r.seen = vec![(9 * S + 1, 9 * S + 2, Seen::KeyPresent(true))];
        let e = check_lease(&r).unwrap_err();
        assert!(e.contains("still alive"), "{e}");
        r.seen = vec![(9 * S + 1, 9 * S + 2, Seen::Ttl(1))];
        assert!(check_lease(&r).is_err());
    }

    #[test]
    fn ttl_reset_by_a_new_leader_is_caught() {
        let mut r = record();
        // Refreshed at 2 s; at 5 s a full 3 s is reported again: ends at 8 s
        // > 2 + 3 + 2 = 7 s.
        r.seen = vec![(5 * S, 5 * S + 1, Seen::Ttl(3))];
        let e = check_lease(&r).unwrap_err();
        assert!(e.contains("did not keep counting"), "{e}");
    }

    #[test]
    fn early_expiry_is_caught() {
        let mut r = record();
        // Refresh sent at 2 s: alive until at least 2 + 3 - 1 = 4 s.
        r.seen = vec![(3 * S, 3 * S + 1, Seen::KeyPresent(false))];
        let e = check_lease(&r).unwrap_err();
        assert!(e.contains("expired early"), "{e}");
        r.seen = vec![(3 * S, 3 * S + 1, Seen::Ttl(-1))];
        assert!(check_lease(&r).is_err());
        // After that it may be gone.
        r.seen = vec![(4 * S, 4 * S + 1, Seen::Ttl(-1))];
        assert_eq!(check_lease(&r), Ok(()));
        // An absent key before the put was acknowledged proves nothing.
        r.put_acknowledged_ns = None;
        r.seen = vec![(3 * S, 3 * S + 1, Seen::KeyPresent(false))];
        assert_eq!(check_lease(&r), Ok(()));
    }

    #[test]
    fn ambiguous_keep_alive_extends_the_bounds() {
        let mut r = record();
        r.ambiguous_refresh_ns = vec![3 * S];
        assert_eq!(
            r.last_refresh_ns(),
            3 * S + AMBIGUOUS_GRACE.as_nanos() as u64
        );
        r.seen = vec![(9 * S + 1, 9 * S + 2, Seen::KeyPresent(true))];
        assert_eq!(check_lease(&r), Ok(()));
    }
}
