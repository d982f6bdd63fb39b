//! Retention: stored files past their channel's `keep` and run folders past their model's
//! `keep`, removed in small steps; and the disk use of each area of the spool.
//!
//! In: the rules in force (`keep` per channel and per model), the ledger (what is stored where,
//! since when), the clock (the daemon's: a simulated clock moves retention too). Out: files
//! (with their marker and reason) and run folders removed, then `pruned_at` recorded through
//! the writer (a crash between the two removes again and finds nothing: never a row marked
//! whose file is still there), disk use per area on the board. Never: a file younger than its
//! keep, a path outside the spool or through a link, the run folder holding a model's newest
//! saved state, intake's CPU (lowest priority, at most [`STEP`] removals per [`PACE`]).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::board::{Board, DiskUse};
use crate::config::rules::RuleSet;
use crate::config::{Shared, current};
use crate::ledger::{Ledger, LedgerError, Writer};

/// Removals per step.
pub const STEP: usize = 200;
/// The pause between two steps while there is more to remove.
pub const PACE: Duration = Duration::from_secs(1);
/// The pause when nothing is due.
const IDLE: Duration = Duration::from_secs(5);
/// How often the disk use of the spool's areas is measured (and after removals, at most every
/// [`DISK_AFTER_PRUNING`]).
const DISK_EVERY: Duration = Duration::from_secs(300);
const DISK_AFTER_PRUNING: Duration = Duration::from_secs(5);

/// The claim id before which a file is past `keep` at `now` (claim ids are arrival times).
pub fn files_before(now: DateTime<Utc>, keep: Duration) -> String {
    let keep = chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
    let cut = now
        .checked_sub_signed(keep)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    crate::id::ClaimId(cut.timestamp_micros()).text()
}

/// The end time before which a run's folder is past `keep` at `now`.
pub fn runs_before(now: DateTime<Utc>, keep: Duration) -> DateTime<Utc> {
    let keep = chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
    now.checked_sub_signed(keep)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Starts the retention stage; it ends when `stop` is raised.
pub fn spawn(
    db: PathBuf,
    spool: PathBuf,
    rules: Shared<RuleSet>,
    writer: Writer,
    board: Arc<Board>,
    stop: Arc<AtomicBool>,
    clock: crate::clock::Clock,
) -> std::thread::JoinHandle<Result<(), LedgerError>> {
    board.health().expect(
        "retention",
        crate::health::STUCK_AFTER.max(Duration::from_secs(120)),
    );
    let health = Arc::clone(board.health());
    crate::health::spawn("retention", health, move || {
        crate::health::lowest_priority("retention");
        let reader = Ledger::open_readonly(&db)?;
        // Counted once here; each step adds what it removed, each measure of the disk counts
        // again (a row marked twice by a step done again after a crash counts once).
        let count = || {
            reader
                .pruned_counts()
                .map(|(files, runs)| crate::board::Pruned { files, runs })
        };
        match count() {
            Ok(p) => board.set_pruned(p),
            Err(e) => tracing::warn!("retention: cannot count what was pruned yet: {e}"),
        }
        let mut measured: Option<Instant> = None;
        let mut pruned_since_measure = false;
        while !stop.load(Ordering::Relaxed) {
            board.health().beat("retention");
            let mut more = false;
            match step(&reader, &spool, &current(&rules), &writer, clock.now()) {
                Ok(done) => {
                    board.health().fault("retention", None);
                    more = done.removed() >= STEP;
                    pruned_since_measure |= done.removed() > 0;
                    board.add_pruned(done.files, done.runs);
                }
                Err(Fault::Ledger(e)) if matches!(e, LedgerError::WriterGone) => {
                    if board.health().is_stopping() {
                        return Ok(());
                    }
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!("retention: cannot prune now, trying again: {e}");
                    board
                        .health()
                        .fault("retention", Some(format!("cannot prune: {e}")));
                }
            }
            let due = match measured {
                None => true,
                Some(t) => {
                    t.elapsed() >= DISK_EVERY
                        || (pruned_since_measure && t.elapsed() >= DISK_AFTER_PRUNING)
                }
            };
            if due {
                board.set_disk(disk_use(&spool, clock.now(), &board, &stop));
                match count() {
                    Ok(p) => board.set_pruned(p),
                    Err(e) => tracing::warn!("retention: cannot count what was pruned: {e}"),
                }
                measured = Some(Instant::now());
                pruned_since_measure = false;
            }
            let pause = if more { PACE } else { IDLE };
            let mut waited = Duration::ZERO;
            while waited < pause && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                waited += Duration::from_millis(100);
                board.health().beat("retention");
            }
        }
        Ok(())
    })
}

/// Why a step stopped short: the ledger, or a file that cannot be removed now (its row stays
/// unmarked and it is tried again).
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What a step did.
#[derive(Debug, Default)]
struct Done {
    files: usize,
    runs: usize,
}

impl Done {
    fn removed(&self) -> usize {
        self.files + self.runs
    }
}

/// One step: at most [`STEP`] files and run folders past their keep, removed then recorded.
fn step(
    reader: &Ledger,
    spool: &Path,
    rules: &RuleSet,
    writer: &Writer,
    now: DateTime<Utc>,
) -> Result<Done, Fault> {
    let mut done = Done::default();
    for (name, channel) in &rules.channels {
        let Some(keep) = channel.keep else { continue };
        let left = STEP.saturating_sub(done.removed());
        if left == 0 {
            break;
        }
        let due = reader.prunable_files(name, &files_before(now, keep), left)?;
        let items: Vec<(String, Vec<String>)> = due
            .iter()
            .map(|s| (s.id.clone(), crate::archive::stored_files(s)))
            .collect();
        done.files += prune(
            &items,
            |(_, files)| files.iter().try_for_each(|rel| remove_file(spool, rel)),
            |ids| {
                let n = ids.len();
                writer.with(move |l| l.mark_files_pruned(&ids, now))?;
                tracing::info!(channel = %name, files = n, "retention: files past their keep removed");
                Ok(())
            },
        )?;
    }
    for (name, model) in &rules.models {
        let Some(keep) = model.keep else { continue };
        let left = STEP.saturating_sub(done.removed());
        if left == 0 {
            break;
        }
        let due = reader.prunable_runs(name, runs_before(now, keep), left)?;
        done.runs += prune(
            &due,
            |(_, dir)| remove_folder(spool, dir),
            |ids| {
                let n = ids.len();
                writer.with(move |l| l.mark_runs_pruned(&ids, now))?;
                tracing::info!(model = %name, runs = n, "retention: run folders past their keep removed");
                Ok(())
            },
        )?;
    }
    Ok(done)
}

/// Removes each `(id, what)` in order until one cannot be removed, then records those removed
/// with `mark` (removed first, recorded after: a crash between the two removes again, which
/// finds nothing). Returns how many were removed, or the fault that stopped it once those are
/// recorded.
fn prune<T>(
    items: &[(String, T)],
    remove: impl Fn(&(String, T)) -> Result<(), Fault>,
    mark: impl FnOnce(Vec<String>) -> Result<(), LedgerError>,
) -> Result<usize, Fault> {
    let mut ids = Vec::new();
    let mut failed = None;
    for item in items {
        match remove(item) {
            Ok(()) => ids.push(item.0.clone()),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let n = ids.len();
    if n > 0 {
        mark(ids)?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// Removes a stored file, confined under the spool; one already gone is done.
fn remove_file(spool: &Path, rel: &str) -> Result<(), Fault> {
    let Some(path) = crate::fs::confined(spool, Path::new(rel)) else {
        // A path from the ledger that leaves the spool is never followed: nothing to remove.
        return Ok(());
    };
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Fault::Io { path, source }),
    }
}

/// Removes a run folder, confined under the spool, never through a link.
fn remove_folder(spool: &Path, rel: &str) -> Result<(), Fault> {
    let Some(path) = crate::fs::confined(spool, Path::new(rel)) else {
        return Ok(());
    };
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Fault::Io { path, source }),
        // A link where a run folder was: the link goes, never what it points to.
        Ok(m) if !m.is_dir() => {
            return std::fs::remove_file(&path).map_err(|source| Fault::Io { path, source });
        }
        Ok(_) => {}
    }
    // remove_dir_all removes links inside, never their targets.
    match std::fs::remove_dir_all(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Fault::Io { path, source }),
    }
}

/// The disk use (allocated bytes) and file count of each top-level folder of the spool.
pub fn disk_use(spool: &Path, now: DateTime<Utc>, board: &Board, stop: &AtomicBool) -> DiskUse {
    use std::os::unix::fs::MetadataExt;
    let mut areas: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(spool) else {
        return DiskUse::default();
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let area = e.file_name().to_string_lossy().into_owned();
        let (mut bytes, mut files) = (0u64, 0u64);
        for (i, f) in walkdir::WalkDir::new(e.path())
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .enumerate()
        {
            if i % 10_000 == 0 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                board.health().beat("retention");
            }
            if let Ok(m) = f.metadata() {
                bytes += m.blocks() * 512;
                files += u64::from(m.is_file());
            }
        }
        areas.insert(area, (bytes, files));
    }
    DiskUse {
        at: Some(crate::ledger::timestamp(now)),
        areas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_file_is_past_its_keep_once_its_arrival_is_older_than_it() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let keep = Duration::from_secs(400 * 86_400);
        let cut = files_before(now, keep);
        let at = |t: DateTime<Utc>| crate::id::ClaimId(t.timestamp_micros()).text();
        let older = now - chrono::TimeDelta::days(400) - chrono::TimeDelta::microseconds(1);
        let newer = now - chrono::TimeDelta::days(400);
        assert!(at(older) < cut);
        assert!(at(newer) >= cut, "exactly at its keep, it stays");
        assert_eq!(
            runs_before(now, keep),
            Utc.with_ymd_and_hms(2025, 10, 27, 12, 0, 0).unwrap()
        );
    }
}
