//! Authentication: the token a client logs in for and sends with every
//! call, as etcd's clientv3 does.
//!
//! With [`ClientOptions::credentials`](crate::ClientOptions::credentials)
//! set, the first call (or [`Client::authenticate`]) trades them for a token
//! with `Authenticate`; every request then carries it as gRPC metadata
//! `token`, put there by a [`TokenInterceptor`] on every generated client
//! the crate makes, unary and streaming alike. One token serves every
//! endpoint: any member verifies a token any member issued.
//!
//! When a member refuses the token (`invalid auth token`: it expired, the
//! password changed, auth was enabled anew; `user name is empty`: auth was
//! turned on after this client found it off), the client logs in again
//! once and repeats the call. Members refuse before acting on the request,
//! so repeating a write this way cannot apply it twice.

mod api;
mod types;

pub use types::*;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use futures::future::BoxFuture;
use futures::FutureExt;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::Client;
use crate::error::ClientError;
use crate::retry::CallKind;

/// The gRPC metadata key etcd servers (and Cairn) read the token from.
pub const TOKEN_METADATA_KEY: &str = "token";

/// Longest token the client keeps. Cairn's are under 200 bytes and etcd's
/// JWTs a few hundred; a server handing out more is refused rather than
/// having its answer copied into every request header.
const MAX_TOKEN_BYTES: usize = 4096;

/// A channel whose requests carry the client's token, if it holds one.
pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

/// What the last login found out.
enum Held {
    /// No login yet, or the last one failed: log in before the next call.
    Unknown,
    /// The cluster answered that authentication is off: calls go without
    /// a token (and log in again if refused for lacking one).
    AuthOff,
    /// The token to send.
    Token(AsciiMetadataValue),
}

struct State {
    held: Held,
    /// Raised on every change, so that calls refused with the same stale
    /// token log in again once between them, not once each.
    generation: u64,
}

/// The one token a client and its clones hold, shared by every endpoint
/// and every call. Its size is bounded by [`MAX_TOKEN_BYTES`].
pub(crate) struct TokenSlot {
    state: RwLock<State>,
    /// One `Authenticate` at a time: calls that find no valid token wait
    /// for the login under way instead of each making their own (a login
    /// costs the server a deliberately slow password hash).
    login: tokio::sync::Mutex<()>,
}

impl TokenSlot {
    pub(crate) fn new() -> Self {
        TokenSlot {
            state: RwLock::new(State {
                held: Held::Unknown,
                generation: 0,
            }),
            login: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn token(&self) -> Option<AsciiMetadataValue> {
        match &self.read().held {
            Held::Token(t) => Some(t.clone()),
            Held::Unknown | Held::AuthOff => None,
        }
    }

    /// The generation, once a login has told whether there is a token.
    fn known(&self) -> Option<u64> {
        let s = self.read();
        match s.held {
            Held::Unknown => None,
            Held::AuthOff | Held::Token(_) => Some(s.generation),
        }
    }

    fn set(&self, held: Held) -> u64 {
        let mut s = self.write();
        s.held = held;
        s.generation += 1;
        s.generation
    }
}

/// Puts the client's current token, if it holds one, on each request as
/// metadata `token`. Cheap to clone; shares the client's token.
#[derive(Clone)]
pub struct TokenInterceptor {
    /// The client's slot, read at each request: a token renewed by one
    /// call is what every later request sends.
    slot: Arc<TokenSlot>,
}

impl std::fmt::Debug for TokenInterceptor {
    // The token is a bearer credential: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenInterceptor").finish_non_exhaustive()
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = self.slot.token() {
            request.metadata_mut().insert(TOKEN_METADATA_KEY, token);
        }
        Ok(request)
    }
}

/// What a call knows about the token it goes out with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthTicket {
    /// The slot's generation when the call started (or last logged in).
    generation: u64,
    /// Logged in again for this call already, or no credentials to log
    /// in with: a refusal is then the answer.
    renewed: bool,
}

/// Refusals after which a new token may help, as etcd's clientv3
/// `shouldRefreshToken`: the token is invalid (expired, credentials
/// changed, auth re-enabled), the request came without one (auth was
/// enabled after this client found it off), or it predates an auth change
/// (etcd's `auth old revision`).
pub(crate) fn needs_new_token(status: &Status) -> bool {
    let m = status.message();
    match status.code() {
        Code::Unauthenticated => m.starts_with("etcdserver: invalid auth token"),
        Code::InvalidArgument => {
            m == "etcdserver: user name is empty"
                || m == "etcdserver: revision of auth store is old"
        }
        _ => false,
    }
}

/// `Authenticate`'s refusal while auth is off, which is not an error for a
/// client configured with credentials: etcd's clientv3 goes on without a
/// token then, and so does this one.
fn auth_not_enabled(e: &ClientError) -> bool {
    e.status().is_some_and(|s| {
        s.code() == Code::FailedPrecondition
            && s.message() == "etcdserver: authentication is not enabled"
    })
}

fn token_value(token: String) -> Result<AsciiMetadataValue, ClientError> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(ClientError::Protocol(format!(
            "authenticate answered a token of {} bytes (expected 1 to {MAX_TOKEN_BYTES})",
            token.len()
        )));
    }
    // The text of an invalid value would be the token: not in the error.
    AsciiMetadataValue::try_from(token).map_err(|_| {
        ClientError::Protocol("authenticate answered a token that is not header-safe".into())
    })
}

impl Client {
    /// Requests over `ch` carry this client's token.
    pub(crate) fn authed(&self, ch: Channel) -> AuthChannel {
        InterceptedService::new(
            ch,
            TokenInterceptor {
                slot: self.inner.token.clone(),
            },
        )
    }

    /// Log in now (again, if a token is held), e.g. to check the
    /// credentials before the first call, or before using the raw clients,
    /// which send the token held but never log in themselves. Succeeds
    /// without a token when the cluster has authentication off. Fails with
    /// `InvalidArgument` when no credentials are configured.
    pub async fn authenticate(&self) -> Result<(), ClientError> {
        if self.inner.options.credentials.is_none() {
            return Err(ClientError::InvalidArgument(
                "no credentials to authenticate with (ClientOptions::credentials)".into(),
            ));
        }
        let generation = self.inner.token.read().generation;
        self.log_in(Some(generation)).await.map(drop)
    }

    /// Before a call: log in first when credentials are configured and no
    /// login has told yet whether there is a token.
    pub(crate) async fn auth_ticket(&self) -> Result<AuthTicket, ClientError> {
        if self.inner.options.credentials.is_none() {
            return Ok(AuthTicket {
                generation: 0,
                renewed: true,
            });
        }
        let generation = match self.inner.token.known() {
            Some(g) => g,
            None => self.log_in(None).await?,
        };
        Ok(AuthTicket {
            generation,
            renewed: false,
        })
    }

    /// After a try failed with `status`: whether to repeat it, having
    /// logged in again (at most once per call).
    pub(crate) async fn renew_token(
        &self,
        ticket: &mut AuthTicket,
        status: &Status,
    ) -> Result<bool, ClientError> {
        if ticket.renewed || !needs_new_token(status) {
            return Ok(false);
        }
        tracing::debug!(
            code = ?status.code(),
            error = status.message(),
            "the token was refused; authenticating again"
        );
        ticket.generation = self.log_in(Some(ticket.generation)).await?;
        ticket.renewed = true;
        Ok(true)
    }

    /// Log in, unless another call did meanwhile: since generation `stale`
    /// was seen, or (`None`) at all. Returns the generation to go on with.
    async fn log_in(&self, stale: Option<u64>) -> Result<u64, ClientError> {
        let slot = &self.inner.token;
        let _one_at_a_time = slot.login.lock().await;
        match stale {
            None => {
                if let Some(g) = slot.known() {
                    return Ok(g);
                }
            }
            Some(seen) => {
                let now = slot.read().generation;
                if now != seen {
                    return Ok(now);
                }
            }
        }
        match self.fetch_token().await {
            Ok(held) => Ok(slot.set(held)),
            Err(e) => {
                // The next call logs in first rather than sending a token
                // known to be refused.
                slot.set(Held::Unknown);
                Err(e)
            }
        }
    }

    /// `Authenticate` with failover and retries. Boxed: the retry loop
    /// that runs it is the one that calls back here to renew tokens.
    fn fetch_token(&self) -> BoxFuture<'_, Result<Held, ClientError>> {
        async move {
            let Some(c) = &self.inner.options.credentials else {
                return Err(ClientError::InvalidArgument(
                    "no credentials to authenticate with".into(),
                ));
            };
            let req = pb::AuthenticateRequest {
                name: c.user.clone(),
                password: c.password.clone(),
            };
            let opts = &self.inner.options;
            // A login changes nothing: safe to repeat like a read.
            let result = self
                .retry_loop("authenticate", CallKind::Read, None, |ch, remaining| {
                    // Without the token interceptor: a refused token
                    // must not ride along with the login replacing it.
                    let mut c = AuthClient::new(ch)
                        .max_decoding_message_size(opts.max_response_bytes)
                        .max_encoding_message_size(opts.max_request_bytes);
                    let mut r = tonic::Request::new(req.clone());
                    r.set_timeout(remaining);
                    async move { c.authenticate(r).await.map(|r| r.into_inner().token) }
                })
                .await;
            match result {
                Ok(token) => Ok(Held::Token(token_value(token)?)),
                Err(e) if auth_not_enabled(&e) => Ok(Held::AuthOff),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_a_new_token_may_cure() {
        assert!(needs_new_token(&Status::unauthenticated(
            "etcdserver: invalid auth token"
        )));
        assert!(needs_new_token(&Status::invalid_argument(
            "etcdserver: user name is empty"
        )));
        assert!(needs_new_token(&Status::invalid_argument(
            "etcdserver: revision of auth store is old"
        )));
        // Wrong password, missing permission, other errors: no.
        for s in [
            Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            Status::permission_denied("etcdserver: permission denied"),
            Status::unavailable("etcdserver: invalid auth token"),
            Status::invalid_argument("etcdserver: key is not provided"),
        ] {
            assert!(!needs_new_token(&s), "{s:?}");
        }
    }

    #[test]
    fn the_slot_hands_out_the_token_and_counts_changes() {
        let slot = Arc::new(TokenSlot::new());
        assert_eq!(slot.known(), None);
        let mut i = TokenInterceptor { slot: slot.clone() };
        let r = i.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get(TOKEN_METADATA_KEY).is_none());

        let g = slot.set(Held::Token(token_value("tok.1".into()).unwrap()));
        assert_eq!(slot.known(), Some(g));
        let r = i.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get(TOKEN_METADATA_KEY).unwrap(), "tok.1");

        let g2 = slot.set(Held::AuthOff);
        assert!(g2 > g);
        assert_eq!(slot.known(), Some(g2));
        let r = i.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get(TOKEN_METADATA_KEY).is_none());
        assert!(!format!("{i:?}").contains("tok"));
    }

    #[test]
    fn unusable_tokens_are_refused_without_showing_them() {
        assert!(token_value(String::new()).is_err());
        assert!(token_value("x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        let e = token_value("secret\ntoken".into()).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(token_value("x".repeat(MAX_TOKEN_BYTES)).is_ok());
    }
}
