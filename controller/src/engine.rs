//! The engine: moves executions through their stages and actions, and hands action
//! attempts to agents.
//!
//! All state transitions go through [`Engine`], under one lock, and are written to
//! SQLite before anything is sent to an agent; SQLite is the truth and the in-memory
//! state (connected agents, the queue) can always be rebuilt from it, which is what
//! [`Engine::recover`] does after a restart.
//!
//! The rules are CodePipeline's: stages run in order; inside a stage, actions run by
//! ascending `runOrder` and equal runOrders run in parallel; a failed action fails its
//! stage once its in-flight siblings finish, and a failed stage fails the execution.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use sluice_pipeline::conditions::Kind;
use sluice_pipeline::{Action, Catalog, ConditionResult, ExecutionMode, Pipeline};
use sluice_proto::{AttemptRef, ControllerMessage, Job, Outcome};
use tokio::sync::{broadcast, mpsc};

use crate::blobs::BlobStore;
use crate::logs::LogFiles;
use crate::plugins::{InstallError, InstalledPlugin, Registry};
use crate::secrets::{SecretBox, SecretError};
use crate::store::{self, AgentRow, AttemptRow, NewAttempt, Store, StoreError, now_ms, phase};

mod stage_outcomes;
use stage_outcomes::ConditionOutcome;

/// Timing knobs of the engine.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often agents must send a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long an attempt survives without a heartbeat before it fails as lost.
    pub lease_ttl: Duration,
    /// How long an agent has to accept an offer before it goes back to the queue.
    pub offer_timeout: Duration,
    /// Default action timeout when the definition sets none.
    pub default_action_timeout: Duration,
    /// Shortest source polling interval; a pipeline's shorter `polling` interval is
    /// raised to it.
    pub min_poll_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            heartbeat_interval: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(90),
            offer_timeout: Duration::from_secs(10),
            default_action_timeout: Duration::from_secs(60 * 60),
            min_poll_interval: Duration::from_secs(30),
        }
    }
}

/// Something observers (log followers, `--wait`) may want to know about.
#[derive(Debug, Clone)]
pub enum Event {
    /// An execution's status, or one of its stages or actions, changed.
    Execution(String),
    /// More log arrived for an attempt.
    Log(i64),
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored definition could not be read back.
    #[error("stored definition of pipeline \"{name}\" version {version} is unreadable: {message}")]
    Definition {
        /// Pipeline.
        name: String,
        /// Version.
        version: i64,
        /// Why.
        message: String,
    },
    /// Writing a log failed.
    #[error("log storage failed: {0}")]
    Log(#[from] std::io::Error),
    /// A secret could not be sealed or opened.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A request was not valid; the message says what to change.
    #[error("{0}")]
    Invalid(String),
}

/// What a start request may set beside the pipeline (CodePipeline's
/// `StartPipelineExecution`).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Pipeline variable overrides, by name (names must be declared by the pipeline).
    pub variables: BTreeMap<String, String>,
    /// Commit ids to take instead of the branch heads, by source action name.
    pub source_revisions: BTreeMap<String, String>,
    /// Idempotency: a second start with the same token returns the first execution.
    pub client_request_token: Option<String>,
}

/// The providers a COMMIT_ID revision override applies to, and the configuration key
/// it sets.
const COMMIT_ID_KEYS: &[(&str, &str)] = &[("git", "CommitId")];

/// Checks a start request against the definition: the resolved pipeline variables
/// (defaults, then overrides) and the source revision overrides. Every problem is
/// reported at once.
fn start_inputs(
    def: &Pipeline,
    options: &StartOptions,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let mut problems = Vec::new();
    if options.variables.len() > 50 {
        problems.push(format!(
            "variables: at most 50 overrides, {} given",
            options.variables.len()
        ));
    }
    let mut variables: BTreeMap<String, String> = def
        .variables
        .iter()
        .filter_map(|v| v.default_value.clone().map(|d| (v.name.clone(), d)))
        .collect();
    for (name, value) in &options.variables {
        if !def.variables.iter().any(|v| &v.name == name) {
            let declared: Vec<&str> = def.variables.iter().map(|v| v.name.as_str()).collect();
            problems.push(format!(
                "variables.{name}: pipeline {} declares no variable {name} (declared: {})",
                def.name,
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ));
        } else if value.is_empty() || value.chars().count() > 1000 {
            problems.push(format!(
                "variables.{name}: the value must be 1 to 1000 characters"
            ));
        } else {
            variables.insert(name.clone(), value.clone());
        }
    }
    let sources = def
        .stages
        .first()
        .map(|s| s.actions.as_slice())
        .unwrap_or(&[]);
    for (action, revision) in &options.source_revisions {
        let Some(found) = sources.iter().find(|a| &a.name == action) else {
            let names: Vec<&str> = sources.iter().map(|a| a.name.as_str()).collect();
            problems.push(format!(
                "sourceRevisions.{action}: no source action {action} in pipeline {} (its source actions: {})",
                def.name,
                names.join(", ")
            ));
            continue;
        };
        let provider = &found.action_type_id.provider;
        if !COMMIT_ID_KEYS.iter().any(|(p, _)| p == provider) {
            problems.push(format!(
                "sourceRevisions.{action}: provider {provider} takes no COMMIT_ID revision (git does)"
            ));
        } else if revision.is_empty()
            || revision.len() > 64
            || !revision.chars().all(|c| c.is_ascii_hexdigit())
        {
            problems.push(format!(
                "sourceRevisions.{action}: {revision:?} is not a commit id (4 to 64 hex digits)"
            ));
        }
    }
    if problems.is_empty() {
        Ok((variables, options.source_revisions.clone()))
    } else {
        Err(EngineError::Invalid(problems.join("; ")))
    }
}

type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A connected agent session.
struct Session {
    session_id: u64,
    tx: mpsc::UnboundedSender<ControllerMessage>,
    labels: BTreeMap<String, String>,
    capacity: usize,
    /// Attempts offered to or running on this agent.
    held: HashSet<i64>,
    /// Drained: it finishes what it holds and is offered nothing new.
    drained: bool,
}

/// An attempt waiting for an agent.
struct Queued {
    job: Job,
    selector: BTreeMap<String, String>,
    waiting_reason: Option<String>,
}

/// An attempt an agent holds.
struct Held {
    agent_id: String,
    token: String,
    execution_id: String,
    offered_at_ms: Option<i64>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    next_session_id: u64,
    queue: BTreeMap<i64, Queued>,
    held: HashMap<i64, Held>,
    definitions: HashMap<(String, i64), Arc<Pipeline>>,
    /// Registered agents (id → labels), to tell "no agent could ever run this".
    registered: BTreeMap<String, BTreeMap<String, String>>,
}

/// The engine. Cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<Store>,
    blobs: BlobStore,
    logs: LogFiles,
    settings: Settings,
    registry: RwLock<Arc<Registry>>,
    secrets: SecretBox,
    /// For approval notifications.
    http: reqwest::Client,
    public_url: RwLock<String>,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Source checks sent to agents, waiting for their results.
    checks: crate::polling::PendingChecks,
}

/// What the session should do after a report.
pub enum Reply {
    /// Send this message back.
    Send(ControllerMessage),
    /// Nothing to send.
    Nothing,
}

impl Engine {
    /// A new engine over a store.
    pub fn new(
        store: Arc<Store>,
        blobs: BlobStore,
        logs: LogFiles,
        settings: Settings,
        secrets: SecretBox,
    ) -> Engine {
        let (events, _) = broadcast::channel(4096);
        Engine {
            store,
            blobs,
            logs,
            settings,
            registry: RwLock::new(Arc::new(Registry::default())),
            secrets,
            http: notification_client(),
            public_url: RwLock::new(String::new()),
            state: Mutex::new(State::default()),
            events,
            checks: crate::polling::PendingChecks::default(),
        }
    }

    /// The engine's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The provider catalog used to validate definitions: the installed plugins.
    pub fn catalog(&self) -> Catalog {
        self.registry().catalog().clone()
    }

    /// The installed plugins, as of now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the installed plugins after a change.
    pub fn reload_plugins(&self) -> Result<()> {
        let fresh = Arc::new(Registry::load(&self.store)?);
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    // ---- plugins and secrets ----------------------------------------------------

    /// Registers (or refreshes) a plugin built into Sluice: its component goes into the
    /// artifact store and it is granted what its manifest asks for by name.
    pub fn register_builtin(&self, manifest: &str, wasm: &[u8]) -> Result<(), InstallError> {
        let parsed = sluice_pipeline::Manifest::parse("built-in plugin", manifest)?;
        let sha256 = self.blobs.put_bytes(wasm)?;
        // What it asks for by name, plus what an operator granted it before (hosts for
        // a webhook, say) as long as the manifest still asks for that.
        let mut granted = parsed.required_grants();
        if let Some(old) = self
            .store
            .list_plugins()?
            .into_iter()
            .find(|p| p.id == parsed.id && p.version == parsed.version)
        {
            for g in crate::plugins::grant_list(&old.grants) {
                if parsed.asks_for(&g) && !granted.contains(&g) {
                    granted.push(g);
                }
            }
        }
        let grants = crate::plugins::grants_from(&granted);
        self.store.put_plugin(
            &store::PluginRow {
                id: parsed.id,
                version: parsed.version,
                sha256,
                size: wasm.len() as i64,
                manifest: manifest.to_string(),
                grants,
                builtin: true,
                installed_at_ms: now_ms(),
            },
            true,
        )?;
        Ok(())
    }

    /// Installs a plugin: the manifest must be valid, the component one Sluice runs, the
    /// grants exactly within what it asks for and covering everything it asks for by
    /// name, and no other plugin may serve the same action type.
    pub fn install_plugin(
        &self,
        manifest: &str,
        wasm: &[u8],
        grants: &[sluice_pipeline::manifest::Grant],
    ) -> Result<InstalledPlugin, InstallError> {
        let parsed = sluice_pipeline::Manifest::parse("the uploaded plugin.toml", manifest)?;
        let api = crate::plugins::inspect_component(&parsed.id, wasm)?;
        if api != parsed.api_version {
            return Err(InstallError::Component {
                plugin: parsed.id.clone(),
                message: format!(
                    "its component is built for sluice:plugin@{api}, but plugin.toml says \
                     api_version {:?}; make them agree",
                    parsed.api_version
                ),
            });
        }
        parsed
            .check_grants(grants)
            .map_err(|problems| InstallError::Grants {
                plugin: parsed.id.clone(),
                problems,
            })?;
        crate::plugins::check_conflicts(&self.registry(), &parsed)?;
        let sha256 = self.blobs.put_bytes(wasm)?;
        let row = store::PluginRow {
            id: parsed.id.clone(),
            version: parsed.version.clone(),
            sha256,
            size: wasm.len() as i64,
            manifest: manifest.to_string(),
            grants: crate::plugins::grants_from(grants),
            builtin: false,
            installed_at_ms: now_ms(),
        };
        self.store.put_plugin(&row, false)?;
        self.reload_plugins()
            .map_err(|e| InstallError::Conflict(e.to_string()))?;
        tracing::info!(plugin = %row.id, version = %row.version, sha256 = %row.sha256, "Plugin installed.");
        Ok(InstalledPlugin {
            row,
            manifest: parsed,
        })
    }

    /// Replaces what a plugin is granted. Refused if the grants do not fit the manifest
    /// or if a pipeline would no longer validate (e.g. it names a secret taken away).
    pub fn set_plugin_grants(
        &self,
        id: &str,
        version: &str,
        grants: &[sluice_pipeline::manifest::Grant],
    ) -> Result<InstalledPlugin, InstallError> {
        let registry = self.registry();
        let Some(plugin) = registry.get(id, version) else {
            return Err(StoreError::NotFound(format!(
                "plugin {id} version {version} is not installed; see `sluice plugin list`"
            ))
            .into());
        };
        plugin
            .manifest
            .check_grants(grants)
            .map_err(|problems| InstallError::Grants {
                plugin: id.to_string(),
                problems,
            })?;
        let mut changed = plugin.clone();
        changed.row.grants = crate::plugins::grants_from(grants);
        let after: Vec<InstalledPlugin> = registry
            .plugins()
            .iter()
            .map(|p| {
                if p.row.id == id && p.row.version == version {
                    changed.clone()
                } else {
                    p.clone()
                }
            })
            .collect();
        self.refuse_if_pipelines_break(&after, &format!("changing the grants of plugin {id}"))?;
        self.store
            .set_plugin_grants(id, version, &changed.row.grants)?;
        self.reload_plugins()
            .map_err(|e| InstallError::Conflict(e.to_string()))?;
        Ok(changed)
    }

    /// Removes an installed plugin version; refused while a pipeline uses it.
    pub fn remove_plugin(&self, id: &str, version: &str) -> Result<(), InstallError> {
        let registry = self.registry();
        let after: Vec<InstalledPlugin> = registry
            .plugins()
            .iter()
            .filter(|p| !(p.row.id == id && p.row.version == version))
            .cloned()
            .collect();
        if after.len() < registry.plugins().len() {
            self.refuse_if_pipelines_break(
                &after,
                &format!("removing plugin {id} version {version}"),
            )?;
        }
        self.store.remove_plugin(id, version)?;
        self.reload_plugins()
            .map_err(|e| InstallError::Conflict(e.to_string()))?;
        tracing::info!(plugin = %id, version = %version, "Plugin removed.");
        Ok(())
    }

    /// Validates every pipeline's current definition against the catalog `plugins`
    /// would give, and refuses the change if any would become invalid.
    fn refuse_if_pipelines_break(
        &self,
        plugins: &[InstalledPlugin],
        what: &str,
    ) -> Result<(), InstallError> {
        let catalog = Catalog::new(
            plugins
                .iter()
                .flat_map(|p| {
                    sluice_pipeline::ProviderEntry::from_manifest(
                        &p.manifest,
                        p.row.grants.secrets.clone(),
                    )
                })
                .chain(std::iter::once(sluice_pipeline::approval_entry()))
                .collect(),
        );
        let mut broken = Vec::new();
        for (name, definition) in self.store.current_definitions()? {
            if let Err(problems) = sluice_pipeline::parse_and_validate(
                &definition,
                Some(sluice_pipeline::Format::Json),
                &catalog,
            ) {
                let first = problems
                    .0
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                broken.push(format!("{name} ({first})"));
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Conflict(format!(
                "{what} would break pipeline(s) {}; update them first",
                broken.join(", ")
            )))
        }
    }

    /// Sets a secret (encrypted at rest). The value is never returned by the API.
    pub fn set_secret(&self, name: &str, value: &str) -> Result<()> {
        let (nonce, ciphertext) = self.secrets.seal(name, value)?;
        self.store.put_secret(name, &nonce, &ciphertext)?;
        tracing::info!(secret = %name, "Secret set.");
        Ok(())
    }

    /// A secret's value, decrypted (for verifying incoming webhooks); `None` if not set.
    pub fn secret_value(&self, name: &str) -> Result<Option<String>> {
        let Some(row) = self.store.secret(name)? else {
            return Ok(None);
        };
        let value = self.secrets.open(name, &row.nonce, &row.ciphertext)?;
        Ok(Some(value))
    }

    /// The secrets a job's plugin gets: every secret granted to it by name, and every
    /// secret its configuration names (which must be granted). A named secret that is
    /// not set, or not granted, is an error naming it.
    pub(crate) fn job_secrets(
        &self,
        plugin: &InstalledPlugin,
        configuration: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let grants = &plugin.row.grants.secrets;
        let granted = |name: &str| grants.iter().any(|g| g == "*" || g == name);
        let mut out = BTreeMap::new();
        let named = plugin.manifest.secret_references(configuration);
        for name in &named {
            if !granted(name) {
                return Err(format!(
                    "plugin {} is not granted secret:{name}; an operator grants it with \
                     `sluice plugin grant {} secret:{name}`",
                    plugin.row.id, plugin.row.id
                ));
            }
        }
        let wanted = named.iter().map(|n| (*n, true)).chain(
            grants
                .iter()
                .filter(|g| *g != "*")
                .map(|g| (g.as_str(), false)),
        );
        for (name, required) in wanted {
            if out.contains_key(name) {
                continue;
            }
            match self.store.secret(name).map_err(|e| e.to_string())? {
                Some(row) => {
                    let value = self
                        .secrets
                        .open(&row.name, &row.nonce, &row.ciphertext)
                        .map_err(|e| e.to_string())?;
                    out.insert(name.to_string(), value);
                }
                None if required => {
                    return Err(format!(
                        "secret {name} is not set; set it with `sluice secret set {name}`"
                    ));
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Sends `message` to a connected agent whose labels match `selector` (the least
    /// busy one); its id, or `None` if no such agent is connected.
    pub(crate) fn send_to_agent(
        &self,
        selector: &BTreeMap<String, String>,
        message: ControllerMessage,
    ) -> Option<String> {
        let st = self.lock();
        let (id, session) = st
            .sessions
            .iter()
            .filter(|(_, s)| labels_match(selector, &s.labels))
            .min_by_key(|(id, s)| (s.held.len(), (*id).clone()))?;
        session.tx.send(message).ok()?;
        Some(id.clone())
    }

    /// The source checks waiting for agents' answers.
    pub(crate) fn pending_checks(&self) -> &crate::polling::PendingChecks {
        &self.checks
    }

    /// An agent answered a source check.
    pub fn check_result(
        &self,
        check_id: &str,
        result: Result<Vec<sluice_proto::SourceRevision>, String>,
    ) {
        self.checks.complete(check_id, result);
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The artifact store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The log files.
    pub fn logs(&self) -> &LogFiles {
        &self.logs
    }

    /// Subscribes to engine events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, event: Event) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Rebuilds the in-memory state after a start: held attempts get a fresh lease
    /// (their agents may reconnect and resume), queued attempts go back in the queue,
    /// and every execution in progress is re-evaluated.
    pub fn recover(&self) -> Result<()> {
        let mut st = self.lock();
        self.store.mark_agents_offline()?;
        for agent in self.store.list_agents()? {
            if agent.state != "revoked" {
                st.registered.insert(agent.id, agent.labels);
            }
        }
        self.store
            .renew_all_leases(now_ms() + self.settings.lease_ttl.as_millis() as i64)?;
        for attempt in self.store.open_attempts()? {
            if attempt.phase == phase::QUEUED {
                let _ = self.enqueue_existing(&mut st, &attempt)?;
            } else if let Some(agent_id) = attempt.agent_id.clone() {
                st.held.insert(
                    attempt.id,
                    Held {
                        agent_id,
                        token: attempt.fencing_token.clone(),
                        execution_id: attempt.execution_id.clone(),
                        // An offer the agent may never have received goes back to the
                        // queue after the offer timeout unless the agent claims it.
                        offered_at_ms: (attempt.phase == phase::OFFERED).then(now_ms),
                    },
                );
            }
        }
        for id in self.store.executions_in_progress()? {
            self.advance(&mut st, &id)?;
        }
        self.dispatch(&mut st)?;
        Ok(())
    }

    // ---- executions ------------------------------------------------------------

    /// Starts an execution of the current version of a pipeline.
    pub fn start_execution(
        &self,
        pipeline: &str,
        trigger_type: &str,
        trigger_detail: &str,
    ) -> Result<store::ExecutionRow> {
        self.start_execution_with(
            pipeline,
            trigger_type,
            trigger_detail,
            &StartOptions::default(),
        )
        .map(|(execution, _)| execution)
    }

    /// Starts an execution with pipeline variable overrides, source revision overrides
    /// and an idempotency token. Returns the execution and whether it is new: a token
    /// seen before for this pipeline returns the execution it started.
    pub fn start_execution_with(
        &self,
        pipeline: &str,
        trigger_type: &str,
        trigger_detail: &str,
        options: &StartOptions,
    ) -> Result<(store::ExecutionRow, bool)> {
        if let Some(token) = &options.client_request_token {
            if token.is_empty()
                || token.len() > 128
                || !token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(EngineError::Invalid(format!(
                    "clientRequestToken {token:?} must be 1 to 128 characters of A-Z a-z 0-9 -"
                )));
            }
            if let Some(existing) = self.store.execution_by_token(pipeline, token)? {
                return Ok((existing, false));
            }
        }
        let version = self.store.pipeline_version(pipeline, None)?;
        let id = uuid::Uuid::new_v4().to_string();
        let mut st = self.lock();
        let def = self.definition(&mut st, pipeline, version.version)?;
        let (variables, source_revisions) = start_inputs(&def, options)?;
        self.store.insert_execution(
            &id,
            pipeline,
            version.version,
            &store::NewExecution {
                trigger_type,
                trigger_detail,
                variables,
                source_revisions,
                client_request_token: options.client_request_token.as_deref(),
                rollback: None,
            },
        )?;
        tracing::info!(execution = %id, pipeline, "Execution started.");
        self.advance(&mut st, &id)?;
        self.dispatch(&mut st)?;
        drop(st);
        self.emit(Event::Execution(id.clone()));
        Ok((self.store.execution(&id)?, true))
    }

    fn definition(&self, st: &mut State, name: &str, version: i64) -> Result<Arc<Pipeline>> {
        if let Some(def) = st.definitions.get(&(name.to_string(), version)) {
            return Ok(def.clone());
        }
        let stored = self.store.pipeline_version(name, Some(version))?;
        let parsed =
            sluice_pipeline::parse(&stored.definition, Some(sluice_pipeline::Format::Json))
                .map_err(|d| EngineError::Definition {
                    name: name.to_string(),
                    version,
                    message: d.to_string(),
                })?;
        let def = Arc::new(parsed.pipeline);
        st.definitions
            .insert((name.to_string(), version), def.clone());
        Ok(def)
    }

    /// Re-evaluates an execution and starts whatever may start. Idempotent.
    fn advance(&self, st: &mut State, execution_id: &str) -> Result<()> {
        self.advance_one(st, execution_id)?;
        // Whatever this execution did may have freed a stage (or it may have been the
        // one waiting): let the pipeline's waiting executions try again, oldest first.
        let pipeline = self.store.execution(execution_id)?.pipeline_name;
        for waiting in self.store.waiting_executions(&pipeline, None)? {
            if waiting.id != execution_id {
                self.advance_one(st, &waiting.id)?;
            }
        }
        Ok(())
    }

    fn advance_one(&self, st: &mut State, execution_id: &str) -> Result<()> {
        // Each pass either waits, finishes something, or queues attempts; an attempt
        // that fails before it can be queued (bad variable) needs one more pass.
        for _ in 0..64 {
            if !self.advance_once(st, execution_id)? {
                break;
            }
        }
        Ok(())
    }

    /// Why an execution may not enter stage `index` now: the inbound transition is
    /// disabled, or (SUPERSEDED, QUEUED) another execution is in the stage, or (QUEUED)
    /// an older execution waits for it first.
    fn entry_block(
        &self,
        execution: &store::ExecutionRow,
        def: &Pipeline,
        index: usize,
    ) -> Result<Option<String>> {
        let stage = &def.stages[index];
        // A rollback does not come through the inbound transition, and goes ahead of
        // the queue: it waits only for the stage itself.
        let rollback = execution.rollback_stage.is_some();
        if index > 0
            && !rollback
            && let Some(t) = self
                .store
                .transitions(&execution.pipeline_name)?
                .into_iter()
                .find(|t| t.stage_name == stage.name && !t.enabled)
        {
            return Ok(Some(format!(
                "waiting: the transition into stage {} is disabled{} (by {})",
                stage.name,
                t.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
                t.changed_by
            )));
        }
        if def.execution_mode == ExecutionMode::Parallel {
            return Ok(None);
        }
        if let Some(occupant) =
            self.store
                .stage_occupant(&execution.pipeline_name, &stage.name, &execution.id)?
        {
            return Ok(Some(format!(
                "waiting: stage {} is in use by execution {occupant}",
                stage.name
            )));
        }
        if def.execution_mode == ExecutionMode::Queued
            && !rollback
            && let Some(ahead) = self
                .store
                .waiting_executions(&execution.pipeline_name, Some(&stage.name))?
                .into_iter()
                .find(|w| w.seq < execution.seq)
        {
            return Ok(Some(format!(
                "waiting: execution {} is ahead in the queue for stage {}",
                ahead.id, stage.name
            )));
        }
        Ok(None)
    }

    /// Makes `execution` wait in front of `stage`. In SUPERSEDED mode only the newest
    /// execution waits in front of a stage: the others waiting there are superseded.
    fn wait_in_front(
        &self,
        execution: &store::ExecutionRow,
        def: &Pipeline,
        stage: &str,
        reason: &str,
    ) -> Result<()> {
        if execution.waiting_for_stage.as_deref() != Some(stage)
            || execution.status_summary.as_deref() != Some(reason)
        {
            self.store
                .set_waiting(&execution.id, Some(stage), Some(reason))?;
            self.emit(Event::Execution(execution.id.clone()));
        }
        if def.execution_mode != ExecutionMode::Superseded {
            return Ok(());
        }
        let waiting = self
            .store
            .waiting_executions(&execution.pipeline_name, Some(stage))?;
        let Some(newest) = waiting.iter().map(|w| w.seq).max() else {
            return Ok(());
        };
        let newest_id = waiting
            .iter()
            .find(|w| w.seq == newest)
            .map(|w| w.id.clone())
            .unwrap_or_default();
        for older in waiting.iter().filter(|w| w.seq < newest) {
            let summary = format!(
                "Superseded by execution {newest_id} while waiting in front of stage {stage}"
            );
            self.finish_execution(&older.id, "Superseded", Some(&summary))?;
        }
        Ok(())
    }

    /// One evaluation pass; returns true if another pass is needed.
    fn advance_once(&self, st: &mut State, execution_id: &str) -> Result<bool> {
        let execution = self.store.execution(execution_id)?;
        if execution.status == "Stopping" {
            self.finish_stopping(&execution)?;
            return Ok(false);
        }
        if execution.status != "InProgress" {
            return Ok(false);
        }
        let def = self.definition(st, &execution.pipeline_name, execution.pipeline_version)?;
        let stages = self.store.stages(execution_id)?;
        let attempts = self.store.attempts(execution_id)?;
        // A ROLLBACK runs its one stage, with no conditions.
        let rollback = execution.rollback_stage.is_some();

        for (index, stage) in def.stages.iter().enumerate() {
            let index = index as i64;
            if execution.rollback_stage.is_some_and(|r| r != index) {
                continue;
            }
            let mut row = stages.iter().find(|s| s.stage_index == index).cloned();
            match row.as_ref().map(|s| s.status.as_str()) {
                Some("Succeeded" | "Skipped") => continue,
                Some("InProgress") => {}
                Some(_) => {
                    self.finish_execution(execution_id, "Failed", None)?;
                    return Ok(false);
                }
                None => {
                    // CodePipeline's rule for an update while running: the execution
                    // finishes the stage it is in and goes no further.
                    if index > 0 {
                        let current = self.store.current_version(&execution.pipeline_name)?;
                        if current > execution.pipeline_version {
                            let summary = format!(
                                "Cancelled: pipeline {} was updated to version {} before this \
                                 execution (version {}) could complete; start it again to run the \
                                 new version",
                                execution.pipeline_name, current, execution.pipeline_version
                            );
                            self.finish_execution(execution_id, "Cancelled", Some(&summary))?;
                            return Ok(false);
                        }
                    }
                    if let Some(reason) = self.entry_block(&execution, &def, index as usize)? {
                        self.wait_in_front(&execution, &def, &stage.name, &reason)?;
                        return Ok(false);
                    }
                    if execution.waiting_for_stage.is_some() {
                        self.store.set_waiting(execution_id, None, None)?;
                    }
                    self.store.insert_stage(execution_id, index, &stage.name)?;
                    self.emit(Event::Execution(execution_id.to_string()));
                    row = self
                        .store
                        .stages(execution_id)?
                        .into_iter()
                        .find(|s| s.stage_index == index);
                }
            }
            let Some(row) = row else {
                return Ok(false);
            };
            if !rollback
                && let Some(before_entry) = &stage.before_entry
                && matches!(row.condition_status.as_deref(), None | Some("InProgress"))
            {
                let kind = Kind::BeforeEntry;
                match self.condition_outcome(
                    st,
                    &execution,
                    &def,
                    &row,
                    kind,
                    &before_entry.conditions,
                )? {
                    ConditionOutcome::Pending { again } => return Ok(again),
                    ConditionOutcome::Met(_) => {}
                    ConditionOutcome::NotMet(ConditionResult::Skip, summary) => {
                        self.record_condition(
                            &execution,
                            &stage.name,
                            &row,
                            kind,
                            "Skipped",
                            &summary,
                        )?;
                        self.store.finish_stage(execution_id, index, "Skipped")?;
                        self.emit(Event::Execution(execution_id.to_string()));
                        continue;
                    }
                    ConditionOutcome::NotMet(_, summary) => {
                        self.record_condition(
                            &execution,
                            &stage.name,
                            &row,
                            kind,
                            "Failed",
                            &summary,
                        )?;
                        self.store.finish_stage(execution_id, index, "Failed")?;
                        self.finish_execution(execution_id, "Failed", Some(&summary))?;
                        return Ok(false);
                    }
                }
            }
            // The latest attempt of each action of this stage (since its last whole-stage
            // retry); Commands rule runs are not actions.
            let floor = row.attempt_floor;
            let mut latest: HashMap<&str, &AttemptRow> = HashMap::new();
            for attempt in attempts.iter().filter(|a| {
                a.stage_index == index && a.attempt > floor && a.rule_condition.is_none()
            }) {
                let entry = latest
                    .entry(attempt.action_name.as_str())
                    .or_insert(attempt);
                if attempt.attempt > entry.attempt {
                    *entry = attempt;
                }
            }
            let mut failed: Vec<&&AttemptRow> =
                latest.values().filter(|a| a.status == "Failed").collect();
            failed.sort_by_key(|a| (a.finished_at_ms, a.id));
            if let Some(first) = failed.first() {
                // Siblings that have not started never will: the stage has failed.
                for waiting in latest.values().filter(|a| a.phase == phase::QUEUED) {
                    st.queue.remove(&waiting.id);
                    let reason = format!(
                        "not started: action {}/{} failed first",
                        stage.name, first.action_name
                    );
                    self.store.end_attempt(
                        waiting.id,
                        &waiting.fencing_token,
                        "Abandoned",
                        &reason,
                    )?;
                }
                if latest.values().any(|a| phase::in_flight(&a.phase)) {
                    return Ok(false);
                }
                let message = format!(
                    "Action {}/{} failed: {}",
                    stage.name,
                    first.action_name,
                    first.error.as_deref().unwrap_or("no reason given")
                );
                return self.stage_failed(st, &execution, &def, &row, &message);
            }
            let mut run_orders: Vec<u32> = stage.actions.iter().map(|a| a.run_order).collect();
            run_orders.sort_unstable();
            run_orders.dedup();
            for run_order in run_orders {
                let group: Vec<&Action> = stage
                    .actions
                    .iter()
                    .filter(|a| a.run_order == run_order)
                    .collect();
                if group.iter().all(|a| {
                    latest
                        .get(a.name.as_str())
                        .is_some_and(|x| x.status == "Succeeded")
                }) {
                    continue;
                }
                let mut again = false;
                for action in group
                    .iter()
                    .filter(|a| !latest.contains_key(a.name.as_str()))
                {
                    again |= self.queue_attempt(st, &execution, &def, index, action, floor + 1)?;
                }
                return Ok(again);
            }
            if !rollback
                && let Some(on_success) = &stage.on_success
                && matches!(row.on_success_status.as_deref(), None | Some("InProgress"))
            {
                let kind = Kind::OnSuccess;
                match self.condition_outcome(
                    st,
                    &execution,
                    &def,
                    &row,
                    kind,
                    &on_success.conditions,
                )? {
                    ConditionOutcome::Pending { again } => return Ok(again),
                    ConditionOutcome::Met(_) => {}
                    ConditionOutcome::NotMet(result, summary) => {
                        self.record_condition(
                            &execution,
                            &stage.name,
                            &row,
                            kind,
                            "Failed",
                            &summary,
                        )?;
                        self.store.finish_stage(execution_id, index, "Failed")?;
                        let mut message = summary;
                        if result == ConditionResult::Rollback {
                            message.push_str(&self.roll_back_after(st, &execution, &def, index)?);
                        }
                        self.finish_execution(execution_id, "Failed", Some(&message))?;
                        return Ok(false);
                    }
                }
            }
            self.store.finish_stage(execution_id, index, "Succeeded")?;
            self.emit(Event::Execution(execution_id.to_string()));
        }
        self.finish_execution(execution_id, "Succeeded", None)?;
        Ok(false)
    }

    /// Lets a person bypass the failed beforeEntry or onSuccess condition of a stage:
    /// the execution goes on, entering the stage or leaving it as succeeded. `kind`
    /// names the condition; without it, the one that failed. Records who and when.
    pub fn override_condition(
        &self,
        id: &str,
        stage_name: &str,
        kind: Option<Kind>,
        who: &str,
    ) -> Result<store::ExecutionRow> {
        let mut st = self.lock();
        let execution = self.store.execution(id)?;
        let def = self.definition(
            &mut st,
            &execution.pipeline_name,
            execution.pipeline_version,
        )?;
        let index = stage_position(&def, execution.pipeline_version, stage_name)? as i64;
        let conflict = |m: String| -> EngineError { StoreError::Conflict(m).into() };
        let stage = self
            .store
            .stages(id)?
            .into_iter()
            .find(|s| s.stage_index == index);
        let failed = stage.as_ref().filter(|s| s.status == "Failed");
        let before_entry_failed =
            failed.is_some_and(|s| s.condition_status.as_deref() == Some("Failed"));
        let on_success_failed =
            failed.is_some_and(|s| s.on_success_status.as_deref() == Some("Failed"));
        let chosen = match kind {
            Some(Kind::OnFailure) => {
                return Err(conflict(
                    "an onFailure condition cannot be overridden, as in CodePipeline; retry the \
                     stage instead"
                        .to_string(),
                ));
            }
            Some(Kind::BeforeEntry) if before_entry_failed => Kind::BeforeEntry,
            Some(Kind::OnSuccess) if on_success_failed => Kind::OnSuccess,
            None if before_entry_failed => Kind::BeforeEntry,
            None if on_success_failed => Kind::OnSuccess,
            _ => {
                let status = |s: &store::StageRow| match kind {
                    Some(Kind::OnSuccess) => s.on_success_status.clone(),
                    _ => s.condition_status.clone(),
                };
                let what = match stage.as_ref().and_then(status).as_deref() {
                    Some("Skipped") => {
                        "its condition's result is SKIP, which cannot be overridden".to_string()
                    }
                    Some("Overridden") => "its condition was already overridden".to_string(),
                    _ => format!(
                        "it has no failed {} condition",
                        kind.map_or("beforeEntry or onSuccess", Kind::as_str)
                    ),
                };
                return Err(conflict(format!(
                    "stage {stage_name} of execution {id} cannot be overridden: {what}"
                )));
            }
        };
        if execution.status != "Failed" {
            return Err(conflict(format!(
                "execution {id} is {}; only a failed execution's condition can be overridden",
                execution.status
            )));
        }
        if let Some(newer) = self.store.newer_execution_in_stage(&execution, index)? {
            return Err(conflict(format!(
                "execution {newer} reached stage {stage_name} after {id}; only the latest \
                 execution in a stage can be overridden"
            )));
        }
        self.store
            .override_condition(id, index, chosen.as_str(), who)?;
        tracing::info!(execution = %id, stage = %stage_name, condition = chosen.as_str(), who, "Condition overridden.");
        self.advance(&mut st, id)?;
        self.dispatch(&mut st)?;
        drop(st);
        self.emit(Event::Execution(id.to_string()));
        Ok(self.store.execution(id)?)
    }

    /// A manual approval starts: the attempt waits for a person until its deadline, and
    /// the notification (if the action has a NotificationUrl) goes out in the background.
    fn open_approval(
        &self,
        execution: &store::ExecutionRow,
        stage: &sluice_pipeline::Stage,
        action: &Action,
        attempt: &AttemptRow,
    ) -> Result<()> {
        let config = &attempt.resolved_configuration;
        let minutes = config
            .get("TimeoutMinutes")
            .and_then(|m| m.trim().parse::<i64>().ok())
            .unwrap_or(APPROVAL_DEFAULT_MINUTES);
        if !(5..=86_400).contains(&minutes) {
            self.store.end_attempt(
                attempt.id,
                &attempt.fencing_token,
                "Failed",
                &format!("TimeoutMinutes {minutes} is not from 5 minutes to 60 days (86400)"),
            )?;
            return Ok(());
        }
        let expires = now_ms() + minutes * 60_000;
        if !self
            .store
            .open_approval(attempt.id, &attempt.fencing_token, expires)?
        {
            return Ok(());
        }
        tracing::info!(execution = %execution.id, stage = %stage.name, action = %action.name, "Approval pending.");
        self.emit(Event::Execution(execution.id.clone()));
        if let Some(url) = config
            .get("NotificationUrl")
            .filter(|u| !u.trim().is_empty())
        {
            let body = serde_json::json!({
                "pipeline": execution.pipeline_name,
                "executionId": execution.id,
                "stage": stage.name,
                "action": action.name,
                "customData": config.get("CustomData"),
                "externalEntityLink": config.get("ExternalEntityLink"),
                "expiresAtMs": expires,
                "reviewLink": format!(
                    "{}/api/v1/executions/{}",
                    self.public_url(),
                    execution.id
                ),
                "approveCommand": format!(
                    "sluice execution approve {} --stage {} --action {}",
                    execution.id, stage.name, action.name
                ),
                "rejectCommand": format!(
                    "sluice execution reject {} --stage {} --action {} --comment REASON",
                    execution.id, stage.name, action.name
                ),
            });
            let store = self.store.clone();
            let client = self.http.clone();
            let url = url.trim().to_string();
            let id = attempt.id;
            tokio::spawn(async move {
                let error = notify(&client, &url, &body).await.err();
                if let Err(e) = store.approval_notified(id, error.as_deref()) {
                    tracing::warn!(attempt = id, error = %e, "Could not record the approval notification.");
                }
            });
        }
        Ok(())
    }

    /// Approves or rejects the pending approval `stage`/`action` of an execution. A
    /// rejection fails the action, and so the stage.
    pub fn decide_approval(
        &self,
        execution_id: &str,
        stage_name: &str,
        action_name: &str,
        approve: bool,
        comment: &str,
        who: &str,
    ) -> Result<store::ExecutionRow> {
        let mut st = self.lock();
        let execution = self.store.execution(execution_id)?;
        let def = self.definition(
            &mut st,
            &execution.pipeline_name,
            execution.pipeline_version,
        )?;
        let index = def
            .stages
            .iter()
            .position(|s| s.name == stage_name)
            .map(|i| i as i64);
        let pending = self.store.attempts(execution_id)?.into_iter().find(|a| {
            Some(a.stage_index) == index
                && a.action_name == action_name
                && a.phase == phase::APPROVAL
        });
        let Some(pending) = pending else {
            return Err(StoreError::Conflict(format!(
                "no approval is pending for {stage_name}/{action_name} in execution {execution_id}"
            ))
            .into());
        };
        let comment = comment.trim();
        if comment.chars().count() > 512 {
            return Err(EngineError::Invalid(
                "the comment must be at most 512 characters".to_string(),
            ));
        }
        let said = if comment.is_empty() {
            String::new()
        } else {
            format!(": {comment}")
        };
        let (status, summary, error, decision) = if approve {
            (
                "Succeeded",
                Some(format!("Approved by {who}{said}")),
                None,
                "Approved",
            )
        } else {
            (
                "Failed",
                None,
                Some(format!("Rejected by {who}{said}")),
                "Rejected",
            )
        };
        if !self.store.finish_attempt(
            pending.id,
            &pending.fencing_token,
            status,
            summary.as_deref(),
            error.as_deref(),
            &BTreeMap::new(),
            &[],
        )? {
            return Err(StoreError::Conflict(format!(
                "the approval {stage_name}/{action_name} was decided meanwhile"
            ))
            .into());
        }
        self.store.decide_approval(
            pending.id,
            decision,
            who,
            (!comment.is_empty()).then_some(comment),
        )?;
        tracing::info!(execution = %execution_id, stage = %stage_name, action = %action_name, decision, who, "Approval decided.");
        self.advance(&mut st, execution_id)?;
        self.dispatch(&mut st)?;
        drop(st);
        self.emit(Event::Execution(execution_id.to_string()));
        Ok(self.store.execution(execution_id)?)
    }

    /// The URL people reach the controller at (for review links).
    fn public_url(&self) -> String {
        self.public_url
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets the URL people reach the controller at.
    pub fn set_public_url(&self, url: &str) {
        *self.public_url.write().unwrap_or_else(|p| p.into_inner()) = url.to_string();
    }

    /// Enables or disables the transition into a stage. Executions wait in front of a
    /// disabled transition; enabling it lets the waiting one (in SUPERSEDED mode, the
    /// newest; in QUEUED mode, the oldest first) go on.
    pub fn set_transition(
        &self,
        pipeline: &str,
        stage: &str,
        enabled: bool,
        reason: &str,
        who: &str,
    ) -> Result<Vec<store::TransitionRow>> {
        let mut st = self.lock();
        let current = self.store.pipeline_version(pipeline, None)?;
        let def = self.definition(&mut st, pipeline, current.version)?;
        let index = stage_position(&def, current.version, stage)?;
        if index == 0 {
            return Err(EngineError::Invalid(format!(
                "stage {stage} is the first stage: executions start in it, so it has no inbound \
                 transition to disable"
            )));
        }
        let reason = reason.trim();
        if !enabled && reason.is_empty() {
            return Err(EngineError::Invalid(
                "say why the transition is disabled (--reason); it is shown to everyone who waits"
                    .to_string(),
            ));
        }
        if reason.chars().count() > 300 {
            return Err(EngineError::Invalid(
                "the reason must be at most 300 characters".to_string(),
            ));
        }
        let reason = (!enabled).then_some(reason);
        self.store
            .set_transition(pipeline, stage, enabled, reason, who)?;
        tracing::info!(pipeline, stage, enabled, who, "Transition changed.");
        for waiting in self.store.waiting_executions(pipeline, None)? {
            self.advance_one(&mut st, &waiting.id)?;
        }
        self.dispatch(&mut st)?;
        Ok(self.store.transitions(pipeline)?)
    }

    /// Retries a failed (or stopped) stage of an execution, keeping its id and every
    /// earlier attempt: FAILED_ACTIONS runs again only the actions whose latest attempt
    /// failed or was abandoned; ALL_ACTIONS runs the whole stage again from its first
    /// runOrder. Only the latest execution to reach the stage can be retried.
    pub fn retry_stage(
        &self,
        id: &str,
        stage_name: &str,
        all_actions: bool,
    ) -> Result<store::ExecutionRow> {
        let mut st = self.lock();
        let execution = self.store.execution(id)?;
        let def = self.definition(
            &mut st,
            &execution.pipeline_name,
            execution.pipeline_version,
        )?;
        let index = stage_position(&def, execution.pipeline_version, stage_name)? as i64;
        let conflict = |m: String| -> EngineError { StoreError::Conflict(m).into() };
        if matches!(execution.status.as_str(), "InProgress" | "Stopping") {
            return Err(conflict(format!(
                "execution {id} is {}; a stage can be retried once the execution has ended",
                execution.status
            )));
        }
        let stage = self
            .store
            .stages(id)?
            .into_iter()
            .find(|s| s.stage_index == index);
        if stage.as_ref().is_some_and(|s| {
            s.status == "Failed" && s.condition_status.as_deref() == Some("Failed")
        }) {
            return Err(conflict(format!(
                "stage {stage_name} of execution {id} did not start: its beforeEntry condition \
                 failed; bypass it with `sluice execution override-condition {id} --stage \
                 {stage_name}`"
            )));
        }
        match stage.as_ref().map(|s| s.status.as_str()) {
            Some("Failed" | "Stopped") => {}
            Some(other) => {
                return Err(conflict(format!(
                    "stage {stage_name} of execution {id} is {other}; only a failed or stopped \
                     stage can be retried"
                )));
            }
            None => {
                return Err(conflict(format!(
                    "stage {stage_name} of execution {id} never started, so it has nothing to retry"
                )));
            }
        }
        if let Some(newer) = self.store.newer_execution_in_stage(&execution, index)? {
            return Err(conflict(format!(
                "execution {newer} reached stage {stage_name} after {id}; only the latest \
                 execution in a stage can be retried"
            )));
        }
        self.reopen_stage(&mut st, &execution, &def, index, all_actions, false)?;
        tracing::info!(execution = %id, stage = %stage_name, all_actions, "Stage retried.");
        self.advance(&mut st, id)?;
        self.dispatch(&mut st)?;
        drop(st);
        self.emit(Event::Execution(id.to_string()));
        Ok(self.store.execution(id)?)
    }

    /// A stopping execution starts nothing new; once no attempt of it is offered or
    /// running, its open stages and the execution itself end as Stopped.
    fn finish_stopping(&self, execution: &store::ExecutionRow) -> Result<()> {
        let attempts = self.store.attempts(&execution.id)?;
        if attempts.iter().any(|a| phase::in_flight(&a.phase)) {
            return Ok(());
        }
        for stage in self.store.stages(&execution.id)? {
            if stage.status == "InProgress" {
                self.store
                    .finish_stage(&execution.id, stage.stage_index, "Stopped")?;
            }
        }
        self.finish_execution(
            &execution.id,
            "Stopped",
            execution.status_summary.as_deref(),
        )
    }

    /// Stops an execution. Stop and wait (`abandon` false): actions already running
    /// finish, nothing new starts, and the execution goes Stopping → Stopped. Abandon:
    /// running actions are marked Abandoned at once and their agents told to cancel them
    /// (killing the plugin and its processes). Either way, actions not started yet are
    /// Abandoned. Abandon may follow a stop that is still waiting.
    pub fn stop_execution(
        &self,
        id: &str,
        abandon: bool,
        reason: &str,
    ) -> Result<store::ExecutionRow> {
        let mut st = self.lock();
        let execution = self.store.execution(id)?;
        match execution.status.as_str() {
            "InProgress" => {}
            "Stopping" if abandon => {}
            "Stopping" => {
                return Err(StoreError::Conflict(format!(
                    "execution {id} is already stopping and waits for its running actions; \
                     add --abandon to abandon them"
                ))
                .into());
            }
            other => {
                return Err(StoreError::Conflict(format!(
                    "execution {id} is {other}; only an execution in progress can be stopped"
                ))
                .into());
            }
        }
        let how = if abandon { "abandoned" } else { "stopped" };
        let summary = if reason.trim().is_empty() {
            format!("Execution {how} by request")
        } else {
            format!("Execution {how} by request: {}", reason.trim())
        };
        self.store
            .set_execution_status(id, "Stopping", Some(&summary))?;
        for attempt in self.store.attempts(id)? {
            let in_flight = attempt.phase == phase::OFFERED || attempt.phase == phase::RUNNING;
            if attempt.phase == phase::APPROVAL {
                // Nobody is working on a pending approval: stopping, in either mode,
                // abandons it rather than waiting for a decision.
                if self.store.end_attempt(
                    attempt.id,
                    &attempt.fencing_token,
                    "Abandoned",
                    &format!("abandoned: {summary}"),
                )? {
                    self.store.decide_approval(
                        attempt.id,
                        "Abandoned",
                        "sluice",
                        Some(&summary),
                    )?;
                }
            } else if attempt.phase == phase::QUEUED {
                st.queue.remove(&attempt.id);
                self.store.end_attempt(
                    attempt.id,
                    &attempt.fencing_token,
                    "Abandoned",
                    "not started: the execution was stopped",
                )?;
            } else if abandon
                && in_flight
                && self.store.end_attempt(
                    attempt.id,
                    &attempt.fencing_token,
                    "Abandoned",
                    &format!("abandoned: {summary}"),
                )?
            {
                if let Some(row) = self.store.log(attempt.id)? {
                    self.store
                        .finish_log(attempt.id, row.stored_length, "", false)?;
                }
                if let Some(held) = st.held.remove(&attempt.id)
                    && let Some(session) = st.sessions.get_mut(&held.agent_id)
                {
                    session.held.remove(&attempt.id);
                    let _ = session.tx.send(ControllerMessage::Cancel {
                        attempt_id: attempt.id,
                        reason: summary.clone(),
                    });
                }
            }
        }
        tracing::info!(execution = %id, abandon, reason, "Execution stopping.");
        self.advance(&mut st, id)?;
        self.dispatch(&mut st)?;
        drop(st);
        self.emit(Event::Execution(id.to_string()));
        Ok(self.store.execution(id)?)
    }

    fn finish_execution(
        &self,
        execution_id: &str,
        status: &str,
        summary: Option<&str>,
    ) -> Result<()> {
        self.store
            .set_execution_status(execution_id, status, summary)?;
        tracing::info!(execution = %execution_id, status, summary = summary.unwrap_or(""), "Execution finished.");
        self.emit(Event::Execution(execution_id.to_string()));
        Ok(())
    }

    /// Creates and queues an attempt. Returns true if it failed on the spot (so the
    /// execution needs another pass).
    fn queue_attempt(
        &self,
        st: &mut State,
        execution: &store::ExecutionRow,
        def: &Pipeline,
        stage_index: i64,
        action: &Action,
        attempt_number: i64,
    ) -> Result<bool> {
        let token = new_token();
        let (configuration, problem) = match self.resolve_configuration(execution, def, action) {
            Ok(config) => (config, None),
            Err(problem) => (action.configuration.clone(), Some(problem)),
        };
        let id = self.store.insert_attempt(&NewAttempt {
            execution_id: &execution.id,
            stage_index,
            action_name: &action.name,
            attempt: attempt_number,
            run_order: i64::from(action.run_order),
            fencing_token: &token,
            resolved_configuration: &configuration,
            rule_condition: None,
        })?;
        self.emit(Event::Execution(execution.id.clone()));
        if let Some(problem) = problem {
            self.store.end_attempt(id, &token, "Failed", &problem)?;
            return Ok(true);
        }
        self.enqueue_existing(st, &self.store.attempt(id)?)
    }

    /// Puts a stored queued attempt into the in-memory queue (when it is created, after
    /// a restart, or after a rejected offer). Returns true if it failed on the spot
    /// because its inputs are missing.
    fn enqueue_existing(&self, st: &mut State, attempt: &AttemptRow) -> Result<bool> {
        let execution = self.store.execution(&attempt.execution_id)?;
        let def = self.definition(st, &execution.pipeline_name, execution.pipeline_version)?;
        let Some(stage) = def.stages.get(attempt.stage_index as usize) else {
            return Ok(false);
        };
        let work = match &attempt.rule_condition {
            Some(kind) => match stage_outcomes::find_rule(stage, kind, &attempt.action_name) {
                Some(rule) => Work {
                    action_type: stage_outcomes::commands_rule_type(),
                    inputs: &rule.input_artifacts,
                    outputs: &[],
                    timeout_in_minutes: rule.timeout_in_minutes,
                    selector: &rule.agent,
                },
                None => {
                    let problem = format!(
                        "the {kind} rule {} is no longer in the definition",
                        attempt.action_name
                    );
                    self.store.end_attempt(
                        attempt.id,
                        &attempt.fencing_token,
                        "Failed",
                        &problem,
                    )?;
                    return Ok(true);
                }
            },
            None => {
                let Some(action) = stage.actions.iter().find(|a| a.name == attempt.action_name)
                else {
                    return Ok(false);
                };
                if action.action_type_id.category == sluice_pipeline::Category::Approval {
                    self.open_approval(&execution, stage, action, attempt)?;
                    return Ok(false);
                }
                Work {
                    action_type: sluice_proto::ActionType {
                        category: action.action_type_id.category.to_string(),
                        owner: action.action_type_id.owner.clone(),
                        provider: action.action_type_id.provider.clone(),
                        version: action.action_type_id.version.clone(),
                    },
                    inputs: &action.input_artifacts,
                    outputs: &action.output_artifacts,
                    timeout_in_minutes: action.timeout_in_minutes,
                    selector: &action.agent,
                }
            }
        };
        let action_type = work.action_type;
        let registry = self.registry();
        let prepared = self.input_refs(&execution, work.inputs).and_then(|inputs| {
            let plugin = registry.serving(&action_type).ok_or_else(|| {
                format!(
                    "no installed plugin serves {}/{}/{}@{} any more; install it again \
                     (`sluice plugin list` shows what is installed)",
                    action_type.category,
                    action_type.owner,
                    action_type.provider,
                    action_type.version
                )
            })?;
            let secrets = self.job_secrets(plugin, &attempt.resolved_configuration)?;
            Ok((inputs, plugin.job_ref(), secrets))
        });
        let (inputs, plugin, secrets) = match prepared {
            Ok(parts) => parts,
            Err(problem) => {
                self.store
                    .end_attempt(attempt.id, &attempt.fencing_token, "Failed", &problem)?;
                return Ok(true);
            }
        };
        let job = Job {
            attempt: AttemptRef {
                attempt_id: attempt.id,
                fencing_token: attempt.fencing_token.clone(),
            },
            attempt_number: attempt.attempt as u32,
            pipeline: def.name.clone(),
            execution_id: execution.id.clone(),
            stage: stage.name.clone(),
            action: attempt.action_name.clone(),
            action_type,
            configuration: attempt.resolved_configuration.clone(),
            inputs,
            outputs: work.outputs.to_vec(),
            timeout_secs: work
                .timeout_in_minutes
                .map(|m| u64::from(m) * 60)
                .unwrap_or(self.settings.default_action_timeout.as_secs()),
            plugin: Some(plugin),
            secrets,
        };
        st.queue.insert(
            attempt.id,
            Queued {
                job,
                selector: work.selector.clone(),
                waiting_reason: attempt.waiting_reason.clone(),
            },
        );
        Ok(false)
    }

    /// The artifacts named `names`, from this execution or, for a ROLLBACK, from its
    /// target where this execution has not produced them itself.
    fn input_refs(
        &self,
        execution: &store::ExecutionRow,
        names: &[String],
    ) -> Result<Vec<sluice_proto::ArtifactRef>, String> {
        let read = |id: &str| {
            self.store
                .artifacts(id)
                .map_err(|e| format!("could not read the artifacts of execution {id}: {e}"))
        };
        let mut stored = read(&execution.id)?;
        if let Some(target) = &execution.rollback_target {
            for artifact in read(target)? {
                if !stored.iter().any(|a| a.name == artifact.name) {
                    stored.push(artifact);
                }
            }
        }
        names
            .iter()
            .map(|name| {
                stored
                    .iter()
                    .find(|a| &a.name == name)
                    .map(|a| sluice_proto::ArtifactRef {
                        name: a.name.clone(),
                        sha256: a.sha256.clone(),
                        size: a.size as u64,
                    })
                    .ok_or_else(|| match &execution.rollback_target {
                        Some(target) => format!(
                            "input artifact \"{name}\" was produced neither by this rollback nor \
                             by its target, execution {target}"
                        ),
                        None => format!(
                            "input artifact \"{name}\" was not produced by an earlier action of \
                             this execution"
                        ),
                    })
            })
            .collect()
    }

    /// Resolves `#{namespace.variable}` references in an action's configuration from
    /// the execution and from the outputs of namespaced actions that already succeeded.
    fn resolve_configuration(
        &self,
        execution: &store::ExecutionRow,
        def: &Pipeline,
        action: &Action,
    ) -> Result<BTreeMap<String, String>, String> {
        let needs_outputs = action.configuration.values().any(|v| v.contains("#{"));
        let namespaces = self.namespaces(execution, def, needs_outputs)?;
        let mut resolved = BTreeMap::new();
        for (key, value) in &action.configuration {
            resolved.insert(
                key.clone(),
                substitute(value, &namespaces).map_err(|e| format!("configuration.{key}: {e}"))?,
            );
        }
        // A revision pinned at start replaces the branch head for this source action.
        if let Some(revision) = execution.source_revisions.get(&action.name)
            && let Some((_, key)) = COMMIT_ID_KEYS
                .iter()
                .find(|(p, _)| *p == action.action_type_id.provider)
        {
            resolved.insert(key.to_string(), revision.clone());
        }
        Ok(resolved)
    }

    /// The variables visible to an execution: `codepipeline`, `variables` and (with
    /// `needs_outputs`) the namespaces of actions that already succeeded.
    fn namespaces(
        &self,
        execution: &store::ExecutionRow,
        def: &Pipeline,
        needs_outputs: bool,
    ) -> Result<HashMap<String, BTreeMap<String, String>>, String> {
        let mut namespaces: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        let mut codepipeline = BTreeMap::new();
        codepipeline.insert("PipelineExecutionId".to_string(), execution.id.clone());
        codepipeline.insert("PipelineName".to_string(), execution.pipeline_name.clone());
        namespaces.insert("codepipeline".into(), codepipeline);
        namespaces.insert("variables".into(), execution.variables.clone());
        if needs_outputs {
            // A ROLLBACK sees its target's outputs, then its own.
            let sources = execution
                .rollback_target
                .iter()
                .chain(std::iter::once(&execution.id));
            for source in sources {
                let attempts = self.store.attempts(source).map_err(|e| e.to_string())?;
                for (index, stage) in def.stages.iter().enumerate() {
                    for other in &stage.actions {
                        let Some(namespace) = &other.namespace else {
                            continue;
                        };
                        if let Some(done) = attempts
                            .iter()
                            .filter(|a| {
                                a.stage_index == index as i64
                                    && a.action_name == other.name
                                    && a.rule_condition.is_none()
                                    && a.status == "Succeeded"
                            })
                            .max_by_key(|a| a.attempt)
                        {
                            namespaces.insert(namespace.clone(), done.output_variables.clone());
                        }
                    }
                }
            }
        }
        Ok(namespaces)
    }

    // ---- dispatch --------------------------------------------------------------

    /// Offers queued attempts to agents with matching labels and free capacity, and
    /// records why the others wait.
    fn dispatch(&self, st: &mut State) -> Result<()> {
        let ids: Vec<i64> = st.queue.keys().copied().collect();
        for id in ids {
            let Some(queued) = st.queue.get(&id) else {
                continue;
            };
            let selector = queued.selector.clone();
            let candidate = st
                .sessions
                .iter()
                .filter(|(_, s)| {
                    !s.drained && s.held.len() < s.capacity && labels_match(&selector, &s.labels)
                })
                .max_by_key(|(_, s)| s.capacity - s.held.len())
                .map(|(agent_id, _)| agent_id.clone());
            match candidate {
                Some(agent_id) => {
                    let Some(token) = st
                        .queue
                        .get(&id)
                        .map(|q| q.job.attempt.fencing_token.clone())
                    else {
                        continue;
                    };
                    let lease = now_ms() + self.settings.lease_ttl.as_millis() as i64;
                    // Commit first; only a committed offer leaves the queue.
                    let moved = self.store.move_attempt(
                        id,
                        &token,
                        &[phase::QUEUED],
                        phase::OFFERED,
                        Some(&agent_id),
                        Some(lease),
                    )?;
                    let Some(queued) = st.queue.remove(&id) else {
                        continue;
                    };
                    if !moved {
                        continue;
                    }
                    let execution_id = queued.job.execution_id.clone();
                    if let Some(session) = st.sessions.get_mut(&agent_id) {
                        session.held.insert(id);
                        let _ = session
                            .tx
                            .send(ControllerMessage::Offer(Box::new(queued.job)));
                    }
                    st.held.insert(
                        id,
                        Held {
                            agent_id,
                            token,
                            execution_id: execution_id.clone(),
                            offered_at_ms: Some(now_ms()),
                        },
                    );
                    self.store.set_execution_summary(&execution_id, None)?;
                    self.emit(Event::Execution(execution_id));
                }
                None => {
                    let reason = self.waiting_reason(st, &selector);
                    let Some(queued) = st.queue.get_mut(&id) else {
                        continue;
                    };
                    if queued.waiting_reason.as_deref() != Some(reason.as_str()) {
                        queued.waiting_reason = Some(reason.clone());
                        self.store.set_waiting_reason(id, Some(&reason))?;
                        let summary =
                            format!("{}/{}: {reason}", queued.job.stage, queued.job.action);
                        self.store
                            .set_execution_summary(&queued.job.execution_id, Some(&summary))?;
                        self.emit(Event::Execution(queued.job.execution_id.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    fn waiting_reason(&self, st: &State, selector: &BTreeMap<String, String>) -> String {
        let labels = format_labels(selector);
        let wanted = if selector.is_empty() {
            "any agent".to_string()
        } else {
            format!("an agent with labels {labels}")
        };
        let matching: Vec<&String> = st
            .registered
            .iter()
            .filter(|(_, agent_labels)| labels_match(selector, agent_labels))
            .map(|(id, _)| id)
            .collect();
        if matching.is_empty() {
            let registered = match st.registered.len() {
                0 => "no agent is registered".to_string(),
                1 => "the one registered agent does not match".to_string(),
                n => format!("none of the {n} registered agents matches"),
            };
            let flag = if selector.is_empty() {
                String::new()
            } else {
                format!(" --labels {labels}")
            };
            return format!(
                "no registered agent can run this action: it needs {wanted}, and {registered}; \
                 add one with `sluice agent token create{flag}` and `sluice-agent join`"
            );
        }
        let online = matching
            .iter()
            .filter(|id| st.sessions.contains_key(id.as_str()))
            .count();
        match (online, matching.len()) {
            (0, 1) => {
                format!("waiting for {wanted}: the matching agent is registered but not connected")
            }
            (0, n) => format!(
                "waiting for {wanted}: {n} matching agents are registered but none is connected"
            ),
            (1, _) => format!("waiting for a free slot on the connected agent matching {wanted}"),
            (n, _) => format!("waiting for a free slot on {n} connected agents matching {wanted}"),
        }
    }

    // ---- agent sessions --------------------------------------------------------

    /// Registers a newly joined agent so that queued work can see it.
    pub fn agent_joined(&self, agent: &AgentRow) -> Result<()> {
        let mut st = self.lock();
        st.registered.insert(agent.id.clone(), agent.labels.clone());
        // Waiting reasons may change from "no agent can" to "none connected".
        for queued in st.queue.values_mut() {
            queued.waiting_reason = None;
        }
        self.dispatch(&mut st)
    }

    /// A session said Hello. Returns the session id, or a refusal message.
    pub fn connect(
        &self,
        agent: &AgentRow,
        labels: BTreeMap<String, String>,
        capacity: u32,
        version: &str,
        running: &[AttemptRef],
        tx: mpsc::UnboundedSender<ControllerMessage>,
    ) -> Result<u64> {
        let mut st = self.lock();
        // The labels its join token granted always win over what the agent says.
        let mut labels = labels;
        labels.extend(agent.granted_labels.clone());
        self.store
            .agent_connected(&agent.id, &labels, i64::from(capacity), version)?;
        let claimed: Vec<i64> = running
            .iter()
            .filter(|r| self.check_holder(&st, &agent.id, r).is_none())
            .map(|r| r.attempt_id)
            .collect();
        self.store.renew_leases(
            &agent.id,
            &claimed,
            now_ms() + self.settings.lease_ttl.as_millis() as i64,
        )?;
        st.next_session_id += 1;
        let session_id = st.next_session_id;
        // Attempts this agent held: keep those it still runs, fail those it lost
        // (it restarted), and tell it to drop the ones that are no longer its own.
        let mut held = HashSet::new();
        let running_ids: HashSet<i64> = running.iter().map(|r| r.attempt_id).collect();
        for attempt in running {
            match st.held.get(&attempt.attempt_id) {
                Some(h) if h.agent_id == agent.id && h.token == attempt.fencing_token => {
                    held.insert(attempt.attempt_id);
                    // The agent runs it, so its Accept was lost on the way: accept now,
                    // or the offer timeout would hand it to another agent as well.
                    if h.offered_at_ms.is_some() {
                        self.store.move_attempt(
                            attempt.attempt_id,
                            &attempt.fencing_token,
                            &[phase::OFFERED],
                            phase::RUNNING,
                            Some(&agent.id),
                            Some(now_ms() + self.settings.lease_ttl.as_millis() as i64),
                        )?;
                    }
                    if let Some(h) = st.held.get_mut(&attempt.attempt_id) {
                        h.offered_at_ms = None;
                    }
                }
                _ => {
                    let _ = tx.send(ControllerMessage::Stale {
                        attempt_id: attempt.attempt_id,
                        message: "this attempt is no longer assigned to this agent".into(),
                    });
                }
            }
        }
        let lost: Vec<(i64, String, String)> = st
            .held
            .iter()
            .filter(|(id, h)| {
                h.agent_id == agent.id && !running_ids.contains(id) && h.offered_at_ms.is_none()
            })
            .map(|(id, h)| (*id, h.token.clone(), h.execution_id.clone()))
            .collect();
        // Offers not yet accepted that the agent no longer knows about go back to the queue.
        let unaccepted: Vec<i64> = st
            .held
            .iter()
            .filter(|(id, h)| {
                h.agent_id == agent.id && !running_ids.contains(id) && h.offered_at_ms.is_some()
            })
            .map(|(id, _)| *id)
            .collect();
        if let Some(old) = st.sessions.insert(
            agent.id.clone(),
            Session {
                session_id,
                tx,
                labels: labels.clone(),
                capacity: capacity.max(1) as usize,
                held,
                drained: agent.drained,
            },
        ) {
            tracing::warn!(agent = %agent.id, old_session = old.session_id, "Agent reconnected; closing its previous session.");
        }
        st.registered.insert(agent.id.clone(), labels);
        for (id, token, execution_id) in lost {
            st.held.remove(&id);
            self.fail_held(
                &mut st,
                id,
                &token,
                &execution_id,
                "agent lost: the agent restarted and no longer runs this action",
            )?;
        }
        for id in unaccepted {
            self.requeue(&mut st, id)?;
        }
        for queued in st.queue.values_mut() {
            queued.waiting_reason = None;
        }
        self.dispatch(&mut st)?;
        tracing::info!(agent = %agent.id, session = session_id, capacity, "Agent connected.");
        Ok(session_id)
    }

    /// A session ended. Its attempts keep their leases: the agent may come back.
    pub fn disconnect(&self, agent_id: &str, session_id: u64) -> Result<()> {
        let mut st = self.lock();
        if st
            .sessions
            .get(agent_id)
            .is_some_and(|s| s.session_id == session_id)
        {
            st.sessions.remove(agent_id);
            self.store.mark_agent_offline(agent_id)?;
            tracing::info!(agent = %agent_id, "Agent disconnected.");
            for queued in st.queue.values_mut() {
                queued.waiting_reason = None;
            }
            self.dispatch(&mut st)?;
        }
        Ok(())
    }

    /// Drains an agent (it finishes what it runs and is offered nothing new) or puts it
    /// back to work.
    pub fn set_drained(&self, agent_id: &str, drained: bool) -> Result<AgentRow> {
        let mut st = self.lock();
        let agent = self.store.agent(agent_id)?;
        if agent.state == "revoked" {
            return Err(StoreError::Conflict(format!(
                "agent {agent_id} was revoked; it cannot be drained or undrained"
            ))
            .into());
        }
        self.store.set_agent_drained(agent_id, drained)?;
        if let Some(session) = st.sessions.get_mut(agent_id) {
            session.drained = drained;
        }
        tracing::info!(agent = %agent_id, drained, "Agent drain changed.");
        for queued in st.queue.values_mut() {
            queued.waiting_reason = None;
        }
        self.dispatch(&mut st)?;
        Ok(self.store.agent(agent_id)?)
    }

    /// Revokes an agent: its certificate is refused from now on, its connection is
    /// closed, and what it was running fails (to be retried elsewhere by hand or by
    /// onFailure). Joining again needs a new token.
    pub fn revoke_agent(&self, agent_id: &str) -> Result<AgentRow> {
        let mut st = self.lock();
        self.store.agent(agent_id)?;
        self.store.set_agent_state(agent_id, "revoked")?;
        // Dropping the session's sender ends its connection.
        st.sessions.remove(agent_id);
        st.registered.remove(agent_id);
        let held: Vec<(i64, String, String)> = st
            .held
            .iter()
            .filter(|(_, h)| h.agent_id == agent_id)
            .map(|(id, h)| (*id, h.token.clone(), h.execution_id.clone()))
            .collect();
        for (id, token, execution_id) in held {
            st.held.remove(&id);
            let message = format!("agent {agent_id} was revoked while this attempt was on it");
            self.fail_held(&mut st, id, &token, &execution_id, &message)?;
        }
        for queued in st.queue.values_mut() {
            queued.waiting_reason = None;
        }
        self.dispatch(&mut st)?;
        tracing::warn!(agent = %agent_id, "Agent revoked.");
        Ok(self.store.agent(agent_id)?)
    }

    /// A heartbeat renews the leases of the attempts the agent says it still runs (and
    /// that it really holds); an attempt it no longer lists runs out its lease.
    pub fn heartbeat(&self, agent_id: &str, running: &[AttemptRef]) -> Result<()> {
        let st = self.lock();
        let ids: Vec<i64> = running
            .iter()
            .filter(|r| self.check_holder(&st, agent_id, r).is_none())
            .map(|r| r.attempt_id)
            .collect();
        drop(st);
        self.store.renew_leases(
            agent_id,
            &ids,
            now_ms() + self.settings.lease_ttl.as_millis() as i64,
        )?;
        Ok(())
    }

    fn check_holder(&self, st: &State, agent_id: &str, attempt: &AttemptRef) -> Option<String> {
        match st.held.get(&attempt.attempt_id) {
            Some(h) if h.agent_id == agent_id && h.token == attempt.fencing_token => None,
            Some(h) if h.agent_id == agent_id => Some(format!(
                "stale fencing token for attempt {}: a newer attempt replaced it",
                attempt.attempt_id
            )),
            Some(_) => Some(format!(
                "attempt {} is held by another agent",
                attempt.attempt_id
            )),
            None => Some(format!(
                "attempt {} is not running (it finished, was lost, or never existed)",
                attempt.attempt_id
            )),
        }
    }

    /// The agent accepted an offer.
    pub fn accept(&self, agent_id: &str, attempt: &AttemptRef) -> Result<Reply> {
        let mut st = self.lock();
        if let Some(message) = self.check_holder(&st, agent_id, attempt) {
            return Ok(Reply::Send(ControllerMessage::Stale {
                attempt_id: attempt.attempt_id,
                message,
            }));
        }
        let lease = now_ms() + self.settings.lease_ttl.as_millis() as i64;
        if !self.store.move_attempt(
            attempt.attempt_id,
            &attempt.fencing_token,
            &[phase::OFFERED],
            phase::RUNNING,
            Some(agent_id),
            Some(lease),
        )? {
            return Ok(Reply::Send(ControllerMessage::Stale {
                attempt_id: attempt.attempt_id,
                message: "the offer was withdrawn".into(),
            }));
        }
        let Some(held) = st.held.get_mut(&attempt.attempt_id) else {
            return Ok(Reply::Nothing);
        };
        // Accepted is committed: never treat it as an unaccepted offer again.
        held.offered_at_ms = None;
        let execution_id = held.execution_id.clone();
        let relative = self.logs.relative_path(&execution_id, attempt.attempt_id);
        self.store.ensure_log(attempt.attempt_id, &relative)?;
        self.emit(Event::Execution(execution_id));
        Ok(Reply::Nothing)
    }

    /// The agent refused an offer; it goes back to the queue.
    pub fn reject(&self, agent_id: &str, attempt: &AttemptRef, reason: &str) -> Result<()> {
        let mut st = self.lock();
        if self.check_holder(&st, agent_id, attempt).is_some() {
            return Ok(());
        }
        if st
            .held
            .get(&attempt.attempt_id)
            .is_some_and(|h| h.offered_at_ms.is_none())
        {
            // Rejecting what it already accepted: treat it as a failure, not a requeue.
            let execution_id = st
                .held
                .remove(&attempt.attempt_id)
                .map(|h| h.execution_id)
                .unwrap_or_default();
            if let Some(session) = st.sessions.get_mut(agent_id) {
                session.held.remove(&attempt.attempt_id);
            }
            let message = format!("the agent gave up the action after accepting it: {reason}");
            self.fail_held(
                &mut st,
                attempt.attempt_id,
                &attempt.fencing_token,
                &execution_id,
                &message,
            )?;
            return self.dispatch(&mut st);
        }
        tracing::warn!(agent = %agent_id, attempt = attempt.attempt_id, reason, "Agent rejected an offer.");
        self.requeue(&mut st, attempt.attempt_id)?;
        self.dispatch(&mut st)
    }

    /// Takes an unaccepted offer back and queues it again under a new fencing token, so
    /// that the agent it was offered to can no longer report on it.
    fn requeue(&self, st: &mut State, id: i64) -> Result<()> {
        let Some(held) = st.held.get(&id) else {
            return Ok(());
        };
        let (agent_id, old_token) = (held.agent_id.clone(), held.token.clone());
        if !self.store.requeue_attempt(id, &old_token, &new_token())? {
            return Ok(());
        }
        st.held.remove(&id);
        if let Some(session) = st.sessions.get_mut(&agent_id) {
            session.held.remove(&id);
        }
        let row = self.store.attempt(id)?;
        if self.enqueue_existing(st, &row)? {
            self.advance(st, &row.execution_id)?;
        }
        Ok(())
    }

    /// Appends a log chunk at its offset. Returns the acknowledgement to send.
    pub fn log(
        &self,
        agent_id: &str,
        attempt: &AttemptRef,
        offset: u64,
        data: &str,
    ) -> Result<Reply> {
        let st = self.lock();
        if let Some(message) = self.check_holder(&st, agent_id, attempt) {
            return Ok(Reply::Send(ControllerMessage::Stale {
                attempt_id: attempt.attempt_id,
                message,
            }));
        }
        let execution_id = st.held[&attempt.attempt_id].execution_id.clone();
        drop(st);
        let stored =
            self.logs
                .write_at(&execution_id, attempt.attempt_id, offset, data.as_bytes())?;
        self.store
            .set_log_length(attempt.attempt_id, stored as i64)?;
        self.emit(Event::Log(attempt.attempt_id));
        Ok(Reply::Send(ControllerMessage::LogAck {
            attempt_id: attempt.attempt_id,
            offset: stored,
        }))
    }

    /// The agent finished an attempt.
    pub fn finished(
        &self,
        agent_id: &str,
        attempt: &AttemptRef,
        outcome: &Outcome,
        log_length: u64,
        log_sha256: &str,
        tests: &[sluice_proto::TestCase],
    ) -> Result<Reply> {
        let id = attempt.attempt_id;
        let stale = |message| {
            Ok(Reply::Send(ControllerMessage::Stale {
                attempt_id: id,
                message,
            }))
        };
        // Hash the stored log before taking the lock: it may be large, and no more of
        // it arrives once the agent has sent Finished.
        let execution_id = {
            let st = self.lock();
            if let Some(message) = self.check_holder(&st, agent_id, attempt) {
                return stale(message);
            }
            st.held
                .get(&id)
                .map(|h| h.execution_id.clone())
                .unwrap_or_default()
        };
        let (stored_length, stored_sha) = self.logs.digest(&execution_id, id)?;
        let mut st = self.lock();
        if let Some(message) = self.check_holder(&st, agent_id, attempt) {
            return stale(message);
        }
        let row = self.store.attempt(id)?;
        let declared = self.declared_outputs(&mut st, &row)?;
        let (status, summary, error, variables, artifacts) = match outcome {
            Outcome::Succeeded {
                summary,
                output_variables,
                artifacts,
            } => match self.check_artifacts(artifacts, &declared) {
                Ok(rows) => (
                    "Succeeded",
                    Some(summary.as_str()),
                    None,
                    output_variables.clone(),
                    rows,
                ),
                Err(problem) => ("Failed", None, Some(problem), BTreeMap::new(), Vec::new()),
            },
            Outcome::Failed { message } => (
                "Failed",
                None,
                Some(message.clone()),
                BTreeMap::new(),
                Vec::new(),
            ),
        };
        // The log is whole only if what we stored is exactly what the agent wrote.
        let relative = self.logs.relative_path(&execution_id, id);
        self.store.ensure_log(id, &relative)?;
        let complete = stored_length == log_length && stored_sha == log_sha256;
        self.store
            .finish_log(id, log_length as i64, log_sha256, complete)?;
        if !complete {
            tracing::warn!(
                attempt = id,
                stored_length,
                log_length,
                "Log arrived incomplete."
            );
        }
        self.store.insert_test_cases(id, tests)?;
        if !self.store.finish_attempt(
            id,
            &attempt.fencing_token,
            status,
            summary,
            error.as_deref(),
            &variables,
            &artifacts,
        )? {
            return Ok(Reply::Send(ControllerMessage::Stale {
                attempt_id: id,
                message: "attempt already finished".into(),
            }));
        }
        st.held.remove(&id);
        if let Some(session) = st.sessions.get_mut(agent_id) {
            session.held.remove(&id);
        }
        tracing::info!(attempt = id, status, "Action attempt finished.");
        self.advance(&mut st, &execution_id)?;
        self.dispatch(&mut st)?;
        drop(st);
        self.emit(Event::Execution(execution_id));
        Ok(Reply::Send(ControllerMessage::FinishAck { attempt_id: id }))
    }

    /// The output artifacts the definition declares for an attempt's action.
    fn declared_outputs(&self, st: &mut State, row: &AttemptRow) -> Result<Vec<String>> {
        let execution = self.store.execution(&row.execution_id)?;
        let def = self.definition(st, &execution.pipeline_name, execution.pipeline_version)?;
        Ok(def
            .stages
            .get(row.stage_index as usize)
            .and_then(|stage| stage.actions.iter().find(|a| a.name == row.action_name))
            .map(|action| action.output_artifacts.clone())
            .unwrap_or_default())
    }

    /// Checks reported artifacts: exactly the declared outputs, each stored with the
    /// size reported.
    fn check_artifacts(
        &self,
        artifacts: &[sluice_proto::ArtifactRef],
        declared: &[String],
    ) -> Result<Vec<(String, String, i64)>, String> {
        for artifact in artifacts {
            if !declared.contains(&artifact.name) {
                return Err(format!(
                    "the agent reported an output artifact \"{}\" that this action does not declare",
                    artifact.name
                ));
            }
        }
        for name in declared {
            let count = artifacts.iter().filter(|a| &a.name == name).count();
            if count != 1 {
                return Err(format!(
                    "output artifact \"{name}\" was reported {count} times; expected once"
                ));
            }
        }
        artifacts
            .iter()
            .map(|a| match self.blobs.size(&a.sha256) {
                Ok(Some(size)) if size == a.size => {
                    Ok((a.name.clone(), a.sha256.clone(), size as i64))
                }
                Ok(Some(size)) => Err(format!(
                    "output artifact \"{}\" is stored with {size} bytes but the agent reported {}",
                    a.name, a.size
                )),
                Ok(None) => Err(format!(
                    "output artifact \"{}\" (sha256 {}) was never uploaded",
                    a.name, a.sha256
                )),
                Err(e) => Err(format!("output artifact \"{}\": {e}", a.name)),
            })
            .collect()
    }

    fn fail_held(
        &self,
        st: &mut State,
        id: i64,
        token: &str,
        execution_id: &str,
        message: &str,
    ) -> Result<()> {
        if self.store.end_attempt(id, token, "Failed", message)? {
            tracing::warn!(attempt = id, message, "Action attempt failed.");
            if let Some(row) = self.store.log(id)? {
                self.store.finish_log(id, row.stored_length, "", false)?;
            }
            self.advance(st, execution_id)?;
        }
        Ok(())
    }

    /// Fails attempts whose lease ran out ("agent lost") and withdraws offers nobody
    /// accepted in time. Called periodically.
    pub fn reap(&self) -> Result<()> {
        let mut st = self.lock();
        let now = now_ms();
        let offer_deadline = now - self.settings.offer_timeout.as_millis() as i64;
        let stale_offers: Vec<i64> = st
            .held
            .iter()
            .filter(|(_, h)| h.offered_at_ms.is_some_and(|t| t < offer_deadline))
            .map(|(id, _)| *id)
            .collect();
        for id in stale_offers {
            tracing::warn!(attempt = id, "Offer not accepted in time; requeueing.");
            self.requeue(&mut st, id)?;
        }
        for attempt in self.store.expired_approvals(now)? {
            if self.store.end_attempt(
                attempt.id,
                &attempt.fencing_token,
                "Failed",
                "approval timed out: no one approved or rejected it in time",
            )? {
                self.store
                    .decide_approval(attempt.id, "TimedOut", "sluice", None)?;
                self.advance(&mut st, &attempt.execution_id)?;
                self.emit(Event::Execution(attempt.execution_id.clone()));
            }
        }
        for attempt in self.store.expired_attempts(now)? {
            let agent = attempt.agent_id.clone().unwrap_or_default();
            if let Some(session) = st.sessions.get_mut(&agent) {
                session.held.remove(&attempt.id);
            }
            st.held.remove(&attempt.id);
            let message = format!(
                "agent lost: agent {agent} sent no heartbeat for {}s while running this action",
                self.settings.lease_ttl.as_secs()
            );
            self.fail_held(
                &mut st,
                attempt.id,
                &attempt.fencing_token,
                &attempt.execution_id,
                &message,
            )?;
            self.emit(Event::Execution(attempt.execution_id.clone()));
        }
        self.dispatch(&mut st)
    }

    /// Runs [`Engine::reap`] forever at a fraction of the lease.
    pub async fn run_reaper(self: Arc<Self>) {
        let period =
            (self.settings.lease_ttl / 8).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(period);
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            ticker.tick().await;
            if let Err(e) = self.reap() {
                tracing::error!(error = %e, "Lease reaper failed.");
            }
            if last_sweep.elapsed() >= Duration::from_secs(5) {
                last_sweep = tokio::time::Instant::now();
                if let Err(e) = self.sweep() {
                    tracing::error!(error = %e, "Stalled-execution sweep failed.");
                }
            }
        }
    }

    /// Re-evaluates executions in progress that have nothing queued or held: after an
    /// error between committing a result and moving the execution on (a full disk, say),
    /// nothing else would wake them.
    pub fn sweep(&self) -> Result<()> {
        let mut st = self.lock();
        let busy: HashSet<String> = st
            .queue
            .values()
            .map(|q| q.job.execution_id.clone())
            .chain(st.held.values().map(|h| h.execution_id.clone()))
            .collect();
        for id in self.store.executions_in_progress()? {
            if !busy.contains(&id) {
                self.advance(&mut st, &id)?;
            }
        }
        self.dispatch(&mut st)
    }

    /// Attempts waiting in the queue for an agent, for `/metrics`.
    pub fn queue_depth(&self) -> usize {
        self.lock().queue.len()
    }

    /// Attempts offered to or running on each connected agent, for `agent list`.
    pub fn agent_activity(&self) -> HashMap<String, usize> {
        self.lock()
            .sessions
            .iter()
            .map(|(id, s)| (id.clone(), s.held.len()))
            .collect()
    }

    /// The attempts each connected agent holds (offered or running), by agent id.
    pub fn agent_work(&self) -> HashMap<String, Vec<i64>> {
        self.lock()
            .sessions
            .iter()
            .map(|(id, s)| {
                let mut held: Vec<i64> = s.held.iter().copied().collect();
                held.sort_unstable();
                (id.clone(), held)
            })
            .collect()
    }
}

/// Where the stage called `name` is in a pipeline version, or an error listing its stages.
fn stage_position(def: &Pipeline, version: i64, name: &str) -> Result<usize> {
    def.stages
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = def.stages.iter().map(|s| s.name.as_str()).collect();
            StoreError::NotFound(format!(
                "pipeline {} version {version} has no stage {name} (its stages: {})",
                def.name,
                names.join(", ")
            ))
            .into()
        })
}

/// How long a manual approval waits by default: 7 days, as in CodePipeline.
const APPROVAL_DEFAULT_MINUTES: i64 = 7 * 24 * 60;

/// An HTTPS client for notifications: the system's roots, no redirects.
fn notification_client() -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let built = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .ok()
        .and_then(|tls| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .ok()
        });
    built.unwrap_or_default()
}

/// POSTs a notification, trying three times with a growing pause.
async fn notify(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
        }
        match client.post(url).json(body).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{url} answered {}", r.status()),
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    tracing::warn!(url, error = %last, "Approval notification failed.");
    Err(last)
}

fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// Whether an agent's labels satisfy an action's selector (every key present, equal).
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `k=v,k2=v2`.
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What an attempt runs: an action, or a Commands rule of a stage condition.
struct Work<'a> {
    action_type: sluice_proto::ActionType,
    inputs: &'a [String],
    outputs: &'a [String],
    timeout_in_minutes: Option<u32>,
    selector: &'a BTreeMap<String, String>,
}

/// Replaces every `#{namespace.name}` in `value`.
fn substitute(
    value: &str,
    namespaces: &HashMap<String, BTreeMap<String, String>>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("#{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed variable reference in \"{value}\""));
        };
        let reference = &after[..end];
        let Some((namespace, name)) = reference.split_once('.') else {
            return Err(format!(
                "\"#{{{reference}}}\" must have the form #{{namespace.name}}"
            ));
        };
        let found = namespaces.get(namespace).and_then(|vars| vars.get(name));
        match found {
            Some(v) => out.push_str(v),
            None if namespaces.contains_key(namespace) => {
                return Err(format!(
                    "variable \"{name}\" is not set in namespace \"{namespace}\""
                ));
            }
            None => {
                return Err(format!(
                    "namespace \"{namespace}\" is unknown, or its action has not succeeded earlier in this execution"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_known_variables_and_names_unknown_ones() {
        let mut namespaces = HashMap::new();
        namespaces.insert(
            "codepipeline".to_string(),
            BTreeMap::from([("PipelineExecutionId".to_string(), "abc".to_string())]),
        );
        assert_eq!(
            substitute("id=#{codepipeline.PipelineExecutionId}!", &namespaces).unwrap(),
            "id=abc!"
        );
        assert!(
            substitute("#{Source.CommitId}", &namespaces)
                .unwrap_err()
                .contains("\"Source\"")
        );
        assert!(
            substitute("#{codepipeline.Nope}", &namespaces)
                .unwrap_err()
                .contains("\"Nope\"")
        );
    }

    #[test]
    fn selectors_need_every_label() {
        let labels = BTreeMap::from([
            ("os".to_string(), "linux".to_string()),
            ("arch".to_string(), "x86".to_string()),
        ]);
        assert!(labels_match(&BTreeMap::new(), &labels));
        assert!(labels_match(
            &BTreeMap::from([("os".into(), "linux".into())]),
            &labels
        ));
        assert!(!labels_match(
            &BTreeMap::from([("os".into(), "windows".into())]),
            &labels
        ));
    }
}
