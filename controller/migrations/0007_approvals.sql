-- Manual approvals: one row per approval attempt (the attempt itself waits in phase
-- 'approval'), with its deadline, the notification sent, and the decision.
CREATE TABLE approvals (
    attempt_id      INTEGER PRIMARY KEY REFERENCES action_attempts(id),
    expires_at_ms   INTEGER NOT NULL,
    notified_at_ms  INTEGER,
    notify_error    TEXT,
    decision        TEXT,               -- Approved, Rejected, TimedOut
    decided_by      TEXT,
    decided_at_ms   INTEGER,
    comment         TEXT
);
