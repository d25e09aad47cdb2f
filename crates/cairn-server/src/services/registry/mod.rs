//! The `cairn.v1` services: Session, Registry, Lock and Election. Writes
//! are `Command::Registry` (or lease) commands through `Node::write`;
//! reads are served after a read barrier (linearizable).
//!
//! * [`session`]: sessions are leases; keepalive stream, close, info.
//! * [`names`]: unique/duplicate registries and their watch stream.
//! * [`queue`]: locks and elections (FIFO queues with fencing tokens),
//!   waiting by watch.
//! * [`wait`]: watch-hub helpers shared by the waiting calls and streams.

mod names;
mod queue;
mod session;
mod wait;

use std::sync::Arc;

use cairn_proto::cairn::v1::election_server::ElectionServer;
use cairn_proto::cairn::v1::lock_server::LockServer;
use cairn_proto::cairn::v1::registry_server::RegistryServer;
use cairn_proto::cairn::v1::session_server::SessionServer;
use cairn_store::auth::Access;
use cairn_store::registry::RESERVED_PREFIX;
use cairn_store::registry::{RegistryCommand, RegistryError, RegistryResult};
use cairn_store::{Command, CommandResult, KeyRange};
use tonic::service::Routes;
use tonic::Status;

use super::Limits;
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;

pub fn add(routes: Routes, node: Arc<Node>, limits: Limits) -> Routes {
    let decode_limit = limits.decode_limit();
    routes
        .add_service(
            SessionServer::new(session::SessionService::new(node.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            RegistryServer::new(names::RegistryService::new(node.clone(), limits))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            LockServer::new(queue::LockService::new(node.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            ElectionServer::new(queue::ElectionService::new(node, limits))
                .max_decoding_message_size(decode_limit),
        )
}

/// Refusals as gRPC statuses; all are the caller's to fix.
fn refused(e: RegistryError) -> Status {
    let msg = format!("cairn: {e}");
    match e {
        RegistryError::UnknownRegistry | RegistryError::SessionNotFound => Status::not_found(msg),
        RegistryError::ModeConflict { .. } => Status::failed_precondition(msg),
        RegistryError::NoSpace => Status::resource_exhausted(msg),
        _ => Status::invalid_argument(msg),
    }
}

fn unexpected(what: &str, result: &impl std::fmt::Debug) -> Status {
    ServerError::Internal(format!("unexpected result for {what}: {result:?}")).into()
}

/// Who calls a `cairn.v1` service (registry or claims). With auth on,
/// these services need read and write permission over the whole reserved
/// prefix, where their records live (an admin has it).
pub(crate) fn caller<'a, T>(
    node: &'a Node,
    request: &tonic::Request<T>,
) -> impl std::future::Future<Output = Result<Caller, Status>> + Send + 'a {
    let caller = Caller::of(node, request);
    async move {
        let caller = caller.await?;
        let reserved = KeyRange::prefix(RESERVED_PREFIX);
        caller.require(node, &reserved, Access::Read).await?;
        caller.require(node, &reserved, Access::Write).await?;
        Ok(caller)
    }
}

/// Replicate one registry command; a refusal becomes an error status.
async fn apply(
    node: &Node,
    caller: &Caller,
    command: RegistryCommand,
) -> Result<RegistryResult, Status> {
    match node.write_as(caller, Command::Registry(command)).await? {
        CommandResult::Registry(RegistryResult::Refused(e)) => Err(refused(e)),
        CommandResult::Registry(r) => Ok(r),
        other => Err(unexpected("registry command", &other)),
    }
}

/// Refuse a request whose encoded size exceeds `max_request_bytes`.
fn check_size(limits: &Limits, req: &impl prost::Message) -> Result<(), Status> {
    if req.encoded_len() > limits.max_request_bytes {
        return Err(ServerError::RequestTooLarge.into());
    }
    Ok(())
}
