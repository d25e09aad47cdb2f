//! Auth tokens: the user, the credential revision they were issued for and
//! an expiry, signed with HMAC-SHA256 under the cluster's token key (drawn
//! when auth was enabled, replicated with the auth state).
//!
//! Any member checks a token another issued, without asking anyone, and
//! after restarts. A token ends when it expires, when the user's password
//! changes or the user is deleted (the credential revision moves on), and
//! when auth is enabled again (a new key).
//!
//! Form: `cairn1.<hex user>.<credential revision>.<expiry unix ms>.<hex tag>`.
//!
//! `--auth-token` chooses them (`simple`, etcd's default, names them: like
//! etcd's simple tokens they are opaque to clients, unlike them any member
//! takes them) or etcd's JWT tokens ([`super::jwt`]); see [`Tokens`].

use ring::hmac;

use super::jwt::{Jwt, JwtKeyError, JwtSpec};
use crate::error::ServerError;

const PREFIX: &str = "cairn1";
/// Longest token accepted, so a client cannot make us hash megabytes (a
/// JWT signed with an 8192-bit RSA key takes ~1.6 KiB).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// `--auth-token`: which tokens `Authenticate` hands out and requests
/// present, as configured (files named, not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSpec {
    /// `simple`: Cairn's own tokens, good for `--auth-token-ttl` seconds.
    Cairn,
    /// `jwt,sign-method=...,pub-key=...,priv-key=...,ttl=...`.
    Jwt(JwtSpec),
}

impl TokenSpec {
    /// etcd's `--auth-token` value: a type, then options after commas.
    pub fn parse(value: &str) -> Result<TokenSpec, String> {
        let (kind, options) = value.split_once(',').unwrap_or((value, ""));
        match kind {
            "simple" if options.is_empty() => Ok(TokenSpec::Cairn),
            "simple" => Err("simple takes no options".to_string()),
            "jwt" => Ok(TokenSpec::Jwt(JwtSpec::parse(options)?)),
            _ => Err(format!("unknown token type {kind:?} (simple or jwt,...)")),
        }
    }
}

/// A member's tokens: what it issues on `Authenticate` and accepts.
#[derive(Debug)]
pub enum Tokens {
    Cairn { ttl_ms: u64 },
    Jwt(Box<Jwt>),
}

impl Tokens {
    /// Loads the keys `spec` names.
    pub fn open(spec: &TokenSpec, ttl_secs: u64) -> Result<Tokens, JwtKeyError> {
        Ok(match spec {
            TokenSpec::Cairn => Tokens::Cairn {
                ttl_ms: ttl_secs.saturating_mul(1000),
            },
            TokenSpec::Jwt(spec) => Tokens::Jwt(Box::new(Jwt::load(spec)?)),
        })
    }

    /// A token for `user` at `credential_revision`, under the cluster's
    /// `token_key` (drawn when auth was enabled).
    pub fn issue(
        &self,
        token_key: &[u8],
        user: String,
        credential_revision: u64,
        now_unix_ms: u64,
    ) -> Result<String, ServerError> {
        let ttl_ms = match self {
            Tokens::Cairn { ttl_ms } => *ttl_ms,
            Tokens::Jwt(jwt) => u64::try_from(jwt.ttl().as_millis()).unwrap_or(u64::MAX),
        };
        let claims = Claims {
            user,
            credential_revision,
            expires_unix_ms: now_unix_ms.saturating_add(ttl_ms),
        };
        match self {
            Tokens::Cairn { .. } => Ok(issue(token_key, &claims)),
            Tokens::Jwt(jwt) => jwt
                .issue(token_key, &claims)
                .ok_or(ServerError::TokenVerifyOnly),
        }
    }

    /// The claims of a token this member accepts at `now_unix_ms`.
    pub fn verify(&self, token_key: &[u8], token: &str, now_unix_ms: u64) -> Option<Claims> {
        match self {
            Tokens::Cairn { .. } => verify(token_key, token, now_unix_ms),
            Tokens::Jwt(jwt) => jwt.verify(token_key, token, now_unix_ms),
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user: String,
    pub credential_revision: u64,
    pub expires_unix_ms: u64,
}

pub fn issue(key: &[u8], claims: &Claims) -> String {
    let body = format!(
        "{PREFIX}.{}.{}.{}",
        hex(claims.user.as_bytes()),
        claims.credential_revision,
        claims.expires_unix_ms
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body.as_bytes());
    format!("{body}.{}", hex(tag.as_ref()))
}

/// The claims of `token` if it was signed with `key` and has not expired
/// at `now_unix_ms`.
pub fn verify(key: &[u8], token: &str, now_unix_ms: u64) -> Option<Claims> {
    if token.len() > MAX_TOKEN_BYTES || key.is_empty() {
        return None;
    }
    let (body, tag) = token.rsplit_once('.')?;
    let tag = unhex(tag)?;
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        body.as_bytes(),
        &tag,
    )
    .ok()?;
    let mut parts = body.split('.');
    if parts.next()? != PREFIX {
        return None;
    }
    let user = String::from_utf8(unhex(parts.next()?)?).ok()?;
    let credential_revision = parts.next()?.parse().ok()?;
    let expires_unix_ms: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || expires_unix_ms <= now_unix_ms {
        return None;
    }
    Some(Claims {
        user,
        credential_revision,
        expires_unix_ms,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            user: "alice.ops".into(),
            credential_revision: 7,
            expires_unix_ms: 2_000,
        }
    }

    #[test]
    fn a_token_verifies_under_its_key_until_it_expires() {
        let key = [1u8; 32];
        let t = issue(&key, &claims());
        assert_eq!(verify(&key, &t, 1_999), Some(claims()));
        assert_eq!(verify(&key, &t, 2_000), None, "expired");
        assert_eq!(verify(&[2u8; 32], &t, 0), None, "another key");
        assert_eq!(verify(&[], &t, 0), None, "no key: auth never enabled");
    }

    #[test]
    fn altered_or_malformed_tokens_are_refused() {
        let key = [1u8; 32];
        let t = issue(&key, &claims());
        // Another user's name under the same tag.
        let forged = t.replacen(&hex(b"alice.ops"), &hex(b"root"), 1);
        assert_eq!(verify(&key, &forged, 0), None);
        let later = t.replacen(".2000.", ".9999999.", 1);
        assert_eq!(verify(&key, &later, 0), None);
        for bad in [
            "",
            ".",
            "cairn1",
            "a.b.c.d.e",
            &t[..t.len() - 1],
            &"x".repeat(5000),
        ] {
            assert_eq!(verify(&key, bad, 0), None, "{bad:?}");
        }
    }
}
