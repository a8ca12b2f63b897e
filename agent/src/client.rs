//! TLS and HTTPS to the controller: joining with a pinned CA fingerprint, and the
//! mutually authenticated client used for the session and for artifacts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors talking to the controller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TLS configuration failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The controller could not be reached or answered badly.
    #[error("{0}")]
    Http(String),
    /// The controller refused the request; the message is the controller's.
    #[error("the controller refused: {0}")]
    Refused(String),
    /// The controller's CA is not the one pinned.
    #[error(
        "the controller's CA fingerprint is {actual}, not the {expected} given with --ca-fingerprint; \
         check the URL, or copy the fingerprint printed by `sluice agent token create`"
    )]
    FingerprintMismatch {
        /// Pinned.
        expected: String,
        /// Presented.
        actual: String,
    },
}

/// What `sluice-agent join` stores in the state dir beside the key and certificates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// The controller's URL, e.g. `https://ci.example.com:8443`.
    pub controller_url: String,
    /// The agent's id in the controller.
    pub agent_id: String,
    /// Labels the controller recorded at join.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Files in an agent's state dir.
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state dir at `root`.
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_owned(),
        }
    }

    /// The dir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn read(&self, name: &str) -> Result<String, ClientError> {
        let path = self.file(name);
        std::fs::read_to_string(&path).map_err(|source| ClientError::Io { path, source })
    }

    fn write(&self, name: &str, contents: &str, private: bool) -> Result<(), ClientError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.file(name);
        let io = |source| ClientError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&path)
            .map_err(io)?;
        file.write_all(contents.as_bytes()).map_err(io)
    }

    /// Whether the agent has joined (identity, key and certificate are present).
    pub fn is_joined(&self) -> bool {
        ["agent.json", "agent.key", "agent.crt", "ca.crt"]
            .iter()
            .all(|f| self.file(f).exists())
    }

    /// The stored identity.
    pub fn identity(&self) -> Result<Identity, ClientError> {
        let text = self.read("agent.json")?;
        serde_json::from_str(&text).map_err(|e| ClientError::Io {
            path: self.file("agent.json"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// The mutually authenticated client configuration: trust only the controller's CA,
    /// present the agent's certificate.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let ca = CertificateDer::from_pem_slice(self.read("ca.crt")?.as_bytes())
            .map_err(|e| ClientError::Tls(format!("ca.crt: {e}")))?;
        let chain = CertificateDer::pem_slice_iter(self.read("agent.crt")?.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Tls(format!("agent.crt: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.read("agent.key")?.as_bytes())
            .map_err(|e| ClientError::Tls(format!("agent.key: {e}")))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca)
            .map_err(|e| ClientError::Tls(format!("ca.crt: {e}")))?;
        if self.file(SERVER_CA).exists() {
            add_server_trust(&mut roots, &self.read(SERVER_CA)?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Arc::new(config))
    }

    /// An HTTPS client for the controller with the agent's certificate.
    pub fn http_client(&self) -> Result<reqwest::Client, ClientError> {
        http_client((*self.tls_config()?).clone())
    }
}

/// Extra trust for the controller's server certificate, written at join when the
/// operator gave the controller its own certificate (`--server-ca`).
const SERVER_CA: &str = "server-ca.crt";

/// The word that stands for the operating system's trust store in `--server-ca`.
pub const SYSTEM_ROOTS: &str = "system";

/// Adds the trust anchors named by a `server-ca.crt`: PEM certificates, or the single
/// word `system` for the operating system's trust store.
fn add_server_trust(roots: &mut RootCertStore, contents: &str) -> Result<(), ClientError> {
    if contents.trim() == SYSTEM_ROOTS {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(ClientError::Tls(format!(
                "no system trust store found: {:?}",
                found.errors
            )));
        }
        roots.add_parsable_certificates(found.certs);
        return Ok(());
    }
    for cert in CertificateDer::pem_slice_iter(contents.as_bytes()) {
        let cert = cert.map_err(|e| ClientError::Tls(format!("{SERVER_CA}: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("{SERVER_CA}: {e}")))?;
    }
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn http_client(mut config: rustls::ClientConfig) -> Result<reqwest::Client, ClientError> {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .connect_timeout(std::time::Duration::from_secs(10))
        // A transfer that stalls fails the action instead of holding it forever;
        // a large one that keeps moving is fine.
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| ClientError::Tls(e.to_string()))
}

/// What joining needs.
pub struct JoinRequest<'a> {
    /// Controller URL.
    pub controller_url: &'a str,
    /// The single-use join token.
    pub token: &'a str,
    /// The CA fingerprint printed with the token.
    pub ca_fingerprint: &'a str,
    /// Extra labels the agent asks for (the token's labels win).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Parallel actions.
    pub capacity: u32,
    /// When the controller serves a certificate the operator gave it (not one from its
    /// own CA): a PEM file with the CA that issued it, or `system` for the operating
    /// system's trust store.
    pub server_ca: Option<&'a Path>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinResponse {
    agent_id: String,
    certificate: String,
    ca_certificate: String,
    labels: std::collections::BTreeMap<String, String>,
}

/// Exchanges a join token for a client certificate and stores the agent's identity.
///
/// The controller's CA is fetched over an unverified connection and accepted only if
/// its sha256 matches the pinned fingerprint; the join itself then runs over a
/// connection verified against that CA.
pub async fn join(state: &StateDir, request: JoinRequest<'_>) -> Result<Identity, ClientError> {
    std::fs::create_dir_all(state.root()).map_err(|source| ClientError::Io {
        path: state.root().to_owned(),
        source,
    })?;
    let url = request.controller_url.trim_end_matches('/');
    let bootstrap = http_client(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
            .with_no_client_auth(),
    )?;
    let ca_pem = bootstrap
        .get(format!("{url}/api/v1/ca"))
        .send()
        .await
        .map_err(|e| ClientError::Http(format!("cannot reach the controller at {url}: {e}")))?
        .text()
        .await
        .map_err(|e| ClientError::Http(format!("cannot read the controller's CA: {e}")))?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| {
        ClientError::Http(format!("the controller sent no valid CA certificate: {e}"))
    })?;
    let actual = hex::encode(Sha256::digest(&ca_der));
    let expected = request.ca_fingerprint.replace(':', "").to_ascii_lowercase();
    if actual != expected {
        return Err(ClientError::FingerprintMismatch { expected, actual });
    }
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_der)
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let server_trust = match request.server_ca {
        Some(path) if path == Path::new(SYSTEM_ROOTS) => Some(SYSTEM_ROOTS.to_string()),
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| ClientError::Io {
                path: path.to_owned(),
                source,
            })?,
        ),
        None => None,
    };
    if let Some(trust) = &server_trust {
        add_server_trust(&mut roots, trust)?;
    }
    let verified = http_client(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )?;

    let key = rcgen::KeyPair::generate().map_err(|e| ClientError::Tls(e.to_string()))?;
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "agent".into());
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname.clone());
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let response = verified
        .post(format!("{url}/api/v1/agents/join"))
        .json(&serde_json::json!({
            "token": request.token,
            "csr": csr,
            "name": hostname,
            "labels": request.labels,
            "capacity": request.capacity,
            "version": env!("CARGO_PKG_VERSION"),
        }))
        .send()
        .await
        .map_err(|e| {
            ClientError::Http(format!(
                "join request to {url} failed: {e}{}",
                if server_trust.is_none() {
                    " (if the controller serves a certificate of your own, pass --server-ca with its issuer, or --server-ca system)"
                } else {
                    ""
                }
            ))
        })?;
    if !response.status().is_success() {
        return Err(ClientError::Refused(error_message(response).await));
    }
    let joined: JoinResponse = response
        .json()
        .await
        .map_err(|e| ClientError::Http(format!("unexpected join response: {e}")))?;
    let identity = Identity {
        controller_url: url.to_string(),
        agent_id: joined.agent_id,
        labels: joined.labels,
    };
    state.write("agent.key", &key.serialize_pem(), true)?;
    state.write("agent.crt", &joined.certificate, false)?;
    state.write("ca.crt", &joined.ca_certificate, false)?;
    match &server_trust {
        Some(trust) => state.write(SERVER_CA, trust, false)?,
        None => {
            let _ = std::fs::remove_file(state.file(SERVER_CA));
        }
    }
    state.write(
        "agent.json",
        &serde_json::to_string_pretty(&identity).map_err(|e| ClientError::Tls(e.to_string()))?,
        false,
    )?;
    Ok(identity)
}

/// The controller's error message from a JSON error body, or the status line.
pub async fn error_message(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("HTTP {status}: {body}"))
}

/// Accepts any server certificate. Used only to download the CA certificate, which is
/// then checked against the pinned fingerprint before anything is sent.
#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
