//! Reads for `pom impact`: the archived operational files of a period as routing saw them, and
//! the runs that took a file as an input. Streamed: a period of millions of files is never held.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{Ledger, LedgerError, sq};

/// An archived file, as routing needs it.
#[derive(Debug, Clone)]
pub struct Archived {
    /// Its id.
    pub id: String,
    /// Its channel.
    pub channel: String,
    /// Its name as dropped.
    pub original: Vec<u8>,
    /// Its format and version.
    pub format: String,
    /// Its format's version.
    pub version: String,
    /// Where it is stored, under the spool; none once pruned.
    pub stored: Option<String>,
}

impl Ledger {
    /// Each archived operational file received in `[since, until)`, oldest first, handed to
    /// `each` one at a time.
    pub fn each_archived_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        mut each: impl FnMut(Archived),
    ) -> Result<(), LedgerError> {
        let (from, to) = (
            crate::id::ClaimId(since.timestamp_micros()).text(),
            crate::id::ClaimId(until.timestamp_micros()).text(),
        );
        self.conn
            .prepare(
                "SELECT id, channel, original, format, version,
                        CASE WHEN pruned_at IS NULL THEN stored END
                 FROM submissions
                 WHERE id >= ?1 AND id < ?2 AND state = 'archived' AND session IS NULL
                 ORDER BY id",
            )
            .and_then(|mut st| {
                let mut rows = st.query(params![from, to])?;
                while let Some(r) = rows.next()? {
                    each(Archived {
                        id: r.get(0)?,
                        channel: r.get(1)?,
                        original: r.get(2)?,
                        format: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        version: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        stored: r.get(5)?,
                    });
                }
                Ok(())
            })
            .map_err(sq(self.path(), "read archived files"))
    }

    /// The operational runs that took a file in a slot of a model: their ids.
    pub fn runs_taking(
        &self,
        file: &str,
        model: &str,
        slot: &str,
    ) -> Result<Vec<String>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT i.run FROM run_inputs i JOIN runs r ON r.id = i.run
                 WHERE i.submission = ?1 AND i.slot = ?3 AND r.model = ?2 AND r.session IS NULL
                 ORDER BY i.run",
            )
            .and_then(|mut st| {
                st.query_map(params![file, model, slot], |r| r.get(0))?
                    .collect()
            })
            .map_err(sq(self.path(), "read the runs a file fed"))
    }
}
