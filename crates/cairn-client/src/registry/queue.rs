//! Locks and elections. Both answer with a **fencing token**: the revision
//! that queued the holder, larger for every later holder. A holder can be
//! paused (GC, SIGSTOP, a slow disk) past its session's TTL, lose the lock
//! without knowing, and wake up still believing it holds it; the resource
//! the lock guards must therefore reject writes whose token is lower than
//! the highest it has seen. Cairn keys can be such a resource: see
//! [`Client::fenced_put`].

use std::future::Future;

use cairn_proto::cairn::v1 as pb;
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tonic::Status;

use super::Leader;
use crate::client::Client;
use crate::error::ClientError;
use crate::options::jitter;
use crate::retry::CallKind;
use crate::txn::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
use crate::PutOptions;

/// A held lock. Dropping it releases the lock in the background;
/// [`unlock`](Self::unlock) releases it and waits.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    name: Vec<u8>,
    session: i64,
    /// Present until released.
    token: Option<i64>,
}

impl LockGuard {
    pub fn fencing_token(&self) -> i64 {
        self.token.unwrap_or(0)
    }

    /// Release the lock; `false` if it was no longer held (session lost).
    pub async fn unlock(mut self) -> Result<bool, ClientError> {
        let Some(token) = self.token.take() else {
            return Ok(false);
        };
        self.client.unlock(&self.name, self.session, token).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, name, session) = (self.client.clone(), self.name.clone(), self.session);
        rt.spawn(async move {
            let _ = client.unlock(&name, session, token).await;
        });
    }
}

/// Stream of election leaders (the current one first).
pub struct LeaderObserver {
    inbound: Streaming<pb::LeaderResponse>,
}

impl LeaderObserver {
    /// The next leader (`Some(None)`: nobody leads); `None` at stream end.
    pub async fn next(&mut self) -> Result<Option<Option<Leader>>, ClientError> {
        let r = self
            .inbound
            .message()
            .await
            .map_err(|s| ClientError::rpc("observe", s))?;
        Ok(r.map(|r| r.leader.map(Leader::from)))
    }
}

impl Client {
    /// A call that may wait indefinitely (lock, campaign): no request
    /// timeout. Joining a queue is idempotent per session, so the call is
    /// repeated on another member when the connection fails, and once with
    /// a new token when the member refuses the one held.
    async fn waiting_call<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let opts = &self.inner.options;
        let mut ticket = self.auth_ticket().await?;
        let mut failures = 0u32;
        loop {
            let (idx, slot) = self.inner.endpoints.pick();
            match call(slot.channel).await {
                Ok(v) => return Ok(v),
                // Refused before it queued: join again with a new token.
                Err(s) if self.renew_token(&mut ticket, &s).await? => {}
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    failures += 1;
                    if failures >= opts.retry.max_attempts.max(1) {
                        return Err(ClientError::rpc(op, s));
                    }
                    let hint = crate::retry::leader_hint(&s);
                    if !self.inner.endpoints.on_failure(idx, hint.as_deref()) {
                        tokio::time::sleep(opts.retry.jittered_backoff(failures - 1, jitter()))
                            .await;
                    }
                }
                Err(s) => return Err(ClientError::rpc(op, s)),
            }
        }
    }

    /// Wait (FIFO) until `session` holds lock `name`.
    pub async fn lock(
        &self,
        name: impl Into<Vec<u8>>,
        session: i64,
    ) -> Result<LockGuard, ClientError> {
        let name = name.into();
        let req = pb::LockRequest {
            name: name.clone(),
            session_id: session,
        };
        let r = self
            .waiting_call("lock", |ch| {
                let mut c = self.lock_raw(ch);
                let req = req.clone();
                async move { c.lock(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(LockGuard {
            client: self.clone(),
            name,
            session,
            token: Some(r.fencing_token),
        })
    }

    /// Release a lock place; `false` if the session held none with `token`.
    pub async fn unlock(&self, name: &[u8], session: i64, token: i64) -> Result<bool, ClientError> {
        let req = pb::UnlockRequest {
            name: name.to_vec(),
            session_id: session,
            fencing_token: token,
        };
        let r = self
            .unary("unlock", CallKind::Write, req, |ch, r| {
                let mut c = self.lock_raw(ch);
                async move { c.unlock(r).await }
            })
            .await?;
        Ok(r.released)
    }

    /// Wait until `session` leads election `name`; returns its fencing token.
    pub async fn campaign(
        &self,
        name: impl Into<Vec<u8>>,
        session: i64,
        value: impl Into<Vec<u8>>,
    ) -> Result<i64, ClientError> {
        let req = pb::CampaignRequest {
            name: name.into(),
            session_id: session,
            value: value.into(),
        };
        let r = self
            .waiting_call("campaign", |ch| {
                let mut c = self.election_raw(ch);
                let req = req.clone();
                async move { c.campaign(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(r.fencing_token)
    }

    /// The leader updates its value.
    pub async fn proclaim(
        &self,
        name: impl Into<Vec<u8>>,
        session: i64,
        token: i64,
        value: impl Into<Vec<u8>>,
    ) -> Result<i64, ClientError> {
        let req = pb::ProclaimRequest {
            name: name.into(),
            session_id: session,
            fencing_token: token,
            value: value.into(),
        };
        let r = self
            .unary("proclaim", CallKind::Write, req, |ch, r| {
                let mut c = self.election_raw(ch);
                async move { c.proclaim(r).await }
            })
            .await?;
        Ok(r.revision)
    }

    /// The current leader, if any.
    pub async fn election_leader(
        &self,
        name: impl Into<Vec<u8>>,
    ) -> Result<Option<Leader>, ClientError> {
        let req = pb::LeaderRequest { name: name.into() };
        let r = self
            .unary("leader", CallKind::Read, req, |ch, r| {
                let mut c = self.election_raw(ch);
                async move { c.leader(r).await }
            })
            .await?;
        Ok(r.leader.map(Leader::from))
    }

    /// The current leader, then every change.
    pub async fn observe(&self, name: impl Into<Vec<u8>>) -> Result<LeaderObserver, ClientError> {
        let req = pb::LeaderRequest { name: name.into() };
        let inbound = self
            .with_retry("observe", CallKind::Read, |ch, _| {
                let mut c = self.election_raw(ch);
                let req = req.clone();
                async move { c.observe(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(LeaderObserver { inbound })
    }

    /// Leave the election; `false` if not a candidate with `token`.
    pub async fn resign(
        &self,
        name: impl Into<Vec<u8>>,
        session: i64,
        token: i64,
    ) -> Result<bool, ClientError> {
        let req = pb::ResignRequest {
            name: name.into(),
            session_id: session,
            fencing_token: token,
        };
        let r = self
            .unary("resign", CallKind::Write, req, |ch, r| {
                let mut c = self.election_raw(ch);
                async move { c.resign(r).await }
            })
            .await?;
        Ok(r.resigned)
    }

    /// Write `key = value` only if `token` is at least the highest fencing
    /// token seen by `fence_key` (which then records `token`): a Cairn key
    /// used as a resource guarded by a lock. Returns `false` (nothing
    /// written) for a stale token. One transaction, so no holder can slip
    /// in between the check and the write.
    pub async fn fenced_put(
        &self,
        fence_key: impl Into<Vec<u8>>,
        token: i64,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<bool, ClientError> {
        let fence_key = fence_key.into();
        let token_text = fence_text(token);
        // Tokens are stored zero-padded so byte order is numeric order. A
        // value compare on an absent fence is false, so a first write
        // passes too.
        let txn = Txn::new()
            .when(vec![Compare::new(
                fence_key.clone(),
                CompareOp::Greater,
                CompareTarget::Value(token_text.clone().into_bytes()),
            )])
            .or_else(vec![
                TxnOp::put(fence_key, token_text, PutOptions::default()),
                TxnOp::put(key.into(), value.into(), PutOptions::default()),
            ]);
        let r = self.txn(txn).await?;
        // The outer compare held: a newer token was seen; nothing written.
        Ok(!r.succeeded)
    }
}

/// A fencing token as stored by [`Client::fenced_put`]: 20 digits.
pub fn fence_text(token: i64) -> String {
    format!("{:020}", token.max(0))
}
