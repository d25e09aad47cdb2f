//! Lease keep-alive: once, or continuously from a background task.

use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::Status;

use crate::client::Client;
use crate::error::ClientError;
use crate::options::jitter;
use crate::retry::CallKind;
use crate::types::LeaseKeepAliveResponse;

/// Shortest pause between two renewals.
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(100);

/// Where a kept-alive lease stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepAliveState {
    /// Renewed; the server granted `ttl` more seconds.
    Alive { ttl: i64 },
    /// The server reports the lease gone (expired or revoked).
    Expired,
    /// Renewals failed for longer than the TTL; the lease has probably
    /// expired.
    Failed(String),
}

/// Keeps a lease alive from a background task, renewing every TTL/3 over
/// one keep-alive stream (re-opened on another endpoint if it breaks).
/// Dropping it (or [`stop`](Self::stop)) stops renewing.
pub struct LeaseKeepAlive {
    id: i64,
    state: watch::Receiver<KeepAliveState>,
    task: JoinHandle<()>,
}

impl LeaseKeepAlive {
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The latest state.
    pub fn state(&self) -> KeepAliveState {
        self.state.borrow().clone()
    }

    /// The TTL granted by the latest renewal, while alive.
    pub fn ttl(&self) -> Option<i64> {
        match *self.state.borrow() {
            KeepAliveState::Alive { ttl } => Some(ttl),
            _ => None,
        }
    }

    /// Wait for the next renewal (or the end). `None` once keeping alive
    /// has ended and its final state was already seen.
    pub async fn changed(&mut self) -> Option<KeepAliveState> {
        self.state.changed().await.ok()?;
        Some(self.state.borrow_and_update().clone())
    }

    /// Stop renewing (the lease then expires after its TTL unless revoked).
    pub fn stop(self) {}
}

impl Drop for LeaseKeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Session {
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    inbound: Streaming<pb::LeaseKeepAliveResponse>,
}

impl Client {
    /// Renew a lease once.
    pub async fn keep_alive_once(&self, id: i64) -> Result<LeaseKeepAliveResponse, ClientError> {
        let (_session, resp) = self.open_keep_alive(id).await?;
        Ok(resp)
    }

    /// Renew the lease now, then keep it alive in the background.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAlive, ClientError> {
        let (session, first) = self.open_keep_alive(id).await?;
        let (state_tx, state) = watch::channel(KeepAliveState::Alive { ttl: first.ttl });
        let task = tokio::spawn(keep_alive_task(
            self.clone(),
            id,
            session,
            first.ttl,
            state_tx,
        ));
        Ok(LeaseKeepAlive { id, state, task })
    }

    /// Open a keep-alive stream and renew once over it.
    async fn open_keep_alive(
        &self,
        id: i64,
    ) -> Result<(Session, LeaseKeepAliveResponse), ClientError> {
        let (session, r) = self
            .with_retry("lease keep-alive", CallKind::Read, |ch, _| {
                let mut c = self.lease(ch);
                async move {
                    let (requests, rx) = mpsc::channel(4);
                    requests
                        .send(pb::LeaseKeepAliveRequest { id })
                        .await
                        .map_err(|_| Status::internal("keep-alive request queue closed"))?;
                    let inbound = c
                        .lease_keep_alive(ReceiverStream::new(rx))
                        .await?
                        .into_inner();
                    let mut session = Session { requests, inbound };
                    let r = next_for(&mut session.inbound, id).await?;
                    Ok((session, r))
                }
            })
            .await?;
        if r.ttl <= 0 {
            return Err(ClientError::LeaseNotFound { id });
        }
        Ok((
            session,
            LeaseKeepAliveResponse {
                header: r.header.into(),
                id: r.id,
                ttl: r.ttl,
            },
        ))
    }
}

/// The next answer about lease `id` on the stream.
async fn next_for(
    inbound: &mut Streaming<pb::LeaseKeepAliveResponse>,
    id: i64,
) -> Result<pb::LeaseKeepAliveResponse, Status> {
    loop {
        match inbound.message().await? {
            Some(r) if r.id == id => return Ok(r),
            Some(_) => continue,
            None => {
                return Err(Status::unavailable(
                    "keep-alive stream closed by the server",
                ))
            }
        }
    }
}

/// Pause between renewals for a TTL in seconds: a third of it.
pub(crate) fn renew_interval(ttl: i64) -> Duration {
    let ttl_ms = u64::try_from(ttl.max(0)).unwrap_or(0).saturating_mul(1000);
    Duration::from_millis(ttl_ms / 3).max(MIN_RENEW_INTERVAL)
}

async fn keep_alive_task(
    client: Client,
    id: i64,
    session: Session,
    mut ttl: i64,
    state: watch::Sender<KeepAliveState>,
) {
    let opts = client.inner.options.clone();
    let mut session = Some(session);
    let mut last_ok = Instant::now();
    let mut failures = 0u32;
    loop {
        let pause = if failures == 0 {
            renew_interval(ttl)
        } else {
            opts.retry.jittered_backoff(failures - 1, jitter())
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = state.closed() => return,
        }
        let result: Result<pb::LeaseKeepAliveResponse, String> = if let Some(s) = session.as_mut() {
            let renew = async {
                s.requests
                    .send(pb::LeaseKeepAliveRequest { id })
                    .await
                    .map_err(|_| Status::unavailable("keep-alive stream closed"))?;
                next_for(&mut s.inbound, id).await
            };
            match tokio::time::timeout(opts.request_timeout, renew).await {
                Ok(r) => r.map_err(|s| s.message().to_string()),
                Err(_) => Err("keep-alive timed out".to_string()),
            }
        } else {
            match client.open_keep_alive(id).await {
                Ok((s, r)) => {
                    session = Some(s);
                    Ok(pb::LeaseKeepAliveResponse {
                        header: None,
                        id: r.id,
                        ttl: r.ttl,
                    })
                }
                Err(ClientError::LeaseNotFound { .. }) => Ok(pb::LeaseKeepAliveResponse {
                    header: None,
                    id,
                    ttl: 0,
                }),
                Err(e) => Err(e.to_string()),
            }
        };
        match result {
            Ok(r) if r.ttl <= 0 => {
                let _ = state.send(KeepAliveState::Expired);
                return;
            }
            Ok(r) => {
                failures = 0;
                ttl = r.ttl;
                last_ok = Instant::now();
                let _ = state.send(KeepAliveState::Alive { ttl });
            }
            Err(e) => {
                tracing::debug!(lease = %format!("{id:x}"), error = %e, "lease keep-alive failed");
                session = None;
                failures += 1;
                let lease_deadline = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                if last_ok.elapsed() >= lease_deadline {
                    let _ = state.send(KeepAliveState::Failed(e));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_every_third_of_the_ttl() {
        assert_eq!(renew_interval(30), Duration::from_secs(10));
        assert_eq!(renew_interval(1), Duration::from_millis(333));
        assert_eq!(renew_interval(0), MIN_RENEW_INTERVAL);
        assert_eq!(renew_interval(-5), MIN_RENEW_INTERVAL);
    }
}
