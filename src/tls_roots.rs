//! What portcullis' own TLS clients trust: the upstream connector
//! ([`crate::proxy`]) and the provider back channel ([`crate::oidc`]). One policy for
//! both: the system's CA certificates (where an administrator installs a private CA),
//! else, with a warning, the bundled webpki roots (never both), plus the certificates
//! of the peer's configured CA file; and the rustls client configuration they are
//! handed in, with the ring provider chosen explicitly.
//!
//! Loading the system roots reads the disk, so callers build the configuration once at
//! start-up and share it; this module never runs per request.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::config::CaFile;

/// Whom a TLS client verifies: names the peer in warnings and its CA file's key in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPeer {
    /// An `https` upstream (`upstream.ca_file`).
    Upstream,
    /// The OpenID provider, for discovery, JWKS, PAR, token, userinfo and revocation
    /// (`oidc.ca_file`).
    Provider,
}

impl TlsPeer {
    fn description(self) -> &'static str {
        match self {
            TlsPeer::Upstream => "the upstream",
            TlsPeer::Provider => "the OIDC provider",
        }
    }

    fn ca_file_key(self) -> &'static str {
        match self {
            TlsPeer::Upstream => "upstream.ca_file",
            TlsPeer::Provider => "oidc.ca_file",
        }
    }
}

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate of the CA file is no trust anchor. The configuration checked every
    /// one while loading, so this is only a second line.
    #[error("{key}: unusable certificate: {source}")]
    UnusableCaCertificate {
        key: &'static str,
        #[source]
        source: rustls::Error,
    },
    /// The ring provider offers none of the safe default protocol versions.
    #[error("TLS setup: {0}")]
    Protocols(#[source] rustls::Error),
}

/// A client configuration verifying `peer` against the system roots (else the bundled
/// ones) plus `ca_file`'s certificates, without ALPN: each client sets the protocols
/// it speaks. Reads the system certificate store: call once, at start-up.
pub fn verifying_client_config(peer: TlsPeer, ca_file: Option<&CaFile>) -> Result<rustls::ClientConfig, TlsSetupError> {
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "could not load some system CA certificates");
    }
    let extra = ca_file.map(CaFile::certificates).unwrap_or_default();
    client_config(trusted_roots(peer, native.certs, extra)?)
}

/// A rustls client configuration over `roots`, with the ring provider chosen explicitly
/// (the process-wide default may be unset, or ambiguous when two providers are linked).
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Protocols)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The roots trusted for `peer`: the system's usable certificates (the bundled webpki
/// roots only when there are none, never both), plus `extra`.
fn trusted_roots(
    peer: TlsPeer,
    system: Vec<CertificateDer<'static>>,
    extra: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(system);
    if added == 0 {
        tracing::warn!(
            "no usable system CA certificates; verifying {} against the bundled webpki roots",
            peer.description()
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for cert in extra {
        roots.add(cert).map_err(|source| TlsSetupError::UnusableCaCertificate {
            key: peer.ca_file_key(),
            source,
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_ca() -> CertificateDer<'static> {
        rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()])
            .expect("certificate")
            .cert
            .der()
            .clone()
    }

    #[test]
    fn the_system_roots_are_trusted_and_the_bundled_ones_only_without_them() {
        let roots = trusted_roots(TlsPeer::Upstream, vec![new_ca(), new_ca()], Vec::new()).expect("roots");
        assert_eq!(roots.len(), 2, "the bundled roots are not added to the system's");

        let bundled = webpki_roots::TLS_SERVER_ROOTS.len();
        assert!(bundled > 100);
        let roots = trusted_roots(TlsPeer::Provider, Vec::new(), Vec::new()).expect("roots");
        assert_eq!(roots.len(), bundled);
        let unusable = CertificateDer::from(vec![0x30, 0x00]);
        let roots = trusted_roots(TlsPeer::Upstream, vec![unusable], Vec::new()).expect("roots");
        assert_eq!(roots.len(), bundled, "no usable system root: the bundled ones");
    }

    #[test]
    fn the_ca_files_certificates_are_trusted_beside_the_others() {
        let roots = trusted_roots(TlsPeer::Provider, vec![new_ca()], vec![new_ca(), new_ca()]).expect("roots");
        assert_eq!(roots.len(), 3);
        let roots = trusted_roots(TlsPeer::Upstream, Vec::new(), vec![new_ca()]).expect("roots");
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len() + 1);
    }

    #[test]
    fn an_unusable_certificate_in_the_ca_file_is_named_by_the_peers_key() {
        for (peer, key) in [
            (TlsPeer::Upstream, "upstream.ca_file: "),
            (TlsPeer::Provider, "oidc.ca_file: "),
        ] {
            let unusable = CertificateDer::from(vec![0x30, 0x00]);
            match trusted_roots(peer, vec![new_ca()], vec![unusable]) {
                Err(error @ TlsSetupError::UnusableCaCertificate { .. }) => {
                    let message = error.to_string();
                    assert!(message.starts_with(key), "{message}");
                }
                other => panic!(
                    "expected an unusable certificate, got {:?}",
                    other.map(|roots| roots.len())
                ),
            }
        }
    }
}
