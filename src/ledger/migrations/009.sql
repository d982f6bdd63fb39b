-- Stations: which archived operational PI time-series file holds which location's series (one
-- row per file, location and parameter), filled in the background, for the station view.
CREATE TABLE series_index (
        submission    TEXT NOT NULL REFERENCES submissions(id),
        location      TEXT NOT NULL,
        parameter     TEXT NOT NULL,
        forecast      INTEGER NOT NULL,  -- 1: it has a forecastDate, or a run produced the file
        members       INTEGER NOT NULL,  -- its series (ensemble members count one each)
        first_at      TEXT,              -- its first and last event, UTC
        last_at       TEXT,
        forecast_date TEXT,
        PRIMARY KEY (submission, location, parameter)
     );
CREATE INDEX series_by_location ON series_index(location, forecast, last_at);
-- How far the index has read the ledger: every submission up to this id is indexed or not PI.
CREATE TABLE series_indexed (
        one     INTEGER PRIMARY KEY CHECK (one = 1),
        upto    TEXT NOT NULL
     );
