//! A port's certificate and key, read again when their files change, so a
//! renewed certificate takes effect without a restart (etcd reads its
//! files at every handshake; here a handshake looks at the files' size and
//! modification time at most once per [`CHECK_INTERVAL`]).
//!
//! A pair that does not load (a half-written file, a key that does not fit
//! the certificate) keeps the one in use and is logged once; the next
//! change of either file is tried again. [`Reloading`] does this for any
//! value loaded from files (the revocation lists too, `crl_reload.rs`).

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
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What a port loads from files: loads them again.
type Loader<T> = Box<dyn Fn() -> Result<Arc<T>, TlsError> + Send + Sync>;

/// A value loaded from `files` and loaded again, at most once per
/// [`CHECK_INTERVAL`] as it is asked for, when they changed. A load that
/// fails keeps the value in use and is logged.
pub(super) struct Reloading<T: ?Sized> {
    /// What is loaded, for messages ("certificate", "revocation lists").
    what: &'static str,
    files: Vec<PathBuf>,
    load: Loader<T>,
    state: Mutex<State<T>>,
}

struct State<T: ?Sized> {
    current: Arc<T>,
    /// The files' stamps when last loaded (or last tried).
    seen: Vec<Stamp>,
    checked: Instant,
}

impl<T: ?Sized> Reloading<T> {
    /// Loads the value; it must load now (a bad file fails the start).
    pub(super) fn load(
        what: &'static str,
        files: &[&Path],
        load: impl Fn() -> Result<Arc<T>, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsError> {
        let files: Vec<PathBuf> = files.iter().map(|f| f.to_path_buf()).collect();
        let seen = files.iter().map(|f| stamp(f)).collect();
        let current = load()?;
        Ok(Reloading {
            what,
            files,
            load: Box::new(load),
            state: Mutex::new(State {
                current,
                seen,
                checked: Instant::now(),
            }),
        })
    }

    pub(super) fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            let now: Vec<Stamp> = self.files.iter().map(|f| stamp(f)).collect();
            if now != state.seen {
                state.seen = now;
                match (self.load)() {
                    Ok(value) => {
                        tracing::info!("TLS: loaded the new {}", self.files[0].display());
                        state.current = value;
                    }
                    Err(e) => tracing::warn!("TLS: keeping the {} in use: {e}", self.what),
                }
            }
        }
        state.current.clone()
    }
}

impl<T: ?Sized> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// A port's certificate and key.
#[derive(Debug)]
pub(super) struct ReloadingCert(Reloading<CertifiedKey>);

impl ReloadingCert {
    /// Loads the pair; it must load now (a bad file fails the start).
    pub(super) fn load(
        settings: [&'static str; 2],
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, TlsError> {
        let (cert_path, key_path) = (cert.to_path_buf(), key.to_path_buf());
        let reloading = Reloading::load("certificate", &[cert, key], move || {
            certified(settings, &cert_path, &key_path, &provider).map(Arc::new)
        })?;
        Ok(ReloadingCert(reloading))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// The certificate chain and its key, checked to fit each other.
pub(super) fn certified(
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
