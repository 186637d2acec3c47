//! Test certificates (rcgen): a private CA, server certificates for `localhost`
//! written as PEM files portcullis reads, and clients that trust that CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA and the directory holding the server's `cert.pem` / `key.pem`.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    dir: tempfile::TempDir,
}

/// One issued server certificate.
#[derive(Clone)]
pub struct ServerCert {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "portcullis e2e test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&key).expect("self-sign CA");
        let ca_der = ca.der().clone();
        let issuer = Issuer::new(params, key);
        let dir = tempfile::Builder::new()
            .prefix("portcullis-e2e-tls-")
            .tempdir()
            .expect("temp dir for certificates");
        TestPki { issuer, ca_der, dir }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with common name `cn`.
    pub fn issue(&self, cn: &str, serial: u64) -> ServerCert {
        self.issue_for(&["localhost", "127.0.0.1"], cn, serial)
    }

    /// A server certificate for exactly the names `sans` (DNS names or IPs).
    pub fn issue_for(&self, sans: &[&str], cn: &str, serial: u64) -> ServerCert {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        ServerCert {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    pub fn ca_pem_path(&self) -> PathBuf {
        let path = self.dir.path().join("ca.pem");
        if !path.exists() {
            let pem = pem_encode("CERTIFICATE", &self.ca_der);
            std::fs::write(&path, pem).expect("write ca.pem");
        }
        path
    }

    /// Writes `cert` as the files portcullis is configured with: each file is
    /// written aside and renamed into place, as certbot and friends do.
    pub fn install(&self, cert: &ServerCert) {
        write_atomically(&self.key_path(), &cert.key_pem);
        write_atomically(&self.cert_path(), &cert.cert_pem);
    }

    /// The environment of a portcullis serving TLS with the installed files.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "PORTCULLIS_SERVER_TLS_CERT_FILE",
                self.cert_path().display().to_string(),
            ),
            ("PORTCULLIS_SERVER_TLS_KEY_FILE", self.key_path().display().to_string()),
        ]
    }

    /// A rustls client trusting only the test CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_config_versions(alpn, rustls::DEFAULT_VERSIONS)
    }

    pub fn client_config_versions(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS connection to `localhost:port`.
    pub async fn connect(&self, port: u16, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn));
        connector
            .connect(ServerName::try_from("localhost").expect("server name"), tcp)
            .await
            .expect("TLS handshake with portcullis")
    }

    /// A reqwest client that trusts the test CA and follows no redirects.
    pub fn reqwest_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_der(&self.ca_der).expect("CA as reqwest certificate");
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .expect("build reqwest client")
    }
}

impl ServerCert {
    /// A rustls server configuration presenting this certificate, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> rustls::ServerConfig {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("a key in the PEM");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// The end-entity certificate the server presented on `tls`.
pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write certificate file");
    std::fs::rename(&tmp, path).expect("rename certificate file into place");
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
