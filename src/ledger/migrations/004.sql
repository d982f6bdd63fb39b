CREATE TABLE audit (
        id          INTEGER PRIMARY KEY,
        at          TEXT NOT NULL,
        who         TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT NOT NULL,
        detail      TEXT,
        outcome     TEXT NOT NULL    -- done, or why it was refused
     );
     CREATE TABLE pauses (
        kind        TEXT NOT NULL,   -- model | channel
        name        TEXT NOT NULL,
        by          TEXT NOT NULL,
        at          TEXT NOT NULL,
        PRIMARY KEY (kind, name)
     );
     ALTER TABLE submissions ADD COLUMN held_by TEXT;   -- who holds it (an operator, or a rule)
     ALTER TABLE submissions ADD COLUMN origin TEXT;    -- the submission it re-injects
     CREATE TABLE expected_origins (
        channel     TEXT NOT NULL,
        original    BLOB NOT NULL,
        origin      TEXT NOT NULL,
        PRIMARY KEY (channel, original)
     );
     CREATE INDEX submissions_held ON submissions(held_by) WHERE held_by IS NOT NULL;
     CREATE INDEX submissions_origin ON submissions(origin) WHERE origin IS NOT NULL;
     ALTER TABLE runs ADD COLUMN requested_by TEXT;     -- the operator who asked for it
     CREATE INDEX runs_by_queued ON runs(queued_at);