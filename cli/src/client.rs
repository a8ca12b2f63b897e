//! The CLI's view of a controller: where it is, how to trust it, how to authenticate,
//! and a small JSON-over-HTTPS client.
//!
//! Connection settings come, in order of precedence, from flags, from `SLUICE_URL` /
//! `SLUICE_TOKEN` / `SLUICE_CA`, and from the client config file that `sluice up` and
//! `sluice controller` write (`$SLUICE_CONFIG`, else `$XDG_CONFIG_HOME/sluice/config.toml`,
//! else `~/.config/sluice/config.toml`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Exit codes (documented in the README).
pub mod exit {
    /// It worked.
    pub const OK: u8 = 0;
    /// A request failed or the controller could not be reached.
    pub const ERROR: u8 = 1;
    /// The definition is invalid.
    pub const INVALID: u8 = 3;
    /// The execution ended, but not in Succeeded.
    pub const EXECUTION_FAILED: u8 = 4;
    /// The thing asked for does not exist.
    pub const NOT_FOUND: u8 = 5;
    /// The token was missing or refused.
    pub const UNAUTHORIZED: u8 = 6;
}

/// The client config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Controller URL.
    pub url: Option<String>,
    /// API token.
    pub token: Option<String>,
    /// Path of the controller CA certificate (PEM).
    pub ca: Option<PathBuf>,
}

/// Where the client config lives.
pub fn config_path() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_CONFIG") {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("sluice").join("config.toml")
}

impl ClientConfig {
    /// Reads the config file, or an empty config if there is none.
    pub fn load() -> anyhow::Result<ClientConfig> {
        let path = config_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{}: invalid client config", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the config file (owner-only: it holds a token).
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = config_path();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = toml::to_string(self).context("cannot encode the client config")?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// A failed API call, with the controller's message and field errors.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// The controller's message.
    pub message: String,
    /// Field-level problems.
    pub errors: Vec<(String, String)>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        for (path, message) in &self.errors {
            if path.is_empty() {
                write!(f, "\n  {message}")?;
            } else {
                write!(f, "\n  {path}: {message}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    /// The exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            401 | 403 => exit::UNAUTHORIZED,
            404 => exit::NOT_FOUND,
            422 => exit::INVALID,
            _ => exit::ERROR,
        }
    }
}

/// A connection to the controller's API.
pub struct Api {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Connection flags shared by the commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    /// Controller URL [env: SLUICE_URL; default: from the client config].
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// API token [env: SLUICE_TOKEN; default: from the client config].
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// The controller's CA certificate (PEM) [env: SLUICE_CA; default: from the client config].
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
}

impl Api {
    /// Connects using flags, then environment, then the config file.
    pub fn from_args(args: &ConnectArgs) -> anyhow::Result<Api> {
        let config = ClientConfig::load()?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let url = args
            .url
            .clone()
            .or_else(|| env("SLUICE_URL"))
            .or(config.url)
            .context(
                "no controller URL: pass --url, set SLUICE_URL, or start one with `sluice up`",
            )?;
        let token = args
            .token
            .clone()
            .or_else(|| env("SLUICE_TOKEN"))
            .or(config.token);
        let ca = args
            .ca
            .clone()
            .or_else(|| env("SLUICE_CA").map(PathBuf::from))
            .or(config.ca);
        Api::new(&url, token, ca.as_deref())
    }

    /// A client for `url`, trusting `ca` (PEM file) if given, else the system roots.
    pub fn new(url: &str, token: Option<String>, ca: Option<&Path>) -> anyhow::Result<Api> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read the CA file {}", path.display()))?;
                for cert in rustls_pki_pem(&pem)
                    .with_context(|| format!("{}: not a PEM certificate", path.display()))?
                {
                    roots
                        .add(cert)
                        .with_context(|| format!("{}: unusable CA certificate", path.display()))?;
                }
            }
            // No CA given: the controller has a certificate from a CA the system trusts.
            None => {
                let found = rustls_native_certs::load_native_certs();
                if found.certs.is_empty() {
                    bail!(
                        "no CA certificate to trust the controller with and no system trust store: pass --ca or set SLUICE_CA"
                    );
                }
                roots.add_parsable_certificates(found.certs);
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Api {
            url: url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// The controller URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .request(method, format!("{}{path}", self.url))
            // Recorded as who started an execution.
            .header(
                "x-sluice-user",
                format!(
                    "{} (CLI)",
                    std::env::var("USER")
                        .or_else(|_| std::env::var("LOGNAME"))
                        .unwrap_or_else(|_| "unknown".into())
                ),
            );
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = builder
            .send()
            .await
            .with_context(|| format!("cannot reach the controller at {}", self.url))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let failure = ApiFailure {
            status,
            message: value["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}: {body}")),
            errors: value["errors"]
                .as_array()
                .map(|errors| {
                    errors
                        .iter()
                        .map(|e| {
                            (
                                e["path"].as_str().unwrap_or("").to_string(),
                                e["message"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        Err(failure.into())
    }

    /// GET returning JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .send(self.request(reqwest::Method::GET, path))
            .await?
            .json()
            .await?)
    }

    /// GET returning the raw response.
    pub async fn get_raw(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// GET of a Server-Sent Events stream, resuming after `last_event_id` if given.
    pub async fn get_event_stream(
        &self,
        path: &str,
        last_event_id: Option<i64>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .request(reqwest::Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        self.send(request).await
    }

    /// POST or PUT of JSON, returning JSON.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .send(self.request(method, path).json(body))
            .await?
            .json()
            .await?)
    }

    /// A request whose answer has no body (204), with an optional JSON body.
    pub async fn send_empty(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<()> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await?;
        Ok(())
    }

    /// POST or PUT of a text body, returning JSON.
    pub async fn send_text(
        &self,
        method: reqwest::Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .send(self.request(method, path).body(body))
            .await?
            .json()
            .await?)
    }
}

fn rustls_pki_pem(pem: &[u8]) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs =
        rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        bail!("no certificate found");
    }
    Ok(certs)
}
