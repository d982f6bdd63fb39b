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
