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
//! `/v3/maintenance/hash`, which here stays Hash's). Every path is also
//! served under etcd 3.4's deprecated `/v3beta/` prefix. `GET /version`
//! answers as etcd's does.

mod json;

pub(crate) use json::error as json_error;

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
use tonic::Status;

use super::common::RequestStream;
use super::{admin, data, Limits};

/// JSON is larger than the protobuf it stands for (base64 bytes are 4/3 of
/// the raw ones, names and quotes come on top): the gateway reads up to
/// twice `max_request_bytes` plus this, and the service then applies
/// `max_request_bytes` to the decoded message as for gRPC.
const JSON_SLACK_BYTES: usize = 64 * 1024;

/// Adds one route per `path => method` to `router`: `path` calls
/// `service.method` through the gateway's `kind` of handler (`unary`,
/// `server_stream` or `bidi`).
macro_rules! routes {
    ($router:expr, $gateway:expr, $kind:ident, $service:expr, { $($path:expr => $method:ident),+ $(,)? }) => {{
        let router = $router;
        $(let router = route_v3(
            router,
            $path,
            $gateway.$kind($service, |s, r| async move { s.$method(r).await }),
        );)+
        router
    }};
}

/// `path` (`/v3/...`) and its `/v3beta/...` form, which etcd 3.4 still
/// serves for clients written against 3.3 (deprecated; 3.5 drops it).
fn route_v3(router: axum::Router, path: &str, handler: MethodRouter) -> axum::Router {
    let beta = path.replacen("/v3/", "/v3beta/", 1);
    router.route(path, handler.clone()).route(&beta, handler)
}

/// The gateway's paths, to serve beside the client port's gRPC routes.
pub fn router(data: &data::Services, admin: &admin::Services, limits: Limits) -> axum::Router {
    let g = Gateway {
        limit_bytes: limits
            .max_request_bytes
            .saturating_mul(2)
            .saturating_add(JSON_SLACK_BYTES),
    };
    let router = axum::Router::new();
    let router = routes!(router, g, unary, &data.kv, {
        "/v3/kv/range" => range,
        "/v3/kv/put" => put,
        "/v3/kv/deleterange" => delete_range,
        "/v3/kv/txn" => txn,
        "/v3/kv/compaction" => compact,
    });
    let router = routes!(router, g, bidi, &data.watch, { "/v3/watch" => open });
    let router = routes!(router, g, bidi, &data.lease, { "/v3/lease/keepalive" => keep_alive });
    // etcd serves the last three under `/v3/kv/lease/` as well.
    let router = routes!(router, g, unary, &data.lease, {
        "/v3/lease/grant" => lease_grant,
        "/v3/lease/revoke" => lease_revoke,
        "/v3/lease/timetolive" => lease_time_to_live,
        "/v3/lease/leases" => lease_leases,
        "/v3/kv/lease/revoke" => lease_revoke,
        "/v3/kv/lease/timetolive" => lease_time_to_live,
        "/v3/kv/lease/leases" => lease_leases,
    });
    let router = routes!(router, g, unary, &admin.cluster, {
        "/v3/cluster/member/add" => member_add,
        "/v3/cluster/member/remove" => member_remove,
        "/v3/cluster/member/update" => member_update,
        "/v3/cluster/member/list" => member_list,
        "/v3/cluster/member/promote" => member_promote,
    });
    let router = routes!(router, g, unary, &admin.maintenance, {
        "/v3/maintenance/alarm" => alarm,
        "/v3/maintenance/status" => status,
        "/v3/maintenance/defragment" => defragment,
        "/v3/maintenance/hash" => hash,
        "/v3/maintenance/hashkv" => hash_kv,
        "/v3/maintenance/transfer-leadership" => move_leader,
        "/v3/maintenance/downgrade" => downgrade,
    });
    let router = routes!(router, g, server_stream, &admin.maintenance, {
        "/v3/maintenance/snapshot" => snapshot,
    });
    let router = routes!(router, g, unary, &admin.auth, {
        "/v3/auth/enable" => auth_enable,
        "/v3/auth/disable" => auth_disable,
        "/v3/auth/status" => auth_status,
        "/v3/auth/authenticate" => authenticate,
        "/v3/auth/user/add" => user_add,
        "/v3/auth/user/get" => user_get,
        "/v3/auth/user/list" => user_list,
        "/v3/auth/user/delete" => user_delete,
        "/v3/auth/user/changepw" => user_change_password,
        "/v3/auth/user/grant" => user_grant_role,
        "/v3/auth/user/revoke" => user_revoke_role,
        "/v3/auth/role/add" => role_add,
        "/v3/auth/role/get" => role_get,
        "/v3/auth/role/list" => role_list,
        "/v3/auth/role/delete" => role_delete,
        "/v3/auth/role/grant" => role_grant_permission,
        "/v3/auth/role/revoke" => role_revoke_permission,
    });
    let router = routes!(router, g, unary, &admin.lock, {
        "/v3/lock/lock" => lock,
        "/v3/lock/unlock" => unlock,
    });
    let router = routes!(router, g, unary, &admin.election, {
        "/v3/election/campaign" => campaign,
        "/v3/election/proclaim" => proclaim,
        "/v3/election/leader" => leader,
        "/v3/election/resign" => resign,
    });
    let router = routes!(router, g, server_stream, &admin.election, {
        "/v3/election/observe" => observe,
    });
    // What etcd clients ask first to learn which paths to use (e.g.
    // `/v3beta/` before 3.4): the etcd API version this member speaks.
    router.route(
        "/version",
        axum::routing::get(|| async {
            let version = crate::node::ETCD_API_VERSION;
            let body = serde_json::json!({"etcdserver": version, "etcdcluster": version});
            (
                [(http::header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
        }),
    )
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
        Resp: Serialize + Send + 'static,
        F: Fn(Arc<S>, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
    {
        self.one_message_in(service, call, json::answer::<Resp>)
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
        self.one_message_in(service, call, json::answer_stream::<Resp, St>)
    }

    /// A call taking the body as one message, its outcome written by
    /// `answer`.
    fn one_message_in<S, Req, Out, F, Fut>(
        self,
        service: &Arc<S>,
        call: F,
        answer: fn(Result<tonic::Response<Out>, Status>) -> axum::response::Response,
    ) -> MethodRouter
    where
        S: Send + Sync + 'static,
        Req: DeserializeOwned + Default + Send + 'static,
        Out: Send + 'static,
        F: Fn(Arc<S>, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<Out>, Status>> + Send + 'static,
    {
        let service = service.clone();
        post(move |request: Request| {
            let (service, call) = (service.clone(), call.clone());
            async move {
                let (parts, body) = request.into_parts();
                match json::read_message::<Req>(body, self.limit_bytes).await {
                    Ok(message) => answer(call(service, grpc_request(parts, message)).await),
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
}

/// The gRPC request a service method takes: `message` with the HTTP
/// request's headers as metadata (`Authorization` among them) and its
/// extensions (the connection's TLS identity). As grpc-gateway, a
/// `Grpc-Metadata-<key>` header is also metadata `<key>` (so
/// `Grpc-Metadata-Token` carries a token too).
fn grpc_request<T>(mut parts: http::request::Parts, message: T) -> tonic::Request<T> {
    let prefixed: Vec<(http::HeaderName, http::HeaderValue)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix(GRPC_METADATA_PREFIX)?;
            let key = http::HeaderName::from_bytes(key.as_bytes()).ok()?;
            Some((key, value.clone()))
        })
        .collect();
    for (key, value) in prefixed {
        parts.headers.append(key, value);
    }
    tonic::Request::from_http(http::Request::from_parts(parts, message))
}

/// grpc-gateway's prefix for headers passed on as metadata (HTTP header
/// names arrive in lower case).
const GRPC_METADATA_PREFIX: &str = "grpc-metadata-";

/// An unknown path: for gRPC, the UNIMPLEMENTED status gRPC clients
/// expect; for anything else (HTTP/1.1 `curl`), grpc-gateway's JSON 404.
pub async fn not_found(request: Request) -> axum::response::Response {
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
