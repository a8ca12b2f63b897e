-- Pipelines: one row per name; every update adds a row to pipeline_versions.
CREATE TABLE pipelines (
    name            TEXT PRIMARY KEY,
    current_version INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

CREATE TABLE pipeline_versions (
    pipeline_name  TEXT NOT NULL REFERENCES pipelines(name),
    version        INTEGER NOT NULL,
    definition     TEXT NOT NULL,          -- canonical JSON of the pipeline
    created_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (pipeline_name, version)
);

CREATE TABLE executions (
    id               TEXT PRIMARY KEY,     -- UUID
    seq              INTEGER NOT NULL UNIQUE, -- creation order, for keyset pagination
    pipeline_name    TEXT NOT NULL,
    pipeline_version INTEGER NOT NULL,
    status           TEXT NOT NULL,        -- InProgress, Succeeded, Failed, ...
    status_summary   TEXT,
    trigger_type     TEXT NOT NULL,
    trigger_detail   TEXT NOT NULL,
    started_at_ms    INTEGER NOT NULL,
    finished_at_ms   INTEGER,
    FOREIGN KEY (pipeline_name, pipeline_version) REFERENCES pipeline_versions(pipeline_name, version)
);
CREATE INDEX executions_by_pipeline ON executions(pipeline_name, seq);
CREATE INDEX executions_by_status ON executions(status);

CREATE TABLE stage_executions (
    execution_id   TEXT NOT NULL REFERENCES executions(id),
    stage_index    INTEGER NOT NULL,
    stage_name     TEXT NOT NULL,
    status         TEXT NOT NULL,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER,
    PRIMARY KEY (execution_id, stage_index)
);

-- One row per attempt of an action. The latest attempt of an action is the current one.
CREATE TABLE action_attempts (
    id                     INTEGER PRIMARY KEY,
    execution_id           TEXT NOT NULL REFERENCES executions(id),
    stage_index            INTEGER NOT NULL,
    action_name            TEXT NOT NULL,
    attempt                INTEGER NOT NULL,
    run_order              INTEGER NOT NULL,
    status                 TEXT NOT NULL,  -- InProgress, Succeeded, Failed, Abandoned
    phase                  TEXT NOT NULL,  -- queued, offered, running, done
    fencing_token          TEXT NOT NULL,
    agent_id               TEXT,
    lease_expires_at_ms    INTEGER,
    waiting_reason         TEXT,
    resolved_configuration TEXT NOT NULL,  -- JSON object
    output_variables       TEXT,           -- JSON object
    summary                TEXT,
    error                  TEXT,
    queued_at_ms           INTEGER NOT NULL,
    started_at_ms          INTEGER,
    finished_at_ms         INTEGER,
    UNIQUE (execution_id, stage_index, action_name, attempt)
);
CREATE INDEX action_attempts_open ON action_attempts(phase) WHERE phase <> 'done';

-- Artifacts an execution produced: name -> content digest of the archive in blobs/.
CREATE TABLE artifacts (
    execution_id  TEXT NOT NULL REFERENCES executions(id),
    name          TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    attempt_id    INTEGER NOT NULL REFERENCES action_attempts(id),
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (execution_id, name)
);

-- Where each attempt's log lives and whether it arrived whole.
CREATE TABLE logs (
    attempt_id     INTEGER PRIMARY KEY REFERENCES action_attempts(id),
    path           TEXT NOT NULL,          -- relative to the data dir
    stored_length  INTEGER NOT NULL,
    reported_length INTEGER,
    reported_sha256 TEXT,
    complete       INTEGER                 -- NULL while running, 1 whole, 0 gaps or mismatch
);

CREATE TABLE agents (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    labels             TEXT NOT NULL,      -- JSON object: what the agent runs with now
    granted_labels     TEXT NOT NULL DEFAULT '{}', -- JSON object: from its join token; these always win
    capacity           INTEGER NOT NULL DEFAULT 1,
    version            TEXT,
    cert_fingerprint   TEXT NOT NULL UNIQUE,
    state              TEXT NOT NULL,      -- registered, online, offline, revoked
    registered_at_ms   INTEGER NOT NULL,
    last_heartbeat_ms  INTEGER
);

CREATE TABLE join_tokens (
    token_sha256   TEXT PRIMARY KEY,
    labels         TEXT NOT NULL,          -- JSON object, given to the agent that joins
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    used_at_ms     INTEGER,
    used_by_agent  TEXT
);

CREATE TABLE api_tokens (
    token_sha256   TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    last_used_at_ms INTEGER
);
