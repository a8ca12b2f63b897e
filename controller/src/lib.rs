//! The Sluice controller.
//!
//! It keeps pipelines and their execution history in SQLite, schedules action attempts
//! onto agents that dial in over mutually authenticated TLS, stores artifacts by digest
//! and logs as files, and serves the HTTPS API that the CLI (and later the web UI) use.
//!
//! Module map:
//! - [`store`]: SQLite (the only module that touches rusqlite).
//! - [`engine`]: executions, stages, actions, attempts, leases and dispatch.
//! - [`sessions`]: one agent WebSocket session.
//! - [`api`]: the HTTPS routes; [`server`]: the TLS listener that serves them.
//! - [`tls`]: the controller's CA and certificates; [`blobs`]: the artifact store;
//!   [`logs`]: log files.
//! - [`events`]: state-change events (SSE stream, webhooks).
//! - [`schedules`] and [`watch`]: cron schedules and watched directories that start runs.
//! - [`polling`]: source polling through the source plugins' `check` on agents.

pub mod accounts;
pub mod api;
pub mod blobs;
pub mod engine;
pub mod events;
pub mod logs;
pub mod ops;
pub mod plugins;
pub mod polling;
pub mod schedules;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod store;
pub mod tls;
pub mod watch;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use engine::Settings;

/// How to run a controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the database, certificates, logs and artifacts live.
    pub data_dir: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:8443 (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The operator's own server certificate chain and key (PEM), instead of the generated ones.
    pub tls_cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Extra DNS names or IPs for the generated server certificate.
    pub tls_names: Vec<String>,
    /// Engine timing.
    pub settings: Settings,
    /// The plugins built into this binary: (manifest text, WASM component). They are
    /// registered at every start, granted what their manifests ask for.
    pub builtin_plugins: Vec<(&'static str, &'static [u8])>,
    /// URLs every state-change event is POSTed to (in order, at least once).
    pub event_webhooks: Vec<String>,
    /// The name of a secret whose value signs event webhook deliveries (HMAC-SHA256).
    pub event_webhook_secret: Option<String>,
    /// The web UI `admin` user's password, used only when the first start creates it;
    /// without it one is generated and shown once.
    pub admin_password: Option<String>,
}

/// Errors starting a controller.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir could not be created.
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        /// The dir.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Store(#[from] store::StoreError),
    /// Certificates could not be loaded or made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The artifact store could not be opened.
    #[error(transparent)]
    Blobs(#[from] blobs::BlobError),
    /// The engine could not recover its state.
    #[error("cannot recover executions: {0}")]
    Engine(#[from] engine::EngineError),
    /// The secret store's key could not be loaded.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretError),
    /// A built-in plugin could not be registered.
    #[error("cannot register a built-in plugin: {0}")]
    Plugin(#[from] plugins::InstallError),
    /// Event delivery could not be set up.
    #[error(transparent)]
    Events(#[from] events::EventsError),
    /// The admin account could not be created.
    #[error("cannot create the admin account: {0}")]
    Accounts(#[from] accounts::AccountError),
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running controller.
pub struct Controller {
    engine: Arc<engine::Engine>,
    certs: Arc<tls::Certificates>,
    local_addr: SocketAddr,
    data_dir: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    generated_admin_password: Option<String>,
}

impl Controller {
    /// Opens the data dir (creating certificates and the database on first start),
    /// recovers executions in progress, and starts serving.
    pub async fn start(config: Config) -> Result<Controller, StartError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let server_files = config
            .tls_cert_and_key
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let certs = Arc::new(tls::Certificates::load_or_create(
            &data_dir,
            server_files,
            &config.tls_names,
        )?);
        let store = Arc::new(store::Store::open(&data_dir.join("sluice.db"))?);
        let blobs = blobs::BlobStore::new(data_dir.join("blobs"), data_dir.join("blobs.tmp"))?;
        let engine = Arc::new(engine::Engine::new(
            store,
            blobs,
            logs::LogFiles::new(&data_dir),
            config.settings.clone(),
            secrets::SecretBox::load_or_create(&data_dir)?,
        ));
        for (manifest, wasm) in &config.builtin_plugins {
            engine.register_builtin(manifest, wasm)?;
        }
        engine.reload_plugins()?;
        engine.recover()?;
        let ops = Arc::new(ops::Ops::new());
        ops.set_recovered();
        let webhooks = events::Webhooks::new(&config.event_webhooks)?
            .signed_with(config.event_webhook_secret.clone());
        let event_hub = Arc::new(events::EventHub::new(engine.store().last_event_id()?));

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let accounts = Arc::new(accounts::Accounts::new(engine.store().clone()));
        let generated_admin_password = accounts.ensure_admin(config.admin_password.as_deref())?;
        let routes = api::routes(api::ApiState {
            engine: engine.clone(),
            certs: certs.clone(),
            events: event_hub.clone(),
            ops,
            accounts,
            caller: api::Caller::default(),
        });
        let tls_config = certs.server_config()?;
        let mut tasks = vec![
            tokio::spawn(server::serve(listener, tls_config, routes)),
            tokio::spawn(engine.clone().run_reaper()),
            tokio::spawn(schedules::run(engine.clone())),
            tokio::spawn(watch::run(engine.clone())),
            tokio::spawn(polling::run(engine.clone())),
        ];
        tasks.extend(webhooks.spawn(&engine, &event_hub));
        tracing::info!(addr = %local_addr, data_dir = %data_dir.display(), "Controller listening.");
        let controller = Controller {
            engine,
            certs,
            local_addr,
            data_dir,
            tasks,
            generated_admin_password,
        };
        controller.engine.set_public_url(&controller.url());
        Ok(controller)
    }

    /// The address the controller listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The controller's URL, as clients on this machine reach it.
    pub fn url(&self) -> String {
        let host = match self.local_addr.ip() {
            ip if ip.is_unspecified() => "localhost".to_string(),
            std::net::IpAddr::V4(ip) if ip.is_loopback() => "localhost".to_string(),
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!("https://{host}:{}", self.local_addr.port())
    }

    /// Hex sha256 fingerprint of the controller CA, which agents pin when joining.
    pub fn ca_fingerprint(&self) -> String {
        self.certs.ca_fingerprint()
    }

    /// Path of the CA certificate (PEM), for clients to trust.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.crt")
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<engine::Engine> {
        &self.engine
    }

    /// Makes a new API token (only its hash is stored) and returns it.
    pub fn create_api_token(&self, name: &str) -> Result<String, store::StoreError> {
        let token = api::new_secret("sat");
        self.engine
            .store()
            .insert_api_token(&api::hash_secret(&token), name)?;
        Ok(token)
    }

    /// Makes a single-use join token for an agent (only its hash is stored).
    pub fn create_join_token(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
        ttl: std::time::Duration,
    ) -> Result<String, store::StoreError> {
        let token = api::new_secret("sjt");
        let expires = store::now_ms() + ttl.as_millis() as i64;
        self.engine
            .store()
            .insert_join_token(&api::hash_secret(&token), labels, expires)?;
        Ok(token)
    }

    /// Whether an API token is valid.
    pub fn api_token_is_valid(&self, token: &str) -> bool {
        matches!(
            self.engine.store().api_token(&api::hash_secret(token)),
            Ok(Some(_))
        )
    }

    /// The web UI `admin` password this start generated (first start only, without
    /// `admin_password`): to be shown once.
    pub fn generated_admin_password(&self) -> Option<&str> {
        self.generated_admin_password.as_deref()
    }

    /// Stops serving (the database stays consistent: every transition is committed).
    pub fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}
