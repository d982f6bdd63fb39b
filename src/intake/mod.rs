//! Intake: from hints and scans to claimed files, on one thread.
//!
//! In: hints from [`crate::intake::watch`] (or none, in poll mode) and the channels of the rule set. Out:
//! complete files claimed into `queue/` (ledger first, then the rename) and handed to the workers
//! over a bounded channel, which is the back-pressure: while the workers are busy, files wait in
//! `incoming/`. A full scan runs at start, after every lost event, on every new folder, and
//! periodically; it is what makes pickup complete, the events only make it fast.

pub mod settle;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use crate::board::Board;
use crate::config::rules::{Channel, Completion, RuleSet};
use crate::config::{Shared, current};
use crate::fs::rename_noreplace;
use crate::id::IdGenerator;
use crate::ledger::{LedgerError, NewClaim, Writer};
use crate::spool::Spool;
use settle::{Decision, Kind, Look, Stat};
use watch::Hint;

/// A claimed file for the workers (it is `queue/<id>`).
pub type Work = NewClaim;

/// Claims per ledger transaction.
const CLAIM_BATCH: usize = 512;
/// Ready files held before claiming: a scan of a huge backlog claims as it goes, so memory does
/// not grow with the backlog.
const READY_MAX: usize = 4 * CLAIM_BATCH;
/// Quiet time after the last change under `rules/` or `schemas/` before they are reloaded: an
/// editor's save (truncate, then write) is never read half-done.
const RELOAD_AFTER: Duration = Duration::from_millis(300);
/// When a new folder is scanned again: files written into it before the watcher had added it
/// give no event (measured with notify 8.2 after `mkdir -p`), and a scan made at once can be too
/// early for the last of them.
const NEW_FOLDER_RESCANS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(3)];
/// Deepest folder nesting walked under a channel.
const MAX_WALK_DEPTH: usize = 32;

struct Ready {
    channel: String,
    path: PathBuf,
    rel: Vec<u8>,
    marker: Option<(PathBuf, Vec<u8>)>,
}

/// The intake loop's state.
pub struct Intake {
    spool: Spool,
    rules: Shared<RuleSet>,
    board: Arc<Board>,
    held_back: BTreeMap<String, HashSet<PathBuf>>,
    counted_at: Option<Instant>,
    writer: Writer,
    work: SyncSender<Work>,
    ids: Arc<IdGenerator>,
    pending: HashMap<PathBuf, Look>,
    deadlines: BTreeMap<Instant, Vec<PathBuf>>,
    ready: Vec<Ready>,
    ready_set: HashSet<PathBuf>,
    scan_every: Duration,
    overflowed: Arc<AtomicBool>,
    on_configuration: Box<dyn FnMut() -> bool + Send>,
    /// Where "now" comes from: claims are stamped with it.
    clock: crate::clock::Clock,
    failed: Option<LedgerError>,
    reload_at: Option<Instant>,
    folder_rescans: BTreeMap<Instant, Vec<PathBuf>>,
}

impl Intake {
    /// A new intake loop.
    #[allow(
        clippy::too_many_arguments,
        reason = "the intake is built from each channel and shared handle it works with"
    )]
    pub fn new(
        spool: Spool,
        rules: Shared<RuleSet>,
        board: Arc<Board>,
        writer: Writer,
        work: SyncSender<Work>,
        ids: Arc<IdGenerator>,
        scan_every: Duration,
        overflowed: Arc<AtomicBool>,
        on_configuration: Box<dyn FnMut() -> bool + Send>,
        clock: crate::clock::Clock,
    ) -> Self {
        Intake {
            spool,
            rules,
            board,
            held_back: BTreeMap::new(),
            counted_at: None,
            writer,
            work,
            ids,
            pending: HashMap::new(),
            deadlines: BTreeMap::new(),
            ready: Vec::new(),
            ready_set: HashSet::new(),
            scan_every,
            overflowed,
            on_configuration,
            clock,
            failed: None,
            reload_at: None,
            folder_rescans: BTreeMap::new(),
        }
    }

    /// Runs until a [`Hint::Stop`] or until the hint sender is dropped.
    pub fn run(mut self, hints: Receiver<Hint>) -> Result<(), LedgerError> {
        let mut next_scan = Instant::now();
        loop {
            self.board.health().beat("intake");
            let now = Instant::now();
            let mut wake = next_scan.min(now + Duration::from_secs(1));
            if let Some((&d, _)) = self.deadlines.first_key_value() {
                wake = wake.min(d);
            }
            if let Some(r) = self.reload_at {
                wake = wake.min(r);
            }
            if let Some((&d, _)) = self.folder_rescans.first_key_value() {
                wake = wake.min(d);
            }
            let mut rescan = false;
            let mut stop = false;
            let first = match hints.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(h) => Some(h),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Hint::Stop),
            };
            let mut batch: Vec<Hint> = first.into_iter().collect();
            while batch.len() < 20_000 {
                match hints.try_recv() {
                    Ok(h) => batch.push(h),
                    Err(_) => break,
                }
            }
            // Hinted paths in arrival order (files are claimed first come, first served), each
            // once.
            let mut seen = HashSet::new();
            let mut paths = Vec::new();
            for h in batch {
                match h {
                    Hint::Path(p) => {
                        if seen.insert(p.clone()) {
                            paths.push(p);
                        }
                    }
                    Hint::Rescan => rescan = true,
                    Hint::Configuration => {
                        self.reload_at = Some(Instant::now() + RELOAD_AFTER);
                    }
                    Hint::Stop => stop = true,
                }
            }
            if self.reload_at.is_some_and(|r| Instant::now() >= r) {
                self.reload_at = None;
                if (self.on_configuration)() {
                    // New or changed channels: look at their folders now.
                    rescan = true;
                }
            }
            if self.overflowed.swap(false, Ordering::Relaxed) {
                tracing::info!("events were lost: rescanning the spool");
                rescan = true;
            }
            let now = Instant::now();
            if rescan || now >= next_scan {
                self.scan_all(now);
                next_scan = now + self.scan_every;
            } else {
                for p in paths {
                    self.look_at(&p, now);
                }
            }
            self.recheck_due(now);
            self.rescan_new_folders(now);
            self.claim_ready()?;
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            if stop {
                return Ok(());
            }
        }
    }

    fn scan_all(&mut self, now: Instant) {
        // A scan finds every file a pause holds back: they are counted afresh.
        self.held_back.clear();
        let rules = current(&self.rules);
        for channel in rules.channels.values() {
            let dir = self.spool.channel(&channel.name);
            self.scan_dir(channel, &dir, now, 0);
        }
    }

    fn scan_dir(&mut self, channel: &Channel, dir: &Path, now: Instant, depth: usize) {
        if depth > MAX_WALK_DEPTH {
            tracing::warn!(dir = %dir.display(), "folders nested too deep: not walked further");
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let path = entry.path();
            if ft.is_dir() {
                self.scan_dir(channel, &path, now, depth + 1);
                continue;
            }
            let needs_stat = matches!(channel.completion, Completion::Quiet(_));
            let meta = if needs_stat {
                entry.metadata().ok()
            } else {
                None
            };
            let kind = kind_of(&ft);
            self.consider(channel, &path, kind, meta.as_ref(), now);
        }
    }

    /// Looks at one path a hint named.
    fn look_at(&mut self, path: &Path, now: Instant) {
        let incoming = self.spool.incoming();
        let Ok(rel) = path.strip_prefix(&incoming) else {
            return;
        };
        let mut parts = rel.components();
        let Some(first) = parts.next() else { return };
        let rules = current(&self.rules);
        let Some(channel) = rules.channels.get(&*first.as_os_str().to_string_lossy()) else {
            return;
        };
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => {
                self.pending.remove(path);
                return;
            }
        };
        if meta.is_dir() {
            // A new folder: files written into it right away may never be reported.
            self.scan_dir(channel, path, now, 0);
            for after in NEW_FOLDER_RESCANS {
                self.folder_rescans
                    .entry(now + after)
                    .or_default()
                    .push(path.to_path_buf());
            }
            return;
        }
        self.consider(channel, path, kind_of(&meta.file_type()), Some(&meta), now);
    }

    fn consider(
        &mut self,
        channel: &Channel,
        path: &Path,
        kind: Kind,
        meta: Option<&Metadata>,
        now: Instant,
    ) {
        let Some(name) = path.file_name().map(|n| n.as_bytes().to_vec()) else {
            return;
        };
        if let Some(data) = channel.marked_by(&name) {
            // A marker arrived: look at the file it releases.
            let data_path = path.with_file_name(std::ffi::OsStr::from_bytes(data));
            if let Ok(m) = std::fs::symlink_metadata(&data_path) {
                let kind = kind_of(&m.file_type());
                self.decide(channel, &data_path, kind, Some(&m), now);
            }
            return;
        }
        self.decide(channel, path, kind, meta, now);
    }

    fn decide(
        &mut self,
        channel: &Channel,
        path: &Path,
        kind: Kind,
        meta: Option<&Metadata>,
        now: Instant,
    ) {
        if self.ready_set.contains(path) {
            return;
        }
        let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        let look = match (&channel.completion, meta) {
            (Completion::Quiet(_), Some(m)) => Some(Look {
                stat: Stat {
                    size: m.size(),
                    mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                    ino: m.ino(),
                },
                at: now,
            }),
            _ => None,
        };
        let previous = self.pending.get(path).copied();
        let decision = settle::decide(channel, name, kind, look, previous, |n| {
            std::fs::symlink_metadata(path.with_file_name(std::ffi::OsStr::from_bytes(n)))
                .map(|m| m.is_file())
                .unwrap_or(false)
        });
        match decision {
            Decision::Ignore => {}
            Decision::NotYet {
                look_again,
                remember,
            } => {
                if let Some(r) = remember {
                    self.pending.insert(path.to_path_buf(), r);
                }
                if let Some(at) = look_again {
                    self.deadlines
                        .entry(at)
                        .or_default()
                        .push(path.to_path_buf());
                }
            }
            Decision::Ready { marker } => {
                self.pending.remove(path);
                let marker = marker.map(|m| {
                    let p = path.with_file_name(std::ffi::OsStr::from_bytes(&m));
                    let rel = self.rel(channel, &p);
                    (p, rel)
                });
                self.push_ready(channel, path, marker);
            }
            Decision::SetAside(reason) => {
                tracing::info!(path = %path.display(), %reason, "setting aside");
                self.pending.remove(path);
                self.push_ready(channel, path, None);
            }
        }
    }

    fn rel(&self, channel: &Channel, path: &Path) -> Vec<u8> {
        path.strip_prefix(self.spool.channel(&channel.name))
            .map(|r| r.as_os_str().as_bytes().to_vec())
            .unwrap_or_default()
    }

    fn push_ready(&mut self, channel: &Channel, path: &Path, marker: Option<(PathBuf, Vec<u8>)>) {
        self.ready_set.insert(path.to_path_buf());
        self.ready.push(Ready {
            channel: channel.name.clone(),
            path: path.to_path_buf(),
            rel: self.rel(channel, path),
            marker,
        });
        if self.ready.len() >= READY_MAX
            && self.failed.is_none()
            && let Err(e) = self.claim_ready()
        {
            self.failed = Some(e);
        }
    }

    fn rescan_new_folders(&mut self, now: Instant) {
        let later = self
            .folder_rescans
            .split_off(&(now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut self.folder_rescans, later);
        let rules = current(&self.rules);
        let incoming = self.spool.incoming();
        for dir in due.into_values().flatten() {
            let channel = dir
                .strip_prefix(&incoming)
                .ok()
                .and_then(|rel| rel.components().next())
                .and_then(|c| rules.channels.get(&*c.as_os_str().to_string_lossy()));
            if let Some(channel) = channel {
                self.scan_dir(channel, &dir, now, 0);
            }
        }
    }

    fn recheck_due(&mut self, now: Instant) {
        let later = self.deadlines.split_off(&(now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut self.deadlines, later);
        for path in due.into_values().flatten() {
            if self.pending.contains_key(&path) {
                self.look_at(&path, now);
            }
        }
    }

    fn claim_ready(&mut self) -> Result<(), LedgerError> {
        let mut ready = std::mem::take(&mut self.ready);
        self.ready_set.clear();
        // A paused channel's files stay where they are; its resume asks for a rescan.
        let held_back = &mut self.held_back;
        let board = &self.board;
        ready.retain(|r| {
            let paused = board.channel_paused(&r.channel);
            if paused {
                held_back
                    .entry(r.channel.clone())
                    .or_default()
                    .insert(r.path.clone());
            }
            !paused
        });
        self.count_waiting();
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let chunk: Vec<Ready> = ready.by_ref().take(CLAIM_BATCH).collect();
            let now = self.clock.now();
            let claims: Vec<NewClaim> = chunk
                .iter()
                .map(|r| NewClaim {
                    id: self.ids.next(now),
                    channel: r.channel.clone(),
                    original: r.rel.clone(),
                    marker: r.marker.as_ref().map(|(_, rel)| rel.clone()),
                    replay: None,
                })
                .collect();
            self.writer.claims(claims.clone())?;
            self.board.operational_claimed();
            let mut forget = Vec::new();
            for (claim, r) in claims.into_iter().zip(chunk) {
                let id = claim.id.text();
                match rename_noreplace(&r.path, &self.spool.queued(&id)) {
                    Ok(()) => {}
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(path = %r.path.display(), error = %e, "cannot claim");
                        }
                        forget.push(id);
                        continue;
                    }
                }
                if let Some((marker, _)) = &r.marker
                    && let Err(e) = rename_noreplace(marker, &self.spool.queued_marker(&id))
                {
                    tracing::warn!(path = %marker.display(), error = %e, "cannot claim marker");
                }
                tracing::debug!(file.id = %id, channel = %r.channel, "claimed");
                if self.work.send(claim).is_err() {
                    return Err(LedgerError::WriterGone);
                }
            }
            if !forget.is_empty() {
                self.writer.forget(forget)?;
            }
        }
        Ok(())
    }
}

impl Intake {
    /// Publishes, at most twice a second, the files waiting per channel: complete files a pause
    /// holds back, and files not yet complete (a quiet period running).
    fn count_waiting(&mut self) {
        let now = Instant::now();
        if self
            .counted_at
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(500))
        {
            return;
        }
        self.counted_at = Some(now);
        let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
        let incoming = self.spool.incoming();
        for p in self.pending.keys() {
            if let Ok(rel) = p.strip_prefix(&incoming)
                && let Some(c) = rel.components().next()
            {
                *waiting
                    .entry(c.as_os_str().to_string_lossy().into_owned())
                    .or_default() += 1;
            }
        }
        let paused = self.board.paused_channels();
        self.held_back.retain(|c, _| paused.contains_key(c));
        for (c, files) in &self.held_back {
            *waiting.entry(c.clone()).or_default() += files.len();
        }
        self.board.set_waiting(waiting);
    }
}

fn kind_of(ft: &std::fs::FileType) -> Kind {
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_fifo() {
        Kind::Special("named pipe (FIFO)")
    } else if ft.is_socket() {
        Kind::Special("socket")
    } else {
        Kind::Special("device node")
    }
}
