//! Restore of a ledger backup, and its reconciliation with a spool that went on after it.
//!
//! In: a backup (`pom backup`), the spool (the daemon stopped: its lock is taken for the
//! whole restore). Out: the backup in place of the ledger (the replaced ledger kept beside it,
//! with its WAL), then the spool and the restored ledger brought into agreement:
//! - an archived or rejected file the ledger does not know, or knew only as claimed (claimed
//!   after the backup, or examined while it was taken), is taken as a new arrival: moved back
//!   into its channel's `incoming/` folder (an archived file's line removed from its folder's
//!   manifest, a rejected file's `.reason` removed), so that the daemon claims, checks and
//!   routes it again and the ledger knows every file in the spool;
//! - a file the ledger says is archived but that is not there is reported.
//!
//! Memory stays bounded whatever the ledger's size: the ledger's archived files are read one
//! row at a time, the archive one folder at a time, and at most [`LISTED`] files of each kind
//! are listed (all are counted).
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

/// At most this many files of each kind are listed in a [`Restored`]; all are counted.
pub const LISTED: usize = 1000;

/// Files of one kind: how many, and the first [`LISTED`] of them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing<T> {
    /// How many there are.
    pub count: u64,
    /// The first of them.
    pub first: Vec<T>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            count: 0,
            first: Vec::new(),
        }
    }
}

impl<T> Listing<T> {
    fn push(&mut self, item: T) {
        self.count += 1;
        if self.first.len() < LISTED {
            self.first.push(item);
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    /// The check of the backup restored.
    pub checked: Checked,
    /// Where the replaced ledger was moved (none if there was none).
    pub replaced: Option<PathBuf>,
    /// Archived and rejected files unknown to the restored ledger, moved back into `incoming/`
    /// as new arrivals (`from -> to`, under the spool).
    pub new_arrivals: Listing<String>,
    /// Files the restored ledger says are archived, not found (id and stored path).
    pub missing: Listing<(String, String)>,
    /// Archived or rejected files unknown to the ledger that were left where they are, with the
    /// reason.
    pub left: Listing<(String, String)>,
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
    let mut new_arrivals = Listing::default();
    let mut left = Listing::default();
    take_unknown_archived(spool, &ledger, &mut new_arrivals, &mut left)?;
    take_unknown_rejected(spool, &ledger, &mut new_arrivals, &mut left)?;
    let missing = known_but_missing(spool, &ledger)?;
    Ok(Restored {
        checked,
        replaced,
        new_arrivals,
        missing,
        left,
    })
}

/// The files under an area of the spool (`archive/`, `rejected/`) but a replay's, which are not
/// operational arrivals; links never followed.
fn operational_files(area: &Path) -> impl Iterator<Item = walkdir::DirEntry> {
    walkdir::WalkDir::new(area)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == "replay"))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
}

/// Whether the restored ledger has decided the file of this claim id. A file it knows only as
/// claimed is not decided: the daemon's start forgets such a claim, its file not being in
/// `queue/`.
fn decided(ledger: &Ledger, id: &str) -> Result<bool, RestoreError> {
    Ok(ledger.get(id)?.is_some_and(|s| s.state != State::Claimed))
}

/// Archived files the ledger does not know, moved back into their channel as new arrivals.
fn take_unknown_archived(
    spool: &Spool,
    ledger: &Ledger,
    moved: &mut Listing<String>,
    left: &mut Listing<(String, String)>,
) -> Result<(), RestoreError> {
    let folders: Vec<PathBuf> = operational_files(&spool.root().join("archive"))
        .filter(|e| e.file_name() == MANIFEST)
        .filter_map(|e| e.path().parent().map(Path::to_path_buf))
        .collect();
    for folder in folders {
        let lines = crate::archive::read_manifest(&folder).map_err(io(&folder, "read manifest"))?;
        let mut gone: HashSet<String> = HashSet::new();
        for (file, line) in &lines {
            let Some(id) = &line.id else { continue };
            if decided(ledger, id)? {
                continue;
            }
            let rel = folder
                .strip_prefix(spool.root())
                .unwrap_or(&folder)
                .join(file);
            let shown = rel.display().to_string();
            if !safe_component(&line.file) {
                left.push((shown, "its manifest line names no safe file".into()));
                continue;
            }
            let original = line.original.rsplit('/').next().unwrap_or_default();
            match back_to_incoming(
                spool,
                &folder.join(&line.file),
                &line.channel,
                original,
                &line.file,
            ) {
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
    Ok(())
}

/// Rejected files the ledger does not know, moved back into their channel as new arrivals:
/// the claim id is the head of the stored name, the channel is read from the `.reason`
/// beside it (which is removed: the file's new verdict writes its own).
fn take_unknown_rejected(
    spool: &Spool,
    ledger: &Ledger,
    moved: &mut Listing<String>,
    left: &mut Listing<(String, String)>,
) -> Result<(), RestoreError> {
    // rejected/<yyyy-mm-dd>/<id>_<name>
    for e in operational_files(&spool.root().join("rejected")).filter(|e| e.depth() == 2) {
        let Some(name) = e.file_name().to_str() else {
            continue;
        };
        if name.ends_with(crate::archive::REASON) || name.starts_with('.') {
            continue;
        }
        let rel = e.path().strip_prefix(spool.root()).unwrap_or(e.path());
        let shown = rel.display().to_string();
        let Some((id, original)) = name
            .split_once('_')
            .filter(|(id, _)| crate::id::ClaimId::parse(id).is_some())
        else {
            left.push((shown, "its name carries no claim id".into()));
            continue;
        };
        if decided(ledger, id)? {
            continue;
        }
        let reason_rel = with_suffix(rel, crate::archive::REASON);
        let channel = crate::fs::read_confined(spool.root(), &reason_rel, 1 << 20)
            .ok()
            .and_then(|t| reason_channel(&String::from_utf8_lossy(&t)));
        let Some(channel) = channel else {
            left.push((shown, "its .reason names no channel".into()));
            continue;
        };
        match back_to_incoming(spool, e.path(), &channel, original, name) {
            Ok(to) => {
                let reason = spool.root().join(&reason_rel);
                if let Err(err) = std::fs::remove_file(&reason)
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(io(&reason, "remove")(err));
                }
                moved.push(format!("{shown} -> {to}"));
            }
            Err(why) => left.push((shown, why)),
        }
    }
    Ok(())
}

/// The channel a `.reason` names (its `file:` line ends `on channel <name>`).
fn reason_channel(reason: &str) -> Option<String> {
    let line = reason.lines().find(|l| l.starts_with("file:"))?;
    let (_, channel) = line.rsplit_once(" on channel ")?;
    Some(channel.trim().to_string())
}

/// Moves one decided file back into `incoming/<channel>/` under `original` (or `stored`
/// when that is not a safe name, or taken); returns where, under the spool.
fn back_to_incoming(
    spool: &Spool,
    from: &Path,
    channel: &str,
    original: &str,
    stored: &str,
) -> Result<String, String> {
    if !safe_component(channel) {
        return Err("it names no safe channel".into());
    }
    match std::fs::symlink_metadata(from) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return Err("not a regular file".into()),
        Err(e) => return Err(format!("cannot be read: {e}")),
    }
    let folder = spool.channel(channel);
    if !std::fs::symlink_metadata(&folder).is_ok_and(|m| m.is_dir()) {
        return Err(format!("its channel {channel} has no incoming folder"));
    }
    let name = if safe_component(original) && !original.starts_with('.') {
        original
    } else {
        stored
    };
    for candidate in [name.to_string(), format!("restored-{stored}")] {
        let to = folder.join(&candidate);
        match rename_noreplace(from, &to) {
            Ok(()) => return Ok(format!("incoming/{channel}/{candidate}")),
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

/// Files the ledger says are archived and not pruned by retention, not in the archive.
fn known_but_missing(
    spool: &Spool,
    ledger: &Ledger,
) -> Result<Listing<(String, String)>, RestoreError> {
    let mut missing = Listing::default();
    ledger.each_archived_stored(|id, stored| {
        let present = crate::fs::confined(spool.root(), Path::new(stored))
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok());
        if !present {
            missing.push((id.to_string(), stored.to_string()));
        }
    })?;
    Ok(missing)
}
