//! Restore of a ledger backup, and its reconciliation with a spool that went on after it.
//!
//! In: a backup (`pom backup`), the spool (the daemon stopped: its lock is taken for the
//! whole restore). Out: the backup in place of the ledger (the replaced ledger kept beside it,
//! with its WAL), then the spool and the restored ledger brought into agreement:
//! - an archived file the ledger does not know, or knew only as claimed (claimed after the
//!   backup, or examined while it was taken), is taken as a new arrival: moved back into its channel's `incoming/` folder, its line removed from its
//!   folder's manifest, so that the daemon claims, checks and routes it again;
//! - a file the ledger says is archived but that is not there is reported.
//!
//! Never: a backup restored that fails its integrity check or comes from a newer POM; a name
//! read from a manifest used unless it is one safe component under the spool; a link followed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{DaemonError, lock_spool};
use crate::archive::manifest::{MANIFEST, ManifestLine};
use crate::fs::{rename_noreplace, safe_component, with_suffix};
use crate::ledger::backup::{Checked, check};
use crate::ledger::{Ledger, State};
use crate::spool::Spool;

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    /// The check of the backup restored.
    pub checked: Checked,
    /// Where the replaced ledger was moved (none if there was none).
    pub replaced: Option<PathBuf>,
    /// Archived files unknown to the restored ledger, moved back into `incoming/` as new
    /// arrivals (their paths under the spool).
    pub new_arrivals: Vec<String>,
    /// Files the restored ledger says are archived, not found (id and stored path).
    pub missing: Vec<(String, String)>,
    /// Archived files unknown to the ledger that were left where they are, with the reason.
    pub left: Vec<(String, String)>,
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup cannot be restored (unsound, or from a newer POM).
    #[error("backup {path}: {why}; nothing was changed")]
    Refused {
        /// The backup.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The daemon holds the spool, the ledger failed, or a file could not be moved.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// A file could not be read or moved.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Restores `backup` as the ledger `db` of `spool` (the daemon must be stopped), then
/// reconciles the spool with it.
pub fn restore(
    spool: &Spool,
    db: &Path,
    backup: &Path,
    now: DateTime<Utc>,
) -> Result<Restored, RestoreError> {
    let checked = check(backup).map_err(|e| RestoreError::Refused {
        path: backup.to_path_buf(),
        why: e.to_string(),
    })?;
    checked.restorable().map_err(|why| RestoreError::Refused {
        path: backup.to_path_buf(),
        why,
    })?;
    std::fs::create_dir_all(spool.root().join("state")).map_err(io(spool.root(), "create"))?;
    let _lock = lock_spool(spool)?;

    // The ledger in force, with its WAL and index, moved aside as one.
    let stamp = now.format("%Y%m%dT%H%M%SZ");
    let aside = with_suffix(db, &format!(".before-restore-{stamp}"));
    let replaced = if std::fs::symlink_metadata(db).is_ok() {
        for (from, to) in [("", ""), ("-wal", "-wal"), ("-shm", "-shm")] {
            let f = with_suffix(db, from);
            if std::fs::symlink_metadata(&f).is_ok() {
                std::fs::rename(&f, with_suffix(&aside, to)).map_err(io(&f, "move aside"))?;
            }
        }
        Some(aside)
    } else {
        None
    };
    let part = with_suffix(db, ".restoring");
    std::fs::copy(backup, &part).map_err(io(&part, "copy the backup"))?;
    std::fs::File::open(&part)
        .and_then(|f| f.sync_all())
        .map_err(io(&part, "sync"))?;
    std::fs::rename(&part, db).map_err(io(db, "put in place"))?;
    // Opening applies the migrations a backup from an older POM needs.
    let ledger = Ledger::open(db)?;
    let (new_arrivals, left) = take_unknown_as_new(spool, &ledger)?;
    let missing = known_but_missing(spool, &ledger)?;
    Ok(Restored {
        checked,
        replaced,
        new_arrivals,
        missing,
        left,
    })
}

/// Files moved back to `incoming/` (`from -> to`), and files left in place with the reason.
type Reconciled = (Vec<String>, Vec<(String, String)>);

/// Archived files the ledger does not know, moved back into their channel as new arrivals.
fn take_unknown_as_new(spool: &Spool, ledger: &Ledger) -> Result<Reconciled, RestoreError> {
    let archive = spool.root().join("archive");
    let mut moved = Vec::new();
    let mut left = Vec::new();
    let folders: Vec<PathBuf> = walkdir::WalkDir::new(&archive)
        .follow_links(false)
        .into_iter()
        // A replay's files are not operational arrivals.
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == "replay"))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name() == MANIFEST)
        .filter_map(|e| e.path().parent().map(Path::to_path_buf))
        .collect();
    for folder in folders {
        let lines = crate::archive::read_manifest(&folder).map_err(io(&folder, "read manifest"))?;
        let mut gone: HashSet<String> = HashSet::new();
        for (file, line) in &lines {
            let Some(id) = &line.id else { continue };
            // Known and decided: in place. Unknown, or only claimed when the backup was taken
            // (the daemon's start forgets such a claim, its file not being in queue/): a new
            // arrival.
            if ledger.get(id)?.is_some_and(|s| s.state != State::Claimed) {
                continue;
            }
            let rel = folder
                .strip_prefix(spool.root())
                .unwrap_or(&folder)
                .join(file);
            let shown = rel.display().to_string();
            match back_to_incoming(spool, &folder, line) {
                Ok(to) => {
                    gone.insert(file.clone());
                    moved.push(format!("{shown} -> {to}"));
                }
                Err(why) => left.push((shown, why)),
            }
        }
        if !gone.is_empty() {
            rewrite_manifest(&folder, &lines, &gone)?;
        }
    }
    Ok((moved, left))
}

/// Moves one archived file back into `incoming/<channel>/` under its original name's last
/// component (or its stored name when that is not safe); returns where, under the spool.
fn back_to_incoming(spool: &Spool, folder: &Path, line: &ManifestLine) -> Result<String, String> {
    if !safe_component(&line.file) || !safe_component(&line.channel) {
        return Err("its manifest line names no safe file or channel".into());
    }
    let from = folder.join(&line.file);
    match std::fs::symlink_metadata(&from) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return Err("not a regular file".into()),
        Err(e) => return Err(format!("cannot be read: {e}")),
    }
    let channel = spool.channel(&line.channel);
    if !std::fs::symlink_metadata(&channel).is_ok_and(|m| m.is_dir()) {
        return Err(format!(
            "its channel {} has no incoming folder",
            line.channel
        ));
    }
    let original = line.original.rsplit('/').next().unwrap_or_default();
    let name = if safe_component(original) && !original.starts_with('.') {
        original.to_string()
    } else {
        line.file.clone()
    };
    for candidate in [name, format!("restored-{}", line.file)] {
        let to = channel.join(&candidate);
        match rename_noreplace(&from, &to) {
            Ok(()) => return Ok(format!("incoming/{}/{candidate}", line.channel)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot be moved: {e}")),
        }
    }
    Err("its names are taken in its channel".into())
}

/// Writes a folder's manifest again without the lines of the files moved out.
fn rewrite_manifest(
    folder: &Path,
    lines: &std::collections::HashMap<String, ManifestLine>,
    gone: &HashSet<String>,
) -> Result<(), RestoreError> {
    let kept: BTreeMap<&String, &ManifestLine> =
        lines.iter().filter(|(f, _)| !gone.contains(*f)).collect();
    let mut text = String::new();
    for line in kept.values() {
        text.push_str(&line.to_line());
    }
    let path = folder.join(MANIFEST);
    let part = with_suffix(&path, ".part");
    std::fs::write(&part, text).map_err(io(&part, "write"))?;
    std::fs::File::open(&part)
        .and_then(|f| f.sync_all())
        .map_err(io(&part, "sync"))?;
    std::fs::rename(&part, &path).map_err(io(&path, "replace"))
}

/// Files the ledger says are archived (operational), not in the archive.
fn known_but_missing(
    spool: &Spool,
    ledger: &Ledger,
) -> Result<Vec<(String, String)>, RestoreError> {
    let mut missing = Vec::new();
    for s in ledger.in_state(State::Archived)? {
        let Some(stored) = &s.stored else { continue };
        if s.pruned_at.is_some() {
            // Removed by retention, and recorded so: not missing.
            continue;
        }
        let present = crate::fs::confined(spool.root(), Path::new(stored))
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok());
        if !present {
            missing.push((s.id.clone(), stored.clone()));
        }
    }
    Ok(missing)
}
