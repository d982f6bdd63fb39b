ALTER TABLE submissions ADD COLUMN route TEXT;          -- routed | unrouted | held | dropped
     ALTER TABLE submissions ADD COLUMN route_rules TEXT;    -- JSON list of the rules that matched
     ALTER TABLE submissions ADD COLUMN route_actions TEXT;  -- JSON list of their actions
     ALTER TABLE submissions ADD COLUMN rules_version TEXT;  -- hash of the rule set that decided
     CREATE INDEX submissions_by_route ON submissions(route, id) WHERE route IS NOT NULL;
     CREATE TABLE deliveries (
        submission  TEXT NOT NULL REFERENCES submissions(id),
        model       TEXT NOT NULL,
        slot        TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',   -- pending | consumed | expired
        run         TEXT,                              -- the run that consumed it
        note        TEXT,                              -- why it expired
        PRIMARY KEY (submission, model, slot)
     );
     CREATE INDEX deliveries_pending ON deliveries(model, state, submission);