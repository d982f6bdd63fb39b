CREATE TABLE sessions (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        folder        TEXT NOT NULL,   -- under spool/replay/
        created_at    TEXT NOT NULL,
        speed         REAL,            -- arrivals' spacing divided by this; NULL: as fast as possible
        models        TEXT,            -- JSON list of the models that run; NULL: all
        period_from   TEXT,            -- original arrival times covered
        period_to     TEXT,
        files_total   INTEGER NOT NULL DEFAULT 0,
        files_released INTEGER NOT NULL DEFAULT 0,
        released_to   TEXT,            -- original arrival of the last file released
        state         TEXT NOT NULL,   -- replaying | finishing | done
        ended_at      TEXT,
        report        TEXT             -- the comparison report, relative to the spool
     );
     ALTER TABLE submissions ADD COLUMN session TEXT;
     ALTER TABLE submissions ADD COLUMN original_at TEXT;  -- when the original arrived
     CREATE INDEX submissions_by_session ON submissions(session, id) WHERE session IS NOT NULL;
     ALTER TABLE runs ADD COLUMN session TEXT;
     ALTER TABLE runs ADD COLUMN mirrors TEXT;             -- the original run a replay run mirrors
     CREATE INDEX runs_by_session ON runs(session, model) WHERE session IS NOT NULL;
     -- A scheduled time fires once per history: the operational one, and each replay's.
     DROP INDEX runs_scheduled_once;
     CREATE UNIQUE INDEX runs_scheduled_once ON runs(model, time0, coalesce(session, ''))
        WHERE trigger = 'schedule' AND retry_of IS NULL;
     -- The dispatcher looks for due retries ten times a second: never a scan of every run.
     CREATE INDEX runs_retry_due ON runs(retry_at) WHERE retry_state = 'due';
     CREATE INDEX runs_undecided ON runs(id)
        WHERE retry_state IS NULL AND state IN ('failed', 'timed_out', 'interrupted');