//! A port's certificate and key, read again when their files change, so a
//! renewed certificate takes effect without a restart (etcd reads its
//! files at every handshake; here a handshake looks at the files' size and
//! modification time at most once per [`CHECK_INTERVAL`]).
//!
//! A pair that does not load (a half-written file, a key that does not fit
//! the certificate) keeps the one in use and is logged once; the next
//! change of either file is tried again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::{file_err, read_certs, read_key, TlsError};

/// Longest a replaced certificate file goes unnoticed (while clients
/// connect; none is read between handshakes).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What tells a file changed: its modification time and size.
pub(super) type Stamp = Option<(SystemTime, u64)>;

pub(super) fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[derive(Debug)]
pub(super) struct ReloadingCert {
    /// Flag names of the certificate and key, for messages.
    settings: [&'static str; 2],
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    /// The files' stamps when last loaded (or last tried).
    seen: (Stamp, Stamp),
    checked: Instant,
}

impl ReloadingCert {
    /// Loads the pair; it must load now (a bad file fails the start).
    pub(super) fn load(
        settings: [&'static str; 2],
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, TlsError> {
        let seen = (stamp(cert), stamp(key));
        let current = Arc::new(certified(settings, cert, key, &provider)?);
        Ok(ReloadingCert {
            settings,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            state: Mutex::new(State {
                current,
                seen,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            let now = (stamp(&self.cert), stamp(&self.key));
            if now != state.seen {
                state.seen = now;
                match certified(self.settings, &self.cert, &self.key, &self.provider) {
                    Ok(key) => {
                        tracing::info!("TLS: loaded the new {}", self.cert.display());
                        state.current = Arc::new(key);
                    }
                    Err(e) => tracing::warn!("TLS: keeping the certificate in use: {e}"),
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The certificate chain and its key, checked to fit each other.
fn certified(
    [cert_setting, key_setting]: [&'static str; 2],
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert_setting, cert)?;
    let private = read_key(key_setting, key)?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        file_err(
            key_setting,
            key,
            format!("does not fit {cert_setting}: {e}"),
        )
    })
}
