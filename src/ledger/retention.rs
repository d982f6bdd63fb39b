//! Retention in the ledger: which stored files and run folders are past their keep, and the
//! record of what was pruned and when. Rows are never deleted: a pruned file or run keeps its
//! history, lineage and verdict, with `pruned_at` set.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{COLUMNS, Ledger, LedgerError, Submission, row_of, sq, timestamp};

/// A run folder retention may remove: the run's id and the folder under the spool.
pub type Prunable = (String, String);

impl Ledger {
    /// Stored files of `channel` received before the claim id `before`, oldest first.
    pub fn prunable_files(
        &self,
        channel: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<Submission>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM submissions WHERE channel = ?1 AND id < ?2
                 AND pruned_at IS NULL AND stored IS NOT NULL AND state != 'claimed'
                 ORDER BY id LIMIT ?3"
            ))
            .and_then(|mut st| {
                st.query_map(params![channel, before, limit], row_of)?
                    .collect()
            })
            .map_err(sq(&self.path, "read prunable files"))
    }

    /// Run folders of `model` whose run ended before `before`, oldest first; never the folder
    /// holding the model's newest operational saved state (the next run starts from it).
    pub fn prunable_runs(
        &self,
        model: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Prunable>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(
                "SELECT id, run_dir FROM runs WHERE model = ?1 AND pruned_at IS NULL
                 AND ended_at < ?2
                 AND id IS NOT (SELECT run FROM states WHERE model = ?1 AND session IS NULL
                                ORDER BY valid_at DESC, run DESC LIMIT 1)
                 ORDER BY ended_at LIMIT ?3",
            )
            .and_then(|mut st| {
                st.query_map(params![model, timestamp(before), limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(sq(&self.path, "read prunable runs"))
    }

    /// Records that these files' stored copies were removed at `at`.
    pub fn mark_files_pruned(
        &mut self,
        ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.mark_pruned("submissions", ids, at)
    }

    /// Records that these runs' folders were removed at `at`.
    pub fn mark_runs_pruned(
        &mut self,
        ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.mark_pruned("runs", ids, at)
    }

    fn mark_pruned(
        &mut self,
        table: &'static str,
        ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(sq(&path, "record pruning"))?;
        {
            let mut st = tx
                .prepare_cached(&format!(
                    "UPDATE {table} SET pruned_at = ?2 WHERE id = ?1 AND pruned_at IS NULL"
                ))
                .map_err(sq(&path, "record pruning"))?;
            let at = timestamp(at);
            for id in ids {
                st.execute(params![id, at])
                    .map_err(sq(&path, "record pruning"))?;
            }
        }
        tx.commit().map_err(sq(&path, "record pruning"))
    }

    /// Operational archived files received in `[from, to)` (claim ids), on a channel if given,
    /// whose stored copies retention removed: what a replay of that period cannot replay.
    pub fn pruned_between(
        &self,
        from: &str,
        to: &str,
        channel: Option<&str>,
    ) -> Result<Vec<Submission>, LedgerError> {
        self.archived_in(from, to, channel, true)
    }

    /// How many files and run folders retention has removed.
    pub fn pruned_counts(&self) -> Result<(i64, i64), LedgerError> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM submissions WHERE pruned_at IS NOT NULL),
                        (SELECT count(*) FROM runs WHERE pruned_at IS NOT NULL)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sq(&self.path, "count pruned"))
    }
}
