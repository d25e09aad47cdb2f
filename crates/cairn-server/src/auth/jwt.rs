//! etcd's JWT auth tokens (`--auth-token jwt,sign-method=RS256,...`):
//! a JSON Web Token (RFC 7519, JWS compact form) with etcd's claims
//! `username`, `revision` and `exp`, signed with the operator's key.
//!
//! Why offer them beside Cairn's own tokens: etcd's configurations name
//! them (etcd recommends JWT over its `simple` tokens), and anyone holding
//! the public key can check a token without asking the cluster.
//!
//! `revision` is the user's credential revision, as in Cairn's own tokens:
//! a token ends when its user's password changes or the user is deleted,
//! not on every change of the auth state as in etcd (whose clients then
//! authenticate again all the same). A private claim `cairn_epoch`, drawn
//! from the cluster's token key, ends every token when auth is enabled
//! again, as it ends Cairn's own tokens.
//!
//! Keys come from PEM files: RSA keys as PKCS#8 or PKCS#1, EC keys as
//! PKCS#8 or SEC1 (`openssl ecparam -genkey`), Ed25519 keys as PKCS#8,
//! public keys as SubjectPublicKeyInfo (`openssl pkey -pubout`). For the
//! HMAC methods the `priv-key` file's bytes are the secret, as in etcd.
//! Signatures are *ring*'s; ES512 (P-521) is not among them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use ring::{digest, hmac};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use x509_parser::prelude::FromDer;

use super::token::{Claims, MAX_TOKEN_BYTES};

/// A JWS signature algorithm etcd accepts in `sign-method=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMethod {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl SignMethod {
    const ALL: [SignMethod; 12] = [
        SignMethod::Rs256,
        SignMethod::Rs384,
        SignMethod::Rs512,
        SignMethod::Ps256,
        SignMethod::Ps384,
        SignMethod::Ps512,
        SignMethod::Es256,
        SignMethod::Es384,
        SignMethod::EdDsa,
        SignMethod::Hs256,
        SignMethod::Hs384,
        SignMethod::Hs512,
    ];

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            SignMethod::Rs256 => "RS256",
            SignMethod::Rs384 => "RS384",
            SignMethod::Rs512 => "RS512",
            SignMethod::Ps256 => "PS256",
            SignMethod::Ps384 => "PS384",
            SignMethod::Ps512 => "PS512",
            SignMethod::Es256 => "ES256",
            SignMethod::Es384 => "ES384",
            SignMethod::EdDsa => "EdDSA",
            SignMethod::Hs256 => "HS256",
            SignMethod::Hs384 => "HS384",
            SignMethod::Hs512 => "HS512",
        }
    }

    fn parse(name: &str) -> Result<SignMethod, String> {
        SignMethod::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = SignMethod::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown sign-method {name:?} (one of {}; ES512 is not supported)",
                    known.join(", ")
                )
            })
    }

    fn is_hmac(self) -> bool {
        matches!(
            self,
            SignMethod::Hs256 | SignMethod::Hs384 | SignMethod::Hs512
        )
    }
}

/// The parsed `jwt,...` form of `--auth-token`; names files, reads none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSpec {
    pub method: SignMethod,
    /// Verifies tokens; derived from `priv_key` when absent.
    pub pub_key: Option<PathBuf>,
    /// Signs tokens; without it this member only verifies them.
    pub priv_key: Option<PathBuf>,
    /// How long a token is good for (etcd's default: 5 minutes).
    pub ttl: Duration,
}

/// etcd's default `ttl=`.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The longest `ttl=` taken, as for Cairn's own tokens.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl JwtSpec {
    /// The options after `jwt,`: `sign-method=`, `pub-key=`, `priv-key=`
    /// and `ttl=` (Go's duration syntax), separated by commas.
    pub fn parse(options: &str) -> Result<JwtSpec, String> {
        let (mut method, mut pub_key, mut priv_key, mut ttl) = (None, None, None, None);
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| format!("jwt option {option:?} is not name=value"))?;
            match name {
                "sign-method" => method = Some(SignMethod::parse(value)?),
                "pub-key" => pub_key = Some(PathBuf::from(value)),
                "priv-key" => priv_key = Some(PathBuf::from(value)),
                "ttl" => {
                    let d = crate::compactor::parse_duration(value)
                        .ok_or_else(|| format!("jwt ttl {value:?} is not a duration like 5m"))?;
                    if d.is_zero() || d > MAX_TTL {
                        return Err(format!("jwt ttl {value:?} must be between 1ms and 720h"));
                    }
                    ttl = Some(d);
                }
                _ => {
                    return Err(format!(
                        "unknown jwt option {name:?} (sign-method, pub-key, priv-key, ttl)"
                    ));
                }
            }
        }
        let method = method.ok_or("jwt needs sign-method= (e.g. RS256)")?;
        if method.is_hmac() && priv_key.is_none() {
            return Err(format!(
                "jwt {} needs priv-key= (the file's bytes are the secret)",
                method.name()
            ));
        }
        if pub_key.is_none() && priv_key.is_none() {
            return Err("jwt needs pub-key= or priv-key=".to_string());
        }
        Ok(JwtSpec {
            method,
            pub_key,
            priv_key,
            ttl: ttl.unwrap_or(DEFAULT_TTL),
        })
    }
}

/// Why the keys of a [`JwtSpec`] could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    #[error("--auth-token jwt {option} {path}: {reason}")]
    File {
        option: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("--auth-token jwt: {0}")]
    Spec(&'static str),
}

fn key_err(option: &'static str, path: &Path, reason: impl std::fmt::Display) -> JwtKeyError {
    JwtKeyError::File {
        option,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// What signs: a key pair, or the HMAC secret.
enum Signer {
    Rsa(signature::RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ecdsa(signature::EcdsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
    Hmac(hmac::Key),
}

/// What verifies: a public key, or the HMAC secret.
enum Verifier {
    Public(signature::UnparsedPublicKey<Vec<u8>>),
    Hmac(hmac::Key),
}

/// A member's JWT keys, loaded at start.
pub struct Jwt {
    method: SignMethod,
    /// `None`: only verifies (no `priv-key`).
    signer: Option<Signer>,
    verifier: Verifier,
    ttl: Duration,
    rng: SystemRandom,
    /// Tokens verified lately: a client sends its token with every request,
    /// and a public-key signature check costs tens of µs (see
    /// [`VerifiedCache`]).
    verified: VerifiedCache,
}

/// Claims of tokens whose signature already verified, by a digest of the
/// token and the token key (a new key, auth enabled again, misses).
/// Bounded: when full it is emptied, and tokens in use verify again once.
#[derive(Default)]
struct VerifiedCache(std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>);

/// Most tokens [`VerifiedCache`] holds (~100 bytes each).
const VERIFIED_CACHE_ENTRIES: usize = 4096;

impl VerifiedCache {
    fn key(token_key: &[u8], token: &str) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&(token_key.len() as u64).to_le_bytes());
        ctx.update(token_key);
        ctx.update(token.as_bytes());
        ctx.finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes")
    }

    fn get(&self, key: &[u8; 32]) -> Option<Claims> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn insert(&self, key: [u8; 32], claims: Claims) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= VERIFIED_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(key, claims);
        }
    }
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("method", &self.method)
            .field("signs", &self.signer.is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// etcd's claims, and ours.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    username: String,
    revision: u64,
    /// Expiry, Unix seconds.
    exp: u64,
    /// Which enabling of auth issued it (see the module doc).
    cairn_epoch: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// The verification algorithm of an asymmetric method (`None` for HMAC,
/// which verifies with its secret).
fn verification(method: SignMethod) -> Option<&'static dyn signature::VerificationAlgorithm> {
    Some(match method {
        SignMethod::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        SignMethod::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        SignMethod::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        SignMethod::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        SignMethod::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
        SignMethod::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        SignMethod::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        SignMethod::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
        SignMethod::EdDsa => &signature::ED25519,
        SignMethod::Hs256 | SignMethod::Hs384 | SignMethod::Hs512 => return None,
    })
}

fn hmac_algorithm(method: SignMethod) -> hmac::Algorithm {
    match method {
        SignMethod::Hs384 => hmac::HMAC_SHA384,
        SignMethod::Hs512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

/// A SEC1 `ECPrivateKey` (DER) wrapped as PKCS#8 for `curve_oid`, which is
/// what *ring* reads (it checks the key's own curve parameters, if any,
/// against the wrapper's).
fn sec1_to_pkcs8(sec1: &[u8], curve_oid: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let algorithm = tlv(0x30, &[EC_PUBLIC_KEY, curve_oid].concat());
    let version = [0x02, 0x01, 0x00];
    tlv(0x30, &[&version[..], &algorithm, &tlv(0x04, sec1)].concat())
}

const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// The signer in a PEM private key file, with its public key in the form
/// *ring* verifies against.
fn load_signer(method: SignMethod, path: &Path) -> Result<(Signer, Vec<u8>), JwtKeyError> {
    let err = |reason: String| key_err("priv-key", path, reason);
    if method.is_hmac() {
        let secret = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if secret.is_empty() {
            return Err(err("is empty".into()));
        }
        return Ok((
            Signer::Hmac(hmac::Key::new(hmac_algorithm(method), &secret)),
            Vec::new(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => err("holds no PEM private key".into()),
        e => err(e.to_string()),
    })?;
    let rejected =
        |e: ring::error::KeyRejected| err(format!("not a key for {}: {e}", method.name()));
    let rng = SystemRandom::new();
    match method {
        SignMethod::Rs256
        | SignMethod::Rs384
        | SignMethod::Rs512
        | SignMethod::Ps256
        | SignMethod::Ps384
        | SignMethod::Ps512 => {
            let pair = match &key {
                PrivateKeyDer::Pkcs8(k) => signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
                PrivateKeyDer::Pkcs1(k) => signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
                _ => return Err(err(format!("{} needs an RSA key", method.name()))),
            }
            .map_err(rejected)?;
            let encoding: &'static dyn signature::RsaEncoding = match method {
                SignMethod::Rs256 => &signature::RSA_PKCS1_SHA256,
                SignMethod::Rs384 => &signature::RSA_PKCS1_SHA384,
                SignMethod::Rs512 => &signature::RSA_PKCS1_SHA512,
                SignMethod::Ps256 => &signature::RSA_PSS_SHA256,
                SignMethod::Ps384 => &signature::RSA_PSS_SHA384,
                _ => &signature::RSA_PSS_SHA512,
            };
            let public = pair.public().as_ref().to_vec();
            Ok((Signer::Rsa(pair, encoding), public))
        }
        SignMethod::Es256 | SignMethod::Es384 => {
            let (alg, oid) = if method == SignMethod::Es256 {
                (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, P256_OID)
            } else {
                (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, P384_OID)
            };
            let pkcs8 = match &key {
                PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
                PrivateKeyDer::Sec1(k) => sec1_to_pkcs8(k.secret_sec1_der(), oid),
                _ => return Err(err(format!("{} needs an EC key", method.name()))),
            };
            let pair = signature::EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng).map_err(rejected)?;
            let public = pair.public_key().as_ref().to_vec();
            Ok((Signer::Ecdsa(pair), public))
        }
        SignMethod::EdDsa => {
            let PrivateKeyDer::Pkcs8(k) = &key else {
                return Err(err("EdDSA needs an Ed25519 key in PKCS#8".into()));
            };
            let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der())
                .map_err(rejected)?;
            let public = pair.public_key().as_ref().to_vec();
            Ok((Signer::Ed25519(pair), public))
        }
        SignMethod::Hs256 | SignMethod::Hs384 | SignMethod::Hs512 => {
            Err(err("HMAC keys are read above".into()))
        }
    }
}

/// The public key in a PEM `PUBLIC KEY` file, in the form *ring* verifies
/// against (the SubjectPublicKeyInfo's key bits).
fn load_public(method: SignMethod, path: &Path) -> Result<Vec<u8>, JwtKeyError> {
    let err = |reason: String| key_err("pub-key", path, reason);
    let spki = SubjectPublicKeyInfoDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            err("holds no PEM PUBLIC KEY (SubjectPublicKeyInfo)".into())
        }
        e => err(e.to_string()),
    })?;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
        .map_err(|e| err(format!("not a SubjectPublicKeyInfo: {e}")))?;
    let family = info.algorithm.algorithm.to_id_string();
    let expected = match method {
        SignMethod::Es256 | SignMethod::Es384 => "1.2.840.10045.2.1",
        SignMethod::EdDsa => "1.3.101.112",
        _ => "1.2.840.113549.1.1.1",
    };
    if family != expected {
        return Err(err(format!(
            "a key of algorithm {family}, not one for {}",
            method.name()
        )));
    }
    Ok(info.subject_public_key.data.to_vec())
}

/// A short fingerprint of the cluster's token key, new each time auth is
/// enabled (see the module doc).
fn epoch(token_key: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, &[b"cairn jwt epoch\0", token_key].concat());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Jwt {
    /// Reads the keys `spec` names; when both are given they must be one
    /// pair, so a member never issues tokens it would refuse.
    pub fn load(spec: &JwtSpec) -> Result<Jwt, JwtKeyError> {
        let method = spec.method;
        let (signer, derived) = match &spec.priv_key {
            Some(path) => {
                let (signer, derived) = load_signer(method, path)?;
                (Some(signer), Some(derived))
            }
            None => (None, None),
        };
        let verifier = match (&signer, verification(method)) {
            (Some(Signer::Hmac(key)), _) => Verifier::Hmac(key.clone()),
            (_, Some(algorithm)) => {
                let public = match (&spec.pub_key, derived) {
                    (Some(path), derived) => {
                        let public = load_public(method, path)?;
                        if derived.is_some_and(|d| d != public) {
                            return Err(key_err(
                                "pub-key",
                                path,
                                "is not the public half of priv-key",
                            ));
                        }
                        public
                    }
                    (None, Some(derived)) => derived,
                    (None, None) => return Err(JwtKeyError::Spec("needs pub-key= or priv-key=")),
                };
                Verifier::Public(signature::UnparsedPublicKey::new(algorithm, public))
            }
            (_, None) => return Err(JwtKeyError::Spec("an HMAC sign-method needs priv-key=")),
        };
        Ok(Jwt {
            method,
            signer,
            verifier,
            ttl: spec.ttl,
            rng: SystemRandom::new(),
            verified: VerifiedCache::default(),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed token for `claims` (its expiry rounded down to a second);
    /// `None` on a member with no private key.
    pub fn issue(&self, token_key: &[u8], claims: &Claims) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let header = Header {
            alg: self.method.name().to_string(),
            typ: Some("JWT".to_string()),
        };
        let payload = Payload {
            username: claims.user.clone(),
            revision: claims.credential_revision,
            exp: claims.expires_unix_ms / 1000,
            cairn_epoch: epoch(token_key),
        };
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).ok()?)
        );
        let message = signing_input.as_bytes();
        let signature = match signer {
            Signer::Rsa(pair, encoding) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &self.rng, message, &mut sig).ok()?;
                sig
            }
            Signer::Ecdsa(pair) => pair.sign(&self.rng, message).ok()?.as_ref().to_vec(),
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Hmac(key) => hmac::sign(key, message).as_ref().to_vec(),
        };
        Some(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// The claims of `token` if this member's key verifies it, it names
    /// this member's method, was issued since auth was last enabled and
    /// has not expired at `now_unix_ms`.
    pub fn verify(&self, token_key: &[u8], token: &str, now_unix_ms: u64) -> Option<Claims> {
        if token.len() > MAX_TOKEN_BYTES || token_key.is_empty() {
            return None;
        }
        let cache_key = VerifiedCache::key(token_key, token);
        let claims = match self.verified.get(&cache_key) {
            Some(claims) => claims,
            None => {
                let claims = self.verify_signed(token_key, token)?;
                self.verified.insert(cache_key, claims.clone());
                claims
            }
        };
        (claims.expires_unix_ms > now_unix_ms).then_some(claims)
    }

    /// The claims of `token` if its signature and method are this
    /// member's and it was issued since auth was last enabled; expiry
    /// aside.
    fn verify_signed(&self, token_key: &[u8], token: &str) -> Option<Claims> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        // The method is the member's, never the token's: a token cannot
        // choose `none`, or HMAC keyed with the public key.
        if header.alg != self.method.name() {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        match &self.verifier {
            Verifier::Public(key) => key.verify(signing_input.as_bytes(), &signature).ok()?,
            Verifier::Hmac(key) => hmac::verify(key, signing_input.as_bytes(), &signature).ok()?,
        }
        let payload: Payload =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if payload.cairn_epoch != epoch(token_key) {
            return None;
        }
        Some(Claims {
            user: payload.username,
            credential_revision: payload.revision,
            expires_unix_ms: payload.exp.checked_mul(1000)?,
        })
    }
}

#[cfg(test)]
mod tests;
