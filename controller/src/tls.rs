//! The controller's certificates: its own CA, the server certificate, and client
//! certificates for agents signed from their certificate signing requests.
//!
//! On first start the controller makes a CA and a server certificate under
//! `<data-dir>/tls/`. An operator may give a server certificate and key instead; the CA
//! is still used to sign agent certificates, and agents pin its fingerprint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};

/// Errors about certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation or signing failed.
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM file did not hold what it should.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("TLS client verifier error: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The controller's certificate material, loaded once at start.
pub struct Certificates {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca_key: KeyPair,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

/// Hex sha256 of a certificate's DER bytes: the fingerprint agents pin.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

impl Certificates {
    /// Loads the certificates under `<data_dir>/tls`, creating the CA and server
    /// certificate on first start. `server_files` overrides the server certificate and
    /// key with the operator's own PEM files. `extra_names` are added to the generated
    /// server certificate's subject alternative names.
    pub fn load_or_create(
        data_dir: &Path,
        server_files: Option<(&Path, &Path)>,
        extra_names: &[String],
    ) -> Result<Certificates, TlsError> {
        let dir = data_dir.join("tls");
        std::fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
            path: dir.clone(),
            source,
        })?;
        let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if !ca_cert_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, "Sluice controller CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key)?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            write_private(&ca_cert_path, &cert.pem())?;
            tracing::info!(path = %ca_cert_path.display(), "Created the controller CA.");
        }
        let ca_pem = read(&ca_cert_path)?;
        let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)?;
        let ca_der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| TlsError::Pem {
                path: ca_cert_path.clone(),
                message: format!("not a PEM certificate: {e}"),
            })?;

        let (server_cert_path, server_key_path) = match server_files {
            Some((cert, key)) => (cert.to_owned(), key.to_owned()),
            None => {
                let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
                if !cert.exists() {
                    let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key)?;
                    let mut names = vec![
                        "localhost".to_string(),
                        "127.0.0.1".to_string(),
                        "::1".to_string(),
                    ];
                    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
                        let host = host.trim();
                        if !host.is_empty() {
                            names.push(host.to_string());
                        }
                    }
                    names.extend(extra_names.iter().cloned());
                    names.dedup();
                    let server_key = KeyPair::generate()?;
                    let mut params = CertificateParams::new(names)?;
                    params
                        .distinguished_name
                        .push(DnType::CommonName, "Sluice controller");
                    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                    params.use_authority_key_identifier_extension = true;
                    let server_cert = params.signed_by(&server_key, &issuer)?;
                    write_private(&key, &server_key.serialize_pem())?;
                    write_private(&cert, &format!("{}{}", server_cert.pem(), ca_pem))?;
                }
                (cert, key)
            }
        };
        let server_chain = CertificateDer::pem_slice_iter(read(&server_cert_path)?.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: server_cert_path.clone(),
                message: format!("not a PEM certificate chain: {e}"),
            })?;
        if server_chain.is_empty() {
            return Err(TlsError::Pem {
                path: server_cert_path,
                message: "no certificate found".into(),
            });
        }
        let server_key = PrivateKeyDer::from_pem_slice(read(&server_key_path)?.as_bytes())
            .map_err(|e| TlsError::Pem {
                path: server_key_path.clone(),
                message: format!("not a PEM private key: {e}"),
            })?;
        Ok(Certificates {
            ca_pem,
            ca_der,
            ca_key,
            server_chain,
            server_key,
        })
    }

    /// The CA certificate in PEM form.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA's fingerprint: hex sha256 of its DER bytes.
    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca_der)
    }

    /// The rustls server configuration. Client certificates are optional at the TLS
    /// layer (browsers and the CLI have none), but any certificate presented must chain
    /// to our CA; the agent endpoints then require one.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Signs an agent's certificate signing request. The certificate names the agent
    /// by its id and is good only for client authentication.
    pub fn sign_agent_csr(&self, csr_pem: &str, agent_id: &str) -> Result<String, TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, agent_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let issuer = Issuer::from_ca_cert_der(&self.ca_der, &self.ca_key)?;
        Ok(request.signed_by(&issuer)?.pem())
    }
}
