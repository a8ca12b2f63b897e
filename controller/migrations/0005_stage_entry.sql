-- Executions waiting in front of a stage (locked by another execution, or behind a
-- disabled transition), and the state of each stage's inbound transition.
ALTER TABLE executions ADD COLUMN waiting_for_stage TEXT;
CREATE TABLE transitions (
    pipeline_name  TEXT NOT NULL REFERENCES pipelines(name),
    stage_name     TEXT NOT NULL,
    enabled        INTEGER NOT NULL,
    reason         TEXT,
    changed_by     TEXT NOT NULL,
    changed_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (pipeline_name, stage_name)
);
