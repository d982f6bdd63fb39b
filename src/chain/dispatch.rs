//! Dispatch: from deliveries to model runs, on the model's executor.
//!
//! In: files delivered to model input slots (recorded by routing), the models of the rule set.
//! Out: runs — created in the ledger together with the deliveries they consume (so a delivery
//! never feeds two runs), laid out as the model contract says, executed as a process group
//! (killed whole at its timeout, always waited for: no zombies), ended with their exit code and
//! diagnostics, and their outputs put back into the spool on the model's output channel, where
//! they are validated and routed like any file: that is how chains form.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::board::Board;
use crate::chain::contract::{self, Mode, RunPlan};
use crate::chain::executor::{self, Ending, Execution};
use crate::chain::time0;
use crate::chain::trigger::{self, Plan};
use crate::clock::Clock;
use crate::config::catalog::Catalog;
use crate::config::model::{Model, Time0Source, Trigger};
use crate::config::rules::{Completion, RuleSet};
use crate::config::{Shared, current};
use crate::control::{Action, Answer, Refusal, RunCommand, Wake};
use crate::id::{ClaimId, IdGenerator};
use crate::ledger::runs::{NewRun, RunCopy, RunState};
use crate::ledger::{Ledger, LedgerError, Writer};
use crate::spool::Spool;

/// How often the dispatcher looks for work.
const TICK: Duration = Duration::from_millis(100);
/// Most deliveries considered per model and look.
const PENDING_LOOK: usize = 1000;
/// How long a join waits for a file that arrived before its inputs to be decided: longer than
/// any examination, and a file that waits that long (for a passing fault to go) holds no
/// forecast back.
const JOIN_ORDER_WAIT: chrono::Duration = chrono::Duration::minutes(10);

/// For a join, the claims whose decision its pairing waits for: those made from
/// [`JOIN_ORDER_WAIT`] before `now` on. Other triggers take each input as it comes.
fn joined_in_order(model: &Model, now: DateTime<Utc>) -> Option<ClaimId> {
    matches!(model.trigger, Trigger::Join { .. })
        .then(|| ClaimId((now - JOIN_ORDER_WAIT).timestamp_micros()))
}

/// The dispatcher's state.
pub struct Dispatcher {
    spool: Spool,
    rules: Shared<RuleSet>,
    catalog: Shared<Catalog>,
    writer: Writer,
    reader: Ledger,
    ids: IdGenerator,
    running: HashMap<String, usize>,
    cancels: HashMap<String, Arc<AtomicBool>>,
    done_tx: Sender<(String, String)>,
    done_rx: Receiver<(String, String)>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    last_fired: HashMap<String, chrono::DateTime<Utc>>,
    wake: Receiver<Wake>,
    board: Arc<Board>,
}

impl Dispatcher {
    /// A dispatcher reading the ledger at `db` and writing through `writer`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the dispatcher is built from each channel and shared handle it works with"
    )]
    pub fn new(
        spool: Spool,
        rules: Shared<RuleSet>,
        catalog: Shared<Catalog>,
        writer: Writer,
        db: &Path,
        stop: Arc<AtomicBool>,
        clock: Clock,
        wake: Receiver<Wake>,
        board: Arc<Board>,
    ) -> Result<Self, LedgerError> {
        let reader = Ledger::open_readonly(db)?;
        let (done_tx, done_rx) = channel();
        Ok(Dispatcher {
            spool,
            rules,
            catalog,
            writer,
            reader,
            ids: IdGenerator::after(None),
            running: HashMap::new(),
            cancels: HashMap::new(),
            done_tx,
            done_rx,
            stop,
            clock,
            last_fired: HashMap::new(),
            wake,
            board,
        })
    }

    /// Runs until its stop flag is raised; running models are then stopped and their runs
    /// marked interrupted.
    pub fn run(mut self) {
        // A fault here is waited out like any other: the jobs are followed once it passes.
        let mut adopted = false;
        while !self.stop.load(Ordering::Relaxed) {
            if !adopted {
                match self.adopt_jobs() {
                    Ok(()) => adopted = true,
                    Err(e) => self.board.health().fault(
                        "dispatch",
                        Some(format!("cannot re-attach Slurm jobs: {e}")),
                    ),
                }
            }
            while let Ok((model, run)) = self.done_rx.try_recv() {
                if let Some(n) = self.running.get_mut(&model) {
                    *n = n.saturating_sub(1);
                }
                self.cancels.remove(&run);
            }
            self.board.health().beat("dispatch");
            match self.tick() {
                Ok(()) => self.board.health().fault("dispatch", None),
                Err(e) => self.board.health().fault("dispatch", Some(e.to_string())),
            }
            // Woken at once when a delivered file is archived or an operator acts; otherwise a
            // look every TICK (schedules, retries, windows).
            match self.wake.recv_timeout(TICK) {
                Ok(Wake::Command(c, reply)) => {
                    let answer = self.command(c).unwrap_or_else(|e| {
                        Answer::refused(Refusal::Failed, format!("ledger: {e}"))
                    });
                    let _ = reply.send(answer);
                }
                Ok(Wake::Kick) | Err(_) => {}
            }
        }
    }

    /// An operator's run action.
    fn command(&mut self, c: RunCommand) -> Result<Answer, LedgerError> {
        let rules = current(&self.rules);
        let now = self.clock.now();
        let no_model = |m: &str| Answer::refused(Refusal::NotFound, format!("no model `{m}`"));
        let copy = match &c.action {
            Action::Retry { .. } => RunCopy::Retry,
            _ => RunCopy::Rerun,
        };
        match c.action {
            Action::Cancel { run } => {
                let Some(row) = self.reader.run(&run)? else {
                    return Ok(Answer::refused(
                        Refusal::NotFound,
                        format!("no run `{run}`"),
                    ));
                };
                if matches!(row.state, RunState::Queued | RunState::Running)
                    && let Some(flag) = self.cancels.get(&run)
                {
                    flag.store(true, Ordering::Relaxed);
                    return Ok(Answer::done(format!("run `{run}` is being stopped")));
                }
                let id = run.clone();
                if self.writer.with(move |l| l.cancel_retry(&id))? {
                    return Ok(Answer::done(format!(
                        "the retry of run `{run}` is cancelled"
                    )));
                }
                Ok(Answer::refused(
                    Refusal::Conflict,
                    format!("run `{run}` is {}: nothing to cancel", row.state.name()),
                ))
            }
            Action::Retry { run } | Action::Rerun { run } => {
                let Some(row) = self.reader.run(&run)? else {
                    return Ok(Answer::refused(
                        Refusal::NotFound,
                        format!("no run `{run}`"),
                    ));
                };
                let Some(model) = rules.models.get(&row.model) else {
                    return Ok(no_model(&row.model));
                };
                let time0 = ledger_time(&row.time0, now);
                let (new, replay) = self.copy_of(model, &row, time0)?;
                let (id, dir) = (new.id.clone(), new.run_dir.clone());
                let (of, who) = (run.clone(), c.who.clone());
                let created = self
                    .writer
                    .with(move |l| l.create_copy(&of, &new, copy, Some(&who), now))?;
                let Some(inputs) = created else {
                    let why = match copy {
                        RunCopy::Retry => format!(
                            "run `{run}` is {}: only a run that ended without success, and was not retried yet, is retried",
                            row.state.name()
                        ),
                        RunCopy::Rerun => {
                            format!("run `{run}` is {}: it has not ended", row.state.name())
                        }
                    };
                    return Ok(Answer::refused(Refusal::Conflict, why));
                };
                let replay = replay.as_ref().map(|(s, m)| (s.as_str(), m.as_deref()));
                self.launch_in(model, &rules, id.clone(), dir, inputs, time0, replay);
                Ok(Answer::Done {
                    message: format!("run `{id}` started"),
                    run: Some(id),
                })
            }
            Action::Trigger { model, time0 } => {
                let Some(m) = rules.models.get(&model) else {
                    return Ok(no_model(&model));
                };
                let given = match time0.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
                    None => None,
                    Some(Ok(t)) => Some(t.with_timezone(&Utc)),
                    Some(Err(e)) => {
                        return Ok(Answer::refused(Refusal::Invalid, format!("time0: {e}")));
                    }
                };
                let (inputs, missing) = self.latest_inputs(m)?;
                let time0 = match given {
                    Some(t) => t,
                    None => self.time0_for(m, &inputs, now)?,
                };
                if !missing.is_empty() {
                    return Ok(Answer::refused(
                        Refusal::Conflict,
                        format!(
                            "model `{model}` has no input yet for {}",
                            missing.join(", ")
                        ),
                    ));
                }
                let new = self.new_run(m, time0, &inputs);
                let (id, dir) = (new.id.clone(), new.run_dir.clone());
                let who = c.who.clone();
                self.writer
                    .with(move |l| l.create_requested_run(&new, &who, now))?;
                self.launch(m, &rules, id.clone(), dir, inputs, time0);
                Ok(Answer::Done {
                    message: format!(
                        "run `{id}` started with time0 {}",
                        crate::ledger::timestamp(time0)
                    ),
                    run: Some(id),
                })
            }
            other => Ok(Answer::refused(
                Refusal::Invalid,
                format!("`{}` is not a run action", other.name()),
            )),
        }
    }

    fn tick(&mut self) -> Result<(), LedgerError> {
        let rules = current(&self.rules);
        let now = self.clock.now();
        // Failed runs: retry by policy, the wait doubling at each attempt.
        for (id, model, attempt) in self.reader.undecided_failures()? {
            let at = rules
                .models
                .get(&model)
                .and_then(|m| trigger::retry(&m.retries, attempt, now));
            self.writer.with(move |l| l.decide_retry(&id, at))?;
        }
        for (of, model, _) in self.reader.retries_due(now)? {
            let Some(m) = rules.models.get(&model) else {
                continue;
            };
            let busy = self.running.get(&model).copied().unwrap_or(0);
            if m.paused || self.board.model_paused(&model) || busy >= m.concurrency {
                continue;
            }
            self.retry(m, &rules, of)?;
        }
        // Higher priority first: when the machine is short, they get the free slots first.
        let mut models: Vec<&Model> = rules.models.values().collect();
        models.sort_by_key(|m| std::cmp::Reverse(m.priority));
        for model in models {
            if !self.may_start(model) {
                continue;
            }
            let busy = self.running.get(&model.name).copied().unwrap_or(0);
            if matches!(model.trigger, Trigger::Schedule { .. }) {
                self.schedule(model, &rules, now, busy)?;
                continue;
            }
            let free = model.concurrency.saturating_sub(busy);
            let in_order = joined_in_order(model, now);
            let pending =
                self.reader
                    .pending_deliveries(&model.name, None, PENDING_LOOK, in_order)?;
            if pending.is_empty() {
                continue;
            }
            for plan in trigger::plan(model, &pending, now, free) {
                match plan {
                    Plan::Start(inputs) => self.start(model, &rules, inputs)?,
                    Plan::Expire(gone, why) => {
                        tracing::warn!(model = %model.name, files = gone.len(), %why, "inputs expired");
                        let name = model.name.clone();
                        self.writer
                            .with(move |l| l.expire_deliveries(&name, &gone, &why))?;
                    }
                }
            }
        }
        // Replay sessions get what operational traffic left free.
        for (session, only) in crate::ledger::sessions::open_sessions(&self.reader)? {
            let mut models: Vec<&Model> = rules
                .models
                .values()
                .filter(|m| only.as_ref().is_none_or(|o| o.contains(&m.name)))
                .collect();
            models.sort_by_key(|m| std::cmp::Reverse(m.priority));
            for model in models {
                if !self.may_start(model) {
                    continue;
                }
                let busy = self.running.get(&model.name).copied().unwrap_or(0);
                let free = model.concurrency.saturating_sub(busy);
                if free == 0 {
                    continue;
                }
                if matches!(model.trigger, Trigger::Schedule { .. }) {
                    self.schedule_replay(model, &rules, &session)?;
                    continue;
                }
                let pending = self.reader.pending_deliveries(
                    &model.name,
                    Some(&session),
                    PENDING_LOOK,
                    joined_in_order(model, now),
                )?;
                for plan in trigger::plan(model, &pending, now, free) {
                    match plan {
                        Plan::Start(inputs) => {
                            self.start_replay(model, &rules, &session, inputs)?
                        }
                        Plan::Expire(gone, why) => {
                            let name = model.name.clone();
                            self.writer
                                .with(move |l| l.expire_deliveries(&name, &gone, &why))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether runs of a model may start now: not paused (in its rules or by an operator).
    fn may_start(&self, model: &Model) -> bool {
        !model.paused && !self.board.model_paused(&model.name)
    }

    /// A scheduled model in a replay: it fires at the scheduled times of the replayed period, in
    /// order, as the session's clock reaches them, with the inputs as they had arrived by then.
    fn schedule_replay(
        &mut self,
        model: &Model,
        rules: &RuleSet,
        session: &str,
    ) -> Result<(), LedgerError> {
        let Some((from, now)) = self.reader.replay_clock(session)? else {
            return Ok(());
        };
        let key = format!("{session}\u{1f}{}", model.name);
        let last = match self.last_fired.get(&key) {
            Some(t) => *t,
            None => self
                .reader
                .last_scheduled(&model.name, Some(session))?
                .unwrap_or(from - chrono::Duration::microseconds(1)),
        };
        let Some(time0) = model.trigger.next_after(last).filter(|t| *t <= now) else {
            self.last_fired.insert(key, last);
            return Ok(());
        };
        self.last_fired.insert(key, time0);
        let inputs: Vec<crate::ledger::runs::Pending> = self
            .reader
            .latest_inputs_at(&model.name, session, time0)?
            .into_iter()
            .filter(|p| model.inputs.contains_key(&p.slot))
            .collect();
        let missing = model
            .inputs
            .values()
            .any(|s| s.required && !inputs.iter().any(|p| p.slot == s.name));
        if missing {
            tracing::info!(model = %model.name, %session, %time0, "replay: scheduled time skipped, no input had arrived");
            return Ok(());
        }
        let mirrors = self.reader.scheduled_at(&model.name, time0)?;
        let new = self.new_replay_run(model, time0, &inputs, session, mirrors.clone());
        let (id, run_dir_rel) = (new.id.clone(), new.run_dir.clone());
        let created = self.clock.now();
        if self
            .writer
            .with(move |l| l.create_scheduled_run(&new, created))?
        {
            let replay = Some((session, mirrors.as_deref()));
            self.launch_in(model, rules, id, run_dir_rel, inputs, time0, replay);
        }
        Ok(())
    }

    /// A replay run: the original time0 (that of the run it mirrors), in replay mode.
    fn start_replay(
        &mut self,
        model: &Model,
        rules: &RuleSet,
        session: &str,
        inputs: Vec<crate::ledger::runs::Pending>,
    ) -> Result<(), LedgerError> {
        if !self.archived(&inputs) {
            return Ok(());
        }
        let files: Vec<String> = inputs.iter().map(|p| p.submission.clone()).collect();
        let (mirrors, time0) = self.reader.mirror_of(&model.name, &files)?;
        // A model that keeps a state: its replay follows the original's state chain. While the
        // replay's run that mirrors the one the original started from is still to come or to
        // end, this run waits for its state, as the original did (files of a replay may be
        // decided out of order).
        if model.state.is_some()
            && let Some(original) = mirrors.as_deref()
            && let Some(from) = self.reader.run(original)?.and_then(|r| r.state_from)
            && self
                .reader
                .replay_state_coming(session, &model.name, &from)?
        {
            return Ok(());
        }
        let now = self.clock.now();
        let time0 = time0.unwrap_or(now);
        let new = self.new_replay_run(model, time0, &inputs, session, mirrors.clone());
        let (id, run_dir_rel) = (new.id.clone(), new.run_dir.clone());
        if !self.writer.with(move |l| l.create_run(&new, now))? {
            return Ok(());
        }
        let replay = Some((session, mirrors.as_deref()));
        self.launch_in(model, rules, id, run_dir_rel, inputs, time0, replay);
        Ok(())
    }

    fn start(
        &mut self,
        model: &Model,
        rules: &RuleSet,
        inputs: Vec<crate::ledger::runs::Pending>,
    ) -> Result<(), LedgerError> {
        if !self.archived(&inputs) {
            return Ok(());
        }
        let now = self.clock.now();
        let time0 = self.time0_for(model, &inputs, now)?;
        let new = self.new_run(model, time0, &inputs);
        let (id, run_dir_rel) = (new.id.clone(), new.run_dir.clone());
        if !self.writer.with(move |l| l.create_run(&new, now))? {
            return Ok(());
        }
        self.launch(model, rules, id, run_dir_rel, inputs, time0);
        Ok(())
    }

    /// The state a run of `model` at `time0` starts from, for a model that keeps one: the latest
    /// state of its own history valid at or before time0 and not older than its `max_age`; in a
    /// replay with no state of its own yet, the state the original run started from; else the
    /// declared cold state.
    fn state_for(
        &self,
        model: &Model,
        time0: chrono::DateTime<Utc>,
        replay: Option<(&str, Option<&str>)>,
    ) -> Result<Option<StartState>, LedgerError> {
        let Some(rule) = &model.state else {
            return Ok(None);
        };
        let oldest = rule
            .max_age
            .and_then(|a| chrono::Duration::from_std(a).ok())
            .map_or(chrono::DateTime::<Utc>::MIN_UTC, |a| time0 - a);
        let session = replay.map(|r| r.0);
        let mut found = self
            .reader
            .latest_state(&model.name, session, time0, oldest)?;
        if found.is_none()
            && let Some(original) = replay.and_then(|r| r.1)
            && let Some(from) = self.reader.run(original)?.and_then(|r| r.state_from)
        {
            found = self.reader.state_saved_by(&from)?;
        }
        Ok(Some(match found {
            Some(saved) => StartState {
                start: "warm",
                files: self.state_files(rule, &saved),
                from: Some(saved.run),
                valid_at: Some(saved.valid_at),
            },
            None => StartState {
                start: "cold",
                from: None,
                valid_at: None,
                files: rule
                    .cold
                    .as_deref()
                    .map(|c| cold_files(rule, c))
                    .unwrap_or_default(),
            },
        }))
    }

    /// The files of a saved state: (path under `input/`, file). Paths come from the ledger: each
    /// is confined (under `input/`, and under the spool), or left out.
    fn state_files(
        &self,
        rule: &crate::config::model::StateRule,
        saved: &crate::ledger::runs::SavedState,
    ) -> Vec<(String, PathBuf)> {
        let root = self.spool.root();
        let files = if saved.files.is_empty() {
            // Recorded before states had several files: the one declared file.
            rule.file
                .iter()
                .map(|f| (f.clone(), saved.stored.clone()))
                .collect()
        } else {
            saved.files.clone()
        };
        files
            .into_iter()
            .filter(|(rel, _)| crate::fs::confined(Path::new("input"), Path::new(rel)).is_some())
            .filter_map(|(rel, stored)| {
                crate::fs::confined(root, Path::new(&stored)).map(|f| (rel, f))
            })
            .collect()
    }

    /// The time0 of a run of `model` with these inputs started now, as its rule says: what it
    /// needs of the inputs (the time0 of the runs that produced them; the content of a PI input)
    /// is read here and handed to [`time0::choose`].
    fn time0_for(
        &self,
        model: &Model,
        inputs: &[crate::ledger::runs::Pending],
        now: chrono::DateTime<Utc>,
    ) -> Result<chrono::DateTime<Utc>, LedgerError> {
        let mut chain: Option<chrono::DateTime<Utc>> = None;
        for p in inputs {
            let t0 = self
                .reader
                .get(&p.submission)?
                .and_then(|s| s.produced_time0)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
            chain = chain.max(t0);
        }
        let content = match &model.time0.source {
            Time0Source::Input { slot } => inputs
                .iter()
                .filter(|p| &p.slot == slot)
                .max_by(|a, b| a.submission.cmp(&b.submission))
                .and_then(|p| std::fs::read(self.spool.root().join(&p.stored)).ok())
                .and_then(|bytes| time0::content_time(&bytes)),
            _ => None,
        };
        Ok(time0::choose(&model.time0, now, chain, content))
    }

    /// Fires a schedule trigger whose time has come: time0 is the scheduled time, and each slot
    /// gets the latest file delivered to it.
    fn schedule(
        &mut self,
        model: &Model,
        rules: &RuleSet,
        now: chrono::DateTime<Utc>,
        busy: usize,
    ) -> Result<(), LedgerError> {
        let last = match self.last_fired.get(&model.name) {
            Some(t) => *t,
            // First look: from the last time it fired, or from now (the past before the first
            // start is not caught up).
            None => self
                .reader
                .last_scheduled(&model.name, None)?
                .unwrap_or(now),
        };
        self.last_fired.insert(model.name.clone(), last);
        let Some((time0, skipped)) = trigger::schedule_due(model, last, now) else {
            return Ok(());
        };
        self.last_fired.insert(model.name.clone(), time0);
        if skipped > 0 {
            tracing::warn!(model = %model.name, skipped, "scheduled times missed: only the latest fires");
        }
        if busy >= model.concurrency {
            tracing::warn!(model = %model.name, %time0, "scheduled time skipped: the model is still running");
            return Ok(());
        }
        let (inputs, missing) = self.latest_inputs(model)?;
        if !missing.is_empty() {
            tracing::warn!(model = %model.name, %time0, ?missing, "scheduled time skipped: no input yet");
            return Ok(());
        }
        let new = self.new_run(model, time0, &inputs);
        let (id, run_dir_rel) = (new.id.clone(), new.run_dir.clone());
        let created = self.clock.now();
        if self
            .writer
            .with(move |l| l.create_scheduled_run(&new, created))?
        {
            self.launch(model, rules, id, run_dir_rel, inputs, time0);
        }
        Ok(())
    }

    /// The latest file delivered to each slot of a model, and the required slots that have none.
    #[allow(
        clippy::type_complexity,
        reason = "a pair of lists read together, named where it is used"
    )]
    fn latest_inputs<'m>(
        &self,
        model: &'m Model,
    ) -> Result<(Vec<crate::ledger::runs::Pending>, Vec<&'m str>), LedgerError> {
        let inputs: Vec<crate::ledger::runs::Pending> = self
            .reader
            .latest_inputs(&model.name, None)?
            .into_iter()
            .filter(|p| model.inputs.contains_key(&p.slot))
            .collect();
        let missing = model
            .inputs
            .values()
            .filter(|s| s.required && !inputs.iter().any(|p| p.slot == s.name))
            .map(|s| s.name.as_str())
            .collect();
        Ok((inputs, missing))
    }

    /// A run of `model` at `time0` with these inputs: a fresh id and its folder.
    fn new_run(
        &mut self,
        model: &Model,
        time0: chrono::DateTime<Utc>,
        inputs: &[crate::ledger::runs::Pending],
    ) -> NewRun {
        let id = format!("{}-{}", model.name, self.ids.next(self.clock.now()));
        NewRun {
            run_dir: format!("runs/{}/{id}", model.name),
            id,
            model: model.name.clone(),
            trigger: model.trigger.kind().into(),
            time0,
            mode: Mode::Normal.name().into(),
            inputs: inputs
                .iter()
                .map(|p| (p.slot.clone(), p.submission.clone()))
                .collect(),
            session: None,
            mirrors: None,
        }
    }

    /// Whether every input is in the archive already: a delivery is recorded before its file is
    /// moved there, and a run waits for the move.
    fn archived(&self, inputs: &[crate::ledger::runs::Pending]) -> bool {
        inputs
            .iter()
            .all(|p| self.spool.root().join(&p.stored).exists())
    }

    /// A run of a replay session: replay mode, its folder under `runs/replay/<session>/`, and
    /// the original run it mirrors.
    fn new_replay_run(
        &mut self,
        model: &Model,
        time0: chrono::DateTime<Utc>,
        inputs: &[crate::ledger::runs::Pending],
        session: &str,
        mirrors: Option<String>,
    ) -> NewRun {
        let mut new = self.new_run(model, time0, inputs);
        new.mode = Mode::Replay.name().into();
        new.run_dir = format!("runs/replay/{session}/{}/{}", model.name, new.id);
        new.session = Some(session.to_string());
        new.mirrors = mirrors;
        new
    }

    /// Retries a failed run whose retry is due, with the same inputs and the same time0 (and so
    /// the same period): a retry is the same forecast, not a new one.
    fn retry(&mut self, model: &Model, rules: &RuleSet, of: String) -> Result<(), LedgerError> {
        let now = self.clock.now();
        let Some(row) = self.reader.run(&of)? else {
            return Ok(());
        };
        let time0 = ledger_time(&row.time0, now);
        let (new, replay) = self.copy_of(model, &row, time0)?;
        let (id, run_dir_rel) = (new.id.clone(), new.run_dir.clone());
        let of2 = of.clone();
        if let Some(inputs) = self.writer.with(move |l| l.create_retry(&of2, &new, now))? {
            tracing::info!(run.id = %id, retry_of = %of, "retrying");
            let replay = replay.as_ref().map(|(s, m)| (s.as_str(), m.as_deref()));
            self.launch_in(model, rules, id, run_dir_rel, inputs, time0, replay);
        }
        Ok(())
    }

    /// A new run copying `row` (a retry or a rerun): in its replay session when it belongs to
    /// one, mirroring the same original, so that its outputs stay in that replay. With the
    /// session and the run it mirrors, for its launch.
    #[allow(
        clippy::type_complexity,
        reason = "the run, and the replay it belongs to as launch_in takes it"
    )]
    fn copy_of(
        &mut self,
        model: &Model,
        row: &crate::ledger::runs::RunRow,
        time0: chrono::DateTime<Utc>,
    ) -> Result<(NewRun, Option<(String, Option<String>)>), LedgerError> {
        Ok(match &row.session {
            Some(session) => {
                let mirrors = self.reader.mirrors_of(&row.id)?;
                let new = self.new_replay_run(model, time0, &[], session, mirrors.clone());
                (new, Some((session.clone(), mirrors)))
            }
            None => (self.new_run(model, time0, &[]), None),
        })
    }

    fn launch(
        &mut self,
        model: &Model,
        rules: &RuleSet,
        id: String,
        run_dir_rel: String,
        inputs: Vec<crate::ledger::runs::Pending>,
        time0: chrono::DateTime<Utc>,
    ) {
        self.launch_in(model, rules, id, run_dir_rel, inputs, time0, None);
    }

    /// The outputs of the original run a replay run mirrors, by name (a name holding its run's
    /// id is keyed without it): the replay's outputs name them as their originals.
    fn original_outputs(&self, mirrors: Option<&str>) -> HashMap<String, String> {
        let Some(m) = mirrors else {
            return HashMap::new();
        };
        self.reader
            .run_outputs(m)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, name, sub)| sub.map(|s| (name.replace(m, "{run}"), s)))
            .collect()
    }

    /// Launches a run, operational (`session` none) or of a replay session.
    #[allow(
        clippy::too_many_arguments,
        reason = "a run is launched from its model, inputs, session and time0, each its own value"
    )]
    fn launch_in(
        &mut self,
        model: &Model,
        rules: &RuleSet,
        id: String,
        run_dir_rel: String,
        inputs: Vec<crate::ledger::runs::Pending>,
        time0: chrono::DateTime<Utc>,
        replay: Option<(&str, Option<&str>)>,
    ) {
        let session = replay.map(|r| r.0);
        let origins = self.original_outputs(replay.and_then(|r| r.1));
        // A run never starts cold because the ledger could not be read: a fault that passes is
        // waited out (the dispatch stage shown degraded, which raises its alert), one that does
        // not fails the run with the reason.
        let mut backoff = crate::health::Backoff::default();
        let state = loop {
            match self.state_for(model, time0, replay) {
                Ok(state) => break state,
                Err(e) if e.is_transient() && !self.stop.load(Ordering::Relaxed) => {
                    tracing::warn!(run.id = %id, error = %e, "cannot look up the model's state yet");
                    self.board.health().fault(
                        "dispatch",
                        Some(format!("cannot look up the state of {}: {e}", model.name)),
                    );
                    backoff.wait();
                }
                Err(e) => {
                    tracing::error!(run.id = %id, error = %e, "cannot look up the model's state");
                    let why = format!("cannot look up the model's state: {e}");
                    let (run, ended) = (id.clone(), self.clock.now());
                    let _ = self.writer.with(move |l| {
                        l.run_ended(&run, RunState::Failed, None, Some(&why), &[], ended)
                    });
                    self.board.publish("run", &id);
                    return;
                }
            }
        };
        if let Some(s) = &state {
            let (run, start, from, valid) =
                (id.clone(), s.start, s.from.clone(), s.valid_at.clone());
            let _ = self
                .writer
                .with(move |l| l.set_run_state(&run, start, from.as_deref(), valid.as_deref()));
        }
        let plan = RunPlan {
            inputs: {
                // In arrival order (claim ids grow with it). Under the name their slot gives, or
                // else their original names; an original name taken twice (a batch) gets its id
                // in front. Several files under a slot's name are merged into it.
                let mut used = std::collections::HashSet::new();
                let mut inputs: Vec<&crate::ledger::runs::Pending> = inputs.iter().collect();
                inputs.sort_by(|a, b| a.submission.cmp(&b.submission));
                inputs
                    .into_iter()
                    .map(|p| {
                        let stored = self.spool.root().join(&p.stored);
                        if let Some(file) = model.inputs.get(&p.slot).and_then(|s| s.file.clone()) {
                            return (p.slot.clone(), file, stored);
                        }
                        let base = p
                            .original
                            .rsplit(|&b| b == b'/')
                            .next()
                            .unwrap_or(&p.original);
                        let mut name = String::from_utf8_lossy(base).into_owned();
                        if !used.insert(name.clone()) {
                            name = format!("{}_{name}", p.submission);
                            used.insert(name.clone());
                        }
                        (p.slot.clone(), name, stored)
                    })
                    .collect()
            },
            properties: state
                .as_ref()
                .map(|s| [("state".to_string(), s.describe())].into_iter().collect())
                .unwrap_or_default(),
            state: state.map(|s| s.files).unwrap_or_default(),
            forecast_date_slots: model
                .inputs
                .values()
                .filter(|s| s.forecast_date_is_time0)
                .map(|s| s.name.clone())
                .collect(),
            ..base_plan(model, &id, time0, session.is_some())
        };
        self.spawn_job(model, rules, plan, &run_dir_rel, session, origins, None);
    }

    /// Follows the runs on Slurm a previous daemon left running: each job re-attached, never
    /// submitted again.
    fn adopt_jobs(&mut self) -> Result<(), LedgerError> {
        let rules = current(&self.rules);
        // Runs whose model had exited (their exit is recorded: finished, never run again), then
        // Slurm jobs still running (followed until they end).
        let mut left: Vec<(String, Option<u64>, Option<i32>)> = self
            .reader
            .exited_unfinished()?
            .into_iter()
            .map(|(id, code)| (id, None, Some(code)))
            .collect();
        for (id, _, job) in self.reader.slurm_jobs_running()? {
            if !left.iter().any(|(e, ..)| *e == id) {
                left.push((id, Some(job as u64), None));
            }
        }
        for (id, job, code) in left {
            let Some(r) = self.reader.run(&id)? else {
                continue;
            };
            let Some(model) = rules.models.get(&r.model) else {
                tracing::warn!(run.id = %id, model = %r.model, "its model is no longer in the rules: not taken up");
                continue;
            };
            // A name read from the ledger: one path confined under the spool, or no run.
            if crate::fs::confined(self.spool.root(), Path::new(&r.run_dir)).is_none() {
                tracing::error!(run.id = %id, run_dir = %r.run_dir, "the run's folder is not under the spool: not taken up");
                let why = format!("its folder `{}` is not under the spool", r.run_dir);
                let ended = self.clock.now();
                self.writer.with(move |l| {
                    l.run_ended(&id, RunState::Failed, None, Some(&why), &[], ended)
                })?;
                continue;
            }
            let now = self.clock.now();
            let adopt = match (code, job) {
                (Some(code), _) => {
                    tracing::info!(run.id = %id, exit_code = code, "its model had exited before the last daemon stopped: its run is finished, not run again");
                    Adopt::Exited(code)
                }
                (None, job) => {
                    let job = job.unwrap_or_default();
                    tracing::info!(run.id = %id, slurm.job = job, "re-attached to its Slurm job");
                    let since = r.started_at.as_deref().map_or(now, |t| ledger_time(t, now));
                    Adopt::Job(job, since)
                }
            };
            let mirrors = self.reader.mirrors_of(&id)?;
            let origins = self.original_outputs(mirrors.as_deref());
            // Its folder is laid out already: what the end of the run needs of its plan.
            let time0 = ledger_time(&r.time0, now);
            let plan = base_plan(model, &id, time0, r.session.is_some());
            self.spawn_job(
                model,
                &rules,
                plan,
                &r.run_dir,
                r.session.as_deref(),
                origins,
                Some(adopt),
            );
        }
        Ok(())
    }

    /// Starts a run's thread.
    #[allow(
        clippy::too_many_arguments,
        reason = "a run's job is made of its model, plan, folder, session and handles"
    )]
    fn spawn_job(
        &mut self,
        model: &Model,
        rules: &RuleSet,
        plan: RunPlan,
        run_dir_rel: &str,
        session: Option<&str>,
        origins: HashMap<String, String>,
        adopt: Option<Adopt>,
    ) {
        let id = plan.id.clone();
        let time0 = plan.time0;
        *self.running.entry(model.name.clone()).or_default() += 1;
        // The board shows operational work: a replay's runs are on its own views.
        if session.is_none() {
            self.board.count_running(&model.name, 1);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancels.insert(id.clone(), Arc::clone(&cancel));
        let output = model.outputs.as_ref().map(|o| {
            let completion = rules.channels.get(&o.channel).map(|c| c.completion.clone());
            (o.channel.clone(), completion)
        });
        let job = Job {
            dir: self.spool.root().join(run_dir_rel),
            plan,
            model: model.clone(),
            spool: self.spool.clone(),
            writer: self.writer.clone(),
            output,
            stop: Arc::clone(&self.stop),
            cancel,
            board: Arc::clone(&self.board),
            session: session.map(String::from),
            time0,
            origins,
            clock: self.clock,
            catalog: current(&self.catalog),
            adopt,
        };
        let done = self.done_tx.clone();
        let model_name = model.name.clone();
        self.board.publish("run", &id);
        std::thread::Builder::new()
            .name(format!("run-{id}"))
            .spawn(move || {
                job.execute();
                let _ = done.send((model_name, id));
            })
            .expect("spawn run thread");
    }
}

/// A run's plan without inputs, properties or state: what every run of `model` has.
fn base_plan(model: &Model, id: &str, time0: chrono::DateTime<Utc>, replay: bool) -> RunPlan {
    let (start, end) = time0::period(&model.time0, time0);
    RunPlan {
        id: id.to_string(),
        model: model.name.clone(),
        time0,
        start,
        end,
        mode: if replay { Mode::Replay } else { Mode::Normal },
        inputs: Vec::new(),
        properties: Default::default(),
        state: Vec::new(),
        state_description: model.state.as_ref().and_then(|s| s.description.clone()),
        diagnostics: model.diagnostics.clone(),
        forecast_date_slots: Vec::new(),
    }
}

/// The state a run starts from: warm (a state a run of its model saved) or cold.
struct StartState {
    start: &'static str,
    from: Option<String>,
    valid_at: Option<String>,
    /// Its files: (path under `input/`, the file to copy there). None: cold with no cold
    /// state declared.
    files: Vec<(String, PathBuf)>,
}

impl StartState {
    /// What the run file's `state` property says.
    fn describe(&self) -> String {
        match (&self.from, &self.valid_at) {
            (Some(run), Some(at)) => format!("warm from run {run} valid at {at}"),
            _ if !self.files.is_empty() => "cold (the declared cold state)".into(),
            _ => "cold".into(),
        }
    }
}

/// The files of a declared cold state: a file goes where the model's one state `file` is read
/// (else under its own name); a folder gives its regular files as they lie below it. Links are
/// never followed.
fn cold_files(rule: &crate::config::model::StateRule, cold: &Path) -> Vec<(String, PathBuf)> {
    let Ok(meta) = std::fs::symlink_metadata(cold) else {
        return Vec::new();
    };
    if meta.is_file() {
        let name = rule
            .file
            .clone()
            .or_else(|| cold.file_name().map(|n| n.to_string_lossy().into_owned()));
        return name
            .map(|n| vec![(n, cold.to_path_buf())])
            .unwrap_or_default();
    }
    walkdir::WalkDir::new(cold)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e
                .path()
                .strip_prefix(cold)
                .ok()?
                .to_string_lossy()
                .into_owned();
            Some((rel, e.path().to_path_buf()))
        })
        .collect()
}

/// A time as the ledger holds it (a run's time0 for a retry or a rerun of it, its start):
/// `now` only if the ledger's text is not a time, which the ledger never writes.
fn ledger_time(text: &str, now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

/// A run a previous daemon left unfinished, taken up instead of started.
#[derive(Clone, Copy)]
enum Adopt {
    /// On Slurm: its job and when it started, followed until it ends.
    Job(u64, chrono::DateTime<Utc>),
    /// Its model had exited (with this code) before the last daemon recorded the end:
    /// finished from there, never run again.
    Exited(i32),
}

/// How a run ended: its state, exit code, reason and diagnostics.
type Outcome = (
    RunState,
    Option<i32>,
    Option<String>,
    Vec<contract::DiagLine>,
);

struct Job {
    dir: PathBuf,
    plan: RunPlan,
    model: Model,
    spool: Spool,
    writer: Writer,
    output: Option<(String, Option<Completion>)>,
    stop: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    board: Arc<Board>,
    session: Option<String>,
    time0: chrono::DateTime<Utc>,
    origins: HashMap<String, String>,
    /// Where "now" comes from: the run's start and end are stamped with it.
    clock: Clock,
    /// The catalog in force when the run started: the formats of its outputs.
    catalog: Arc<Catalog>,
    /// A run a previous daemon left unfinished: followed or finished instead of started.
    adopt: Option<Adopt>,
}

/// The health stage of the runs' own steps.
const RUNS: &str = "runs";

/// Whether a failed step of a run passes with time: an I/O fault of that kind, or a ledger
/// write that failed for such a fault.
fn transient_io(e: &std::io::Error) -> bool {
    crate::examine::is_transient(e)
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<LedgerError>())
            .is_some_and(LedgerError::is_transient)
}

impl Job {
    fn execute(self) {
        let id = self.plan.id.clone();
        let Some((state, code, reason, mut diag)) = self.run_process() else {
            // Left running on the cluster: the next daemon re-attaches it.
            tracing::info!(run.id = %id, "left running on Slurm, to be re-attached at the next start");
            if self.session.is_none() {
                self.board.count_running(&self.model.name, -1);
            }
            return;
        };
        let leave = || {
            // The daemon stops while a fault lasts: what is done stays recorded (the model's
            // exit, the outputs already put back), and the next daemon finishes the run.
            tracing::info!(run.id = %id, "left for the next start to finish");
            if self.session.is_none() {
                self.board.count_running(&self.model.name, -1);
            }
        };
        let (state, reason) = if state == RunState::Succeeded {
            // Recorded first: a daemon that dies from here on leaves a run its successor
            // finishes, without running the model again.
            let (id2, code2) = (id.clone(), code.unwrap_or(0));
            if self
                .record("record the model's exit", move |l| {
                    l.run_exited(&id2, code2)
                })
                .is_none()
            {
                return leave();
            }
            // Putting the outputs back can be done again: a transient fault (a full disk, no
            // descriptors, a busy ledger) is waited out, never taken for the run's failure.
            let outputs = self.patiently("put the outputs back", transient_io, || {
                let kept = self.put_back_outputs()?;
                self.save_state()?;
                Ok(kept)
            });
            match outputs {
                None => return leave(),
                Some(Ok(kept)) => {
                    diag.extend(kept);
                    (state, reason)
                }
                Some(Err(e)) => (RunState::Failed, Some(format!("outputs: {e}"))),
            }
        } else {
            (state, reason)
        };
        tracing::info!(run.id = %id, state = state.name(), "run ended");
        let id2 = id.clone();
        let ended = self.clock.now();
        let ended = self.record("record the run's end", move |l| {
            l.run_ended(&id2, state, code, reason.as_deref(), &diag, ended)
        });
        if ended.is_none() {
            return leave();
        }
        if self.session.is_none() {
            self.board.count_running(&self.model.name, -1);
        }
        self.board.publish("run", &id);
    }

    /// Runs a step of the run until it succeeds or fails for good: a transient fault is waited
    /// out with a doubling pause (up to 5 s), the `runs` stage shown degraded meanwhile,
    /// which raises its alert. `None` when the daemon stops first: the step is left for its
    /// successor, never recorded as the run's verdict.
    fn patiently<T, E: std::fmt::Display>(
        &self,
        what: &str,
        transient: impl Fn(&E) -> bool,
        mut step: impl FnMut() -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        let health = self.board.health();
        let mut backoff = crate::health::Backoff::default();
        let mut faulted = false;
        loop {
            match step() {
                Err(e) if transient(&e) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    tracing::warn!(run.id = %self.plan.id, error = %e, "cannot {what} yet");
                    let fault = format!("run {}: cannot {what}: {e}", self.plan.id);
                    health.fault(RUNS, Some(fault));
                    faulted = true;
                    backoff.wait();
                }
                done => {
                    if faulted {
                        health.fault(RUNS, None);
                    }
                    return Some(done);
                }
            }
        }
    }

    /// A write of the run's progress to the ledger, [`Job::patiently`]; one that fails for
    /// good is logged (the ledger writer stops the daemon when it cannot go on).
    fn record(
        &self,
        what: &str,
        write: impl FnOnce(&mut Ledger) -> Result<(), LedgerError> + Clone + Send + 'static,
    ) -> Option<()> {
        let done = self.patiently(what, LedgerError::is_transient, || {
            self.writer.with(write.clone())
        })?;
        if let Err(e) = done {
            tracing::error!(run.id = %self.plan.id, error = %e, "cannot {what}");
        }
        Some(())
    }

    /// How the run ended; none when it is left running on the cluster (the daemon stops).
    fn run_process(&self) -> Option<Outcome> {
        let failed = |why: String| Some((RunState::Failed, None, Some(why), Vec::new()));
        if self.adopt.is_none()
            && let Err(e) = contract::lay_out(&self.plan, &self.dir)
        {
            return failed(format!("cannot lay out the run folder: {e}"));
        }
        let argv = contract::command(&self.model.command, &self.dir);
        let env = self
            .model
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(contract::environment(&self.plan, &self.dir));
        let env: Vec<(String, String)> = env.collect();
        let run = Execution {
            run_id: &self.plan.id,
            dir: &self.dir,
            argv: &argv,
            env: &env,
            timeout: self.model.timeout,
            stop: &self.stop,
            cancel: &self.cancel,
        };
        let ending = match self.adopt {
            Some(Adopt::Exited(code)) => Ending::Exited(Some(code)),
            Some(Adopt::Job(job, since)) => match std::path::absolute(&self.dir) {
                Ok(dir) => executor::slurm::follow(job, &dir, &run, since),
                Err(e) => Ending::Failed(format!("run folder: {e}")),
            },
            None => executor::for_kind(&self.model.executor).execute(&run, &mut |handle| {
                let id = self.plan.id.clone();
                let started = self.clock.now();
                // Its pid or job id, which a successor needs to follow it: waited for.
                self.record("record the run's start", move |l| match handle {
                    executor::Handle::Pid(p) => l.run_started(&id, Some(p), None, started),
                    executor::Handle::Job(j) => l.run_started(&id, None, Some(j), started),
                });
                self.board.publish("run", &self.plan.id);
            }),
        };
        let diag = contract::read_diag(&self.dir.join(&self.model.diagnostics));
        let code = match ending {
            Ending::Detached => return None,
            Ending::NotStarted(why) => return failed(why),
            Ending::Failed(why) => return Some((RunState::Failed, None, Some(why), diag)),
            Ending::Interrupted => {
                let why = "the daemon stopped while it ran".to_string();
                return Some((RunState::Interrupted, None, Some(why), diag));
            }
            Ending::Cancelled => {
                let why = "cancelled by an operator".to_string();
                return Some((RunState::Cancelled, None, Some(why), diag));
            }
            Ending::TimedOut => {
                let why = format!("killed after its timeout of {:?}", self.model.timeout);
                return Some((RunState::TimedOut, None, Some(why), diag));
            }
            Ending::Exited(code) => code,
        };
        if code != Some(0) {
            let why = match code {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".into(),
            };
            return Some((RunState::Failed, code, Some(why), diag));
        }
        if let Some(f) = contract::fatal(&diag) {
            let why = format!("fatal diagnostic: {}", f.description);
            return Some((RunState::Failed, code, Some(why), diag));
        }
        Some((RunState::Succeeded, code, None, diag))
    }

    /// Records the state the run saved (the files under `output/` its model's state rule
    /// selects, and its state description), for the next runs of its model; the files stay in
    /// the run folder. Valid at the `dateTime` of the state description when the model wrote one,
    /// else at the run's time0.
    fn save_state(&self) -> std::io::Result<()> {
        let Some(rule) = &self.model.state else {
            return Ok(());
        };
        let output = self.dir.join("output");
        let root = self.spool.root();
        let in_spool = |p: &Path| {
            p.strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .map_err(std::io::Error::other)
        };
        let mut files = Vec::new();
        // A link the model left is never taken as part of its state: it could point anywhere.
        for e in walkdir::WalkDir::new(&output)
            .follow_links(false)
            .max_depth(32)
            .sort_by_file_name()
        {
            let e = e.map_err(std::io::Error::other)?;
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(rel) = e.path().strip_prefix(&output) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            if rule.selects(&rel) {
                files.push((rel, in_spool(e.path())?));
            }
        }
        if files.is_empty() {
            return Ok(());
        }
        let valid_at = rule
            .description
            .as_ref()
            .and_then(|d| std::fs::read(output.join(d)).ok())
            .and_then(|bytes| time0::state_time(&bytes))
            .unwrap_or(self.time0);
        let folder = in_spool(&output)?;
        let (run, model, session) = (
            self.plan.id.clone(),
            self.model.name.clone(),
            self.session.clone(),
        );
        self.writer
            .with(move |l| {
                l.record_state(&run, &model, valid_at, session.as_deref(), &folder, &files)
            })
            .map_err(std::io::Error::other)
    }

    /// The outputs in `output/` re-enter the spool on the model's output channel: recorded first
    /// (for lineage), then linked in under a temporary name and renamed. The diagnostics file
    /// never does; a file the model's `[outputs]` does not select stays in the run folder, and
    /// the returned warnings say which and why.
    fn put_back_outputs(&self) -> std::io::Result<Vec<contract::DiagLine>> {
        let Some((channel, completion)) = &self.output else {
            return Ok(Vec::new());
        };
        let selection = self.model.outputs.as_ref();
        let mut kept = Vec::new();
        // A replay run's outputs go back into its session, never into operational traffic.
        // Session and channel come from the ledger and the rules: one plain component each.
        if !crate::fs::safe_component(channel)
            || self
                .session
                .as_deref()
                .is_some_and(|s| !crate::fs::safe_component(s))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the session or output channel is not a plain name",
            ));
        }
        let incoming = match &self.session {
            Some(s) => self
                .spool
                .replay()
                .join(crate::replay::OUTPUTS)
                .join(s)
                .join(channel),
            None => self.spool.channel(channel),
        };
        std::fs::create_dir_all(&incoming)?;
        let mut outputs: Vec<PathBuf> = std::fs::read_dir(self.dir.join("output"))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        outputs.sort();
        let diagnostics = self.dir.join(&self.model.diagnostics);
        for out in outputs {
            let name = out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if out == diagnostics || self.model.state.as_ref().is_some_and(|s| s.selects(&name)) {
                continue;
            }
            let mut keep = |why: String| {
                kept.push(contract::DiagLine {
                    level: 2,
                    description: format!("output/{name} stays in the run folder: {why}"),
                });
            };
            if let Some(sel) = selection.filter(|s| !s.selects_name(&name)) {
                keep(format!(
                    "its name matches none of the outputs' files ({})",
                    sel.files.join(", ")
                ));
                continue;
            }
            let bytes = std::fs::read(&out)?;
            if let Some(sel) = selection.filter(|s| !s.formats.is_empty()) {
                let format = crate::examine::identify::identify_bytes(&bytes, &self.catalog, 100)
                    .root
                    .and_then(|r| self.catalog.recognise(&r.local, &r.namespace))
                    .map(|f| f.name.clone());
                if !sel.selects_format(format.as_deref()) {
                    keep(format!(
                        "its format ({}) is not one of the outputs' formats ({})",
                        format.as_deref().unwrap_or("not recognised"),
                        sel.formats.join(", ")
                    ));
                    continue;
                }
            }
            let completion = match &self.session {
                Some(_) => Completion::Rename,
                None => completion.clone().unwrap_or(Completion::Rename),
            };
            let target = crate::fs::confined(&incoming, Path::new(&name)).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{name:?} is not a plain name"),
                )
            })?;
            // Staged (written and synced under a hidden name), then recorded, then released:
            // a daemon that dies anywhere in between leaves what its successor needs to
            // finish the same output once, never to put it back twice.
            let staged = crate::control::staged_name(&target, &self.plan.id);
            let (run_id, ch, n) = (self.plan.id.clone(), channel.clone(), name.clone());
            let recorded = self
                .writer
                .with(move |l| l.output_recorded(&run_id, &ch, &n))
                .map_err(std::io::Error::other)?;
            let staged_whole = recorded && std::fs::symlink_metadata(&staged).is_ok();
            if recorded && !staged_whole {
                // Released before the last daemon stopped: only what may have followed it.
                self.after_release(&incoming, &target, &completion, &bytes, channel, &name)?;
                continue;
            }
            if !recorded {
                std::fs::write(&staged, &bytes)?;
                std::fs::File::open(&staged)?.sync_all()?;
                let sha = hex::encode(Sha256::digest(&bytes));
                let (run_id, ch, n) = (self.plan.id.clone(), channel.clone(), name.clone());
                self.writer
                    .with(move |l| l.expect_output(&run_id, &ch, &n, &sha))
                    .map_err(std::io::Error::other)?;
            }
            let at =
                crate::control::release_staged(&incoming, &target, &self.plan.id, &completion)?;
            if self.session.is_some() {
                // Described once in place: the replay takes it, as arriving at the run's time0.
                self.describe(&incoming, &incoming.join(&at), &bytes, channel, &name)?;
            }
        }
        Ok(kept)
    }

    /// An output released by the last daemon, which may have died before its marker or its
    /// replay description: those, again, where the file still waits (a file the replay took
    /// has left the folder; one it has not taken is described, at worst, twice, which reads as
    /// once).
    fn after_release(
        &self,
        incoming: &Path,
        target: &Path,
        completion: &Completion,
        bytes: &[u8],
        channel: &str,
        name: &str,
    ) -> std::io::Result<()> {
        let tagged = incoming.join(format!("{}_{name}", self.plan.id));
        for at in [target, tagged.as_path()] {
            if std::fs::symlink_metadata(at).is_err() {
                continue;
            }
            if let Completion::Marker(suffixes) = completion
                && let Some(s) = suffixes.first()
            {
                let marker = PathBuf::from(format!("{}.{s}", at.display()));
                if std::fs::symlink_metadata(&marker).is_err() {
                    std::fs::write(marker, b"")?;
                }
            }
            if self.session.is_some() {
                self.describe(incoming, at, bytes, channel, name)?;
            }
        }
        Ok(())
    }

    /// The manifest line of a replay run's output, at `at` in the replay's incoming folder.
    fn describe(
        &self,
        incoming: &Path,
        at: &Path,
        bytes: &[u8],
        channel: &str,
        name: &str,
    ) -> std::io::Result<()> {
        let origin = self.origins.get(&name.replace(&self.plan.id, "{run}"));
        let line = crate::archive::ManifestLine {
            id: origin.cloned(),
            file: at
                .strip_prefix(incoming)
                .unwrap_or(at)
                .to_string_lossy()
                .into_owned(),
            channel: channel.to_string(),
            original: name.to_string(),
            state: Some("archived".into()),
            received_at: crate::ledger::timestamp(self.time0),
            size: Some(bytes.len() as u64),
            ..Default::default()
        };
        crate::replay::describe(incoming, &line)
    }
}

/// Starts the dispatcher thread; raise `stop` to end it.
#[allow(
    clippy::too_many_arguments,
    reason = "the dispatcher thread is built from each channel and shared handle it works with"
)]
pub fn spawn(
    spool: Spool,
    rules: Shared<RuleSet>,
    catalog: Shared<Catalog>,
    writer: Writer,
    db: &Path,
    stop: Arc<AtomicBool>,
    clock: Clock,
    wake: Receiver<Wake>,
    board: Arc<Board>,
) -> Result<std::thread::JoinHandle<()>, LedgerError> {
    board
        .health()
        .expect("dispatch", crate::health::STUCK_AFTER);
    // The steps each run's own thread takes (the model's start and exit recorded, its outputs
    // put back): no beat of their own, only the faults those steps wait out.
    board.health().expect(RUNS, Duration::MAX);
    let health = Arc::clone(board.health());
    let d = Dispatcher::new(spool, rules, catalog, writer, db, stop, clock, wake, board)?;
    Ok(crate::health::spawn("dispatch", health, move || d.run()))
}
