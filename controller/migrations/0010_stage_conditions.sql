-- Stage beforeEntry conditions: how the last evaluation went (Succeeded, Failed,
-- Skipped, Overridden), why, and who overrode a failed one.
ALTER TABLE stage_executions ADD COLUMN condition_status TEXT;
ALTER TABLE stage_executions ADD COLUMN summary TEXT;
ALTER TABLE stage_executions ADD COLUMN overridden_by TEXT;
ALTER TABLE stage_executions ADD COLUMN overridden_at_ms INTEGER;
