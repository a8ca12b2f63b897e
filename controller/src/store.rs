//! The SQLite store: the only module that touches rusqlite.
//!
//! One connection in WAL mode, guarded by a mutex. State transitions of attempts are
//! compare-and-set statements on `(id, fencing_token, phase)`, so a stale agent can never
//! overwrite a newer attempt. Migrations are numbered SQL files applied in order and
//! recorded in `PRAGMA user_version`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

/// Schema migrations, applied in order. A shipped migration is never edited.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial",
        include_str!("../migrations/0001_initial.sql"),
    ),
    (
        "0002_plugins_secrets_tests",
        include_str!("../migrations/0002_plugins_secrets_tests.sql"),
    ),
    (
        "0003_execution_inputs",
        include_str!("../migrations/0003_execution_inputs.sql"),
    ),
    (
        "0004_stage_retries",
        include_str!("../migrations/0004_stage_retries.sql"),
    ),
    (
        "0005_stage_entry",
        include_str!("../migrations/0005_stage_entry.sql"),
    ),
    ("0006_events", include_str!("../migrations/0006_events.sql")),
    (
        "0007_approvals",
        include_str!("../migrations/0007_approvals.sql"),
    ),
    (
        "0008_trigger_webhooks",
        include_str!("../migrations/0008_trigger_webhooks.sql"),
    ),
    (
        "0009_poll_revisions",
        include_str!("../migrations/0009_poll_revisions.sql"),
    ),
    (
        "0010_stage_conditions",
        include_str!("../migrations/0010_stage_conditions.sql"),
    ),
    (
        "0011_stage_outcomes",
        include_str!("../migrations/0011_stage_outcomes.sql"),
    ),
    (
        "0012_accounts",
        include_str!("../migrations/0012_accounts.sql"),
    ),
    (
        "0013_history_index",
        include_str!("../migrations/0013_history_index.sql"),
    ),
    (
        "0014_agent_drain",
        include_str!("../migrations/0014_agent_drain.sql"),
    ),
];

mod accounts;
mod history;
mod overview;
mod poll_revisions;
mod trigger_webhooks;
pub use accounts::{UserRow, WebSessionRow};
pub use history::{ExecutionFilter, HistoryPage};
pub use overview::{OverviewRow, SourceRun};
pub use trigger_webhooks::{DeliveryRow, TriggerWebhookRow};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON column could not be read back.
    #[error("corrupt JSON in the database: {0}")]
    Json(#[from] serde_json::Error),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    Conflict(String),
    /// The database was written by a newer Sluice.
    #[error(
        "the database schema version {found} is newer than this build knows ({known}); upgrade Sluice"
    )]
    TooNew {
        /// Version found in the file.
        found: usize,
        /// Newest version this build knows.
        known: usize,
    },
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Attempt phases (internal), beside the CodePipeline status.
pub mod phase {
    /// Waiting for an agent.
    pub const QUEUED: &str = "queued";
    /// Offered to an agent, not yet accepted.
    pub const OFFERED: &str = "offered";
    /// Running on an agent.
    pub const RUNNING: &str = "running";
    /// A manual approval waiting for a person (the controller runs it; no agent).
    pub const APPROVAL: &str = "approval";
    /// Finished, one way or another.
    pub const DONE: &str = "done";

    /// Whether an attempt in this phase has started and not finished.
    pub fn in_flight(phase: &str) -> bool {
        matches!(phase, OFFERED | RUNNING | APPROVAL)
    }
}

/// A manual approval.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRow {
    /// The approval's attempt.
    pub attempt_id: i64,
    /// When it times out.
    pub expires_at_ms: i64,
    /// When the notification was delivered.
    pub notified_at_ms: Option<i64>,
    /// Why the notification could not be delivered.
    pub notify_error: Option<String>,
    /// Approved, Rejected or TimedOut.
    pub decision: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at_ms: Option<i64>,
    /// What they said.
    pub comment: Option<String>,
}

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
}

/// A pipeline as listed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSummary {
    /// Name.
    pub name: String,
    /// Current version.
    pub version: i64,
    /// Created, ms since epoch.
    pub created_at_ms: i64,
    /// Last updated, ms since epoch.
    pub updated_at_ms: i64,
}

/// One stored version of a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineVersion {
    /// Name.
    pub name: String,
    /// Version number.
    pub version: i64,
    /// Canonical JSON of the definition.
    pub definition: String,
    /// When this version was stored.
    pub created_at_ms: i64,
}

/// One stored version of a pipeline, as listed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    /// Version number.
    pub version: i64,
    /// When this version was stored, ms since epoch.
    pub created_at_ms: i64,
    /// How many stages its definition has.
    pub stages: usize,
    /// How many actions, over all its stages.
    pub actions: usize,
    /// Whether it is the pipeline's current version.
    pub current: bool,
}

/// An execution row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRow {
    /// Execution id (UUID).
    pub id: String,
    /// Creation order.
    pub seq: i64,
    /// Pipeline name.
    pub pipeline_name: String,
    /// Pipeline version the execution runs.
    pub pipeline_version: i64,
    /// InProgress, Succeeded, Failed, Stopped, Skipped.
    pub status: String,
    /// Why it is in this status, if there is more to say.
    pub status_summary: Option<String>,
    /// What started it.
    pub trigger_type: String,
    /// Who or what, in more detail.
    pub trigger_detail: String,
    /// Start, ms since epoch.
    pub started_at_ms: i64,
    /// End, ms since epoch.
    pub finished_at_ms: Option<i64>,
    /// The pipeline variables it runs with: declared defaults and start overrides.
    pub variables: BTreeMap<String, String>,
    /// Source revisions the start request pinned, by source action name.
    pub source_revisions: BTreeMap<String, String>,
    /// The stage it waits in front of (locked, or its inbound transition disabled).
    pub waiting_for_stage: Option<String>,
    /// STANDARD, or ROLLBACK for an execution that runs one stage again.
    pub execution_type: String,
    /// A ROLLBACK's target: the execution whose artifacts and variables it reuses.
    pub rollback_target: Option<String>,
    /// The position of the one stage a ROLLBACK runs.
    pub rollback_stage: Option<i64>,
}

/// The state of a stage's inbound transition.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionRow {
    /// The stage it leads into.
    pub stage_name: String,
    /// Whether executions may enter the stage.
    pub enabled: bool,
    /// Why it was disabled.
    pub reason: Option<String>,
    /// Who changed it last.
    pub changed_by: String,
    /// When.
    pub changed_at_ms: i64,
}

/// What an execution starts with, beside its pipeline.
#[derive(Debug, Clone, Default)]
pub struct NewExecution<'a> {
    /// What started it, e.g. StartPipelineExecution.
    pub trigger_type: &'a str,
    /// Who or what, in more detail.
    pub trigger_detail: &'a str,
    /// Resolved pipeline variables.
    pub variables: BTreeMap<String, String>,
    /// Source revision overrides by action name.
    pub source_revisions: BTreeMap<String, String>,
    /// The caller's idempotency token.
    pub client_request_token: Option<&'a str>,
    /// For a ROLLBACK: the target execution and the stage it runs.
    pub rollback: Option<(&'a str, i64)>,
}

/// A stage execution row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRow {
    /// Position of the stage in the pipeline.
    pub stage_index: i64,
    /// Stage name.
    pub stage_name: String,
    /// InProgress, Succeeded, Failed, Stopped, Skipped.
    pub status: String,
    /// Start.
    pub started_at_ms: Option<i64>,
    /// End.
    pub finished_at_ms: Option<i64>,
    /// Attempts numbered at or below this belong to runs before a whole-stage retry.
    pub attempt_floor: i64,
    /// How many times the stage was retried by hand.
    pub retries: i64,
    /// How its beforeEntry condition went: Succeeded, Failed, Skipped or Overridden.
    pub condition_status: Option<String>,
    /// What the condition's rules found (or who overrode it).
    pub summary: Option<String>,
    /// Who overrode a failed beforeEntry condition.
    pub overridden_by: Option<String>,
    /// When.
    pub overridden_at_ms: Option<i64>,
    /// How its onSuccess condition went: InProgress, Succeeded, Failed or Overridden.
    pub on_success_status: Option<String>,
    /// What the onSuccess rules found.
    pub on_success_summary: Option<String>,
    /// How its onFailure went: InProgress, Succeeded (result applied), Failed (rules
    /// not met: the stage just fails).
    pub on_failure_status: Option<String>,
    /// What onFailure did, and why.
    pub on_failure_summary: Option<String>,
    /// How many of `retries` onFailure started by itself.
    pub auto_retries: i64,
}

/// An action attempt row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRow {
    /// Attempt id.
    pub id: i64,
    /// Execution id.
    pub execution_id: String,
    /// Stage position.
    pub stage_index: i64,
    /// Action name.
    pub action_name: String,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// The action's runOrder.
    pub run_order: i64,
    /// InProgress, Succeeded, Failed, Stopped, Skipped.
    pub status: String,
    /// queued, offered, running, done.
    pub phase: String,
    /// Fencing token.
    #[serde(skip)]
    pub fencing_token: String,
    /// Agent that holds or held it.
    pub agent_id: Option<String>,
    /// That agent's name (its host name unless set at join), while the agent is known.
    pub agent_name: Option<String>,
    /// Lease end.
    pub lease_expires_at_ms: Option<i64>,
    /// Why it waits, while it waits.
    pub waiting_reason: Option<String>,
    /// Configuration with variables resolved.
    pub resolved_configuration: BTreeMap<String, String>,
    /// Output variables.
    pub output_variables: BTreeMap<String, String>,
    /// Summary on success.
    pub summary: Option<String>,
    /// Error on failure.
    pub error: Option<String>,
    /// Queued at.
    pub queued_at_ms: i64,
    /// Started at.
    pub started_at_ms: Option<i64>,
    /// Finished at.
    pub finished_at_ms: Option<i64>,
    /// For a Commands rule run (not an action): beforeEntry, onSuccess or onFailure.
    pub rule_condition: Option<String>,
}

/// An artifact row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRow {
    /// Artifact name.
    pub name: String,
    /// Hex sha256 of the archive.
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
    /// The attempt that produced it.
    pub attempt_id: i64,
}

/// A log index row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRow {
    /// Attempt id.
    pub attempt_id: i64,
    /// Path relative to the data dir.
    pub path: String,
    /// Bytes stored.
    pub stored_length: i64,
    /// Length the agent reported at the end.
    pub reported_length: Option<i64>,
    /// Whether the log arrived whole (None while running).
    pub complete: Option<bool>,
}

/// An agent row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    /// Agent id.
    pub id: String,
    /// Host name the agent gave.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Labels its join token gave it; the agent cannot change these.
    #[serde(skip)]
    pub granted_labels: BTreeMap<String, String>,
    /// Parallel actions.
    pub capacity: i64,
    /// Software version.
    pub version: Option<String>,
    /// sha256 of its client certificate.
    #[serde(skip)]
    pub cert_fingerprint: String,
    /// registered, online, offline, revoked.
    pub state: String,
    /// Drained: it finishes what it runs and gets no new work.
    pub drained: bool,
    /// Joined at.
    pub registered_at_ms: i64,
    /// Last heartbeat.
    pub last_heartbeat_ms: Option<i64>,
}

/// A finished action attempt, as `/metrics` counts it.
#[derive(Debug, Clone)]
pub struct FinishedAttempt {
    /// Pipeline name.
    pub pipeline_name: String,
    /// Pipeline version the execution ran.
    pub pipeline_version: i64,
    /// Stage position.
    pub stage_index: i64,
    /// Action name.
    pub action_name: String,
    /// Succeeded, Failed, Abandoned, ...
    pub status: String,
    /// From start to end, in milliseconds.
    pub duration_ms: i64,
}

/// A new attempt to insert.
pub struct NewAttempt<'a> {
    /// Execution id.
    pub execution_id: &'a str,
    /// Stage position.
    pub stage_index: i64,
    /// Action name.
    pub action_name: &'a str,
    /// Attempt number.
    pub attempt: i64,
    /// runOrder.
    pub run_order: i64,
    /// Fencing token.
    pub fencing_token: &'a str,
    /// Resolved configuration.
    pub resolved_configuration: &'a BTreeMap<String, String>,
    /// For a Commands rule run: the condition it belongs to.
    pub rule_condition: Option<&'a str>,
}

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory store, for tests.
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL is durable against process crashes, which is what we promise;
        // it saves an fsync per commit (the hot path of every state transition).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Store {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: every
        // multi-statement change runs in a transaction that rolls back on drop.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn();
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let current = current.max(0) as usize;
        if current > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                found: current,
                known: MIGRATIONS.len(),
            });
        }
        for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()?;
            tracing::info!(migration = name, "Applied database migration.");
        }
        Ok(())
    }

    /// Answers a trivial query that reads the schema (for `/readyz`).
    pub fn ping(&self) -> Result<()> {
        let conn = self.conn();
        let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if tables == 0 || version <= 0 {
            return Err(StoreError::NotFound(
                "the database has no schema (migrations not applied)".into(),
            ));
        }
        Ok(())
    }

    // ---- pipelines -------------------------------------------------------------

    /// Stores a new pipeline as version 1.
    pub fn create_pipeline(&self, name: &str, definition: &str) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM pipelines WHERE name = ?1", [name], |_| {
                Ok(true)
            })
            .optional()?
            .unwrap_or(false);
        if exists {
            return Err(StoreError::Conflict(format!(
                "pipeline \"{name}\" already exists; use `sluice pipeline update` to change it"
            )));
        }
        let now = now_ms();
        tx.execute(
            "INSERT INTO pipelines (name, current_version, created_at_ms, updated_at_ms) VALUES (?1, 1, ?2, ?2)",
            params![name, now],
        )?;
        tx.execute(
            "INSERT INTO pipeline_versions (pipeline_name, version, definition, created_at_ms) VALUES (?1, 1, ?2, ?3)",
            params![name, definition, now],
        )?;
        tx.commit()?;
        Ok(1)
    }

    /// Stores a new version of an existing pipeline; old versions are kept.
    pub fn update_pipeline(&self, name: &str, definition: &str) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT current_version FROM pipelines WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!(
                "pipeline \"{name}\" does not exist; use `sluice pipeline create` first"
            )));
        };
        let version = current + 1;
        let now = now_ms();
        tx.execute(
            "INSERT INTO pipeline_versions (pipeline_name, version, definition, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name, version, definition, now],
        )?;
        tx.execute(
            "UPDATE pipelines SET current_version = ?2, updated_at_ms = ?3 WHERE name = ?1",
            params![name, version, now],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// A pipeline's current version number.
    pub fn current_version(&self, name: &str) -> Result<i64> {
        self.conn()
            .query_row(
                "SELECT current_version FROM pipelines WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("pipeline \"{name}\" does not exist")))
    }

    /// A stored version of a pipeline (the current one if `version` is None).
    pub fn pipeline_version(&self, name: &str, version: Option<i64>) -> Result<PipelineVersion> {
        let conn = self.conn();
        let row = match version {
            Some(v) => conn
                .query_row(
                    "SELECT pipeline_name, version, definition, created_at_ms FROM pipeline_versions
                     WHERE pipeline_name = ?1 AND version = ?2",
                    params![name, v],
                    pipeline_version_from_row,
                )
                .optional()?,
            None => conn
                .query_row(
                    "SELECT v.pipeline_name, v.version, v.definition, v.created_at_ms
                     FROM pipelines p JOIN pipeline_versions v
                       ON v.pipeline_name = p.name AND v.version = p.current_version
                     WHERE p.name = ?1",
                    [name],
                    pipeline_version_from_row,
                )
                .optional()?,
        };
        row.ok_or_else(|| match version {
            Some(v) => StoreError::NotFound(format!("pipeline \"{name}\" has no version {v}")),
            None => StoreError::NotFound(format!("pipeline \"{name}\" does not exist")),
        })
    }

    /// All pipelines, by name.
    pub fn list_pipelines(&self) -> Result<Vec<PipelineSummary>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, current_version, created_at_ms, updated_at_ms FROM pipelines ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PipelineSummary {
                name: r.get(0)?,
                version: r.get(1)?,
                created_at_ms: r.get(2)?,
                updated_at_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every stored version of a pipeline, newest first.
    pub fn pipeline_versions(&self, name: &str) -> Result<Vec<VersionSummary>> {
        let conn = self.conn();
        let current: Option<i64> = conn
            .query_row(
                "SELECT current_version FROM pipelines WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!(
                "pipeline \"{name}\" does not exist; see `sluice pipeline list`"
            )));
        };
        let mut stmt = conn.prepare(
            "SELECT version, created_at_ms, definition FROM pipeline_versions
             WHERE pipeline_name = ?1 ORDER BY version DESC",
        )?;
        let rows = stmt.query_map([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (version, created_at_ms, definition) = row?;
            let definition: serde_json::Value = serde_json::from_str(&definition)?;
            let stages = definition["stages"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            out.push(VersionSummary {
                version,
                created_at_ms,
                stages: stages.len(),
                actions: stages
                    .iter()
                    .map(|s| s["actions"].as_array().map_or(0, Vec::len))
                    .sum(),
                current: version == current,
            });
        }
        Ok(out)
    }

    // ---- executions ------------------------------------------------------------

    /// Records a new execution (InProgress).
    pub fn insert_execution(
        &self,
        id: &str,
        pipeline: &str,
        version: i64,
        new: &NewExecution<'_>,
    ) -> Result<ExecutionRow> {
        let conn = self.conn();
        let now = now_ms();
        conn.execute(
            "INSERT INTO executions (id, seq, pipeline_name, pipeline_version, status, trigger_type,
                 trigger_detail, started_at_ms, variables, source_revisions, client_request_token,
                 execution_type, rollback_target, rollback_stage)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM executions), ?2, ?3, 'InProgress',
                 ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                id,
                pipeline,
                version,
                new.trigger_type,
                new.trigger_detail,
                now,
                serde_json::to_string(&new.variables)?,
                serde_json::to_string(&new.source_revisions)?,
                new.client_request_token,
                if new.rollback.is_some() { "ROLLBACK" } else { "STANDARD" },
                new.rollback.map(|(target, _)| target),
                new.rollback.map(|(_, stage)| stage)
            ],
        )?;
        conn.query_row(EXECUTION_SELECT_BY_ID, [id], execution_from_row)
            .map_err(StoreError::from)
    }

    /// The execution of `pipeline` started with this idempotency token, if any.
    pub fn execution_by_token(&self, pipeline: &str, token: &str) -> Result<Option<ExecutionRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "{EXECUTION_SELECT} WHERE pipeline_name = ?1 AND client_request_token = ?2"
                ),
                params![pipeline, token],
                execution_from_row,
            )
            .optional()?)
    }

    /// One execution.
    pub fn execution(&self, id: &str) -> Result<ExecutionRow> {
        self.conn()
            .query_row(EXECUTION_SELECT_BY_ID, [id], execution_from_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("execution \"{id}\" does not exist")))
    }

    /// Executions, newest first, optionally of one pipeline; `before_seq` pages back.
    pub fn list_executions(
        &self,
        pipeline: Option<&str>,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ExecutionRow>> {
        // One statement per filter combination, so SQLite uses the pipeline's index
        // (`?1 IS NULL OR pipeline_name = ?1` would scan every pipeline's executions).
        let filter = ExecutionFilter {
            pipeline,
            ..ExecutionFilter::default()
        };
        let page = before_seq.map_or(HistoryPage::Newest, HistoryPage::Before);
        self.execution_history(&filter, page, limit)
    }

    /// How many executions each pipeline has in each status (for `/metrics`).
    pub fn execution_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pipeline_name, status, COUNT(*) FROM executions
             GROUP BY pipeline_name, status ORDER BY pipeline_name, status",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The most recent `limit` action attempts (not rule runs) that started and
    /// finished, newest first, for `/metrics`.
    pub fn finished_attempt_durations(&self, limit: i64) -> Result<Vec<FinishedAttempt>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT e.pipeline_name, e.pipeline_version, a.stage_index, a.action_name, a.status,
                    a.finished_at_ms - a.started_at_ms
             FROM action_attempts a JOIN executions e ON e.id = a.execution_id
             WHERE a.phase = 'done' AND a.started_at_ms IS NOT NULL
                   AND a.finished_at_ms IS NOT NULL AND a.rule_condition IS NULL
             ORDER BY a.id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(FinishedAttempt {
                pipeline_name: r.get(0)?,
                pipeline_version: r.get(1)?,
                stage_index: r.get(2)?,
                action_name: r.get(3)?,
                status: r.get(4)?,
                duration_ms: r.get::<_, i64>(5)?.max(0),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Ids of executions still in progress, oldest first.
    pub fn executions_in_progress(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM executions WHERE status IN ('InProgress', 'Stopping') ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets an execution's status and summary; a terminal status also sets the end time.
    pub fn set_execution_status(
        &self,
        id: &str,
        status: &str,
        summary: Option<&str>,
    ) -> Result<()> {
        let finished = !matches!(status, "InProgress" | "Stopping");
        let finished = finished.then(now_ms);
        // An execution that ends waits in front of nothing any more.
        self.conn().execute(
            "UPDATE executions SET status = ?2, status_summary = ?3,
                 finished_at_ms = COALESCE(?4, finished_at_ms),
                 waiting_for_stage = CASE WHEN ?4 IS NULL THEN waiting_for_stage END
             WHERE id = ?1",
            params![id, status, summary, finished],
        )?;
        Ok(())
    }

    /// Sets only the summary of an execution (e.g. why it waits).
    pub fn set_execution_summary(&self, id: &str, summary: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE executions SET status_summary = ?2 WHERE id = ?1 AND status = 'InProgress'",
            params![id, summary],
        )?;
        Ok(())
    }

    // ---- stages ----------------------------------------------------------------

    /// The stage executions of an execution, in pipeline order.
    pub fn stages(&self, execution_id: &str) -> Result<Vec<StageRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{STAGE_SELECT} WHERE execution_id = ?1 ORDER BY stage_index"
        ))?;
        let rows = stmt.query_map([execution_id], stage_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Starts a stage execution.
    pub fn insert_stage(&self, execution_id: &str, index: i64, name: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO stage_executions (execution_id, stage_index, stage_name, status, started_at_ms)
             VALUES (?1, ?2, ?3, 'InProgress', ?4)",
            params![execution_id, index, name, now_ms()],
        )?;
        Ok(())
    }

    /// Ends a stage execution.
    pub fn finish_stage(&self, execution_id: &str, index: i64, status: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE stage_executions SET status = ?3, finished_at_ms = ?4 WHERE execution_id = ?1 AND stage_index = ?2",
            params![execution_id, index, status, now_ms()],
        )?;
        Ok(())
    }

    /// Records how one of a stage's conditions (`beforeEntry`, `onSuccess` or
    /// `onFailure`) went, and why.
    pub fn set_stage_condition(
        &self,
        execution_id: &str,
        index: i64,
        kind: &str,
        condition_status: &str,
        summary: &str,
    ) -> Result<()> {
        let (status_column, summary_column) = match kind {
            "onSuccess" => ("on_success_status", "on_success_summary"),
            "onFailure" => ("on_failure_status", "on_failure_summary"),
            _ => ("condition_status", "summary"),
        };
        self.conn().execute(
            &format!(
                "UPDATE stage_executions SET {status_column} = ?3, {summary_column} = ?4
                 WHERE execution_id = ?1 AND stage_index = ?2"
            ),
            params![execution_id, index, condition_status, summary],
        )?;
        Ok(())
    }

    /// Puts a finished execution back in progress, and the stage whose `beforeEntry`
    /// or `onSuccess` condition (`kind`) failed in it, recording who overrode it.
    pub fn override_condition(
        &self,
        execution_id: &str,
        stage_index: i64,
        kind: &str,
        who: &str,
    ) -> Result<()> {
        let (status_column, summary_column) = match kind {
            "onSuccess" => ("on_success_status", "on_success_summary"),
            _ => ("condition_status", "summary"),
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE executions SET status = 'InProgress', status_summary = NULL, finished_at_ms = NULL
             WHERE id = ?1",
            [execution_id],
        )?;
        let summary = format!("{kind} condition overridden by {who}");
        tx.execute(
            &format!(
                "UPDATE stage_executions SET status = 'InProgress', finished_at_ms = NULL,
                     {status_column} = 'Overridden',
                     {summary_column} = ?4 || CASE WHEN {summary_column} IS NULL THEN ''
                         ELSE ' (it had failed: ' || {summary_column} || ')' END,
                     overridden_by = ?3, overridden_at_ms = ?5
                 WHERE execution_id = ?1 AND stage_index = ?2"
            ),
            params![execution_id, stage_index, who, summary, now_ms()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest execution of `pipeline` that entered stage `stage_index`.
    pub fn newest_in_stage(
        &self,
        pipeline: &str,
        stage_index: i64,
    ) -> Result<Option<ExecutionRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "{EXECUTION_SELECT} WHERE pipeline_name = ?1
                         AND id IN (SELECT execution_id FROM stage_executions WHERE stage_index = ?2)
                     ORDER BY seq DESC LIMIT 1"
                ),
                params![pipeline, stage_index],
                execution_from_row,
            )
            .optional()?)
    }

    /// The newest STANDARD execution of `pipeline` at `version` (older than `before_seq`,
    /// if given) whose stage `stage_index` succeeded: what a rollback goes back to.
    pub fn last_succeeded_in_stage(
        &self,
        pipeline: &str,
        version: i64,
        stage_index: i64,
        before_seq: Option<i64>,
    ) -> Result<Option<ExecutionRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "{EXECUTION_SELECT} WHERE pipeline_name = ?1 AND pipeline_version = ?2
                         AND execution_type = 'STANDARD' AND (?4 IS NULL OR seq < ?4)
                         AND id IN (SELECT execution_id FROM stage_executions
                                    WHERE stage_index = ?3 AND status = 'Succeeded')
                     ORDER BY seq DESC LIMIT 1"
                ),
                params![pipeline, version, stage_index, before_seq],
                execution_from_row,
            )
            .optional()?)
    }

    /// Puts a finished execution and one of its stages back in progress for a retry;
    /// `attempt_floor` hides the stage's earlier attempts (whole-stage retry). The
    /// stage's onSuccess and onFailure are checked again when it next ends.
    pub fn reopen_for_retry(
        &self,
        execution_id: &str,
        stage_index: i64,
        attempt_floor: i64,
        automatic: bool,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE executions SET status = 'InProgress', status_summary = NULL, finished_at_ms = NULL
             WHERE id = ?1",
            [execution_id],
        )?;
        tx.execute(
            "UPDATE stage_executions SET status = 'InProgress', finished_at_ms = NULL,
                 attempt_floor = ?3, retries = retries + 1, auto_retries = auto_retries + ?4,
                 on_success_status = NULL, on_success_summary = NULL,
                 on_failure_status = NULL, on_failure_summary = NULL
             WHERE execution_id = ?1 AND stage_index = ?2",
            params![
                execution_id,
                stage_index,
                attempt_floor,
                i64::from(automatic)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records the stage an execution waits in front of (None: it waits for nothing),
    /// with the reason as its status summary.
    pub fn set_waiting(&self, id: &str, stage: Option<&str>, summary: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE executions SET waiting_for_stage = ?2, status_summary = ?3 WHERE id = ?1",
            params![id, stage, summary],
        )?;
        Ok(())
    }

    /// An execution of `pipeline` other than `except` that is inside the stage.
    pub fn stage_occupant(
        &self,
        pipeline: &str,
        stage: &str,
        except: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT e.id FROM executions e JOIN stage_executions s ON s.execution_id = e.id
                 WHERE e.pipeline_name = ?1 AND s.stage_name = ?2 AND s.status = 'InProgress'
                   AND e.status IN ('InProgress', 'Stopping') AND e.id != ?3
                 ORDER BY e.seq LIMIT 1",
                params![pipeline, stage, except],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Executions of `pipeline` in progress and waiting in front of a stage (`stage`, or
    /// any), oldest first.
    pub fn waiting_executions(
        &self,
        pipeline: &str,
        stage: Option<&str>,
    ) -> Result<Vec<ExecutionRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{EXECUTION_SELECT} WHERE pipeline_name = ?1 AND status = 'InProgress'
                 AND waiting_for_stage IS NOT NULL AND (?2 IS NULL OR waiting_for_stage = ?2)
             ORDER BY seq"
        ))?;
        let rows = stmt.query_map(params![pipeline, stage], execution_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The recorded state of every inbound transition of a pipeline that was changed.
    pub fn transitions(&self, pipeline: &str) -> Result<Vec<TransitionRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT stage_name, enabled, reason, changed_by, changed_at_ms FROM transitions
             WHERE pipeline_name = ?1 ORDER BY stage_name",
        )?;
        let rows = stmt.query_map([pipeline], |r| {
            Ok(TransitionRow {
                stage_name: r.get(0)?,
                enabled: r.get(1)?,
                reason: r.get(2)?,
                changed_by: r.get(3)?,
                changed_at_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Enables or disables the transition into a stage, recording who and why.
    pub fn set_transition(
        &self,
        pipeline: &str,
        stage: &str,
        enabled: bool,
        reason: Option<&str>,
        who: &str,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO transitions (pipeline_name, stage_name, enabled, reason, changed_by, changed_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(pipeline_name, stage_name) DO UPDATE SET enabled = ?3, reason = ?4,
                 changed_by = ?5, changed_at_ms = ?6",
            params![pipeline, stage, enabled, reason, who, now_ms()],
        )?;
        Ok(())
    }

    /// Moves a queued attempt to waiting for approval, with its deadline.
    pub fn open_approval(&self, id: i64, token: &str, expires_at_ms: i64) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE action_attempts SET phase = 'approval', waiting_reason = NULL,
                 started_at_ms = COALESCE(started_at_ms, ?3)
             WHERE id = ?1 AND fencing_token = ?2 AND phase = 'queued'",
            params![id, token, now_ms()],
        )?;
        if changed == 1 {
            tx.execute(
                "INSERT OR REPLACE INTO approvals (attempt_id, expires_at_ms) VALUES (?1, ?2)",
                params![id, expires_at_ms],
            )?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Records how the approval's notification went.
    pub fn approval_notified(&self, id: i64, error: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE approvals SET notified_at_ms = CASE WHEN ?2 IS NULL THEN ?3 END,
                 notify_error = ?2 WHERE attempt_id = ?1",
            params![id, error, now_ms()],
        )?;
        Ok(())
    }

    /// Records a decision on an approval.
    pub fn decide_approval(
        &self,
        id: i64,
        decision: &str,
        who: &str,
        comment: Option<&str>,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE approvals SET decision = ?2, decided_by = ?3, decided_at_ms = ?4, comment = ?5
             WHERE attempt_id = ?1",
            params![id, decision, who, now_ms(), comment],
        )?;
        Ok(())
    }

    /// The approvals of an execution, by attempt id.
    pub fn approvals(&self, execution_id: &str) -> Result<BTreeMap<i64, ApprovalRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.attempt_id, p.expires_at_ms, p.notified_at_ms, p.notify_error, p.decision,
                    p.decided_by, p.decided_at_ms, p.comment
             FROM approvals p JOIN action_attempts a ON a.id = p.attempt_id
             WHERE a.execution_id = ?1",
        )?;
        let rows = stmt.query_map([execution_id], |r| {
            Ok(ApprovalRow {
                attempt_id: r.get(0)?,
                expires_at_ms: r.get(1)?,
                notified_at_ms: r.get(2)?,
                notify_error: r.get(3)?,
                decision: r.get(4)?,
                decided_by: r.get(5)?,
                decided_at_ms: r.get(6)?,
                comment: r.get(7)?,
            })
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let row = row?;
            out.insert(row.attempt_id, row);
        }
        Ok(out)
    }

    /// Pending approvals past their deadline.
    pub fn expired_approvals(&self, now: i64) -> Result<Vec<AttemptRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{ATTEMPT_SELECT} WHERE phase = 'approval'
                 AND id IN (SELECT attempt_id FROM approvals WHERE expires_at_ms < ?1)"
        ))?;
        let rows = stmt.query_map([now], attempt_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether an execution of the same pipeline newer than this one reached the stage.
    pub fn newer_execution_in_stage(
        &self,
        execution: &ExecutionRow,
        stage_index: i64,
    ) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT e.id FROM executions e JOIN stage_executions s ON s.execution_id = e.id
                 WHERE e.pipeline_name = ?1 AND e.seq > ?2 AND s.stage_index = ?3
                 ORDER BY e.seq DESC LIMIT 1",
                params![execution.pipeline_name, execution.seq, stage_index],
                |r| r.get(0),
            )
            .optional()?)
    }

    // ---- attempts --------------------------------------------------------------

    /// Queues a new attempt of an action; returns its id.
    pub fn insert_attempt(&self, new: &NewAttempt<'_>) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO action_attempts (execution_id, stage_index, action_name, attempt, run_order, status, phase,
                                          fencing_token, resolved_configuration, queued_at_ms, rule_condition)
             VALUES (?1, ?2, ?3, ?4, ?5, 'InProgress', 'queued', ?6, ?7, ?8, ?9)",
            params![
                new.execution_id,
                new.stage_index,
                new.action_name,
                new.attempt,
                new.run_order,
                new.fencing_token,
                serde_json::to_string(new.resolved_configuration)?,
                now_ms(),
                new.rule_condition
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// One attempt.
    pub fn attempt(&self, id: i64) -> Result<AttemptRow> {
        self.conn()
            .query_row(
                &format!("{ATTEMPT_SELECT} WHERE id = ?1"),
                [id],
                attempt_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("attempt {id} does not exist")))
    }

    /// Every attempt of an execution, in stage, action and attempt order.
    pub fn attempts(&self, execution_id: &str) -> Result<Vec<AttemptRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{ATTEMPT_SELECT} WHERE execution_id = ?1 ORDER BY stage_index, run_order, action_name, attempt"
        ))?;
        let rows = stmt.query_map([execution_id], attempt_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Attempts not yet done, oldest first (for a restart).
    pub fn open_attempts(&self) -> Result<Vec<AttemptRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{ATTEMPT_SELECT} WHERE phase <> 'done' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], attempt_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Compare-and-set of an attempt's phase: applies only if the token matches and the
    /// phase is one of `from`. Returns whether it applied.
    pub fn move_attempt(
        &self,
        id: i64,
        token: &str,
        from: &[&str],
        to: &str,
        agent_id: Option<&str>,
        lease_expires_at_ms: Option<i64>,
    ) -> Result<bool> {
        let conn = self.conn();
        let started = (to == phase::RUNNING).then(now_ms);
        let changed = conn.execute(
            "UPDATE action_attempts
             SET phase = ?3, agent_id = ?4, lease_expires_at_ms = ?5, waiting_reason = NULL,
                 started_at_ms = COALESCE(started_at_ms, ?6)
             WHERE id = ?1 AND fencing_token = ?2 AND phase IN (SELECT value FROM json_each(?7))",
            params![
                id,
                token,
                to,
                agent_id,
                lease_expires_at_ms,
                started,
                serde_json::to_string(from)?
            ],
        )?;
        Ok(changed == 1)
    }

    /// Ends an attempt if it is still open and the token matches. Returns whether it applied.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_attempt(
        &self,
        id: i64,
        token: &str,
        status: &str,
        summary: Option<&str>,
        error: Option<&str>,
        output_variables: &BTreeMap<String, String>,
        artifacts: &[(String, String, i64)],
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_ms();
        let changed = tx.execute(
            "UPDATE action_attempts
             SET status = ?3, phase = 'done', summary = ?4, error = ?5, output_variables = ?6,
                 finished_at_ms = ?7, lease_expires_at_ms = NULL, waiting_reason = NULL
             WHERE id = ?1 AND fencing_token = ?2 AND phase <> 'done'",
            params![
                id,
                token,
                status,
                summary,
                error,
                serde_json::to_string(output_variables)?,
                now
            ],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        for (name, sha256, size) in artifacts {
            tx.execute(
                "INSERT OR REPLACE INTO artifacts (execution_id, name, sha256, size, attempt_id, created_at_ms)
                 SELECT execution_id, ?2, ?3, ?4, id, ?5 FROM action_attempts WHERE id = ?1",
                params![id, name, sha256, size, now],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Ends an open attempt without a result: Failed or Abandoned, with the reason.
    /// Returns whether it applied.
    pub fn end_attempt(&self, id: i64, token: &str, status: &str, reason: &str) -> Result<bool> {
        self.finish_attempt(id, token, status, None, Some(reason), &BTreeMap::new(), &[])
    }

    /// Renews the leases of the listed attempts if `agent_id` holds them, and the
    /// agent's heartbeat time.
    pub fn renew_leases(
        &self,
        agent_id: &str,
        attempt_ids: &[i64],
        lease_expires_at_ms: i64,
    ) -> Result<()> {
        let conn = self.conn();
        if !attempt_ids.is_empty() {
            conn.execute(
                "UPDATE action_attempts SET lease_expires_at_ms = ?2
                 WHERE agent_id = ?1 AND phase IN ('offered', 'running')
                   AND id IN (SELECT value FROM json_each(?3))",
                params![
                    agent_id,
                    lease_expires_at_ms,
                    serde_json::to_string(attempt_ids)?
                ],
            )?;
        }
        conn.execute(
            "UPDATE agents SET last_heartbeat_ms = ?2 WHERE id = ?1",
            params![agent_id, now_ms()],
        )?;
        Ok(())
    }

    /// Puts an offered attempt back in the queue under a new fencing token. Returns
    /// whether it applied (the attempt was still offered with `old_token`).
    pub fn requeue_attempt(&self, id: i64, old_token: &str, new_token: &str) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE action_attempts
             SET phase = 'queued', fencing_token = ?3, agent_id = NULL, lease_expires_at_ms = NULL
             WHERE id = ?1 AND fencing_token = ?2 AND phase = 'offered'",
            params![id, old_token, new_token],
        )?;
        Ok(changed == 1)
    }

    /// Gives every held attempt a fresh lease (after a controller restart).
    pub fn renew_all_leases(&self, lease_expires_at_ms: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE action_attempts SET lease_expires_at_ms = ?1 WHERE phase IN ('offered', 'running')",
            [lease_expires_at_ms],
        )?;
        Ok(())
    }

    /// Held attempts whose lease ran out.
    pub fn expired_attempts(&self, now: i64) -> Result<Vec<AttemptRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{ATTEMPT_SELECT} WHERE phase IN ('offered', 'running') AND lease_expires_at_ms < ?1"
        ))?;
        let rows = stmt.query_map([now], attempt_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records why a queued attempt waits (None clears it).
    pub fn set_waiting_reason(&self, id: i64, reason: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE action_attempts SET waiting_reason = ?2 WHERE id = ?1 AND phase = 'queued'",
            params![id, reason],
        )?;
        Ok(())
    }

    // ---- artifacts and logs ----------------------------------------------------

    /// The artifacts of an execution.
    pub fn artifacts(&self, execution_id: &str) -> Result<Vec<ArtifactRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, sha256, size, attempt_id FROM artifacts WHERE execution_id = ?1 ORDER BY created_at_ms, name",
        )?;
        let rows = stmt.query_map([execution_id], |r| {
            Ok(ArtifactRow {
                name: r.get(0)?,
                sha256: r.get(1)?,
                size: r.get(2)?,
                attempt_id: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Registers the log file of an attempt (idempotent).
    pub fn ensure_log(&self, attempt_id: i64, path: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO logs (attempt_id, path, stored_length) VALUES (?1, ?2, 0)",
            params![attempt_id, path],
        )?;
        Ok(())
    }

    /// Records how many bytes of an attempt's log are stored.
    pub fn set_log_length(&self, attempt_id: i64, stored_length: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE logs SET stored_length = ?2 WHERE attempt_id = ?1",
            params![attempt_id, stored_length],
        )?;
        Ok(())
    }

    /// Records the agent's final word on a log and whether the stored copy matches it.
    pub fn finish_log(
        &self,
        attempt_id: i64,
        length: i64,
        sha256: &str,
        complete: bool,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE logs SET reported_length = ?2, reported_sha256 = ?3, complete = ?4 WHERE attempt_id = ?1",
            params![attempt_id, length, sha256, complete],
        )?;
        Ok(())
    }

    /// The log index row of an attempt.
    pub fn log(&self, attempt_id: i64) -> Result<Option<LogRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT attempt_id, path, stored_length, reported_length, complete FROM logs WHERE attempt_id = ?1",
                [attempt_id],
                |r| {
                    Ok(LogRow {
                        attempt_id: r.get(0)?,
                        path: r.get(1)?,
                        stored_length: r.get(2)?,
                        reported_length: r.get(3)?,
                        complete: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    // ---- agents and tokens -----------------------------------------------------

    /// Stores a join token's hash.
    pub fn insert_join_token(
        &self,
        sha256: &str,
        labels: &BTreeMap<String, String>,
        expires_at_ms: i64,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO join_tokens (token_sha256, labels, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![sha256, serde_json::to_string(labels)?, now_ms(), expires_at_ms],
        )?;
        Ok(())
    }

    /// Uses up a join token and registers the agent, atomically. The error says why a
    /// token was refused.
    pub fn join_agent(
        &self,
        token_sha256: &str,
        agent: &AgentRow,
    ) -> Result<BTreeMap<String, String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let token: Option<(String, i64, Option<i64>)> = tx
            .query_row(
                "SELECT labels, expires_at_ms, used_at_ms FROM join_tokens WHERE token_sha256 = ?1",
                [token_sha256],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let now = now_ms();
        let labels = match token {
            None => {
                return Err(StoreError::NotFound(
                    "the join token is not valid; create one with `sluice agent token create`"
                        .into(),
                ));
            }
            Some((_, _, Some(_))) => {
                return Err(StoreError::Conflict(
                    "the join token was already used; tokens are single-use, create a new one with `sluice agent token create`".into(),
                ));
            }
            Some((_, expires, None)) if expires <= now => {
                return Err(StoreError::Conflict(
                    "the join token has expired; create a new one with `sluice agent token create`"
                        .into(),
                ));
            }
            Some((labels, _, None)) => labels,
        };
        let granted: BTreeMap<String, String> = serde_json::from_str(&labels)?;
        let mut merged: BTreeMap<String, String> = agent.labels.clone();
        merged.extend(granted.clone());
        tx.execute(
            "UPDATE join_tokens SET used_at_ms = ?2, used_by_agent = ?3 WHERE token_sha256 = ?1",
            params![token_sha256, now, agent.id],
        )?;
        tx.execute(
            "INSERT INTO agents (id, name, labels, granted_labels, capacity, version, cert_fingerprint, state, registered_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'registered', ?8)",
            params![
                agent.id,
                agent.name,
                serde_json::to_string(&merged)?,
                serde_json::to_string(&granted)?,
                agent.capacity,
                agent.version,
                agent.cert_fingerprint,
                now
            ],
        )?;
        tx.commit()?;
        Ok(merged)
    }

    /// The agent whose client certificate has this fingerprint.
    pub fn agent_by_fingerprint(&self, fingerprint: &str) -> Result<Option<AgentRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!("{AGENT_SELECT} WHERE cert_fingerprint = ?1"),
                [fingerprint],
                agent_from_row,
            )
            .optional()?)
    }

    /// All agents.
    pub fn list_agents(&self) -> Result<Vec<AgentRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{AGENT_SELECT} ORDER BY registered_at_ms"))?;
        let rows = stmt.query_map([], agent_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records what an agent said in its Hello.
    pub fn agent_connected(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
        capacity: i64,
        version: &str,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE agents SET labels = ?2, capacity = ?3, version = ?4, state = 'online', last_heartbeat_ms = ?5
             WHERE id = ?1",
            params![id, serde_json::to_string(labels)?, capacity, version, now_ms()],
        )?;
        Ok(())
    }

    /// Drains an agent (no new work) or puts it back to work.
    pub fn set_agent_drained(&self, id: &str, drained: bool) -> Result<()> {
        self.conn().execute(
            "UPDATE agents SET drained = ?2 WHERE id = ?1",
            params![id, drained],
        )?;
        Ok(())
    }

    /// Marks an agent offline, unless it was revoked (which stays).
    pub fn mark_agent_offline(&self, id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE agents SET state = 'offline' WHERE id = ?1 AND state != 'revoked'",
            [id],
        )?;
        Ok(())
    }

    /// One agent.
    pub fn agent(&self, id: &str) -> Result<AgentRow> {
        self.conn()
            .query_row(
                &format!("{AGENT_SELECT} WHERE id = ?1"),
                [id],
                agent_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("agent \"{id}\" does not exist")))
    }

    /// Sets an agent's state.
    pub fn set_agent_state(&self, id: &str, state: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE agents SET state = ?2 WHERE id = ?1",
            params![id, state],
        )?;
        Ok(())
    }

    /// How many agents are in each state (for `/metrics`).
    pub fn agent_counts(&self) -> Result<BTreeMap<String, i64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM agents GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks every agent offline (at controller start, before any session exists).
    pub fn mark_agents_offline(&self) -> Result<()> {
        self.conn().execute(
            "UPDATE agents SET state = 'offline' WHERE state = 'online'",
            [],
        )?;
        Ok(())
    }

    /// Stores an API token's hash.
    pub fn insert_api_token(&self, sha256: &str, name: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO api_tokens (token_sha256, name, created_at_ms) VALUES (?1, ?2, ?3)",
            params![sha256, name, now_ms()],
        )?;
        Ok(())
    }

    /// The name of the API token with this hash, if it exists.
    pub fn api_token(&self, sha256: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name FROM api_tokens WHERE token_sha256 = ?1",
                [sha256],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// An installed plugin as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginRow {
    /// Plugin id.
    pub id: String,
    /// Plugin version.
    pub version: String,
    /// sha256 of the WASM component.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: i64,
    /// `plugin.toml` as installed.
    pub manifest: String,
    /// What the operator granted.
    pub grants: sluice_proto::Grants,
    /// Shipped with Sluice (cannot be removed).
    pub builtin: bool,
    /// When it was installed.
    pub installed_at_ms: i64,
}

/// A stored secret: its name, and its value encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    /// The name.
    pub name: String,
    /// AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// The encrypted value.
    pub ciphertext: Vec<u8>,
    /// When it was first set.
    pub created_at_ms: i64,
    /// When it was last set.
    pub updated_at_ms: i64,
}

impl Store {
    // ---- plugins ---------------------------------------------------------------

    /// Installs a plugin version; `replace` allows overwriting the same id and version
    /// (built-ins are refreshed this way at every start).
    pub fn put_plugin(&self, row: &PluginRow, replace: bool) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: Option<bool> = tx
            .query_row(
                "SELECT builtin FROM plugins WHERE id = ?1 AND version = ?2",
                params![row.id, row.version],
                |r| r.get(0),
            )
            .optional()?;
        match exists {
            Some(true) if !row.builtin => {
                return Err(StoreError::Conflict(format!(
                    "plugin {} version {} is built into Sluice and cannot be replaced; give yours another id",
                    row.id, row.version
                )));
            }
            Some(_) if !replace => {
                return Err(StoreError::Conflict(format!(
                    "plugin {} version {} is already installed; remove it first \
                     (`sluice plugin remove {} --version {}`) or install a new version",
                    row.id, row.version, row.id, row.version
                )));
            }
            _ => {}
        }
        tx.execute(
            "INSERT OR REPLACE INTO plugins (id, version, sha256, size, manifest, grants, builtin, installed_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                row.id,
                row.version,
                row.sha256,
                row.size,
                row.manifest,
                serde_json::to_string(&row.grants)?,
                row.builtin,
                row.installed_at_ms
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every installed plugin, by id then version.
    pub fn list_plugins(&self) -> Result<Vec<PluginRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, version, sha256, size, manifest, grants, builtin, installed_at_ms
             FROM plugins ORDER BY id, version",
        )?;
        let rows = stmt.query_map([], |r| {
            let grants: String = r.get(5)?;
            Ok((
                PluginRow {
                    id: r.get(0)?,
                    version: r.get(1)?,
                    sha256: r.get(2)?,
                    size: r.get(3)?,
                    manifest: r.get(4)?,
                    grants: sluice_proto::Grants::default(),
                    builtin: r.get(6)?,
                    installed_at_ms: r.get(7)?,
                },
                grants,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut row, grants) = row?;
            row.grants = serde_json::from_str(&grants)?;
            out.push(row);
        }
        Ok(out)
    }

    /// Replaces a plugin's grants.
    pub fn set_plugin_grants(
        &self,
        id: &str,
        version: &str,
        grants: &sluice_proto::Grants,
    ) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE plugins SET grants = ?3 WHERE id = ?1 AND version = ?2",
            params![id, version, serde_json::to_string(grants)?],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!(
                "plugin {id} version {version} is not installed"
            )));
        }
        Ok(())
    }

    /// Removes an installed (not built-in) plugin version.
    pub fn remove_plugin(&self, id: &str, version: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let builtin: Option<bool> = tx
            .query_row(
                "SELECT builtin FROM plugins WHERE id = ?1 AND version = ?2",
                params![id, version],
                |r| r.get(0),
            )
            .optional()?;
        match builtin {
            None => {
                return Err(StoreError::NotFound(format!(
                    "plugin {id} version {version} is not installed; see `sluice plugin list`"
                )));
            }
            Some(true) => {
                return Err(StoreError::Conflict(format!(
                    "plugin {id} is built into Sluice and cannot be removed"
                )));
            }
            Some(false) => {}
        }
        tx.execute(
            "DELETE FROM plugins WHERE id = ?1 AND version = ?2",
            params![id, version],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The current definition of every pipeline (name, definition JSON).
    pub fn current_definitions(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.name, v.definition FROM pipelines p
             JOIN pipeline_versions v ON v.pipeline_name = p.name AND v.version = p.current_version
             ORDER BY p.name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // ---- secrets ---------------------------------------------------------------

    /// Sets a secret's encrypted value (creating it or replacing the old one).
    pub fn put_secret(&self, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<()> {
        let now = now_ms();
        self.conn().execute(
            "INSERT INTO secrets (name, nonce, ciphertext, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(name) DO UPDATE SET nonce = ?2, ciphertext = ?3, updated_at_ms = ?4",
            params![name, nonce, ciphertext, now],
        )?;
        Ok(())
    }

    /// Every secret (encrypted), by name.
    pub fn list_secrets(&self) -> Result<Vec<SecretRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, nonce, ciphertext, created_at_ms, updated_at_ms FROM secrets ORDER BY name",
        )?;
        let rows = stmt.query_map([], secret_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One secret (encrypted), if it exists.
    pub fn secret(&self, name: &str) -> Result<Option<SecretRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, nonce, ciphertext, created_at_ms, updated_at_ms FROM secrets WHERE name = ?1",
                [name],
                secret_from_row,
            )
            .optional()?)
    }

    /// Deletes a secret.
    pub fn delete_secret(&self, name: &str) -> Result<()> {
        let changed = self
            .conn()
            .execute("DELETE FROM secrets WHERE name = ?1", [name])?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!(
                "secret {name} does not exist; see `sluice secret list`"
            )));
        }
        Ok(())
    }

    // ---- test results ----------------------------------------------------------

    /// Stores the test cases an attempt reported (once: a repeated report is ignored).
    pub fn insert_test_cases(
        &self,
        attempt_id: i64,
        cases: &[sluice_proto::TestCase],
    ) -> Result<()> {
        if cases.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT OR IGNORE INTO test_cases
                 (attempt_id, seq, suite, classname, name, status, duration_ms, message, details)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (seq, c) in cases.iter().enumerate() {
                stmt.execute(params![
                    attempt_id,
                    seq as i64,
                    c.suite,
                    c.classname,
                    c.name,
                    test_status_name(c.status),
                    c.duration_ms as i64,
                    c.message,
                    c.details
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The test cases of every attempt of an execution: attempt id → cases in order.
    pub fn test_cases(
        &self,
        execution_id: &str,
    ) -> Result<BTreeMap<i64, Vec<sluice_proto::TestCase>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT t.attempt_id, t.suite, t.classname, t.name, t.status, t.duration_ms, t.message, t.details
             FROM test_cases t JOIN action_attempts a ON a.id = t.attempt_id
             WHERE a.execution_id = ?1 ORDER BY t.attempt_id, t.seq",
        )?;
        let rows = stmt.query_map([execution_id], |r| {
            let status: String = r.get(4)?;
            Ok((
                r.get::<_, i64>(0)?,
                sluice_proto::TestCase {
                    suite: r.get(1)?,
                    classname: r.get(2)?,
                    name: r.get(3)?,
                    status: match status.as_str() {
                        "passed" => sluice_proto::TestStatus::Passed,
                        "failed" => sluice_proto::TestStatus::Failed,
                        "errored" => sluice_proto::TestStatus::Errored,
                        _ => sluice_proto::TestStatus::Skipped,
                    },
                    duration_ms: r.get::<_, i64>(5)?.max(0) as u64,
                    message: r.get(6)?,
                    details: r.get(7)?,
                },
            ))
        })?;
        let mut out: BTreeMap<i64, Vec<sluice_proto::TestCase>> = BTreeMap::new();
        for row in rows {
            let (attempt, case) = row?;
            out.entry(attempt).or_default().push(case);
        }
        Ok(out)
    }
}

// ---- events ------------------------------------------------------------------------

/// A state-change event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// When the change happened, ms since epoch.
    pub time_ms: i64,
    /// EventBridge detail-type.
    pub detail_type: String,
    /// Pipeline name.
    pub pipeline_name: String,
    /// Execution id.
    pub execution_id: String,
    /// `pipeline`, `stage:<index>` or `attempt:<id>`.
    pub entity: String,
    /// STARTED, SUCCEEDED, ...
    pub state: String,
    /// Stage retries when recorded (summed over the stages for the pipeline).
    pub generation: i64,
    /// The `detail` JSON.
    pub detail: String,
}

/// A recorded event.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Monotonically increasing id.
    pub id: i64,
    /// The rest.
    pub event: NewEvent,
}

/// An execution with its stages and attempts, read at one instant.
#[derive(Debug, Clone)]
pub struct ExecutionSnapshot {
    /// The execution.
    pub execution: ExecutionRow,
    /// Its stage executions.
    pub stages: Vec<StageRow>,
    /// Its attempts.
    pub attempts: Vec<AttemptRow>,
}

/// What the recorder last recorded for one entity of an execution.
#[derive(Debug, Clone)]
pub struct RecordedState {
    /// `pipeline`, `stage:<index>` or `attempt:<id>`.
    pub entity: String,
    /// Its last state.
    pub state: String,
    /// Its generation then.
    pub generation: i64,
}

/// An execution, as the event recorder's catch-up scan sees it.
#[derive(Debug, Clone)]
pub struct EventScanRow {
    /// Execution id.
    pub id: String,
    /// Its status now.
    pub status: String,
    /// Its stages' retries, summed.
    pub generation: i64,
    /// The last pipeline-level state recorded for it, with its generation.
    pub recorded: Option<(String, i64)>,
}

/// An outgoing webhook's delivery state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRow {
    /// Where events go.
    pub url: String,
    /// The last event it acknowledged.
    pub delivered_id: i64,
    /// Consecutive failed deliveries.
    pub failures: i64,
    /// Why the last delivery failed (gone once it is retried with success), or which
    /// event the webhook refused and was skipped.
    pub last_error: Option<String>,
    /// Last change, ms since epoch.
    pub updated_at_ms: i64,
}

impl Store {
    /// An execution with its stages and attempts, read under one lock so that the
    /// three agree (every write goes through the same connection). None if it does not
    /// exist.
    pub fn event_snapshot(&self, execution_id: &str) -> Result<Option<ExecutionSnapshot>> {
        let conn = self.conn();
        let Some(execution) = conn
            .query_row(EXECUTION_SELECT_BY_ID, [execution_id], execution_from_row)
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(&format!(
            "{STAGE_SELECT} WHERE execution_id = ?1 ORDER BY stage_index"
        ))?;
        let stages = stmt
            .query_map([execution_id], stage_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut stmt = conn.prepare(&format!(
            "{ATTEMPT_SELECT} WHERE execution_id = ?1 ORDER BY stage_index, run_order, action_name, attempt"
        ))?;
        let attempts = stmt
            .query_map([execution_id], attempt_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(ExecutionSnapshot {
            execution,
            stages,
            attempts,
        }))
    }

    /// The last recorded state of each entity of an execution.
    pub fn recorded_states(&self, execution_id: &str) -> Result<Vec<RecordedState>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT entity, state, generation FROM events WHERE id IN
                 (SELECT MAX(id) FROM events WHERE execution_id = ?1 GROUP BY entity)",
        )?;
        let rows = stmt.query_map([execution_id], |r| {
            Ok(RecordedState {
                entity: r.get(0)?,
                state: r.get(1)?,
                generation: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends events in one transaction; returns the id of the last one (0 if none).
    pub fn insert_events(&self, events: &[NewEvent]) -> Result<i64> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO events (time_ms, detail_type, pipeline_name, execution_id, entity,
                     state, generation, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in events {
                stmt.execute(params![
                    e.time_ms,
                    e.detail_type,
                    e.pipeline_name,
                    e.execution_id,
                    e.entity,
                    e.state,
                    e.generation,
                    e.detail
                ])?;
            }
        }
        let last = tx.last_insert_rowid();
        tx.commit()?;
        Ok(last)
    }

    /// Events after `after`, oldest first, optionally of one pipeline and/or execution.
    pub fn events_after(
        &self,
        after: i64,
        pipeline: Option<&str>,
        execution: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, time_ms, detail_type, pipeline_name, execution_id, entity, state,
                    generation, detail
             FROM events
             WHERE id > ?1 AND (?2 IS NULL OR pipeline_name = ?2)
               AND (?3 IS NULL OR execution_id = ?3)
             ORDER BY id LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![after, pipeline, execution, limit], |r| {
            Ok(EventRow {
                id: r.get(0)?,
                event: NewEvent {
                    time_ms: r.get(1)?,
                    detail_type: r.get(2)?,
                    pipeline_name: r.get(3)?,
                    execution_id: r.get(4)?,
                    entity: r.get(5)?,
                    state: r.get(6)?,
                    generation: r.get(7)?,
                    detail: r.get(8)?,
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The id of the newest event (0 if there is none).
    pub fn last_event_id(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Executions created before events were recorded have a `seq` at or below this.
    pub fn events_baseline(&self) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(MAX(max_seq), 0) FROM events_baseline",
            [],
            |r| r.get(0),
        )?)
    }

    /// Every execution that events are recorded for, with its status, generation and
    /// the last pipeline-level state recorded for it, oldest first: what the recorder
    /// compares at start and after it lagged behind.
    pub fn event_scan(&self) -> Result<Vec<EventScanRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT e.id, e.status,
                    (SELECT COALESCE(SUM(s.retries), 0) FROM stage_executions s
                     WHERE s.execution_id = e.id),
                    v.state, v.generation
             FROM executions e
             LEFT JOIN events v ON v.id = (SELECT MAX(id) FROM events
                                          WHERE execution_id = e.id AND entity = 'pipeline')
             WHERE e.seq > (SELECT COALESCE(MAX(max_seq), 0) FROM events_baseline)
             ORDER BY e.seq",
        )?;
        let rows = stmt.query_map([], |r| {
            let state: Option<String> = r.get(3)?;
            let generation: Option<i64> = r.get(4)?;
            Ok(EventScanRow {
                id: r.get(0)?,
                status: r.get(1)?,
                generation: r.get(2)?,
                recorded: state.map(|s| (s, generation.unwrap_or(0))),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A webhook's delivery state, registering it (from the newest event on: a new
    /// webhook gets what happens from now on) if it is new.
    pub fn webhook(&self, url: &str) -> Result<WebhookRow> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO event_webhooks (url, delivered_id, updated_at_ms)
             VALUES (?1, (SELECT COALESCE(MAX(id), 0) FROM events), ?2)",
            params![url, now_ms()],
        )?;
        Ok(conn.query_row(
            "SELECT url, delivered_id, failures, last_error, updated_at_ms FROM event_webhooks
             WHERE url = ?1",
            [url],
            webhook_from_row,
        )?)
    }

    /// Every webhook ever configured, with its delivery state.
    pub fn webhooks(&self) -> Result<Vec<WebhookRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT url, delivered_id, failures, last_error, updated_at_ms FROM event_webhooks
             ORDER BY url",
        )?;
        let rows = stmt.query_map([], webhook_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that a webhook acknowledged event `id`. The last error goes if it was
    /// that of failures this delivery ends; a skipped event's (see
    /// [`Store::webhook_refused`]) stays.
    pub fn webhook_delivered(&self, url: &str, id: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE event_webhooks SET delivered_id = MAX(delivered_id, ?2), failures = 0,
                 last_error = CASE WHEN failures > 0 THEN NULL ELSE last_error END,
                 updated_at_ms = ?3
             WHERE url = ?1",
            params![url, id, now_ms()],
        )?;
        Ok(())
    }

    /// Records that a webhook refused event `id` for good and that it was skipped:
    /// the cursor moves past it and `error` stays the last error.
    pub fn webhook_refused(&self, url: &str, id: i64, error: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE event_webhooks SET delivered_id = MAX(delivered_id, ?2), failures = 0,
                 last_error = ?3, updated_at_ms = ?4
             WHERE url = ?1",
            params![url, id, error, now_ms()],
        )?;
        Ok(())
    }

    /// Records a failed delivery to a webhook.
    pub fn webhook_failed(&self, url: &str, error: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE event_webhooks SET failures = failures + 1, last_error = ?2, updated_at_ms = ?3
             WHERE url = ?1",
            params![url, error, now_ms()],
        )?;
        Ok(())
    }
}

fn webhook_from_row(r: &Row<'_>) -> rusqlite::Result<WebhookRow> {
    Ok(WebhookRow {
        url: r.get(0)?,
        delivered_id: r.get(1)?,
        failures: r.get(2)?,
        last_error: r.get(3)?,
        updated_at_ms: r.get(4)?,
    })
}

fn test_status_name(status: sluice_proto::TestStatus) -> &'static str {
    match status {
        sluice_proto::TestStatus::Passed => "passed",
        sluice_proto::TestStatus::Failed => "failed",
        sluice_proto::TestStatus::Errored => "errored",
        sluice_proto::TestStatus::Skipped => "skipped",
    }
}

fn secret_from_row(r: &Row<'_>) -> rusqlite::Result<SecretRow> {
    Ok(SecretRow {
        name: r.get(0)?,
        nonce: r.get(1)?,
        ciphertext: r.get(2)?,
        created_at_ms: r.get(3)?,
        updated_at_ms: r.get(4)?,
    })
}

const EXECUTION_SELECT: &str = "SELECT id, seq, pipeline_name, pipeline_version, status,
    status_summary, trigger_type, trigger_detail, started_at_ms, finished_at_ms, variables,
    source_revisions, waiting_for_stage, execution_type, rollback_target, rollback_stage
    FROM executions";

const EXECUTION_SELECT_BY_ID: &str = "SELECT id, seq, pipeline_name, pipeline_version, status,
    status_summary, trigger_type, trigger_detail, started_at_ms, finished_at_ms, variables,
    source_revisions, waiting_for_stage, execution_type, rollback_target, rollback_stage
    FROM executions WHERE id = ?1";

const ATTEMPT_SELECT: &str = "SELECT id, execution_id, stage_index, action_name, attempt, run_order, status, phase,
    fencing_token, agent_id, lease_expires_at_ms, waiting_reason, resolved_configuration, output_variables,
    summary, error, queued_at_ms, started_at_ms, finished_at_ms, rule_condition,
    (SELECT name FROM agents WHERE agents.id = action_attempts.agent_id) FROM action_attempts";

const AGENT_SELECT: &str =
    "SELECT id, name, labels, capacity, version, cert_fingerprint, state, registered_at_ms,
    last_heartbeat_ms, granted_labels, drained FROM agents";

fn pipeline_version_from_row(r: &Row<'_>) -> rusqlite::Result<PipelineVersion> {
    Ok(PipelineVersion {
        name: r.get(0)?,
        version: r.get(1)?,
        definition: r.get(2)?,
        created_at_ms: r.get(3)?,
    })
}

fn execution_from_row(r: &Row<'_>) -> rusqlite::Result<ExecutionRow> {
    Ok(ExecutionRow {
        id: r.get(0)?,
        seq: r.get(1)?,
        pipeline_name: r.get(2)?,
        pipeline_version: r.get(3)?,
        status: r.get(4)?,
        status_summary: r.get(5)?,
        trigger_type: r.get(6)?,
        trigger_detail: r.get(7)?,
        started_at_ms: r.get(8)?,
        finished_at_ms: r.get(9)?,
        variables: json_map(r, 10)?,
        source_revisions: json_map(r, 11)?,
        waiting_for_stage: r.get(12)?,
        execution_type: r.get(13)?,
        rollback_target: r.get(14)?,
        rollback_stage: r.get(15)?,
    })
}

fn json_map(r: &Row<'_>, index: usize) -> rusqlite::Result<BTreeMap<String, String>> {
    let text: Option<String> = r.get(index)?;
    match text {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        }),
    }
}

fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<AttemptRow> {
    Ok(AttemptRow {
        id: r.get(0)?,
        execution_id: r.get(1)?,
        stage_index: r.get(2)?,
        action_name: r.get(3)?,
        attempt: r.get(4)?,
        run_order: r.get(5)?,
        status: r.get(6)?,
        phase: r.get(7)?,
        fencing_token: r.get(8)?,
        agent_id: r.get(9)?,
        lease_expires_at_ms: r.get(10)?,
        waiting_reason: r.get(11)?,
        resolved_configuration: json_map(r, 12)?,
        output_variables: json_map(r, 13)?,
        summary: r.get(14)?,
        error: r.get(15)?,
        queued_at_ms: r.get(16)?,
        started_at_ms: r.get(17)?,
        finished_at_ms: r.get(18)?,
        rule_condition: r.get(19)?,
        agent_name: r.get(20)?,
    })
}

const STAGE_SELECT: &str = "SELECT stage_index, stage_name, status, started_at_ms, finished_at_ms,
    attempt_floor, retries, condition_status, summary, overridden_by, overridden_at_ms,
    on_success_status, on_success_summary, on_failure_status, on_failure_summary, auto_retries
    FROM stage_executions";

fn stage_from_row(r: &Row<'_>) -> rusqlite::Result<StageRow> {
    Ok(StageRow {
        stage_index: r.get(0)?,
        stage_name: r.get(1)?,
        status: r.get(2)?,
        started_at_ms: r.get(3)?,
        finished_at_ms: r.get(4)?,
        attempt_floor: r.get(5)?,
        retries: r.get(6)?,
        condition_status: r.get(7)?,
        summary: r.get(8)?,
        overridden_by: r.get(9)?,
        overridden_at_ms: r.get(10)?,
        on_success_status: r.get(11)?,
        on_success_summary: r.get(12)?,
        on_failure_status: r.get(13)?,
        on_failure_summary: r.get(14)?,
        auto_retries: r.get(15)?,
    })
}

fn agent_from_row(r: &Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get(0)?,
        name: r.get(1)?,
        labels: json_map(r, 2)?,
        capacity: r.get(3)?,
        version: r.get(4)?,
        cert_fingerprint: r.get(5)?,
        state: r.get(6)?,
        registered_at_ms: r.get(7)?,
        last_heartbeat_ms: r.get(8)?,
        granted_labels: json_map(r, 9)?,
        drained: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_versions_are_kept() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.create_pipeline("p", "{\"v\":1}").unwrap(), 1);
        assert!(matches!(
            store.create_pipeline("p", "{}"),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.update_pipeline("p", "{\"v\":2}").unwrap(), 2);
        assert_eq!(
            store.pipeline_version("p", None).unwrap().definition,
            "{\"v\":2}"
        );
        assert_eq!(
            store.pipeline_version("p", Some(1)).unwrap().definition,
            "{\"v\":1}"
        );
    }

    #[test]
    fn stale_fencing_token_changes_nothing() {
        let store = Store::open_in_memory().unwrap();
        store.create_pipeline("p", "{}").unwrap();
        store
            .insert_execution(
                "e1",
                "p",
                1,
                &NewExecution {
                    trigger_type: "StartPipelineExecution",
                    trigger_detail: "test",
                    ..NewExecution::default()
                },
            )
            .unwrap();
        let config = BTreeMap::new();
        let id = store
            .insert_attempt(&NewAttempt {
                execution_id: "e1",
                stage_index: 0,
                action_name: "a",
                attempt: 1,
                run_order: 1,
                fencing_token: "good",
                resolved_configuration: &config,
                rule_condition: None,
            })
            .unwrap();
        assert!(
            !store
                .move_attempt(id, "bad", &[phase::QUEUED], phase::OFFERED, None, None)
                .unwrap()
        );
        assert!(
            store
                .move_attempt(id, "good", &[phase::QUEUED], phase::OFFERED, None, None)
                .unwrap()
        );
        let vars = BTreeMap::new();
        assert!(
            !store
                .finish_attempt(id, "bad", "Succeeded", None, None, &vars, &[])
                .unwrap()
        );
        assert!(
            store
                .finish_attempt(id, "good", "Failed", None, Some("x"), &vars, &[])
                .unwrap()
        );
        assert!(
            !store
                .finish_attempt(id, "good", "Succeeded", None, None, &vars, &[])
                .unwrap()
        );
        assert_eq!(store.attempt(id).unwrap().status, "Failed");
    }
}
