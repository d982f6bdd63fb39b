//! Backup of the ledger while the daemon runs, and the check of a backup before it is restored.
//!
//! In: the ledger's file (written meanwhile by the daemon's writer), a destination. Out: a
//! consistent copy, made with SQLite's online backup in one step inside one read transaction
//! (a WAL reader: the daemon's writes go on), written under a temporary name, synced, then
//! renamed, so that a backup file is whole or absent; and what a check finds in a copy.
//! Never: a backup that would depend on a `-wal` file beside it (the copy is a single file in
//! rollback-journal mode).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{LedgerError, MIGRATIONS, sq};
use crate::fs::with_suffix;

/// How long a backup waits for the database while it is locked (a checkpoint, a migration).
const BUSY_FOR: Duration = Duration::from_secs(60);

/// What a check of a ledger copy found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Checked {
    /// `PRAGMA integrity_check`'s answer: "ok" when sound.
    pub integrity: String,
    /// Its schema version, and the newest this build knows.
    pub schema_version: i64,
    /// The newest schema version this build knows.
    pub known_version: i64,
    /// Files it knows.
    pub submissions: i64,
    /// Runs it knows.
    pub runs: i64,
    /// The newest claim it records (files claimed after it are unknown to it).
    pub last_claim: Option<String>,
}

impl Checked {
    /// Whether the copy can be restored: sound, and not from a newer POM.
    pub fn restorable(&self) -> Result<(), String> {
        if self.integrity != "ok" {
            return Err(format!("integrity check: {}", self.integrity));
        }
        if self.schema_version > self.known_version {
            return Err(format!(
                "schema version {} is newer than this POM knows ({})",
                self.schema_version, self.known_version
            ));
        }
        Ok(())
    }
}

/// Copies the ledger at `db` to `to`, consistently, while it may be written. Returns the check
/// of the copy.
pub fn backup(db: &Path, to: &Path) -> Result<Checked, LedgerError> {
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sq(db, "open for backup"))?;
    let part = with_suffix(to, ".part");
    let _ = std::fs::remove_file(&part);
    {
        let mut dst = Connection::open(&part).map_err(sq(&part, "create the backup"))?;
        {
            let b = Backup::new(&src, &mut dst).map_err(sq(&part, "start the backup"))?;
            let since = Instant::now();
            // All pages in one step: one read transaction, one consistent state. A step in
            // pieces would start again at every write of the daemon.
            loop {
                match b.step(-1).map_err(sq(&part, "copy"))? {
                    StepResult::Done => break,
                    StepResult::More => {}
                    StepResult::Busy | StepResult::Locked if since.elapsed() < BUSY_FOR => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        return Err(LedgerError::NotWritable {
                            path: db.to_path_buf(),
                            why: format!("locked for more than {BUSY_FOR:?}: no backup taken"),
                        });
                    }
                }
            }
        }
        // A single self-contained file.
        let _: String = dst
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .map_err(sq(&part, "set the backup's journal mode"))?;
    }
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    let fail = |source: std::io::Error| LedgerError::Folder {
        path: to.to_path_buf(),
        source,
    };
    sync(&part).map_err(fail)?;
    std::fs::rename(&part, to).map_err(fail)?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync(dir).map_err(fail)?;
    }
    check(to)
}

/// Checks a ledger copy without changing it: integrity, schema version, what it holds.
pub fn check(file: &Path) -> Result<Checked, LedgerError> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sq(file, "open"))?;
    let one = |sql: &str, op: &'static str| -> Result<i64, LedgerError> {
        conn.query_row(sql, [], |r| r.get(0)).map_err(sq(file, op))
    };
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sq(file, "integrity check"))?;
    let schema_version = one("PRAGMA user_version", "read schema version")?;
    let counts = schema_version > 0;
    Ok(Checked {
        integrity,
        schema_version,
        known_version: MIGRATIONS.len() as i64,
        submissions: if counts {
            one("SELECT count(*) FROM submissions", "count files")?
        } else {
            0
        },
        runs: if counts {
            one("SELECT count(*) FROM runs", "count runs")?
        } else {
            0
        },
        last_claim: if counts {
            conn.query_row("SELECT max(id) FROM submissions", [], |r| r.get(0))
                .map_err(sq(file, "read the last claim"))?
        } else {
            None
        },
    })
}
