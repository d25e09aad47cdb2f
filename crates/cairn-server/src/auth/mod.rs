//! Who calls, and whether they may: etcd's authentication at the edge.
//!
//! While auth is off (the default) every request runs as anyone, as in
//! etcd. Once it is on, a request names its user by a token (gRPC metadata
//! `token`, from `Authenticate`) or, with `--client-cert-auth`, by its
//! client certificate's common name. The edge checks permissions against
//! this member's copy of the auth state to refuse early; writes travel as
//! [`Command::As`] and are checked again when applied (see
//! `cairn_store::auth`).

pub mod password;
pub mod token;

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_store::auth::Access;
use cairn_store::{Command, KeyRange, StoreError};
use tonic::metadata::MetadataMap;

use crate::error::ServerError;
use crate::node::Node;

/// The gRPC metadata key etcd clients send their token under.
pub const TOKEN_METADATA: &str = "token";

/// The user a request runs as: `None` while auth is off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller(Option<String>);

/// The common name of a verified client certificate (see
/// [`crate::tls::ConnInfo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertUser(pub String);

impl Caller {
    /// Auth off: anyone may do anything.
    pub fn anyone() -> Caller {
        Caller(None)
    }

    pub fn user(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Who calls, from a request's metadata and extensions.
    pub fn of<T>(node: &Node, request: &tonic::Request<T>) -> Result<Caller, ServerError> {
        let cert_user = request
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .and_then(|c| c.cert_user.as_ref());
        Caller::resolve(
            node,
            request.metadata(),
            cert_user.map(|c| c.0.as_str()),
            unix_now_ms(),
        )
    }

    fn resolve(
        node: &Node,
        metadata: &MetadataMap,
        cert_user: Option<&str>,
        now_unix_ms: u64,
    ) -> Result<Caller, ServerError> {
        let store = node.store();
        let auth = store.auth();
        if !auth.enabled {
            return Ok(Caller(None));
        }
        if let Some(value) = metadata.get(TOKEN_METADATA) {
            let text = value.to_str().map_err(|_| ServerError::InvalidAuthToken)?;
            let claims = token::verify(&auth.token_key, text, now_unix_ms)
                .ok_or(ServerError::InvalidAuthToken)?;
            return match auth.users.get(&claims.user) {
                Some(u) if u.credential_revision == claims.credential_revision => {
                    Ok(Caller(Some(claims.user)))
                }
                // Deleted, or its password changed since.
                _ => Err(ServerError::InvalidAuthToken),
            };
        }
        match cert_user {
            // etcd takes the name as is; a name no user has may do nothing.
            Some(name) => Ok(Caller(Some(name.to_string()))),
            None => Err(StoreError::UserEmpty.into()),
        }
    }

    /// Refuse unless the caller may do anything (auth off, or root role).
    pub fn require_admin(&self, node: &Node) -> Result<(), ServerError> {
        match self.user() {
            None => Ok(()),
            Some(user) => Ok(node.store().auth().require_admin(user)?),
        }
    }

    /// Refuse unless the caller may `access` every key of `range`.
    pub fn require(
        &self,
        node: &Node,
        range: &KeyRange,
        access: Access,
    ) -> Result<(), ServerError> {
        match self.user() {
            None => Ok(()),
            Some(user) if node.store().auth().permits(user, range, access) => Ok(()),
            Some(_) => Err(StoreError::PermissionDenied.into()),
        }
    }

    /// Check `command` against this member's auth state, then wrap it so
    /// the state machine checks it again where it is applied.
    pub fn command(&self, node: &Node, command: Command) -> Result<Command, ServerError> {
        let Some(user) = self.user() else {
            return Ok(command);
        };
        {
            let store = node.store();
            store.auth().check_command(user, &command, |id| {
                store.lease_info(id).map(|l| l.keys).unwrap_or_default()
            })?;
        }
        Ok(Command::As {
            user: user.to_string(),
            command: Box::new(command),
        })
    }
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
