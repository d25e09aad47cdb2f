//! Password credentials: PBKDF2-HMAC-SHA256 with a random salt, made at
//! the edge (the state machine draws no random numbers) and stored opaque
//! in the replicated auth state.
//!
//! Layout: version (1 byte, `1`), iterations (4, big-endian), salt (16),
//! derived key (32). The iterations travel with each credential, so a
//! later build may raise them without breaking stored ones.

use std::num::NonZeroU32;

use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

const VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;
const LEN: usize = 1 + 4 + SALT_LEN + KEY_LEN;
/// ~75 ms of one core on the machine of BENCHMARKS.md (100,000 took 24 ms
/// per etcdctl login there), about what etcd's bcrypt (cost 10) takes:
/// dear enough to slow a guesser, cheap enough for a login. OWASP asks
/// 600,000 for PBKDF2-HMAC-SHA256; `--auth-password-iterations` raises it
/// where logins are rare (clients log in once per token lifetime).
pub const ITERATIONS: u32 = 300_000;

/// A new credential for `password`.
pub fn hash(password: &str, iterations: u32) -> Vec<u8> {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system random source works");
    let iterations = NonZeroU32::new(iterations.max(1)).expect("at least 1");
    let mut key = [0u8; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut key,
    );
    let mut out = Vec::with_capacity(LEN);
    out.push(VERSION);
    out.extend_from_slice(&iterations.get().to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&key);
    out
}

/// A credential no password is known to match, at `iterations`: checked
/// against when a login names no user, so that it costs what a wrong
/// password costs. Made once per iteration count.
pub fn decoy(iterations: u32) -> Vec<u8> {
    static DECOYS: std::sync::Mutex<Vec<(u32, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    let mut decoys = DECOYS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = decoys.iter().find(|(i, _)| *i == iterations) {
        return c.clone();
    }
    // A random salt and an empty password: only "" would match, and the
    // caller refuses the login whatever the check says.
    let c = hash("", iterations);
    // Bounded: one per iteration count a config has used (one, in practice).
    if decoys.len() < 8 {
        decoys.push((iterations, c.clone()));
    }
    c
}

/// Whether `password` matches `credential` (compared in constant time). A
/// credential this build cannot read matches nothing.
pub fn verify(credential: &[u8], password: &str) -> bool {
    if credential.len() != LEN || credential[0] != VERSION {
        return false;
    }
    let iterations = u32::from_be_bytes(credential[1..5].try_into().expect("4 bytes"));
    let Some(iterations) = NonZeroU32::new(iterations) else {
        return false;
    };
    let salt = &credential[5..5 + SALT_LEN];
    let key = &credential[5 + SALT_LEN..];
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        key,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_verifies_its_password_only() {
        let c = hash("s3cret", 1000);
        assert!(verify(&c, "s3cret"));
        assert!(!verify(&c, "s3cre"));
        assert!(!verify(&c, ""));
        // Salted: the same password makes another credential.
        assert_ne!(hash("s3cret", 1000), c);
        let mut spoiled = c.clone();
        spoiled[LEN - 1] ^= 1;
        assert!(!verify(&spoiled, "s3cret"));
        assert!(!verify(&c[..LEN - 1], "s3cret"));
        assert!(!verify(b"", "s3cret"));
    }

    #[test]
    fn the_decoy_is_made_once_per_cost_and_matches_no_real_password() {
        let d = decoy(1000);
        assert_eq!(decoy(1000), d, "cached");
        assert_eq!(d[1..5], 1000u32.to_be_bytes(), "the cost asked for");
        assert!(!verify(&d, "s3cret"));
        assert_ne!(decoy(2000)[1..5], d[1..5]);
    }
}
