//! Archive and reject: put a decided file where it belongs, with what describes it.
//!
//! In: submissions whose verdicts the ledger has committed, in batches. Out: each file moved from
//! `queue/` to `archive/<yyyy>/<mm>/<dd>/<channel>/`, whose `manifest.pom.jsonl` gets one line of
//! metadata per file (id, original name, SHA-256, format, version, channel, received time), so
//! that an archived folder describes itself and can be replayed as is; or to
//! `rejected/<yyyy-mm-dd>/` beside a `.reason` a person can read. Metadata is written before the
//! file moves in; every step can be done again after a crash (a manifest line written twice says
//! the same thing twice: readers keep the last line per id).
//!
//! One manifest per folder rather than one sidecar per file: creating an inode per file doubled
//! the file system work of archiving (measured by the intake benchmark), and a folder copied
//! whole, the unit of replay, carries its manifest with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::config::routes::Action;
use crate::fs::{rename_noreplace, with_suffix};
use crate::ledger::{State, Submission};
use crate::spool::{Spool, Stored};

pub mod manifest;
pub mod retention;

pub use manifest::{MANIFEST, ManifestLine};
/// Suffix of the reason file beside a rejected file.
pub const REASON: &str = ".reason";

pub use crate::spool::stored_name;

/// Where a decided submission is stored, relative to the spool ([`crate::spool::destination`]).
pub fn destination(s: &Submission) -> String {
    crate::spool::destination(&Stored {
        id: &s.id,
        original: &s.original,
        channel: &s.channel,
        session: s.session.as_deref(),
        rejected: s.state == State::Rejected,
    })
}

/// Folders known to exist, so that filing does not ask the file system again for each file.
#[derive(Debug, Default)]
pub struct Folders(HashSet<PathBuf>);

impl Folders {
    fn ensure(&mut self, dir: &Path) -> io::Result<()> {
        if !self.0.contains(dir) {
            std::fs::create_dir_all(dir)?;
            if self.0.len() > 10_000 {
                self.0.clear();
            }
            self.0.insert(dir.to_path_buf());
        }
        Ok(())
    }
}

/// Files a batch of decided submissions: manifest lines and reasons first, then the moves out of
/// `queue/`. Returns the submissions that could not be filed, with why; they stay in `queue/`
/// and are filed again at the next start.
pub fn file_batch(
    spool: &Spool,
    batch: &[Submission],
    folders: &mut Folders,
) -> Vec<(String, io::Error)> {
    let mut failed = Vec::new();
    let mut manifests: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut moves = Vec::with_capacity(batch.len());
    for s in batch {
        let Some(stored) = &s.stored else { continue };
        let dest = spool.root().join(stored);
        let Some(dir) = dest.parent() else { continue };
        if let Err(e) = folders.ensure(dir) {
            failed.push((s.id.clone(), e));
            continue;
        }
        match s.state {
            State::Claimed => continue,
            State::Rejected => {
                if let Err(e) = std::fs::write(with_suffix(&dest, REASON), reason_text(s)) {
                    failed.push((s.id.clone(), e));
                    continue;
                }
            }
            State::Archived | State::Duplicate => {
                let line = manifest_line(s);
                manifests
                    .entry(dir.join(MANIFEST))
                    .or_default()
                    .push_str(&line);
            }
        }
        moves.push((s, dest));
    }
    let mut unwritten = HashSet::new();
    for (manifest, lines) in &manifests {
        let appended = manifest
            .parent()
            .map_or(Ok(()), |folder| manifest::append(folder, lines));
        if let Err(e) = appended {
            tracing::error!(manifest = %manifest.display(), error = %e, "cannot write the manifest");
            unwritten.insert(manifest.parent().map(Path::to_path_buf));
        }
    }
    for (s, dest) in moves {
        if unwritten.contains(&dest.parent().map(Path::to_path_buf)) {
            failed.push((
                s.id.clone(),
                io::Error::other("its manifest could not be written"),
            ));
            continue;
        }
        // Published before the file leaves queue/: a crash in between finds it there at the
        // next start, which files it again, and publishing again what is published does
        // nothing. Published after, a crash in between would lose the publication.
        let publishes = s
            .route_actions
            .iter()
            .any(|a| matches!(a, Action::Publish { .. }));
        if s.state == State::Archived && publishes {
            let queued = spool.queued(&s.id);
            let from = if std::fs::symlink_metadata(&queued).is_ok() {
                queued
            } else {
                dest.clone()
            };
            let unpublished = s.route_actions.iter().find_map(|a| match a {
                Action::Publish { target, name } => {
                    publish(spool, s, &from, (target, name.as_deref()), folders).err()
                }
                _ => None,
            });
            if let Some(e) = unpublished {
                failed.push((s.id.clone(), e));
                continue;
            }
        }
        if let Err(e) = move_in(spool, s, &dest) {
            failed.push((s.id.clone(), e));
        }
    }
    failed
}

/// Publishes an archived file by the publish actions of its route (after an operator routed it
/// again): the same publication as at its arrival.
pub fn publish_archived(spool: &Spool, s: &Submission) -> io::Result<()> {
    let stored = s.stored.as_deref().unwrap_or_default();
    let archived = crate::fs::confined(spool.root(), Path::new(stored)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{stored} is not a plain path under the spool"),
        )
    })?;
    let mut folders = Folders::default();
    for a in &s.route_actions {
        if let Action::Publish { target, name } = a {
            publish(spool, s, &archived, (target, name.as_deref()), &mut folders)?;
        }
    }
    Ok(())
}

/// Publishes a file being archived (`stored`: where it is now, in `queue/` or the archive; the
/// same inode either way) to `outgoing/<target>/` under its original name, or the name its
/// rule's template makes: a hard link, made under a temporary name and renamed over the previous
/// file of that name, so that a consumer sees the old file or the new one, never half of either.
/// Publishing the same file again does nothing.
fn publish(
    spool: &Spool,
    s: &Submission,
    stored: &Path,
    (target, template): (&str, Option<&str>),
    folders: &mut Folders,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // A replay never publishes to operational outgoing/.
    let dir = match &s.session {
        Some(session) => spool
            .root()
            .join("outgoing/replay")
            .join(session)
            .join(target),
        None => spool.root().join("outgoing").join(target),
    };
    folders.ensure(&dir)?;
    let ino = std::fs::metadata(stored)?.ino();
    let base = String::from_utf8_lossy(
        s.original
            .rsplit(|&b| b == b'/')
            .next()
            .unwrap_or(&s.original),
    )
    .into_owned();
    let name = match template {
        None => base,
        Some(t) => {
            let when = |text: &str| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .ok()
                    .map(|t| t.with_timezone(&chrono::Utc))
            };
            let time0 = s
                .produced_time0
                .as_deref()
                .and_then(when)
                .or_else(|| when(&s.received_at))
                .unwrap_or_default();
            let parts = crate::config::routes::Published {
                name: &base,
                time0,
                run: s.produced_by.as_deref().unwrap_or(&s.id),
                id: &s.id,
            };
            crate::config::routes::publish_name(t, &parts)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        }
    };
    let to = dir.join(&name);
    if std::fs::symlink_metadata(&to).is_ok_and(|m| m.ino() == ino) {
        return Ok(());
    }
    let tmp = dir.join(format!(".{}.publishing", s.id));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(stored, &tmp)?;
    std::fs::rename(&tmp, &to).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Every file stored for a submission, under the spool: the file itself, the marker that
/// released it, and the reason beside a rejected file.
pub fn stored_files(s: &Submission) -> Vec<String> {
    let Some(stored) = &s.stored else {
        return Vec::new();
    };
    let mut v = vec![stored.clone()];
    if let Some(marker) = &s.marker {
        v.push(format!("{stored}{}", marker_suffix(&s.original, marker)));
    }
    if s.state == crate::ledger::State::Rejected {
        v.push(format!("{stored}{REASON}"));
    }
    v
}

/// Files one decided submission (start-up reconcile).
pub fn file(spool: &Spool, s: &Submission) -> io::Result<()> {
    match file_batch(spool, std::slice::from_ref(s), &mut Folders::default()).pop() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

fn move_in(spool: &Spool, s: &Submission, dest: &Path) -> io::Result<()> {
    move_if_present(&spool.queued(&s.id), dest)?;
    if let Some(marker) = &s.marker {
        let marker_dest = with_suffix(dest, &marker_suffix(&s.original, marker));
        move_if_present(&spool.queued_marker(&s.id), &marker_dest)?;
    }
    Ok(())
}

fn move_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match rename_noreplace(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("move {} to {}: {e}", from.display(), to.display()),
        )),
    }
}

/// `a.xml` + `a.xml.ok` → `.ok`.
fn marker_suffix(original: &[u8], marker: &[u8]) -> String {
    let base = original.rsplit(|&b| b == b'/').next().unwrap_or(original);
    let marker = marker.rsplit(|&b| b == b'/').next().unwrap_or(marker);
    let tail = marker.strip_prefix(base).unwrap_or(b".marker");
    let tail = String::from_utf8_lossy(tail);
    if tail.starts_with('.') {
        tail.into_owned()
    } else {
        format!(".{tail}")
    }
}

/// One line of an archive folder's manifest: everything needed to replay the file.
pub fn manifest_line(s: &Submission) -> String {
    ManifestLine::of(s).to_line()
}

/// Reads an archive folder's manifest: the last line per file.
pub fn read_manifest(folder: &Path) -> io::Result<HashMap<String, ManifestLine>> {
    manifest::read(folder)
}

/// The `.reason` beside a rejected file, for a person.
pub fn reason_text(s: &Submission) -> String {
    let mut t = String::new();
    t.push_str("POM refused this file.\n\n");
    t.push_str(&format!(
        "reason:    {}\n",
        s.reason.as_deref().unwrap_or("unknown")
    ));
    t.push_str(&format!(
        "kind:      {}\n",
        s.reject_kind.as_deref().unwrap_or("unknown")
    ));
    t.push_str(&format!(
        "file:      {:?} on channel {}\n",
        String::from_utf8_lossy(&s.original),
        s.channel
    ));
    if std::str::from_utf8(&s.original).is_err() {
        t.push_str(&format!("name hex:  {}\n", hex::encode(&s.original)));
    }
    t.push_str(&format!("id:        {}\n", s.id));
    t.push_str(&format!("received:  {}\n", s.received_at));
    if let Some(size) = s.size {
        t.push_str(&format!("size:      {size} bytes\n"));
    }
    if let Some(h) = &s.sha256 {
        t.push_str(&format!("sha256:    {h}\n"));
    }
    if let (Some(f), Some(v)) = (&s.format, &s.version) {
        t.push_str(&format!("format:    {f} {v}\n"));
    }
    if !s.errors.is_empty() {
        t.push_str("\nlibxml2 says:\n");
        for e in &s.errors {
            t.push_str(&format!("  {e}\n"));
        }
    }
    t.push_str("\nFix the file and drop it again (it is a new submission).\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_safe_whatever_the_original() {
        assert_eq!(stored_name("I", b"obs.xml"), "I_obs.xml");
        assert_eq!(stored_name("I", b"-rf\n../x\xff.xml"), "I_-rf_.._x_.xml");
        assert!(stored_name("I", &[b'a'; 255]).len() <= crate::spool::NAME_BUDGET + 2);
    }

    #[test]
    fn a_marker_keeps_its_suffix() {
        assert_eq!(marker_suffix(b"d/a.xml", b"d/a.xml.ok"), ".ok");
        assert_eq!(marker_suffix(b"a.xml", b"a.xml.done"), ".done");
    }
}
