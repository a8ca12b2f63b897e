//! The wasmtime host for action plugins.
//!
//! One [`PluginHost`] per agent holds one engine (epoch interruption on, pooling
//! allocator when the machine allows it), a ticker thread that advances the epoch every
//! 10 ms, and the loaded plugins: each compiled once (or loaded from the on-disk cache)
//! and pre-linked once. Every action attempt gets a fresh store and instance:
//!
//! - the only directory the plugin sees is the action workspace, as `/workspace`;
//! - no environment, no arguments, no network (denied in the WASI context, and a
//!   component that imports `wasi:sockets` is refused at load);
//! - 256 MiB of memory; CPU bounded by the action timeout (epoch deadline), host calls
//!   bounded by the same deadline;
//! - programs run only if the manifest lists them ([`exec`]);
//! - a trap, a panic or a timeout fails the action, never the agent.

mod cache;
mod exec;
mod manifest;
mod output;

pub use cache::LoadSource;
pub use manifest::{CATEGORIES, ConfigField, Manifest, SUPPORTED_API_VERSIONS};

use exec::{DeadlineExceeded, ExecPolicy, GUEST_WORKSPACE};
use futures_util::FutureExt as _;
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
    wasmtime::component::bindgen!({
        world: "action-plugin",
        path: "../plugin-sdk/wit",
        imports: {
            "sluice:plugin/host.exec": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

use bindings::sluice::plugin::types::{Artifact, ExecRequest, ExecResult, LogLevel};
use bindings::{ActionContext, ActionError, ActionPlugin, ActionPluginPre};

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
        "plugin {plugin} imports {import}, but plugins get no network access; \
         the plugin is refused (rebuild it without std::net or any socket use)"
    )]
    NetworkImport { plugin: String, import: String },
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

/// One action attempt for a plugin to run.
#[derive(Debug, Clone)]
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
}

/// How an action attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded {
        summary: String,
        output_variables: BTreeMap<String, String>,
    },
    Failed {
        message: String,
    },
}

/// A plugin compiled and linked, ready to run actions.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    digest: String,
    source: LoadSource,
    load_time: Duration,
    pre: ActionPluginPre<PluginState>,
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

    /// The same compiled plugin under another manifest, e.g. with the operator's grants
    /// applied (fewer programs than the plugin asked for).
    pub fn with_manifest(&self, manifest: Manifest) -> LoadedPlugin {
        LoadedPlugin {
            manifest,
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
            .field("digest", &self.digest)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The plugin runtime of an agent. Cloning is cheap and shares the engine.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    cache_dir: PathBuf,
    engine_key: String,
    pooling: bool,
    plugins: Vec<Arc<LoadedPlugin>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("cache_dir", &self.cache_dir)
            .field("pooling", &self.pooling)
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

        let mut linker = Linker::<PluginState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        ActionPlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        Ok(PluginHost {
            engine_key: cache::engine_key(&engine),
            engine,
            linker: Arc::new(linker),
            cache_dir: cache_dir.to_path_buf(),
            pooling,
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

    /// Loads one plugin from its manifest text and WASM component; `origin` names it in
    /// errors. A plugin with the same id replaces the loaded one.
    pub fn load(
        &mut self,
        origin: &str,
        manifest: &str,
        wasm: &[u8],
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let manifest = Manifest::parse(origin, manifest)?;
        let id = manifest.id.clone();
        for other in self.plugins.iter().filter(|p| p.manifest.id != id) {
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

        let started = Instant::now();
        let (component, source, digest) =
            cache::load(&self.engine, &self.cache_dir, &self.engine_key, &id, wasm)?;
        let load_time = started.elapsed();

        let component_type = component.component_type();
        for (import, _) in component_type.imports(&self.engine) {
            if import.starts_with("wasi:sockets/") {
                return Err(PluginError::NetworkImport {
                    plugin: id,
                    import: import.to_string(),
                });
            }
        }
        let link = |e: wasmtime::Error| PluginError::Link {
            plugin: id.clone(),
            message: format!("{e:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let pre = ActionPluginPre::new(instance_pre).map_err(link)?;

        tracing::info!(
            plugin = %id, version = %manifest.version, ?source, ?load_time,
            digest = %digest, "loaded plugin"
        );
        let plugin = Arc::new(LoadedPlugin {
            manifest,
            digest,
            source,
            load_time,
            pre,
        });
        self.plugins.retain(|p| p.manifest.id != id);
        self.plugins.push(plugin.clone());
        Ok(plugin)
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// Whether the engine uses the pooling instance allocator (else on-demand).
    pub fn uses_pooling_allocator(&self) -> bool {
        self.pooling
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
            Err(panic) => RunOutcome::Failed {
                message: format!(
                    "plugin {id}: the agent's plugin host panicked: {}",
                    panic_message(panic.as_ref())
                ),
            },
        };
        match &outcome {
            RunOutcome::Succeeded { .. } => {
                tracing::info!(plugin = %id, %action, elapsed = ?started.elapsed(), "action succeeded")
            }
            RunOutcome::Failed { message } => {
                tracing::info!(plugin = %id, %action, elapsed = ?started.elapsed(), %message, "action failed")
            }
        }
        outcome
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
        let failed = |message: String| RunOutcome::Failed { message };

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
        let config = match manifest.resolve_config(&request.config) {
            Ok(c) => c,
            Err(message) => return failed(format!("invalid configuration: {message}")),
        };

        let stdout = GuestOutput::new(log.clone());
        let stderr = GuestOutput::new(log.clone());
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Err(e) = wasi.preopened_dir(&workspace, GUEST_WORKSPACE, FsPerms::ReadWrite) {
            return failed(format!(
                "cannot open the workspace {} for the plugin: {e:#}",
                workspace.display()
            ));
        }
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
                plugin_id: manifest.id.as_str().into(),
                programs: manifest.programs.clone().into(),
                workspace,
                log: log.clone(),
                deadline,
            },
            variables: BTreeMap::new(),
            variables_size: 0,
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

        let ctx = ActionContext {
            pipeline: request.pipeline,
            execution_id: request.execution_id,
            stage: request.stage,
            action: request.action,
            category: request.category,
            config: config.into_iter().collect(),
            inputs: artifacts("inputs", &request.inputs),
            outputs: artifacts("outputs", &request.outputs),
            workspace: GUEST_WORKSPACE.to_string(),
        };

        enum Ended {
            Instantiate(wasmtime::Error),
            Call(wasmtime::Error),
        }
        let pre = &plugin.pre;
        let call = async {
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(Ended::Instantiate)?;
            instance
                .call_run(&mut store, &ctx)
                .await
                .map_err(Ended::Call)
        };
        let hard_stop = tokio::time::Instant::from_std(deadline + GRACE);
        let result = tokio::time::timeout_at(hard_stop, call).await;
        stdout.finish();
        stderr.finish();

        let timed_out = || failed(format!("timed out after {}", format_duration(timeout)));
        match result {
            Err(_elapsed) => timed_out(),
            Ok(Ok(Ok(outcome))) => RunOutcome::Succeeded {
                summary: outcome.summary,
                output_variables: std::mem::take(&mut store.data_mut().variables),
            },
            Ok(Ok(Err(ActionError::InvalidConfig(message)))) => {
                failed(format!("invalid configuration: {message}"))
            }
            Ok(Ok(Err(ActionError::Failed(message)))) => failed(message),
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

/// What a store holds for one action attempt.
struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    exec: ExecPolicy,
    variables: BTreeMap<String, String>,
    /// Bytes of all variables' names and values.
    variables_size: usize,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::sluice::plugin::types::Host for PluginState {}

impl bindings::sluice::plugin::host::Host for PluginState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let prefix = match level {
            LogLevel::Debug | LogLevel::Info => "",
            LogLevel::Warn => "WARN: ",
            LogLevel::Error => "ERROR: ",
        };
        send_line(
            &self.exec.log,
            prefix,
            message.trim_end_matches('\n').as_bytes(),
        );
        Ok(())
    }

    async fn exec(&mut self, request: ExecRequest) -> wasmtime::Result<Result<ExecResult, String>> {
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

fn artifacts(kind: &str, names: &[String]) -> Vec<Artifact> {
    names
        .iter()
        .map(|name| Artifact {
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

    #[test]
    fn durations_read_like_go() {
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h2m3s");
    }
}
