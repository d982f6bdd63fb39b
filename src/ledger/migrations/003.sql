CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        model       TEXT NOT NULL,
        state       TEXT NOT NULL,   -- queued | running | succeeded | failed | timed_out | cancelled | interrupted
        attempt     INTEGER NOT NULL DEFAULT 1,
        trigger     TEXT NOT NULL,
        time0       TEXT NOT NULL,
        mode        TEXT NOT NULL,
        run_dir     TEXT NOT NULL,   -- relative to the spool
        pid         INTEGER,
        queued_at   TEXT NOT NULL,
        started_at  TEXT,
        ended_at    TEXT,
        exit_code   INTEGER,
        reason      TEXT,
        diag        TEXT,            -- JSON list of {level, description}
        retry_of    TEXT,            -- the run this one retries
        retry_state TEXT,            -- after a failure: due | done | none
        retry_at    TEXT             -- when the retry is due
     );
     CREATE INDEX runs_by_model ON runs(model, id);
     -- A scheduled time fires once: the ledger refuses a second first attempt for it.
     CREATE UNIQUE INDEX runs_scheduled_once ON runs(model, time0)
        WHERE trigger = 'schedule' AND retry_of IS NULL;
     CREATE INDEX runs_by_state ON runs(state, id);
     CREATE TABLE run_inputs (
        run         TEXT NOT NULL REFERENCES runs(id),
        slot        TEXT NOT NULL,
        submission  TEXT NOT NULL REFERENCES submissions(id),
        PRIMARY KEY (run, slot, submission)
     );
     CREATE TABLE run_outputs (
        run         TEXT NOT NULL REFERENCES runs(id),
        channel     TEXT NOT NULL,
        name        TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        submission  TEXT,
        PRIMARY KEY (run, name)
     );
     CREATE INDEX run_outputs_waiting ON run_outputs(channel, sha256) WHERE submission IS NULL;
     ALTER TABLE submissions ADD COLUMN produced_by TEXT;