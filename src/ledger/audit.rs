//! The audit log (every operator action, done or refused, with who and when), pauses kept
//! across restarts, and files held back from their models.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, sq, timestamp};

/// Who paused something, and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pause {
    /// The operator.
    pub by: String,
    /// When.
    pub at: String,
}

/// What holding a file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// No such file.
    NotFound,
    /// Already held, by this operator.
    AlreadyHeld(String),
    /// Not archived (its state): only an archived file is held.
    NotArchived(String),
    /// Held; this many deliveries wait for its release.
    Held {
        /// Pending deliveries of the file.
        waiting: i64,
    },
}

/// What releasing a file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// No such file.
    NotFound,
    /// It was not held.
    NotHeld,
    /// Released; it was held by this operator.
    Released {
        /// Who had held it.
        holder: String,
    },
}

/// A line of the audit log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at: String,
    /// Who.
    pub who: String,
    /// Action name.
    pub action: String,
    /// What it acted on.
    pub target: String,
    /// Details.
    pub detail: Option<String>,
    /// done, or why it was refused.
    pub outcome: String,
}

impl Ledger {
    /// Writes a line of the audit log.
    pub fn audit(
        &mut self,
        who: &str,
        action: &str,
        target: &str,
        detail: Option<&str>,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO audit (at, who, action, target, detail, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![timestamp(now), who, action, target, detail, outcome],
            )
            .map_err(sq(self.path(), "write audit log"))?;
        Ok(())
    }

    /// The audit log, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT id, at, who, action, target, detail, outcome FROM audit
                 ORDER BY id DESC LIMIT ?1",
            )
            .and_then(|mut st| {
                st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        who: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        detail: r.get(5)?,
                        outcome: r.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(sq(self.path(), "read audit log"))
    }

    /// Records a pause (`Some`) or its end (`None`).
    pub fn set_pause(
        &mut self,
        kind: &str,
        name: &str,
        pause: Option<&Pause>,
    ) -> Result<(), LedgerError> {
        match pause {
            Some(p) => self.conn.execute(
                "INSERT OR REPLACE INTO pauses (kind, name, by, at) VALUES (?1, ?2, ?3, ?4)",
                params![kind, name, p.by, p.at],
            ),
            None => self.conn.execute(
                "DELETE FROM pauses WHERE kind = ?1 AND name = ?2",
                params![kind, name],
            ),
        }
        .map_err(sq(self.path(), "record pause"))?;
        Ok(())
    }

    /// Pauses in force: (kind, name, pause).
    pub fn pauses(&self) -> Result<Vec<(String, String, Pause)>, LedgerError> {
        self.conn
            .prepare("SELECT kind, name, by, at FROM pauses ORDER BY kind, name")
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        Pause {
                            by: r.get(2)?,
                            at: r.get(3)?,
                        },
                    ))
                })?
                .collect()
            })
            .map_err(sq(self.path(), "read pauses"))
    }

    /// Holds an archived file back from its models.
    pub fn hold(&mut self, id: &str, by: &str) -> Result<Hold, LedgerError> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT state, held_by FROM submissions WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sq(self.path(), "read file"))?;
        Ok(match row {
            None => Hold::NotFound,
            Some((_, Some(holder))) => Hold::AlreadyHeld(holder),
            Some((state, None)) if state != "archived" => Hold::NotArchived(state),
            Some(_) => {
                self.conn
                    .execute(
                        "UPDATE submissions SET held_by = ?2 WHERE id = ?1",
                        params![id, by],
                    )
                    .map_err(sq(self.path(), "hold file"))?;
                let waiting: i64 = self
                    .conn
                    .query_row(
                        "SELECT count(*) FROM deliveries WHERE submission = ?1 AND state = 'pending'",
                        [id],
                        |r| r.get(0),
                    )
                    .map_err(sq(self.path(), "read deliveries"))?;
                Hold::Held { waiting }
            }
        })
    }

    /// Cancels the retry due of a run; false if none was due.
    pub fn cancel_retry(&mut self, id: &str) -> Result<bool, LedgerError> {
        let n = self
            .conn
            .execute(
                "UPDATE runs SET retry_state = 'none' WHERE id = ?1 AND retry_state = 'due'",
                [id],
            )
            .map_err(sq(self.path(), "cancel retry"))?;
        Ok(n == 1)
    }

    /// Releases a held file.
    pub fn release(&mut self, id: &str) -> Result<Release, LedgerError> {
        let row: Option<Option<String>> = self
            .conn
            .query_row("SELECT held_by FROM submissions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sq(self.path(), "read file"))?;
        Ok(match row {
            None => Release::NotFound,
            Some(None) => Release::NotHeld,
            Some(Some(holder)) => {
                self.conn
                    .execute(
                        "UPDATE submissions SET held_by = NULL WHERE id = ?1",
                        params![id],
                    )
                    .map_err(sq(self.path(), "release file"))?;
                Release::Released { holder }
            }
        })
    }
}
