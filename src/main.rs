//! The `pom` command: the daemon and the operator's tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use pom::catalog::Catalog;
use pom::daemon::{Config, Daemon};
use pom::examine::{self, Limits, Verdict};
use pom::ledger::{FileFilter, Ledger, State};
use pom::problems::Problem;
use pom::rules::RuleSet;
use pom::spool::Spool;
use pom::validate::Validator;

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
}

impl Paths {
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
    /// Examining threads [default: number of cores].
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
    let cli = Cli::parse();
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pom: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(paths: &Paths, a: &ServeArgs) -> Result<ExitCode> {
    let signals = block_signals();
    let config = Config {
        spool: paths.spool.clone(),
        rules: paths.rules.clone(),
        schemas: paths.schemas.clone(),
        db: paths.db(),
        workers: a
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        scan_every: Duration::from_secs_f64(a.scan_interval.max(0.1)),
        poll: a.poll.map(|p| Duration::from_secs_f64(p.max(0.05))),
        limits: a.limits.limits(),
        sync: !a.no_sync,
        clock: match &a.clock {
            Some(c) => pom::clock::Clock::parse(c).map_err(|e| anyhow::anyhow!("--clock: {e}"))?,
            None => pom::clock::Clock::System,
        },
    };
    let daemon = Daemon::start(config).context("cannot start")?;
    tracing::info!(spool = %paths.spool.display(), "pom is running");
    let sig = wait_for(&signals);
    tracing::info!(signal = sig, "stopping");
    daemon.stop().context("stopping")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
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
        Ok(r) => println!(
            "rules: {} channel(s), {} model(s), {} route(s), version {}",
            r.channels.len(),
            r.models.len(),
            r.routes.routes.len(),
            &r.version[..12]
        ),
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
                let d = rules.routes.decide(&pom::route::Facts {
                    channel: &a.channel,
                    name: &name,
                    format,
                    version,
                    document: f,
                });
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
            pom::track::RunState::parse(s).with_context(|| format!("unknown run state `{s}`"))?,
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
