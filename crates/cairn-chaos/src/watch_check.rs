//! Watch workload and its check.
//!
//! Watchers ([`watcher_loop`]) watch the whole workload prefix from a known
//! start revision. Some keep one stream for as long as it lives; the others
//! ("reconnecting") drop their stream every 0.5–3 s and resume, like an
//! etcd client does, from the last revision they saw + 1 — on another
//! member. Any stream error also makes a watcher resume elsewhere. After
//! the run, each watcher continues until it has seen the final revision.
//!
//! The reference is the revision log read independently of the watch
//! path ([`revision_log`]): the prefix is read with `Range{revision: r}`
//! at every revision r, and consecutive states are diffed. [`check_watcher`] then
//! requires every watcher's events to be exactly the reference's events
//! from its start revision to the final one: in revision order, no gap,
//! no duplicate, same values. [`check_against_writes`] ties the reference
//! to the client history: every acknowledged write shows up in it, and
//! every value in it was written by some client.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use pb::kv_client::KvClient;
use pb::watch_client::WatchClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness;
use crate::{Call, History, Ret};

/// One committed change: a put of `value`, or a delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub revision: i64,
    pub key: String,
    pub value: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "@{} put {}={v}", self.revision, self.key),
            None => write!(f, "@{} delete {}", self.revision, self.key),
        }
    }
}

/// What one watcher saw.
#[derive(Debug, Clone, Default)]
pub struct WatcherLog {
    pub id: u64,
    /// Resumes from a fresh stream (planned or after an error).
    pub reconnecting: bool,
    pub start_revision: i64,
    /// Every event, in arrival order.
    pub events: Vec<Change>,
    /// Streams opened (1 + resumes).
    pub streams: usize,
    /// Protocol problems that are failures by themselves (a cancel with
    /// a compact revision, an event older than asked for...).
    pub violations: Vec<String>,
    /// The next revision it would ask for (how far it got).
    pub next_revision: i64,
}

/// Shared between the campaign and its watchers.
#[derive(Debug, Default)]
pub struct WatchControl {
    /// 0 while the run goes on; then the final revision every watcher must
    /// reach before it stops.
    pub final_revision: AtomicI64,
    /// Stream errors (all watchers), for the report.
    pub stream_errors: AtomicU64,
}

/// The end of the key range `[prefix, end)`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn to_change(ev: &mvccpb::Event) -> Option<Change> {
    let kv = ev.kv.as_ref()?;
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    let value = if ev.r#type == mvccpb::event::EventType::Delete as i32 {
        None
    } else {
        Some(String::from_utf8_lossy(&kv.value).into_owned())
    };
    Some(Change {
        revision: kv.mod_revision,
        key,
        value,
    })
}

/// Parameters of one watcher.
pub struct WatcherCtx {
    pub id: u64,
    pub urls: Vec<String>,
    pub prefix: String,
    pub start_revision: i64,
    pub reconnecting: bool,
    pub seed: u64,
    pub control: Arc<WatchControl>,
    /// Hard stop, whatever happens.
    pub deadline: Instant,
    pub out: Arc<Mutex<Vec<WatcherLog>>>,
}

/// Runs one watcher until it has seen the final revision (or the hard
/// deadline), then appends its log to `ctx.out`.
pub async fn watcher_loop(ctx: WatcherCtx) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (0xBEEF + ctx.id));
    let mut log = WatcherLog {
        id: ctx.id,
        reconnecting: ctx.reconnecting,
        start_revision: ctx.start_revision,
        next_revision: ctx.start_revision,
        ..Default::default()
    };
    let mut member = ctx.id as usize % ctx.urls.len();
    let done = |next: i64| {
        let f = ctx.control.final_revision.load(Ordering::Acquire);
        f > 0 && next > f
    };
    while !done(log.next_revision) && Instant::now() < ctx.deadline {
        let segment_end = if ctx.reconnecting {
            Instant::now() + Duration::from_millis(rng.random_range(500..3000))
        } else {
            ctx.deadline
        };
        let url = ctx.urls[member].clone();
        log.streams += 1;
        let ok = one_stream(&ctx, &url, &mut log, segment_end, &done).await;
        if !ok {
            ctx.control.stream_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
        }
        member = (member + 1) % ctx.urls.len();
    }
    ctx.out.lock().unwrap_or_else(|e| e.into_inner()).push(log);
}

/// One watch stream from `log.next_revision`, until `segment_end`, the
/// final revision, or an error (returns false on error).
async fn one_stream(
    ctx: &WatcherCtx,
    url: &str,
    log: &mut WatcherLog,
    segment_end: Instant,
    done: &impl Fn(i64) -> bool,
) -> bool {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::WatchRequest>(2);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: ctx.prefix.as_bytes().to_vec(),
                range_end: prefix_end(&ctx.prefix),
                start_revision: log.next_revision,
                ..Default::default()
            },
        )),
    };
    if tx.send(create).await.is_err() {
        return false;
    }
    // No per-request timeout on the channel: the stream is long-lived.
    let channel = crate::harness::stream_channel(url);
    let mut client = WatchClient::new(channel);
    let opened = tokio::time::timeout(
        Duration::from_secs(2),
        client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    let mut stream = match opened {
        Ok(Ok(r)) => r.into_inner(),
        _ => return false,
    };
    loop {
        if done(log.next_revision) {
            return true;
        }
        let now = Instant::now();
        if now >= segment_end || now >= ctx.deadline {
            return true;
        }
        // Wake up regularly to notice the final revision being set.
        let wait = (segment_end - now).min(Duration::from_millis(200));
        let msg = match tokio::time::timeout(wait, stream.message()).await {
            Err(_) => continue,
            Ok(Ok(Some(m))) => m,
            Ok(_) => return false,
        };
        if msg.canceled {
            if msg.compact_revision > 0 {
                log.violations.push(format!(
                    "watch from {} canceled: compacted at {}",
                    log.next_revision, msg.compact_revision
                ));
            }
            return false;
        }
        let mut max_rev = 0;
        for ev in &msg.events {
            let Some(c) = to_change(ev) else {
                log.violations.push("event without kv".into());
                continue;
            };
            if c.revision < log.next_revision {
                log.violations.push(format!(
                    "stream from {} delivered an older event {c}",
                    log.next_revision
                ));
            }
            max_rev = max_rev.max(c.revision);
            log.events.push(c);
        }
        // Resume after the last revision seen (etcd clients do the same;
        // a revision's events come in one response).
        if max_rev >= log.next_revision {
            log.next_revision = max_rev + 1;
        }
    }
}

/// Head revision (linearizable) through any of `urls`.
pub async fn current_revision(urls: &[String], timeout: Duration) -> Result<i64, String> {
    let mut last = String::new();
    for _ in 0..20 {
        for u in urls {
            let mut kv = KvClient::new(harness::channel(u, timeout));
            match tokio::time::timeout(
                timeout,
                kv.range(pb::RangeRequest {
                    key: b"\0".to_vec(),
                    count_only: true,
                    ..Default::default()
                }),
            )
            .await
            {
                Ok(Ok(r)) => return Ok(r.into_inner().header.map(|h| h.revision).unwrap_or(0)),
                Ok(Err(e)) => last = e.message().to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("no current revision: {last}"))
}

/// The changes under `prefix` at every revision in `1..=last`, read with
/// serializable `Range{revision}` from `url` (whose store has applied
/// `last`), 16 requests in flight, bounded by `budget`.
pub async fn revision_log(
    url: &str,
    prefix: &str,
    last: i64,
    budget: Duration,
) -> Result<Vec<Change>, String> {
    let deadline = Instant::now() + budget;
    let kv = KvClient::new(harness::channel(url, Duration::from_secs(5)));
    let mut states: BTreeMap<i64, BTreeMap<String, (i64, String)>> = BTreeMap::new();
    let mut next = 1i64;
    while next <= last {
        if Instant::now() > deadline {
            return Err(format!(
                "revision log: budget {budget:?} spent at revision {next} of {last}"
            ));
        }
        let mut set = tokio::task::JoinSet::new();
        for r in next..=(next + 15).min(last) {
            let mut kv = kv.clone();
            let req = pb::RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                revision: r,
                serializable: true,
                ..Default::default()
            };
            set.spawn(async move { (r, kv.range(req).await) });
        }
        while let Some(j) = set.join_next().await {
            let (r, res) = j.map_err(|e| e.to_string())?;
            let resp = res.map_err(|e| format!("range at revision {r}: {}", e.message()))?;
            let state = resp
                .into_inner()
                .kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        (
                            kv.mod_revision,
                            String::from_utf8_lossy(&kv.value).into_owned(),
                        ),
                    )
                })
                .collect();
            states.insert(r, state);
        }
        next = (next + 16).min(last + 1);
    }
    let mut out = Vec::new();
    let empty: BTreeMap<String, (i64, String)> = BTreeMap::new();
    let mut prev = &empty;
    for (r, state) in &states {
        for (k, (mod_rev, v)) in state {
            if mod_rev == r {
                out.push(Change {
                    revision: *r,
                    key: k.clone(),
                    value: Some(v.clone()),
                });
            }
        }
        for k in prev.keys().filter(|k| !state.contains_key(*k)) {
            out.push(Change {
                revision: *r,
                key: k.clone(),
                value: None,
            });
        }
        prev = state;
    }
    Ok(out)
}

/// The events of one revision, sorted (a txn's order is not checked).
fn by_revision(changes: &[Change]) -> BTreeMap<i64, Vec<Change>> {
    let mut m: BTreeMap<i64, Vec<Change>> = BTreeMap::new();
    for c in changes {
        m.entry(c.revision).or_default().push(c.clone());
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn show(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "nothing".into();
    }
    changes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks one watcher against the reference log up to `final_revision`.
/// `Err` describes the first difference.
pub fn check_watcher(
    log: &WatcherLog,
    reference: &[Change],
    final_revision: i64,
) -> Result<(), String> {
    let who = format!(
        "watcher {} ({}, from revision {}, {} stream(s))",
        log.id,
        if log.reconnecting {
            "reconnecting"
        } else {
            "long-lived"
        },
        log.start_revision,
        log.streams
    );
    if let Some(v) = log.violations.first() {
        return Err(format!("{who}: {v}"));
    }
    // Revision order of arrival.
    for w in log.events.windows(2) {
        if w[1].revision < w[0].revision {
            return Err(format!("{who}: out of order: {} after {}", w[1], w[0]));
        }
    }
    if log.next_revision <= final_revision {
        return Err(format!(
            "{who}: stopped at revision {} before the final revision {final_revision}",
            log.next_revision
        ));
    }
    let want: Vec<Change> = reference
        .iter()
        .filter(|c| c.revision >= log.start_revision && c.revision <= final_revision)
        .cloned()
        .collect();
    let got: Vec<Change> = log
        .events
        .iter()
        .filter(|c| c.revision <= final_revision)
        .cloned()
        .collect();
    let (want, got) = (by_revision(&want), by_revision(&got));
    let revisions: BTreeSet<i64> = want.keys().chain(got.keys()).copied().collect();
    for r in revisions {
        let w = want.get(&r).map(Vec::as_slice).unwrap_or(&[]);
        let g = got.get(&r).map(Vec::as_slice).unwrap_or(&[]);
        if w != g {
            let what = if g.is_empty() {
                "gap"
            } else if w.is_empty() {
                "phantom event"
            } else if g.len() > w.len() {
                "duplicate"
            } else {
                "different events"
            };
            return Err(format!(
                "{who}: {what} at revision {r}: committed {}, watcher saw {}",
                show(w),
                show(g)
            ));
        }
    }
    Ok(())
}

/// Ties the reference log to the recorded client history: every
/// acknowledged put / successful CAS value appears as a put, and every put
/// value in the log was written by some operation (acknowledged or not).
/// `extra_values` are values written outside the history (lease keys).
pub fn check_against_writes(
    reference: &[Change],
    history: &History,
    extra_values: &BTreeSet<String>,
) -> Result<(), String> {
    let logged: BTreeSet<(&str, &str)> = reference
        .iter()
        .filter_map(|c| Some((c.key.as_str(), c.value.as_deref()?)))
        .collect();
    let mut invoked: BTreeSet<(&str, &str)> = BTreeSet::new();
    for op in &history.ops {
        let value = match &op.call {
            Call::Put { value } => value,
            Call::Cas { new, .. } => new,
            _ => continue,
        };
        invoked.insert((op.key.as_str(), value.as_str()));
        let acknowledged = matches!(
            (&op.call, &op.result),
            (Call::Put { .. }, Some(Ret::Ok)) | (Call::Cas { .. }, Some(Ret::Cas(true)))
        );
        if acknowledged && !logged.contains(&(op.key.as_str(), value.as_str())) {
            return Err(format!(
                "acknowledged write {}={value} (client {}) is missing from the revision log",
                op.key, op.client
            ));
        }
    }
    for (k, v) in logged {
        if !invoked.contains(&(k, v)) && !extra_values.contains(v) {
            return Err(format!("revision log has {k}={v}, which no client wrote"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(r: i64, k: &str, v: &str) -> Change {
        Change {
            revision: r,
            key: k.into(),
            value: Some(v.into()),
        }
    }

    fn del(r: i64, k: &str) -> Change {
        Change {
            revision: r,
            key: k.into(),
            value: None,
        }
    }

    fn watcher(start: i64, events: Vec<Change>) -> WatcherLog {
        let next = events.last().map(|c| c.revision + 1).unwrap_or(start);
        WatcherLog {
            id: 1,
            reconnecting: true,
            start_revision: start,
            events,
            streams: 2,
            violations: vec![],
            next_revision: next,
        }
    }

    fn reference() -> Vec<Change> {
        vec![
            put(2, "a", "1"),
            put(3, "b", "2"),
            del(4, "a"),
            del(5, "b"),
            del(5, "c"),
            put(6, "a", "3"),
        ]
    }

    #[test]
    fn exact_stream_passes_and_may_start_late() {
        assert_eq!(
            check_watcher(&watcher(1, reference()), &reference(), 6),
            Ok(())
        );
        let late = watcher(4, reference()[2..].to_vec());
        assert_eq!(check_watcher(&late, &reference(), 6), Ok(()));
        // Events of one revision in any order.
        let mut swapped = reference();
        swapped.swap(3, 4);
        assert_eq!(check_watcher(&watcher(1, swapped), &reference(), 6), Ok(()));
    }

    #[test]
    fn gap_duplicate_phantom_and_order_are_caught() {
        let mut gap = reference();
        gap.remove(1);
        let e = check_watcher(&watcher(1, gap), &reference(), 6).unwrap_err();
        assert!(e.contains("gap at revision 3"), "{e}");

        let mut dup = reference();
        dup.insert(2, put(3, "b", "2"));
        let e = check_watcher(&watcher(1, dup), &reference(), 6).unwrap_err();
        assert!(e.contains("duplicate at revision 3"), "{e}");

        let mut wrong = reference();
        wrong[0] = put(2, "a", "X");
        let e = check_watcher(&watcher(1, wrong), &reference(), 6).unwrap_err();
        assert!(e.contains("different events at revision 2"), "{e}");

        let mut order = reference();
        order.swap(0, 1);
        let e = check_watcher(&watcher(1, order), &reference(), 6).unwrap_err();
        assert!(e.contains("out of order"), "{e}");

        let mut extra = reference();
        extra.push(put(7, "z", "9"));
        let e = check_watcher(&watcher(1, extra), &reference(), 7).unwrap_err();
        assert!(e.contains("phantom event at revision 7"), "{e}");

        // Missing the tail: stopped early.
        let short = watcher(1, reference()[..3].to_vec());
        let e = check_watcher(&short, &reference(), 6).unwrap_err();
        assert!(e.contains("stopped at revision 5"), "{e}");
    }

    #[test]
    fn reference_is_tied_to_acknowledged_writes() {
        use crate::Operation;
        let h = History::new(vec![
            Operation::completed(1, "a", Call::Put { value: "1".into() }, 0, 1, Ret::Ok),
            Operation::indeterminate(2, "b", Call::Put { value: "2".into() }, 2),
        ]);
        let none = BTreeSet::new();
        let log = vec![put(2, "a", "1"), put(3, "b", "2")];
        assert_eq!(check_against_writes(&log, &h, &none), Ok(()));
        // The indeterminate write may be absent...
        assert_eq!(check_against_writes(&log[..1], &h, &none), Ok(()));
        // ... but not the acknowledged one.
        let e = check_against_writes(&log[1..], &h, &none).unwrap_err();
        assert!(e.contains("a=1"), "{e}");
        let e =
            check_against_writes(&[put(2, "a", "zz"), put(3, "a", "1")], &h, &none).unwrap_err();
        assert!(e.contains("no client wrote"), "{e}");
        let extra = BTreeSet::from(["zz".to_string()]);
        assert!(check_against_writes(&[put(2, "a", "zz"), put(3, "a", "1")], &h, &extra).is_ok());
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("chaos/"), b"chaos0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
