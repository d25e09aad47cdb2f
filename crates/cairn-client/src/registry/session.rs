//! `Session`: the owner identity of a client process, kept alive in the
//! background, with a clear event when it is lost.

use std::time::Duration;

use cairn_proto::cairn::v1 as pb;
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

/// Shortest pause between two renewals.
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(100);

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Renewed recently.
    Alive,
    /// The session is gone: everything it owned (names, locks, candidacies)
    /// is gone too, or will be within its TTL. The text says why.
    Lost(String),
}

/// A server-side session (a lease) renewed every TTL/3 by a background task
/// over one keepalive stream, re-opened on another member if it breaks.
/// Dropping it stops the renewals (the session then expires after its
/// TTL); [`close`](Self::close) ends it at once.
pub struct Session {
    client: Client,
    id: i64,
    ttl_secs: i64,
    state: watch::Receiver<SessionState>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &format_args!("{:x}", self.id))
            .field("ttl_secs", &self.ttl_secs)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

struct Stream {
    requests: mpsc::Sender<pb::KeepAliveRequest>,
    inbound: Streaming<pb::KeepAliveResponse>,
}

impl Session {
    /// Create a session that expires `ttl_secs` after the last renewal.
    pub async fn create(client: &Client, ttl_secs: i64) -> Result<Session, ClientError> {
        let req = pb::CreateSessionRequest { ttl_secs };
        let resp = client
            .unary("create session", CallKind::Write, req, |ch, r| {
                let mut c = client.session_raw(ch);
                async move { c.create_session(r).await }
            })
            .await?;
        Ok(Session::keep(client, resp.session_id, resp.ttl_secs))
    }

    /// Keep an existing session alive (e.g. one created by another
    /// process, or a lease granted through the etcd API).
    pub fn keep(client: &Client, id: i64, ttl_secs: i64) -> Session {
        let (tx, state) = watch::channel(SessionState::Alive);
        let task = tokio::spawn(keep_alive_task(client.clone(), id, ttl_secs, tx));
        Session {
            client: client.clone(),
            id,
            ttl_secs,
            state,
            task,
        }
    }

    /// The session ID (a lease ID).
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn state(&self) -> SessionState {
        self.state.borrow().clone()
    }

    pub fn is_lost(&self) -> bool {
        matches!(*self.state.borrow(), SessionState::Lost(_))
    }

    /// Resolves when the session is lost, with the reason. Holders of
    /// locks must stop using what the lock guards at this point.
    pub async fn lost(&self) -> String {
        let mut rx = self.state.clone();
        loop {
            if let SessionState::Lost(why) = &*rx.borrow_and_update() {
                return why.clone();
            }
            if rx.changed().await.is_err() {
                return "keepalive task ended".into();
            }
        }
    }

    /// A receiver of the state, to watch from elsewhere.
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// End the session now: everything it owns goes, in one revision.
    pub async fn close(self) -> Result<(), ClientError> {
        self.task.abort();
        let req = pb::CloseSessionRequest {
            session_id: self.id,
        };
        self.client
            .unary("close session", CallKind::Write, req, |ch, r| {
                let mut c = self.client.session_raw(ch);
                async move { c.close_session(r).await }
            })
            .await?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// The session's granted TTL and the time it has left, or `None` if it
    /// no longer exists.
    pub async fn session_info(&self, id: i64) -> Result<Option<(i64, Duration)>, ClientError> {
        let req = pb::SessionInfoRequest { session_id: id };
        let r = self
            .unary("session info", CallKind::Read, req, |ch, r| {
                let mut c = self.session_raw(ch);
                async move { c.session_info(r).await }
            })
            .await?;
        Ok(r.found.then(|| {
            (
                r.granted_ttl_secs,
                Duration::from_millis(u64::try_from(r.remaining_ms).unwrap_or(0)),
            )
        }))
    }

    async fn open_session_stream(
        &self,
        id: i64,
    ) -> Result<(Stream, pb::KeepAliveResponse), ClientError> {
        self.with_retry("session keepalive", CallKind::Read, |ch, _| {
            let mut c = self.session_raw(ch);
            async move {
                let (requests, rx) = mpsc::channel(4);
                requests
                    .send(pb::KeepAliveRequest { session_id: id })
                    .await
                    .map_err(|_| Status::internal("keepalive request queue closed"))?;
                let inbound = c.keep_alive(ReceiverStream::new(rx)).await?.into_inner();
                let mut s = Stream { requests, inbound };
                let r = next(&mut s.inbound).await?;
                Ok((s, r))
            }
        })
        .await
    }
}

async fn next(
    inbound: &mut Streaming<pb::KeepAliveResponse>,
) -> Result<pb::KeepAliveResponse, Status> {
    inbound
        .message()
        .await?
        .ok_or_else(|| Status::unavailable("keepalive stream closed by the server"))
}

fn renew_interval(ttl_secs: i64) -> Duration {
    let ttl_ms = u64::try_from(ttl_secs.max(0))
        .unwrap_or(0)
        .saturating_mul(1000);
    Duration::from_millis(ttl_ms / 3).max(MIN_RENEW_INTERVAL)
}

async fn keep_alive_task(
    client: Client,
    id: i64,
    ttl_secs: i64,
    state: watch::Sender<SessionState>,
) {
    let opts = client.inner.options.clone();
    let mut stream: Option<Stream> = None;
    let mut last_ok = Instant::now();
    let mut failures = 0u32;
    // Renew at once: the first renewal also proves the session exists.
    let mut pause = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = state.closed() => return,
        }
        let result = match stream.as_mut() {
            Some(s) => {
                let renew = async {
                    s.requests
                        .send(pb::KeepAliveRequest { session_id: id })
                        .await
                        .map_err(|_| Status::unavailable("keepalive stream closed"))?;
                    next(&mut s.inbound).await
                };
                match tokio::time::timeout(opts.request_timeout, renew).await {
                    Ok(r) => r.map_err(|s| s.message().to_string()),
                    Err(_) => Err("keepalive timed out".to_string()),
                }
            }
            None => match client.open_session_stream(id).await {
                Ok((s, r)) => {
                    stream = Some(s);
                    Ok(r)
                }
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(r) if r.lost => {
                let _ = state.send(SessionState::Lost(
                    "the session expired or was closed".into(),
                ));
                return;
            }
            Ok(_) => {
                failures = 0;
                last_ok = Instant::now();
                pause = renew_interval(ttl_secs);
            }
            Err(e) => {
                tracing::debug!(session = %format!("{id:x}"), error = %e, "session keepalive failed");
                stream = None;
                failures += 1;
                let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(0));
                if last_ok.elapsed() >= ttl {
                    let _ = state.send(SessionState::Lost(format!(
                        "no keepalive succeeded for a whole TTL ({ttl_secs}s): {e}"
                    )));
                    return;
                }
                pause = opts.retry.jittered_backoff(failures - 1, jitter());
            }
        }
    }
}
