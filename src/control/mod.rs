//! Control: what an operator may do to the running chain, the same for the web client and the
//! CLI (both go through the JSON API to [`Control::act`]).
//!
//! Pause and resume a model or a channel; cancel, retry or rerun a run; trigger a model now with
//! a chosen time0; hold and release a file; re-inject a rejected file after it was fixed. Every
//! action, done or refused, is written to the audit log in the ledger with who and when. A
//! refusal is an answer (with its reason), not an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::board::{Board, Pause};
use crate::config::rules::{Completion, RuleSet};
use crate::config::{Shared, current};
use crate::fs::rename_noreplace;
use crate::intake::watch::Hint;
use crate::ledger::audit::{Hold, Release};
use crate::ledger::{State, Writer, timestamp};
use crate::spool::Spool;

/// An operator's action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// No new run of the model starts; its inputs wait.
    PauseModel {
        /// Model name.
        model: String,
    },
    /// The model's waiting inputs are released.
    ResumeModel {
        /// Model name.
        model: String,
    },
    /// No file is taken from the channel's folder; files wait there.
    PauseChannel {
        /// Channel name.
        channel: String,
    },
    /// The channel's waiting files are taken.
    ResumeChannel {
        /// Channel name.
        channel: String,
    },
    /// Stops a running run (its process group is killed), or a retry that is due.
    Cancel {
        /// Run id.
        run: String,
    },
    /// The next attempt of an ended, unsuccessful run, with the same inputs.
    Retry {
        /// Run id.
        run: String,
    },
    /// The same run again (inputs, time0), as a new first attempt.
    Rerun {
        /// Run id.
        run: String,
    },
    /// Runs a model now, with the latest input of each slot.
    Trigger {
        /// Model name.
        model: String,
        /// time0, RFC 3339 [default: now].
        #[serde(default)]
        time0: Option<String>,
    },
    /// Keeps an archived file from its models until released.
    Hold {
        /// Submission id.
        file: String,
    },
    /// Releases a held file (held by an operator or by a rule).
    Release {
        /// Submission id.
        file: String,
    },
    /// Puts a rejected file back into its channel, fixed: a new submission linked to it.
    Reinject {
        /// Submission id of the rejected file.
        file: String,
        /// The fixed content [default: the file as it is now in `rejected/`, fixed in place].
        #[serde(default)]
        content: Option<String>,
    },
    /// Stops a replay session: no more of its files are released (they stay in its folder),
    /// its queued runs are cancelled.
    CancelReplay {
        /// Session id or name.
        session: String,
    },
    /// Routes archived operational files again under the rules in force (after a rule was
    /// fixed): the files named, and with `unrouted`, every unrouted file received since `since`
    /// (on `channel` if given). Each is a new decision, kept beside the route it had; its
    /// deliveries and publications follow as at an arrival.
    Reroute {
        /// Submission ids.
        #[serde(default)]
        files: Vec<String>,
        /// Also every unrouted file received since `since`.
        #[serde(default)]
        unrouted: bool,
        /// Only unrouted files of this channel.
        #[serde(default)]
        channel: Option<String>,
        /// RFC 3339: unrouted files received at or after it [default: all].
        #[serde(default)]
        since: Option<String>,
    },
}

impl Action {
    /// Stable name, as in the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Action::PauseModel { .. } => "pause_model",
            Action::ResumeModel { .. } => "resume_model",
            Action::PauseChannel { .. } => "pause_channel",
            Action::ResumeChannel { .. } => "resume_channel",
            Action::Cancel { .. } => "cancel",
            Action::Retry { .. } => "retry",
            Action::Rerun { .. } => "rerun",
            Action::Trigger { .. } => "trigger",
            Action::Hold { .. } => "hold",
            Action::Release { .. } => "release",
            Action::Reinject { .. } => "reinject",
            Action::CancelReplay { .. } => "cancel_replay",
            Action::Reroute { .. } => "reroute",
        }
    }

    /// What it acts on.
    pub fn target(&self) -> &str {
        match self {
            Action::PauseModel { model }
            | Action::ResumeModel { model }
            | Action::Trigger { model, .. } => model,
            Action::PauseChannel { channel } | Action::ResumeChannel { channel } => channel,
            Action::Cancel { run } | Action::Retry { run } | Action::Rerun { run } => run,
            Action::Hold { file } | Action::Release { file } | Action::Reinject { file, .. } => {
                file
            }
            Action::CancelReplay { session } => session,
            Action::Reroute {
                files, unrouted, ..
            } => match (files.first(), unrouted) {
                (_, true) | (None, _) => "unrouted files",
                (Some(f), false) => f,
            },
        }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The model, channel, run or file does not exist.
    NotFound,
    /// It exists, but the action does not apply to it now.
    Conflict,
    /// The request itself is wrong (a bad time0).
    Invalid,
    /// The daemon could not do it (the ledger or the disk failed).
    Failed,
}

/// The answer to an action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer {
    /// Done.
    Done {
        /// What happened, for a person.
        message: String,
        /// The run it created, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        run: Option<String>,
    },
    /// Refused.
    Refused {
        /// Why, in kind.
        refusal: Refusal,
        /// Why, for a person.
        reason: String,
    },
}

impl Answer {
    /// Done, with a message.
    pub fn done(message: impl Into<String>) -> Answer {
        Answer::Done {
            message: message.into(),
            run: None,
        }
    }

    /// Refused, with a reason.
    pub fn refused(refusal: Refusal, reason: impl Into<String>) -> Answer {
        Answer::Refused {
            refusal,
            reason: reason.into(),
        }
    }

    fn failed(e: impl std::fmt::Display) -> Answer {
        Answer::refused(Refusal::Failed, e.to_string())
    }

    /// `done`, or the reason of the refusal.
    pub fn outcome(&self) -> String {
        match self {
            Answer::Done { .. } => "done".into(),
            Answer::Refused { reason, .. } => format!("refused: {reason}"),
        }
    }
}

/// Run actions, carried out by the dispatcher (it owns the running processes).
#[derive(Debug, Clone)]
pub struct RunCommand {
    /// The action (cancel, retry, rerun or trigger).
    pub action: Action,
    /// Who asked.
    pub who: String,
}

/// What wakes the dispatcher.
pub enum Wake {
    /// A delivered file is in the archive, or a model was resumed: look for work.
    Kick,
    /// An operator's run action, answered on the sender.
    Command(RunCommand, SyncSender<Answer>),
}

/// The control handle: cheap to clone, shared by the web layer.
#[derive(Clone)]
pub struct Control {
    board: Arc<Board>,
    writer: Writer,
    wake: SyncSender<Wake>,
    hints: SyncSender<Hint>,
    spool: Spool,
    rules: Shared<RuleSet>,
    clock: crate::clock::Clock,
}

/// How long an action waits for the dispatcher.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

impl Control {
    /// A control handle over the daemon's parts.
    pub fn new(
        board: Arc<Board>,
        writer: Writer,
        wake: SyncSender<Wake>,
        hints: SyncSender<Hint>,
        spool: Spool,
        rules: Shared<RuleSet>,
        clock: crate::clock::Clock,
    ) -> Self {
        Control {
            board,
            writer,
            wake,
            hints,
            spool,
            rules,
            clock,
        }
    }

    /// Carries out an action for `who`, writes it to the audit log, and tells the clients.
    pub fn act(&self, who: &str, action: Action) -> Answer {
        let now = self.clock.now();
        let answer = self.carry_out(who, &action, now);
        let (name, target) = (action.name(), action.target().to_string());
        let detail = match &action {
            Action::Trigger { time0: Some(t), .. } => Some(format!("time0 {t}")),
            Action::Reinject {
                content: Some(c), ..
            } => Some(format!("fixed content of {} bytes", c.len())),
            _ => None,
        };
        let detail = match (&answer, detail) {
            (Answer::Done { message, .. }, Some(d)) => Some(format!("{d}; {message}")),
            (Answer::Done { message, .. }, None) => Some(message.clone()),
            (_, d) => d,
        };
        let (who2, outcome) = (who.to_string(), answer.outcome());
        let t2 = target.clone();
        if let Err(e) = self
            .writer
            .with(move |l| l.audit(&who2, name, &t2, detail.as_deref(), &outcome, now))
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        tracing::info!(who, action = name, %target, outcome = %answer.outcome(), "operator action");
        self.board.publish("control", &target);
        answer
    }

    fn carry_out(&self, who: &str, action: &Action, now: DateTime<Utc>) -> Answer {
        let rules = current(&self.rules);
        let pause = Pause {
            by: who.to_string(),
            at: timestamp(now),
        };
        match action {
            Action::PauseModel { model } | Action::ResumeModel { model } => self.pause(
                "model",
                model,
                rules.models.contains_key(model),
                matches!(action, Action::PauseModel { .. }).then_some(pause),
            ),
            Action::PauseChannel { channel } | Action::ResumeChannel { channel } => self.pause(
                "channel",
                channel,
                rules.channels.contains_key(channel),
                matches!(action, Action::PauseChannel { .. }).then_some(pause),
            ),
            Action::Cancel { .. }
            | Action::Retry { .. }
            | Action::Rerun { .. }
            | Action::Trigger { .. } => {
                if let Action::Trigger {
                    time0: Some(t),
                    model,
                } = action
                {
                    if DateTime::parse_from_rfc3339(t).is_err() {
                        return Answer::refused(
                            Refusal::Invalid,
                            format!("time0 `{t}` is not an RFC 3339 time"),
                        );
                    }
                    if !rules.models.contains_key(model) {
                        return Answer::refused(Refusal::NotFound, format!("no model `{model}`"));
                    }
                }
                let (tx, rx) = sync_channel(1);
                let command = RunCommand {
                    action: action.clone(),
                    who: who.to_string(),
                };
                if self.wake.send(Wake::Command(command, tx)).is_err() {
                    return Answer::failed("the dispatcher is stopped");
                }
                rx.recv_timeout(ANSWER_WITHIN)
                    .unwrap_or_else(|_| Answer::failed("the dispatcher did not answer"))
            }
            Action::Hold { file } => {
                let (id, by) = (file.clone(), who.to_string());
                match self.writer.with(move |l| l.hold(&id, &by)) {
                    Ok(Hold::NotFound) => {
                        Answer::refused(Refusal::NotFound, format!("no file `{file}`"))
                    }
                    Ok(Hold::AlreadyHeld(holder)) => Answer::refused(
                        Refusal::Conflict,
                        format!("file `{file}` is already held ({holder})"),
                    ),
                    Ok(Hold::NotArchived(state)) => Answer::refused(
                        Refusal::Conflict,
                        format!("file `{file}` is {state}: only an archived file is held"),
                    ),
                    Ok(Hold::Held { waiting }) => Answer::done(format!(
                        "file `{file}` held: {waiting} delivery(ies) wait for its release"
                    )),
                    Err(e) => Answer::failed(e),
                }
            }
            Action::Release { file } => {
                let id = file.clone();
                match self.writer.with(move |l| l.release(&id)) {
                    Ok(Release::NotFound) => {
                        Answer::refused(Refusal::NotFound, format!("no file `{file}`"))
                    }
                    Ok(Release::NotHeld) => {
                        Answer::refused(Refusal::Conflict, format!("file `{file}` is not held"))
                    }
                    Ok(Release::Released { holder }) => {
                        let _ = self.wake.try_send(Wake::Kick);
                        Answer::done(format!("file `{file}` released (it was held by {holder})"))
                    }
                    Err(e) => Answer::failed(e),
                }
            }
            Action::Reinject { file, content } => self.reinject(file, content.as_deref(), &rules),
            Action::Reroute {
                files,
                unrouted,
                channel,
                since,
            } => self.reroute(
                who,
                files,
                *unrouted,
                channel.as_deref(),
                since.as_deref(),
                &rules,
            ),
            Action::CancelReplay { session } => {
                use crate::ledger::sessions::Cancelled;
                let s = session.clone();
                let now = self.clock.now();
                match self.writer.with(move |l| l.cancel_session(&s, now)) {
                    Ok(Cancelled::Done { id, runs }) => Answer::done(format!(
                        "replay session `{id}` cancelled ({runs} queued run(s) cancelled; \
                         files not yet released stay in its folder)"
                    )),
                    Ok(Cancelled::NotFound) => {
                        Answer::refused(Refusal::NotFound, format!("no replay session `{session}`"))
                    }
                    Ok(Cancelled::Over(state)) => Answer::refused(
                        Refusal::Conflict,
                        format!(
                            "session `{session}` is {state}: only a session in progress is cancelled"
                        ),
                    ),
                    Err(e) => Answer::failed(e),
                }
            }
        }
    }

    /// Pauses (`Some`) or resumes (`None`) a model or a channel, and keeps it in the ledger.
    fn pause(&self, kind: &str, name: &str, exists: bool, p: Option<Pause>) -> Answer {
        if !exists {
            return Answer::refused(Refusal::NotFound, format!("no {kind} `{name}`"));
        }
        let pausing = p.is_some();
        let changed = if kind == "model" {
            self.board.set_model_pause(name, p.clone())
        } else {
            self.board.set_channel_pause(name, p.clone())
        };
        if !changed {
            let state = if pausing { "paused" } else { "not paused" };
            return Answer::refused(
                Refusal::Conflict,
                format!("{kind} `{name}` is already {state}"),
            );
        }
        let (k, n) = (kind.to_string(), name.to_string());
        if let Err(e) = self.writer.with(move |l| l.set_pause(&k, &n, p.as_ref())) {
            return Answer::failed(e);
        }
        match (kind, pausing) {
            ("model", true) => Answer::done(format!("model `{name}` paused: its inputs wait")),
            ("model", false) => {
                let _ = self.wake.try_send(Wake::Kick);
                Answer::done(format!("model `{name}` resumed"))
            }
            (_, true) => Answer::done(format!(
                "channel `{name}` paused: its files wait in incoming/{name}/"
            )),
            (_, false) => {
                let _ = self.hints.try_send(Hint::Rescan);
                Answer::done(format!("channel `{name}` resumed"))
            }
        }
    }

    /// Routes archived files again under `rules` (see [`Action::Reroute`]).
    fn reroute(
        &self,
        who: &str,
        files: &[String],
        unrouted: bool,
        channel: Option<&str>,
        since: Option<&str>,
        rules: &RuleSet,
    ) -> Answer {
        /// At most this many files in one action.
        const MOST: usize = 10_000;
        let mut ids: Vec<String> = files.to_vec();
        if unrouted {
            let from = match since {
                None => String::new(),
                Some(t) => match DateTime::parse_from_rfc3339(t) {
                    Ok(t) => crate::id::ClaimId(t.with_timezone(&Utc).timestamp_micros()).text(),
                    Err(_) => {
                        return Answer::refused(
                            Refusal::Invalid,
                            format!("since `{t}` is not an RFC 3339 time"),
                        );
                    }
                },
            };
            let channel = channel.map(String::from);
            match self
                .writer
                .with(move |l| l.unrouted_since(channel.as_deref(), &from, MOST))
            {
                Ok(found) => ids.extend(found),
                Err(e) => return Answer::failed(e),
            }
        }
        if ids.is_empty() {
            return Answer::refused(Refusal::NotFound, "no file to route again");
        }
        if ids.len() > MOST {
            return Answer::refused(
                Refusal::Invalid,
                format!("{} files: at most {MOST} in one action", ids.len()),
            );
        }
        let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
        let mut refused = Vec::new();
        let mut delivered = false;
        for id in &ids {
            match self.reroute_one(who, id, rules) {
                Ok(s) => {
                    delivered |= s
                        .route_actions
                        .iter()
                        .any(|a| matches!(a, crate::config::routes::Action::Deliver { .. }));
                    *outcomes
                        .entry(s.route.clone().unwrap_or_default())
                        .or_default() += 1;
                }
                Err(why) => refused.push(format!("{id}: {why}")),
            }
        }
        if delivered {
            let _ = self.wake.try_send(Wake::Kick);
        }
        self.board
            .publish("files", ids.last().map_or("", String::as_str));
        if outcomes.is_empty() {
            return Answer::refused(Refusal::Conflict, refused.join("; "));
        }
        let done: Vec<String> = outcomes
            .iter()
            .map(|(route, n)| format!("{n} {route}"))
            .collect();
        let mut message = format!(
            "{} file(s) routed again under rules {}: {}",
            outcomes.values().sum::<usize>(),
            &rules.version[..12.min(rules.version.len())],
            done.join(", ")
        );
        if !refused.is_empty() {
            message.push_str(&format!("; not routed: {}", refused.join("; ")));
        }
        Answer::done(message)
    }

    /// Routes one archived file again: its content read from the archive when a rule asks
    /// about it, the decision recorded, its publications made.
    fn reroute_one(
        &self,
        who: &str,
        id: &str,
        rules: &RuleSet,
    ) -> Result<crate::ledger::Submission, String> {
        use crate::ledger::Rerouted;
        let key = id.to_string();
        let row = match self.writer.with(move |l| l.get(&key)) {
            Ok(Some(r)) => r,
            Ok(None) => return Err("no such file".into()),
            Err(e) => return Err(e.to_string()),
        };
        let facts = crate::route::Facts {
            channel: &row.channel,
            name: &row.original,
            format: row.format.as_deref().unwrap_or(""),
            version: row.version.as_deref().unwrap_or(""),
        };
        let content = if crate::route::needs_content(&rules.routes, &rules.models, &facts) {
            let stored = row.stored.clone().unwrap_or_default();
            Some(
                crate::fs::read_confined(
                    self.spool.root(),
                    Path::new(&stored),
                    crate::examine::DEFAULT_MAX_SIZE,
                )
                .map_err(|e| format!("cannot read {stored}: {e}"))?,
            )
        } else {
            None
        };
        let (decision, _misfits) =
            crate::route::route(&rules.routes, &rules.models, &facts, content.as_deref());
        let (key, version, by, now) = (
            id.to_string(),
            rules.version.clone(),
            who.to_string(),
            self.clock.now(),
        );
        let s = match self
            .writer
            .with(move |l| l.reroute(&key, &decision, &version, &by, now))
        {
            Ok(Rerouted::Done(s)) => *s,
            Ok(Rerouted::NotFound) => return Err("no such file".into()),
            Ok(Rerouted::NotArchived(state)) => {
                return Err(format!(
                    "it is {}: only an archived file is routed",
                    state.name()
                ));
            }
            Ok(Rerouted::Replayed) => {
                return Err("a replay's file is routed within its replay".into());
            }
            Err(e) => return Err(e.to_string()),
        };
        crate::archive::publish_archived(&self.spool, &s)
            .map_err(|e| format!("routed, but not published: {e}"))?;
        tracing::info!(file.id = %id, route = s.route.as_deref().unwrap_or(""), who, "file routed again");
        Ok(s)
    }

    fn reinject(&self, file: &str, content: Option<&str>, rules: &RuleSet) -> Answer {
        let id = file.to_string();
        let row = match self.writer.with(move |l| l.get(&id)) {
            Ok(Some(r)) => r,
            Ok(None) => return Answer::refused(Refusal::NotFound, format!("no file `{file}`")),
            Err(e) => return Answer::failed(e),
        };
        if row.state != State::Rejected {
            return Answer::refused(
                Refusal::Conflict,
                format!(
                    "file `{file}` is {}: only a rejected file is re-injected",
                    row.state.name()
                ),
            );
        }
        let Some(channel) = rules.channels.get(&row.channel) else {
            return Answer::refused(
                Refusal::Conflict,
                format!("channel `{}` is no longer in the rules", row.channel),
            );
        };
        let bytes = match content {
            Some(c) => c.as_bytes().to_vec(),
            None => {
                // The stored name comes from the ledger: confined under the spool, and read
                // without following a link planted in `rejected/`.
                let stored = row.stored.clone().unwrap_or_default();
                match crate::fs::read_confined(
                    self.spool.root(),
                    Path::new(&stored),
                    crate::examine::DEFAULT_MAX_SIZE,
                ) {
                    Ok(b) => b,
                    Err(e) => {
                        return Answer::refused(
                            Refusal::Conflict,
                            format!("cannot read {stored}: {e}"),
                        );
                    }
                }
            }
        };
        let (chan, original, origin) = (row.channel.clone(), row.original.clone(), row.id.clone());
        if let Err(e) = self
            .writer
            .with(move |l| l.expect_origin(&chan, &original, &origin))
        {
            return Answer::failed(e);
        }
        let name = reinjected_name(&row.original, file);
        if let Some(session) = &row.session {
            // A replay's file stays in its replay: it comes back through the session's own
            // folder, described by a manifest line, never into operational traffic.
            return match reinject_into_replay(&self.spool, session, &row, &name, &bytes) {
                Ok(at) => Answer::done(format!(
                    "re-injected into replay session {session} as {}",
                    at.display()
                )),
                Err(e) => Answer::failed(format!("cannot re-inject into replay {session}: {e}")),
            };
        }
        match drop_into(
            &self.spool.channel(&row.channel),
            &name,
            &format!("reinject-{file}"),
            &bytes,
            &channel.completion,
        ) {
            Ok(at) => Answer::done(format!(
                "re-injected as incoming/{}/{}",
                row.channel,
                at.display()
            )),
            Err(e) => Answer::failed(format!("cannot write into incoming/{}: {e}", row.channel)),
        }
    }
}

/// Drops a re-injected replay file into `replay/.outputs/<session>/<channel>/` and describes it
/// in that folder's manifest, where the replay loop takes it as a file of the session.
fn reinject_into_replay(
    spool: &Spool,
    session: &str,
    row: &crate::ledger::Submission,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
    if !crate::fs::safe_component(session) || !crate::fs::safe_component(&row.channel) {
        return Err(invalid("the session or channel is not a plain name"));
    }
    let dir = spool
        .replay()
        .join(crate::replay::OUTPUTS)
        .join(session)
        .join(&row.channel);
    std::fs::create_dir_all(&dir)?;
    let tag = format!("reinject-{}", row.id);
    let at = drop_into(&dir, name, &tag, bytes, &Completion::Rename)?;
    let line = crate::archive::ManifestLine {
        id: Some(row.id.clone()),
        file: at.to_string_lossy().into_owned(),
        channel: row.channel.clone(),
        original: String::from_utf8_lossy(&row.original).into_owned(),
        state: Some("archived".into()),
        received_at: row
            .original_at
            .clone()
            .unwrap_or_else(|| timestamp(Utc::now())),
        size: Some(bytes.len() as u64),
        ..Default::default()
    };
    crate::replay::describe(&dir, &line)?;
    Ok(Path::new(crate::replay::OUTPUTS)
        .join(session)
        .join(&row.channel)
        .join(at))
}

/// The name a re-injected file is dropped under, relative to its channel folder: its original
/// name when that is a safe relative path; otherwise (absolute, `..`, control characters: a name
/// from a replay manifest or an unsafe drop) a plain name made from its last part, so that a
/// re-inject never writes outside the channel folder.
pub fn reinjected_name(original: &[u8], id: &str) -> String {
    let text = String::from_utf8_lossy(original);
    if crate::examine::unsafe_name(original).is_none()
        && crate::fs::confined(Path::new("/"), Path::new(&*text)).is_some()
    {
        return text.into_owned();
    }
    let last = text.rsplit('/').next().unwrap_or_default();
    let safe = crate::archive::stored_name(id, last.as_bytes());
    tracing::warn!(original = ?text, name = %safe, "re-inject: the original name is not a safe relative path");
    safe
}

/// Drops `bytes` into a channel folder as `name` (relative, may hold folders), the way a careful
/// upstream does: written under a hidden temporary name, synced, renamed without replacing
/// (a file of that name waiting already keeps its place: this one gets `tag` in front), and
/// released with a marker on marker channels. Returns the name relative to the folder.
pub fn drop_into(
    dir: &Path,
    name: &str,
    tag: &str,
    bytes: &[u8],
    completion: &Completion,
) -> std::io::Result<PathBuf> {
    let target = crate::fs::confined(dir, Path::new(name)).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain relative name"),
        )
    })?;
    let tmp = staged_name(&target, tag);
    std::fs::create_dir_all(tmp.parent().unwrap_or(dir))?;
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    release_staged(dir, &target, tag, completion)
}

/// Where [`drop_into`] stages a file before releasing it: a hidden name beside its target,
/// which intake never takes.
pub fn staged_name(target: &Path, tag: &str) -> PathBuf {
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{tag}.{base}.part"))
}

/// Releases a file staged at [`staged_name`] into its channel: renamed to its name (or
/// `<tag>_<name>` when that is taken), then its marker when the channel wants one. Where it
/// lies, relative to `dir`.
pub fn release_staged(
    dir: &Path,
    target: &Path,
    tag: &str,
    completion: &Completion,
) -> std::io::Result<PathBuf> {
    let tmp = staged_name(target, tag);
    let parent = target.parent().unwrap_or(dir).to_path_buf();
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut at = target.to_path_buf();
    if let Err(e) = rename_noreplace(&tmp, &at) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        at = parent.join(format!("{tag}_{base}"));
        rename_noreplace(&tmp, &at)?;
    }
    if let Completion::Marker(suffixes) = completion
        && let Some(s) = suffixes.first()
    {
        std::fs::write(format!("{}.{s}", at.display()), b"")?;
    }
    Ok(at.strip_prefix(dir).unwrap_or(&at).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinject_never_writes_outside_its_channel_whatever_the_original_name() {
        let dir = tempfile::tempdir().unwrap();
        let channel = dir.path().join("spool/incoming/obs");
        std::fs::create_dir_all(&channel).unwrap();
        for hostile in [
            "/tmp/pom-escape.xml",
            "../../../escape.xml",
            "a/../../escape.xml",
        ] {
            let name = reinjected_name(hostile.as_bytes(), "20260101T000000000000Z");
            let at = drop_into(&channel, &name, "t", b"<a/>", &Completion::Rename).unwrap();
            let written = channel.join(&at);
            assert!(
                written.starts_with(&channel),
                "{hostile} -> {}",
                written.display()
            );
            assert!(written.exists());
        }
        assert!(!dir.path().join("escape.xml").exists());
        assert!(!Path::new("/tmp/pom-escape.xml").exists());
        // A plain name, folders included, is kept as it was dropped.
        assert_eq!(reinjected_name(b"sub/x.xml", "id"), "sub/x.xml");
        // drop_into itself refuses what leaves the folder.
        assert!(drop_into(&channel, "../x.xml", "t", b"", &Completion::Rename).is_err());
        assert!(drop_into(&channel, "/x.xml", "t", b"", &Completion::Rename).is_err());
    }
}
