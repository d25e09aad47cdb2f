//! etcd's TLS hardening flags: `--cipher-suites`, `--tls-min-version` and
//! `--tls-max-version`, as a rustls provider and protocol versions for
//! both ports (serving and, on the peer port, dialing).
//!
//! Names are Go's (IANA's), as etcd takes them. rustls offers the ECDHE
//! suites with AES-GCM or ChaCha20-Poly1305 and the three TLS 1.3 suites;
//! the other names Go knows (CBC, RSA key exchange, 3DES, RC4) are left
//! out with a warning at start ([`TlsPolicy::left_out`]): an allow-list only
//! shrinks that way, and hardening lists copied from other components
//! (kube-apiserver's names `TLS_RSA_WITH_AES_128_GCM_SHA256`) still start a
//! member, as they start etcd. A list of nothing but such names is
//! refused: left out, it would mean every suite. A name Go does not know
//! (a misspelling) is refused.
//!
//! Go ignores the list for TLS 1.3 (its 1.3 suites are fixed), and etcd
//! with it: a list of TLS 1.2 suites restricts TLS 1.2 and leaves TLS 1.3
//! on with all three of its suites. Cairn does the same, so a unit written
//! for etcd negotiates what it did there; rustls can restrict TLS 1.3
//! too, so a list that names TLS 1.3 suites keeps only those.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::ring::cipher_suite as ring_suite;
use tokio_rustls::rustls::{SupportedCipherSuite, SupportedProtocolVersion};

/// The flags' names, for messages.
pub const CIPHER_SUITES: &str = "cipher-suites";
pub const MIN_VERSION: &str = "tls-min-version";
pub const MAX_VERSION: &str = "tls-max-version";

/// Go's names of the suites rustls' *ring* provider has, with Go's older
/// spellings of the ChaCha20 ones (no `_SHA256`).
const OFFERED: &[(&str, SupportedCipherSuite)] = &[
    (
        "TLS_AES_128_GCM_SHA256",
        ring_suite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        ring_suite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        ring_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ring_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ring_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ring_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        ring_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ring_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ring_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ring_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        ring_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The suites Go (so etcd) knows and rustls does not implement: told
/// apart from a misspelling in the message.
const NOT_OFFERED: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// Why the flags cannot be honoured; [`PolicyError::setting`] names the
/// flag to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("{name:?} is not a cipher suite name Go (and so etcd) knows")]
    UnknownSuite { name: String },
    #[error(
        "names only suites rustls does not offer ({}; it has ECDHE with AES-GCM or \
         ChaCha20-Poly1305, and the TLS 1.3 suites)",
        names.join(", ")
    )]
    OnlySuitesNotOffered { names: Vec<String> },
    #[error("{value:?} is not a TLS version: TLS1.2 or TLS1.3")]
    UnknownVersion {
        setting: &'static str,
        value: String,
    },
    #[error("{value} is not offered: rustls speaks TLS1.2 and TLS1.3 only")]
    VersionNotOffered {
        setting: &'static str,
        value: String,
    },
    #[error("{min} is above --tls-max-version {max}")]
    MinAboveMax { min: String, max: String },
    /// etcd's rule (Go cannot choose TLS 1.3 suites): kept so that a
    /// setting Cairn takes is one etcd takes.
    #[error("cannot be set when only TLS1.3 is enabled (--tls-min-version TLS1.3), as in etcd")]
    SuitesWithOnlyTls13,
    #[error("names no suite usable with {versions}")]
    NoUsableSuite { versions: &'static str },
}

impl PolicyError {
    /// The flag (and `ServerConfig` setting) the error is about.
    pub fn setting(&self) -> &'static str {
        match self {
            PolicyError::UnknownVersion { setting, .. }
            | PolicyError::VersionNotOffered { setting, .. } => setting,
            PolicyError::MinAboveMax { .. } => MIN_VERSION,
            _ => CIPHER_SUITES,
        }
    }
}

/// The suites and protocol versions both ports use.
#[derive(Debug, Clone)]
pub struct TlsPolicy {
    provider: Arc<rustls::crypto::CryptoProvider>,
    versions: Vec<&'static SupportedProtocolVersion>,
    /// Names in `--cipher-suites` that Go knows and rustls does not offer.
    left_out: Vec<String>,
}

impl Default for TlsPolicy {
    /// rustls' defaults: every suite of the *ring* provider, TLS 1.2 and 1.3.
    fn default() -> Self {
        TlsPolicy {
            provider: super::provider(),
            versions: vec![&rustls::version::TLS12, &rustls::version::TLS13],
            left_out: Vec::new(),
        }
    }
}

/// A TLS version flag's value; `None` (or empty, as etcd's default) leaves
/// the default.
fn version(
    setting: &'static str,
    value: Option<&str>,
) -> Result<Option<&'static SupportedProtocolVersion>, PolicyError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some("TLS1.2") => Ok(Some(&rustls::version::TLS12)),
        Some("TLS1.3") => Ok(Some(&rustls::version::TLS13)),
        Some(v @ ("TLS1.0" | "TLS1.1")) => Err(PolicyError::VersionNotOffered {
            setting,
            value: v.to_string(),
        }),
        Some(v) => Err(PolicyError::UnknownVersion {
            setting,
            value: v.to_string(),
        }),
    }
}

/// The rustls suite of a Go suite name; `None` for one Go knows and
/// rustls does not offer.
fn suite(name: &str) -> Result<Option<SupportedCipherSuite>, PolicyError> {
    if let Some((_, s)) = OFFERED.iter().find(|(n, _)| *n == name) {
        return Ok(Some(*s));
    }
    match NOT_OFFERED.contains(&name) {
        true => Ok(None),
        false => Err(PolicyError::UnknownSuite {
            name: name.to_string(),
        }),
    }
}

fn is_tls13(s: &SupportedCipherSuite) -> bool {
    s.version() == &rustls::version::TLS13
}

impl TlsPolicy {
    /// The policy the three flags ask for: `suites` are `--cipher-suites`
    /// entries (empty: every suite rustls has), `min` and `max` the
    /// version flags (unset: TLS1.2 and TLS1.3).
    pub fn parse(
        suites: &[String],
        min: Option<&str>,
        max: Option<&str>,
    ) -> Result<Self, PolicyError> {
        let min_v = version(MIN_VERSION, min)?.unwrap_or(&rustls::version::TLS12);
        let max_v = version(MAX_VERSION, max)?.unwrap_or(&rustls::version::TLS13);
        let (tls12, tls13) = (&rustls::version::TLS12, &rustls::version::TLS13);
        if min_v == tls13 && max_v == tls12 {
            return Err(PolicyError::MinAboveMax {
                min: "TLS1.3".into(),
                max: "TLS1.2".into(),
            });
        }
        let versions: Vec<&'static SupportedProtocolVersion> = [tls12, tls13]
            .into_iter()
            .filter(|v| (*v != tls12 || min_v == tls12) && (*v != tls13 || max_v == tls13))
            .collect();
        let mut named: Vec<SupportedCipherSuite> = Vec::new();
        let mut left_out: Vec<String> = Vec::new();
        for name in suites.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            match suite(name)? {
                Some(s) => named.push(s),
                None => left_out.push(name.to_string()),
            }
        }
        if named.is_empty() && !left_out.is_empty() {
            return Err(PolicyError::OnlySuitesNotOffered { names: left_out });
        }
        if !named.is_empty() && versions == [tls13] {
            return Err(PolicyError::SuitesWithOnlyTls13);
        }
        // As Go: the list is for TLS 1.2; TLS 1.3 keeps its suites unless
        // the list names some of them. No list: every suite.
        let names_tls13 = named.iter().any(is_tls13);
        let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
        // In rustls' order (its preference), not the list's: Go has not
        // followed a configured order since 1.17 either.
        for s in rustls::crypto::ring::ALL_CIPHER_SUITES {
            let wanted = match is_tls13(s) {
                _ if named.is_empty() => true,
                true => !names_tls13 || named.contains(s),
                false => named.contains(s),
            };
            if wanted && versions.contains(&s.version()) {
                chosen.push(*s);
            }
        }
        if chosen.is_empty() {
            return Err(PolicyError::NoUsableSuite {
                versions: if versions.len() == 2 {
                    "TLS1.2 or TLS1.3"
                } else {
                    "TLS1.2 (--tls-max-version TLS1.2)"
                },
            });
        }
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: chosen,
            ..(*super::provider()).clone()
        };
        Ok(TlsPolicy {
            provider: Arc::new(provider),
            versions,
            left_out,
        })
    }

    /// The `--cipher-suites` names Go knows and rustls does not offer,
    /// which this policy leaves out (for the start's warning).
    pub fn left_out(&self) -> &[String] {
        &self.left_out
    }

    /// The *ring* provider with only the chosen suites.
    pub fn provider(&self) -> Arc<rustls::crypto::CryptoProvider> {
        self.provider.clone()
    }

    /// The protocol versions on, oldest first.
    pub fn versions(&self) -> &[&'static SupportedProtocolVersion] {
        &self.versions
    }

    /// A server config builder with only these suites and versions.
    pub fn server_builder(
        &self,
    ) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, rustls::Error>
    {
        rustls::ServerConfig::builder_with_provider(self.provider())
            .with_protocol_versions(&self.versions)
    }

    /// A client config builder with only these suites and versions.
    pub fn client_builder(
        &self,
    ) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, rustls::Error>
    {
        rustls::ClientConfig::builder_with_provider(self.provider())
            .with_protocol_versions(&self.versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite as Cs;

    fn parse(
        suites: &[&str],
        min: Option<&str>,
        max: Option<&str>,
    ) -> Result<TlsPolicy, PolicyError> {
        let suites: Vec<String> = suites.iter().map(|s| s.to_string()).collect();
        TlsPolicy::parse(&suites, min, max)
    }

    fn suites(p: &TlsPolicy) -> Vec<Cs> {
        p.provider.cipher_suites.iter().map(|s| s.suite()).collect()
    }

    fn versions(p: &TlsPolicy) -> Vec<rustls::ProtocolVersion> {
        p.versions.iter().map(|v| v.version).collect()
    }

    #[test]
    fn no_flags_keep_rustls_defaults() {
        let p = parse(&[], None, None).unwrap();
        assert_eq!(
            suites(&p).len(),
            rustls::crypto::ring::ALL_CIPHER_SUITES.len()
        );
        assert_eq!(
            versions(&p),
            [
                rustls::ProtocolVersion::TLSv1_2,
                rustls::ProtocolVersion::TLSv1_3
            ]
        );
        // etcd's empty values mean the same.
        let p = parse(&["", " "], Some(""), Some("")).unwrap();
        assert_eq!(versions(&p).len(), 2);
    }

    #[test]
    fn go_names_map_to_rustls_suites() {
        let p = parse(
            &[
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                " TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ],
            None,
            None,
        )
        .unwrap();
        let got = suites(&p);
        for want in [
            Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            Cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            Cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            Cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ] {
            assert!(got.contains(&want), "{want:?} in {got:?}");
        }
        for left_out in [
            Cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            Cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ] {
            assert!(!got.contains(&left_out), "{left_out:?} in {got:?}");
        }
        // Every offered name maps to a suite of its own name (bar Go's
        // older ChaCha20 spellings).
        for (name, s) in OFFERED {
            let rustls_name = format!("{:?}", s.suite()).replace("TLS13_", "TLS_");
            assert!(rustls_name.starts_with(name), "{name} -> {rustls_name}");
        }
    }

    /// Go's rule: a list of TLS 1.2 suites leaves TLS 1.3 on with all its
    /// suites; naming TLS 1.3 suites keeps only those.
    #[test]
    fn a_tls12_list_leaves_tls13_suites_on_unless_it_names_some() {
        let p = parse(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], None, None).unwrap();
        assert_eq!(
            suites(&p),
            [
                Cs::TLS13_AES_256_GCM_SHA384,
                Cs::TLS13_AES_128_GCM_SHA256,
                Cs::TLS13_CHACHA20_POLY1305_SHA256,
                Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ]
        );
        let p = parse(
            &[
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_AES_128_GCM_SHA256",
            ],
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            suites(&p),
            [
                Cs::TLS13_AES_128_GCM_SHA256,
                Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]
        );
        // With TLS 1.2 only, the 1.3 suites go.
        let p = parse(
            &["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
            None,
            Some("TLS1.2"),
        )
        .unwrap();
        assert_eq!(suites(&p), [Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]);
        assert_eq!(versions(&p), [rustls::ProtocolVersion::TLSv1_2]);
    }

    #[test]
    fn bad_names_and_versions_are_refused_naming_the_flag() {
        let err = |suites: &[&str], min, max| parse(suites, min, max).unwrap_err();
        // Only suites rustls lacks: left out, the list would allow all.
        let e = err(
            &[
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                "TLS_RSA_WITH_AES_128_GCM_SHA256",
            ],
            None,
            None,
        );
        assert_eq!(e.setting(), CIPHER_SUITES);
        assert!(e.to_string().contains("rustls does not offer"), "{e}");
        assert!(
            e.to_string().contains("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
            "{e}"
        );
        // Beside a suite rustls has, they are left out.
        let p = parse(
            &[
                "TLS_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ],
            None,
            Some("TLS1.2"),
        )
        .unwrap();
        assert_eq!(suites(&p), [Cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]);
        assert_eq!(p.left_out(), ["TLS_RSA_WITH_AES_128_GCM_SHA256"]);
        let e = err(&["TLS_ECDHE_RSA_WITH_AES_128_GCM"], None, None);
        assert_eq!(
            e,
            PolicyError::UnknownSuite {
                name: "TLS_ECDHE_RSA_WITH_AES_128_GCM".into()
            }
        );
        let e = err(&[], Some("TLS1.1"), None);
        assert_eq!(e.setting(), MIN_VERSION);
        assert!(e.to_string().contains("TLS1.2 and TLS1.3 only"), "{e}");
        let e = err(&[], None, Some("TLS1.0"));
        assert_eq!(e.setting(), MAX_VERSION);
        let e = err(&[], None, Some("1.3"));
        assert_eq!(e.setting(), MAX_VERSION);
        assert!(e.to_string().contains("\"1.3\""), "{e}");
    }

    #[test]
    fn contradictory_settings_are_refused() {
        let e = parse(&[], Some("TLS1.3"), Some("TLS1.2")).unwrap_err();
        assert_eq!(e.setting(), MIN_VERSION);
        // etcd refuses any list with TLS 1.3 alone, a TLS 1.2 one included.
        for list in [
            &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"][..],
            &["TLS_AES_128_GCM_SHA256"],
        ] {
            let e = parse(list, Some("TLS1.3"), None).unwrap_err();
            assert_eq!(e, PolicyError::SuitesWithOnlyTls13);
            assert_eq!(e.setting(), CIPHER_SUITES);
        }
        // TLS 1.3 alone without a list is fine.
        let p = parse(&[], Some("TLS1.3"), None).unwrap();
        assert_eq!(versions(&p), [rustls::ProtocolVersion::TLSv1_3]);
        assert!(suites(&p)
            .iter()
            .all(|s| format!("{s:?}").starts_with("TLS13_")));
        // Only TLS 1.3 suites named, TLS 1.2 only: nothing left.
        let e = parse(&["TLS_AES_128_GCM_SHA256"], None, Some("TLS1.2")).unwrap_err();
        assert!(matches!(e, PolicyError::NoUsableSuite { .. }), "{e}");
    }

    #[test]
    fn the_builders_take_the_policy() {
        let p = parse(
            &["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
            None,
            Some("TLS1.2"),
        )
        .unwrap();
        p.server_builder().unwrap();
        p.client_builder().unwrap();
    }
}
