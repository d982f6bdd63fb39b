//! The spool's folder contract: where each kind of file lives.
//!
//! ```text
//! spool/incoming/<channel>/   producers drop files here; nothing else writes here
//! spool/queue/                owned by POM: claimed files in flight, named by claim id
//! spool/rejected/<yyyy-mm-dd>/   refused files, each beside a <name>.reason
//! spool/archive/<yyyy>/<mm>/<dd>/<channel>/   accepted files, described by manifest.pom.jsonl
//! spool/state/pom.sqlite      the ledger (default place)
//! ```

use std::io;
use std::path::{Path, PathBuf};

/// Longest safe-name part of a stored file name, in bytes (leaves room for the id and suffixes).
pub const NAME_BUDGET: usize = 180;

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
        safe.push(
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            },
        );
    }
    format!("{id}_{safe}")
}

/// What decides where a decided file is stored.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// Its claim id, as text.
    pub id: &'a str,
    /// The name it was dropped under.
    pub original: &'a [u8],
    /// Its channel.
    pub channel: &'a str,
    /// Its replay session, if any.
    pub session: Option<&'a str>,
    /// Rejected (otherwise accepted: archived).
    pub rejected: bool,
}

/// Where a decided file is stored, relative to the spool.
pub fn destination(s: &Stored<'_>) -> String {
    let t = crate::id::ClaimId::parse(s.id)
        .map(|c| c.time())
        .unwrap_or_default();
    let name = stored_name(s.id, s.original);
    // Channel and session become folder names: one safe component each, whatever the ledger
    // (or a manifest before it) says.
    let channel = component(s.channel);
    let session = s.session.map(component);
    match (&session, s.rejected) {
        (None, true) => format!("rejected/{}/{name}", t.format("%Y-%m-%d")),
        (None, false) => format!("archive/{}/{}/{name}", t.format("%Y/%m/%d"), channel),
        // A replay's files stay apart from the operational history.
        (Some(session), true) => format!("rejected/replay/{session}/{name}"),
        (Some(session), false) => format!("archive/replay/{session}/{channel}/{name}"),
    }
}

/// `name` if it is one safe path component, otherwise a made-safe stand-in.
fn component(name: &str) -> String {
    if crate::fs::safe_component(name) {
        name.to_string()
    } else {
        stored_name("unsafe", name.as_bytes())
    }
}

/// The spool root and its parts.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// A spool rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Spool { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `incoming/`.
    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }

    /// `incoming/<channel>/`.
    pub fn channel(&self, name: &str) -> PathBuf {
        self.incoming().join(name)
    }

    /// `queue/`.
    pub fn queue(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// `queue/<id>`.
    pub fn queued(&self, id: &str) -> PathBuf {
        self.queue().join(id)
    }

    /// `queue/<id>.marker`.
    pub fn queued_marker(&self, id: &str) -> PathBuf {
        self.queue().join(format!("{id}.marker"))
    }

    /// `replay/`.
    pub fn replay(&self) -> PathBuf {
        self.root.join("replay")
    }

    /// The default ledger path, `state/pom.sqlite`.
    pub fn default_db(&self) -> PathBuf {
        self.root.join("state").join("pom.sqlite")
    }

    /// Creates the fixed folders and one folder per channel.
    pub fn create<'a>(&self, channels: impl IntoIterator<Item = &'a str>) -> io::Result<()> {
        for d in [
            "incoming", "queue", "archive", "rejected", "replay", "state", "outgoing",
        ] {
            std::fs::create_dir_all(self.root.join(d))?;
        }
        for c in channels {
            std::fs::create_dir_all(self.channel(c))?;
        }
        Ok(())
    }
}
