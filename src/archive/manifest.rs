//! The manifest line: what describes one file of a folder (`manifest.pom.jsonl`, one JSON object
//! per line), so that a folder copied whole can be replayed as is.
//!
//! One type for every writer (the filer for archived files, the dispatcher for the outputs of a
//! replay run, control for a file re-injected into a replay) and for the reader (the replay).
//! Fields are written in name order, absent values as `null`; a reader takes what it knows and
//! skips a line it cannot read (cut by a crash: the file's line is written again when it is
//! filed).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use crate::ledger::Submission;

/// The metadata file of a folder: one JSON object per line, one line per file.
pub const MANIFEST: &str = "manifest.pom.jsonl";

/// One file, as its folder's manifest describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ManifestLine {
    /// The channel it arrived on.
    pub channel: String,
    /// How it was checked (the XSD, or well-formedness only).
    pub checked: Option<String>,
    /// The archived file whose content it repeats.
    pub duplicate_of: Option<String>,
    /// Its name in the folder.
    pub file: String,
    /// Its format.
    pub format: Option<String>,
    /// Its claim id (for a replay output: the original output it makes again).
    pub id: Option<String>,
    /// The marker file that released it.
    pub marker: Option<String>,
    /// The name it was dropped under (lossy if not UTF-8: see `original_hex`).
    pub original: String,
    /// The name it was dropped under, in hex, when it is not UTF-8.
    pub original_hex: Option<String>,
    /// The run that produced it.
    pub produced_by: Option<String>,
    /// When it arrived.
    pub received_at: String,
    /// Its SHA-256.
    pub sha256: Option<String>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// archived, duplicate (absent: archived).
    pub state: Option<String>,
    /// Its version.
    pub version: Option<String>,
}

impl ManifestLine {
    /// The line of a decided submission.
    pub fn of(s: &Submission) -> ManifestLine {
        ManifestLine {
            channel: s.channel.clone(),
            checked: s.checked.clone(),
            duplicate_of: s.duplicate_of.clone(),
            file: s
                .stored
                .as_deref()
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or_default()
                .to_string(),
            format: s.format.clone(),
            id: Some(s.id.clone()),
            marker: s
                .marker
                .as_ref()
                .map(|m| String::from_utf8_lossy(m).into_owned()),
            original: String::from_utf8_lossy(&s.original).into_owned(),
            original_hex: std::str::from_utf8(&s.original)
                .is_err()
                .then(|| hex::encode(&s.original)),
            produced_by: s.produced_by.clone(),
            received_at: s.received_at.clone(),
            sha256: s.sha256.clone(),
            size: s.size.and_then(|n| u64::try_from(n).ok()),
            state: Some(s.state.name().to_string()),
            version: s.version.clone(),
        }
    }

    /// The original name, byte for byte.
    pub fn original_bytes(&self) -> Option<Vec<u8>> {
        match &self.original_hex {
            Some(h) => hex::decode(h).ok(),
            None => Some(self.original.as_bytes().to_vec()),
        }
    }

    /// The line as written, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Reads a folder's manifest: the last line per file name.
pub fn read(folder: &Path) -> io::Result<HashMap<String, ManifestLine>> {
    let text = std::fs::read_to_string(folder.join(MANIFEST))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        // A line cut by a crash is skipped; the file's line is written again when it is filed.
        if let Ok(m) = serde_json::from_str::<ManifestLine>(line)
            && !m.file.is_empty()
        {
            out.insert(m.file.clone(), m);
        }
    }
    Ok(out)
}

/// Appends lines to a folder's manifest, in one write.
pub fn append(folder: &Path, lines: &str) -> io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(folder.join(MANIFEST))?
        .write_all(lines.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written_and_a_cut_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let line = ManifestLine {
            channel: "obs".into(),
            file: "20260101T000000000000Z_a.xml".into(),
            id: Some("20260101T000000000000Z".into()),
            original: "a.xml".into(),
            received_at: "2026-01-01T00:00:00Z".into(),
            size: Some(12),
            state: Some("archived".into()),
            ..Default::default()
        };
        let text = line.to_line();
        // Name order, nulls written: the same bytes as every earlier version wrote.
        assert!(
            text.starts_with("{\"channel\":\"obs\",\"checked\":null,"),
            "{text}"
        );
        append(dir.path(), &text).unwrap();
        append(dir.path(), &text[..text.len() / 2]).unwrap();
        let read = read(dir.path()).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[&line.file], line);
    }
}
