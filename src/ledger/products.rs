//! Reads for the products' deadlines: which run issued a product, what it was made from and
//! when each part arrived, and where the chain to the next issue stands. Operational traffic
//! only: a replay's runs and files never count toward a deadline.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, sq, timestamp};

/// A run, as the deadlines need it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTimes {
    /// Its id.
    pub id: String,
    /// Its model.
    pub model: String,
    /// Its time0.
    pub time0: DateTime<Utc>,
    /// When it was queued (its inputs ready).
    pub queued_at: DateTime<Utc>,
    /// When its program started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended, and whether it succeeded.
    pub ended_at: Option<DateTime<Utc>>,
    /// Its state's name.
    pub state: String,
    /// Who asked for it, for a run an operator (or a fallback) requested.
    pub requested_by: Option<String>,
}

/// One input of a run: its slot, when its file arrived, and the run that made it, if one did.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTimes {
    /// The slot it filled.
    pub slot: String,
    /// When the file was claimed.
    pub received_at: DateTime<Utc>,
    /// The run whose output it was.
    pub produced_by: Option<String>,
}

fn time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn run_times(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunTimes> {
    Ok(RunTimes {
        id: r.get(0)?,
        model: r.get(6)?,
        time0: time(r.get(7)?).unwrap_or_default(),
        queued_at: time(r.get(1)?).unwrap_or_default(),
        started_at: time(r.get(2)?),
        ended_at: time(r.get(3)?),
        state: r.get(4)?,
        requested_by: r.get(5)?,
    })
}

const RUN_TIMES: &str = "id, queued_at, started_at, ended_at, state, requested_by, model, time0";

impl Ledger {
    /// Succeeded operational runs of a model that ended in `(after, until]`, oldest first, at
    /// most `limit`.
    pub fn succeeded_between(
        &self,
        model: &str,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunTimes>, LedgerError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_TIMES} FROM runs
                 WHERE model = ?1 AND session IS NULL AND state = 'succeeded'
                   AND ended_at > ?2 AND ended_at <= ?3
                 ORDER BY ended_at LIMIT ?4"
            ))
            .and_then(|mut st| {
                st.query_map(
                    params![
                        model,
                        timestamp(after),
                        timestamp(until),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    run_times,
                )?
                .collect()
            })
            .map_err(sq(self.path(), "read a model's runs"))
    }

    /// The issue of a product by a model for one cycle: its first succeeded operational run
    /// (by end) whose time0 is in `(after, until]`.
    pub fn issue_between(
        &self,
        model: &str,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<RunTimes>, LedgerError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_TIMES} FROM runs
                 WHERE model = ?1 AND session IS NULL AND state = 'succeeded'
                   AND time0 > ?2 AND time0 <= ?3
                 ORDER BY ended_at LIMIT 1"
            ))
            .and_then(|mut st| {
                st.query_row(
                    params![model, timestamp(after), timestamp(until)],
                    run_times,
                )
                .optional()
            })
            .map_err(sq(self.path(), "read a product's issue"))
    }

    /// The latest operational run of a model queued after `after`, if any.
    pub fn latest_run_after(
        &self,
        model: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<RunTimes>, LedgerError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_TIMES} FROM runs
                 WHERE model = ?1 AND session IS NULL AND queued_at > ?2
                 ORDER BY queued_at DESC LIMIT 1"
            ))
            .and_then(|mut st| {
                st.query_row(params![model, timestamp(after)], run_times)
                    .optional()
            })
            .map_err(sq(self.path(), "read a model's latest run"))
    }

    /// A run, as the deadlines need it.
    pub fn run_times(&self, id: &str) -> Result<Option<RunTimes>, LedgerError> {
        self.conn
            .prepare_cached(&format!("SELECT {RUN_TIMES} FROM runs WHERE id = ?1"))
            .and_then(|mut st| st.query_row([id], run_times).optional())
            .map_err(sq(self.path(), "read a run"))
    }

    /// A run's inputs, with when each arrived and which run made it.
    pub fn input_times(&self, run: &str) -> Result<Vec<InputTimes>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT i.slot, s.received_at, s.produced_by
                 FROM run_inputs i JOIN submissions s ON s.id = i.submission
                 WHERE i.run = ?1 ORDER BY s.id",
            )
            .and_then(|mut st| {
                st.query_map([run], |r| {
                    Ok(InputTimes {
                        slot: r.get(0)?,
                        received_at: time(r.get(1)?).unwrap_or_default(),
                        produced_by: r.get(2)?,
                    })
                })?
                .collect()
            })
            .map_err(sq(self.path(), "read a run's inputs"))
    }

    /// When the latest operational file delivered to a model's slot after `after` arrived.
    pub fn latest_delivery_after(
        &self,
        model: &str,
        slot: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT s.received_at FROM deliveries d JOIN submissions s ON s.id = d.submission
                 WHERE d.model = ?1 AND d.slot = ?2 AND d.submission > ?3
                   AND s.session IS NULL AND s.received_at > ?4
                 ORDER BY d.submission DESC LIMIT 1",
            )
            .and_then(|mut st| {
                // Claim ids sort as their claim times: none claimed before `after` is read.
                let id = crate::id::ClaimId(after.timestamp_micros()).text();
                st.query_row(params![model, slot, id, timestamp(after)], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
            })
            .map(time)
            .map_err(sq(self.path(), "read a slot's latest delivery"))
    }

    /// Whether a run was requested by `who` (a fallback is requested once per deadline).
    pub fn requested_by_exists(&self, who: &str) -> Result<bool, LedgerError> {
        self.conn
            .prepare_cached("SELECT 1 FROM runs WHERE requested_by = ?1 LIMIT 1")
            .and_then(|mut st| st.exists([who]))
            .map_err(sq(self.path(), "read requested runs"))
    }
}
