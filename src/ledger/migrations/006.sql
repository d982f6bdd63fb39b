-- Warm states: what a model's run saved for the next one, and what each run started from.
CREATE TABLE states (
        run       TEXT PRIMARY KEY,   -- the run that saved it
        model     TEXT NOT NULL,
        valid_at  TEXT NOT NULL,      -- the saving run's time0
        session   TEXT,               -- the replay session it belongs to; NULL: operational
        stored    TEXT NOT NULL       -- the file, relative to the spool
     );
     CREATE INDEX states_by_model ON states(model, session, valid_at);
     ALTER TABLE runs ADD COLUMN state_from TEXT;      -- the run whose state it started from
     ALTER TABLE runs ADD COLUMN state_valid_at TEXT;  -- that state's valid time
     ALTER TABLE runs ADD COLUMN state_start TEXT;     -- warm, cold, or none
