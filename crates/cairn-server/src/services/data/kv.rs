//! The etcd KV service: reads served from the local store (after a read
//! barrier unless `serializable`), writes replicated through `Node::write`.

use std::sync::Arc;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_store::auth::Access;
use cairn_store::{txn, Command, CommandResult, StoreError};
use prost::Message;
use tonic::{Request, Response, Status};

use super::convert::{self, Headers};
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;
use crate::services::common::{header, Limits};

pub struct KvService {
    node: Arc<Node>,
    limits: Limits,
}

impl KvService {
    pub fn new(node: Arc<Node>, limits: Limits) -> Self {
        KvService { node, limits }
    }

    fn headers(&self) -> Headers {
        Headers {
            base: header(&self.node, Some(0)),
        }
    }

    /// etcd refuses a write whose encoded request exceeds
    /// `--max-request-bytes` before proposing it.
    fn check_size(&self, req: &impl Message) -> Result<(), ServerError> {
        if req.encoded_len() > self.limits.max_request_bytes {
            return Err(ServerError::RequestTooLarge);
        }
        Ok(())
    }

    async fn write(&self, caller: &Caller, command: Command) -> Result<CommandResult, Status> {
        Ok(self.node.write_as(caller, command).await?)
    }
}

pub(super) fn unexpected(what: &str, result: CommandResult) -> Status {
    ServerError::Internal(format!("unexpected result for {what}: {result:?}")).into()
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        let serializable = req.serializable;
        let range = convert::range_request(req)?;
        // A linearizable read is checked after its barrier, against every
        // auth change acknowledged before it (as etcd, after its read index).
        if !serializable {
            self.node.read_barrier().await?;
        }
        caller
            .require(&self.node, &range.range, Access::Read)
            .await?;
        let resp = {
            let store = self.node.store();
            if store.corrupt() {
                return Err(ServerError::Store(StoreError::Corrupt).into());
            }
            store.range(&range).map_err(ServerError::from)?
        };
        Ok(Response::new(convert::range_response(self.headers(), resp)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        self.check_size(&req)?;
        let put = convert::put_request(req)?;
        match self.write(&caller, Command::Put(put)).await? {
            CommandResult::Put(r) => Ok(Response::new(convert::put_response(self.headers(), r))),
            other => Err(unexpected("put", other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        self.check_size(&req)?;
        let delete = convert::delete_request(req)?;
        match self.write(&caller, Command::DeleteRange(delete)).await? {
            CommandResult::DeleteRange(r) => {
                Ok(Response::new(convert::delete_response(self.headers(), r)))
            }
            other => Err(unexpected("delete range", other)),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        self.check_size(&req)?;
        let t = convert::txn_request(req)?;
        if txn::max_branch_ops(&t) > self.limits.max_txn_ops {
            return Err(ServerError::TooManyOps.into());
        }
        txn::check_duplicate_keys(&t).map_err(ServerError::from)?;
        // Every txn goes through Raft, read-only ones included: the store
        // has no read-only txn entry point, and a logged txn is trivially
        // linearizable. A read-only txn changes nothing and takes no
        // revision, so the only cost is a log entry.
        match self.write(&caller, Command::Txn(t)).await? {
            CommandResult::Txn(r) => Ok(Response::new(convert::txn_response(self.headers(), r))),
            other => Err(unexpected("txn", other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        // `physical` needs no extra wait: the store drops the old
        // revisions synchronously while applying the command (on every
        // member), so when the write returns the compaction is done.
        match self
            .write(
                &caller,
                Command::Compact {
                    revision: req.revision,
                },
            )
            .await?
        {
            CommandResult::Compact { revision } => Ok(Response::new(pb::CompactionResponse {
                header: self.headers().at(revision),
            })),
            other => Err(unexpected("compact", other)),
        }
    }
}
