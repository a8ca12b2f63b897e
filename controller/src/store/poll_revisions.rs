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
}
