-- Source polling: the newest revision seen per (pipeline, Source action). Set by the
-- first check (which starts no run) and whenever a poll-triggered run starts.
CREATE TABLE poll_revisions (
    pipeline      TEXT NOT NULL,
    action        TEXT NOT NULL,
    revision      TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (pipeline, action)
);
