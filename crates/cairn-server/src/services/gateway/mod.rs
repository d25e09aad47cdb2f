//! etcd's JSON gateway on the client port: `POST /v3/kv/range`,
//! `/v3/kv/put`, `/v3/watch`, … with the request as proto3 JSON (bytes in
//! base64, 64-bit integers as strings), as etcd serves it for `curl` and
//! for clients without gRPC.
//!
//! Each path calls the same service object as its gRPC method, in
//! process: the call carries the HTTP request's headers as metadata and
//! its connection's extensions, so authentication (a token in the
//! `Authorization` header, or the client certificate's name), permission
//! checks, forwarding to the leader and every limit are the gRPC path's.
//! etcd's gateway instead dials its own gRPC port; calling in process
//! saves a loopback round trip and keeps the caller's certificate.
//!
//! The paths are etcd's (from the `google.api.http` options of its
//! `rpc.proto`, `v3lock.proto` and `v3election.proto`), except that
//! `HashKV` is at `/v3/maintenance/hashkv` (etcd 3.4 gave it Hash's path,
//! `/v3/maintenance/hash`, which here stays Hash's). `GET /version` answers
//! as etcd's does.

mod json;

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::routing::{post, MethodRouter};
use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3lockpb::lock_server::Lock;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::service::Routes;
use tonic::Status;

use super::common::RequestStream;
use super::{admin, data, Limits};

/// JSON is larger than the protobuf it stands for (base64 bytes are 4/3 of
/// the raw ones, names and quotes come on top): the gateway reads up to
/// twice `max_request_bytes` plus this, and the service then applies
/// `max_request_bytes` to the decoded message as for gRPC.
const JSON_SLACK_BYTES: usize = 64 * 1024;

/// The gateway's paths, added to the client port's routes.
pub fn add(
    routes: Routes,
    data: &data::Services,
    admin: &admin::Services,
    limits: Limits,
) -> Routes {
    let g = Gateway {
        limit_bytes: limits
            .max_request_bytes
            .saturating_mul(2)
            .saturating_add(JSON_SLACK_BYTES),
    };
    let (kv, watch, lease) = (&data.kv, &data.watch, &data.lease);
    let router = routes
        .into_axum_router()
        .route(
            "/v3/kv/range",
            g.unary(kv, |s, r| async move { s.range(r).await }),
        )
        .route(
            "/v3/kv/put",
            g.unary(kv, |s, r| async move { s.put(r).await }),
        )
        .route(
            "/v3/kv/deleterange",
            g.unary(kv, |s, r| async move { s.delete_range(r).await }),
        )
        .route(
            "/v3/kv/txn",
            g.unary(kv, |s, r| async move { s.txn(r).await }),
        )
        .route(
            "/v3/kv/compaction",
            g.unary(kv, |s, r| async move { s.compact(r).await }),
        )
        .route(
            "/v3/watch",
            g.bidi(watch, |s, r| async move { s.open(r).await }),
        )
        .route(
            "/v3/lease/grant",
            g.unary(lease, |s, r| async move { s.lease_grant(r).await }),
        )
        .route(
            "/v3/lease/keepalive",
            g.bidi(lease, |s, r| async move { s.keep_alive(r).await }),
        );
    // etcd serves these three under `/v3/kv/lease/` as well.
    let router = ["/v3/lease", "/v3/kv/lease"]
        .into_iter()
        .fold(router, |router, prefix| {
            router
                .route(
                    &format!("{prefix}/revoke"),
                    g.unary(lease, |s, r| async move { s.lease_revoke(r).await }),
                )
                .route(
                    &format!("{prefix}/timetolive"),
                    g.unary(lease, |s, r| async move { s.lease_time_to_live(r).await }),
                )
                .route(
                    &format!("{prefix}/leases"),
                    g.unary(lease, |s, r| async move { s.lease_leases(r).await }),
                )
        });
    // What etcd clients ask first to learn which paths to use (e.g.
    // `/v3beta/` before 3.4): the etcd API version this member speaks.
    let router = router.route(
        "/version",
        axum::routing::get(|| async {
            let version = crate::node::ETCD_API_VERSION;
            let body = serde_json::json!({"etcdserver": version, "etcdcluster": version});
            (
                [(http::header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
        }),
    );
    let router = router.fallback(not_found);
    let router = g.cluster(router, &admin.cluster);
    let router = g.maintenance(router, &admin.maintenance);
    let router = g.auth(router, &admin.auth);
    let router = g.recipes(router, &admin.lock, &admin.election);
    Routes::from(router)
}

/// Builds the gateway's handlers.
#[derive(Clone, Copy)]
struct Gateway {
    /// The longest request body read (see [`JSON_SLACK_BYTES`]).
    limit_bytes: usize,
}

impl Gateway {
    /// A unary call: one JSON message in, one out.
    fn unary<S, Req, Resp, F, Fut>(self, service: &Arc<S>, call: F) -> MethodRouter
    where
        S: Send + Sync + 'static,
        Req: DeserializeOwned + Default + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(Arc<S>, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
    {
        let service = service.clone();
        post(move |request: Request| {
            let (service, call) = (service.clone(), call.clone());
            async move {
                let (parts, body) = request.into_parts();
                match json::read_message::<Req>(body, self.limit_bytes).await {
                    Ok(message) => json::answer(call(service, grpc_request(parts, message)).await),
                    Err(status) => json::error(&status),
                }
            }
        })
    }

    /// A call with one JSON message in and a stream of answers out.
    fn server_stream<S, Req, Resp, St, F, Fut>(self, service: &Arc<S>, call: F) -> MethodRouter
    where
        S: Send + Sync + 'static,
        Req: DeserializeOwned + Default + Send + 'static,
        Resp: Serialize + Send + 'static,
        St: Stream<Item = Result<Resp, Status>> + Send + 'static,
        F: Fn(Arc<S>, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<St>, Status>> + Send + 'static,
    {
        let service = service.clone();
        post(move |request: Request| {
            let (service, call) = (service.clone(), call.clone());
            async move {
                let (parts, body) = request.into_parts();
                match json::read_message::<Req>(body, self.limit_bytes).await {
                    Ok(message) => {
                        json::answer_stream(call(service, grpc_request(parts, message)).await)
                    }
                    Err(status) => json::error(&status),
                }
            }
        })
    }

    /// A call with a stream both ways: the body is read as a sequence of
    /// JSON messages while the answers stream out.
    fn bidi<S, Req, Resp, St, F, Fut>(self, service: &Arc<S>, call: F) -> MethodRouter
    where
        S: Send + Sync + 'static,
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        St: Stream<Item = Result<Resp, Status>> + Send + 'static,
        F: Fn(Arc<S>, tonic::Request<RequestStream<Req>>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<St>, Status>> + Send + 'static,
    {
        let service = service.clone();
        post(move |request: Request| {
            let (service, call) = (service.clone(), call.clone());
            async move {
                let (parts, body) = request.into_parts();
                let messages = json::read_messages::<Req>(body, self.limit_bytes);
                json::answer_stream(call(service, grpc_request(parts, messages)).await)
            }
        })
    }

    fn cluster<S: Cluster>(self, router: axum::Router, s: &Arc<S>) -> axum::Router {
        router
            .route(
                "/v3/cluster/member/add",
                self.unary(s, |s, r| async move { s.member_add(r).await }),
            )
            .route(
                "/v3/cluster/member/remove",
                self.unary(s, |s, r| async move { s.member_remove(r).await }),
            )
            .route(
                "/v3/cluster/member/update",
                self.unary(s, |s, r| async move { s.member_update(r).await }),
            )
            .route(
                "/v3/cluster/member/list",
                self.unary(s, |s, r| async move { s.member_list(r).await }),
            )
            .route(
                "/v3/cluster/member/promote",
                self.unary(s, |s, r| async move { s.member_promote(r).await }),
            )
    }

    fn maintenance<S: Maintenance>(self, router: axum::Router, s: &Arc<S>) -> axum::Router {
        router
            .route(
                "/v3/maintenance/alarm",
                self.unary(s, |s, r| async move { s.alarm(r).await }),
            )
            .route(
                "/v3/maintenance/status",
                self.unary(s, |s, r| async move { s.status(r).await }),
            )
            .route(
                "/v3/maintenance/defragment",
                self.unary(s, |s, r| async move { s.defragment(r).await }),
            )
            .route(
                "/v3/maintenance/hash",
                self.unary(s, |s, r| async move { s.hash(r).await }),
            )
            .route(
                "/v3/maintenance/hashkv",
                self.unary(s, |s, r| async move { s.hash_kv(r).await }),
            )
            .route(
                "/v3/maintenance/snapshot",
                self.server_stream(s, |s, r| async move { s.snapshot(r).await }),
            )
            .route(
                "/v3/maintenance/transfer-leadership",
                self.unary(s, |s, r| async move { s.move_leader(r).await }),
            )
            .route(
                "/v3/maintenance/downgrade",
                self.unary(s, |s, r| async move { s.downgrade(r).await }),
            )
    }

    fn auth<S: Auth>(self, router: axum::Router, s: &Arc<S>) -> axum::Router {
        router
            .route(
                "/v3/auth/enable",
                self.unary(s, |s, r| async move { s.auth_enable(r).await }),
            )
            .route(
                "/v3/auth/disable",
                self.unary(s, |s, r| async move { s.auth_disable(r).await }),
            )
            .route(
                "/v3/auth/status",
                self.unary(s, |s, r| async move { s.auth_status(r).await }),
            )
            .route(
                "/v3/auth/authenticate",
                self.unary(s, |s, r| async move { s.authenticate(r).await }),
            )
            .route(
                "/v3/auth/user/add",
                self.unary(s, |s, r| async move { s.user_add(r).await }),
            )
            .route(
                "/v3/auth/user/get",
                self.unary(s, |s, r| async move { s.user_get(r).await }),
            )
            .route(
                "/v3/auth/user/list",
                self.unary(s, |s, r| async move { s.user_list(r).await }),
            )
            .route(
                "/v3/auth/user/delete",
                self.unary(s, |s, r| async move { s.user_delete(r).await }),
            )
            .route(
                "/v3/auth/user/changepw",
                self.unary(s, |s, r| async move { s.user_change_password(r).await }),
            )
            .route(
                "/v3/auth/user/grant",
                self.unary(s, |s, r| async move { s.user_grant_role(r).await }),
            )
            .route(
                "/v3/auth/user/revoke",
                self.unary(s, |s, r| async move { s.user_revoke_role(r).await }),
            )
            .route(
                "/v3/auth/role/add",
                self.unary(s, |s, r| async move { s.role_add(r).await }),
            )
            .route(
                "/v3/auth/role/get",
                self.unary(s, |s, r| async move { s.role_get(r).await }),
            )
            .route(
                "/v3/auth/role/list",
                self.unary(s, |s, r| async move { s.role_list(r).await }),
            )
            .route(
                "/v3/auth/role/delete",
                self.unary(s, |s, r| async move { s.role_delete(r).await }),
            )
            .route(
                "/v3/auth/role/grant",
                self.unary(s, |s, r| async move { s.role_grant_permission(r).await }),
            )
            .route(
                "/v3/auth/role/revoke",
                self.unary(s, |s, r| async move { s.role_revoke_permission(r).await }),
            )
    }

    fn recipes<L: Lock, E: Election>(
        self,
        router: axum::Router,
        lock: &Arc<L>,
        election: &Arc<E>,
    ) -> axum::Router {
        router
            .route(
                "/v3/lock/lock",
                self.unary(lock, |s, r| async move { s.lock(r).await }),
            )
            .route(
                "/v3/lock/unlock",
                self.unary(lock, |s, r| async move { s.unlock(r).await }),
            )
            .route(
                "/v3/election/campaign",
                self.unary(election, |s, r| async move { s.campaign(r).await }),
            )
            .route(
                "/v3/election/proclaim",
                self.unary(election, |s, r| async move { s.proclaim(r).await }),
            )
            .route(
                "/v3/election/leader",
                self.unary(election, |s, r| async move { s.leader(r).await }),
            )
            .route(
                "/v3/election/observe",
                self.server_stream(election, |s, r| async move { s.observe(r).await }),
            )
            .route(
                "/v3/election/resign",
                self.unary(election, |s, r| async move { s.resign(r).await }),
            )
    }
}

/// The gRPC request a service method takes: `message` with the HTTP
/// request's headers as metadata (`Authorization` among them) and its
/// extensions (the connection's TLS identity).
fn grpc_request<T>(parts: http::request::Parts, message: T) -> tonic::Request<T> {
    tonic::Request::from_http(http::Request::from_parts(parts, message))
}

/// An unknown path: for gRPC, the UNIMPLEMENTED status gRPC clients
/// expect; for anything else (HTTP/1.1 `curl`), grpc-gateway's JSON 404.
async fn not_found(request: Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        Status::unimplemented("")
            .into_http::<axum::body::Body>()
            .into_response()
    } else {
        json::error(&Status::not_found("Not Found"))
    }
}
