-- What an execution was started with: its pipeline variables (declared defaults with
-- the start request's overrides applied), per-action source revision overrides, and
-- the caller's idempotency token.
ALTER TABLE executions ADD COLUMN variables TEXT;          -- JSON object
ALTER TABLE executions ADD COLUMN source_revisions TEXT;   -- JSON object: action → commit
ALTER TABLE executions ADD COLUMN client_request_token TEXT;
CREATE UNIQUE INDEX executions_by_token ON executions(pipeline_name, client_request_token)
    WHERE client_request_token IS NOT NULL;
