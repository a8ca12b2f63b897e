-- A drained agent keeps its connection and finishes what it runs, but gets no new work.
ALTER TABLE agents ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
