//! Reads for the views, the alerts, `/metrics` and the replay comparison: each a bounded,
//! indexed query, so that a page answers in milliseconds with millions of files in the ledger.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, sq};

/// A file's delivery: (model, slot, state, run).
pub type DeliveryRow = (String, String, String, Option<String>);

/// A file's id and name as dropped.
pub type NewestFile = (String, Vec<u8>);

/// A replay run: (id, model, time0, the run it mirrors, state).
pub type ReplayRunRow = (String, String, String, Option<String>, String);

impl Ledger {
    /// Operational files claimed and not yet decided, per channel.
    pub fn in_progress_by_channel(&self) -> Result<BTreeMap<String, i64>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT channel, count(*) FROM submissions WHERE state = 'claimed'
                 AND session IS NULL GROUP BY channel",
            )
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(sq(self.path(), "count files in progress"))
    }

    /// Operational deliveries waiting for a model.
    pub fn pending_count(&self, model: &str) -> Result<i64, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT count(*) FROM deliveries d JOIN submissions s ON s.id = d.submission
                 WHERE d.model = ?1 AND d.state = 'pending' AND s.session IS NULL",
            )
            .and_then(|mut st| st.query_row([model], |r| r.get(0)))
            .map_err(sq(self.path(), "count pending inputs"))
    }

    /// Operational deliveries waiting for a model, per slot: how many, and the oldest's id
    /// (the time it arrived).
    pub fn pending_by_slot(
        &self,
        model: &str,
    ) -> Result<BTreeMap<String, (i64, String)>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT d.slot, count(*), min(d.submission) FROM deliveries d
                 JOIN submissions s ON s.id = d.submission
                 WHERE d.model = ?1 AND d.state = 'pending' AND s.session IS NULL
                 GROUP BY d.slot",
            )
            .and_then(|mut st| {
                st.query_map([model], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                    .collect()
            })
            .map_err(sq(self.path(), "read pending inputs"))
    }

    /// The runs that retry a run, oldest first.
    pub fn retries_of(&self, run: &str) -> Result<Vec<String>, LedgerError> {
        self.conn
            .prepare_cached("SELECT id FROM runs WHERE retry_of = ?1 ORDER BY queued_at")
            .and_then(|mut st| st.query_map([run], |r| r.get(0))?.collect())
            .map_err(sq(self.path(), "read retries"))
    }

    /// A file's deliveries, by model.
    pub fn deliveries_of(&self, file: &str) -> Result<Vec<DeliveryRow>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT model, slot, state, run FROM deliveries WHERE submission = ?1 ORDER BY model",
            )
            .and_then(|mut st| {
                st.query_map([file], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read deliveries"))
    }

    /// The submissions that re-inject a file.
    pub fn reinjections_of(&self, file: &str) -> Result<Vec<String>, LedgerError> {
        self.conn
            .prepare_cached("SELECT id FROM submissions WHERE origin = ?1 ORDER BY id")
            .and_then(|mut st| st.query_map([file], |r| r.get(0))?.collect())
            .map_err(sq(self.path(), "read re-injections"))
    }

    /// Every ended operational run's duration in seconds, with its model.
    pub fn run_durations(&self) -> Result<Vec<(String, f64)>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT model, (julianday(ended_at) - julianday(started_at)) * 86400.0 FROM runs
                 WHERE ended_at IS NOT NULL AND started_at IS NOT NULL AND session IS NULL",
            )
            .and_then(|mut st| {
                st.query_map(params![], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?))
                })?
                .collect()
            })
            .map_err(sq(self.path(), "read run durations"))
    }

    /// Each archived file still present by the ledger's account (not pruned), with its stored
    /// path, handed to `each` one row at a time: a restore checks millions of them without
    /// holding them in memory.
    pub fn each_archived_stored(
        &self,
        mut each: impl FnMut(&str, &str),
    ) -> Result<(), LedgerError> {
        self.conn
            .prepare(
                "SELECT id, stored FROM submissions
                 WHERE state = 'archived' AND stored IS NOT NULL AND pruned_at IS NULL",
            )
            .and_then(|mut st| {
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    each(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?);
                }
                Ok(())
            })
            .map_err(sq(self.path(), "read archived files"))
    }

    /// The id of the last operational file received on a channel (a replay's never counts: it
    /// would hide a late feed).
    pub fn last_id_on(&self, channel: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM submissions WHERE channel = ?1 AND session IS NULL
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut st| st.query_row([channel], |r| r.get(0)).optional())
            .map_err(sq(self.path(), "read last arrival"))
    }

    /// Operational files of a channel that no rule routed (and no reroute has routed since):
    /// how many, and the newest (id, name).
    pub fn unrouted_on(&self, channel: &str) -> Result<(i64, Option<NewestFile>), LedgerError> {
        let count = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM submissions WHERE channel = ?1 AND route = 'unrouted'
                 AND session IS NULL",
            )
            .and_then(|mut st| st.query_row([channel], |r| r.get(0)))
            .map_err(sq(self.path(), "count unrouted files"))?;
        let newest = self
            .conn
            .prepare_cached(
                "SELECT id, original FROM submissions WHERE channel = ?1 AND route = 'unrouted'
                 AND session IS NULL ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([channel], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(sq(self.path(), "read unrouted files"))?;
        Ok((count, newest))
    }

    /// A run's outputs still stored: (output name, submission id, stored path).
    pub fn stored_outputs(&self, run: &str) -> Result<Vec<(String, String, String)>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT o.name, s.id, s.stored FROM run_outputs o JOIN submissions s ON s.id = o.submission
                 WHERE o.run = ?1 AND s.stored IS NOT NULL ORDER BY o.name",
            )
            .and_then(|mut st| {
                st.query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read run outputs"))
    }

    /// Where a session's archived PI time series that no run produced are stored.
    pub fn session_observations(&self, session: &str) -> Result<Vec<String>, LedgerError> {
        self.conn
            .prepare(
                "SELECT stored FROM submissions WHERE session = ?1 AND state = 'archived'
                 AND produced_by IS NULL AND format LIKE 'pi-timeseries%'",
            )
            .and_then(|mut st| st.query_map([session], |r| r.get(0))?.collect())
            .map_err(sq(self.path(), "read observed series"))
    }

    /// A session's name.
    pub fn session_name(&self, session: &str) -> Result<String, LedgerError> {
        self.conn
            .query_row("SELECT name FROM sessions WHERE id = ?1", [session], |r| {
                r.get(0)
            })
            .map_err(sq(self.path(), "read session"))
    }

    /// A session's runs, by time0 and model.
    pub fn session_runs(&self, session: &str) -> Result<Vec<ReplayRunRow>, LedgerError> {
        self.conn
            .prepare(
                "SELECT id, model, time0, mirrors, state FROM runs WHERE session = ?1
                 ORDER BY time0, model",
            )
            .and_then(|mut st| {
                st.query_map(params![session], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect()
            })
            .map_err(sq(self.path(), "read replay runs"))
    }

    /// The forecasts a session did not make again: the operational runs that succeeded on the
    /// files it replays, or down the chain on what those runs made, of the models it runs, with
    /// no run of the session mirroring one of that model and time0 (a rerun is the same
    /// forecast), as (run, model, time0), by time0.
    pub fn not_made_again(
        &self,
        session: &str,
    ) -> Result<Vec<(String, String, String)>, LedgerError> {
        self.conn
            .prepare(
                "WITH RECURSIVE reached(run) AS (
                    SELECT i.run FROM submissions s JOIN run_inputs i ON i.submission = s.origin
                     WHERE s.session = ?1 AND s.origin IS NOT NULL
                    UNION
                    SELECT i.run FROM reached x JOIN run_outputs o ON o.run = x.run
                      JOIN run_inputs i ON i.submission = o.submission
                 )
                 SELECT r.id, r.model, r.time0 FROM runs r JOIN reached x ON x.run = r.id
                 WHERE r.session IS NULL AND r.state = 'succeeded'
                   AND NOT EXISTS (SELECT 1 FROM runs m JOIN runs o ON o.id = m.mirrors
                                   WHERE m.session = ?1 AND o.model = r.model
                                     AND o.time0 = r.time0)
                   AND (NOT EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND models IS NOT NULL)
                        OR r.model IN (SELECT value FROM sessions, json_each(sessions.models)
                                       WHERE sessions.id = ?1))
                 ORDER BY r.time0, r.model, r.id",
            )
            .and_then(|mut st| {
                st.query_map(params![session], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read the runs a replay did not make again"))
    }
}
