//! Model declarations: `rules/models/<name>.toml`, one file per model, parsed then compiled.
//!
//! A model is an external program (POM never computes): its command as argv (no shell) with
//! placeholders for the run folder and run file, named input slots, the channel its outputs
//! re-enter on, when it runs (the trigger), and how (timeout, retries, concurrency, priority,
//! environment, executor). The file's name is the model's name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::content::{ContentFilter, compile_filter};
use crate::config::problems::Problem;

/// Placeholders a command may use; each is replaced by a path when the run starts.
pub const PLACEHOLDERS: &[&str] = &["{run_dir}", "{run_file}", "{input_dir}", "{output_dir}"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default)]
    description: String,
    command: Spanned<Vec<String>>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<RawSlot>>,
    outputs: Option<Spanned<RawOutputs>>,
    diagnostics: Option<Spanned<String>>,
    time0: Option<Spanned<RawTime0>>,
    state: Option<Spanned<RawState>>,
    trigger: Spanned<RawTrigger>,
    timeout: Option<Spanned<String>>,
    retries: Option<RawRetries>,
    concurrency: Option<usize>,
    /// How long its run folders are kept after the run ended (`90d`); absent: for ever.
    keep: Option<Spanned<String>>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    env: BTreeMap<String, String>,
    executor: Option<Spanned<String>>,
    slurm: Option<Spanned<RawSlurm>>,
    #[serde(default)]
    paused: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlurm {
    partition: Option<String>,
    account: Option<String>,
    #[serde(default)]
    sbatch_args: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    formats: Vec<String>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default = "yes")]
    required: bool,
    #[serde(rename = "where", default)]
    filter: BTreeMap<String, String>,
    file: Option<String>,
    #[serde(rename = "forecastDate")]
    forecast_date: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputs {
    channel: String,
    #[serde(default)]
    formats: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    file: Option<String>,
    files: Option<Vec<String>>,
    description: Option<String>,
    max_age: Option<String>,
    cold: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime0 {
    from: Option<String>,
    slot: Option<String>,
    round: Option<String>,
    period: Option<[String; 2]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    kind: String,
    window: Option<String>,
    count: Option<usize>,
    wait: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetries {
    max: u32,
    backoff: Option<String>,
}

/// When a model runs.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Once for each routed input.
    Arrival,
    /// When every required slot is filled within the window (counted from the first arrival).
    Join {
        /// How long the first input waits for the others.
        window: Duration,
    },
    /// Up to `count` files, or whatever arrived `wait` after the first one.
    Batch {
        /// Largest batch.
        count: usize,
        /// Longest wait after the first file.
        wait: Duration,
    },
    /// At the times of a cron pattern in a time zone; time0 is the scheduled time, and each slot
    /// gets its latest input.
    Schedule {
        /// The pattern as written.
        pattern: String,
        /// The compiled pattern.
        cron: Box<croner::Cron>,
        /// The zone the pattern is read in.
        zone: chrono_tz::Tz,
    },
}

impl Trigger {
    /// The trigger's kind, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Arrival => "arrival",
            Trigger::Join { .. } => "join",
            Trigger::Batch { .. } => "batch",
            Trigger::Schedule { .. } => "schedule",
        }
    }

    /// The first scheduled time strictly after `after`, for a schedule trigger.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let Trigger::Schedule { cron, zone, .. } = self else {
            return None;
        };
        cron.find_next_occurrence(&after.with_timezone(zone), false)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

/// One input slot.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Slot name.
    pub name: String,
    /// Accepted formats.
    pub formats: Vec<String>,
    /// Accepted versions (empty: any the catalog accepts).
    pub versions: Vec<String>,
    /// Whether a run needs it.
    pub required: bool,
    /// Content the file must hold.
    pub filter: Vec<ContentFilter>,
    /// The name (a path under `input/`) the model reads this slot's file under, when it expects
    /// one; otherwise its files keep their producers' names. Several PI time series delivered
    /// to such a slot are merged into that one file.
    pub file: Option<String>,
    /// Whether the copy the model gets has the run's time0 as its `forecastDate`
    /// (`forecastDate = "time0"`; PI time series only; the archived original is never changed).
    pub forecast_date_is_time0: bool,
}

impl Slot {
    /// Whether a file fits this slot: its format and version, and the content the slot asks for.
    /// Pure: `content` is the file's bytes, read by the caller when the slot asks about content
    /// (a content test without them is not satisfied).
    pub fn accepts(&self, format: &str, version: &str, content: Option<&[u8]>) -> bool {
        if !self.formats.iter().any(|f| f == format) {
            return false;
        }
        if !self.versions.is_empty() && !self.versions.iter().any(|v| v == version) {
            return false;
        }
        if self.filter.is_empty() {
            return true;
        }
        let filters: Vec<&ContentFilter> = self.filter.iter().collect();
        content.is_some_and(|bytes| {
            crate::config::content::content_matches(bytes, &filters)
                .iter()
                .all(|&f| f)
        })
    }
}

/// Retries after a failed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Further attempts after the first.
    pub max: u32,
    /// Wait before the first retry; doubled at each further one.
    pub backoff: Duration,
}

/// Where a run executes. Each kind is an implementation of [`crate::chain::executor::Executor`];
/// a kind without one is refused when the rules are compiled, so that no model is accepted that
/// would then never run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executor {
    /// A process group on this machine.
    Local,
    /// A batch job on a Slurm cluster that shares the spool's file system.
    Slurm(SlurmJob),
}

impl Executor {
    /// `local` or `slurm`.
    pub fn name(&self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Slurm(_) => "slurm",
        }
    }
}

/// How a model's runs are submitted to Slurm (`[slurm]` in its declaration). The time limit is
/// the model's timeout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlurmJob {
    /// `--partition`; the cluster's default when none.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// Further `sbatch` arguments, as written (`--mem=4G`, `--qos=high`).
    pub sbatch_args: Vec<String>,
}

/// A compiled model declaration.
#[derive(Debug, Clone)]
pub struct Model {
    /// Name (the file's stem).
    pub name: String,
    /// For people.
    pub description: String,
    /// argv, with placeholders.
    pub command: Vec<String>,
    /// Input slots by name.
    pub inputs: BTreeMap<String, Slot>,
    /// What of `output/` re-enters the spool, and on which channel.
    pub outputs: Option<Outputs>,
    /// Where the model writes its PI diagnostics, relative to the run folder (`diag.xml` unless
    /// declared, as `output/diag.xml` for a model adapted to Delft-FEWS).
    pub diagnostics: String,
    /// How its runs' time0 and period are set.
    pub time0: Time0,
    /// The state its runs save for the next (a warm start), if it keeps one.
    pub state: Option<StateRule>,
    /// When it runs.
    pub trigger: Trigger,
    /// Longest run.
    pub timeout: Duration,
    /// Retries.
    pub retries: Retries,
    /// Runs at once.
    pub concurrency: usize,
    /// How long a run folder is kept after its run ended; `None`: for ever.
    pub keep: Option<Duration>,
    /// Higher runs first.
    pub priority: i32,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Where it runs.
    pub executor: Executor,
    /// Declared paused (operators can also pause it at run time).
    pub paused: bool,
}

/// The files of a run's `output/` that are its outputs: those whose name matches one of `files`
/// (all when none is given) and whose format is one of `formats` (any when none is given). The
/// others stay in the run folder, reported on the run.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Channel they re-enter on.
    pub channel: String,
    /// Formats accepted (catalog names); empty: any.
    pub formats: Vec<String>,
    /// Name patterns as written (globs on the file name); empty: every file.
    pub files: Vec<String>,
    /// The patterns compiled.
    pub matcher: globset::GlobSet,
}

impl Outputs {
    /// Whether a file of `output/` named `name` is selected by its name.
    pub fn selects_name(&self, name: &str) -> bool {
        self.files.is_empty() || self.matcher.is_match(name)
    }

    /// Whether a file of format `format` (none if not recognised) is selected by its format.
    pub fn selects_format(&self, format: Option<&str>) -> bool {
        self.formats.is_empty() || format.is_some_and(|f| self.formats.iter().any(|x| x == f))
    }
}

/// How a model's runs get their time0 and period, as Delft-FEWS sets them. A run of a scheduled
/// model takes its scheduled time, a retry or rerun its run's, an operator's trigger the time0
/// given; otherwise `source` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Time0 {
    /// Where time0 comes from.
    pub source: Time0Source,
    /// The clock's time is rounded down to this cardinal step (`1h`: on the hour), as Delft-FEWS
    /// does by default; none: to the second.
    pub round: Option<Duration>,
    /// The run's period: from time0 minus the first, to time0 plus the second.
    pub period: (Duration, Duration),
}

/// Where a run's time0 comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Time0Source {
    /// The time0 of the run that produced an input, when one did (one forecast, one time0 along
    /// the chain), else the clock.
    Chain,
    /// The clock.
    Clock,
    /// A PI time series delivered to `slot`: its `forecastDate`, else the time of its last
    /// value that is not missing.
    Input {
        /// The slot.
        slot: String,
    },
}

impl Default for Time0 {
    fn default() -> Self {
        Time0 {
            source: Time0Source::Chain,
            round: None,
            period: (
                Duration::from_secs(2 * 86_400),
                Duration::from_secs(2 * 86_400),
            ),
        }
    }
}

/// `-2d` or `+3d`: a signed duration, in seconds.
fn parse_offset(text: &str, sign: char) -> Result<Duration, String> {
    let t = text.trim();
    let rest = t.strip_prefix(sign).unwrap_or(t);
    if rest.starts_with(['+', '-']) {
        return Err(format!(
            "`{text}`: the period goes from `-D` before time0 to `+D` after it"
        ));
    }
    parse_duration(rest)
}

/// A model's warm state: the files a run writes under `output/` (a path, or globs), given to the
/// next run at the same place under `input/` when a state valid at or before its time0 and not
/// older than `max_age` exists, else the `cold` state when declared. Its valid time is the run's
/// time0, or the `dateTime` of the PI state description the model writes.
#[derive(Debug, Clone)]
pub struct StateRule {
    /// The state's files, as declared: paths or globs under `output/` (and `input/`).
    pub files: Vec<String>,
    /// The one file declared with `file = "..."`: where a cold state file goes.
    pub file: Option<String>,
    /// The PI state description (`pi_state.xsd`) the model writes, under `output/`: its
    /// `dateTime` is the state's valid time. It is saved with the state, and named in the run
    /// file as `outputStateDescriptionFile` (and `inputStateDescriptionFile` for the next run).
    pub description: Option<String>,
    /// The oldest state a run may start from, counted back from its time0.
    pub max_age: Option<Duration>,
    /// The cold state, absolute (declared relative to the rules folder): a file, or a folder
    /// whose files are given as they lie.
    pub cold: Option<PathBuf>,
    /// `files` compiled: matched against paths relative to `output/`.
    matcher: globset::GlobSet,
}

impl StateRule {
    /// Whether `rel`, a path under `output/`, is part of the state.
    pub fn selects(&self, rel: &str) -> bool {
        self.matcher.is_match(rel) || self.description.as_deref() == Some(rel)
    }
}

/// Where a model writes its diagnostics when it does not say: `diag.xml` in the run folder.
pub const DEFAULT_DIAGNOSTICS: &str = "diag.xml";

/// Whether `rel` is a plain relative path inside the run folder: components that are each a
/// safe name (no `..`, no absolute path, no empty component).
fn inside_run_folder(rel: &str) -> bool {
    !rel.is_empty() && rel.split('/').all(crate::fs::safe_component)
}

/// Default run timeout: one hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest duration a rule may give (timeouts, windows, backoffs, waits, cadences): 366 days.
/// Anything longer is a typing error, and would overflow dates once added to them.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Parses a duration such as `500ms`, `30s`, `10m`, `2h`, `1d`, at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 10m, 2h"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}` is not a duration such as 30s, 10m, 2h")),
    };
    match n.checked_mul(ms).map(Duration::from_millis) {
        Some(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "`{text}` is longer than the longest duration a rule may give (366d)"
        )),
    }
}

/// Shortest retention a rule may give: a day (a shorter one is a typing error).
pub const MIN_RETENTION: Duration = Duration::from_secs(86_400);
/// Longest retention a rule may give: a hundred years.
pub const MAX_RETENTION: Duration = Duration::from_secs(36_500 * 86_400);

/// Parses a retention (`keep = "400d"`): days (`d`) or years of 365 days (`y`), from a day to a
/// hundred years.
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let wrong = || format!("`{text}` is not a retention such as 400d or 10y");
    let n: u64 = n.parse().map_err(|_| wrong())?;
    let days = match unit.trim() {
        "d" => n,
        "y" => n.checked_mul(365).ok_or_else(wrong)?,
        _ => return Err(wrong()),
    };
    match days.checked_mul(86_400).map(Duration::from_secs) {
        Some(d) if (MIN_RETENTION..=MAX_RETENTION).contains(&d) => Ok(d),
        _ => Err(format!("`{text}`: a retention is from 1d to 100y (36500d)")),
    }
}

/// Why a model's command cannot be started, as `pom check` sees it: a path that is not an
/// executable file, or a name that no folder of `path` (the `PATH` the daemon will run with)
/// holds as an executable. `None` when it can be found.
pub fn command_not_found(program: &str, path: Option<&std::ffi::OsStr>) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.is_empty() {
        return Some("the command is empty".into());
    }
    if program.contains('/') {
        return (!executable(Path::new(program)))
            .then(|| format!("command `{program}` is not an executable file"));
    }
    let found = path
        .map(|p| std::env::split_paths(p).any(|d| executable(&d.join(program))))
        .unwrap_or(false);
    (!found).then(|| format!("command `{program}` is not found on the PATH"))
}

impl Model {
    /// Compiles one model file; problems are added to `problems`.
    pub fn compile(
        name: &str,
        file: &Path,
        text: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Model> {
        let raw: RawModel = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem::from_toml(file, text, &e));
                return None;
            }
        };
        let before = problems.len();
        let mut at = |offset: usize, message: String| {
            problems.push(Problem::at(
                file,
                text,
                Some(offset),
                format!("model `{name}`: {message}"),
            ));
        };
        if raw.command.get_ref().is_empty() {
            at(raw.command.span().start, "`command` is empty".into());
        }
        for arg in raw.command.get_ref() {
            let mut rest = arg.as_str();
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else {
                    break;
                };
                let ph = &rest[open..open + close + 1];
                if !PLACEHOLDERS.contains(&ph) {
                    at(
                        raw.command.span().start,
                        format!(
                            "unknown placeholder {ph} (known: {})",
                            PLACEHOLDERS.join(", ")
                        ),
                    );
                }
                rest = &rest[open + close + 1..];
            }
        }
        let mut inputs = BTreeMap::new();
        for (slot, raw_slot) in raw.inputs {
            let span = raw_slot.span().start;
            let s = raw_slot.into_inner();
            if s.formats.is_empty() {
                at(span, format!("input `{slot}` accepts no format"));
            }
            if let Some(f) = s.file.as_deref().filter(|f| !inside_run_folder(f)) {
                at(
                    span,
                    format!(
                        "input `{slot}`: file `{f}` is not a plain path inside `input/` \
                         (such as `timeseries_import.xml`)"
                    ),
                );
            }
            match s.forecast_date.as_deref() {
                None | Some("time0") => {}
                Some(other) => at(
                    span,
                    format!("input `{slot}`: forecastDate = \"{other}\" (only \"time0\" is known)"),
                ),
            }
            if s.forecast_date.is_some() && s.formats.iter().any(|f| f != "pi-timeseries") {
                at(
                    span,
                    format!("input `{slot}`: forecastDate is written into PI time series only"),
                );
            }
            let mut filter = Vec::new();
            for (path, value) in s.filter {
                match compile_filter(&path, &value) {
                    Ok(f) => filter.push(f),
                    Err(e) => at(span, format!("input `{slot}`: {e}")),
                }
            }
            inputs.insert(
                slot.clone(),
                Slot {
                    name: slot,
                    formats: s.formats,
                    versions: s.versions,
                    required: s.required,
                    filter,
                    file: s.file,
                    forecast_date_is_time0: s.forecast_date.is_some(),
                },
            );
        }
        let tspan = raw.trigger.span().start;
        let t = raw.trigger.into_inner();
        let mut duration = |field: &str, v: Option<String>, default: Option<Duration>| match v
            .map(|v| parse_duration(&v))
        {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                at(tspan, format!("trigger {field}: {e}"));
                None
            }
            None => {
                if default.is_none() {
                    at(tspan, format!("a {} trigger needs `{field}`", t.kind));
                }
                default
            }
        };
        let trigger = match t.kind.as_str() {
            "arrival" => Some(Trigger::Arrival),
            "join" => {
                duration("window", t.window.clone(), None).map(|window| Trigger::Join { window })
            }
            "batch" => {
                let wait = duration("wait", t.wait.clone(), None);
                let count = t.count.filter(|&c| c > 0);
                match (count, wait) {
                    (Some(count), Some(wait)) => Some(Trigger::Batch { count, wait }),
                    (None, _) => {
                        at(tspan, "a batch trigger needs `count` (at least 1)".into());
                        None
                    }
                    _ => None,
                }
            }
            "schedule" => {
                let zone = match t
                    .timezone
                    .as_deref()
                    .unwrap_or("UTC")
                    .parse::<chrono_tz::Tz>()
                {
                    Ok(z) => Some(z),
                    Err(_) => {
                        at(
                            tspan,
                            format!(
                                "unknown time zone `{}`",
                                t.timezone.clone().unwrap_or_default()
                            ),
                        );
                        None
                    }
                };
                let pattern = t.cron.clone().unwrap_or_default();
                let cron = match croner::Cron::from_str(&pattern) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        at(tspan, format!("cron `{pattern}`: {e}"));
                        None
                    }
                };
                match (zone, cron) {
                    (Some(zone), Some(cron)) => Some(Trigger::Schedule {
                        pattern,
                        cron: Box::new(cron),
                        zone,
                    }),
                    _ => None,
                }
            }
            other => {
                at(
                    tspan,
                    format!("trigger kind `{other}` is not one of arrival, join, batch, schedule"),
                );
                None
            }
        };
        // A slot that names its file takes one file, or PI time series that are merged into it.
        if matches!(trigger, Some(Trigger::Batch { .. })) {
            for s in inputs.values().filter(|s| s.file.is_some()) {
                if s.formats.iter().any(|f| f != "pi-timeseries") {
                    at(
                        tspan,
                        format!(
                            "input `{}` names its file, and a batch gives it several: only PI \
                             time series (`pi-timeseries`) can be merged into one file",
                            s.name
                        ),
                    );
                }
            }
        }
        let mut named: BTreeMap<&str, &str> = BTreeMap::new();
        for s in inputs.values() {
            if let Some(f) = s.file.as_deref()
                && let Some(other) = named.insert(f, &s.name)
            {
                at(
                    0,
                    format!("inputs `{other}` and `{}` both name the file `{f}`", s.name),
                );
            }
        }
        if matches!(trigger, Some(Trigger::Join { .. })) && !inputs.values().any(|s| s.required) {
            at(
                tspan,
                "a join trigger needs at least one required input".into(),
            );
        }
        let timeout = match raw.timeout {
            Some(t) => match parse_duration(t.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    at(t.span().start, format!("timeout: {e}"));
                    DEFAULT_TIMEOUT
                }
            },
            None => DEFAULT_TIMEOUT,
        };
        let keep = raw.keep.and_then(|k| match parse_retention(k.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                at(k.span().start, format!("keep: {e}"));
                None
            }
        });
        let retries = match raw.retries {
            Some(r) => Retries {
                max: r.max,
                backoff: match r.backoff.map(|b| parse_duration(&b)) {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        at(0, format!("retries backoff: {e}"));
                        Duration::ZERO
                    }
                    None => Duration::from_secs(30),
                },
            },
            None => Retries {
                max: 0,
                backoff: Duration::from_secs(30),
            },
        };
        let executor = match raw.executor.as_ref().map(|e| e.get_ref().as_str()) {
            None | Some("local") => {
                if let Some(sl) = &raw.slurm {
                    at(
                        sl.span().start,
                        "`[slurm]` is only for `executor = \"slurm\"`".into(),
                    );
                }
                Executor::Local
            }
            Some("slurm") => {
                let job = raw.slurm.as_ref().map(|s| s.get_ref());
                let args = job.map(|j| j.sbatch_args.clone()).unwrap_or_default();
                for a in &args {
                    // What POM sets itself: a model cannot take the run's place, name or
                    // output over, nor run it somewhere else than its run folder.
                    let owned = [
                        "--parsable",
                        "--chdir",
                        "-D",
                        "--output",
                        "-o",
                        "--error",
                        "-e",
                        "--job-name",
                        "-J",
                        "--time",
                        "-t",
                        "--wrap",
                        "--export",
                    ];
                    let name = a.split('=').next().unwrap_or(a);
                    if owned.contains(&name) || !a.starts_with('-') {
                        let span = raw.slurm.as_ref().map_or(0, |s| s.span().start);
                        at(
                            span,
                            format!(
                                "sbatch argument `{a}` is not allowed: POM sets the job's \
                                 name, folder, output, time limit and environment itself, and \
                                 each argument must be one `--option=value`"
                            ),
                        );
                    }
                }
                Executor::Slurm(SlurmJob {
                    partition: job.and_then(|j| j.partition.clone()),
                    account: job.and_then(|j| j.account.clone()),
                    sbatch_args: args,
                })
            }
            Some(other) => {
                let span = raw.executor.as_ref().map_or(0, |e| e.span().start);
                at(
                    span,
                    format!("executor `{other}` is neither `local` nor `slurm`"),
                );
                Executor::Local
            }
        };
        if raw.concurrency == Some(0) {
            at(0, "`concurrency` must be at least 1".into());
        }
        let diagnostics = match &raw.diagnostics {
            Some(d) if !inside_run_folder(d.get_ref()) => {
                at(
                    d.span().start,
                    format!(
                        "diagnostics `{}` is not a plain path inside the run folder \
                         (such as `output/diag.xml`)",
                        d.get_ref()
                    ),
                );
                DEFAULT_DIAGNOSTICS.to_string()
            }
            Some(d) => d.get_ref().clone(),
            None => DEFAULT_DIAGNOSTICS.to_string(),
        };
        let time0 = match raw.time0 {
            None => Time0::default(),
            Some(t) => {
                let span = t.span().start;
                let t = t.into_inner();
                let source = match (t.from.as_deref(), t.slot) {
                    (None | Some("chain"), None) => Time0Source::Chain,
                    (Some("clock"), None) => Time0Source::Clock,
                    (Some("input"), Some(slot)) => {
                        if !inputs.contains_key(&slot) {
                            at(span, format!("time0 from input `{slot}`: no such input"));
                        }
                        Time0Source::Input { slot }
                    }
                    (Some("input"), None) => {
                        at(span, "time0 from `input` needs `slot`".into());
                        Time0Source::Chain
                    }
                    (_, Some(_)) => {
                        at(span, "time0 `slot` goes with from = \"input\"".into());
                        Time0Source::Chain
                    }
                    (Some(other), None) => {
                        at(
                            span,
                            format!("time0 from `{other}` is not one of chain, clock, input"),
                        );
                        Time0Source::Chain
                    }
                };
                let mut time0 = Time0 {
                    source,
                    ..Time0::default()
                };
                if let Some(r) = t.round {
                    match parse_duration(&r) {
                        Ok(d) if d >= Duration::from_secs(1) && 86_400 % d.as_secs() == 0 => {
                            time0.round = Some(d);
                        }
                        Ok(_) => at(
                            span,
                            format!(
                                "time0 round `{r}` is not a cardinal step of a day (such as 15m, 1h, 6h)"
                            ),
                        ),
                        Err(e) => at(span, format!("time0 round: {e}")),
                    }
                }
                if let Some([before, after]) = t.period {
                    match (parse_offset(&before, '-'), parse_offset(&after, '+')) {
                        (Ok(b), Ok(a)) => time0.period = (b, a),
                        (Err(e), _) | (_, Err(e)) => at(span, format!("time0 period: {e}")),
                    }
                }
                time0
            }
        };
        let state = raw.state.map(|st| {
            let span = st.span().start;
            let st = st.into_inner();
            let files = match (&st.file, st.files) {
                (Some(f), None) => vec![f.clone()],
                (None, Some(fs)) if !fs.is_empty() => fs,
                _ => {
                    at(
                        span,
                        "state: give `file` (one path) or `files` (paths or globs), one of them"
                            .into(),
                    );
                    Vec::new()
                }
            };
            let mut builder = globset::GlobSetBuilder::new();
            for f in &files {
                // A glob's literal parts are checked as a path: no `..`, nothing absolute.
                if !inside_run_folder(f) {
                    at(
                        span,
                        format!(
                            "state file `{f}` is not a plain path (it is read under input/ and \
                             written under output/)"
                        ),
                    );
                    continue;
                }
                match globset::GlobBuilder::new(f).literal_separator(true).build() {
                    Ok(g) => {
                        builder.add(g);
                    }
                    Err(e) => at(span, format!("state files `{f}`: {e}")),
                }
            }
            if let Some(d) = st.description.as_deref().filter(|d| !inside_run_folder(d)) {
                at(
                    span,
                    format!("state description `{d}` is not a plain path under output/"),
                );
            }
            let max_age = st.max_age.and_then(|m| match parse_duration(&m) {
                Ok(d) => Some(d),
                Err(e) => {
                    at(span, format!("state max_age: {e}"));
                    None
                }
            });
            // Relative to the rules folder: the model file sits in `rules/models/`.
            let rules_dir = file
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."));
            let cold = st.cold.map(|c| {
                let c = c.trim_end_matches('/');
                if !inside_run_folder(c) {
                    at(
                        span,
                        format!("cold state `{c}` is not a plain path inside the rules folder"),
                    );
                }
                rules_dir.join(c)
            });
            StateRule {
                files,
                file: st.file,
                description: st.description,
                max_age,
                cold,
                matcher: builder
                    .build()
                    .unwrap_or_else(|_| globset::GlobSet::empty()),
            }
        });
        let outputs = raw.outputs.map(|o| {
            let span = o.span().start;
            let o = o.into_inner();
            let mut builder = globset::GlobSetBuilder::new();
            for pattern in &o.files {
                match globset::GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                {
                    Ok(g) => {
                        builder.add(g);
                    }
                    Err(e) => at(span, format!("outputs files `{pattern}`: {e}")),
                }
            }
            let matcher = builder
                .build()
                .unwrap_or_else(|_| globset::GlobSet::empty());
            Outputs {
                channel: o.channel,
                formats: o.formats,
                files: o.files,
                matcher,
            }
        });
        if problems.len() > before {
            return None;
        }
        Some(Model {
            name: name.to_string(),
            description: raw.description,
            command: raw.command.into_inner(),
            inputs,
            outputs,
            diagnostics,
            time0,
            state,
            trigger: trigger?,
            timeout,
            retries,
            concurrency: raw.concurrency.unwrap_or(1),
            keep,
            priority: raw.priority,
            env: raw.env,
            executor,
            paused: raw.paused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn compile(text: &str) -> Result<Model, Vec<Problem>> {
        let mut p = Vec::new();
        Model::compile("m", Path::new("m.toml"), text, &mut p).ok_or(p)
    }

    #[test]
    fn retentions_are_days_or_years_from_a_day_to_a_century() {
        assert_eq!(
            parse_retention("400d"),
            Ok(Duration::from_secs(400 * 86_400))
        );
        assert_eq!(
            parse_retention("10y"),
            Ok(Duration::from_secs(3650 * 86_400))
        );
        for bad in [
            "12h",
            "0d",
            "101y",
            "400",
            "d",
            "99999999999999999999d",
            "5y3d",
        ] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("ten minutes").is_err());
    }

    #[test]
    fn durations_that_would_overflow_are_refused_at_compile_time() {
        assert_eq!(parse_duration("366d"), Ok(MAX_DURATION));
        assert!(parse_duration("367d").is_err());
        assert!(parse_duration("100000000d").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn a_schedule_in_paris_follows_daylight_saving() {
        let m = compile(
            "command = [\"run\", \"{run_file}\"]\n[trigger]\nkind = \"schedule\"\ncron = \"0 6 * * *\"\ntimezone = \"Europe/Paris\"\n",
        )
        .unwrap();
        // 06:00 in Paris is 05:00 UTC before the change of 2026-03-29, 04:00 UTC after it.
        let before = chrono::Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        let first = m.trigger.next_after(before).unwrap();
        assert_eq!(
            first,
            chrono::Utc.with_ymd_and_hms(2026, 3, 29, 4, 0, 0).unwrap()
        );
        let earlier = chrono::Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap();
        assert_eq!(
            m.trigger.next_after(earlier).unwrap(),
            chrono::Utc.with_ymd_and_hms(2026, 3, 28, 5, 0, 0).unwrap()
        );
    }

    #[test]
    fn every_problem_of_a_model_is_reported() {
        let p = compile(
            "command = [\"run\", \"{nowhere}\"]\ntimeout = \"soon\"\nexecutor = \"cloud\"\n[trigger]\nkind = \"batch\"\nwait = \"1m\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 4, "{text:#?}");
        assert!(text.iter().any(|t| t.contains("{nowhere}")));
        assert!(text.iter().any(|t| t.contains("count")));
    }

    #[test]
    fn a_slurm_model_names_its_partition_account_and_extra_arguments() {
        let m = compile(
            "command = [\"run\"]\nexecutor = \"slurm\"\n[slurm]\npartition = \"hydro\"\n\
             account = \"vigicrues\"\nsbatch_args = [\"--mem=4G\"]\n[trigger]\nkind = \"arrival\"\n",
        )
        .unwrap();
        assert_eq!(
            m.executor,
            Executor::Slurm(SlurmJob {
                partition: Some("hydro".into()),
                account: Some("vigicrues".into()),
                sbatch_args: vec!["--mem=4G".into()],
            })
        );
        let p = compile(
            "command = [\"run\"]\nexecutor = \"slurm\"\n[slurm]\nsbatch_args = [\"--output=/tmp/x\"]\n\
             [trigger]\nkind = \"arrival\"\n",
        )
        .unwrap_err();
        assert!(
            p[0].to_string()
                .contains("`--output=/tmp/x` is not allowed"),
            "{p:?}"
        );
        let p = compile(
            "command = [\"run\"]\n[slurm]\npartition = \"hydro\"\n[trigger]\nkind = \"arrival\"\n",
        )
        .unwrap_err();
        assert!(
            p[0].to_string().contains("only for `executor = \"slurm\"`"),
            "{p:?}"
        );
    }

    #[test]
    fn diagnostics_stay_inside_the_run_folder_and_output_patterns_must_compile() {
        for bad in [
            "../diag.xml",
            "/etc/diag.xml",
            "output//diag.xml",
            "output/../../x",
        ] {
            let p = compile(&format!(
                "command = [\"run\"]\ndiagnostics = \"{bad}\"\n[trigger]\nkind = \"arrival\"\n"
            ))
            .unwrap_err();
            assert!(
                p[0].to_string()
                    .contains("not a plain path inside the run folder"),
                "{bad}: {p:?}"
            );
        }
        let m = compile(
            "command = [\"run\"]\ndiagnostics = \"output/diag.xml\"\n\
             [outputs]\nchannel = \"c\"\nfiles = [\"timeseries_*.xml\"]\n\
             [trigger]\nkind = \"arrival\"\n",
        )
        .unwrap();
        assert_eq!(m.diagnostics, "output/diag.xml");
        let o = m.outputs.unwrap();
        assert!(o.selects_name("timeseries_export.xml"));
        assert!(!o.selects_name("diag.xml"));
        assert!(o.selects_format(None), "no formats declared: any");
        let p = compile(
            "command = [\"run\"]\n[outputs]\nchannel = \"c\"\nfiles = [\"a[\"]\n\
             [trigger]\nkind = \"arrival\"\n",
        )
        .unwrap_err();
        assert!(p[0].to_string().contains("outputs files `a[`"), "{p:?}");
    }

    #[test]
    fn a_slot_that_names_its_file_takes_one_file_unless_pi_time_series_are_merged() {
        let batch = "[trigger]\nkind = \"batch\"\ncount = 3\nwait = \"1h\"\n";
        let m = compile(&format!(
            "command = [\"run\"]\n[inputs.obs]\nformats = [\"pi-timeseries\"]\n\
             file = \"import/timeseries_import.xml\"\n{batch}"
        ))
        .unwrap();
        assert_eq!(
            m.inputs["obs"].file.as_deref(),
            Some("import/timeseries_import.xml")
        );
        let p = compile(&format!(
            "command = [\"run\"]\n[inputs.obs]\nformats = [\"sandre-hydrometrie\"]\n\
             file = \"obs.xml\"\n{batch}"
        ))
        .unwrap_err();
        assert!(p[0].to_string().contains("only PI time series"), "{p:?}");
        let p = compile(
            "command = [\"run\"]\n[inputs.a]\nformats = [\"pi-timeseries\"]\nfile = \"x.xml\"\n\
             [inputs.b]\nformats = [\"pi-timeseries\"]\nfile = \"x.xml\"\n\
             [trigger]\nkind = \"arrival\"\n",
        )
        .unwrap_err();
        assert!(
            p[0].to_string().contains("both name the file `x.xml`"),
            "{p:?}"
        );
        let p = compile(
            "command = [\"run\"]\n[inputs.a]\nformats = [\"pi-timeseries\"]\nfile = \"../x.xml\"\n\
             [trigger]\nkind = \"arrival\"\n",
        )
        .unwrap_err();
        assert!(
            p[0].to_string()
                .contains("not a plain path inside `input/`"),
            "{p:?}"
        );
    }

    #[test]
    fn time0_rules_are_checked_when_compiled() {
        let with = |t: &str| {
            compile(&format!(
                "command = [\"run\"]\n[inputs.obs]\nformats = [\"pi-timeseries\"]\n\
                 [time0]\n{t}\n[trigger]\nkind = \"arrival\"\n"
            ))
        };
        let m = with("from = \"clock\"\nround = \"1h\"\nperiod = [\"-2d\", \"+3d\"]").unwrap();
        assert_eq!(m.time0.source, Time0Source::Clock);
        assert_eq!(m.time0.round, Some(Duration::from_secs(3600)));
        assert_eq!(
            m.time0.period,
            (
                Duration::from_secs(2 * 86_400),
                Duration::from_secs(3 * 86_400)
            )
        );
        let m = with("from = \"input\"\nslot = \"obs\"").unwrap();
        assert_eq!(m.time0.source, Time0Source::Input { slot: "obs".into() });
        for (bad, says) in [
            ("round = \"7m\"", "not a cardinal step"),
            ("from = \"input\"\nslot = \"rain\"", "no such input"),
            ("from = \"input\"", "needs `slot`"),
            ("from = \"sundial\"", "not one of chain, clock, input"),
            ("period = [\"+2d\", \"+3d\"]", "the period goes from"),
        ] {
            let p = with(bad).unwrap_err();
            assert!(p[0].to_string().contains(says), "{bad}: {p:?}");
        }
        assert_eq!(
            compile("command = [\"run\"]\n[trigger]\nkind = \"arrival\"\n")
                .unwrap()
                .time0,
            Time0::default()
        );
    }

    #[test]
    fn a_state_is_a_plain_file_and_its_cold_state_sits_in_the_rules_folder() {
        let mut p = Vec::new();
        let m = Model::compile(
            "m",
            Path::new("rules/models/m.toml"),
            "command = [\"run\"]\n[state]\nfile = \"state.xml\"\nmax_age = \"2d\"\n\
             cold = \"states/m_cold.xml\"\n[trigger]\nkind = \"arrival\"\n",
            &mut p,
        )
        .unwrap();
        let st = m.state.unwrap();
        assert_eq!(st.files, ["state.xml"]);
        assert!(st.selects("state.xml") && !st.selects("other.xml"));
        assert_eq!(st.max_age, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(st.cold, Some(PathBuf::from("rules/states/m_cold.xml")));
        let several = Model::compile(
            "m",
            Path::new("rules/models/m.toml"),
            "command = [\"run\"]\n[state]\nfiles = [\"states/*.nc\"]\ndescription = \"state.xml\"\n\
             [trigger]\nkind = \"arrival\"\n",
            &mut p,
        )
        .unwrap()
        .state
        .unwrap();
        assert!(several.selects("states/q.nc") && several.selects("state.xml"));
        assert!(!several.selects("states/deeper/q.nc") && !several.selects("q.nc"));
        for neither in ["max_age = \"1d\"", "file = \"a\"\nfiles = [\"b\"]"] {
            let p = compile(&format!(
                "command = [\"run\"]\n[state]\n{neither}\n[trigger]\nkind = \"arrival\"\n"
            ))
            .unwrap_err();
            assert!(p[0].to_string().contains("one of them"), "{neither}: {p:?}");
        }
        for bad in [
            "file = \"../state.xml\"",
            "files = [\"/states/*\"]",
            "file = \"s.xml\"\ncold = \"/etc/passwd\"",
        ] {
            let p = compile(&format!(
                "command = [\"run\"]\n[state]\n{bad}\n[trigger]\nkind = \"arrival\"\n"
            ))
            .unwrap_err();
            assert!(
                p[0].to_string().contains("not a plain path"),
                "{bad}: {p:?}"
            );
        }
    }
}
