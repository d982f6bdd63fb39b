//! The daemon: wires the stages together and reconciles the spool with the ledger at start.
//!
//! ```text
//! watch ─hints─▶ intake ─Work─▶ workers (examine) ─Decision─▶ ledger writer ─Submission─▶ filer
//!        bounded          bounded                   bounded                  bounded
//! ```
//!
//! At start, before anything new is claimed, whatever is in `queue/` is driven on from its
//! recorded state: a file whose verdict is committed is filed; a file only claimed is examined
//! again; a claim whose rename never happened is forgotten (the file is still in `incoming/`).
//! [`restore`] puts a ledger backup in place (the daemon stopped) and reconciles the spool with
//! it.

pub mod restore;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::board::{Board, Pause, Refused};
use crate::clock::Clock;
use crate::config::catalog::Catalog;
use crate::config::problems::Problems;
use crate::config::rules::RuleSet;
use crate::config::{Shared, current};
use crate::control::{Control, Wake};
use crate::examine::validate::{self, Validator};
use crate::examine::{Limits, Verdict, examine_dropped};
use crate::fs::sync_filesystem;
use crate::intake::watch::{self, Hint};
use crate::intake::{Intake, Work};
use crate::ledger::{Decision, Ledger, LedgerError, State, Submission, Traffic, Writer};
use crate::route::Facts;
use crate::spool::Spool;

/// Where and how much: everything that is not a rule.
#[derive(Debug, Clone)]
pub struct Config {
    /// Spool root.
    pub spool: PathBuf,
    /// Rules folder.
    pub rules: PathBuf,
    /// Schemas folder.
    pub schemas: PathBuf,
    /// Ledger file.
    pub db: PathBuf,
    /// Examining threads.
    pub workers: usize,
    /// Period of the reconcile scan.
    pub scan_every: Duration,
    /// Poll only (no events), scanning this often: for NFS and CIFS mounts.
    pub poll: Option<Duration>,
    /// Size and depth limits.
    pub limits: Limits,
    /// Sync the file system once per filed batch.
    pub sync: bool,
    /// Where the time of decisions comes from.
    pub clock: Clock,
    /// Alert thresholds and the operator's alert command.
    pub alerts: crate::supervise::alerts::Settings,
    /// How long a folder copied into `replay/` must stay unchanged before its session starts
    /// (unless it holds a `READY` file).
    pub replay_quiet: Duration,
}

/// Why the daemon cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The rules do not compile.
    #[error("rules: {0}")]
    Rules(Problems),
    /// The catalog does not compile.
    #[error("schemas: {0}")]
    Catalog(Problems),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A spool folder failed.
    #[error("spool {path}: {op}: {source}")]
    Spool {
        /// The path.
        path: PathBuf,
        /// What was done.
        op: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The watcher failed.
    #[error("watching the spool: {0}")]
    Watch(#[from] notify::Error),
    /// A thread panicked.
    #[error("thread {0} panicked")]
    Panicked(&'static str),
    /// Another daemon holds the spool.
    #[error("spool {path}: another pom serve holds it ({holder}); one daemon per spool")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
}

/// A running daemon.
pub struct Daemon {
    hints: SyncSender<Hint>,
    intake: JoinHandle<Result<(), LedgerError>>,
    workers: Vec<JoinHandle<Result<(), LedgerError>>>,
    dispatcher: JoinHandle<()>,
    stop_runs: Arc<AtomicBool>,
    writer: JoinHandle<Result<(), LedgerError>>,
    filer: JoinHandle<()>,
    _watch: Option<watch::Watch>,
    board: Arc<Board>,
    control: Control,
    rules: Shared<RuleSet>,
    spool: Spool,
    alerts: JoinHandle<()>,
    stop_alerts: Arc<AtomicBool>,
    stations: JoinHandle<Result<(), LedgerError>>,
    products: JoinHandle<()>,
    retention: JoinHandle<Result<(), LedgerError>>,
    replay: JoinHandle<()>,
    stop_replay: Arc<AtomicBool>,
    guard: JoinHandle<()>,
    stop_guard: Arc<AtomicBool>,
    _lock: std::fs::File,
}

/// Capacity of the hint channel; beyond it a rescan is asked for.
const HINTS: usize = 65_536;
/// Capacity of the work channel (claimed files not yet examined).
const WORK: usize = 1024;

impl Daemon {
    /// Loads rules and schemas, opens the ledger, reconciles, and starts every stage.
    pub fn start(config: Config) -> Result<Daemon, DaemonError> {
        validate::init();
        let rules = RuleSet::load(&config.rules).map_err(DaemonError::Rules)?;
        let catalog = Catalog::load(&config.schemas).map_err(DaemonError::Catalog)?;
        let spool = Spool::new(&config.spool);
        spool
            .create(rules.channels.keys().map(String::as_str))
            .map_err(|source| DaemonError::Spool {
                path: config.spool.clone(),
                op: "create folders",
                source,
            })?;
        let lock = lock_spool(&spool)?;
        tracing::info!(rules = %&rules.version[..12], channels = rules.channels.len(),
            formats = catalog.formats().len(), "rules and schemas loaded");
        let board = Arc::new(Board::default());
        board.set_rules_loaded(config.clock.now());
        crate::chain::executor::slurm::supervise(Arc::clone(board.health()));
        let rules: Shared<RuleSet> = Arc::new(RwLock::new(Arc::new(rules)));
        let catalog: Shared<Catalog> = Arc::new(RwLock::new(Arc::new(catalog)));

        let mut ledger = Ledger::open(&config.db)?;
        ledger.check_writable()?;
        let ledger_identity = identity(&config.db).map_err(|source| DaemonError::Spool {
            path: config.db.clone(),
            op: "look at the ledger file",
            source,
        })?;
        let ids = Arc::new(crate::id::IdGenerator::after(ledger.last_id()?));
        // Runs whose model had exited with success are finished by the dispatcher (their
        // outputs put back), never interrupted and run again.
        // A local model that exited while the last daemon was down, or before it recorded the
        // exit, left its status in its run folder: recorded now, so that its run is finished
        // rather than run again.
        for (id, _, job) in ledger.unfinished_runs()? {
            if job.is_none()
                && let Some(r) = ledger.run(&id)?
                && r.exit_code.is_none()
                && let Some(code) =
                    crate::chain::executor::local::exit_status(spool.root(), &r.run_dir)
            {
                ledger.run_exited(&id, code)?;
            }
        }
        let mut adopted = Vec::new();
        for (id, _) in ledger.exited_unfinished()? {
            if ledger
                .run(&id)?
                .is_some_and(|r| current(&rules).models.contains_key(&r.model))
            {
                adopted.push(id);
            }
        }
        // Jobs on the cluster run on without the daemon: each is re-attached by the dispatcher
        // when its model still runs on Slurm, else cancelled before its run is retried.
        for (id, pid, job) in ledger.unfinished_runs()? {
            if adopted.contains(&id) {
                continue;
            }
            stop_orphan(&id, pid);
            if let Some(job) = job {
                let on_slurm = ledger.run(&id)?.is_some_and(|r| {
                    current(&rules).models.get(&r.model).is_some_and(|m| {
                        matches!(m.executor, crate::config::model::Executor::Slurm(_))
                    })
                });
                if on_slurm {
                    adopted.push(id);
                } else {
                    crate::chain::executor::slurm::cancel_orphan(&id, job as u64);
                }
            }
        }
        let interrupted = ledger.interrupt_unfinished(&adopted, config.clock.now())?;
        if !interrupted.is_empty() {
            tracing::warn!(runs = ?interrupted, "runs left unfinished by the last daemon are marked interrupted");
        }
        for traffic in [Traffic::Operational, Traffic::Replay] {
            for c in ledger.status(traffic)? {
                for (state, n) in c.states {
                    if state != "claimed" {
                        board.count_decided(traffic, &c.channel, &state, n as u64);
                    }
                }
            }
        }
        for (kind, name, pause) in ledger.pauses()? {
            tracing::info!(%kind, %name, by = %pause.by, "paused by an operator");
            set_pause(&board, &kind, &name, pause);
        }
        // Before any file of theirs is examined again: the sessions routed by their own rules.
        let sessions = take_up_session_rules(&spool, &mut ledger, config.clock.now())?;
        let (redrive, to_file) = reconcile(&spool, &mut ledger)?;
        for s in &to_file {
            if let Err(e) = crate::archive::file(&spool, s) {
                tracing::error!(file.id = %s.id, error = %e, "cannot file");
            }
        }
        let (filed_tx, filed_rx) = sync_channel::<Vec<Submission>>(4);
        let (writer, writer_thread) = Writer::spawn(
            ledger,
            4096,
            filed_tx,
            Arc::clone(board.health()),
            config.clock,
        );
        // The filer wakes the dispatcher when a file delivered to a model is in the archive.
        let (wake_tx, wake_rx) = sync_channel::<Wake>(64);
        let filer = {
            let spool = spool.clone();
            let sync = config.sync;
            let wake = wake_tx.clone();
            let b = Arc::clone(&board);
            board.health().expect("filer", crate::health::STUCK_AFTER);
            crate::health::spawn("filer", Arc::clone(board.health()), move || {
                filer_loop(&spool, filed_rx, sync, &wake, &b)
            })
        };
        let (work_tx, work_rx) = sync_channel::<Work>(WORK);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let pool = Arc::new(Pool::new(config.workers.max(1)));
        let workers = (0..config.workers.max(1))
            .map(|i| {
                let rx = Arc::clone(&work_rx);
                let spool = spool.clone();
                let shared = WorkerShared {
                    catalog: Arc::clone(&catalog),
                    rules: Arc::clone(&rules),
                    sessions: sessions.clone(),
                };
                let writer = writer.clone();
                let limits = config.limits;
                let b = Arc::clone(&board);
                let pool = Arc::clone(&pool);
                board.health().expect(&pool.names[i], EXAMINE_STUCK_AFTER);
                crate::health::spawn(
                    &pool.names[i].clone(),
                    Arc::clone(board.health()),
                    move || worker_loop(&rx, &spool, &shared, &writer, limits, &b, &pool, i),
                )
            })
            .collect();
        let stop_runs = Arc::new(AtomicBool::new(false));
        let dispatcher = crate::chain::dispatch::spawn(
            spool.clone(),
            Arc::clone(&rules),
            Arc::clone(&catalog),
            writer.clone(),
            &config.db,
            Arc::clone(&stop_runs),
            config.clock,
            wake_rx,
            Arc::clone(&board),
        )?;
        let stop_alerts = Arc::new(AtomicBool::new(false));
        let alerts = crate::supervise::alerts::spawn(
            config.db.clone(),
            config.spool.clone(),
            Arc::clone(&rules),
            Arc::clone(&board),
            config.alerts.clone(),
            Arc::clone(&stop_alerts),
            config.clock,
        );
        let stations = crate::supervise::stations::spawn(
            config.db.clone(),
            config.spool.clone(),
            writer.clone(),
            Arc::clone(&board),
            Arc::clone(&stop_alerts),
            config.clock,
        );
        let retention = crate::archive::retention::spawn(
            config.db.clone(),
            config.spool.clone(),
            Arc::clone(&rules),
            writer.clone(),
            Arc::clone(&board),
            Arc::clone(&stop_alerts),
            config.clock,
        );
        let (hints_tx, hints_rx) = sync_channel::<Hint>(HINTS);
        let control = Control::new(
            Arc::clone(&board),
            writer.clone(),
            wake_tx,
            hints_tx.clone(),
            spool.clone(),
            Arc::clone(&rules),
            config.clock,
        );
        let products = crate::supervise::products::spawn(
            config.db.clone(),
            Arc::clone(&rules),
            Arc::clone(&board),
            {
                let control = control.clone();
                Box::new(move |who, model, time0| {
                    let answer = control.act(
                        who,
                        crate::control::Action::Trigger {
                            model: model.to_string(),
                            time0: time0.map(crate::ledger::timestamp),
                        },
                    );
                    match answer {
                        crate::control::Answer::Done { message, .. } => message,
                        other => other.outcome(),
                    }
                })
            },
            Arc::clone(&stop_alerts),
            config.clock,
        );
        let overflowed = Arc::new(AtomicBool::new(false));
        let watch = match config.poll {
            Some(_) => None,
            None => Some(watch::watch(
                &[spool.incoming()],
                &[config.rules.clone(), config.schemas.clone()],
                hints_tx.clone(),
                Arc::clone(&overflowed),
            )?),
        };
        let reload = {
            let (rules, catalog) = (Arc::clone(&rules), Arc::clone(&catalog));
            let (rules_dir, schemas_dir) = (config.rules.clone(), config.schemas.clone());
            let spool = spool.clone();
            let board = Arc::clone(&board);
            let clock = config.clock;
            Box::new(move || {
                reload(
                    &rules_dir,
                    &schemas_dir,
                    &rules,
                    &catalog,
                    &spool,
                    &board,
                    clock,
                )
            })
        };
        let scan_every = config.poll.unwrap_or(config.scan_every);
        let intake = Intake::new(
            spool.clone(),
            Arc::clone(&rules),
            Arc::clone(&board),
            writer.clone(),
            work_tx.clone(),
            Arc::clone(&ids),
            scan_every,
            overflowed,
            reload,
            config.clock,
        );
        for s in redrive {
            if let Some(id) = s.claim_id() {
                let replay = s.session.map(|session| crate::ledger::ReplayOf {
                    session,
                    origin: s.origin,
                    at: s.original_at.unwrap_or_default(),
                });
                let _ = work_tx.send(Work {
                    id,
                    channel: s.channel,
                    original: s.original,
                    marker: s.marker,
                    replay,
                });
            }
        }
        let stop_replay = Arc::new(AtomicBool::new(false));
        let replay = crate::replay::spawn(
            crate::replay::Replay::new(
                spool.clone(),
                writer.clone(),
                work_tx.clone(),
                Arc::clone(&ids),
                &config.db,
                Arc::clone(&board),
                Arc::clone(&rules),
                sessions,
                config.replay_quiet,
            )?,
            Arc::clone(&stop_replay),
        );
        drop(work_tx);
        drop(writer);
        board.health().expect("intake", crate::health::STUCK_AFTER);
        let intake = crate::health::spawn("intake", Arc::clone(board.health()), move || {
            intake.run(hints_rx)
        });
        let stop_guard = Arc::new(AtomicBool::new(false));
        let guard = {
            let (db, stop, b) = (
                config.db.clone(),
                Arc::clone(&stop_guard),
                Arc::clone(&board),
            );
            board
                .health()
                .expect("ledger-guard", crate::health::STUCK_AFTER);
            crate::health::spawn("ledger-guard", Arc::clone(board.health()), move || {
                guard_ledger(&db, ledger_identity, &stop, &b)
            })
        };
        Ok(Daemon {
            hints: hints_tx,
            intake,
            workers,
            dispatcher,
            stop_runs,
            writer: writer_thread,
            filer,
            _watch: watch,
            board,
            control,
            rules,
            spool,
            alerts,
            stop_alerts,
            stations,
            products,
            retention,
            replay,
            stop_replay,
            guard,
            stop_guard,
            _lock: lock,
        })
    }

    /// Why the daemon must stop, if a stage died or the ledger was replaced under it.
    pub fn fatal(&self) -> Option<String> {
        self.board.health().fatal_reason()
    }

    /// The live board (pauses, waiting files, running models, alerts, events).
    pub fn board(&self) -> Arc<Board> {
        Arc::clone(&self.board)
    }

    /// The control handle for operators' actions.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The rule set in force (swapped on reload).
    pub fn rules(&self) -> Shared<RuleSet> {
        Arc::clone(&self.rules)
    }

    /// Reloads rules and schemas now (SIGHUP), as after an edit of their files.
    pub fn reload(&self) {
        let _ = self.hints.send(Hint::Configuration);
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Stops cleanly: no new claims, files in flight examined, recorded and filed.
    pub fn stop(self) -> Result<(), DaemonError> {
        self.board.health().stopping();
        self.stop_guard
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.guard.join();
        drop(self.control);
        self.stop_alerts
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.alerts
            .join()
            .map_err(|_| DaemonError::Panicked("alerts"))?;
        self.products
            .join()
            .map_err(|_| DaemonError::Panicked("products"))?;
        if let Err(e) = self
            .stations
            .join()
            .map_err(|_| DaemonError::Panicked("stations"))?
        {
            tracing::warn!(error = %e, "the station index stopped");
        }
        if let Err(e) = self
            .retention
            .join()
            .map_err(|_| DaemonError::Panicked("retention"))?
        {
            tracing::warn!(error = %e, "retention stopped");
        }
        drop(self._watch);
        let _ = self.hints.send(Hint::Stop);
        let intake = self
            .intake
            .join()
            .map_err(|_| DaemonError::Panicked("intake"))?;
        self.stop_replay
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.replay
            .join()
            .map_err(|_| DaemonError::Panicked("replay"))?;
        for w in self.workers {
            let _ = w.join().map_err(|_| DaemonError::Panicked("worker"))?;
        }
        self.stop_runs
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.dispatcher
            .join()
            .map_err(|_| DaemonError::Panicked("dispatcher"))?;
        let writer = self
            .writer
            .join()
            .map_err(|_| DaemonError::Panicked("writer"))?;
        self.filer
            .join()
            .map_err(|_| DaemonError::Panicked("filer"))?;
        intake?;
        writer?;
        Ok(())
    }
}

/// The rule sets kept for replay sessions that route by their own and are still at work, taken
/// up at start. A session whose kept rules no longer compile is cancelled, never routed by the rules
/// in force instead.
fn take_up_session_rules(
    spool: &Spool,
    ledger: &mut Ledger,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::replay::SessionRules, DaemonError> {
    let sessions = crate::replay::SessionRules::default();
    let root = spool.replay().join(crate::replay::RULES);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(sessions),
        Err(source) => {
            return Err(DaemonError::Spool {
                path: root,
                op: "list the replay sessions' own rules",
                source,
            });
        }
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // A name read from the disk: one plain component, a real folder.
        if !crate::fs::safe_component(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // Only a session still at work routes files: one done or cancelled is left alone.
        if !matches!(
            ledger.session_state(&name)?.as_deref(),
            Some("replaying" | "finishing")
        ) {
            continue;
        }
        match RuleSet::load(&e.path()) {
            Ok(set) => sessions.set(&name, Some(set)),
            Err(problems) => {
                tracing::error!(session = %name, %problems,
                    "replay cancelled: its own rules no longer compile");
                ledger.set_session_state(&name, "cancelled", Some(now))?;
            }
        }
    }
    Ok(sessions)
}

/// Reloads rules and schemas after an edit; true when the rule set changed.
fn reload(
    rules_dir: &Path,
    schemas_dir: &Path,
    rules: &Shared<RuleSet>,
    catalog: &Shared<Catalog>,
    spool: &Spool,
    board: &Board,
    clock: Clock,
) -> bool {
    let mut changed = false;
    match RuleSet::load(rules_dir) {
        Ok(new) => {
            if board.refused().is_some() {
                board.set_refused(None);
            }
            if new.version != current(rules).version {
                let _ = spool.create(new.channels.keys().map(String::as_str));
                tracing::info!(rules = %&new.version[..12], "rules reloaded");
                if let Ok(mut g) = rules.write() {
                    *g = Arc::new(new);
                }
                board.set_rules_loaded(clock.now());
                board.publish("rules", "");
                changed = true;
            }
        }
        Err(problems) => {
            tracing::error!(%problems, "rules edit refused: the previous rules stay in force");
            board.set_refused(Some(Refused {
                at: crate::ledger::timestamp(clock.now()),
                problems: problems.0.iter().map(ToString::to_string).collect(),
            }));
        }
    }
    match Catalog::load(schemas_dir) {
        Ok(new) => {
            if let Ok(mut g) = catalog.write() {
                *g = Arc::new(new);
            }
            validate::schemas_changed();
        }
        Err(problems) => {
            tracing::error!(%problems, "schemas edit refused: the previous catalog stays in force");
        }
    }
    changed
}

/// Brings the ledger and `queue/` into agreement. Returns the submissions to examine again and
/// those to file.
fn reconcile(
    spool: &Spool,
    ledger: &mut Ledger,
) -> Result<(Vec<Submission>, Vec<Submission>), DaemonError> {
    let mut redrive = Vec::new();
    let mut forget = Vec::new();
    for s in ledger.in_state(State::Claimed)? {
        if std::fs::symlink_metadata(spool.queued(&s.id)).is_ok() {
            if let Some(marker) = &s.marker {
                let queued_marker = spool.queued_marker(&s.id);
                let left = spool
                    .channel(&s.channel)
                    .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(marker));
                if std::fs::symlink_metadata(&queued_marker).is_err() && left.exists() {
                    let _ = crate::fs::rename_noreplace(&left, &queued_marker);
                }
            }
            redrive.push(s);
        } else {
            forget.push(s.id);
        }
    }
    let mut to_file = Vec::new();
    let queue = spool.queue();
    let entries = std::fs::read_dir(&queue).map_err(|source| DaemonError::Spool {
        path: queue.clone(),
        op: "list",
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let id = name.strip_suffix(".marker").unwrap_or(&name);
        if id.ends_with(".tmp") {
            continue;
        }
        match ledger.get(id)? {
            Some(s) if s.state != State::Claimed => {
                if !to_file.iter().any(|t: &Submission| t.id == s.id) {
                    to_file.push(s);
                }
            }
            Some(_) => {}
            None => {
                tracing::error!(file = %entry.path().display(),
                    "in queue/ without a ledger record: left there for an operator");
            }
        }
    }
    if !forget.is_empty() {
        tracing::info!(
            count = forget.len(),
            "claims whose rename never happened are forgotten"
        );
        ledger.forget(&forget)?;
    }
    Ok((redrive, to_file))
}

/// The shared state a worker reads.
struct WorkerShared {
    catalog: Shared<Catalog>,
    rules: Shared<RuleSet>,
    /// The rules of replay sessions that route by their own (an edit tried on the past).
    sessions: crate::replay::SessionRules,
}

/// How long one examining thread may stay on one file before it is reported stuck: a 64 MiB
/// file validated against a large XSD takes seconds, not a minute.
const EXAMINE_STUCK_AFTER: Duration = Duration::from_secs(60);

/// The examining threads: their stage names, and which are on a file. A thread waiting for the
/// work queue (held by another while it waits) is idle, not stuck: the one that holds the queue
/// beats for every thread that is not on a file.
struct Pool {
    names: Vec<String>,
    busy: Vec<AtomicBool>,
}

impl Pool {
    fn new(n: usize) -> Pool {
        Pool {
            names: (0..n).map(|i| format!("examine-{i}")).collect(),
            busy: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn beat_idle(&self, health: &crate::health::Health) {
        for (name, busy) in self.names.iter().zip(&self.busy) {
            if !busy.load(std::sync::atomic::Ordering::Relaxed) {
                health.beat(name);
            }
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "a stage's loop takes each channel and shared handle it works with"
)]
fn worker_loop(
    rx: &Mutex<Receiver<Work>>,
    spool: &Spool,
    shared: &WorkerShared,
    writer: &Writer,
    limits: Limits,
    board: &Board,
    pool: &Pool,
    me: usize,
) -> Result<(), LedgerError> {
    let health = board.health();
    let stage = pool.names[me].as_str();
    let mut validator = Validator::new();
    let mut beaten = std::time::Instant::now();
    loop {
        let work = {
            let Ok(rx) = rx.lock() else {
                return Ok(());
            };
            if beaten.elapsed() >= Duration::from_millis(250) {
                pool.beat_idle(health);
                beaten = std::time::Instant::now();
            }
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(w) => w,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        };
        pool.busy[me].store(true, std::sync::atomic::Ordering::Relaxed);
        let result = examine_one(
            work,
            spool,
            shared,
            writer,
            limits,
            health,
            stage,
            &mut validator,
        );
        pool.busy[me].store(false, std::sync::atomic::Ordering::Relaxed);
        health.beat(stage);
        result?;
    }
}

/// Examines one claimed file and hands its decision to the ledger writer.
#[allow(
    clippy::too_many_arguments,
    reason = "one file's examination takes the handles of the stage it runs in"
)]
fn examine_one(
    work: Work,
    spool: &Spool,
    shared: &WorkerShared,
    writer: &Writer,
    limits: Limits,
    health: &crate::health::Health,
    stage: &str,
    validator: &mut Validator,
) -> Result<(), LedgerError> {
    {
        let queued = spool.queued(&work.id.text());
        // A file that cannot be read for a passing reason (no descriptors, no memory, an I/O
        // error) is examined again, never refused for it.
        let mut backoff = crate::health::Backoff::default();
        let mut faulted = false;
        let examined = loop {
            let catalog = current(&shared.catalog);
            let examined = examine_dropped(&queued, &work.original, &catalog, validator, limits);
            match &examined.verdict {
                Verdict::Rejected(r)
                    if r.kind == crate::examine::RejectKind::Transient && !health.is_stopping() =>
                {
                    health.fault(stage, Some(format!("file {}: {}", work.id, r.reason)));
                    faulted = true;
                    backoff.wait();
                }
                _ => {
                    // Cleared only after a fault: the health lock stays off the per-file path.
                    if faulted {
                        health.fault(stage, None);
                    }
                    break examined;
                }
            }
        };
        let route = match &examined.verdict {
            Verdict::Accepted {
                format, version, ..
            } => {
                let session = work.replay.as_ref().map(|r| r.session.as_str());
                let rules = session
                    .and_then(|s| shared.sessions.get(s))
                    .unwrap_or_else(|| current(&shared.rules));
                Some(route_of(&work, &queued, format, version, &rules))
            }
            Verdict::Rejected(_) => None,
        };
        let decision = Decision {
            claim: work,
            examined,
            route,
        };
        writer.decide(decision)
    }
}

/// The routing decision for an accepted file, deliveries limited to the slots it fits: the file
/// is read (once) only if a rule or a slot asks about its content.
fn route_of(
    work: &Work,
    queued: &Path,
    format: &str,
    version: &str,
    rules: &RuleSet,
) -> (crate::route::Decision, String) {
    let facts = Facts {
        channel: &work.channel,
        name: &work.original,
        format,
        version,
    };
    let content = crate::route::needs_content(&rules.routes, &rules.models, &facts)
        .then(|| std::fs::read(queued).ok())
        .flatten();
    let (decision, misfits) =
        crate::route::route(&rules.routes, &rules.models, &facts, content.as_deref());
    for m in misfits {
        tracing::warn!(file.id = %work.id, model = %m.model, slot = %m.slot,
            "routed to a slot it does not fit: not delivered");
    }
    (decision, rules.version.clone())
}

/// Files decided batches: a batch that cannot be filed (disk full, no descriptors) stays in
/// `queue/` and is filed again, with a doubling pause, until it is, without a restart; the
/// stage shows degraded meanwhile.
fn filer_loop(
    spool: &Spool,
    rx: Receiver<Vec<Submission>>,
    sync: bool,
    wake: &SyncSender<Wake>,
    board: &Board,
) {
    let health = board.health();
    let mut folders = crate::archive::Folders::default();
    let mut retry: Vec<Submission> = Vec::new();
    let mut pause = Duration::from_millis(50);
    loop {
        health.beat("filer");
        let wait = if retry.is_empty() {
            Duration::from_millis(500)
        } else {
            pause
        };
        let mut batch = match rx.recv_timeout(wait) {
            Ok(b) => b,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) if retry.is_empty() => return,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if health.is_stopping() {
                    // Left in queue/ with their verdicts: filed at the next start.
                    return;
                }
                std::thread::sleep(pause);
                Vec::new()
            }
        };
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
            if batch.len() > 8192 {
                break;
            }
        }
        let retried = !retry.is_empty();
        if retried {
            let mut again = std::mem::take(&mut retry);
            again.extend(batch);
            batch = again;
        }
        if batch.is_empty() {
            continue;
        }
        let failed = crate::archive::file_batch(spool, &batch, &mut folders);
        if let Some((id, e)) = failed.first() {
            health.fault(
                "filer",
                Some(format!(
                    "{} file(s) cannot be filed yet (first {id}: {e}); they stay in queue/",
                    failed.len()
                )),
            );
            // Folders may have gone with the fault: ask the file system again.
            folders = crate::archive::Folders::default();
            pause = (pause * 2).min(Duration::from_secs(2));
        } else {
            health.fault("filer", None);
            pause = Duration::from_millis(50);
        }
        let failed_ids: std::collections::HashSet<&str> =
            failed.iter().map(|(id, _)| id.as_str()).collect();
        let (filed, not_yet): (Vec<Submission>, Vec<Submission>) = batch
            .into_iter()
            .partition(|s| !failed_ids.contains(s.id.as_str()));
        retry = not_yet;
        if filed.is_empty() {
            continue;
        }
        for s in &filed {
            log_decided(s);
        }
        if sync && let Err(e) = sync_filesystem(spool.root()) {
            tracing::error!(error = %e, "cannot sync the spool");
        }
        let delivered = filed.iter().any(|s| {
            s.route_actions
                .iter()
                .any(|a| matches!(a, crate::config::routes::Action::Deliver { .. }))
        });
        let mut counts: std::collections::BTreeMap<(Traffic, &str, &str), u64> = Default::default();
        for s in &filed {
            let traffic = match s.session {
                Some(_) => Traffic::Replay,
                None => Traffic::Operational,
            };
            *counts
                .entry((traffic, &s.channel, s.state.name()))
                .or_default() += 1;
        }
        for ((traffic, channel, state), n) in counts {
            board.count_decided(traffic, channel, state, n);
        }
        if let Some(last) = filed.last() {
            board.publish("files", &last.id);
        }
        if delivered {
            let _ = wake.try_send(Wake::Kick);
        }
    }
}

/// Holds the spool for this daemon alone: an exclusive `flock` on `state/pom.lock`, released by
/// the kernel when the process ends however it ends. The holder's pid is written in it.
fn lock_spool(spool: &Spool) -> Result<std::fs::File, DaemonError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let path = spool.root().join("state").join("pom.lock");
    let err = |op, source| DaemonError::Spool {
        path: path.clone(),
        op,
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| err("open the lock file", e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(DaemonError::Locked {
            path: path.clone(),
            holder: format!("pid {}", holder.trim()),
        });
    }
    file.set_len(0).map_err(|e| err("write the lock file", e))?;
    write!(file, "{}", std::process::id()).map_err(|e| err("write the lock file", e))?;
    Ok(file)
}

/// One log line per file decided, at info: its id, channel, name and outcome (with the route,
/// or the reason it was refused, or the file it duplicates), and its replay session if any.
fn log_decided(s: &Submission) {
    let name = String::from_utf8_lossy(&s.original);
    let mode = match &s.session {
        Some(session) => format!("replay:{session}"),
        None => "operational".into(),
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    match s.state {
        State::Rejected => tracing::info!(
            file.id = %s.id, channel = %s.channel, name = %name, %mode,
            reason = %text(&s.reason), "file rejected"
        ),
        State::Duplicate => tracing::info!(
            file.id = %s.id, channel = %s.channel, name = %name, %mode,
            duplicate_of = %text(&s.duplicate_of), "file is a duplicate"
        ),
        _ => tracing::info!(
            file.id = %s.id, channel = %s.channel, name = %name, %mode,
            format = %text(&s.format), route = %text(&s.route), "file archived"
        ),
    }
}

/// Device and inode of a file: another pair later means it was replaced.
fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Watches the ledger file: deleted, or replaced by another file, the daemon would go on writing
/// to a file nobody sees, and a restart would take processed files for new ones. Either is fatal.
fn guard_ledger(db: &Path, known: (u64, u64), stop: &AtomicBool, board: &Board) {
    let health = board.health();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        health.beat("ledger-guard");
        match identity(db) {
            Ok(id) if id == known => {}
            Ok(_) => {
                health.fatal(format!(
                    "the ledger {} was replaced under the running daemon",
                    db.display()
                ));
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                health.fatal(format!(
                    "the ledger {} was deleted under the running daemon",
                    db.display()
                ));
                return;
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn set_pause(board: &Board, kind: &str, name: &str, pause: Pause) {
    if kind == "model" {
        board.set_model_pause(name, Some(pause));
    } else {
        board.set_channel_pause(name, Some(pause));
    }
}

/// The model processes left running by a daemon that died (kill -9): those whose environment
/// names the run, found even when the dead daemon had not yet recorded the pid, and the group of
/// the recorded pid when that process is still the run's own (a pid may have been reused). They
/// are stopped, so that a retry never runs beside them.
fn stop_orphan(run: &str, pid: Option<i64>) {
    let wanted = format!("POM_RUN_ID={run}");
    let leader = pid.and_then(|pid| u32::try_from(pid).ok()).filter(|pid| {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
            environ
                .split(|&b| b == 0)
                .any(|var| var == wanted.as_bytes())
        })
    });
    let found = crate::chain::process::kill_run(leader, run);
    if leader.is_some() || found > 0 {
        tracing::warn!(run.id = %run, pid = ?leader, found,
            "stopped the model processes left by the last daemon");
    }
}
