//! The local executor: a model's program as a process group on this machine, started clean
//! ([`crate::chain::process::model_command`]), its output captured with a bound, killed whole at
//! its timeout or on cancel, always waited for (no zombies), and everything it left behind
//! stopped when it ends.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Ending, Execution, Executor, Handle};
use crate::chain::process;

/// Runs on this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

/// Where the model's exit status is kept in its run folder, written by the shell that runs it
/// (a shell around the model) the moment it exits: a daemon that dies before recording the end finds it
/// at its next start, so a model that ran to its end is never run again.
pub const EXIT_STATUS: &str = ".pom-exit";

/// The model runs under a shell that keeps its exit status in [`EXIT_STATUS`] (written under a
/// temporary name, then renamed, so it is whole or absent), then ends as the model did: with
/// its code, or killed by its signal.
const WRAPPER: &str = r#""$@"
s=$?
printf '%s\n' "$s" > .pom-exit.part && mv -f .pom-exit.part .pom-exit
if [ "$s" -gt 128 ] && [ "$s" -lt 160 ]; then kill -$((s - 128)) $$; fi
exit "$s""#;

/// The exit status a model's run folder keeps (see [`EXIT_STATUS`]), read without following a
/// link; none when it did not exit (or the file is not whole).
pub fn exit_status(spool: &std::path::Path, run_dir: &str) -> Option<i32> {
    let rel = std::path::Path::new(run_dir).join(EXIT_STATUS);
    let bytes = crate::fs::read_confined(spool, &rel, 64).ok()?;
    String::from_utf8(bytes).ok()?.trim().parse().ok()
}

impl Executor for Local {
    fn execute(&self, run: &Execution<'_>, started: &mut dyn FnMut(Handle)) -> Ending {
        let program = &run.argv[0];
        if !program.contains('/') || program.starts_with('/') {
            let path = run
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| std::ffi::OsString::from(v))
                .or_else(|| std::env::var_os("PATH"));
            if let Some(why) = crate::config::model::command_not_found(program, path.as_deref()) {
                return Ending::NotStarted(format!("cannot start `{program}`: {why}"));
            }
        }
        let argv: Vec<String> = ["/bin/sh", "-c", WRAPPER, "pom-model"]
            .into_iter()
            .map(String::from)
            .chain(run.argv.iter().cloned())
            .collect();
        let mut cmd = process::model_command(&argv, run.dir, run.env.iter().cloned());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Ending::NotStarted(format!("cannot start `{}`: {e}", run.argv[0])),
        };
        let captures = [
            child
                .stdout
                .take()
                .map(|s| process::capture(s, &run.dir.join("stdout.txt"))),
            child
                .stderr
                .take()
                .map(|s| process::capture(s, &run.dir.join("stderr.txt"))),
        ];
        let pid = child.id();
        started(Handle::Pid(pid));
        let deadline = Instant::now() + run.timeout;
        let ending = loop {
            let stop_with = if run.stop.load(Ordering::Relaxed) {
                Some(Ending::Interrupted)
            } else if run.cancel.load(Ordering::Relaxed) {
                Some(Ending::Cancelled)
            } else if Instant::now() >= deadline {
                Some(Ending::TimedOut)
            } else {
                None
            };
            match child.try_wait() {
                Ok(Some(status)) => break Ending::Exited(status.code()),
                Ok(None) => match stop_with {
                    Some(ending) => {
                        // The whole process group: a model's own children die with it.
                        // SAFETY: signals our own child's process group.
                        unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
                        let _ = child.wait();
                        break ending;
                    }
                    None => std::thread::sleep(Duration::from_millis(20)),
                },
                Err(_) => break Ending::TimedOut,
            }
        };
        // Whatever the model left running goes too: its group, its descendants (also those
        // that called setsid), anything carrying its run id.
        let left = process::kill_tree(pid, run.run_id);
        if left > 0 {
            tracing::info!(run.id = %run.run_id, processes = left, "processes the model left behind are stopped");
        }
        // Its output, once every writer is gone (bounded wait: a survivor that escaped
        // every check keeps its pipe, not the run).
        let until = Instant::now() + Duration::from_secs(5);
        for c in captures.into_iter().flatten() {
            match c {
                Ok(h) => {
                    while !h.is_finished() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if h.is_finished() {
                        let _ = h.join();
                    }
                }
                Err(e) => {
                    tracing::warn!(run.id = %run.run_id, error = %e, "cannot keep the model's output")
                }
            }
        }
        ending
    }
}
