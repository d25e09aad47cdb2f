//! Names under faults: real `cairn name register ... --hold` client
//! processes own names in a unique registry, and some are SIGKILLed.
//!
//! Each holder slot ([`holder_loop`]) repeatedly starts one `cairn`
//! process registering a seeded key of [`KEYS`] (slots contend for the
//! same keys), reads its `registered session=<hex>` line, holds the name
//! for 0.5–3 s while polling, SIGKILLs the process, and then watches the
//! name die. A process refused with "already registered by session X"
//! records that X owned the key then. At most one process per slot runs
//! at a time; every process is killed (SIGKILL, `kill_on_drop`) when its
//! task ends or is aborted, also on failure.
//!
//! Checks ([`check_names`]):
//!
//! * **one owner**: every `Lookup` returns at most one entry, and while
//!   the holder's session is known alive — a `LeaseTimeToLive` of the
//!   session (a session is a lease) answered `t` seconds at invoke time
//!   `i`, so it lives until at least `i + t - 1 s - EARLY_TOLERANCE` — a
//!   `Lookup` invoked after that answer and completed before that moment
//!   returns exactly the holder's entry;
//! * **vanishes within TTL, never reappears**: each holder becomes a
//!   [`LeaseRecord`] (key = the name, last refresh = the kill: the process
//!   cannot renew after it) checked by [`check_lease`] with the lease
//!   workload's tolerances: every observation (the holder's own lookups
//!   and TTL reads, and refusals naming its session) invoked after `kill +
//!   TTL + GONE_TOLERANCE` finds the name and the session gone. A renewal
//!   the process sent just before the kill may still be applied later (it
//!   may wait in a member's forward queue): when a TTL read after the kill
//!   shows more time left than `kill + TTL + TTL_TOLERANCE` allows, the
//!   kill counts as an ambiguous renewal (`AMBIGUOUS_GRACE`), as in the
//!   lease workload. (TTL restarts are caught by the lease workload.)

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::cairn::v1 as cpb;
use cairn_proto::etcdserverpb as pb;
use cpb::registry_client::RegistryClient;
use pb::lease_client::LeaseClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tonic::transport::Channel;

use crate::harness;
use crate::lease_check::{check_lease, LeaseRecord, Outages, Seen, EARLY_TOLERANCE, TTL_TOLERANCE};

/// The registry every holder registers in (unique mode).
pub const REGISTRY: &str = "chaos-names";
/// The names contended for.
pub const KEYS: [&str; 2] = ["svc-a", "svc-b"];
/// Session TTL of every holder.
pub const NAME_TTL_S: i64 = 3;
/// How long a holder process gets to print its registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one slot's holders.
const MAX_HOLDERS_PER_SLOT: u64 = 200;

/// What one holder process did and what was seen of its name (times: ns
/// since the run's origin).
#[derive(Debug, Clone, Default)]
pub struct NameRecord {
    pub slot: u64,
    pub key: String,
    pub value: String,
    pub session: i64,
    /// Process started .. `registered` line read.
    pub registered_ns: (u64, u64),
    /// When the SIGKILL was reaped, or the process was seen exited by
    /// itself (it cannot renew after either).
    pub stopped_ns: u64,
    /// The process exited by itself (session lost), with its stderr.
    pub exited_by_itself: Option<String>,
    /// `(invoke, complete, what)`; `KeyPresent` means "an entry owned by
    /// this session".
    pub seen: Vec<(u64, u64, Seen)>,
    /// Violations of "exactly one owner" found while polling.
    pub owner_violations: Vec<String>,
}

/// A registration refused because `owner` held `key`.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub key: String,
    pub owner: i64,
    pub invoke_ns: u64,
    pub complete_ns: u64,
}

/// Everything the holder slots recorded.
#[derive(Debug, Default)]
pub struct NameLog {
    pub holders: Vec<NameRecord>,
    pub refusals: Vec<Refusal>,
    /// Registration attempts that failed otherwise (timeouts, no leader).
    pub failed_attempts: usize,
    /// When the cluster could expire no session (see `lease_check`).
    pub outages: Outages,
}

/// Parameters of one holder slot.
pub struct NameCtx {
    pub slot: u64,
    pub bin: std::path::PathBuf,
    pub urls: Vec<String>,
    pub seed: u64,
    /// No new holder after this.
    pub deadline: Instant,
    pub origin: Instant,
    pub timeout: Duration,
    pub out: Arc<Mutex<NameLog>>,
}

impl NameCtx {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn log(&self) -> std::sync::MutexGuard<'_, NameLog> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `registered session=<hex>` → the session.
fn parse_registered(line: &str) -> Option<i64> {
    let hex = line.trim().strip_prefix("registered session=")?;
    u64::from_str_radix(hex, 16).ok().map(|v| v as i64)
}

/// "... already registered by session <hex> with value ..." → the owner.
fn parse_refusal(stderr: &str) -> Option<i64> {
    let rest = stderr.split("already registered by session ").nth(1)?;
    let hex = rest.split_whitespace().next()?;
    u64::from_str_radix(hex, 16).ok().map(|v| v as i64)
}

/// Runs holders one after the other until `deadline` (see module docs).
pub async fn holder_loop(ctx: NameCtx) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (0x4A3E5 + ctx.slot));
    let chans: Vec<Channel> = ctx
        .urls
        .iter()
        .map(|u| harness::channel(u, ctx.timeout))
        .collect();
    for n in 0..MAX_HOLDERS_PER_SLOT {
        if Instant::now() >= ctx.deadline {
            break;
        }
        let key = KEYS[rng.random_range(0..KEYS.len())].to_string();
        let value = format!("h{}-{n}", ctx.slot);
        let hold = Duration::from_millis(rng.random_range(500..3000));
        one_holder(&ctx, &chans, key, value, hold).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
}

async fn one_holder(ctx: &NameCtx, chans: &[Channel], key: String, value: String, hold: Duration) {
    let started = ctx.now_ns();
    let spawned = tokio::process::Command::new(&ctx.bin)
        .args(["--endpoints", &ctx.urls.join(",")])
        .args(crate::harness::cli_tls_args(&ctx.urls[0]))
        .args(["--dial-timeout", "500ms", "--command-timeout", "3s"])
        .args(["name", "register", REGISTRY, &key, &value])
        .args([
            "--ttl",
            &NAME_TTL_S.to_string(),
            "--hold",
            "--create",
            "unique",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = spawned else {
        ctx.log().failed_attempts += 1;
        return;
    };
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = tokio::time::timeout(REGISTER_TIMEOUT, stdout.next_line()).await;
    let session = match first {
        Ok(Ok(Some(line))) => parse_registered(&line),
        _ => None,
    };
    let Some(session) = session else {
        // Refused, failed or too slow: make sure it is gone, then see why.
        let _ = child.start_kill();
        let _ = child.wait().await;
        let stderr = read_stderr(&mut child).await;
        let complete = ctx.now_ns();
        let mut log = ctx.log();
        match parse_refusal(&stderr) {
            Some(owner) => log.refusals.push(Refusal {
                key,
                owner,
                invoke_ns: started,
                complete_ns: complete,
            }),
            None => log.failed_attempts += 1,
        }
        return;
    };
    let mut rec = NameRecord {
        slot: ctx.slot,
        key,
        value,
        session,
        registered_ns: (started, ctx.now_ns()),
        ..Default::default()
    };
    // Hold, polling.
    let hold_until = Instant::now() + hold;
    let mut member = ctx.slot as usize;
    while Instant::now() < hold_until {
        if let Ok(Some(_)) = child.try_wait() {
            rec.exited_by_itself = Some(read_stderr(&mut child).await);
            break;
        }
        member = (member + 1) % chans.len();
        poll(ctx, &chans[member], &mut rec, true).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if rec.exited_by_itself.is_none() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    rec.stopped_ns = ctx.now_ns();
    drop(child);
    // Watch it die: until 1 s past the latest moment it must be gone (an
    // outage under way or one that begins moves that moment).
    let outages = ctx.log().outages.clone();
    for _ in 0..200 {
        let gone_by = lease_record(&rec, &[], &outages).gone_by_ns();
        if ctx.now_ns() > gone_by.saturating_add(1_000_000_000) {
            break;
        }
        member = (member + 1) % chans.len();
        poll(ctx, &chans[member], &mut rec, false).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ctx.log().holders.push(rec);
}

async fn read_stderr(child: &mut tokio::process::Child) -> String {
    let mut out = Vec::new();
    if let Some(e) = child.stderr.take() {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            e.take(64 * 1024).read_to_end(&mut out),
        )
        .await;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `LeaseTimeToLive` of the session then one `Lookup` of the name,
/// recorded; while `holding`, checks the one-owner rule.
async fn poll(ctx: &NameCtx, chan: &Channel, rec: &mut NameRecord, holding: bool) {
    let mut lc = LeaseClient::new(chan.clone());
    let mut rc = RegistryClient::new(chan.clone());
    let ttl_invoke = ctx.now_ns();
    let ttl = match tokio::time::timeout(
        ctx.timeout,
        lc.lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: rec.session,
            keys: false,
        }),
    )
    .await
    {
        Ok(Ok(r)) => {
            let t = r.into_inner().ttl;
            rec.seen.push((ttl_invoke, ctx.now_ns(), Seen::Ttl(t)));
            Some(t)
        }
        _ => None,
    };
    let invoke = ctx.now_ns();
    let Ok(Ok(r)) = tokio::time::timeout(
        ctx.timeout,
        rc.lookup(cpb::LookupRequest {
            registry: REGISTRY.as_bytes().to_vec(),
            key: rec.key.as_bytes().to_vec(),
        }),
    )
    .await
    else {
        return;
    };
    let complete = ctx.now_ns();
    let entries = r.into_inner().entries;
    let mine = entries.iter().any(|e| e.owner == rec.session);
    rec.seen.push((invoke, complete, Seen::KeyPresent(mine)));
    let show = |es: &[cpb::Entry]| {
        es.iter()
            .map(|e| format!("{:x}={}", e.owner, String::from_utf8_lossy(&e.value)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if entries.len() > 1 {
        rec.owner_violations.push(format!(
            "t={:.3}s lookup of unique name {} returned {} entries: [{}]",
            invoke as f64 / 1e9,
            rec.key,
            entries.len(),
            show(&entries)
        ));
    }
    if let Some(t) = ttl.filter(|t| holding && *t > 0) {
        let alive_until = (ttl_invoke + (t as u64).saturating_sub(1) * 1_000_000_000)
            .saturating_sub(EARLY_TOLERANCE.as_nanos() as u64);
        let exact = entries.len() == 1
            && entries[0].owner == rec.session
            && entries[0].value == rec.value.as_bytes();
        if complete < alive_until && !exact {
            rec.owner_violations.push(format!(
                "t={:.3}s..{:.3}s lookup of {} returned [{}] while session {:x} (TTL {t}s left at t={:.3}s) held it",
                invoke as f64 / 1e9,
                complete as f64 / 1e9,
                rec.key,
                show(&entries),
                rec.session,
                ttl_invoke as f64 / 1e9
            ));
        }
    }
}

/// The holder as a lease record for [`check_lease`] (see module docs);
/// `refusals` naming its session count as observations of its name.
pub fn lease_record(rec: &NameRecord, refusals: &[Refusal], outages: &Outages) -> LeaseRecord {
    let ttl_ns = NAME_TTL_S as u64 * 1_000_000_000;
    let stop = rec.stopped_ns;
    let late_renewal = rec.seen.iter().any(|(i, _, s)| match s {
        Seen::Ttl(t) if *t > 0 && *i > stop => {
            i + (*t as u64) * 1_000_000_000 > stop + ttl_ns + TTL_TOLERANCE.as_nanos() as u64
        }
        _ => false,
    });
    let mut seen = rec.seen.clone();
    seen.extend(
        refusals
            .iter()
            .filter(|r| r.owner == rec.session && r.key == rec.key)
            .map(|r| (r.invoke_ns, r.complete_ns, Seen::KeyPresent(true))),
    );
    LeaseRecord {
        client: rec.slot,
        lease_id: rec.session,
        ttl_s: NAME_TTL_S,
        key: format!("{REGISTRY}/{}", rec.key),
        value: rec.value.clone(),
        // The session was created after the process started.
        granted_ns: rec.registered_ns,
        put_acknowledged_ns: Some(rec.registered_ns.1),
        // Renewed at unknown times, the last one before it stopped.
        refreshed_ns: vec![(rec.registered_ns.0, stop)],
        ambiguous_refresh_ns: if late_renewal { vec![stop] } else { vec![] },
        seen,
        outages: outages.clone(),
    }
}

/// Checks every holder (see module docs); `Ok((holders, observations))`.
pub fn check_names(log: &NameLog) -> Result<(usize, usize), String> {
    for rec in &log.holders {
        if let Some(v) = rec.owner_violations.first() {
            return Err(format!(
                "name {} (holder h{}, session {:x}): {v}",
                rec.key, rec.slot, rec.session
            ));
        }
        check_lease(&lease_record(rec, &log.refusals, &log.outages)).map_err(|e| {
            format!(
                "name {} of killed holder process (slot {}, session {:x}, stopped t={:.3}s{}): {e}",
                rec.key,
                rec.slot,
                rec.session,
                rec.stopped_ns as f64 / 1e9,
                match &rec.exited_by_itself {
                    Some(why) => format!(", exited by itself: {}", why.trim()),
                    None => String::new(),
                }
            )
        })?;
    }
    Ok((
        log.holders.len(),
        log.holders.iter().map(|r| r.seen.len()).sum(),
    ))
}

/// Entries left in [`REGISTRY`] (linearizable `List`, first page).
pub async fn names_left(urls: &[String], timeout: Duration) -> Result<Vec<String>, String> {
    let mut last = String::new();
    for u in urls.iter().cycle().take(urls.len() * 5) {
        let mut rc = RegistryClient::new(harness::channel(u, timeout));
        let req = cpb::ListRequest {
            registry: REGISTRY.as_bytes().to_vec(),
            ..Default::default()
        };
        match tokio::time::timeout(timeout, rc.list(req)).await {
            Ok(Ok(r)) => {
                return Ok(r
                    .into_inner()
                    .entries
                    .iter()
                    .map(|e| {
                        let owner = e.entry.as_ref().map(|e| e.owner).unwrap_or(0);
                        format!("{}@{owner:x}", String::from_utf8_lossy(&e.key))
                    })
                    .collect())
            }
            Ok(Err(e)) if e.code() == tonic::Code::NotFound => return Ok(Vec::new()),
            Ok(Err(e)) => last = e.message().to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("could not list the registry: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn holder() -> NameRecord {
        NameRecord {
            slot: 0,
            key: "svc-a".into(),
            value: "h0-1".into(),
            session: 0x77,
            registered_ns: (S, S + S / 10),
            stopped_ns: 3 * S,
            ..Default::default()
        }
    }

    #[test]
    fn output_lines_parse() {
        assert_eq!(parse_registered("registered session=1f\n"), Some(0x1f));
        assert_eq!(parse_registered("created"), None);
        assert_eq!(
            parse_refusal("Error: already registered by session 694d77aa with value h1-2"),
            Some(0x694d77aa)
        );
        assert_eq!(parse_refusal("Error: no leader"), None);
    }

    #[test]
    fn name_gone_in_time_passes_and_late_or_reappearing_fails() {
        let mut r = holder();
        // Killed at 3 s, TTL 3 s, tolerance 4 s: gone by 10 s.
        r.seen = vec![
            (2 * S, 2 * S + 1, Seen::KeyPresent(true)),
            (5 * S, 5 * S + 1, Seen::KeyPresent(true)),
            (7 * S, 7 * S + 1, Seen::KeyPresent(false)),
            (11 * S, 11 * S + 1, Seen::KeyPresent(false)),
            (11 * S, 11 * S + 1, Seen::Ttl(-1)),
        ];
        let log = NameLog {
            holders: vec![r.clone()],
            ..Default::default()
        };
        assert_eq!(check_names(&log), Ok((1, 5)));

        // Still there after 10 s.
        let mut late = r.clone();
        late.seen
            .push((10 * S + 1, 10 * S + 2, Seen::KeyPresent(true)));
        let e = check_names(&NameLog {
            holders: vec![late],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("still alive"), "{e}");

        // A refusal naming the dead session after 10 s: it reappeared.
        let e = check_names(&NameLog {
            holders: vec![r],
            refusals: vec![Refusal {
                key: "svc-a".into(),
                owner: 0x77,
                invoke_ns: 12 * S,
                complete_ns: 12 * S + 1,
            }],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("still alive"), "{e}");
    }

    #[test]
    fn a_late_renewal_seen_after_the_kill_extends_the_bound() {
        let mut r = holder();
        // At 6 s the session still has 3 s: a renewal sent before the kill
        // was applied late; bound = 3 + 5 (grace) + 3 + 4 = 15 s.
        r.seen = vec![
            (6 * S, 6 * S + 1, Seen::Ttl(3)),
            (11 * S, 11 * S + 1, Seen::KeyPresent(true)),
        ];
        let log = NameLog {
            holders: vec![r],
            ..Default::default()
        };
        assert!(check_names(&log).is_ok());
    }

    #[test]
    fn owner_violations_fail_the_check() {
        let mut r = holder();
        r.owner_violations
            .push("lookup of unique name svc-a returned 2 entries".into());
        let e = check_names(&NameLog {
            holders: vec![r],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("2 entries"), "{e}");
    }
}
