//! Certificates a member makes for itself: etcd's `--auto-tls` (client
//! port) and `--peer-auto-tls` (peer port).
//!
//! A port with auto TLS and no certificate files serves a self-signed
//! certificate kept in `<data-dir>/fixtures/<port>/cert.pem` and `key.pem`,
//! as etcd keeps it. The first start generates the pair (an ECDSA P-256
//! key: etcd's P-521 is one *ring* cannot sign with); later starts reuse
//! it, so clients that trust the file keep trusting the member. The
//! certificate names the hosts of the port's listen and advertised
//! addresses (IPs as IP addresses, names as DNS names) and is valid for
//! `--self-signed-cert-validity` years.
//!
//! The files are written whole or not at all (a temporary file, synced,
//! then renamed over the name), the key readable by its owner alone. A
//! start that finds only one of the two (a crash between the renames)
//! generates both again; one that finds both but cannot load them fails,
//! naming the file, rather than replacing a certificate clients may trust.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

use super::{cert_reload, file_err, provider, Port, TlsError};
use crate::config::{ServerConfig, CERT_FILE, KEY_FILE};

/// A year of validity, as etcd counts it.
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// What [`ensure_pair`] found in a port's fixtures directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixtures {
    Generated,
    Reused,
}

impl Fixtures {
    fn as_str(self) -> &'static str {
        match self {
            Fixtures::Generated => "generated",
            Fixtures::Reused => "reused",
        }
    }
}

/// Makes sure each port that serves a generated certificate has one (see
/// the module's documentation), and warns where auto TLS is asked for but
/// not used, as etcd does. Runs before the ports are bound.
pub fn ensure(config: &ServerConfig) -> Result<(), TlsError> {
    if config.auto_tls && !config.client_self_signed() {
        tracing::warn!("ignoring --auto-tls since --cert-file and --key-file are given");
    }
    if config.peer_auto_tls && !config.peer_self_signed() {
        tracing::warn!(
            "ignoring --peer-auto-tls since --peer-cert-file and --peer-key-file are given"
        );
    }
    if config.client_self_signed() {
        if config.client_cert_auth {
            // Allowed: clients still need a certificate from
            // --trusted-ca-file; only the member's own is unchecked.
            tracing::warn!(
                "--auto-tls with --client-cert-auth: clients must show a certificate from \
                 --trusted-ca-file, but cannot check this member's self-signed one"
            );
        }
        let listen: Vec<SocketAddr> = std::iter::once(config.listen_client)
            .chain(config.listen_client_also.iter().copied())
            .collect();
        let hosts = hosts(&listen, &config.advertise_client_urls());
        let found = ensure_pair(
            "auto-tls",
            &config.self_signed_dir(Port::Client),
            &hosts,
            config.self_signed_cert_validity_years,
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )?;
        tracing::info!(
            "client port: {} its self-signed certificate (--auto-tls)",
            found.as_str()
        );
    }
    if config.peer_self_signed() {
        let hosts = hosts(&[config.listen_peer], &[config.advertise_peer_url()]);
        // A member also shows its peer certificate when it dials others.
        let found = ensure_pair(
            "peer-auto-tls",
            &config.self_signed_dir(Port::Peer),
            &hosts,
            config.self_signed_cert_validity_years,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        tracing::info!(
            "peer port: {} its self-signed certificate (--peer-auto-tls)",
            found.as_str()
        );
    }
    Ok(())
}

/// A name a certificate holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Dns(String),
}

/// The hosts a port is reached at: its listen addresses and its
/// advertised URLs' hosts, but not 0.0.0.0 or ::, which no one dials.
fn hosts(listen: &[SocketAddr], advertised_urls: &[String]) -> Vec<Host> {
    let advertised = advertised_urls.iter().map(|url| {
        let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Dns(host.to_string()),
        }
    });
    let mut hosts = Vec::new();
    for host in listen.iter().map(|a| Host::Ip(a.ip())).chain(advertised) {
        let dialed = !matches!(host, Host::Ip(ip) if ip.is_unspecified());
        if dialed && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// The pair in `dir`: reused when both files are there (and load),
/// generated when either is missing. `setting` names the flag in errors.
fn ensure_pair(
    setting: &'static str,
    dir: &Path,
    hosts: &[Host],
    validity_years: u32,
    usages: &[ExtendedKeyUsagePurpose],
) -> Result<Fixtures, TlsError> {
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if cert.exists() && key.exists() {
        let hint = format!(
            " (delete {} and {} to have new ones generated)",
            cert.display(),
            key.display()
        );
        cert_reload::certified([setting, setting], &cert, &key, &provider()).map_err(
            |e| match e {
                TlsError::File {
                    setting,
                    path,
                    reason,
                } => TlsError::File {
                    setting,
                    path,
                    reason: reason + &hint,
                },
                other => other,
            },
        )?;
        return Ok(Fixtures::Reused);
    }
    create_private_dir(dir).map_err(|e| file_err(setting, dir, e))?;
    let (cert_pem, key_pem) = generate(hosts, validity_years, usages, SystemTime::now())
        .map_err(|e| file_err(setting, &cert, format!("cannot generate: {e}")))?;
    // The key first: a crash between the renames leaves no certificate,
    // and the next start generates both again.
    write_whole(&key, key_pem.as_bytes(), 0o600).map_err(|e| file_err(setting, &key, e))?;
    write_whole(&cert, cert_pem.as_bytes(), 0o644).map_err(|e| file_err(setting, &cert, e))?;
    sync_dir(dir).map_err(|e| file_err(setting, dir, e))?;
    Ok(Fixtures::Generated)
}

/// A self-signed certificate for `hosts` valid from `now` for
/// `validity_years`, and its key: both PEM; or why not.
fn generate(
    hosts: &[Host],
    validity_years: u32,
    usages: &[ExtendedKeyUsagePurpose],
    now: SystemTime,
) -> Result<(String, String), String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    for host in hosts {
        params.subject_alt_names.push(match host {
            Host::Ip(ip) => SanType::IpAddress(*ip),
            Host::Dns(name) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|e| format!("host {name:?}: {e}"))?,
            ),
        });
    }
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "cairn");
    params.distinguished_name = name;
    let until = now
        .checked_add(YEAR * validity_years)
        .ok_or("the validity ends past the clock's range")?;
    params.not_before = x509_time(now)?;
    params.not_after = x509_time(until)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `t` as a certificate's time (whole seconds).
fn x509_time(t: SystemTime) -> Result<time::OffsetDateTime, String> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or_else(|| format!("{secs} s after 1970 is past what a certificate holds"))
}

/// 128 random bits, positive, as etcd's serial numbers.
fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no random source for the serial number")?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// `dir` and its parents, `dir` itself readable by its owner alone (it
/// holds a private key; etcd makes it 0700 too).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `path` so that it is either as before or whole: `bytes` go to a
/// new temporary file beside it, created with `mode`, synced, then renamed
/// over `path`.
fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temporary(path);
    // One left by a crash: created anew so it gets `mode`.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        (
            std::fs::read(dir.join(CERT_FILE)).unwrap(),
            std::fs::read(dir.join(KEY_FILE)).unwrap(),
        )
    }

    fn ensure_in(dir: &Path) -> Result<Fixtures, TlsError> {
        let hosts = [
            Host::Ip("127.0.0.1".parse().unwrap()),
            Host::Dns("cairn.example".into()),
        ];
        ensure_pair(
            "auto-tls",
            dir,
            &hosts,
            1,
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    #[test]
    fn a_pair_is_generated_once_and_reused() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("fixtures").join("client");
        assert_eq!(ensure_in(&dir).unwrap(), Fixtures::Generated);
        let first = pair(&dir);
        assert_eq!(ensure_in(&dir).unwrap(), Fixtures::Reused);
        assert_eq!(pair(&dir), first, "the same files");
        // Nothing but the pair is left behind.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [CERT_FILE, KEY_FILE]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join(KEY_FILE)), 0o600, "the key is the owner's");
            assert_eq!(mode(&dir), 0o700);
        }
    }

    #[test]
    fn a_lone_file_is_replaced_by_a_new_pair() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("peer");
        ensure_in(&dir).unwrap();
        let first = pair(&dir);
        // A crash between the renames: the key, no certificate; and a
        // temporary file from the interrupted write.
        std::fs::remove_file(dir.join(CERT_FILE)).unwrap();
        std::fs::write(dir.join("cert.pem.tmp"), "-----BEGIN CERT").unwrap();
        assert_eq!(ensure_in(&dir).unwrap(), Fixtures::Generated);
        let second = pair(&dir);
        assert_ne!(second.0, first.0);
        assert_ne!(second.1, first.1, "a new key with the new certificate");
        assert!(!dir.join("cert.pem.tmp").exists());
        // And they fit: reused at the next start.
        assert_eq!(ensure_in(&dir).unwrap(), Fixtures::Reused);
    }

    #[test]
    fn a_broken_file_fails_naming_it() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("client");
        ensure_in(&dir).unwrap();
        let cert = dir.join(CERT_FILE);
        let whole = std::fs::read_to_string(&cert).unwrap();
        let cases = [
            ("cut short", whole[..whole.len() / 2].to_string()),
            ("empty", String::new()),
        ];
        for (what, text) in cases {
            std::fs::write(&cert, &text).unwrap();
            let err = ensure_in(&dir).expect_err(what).to_string();
            assert!(err.contains("auto-tls"), "{what}: {err}");
            assert!(err.contains(&cert.display().to_string()), "{what}: {err}");
        }
        // A key that is not the certificate's.
        std::fs::write(&cert, &whole).unwrap();
        let other = data.path().join("other");
        ensure_in(&other).unwrap();
        std::fs::copy(other.join(KEY_FILE), dir.join(KEY_FILE)).unwrap();
        let err = ensure_in(&dir).expect_err("a stranger's key").to_string();
        assert!(
            err.contains(&dir.join(KEY_FILE).display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn the_certificate_names_the_hosts_and_lasts_the_years_asked() {
        let hosts = [
            Host::Ip("10.1.2.3".parse().unwrap()),
            Host::Ip("::1".parse().unwrap()),
            Host::Dns("member-1.cairn".into()),
        ];
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (pem, key_pem) =
            generate(&hosts, 2, &[ExtendedKeyUsagePurpose::ServerAuth], now).unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        use x509_parser::extensions::GeneralName;
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .expect("SANs")
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::IPAddress(ip) => format!("ip {ip:?}"),
                GeneralName::DNSName(name) => format!("dns {name}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sans,
            [
                "ip [10, 1, 2, 3]".to_string(),
                format!(
                    "ip {:?}",
                    "::1".parse::<std::net::Ipv6Addr>().unwrap().octets()
                ),
                "dns member-1.cairn".to_string(),
            ]
        );
        let validity = cert.validity();
        assert_eq!(validity.not_before.timestamp(), 1_800_000_000);
        assert_eq!(
            validity.not_after.timestamp() - validity.not_before.timestamp(),
            2 * 365 * 24 * 3600
        );
        assert!(!cert.is_ca(), "an end-entity certificate, as etcd's");
        assert_eq!(cert.issuer(), cert.subject(), "self-signed");
    }

    #[test]
    fn hosts_come_from_the_listen_and_advertised_addresses() {
        let listen: SocketAddr = "127.0.0.1:2379".parse().unwrap();
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            hosts(&[listen], &urls(&["https://127.0.0.1:2379"])),
            [Host::Ip(listen.ip())]
        );
        assert_eq!(
            hosts(&[listen], &urls(&["https://db.example:2379"])),
            [Host::Ip(listen.ip()), Host::Dns("db.example".into())]
        );
        let any: SocketAddr = "0.0.0.0:2380".parse().unwrap();
        assert_eq!(
            hosts(&[any], &urls(&["https://[fd00::7]:2380"])),
            [Host::Ip("fd00::7".parse().unwrap())]
        );
        // Every listen address and every advertised URL (etcd's lists).
        let lan: SocketAddr = "10.0.0.5:2379".parse().unwrap();
        assert_eq!(
            hosts(
                &[listen, lan],
                &urls(&["https://10.0.0.5:2379", "https://db.example:2379"])
            ),
            [
                Host::Ip(listen.ip()),
                Host::Ip(lan.ip()),
                Host::Dns("db.example".into())
            ]
        );
    }
}
