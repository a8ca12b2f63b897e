//! The pipelines overview: every pipeline with its latest execution, that execution's
//! stages and what its sources ran, in three queries whatever the number of pipelines.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{EXECUTION_SELECT, ExecutionRow, Result, Store, execution_from_row, json_map};

/// One pipeline in the overview.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OverviewRow {
    /// Pipeline name.
    pub name: String,
    /// Current version.
    pub version: i64,
    /// The stage names of the current version, in order.
    pub stage_names: Vec<String>,
    /// The newest execution, if any.
    pub latest: Option<ExecutionRow>,
    /// Its stage statuses, by stage name.
    pub stage_statuses: BTreeMap<String, String>,
    /// What its first stage's actions produced: revision and message per action.
    pub sources: Vec<SourceRun>,
}

/// What one source action of the latest execution ran.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRun {
    /// Action name.
    pub action: String,
    /// Commit id, digest or other revision.
    pub revision: Option<String>,
    /// Commit message, if any.
    pub message: Option<String>,
}

impl Store {
    /// Every pipeline with its latest execution.
    pub fn overview(&self) -> Result<Vec<OverviewRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.name, p.current_version, v.definition FROM pipelines p
             JOIN pipeline_versions v ON v.pipeline_name = p.name AND v.version = p.current_version
             ORDER BY p.name",
        )?;
        let pipelines: Vec<(String, i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(&format!(
            "{EXECUTION_SELECT} WHERE seq IN (SELECT MAX(seq) FROM executions GROUP BY pipeline_name)"
        ))?;
        let mut latest: HashMap<String, ExecutionRow> = stmt
            .query_map([], execution_from_row)?
            .map(|r| r.map(|e| (e.pipeline_name.clone(), e)))
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(
            "SELECT s.execution_id, s.stage_name, s.status FROM stage_executions s
             WHERE s.execution_id IN (SELECT id FROM executions WHERE seq IN
                 (SELECT MAX(seq) FROM executions GROUP BY pipeline_name))",
        )?;
        let mut stages: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))? {
            let (execution, stage, status) = row?;
            stages.entry(execution).or_default().insert(stage, status);
        }
        // The latest succeeded attempt of each first-stage action.
        let mut stmt = conn.prepare(
            "SELECT a.execution_id, a.action_name, a.output_variables FROM action_attempts a
             WHERE a.stage_index = 0 AND a.status = 'Succeeded' AND a.rule_condition IS NULL
               AND a.execution_id IN (SELECT id FROM executions WHERE seq IN
                   (SELECT MAX(seq) FROM executions GROUP BY pipeline_name))
             ORDER BY a.execution_id, a.action_name, a.attempt",
        )?;
        let mut sources: HashMap<String, BTreeMap<String, SourceRun>> = HashMap::new();
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                json_map(r, 2)?,
            ))
        })? {
            let (execution, action, outputs) = row?;
            let revision = ["CommitId", "Digest", "VersionId", "ETag", "Revision"]
                .iter()
                .find_map(|k| outputs.get(*k).cloned());
            let message = outputs.get("CommitMessage").map(|m| {
                m.lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect()
            });
            sources.entry(execution).or_default().insert(
                action.clone(),
                SourceRun {
                    action,
                    revision,
                    message,
                },
            );
        }
        Ok(pipelines
            .into_iter()
            .map(|(name, version, definition)| {
                let stage_names = serde_json::from_str::<serde_json::Value>(&definition)
                    .ok()
                    .and_then(|d| {
                        d["stages"].as_array().map(|stages| {
                            stages
                                .iter()
                                .filter_map(|s| s["name"].as_str().map(str::to_string))
                                .collect()
                        })
                    })
                    .unwrap_or_default();
                let latest = latest.remove(&name);
                let id = latest.as_ref().map(|e| e.id.clone()).unwrap_or_default();
                OverviewRow {
                    name,
                    version,
                    stage_names,
                    stage_statuses: stages.remove(&id).unwrap_or_default(),
                    sources: sources
                        .remove(&id)
                        .map(|m| m.into_values().collect())
                        .unwrap_or_default(),
                    latest,
                }
            })
            .collect())
    }
}
