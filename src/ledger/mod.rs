//! The ledger: SQLite (bundled), WAL, migrations embedded; the index of what the spool holds.
//!
//! One writer thread owns the only writing connection and commits in groups (one sync per batch,
//! not per file); readers (CLI, web) open their own connections. Every transition is committed
//! before the file move that depends on it, so that after a crash the files and the ledger can
//! always be brought back into agreement (see [`crate::daemon`]'s start-up reconcile).

pub mod audit;
pub mod backup;
pub mod impact;
pub mod products;
pub mod reads;
pub mod retention;
pub mod runs;
pub mod sessions;
pub mod stations;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::config::routes::Action;
use crate::examine::validate::XmlError;
use crate::examine::{Examined, RejectKind, Verdict};
use crate::id::ClaimId;
use crate::route;

/// Ledger failures: the gateway itself is in trouble (disk, database), not a file.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite said no.
    #[error("ledger {path}: {op}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The folder of the database could not be made.
    #[error("ledger {path}: cannot create its folder: {source}")]
    Folder {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database was written by a newer POM.
    #[error("ledger {path}: schema version {found} is newer than this POM knows ({known})")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its user_version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// The writer thread is gone.
    #[error("the ledger writer has stopped")]
    WriterGone,
    /// The daemon cannot write the ledger (a read-only file or folder).
    #[error("ledger {path}: cannot be written: {why}")]
    NotWritable {
        /// The database file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// Embedded migrations, applied in order; `PRAGMA user_version` counts those applied. Never edit
/// one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001.sql"),
    include_str!("migrations/002.sql"),
    include_str!("migrations/003.sql"),
    include_str!("migrations/004.sql"),
    include_str!("migrations/005.sql"),
    include_str!("migrations/006.sql"),
    include_str!("migrations/007.sql"),
    include_str!("migrations/008.sql"),
    include_str!("migrations/009.sql"),
    include_str!("migrations/010.sql"),
    include_str!("migrations/011.sql"),
    include_str!("migrations/012.sql"),
    include_str!("migrations/013.sql"),
];

/// Where a submission stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// In `queue/`, being examined.
    Claimed,
    /// Accepted and archived.
    Archived,
    /// Refused, in `rejected/` with a reason.
    Rejected,
    /// Same content already archived on this channel; archived, not processed.
    Duplicate,
}

impl State {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            State::Claimed => "claimed",
            State::Archived => "archived",
            State::Rejected => "rejected",
            State::Duplicate => "duplicate",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "claimed" => State::Claimed,
            "archived" => State::Archived,
            "rejected" => State::Rejected,
            "duplicate" => State::Duplicate,
            _ => return None,
        })
    }

    /// All states, in lifecycle order.
    pub const ALL: [State; 4] = [
        State::Claimed,
        State::Archived,
        State::Rejected,
        State::Duplicate,
    ];
}

/// A file as the ledger knows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submission {
    /// Claim id.
    pub id: String,
    /// Channel.
    pub channel: String,
    /// Original name, bytes (shown lossily; exact in `original_hex`).
    #[serde(serialize_with = "lossy")]
    pub original: Vec<u8>,
    /// Marker file name, if any.
    #[serde(serialize_with = "lossy_opt")]
    pub marker: Option<Vec<u8>>,
    /// State.
    pub state: State,
    /// When it was claimed.
    pub received_at: String,
    /// When its verdict was recorded.
    pub decided_at: Option<String>,
    /// Size in bytes.
    pub size: Option<i64>,
    /// SHA-256, hex.
    pub sha256: Option<String>,
    /// Format name.
    pub format: Option<String>,
    /// Version.
    pub version: Option<String>,
    /// How it was checked.
    pub checked: Option<String>,
    /// Kind of refusal.
    pub reject_kind: Option<String>,
    /// One-sentence reason.
    pub reason: Option<String>,
    /// libxml2's messages.
    pub errors: Vec<XmlError>,
    /// The archived submission it duplicates.
    pub duplicate_of: Option<String>,
    /// Where it is, relative to the spool.
    pub stored: Option<String>,
    /// Routing outcome: routed, unrouted, held or dropped (accepted files only).
    pub route: Option<String>,
    /// The rules that matched.
    pub route_rules: Vec<String>,
    /// Their actions.
    pub route_actions: Vec<Action>,
    /// Version (hash) of the rule set that decided.
    pub rules_version: Option<String>,
    /// Who holds it back from its models: an operator, or `rule: <reason>`.
    pub held_by: Option<String>,
    /// The submission this one re-injects (a fixed rejected file, or a replayed original).
    pub origin: Option<String>,
    /// The replay session it belongs to (none: operational traffic).
    pub session: Option<String>,
    /// When its original arrived (replayed files).
    pub original_at: Option<String>,
    /// The run that produced it, if a model did.
    pub produced_by: Option<String>,
    /// That run's time0.
    pub produced_time0: Option<String>,
    /// When retention removed its stored copy (the row stays).
    pub pruned_at: Option<String>,
}

fn lossy<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v))
}

fn lossy_opt<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&String::from_utf8_lossy(v)),
        None => s.serialize_none(),
    }
}

/// A claim about to happen: recorded before the rename into `queue/`.
#[derive(Debug, Clone)]
pub struct NewClaim {
    /// Fresh id.
    pub id: ClaimId,
    /// Channel.
    pub channel: String,
    /// Original name relative to the channel folder.
    pub original: Vec<u8>,
    /// Marker name, if any.
    pub marker: Option<Vec<u8>>,
    /// A replayed file: its session and original.
    pub replay: Option<ReplayOf>,
}

/// What a replayed file replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOf {
    /// The session.
    pub session: String,
    /// The original submission's id (none for a replay run's output).
    pub origin: Option<String>,
    /// When the original arrived.
    pub at: String,
}

/// A verdict to record, with where the file is to go.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Which submission, as claimed.
    pub claim: NewClaim,
    /// What examining found.
    pub examined: Examined,
    /// Where an accepted file goes, and the version of the rules that said so.
    pub route: Option<(route::Decision, String)>,
}

/// A routing decision as the ledger records it: `routed`, `unrouted`, `held` (and by which
/// rule's reason) or `dropped`.
fn route_outcome(d: &route::Decision) -> (&'static str, Option<String>) {
    match d {
        route::Decision::Unrouted => ("unrouted", None),
        route::Decision::Routed { actions, .. } => {
            let held = actions.iter().find_map(|a| match a {
                Action::Hold { reason } => Some(format!("rule: {reason}")),
                _ => None,
            });
            let route = if held.is_some() {
                "held"
            } else if actions.iter().any(|a| matches!(a, Action::Drop { .. })) {
                "dropped"
            } else {
                "routed"
            };
            (route, held)
        }
    }
}

/// What routing an archived file again did.
#[derive(Debug, Clone)]
pub enum Rerouted {
    /// No such file.
    NotFound,
    /// The file is not archived (rejected, a duplicate, or being examined): nothing to route.
    NotArchived(State),
    /// A replay's file: it is routed within its replay, never again by an operator.
    Replayed,
    /// Routed again: the file as it now stands (its new route and actions).
    Done(Box<Submission>),
}

/// A file routed again, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RerouteRow {
    /// When.
    pub at: String,
    /// The operator.
    pub by: String,
    /// The rule set that decided.
    pub rules_version: String,
    /// The route before (`unrouted`…), and the rules that had matched.
    pub route_before: Option<String>,
    /// The rules that had matched before.
    pub rules_before: Vec<String>,
    /// The new route, and the rules that matched.
    pub route: String,
    /// The rules that matched.
    pub rules: Vec<String>,
}

/// Counts for `pom status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChannelStatus {
    /// Channel name.
    pub channel: String,
    /// Count per state.
    pub states: std::collections::BTreeMap<String, i64>,
    /// Last claim time.
    pub last_arrival: Option<String>,
}

/// Which traffic a view counts or lists: operational files and runs (what every operational view,
/// count, metric, lateness and alert shows), a replay's, or both.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Traffic {
    /// Operational traffic only: no replay session's.
    #[default]
    Operational,
    /// Replay sessions' traffic only.
    Replay,
    /// Both.
    All,
}

impl Traffic {
    /// Stable name: `operational`, `replay` or `all`.
    pub fn name(self) -> &'static str {
        match self {
            Traffic::Operational => "operational",
            Traffic::Replay => "replay",
            Traffic::All => "all",
        }
    }

    /// The SQL condition on a row's `session` column.
    fn condition(self) -> &'static str {
        match self {
            Traffic::Operational => "session IS NULL",
            Traffic::Replay => "session IS NOT NULL",
            Traffic::All => "1=1",
        }
    }
}

impl std::str::FromStr for Traffic {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "operational" => Ok(Traffic::Operational),
            "replay" => Ok(Traffic::Replay),
            "all" => Ok(Traffic::All),
            _ => Err(format!("`{s}` is not a mode: operational, replay or all")),
        }
    }
}

/// Filter for `pom files`.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    /// Operational files (the default), a replay's, or both.
    pub traffic: Traffic,
    /// Only this state.
    pub state: Option<State>,
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this routing outcome (routed, unrouted, held, dropped).
    pub route: Option<String>,
    /// Only names holding this text.
    pub name: Option<String>,
    /// Only this format.
    pub format: Option<String>,
    /// Only files received before this id (the next page).
    pub before: Option<String>,
    /// At most this many (newest first).
    pub limit: usize,
}

/// A connection to the ledger.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// Re-injected files are expected: claims look up their origin (see [`Ledger::expect_origin`]).
    expecting: bool,
}

fn sq<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> LedgerError + 'a {
    move |source| LedgerError::Sqlite {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// UTC time as stored (RFC 3339, microseconds).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Ledger {
    /// Opens (creating if needed) the ledger for writing, and applies pending migrations.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::Folder {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(sq(path, "open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
        )
        .map_err(sq(path, "configure"))?;
        let mut ledger = Ledger {
            conn,
            path: path.to_path_buf(),
            expecting: false,
        };
        ledger.migrate()?;
        ledger.expecting = ledger
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM expected_origins)", [], |r| {
                r.get(0)
            })
            .map_err(sq(path, "read expected origins"))?;
        Ok(ledger)
    }

    /// Proves that the ledger can be written: not opened read-only by SQLite (which it does,
    /// silently, on a file it may not write), a write transaction can be begun, and its folder
    /// takes new files (the WAL and its index live beside it).
    pub fn check_writable(&self) -> Result<(), LedgerError> {
        let not = |why: String| LedgerError::NotWritable {
            path: self.path.clone(),
            why,
        };
        if self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(not("SQLite opened it read-only (file permissions)".into()));
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(|e| not(format!("a write transaction was refused: {e}")))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let probe = dir.join(format!(".pom-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| {
                not(format!(
                    "its folder {} takes no new file: {e}",
                    dir.display()
                ))
            })?;
        Ok(())
    }

    /// Opens the ledger for reading only (CLI, web); fails if it does not exist.
    pub fn open_readonly(path: &Path) -> Result<Ledger, LedgerError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sq(path, "open read-only"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sq(path, "configure"))?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
            expecting: false,
        })
    }

    fn migrate(&mut self) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sq(&path, "read schema version"))?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(LedgerError::TooNew {
                path,
                found: current,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = self.conn.transaction().map_err(sq(&path, "migrate"))?;
            tx.execute_batch(sql).map_err(sq(&path, "migrate"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(sq(&path, "migrate"))?;
            tx.commit().map_err(sq(&path, "migrate"))?;
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of this database.
    pub fn schema_version(&self) -> Result<i64, LedgerError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sq(&self.path, "read schema version"))
    }

    /// `PRAGMA integrity_check`'s answer ("ok" when sound).
    pub fn integrity_check(&self) -> Result<String, LedgerError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(sq(&self.path, "integrity check"))
    }

    /// The newest id ever issued.
    pub fn last_id(&self) -> Result<Option<ClaimId>, LedgerError> {
        let id: Option<String> = self
            .conn
            .query_row("SELECT max(id) FROM submissions", [], |r| r.get(0))
            .map_err(sq(&self.path, "read last id"))?;
        Ok(id.as_deref().and_then(ClaimId::parse))
    }

    /// Records claims, in one transaction.
    pub fn insert_claims(&mut self, claims: &[NewClaim]) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sq(&path, "begin"))?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO submissions (id, channel, original, marker, state, received_at,
                     session, origin, original_at)
                     VALUES (?1, ?2, ?3, ?4, 'claimed', ?5, ?6, ?7, ?8)",
                )
                .map_err(sq(&path, "prepare claim"))?;
            for c in claims {
                let r = c.replay.as_ref();
                st.execute(params![
                    c.id.text(),
                    c.channel,
                    c.original,
                    c.marker,
                    timestamp(c.id.time()),
                    r.map(|r| &r.session),
                    r.and_then(|r| r.origin.as_ref()),
                    r.map(|r| &r.at),
                ])
                .map_err(sq(&path, "record claim"))?;
            }
            if self.expecting {
                let mut take = tx
                    .prepare_cached(
                        "DELETE FROM expected_origins WHERE channel = ?1 AND original = ?2
                         RETURNING origin",
                    )
                    .map_err(sq(&path, "prepare origin"))?;
                for c in claims {
                    let origin: Option<String> = take
                        .query_row(params![c.channel, c.original], |r| r.get(0))
                        .optional()
                        .map_err(sq(&path, "read origin"))?;
                    if let Some(origin) = origin {
                        tx.execute(
                            "UPDATE submissions SET origin = ?2 WHERE id = ?1",
                            params![c.id.text(), origin],
                        )
                        .map_err(sq(&path, "record origin"))?;
                    }
                }
            }
        }
        tx.commit().map_err(sq(&path, "commit claims"))?;
        if self.expecting {
            self.expecting = self
                .conn
                .query_row("SELECT EXISTS (SELECT 1 FROM expected_origins)", [], |r| {
                    r.get(0)
                })
                .map_err(sq(&path, "read expected origins"))?;
        }
        Ok(())
    }

    /// Announces that a file about to appear as `original` on `channel` re-injects `origin`: its
    /// claim will be linked to it.
    pub fn expect_origin(
        &mut self,
        channel: &str,
        original: &[u8],
        origin: &str,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO expected_origins (channel, original, origin)
                 VALUES (?1, ?2, ?3)",
                params![channel, original, origin],
            )
            .map_err(sq(&self.path, "record expected origin"))?;
        self.expecting = true;
        Ok(())
    }

    /// Forgets claims whose rename did not happen (the file is still where it was, or gone).
    pub fn forget(&mut self, ids: &[String]) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sq(&path, "begin"))?;
        for id in ids {
            tx.execute(
                "DELETE FROM submissions WHERE id = ?1 AND state = 'claimed'",
                [id],
            )
            .map_err(sq(&path, "forget claim"))?;
        }
        tx.commit().map_err(sq(&path, "commit"))
    }

    /// Records verdicts in one transaction (detecting duplicates), and returns each submission as
    /// now recorded, with where its file must go. A submission already decided keeps its first
    /// verdict (re-driving after a crash is idempotent).
    pub fn decide(
        &mut self,
        decisions: &[Decision],
        now: DateTime<Utc>,
    ) -> Result<Vec<Submission>, LedgerError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sq(&path, "begin"))?;
        let mut out = Vec::with_capacity(decisions.len());
        let decided_at = timestamp(now);
        // Outputs of runs are awaited only while some run has put outputs back: otherwise no
        // file of the batch needs its lineage looked up.
        let outputs_awaited: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM run_outputs WHERE submission IS NULL)")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(sq(&path, "look for awaited outputs"))?;
        for d in decisions {
            let c = &d.claim;
            let id = c.id.text();
            let e = &d.examined;
            let (format, version) = e.identified.clone().unzip();
            let mut decided = Submission {
                id: id.clone(),
                channel: c.channel.clone(),
                original: c.original.clone(),
                marker: c.marker.clone(),
                state: State::Rejected,
                received_at: timestamp(c.id.time()),
                decided_at: Some(decided_at.clone()),
                size: Some(e.size as i64),
                sha256: e.sha256.clone(),
                format,
                version,
                checked: None,
                reject_kind: None,
                reason: None,
                errors: Vec::new(),
                duplicate_of: None,
                stored: None,
                route: None,
                route_rules: Vec::new(),
                route_actions: Vec::new(),
                rules_version: None,
                held_by: None,
                origin: c.replay.as_ref().and_then(|r| r.origin.clone()),
                session: c.replay.as_ref().map(|r| r.session.clone()),
                original_at: c.replay.as_ref().map(|r| r.at.clone()),
                produced_by: None,
                produced_time0: None,
                pruned_at: None,
            };
            match &e.verdict {
                Verdict::Accepted { checked, .. } => {
                    decided.state = State::Archived;
                    decided.checked = Some(checked.clone());
                    // A replayed file is never a duplicate (of the history it replays), and
                    // operational files are never duplicates of replayed ones.
                    decided.duplicate_of = match &c.replay {
                        Some(_) => None,
                        None => tx
                            .prepare_cached(
                                "SELECT id FROM submissions WHERE channel = ?1 AND sha256 = ?2
                                 AND state = 'archived' AND session IS NULL LIMIT 1",
                            )
                            .and_then(|mut st| {
                                st.query_row(params![c.channel, e.sha256], |r| r.get(0))
                                    .optional()
                            })
                            .map_err(sq(&path, "look for duplicate"))?,
                    };
                    if decided.duplicate_of.is_some() {
                        decided.state = State::Duplicate;
                    } else if let Some((d, version)) = &d.route {
                        decided.rules_version = Some(version.clone());
                        let (route, held_by) = route_outcome(d);
                        decided.route = Some(route.into());
                        decided.held_by = held_by;
                        if let route::Decision::Routed { rules, actions } = d {
                            decided.route_rules = rules.clone();
                            decided.route_actions = actions.clone();
                        }
                    }
                }
                Verdict::Rejected(r) => {
                    decided.reject_kind = Some(r.kind.name().to_string());
                    decided.reason = Some(r.reason.clone());
                    decided.errors = r.errors.clone();
                }
            }
            decided.stored = Some(crate::spool::destination(&crate::spool::Stored {
                id: &decided.id,
                original: &decided.original,
                channel: &decided.channel,
                session: decided.session.as_deref(),
                rejected: decided.state == State::Rejected,
            }));
            let errors = match &e.verdict {
                Verdict::Rejected(r) => Some(serde_json::to_string(&r.errors).unwrap_or_default()),
                Verdict::Accepted { .. } => None,
            };
            let changed = tx
                .prepare_cached(
                    "UPDATE submissions SET state = ?2, decided_at = ?3, size = ?4, sha256 = ?5,
                     format = ?6, version = ?7, checked = ?8, reject_kind = ?9, reason = ?10,
                     errors = ?11, duplicate_of = ?12, stored = ?13, route = ?14,
                     route_rules = ?15, route_actions = ?16, rules_version = ?17, held_by = ?18
                     WHERE id = ?1 AND state = 'claimed'",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        id,
                        decided.state.name(),
                        decided.decided_at,
                        decided.size,
                        decided.sha256,
                        decided.format,
                        decided.version,
                        decided.checked,
                        decided.reject_kind,
                        decided.reason,
                        errors,
                        decided.duplicate_of,
                        decided.stored,
                        decided.route,
                        (!decided.route_rules.is_empty())
                            .then(
                                || serde_json::to_string(&decided.route_rules).unwrap_or_default()
                            ),
                        (!decided.route_actions.is_empty())
                            .then(|| serde_json::to_string(&decided.route_actions)
                                .unwrap_or_default()),
                        decided.rules_version,
                        decided.held_by,
                    ])
                })
                .map_err(sq(&path, "record verdict"))?;
            if changed == 1 {
                // A model's output coming back: link it to its run (rejected outputs too).
                let run: Option<(String, String)> = if !outputs_awaited {
                    None
                } else {
                    tx.prepare_cached(
                        "SELECT o.run, r.time0 FROM run_outputs o JOIN runs r ON r.id = o.run
                         WHERE o.channel = ?1 AND o.sha256 = ?2 AND o.submission IS NULL
                         ORDER BY o.run LIMIT 1",
                    )
                    .and_then(|mut st| {
                        st.query_row(params![c.channel, decided.sha256], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()
                    })
                    .map_err(sq(&path, "look for the run of an output"))?
                };
                if let Some((run, time0)) = run {
                    decided.produced_by = Some(run.clone());
                    decided.produced_time0 = Some(time0);
                    tx.execute(
                        "UPDATE run_outputs SET submission = ?1 WHERE run = ?2 AND channel = ?3
                         AND sha256 = ?4 AND submission IS NULL",
                        params![id, run, c.channel, decided.sha256],
                    )
                    .and_then(|_| {
                        tx.execute(
                            "UPDATE submissions SET produced_by = ?2 WHERE id = ?1",
                            params![id, run],
                        )
                    })
                    .map_err(sq(&path, "record lineage"))?;
                }
                for a in &decided.route_actions {
                    if let Action::Deliver { model, slot } = a {
                        tx.prepare_cached(
                            "INSERT OR IGNORE INTO deliveries (submission, model, slot) VALUES (?1, ?2, ?3)",
                        )
                        .and_then(|mut st| st.execute(params![id, model, slot]))
                        .map_err(sq(&path, "record delivery"))?;
                    }
                }
                out.push(decided);
            } else if let Some(row) = get(&tx, &id).map_err(sq(&path, "read submission"))? {
                // Decided before a crash: it keeps its first verdict and is filed by that.
                if row.state != State::Claimed {
                    out.push(row);
                }
            }
        }
        tx.commit().map_err(sq(&path, "commit verdicts"))?;
        Ok(out)
    }

    /// One submission by id.
    pub fn get(&self, id: &str) -> Result<Option<Submission>, LedgerError> {
        get(&self.conn, id).map_err(sq(&self.path, "read submission"))
    }

    /// Submissions in a state, operational and replayed, oldest first.
    pub fn in_state(&self, state: State) -> Result<Vec<Submission>, LedgerError> {
        self.files(&FileFilter {
            traffic: Traffic::All,
            state: Some(state),
            limit: usize::MAX,
            ..FileFilter::default()
        })
        .map(|mut v| {
            v.reverse();
            v
        })
    }

    /// Submissions matching a filter, newest first.
    pub fn files(&self, filter: &FileFilter) -> Result<Vec<Submission>, LedgerError> {
        let mut sql = format!(
            "SELECT {COLUMNS} FROM submissions WHERE {}",
            filter.traffic.condition()
        );
        let state = filter.state.map(State::name);
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
        if let Some(s) = &state {
            args.push(s);
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(c) = &filter.channel {
            args.push(c);
            sql.push_str(&format!(" AND channel = ?{}", args.len()));
        }
        if let Some(r) = &filter.route {
            args.push(r);
            sql.push_str(&format!(" AND route = ?{}", args.len()));
        }
        let name = filter.name.as_ref().map(|n| n.as_bytes().to_vec());
        if let Some(n) = &name {
            args.push(n);
            sql.push_str(&format!(" AND instr(original, ?{}) > 0", args.len()));
        }
        if let Some(f) = &filter.format {
            args.push(f);
            sql.push_str(&format!(" AND format = ?{}", args.len()));
        }
        if let Some(b) = &filter.before {
            args.push(b);
            sql.push_str(&format!(" AND id < ?{}", args.len()));
        }
        args.push(&limit);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(sq(&self.path, "list files"))?;
        let rows = st
            .query_map(args.as_slice(), row_of)
            .map_err(sq(&self.path, "list files"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sq(&self.path, "list files"))?;
        Ok(rows)
    }

    /// Routes an archived operational file again under a new decision (the rules in force),
    /// in one transaction: its route, rules and actions replaced, its new deliveries recorded
    /// (a delivery it already had is kept as it is), a held route holding it, and the decision
    /// kept in `reroutes` beside the route it had.
    pub fn reroute(
        &mut self,
        id: &str,
        decision: &route::Decision,
        rules_version: &str,
        who: &str,
        now: DateTime<Utc>,
    ) -> Result<Rerouted, LedgerError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sq(&path, "reroute"))?;
        let Some(row) = get(&tx, id).map_err(sq(&path, "read submission"))? else {
            return Ok(Rerouted::NotFound);
        };
        if row.state != State::Archived {
            return Ok(Rerouted::NotArchived(row.state));
        }
        if row.session.is_some() {
            return Ok(Rerouted::Replayed);
        }
        let (route, held_by) = route_outcome(decision);
        let (rules, actions) = match decision {
            route::Decision::Routed { rules, actions } => (rules.clone(), actions.clone()),
            route::Decision::Unrouted => (Vec::new(), Vec::new()),
        };
        let json =
            |v: &[String]| (!v.is_empty()).then(|| serde_json::to_string(v).unwrap_or_default());
        tx.execute(
            "INSERT INTO reroutes (file, at, by, rules_version, route_before, rules_before, route, rules)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                timestamp(now),
                who,
                rules_version,
                row.route,
                json(&row.route_rules),
                route,
                json(&rules)
            ],
        )
        .map_err(sq(&path, "record a reroute"))?;
        tx.execute(
            "UPDATE submissions SET route = ?2, route_rules = ?3, route_actions = ?4,
             rules_version = ?5, held_by = coalesce(held_by, ?6) WHERE id = ?1",
            params![
                id,
                route,
                json(&rules),
                (!actions.is_empty()).then(|| serde_json::to_string(&actions).unwrap_or_default()),
                rules_version,
                held_by
            ],
        )
        .map_err(sq(&path, "reroute"))?;
        for a in &actions {
            if let Action::Deliver { model, slot } = a {
                tx.execute(
                    "INSERT OR IGNORE INTO deliveries (submission, model, slot) VALUES (?1, ?2, ?3)",
                    params![id, model, slot],
                )
                .map_err(sq(&path, "record delivery"))?;
            }
        }
        let now_row = get(&tx, id).map_err(sq(&path, "read submission"))?;
        tx.commit().map_err(sq(&path, "reroute"))?;
        Ok(now_row.map_or(Rerouted::NotFound, |r| Rerouted::Done(Box::new(r))))
    }

    /// The times a file was routed again, oldest first.
    pub fn reroutes_of(&self, id: &str) -> Result<Vec<RerouteRow>, LedgerError> {
        let list = |t: Option<String>| -> Vec<String> {
            t.and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default()
        };
        self.conn
            .prepare_cached(
                "SELECT at, by, rules_version, route_before, rules_before, route, rules
                 FROM reroutes WHERE file = ?1 ORDER BY id",
            )
            .and_then(|mut st| {
                st.query_map([id], |r| {
                    Ok(RerouteRow {
                        at: r.get(0)?,
                        by: r.get(1)?,
                        rules_version: r.get(2)?,
                        route_before: r.get(3)?,
                        rules_before: list(r.get(4)?),
                        route: r.get(5)?,
                        rules: list(r.get(6)?),
                    })
                })?
                .collect()
            })
            .map_err(sq(&self.path, "read reroutes"))
    }

    /// Unrouted operational files, on a channel if given, received at or after `since` (an id
    /// prefix or time), oldest first, at most `limit`.
    pub fn unrouted_since(
        &self,
        channel: Option<&str>,
        since: &str,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(
                "SELECT id FROM submissions WHERE route = 'unrouted' AND session IS NULL
                 AND (?1 IS NULL OR channel = ?1) AND id >= ?2 ORDER BY id LIMIT ?3",
            )
            .and_then(|mut st| {
                st.query_map(params![channel, since, limit], |r| r.get(0))?
                    .collect()
            })
            .map_err(sq(&self.path, "read unrouted files"))
    }

    /// Operational submissions archived with ids in `[from, to)` (received in that period), on
    /// a channel if given, oldest first: what a replay of the period re-injects.
    pub fn archived_between(
        &self,
        from: &str,
        to: &str,
        channel: Option<&str>,
    ) -> Result<Vec<Submission>, LedgerError> {
        self.archived_in(from, to, channel, false)
    }

    /// Operational archived submissions with ids in `[from, to)`, on a channel if given, oldest
    /// first: still stored, or (`pruned`) removed by retention.
    fn archived_in(
        &self,
        from: &str,
        to: &str,
        channel: Option<&str>,
        pruned: bool,
    ) -> Result<Vec<Submission>, LedgerError> {
        let kept = if pruned {
            "pruned_at IS NOT NULL"
        } else {
            "pruned_at IS NULL"
        };
        self.conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM submissions WHERE id >= ?1 AND id < ?2
                 AND state = 'archived' AND session IS NULL AND (?3 IS NULL OR channel = ?3)
                 AND {kept} ORDER BY id"
            ))
            .and_then(|mut st| st.query_map(params![from, to, channel], row_of)?.collect())
            .map_err(sq(&self.path, "read archive"))
    }

    /// Counts per channel and state, and the last arrival per channel, of one traffic.
    pub fn status(&self, traffic: Traffic) -> Result<Vec<ChannelStatus>, LedgerError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT channel, state, count(*), max(received_at) FROM submissions
                 WHERE {} GROUP BY channel, state ORDER BY channel",
                traffic.condition()
            ))
            .map_err(sq(&self.path, "status"))?;
        let mut out: Vec<ChannelStatus> = Vec::new();
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(sq(&self.path, "status"))?;
        for row in rows {
            let (channel, state, n, last) = row.map_err(sq(&self.path, "status"))?;
            if out.last().map(|c| &c.channel) != Some(&channel) {
                out.push(ChannelStatus {
                    channel: channel.clone(),
                    ..Default::default()
                });
            }
            let c = out.last_mut().expect("pushed above");
            c.states.insert(state, n);
            if last > c.last_arrival {
                c.last_arrival = last;
            }
        }
        Ok(out)
    }
}

const COLUMNS: &str = "id, channel, original, marker, state, received_at, decided_at, size, sha256, \
                       format, version, checked, reject_kind, reason, errors, duplicate_of, stored, \
                       route, route_rules, route_actions, rules_version, held_by, origin, session, \
                       original_at, produced_by, \
                       (SELECT time0 FROM runs WHERE runs.id = submissions.produced_by), \
                       pruned_at";

fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<Submission>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM submissions WHERE id = ?1"))?
        .query_row([id], row_of)
        .optional()
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Submission> {
    let state: String = r.get(4)?;
    let errors: Option<String> = r.get(14)?;
    Ok(Submission {
        id: r.get(0)?,
        channel: r.get(1)?,
        original: r.get(2)?,
        marker: r.get(3)?,
        state: State::parse(&state).unwrap_or(State::Claimed),
        received_at: r.get(5)?,
        decided_at: r.get(6)?,
        size: r.get(7)?,
        sha256: r.get(8)?,
        format: r.get(9)?,
        version: r.get(10)?,
        checked: r.get(11)?,
        reject_kind: r.get(12)?,
        reason: r.get(13)?,
        errors: errors
            .and_then(|e| serde_json::from_str(&e).ok())
            .unwrap_or_default(),
        duplicate_of: r.get(15)?,
        stored: r.get(16)?,
        route: r.get(17)?,
        route_rules: r
            .get::<_, Option<String>>(18)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        route_actions: r
            .get::<_, Option<String>>(19)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        rules_version: r.get(20)?,
        held_by: r.get(21)?,
        origin: r.get(22)?,
        session: r.get(23)?,
        original_at: r.get(24)?,
        produced_by: r.get(25)?,
        produced_time0: r.get(26)?,
        pruned_at: r.get(27)?,
    })
}

impl Submission {
    /// The claim id, parsed.
    pub fn claim_id(&self) -> Option<ClaimId> {
        ClaimId::parse(&self.id)
    }

    /// The rejection kind, parsed.
    pub fn kind(&self) -> Option<RejectKind> {
        self.reject_kind
            .as_deref()
            .and_then(|k| serde_json::from_value(serde_json::Value::String(k.into())).ok())
    }
}

/// A request to the writer thread.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is a Decide: boxing it would cost an allocation per file"
)]
pub enum WriteOp {
    /// Record claims, then answer (the renames wait for this answer).
    Claims(Vec<NewClaim>, SyncSender<Result<(), String>>),
    /// Forget claims whose rename did not happen.
    Forget(Vec<String>),
    /// Record a verdict; the decided submission then goes to the filer.
    Decide(Decision),
    /// Anything else, in its own transaction, answered by the closure itself.
    With(Box<dyn FnOnce(&mut Ledger) + Send>),
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<WriteOp>,
}

impl Writer {
    /// Starts the writer thread on `ledger`; decided submissions go to `filed`.
    pub fn spawn(
        mut ledger: Ledger,
        capacity: usize,
        filed: SyncSender<Vec<Submission>>,
        health: std::sync::Arc<crate::health::Health>,
        clock: crate::clock::Clock,
    ) -> (Writer, JoinHandle<Result<(), LedgerError>>) {
        let (tx, rx) = sync_channel::<WriteOp>(capacity);
        health.expect("ledger-writer", crate::health::STUCK_AFTER);
        let h = std::sync::Arc::clone(&health);
        let handle = crate::health::spawn("ledger-writer", health, move || {
            writer_loop(&mut ledger, rx, filed, &h, clock)
        });
        (Writer { tx }, handle)
    }

    /// Records claims and waits until they are committed.
    pub fn claims(&self, claims: Vec<NewClaim>) -> Result<(), LedgerError> {
        let (tx, rx) = sync_channel(1);
        self.tx
            .send(WriteOp::Claims(claims, tx))
            .map_err(|_| LedgerError::WriterGone)?;
        rx.recv()
            .map_err(|_| LedgerError::WriterGone)?
            .map_err(|_| LedgerError::WriterGone)
    }

    /// Forgets claims that did not happen.
    pub fn forget(&self, ids: Vec<String>) -> Result<(), LedgerError> {
        self.tx
            .send(WriteOp::Forget(ids))
            .map_err(|_| LedgerError::WriterGone)
    }

    /// Runs `f` on the writer thread and waits for its answer.
    pub fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<R, LedgerError> + Send + 'static,
    ) -> Result<R, LedgerError> {
        let (tx, rx) = sync_channel(1);
        self.tx
            .send(WriteOp::With(Box::new(move |l: &mut Ledger| {
                let _ = tx.send(f(l));
            })))
            .map_err(|_| LedgerError::WriterGone)?;
        rx.recv().map_err(|_| LedgerError::WriterGone)?
    }

    /// Queues a verdict.
    pub fn decide(&self, d: Decision) -> Result<(), LedgerError> {
        self.tx
            .send(WriteOp::Decide(d))
            .map_err(|_| LedgerError::WriterGone)
    }
}

/// Largest group of operations committed together.
const GROUP: usize = 2048;

fn writer_loop(
    ledger: &mut Ledger,
    rx: Receiver<WriteOp>,
    filed: SyncSender<Vec<Submission>>,
    health: &crate::health::Health,
    clock: crate::clock::Clock,
) -> Result<(), LedgerError> {
    // Group commit: whatever has queued up while the last group was being written goes into the
    // next transaction (waiting for more was measured to be slower, not faster).
    loop {
        health.beat("ledger-writer");
        let first = match rx.recv_timeout(std::time::Duration::from_millis(500)) {
            Ok(op) => op,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut ops = vec![first];
        while ops.len() < GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let mut decisions = Vec::new();
        for op in ops {
            match op {
                WriteOp::Claims(claims, reply) => {
                    let r = retrying(health, "record claims", || ledger.insert_claims(&claims));
                    let failed = r.as_ref().err().map(ToString::to_string);
                    let _ = reply.send(failed.clone().map_or(Ok(()), Err));
                    if let Err(e) = r {
                        tracing::error!(error = %e, "cannot record claims");
                        return Err(e);
                    }
                }
                WriteOp::Forget(ids) => retrying(health, "forget claims", || ledger.forget(&ids))?,
                WriteOp::Decide(d) => decisions.push(d),
                WriteOp::With(f) => f(ledger),
            }
        }
        if !decisions.is_empty() {
            let done = retrying(health, "record verdicts", || {
                ledger.decide(&decisions, clock.now())
            })?;
            if filed.send(done).is_err() {
                return Err(LedgerError::WriterGone);
            }
        }
    }
    Ok(())
}

/// Runs a ledger write until it succeeds or fails for good: a transient fault (disk full, I/O
/// error, busy, read-only folder) is retried with a doubling pause up to 5 s, the stage shown
/// degraded meanwhile; nothing is lost and nothing is recorded twice (each try is one
/// transaction, rolled back when it fails).
fn retrying<T>(
    health: &crate::health::Health,
    what: &str,
    mut f: impl FnMut() -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    let mut backoff = crate::health::Backoff::default();
    loop {
        match f() {
            Ok(v) => {
                health.fault("ledger-writer", None);
                return Ok(v);
            }
            Err(e) if e.is_transient() && !health.is_stopping() => {
                health.fault("ledger-writer", Some(format!("cannot {what}: {e}")));
                backoff.wait();
            }
            Err(e) => return Err(e),
        }
    }
}

impl LedgerError {
    /// Whether the fault passes with time (a full disk, an I/O error, a busy or read-only
    /// database): to be retried, never taken for a verdict.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            LedgerError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    C::DiskFull
                        | C::SystemIoFailure
                        | C::DatabaseBusy
                        | C::DatabaseLocked
                        | C::CannotOpen
                        | C::ReadOnly
                        | C::OutOfMemory,
                )
            ),
            LedgerError::Folder { source, .. } => crate::examine::is_transient(source),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_reopens_with_its_data_and_refuses_a_newer_schema() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("state/pom.sqlite");
        {
            let mut l = Ledger::open(&db).unwrap();
            assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
            l.insert_claims(&[NewClaim {
                id: ClaimId(1_800_000_000_000_000),
                channel: "obs".into(),
                original: b"a.xml".to_vec(),
                marker: None,
                replay: None,
            }])
            .unwrap();
        }
        let l = Ledger::open(&db).unwrap();
        assert_eq!(l.in_state(State::Claimed).unwrap().len(), 1);
        assert_eq!(l.last_id().unwrap(), Some(ClaimId(1_800_000_000_000_000)));
        l.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(l);
        assert!(matches!(
            Ledger::open(&db),
            Err(LedgerError::TooNew { found: 99, .. })
        ));
    }

    /// A file of the slot `slot`, claimed.
    fn claimed(ledger: &mut Ledger, id: i64, slot: &str) -> NewClaim {
        let claim = NewClaim {
            id: ClaimId(id),
            channel: "obs".into(),
            original: format!("{slot}-{id}.xml").into_bytes(),
            marker: None,
            replay: None,
        };
        ledger.insert_claims(std::slice::from_ref(&claim)).unwrap();
        claim
    }

    /// Its decision: accepted, delivered to the slot `slot` of the model `runoff`. Distinct
    /// content per decision, so that none is a duplicate.
    fn decide_into(ledger: &mut Ledger, claim: NewClaim, slot: &str) {
        let now = ClaimId(claim.id.0 + 1).time();
        let decision = Decision {
            claim,
            examined: Examined {
                size: 10,
                sha256: Some(format!("{slot}-{now}")),
                root: None,
                identified: Some(("pi-timeseries".into(), "1.5".into())),
                verdict: Verdict::Accepted {
                    format: "pi-timeseries".into(),
                    version: "1.5".into(),
                    checked: "well-formed".into(),
                },
            },
            route: Some((
                route::Decision::Routed {
                    rules: vec![slot.into()],
                    actions: vec![Action::Deliver {
                        model: "runoff".into(),
                        slot: slot.into(),
                    }],
                },
                "v1".into(),
            )),
        };
        ledger.decide(&[decision], now).unwrap();
    }

    #[test]
    fn a_join_sees_a_delivery_only_once_every_file_that_arrived_before_it_is_decided() {
        let d = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&d.path().join("pom.sqlite")).unwrap();
        let t = 1_800_000_000_000_000;
        // Two pairs of observations, claimed in this order; the second pair is decided first,
        // as two files examined side by side can be.
        let rain1 = claimed(&mut l, t, "rain");
        let flow1 = claimed(&mut l, t + 1, "flow");
        let rain2 = claimed(&mut l, t + 2, "rain");
        let flow2 = claimed(&mut l, t + 3, "flow");
        decide_into(&mut l, rain1, "rain");
        decide_into(&mut l, rain2, "rain");
        decide_into(&mut l, flow2, "flow");
        let slots = |l: &Ledger, in_order: Option<ClaimId>| -> Vec<String> {
            l.pending_deliveries("runoff", None, 100, in_order)
                .unwrap()
                .into_iter()
                .map(|p| format!("{}@{}", p.slot, p.submission))
                .collect()
        };
        let at = |id: i64| ClaimId(id).text();
        // In arrival order: the first rain only, since the first discharge may still be coming.
        let in_order = Some(ClaimId(t - 60_000_000));
        assert_eq!(slots(&l, in_order), vec![format!("rain@{}", at(t))]);
        // Without order (what a trigger on arrival needs): every delivery made.
        assert_eq!(slots(&l, None).len(), 3);
        // A file claimed before the wait began holds nothing back.
        assert_eq!(slots(&l, Some(ClaimId(t + 2))).len(), 3);
        decide_into(&mut l, flow1, "flow");
        assert_eq!(
            slots(&l, in_order),
            vec![
                format!("rain@{}", at(t)),
                format!("flow@{}", at(t + 1)),
                format!("rain@{}", at(t + 2)),
                format!("flow@{}", at(t + 3)),
            ]
        );
    }

    #[test]
    fn a_ledger_written_by_an_older_pom_is_migrated_with_its_rows() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("v1.sqlite");
        {
            // What the first release wrote: migration 1 only, and a decided file.
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO submissions (id, channel, original, state, received_at, sha256, stored)
                 VALUES ('20261128T153613000000Z', 'obs', X'612E786D6C', 'archived',
                         '2026-11-28T15:36:13.000000Z', 'abc', 'archive/2026/11/28/obs/x')",
                [],
            )
            .unwrap();
        }
        let l = Ledger::open(&db).unwrap();
        assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let s = l.get("20261128T153613000000Z").unwrap().unwrap();
        assert_eq!(
            (s.original.as_slice(), s.state),
            (&b"a.xml"[..], State::Archived)
        );
        assert_eq!(s.route, None);
        assert!(s.route_actions.is_empty());
        assert_eq!(l.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn an_empty_database_from_before_the_first_migration_is_brought_up_to_date() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("old.sqlite");
        // A database file that exists but was never migrated (user_version 0).
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE unrelated (x INTEGER); INSERT INTO unrelated VALUES (1);")
            .unwrap();
        let l = Ledger::open(&db).unwrap();
        assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(l.integrity_check().unwrap(), "ok");
    }
}
