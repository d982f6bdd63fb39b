CREATE TABLE submissions (
        id            TEXT PRIMARY KEY,     -- claim id, time-sortable
        channel       TEXT NOT NULL,
        original      BLOB NOT NULL,        -- name as dropped, relative to the channel folder, byte for byte
        marker        BLOB,                 -- marker file name, on marker channels
        state         TEXT NOT NULL,        -- claimed | archived | rejected | duplicate
        received_at   TEXT NOT NULL,
        decided_at    TEXT,
        size          INTEGER,
        sha256        TEXT,
        format        TEXT,
        version       TEXT,
        checked       TEXT,                 -- XSD used, or well-formedness only
        reject_kind   TEXT,
        reason        TEXT,
        errors        TEXT,                 -- JSON list of {line, column, message}
        duplicate_of  TEXT,
        stored        TEXT                  -- where the file went, relative to the spool
     );
     CREATE INDEX submissions_by_state ON submissions(state, id);
     CREATE INDEX submissions_by_channel ON submissions(channel, id);
     CREATE INDEX submissions_content ON submissions(channel, sha256) WHERE state = 'archived';