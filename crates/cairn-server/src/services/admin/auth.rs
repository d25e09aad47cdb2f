//! etcd's Auth service: enable/disable, users, roles, permissions, and
//! `Authenticate`, which trades a password for a token.
//!
//! Changes are `Command::Auth` through Raft (as `Command::As` from an admin
//! once auth is on). Passwords are hashed here, in a blocking thread, at
//! most [`MAX_HASHING`] at a time: a hash costs ~75 ms of a core on
//! purpose, and a flood of logins must not take every core from the
//! members' Raft work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn_proto::authpb;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_store::auth::{AuthCommand, PermType, Permission};
use cairn_store::{Command, CommandResult, KeyRange, StoreError};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::auth::{password, unix_now_ms, Caller};
use crate::error::ServerError;
use crate::node::Node;
use crate::services::common::header;

/// Passwords hashed or checked at once on this member: a flood of logins
/// takes at most one core.
const MAX_HASHING: usize = 1;
/// Hashes that may wait for their turn; more are refused (etcd's "too many
/// requests"), so a flood cannot pile up requests without bound.
const MAX_HASHING_QUEUED: usize = 64;

pub struct AuthService {
    node: Arc<Node>,
    /// Turns to hash (see [`MAX_HASHING`]).
    hashing: Arc<Semaphore>,
    /// Hashes waiting for a turn.
    hashing_queued: AtomicUsize,
}

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        AuthService {
            node,
            hashing: Arc::new(Semaphore::new(MAX_HASHING)),
            hashing_queued: AtomicUsize::new(0),
        }
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(header(&self.node, None))
    }

    /// Who calls; with auth on, only an admin may manage it.
    fn admin<T>(
        &self,
        request: &Request<T>,
    ) -> impl std::future::Future<Output = Result<Caller, Status>> + Send + '_ {
        let caller = Caller::of(&self.node, request);
        async move {
            let caller = caller.await?;
            caller.require_admin(&self.node).await?;
            Ok(caller)
        }
    }

    async fn change(&self, caller: &Caller, change: AuthCommand) -> Result<(), Status> {
        match self.node.write_as(caller, Command::Auth(change)).await? {
            CommandResult::Auth { .. } => Ok(()),
            other => Err(ServerError::Internal(format!("unexpected auth result {other:?}")).into()),
        }
    }

    /// Runs a password hash or check off the async threads, one at a
    /// time, at most [`MAX_HASHING_QUEUED`] waiting.
    async fn hashing<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Status> {
        let permit = {
            // Counted while waiting, also when the caller goes away
            // meanwhile (the future is dropped, the guard still runs).
            let waiting = Waiting::enter(&self.hashing_queued);
            if waiting.ahead >= MAX_HASHING_QUEUED {
                return Err(Status::resource_exhausted("etcdserver: too many requests"));
            }
            self.hashing.acquire().await
        };
        let _permit = permit.map_err(|_| ServerError::Stopped)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ServerError::Internal(format!("password hashing: {e}")).into())
    }

    /// A credential for a new password: `None` for a user without one.
    async fn credential(
        &self,
        password: String,
        hashed: &str,
        no_password: bool,
    ) -> Result<Option<Vec<u8>>, Status> {
        if !hashed.is_empty() {
            return Err(ServerError::InvalidArgument(
                "hashed passwords are not accepted; send the password (over TLS)".into(),
            )
            .into());
        }
        if no_password {
            return Ok(None);
        }
        if password.is_empty() {
            // etcd refuses an empty password unless `no_password` is set.
            return Err(ServerError::InvalidArgument("password is empty".into()).into());
        }
        let iterations = self.node.config.auth_password_iterations;
        Ok(Some(
            self.hashing(move || password::hash(&password, iterations))
                .await?,
        ))
    }

    /// Reads of the auth state wait for every change acknowledged before.
    async fn barrier(&self) -> Result<(), Status> {
        Ok(self.node.read_barrier().await?)
    }
}

/// One hash waiting for its turn, counted until dropped.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// How many were waiting before this one.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let ahead = count.fetch_add(1, Ordering::Relaxed);
        Waiting { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

fn perm_type(t: i32) -> Result<PermType, Status> {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Read) => Ok(PermType::Read),
        Ok(authpb::permission::Type::Write) => Ok(PermType::Write),
        Ok(authpb::permission::Type::Readwrite) => Ok(PermType::ReadWrite),
        Err(_) => Err(ServerError::InvalidArgument(format!("unknown permission type {t}")).into()),
    }
}

fn perm_to_wire(p: &Permission) -> authpb::Permission {
    let t = match p.perm_type {
        PermType::Read => authpb::permission::Type::Read,
        PermType::Write => authpb::permission::Type::Write,
        PermType::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: t as i32,
        key: p.range.start.clone(),
        range_end: p.range.end.clone(),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let caller = self.admin(&request).await?;
        let mut token_key = vec![0u8; 32];
        SystemRandom::new()
            .fill(&mut token_key)
            .map_err(|_| ServerError::Internal("no random source for the token key".into()))?;
        self.change(&caller, AuthCommand::Enable { token_key })
            .await?;
        if self.node.config.client_tls().is_none() {
            // etcd warns the same way.
            tracing::warn!(
                "auth is on but this member's client port has no TLS: passwords and tokens travel in clear text"
            );
        }
        Ok(Response::new(pb::AuthEnableResponse {
            header: self.header(),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let caller = self.admin(&request).await?;
        self.change(&caller, AuthCommand::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.header(),
        }))
    }

    async fn auth_status(
        &self,
        _request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        self.barrier().await?;
        let (enabled, auth_revision) = {
            let store = self.node.store();
            (store.auth().enabled, store.auth().revision)
        };
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = request.into_inner();
        // Checked against every change acknowledged before: a password
        // changed a moment ago no longer works anywhere, and auth enabled a
        // moment ago through another member is on here too.
        self.barrier().await?;
        if !self.node.store().auth().enabled {
            return Err(ServerError::AuthNotEnabled.into());
        }
        let found = {
            let store = self.node.store();
            let auth = store.auth();
            auth.users.get(&req.name).map(|u| {
                (
                    u.credential.clone(),
                    u.credential_revision,
                    auth.token_key.clone(),
                )
            })
        };
        let password = req.password;
        let Some((Some(credential), credential_revision, key)) = found else {
            // No such user, or one without a password: take as long as a
            // wrong password does, so the time of the answer does not
            // tell which names exist.
            let iterations = self.node.config.auth_password_iterations;
            self.hashing(move || password::verify(&password::decoy(iterations), &password))
                .await?;
            return Err(ServerError::AuthFailed.into());
        };
        if !self
            .hashing(move || password::verify(&credential, &password))
            .await?
        {
            return Err(ServerError::AuthFailed.into());
        }
        let token = self
            .node
            .tokens
            .issue(&key, req.name, credential_revision, unix_now_ms())?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(ServerError::Store(StoreError::UserEmpty).into());
        }
        let no_password = req.options.is_some_and(|o| o.no_password);
        let credential = self
            .credential(req.password, &req.hashed_password, no_password)
            .await?;
        self.change(
            &caller,
            AuthCommand::UserAdd {
                name: req.name,
                credential,
            },
        )
        .await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: self.header(),
        }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let name = request.into_inner().name;
        // Users may look themselves up.
        if caller.user() != Some(name.as_str()) {
            caller.require_admin(&self.node).await?;
        }
        self.barrier().await?;
        let roles = self
            .node
            .store()
            .auth()
            .users
            .get(&name)
            .map(|u| u.roles.iter().cloned().collect())
            .ok_or(ServerError::Store(StoreError::UserNotFound))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        self.admin(&request).await?;
        self.barrier().await?;
        let users = self.node.store().auth().users.keys().cloned().collect();
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header(),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let caller = self.admin(&request).await?;
        let name = request.into_inner().name;
        self.change(&caller, AuthCommand::UserDelete { name })
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: self.header(),
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        if !self.node.store().auth().users.contains_key(&req.name) {
            return Err(ServerError::Store(StoreError::UserNotFound).into());
        }
        let credential = self
            .credential(req.password, &req.hashed_password, false)
            .await?;
        self.change(
            &caller,
            AuthCommand::UserChangePassword {
                name: req.name,
                credential,
            },
        )
        .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: self.header(),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        self.change(
            &caller,
            AuthCommand::UserGrantRole {
                user: req.user,
                role: req.role,
            },
        )
        .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: self.header(),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        self.change(
            &caller,
            AuthCommand::UserRevokeRole {
                user: req.name,
                role: req.role,
            },
        )
        .await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: self.header(),
        }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let caller = self.admin(&request).await?;
        let name = request.into_inner().name;
        self.change(&caller, AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: self.header(),
        }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let role = request.into_inner().role;
        // Users may look up the roles they hold.
        let holds = caller.user().is_some_and(|u| {
            self.node
                .store()
                .auth()
                .users
                .get(u)
                .is_some_and(|u| u.roles.contains(&role))
        });
        if !holds {
            caller.require_admin(&self.node).await?;
        }
        self.barrier().await?;
        let store = self.node.store();
        let auth = store.auth();
        let perm = match auth.roles.get(&role) {
            Some(r) => r.permissions.iter().map(perm_to_wire).collect(),
            // The root role exists without being added, and may do
            // anything: etcd lists no permissions for it.
            None if role == cairn_store::auth::ROOT_ROLE => Vec::new(),
            None => return Err(ServerError::Store(StoreError::RoleNotFound).into()),
        };
        drop(store);
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        self.admin(&request).await?;
        self.barrier().await?;
        let roles = self.node.store().auth().roles.keys().cloned().collect();
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let caller = self.admin(&request).await?;
        let name = request.into_inner().role;
        self.change(&caller, AuthCommand::RoleDelete { name })
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: self.header(),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let perm = req
            .perm
            .ok_or_else(|| ServerError::InvalidArgument("permission is not provided".into()))?;
        let permission = Permission {
            perm_type: perm_type(perm.perm_type)?,
            range: KeyRange::new(perm.key, perm.range_end),
        };
        self.change(
            &caller,
            AuthCommand::RoleGrantPermission {
                role: req.name,
                permission,
            },
        )
        .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: self.header(),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        self.change(
            &caller,
            AuthCommand::RoleRevokePermission {
                role: req.role,
                range: KeyRange::new(req.key, req.range_end),
            },
        )
        .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: self.header(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_hashes_are_counted_until_dropped() {
        let count = AtomicUsize::new(0);
        let first = Waiting::enter(&count);
        let second = Waiting::enter(&count);
        assert_eq!((first.ahead, second.ahead), (0, 1));
        drop(first);
        // A request given up while waiting leaves the count too.
        drop(second);
        assert_eq!(count.load(Ordering::Relaxed), 0);
        assert_eq!(Waiting::enter(&count).ahead, 0);
    }
}
