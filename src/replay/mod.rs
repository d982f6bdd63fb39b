//! Replay: the past re-injected. Archived folders copied into `spool/replay/` (any depth: a day,
//! a month), or written there by `pom replay`, become a replay session: their files are claimed
//! as new submissions in replay mode, linked to their originals, in the order they first arrived
//! (spaced as they were, divided by the session's speed, or as fast as possible), and never
//! counted as duplicates of the operational history.
//!
//! ```text
//! spool/replay/<folder>/…/manifest.pom.jsonl   an archived folder, copied back (a session)
//! spool/replay/<folder>/session.pom.toml       optional: name, speed, models, rules
//! spool/replay/<folder>/.rules/                optional: an edited rule set the session routes by
//! spool/replay/.outputs/<session>/<channel>/   outputs of the session's runs, coming back
//! spool/replay/.rules/<session>/               the edited rule set a session was routed by
//! ```
//!
//! A session whose file says `rules = true` routes its files (and its runs' outputs) by the rule
//! set in the folder's `.rules/`, not by the rules in force: a rule edit tried on the past
//! (`pom impact --replay`). The set is copied out of the folder when the session begins (read
//! without following links, compiled whole or the session refused; a passing fault such as a full
//! disk delays the session, shown on the `replay` stage, and never refuses it) and kept under
//! `replay/.rules/<session>/`, from where a restarted daemon takes it up again while the session
//! is at work, and which stays afterwards as the record of what the session was routed by. Its routes and
//! its slots decide which model inputs the files become; the models run as the rules in force
//! declare them.
//!
//! A copied folder becomes a session once it has been quiet for a moment (the copy is over), so
//! that the order of arrivals is known whole before the first file is released. A file is
//! released only once its folder's manifest describes it and its size is the size recorded
//! there. Folders consumed whole are removed; the session is done when every file is decided and
//! no run of it is in progress.

pub mod compare;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::archive::MANIFEST;
use crate::board::Board;
use crate::config::rules::RuleSet;
use crate::fs::rename_noreplace;
use crate::id::IdGenerator;
use crate::intake::Work;
use crate::ledger::sessions::NewSession;
pub use crate::ledger::sessions::{Cancelled, OpenSession, Session, Span};
use crate::ledger::{Ledger, LedgerError, NewClaim, ReplayOf, Writer};
use crate::spool::Spool;

/// The optional description of a session, beside the files.
pub const SESSION_FILE: &str = "session.pom.toml";
/// Where replay runs put their outputs back, under `spool/replay/`.
pub const OUTPUTS: &str = ".outputs";
/// How long a copied folder must stay unchanged (no file added, grown or touched anywhere below
/// it) before its session starts, unless it holds [`READY`]: the default of `--replay-quiet`.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(10);
/// A file an operator creates at the top of a copied folder once the copy is over: the session
/// starts at once.
pub const READY: &str = "READY";
/// Written into the folder of a cancelled session: the folder keeps the files not released, and
/// is not taken again while this file is there.
pub const CANCELLED: &str = "CANCELLED";
/// How often the replay folder is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// Claims per ledger transaction.
const BATCH: usize = 512;
/// Claims per look while operational files are being claimed.
const GIVE_WAY_BATCH: usize = 16;
/// How long a session stays unchanged, all decided, before it is done.
const SETTLED: Duration = Duration::from_secs(2);

/// The session file.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// A name for people [default: the folder's].
    #[serde(default)]
    pub name: Option<String>,
    /// Arrivals' spacing divided by this; absent: as fast as possible, in order.
    #[serde(default)]
    pub speed: Option<f64>,
    /// Only these models run [default: all].
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// The period replayed (original arrival times), for the report.
    #[serde(default)]
    pub from: Option<String>,
    /// End of the period.
    #[serde(default)]
    pub to: Option<String>,
    /// The folder was put in place whole (`pom replay` renames it in): no need to wait for a
    /// copy to end.
    #[serde(default)]
    pub whole: bool,
    /// The session routes by the rule set in the folder's [`RULES`] folder, not by the rules in
    /// force.
    #[serde(default)]
    pub rules: bool,
}

/// The folder of an edited rule set: in a session's folder, as it is staged; under
/// `spool/replay/`, one per session routed by its own rules.
pub const RULES: &str = ".rules";

/// The rule sets of the sessions that route by their own (an edit tried on the past), by session
/// id: the replay loop sets them, the examining threads read them.
#[derive(Debug, Clone, Default)]
pub struct SessionRules(Arc<std::sync::RwLock<HashMap<String, Arc<RuleSet>>>>);

impl SessionRules {
    /// The rule set a session routes by, if it has its own.
    pub fn get(&self, session: &str) -> Option<Arc<RuleSet>> {
        self.0.read().ok()?.get(session).cloned()
    }

    /// Sets (`Some`) or forgets (`None`) a session's own rules.
    pub fn set(&self, session: &str, rules: Option<RuleSet>) {
        if let Ok(mut map) = self.0.write() {
            match rules {
                Some(r) => {
                    map.insert(session.to_string(), Arc::new(r));
                }
                None => {
                    map.remove(session);
                }
            }
        }
    }
}

/// A file waiting to be released.
#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    channel: String,
    original: Vec<u8>,
    origin: Option<String>,
    at: String,
    at_time: DateTime<Utc>,
    produced_by: Option<String>,
}

/// A session being released.
struct Active {
    id: String,
    folder: Option<PathBuf>,
    speed: Option<f64>,
    items: std::collections::VecDeque<Item>,
    /// Files of the folder left out because the replay makes them again: removed with the
    /// folder once the session has released everything.
    remade: Vec<PathBuf>,
    released: usize,
    started: Instant,
    first_at: Option<DateTime<Utc>>,
}

impl Active {
    fn new(id: String, folder: PathBuf, speed: Option<f64>, found: Found) -> Active {
        let Found { items, remade, .. } = found;
        Active {
            id,
            folder: Some(folder),
            speed,
            first_at: items.first().map(|i| i.at_time),
            items: items.into(),
            remade,
            released: 0,
            started: Instant::now(),
        }
    }
}

/// Every file a folder's manifests describe as archived, in the order they first arrived, and
/// how many files no manifest describes. Outputs of a model that runs in the replay are left
/// out: the replay makes them again (`models`: the models that run; none: all).
fn folder_items(dir: &Path, models: Option<&[String]>, channels: &dyn Fn(&str) -> bool) -> Found {
    let mut items = Vec::new();
    let mut ignored = 0;
    manifest_items(dir, channels, &mut items, &mut ignored);
    let mut remade = Vec::new();
    items.retain(|i| {
        let again = i
            .produced_by
            .as_deref()
            .and_then(|run| run.rsplit_once('-'))
            .is_some_and(|(model, _)| models.is_none_or(|m| m.iter().any(|x| x == model)));
        if again {
            remade.push(i.path.clone());
        }
        !again
    });
    items.sort_by(|a, b| a.at.cmp(&b.at).then(a.origin.cmp(&b.origin)));
    Found {
        items,
        remade,
        ignored,
    }
}

/// What a folder holds for a session.
struct Found {
    /// Files to release, in the order they first arrived.
    items: Vec<Item>,
    /// Files the replay makes again instead.
    remade: Vec<PathBuf>,
    /// Files no manifest describes as archived (or naming an unknown channel).
    ignored: usize,
}

/// A folder seen, not yet quiet.
struct Seen {
    signature: (usize, u64, i128),
    since: Instant,
}

/// The replay loop.
pub struct Replay {
    spool: Spool,
    writer: Writer,
    work: SyncSender<Work>,
    ids: Arc<IdGenerator>,
    reader: Ledger,
    board: Arc<Board>,
    rules: crate::config::Shared<crate::config::rules::RuleSet>,
    sessions: SessionRules,
    quiet: Duration,
    seen: HashMap<PathBuf, Seen>,
    active: Vec<Active>,
    output_manifests: HashMap<PathBuf, u64>,
    settling: HashMap<String, (i64, Instant)>,
    /// A passing fault met during the last look (a session's rules that could not be copied).
    not_now: Option<String>,
}

/// Why a session's own rules were not taken.
enum Taken {
    /// For good: the session is refused with the reason.
    Refused(String),
    /// A passing fault (a full disk, no descriptors): tried again at the next look.
    NotNow(String),
}

/// The items of a folder's manifests, below it too. A manifest is someone else's file: a line
/// naming a channel that is not in the rules in force (`channels`) is reported and skipped, never
/// taken for a folder name.
fn manifest_items(
    dir: &Path,
    channels: &dyn Fn(&str) -> bool,
    out: &mut Vec<Item>,
    ignored: &mut usize,
) {
    let manifest = crate::archive::read_manifest(dir).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs = Vec::new();
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name();
        if ft.is_dir() {
            // A folder of the session's own (its edited rules) holds no replayed file.
            if !name.as_bytes().starts_with(b".") {
                subdirs.push(e.path());
            }
            continue;
        }
        let name = name.to_string_lossy().into_owned();
        if name == MANIFEST || name == SESSION_FILE || name.starts_with('.') {
            continue;
        }
        match manifest.get(&name).and_then(|v| item(&e.path(), v)) {
            Some(i) if channels(&i.channel) => out.push(i),
            Some(i) => {
                tracing::warn!(file = %e.path().display(), channel = ?i.channel,
                    "replay: the manifest names a channel that is not in the rules in force: skipped");
                *ignored += 1;
            }
            None => *ignored += 1,
        }
    }
    subdirs.sort();
    for d in subdirs {
        manifest_items(&d, channels, out, ignored);
    }
}

/// An item from a manifest line, if the line is for an archived file that is all there.
fn item(path: &Path, m: &crate::archive::ManifestLine) -> Option<Item> {
    if m.state.as_deref().is_some_and(|s| s != "archived") {
        return None;
    }
    if let Some(size) = m.size
        && std::fs::symlink_metadata(path).map(|m| m.len()).ok()? != size
    {
        return None;
    }
    let at_time = DateTime::parse_from_rfc3339(&m.received_at)
        .ok()?
        .with_timezone(&Utc);
    if m.channel.is_empty() {
        return None;
    }
    Some(Item {
        path: path.to_path_buf(),
        channel: m.channel.clone(),
        original: m.original_bytes()?,
        origin: m.id.clone(),
        at: m.received_at.clone(),
        at_time,
        produced_by: m.produced_by.clone(),
    })
}

/// Files, total size and newest change under a folder: unchanged across looks, the copy is over.
fn signature(dir: &Path) -> (usize, u64, i128) {
    use std::os::unix::fs::MetadataExt;
    let mut acc = (0, 0, 0);
    let entries = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .max_depth(33)
        .follow_links(false);
    for e in entries.into_iter().flatten() {
        let Ok(m) = e.metadata() else { continue };
        acc.2 = acc
            .2
            .max(i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()));
        if !m.is_dir() {
            acc.0 += 1;
            acc.1 += m.len();
        }
    }
    acc
}

/// Describes a file put into a replay session's own folder (`.outputs/<session>/<channel>/`):
/// its line is appended to the folder's manifest, where the replay loop takes it up. The one
/// writer of such lines (outputs of replay runs, files re-injected into a replay).
pub fn describe(dir: &Path, line: &crate::archive::ManifestLine) -> std::io::Result<()> {
    crate::archive::manifest::append(dir, &line.to_line())
}

/// Removes what a finished session took from its folder: its manifests, its session file and
/// marker, and the folders left empty. Anything else (a file no manifest described, one that
/// arrived after the session began) stays where it is. Returns how many files stay.
fn tidy(dir: &Path) -> usize {
    fn walk(dir: &Path, depth: usize) -> usize {
        if depth > 32 {
            return 0;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut left = 0;
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            if ft.is_dir() {
                left += walk(&e.path(), depth + 1);
                let _ = std::fs::remove_dir(e.path());
            } else if name == MANIFEST || name == SESSION_FILE || name == READY || name == CANCELLED
            {
                let _ = std::fs::remove_file(e.path());
            } else {
                left += 1;
            }
        }
        left
    }
    let left = walk(dir, 0);
    let _ = std::fs::remove_dir(dir);
    left
}

/// Whether a folder says it was put in place whole.
fn whole(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(SESSION_FILE))
        .ok()
        .and_then(|t| toml::from_str::<SessionFile>(&t).ok())
        .is_some_and(|s| s.whole)
}

impl Replay {
    /// A replay loop over `spool/replay/`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the replay loop is built from each channel and shared handle it works with"
    )]
    pub fn new(
        spool: Spool,
        writer: Writer,
        work: SyncSender<Work>,
        ids: Arc<IdGenerator>,
        db: &Path,
        board: Arc<Board>,
        rules: crate::config::Shared<crate::config::rules::RuleSet>,
        sessions: SessionRules,
        quiet: Duration,
    ) -> Result<Self, LedgerError> {
        Ok(Replay {
            reader: Ledger::open_readonly(db)?,
            rules,
            sessions,
            quiet,
            spool,
            writer,
            work,
            ids,
            board,
            seen: HashMap::new(),
            active: Vec::new(),
            output_manifests: HashMap::new(),
            settling: HashMap::new(),
            not_now: None,
        })
    }

    /// Runs until `stop` is raised.
    pub fn run(mut self, stop: &AtomicBool) {
        let _ = std::fs::create_dir_all(self.spool.replay().join(OUTPUTS));
        if let Err(e) = self.resume() {
            tracing::error!(error = %e, "replay: cannot resume the sessions in progress");
        }
        while !stop.load(Ordering::Relaxed) {
            self.board.health().beat("replay");
            let busy = match self.look() {
                Ok(b) => {
                    // A session that could not begin for a passing fault shows until it does.
                    self.board.health().fault("replay", self.not_now.take());
                    b
                }
                Err(e) => {
                    self.board.health().fault("replay", Some(e.to_string()));
                    false
                }
            };
            if !busy {
                std::thread::sleep(LOOK_EVERY);
            }
        }
    }

    /// Sessions left replaying by a stopped daemon: their folders are still there (files not
    /// yet released stay in them), and are taken up again.
    fn resume(&mut self) -> Result<(), LedgerError> {
        let open = self.reader.replaying_sessions()?;
        for (id, folder, speed) in open {
            let Some(dir) = crate::fs::confined(&self.spool.replay(), Path::new(&folder)) else {
                tracing::error!(session = %id, ?folder, "replay: the session's folder is not a plain name: not taken up");
                continue;
            };
            let models = self.reader.session_models(&id).ok().flatten();
            let rules = self.rules_of(&id);
            let found = folder_items(&dir, models.as_deref(), &|c| rules.channels.contains_key(c));
            tracing::info!(session = %id, files = found.items.len(), "replay taken up again");
            self.active.push(Active::new(id, dir, speed, found));
        }
        Ok(())
    }

    /// One look: new folders, outputs of replay runs, due files, finished sessions. True if
    /// files were released (look again at once).
    fn look(&mut self) -> Result<bool, LedgerError> {
        self.discover()?;
        self.outputs()?;
        // Sessions an operator cancelled: nothing more is released; their files stay.
        let reader = &self.reader;
        self.active.retain(|a| {
            let state = reader.session_state(&a.id).ok().flatten();
            if state.as_deref() == Some("cancelled") {
                tracing::info!(session = %a.id, left = a.items.len(),
                    "replay cancelled: the files not released stay in its folder");
                if let Some(dir) = &a.folder {
                    let _ = std::fs::write(
                        dir.join(CANCELLED),
                        format!(
                            "session {} was cancelled; remove this file to replay what is left\n",
                            a.id
                        ),
                    );
                }
                false
            } else {
                true
            }
        });
        let mut released = false;
        for i in 0..self.active.len() {
            released |= self.release(i)?;
        }
        // Sessions whose every file was released: their folder goes.
        let mut still = Vec::new();
        for a in std::mem::take(&mut self.active) {
            if a.items.is_empty() && a.folder.is_some() {
                if let Some(dir) = &a.folder {
                    for f in &a.remade {
                        let _ = std::fs::remove_file(f);
                    }
                    let left = tidy(dir);
                    if left > 0 {
                        tracing::warn!(session = %a.id, folder = %dir.display(), files = left,
                            "replay: files the session did not take are left in its folder");
                    }
                }
                let id = a.id.clone();
                self.writer
                    .with(move |l| l.set_session_state(&id, "finishing", None))?;
                self.board.publish("replay", &a.id);
            } else if !a.items.is_empty() {
                still.push(a);
            }
        }
        self.active = still;
        self.finish()?;
        Ok(released)
    }

    fn discover(&mut self) -> Result<(), LedgerError> {
        let root = self.spool.replay();
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut present = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            if name.as_bytes().starts_with(b".") || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = e.path();
            present.push(dir.clone());
            if self.active.iter().any(|a| a.folder.as_ref() == Some(&dir))
                || dir.join(CANCELLED).exists()
            {
                continue;
            }
            if whole(&dir) || dir.join(READY).is_file() {
                self.seen.remove(&dir);
                self.begin(&dir)?;
                continue;
            }
            let sig = signature(&dir);
            let seen = self.seen.entry(dir.clone()).or_insert(Seen {
                signature: sig,
                since: now,
            });
            if seen.signature != sig {
                *seen = Seen {
                    signature: sig,
                    since: now,
                };
                continue;
            }
            if now.duration_since(seen.since) >= self.quiet {
                self.seen.remove(&dir);
                self.begin(&dir)?;
            }
        }
        self.seen.retain(|d, _| present.contains(d));
        Ok(())
    }

    /// Starts a session from a quiet folder.
    fn begin(&mut self, dir: &Path) -> Result<(), LedgerError> {
        let folder = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file: SessionFile = match std::fs::read_to_string(dir.join(SESSION_FILE)) {
            Ok(t) => toml::from_str(&t).unwrap_or_else(|e| {
                tracing::warn!(%folder, error = %e, "replay: session file ignored");
                SessionFile::default()
            }),
            Err(_) => SessionFile::default(),
        };
        let id = format!("replay-{}", self.ids.next(Utc::now()).text());
        if file.rules
            && let Err(taken) = self.take_rules(dir, &id)
        {
            let why = match taken {
                Taken::NotNow(why) => {
                    tracing::warn!(%folder, %why, "replay: its rules cannot be taken yet, trying again");
                    self.not_now = Some(format!("session folder {folder}: {why}"));
                    return Ok(());
                }
                Taken::Refused(why) => why,
            };
            tracing::error!(%folder, %why, "replay refused: its rules");
            let _ = std::fs::write(
                dir.join(CANCELLED),
                format!(
                    "not replayed: {why}\nremove this file once the rules in {RULES}/ are mended\n"
                ),
            );
            return Ok(());
        }
        let rules = self.rules_of(&id);
        let found = folder_items(dir, file.models.as_deref(), &|c| {
            rules.channels.contains_key(c)
        });
        let (items, ignored) = (&found.items, found.ignored);
        if ignored > 0 {
            tracing::warn!(%folder, ignored, "replay: files no manifest describes as archived are left out");
        }
        let name = file.name.clone().unwrap_or_else(|| folder.clone());
        let speed = file.speed.filter(|s| *s > 0.0 && s.is_finite());
        let (from, to) = (
            file.from
                .clone()
                .or_else(|| items.first().map(|i| i.at.clone())),
            file.to
                .clone()
                .or_else(|| items.last().map(|i| i.at.clone())),
        );
        let models = file
            .models
            .as_ref()
            .map(|m| serde_json::to_string(m).unwrap_or_default());
        let total = items.len() as i64;
        let new = NewSession {
            id: id.clone(),
            name: name.clone(),
            folder: folder.clone(),
            speed,
            models,
            from,
            to,
            total,
        };
        let now = Utc::now();
        self.writer.with(move |l| l.create_session(&new, now))?;
        if file.rules {
            // Kept for the session (it begins once): what stays in the folder is what it replays.
            let _ = std::fs::remove_dir_all(dir.join(RULES));
        }
        tracing::info!(session = %id, %name, files = total, speed = ?speed, "replay session begins");
        self.board.publish("replay", &id);
        self.active
            .push(Active::new(id, dir.to_path_buf(), speed, found));
        Ok(())
    }

    /// The rules a session routes by: its own, or those in force.
    fn rules_of(&self, session: &str) -> Arc<RuleSet> {
        self.sessions
            .get(session)
            .unwrap_or_else(|| crate::config::current(&self.rules))
    }

    /// Takes a session's own rules out of its folder: copied (no link followed) under
    /// `replay/.rules/<session>/`, compiled whole, and set for the session. The reason, if not.
    fn take_rules(&self, dir: &Path, session: &str) -> Result<(), Taken> {
        let from = dir.join(RULES);
        if !std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir()) {
            return Err(Taken::Refused(format!(
                "the session file says `rules = true`, and {RULES}/ is not a folder"
            )));
        }
        let kept = self.spool.replay().join(RULES).join(session);
        let copied = RuleSet::copy_files(&from, &kept).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            let why = format!("its rules cannot be read: {e}");
            // A full disk or no descriptors passes: the session begins at a later look.
            if crate::examine::is_transient(&e) {
                Taken::NotNow(why)
            } else {
                Taken::Refused(why)
            }
        })?;
        let set = RuleSet::load(&kept).map_err(|p| {
            let _ = std::fs::remove_dir_all(&kept);
            Taken::Refused(format!("its rules do not compile:\n{p}"))
        })?;
        tracing::info!(session, files = copied, rules = %&set.version[..12],
            "replay routes by its own rules");
        self.sessions.set(session, Some(set));
        Ok(())
    }

    /// Outputs of replay runs: each `.outputs/<session>/<channel>/` folder's manifest grows a
    /// line per output once the file is in place; new lines are released at once.
    fn outputs(&mut self) -> Result<(), LedgerError> {
        let root = self.spool.replay().join(OUTPUTS);
        let Ok(sessions) = std::fs::read_dir(&root) else {
            return Ok(());
        };
        for s in sessions.flatten() {
            let session = s.file_name().to_string_lossy().into_owned();
            let Ok(channels) = std::fs::read_dir(s.path()) else {
                continue;
            };
            for c in channels.flatten() {
                let dir = c.path();
                let manifest = dir.join(MANIFEST);
                let len = std::fs::metadata(&manifest).map(|m| m.len()).unwrap_or(0);
                if self.output_manifests.get(&dir).copied().unwrap_or(0) == len {
                    continue;
                }
                let mut items = Vec::new();
                let mut ignored = 0;
                let rules = self.rules_of(&session);
                manifest_items(
                    &dir,
                    &|c| rules.channels.contains_key(c),
                    &mut items,
                    &mut ignored,
                );
                self.output_manifests.insert(dir.clone(), len);
                if items.is_empty() {
                    continue;
                }
                items.sort_by(|a, b| a.at.cmp(&b.at));
                // Each names the original output it makes again, if its run mirrors one.
                self.claim(&session, items)?;
            }
        }
        Ok(())
    }

    /// Releases the due files of an active session; true if it may go on at once.
    fn release(&mut self, i: usize) -> Result<bool, LedgerError> {
        // Operational traffic keeps priority: while it flows, the replay trickles.
        let batch = if self.board.operational_busy(250) {
            GIVE_WAY_BATCH
        } else {
            BATCH
        };
        let a = &mut self.active[i];
        let elapsed = a.started.elapsed();
        let mut due = Vec::new();
        while due.len() < batch
            && let Some(item) = a.items.front()
        {
            let ready = match (a.speed, a.first_at) {
                (Some(speed), Some(first)) => {
                    let spacing = (item.at_time - first).to_std().unwrap_or_default();
                    elapsed.as_secs_f64() * speed >= spacing.as_secs_f64()
                }
                _ => true,
            };
            if !ready {
                break;
            }
            due.push(a.items.pop_front().expect("looked at above"));
        }
        if due.is_empty() {
            return Ok(false);
        }
        a.released += due.len();
        let (id, released) = (a.id.clone(), a.released as i64);
        let released_to = due.last().map(|i| i.at.clone());
        self.claim(&id, due)?;
        self.writer
            .with(move |l| l.record_replay_progress(&id, released, released_to.as_deref()))?;
        // Giving way, the next look waits.
        Ok(batch == BATCH)
    }

    /// Claims files into `queue/` as submissions of a session (ledger first, then the rename),
    /// and hands them to the workers.
    fn claim(&mut self, session: &str, items: Vec<Item>) -> Result<(), LedgerError> {
        let now = Utc::now();
        let claims: Vec<NewClaim> = items
            .iter()
            .map(|i| NewClaim {
                id: self.ids.next(now),
                channel: i.channel.clone(),
                original: i.original.clone(),
                marker: None,
                replay: Some(ReplayOf {
                    session: session.to_string(),
                    origin: i.origin.clone(),
                    at: i.at.clone(),
                }),
            })
            .collect();
        self.writer.claims(claims.clone())?;
        let mut forget = Vec::new();
        for (claim, item) in claims.into_iter().zip(items) {
            let id = claim.id.text();
            if let Err(e) = rename_noreplace(&item.path, &self.spool.queued(&id)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %item.path.display(), error = %e, "replay: cannot claim");
                }
                forget.push(id);
                continue;
            }
            if self.work.send(claim).is_err() {
                return Err(LedgerError::WriterGone);
            }
        }
        if !forget.is_empty() {
            self.writer.forget(forget)?;
        }
        Ok(())
    }

    /// Sessions whose files are all released and decided, with no run in progress, for a
    /// moment: done.
    fn finish(&mut self) -> Result<(), LedgerError> {
        let finishing = self.reader.finishing_sessions()?;
        for id in finishing {
            let (open, changes) = self.reader.session_progress(&id)?;
            let outputs_waiting = self.outputs_waiting(&id);
            if open > 0 || outputs_waiting {
                self.settling.remove(&id);
                continue;
            }
            let entry = self
                .settling
                .entry(id.clone())
                .or_insert((changes, Instant::now()));
            if entry.0 != changes {
                *entry = (changes, Instant::now());
                continue;
            }
            if entry.1.elapsed() < SETTLED {
                continue;
            }
            self.settling.remove(&id);
            // The comparison with the original runs, then the session is done.
            let report = crate::replay::compare::compare(&self.reader, self.spool.root(), &id)
                .map_err(|e| e.to_string())
                .and_then(|rep| {
                    crate::replay::compare::write(self.spool.root(), &rep)
                        .map(|path| (path, rep))
                        .map_err(|e| e.to_string())
                });
            let path = match report {
                Ok((path, rep)) => {
                    tracing::info!(session = %id, matched = rep.matched, identical = rep.identical,
                        missing = rep.missing, extra = rep.extra, "replay compared with the original runs");
                    Some(path)
                }
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "replay: cannot compare");
                    None
                }
            };
            let id2 = id.clone();
            let now = Utc::now();
            self.writer
                .with(move |l| l.end_session(&id2, path.as_deref(), now))?;
            tracing::info!(session = %id, "replay session done");
            self.sessions.set(&id, None);
            self.board.publish("replay", &id);
        }
        Ok(())
    }

    /// Whether a session's outputs folder holds files not yet released.
    fn outputs_waiting(&self, session: &str) -> bool {
        let dir = self.spool.replay().join(OUTPUTS).join(session);
        let Ok(channels) = std::fs::read_dir(&dir) else {
            return false;
        };
        channels.flatten().any(|c| {
            std::fs::read_dir(c.path()).is_ok_and(|mut d| {
                d.any(|e| {
                    e.ok().is_some_and(|e| {
                        let n = e.file_name();
                        n.as_bytes() != MANIFEST.as_bytes()
                    })
                })
            })
        })
    }
}

/// Starts the replay loop; raise `stop` to end it.
pub fn spawn(replay: Replay, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    // A session's first look reads every manifest of its folder: it may take a while.
    replay
        .board
        .health()
        .expect("replay", Duration::from_secs(60));
    let health = Arc::clone(replay.board.health());
    crate::health::spawn("replay", health, move || replay.run(&stop))
}

/// The claim ids of files received in `[from, to)` (claim ids are arrival times).
fn claim_span(from: DateTime<Utc>, to: DateTime<Utc>) -> (String, String) {
    (
        crate::id::ClaimId(from.timestamp_micros()).text(),
        crate::id::ClaimId(to.timestamp_micros()).text(),
    )
}

/// The files of a period `pom replay` cannot re-inject: archived operational files received in
/// `[from, to)`, on a channel if given, whose stored copies retention removed.
pub fn pruned_between(
    reader: &Ledger,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    channel: Option<&str>,
) -> Result<Vec<crate::ledger::Submission>, LedgerError> {
    let (from, to) = claim_span(from, to);
    reader.pruned_between(&from, &to, channel)
}

/// The files `pom replay` re-injects: operational submissions archived, received in
/// `[from, to)`, on a channel if given, oldest first.
pub fn archived_between(
    reader: &Ledger,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    channel: Option<&str>,
) -> Result<Vec<crate::ledger::Submission>, LedgerError> {
    let (from, to) = claim_span(from, to);
    reader.archived_between(&from, &to, channel)
}
