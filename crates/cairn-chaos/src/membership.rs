//! Membership changes through the etcd Cluster API, as an operator does
//! them: `MemberRemove`, `MemberAdd` (learner), `MemberPromote`. Every call
//! is retried on any member until a deadline; an unclear outcome (timeout,
//! leader change) is resolved by reading `MemberList` (linearizable), so a
//! change is never applied twice by mistake.

use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb as pb;
use pb::cluster_client::ClusterClient;

use crate::harness;

/// Per-request timeout of the Cluster API calls.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The members as `url` sees them (linearizable `MemberList`).
pub async fn list(url: &str) -> Result<Vec<pb::Member>, String> {
    let mut c = ClusterClient::new(harness::channel(url, REQUEST_TIMEOUT));
    let r = tokio::time::timeout(
        REQUEST_TIMEOUT,
        c.member_list(pb::MemberListRequest { linearizable: true }),
    )
    .await
    .map_err(|_| "member list timed out".to_string())?
    .map_err(|e| format!("member list: {}", e.message()))?;
    Ok(r.into_inner().members)
}

/// The first linearizable member list any of `urls` gives.
async fn list_any(urls: &[String]) -> Result<Vec<pb::Member>, String> {
    let mut last = String::from("no urls");
    for u in urls {
        match list(u).await {
            Ok(l) => return Ok(l),
            Err(e) => last = format!("{u}: {e}"),
        }
    }
    Err(last)
}

/// Retries `attempt` (on the members in turn) until `done` holds for the
/// linearizable member list or `deadline` passes. `attempt` returning
/// `Err` is fine (the list decides); the last error is reported.
async fn until<A, F, D>(
    what: &str,
    urls: &[String],
    deadline: Instant,
    mut attempt: A,
    done: D,
) -> Result<Vec<pb::Member>, String>
where
    A: FnMut(ClusterClient<tonic::transport::Channel>) -> F,
    F: std::future::Future<Output = Result<(), String>>,
    D: Fn(&[pb::Member]) -> bool,
{
    let mut last_err = String::new();
    for round in 0usize.. {
        if let Ok(l) = list_any(urls).await {
            if done(&l) {
                return Ok(l);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what}: not done by the deadline; last error: {last_err}"
            ));
        }
        let url = &urls[round % urls.len()];
        let c = ClusterClient::new(harness::channel(url, REQUEST_TIMEOUT));
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt(c)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => last_err = format!("{url}: {e}"),
            Err(_) => last_err = format!("{url}: timed out"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    unreachable!("the loop only returns")
}

/// Removes member `id` (asking the members at `urls`).
pub async fn remove(urls: &[String], id: u64, deadline: Instant) -> Result<(), String> {
    until(
        "member remove",
        urls,
        deadline,
        |mut c| async move {
            c.member_remove(pb::MemberRemoveRequest { id })
                .await
                .map(|_| ())
                .map_err(|e| e.message().to_string())
        },
        |l| l.iter().all(|m| m.id != id),
    )
    .await
    .map(|_| ())
}

/// Adds `peer_url` as a learner; returns its member ID.
pub async fn add_learner(
    urls: &[String],
    peer_url: &str,
    deadline: Instant,
) -> Result<u64, String> {
    let has = |l: &[pb::Member]| {
        l.iter()
            .find(|m| m.peer_ur_ls.iter().any(|u| u == peer_url))
            .map(|m| m.id)
    };
    let l = until(
        "member add (learner)",
        urls,
        deadline,
        |mut c| {
            let peer_urls = vec![peer_url.to_string()];
            async move {
                c.member_add(pb::MemberAddRequest {
                    peer_ur_ls: peer_urls,
                    is_learner: true,
                })
                .await
                .map(|_| ())
                .map_err(|e| e.message().to_string())
            }
        },
        |l| has(l).is_some(),
    )
    .await?;
    has(&l).ok_or_else(|| "member add: vanished".to_string())
}

/// Promotes learner `id` to voter (retries while it is not caught up).
pub async fn promote(urls: &[String], id: u64, deadline: Instant) -> Result<(), String> {
    until(
        "member promote",
        urls,
        deadline,
        |mut c| async move {
            c.member_promote(pb::MemberPromoteRequest { id })
                .await
                .map(|_| ())
                .map_err(|e| e.message().to_string())
        },
        |l| l.iter().any(|m| m.id == id && !m.is_learner),
    )
    .await
    .map(|_| ())
}

/// Used by the timing of a reconfiguration: how long one step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
