//! Incoming webhooks (git triggers) and their deliveries.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Result, Store, StoreError, now_ms};

/// An incoming webhook.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerWebhookRow {
    /// Random, url-safe; the URL is `/webhooks/<id>`.
    pub id: String,
    /// The pipeline it starts.
    pub pipeline: String,
    /// github, gitlab or generic.
    pub kind: String,
    /// The secret holding the HMAC key or token.
    pub secret_name: String,
    /// Created.
    pub created_at_ms: i64,
}

/// One delivery to an incoming webhook.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRow {
    /// Sequence number.
    pub id: i64,
    /// The webhook.
    pub webhook_id: String,
    /// When it arrived.
    pub received_at_ms: i64,
    /// e.g. `github push refs/heads/main 1a2b3c4`.
    pub event: String,
    /// started, no_match, rejected or ignored.
    pub result: String,
    /// Why (no match, rejection) or the trigger detail.
    pub detail: String,
    /// The execution started, if any.
    pub execution_id: Option<String>,
}

fn webhook_from_row(r: &Row<'_>) -> rusqlite::Result<TriggerWebhookRow> {
    Ok(TriggerWebhookRow {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        kind: r.get(2)?,
        secret_name: r.get(3)?,
        created_at_ms: r.get(4)?,
    })
}

impl Store {
    /// Records a new incoming webhook.
    pub fn insert_trigger_webhook(&self, row: &TriggerWebhookRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO trigger_webhooks (id, pipeline, kind, secret_name, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                row.id,
                row.pipeline,
                row.kind,
                row.secret_name,
                row.created_at_ms
            ],
        )?;
        Ok(())
    }

    /// One incoming webhook, if it exists.
    pub fn trigger_webhook(&self, id: &str) -> Result<Option<TriggerWebhookRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, pipeline, kind, secret_name, created_at_ms
                 FROM trigger_webhooks WHERE id = ?1",
                [id],
                webhook_from_row,
            )
            .optional()?)
    }

    /// Every incoming webhook, oldest first.
    pub fn trigger_webhooks(&self) -> Result<Vec<TriggerWebhookRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, pipeline, kind, secret_name, created_at_ms
             FROM trigger_webhooks ORDER BY created_at_ms, id",
        )?;
        let rows = stmt.query_map([], webhook_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes an incoming webhook (its deliveries stay in history).
    pub fn delete_trigger_webhook(&self, id: &str) -> Result<()> {
        let changed = self
            .conn()
            .execute("DELETE FROM trigger_webhooks WHERE id = ?1", [id])?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!(
                "webhook {id} does not exist; see `sluice webhook list`"
            )));
        }
        Ok(())
    }

    /// Records a delivery.
    pub fn insert_delivery(
        &self,
        webhook_id: &str,
        event: &str,
        result: &str,
        detail: &str,
        execution_id: Option<&str>,
    ) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO trigger_webhook_deliveries
             (webhook_id, received_at_ms, event, result, detail, execution_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![webhook_id, now_ms(), event, result, detail, execution_id],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// A webhook's deliveries, newest first.
    pub fn deliveries(&self, webhook_id: &str, limit: i64) -> Result<Vec<DeliveryRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, webhook_id, received_at_ms, event, result, detail, execution_id
             FROM trigger_webhook_deliveries WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![webhook_id, limit], |r| {
            Ok(DeliveryRow {
                id: r.get(0)?,
                webhook_id: r.get(1)?,
                received_at_ms: r.get(2)?,
                event: r.get(3)?,
                result: r.get(4)?,
                detail: r.get(5)?,
                execution_id: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
