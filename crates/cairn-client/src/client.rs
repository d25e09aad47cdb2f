//! The client: endpoint failover, retries and the typed unary API.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3lockpb::lock_client::LockClient;
use futures::StreamExt;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Status;

use crate::auth::{AuthChannel, AuthTicket, TokenSlot};
use crate::endpoints::Endpoints;
use crate::error::ClientError;
use crate::options::{jitter, ClientOptions};
use crate::retry::{
    classify, describe, is_connect_error, is_deadline, leader_hint, named_leader, CallKind,
    Disposition, Failure,
};
use crate::snapshot::SnapshotStream;
use crate::txn::{Txn, TxnOp, TxnResponse};
use crate::types::*;

/// A handle to a Cairn (or etcd v3) cluster. Cheap to clone; clones share
/// channels and the current-endpoint choice.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) endpoints: Endpoints,
    pub(crate) options: ClientOptions,
    /// The token every call sends (see `auth`): one per client and its
    /// clones, whichever endpoint a call goes to.
    pub(crate) token: Arc<TokenSlot>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("current", &self.current_endpoint())
            .field("options", &self.inner.options)
            .finish()
    }
}

macro_rules! raw_client {
    ($(#[$doc:meta])* $name:ident, $ty:ident) => {
        $(#[$doc])*
        pub fn $name(&self) -> $ty<AuthChannel> {
            self.wrap_raw($ty::new, self.channel())
        }
    };
}

impl Client {
    /// Set up channels to the endpoints (`http://host:port`, or `host:port`).
    /// Connections are made lazily, on first use, so this fails only on
    /// malformed endpoints; an unreachable cluster shows on the first call.
    /// With [`ClientOptions::credentials`], the first call logs in.
    /// Must be called inside a Tokio runtime.
    pub async fn connect(
        endpoints: Vec<String>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let endpoints = Endpoints::new(&endpoints, &options)?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                options,
                token: Arc::new(TokenSlot::new()),
            }),
        })
    }

    /// The endpoints in use (normalised), including leaders the client was
    /// redirected to.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.urls()
    }

    /// The endpoint the next call goes to first.
    pub fn current_endpoint(&self) -> String {
        self.inner.endpoints.current_url()
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    // -- Escape hatch: the raw tonic clients on the current endpoint. -----
    //
    // They send the token the client holds but never log in or renew it:
    // call `authenticate` first on a cluster with authentication on.

    /// The channel of the current endpoint (requests on it carry no token).
    pub fn channel(&self) -> Channel {
        self.inner.endpoints.pick().1.channel
    }

    pub(crate) fn wrap_raw<C>(&self, new: impl FnOnce(AuthChannel) -> C, ch: Channel) -> C
    where
        C: RawClient,
    {
        new(self.authed(ch))
            .max_decoding(self.inner.options.max_response_bytes)
            .max_encoding(self.inner.options.max_request_bytes)
    }

    raw_client!(
        /// Raw KV client (no retries) on the current endpoint.
        kv_client,
        KvClient
    );
    raw_client!(
        /// Raw Watch client on the current endpoint.
        watch_client,
        WatchClient
    );
    raw_client!(
        /// Raw Lease client on the current endpoint.
        lease_client,
        LeaseClient
    );
    raw_client!(
        /// Raw Cluster client on the current endpoint.
        cluster_client,
        ClusterClient
    );
    raw_client!(
        /// Raw Maintenance client on the current endpoint.
        maintenance_client,
        MaintenanceClient
    );
    raw_client!(
        /// Raw Lock client on the current endpoint.
        lock_client,
        LockClient
    );
    raw_client!(
        /// Raw Election client on the current endpoint.
        election_client,
        ElectionClient
    );
    raw_client!(
        /// Raw Auth client on the current endpoint.
        auth_client,
        AuthClient
    );

    pub(crate) fn kv(&self, ch: Channel) -> KvClient<AuthChannel> {
        self.wrap_raw(KvClient::new, ch)
    }
    pub(crate) fn watch_raw(&self, ch: Channel) -> WatchClient<AuthChannel> {
        self.wrap_raw(WatchClient::new, ch)
    }
    pub(crate) fn lease(&self, ch: Channel) -> LeaseClient<AuthChannel> {
        self.wrap_raw(LeaseClient::new, ch)
    }
    fn cluster(&self, ch: Channel) -> ClusterClient<AuthChannel> {
        self.wrap_raw(ClusterClient::new, ch)
    }
    fn maintenance(&self, ch: Channel) -> MaintenanceClient<AuthChannel> {
        self.wrap_raw(MaintenanceClient::new, ch)
    }

    // -- The retry loop. ----------------------------------------------------

    /// Run `attempt` against the current endpoint, moving to the next one
    /// (or the named leader) and backing off on retryable failures, within
    /// `max_attempts` tries and the request timeout overall. `attempt` gets
    /// the channel and the time left. With credentials, logs in first if
    /// need be, and once more if a member refuses the token.
    pub(crate) async fn with_retry<T, F, Fut>(
        &self,
        op: &'static str,
        kind: CallKind,
        attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let ticket = self.auth_ticket().await?;
        self.retry_loop(op, kind, Some(ticket), attempt).await
    }

    /// [`with_retry`](Self::with_retry) after the login; `None` for the
    /// login itself, which must not renew the token it is fetching.
    pub(crate) async fn retry_loop<T, F, Fut>(
        &self,
        op: &'static str,
        kind: CallKind,
        mut ticket: Option<AuthTicket>,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let opts = &self.inner.options;
        let deadline = Instant::now() + opts.request_timeout;
        let max_attempts = opts.retry.max_attempts.max(1);
        let mut attempts = 0u32;
        let mut last = String::from("no attempt was made within the request timeout");
        while attempts < max_attempts {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let (idx, slot) = self.inner.endpoints.pick();
            attempts += 1;
            let status =
                match tokio::time::timeout(remaining, attempt(slot.channel, remaining)).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(status)) if !is_deadline(&status) => status,
                    // Our deadline passed (seen by us, by tonic, or by the server).
                    Ok(Err(_)) | Err(_) => {
                        return Err(match kind {
                            CallKind::Read => ClientError::Timeout {
                                op,
                                timeout: opts.request_timeout,
                            },
                            CallKind::Write => ClientError::OutcomeUnknown {
                                op,
                                reason: format!(
                                    "no answer from {} within the request timeout ({:?})",
                                    slot.url, opts.request_timeout
                                ),
                            },
                        })
                    }
                };
            if let Some(t) = ticket.as_mut() {
                // Refused before it was acted on: repeating it with a new
                // token is safe, and is not one of the retries.
                if self.renew_token(t, &status).await? {
                    attempts -= 1;
                    continue;
                }
            }
            match classify(kind, Failure::of(&status)) {
                Disposition::Fail => return Err(ClientError::rpc(op, status)),
                Disposition::Unknown => {
                    return Err(ClientError::OutcomeUnknown {
                        op,
                        reason: format!("{} (from {})", describe(&status), slot.url),
                    })
                }
                Disposition::Retry => {
                    tracing::debug!(
                        op,
                        endpoint = %slot.url,
                        attempt = attempts,
                        code = ?status.code(),
                        error = status.message(),
                        "retrying"
                    );
                    last = format!("{}: {}", slot.url, describe(&status));
                    let redirected = self
                        .inner
                        .endpoints
                        .on_failure(idx, leader_hint(&status).as_deref());
                    if attempts >= max_attempts {
                        break;
                    }
                    if !redirected {
                        let delay = opts.retry.jittered_backoff(attempts - 1, jitter());
                        if Instant::now() + delay >= deadline {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        Err(ClientError::Unavailable { op, attempts, last })
    }

    /// A unary call through [`with_retry`](Self::with_retry); the request
    /// carries the time left as its gRPC deadline.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        op: &'static str,
        kind: CallKind,
        request: Req,
        call: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let follow = self.inner.options.follow_leader;
        self.with_retry(op, kind, |ch, remaining| {
            let mut r = tonic::Request::new(request.clone());
            r.set_timeout(remaining);
            let fut = call(ch, r);
            async move {
                let response = fut.await?;
                if follow {
                    if let Some(leader) = named_leader(response.metadata()) {
                        self.inner.endpoints.follow_leader(leader);
                    }
                }
                Ok(response.into_inner())
            }
        })
        .await
    }

    /// One try at exactly `endpoint`, no failover (but a second one with
    /// a new token if the member refused the one held).
    async fn at_endpoint<T, F, Fut>(
        &self,
        op: &'static str,
        endpoint: &str,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let ch = self.inner.endpoints.channel_for(endpoint)?;
        let timeout = self.inner.options.request_timeout;
        let mut ticket = self.auth_ticket().await?;
        loop {
            return match tokio::time::timeout(timeout, call(ch.clone(), timeout)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(status)) if is_connect_error(&status) => Err(ClientError::Unavailable {
                    op,
                    attempts: 1,
                    last: format!("{endpoint}: {}", describe(&status)),
                }),
                Ok(Err(status)) if self.renew_token(&mut ticket, &status).await? => continue,
                Ok(Err(status)) if !is_deadline(&status) => Err(ClientError::rpc(op, status)),
                Ok(Err(_)) | Err(_) => Err(ClientError::Timeout { op, timeout }),
            };
        }
    }

    // -- KV. ----------------------------------------------------------------

    /// Read a key or a range (see [`GetOptions`]).
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: GetOptions,
    ) -> Result<GetResponse, ClientError> {
        let req = options.to_request(&key.into());
        self.unary("range", CallKind::Read, req, |ch, r| {
            let mut c = self.kv(ch);
            async move { c.range(r).await }
        })
        .await
        .map(Into::into)
    }

    /// Write a key.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<PutResponse, ClientError> {
        let req = options.to_request(key.into(), value.into());
        self.unary("put", CallKind::Write, req, |ch, r| {
            let mut c = self.kv(ch);
            async move { c.put(r).await }
        })
        .await
        .map(Into::into)
    }

    /// Delete a key or a range (see [`DeleteOptions`]).
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        options: DeleteOptions,
    ) -> Result<DeleteResponse, ClientError> {
        let req = options.to_request(&key.into());
        self.unary("delete", CallKind::Write, req, |ch, r| {
            let mut c = self.kv(ch);
            async move { c.delete_range(r).await }
        })
        .await
        .map(Into::into)
    }

    /// Run a transaction. One that only reads is retried like a read.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, ClientError> {
        fn read_only(ops: &[TxnOp]) -> bool {
            ops.iter().all(|op| match op {
                TxnOp::Get { .. } => true,
                TxnOp::Txn(t) => read_only(&t.success) && read_only(&t.failure),
                _ => false,
            })
        }
        let kind = if read_only(&txn.success) && read_only(&txn.failure) {
            CallKind::Read
        } else {
            CallKind::Write
        };
        self.unary("txn", kind, txn.to_wire(), |ch, r| {
            let mut c = self.kv(ch);
            async move { c.txn(r).await }
        })
        .await
        .map(Into::into)
    }

    /// Discard history before `revision`. With `physical`, answer only once
    /// the compaction is applied.
    pub async fn compact(
        &self,
        revision: i64,
        physical: bool,
    ) -> Result<CompactResponse, ClientError> {
        let req = pb::CompactionRequest { revision, physical };
        self.unary("compact", CallKind::Write, req, |ch, r| {
            let mut c = self.kv(ch);
            async move { c.compact(r).await }
        })
        .await
        .map(|r| CompactResponse {
            header: r.header.into(),
        })
    }

    // -- Leases. ------------------------------------------------------------

    /// Create a lease of `ttl` seconds; `id` 0 lets the server choose.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, ClientError> {
        let req = pb::LeaseGrantRequest { ttl, id };
        let r = self
            .unary("lease grant", CallKind::Write, req, |ch, r| {
                let mut c = self.lease(ch);
                async move { c.lease_grant(r).await }
            })
            .await?;
        if !r.error.is_empty() {
            return Err(ClientError::rpc("lease grant", Status::unknown(r.error)));
        }
        Ok(LeaseGrantResponse {
            header: r.header.into(),
            id: r.id,
            ttl: r.ttl,
        })
    }

    /// Revoke a lease, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, ClientError> {
        let req = pb::LeaseRevokeRequest { id };
        self.unary("lease revoke", CallKind::Write, req, |ch, r| {
            let mut c = self.lease(ch);
            async move { c.lease_revoke(r).await }
        })
        .await
        .map(|r| LeaseRevokeResponse {
            header: r.header.into(),
        })
    }

    /// Remaining and granted TTL of a lease (TTL -1: gone), with its keys
    /// when `keys`.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, ClientError> {
        let req = pb::LeaseTimeToLiveRequest { id, keys };
        self.unary("lease time-to-live", CallKind::Read, req, |ch, r| {
            let mut c = self.lease(ch);
            async move { c.lease_time_to_live(r).await }
        })
        .await
        .map(Into::into)
    }

    /// Every live lease.
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, ClientError> {
        self.unary(
            "lease leases",
            CallKind::Read,
            pb::LeaseLeasesRequest {},
            |ch, r| {
                let mut c = self.lease(ch);
                async move { c.lease_leases(r).await }
            },
        )
        .await
        .map(|r| LeaseLeasesResponse {
            header: r.header.into(),
            leases: r.leases.into_iter().map(|l| l.id).collect(),
        })
    }

    // -- Cluster. -----------------------------------------------------------

    /// The members, as the answering member knows them.
    pub async fn member_list(&self) -> Result<MembersResponse, ClientError> {
        let req = pb::MemberListRequest {
            linearizable: false,
        };
        self.unary("member list", CallKind::Read, req, |ch, r| {
            let mut c = self.cluster(ch);
            async move { c.member_list(r).await }
        })
        .await
        .map(|r| members_response(r.header, r.members))
    }

    /// Add a member (a learner when `is_learner`) with these peer URLs.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse, ClientError> {
        let req = pb::MemberAddRequest {
            peer_ur_ls: peer_urls,
            is_learner,
        };
        let r = self
            .unary("member add", CallKind::Write, req, |ch, r| {
                let mut c = self.cluster(ch);
                async move { c.member_add(r).await }
            })
            .await?;
        Ok(MemberAddResponse {
            header: r.header.into(),
            member: r.member.map(Into::into).unwrap_or_default(),
            members: r.members.into_iter().map(Into::into).collect(),
        })
    }

    pub async fn member_remove(&self, id: u64) -> Result<MembersResponse, ClientError> {
        let req = pb::MemberRemoveRequest { id };
        self.unary("member remove", CallKind::Write, req, |ch, r| {
            let mut c = self.cluster(ch);
            async move { c.member_remove(r).await }
        })
        .await
        .map(|r| members_response(r.header, r.members))
    }

    /// Turn a learner into a voting member.
    pub async fn member_promote(&self, id: u64) -> Result<MembersResponse, ClientError> {
        let req = pb::MemberPromoteRequest { id };
        self.unary("member promote", CallKind::Write, req, |ch, r| {
            let mut c = self.cluster(ch);
            async move { c.member_promote(r).await }
        })
        .await
        .map(|r| members_response(r.header, r.members))
    }

    /// Change a member's peer URLs.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<MembersResponse, ClientError> {
        let req = pb::MemberUpdateRequest {
            id,
            peer_ur_ls: peer_urls,
        };
        self.unary("member update", CallKind::Write, req, |ch, r| {
            let mut c = self.cluster(ch);
            async move { c.member_update(r).await }
        })
        .await
        .map(|r| members_response(r.header, r.members))
    }

    // -- Maintenance. -------------------------------------------------------

    /// Status of exactly this endpoint (no failover).
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse, ClientError> {
        self.at_endpoint("status", endpoint, |ch, timeout| {
            let mut c = self.maintenance(ch);
            let mut r = tonic::Request::new(pb::StatusRequest {});
            r.set_timeout(timeout);
            async move { c.status(r).await.map(|r| r.into_inner().into()) }
        })
        .await
    }

    /// Status of every endpoint, asked concurrently, in endpoint order.
    pub async fn status_all(&self) -> Vec<(String, Result<StatusResponse, ClientError>)> {
        let urls = self.endpoints();
        let results = futures::future::join_all(urls.iter().map(|u| self.status(u.as_str()))).await;
        urls.into_iter().zip(results).collect()
    }

    /// Active alarms of every member.
    pub async fn alarm_list(&self) -> Result<AlarmResponse, ClientError> {
        self.alarm(
            "alarm list",
            pb::alarm_request::AlarmAction::Get,
            0,
            AlarmType::None,
        )
        .await
    }

    /// Deactivate one alarm of one member.
    pub async fn alarm_disarm(
        &self,
        member_id: u64,
        alarm: AlarmType,
    ) -> Result<AlarmResponse, ClientError> {
        self.alarm(
            "alarm disarm",
            pb::alarm_request::AlarmAction::Deactivate,
            member_id,
            alarm,
        )
        .await
    }

    /// Deactivate every active alarm (as `etcdctl alarm disarm`); returns
    /// the alarms that were disarmed.
    pub async fn alarm_disarm_all(&self) -> Result<AlarmResponse, ClientError> {
        let listed = self.alarm_list().await?;
        let mut out = AlarmResponse {
            header: listed.header,
            alarms: Vec::new(),
        };
        for a in listed.alarms {
            let r = self.alarm_disarm(a.member_id, a.alarm).await?;
            out.header = r.header;
            out.alarms.extend(r.alarms);
        }
        Ok(out)
    }

    async fn alarm(
        &self,
        op: &'static str,
        action: pb::alarm_request::AlarmAction,
        member_id: u64,
        alarm: AlarmType,
    ) -> Result<AlarmResponse, ClientError> {
        let req = pb::AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm.to_wire(),
        };
        // Getting and (de)activating alarms are idempotent.
        self.unary(op, CallKind::Read, req, |ch, r| {
            let mut c = self.maintenance(ch);
            async move { c.alarm(r).await }
        })
        .await
        .map(Into::into)
    }

    /// Ask the leader to hand leadership to `target_id` (a voting member).
    pub async fn move_leader(&self, target_id: u64) -> Result<ResponseHeader, ClientError> {
        let req = pb::MoveLeaderRequest { target_id };
        self.unary("move leader", CallKind::Write, req, |ch, r| {
            let mut c = self.maintenance(ch);
            async move { c.move_leader(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    /// Hash of the key space up to `revision` (0: newest) on whichever
    /// member answers.
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, ClientError> {
        let req = pb::HashKvRequest { revision };
        self.unary("hash kv", CallKind::Read, req, |ch, r| {
            let mut c = self.maintenance(ch);
            async move { c.hash_kv(r).await }
        })
        .await
        .map(hash_kv_response)
    }

    /// [`hash_kv`](Self::hash_kv) of exactly this endpoint.
    pub async fn hash_kv_at(
        &self,
        endpoint: &str,
        revision: i64,
    ) -> Result<HashKvResponse, ClientError> {
        self.at_endpoint("hash kv", endpoint, |ch, timeout| {
            let mut c = self.maintenance(ch);
            let mut r = tonic::Request::new(pb::HashKvRequest { revision });
            r.set_timeout(timeout);
            async move { c.hash_kv(r).await.map(|r| hash_kv_response(r.into_inner())) }
        })
        .await
    }

    /// Compact the backend storage of exactly this endpoint.
    pub async fn defragment(&self, endpoint: &str) -> Result<ResponseHeader, ClientError> {
        self.at_endpoint("defragment", endpoint, |ch, timeout| {
            let mut c = self.maintenance(ch);
            let mut r = tonic::Request::new(pb::DefragmentRequest {});
            r.set_timeout(timeout);
            async move { c.defragment(r).await.map(|r| r.into_inner().header.into()) }
        })
        .await
    }

    /// Stream a full backup from whichever member answers. The stream's
    /// bytes end with the server's SHA-256 trailer; check it with
    /// [`SnapshotVerifier`](crate::SnapshotVerifier).
    pub async fn snapshot(&self) -> Result<SnapshotStream, ClientError> {
        let (inbound, first) = self
            .with_retry("snapshot", CallKind::Read, |ch, _| {
                let mut c = self.maintenance(ch);
                async move {
                    let mut inbound = c.snapshot(pb::SnapshotRequest {}).await?.into_inner();
                    let first = inbound.message().await?;
                    Ok((inbound, first))
                }
            })
            .await?;
        let header = first
            .as_ref()
            .map(|m| ResponseHeader::from(m.header))
            .unwrap_or_default();
        let idle = self.inner.options.request_timeout;
        let first_chunk = futures::stream::iter(first.map(|m| Ok(m.blob)));
        let rest = futures::stream::unfold(Some(inbound), move |state| async move {
            let mut inbound = state?;
            match tokio::time::timeout(idle, inbound.message()).await {
                Ok(Ok(Some(m))) => Some((Ok(m.blob), Some(inbound))),
                Ok(Ok(None)) => None,
                Ok(Err(status)) => Some((Err(ClientError::rpc("snapshot", status)), None)),
                Err(_) => Some((
                    Err(ClientError::Snapshot(format!(
                        "no data from the server for {idle:?}"
                    ))),
                    None,
                )),
            }
        });
        Ok(SnapshotStream {
            header,
            inner: first_chunk.chain(rest).boxed(),
        })
    }
}

fn members_response(
    header: Option<pb::ResponseHeader>,
    members: Vec<pb::Member>,
) -> MembersResponse {
    MembersResponse {
        header: header.into(),
        members: members.into_iter().map(Into::into).collect(),
    }
}

fn hash_kv_response(r: pb::HashKvResponse) -> HashKvResponse {
    HashKvResponse {
        header: r.header.into(),
        hash: r.hash,
        compact_revision: r.compact_revision,
        hash_revision: r.hash_revision,
    }
}

/// The message-size knobs every generated client has.
pub(crate) trait RawClient {
    fn max_decoding(self, limit: usize) -> Self;
    fn max_encoding(self, limit: usize) -> Self;
}

macro_rules! impl_raw {
    ($($ty:ident),*) => {$(
        impl RawClient for $ty<AuthChannel> {
            fn max_decoding(self, limit: usize) -> Self {
                self.max_decoding_message_size(limit)
            }
            fn max_encoding(self, limit: usize) -> Self {
                self.max_encoding_message_size(limit)
            }
        }
    )*};
}

impl_raw!(
    KvClient,
    WatchClient,
    LeaseClient,
    ClusterClient,
    MaintenanceClient,
    LockClient,
    ElectionClient,
    AuthClient
);
