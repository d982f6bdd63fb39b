//! Executors: where a laid-out run executes. The seam between the dispatcher, which decides and
//! records, and the place a model's program actually runs.
//!
//! In: an [`Execution`] — the run folder already laid out by [`crate::chain::contract`], the
//! argv and environment of the model contract, the timeout, and the flags that ask it to stop.
//! Out: how the program ended ([`Ending`]), and, as soon as it has started, its handle (a process
//! id here; a Slurm job id on the cluster). Never: reading the
//! ledger or deciding a run's state (the dispatcher maps an [`Ending`] and the diagnostics to
//! it), and never leaving anything of the run behind once it returns.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub mod local;
pub mod slurm;

/// What an executor needs to run one model run.
pub struct Execution<'a> {
    /// The run's id (also carried by every process of the run, in `POM_RUN_ID`).
    pub run_id: &'a str,
    /// The run folder, laid out.
    pub dir: &'a Path,
    /// The program and its arguments (no shell).
    pub argv: &'a [String],
    /// Its environment (the model's own, then the contract's `POM_*`).
    pub env: &'a [(String, String)],
    /// Killed, whole, after this long.
    pub timeout: Duration,
    /// Raised when the daemon stops: the run is interrupted (and retried at the next start).
    pub stop: &'a AtomicBool,
    /// Raised when an operator cancels the run.
    pub cancel: &'a AtomicBool,
}

/// How a run's program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It could not be started (the reason).
    NotStarted(String),
    /// It exited: its code (none: killed by a signal).
    Exited(Option<i32>),
    /// Killed at its timeout.
    TimedOut,
    /// Cancelled by an operator.
    Cancelled,
    /// The daemon stopped while it ran.
    Interrupted,
    /// Left running on the cluster as the daemon stops: the next daemon re-attaches it.
    Detached,
    /// It ended in failure, for this reason (a cluster's verdict: cancelled outside POM, its
    /// node failed, its time limit, lost).
    Failed(String),
}

/// A running run's handle, as soon as it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handle {
    /// The process id of its program on this machine.
    Pid(u32),
    /// Its Slurm job id.
    Job(u64),
}

/// Where runs execute: this machine ([`local::Local`]), or a cluster.
pub trait Executor: Send + Sync {
    /// Runs one run to its end. `started` is called once the program runs (or the job is
    /// submitted), with its handle, so that the ledger shows it while it runs.
    fn execute(&self, run: &Execution<'_>, started: &mut dyn FnMut(Handle)) -> Ending;
}

/// The executor for a model's declared kind.
pub fn for_kind(kind: &crate::config::model::Executor) -> Box<dyn Executor> {
    match kind {
        crate::config::model::Executor::Local => Box::new(local::Local),
        crate::config::model::Executor::Slurm(job) => Box::new(slurm::Slurm { job: job.clone() }),
    }
}
