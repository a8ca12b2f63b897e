-- Installed plugins (built-in ones too), their grants, the secret store, and the test
-- cases actions report.

CREATE TABLE plugins (
    id               TEXT NOT NULL,
    version          TEXT NOT NULL,
    sha256           TEXT NOT NULL,        -- of the WASM component, kept in blobs/
    size             INTEGER NOT NULL,
    manifest         TEXT NOT NULL,        -- plugin.toml as installed
    grants           TEXT NOT NULL,        -- JSON: {programs, hosts, secrets, env}
    builtin          INTEGER NOT NULL DEFAULT 0,
    installed_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (id, version)
);

CREATE TABLE secrets (
    name           TEXT PRIMARY KEY,
    nonce          BLOB NOT NULL,          -- 12 bytes, new for every write
    ciphertext     BLOB NOT NULL,          -- AES-256-GCM, the name as associated data
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);

CREATE TABLE test_cases (
    attempt_id   INTEGER NOT NULL REFERENCES action_attempts(id),
    seq          INTEGER NOT NULL,
    suite        TEXT NOT NULL,
    classname    TEXT NOT NULL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,            -- passed, failed, errored, skipped
    duration_ms  INTEGER NOT NULL,
    message      TEXT,
    details      TEXT,
    PRIMARY KEY (attempt_id, seq)
);
