//! Source polling: the last revision seen per (pipeline, Source action).

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, now_ms};

impl Store {
    /// The last revision polling recorded for a pipeline's Source action, if any.
    pub fn poll_revision(&self, pipeline: &str, action: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT revision FROM poll_revisions WHERE pipeline = ?1 AND action = ?2",
                [pipeline, action],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records the last revision of a pipeline's Source action (replacing any earlier).
    pub fn set_poll_revision(&self, pipeline: &str, action: &str, revision: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO poll_revisions (pipeline, action, revision, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (pipeline, action)
             DO UPDATE SET revision = excluded.revision, updated_at_ms = excluded.updated_at_ms",
            params![pipeline, action, revision, now_ms()],
        )?;
        Ok(())
    }

    /// Whether the Source action `action` of `pipeline` succeeded with output variable
    /// `variable` equal to `revision` (ignoring case) since polling last recorded a
    /// revision for it: a run started another way already took that revision.
    pub fn ran_since_poll(
        &self,
        pipeline: &str,
        action: &str,
        variable: &str,
        revision: &str,
    ) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (
                 SELECT 1 FROM action_attempts a
                 JOIN executions e ON e.id = a.execution_id
                 JOIN poll_revisions p ON p.pipeline = e.pipeline_name AND p.action = a.action_name
                 WHERE e.pipeline_name = ?1 AND a.action_name = ?2 AND a.rule_condition IS NULL
                   AND a.status = 'Succeeded' AND a.finished_at_ms >= p.updated_at_ms
                   AND lower(json_extract(a.output_variables, ?3)) = lower(?4))",
            params![pipeline, action, format!("$.\"{variable}\""), revision],
            |r| r.get(0),
        )?)
    }

    /// Whether an attempt of the Source action `action` of `pipeline` is queued or
    /// running in an execution still in progress.
    pub fn source_running(&self, pipeline: &str, action: &str) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (
                 SELECT 1 FROM action_attempts a
                 JOIN executions e ON e.id = a.execution_id
                 WHERE e.pipeline_name = ?1 AND a.action_name = ?2 AND a.rule_condition IS NULL
                   AND a.phase <> 'done' AND e.status IN ('InProgress', 'Stopping'))",
            [pipeline, action],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_last_revision_is_kept_per_pipeline_and_action() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.poll_revision("p", "Src").unwrap(), None);
        store.set_poll_revision("p", "Src", "aaa").unwrap();
        store.set_poll_revision("p", "Other", "ccc").unwrap();
        assert_eq!(
            store.poll_revision("p", "Src").unwrap().as_deref(),
            Some("aaa")
        );
        store.set_poll_revision("p", "Src", "bbb").unwrap();
        assert_eq!(
            store.poll_revision("p", "Src").unwrap().as_deref(),
            Some("bbb")
        );
        assert_eq!(
            store.poll_revision("p", "Other").unwrap().as_deref(),
            Some("ccc")
        );
        assert_eq!(store.poll_revision("q", "Src").unwrap(), None);
    }

    #[test]
    fn a_revision_counts_as_run_when_it_succeeded_after_the_recording() {
        use crate::store::{NewAttempt, NewExecution};
        use std::collections::BTreeMap;

        let store = Store::open_in_memory().unwrap();
        store.create_pipeline("p", "name: p").unwrap();
        let start = |id: &str| {
            let new = NewExecution {
                trigger_type: "StartPipelineExecution",
                trigger_detail: "test",
                variables: BTreeMap::new(),
                source_revisions: BTreeMap::new(),
                client_request_token: None,
                rollback: None,
            };
            store.insert_execution(id, "p", 1, &new).unwrap();
            let config = BTreeMap::new();
            store
                .insert_attempt(&NewAttempt {
                    execution_id: id,
                    stage_index: 0,
                    action_name: "Src",
                    attempt: 1,
                    run_order: 1,
                    fencing_token: "t",
                    resolved_configuration: &config,
                    rule_condition: None,
                })
                .unwrap()
        };
        let finish = |attempt: i64, status: &str, commit: &str, at: i64| {
            let vars = BTreeMap::from([("CommitId".to_string(), commit.to_string())]);
            assert!(
                store
                    .finish_attempt(attempt, "t", status, None, None, &vars, &[])
                    .unwrap()
            );
            store
                .conn()
                .execute(
                    "UPDATE action_attempts SET finished_at_ms = ?2 WHERE id = ?1",
                    params![attempt, at],
                )
                .unwrap();
        };
        let recorded_at = |at: i64| {
            store
                .conn()
                .execute("UPDATE poll_revisions SET updated_at_ms = ?1", [at])
                .unwrap();
        };
        let ran = |commit: &str| {
            store
                .ran_since_poll("p", "Src", "CommitId", commit)
                .unwrap()
        };

        let first = start("e1");
        assert!(store.source_running("p", "Src").unwrap());
        assert!(!store.source_running("p", "Other").unwrap());
        finish(first, "Succeeded", "BBB", 2_000);
        assert!(!store.source_running("p", "Src").unwrap());
        // Nothing recorded yet: nothing to compare with.
        assert!(!ran("bbb"));
        store.set_poll_revision("p", "Src", "aaa").unwrap();
        recorded_at(1_000);
        // Ran after the recording, whatever the case of the id.
        assert!(ran("bbb"));
        assert!(!ran("ccc"));
        assert!(!store.ran_since_poll("p", "Src", "Digest", "bbb").unwrap());
        assert!(
            !store
                .ran_since_poll("p", "Other", "CommitId", "bbb")
                .unwrap()
        );
        // Ran before the recording: a change polling must still start a run for.
        recorded_at(3_000);
        assert!(!ran("bbb"));
        // A failed attempt did not take its revision.
        let failed = start("e2");
        finish(failed, "Failed", "ccc", 4_000);
        assert!(!ran("ccc"));
    }
}
