//! The watch and lease workloads that run beside the KV clients of a
//! campaign, and their end-of-run checks (see [`crate::watch_check`] and
//! [`crate::lease_check`]).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::harness;
use crate::lease_check::{self, LeaseCtx, LeaseRecord, Outages};
use crate::names::{self, NameCtx, NameLog};
use crate::watch_check::{self, WatchControl, WatcherCtx, WatcherLog};
use crate::History;

/// Everything the campaign writes lives under this prefix (watched).
pub const WATCH_PREFIX: &str = "chaos/";
/// Keys on leases.
pub const LEASE_PREFIX: &str = "chaos/lease/";

/// How long watchers get, after the final revision is known, to reach it.
const WATCH_CATCH_UP: Duration = Duration::from_secs(30);
/// Budget for reading the revision log.
const REVISION_LOG_BUDGET: Duration = Duration::from_secs(90);

/// Running watchers and lease clients.
pub struct SideWorkloads {
    control: Arc<WatchControl>,
    watchers: Vec<JoinHandle<()>>,
    watch_logs: Arc<Mutex<Vec<WatcherLog>>>,
    leases: Vec<JoinHandle<()>>,
    lease_records: Arc<Mutex<Vec<LeaseRecord>>>,
    /// Name holder slots (each runs one `cairn name register --hold`
    /// process at a time; aborting a slot kills its process).
    names: Vec<JoinHandle<()>>,
    name_log: Arc<Mutex<NameLog>>,
}

/// What the side checks saw (for the report).
#[derive(Debug, Clone, Default)]
pub struct SideSummary {
    pub watchers: usize,
    pub watch_streams: usize,
    pub watch_events: usize,
    pub leases: usize,
    pub lease_observations: usize,
    /// Name holder processes that registered (and were killed).
    pub names: usize,
    pub name_observations: usize,
    /// Registrations refused because another holder owned the name.
    pub name_refusals: usize,
}

impl std::fmt::Display for SideSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} watchers ({} streams, {} events) exact; {} leases ({} observations) expired in time; {} killed name holders ({} observations, {} refusals) one owner, gone in time",
            self.watchers,
            self.watch_streams,
            self.watch_events,
            self.leases,
            self.lease_observations,
            self.names,
            self.name_observations,
            self.name_refusals
        )
    }
}

impl SideWorkloads {
    /// Starts `watchers` watchers (even ids keep one stream, odd ones
    /// reconnect; watcher 0 starts at revision 1, the others at the
    /// current revision + 1), `lease_clients` lease clients that start
    /// no new lease after `deadline`, and `name_holders` name holder slots
    /// running `bin` (none if `bin` is `None`).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        rt: &Runtime,
        urls: &[String],
        seed: u64,
        watchers: usize,
        lease_clients: usize,
        name_holders: usize,
        bin: Option<&std::path::Path>,
        deadline: Instant,
        origin: Instant,
        timeout: Duration,
        outages: &Outages,
    ) -> Result<SideWorkloads, String> {
        let control = Arc::new(WatchControl::default());
        let watch_logs = Arc::new(Mutex::new(Vec::new()));
        let lease_records = Arc::new(Mutex::new(Vec::new()));
        let current = if watchers > 1 {
            rt.block_on(watch_check::current_revision(urls, timeout))?
        } else {
            0
        };
        let hard_deadline = deadline + Duration::from_secs(300);
        let watchers = (0..watchers as u64)
            .map(|id| {
                rt.spawn(watch_check::watcher_loop(WatcherCtx {
                    id,
                    urls: urls.to_vec(),
                    prefix: WATCH_PREFIX.into(),
                    start_revision: if id == 0 { 1 } else { current + 1 },
                    reconnecting: id % 2 == 1,
                    seed,
                    control: control.clone(),
                    deadline: hard_deadline,
                    out: watch_logs.clone(),
                }))
            })
            .collect();
        let leases = (0..lease_clients as u64)
            .map(|id| {
                rt.spawn(lease_check::lease_loop(LeaseCtx {
                    id,
                    urls: urls.to_vec(),
                    prefix: LEASE_PREFIX.into(),
                    seed,
                    deadline,
                    origin,
                    timeout,
                    out: lease_records.clone(),
                    outages: outages.clone(),
                }))
            })
            .collect();
        let name_log = Arc::new(Mutex::new(NameLog {
            outages: outages.clone(),
            ..NameLog::default()
        }));
        let names = match bin {
            Some(bin) => (0..name_holders as u64)
                .map(|slot| {
                    rt.spawn(names::holder_loop(NameCtx {
                        slot,
                        bin: bin.to_path_buf(),
                        urls: urls.to_vec(),
                        seed,
                        deadline,
                        origin,
                        timeout,
                        out: name_log.clone(),
                    }))
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(SideWorkloads {
            control,
            watchers,
            watch_logs,
            leases,
            lease_records,
            names,
            name_log,
        })
    }

    /// Waits for the lease clients (each finishes observing its last
    /// lease; bounded) and checks every lease record.
    pub fn finish_leases(&mut self, rt: &Runtime) -> Result<(usize, usize), String> {
        let mut handles = std::mem::take(&mut self.leases);
        handles.append(&mut self.names);
        let joined = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(90), async {
                for h in handles {
                    let _ = h.await;
                }
            })
            .await
        });
        if joined.is_err() {
            return Err("lease clients and name holders did not stop within 90s".into());
        }
        names::check_names(&self.name_log.lock().unwrap_or_else(|e| e.into_inner()))?;
        let records = self.lease_records.lock().unwrap_or_else(|e| e.into_inner());
        for r in records.iter() {
            lease_check::check_lease(r)?;
        }
        Ok((records.len(), records.iter().map(|r| r.seen.len()).sum()))
    }

    /// With the cluster healed and agreeing on `final_revision`: no key on
    /// a lease is left, every watcher reaches the final revision and saw
    /// exactly the revision log, and the revision log matches the client
    /// history.
    pub fn finish_watches(
        &mut self,
        rt: &Runtime,
        urls: &[String],
        final_revision: i64,
        history: &History,
        timeout: Duration,
    ) -> Result<SideSummary, String> {
        // Every lease ended well before now: no key may be left on one.
        let left = rt.block_on(lease_keys_left(urls, timeout))?;
        if !left.is_empty() {
            return Err(format!(
                "keys on expired leases still present at the end: {left:?}"
            ));
        }
        // Every name holder was killed well before now.
        let left = rt.block_on(names::names_left(urls, timeout))?;
        if !left.is_empty() {
            return Err(format!(
                "names of killed holders still registered at the end: {left:?}"
            ));
        }
        let reference = rt.block_on(watch_check::revision_log(
            &urls[0],
            WATCH_PREFIX,
            final_revision,
            REVISION_LOG_BUDGET,
        ))?;
        // The last revisions may be outside the watched prefix (names
        // expiring in the registry): watchers see events only, so they can
        // reach the last revision that changed the prefix, not more.
        let final_revision = reference
            .iter()
            .map(|c| c.revision)
            .max()
            .unwrap_or(final_revision);
        self.control
            .final_revision
            .store(final_revision, Ordering::Release);
        let handles = std::mem::take(&mut self.watchers);
        let joined = rt.block_on(async {
            tokio::time::timeout(WATCH_CATCH_UP, async {
                for h in handles {
                    let _ = h.await;
                }
            })
            .await
        });
        if joined.is_err() {
            let logs = self.watch_logs.lock().unwrap_or_else(|e| e.into_inner());
            return Err(format!(
                "watchers did not reach revision {final_revision} within {WATCH_CATCH_UP:?} (done: {:?})",
                logs.iter().map(|l| (l.id, l.next_revision)).collect::<Vec<_>>()
            ));
        }
        let records = self.lease_records.lock().unwrap_or_else(|e| e.into_inner());
        let lease_values: BTreeSet<String> = records.iter().map(|r| r.value.clone()).collect();
        watch_check::check_against_writes(&reference, history, &lease_values)?;
        check_lease_keys_in_log(&reference)?;
        let name_log = self.name_log.lock().unwrap_or_else(|e| e.into_inner());
        let logs = self.watch_logs.lock().unwrap_or_else(|e| e.into_inner());
        for l in logs.iter() {
            watch_check::check_watcher(l, &reference, final_revision)?;
        }
        Ok(SideSummary {
            watchers: logs.len(),
            watch_streams: logs.iter().map(|l| l.streams).sum(),
            watch_events: logs.iter().map(|l| l.events.len()).sum(),
            leases: records.len(),
            lease_observations: records.iter().map(|r| r.seen.len()).sum(),
            names: name_log.holders.len(),
            name_observations: name_log.holders.iter().map(|r| r.seen.len()).sum(),
            name_refusals: name_log.refusals.len(),
        })
    }
}

impl Drop for SideWorkloads {
    fn drop(&mut self) {
        for h in self.watchers.iter().chain(&self.leases).chain(&self.names) {
            h.abort();
        }
    }
}

/// Keys under [`LEASE_PREFIX`] (linearizable read through any member).
async fn lease_keys_left(urls: &[String], timeout: Duration) -> Result<Vec<String>, String> {
    let mut last = String::new();
    for u in urls.iter().cycle().take(urls.len() * 5) {
        let mut kv = KvClient::new(harness::channel(u, timeout));
        let req = pb::RangeRequest {
            key: LEASE_PREFIX.as_bytes().to_vec(),
            range_end: watch_check::prefix_end(LEASE_PREFIX),
            keys_only: true,
            ..Default::default()
        };
        match tokio::time::timeout(timeout, kv.range(req)).await {
            Ok(Ok(r)) => {
                return Ok(r
                    .into_inner()
                    .kvs
                    .iter()
                    .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                    .collect())
            }
            Ok(Err(e)) => last = e.message().to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("could not read the lease keys: {last}"))
}

/// A key on a lease is put once and, once deleted (expired), never
/// written again.
fn check_lease_keys_in_log(reference: &[watch_check::Change]) -> Result<(), String> {
    let mut deleted: BTreeSet<&str> = BTreeSet::new();
    for c in reference.iter().filter(|c| c.key.starts_with(LEASE_PREFIX)) {
        match &c.value {
            None => {
                deleted.insert(&c.key);
            }
            Some(_) if deleted.contains(c.key.as_str()) => {
                return Err(format!("key on an expired lease reappeared: {c}"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch_check::Change;

    #[test]
    fn lease_key_reappearing_in_the_log_is_caught() {
        let c = |r, v: Option<&str>| Change {
            revision: r,
            key: "chaos/lease/c0-1".into(),
            value: v.map(str::to_string),
        };
        assert!(check_lease_keys_in_log(&[c(2, Some("L0-1")), c(5, None)]).is_ok());
        let e = check_lease_keys_in_log(&[c(2, Some("L0-1")), c(5, None), c(7, Some("L0-1"))])
            .unwrap_err();
        assert!(e.contains("reappeared"), "{e}");
    }
}
