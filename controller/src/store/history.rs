//! Execution history: executions filtered by pipeline, status, trigger type and start
//! time, paged by `seq` (keyset pagination: a page starts after the last `seq` the
//! caller saw, never at an OFFSET, so a deep page costs what the first one does).
//!
//! Migration 0013 gives every filter an index that ends in `seq`, so each page is one
//! range scan of at most `limit` matching rows.

use rusqlite::types::Value;

use super::{EXECUTION_SELECT, ExecutionRow, Result, Store, execution_from_row};

/// Where a history page starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HistoryPage {
    /// The newest executions.
    #[default]
    Newest,
    /// Older ones: `seq` below this.
    Before(i64),
    /// Newer ones: `seq` above this (the page just newer than the one shown).
    After(i64),
}

/// Which executions a history page shows. `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter<'a> {
    /// Only this pipeline's.
    pub pipeline: Option<&'a str>,
    /// Only executions in this status (Succeeded, Failed, InProgress, ...).
    pub status: Option<&'a str>,
    /// Only executions started this way (StartPipelineExecution, Webhook, ...).
    pub trigger_type: Option<&'a str>,
    /// Started at or after this time (ms since epoch).
    pub started_from_ms: Option<i64>,
    /// Started before this time (ms since epoch; exclusive).
    pub started_to_ms: Option<i64>,
}

impl Store {
    /// One page of executions matching `filter`, newest first, at most `limit`.
    pub fn execution_history(
        &self,
        filter: &ExecutionFilter<'_>,
        page: HistoryPage,
        limit: i64,
    ) -> Result<Vec<ExecutionRow>> {
        let mut clauses: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut text = |clause: &'static str, value: Option<&str>| {
            if let Some(value) = value {
                clauses.push(clause);
                values.push(Value::Text(value.to_owned()));
            }
        };
        text("pipeline_name = ?", filter.pipeline);
        text("status = ?", filter.status);
        text("trigger_type = ?", filter.trigger_type);
        let mut int = |clause: &'static str, value: Option<i64>| {
            if let Some(value) = value {
                clauses.push(clause);
                values.push(Value::Integer(value));
            }
        };
        int("started_at_ms >= ?", filter.started_from_ms);
        int("started_at_ms < ?", filter.started_to_ms);
        let order = match page {
            HistoryPage::Newest => "DESC",
            HistoryPage::Before(seq) => {
                int("seq < ?", Some(seq));
                "DESC"
            }
            HistoryPage::After(seq) => {
                int("seq > ?", Some(seq));
                "ASC"
            }
        };
        let condition = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        values.push(Value::Integer(limit.max(0)));
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{EXECUTION_SELECT} {condition} ORDER BY seq {order} LIMIT ?"
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), execution_from_row)?;
        let mut rows: Vec<ExecutionRow> = rows.collect::<rusqlite::Result<_>>()?;
        if matches!(page, HistoryPage::After(_)) {
            // The newer page was read oldest first, to stop right after `seq`.
            rows.reverse();
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::NewExecution;

    fn store_with(executions: &[(&str, &str, &str)]) -> (Store, Vec<String>) {
        let store = Store::open_in_memory().unwrap();
        store.create_pipeline("a", "{}").unwrap();
        store.create_pipeline("b", "{}").unwrap();
        let mut ids = Vec::new();
        for (i, (pipeline, status, trigger)) in executions.iter().enumerate() {
            let id = format!("e{i}");
            store
                .insert_execution(
                    &id,
                    pipeline,
                    1,
                    &NewExecution {
                        trigger_type: trigger,
                        trigger_detail: "test",
                        ..NewExecution::default()
                    },
                )
                .unwrap();
            store
                .conn()
                .execute(
                    "UPDATE executions SET status = ?2, started_at_ms = ?3 WHERE id = ?1",
                    rusqlite::params![id, status, 1000 * (i as i64 + 1)],
                )
                .unwrap();
            ids.push(id);
        }
        (store, ids)
    }

    fn ids(rows: &[ExecutionRow]) -> Vec<&str> {
        rows.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn filters_and_keyset_pages() {
        let (store, _) = store_with(&[
            ("a", "Succeeded", "StartPipelineExecution"), // e0, seq 1, t 1000
            ("a", "Failed", "Webhook"),                   // e1, seq 2, t 2000
            ("b", "Failed", "StartPipelineExecution"),    // e2
            ("a", "Failed", "StartPipelineExecution"),    // e3
            ("a", "Succeeded", "Webhook"),                // e4
            ("a", "Failed", "Schedule"),                  // e5, seq 6, t 6000
        ]);
        let a = ExecutionFilter {
            pipeline: Some("a"),
            ..ExecutionFilter::default()
        };
        let all = store
            .execution_history(&a, HistoryPage::Newest, 50)
            .unwrap();
        assert_eq!(ids(&all), ["e5", "e4", "e3", "e1", "e0"]);

        let failed = ExecutionFilter {
            status: Some("Failed"),
            ..a.clone()
        };
        let first = store
            .execution_history(&failed, HistoryPage::Newest, 2)
            .unwrap();
        assert_eq!(ids(&first), ["e5", "e3"]);
        let older = store
            .execution_history(&failed, HistoryPage::Before(first[1].seq), 2)
            .unwrap();
        assert_eq!(ids(&older), ["e1"]);
        let newer = store
            .execution_history(&failed, HistoryPage::After(older[0].seq), 2)
            .unwrap();
        assert_eq!(ids(&newer), ["e5", "e3"], "newer page, newest first");

        let webhook = ExecutionFilter {
            trigger_type: Some("Webhook"),
            ..a.clone()
        };
        let rows = store
            .execution_history(&webhook, HistoryPage::Newest, 50)
            .unwrap();
        assert_eq!(ids(&rows), ["e4", "e1"]);

        let window = ExecutionFilter {
            started_from_ms: Some(2000),
            started_to_ms: Some(5000),
            ..a.clone()
        };
        let rows = store
            .execution_history(&window, HistoryPage::Newest, 50)
            .unwrap();
        assert_eq!(ids(&rows), ["e3", "e1"], "from inclusive, to exclusive");

        let everywhere = ExecutionFilter {
            status: Some("Failed"),
            trigger_type: Some("StartPipelineExecution"),
            ..ExecutionFilter::default()
        };
        let rows = store
            .execution_history(&everywhere, HistoryPage::Newest, 50)
            .unwrap();
        assert_eq!(ids(&rows), ["e3", "e2"]);
    }

    #[test]
    fn every_filtered_page_is_an_index_range_scan() {
        let (store, _) = store_with(&[("a", "Failed", "Webhook")]);
        let conn = store.conn();
        for (condition, index) in [
            ("pipeline_name = 'a'", "executions_by_pipeline"),
            (
                "pipeline_name = 'a' AND status = 'Failed'",
                "executions_by_pipeline_status",
            ),
            (
                "pipeline_name = 'a' AND trigger_type = 'Webhook'",
                "executions_by_pipeline_trigger",
            ),
            ("status = 'Failed'", "executions_by_status_seq"),
        ] {
            for page in ["", " AND seq < 100", " AND seq > 1"] {
                let plan: Vec<String> = conn
                    .prepare(&format!(
                        "EXPLAIN QUERY PLAN SELECT id FROM executions WHERE {condition}{page} ORDER BY seq DESC LIMIT 50"
                    ))
                    .unwrap()
                    .query_map([], |r| r.get::<_, String>(3))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                let plan = plan.join(" | ");
                assert!(plan.contains(index), "{condition}{page}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{condition}{page}: {plan}");
            }
        }
    }
}
