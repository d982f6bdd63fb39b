//! Track: model runs in the ledger — created from deliveries exactly once, started, ended, and
//! the outputs they put back in the spool, for lineage.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use crate::id::ClaimId;

/// One line of a PI diagnostics file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiagLine {
    /// 0 fatal, 1 error, 2 warning, 3 info (4 debug).
    pub level: u8,
    /// The message.
    pub description: String,
}

use crate::ledger::{Ledger, LedgerError, sq, timestamp};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, not started.
    Queued,
    /// Its process runs.
    Running,
    /// Exit 0 and no fatal diagnostic.
    Succeeded,
    /// Non-zero exit, a fatal diagnostic, or it could not start.
    Failed,
    /// Killed at its timeout.
    TimedOut,
    /// Cancelled by an operator.
    Cancelled,
    /// The daemon stopped or died while it ran.
    Interrupted,
}

impl RunState {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<RunState> {
        Some(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "timed_out" => RunState::TimedOut,
            "cancelled" => RunState::Cancelled,
            "interrupted" => RunState::Interrupted,
            _ => return None,
        })
    }
}

/// A run as the ledger knows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Model.
    pub model: String,
    /// State.
    pub state: RunState,
    /// Attempt number (1 for the first).
    pub attempt: i64,
    /// Trigger kind that created it.
    pub trigger: String,
    /// time0.
    pub time0: String,
    /// normal or replay.
    pub mode: String,
    /// Run folder, relative to the spool.
    pub run_dir: String,
    /// Process id while running.
    pub pid: Option<i64>,
    /// Its Slurm job id, for a run on the cluster.
    pub slurm_job: Option<i64>,
    /// When created.
    pub queued_at: String,
    /// When started.
    pub started_at: Option<String>,
    /// When ended.
    pub ended_at: Option<String>,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Diagnostics.
    pub diag: Vec<DiagLine>,
    /// Inputs: (slot, submission id).
    pub inputs: Vec<(String, String)>,
    /// The run it retries or reruns.
    pub retry_of: Option<String>,
    /// The operator who asked for it (trigger now, retry, rerun).
    pub requested_by: Option<String>,
    /// How it started, for a model that keeps a state: `warm` (from `state_from`'s state valid at
    /// `state_valid_at`) or `cold`.
    pub state_start: Option<String>,
    /// The run whose saved state it started from.
    pub state_from: Option<String>,
    /// That state's valid time.
    pub state_valid_at: Option<String>,
    /// The replay session it belongs to; none for an operational run.
    pub session: Option<String>,
    /// When retention removed its run folder (the row stays).
    pub pruned_at: Option<String>,
}

/// A run left queued or running: (id, process id, Slurm job id).
pub type Unfinished = (String, Option<i64>, Option<i64>);

/// A run to create, with the deliveries it consumes.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Run id.
    pub id: String,
    /// Model.
    pub model: String,
    /// Trigger kind.
    pub trigger: String,
    /// time0.
    pub time0: DateTime<Utc>,
    /// normal or replay.
    pub mode: String,
    /// Run folder, relative to the spool.
    pub run_dir: String,
    /// (slot, submission id) consumed.
    pub inputs: Vec<(String, String)>,
    /// The replay session it belongs to.
    pub session: Option<String>,
    /// The original run it mirrors (replay).
    pub mirrors: Option<String>,
}

/// What kind of copy of a run: see [`Ledger::create_copy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunCopy {
    /// The next attempt of a failed run.
    Retry,
    /// The same run again, as a first attempt.
    Rerun,
}

/// A delivered file waiting for its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Submission id.
    pub submission: String,
    /// Slot.
    pub slot: String,
    /// Where it is archived, relative to the spool.
    pub stored: String,
    /// Its original name.
    pub original: Vec<u8>,
}

const RUN_COLUMNS: &str = "id, model, state, attempt, trigger, time0, mode, run_dir, pid, queued_at, \
                           started_at, ended_at, exit_code, reason, diag, retry_of, requested_by, \
                           state_start, state_from, state_valid_at, session, slurm_job, pruned_at";

impl Ledger {
    /// Deliveries waiting for a model, oldest first.
    /// Deliveries of operational files (`session` none) or of one replay session.
    ///
    /// With `in_order` (a claim id), only those older than every file of the same traffic still
    /// being examined that was claimed from that id on: a join pairs the oldest waiting file of
    /// each slot, which is known only once every file that arrived before is decided. Two files
    /// examined side by side can be decided in either order; a replay released as fast as
    /// possible does that to every pair of its files. A file claimed before the id (one that
    /// waits for a passing fault to go, alerted as such) holds no join back. The query is one
    /// statement, so that it sees the claims and deliveries of one moment.
    pub fn pending_deliveries(
        &self,
        model: &str,
        session: Option<&str>,
        limit: usize,
        in_order: Option<ClaimId>,
    ) -> Result<Vec<Pending>, LedgerError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT d.submission, d.slot, s.stored, s.original FROM deliveries d
                 JOIN submissions s ON s.id = d.submission
                 WHERE d.model = ?1 AND d.state = 'pending' AND s.held_by IS NULL
                 AND s.session IS ?3
                 AND (?4 IS NULL OR NOT EXISTS (SELECT 1 FROM submissions u
                      WHERE u.state = 'claimed' AND u.session IS ?3 AND u.id >= ?4
                      AND u.id < d.submission))
                 ORDER BY d.submission LIMIT ?2",
            )
            .map_err(sq(self.path(), "read deliveries"))?;
        let rows = st
            .query_map(
                params![model, limit as i64, session, in_order.map(|c| c.text())],
                pending_row,
            )
            .map_err(sq(self.path(), "read deliveries"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sq(self.path(), "read deliveries"))?;
        Ok(rows)
    }

    /// Creates a run and consumes its deliveries, atomically: if any delivery was already
    /// consumed, nothing is written and `false` comes back (no trigger launches two runs).
    pub fn create_run(&mut self, run: &NewRun, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        let path = self.path().to_path_buf();
        let tx = self.conn.transaction().map_err(sq(&path, "begin"))?;
        tx.execute(
            "INSERT INTO runs (id, model, state, trigger, time0, mode, run_dir, queued_at, session,
             mirrors) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                run.id,
                run.model,
                run.trigger,
                timestamp(run.time0),
                run.mode,
                run.run_dir,
                timestamp(now),
                run.session,
                run.mirrors,
            ],
        )
        .map_err(sq(&path, "create run"))?;
        for (slot, submission) in &run.inputs {
            let n = tx
                .execute(
                    "UPDATE deliveries SET state = 'consumed', run = ?1
                     WHERE submission = ?2 AND model = ?3 AND slot = ?4 AND state = 'pending'",
                    params![run.id, submission, run.model, slot],
                )
                .map_err(sq(&path, "consume delivery"))?;
            if n != 1 {
                // Consumed already: the transaction is dropped, so nothing of this run stays.
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO run_inputs (run, slot, submission) VALUES (?1, ?2, ?3)",
                params![run.id, slot, submission],
            )
            .map_err(sq(&path, "record run input"))?;
        }
        tx.commit().map_err(sq(&path, "commit run"))?;
        Ok(true)
    }

    /// Gives up deliveries whose join window ended.
    pub fn expire_deliveries(
        &mut self,
        model: &str,
        gone: &[Pending],
        why: &str,
    ) -> Result<(), LedgerError> {
        let path = self.path().to_path_buf();
        let tx = self.conn.transaction().map_err(sq(&path, "begin"))?;
        for p in gone {
            tx.execute(
                "UPDATE deliveries SET state = 'expired', note = ?4 WHERE submission = ?1
                 AND model = ?2 AND slot = ?3 AND state = 'pending'",
                params![p.submission, model, p.slot, why],
            )
            .map_err(sq(&path, "expire delivery"))?;
        }
        tx.commit().map_err(sq(&path, "commit"))
    }

    /// The last scheduled time a model fired for (operational, or in a replay session).
    pub fn last_scheduled(
        &self,
        model: &str,
        session: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let t: Option<String> = self
            .conn
            .query_row(
                "SELECT max(time0) FROM runs WHERE model = ?1 AND trigger = 'schedule'
                 AND session IS ?2",
                params![model, session],
                |r| r.get(0),
            )
            .map_err(sq(self.path(), "read last scheduled run"))?;
        Ok(t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// The latest file delivered to each slot of a model (whether or not a run used it already).
    pub fn latest_inputs(
        &self,
        model: &str,
        session: Option<&str>,
    ) -> Result<Vec<Pending>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT d.submission, d.slot, s.stored, s.original FROM deliveries d
                 JOIN submissions s ON s.id = d.submission
                 WHERE d.model = ?1 AND d.submission = (
                    SELECT max(x.submission) FROM deliveries x JOIN submissions y ON y.id = x.submission
                    WHERE x.model = d.model AND x.slot = d.slot AND y.held_by IS NULL
                    AND y.session IS ?2)
                 ORDER BY d.slot",
            )
            .and_then(|mut st| {
                st.query_map(params![model, session], pending_row)?
                .collect()
            })
            .map_err(sq(self.path(), "read latest inputs"))
    }

    /// The latest file of a replay session delivered to each slot of a model that had arrived
    /// (originally) by `at`.
    pub fn latest_inputs_at(
        &self,
        model: &str,
        session: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<Pending>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT d.submission, d.slot, s.stored, s.original FROM deliveries d
                 JOIN submissions s ON s.id = d.submission
                 WHERE d.model = ?1 AND d.submission = (
                    SELECT x.submission FROM deliveries x JOIN submissions y ON y.id = x.submission
                    WHERE x.model = d.model AND x.slot = d.slot AND y.held_by IS NULL
                    AND y.session = ?2 AND y.original_at <= ?3
                    ORDER BY y.original_at DESC, x.submission DESC LIMIT 1)
                 ORDER BY d.slot",
            )
            .and_then(|mut st| {
                st.query_map(params![model, session, timestamp(at)], pending_row)?
                    .collect()
            })
            .map_err(sq(self.path(), "read replay inputs"))
    }

    /// The operational run of a model scheduled at `time0`, if one (the run a replay's
    /// scheduled run mirrors).
    pub fn scheduled_at(
        &self,
        model: &str,
        time0: DateTime<Utc>,
    ) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id FROM runs WHERE model = ?1 AND time0 = ?2 AND trigger = 'schedule'
                 AND session IS NULL ORDER BY attempt DESC LIMIT 1",
                params![model, timestamp(time0)],
                |r| r.get(0),
            )
            .optional()
            .map_err(sq(self.path(), "read scheduled run"))
    }

    /// Creates the run of a scheduled time, once: `false` if that time already fired. Pending
    /// deliveries of the model up to the inputs used are consumed (superseded).
    pub fn create_scheduled_run(
        &mut self,
        run: &NewRun,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let path = self.path().to_path_buf();
        let tx = self.conn.transaction().map_err(sq(&path, "begin"))?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO runs (id, model, state, trigger, time0, mode, run_dir, queued_at,
                 session, mirrors) VALUES (?1, ?2, 'queued', 'schedule', ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run.id, run.model, timestamp(run.time0), run.mode, run.run_dir, timestamp(now),
                        run.session, run.mirrors],
            )
            .map_err(sq(&path, "create scheduled run"))?;
        if inserted != 1 {
            return Ok(false);
        }
        consume_up_to(&tx, run).map_err(sq(&path, "record run input"))?;
        tx.commit().map_err(sq(&path, "commit run"))?;
        Ok(true)
    }

    /// Records that a run's process started.
    pub fn run_started(
        &mut self,
        id: &str,
        pid: Option<u32>,
        job: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let job = job.map(|j| j as i64);
        self.conn
            .execute(
                "UPDATE runs SET state = 'running', pid = ?2, slurm_job = ?4, started_at = ?3
                 WHERE id = ?1",
                params![id, pid, timestamp(now), job],
            )
            .map_err(sq(self.path(), "record run start"))?;
        Ok(())
    }

    /// Records that a run's model exited, before the daemon acts on it (puts its outputs back
    /// into the spool): a daemon that dies meanwhile leaves a run its successor finishes
    /// ([`Ledger::exited_unfinished`]) instead of running the model again.
    pub fn run_exited(&mut self, id: &str, code: i32) -> Result<(), LedgerError> {
        self.conn
            .execute(
                // Queued too: a daemon can die between starting a model and recording the
                // start.
                "UPDATE runs SET exit_code = ?2, state = 'running' WHERE id = ?1
                 AND state IN ('queued', 'running')",
                params![id, code],
            )
            .map_err(sq(self.path(), "record a model's exit"))?;
        Ok(())
    }

    /// Runs whose model exited while their end is not recorded yet, with its exit code: the
    /// daemon stopped before it had acted on the exit.
    pub fn exited_unfinished(&self) -> Result<Vec<(String, i32)>, LedgerError> {
        self.conn
            .prepare(
                "SELECT id, exit_code FROM runs WHERE state IN ('queued', 'running')
                 AND exit_code IS NOT NULL
                 ORDER BY id",
            )
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(sq(self.path(), "read exited runs"))
    }

    /// Whether an output of a run was recorded (it is then staged beside its channel, or
    /// already released into it).
    pub fn output_recorded(
        &self,
        run: &str,
        channel: &str,
        name: &str,
    ) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM run_outputs WHERE run = ?1 AND channel = ?2 AND name = ?3)",
                params![run, channel, name],
                |r| r.get(0),
            )
            .map_err(sq(self.path(), "read a run's outputs"))
    }

    /// Records how a run ended.
    pub fn run_ended(
        &mut self,
        id: &str,
        state: RunState,
        exit_code: Option<i32>,
        reason: Option<&str>,
        diag: &[DiagLine],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?2, exit_code = ?3, reason = ?4, diag = ?5, ended_at = ?6,
                 pid = NULL WHERE id = ?1",
                params![
                    id,
                    state.name(),
                    exit_code,
                    reason,
                    serde_json::to_string(diag).unwrap_or_default(),
                    timestamp(now)
                ],
            )
            .map_err(sq(self.path(), "record run end"))?;
        Ok(())
    }

    /// Records an output about to re-enter the spool, so that its submission links to the run.
    pub fn expect_output(
        &mut self,
        run: &str,
        channel: &str,
        name: &str,
        sha256: &str,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO run_outputs (run, channel, name, sha256) VALUES (?1, ?2, ?3, ?4)",
                params![run, channel, name, sha256],
            )
            .map_err(sq(self.path(), "record run output"))?;
        Ok(())
    }

    /// The original run a replay run mirrors.
    pub fn mirrors_of(&self, run: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row("SELECT mirrors FROM runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(sq(self.path(), "read a run"))
    }

    /// Runs on Slurm still queued or running: (run, model, job id).
    pub fn slurm_jobs_running(&self) -> Result<Vec<(String, String, i64)>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT id, model, slurm_job FROM runs WHERE slurm_job IS NOT NULL
                 AND state IN ('queued', 'running') ORDER BY id",
            )
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read the runs on Slurm"))
    }

    /// Runs left queued or running, with the process id or the Slurm job id of those that
    /// started.
    pub fn unfinished_runs(&self) -> Result<Vec<Unfinished>, LedgerError> {
        self.conn
            .prepare("SELECT id, pid, slurm_job FROM runs WHERE state IN ('queued', 'running')")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read unfinished runs"))
    }

    /// Runs left queued or running by a daemon that stopped, but those in `keep` (jobs on the
    /// cluster the new daemon re-attaches): marked interrupted.
    pub fn interrupt_unfinished(
        &mut self,
        keep: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, LedgerError> {
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT id FROM runs WHERE state IN ('queued', 'running')")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(sq(self.path(), "read unfinished runs"))?;
        let ids: Vec<String> = ids.into_iter().filter(|i| !keep.contains(i)).collect();
        for id in &ids {
            self.run_ended(
                id,
                RunState::Interrupted,
                None,
                Some("the daemon stopped while it ran"),
                &[],
                now,
            )?;
        }
        Ok(ids)
    }

    /// Failed, timed-out or interrupted runs whose retry is not decided yet.
    pub fn undecided_failures(&self) -> Result<Vec<(String, String, i64)>, LedgerError> {
        self.conn
            .prepare_cached(
                // Ten times a second: only through the partial index of exactly these runs
                // (the planner would otherwise walk every failed run ever).
                "SELECT id, model, attempt FROM runs INDEXED BY runs_undecided
                 WHERE retry_state IS NULL AND state IN ('failed', 'timed_out', 'interrupted')
                 ORDER BY id",
            )
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read failed runs"))
    }

    /// Decides a failed run's retry: due at `at`, or none.
    pub fn decide_retry(&mut self, id: &str, at: Option<DateTime<Utc>>) -> Result<(), LedgerError> {
        let (state, at) = match at {
            Some(t) => ("due", Some(timestamp(t))),
            None => ("none", None),
        };
        self.conn
            .execute(
                "UPDATE runs SET retry_state = ?2, retry_at = ?3 WHERE id = ?1 AND retry_state IS NULL",
                params![id, state, at],
            )
            .map_err(sq(self.path(), "decide retry"))?;
        Ok(())
    }

    /// Retries due at `now`: (run id, model, attempt).
    pub fn retries_due(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String, i64)>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT id, model, attempt FROM runs WHERE retry_state = 'due' AND retry_at <= ?1
                 ORDER BY retry_at",
            )
            .and_then(|mut st| {
                st.query_map([timestamp(now)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read due retries"))
    }

    /// Creates the retry of a run, with the same inputs, exactly once: `None` if it was already
    /// retried. Returns the inputs of the new run.
    pub fn create_retry(
        &mut self,
        of: &str,
        run: &NewRun,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Pending>>, LedgerError> {
        self.create_copy(of, run, RunCopy::Retry, None, now)
    }

    /// Creates a copy of run `of` with the same inputs and time0: a retry (attempt + 1, once per
    /// run: `None` if it was already retried) or a rerun (a fresh first attempt, any number of
    /// times). Returns the inputs of the new run.
    pub fn create_copy(
        &mut self,
        of: &str,
        run: &NewRun,
        copy: RunCopy,
        by: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Pending>>, LedgerError> {
        let path = self.path().to_path_buf();
        let tx = self.conn.transaction().map_err(sq(&path, "begin"))?;
        let insert = match copy {
            RunCopy::Retry => {
                let claimed = if by.is_some() {
                    // An operator's retry: any ended run not retried yet.
                    "UPDATE runs SET retry_state = 'done' WHERE id = ?1
                     AND state IN ('failed', 'timed_out', 'interrupted', 'cancelled')
                     AND (retry_state IS NULL OR retry_state IN ('due', 'none'))"
                } else {
                    "UPDATE runs SET retry_state = 'done' WHERE id = ?1 AND retry_state = 'due'"
                };
                let n = tx.execute(claimed, [of]).map_err(sq(&path, "claim retry"))?;
                if n != 1 {
                    return Ok(None);
                }
                "INSERT INTO runs (id, model, state, attempt, trigger, time0, mode, run_dir, queued_at,
                 retry_of, requested_by, session, mirrors)
                 SELECT ?2, model, 'queued', attempt + 1, trigger, time0, mode, ?3, ?4, id, ?5,
                 session, mirrors
                 FROM runs WHERE id = ?1"
            }
            RunCopy::Rerun => {
                "INSERT INTO runs (id, model, state, attempt, trigger, time0, mode, run_dir, queued_at,
                 retry_of, requested_by, retry_state, session, mirrors)
                 SELECT ?2, model, 'queued', 1, 'rerun', time0, mode, ?3, ?4, id, ?5, 'none',
                 session, mirrors
                 FROM runs WHERE id = ?1 AND state NOT IN ('queued', 'running')"
            }
        };
        let n = tx
            .execute(insert, params![of, run.id, run.run_dir, timestamp(now), by])
            .map_err(sq(&path, "create run copy"))?;
        if n != 1 {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO run_inputs (run, slot, submission) SELECT ?2, slot, submission
             FROM run_inputs WHERE run = ?1",
            params![of, run.id],
        )
        .map_err(sq(&path, "copy run inputs"))?;
        let inputs = tx
            .prepare(
                "SELECT i.submission, i.slot, s.stored, s.original FROM run_inputs i
                 JOIN submissions s ON s.id = i.submission WHERE i.run = ?1 ORDER BY i.slot",
            )
            .and_then(|mut st| {
                st.query_map([&run.id], pending_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sq(&path, "read run inputs"))?;
        tx.commit().map_err(sq(&path, "commit run copy"))?;
        Ok(Some(inputs))
    }

    /// Creates a run an operator asked for, at their time0, with the latest input of each slot
    /// (pending deliveries up to them are consumed, as a scheduled run does).
    pub fn create_requested_run(
        &mut self,
        run: &NewRun,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let path = self.path().to_path_buf();
        let tx = self.conn.transaction().map_err(sq(&path, "begin"))?;
        tx.execute(
            "INSERT INTO runs (id, model, state, trigger, time0, mode, run_dir, queued_at, requested_by)
             VALUES (?1, ?2, 'queued', 'manual', ?3, ?4, ?5, ?6, ?7)",
            params![run.id, run.model, timestamp(run.time0), run.mode, run.run_dir, timestamp(now), by],
        )
        .map_err(sq(&path, "create requested run"))?;
        consume_up_to(&tx, run).map_err(sq(&path, "record run input"))?;
        tx.commit().map_err(sq(&path, "commit run"))
    }

    /// Runs queued at or after `since`, oldest first: the timeline.
    pub fn runs_since(&self, since: DateTime<Utc>) -> Result<Vec<RunRow>, LedgerError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE queued_at >= ?1 AND session IS NULL
                 ORDER BY queued_at"
            ))
            .and_then(|mut st| st.query_map([timestamp(since)], run_row)?.collect())
            .map_err(sq(self.path(), "read timeline"))
    }

    /// For a replay run of `model` on these replayed files: the original run it mirrors (the
    /// run of that model that used their originals, its last successful attempt first) and its
    /// time0; or, with no such run, the latest original arrival among the files.
    pub fn mirror_of(
        &self,
        model: &str,
        files: &[String],
    ) -> Result<(Option<String>, Option<DateTime<Utc>>), LedgerError> {
        let mut latest: Option<String> = None;
        for f in files {
            let found: Option<(String, String)> = self
                .conn
                .prepare_cached(
                    "SELECT r.id, r.time0 FROM submissions s
                     JOIN run_inputs i ON i.submission = s.origin
                     JOIN runs r ON r.id = i.run
                     WHERE s.id = ?1 AND r.model = ?2 AND r.session IS NULL
                     ORDER BY (r.state = 'succeeded') DESC, r.attempt DESC, r.queued_at DESC LIMIT 1",
                )
                .and_then(|mut st| {
                    st.query_row(params![f, model], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(sq(self.path(), "find the mirrored run"))?;
            if let Some((id, t)) = found {
                let t = DateTime::parse_from_rfc3339(&t)
                    .ok()
                    .map(|t| t.with_timezone(&Utc));
                return Ok((Some(id), t));
            }
            let at: Option<String> = self
                .conn
                .query_row(
                    "SELECT original_at FROM submissions WHERE id = ?1",
                    [f],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sq(self.path(), "read original arrival"))?
                .flatten();
            if at > latest {
                latest = at;
            }
        }
        Ok((
            None,
            latest
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
        ))
    }

    /// The newest run of a model.
    pub fn last_run(&self, model: &str) -> Result<Option<RunRow>, LedgerError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE model = ?1 AND session IS NULL
                 ORDER BY id DESC LIMIT 1"
            ))
            .and_then(|mut st| st.query_row([model], run_row).optional())
            .map_err(sq(self.path(), "read last run"))
    }

    /// Runs in a state, per model and mode (`operational` or `replay`).
    pub fn runs_by_state(&self) -> Result<Vec<(String, String, String, i64)>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT model, state,
                        CASE WHEN session IS NULL THEN 'operational' ELSE 'replay' END AS mode,
                        count(*) FROM runs GROUP BY model, state, mode",
            )
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "count runs"))
    }

    /// The outputs a run put back, with the submissions they became.
    pub fn run_outputs(
        &self,
        id: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT channel, name, submission FROM run_outputs WHERE run = ?1 ORDER BY name",
            )
            .and_then(|mut st| {
                st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read run outputs"))
    }

    /// The inputs of a run: (slot, submission).
    pub fn run_inputs(&self, id: &str) -> Result<Vec<(String, String)>, LedgerError> {
        self.conn
            .prepare_cached("SELECT slot, submission FROM run_inputs WHERE run = ?1 ORDER BY slot")
            .and_then(|mut st| {
                st.query_map([id], |x| Ok((x.get(0)?, x.get(1)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read run inputs"))
    }

    /// The runs that used a submission as input.
    pub fn runs_using(&self, submission: &str) -> Result<Vec<String>, LedgerError> {
        self.conn
            .prepare_cached("SELECT run FROM run_inputs WHERE submission = ?1 ORDER BY run")
            .and_then(|mut st| st.query_map([submission], |x| x.get(0))?.collect())
            .map_err(sq(self.path(), "read runs of a file"))
    }

    /// Records the state a run saved for the next runs of its model, valid at `valid_at`: its
    /// files as (path under `input/`, where it is kept relative to the spool), and the folder
    /// that holds them.
    pub fn record_state(
        &mut self,
        run: &str,
        model: &str,
        valid_at: DateTime<Utc>,
        session: Option<&str>,
        folder: &str,
        files: &[(String, String)],
    ) -> Result<(), LedgerError> {
        let path = self.path().to_path_buf();
        let tx = self
            .conn
            .transaction()
            .map_err(sq(&path, "record a state"))?;
        tx.execute(
            "INSERT OR REPLACE INTO states (run, model, valid_at, session, stored)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run, model, timestamp(valid_at), session, folder],
        )
        .map_err(sq(&path, "record a state"))?;
        tx.execute("DELETE FROM state_files WHERE run = ?1", [run])
            .map_err(sq(&path, "record a state"))?;
        for (rel, stored) in files {
            tx.execute(
                "INSERT INTO state_files (run, path, stored) VALUES (?1, ?2, ?3)",
                params![run, rel, stored],
            )
            .map_err(sq(&path, "record a state"))?;
        }
        tx.commit().map_err(sq(&path, "record a state"))
    }

    /// The latest state of `model` valid at or before `at` and not before `oldest`, in the same
    /// history (operational, or one replay session).
    pub fn latest_state(
        &self,
        model: &str,
        session: Option<&str>,
        at: DateTime<Utc>,
        oldest: DateTime<Utc>,
    ) -> Result<Option<SavedState>, LedgerError> {
        let found: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT run FROM states WHERE model = ?1 AND session IS ?2
                 AND valid_at <= ?3 AND valid_at >= ?4
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = states.run
                                 AND runs.pruned_at IS NOT NULL)
                 ORDER BY valid_at DESC, run DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![model, session, timestamp(at), timestamp(oldest)],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(sq(self.path(), "read states"))?;
        match found {
            Some(run) => self.state_saved_by(&run),
            None => Ok(None),
        }
    }

    /// The state a run saved, with its files.
    pub fn state_saved_by(&self, run: &str) -> Result<Option<SavedState>, LedgerError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT valid_at, stored FROM states WHERE run = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sq(self.path(), "read states"))?;
        let Some((valid_at, stored)) = row else {
            return Ok(None);
        };
        let files = self
            .conn
            .prepare_cached("SELECT path, stored FROM state_files WHERE run = ?1 ORDER BY path")
            .and_then(|mut st| {
                st.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(sq(self.path(), "read states"))?;
        Ok(Some(SavedState {
            run: run.to_string(),
            valid_at,
            stored,
            files,
        }))
    }

    /// Whether a replay session is still making the state of the run that mirrors `original`
    /// for `model`: that replay run has not ended, or a file of the session replaying one of
    /// `original`'s inputs is still being examined or waits, delivered to `model`.
    pub fn replay_state_coming(
        &self,
        session: &str,
        model: &str,
        original: &str,
    ) -> Result<bool, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE session = ?1 AND model = ?2
                                AND mirrors = ?3 AND ended_at IS NULL)
                     OR EXISTS (SELECT 1 FROM run_inputs i JOIN submissions s ON s.origin = i.submission
                                WHERE i.run = ?3 AND s.session = ?1
                                AND (s.state = 'claimed' OR EXISTS (
                                     SELECT 1 FROM deliveries d WHERE d.submission = s.id
                                     AND d.model = ?2 AND d.state = 'pending')))",
            )
            .and_then(|mut st| st.query_row(params![session, model, original], |r| r.get(0)))
            .map_err(sq(self.path(), "read a replay's state chain"))
    }

    /// Says how a run started: `warm` from a run's state valid at a time, or `cold`.
    pub fn set_run_state(
        &mut self,
        run: &str,
        start: &str,
        from: Option<&str>,
        valid_at: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE runs SET state_start = ?2, state_from = ?3, state_valid_at = ?4 WHERE id = ?1",
                params![run, start, from, valid_at],
            )
            .map(|_| ())
            .map_err(sq(self.path(), "record a run's state"))
    }

    /// The newest run id.
    pub fn last_run_time(&self) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row("SELECT max(queued_at) FROM runs", [], |r| r.get(0))
            .map_err(sq(self.path(), "read runs"))
    }

    /// Runs of any traffic, newest first.
    pub fn runs(
        &self,
        model: Option<&str>,
        state: Option<RunState>,
        limit: usize,
    ) -> Result<Vec<RunRow>, LedgerError> {
        self.runs_in(model, state, super::Traffic::All, limit)
    }

    /// Runs of one traffic (operational, a replay's, or both), newest first.
    pub fn runs_in(
        &self,
        model: Option<&str>,
        state: Option<RunState>,
        traffic: super::Traffic,
        limit: usize,
    ) -> Result<Vec<RunRow>, LedgerError> {
        let mut sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE {}",
            traffic.condition()
        );
        let state = state.map(RunState::name);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
        if let Some(m) = &model {
            args.push(m);
            sql.push_str(&format!(" AND model = ?{}", args.len()));
        }
        if let Some(s) = &state {
            args.push(s);
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        args.push(&limit);
        sql.push_str(&format!(" ORDER BY queued_at DESC LIMIT ?{}", args.len()));
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(sq(self.path(), "list runs"))?;
        let mut rows = st
            .query_map(args.as_slice(), run_row)
            .map_err(sq(self.path(), "list runs"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sq(self.path(), "list runs"))?;
        for r in &mut rows {
            r.inputs = self
                .conn
                .prepare_cached(
                    "SELECT slot, submission FROM run_inputs WHERE run = ?1 ORDER BY slot",
                )
                .and_then(|mut st| {
                    st.query_map([&r.id], |x| Ok((x.get(0)?, x.get(1)?)))?
                        .collect()
                })
                .map_err(sq(self.path(), "list run inputs"))?;
        }
        Ok(rows)
    }

    /// One run.
    pub fn run(&self, id: &str) -> Result<Option<RunRow>, LedgerError> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()
            .map_err(sq(self.path(), "read run"))
    }
}

/// Records a run's inputs, and consumes the pending deliveries of its model up to them (older
/// files of a slot are superseded by the latest): scheduled and requested runs.
fn consume_up_to(tx: &rusqlite::Transaction<'_>, run: &NewRun) -> rusqlite::Result<()> {
    for (slot, submission) in &run.inputs {
        tx.execute(
            "INSERT INTO run_inputs (run, slot, submission) VALUES (?1, ?2, ?3)",
            params![run.id, slot, submission],
        )?;
        // Only within the same history: a replay never consumes operational deliveries, nor
        // the other way round.
        tx.execute(
            "UPDATE deliveries SET state = 'consumed', run = ?1 WHERE model = ?2
             AND slot = ?3 AND submission <= ?4 AND state = 'pending'
             AND (SELECT session FROM submissions WHERE id = deliveries.submission) IS ?5",
            params![run.id, run.model, slot, submission, run.session],
        )?;
    }
    Ok(())
}

/// A `Pending` from a row of (submission, slot, stored, original).
fn pending_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pending> {
    Ok(Pending {
        submission: r.get(0)?,
        slot: r.get(1)?,
        stored: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        original: r.get(3)?,
    })
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let state: String = r.get(2)?;
    Ok(RunRow {
        id: r.get(0)?,
        model: r.get(1)?,
        state: RunState::parse(&state).unwrap_or(RunState::Failed),
        attempt: r.get(3)?,
        trigger: r.get(4)?,
        time0: r.get(5)?,
        mode: r.get(6)?,
        run_dir: r.get(7)?,
        pid: r.get(8)?,
        queued_at: r.get(9)?,
        started_at: r.get(10)?,
        ended_at: r.get(11)?,
        exit_code: r.get(12)?,
        reason: r.get(13)?,
        diag: r
            .get::<_, Option<String>>(14)?
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default(),
        inputs: Vec::new(),
        retry_of: r.get(15)?,
        requested_by: r.get(16)?,
        state_start: r.get(17)?,
        state_from: r.get(18)?,
        state_valid_at: r.get(19)?,
        session: r.get(20)?,
        slurm_job: r.get(21)?,
        pruned_at: r.get(22)?,
    })
}

/// A state a run saved, as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    /// The run that saved it.
    pub run: String,
    /// Its valid time.
    pub valid_at: String,
    /// The folder holding its files (relative to the spool); for a state recorded before states
    /// had several files, the one file.
    pub stored: String,
    /// Its files: (path under `input/`, where it is kept relative to the spool). Empty for a
    /// state recorded before states had several files.
    pub files: Vec<(String, String)>,
}
