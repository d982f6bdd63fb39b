//! Replay sessions: created, followed, cancelled and ended, and what the replay loop, the
//! dispatcher and the views read of them.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, sq, timestamp};

/// A session as the ledger knows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    /// Id (also the folder of its outputs and runs).
    pub id: String,
    /// Name.
    pub name: String,
    /// Folder under `spool/replay/`.
    pub folder: String,
    /// When it began.
    pub created_at: String,
    /// Speed (none: as fast as possible).
    pub speed: Option<f64>,
    /// Models that run (none: all).
    pub models: Option<Vec<String>>,
    /// First original arrival.
    pub period_from: Option<String>,
    /// Last original arrival.
    pub period_to: Option<String>,
    /// Files to replay.
    pub files_total: i64,
    /// Files released so far.
    pub files_released: i64,
    /// Replayed files decided so far (outputs of its runs aside).
    pub files_decided: i64,
    /// Runs so far.
    pub runs: i64,
    /// replaying, finishing or done.
    pub state: String,
    /// When it was done.
    pub ended_at: Option<String>,
    /// The comparison report, relative to the spool.
    pub report: Option<String>,
}

/// What cancelling a session came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// Done: the session's id, and how many queued runs were cancelled with it.
    Done {
        /// Session id.
        id: String,
        /// Its queued runs, now cancelled.
        runs: usize,
    },
    /// No session of that id or name.
    NotFound,
    /// The session is not in progress (its state).
    Over(String),
}

/// A session about to begin.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Folder under `spool/replay/`.
    pub folder: String,
    /// Speed (none: as fast as possible).
    pub speed: Option<f64>,
    /// Models that run, as JSON (none: all).
    pub models: Option<String>,
    /// First original arrival.
    pub from: Option<String>,
    /// Last original arrival.
    pub to: Option<String>,
    /// Files to replay.
    pub total: i64,
}

impl Ledger {
    /// Records a session that begins.
    pub fn create_session(
        &mut self,
        s: &NewSession,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO sessions (id, name, folder, created_at, speed, models, period_from,
                 period_to, files_total, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'replaying')",
                params![s.id, s.name, s.folder, timestamp(now), s.speed, s.models, s.from, s.to, s.total],
            )
            .map(|_| ())
            .map_err(sq(self.path(), "create session"))
    }

    /// Records how many files a session has released, up to which original arrival.
    pub fn record_replay_progress(
        &mut self,
        id: &str,
        released: i64,
        released_to: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE sessions SET files_released = ?2, released_to = ?3 WHERE id = ?1",
                params![id, released, released_to],
            )
            .map(|_| ())
            .map_err(sq(self.path(), "record replay progress"))
    }

    /// Ends a session: its comparison report (relative to the spool), and `done`.
    pub fn end_session(
        &mut self,
        id: &str,
        report: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE sessions SET report = ?2 WHERE id = ?1",
                params![id, report],
            )
            .map_err(sq(self.path(), "record report"))?;
        self.set_session_state(id, "done", Some(now))
    }

    /// Records a session's state (and when it ended, if it did).
    pub fn set_session_state(
        &mut self,
        id: &str,
        state: &str,
        ended: Option<DateTime<Utc>>,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE sessions SET state = ?2, ended_at = coalesce(?3, ended_at) WHERE id = ?1",
                params![id, state, ended.map(timestamp)],
            )
            .map(|_| ())
            .map_err(sq(self.path(), "record session state"))
    }

    /// Cancels a session by id or name (the newest of that name) that is replaying or finishing:
    /// its state becomes `cancelled` (the replay loop then stops releasing its files, which stay in
    /// its folder) and its queued runs are cancelled.
    pub fn cancel_session(
        &mut self,
        session: &str,
        now: DateTime<Utc>,
    ) -> Result<Cancelled, LedgerError> {
        let l = self;
        let path = l.path().to_path_buf();
        let found: Option<(String, String)> = l
            .conn
            .query_row(
                "SELECT id, state FROM sessions WHERE id = ?1 OR name = ?1
                 ORDER BY created_at DESC LIMIT 1",
                [session],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sq(&path, "find session"))?;
        let Some((id, state)) = found else {
            return Ok(Cancelled::NotFound);
        };
        if state != "replaying" && state != "finishing" {
            return Ok(Cancelled::Over(state));
        }
        let tx = l.conn.transaction().map_err(sq(&path, "begin"))?;
        tx.execute(
            "UPDATE sessions SET state = 'cancelled', ended_at = ?2 WHERE id = ?1",
            params![id, timestamp(now)],
        )
        .map_err(sq(&path, "cancel session"))?;
        let runs = tx
            .execute(
                "UPDATE runs SET state = 'cancelled', reason = 'its replay session was cancelled'
                 WHERE session = ?1 AND state = 'queued'",
                [&id],
            )
            .map_err(sq(&path, "cancel the session's queued runs"))?;
        tx.commit().map_err(sq(&path, "commit"))?;
        Ok(Cancelled::Done { id, runs })
    }

    /// Sessions left replaying: (id, folder, speed).
    pub fn replaying_sessions(&self) -> Result<Vec<(String, String, Option<f64>)>, LedgerError> {
        self.conn
            .prepare("SELECT id, folder, speed FROM sessions WHERE state = 'replaying'")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read sessions"))
    }

    /// The only models a session runs (none: all).
    pub fn session_models(&self, id: &str) -> Result<Option<Vec<String>>, LedgerError> {
        let m: Option<Option<String>> = self
            .conn
            .query_row("SELECT models FROM sessions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sq(self.path(), "read session"))?;
        Ok(m.flatten().and_then(|m| serde_json::from_str(&m).ok()))
    }

    /// A session's state, if it exists.
    pub fn session_state(&self, id: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row("SELECT state FROM sessions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sq(self.path(), "read session"))
    }

    /// Sessions whose files are all released.
    pub fn finishing_sessions(&self) -> Result<Vec<String>, LedgerError> {
        self.conn
            .prepare_cached("SELECT id FROM sessions WHERE state = 'finishing'")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(sq(self.path(), "read sessions"))
    }

    /// A session's progress: (files and runs still open, every change so far).
    pub fn session_progress(&self, id: &str) -> Result<(i64, i64), LedgerError> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM submissions WHERE session = ?1 AND state = 'claimed')
                      + (SELECT count(*) FROM runs WHERE session = ?1 AND state IN ('queued', 'running')),
                        (SELECT count(*) FROM submissions WHERE session = ?1)
                      + (SELECT count(*) FROM runs WHERE session = ?1)",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sq(self.path(), "read session progress"))
    }
}

impl Ledger {
    /// Replay sessions, newest first, with their progress.
    pub fn sessions(&self) -> Result<Vec<Session>, LedgerError> {
        self.conn
            .prepare(
                "SELECT id, name, folder, created_at, speed, models, period_from, period_to,
                 files_total, files_released, state, ended_at, report,
                 (SELECT count(*) FROM submissions s WHERE s.session = x.id AND s.state <> 'claimed'
                  AND s.origin IS NOT NULL),
                 (SELECT count(*) FROM runs r WHERE r.session = x.id)
                 FROM sessions x ORDER BY created_at DESC",
            )
            .and_then(|mut st| st.query_map([], session_row)?.collect())
            .map_err(sq(self.path(), "read sessions"))
    }

    /// One session, by id or name (the newest of that name).
    pub fn session(&self, key: &str) -> Result<Option<Session>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id, name, folder, created_at, speed, models, period_from, period_to,
                 files_total, files_released, state, ended_at, report,
                 (SELECT count(*) FROM submissions s WHERE s.session = x.id AND s.state <> 'claimed'
                  AND s.origin IS NOT NULL),
                 (SELECT count(*) FROM runs r WHERE r.session = x.id)
                 FROM sessions x WHERE id = ?1 OR name = ?1 ORDER BY created_at DESC LIMIT 1",
                [key],
                session_row,
            )
            .optional()
            .map_err(sq(self.path(), "read session"))
    }
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        name: r.get(1)?,
        folder: r.get(2)?,
        created_at: r.get(3)?,
        speed: r.get(4)?,
        models: r
            .get::<_, Option<String>>(5)?
            .and_then(|m| serde_json::from_str(&m).ok()),
        period_from: r.get(6)?,
        period_to: r.get(7)?,
        files_total: r.get(8)?,
        files_released: r.get(9)?,
        state: r.get(10)?,
        ended_at: r.get(11)?,
        report: r.get(12)?,
        files_decided: r.get(13)?,
        runs: r.get(14)?,
    })
}

/// A period of original time: (from, to).
pub type Span = (DateTime<Utc>, DateTime<Utc>);

impl Ledger {
    /// The simulated clock of a replay session: the original time up to which the past has been
    /// replayed, every file that arrived by then released and decided (so that a scheduled
    /// model sees its inputs as they had arrived). Once every file is released, the end of the
    /// period. With the start of the period: (from, now).
    pub fn replay_clock(&self, session: &str) -> Result<Option<Span>, LedgerError> {
        #[allow(clippy::type_complexity, reason = "one row of five columns, read once")]
        let row: Option<(Option<String>, Option<String>, Option<String>, String, Option<String>)> =
            self.conn
                .query_row(
                    "SELECT period_from, period_to, released_to, state,
                     (SELECT min(original_at) FROM submissions WHERE session = ?1 AND state = 'claimed')
                     FROM sessions WHERE id = ?1",
                    [session],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(sq(self.path(), "read the replay clock"))?;
        let Some((from, to, released, state, undecided)) = row else {
            return Ok(None);
        };
        let t = |s: Option<String>| {
            s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let (Some(from), to, released) = (t(from), t(to), t(released)) else {
            return Ok(None);
        };
        let mut now = if state == "replaying" {
            released.unwrap_or(from)
        } else {
            to.max(released).unwrap_or(from)
        };
        if let Some(u) = t(undecided) {
            now = now.min(u - chrono::Duration::microseconds(1));
        }
        Ok(Some((from, now)))
    }
}

/// A session not done yet: its id, and the only models it runs (none: all).
pub type OpenSession = (String, Option<Vec<String>>);

/// Active sessions' ids and the models they run, for the dispatcher.
pub fn open_sessions(reader: &Ledger) -> Result<Vec<OpenSession>, LedgerError> {
    reader
        .conn
        .prepare_cached("SELECT id, models FROM sessions WHERE state <> 'done'")
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?
                        .and_then(|m| serde_json::from_str(&m).ok()),
                ))
            })?
            .collect()
        })
        .map_err(sq(reader.path(), "read sessions"))
}
