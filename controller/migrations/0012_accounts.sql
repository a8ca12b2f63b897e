-- People who sign in to the web UI, and their browser sessions. Scripts keep using API
-- tokens. `role` is what a user may do (admin: everything); more roles come later.
CREATE TABLE users (
    name             TEXT PRIMARY KEY,
    password_hash    TEXT NOT NULL,          -- Argon2id, PHC string
    role             TEXT NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    last_sign_in_ms  INTEGER
);

-- Only the token's SHA-256 is kept; the CSRF token is sent with every change.
CREATE TABLE web_sessions (
    token_sha256   TEXT PRIMARY KEY,
    user_name      TEXT NOT NULL REFERENCES users(name),
    csrf_token     TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);
CREATE INDEX web_sessions_by_expiry ON web_sessions(expires_at_ms);
