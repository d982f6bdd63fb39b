-- Retention: when a file's stored copy or a run's folder was removed (the row stays).
ALTER TABLE submissions ADD COLUMN pruned_at TEXT;
ALTER TABLE runs ADD COLUMN pruned_at TEXT;
-- What is still stored, per channel, oldest first (what retention looks at).
CREATE INDEX submissions_stored ON submissions(channel, id) WHERE pruned_at IS NULL;
-- What was pruned (counted for /metrics, listed for a replay of a pruned period).
CREATE INDEX submissions_pruned ON submissions(channel, id) WHERE pruned_at IS NOT NULL;
CREATE INDEX runs_by_end ON runs(model, ended_at) WHERE pruned_at IS NULL;
CREATE INDEX runs_pruned ON runs(model) WHERE pruned_at IS NOT NULL;
