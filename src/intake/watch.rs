//! Watch: hints that something changed under the spool (notify), or nothing (poll mode).
//!
//! Events are hints, scans are truth: a hint only says where to look. When the kernel's queue
//! overflows, notify says "rescan" and the intake scans everything. Links are never followed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Config, Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// What the intake loop is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Something happened at this path: look at it.
    Path(PathBuf),
    /// Events were lost: scan everything.
    Rescan,
    /// Something changed under `rules/` or `schemas/`.
    Configuration,
    /// Stop the loop.
    Stop,
}

/// A running watcher; dropping it stops the events.
pub struct Watch {
    _watcher: RecommendedWatcher,
}

/// Watches `spool_dirs` (recursively) and `config_dirs`, sending hints on `tx`. When `tx` is full,
/// hints are not queued without bound: `overflowed` is raised instead, and the intake rescans.
pub fn watch(
    spool_dirs: &[PathBuf],
    config_dirs: &[PathBuf],
    tx: SyncSender<Hint>,
    overflowed: Arc<AtomicBool>,
) -> notify::Result<Watch> {
    let config: Vec<PathBuf> = config_dirs
        .iter()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone()))
        .collect();
    let in_config = {
        let config = config.clone();
        move |p: &Path| config.iter().any(|c| p.starts_with(c))
    };
    let handler = move |res: notify::Result<Event>| {
        let hints: Vec<Hint> = match res {
            Ok(event) if event.need_rescan() => vec![Hint::Rescan],
            // Reads (our own included: loading the rules opens them) say nothing new.
            // Reads (our own included: loading the rules opens them) say nothing new, and neither
            // does a file going away from the spool (our own claims, mostly).
            Ok(event)
                if matches!(
                    event.kind,
                    EventKind::Access(AccessKind::Open(_) | AccessKind::Read)
                        | EventKind::Access(AccessKind::Close(AccessMode::Read))
                ) || (matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
                ) && !event.paths.iter().any(|p| in_config(p))) =>
            {
                return;
            }
            Ok(event) => event
                .paths
                .into_iter()
                .map(|p| {
                    if config.iter().any(|c| p.starts_with(c)) {
                        Hint::Configuration
                    } else {
                        Hint::Path(p)
                    }
                })
                .collect(),
            Err(_) => vec![Hint::Rescan],
        };
        for hint in hints {
            if hint == Hint::Rescan {
                overflowed.store(true, Ordering::Relaxed);
            }
            match tx.try_send(hint) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => overflowed.store(true, Ordering::Relaxed),
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    };
    let mut watcher =
        RecommendedWatcher::new(handler, Config::default().with_follow_symlinks(false))?;
    for d in spool_dirs {
        watcher.watch(d, RecursiveMode::Recursive)?;
    }
    for d in config_dirs {
        if Path::new(d).exists() {
            watcher.watch(d, RecursiveMode::Recursive)?;
        }
    }
    Ok(Watch { _watcher: watcher })
}
