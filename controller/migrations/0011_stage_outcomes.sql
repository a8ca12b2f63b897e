-- What happens after a stage's actions: onSuccess and onFailure conditions, one
-- automatic retry, and ROLLBACK executions that run one stage again with the artifacts
-- and variables of an earlier execution.
ALTER TABLE executions ADD COLUMN execution_type TEXT NOT NULL DEFAULT 'STANDARD'; -- or ROLLBACK
ALTER TABLE executions ADD COLUMN rollback_target TEXT;   -- the execution a ROLLBACK reuses
ALTER TABLE executions ADD COLUMN rollback_stage INTEGER; -- the one stage a ROLLBACK runs
ALTER TABLE stage_executions ADD COLUMN on_success_status TEXT;
ALTER TABLE stage_executions ADD COLUMN on_success_summary TEXT;
ALTER TABLE stage_executions ADD COLUMN on_failure_status TEXT;
ALTER TABLE stage_executions ADD COLUMN on_failure_summary TEXT;
ALTER TABLE stage_executions ADD COLUMN auto_retries INTEGER NOT NULL DEFAULT 0;
-- A Commands rule runs on an agent like an action; its attempt names the condition
-- (beforeEntry, onSuccess, onFailure) and is named `condition:rule`.
ALTER TABLE action_attempts ADD COLUMN rule_condition TEXT;
CREATE INDEX executions_by_stage_success ON stage_executions(stage_index, status);
