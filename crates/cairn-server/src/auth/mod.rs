//! Who calls, and whether they may: etcd's authentication at the edge.
//!
//! While auth is off (the default) every request runs as anyone, as in
//! etcd. Once it is on, a request names its user by a token (gRPC metadata
//! `token`, from `Authenticate`; `authorization` as etcd also reads, the
//! JSON gateway's header) or, with `--client-cert-auth`, by its
//! client certificate's common name. The edge checks permissions against
//! this member's copy of the auth state to refuse early; writes travel as
//! [`Command::As`] and are checked again when applied (see
//! `cairn_store::auth`).

pub mod jwt;
pub mod password;
pub mod token;

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_store::auth::Access;
use cairn_store::{Command, KeyRange, StoreError};

use crate::error::ServerError;
use crate::node::Node;

/// The gRPC metadata key etcd clients send their token under.
pub const TOKEN_METADATA: &str = "token";
/// Where else etcd looks for it: the HTTP `Authorization` header, which
/// JSON gateway clients send the token in (the bare token, no scheme).
pub const AUTHORIZATION_METADATA: &str = "authorization";

/// The user a request runs as: `None` while auth is off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller(Option<String>);

/// The common name of a verified client certificate (see
/// [`crate::tls::ConnInfo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertUser(pub String);

/// What a request presents to say who it is, taken from it at once (the
/// request itself need not live across the awaits that follow). No
/// `Debug`: the token is a bearer credential.
#[derive(Clone, Default)]
struct Presented {
    /// The `token` (else `authorization`) metadata: `Err` when it is not
    /// text.
    token: Option<Result<String, ()>>,
    cert_user: Option<String>,
}

impl Presented {
    fn of<T>(request: &tonic::Request<T>) -> Presented {
        let token = request
            .metadata()
            .get(TOKEN_METADATA)
            .or_else(|| request.metadata().get(AUTHORIZATION_METADATA))
            .map(|v| v.to_str().map(str::to_string).map_err(|_| ()));
        let cert_user = request
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .and_then(|c| c.cert_user.as_ref())
            .map(|c| c.0.clone());
        Presented { token, cert_user }
    }
}

/// Whether an answer is a refusal a fresher copy of the auth state might
/// not give.
fn is_refusal(e: &ServerError) -> bool {
    matches!(
        e,
        ServerError::InvalidAuthToken
            | ServerError::Store(StoreError::UserEmpty | StoreError::PermissionDenied)
    )
}

/// Runs `check` against this member's copy of the auth state; if it
/// refuses, brings the copy up to date with a read barrier and asks again.
/// A member may trail the cluster by the changes it has not applied yet
/// (a follower a moment after `auth disable`, a grant or a new password
/// was acknowledged): a refusal is then the cluster's answer, not the
/// lagging copy's. An approval needs no barrier: a write is checked again
/// where it is applied, and a read admitted by a copy a moment old is what
/// a serializable read is anyway.
async fn fresh<R>(
    node: &Node,
    check: impl Fn() -> Result<R, ServerError>,
) -> Result<R, ServerError> {
    fresh_unless_sure(
        node,
        check,
        |answer| matches!(answer, Err(e) if is_refusal(e)),
    )
    .await
}

/// [`fresh`], asking again after a barrier whenever `doubtful` holds for
/// the first answer.
async fn fresh_unless_sure<R>(
    node: &Node,
    check: impl Fn() -> Result<R, ServerError>,
    doubtful: impl Fn(&Result<R, ServerError>) -> bool,
) -> Result<R, ServerError> {
    let answer = check();
    if !doubtful(&answer) {
        return answer;
    }
    node.read_barrier().await?;
    check()
}

impl Caller {
    pub fn user(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Who calls, from a request's metadata and connection (see [`fresh`]).
    pub fn of<'a, T>(
        node: &'a Node,
        request: &tonic::Request<T>,
    ) -> impl std::future::Future<Output = Result<Caller, ServerError>> + Send + 'a {
        let presented = Presented::of(request);
        // Besides a refusal, "auth is off" to a request with a token is
        // doubtful: a token means its client logged in, so auth was on
        // then, and the copy may trail an `auth enable` acknowledged
        // elsewhere (the request, sent on without a user, was refused where
        // applied: "user name is empty"). Not a client certificate alone:
        // those come with auth off too (every request of a
        // `--client-cert-auth` cluster).
        let has_token = matches!(presented.token, Some(Ok(_)));
        async move {
            fresh_unless_sure(
                node,
                || Caller::resolve(node, &presented, unix_now_ms()),
                |answer| match answer {
                    Err(e) => is_refusal(e),
                    Ok(Caller(None)) => has_token,
                    Ok(_) => false,
                },
            )
            .await
        }
    }

    fn resolve(
        node: &Node,
        presented: &Presented,
        now_unix_ms: u64,
    ) -> Result<Caller, ServerError> {
        let store = node.store();
        let auth = store.auth();
        if !auth.enabled {
            return Ok(Caller(None));
        }
        if let Some(text) = &presented.token {
            let text = text.as_ref().map_err(|_| ServerError::InvalidAuthToken)?;
            let claims = node
                .tokens
                .verify(&auth.token_key, text, now_unix_ms)
                .ok_or(ServerError::InvalidAuthToken)?;
            return match auth.users.get(&claims.user) {
                Some(u) if u.credential_revision == claims.credential_revision => {
                    Ok(Caller(Some(claims.user)))
                }
                // Deleted, or its password changed since.
                _ => Err(ServerError::InvalidAuthToken),
            };
        }
        match &presented.cert_user {
            // etcd takes the name as is; a name no user has may do nothing.
            Some(name) => Ok(Caller(Some(name.clone()))),
            None => Err(StoreError::UserEmpty.into()),
        }
    }

    /// Refuse unless the caller may do anything (auth off, or root role).
    pub async fn require_admin(&self, node: &Node) -> Result<(), ServerError> {
        fresh(node, || match self.user() {
            None => Ok(()),
            Some(user) => Ok(node.store().auth().require_admin(user)?),
        })
        .await
    }

    /// Refuse unless the caller may `access` every key of `range`.
    pub async fn require(
        &self,
        node: &Node,
        range: &KeyRange,
        access: Access,
    ) -> Result<(), ServerError> {
        fresh(node, || self.require_now(node, range, access)).await
    }

    /// [`Caller::require`] against this member's copy as it is, for
    /// places that cannot wait (a watch created inside its stream's loop;
    /// etcd checks a watch the same way).
    pub fn require_now(
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
    pub async fn command(&self, node: &Node, command: Command) -> Result<Command, ServerError> {
        let Some(user) = self.user() else {
            return Ok(command);
        };
        fresh(node, || {
            let store = node.store();
            Ok(store.auth().check_command(user, &command, |id| {
                store.lease_info(id).map(|l| l.keys).unwrap_or_default()
            })?)
        })
        .await?;
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
