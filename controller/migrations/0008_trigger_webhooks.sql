-- Incoming webhooks (git triggers): POST /webhooks/{id}, authenticated by a signature or
-- token whose key is the named secret in the secret store.
CREATE TABLE trigger_webhooks (
    id            TEXT PRIMARY KEY,
    pipeline      TEXT NOT NULL,
    kind          TEXT NOT NULL,  -- github | gitlab | generic
    secret_name   TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- What each webhook received and what came of it.
CREATE TABLE trigger_webhook_deliveries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id     TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    event          TEXT NOT NULL,
    result         TEXT NOT NULL,  -- started | no_match | rejected | ignored
    detail         TEXT NOT NULL,
    execution_id   TEXT
);
CREATE INDEX trigger_webhook_deliveries_by_webhook
    ON trigger_webhook_deliveries (webhook_id, id);
