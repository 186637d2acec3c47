//! PEM files of CA certificates (`upstream.ca_file`, `oidc.ca_file`,
//! `session.redis_ca_file`): read and
//! checked while the configuration loads, so that `portcullis check` finds a missing,
//! empty or unusable file under the key that names it, and start-up never reads the file
//! again.

use std::fmt;
use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::source::Source;

/// A PEM file holding one or more CA certificates, each usable as a trust anchor.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    /// The file as read: Redis' TLS client takes the PEM text itself.
    pub pem: Vec<u8>,
}

impl CaFile {
    /// The file's certificates, in order (all of them readable: checked when loaded).
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(&self.pem)
            .filter_map(Result::ok)
            .collect()
    }
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Reads the CA file named by `key`; a problem under `key` when it cannot be read, holds
/// no certificate, or holds one that cannot be a trust anchor. Problems name the file,
/// never its content.
pub(super) fn read_ca(src: &mut Source<'_>, key: &str, path: PathBuf) -> Option<CaFile> {
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(error) => {
            src.problem(key, format!("cannot read {}: {error}", path.display()));
            return None;
        }
    };
    match ca_problem(&pem) {
        None => Some(CaFile { path, pem }),
        Some(problem) => {
            src.problem(key, format!("{} {problem}", path.display()));
            None
        }
    }
}

/// What is wrong with a CA file's content, if anything.
fn ca_problem(pem: &[u8]) -> Option<String> {
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certificates = match certificates {
        Ok(certificates) if !certificates.is_empty() => certificates,
        _ => return Some("holds no readable PEM certificate".to_owned()),
    };
    certificates.into_iter().enumerate().find_map(|(index, certificate)| {
        let mut roots = RootCertStore::empty();
        roots.add(certificate).err().map(|error| {
            format!(
                "holds a certificate (number {}) that cannot be a CA: {error}",
                index + 1
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_of_new_ca() -> String {
        rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()])
            .expect("certificate")
            .cert
            .pem()
    }

    #[test]
    fn every_certificate_of_a_good_file_is_kept() {
        let pem = format!("{}{}", pem_of_new_ca(), pem_of_new_ca());
        assert_eq!(ca_problem(pem.as_bytes()), None);
        let ca = CaFile {
            path: "/etc/ca.pem".into(),
            pem: pem.into_bytes(),
        };
        assert_eq!(ca.certificates().len(), 2);
    }

    #[test]
    fn a_file_without_a_readable_certificate_is_refused() {
        let key_only = rcgen::KeyPair::generate().expect("key").serialize_pem();
        for pem in [
            "",
            "not a certificate\n",
            key_only.as_str(),
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            // Begun, never ended.
            "-----BEGIN CERTIFICATE-----\nMIIB\n",
        ] {
            assert_eq!(
                ca_problem(pem.as_bytes()).as_deref(),
                Some("holds no readable PEM certificate"),
                "{pem:?}"
            );
        }
    }

    #[test]
    fn a_certificate_that_is_not_der_is_named_by_its_position() {
        // Valid PEM around bytes that are no X.509 certificate.
        let not_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let pem = format!("{}{not_der}", pem_of_new_ca());
        let problem = ca_problem(pem.as_bytes()).expect("refused");
        assert!(
            problem.starts_with("holds a certificate (number 2) that cannot be a CA: "),
            "{problem}"
        );
    }

    #[test]
    fn its_debug_form_names_the_file_not_the_certificates() {
        let ca = CaFile {
            path: "/etc/ca.pem".into(),
            pem: pem_of_new_ca().into_bytes(),
        };
        assert_eq!(format!("{ca:?}"), "CaFile { path: \"/etc/ca.pem\", .. }");
    }
}
