//! The Slurm executor: a run as a batch job on a cluster that shares the spool's file system.
//!
//! In: an [`Execution`] whose run folder the cluster's nodes see at the same path, the model's
//! `[slurm]` options. Out: the job's end as an [`Ending`], decided from the evidence together:
//! the status file the job script leaves in the run folder (its program's exit status and end
//! time, whatever ended it that a shell can trap), `squeue`, and the accounting (`sacct`, or
//! `sacct -c` on a site whose accounting is the job completion file). Never: one controller call
//! per job (one [`Poller`] asks about every job of the daemon at once, at a set interval), a job
//! declared lost or failed because a query failed (a failed query is "unknown": wait), or a job
//! submitted twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Ending, Execution, Executor, Handle};
use crate::config::model::SlurmJob;

/// The exit status the job script gives when the job cannot see its run folder.
pub const NO_RUN_FOLDER: i32 = 97;
/// Where the job script writes, inside the run folder.
pub const JOB_DIR: &str = ".slurm";
/// How many polls a job may be missing from both the queue and the accounting, with no status
/// file, before it is declared lost.
const ABSENT_POLLS: u32 = 2;

/// The daemon's settings for Slurm.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time between two polls of the controller (one `squeue`, at most one `sacct`, for all
    /// jobs).
    pub poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll: Duration::from_secs(10),
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static HEALTH: OnceLock<Arc<crate::health::Health>> = OnceLock::new();

/// Sets the poll interval, once, before the first job (the daemon's start).
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// The daemon's health, where the poller reports as the `slurm` stage (from its first job on):
/// a query that fails shows the stage degraded (and raises its alert), a dead poller is fatal.
pub fn supervise(health: Arc<crate::health::Health>) {
    let _ = HEALTH.set(health);
}

/// Says how Slurm answers: `None` when it does.
fn report(fault: Option<String>) {
    if let Some(h) = HEALTH.get() {
        h.fault("slurm", fault);
    }
}

fn poll_every() -> Duration {
    SETTINGS.get().copied().unwrap_or_default().poll
}

/// Runs a model on the cluster.
#[derive(Debug, Clone)]
pub struct Slurm {
    /// The model's `[slurm]` options.
    pub job: SlurmJob,
}

impl Executor for Slurm {
    fn execute(&self, run: &Execution<'_>, started: &mut dyn FnMut(Handle)) -> Ending {
        let dir = match std::path::absolute(run.dir) {
            Ok(d) => d,
            Err(e) => return Ending::NotStarted(format!("run folder: {e}")),
        };
        if let Err(e) = write_script(&dir, run) {
            return Ending::NotStarted(format!("cannot write the job script: {e}"));
        }
        let job = match submit_once(&self.job, &dir, run) {
            Ok(id) => id,
            Err(ending) => return ending,
        };
        tracing::info!(run.id = %run.run_id, slurm.job = job, "submitted to Slurm");
        started(Handle::Job(job));
        follow(job, &dir, run, Utc::now())
    }
}

/// Submits a run's job. A refusal (a wrong partition, a bad argument) is the run's end; a
/// controller that does not answer is waited out (the stage shown degraded), asking first
/// whether an earlier attempt did submit the job: a run never has two jobs.
fn submit_once(job: &SlurmJob, dir: &Path, run: &Execution<'_>) -> Result<u64, Ending> {
    let mut unsure = false;
    loop {
        if run.stop.load(Ordering::Relaxed) {
            return Err(Ending::Interrupted);
        }
        if run.cancel.load(Ordering::Relaxed) {
            return Err(Ending::Cancelled);
        }
        let attempt = if unsure {
            find_job(run.run_id).and_then(|found| match found {
                Some(id) => Ok(id),
                None => submit(job, dir, run),
            })
        } else {
            submit(job, dir, run)
        };
        match attempt {
            Ok(id) => {
                report(None);
                return Ok(id);
            }
            Err(why) if transient(&why) => {
                tracing::warn!(run.id = %run.run_id, error = %why, "Slurm does not answer: the submission waits");
                report(Some(format!("cannot submit: {why}")));
                unsure = true;
                std::thread::sleep(poll_every());
            }
            Err(why) => return Err(Ending::NotStarted(why)),
        }
    }
}

/// A failure that says nothing of the job: the controller (or munge) not answering.
fn transient(why: &str) -> bool {
    [
        "Unable to contact",
        "Socket timed out",
        "did not answer",
        "Resource temporarily unavailable",
        "Connection refused",
        "Zero Bytes were transmitted",
        "Communication connection failure",
        "munge",
    ]
    .iter()
    .any(|t| why.contains(t))
}

/// The job of a run, by its name, if Slurm has one.
fn find_job(run_id: &str) -> Result<Option<u64>, String> {
    let name = format!("--name=pom-{run_id}");
    let out = slurm_call(Command::new("squeue").args(["-h", "-t", "all", "-o", "%i", &name]))?;
    Ok(out.lines().find_map(|l| l.trim().parse().ok()))
}

/// Follows a submitted job to its end (also a job re-attached after a restart).
pub fn follow(job: u64, dir: &Path, run: &Execution<'_>, submitted: DateTime<Utc>) -> Ending {
    let poller = Poller::get();
    poller.track(job, dir.to_path_buf(), submitted);
    let deadline = Instant::now() + run.timeout;
    let every = poll_every();
    let mut asked: Option<Ending> = None;
    let mut tried: Option<Instant> = None;
    let ending = loop {
        if run.stop.load(Ordering::Relaxed) && asked.is_none() {
            // The job runs on without the daemon; the next one re-attaches it.
            break Ending::Detached;
        }
        let why = if run.cancel.load(Ordering::Relaxed) {
            Some((Ending::Cancelled, "cancelled by an operator"))
        } else if Instant::now() >= deadline {
            Some((Ending::TimedOut, "its timeout"))
        } else {
            None
        };
        // scancel once, and again at most once per poll interval while it fails (the
        // controller down): never a call per look.
        if let Some((ending, why)) = why
            && asked.is_none()
            && tried.is_none_or(|t| t.elapsed() >= every)
        {
            tried = Some(Instant::now());
            tracing::info!(run.id = %run.run_id, slurm.job = job, "scancel: {why}");
            match scancel(job) {
                Ok(()) => asked = Some(ending),
                Err(e) => {
                    tracing::warn!(slurm.job = job, error = %e, "scancel failed, trying again")
                }
            }
        }
        match poller.fate(job) {
            Some(Fate::Ended(e)) => {
                break match (&asked, e) {
                    // It ended as POM asked, unless it succeeded first.
                    (Some(a), e) if e != Ending::Exited(Some(0)) => a.clone(),
                    (_, e) => e,
                };
            }
            Some(Fate::Lost(why)) => break Ending::Failed(why),
            _ => poller.wait(Duration::from_millis(200)),
        }
    };
    poller.untrack(job);
    ending
}

/// Quotes a word for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job script: into the run folder (or exit [`NO_RUN_FOLDER`]), the model's program with
/// its output in `stdout.txt` and `stderr.txt`, and at its end, whatever ends it that a shell can
/// trap, a status file with its exit status and the time.
fn script(dir: &Path, argv: &[String]) -> String {
    let dir = quote(&dir.to_string_lossy());
    let argv: Vec<String> = argv.iter().map(|a| quote(a)).collect();
    format!(
        "#!/bin/sh\n\
         # A POM model run, submitted with sbatch. Written by POM: do not edit.\n\
         cd {dir} 2>/dev/null || {{ echo \"pom: the job cannot see its run folder {dir}\" >&2; exit {NO_RUN_FOLDER}; }}\n\
         rm -f {JOB_DIR}/status\n\
         ended() {{ printf '%s %s\\n' \"$1\" \"$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)\" > {JOB_DIR}/status.part && mv {JOB_DIR}/status.part {JOB_DIR}/status; }}\n\
         child=\n\
         trap 'ended term; [ -n \"$child\" ] && kill -TERM \"$child\" 2>/dev/null; exit 143' TERM INT HUP\n\
         {} < /dev/null > stdout.txt 2> stderr.txt &\n\
         child=$!\n\
         wait \"$child\"\n\
         code=$?\n\
         ended \"exit $code\"\n\
         exit \"$code\"\n",
        argv.join(" ")
    )
}

fn write_script(dir: &Path, run: &Execution<'_>) -> std::io::Result<()> {
    let jd = dir.join(JOB_DIR);
    std::fs::create_dir_all(&jd)?;
    let path = jd.join("job.sh");
    std::fs::write(&path, script(dir, run.argv))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

/// Slurm's `--time`: the timeout, rounded up to whole minutes (Slurm's own unit), at least one.
fn time_limit(timeout: Duration) -> String {
    let minutes = timeout.as_secs().div_ceil(60).max(1);
    format!("{}:{:02}:00", minutes / 60, minutes % 60)
}

/// The `sbatch` arguments of a run.
fn sbatch_args(job: &SlurmJob, dir: &Path, run: &Execution<'_>) -> Vec<String> {
    let jd = dir.join(JOB_DIR);
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name=pom-{}", run.run_id),
        format!("--chdir={}", dir.display()),
        format!("--output={}", jd.join("slurm.out").display()),
        format!("--time={}", time_limit(run.timeout)),
        "--export=ALL".to_string(),
    ];
    if !job.sbatch_args.iter().any(|a| a == "--requeue") {
        // A run that fails on a node is retried by the model's own policy, visibly, not
        // requeued by Slurm behind it.
        args.push("--no-requeue".into());
    }
    if let Some(p) = &job.partition {
        args.push(format!("--partition={p}"));
    }
    if let Some(a) = &job.account {
        args.push(format!("--account={a}"));
    }
    args.extend(job.sbatch_args.iter().cloned());
    args.push(jd.join("job.sh").display().to_string());
    args
}

fn submit(job: &SlurmJob, dir: &Path, run: &Execution<'_>) -> Result<u64, String> {
    let mut cmd = Command::new("sbatch");
    cmd.args(sbatch_args(job, dir, run))
        .current_dir(dir)
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| {
            let k = k.to_string_lossy();
            crate::chain::process::inherited(&k) || k.starts_with("SLURM_")
        }))
        .envs(run.env.iter().cloned())
        .stdin(Stdio::null());
    let out = slurm_call(&mut cmd).map_err(|e| format!("sbatch: {e}"))?;
    // `--parsable`: `id` or `id;cluster`.
    out.split(';')
        .next()
        .and_then(|id| id.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("sbatch gave no job id: {out:?}"))
}

/// Cancels the job of a run the last daemon left running (its run is marked interrupted and
/// retried by its model's policy).
pub fn cancel_orphan(run: &str, job: u64) {
    match scancel(job) {
        Ok(()) => {
            tracing::warn!(run.id = %run, slurm.job = job, "the job of a run left unfinished is cancelled")
        }
        Err(e) => {
            tracing::error!(run.id = %run, slurm.job = job, error = %e, "cannot cancel the job of a run left unfinished")
        }
    }
}

fn scancel(job: u64) -> Result<(), String> {
    slurm_call(Command::new("scancel").arg(job.to_string())).map(|_| ())
}

/// Calls made to the controller since the daemon started (`squeue`, `sacct`, `sbatch`,
/// `scancel`, `scontrol`).
pub static CALLS: AtomicU64 = AtomicU64::new(0);

/// The longest a Slurm command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a Slurm command, bounded in time; its stdout, or why it failed.
fn slurm_call(cmd: &mut Command) -> Result<String, String> {
    CALLS.fetch_add(1, Ordering::Relaxed);
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        // The service manager's channel is the daemon's: not a job's, not a Slurm command's.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{name}`: {e}"))?;
    // Both pipes drained while the command runs: an answer larger than a pipe's buffer (many
    // jobs) must not block it until the timeout.
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut out);
            }
            out
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + CALL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{name}` did not answer within {CALL_TIMEOUT:?}"));
            }
        }
    };
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`{name}` exited with {status}: {}",
            String::from_utf8_lossy(&stderr).trim()
        ))
    }
}

/// What a query said of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<T> {
    /// It has a record of it.
    Found(T),
    /// It answered, and has none.
    Absent,
    /// It did not answer (the controller, munge or the accounting down, a timeout).
    Unknown,
}

/// What the job script left in the run folder at the job's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The program exited with this status.
    Exit(i32),
    /// The job was told to stop (TERM: a cancel, the time limit, a node going down).
    Term,
}

/// A job's accounting record: its state (`COMPLETED`, `FAILED`, `CANCELLED by 0`, …) and its
/// exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Slurm's state, first word upper case.
    pub state: String,
    /// The exit code of the batch script, if given.
    pub exit: Option<i32>,
}

/// A job's fate, from the evidence together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Pending, running, requeued: still to come.
    Active,
    /// Not known this time (a query failed): wait, never a verdict.
    Unknown,
    /// Missing everywhere, for the polls so far (not yet lost).
    Missing,
    /// It ended.
    Ended(Ending),
    /// It is gone with no final record anywhere.
    Lost(String),
}

/// Slurm states in which a job is still to run or running.
fn active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
            | "STOPPED"
            | "RESV_DEL_HOLD"
            | "SPECIAL_EXIT"
    )
}

/// A final Slurm state, with the status file and exit code, as an ending.
fn ending_of(state: &str, status: Option<&Status>, exit: Option<i32>) -> Option<Ending> {
    let code = match status {
        Some(Status::Exit(c)) => Some(*c),
        _ => exit,
    };
    Some(match state {
        "COMPLETED" => Ending::Exited(Some(code.unwrap_or(0))),
        "FAILED" => match code {
            Some(NO_RUN_FOLDER) => Ending::Failed(
                "the job cannot see its run folder: the run folder must be on a file system \
                 the cluster's nodes share, at the same path"
                    .into(),
            ),
            c => Ending::Exited(c.or(Some(1))),
        },
        "TIMEOUT" | "DEADLINE" => Ending::Failed("Slurm stopped the job at its time limit".into()),
        "CANCELLED" => Ending::Failed("the job was cancelled in Slurm, not by POM".into()),
        "NODE_FAIL" => Ending::Failed("the job's node failed".into()),
        "BOOT_FAIL" => Ending::Failed("the job's node failed to boot".into()),
        "OUT_OF_MEMORY" => Ending::Failed("the job ran out of memory".into()),
        "PREEMPTED" => Ending::Failed("the job was preempted".into()),
        "REVOKED" => Ending::Failed("the job was revoked".into()),
        _ => return None,
    })
}

/// Decides a job's fate from the status file, the queue and the accounting, and how many polls
/// it has been missing from both before this one. Pure.
pub fn fate(
    status: Option<&Status>,
    queue: &Probe<String>,
    acct: &Probe<Record>,
    absent_before: u32,
) -> Fate {
    // The queue first: a job it shows active is active (a requeued job's earlier status file
    // says nothing of its new attempt).
    if let Probe::Found(state) = queue
        && active(state)
    {
        // Completing (its epilog runs): the program has ended, and said how.
        if let ("COMPLETING", Some(Status::Exit(c))) = (state.as_str(), status) {
            return Fate::Ended(Ending::Exited(Some(*c)));
        }
        return Fate::Active;
    }
    if let Probe::Found(r) = acct {
        if active(&r.state) {
            return Fate::Active;
        }
        if let Some(e) = ending_of(&r.state, status, r.exit) {
            return Fate::Ended(e);
        }
    }
    if let Probe::Found(state) = queue
        && let Some(e) = ending_of(state, status, None)
    {
        // The queue's final state with the status file's exit status; without it, and with no
        // accounting answer yet, the exit code is still to learn: wait for the accounting.
        if status.is_some() || !matches!(acct, Probe::Unknown) {
            return Fate::Ended(e);
        }
        return Fate::Unknown;
    }
    match status {
        // The program's own exit status, written at its end: the truth of the run, whatever
        // the controller says or cannot say.
        Some(Status::Exit(c)) => return Fate::Ended(Ending::Exited(Some(*c))),
        // Told to stop, with no record saying why: wait for one.
        Some(Status::Term) if matches!(acct, Probe::Absent) && !matches!(queue, Probe::Unknown) => {
            return Fate::Ended(Ending::Failed(
                "the job was stopped by Slurm (TERM) with no record of why".into(),
            ));
        }
        _ => {}
    }
    match (queue, acct) {
        (Probe::Absent, Probe::Absent) if absent_before + 1 >= ABSENT_POLLS => Fate::Lost(format!(
            "the job left Slurm's queue with no final record in its accounting and no status \
             file, over {ABSENT_POLLS} polls"
        )),
        (Probe::Absent, Probe::Absent) => Fate::Missing,
        _ => Fate::Unknown,
    }
}

/// Reads the status file of a run folder.
fn read_status(dir: &Path) -> Option<Status> {
    // Written in a folder the model writes too: never through a link.
    let bytes = crate::fs::read_confined(dir, &Path::new(JOB_DIR).join("status"), 4096).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut words = text.split_whitespace();
    match words.next()? {
        "exit" => words.next()?.parse().ok().map(Status::Exit),
        "term" => Some(Status::Term),
        _ => None,
    }
}

/// Parses `squeue -h -t all -o %i|%T` lines.
fn parse_queue(text: &str) -> HashMap<u64, String> {
    text.lines()
        .filter_map(|l| {
            let (id, state) = l.trim().split_once('|')?;
            Some((id.parse().ok()?, state.trim().to_string()))
        })
        .collect()
}

/// Parses `sacct -n -P -X -o JobID,State,ExitCode` lines (`12|CANCELLED by 0|0:15`).
fn parse_acct(text: &str) -> HashMap<u64, Record> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            let id = f.next()?.parse().ok()?;
            let state = f.next()?.split_whitespace().next()?.to_string();
            let exit = f
                .next()
                .and_then(|e| e.split(':').next())
                .and_then(|e| e.parse().ok());
            Some((id, Record { state, exit }))
        })
        .collect()
}

struct Tracked {
    dir: PathBuf,
    submitted: DateTime<Utc>,
    absent: u32,
    fate: Fate,
}

/// One poll for every job of the daemon: a thread that, at each interval, asks `squeue` about
/// all the jobs it follows in one call, and the accounting in one call about those the queue
/// no longer shows.
pub struct Poller {
    jobs: Mutex<HashMap<u64, Tracked>>,
    changed: Condvar,
    accounting: Mutex<Option<bool>>,
}

impl Poller {
    fn get() -> Arc<Poller> {
        static POLLER: OnceLock<Arc<Poller>> = OnceLock::new();
        Arc::clone(POLLER.get_or_init(|| {
            let p = Arc::new(Poller {
                jobs: Mutex::new(HashMap::new()),
                changed: Condvar::new(),
                accounting: Mutex::new(None),
            });
            let every = poll_every();
            let q = Arc::clone(&p);
            // Until the daemon stops (its runs then leave their jobs to the next daemon).
            let body = move || {
                while !HEALTH.get().is_some_and(|h| h.is_stopping()) {
                    if let Some(h) = HEALTH.get() {
                        h.beat("slurm");
                    }
                    let started = Instant::now();
                    q.poll();
                    std::thread::sleep(every.saturating_sub(started.elapsed()));
                }
            };
            match HEALTH.get() {
                Some(h) => {
                    // A poll may wait for three calls that time out.
                    h.expect("slurm", every * 2 + CALL_TIMEOUT * 4);
                    crate::health::spawn("slurm", Arc::clone(h), body);
                }
                None => {
                    std::thread::Builder::new()
                        .name("slurm".into())
                        .spawn(body)
                        .expect("spawn the Slurm poller");
                }
            }
            p
        }))
    }

    fn track(&self, job: u64, dir: PathBuf, submitted: DateTime<Utc>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.entry(job).or_insert(Tracked {
                dir,
                submitted,
                absent: 0,
                fate: Fate::Active,
            });
        }
    }

    fn untrack(&self, job: u64) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(&job);
        }
    }

    fn fate(&self, job: u64) -> Option<Fate> {
        self.jobs
            .lock()
            .ok()
            .and_then(|j| j.get(&job).map(|t| t.fate.clone()))
    }

    fn wait(&self, at_most: Duration) {
        if let Ok(g) = self.jobs.lock() {
            let _ = self.changed.wait_timeout(g, at_most);
        }
    }

    /// Whether the site keeps an accounting database (plain `sacct`) or only the job
    /// completion file (`sacct -c`), asked of the controller once.
    fn has_database(&self) -> Option<bool> {
        let mut known = self.accounting.lock().ok()?;
        if known.is_none() {
            let config = slurm_call(Command::new("scontrol").args(["show", "config"])).ok()?;
            let storage = config
                .lines()
                .find(|l| l.trim_start().starts_with("AccountingStorageType"))
                .and_then(|l| l.split('=').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_default();
            *known = Some(storage != "accounting_storage/none" && !storage.is_empty());
        }
        *known
    }

    fn poll(&self) {
        let (ids, since): (Vec<u64>, Option<DateTime<Utc>>) = match self.jobs.lock() {
            Ok(j) => (
                j.keys().copied().collect(),
                j.values().map(|t| t.submitted).min(),
            ),
            Err(_) => return,
        };
        if ids.is_empty() {
            return;
        }
        let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let queue = slurm_call(
            Command::new("squeue").args(["-h", "-t", "all", "-o", "%i|%T", "-j", &list]),
        );
        let queue: Option<HashMap<u64, String>> = match queue {
            Ok(text) => Some(parse_queue(&text)),
            // Every id already purged from the controller's memory.
            Err(e) if e.contains("Invalid job id") => Some(HashMap::new()),
            Err(e) => {
                tracing::warn!(error = %e, "squeue failed: the jobs' states are unknown this time");
                report(Some(format!("squeue: {e}")));
                None
            }
        };
        // The accounting, for the jobs the queue does not show active, in one call from the
        // oldest one's submission (sacct's default window ends at midnight).
        let ask: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| {
                !queue
                    .as_ref()
                    .is_some_and(|q| q.get(id).is_some_and(|s| active(s)))
            })
            .collect();
        let acct: Option<HashMap<u64, Record>> = if ask.is_empty() {
            Some(HashMap::new())
        } else {
            match self.has_database() {
                None => {
                    report(Some("scontrol show config: no answer".into()));
                    None
                }
                Some(db) => {
                    let start = since.unwrap_or_else(Utc::now) - chrono::TimeDelta::days(1);
                    let list = ask.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                    let mut cmd = Command::new("sacct");
                    if !db {
                        cmd.arg("-c");
                    }
                    cmd.args(["-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", &list])
                        .arg(format!("--starttime={}", start.format("%Y-%m-%dT%H:%M:%S")));
                    match slurm_call(&mut cmd) {
                        Ok(text) => Some(parse_acct(&text)),
                        Err(e) => {
                            tracing::warn!(error = %e, "sacct failed: the jobs' ends are unknown this time");
                            report(Some(format!("sacct: {e}")));
                            None
                        }
                    }
                }
            }
        };
        if queue.is_some() && acct.is_some() {
            report(None);
        }
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        for (id, t) in jobs.iter_mut() {
            let q = match &queue {
                None => Probe::Unknown,
                Some(q) => q.get(id).cloned().map_or(Probe::Absent, Probe::Found),
            };
            let a = match &acct {
                None => Probe::Unknown,
                Some(a) => a.get(id).cloned().map_or(
                    if ask.contains(id) {
                        Probe::Absent
                    } else {
                        Probe::Unknown
                    },
                    Probe::Found,
                ),
            };
            let status = read_status(&t.dir);
            t.fate = fate(status.as_ref(), &q, &a, t.absent);
            t.absent = if t.fate == Fate::Missing {
                t.absent + 1
            } else {
                0
            };
        }
        drop(jobs);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: &str, exit: Option<i32>) -> Probe<Record> {
        Probe::Found(Record {
            state: state.into(),
            exit,
        })
    }

    #[test]
    fn a_job_the_queue_shows_active_is_active_whatever_an_earlier_status_file_says() {
        let q = Probe::Found("RUNNING".into());
        assert_eq!(
            fate(Some(&Status::Exit(1)), &q, &Probe::Absent, 0),
            Fate::Active
        );
        let q = Probe::Found("PENDING".into());
        assert_eq!(fate(None, &q, &Probe::Unknown, 0), Fate::Active);
    }

    #[test]
    fn an_answer_larger_than_a_pipe_buffer_is_read_whole() {
        let out =
            slurm_call(Command::new("sh").args(["-c", "head -c 300000 /dev/zero | tr '\\0' x"]))
                .unwrap();
        assert_eq!(out.len(), 300_000);
    }

    #[test]
    fn a_failed_query_is_never_a_verdict() {
        for absent in 0..10 {
            assert_eq!(
                fate(None, &Probe::Unknown, &Probe::Unknown, absent),
                Fate::Unknown
            );
            assert_eq!(
                fate(None, &Probe::Absent, &Probe::Unknown, absent),
                Fate::Unknown
            );
            assert_eq!(
                fate(None, &Probe::Unknown, &Probe::Absent, absent),
                Fate::Unknown
            );
        }
    }

    #[test]
    fn the_status_file_gives_the_exit_status_while_the_controller_is_down() {
        assert_eq!(
            fate(Some(&Status::Exit(3)), &Probe::Unknown, &Probe::Unknown, 0),
            Fate::Ended(Ending::Exited(Some(3)))
        );
    }

    #[test]
    fn a_job_missing_everywhere_is_lost_only_after_two_polls() {
        assert_eq!(fate(None, &Probe::Absent, &Probe::Absent, 0), Fate::Missing);
        assert!(matches!(
            fate(None, &Probe::Absent, &Probe::Absent, 1),
            Fate::Lost(_)
        ));
    }

    #[test]
    fn final_states_give_their_reason() {
        let q = Probe::Absent;
        assert_eq!(
            fate(None, &q, &rec("COMPLETED", Some(0)), 0),
            Fate::Ended(Ending::Exited(Some(0)))
        );
        assert_eq!(
            fate(Some(&Status::Exit(3)), &q, &rec("FAILED", Some(3)), 0),
            Fate::Ended(Ending::Exited(Some(3)))
        );
        let Fate::Ended(Ending::Failed(why)) =
            fate(Some(&Status::Term), &q, &rec("CANCELLED", Some(0)), 0)
        else {
            panic!()
        };
        assert!(why.contains("cancelled in Slurm"), "{why}");
        let Fate::Ended(Ending::Failed(why)) = fate(None, &q, &rec("NODE_FAIL", None), 0) else {
            panic!()
        };
        assert!(why.contains("node failed"), "{why}");
        let Fate::Ended(Ending::Failed(why)) = fate(None, &q, &rec("FAILED", Some(97)), 0) else {
            panic!()
        };
        assert!(why.contains("cannot see its run folder"), "{why}");
        // The queue's final state without an exit status waits for the accounting.
        assert_eq!(
            fate(None, &Probe::Found("FAILED".into()), &Probe::Unknown, 0),
            Fate::Unknown
        );
    }

    #[test]
    fn squeue_and_sacct_lines_are_read() {
        let q = parse_queue("12|RUNNING\n13|PENDING\nnoise\n");
        assert_eq!(q.get(&12).map(String::as_str), Some("RUNNING"));
        assert_eq!(q.len(), 2);
        let a = parse_acct("12|CANCELLED by 0|0:15\n13|FAILED|3:0\n");
        assert_eq!(a[&12].state, "CANCELLED");
        assert_eq!(a[&13].exit, Some(3));
    }

    #[test]
    fn the_time_limit_is_the_timeout_in_whole_minutes() {
        assert_eq!(time_limit(Duration::from_secs(5)), "0:01:00");
        assert_eq!(time_limit(Duration::from_secs(3600)), "1:00:00");
        assert_eq!(time_limit(Duration::from_secs(3601)), "1:01:00");
    }

    #[test]
    fn the_job_script_quotes_every_word() {
        let s = script(
            Path::new("/spool/runs/a b"),
            &["model".into(), "it's".into(), "$HOME".into()],
        );
        assert!(s.contains("cd '/spool/runs/a b'"), "{s}");
        assert!(s.contains("'model' 'it'\\''s' '$HOME' < /dev/null"), "{s}");
    }
}
