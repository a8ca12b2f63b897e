-- State-change events of executions, stages and actions (CodePipeline's EventBridge
-- detail-types), in the order they are recorded. The latest row of each entity is also
-- what the recorder compares the current state with, so a restart neither loses nor
-- repeats events.
CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: clients resume from it
    time_ms        INTEGER NOT NULL,   -- when the change happened (as far as it is known)
    detail_type    TEXT NOT NULL,      -- e.g. 'CodePipeline Stage Execution State Change'
    pipeline_name  TEXT NOT NULL,
    execution_id   TEXT NOT NULL,
    entity         TEXT NOT NULL,      -- 'pipeline', 'stage:<index>' or 'attempt:<id>'
    state          TEXT NOT NULL,      -- STARTED, SUCCEEDED, FAILED, ...
    generation     INTEGER NOT NULL,   -- stage retries (summed for the pipeline) when recorded
    detail         TEXT NOT NULL       -- JSON, EventBridge's `detail`
);
CREATE INDEX events_by_execution ON events(execution_id, entity, id);
CREATE INDEX events_by_pipeline ON events(pipeline_name, id);

-- Executions that existed before events were recorded get none (their history would
-- otherwise arrive as a flood of old events).
CREATE TABLE events_baseline (
    max_seq INTEGER NOT NULL
);
INSERT INTO events_baseline (max_seq) SELECT COALESCE(MAX(seq), 0) FROM executions;

-- Outgoing webhooks: the last event each one acknowledged (a 2xx answer).
CREATE TABLE event_webhooks (
    url            TEXT PRIMARY KEY,
    delivered_id   INTEGER NOT NULL,
    failures       INTEGER NOT NULL DEFAULT 0, -- consecutive failed deliveries
    last_error     TEXT,
    updated_at_ms  INTEGER NOT NULL
);
