//! The `pom` command line: the arguments of every verb (`Cli`), and one file per group of verbs:
//! `serve` (the daemon), `inspect` (the verbs that read), `act` (the verbs that act through the
//! daemon's API), `replay` (replay sessions).

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
mod act;
mod http;
mod inspect;
mod keep;
mod replay;
mod serve;

use act::*;
use inspect::*;
use replay::*;
use serve::*;

#[derive(Parser)]
#[command(version, about)]
pub(super) struct Cli {
    #[command(flatten)]
    paths: Paths,
    /// Show times in this machine's time zone, with their offset (default: UTC).
    #[arg(long, global = true)]
    local: bool,
    #[command(subcommand)]
    command: Command,
}

/// Whether tables show local times (`--local`); set once, at start.
static LOCAL_TIMES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// A time as the tables show it, saying its zone: UTC as the ledger keeps it (`…Z`), or with
/// `--local` this machine's time with its offset (`2026-11-30 23:54:17 +01:00`). Anything that
/// is not a time is shown as it is.
pub(super) fn shown_time(t: &str) -> String {
    if !LOCAL_TIMES.get().copied().unwrap_or(false) {
        return t.to_string();
    }
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(at) => at
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        Err(_) => t.to_string(),
    }
}

/// The zone the tables' times are in, for their headers.
pub(super) fn zone() -> &'static str {
    if LOCAL_TIMES.get().copied().unwrap_or(false) {
        "local"
    } else {
        "UTC"
    }
}

/// Where things are. Every path has a flag and an environment variable.
#[derive(Args, Clone)]
pub(super) struct Paths {
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
pub(super) enum Command {
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
    /// What an edit of the rules would change, without running anything: the rules in force
    /// (--in-force, default rules/) and the edited ones (--rules DIR) decide for the archived
    /// files of a period, and the differences are
    /// listed (routes, deliveries, publications, files unrouted, dropped, held or refused, the
    /// runs that would lose or gain an input), each with examples.
    Impact(ImpactArgs),
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
    Cancel(RunArg),
    /// Retry an ended, unsuccessful run with the same inputs.
    Retry(RunArg),
    /// Run a run again (same inputs, same time0) as a new first attempt.
    Rerun(RunArg),
    /// Run a model now with the latest input of each slot.
    Trigger(TriggerArgs),
    /// Keep an archived file from its models until released.
    Hold(FileArg),
    /// Release a held file.
    Release(FileArg),
    /// Put a rejected file back into its channel after it was fixed (in place in rejected/, or
    /// given with --fixed): a new submission linked to the original.
    Reinject(ReinjectArgs),
    /// Route archived files again under the rules in force (after a rule was fixed): the files
    /// named, or with --unrouted every unrouted file (received since --since, on --channel).
    Reroute(RerouteArgs),
    /// The audit log of operators' actions, newest first.
    Audit(AuditArgs),
    /// Alerts in force.
    Alerts(JsonArg),
    /// Replay the past: re-inject the archived files of a period (a replay session), and show
    /// its progress; `pom replay report SESSION` shows the comparison with the original runs.
    Replay(ReplayArgs),
    /// Replay sessions, newest first, with their progress.
    Replays(JsonArg),
    /// A consistent copy of the ledger into FILE, while the daemon runs (SQLite's online
    /// backup), then its integrity check.
    Backup(BackupArgs),
    /// Put a backup in place of the ledger (the daemon stopped): checked first, the replaced
    /// ledger kept; archived files it does not know go back to incoming/ as new arrivals, and
    /// files it knows that are missing are listed.
    Restore(RestoreArgs),
}

#[derive(Args)]
pub(super) struct BackupArgs {
    /// The backup file to write (replaced if it exists).
    file: PathBuf,
}

#[derive(Args)]
pub(super) struct RestoreArgs {
    /// The backup file (from `pom backup`).
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct ReplayArgs {
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
pub(super) enum ReplayCommand {
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
pub(super) struct TargetArgs {
    /// `model` or `channel`.
    #[arg(value_parser = ["model", "channel"])]
    kind: String,
    /// Its name.
    name: String,
}

#[derive(Args)]
pub(super) struct RunArg {
    /// The run's id (as `pom runs` lists it).
    id: String,
}

#[derive(Args)]
pub(super) struct FileArg {
    /// The file's id (as `pom files` lists it).
    id: String,
}

#[derive(Args)]
pub(super) struct TriggerArgs {
    /// Model name.
    model: String,
    /// time0, RFC 3339 [default: now].
    #[arg(long)]
    time0: Option<String>,
}

#[derive(Args)]
pub(super) struct RerouteArgs {
    /// File ids.
    #[arg(required_unless_present = "unrouted")]
    files: Vec<String>,
    /// Every unrouted file (received since --since, on --channel).
    #[arg(long)]
    unrouted: bool,
    /// Only unrouted files of this channel.
    #[arg(long, requires = "unrouted")]
    channel: Option<String>,
    /// Only unrouted files received at or after this time (RFC 3339).
    #[arg(long, requires = "unrouted")]
    since: Option<String>,
}

#[derive(Args)]
pub(super) struct ReinjectArgs {
    /// The rejected file's id.
    id: String,
    /// The fixed file [default: the file in rejected/, fixed in place].
    #[arg(long)]
    fixed: Option<PathBuf>,
}

#[derive(Args)]
pub(super) struct AuditArgs {
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct ShowArgs {
    /// A run id or a file (submission) id.
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct RunsArgs {
    /// Only runs of this model.
    #[arg(long)]
    model: Option<String>,
    /// Only runs in this state (queued, running, succeeded, failed, timed_out, cancelled,
    /// interrupted).
    #[arg(long)]
    state: Option<String>,
    /// Operational runs (the default), replay runs, or all.
    #[arg(long, default_value = "operational", value_parser = parse_traffic)]
    mode: pom::ledger::Traffic,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct RouteArgs {
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
pub(super) struct ImpactArgs {
    /// The rules in force (the edited ones are given with --rules).
    #[arg(long, default_value = "rules")]
    in_force: PathBuf,
    /// Archived files received since (RFC 3339).
    #[arg(long)]
    since: String,
    /// Received before (RFC 3339) [default: now].
    #[arg(long)]
    until: Option<String>,
    /// Examples kept of each kind.
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// Then replay the period as a session routed by the edited rules (the models run as in
    /// force), wait for it, and compare its forecasts with the original ones.
    #[arg(long)]
    replay: bool,
    /// The replay session's name [default: impact-<since>].
    #[arg(long, requires = "replay")]
    name: Option<String>,
    /// Print JSON (with --replay: the impact and the replay's report in one object).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct ServeArgs {
    /// A copy of the rules folder being edited, shown with its problems or its impact on the
    /// rule edit page before it is put in force [default: the rules folder's name + `.next`].
    #[arg(long, env = "POM_STAGED_RULES")]
    staged_rules: Option<PathBuf>,
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
    /// Run as root all the same (a trial machine, a container). Refused otherwise: files
    /// and runs made by root would be out of reach of the service's own user.
    #[arg(long, env = "POM_ALLOW_ROOT", value_parser = clap::builder::BoolishValueParser::new())]
    allow_root: bool,
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
    /// Seconds between two polls of Slurm for the runs on the cluster: one `squeue` (and at most
    /// one `sacct`) for all of them.
    #[arg(long, env = "POM_SLURM_POLL", default_value_t = 10.0)]
    slurm_poll: f64,
}

#[derive(Args)]
pub(super) struct LimitArgs {
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
pub(super) struct ValidateArgs {
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
pub(super) struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct FilesArgs {
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
    /// Operational files (the default), replayed files, or all.
    #[arg(long, default_value = "operational", value_parser = parse_traffic)]
    mode: pom::ledger::Traffic,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `--mode`: operational, replay or all.
fn parse_traffic(s: &str) -> Result<pom::ledger::Traffic, String> {
    s.parse()
}

/// Parses the command line and runs the verb.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or the journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cli = Cli::parse();
    let _ = LOCAL_TIMES.set(cli.local);
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
        Command::Impact(a) => impact(&cli.paths, a),
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
        Command::Reroute(a) => act(
            &cli.paths,
            &Action::Reroute {
                files: a.files.clone(),
                unrouted: a.unrouted,
                channel: a.channel.clone(),
                since: a.since.clone(),
            },
        ),
        Command::Audit(a) => audit(&cli.paths, a),
        Command::Alerts(a) => alerts(&cli.paths, a.json),
        Command::Replay(a) => replay(&cli.paths, a),
        Command::Replays(a) => replays(&cli.paths, a.json),
        Command::Backup(a) => keep::backup(&cli.paths, a),
        Command::Restore(a) => keep::restore(&cli.paths, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pom: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A number of seconds from the command line: finite, at least `min`, at most a day.
pub(super) fn seconds(v: f64, min: f64, what: &str) -> Result<Duration> {
    if !(0.0..=86_400.0).contains(&v) {
        anyhow::bail!("{what} {v}: seconds between 0 and 86400");
    }
    Ok(Duration::from_secs_f64(v.max(min)))
}

/// `path` made absolute against the current directory (not resolving links: the operator's
/// path is kept as written, only anchored).
pub(super) fn absolute(path: &Path, what: &str) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{what} {}", path.display()))
}

pub(super) fn open_ledger(paths: &Paths) -> Result<Ledger> {
    let db = paths.db();
    if !db.exists() {
        anyhow::bail!(
            "no ledger at {} (has `pom serve` run with this spool?)",
            db.display()
        );
    }
    Ledger::open_readonly(&db).context("opening the ledger")
}

pub(super) fn load_rules(paths: &Paths) -> Result<RuleSet> {
    RuleSet::load(&paths.rules).map_err(|p| anyhow::anyhow!("{p}"))
}

pub(super) fn parse_time(flag: &str, t: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("{flag} {t}: not an RFC 3339 time"))?
        .with_timezone(&chrono::Utc))
}
