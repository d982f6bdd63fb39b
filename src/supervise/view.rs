//! Views: what the supervision pages and the CLI show, read from the ledger, the rules and the
//! board. Every query here is bounded (indexed lookups, `LIMIT`s) so that a page answers in
//! milliseconds with millions of files in the ledger.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::board::{Alert, Board, Pause, Refused};
use crate::config::model::Trigger;
use crate::config::rules::{Completion, RuleSet};
use crate::ledger::runs::RunRow;
use crate::ledger::{FileFilter, Ledger, LedgerError, Submission, timestamp};

/// The overview page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overview {
    /// When it was made.
    pub now: String,
    /// The rules in force.
    pub rules: RulesBrief,
    /// Alerts in force.
    pub alerts: Vec<Alert>,
    /// Channels.
    pub channels: Vec<ChannelView>,
    /// Models.
    pub models: Vec<ModelView>,
    /// Disk use of the spool's areas, as last measured.
    pub disk: crate::board::DiskUse,
    /// What retention has removed.
    pub pruned: Pruned,
    /// The products, and where each stands.
    pub products: Vec<crate::supervise::products::ProductView>,
}

pub use crate::board::Pruned;

/// The rule set in force, briefly.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RulesBrief {
    /// Version (hash).
    pub version: String,
    /// When it was loaded.
    pub loaded_at: String,
    /// A refused edit, while no good edit followed.
    pub refused: Option<Refused>,
}

/// A channel on the overview.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelView {
    /// Name.
    pub name: String,
    /// What feeds it.
    pub title: String,
    /// rename, marker or quiet.
    pub completion: String,
    /// Paused by an operator.
    pub paused: Option<Pause>,
    /// Files waiting in `incoming/` (held by a pause, or not complete yet).
    pub waiting: usize,
    /// Files claimed and being examined.
    pub in_progress: i64,
    /// Queue depth: waiting plus in progress.
    pub queue_depth: i64,
    /// Last file received.
    pub last_arrival: Option<String>,
    /// Expected cadence, seconds.
    pub cadence_s: Option<u64>,
    /// Late: no file within cadence plus grace.
    pub late: bool,
    /// Seconds since the last file.
    pub silent_s: Option<i64>,
    /// Files decided per outcome.
    pub decided: BTreeMap<String, u64>,
}

/// A model on the overview.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelView {
    /// Name.
    pub name: String,
    /// For people.
    pub description: String,
    /// Trigger kind.
    pub trigger: String,
    /// paused, running, failing, waiting (inputs pending) or idle.
    pub state: String,
    /// Paused in its rule file.
    pub paused_in_rules: bool,
    /// Paused by an operator.
    pub paused: Option<Pause>,
    /// Runs in progress.
    pub running: usize,
    /// Deliveries waiting for it.
    pub pending_inputs: i64,
    /// Its last run.
    pub last_run: Option<RunBrief>,
    /// Next scheduled time (schedule trigger).
    pub next_time: Option<String>,
    /// What it is waiting for: each input slot, filled or missing.
    pub slots: Vec<SlotView>,
    /// For a join with an input waiting: when its window closes (the inputs then expire).
    pub window_ends: Option<String>,
}

/// An input slot of a model, as the overview shows what the model waits for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotView {
    /// Slot name.
    pub name: String,
    /// A join runs only once every required slot is filled.
    pub required: bool,
    /// Files waiting in it.
    pub waiting: i64,
    /// When the oldest of them arrived; none: the slot is missing.
    pub since: Option<String>,
}

/// A run, briefly.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunBrief {
    /// Id.
    pub id: String,
    /// State.
    pub state: String,
    /// time0.
    pub time0: String,
    /// When it ended.
    pub ended_at: Option<String>,
}

/// Builds the overview.
pub fn overview(
    reader: &Ledger,
    rules: &RuleSet,
    board: &Board,
    now: DateTime<Utc>,
) -> Result<Overview, LedgerError> {
    let alerts = board.alerts();
    let waiting = board.waiting();
    let paused_channels = board.paused_channels();
    let paused_models = board.paused_models();
    let running = board.running();
    let decided = board.decided();
    let in_progress = reader.in_progress_by_channel()?;
    let channels = rules
        .channels
        .values()
        .map(|c| {
            let last = crate::supervise::alerts::last_arrival(reader, &c.name);
            let w = waiting.get(&c.name).copied().unwrap_or(0);
            let p = in_progress.get(&c.name).copied().unwrap_or(0);
            ChannelView {
                name: c.name.clone(),
                title: c.title.clone(),
                completion: match c.completion {
                    Completion::Rename => "rename",
                    Completion::Marker(_) => "marker",
                    Completion::Quiet(_) => "quiet",
                }
                .into(),
                paused: paused_channels.get(&c.name).cloned(),
                waiting: w,
                in_progress: p,
                queue_depth: w as i64 + p,
                last_arrival: last.map(timestamp),
                cadence_s: c.cadence.map(|(d, _)| d.as_secs()),
                late: alerts
                    .iter()
                    .any(|a| a.kind == "late_feed" && a.subject == c.name),
                silent_s: last.map(|t| (now - t).num_seconds()),
                decided: decided.get(&c.name).cloned().unwrap_or_default(),
            }
        })
        .collect();
    let mut models = Vec::new();
    for m in rules.models.values() {
        let last = reader.last_run(&m.name)?;
        let pending = reader.pending_count(&m.name)?;
        let by_slot = reader.pending_by_slot(&m.name)?;
        let slots: Vec<(&crate::config::model::Slot, Option<DateTime<Utc>>, i64)> = m
            .inputs
            .values()
            .map(|slot| {
                let (n, oldest) = by_slot
                    .get(&slot.name)
                    .map_or((0, None), |(n, id)| (*n, crate::id::ClaimId::parse(id)));
                (slot, oldest.map(|id| id.time()), n)
            })
            .collect();
        let busy = running.get(&m.name).copied().unwrap_or(0);
        let paused = paused_models.get(&m.name).cloned();
        let state = if m.paused || paused.is_some() {
            "paused"
        } else if busy > 0 {
            "running"
        } else if last
            .as_ref()
            .is_some_and(|r| matches!(r.state.name(), "failed" | "timed_out"))
        {
            "failing"
        } else if pending > 0 {
            "waiting"
        } else {
            "idle"
        };
        models.push(ModelView {
            name: m.name.clone(),
            description: m.description.clone(),
            trigger: m.trigger.kind().into(),
            state: state.into(),
            paused_in_rules: m.paused,
            paused,
            running: busy,
            pending_inputs: pending,
            last_run: last.map(|r| RunBrief {
                id: r.id,
                state: r.state.name().into(),
                time0: r.time0,
                ended_at: r.ended_at,
            }),
            next_time: match &m.trigger {
                t @ Trigger::Schedule { .. } => t.next_after(now).map(timestamp),
                _ => None,
            },
            window_ends: match (&m.trigger, slots.iter().filter_map(|s| s.1).min()) {
                (Trigger::Join { window }, Some(first)) => chrono::Duration::from_std(*window)
                    .ok()
                    .map(|w| timestamp(first + w)),
                _ => None,
            },
            slots: slots
                .into_iter()
                .map(|(slot, since, waiting)| SlotView {
                    name: slot.name.clone(),
                    required: slot.required,
                    waiting,
                    since: since.map(timestamp),
                })
                .collect(),
        });
    }
    Ok(Overview {
        now: timestamp(now),
        rules: RulesBrief {
            version: rules.version.clone(),
            loaded_at: board.rules_loaded(),
            refused: board.refused(),
        },
        alerts,
        channels,
        models,
        disk: board.disk(),
        pruned: board.pruned(),
        products: board.products(),
    })
}

/// A run's inputs (slot, submission), each with its file's name, channel and producing run.
fn input_links(reader: &Ledger, inputs: &[(String, String)]) -> Result<Vec<FileLink>, LedgerError> {
    let mut links = Vec::new();
    for (slot, file) in inputs {
        let s = reader.get(file)?;
        links.push(FileLink {
            slot: slot.clone(),
            file: file.clone(),
            name: s
                .as_ref()
                .map(|s| String::from_utf8_lossy(&s.original).into_owned())
                .unwrap_or_default(),
            channel: s.as_ref().map(|s| s.channel.clone()).unwrap_or_default(),
            produced_by: s.and_then(|s| s.produced_by),
        });
    }
    Ok(links)
}

/// A run in full: the run page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunRow,
    /// Its inputs, with their files.
    pub inputs: Vec<FileLink>,
    /// Its outputs: (channel, name, submission it became).
    pub outputs: Vec<OutputLink>,
    /// Runs that produced its inputs (upstream).
    pub upstream: Vec<String>,
    /// Runs that used its outputs (downstream).
    pub downstream: Vec<String>,
    /// The runs that retry or rerun it.
    pub copies: Vec<String>,
    /// The last lines of its standard output.
    pub stdout_tail: String,
    /// The last lines of its standard error.
    pub stderr_tail: String,
}

/// A file as linked from a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileLink {
    /// Input slot.
    pub slot: String,
    /// Submission id.
    pub file: String,
    /// Its original name.
    pub name: String,
    /// Channel.
    pub channel: String,
    /// The run that produced it, if a model did.
    pub produced_by: Option<String>,
}

/// An output of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputLink {
    /// Channel it re-entered on.
    pub channel: String,
    /// File name.
    pub name: String,
    /// The submission it became.
    pub file: Option<String>,
    /// Its state (archived, rejected…).
    pub state: Option<String>,
}

/// Bytes kept of a run's stdout and stderr.
const TAIL: u64 = 8 * 1024;

fn tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > TAIL {
        let _ = f.seek(SeekFrom::Start(len - TAIL));
    }
    let mut buf = Vec::new();
    let _ = f.take(TAIL).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if len > TAIL {
        // From the first whole line.
        text.split_once('\n')
            .map(|x| x.1.to_string())
            .unwrap_or(text)
    } else {
        text
    }
}

/// One run with its lineage and the tails of its output.
pub fn run_detail(
    reader: &Ledger,
    spool: &Path,
    id: &str,
) -> Result<Option<RunDetail>, LedgerError> {
    let Some(mut run) = reader.run(id)? else {
        return Ok(None);
    };
    run.inputs = reader.run_inputs(id)?;
    let inputs = input_links(reader, &run.inputs)?;
    let mut upstream = Vec::new();
    for p in inputs.iter().filter_map(|i| i.produced_by.as_ref()) {
        if !upstream.contains(p) {
            upstream.push(p.clone());
        }
    }
    let mut outputs = Vec::new();
    let mut downstream = Vec::new();
    for (channel, name, file) in reader.run_outputs(id)? {
        let state = match &file {
            Some(f) => reader.get(f)?.map(|s| s.state.name().to_string()),
            None => None,
        };
        if let Some(f) = &file {
            for r in reader.runs_using(f)? {
                if !downstream.contains(&r) {
                    downstream.push(r);
                }
            }
        }
        outputs.push(OutputLink {
            channel,
            name,
            file,
            state,
        });
    }
    let copies = reader.retries_of(id)?;
    let dir = spool.join(&run.run_dir);
    Ok(Some(RunDetail {
        stdout_tail: tail(&dir.join("stdout.txt")),
        stderr_tail: tail(&dir.join("stderr.txt")),
        run,
        inputs,
        outputs,
        upstream,
        downstream,
        copies,
    }))
}

/// A file in full: the file page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileDetail {
    /// The submission.
    pub file: Submission,
    /// The run that produced it.
    pub produced_by: Option<String>,
    /// That run's inputs (upstream).
    pub produced_from: Vec<FileLink>,
    /// Models it was delivered to, and the runs that used it (downstream).
    pub deliveries: Vec<Delivery>,
    /// Submissions that re-inject it.
    pub reinjected_as: Vec<String>,
    /// For an unrouted file, the nearest rules under the rules in force, and why each does not
    /// take it (see [`explain_unrouted`]).
    pub nearest: Vec<crate::route::Nearness>,
    /// The times an operator routed it again, with the route it had before.
    pub reroutes: Vec<crate::ledger::RerouteRow>,
}

/// A delivery of a file to a model's input slot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    /// Model.
    pub model: String,
    /// Input slot.
    pub slot: String,
    /// pending, consumed, expired…
    pub state: String,
    /// The run that used it, once one did.
    pub run: Option<String>,
}

/// One file with its deliveries and lineage.
pub fn file_detail(reader: &Ledger, id: &str) -> Result<Option<FileDetail>, LedgerError> {
    let Some(file) = reader.get(id)? else {
        return Ok(None);
    };
    let produced_by = file.produced_by.clone();
    let produced_from = match &produced_by {
        Some(run) => input_links(reader, &reader.run_inputs(run)?)?,
        None => Vec::new(),
    };
    let deliveries = reader
        .deliveries_of(id)?
        .into_iter()
        .map(|(model, slot, state, run)| Delivery {
            model,
            slot,
            state,
            run,
        })
        .collect();
    let reinjected_as = reader.reinjections_of(id)?;
    Ok(Some(FileDetail {
        file,
        produced_by,
        produced_from,
        deliveries,
        reinjected_as,
        nearest: Vec::new(),
        reroutes: reader.reroutes_of(id)?,
    }))
}

/// The largest archived file read to explain its routing.
const EXPLAIN_MAX_BYTES: u64 = 64 << 20;

/// Why no rule in force takes an unrouted file: its nearest rules, each condition it fails and
/// on what value, its content read from the archive (confined under the spool, never through a
/// link, at most 64 MiB). Empty for a file that is not unrouted.
pub fn explain_unrouted(
    spool: &std::path::Path,
    rules: &RuleSet,
    file: &Submission,
) -> Vec<crate::route::Nearness> {
    if file.route.as_deref() != Some("unrouted") {
        return Vec::new();
    }
    let content = file.stored.as_deref().and_then(|stored| {
        use std::io::Read;
        let f = crate::fs::open_confined(spool, std::path::Path::new(stored)).ok()?;
        let mut bytes = Vec::new();
        f.take(EXPLAIN_MAX_BYTES).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    });
    let facts = crate::route::Facts {
        channel: &file.channel,
        name: &file.original,
        format: file.format.as_deref().unwrap_or(""),
        version: file.version.as_deref().unwrap_or(""),
    };
    rules.routes.explain(&facts, content.as_deref(), 3)
}

/// Files matching a search, newest first.
pub fn files(reader: &Ledger, filter: &FileFilter) -> Result<Vec<Submission>, LedgerError> {
    reader.files(filter)
}

/// The rules page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RulesView {
    /// Version in force.
    pub version: String,
    /// When it was loaded.
    pub loaded_at: String,
    /// Files it was built from.
    pub files: Vec<String>,
    /// A refused edit, with its errors.
    pub refused: Option<Refused>,
    /// Channels: (name, completion, cadence seconds).
    pub channels: Vec<(String, String, Option<u64>)>,
    /// Models: (name, trigger, inputs, output channel).
    pub models: Vec<(String, String, Vec<String>, Option<String>)>,
    /// Routes: (name, conditions in words, actions in words).
    pub routes: Vec<(String, Vec<String>, Vec<String>)>,
}

/// Builds the rules page.
pub fn rules(rules: &RuleSet, board: &Board, dir: &Path) -> RulesView {
    RulesView {
        version: rules.version.clone(),
        loaded_at: board.rules_loaded(),
        files: rules
            .files
            .iter()
            .map(|f| {
                f.strip_prefix(dir)
                    .unwrap_or(f)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        refused: board.refused(),
        channels: rules
            .channels
            .values()
            .map(|c| {
                let completion = match &c.completion {
                    Completion::Rename => "rename".to_string(),
                    Completion::Marker(s) => format!("marker ({})", s.join(", ")),
                    Completion::Quiet(d) => format!("quiet ({} ms)", d.as_millis()),
                };
                (
                    c.name.clone(),
                    completion,
                    c.cadence.map(|(d, _)| d.as_secs()),
                )
            })
            .collect(),
        models: rules
            .models
            .values()
            .map(|m| {
                (
                    m.name.clone(),
                    m.trigger.kind().to_string(),
                    m.inputs.keys().cloned().collect(),
                    m.outputs.as_ref().map(|o| o.channel.clone()),
                )
            })
            .collect(),
        routes: rules
            .routes
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.conditions(),
                    r.actions.iter().map(ToString::to_string).collect(),
                )
            })
            .collect(),
    }
}

/// Runs of the last hours per model, for the timeline: (model, runs).
pub fn timeline(
    reader: &Ledger,
    now: DateTime<Utc>,
    hours: i64,
) -> Result<BTreeMap<String, Vec<RunBrief>>, LedgerError> {
    let mut out: BTreeMap<String, Vec<RunBrief>> = BTreeMap::new();
    for r in reader.runs_since(now - chrono::Duration::hours(hours))? {
        out.entry(r.model.clone()).or_default().push(RunBrief {
            id: r.id,
            state: r.state.name().into(),
            time0: r.started_at.unwrap_or(r.queued_at),
            ended_at: r.ended_at,
        });
    }
    Ok(out)
}

/// Counts for `/metrics` that the board does not keep: runs per model, state and mode.
pub fn run_counts(reader: &Ledger) -> Result<Vec<(String, String, String, i64)>, LedgerError> {
    reader.runs_by_state()
}

/// Ended runs of a model, for a histogram: count, sum of durations (seconds), and the count at
/// or under each bucket bound.
pub type Durations = (u64, f64, Vec<u64>);

/// Run durations in seconds per model, for `/metrics`.
pub fn run_durations(
    reader: &Ledger,
    buckets: &[f64],
) -> Result<BTreeMap<String, Durations>, LedgerError> {
    let mut out: BTreeMap<String, Durations> = BTreeMap::new();
    for (model, d) in reader.run_durations()? {
        let e = out
            .entry(model)
            .or_insert_with(|| (0, 0.0, vec![0; buckets.len()]));
        e.0 += 1;
        e.1 += d;
        for (i, b) in buckets.iter().enumerate() {
            if d <= *b {
                e.2[i] += 1;
            }
        }
    }
    Ok(out)
}
