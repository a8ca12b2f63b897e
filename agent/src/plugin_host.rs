//! The wasmtime host for action plugins.
//!
//! One [`PluginHost`] per agent holds one engine (epoch interruption on, pooling
//! allocator when the machine allows it), a ticker thread that advances the epoch every
//! 10 ms, and the loaded plugins: each compiled once (or loaded from the on-disk cache)
//! and pre-linked once. Every action attempt gets a fresh store and instance:
//!
//! - the only directory the plugin sees is the action workspace, as `/workspace`;
//! - no environment, no arguments, no network of its own (denied in the WASI context,
//!   and a component that imports `wasi:sockets` is refused at load);
//! - 256 MiB of memory; CPU bounded by the action timeout (epoch deadline), host calls
//!   bounded by the same deadline;
//! - programs, hosts, secrets and environment variables only as granted ([`Grants`]),
//!   each checked in its host call, with an error naming the missing capability;
//! - a trap, a panic or a timeout fails the action, never the agent.
//!
//! Two versions of the WIT package are served: the current `sluice:plugin@0.2.0` and
//! the one before it, `@0.1.0` (frozen). A component's imports say which it was built
//! for; anything else is refused at load with the versions that are supported.

mod cache;
mod exec;
mod http;
mod output;

pub use cache::LoadSource;
pub use sluice_pipeline::manifest::{CATEGORIES, ConfigField, Manifest, SUPPORTED_API_VERSIONS};
pub use sluice_proto::{Grants, TestCase, TestStatus};

use exec::{DeadlineExceeded, ExecPolicy, GUEST_WORKSPACE};
use futures_util::FutureExt as _;
use http::HttpPolicy;
use output::{GuestOutput, send_line};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod bindings {
    /// `sluice:plugin@0.2.0`, the current version.
    pub mod v0_2 {
        wasmtime::component::bindgen!({
            world: "action-plugin",
            path: "../plugin-sdk/wit/0.2.0",
            imports: {
                "sluice:plugin/host.exec": async | trappable,
                "sluice:plugin/host.http": async | trappable,
                "sluice:plugin/host.run-component": async | trappable,
                default: trappable,
            },
            exports: { default: async },
        });
    }
    /// `sluice:plugin@0.1.0`, frozen: still served for plugins built against it.
    pub mod v0_1 {
        wasmtime::component::bindgen!({
            world: "action-plugin",
            path: "../plugin-sdk/wit/0.1.0",
            imports: {
                "sluice:plugin/host.exec": async | trappable,
                default: trappable,
            },
            exports: { default: async },
        });
    }
}

use bindings::v0_2::sluice::plugin::types as wit;

/// Receives the action's log output in order: plugin log lines (prefixed with level for
/// warn/error) and exec'd programs' stdout/stderr as they arrive, one line per message,
/// each ending in `\n`. Cheap to clone.
pub type LogSink = tokio::sync::mpsc::UnboundedSender<Vec<u8>>;

/// Memory one plugin instance may use.
pub const MEMORY_LIMIT: usize = 256 << 20;
/// How often the epoch advances: the granularity of CPU deadlines.
const TICK: Duration = Duration::from_millis(10);
/// Extra time past the deadline before the whole call is abandoned (the epoch and the
/// exec deadline normally end it first).
const GRACE: Duration = Duration::from_millis(250);
/// The longest action timeout honoured (keeps deadline arithmetic far from overflow).
const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Output variable limits, as in CodePipeline.
const MAX_VARIABLE_NAME: usize = 128;
const MAX_VARIABLE_VALUE: usize = 100 * 1024;
const MAX_VARIABLES_TOTAL: usize = 122_880;
/// The most test cases one action keeps, and how much of a failure's details.
pub const MAX_TEST_CASES: usize = 100_000;
const MAX_TEST_DETAILS: usize = 4 * 1024;

/// Why the plugin host could not start or load a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot set up the WASM engine: {0}")]
    Engine(String),
    #[error("cannot use the plugin cache directory {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {plugin}: invalid plugin.toml: {message}")]
    Manifest { plugin: String, message: String },
    #[error("plugin {plugin}: cannot compile its WASM component: {message}")]
    Compile { plugin: String, message: String },
    #[error(
        "plugin {plugin} imports {import}, but plugins get no network access of their own; \
         the plugin is refused (use the host's http call, which reaches granted hosts)"
    )]
    NetworkImport { plugin: String, import: String },
    #[error(
        "plugin {plugin} is not built for a supported plugin API: {found}; this agent runs \
         plugins built for sluice:plugin@{supported} (rebuild it with a current plugin SDK)"
    )]
    ApiVersion {
        plugin: String,
        found: String,
        supported: String,
    },
    #[error("plugin {plugin}: cannot link it against this agent's host interface: {message}")]
    Link { plugin: String, message: String },
    #[error(
        "plugin {plugin} serves {category}/{provider}/{version}, which plugin {other} already serves"
    )]
    Conflict {
        plugin: String,
        other: String,
        category: String,
        provider: String,
        version: String,
    },
}

impl From<sluice_pipeline::manifest::ManifestError> for PluginError {
    fn from(e: sluice_pipeline::manifest::ManifestError) -> Self {
        PluginError::Manifest {
            plugin: e.origin,
            message: e.problems.join("; "),
        }
    }
}

/// One action attempt for a plugin to run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Host dir, preopened as /workspace (the only preopen).
    pub workspace: PathBuf,
    pub pipeline: String,
    pub execution_id: String,
    pub stage: String,
    pub action: String,
    pub category: String,
    pub config: BTreeMap<String, String>,
    /// Artifact names; already unpacked by the executor at `<workspace>/inputs/<name>`.
    pub inputs: Vec<String>,
    /// Artifact names; the host creates `<workspace>/outputs/<name>` empty before the run.
    pub outputs: Vec<String>,
    /// The action timeout.
    pub timeout: Duration,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Pipeline-level facts (e.g. PipelineExecutionId) the plugin may read.
    pub variables: BTreeMap<String, String>,
    /// Secret values by name. Only those the plugin was granted are ever handed to it.
    pub secrets: BTreeMap<String, String>,
}

/// What a source plugin's `check` is asked.
#[derive(Debug, Clone, Default)]
pub struct CheckRequest {
    /// Scratch directory, preopened as /workspace.
    pub workspace: PathBuf,
    pub config: BTreeMap<String, String>,
    /// The newest revision seen so far.
    pub last_revision: Option<String>,
    pub timeout: Duration,
}

/// A revision a source plugin's `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub id: String,
    pub summary: String,
}

/// How an action attempt ended. Test cases the plugin reported come with either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded {
        summary: String,
        output_variables: BTreeMap<String, String>,
        tests: Vec<TestCase>,
    },
    Failed {
        message: String,
        tests: Vec<TestCase>,
    },
}

impl RunOutcome {
    fn failed(message: String) -> RunOutcome {
        RunOutcome::Failed {
            message,
            tests: Vec::new(),
        }
    }
}

/// A pre-linked plugin of one of the served WIT versions.
#[derive(Clone)]
enum PluginPre {
    V0_1(bindings::v0_1::ActionPluginPre<PluginState>),
    V0_2(bindings::v0_2::ActionPluginPre<PluginState>),
}

impl PluginPre {
    fn api_version(&self) -> &'static str {
        match self {
            PluginPre::V0_1(_) => "0.1.0",
            PluginPre::V0_2(_) => "0.2.0",
        }
    }

    /// Instantiates and calls `run` (a 0.1.0 plugin through the frozen interface).
    async fn run(
        &self,
        store: &mut Store<PluginState>,
        ctx: &wit::ActionContext,
    ) -> Result<Result<wit::ActionOutcome, wit::ActionError>, Ended> {
        match self {
            PluginPre::V0_2(pre) => {
                let instance = pre
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(Ended::Instantiate)?;
                instance.call_run(store, ctx).await.map_err(Ended::Call)
            }
            PluginPre::V0_1(pre) => {
                let instance = pre
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(Ended::Instantiate)?;
                let result = instance
                    .call_run(store, &legacy::context(ctx))
                    .await
                    .map_err(Ended::Call)?;
                Ok(legacy::result(result))
            }
        }
    }
}

/// How a call into a plugin ended without a result.
enum Ended {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// Where and as whom a plugin call runs.
struct Sandbox<'a> {
    plugin_id: &'a str,
    grants: &'a Grants,
    /// The workspace on the host, preopened as /workspace.
    workspace: PathBuf,
    deadline: Instant,
    log: LogSink,
}

/// A component compiled and pre-linked, before it has a manifest.
struct Compiled {
    pre: PluginPre,
    digest: String,
    source: LoadSource,
    load_time: Duration,
}

impl HostCore {
    /// Compiles (or loads from the cache) and pre-links a component, reading from its
    /// imports which WIT version it was built for.
    fn compile(&self, id: &str, wasm: &[u8]) -> Result<Compiled, PluginError> {
        let started = Instant::now();
        let (component, source, digest) =
            cache::load(&self.engine, &self.cache_dir, &self.engine_key, id, wasm)?;
        let counter = match source {
            LoadSource::Cached => &self.cache_hits,
            LoadSource::Compiled => &self.cache_misses,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let load_time = started.elapsed();
        let supported = || SUPPORTED_API_VERSIONS.join(" or @");
        let mut api = None;
        for (import, _) in component.component_type().imports(&self.engine) {
            if import.starts_with("wasi:sockets/") {
                return Err(PluginError::NetworkImport {
                    plugin: id.to_string(),
                    import: import.to_string(),
                });
            }
            if let Some(version) = import.strip_prefix("sluice:plugin/host@") {
                api = Some(version.to_string());
            }
        }
        let link = |e: wasmtime::Error| PluginError::Link {
            plugin: id.to_string(),
            message: format!("{e:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let pre = match api.as_deref() {
            Some("0.2.0") => {
                PluginPre::V0_2(bindings::v0_2::ActionPluginPre::new(instance_pre).map_err(link)?)
            }
            Some("0.1.0") => {
                PluginPre::V0_1(bindings::v0_1::ActionPluginPre::new(instance_pre).map_err(link)?)
            }
            Some(other) => {
                return Err(PluginError::ApiVersion {
                    plugin: id.to_string(),
                    found: format!("it imports sluice:plugin/host@{other}"),
                    supported: supported(),
                });
            }
            None => {
                return Err(PluginError::ApiVersion {
                    plugin: id.to_string(),
                    found: "it imports no sluice:plugin/host interface".to_string(),
                    supported: supported(),
                });
            }
        };
        Ok(Compiled {
            pre,
            digest,
            source,
            load_time,
        })
    }

    /// A fresh store for one call: the workspace as the only preopen, the grants as
    /// policies, memory capped, and the epoch deadline armed.
    fn store(
        self: &Arc<Self>,
        sandbox: Sandbox<'_>,
        secrets: BTreeMap<String, String>,
        nesting: Option<wit::ActionContext>,
    ) -> Result<(Store<PluginState>, GuestOutput, GuestOutput), String> {
        let Sandbox {
            plugin_id,
            grants,
            workspace,
            deadline,
            log,
        } = sandbox;
        let stdout = GuestOutput::new(log.clone());
        let stderr = GuestOutput::new(log.clone());
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        wasi.preopened_dir(&workspace, GUEST_WORKSPACE, FsPerms::ReadWrite)
            .map_err(|e| {
                format!(
                    "cannot open the workspace {} for the plugin: {e:#}",
                    workspace.display()
                )
            })?;
        let plugin_id: Arc<str> = plugin_id.into();
        // Only granted secrets are ever in the store: a plugin cannot read what it was
        // not granted, whatever the job carried.
        let granted = |name: &str| grants.secrets.iter().any(|g| g == "*" || g == name);
        let secrets = secrets
            .into_iter()
            .filter(|(name, _)| granted(name))
            .collect();
        let state = PluginState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            exec: ExecPolicy {
                plugin_id: plugin_id.clone(),
                programs: grants.programs.clone().into(),
                workspace,
                log: log.clone(),
                deadline,
            },
            http: HttpPolicy {
                plugin_id,
                hosts: grants.hosts.clone().into(),
                client: self.http.clone(),
                deadline,
            },
            grants: grants.clone(),
            secrets,
            nesting: nesting.map(|parent| (self.clone(), parent)),
            variables: BTreeMap::new(),
            variables_size: 0,
            tests: Vec::new(),
            tests_dropped: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Every tick: past the deadline, stop; otherwise yield to the async runtime so
        // that a busy plugin never starves other tasks on this thread.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok((store, stdout, stderr))
    }
}

/// A plugin compiled and linked, ready to run actions.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    /// What it may use: by default everything its manifest asks for by name; the
    /// controller's grants when it runs a job.
    pub grants: Grants,
    digest: String,
    source: LoadSource,
    load_time: Duration,
    pre: PluginPre,
}

impl LoadedPlugin {
    /// sha256 of the plugin's WASM component, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether it was compiled now or loaded from the cache.
    pub fn load_source(&self) -> LoadSource {
        self.source
    }

    /// How long compiling or loading it took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The WIT package version it was built against, e.g. "0.2.0".
    pub fn api_version(&self) -> &'static str {
        self.pre.api_version()
    }

    /// The same compiled plugin with other grants (what the operator granted).
    pub fn with_grants(&self, grants: Grants) -> LoadedPlugin {
        LoadedPlugin {
            manifest: self.manifest.clone(),
            grants,
            digest: self.digest.clone(),
            source: self.source,
            load_time: self.load_time,
            pre: self.pre.clone(),
        }
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("manifest", &self.manifest)
            .field("grants", &self.grants)
            .field("digest", &self.digest)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Everything a manifest asks for by name, as grants (what built-ins get).
pub fn requested_grants(manifest: &Manifest) -> Grants {
    let c = &manifest.capabilities;
    let named = |list: &[String]| -> Vec<String> {
        list.iter().filter(|n| n.as_str() != "*").cloned().collect()
    };
    Grants {
        programs: named(&c.programs),
        hosts: named(&c.hosts),
        secrets: named(&c.secrets),
        env: named(&c.env),
    }
}

/// The plugin runtime of an agent. Cloning is cheap and shares the engine.
#[derive(Clone)]
pub struct PluginHost {
    core: Arc<HostCore>,
    plugins: Vec<Arc<LoadedPlugin>>,
}

/// What every store of this host shares: the engine, the linker, the compiled cache,
/// the HTTP client. A store holds it to run nested components (`run-component`).
struct HostCore {
    engine: Engine,
    linker: Linker<PluginState>,
    cache_dir: PathBuf,
    engine_key: String,
    pooling: bool,
    http: reqwest::Client,
    /// Loads the compiled cache served, and loads that compiled (reported in heartbeats).
    cache_hits: std::sync::atomic::AtomicU64,
    cache_misses: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("cache_dir", &self.core.cache_dir)
            .field("pooling", &self.core.pooling)
            .field("plugins", &self.plugins)
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// One engine (epoch interruption on, trimmed features, pooling allocator if it
    /// works), a ticker thread, and a compiled-component cache under `cache_dir` keyed by
    /// sha256(wasm) + `engine.precompile_compatibility_hash()`.
    pub fn new(cache_dir: &Path) -> Result<PluginHost, PluginError> {
        std::fs::create_dir_all(cache_dir).map_err(|source| PluginError::Cache {
            path: cache_dir.to_path_buf(),
            source,
        })?;
        let (engine, pooling) = make_engine()?;
        start_ticker(&engine)?;

        let engine_error = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut linker = Linker::<PluginState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_error)?;
        bindings::v0_2::ActionPlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_error)?;
        bindings::v0_1::ActionPlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_error)?;

        Ok(PluginHost {
            core: Arc::new(HostCore {
                engine_key: cache::engine_key(&engine),
                engine,
                linker,
                cache_dir: cache_dir.to_path_buf(),
                pooling,
                http: http::client().map_err(PluginError::Engine)?,
                cache_hits: Default::default(),
                cache_misses: Default::default(),
            }),
            plugins: Vec::new(),
        })
    }

    /// Loads every built-in plugin ([`crate::builtin::all`]): parses its manifest, loads
    /// the cached compiled form or compiles and stores it, and pre-links it once.
    pub fn load_builtins(&mut self) -> Result<(), PluginError> {
        for builtin in crate::builtin::all() {
            let plugin = self.load(builtin.id, builtin.manifest, builtin.wasm)?;
            if plugin.manifest.id != builtin.id {
                return Err(PluginError::Manifest {
                    plugin: builtin.id.to_string(),
                    message: format!(
                        "id {:?} does not match the plugin's folder name {:?}",
                        plugin.manifest.id, builtin.id
                    ),
                });
            }
        }
        Ok(())
    }

    /// Loads one plugin from its manifest text and WASM component and keeps it; `origin`
    /// names it in errors. A plugin with the same id and version replaces the loaded one.
    pub fn load(
        &mut self,
        origin: &str,
        manifest: &str,
        wasm: &[u8],
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let manifest = Manifest::parse(origin, manifest)?;
        let (id, version) = (manifest.id.clone(), manifest.version.clone());
        for other in self
            .plugins
            .iter()
            .filter(|p| p.manifest.id != id || p.manifest.version != version)
        {
            for category in &manifest.categories {
                if other
                    .manifest
                    .serves(category, &manifest.provider, &manifest.version)
                {
                    return Err(PluginError::Conflict {
                        plugin: id,
                        other: other.manifest.id.clone(),
                        category: category.clone(),
                        provider: manifest.provider.clone(),
                        version: manifest.version.clone(),
                    });
                }
            }
        }
        let plugin = Arc::new(self.compile(manifest, wasm)?);
        self.plugins
            .retain(|p| p.manifest.id != id || p.manifest.version != version);
        self.plugins.push(plugin.clone());
        Ok(plugin)
    }

    /// Compiles (or loads from the cache) and pre-links a plugin without keeping it:
    /// what an agent does with a plugin it fetched for a job.
    pub fn compile(&self, manifest: Manifest, wasm: &[u8]) -> Result<LoadedPlugin, PluginError> {
        let compiled = self.core.compile(&manifest.id, wasm)?;
        let api = compiled.pre.api_version();
        if api != manifest.api_version {
            return Err(PluginError::ApiVersion {
                plugin: manifest.id.clone(),
                found: format!(
                    "its component imports sluice:plugin/host@{api}, but plugin.toml says \
                     api_version {:?}",
                    manifest.api_version
                ),
                supported: SUPPORTED_API_VERSIONS.join(" or @"),
            });
        }
        tracing::info!(
            plugin = %manifest.id, version = %manifest.version, api = %api,
            source = ?compiled.source, load_time = ?compiled.load_time,
            digest = %compiled.digest, "loaded plugin"
        );
        Ok(LoadedPlugin {
            grants: requested_grants(&manifest),
            manifest,
            digest: compiled.digest,
            source: compiled.source,
            load_time: compiled.load_time,
            pre: compiled.pre,
        })
    }

    /// How many loads the compiled cache served and how many compiled, since this host
    /// was made (shared by its clones).
    pub fn cache_stats(&self) -> sluice_proto::PluginCacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        sluice_proto::PluginCacheStats {
            hits: self.core.cache_hits.load(Relaxed),
            misses: self.core.cache_misses.load(Relaxed),
        }
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// The loaded plugin whose component has this sha256.
    pub fn by_digest(&self, digest: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.iter().find(|p| p.digest == digest).cloned()
    }

    /// Whether the engine uses the pooling instance allocator (else on-demand).
    pub fn uses_pooling_allocator(&self) -> bool {
        self.core.pooling
    }

    /// Finds the plugin serving (category, provider, version), e.g. ("Build","commands","1").
    pub fn find(&self, category: &str, provider: &str, version: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .iter()
            .find(|p| p.manifest.serves(category, provider, version))
            .cloned()
    }

    /// Runs one action attempt in a fresh Store + instance. Never panics; every failure
    /// becomes [`RunOutcome::Failed`].
    pub async fn run(
        &self,
        plugin: &LoadedPlugin,
        request: RunRequest,
        log: LogSink,
    ) -> RunOutcome {
        let started = Instant::now();
        let id = plugin.manifest.id.clone();
        let action = request.action.clone();
        let outcome = match AssertUnwindSafe(self.run_attempt(plugin, request, log))
            .catch_unwind()
            .await
        {
            Ok(outcome) => outcome,
            Err(panic) => RunOutcome::failed(format!(
                "plugin {id}: the agent's plugin host panicked: {}",
                panic_message(panic.as_ref())
            )),
        };
        match &outcome {
            RunOutcome::Succeeded { .. } => {
                tracing::info!(plugin = %id, %action, elapsed = ?started.elapsed(), "action succeeded")
            }
            RunOutcome::Failed { message, .. } => {
                tracing::info!(plugin = %id, %action, elapsed = ?started.elapsed(), %message, "action failed")
            }
        }
        outcome
    }

    /// Instantiates a plugin in a fresh store, with `workspace` preopened, and drops it
    /// without calling it: what every attempt pays before `run` (the start-up benchmark
    /// measures instantiation and the call apart with it).
    pub async fn instantiate(&self, plugin: &LoadedPlugin, workspace: &Path) -> Result<(), String> {
        let (log, _) = tokio::sync::mpsc::unbounded_channel();
        let sandbox = Sandbox {
            plugin_id: &plugin.manifest.id,
            grants: &plugin.grants,
            workspace: workspace.to_path_buf(),
            deadline: Instant::now() + Duration::from_secs(60),
            log,
        };
        let (mut store, _, _) = self.core.store(sandbox, BTreeMap::new(), None)?;
        let started = match &plugin.pre {
            PluginPre::V0_2(pre) => pre.instantiate_async(&mut store).await.map(drop),
            PluginPre::V0_1(pre) => pre.instantiate_async(&mut store).await.map(drop),
        };
        started.map_err(|e| {
            format!(
                "plugin {} could not be started: {}",
                plugin.manifest.id,
                e.root_cause()
            )
        })
    }

    /// Asks a source plugin for the revisions newer than `last_revision`, oldest first.
    /// Its log lines go to `log`. The same sandbox as `run`, with the workspace as scratch.
    pub async fn check(
        &self,
        plugin: &LoadedPlugin,
        request: CheckRequest,
        log: LogSink,
    ) -> Result<Vec<Revision>, String> {
        let manifest = &plugin.manifest;
        if !manifest.categories.iter().any(|c| c == "Source") {
            return Err(format!(
                "plugin {} is not a source plugin: it has no revisions to check",
                manifest.id
            ));
        }
        let PluginPre::V0_2(pre) = &plugin.pre else {
            return Err(format!(
                "plugin {} is built for sluice:plugin@{}, which has no check; rebuild it with \
                 a current plugin SDK",
                manifest.id,
                plugin.api_version()
            ));
        };
        let config = manifest
            .check_config(&request.config)
            .map_err(|problems| invalid_config(&problems))?;
        let workspace = request.workspace.canonicalize().map_err(|e| {
            format!(
                "the check workspace {} cannot be used: {e}",
                request.workspace.display()
            )
        })?;
        std::fs::create_dir_all(workspace.join("tmp"))
            .map_err(|e| format!("cannot prepare {}: {e}", workspace.display()))?;
        let deadline = Instant::now() + request.timeout.min(MAX_TIMEOUT);
        let sandbox = Sandbox {
            plugin_id: &manifest.id,
            grants: &plugin.grants,
            workspace,
            deadline,
            log,
        };
        let (mut store, stdout, stderr) = self.core.store(sandbox, BTreeMap::new(), None)?;
        let ctx = wit::CheckContext {
            config: config.into_iter().collect(),
            last_revision: request.last_revision,
            workspace: GUEST_WORKSPACE.to_string(),
        };
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_check(&mut store, &ctx).await
        };
        let hard_stop = tokio::time::Instant::from_std(deadline + GRACE);
        let result = tokio::time::timeout_at(hard_stop, call).await;
        stdout.finish();
        stderr.finish();
        match result {
            Err(_) => Err(format!(
                "check timed out after {}",
                format_duration(request.timeout)
            )),
            Ok(Ok(Ok(revisions))) => Ok(revisions
                .into_iter()
                .map(|r| Revision {
                    id: r.id,
                    summary: r.summary,
                })
                .collect()),
            Ok(Ok(Err(wit::ActionError::InvalidConfig(m)))) => {
                Err(format!("invalid configuration: {m}"))
            }
            Ok(Ok(Err(wit::ActionError::Failed(m)))) => Err(m),
            Ok(Err(e)) if is_timeout(&e) || Instant::now() >= deadline => Err(format!(
                "check timed out after {}",
                format_duration(request.timeout)
            )),
            Ok(Err(e)) => Err(crash_message(&manifest.id, &e, &stderr.tail())),
        }
    }

    async fn run_attempt(
        &self,
        plugin: &LoadedPlugin,
        request: RunRequest,
        log: LogSink,
    ) -> RunOutcome {
        let started = Instant::now();
        let timeout = request.timeout.min(MAX_TIMEOUT);
        let deadline = started + timeout;
        let manifest = &plugin.manifest;
        let failed = RunOutcome::failed;

        if !manifest.categories.contains(&request.category) {
            return failed(format!(
                "plugin {} does not serve category {:?} (it serves {})",
                manifest.id,
                request.category,
                manifest.categories.join(", ")
            ));
        }
        let workspace = match prepare_workspace(&request) {
            Ok(ws) => ws,
            Err(message) => return failed(message),
        };
        let config = match manifest.check_config(&request.config) {
            Ok(c) => c,
            Err(problems) => return failed(invalid_config(&problems)),
        };
        let ctx = wit::ActionContext {
            pipeline: request.pipeline,
            execution_id: request.execution_id,
            stage: request.stage,
            action: request.action,
            category: request.category,
            config: config.into_iter().collect(),
            inputs: artifacts("inputs", &request.inputs),
            outputs: artifacts("outputs", &request.outputs),
            workspace: GUEST_WORKSPACE.to_string(),
            attempt: request.attempt,
            variables: request.variables.into_iter().collect(),
        };
        let sandbox = Sandbox {
            plugin_id: &manifest.id,
            grants: &plugin.grants,
            workspace,
            deadline,
            log,
        };
        let (mut store, stdout, stderr) =
            match self.core.store(sandbox, request.secrets, Some(ctx.clone())) {
                Ok(parts) => parts,
                Err(message) => return failed(message),
            };
        let hard_stop = tokio::time::Instant::from_std(deadline + GRACE);
        let result = tokio::time::timeout_at(hard_stop, plugin.pre.run(&mut store, &ctx)).await;
        stdout.finish();
        stderr.finish();

        let state = store.data_mut();
        let mut tests = std::mem::take(&mut state.tests);
        if state.tests_dropped > 0 {
            send_line(
                &state.exec.log,
                "WARN: ",
                format!(
                    "{} test cases past the first {MAX_TEST_CASES} were not kept",
                    state.tests_dropped
                )
                .as_bytes(),
            );
        }
        tests.shrink_to_fit();
        let failed = |message: String| RunOutcome::Failed {
            message,
            tests: tests.clone(),
        };
        let timed_out = || failed(format!("timed out after {}", format_duration(timeout)));
        match result {
            Err(_elapsed) => timed_out(),
            Ok(Ok(Ok(outcome))) => RunOutcome::Succeeded {
                summary: outcome.summary,
                output_variables: std::mem::take(&mut store.data_mut().variables),
                tests,
            },
            Ok(Ok(Err(wit::ActionError::InvalidConfig(message)))) => {
                failed(format!("invalid configuration: {message}"))
            }
            Ok(Ok(Err(wit::ActionError::Failed(message)))) => failed(message),
            Ok(Err(Ended::Instantiate(e))) => failed(format!(
                "plugin {} could not be started: {}",
                manifest.id,
                e.root_cause()
            )),
            Ok(Err(Ended::Call(e))) => {
                if is_timeout(&e) || Instant::now() >= deadline {
                    timed_out()
                } else {
                    failed(crash_message(&manifest.id, &e, &stderr.tail()))
                }
            }
        }
    }
}

/// "invalid configuration: a; b" from `(key, message)` problems.
fn invalid_config(problems: &[(String, String)]) -> String {
    let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
    format!("invalid configuration: {}", messages.join("; "))
}

/// Conversions between the frozen 0.1.0 interface and the current one: a 0.1.0 plugin
/// runs on the same host functions.
mod legacy {
    use super::bindings::v0_1::sluice::plugin::types as old;
    use super::wit;

    pub fn context(ctx: &wit::ActionContext) -> old::ActionContext {
        let artifacts = |list: &[wit::Artifact]| {
            list.iter()
                .map(|a| old::Artifact {
                    name: a.name.clone(),
                    path: a.path.clone(),
                })
                .collect()
        };
        old::ActionContext {
            pipeline: ctx.pipeline.clone(),
            execution_id: ctx.execution_id.clone(),
            stage: ctx.stage.clone(),
            action: ctx.action.clone(),
            category: ctx.category.clone(),
            config: ctx.config.clone(),
            inputs: artifacts(&ctx.inputs),
            outputs: artifacts(&ctx.outputs),
            workspace: ctx.workspace.clone(),
        }
    }

    pub fn result(
        result: Result<old::ActionOutcome, old::ActionError>,
    ) -> Result<wit::ActionOutcome, wit::ActionError> {
        match result {
            Ok(o) => Ok(wit::ActionOutcome { summary: o.summary }),
            Err(old::ActionError::InvalidConfig(m)) => Err(wit::ActionError::InvalidConfig(m)),
            Err(old::ActionError::Failed(m)) => Err(wit::ActionError::Failed(m)),
        }
    }

    pub fn level(level: old::LogLevel) -> wit::LogLevel {
        match level {
            old::LogLevel::Debug => wit::LogLevel::Debug,
            old::LogLevel::Info => wit::LogLevel::Info,
            old::LogLevel::Warn => wit::LogLevel::Warn,
            old::LogLevel::Error => wit::LogLevel::Error,
        }
    }

    pub fn exec_request(r: old::ExecRequest) -> wit::ExecRequest {
        wit::ExecRequest {
            program: r.program,
            args: r.args,
            env: r.env,
            cwd: r.cwd,
        }
    }

    pub fn exec_result(r: wit::ExecResult) -> old::ExecResult {
        old::ExecResult {
            exit_code: r.exit_code,
            stdout_tail: r.stdout_tail,
            stderr_tail: r.stderr_tail,
        }
    }
}

/// What a store holds for one action attempt.
struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    exec: ExecPolicy,
    http: HttpPolicy,
    grants: Grants,
    /// Granted secrets delivered with the job.
    secrets: BTreeMap<String, String>,
    variables: BTreeMap<String, String>,
    /// Bytes of all variables' names and values.
    variables_size: usize,
    tests: Vec<TestCase>,
    /// Test cases reported past [`MAX_TEST_CASES`].
    tests_dropped: usize,
    /// For `run-component`: the host and the action's context. `None` inside a nested
    /// component, which may not nest further.
    nesting: Option<(Arc<HostCore>, wit::ActionContext)>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::v0_2::sluice::plugin::types::Host for PluginState {}
impl bindings::v0_1::sluice::plugin::types::Host for PluginState {}

impl bindings::v0_2::sluice::plugin::host::Host for PluginState {
    fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        let prefix = match level {
            wit::LogLevel::Debug | wit::LogLevel::Info => "",
            wit::LogLevel::Warn => "WARN: ",
            wit::LogLevel::Error => "ERROR: ",
        };
        send_line(
            &self.exec.log,
            prefix,
            message.trim_end_matches('\n').as_bytes(),
        );
        Ok(())
    }

    async fn exec(
        &mut self,
        request: wit::ExecRequest,
    ) -> wasmtime::Result<Result<wit::ExecResult, String>> {
        // Only owned data crosses the await: the future must be Send, and the store
        // data is not Sync (pitfall 4 in research/wasm.md).
        let policy = self.exec.clone();
        exec::exec(policy, request).await
    }

    fn set_output_variable(
        &mut self,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.set_variable(name, value))
    }

    fn get_secret(&mut self, name: String) -> wasmtime::Result<Result<String, String>> {
        let granted = self.grants.secrets.iter().any(|g| g == "*" || *g == name);
        if !granted {
            return Ok(Err(format!(
                "secret {name} is not granted to plugin {}: it needs the capability secret:{name}",
                self.exec.plugin_id
            )));
        }
        Ok(self.secrets.get(&name).cloned().ok_or_else(|| {
            format!(
                "secret {name} was not delivered to this action: it is not set on the controller \
                 (set it with `sluice secret set {name}`), or the plugin is granted secret:* and \
                 no configuration key of the action names it"
            )
        }))
    }

    fn get_env(&mut self, name: String) -> wasmtime::Result<Result<Option<String>, String>> {
        if !self.grants.env.contains(&name) {
            return Ok(Err(format!(
                "environment variable {name} is not granted to plugin {}: it needs the capability env:{name}",
                self.exec.plugin_id
            )));
        }
        Ok(Ok(std::env::var(&name).ok()))
    }

    async fn http(
        &mut self,
        request: wit::HttpRequest,
    ) -> wasmtime::Result<Result<wit::HttpResponse, String>> {
        let policy = self.http.clone();
        http::send(policy, request).await
    }

    fn report_tests(&mut self, cases: Vec<wit::TestCase>) -> wasmtime::Result<Result<(), String>> {
        for case in cases {
            if self.tests.len() >= MAX_TEST_CASES {
                self.tests_dropped += 1;
                continue;
            }
            let details = case.details.map(|mut d| {
                if d.len() > MAX_TEST_DETAILS {
                    let mut cut = MAX_TEST_DETAILS;
                    while !d.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    d.truncate(cut);
                    d.push_str(" [truncated]");
                }
                d
            });
            self.tests.push(TestCase {
                suite: case.suite,
                classname: case.classname,
                name: case.name,
                status: match case.status {
                    wit::TestStatus::Passed => TestStatus::Passed,
                    wit::TestStatus::Failed => TestStatus::Failed,
                    wit::TestStatus::Errored => TestStatus::Errored,
                    wit::TestStatus::Skipped => TestStatus::Skipped,
                },
                duration_ms: case.duration_ms,
                message: case.message,
                details,
            });
        }
        Ok(Ok(()))
    }

    async fn run_component(
        &mut self,
        path: String,
        config: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<wit::ComponentOutcome, String>> {
        self.nested_component(path, config).await
    }
}

impl PluginState {
    async fn nested_component(
        &mut self,
        path: String,
        config: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<wit::ComponentOutcome, String>> {
        let Some((core, parent)) = self.nesting.clone() else {
            return Ok(Err(
                "a component run by run-component cannot run components itself".to_string(),
            ));
        };
        let host_path = match exec::resolve_file(&self.exec.workspace, &path) {
            Ok(p) => p,
            Err(message) => return Ok(Err(format!("component {message}"))),
        };
        let ctx = wit::ActionContext {
            category: "Invoke".to_string(),
            config,
            ..parent
        };
        let run = core.run_nested(
            path,
            host_path,
            ctx,
            self.exec.workspace.clone(),
            self.exec.deadline,
            self.exec.log.clone(),
        );
        Box::pin(run).await
    }
}

impl HostCore {
    /// Runs a component from the workspace as an Invoke action with no capabilities.
    async fn run_nested(
        self: Arc<Self>,
        guest_path: String,
        host_path: PathBuf,
        ctx: wit::ActionContext,
        workspace: PathBuf,
        deadline: Instant,
        log: LogSink,
    ) -> wasmtime::Result<Result<wit::ComponentOutcome, String>> {
        let wasm = match tokio::fs::read(&host_path).await {
            Ok(bytes) => bytes,
            Err(e) => return Ok(Err(format!("cannot read component {guest_path}: {e}"))),
        };
        let core = self.clone();
        let compiled =
            match tokio::task::spawn_blocking(move || core.compile("component", &wasm)).await {
                Ok(Ok(compiled)) => compiled,
                Ok(Err(e)) => return Ok(Err(format!("component {guest_path}: {e}"))),
                Err(e) => return Ok(Err(format!("component {guest_path}: {e}"))),
            };
        let sandbox = Sandbox {
            plugin_id: "component",
            grants: &Grants::default(),
            workspace,
            deadline,
            log,
        };
        let (mut store, stdout, stderr) = match self.store(sandbox, BTreeMap::new(), None) {
            Ok(parts) => parts,
            Err(message) => return Ok(Err(message)),
        };
        let result = compiled.pre.run(&mut store, &ctx).await;
        stdout.finish();
        stderr.finish();
        Ok(match result {
            Ok(Ok(outcome)) => Ok(wit::ComponentOutcome {
                summary: outcome.summary,
                output_variables: std::mem::take(&mut store.data_mut().variables)
                    .into_iter()
                    .collect(),
            }),
            Ok(Err(wit::ActionError::InvalidConfig(m))) => Err(format!(
                "component {guest_path}: invalid configuration: {m}"
            )),
            Ok(Err(wit::ActionError::Failed(m))) => {
                Err(format!("component {guest_path} failed: {m}"))
            }
            Err(Ended::Instantiate(e)) => Err(format!(
                "component {guest_path} could not be started: {}",
                e.root_cause()
            )),
            Err(Ended::Call(e)) => {
                if is_timeout(&e) || Instant::now() >= deadline {
                    // The whole action is out of time: end the outer plugin too.
                    return Err(DeadlineExceeded.into());
                }
                Err(crash_message(
                    &format!("component {guest_path}"),
                    &e,
                    &stderr.tail(),
                ))
            }
        })
    }
}

impl bindings::v0_1::sluice::plugin::host::Host for PluginState {
    fn log(
        &mut self,
        level: bindings::v0_1::sluice::plugin::types::LogLevel,
        message: String,
    ) -> wasmtime::Result<()> {
        bindings::v0_2::sluice::plugin::host::Host::log(self, legacy::level(level), message)
    }

    async fn exec(
        &mut self,
        request: bindings::v0_1::sluice::plugin::types::ExecRequest,
    ) -> wasmtime::Result<Result<bindings::v0_1::sluice::plugin::types::ExecResult, String>> {
        let policy = self.exec.clone();
        let result = exec::exec(policy, legacy::exec_request(request)).await?;
        Ok(result.map(legacy::exec_result))
    }

    fn set_output_variable(
        &mut self,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.set_variable(name, value))
    }
}

impl PluginState {
    fn set_variable(&mut self, name: String, value: String) -> Result<(), String> {
        if name.is_empty()
            || name.len() > MAX_VARIABLE_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "output variable name {name:?} is not valid: use 1 to {MAX_VARIABLE_NAME} \
                 characters of A-Z a-z 0-9 _ -"
            ));
        }
        if value.len() > MAX_VARIABLE_VALUE {
            return Err(format!(
                "output variable {name} is {} bytes; the limit is {MAX_VARIABLE_VALUE} bytes (100 KiB)",
                value.len()
            ));
        }
        let old = self
            .variables
            .get(&name)
            .map_or(0, |v| name.len() + v.len());
        let total = self.variables_size - old + name.len() + value.len();
        if total > MAX_VARIABLES_TOTAL {
            return Err(format!(
                "output variable {name} would bring the action's variables to {total} bytes; \
                 the limit for all of an action's variables is {MAX_VARIABLES_TOTAL} bytes"
            ));
        }
        self.variables_size = total;
        self.variables.insert(name, value);
        Ok(())
    }
}

/// The engine: epoch interruption, components, and the pooling allocator when the
/// machine lets us reserve its address space (else the on-demand allocator).
fn make_engine() -> Result<(Engine, bool), PluginError> {
    let base = || {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config
    };
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(64)
        .total_core_instances(128)
        .total_memories(64)
        .total_tables(128)
        .total_stacks(64)
        .max_memory_size(MEMORY_LIMIT);
    let mut pooled = base();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(engine) => Ok((engine, true)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "pooling allocator unavailable; using on-demand allocation");
            Engine::new(&base())
                .map(|engine| (engine, false))
                .map_err(|e| PluginError::Engine(format!("{e:#}")))
        }
    }
}

/// Advances the engine's epoch every [`TICK`] until the engine is dropped.
fn start_ticker(engine: &Engine) -> Result<(), PluginError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-wasm-epoch".to_string())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map(drop)
        .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker thread: {e}")))
}

/// Checks artifact names, creates `tmp/` and empty output directories, and checks the
/// inputs are there. Returns the canonical workspace path.
fn prepare_workspace(request: &RunRequest) -> Result<PathBuf, String> {
    let ws = request.workspace.canonicalize().map_err(|e| {
        format!(
            "the action workspace {} cannot be used: {e}",
            request.workspace.display()
        )
    })?;
    if !ws.is_dir() {
        return Err(format!(
            "the action workspace {} is not a directory",
            ws.display()
        ));
    }
    for (kind, names) in [("input", &request.inputs), ("output", &request.outputs)] {
        for (i, name) in names.iter().enumerate() {
            let valid = !name.is_empty()
                && name.len() <= 100
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "{kind} artifact name {name:?} is not valid: use 1 to 100 characters of A-Z a-z 0-9 _ -"
                ));
            }
            if names[..i].contains(name) {
                return Err(format!("{kind} artifact {name} is listed twice"));
            }
        }
    }
    let io = |what: &Path, e: std::io::Error| format!("cannot prepare {}: {e}", what.display());
    let tmp = ws.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    for name in &request.inputs {
        let dir = ws.join("inputs").join(name);
        if !dir.is_dir() {
            return Err(format!(
                "input artifact {name} is missing: expected a directory at {}",
                dir.display()
            ));
        }
    }
    for name in &request.outputs {
        let dir = ws.join("outputs").join(name);
        // Left over from an earlier attempt in the same workspace: start empty.
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?,
            Ok(_) => std::fs::remove_file(&dir).map_err(|e| io(&dir, e))?,
            Err(_) => {}
        }
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    Ok(ws)
}

fn artifacts(kind: &str, names: &[String]) -> Vec<wit::Artifact> {
    names
        .iter()
        .map(|name| wit::Artifact {
            name: name.clone(),
            path: format!("{GUEST_WORKSPACE}/{kind}/{name}"),
        })
        .collect()
}

fn is_timeout(e: &wasmtime::Error) -> bool {
    e.chain().any(|c| c.is::<DeadlineExceeded>())
        || e.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
}

/// "plugin X crashed: <reason>", with the end of the guest's stderr (where a Rust
/// panic message lands).
fn crash_message(plugin: &str, e: &wasmtime::Error, stderr_tail: &str) -> String {
    let mut message = if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        format!(
            "plugin {plugin} exited with status {} instead of returning a result",
            exit.0
        )
    } else if let Some(trap) = e.downcast_ref::<Trap>() {
        format!("plugin {plugin} crashed: {trap}")
    } else {
        let cause = e.root_cause().to_string();
        let hint = if cause.contains("growing memory") {
            format!(" (the memory limit is {} MiB)", MEMORY_LIMIT >> 20)
        } else {
            String::new()
        };
        format!("plugin {plugin} crashed: {cause}{hint}")
    };
    let tail: Vec<&str> = stderr_tail
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !tail.is_empty() {
        let start = tail.len().saturating_sub(10);
        message.push_str("; its stderr ended with:\n");
        message.push_str(&tail[start..].join("\n"));
    }
    message
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Go-style durations: "500ms", "1s", "1.5s", "5m0s", "1h0m0s".
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    let millis = d.subsec_millis();
    let secs = if millis == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{millis:03}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<PluginHost>();
        shared::<LoadedPlugin>();
        shared::<RunOutcome>();
    }

    /// A released WIT version is frozen: plugins built against it must keep working, so
    /// its file may never change. A new interface is a new version folder.
    #[test]
    fn the_released_wit_0_1_0_is_unchanged() {
        use sha2::Digest as _;
        let wit = include_str!("../../plugin-sdk/wit/0.1.0/plugin.wit");
        assert_eq!(
            hex::encode(sha2::Sha256::digest(wit.as_bytes())),
            "802dfe4b45df4c5d388814ae37d71c29908a163eb223ec5f8ebc437faf3e2ccb",
            "plugin-sdk/wit/0.1.0 was edited; released versions are frozen"
        );
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h2m3s");
    }
}
