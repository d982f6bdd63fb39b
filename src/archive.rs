//! Archive and reject: put a decided file where it belongs, with what describes it.
//!
//! In: a submission whose verdict the ledger has committed. Out: the file moved from `queue/` to
//! `archive/<yyyy>/<mm>/<dd>/<channel>/` beside a `.pom.json` sidecar (so that an archived folder
//! describes itself and can be replayed as is), or to `rejected/<yyyy-mm-dd>/` beside a `.reason`
//! a person can read. Every step is idempotent: after a crash it is simply done again.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::claim::rename_noreplace;
use crate::ledger::{State, Submission};
use crate::spool::Spool;

/// Suffix of the metadata sidecar beside an archived file.
pub const SIDECAR: &str = ".pom.json";
/// Suffix of the reason file beside a rejected file.
pub const REASON: &str = ".reason";

/// Longest safe-name part of a stored file name, in bytes (leaves room for the id and suffixes).
const NAME_BUDGET: usize = 180;

/// The name a submission is stored under: `<id>_<original, made safe>`. The original name stays
/// byte for byte in the sidecar and the ledger; on disk only `[A-Za-z0-9._-]` are kept, so that no
/// stored name starts with `-`, holds a newline or a `/`, or is not UTF-8.
pub fn stored_name(id: &str, original: &[u8]) -> String {
    let mut safe = String::with_capacity(original.len().min(NAME_BUDGET));
    for &b in original {
        if safe.len() >= NAME_BUDGET {
            break;
        }
        let c = b as char;
        safe.push(if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
            c
        } else {
            '_'
        });
    }
    format!("{id}_{safe}")
}

/// Where a decided submission is stored, relative to the spool.
pub fn destination(s: &Submission) -> String {
    let t = s.claim_id().map(|c| c.time()).unwrap_or_default();
    let name = stored_name(&s.id, &s.original);
    match s.state {
        State::Rejected => format!("rejected/{}/{name}", t.format("%Y-%m-%d")),
        _ => format!("archive/{}/{}/{name}", t.format("%Y/%m/%d"), s.channel),
    }
}

/// Moves a decided submission's file (and marker) out of `queue/`, writing its sidecar or reason
/// first. Safe to call again for the same submission.
pub fn file(spool: &Spool, s: &Submission) -> io::Result<()> {
    let Some(stored) = &s.stored else {
        return Ok(());
    };
    let dest = spool.root().join(stored);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (suffix, text) = match s.state {
        State::Rejected => (REASON, reason_text(s)),
        State::Claimed => return Ok(()),
        State::Archived | State::Duplicate => (SIDECAR, sidecar_json(s)),
    };
    write_replacing(&with_suffix(&dest, suffix), text.as_bytes())?;
    move_if_present(&spool.queued(&s.id), &dest)?;
    if let Some(marker) = &s.marker {
        let marker_dest = with_suffix(&dest, &marker_suffix(&s.original, marker));
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

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes a file through a temporary name and a rename (never half-written under its name).
pub fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The sidecar beside an archived file: everything needed to replay it.
pub fn sidecar_json(s: &Submission) -> String {
    let original_hex = std::str::from_utf8(&s.original)
        .is_err()
        .then(|| hex::encode(&s.original));
    let v = serde_json::json!({
        "id": s.id,
        "channel": s.channel,
        "original": String::from_utf8_lossy(&s.original),
        "original_hex": original_hex,
        "marker": s.marker.as_ref().map(|m| String::from_utf8_lossy(m).into_owned()),
        "state": s.state,
        "received_at": s.received_at,
        "size": s.size,
        "sha256": s.sha256,
        "format": s.format,
        "version": s.version,
        "checked": s.checked,
        "duplicate_of": s.duplicate_of,
    });
    let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
    text.push('\n');
    text
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
        assert!(stored_name("I", &[b'a'; 255]).len() <= NAME_BUDGET + 2);
    }

    #[test]
    fn a_marker_keeps_its_suffix() {
        assert_eq!(marker_suffix(b"d/a.xml", b"d/a.xml.ok"), ".ok");
        assert_eq!(marker_suffix(b"a.xml", b"a.xml.done"), ".done");
    }
}
