-- Unrouted operational files per channel, newest last: the alert of a channel that expects
-- every file routed, and `pom reroute --unrouted`, find them without a scan.
CREATE INDEX submissions_unrouted ON submissions(channel, id)
     WHERE route = 'unrouted' AND session IS NULL;
-- A file routed again under the rules in force (`pom reroute`): each a new decision, linked to
-- the file, with the route it had before.
CREATE TABLE reroutes (
        id            INTEGER PRIMARY KEY,
        file          TEXT NOT NULL REFERENCES submissions(id),
        at            TEXT NOT NULL,
        by            TEXT NOT NULL,
        rules_version TEXT NOT NULL,
        route_before  TEXT,
        rules_before  TEXT,            -- JSON list
        route         TEXT NOT NULL,
        rules         TEXT             -- JSON list of the rules that matched
     );
CREATE INDEX reroutes_by_file ON reroutes(file, id);
