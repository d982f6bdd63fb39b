//! The `pom` command: the daemon and the operator's tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use pom::config::catalog::Catalog;
use pom::config::problems::Problem;
use pom::config::rules::RuleSet;
use pom::control::Action;
use pom::daemon::{Config, Daemon};
use pom::examine::validate::Validator;
use pom::examine::{self, Limits, Verdict};
use pom::ledger::{FileFilter, Ledger, State};
use pom::spool::Spool;
use pom::supervise::alerts::MinFree;
use pom::web::{Settings as WebSettings, Tokens, Web};

/// POM: gateway and scheduler for chains of flood-forecasting models.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    paths: Paths,
    #[command(subcommand)]
    command: Command,
}

/// Where things are. Every path has a flag and an environment variable.
#[derive(Args, Clone)]
struct Paths {
    /// Spool root.
    #[arg(long, env = "POM_SPOOL", default_value = "spool", global = true)]
    spool: PathBuf,
    /// Rules folder (channels, models, routes).
    #[arg(long, env = "POM_RULES", default_value = "rules", global = true)]
    rules: PathBuf,
    /// Schemas folder (catalog.toml and XSD files).
    #[arg(long, env = "POM_SCHEMAS", default_value = "schemas", global = true)]
    schemas: PathBuf,
    /// Ledger file [default: <spool>/state/pom.sqlite].
    #[arg(long, env = "POM_DB", global = true)]
    db: Option<PathBuf>,
    /// The daemon's API, for control commands.
    #[arg(
        long,
        env = "POM_SERVER",
        default_value = "http://127.0.0.1:8470",
        global = true
    )]
    server: String,
    /// Operators' token file (`name:token` per line, or one token); POM_TOKEN also gives one.
    #[arg(long, env = "POM_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
}

impl Paths {
    /// Every path made absolute once, against the directory the command was started in: the
    /// watcher reports absolute paths, and models run in their own run folder, so a relative
    /// path left in place would mean nothing to either.
    fn resolve(&mut self) -> Result<()> {
        self.spool = absolute(&self.spool, "--spool")?;
        self.rules = absolute(&self.rules, "--rules")?;
        self.schemas = absolute(&self.schemas, "--schemas")?;
        if let Some(db) = &self.db {
            self.db = Some(absolute(db, "--db")?);
        }
        if let Some(t) = &self.token_file {
            self.token_file = Some(absolute(t, "--token-file")?);
        }
        Ok(())
    }

    fn db(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| Spool::new(&self.spool).default_db())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (SIGTERM or Ctrl-C stops it cleanly).
    Serve(ServeArgs),
    /// Load rules and schemas; print every problem with file and line; exit 1 on any.
    Check,
    /// Identify and validate files as the daemon would; exit 1 if any is refused.
    Validate(ValidateArgs),
    /// Counts per channel and state, queue depth, last arrivals.
    Status(JsonArg),
    /// List submissions, newest first.
    Files(FilesArgs),
    /// The routing decision for files, and the rules behind it, without the daemon.
    Route(RouteArgs),
    /// Declared models: trigger, next scheduled time, paused or not.
    Models(JsonArg),
    /// Model runs, newest first.
    Runs(RunsArgs),
    /// One run or one file: details and lineage.
    Show(ShowArgs),
    /// Pause a model (its inputs wait) or a channel (its files wait in incoming/).
    Pause(TargetArgs),
    /// Resume a paused model or channel.
    Resume(TargetArgs),
    /// Stop a running run (or a retry that is due).
    Cancel(IdArg),
    /// Retry an ended, unsuccessful run with the same inputs.
    Retry(IdArg),
    /// Run a run again (same inputs, same time0) as a new first attempt.
    Rerun(IdArg),
    /// Run a model now with the latest input of each slot.
    Trigger(TriggerArgs),
    /// Keep an archived file from its models until released.
    Hold(IdArg),
    /// Release a held file.
    Release(IdArg),
    /// Put a rejected file back into its channel after it was fixed (in place in rejected/, or
    /// given with --fixed): a new submission linked to the original.
    Reinject(ReinjectArgs),
    /// The audit log of operators' actions, newest first.
    Audit(AuditArgs),
    /// Alerts in force.
    Alerts(JsonArg),
    /// Replay the past: re-inject the archived files of a period (a replay session), and show
    /// its progress; `pom replay report SESSION` shows the comparison with the original runs.
    Replay(ReplayArgs),
    /// Replay sessions, newest first, with their progress.
    Replays(JsonArg),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ReplayArgs {
    #[command(subcommand)]
    report: Option<ReplayCommand>,
    /// Start of the period (original arrival times, RFC 3339).
    #[arg(long, required = true)]
    from: Option<String>,
    /// End of the period (excluded).
    #[arg(long, required = true)]
    to: Option<String>,
    /// Only files of this channel.
    #[arg(long)]
    channel: Option<String>,
    /// Only these models run (repeat the flag for more) [default: all].
    #[arg(long)]
    model: Vec<String>,
    /// `max` (as fast as possible, in order), or N: the original spacing of arrivals divided
    /// by N.
    #[arg(long, default_value = "max")]
    speed: String,
    /// The session's name [default: from the period].
    #[arg(long)]
    name: Option<String>,
    /// Return at once instead of showing the progress until the session is done.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand)]
enum ReplayCommand {
    /// Stop a session in progress: no more of its files are released (they stay in its
    /// folder), its queued runs are cancelled.
    Cancel {
        /// Session id or name.
        session: String,
    },
    /// The comparison of a session's outputs with the original runs' outputs.
    Report {
        /// Session id or name.
        session: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct TargetArgs {
    /// `model` or `channel`.
    #[arg(value_parser = ["model", "channel"])]
    kind: String,
    /// Its name.
    name: String,
}

#[derive(Args)]
struct IdArg {
    /// A run id or a file id.
    id: String,
}

#[derive(Args)]
struct TriggerArgs {
    /// Model name.
    model: String,
    /// time0, RFC 3339 [default: now].
    #[arg(long)]
    time0: Option<String>,
}

#[derive(Args)]
struct ReinjectArgs {
    /// The rejected file's id.
    id: String,
    /// The fixed file [default: the file in rejected/, fixed in place].
    #[arg(long)]
    fixed: Option<PathBuf>,
}

#[derive(Args)]
struct AuditArgs {
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ShowArgs {
    /// A run id or a file (submission) id.
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunsArgs {
    /// Only runs of this model.
    #[arg(long)]
    model: Option<String>,
    /// Only runs in this state (queued, running, succeeded, failed, timed_out, cancelled,
    /// interrupted).
    #[arg(long)]
    state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RouteArgs {
    /// Files to route.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The channel the files arrive on.
    #[arg(long)]
    channel: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Examining threads [default: number of cores, plus one].
    #[arg(long, env = "POM_WORKERS")]
    workers: Option<usize>,
    /// Seconds between reconcile scans of the spool.
    #[arg(long, env = "POM_SCAN_INTERVAL", default_value_t = 30.0)]
    scan_interval: f64,
    /// Poll only, every this many seconds, without file system events (NFS, CIFS).
    #[arg(long, env = "POM_POLL")]
    poll: Option<f64>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Do not sync the file system after each filed batch (faster, weaker on power loss).
    #[arg(long, env = "POM_NO_SYNC")]
    no_sync: bool,
    /// A simulated clock for schedules and time0, `START[@SPEED]` (e.g.
    /// `2026-03-28T00:00:00Z@3600`: one simulated hour per second), for rehearsals and tests.
    #[arg(long, env = "POM_CLOCK")]
    clock: Option<String>,
    /// Address of the web client and API (`off`: none). Reading is open to loopback only.
    #[arg(long, env = "POM_LISTEN", default_value = "127.0.0.1:8470")]
    listen: String,
    /// Theme file of the web client (title, logo, colours, fonts) [default: theme/theme.toml
    /// if it exists].
    #[arg(long, env = "POM_THEME")]
    theme: Option<PathBuf>,
    /// Low disk alert below this free space on the spool (`5%`, `2G`).
    #[arg(long, env = "POM_MIN_FREE_DISK", default_value = "5%")]
    min_free_disk: String,
    /// Command run (`sh -c`) when an alert is raised or cleared, with POM_ALERT_STATE, _KIND,
    /// _SUBJECT, _MESSAGE and _SINCE in its environment.
    #[arg(long, env = "POM_ALERT_COMMAND")]
    alert_command: Option<String>,
    /// Seconds between two evaluations of the alerts.
    #[arg(long, env = "POM_ALERT_INTERVAL", default_value_t = 2.0)]
    alert_interval: f64,
    /// Seconds a folder copied into spool/replay/ must stay unchanged (nothing added or grown
    /// anywhere below it) before its session starts; a `READY` file at its top starts it at once.
    #[arg(long, env = "POM_REPLAY_QUIET", default_value_t = 10.0)]
    replay_quiet: f64,
}

#[derive(Args)]
struct LimitArgs {
    /// Largest file accepted, in bytes.
    #[arg(long, env = "POM_MAX_SIZE", default_value_t = examine::DEFAULT_MAX_SIZE)]
    max_size: u64,
    /// Deepest element nesting accepted.
    #[arg(long, env = "POM_MAX_DEPTH", default_value_t = examine::DEFAULT_MAX_DEPTH)]
    max_depth: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_size: self.max_size,
            max_depth: self.max_depth,
        }
    }
}

#[derive(Args)]
struct ValidateArgs {
    /// Files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FilesArgs {
    /// Only files in this state (claimed, archived, rejected, duplicate).
    #[arg(long)]
    state: Option<String>,
    /// Only files of this channel.
    #[arg(long)]
    channel: Option<String>,
    /// Only files with this routing outcome (routed, unrouted, held, dropped).
    #[arg(long)]
    route: Option<String>,
    /// Only files whose name holds this text.
    #[arg(long)]
    name: Option<String>,
    /// Only files of this format.
    #[arg(long)]
    format: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // A reader that goes away (`pom runs --json | head`) ends the command quietly, as it
        // does any Unix tool, instead of a panic on the closed pipe.
        // SAFETY: sets this process's SIGPIPE disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Err(e) = cli.paths.resolve() {
        eprintln!("pom: {e:#}");
        return ExitCode::from(2);
    }
    let result = match &cli.command {
        Command::Serve(a) => serve(&cli.paths, a),
        Command::Check => check(&cli.paths),
        Command::Validate(a) => validate(&cli.paths, a),
        Command::Status(a) => status(&cli.paths, a.json),
        Command::Files(a) => files(&cli.paths, a),
        Command::Route(a) => route(&cli.paths, a),
        Command::Models(a) => models(&cli.paths, a.json),
        Command::Runs(a) => runs(&cli.paths, a),
        Command::Show(a) => show(&cli.paths, a),
        Command::Pause(a) => act(&cli.paths, &pause(a, true)),
        Command::Resume(a) => act(&cli.paths, &pause(a, false)),
        Command::Cancel(a) => act(&cli.paths, &Action::Cancel { run: a.id.clone() }),
        Command::Retry(a) => act(&cli.paths, &Action::Retry { run: a.id.clone() }),
        Command::Rerun(a) => act(&cli.paths, &Action::Rerun { run: a.id.clone() }),
        Command::Trigger(a) => act(
            &cli.paths,
            &Action::Trigger {
                model: a.model.clone(),
                time0: a.time0.clone(),
            },
        ),
        Command::Hold(a) => act(&cli.paths, &Action::Hold { file: a.id.clone() }),
        Command::Release(a) => act(&cli.paths, &Action::Release { file: a.id.clone() }),
        Command::Reinject(a) => reinject(&cli.paths, a),
        Command::Audit(a) => audit(&cli.paths, a),
        Command::Alerts(a) => alerts(&cli.paths, a.json),
        Command::Replay(a) => replay(&cli.paths, a),
        Command::Replays(a) => replays(&cli.paths, a.json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pom: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// How long a daemon that cannot go on still answers `/api/health` (503, the dead stage named)
/// before it exits.
const FATAL_GRACE: Duration = Duration::from_secs(2);

/// A number of seconds from the command line: finite, at least `min`, at most a day.
fn seconds(v: f64, min: f64, what: &str) -> Result<Duration> {
    if !(0.0..=86_400.0).contains(&v) {
        anyhow::bail!("{what} {v}: seconds between 0 and 86400");
    }
    Ok(Duration::from_secs_f64(v.max(min)))
}

/// `path` made absolute against the current directory (not resolving links: the operator's
/// path is kept as written, only anchored).
fn absolute(path: &Path, what: &str) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{what} {}", path.display()))
}

fn serve(paths: &Paths, a: &ServeArgs) -> Result<ExitCode> {
    let signals = block_signals();
    raise_descriptor_limit();
    let config = Config {
        spool: paths.spool.clone(),
        rules: paths.rules.clone(),
        schemas: paths.schemas.clone(),
        db: paths.db(),
        workers: a
            .workers
            // One more than the cores: a worker waiting on a read or on the ledger leaves its
            // core to another (measured by the intake benchmark: +8 % on 2 cores).
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()) + 1),
        scan_every: seconds(a.scan_interval, 0.1, "--scan-interval")?,
        poll: a.poll.map(|p| seconds(p, 0.05, "--poll")).transpose()?,
        limits: a.limits.limits(),
        sync: !a.no_sync,
        clock: match &a.clock {
            Some(c) => pom::clock::Clock::parse(c).map_err(|e| anyhow::anyhow!("--clock: {e}"))?,
            None => pom::clock::Clock::System,
        },
        alerts: pom::supervise::alerts::Settings {
            min_free: MinFree::parse(&a.min_free_disk)
                .map_err(|e| anyhow::anyhow!("--min-free-disk: {e}"))?,
            command: a.alert_command.clone(),
            every: seconds(a.alert_interval, 0.1, "--alert-interval")?,
        },
        replay_quiet: seconds(a.replay_quiet, 0.2, "--replay-quiet")?,
    };
    let clock = config.clock;
    let db = config.db.clone();
    let daemon = Daemon::start(config).context("cannot start")?;
    let web = if a.listen == "off" {
        None
    } else {
        let tokens = Tokens::load(
            paths.token_file.as_deref(),
            std::env::var("POM_TOKEN").ok().as_deref(),
        )
        .context("reading the token file")?;
        if !tokens.any() {
            tracing::warn!("no operator token (--token-file or POM_TOKEN): control is disabled");
        }
        let theme = match &a.theme {
            Some(t) => Some(absolute(t, "--theme")?),
            None => {
                let default = absolute(Path::new("theme/theme.toml"), "theme")?;
                default.exists().then_some(default)
            }
        };
        let settings = WebSettings {
            listen: a
                .listen
                .parse()
                .with_context(|| format!("--listen {}: not an address:port", a.listen))?,
            tokens,
            theme,
            db,
            rules_dir: paths.rules.clone(),
            clock,
        };
        Some(
            Web::start(
                settings,
                daemon.board(),
                daemon.control(),
                daemon.rules(),
                daemon.spool().clone(),
            )
            .context("web")?,
        )
    };
    if let Some(w) = &web {
        // A line for scripts and tests that ask for port 0.
        tracing::info!(addr = %w.addr(), "listening on http://{}", w.addr());
    }
    tracing::info!(spool = %paths.spool.display(), "pom is running");
    let sig = loop {
        let sig = wait_for(&signals);
        if sig != libc::SIGUSR1 {
            break sig;
        }
        if let Some(why) = daemon.fatal() {
            // A stage is dead or the ledger is gone: no clean stop can be promised. Files in
            // flight stay in queue/ with what the ledger says of them, running models are
            // adopted at the next start; systemd restarts the daemon on this exit.
            // Health answers 503 with the dead stage for a moment first, so that a monitor
            // polling it sees why before the process goes.
            tracing::error!(reason = %why, "pom stops in {FATAL_GRACE:?}: a stage cannot go on");
            std::thread::sleep(FATAL_GRACE);
            std::process::exit(3);
        }
    };
    tracing::info!(signal = sig, "stopping");
    if let Some(w) = web {
        w.stop();
    }
    daemon.stop().context("stopping")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The soft limit on open descriptors raised to the hard one: the daemon holds files, ledger
/// connections and web connections at once, and a low soft limit (1024 is common) would turn a
/// busy moment into refused work.
fn raise_descriptor_limit() {
    // SAFETY: reads and sets this process's own limit.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in every thread (spawned threads inherit the mask) so that
/// the main thread alone receives them with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        // Raised by the daemon itself when a stage cannot go on (see `pom::health`).
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: waits on a valid, blocked set.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn check(paths: &Paths) -> Result<ExitCode> {
    let mut problems: Vec<Problem> = Vec::new();
    match RuleSet::load(&paths.rules) {
        Ok(r) => {
            println!(
                "rules: {} channel(s), {} model(s), {} route(s), version {}",
                r.channels.len(),
                r.models.len(),
                r.routes.routes.len(),
                &r.version[..12]
            );
            // What only the machine can tell: the command is there, the schedule ever fires.
            let path = std::env::var_os("PATH");
            for m in r.models.values() {
                let file = paths.rules.join("models").join(format!("{}.toml", m.name));
                let program = m.command.first().map(String::as_str).unwrap_or_default();
                if let Some(why) = pom::config::model::command_not_found(program, path.as_deref()) {
                    problems.push(Problem {
                        file: file.clone(),
                        line: None,
                        message: why,
                    });
                }
                if let pom::config::model::Trigger::Schedule { pattern, .. } = &m.trigger
                    && m.trigger.next_after(chrono::Utc::now()).is_none()
                {
                    problems.push(Problem {
                        file,
                        line: None,
                        message: format!("cron `{pattern}` never fires"),
                    });
                }
            }
        }
        Err(p) => problems.extend(p.0),
    }
    match Catalog::load(&paths.schemas) {
        Ok(c) => {
            let mut v = Validator::new();
            for xsd in c.xsds() {
                if let Err(errors) = v.compile(&xsd) {
                    for e in errors {
                        problems.push(Problem {
                            file: xsd.clone(),
                            line: e.line.map(|l| l as usize),
                            message: e.message,
                        });
                    }
                }
            }
            println!(
                "schemas: {} format(s), {} XSD file(s)",
                c.formats().len(),
                c.xsds().len()
            );
        }
        Err(p) => problems.extend(p.0),
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s)", problems.len());
        Ok(ExitCode::from(1))
    }
}

fn validate(paths: &Paths, a: &ValidateArgs) -> Result<ExitCode> {
    let catalog = Catalog::load(&paths.schemas).map_err(|p| anyhow::anyhow!("{p}"))?;
    let mut validator = Validator::new();
    let mut refused = 0;
    let mut out = Vec::new();
    for f in &a.files {
        let ex = examine::examine(f, &catalog, &mut validator, a.limits.limits());
        let shown = f.display().to_string();
        match &ex.verdict {
            Verdict::Accepted {
                format,
                version,
                checked,
            } => {
                if !a.json {
                    println!("{shown}: valid: {format} {version} ({checked})");
                }
                out.push(serde_json::json!({
                    "file": shown, "valid": true, "format": format, "version": version,
                    "checked": checked, "sha256": ex.sha256,
                }));
            }
            Verdict::Rejected(r) => {
                refused += 1;
                if !a.json {
                    println!("{shown}: refused ({}): {}", r.kind.name(), r.reason);
                    for e in &r.errors {
                        println!("  {e}");
                    }
                }
                let (format, version) = ex.identified.clone().unzip();
                out.push(serde_json::json!({
                    "file": shown, "valid": false, "kind": r.kind, "reason": r.reason,
                    "errors": r.errors, "root": ex.root, "sha256": ex.sha256,
                    "format": format, "version": version,
                }));
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn open_ledger(paths: &Paths) -> Result<Ledger> {
    let db = paths.db();
    if !db.exists() {
        anyhow::bail!(
            "no ledger at {} (has `pom serve` run with this spool?)",
            db.display()
        );
    }
    Ledger::open_readonly(&db).context("opening the ledger")
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".marker"))
                .count()
        })
        .unwrap_or(0)
}

fn status(paths: &Paths, json: bool) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let channels = ledger.status()?;
    let spool = Spool::new(&paths.spool);
    let queue = count_files(&spool.queue());
    let rules = RuleSet::load(&paths.rules);
    if json {
        let v = serde_json::json!({
            "queue_depth": queue,
            "channels": channels,
            "rules": match &rules {
                Ok(r) => serde_json::json!({"version": r.version, "problems": []}),
                Err(p) => serde_json::json!({"version": null, "problems": p.0}),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &rules {
        Ok(r) => println!("rules: version {}", &r.version[..12]),
        Err(p) => println!("rules: {p}"),
    }
    println!("queue: {queue} file(s) in flight");
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9}  last arrival",
        "channel", "claimed", "archived", "rejected", "duplicate"
    );
    for c in &channels {
        let n = |s: State| c.states.get(s.name()).copied().unwrap_or(0);
        println!(
            "{:<20} {:>9} {:>9} {:>9} {:>9}  {}",
            c.channel,
            n(State::Claimed),
            n(State::Archived),
            n(State::Rejected),
            n(State::Duplicate),
            c.last_arrival.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn files(paths: &Paths, a: &FilesArgs) -> Result<ExitCode> {
    let state = match &a.state {
        Some(s) => Some(State::parse(s).with_context(|| {
            format!("unknown state `{s}` (claimed, archived, rejected, duplicate)")
        })?),
        None => None,
    };
    let ledger = open_ledger(paths)?;
    let rows = ledger.files(&FileFilter {
        state,
        channel: a.channel.clone(),
        route: a.route.clone(),
        name: a.name.clone(),
        format: a.format.clone(),
        before: None,
        limit: a.limit,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in rows {
        let what = match r.state {
            State::Archived | State::Duplicate => format!(
                "{} {}{}",
                r.format.as_deref().unwrap_or("?"),
                r.version.as_deref().unwrap_or("?"),
                match (&r.route, r.route_rules.first()) {
                    (Some(route), Some(rule)) => format!(", {route} by {rule}"),
                    (Some(route), None) => format!(", {route}"),
                    _ => String::new(),
                }
            ),
            State::Rejected => r.reason.clone().unwrap_or_default(),
            State::Claimed => String::new(),
        };
        println!(
            "{}  {:<9} {:<12} {:?}  {}",
            r.id,
            r.state.name(),
            r.channel,
            String::from_utf8_lossy(&r.original),
            what
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load_rules(paths: &Paths) -> Result<RuleSet> {
    RuleSet::load(&paths.rules).map_err(|p| anyhow::anyhow!("{p}"))
}

fn route(paths: &Paths, a: &RouteArgs) -> Result<ExitCode> {
    let rules = load_rules(paths)?;
    if !rules.channels.contains_key(&a.channel) {
        anyhow::bail!("no channel `{}` in {}", a.channel, paths.rules.display());
    }
    let catalog = Catalog::load(&paths.schemas).map_err(|p| anyhow::anyhow!("{p}"))?;
    let mut validator = Validator::new();
    let mut out = Vec::new();
    for f in &a.files {
        let ex = examine::examine(f, &catalog, &mut validator, examine::Limits::default());
        let shown = f.display().to_string();
        let decision = match &ex.verdict {
            Verdict::Rejected(r) => {
                serde_json::json!({"outcome": "rejected", "kind": r.kind, "reason": r.reason})
            }
            Verdict::Accepted {
                format, version, ..
            } => {
                let name = f
                    .file_name()
                    .map(|n| n.as_encoded_bytes().to_vec())
                    .unwrap_or_default();
                let facts = pom::route::Facts {
                    channel: &a.channel,
                    name: &name,
                    format,
                    version,
                };
                let content = pom::route::needs_content(&rules.routes, &rules.models, &facts)
                    .then(|| std::fs::read(f).ok())
                    .flatten();
                let d = rules.routes.decide(&facts, content.as_deref());
                serde_json::to_value(&d)?
            }
        };
        if !a.json {
            println!("{shown}: {}", describe_route(&decision));
        }
        out.push(serde_json::json!({"file": shown, "decision": decision, "rules_version": rules.version}));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_route(d: &serde_json::Value) -> String {
    match d["outcome"].as_str() {
        Some("routed") => {
            let rules: Vec<&str> = d["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            let actions: Vec<String> = d["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| match a["action"].as_str() {
                    Some("deliver") => format!(
                        "deliver to {}.{}",
                        a["model"].as_str().unwrap_or(""),
                        a["slot"].as_str().unwrap_or("")
                    ),
                    Some("publish") => format!(
                        "publish to outgoing/{}/",
                        a["target"].as_str().unwrap_or("")
                    ),
                    Some("hold") => format!("hold ({})", a["reason"].as_str().unwrap_or("")),
                    Some("drop") => format!("drop ({})", a["reason"].as_str().unwrap_or("")),
                    _ => a.to_string(),
                })
                .collect();
            format!("{} (rule {})", actions.join(", "), rules.join(", "))
        }
        Some("unrouted") => "unrouted: no rule matches".into(),
        _ => format!("refused: {}", d["reason"].as_str().unwrap_or("")),
    }
}

fn models(paths: &Paths, json: bool) -> Result<ExitCode> {
    let rules = load_rules(paths)?;
    let now = chrono::Utc::now();
    let rows: Vec<serde_json::Value> = rules
        .models
        .values()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "description": m.description,
                "trigger": m.trigger.kind(),
                "next": m.trigger.next_after(now).map(pom::ledger::timestamp),
                "paused": m.paused,
                "inputs": m.inputs.keys().collect::<Vec<_>>(),
                "outputs": m.outputs.as_ref().map(|(c, _)| c),
                "executor": format!("{:?}", m.executor).to_lowercase(),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<9} {:<28} {:<7} inputs",
        "model", "trigger", "next", "paused"
    );
    for r in &rows {
        println!(
            "{:<24} {:<9} {:<28} {:<7} {}",
            r["name"].as_str().unwrap_or(""),
            r["trigger"].as_str().unwrap_or(""),
            r["next"].as_str().unwrap_or("-"),
            if r["paused"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            r["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn runs(paths: &Paths, a: &RunsArgs) -> Result<ExitCode> {
    let state = match &a.state {
        Some(s) => Some(
            pom::ledger::runs::RunState::parse(s)
                .with_context(|| format!("unknown run state `{s}`"))?,
        ),
        None => None,
    };
    let ledger = open_ledger(paths)?;
    let rows = ledger.runs(a.model.as_deref(), state, a.limit)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in rows {
        println!(
            "{:<40} {:<11} time0 {}  {}",
            r.id,
            r.state.name(),
            r.time0,
            r.reason.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(paths: &Paths, a: &ShowArgs) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let lineage = ledger.lineage(&a.id)?;
    let value = if let Some(run) = ledger.run(&a.id)? {
        serde_json::json!({"run": run, "lineage": lineage})
    } else if let Some(file) = ledger.get(&a.id)? {
        serde_json::json!({"file": file, "lineage": lineage})
    } else {
        anyhow::bail!("no run or file `{}` in the ledger", a.id);
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let body = value
        .get("run")
        .or_else(|| value.get("file"))
        .cloned()
        .unwrap_or_default();
    if let Some(fields) = body.as_object() {
        for (k, v) in fields {
            if v.is_null() || v.as_array().is_some_and(|a| a.is_empty()) {
                continue;
            }
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<14} {shown}");
        }
    }
    println!("lineage:");
    for line in lineage.lines() {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn pause(a: &TargetArgs, pausing: bool) -> Action {
    let name = a.name.clone();
    match (a.kind.as_str(), pausing) {
        ("model", true) => Action::PauseModel { model: name },
        ("model", false) => Action::ResumeModel { model: name },
        (_, true) => Action::PauseChannel { channel: name },
        (_, false) => Action::ResumeChannel { channel: name },
    }
}

/// The operator's token: the first of the token file, or POM_TOKEN.
fn token(paths: &Paths) -> Result<String> {
    if let Ok(t) = std::env::var("POM_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let Some(file) = &paths.token_file else {
        anyhow::bail!("control needs a token: set POM_TOKEN or --token-file");
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(':').map_or(l, |x| x.1).trim().to_string())
        .context("the token file holds no token")
}

/// Sends an action to the daemon's API and prints its answer; exit 1 if refused.
fn act(paths: &Paths, action: &Action) -> Result<ExitCode> {
    let token = token(paths)?;
    let body = serde_json::to_vec(action)?;
    let auth = format!("Bearer {token}");
    let reply = pom::client::request(
        &paths.server,
        "POST",
        "/api/actions",
        &[("Authorization", &auth)],
        Some(&body),
    )
    .context("is `pom serve` running?")?;
    let v = reply.json();
    match (reply.status, v.get("outcome").and_then(|o| o.as_str())) {
        (200, _) => {
            println!("{}", v["message"].as_str().unwrap_or("done"));
            Ok(ExitCode::SUCCESS)
        }
        (_, Some("refused")) => {
            println!("refused: {}", v["reason"].as_str().unwrap_or_default());
            Ok(ExitCode::from(1))
        }
        (status, _) => anyhow::bail!(
            "HTTP {status}: {}",
            v["error"]
                .as_str()
                .map_or_else(|| reply.text(), str::to_string)
        ),
    }
}

fn reinject(paths: &Paths, a: &ReinjectArgs) -> Result<ExitCode> {
    let content = match &a.fixed {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {} (XML is text)", f.display()))?,
        ),
        None => None,
    };
    act(
        paths,
        &Action::Reinject {
            file: a.id.clone(),
            content,
        },
    )
}

fn audit(paths: &Paths, a: &AuditArgs) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let log = ledger.audit_log(a.limit)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&log)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in log {
        println!(
            "{}  {:<12} {:<15} {:<40} {}{}",
            e.at,
            e.who,
            e.action,
            e.target,
            e.outcome,
            e.detail.map(|d| format!(" — {d}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn alerts(paths: &Paths, json: bool) -> Result<ExitCode> {
    let reply = pom::client::request(&paths.server, "GET", "/api/alerts", &[], None)
        .context("is `pom serve` running?")?;
    if reply.status != 200 {
        anyhow::bail!("HTTP {}: {}", reply.status, reply.text());
    }
    let v = reply.json();
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no alert");
    }
    for a in list {
        println!(
            "{}  {:<14} {}",
            a["since"].as_str().unwrap_or_default(),
            a["kind"].as_str().unwrap_or_default(),
            a["message"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_time(flag: &str, t: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("{flag} {t}: not an RFC 3339 time"))?
        .with_timezone(&chrono::Utc))
}

/// `pom replay`: the archived files of the period, hard-linked with their manifests into a
/// hidden folder of `spool/replay/`, which is then renamed into place whole: the daemon sees
/// one complete folder, exactly as if an operator had copied it.
fn replay(paths: &Paths, a: &ReplayArgs) -> Result<ExitCode> {
    match &a.report {
        Some(ReplayCommand::Report { session, json }) => {
            return replay_report(paths, session, *json);
        }
        Some(ReplayCommand::Cancel { session }) => {
            return act(
                paths,
                &Action::CancelReplay {
                    session: session.clone(),
                },
            );
        }
        None => {}
    }
    let (from, to) = (
        parse_time("--from", a.from.as_deref().unwrap_or_default())?,
        parse_time("--to", a.to.as_deref().unwrap_or_default())?,
    );
    anyhow::ensure!(from < to, "--from must be before --to");
    let speed = match a.speed.as_str() {
        "max" => None,
        n => Some(
            n.parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && v.is_finite())
                .with_context(|| format!("--speed {n}: `max` or a positive number"))?,
        ),
    };
    let ledger = open_ledger(paths)?;
    let files = pom::replay::archived_between(&ledger, from, to, a.channel.as_deref())?;
    anyhow::ensure!(
        !files.is_empty(),
        "no archived file was received in that period"
    );
    let spool = Spool::new(&paths.spool);
    let name = a.name.clone().unwrap_or_else(|| {
        format!(
            "{}_{}",
            from.format("%Y-%m-%dT%H%M"),
            to.format("%Y-%m-%dT%H%M")
        )
    });
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.starts_with('.'),
        "--name {name}: letters, digits, `-`, `_` and `.` only"
    );
    let staging = spool
        .replay()
        .join(format!(".staging-{name}-{}", std::process::id()));
    let mut manifests: std::collections::BTreeMap<PathBuf, String> = Default::default();
    for s in &files {
        let stored = s.stored.clone().unwrap_or_default();
        let rel = Path::new(&stored)
            .strip_prefix("archive")
            .unwrap_or(Path::new(&stored));
        let dest = staging.join(rel);
        let dir = dest.parent().context("stored path")?.to_path_buf();
        if !manifests.contains_key(&dir) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let src = spool.root().join(&stored);
        std::fs::hard_link(&src, &dest)
            .or_else(|_| std::fs::copy(&src, &dest).map(|_| ()))
            .with_context(|| format!("linking {}", src.display()))?;
        manifests
            .entry(dir)
            .or_default()
            .push_str(&pom::archive::manifest_line(s));
    }
    for (dir, text) in &manifests {
        std::fs::write(dir.join(pom::archive::MANIFEST), text)?;
    }
    let session = pom::replay::SessionFile {
        name: Some(name.clone()),
        speed,
        models: (!a.model.is_empty()).then(|| a.model.clone()),
        from: Some(pom::ledger::timestamp(from)),
        to: Some(pom::ledger::timestamp(to)),
        whole: true,
    };
    std::fs::write(
        staging.join(pom::replay::SESSION_FILE),
        toml::to_string(&session)?,
    )?;
    let mut target = spool.replay().join(&name);
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = spool.replay().join(format!("{name}-{n}"));
    }
    std::fs::rename(&staging, &target).context("moving the session folder into place")?;
    eprintln!(
        "replay `{name}`: {} file(s) from {} to {}, speed {}",
        files.len(),
        pom::ledger::timestamp(from),
        pom::ledger::timestamp(to),
        a.speed
    );
    if a.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    // The progress, until the session is done.
    let db = paths.db();
    let start = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Ok(l) = Ledger::open_readonly(&db) else {
            continue;
        };
        let Some(s) = l.session(&name)? else {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "the daemon did not take the session up: is `pom serve` running?"
            );
            continue;
        };
        let total = s.files_total.max(1);
        let width = 30;
        let filled = (s.files_released * width / total) as usize;
        eprint!(
            "\r[{}{}] {}/{} released, {} decided, {} run(s), {}   ",
            "#".repeat(filled),
            ".".repeat(width as usize - filled.min(width as usize)),
            s.files_released,
            s.files_total,
            s.files_decided,
            s.runs,
            s.state
        );
        if s.state == "done" {
            eprintln!();
            println!(
                "{} done: {} file(s), {} run(s)",
                s.id, s.files_decided, s.runs
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn replays(paths: &Paths, json: bool) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let sessions = ledger.sessions()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        println!("no replay session");
    }
    for s in sessions {
        println!(
            "{:<34} {:<24} {:<10} {:>7}/{:<7} released {:>7} decided {:>5} run(s)  {}",
            s.id,
            s.name,
            s.state,
            s.files_released,
            s.files_total,
            s.files_decided,
            s.runs,
            match s.speed {
                Some(v) => format!("speed {v}"),
                None => "speed max".into(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn replay_report(paths: &Paths, session: &str, json: bool) -> Result<ExitCode> {
    let ledger = open_ledger(paths)?;
    let s = ledger
        .session(session)?
        .with_context(|| format!("no replay session `{session}`"))?;
    let Some(report) = &s.report else {
        anyhow::bail!(
            "{} is {}: its report is made when it is done ({} of {} file(s) released)",
            s.id,
            s.state,
            s.files_released,
            s.files_total
        );
    };
    let path = paths.spool.join(report);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    if json {
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let r: serde_json::Value = serde_json::from_str(&text)?;
    println!(
        "replay {} `{}`: {} output pair(s) matched, {} identical, {} missing, {} extra; {} run(s) mirror no original",
        s.id,
        s.name,
        r["matched"],
        r["identical"],
        r["missing"],
        r["extra"],
        r["unmirrored_runs"].as_array().map_or(0, Vec::len)
    );
    for d in r["differing_series"].as_array().into_iter().flatten() {
        println!("  differs: {}", d.as_str().unwrap_or_default());
    }
    println!("page: {}", path.with_extension("html").display());
    Ok(ExitCode::SUCCESS)
}
