//! etcd's Auth service: turning authentication on and off, users, roles
//! and their permissions. With authentication on, all but `auth_status`
//! (and a user's look-up of itself or of a role it holds) need the root
//! role.

use cairn_proto::authpb;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use tonic::transport::Channel;

use super::types::*;
use super::AuthChannel;
use crate::client::Client;
use crate::error::ClientError;
use crate::retry::CallKind;
use crate::types::ResponseHeader;

impl Client {
    pub(crate) fn auth_raw(&self, ch: Channel) -> AuthClient<AuthChannel> {
        self.wrap_raw(AuthClient::new, ch)
    }

    /// Turn authentication on. The cluster refuses unless a `root` user
    /// holding the `root` role exists.
    pub async fn auth_enable(&self) -> Result<ResponseHeader, ClientError> {
        self.unary(
            "auth enable",
            CallKind::Write,
            pb::AuthEnableRequest {},
            |ch, r| {
                let mut c = self.auth_raw(ch);
                async move { c.auth_enable(r).await }
            },
        )
        .await
        .map(|r| r.header.into())
    }

    /// Turn authentication off (as root).
    pub async fn auth_disable(&self) -> Result<ResponseHeader, ClientError> {
        self.unary(
            "auth disable",
            CallKind::Write,
            pb::AuthDisableRequest {},
            |ch, r| {
                let mut c = self.auth_raw(ch);
                async move { c.auth_disable(r).await }
            },
        )
        .await
        .map(|r| r.header.into())
    }

    /// Whether authentication is on.
    pub async fn auth_status(&self) -> Result<AuthStatusResponse, ClientError> {
        self.unary(
            "auth status",
            CallKind::Read,
            pb::AuthStatusRequest {},
            |ch, r| {
                let mut c = self.auth_raw(ch);
                async move { c.auth_status(r).await }
            },
        )
        .await
        .map(Into::into)
    }

    /// Add a user. The password is sent as is (use TLS on untrusted
    /// networks); the server keeps only a salted hash of it.
    pub async fn user_add(
        &self,
        name: impl Into<String>,
        password: impl Into<String>,
        options: UserAddOptions,
    ) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            options: Some(authpb::UserAddOptions {
                no_password: options.no_password,
            }),
            hashed_password: String::new(),
        };
        self.unary("user add", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.user_add(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    pub async fn user_delete(
        &self,
        name: impl Into<String>,
    ) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthUserDeleteRequest { name: name.into() };
        self.unary("user delete", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.user_delete(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    /// Set a user's password; the user's tokens stop working.
    pub async fn user_change_password(
        &self,
        name: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthUserChangePasswordRequest {
            name: name.into(),
            password: password.into(),
            hashed_password: String::new(),
        };
        self.unary("user change password", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.user_change_password(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    pub async fn user_grant_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
    ) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        self.unary("user grant role", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.user_grant_role(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    pub async fn user_revoke_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
    ) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthUserRevokeRoleRequest {
            name: user.into(),
            role: role.into(),
        };
        self.unary("user revoke role", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.user_revoke_role(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    /// The roles of a user.
    pub async fn user_get(&self, name: impl Into<String>) -> Result<UserGetResponse, ClientError> {
        let req = pb::AuthUserGetRequest { name: name.into() };
        self.unary("user get", CallKind::Read, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.user_get(r).await }
        })
        .await
        .map(|r| UserGetResponse {
            header: r.header.into(),
            roles: r.roles,
        })
    }

    pub async fn user_list(&self) -> Result<UserListResponse, ClientError> {
        self.unary(
            "user list",
            CallKind::Read,
            pb::AuthUserListRequest {},
            |ch, r| {
                let mut c = self.auth_raw(ch);
                async move { c.user_list(r).await }
            },
        )
        .await
        .map(|r| UserListResponse {
            header: r.header.into(),
            users: r.users,
        })
    }

    pub async fn role_add(&self, name: impl Into<String>) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthRoleAddRequest { name: name.into() };
        self.unary("role add", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.role_add(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    pub async fn role_delete(
        &self,
        name: impl Into<String>,
    ) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthRoleDeleteRequest { role: name.into() };
        self.unary("role delete", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.role_delete(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    /// The permissions of a role.
    pub async fn role_get(&self, name: impl Into<String>) -> Result<RoleGetResponse, ClientError> {
        let req = pb::AuthRoleGetRequest { role: name.into() };
        self.unary("role get", CallKind::Read, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.role_get(r).await }
        })
        .await
        .map(|r| RoleGetResponse {
            header: r.header.into(),
            permissions: r.perm.into_iter().map(Into::into).collect(),
        })
    }

    pub async fn role_list(&self) -> Result<RoleListResponse, ClientError> {
        self.unary(
            "role list",
            CallKind::Read,
            pb::AuthRoleListRequest {},
            |ch, r| {
                let mut c = self.auth_raw(ch);
                async move { c.role_list(r).await }
            },
        )
        .await
        .map(|r| RoleListResponse {
            header: r.header.into(),
            roles: r.roles,
        })
    }

    /// Let a role access `[key, range_end)` (see [`Permission`] for how
    /// ranges are written; [`prefix_range_end`](crate::prefix_range_end)
    /// gives a prefix's end).
    pub async fn role_grant_permission(
        &self,
        role: impl Into<String>,
        perm_type: PermissionType,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
    ) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(authpb::Permission {
                perm_type: perm_type.to_wire(),
                key: key.into(),
                range_end: range_end.into(),
            }),
        };
        self.unary("role grant permission", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.role_grant_permission(r).await }
        })
        .await
        .map(|r| r.header.into())
    }

    /// Take back the permission a role has on exactly `[key, range_end)`.
    pub async fn role_revoke_permission(
        &self,
        role: impl Into<String>,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
    ) -> Result<ResponseHeader, ClientError> {
        let req = pb::AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: key.into(),
            range_end: range_end.into(),
        };
        self.unary("role revoke permission", CallKind::Write, req, |ch, r| {
            let mut c = self.auth_raw(ch);
            async move { c.role_revoke_permission(r).await }
        })
        .await
        .map(|r| r.header.into())
    }
}
