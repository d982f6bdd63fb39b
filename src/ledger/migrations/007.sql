-- A state of several files: each file a run saved, where the next run gets it (its path under
-- input/, as under output/) and where it is kept (relative to the spool). A state recorded before
-- this has no rows here: its one file is `states.stored`, given under the model's declared name.
CREATE TABLE state_files (
        run     TEXT NOT NULL REFERENCES states(run),
        path    TEXT NOT NULL,
        stored  TEXT NOT NULL,
        PRIMARY KEY (run, path)
     );
