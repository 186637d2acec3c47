//! TLS termination with rustls: TLS 1.2 and 1.3 only, h2 and http/1.1 offered by ALPN,
//! and the certificate re-read when its files change or on SIGHUP, without dropping a
//! connection (new handshakes get the new certificate, open connections keep theirs).
//! Without a certificate, SIGHUP is caught all the same, and only logged.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::sync::watch;

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("the private key in {path} is not usable: {reason}")]
    BadKey { path: String, reason: String },
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The certificate currently served; swapped whole on reload.
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    loaded_stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ReloadingCert {
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        // The times before the content: a change in between is then seen at the next check.
        let stamp = modification_times(files);
        let key = load_certified_key(files)?;
        Ok(Arc::new(ReloadingCert {
            files: files.clone(),
            current: RwLock::new(Arc::new(key)),
            loaded_stamp: RwLock::new(stamp),
        }))
    }

    /// The certificate and key new handshakes get.
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |key| key.clone())
    }

    /// Re-reads the files (blocking file I/O); on failure the previous certificate stays
    /// in use.
    fn reload(&self) -> Result<(), TlsError> {
        let stamp = modification_times(&self.files);
        let key = load_certified_key(&self.files)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        if let Ok(mut loaded) = self.loaded_stamp.write() {
            *loaded = stamp;
        }
        Ok(())
    }

    /// Whether the files' modification times differ from the loaded ones (blocking file I/O).
    fn files_changed(&self) -> bool {
        let now = modification_times(&self.files);
        self.loaded_stamp.read().map(|stamp| *stamp != now).unwrap_or(true)
    }

    /// Runs `work` (file I/O) on tokio's blocking pool, off the threads that serve requests.
    async fn off_the_workers<R: Send + 'static>(
        self: &Arc<Self>,
        work: fn(&Self) -> R,
    ) -> Result<R, tokio::task::JoinError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&this)).await
    }

    /// Reloads on SIGHUP and when the files' modification times change (checked every
    /// `poll`), until `shutdown` turns true.
    pub async fn watch(self: Arc<Self>, poll: Duration, mut shutdown: watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let signalled = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signalled = std::future::pending::<bool>();
            let reason = tokio::select! {
                _ = signalled => "SIGHUP",
                () = tokio::time::sleep(poll) => match self.off_the_workers(Self::files_changed).await {
                    Ok(true) => "files changed",
                    Ok(false) => continue,
                    Err(panicked) => {
                        tracing::error!(%panicked, "checking the TLS certificate's files stopped");
                        continue;
                    }
                },
                () = super::stop_requested(&mut shutdown) => return,
            };
            match self.off_the_workers(Self::reload).await {
                Ok(Ok(())) => tracing::info!(reason, cert = %self.files.cert.display(), "TLS certificate reloaded"),
                Ok(Err(error)) => {
                    tracing::error!(reason, %error, "TLS certificate reload failed; keeping the previous one")
                }
                Err(panicked) => {
                    tracing::error!(reason, %panicked, "TLS certificate reload stopped; keeping the previous one")
                }
            }
        }
    }
}

/// Without a certificate there is nothing to reload, but SIGHUP must still be caught:
/// its default action ends the process, and `systemctl reload` (`ExecReload=kill -HUP`)
/// or an operator's habit sends it. Each one is logged, until `shutdown` turns true
/// (and ignored after that: tokio keeps the handler once installed).
///
/// The handler is installed here, before the listener serves, rather than in the task,
/// which might first run after a SIGHUP has arrived.
pub fn catch_hangup_without_certificate(mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        received = hangup.recv() => match received {
                            Some(()) => tracing::info!("SIGHUP received; nothing to reload (no TLS certificate configured)"),
                            None => return,
                        },
                        () = super::stop_requested(&mut shutdown) => return,
                    }
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP, which would end portcullis"),
    }
    #[cfg(not(unix))]
    drop(shutdown);
}

/// A rustls server configuration serving `cert`, TLS 1.2+ and ALPN h2/http1.1.
pub fn server_config(cert: Arc<ReloadingCert>, offer_h2: bool) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = if offer_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

fn modification_times(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Some((modified(&files.cert)?, modified(&files.key)?))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let cert_pem = read(&files.cert)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key_pem = read(&files.key)?;
    // The first PKCS#8, PKCS#1 or SEC1 key in the file.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey { path: key_path.clone() })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|error| TlsError::BadKey {
        path: key_path.clone(),
        reason: error.to_string(),
    })?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|error| TlsError::BadKey {
        path: key_path,
        reason: error.to_string(),
    })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `cert.pem` and `key.pem` (their content given) into a fresh directory.
    fn files(cert: &str, key: &str) -> (tempfile::TempDir, TlsFiles) {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, cert).expect("write");
        std::fs::write(&files.key, key).expect("write");
        (dir, files)
    }

    fn certified() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["app.test".to_owned()]).expect("certificate");
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_load_also_from_one_combined_file() {
        let (cert, key) = certified();
        let (_dir, separate) = files(&cert, &key);
        assert_eq!(load_certified_key(&separate).expect("loads").cert.len(), 1);
        // Certificate first, key after it, in both files: the key file's key is found.
        let combined = format!("{cert}{key}");
        let (_dir, combined) = files(&combined, &combined);
        assert!(load_certified_key(&combined).is_ok());
    }

    /// Replaces both files with a new certificate and key, dated `seconds` later than now
    /// (a coarse file-system clock could otherwise keep the old times), and returns the
    /// new certificate.
    fn replace(files: &TlsFiles, seconds: u64) -> CertificateDer<'static> {
        let (cert, key) = certified();
        let later = SystemTime::now() + Duration::from_secs(seconds);
        for (path, content) in [(&files.cert, &cert), (&files.key, &key)] {
            std::fs::write(path, content).expect("write");
            let file = std::fs::File::options().write(true).open(path).expect("open");
            file.set_modified(later).expect("set the modification time");
        }
        CertificateDer::from_pem_slice(cert.as_bytes()).expect("the new certificate")
    }

    fn served(cert: &ReloadingCert) -> CertificateDer<'static> {
        cert.current().cert[0].clone()
    }

    #[test]
    fn a_reload_serves_the_new_files_and_a_failed_one_keeps_the_previous_certificate() {
        let (cert, key) = certified();
        let (_dir, files) = files(&cert, &key);
        let reloading = ReloadingCert::load(&files).expect("loads");
        assert_eq!(
            served(&reloading),
            CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()
        );
        assert!(!reloading.files_changed());

        let second = replace(&files, 10);
        assert!(reloading.files_changed());
        reloading.reload().expect("reloads");
        assert_eq!(served(&reloading), second);
        assert!(!reloading.files_changed(), "the reload took the new times");

        std::fs::write(&files.key, "not a key").expect("write");
        assert!(matches!(reloading.reload(), Err(TlsError::NoKey { .. })));
        assert_eq!(
            served(&reloading),
            second,
            "a failed reload keeps the certificate in use"
        );

        std::fs::remove_file(&files.cert).expect("remove");
        assert!(reloading.files_changed(), "a file that is gone is a change");
        assert!(matches!(reloading.reload(), Err(TlsError::Read { .. })));
        assert_eq!(served(&reloading), second);
    }

    #[tokio::test]
    async fn the_watch_reloads_changed_files_and_ends_at_shutdown() {
        let (cert, key) = certified();
        let (_dir, files) = files(&cert, &key);
        let reloading = ReloadingCert::load(&files).expect("loads");
        let (stop, stopped) = watch::channel(false);
        let watching = tokio::spawn(reloading.clone().watch(Duration::from_millis(20), stopped));

        let second = replace(&files, 10);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while served(&reloading) != second {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new files were not picked up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).expect("the watch listens");
        tokio::time::timeout(Duration::from_secs(5), watching)
            .await
            .expect("the watch ends at shutdown")
            .expect("the watch did not panic");
    }

    #[test]
    fn the_debug_form_names_the_files_and_holds_no_key() {
        let (cert, key) = certified();
        let (_dir, files) = files(&cert, &key);
        let shown = format!("{:?}", ReloadingCert::load(&files).expect("loads"));
        assert!(shown.starts_with("ReloadingCert"), "{shown}");
        assert!(shown.contains("cert.pem") && shown.contains("key.pem"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY") && !shown.contains("BEGIN"), "{shown}");
    }

    #[test]
    fn files_without_a_certificate_or_a_key_or_with_a_foreign_key_are_refused() {
        let (cert, key) = certified();
        let (_, other_key) = certified();
        let refusal = |cert: &str, key: &str| {
            let (_dir, files) = files(cert, key);
            let Err(error) = load_certified_key(&files) else {
                panic!("accepted")
            };
            error
                .to_string()
                .replace(&files.cert.display().to_string(), "CERT")
                .replace(&files.key.display().to_string(), "KEY")
        };
        assert_eq!(refusal(&key, &key), "CERT holds no PEM certificate");
        assert_eq!(
            refusal(&cert, &cert),
            "KEY holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"
        );
        assert_eq!(
            refusal(&cert, ""),
            "KEY holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"
        );
        let foreign = refusal(&cert, &other_key);
        assert!(
            foreign.starts_with("the private key in KEY is not usable: "),
            "{foreign}"
        );
        assert!(!foreign.contains("PRIVATE KEY"), "{foreign}");
    }
}
