-- Retrying a whole stage (ALL_ACTIONS) keeps every earlier attempt: attempts numbered
-- at or below the floor belong to earlier runs of the stage and are not its current ones.
ALTER TABLE stage_executions ADD COLUMN attempt_floor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stage_executions ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
